"""The payload codec: round trip, pass-through, and the endpoint the Temporal UI calls."""

import pytest
from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from miaofa.codec import ENCODING, EncryptionCodec
from miaofa.temporal import codec_for
from miaofa.vault import Vault, new_vault_key
from tests.stack import Stack


async def test_round_trip_hides_the_plaintext() -> None:
    codec = codec_for(Vault(new_vault_key()))
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email":"a@b.co"}')
    [encoded] = await codec.encode([original])
    assert encoded.metadata["encoding"] == ENCODING
    assert encoded.metadata["encryption-key-id"] == codec.key_id.encode()
    assert b"a@b.co" not in encoded.SerializeToString()
    assert await codec.decode([encoded]) == [original]


async def test_unencrypted_payloads_pass_through_and_foreign_keys_fail() -> None:
    codec = codec_for(Vault(new_vault_key()))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
    assert await codec.decode([plain]) == [plain]
    [foreign] = await codec_for(Vault(new_vault_key())).encode([plain])
    with pytest.raises(ValueError, match="unknown key id"):
        await codec.decode([foreign])
    tampered = Payload(metadata=dict(foreign.metadata), data=foreign.data[:-1] + bytes([foreign.data[-1] ^ 1]))
    tampered.metadata["encryption-key-id"] = codec.key_id.encode()
    with pytest.raises(InvalidTag):
        await codec.decode([tampered])


async def test_codec_endpoint_decodes_for_the_ui(dev_stack: Stack) -> None:
    codec: EncryptionCodec = dev_stack.env.client.data_converter.payload_codec
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'"hello ops"')
    encoded = await codec.encode([original])
    body = json_format.MessageToJson(Payloads(payloads=encoded))
    answer = await dev_stack.http.post("/codec/decode", content=body, headers={
        "Content-Type": "application/json", "Origin": f"http://localhost:{dev_stack.settings.temporal_ui_port}"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == f"http://localhost:{dev_stack.settings.temporal_ui_port}"
    decoded = json_format.Parse(answer.text, Payloads())
    assert list(decoded.payloads) == [original]
    bad = await dev_stack.http.post("/codec/decode", content=b"not json")
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_payloads")
