"""A rate limit shared through Redis (``rate_limit_redis_conn_id``) by tasks in separate processes.

Real processes, the machine's Redis (or one started here, to be stopped mid-run), the sandbox
enforcing the plan over HTTP. What the tests count comes from the sandbox's ledger and from the
answers the processes received, never from the pacer itself.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
from airflow_provider_phonestatus.refresh import RefreshOptions, TableRefresh
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.sandbox.customers import expected_status
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.summary import RunSummary
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.target import TargetTable
from tests.db import Layout, Warehouse, customers, table_rows
from tests.test_operator import run_task

pytestmark = pytest.mark.usefixtures("airflow_db")

REDIS_URI = "redis://127.0.0.1:6379"
PLAN = 600  # per minute: 10 requests per second

#: One task in a process of its own: waits for "go" on stdin, checks its numbers through a hook on
#: the shared limit, prints one JSON line per answer (number, status, when it arrived).
CHILD = """
import json, sys, time
from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
from airflow_provider_phonestatus.settings import PhoneStatusSettings

settings = PhoneStatusSettings(**json.loads(sys.argv[1]))
numbers = json.loads(sys.argv[2])
hook = PhoneStatusHook(settings=settings)
hook.client  # connects to the shared limit's Redis
print("ready", flush=True)
sys.stdin.readline()
for number, result in hook.check_many(numbers):
    print(json.dumps({"number": number, "status": result.status.value, "at": time.time()}), flush=True)
print(json.dumps({"stats": hook.stats.as_dict()}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_for(sandbox: SandboxServer, **more: Any) -> dict[str, Any]:
    return {
        "api_key": sandbox.config.api_key,
        "base_url": sandbox.url,
        "rate_limit_per_minute": PLAN,
        "rate_limit_redis_conn_id": "phonestatus_redis",
        **more,
    }


def start_children(
    specs: list[tuple[dict[str, Any], list[str]]], redis_uri: str
) -> list[subprocess.Popen[str]]:
    """Start one process per (settings, numbers); return them once all are ready, after "go"."""
    env = {**os.environ, "AIRFLOW_CONN_PHONESTATUS_REDIS": redis_uri}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(settings), json.dumps(numbers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for settings, numbers in specs
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs


def answers(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"number"' in line]


def numbers(prefix: str, count: int) -> list[str]:
    """``count`` distinct mobile numbers of this test (last digits: the documented statuses)."""
    return [f"{prefix}{i:04d}" for i in range(count)]


@pytest.fixture
def enforcing(phonestatus_sandbox: SandboxServer) -> SandboxServer:
    """The sandbox enforcing the plan: at most 10 arrivals in any 0.8 s, under a fresh API key
    (the shared limit's state in Redis is per key: no other test's)."""
    phonestatus_sandbox.configure(
        rate_limit_per_minute=PLAN, window_s=1.0, grace_s=0.2, api_key="shared-" + secrets.token_hex(6)
    )
    return phonestatus_sandbox


def test_two_processes_on_one_key_share_the_plan_fairly_and_the_vendor_throttles_nothing(
    enforcing: SandboxServer,
) -> None:
    """Two tasks, one with 2 threads and one with 16: while both run they use the whole plan
    together in comparable shares; each number is paid once; both finish."""
    first, second = numbers("1380038", 110), numbers("1390039", 110)
    procs = start_children(
        [
            (settings_for(enforcing, max_concurrency=2), first),
            (settings_for(enforcing, max_concurrency=16), second),
        ],
        REDIS_URI,
    )
    got = [answers(proc) for proc in procs]
    assert [sorted(a["number"] for a in got_one) for got_one in got] == [sorted(first), sorted(second)]
    for got_one in got:
        assert all(a["status"] == expected_status(a["number"]) for a in got_one)

    ledger = enforcing.ledger()
    assert ledger["throttled"] == 0
    assert ledger["requests"] == ledger["billed"] == len(first) + len(second)
    assert set(Counter({n: e["billed"] for n, e in ledger["by_number"].items()}).values()) == {1}

    # While both ran: the plan was used, in comparable shares.
    both_from = max(min(a["at"] for a in g) for g in got)
    both_to = min(max(a["at"] for a in g) for g in got)
    assert both_to - both_from > 5, "the two tasks hardly overlapped: the test proves nothing"
    during = [sum(both_from <= a["at"] <= both_to for a in g) for g in got]
    plan = (both_to - both_from) * PLAN / 60
    assert sum(during) >= 0.9 * plan, (during, plan)
    assert min(during) >= 0.4 * sum(during), f"unfair shares: {during}"


def test_control_without_the_shared_limit_the_same_tasks_are_throttled(enforcing: SandboxServer) -> None:
    """The same two tasks pacing alone, each at the plan rate: the vendor throttles them, so the
    test above can fail and the sandbox's limit is tight enough to tell."""
    specs = [
        ({**settings_for(enforcing), "rate_limit_redis_conn_id": None, "max_retries": 0}, numbers(p, 40))
        for p in ("1350035", "1360036")
    ]
    for proc in start_children(specs, REDIS_URI):
        answers(proc)
    assert enforcing.ledger()["throttled"] > 0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of this test's own (the machine's one must keep running): its URI and process."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
@pytest.mark.parametrize("layout", ["in_place"], indirect=True)
def test_redis_stopped_mid_run_fails_the_task_clearly_and_keeps_what_was_answered(
    warehouse: Warehouse,
    layout: Layout,
    enforcing: SandboxServer,
    private_redis: tuple[str, subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, redis_server = private_redis
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_REDIS", uri)
    extra = {"rate_limit_per_minute": PLAN, "rate_limit_redis_conn_id": "phonestatus_redis"}
    conn = {"conn_type": "phonestatus", "host": enforcing.url, "password": enforcing.config.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_DEFAULT", json.dumps({**conn, "extra": extra}))
    phones = numbers("1370037", 80)
    name = customers(warehouse, phones)
    layout.register(name)

    stopped_at: list[int] = []

    def stop_redis_after_some_answers() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and enforcing.ledger()["billed"] < 15:
            time.sleep(0.02)
        redis_server.kill()
        stopped_at.append(int(enforcing.ledger()["requests"]))

    killer = threading.Thread(target=stop_redis_after_some_answers)
    killer.start()
    state, _ = run_task(**layout.kwargs(name, batch_size=5, shared_rate_limit=True))
    killer.join()

    assert state == "failed"
    ledger = enforcing.ledger()
    assert ledger["throttled"] == 0  # never beyond the plan
    # No request started once Redis was gone, beyond the one a worker had already begun.
    assert ledger["requests"] <= stopped_at[0] + 1 < len(phones)
    # Every paid answer was saved; the rest stays due.
    written = {r["phone"]: r["phone_status"] for r in layout.rows(name) if r["phone_status"] is not None}
    assert len(written) == ledger["billed"] and all(s == expected_status(p) for p, s in written.items())
    with warehouse.engine.connect() as conn_:
        log_table = sa.Table(f"{name}_runs", sa.MetaData(), autoload_with=conn_)
        (run,) = conn_.execute(
            sa.select(log_table.c.state, log_table.c.error, log_table.c.paid_lookups)
        ).all()
    assert (run[0], run[2]) == ("failed", ledger["billed"])
    assert "rate_limit_unavailable" in run[1] and "shared rate limit is unreachable" in run[1], run[1]
    # ... and each has its one row in the lookup ledger, as the bill has it.
    with warehouse.engine.connect() as conn_:
        lookups = sa.Table(f"{name}_lookups", sa.MetaData(), autoload_with=conn_)
        ledger_numbers = conn_.execute(sa.select(lookups.c.national)).scalars().all()
    assert sorted(ledger_numbers) == sorted(ledger["by_number"])


@pytest.mark.parametrize("warehouse", ["postgres", "mariadb"], indirect=True)
def test_two_tables_sharing_numbers_refreshed_at_once_pay_for_each_number_once(
    warehouse: Warehouse, enforcing: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two refreshes at once (threads, each with its own hook, as two tasks), on two tables that
    hold the same numbers, one store: the first to meet a number asks it, the other writes its
    rows from the store once saved. Each number is paid once; both tables get every status."""
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_REDIS", REDIS_URI)
    phones = numbers("1330033", 60)
    tables = [customers(warehouse, phones), customers(warehouse, list(reversed(phones)))]
    store = warehouse.table_name("store")
    with warehouse.engine.connect() as conn:
        ResultStore.ensure(conn, store)
        conn.commit()
    summaries: dict[str, RunSummary] = {}
    spans: list[tuple[float, float]] = []

    def refresh(table: str) -> None:
        hook = PhoneStatusHook(settings=PhoneStatusSettings(**settings_for(enforcing)))
        with warehouse.engine.connect() as conn:
            target = TargetTable.load(
                conn, table, key_columns="id", phone_column="phone", columns=StatusColumns()
            )
            results = ResultStore.ensure(conn, store)
            options = RefreshOptions(batch_size=5)
            began = time.monotonic()
            summaries[table] = TableRefresh(conn, target, results, hook, RevalidationPolicy(), options).run()
            spans.append((began, time.monotonic()))

    threads = [threading.Thread(target=refresh, args=(table,)) for table in tables]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ledger = enforcing.ledger()
    assert ledger["billed"] == ledger["requests"] == len(phones) and ledger["throttled"] == 0
    assert set(ledger["by_number"]) == set(phones)
    for table in tables:
        rows = table_rows(warehouse, table)
        assert [r["phone_status"] for r in rows] == [expected_status(r["phone"]) for r in rows]
    runs = list(summaries.values())
    assert sum(s.paid_lookups for s in runs) == len(phones)
    assert sum(s.from_store for s in runs) == len(phones)  # each number: paid by one, stored for the other
    (first, second) = sorted(spans)
    assert second[0] < first[1], "the refreshes did not overlap: the test proves nothing"


def test_a_vendors_retry_after_holds_every_hook_on_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttled answer heard by one hook holds the others on the same key too; another key is
    not held."""
    from airflow_provider_phonestatus.shared_pacing import shared_pacer

    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_REDIS", REDIS_URI)
    key = "hold-" + secrets.token_hex(6)
    heard, other, elsewhere = (
        shared_pacer("phonestatus_redis", "https://vendor.example", api_key, PLAN)
        for api_key in (key, key, key + "-other")
    )
    heard.hold(2.0)
    assert other.reserve() > 1.5
    assert elsewhere.reserve() < 0.5


def test_an_unusable_shared_limit_fails_before_any_request(
    enforcing: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis connection that does not exist is a setting error; one that does not answer is
    reported by Test connection and fails a lookup, and nothing reaches the vendor."""
    from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError, RateLimiterUnavailable

    missing = PhoneStatusHook(
        settings=PhoneStatusSettings(**settings_for(enforcing, rate_limit_redis_conn_id="nope"))
    )
    with pytest.raises(PhoneStatusConfigError, match="nope"):
        missing.check("13800138001")
    monkeypatch.setenv("AIRFLOW_CONN_PHONESTATUS_REDIS", f"redis://127.0.0.1:{free_port()}")
    down = PhoneStatusHook(settings=PhoneStatusSettings(**settings_for(enforcing)))
    ok, message = down.test_connection()
    assert not ok and "shared rate limit is unreachable" in message
    with pytest.raises(RateLimiterUnavailable):
        down.check("13800138001")
    assert enforcing.ledger()["requests"] == 0
