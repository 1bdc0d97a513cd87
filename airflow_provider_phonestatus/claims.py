"""Claims of numbers among the tasks sharing one key's limit, so tasks at once never pay twice.

Two tables refreshed at the same time often hold the same numbers (customers and leads). Run one
after the other, the second finds the first's answers in the results store; run at once, both
would ask. So a worker about to ask a number claims it in the shared limit's Redis first (a
claim lives while the number is asked, not while it waits in a queue): the first task to claim it
asks; another keeps its rows aside (:attr:`held`) and writes them from the results store once
the asker saved its answer. A saved number's claim stays a while as a "saved" mark, so a task
that looked in the store just before the answer landed does not ask it again; a claim ends
without an answer when the asker got none or stopped, and the waiting rows stay due. Numbers are
kept in Redis only as salted hashes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from typing import Any

from airflow_provider_phonestatus.exceptions import RateLimiterUnavailable
from airflow_provider_phonestatus.shared_pacing import SharedPacer

log = logging.getLogger(__name__)

# KEYS: claims. ARGV: the owner, the mark to leave ('' deletes), its time to live (ms). Touches
# only the claims this owner holds, never another's.
_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    if ARGV[2] == '' then redis.call('DEL', key) else redis.call('SET', key, ARGV[2], 'PX', ARGV[3]) end
    n = n + 1
  end
end
return n
"""
SAVED = "saved"


class NumberClaims:
    """One task's claims: the numbers it asks, and the rows of numbers others ask (:attr:`held`)."""

    #: Seconds a claim lives unless released: longer than any ask (retries and holds included).
    TTL = 600.0
    #: Seconds between two looks for the held numbers' answers.
    POLL = 0.5

    def __init__(self, pacer: SharedPacer) -> None:
        self._pacer, self._key = pacer, pacer.key
        self.owner = secrets.token_hex(8)
        self._release = pacer.client.register_script(_RELEASE)
        self._mine: set[str] = set()  # claimed, not yet released
        self._lock = threading.Lock()  # workers claim while the run releases
        #: numbers another task is asking, with whatever the caller waits to write for each
        self.held: dict[str, list[Any]] = {}

    def _name(self, national: str) -> str:
        return f"{self._key}:claim:" + hashlib.sha256(f"{self._key}:{national}".encode()).hexdigest()[:24]

    def take(self, national: str) -> bool:
        """Claim ``national`` before asking it: False if another task holds it (called by workers)."""
        ttl = int(self.TTL * 1000)
        client = self._pacer.client
        if not self._pacer.call(client.set, name=self._name(national), value=self.owner, nx=True, px=ttl):
            return False
        with self._lock:
            self._mine.add(national)
        return True

    def hold(self, national: str, waiting: list[Any]) -> None:
        """Keep ``waiting`` until another task's answer for ``national`` is saved (or not)."""
        self.held.setdefault(national, []).extend(waiting)

    def give_up(self, everything: bool = False) -> list[Any]:
        """Drop the held numbers no other task claims any more (all with ``everything``); return
        what was waiting for them."""
        nationals = list(self.held)
        owners = self._pacer.call(self._pacer.client.mget, keys=[self._name(n) for n in nationals])
        done = (None, self.owner.encode(), SAVED.encode())  # nobody asks it any more
        gone = [n for n, owner in zip(nationals, owners, strict=True) if everything or owner in done]
        return [self.held.pop(n) for n in gone]

    def release(self, nationals: list[str], saved: bool = False) -> None:
        """End this task's claims of ``nationals``: their answers are ``saved`` in the store (a
        mark stays for :attr:`TTL`), or will not come (the claims go)."""
        if nationals:
            args = [self.owner, SAVED if saved else "", str(int(self.TTL * 1000))]
            self._pacer.call(self._release, keys=[self._name(n) for n in nationals], args=args)
            with self._lock:
                self._mine.difference_update(nationals)

    def close(self) -> None:
        """Release every claim still held (the run ends: nothing more will be saved). Redis gone:
        they expire after :attr:`TTL`, and this run's error says why it ended."""
        with self._lock:
            mine = list(self._mine)
        try:
            self.release(mine)
        except RateLimiterUnavailable as exc:
            log.warning("%d number claims left to expire in %.0f s: %s", len(mine), self.TTL, exc)
