"""The nightly DAG over four tables at once on a CeleryExecutor deployment with two workers.

A deployment of its own (module scope): the scheduler hands tasks to two ``airflow celery worker``
processes through the machine's RabbitMQ, each worker with two slots; ``PHONESTATUS_TABLES`` lists
four tables and ``PHONESTATUS_PARALLEL_TABLES=true`` maps the refresh over them. The phonestatus
connection shares its rate limit through the machine's Redis (``rate_limit_redis_conn_id``), and
the sandbox enforces the plan. Results come from the REST API, the warehouse and the sandbox.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_phonestatus.sandbox.config import SandboxConfig
from airflow_provider_phonestatus.sandbox.customers import expected_status
from tests.deployment.deployment import REDIS_CONN_ID, Deployment, running_deployment
from tests.deployment.runs import report, trigger, wait_for_run
from tests.deployment.warehouse import Warehouse, distinct_mobiles

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

REVALIDATION = "phone_status_revalidation"
TABLES = ("customers", "leads", "partners", "suppliers")
#: The plan: every table's numbers take several seconds at a fair share of it, so the four
#: refreshes have to run at once to be done together.
PLAN = 1200


@pytest.fixture(scope="module")
def celery_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    allow_list = {f"crm.{name}": {"key_column": "id", "phone_column": "phone"} for name in TABLES}
    # A key of its own: the shared limit's state in Redis is per key, never another run's.
    sandbox = SandboxConfig(
        api_key="celery-" + secrets.token_hex(6), rate_limit_per_minute=PLAN, window_s=2.0, grace_s=0.5
    )
    with running_deployment(
        tmp_path_factory.mktemp("celery"),
        sandbox,
        celery_workers=2,
        settings={"PHONESTATUS_TABLES": json.dumps(allow_list), "PHONESTATUS_PARALLEL_TABLES": "true"},
        conn_extra={"rate_limit_redis_conn_id": REDIS_CONN_ID},
    ) as deployment:
        yield deployment


def mapped_instances(d: Deployment, run_id: str, task_id: str) -> list[dict[str, Any]]:
    found = d.get(f"/api/v2/dags/{REVALIDATION}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    return sorted(
        (ti for ti in found["task_instances"] if ti["task_id"] == task_id), key=lambda ti: ti["map_index"]
    )


def test_one_nightly_run_refreshes_four_tables_at_once_on_both_workers(celery_deployment: Deployment) -> None:
    d = celery_deployment
    warehouses = {name: Warehouse.create(d.warehouse_url, name) for name in TABLES}
    phones: dict[str, list[str | None]] = {}
    paid: set[str] = set()
    for seed, (name, wh) in enumerate(warehouses.items(), start=900):
        phones[name] = wh.add("nightly", rows=130, distinct=100, seed=seed)
        numbers = distinct_mobiles(phones[name])
        assert not numbers & paid, "tables share numbers: pick other seeds"
        paid |= numbers
    # customers and leads also share 40 numbers: refreshed at once, each is paid once all the same
    shared = [f"1520015{i:04d}" for i in range(40)]
    for name in ("customers", "leads"):
        phones[name] += warehouses[name].add_phones("nightly", list(shared))
    assert not set(shared) & paid
    paid |= set(shared)
    d.sandbox.reset()

    run_id = trigger(d, REVALIDATION)
    done = wait_for_run(d, REVALIDATION, run_id, timeout=600)
    assert done["state"] == "success", report(d, REVALIDATION, run_id)

    refreshes = mapped_instances(d, run_id, "tables.refresh")
    checks = mapped_instances(d, run_id, "tables.check_dead_share")
    assert [ti["state"] for ti in refreshes + checks] == ["success"] * 2 * len(TABLES)
    # Both workers ran refreshes, and refreshes on different workers ran at the same time.
    assert {ti["hostname"] for ti in refreshes} == {"worker1", "worker2"}, refreshes
    overlapping = [
        (a["hostname"], b["hostname"])
        for a in refreshes
        for b in refreshes
        if a["hostname"] < b["hostname"]
        and a["start_date"] < b["end_date"]
        and b["start_date"] < a["end_date"]
    ]
    assert overlapping, "no two refreshes on different workers overlapped"

    # The vendor throttled nothing, every number was paid once, every table got its lookups.
    ledger = d.sandbox.ledger()
    assert ledger["throttled"] == 0
    assert set(ledger["by_number"]) == paid and ledger["billed"] == ledger["requests"] == len(paid)
    for name, wh in warehouses.items():
        rows = wh.rows("nightly")
        assert [r["phone_status"] for r in rows] == [expected_status(p) for p in phones[name]], name
    logged = {r["table_name"]: r for r in warehouses["customers"].run_log(REVALIDATION, run_id)}
    assert sorted(logged) == sorted(f"crm.{name}" for name in TABLES)
    assert all(r["paid_lookups"] > 0 and r["state"] == "success" for r in logged.values()), logged
    assert sum(r["paid_lookups"] for r in logged.values()) == len(paid)

    # Each table's check emitted its own status asset, through the alias.
    events = d.get("/api/v2/assets/events", params={"source_run_id": run_id, "limit": 100})
    uris = sorted(e["uri"] for e in events["asset_events"])
    assert uris == sorted(f"phonestatus://crm/{name}" for name in TABLES)
