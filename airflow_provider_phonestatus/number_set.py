"""An exact set of national numbers whose memory stays flat however many numbers it holds.

A run remembers every distinct number it met (to count them, and to count a store answer once,
where its number was first met). A Python ``set`` of ints costs about 70 bytes per number (a
32-byte int object and a 16-byte hash slot at most 60 % full): 280 MB at four million numbers,
700 MB at ten million. :class:`NumberSet` keeps them in a private temporary SQLite database
(``sqlite3.connect("")``, standard library): a B-tree of about 11 bytes per number whose pages stay
in a page cache of at most :data:`CACHE_KIB` and beyond that in a temporary file, which the
operating system caches outside the process and SQLite deletes when the set is closed.

Numbers go in a page of rows at a time, as one JSON array that SQLite parses, sorts and inserts
in C (sorted, neighbouring numbers share B-tree pages); ``INSERT OR IGNORE`` and the connection's
change counter say how many were new: no Python bytecode per number, no int made per number.
Against the ``set`` of ints it replaced, passes interleaved on one machine: a million rows of
400,000 distinct numbers all fresh in the store took no longer (median of six, SQLite 13.5 s
against 14.1 s, PostgreSQL 17.0 s against 18.3 s); four million rows of four million distinct
numbers peaked at 191 MB instead of 423 MB and took 53 s instead of 50-52 s (``python -m bench
--only operator_rss``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

#: Upper bound of the set's page cache in KiB (SQLite's ``cache_size``, allocated as it fills).
CACHE_KIB = 32 * 1024
#: B-tree page size: large pages keep the tree shallow, so a page of sorted numbers touches few.
PAGE_BYTES = 16 * 1024
#: Numbers per statement where SQLite has no JSON functions (before 3.38 unless built with them).
_CHUNK = 500

_INSERT_JSON = "INSERT OR IGNORE INTO numbers SELECT value FROM json_each(?) ORDER BY 1"
_MEMBERS_JSON = "SELECT key FROM json_each(?) WHERE value IN (SELECT n FROM numbers)"
_INSERT_EACH = "INSERT OR IGNORE INTO numbers VALUES (?)"


class NumberSet:
    """Numbers given as strings of ASCII digits without a leading zero (national numbers, at most
    18 digits), held as integers. Nothing is opened before the first :meth:`add`; :meth:`close`
    deletes the database (the count stays readable). Not thread-safe: one run's thread uses it."""

    def __init__(self, cache_kib: int = CACHE_KIB) -> None:
        self._cache_kib = cache_kib
        self._db: sqlite3.Connection | None = None
        self._json = True  #: SQLite has json_each (set when opened)
        self._count = 0
        self._closed = False

    def __len__(self) -> int:
        return self._count

    def add(self, numbers: Collection[str]) -> int:
        """Add ``numbers``; return how many of them were not in the set (a repeat counts once)."""
        if not numbers:
            return 0
        db = self._open()
        before = db.total_changes
        if self._json:
            db.execute(_INSERT_JSON, (f"[{','.join(numbers)}]",))
        else:
            db.execute("BEGIN")
            try:
                db.executemany(_INSERT_EACH, ((int(n),) for n in sorted(numbers)))
            finally:
                db.execute("COMMIT")
        added = db.total_changes - before
        self._count += added
        return added

    def members(self, numbers: Sequence[str]) -> list[str]:
        """Those of ``numbers`` that are in the set, in their order."""
        if not numbers or not self._count:
            return []
        db = self._open()
        if self._json:
            found = db.execute(_MEMBERS_JSON, (f"[{','.join(numbers)}]",))
            return [numbers[index] for (index,) in found]
        present: set[int] = set()
        for start in range(0, len(numbers), _CHUNK):
            chunk = [int(n) for n in numbers[start : start + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            present.update(n for (n,) in db.execute(f"SELECT n FROM numbers WHERE n IN ({marks})", chunk))
        return [n for n in numbers if int(n) in present]

    def __contains__(self, number: object) -> bool:
        return isinstance(number, str) and bool(self.members([number]))

    def close(self) -> None:
        """Delete the database (SQLite removes its temporary file)."""
        self._closed = True
        if self._db is not None:
            self._db.close()
            self._db = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            if self._closed:
                raise RuntimeError("the number set was closed")
            # Autocommit; a scratch database: no journal, no sync, no other connection.
            db = sqlite3.connect("", isolation_level=None)
            db.execute(f"PRAGMA page_size = {PAGE_BYTES}")
            db.execute(f"PRAGMA cache_size = -{self._cache_kib}")
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            db.execute("CREATE TABLE numbers (n INTEGER PRIMARY KEY)")  # the rowid: one B-tree
            try:
                db.execute("SELECT json_valid('[1]')")
            except sqlite3.OperationalError:
                self._json = False
            self._db = db
        return self._db
