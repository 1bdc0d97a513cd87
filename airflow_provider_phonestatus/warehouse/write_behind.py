"""Write rows answered for free on a second connection while the run reads on.

On a server database most of a large store-only run is spent waiting for the server: the UPDATE of
each batch, its commit. Rows answered from the results store or labelled locally cost nothing to
redo, so their batches need not be committed before the run goes on: a second connection writes
one batch while the run parses the next pages and looks them up. Paid answers never go this way
(the caller writes them on its own connection and commits before it goes on), so a killed worker
still loses at most one batch of paid answers.

Used only where a second connection's writes cannot block the run's reads: PostgreSQL and MariaDB
(row locks, and the run reads only its own temporary table and the results store), not SQLite
(one writer locks the whole file).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import sqlalchemy as sa

from airflow_provider_phonestatus.warehouse.records import Answer, Row
from airflow_provider_phonestatus.warehouse.target import TargetTable
from airflow_provider_phonestatus.warehouse.writer import RowWriter

DIALECTS = ("postgresql", "mysql")


class WriteBehind:
    """One batch at a time, written and committed on a connection of its own, in one thread."""

    def __init__(self, engine: sa.Engine, target: TargetTable) -> None:
        self._engine = engine
        self._writer = RowWriter(target)  # its own staging table, on its own connection
        self._conn: sa.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phonestatus-write-behind")
        self._pending: Future[int] | None = None

    @classmethod
    def suits(cls, conn: sa.Connection) -> bool:
        return conn.dialect.name in DIALECTS

    def submit(self, groups: Sequence[tuple[Answer, Sequence[Row]]]) -> int:
        """Start writing ``groups`` (``RowWriter.write_groups``'s argument, no longer touched by the
        caller); first wait for the batch before, and return how many rows it wrote."""
        written = self.wait()
        self._pending = self._executor.submit(self._write, groups)
        return written

    def wait(self) -> int:
        """Wait for the batch being written; rows it wrote (0 if none). Raises its error."""
        pending, self._pending = self._pending, None
        return 0 if pending is None else pending.result()

    def close(self) -> None:
        """Stop the thread (after the batch being written) and close the connection."""
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, groups: Sequence[tuple[Answer, Sequence[Row]]]) -> int:
        if self._conn is None:
            self._conn = self._engine.connect()
        try:
            count = self._writer.write_groups(self._conn, groups)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        return count
