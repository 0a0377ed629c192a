"""AES-GCM payload codec: Temporal stores only ciphertext; the UI decodes through our endpoint.

The SDK clients (worker, API, CLI) refuse what did not come through it: a payload in clear, sent by
a Temporal client without the codec (the UI, `temporal` without --codec-endpoint, anyone who can
reach the frontend), decodes to null. So a support Update in clear arrives without input and its
validator refuses it (workflows/support.py), a signal in clear is a bare hint, and nothing in clear
can pose as our own data. The /codec endpoint keeps clear payloads as they are: ops see them.
"""

import dataclasses
import os
from collections.abc import Sequence

import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

ENCODING = b"binary/encrypted"
NONCE_BYTES = 12
NULL_ENCODING = b"binary/null"


class UndecodablePayload(ValueError):
    """A payload marked as ours that this key cannot open: another key id, or damaged ciphertext."""


class EncryptionCodec(temporalio.converter.PayloadCodec):
    def __init__(self, key: bytes, key_id: str, *, clear_as_null: bool = False) -> None:
        self._key = key
        self._aead = AESGCM(key)
        self.key_id = key_id
        self.clear_as_null = clear_as_null

    def refusing_clear(self) -> "EncryptionCodec":
        """The same key, decoding every payload in clear to null: what the SDK clients use."""
        return EncryptionCodec(self._key, self.key_id, clear_as_null=True)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(
                metadata={"encoding": ENCODING, "encryption-key-id": self.key_id.encode()},
                data=self._encrypt(payload.SerializeToString()),
            )
            for payload in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding", b"") != ENCODING:
                # Not through the codec. Null, not an error: an exception here would fail the workflow
                # task, again at every retry, and wedge the order.
                decoded.append(Payload(metadata={"encoding": NULL_ENCODING}) if self.clear_as_null else payload)
                continue
            key_id = payload.metadata.get("encryption-key-id", b"").decode("utf-8", "replace")
            if key_id != self.key_id:
                raise UndecodablePayload(f"payload encrypted with unknown key id {key_id[:64]!r}")
            try:
                decoded.append(Payload.FromString(self._decrypt(payload.data)))
            except (InvalidTag, DecodeError, ValueError) as exc:  # short, tampered or not a payload
                raise UndecodablePayload("payload ciphertext does not open with this key (damaged or forged)") from exc
        return decoded

    def _encrypt(self, data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, None)

    def _decrypt(self, data: bytes) -> bytes:
        return self._aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)


def data_converter(codec: EncryptionCodec) -> temporalio.converter.DataConverter:
    # Failures are encoded too: an error message must not leak order details in clear.
    # The pydantic converter round-trips datetimes inside dataclasses, in and out of the sandbox.
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec.refusing_clear(),
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )
