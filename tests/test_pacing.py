"""The pacer hands out start slots at the plan rate, across threads, and honours holds."""

from __future__ import annotations

import threading

from airflow_provider_phonestatus.pacing import Pacer


class Clock:
    """A clock the test moves by hand, so slots are exact numbers rather than wall time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_slots_are_one_interval_apart_and_never_burst_after_idle() -> None:
    clock = Clock()
    pacer = Pacer(60, clock=clock)
    assert [pacer.reserve() for _ in range(4)] == [0.0, 1.0, 2.0, 3.0]
    clock.now += 100  # long idle: the next request goes at once, the one after waits a full interval
    assert [pacer.reserve() for _ in range(2)] == [0.0, 1.0]


def test_hold_delays_every_later_slot() -> None:
    clock = Clock()
    pacer = Pacer(600, clock=clock)
    assert pacer.reserve() == 0.0
    pacer.hold(5.0)
    assert pacer.reserve() == 5.0
    assert abs(pacer.reserve() - 5.1) < 1e-9


def test_threads_sharing_a_pacer_get_distinct_slots() -> None:
    clock = Clock()
    pacer = Pacer(6000, clock=clock)
    slots: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(250):
            delay = pacer.reserve()
            with lock:
                slots.append(round(delay, 6))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slots) == [round(i * 0.01, 6) for i in range(2000)]


def test_wait_returns_false_once_stopped() -> None:
    pacer = Pacer(1)  # one slot a minute: the second caller would wait 60 s
    stop = threading.Event()
    assert pacer.wait(stop) is True
    stop.set()
    assert pacer.wait(stop) is False
