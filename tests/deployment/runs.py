"""DAG runs through the deployment's REST API: trigger, wait, read task instances and task logs."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from tests.deployment.deployment import Deployment

DONE = ("success", "failed")


def trigger(d: Deployment, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """``POST /dags/{dag_id}/dagRuns`` (no logical date), as a user or a script would; the run id."""
    response = d.api(
        "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
    )
    assert response.status_code == 200, f"trigger {dag_id}: {response.status_code} {response.text[:500]}"
    run_id: str = response.json()["dag_run_id"]
    return run_id


def run(d: Deployment, dag_id: str, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = d.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    return found


def wait_for_run(d: Deployment, dag_id: str, run_id: str, timeout: float = 240) -> dict[str, Any]:
    """The run once it succeeded or failed; AssertionError with task states and logs on a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = run(d, dag_id, run_id)
        if found["state"] in DONE:
            return found
        d.check_alive()
        time.sleep(1)
    raise AssertionError(f"{dag_id} {run_id} not done within {timeout:g} s\n{report(d, dag_id, run_id)}")


def wait_for_asset_run(
    d: Deployment, dag_id: str, source_dag_id: str, source_run_id: str, timeout: float = 120
) -> dict[str, Any]:
    """The run of ``dag_id`` that consumed an asset event of ``source_run_id``, once it is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for candidate in d.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]:
            events = consumed_events(d, dag_id, candidate["dag_run_id"])
            source = {(e["source_dag_id"], e["source_run_id"]) for e in events}
            if (source_dag_id, source_run_id) in source:
                return wait_for_run(d, dag_id, candidate["dag_run_id"], max(1.0, deadline - time.monotonic()))
        d.check_alive()
        time.sleep(1)
    raise AssertionError(f"no run of {dag_id} consumed an asset event of {source_dag_id} {source_run_id}")


def consumed_events(d: Deployment, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The asset events that started a run (``upstreamAssetEvents``)."""
    events: list[dict[str, Any]] = d.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")[
        "asset_events"
    ]
    return events


def xcom(d: Deployment, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    """A task's XCom value through the REST API (stored as JSON: parsed when it comes as text)."""
    found = d.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
    value = found["value"]
    return json.loads(value) if isinstance(value, str) else value


def task_instances(d: Deployment, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Task instances of a run by task id."""
    found = d.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti for ti in found}


def span(ti: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """When a task instance started and ended."""
    return dt.datetime.fromisoformat(ti["start_date"]), dt.datetime.fromisoformat(ti["end_date"])


def task_log(d: Deployment, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
    """The whole task log, one JSON line per structured log entry."""
    found = d.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )
    content = found["content"]
    if isinstance(content, str):
        return content
    return "\n".join(json.dumps(entry, ensure_ascii=False) for entry in content)


def report(d: Deployment, dag_id: str, run_id: str, lines: int = 30) -> str:
    """Task states, and the log tail of each task that did not succeed: what a failed run says."""
    out = []
    for task_id, ti in task_instances(d, dag_id, run_id).items():
        out.append(f"{task_id}: {ti['state']}")
        if ti["state"] not in ("success", None) and ti["try_number"]:
            tail = task_log(d, dag_id, run_id, task_id, ti["try_number"]).splitlines()[-lines:]
            out.append("\n".join(tail))
    return "\n".join(out)
