"""Where a run reads phone numbers and writes statuses: the user's table, and its status table.

In place, the status columns live in the user's table: added with ``ALTER TABLE`` when missing,
written by ``UPDATE`` by key. With a status table, the user's table (the source) is only read, and
the statuses live in a table of their own beside it, keyed by the source's key columns (same
names, same types): a table built by dbt, owned by another team, or in a warehouse where per-row
UPDATEs are slow keeps its shape, and whoever needs the statuses joins them by key.

Either way the key must identify one row: writing by a key that is not unique would put one
number's status on other people's rows. Indexes are never created on a user's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import ReflectedIndex

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.table import (
    add_column_ddl,
    add_columns,
    check_type,
    copy_column,
    create_table,
    new_table,
    reflect,
    split_name,
)

#: Shortest text column that can hold every value of a role's vocabulary.
_MIN_LENGTHS = {
    "status": max(len(s.value) for s in PhoneStatus),
    "previous_status": max(len(s.value) for s in PhoneStatus),
    "carrier": max(len(c.value) for c in Carrier),
}


@dataclass(frozen=True)
class TargetTable:
    """The reflected user table with its key, phone and status columns checked.

    ``status_table_name`` set: statuses live in ``status_table`` (None in a dry run while it does
    not exist yet); otherwise in ``table`` itself.
    """

    table: sa.Table
    key_columns: tuple[str, ...]
    phone_column: str
    columns: StatusColumns
    missing: tuple[str, ...] = ()  #: status column names absent (dry run only)
    status_table: sa.Table | None = None
    status_table_name: str | None = None

    @classmethod
    def load(
        cls,
        conn: sa.Connection,
        name: str,
        *,
        key_columns: str | Sequence[str],
        phone_column: str,
        columns: StatusColumns,
        create_missing: bool = True,
        dry_run: bool = False,
        status_table: str | None = None,
        portable: bool = False,
    ) -> TargetTable:
        """Reflect ``name``, check every name against it, and make the status columns exist (in
        place, or in ``status_table``, created when missing); DDL is committed. ``portable``: the
        status table is written by DELETE and INSERT, so its key need not be declared unique."""
        keys = _key_names(key_columns)
        table = reflect(conn, name)
        _check_roles(table, keys, phone_column, columns)
        if status_table is None:
            _check_unique(conn, table, keys)
            table, missing = _status_columns(conn, table, columns, create_missing, dry_run)
            return cls(table, keys, phone_column, columns, missing)
        if split_name(status_table) == split_name(name):
            raise PhoneStatusConfigError(f"status_table {status_table!r} is the source table itself")
        _check_unique(conn, table, keys, count=True)
        status = _status_table(conn, status_table, table, keys, columns, create_missing, dry_run, portable)
        if status is None:  # dry run, not created yet: every row is due
            return cls(
                table, keys, phone_column, columns, tuple(columns.names().values()), None, status_table
            )
        status, missing = _status_columns(conn, status, columns, create_missing, dry_run)
        return cls(table, keys, phone_column, columns, missing, status, status_table)

    @property
    def in_place(self) -> bool:
        return self.status_table_name is None

    @property
    def written(self) -> sa.Table:
        """The table whose status columns are written."""
        if self.in_place:
            return self.table
        if self.status_table is None:
            raise PhoneStatusConfigError(f"status table {self.status_table_name!r} does not exist (dry run)")
        return self.status_table

    @property
    def written_keys(self) -> list[sa.Column[Any]]:
        """The key columns of :attr:`written`, in ``key_columns`` order."""
        return [self.written.c[k] for k in self.key_columns]

    @property
    def source(self) -> sa.FromClause:
        """What due rows are read from: the table, left-joined to its status table if it has one."""
        if self.status_table is None:
            return self.table
        status = self.status_table
        on = [self.table.c[k] == status.c[k] for k in self.key_columns]
        return self.table.outerjoin(status, sa.and_(*on))

    def column(self, role: str) -> sa.ColumnElement[Any]:
        """The status column of ``role`` ("status", "checked_at", ...), or NULL when missing."""
        name = self.columns.names()[role]
        holder = self.table if self.in_place else self.status_table
        return holder.c[name] if holder is not None and name in holder.c else sa.null()

    @property
    def keys(self) -> list[sa.Column[Any]]:
        return [self.table.c[k] for k in self.key_columns]

    @property
    def phone(self) -> sa.Column[Any]:
        return self.table.c[self.phone_column]

    def prune(self, conn: sa.Connection) -> int:
        """Delete the status table's rows whose key is no longer in the source; how many. The
        caller commits."""
        if self.in_place:
            raise PhoneStatusConfigError("only a status table is pruned; in place, rows go with the table")
        return int(conn.execute(self.prune_statement()).rowcount)

    def prune_statement(self) -> sa.Delete:
        """DELETE of the status rows whose key is not in the source (``NOT EXISTS``, portable)."""
        status = self.written
        in_source = sa.select(sa.literal(1)).where(
            *(self.table.c[k] == status.c[k] for k in self.key_columns)
        )
        return sa.delete(status).where(~in_source.exists())

    def key_of(self, row: Any) -> tuple[Any, ...]:
        """The key of a result row (``sa.Row`` or mapping), in ``key_columns`` order."""
        mapping = getattr(row, "_mapping", row)
        return tuple(mapping[k] for k in self.key_columns)


def _status_columns(
    conn: sa.Connection, table: sa.Table, columns: StatusColumns, create_missing: bool, dry_run: bool
) -> tuple[sa.Table, tuple[str, ...]]:
    """Check ``table``'s status columns; add the missing ones unless a dry run (committed)."""
    missing = _check_status_types(table, columns)
    if missing and not create_missing:
        names = ", ".join(c.name for c in missing)
        raise PhoneStatusConfigError(
            f"table {table.fullname!r} lacks status columns {names} and create_columns is off; "
            f"add them with: {add_column_ddl(table, missing, conn.dialect)}"
        )
    if missing and not dry_run:
        add_columns(conn, table, missing)
        table = reflect(conn, table.fullname)
        missing = _check_status_types(table, columns)
    return table, tuple(c.name for c in missing)


def _status_table(
    conn: sa.Connection,
    name: str,
    source: sa.Table,
    keys: tuple[str, ...],
    columns: StatusColumns,
    create_missing: bool,
    dry_run: bool,
    portable: bool,
) -> sa.Table | None:
    """The status table ``name``, created when missing (None in a dry run): the source's key
    columns as primary key, then the status columns; or, when it exists, checked: the same key
    columns, of the same type family, unique together."""
    schema, table_name = split_name(name)
    if not sa.inspect(conn).has_table(table_name, schema=schema):
        if dry_run:
            return None
        definition = status_table_definition(name, source, keys, columns)
        if not create_missing:
            ddl = str(sa.schema.CreateTable(definition).compile(dialect=conn.dialect)).strip()
            raise PhoneStatusConfigError(
                f"status table {name!r} does not exist and create_columns is off; create it with: {ddl}"
            )
        create_table(conn, definition)
    status = reflect(conn, name)
    problems = [
        f"key column {k!r} is missing" if k not in status.c else _key_type_problem(status.c[k], source.c[k])
        for k in keys
    ]
    if found := [p for p in problems if p]:
        raise PhoneStatusConfigError(f"status table {name!r} exists but does not fit: {'; '.join(found)}")
    if not _unique_by(conn, status, set(keys), exactly=True):
        why = (
            f"status table {name!r} exists but does not fit: key columns {list(keys)} are not its primary "
            "key nor a unique constraint over exactly them"
        )
        if not portable:  # an upsert by the key needs the constraint
            raise PhoneStatusConfigError(f"{why}, so a status cannot be upserted by key")
        _check_no_repeats(conn, status, keys, why)  # the portable path deletes, then inserts by key
    return status


def status_table_definition(
    name: str, source: sa.Table, keys: Sequence[str], columns: StatusColumns
) -> sa.Table:
    """A new status table: the source's key columns (same names, same types) as primary key, then
    the status columns with their portable types."""
    key_copies = [copy_column(k, source.c[k], primary_key=True) for k in keys]
    for column in key_copies:
        column.nullable = False
    types = columns.types()
    return new_table(name, *key_copies, *(sa.Column(n, types[role]) for role, n in columns.names().items()))


def _key_type_problem(column: sa.Column[Any], source: sa.Column[Any]) -> str | None:
    if isinstance(source.type, sa.types.NullType):  # SQLite column declared without a type
        return None
    return check_type(column, source.type)


def _key_names(key_columns: str | Sequence[str]) -> tuple[str, ...]:
    keys = (key_columns,) if isinstance(key_columns, str) else tuple(key_columns)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise PhoneStatusConfigError("key_columns must be a column name or a non-empty list of names")
    if len(set(keys)) != len(keys):
        raise PhoneStatusConfigError(f"key_columns repeats a column: {list(keys)}")
    return keys


def _check_roles(table: sa.Table, keys: tuple[str, ...], phone: str, columns: StatusColumns) -> None:
    available = ", ".join(table.c.keys())
    for role, name in [*(("key", k) for k in keys), ("phone", phone)]:
        if not isinstance(name, str) or name not in table.c:
            raise PhoneStatusConfigError(
                f"{role} column {name!r} is not in table {table.fullname!r}; its columns: {available}"
            )
    status = list(columns.names().values())
    if len(set(status)) != len(status):
        raise PhoneStatusConfigError(f"two status columns share a name: {columns.names()}")
    if phone in keys:
        raise PhoneStatusConfigError(f"phone column {phone!r} is also a key column")
    if clash := [n for n in status if n in keys or n == phone]:
        raise PhoneStatusConfigError(f"status columns {clash} are also key or phone columns")


def _check_unique(
    conn: sa.Connection, table: sa.Table, keys: tuple[str, ...], *, count: bool = False
) -> None:
    """The key must contain the primary key, a unique constraint or a full unique index. With
    ``count`` (a source that is only read: dbt-built tables declare no keys), a key no constraint
    covers is accepted when no two rows share it now."""
    if _unique_by(conn, table, set(keys)):
        return
    why = (
        f"key columns {list(keys)} do not identify one row of {table.fullname!r}: they are not the "
        "primary key nor covered by a unique constraint or index"
    )
    if not count:
        raise PhoneStatusConfigError(
            f"{why}, so an update by them could write one number's status onto other rows"
        )
    _check_no_repeats(conn, table, keys, why)


def _check_no_repeats(conn: sa.Connection, table: sa.Table, keys: Sequence[str], why: str) -> None:
    """No two rows of ``table`` share a key now; ``why`` the key is checked by a query."""
    key_columns = [table.c[k] for k in keys]
    repeated = (
        sa.select(*key_columns)
        .where(*(k.is_not(None) for k in key_columns))
        .group_by(*key_columns)
        .having(sa.func.count() > 1)
        .limit(1)
    )
    if conn.execute(sa.select(sa.func.count()).select_from(repeated.subquery())).scalar_one():
        raise PhoneStatusConfigError(f"{why}, and some rows share a key: a status could not be told apart")
    conn.rollback()  # end the read transaction (MariaDB's shared locks, SQLite's read lock)


def _unique_by(conn: sa.Connection, table: sa.Table, keys: set[str], *, exactly: bool = False) -> bool:
    """Whether the primary key, a unique constraint or a full unique index lies within ``keys``
    (``exactly``: covers exactly ``keys``, as an upsert by them needs)."""
    inspector = sa.inspect(conn)
    candidates = [[c.name for c in table.primary_key.columns]]
    candidates += [uc["column_names"] for uc in inspector.get_unique_constraints(table.name, table.schema)]
    candidates += [
        [c for c in ix["column_names"] if c is not None]
        for ix in inspector.get_indexes(table.name, table.schema)
        if ix["unique"] and _plain_index(ix)
    ]
    return any(cols and (set(cols) == keys if exactly else set(cols) <= keys) for cols in candidates)


def _plain_index(index: ReflectedIndex) -> bool:
    """A unique index over plain columns on every row (no expression, no WHERE)."""
    options: Any = index.get("dialect_options", {})
    return None not in index["column_names"] and not any(k.endswith("_where") for k in options)


def _check_status_types(table: sa.Table, columns: StatusColumns) -> list[sa.Column[Any]]:
    """Check existing status columns; return the missing ones, typed, ready to be added."""
    missing: list[sa.Column[Any]] = []
    types = columns.types()
    for role, name in columns.names().items():
        if name not in table.c:
            missing.append(sa.Column(name, types[role]))
        elif problem := check_type(table.c[name], types[role], _MIN_LENGTHS.get(role, 0)):
            raise PhoneStatusConfigError(f"status column of table {table.fullname!r} is unusable: {problem}")
    return missing
