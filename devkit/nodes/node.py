"""A real Kubernetes worker node on this machine: containerd, kubelet and kube-proxy.

Each node runs in its own network, mount and UTS namespaces (see :mod:`network` and
:mod:`namespaces`), with its own cgroup root, containerd (root, state, socket), CNI
configuration and kubelet root directory, so several nodes run side by side on one host, each
reporting its own ``systemUUID`` and ``bootID``.

    net = HostNetwork().up()
    cp = ControlPlane(workdir, bind_address=net.gateway, node_lifecycle_controller=True)
    cp.extra_args["kube-apiserver"] = apiserver_args(cp)
    cp.start()
    node = WorkerNode("node-a", 1, Identity(uuid, boot_id), cp, net, find_kit(), workdir / "node-a")
    node.start()          # returns when the Node is Ready
    ...
    node.stop()           # processes, mounts, namespaces, cgroups and routes are gone
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devkit.nodes import cgroups
from devkit.nodes.cluster_access import ClusterAccess
from devkit.nodes.configs import (
    Decryption,
    KubeletSettings,
    NodePaths,
    cni_conflist,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
)
from devkit.nodes.kit import NodeKit
from devkit.nodes.namespaces import Identity, NodeNamespaces
from devkit.nodes.network import HostNetwork, NodeAddress
from devkit.nodes.procs import NodeError, Process, kill_pids, pid_alive, run, wait_for

#: Where the kubelet's client certificate is, in the node's mount namespace (namespaces.PRIVATE_DIRS).
KUBELET_PKI = Path("/var/lib/kubelet/pki")


def node_condition(node: Mapping[str, Any], kind: str = "Ready") -> str | None:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


@dataclass
class WorkerNode:
    """One worker node; ``index`` (1..200) picks its address and pod CIDR on ``network``."""

    name: str
    index: int
    identity: Identity
    cluster: ClusterAccess
    network: HostNetwork
    kit: NodeKit
    workdir: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    decryption: Decryption | None = None  # encrypted layers (containerd's stream processors)
    registry_config_dir: Path | None = None  # hosts.toml tree of the registries the node pulls from
    ready_timeout: float = 120.0
    cluster_dns: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    _procs: dict[str, Process] = field(default_factory=dict, repr=False)
    _ns: NodeNamespaces | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.paths = NodePaths(self.workdir)
        self.address: NodeAddress = self.network.address(self.name, self.index)
        self.cgroup_root = f"trustgate-{self.name}"

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> WorkerNode:
        """Bring the node up; returns once its Node is Ready and its kube-proxy synced (raises NodeError)."""
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.timings["start_total"] = time.monotonic() - t0  # namespaces to kube-proxy synced
        return self

    def stop(self) -> None:
        """Stop everything and remove what the node made on the host; safe to call twice.

        On a node that was never started it removes what a run killed outright left under
        the same name (processes, namespaces, cgroups, routes).
        """
        errors: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as e:
                errors.append(f"{what}: {e}")

        for name in ("kube-proxy", "kubelet"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                attempt(f"stopping {name}", proc.stop)
        # The pods' processes: all below the node's cgroup root, whatever containerd thinks.
        attempt("killing the pods", cgroups.kill_all, self.cgroup_root)
        proc = self._procs.pop("containerd", None)
        if proc is not None:
            attempt("stopping containerd", proc.stop)
        if self._ns is not None:
            attempt("killing the shims", self._kill_namespace_members)
            attempt("releasing the namespaces", self._ns.stop)
            self._ns = None
        attempt("removing the cgroups", cgroups.remove_root, self.cgroup_root)
        attempt("removing the network namespace", self.network.remove_node, self.address)
        if errors:
            raise NodeError(f"{self.name}: teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> WorkerNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- helpers for tests --------------------------------------------------------------

    @property
    def ip(self) -> str:
        return self.address.ip

    @property
    def pod_cidr(self) -> str:
        return self.address.pod_cidr

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` as a command run on this node (e.g. a trust agent reading its identity)."""
        if self._ns is None:
            raise NodeError(f"{self.name} is not running")
        return self._ns.enter(argv)

    def ctr(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        """Run ``ctr`` against this node's containerd in the ``k8s.io`` namespace."""
        return run(
            self.enter([str(self.kit.ctr), "--address", str(self.paths.containerd_socket), "-n", "k8s.io", *args]),
            f"{self.name}: ctr {' '.join(args[:2])}",
            timeout=timeout,
            check=check,
        )

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", "--local", str(archive))

    def logs(self) -> dict[str, Path]:
        return {name: p.log for name, p in self._procs.items()}

    @property
    def static_pod_dir(self) -> Path:
        """The kubelet's manifest folder (``staticPodPath``): pods that no API server admits."""
        return self.paths.root / "manifests"

    def node_object(self) -> dict[str, Any] | None:
        try:
            return self.cluster.client().get(f"/api/v1/nodes/{self.name}")  # type: ignore[no-any-return]
        except Exception:
            return None

    def check_running(self) -> None:
        for proc in self._procs.values():
            proc.check_running()

    def reboot(self, boot_id: str) -> None:
        """What the cluster sees of a reboot: the node comes back with a new ``bootID``.

        The kubelet is restarted with ``boot_id`` in the node's ``/proc/sys/kernel/random/boot_id``
        (the file mounted there is rewritten in place); containers keep running. Returns once
        the Node reports the new bootID and is Ready. A trust report bound to the old bootID
        no longer matches the node.
        """
        if self._ns is None:
            raise NodeError(f"{self.name} is not running")
        kubelet = self._procs.pop("kubelet")
        kubelet.stop()
        self._ns.set_boot_id(boot_id)
        self.identity = dataclasses.replace(self.identity, boot_id=boot_id)
        self._start_kubelet()

        self.timings["reboot_to_ready"] = wait_for(
            self._ready, f"{self.name} to report bootID {boot_id}", self.ready_timeout, watch=list(self._procs.values())
        )

    # ---- internals ----------------------------------------------------------------------

    def _start(self) -> None:
        missing = self.kit.missing()
        if missing:
            raise NodeError(f"node kit incomplete, missing: {', '.join(missing)} (run devkit/nodes/build.sh)")
        if os.geteuid() != 0:
            raise NodeError("real nodes need root (network namespaces, mounts, cgroups)")
        self.paths.make()
        self.network.add_node(self.address)
        cgroups.remove_root(self.cgroup_root)  # pods of a run that was killed outright
        cgroups.create_root(self.cgroup_root)
        self._ns = NodeNamespaces(self.name, self.address.netns, self.workdir, self.identity).start()
        self._write_configs()
        self._start_containerd()
        t = time.monotonic()
        self.import_image(self.kit.pause_image.archive)
        self.timings["pause_import"] = time.monotonic() - t
        self._start_kubelet()
        self.timings["kubelet_to_ready"] = wait_for(
            self._ready,
            f"node {self.name} to be Ready",
            self.ready_timeout,
            watch=list(self._procs.values()),
            interval=0.5,
        )
        self._start_kube_proxy()

    def _write_configs(self) -> None:
        cp = self.cluster
        p = self.paths
        p.containerd_config.write_text(
            containerd_config(
                p,
                self.kit.runc,
                self.kit.cni_bin_dir,
                self.kit.pause_image.ref,
                decryption=self.decryption,
                registry_config_dir=self.registry_config_dir,
            )
        )
        (p.cni_conf_dir / "10-trustgate.conflist").write_text(cni_conflist(p, self.pod_cidr))
        # Pods get no cluster DNS here; an empty resolv.conf keeps the host's resolvers out of them.
        p.resolv_conf.write_text("# no resolvers for pods on this test node\n")
        serving = cp.issue_cert(
            f"system:node:{self.name}",
            [self.ip, self.name],
            client=False,
            server=True,
            organization="system:nodes",
            name=f"{self.name}-kubelet-serving",
        )
        self.kubeconfig = self._kubelet_kubeconfig()
        p.kubelet_config.write_text(
            kubelet_config(
                p,
                KubeletSettings(
                    node_ip=self.ip,
                    pod_cidr=self.pod_cidr,
                    cgroup_root=f"/{self.cgroup_root}",
                    ca_file=cp.ca.cert_file,
                    tls_cert_file=serving.cert_file,
                    tls_key_file=serving.key_file,
                    cluster_dns=self.cluster_dns,
                ),
            )
        )
        self.proxy_kubeconfig = cp.issue_kubeconfig(f"{self.name}-kube-proxy", "system:kube-proxy")
        p.kube_proxy_config.write_text(
            kube_proxy_config(self.proxy_kubeconfig, self.name, self.ip, self.network.cluster_cidr, [f"{self.ip}/32"])
        )

    def _kubelet_kubeconfig(self) -> Path:
        """The kubelet's client certificate where kubeadm's kubelet keeps it, and a kubeconfig naming it.

        ``/var/lib/kubelet/pki/kubelet-client-current.pem`` (certificate and key in one file, a symlink
        to the dated pair, as the kubelet's certificate manager writes it) in the node's namespace: a
        trust agent on the node presents that identity, CN=system:node:<name>, O=system:nodes.
        """
        issued = self.cluster.issue_cert(
            f"system:node:{self.name}",
            [],
            client=True,
            server=False,
            organization="system:nodes",
            name=f"{self.name}-kubelet-client",
        )
        pki = self.workdir / "private" / "var-lib-kubelet" / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        dated = pki / f"kubelet-client-{time.strftime('%Y-%m-%d-%H-%M-%S')}.pem"
        dated.write_bytes(Path(issued.cert_file).read_bytes() + Path(issued.key_file).read_bytes())
        dated.chmod(0o600)
        current = pki / "kubelet-client-current.pem"
        current.unlink(missing_ok=True)
        current.symlink_to(KUBELET_PKI / dated.name)
        seen = KUBELET_PKI / current.name  # the path in the node's mount namespace
        cluster = {"server": self.cluster.server, "certificate-authority": str(self.cluster.ca.cert_file)}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": "kubelet", "user": {"client-certificate": str(seen), "client-key": str(seen)}}],
            "contexts": [{"name": "kubelet", "context": {"cluster": "cluster", "user": "kubelet"}}],
            "current-context": "kubelet",
        }
        path = self.workdir / "kubelet.kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # containerd finds its shim on PATH; the kubelet calls mount, umount and nsenter.
        env["PATH"] = f"{self.kit.containerd_shim.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return env

    def _launch(self, name: str, argv: list[str]) -> Process:
        assert self._ns is not None
        proc = Process.start(f"{self.name} {name}", self._ns.enter(argv), self.paths.logs / f"{name}.log", self._env())
        self._procs[name] = proc
        return proc

    def _start_containerd(self) -> None:
        proc = self._launch("containerd", [str(self.kit.containerd), "--config", str(self.paths.containerd_config)])
        sock = self.paths.containerd_socket

        def serving() -> bool:
            if not sock.exists():
                return False
            done = run(self.enter([str(self.kit.ctr), "--address", str(sock), "version"]), "ctr version", check=False)
            return "Server:" in done

        self.timings["containerd_ready"] = wait_for(serving, f"{self.name}'s containerd to serve", 60, watch=[proc])

    def _start_kubelet(self) -> None:
        argv = [
            str(self.kit.kubelet),
            f"--config={self.paths.kubelet_config}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.paths.kubelet_root}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.ip}",
            "--v=1",
        ]
        if self.labels:
            argv.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        self._launch("kubelet", argv)

    def _ready(self) -> bool:
        """Ready, as reported by this kubelet (a Node of the same name kept in etcd from an
        earlier run would show another bootID)."""
        node = self.node_object()
        if node is None or node_condition(node) != "True":
            return False
        info: Mapping[str, Any] = node["status"].get("nodeInfo", {})
        return bool(info.get("bootID") == self.identity.boot_id and info.get("systemUUID") == self.identity.system_uuid)

    def _start_kube_proxy(self) -> None:
        proc = self._launch(
            "kube-proxy", [str(self.kit.kube_proxy), f"--config={self.paths.kube_proxy_config}", "--v=1"]
        )

        self.timings["kube_proxy_ready"] = wait_for(
            lambda: proxy_synced(self, self.ip), f"{self.name}'s kube-proxy to sync", 90, watch=[proc]
        )

    def _kill_namespace_members(self) -> None:
        """Processes left in the node's mount namespace (the containerd shims)."""
        assert self._ns is not None
        holder = self._ns.pid
        ns = os.readlink(f"/proc/{holder}/ns/mnt")
        members = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == holder:
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") == ns:
                    members.append(int(entry.name))
            except OSError:
                continue
        if members:
            kill_pids(members, grace=0)
        if any(pid_alive(p) for p in members):
            raise NodeError(f"processes {members} in {self.name}'s namespaces survived SIGKILL")


def proxy_synced(node: WorkerNode | None, ip: str, path: str = "/healthz") -> bool:
    """kube-proxy's health port answers 200 once it has programmed its rules.

    ``/healthz`` also requires this kube-proxy's Node to exist and not be going away;
    ``/livez`` does not (the host's kube-proxy has no Node).
    """
    probe = f"import urllib.request as u; print(u.urlopen('http://{ip}:10256{path}', timeout=2).status)"
    argv = ["python3", "-c", probe]
    out = run(node.enter(argv) if node is not None else argv, f"kube-proxy {path}", check=False)
    return out.strip() == "200"
