"""The label controller: mirrors each node's verified trust into the labels trustgate owns.

Runs on the cluster cache. A node is reconciled when its Node or report changes and again
at the moment its report stops being valid (a timer, not the next event). Only the leader
of a `coordination.k8s.io` Lease writes, and it patches only `trustgate.dev/trusted` and
`asset.trustgate.dev/*`, never anyone else's labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from controller.loop import WorkLoop
from trustgate.cluster.cache import ClusterCache
from trustgate.core.labels import desired_labels, is_trust_label
from trustgate.core.node import NodeTrust
from trustgate.core.policy import ALL_LEVELS

log = logging.getLogger(__name__)


def label_patch(trust: NodeTrust, now: float, skew: float) -> dict[str, str | None]:
    """The label changes that bring `trust.labels` to the desired owned labels (None deletes)."""
    trusted = trust.failure_at(now, skew) is None and trust.trusted_levels >= ALL_LEVELS
    desired = desired_labels(trusted, trust.report.asset_tags if trust.report and trusted else {})
    current = {k: v for k, v in trust.labels.items() if is_trust_label(k)}
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    return patch


def next_change(trust: NodeTrust, now: float, skew: float) -> float | None:
    """When the node's trust will change by the clock alone (expiry, or becoming valid)."""
    report = trust.report
    if report is None or trust.failure is not None:
        return None
    moments = [report.expires_at + skew, report.issued_at - skew]
    if report.not_before is not None:
        moments.append(report.not_before - skew)
    future = [m for m in moments if m > now]
    return min(future) if future else None


class LabelController(WorkLoop[str]):
    def __init__(
        self,
        cache: ClusterCache,
        patch_node: Callable[[str, dict[str, Any]], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.cache, self.patch_node, self.clock = cache, patch_node, clock
        self._dirty: set[str] = set()
        self.patches = 0
        cache.add_listener(self.mark_dirty)

    def mark_dirty(self, names: set[str]) -> None:
        with self._wake:
            self._dirty |= names
            self._wake.notify()

    def start_leading(self) -> None:
        log.info("leading: reconciling all node labels")
        self.leading.set()
        self.mark_dirty(set(self.cache.snapshot().nodes))

    def stop_leading(self) -> None:
        log.info("lost leadership: no longer writing labels")
        self.leading.clear()

    def run(self) -> None:
        if not self.wait_synced(self.cache):
            return
        self.mark_dirty(set(self.cache.snapshot().nodes))
        while not self._stopping.is_set():
            names = self._next_batch()
            if self.leading.is_set():
                for name in names:
                    self._reconcile(name)

    def _next_batch(self) -> set[str]:
        with self._wake:
            while not self._stopping.is_set():
                now = self.clock()
                self._dirty.update(name for _, name in self._due(now))
                if self._dirty:
                    names, self._dirty = self._dirty, set()
                    return names
                self._wait(now)
            return set()

    def _reconcile(self, name: str) -> None:
        snapshot = self.cache.snapshot()
        trust = snapshot.nodes.get(name)
        if trust is None:
            return
        now = self.clock()
        patch = label_patch(trust, now, snapshot.skew)
        if patch:
            try:
                self.patch_node(name, {"metadata": {"labels": patch}})
                self.patches += 1
                log.info("node %s labels %s", name, patch)
            except Exception as error:  # retried: the node stays dirty until a patch lands
                log.warning("patching labels of node %s failed: %s", name, error)
                self._schedule(name, now + 1.0)
                return
        due = next_change(trust, now, snapshot.skew)
        if due is not None:
            self._schedule(name, due)
