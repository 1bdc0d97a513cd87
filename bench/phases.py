"""Where a benchmarked refresh spends its CPU: per phase, and in the cyclic garbage collector.

:func:`phase_cpu` wraps the classes' methods for the duration of a block (a few hundred calls) and
counts the CPU of the thread each call runs in; :func:`describe_phases` prints the split.
:func:`machine_cpu` reads the rest of the machine from ``/proc``: the local database server's
processes and how long the cores sat idle (Linux only; empty elsewhere).
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import process_cpu

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


@contextmanager
def machine_cpu(server: str = "postgres") -> Iterator[dict[str, float]]:
    """While inside the block: CPU seconds of the processes named ``server`` (a database server on
    this machine: its backends and its background writers) under ``"server"``, and the share of
    the cores' time spent idle under ``"idle"``, from ``/proc``; an empty dict where ``/proc``
    cannot be read. A process that exits inside the block is not counted (the pool keeps a
    refresh's connections, so their backends live on)."""
    found: dict[str, float] = {}
    try:
        server_before, cores_before = _server_seconds(server), _core_ticks()
    except OSError:
        yield found
        return
    yield found
    server_after, cores_after = _server_seconds(server), _core_ticks()
    busy, idle = (after - before for after, before in zip(cores_after, cores_before, strict=True))
    found["server"] = server_after - server_before
    found["idle"] = idle / max(1, busy + idle)


def _server_seconds(name: str) -> float:
    """User + system CPU of every live process whose name starts with ``name``."""
    seconds = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            process, cpu = process_cpu(pid)
        except OSError:  # exited meanwhile
            continue
        if process.startswith(name):
            seconds += cpu
    return seconds


def _core_ticks() -> tuple[int, int]:
    """(busy, idle) ticks of all cores since boot; iowait counts as idle."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, idle


def describe_machine(found: dict[str, float], with_server: bool) -> str:
    """``database server CPU X s, cores idle Y%`` (the server only where it is a process here)."""
    if not found:
        return "machine CPU not readable"
    server = f"database server CPU {found['server']:.1f} s, " if with_server else ""
    return f"{server}cores idle {found['idle']:.0%} of the run"
