"""The cyclic garbage collector, run far less often while a refresh pass runs.

A pass allocates millions of short-lived, acyclic tuples, freed by reference counting; the
collector's young-generation passes would only walk them (see :func:`fewer_gc_passes`).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

#: Allocations between two young-generation passes of the cyclic garbage collector during a pass:
#: more than a page's work allocates (~200,000 containers for 20,000 rows), so a page's objects are
#: freed by reference counting before a pass of the collector ever walks them.
GC_THRESHOLD = 1_000_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic garbage collector far less often while a pass runs, then as before.

    A pass allocates millions of short-lived, acyclic tuples (freed by reference counting), a page
    of them alive at a time. Each young-generation pass of the collector walks every container
    still alive since the last one, so with a threshold below a page's allocations it walks each
    page's rows, lookups and records once or twice: with the default (700) a fifth of the CPU of a
    store-only pass, with 50,000 still seconds of a million-row one. ``python -m bench --only
    operator_warehouse`` prints the collector's share as ``gc``. Cycles are still collected.
    Process-wide, so the first of concurrent passes saves the thresholds and the last one
    restores them.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(_gc_saved[0], GC_THRESHOLD), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)
