"""Write lookup results back by key: into the user's table, or upserted into its status table.

A failed lookup says nothing about the number, so it is never written: an earlier good status
stays. Each batch costs a fixed number of statements whatever its size: SQLite runs one
``executemany`` UPDATE (or upsert) in-process; PostgreSQL, MariaDB and DuckDB receive the batch
into a temporary staging table (one batched INSERT) and apply it with one joined UPDATE (or one
``INSERT ... SELECT`` upsert), instead of a round trip per row. The portable path, for a dialect
the project does not test, uses only an executemany UPDATE (or DELETE and INSERT) by key. The
caller commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.revalidation import to_naive_utc
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus, PhoneStatusResult
from airflow_provider_phonestatus.warehouse.binding import (
    as_isoformat,
    binary_copy_types,
    int_or_none,
    passes_through,
)
from airflow_provider_phonestatus.warehouse.store import STORED_COLUMNS, StoredValues, results_table
from airflow_provider_phonestatus.warehouse.table import (
    bulk_insert,
    copy_column,
    temporary_table,
    text_lengths,
)
from airflow_provider_phonestatus.warehouse.target import TargetTable

_STAGED_DIALECTS = ("postgresql", "mysql", "duckdb")
#: Key types whose values order alike in Python and in SQL.
_ORDERED_ALIKE = (sa.Integer, sa.Numeric, sa.Date, sa.DateTime)
_MISSING: Any = object()
#: A row handed to :meth:`RowWriter.write_groups`: (key, phone_text, anything else...).
Row = tuple[Any, ...]
#: What a group of rows is written with: a result, or a stored answer's values as
#: ``ResultStore.fresh_values`` gives them.
Answer = PhoneStatusResult | StoredValues
#: The status columns written, in the order of a record's values (see :meth:`RowWriter._records`).
_ROLES = ("status", "code", "carrier", "ported", "checked_at", "order_no", "checked_value")
_TEXT = len(_ROLES) - 1  #: position of the checked value in a record; the key follows it
#: The text written for each vocabulary member (``member.value``, without the enum descriptor per row).
_TEXTS: dict[Any, str] = {m: m.value for vocabulary in (PhoneStatus, Carrier) for m in vocabulary}
#: The results store's columns, for the types and lengths of the values read from it.
_STORE = results_table()
#: The longest text a vocabulary role can hold.
_LONGEST = {"status": max(map(len, map(str, PhoneStatus))), "carrier": max(map(len, map(str, Carrier)))}


@dataclass(frozen=True)
class _Plan:
    dialect: sa.Dialect
    sql: str
    order: list[int]  #: record position of each parameter of ``sql``
    processors: list[tuple[int, Any]]  #: (record position, bind processor)


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """The result for one row; ``phone_text`` is the row's ``DueRow.phone_text``."""

    key: tuple[Any, ...]
    phone_text: str | None
    result: PhoneStatusResult


class RowWriter:
    """Writes status columns of one :class:`TargetTable`; keeps a staging table per connection.

    ``portable``: only statements every SQL database runs (see the module's docstring).
    """

    def __init__(self, target: TargetTable, *, portable: bool = False) -> None:
        if target.missing:
            raise PhoneStatusConfigError(
                f"cannot write: status columns {', '.join(target.missing)} do not exist (dry run)"
            )
        self._target = target
        self._portable = portable
        self._table = target.written
        self._keys = target.written_keys
        names = target.columns.names()
        if set(names) != set(_ROLES):  # a role added to StatusColumns must be written here too
            raise RuntimeError(f"RowWriter writes roles {_ROLES}, StatusColumns has {tuple(names)}")
        self._names = {role: names[role] for role in _ROLES}  # role -> column name
        lengths = text_lengths(self._table.columns)
        self._lengths = [(i, lengths[n]) for i, n in enumerate(self._names.values()) if n in lengths]
        #: value names of a record: the roles, then k0, k1, ... for the key
        self._fields = [*self._names, *(f"k{i}" for i in range(len(target.key_columns)))]
        self._text_length = next((n for i, n in self._lengths if i == _TEXT), None)
        #: lengths to enforce on values from a result; vocabulary values that always fit are not checked
        self._part_lengths = [
            (i, n) for i, n in self._lengths if i < _TEXT and n < _LONGEST.get(_ROLES[i], n + 1)
        ]
        #: a ported flag kept in an integer column (check_type accepts one) is written as 0/1: no
        #: driver has to guess how a bool goes into it (psycopg's COPY would send "t")
        self._ported_as_int = not isinstance(self._table.c[self._names["ported"]].type, sa.Boolean)
        self._stage: sa.Table | None = None
        self._copy_types: list[int] | None = None  #: the stage's column types, for a binary COPY
        self._stage_conn: sa.Connection | None = None
        self._plan: _Plan | None = None

    def write(self, conn: sa.Connection, rows: Sequence[RowUpdate]) -> int:
        """Write the answers among ``rows`` (last one wins per key); return rows updated."""
        return self.write_many(conn, [(r.key, r.phone_text, r.result) for r in rows])

    def write_many(
        self, conn: sa.Connection, rows: Sequence[tuple[tuple[Any, ...], str | None, PhoneStatusResult]]
    ) -> int:
        """:meth:`write` for ``(key, phone_text, result)`` tuples, the fields of :class:`RowUpdate`."""
        return self.write_groups(conn, [(result, [(key, text, None)]) for key, text, result in rows])

    def write_groups(self, conn: sa.Connection, groups: Sequence[tuple[Answer, Sequence[Row]]]) -> int:
        """:meth:`write` for rows grouped by answer: ``(result, [(key, phone_text, ...), ...])`` (or
        ``ResultStore.fresh_values`` values in place of the result), in
        the order the rows would have come to :meth:`write` (last one wins per key). Items of a row
        after ``phone_text`` are ignored, so a caller's own row tuples can be handed over as they are."""
        dialect = conn.dialect
        portable = self._portable
        plan = self._sqlite_plan(dialect) if dialect.name == "sqlite" and not portable else None
        copy = dialect.name == "postgresql" and dialect.driver == "psycopg" and not portable
        processors = plan.processors if plan is not None else self._processors(dialect) if copy else []
        if self._ported_as_int:
            processors = [*processors, (_ROLES.index("ported"), int_or_none)]
        batch = self._records(groups, processors, self._stored_part(dialect, processors))
        if not batch:
            return 0
        if dialect.name in _STAGED_DIALECTS and not portable:
            try:
                count = self._write_staged(conn, batch, copy)
            except BaseException:
                self._stage = None  # its creation may be rolled back with the batch: make a new one
                raise
        elif plan is not None:
            count = self._write_sqlite(conn, plan, batch)
        else:
            count = self._write_each(conn, batch)
        return count if count >= 0 else len(batch)

    def _records(
        self,
        groups: Sequence[tuple[Answer, Sequence[Row]]],
        processors: Sequence[tuple[int, Any]],
        stored: Callable[[StoredValues], tuple[Any, ...]] | None,
    ) -> list[tuple[Any, ...]]:
        """The values of :attr:`_fields` for the rows with an answer, one record per key (last one
        wins), text cut to its column's length, then converted by ``processors`` ((position, bind
        processor) pairs; none: SQLAlchemy converts them when it binds).

        The part of a record that comes from the answer is made once per answer object; stored
        values become it through ``stored`` (:meth:`_stored_part`), or as they are when None.
        """
        key_count = len(self._target.key_columns)
        text_length = self._text_length
        row_processors = [(i - _TEXT, p) for i, p in processors if i >= _TEXT]
        plain = not row_processors  # the common case: no work per row, long texts cut afterwards
        parts: dict[int, tuple[Any, ...] | None] = {}
        records: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        part: tuple[Any, ...] | None
        for answer, rows in groups:
            if isinstance(answer, tuple):
                part = answer if stored is None else stored(answer)
            elif (part := parts.get(id(answer), _MISSING)) is _MISSING:
                part = parts[id(answer)] = self._result_part(answer, processors)
            if part is None:
                continue
            if plain:
                for row in rows:
                    key = row[0]
                    records[key] = (*part, row[1], *key)
                continue
            for row in rows:
                key, phone_text = row[0], row[1]
                if text_length is not None and isinstance(phone_text, str) and len(phone_text) > text_length:
                    phone_text = phone_text[:text_length]
                rest = [phone_text, *key]
                for i, proc in row_processors:
                    rest[i] = proc(rest[i])
                records[key] = (*part, *rest)
        if plain and text_length is not None:
            for key, record in records.items():
                if isinstance(text := record[_TEXT], str) and len(text) > text_length:
                    records[key] = (*record[:_TEXT], text[:text_length], *record[_TEXT + 1 :])
        if any(size != key_count for size in set(map(len, records))):
            wrong = next(key for key in records if len(key) != key_count)
            raise ValueError(f"key {wrong!r} does not match key columns {self._target.key_columns}")
        return list(records.values())

    def _result_part(
        self, result: PhoneStatusResult, processors: Sequence[tuple[int, Any]]
    ) -> tuple[Any, ...] | None:
        """The record's values that come from ``result``: all but the phone text and the key.
        None for a result that is no answer (a failure is never written)."""
        if not result.is_answer:
            return None
        checked_at = result.checked_at
        if checked_at.tzinfo is dt.UTC:  # to_naive_utc's result, in one step
            checked_at = checked_at.replace(tzinfo=None)
        elif checked_at.tzinfo is not None:
            checked_at = to_naive_utc(checked_at)
        carrier = result.carrier
        values = [
            _TEXTS[result.status],
            result.vendor_code,
            None if carrier is None else _TEXTS[carrier],
            result.ported,
            checked_at,
            result.order_no,
        ]
        return self._finish_part(values, self._part_lengths, processors)

    @staticmethod
    def _finish_part(
        values: list[Any], lengths: Sequence[tuple[int, int]], processors: Sequence[tuple[int, Any]]
    ) -> tuple[Any, ...]:
        """Cut texts to ``lengths`` and convert by ``processors``, both (record position, ...)."""
        for i, length in lengths:
            if isinstance(text := values[i], str) and len(text) > length:
                values[i] = text[:length]
        for i, proc in processors:
            if i < _TEXT:
                values[i] = proc(values[i])
        return tuple(values)

    def _stored_part(
        self, dialect: sa.Dialect, processors: Sequence[tuple[int, Any]]
    ) -> Callable[[StoredValues], tuple[Any, ...]] | None:
        """How ``ResultStore.fresh_values`` values, read as the driver gives them, become a
        record's part: None when they already are it. That is the common case (SQLite keeps the
        ISO text and the 0/1 a DATETIME and BOOLEAN column of the target would bind, PostgreSQL
        reads what psycopg binds): a million rows answered from the store cost no conversion.

        Otherwise each differing value is converted by the store column's result processor (to
        Python), then the target's bind processor, and texts are cut to the target's lengths.
        """
        store = _STORE
        bind = {i: proc for i, proc in processors if i < _TEXT}
        steps: list[tuple[int, Any, Any]] = []
        for i, name in enumerate(STORED_COLUMNS):
            column_type = store.c[name].type.dialect_impl(dialect)
            read = column_type.result_processor(dialect, None)
            if (read or bind.get(i)) and not passes_through(column_type, dialect, read, bind.get(i)):
                steps.append((i, read, bind.get(i)))
        store_lengths = text_lengths(store.c)
        lengths = [(i, n) for i, n in self._part_lengths if n < store_lengths.get(STORED_COLUMNS[i], n + 1)]
        if not steps and not lengths:
            return None

        def convert(values: StoredValues) -> tuple[Any, ...]:
            converted = list(values)
            for i, read, write in steps:
                value = converted[i] if read is None else read(converted[i])
                converted[i] = value if write is None else write(value)
            return RowWriter._finish_part(converted, lengths, ())

        return convert

    def _bound(self) -> tuple[dict[sa.Column[Any], sa.BindParameter[Any]], list[str]]:
        """Written column -> its bind parameter, and the parameter name of each of :attr:`_fields`."""
        table = self._table
        params = _free_names(table, self._fields)
        values: dict[sa.Column[Any], sa.BindParameter[Any]] = {
            table.c[name]: sa.bindparam(params[role]) for role, name in self._names.items()
        }
        values.update({k: sa.bindparam(params[f"k{i}"]) for i, k in enumerate(self._keys)})
        return values, [params[f] for f in self._fields]

    def _by_key(self, values: dict[sa.Column[Any], sa.BindParameter[Any]]) -> list[sa.ColumnElement[bool]]:
        return [k == values[k] for k in self._keys]

    def _statement(self) -> tuple[sa.Update | sa.Insert, list[str]]:
        """The UPDATE by key (in place) or the upsert by key (SQLite), and the bind parameter
        name of each of :attr:`_fields`."""
        values, names = self._bound()
        if self._target.in_place:
            status = {c: p for c, p in values.items() if c not in self._keys}
            return sa.update(self._table).where(*self._by_key(values)).values(status), names
        return self._upsert(sqlite.insert(self._table).values(values)), names

    def _upsert(self, insert: Any) -> sa.Insert:
        """``insert`` (a dialect's own INSERT) made to update the status columns of existing keys."""
        names = list(self._names.values())
        if hasattr(insert, "on_duplicate_key_update"):  # MySQL / MariaDB
            return insert.on_duplicate_key_update({n: insert.inserted[n] for n in names})  # type: ignore[no-any-return]
        return insert.on_conflict_do_update(  # type: ignore[no-any-return]
            index_elements=self._keys, set_={n: insert.excluded[n] for n in names}
        )

    def portable_statements(self) -> tuple[list[sa.Update | sa.Delete | sa.Insert], list[str]]:
        """What the portable path runs per batch, each as one executemany: the UPDATE by key (in
        place), or DELETE then INSERT by key (status table); and the parameter name of each of
        :attr:`_fields`."""
        values, names = self._bound()
        if self._target.in_place:
            status = {c: p for c, p in values.items() if c not in self._keys}
            return [sa.update(self._table).where(*self._by_key(values)).values(status)], names
        return [
            sa.delete(self._table).where(*self._by_key(values)),
            sa.insert(self._table).values(values),
        ], names

    def _write_each(self, conn: sa.Connection, batch: list[tuple[Any, ...]]) -> int:
        """The portable path, bound by SQLAlchemy: rows updated (in place) or written."""
        statements, names = self.portable_statements()
        params = [dict(zip(names, row, strict=True)) for row in batch]
        counts = [conn.execute(statement, params).rowcount for statement in statements]
        return counts[0] if self._target.in_place else len(batch)

    def _processors(self, dialect: sa.Dialect) -> list[tuple[int, Any]]:
        """(record position, bind processor) of each written column that has one on ``dialect``:
        the conversions SQLAlchemy applies to each value (or array item) it binds for the column."""
        table = self._table
        columns = [table.c[name] for name in self._names.values()] + self._keys
        return [
            (i, proc)
            for i, c in enumerate(columns)
            if (proc := c.type.dialect_impl(dialect).bind_processor(dialect))
        ]

    def _sqlite_plan(self, dialect: sa.Dialect) -> _Plan:
        """The UPDATE compiled once for SQLite (qmark), the order of its parameters, and the bind
        processor of each: exactly what SQLAlchemy would send, minus its per-row work."""
        if self._plan is None or self._plan.dialect is not dialect:
            statement, names = self._statement()
            compiled = statement.compile(dialect=dialect)
            position = {name: i for i, name in enumerate(names)}
            order = [position[name] for name in compiled.positiontup or ()]
            processors = [
                (position[name], as_isoformat(proc))
                for name, bind in compiled.binds.items()
                if name in position and (proc := bind.type.dialect_impl(dialect).bind_processor(dialect))
            ]
            if sorted(order) != list(range(len(names))):  # pragma: no cover - SQLite binds positionally
                raise RuntimeError(f"unexpected parameters of the UPDATE: {compiled.positiontup}")
            self._plan = _Plan(dialect, compiled.string, order, processors)
        return self._plan

    def _write_sqlite(self, conn: sa.Connection, plan: _Plan, batch: list[tuple[Any, ...]]) -> int:
        """:meth:`_write_each` on SQLite: the same UPDATE run by sqlite3's executemany in-process,
        with values :meth:`_records` already converted."""
        if plan.order != list(range(len(plan.order))):
            batch = [tuple(row[i] for i in plan.order) for row in batch]
        return conn.exec_driver_sql(plan.sql, batch).rowcount

    def _write_staged(self, conn: sa.Connection, batch: list[tuple[Any, ...]], copy: bool = False) -> int:
        """One batched INSERT into the staging table (with ``copy``, a ``COPY FROM STDIN`` through
        psycopg 3 of values already bound by :meth:`_records`, in the binary format where every
        column's type allows: a quarter of the client CPU of adapting one array per column), one
        joined UPDATE, then empty the stage."""
        stage = self._staging(conn)
        if copy:
            preparer = conn.dialect.identifier_preparer
            names = ", ".join(preparer.quote(name) for name in self._fields)
            driver: Any = conn.connection.driver_connection  # psycopg.Connection, in SQLAlchemy's transaction
            binary = " (FORMAT BINARY)" if self._copy_types else ""
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY {preparer.format_table(stage)} ({names}) FROM STDIN{binary}") as rows,
            ):
                if self._copy_types:
                    rows.set_types(self._copy_types)
                for record in batch:
                    rows.write_row(record)
        else:
            conn.execute(*bulk_insert(conn, sa.insert(stage), self._fields, batch))
        count = self._apply_stage(conn, stage, batch)
        if conn.dialect.name == "postgresql":  # DELETE would leave dead rows no vacuum ever visits
            conn.exec_driver_sql(f"TRUNCATE {conn.dialect.identifier_preparer.format_table(stage)}")
        else:  # MariaDB: TRUNCATE would commit the caller's transaction
            conn.execute(sa.delete(stage))
        return count

    def _apply_stage(self, conn: sa.Connection, stage: sa.Table, batch: list[tuple[Any, ...]]) -> int:
        """Write the staged rows: one joined UPDATE (in place), one INSERT ... SELECT upsert
        (status table); rows written."""
        table = self._table
        if not self._target.in_place:
            names = [*self._names.values(), *self._target.key_columns]
            staged = sa.select(*(stage.c[f] for f in self._fields))
            insert = (mysql.insert if conn.dialect.name == "mysql" else postgresql.insert)(table)
            conn.execute(self._upsert(insert.from_select(names, staged)))
            return len(batch)  # MariaDB counts an updated row twice
        statement = (
            sa.update(table)
            .values({table.c[name]: stage.c[role] for role, name in self._names.items()})
            .where(*(k == stage.c[f"k{i}"] for i, k in enumerate(self._keys)))
        )
        if (span := self._key_span(conn.dialect, batch)) is not None:
            statement = statement.where(span)
        return int(conn.execute(statement).rowcount)

    def _key_span(self, dialect: sa.Dialect, batch: list[tuple[Any, ...]]) -> sa.ColumnElement[bool] | None:
        """``first key BETWEEN lowest AND highest`` of the batch, for PostgreSQL: its planner joins
        the stage by a merge join whose index scan otherwise starts at the table's first key, so
        each batch read the index up to its own keys (see ``EXPLAIN ANALYZE``: the time per batch
        grows with its place in the table, the whole run with the square of the table). Only for
        numbers and dates, which order the same in Python and in SQL (text follows the database's
        collation), passed as they are (no bind processor); None otherwise."""
        key = self._keys[0]
        if (
            dialect.name != "postgresql"
            or not isinstance(key.type, _ORDERED_ALIKE)
            or key.type.dialect_impl(dialect).bind_processor(dialect) is not None
        ):
            return None
        position = _TEXT + 1
        try:
            low = min(record[position] for record in batch)
            high = max(record[position] for record in batch)
        except TypeError:  # values that do not order in Python: no span, the join still holds
            return None
        return key.between(sa.literal(low, key.type), sa.literal(high, key.type))

    def _staging(self, conn: sa.Connection) -> sa.Table:
        if self._stage is None or self._stage_conn is not conn:
            table = self._table
            self._stage = temporary_table(
                conn,
                "phonestatus_stage",
                [
                    *(copy_column(role, table.c[name]) for role, name in self._names.items()),
                    *(copy_column(f"k{i}", k) for i, k in enumerate(self._keys)),
                ],
            )
            self._stage_conn = conn
            self._copy_types = (
                binary_copy_types(conn, self._stage) if conn.dialect.name == "postgresql" else None
            )
        return self._stage


def _free_names(table: sa.Table, names: list[str]) -> dict[str, str]:
    """Bind parameter names that no column of ``table`` has (SQLAlchemy reserves those)."""
    prefix = "ps_"
    while any(column.name.startswith(prefix) for column in table.c):
        prefix = f"_{prefix}"
    return {name: f"{prefix}{name}" for name in names}
