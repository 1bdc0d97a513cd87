"""The words the provider writes to warehouses: statuses, carriers and one lookup's result.

Enum values are exactly what lands in status columns, so they are stable API. The vendor's codes
(``data.result``) map onto :class:`PhoneStatus`; anything the contract does not list is kept raw
and labelled ``unknown``, never a crash.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class PhoneStatus(enum.StrEnum):
    """Status of one number, as written to the ``phone_status`` column."""

    ACTIVE = "active"  #: vendor 1, 正常
    NOT_IN_SERVICE = "not_in_service"  #: vendor 0, 销号或未启用
    SUSPENDED = "suspended"  #: vendor 2, 停机
    UNAVAILABLE = "unavailable"  #: vendor 3, 在网但不可用
    PENDING_CANCELLATION = "pending_cancellation"  #: vendor 4, 预销号
    POWERED_OFF = "powered_off"  #: vendor 5, 关机
    UNKNOWN = "unknown"  #: the vendor answered with a code the contract does not list
    INVALID = "invalid"  #: local: not a phone number; never sent
    UNSUPPORTED = "unsupported"  #: local: a real number the API does not cover; never sent
    REJECTED = "rejected"  #: the API refused this number (e.g. bad format); final, not retried
    FAILED = "failed"  #: no answer after retries; says nothing about the number

    @property
    def is_answer(self) -> bool:
        """True when this is a statement about the number, worth storing over an older one."""
        return self is not PhoneStatus.FAILED

    @property
    def is_local(self) -> bool:
        """True for labels given without asking the vendor."""
        return self in (PhoneStatus.INVALID, PhoneStatus.UNSUPPORTED)

    @property
    def is_vendor_answer(self) -> bool:
        """True when the vendor answered the lookup: the one case comparable vendors bill."""
        return self not in (
            PhoneStatus.INVALID,
            PhoneStatus.UNSUPPORTED,
            PhoneStatus.REJECTED,
            PhoneStatus.FAILED,
        )


#: Vendor ``data.result`` code -> status.
VENDOR_CODES: Mapping[str, PhoneStatus] = {
    "0": PhoneStatus.NOT_IN_SERVICE,
    "1": PhoneStatus.ACTIVE,
    "2": PhoneStatus.SUSPENDED,
    "3": PhoneStatus.UNAVAILABLE,
    "4": PhoneStatus.PENDING_CANCELLATION,
    "5": PhoneStatus.POWERED_OFF,
}


class Carrier(enum.StrEnum):
    """Carrier now serving the number (after any port), as written to ``phone_carrier``."""

    CHINA_MOBILE = "china_mobile"  #: 移动
    CHINA_UNICOM = "china_unicom"  #: 联通
    CHINA_TELECOM = "china_telecom"  #: 电信
    CHINA_BROADNET = "china_broadnet"  #: 广电
    UNKNOWN = "unknown"  #: a channel the contract does not list; the raw text is kept


#: Vendor ``data.channel`` -> carrier. Also accepts the carriers' full Chinese names.
VENDOR_CHANNELS: Mapping[str, Carrier] = {
    "移动": Carrier.CHINA_MOBILE,
    "中国移动": Carrier.CHINA_MOBILE,
    "联通": Carrier.CHINA_UNICOM,
    "中国联通": Carrier.CHINA_UNICOM,
    "电信": Carrier.CHINA_TELECOM,
    "中国电信": Carrier.CHINA_TELECOM,
    "广电": Carrier.CHINA_BROADNET,
    "中国广电": Carrier.CHINA_BROADNET,
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class PhoneStatusResult:
    """The answer for one number: from the vendor, from a local label, or a failure."""

    status: PhoneStatus
    vendor_code: str | None = None  #: raw ``data.result`` (or the envelope code of a rejection)
    carrier: Carrier | None = None
    carrier_raw: str | None = None  #: raw ``data.channel``, kept when it is not in the vocabulary
    ported: bool | None = None  #: from ``data.transferStatus``
    order_no: str | None = None  #: vendor transaction id, the key to reconcile a bill
    message: str | None = None  #: ``data.resultMsg``, the reason of a label, or the failure cause
    checked_at: dt.datetime = field(default_factory=_utcnow)  #: UTC
    #: The number's history as the warehouse knew it when this answer was stored (``history``);
    #: the hook leaves it empty.
    previous_status: str | None = None  #: the vendor status before this answer
    previous_checked_at: dt.datetime | None = None  #: naive UTC
    status_changed_at: dt.datetime | None = None  #: naive UTC: current status first seen after another

    @property
    def is_answer(self) -> bool:
        """True unless the lookup failed; a failure must never overwrite an earlier answer."""
        return self.status.is_answer

    @property
    def is_paid(self) -> bool:
        """True when the vendor answered the lookup (the one case comparable vendors bill)."""
        return self.status.is_vendor_answer

    @classmethod
    def local(cls, status: PhoneStatus, reason: str) -> PhoneStatusResult:
        """A label given without a request (``invalid``/``unsupported``)."""
        return cls(status=status, message=reason)

    @classmethod
    def failed(cls, cause: str, vendor_code: str | None = None) -> PhoneStatusResult:
        """No answer: retries exhausted or the batch was stopped."""
        return cls(status=PhoneStatus.FAILED, vendor_code=vendor_code, message=cause)

    @classmethod
    def rejected(cls, vendor_code: str, message: str | None) -> PhoneStatusResult:
        """The vendor refused this number; asking again would be refused again."""
        return cls(status=PhoneStatus.REJECTED, vendor_code=vendor_code, message=message)

    @classmethod
    def from_vendor_data(cls, data: Mapping[str, Any]) -> PhoneStatusResult:
        """Read ``data`` of a successful envelope; values may be strings or numbers.

        ``data.result`` must be usable (:func:`result_code`): without it the envelope is malformed,
        not an answer, and reading it is a caller's bug."""
        code = result_code(data.get("result"))
        if code is None:
            raise ValueError("vendor data without a usable result is not an answer")
        status = VENDOR_CODES.get(code, PhoneStatus.UNKNOWN)
        channel = _text(data.get("channel"))
        carrier = None if channel is None else VENDOR_CHANNELS.get(channel, Carrier.UNKNOWN)
        return cls(
            status=status,
            vendor_code=code,
            carrier=carrier,
            carrier_raw=channel,
            ported=_flag(data.get("transferStatus")),
            order_no=_text(data.get("orderNo")),
            message=_text(data.get("resultMsg")),
        )

    def as_record(self) -> dict[str, Any]:
        """Plain values for a warehouse row or a log line (no phone number in it)."""
        return {
            "status": self.status.value,
            "vendor_code": self.vendor_code,
            "carrier": self.carrier.value if self.carrier else None,
            "carrier_raw": self.carrier_raw,
            "ported": self.ported,
            "order_no": self.order_no,
            "message": self.message,
            "checked_at": self.checked_at,
        }


def result_code(value: Any) -> str | None:
    """``data.result`` as its code text, or None when it says nothing (missing, null, empty, or
    not a scalar): such a success envelope is malformed. A code outside the contract's "0".."5"
    is still an answer (``unknown``, raw code kept)."""
    if not isinstance(value, (str, int, float)):
        return None
    return _text(value)


def _text(value: Any) -> str | None:
    """A vendor scalar as text: ``1``, ``1.0`` and ``"1"`` are one code; empty is missing."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool | None:
    """``transferStatus`` "0"/"1" (or 0/1) as a boolean; anything else is unknown (None)."""
    text = _text(value)
    return {"0": False, "1": True}.get(text) if text is not None else None
