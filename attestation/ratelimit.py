"""Token buckets for registrations: one per source address and one for all of them.

A registration costs the authority an EK certificate path check, an RSA or ECDH encryption and a
Node read from the API server, and the agent nothing but a request, so registrations are admitted
at a bounded rate: a flood from one source exhausts its own bucket (429, with Retry-After), and the
shared bucket caps what many sources together can make the authority do. An agent registers once
per authority restart or reboot and backs off when refused, so the defaults (a burst of 5 and one
every 5 s per source; a burst of 50 and 5 per second in all) never slow a healthy fleet.

The source is the TCP peer address (nothing in front of gunicorn may claim another, see
`forwarded_allow_ips`); per-source buckets are kept for the `max_sources` most recent sources, and
a forgotten one starts full again, which the shared bucket still bounds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

RATE_LIMITED = Counter(
    "trustgate_attestation_rate_limited_total", "Registrations refused with 429, by the limit reached", ["limit"]
)


@dataclass(frozen=True)
class Rate:
    """`burst` requests at once, refilled at `per_second`."""

    burst: int
    per_second: float

    def __post_init__(self) -> None:
        if self.burst < 1 or not self.per_second > 0:
            raise ValueError(f"a rate needs a burst of at least 1 and a positive refill, not {self}")


PER_SOURCE = Rate(5, 0.2)
TOTAL = Rate(50, 5.0)


@dataclass
class _Bucket:
    tokens: float
    updated: float

    def refill(self, rate: Rate, now: float) -> None:
        self.tokens = min(float(rate.burst), self.tokens + (now - self.updated) * rate.per_second)
        self.updated = now

    def wait(self, rate: Rate) -> float:
        """Seconds until one token is there."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / rate.per_second


@dataclass(frozen=True)
class Limited:
    """A refusal: which limit, and when to try again."""

    limit: str  # "source" or "total"
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class RegistrationLimiter:
    def __init__(
        self,
        per_source: Rate = PER_SOURCE,
        total: Rate = TOTAL,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_source, self.total, self.max_sources, self.clock = per_source, total, max_sources, clock
        self._total = _Bucket(float(total.burst), clock())
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, source: str) -> Limited | None:
        """None when the request may go on (one token taken from each bucket); else the refusal.

        A refused request takes nothing, so a source over its limit does not drain the shared bucket."""
        with self._lock:
            now = self.clock()
            bucket = self._sources.pop(source, None) or _Bucket(float(self.per_source.burst), now)
            self._sources[source] = bucket  # most recent last
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
            bucket.refill(self.per_source, now)
            self._total.refill(self.total, now)
            refusal = None
            if bucket.tokens < 1:
                refusal = Limited("source", bucket.wait(self.per_source))
            elif self._total.tokens < 1:
                refusal = Limited("total", self._total.wait(self.total))
            if refusal is not None:
                RATE_LIMITED.labels(refusal.limit).inc()
                return refusal
            bucket.tokens -= 1
            self._total.tokens -= 1
            return None
