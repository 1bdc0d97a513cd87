"""Nightly revalidation of phone statuses, with a plausibility check before downstream DAGs run.

For every allow-listed table (``PHONESTATUS_TABLES``, see ``phone_status_config.py``) a task group
named after the table (``crm__customers``) holds two tasks.

**refresh**: ``PhoneStatusCheckOperator`` over the table with the default revalidation ages:
never-checked rows, changed phones and expired statuses are due, most urgent first. It runs in
the pool ``phonestatus_api`` (1 slot), which every task that spends the API key uses: two tasks
sharing one key would split its per-minute rate, each running at half speed while the vendor
throttles the excess. Its budget fits the run window at the plan rate: ``max_checks`` = plan rate
per minute x minutes left in the window, ``time_budget`` = the seconds left. The rate comes from
the ``phonestatus`` connection (``rate_limit_per_minute``) and the window from the Variable
``phonestatus_window_minutes`` (default 240), both read when the task starts, never at parse
time: at 60/min a 4 h window pays for at most 14,400 lookups (a 24 h window: 86,400). The window
opens when the DAG run starts, so with several tables each task gets what the previous ones left.
What does not fit stays due, most urgent first, for the next night.

**Many tables at once** (``PHONESTATUS_PARALLEL_TABLES=true``, for a connection whose rate limit
is shared through Redis: ``rate_limit_redis_conn_id``): the two tasks above form one task group,
``tables``, mapped over the allow-list (``tables.refresh``, ``tables.check_dead_share``, one map
index per table), outside the pool. Every table starts when the run does and gets an equal share
of the plan while it has numbers to pay for (the shared limit serves the competing tasks in
turn); a table that is done leaves its share to the others. So each refresh's budget is the whole
window (``max_checks`` = plan x minutes left, ``time_budget`` = seconds left): the limit divides
it, and together they never exceed it. A refresh whose connection has no shared limit fails
before its first request (``shared_rate_limit=True``). The checks emit each table's asset
through the alias ``phonestatus_table_statuses`` (a mapped task has one list of outlets).

**check_dead_share**: reads the run log and compares this run's refresh with the refresh of the
previous *successful DAG run*. Dead numbers are ``not_in_service + suspended +
pending_cancellation``, as a share of the rows the vendor answered (the seven vendor statuses;
``invalid``, ``unsupported``, ``rejected`` and ``failed`` say nothing about the line).
``unavailable`` (在网但不可用: the line exists but cannot be used now) is not counted as dead:
it is often temporary, and is revalidated as often as ``suspended``. A rise of the share by more
than ``phonestatus_dead_share_warn`` (default 0.10, i.e. 10 percentage points) logs a warning;
by more than ``phonestatus_dead_share_fail`` (0.25) the task fails. If either run has fewer than
``phonestatus_dead_share_min_answers`` (100) answers, the runs are not compared.

The table's asset ``phonestatus://<schema>/<table>`` is the check's outlet, so downstream DAGs
(SMS campaigns, risk scoring) scheduled on it run only on statuses that passed the check. Its
event's ``extra`` describes the refresh behind it, from the run log (``feed.event_extra``): the
table, the run log's ``run_uid``, ``run_started_at`` and ``run_ended_at`` (ISO, UTC), the counts
``status_changes``, ``recycled_suspects``, ``rows_written`` and ``paid_lookups``, and
``changes_by_transition`` (``{"active->not_in_service": 3, ...}``, in rows). A DAG on the asset
reads the rows that changed with it: see ``phone_status_changes``.

A failed check fails the DAG run, and a failed DAG run is never a baseline: a vendor that keeps
answering "cancelled" keeps failing, instead of passing the next night against its own bad run.
If the jump is real (say a carrier's mass cancellation), mark the failed DAG run successful: it
becomes the next run's baseline.

**Schedule**: ``0 2 * * *`` in ``Asia/Shanghai`` (a ``CronTriggerTimetable``). The vendor, the
carriers and the customers all live on China time, so 02:00 *China time* is the quiet hour: the
vendor's API is least loaded, daytime uses of the same key (sign-up review) are idle, and
statuses are fresh before the morning's campaigns. On a UTC schedule the same hour would be
``0 18 * * *`` of the previous day, which is easy to get wrong; an explicit zone keeps the intent
readable (China has no daylight saving time; in a zone that has, the cron keeps local time).
To change it, set the environment variables ``PHONESTATUS_SCHEDULE`` (cron, e.g. ``30 1 * * *``)
and ``PHONESTATUS_TIMEZONE`` (an IANA zone) for every Airflow component that parses DAGs. Keep
the window inside the quiet hours and shorter than the interval between runs (02:00 + 240 min
= 06:00 China time). ``catchup=False``: a missed night is caught up by the next one, not paid
twice. ``max_active_runs=1``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pendulum
import phone_status_config as cfg
import sqlalchemy as sa
from airflow.sdk import DAG, AssetAlias, TaskGroup, task, task_group

from airflow_provider_phonestatus import feed
from airflow_provider_phonestatus.operators.phonestatus import PhoneStatusCheckOperator
from airflow_provider_phonestatus.vocabulary import PhoneStatus
from airflow_provider_phonestatus.warehouse.engine import sqlalchemy_engine
from airflow_provider_phonestatus.warehouse.runlog import RunLog, runs_table

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef,unused-ignore]

DAG_ID = "phone_status_revalidation"
REFRESH_TASK = "refresh"
CHECK_TASK = "check_dead_share"
#: The mapped task group of ``PHONESTATUS_PARALLEL_TABLES=true``: ``tables.refresh[i]``.
PARALLEL_GROUP = "tables"

#: Statuses that say the line is gone or going; ``unavailable`` is deliberately not one of them.
DEAD_STATUSES = feed.DEAD_STATUSES
#: Statuses only the vendor gives: the denominator of the share.
ANSWERED_STATUSES = tuple(status for status in PhoneStatus if status.is_vendor_answer)
log = logging.getLogger(__name__)
#: Skew allowed between the worker's clock (run log) and the scheduler's (DAG run dates).
CLOCK_SKEW = dt.timedelta(minutes=5)


def dead_share(status_counts: dict[str, int]) -> tuple[int, int]:
    """(dead rows, rows the vendor answered) from a run log's ``status_counts``."""
    dead = sum(int(status_counts.get(s, 0)) for s in DEAD_STATUSES)
    answered = sum(int(status_counts.get(s, 0)) for s in ANSWERED_STATUSES)
    return dead, answered


def judge(
    current: dict[str, int],
    baseline: dict[str, int] | None,
    *,
    warn: float,
    fail: float,
    min_answers: float,
) -> dict[str, Any]:
    """Compare two runs' dead shares; ``verdict`` is ok, warn, fail, no_baseline or too_few."""
    dead, answered = dead_share(current)
    out: dict[str, Any] = {"dead": dead, "answered": answered, "warn_above": warn, "fail_above": fail}
    out["share"] = round(dead / answered, 4) if answered else None
    if baseline is None:
        return {**out, "verdict": "no_baseline"}
    base_dead, base_answered = dead_share(baseline)
    out.update(baseline_dead=base_dead, baseline_answered=base_answered)
    out["baseline_share"] = round(base_dead / base_answered, 4) if base_answered else None
    if answered < max(min_answers, 1) or base_answered < max(min_answers, 1):
        return {**out, "verdict": "too_few"}
    jump = dead / answered - base_dead / base_answered
    out["jump"] = round(jump, 4)
    verdict = "fail" if jump > fail else "warn" if jump > warn else "ok"
    return {**out, "verdict": verdict}


@task(task_id=CHECK_TASK)
def check_dead_share(table: str, refresh_task_id: str, status_asset: str | None = None) -> dict[str, Any]:
    """Compare this run's dead share with the previous successful DAG run's; warn or fail. On
    success the table's asset event carries the refresh's counts and times (``status_asset``:
    emitted through the task's asset alias, for a check mapped over tables)."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    try:
        warn = cfg.number_variable(cfg.VAR_DEAD_SHARE_WARN, cfg.DEFAULT_DEAD_SHARE_WARN, high=1.0)
        fail = cfg.number_variable(cfg.VAR_DEAD_SHARE_FAIL, cfg.DEFAULT_DEAD_SHARE_FAIL, high=1.0)
        min_answers = cfg.number_variable(cfg.VAR_DEAD_SHARE_MIN_ANSWERS, cfg.DEFAULT_DEAD_SHARE_MIN_ANSWERS)
        if warn > fail:
            raise cfg.ConfigError(f"the warn threshold {warn} is above the fail threshold {fail}")
    except cfg.ConfigError as exc:
        raise AirflowFailException(str(exc)) from None

    engine = sqlalchemy_engine(cfg.warehouse_conn_id())
    try:
        with engine.connect() as conn:
            this, baseline = runs_to_compare(conn, context, table, refresh_task_id)
    finally:
        engine.dispose()

    result = judge(
        this["status_counts"],
        None if baseline is None else baseline["status_counts"],
        warn=warn,
        fail=fail,
        min_answers=min_answers,
    )
    result.update(table=table, run_id=this["run_id"])
    if baseline is not None:
        result["baseline_run_id"] = baseline["run_id"]
    text = _describe(table, result)
    if result["verdict"] == "fail":
        raise AirflowFailException(
            f"{text}: above the fail threshold, so {table}'s asset is not updated and downstream "
            "DAGs do not run on these statuses. Check the vendor and the last load; if the change "
            "is real, mark this DAG run successful and it becomes the next run's baseline."
        )
    if result["verdict"] == "warn":
        log.warning("%s: above the warn threshold", text)
    else:
        log.info("%s", text)
    # the asset event's extra: this refresh, for DAGs scheduled on it
    feed.attach(context, this, status_asset)
    return result


def runs_to_compare(
    conn: sa.Connection, context: Any, table: str, refresh_task_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """This DAG run's successful refresh of ``table`` from the run log, and the baseline: the
    successful refresh of the previous successful DAG run (None on the first run)."""
    ti, dag_run = context["ti"], context["dag_run"]
    log_name = str(cfg.variable(cfg.VAR_RUN_LOG_TABLE, cfg.DEFAULT_RUN_LOG_TABLE))
    run_log = RunLog(runs_table(log_name))
    refresh = {"dag_id": ti.dag_id, "task_id": refresh_task_id, "table_name": table}
    this = run_log.latest_success(conn, run_id=ti.run_id, **refresh)
    if this is None:
        raise AirflowFailException(f"run log {log_name} has no successful {refresh_task_id} of {ti.run_id}")
    prev_start = context.get("prev_start_date_success")  # lazy: asks Airflow only when used
    if prev_start:
        # Rows started while the previous successful DAG run ran: its refresh is the latest.
        prev_end = context.get("prev_end_date_success")
        baseline = run_log.latest_success(
            conn,
            started_from=prev_start - CLOCK_SKEW,
            started_to=prev_end or this["started_at"],
            other_than=this["run_uid"],
            **refresh,
        )
    elif getattr(dag_run, "logical_date", None) is None:
        # A run without a logical date: Airflow cannot name the previous successful run, so the
        # previous successful refresh in the run log is the best baseline there is.
        baseline = run_log.previous(conn, before_uid=this["run_uid"], **refresh)
    else:
        baseline = None
    return this, baseline


def _describe(table: str, result: dict[str, Any]) -> str:
    share = result.get("share")
    now = "n/a" if share is None else f"{share:.1%}"
    verdict = result["verdict"]
    if verdict == "no_baseline":
        return f"dead share of {table}: {now} of {result['answered']} answers; no previous successful run"
    base = result.get("baseline_share")
    before = "n/a" if base is None else f"{base:.1%}"
    if verdict == "too_few":
        return (
            f"dead share of {table}: {now} of {result['answered']} answers vs {before} of "
            f"{result['baseline_answered']} before; too few answers to compare"
        )
    return (
        f"dead share of {table}: {before} -> {now} ({result['jump'] * 100:+.1f} pp; warn above "
        f"{result['warn_above'] * 100:.1f} pp, fail above {result['fail_above'] * 100:.1f} pp)"
    )


@task_group(group_id=PARALLEL_GROUP)
def revalidate_table(table: str, key_column: Any, phone_column: str, status_asset: str) -> None:
    """Refresh and check one table; mapped over the allow-list, every table runs at once, each
    taking a fair share of the key's shared rate limit (no pool)."""
    refresh = PhoneStatusCheckOperator(
        task_id=REFRESH_TASK,
        conn_id=cfg.warehouse_conn_id(),
        table=table,
        key_column=key_column,
        phone_column=phone_column,
        max_checks=cfg.MAX_CHECKS_TEMPLATE,
        time_budget=cfg.TIME_BUDGET_TEMPLATE,
        shared_rate_limit=True,  # fails before any request if the connection's limit is not shared
        retries=2,
        retry_delay=dt.timedelta(minutes=15),
    )
    check = check_dead_share.override(outlets=[AssetAlias(cfg.STATUS_ALIAS)])(
        table=table, refresh_task_id=refresh.task_id, status_asset=status_asset
    )
    refresh >> check


with DAG(
    dag_id=DAG_ID,
    description="Nightly phone-status revalidation within the plan's rate, with a dead-share check",
    schedule=cfg.revalidation_timetable(),
    start_date=pendulum.datetime(2026, 1, 1, tz=cfg.timezone_name()),
    catchup=False,
    max_active_runs=1,
    user_defined_macros={"phonestatus_budget": cfg.budget_macro(cfg.phonestatus_conn_id())},
    default_args=cfg.default_args(),
    tags=["phonestatus"],
    doc_md=__doc__,
) as dag:
    if cfg.parallel_tables():
        revalidate_table.expand_kwargs(cfg.table_arguments())
    else:
        for table in cfg.tables().values():
            with TaskGroup(group_id=table.slug, tooltip=f"revalidate {table.name}"):
                refresh = PhoneStatusCheckOperator(
                    task_id=REFRESH_TASK,
                    conn_id=cfg.warehouse_conn_id(),
                    table=table.name,
                    key_column=table.operator_key_column(),
                    phone_column=table.phone_column,
                    max_checks=cfg.MAX_CHECKS_TEMPLATE,
                    time_budget=cfg.TIME_BUDGET_TEMPLATE,
                    pool=cfg.pool_name(),  # the check below sends nothing and needs no slot
                    retries=2,  # a vendor outage: the retry pays only for what was not saved
                    retry_delay=dt.timedelta(minutes=15),
                )
                check = check_dead_share.override(outlets=[table.status_asset()])(
                    table=table.name, refresh_task_id=refresh.task_id
                )
                refresh >> check
