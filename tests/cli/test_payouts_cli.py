"""`miaofa payouts list|show|approve|reject` in a subprocess against a running shop, with a finance
person's own token: whole ids in a pipe, destinations masked only, one-line refusals and exit codes."""

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
import uuid
from pathlib import Path

from miaofa import contract as c
from tests.api.test_tokens import new_token
from tests.cli.test_support_cli import cli, cli_env
from tests.helpers import payouts as p
from tests.helpers.stack import Stack

LIST_FIELDS = (
    "withdrawal_id",
    "status",
    "merchant",
    "amount_cents",
    "currency",
    "destination",
    "created_at",
    "review_reason",
)


async def _in_review(stack: Stack, amount: int = 200_000) -> tuple[p.Shop, str]:
    shop = await p.funded_shop(stack, 3_000_000)
    wid = await p.withdrawn(stack, shop, amount, await p.destination(stack, shop))
    await p.wait_status(stack, shop, wid, c.WITHDRAWAL_IN_REVIEW)
    return shop, wid


def _env(stack: Stack, tmp_path: Path, token: str | None) -> dict[str, str]:
    env = cli_env(stack, tmp_path)
    env.pop("MIAOFA_ADMIN_TOKEN", None)  # the fallback: only the token given here is sent
    env.pop("MIAOFA_STAFF_TOKEN", None)
    if token is not None:
        env["MIAOFA_STAFF_TOKEN"] = token
    return env


def _payouts(stack: Stack, tmp_path: Path, token: str | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "payouts", *args],
        env=_env(stack, tmp_path, token),
        capture_output=True,
        text=True,
        timeout=90,
    )


def _on_terminal(stack: Stack, tmp_path: Path, token: str, *args: str) -> str:
    """stdout on a pseudo-terminal 80 columns wide, colours stripped (as tests/cli/test_support_cli.py)."""
    main, child = pty.openpty()
    env = {**_env(stack, tmp_path, token), "COLUMNS": "80", "LINES": "50"}
    proc = subprocess.Popen([sys.executable, "-m", "miaofa.cli", *args], env=env, stdout=child, stderr=subprocess.PIPE)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(90) == 0, proc.stderr.read() if proc.stderr else ""
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())


async def test_list_and_show_in_a_pipe_whole_ids_and_the_destination_masked(
    payout_stack: Stack, tmp_path: Path
) -> None:
    _, finance = new_token(payout_stack, tmp_path, "finance")
    shop, wid = await _in_review(payout_stack)
    other, _ = await _in_review(payout_stack)

    listed = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "list", "--merchant", shop.slug)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t") == list(LIST_FIELDS)
    rows = [dict(zip(LIST_FIELDS, line.split("\t"), strict=True)) for line in lines]
    assert [(r["withdrawal_id"], r["status"], r["merchant"], r["amount_cents"], r["destination"]) for r in rows] == [
        (wid, "in_review", shop.slug, "200000", "****0123 (张*)")
    ]
    by_id = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "list", "--merchant", shop.merchant_id)
    assert by_id.stdout == listed.stdout
    everyone = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "list", "--json", "--limit", "500")
    found = {json.loads(line)["merchant"] for line in everyone.stdout.splitlines()}
    assert {shop.slug, other.slug} <= found
    none = await asyncio.to_thread(
        _payouts, payout_stack, tmp_path, finance, "list", "--merchant", shop.slug, "--status", "paid"
    )
    assert (none.returncode, none.stdout, none.stderr.strip()) == (
        0,
        "\t".join(LIST_FIELDS) + "\n",
        "No withdrawals paid.",
    )

    shown = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "show", wid)
    assert shown.returncode == 0, shown.stderr
    first, *timeline = shown.stdout.splitlines()
    assert first == (
        f"Withdrawal {wid} is in_review: 2000.00 CNY (fee 0.50) to ****0123 (张*) on simulator, "
        f"for shop {shop.slug} ({shop.merchant_id})."
    )
    assert timeline[0] == "at\tstage\tnote"
    assert [line.split("\t")[1:] for line in timeline[1:]] == [
        [
            "requested",
            "You asked for 2000.00 CNY to ****0123 (张*); the fee is 0.50 CNY. "
            "The money is set aside from your balance.",
        ],
        ["in_review", "Waiting for review by platform finance."],
    ]
    as_json = json.loads(
        (await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "show", "--json", wid)).stdout
    )
    assert (as_json["withdrawal_id"], as_json["destination"]) == (wid, "****0123 (张*)")
    for out in (listed.stdout, everyone.stdout, shown.stdout, json.dumps(as_json, ensure_ascii=False)):
        assert p.ACCOUNT not in out and p.NAME not in out

    # On a terminal: a table, its withdrawal ids whole.
    table = await asyncio.to_thread(
        _on_terminal, payout_stack, tmp_path, finance, "payouts", "list", "--merchant", shop.slug
    )
    assert "┃ withdrawal" in table and "━" in table and wid in table
    for each in (shop, other):  # leave no withdrawal waiting for review
        listed = await payout_stack.http.get(f"/admin/withdrawals?merchant={each.slug}", headers=payout_stack.admin)
        for row in listed.json()["withdrawals"]:
            answer = await payout_stack.http.post(
                f"/admin/withdrawals/{row['withdrawal_id']}/reject", headers=payout_stack.admin, json={"reason": "tidy"}
            )
            assert answer.status_code == 200, answer.text
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_REJECTED)
    await p.clean(payout_stack)


async def test_approve_and_reject_say_what_happened_and_refusals_exit_1(payout_stack: Stack, tmp_path: Path) -> None:
    name, finance = new_token(payout_stack, tmp_path, "finance")
    shop, wid = await _in_review(payout_stack)
    done = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "approve", wid, "--reason", "known shop")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (
        0,
        f"Approved. Withdrawal {wid} has 1 approval(s): {name}.",
        "",
    )
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert f"Approved by {name}: known shop" in [e["note"] for e in seen["timeline"]]
    again = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "approve", wid, "--reason", "twice")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr.strip().startswith("Refused (not_in_review): ")

    # A suspended shop's small withdrawal: `show` says why a person reviews it.
    shop = await p.funded_shop(payout_stack, 3_000_000)
    dest = await p.destination(payout_stack, shop)
    suspended = await payout_stack.http.post(
        f"/admin/merchants/{shop.slug}/suspend", headers=payout_stack.admin, json={"reason": "KYC expired"}
    )
    assert suspended.status_code == 200, suspended.text
    second = await p.withdrawn(payout_stack, shop, 1000, dest)
    await p.wait_status(payout_stack, shop, second, c.WITHDRAWAL_IN_REVIEW)
    shown = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "show", second)
    assert shown.stdout.splitlines()[1] == (
        "Review required: your shop is suspended (KYC expired), so a person checks every withdrawal before it is sent."
    )
    rejected = await asyncio.to_thread(
        _payouts, payout_stack, tmp_path, finance, "reject", second, "--reason", "payee name unclear"
    )
    assert (rejected.returncode, rejected.stdout.strip()) == (
        0,
        f"Rejected. Withdrawal {second}'s money goes back to the shop's balance.",
    )
    seen = await p.wait_status(payout_stack, shop, second, c.WITHDRAWAL_REJECTED)
    assert "payee name unclear" in seen["timeline"][-1]["note"]
    assert (await p.balance(payout_stack, shop))["available"] == 3_000_000

    unknown = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "show", "wd_" + "0" * 20)
    assert (unknown.returncode, unknown.stdout, unknown.stderr.strip()) == (
        1,
        "",
        "Refused (withdrawal_not_found): no such withdrawal.",
    )
    await p.clean(payout_stack)


async def test_bad_input_and_tokens_that_may_not_review(payout_stack: Stack, tmp_path: Path) -> None:
    _, finance = new_token(payout_stack, tmp_path, "finance")
    _, support = new_token(payout_stack, tmp_path, "support")
    shop, wid = await _in_review(payout_stack)
    cases = [
        (
            finance,
            ("list", "--status", "lost"),
            2,
            "--status must be one of: requested, in_review, approved, submitted, paid, failed, rejected, returned.",
        ),
        (
            finance,
            ("list", "--merchant", "x' OR 1=1"),
            2,
            "--merchant is a slug or a merchant id: letters, digits, _ and - only.",
        ),
        (
            finance,
            ("reject", wid, "--reason", "line\nbreak"),
            2,
            "Bad input: reason: must not contain control characters.",
        ),
        (
            support,
            ("approve", wid, "--reason", "ok"),
            2,
            "The API refused the token: the token is not the admin token or a finance token.",
        ),
        (None, ("list",), 2, "MIAOFA_STAFF_TOKEN is not set: ask an admin for one (`miaofa tokens add`)."),
    ]
    for token, args, code, message in cases:
        done = await asyncio.to_thread(_payouts, payout_stack, tmp_path, token, *args)
        assert (done.returncode, done.stdout, done.stderr.strip()) == (code, "", message), args
    no_reason = await asyncio.to_thread(_payouts, payout_stack, tmp_path, finance, "reject", wid)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    # A finance token is refused support's work, in one line.
    support_show = await asyncio.to_thread(
        cli, payout_stack, tmp_path, "support", "show", "o" + uuid.uuid4().hex[:19], token=finance
    )
    assert (support_show.returncode, support_show.stderr.strip()) == (
        1,
        "Refused (forbidden): a finance token may list, approve and reject withdrawals and read the ledger check; "
        "this needs another role.",
    )
    assert (await p.view(payout_stack, shop, wid))["status"] == c.WITHDRAWAL_IN_REVIEW  # nothing was done
    rejected = await payout_stack.http.post(
        f"/admin/withdrawals/{wid}/reject", headers=payout_stack.admin, json={"reason": "tidy up"}
    )
    assert rejected.status_code == 200, rejected.text
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_REJECTED)
    await p.clean(payout_stack)
