"""Run the benchmarks: ``python -m bench [--only NAME ...] [--quick] [--list]`` (``make bench``).

Every benchmark measures its own baseline in the same run and prints a table of rows (measured,
baseline, ratio, goal, pass/fail); a summary of all rows follows. The exit status is 1 when a goal
fails or a benchmark crashes, else 0. Sandboxes run as subprocesses on free ports.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence

from bench.common import REGISTRY, Result, isolate_airflow_home

#: Modules whose benchmarks register on import, in the order they run.
MODULES = (
    "bench.hook_pacing",
    "bench.shared_pacing",
    "bench.limiter_libraries",
    "bench.parsing",
    "bench.operator_waste",
    "bench.operator_ledger",
    "bench.operator_warehouse",
    "bench.operator_status_table",
    "bench.operator_rss",
    "bench.operator_kill",
)


def _load() -> None:
    for module in MODULES:
        importlib.import_module(module)


def _num(x: float | None, digits: int | None = None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return "n/a" if math.isnan(x) else str(x)
    if digits is not None:
        return f"{x:.{digits}f}"
    if x == int(x) and abs(x) < 1e6:
        return f"{int(x):,}"
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.3f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _cells(row: Result) -> list[str]:
    return [
        row.name,
        f"{_num(row.value)} {row.unit}".strip(),
        _num(row.baseline),
        _num(row.ratio, 4),
        str(row.goal) if row.goal else "-",
        row.status,
    ]


COLUMNS = ["name", "measured", "baseline", "ratio", "goal", "result"]


def _crashed(name: str, exc: BaseException) -> Result:
    first_line = (str(exc).splitlines() or [""])[0]
    return Result(f"{name} crashed", math.nan, "", note=f"{type(exc).__name__}: {first_line}"[:160])


def run(names: Sequence[str], quick: bool) -> list[tuple[str, Result]]:
    done: list[tuple[str, Result]] = []
    for name in names:
        bench = REGISTRY[name]
        doc = (bench.__doc__ or "").strip().splitlines()[0] if bench.__doc__ else ""
        print(f"\n== {name}: {doc}", flush=True)
        started = time.perf_counter()
        try:
            rows = bench(quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows = [_crashed(name, exc)]
        elapsed = time.perf_counter() - started
        print(_table([*COLUMNS, "note"], [[*_cells(r), r.note] for r in rows], {1, 2, 3}))
        print(f"({name} took {elapsed:.1f} s)", flush=True)
        done += [(name, r) for r in rows]
    return done


def main(argv: Sequence[str] | None = None) -> int:
    isolate_airflow_home()
    _load()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", action="extend", choices=list(REGISTRY), metavar="NAME", help="run only these"
    )
    parser.add_argument("--quick", action="store_true", help="smaller batches, skip the 30 s 60/min case")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, bench in REGISTRY.items():
            print(f"{name:15} {(bench.__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = [n for n in REGISTRY if n in args.only] if args.only else list(REGISTRY)
    print(
        f"python -m bench{' --quick' if args.quick else ''}: {', '.join(names)}\n"
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
        "paced rate = (n-1)/(t_start[last]-t_start[first]), throughput = answers/(t_last_answer-t_run_start)",
        flush=True,
    )
    started = time.perf_counter()
    done = run(names, args.quick)
    print(f"\n== summary ({'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s)")
    print(_table(["bench", *COLUMNS], [[b, *_cells(r)] for b, r in done], {2, 3, 4}))
    failed = sum(r.status == "FAIL" for _, r in done)
    crashed = sum(r.status == "ERROR" for _, r in done)
    goals = sum(r.goal is not None for _, r in done)
    print(f"goals met: {goals - failed} of {goals}; benchmarks crashed: {crashed}")
    return 1 if failed or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
