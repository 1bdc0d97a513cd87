"""Which rows are due for a check, decided in SQL and materialised once per run.

A row is due when it was never checked, when its phone value differs from the value that was
checked (compared as ``CAST(phone AS VARCHAR)``, NULL-safe, so the comparison means the same
whatever the column's type), or when its status is older than the policy's age for that status.

The due set is copied server-side, numbered by urgency, into a per-connection TEMPORARY table and
read back page by page: memory stays flat in table size, each page is one complete query (so the
one connection is free for writes and commits between pages), and rows written meanwhile do not
shift the pages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.warehouse.filters import compile_filter
from airflow_provider_phonestatus.warehouse.table import (
    copy_column,
    drop_temporary,
    fetch_all,
    temporary_table,
)
from airflow_provider_phonestatus.warehouse.target import TargetTable

NEVER_CHECKED, PHONE_CHANGED, EXPIRED = 0, 1, 2


def phone_text(target: TargetTable) -> sa.ColumnElement[str]:
    """The phone value as the database spells it as text: what ``checked_value`` stores."""
    return sa.cast(target.phone, sa.String)


def due_condition(
    target: TargetTable, policy: RevalidationPolicy, now: dt.datetime, *, ignore_ages: bool = False
) -> sa.ColumnElement[bool]:
    """Never checked, or phone changed, or older than its status's age (everything if forced)."""
    if ignore_ages or target.missing:
        return sa.true()
    checked_at = target.column("checked_at")
    expired = checked_at < oldest_fresh(target.column("status"), checked_at, policy, now)
    return sa.or_(_never_checked(target), _changed(target), expired)


def oldest_fresh(
    status: sa.ColumnElement[Any],
    checked_at: sa.ColumnElement[Any],
    policy: RevalidationPolicy,
    now: dt.datetime,
) -> sa.ColumnElement[Any]:
    """The oldest ``checked_at`` still fresh for a row's ``status`` (``policy.cutoffs``, the other
    cutoff for a status it does not know), as one CASE: the rule a table's rows are due by and the
    results store's answers are fresh by."""
    stamp = checked_at.type
    cutoffs = {value: sa.literal(cutoff, stamp) for value, cutoff in policy.cutoffs(now).items()}
    return sa.case(cutoffs, value=status, else_=sa.literal(policy.other_cutoff(now), stamp))


def urgency(target: TargetTable, policy: RevalidationPolicy, now: dt.datetime) -> sa.ColumnElement[int]:
    """0 never checked, 1 phone changed, 2 expired (or merely forced by ``ignore_ages``).

    ``policy`` and ``now`` do not move a row between classes today; they are part of the
    signature so that a finer ordering (e.g. by how long expired) needs no caller change.
    """
    if target.missing:
        return sa.literal(NEVER_CHECKED, sa.Integer)
    return sa.case(
        (_never_checked(target), NEVER_CHECKED),
        (_changed(target), PHONE_CHANGED),
        else_=EXPIRED,
    )


def _never_checked(target: TargetTable) -> sa.ColumnElement[bool]:
    return sa.or_(target.column("status").is_(None), target.column("checked_at").is_(None))


def _changed(target: TargetTable) -> sa.ColumnElement[bool]:
    return phone_text(target).is_distinct_from(target.column("checked_value"))


def due_select(
    target: TargetTable,
    policy: RevalidationPolicy,
    now: dt.datetime,
    *,
    row_filter: Any = None,
    ignore_ages: bool = False,
) -> sa.Select[Any]:
    """The due rows, unordered: key columns ``k0, k1, ...``, ``phone``, ``phone_text``, ``status``,
    ``checked_at``, ``urgency``; read from :attr:`TargetTable.source` (the status table joined)."""
    keys = target.keys
    where = [due_condition(target, policy, now, ignore_ages=ignore_ages)]
    if (condition := compile_filter(target.table, row_filter)) is not None:
        where.append(condition)
    where += [k.is_not(None) for k in keys if k.nullable]  # a NULL key can never be written
    return (
        sa.select(
            *(k.label(f"k{i}") for i, k in enumerate(keys)),
            target.phone.label("phone"),
            phone_text(target).label("phone_text"),
            target.column("status").label("status"),
            target.column("checked_at").label("checked_at"),
            urgency(target, policy, now).label("urgency"),
        )
        .select_from(target.source)
        .where(*where)
    )


@dataclass(frozen=True, slots=True)
class DueRow:
    """One due row: its key, the phone as stored and as text, its current status, its class."""

    key: tuple[Any, ...]
    phone: Any
    phone_text: str | None
    status: str | None
    urgency: int


class DueList:
    """The due rows of one run, numbered in a TEMPORARY table on the run's connection."""

    def __init__(self, conn: sa.Connection, table: sa.Table, key_count: int, total: int) -> None:
        self._conn = conn
        self._table = table
        self._key_count = key_count
        self.total = total  #: number of due rows

    @classmethod
    def create(
        cls,
        conn: sa.Connection,
        target: TargetTable,
        policy: RevalidationPolicy,
        now: dt.datetime,
        *,
        row_filter: Any = None,
        ignore_ages: bool = False,
        portable: bool = False,
    ) -> DueList:
        """Copy the due rows, ordered by urgency, oldest check (never first), key; commits.
        With a status table, the source is read joined to it (:attr:`TargetTable.source`).

        The commit ends the transaction of the INSERT ... SELECT, which on MariaDB holds shared
        locks on the rows read and on SQLite a read lock on the database file.
        """
        keys = target.keys
        # phone_text is copied only where the phone as read is not already that text
        text_is_phone = _reads_as_text(target.phone, conn.dialect)
        table = temporary_table(
            conn,
            "phonestatus_due",
            [
                sa.Column("seq", _SEQ_TYPE, primary_key=True, autoincrement=False),
                *(copy_column(f"k{i}", k) for i, k in enumerate(keys)),
                copy_column("phone", target.phone),
                *([] if text_is_phone else [sa.Column("phone_text", sa.Text)]),
                sa.Column("status", sa.Text),
                sa.Column("urgency", sa.Integer),
            ],
        )
        due = due_select(target, policy, now, row_filter=row_filter, ignore_ages=ignore_ages).subquery("due")
        key_cols = [due.c[f"k{i}"] for i in range(len(keys))]
        never_first = sa.case((due.c.checked_at.is_(None), 0), else_=1)  # NULLs sort differently per dialect
        order_by = [due.c.urgency, never_first, due.c.checked_at, *key_cols]
        copied = [c.name for c in table.c if c.name != "seq"]  # the due query's columns of those names
        if conn.dialect.name == "sqlite" and not portable:
            # seq is the rowid of a new table: SQLite inserts the sorted rows one by one, each with
            # the largest rowid + 1, so 1, 2, ... in order, as row_number() would number them
            # without the window's own pass (on a million due rows 1.2-1.7 s instead of 3.8 s)
            ordered = sa.select(*(due.c[name] for name in copied)).order_by(*order_by)
            conn.execute(sa.insert(table).from_select(copied, ordered))
        else:
            numbered = sa.select(sa.func.row_number().over(order_by=order_by), *(due.c[n] for n in copied))
            conn.execute(sa.insert(table).from_select(["seq", *copied], numbered))
        total = conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.seq), 0))).scalar_one()
        conn.commit()
        return cls(conn, table, len(keys), int(total))

    def pages(self, size: int = 5000) -> Iterator[list[DueRow]]:
        """Due rows in order, ``size`` at a time; each page is fetched by one whole query."""
        for page in self.raw_pages(size):
            yield [DueRow(*row) for row in page]

    def raw_pages(self, size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """:meth:`pages` as plain tuples ``(key, phone, phone_text, status, urgency)``, the fields
        of :class:`DueRow` in order: for callers that read millions of rows."""
        if size < 1:
            raise ValueError("page size must be at least 1")
        t = self._table
        n = self._key_count
        same = "phone_text" not in t.c  # the phone as read is its text (see create)
        # seq, the key columns, phone, phone_text (where copied), status, urgency: as made in create
        query = sa.select(*t.c).where(t.c.seq > sa.bindparam("last")).order_by(t.c.seq).limit(size)
        last = 0
        while True:
            rows = fetch_all(self._conn, query, {"last": last})
            if not rows:
                return
            if n == 1:  # transposed and zipped back in C: no Python bytecode per row
                _, keys_, phones, *rest = zip(*rows, strict=True)
                yield list(zip(zip(keys_), phones, *([phones] if same else []), *rest, strict=True))
            elif same:
                yield [(tuple(r[1 : n + 1]), r[n + 1], *r[n + 1 :]) for r in rows]
            else:
                yield [(tuple(r[1 : n + 1]), *r[n + 1 :]) for r in rows]
            last = rows[-1][0]
            if len(rows) < size:
                return

    def drop(self) -> None:
        """Drop the temporary table now (it also goes with the connection)."""
        drop_temporary(self._conn, self._table)

    def __enter__(self) -> DueList:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.drop()
        except sa.exc.SQLAlchemyError:
            if exc is None:  # while an error propagates, it matters more than a leftover temp table
                raise


def _reads_as_text(phone: sa.Column[Any], dialect: sa.Dialect) -> bool:
    """Whether the driver reads the phone column as exactly the text :func:`phone_text` makes of
    it: a VARCHAR or TEXT column on PostgreSQL or MariaDB (not CHAR, whose padding the cast drops;
    not SQLite, whose TEXT column can hold a number)."""
    column_type = phone.type.dialect_impl(dialect)
    return (
        dialect.name in ("postgresql", "mysql")
        and isinstance(column_type, (sa.VARCHAR, sa.TEXT))
        and column_type.result_processor(dialect, None) is None
    )


#: SQLite: INTEGER PRIMARY KEY is the rowid itself, no separate index.
_SEQ_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
