"""Micro-benchmark: parse_number (fast path) against the phonenumbers-only reference path.

Run: python bench/numbers_parse.py [count]. Prints numbers/s for both and the ratio, and checks that
both paths gave identical results on every value (a mismatch is a bug: exit status 1).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

from airflow_provider_phonestatus.numbers import ParsedNumber, _parse_with_phonenumbers, parse_number

PREFIXES = ["130", "131", "135", "136", "138", "139", "150", "155", "158", "177", "180", "186", "189", "199"]
OTHERS = ["010-12345678", "0755-12345678", "95588", "400-810-8888", "+852 9123 4567", "N/A", "", None]


def _spellings(rng: random.Random, count: int) -> list[object]:
    """Mostly valid mobiles in the spellings warehouses hold, ~10% other values."""
    values: list[object] = []
    for _ in range(count):
        national = rng.choice(PREFIXES) + f"{rng.randrange(10**8):08d}"
        a, b, c = national[:3], national[3:7], national[7:]
        choice = rng.randrange(12)
        if choice == 0:
            values.append(rng.choice(OTHERS))
        elif choice == 1:
            values.append(int(national))
        elif choice == 2:
            values.append(float(national))
        elif choice == 3:
            values.append(f"+86 {a} {b} {c}")
        elif choice == 4:
            values.append(f"+86-{a}-{b}-{c}")
        elif choice == 5:
            values.append(f"0086{national}")
        elif choice == 6:
            values.append(f"86{national}")
        elif choice == 7:
            values.append(f"{national}.0")
        elif choice == 8:
            values.append(national.translate({ord("0") + i: 0xFF10 + i for i in range(10)}))
        else:
            values.append(national)
    return values


def _rate(parse: Callable[[object], ParsedNumber], values: list[object]) -> tuple[float, list[ParsedNumber]]:
    start = time.perf_counter()
    results = [parse(value) for value in values]
    return len(values) / (time.perf_counter() - start), results


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    values = _spellings(random.Random(20240628), count)
    fast_rate, fast = _rate(parse_number, values)
    slow_rate, slow = _rate(_parse_with_phonenumbers, values)
    mismatches = sum(f != s for f, s in zip(fast, slow, strict=True))
    mobiles = [value for value, parsed in zip(values, fast, strict=True) if parsed.is_mobile]
    mobile_rate, _ = _rate(parse_number, mobiles)
    print(f"values:                     {count:,} (mixed spellings, ~10% not mobile)")
    print(f"parse_number (fast path):   {fast_rate:12,.0f} numbers/s")
    print(f"_parse_with_phonenumbers:   {slow_rate:12,.0f} numbers/s")
    print(f"ratio fast/slow:            {fast_rate / slow_rate:12.1f}x")
    print(f"parse_number, mobiles only: {mobile_rate:12,.0f} numbers/s ({len(mobiles):,} values)")
    print(f"mismatches fast vs slow:    {mismatches:12,}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
