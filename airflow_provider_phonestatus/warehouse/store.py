"""The results store: the last answer per national number, shared by every table and every run.

A number that appears in ten tables, or twice in one, is paid for once per revalidation age: the
operator answers from here first. Only statements about the number itself are kept: vendor
answers and rejections. Failures say nothing; local labels (``invalid``/``unsupported``) depend on
how a table spelled the value, not on the number, so they are never shared.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.history import follow, recycled_suspect
from airflow_provider_phonestatus.numbers import mask_number
from airflow_provider_phonestatus.revalidation import RevalidationPolicy, to_naive_utc
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus, PhoneStatusResult
from airflow_provider_phonestatus.warehouse.due import oldest_fresh
from airflow_provider_phonestatus.warehouse.owned import TIMESTAMP, OwnedTable, added_later
from airflow_provider_phonestatus.warehouse.table import (
    bulk_insert,
    fetch_all,
    json_texts,
    new_table,
    text_lengths,
)

DEFAULT_NAME = "phone_status_results"
CHUNK = 1000  #: numbers per lookup query and rows per upsert statement
ARRAY_CHUNK = 10_000  #: numbers per lookup query where they travel as one array (PostgreSQL, SQLite)
DUCKDB_CHUNK = 50_000  #: numbers per lookup query on DuckDB, whose every lookup scans the store


def results_table(name: str = DEFAULT_NAME) -> sa.Table:
    """The store's table definition; ``name`` may be ``schema.table``."""
    return new_table(
        name,
        sa.Column("national", sa.String(11), primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("vendor_code", sa.String(16)),
        sa.Column("carrier", sa.String(32)),
        sa.Column("carrier_raw", sa.String(64)),
        sa.Column("ported", sa.Boolean),
        sa.Column("order_no", sa.String(64)),
        sa.Column("message", sa.String(255)),
        sa.Column("checked_at", TIMESTAMP, nullable=False),
        # The number's history as of this answer (``history.follow``); added to an older store
        # by ``ensure``, its earlier rows NULL: nothing known before.
        added_later(sa.Column("previous_status", sa.String(32))),
        added_later(sa.Column("previous_checked_at", TIMESTAMP)),
        added_later(sa.Column("status_changed_at", TIMESTAMP)),
        added_later(sa.Column("recycled_suspect", sa.Boolean)),
        # SQLite: the rows live in the primary key's own B-tree, so a lookup is one descent, not
        # an index descent and then a rowid one.
        sqlite_with_rowid=False,
    )


class ResultStore(OwnedTable):
    """Read fresh answers by national number; upsert new ones. The caller commits.

    ``portable``: only statements every SQL database runs (an IN list, DELETE then INSERT).
    """

    define = staticmethod(results_table)

    def __init__(self, table: sa.Table, *, portable: bool = False) -> None:
        super().__init__(table)
        self.portable = portable
        self._names = [c.name for c in table.columns]
        self._lengths = text_lengths(table.columns)

    def fresh(
        self,
        conn: sa.Connection,
        nationals: Collection[str],
        policy: RevalidationPolicy,
        now: dt.datetime,
    ) -> dict[str, PhoneStatusResult]:
        """National -> stored answer, for those still within their status's revalidation age."""
        return {
            row[0]: result
            for row in self._fresh_rows(conn, nationals, policy, now, [self.table.c[n] for n in _READ])
            if (result := _result(*row[1:]))
        }

    def fresh_values(
        self,
        conn: sa.Connection,
        nationals: Collection[str],
        policy: RevalidationPolicy,
        now: dt.datetime,
    ) -> dict[str, StoredValues]:
        """:meth:`fresh` as the values a table row receives for each answer, for a refresh that
        answers millions of rows from the store: no result object, no conversion per number.

        ``ported`` and ``checked_at`` come as the driver reads them (SQLite: 0/1 and the ISO text
        SQLAlchemy stores; no column here is converted, so ``fetch_all`` gives the driver's rows);
        ``RowWriter`` converts them only where the target column would bind them differently.
        Unknown carriers read as ``unknown``, as :meth:`fresh` reads them. The history of a
        stored rejection is the number's last vendor status, carried on for the next answer: no
        row is written with it (``REJECTED_HISTORY``).
        """
        t = self.table
        carrier = t.c.carrier

        columns = (
            t.c.national,
            t.c.status,
            t.c.vendor_code,
            sa.case(
                (sa.or_(carrier.is_(None), carrier.in_(list(_CARRIERS))), carrier),
                else_=sa.literal(Carrier.UNKNOWN.value, carrier.type),
            ).label("carrier"),
            sa.type_coerce(t.c.ported, sa.types.NullType()).label("ported"),
            sa.type_coerce(t.c.checked_at, sa.types.NullType()).label("checked_at"),
            t.c.order_no,
            t.c.previous_status,
            sa.type_coerce(t.c.status_changed_at, sa.types.NullType()).label("status_changed_at"),
            sa.type_coerce(sa.func.coalesce(t.c.recycled_suspect, sa.false()), sa.types.NullType()).label(
                "recycled_suspect"
            ),
        )
        rows = self._fresh_rows(conn, nationals, policy, now, columns)
        return {row[0]: row[1:] for row in rows}  # type: ignore[misc]  # the columns above

    def _fresh_rows(
        self,
        conn: sa.Connection,
        nationals: Collection[str],
        policy: RevalidationPolicy,
        now: dt.datetime,
        columns: Sequence[sa.ColumnElement[Any]],
    ) -> Iterator[Sequence[Any]]:
        """``columns`` (the number first) of the stored answers of ``nationals`` that are fresh by
        ``policy`` at ``now`` and of a status a run of ours writes; freshness is decided in SQL
        (by the policy's own ``is_fresh`` in Python when a subclass changes it)."""
        fresh = _sql_freshness(self.table, policy, now)
        rows = self._of_numbers(conn, nationals, self._lookup(policy, now, columns))
        if fresh is None:
            yield from (row[:-2] for row in rows if policy.is_fresh(row[-2], row[-1], now))
        else:
            yield from rows

    def _of_numbers(
        self, conn: sa.Connection, nationals: Collection[str], selected: sa.Select[Any]
    ) -> Iterator[Sequence[Any]]:
        """The rows of ``selected`` (a query of the store) for the numbers ``nationals``, a chunk
        of them per statement, each passed the fastest way the dialect takes a list."""
        t = self.table
        encode: Callable[[list[str]], Any] = list
        dialect = "portable" if self.portable else conn.dialect.name
        if dialect == "postgresql":
            # One text parameter split by the server (no 1,000-parameter statement; psycopg adapts
            # a list item by item, 30 times the client CPU of one joined string), each number
            # probed through the primary key by a LATERAL ... LIMIT 1 subquery. A plain join is
            # planned from table statistics: on a store filled since its last ANALYZE the planner
            # chose to hash a full scan of the store for every chunk, several times slower.
            joined = sa.func.string_to_array(sa.bindparam("nationals", type_=sa.Text), ",")
            wanted = (
                sa.func.unnest(sa.type_coerce(joined, postgresql.ARRAY(sa.String)))
                .table_valued("national")
                .render_derived(name="wanted")
            )
            found = selected.where(t.c.national == wanted.c.national).limit(1).lateral("found")
            query = sa.select(*found.c).select_from(wanted.join(found, sa.true()))
            size, encode = ARRAY_CHUNK, ",".join
        elif dialect == "duckdb":  # one JSON text: DuckDB binds a list item by item (table.json_columns)
            listed = sa.select(sa.func.unnest(json_texts(sa.bindparam("nationals", type_=sa.Text))))
            query = selected.where(t.c.national.in_(listed))
            # each statement scans the store (a hash join on the list): one per page, not per 10,000
            size, encode = DUCKDB_CHUNK, _json_list
        elif dialect == "sqlite" and _sqlite_version(conn.dialect) >= (3, 38):
            # One JSON array parameter (JSON is built into SQLite since 3.38) instead of a statement
            # of 1,000 placeholders expanded and bound per chunk.
            listed = sa.select(sa.column("value", sa.String)).select_from(
                sa.func.json_each(sa.bindparam("nationals", type_=sa.String))
            )
            query = selected.where(t.c.national.in_(listed))
            size, encode = ARRAY_CHUNK, _json_list
        else:
            query = selected.where(t.c.national.in_(sa.bindparam("nationals", expanding=True)))
            size = CHUNK
        # Sorted, the numbers are probed in index order: neighbouring probes share index pages.
        # Only what ``save`` stores can be found: 11 ASCII digits (which also keeps a separator or
        # a quote out of the joined parameters above).
        for chunk in _chunks(sorted(set(filter(_NATIONAL.fullmatch, nationals))), size):
            yield from fetch_all(conn, query, {"nationals": encode(chunk)})

    def _lookup(
        self, policy: RevalidationPolicy, now: dt.datetime, columns: Sequence[sa.ColumnElement[Any]]
    ) -> sa.Select[Any]:
        """``columns`` of the stored answers of a status a run of ours writes, fresh by ``policy`` at
        ``now`` (with the status and time last, for the policy's own test, when not in SQL)."""
        t = self.table
        fresh = _sql_freshness(t, policy, now)
        if fresh is None:
            columns = [*columns, t.c.status.label("policy_status"), t.c.checked_at.label("policy_at")]
        selected = sa.select(*columns).where(t.c.status.in_(list(_STORED)))
        return selected if fresh is None else selected.where(fresh)

    def save(
        self, conn: sa.Connection, items: Sequence[tuple[str, PhoneStatusResult]]
    ) -> list[tuple[str, PhoneStatusResult]]:
        """Upsert the storable answers among ``items`` (last one wins per number), each with the
        number's history moved on from what the store held (:func:`history.follow`); return them
        as stored, history included, in the order of ``items``."""
        answers: dict[str, PhoneStatusResult] = {}
        for national, result in items:
            if not result.is_answer or result.status.is_local:
                continue
            if not (isinstance(national, str) and _NATIONAL.fullmatch(national)):
                raise PhoneStatusConfigError(f"not an 11-digit national number: {mask_number(national)}")
            answers[national] = result
        if not answers:
            return []
        old = self._histories(conn, list(answers))
        for national, result in answers.items():
            checked_at = to_naive_utc(result.checked_at)
            moved = follow(old.get(national), result.status.value, checked_at)
            answers[national] = dataclasses.replace(
                result,
                previous_status=moved.previous_status,
                previous_checked_at=moved.previous_checked_at,
                status_changed_at=moved.status_changed_at,
            )
        records = [self._record(national, result) for national, result in answers.items()]
        if self.portable:
            self._replace(conn, records)
        else:
            upsert = self._upsert(conn.dialect.name)
            for chunk in _chunks(records):
                conn.execute(*bulk_insert(conn, upsert, self._names, chunk))
        return list(answers.items())

    def _histories(self, conn: sa.Connection, nationals: list[str]) -> dict[str, _Old]:
        """What the store holds of each of ``nationals`` that ``history.follow`` moves on from."""
        return {national: tuple(old) for national, *old in self._of_numbers(conn, nationals, self._history())}

    def _replace(self, conn: sa.Connection, records: list[tuple[Any, ...]]) -> None:
        """The portable upsert: DELETE by number, then INSERT, each an executemany."""
        if records:
            delete, insert = self.portable_statements()[1:]
            conn.execute(delete, [{"n": r[0]} for r in records])
            conn.execute(insert, [dict(zip(self._names, r, strict=True)) for r in records])

    def portable_statements(self) -> tuple[sa.Select[Any], sa.Delete, sa.Insert]:
        """The portable path's statements: the lookup of fresh answers by an IN list (policy at the
        epoch: only its shape matters here), the DELETE by number and the INSERT of a save."""
        t = self.table
        lookup = self._lookup(RevalidationPolicy(), dt.datetime(1970, 1, 1, tzinfo=dt.UTC), list(t.c))
        listed = lookup.where(t.c.national.in_(sa.bindparam("nationals", expanding=True)))
        return listed, t.delete().where(t.c.national == sa.bindparam("n")), t.insert()

    def history_statement(self) -> sa.Select[Any]:
        """What a save reads of the numbers it stores before the upsert, as the portable path
        runs it (an IN list)."""
        return self._history().where(self.table.c.national.in_(sa.bindparam("nationals", expanding=True)))

    def _history(self) -> sa.Select[Any]:
        t = self.table
        history = ("status", "checked_at", "previous_status", "previous_checked_at", "status_changed_at")
        return sa.select(t.c.national, *(t.c[name] for name in history))

    def _record(self, national: str, result: PhoneStatusResult) -> tuple[Any, ...]:
        record = result.as_record()
        record["national"] = national
        record["checked_at"] = to_naive_utc(result.checked_at)
        record["previous_status"] = result.previous_status
        record["previous_checked_at"] = result.previous_checked_at
        record["status_changed_at"] = result.status_changed_at
        record["recycled_suspect"] = recycled_suspect(result.previous_status, result.status.value)
        for name, length in self._lengths.items():
            if isinstance(text := record[name], str) and len(text) > length:
                record[name] = text[:length]
        return tuple(record[name] for name in self._names)

    def _upsert(self, dialect: str) -> sa.Insert:
        """INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE, to be filled by :func:`bulk_insert`."""
        t = self.table
        others = [c.name for c in t.columns if not c.primary_key]
        if dialect in ("postgresql", "sqlite", "duckdb"):
            insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(t)
            return insert.on_conflict_do_update(
                index_elements=[t.c.national], set_={c: insert.excluded[c] for c in others}
            )
        if dialect in ("mysql", "mariadb"):
            upsert = mysql.insert(t)
            return upsert.on_duplicate_key_update({c: upsert.inserted[c] for c in others})
        raise PhoneStatusConfigError(
            f"the results store has no upsert for the {dialect!r} dialect; run with portable_sql=True"
        )


#: What the store keys: a national number of 11 ASCII digits.
_NATIONAL = re.compile(r"[0-9]{11}")
_STORED = {s.value: s for s in PhoneStatus if s.is_answer and not s.is_local}
_CARRIERS = {c.value: c for c in Carrier}


#: Columns read back, in the order of :func:`_result`'s parameters after ``national``.
_READ = (
    "national",
    "status",
    "vendor_code",
    "carrier",
    "carrier_raw",
    "ported",
    "order_no",
    "message",
    "checked_at",
)


#: A stored answer as a row receives it (:meth:`ResultStore.fresh_values`): (status, vendor_code,
#: carrier, ported, checked_at, order_no, previous_status, status_changed_at, recycled_suspect),
#: the booleans and times as the database driver reads them.
StoredValues = tuple[str, str | None, str | None, Any, Any, str | None, str | None, Any, Any]
#: The store's column of each value of :data:`StoredValues`, in order.
STORED_COLUMNS = (
    "status",
    "vendor_code",
    "carrier",
    "ported",
    "checked_at",
    "order_no",
    "previous_status",
    "status_changed_at",
    "recycled_suspect",
)
#: The history values a row answered by a stored rejection is written with: none (a rejection
#: is neither a previous status nor a change).
REJECTED_HISTORY = (None, None, False)
#: What the store held of a number before a new answer: (status, checked_at, previous_status,
#: previous_checked_at, status_changed_at), as ``history.follow`` takes it.
_Old = tuple[str | None, dt.datetime | None, str | None, dt.datetime | None, dt.datetime | None]


def _result(
    status_value: str,
    vendor_code: str | None,
    carrier: str | None,
    carrier_raw: str | None,
    ported: bool | None,
    order_no: str | None,
    message: str | None,
    checked_at: dt.datetime,
) -> PhoneStatusResult | None:
    """The stored answer as the hook gave it; None for a row no run of ours would have written."""
    status = _STORED.get(status_value)
    if status is None:
        return None
    return PhoneStatusResult(
        status=status,
        vendor_code=vendor_code,
        carrier=None if carrier is None else _CARRIERS.get(carrier, Carrier.UNKNOWN),
        carrier_raw=carrier_raw,
        ported=ported,
        order_no=order_no,
        message=message,
        checked_at=checked_at.replace(tzinfo=dt.UTC),
    )


def _sql_freshness(
    table: sa.Table, policy: RevalidationPolicy, now: dt.datetime
) -> sa.ColumnElement[bool] | None:
    """``policy.is_fresh(status, checked_at, now)`` as SQL: ``checked_at`` at or after the cutoff of
    its status (the rule a table's rows are due by, the other way round). None when a subclass
    changes how freshness is decided: then only its own method can say."""
    if (
        type(policy).is_fresh is not RevalidationPolicy.is_fresh
        or type(policy).age is not RevalidationPolicy.age
    ):
        return None
    return table.c.checked_at >= oldest_fresh(table.c.status, table.c.checked_at, policy, now)


def _sqlite_version(dialect: sa.Dialect) -> tuple[int, ...]:
    """The SQLite library's version under the dialect's driver, (0,) when it does not say."""
    return tuple(getattr(dialect.dbapi, "sqlite_version_info", (0,)))


def _json_list(values: list[str]) -> str:
    return json.dumps(values, separators=(",", ":"))


def _chunks(values: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    iterator = iter(values)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
