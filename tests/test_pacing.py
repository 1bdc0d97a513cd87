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


def test_actual_starts_never_exceed_the_plan_in_a_window_even_when_threads_wake_late() -> None:
    """Slots at 0, 0.05, 0.1 ... (20/s); the thread of slot 0 wakes 80 ms late. The starts
    of the next second must still fit 20 in any 1-second window."""
    clock = Clock()
    pacer = Pacer(1200, clock=clock)
    assert pacer.limits == [(1.0, 20), (60.0, 1200)]
    t0 = clock.now
    starts = []
    clock.now = t0 + 0.08  # slot 0 starts late
    assert pacer.start() == 0.0
    starts.append(clock.now)
    for i in range(1, 21):  # slots 1..20 wake on time
        clock.now = max(clock.now, t0 + 0.05 * i)
        wait = pacer.start()
        if wait:
            clock.now += wait
            assert pacer.start() == 0.0
        starts.append(clock.now)
    assert starts[20] - starts[0] >= 1.0  # the 21st start waited for the late one's window
    assert starts[19] == t0 + 0.95  # on-time starts were not delayed


def test_a_hold_while_sleeping_sends_the_caller_back_to_the_queue() -> None:
    clock = Clock()
    pacer = Pacer(60, clock=clock)
    pacer.hold(2.0)
    assert pacer.start() == -1.0
    clock.now += 2.5
    assert pacer.start() == 0.0
