"""Node trust as Prometheus metrics, read from the cluster cache at each scrape (nothing kept in between).

- `trustgate_nodes{state}`: nodes trusted (a valid report, every level true), untrusted (a report that
  fails: expired, revoked for another, invalid, a level false) and without a report;
- `trustgate_node_report_expiry_timestamp_seconds{node}`: when each valid report expires, for the
  alert on reports about to expire (an authority or agent that stopped renewing them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.podtrust import node_is_trusted
from trustgate.core.reasons import Code
from trustgate.core.snapshot import Snapshot

STATES = ("trusted", "untrusted", "no_report")


class NodeTrustCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], clock: Callable[[], float] = time.time) -> None:
        self.snapshot, self.clock = snapshot, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot, now = self.snapshot(), self.clock()
        states = GaugeMetricFamily("trustgate_nodes", "Nodes by trust state", labels=["state"])
        expiry = GaugeMetricFamily(
            "trustgate_node_report_expiry_timestamp_seconds",
            "When the node's valid trust report expires (Unix time)",
            labels=["node"],
        )
        counts = dict.fromkeys(STATES, 0)
        for trust in snapshot.nodes.values():
            if node_is_trusted(trust, now, snapshot.skew):
                counts["trusted"] += 1
            elif trust.failure is not None and trust.failure.code is Code.NO_REPORT:
                counts["no_report"] += 1
            else:
                counts["untrusted"] += 1
            if trust.report is not None and trust.failure is None:
                expiry.add_metric([trust.name], trust.report.expires_at)
        for state in STATES:
            states.add_metric([state], counts[state])
        yield states
        yield expiry

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def register(registry: CollectorRegistry, snapshot: Callable[[], Snapshot]) -> None:
    registry.register(NodeTrustCollector(snapshot))
