"""The streaming lookup engine: submissions while running, halts that lose no paid answer."""

from __future__ import annotations

from airflow_provider_phonestatus.batch import INITIAL_WORKERS, LookupBatch
from airflow_provider_phonestatus.client import LookupClient
from airflow_provider_phonestatus.exceptions import BalanceExhausted
from airflow_provider_phonestatus.progress import Progress, format_seconds
from airflow_provider_phonestatus.sandbox import SandboxServer
from airflow_provider_phonestatus.settings import PhoneStatusSettings
from airflow_provider_phonestatus.vocabulary import PhoneStatus


def client_for(sandbox: SandboxServer, **changes: object) -> LookupClient:
    options: dict[str, object] = {"rate_limit_per_minute": 600_000, "timeout": 2.0, **changes}
    settings = PhoneStatusSettings(api_key=sandbox.config.api_key, base_url=sandbox.url, **options)  # type: ignore[arg-type]
    return LookupClient(settings)


def numbers(n: int) -> list[str]:
    return [f"1380000{i:04d}" for i in range(1, n + 1) if str(i)[-1] in "1234"][:n]


def drain(batch: LookupBatch) -> dict[str, object]:
    got: dict[str, object] = {}
    while not batch.finished:
        for national, result in batch.results(timeout=0.5):
            got[national] = result
    return got


def test_halt_delivers_every_submission_and_only_asked_ones_are_answered(
    phonestatus_sandbox: SandboxServer,
) -> None:
    phonestatus_sandbox.configure(rate_limit_per_minute=None, latency_ms=50)
    batch_numbers = [f"1380000{i:04d}" for i in range(1, 201)]
    with LookupBatch(client_for(phonestatus_sandbox, max_concurrency=4)) as batch:
        for national in batch_numbers:
            batch.submit(national)
        got = dict(batch.results())  # halt once the first answer is in, however slow the machine
        batch.halt()
        batch.close()
        got.update(drain(batch))
    assert set(got) == set(batch_numbers) and batch.outstanding == 0  # nothing goes missing
    answered = {n for n, r in got.items() if r is not None}
    ledger = phonestatus_sandbox.ledger()
    assert 0 < len(answered) < 200
    assert ledger["billed"] == len(answered)  # every paid answer was delivered, none extra


def test_submissions_while_running_and_a_stop_mid_way(phonestatus_sandbox: SandboxServer) -> None:
    phonestatus_sandbox.configure(rate_limit_per_minute=None, balance=5)
    batch = LookupBatch(client_for(phonestatus_sandbox, max_concurrency=2))
    with batch:
        for national in [f"1390000{i:04d}" for i in range(1, 31)]:
            batch.submit(national)
            for _, result in batch.results(timeout=0):
                assert result is None or result.status is PhoneStatus.ACTIVE or not result.is_answer
        batch.close()
        got = drain(batch)
    assert isinstance(batch.error, BalanceExhausted)
    assert len(got) == 30
    assert (
        sum(1 for r in got.values() if r is not None and r.is_paid)
        == 5
        == phonestatus_sandbox.ledger()["billed"]
    )


def test_progress_lines_say_done_total_rate_and_eta() -> None:
    now = [100.0]
    progress = Progress(10_000, interval=30.0, clock=lambda: now[0])
    assert progress.maybe_log(10, 10, 5) is None  # not yet: once per interval
    now[0] += 60
    line = progress.maybe_log(2_500, 60, 40)
    assert line is not None
    assert "2,500/10,000 due rows done (25%)" in line and "60 lookups paid (1.0/s)" in line
    assert "ETA 3m 00s" in line and "40 in queue" in line
    assert format_seconds(3 * 3600 + 125) == "3h 02m" and format_seconds(float("inf")) == "unknown"


def submit_all_then_close(
    sandbox: SandboxServer, wanted: list[str], per_minute: int
) -> tuple[LookupBatch, dict[str, object]]:
    """Every number submitted before ``close()``, as ``lookup_all`` does."""
    batch = LookupBatch(client_for(sandbox, rate_limit_per_minute=per_minute, max_concurrency=32))
    with batch:
        for national in wanted:
            batch.submit(national)
        batch.close()
        got = drain(batch)
    return batch, got


def test_workers_grow_to_what_a_slow_vendor_needs_after_close(phonestatus_sandbox: SandboxServer) -> None:
    # 100 ms answers at 100 requests/s need ~11 in flight (Little's law); the batch starts with
    # INITIAL_WORKERS and must add the rest itself, also when every number came before close().
    phonestatus_sandbox.configure(rate_limit_per_minute=None, latency_ms=100)
    wanted = [f"1390000{i:04d}" for i in range(1, 81)]
    batch, got = submit_all_then_close(phonestatus_sandbox, wanted, per_minute=6000)
    assert set(got) == set(wanted)
    assert all(getattr(r, "is_paid", False) for r in got.values())
    ledger = phonestatus_sandbox.ledger()
    assert ledger["requests"] == 80
    assert INITIAL_WORKERS < batch.workers <= 32
    assert ledger["max_concurrency"] > INITIAL_WORKERS
