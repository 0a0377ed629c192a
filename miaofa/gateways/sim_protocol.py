"""Wire details shared by the payment simulator and its adapter, so both sides sign alike."""

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Sim-Timestamp"
SIGNATURE_HEADER = "X-Sim-Signature"
# Notifies older (or newer) than this are refused, like Stripe's and WeChat's 5-minute window.
TOLERANCE_SECONDS = 300
# The exact body the gateway expects in answer to a notify; anything else is retried.
ACK_BODY = "success"
NACK_BODY = "fail"


def make_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 over `"{timestamp}." + raw body` (the timestamp is signed to stop replays)."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
