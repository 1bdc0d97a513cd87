"""Tables by reflection, never trusted by name, and the statements every table of a run shares.

Every later query quotes names through SQLAlchemy from the reflected ``sa.Table``, so a name that
is not in the database never reaches SQL. Also here, because several modules need them: type
checks, added columns, batched inserts and per-connection temporary tables.
"""

from __future__ import annotations

import copy
import difflib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.warehouse import grants

#: Type families: an existing column must be of the family of the type it stands in for.
_FAMILIES: tuple[type[sa.types.TypeEngine[Any]], ...] = (sa.Boolean, sa.DateTime, sa.Integer, sa.String)
_MAX_SUGGESTIONS = 10


def reflect(conn: sa.Connection, name: str) -> sa.Table:
    """The table ``name`` (``table`` or ``schema.table``) as it is now, or an error with suggestions."""
    schema, table_name = split_name(name)
    inspector = sa.inspect(conn)
    if schema is not None and not inspector.has_schema(schema):
        # DuckDB names schemas catalog.schema: suggest what a user would write
        schemas = {name.rpartition(".")[2] for name in inspector.get_schema_names()}
        raise PhoneStatusConfigError(f"schema {schema!r} does not exist{_suggest(schema, schemas)}")
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


def create_table(conn: sa.Connection, table: sa.Table) -> None:
    """Create ``table`` (committed); a parallel task that created it first is no error, a
    missing privilege is, with what to grant."""
    try:
        table.create(conn)
        conn.commit()
    except sa.exc.DBAPIError as exc:
        conn.rollback()
        if sa.inspect(conn).has_table(table.name, schema=table.schema):
            return
        schema = grants.schema_of(conn, table.schema)
        on = f"DATABASE {schema}" if conn.dialect.name == "mysql" else f"SCHEMA {schema}"
        hint = grants.grant_hint(conn, "CREATE", on)
        raise PhoneStatusConfigError(f"cannot create table {table.fullname!r}: {exc.orig}{hint}") from exc


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
    conn: sa.Connection,
    insert: sa.Insert,
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    portable: bool = False,
) -> tuple[sa.Insert, Any]:
    """``insert`` of ``rows`` (values in ``names`` order) as one batched statement, and its parameters.

    PostgreSQL: one ``INSERT ... SELECT unnest(:array), ...`` with one array per column, measured
    twice as fast as psycopg's pipelined executemany. DuckDB: the same with each column as one JSON
    text (:func:`json_columns`). Elsewhere, and with ``portable``, an executemany, which SQLite
    runs in-process and MySQLdb rewrites into multi-row VALUES.
    """
    dialect = conn.dialect.name
    if dialect in ("postgresql", "duckdb") and not portable:
        table = insert.table
        if dialect == "duckdb":
            selected, texts = json_columns([table.c[name].type for name in names], rows)
            return insert.from_select(list(names), sa.select(*selected)), texts
        arrays = [
            sa.func.unnest(sa.bindparam(f"a_{i}", type_=postgresql.ARRAY(table.c[name].type)))
            for i, name in enumerate(names)
        ]
        params = {f"a_{i}": list(column) for i, column in enumerate(zip(*rows, strict=True))}
        return insert.from_select(list(names), sa.select(*arrays)), params
    return insert, [dict(zip(names, row, strict=True)) for row in rows]


def json_columns(
    types: Sequence[sa.types.TypeEngine[Any]], rows: Sequence[Sequence[Any]]
) -> tuple[list[sa.ColumnElement[Any]], dict[str, str]]:
    """DuckDB: ``rows`` as one JSON text parameter per column, unnested and cast to ``types``.

    DuckDB binds a Python list parameter item by item (100,000 values took 7 s, measured with
    duckdb 1.5); it parses a JSON array of them in milliseconds. Values go as JSON (dates, decimals
    and times as ``str`` writes them; DuckDB reads a JSON ``true`` as the text ``true``) and are
    cast to the column's type in SQL.
    """
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in types]
    # a column of one value on every row (NULL history, a false flag) is bound once, not unnested,
    # as long as another column is unnested (it makes the rows)
    same = [len(c) > 1 and c.count(c[0]) == len(c) for c in columns]
    if all(same):
        same[0] = False
    selected: list[sa.ColumnElement[Any]] = []
    params: dict[str, Any] = {}
    for i, (column_type, column) in enumerate(zip(types, columns, strict=True)):
        name = f"j_{i}"
        if same[i]:
            selected.append(sa.cast(sa.bindparam(name, type_=column_type), column_type))
            params[name] = column[0]
            continue
        selected.append(sa.cast(sa.func.unnest(json_texts(sa.bindparam(name, type_=sa.Text))), column_type))
        params[name] = json.dumps(list(column), default=str)
    return selected, params


def json_texts(parameter: sa.BindParameter[str]) -> sa.ColumnElement[Any]:
    """DuckDB: a JSON array parameter as a list of VARCHAR, for ``unnest``."""
    return sa.func.from_json(parameter, '["VARCHAR"]', type_=postgresql.ARRAY(sa.String))


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
    default = compiler.get_column_default_string(element.column)
    return (
        f"ALTER TABLE {preparer.format_table(element.table)} "
        f"ADD COLUMN {preparer.quote(element.column.name)} {type_}"
        + ("" if default is None else f" DEFAULT {default}")
    )


def add_column_ddl(table: sa.Table, columns: Iterable[sa.Column[Any]], dialect: sa.Dialect) -> str:
    """The ``ALTER TABLE ... ADD COLUMN`` statements that add ``columns``, for an error message."""
    return "; ".join(str(_AddColumn(table, c).compile(dialect=dialect)) for c in columns)


def add_columns(conn: sa.Connection, table: sa.Table, missing: Iterable[sa.Column[Any]]) -> None:
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
                    f"could not add column {column.name!r} to {table.fullname!r}: {exc.orig}; its "
                    f"owner can add it with: {add_column_ddl(table, [column], conn.dialect)}"
                ) from exc


def _suggest(name: str, candidates: Iterable[str]) -> str:
    """ "; similar: a, b" for up to ten names close to ``name`` (case ignored), else ""."""
    by_lower: dict[str, list[str]] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), []).append(candidate)
    close = difflib.get_close_matches(name.lower(), by_lower, n=_MAX_SUGGESTIONS, cutoff=0.5)
    similar = [c for lower in close for c in by_lower[lower]][:_MAX_SUGGESTIONS]
    return f"; similar: {', '.join(similar)}" if similar else ""
