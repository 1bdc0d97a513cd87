"""A number's status history: what it was before, when it changed, whether it may be recycled.

The results store keeps, beside a number's latest answer, the vendor status it had before that
answer and when its current status was first seen after a different one. Each new answer moves
that history on (:func:`follow`); rows copy it from the answer they are written with, so a row
always describes the number now on it (a new phone value brings its own number's history, never
the old one's).

Only vendor statuses count: local labels (``invalid``, ``unsupported``), ``rejected`` and
``failed`` say nothing about the line, so they are never a previous status nor a change. A
stored rejection carries the number's last vendor status on, so the next answer compares with it.

A **recycled-number suspect** (二次号) is a number whose previous vendor status was
``not_in_service`` (销号) and whose new one is live: the carrier cancelled it and someone holds it
again. The rule sees only what was checked: a number cancelled and reissued between two checks,
with no check while it was cancelled, looks merely ``active -> active``; and a line back in
service after a carrier's error looks the same as a reissued one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from airflow_provider_phonestatus.vocabulary import PhoneStatus

#: Statuses of a line someone holds: the second half of a recycled-number suspect.
LIVE_STATUSES = frozenset(
    s.value
    for s in (PhoneStatus.ACTIVE, PhoneStatus.SUSPENDED, PhoneStatus.UNAVAILABLE, PhoneStatus.POWERED_OFF)
)
#: Statuses that say something about the line: the only ones a history holds.
VENDOR_STATUSES = frozenset(s.value for s in PhoneStatus if s.is_vendor_answer)
_CANCELLED = PhoneStatus.NOT_IN_SERVICE.value


@dataclass(frozen=True, slots=True)
class History:
    """A number's history as of one answer (naive UTC times, as the warehouse keeps them)."""

    previous_status: str | None = None  #: the vendor status before this answer
    previous_checked_at: dt.datetime | None = None  #: when that previous status was checked
    status_changed_at: dt.datetime | None = None  #: when the current status was first seen after another

    @property
    def has_previous(self) -> bool:
        return self.previous_status is not None


def follow(
    old: tuple[str | None, dt.datetime | None, str | None, dt.datetime | None, dt.datetime | None] | None,
    status: str,
    checked_at: dt.datetime,
) -> History:
    """The history of an answer of ``status`` at ``checked_at``, after the stored answer ``old``:
    (status, checked_at, previous_status, previous_checked_at, status_changed_at), None if none."""
    if old is None:
        return History()
    old_status, old_at, old_previous, old_previous_at, old_changed = old
    last: str | None
    if old_status in VENDOR_STATUSES:
        last, last_at = old_status, old_at
    else:  # a stored rejection (or a value no run of ours writes) carries the last vendor status
        last, last_at = old_previous, old_previous_at
        if last not in VENDOR_STATUSES:
            last, last_at = None, None
    if status not in VENDOR_STATUSES:  # a rejection: carried, not a change
        return History(last, last_at, old_changed if last is not None else None)
    if last is None:
        return History()
    changed = checked_at if last != status else old_changed
    return History(last, last_at, changed)


def is_change(previous: str | None, status: str) -> bool:
    """Whether an answer of ``status`` after ``previous`` is a status change."""
    return previous is not None and previous != status and status in VENDOR_STATUSES


def transition(previous: str, status: str) -> str:
    """The name of a change, as ``changes_by_transition`` counts it: ``active->not_in_service``."""
    return f"{previous}->{status}"


def recycled_suspect(previous: str | None, status: str) -> bool:
    """Cancelled before, live now: the number may have been handed to someone else."""
    return previous == _CANCELLED and status in LIVE_STATUSES
