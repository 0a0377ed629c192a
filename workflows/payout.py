"""PayoutWorkflow: one withdrawal, from review to paid, or back in the merchant's balance with a reason.

The money was reserved when the withdrawal was made. The transfer number is the withdrawal's id,
fixed once: a timeout or an unclear answer is followed by a query, and a new submit happens only
when the rail says it never got the transfer, under the same number. Unknown is asked again with a
backoff, never failed. Every step writes a line on the withdrawal's timeline.

Versioned from day one: a change to the commands below goes behind workflow.patched (workflows/patches.py)."""

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from miaofa import contract as c
from miaofa import steps as s

DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), non_retryable_error_types=[s.DATA_ERROR])
# One try: a submit that fails in any way is followed by a query, not by another submit.
SUBMIT_RETRY = RetryPolicy(maximum_attempts=1)
ASK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5))
STEP_TIMEOUT = timedelta(seconds=60)


def money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


@workflow.defn(name=c.PAYOUT_WORKFLOW)
class PayoutWorkflow:
    def __init__(self) -> None:
        self.withdrawal_id = ""
        self.status = c.WITHDRAWAL_REQUESTED
        self.approvals: list[c.PayoutReview] = []
        self.rejection: c.PayoutReview | None = None
        self.seq = 0
        self.needed = 1

    @workflow.run
    async def run(self, request: c.PayoutInput) -> c.PayoutState:
        self.withdrawal_id = request.withdrawal_id
        self.request = request
        if not await self.review():
            await self.settle(s.SETTLE_RELEASE, c.WITHDRAWAL_REJECTED, "rejected", self.rejected_note())
            return self.state()
        await self.pay()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    # ---- review ------------------------------------------------------------------------------

    async def review(self) -> bool:
        timing = self.request.timing
        # A reason to review (the shop is suspended) overrides the amount's thresholds. Inputs recorded
        # before the field existed carry "": their commands are exactly as they were.
        must = self.request.review_reason
        small = timing.auto_approve_cents == 0 or self.request.amount_cents <= timing.auto_approve_cents
        if small and not must:
            await self.stage("approved", "Approved automatically.", c.WITHDRAWAL_APPROVED)
            return True
        two = timing.two_person_cents and self.request.amount_cents > timing.two_person_cents
        self.needed = 2 if two else 1
        who = "two people of platform finance" if two else "platform finance"
        why = f": {must}." if must else "."
        await self.stage("in_review", f"Waiting for review by {who}{why}", c.WITHDRAWAL_IN_REVIEW)
        seen, late_noted = 0, False
        while True:
            try:
                await workflow.wait_condition(
                    self.decided_since(seen),
                    timeout=None if late_noted else timedelta(seconds=timing.review_sla_seconds),
                )
            except TimeoutError:
                late_noted = True
                workflow.logger.warning("withdrawal %s is past its review SLA", self.withdrawal_id)
                await self.stage("review_late", "The review is taking longer than usual; finance has been reminded.")
                continue
            if self.rejection is not None:
                return False
            for review in self.approvals[seen:]:
                await self.stage("review_approved", f"Approved by {review.actor}: {review.reason}".rstrip(": "))
            seen = len(self.approvals)
            if seen >= self.needed:
                await self.stage("approved", "Approved.", c.WITHDRAWAL_APPROVED)
                return True

    def decided_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self.rejection is not None or len(self.approvals) > seen

    def rejected_note(self) -> str:
        reason = self.rejection.reason if self.rejection else ""
        return f"Rejected by platform finance: {reason}. The money is back in your balance."

    @workflow.update(name=c.APPROVE_UPDATE)
    async def approve(self, review: c.PayoutReview) -> c.PayoutState:
        self.approvals.append(review)
        return self.state()

    @approve.validator
    def validate_approve(self, review: c.PayoutReview) -> None:
        self.check_reviewable(review)
        if any(a.actor == review.actor for a in self.approvals):
            raise ApplicationError("a second approval must come from another person", type=c.REFUSED_SAME_APPROVER)

    @workflow.update(name=c.REJECT_UPDATE)
    async def reject(self, review: c.PayoutReview) -> c.PayoutState:
        self.rejection = review
        return self.state()

    @reject.validator
    def validate_reject(self, review: c.PayoutReview) -> None:
        self.check_reviewable(review)
        if not review.reason.strip():
            raise ApplicationError("a rejection needs a reason the merchant reads", type=c.REFUSED_MISSING_INPUT)

    def check_reviewable(self, review: c.PayoutReview) -> None:
        if self.status != c.WITHDRAWAL_IN_REVIEW or self.rejection is not None:
            raise ApplicationError(f"the withdrawal is {self.status}", type=c.REFUSED_NOT_IN_REVIEW)
        if len(self.approvals) >= self.needed:
            raise ApplicationError("the withdrawal is already approved", type=c.REFUSED_NOT_IN_REVIEW)
        if not review.actor:
            raise ApplicationError("who reviews it must be named", type=c.REFUSED_MISSING_INPUT)

    @workflow.query(name=c.STATUS_QUERY)
    def state(self) -> c.PayoutState:
        return c.PayoutState(self.withdrawal_id, self.status, [a.actor for a in self.approvals])

    # ---- the rail ----------------------------------------------------------------------------

    async def pay(self) -> None:
        r = self.request
        sent = money(r.amount_cents - r.fee_cents, r.currency)
        await self.stage(
            "submitted",
            f"Sent to the {r.rail} rail: {sent}, transfer number {r.withdrawal_id}.",
            c.WITHDRAWAL_SUBMITTED,
        )
        answer = await self.submit()
        backoff = r.timing.query_interval_seconds
        confirm_by = None
        unclear_noted = False
        while True:
            if answer.status == s.TRANSFER_PAID:
                await self.settle(s.SETTLE_PAID, c.WITHDRAWAL_PAID, "paid", f"Paid: {sent} arrived.")
                await self.watch_for_return(sent)
                return
            if answer.status in (s.TRANSFER_FAILED, s.TRANSFER_CANCELLED):  # FAILED only comes definitive
                note = f"The transfer failed: {answer.reason}. The money is back in your balance."
                if answer.status == s.TRANSFER_CANCELLED:
                    note = "The payee did not confirm in time; the transfer was cancelled and the money is back."
                stage = "cancelled" if answer.status == s.TRANSFER_CANCELLED else "failed"
                await self.settle(s.SETTLE_RELEASE, c.WITHDRAWAL_FAILED, stage, note, answer.code)
                return
            if answer.status == s.TRANSFER_NOT_FOUND:  # never arrived: the same number again, safe
                await self.stage("resubmitted", "The rail had not received it; sent again with the same number.")
                answer = await self.submit()
                continue
            wait = backoff
            if answer.status == s.TRANSFER_WAIT_CONFIRM:
                now = workflow.now()
                if confirm_by is None:
                    confirm_by = now + timedelta(seconds=r.timing.confirm_timeout_seconds)
                    await self.stage("await_confirm", "Waiting for the payee to accept the transfer.")
                if now >= confirm_by:
                    answer = await self.ask(s.CANCEL_TRANSFER)
                    if answer.status != s.TRANSFER_WAIT_CONFIRM:
                        continue
                    wait = backoff  # the rail kept it waiting: try the cancel again later, not at once
                else:
                    wait = min(backoff, (confirm_by - now).total_seconds())
            elif not unclear_noted:  # unknown, processing, an unlisted failure: ask again, never fail
                unclear_noted = True
                await self.stage("checking", "The rail has not confirmed the outcome yet; we keep asking it.")
            await workflow.sleep(timedelta(seconds=max(wait, 0.1)))
            backoff = min(backoff * 2, r.timing.query_max_interval_seconds)
            answer = await self.ask(s.QUERY_TRANSFER)

    async def watch_for_return(self, sent: str) -> None:
        """A bank may send a paid transfer back days later: a new posting, on the same timeline."""
        timing = self.request.timing
        until = workflow.now() + timedelta(seconds=timing.return_watch_seconds)
        while workflow.now() < until:
            await workflow.sleep(timedelta(seconds=timing.return_poll_seconds))
            answer = await self.ask(s.QUERY_TRANSFER)
            if answer.status == s.TRANSFER_RETURNED:
                note = f"{sent} came back: {answer.reason}. The money is back in your balance."
                await self.settle(s.SETTLE_RETURN, c.WITHDRAWAL_RETURNED, "returned", note, answer.code)
                return

    async def submit(self) -> s.TransferAnswer:
        try:
            return await workflow.execute_activity(
                s.SUBMIT_TRANSFER,
                s.TransferStep(self.withdrawal_id),
                result_type=s.TransferAnswer,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=SUBMIT_RETRY,
            )
        except ActivityError:  # it may have reached the rail: the query finds out
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="submit_failed")

    async def ask(self, step: str) -> s.TransferAnswer:
        return await workflow.execute_activity(
            step,
            s.TransferStep(self.withdrawal_id),
            result_type=s.TransferAnswer,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=ASK_RETRY,
        )

    # ---- the database ------------------------------------------------------------------------

    async def stage(self, stage: str, note: str, status: str = "") -> None:
        self.seq += 1
        if status:  # first: a review Update that arrives while the line is written is already welcome
            self.status = status
        step = s.PayoutStageStep(self.withdrawal_id, self.seq, stage, note, workflow.now(), status)
        await workflow.execute_activity(
            s.RECORD_PAYOUT_STAGE, step, start_to_close_timeout=STEP_TIMEOUT, retry_policy=DB_RETRY
        )

    async def settle(self, outcome: str, status: str, stage: str, note: str, code: str = "") -> None:
        self.seq += 1
        step = s.SettleStep(self.withdrawal_id, self.seq, outcome, status, stage, note, workflow.now(), code)
        await workflow.execute_activity(
            s.SETTLE_PAYOUT, step, start_to_close_timeout=STEP_TIMEOUT, retry_policy=DB_RETRY
        )
        self.status = status
