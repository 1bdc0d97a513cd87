"""Stands for a user's downstream DAG (an SMS campaign, risk scoring): it runs when the phone
statuses of ``crm.customers`` were refreshed, i.e. on the asset ``phonestatus://crm/customers``
that ``phone_status_revalidation`` and ``phone_status_on_new_rows`` update.

It lives in a DAG bundle of the deployment tests, not in ``dags/``: the example DAGs ship no
consumer of that asset, since what runs on fresh statuses is the user's own job.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

DAG_ID = "deployment_status_consumer"


@task
def count_triggering_events(**context: Any) -> int:
    """How many asset events started this run (what a campaign would read its cue from)."""
    events = context["triggering_asset_events"]
    return sum(len(list(events[asset])) for asset in events)


with DAG(
    dag_id=DAG_ID,
    description="Deployment tests: a downstream DAG scheduled on the refreshed statuses",
    schedule=Asset("phonestatus://crm/customers"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["phonestatus", "deployment-test"],
):
    count_triggering_events()
