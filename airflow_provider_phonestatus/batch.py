"""Lookups fed while they run: numbers go in as due rows are read, answers come out as they arrive.

The operator cannot know its numbers up front (it pages through due rows, and most answers come
from the results store), so the engine takes submissions while working, with a bounded backlog,
and can be halted: no new request starts, the requests already in flight finish and their paid
answers are delivered. :func:`lookup_all` is the same for a known list.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from airflow_provider_phonestatus.client import LookupClient
from airflow_provider_phonestatus.exceptions import BatchStopped
from airflow_provider_phonestatus.transport import Channel
from airflow_provider_phonestatus.vocabulary import PhoneStatusResult

if TYPE_CHECKING:
    from airflow_provider_phonestatus.claims import NumberClaims

#: A delivered item: the number and its result, or None when the batch halted before asking.
Delivery = tuple[str, PhoneStatusResult | None]
#: Delivered instead of a result when another task on the shared limit was asking the number
#: (:mod:`~.claims`): nothing was sent; that task's answer will be in the results store.
HELD = PhoneStatusResult.failed("asked by another task on the key")
_STOP = ""  # sentinel on the work queue: no more input for this worker
#: Workers a batch starts with; more start while they would raise the request rate.
INITIAL_WORKERS = 4
#: Seconds between two decisions to add workers.
GROWTH_INTERVAL = 0.05
#: Process CPU (cores) above which more threads cannot help: the GIL runs one at a time.
BUSY_CPU = 0.8


class LookupBatch:
    """Worker threads sharing the client's pacer; use as a context manager.

    Requests in flight are what keeps the plan rate while each answer takes ``latency`` seconds:
    ``latency / interval`` of them (Little's law). The batch starts :data:`INITIAL_WORKERS` and
    adds workers up to that figure, bounded by ``settings.concurrency``, but only while the process
    has CPU to spare: when the client is CPU-bound (a fast vendor on a generous plan), extra threads
    only fight over the GIL and make every request dearer.
    """

    def __init__(
        self, client: LookupClient, backlog: int | None = None, claims: NumberClaims | None = None
    ) -> None:
        self.client = client
        self._claims = claims
        #: Submissions beyond this many undelivered numbers should wait (see :attr:`has_room`).
        self.backlog = backlog or 4 * client.settings.concurrency
        self.error: BaseException | None = None
        self._todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Delivery | BaseException | None] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._workers: list[threading.Thread] = []
        self._running = 0
        self._outstanding = 0
        self._closed = False
        self._lock = threading.Lock()  # workers, running count, growth
        self._target = min(INITIAL_WORKERS, client.settings.concurrency)
        self._next_growth = 0.0
        self._marks = (time.monotonic(), time.process_time())

    def __enter__(self) -> LookupBatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.halt()
        self.close()
        for worker in self._workers:
            worker.join()

    @property
    def outstanding(self) -> int:
        """Numbers submitted and not yet delivered."""
        return self._outstanding

    @property
    def has_room(self) -> bool:
        return self._outstanding < self.backlog and not self._halt.is_set()

    @property
    def finished(self) -> bool:
        """Every worker has exited and every delivery has been taken."""
        return self._closed and self._running == 0 and self._done.empty()

    @property
    def halted(self) -> bool:
        return self._halt.is_set()

    def submit(self, national: str) -> None:
        """Queue one distinct number; the caller guarantees it was not submitted before."""
        if self._closed:
            raise RuntimeError("submit after close")
        self._outstanding += 1
        self._todo.put(national)
        if len(self._workers) < min(self._target, self._outstanding):
            with self._lock:
                self._start_workers()

    @property
    def workers(self) -> int:
        """Worker threads started so far."""
        return len(self._workers)

    def _start_workers(self) -> None:
        """Start workers up to the target, or one per queued number if fewer; hold ``_lock``.

        After :meth:`close` each new worker gets its own stop sentinel, queued behind every number
        (the queue is FIFO), so no number is left unasked."""
        while len(self._workers) < min(self._target, self._outstanding):
            if self._closed:
                self._todo.put(_STOP)
            worker = threading.Thread(
                target=self._work, name=f"phonestatus-{len(self._workers)}", daemon=True
            )
            self._workers.append(worker)
            self._running += 1
            worker.start()

    def _maybe_grow(self) -> None:
        """Every :data:`GROWTH_INTERVAL`: raise the worker target to what the latency calls for,
        unless the process was CPU-bound over the last interval."""
        now = time.monotonic()
        if now < self._next_growth or self._halt.is_set():
            return
        with self._lock:
            if now < self._next_growth:
                return
            self._next_growth = now + GROWTH_INTERVAL
            cpu = time.process_time()
            wall_mark, cpu_mark = self._marks
            self._marks = (now, cpu)
            busy = (cpu - cpu_mark) / max(now - wall_mark, 1e-6)
            client = self.client
            needed = math.ceil(client.latency / client.pacer.interval) + 1
            wanted = min(client.settings.concurrency, needed)
            if busy < BUSY_CPU and wanted > self._target:
                self._target = wanted
                self._start_workers()

    def close(self) -> None:
        """No more submissions; workers exit once the queue is empty."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._workers:
                    self._todo.put(_STOP)

    def halt(self) -> None:
        """Start no new request; requests in flight finish and are delivered."""
        self._halt.set()

    def results(self, timeout: float | None = None) -> list[Delivery]:
        """Wait up to ``timeout`` (None: until something happens) and take all that arrived."""
        items: list[Delivery] = []
        block = True
        while True:
            try:
                item = self._done.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return items
            block = False
            if item is None:
                with self._lock:
                    self._running -= 1
            elif isinstance(item, BaseException):
                self.error = self.error or item
                self.halt()
            else:
                self._outstanding -= 1
                items.append(item)

    def _work(self) -> None:
        """Take numbers until told to stop; once halted, hand each back unasked so none goes missing."""
        channel = None
        try:
            channel = self.client.new_channel()
        except Exception as exc:  # e.g. an unusable proxy URL: every worker would fail the same way
            self._fail(exc)
        try:
            while (national := self._todo.get()) != _STOP:
                self._done.put((national, self._ask(channel, national)))
                self._maybe_grow()
        finally:
            if channel is not None:
                channel.close()
            self._done.put(None)

    def _ask(self, channel: Channel | None, national: str) -> PhoneStatusResult | None:
        if channel is None or self._halt.is_set():
            return None
        try:
            if self._claims is not None and not self._claims.take(national):
                return HELD
            result = self.client.lookup(channel, national, self._halt)
        except Exception as exc:  # BatchStopped, or a bug: surfaced to the caller, never swallowed
            self._fail(exc)
            return None
        if result is not None:
            try:
                self.client.count_streak(result)
            except BatchStopped as exc:  # the answer itself is delivered all the same
                self._fail(exc)
        return result

    def _fail(self, exc: BaseException) -> None:
        self._halt.set()
        self._done.put(exc)


def lookup_all(batch: LookupBatch, nationals: Iterable[str]) -> Iterator[tuple[str, PhoneStatusResult]]:
    """Look up each distinct national number once on a new ``batch``, yielding results as they
    arrive.

    On a batch-stopping answer no new request starts; results already answered are yielded first,
    then the cause is raised. Closing the iterator early halts the workers.
    """
    with batch:
        for national in dict.fromkeys(nationals):
            batch.submit(national)
        batch.close()
        while not batch.finished:
            for national, result in batch.results():
                if result is not None:
                    yield national, result
    if batch.error is not None:
        raise batch.error
