"""What the README documents about the vendor's answers, written out for tests to compare with:
never the provider's own mapping, so a wrong mapping cannot agree with itself."""

from __future__ import annotations

from airflow_provider_phonestatus.sandbox.truth import expected

#: The vendor's result codes as the README's table gives them.
STATUS_OF_RESULT = {
    "0": "not_in_service",
    "1": "active",
    "2": "suspended",
    "3": "unavailable",
    "4": "pending_cancellation",
    "5": "powered_off",
}
#: The statuses the README calls dead.
DEAD = {"not_in_service", "suspended", "pending_cancellation"}
#: Lines someone holds: after ``not_in_service``, a recycled-number suspect (README).
LIVE = {"active", "suspended", "unavailable", "powered_off"}


def true_status(national: str, world: int = 0) -> str:
    """The status the sandbox's documented truth gives ``national`` in ``world``."""
    return STATUS_OF_RESULT[expected(national, world=world)["result"]]
