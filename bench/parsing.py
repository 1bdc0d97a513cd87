"""``bench/numbers_parse.py`` (another engineer's micro-benchmark) as a registered benchmark.

Its building blocks are called directly: ``_spellings`` makes the values and ``_rate`` times one
parser over them, exactly as its ``main()`` does, so the figures match a standalone
``python bench/numbers_parse.py COUNT`` run. If those blocks ever go away, the script is run as a
subprocess and its printed lines are read instead.
"""

from __future__ import annotations

import math
import random
import re
import subprocess
import sys
from pathlib import Path

from bench.common import Goal, Result, ratio, register, say

SEED = 20240628  #: the seed numbers_parse.main() uses


def _in_process(count: int) -> dict[str, float]:
    from airflow_provider_phonestatus.numbers import _parse_with_phonenumbers, parse_number
    from bench.numbers_parse import _rate, _spellings

    values = _spellings(random.Random(SEED), count)
    fast_rate, fast = _rate(parse_number, values)
    slow_rate, slow = _rate(_parse_with_phonenumbers, values)
    mobiles = [value for value, parsed in zip(values, fast, strict=True) if parsed.is_mobile]
    mobile_rate, _ = _rate(parse_number, mobiles)
    mismatches = sum(f != s for f, s in zip(fast, slow, strict=True))
    return {"fast": fast_rate, "slow": slow_rate, "mobiles": mobile_rate, "mismatches": mismatches}


_LINES = {
    "fast": r"parse_number \(fast path\):\s*([\d,.]+)",
    "slow": r"_parse_with_phonenumbers:\s*([\d,.]+)",
    "mobiles": r"parse_number, mobiles only:\s*([\d,.]+)",
    "mismatches": r"mismatches fast vs slow:\s*([\d,.]+)",
}


def _subprocess(count: int) -> dict[str, float]:
    script = Path(__file__).with_name("numbers_parse.py")
    done = subprocess.run(
        [sys.executable, str(script), str(count)], capture_output=True, text=True, timeout=600, check=False
    )
    found = {k: re.search(p, done.stdout) for k, p in _LINES.items()}
    return {k: float(m.group(1).replace(",", "")) if m else math.nan for k, m in found.items()}


@register("numbers_parse")
def numbers_parse(quick: bool) -> list[Result]:
    """parse_number's fast path against the phonenumbers-only reference path (bench/numbers_parse.py)."""
    count = 20_000 if quick else 100_000
    try:
        figures, how = _in_process(count), "in process"
    except (ImportError, AttributeError, TypeError) as exc:
        say(f"numbers_parse building blocks unusable ({exc!r}): running it as a subprocess")
        figures, how = _subprocess(count), "subprocess"
    say(f"{count:,} mixed spellings (~10% not mobile), seed {SEED}, {how}")
    return [
        Result(
            "parse_number fast path vs phonenumbers-only",
            figures["fast"],
            "numbers/s",
            baseline=figures["slow"],
            ratio=ratio(figures["fast"], figures["slow"]),
            note="fast/reference, informational",
        ),
        Result("parse_number, mobiles only", figures["mobiles"], "numbers/s", note="informational"),
        Result(
            "mismatches fast vs reference path",
            figures["mismatches"],
            "values",
            goal=Goal(0, 0, on="value"),
            note="any mismatch is a bug",
        ),
    ]
