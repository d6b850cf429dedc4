"""Evicting running pods from nodes that lost trust (`onTrustLost: Evict`), paced, through the Eviction API.

The pod trust controller asks; the evictor acts, one pod at a time from a queue:

- **through the Eviction API** (`pods/eviction`, policy/v1): the API server checks the pod's
  PodDisruptionBudgets and refuses (429) an eviction that would take more pods than a budget allows,
  atomically, however many evictions are under way. A refused eviction is tried again after
  `retry` seconds, once the budget's controller has seen the replacements become ready; the pod's
  own controller (a ReplicaSet, a StatefulSet) makes the replacement, and trustgate's scheduler
  extender and webhook place it on a trusted node only.
- **paced**: at most `rate` evictions a second, `burst` at once (a token bucket), so that one node
  losing trust cannot take every replica of every workload in the same second.
- **held back** while trust is lost widely (more nodes failing than `pause_fraction` of those with a
  report, and more than one): a revoked signing key or a broken authority would otherwise empty every
  trusted node of the cluster at once. Reports keep failing the pods meanwhile, and an alert fires.
- **judged again** just before each eviction: a node whose trust came back keeps its pods; the pod's
  uid must be the one judged (a precondition of the eviction), so a new pod of the same name is safe.

Every eviction is an audit record (decision `evicted`) and a Warning Event `TrustLostEviction` on the pod.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.loop import WorkLoop
from trustgate.audit.record import DECISION_EVICTED, AuditRecord, format_rfc3339
from trustgate.audit.sinks import AuditLog
from trustgate.core.reasons import messages
from trustgate.core.running import PodTrust

log = logging.getLogger(__name__)

OUTCOMES = ("evicted", "blocked", "gone", "kept", "failed", "paused")


class EvictionBlocked(Exception):
    """The API server refused the eviction now (429): a PodDisruptionBudget allows no more disruption."""


class PodGone(Exception):
    """The pod no longer exists, or is another pod by now (its uid changed)."""


@dataclass(frozen=True)
class EvictionPacing:
    rate: float = 2.0  # evictions per second, at most
    burst: int = 10
    retry: float = 5.0  # seconds before a refused (PDB) or failed eviction is tried again
    pause_fraction: float = 0.5  # hold evictions while more than this share of reporting nodes fails trust

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.retry <= 0 or not 0 < self.pause_fraction <= 1:
            raise ValueError("eviction rate and retry must be positive, burst at least 1, pause fraction in (0, 1]")


class Evictor(WorkLoop[tuple[str, str]]):
    def __init__(
        self,
        evict: Callable[[str, str, str], None],
        current: Callable[[tuple[str, str]], PodTrust | None],
        untrusted_share: Callable[[], tuple[int, int]],
        audit: AuditLog,
        registry: CollectorRegistry,
        pacing: EvictionPacing = EvictionPacing(),
        user: str = "trustgate-controller",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.evict, self.current, self.untrusted_share = evict, current, untrusted_share
        self.audit, self.pacing, self.user, self.clock = audit, pacing, user, clock
        self._pending: dict[tuple[str, str], PodTrust] = {}
        self._tokens = float(pacing.burst)
        self._filled = clock()
        self._held = False
        self._done: dict[str, float] = {}  # uids evicted lately: asked again before the watch says so, skipped
        self.outcomes = Counter(
            "trustgate_pod_evictions_total",
            "Evictions of pods from nodes that lost trust, by outcome (evicted; blocked: a PodDisruptionBudget "
            "refused it for now; gone; kept: trust came back; failed; paused: held while trust is lost widely)",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)
        self.paused = Gauge(
            "trustgate_evictions_paused",
            "1 while evictions are held back because trust is lost on too many nodes at once",
            registry=registry,
        )
        self.queued = Gauge("trustgate_evictions_queued", "Pods waiting to be evicted", registry=registry)
        self.queued.set_function(lambda: len(self._pending))

    def start_leading(self) -> None:
        self.leading.set()
        self.notify()

    def stop_leading(self) -> None:
        self.leading.clear()
        with self._wake:
            self._timers.clear()
            self._pending.clear()  # the next leader judges every pod again

    def request(self, trust: PodTrust) -> None:
        """Queue `trust`'s pod for eviction (once: asking again while it waits changes nothing)."""
        with self._wake:
            if trust.key in self._pending or (trust.uid and trust.uid in self._done):
                return
            self._pending[trust.key] = trust
            self._schedule(trust.key, self.clock())

    def run(self) -> None:
        while not self._stopping.is_set():
            key = self._next()
            if key is not None:
                self._handle(key)

    def _next(self) -> tuple[str, str] | None:
        """The next pod due, once a token is there; None when stopping or after a wake-up with nothing due."""
        with self._wake:
            while not self._stopping.is_set():
                now = self.clock()
                self._tokens = min(float(self.pacing.burst), self._tokens + (now - self._filled) * self.pacing.rate)
                self._filled = now
                if not self.leading.is_set() or not self._timers:
                    self._wake.wait(1.0)
                    continue
                due = self._timers[0][0]
                if due > now:
                    self._wake.wait(due - now)
                    continue
                if self._tokens < 1:
                    self._wake.wait((1 - self._tokens) / self.pacing.rate)
                    continue
                self._tokens -= 1
                return heapq.heappop(self._timers)[1]
            return None

    def _later(self, key: tuple[str, str], trust: PodTrust) -> None:
        with self._wake:
            self._pending[key] = trust
            self._schedule(key, self.clock() + self.pacing.retry)

    def _handle(self, key: tuple[str, str]) -> None:
        with self._wake:
            asked = self._pending.pop(key, None)
        if asked is None:
            return
        trust = self.current(key)
        if trust is None or not trust.evict or (asked.uid and trust.uid != asked.uid):
            self.outcomes.labels("kept" if trust is not None else "gone").inc()
            return
        failing, reporting = self.untrusted_share()
        if failing > max(1, self.pacing.pause_fraction * reporting):
            if not self._held:
                self._held = True
                log.error(
                    "evictions held: %d of %d nodes with a report fail trust (more than %.0f%%)",
                    failing,
                    reporting,
                    100 * self.pacing.pause_fraction,
                )
            self.paused.set(1)
            self.outcomes.labels("paused").inc()
            self._later(key, trust)
            return
        self.paused.set(0)
        self._held = False
        try:
            self.evict(trust.namespace, trust.name, trust.uid)
        except EvictionBlocked as error:
            log.info("eviction of pod %s/%s refused for now: %s", trust.namespace, trust.name, error)
            self.outcomes.labels("blocked").inc()
            self._later(key, trust)
            return
        except PodGone:
            self.outcomes.labels("gone").inc()
            return
        except Exception as error:
            log.warning("eviction of pod %s/%s failed: %s", trust.namespace, trust.name, error)
            self.outcomes.labels("failed").inc()
            self._later(key, trust)
            return
        log.warning("evicted pod %s/%s from node %s: %s", trust.namespace, trust.name, trust.node, trust.reasons)
        self._remember(trust.uid)
        self.audit.record(self._record(trust))
        self.outcomes.labels("evicted").inc()

    def _remember(self, uid: str) -> None:
        now = self.clock()
        with self._wake:
            self._done = {u: t for u, t in self._done.items() if now - t < 600}
            if uid:
                self._done[uid] = now

    def _record(self, trust: PodTrust) -> AuditRecord:
        return AuditRecord(
            time=format_rfc3339(time.time()),
            uid=str(uuid.uuid4()),
            operation="EVICT",
            namespace=trust.namespace,
            pod=trust.name,
            node=trust.node,
            user=self.user,
            policy=", ".join(trust.failing),
            enforcement=trust.enforcement,
            decision=DECISION_EVICTED,
            reasons=messages(trust.reasons),
            codes=list(dict.fromkeys(r.code.value for r in trust.reasons)),
            pod_uid=trust.uid,
        )
