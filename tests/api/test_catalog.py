"""Catalog and key import through the admin API: counts, dedupe, encryption, all-or-nothing errors."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from api import uploads
from miaofa import inventory
from tests.helpers.stack import Stack


async def _new_product(stack: Stack) -> str:
    return await stack.product([])


async def _upload(stack: Stack, sku: str, body: str, content_type: str = "text/plain"):
    return await stack.http.post(
        f"/admin/products/{sku}/keys", content=body.encode(), headers={**stack.admin, "Content-Type": content_type}
    )


async def test_import_10000_with_500_repeats_then_again(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    unique = [f"CARD-{tag}-{i:06d}" for i in range(9500)]
    lines = unique + unique[:500]  # 500 lines repeat earlier ones
    first = await _upload(dev_stack, sku, "\n".join(lines))
    assert first.status_code == 200, first.text
    assert first.json() == {"imported": 9500, "duplicates": 500}
    second = await _upload(dev_stack, sku, "\n".join(lines))
    assert second.json() == {"imported": 0, "duplicates": 10000}
    assert await dev_stack.stock(sku) == {"available": 9500, "reserved": 0, "sold": 0, "refunded": 0}


async def test_keys_are_deduplicated_across_products(dev_stack: Stack) -> None:
    first, second = await _new_product(dev_stack), await _new_product(dev_stack)
    key = f"SHARED-{uuid.uuid4().hex}"
    assert (await _upload(dev_stack, first, key)).json() == {"imported": 1, "duplicates": 0}
    assert (await _upload(dev_stack, second, key)).json() == {"imported": 0, "duplicates": 1}


async def test_blank_lines_and_whitespace_are_ignored(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    body = f"\n  A-{tag}  \n\n\tB-{tag}\r\nA-{tag}\n   \n"
    assert (await _upload(dev_stack, sku, body)).json() == {"imported": 2, "duplicates": 1}


async def test_csv_with_a_header(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    body = f'code,note\nX-{tag},first\n"Y-{tag},with comma",second\n'
    answer = await _upload(dev_stack, sku, body, "text/csv")
    assert answer.json() == {"imported": 2, "duplicates": 0}


async def test_keys_are_encrypted_at_rest(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    key = f"PLAINTEXT-NEVER-STORED-{uuid.uuid4().hex}"
    await _upload(dev_stack, sku, key)
    async with dev_stack.sessionmaker() as session:
        rows = (
            (
                await session.execute(
                    text("SELECT k::text FROM card_keys k JOIN products p ON p.id = k.product_id WHERE p.sku = :sku"),
                    {"sku": sku},
                )
            )
            .scalars()
            .all()
        )
    assert len(rows) == 1
    assert key not in rows[0] and key.encode().hex() not in rows[0]


async def test_bad_uploads_get_a_clear_error_and_import_nothing(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    too_long = f"OK-{tag}\n" + "X" * 513
    cases = [
        ("", "text/plain", 422, "empty_upload"),
        ("\n  \n\t\n", "text/plain", 422, "empty_upload"),
        (too_long, "text/plain", 422, "key_too_long"),
        (f"note,other\nA-{tag},b\n", "text/csv", 422, "malformed_csv"),
        (f"code,note\nA-{tag},b,extra\n", "text/csv", 422, "malformed_csv"),
        (f'code\n"A-{tag}\n', "text/csv", 422, "malformed_csv"),
    ]
    for body, content_type, status, error in cases:
        answer = await _upload(dev_stack, sku, body, content_type)
        assert (answer.status_code, answer.json()["error"]) == (status, error), body[:40]
        assert "X" * 100 not in answer.text  # the error never echoes a key
    unknown = await _upload(dev_stack, "no-such-sku", f"K-{tag}")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_product")
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 0, "refunded": 0}


async def test_product_creation_rules(dev_stack: Stack) -> None:
    sku = "dup-" + uuid.uuid4().hex[:8]
    body = {"sku": sku, "name": "Steam ¥50", "price_cents": 5000, "currency": "cny"}
    created = await dev_stack.http.post("/admin/products", json=body, headers=dev_stack.admin)
    assert created.status_code == 201
    assert created.json() == {
        "sku": sku,
        "name": "Steam ¥50",
        "price_cents": 5000,
        "currency": "CNY",
        "delivery_sla_seconds": 60,
        "webhook_url": None,
    }
    again = await dev_stack.http.post("/admin/products", json=body, headers=dev_stack.admin)
    assert (again.status_code, again.json()["error"]) == (409, "product_exists")
    bad = await dev_stack.http.post(
        "/admin/products", json={**body, "sku": "x2", "price_cents": 12.5}, headers=dev_stack.admin
    )
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_input")
    assert "price_cents" in bad.json()["detail"]
    listed = {p["sku"]: p for p in (await dev_stack.http.get("/products")).json()}
    assert listed[sku]["available"] == 0


@pytest.mark.parametrize(
    "name",
    [
        "Gift \u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE: shows as "Gift exe.png"
        "a\x1b[31mred\x07",  # an ANSI colour and a bell, raw in plain-text emails
        "left \u2066isolate\u2069",  # LEFT-TO-RIGHT ISOLATE … POP DIRECTIONAL ISOLATE
        "embed \u202aLTR\u202c",
        "next line\x85",  # C1: NEL
        "tab\tname",
        "nul\x00",
    ],
)
async def test_product_names_with_control_or_bidi_characters_are_refused(dev_stack: Stack, name: str) -> None:
    sku = "ctl-" + uuid.uuid4().hex[:8]
    body = {"sku": sku, "name": name, "price_cents": 100, "currency": "CNY"}
    answer = await dev_stack.http.post("/admin/products", json=body, headers=dev_stack.admin)
    assert (answer.status_code, answer.json()) == (
        422,
        {"error": "invalid_input", "detail": "name: must not contain control characters"},
    )
    assert (await dev_stack.http.get(f"/admin/products/{sku}/stock", headers=dev_stack.admin)).status_code == 404
    assert sku not in [p["sku"] for p in (await dev_stack.http.get("/products")).json()]


async def test_admin_endpoints_need_the_admin_token(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    calls = [
        ("POST", "/admin/products", {"json": {"sku": "z", "name": "z", "price_cents": 1, "currency": "CNY"}}),
        ("POST", f"/admin/products/{sku}/keys", {"content": b"K-unauth"}),
        ("GET", f"/admin/products/{sku}/stock", {}),
    ]

    # A refusal closes its connection (api/limits.py: the body is never read), so each call gets its own.
    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=dev_stack.http.base_url, timeout=30) as fresh:
            return await fresh.request(method, path, **kwargs)

    for method, path, kwargs in calls:
        missing = await call(method, path, **kwargs)
        assert missing.status_code == 401
        assert missing.json() == {"error": "missing_token", "detail": "send Authorization: Bearer <token>"}
        for token in ("wrong-token", dev_stack.support["Authorization"].removeprefix("Bearer ")):
            wrong = await call(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
            assert wrong.status_code == 401
            assert wrong.json() == {"error": "invalid_token", "detail": "the token is not the admin token"}
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 0, "refunded": 0}


async def test_healthz(dev_stack: Stack) -> None:
    answer = await dev_stack.http.get("/healthz")
    assert answer.status_code == 200
    body = answer.json()
    assert len(body.pop("instance")) == 8  # which API process answered (UP_APIS)
    assert body == {"status": "ok", "database": "ok", "temporal": "ok"}


async def test_concurrent_imports_of_the_same_keys_store_each_once(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    body = "\n".join(f"RACE-{tag}-{i:04d}" for i in range(1000))
    answers = await asyncio.gather(*(_upload(dev_stack, sku, body) for _ in range(3)))
    results = [answer.json() for answer in answers]
    assert sum(r["imported"] for r in results) == 1000
    assert sum(r["duplicates"] for r in results) == 2000
    assert await dev_stack.stock(sku) == {"available": 1000, "reserved": 0, "sold": 0, "refunded": 0}


# --- Exact uploads: what curl and browsers send, byte for byte. ---


async def _stored_keys(stack: Stack, sku: str) -> list[str]:
    """The product's keys as stored, decrypted: proves nothing but the file's lines became keys."""
    async with stack.sessionmaker() as session:
        blobs = (
            (
                await session.execute(
                    text(
                        "SELECT k.ciphertext FROM card_keys k JOIN products p ON p.id = k.product_id "
                        "WHERE p.sku = :sku ORDER BY k.id"
                    ),
                    {"sku": sku},
                )
            )
            .scalars()
            .all()
        )
    return sorted(stack.vault.decrypt(blob) for blob in blobs)


EMPTY = {"available": 0, "reserved": 0, "sold": 0, "refunded": 0}


async def test_curl_form_file_upload_stores_exactly_the_file_lines(dev_stack: Stack) -> None:
    # `curl -F file=@keys.txt` sends this multipart: boundary, Content-Disposition with a filename,
    # Content-Type text/plain, the file's bytes. Only the file's lines may become keys.
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    keys = [f"MP-{tag}-{i}" for i in range(3)]
    answer = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        headers=dev_stack.admin,
        files={"file": ("keys.txt", "\r\n".join(keys).encode() + b"\r\n", "text/plain")},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"imported": 3, "duplicates": 0}
    assert await _stored_keys(dev_stack, sku) == sorted(keys)
    assert await dev_stack.stock(sku) == {**EMPTY, "available": 3}
    # A browser form posts other fields beside the file and an octet-stream part type: same result.
    other = await _new_product(dev_stack)
    more = [f"MP2-{tag}-{i}" for i in range(2)]
    answer = await dev_stack.http.post(
        f"/admin/products/{other}/keys",
        headers=dev_stack.admin,
        data={"note": "batch 7"},
        files={"upload": ("keys", "\n".join(more).encode(), "application/octet-stream")},
    )
    assert answer.json() == {"imported": 2, "duplicates": 0}
    assert await _stored_keys(dev_stack, other) == sorted(more)


async def test_curl_data_binary_text_plain_stores_exactly_the_lines(dev_stack: Stack) -> None:
    # `curl --data-binary @keys.txt -H 'content-type: text/plain'`: the file's bytes, untouched.
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    keys = [f"DB-{tag}-{i}" for i in range(4)]
    body = "\ufeff" + "\r\n".join(keys[:2]) + "\n" + "\r".join(keys[2:]) + "\n"  # BOM, CRLF, LF and CR
    answer = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        content=body.encode(),
        headers={**dev_stack.admin, "Content-Type": "text/plain; charset=utf-8"},
    )
    assert answer.json() == {"imported": 4, "duplicates": 0}
    assert await _stored_keys(dev_stack, sku) == sorted(keys)
    assert await dev_stack.stock(sku) == {**EMPTY, "available": 4}


async def test_csv_file_part_is_parsed_as_csv(dev_stack: Stack) -> None:
    # The part's type decides, or (a browser on Windows says application/vnd.ms-excel) the .csv suffix.
    for name, part_type in (("keys", "text/csv"), ("keys.CSV", "application/vnd.ms-excel")):
        tag = uuid.uuid4().hex[:8]
        body = f'code,note\nCSV-{tag}-1,first\n"CSV-{tag}-2",second\n'.encode()
        sku = await _new_product(dev_stack)
        answer = await dev_stack.http.post(
            f"/admin/products/{sku}/keys", headers=dev_stack.admin, files={"file": (name, body, part_type)}
        )
        assert answer.status_code == 200, answer.text
        assert await _stored_keys(dev_stack, sku) == [f"CSV-{tag}-1", f"CSV-{tag}-2"]
    other = await _new_product(dev_stack)  # application/csv as the body's own type
    answer = await dev_stack.http.post(
        f"/admin/products/{other}/keys",
        content=body.replace(b"CSV-", b"AC-"),
        headers={**dev_stack.admin, "Content-Type": "application/csv"},
    )
    assert answer.json() == {"imported": 2, "duplicates": 0}


async def test_curl_d_form_urlencoded_and_other_types_get_415_and_store_nothing(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    glued = f"UE-{tag}-1UE-{tag}-2".encode()  # `curl -d @keys.txt` drops the newlines
    accepted = "send the keys as text/plain, text/csv (or application/csv), or multipart/form-data with one file part"
    cases = [
        (glued, "application/x-www-form-urlencoded", f"{accepted}; got application/x-www-form-urlencoded"),
        (b'["K"]', "application/json", f"{accepted}; got application/json"),
        (glued, None, f"{accepted}; no Content-Type was sent"),
        (glued, "application/octet-stream", f"{accepted}; got application/octet-stream"),
        (glued, "text/html", f"{accepted}; got text/html"),
        (glued, "text/plain; charset=latin-1", "send the keys as UTF-8 text; got charset=latin-1"),
    ]
    for body, content_type, detail in cases:
        headers = {**dev_stack.admin, **({"Content-Type": content_type} if content_type else {})}
        answer = await dev_stack.http.post(f"/admin/products/{sku}/keys", content=body, headers=headers)
        assert (answer.status_code, answer.json()) == (415, {"error": "unsupported_media_type", "detail": detail})
    refused = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        content=glued,
        headers={**dev_stack.admin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.json() == {
        "error": "unsupported_media_type",
        "detail": "send the keys as text/plain, text/csv (or application/csv), or multipart/form-data "
        "with one file part; got application/x-www-form-urlencoded",
    }
    assert await dev_stack.stock(sku) == EMPTY


async def test_a_control_character_refuses_the_whole_upload_without_echoing_the_key(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    secret = f"SECRET-{tag}"
    cases = [  # (body, content type, line named)
        (f"OK-{tag}-1\nOK-{tag}-2\n{secret}\x00X\n", "text/plain", 3),
        (f"OK-{tag}-1\n{secret}\tX\n", "text/plain", 2),
        (f"{secret}\x0bX\nOK-{tag}-1", "text/plain", 1),  # a vertical tab is not a line end here
        (f"OK-{tag}-1\n\n{secret}\u200bX", "text/plain", 3),  # zero-width space (Cf)
        (f'code,note\nOK-{tag}-1,a\n"{secret}\nX",b\n', "text/csv", 3),  # a newline inside a quoted key
    ]
    for body, content_type, line in cases:
        answer = await _upload(dev_stack, sku, body, content_type)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "control_character"
        assert f"line {line} " in answer.json()["detail"]
        assert secret not in answer.text and f"OK-{tag}" not in answer.text
    multipart = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        headers=dev_stack.admin,
        files={"file": ("keys.txt", f"OK-{tag}-1\n{secret}\x00\n".encode(), "text/plain")},
    )
    assert (multipart.status_code, multipart.json()["error"]) == (422, "control_character")
    assert secret not in multipart.text
    assert await dev_stack.stock(sku) == EMPTY


async def test_multipart_needs_exactly_one_file_part(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    no_file = await dev_stack.http.post(
        f"/admin/products/{sku}/keys", headers=dev_stack.admin, files={"file": (None, f"NF-{tag}")}
    )  # `curl -F file=<keys.txt`: no filename
    assert (no_file.status_code, no_file.json()["error"]) == (422, "malformed_multipart")
    assert "exactly one complete file part" in no_file.json()["detail"] and "got 0" in no_file.json()["detail"]
    two = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        headers=dev_stack.admin,
        files=[
            ("file", ("a.txt", f"TA-{tag}".encode(), "text/plain")),
            ("file", ("b.txt", f"TB-{tag}".encode(), "text/plain")),
        ],
    )
    assert (two.status_code, two.json()["error"]) == (422, "malformed_multipart")
    assert "got 2" in two.json()["detail"]
    whole = httpx.Request("POST", "/", files={"file": ("keys.txt", f"TR-{tag}-1\nTR-{tag}-2\n".encode(), "text/plain")})
    truncated = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        content=whole.read()[:-40],
        headers={**dev_stack.admin, "Content-Type": whole.headers["content-type"]},
    )
    assert (truncated.status_code, truncated.json()["error"]) == (422, "malformed_multipart")
    no_boundary = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        content=f"NB-{tag}".encode(),
        headers={**dev_stack.admin, "Content-Type": "multipart/form-data"},
    )
    assert (no_boundary.status_code, no_boundary.json()["error"]) == (422, "malformed_multipart")
    assert await dev_stack.stock(sku) == EMPTY


async def _raw_post(stack: Stack, path: str, headers: dict[str, str], first_bytes: bytes) -> bytes:
    """Send the headers and only the first bytes of a body, then read the answer: the server must not wait."""
    url = urlsplit(str(stack.http.base_url))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": "shop", **headers}.items())
        writer.write(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + first_bytes)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), timeout=10)
    finally:
        writer.close()


async def test_token_and_size_are_checked_before_the_body_is_read(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    path = f"/admin/products/{sku}/keys"
    chunk = b"K\n" * 32768
    anonymous = await _raw_post(dev_stack, path, {"Content-Type": "text/plain", "Content-Length": "50000000"}, chunk)
    assert anonymous.startswith(b"HTTP/1.1 401 ") and b"missing_token" in anonymous
    token = dev_stack.admin["Authorization"]
    huge = await _raw_post(
        dev_stack,
        path,
        {"Authorization": token, "Content-Type": "text/plain", "Content-Length": str(uploads.MAX_UPLOAD_BYTES + 1)},
        chunk,
    )
    assert huge.startswith(b"HTTP/1.1 413 ") and b"upload_too_large" in huge
    form = await _raw_post(
        dev_stack,
        path,
        {"Authorization": token, "Content-Length": "50000000", "Content-Type": "application/x-www-form-urlencoded"},
        chunk,
    )
    assert form.startswith(b"HTTP/1.1 415 ")
    assert await dev_stack.stock(sku) == EMPTY


async def test_an_upload_past_the_limit_stops_while_streaming(
    dev_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 256 * 1024)
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]

    def body(size: int) -> bytes:
        return "".join(f"BIG-{tag}-{i:08d}\n" for i in range(size // 22)).encode()

    async def chunked(data: bytes) -> AsyncIterator[bytes]:  # no Content-Length: the limit is counted while reading
        for start in range(0, len(data), 16384):
            yield data[start : start + 16384]

    data = body(300 * 1024)
    multipart = httpx.Request("POST", "/", files={"file": ("keys.txt", data, "text/plain")})
    for content, content_type in ((data, "text/plain"), (multipart.read(), multipart.headers["content-type"])):
        answer = await dev_stack.http.post(
            f"/admin/products/{sku}/keys",
            content=chunked(content),
            headers={**dev_stack.admin, "Content-Type": content_type},
        )
        assert answer.status_code == 413, (content_type, answer.text)
        assert answer.json()["error"] == "upload_too_large"
    assert await dev_stack.stock(sku) == EMPTY
    fits = await dev_stack.http.post(
        f"/admin/products/{sku}/keys",
        content=chunked(body(200 * 1024)),
        headers={**dev_stack.admin, "Content-Type": "text/plain"},
    )
    assert fits.status_code == 200, fits.text
    assert await dev_stack.stock(sku) == {**EMPTY, "available": 200 * 1024 // 22}


async def test_openapi_declares_the_upload_body(dev_stack: Stack) -> None:
    schema = (await dev_stack.http.get("/openapi.json")).json()
    body = schema["paths"]["/admin/products/{sku}/keys"]["post"]["requestBody"]
    # What the parser takes, as patterns (N14: a fuzzer's "valid" upload must be taken). Multipart is
    # read but not declared: OpenAPI cannot say "a file part of UTF-8 text".
    assert set(body["content"]) == {"text/plain", "text/csv"}
    assert body["content"]["text/plain"]["schema"] == {"type": "string", "pattern": inventory.keys_text_pattern()}
    assert body["content"]["text/csv"]["schema"]["pattern"] == inventory.keys_csv_pattern()
    assert "multipart/form-data" in schema["paths"]["/admin/products/{sku}/keys"]["post"]["description"]
