"""Turn a phone value as warehouse tables hold it into what the status API takes.

The API answers only for mainland-China mobile numbers and bills (or at least spends quota on) every
request, so each value is labelled before anything is sent:

* ``mobile``: a mainland-China mobile number; ``national`` is the bare 11-digit number to send.
* ``invalid``: not a phone number at all. Never sent.
* ``unsupported``: a real number the API does not cover (mainland landlines, 400/800 and short
  service numbers, any other country incl. Hong Kong, Macau, Taiwan). Never sent.

Rules, decided deliberately (``phonenumbers`` with default region CN is the authority; the fast
path only short-cuts spellings it gives exactly the same answer for, see the tests):

1. ``None``, blank strings and NaN are invalid ("empty"). ``bool`` is invalid (not a number).
2. Integers (also numpy's) must be >= 0; floats and ``Decimal`` must be finite and whole
   (``13800138000.0`` as pandas/Excel produce). Bytes are decoded as UTF-8. Any other type is invalid:
   a list or dict is never searched for a number inside it.
3. Strings: surrounding whitespace and one leading ``tel:`` are dropped; ``digits.0…`` (a float
   written as text, dot as the only separator) loses its zero fraction. Then these separators are
   removed anywhere: spaces of every kind (NBSP, ideographic, tabs), zero-width spaces and BOM,
   ``- . , / ( ) [ ] ' "``, Unicode dashes and their full-width forms. Full-width and other Unicode
   decimal digits become ASCII; full-width plus becomes ``+``.
4. What remains must be an optional leading ``+`` and digits only, else invalid ("not a phone
   number"): letters (``N/A``, ``null``, ``1.38E+10``, ``ext``), stars of masked numbers
   (``138****8000``), a second ``+`` are all rejected, never guessed at. Over 32 characters
   (after trimming) or 17 digits: invalid ("too long") without parsing.
5. ``phonenumbers`` decides the rest. Valid, region CN, type MOBILE or FIXED_LINE_OR_MOBILE ->
   mobile. So ``86``/``+86``/``0086`` prefixes, a trunk ``0`` (``013800138000``) and carrier
   prefixes (``17951…``) are accepted. Valid CN of another type -> unsupported ("landline",
   "shared-cost number", ...); valid CN short numbers (95588, 10086, 110) -> unsupported
   ("service number"); valid foreign -> unsupported ("country code 852"); everything else, incl.
   unallocated prefixes (``12345678901``, ``14912345678``) and foreign numbers ``phonenumbers``
   cannot validate -> invalid.

``reason`` never contains the number. ``mask_number`` is the only way numbers reach logs.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import functools
import math
import numbers
import re
import unicodedata

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType
from phonenumbers.shortnumberinfo import is_valid_short_number_for_region

__all__ = ["NumberKind", "ParsedNumber", "mask_number", "parse_national", "parse_number"]


class NumberKind(enum.StrEnum):
    """What a value is to the API. The values are written to warehouses: never change them."""

    MOBILE = "mobile"
    INVALID = "invalid"
    UNSUPPORTED = "unsupported"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class ParsedNumber:
    """The verdict on one value; ``national`` is set only for ``MOBILE`` (the string to send)."""

    kind: NumberKind
    national: str | None
    reason: str

    @property
    def is_mobile(self) -> bool:
        """True when the value may be sent to the API."""
        return self.kind is NumberKind.MOBILE

    def __repr__(self) -> str:
        # Masked: a ParsedNumber ends up in logs and tracebacks sooner or later.
        national = None if self.national is None else mask_number(self.national)
        return f"ParsedNumber(kind={self.kind.value!r}, national={national!r}, reason={self.reason!r})"


def _invalid(reason: str) -> ParsedNumber:
    return ParsedNumber(NumberKind.INVALID, None, reason)


def _unsupported(reason: str) -> ParsedNumber:
    return ParsedNumber(NumberKind.UNSUPPORTED, None, reason)


_EMPTY = _invalid("empty")
_NOT_A_NUMBER = _invalid("not a phone number")
_NEGATIVE = _invalid("negative number")
_TOO_LONG = _invalid("too long")
_TOO_SHORT = _invalid("too short")
_NOT_VALID = _invalid("not a valid number")

_MAX_CHARS = 32  # after trimming; the longest sane spelling, "tel:+86 (0) 138-0013-8000", has 25
_MAX_DIGITS = 17  # "00" + the 15 digits E.164 allows
_MAX_RAW = 256  # str/bytes longer than this are not looked at, not even trimmed
_INT_LIMIT = 10**_MAX_DIGITS

# phonenumbers' own CN mobile pattern, so the fast path cannot drift from the library. re.ASCII:
# in a str pattern ``\d`` would also match Arabic-Indic, Devanagari... digits.
_CN_METADATA = phonenumbers.PhoneMetadata.metadata_for_region("CN")
_CN_MOBILE = _CN_METADATA and _CN_METADATA.mobile and _CN_METADATA.mobile.national_number_pattern
if not isinstance(_CN_MOBILE, str):  # a broken phonenumbers install: fail at import, not per row
    raise ImportError("phonenumbers has no mobile number pattern for CN")
_MOBILE_RE = re.compile(_CN_MOBILE, re.ASCII)
_FAST_RE = re.compile(rf"(?:\+86|0086|86)?({_CN_MOBILE})", re.ASCII)
_FAST_FULLMATCH = _FAST_RE.fullmatch
_CLEAN_RE = re.compile(r"\+?[0-9]+", re.ASCII)
_FLOAT_TEXT_RE = re.compile(r"(\+?[0-9]+)\.0+", re.ASCII)

_SEPARATORS = (
    " \t\n\r\v\f\u00a0\u1680\u2028\u2029\u202f\u205f\u3000"  # spaces
    + "".join(map(chr, range(0x2000, 0x200E)))  # en/em/thin... spaces, zero-width spaces/joiners
    + "\u2060\ufeff"  # word joiner, BOM
    + "-.,/()[]'\"\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"  # punctuation, dashes
    + "\uff0d\uff0e\uff0c\uff0f\uff08\uff09\uff3b\uff3d\uff07\uff02"  # full-width punctuation
)
_TRANSLATION: dict[int, int | None] = {ord(c): None for c in _SEPARATORS}
_TRANSLATION.update({0xFF10 + i: ord("0") + i for i in range(10)})  # full-width digits
_TRANSLATION.update({0xFF0B: ord("+"), 0xFE62: ord("+")})  # full-width and small plus

_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_TYPE_REASONS = {
    PhoneNumberType.FIXED_LINE: "landline",
    PhoneNumberType.TOLL_FREE: "toll-free number",
    PhoneNumberType.SHARED_COST: "shared-cost number",
    PhoneNumberType.PREMIUM_RATE: "premium-rate number",
    PhoneNumberType.VOIP: "VoIP number",
    PhoneNumberType.UAN: "service number",
}
_PARSE_ERRORS = {  # the input is "+"? digits by now, so NOT_A_NUMBER means "1 digit"
    NumberParseException.NOT_A_NUMBER: _TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: _TOO_SHORT,
    NumberParseException.TOO_SHORT_AFTER_IDD: _TOO_SHORT,
    NumberParseException.TOO_LONG: _TOO_LONG,
    NumberParseException.INVALID_COUNTRY_CODE: _invalid("unknown country code"),
}
_LENGTH_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: _TOO_SHORT,
    phonenumbers.ValidationResult.TOO_LONG: _TOO_LONG,
    phonenumbers.ValidationResult.INVALID_LENGTH: _invalid("wrong length"),
}


def parse_number(value: object) -> ParsedNumber:
    """Classify ``value``; common spellings skip ``phonenumbers`` (about 20,000/s) entirely.

    Never raises: a warehouse can hold anything, and one odd cell must not fail a run.
    """
    return _parse(value, fast=True)


def parse_national(value: object) -> str | ParsedNumber:
    """``parse_number(value).national`` for a mobile number, else the :class:`ParsedNumber`.

    Exactly :func:`parse_number`, for callers that classify millions of cells: the commonest cell,
    an already clean string, costs one regular-expression match and builds no object.
    """
    if type(value) is str:  # _parse's steps for a str, each done once
        if (match := _FAST_FULLMATCH(value)) is not None:
            return match[1]
        try:
            cleaned = _normalise(value)
        except Exception:
            return _NOT_A_NUMBER
        if type(cleaned) is str and (match := _FAST_FULLMATCH(cleaned)) is not None:
            return match[1]
    parsed = _parse(value, fast=True)
    return parsed if parsed.national is None else parsed.national


def _parse_with_phonenumbers(value: object) -> ParsedNumber:
    """The reference path: the same rules, every value through ``phonenumbers``."""
    return _parse(value, fast=False)


def _parse(value: object, *, fast: bool) -> ParsedNumber:
    try:
        if fast and (match := _fast_match(value)) is not None:
            return ParsedNumber(NumberKind.MOBILE, match[1], "mobile")
        text = _to_text(value)
        if isinstance(text, ParsedNumber):
            return text
        cleaned = _normalise(text)
        if isinstance(cleaned, ParsedNumber):
            return cleaned
        if fast and (match := _FAST_RE.fullmatch(cleaned)) is not None:
            return ParsedNumber(NumberKind.MOBILE, match[1], "mobile")
        if _CLEAN_RE.fullmatch(cleaned) is None:
            return _NOT_A_NUMBER
        if len(cleaned) - cleaned.startswith("+") > _MAX_DIGITS:
            return _TOO_LONG
        return _classify(cleaned)
    except Exception:  # a hostile __str__, __index__, str subclass...: still just a bad cell
        return _NOT_A_NUMBER


def _fast_match(value: object) -> re.Match[str] | None:
    """The commonest cells, already in a form that _normalise would leave unchanged."""
    if type(value) is str:
        return _FAST_RE.fullmatch(value)
    if type(value) is int and 0 <= value < _INT_LIMIT:
        return _FAST_RE.fullmatch(str(value))
    if type(value) is float and value.is_integer() and 0 <= value < _INT_LIMIT:
        return _FAST_RE.fullmatch(str(int(value)))
    return None


def _to_text(value: object) -> str | ParsedNumber:
    """Bring a cell to a string; reject types and values that cannot be a phone number."""
    if value is None:
        return _EMPTY
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return _NOT_A_NUMBER
    if isinstance(value, (bytes, bytearray)):
        if len(value) > _MAX_RAW:
            return _TOO_LONG
        return bytes(value).decode("utf-8")  # UnicodeDecodeError -> "not a phone number"
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return _EMPTY
        if not value.is_finite() or value != value.to_integral_value():
            return _NOT_A_NUMBER
        if value.adjusted() >= _MAX_DIGITS:  # before int(): Decimal("1E+999999") is a huge int
            return _TOO_LONG
        return _int_text(int(value))
    if isinstance(value, numbers.Integral):
        return _int_text(int(value))
    if isinstance(value, numbers.Real):
        as_float = float(value)
        if math.isnan(as_float):
            return _EMPTY
        if not math.isfinite(as_float) or not as_float.is_integer():
            return _NOT_A_NUMBER
        return _int_text(int(as_float))
    return _NOT_A_NUMBER


def _int_text(number: int) -> str | ParsedNumber:
    if number < 0:
        return _NEGATIVE
    if number >= _INT_LIMIT:
        return _TOO_LONG
    return str(number)


def _normalise(text: str) -> str | ParsedNumber:
    """Rule 3: trim, drop separators, map digits; rule 4 is checked by the caller."""
    if len(text) > _MAX_RAW:
        return _TOO_LONG
    text = text.strip()
    if not text:
        return _EMPTY
    if len(text) > _MAX_CHARS:
        return _TOO_LONG
    if text[:4].lower() == "tel:":
        text = text[4:].lstrip()
    if "." in text and (match := _FLOAT_TEXT_RE.fullmatch(text)) is not None:
        text = match[1]
    cleaned = text.translate(_TRANSLATION)
    if not cleaned.isascii():
        cleaned = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in cleaned)
    return cleaned


@functools.lru_cache(maxsize=4096)
def _classify(cleaned: str) -> ParsedNumber:
    """Rule 5: let phonenumbers decide.

    Memoised: a pure function of the cleaned text (results are immutable), and ``phonenumbers``
    costs ~50 us per call, so the junk, landlines and foreign numbers a table repeats are decided once.
    """
    try:
        number = phonenumbers.parse(cleaned, "CN")
    except NumberParseException as exc:
        return _PARSE_ERRORS.get(exc.error_type, _NOT_A_NUMBER)
    if phonenumbers.is_valid_number(number):
        if phonenumbers.region_code_for_number(number) != "CN":
            return _unsupported(f"country code {number.country_code}")
        number_type = phonenumbers.number_type(number)
        if number_type in _MOBILE_TYPES:
            national = phonenumbers.national_significant_number(number)
            if _MOBILE_RE.fullmatch(national):
                return ParsedNumber(NumberKind.MOBILE, national, "mobile")
            return _NOT_VALID  # unreachable with today's metadata; never send what we cannot check
        return _unsupported(_TYPE_REASONS.get(number_type, "non-mobile number"))
    if number.country_code == 86 and is_valid_short_number_for_region(number, "CN"):
        return _unsupported("service number")
    length = phonenumbers.is_possible_number_with_reason(number)
    return _LENGTH_REASONS.get(length, _NOT_VALID)


def mask_number(value: object) -> str:
    """Show a value in logs, exceptions and XCom without revealing the number.

    A mobile becomes ``138****8000`` (the customary Chinese mask). Anything else keeps only its
    digits: the first 3 and last 2 of them when at least 4 stay hidden, otherwise all stars. Never
    raises, and never returns 5 or more digits of a non-mobile in a row.
    """
    try:
        if value is None:
            return "<null>"
        national = parse_number(value).national
        if national is not None:
            return f"{national[:3]}****{national[-4:]}"
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value[:_MAX_RAW]).decode("utf-8", "replace")
        elif isinstance(value, str):
            text = value[:_MAX_RAW]
        else:
            text = str(value)[:_MAX_RAW]
        digits = "".join(str(unicodedata.decimal(c)) for c in text if c.isdecimal())
        if len(digits) < 9:
            return "*" * max(len(digits), 3)
        return f"{digits[:3]}{'*' * min(len(digits) - 5, 12)}{digits[-2:]}"
    except Exception:
        return "<unprintable>"
