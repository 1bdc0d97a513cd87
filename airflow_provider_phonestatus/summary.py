"""What one run did, in counts only: the run log row, the XCom value and the task log's summary.

No phone number ever enters a summary, so it is safe to push to XCom and to log.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from airflow_provider_phonestatus.history import recycled_suspect, transition

#: The counters the run log keeps, one column each (a subset of :class:`RunSummary`'s fields).
COUNTERS = (
    "due_rows",
    "distinct_numbers",
    "requests_sent",
    "paid_lookups",
    "from_store",
    "local_labels",
    "throttled",
    "retries",
    "failures",
    "rows_written",
    "pruned_rows",
    "status_changes",
    "recycled_suspects",
)


@dataclass
class RunSummary:
    """Counters of one refresh run."""

    due_rows: int = 0  #: rows due when the run started (after the row filter)
    distinct_numbers: int = 0  #: distinct valid mobile numbers among the due rows processed
    requests_sent: int = 0  #: HTTP requests to the vendor, retries included (quota)
    paid_lookups: int = 0  #: numbers the vendor answered (what is billed)
    from_store: int = 0  #: distinct numbers the results store answered free (counted where first met)
    local_labels: int = 0  #: rows labelled invalid/unsupported without a request
    throttled: int = 0  #: throttled answers
    retries: int = 0  #: repeated requests
    failures: int = 0  #: numbers left without an answer (failed) or refused (rejected)
    rows_written: int = 0  #: rows whose status columns were written
    deferred_rows: int = 0  #: due rows left for a later run (max_checks, time budget, stop)
    pruned_rows: int = 0  #: status table rows deleted because their key left the source (prune)
    status_changes: int = 0  #: rows written with an answer that saw their number's status change
    recycled_suspects: int = 0  #: of those, rows whose number went from not_in_service to live
    lookups_to_pay: int = 0  #: dry run: lookups a real run would pay for (after max_checks)
    seconds_at_plan_rate: float = 0.0  #: dry run: how long those lookups take at the plan rate
    status_counts: Counter[str] = field(default_factory=Counter)  #: rows written per status
    #: status changes by ``previous->current`` status, counted in rows
    changes_by_transition: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False
    state: str = "running"
    error: str | None = None

    def count_change(self, previous: str, status: str, rows: int) -> None:
        """``rows`` were written with an answer that saw their number go ``previous -> status``."""
        self.status_changes += rows
        self.changes_by_transition[transition(previous, status)] += rows
        if recycled_suspect(previous, status):
            self.recycled_suspects += rows

    def count_requests(self, stats: dict[str, int]) -> None:
        """Take the hook's request counters (``LookupStats.as_dict()``)."""
        self.requests_sent = stats["requests_sent"]
        self.paid_lookups = stats["lookups_ok"]
        self.throttled = stats["throttled"]
        self.retries = stats["retries"]

    def run_log_counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNTERS}

    def as_xcom(self) -> dict[str, Any]:
        """Plain JSON: counts, state and the error's cause; never a phone number."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["status_counts"] = dict(sorted(self.status_counts.items()))
        out["changes_by_transition"] = dict(sorted(self.changes_by_transition.items()))
        return out

    def table(self) -> str:
        """A fixed-width summary for the task log."""
        rows = [(f.name.replace("_", " "), getattr(self, f.name)) for f in fields(self)]
        lists = ("status counts", "changes by transition", "error")
        rows = [(k, v) for k, v in rows if k not in lists and v not in (None, "")]
        rows += [(f"  {status}", count) for status, count in sorted(self.status_counts.items())]
        rows += [(f"  {change}", count) for change, count in sorted(self.changes_by_transition.items())]
        if self.error:
            rows.append(("error", self.error))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in rows)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
