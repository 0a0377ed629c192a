"""The payload codec: round trip, pass-through, and the endpoint the Temporal UI calls."""

import base64

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from api.routes.codec import own_hosts
from miaofa.crypto.codec import ENCODING, EncryptionCodec, UndecodablePayload
from miaofa.crypto.vault import Vault, new_vault_key
from miaofa.settings import Settings
from miaofa.temporal.client import codec_for
from tests.helpers.stack import Stack


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
    with pytest.raises(UndecodablePayload, match="does not open"):
        await codec.decode([tampered])
    short = Payload(metadata=dict(tampered.metadata), data=b"abc")
    with pytest.raises(UndecodablePayload):
        await codec.decode([short])


async def test_codec_endpoint_decodes_for_the_ui(dev_stack: Stack) -> None:
    codec: EncryptionCodec = dev_stack.env.client.data_converter.payload_codec
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'"hello ops"')
    encoded = await codec.encode([original])
    body = json_format.MessageToJson(Payloads(payloads=encoded))
    answer = await dev_stack.http.post(
        "/codec/decode",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Origin": f"http://localhost:{dev_stack.settings.temporal_ui_port}",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == f"http://localhost:{dev_stack.settings.temporal_ui_port}"
    decoded = json_format.Parse(answer.text, Payloads())
    assert list(decoded.payloads) == [original]
    bad = await dev_stack.http.post("/codec/decode", content=b"not json")
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_payloads")


async def _ui_post(stack: Stack, body: bytes | str, **headers: str):
    """As the Temporal UI's browser on this machine calls the codec."""
    ui = f"http://localhost:{stack.settings.temporal_ui_port}"
    return await stack.http.post(
        "/codec/decode", content=body, headers={"Content-Type": "application/json", "Origin": ui, **headers}
    )


async def test_codec_refuses_dns_rebinding_and_foreign_origins(dev_stack: Stack) -> None:
    """From loopback, yet not the shop by its own name or not the UI: a web page the operator visits."""
    codec: EncryptionCodec = dev_stack.env.client.data_converter.payload_codec
    secret = Payload(metadata={"encoding": b"json/plain"}, data=b'"buyer@example.com"')
    body = json_format.MessageToJson(Payloads(payloads=await codec.encode([secret])))
    port = dev_stack.settings.api_port
    assert (await _ui_post(dev_stack, body)).status_code == 200  # the UI itself
    refused = [
        # The page rebinds evil.example to 127.0.0.1 and calls it from its own origin.
        {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
        {"Host": f"evil.example:{port}"},  # even without an Origin (a non-CORS form post)
        {"Host": "127.0.0.1"},  # not our port
        {"Origin": "http://evil.example"},  # the right Host, a foreign page
        {"Origin": "null"},  # a sandboxed frame
        {"Origin": f"http://localhost:{port}"},  # the shop's own pages are not the UI
    ]
    for headers in refused:
        answer = await _ui_post(dev_stack, body, **headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"] == "invalid_token"
        assert "buyer@example.com" not in answer.text
    # A support token works from anywhere, whatever the Host (the CLI, a tunnel, a proxy).
    allowed = await _ui_post(
        dev_stack, body, Host=f"evil.example:{port}", Authorization=dev_stack.support["Authorization"]
    )
    assert allowed.status_code == 200 and json_format.Parse(allowed.text, Payloads()).payloads[0] == secret
    # Other names of the shop pass: localhost, and the public URL's host.
    assert (await _ui_post(dev_stack, body, Host=f"localhost:{port}")).status_code == 200


async def test_codec_bad_input_is_a_clear_4xx(dev_stack: Stack) -> None:
    codec: EncryptionCodec = dev_stack.env.client.data_converter.payload_codec
    [good] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"1")])
    foreign = Payload(metadata={"encoding": ENCODING, "encryption-key-id": b"not-our-key"}, data=good.data)
    garbage = Payload(metadata=dict(good.metadata), data=b"\x00" * 40)
    short = Payload(metadata=dict(good.metadata), data=b"x")
    for payload, error in (
        (foreign, "undecodable_payload"),
        (garbage, "undecodable_payload"),
        (short, "undecodable_payload"),
    ):
        answer = await _ui_post(dev_stack, json_format.MessageToJson(Payloads(payloads=[payload])))
        assert answer.status_code == 422, answer.text
        assert set(answer.json()) == {"error", "detail"} and answer.json()["error"] == error
    encoding = base64.b64encode(ENCODING).decode()
    not_base64 = f'{{"payloads": [{{"metadata": {{"encoding": "{encoding}"}}, "data": "***"}}]}}'
    for body in (not_base64, b"\xff\xfe", '{"payloads": 1}'):
        answer = await _ui_post(dev_stack, body)
        assert 400 <= answer.status_code < 500 and set(answer.json()) == {"error", "detail"}, (body, answer.text)


async def test_codec_token_with_non_ascii_is_refused_not_a_500(dev_stack: Stack) -> None:
    answer = await dev_stack.http.post(
        "/codec/decode",
        content=b'{"payloads": []}',
        headers={"Host": "evil.example", "Authorization": "Bearer t\u00f6ken-\u79d8\u5bc6".encode()},
    )
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_token")


def test_own_hosts_are_loopback_names_and_the_public_url() -> None:
    hosts = own_hosts(Settings(api_port=8000, public_url="https://Shop.Example.com"))
    assert {"127.0.0.1:8000", "localhost:8000", "[::1]:8000", "shop.example.com", "shop.example.com:443"} == hosts
    assert own_hosts(Settings(api_port=9000, api_host="0.0.0.0")) == {"127.0.0.1:9000", "localhost:9000", "[::1]:9000"}
