"""How long each status stays trustworthy before a number is due to be checked again.

A powered-off phone is often back on within days; an active line rarely changes within weeks; a
cancelled number can be reassigned after months. Each age is a policy the DAG author can change.
Local labels (``invalid``, ``unsupported``) depend only on the phone value, and a changed value is
always due, so their ages are long.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.vocabulary import PhoneStatus

DEFAULT_AGES: Mapping[PhoneStatus, dt.timedelta] = {
    PhoneStatus.ACTIVE: dt.timedelta(days=30),
    PhoneStatus.POWERED_OFF: dt.timedelta(days=3),
    PhoneStatus.SUSPENDED: dt.timedelta(days=7),
    PhoneStatus.UNAVAILABLE: dt.timedelta(days=7),
    PhoneStatus.PENDING_CANCELLATION: dt.timedelta(days=7),
    PhoneStatus.NOT_IN_SERVICE: dt.timedelta(days=30),
    PhoneStatus.UNKNOWN: dt.timedelta(days=1),
    PhoneStatus.REJECTED: dt.timedelta(days=7),
    PhoneStatus.INVALID: dt.timedelta(days=180),
    PhoneStatus.UNSUPPORTED: dt.timedelta(days=180),
}
#: For values found in a status column that the vocabulary does not know (e.g. written by hand).
DEFAULT_OTHER_AGE = dt.timedelta(days=1)


@dataclass(frozen=True)
class RevalidationPolicy:
    """Ages per status; ``cutoffs(now)`` gives the oldest ``checked_at`` still fresh per status."""

    ages: Mapping[PhoneStatus, dt.timedelta] = field(default_factory=lambda: dict(DEFAULT_AGES))
    other: dt.timedelta = DEFAULT_OTHER_AGE

    @classmethod
    def from_user(cls, ages: Mapping[str, Any] | None) -> RevalidationPolicy:
        """Defaults overridden by ``{"active": timedelta(weeks=2), "powered_off": 1, ...}``.

        Values are timedeltas or numbers of days; keys are status values. ``failed`` is never
        stored, so it has no age.
        """
        merged: dict[PhoneStatus, dt.timedelta] = dict(DEFAULT_AGES)
        other = DEFAULT_OTHER_AGE
        for key, value in (ages or {}).items():
            age = _age(key, value)
            if key == "other":
                other = age
                continue
            try:
                status = PhoneStatus(key)
            except ValueError:
                known = ", ".join(s.value for s in DEFAULT_AGES)
                raise PhoneStatusConfigError(
                    f"revalidation age for unknown status {key!r}; known: {known}, other"
                ) from None
            if status is PhoneStatus.FAILED:
                raise PhoneStatusConfigError("'failed' is never stored, so it takes no revalidation age")
            merged[status] = age
        return cls(ages=merged, other=other)

    @classmethod
    def answered_since(cls) -> RevalidationPolicy:
        """Every age zero: with ``now`` = the run's start, only answers given since count as fresh."""
        return cls(ages=dict.fromkeys(DEFAULT_AGES, dt.timedelta(0)), other=dt.timedelta(0))

    def age(self, status: str | None) -> dt.timedelta:
        try:
            return self.ages[PhoneStatus(status or "")]
        except (KeyError, ValueError):
            return self.other

    def cutoffs(self, now: dt.datetime) -> dict[str, dt.datetime]:
        """Status value -> oldest fresh ``checked_at`` (naive UTC, as stored)."""
        naive = to_naive_utc(now)
        return {status.value: naive - age for status, age in self.ages.items()}

    def other_cutoff(self, now: dt.datetime) -> dt.datetime:
        return to_naive_utc(now) - self.other

    def is_fresh(self, status: str | None, checked_at: dt.datetime | None, now: dt.datetime) -> bool:
        if status is None or checked_at is None:
            return False
        return to_naive_utc(checked_at) >= to_naive_utc(now) - self.age(status)


def to_naive_utc(value: dt.datetime) -> dt.datetime:
    """Timestamps are stored as naive UTC: the one form SQLite, PostgreSQL and MariaDB all keep."""
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _age(key: str, value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        age = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        age = dt.timedelta(days=value)
    else:
        raise PhoneStatusConfigError(
            f"revalidation age for {key!r} must be a timedelta or days, got {value!r}"
        )
    if age < dt.timedelta(0):
        raise PhoneStatusConfigError(f"revalidation age for {key!r} must not be negative")
    return age
