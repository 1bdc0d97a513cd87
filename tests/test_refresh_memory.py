"""A run's memory stays flat in distinct numbers: the number set, and the counts a pass keeps with it.

``TableRefresh`` remembers every distinct number it met (``distinct_numbers``; ``from_store``
counts a store answer once, where its number was first met) and, in a dry run, every number a
real run would ask. Both sets are a :class:`NumberSet` (a temporary SQLite B-tree), not a Python
set of ~70 bytes a number; the counts must stay exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_phonestatus.number_set import NumberSet
from airflow_provider_phonestatus.refresh import RefreshOptions, TableRefresh
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.summary import RunSummary
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.target import TargetTable
from tests.db import Warehouse, customers
from tests.test_hook import make_hook, numbers


@pytest.fixture(params=["json", "statements"])
def number_set(request: pytest.FixtureRequest) -> Iterator[NumberSet]:
    """A set that reads its numbers as one JSON array (SQLite 3.38+), or one statement per number
    (an SQLite without JSON functions)."""
    made = NumberSet()
    made._open()
    made._json = request.param == "json"
    yield made
    made.close()


def test_add_counts_the_new_numbers_once(number_set: NumberSet) -> None:
    assert number_set.add(["13800138001", "13800138002", "13800138001"]) == 2  # a repeat counts once
    assert number_set.add(["13800138002", "19912345678"]) == 1
    assert number_set.add([]) == 0 and number_set.add({}) == 0
    assert len(number_set) == 3
    assert "19912345678" in number_set and "13800138003" not in number_set and 13800138001 not in number_set
    wanted = ["13800138003", "19912345678", "13800138001", "13800138004"]
    assert number_set.members(wanted) == ["19912345678", "13800138001"]  # in the order asked
    assert number_set.members([]) == []


def test_many_numbers_are_exact(number_set: NumberSet) -> None:
    first = [str(13800000000 + i * 7919 % 10**8) for i in range(30_000)]
    assert number_set.add(first) == 30_000
    again = first[::3] + [str(13900000000 + i) for i in range(500)]
    assert number_set.add(again) == 500
    assert len(number_set) == 30_500
    assert number_set.members(again) == again


def test_nothing_is_opened_before_the_first_number_and_a_closed_set_refuses() -> None:
    empty = NumberSet()
    assert empty.add([]) == 0 and empty.members(["13800138001"]) == [] and len(empty) == 0
    assert empty._db is None  # a run that meets no number makes no database
    used = NumberSet()
    used.add(["13800138001"])
    used.close()
    assert len(used) == 1  # the count stays readable
    with pytest.raises(RuntimeError, match="closed"):
        used.add(["13800138002"])


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_stays_flat_in_how_many_numbers() -> None:
    try:
        _rss_kib()
    except OSError:
        pytest.skip("no /proc/self/status (not Linux)")
    held = NumberSet(cache_kib=8 * 1024)
    before = _rss_kib()
    count = 2_000_000
    for start in range(0, count, 20_000):
        page = [str(13800000000 + i * 61803399 % 10**8) for i in range(start, start + 20_000)]
        assert held.add(page) == 20_000
    grown_mib = (_rss_kib() - before) / 1024
    held.close()
    assert len(held) == count
    # A Python set of two million ints takes about 140 MB; here the page cache (8 MiB) and what
    # the allocator keeps of the pages' lists.
    assert grown_mib < 50, f"{grown_mib:.0f} MiB for {count:,} numbers"


# -- the counts of a pass -------------------------------------------------------------------------


@pytest.fixture
def sandbox(phonestatus_sandbox: SandboxServer) -> SandboxServer:
    phonestatus_sandbox.configure(rate_limit_per_minute=None)
    return phonestatus_sandbox


def refresh(
    wh: Warehouse, sandbox: SandboxServer, table: str, store: str | None, options: RefreshOptions
) -> RunSummary:
    with wh.engine.connect() as conn:
        target = TargetTable.load(
            conn,
            table,
            key_columns="id",
            phone_column="phone",
            columns=StatusColumns(),
            dry_run=options.dry_run,
        )
        results = None if store is None else ResultStore.ensure(conn, store)
        run = TableRefresh(conn, target, results, make_hook(sandbox), RevalidationPolicy(), options)
        return run.run()


def test_dry_run_counts_each_number_once_across_pages(warehouse: Warehouse, sandbox: SandboxServer) -> None:
    """Known numbers (in the store), unknown ones and junk, repeated on many pages of 7 rows and
    spelled differently; a cap of 9 lookups. Each unknown number is asked once (the first 9 met),
    its later rows wait for that answer; the rows of the others are deferred, every time."""
    known, unknown = numbers(12), numbers(15, start=13900000001)
    store = warehouse.table_name("store")
    first = refresh(warehouse, sandbox, customers(warehouse, known), store, RefreshOptions())
    assert first.paid_lookups == 12
    sandbox.reset()
    phones: list[Any] = []
    for i in range(120):
        number = known[(i // 2) % 12] if i % 2 else unknown[(i // 2) % 15]
        phones.append(f"+86 {number}" if i % 5 == 0 else number)
        if i % 13 == 0:
            phones.append("N/A")
    cap = 9
    asked = list(dict.fromkeys(p.removeprefix("+86 ") for p in phones if p[-11:] in unknown))[:cap]
    deferred = sum(1 for p in phones if p[-11:] in unknown and p[-11:] not in asked)
    options = RefreshOptions(dry_run=True, page_size=7, max_checks=cap)
    summary = refresh(warehouse, sandbox, customers(warehouse, phones), store, options)
    assert summary.lookups_to_pay == cap and sandbox.ledger()["requests"] == 0
    assert (summary.distinct_numbers, summary.from_store) == (27, 12)
    assert summary.deferred_rows == deferred
    assert summary.local_labels == phones.count("N/A")
    known_rows = sum(1 for p in phones if p[-11:] in known)
    assert sum(summary.status_counts.values()) == known_rows + phones.count("N/A")
    # Without the store nothing is free and every number met is asked, up to the cap.
    summary = refresh(warehouse, sandbox, customers(warehouse, phones), None, options)
    assert (summary.lookups_to_pay, summary.distinct_numbers, summary.from_store) == (cap, 27, 0)
