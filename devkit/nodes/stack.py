"""A whole cluster of real nodes: host network, control plane, cluster DNS, host kube-proxy, worker nodes.

Brought up in that order and torn down in reverse, every step attempted even when an earlier
one fails, so the end-to-end tests and ``python -m devkit.nodes`` clean up the same way. The
control plane is ``devkit.controlplane``'s ``ControlPlane``. One stack per machine at a time
(``hostlock``): a second one waits until the first is down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.nodes.cluster_access import apiserver_args, controller_manager_args
from devkit.nodes.configs import Decryption
from devkit.nodes.dns import ClusterDns
from devkit.nodes.hostlock import HostLock
from devkit.nodes.hostproxy import HostProxy
from devkit.nodes.kit import NodeKit
from devkit.nodes.namespaces import Identity
from devkit.nodes.network import HostNetwork
from devkit.nodes.node import WorkerNode
from devkit.nodes.procs import NodeError


def configure_for_nodes(cp: Any, net: HostNetwork, mixed_with_api_only_nodes: bool = True) -> None:
    """Make a control plane (not started yet) one that real nodes join: it listens on the host bridge,
    runs the node lifecycle controller, and reaches the kubelets (see ``cluster_access``)."""
    cp.bind_address = net.gateway
    cp.node_lifecycle_controller = True
    cp.extra_args.setdefault("kube-apiserver", []).extend(apiserver_args(cp))
    cp.extra_args.setdefault("kube-controller-manager", []).extend(controller_manager_args(mixed_with_api_only_nodes))


@dataclass
class NodeStack:
    """``node_names`` real nodes on a fresh control plane in ``workdir``.

    Nodes get ``identities`` where given and random ones otherwise. ``mixed_with_api_only_nodes``
    stretches the node lifecycle controller's grace period so API-only nodes created with
    ``cp.create_node`` stay Ready beside the real ones (see ``controller_manager_args``).
    ``extra_args`` adds flags per control-plane component (e.g. kube-apiserver's
    ``--admission-control-config-file``), ``cluster_dns`` serves Service names to the pods
    (``dns.ClusterDns``).
    """

    workdir: Path
    node_names: Sequence[str]
    kit: NodeKit
    bin_dir: Path | None = None
    scheduler_config: str | None = None
    identities: dict[str, Identity] = field(default_factory=dict)
    node_labels: Mapping[str, str] = field(default_factory=dict)
    mixed_with_api_only_nodes: bool = True
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    cluster_dns: bool = True
    lock_timeout: float = 3600.0
    decryption: Decryption | None = None
    registry_config_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.net = HostNetwork()
        self.nodes: dict[str, WorkerNode] = {}
        self.cp: Any = None  # a devkit.controlplane.ControlPlane once up
        self.proxy: HostProxy | None = None
        self.dns: ClusterDns | None = None
        self._started: list[Any] = []
        for name in self.node_names:
            self.identities.setdefault(name, Identity(str(uuid.uuid4()), str(uuid.uuid4())))

    def up(self, after_control_plane: Callable[[Any], object] | None = None, control_plane: Any = None) -> NodeStack:
        """Bring everything up; ``after_control_plane(cp)`` runs before the nodes start (e.g.
        to create API-only nodes). ``control_plane``: a ``ControlPlane`` set up by the caller (with
        ``configure_for_nodes``, not started) instead of a new one. On failure, what was started is
        stopped and the error raised."""
        from devkit.controlplane.controlplane import SERVICE_CLUSTER_IP_RANGE, ControlPlane

        self.net.service_cidr = SERVICE_CLUSTER_IP_RANGE
        t = time.monotonic()
        self._started.append(HostLock(self.kit, str(self.workdir), self.net, self.lock_timeout).acquire())
        self.timings["waited_for_the_host"] = time.monotonic() - t
        try:
            self._started.append(self.net.up())
            cp = control_plane
            if cp is None:
                cp = ControlPlane(self.workdir / "cp", scheduler_config=self.scheduler_config, bin_dir=self.bin_dir)
                configure_for_nodes(cp, self.net, self.mixed_with_api_only_nodes)
            for component, args in self.extra_args.items():
                cp.extra_args.setdefault(component, []).extend(args)
            t = time.monotonic()
            self._started.append(cp.start())
            self.cp = cp
            self.timings["control_plane_start"] = time.monotonic() - t
            if after_control_plane is not None:
                after_control_plane(cp)
            if self.cluster_dns:
                self.dns = ClusterDns(cp, self.net.gateway).start()
                self._started.append(self.dns)
            # Early: it waits 30 s for a Node of its own name, while the nodes come up.
            self.proxy = HostProxy(cp, self.net, self.kit, self.workdir / "host-proxy").start()
            self._started.append(self.proxy)
            self.nodes = {
                name: WorkerNode(
                    name,
                    index,
                    self.identities[name],
                    cp,
                    self.net,
                    self.kit,
                    self.workdir / name,
                    self.node_labels,
                    cluster_dns=(self.net.gateway,) if self.cluster_dns else (),
                    decryption=self.decryption,
                    registry_config_dir=self.registry_config_dir,
                )
                for index, name in enumerate(self.node_names, start=1)
            }
            for node in self.nodes.values():
                node.stop()  # whatever a run killed outright left under these names
            for node in self.nodes.values():
                self._started.append(node.start())
                t = time.monotonic()
                node.import_image(self.kit.test_image.archive)
                node.timings["test_image_import"] = time.monotonic() - t
            self.proxy.wait_synced()
        except BaseException as error:
            try:
                self.down()
            except NodeError as teardown:
                error.add_note(f"and then: {teardown}")
            raise
        return self

    def down(self) -> None:
        """Stop everything that was started, in reverse; raise NodeError naming what failed."""
        errors = []
        while self._started:
            thing = self._started.pop()
            try:
                if isinstance(thing, HostNetwork):
                    thing.down()
                elif isinstance(thing, HostLock):
                    thing.release()
                else:
                    thing.stop()
            except Exception as e:
                errors.append(f"{type(thing).__name__}: {e}")
        if errors:
            raise NodeError("teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> NodeStack:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
