"""Errors that stop a whole batch: no retry fixes them, so no further request is sent.

A number the vendor rejects, or one that stays unanswered after retries, is not an exception: it
is that number's result (``rejected`` / ``failed``). These exceptions are for causes that would
fail every remaining number the same way, where going on would only spend quota.

Those no later attempt can fix either (a refused key, a wrong URL, an empty balance, a bad
setting) are also ``AirflowFailException``s: the task fails at once, without Airflow's retries,
which would only repeat the refusal. ``VendorUnavailable`` may pass, so Airflow retries it.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow < 3.2 keeps it in the core package
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]


class PhoneStatusError(AirflowException):
    """Base class of the provider's errors."""


class PhoneStatusConfigError(PhoneStatusError, AirflowFailException):
    """The connection or an argument is unusable (bad URL, bad rate limit, ...); never retried."""


class BatchStopped(PhoneStatusError):
    """The vendor said something that every further request would hear too."""

    #: Short machine-readable cause, for run logs and XCom.
    cause = "stopped"

    def __init__(self, message: str, *, http_status: int | None = None, vendor_code: str | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.vendor_code = vendor_code


class ApiKeyRefused(BatchStopped, AirflowFailException):
    """The vendor refused the API key (HTTP 401/403 or envelope code 401/403)."""

    cause = "api_key_refused"


class BalanceExhausted(BatchStopped, AirflowFailException):
    """The plan's balance or quota is used up (HTTP 402, envelope 402, or a balance message)."""

    cause = "balance_exhausted"


class EndpointNotFound(BatchStopped, AirflowFailException):
    """The URL does not exist (HTTP 404/405): the connection's host or endpoint is wrong."""

    cause = "endpoint_not_found"


class VendorUnavailable(BatchStopped):
    """Too many numbers in a row went unanswered or were rejected: something systematic is wrong,
    but possibly passing (an outage), so Airflow may retry the task."""

    cause = "vendor_unavailable"


class RateLimiterUnavailable(BatchStopped):
    """The shared rate limit's Redis cannot be reached: no request may start without it, since
    the other tasks on the key would not see it. Possibly passing, so Airflow may retry."""

    cause = "rate_limit_unavailable"


class TaskStopped(PhoneStatusError):
    """The task was told to stop (kill, timeout); everything answered was saved first."""
