"""A clock that stands still until a test moves it, for code that reads the time through a `clock` callable."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Clock(Generic[T]):
    """Answers `now` (a number of seconds, a datetime: whatever the code under test reads) until the test sets it."""

    def __init__(self, now: T) -> None:
        self.now = now

    def __call__(self) -> T:
        return self.now
