"""`miaofa merchants add|list|suspend|resume` in a subprocess, against the test database."""

import asyncio
import uuid

from tests.api.test_merchants import open_shop, shop_order, shop_product
from tests.cli.test_support_cli import _search, cli
from tests.helpers.stack import Stack


def test_the_cli_opens_lists_and_suspends_shops(dev_stack: Stack, tmp_path) -> None:
    slug = "s-" + uuid.uuid4().hex[:10]
    added = cli(dev_stack, tmp_path, "merchants", "add", slug, "--name", "茶馆 Tea", "--fee-bps", "250")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("mfm_") and "\n" not in token
    assert f"Shop {slug} (m_" in added.stderr and "shown once" in added.stderr
    assert token not in added.stderr

    again = cli(dev_stack, tmp_path, "merchants", "add", slug, "--name", "x")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr.strip() == f"Refused: the slug '{slug}' is taken."
    bad = cli(dev_stack, tmp_path, "merchants", "add", "Bad Slug", "--name", "x")
    assert bad.returncode == 2 and bad.stderr.startswith("Refused: slug: 2-32 characters")

    suspended = cli(dev_stack, tmp_path, "merchants", "suspend", slug, "--reason", "unpaid fees")
    assert suspended.returncode == 0, suspended.stderr
    listed = cli(dev_stack, tmp_path, "merchants", "list")
    row = next(line.split("\t") for line in listed.stdout.splitlines() if f"\t{slug}\t" in line)
    assert row[1:] == [slug, "茶馆 Tea", "platform", "250", "0", "suspended", "unpaid fees"]
    assert row[0].startswith("m_") and len(row[0]) == 18  # whole ids in a pipe
    assert "mfm_" not in listed.stdout
    unknown = cli(dev_stack, tmp_path, "merchants", "resume", "s-nobody-here")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "Refused: no merchant 's-nobody-here'."


async def test_orders_search_finds_one_shops_orders(dev_stack: Stack, tmp_path) -> None:
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    sku = await shop_product(dev_stack, a, ["A-1", "A-2"], sku="same")
    await shop_product(dev_stack, b, ["B-1"], sku="same")
    mine = [await shop_order(dev_stack, a, sku) for _ in range(2)]
    await shop_order(dev_stack, b, sku)
    rows = await _search(dev_stack, tmp_path, "--merchant", a.merchant_id, expect=2)
    assert sorted(row["order_id"] for row in rows) == sorted(o["order_id"] for o in mine)
    assert {row["merchant_id"] for row in rows} == {a.merchant_id}
    bad = await asyncio.to_thread(cli, dev_stack, tmp_path, "orders", "search", "--merchant", "x' OR 1=1")
    assert bad.returncode == 2 and "--merchant may hold" in bad.stderr
