"""The user's table: found and checked by reflection, never trusted by name.

Every later query quotes names through SQLAlchemy from the reflected ``sa.Table``, so a name that
is not in the database never reaches SQL. The key must identify one row: updating by a key that
is not unique would write one number's status onto other people's rows. Status columns are added
with ``ALTER TABLE`` when missing; indexes are never created on a user's table.

Also here, because several modules need them: type checks, batched inserts and per-connection
temporary tables.
"""

from __future__ import annotations

import copy
import difflib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import ReflectedIndex
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.vocabulary import Carrier, PhoneStatus
from airflow_provider_phonestatus.warehouse.columns import StatusColumns

#: Shortest text column that can hold every value of a role's vocabulary.
_MIN_LENGTHS = {
    "status": max(len(s.value) for s in PhoneStatus),
    "carrier": max(len(c.value) for c in Carrier),
}
#: Type families: an existing column must be of the family of the type it stands in for.
_FAMILIES: tuple[type[sa.types.TypeEngine[Any]], ...] = (sa.Boolean, sa.DateTime, sa.Integer, sa.String)
_MAX_SUGGESTIONS = 10


@dataclass(frozen=True)
class TargetTable:
    """The reflected user table with its key, phone and status columns checked."""

    table: sa.Table
    key_columns: tuple[str, ...]
    phone_column: str
    columns: StatusColumns
    missing: tuple[str, ...] = ()  #: status column names absent (dry run only)

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
    ) -> TargetTable:
        """Reflect ``name``, check every name against it, add missing status columns (committed)."""
        keys = _key_names(key_columns)
        table = reflect(conn, name)
        _check_roles(table, keys, phone_column, columns)
        _check_unique(conn, table, keys)
        missing = _check_status_types(table, columns)
        if missing and not create_missing:
            names = ", ".join(c.name for c in missing)
            ddl = "; ".join(str(_AddColumn(table, c).compile(dialect=conn.dialect)) for c in missing)
            raise PhoneStatusConfigError(
                f"table {name!r} lacks status columns {names} and create_missing is off; add them with: {ddl}"
            )
        if missing and not dry_run:
            _add_columns(conn, table, missing)
            table = reflect(conn, name)
            missing = _check_status_types(table, columns)
        return cls(table, keys, phone_column, columns, tuple(c.name for c in missing))

    def column(self, role: str) -> sa.ColumnElement[Any]:
        """The status column of ``role`` ("status", "checked_at", ...), or NULL when missing."""
        name = self.columns.names()[role]
        return self.table.c[name] if name in self.table.c else sa.null()

    @property
    def keys(self) -> list[sa.Column[Any]]:
        return [self.table.c[k] for k in self.key_columns]

    @property
    def phone(self) -> sa.Column[Any]:
        return self.table.c[self.phone_column]

    def key_of(self, row: Any) -> tuple[Any, ...]:
        """The key of a result row (``sa.Row`` or mapping), in ``key_columns`` order."""
        mapping = getattr(row, "_mapping", row)
        return tuple(mapping[k] for k in self.key_columns)


def reflect(conn: sa.Connection, name: str) -> sa.Table:
    """The table ``name`` (``table`` or ``schema.table``) as it is now, or an error with suggestions."""
    schema, table_name = split_name(name)
    inspector = sa.inspect(conn)
    if schema is not None and schema not in inspector.get_schema_names():
        raise PhoneStatusConfigError(
            f"schema {schema!r} does not exist{_suggest(schema, inspector.get_schema_names())}"
        )
    if not inspector.has_table(table_name, schema=schema):
        where = f" in schema {schema!r}" if schema else ""
        raise PhoneStatusConfigError(
            f"table {name!r} does not exist{where}"
            f"{_suggest(table_name, inspector.get_table_names(schema=schema))}"
        )
    return sa.Table(table_name, sa.MetaData(), schema=schema, autoload_with=conn, resolve_fks=False)


def split_name(name: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); on MariaDB the schema is the database."""
    parts = name.split(".") if isinstance(name, str) else []
    if len(parts) == 1 and parts[0]:
        return None, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise PhoneStatusConfigError(f"table name {name!r} must be 'table' or 'schema.table'")


def new_table(name: str, *columns: sa.Column[Any], **kw: Any) -> sa.Table:
    """A table of the provider's own (results store, run log); ``name`` may be ``schema.table``."""
    schema, table_name = split_name(name)
    return sa.Table(table_name, sa.MetaData(), *columns, schema=schema, **kw)


def check_type(column: sa.Column[Any], expected: sa.types.TypeEngine[Any], min_length: int = 0) -> str | None:
    """Why ``column`` cannot hold values of ``expected``, or None when it can."""
    family = next((f for f in _FAMILIES if isinstance(expected, f)), None)
    actual = column.type
    accepted: tuple[type[Any], ...] = (family or object,)
    if family is sa.Boolean:  # MariaDB's BOOL is TINYINT(1)
        accepted = (sa.Boolean, sa.Integer)
    if isinstance(actual, sa.types.NullType) or not isinstance(actual, accepted):
        return f"column {column.name!r} is {actual!r}, expected a {expected!r}-like type"
    length = getattr(actual, "length", None)
    if min_length and isinstance(actual, sa.String) and length is not None and length < min_length:
        return f"column {column.name!r} is {actual!r}, too short: it needs {min_length} characters"
    return None


def bulk_insert(
    conn: sa.Connection, insert: sa.Insert, names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[sa.Insert, Any]:
    """``insert`` of ``rows`` (values in ``names`` order) as one batched statement, and its parameters.

    PostgreSQL: one ``INSERT ... SELECT unnest(:array), ...`` with one array per column, measured
    twice as fast as psycopg's pipelined executemany. Elsewhere an executemany, which SQLite runs
    in-process and MySQLdb rewrites into multi-row VALUES.
    """
    if conn.dialect.name == "postgresql":
        table = insert.table
        arrays = [
            sa.func.unnest(sa.bindparam(f"a_{i}", type_=postgresql.ARRAY(table.c[name].type)))
            for i, name in enumerate(names)
        ]
        params = {f"a_{i}": list(column) for i, column in enumerate(zip(*rows, strict=True))}
        return insert.from_select(list(names), sa.select(*arrays)), params
    return insert, [dict(zip(names, row, strict=True)) for row in rows]


def fetch_all(conn: sa.Connection, statement: sa.Select[Any], params: Mapping[str, Any]) -> Sequence[Any]:
    """Every row of ``statement``: the driver's own tuples when no selected column has SQLAlchemy
    convert what the driver returns (a Row object per row costs more than the database's reading
    of it, for the millions of rows a refresh reads), SQLAlchemy's rows otherwise."""
    result = conn.execute(statement, params)
    dialect = conn.dialect
    if isinstance(result, sa.CursorResult) and not any(
        _converts(column.type, dialect) for column in statement.selected_columns
    ):
        rows: Sequence[Any] = result.cursor.fetchall()
        result.close()
        return rows
    return result.all()


def _converts(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> bool:
    """Whether SQLAlchemy converts what the driver returns for ``column_type`` (when it cannot
    tell without the driver's own type code, assume it does)."""
    try:
        return column_type.dialect_impl(dialect).result_processor(dialect, None) is not None
    except Exception:
        return True


def text_lengths(columns: Iterable[sa.Column[Any]]) -> dict[str, int]:
    """Column name -> length of each bounded text column: longer values are cut before writing."""
    return {c.name: c.type.length for c in columns if isinstance(c.type, sa.String) and c.type.length}


def copy_column(name: str, source: sa.Column[Any], *, primary_key: bool = False) -> sa.Column[Any]:
    """A column for a temporary table holding values of ``source``, of the same type."""
    type_: sa.types.TypeEngine[Any] = source.type
    if isinstance(type_, sa.types.NullType):  # SQLite column declared without a type
        type_ = _UNTYPED
    elif hasattr(type_, "create_type"):  # PostgreSQL ENUM/DOMAIN: exists already, never create it
        type_ = copy.copy(type_)
        setattr(type_, "create_type", False)  # noqa: B010
    return sa.Column(name, type_, primary_key=primary_key, autoincrement=False)


def temporary_table(conn: sa.Connection, prefix: str, columns: Iterable[sa.Column[Any]]) -> sa.Table:
    """Create a TEMPORARY table with a unique name: private to ``conn``, kept across commits."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    table = sa.Table(name, sa.MetaData(), *columns, prefixes=["TEMPORARY"])
    table.create(conn)
    return table


def drop_temporary(conn: sa.Connection, table: sa.Table) -> None:
    """Drop a table made by :func:`temporary_table` (on MariaDB without an implicit commit)."""
    conn.execute(_DropTemporary(table))


class _DropTemporary(ExecutableDDLElement):
    def __init__(self, table: sa.Table) -> None:
        self.table = table


@compiles(_DropTemporary)
def _compile_drop(element: _DropTemporary, compiler: DDLCompiler, **kw: Any) -> str:
    temporary = " TEMPORARY" if compiler.dialect.name == "mysql" else ""
    return f"DROP{temporary} TABLE IF EXISTS {compiler.preparer.format_table(element.table)}"


class _Blob(sa.types.UserDefinedType[Any]):
    """SQLite's typeless column: BLOB affinity stores every value unconverted."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "BLOB"


_UNTYPED: sa.types.TypeEngine[Any] = sa.Text().with_variant(_Blob(), "sqlite")


class _AddColumn(ExecutableDDLElement):
    """``ALTER TABLE t ADD COLUMN c TYPE`` with names quoted and the type compiled per dialect."""

    def __init__(self, table: sa.Table, column: sa.Column[Any]) -> None:
        self.table = table
        self.column = column


@compiles(_AddColumn)
def _compile_add_column(element: _AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    preparer = compiler.preparer
    type_ = compiler.dialect.type_compiler_instance.process(element.column.type)
    return (
        f"ALTER TABLE {preparer.format_table(element.table)} "
        f"ADD COLUMN {preparer.quote(element.column.name)} {type_}"
    )


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


def _check_unique(conn: sa.Connection, table: sa.Table, keys: tuple[str, ...]) -> None:
    """The key must contain the primary key, a unique constraint or a full unique index."""
    inspector = sa.inspect(conn)
    candidates = [[c.name for c in table.primary_key.columns]]
    candidates += [uc["column_names"] for uc in inspector.get_unique_constraints(table.name, table.schema)]
    candidates += [
        [c for c in ix["column_names"] if c is not None]
        for ix in inspector.get_indexes(table.name, table.schema)
        if ix["unique"] and _plain_index(ix)
    ]
    if not any(cols and set(cols) <= set(keys) for cols in candidates):
        raise PhoneStatusConfigError(
            f"key columns {list(keys)} do not identify one row of {table.fullname!r}: they are not the "
            "primary key nor covered by a unique constraint or index, so an update by them could write "
            "one number's status onto other rows"
        )


def _plain_index(index: ReflectedIndex) -> bool:
    """A unique index over plain columns on every row (no expression, no WHERE)."""
    options: Mapping[str, Any] = index.get("dialect_options", {})
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


def _add_columns(conn: sa.Connection, table: sa.Table, missing: list[sa.Column[Any]]) -> None:
    """One committed ALTER per column: SQLite cannot add several at once, MariaDB commits anyway."""
    for column in missing:
        try:
            if conn.dialect.name == "postgresql":  # queue behind a long query briefly, not for hours
                conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
            conn.execute(_AddColumn(table, column))
            conn.commit()
        except sa.exc.DBAPIError as exc:  # a parallel task may have added it first
            conn.rollback()
            if column.name not in reflect(conn, table.fullname).c:
                raise PhoneStatusConfigError(
                    f"could not add column {column.name!r} to {table.fullname!r}: {exc.orig}"
                ) from exc


def _suggest(name: str, candidates: Iterable[str]) -> str:
    """ "; similar: a, b" for up to ten names close to ``name`` (case ignored), else ""."""
    by_lower: dict[str, list[str]] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), []).append(candidate)
    close = difflib.get_close_matches(name.lower(), by_lower, n=_MAX_SUGGESTIONS, cutoff=0.5)
    similar = [c for lower in close for c in by_lower[lower]][:_MAX_SUGGESTIONS]
    return f"; similar: {', '.join(similar)}" if similar else ""
