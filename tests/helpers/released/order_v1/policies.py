"""Timeouts and retry policies of the order saga's steps, shared by workflows/order.py and its mixins."""

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from miaofa import steps as s

# Short steps — every database step, and creating the payment — run as local activities in the
# workflow task that needs them: no task round trip through the server per step. Gateway queries,
# closes and refunds stay activities (they may be slow, and retry for a long time).
# DB steps retry through an outage, never through bad data: that ends with a reason.
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                       non_retryable_error_types=[s.DATA_ERROR, s.NO_RESERVED_KEYS])
DB_TIMEOUT = timedelta(seconds=15)
# Past a few quick in-process retries, a failing local step waits on a durable timer instead of
# holding the workflow task: the SLA timer can fire meanwhile, and a worker restart loses nothing.
DB_STEP = dict(start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY, local_retry_threshold=timedelta(seconds=3))
# One query attempt per channel: the workflow does the failover and the backoff itself.
QUERY_RETRY = RetryPolicy(maximum_attempts=1)
QUERY_TIMEOUT = timedelta(seconds=10)
GATEWAY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
CLOSE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
CREATE_PAYMENT_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=300), maximum_attempts=3)
MAX_QUEUED_PROOFS = 50  # a signal flood cannot grow the workflow's state without bound


# A step that failed for good: an activity raises ActivityError (the ApplicationError is its cause), a
# local activity raises the ApplicationError itself (temporalio 1.35). Every handler catches both.
STEP_FAILED = (ActivityError, ApplicationError)


def _failure_type(error: BaseException) -> str:
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.type if isinstance(cause, ApplicationError) and cause.type else ""
