"""``PhoneStatusCheckOperator``: keep a warehouse table's phone-status columns fresh, cheaply.

The operator is thin: it resolves the connections, checks its arguments, and hands one table to
:class:`~airflow_provider_phonestatus.refresh.TableRefresh`, recording the run in the run log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from airflow.sdk import BaseOperator

from airflow_provider_phonestatus import feed
from airflow_provider_phonestatus.exceptions import BatchStopped, PhoneStatusConfigError
from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
from airflow_provider_phonestatus.lineage import table_lineage
from airflow_provider_phonestatus.refresh import RefreshOptions, TableRefresh
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.summary import RunSummary
from airflow_provider_phonestatus.warehouse.access import check_access, portable_path
from airflow_provider_phonestatus.warehouse.columns import StatusColumns
from airflow_provider_phonestatus.warehouse.engine import sqlalchemy_engine
from airflow_provider_phonestatus.warehouse.lookups import LookupLedger, RunIdentity
from airflow_provider_phonestatus.warehouse.runlog import RunLog
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.table import split_name
from airflow_provider_phonestatus.warehouse.target import TargetTable

if TYPE_CHECKING:
    from airflow.sdk import Context


class PhoneStatusCheckOperator(BaseOperator):
    """Check the due rows of ``table`` and write their phone status columns back.

    :param conn_id: an Airflow SQL connection (a common.sql ``DbApiHook``: ``sqlite``, ``postgres``,
        ``mysql``, ``duckdb``, ...).
    :param table: the table, optionally schema-qualified (``crm.customers``).
    :param status_table: keep the statuses in this table beside ``table`` (schema-qualified
        allowed; created when missing, keyed by the key columns), and only read ``table``.
        None: write the status columns into ``table`` itself.
    :param prune_status_table: after a successful run, delete status rows whose key left the source.
    :param key_column: column (or list of columns) that identifies a row: primary or unique key.
    :param phone_column: the column holding the phone numbers, in any spelling.
    :param phonestatus_conn_id: the ``phonestatus`` connection (API key, plan rate).
    :param max_checks: most numbers sent to the vendor this run (None: no cap). Numbers over the
        cap stay due for the next run; store answers and local labels are not capped.
    :param time_budget: stop starting lookups after this long (timedelta or seconds); answers in
        flight are still saved; what was not reached stays due.
    :param revalidate_after: revalidation ages per status, overriding the defaults
        (``{"active": timedelta(weeks=2), "powered_off": 1}``; numbers are days).
    :param row_filter: structured filter, e.g. ``{"country": "CN", "score": {"op": ">=", "value": 3}}``
        or ``[["region", "in", ["east", "west"]]]``; values are always bound parameters.
    :param dry_run: report due rows, distinct numbers, lookups a run would pay for and the time
        at the plan rate; send and write nothing.
    :param ignore_revalidation_ages: every row matching the filter is due (store answers older
        than this run are ignored too).
    :param column_names: rename written columns, e.g. ``{"status": "mobile_status"}``; roles are
        status, code, carrier, ported, checked_at, order_no, checked_value.
    :param create_columns: add missing status columns (portable types); False fails with the DDL.
    :param results_table: the shared results store (free answers across tables and runs).
    :param run_log_table: one row per run with its counts.
    :param lookups_table: the lookup ledger: one row per paid lookup, for the bill and the history.
    :param batch_size: paid answers per committed batch (free answers are committed in larger ones).
    :param flush_interval: seconds between commits while answers trickle in (a kill loses at most these).
    :param progress_interval: seconds between progress lines in the task log.
    :param shared_rate_limit: this task runs alongside others on one API key (e.g. mapped over
        tables): refuse to start unless the ``phonestatus`` connection shares its rate limit
        through Redis (``rate_limit_redis_conn_id``), and reach that Redis before anything else.
    :param portable_sql: use only portable SQL statements; required to run on a dialect the
        project does not test (refused otherwise).
    :param hook_params: parameters for the SQL connection's hook, as in common.sql operators.
    :param database: overrides the SQL connection's database (schema), as in common.sql operators.
    """

    template_fields: Sequence[str] = (
        "conn_id",
        "database",
        "hook_params",
        "table",
        "status_table",
        "key_column",
        "phone_column",
        "row_filter",
        "max_checks",
        "time_budget",
        "dry_run",
        "ignore_revalidation_ages",
        "revalidate_after",
        "results_table",
        "run_log_table",
        "lookups_table",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"row_filter": "json", "revalidate_after": "json"}
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        conn_id: str,
        table: str,
        key_column: str | Sequence[str],
        phone_column: str,
        phonestatus_conn_id: str = PhoneStatusHook.default_conn_name,
        status_table: str | None = None,
        prune_status_table: bool = False,
        max_checks: int | str | None = None,
        time_budget: dt.timedelta | float | str | None = None,
        revalidate_after: Mapping[str, Any] | None = None,
        row_filter: Mapping[str, Any] | Sequence[Sequence[Any]] | None = None,
        dry_run: bool | str = False,
        ignore_revalidation_ages: bool | str = False,
        column_names: Mapping[str, str] | None = None,
        create_columns: bool = True,
        results_table: str = "phone_status_results",
        run_log_table: str = "phone_status_runs",
        lookups_table: str = "phone_status_lookups",
        batch_size: int = 500,
        flush_interval: float = 1.0,
        progress_interval: float = 30.0,
        portable_sql: bool = False,
        shared_rate_limit: bool = False,
        hook_params: Mapping[str, Any] | None = None,
        database: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.table = table
        self.key_column = key_column
        self.phone_column = phone_column
        self.phonestatus_conn_id = phonestatus_conn_id
        self.status_table = status_table
        self.hook_params = dict(hook_params or {})
        self.database = database
        self.max_checks = max_checks
        self.time_budget = time_budget
        self.revalidate_after = revalidate_after
        self.row_filter = row_filter
        # Shadows BaseOperator.dry_run(), a template-rendering helper nothing in Airflow 3 calls:
        # the issue's and the users' name for this switch wins.
        self.dry_run = dry_run  # type: ignore[assignment, method-assign]
        self.ignore_revalidation_ages = ignore_revalidation_ages
        self.results_table = results_table
        self.run_log_table = run_log_table
        self.lookups_table = lookups_table
        # Not templated: checked when the DAG file is parsed, so a typo fails there, not mid-run.
        self.columns = StatusColumns.with_names(dict(column_names or {}))
        self.create_columns = _flag("create_columns", create_columns)
        self.batch_size = int(_positive("batch_size", batch_size, whole=True))
        self.flush_interval = _positive("flush_interval", flush_interval)
        self.progress_interval = _positive("progress_interval", progress_interval)
        self.prune_status_table = _flag("prune_status_table", prune_status_table)
        self.portable_sql = _flag("portable_sql", portable_sql)
        self.shared_rate_limit = _flag("shared_rate_limit", shared_rate_limit)
        if self.prune_status_table and status_table is None:
            raise PhoneStatusConfigError("prune_status_table needs a status_table")
        self._refresh: TableRefresh | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        dry_run = _flag("dry_run", self.dry_run)
        policy = RevalidationPolicy.from_user(self.revalidate_after)
        hook = PhoneStatusHook(self.phonestatus_conn_id)
        if self.shared_rate_limit and not dry_run:
            hook.require_shared_rate_limit()
        summary = RunSummary(dry_run=dry_run)
        engine = self._engine()
        with _disposed(engine):
            portable = portable_path(engine.dialect, self.portable_sql)  # refused before connecting
            with engine.connect() as conn:
                target = TargetTable.load(
                    conn,
                    self.table,
                    key_columns=self.key_column,
                    phone_column=self.phone_column,
                    columns=self.columns,
                    create_missing=self.create_columns,
                    dry_run=dry_run,
                    status_table=self.status_table or None,
                    portable=portable,
                )
                options = self._options(dry_run, portable)
                store = self._store(conn, dry_run, portable)
                runlog = None if dry_run else RunLog.ensure(conn, self.run_log_table)
                ledger = None if dry_run else LookupLedger.ensure(conn, self.lookups_table, portable=portable)
                check_access(
                    conn,
                    target,
                    [t.table for t in (store, runlog) if t is not None],
                    writes=not dry_run,
                    deletes=portable,
                    prune=self.prune_status_table,
                    appended=[] if ledger is None else [ledger.table],
                )
                run = None if runlog is None else self._start_log(conn, runlog, context)
                run_uid = None if run is None else run.run_uid
                conn.commit()
                self._refresh = TableRefresh(
                    conn, target, store, hook, policy, options, summary, ledger=ledger, run=run
                )
                try:
                    self._refresh.run()
                    if self.prune_status_table and not dry_run:
                        summary.pruned_rows = target.prune(conn)
                        conn.commit()
                    summary.state = "dry_run" if dry_run else "success"
                    if run is not None:
                        self._feed_outlets(context, run, summary)
                except BaseException as exc:
                    summary.state = "failed"
                    summary.error = _cause(exc)
                    raise
                finally:
                    if runlog is not None and run_uid is not None:
                        self._finish_log(conn, runlog, run_uid, summary)
                    self.log.info(
                        "phone status run %s for %s:\n%s", summary.state, self.table, summary.table()
                    )
        return summary.as_xcom()

    def on_kill(self) -> None:
        """Start no new lookup; answers in flight are saved before the task ends."""
        if self._refresh is not None:
            self._refresh.stop_requested.set()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Input and output datasets, and column lineage phone -> status columns (OpenLineage
        provider installed); None otherwise, which OpenLineage treats as "nothing to add"."""
        return table_lineage(
            self._engine().url,
            self.table,
            self.phone_column,
            self.columns,
            self.results_table,
            self.status_table or None,
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _engine(self) -> sa.Engine:
        return sqlalchemy_engine(self.conn_id, hook_params=self.hook_params, database=self.database)

    def _options(self, dry_run: bool, portable: bool) -> RefreshOptions:
        budget = _seconds("time_budget", self.time_budget)
        return RefreshOptions(
            max_checks=_count("max_checks", self.max_checks),
            deadline=None if budget is None else time.monotonic() + budget,
            row_filter=self.row_filter,
            ignore_ages=_flag("ignore_revalidation_ages", self.ignore_revalidation_ages),
            dry_run=dry_run,
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            progress_interval=self.progress_interval,
            portable=portable,
        )

    def _store(self, conn: sa.Connection, dry_run: bool, portable: bool) -> ResultStore | None:
        """The shared store; a dry run reads it if it exists and never creates it."""
        if dry_run:
            schema, name = split_name(self.results_table)
            if not sa.inspect(conn).has_table(name, schema=schema):
                return None
        return ResultStore.ensure(conn, self.results_table, portable=portable)

    def _start_log(self, conn: sa.Connection, runlog: RunLog, context: Context) -> RunIdentity:
        """Record the run as running; its identity goes on every ledger row it writes."""
        ti = context["ti"]
        identity: dict[str, Any] = {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "map_index": ti.map_index if ti.map_index is not None else -1,
            "try_number": ti.try_number or 0,
            "table_name": self.table,
        }
        started_at = dt.datetime.now(dt.UTC)
        run_uid = runlog.start(conn, started_at=started_at, **identity)
        return RunIdentity(run_uid=run_uid, started_at=started_at, **identity)

    def _feed_outlets(self, context: Context, run: RunIdentity, summary: RunSummary) -> None:
        """Attach the run's change counts and times to the events of its outlet assets."""
        if self.outlets:
            ended = dt.datetime.now(dt.UTC)
            record = {"table_name": self.table, "run_uid": run.run_uid, "started_at": run.started_at}
            feed.attach(context, {**summary.as_xcom(), **record, "ended_at": ended})

    def _finish_log(self, conn: sa.Connection, runlog: RunLog, run_uid: str, summary: RunSummary) -> None:
        try:
            conn.rollback()  # whatever was cut off; answers were committed batch by batch
            runlog.finish_run(conn, run_uid, summary)
            conn.commit()
        except Exception:
            self.log.exception("could not record the run in %s", self.run_log_table)


@contextlib.contextmanager
def _disposed(engine: sa.Engine) -> Iterator[None]:
    """One engine per run: its pool (and the write-behind connection's) is closed at the end."""
    try:
        yield
    finally:
        engine.dispose()


def _cause(exc: BaseException) -> str:
    if isinstance(exc, BatchStopped):
        return f"{exc.cause}: {exc}"[:255]
    return f"{type(exc).__name__}: {exc}"[:255]


def _flag(name: str, value: Any) -> bool:
    """Booleans may arrive rendered from templates as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise PhoneStatusConfigError(f"{name} must be true or false, got {value!r}")


def _positive(name: str, value: Any, *, whole: bool = False) -> float:
    """A tuning argument: a positive number (a whole one if ``whole``), never a bool or text."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
        or (whole and not float(value).is_integer())
    ):
        kind = "a whole number > 0" if whole else "a number > 0"
        raise PhoneStatusConfigError(f"{name} must be {kind}, got {value!r}")
    return float(value)


def _count(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        raise PhoneStatusConfigError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or number < 0:
        raise PhoneStatusConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    return number


def _seconds(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise PhoneStatusConfigError(f"{name} must be a timedelta or seconds, got {value!r}") from None
    if seconds < 0:
        raise PhoneStatusConfigError(f"{name} must not be negative")
    return seconds
