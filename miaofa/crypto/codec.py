"""AES-GCM payload codec: Temporal stores only ciphertext; the UI decodes through our endpoint."""

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


class UndecodablePayload(ValueError):
    """A payload marked as ours that this key cannot open: another key id, or damaged ciphertext."""


class EncryptionCodec(temporalio.converter.PayloadCodec):
    def __init__(self, key: bytes, key_id: str) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id

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
                decoded.append(payload)  # not ours (or from before encryption): pass it through
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
        payload_codec=codec,
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )
