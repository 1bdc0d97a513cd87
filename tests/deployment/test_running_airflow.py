"""The example DAGs in a real Airflow 3 deployment: API server, scheduler (LocalExecutor) and DAG
processor as separate processes, metadata and warehouse on PostgreSQL, the sandbox as the vendor.

Runs are started only through the REST API (or by the scheduler, from asset events); results are
read from the warehouse, the run log, the REST API and the sandbox's ledger, never from the code
under test. Expected statuses come from the sandbox's documented truth (``expected_status``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from collections import Counter
from typing import Any

import pytest

from airflow_provider_phonestatus.numbers import mask_number, parse_number
from airflow_provider_phonestatus.sandbox.customers import expected_status, messy_phones
from tests.deployment.deployment import PLAN_PER_MINUTE, POOL_COMMAND, ROOT, WINDOW_MINUTES, Deployment
from tests.deployment.runs import (
    consumed_events,
    report,
    span,
    task_instances,
    task_log,
    trigger,
    wait_for_asset_run,
    wait_for_run,
    xcom,
)
from tests.deployment.warehouse import Warehouse, distinct_mobiles
from tests.documented import DEAD, LIVE, true_status

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

REVALIDATION = "phone_status_revalidation"
MANUAL = "phone_status_manual_check"
ON_NEW_ROWS = "phone_status_on_new_rows"
LOAD = "example_customer_load"
CONSUMER = "deployment_status_consumer"
CHANGES = "phone_status_changes"
CHANGES_TASK = "suppress_changes__crm__customers"
TABLE = "crm.customers"


def manual_conf(region: str) -> dict[str, Any]:
    """The manual form's values for a real run over one region's rows."""
    return {"table": TABLE, "row_filter": {"region": region}, "max_checks": 1000, "dry_run": False}


def succeeded(d: Deployment, dag_id: str, run_id: str) -> dict[str, Any]:
    """Wait for the run; it must have succeeded (else the failed tasks' log tails are shown)."""
    done = wait_for_run(d, dag_id, run_id)
    assert done["state"] == "success", report(d, dag_id, run_id)
    return done


def assert_no_whole_number(text: str, phones: list[str | None]) -> None:
    """No number of ``phones`` appears whole in ``text``, in any spelling the table holds."""
    spellings = distinct_mobiles(phones) | {p.strip() for p in phones if p and parse_number(p).is_mobile}
    leaked = sorted(mask_number(s) for s in spellings if s in text)
    assert not leaked, f"whole phone numbers in a log: {leaked}"


def test_the_deployment_uses_the_readme_commands() -> None:
    """The pool command run by the deployment, and the connection and Test-button settings it uses,
    are the ones the README gives users."""
    readme = (ROOT / "README.md").read_text()
    assert POOL_COMMAND in readme
    assert "airflow connections add phonestatus_default --conn-json" in readme
    assert "AIRFLOW__CORE__TEST_CONNECTION=Enabled" in readme


def test_manual_check_triggered_through_the_rest_api(
    airflow_deployment: Deployment, deployment_warehouse: Warehouse
) -> None:
    d, wh = airflow_deployment, deployment_warehouse
    d.sandbox.reset()
    phones = wh.add("manual", rows=60, distinct=40, seed=101)
    others = wh.add("untouched", rows=10, distinct=8, seed=102)
    conf = manual_conf("manual")

    run_id = trigger(d, MANUAL, conf)
    done = succeeded(d, MANUAL, run_id)
    assert (done["run_type"], done["conf"]) == ("manual", conf)

    assert [r["phone_status"] for r in wh.rows("manual")] == [expected_status(p) for p in phones]
    assert [r["phone_status"] for r in wh.rows("untouched")] == [None] * len(others)
    numbers = distinct_mobiles(phones)
    ledger = d.sandbox.ledger()
    assert ledger["requests"] == ledger["billed"] == len(numbers) and ledger["throttled"] == 0
    assert set(ledger["by_number"]) == numbers

    (logged,) = wh.run_log(MANUAL, run_id)
    assert (logged["task_id"], logged["table_name"], logged["state"]) == ("check", TABLE, "success")
    assert (logged["due_rows"], logged["paid_lookups"]) == (len(phones), len(numbers))

    log = task_log(d, MANUAL, run_id, "check")
    assert re.search(r"phone status run success for crm\.customers", log), log[-2000:]
    assert_no_whole_number(log, phones)


def test_status_refreshes_schedule_downstream_dags_through_asset_events(
    airflow_deployment: Deployment, deployment_warehouse: Warehouse
) -> None:
    d, wh = airflow_deployment, deployment_warehouse
    d.sandbox.reset()
    wh.add("nightly", rows=80, distinct=50, seed=202)

    # The nightly revalidation, triggered by hand: it refreshes every due row of the table and
    # its dead-share check updates phonestatus://crm/customers.
    nightly = trigger(d, REVALIDATION)
    succeeded(d, REVALIDATION, nightly)
    rows = wh.rows()
    assert [r["phone_status"] for r in rows] == [expected_status(r["phone"]) for r in rows]
    ledger = d.sandbox.ledger()
    assert ledger["throttled"] == 0
    assert max(n["billed"] for n in ledger["by_number"].values()) == 1  # never paid twice
    # The budget was computed from the connection's plan and the Variable set with the CLI.
    refresh = task_instances(d, REVALIDATION, nightly)["crm__customers.refresh"]
    max_checks = int(refresh["rendered_fields"]["max_checks"])
    assert 0.99 * PLAN_PER_MINUTE * WINDOW_MINUTES <= max_checks <= PLAN_PER_MINUTE * WINDOW_MINUTES

    # The scheduler starts the downstream DAG from that asset event.
    downstream = wait_for_asset_run(d, CONSUMER, REVALIDATION, nightly)
    assert downstream["run_type"] == "asset_triggered" and downstream["state"] == "success"

    # A load emits warehouse://crm/customers: phone_status_on_new_rows runs on it, checks only
    # the new rows, and its refresh in turn starts the downstream DAG.
    before = len(rows)
    new = wh.claim(list(messy_phones(8, 6, seed=303)))
    load = trigger(d, LOAD, {"phones": new})
    succeeded(d, LOAD, load)
    on_new = wait_for_asset_run(d, ON_NEW_ROWS, LOAD, load)
    assert on_new["run_type"] == "asset_triggered" and on_new["state"] == "success", report(
        d, ON_NEW_ROWS, on_new["dag_run_id"]
    )
    assert [r["phone_status"] for r in wh.rows()[before:]] == [expected_status(p) for p in new]
    assert wh.run_log(ON_NEW_ROWS, on_new["dag_run_id"])[0]["due_rows"] == len(new)
    again = wait_for_asset_run(d, CONSUMER, ON_NEW_ROWS, on_new["dag_run_id"])
    assert again["state"] == "success"

    # Nobody triggered the consumers: every run they have came from an asset event.
    for dag_id in (ON_NEW_ROWS, CONSUMER):
        runs = d.get(f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        assert {r["run_type"] for r in runs} == {"asset_triggered"}
        assert all(consumed_events(d, dag_id, r["dag_run_id"]) for r in runs)


def run_two_checks_at_once(
    d: Deployment, wh: Warehouse, seeds: tuple[int, int]
) -> tuple[list[dict[str, Any]], int]:
    """Two manual checks of 200 new numbers each, triggered together. Their ``check`` task
    instances in start order, once both runs are done, and how many numbers they had to pay for."""
    regions = [f"pool_{seed}" for seed in seeds]
    numbers = set()
    for region, seed in zip(regions, seeds, strict=True):
        numbers |= distinct_mobiles(wh.add(region, rows=260, distinct=200, seed=seed))
    d.sandbox.reset()
    run_ids = [trigger(d, MANUAL, manual_conf(region)) for region in regions]
    for run_id in run_ids:
        wait_for_run(d, MANUAL, run_id)
    checks = [task_instances(d, MANUAL, run_id)["check"] for run_id in run_ids]
    assert {ti["pool"] for ti in checks} == {"phonestatus_api"}
    return sorted(checks, key=lambda ti: span(ti)[0]), len(numbers)


def test_two_runs_sharing_the_key_take_turns_in_the_pool(
    airflow_deployment: Deployment, deployment_warehouse: Warehouse
) -> None:
    """With the README's pool (one slot), two runs spending the key at once never exceed the plan
    together: the vendor throttles nothing. The control below shows both checks would fail
    without the pool."""
    d = airflow_deployment
    (first, second), numbers = run_two_checks_at_once(d, deployment_warehouse, (404, 505))
    assert first["state"] == second["state"] == "success", report(d, MANUAL, first["dag_run_id"])
    assert span(first)[1] <= span(second)[0], "the two checks ran at the same time"
    ledger = d.sandbox.ledger()
    assert ledger["throttled"] == 0
    assert ledger["billed"] == ledger["requests"] == numbers


def test_control_without_the_pool_the_same_runs_overlap_and_are_throttled(
    airflow_deployment: Deployment, deployment_warehouse: Warehouse
) -> None:
    """The same two runs with two pool slots: they overlap and the vendor throttles them, so the
    pool test above can fail and the sandbox's limit is tight enough to tell."""
    d = airflow_deployment
    two_slots = shlex.split(POOL_COMMAND)[1:]
    two_slots[3] = "2"
    d.cli(*two_slots, check=True)
    try:
        (first, second), _ = run_two_checks_at_once(d, deployment_warehouse, (606, 707))
    finally:
        d.cli(*shlex.split(POOL_COMMAND)[1:], check=True)
    assert span(second)[0] < span(first)[1], "the checks did not overlap: the control proves nothing"
    assert d.sandbox.ledger()["throttled"] > 0


def changes_numbers() -> list[str]:
    """Each last digit twice: third-to-last digit 0 (its answer changes in world 1) and 1 (not)."""
    return [f"16688880{third}0{last}" for third in (0, 1) for last in range(10)]


def test_a_dag_on_the_status_asset_reads_each_change_once_and_suppresses_dead_and_recycled_rows(
    airflow_deployment: Deployment, deployment_warehouse: Warehouse
) -> None:
    """The nightly check's asset event carries the refresh's change counts; the changes DAG runs
    on it and reads exactly the rows whose status changed since the previous event, and lists
    the dead and recycled ones. The vendor's world changes between two refreshes only."""
    d, wh = airflow_deployment, deployment_warehouse
    d.sandbox.reset()
    d.sandbox.configure(world=0)
    numbers = changes_numbers()
    spelled = [f"+86 {n[:3]} {n[3:7]} {n[7:]}" for n in numbers[:10]]  # a second row each
    phones = wh.add_phones("changes", [*numbers, *spelled])
    national = {r["id"]: re.sub(r"\D", "", r["phone"])[-11:] for r in wh.rows("changes")}
    try:
        # The first check: every status is new, so nothing changed.
        first = trigger(d, REVALIDATION)
        succeeded(d, REVALIDATION, first)
        rows = wh.rows("changes")
        assert [r["phone_status"] for r in rows] == [true_status(national[r["id"]], 0) for r in rows]
        assert {r["phone_status_changed_at"] for r in rows} == {None}
        consumer = wait_for_asset_run(d, CHANGES, REVALIDATION, first)
        assert consumer["state"] == "success", report(d, CHANGES, consumer["dag_run_id"])
        counts = xcom(d, CHANGES, consumer["dag_run_id"], CHANGES_TASK)
        assert (counts["rows_changed"], counts["rows_suppressed"]) == (0, 0), counts
        assert wh.suppressions(CHANGES, consumer["dag_run_id"]) == []

        # The vendor's world moves on and every status of these rows is old: all are due.
        d.sandbox.configure(world=1)
        wh.age("changes", dt.datetime(2024, 1, 1))
        second = trigger(d, REVALIDATION)
        succeeded(d, REVALIDATION, second)
        rows = wh.rows("changes")
        assert [r["phone_status"] for r in rows] == [true_status(national[r["id"]], 1) for r in rows]
        moved = {
            key: (true_status(number, 0), true_status(number, 1))
            for key, number in national.items()
            if true_status(number, 0) != true_status(number, 1)
        }
        recycled = {key for key, (old, new) in moved.items() if old == "not_in_service" and new in LIVE}
        dead = {key for key, (_, new) in moved.items() if new in DEAD}
        assert len(moved) == 14 and len(recycled) == 2 and len(dead) == 6  # the truth table, twice

        consumer = wait_for_asset_run(d, CHANGES, REVALIDATION, second)
        run_id = consumer["dag_run_id"]
        assert consumer["state"] == "success", report(d, CHANGES, run_id)
        counts = xcom(d, CHANGES, run_id, CHANGES_TASK)
        assert (counts["rows_changed"], counts["rows_suppressed"]) == (len(moved), len(recycled | dead))
        since, until = (dt.datetime.fromisoformat(counts[k]).replace(tzinfo=None) for k in ("since", "until"))
        for row in rows:  # the window holds each change of this refresh, and nothing else here
            changed_at = row["phone_status_changed_at"]
            assert (changed_at is not None) == (row["id"] in moved)
            assert changed_at is None or since < changed_at <= until
        listed = {
            json.loads(e["row_key"])["id"]: (e["previous_status"], e["status"], e["reason"])
            for e in wh.suppressions(CHANGES, run_id)
        }
        assert listed == {
            key: (*moved[key], "recycled_suspect" if key in recycled else "dead") for key in recycled | dead
        }
        # The asset event that started the run carries the refresh's true counts.
        (event,) = [e for e in consumed_events(d, CHANGES, run_id) if e["source_run_id"] == second]
        extra = event["extra"]
        assert (extra["table"], extra["status_changes"], extra["recycled_suspects"]) == (
            TABLE,
            len(moved),
            len(recycled),
        )
        assert extra["changes_by_transition"] == dict(Counter(f"{old}->{new}" for old, new in moved.values()))
        assert extra["paid_lookups"] == len(numbers)

        # Nothing changes: the next refresh has nothing due, its window holds no change.
        third = trigger(d, REVALIDATION)
        succeeded(d, REVALIDATION, third)
        consumer = wait_for_asset_run(d, CHANGES, REVALIDATION, third)
        assert consumer["state"] == "success", report(d, CHANGES, consumer["dag_run_id"])
        again = xcom(d, CHANGES, consumer["dag_run_id"], CHANGES_TASK)
        assert (again["rows_changed"], again["rows_suppressed"]) == (0, 0), again
        assert again["since"] == counts["until"]
        assert wh.suppressions(CHANGES, consumer["dag_run_id"]) == []
        for dag_id, run in ((CHANGES, run_id), (REVALIDATION, second)):
            task = CHANGES_TASK if dag_id == CHANGES else "crm__customers.check_dead_share"
            assert_no_whole_number(task_log(d, dag_id, run, task), phones)
    finally:
        d.sandbox.configure(world=0)  # other tests share the sandbox
