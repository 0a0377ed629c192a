"""MD5 "content + key" signatures, as 易支付 and epusdt use them (each builds its own content string)."""

import hashlib
import hmac
import re

_SIGNATURE_RE = re.compile(r"[0-9a-f]{32}")


def md5_sign(content: str, key: str) -> str:
    """Lowercase hex md5 of content + key, no separator. An empty key is refused: an md5 of public
    data alone is something anybody can compute."""
    if not key:
        raise ValueError("empty signing key")
    return hashlib.md5((content + key).encode()).hexdigest()


def md5_matches(content: str, key: str, signature: object) -> bool:
    """Whether signature is exactly the lowercase hex md5_sign(content, key), in constant time.
    Uppercase hex is refused: both gateways send lowercase, and one spelling leaves nothing to vary."""
    if not key or not isinstance(signature, str) or not _SIGNATURE_RE.fullmatch(signature):
        return False
    return hmac.compare_digest(md5_sign(content, key).encode(), signature.encode())
