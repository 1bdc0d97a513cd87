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

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult
from airflow_provider_phonestatus.warehouse.binding import (
    as_isoformat,
    binary_copy_types,
    int_or_none,
)
from airflow_provider_phonestatus.warehouse.records import ROLES, TEXT, Answer, Records, Row
from airflow_provider_phonestatus.warehouse.table import (
    bulk_insert,
    copy_column,
    temporary_table,
)
from airflow_provider_phonestatus.warehouse.target import TargetTable

_STAGED_DIALECTS = ("postgresql", "mysql", "duckdb")
_FLAGS = ("ported", "recycled_suspect")  #: roles that hold a boolean
#: Key types whose values order alike in Python and in SQL.
_ORDERED_ALIKE = (sa.Integer, sa.Numeric, sa.Date, sa.DateTime)


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
        if set(names) != set(ROLES):  # a role added to StatusColumns must be written here too
            raise RuntimeError(f"RowWriter writes roles {ROLES}, StatusColumns has {tuple(names)}")
        self._names = {role: names[role] for role in ROLES}  # role -> column name
        #: value names of a record: the roles, then k0, k1, ... for the key
        self._fields = [*self._names, *(f"k{i}" for i in range(len(target.key_columns)))]
        self._records = Records(self._table, list(self._names.values()), target.key_columns)
        #: a flag kept in an integer column (check_type accepts one) is written as 0/1: no driver
        #: has to guess how a bool goes into it (psycopg's COPY would send "t")
        self._flags_as_int = [
            (ROLES.index(role), int_or_none)
            for role in _FLAGS
            if not isinstance(self._table.c[self._names[role]].type, sa.Boolean)
        ]
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
        if self._flags_as_int:
            processors = [*processors, *self._flags_as_int]
        batch = self._records.make(groups, processors, dialect)
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
        if self._target.in_place:  # SET in the order of a record's values: no reordering per row
            status = [(c, p) for c, p in values.items() if c not in self._keys]
            return sa.update(self._table).where(*self._by_key(values)).ordered_values(*status), names
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
        with values :class:`Records` already converted."""
        if plan.order != list(range(len(plan.order))):  # e.g. an INSERT in the table's column order
            batch = list(map(operator.itemgetter(*plan.order), batch))
        return conn.exec_driver_sql(plan.sql, batch).rowcount

    def _write_staged(self, conn: sa.Connection, batch: list[tuple[Any, ...]], copy: bool = False) -> int:
        """One batched INSERT into the staging table (with ``copy``, a ``COPY FROM STDIN`` through
        psycopg 3 of values already bound by :class:`Records`, in the binary format where every
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
        position = TEXT + 1
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
