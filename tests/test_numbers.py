"""Tests for airflow_provider_phonestatus.numbers: explicit cases, then properties.

The oracle for "is this a CN mobile" is phonenumbers itself, called here directly, so the tests do
not trust the module's regexes.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from fractions import Fraction

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from airflow_provider_phonestatus.numbers import (
    NumberKind,
    ParsedNumber,
    _parse_with_phonenumbers,
    mask_number,
    parse_number,
)

MOBILE, INVALID, UNSUPPORTED = NumberKind.MOBILE, NumberKind.INVALID, NumberKind.UNSUPPORTED
N = "13800138000"
FW = {ord("0") + i: 0xFF10 + i for i in range(10)} | {ord("+"): 0xFF0B}  # to full-width


def case_id(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle_is_mobile(national: str) -> bool:
    number = phonenumbers.parse(national, "CN")
    return (
        phonenumbers.is_valid_number(number)
        and phonenumbers.region_code_for_number(number) == "CN"
        and phonenumbers.number_type(number)
        in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    )


# 3-digit prefixes with at least one valid mobile (161 and 174 only have sub-ranges: filtered below).
PREFIXES = [p for p in map(str, range(130, 200)) if oracle_is_mobile(p + "00000000")]

# ---------------------------------------------------------------------------------------------
# Explicit cases. Mobiles must all give N; others are (value, kind, reason), reason None = unchecked.
MOBILE_SPELLINGS = [
    N,
    "+86 138 0013 8000",
    "+86-138-0013-8000",
    "(+86) 138 0013 8000",
    "0086 13800138000",
    "008613800138000",
    "86 13800138000",
    "8613800138000",
    "+8613800138000",
    "138-0013-8000",
    "138.0013.8000",
    "(138) 0013 8000",
    "[138] 0013-8000",
    " 13800138000 ",
    "\t13800138000\n",
    "\u00a0138\u00a00013\u00a08000",
    "138\u3000 0013 8000",
    "\ufeff13800138000",
    "138\u200b00138000",
    "１３８００１３８０００",
    "＋８６ １３８ ００１３ ８０００",
    "＋86 138－0013－8000",
    "tel:+86-138-0013-8000",
    "TEL: 13800138000",
    "13800138000.0",
    "13800138000.00",
    "+8613800138000.0",
    "138–0013—8000",
    "'13800138000",
    '"13800138000"',
    "13,800,138,000",
    "١٣٨٠٠١٣٨٠٠٠",
    "013800138000",
    "+86 (0) 138 0013 8000",
    "17951 138 0013 8000",
    13800138000,
    8613800138000,
    13800138000.0,
    Decimal("13800138000"),
    Decimal("13800138000.000"),
    b"13800138000",
    b"+86 138 0013 8000",
    bytearray(b"13800138000"),
    Fraction(13800138000),
    "tel:13800138000",
]
OTHER_CASES: list[tuple[object, NumberKind, str | None]] = [
    (None, INVALID, "empty"),
    ("", INVALID, "empty"),
    ("   ", INVALID, "empty"),
    ("\t\u3000", INVALID, "empty"),
    (float("nan"), INVALID, "empty"),
    (Decimal("NaN"), INVALID, "empty"),
    ("abc", INVALID, "not a phone number"),
    ("N/A", INVALID, "not a phone number"),
    ("null", INVALID, "not a phone number"),
    ("None", INVALID, "not a phone number"),
    ("-", INVALID, "not a phone number"),
    ("--", INVALID, "not a phone number"),
    ("138****8000", INVALID, "not a phone number"),
    ("1.38001380E+10", INVALID, "not a phone number"),
    ("13800138000 ext 12", INVALID, "not a phone number"),
    ("13800138000#12", INVALID, "not a phone number"),
    ("手机: 13800138000", INVALID, "not a phone number"),
    ("++8613800138000", INVALID, "not a phone number"),
    ("86+13800138000", INVALID, "not a phone number"),
    ("1380013800O", INVALID, "not a phone number"),
    ("①③⑧⓪⓪①③⑧⓪⓪⓪", INVALID, "not a phone number"),
    ("tel:tel:13800138000", INVALID, "not a phone number"),
    (True, INVALID, "not a phone number"),
    (False, INVALID, "not a phone number"),
    (-13800138000, INVALID, "negative number"),
    (Decimal("-13800138000"), INVALID, "negative number"),
    (-13800138000.0, INVALID, "negative number"),
    (float("inf"), INVALID, "not a phone number"),
    (float("-inf"), INVALID, "not a phone number"),
    (1380013800.5, INVALID, "not a phone number"),
    (Decimal("sNaN"), INVALID, "empty"),
    (Decimal("Infinity"), INVALID, "not a phone number"),
    (Decimal("1E+999999"), INVALID, "too long"),
    (10**5000, INVALID, "too long"),
    (1e300, INVALID, "too long"),
    ([N], INVALID, "not a phone number"),
    ({"phone": N}, INVALID, "not a phone number"),
    (object(), INVALID, "not a phone number"),
    (b"\xff\xfe13800138000", INVALID, "not a phone number"),
    (complex(13800138000), INVALID, "not a phone number"),
    (memoryview(b"13800138000"), INVALID, None),
    ("1" * 33, INVALID, "too long"),
    ("8" * 18, INVALID, "too long"),
    (" " * 300 + N, INVALID, "too long"),
    ("1", INVALID, "too short"),
    ("1234", INVALID, "too short"),
    ("1380013800", INVALID, None),
    ("138001380000", INVALID, None),
    ("1380013800.0", INVALID, None),
    ("1380013.0000", INVALID, None),
    ("0", INVALID, None),
    ("12345678901", INVALID, "not a valid number"),
    ("10000000000", INVALID, "not a valid number"),
    ("11012345678", INVALID, "not a valid number"),
    ("14912345678", INVALID, "not a valid number"),
    ("15412345678", INVALID, "not a valid number"),
    ("17912345678", INVALID, "not a valid number"),
    ("+13800138000", INVALID, None),
    ("+1 380 013 8000", INVALID, None),
    ("0013800138000", INVALID, None),
    ("+999 1234 5678", INVALID, "unknown country code"),
    ("+86", INVALID, None),
    ("+", INVALID, None),
    ("010-12345678", UNSUPPORTED, "landline"),
    ("+86 21 1234 5678", UNSUPPORTED, "landline"),
    ("0755-12345678", UNSUPPORTED, "landline"),
    ("(010) 1234 5678", UNSUPPORTED, "landline"),
    ("95588", UNSUPPORTED, "service number"),
    ("110", UNSUPPORTED, "service number"),
    ("10086", UNSUPPORTED, "service number"),
    ("400-810-8888", UNSUPPORTED, "shared-cost number"),
    ("800-810-8888", UNSUPPORTED, "toll-free number"),
    ("+852 9123 4567", UNSUPPORTED, "country code 852"),
    ("+853 6612 3456", UNSUPPORTED, "country code 853"),
    ("+886 912 345 678", UNSUPPORTED, "country code 886"),
    ("00852 9123 4567", UNSUPPORTED, "country code 852"),
    ("+1 650 253 0000", UNSUPPORTED, "country code 1"),
    ("+44 7911 123456", UNSUPPORTED, "country code 44"),
]


@pytest.mark.parametrize("value", MOBILE_SPELLINGS, ids=case_id)
def test_mobile_spellings(value: object) -> None:
    expected = ParsedNumber(MOBILE, N, "mobile")
    assert parse_number(value) == expected
    assert _parse_with_phonenumbers(value) == expected
    assert parse_number(value).is_mobile


@pytest.mark.parametrize(("value", "kind", "reason"), OTHER_CASES, ids=case_id)
def test_other_cases(value: object, kind: NumberKind, reason: str | None) -> None:
    parsed = parse_number(value)
    assert parsed.kind is kind
    assert parsed.national is None
    assert not parsed.is_mobile
    if reason is not None:
        assert parsed.reason == reason
    assert _parse_with_phonenumbers(value) == parsed


class Hostile:
    """Every conversion a parser might try raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __format__ = __bytes__ = __index__ = __int__ = __float__ = __str__  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    __hash__ = None  # type: ignore[assignment]


class HostileStr(str):
    def strip(self, chars: str | None = None) -> str:
        raise RuntimeError("no strip")

    def __str__(self) -> str:
        raise RuntimeError("no str")


class HostileInt(int):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


@pytest.mark.parametrize(
    "value", [Hostile(), HostileStr(" 13800138000 "), HostileInt(5), HostileStr("x")], ids=case_id
)
def test_hostile_objects_never_raise(value: object) -> None:
    assert parse_number(value).kind is INVALID
    assert _parse_with_phonenumbers(value).kind is INVALID
    assert isinstance(mask_number(value), str)


def test_subclasses_of_str_and_int_are_values() -> None:
    class Phone(str):
        pass

    class Big(int):
        pass

    assert parse_number(Phone("+86 138 0013 8000")).national == N
    assert parse_number(Big(13800138000)).national == N


def test_public_types() -> None:
    assert [k.value for k in NumberKind] == ["mobile", "invalid", "unsupported"]
    assert str(MOBILE) == f"{MOBILE}" == "mobile" and MOBILE == "mobile"
    parsed = parse_number(N)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.kind = INVALID  # type: ignore[misc]
    assert N not in repr(parsed) and "138****8000" in repr(parsed)


def test_fast_path_uses_phonenumbers_pattern() -> None:
    import airflow_provider_phonestatus.numbers as numbers_module

    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    assert metadata is not None and metadata.mobile is not None
    assert numbers_module._MOBILE_RE.pattern == metadata.mobile.national_number_pattern
    assert numbers_module._MOBILE_RE.flags & re.ASCII


# ---------------------------------------------------------------------------------------------
# Properties.
@st.composite
def valid_mobiles(draw: st.DrawFn) -> str:
    national = draw(st.sampled_from(PREFIXES)) + draw(st.from_regex(r"[0-9]{8}", fullmatch=True))
    return draw(st.just(national).filter(oracle_is_mobile))


SEPARATORS = [" ", "-", ".", "\u00a0", "\t", "  ", "\u3000", "－", "\u2009", " - ", "/", "\u200b"]
COUNTRY = [
    "",
    "+86",
    "86",
    "0086",
    "+86 ",
    "86 ",
    "0086 ",
    "(+86) ",
    "+86-",
    "(86)",
    "+86 (0) ",
    "0",
    "00 86 ",
]


@st.composite
def spellings(draw: st.DrawFn, national: str) -> object:
    """The many ways one national mobile is written in warehouse tables."""
    form = draw(st.integers(0, 9))
    if form == 0:
        return int(draw(st.sampled_from(["", "86"])) + national)
    if form == 1:
        return float(national)
    if form == 2:
        return Decimal(national)
    if form == 3:
        return (
            draw(st.sampled_from(["", "+86", "86", "0086"])) + national + draw(st.sampled_from([".0", ".00"]))
        )
    cuts = sorted(draw(st.sets(st.integers(1, 10), max_size=4)))
    groups = [national[a:b] for a, b in zip([0, *cuts], [*cuts, 11], strict=True)]
    body = "".join(g + draw(st.sampled_from(SEPARATORS)) for g in groups[:-1]) + groups[-1]
    text = draw(st.sampled_from(COUNTRY)) + body
    if text.startswith("+") and draw(st.booleans()):
        text = "tel:" + text
    if draw(st.booleans()):
        text = text.translate(FW)
    assume(len(text) <= 32)  # rule 4: longer cells are "too long" (the longest sane one has 25)
    pad = st.sampled_from(["", " ", "\t", "\u00a0", "\n", "  "])
    text = draw(pad) + text + draw(pad)
    return text.encode() if form == 4 else text


@PROPERTY
@given(st.data())
def test_every_spelling_of_a_mobile_normalises_to_it(data: st.DataObject) -> None:
    national = data.draw(valid_mobiles())
    value = data.draw(spellings(national))
    expected = ParsedNumber(MOBILE, national, "mobile")
    assert parse_number(value) == expected
    assert _parse_with_phonenumbers(value) == expected


digit_strings = st.builds(
    lambda prefix, digits, sep: prefix + sep.join([digits[:3], digits[3:7], digits[7:]]).strip(sep),
    st.sampled_from(["", "+", "+86", "86", "0086", "00", "0", "+86 0", "+852", "+1", "1"]),
    st.text("0123456789", min_size=5, max_size=16),
    st.sampled_from(["", " ", "-"]),
)

# Any 11 digits starting with 1: most of these prefixes are unallocated, where a fast path that is
# laxer than phonenumbers would show up.
eleven_digits = st.builds(
    str.__add__,
    st.sampled_from(["", "+86", "86", "0086", "+86 "]),
    st.from_regex(r"1[0-9]{10}", fullmatch=True),
)


@st.composite
def near_mobiles(draw: st.DrawFn) -> str:
    """A valid mobile with one digit changed, dropped or added: the boundary of the fast path."""
    digits = list(draw(valid_mobiles()))
    at = draw(st.integers(0, 10))
    edit = draw(st.sampled_from(["change", "drop", "add"]))
    if edit == "drop":
        del digits[at]
    else:
        new = draw(st.sampled_from("0123456789"))
        digits[at : at + (edit == "change")] = [new]
    return draw(st.sampled_from(["", "+86", "86", "0086"])) + "".join(digits)


junk = st.text(alphabet="0123456789+-(). \u00a0１２３＋tel:86xX*#E,;/\t", max_size=40)
objects = st.one_of(
    st.from_type(object),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.fractions(),
    st.binary(max_size=40),
    st.lists(st.integers(), max_size=3),
)


@PROPERTY
@given(st.one_of(eleven_digits, digit_strings, near_mobiles(), junk, st.text(max_size=40), objects))
def test_fast_path_equals_phonenumbers_path(value: object) -> None:
    fast = parse_number(value)
    assert fast == _parse_with_phonenumbers(value)
    assert isinstance(fast, ParsedNumber) and isinstance(fast.kind, NumberKind)
    assert (fast.national is not None) == fast.is_mobile
    if fast.national is not None:
        assert len(fast.national) == 11 and fast.national.isascii() and oracle_is_mobile(fast.national)
    assert not re.search(r"[0-9]{4}", fast.reason)  # never the number, only e.g. "country code 852"


# ---------------------------------------------------------------------------------------------
# Masking.
@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (N, "138****8000"),
        ("+86 138 0013 8000", "138****8000"),
        (13800138000.0, "138****8000"),
        (None, "<null>"),
        ("", "***"),
        ("N/A", "***"),
        ("95588", "*****"),
        ("12345678", "********"),
        ("010-12345678", "010******78"),
        ("+852 9123 4567", "852******67"),
        ("12345678901", "123******01"),
        ("1" * 300, "111************11"),
        (Hostile(), "<unprintable>"),
    ],
    ids=case_id,
)
def test_mask_examples(value: object, masked: str) -> None:
    assert mask_number(value) == masked


def digits_of(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return "".join(str(int(c)) for c in text if c.isdecimal())


@PROPERTY
@given(
    st.one_of(
        valid_mobiles().flatmap(spellings),
        digit_strings,
        near_mobiles(),
        junk,
        st.integers(min_value=-(10**20), max_value=10**20),
        st.text(max_size=40),
    )
)
def test_mask_never_reveals_the_number(value: object) -> None:
    masked = mask_number(value)
    digits = digits_of(value)
    if len(digits) >= 7:
        assert digits not in masked
    if len(digits) >= 5:
        assert masked != str(value)
    assert not re.search(r"[0-9]{5}", masked)
