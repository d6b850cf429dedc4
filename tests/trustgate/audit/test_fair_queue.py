"""A source beyond its share is summarized, never dropped, and never holds back the others."""

from __future__ import annotations

from trustgate.audit.fair_queue import FairQueue, Suppressed

from ...clock import Clock


def test_sources_are_served_in_turn() -> None:
    queue: FairQueue[str] = FairQueue(capacity=100, burst=10, clock=Clock(0.0))
    for item in ("a1", "a2", "a3"):
        queue.put("a", item)
    queue.put("b", "b1")
    taken = [queue.get(timeout=0) for _ in range(4)]
    assert taken.index("b1") < 2  # b does not wait behind all of a


def test_beyond_its_burst_a_source_is_counted_into_one_summary() -> None:
    clock = Clock(0.0)
    queue: FairQueue[str] = FairQueue(capacity=100, burst=2, refill=10, clock=clock)
    accepted = [queue.put("noisy", f"r{i}") for i in range(5)]
    assert accepted == [True, True, False, False, False]
    assert [queue.get(timeout=0), queue.get(timeout=0)] == ["r0", "r1"]
    assert queue.get(timeout=0) is None  # no token left for the summary yet
    clock.now = 10
    summary = queue.get(timeout=0)
    assert isinstance(summary, Suppressed) and summary.count == 3 and summary.latest == "r4"
    assert summary.source == "noisy"


def test_no_source_holds_more_than_its_share_of_the_queue() -> None:
    queue: FairQueue[int] = FairQueue(capacity=8, burst=100)
    assert sum(queue.put("one", i) for i in range(8)) == 2  # a quarter of 8
    assert queue.put("other", 0) is True


def test_wait_idle_returns_once_everything_taken_is_done() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.put("a", "x")
    assert queue.wait_idle(0.05) is False
    assert queue.get(timeout=0) == "x"
    queue.done()
    assert queue.wait_idle(0.05) is True
