"""The platform admin's console: withdrawals waiting for review (shop, amount, destination masked, how
long they have waited, approvals so far), approved or rejected with a reason through the same
workflow Updates as POST /admin/withdrawals/{id}/approve|reject (api/payout_actions.review), the
signed-in admin as the actor. The workflow decides: a second approval by the same person, or a
review of a withdrawal already decided, is refused and said on an error page."""

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api import payout_actions
from api.console.admin_session import AdminConsoleDep
from api.console.i18n import Translator
from api.console.i18n_payouts import note_in
from api.console.pages import ConsoleRoute, error_page, field, page
from api.console.session import DbDep
from api.console.withdrawals import WITHDRAWAL_ID, withdrawal_param
from api.deps import StateDep
from api.routes.web import secure
from api.state import State
from api.web import i18n as web_i18n
from miaofa import contract as c
from miaofa.errors import MiaofaError
from miaofa.payouts import views

router = APIRouter(prefix="/admin", include_in_schema=False, route_class=ConsoleRoute)
QUEUE = "/console/admin/withdrawals"
UPDATES = {"approve": c.APPROVE_UPDATE, "reject": c.REJECT_UPDATE}
# Refusals the workflow or the lookup gives, each with its own words (i18n_payouts "admin.wd.err.*").
SAID = frozenset({"same_approver", "not_in_review", "withdrawal_not_found"})
AGE_UNITS = {"en": ("d", "h", "min", "s"), "zh": ("天", "小时", "分钟", "秒")}


def age(seconds: int, lang: str = "en") -> str:
    """How long something has waited, in its two largest units: 93784 → "1 d 2 h"."""
    names = AGE_UNITS.get(lang, AGE_UNITS["en"])
    seconds = max(seconds, 0)
    parts: list[tuple[int, str]] = []
    for name, size in zip(names, (86400, 3600, 60, 1), strict=True):
        if seconds >= size or (size == 1 and not parts):
            parts.append((seconds // size, name))
            seconds %= size
    joiner = "" if lang == "zh" else " "
    return " ".join(f"{n}{joiner}{name}" for n, name in parts[:2])


@router.get("/withdrawals")
async def queue_page(request: Request, actor: AdminConsoleDep, db: DbDep, state: StateDep) -> Response:
    settings = state.settings
    lang = web_i18n.pick(request)
    queue = await views.review_queue(db)
    now = datetime.now(UTC)
    done = request.query_params.get("done", "")
    done_id = request.query_params.get("id", "")
    ok = done in UPDATES and bool(WITHDRAWAL_ID.match(done_id))
    two = settings.payout_two_person_cents
    return page(
        request,
        "console/admin_withdrawals.html",
        queue=[
            {
                "row": row,
                "age": age(int((now - row.withdrawal.created_at).total_seconds()), lang),
                "needed": 2 if two and row.withdrawal.amount_cents > two else 1,
                "approvals": [note_in(note, lang) for note in row.approvals],
            }
            for row in queue
        ],
        auto=web_i18n.money(settings.payout_auto_approve_cents, "CNY"),
        two=web_i18n.money(two, "CNY") if two else "",
        done=done if ok else "",
        done_id=done_id if ok else "",
    )


async def _review(
    withdrawal_id: str, action: str, request: Request, actor: str, db: AsyncSession, state: State
) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "admin-withdrawal-review")
    withdrawal_id = withdrawal_param(withdrawal_id)
    reason = field(form, "reason", 300, required=True)
    try:
        await payout_actions.review(state, db, withdrawal_id, UPDATES[action], actor, reason)
    except MiaofaError as exc:
        if exc.error not in SAID:
            raise
        t = Translator(web_i18n.pick(request))
        two = web_i18n.money(state.settings.payout_two_person_cents, "CNY")
        return error_page(request, exc.status_code, t(f"admin.wd.err.{exc.error}", two=two))
    await db.commit()  # the audit line
    return secure(RedirectResponse(f"{QUEUE}?done={action}&id={withdrawal_id}", status_code=303), private=True)


@router.post("/withdrawals/{withdrawal_id}/approve")
async def approve(withdrawal_id: str, request: Request, actor: AdminConsoleDep, db: DbDep, state: StateDep) -> Response:
    return await _review(withdrawal_id, "approve", request, actor, db, state)


@router.post("/withdrawals/{withdrawal_id}/reject")
async def reject(withdrawal_id: str, request: Request, actor: AdminConsoleDep, db: DbDep, state: StateDep) -> Response:
    return await _review(withdrawal_id, "reject", request, actor, db, state)
