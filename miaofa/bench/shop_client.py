"""The shop as a buyer and the merchant reach it (API and simulator over HTTP), and its own
timestamps read back from PostgreSQL after the load (asyncpg; nothing written to the shop)."""

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from miaofa.bench.base import BenchError
from miaofa.bench.lean_http import LEAN_ERRORS, LeanHTTP
from miaofa.bench.stats import summary_ms
from miaofa.settings import Settings


@dataclass
class Sent:
    """One POST /orders as the client saw it (wall times in epoch seconds, to compare with the DB)."""

    index: int
    scheduled_wall: float
    sent_wall: float
    seconds: float  # send → answer
    status: int
    order_id: str | None = None
    access_token: str | None = None
    payment_id: str | None = None
    error: str | None = None
    paid_wall: float | None = None  # when the simulator answered the payment
    pay_status: int | None = None
    pay_error: str | None = None


def control_token(settings: Settings) -> str:
    """The simulator's /control token, where this version of the shop has one (else no header)."""
    for name in ("sim_control_token", "sim_control_secret", "control_token"):
        value = getattr(settings, name, "")
        if value:
            return str(value)
    return ""


class Shop:
    """The API and the simulator, as a buyer and the merchant reach them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api = settings.api_url.rstrip("/")
        self.sim = settings.sim_url.rstrip("/")
        # httpx for the merchant's calls and reads after the load, a few at a time; LeanHTTP for the load.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(120, pool=None), limits=httpx.Limits(max_connections=32))
        self.admin = {"Authorization": f"Bearer {settings.admin_token}"}
        token = control_token(settings)
        self.control_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.run_id = uuid.uuid4().hex[:6]  # buyers' emails differ from run to run
        self.api_lean, self.sim_lean = LeanHTTP(self.api), LeanHTTP(self.sim)  # for the load itself

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.api_lean.aclose()
        await self.sim_lean.aclose()

    async def create_product(self, keys: int, label: str) -> str:
        """A fresh product with its own keys, so runs never interfere."""
        if not self.settings.admin_token:
            raise BenchError(
                "no admin token: set MIAOFA_ADMIN_TOKEN, or run where `miaofa up` keeps data/dev-secrets.json"
            )
        sku = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        created = await self.http.post(
            f"{self.api}/admin/products",
            headers=self.admin,
            json={"sku": sku, "name": f"Benchmark {label}", "price_cents": 100, "currency": "CNY"},
        )
        if created.status_code != 201:
            raise BenchError(f"POST /admin/products answered {created.status_code}: {created.text[:300]}")
        if keys:
            body = "\n".join(f"BENCH-{sku}-{i:07d}-{uuid.uuid4().hex}" for i in range(keys))
            imported = await self.http.post(
                f"{self.api}/admin/products/{sku}/keys",
                content=body,
                headers={**self.admin, "Content-Type": "text/plain"},
            )
            if imported.status_code != 200 or imported.json().get("imported") != keys:
                raise BenchError(
                    f"POST /admin/products/{sku}/keys answered {imported.status_code}: {imported.text[:300]}"
                )
        return sku

    async def create_order(self, sku: str, index: int, scheduled_wall: float | None = None) -> Sent:
        sent_wall, started = time.time(), time.perf_counter()
        try:
            status, data = await self.api_lean.request(
                "POST",
                "/orders",
                {"sku": sku, "quantity": 1, "email": f"bench{index}-{self.run_id}@example.com", "gateway": "simulator"},
            )
        except LEAN_ERRORS as exc:
            return Sent(
                index,
                scheduled_wall or sent_wall,
                sent_wall,
                time.perf_counter() - started,
                0,
                error=f"{type(exc).__name__}: {exc}"[:200],
            )
        sent = Sent(index, scheduled_wall or sent_wall, sent_wall, time.perf_counter() - started, status)
        if status == 201:
            body = json.loads(data)
            sent.order_id, sent.access_token = body["order_id"], body["access_token"]
            sent.payment_id = (body.get("payment") or {}).get("payment_id")
        else:
            sent.error = data[:200].decode(errors="replace")
        return sent

    async def pay(self, sent: Sent) -> None:
        """The buyer pays at the gateway (the simulator's pay button)."""
        try:
            sent.pay_status, data = await self.sim_lean.request("POST", f"/pay/{sent.payment_id}")
            if sent.pay_status != 200:
                sent.pay_error = data[:200].decode(errors="replace")
        except LEAN_ERRORS as exc:
            sent.pay_status, sent.pay_error = 0, f"{type(exc).__name__}: {exc}"[:200]
        sent.paid_wall = time.time()

    async def view(self, sent: Sent) -> dict[str, Any]:
        answer = await self.http.get(
            f"{self.api}/orders/{sent.order_id}", headers={"X-Order-Token": sent.access_token or ""}
        )
        answer.raise_for_status()
        return answer.json()

    async def stock(self, sku: str) -> dict[str, int]:
        answer = await self.http.get(f"{self.api}/admin/products/{sku}/stock", headers=self.admin)
        answer.raise_for_status()
        return answer.json()

    async def api_metrics(self) -> str:
        answer = await self.http.get(f"{self.api}/metrics")
        answer.raise_for_status()
        return answer.text

    async def get_control(self) -> dict[str, Any] | None:
        try:
            answer = await self.http.get(f"{self.sim}/control", headers=self.control_headers)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    async def set_control(self, **knobs: Any) -> dict[str, Any]:
        answer = await self.http.post(f"{self.sim}/control", json=knobs, headers=self.control_headers)
        if answer.status_code != 200:
            raise BenchError(
                f"simulator POST /control answered {answer.status_code}: {answer.text[:200]} "
                "(a control token missing from the settings?)"
            )
        return answer.json()

    async def restore_control(self, saved: dict[str, Any] | None) -> None:
        """Put the simulator's knobs back as they were (or to their defaults)."""
        if saved is not None:
            answer = await self.http.post(f"{self.sim}/control", json=saved, headers=self.control_headers)
            if answer.status_code == 200:
                return
        await self.http.post(f"{self.sim}/control/reset", headers=self.control_headers)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass
class OrderTimes:
    order_id: str
    status: str
    created: float
    paid: float | None
    delivered: float | None  # orders.delivered_at: the workflow's clock when it decided to deliver
    committed: float | None = None  # orders.updated_at of a delivered order: the delivering transaction
    stages: dict[str, float] = field(default_factory=dict)  # first time of each timeline stage


class ShopDB:
    """Reads orders, their timeline and the notify log with asyncpg; writes nothing to the shop."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def delivered_count(self, order_ids: list[str]) -> int:
        return await self.pool.fetchval(
            "SELECT count(*) FROM orders WHERE id = ANY($1::text[]) AND delivered_at IS NOT NULL", order_ids
        )

    async def sku_counts(self, sku: str) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT status, count(*) AS n FROM orders WHERE sku = $1 GROUP BY status", sku)
        return {row["status"]: row["n"] for row in rows}

    async def times(self, order_ids: list[str]) -> list[OrderTimes]:
        rows = await self.pool.fetch(
            "SELECT id, status, created_at, paid_at, delivered_at, updated_at FROM orders WHERE id = ANY($1::text[])",
            order_ids,
        )
        found = {
            row["id"]: OrderTimes(
                row["id"],
                row["status"],
                row["created_at"].timestamp(),
                _epoch(row["paid_at"]),
                _epoch(row["delivered_at"]),
                _epoch(row["updated_at"]) if row["status"] == "delivered" else None,
            )
            for row in rows
        }
        events = await self.pool.fetch(
            "SELECT order_id, stage, min(at) AS at FROM order_events WHERE order_id = ANY($1::text[]) "
            "GROUP BY order_id, stage",
            order_ids,
        )
        for row in events:
            if row["order_id"] in found:
                found[row["order_id"]].stages[row["stage"]] = row["at"].timestamp()
        try:  # when the API had the notify in hand (optional: the notify log may change shape)
            notifies = await self.pool.fetch(
                "SELECT order_id, min(received_at) AS at FROM notify_log WHERE order_id = ANY($1::text[]) "
                "GROUP BY order_id",
                order_ids,
            )
        except asyncpg.PostgresError:
            notifies = []
        for row in notifies:
            if row["order_id"] in found:
                found[row["order_id"]].stages["notify_received"] = row["at"].timestamp()
        return list(found.values())

    async def keys_per_order(self, order_ids: list[str]) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT order_id, count(*) AS n FROM card_keys WHERE order_id = ANY($1::text[]) AND status = 'sold' "
            "GROUP BY order_id",
            order_ids,
        )
        return {row["order_id"]: row["n"] for row in rows}

    async def facts(self) -> dict[str, Any]:
        facts = {}
        for name in ("server_version", "synchronous_commit", "fsync", "max_connections", "shared_buffers"):
            try:
                facts[name] = await self.pool.fetchval(f"SHOW {name}")
            except asyncpg.PostgresError:
                pass
        return facts


def paid_to_delivered(times: list[OrderTimes]) -> list[float]:
    """orders.paid_at (the gateway's clock) → orders.delivered_at, as the issue measured it."""
    return [t.delivered - t.paid for t in times if t.paid is not None and t.delivered is not None]


def paid_to_committed(times: list[OrderTimes]) -> list[float]:
    """paid_at → orders.updated_at of the delivered order: PostgreSQL's now() in the transaction that
    marked it delivered (its start), so it includes the delivery activity's dispatch that
    delivered_at (stamped by the workflow before it schedules the activity) leaves out."""
    return [t.committed - t.paid for t in times if t.paid is not None and t.committed is not None]


def stage_breakdown(times: list[OrderTimes], sent: dict[str, Sent]) -> dict[str, dict[str, dict[str, float]]]:
    """Median and p99 of each timeline stage: before payment from the client's create, after it from paid_at."""
    after_create: dict[str, list[float]] = {}
    after_paid: dict[str, list[float]] = {}
    for t in times:
        origin = sent[t.order_id].sent_wall if t.order_id in sent else t.created
        for stage, at in t.stages.items():
            if t.paid is not None and at >= t.paid and stage != "paid":
                after_paid.setdefault(stage, []).append(at - t.paid)
            elif t.paid is None or at < t.paid:
                after_create.setdefault(stage, []).append(at - origin)
        if t.order_id in sent:
            after_create.setdefault("answer_201 (client)", []).append(sent[t.order_id].seconds)
        if t.paid is not None and t.committed is not None:
            after_paid.setdefault("delivery_committed (orders.updated_at)", []).append(t.committed - t.paid)

    def summarise(groups: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        stats = {stage: summary for stage, values in groups.items() if (summary := summary_ms(values))}
        return {
            stage: {k: s[k] for k in ("n", "p50", "p99")}
            for stage, s in sorted(stats.items(), key=lambda item: item[1]["p50"])
        }

    return {"after_create_ms": summarise(after_create), "after_paid_ms": summarise(after_paid)}


def order_statuses(sent: list[Sent]) -> dict[str, int]:
    """How POST /orders answered (0: no answer), and how paying the 201s at the simulator went."""
    counts: dict[str, int] = {}
    for s in sent:
        counts[str(s.status)] = counts.get(str(s.status), 0) + 1
        if s.pay_status is not None and s.pay_status != 200:
            key = f"pay_{s.pay_status}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def errors_seen(sent: list[Sent], limit: int = 5) -> list[str]:
    """The first few distinct refusals (not 201 nor a sold-out 409), and failed payments."""
    seen: list[str] = []
    for s in sent:
        lines = []
        if s.error and s.status not in (201, 409):
            lines.append(f"{s.status}: {s.error}")
        if s.pay_error:
            lines.append(f"paying at the simulator, {s.pay_status}: {s.pay_error}")
        for line in lines:
            if line not in seen and len(seen) < limit:
                seen.append(line)
    return seen
