"""One run over a table: due rows -> numbers -> store or lookups -> results -> table, in one pass.

Money and data rules this module enforces:

* invalid and unsupported values are labelled locally; each distinct number is asked at most once
  per run (answered, in flight, or failed: never again this run), and a number the results store
  holds fresh is answered from it for free;
* answers are committed in small batches (by count and by time) to the store, the lookup ledger
  (paid ones) and the table in one transaction, so a killed worker loses at most the requests in
  flight and one batch, a rerun finds every committed answer in the store, and every stored
  answer has its one ledger row;
* each stored answer carries its number's history on, and its rows are written with it;
* tasks sharing the key's limit claim the numbers they ask (:mod:`~.claims`): tables refreshed at
  once pay once for a number they share;
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

from airflow_provider_phonestatus.batch import HELD, LookupBatch
from airflow_provider_phonestatus.collector import fewer_gc_passes
from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError, TaskStopped
from airflow_provider_phonestatus.history import is_change
from airflow_provider_phonestatus.hooks.phonestatus import PhoneStatusHook, local_label
from airflow_provider_phonestatus.number_set import NumberSet
from airflow_provider_phonestatus.numbers import ParsedNumber, parse_national
from airflow_provider_phonestatus.progress import Progress
from airflow_provider_phonestatus.revalidation import RevalidationPolicy
from airflow_provider_phonestatus.summary import RunSummary
from airflow_provider_phonestatus.vocabulary import PhoneStatus, PhoneStatusResult
from airflow_provider_phonestatus.warehouse.due import DueList
from airflow_provider_phonestatus.warehouse.lookups import LookupLedger, RunIdentity
from airflow_provider_phonestatus.warehouse.store import (
    REJECTED_HISTORY,
    STORED_COLUMNS,
    ResultStore,
    StoredValues,
)
from airflow_provider_phonestatus.warehouse.target import TargetTable
from airflow_provider_phonestatus.warehouse.write_behind import WriteBehind
from airflow_provider_phonestatus.warehouse.writer import RowWriter

log = logging.getLogger(__name__)

#: Due rows waiting for one number's answer: (key, phone_text, phone changed since last check).
Waiting = list[tuple[tuple[object, ...], str | None, bool]]
#: Rows to write with one answer (a result, or a store answer's values), as ``RowWriter.write_groups``
#: takes them.
Answered = tuple[PhoneStatusResult | StoredValues, Waiting]


_REJECTED = PhoneStatus.REJECTED.value
_PREVIOUS = STORED_COLUMNS.index("previous_status")  #: a store answer's previous status


@dataclass(frozen=True)
class RefreshOptions:
    max_checks: int | None = None  #: cap on numbers sent to the vendor this run
    deadline: float | None = None  #: time.monotonic() after which no lookup starts
    row_filter: Any = None  #: the structured filter as given; compiled against the table
    ignore_ages: bool = False
    dry_run: bool = False
    page_size: int = 20_000  #: due rows read per statement (and store lookups per page)
    batch_size: int = 500  #: paid answers per committed write batch
    free_batch_size: int = 20000  #: rows answered for free (store, local labels) per commit
    flush_interval: float = 1.0  #: seconds between commits while answers trickle in
    progress_interval: float = 30.0
    portable: bool = False  #: only statements every SQL database runs (an untested dialect)


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
        *,
        ledger: LookupLedger | None = None,
        run: RunIdentity | None = None,
    ) -> None:
        if (ledger is None) != (run is None):
            raise PhoneStatusConfigError("the lookup ledger needs the run's identity, and only it")
        if store is None and not options.dry_run:
            # A number met again after its answer's batch was committed is found in the store;
            # without one it would be asked (and paid for) a second time in the same run.
            raise PhoneStatusConfigError(
                "a refresh that writes needs the results store (only a dry run may go without)"
            )
        self.conn, self.target, self.store, self.hook = conn, target, store, hook
        self.ledger, self.run_identity = ledger, run
        self.policy, self.options = policy, options
        self.summary = summary or RunSummary(dry_run=options.dry_run)
        self.stop_requested = threading.Event()
        self.now = dt.datetime.now(dt.UTC)
        # Which store entries count as fresh: by age, or when ignoring ages only this run's answers.
        self._store_policy = RevalidationPolicy.answered_since() if options.ignore_ages else policy
        self._writer = None if options.dry_run else RowWriter(target, portable=options.portable)
        self._behind: WriteBehind | None = None  # free rows written on a second connection
        # Distinct numbers of this run: millions in a large table, so not a Python set (~70 bytes
        # a number) but a temporary SQLite B-tree (~11 bytes a number, bounded page cache).
        self._seen = NumberSet()
        self._waiting: dict[str, Waiting] = {}  # submitted, answer not yet taken
        self._unsaved: dict[str, PhoneStatusResult] = {}  # answered, not yet committed to the store
        self._failed: set[str] = set()  # asked this run without an answer: never again this run
        #: one local label per verdict and write batch (rows share it: made and converted once)
        self._labels: dict[ParsedNumber, PhoneStatusResult] = {}
        self._dry_asked = NumberSet()  # dry run: numbers a real run would ask (as many as due)
        self._rows: list[Answered] = []  # answered rows not yet written, grouped by result
        self._row_count = 0  # rows in self._rows
        self._stored: list[tuple[str, PhoneStatusResult]] = []
        self._submitted = 0
        self._last_flush = time.monotonic()
        #: tasks sharing the key's limit claim the numbers they ask (:mod:`~.claims`)
        self._claims = None if options.dry_run else hook.number_claims()

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
            portable=opts.portable,
        )
        self.summary.due_rows = due.total
        progress = Progress(due.total, opts.progress_interval)
        batch = self.hook.lookup_session(claims=self._claims)
        if self._writer is not None and not opts.portable and WriteBehind.suits(self.conn):
            self._behind = WriteBehind(self.conn.engine, self.target)
        failed = True
        try:
            with due, batch, fewer_gc_passes():
                for page in due.raw_pages(opts.page_size):
                    self._take(batch, timeout=0)  # what arrived while the page was read: committed on time
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
                self._settle_held(batch)
            failed = False
        finally:
            try:
                self._save_what_arrived(batch, failed)
                self._count_stats()
            finally:
                self._seen.close()
                self._dry_asked.close()
                if self._claims is not None:
                    self._claims.close()  # never raises: unreleased claims expire by themselves
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
            if self._behind is not None:
                self.summary.rows_written += self._behind.wait()
        except Exception:
            if not failed:
                raise
            log.exception("could not save %d answered rows while the run was failing", self._row_count)
        finally:
            if self._behind is not None:
                self._behind.close()

    def _rows_done(self) -> int:
        return self.summary.rows_written + self._row_count

    def _should_stop_reading(self, batch: LookupBatch) -> bool:
        self._check_stop(batch)
        return batch.halted

    def _check_stop(self, batch: LookupBatch) -> None:
        """Kill or time budget: start no new lookup; answers in flight still arrive and are saved."""
        deadline = self.options.deadline
        if self.stop_requested.is_set() or (deadline is not None and time.monotonic() >= deadline):
            batch.halt()

    def _absorb(self, page: list[tuple[Any, ...]], batch: LookupBatch) -> None:
        """Label locally, attach to numbers already asked, answer from the store, ask the rest.

        ``page`` holds ``DueList.raw_pages`` tuples: (key, phone, phone_text, status, urgency).
        """
        fresh_needed: dict[str, Waiting] = {}
        waiting, unsaved, failed, labels = self._waiting, self._unsaved, self._failed, self._labels
        emit = self._emit
        for key, phone, phone_text, _, urgency in page:
            national = parse_national(phone)
            changed = urgency < 2
            if not isinstance(national, str):
                self.summary.local_labels += 1
                if (label := labels.get(national)) is None:
                    label = labels[national] = local_label(national)
                emit(key, phone_text, changed, label)
                continue
            if national in waiting:
                waiting[national].append((key, phone_text, changed))
            elif national in unsaved:
                emit(key, phone_text, changed, unsaved[national])
            elif national in failed:
                self.summary.deferred_rows += 1
            elif (rows := fresh_needed.get(national)) is not None:
                rows.append((key, phone_text, changed))
            else:
                fresh_needed[national] = [(key, phone_text, changed)]
        stored = self._from_store(fresh_needed)
        # Every other number of the page was met on an earlier page. Store answers are counted for
        # the numbers met here first, so a number answered on several pages counts once, and a
        # paid answer read back later never (its number was met before it was asked).
        new_stored = self._seen.add(stored)
        self.summary.from_store += new_stored
        rest = fresh_needed.keys() - stored.keys()
        met_before = len(fresh_needed) - new_stored - self._seen.add(rest)
        if met_before and self._dry_asked:  # dry run: asked on an earlier page, as if in flight
            for national in self._dry_asked.members(list(rest)):
                del fresh_needed[national]
        asked: list[str] = []
        written, counts = self._rows, self.summary.status_counts
        for national, rows in fresh_needed.items():
            if (answer := stored.get(national)) is not None:
                if answer[0] == _REJECTED:
                    self._emit_stored(rows, answer)
                else:  # _emit_stored's common case, inline: most rows of a large table end here
                    written.append((answer, rows))
                    self._row_count += len(rows)
                    counts[answer[0]] += len(rows)
                    if (previous := answer[_PREVIOUS]) is not None and previous != answer[0]:
                        self.summary.count_change(previous, answer[0], len(rows))  # the answer saw a change
            elif self._may_ask():
                self._submitted += 1
                if self.options.dry_run:
                    asked.append(national)
                else:
                    self._waiting[national] = rows
                    batch.submit(national)
            else:
                self.summary.deferred_rows += len(rows)
        self._dry_asked.add(asked)
        self.summary.distinct_numbers = len(self._seen)
        self._maybe_flush()

    def _from_store(self, wanted: dict[str, Waiting]) -> dict[str, StoredValues]:
        """Fresh store answers, as the values their rows receive (no result object per number)."""
        if self.store is None or not wanted:
            return {}
        return self.store.fresh_values(self.conn, list(wanted), self._store_policy, self.now)

    def _may_ask(self) -> bool:
        cap = self.options.max_checks
        return cap is None or self._submitted < cap

    def _take(self, batch: LookupBatch, timeout: float) -> None:
        """Take the answers that arrived; attach them to their waiting rows."""
        for national, result in batch.results(timeout=timeout):
            rows = self._waiting.pop(national, [])
            if result is HELD and self._claims is not None:  # another task asks it: not sent
                self._submitted -= 1
                self._claims.hold(national, rows)
                continue
            if result is None or not result.is_answer:
                self._failed.add(national)
                if self._claims is not None:  # no answer will come: the others stop waiting
                    self._claims.release([national])
                if result is not None:
                    self.summary.failures += 1
                self.summary.deferred_rows += len(rows)
                continue
            if result.status is PhoneStatus.REJECTED:
                self.summary.failures += 1
            self._unsaved[national] = result
            self._stored.append((national, result))
            self._emit_all(rows, result)
        self._maybe_flush()

    def _emit(
        self, key: tuple[object, ...], phone_text: str | None, changed: bool, result: PhoneStatusResult
    ) -> None:
        """Queue one row's write, unless it would replace a vendor status with a refusal."""
        status = result.status
        if status is PhoneStatus.REJECTED and not changed:
            self.summary.deferred_rows += 1
            return
        self._rows.append((result, [(key, phone_text, changed)]))
        self._row_count += 1
        self.summary.status_counts[status.value] += 1

    def _emit_stored(self, rows: Waiting, answer: StoredValues) -> None:
        """:meth:`_emit_all` for a store answer: a stored refusal carries no history onto rows,
        and an answer that saw its number's status change is counted as a change."""
        if answer[0] == _REJECTED:
            answer = (*answer[:_PREVIOUS], *REJECTED_HISTORY)  # type: ignore[assignment]
        elif (previous := answer[_PREVIOUS]) is not None and previous != answer[0]:
            self.summary.count_change(previous, answer[0], len(rows))
        self._emit_all(rows, answer)

    def _emit_all(self, rows: Waiting, answer: PhoneStatusResult | StoredValues) -> None:
        """:meth:`_emit` for each of ``rows`` waiting for one number's answer: a result, or a
        store answer's values (``ResultStore.fresh_values``, status first)."""
        status: str = answer[0] if isinstance(answer, tuple) else answer.status.value
        if status == _REJECTED:  # a refusal never replaces a vendor status
            kept = [row for row in rows if row[2]]
            self.summary.deferred_rows += len(rows) - len(kept)
            rows = kept
        if rows:
            self._rows.append((answer, rows))
            self._row_count += len(rows)
            self.summary.status_counts[status] += len(rows)

    def _settle_held(self, batch: LookupBatch) -> None:
        """Rows of numbers another task was asking: written with its answers once they are in the
        store; left due if its claim ends without one, or at this run's deadline or stop."""
        claims = self._claims
        while claims is not None and claims.held:
            self._flush()
            self.conn.commit()  # a new snapshot: the other task's commits become visible
            for national, values in self._from_store(claims.held).items():
                self.summary.from_store += 1
                self._emit_stored(claims.held.pop(national), values)
            self._check_stop(batch)
            self.summary.deferred_rows += sum(map(len, claims.give_up(everything=batch.halted)))
            if claims.held:
                time.sleep(claims.POLL)

    # -- writes ----------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        """Paid answers are committed in small batches (by count and by time): they are money.
        Free ones (store answers, local labels) wait for a large batch: redoing them costs nothing."""
        opts = self.options
        paid_due = len(self._stored) >= opts.batch_size or (
            self._stored and time.monotonic() - self._last_flush >= opts.flush_interval
        )
        if paid_due or self._row_count >= opts.free_batch_size:
            self._flush()

    def _flush(self) -> None:
        """Store answers and row statuses in one transaction, then forget them from memory. With
        write-behind, a batch of free rows only is handed to the second connection instead."""
        self._last_flush = time.monotonic()
        self._labels.clear()
        if self.options.dry_run or self._writer is None or not (self._rows or self._stored):
            self._rows.clear()
            self._row_count = 0
            return
        if self._behind is not None:
            if not self._stored:  # free rows only: written behind while the run goes on
                rows, self._rows, self._row_count = self._rows, [], 0
                self.summary.rows_written += self._behind.submit(rows)
                return
            self.summary.rows_written += self._behind.wait()  # paid answers: now, on this connection
        if self.store is not None and self._stored:
            self._save_paid()
        self.summary.rows_written += self._writer.write_groups(self.conn, self._rows)
        self.conn.commit()
        saved = [national for national, _ in self._stored]
        self._rows.clear()
        self._row_count = 0
        self._stored.clear()
        self._unsaved.clear()
        if self._claims is not None and saved:  # committed: the others read them from the store
            self._claims.release(saved, saved=True)

    def _save_paid(self) -> None:
        """Store this batch's answers with their numbers' history and append the paid ones to
        the ledger (same transaction); the rows waiting for them are written with that history."""
        assert self.store is not None
        saved = dict(self.store.save(self.conn, self._stored))
        if self.ledger is not None and self.run_identity is not None:
            self.ledger.append(self.conn, self.run_identity, list(saved.items()))
        with_history = {id(result): saved[national] for national, result in self._stored if national in saved}
        groups = self._rows
        for i, (answer, rows) in enumerate(groups):
            if isinstance(answer, tuple) or (stored := with_history.get(id(answer))) is None:
                continue
            groups[i] = (stored, rows)
            status = stored.status.value
            if is_change(stored.previous_status, status):
                self.summary.count_change(stored.previous_status, status, len(rows))  # type: ignore[arg-type]

    def _count_stats(self) -> None:
        self.summary.count_requests(self.hook.stats.as_dict())
        if self.options.dry_run:
            self.summary.lookups_to_pay = self._submitted
            self.summary.seconds_at_plan_rate = self.hook.seconds_at_plan_rate(self._submitted)
