"""kube-proxy for the host itself, so processes on the host reach ClusterIP Services.

kube-scheduler runs on the host and calls the extender through its Service; on a real
cluster the control-plane machine runs kube-proxy like every node does, and so does this one.
It runs in the host's network namespace in nftables mode: its rules live in its own tables
(``ip kube-proxy``, ``ip6 kube-proxy``), which are deleted when it stops. NodePorts are only
opened on the node bridge address. Connections from the host to a ClusterIP leave from the
bridge address (the Service CIDR is routed to the bridge) and are DNATed to a pod IP, which
the host routes to the pod's node.

No Node object has this host's name, so kube-proxy waits its 30 s for one before it goes on
with ``bindAddress`` as the node IP: start it early.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from devkit.nodes.cluster_access import ClusterAccess
from devkit.nodes.configs import kube_proxy_config
from devkit.nodes.kit import NodeKit
from devkit.nodes.network import HostNetwork
from devkit.nodes.node import proxy_synced
from devkit.nodes.procs import NodeError, Process, find_pids, kill_pids, run, wait_for

HOST_NAME = "trustgate-control-plane"
CONFIG_NAME = "host-kube-proxy.yaml"


@dataclass
class HostProxy:
    cluster: ClusterAccess
    network: HostNetwork
    kit: NodeKit
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)
    _proc: Process | None = field(default=None, repr=False)
    _started: float = field(default=0.0, repr=False)

    def start(self, wait: bool = False) -> HostProxy:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A host kube-proxy of a run that was killed outright: it would fight over the tables.
        kill_pids(find_pids(self.kit.kube_proxy, "/" + CONFIG_NAME), grace=2.0)
        self._delete_tables()
        kubeconfig = self.cluster.issue_kubeconfig("host-kube-proxy", "system:kube-proxy")
        config = self.workdir / CONFIG_NAME
        gw = self.network.gateway
        config.write_text(kube_proxy_config(kubeconfig, HOST_NAME, gw, self.network.cluster_cidr, [f"{gw}/32"]))
        self._started = time.monotonic()
        self._proc = Process.start(
            "host kube-proxy",
            [str(self.kit.kube_proxy), f"--config={config}", "--v=1"],
            self.workdir / "kube-proxy.log",
            dict(os.environ),
        )
        if wait:
            self.wait_synced()
        return self

    def wait_synced(self, timeout: float = 120.0) -> None:
        if self._proc is None:
            raise NodeError("the host kube-proxy is not running")
        wait_for(
            lambda: proxy_synced(None, self.network.gateway, "/livez"),
            "the host's kube-proxy to sync",
            timeout,
            watch=[self._proc],
            interval=0.5,
        )
        self.timings.setdefault("start_to_synced", time.monotonic() - self._started)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        self._delete_tables()

    @staticmethod
    def _delete_tables() -> None:
        for family in ("ip", "ip6"):
            if f"table {family} kube-proxy" in run(["nft", "list", "tables"], "nft list tables"):
                run(["nft", "delete", "table", family, "kube-proxy"], "deleting kube-proxy's nftables table")
