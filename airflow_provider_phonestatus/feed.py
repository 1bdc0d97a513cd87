"""The status-change feed: what a refresh's Asset event carries, and how a DAG on it reads changes.

A refresh that updates an asset (the operator's own ``outlets``, or the nightly DAG's check)
attaches :func:`event_extra` to the event: the run's identity and times and its change counts
(``status_changes``, ``changes_by_transition``, ``recycled_suspects``). A DAG scheduled on the
asset reads the rows that changed since its previous run with :func:`changes_window` and
:func:`changed_rows`: rows whose ``phone_status_changed_at`` lies after the end of the run behind
the asset's previous event, up to the end of the runs behind the events that started it. Windows
of consecutive events tile time, so each change is read once, whichever DAG refreshed the table.

What it cannot see: a change first seen before this table's previous event (by a run over
another table, or over this one for other rows) and written to a row of this table only later
from the results store (a row loaded or given a new phone since) carries its original time and
falls before the window. A failed consumer run's window is not read again by the next run: clear
the failed run to read it. Change times and run ends come from the workers' clocks, so windows
tile only as well as those clocks agree; and a warehouse column that keeps whole seconds
(MariaDB's ``DATETIME``) can move a change made within a second after ``since`` out of it.

A task that is the outlet of a status asset attaches a run's extra with :func:`attach`; a
consumer keeps a suppression list of the changed rows that should not be contacted any more
(:func:`suppressions`, :class:`SuppressionList`): a dead line (:data:`DEAD_STATUSES`) or a
recycled-number suspect.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.revalidation import to_naive_utc
from airflow_provider_phonestatus.vocabulary import PhoneStatus
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.owned import TIMESTAMP, OwnedTable
from airflow_provider_phonestatus.warehouse.table import new_table, reflect

#: The run's counts an event carries (run log columns of the same names).
COUNTS = ("status_changes", "recycled_suspects", "rows_written", "paid_lookups")
#: Statuses that say the line is gone or going (the nightly dead-share check's "dead");
#: ``unavailable`` is not one of them.
DEAD_STATUSES = frozenset(
    s.value for s in (PhoneStatus.NOT_IN_SERVICE, PhoneStatus.SUSPENDED, PhoneStatus.PENDING_CANCELLATION)
)
#: Why a changed row is suppressed: ``recycled_suspect`` (not_in_service before, live now: the
#: number may belong to someone else; a suspended one is also dead) else ``dead``.
REASONS = ("recycled_suspect", "dead")
DEFAULT_SUPPRESSIONS_NAME = "phone_status_suppressions"


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


def attach(
    context: Mapping[str, Any], run: Mapping[str, Any], asset_uri: str | None = None
) -> dict[str, Any]:
    """Put :func:`event_extra` of ``run`` on the events of the running task's Asset outlets
    (``context["outlet_events"][asset].extra``), and emit ``asset_uri``'s event with it through
    each of its AssetAlias outlets (a task mapped over tables names its asset at run time);
    returns the extra."""
    from airflow.sdk import Asset, AssetAlias

    extra = event_extra(run)
    for outlet in getattr(context["task"], "outlets", None) or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(extra)
        elif isinstance(outlet, AssetAlias):
            if asset_uri is None:
                raise ValueError(f"the asset alias {outlet.name!r} needs the asset to emit")
            context["outlet_events"][outlet].add(Asset(asset_uri), extra=extra)
    return extra


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


def suppression_reason(row: Mapping[str, Any]) -> str | None:
    """Why a row of :func:`changed_rows` is suppressed (one of :data:`REASONS`), None if it is not."""
    if row.get("recycled_suspect"):
        return "recycled_suspect"
    if row.get("status") in DEAD_STATUSES:
        return "dead"
    return None


def suppressions(changed: Iterable[Mapping[str, Any]], key_columns: Sequence[str]) -> list[dict[str, Any]]:
    """The suppression list's entries for the rows of :func:`changed_rows` that are dead or
    recycled suspects: the row's key as JSON text (``{"id": 7}``), status, previous status, when
    it changed and the reason. No phone number."""
    out = []
    for row in changed:
        reason = suppression_reason(row)
        if reason is None:
            continue
        key = {k: row[k] for k in key_columns}
        out.append(
            {
                "row_key": json.dumps(key, sort_keys=True, default=str, ensure_ascii=False),
                "status": row["status"],
                "previous_status": row.get("previous_status"),
                "status_changed_at": row["status_changed_at"],
                "reason": reason,
            }
        )
    return out


def count_by(entries: Iterable[Mapping[str, Any]], name: str) -> dict[str, int]:
    """How many of ``entries`` have each value of ``name`` (e.g. ``reason``), sorted by value."""
    return dict(sorted(Counter(str(e[name]) for e in entries).items()))


def suppressions_table(name: str = DEFAULT_SUPPRESSIONS_NAME) -> sa.Table:
    """The suppression list's definition; ``name`` may be ``schema.table``. One row per suppressed
    change, with the consumer run that found it (``dag_id``, ``run_id``)."""
    return new_table(
        name,
        sa.Column("table_name", sa.String(250), nullable=False),
        sa.Column("row_key", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("previous_status", sa.String(32)),
        sa.Column("status_changed_at", TIMESTAMP, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("suppressed_at", TIMESTAMP, nullable=False),
    )


class SuppressionList(OwnedTable):
    """The suppression list, created when missing (:meth:`ensure`); the caller commits."""

    define = staticmethod(suppressions_table)

    def replace(
        self,
        conn: sa.Connection,
        entries: Sequence[Mapping[str, Any]],
        *,
        table_name: str,
        dag_id: str,
        run_id: str,
    ) -> int:
        """Record ``entries`` (:func:`suppressions`) as the ones run ``run_id`` of ``dag_id``
        found in ``table_name``, replacing what an earlier try of that run recorded (a cleared
        run writes its list once). Returns how many."""
        t = self.table
        run = {"table_name": table_name, "dag_id": dag_id, "run_id": run_id}
        conn.execute(sa.delete(t).where(*(t.c[k] == v for k, v in run.items())))
        now = to_naive_utc(dt.datetime.now(dt.UTC))
        rows = [
            {
                **{k: entry.get(k) for k in ("row_key", "status", "previous_status", "reason")},
                "status_changed_at": to_naive_utc(entry["status_changed_at"]),
                **run,
                "suppressed_at": now,
            }
            for entry in entries
        ]
        if rows:
            conn.execute(sa.insert(t), rows)
        return len(rows)


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
