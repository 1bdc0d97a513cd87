"""The run log: one row per operator run, so spend and outcome can be audited and compared.

A row is written when a run starts (state ``running``) and completed when it ends, so a run that
died half-way still shows up. ``previous`` gives the last successful run over the same table, for
"what changed since last time" summaries.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.revalidation import to_naive_utc
from airflow_provider_phonestatus.summary import COUNTERS, RunSummary
from airflow_provider_phonestatus.warehouse.owned import TIMESTAMP, OwnedTable, added_later
from airflow_provider_phonestatus.warehouse.table import new_table

DEFAULT_NAME = "phone_status_runs"
STATES = ("running", "success", "failed", "dry_run")
_ERROR_LENGTH = 255


def identity_columns() -> list[sa.Column[Any]]:
    """Which Airflow task run, over which table: columns of the run log and of the lookup ledger."""
    return [
        *(sa.Column(name, sa.String(250), nullable=False) for name in ("dag_id", "task_id", "run_id")),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("table_name", sa.String(250), nullable=False),
    ]


def runs_table(name: str = DEFAULT_NAME) -> sa.Table:
    """The run log's table definition; ``name`` may be ``schema.table``."""
    return new_table(
        name,
        sa.Column("run_uid", sa.String(36), primary_key=True, autoincrement=False),
        *identity_columns(),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.String(_ERROR_LENGTH)),
        *(_counter(name) for name in COUNTERS),
        sa.Column("status_counts", sa.Text),
        added_later(sa.Column("changes_by_transition", sa.Text)),
    )


#: Counters a later version added: ``ensure`` adds them to an existing log, 0 on its rows.
_ADDED_COUNTERS = ("pruned_rows", "status_changes", "recycled_suspects")


def _counter(name: str) -> sa.Column[int]:
    column = sa.Column(name, sa.Integer, nullable=False, default=0, server_default="0")
    return added_later(column) if name in _ADDED_COUNTERS else column


class RunLog(OwnedTable):
    """Start, finish and read runs. Each call is one statement; the caller commits."""

    define = staticmethod(runs_table)

    def start(
        self,
        conn: sa.Connection,
        *,
        dag_id: str,
        task_id: str,
        run_id: str,
        map_index: int,
        try_number: int,
        table_name: str,
        started_at: dt.datetime,
    ) -> str:
        """Record a run as ``running``; return its ``run_uid``."""
        run_uid = str(uuid.uuid4())
        values = {
            "run_uid": run_uid,
            "dag_id": dag_id,
            "task_id": task_id,
            "run_id": run_id,
            "map_index": map_index,
            "try_number": try_number,
            "table_name": table_name,
            "started_at": to_naive_utc(started_at),
            "state": "running",
        }
        conn.execute(sa.insert(self.table).values(values))
        return run_uid

    def finish(
        self,
        conn: sa.Connection,
        run_uid: str,
        *,
        state: str,
        ended_at: dt.datetime,
        counts: Mapping[str, int],
        status_counts: Mapping[str, int],
        error: str | None,
        changes_by_transition: Mapping[str, int] | None = None,
    ) -> None:
        """Record the outcome; ``counts`` names only :data:`COUNTERS` (others are a bug)."""
        if state not in STATES or state == "running":
            raise ValueError(f"unknown final state {state!r}; use one of {STATES[1:]}")
        if unknown := sorted(set(counts) - set(COUNTERS)):
            raise ValueError(f"unknown run log counters {unknown}; known: {', '.join(COUNTERS)}")
        values: dict[str, Any] = {
            **{name: int(value) for name, value in counts.items()},
            "state": state,
            "ended_at": to_naive_utc(ended_at),
            "status_counts": json.dumps(dict(status_counts), sort_keys=True),
            "changes_by_transition": json.dumps(dict(changes_by_transition or {}), sort_keys=True),
            "error": None if error is None else error[:_ERROR_LENGTH],
        }
        t = self.table
        conn.execute(sa.update(t).where(t.c.run_uid == run_uid).values(values))

    def finish_run(self, conn: sa.Connection, run_uid: str, summary: RunSummary) -> None:
        """:meth:`finish` with a run's summary (state, counts, statuses, error), ended now."""
        self.finish(
            conn,
            run_uid,
            state=summary.state,
            ended_at=dt.datetime.now(dt.UTC),
            counts=summary.run_log_counts(),
            status_counts=dict(summary.status_counts),
            error=summary.error,
            changes_by_transition=dict(summary.changes_by_transition),
        )

    def previous(
        self,
        conn: sa.Connection,
        *,
        dag_id: str,
        task_id: str,
        table_name: str,
        before_uid: str | None = None,
    ) -> dict[str, Any] | None:
        """The latest successful run of this task over this table, started before ``before_uid``."""
        t = self.table
        before: list[sa.ColumnElement[bool]] = []
        if before_uid is not None:
            this = sa.select(t.c.started_at).where(t.c.run_uid == before_uid).scalar_subquery()
            before = [t.c.run_uid != before_uid, t.c.started_at <= this]
        return self._latest_success(conn, dag_id, task_id, table_name, before)

    def latest_success(
        self,
        conn: sa.Connection,
        *,
        dag_id: str,
        task_id: str,
        table_name: str,
        run_id: str | None = None,
        started_from: dt.datetime | None = None,
        started_to: dt.datetime | None = None,
        other_than: str | None = None,
    ) -> dict[str, Any] | None:
        """:meth:`previous`'s run narrowed to one DAG run (``run_id``), to runs started from
        ``started_from`` to ``started_to`` (aware, or naive UTC), and to runs other than the one
        whose ``run_uid`` is ``other_than``; None if there is none."""
        t = self.table
        narrow: list[sa.ColumnElement[bool]] = []
        if run_id is not None:
            narrow.append(t.c.run_id == run_id)
        if started_from is not None:
            narrow.append(t.c.started_at >= to_naive_utc(started_from))
        if started_to is not None:
            narrow.append(t.c.started_at <= to_naive_utc(started_to))
        if other_than is not None:
            narrow.append(t.c.run_uid != other_than)
        return self._latest_success(conn, dag_id, task_id, table_name, narrow)

    def _latest_success(
        self,
        conn: sa.Connection,
        dag_id: str,
        task_id: str,
        table_name: str,
        narrow: list[sa.ColumnElement[bool]],
    ) -> dict[str, Any] | None:
        t = self.table
        query = sa.select(t).where(
            t.c.dag_id == dag_id,
            t.c.task_id == task_id,
            t.c.table_name == table_name,
            t.c.state == "success",
            *narrow,
        )
        row = conn.execute(query.order_by(t.c.started_at.desc()).limit(1)).first()
        return None if row is None else _as_dict(row)

    def runs(self, conn: sa.Connection, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` runs of any task, newest first."""
        t = self.table
        rows = conn.execute(sa.select(t).order_by(t.c.started_at.desc()).limit(limit))
        return [_as_dict(row) for row in rows]


def _as_dict(row: sa.Row[Any]) -> dict[str, Any]:
    """All columns; timestamps as UTC-aware datetimes, ``status_counts`` and
    ``changes_by_transition`` parsed."""
    record = dict(row._mapping)
    for name in ("started_at", "ended_at"):
        if record[name] is not None:
            record[name] = record[name].replace(tzinfo=dt.UTC)
    for name in ("status_counts", "changes_by_transition"):
        record[name] = json.loads(record[name]) if record[name] else {}
    return record
