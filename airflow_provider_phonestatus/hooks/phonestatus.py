"""``PhoneStatusHook``: check phone numbers' live status through the vendor API, cheaply.

Numbers arrive as tables hold them; the hook answers invalid and unsupported ones locally, sends
each distinct mobile number once (two spellings of one number are one request), paces every
request at the plan rate, retries what can succeed later and stops the batch on what cannot.

One path for every caller: values are classified by :func:`~.numbers.parse_national` and labelled
by :func:`local_label`, and distinct national numbers go through :meth:`PhoneStatusHook.lookup_session`,
the streaming API that :meth:`~PhoneStatusHook.check_many` and the operator's table pass both use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator, Hashable, Iterable
from functools import cached_property
from typing import Any, cast

import httpx
from airflow.sdk import BaseHook

from airflow_provider_phonestatus.batch import LookupBatch, lookup_all
from airflow_provider_phonestatus.claims import NumberClaims
from airflow_provider_phonestatus.client import LookupClient, LookupStats
from airflow_provider_phonestatus.exceptions import PhoneStatusConfigError, RateLimiterUnavailable
from airflow_provider_phonestatus.numbers import ParsedNumber, parse_national
from airflow_provider_phonestatus.protocol import Verdict, build_body, read_response
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.shared_pacing import SharedPacer, shared_pacer
from airflow_provider_phonestatus.vocabulary import PhoneStatus, PhoneStatusResult


class PhoneStatusHook(BaseHook):
    """Talks to the phone number status API through an Airflow ``phonestatus`` connection.

    :param phonestatus_conn_id: the connection: host is the base URL (empty means the vendor's),
        password the API key, extras ``endpoint``, ``number_field``, ``rate_limit_per_minute``,
        ``timeout`` and ``max_concurrency`` (see the README for the rest).
    :param settings: ready-made settings instead of a connection, e.g. for benchmarks.
    """

    conn_name_attr = "phonestatus_conn_id"
    default_conn_name = "phonestatus_default"
    conn_type = "phonestatus"
    hook_name = "Phone Number Status"

    def __init__(
        self,
        phonestatus_conn_id: str = default_conn_name,
        *,
        settings: PhoneStatusSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.phonestatus_conn_id = phonestatus_conn_id
        self._settings = settings

    @cached_property
    def settings(self) -> PhoneStatusSettings:
        if self._settings is not None:
            return self._settings
        conn = self.get_connection(self.phonestatus_conn_id)
        return PhoneStatusSettings.from_connection(conn.host, conn.password, conn.extra_dejson)

    @cached_property
    def client(self) -> LookupClient:
        """The engine; one per hook, so one pacer per hook whatever the concurrency, shared with
        every hook on the key when the connection names ``rate_limit_redis_conn_id``."""
        settings = self.settings
        if settings.rate_limit_redis_conn_id is None:
            return LookupClient(settings)
        pacer = shared_pacer(
            settings.rate_limit_redis_conn_id,
            settings.base_url,
            settings.api_key,
            settings.rate_limit_per_minute,
        )
        return LookupClient(settings, pacer=pacer)

    def number_claims(self) -> NumberClaims | None:
        """Claims of the numbers this hook's caller asks, among all tasks on the shared limit (so
        tasks running at once never pay twice for one number); None without a shared limit."""
        pacer = self.client.pacer
        return NumberClaims(pacer) if isinstance(pacer, SharedPacer) else None

    def require_shared_rate_limit(self) -> None:
        """Fail unless this hook's rate limit is shared through a reachable Redis: for tasks that
        run beside others on one key, which would otherwise each take the whole plan."""
        if self.settings.rate_limit_redis_conn_id is None:
            raise PhoneStatusConfigError(
                f"the {self.phonestatus_conn_id!r} connection has no rate_limit_redis_conn_id, so tasks "
                "running at once on its key would each send at the full plan rate; add the extra "
                "(see the README) or run them one at a time in the pool"
            )
        self.client  # noqa: B018 - builds the shared pacer: an unreachable Redis fails here

    def get_conn(self) -> LookupClient:
        return self.client

    @property
    def stats(self) -> LookupStats:
        """Requests sent, throttled answers, retries and successful lookups so far."""
        return self.client.stats

    def seconds_at_plan_rate(self, requests: int) -> float:
        """How long ``requests`` take at the connection's plan rate (a dry run's estimate)."""
        return requests * self.settings.interval

    def lookup_session(self, backlog: int | None = None, claims: NumberClaims | None = None) -> LookupBatch:
        """A streaming lookup session on this hook's engine and pacer; use it as a context manager.

        Submit distinct national numbers while it runs (``submit``, ``has_room``), take answers as
        they arrive (``results``), ``close()`` when no more will come, ``halt()`` to start no new
        request (answers in flight are still delivered). A cause that stops the batch is kept in
        ``error``. :meth:`check_many` and the operator both look numbers up through it. With
        ``claims`` (:meth:`number_claims`) a number another task is asking is delivered as
        ``batch.HELD``, unsent.
        """
        return LookupBatch(self.client, backlog, claims)

    def check(self, number: object) -> PhoneStatusResult:
        """Status of one number, as a table holds it; invalid or unsupported ones cost nothing."""
        for _, result in self.check_many([number]):
            return result
        raise AssertionError("check_many yields one result per distinct input")  # pragma: no cover

    def check_many(
        self, numbers: Iterable[object]
    ) -> Generator[tuple[object, PhoneStatusResult], None, None]:
        """Yield ``(input, result)`` once per distinct input, in the order answers arrive.

        Each distinct mobile number costs at most one lookup, however many spellings of it come
        in. Raises :class:`~airflow_provider_phonestatus.exceptions.BatchStopped` (after yielding
        every answer already paid for) when the key is refused or the balance is exhausted.
        """
        spellings: dict[str, list[object]] = {}
        seen: set[Hashable] = set()
        for value in numbers:
            key = _hashable(value)
            if key in seen:
                continue
            seen.add(key)
            national = parse_national(value)
            if isinstance(national, str):
                spellings.setdefault(national, []).append(value)
            else:
                self.stats.add(answered_locally=1)
                yield value, local_label(national)
        for national, result in lookup_all(self.lookup_session(), spellings.keys()):
            for value in spellings[national]:
                yield value, result

    async def acheck(self, number: object) -> PhoneStatusResult:
        """:meth:`check` for asyncio code; shares this hook's pacer with every other caller."""
        return await asyncio.to_thread(self.check, number)

    async def acheck_many(self, numbers: Iterable[object]) -> AsyncIterator[tuple[object, PhoneStatusResult]]:
        """:meth:`check_many` for asyncio code: the same engine and pacer, run off the event loop."""
        pairs = self.check_many(numbers)
        done = object()
        try:
            while (item := await asyncio.to_thread(next, pairs, done)) is not done:
                yield cast("tuple[object, PhoneStatusResult]", item)
        finally:
            await asyncio.to_thread(pairs.close)

    def test_connection(self) -> tuple[bool, str]:
        """Tell apart: host unreachable, key refused, OK.

        Spends no lookup: it sends one request with an empty number, which a working key gets
        answered as "bad number" (not billed by vendors of this kind) and a bad key as refused. It
        does use one request of the plan's per-minute quota.
        """
        try:
            client = self.client
            client.pacer.wait()
        except (PhoneStatusConfigError, RateLimiterUnavailable) as exc:
            return False, str(exc)
        settings = client.settings
        with contextlib.closing(client.new_channel()) as channel:
            client.stats.add(requests_sent=1)
            try:
                response = channel.post(build_body(settings.number_field, ""))
            except httpx.TransportError as exc:
                via = " through the proxy" if channel.through_proxy else ""
                return False, f"host unreachable{via}: {settings.base_url} ({type(exc).__name__})"
        outcome = read_response(response.status_code, response.headers, response.content)
        if outcome.verdict is Verdict.STOP:
            return False, outcome.reason
        if outcome.verdict is Verdict.RETRY and not outcome.throttled:
            return False, f"the API did not answer usefully: {outcome.reason}"
        return True, "Connection OK: host reachable and API key accepted (no lookup spent)"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Form layout for Airflow < 3.2, which does not read ``conn-fields`` from provider info."""
        from airflow_provider_phonestatus.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra form fields for Airflow < 3.2, built from the same ``CONN_FIELDS`` definition."""
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, StringField

        from airflow_provider_phonestatus.get_provider_info import CONN_FIELDS

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            types = spec["schema"]["type"]
            field_class = IntegerField if "integer" in types else StringField
            widgets[name] = field_class(
                lazy_gettext(spec["label"]),
                description=spec.get("description"),
                default=spec["schema"].get("default"),
            )
        return widgets


def local_label(parsed: ParsedNumber) -> PhoneStatusResult:
    """The free answer for a value that must not be sent (``invalid`` or ``unsupported``)."""
    return PhoneStatusResult.local(PhoneStatus(parsed.kind.value), parsed.reason)


def _hashable(value: object) -> Hashable:
    """Inputs are deduplicated by value; unhashable ones (rare junk) by their text."""
    try:
        hash(value)
    except TypeError:
        return ("unhashable", repr(value))
    return (type(value), value)
