"""The workflows' patches: each id guards one change of its command sequence.

A released history is never re-recorded; a run that started on older code replays its history
on the new code, where `workflow.patched(ID)` answers False and the old branch runs. How a patch is
added, deprecated and removed: README.md, "Deploying a workflow change".
"""

# 2026-12: run() waits for running handlers (the open_order Update) before an early return.
WAIT_HANDLERS_ON_EARLY_RETURN = "2026-12-wait-handlers-on-early-return"
# 2026-12: a refund the gateway refuses on a system path is recorded for a person, not a failed run.
SYSTEM_REFUND_REFUSED = "2026-12-system-refund-refused"
# 2026-12: a gateway without close answers CLOSE_PAYMENT cleanly (no failure): the stage
# close_unsupported is recorded, and the late watch polls only a gateway whose query proves payment.
CLOSE_UNSUPPORTED_ANSWER = "2026-12-close-unsupported-answer"
# 2026-12: a late payment claims its coupon again with its keys (RESERVE_AGAIN answers why not); a
# coupon another order holds now means a refund, never a delivery below the price.
LATE_PAYMENT_CLAIMS_COUPON = "2026-12-late-payment-claims-coupon"
# 2026-12: ReconcileWorkflow also starts the workflow of any withdrawal left `requested` (Temporal did
# not answer the API after the withdrawal's commit).
RECONCILE_STARTS_WAITING_PAYOUTS = "2026-12-reconcile-starts-waiting-payouts"
# 2026-12: ReconcileWorkflow also compares each payout rail's record of transfers with the withdrawals.
RECONCILE_CHECKS_PAYOUTS = "2026-12-reconcile-checks-payouts"
# 2026-12: while the order awaits payment, a proof is judged and, when it is the order's payment, its
# keys are committed in the same transaction (ACCEPT_AND_DELIVER): one step, not two, on a sale's path.
ACCEPT_DELIVERS = "2026-12-accept-delivers"
# 2026-12: payout reconciliation reads the real rails' day bills; a day not out yet is reported in
# ReconcileReport.not_ready (activity RECONCILE_PAYOUT_BILLS), never a finding.
RECONCILE_PAYOUT_BILLS = "2026-12-reconcile-payout-bills"
