"""A bounded queue that one noisy source cannot fill: per-source token buckets, served round-robin.

Events are how an operator first sees a refusal, and the Event sink sends them one at a time. A
namespace whose pods are refused by the thousand (a bad rollout, or someone probing) must not
delay or crowd out the Events of every other namespace. Each source (a namespace) gets a token
bucket (`burst` Events at once, one more every `refill` seconds) and a share of the queue; what a
source sends beyond that is not dropped but counted, and summarized later as one Event per source
(as Kubernetes' own event correlator turns a spamming source into a series).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Suppressed(Generic[T]):
    """What a source sent beyond its share since its last summary: how many, and the latest."""

    source: str
    count: int
    latest: T
    since: float


@dataclass
class _Source(Generic[T]):
    tokens: float
    updated: float
    queued: deque[T] = field(default_factory=deque)
    suppressed: Suppressed[T] | None = None


class FairQueue(Generic[T]):
    def __init__(
        self,
        capacity: int = 1000,
        burst: int = 25,
        refill: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or burst < 1 or refill <= 0:
            raise ValueError("capacity and burst must be at least 1, refill positive")
        self.capacity, self.burst, self.refill, self.clock = capacity, burst, refill, clock
        self.share = max(1, capacity // 4)  # no source holds more than a quarter of the queue
        self._sources: OrderedDict[str, _Source[T]] = OrderedDict()
        self._size = 0
        self._cond = threading.Condition()
        self._unfinished = 0

    def put(self, source: str, item: T) -> bool:
        """Queue `item` for `source`; False when it was counted into the source's summary instead."""
        with self._cond:
            now = self.clock()
            state = self._source(source, now)
            if state.tokens >= 1 and self._size < self.capacity and len(state.queued) < self.share:
                state.tokens -= 1
                state.queued.append(item)
                self._size += 1
                self._unfinished += 1
                self._cond.notify()
                return True
            if state.suppressed is None:
                state.suppressed = Suppressed(source, 0, item, now)
            state.suppressed.count += 1
            state.suppressed.latest = item
            self._cond.notify()
            return False

    def get(self, timeout: float | None = None) -> T | Suppressed[T] | None:
        """The next item, taking sources in turn; or a source's summary once it has a token again (and
        nothing of its own is queued); None after `timeout` with nothing to give."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                found = self._next(self.clock())
                if found is not None:
                    if isinstance(found, Suppressed):
                        self._unfinished += 1  # `done` follows for a summary as for an item
                    return found
                remaining = None if deadline is None else deadline - self.clock()
                if remaining is not None and remaining <= 0:
                    return None
                # A summary becomes due by the clock alone: wake up to check at least once per refill.
                self._cond.wait(self.refill if remaining is None else min(remaining, self.refill))

    def done(self) -> None:
        """One item (or summary) taken with `get` has been handled."""
        with self._cond:
            self._unfinished -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until every queued item has been taken and handled; True when that happened in time."""
        deadline = self.clock() + timeout
        with self._cond:
            while self._unfinished > 0:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def __len__(self) -> int:
        return self._size

    def _source(self, name: str, now: float) -> _Source[T]:
        state = self._sources.get(name)
        if state is None:
            state = self._sources[name] = _Source(tokens=float(self.burst), updated=now)
            if len(self._sources) > 4 * self.capacity:  # forget idle sources, oldest first
                for old in [k for k, s in self._sources.items() if not s.queued and s.suppressed is None][:64]:
                    del self._sources[old]
        else:
            state.tokens = min(float(self.burst), state.tokens + (now - state.updated) / self.refill)
            state.updated = now
        return state

    def _next(self, now: float) -> T | Suppressed[T] | None:
        for name in list(self._sources):
            state = self._sources[name]
            self._sources.move_to_end(name)  # round-robin: the next call starts with another source
            if state.queued:
                self._size -= 1
                return state.queued.popleft()
            if state.suppressed is not None:
                state.tokens = min(float(self.burst), state.tokens + (now - state.updated) / self.refill)
                state.updated = now
                if state.tokens >= 1:
                    state.tokens -= 1
                    summary, state.suppressed = state.suppressed, None
                    return summary
        return None
