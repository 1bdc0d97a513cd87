"""The status-change feed: what a refresh's Asset event carries, and how a DAG on it reads changes.

A refresh that updates an asset (the operator's own ``outlets``, or the nightly DAG's check)
attaches :func:`event_extra` to the event: the run's identity and times and its change counts
(``status_changes``, ``changes_by_transition``, ``recycled_suspects``). A DAG scheduled on the
asset reads the rows that changed since its previous run with :func:`changes_window` and
:func:`changed_rows`: rows whose ``phone_status_changed_at`` lies after the end of the run behind
the asset's previous event, up to the end of the runs behind the events that started it. Windows
of consecutive events tile time, so each change is read once, whichever DAG refreshed the table.

What it cannot see: a change first seen by a run over *another* table before this table's
previous event, and written to this table's rows only later from the results store, carries its
original time and falls before the window. A failed consumer run's window is not read again by
the next run: clear the failed run to read it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.revalidation import to_naive_utc
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.table import reflect

#: The run's counts an event carries (run log columns of the same names).
COUNTS = ("status_changes", "recycled_suspects", "rows_written", "paid_lookups")


def event_extra(run: Mapping[str, Any]) -> dict[str, Any]:
    """An asset event's ``extra`` for the refresh ``run``: a run log row (``RunLog.runs``) or the
    operator's summary with ``table_name``, ``run_uid``, ``started_at`` and ``ended_at``."""
    return {
        "table": run["table_name"],
        "run_uid": run.get("run_uid"),
        "run_started_at": _iso(run["started_at"]),
        "run_ended_at": _iso(run["ended_at"]),
        **{name: int(run.get(name) or 0) for name in COUNTS},
        "changes_by_transition": dict(sorted((run.get("changes_by_transition") or {}).items())),
    }


def changes_window(
    triggering: Iterable[Any], earlier: Iterable[Any]
) -> tuple[dt.datetime | None, dt.datetime]:
    """(since, until) in naive UTC: ``until`` the end of the latest run behind the ``triggering``
    events (Airflow's asset events of this run), ``since`` the end of the run behind the latest
    of the asset's ``earlier`` events (None: there is none, read from the beginning). An event
    without :func:`event_extra` counts by its own timestamp."""
    started = list(triggering)
    if not started:
        raise ValueError("no triggering asset event: run this task from an asset-scheduled DAG")
    first = min(_stamp(e) for e in started)
    before = [_end(e) for e in earlier if _stamp(e) < first]
    return (max(before) if before else None), max(_end(e) for e in started)


def changed_rows(
    conn: sa.Connection,
    table: str,
    *,
    key_columns: Iterable[str],
    phone_column: str,
    since: dt.datetime | None,
    until: dt.datetime,
    status_table: str | None = None,
    columns: StatusColumns | None = None,
) -> list[dict[str, Any]]:
    """The rows of ``table`` (statuses in ``status_table`` if given) whose status changed in
    ``(since, until]``: key columns, phone, status, previous status, when it changed, and whether
    the number is a recycled suspect; oldest change first."""
    names = (columns or StatusColumns()).names()
    source = reflect(conn, table)
    holder = source if status_table is None else reflect(conn, status_table)
    keys = list(key_columns)
    joined: sa.FromClause = source
    if holder is not source:
        joined = source.join(holder, sa.and_(*(source.c[k] == holder.c[k] for k in keys)))
    changed_at = holder.c[names["status_changed_at"]]
    query = (
        sa.select(
            *(source.c[k] for k in keys),
            source.c[phone_column],
            holder.c[names["status"]].label("status"),
            holder.c[names["previous_status"]].label("previous_status"),
            changed_at.label("status_changed_at"),
            holder.c[names["recycled_suspect"]].label("recycled_suspect"),
        )
        .select_from(joined)
        .where(changed_at <= until, *([] if since is None else [changed_at > since]))
        .order_by(changed_at, *(source.c[k] for k in keys))
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def _iso(value: Any) -> str:
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return to_naive_utc(stamp).replace(tzinfo=dt.UTC).isoformat()


def _stamp(event: Any) -> dt.datetime:
    return to_naive_utc(_field(event, "timestamp"))


def _end(event: Any) -> dt.datetime:
    """When the run behind ``event`` ended (its ``extra``), else when the event was made."""
    extra = _field(event, "extra") or {}
    ended = extra.get("run_ended_at") if isinstance(extra, Mapping) else None
    return to_naive_utc(dt.datetime.fromisoformat(ended)) if ended else _stamp(event)


def _field(event: Any, name: str) -> Any:
    value = event.get(name) if isinstance(event, Mapping) else getattr(event, name, None)
    return dt.datetime.fromisoformat(value) if name == "timestamp" and isinstance(value, str) else value
