"""Timeouts and retry policies of the saga's steps, one meaning each: the order workflow, its mixins
and the stray-payment workflow share them. And the poll backoff they both need."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from miaofa import steps as s


class LocalStepOptions(TypedDict):
    """The options DB_STEP passes to workflow.execute_local_activity, typed so its overloads match."""

    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy
    local_retry_threshold: timedelta


# Short steps — every database step, and creating the payment — run as local activities in the
# workflow task that needs them: no task round trip through the server per step. Gateway queries,
# closes and refunds stay activities (they may be slow, and retry for a long time).
# DB steps retry through an outage, never through bad data: that ends with a reason.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[s.DATA_ERROR, s.NO_RESERVED_KEYS],
)
DB_TIMEOUT = timedelta(seconds=15)
# Past a few quick in-process retries, a failing local step waits on a durable timer instead of
# holding the workflow task: the SLA timer can fire meanwhile, and a worker restart loses nothing.
DB_STEP: LocalStepOptions = dict(
    start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY, local_retry_threshold=timedelta(seconds=3)
)
# One query attempt per channel: the workflow does the failover and the backoff itself.
QUERY_RETRY = RetryPolicy(maximum_attempts=1)
# A step with a fallback (ACCEPT_AND_DELIVER: the two steps apart): one attempt, then the fallback.
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
QUERY_TIMEOUT = timedelta(seconds=10)
# A gateway call that must happen (a refund, a stray review): transient errors are retried for as long
# as it takes; a refusal (GatewayRefused, Unsupported, bad data) is final and handled by the caller.
GATEWAY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[s.DATA_ERROR, "GatewayRefused", "Unsupported"],
)
CLOSE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
# Creating the payment: retried with a backoff until the order's Timing.payment_create_seconds is
# spent (the step's retry_until: the activity's first gateway error past it is final; a local
# activity's schedule-to-close timeout is not enforced by temporalio 1.35), so a gateway blip of a few
# seconds delays the answer instead of cancelling the order. A refusal (GatewayRefused, Unsupported)
# is final at once; any other error gets the attempts below.
CREATE_PAYMENT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=300),
    backoff_coefficient=2,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=20,
)
CREATE_PAYMENT_ATTEMPT_TIMEOUT = timedelta(seconds=10)
MAX_QUEUED_PROOFS = 50  # a signal flood cannot grow the workflow's state without bound


# A step that failed for good: an activity raises ActivityError (the ApplicationError is its cause), a
# local activity raises the ApplicationError itself (temporalio 1.35). Every handler catches both.
STEP_FAILED = (ActivityError, ApplicationError)


def failure_type(error: BaseException) -> str:
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.type if isinstance(cause, ApplicationError) and cause.type else ""


@dataclass
class Backoff:
    """When to look next: every `interval` seconds, doubling up to `max_interval` (deterministic)."""

    next_at: datetime
    interval: int
    max_interval: int

    def due(self, now: datetime) -> bool:
        return now >= self.next_at

    def step(self, now: datetime) -> None:
        self.next_at = now + timedelta(seconds=self.interval)
        self.interval = min(self.interval * 2, self.max_interval)
