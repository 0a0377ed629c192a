"""The key vault: AES-GCM for card keys at rest, keyed hashes for dedupe, order access tokens,
the gateways' return tickets and the forms' CSRF key.

One master key (MIAOFA_VAULT_KEY, 32 bytes, urlsafe base64) is split by HKDF into a subkey per
purpose, so a leak of one derived value says nothing about the others.
"""

import base64
import hashlib
import hmac
import os
import secrets
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from miaofa.text import key_problem

NONCE_BYTES = 12


class VaultKeyError(ValueError):
    """The vault key is missing or malformed."""


def new_vault_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def parse_vault_key(text: str) -> bytes:
    if not text:
        raise VaultKeyError("MIAOFA_VAULT_KEY is not set")
    if problem := key_problem(text):
        raise VaultKeyError(f"MIAOFA_VAULT_KEY {problem}")
    return base64.urlsafe_b64decode(text.encode())


def derive(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(master)


class Vault:
    def __init__(self, master_key: str) -> None:
        master = parse_vault_key(master_key)
        self._aead = AESGCM(derive(master, "miaofa/card-key/aes-gcm"))
        self._hash_key = derive(master, "miaofa/card-key/dedupe-hmac")
        self._token_key = derive(master, "miaofa/order/access-token")
        self._staff_key = derive(master, "miaofa/staff-token/hmac")
        self._return_key = derive(master, "miaofa/order/return-ticket")
        self._sealed = AESGCM(derive(master, "miaofa/merchant/gateway-credentials"))
        self.form_key = derive(master, "miaofa/web/csrf")  # api/csrf.py
        self.payload_key = derive(master, "miaofa/temporal/payload-codec")
        self.payload_key_id = "k-" + hashlib.sha256(self.payload_key).hexdigest()[:12]

    def encrypt(self, plaintext: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), b"card-key")

    def decrypt(self, blob: bytes) -> str:
        return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], b"card-key").decode()

    def seal(self, plaintext: str, context: str) -> bytes:
        """Encrypt a merchant's secret under its own subkey, bound to `context` (merchant and gateway):
        a sealed blob copied into another merchant's row does not open there."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._sealed.encrypt(nonce, plaintext.encode(), context.encode())

    def unseal(self, blob: bytes, context: str) -> str:
        return self._sealed.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode()).decode()

    def key_hash(self, plaintext: str) -> bytes:
        return hmac.new(self._hash_key, plaintext.encode(), hashlib.sha256).digest()

    def order_token(self, order_id: str) -> str:
        mac = hmac.new(self._token_key, order_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    def check_order_token(self, order_id: str, token: str) -> bool:
        # Compared as bytes: compare_digest raises TypeError on a non-ASCII str, and a client sends anything.
        try:
            expected = self.order_token(order_id).encode()
            given = (token or "").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no token of ours
            return False
        return secrets.compare_digest(expected, given)

    def return_ticket(self, order_id: str, until: datetime) -> str:
        """What a gateway's return URL carries instead of the order token: it names one order until a
        time, and opens only a status page (api/routes/web.py), never the keys. `<unix>.<mac>`."""
        expiry = int(until.timestamp())
        return f"{expiry}.{self._return_mac(order_id, expiry)}"

    def check_return_ticket(self, order_id: str, ticket: str, now: datetime) -> bool:
        expiry, _, mac = (ticket or "").partition(".")
        if not (expiry.isdigit() and len(expiry) <= 12) or int(expiry) < now.timestamp():
            return False
        try:
            given = mac.encode("ascii")
        except UnicodeEncodeError:
            return False
        return secrets.compare_digest(self._return_mac(order_id, int(expiry)).encode(), given)

    def _return_mac(self, order_id: str, expiry: int) -> str:
        mac = hmac.new(self._return_key, f"return\0{order_id}\0{expiry}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode()

    def staff_token_hash(self, token: str) -> str:
        """What the database keeps of a staff token: a keyed hash, useless without the vault key."""
        return hmac.new(self._staff_key, token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def idempotent_order_id(self, email: str, idempotency_key: str, generation: int = 0) -> str:
        """The same buyer sending the same Idempotency-Key gets the same order id. A later generation
        is the key's next order, after one the gateway could not open (api/ordering.py)."""
        scope = f"order:{email.strip().lower()}|{idempotency_key}{f'#{generation}' if generation else ''}".encode()
        return hmac.new(self._hash_key, scope, hashlib.sha256).hexdigest()[:20]

    def buyer_hash(self, email: str) -> str:
        """An opaque, stable id for a buyer, safe for search attributes."""
        return hmac.new(self._hash_key, b"buyer:" + email.strip().lower().encode(), hashlib.sha256).hexdigest()[:16]
