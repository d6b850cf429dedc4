"""What the controllers that sleep between reconciles share: whether this replica leads, a wake-up and
a stop, each set from any thread (the election, the cache's change listeners, shutdown).

`Loop` serves the controllers that reconcile everything at once when woken (a wake-up is a flag);
`WorkLoop` serves those handed work item by item (node names, namespaces, pods), which they keep,
with the moments something falls due by the clock alone, under one `Condition`."""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Loop:
    def __init__(self) -> None:
        self.leading = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def wake(self) -> None:
        """Reconcile now."""
        self._wake.set()

    def start_leading(self) -> None:
        self.leading.set()
        self._wake.set()

    def stop_leading(self) -> None:
        self.leading.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait until woken or `seconds` have passed; False once stopped."""
        self._wake.wait(seconds)
        self._wake.clear()
        return not self._stopping.is_set()


What = TypeVar("What")


class Syncing(Protocol):
    def wait_synced(self, timeout: float) -> bool: ...


class WorkLoop(Generic[What]):
    """The subclass's pending work and `_timers` (a heap of (due, what)) are guarded by `_wake`, which
    is notified whenever work is added, so the loop sleeps exactly until the next thing to do."""

    def __init__(self) -> None:
        self.leading = threading.Event()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._timers: list[tuple[float, What]] = []

    def notify(self) -> None:
        """Look at the work again now (leadership or the work itself changed)."""
        with self._wake:
            self._wake.notify()

    def stop(self) -> None:
        self._stopping.set()
        self.notify()

    def wait_synced(self, *caches: Syncing) -> bool:
        """Wait until every one of `caches` has synced (nothing is judged on a partial view); False once stopped."""
        while not all(cache.wait_synced(1.0) for cache in caches):
            if self._stopping.is_set():
                return False
        return True

    def _schedule(self, what: What, due: float) -> None:
        with self._wake:
            heapq.heappush(self._timers, (due, what))
            self._wake.notify()

    def _due(self, now: float) -> Iterator[tuple[float, What]]:
        """Take the timers due by `now`, earliest first; called holding `_wake`."""
        while self._timers and self._timers[0][0] <= now:
            yield heapq.heappop(self._timers)

    def _wait(self, now: float) -> None:
        """Sleep, holding `_wake`, until notified or the next timer falls due."""
        self._wake.wait(self._timers[0][0] - now if self._timers else None)
