"""One active controller process: leader election on a `coordination.k8s.io` Lease.

Every replica keeps its caches warm; only the holder of the Lease writes (labels, webhook
configurations). When leadership moves, the new leader reconciles everything at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

LEASE_NAME = "trustgate-controller"


class Controller(Protocol):
    """What runs in trustgate-controller: a loop, and whether this replica leads (and may write)."""

    def run(self) -> None: ...

    def start_leading(self) -> None: ...

    def stop_leading(self) -> None: ...


@dataclass(frozen=True)
class Follower:
    """What a controller does when this process starts or stops leading."""

    start_leading: Callable[[], None]
    stop_leading: Callable[[], None]


def run_leader_election(
    followers: Sequence[Follower], namespace: str, identity: str, api: client.ApiClient, lease: str = LEASE_NAME
) -> None:
    """Campaign for the Lease forever; `LeaderElection.run` returns when leadership is lost."""

    def started() -> None:
        for follower in followers:
            follower.start_leading()

    def stopped() -> None:
        for follower in followers:
            follower.stop_leading()

    while True:
        lock = LeaseLock(lease, namespace, identity)
        lock.api_instance = client.CoordinationV1Api(api)  # the service's client, not the global default
        election = electionconfig.Config(
            lock,
            lease_duration=15,
            renew_deadline=10,
            retry_period=2,
            onstarted_leading=started,
            onstopped_leading=stopped,
        )
        leaderelection.LeaderElection(election).run()
