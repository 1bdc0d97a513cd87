"""Shared pieces of the benchmarks: result rows, the registry, rate formulas, the sandbox process.

Two rate formulas, used the same way everywhere (see :class:`Run`):

* **paced rate** = (n - 1) / (t_start[last] - t_start[first]): n requests whose start times (the
  client-side moment each request is handed to the HTTP client) span that interval. For requests
  spaced exactly one plan interval apart it equals the plan rate; it is what a vendor's rate limit
  sees, so it is the figure compared with a plan.
* **throughput** = n_answered / (t_last_answer - t_run_start): answers per second of the whole run,
  set-up (threads, connections, TLS contexts) included. It is the figure compared between clients.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

SANDBOX_KEY = "sandbox-key"
FIRST_NUMBER = 13800000000  #: numbers are generated upward from here: all match ^1[3-9]\d{9}$


@dataclass(frozen=True)
class Goal:
    """An acceptance band on a row's ``ratio`` or ``value``; a bound of None is open."""

    low: float | None = None
    high: float | None = None
    on: Literal["ratio", "value"] = "ratio"

    def check(self, row: Result) -> bool:
        x = row.ratio if self.on == "ratio" else row.value
        if x is None or math.isnan(x):
            return False
        return (self.low is None or x >= self.low) and (self.high is None or x <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.low == self.high:
            return f"{self.on} = {self.low:g}"
        if self.low is not None and self.high is not None:
            return f"{self.low:.2f} <= {self.on} <= {self.high:.2f}"
        if self.low is not None:
            return f"{self.on} >= {self.low:.2f}"
        return f"{self.on} <= {self.high:.2f}" if self.high is not None else "-"


@dataclass
class Result:
    """One measured figure; ``ratio`` is value/baseline unless the benchmark says otherwise."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    goal: Goal | None = None
    note: str = ""

    @property
    def status(self) -> str:
        if math.isnan(self.value):
            return "ERROR"
        if self.goal is None:
            return "info"
        return "PASS" if self.goal.check(self) else "FAIL"


Benchmark = Callable[[bool], list[Result]]
#: name -> benchmark(quick) in registration order; ``python -m bench`` runs them in this order.
REGISTRY: dict[str, Benchmark] = {}


def register(name: str) -> Callable[[Benchmark], Benchmark]:
    def add(fn: Benchmark) -> Benchmark:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = fn
        return fn

    return add


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else math.nan


def say(text: str) -> None:
    """Progress lines, printed as they happen (a full run takes minutes)."""
    print(f"  . {text}", flush=True)


@dataclass
class Run:
    """What one client run did; see the module docstring for the two formulas."""

    began: float = field(default_factory=time.perf_counter)
    starts: list[float] = field(default_factory=list)  #: request start times (perf_counter)
    last_answer: float = 0.0
    answered: int = 0  #: answers received (any status)
    ok: int = 0  #: answers with HTTP 200
    cpu_s: float = math.nan  #: process CPU seconds spent by the run, when measured

    def answer(self, ok: bool = True) -> None:
        self.answered += 1
        self.ok += ok
        self.last_answer = time.perf_counter()

    @property
    def paced_rate(self) -> float:
        """(n - 1) / (t_start[last] - t_start[first]); NaN under two requests."""
        if len(self.starts) < 2:
            return math.nan
        return (len(self.starts) - 1) / (max(self.starts) - min(self.starts))

    @property
    def longest_gap(self) -> float:
        """The longest time between two consecutive request starts (a stall shows up here)."""
        ordered = sorted(self.starts)
        return max((b - a for a, b in itertools.pairwise(ordered)), default=math.nan)

    @property
    def throughput(self) -> float:
        """n_answered / (t_last_answer - t_run_start)."""
        span = self.last_answer - self.began
        return self.answered / span if span > 0 else math.nan

    @property
    def cpu_per_1k(self) -> float:
        return 1000 * self.cpu_s / self.answered if self.answered else math.nan


def numbers(count: int, first: int = FIRST_NUMBER) -> list[str]:
    """``count`` distinct valid mobile numbers, ascending from ``first``."""
    return [str(first + i) for i in range(count)]


def isolate_airflow_home() -> str:
    """Point Airflow at a throwaway home before it is imported (as the tests do); removed at exit."""
    home = tempfile.mkdtemp(prefix="phonestatus-bench-airflow-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db"
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


class Sandbox:
    """A running sandbox subprocess: its URLs, its ledger and config endpoints, its CPU time."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url
        self.api_key = SANDBOX_KEY
        self._admin = httpx.Client(base_url=url + "/_sandbox", timeout=30)

    @property
    def endpoint_url(self) -> str:
        return self.url + "/mobile_status/check"

    def ledger(self) -> dict[str, Any]:
        """Counters without ``by_number`` (requests, throttled, billed, peak_in_window, ...)."""
        data: dict[str, Any] = self._admin.get("/ledger").raise_for_status().json()
        data.pop("by_number", None)
        return data

    def by_number(self) -> dict[str, dict[str, int]]:
        """The ledger's ``by_number``: number -> {"requests": n, "billed": n}."""
        data: dict[str, dict[str, int]] = self._admin.get("/ledger").raise_for_status().json()["by_number"]
        return data

    def reset(self) -> None:
        self._admin.post("/reset").raise_for_status()

    def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._admin.post("/config", json=changes).raise_for_status().json()
        return result

    def cpu_seconds(self) -> float:
        """User+system CPU seconds of the sandbox process so far (Linux /proc; NaN elsewhere)."""
        try:
            return process_cpu(self.proc.pid)[1]
        except OSError:
            return math.nan

    def close(self) -> None:
        self._admin.close()


def process_cpu(pid: int | str) -> tuple[str, float]:
    """(name, user+system CPU seconds so far) of a process, from ``/proc/<pid>/stat`` (Linux).
    Raises OSError where there is no such file: not Linux, or the process has exited."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _flag_value(value: object) -> str:
    return "none" if value is None else str(value)


@contextmanager
def sandbox(**config: object) -> Iterator[Sandbox]:
    """Run ``python -m airflow_provider_phonestatus.sandbox --port 0`` with one flag per keyword
    (``latency_ms=150`` -> ``--latency-ms 150``, None -> ``none``); always stopped on exit."""
    argv = [sys.executable, "-m", "airflow_provider_phonestatus.sandbox", "--port", "0"]
    argv += ["--api-key", SANDBOX_KEY]
    for name, value in config.items():
        argv += ["--" + name.replace("_", "-"), _flag_value(value)]
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True)
        box: Sandbox | None = None
        try:
            url = _read_url(proc)
            if url is None:
                errors.seek(0)
                raise RuntimeError(f"the sandbox did not start: {' '.join(argv)}\n{errors.read()[-2000:]}")
            box = Sandbox(proc, url)
            yield box
        finally:
            if box is not None:
                box.close()
            _stop(proc)


def _read_url(proc: subprocess.Popen[str], timeout: float = 60.0) -> str | None:
    """The URL from the sandbox's first line, or None if it exits or stays silent for ``timeout``."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=timeout)
    except queue.Empty:
        return None
    match = re.search(r"listening on (http://\S+)", first)
    return match.group(1) if match else None


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
