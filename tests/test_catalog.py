"""Catalog and key import through the admin API: counts, dedupe, encryption, all-or-nothing errors."""

import asyncio
import uuid

from sqlalchemy import text

from tests.stack import Stack


async def _new_product(stack: Stack) -> str:
    return await stack.product([])


async def _upload(stack: Stack, sku: str, body: str, content_type: str = "text/plain"):
    return await stack.http.post(f"/admin/products/{sku}/keys", content=body.encode(),
                                 headers={**stack.admin, "Content-Type": content_type})


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
        rows = (await session.execute(text(
            "SELECT k::text FROM card_keys k JOIN products p ON p.id = k.product_id WHERE p.sku = :sku"),
            {"sku": sku})).scalars().all()
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
    assert created.json() == {"sku": sku, "name": "Steam ¥50", "price_cents": 5000, "currency": "CNY",
                              "delivery_sla_seconds": 60}
    again = await dev_stack.http.post("/admin/products", json=body, headers=dev_stack.admin)
    assert (again.status_code, again.json()["error"]) == (409, "product_exists")
    bad = await dev_stack.http.post("/admin/products", json={**body, "sku": "x2", "price_cents": 12.5},
                                    headers=dev_stack.admin)
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_input")
    assert "price_cents" in bad.json()["detail"]
    listed = {p["sku"]: p for p in (await dev_stack.http.get("/products")).json()}
    assert listed[sku]["available"] == 0


async def test_admin_endpoints_need_the_admin_token(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    calls = [("POST", "/admin/products", {"json": {"sku": "z", "name": "z", "price_cents": 1, "currency": "CNY"}}),
             ("POST", f"/admin/products/{sku}/keys", {"content": b"K-unauth"}),
             ("GET", f"/admin/products/{sku}/stock", {})]
    for method, path, kwargs in calls:
        missing = await dev_stack.http.request(method, path, **kwargs)
        assert missing.status_code == 401
        assert missing.json() == {"error": "missing_token", "detail": "send Authorization: Bearer <token>"}
        for token in ("wrong-token", dev_stack.support["Authorization"].removeprefix("Bearer ")):
            wrong = await dev_stack.http.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                                 **kwargs)
            assert wrong.status_code == 401
            assert wrong.json() == {"error": "invalid_token", "detail": "the token is not the admin token"}
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 0, "refunded": 0}


async def test_healthz(dev_stack: Stack) -> None:
    answer = await dev_stack.http.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


async def test_concurrent_imports_of_the_same_keys_store_each_once(dev_stack: Stack) -> None:
    sku = await _new_product(dev_stack)
    tag = uuid.uuid4().hex[:8]
    body = "\n".join(f"RACE-{tag}-{i:04d}" for i in range(1000))
    answers = await asyncio.gather(*(_upload(dev_stack, sku, body) for _ in range(3)))
    results = [answer.json() for answer in answers]
    assert sum(r["imported"] for r in results) == 1000
    assert sum(r["duplicates"] for r in results) == 2000
    assert await dev_stack.stock(sku) == {"available": 1000, "reserved": 0, "sold": 0, "refunded": 0}
