"""WeChat Pay API v3 cryptography: keys, request signatures, signed answers and notifies, AES-GCM resources,
and the platform certificates fetched from /v3/certificates."""

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from miaofa.gateways.config import read_key_text

SCHEME = "WECHATPAY2-SHA256-RSA2048"
TOLERANCE_SECONDS = 300
CERT_REFRESH_SECONDS = 60.0  # an unknown serial refetches the certificates at most this often
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"

_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_NONCE_RE = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_SERIAL_RE = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_HEX_SERIAL_RE = re.compile(r"[0-9A-Fa-f]{1,40}")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{1,2000}={0,2}")


class SignatureError(ValueError):
    """A signed message that does not verify; the text is ours, never the message's."""


class UnknownSerial(SignatureError):
    pass


# ---- keys ----------------------------------------------------------------------------------


def _der_or_pem(value: str) -> tuple[bytes, bool]:
    text = read_key_text(value).strip()
    if text.startswith("-----BEGIN"):
        return text.encode(), True
    try:
        return base64.b64decode("".join(text.split()), validate=True), False
    except (binascii.Error, ValueError):
        raise ValueError("not PEM or base64 DER") from None


def load_private_key(value: str, setting: str) -> rsa.RSAPrivateKey:
    try:
        data, pem = _der_or_pem(value)
        key = serialization.load_pem_private_key(data, None) if pem else serialization.load_der_private_key(data, None)
    except (ValueError, TypeError):
        # The key's own text never goes into the message.
        raise ValueError(f"{setting} is not a readable private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{setting} is not an RSA key")
    return key


def load_public_key(value: str, setting: str) -> rsa.RSAPublicKey:
    key: PublicKeyTypes
    try:
        data, pem = _der_or_pem(value)
        if pem and b"CERTIFICATE" in data.split(b"\n", 1)[0]:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data) if pem else serialization.load_der_public_key(data)
    except (ValueError, TypeError):
        raise ValueError(f"{setting} is not a readable public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{setting} is not an RSA key")
    return key


# ---- signatures ----------------------------------------------------------------------------


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def authorization(
    key: rsa.RSAPrivateKey,
    mchid: str,
    serial_no: str,
    method: str,
    path_query: str,
    body: bytes,
    timestamp: int,
    nonce: str | None = None,
) -> str:
    """The Authorization header of a merchant request: METHOD\\nPATH?QUERY\\nTS\\nNONCE\\nBODY\\n signed."""
    nonce = nonce or secrets.token_hex(16)
    message = f"{method}\n{path_query}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"
    signature = rsa_sign(key, message)
    return (
        f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


def signed_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """What WeChat signs in its answers and notifies: raw body bytes, never re-serialised."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


@dataclass(frozen=True)
class SignedHeaders:
    serial: str
    signature: str
    timestamp: str  # as sent: the signature covers these exact characters
    nonce: str


def read_signed_headers(headers: Mapping[str, str], now: float, *, require_type: bool) -> SignedHeaders:
    """The Wechatpay-* headers, checked for shape and freshness before any key is looked up."""
    lowered = {key.lower(): value for key, value in headers.items()}
    serial = lowered.get("wechatpay-serial")
    signature = lowered.get("wechatpay-signature")
    raw_ts = lowered.get("wechatpay-timestamp")
    nonce = lowered.get("wechatpay-nonce")
    if serial is None or signature is None or raw_ts is None or nonce is None:
        raise SignatureError("missing signature headers")
    kind = lowered.get("wechatpay-signature-type")
    if (require_type or kind is not None) and kind != SCHEME:
        raise SignatureError("unsupported signature type")
    # WeChat's deliberate probes: they must fail, and be answered with a 4xx.
    if signature.startswith(SIGNTEST_PREFIX):
        raise SignatureError("signature test probe")
    if not _SERIAL_RE.fullmatch(serial):
        raise SignatureError("malformed serial")
    if not _TIMESTAMP_RE.fullmatch(raw_ts):
        raise SignatureError("malformed timestamp")
    if not _NONCE_RE.fullmatch(nonce):
        raise SignatureError("malformed nonce")
    if not _BASE64_RE.fullmatch(signature):
        raise SignatureError("malformed signature")
    if abs(now - int(raw_ts)) > TOLERANCE_SECONDS:
        raise SignatureError("stale or future timestamp")
    return SignedHeaders(serial, signature, raw_ts, nonce)


# ---- AES-256-GCM resources -----------------------------------------------------------------


def decrypt(apiv3_key: bytes, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    """Raises ValueError when the resource does not decrypt (wrong key, tampered, malformed)."""
    try:
        data = base64.b64decode(ciphertext, validate=True)
        return AESGCM(apiv3_key).decrypt(nonce.encode(), data, associated_data.encode())
    except (InvalidTag, binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError("resource does not decrypt") from None


def encrypt(apiv3_key: bytes, nonce: str, associated_data: str, plaintext: bytes) -> str:
    return base64.b64encode(AESGCM(apiv3_key).encrypt(nonce.encode(), plaintext, associated_data.encode())).decode()


# ---- platform keys -------------------------------------------------------------------------


def read_certificates(body: bytes, apiv3_key: bytes, now: datetime) -> dict[int, rsa.RSAPublicKey]:
    """The /v3/certificates answer: each certificate is AES-GCM encrypted with our APIv3 key, which is what
    makes it authentic. Expired, not yet valid and malformed entries are skipped."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("certificates answer is not JSON") from None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("certificates answer is malformed")
    keys: dict[int, rsa.RSAPublicKey] = {}
    for entry in entries[:16]:
        try:
            sealed = entry["encrypt_certificate"]
            if sealed.get("algorithm") != "AEAD_AES_256_GCM":
                continue
            pem = decrypt(apiv3_key, sealed["nonce"], sealed.get("associated_data") or "", sealed["ciphertext"])
            cert = x509.load_pem_x509_certificate(pem)
            serial = entry["serial_no"]
            if (
                not isinstance(serial, str)
                or not _HEX_SERIAL_RE.fullmatch(serial)
                or int(serial, 16) != cert.serial_number
            ):
                continue
            key = cert.public_key()
        except (KeyError, TypeError, AttributeError, ValueError):
            continue
        if isinstance(key, rsa.RSAPublicKey) and cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            keys[cert.serial_number] = key
    return keys


class PlatformKeys:
    """The keys WeChat signs with: one public key named by its id, or the platform certificates.

    Certificates are fetched on first need and again on an unknown serial, at most once per
    CERT_REFRESH_SECONDS however many unknown serials arrive (a flood must not make us hammer WeChat).
    """

    def __init__(
        self,
        public_key: rsa.RSAPublicKey | None,
        public_key_id: str,
        fetch: Callable[[], Awaitable[dict[int, rsa.RSAPublicKey]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._public_key = public_key
        self._public_key_id = public_key_id
        self._fetch = fetch
        self._clock = clock
        self._certs: dict[int, rsa.RSAPublicKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, serial: str) -> rsa.RSAPublicKey:
        if self._public_key is not None:
            if serial != self._public_key_id:
                raise UnknownSerial("unknown serial")
            return self._public_key
        if not _HEX_SERIAL_RE.fullmatch(serial):
            raise UnknownSerial("unknown serial")
        number = int(serial, 16)
        if number not in self._certs:
            async with self._lock:
                due = self._fetched_at is None or self._clock() - self._fetched_at >= CERT_REFRESH_SECONDS
                if number not in self._certs and due:
                    self._fetched_at = self._clock()  # a failed fetch also waits its turn
                    self._certs = await self._fetch()
        if number not in self._certs:
            raise UnknownSerial("unknown serial")
        return self._certs[number]


def verify_signed(key: rsa.RSAPublicKey, signed: SignedHeaders, body: bytes) -> None:
    if not rsa_verify(key, signed_message(signed.timestamp, signed.nonce, body), signed.signature):
        raise SignatureError("bad signature")
