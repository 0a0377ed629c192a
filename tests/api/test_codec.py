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
    assert await codec.decode([plain]) == [plain]  # the /codec endpoint shows ops what is there
    # The SDK clients' converter (worker, API, CLI) takes nothing in clear as data: it is null.
    assert await codec.refusing_clear().decode([plain]) == [Payload(metadata={"encoding": b"binary/null"})]
    [encrypted] = await codec.encode([plain])
    assert await codec.refusing_clear().decode([encrypted]) == [plain]
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
            **dev_stack.support,
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == f"http://localhost:{dev_stack.settings.temporal_ui_port}"
    decoded = json_format.Parse(answer.text, Payloads())
    assert list(decoded.payloads) == [original]
    bad = await dev_stack.http.post("/codec/decode", content=b"not json", headers=dev_stack.support)
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_payloads")


async def _ui_post(stack: Stack, body: bytes | str, path: str = "/codec/decode", **headers: str):
    """As the Temporal UI's browser on this machine calls the codec (with no credential unless given)."""
    ui = f"http://localhost:{stack.settings.temporal_ui_port}"
    return await stack.http.post(
        path, content=body, headers={"Content-Type": "application/json", "Origin": ui, **headers}
    )


async def _secret_body(stack: Stack) -> str:
    codec: EncryptionCodec = stack.env.client.data_converter.payload_codec
    secret = Payload(metadata={"encoding": b"json/plain"}, data=b'"buyer@example.com"')
    return json_format.MessageToJson(Payloads(payloads=await codec.encode([secret])))


async def test_the_codec_needs_a_staff_token_even_from_loopback(dev_stack: Stack) -> None:
    """N5: a local user read every buyer's email through the UI's API and a tokenless /codec/decode."""
    body = await _secret_body(dev_stack)
    port = dev_stack.settings.api_port
    clear = json_format.MessageToJson(Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b"1")]))
    for headers in ({}, {"Host": f"127.0.0.1:{port}"}, {"Host": f"localhost:{port}"}):
        for path, sent in (("/codec/decode", body), ("/codec/encode", clear)):
            answer = await _ui_post(dev_stack, sent, path, **headers)
            assert (answer.status_code, answer.json()["error"]) == (401, "invalid_token"), (path, headers)
            assert "buyer@example.com" not in answer.text
    for wrong in ("Bearer nope-nope-nope-nope", "Basic c3VwcG9ydA==", dev_stack.support["Authorization"][7:]):
        assert (await _ui_post(dev_stack, body, Authorization=wrong)).status_code == 401, wrong
    # A support or admin token works from anywhere, whatever the Host (the CLI, a tunnel, a proxy).
    for token in (dev_stack.support, dev_stack.admin):
        allowed = await _ui_post(dev_stack, body, Host=f"evil.example:{port}", **token)
        assert allowed.status_code == 200, allowed.text
        assert json_format.Parse(allowed.text, Payloads()).payloads[0].data == b'"buyer@example.com"'


async def test_the_ui_signs_in_once_and_its_cookie_works_only_from_the_ui(dev_stack: Stack) -> None:
    """The UI sends no Authorization header (only an OIDC login's): it sends the codec cookie."""
    body = await _secret_body(dev_stack)
    port, ui_port = dev_stack.settings.api_port, dev_stack.settings.temporal_ui_port
    own = {"Host": f"127.0.0.1:{port}"}
    page = await dev_stack.http.get("/codec/login", headers=own)
    assert page.status_code == 200 and 'name="token"' in page.text
    assert (
        page.headers["cache-control"] == "no-store"
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )

    form = {"Content-Type": "application/x-www-form-urlencoded", **own}
    for token in ("", "nope-nope-nope-nope"):
        refused = await dev_stack.http.post("/codec/login", content=f"token={token}", headers=form)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")
        assert "set-cookie" not in refused.headers
    support_token = dev_stack.support["Authorization"][7:]
    # A page elsewhere cannot sign a browser in: a foreign Origin, or a rebound Host.
    for foreign in ({"Origin": "http://evil.example"}, {"Host": f"evil.example:{port}"}):
        crossed = await dev_stack.http.post(
            "/codec/login", content=f"token={support_token}", headers={**form, **foreign}
        )
        assert crossed.status_code == 401 and "set-cookie" not in crossed.headers, foreign
    signed_in = await dev_stack.http.post(
        "/codec/login", content=f"token={support_token}", headers={**form, "Origin": f"http://127.0.0.1:{port}"}
    )
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, f"http://127.0.0.1:{ui_port}/")
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith("miaofa_codec=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/codec" in cookie and "Max-Age=28800" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}

    decoded = await _ui_post(dev_stack, body, **own, **jar)
    assert decoded.status_code == 200, decoded.text
    assert json_format.Parse(decoded.text, Payloads()).payloads[0].data == b'"buyer@example.com"'
    assert decoded.headers["access-control-allow-credentials"] == "true"
    # The cookie is the UI's alone: any other page, a rebound name, or a wrong cookie is refused.
    for headers in (
        {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},  # DNS rebinding
        {"Host": f"evil.example:{port}"},  # even without an Origin (a non-CORS form post)
        {"Host": "127.0.0.1"},  # not our port
        {"Origin": "http://evil.example"},  # the right Host, a foreign page
        {"Origin": "null"},  # a sandboxed frame
        {"Origin": f"http://127.0.0.1:{port}"},  # the shop's own pages are not the UI
        {"Cookie": "miaofa_codec=nope-nope-nope-nope"},
    ):
        answer = await _ui_post(dev_stack, body, **{**own, **jar, **headers})
        assert answer.status_code == 401, (headers, answer.text)
        assert "buyer@example.com" not in answer.text
    # The browser's preflight for the UI's credentialed call.
    preflight = await dev_stack.http.options(
        "/codec/decode",
        headers={
            "Origin": f"http://127.0.0.1:{ui_port}",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-credentials"] == "true"

    signed_out = await dev_stack.http.post("/codec/logout", headers=own)
    assert signed_out.status_code == 303 and 'miaofa_codec=""' in signed_out.headers["set-cookie"]


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
        answer = await _ui_post(dev_stack, json_format.MessageToJson(Payloads(payloads=[payload])), **dev_stack.support)
        assert answer.status_code == 422, answer.text
        assert set(answer.json()) == {"error", "detail"} and answer.json()["error"] == error
    encoding = base64.b64encode(ENCODING).decode()
    not_base64 = f'{{"payloads": [{{"metadata": {{"encoding": "{encoding}"}}, "data": "***"}}]}}'
    for body in (not_base64, b"\xff\xfe", '{"payloads": 1}'):
        answer = await _ui_post(dev_stack, body, **dev_stack.support)
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
