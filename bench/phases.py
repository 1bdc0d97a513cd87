"""Where a benchmarked refresh spends its CPU: per phase, and in the cyclic garbage collector.

:func:`phase_cpu` wraps the classes' methods for the duration of a block (a few hundred calls) and
counts the CPU of the thread each call runs in; :func:`describe_phases` prints the split.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Key of :func:`phase_cpu`'s dict for the collector's CPU (inside the phases, not one of them).
GC = "gc"


@contextmanager
def phase_cpu() -> Iterator[dict[str, float]]:
    """CPU seconds of this process spent in the refresh's phases while inside the block: due
    selection (``DueList.create``), reading due pages, results-store lookups, row writes (incl.
    the database's own work for SQLite, which runs in-process); the rest of the pass is number
    parsing and bookkeeping. Each phase counts the CPU of the thread it runs in (writes run in the
    write-behind thread on PostgreSQL). Under :data:`GC`: the CPU of the garbage collector's
    passes, whichever phase they interrupted."""
    from airflow_provider_phonestatus.warehouse.due import DueList
    from airflow_provider_phonestatus.warehouse.store import ResultStore
    from airflow_provider_phonestatus.warehouse.writer import RowWriter

    spent: dict[str, float] = {"due list": 0.0, "pages": 0.0, "store": 0.0, "writes": 0.0, GC: 0.0}
    originals = [
        (DueList, "create", "due list"),
        (ResultStore, "fresh_values", "store"),
        (RowWriter, "write_groups", "writes"),
    ]
    saved: list[tuple[Any, str, Any]] = []
    for owner, name, label in originals:
        function = owner.__dict__[name]
        saved.append((owner, name, function))
        setattr(owner, name, _timed(function, spent, label))
    raw_pages = DueList.__dict__["raw_pages"]
    saved.append((DueList, "raw_pages", raw_pages))

    def timed_pages(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        pages = raw_pages(self, *args, **kwargs)
        while True:
            started = time.thread_time()
            try:
                page = next(pages)
            except StopIteration:
                return
            finally:
                spent["pages"] += time.thread_time() - started
            yield page

    collection_started = 0.0  # one collection at a time, wholly in the thread that started it

    def collector(phase: str, info: dict[str, Any]) -> None:
        nonlocal collection_started
        if phase == "start":
            collection_started = time.thread_time()
        else:
            spent[GC] += time.thread_time() - collection_started

    DueList.raw_pages = timed_pages  # type: ignore[method-assign]
    gc.callbacks.append(collector)
    try:
        yield spent
    finally:
        gc.callbacks.remove(collector)
        for owner, name, function in saved:
            setattr(owner, name, function)


def _timed(function: Any, spent: dict[str, float], label: str) -> Any:
    unwrapped = function.__func__ if isinstance(function, classmethod) else function

    @functools.wraps(unwrapped)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return unwrapped(*args, **kwargs)
        finally:
            spent[label] += time.thread_time() - started

    return classmethod(timed) if isinstance(function, classmethod) else timed


def describe_phases(spent: dict[str, float], total_cpu: float, rows: int) -> str:
    """``label X s`` per phase, the rest (parsing, bookkeeping), and the collector's share."""
    phases = {label: cpu for label, cpu in spent.items() if label != GC}
    parts = [f"{label} {cpu:.1f} s" for label, cpu in phases.items()]
    rest = total_cpu - sum(phases.values())
    return (
        f"CPU {total_cpu:.1f} s = {', '.join(parts)}, parsing+bookkeeping {rest:.1f} s "
        f"({1e6 * total_cpu / max(1, rows):.1f} us/row); gc {spent.get(GC, 0.0):.2f} s of it"
    )
