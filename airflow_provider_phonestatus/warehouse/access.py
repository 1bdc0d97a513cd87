"""Know before paying: the dialect is one we test, and the run's login may do all the run will do.

A run that pays for answers and then cannot write them has lost money. So before the first
request every statement kind the run needs is tried once on zero rows (read the source and the
status table, make a temporary table, insert and update the status, results store and run log
tables), then rolled back. The databases check privileges when a statement starts, whatever it
then touches, so a zero-row statement fails exactly where the real one would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.warehouse import grants
from airflow_provider_phonestatus.warehouse.table import drop_temporary, temporary_table
from airflow_provider_phonestatus.warehouse.target import TargetTable

#: SQLAlchemy dialect name -> the databases the project's tests run on it.
TESTED_DIALECTS = {
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
    "mysql": "MariaDB (MySQL shares the dialect)",
    "duckdb": "DuckDB",
}


def portable_path(dialect: sa.Dialect, portable_sql: bool) -> bool:
    """Whether the run must use portable statements only: asked for, or needed on a dialect the
    project does not test, which is refused unless asked for."""
    if dialect.name in TESTED_DIALECTS:
        return portable_sql
    if not portable_sql:
        tested = ", ".join(f"{name!r} ({db})" for name, db in TESTED_DIALECTS.items())
        raise PhoneStatusConfigError(
            f"the warehouse's SQLAlchemy dialect {dialect.name!r} is not tested by this provider (tested: "
            f"{tested}); set portable_sql=True to run it with portable statements only, at your own risk"
        )
    return True


@dataclass(frozen=True)
class _Probe:
    what: str  #: "read", "write", ...
    table: str  #: what the GRANT is on
    privileges: str
    statement: Callable[[sa.Connection], Any]


def check_access(
    conn: sa.Connection,
    target: TargetTable,
    owned: list[sa.Table],
    *,
    writes: bool,
    deletes: bool = False,
    prune: bool = False,
    appended: Sequence[sa.Table] = (),
) -> None:
    """Try every statement kind the run needs on zero rows; raise one error naming each one that
    fails and what to grant. ``owned``: the provider's own tables the run writes (results store,
    run log); ``writes``: not a dry run; ``deletes``: the portable path's DELETE before INSERT;
    ``prune``: the status table's rows whose key left the source are deleted; ``appended``: tables
    the run only inserts into (the lookup ledger, which may be append-only)."""
    status = [target.column(role) for role in target.columns.names()]
    source = sa.select(*target.keys, target.phone).limit(0)
    probes = [_Probe("read", target.table.fullname, "SELECT", lambda c: c.execute(source))]
    if target.status_table is not None:
        status_read = sa.select(*status).select_from(target.status_table).limit(0)
        probes.append(
            _Probe("read", target.status_table.fullname, "SELECT", lambda c: c.execute(status_read))
        )
    probes.append(_Probe("create temporary tables", "", "TEMPORARY", _temporary))
    if writes:
        for table in [target.written, *owned]:
            inserts = table is not target.table  # in place, the user's rows are only updated
            deleted = (deletes and inserts) or (prune and table is target.status_table)
            columns = [target.written.c[c.name] for c in status] if not inserts else _updated(table)
            kinds = ["SELECT", "UPDATE", *(["INSERT"] if inserts else []), *(["DELETE"] if deleted else [])]
            probes.append(
                _Probe("write", table.fullname, ", ".join(kinds), _writes(table, columns, inserts, deleted))
            )
        for table in appended:
            probes.append(_Probe("write", table.fullname, "INSERT", _writes(table, [], True, False)))
    problems = []
    for probe in probes:
        try:
            probe.statement(conn)
        except sa.exc.DBAPIError as exc:
            conn.rollback()
            where = f"cannot {probe.what} {probe.table}".rstrip()
            problems.append(f"{where}: {_first_line(exc)}{_hint(conn, probe)}")
    conn.rollback()
    if problems:
        raise PhoneStatusConfigError(
            "the run would fail after paying, so it sent nothing: " + "; ".join(dict.fromkeys(problems))
        )


def _temporary(conn: sa.Connection) -> None:
    table = temporary_table(conn, "phonestatus_probe", [sa.Column("x", sa.Integer)])
    drop_temporary(conn, table)


def _updated(table: sa.Table) -> list[sa.Column[Any]]:
    return [c for c in table.columns if not c.primary_key] or list(table.columns)


def _writes(
    table: sa.Table, columns: list[sa.Column[Any]], inserts: bool, deletes: bool
) -> Callable[[sa.Connection], None]:
    """Zero-row UPDATE of ``columns`` (to themselves; none: no UPDATE), INSERT ... SELECT and
    DELETE of ``table``."""

    def run(conn: sa.Connection) -> None:
        if columns:
            conn.execute(sa.update(table).values({c: c for c in columns}).where(sa.false()))
        if inserts:  # of typed NULLs: an append-only table is not readable
            names = [c.name for c in table.columns]
            nothing = sa.select(*(sa.cast(sa.null(), c.type) for c in table.columns)).where(sa.false())
            conn.execute(sa.insert(table).from_select(names, nothing))
        if deletes:
            conn.execute(sa.delete(table).where(sa.false()))

    return run


def _hint(conn: sa.Connection, probe: _Probe) -> str:
    if probe.privileges != "TEMPORARY":
        return grants.grant_hint(conn, probe.privileges, probe.table)
    if conn.dialect.name == "mysql":
        database = grants.schema_of(conn, None)
        return grants.grant_hint(conn, "CREATE TEMPORARY TABLES", f"{database}.*")
    database = conn.engine.url.database or "<database>"
    return grants.grant_hint(conn, "TEMPORARY", f"DATABASE {database}")


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
