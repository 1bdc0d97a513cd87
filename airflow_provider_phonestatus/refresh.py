"""One run over a table: due rows -> numbers -> store or lookups -> results -> table, in one pass.

Money and data rules this module enforces:

* invalid and unsupported values are labelled locally; each distinct number is asked at most once
  per run (answered, in flight, or failed: never again this run), and a number the results store
  holds fresh is answered from it for free;
* answers are committed in small batches (by count and by time) to the store and the table in
  one transaction, so a killed worker loses at most the requests in flight and one batch, and a
  rerun finds every committed answer in the store;
* a failure never overwrites a status: the row stays due for the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.batch import LookupBatch
from airflow_provider_phonestatus.exceptions import PhoneStatusError
from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook
from airflow_provider_phonestatus.numbers import parse_number
from airflow_provider_phonestatus.progress import Progress
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.summary import RunSummary
from airflow_provider_phonestatus.vocabulary import PhoneStatus, PhoneStatusResult
from airflow_provider_phonestatus.warehouse.due import DueList, DueRow
from airflow_provider_phonestatus.warehouse.store import ResultStore
from airflow_provider_phonestatus.warehouse.table import TargetTable
from airflow_provider_phonestatus.warehouse.writer import RowUpdate, RowWriter

log = logging.getLogger(__name__)

#: Due rows waiting for one number's answer: (key, phone_text, phone changed since last check).
Waiting = list[tuple[tuple[object, ...], str | None, bool]]


class TaskStopped(PhoneStatusError):
    """The task was told to stop (kill, timeout); everything answered was saved first."""


@dataclass(frozen=True)
class RefreshOptions:
    max_checks: int | None = None  #: cap on numbers sent to the vendor this run
    deadline: float | None = None  #: time.monotonic() after which no lookup starts
    row_filter: Any = None  #: the structured filter as given; compiled against the table
    ignore_ages: bool = False
    dry_run: bool = False
    page_size: int = 5000
    batch_size: int = 500  #: paid answers per committed write batch
    free_batch_size: int = 20000  #: rows answered for free (store, local labels) per commit
    flush_interval: float = 5.0  #: seconds between commits while answers trickle in
    progress_interval: float = 30.0


class TableRefresh:
    """Refreshes the status columns of one table on one connection; ``run()`` once."""

    def __init__(
        self,
        conn: sa.Connection,
        target: TargetTable,
        store: ResultStore | None,
        hook: PhoneStatusHook,
        policy: RevalidationPolicy,
        options: RefreshOptions,
        summary: RunSummary | None = None,
    ) -> None:
        self.conn = conn
        self.target = target
        self.store = store
        self.hook = hook
        self.policy = policy
        self.options = options
        self.summary = summary or RunSummary(dry_run=options.dry_run)
        self.stop_requested = threading.Event()
        self.now = dt.datetime.now(dt.UTC)
        # Which store entries count as fresh: by age, or when ignoring ages only this run's answers.
        self._store_policy = RevalidationPolicy.answered_since() if options.ignore_ages else policy
        self._writer = None if options.dry_run else RowWriter(target)
        self._seen: set[int] = set()  # distinct numbers of this run, as ints (compact)
        self._waiting: dict[str, Waiting] = {}  # submitted, answer not yet taken
        self._unsaved: dict[str, PhoneStatusResult] = {}  # answered, not yet committed to the store
        self._failed: set[str] = set()  # asked this run without an answer: never again this run
        self._dry_asked: set[str] = set()  # dry run: numbers a real run would ask
        self._rows: list[RowUpdate] = []
        self._stored: list[tuple[str, PhoneStatusResult]] = []
        self._submitted = 0
        self._last_flush = time.monotonic()

    # -- the pass --------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        opts = self.options
        due = DueList.create(
            self.conn,
            self.target,
            self.policy,
            self.now,
            row_filter=opts.row_filter,
            ignore_ages=opts.ignore_ages,
        )
        self.summary.due_rows = due.total
        progress = Progress(due.total, opts.progress_interval)
        batch = LookupBatch(self.hook.client)
        failed = True
        try:
            with due, batch:
                for page in due.pages(opts.page_size):
                    if self._should_stop_reading(batch):
                        self.summary.deferred_rows += len(page)
                        continue
                    self._absorb(page, batch)
                    self._take(batch, timeout=0)
                    while not batch.has_room and not self._should_stop_reading(batch):
                        self._take(batch, timeout=0.2)
                    progress.maybe_log(self._rows_done(), self.hook.stats.lookups_ok, batch.outstanding)
                batch.close()
                while not batch.finished:
                    self._check_stop(batch)
                    self._take(batch, timeout=0.2)
                    progress.maybe_log(self._rows_done(), self.hook.stats.lookups_ok, batch.outstanding)
            failed = False
        finally:
            self._save_what_arrived(batch, failed)
            self._count_stats()
        if batch.error is not None:
            raise batch.error
        if self.stop_requested.is_set():
            raise TaskStopped("the task was stopped; every answer received was saved first")
        return self.summary

    def _save_what_arrived(self, batch: LookupBatch, failed: bool) -> None:
        """Commit every answer already paid for, also when the run is failing (e.g. a timeout)."""
        try:
            if failed:
                self.conn.rollback()  # a statement may have been cut off mid-way
            self._take(batch, timeout=0)
            self._flush()
        except Exception:
            if not failed:
                raise
            log.exception("could not save %d answered rows while the run was failing", len(self._rows))

    def _rows_done(self) -> int:
        return self.summary.rows_written + len(self._rows)

    def _should_stop_reading(self, batch: LookupBatch) -> bool:
        self._check_stop(batch)
        return batch.halted

    def _check_stop(self, batch: LookupBatch) -> None:
        """Kill or time budget: start no new lookup; answers in flight still arrive and are saved."""
        deadline = self.options.deadline
        if self.stop_requested.is_set() or (deadline is not None and time.monotonic() >= deadline):
            batch.halt()

    def _absorb(self, page: list[DueRow], batch: LookupBatch) -> None:
        """Label locally, attach to numbers already asked, answer from the store, ask the rest."""
        fresh_needed: dict[str, Waiting] = {}
        for row in page:
            parsed = parse_number(row.phone)
            changed = row.urgency < 2
            if parsed.national is None:
                self.summary.local_labels += 1
                self._emit(
                    row.key,
                    row.phone_text,
                    changed,
                    PhoneStatusResult.local(PhoneStatus(parsed.kind.value), parsed.reason),
                )
                continue
            national = parsed.national
            self._seen.add(int(national))
            if national in self._waiting:
                self._waiting[national].append((row.key, row.phone_text, changed))
            elif national in self._unsaved:
                self._emit(row.key, row.phone_text, changed, self._unsaved[national])
            elif national in self._failed:
                self.summary.deferred_rows += 1
            elif national in self._dry_asked:
                continue
            else:
                fresh_needed.setdefault(national, []).append((row.key, row.phone_text, changed))
        stored = self._from_store(fresh_needed)
        for national, rows in fresh_needed.items():
            if national in stored:
                for key, text, changed in rows:
                    self._emit(key, text, changed, stored[national])
            elif self._may_ask():
                self._submitted += 1
                if self.options.dry_run:
                    self._dry_asked.add(national)
                else:
                    self._waiting[national] = rows
                    batch.submit(national)
            else:
                self.summary.deferred_rows += len(rows)
        self.summary.distinct_numbers = len(self._seen)
        self._maybe_flush()

    def _from_store(self, wanted: dict[str, Waiting]) -> dict[str, PhoneStatusResult]:
        if self.store is None or not wanted:
            return {}
        found = self.store.fresh(self.conn, list(wanted), self._store_policy, self.now)
        self.summary.from_store += len(found)
        return found

    def _may_ask(self) -> bool:
        cap = self.options.max_checks
        return cap is None or self._submitted < cap

    def _take(self, batch: LookupBatch, timeout: float) -> None:
        """Take the answers that arrived; attach them to their waiting rows."""
        for national, result in batch.results(timeout=timeout):
            rows = self._waiting.pop(national, [])
            if result is None or not result.is_answer:
                self._failed.add(national)
                if result is not None:
                    self.summary.failures += 1
                self.summary.deferred_rows += len(rows)
                continue
            if result.status is PhoneStatus.REJECTED:
                self.summary.failures += 1
            self._unsaved[national] = result
            self._stored.append((national, result))
            for key, text, changed in rows:
                self._emit(key, text, changed, result)
        self._maybe_flush()

    def _emit(
        self, key: tuple[object, ...], phone_text: str | None, changed: bool, result: PhoneStatusResult
    ) -> None:
        """Queue one row's write, unless it would replace a vendor status with a refusal."""
        if result.status is PhoneStatus.REJECTED and not changed:
            self.summary.deferred_rows += 1
            return
        self._rows.append(RowUpdate(key, phone_text, result))
        self.summary.status_counts[result.status.value] += 1

    # -- writes ----------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        """Paid answers are committed in small batches (by count and by time): they are money.
        Free ones (store answers, local labels) wait for a large batch: redoing them costs nothing."""
        opts = self.options
        paid_due = len(self._stored) >= opts.batch_size or (
            self._stored and time.monotonic() - self._last_flush >= opts.flush_interval
        )
        if paid_due or len(self._rows) >= opts.free_batch_size:
            self._flush()

    def _flush(self) -> None:
        """Store answers and row statuses in one transaction, then forget them from memory."""
        self._last_flush = time.monotonic()
        if self.options.dry_run or self._writer is None or not (self._rows or self._stored):
            self._rows.clear()
            return
        if self.store is not None and self._stored:
            self.store.save(self.conn, self._stored)
        self.summary.rows_written += self._writer.write(self.conn, self._rows)
        self.conn.commit()
        self._rows.clear()
        self._stored.clear()
        self._unsaved.clear()

    def _count_stats(self) -> None:
        stats = self.hook.stats.as_dict()
        self.summary.requests_sent = stats["requests_sent"]
        self.summary.paid_lookups = stats["lookups_ok"]
        self.summary.throttled = stats["throttled"]
        self.summary.retries = stats["retries"]
        if self.options.dry_run:
            self.summary.lookups_to_pay = self._submitted
            self.summary.seconds_at_plan_rate = self._submitted * self.hook.settings.interval
