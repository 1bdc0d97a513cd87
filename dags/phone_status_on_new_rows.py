"""Check the phones of new and changed rows as soon as a loading DAG has written them.

Scheduled on the asset each allow-listed table's loading DAG emits: ``warehouse://crm/customers``
for ``crm.customers`` by default (an entry's ``source_asset`` in ``PHONESTATUS_TABLES`` names
another). Declare that asset as an outlet of the task that loads the table, as
``example_customer_load.py`` does, and this DAG runs after every successful load (several loads
while a run is busy are folded into the next run; ``max_active_runs=1``). With several tables,
a load of any of them starts a run; tables without new rows cost one query each.

Only new and changed rows are checked. The operator already ranks never-checked rows and rows
whose phone changed since their check first (they are always due, whatever their age); this DAG
passes ``revalidate_after`` with every age set to 100 years, so nothing else becomes due and
revalidating old statuses stays the nightly DAG's job, inside its window. Consequence: a new row
whose number is already in the results store gets that stored answer for free, however old it is,
with its original ``checked_at``; the nightly revalidation then re-checks it if it is past its
age. (``ignore_revalidation_ages`` is the opposite switch: everything matching is due.)

The lookups share the plan with the nightly run: the task runs in the ``phonestatus_api`` pool
and its budget is the rest of a window (``phonestatus_window_minutes``) from the run's start at
the plan rate, so a bulk load of a million rows cannot hold the key for days: what does not fit
stays due (never-checked rows first) for the next run or the night. On success the task updates
``phonestatus://<schema>/<table>``, like the nightly check, so DAGs scheduled on it see new rows'
statuses; the nightly dead-share check does not apply to this partial run.
"""

from __future__ import annotations

from typing import Any

import pendulum
import phone_status_config as cfg
from airflow.sdk import DAG, AssetAny

from airflow_provider_phonestatus.operators.phonestatus import PhoneStatusCheckOperator
from airflow_provider_phonestatus.revalidation import DEFAULT_AGES

DAG_ID = "phone_status_on_new_rows"
#: 100 years for every status (and for values the vocabulary does not know): only rows never
#: checked or whose phone changed are due.
NEVER_EXPIRES_DAYS = 36_500
ONLY_NEW_OR_CHANGED: dict[str, Any] = {status.value: NEVER_EXPIRES_DAYS for status in DEFAULT_AGES} | {
    "other": NEVER_EXPIRES_DAYS
}

_tables = cfg.tables()
_sources = [table.source_asset() for table in _tables.values()]

with DAG(
    dag_id=DAG_ID,
    description="Check the phones of new and changed rows after each load",
    schedule=_sources[0] if len(_sources) == 1 else AssetAny(*_sources),
    start_date=pendulum.datetime(2026, 1, 1, tz=cfg.timezone_name()),
    catchup=False,
    max_active_runs=1,
    user_defined_macros={"phonestatus_budget": cfg.budget_macro(cfg.phonestatus_conn_id())},
    default_args=cfg.default_args(pool=cfg.pool_name()),  # every task here calls the API
    tags=["phonestatus"],
    doc_md=__doc__,
) as dag:
    for table in _tables.values():
        PhoneStatusCheckOperator(
            task_id=f"check_new_rows__{table.slug}",
            conn_id=cfg.warehouse_conn_id(),
            table=table.name,
            key_column=table.operator_key_column(),
            phone_column=table.phone_column,
            revalidate_after=ONLY_NEW_OR_CHANGED,
            max_checks=cfg.MAX_CHECKS_TEMPLATE,
            time_budget=cfg.TIME_BUDGET_TEMPLATE,
            outlets=[table.status_asset()],
        )
