"""The provider's own tables (results store, run log): defined here, created when missing.

Each is created on first use (committed) and checked against its definition when it exists, so a
table of the same name that does not fit fails clearly instead of losing data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.warehouse.table import add_columns, check_type, create_table, reflect

#: ``Column.info`` key of a column a later version added to a table: ``ensure`` adds it to an
#: existing table (its rows keep every value; the new column is NULL or its server default).
ADDED_LATER = "phonestatus_added_later"


def added_later(column: sa.Column[Any]) -> sa.Column[Any]:
    """Mark ``column`` (nullable, or with a server default) as added by a later version."""
    if column.primary_key or not (column.nullable or column.server_default is not None):
        raise ValueError(f"column {column.name!r} cannot be added to a table with rows")
    column.info[ADDED_LATER] = True
    return column


#: Naive UTC with microseconds everywhere (MariaDB's plain DATETIME drops them).
TIMESTAMP: sa.types.TypeEngine[dt.datetime] = sa.DateTime().with_variant(
    mysql.DATETIME(fsp=6), "mysql", "mariadb"
)


def ensure_table(conn: sa.Connection, table: sa.Table) -> sa.Table:
    """Create one of the provider's own tables (store, run log, ledger) if missing (committed),
    else check it: every column must fit, and those a later version added (:func:`added_later`)
    are added when missing (committed)."""
    name = table.fullname
    if not sa.inspect(conn).has_table(table.name, schema=table.schema):
        create_table(conn, table)  # or a parallel task created it meanwhile: check that one
    existing = reflect(conn, name)
    added = [c for c in table.columns if c.name not in existing.c and c.info.get(ADDED_LATER)]
    problems = [
        check_type(existing.c[c.name], c.type) if c.name in existing.c else f"column {c.name!r} is missing"
        for c in table.columns
        if c not in added
    ]
    if found := [p for p in problems if p]:
        raise PhoneStatusConfigError(f"table {name!r} exists but does not fit: {'; '.join(found)}")
    if added:  # only to a table that fits otherwise: never alter a table that is not ours
        add_columns(conn, existing, [_copy(c) for c in added])
    return table


def _copy(column: sa.Column[Any]) -> sa.Column[Any]:
    default = column.server_default
    return sa.Column(column.name, column.type, server_default=getattr(default, "arg", None))


class OwnedTable:
    """One of the provider's own tables, by its definition ``define(name)``."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table

    @staticmethod
    def define(name: str) -> sa.Table:
        raise NotImplementedError

    @classmethod
    def ensure(cls, conn: sa.Connection, name: str, **kw: Any) -> Self:
        """The table ``name``, created (and committed) if missing, checked if it exists; ``kw`` go
        to the constructor."""
        return cls(ensure_table(conn, cls.define(name)), **kw)
