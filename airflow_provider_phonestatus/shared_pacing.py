"""One plan rate shared by every hook on one API key, in every process and on every machine.

The connection extra ``rate_limit_redis_conn_id`` names an Airflow Redis connection; every hook
using the same key (at the same vendor URL) then takes its request slots from one schedule in that
Redis, on Redis's clock, so their requests together keep to ``rate_limit_per_minute``:

- **Slots, reserved** (:data:`_RESERVE`): each call takes the next free slot, ``max(now, next)``,
  and moves ``next`` one interval on: starts are spaced evenly, as the in-process
  :class:`~.pacing.Pacer` spaces them, with no burst after idling. Nothing polls: a slot is
  claimed once and waited for.
- **Actual starts, counted** (:data:`_START`): a thread that wakes late could start close to the
  next one, so before a request starts, the starts of the last 1 s and 60 s (every process's) are
  counted, as the local pacer does, and the start waits if either window is full.
- **Fair shares**: each hook holds at most one reservation at a time (a local gate), so hooks
  competing for the key are served in turn: n hooks get a 1/n share each, whatever their thread
  counts, and a hook alone gets the whole plan. A hook that finishes leaves its share to the rest.
- **Holds**: a throttled answer's ``Retry-After`` holds every hook on the key, not only the one
  that heard it.

Rate-limiting libraries were measured first (``python -m bench --only limiter_libraries``,
``bench/README.md``): they check and reject, so the time between a slot freeing and a waiter's
next try is lost. At 300 requests/s, spaced like the plan (burst 1), throttled-py's GCRA reached
0.94 of the plan and pyrate-limiter's 0.79; throttled-py kept up only with a burst of 3 (three
starts at once); limits has no window under a second. A reserved slot costs one round trip, keeps
the plan's spacing and is never lost to another poller.

When Redis cannot be reached the pacer raises :class:`~.exceptions.RateLimiterUnavailable`: the
hook starts no further request (never unshared pacing: the other hooks would not know of it).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError, RateLimiterUnavailable
from airflow_provider_phonestatus.pacing import Pacer

#: Seconds a Redis command may take (connecting included) before the limit counts as unreachable.
REDIS_TIMEOUT = 5.0

# KEYS: next slot, hold-until. ARGV: interval (microseconds). Returns the wait in microseconds.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'),
  tonumber(redis.call('GET', KEYS[2]) or '0'))
local nxt = slot + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 60000)
return string.format('%.0f', slot - now)
"""

# KEYS: starts (sorted set), hold-until, a counter that makes members unique. ARGV: pairs of
# (window microseconds, limit).
# Returns "0" after recording a start now, "-1" while held, else the wait in microseconds.
_START = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') > now then return '-1' end
local longest = 0
for i = 1, #ARGV, 2 do longest = math.max(longest, tonumber(ARGV[i])) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - longest))
local wait = 0
for i = 1, #ARGV, 2 do
  local window, limit = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local low = string.format('(%.0f', now - window)
  local inside = redis.call('ZCOUNT', KEYS[1], low, '+inf')
  if inside >= limit then
    local entry = redis.call('ZRANGEBYSCORE', KEYS[1], low, '+inf', 'WITHSCORES', 'LIMIT', inside - limit, 1)
    wait = math.max(wait, tonumber(entry[2]) + window - now)
  end
end
if wait > 0 then return string.format('%.0f', wait) end
local stamp = string.format('%.0f', now)
redis.call('ZADD', KEYS[1], stamp, stamp .. ':' .. redis.call('INCR', KEYS[3]))
redis.call('PEXPIRE', KEYS[1], math.floor(longest / 1000) + 1000)
redis.call('PEXPIRE', KEYS[3], math.floor(longest / 1000) + 1000)
return '0'
"""

# KEYS: hold-until. ARGV: seconds (microseconds). Extends the hold, never shortens it.
_HOLD = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
"""


def limit_key(base_url: str, api_key: str) -> str:
    """The Redis key prefix of one API key at one vendor; the key itself is never stored."""
    digest = hashlib.sha256(f"{base_url.rstrip('/')}\n{api_key}".encode()).hexdigest()[:24]
    return f"phonestatus:rate:{digest}"


class SharedPacer(Pacer):
    """A :class:`~.pacing.Pacer` whose slots, holds and start windows live in Redis."""

    def __init__(self, client: Any, key: str, rate_per_minute: float, *, where: str = "Redis") -> None:
        super().__init__(rate_per_minute)
        self.where = where  #: for error messages: the connection id and host, never a password
        self.key = key
        self._keys = {name: f"{key}:{name}" for name in ("next", "hold", "starts", "seq")}
        self._reserve = client.register_script(_RESERVE)
        self._start = client.register_script(_START)
        self._hold = client.register_script(_HOLD)
        self._windows = [int(x) for window, limit in self.limits for x in (window * 1e6, limit)]
        self._interval_us = str(round(self.interval * 1e6))
        #: One reservation at a time per hook: hooks are served in turn (see the module docstring).
        self._gate = threading.Lock()
        self.client = client
        self.call(client.ping)  # unreachable: fail before the first request, not during it

    def reserve(self) -> float:
        keys = self._keys
        wait_us = self.call(self._reserve, keys=[keys["next"], keys["hold"]], args=[self._interval_us])
        return int(wait_us) / 1e6

    def hold(self, seconds: float) -> None:
        self.call(self._hold, keys=[self._keys["hold"]], args=[str(round(seconds * 1e6))])

    def start(self) -> float:
        keys = self._keys
        if not self._windows:
            return 0.0
        starts = [keys["starts"], keys["hold"], keys["seq"]]
        answer = int(self.call(self._start, keys=starts, args=self._windows))
        return -1.0 if answer < 0 else answer / 1e6

    def wait(self, stop: threading.Event | None = None) -> bool:
        """As :meth:`Pacer.wait`, holding this hook's gate: one of its threads waits at a time."""
        while not self._gate.acquire(timeout=0.5):
            if stop is not None and stop.is_set():
                return False
        try:
            return super().wait(stop)
        finally:
            self._gate.release()

    def call(self, command: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return command(**kwargs)
        except redis.RedisError as exc:
            raise RateLimiterUnavailable(
                f"the shared rate limit is unreachable ({self.where}: {type(exc).__name__}: {exc}); "
                "no request is started without it"
            ) from exc


def shared_pacer(conn_id: str, base_url: str, api_key: str, rate_per_minute: float) -> SharedPacer:
    """The pacer of ``conn_id``'s Redis (an Airflow ``redis`` connection) for this key."""
    try:
        from airflow.providers.redis.hooks.redis import RedisHook
    except ImportError:
        raise PhoneStatusConfigError(
            "rate_limit_redis_conn_id needs the Redis provider: "
            "pip install 'airflow-provider-phonestatus[redis]'"
        ) from None
    hook = RedisHook(redis_conn_id=conn_id)
    try:
        client = hook.get_conn()  # type: ignore[no-untyped-call]
    except Exception as exc:  # a missing connection, a bad extra: a setting, not an outage
        raise PhoneStatusConfigError(
            f"rate_limit_redis_conn_id {conn_id!r} is not a usable Redis connection: {exc}"
        ) from exc
    # RedisHook sets no timeouts: a Redis that stops answering would hang every lookup.
    client.connection_pool.connection_kwargs.update(
        socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    where = f"Redis connection {conn_id!r} at {hook.host}:{hook.port}"
    return SharedPacer(client, limit_key(base_url, api_key), rate_per_minute, where=where)
