"""StrayPaymentWorkflow: money that no open order took is confirmed with the gateway, then refunded.

A payment for a closed or unknown order, with the wrong amount or currency, or a second payment
for an order: whoever finds it (a notify, an order, reconciliation) starts this workflow with id
`stray-<gateway>-<payment_id>`, so one payment is reviewed once however often it is found.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from miaofa import contract as c
from miaofa import steps as s
from workflows.policies import DB_RETRY, DB_TIMEOUT, GATEWAY_RETRY


@workflow.defn(name=c.STRAY_PAYMENT_WORKFLOW)
class StrayPaymentWorkflow:
    @workflow.run
    async def run(self, stray: c.StrayPayment) -> str:
        # Ask the gateway, never the finder: is it paid, how much, and does an open order want it?
        review = await workflow.execute_activity(
            s.REVIEW_STRAY,
            stray,
            result_type=s.StrayReview,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=GATEWAY_RETRY,
        )
        outcome, refund_id = review.action, ""
        if review.action == "refund":
            refund_id = f"refund-{stray.payment_id}"
            try:
                refunded = await workflow.execute_activity(
                    s.REFUND_PAYMENT,
                    s.RefundStep(
                        stray.order_id, stray.gateway, stray.payment_id, review.amount_cents, refund_id=refund_id
                    ),
                    result_type=s.PaymentSnapshot,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=GATEWAY_RETRY,
                )
                # A gateway without a refund API leaves it to a person (audited): say so, not "refunded".
                outcome = s.REFUND_BY_HAND if refunded.status == s.REFUND_BY_HAND else "refunded"
            except ActivityError:  # the gateway refused the refund: recorded for a person, not retried for ever
                outcome = "refund_refused"
        await workflow.execute_activity(
            s.RECORD_STRAY_REFUND,
            s.StrayRefunded(stray, refund_id, workflow.now(), outcome, review.detail),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        return outcome
