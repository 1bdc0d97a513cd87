"""Messy customer rows, as real CRM tables hold them: for tests, benchmarks and the demo.

Deterministic for a seed. Each distinct mobile number appears under several spellings (``+86 138
0013 8000``, ``008613800138000``, full-width digits, ...), and the table also holds NULLs, junk,
mainland landlines, service numbers and foreign numbers. :func:`expected_status` says what a
correct run must write for any phone value, from the sandbox's documented truth.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from airflow_provider_phonestatus.numbers import parse_number
from airflow_provider_phonestatus.sandbox.truth import expected
from airflow_provider_phonestatus.vocabulary import VENDOR_CODES

#: Mainstream mobile prefixes of the four carriers (every 8-digit suffix is allocated).
_PREFIX_RANGES = (
    range(130, 140),
    range(150, 154),
    range(155, 160),
    (176, 177),
    range(180, 184),
    range(185, 190),
)
PREFIXES = tuple(str(p) for r in (*_PREFIX_RANGES, (198, 199)) for p in r)
JUNK = ("", "   ", "N/A", "null", "unknown", "-", "12345", "138****8000", "tel", "1380013800", "000000000000")
LANDLINES = ("010-12345678", "021 6543 2100", "0755-87654321", "(020) 8765 4321", "95588", "400-810-8888")
FOREIGN = ("+1 650 253 0000", "+852 9123 4567", "+44 7911 123456", "+886 912 345 678", "+65 8123 4567")
_FULL_WIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")


@dataclass(frozen=True)
class MessyMix:
    """Shares of non-mobile values; the rest are spellings of ``distinct`` mobile numbers."""

    null: float = 0.03
    junk: float = 0.04
    landline: float = 0.03
    foreign: float = 0.02


def spell(national: str, rng: random.Random) -> str:
    """One of the spellings users' tables hold for an 11-digit national number."""
    a, b, c = national[:3], national[3:7], national[7:]
    forms = (
        national,
        national,
        f"+86 {a} {b} {c}",
        f"+86-{a}-{b}-{c}",
        f"0086{national}",
        f"86{national}",
        f"{a}-{b}-{c}",
        f"(+86) {a} {b} {c}",
        f" {national} ",
        national.translate(_FULL_WIDTH),
        f"+86{national}",
        f"{a} {b} {c}",
    )
    return rng.choice(forms)


def mobile_numbers(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct valid mainland mobile numbers, reproducible for a seed."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        national = rng.choice(PREFIXES) + f"{rng.randrange(10**8):08d}"
        if national not in out and parse_number(national).is_mobile:
            out[national] = None
    return list(out)


def messy_phones(
    rows: int, distinct: int, seed: int = 7, mix: MessyMix | None = None
) -> Iterator[str | None]:
    """``rows`` phone values: every one of ``distinct`` numbers at least once, then repeats."""
    mix = mix or MessyMix()
    rng = random.Random(seed + 1)
    numbers = mobile_numbers(distinct, seed)
    used = 0
    for _ in range(rows):
        roll = rng.random()
        if roll < mix.null:
            yield None
        elif roll < mix.null + mix.junk:
            yield rng.choice(JUNK)
        elif roll < mix.null + mix.junk + mix.landline:
            yield rng.choice(LANDLINES)
        elif roll < mix.null + mix.junk + mix.landline + mix.foreign:
            yield rng.choice(FOREIGN)
        else:
            national = numbers[used] if used < len(numbers) else rng.choice(numbers)
            used += 1
            yield spell(national, rng)


def expected_status(phone: object) -> str:
    """The status a correct run writes for this value, by the sandbox's truth table."""
    parsed = parse_number(phone)
    if parsed.national is None:
        return parsed.kind.value
    return VENDOR_CODES[expected(parsed.national)["result"]].value
