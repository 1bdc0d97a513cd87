"""The deterministic truth: what the sandbox answers for each number, so tests can predict it.

A number is accepted only as a JSON string of 11 ASCII digits matching ``^1[3-9]\\d{9}$``; anything
else gets HTTP 200 ``{"code": 400, "message": "手机号格式错误"}`` and is not billed.

``result`` (and ``resultMsg``) by the LAST digit:

==========  ========  ==============
last digit  result    resultMsg
==========  ========  ==============
0           "0"       销号或未启用
1 2 3 4 9   "1"       正常
5           "2"       停机
6           "3"       在网但不可用
7           "4"       预销号
8           "5"       关机
==========  ========  ==============

``channel`` by the 3-digit prefix (the real allocation; unknown prefixes count as 移动):

=====  ===============================================================================
移动   134-139 147 148 150-152 157-159 172 178 182-184 187 188 195 197 198
联通   130-132 145 146 155 156 166 167 171 175 176 185 186 196
电信   133 149 153 162 173 174 177 180 181 189 190 191 193 199
广电   192
=====  ===============================================================================

Ported numbers: when the second-to-last digit is 9, ``transferStatus`` is "1" and ``channel`` is
the carrier now serving it, the next in the cycle 移动 -> 联通 -> 电信 -> 广电 -> 移动; otherwise
``transferStatus`` is "0". Examples: 13800138000 -> result "0", 移动, not ported;
13800138001 -> "1" 正常 移动; 13800138095 -> "2" 停机, ported to 联通.

Worlds: the config field ``world`` (a non-negative integer, default 0) changes the world, so a
refresh finds numbers whose status moved since the last one. World 0 is the truth above. In world
``w >= 1`` a number whose THIRD-to-last digit ``d`` satisfies ``d < w`` (world 1: 10% of numbers,
world 3: 30%, world 10 or more: all) answers the ``result`` and ``resultMsg`` of the NEXT last
digit, ``(last + 1) % 10`` (those ending in 1, 2 or 3 stay "1"); ``channel`` and
``transferStatus`` do not change:

==========  =======  =======  ==================================================
last digit  world 0  changed  as the provider's status
==========  =======  =======  ==================================================
0           "0"      "1"      not_in_service -> active (a recycled number)
1 2 3       "1"      "1"      active, unchanged
4           "1"      "2"      active -> suspended
5           "2"      "3"      suspended -> unavailable
6           "3"      "4"      unavailable -> pending_cancellation
7           "4"      "5"      pending_cancellation -> powered_off
8           "5"      "1"      powered_off -> active
9           "1"      "0"      active -> not_in_service
==========  =======  =======  ==================================================

Examples: 13800138000 (third-to-last digit 0) is "1" 正常 from world 1 on; 13800138109 is "1" in
worlds 0 and 1 and "0" 销号或未启用 from world 2 on.

``orderNo`` is unique per billed answer (timestamp + counter). ``value_types`` "number" sends
``result`` and ``transferStatus`` as JSON integers; "mixed" does so for numbers whose last digit
is odd (the number's own last digit, in every world). Overrides set with ``set_truth`` are served
verbatim, in every world. The ledger records each billed answer's ``orderNo``
(``GET /_sandbox/orders``).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from typing import Any

NUMBER_RE = re.compile(r"1[3-9][0-9]{9}")  # used with fullmatch: ASCII digits, no trailing newline
MASK_RE = re.compile(r"1[3-9][0-9]{9}")

RESULT_BY_LAST_DIGIT = dict(zip("0123456789", "0111123451", strict=True))
RESULT_MSG = {"0": "销号或未启用", "1": "正常", "2": "停机", "3": "在网但不可用", "4": "预销号", "5": "关机"}
CARRIER_CYCLE = ("移动", "联通", "电信", "广电")


def _prefixes(spec: str) -> set[str]:
    out: set[str] = set()
    for part in spec.split():
        low, _, high = part.partition("-")
        out.update(str(p) for p in range(int(low), int(high or low) + 1))
    return out


CARRIER_BY_PREFIX: dict[str, str] = {
    **dict.fromkeys(_prefixes("134-139 147 148 150-152 157-159 172 178 182-184 187 188 195 197 198"), "移动"),
    **dict.fromkeys(_prefixes("130-132 145 146 155 156 166 167 171 175 176 185 186 196"), "联通"),
    **dict.fromkeys(_prefixes("133 149 153 162 173 174 177 180 181 189 190 191 193 199"), "电信"),
    "192": "广电",
}

# Messages of the envelopes the sandbox sends; clients match codes, people read these.
MSG_SUCCESS = "success"
MSG_BAD_NUMBER = "手机号格式错误"
MSG_BAD_BODY = "请求体必须是JSON对象"
MSG_BAD_KEY = "API Key无效"
MSG_NO_BALANCE = "余额不足"
MSG_THROTTLED = "请求过于频繁"
MSG_UPSTREAM_BUSY = "上游通道繁忙"
MSG_METHOD = "仅支持POST"


def envelope(code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The vendor's answer envelope; error envelopes carry no ``data``."""
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return body


def mask(text: str) -> str:
    """Mask every mobile number in ``text`` as ``138****8000``: numbers never appear whole in logs."""
    return MASK_RE.sub(lambda m: f"{m[0][:3]}****{m[0][-4:]}", text)


def is_valid_number(number: object) -> bool:
    """True for a JSON string the vendor would accept as a mainland mobile number."""
    return isinstance(number, str) and NUMBER_RE.fullmatch(number) is not None


def parse_request(raw: bytes, field: str) -> tuple[object, str | None]:
    """The JSON body (None if unparseable) and what it sent as the number (for ledger and faults)."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None, None
    value = body.get(field) if isinstance(body, dict) else None
    if value is None or isinstance(value, (dict, list)):
        return body, None
    return body, value if isinstance(value, str) else json.dumps(value)


def changes_in_world(number: str, world: int) -> bool:
    """Whether ``world`` gives ``number`` the result of the next last digit: its third-to-last digit
    is below ``world`` (for last digits 1, 2 and 3 the result stays "1")."""
    if world < 0:
        raise ValueError(f"world must be a non-negative integer, not {world!r}")
    return int(number[-3]) < world


def expected(number: str, *, world: int = 0) -> dict[str, str]:
    """The truth for a valid ``number`` in ``world`` without ``orderNo``: result, resultMsg, channel,
    transferStatus."""
    if not is_valid_number(number):
        raise ValueError("not an 11-digit mainland mobile number")
    last = number[-1]
    if changes_in_world(number, world):
        last = str((int(last) + 1) % 10)
    result = RESULT_BY_LAST_DIGIT[last]
    channel = CARRIER_BY_PREFIX.get(number[:3], "移动")
    ported = number[-2] == "9"
    if ported:
        channel = CARRIER_CYCLE[(CARRIER_CYCLE.index(channel) + 1) % len(CARRIER_CYCLE)]
    return {
        "result": result,
        "channel": channel,
        "resultMsg": RESULT_MSG[result],
        "transferStatus": "1" if ported else "0",
    }


class TruthBook:
    """The truth plus per-number overrides and the ``orderNo`` counter; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, dict[str, Any]] = {}
        self._orders = itertools.count(1)

    def set(self, number: str, data: dict[str, Any] | None) -> None:
        """Override ``number``: a dict with ``code`` is a whole envelope, else the ``data``; None removes."""
        if not is_valid_number(number):
            raise ValueError("overrides need a valid 11-digit number (others never reach the truth)")
        if data is not None and not isinstance(data, dict):
            raise ValueError("override must be a JSON object or null")
        with self._lock:
            if data is None:
                self._overrides.pop(number, None)
            else:
                self._overrides[number] = dict(data)

    def clear(self) -> None:
        with self._lock:
            self._overrides.clear()

    def answer(self, number: str, value_types: str, world: int = 0) -> dict[str, Any]:
        """The envelope for a valid number in ``world``; billed by the caller when its code is 200."""
        with self._lock:
            override = self._overrides.get(number)
        if override is not None:
            return dict(override) if "code" in override else envelope(200, MSG_SUCCESS, dict(override))
        truth: dict[str, Any] = expected(number, world=world)
        if value_types == "number" or (value_types == "mixed" and int(number[-1]) % 2 == 1):
            truth["result"] = int(truth["result"])
            truth["transferStatus"] = int(truth["transferStatus"])
        data = {
            "result": truth["result"],
            "channel": truth["channel"],
            "orderNo": self._order_no(),
            "resultMsg": truth["resultMsg"],
            "transferStatus": truth["transferStatus"],
        }
        return envelope(200, MSG_SUCCESS, data)

    def _order_no(self) -> str:
        with self._lock:
            n = next(self._orders)
        return time.strftime("%Y%m%d%H%M%S") + f"{n:07d}"
