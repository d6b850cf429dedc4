"""The pod trust controller: for every running trust-requiring pod, whether its node still satisfies it.

Fed by watches, never by polling: a change of a Node or its report re-judges the pods on that node,
a change of a pod re-judges its namespace, a change of the policies or namespaces re-judges all,
and a timer fires at the moment a report expires or becomes valid (`next_change`, as the label
controller does). Each namespace's results are published as one `wgpolicyk8s.io/v1alpha2`
PolicyReport (`trustgate.core.policyreport`), written when its content changes and deleted when the
namespace has no trust-requiring pod left. Pods that an Enforce policy with `onTrustLost: Evict`
selects are handed to the evictor (`controller.eviction`). Every replica judges (its metrics are
exact); only the leader writes and evicts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from controller.labels import next_change
from controller.loop import WorkLoop
from trustgate.cluster.cache import ClusterCache
from trustgate.cluster.pods import BoundPods, Key
from trustgate.core.node import NodeTrust
from trustgate.core.policy import ALL_LEVELS
from trustgate.core.policyreport import DEFAULT_MAX_RESULTS, Entry, content, report_body
from trustgate.core.reasons import Code
from trustgate.core.running import PodTrust, Required, Result, judge, required
from trustgate.core.snapshot import Snapshot, UnknownNamespace

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0  # a namespace whose report keeps failing (no CRD, no RBAC) is retried this often at most
# A namespace's PolicyReport is written at most this often, unless one of its pods fails, warns or errs anew:
# a Deployment of many pods would otherwise rewrite its growing report once per pod.
REPORT_INTERVAL_SECONDS = 1.0
UPDATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ReportStore(Protocol):
    """Where PolicyReports are written (the API server)."""

    def existing(self) -> Mapping[str, str]:
        """The content (`policyreport.content`) of trustgate's report in each namespace that has one."""

    def put(self, report: dict[str, Any]) -> None:
        """Create or replace the report; raises on failure."""

    def delete(self, namespace: str) -> None:
        """Delete the namespace's report (nothing when it has none); raises on failure."""


class EvictionQueue(Protocol):
    def request(self, trust: PodTrust) -> None: ...


def node_is_trusted(trust: NodeTrust, now: float, skew: float) -> bool:
    """Trusted as the label controller says it: a valid report, bound to the node, every level true."""
    return trust.failure_at(now, skew) is None and trust.trusted_levels >= ALL_LEVELS


class PodTrustController(WorkLoop[str]):
    def __init__(
        self,
        cache: ClusterCache,
        pods: BoundPods,
        reports: ReportStore,
        registry: CollectorRegistry,
        evictions: EvictionQueue | None = None,
        max_results: int = DEFAULT_MAX_RESULTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.cache, self.pods, self.reports, self.evictions = cache, pods, reports, evictions
        self.max_results, self.clock = max_results, clock
        self._dirty: dict[str, float] = {}  # namespace -> when the first unhandled change was seen
        self._whole: set[str] = set()  # dirty namespaces to judge whole: a node, a policy or a timer changed
        self._changed: dict[str, set[Key]] = {}  # namespace -> its pods that changed (all else judged as before)
        self._dirty_nodes: set[str] = set()
        self._all_dirty_since: float | None = None
        self._snapshot_changed = False
        self._state: dict[str, dict[Key, Entry]] = {}
        self._required: dict[str, dict[Key, Required]] = {}  # namespace -> each pod's, kept
        self._counts: Counter[Result] = Counter()  # the results in _state
        self._worse: set[str] = set()  # namespaces with a result that turned fail, warn or error, not written yet
        self._last_write: dict[str, float] = {}  # namespace -> when its report was last written (clock)
        self._deferred: set[str] = set()  # namespaces whose write waits for REPORT_INTERVAL_SECONDS
        self._written: dict[str, str | None] | None = None  # None: not read from the API server yet
        self._trusted_nodes: set[str] = set()
        self._failures: dict[str, int] = {}  # namespace -> writes failed in a row
        self._seen: tuple[Any, Any] | None = None  # (policies, namespaces) of the last full pass
        self._metrics(registry)
        cache.add_listener(self._nodes_changed)
        cache.add_change_listener(self._cluster_changed)
        pods.add_listener(self._pods_changed)

    # --- metrics ------------------------------------------------------------------------------

    def _metrics(self, registry: CollectorRegistry) -> None:
        self.results = Gauge(
            "trustgate_pod_trust_results",
            "Running trust-requiring pods by the result of their node's trust (pass, fail, warn, error)",
            ["result"],
            registry=registry,
        )
        for result in Result:
            self.results.labels(result.value)
        self.report_writes = PromCounter(
            "trustgate_policy_report_writes_total",
            "PolicyReport writes by the leader, by outcome (written, deleted, failed)",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("written", "deleted", "failed"):
            self.report_writes.labels(outcome)
        self.update_seconds = Histogram(
            "trustgate_policy_report_update_seconds",
            "From a change seen (a watch event, or a report's expiry) to its namespace's PolicyReport written",
            buckets=UPDATE_BUCKETS,
            registry=registry,
        )
        self.trust_losses = PromCounter(
            "trustgate_node_trust_losses_total",
            "Nodes seen going from trusted to not trusted (a report expired, revoked, replaced by a failing one)",
            registry=registry,
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def start_leading(self) -> None:
        log.info("leading: publishing the trust of running pods")
        self._written = None
        self.leading.set()
        self._mark_all()

    def stop_leading(self) -> None:
        self.leading.clear()

    def run(self) -> None:
        if not self.wait_synced(self.cache, self.pods):
            return
        self._mark_all()
        while not self._stopping.is_set():
            work = self._next_work()
            if work is None:
                continue
            namespaces, only, nodes = work
            try:
                self._reconcile(namespaces, nodes, only)
            except Exception:  # never die: the next change or the retry timer tries again
                log.exception("pod trust reconcile failed")
                self._mark(set(namespaces), retry=True)

    # --- what marks work ----------------------------------------------------------------------

    def _nodes_changed(self, names: set[str]) -> None:
        namespaces = self.pods.namespaces_on(names)
        now = time.monotonic()
        with self._wake:
            self._dirty_nodes |= names
            for namespace in namespaces:
                self._dirty.setdefault(namespace, now)
            self._whole |= namespaces
            self._wake.notify()

    def _pods_changed(self, keys: set[Key]) -> None:
        now = time.monotonic()
        with self._wake:
            for key in keys:
                self._dirty.setdefault(key[0], now)
                self._changed.setdefault(key[0], set()).add(key)
            self._wake.notify()

    def _cluster_changed(self) -> None:
        with self._wake:
            self._snapshot_changed = True
            self._wake.notify()

    def _mark(self, namespaces: Iterable[str], retry: bool = False) -> None:
        now = time.monotonic()
        if retry:
            self._schedule("namespace:" + ",".join(namespaces), self.clock() + RETRY_SECONDS)
            return
        with self._wake:
            for namespace in namespaces:
                self._dirty.setdefault(namespace, now)
                self._whole.add(namespace)
            self._wake.notify()

    def _mark_all(self) -> None:
        with self._wake:
            self._all_dirty_since = self._all_dirty_since or time.monotonic()
            self._dirty_nodes |= set(self.cache.snapshot().nodes)
            self._wake.notify()

    def _next_work(self) -> tuple[dict[str, float], dict[str, set[Key]], set[str]] | None:
        """(dirty namespaces, the pods to judge again in those that need not be judged whole, dirty nodes)."""
        with self._wake:
            while not self._stopping.is_set():
                now = self.clock()
                for due, what in self._due(now):
                    late = time.monotonic() - max(0.0, now - due)  # when it was due, on the monotonic clock
                    kind, _, names = what.partition(":")
                    if kind == "node":
                        self._dirty_nodes.add(names)
                        namespaces = self.pods.namespaces_on({names})
                    else:
                        namespaces = set(filter(None, names.split(",")))
                    for namespace in namespaces:
                        self._dirty.setdefault(namespace, late)
                    self._whole |= namespaces
                if self._snapshot_changed:
                    self._snapshot_changed = False
                    if self._policies_changed():
                        self._all_dirty_since = self._all_dirty_since or time.monotonic()
                if self._all_dirty_since is not None:
                    since = self._all_dirty_since
                    self._all_dirty_since = None
                    everywhere = self.pods.namespaces() | set(self._state) | set(self._written or ())
                    for namespace in everywhere:
                        self._dirty.setdefault(namespace, since)
                    self._whole |= everywhere
                if self._dirty or self._dirty_nodes:
                    only = {ns: keys for ns, keys in self._changed.items() if ns not in self._whole}
                    work = (self._dirty, only, self._dirty_nodes)
                    self._dirty, self._whole, self._changed, self._dirty_nodes = {}, set(), {}, set()
                    return work
                self._wait(now)
            return None

    def _policies_changed(self) -> bool:
        snapshot = self.cache.snapshot()
        seen = (snapshot.policies, snapshot.namespaces)
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    # --- reconciling --------------------------------------------------------------------------

    def _reconcile(
        self, namespaces: dict[str, float], nodes: set[str], only: Mapping[str, set[Key]] | None = None
    ) -> None:
        """Judge `namespaces` again (of those in `only`, only the pods named there) and publish them."""
        snapshot = self.cache.snapshot()
        if not snapshot.synced or not self.pods.synced:
            self._mark(set(namespaces), retry=True)  # judging on a partial view could publish false passes
            for name in nodes:
                self._schedule(f"node:{name}", self.clock() + RETRY_SECONDS)
            return
        now = self.clock()
        self._track_nodes(snapshot, nodes, now)
        only = only or {}
        for namespace in namespaces:
            self._judge_namespace(snapshot, namespace, now, only.get(namespace))
        self._count_results()
        if self.leading.is_set():
            self._publish(namespaces)

    def _track_nodes(self, snapshot: Snapshot, nodes: set[str], now: float) -> None:
        for name in nodes:
            trust = snapshot.nodes.get(name)
            trusted = trust is not None and node_is_trusted(trust, now, snapshot.skew)
            if name in self._trusted_nodes and not trusted and trust is not None:
                self.trust_losses.inc()
                log.warning("node %s lost trust: %s", name, trust.failure_at(now, snapshot.skew) or "a level failed")
            if trusted:
                self._trusted_nodes.add(name)
            else:
                self._trusted_nodes.discard(name)
            due = next_change(trust, now, snapshot.skew) if trust is not None else None
            if due is not None:
                self._schedule(f"node:{name}", due)

    def _judge_namespace(self, snapshot: Snapshot, namespace: str, now: float, only: set[Key] | None = None) -> None:
        """Judge the namespace's pods again: every one, or `only` those (the others keep their entries: a
        pod's change alone changes no other pod's trust, and judging them all on every change costs the
        square of the namespace's size)."""
        before = self._state.get(namespace, {})
        kept = self._required.get(namespace, {})
        if only is None:
            previous, entries, requirements = before, {}, {}
            pods = self.pods.in_namespace(namespace)
        else:
            previous = {key: before.pop(key) for key in only if key in before}
            entries, requirements = before, kept  # updated in place
            pods = []
            for key in only:
                pod = self.pods.get(key)
                if pod is None:
                    kept.pop(key, None)
                else:
                    pods.append(pod)
        self._counts.subtract(entry.trust.result for entry in previous.values())
        for pod in pods:
            key = pod.key
            try:
                requirements[key] = requirement = required(snapshot, pod, kept.get(key))
            except UnknownNamespace:
                requirement = None  # judged as such by `judge`
            trust = judge(snapshot, pod, now, requirement)
            if trust is None:
                continue
            earlier = previous.get(key)
            since = earlier.since if earlier is not None and earlier.trust == trust else now
            entries[key] = Entry(trust, since)
            self._counts[trust.result] += 1
            if trust.result is not Result.PASS and (earlier is None or earlier.trust != trust):
                self._worse.add(namespace)
            if trust.evict and self.evictions is not None and self.leading.is_set():
                self.evictions.request(trust)
        if entries:
            self._state[namespace] = entries
        else:
            self._state.pop(namespace, None)
        if requirements:
            self._required[namespace] = requirements
        else:
            self._required.pop(namespace, None)

    def _count_results(self) -> None:
        for result in Result:
            self.results.labels(result.value).set(self._counts.get(result, 0))

    def _publish(self, namespaces: dict[str, float]) -> None:
        if self._written is None:
            try:
                self._written = dict(self.reports.existing())
            except Exception as error:
                log.warning("cannot list the PolicyReports: %s", error)
                self.report_writes.labels("failed").inc()
                self._mark(set(namespaces), retry=True)
                return
            namespaces = {**dict.fromkeys(self._written, time.monotonic()), **namespaces}
        now = self.clock()
        for namespace, since in namespaces.items():
            last = self._last_write.get(namespace)
            if last is not None and now - last < REPORT_INTERVAL_SECONDS and namespace not in self._worse:
                if namespace not in self._deferred:
                    self._deferred.add(namespace)
                    self._schedule(f"namespace:{namespace}", last + REPORT_INTERVAL_SECONDS)
                continue
            self._deferred.discard(namespace)
            self._worse.discard(namespace)
            entries = self._state.get(namespace)
            body = report_body(namespace, entries.values(), self.max_results) if entries else None
            wanted = content(body) if body is not None else None
            if self._written.get(namespace) == wanted:
                continue
            try:
                if body is None:
                    self.reports.delete(namespace)
                    self._written.pop(namespace, None)
                    self.report_writes.labels("deleted").inc()
                else:
                    self.reports.put(body)
                    self._written[namespace] = wanted
                    self._last_write[namespace] = now
                    self.report_writes.labels("written").inc()
                self.update_seconds.observe(max(0.0, time.monotonic() - since))
                self._failures.pop(namespace, None)
            except Exception as error:
                failures = self._failures[namespace] = self._failures.get(namespace, 0) + 1
                delay = min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** (failures - 1))
                log.warning(
                    "cannot write the PolicyReport of namespace %s (again in %.0fs): %s", namespace, delay, error
                )
                self.report_writes.labels("failed").inc()
                self._schedule(f"namespace:{namespace}", self.clock() + delay)

    # --- what the evictor and tests read ------------------------------------------------------

    def current(self, key: tuple[str, str]) -> PodTrust | None:
        """The pod's trust judged now from the current snapshot (None: gone, or needs no trust)."""
        snapshot = self.cache.snapshot()
        pod = self.pods.get(key)
        if pod is None or not snapshot.synced:
            return None
        return judge(snapshot, pod, self.clock())

    def untrusted_share(self) -> tuple[int, int]:
        """(nodes failing trust, nodes with a report): how widely trust is lost right now."""
        snapshot = self.cache.snapshot()
        now = self.clock()
        reporting = [t for t in snapshot.nodes.values() if t.failure is None or t.failure.code is not Code.NO_REPORT]
        failing = [t for t in reporting if not node_is_trusted(t, now, snapshot.skew)]
        return len(failing), len(reporting)
