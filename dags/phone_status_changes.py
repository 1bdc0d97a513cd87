"""Keep a suppression list of the numbers whose status changed: dead lines and recycled numbers.

Scheduled on the status assets ``phonestatus://<schema>/<table>`` of the allow-listed tables
(``PHONESTATUS_TABLES``, see ``phone_status_config.py``), which the nightly revalidation's
dead-share check and ``phone_status_on_new_rows`` update after each refresh. It runs after every
refresh of a table, with one task per table (``suppress_changes__crm__customers``); a task whose
table's asset did not start the run is skipped.

Each task reads the rows of its table whose status changed in its window, and writes to the
suppression list those not to contact any more: rows whose new status is dead
(``not_in_service``, ``suspended``, ``pending_cancellation``: the dead-share check's "dead") or
whose number is a recycled-number suspect (``not_in_service`` before, live now: the number may
belong to someone else). Each entry holds the table, the row's key as JSON text
(``{"id": 42}``), the status, the previous status, when it changed, the reason
(``recycled_suspect``, else ``dead``) and the DAG run that found it; never the phone number. A
cleared run replaces its own entries. The list lives in the warehouse, in the table named by the
Variable ``phonestatus_suppressions_table`` (default ``phone_status_suppressions``), created when
missing. The task's XCom and log hold counts and the window only.

**The window.** A refresh's asset event carries the run behind it (``extra``: table, run times,
change counts; see ``airflow_provider_phonestatus.feed``). The window is
``(since, until]`` on ``phone_status_changed_at`` (when a number's current status was first seen
after a different one): ``until`` is the end of the latest run behind the events that started
this DAG run, ``since`` the end of the run behind the asset's latest earlier event (none: from
the beginning). Windows of consecutive events tile time, so each change is read once, whichever
DAG refreshed the table.

**Its limits.** A change first seen before this table's previous event (by a run over another
table, or over this one for other rows) and written to a row of this table only later from the
results store (a row loaded or given a new phone since) carries its original time and falls
before the window. A failed run's window is not read again by the next run: clear the failed run
to read it. Change times and run ends come from the workers' clocks, so windows tile only as well
as those clocks agree.
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
import phone_status_config as cfg
from airflow.sdk import DAG, AssetAny, task

from airflow_provider_phonestatus import feed
from airflow_provider_phonestatus.warehouse.engine import sqlalchemy_engine

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef,unused-ignore]

DAG_ID = "phone_status_changes"
log = logging.getLogger(__name__)

_tables = cfg.tables()
_assets = [table.status_asset() for table in _tables.values()]


@task
def suppress_changes(table_name: str, **context: Any) -> dict[str, Any]:
    """Add the dead and recycled rows that changed in this run's window to the suppression list."""
    table = cfg.tables()[table_name]
    asset = table.status_asset()
    triggering = context["triggering_asset_events"].get(asset)
    if not triggering:
        raise AirflowSkipException(f"no refresh of {table.name} started this run: nothing to read")
    since, until = feed.changes_window(triggering, context["inlet_events"][asset])
    list_name = str(cfg.variable(cfg.VAR_SUPPRESSIONS_TABLE, cfg.DEFAULT_SUPPRESSIONS_TABLE))

    engine = sqlalchemy_engine(cfg.warehouse_conn_id())
    try:
        with engine.connect() as conn:
            suppression_list = feed.SuppressionList.ensure(conn, list_name)
            changed = feed.changed_rows(
                conn,
                table.name,
                key_columns=table.key_columns,
                phone_column=table.phone_column,
                since=since,
                until=until,
            )
            entries = feed.suppressions(changed, table.key_columns)
            ti = context["ti"]
            suppression_list.replace(conn, entries, table_name=table.name, dag_id=ti.dag_id, run_id=ti.run_id)
            conn.commit()
    finally:
        engine.dispose()

    counts = {
        "table": table.name,
        "since": None if since is None else since.isoformat() + "Z",
        "until": until.isoformat() + "Z",
        "rows_changed": len(changed),
        "rows_suppressed": len(entries),
        "suppressed_by_reason": feed.count_by(entries, "reason"),
    }
    log.info(
        "%s: %d rows changed status in (%s, %s], %d added to %s %s",
        table.name,
        counts["rows_changed"],
        counts["since"] or "the beginning",
        counts["until"],
        counts["rows_suppressed"],
        list_name,
        counts["suppressed_by_reason"],
    )
    return counts


with DAG(
    dag_id=DAG_ID,
    description="Suppression list of the rows whose phone status changed to dead or recycled",
    schedule=_assets[0] if len(_assets) == 1 else AssetAny(*_assets),
    start_date=pendulum.datetime(2026, 1, 1, tz=cfg.timezone_name()),
    catchup=False,
    max_active_runs=1,
    tags=["phonestatus"],
    doc_md=__doc__,
) as dag:
    for table in _tables.values():
        suppress_changes.override(task_id=f"suppress_changes__{table.slug}", inlets=[table.status_asset()])(
            table_name=table.name
        )
