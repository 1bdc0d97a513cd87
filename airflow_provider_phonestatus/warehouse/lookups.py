"""The lookup ledger: one row per paid lookup, shared by every table and run, for the bill.

Rows are appended in the transaction that stores the answers in the results store, so every
stored answer has exactly one ledger row: a worker killed mid-run loses both or neither. Each row
says which Airflow run paid (DAG, task, run, try, table, and the run log's ``run_uid``), the
vendor's order number, and what the store held for the number before (``previous_status``,
``previous_checked_at``): the status history, one answer at a time.

:func:`reconciliation` is the SQL that lists paid lookups per day, per run or per DAG, or line by
line with their order numbers, for matching a vendor's bill (``phonestatus-ledger`` runs it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.revalidation import to_naive_utc
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult
from airflow_provider_phonestatus.warehouse.owned import TIMESTAMP, OwnedTable
from airflow_provider_phonestatus.warehouse.runlog import identity_columns
from airflow_provider_phonestatus.warehouse.table import bulk_insert, new_table, text_lengths

DEFAULT_NAME = "phone_status_lookups"
#: How :func:`reconciliation` can group the ledger.
GROUPINGS = ("day", "run", "dag", "lookup")
_CHUNK = 1000


@dataclass(frozen=True)
class RunIdentity:
    """Which Airflow run paid: written on every ledger row (and on the run log's row)."""

    run_uid: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    table_name: str
    #: when the run started (not written on ledger rows)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC), compare=False)


def lookups_table(name: str = DEFAULT_NAME) -> sa.Table:
    """The ledger's table definition; ``name`` may be ``schema.table``. No key: every paid
    lookup is a row, even one the vendor sent without an order number."""
    return new_table(
        name,
        sa.Column("national", sa.String(11), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("vendor_code", sa.String(16)),
        sa.Column("carrier", sa.String(32)),
        sa.Column("ported", sa.Boolean),
        sa.Column("order_no", sa.String(64)),
        sa.Column("checked_at", TIMESTAMP, nullable=False),
        sa.Column("previous_status", sa.String(32)),
        sa.Column("previous_checked_at", TIMESTAMP),
        sa.Column("run_uid", sa.String(36), nullable=False),
        *identity_columns(),
    )


class LookupLedger(OwnedTable):
    """Append paid lookups; the caller commits (with the store's upsert of the same answers)."""

    define = staticmethod(lookups_table)

    def __init__(self, table: sa.Table, *, portable: bool = False) -> None:
        super().__init__(table)
        self.portable = portable
        self._names = [c.name for c in table.columns]
        self._lengths = text_lengths(table.columns)

    def append(
        self, conn: sa.Connection, run: RunIdentity, stored: Sequence[tuple[str, PhoneStatusResult]]
    ) -> int:
        """One row per paid answer among ``stored`` (``ResultStore.save``'s answers, history
        included); return how many."""
        identity = (run.run_uid, run.dag_id, run.task_id, run.run_id, run.map_index, run.try_number)
        table_name = run.table_name[: self._lengths["table_name"]]
        records = [
            (
                national,
                result.status.value,
                result.vendor_code,
                None if result.carrier is None else result.carrier.value,
                result.ported,
                result.order_no,
                to_naive_utc(result.checked_at),
                result.previous_status,
                result.previous_checked_at,
                *identity,
                table_name,
            )
            for national, result in stored
            if result.is_paid
        ]
        for start in range(0, len(records), _CHUNK):
            chunk = records[start : start + _CHUNK]
            insert = sa.insert(self.table)
            conn.execute(*bulk_insert(conn, insert, self._names, chunk, portable=self.portable))
        return len(records)


def reconciliation(
    table: sa.Table,
    by: str,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    dialect: str = "default",
) -> sa.Select[Any]:
    """Paid lookups checked in ``[start, end)`` (aware, or naive UTC), grouped ``by``:

    * ``day``: lookups and distinct order numbers per UTC day;
    * ``run``: per Airflow run (DAG, run, task, try, table, ``run_uid``), with its first and last check;
    * ``dag``: per DAG;
    * ``lookup``: every lookup in time order, with its order number, run and number (selected
      whole: mask it before printing).
    """
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    t = table
    where: list[sa.ColumnElement[bool]] = []
    if start is not None:
        where.append(t.c.checked_at >= to_naive_utc(start))
    if end is not None:
        where.append(t.c.checked_at < to_naive_utc(end))
    day = (sa.func.date(t.c.checked_at) if dialect == "sqlite" else sa.cast(t.c.checked_at, sa.Date)).label(
        "day"
    )
    lookups = sa.func.count().label("lookups")
    orders = sa.func.count(sa.distinct(t.c.order_no)).label("order_numbers")
    if by == "lookup":
        line = [t.c.checked_at, t.c.order_no, t.c.national, t.c.status, t.c.dag_id, t.c.run_id, t.c.task_id]
        return sa.select(*line, t.c.table_name).where(*where).order_by(t.c.checked_at, t.c.order_no)
    if by == "day":
        return sa.select(day, lookups, orders).where(*where).group_by(day).order_by(day)
    if by == "dag":
        return sa.select(t.c.dag_id, lookups, orders).where(*where).group_by(t.c.dag_id).order_by(t.c.dag_id)
    run = [t.c.dag_id, t.c.run_id, t.c.task_id, t.c.map_index, t.c.try_number, t.c.table_name, t.c.run_uid]
    first, last = (
        sa.func.min(t.c.checked_at).label("first_checked_at"),
        sa.func.max(t.c.checked_at).label("last_checked_at"),
    )
    return sa.select(*run, lookups, orders, first, last).where(*where).group_by(*run).order_by(first)
