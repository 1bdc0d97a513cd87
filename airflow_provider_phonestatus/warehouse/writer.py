"""Write lookup results back into the user's table, a batch at a time, by key.

A failed lookup says nothing about the number, so it is never written: an earlier good status
stays. Each batch costs a fixed number of statements whatever its size: SQLite runs one
``executemany`` UPDATE in-process; PostgreSQL and MariaDB receive the batch into a temporary
staging table (one batched INSERT) and apply it with one joined UPDATE, instead of a network round
trip per row. The caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError
from airflow_provider_phonestatus.revalidation import to_naive_utc
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult
from airflow_provider_phonestatus.warehouse.table import (
    TargetTable,
    bulk_insert,
    copy_column,
    temporary_table,
    text_lengths,
)

_STAGED_DIALECTS = ("postgresql", "mysql")
#: The status columns written, in the order of :meth:`RowWriter._record`'s values.
_ROLES = ("status", "code", "carrier", "ported", "checked_at", "order_no", "checked_value")


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """The result for one row; ``phone_text`` is the row's ``DueRow.phone_text``."""

    key: tuple[Any, ...]
    phone_text: str | None
    result: PhoneStatusResult


class RowWriter:
    """Writes status columns of one :class:`TargetTable`; keeps a staging table per connection."""

    def __init__(self, target: TargetTable) -> None:
        if target.missing:
            raise PhoneStatusConfigError(
                f"cannot write: status columns {', '.join(target.missing)} do not exist (dry run)"
            )
        self._target = target
        names = target.columns.names()
        if set(names) != set(_ROLES):  # a role added to StatusColumns must be written here too
            raise RuntimeError(f"RowWriter writes roles {_ROLES}, StatusColumns has {tuple(names)}")
        self._names = {role: names[role] for role in _ROLES}  # role -> column name
        lengths = text_lengths(target.table.columns)
        self._lengths = [(i, lengths[n]) for i, n in enumerate(self._names.values()) if n in lengths]
        #: value names of a record: the roles, then k0, k1, ... for the key
        self._fields = [*self._names, *(f"k{i}" for i in range(len(target.key_columns)))]
        self._stage: sa.Table | None = None
        self._stage_conn: sa.Connection | None = None

    def write(self, conn: sa.Connection, rows: Sequence[RowUpdate]) -> int:
        """Write the answers among ``rows`` (last one wins per key); return rows updated."""
        batch = list({r.key: self._record(r) for r in rows if r.result.is_answer}.values())
        if not batch:
            return 0
        if conn.dialect.name in _STAGED_DIALECTS:
            try:
                count = self._write_staged(conn, batch)
            except BaseException:
                self._stage = None  # its creation may be rolled back with the batch: make a new one
                raise
        else:
            count = self._write_each(conn, batch)
        return count if count >= 0 else len(batch)

    def _record(self, row: RowUpdate) -> tuple[Any, ...]:
        """The values of :attr:`_fields` for one row; text cut to its column's length."""
        if len(row.key) != len(self._target.key_columns):
            raise ValueError(f"key {row.key!r} does not match key columns {self._target.key_columns}")
        result = row.result
        values: list[Any] = [
            result.status.value,
            result.vendor_code,
            None if result.carrier is None else result.carrier.value,
            result.ported,
            to_naive_utc(result.checked_at),
            result.order_no,
            row.phone_text,
        ]
        for i, length in self._lengths:
            if isinstance(text := values[i], str) and len(text) > length:
                values[i] = text[:length]
        return (*values, *row.key)

    def _write_each(self, conn: sa.Connection, batch: list[tuple[Any, ...]]) -> int:
        """One executemany UPDATE by key: in-process on SQLite, so as fast as it gets."""
        table = self._target.table
        params = _free_names(table, self._fields)
        statement = (
            sa.update(table)
            .where(*(k == sa.bindparam(params[f"k{i}"]) for i, k in enumerate(self._target.keys)))
            .values({table.c[name]: sa.bindparam(params[role]) for role, name in self._names.items()})
        )
        names = [params[f] for f in self._fields]
        return conn.execute(statement, [dict(zip(names, row, strict=True)) for row in batch]).rowcount

    def _write_staged(self, conn: sa.Connection, batch: list[tuple[Any, ...]]) -> int:
        """One batched INSERT into the staging table, one joined UPDATE, then empty the stage."""
        stage = self._staging(conn)
        conn.execute(*bulk_insert(conn, sa.insert(stage), self._fields, batch))
        table = self._target.table
        statement = (
            sa.update(table)
            .values({table.c[name]: stage.c[role] for role, name in self._names.items()})
            .where(*(k == stage.c[f"k{i}"] for i, k in enumerate(self._target.keys)))
        )
        count = conn.execute(statement).rowcount
        if conn.dialect.name == "postgresql":  # DELETE would leave dead rows no vacuum ever visits
            conn.exec_driver_sql(f"TRUNCATE {conn.dialect.identifier_preparer.format_table(stage)}")
        else:  # MariaDB: TRUNCATE would commit the caller's transaction
            conn.execute(sa.delete(stage))
        return count

    def _staging(self, conn: sa.Connection) -> sa.Table:
        if self._stage is None or self._stage_conn is not conn:
            table = self._target.table
            self._stage = temporary_table(
                conn,
                "phonestatus_stage",
                [
                    *(copy_column(role, table.c[name]) for role, name in self._names.items()),
                    *(copy_column(f"k{i}", k) for i, k in enumerate(self._target.keys)),
                ],
            )
            self._stage_conn = conn
        return self._stage


def _free_names(table: sa.Table, names: list[str]) -> dict[str, str]:
    """Bind parameter names that no column of ``table`` has (SQLAlchemy reserves those)."""
    prefix = "ps_"
    while any(column.name.startswith(prefix) for column in table.c):
        prefix = f"_{prefix}"
    return {name: f"{prefix}{name}" for name in names}
