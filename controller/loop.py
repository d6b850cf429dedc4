"""What the controllers that sleep between reconciles share: whether this replica leads, a wake-up and
a stop, each set from any thread (the election, the cache's change listeners, shutdown)."""

from __future__ import annotations

import threading


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
