"""The real upstream Kubernetes control plane (no kubelet) on 127.0.0.1, for the tests, the dev stack and benchmarks.

:class:`ControlPlane` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler
(binaries from :mod:`devkit.controlplane.binaries`) with free ports and a throw-away PKI
(:mod:`devkit.pki`), and :func:`create_node` registers API-only nodes that the real scheduler can
bind pods to.

Typical use::

    cp = ControlPlane(tmp_path / "cp")
    cp.start()
    try:
        create_node(cp.kubeconfig, "node-a", system_uuid="...", boot_id="...")
        ...  # kubectl --kubeconfig cp.kubeconfig ...
    finally:
        cp.stop()
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from cryptography.hazmat.primitives import serialization

from devkit.controlplane.binaries import BINARIES, find_binaries
from devkit.controlplane.errors import ControlPlaneError
from devkit.controlplane.kubeclient import KubeAPIError, KubeClient, https_get, write_kubeconfig
from devkit.controlplane.processes import (
    COMPONENTS,
    free_ports,
    port_is_free,
    proc_start_time,
    recorded_running,
    terminate_pid,
)
from devkit.pki import CertKey, create_ca, has_sans, issue_cert, load_or_create_ca, write_private, write_public
from devkit.subprocesses import tail
from trustgate.certificates import generate_key

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"

#: Taint added on create by the TaintNodesByCondition admission plugin.
NOT_READY_TAINT_KEY = "node.kubernetes.io/not-ready"

#: Lines of a component's log quoted when it fails to start.
LOG_TAIL_LINES = 40


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _as_client(kubeconfig_or_client: KubeClient | Path | str) -> KubeClient:
    if isinstance(kubeconfig_or_client, KubeClient):
        return kubeconfig_or_client
    return KubeClient.from_kubeconfig(kubeconfig_or_client)


def create_node(
    kubeconfig_or_client: KubeClient | Path | str,
    name: str,
    system_uuid: str,
    boot_id: str,
    labels: Mapping[str, str] | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    internal_ip: str = "192.0.2.10",
) -> dict[str, Any]:
    """Register an API-only Node the way a kubelet would, and make it schedulable.

    The Node is created with its status (capacity/allocatable incl. ``pods``, a Ready
    condition, ``nodeInfo.systemUUID``/``bootID``): the apiserver keeps status given on
    create. The TaintNodesByCondition admission plugin then adds
    ``node.kubernetes.io/not-ready:NoSchedule``, which only the node lifecycle controller
    removes; that controller is disabled here (it would mark kubelet-less nodes
    unreachable), so this function does its job and removes the taint. Returns the Node.
    """
    client = _as_client(kubeconfig_or_client)
    now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **(labels or {}),
    }
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "annotations": dict(annotations or {})},
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "API-only node registered by trustgate e2e tests",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "machineID": system_uuid.replace("-", ""),
                "systemUUID": system_uuid,
                "bootID": boot_id,
                "kernelVersion": "6.1.0-e2e",
                "osImage": "trustgate e2e",
                "containerRuntimeVersion": "none://0",
                "kubeletVersion": "none",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }
    current = client.create("/api/v1/nodes", node)
    # Optimistic concurrency: controllers (e.g. the TTL controller) update new nodes too,
    # so a conflict means re-read and retry.
    for _ in range(20):
        taints = current.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != NOT_READY_TAINT_KEY]
        if len(kept) == len(taints):
            break
        patch = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "spec": {"taints": kept or None},
        }
        try:
            current = client.merge_patch(f"/api/v1/nodes/{name}", patch)
        except KubeAPIError as e:
            if e.status != 409:
                raise
            current = client.get(f"/api/v1/nodes/{name}")
    else:
        raise ControlPlaneError(f"could not remove the {NOT_READY_TAINT_KEY} taint from node {name}")
    return cast(dict[str, Any], current)


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


DEFAULT_SCHEDULER_CONFIG = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
leaderElection:
  leaderElect: false
"""

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1.

    ``workdir`` holds everything: ``pki/``, ``etcd-data/``, ``logs/<component>.log``,
    ``kubeconfig`` (admin, ``system:masters``), per-component kubeconfigs, ``pids.json``
    and ``ports.json``. The PKI and etcd data are reused if the workdir already has them.

    ``scheduler_config`` is the KubeSchedulerConfiguration YAML text (it may reference
    files, e.g. extender TLS material issued with :meth:`issue_cert`). If it leaves out
    ``clientConnection.kubeconfig`` it is set to :attr:`scheduler_kubeconfig`; if it leaves
    out ``leaderElection.leaderElect`` that is set to false. ``extra_args`` adds flags per
    component name (e.g. ``{"kube-apiserver": ["--feature-gates=..."]}``).

    For real kubelets in network namespaces (devkit/nodes): ``bind_address`` is where
    kube-apiserver listens and what it advertises (an address the nodes reach, e.g. a host
    bridge; clients then use it too), ``extra_sans`` are added to its serving certificate, and
    ``node_lifecycle_controller`` turns on the controller that API-only nodes need off (it marks
    nodes that post no status NotReady; see its ``--node-monitor-grace-period``).
    """

    workdir: Path
    scheduler_config: str | None = None
    bin_dir: Path | None = None
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    startup_timeout: float = 90.0
    stop_grace: float = 5.0
    bind_address: str = "127.0.0.1"
    extra_sans: list[str] = field(default_factory=list)
    node_lifecycle_controller: bool = False

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki_dir = self.workdir / "pki"
        self.logs_dir = self.workdir / "logs"
        self.etcd_data_dir = self.workdir / "etcd-data"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.scheduler_kubeconfig = self.workdir / "kube-scheduler.kubeconfig"
        self.controller_manager_kubeconfig = self.workdir / "kube-controller-manager.kubeconfig"
        self.scheduler_config_file = self.workdir / "kube-scheduler-config.yaml"
        self.audit_log = self.logs_dir / "audit.log"
        self.ca: CertKey = load_or_create_ca(self.pki_dir)
        self.ports: Ports = self._choose_ports()
        self._procs: dict[str, _Proc] = {}

    # ---- public helpers -------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://{self.api_host}:{self.ports.apiserver}"

    @property
    def api_host(self) -> str:
        """The address clients use for kube-apiserver (and the one it advertises)."""
        return "127.0.0.1" if self.bind_address in ("0.0.0.0", "127.0.0.1") else self.bind_address

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"

    def binary(self, name: str) -> Path:
        if self.bin_dir is None:
            self.bin_dir = find_binaries()
        return Path(self.bin_dir) / name

    @property
    def kubectl(self) -> Path:
        return self.binary("kubectl")

    def issue_cert(
        self,
        common_name: str,
        sans: list[str],
        client: bool,
        server: bool,
        organization: str | None = None,
        name: str | None = None,
    ) -> CertKey:
        """Issue a certificate from this control plane's CA into ``pki/``."""
        return issue_cert(
            self.ca,
            common_name,
            sans,
            client=client,
            server=server,
            organization=organization,
            out_dir=self.pki_dir,
            name=name,
        )

    def issue_kubeconfig(self, name: str, common_name: str, organization: str | None = None) -> Path:
        """A client-certificate kubeconfig ``<workdir>/<name>.kubeconfig`` for the given identity.

        E.g. ``issue_kubeconfig("node-a", "system:node:node-a", "system:nodes")`` for a node agent.
        """
        ck = self.issue_cert(
            common_name, [], client=True, server=False, organization=organization, name=f"{name}-client"
        )
        return write_kubeconfig(
            self.workdir / f"{name}.kubeconfig", self.server, self.ca.cert_file, ck.cert_file, ck.key_file, name
        )

    def client(self, kind: type[KubeClient] = KubeClient) -> KubeClient:
        """An admin (system:masters) REST client (`kind`: e.g. `KeepAliveClient`, for load)."""
        return kind(self.server, self.ca.cert_file, self.pki_dir / "admin.crt", self.pki_dir / "admin.key")

    def kubectl_run(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster as admin."""
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def create_node(
        self, name: str, system_uuid: str, boot_id: str, labels: Mapping[str, str] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return create_node(self.client(), name, system_uuid, boot_id, labels, **kw)

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start all components and wait until each is ready (raises ControlPlaneError)."""
        for b in BINARIES:
            if not os.access(self.binary(b), os.X_OK):
                raise ControlPlaneError(f"missing binary {self.binary(b)}")
        running = recorded_running(self.workdir)
        if running and not self._procs:
            raise ControlPlaneError(
                f"{self.workdir} already has running components {running} (started by another process); "
                f"stop them first with stop_recorded({str(self.workdir)!r})"
            )
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_files()
        try:
            for name in COMPONENTS:
                self.start_component(name)
            self._wait_default_service_account()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL after ``stop_grace`` seconds)."""
        for name in reversed(COMPONENTS):
            self.stop_component(name)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def is_running(self, name: str) -> bool:
        p = self._procs.get(name)
        return p is not None and p.popen.poll() is None

    def pid(self, name: str) -> int | None:
        p = self._procs.get(name)
        return p.popen.pid if p is not None and p.popen.poll() is None else None

    def stop_component(self, name: str, grace: float | None = None) -> None:
        """SIGTERM the component, SIGKILL after ``grace`` (default ``stop_grace``) seconds;
        ``grace=0`` kills it outright (a crash).

        Note: kube-apiserver does not exit on SIGTERM while clients hold watches open (it
        waits up to --request-timeout, 60 s, for its connections to drain), so with the
        scheduler and kcm running it is SIGKILLed after the grace period. ``stop()`` stops
        them first, so there it exits cleanly in about a second.
        """
        self._check_name(name)
        p = self._procs.pop(name, None)
        if p is not None:
            terminate_pid(p.popen.pid, self.stop_grace if grace is None else grace, p.popen)
        self._write_pids()

    def start_component(self, name: str, wait: bool = True) -> None:
        """(Re)start one component on its previous port and data, then wait until it is ready."""
        self._check_name(name)
        if self.is_running(name):
            raise ControlPlaneError(f"{name} is already running (pid {self.pid(name)})")
        if not self.scheduler_config_file.exists():
            self._prepare_files()
        argv = self._argv(name)
        log = self.logs_dir / f"{name}.log"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            f.write(f"\n=== {_now().isoformat()} starting: {' '.join(argv)}\n".encode())
            f.flush()
            popen = subprocess.Popen(
                argv,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,  # survives the caller (make dev-up)
            )
        self._procs[name] = _Proc(name, popen, log)
        self._write_pids()
        if wait:
            self.wait_ready(name)

    def restart_apiserver(self, grace: float | None = None) -> None:
        """Stop and start kube-apiserver on the same port with the same etcd data
        (see :meth:`stop_component` for ``grace``)."""
        self.stop_component("kube-apiserver", grace)
        self.start_component("kube-apiserver")

    def reconfigure_scheduler(self, scheduler_config: str) -> None:
        """Restart kube-scheduler with another KubeSchedulerConfiguration (as kubeadm's static pod is edited)."""
        self.scheduler_config = scheduler_config
        self.scheduler_config_file.write_text(self._scheduler_config_text())
        self.stop_component("kube-scheduler")
        self.start_component("kube-scheduler")

    def wait_ready(self, name: str, timeout: float | None = None) -> None:
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            p = self._procs.get(name)
            if p is None:
                raise ControlPlaneError(f"{name} is not running")
            rc = p.popen.poll()
            if rc is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {rc} while starting\n"
                    f"--- tail of {p.log} ---\n{tail(p.log, LOG_TAIL_LINES)}"
                )
            try:
                ok, last = self._probe(name)
            except (OSError, ssl.SSLError) as e:  # refused, reset, TLS not yet up...
                ok, last = False, f"{type(e).__name__}: {e}"
            if ok:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} not ready after {timeout:.0f}s (last probe: {last})\n"
                    f"--- tail of {p.log} ---\n{tail(p.log, LOG_TAIL_LINES)}"
                )
            time.sleep(0.2)

    # ---- internals ------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; expected one of {COMPONENTS}")

    def _choose_ports(self) -> Ports:
        """Reuse the ports of a previous run of this workdir when free (etcd's member peer
        URL is stored in its data), or those of its running components (another process
        attaching to them); otherwise pick free ones."""
        ports_file = self.workdir / "ports.json"
        try:
            old = Ports(**json.loads(ports_file.read_text()))
            if recorded_running(self.workdir) or all(port_is_free(p) for p in vars(old).values()):
                return old
        except (OSError, ValueError, TypeError):
            pass
        ports = Ports(*free_ports(5))
        ports_file.write_text(json.dumps(vars(ports), indent=2) + "\n")
        return ports

    def _prepare_files(self) -> None:
        pki = self.pki_dir
        if not (pki / "sa.key").exists():
            sa = generate_key()
            write_private(
                pki / "sa.key",
                sa.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            )
            write_public(
                pki / "sa.pub",
                sa.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
        local = ["127.0.0.1", "localhost"]
        sans = [*local, KUBERNETES_SERVICE_IP, "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        sans.append("kubernetes.default.svc.cluster.local")
        sans += [a for a in (self.api_host, *self.extra_sans) if a not in sans]
        if not (pki / "kube-apiserver.crt").exists() or not has_sans(pki / "kube-apiserver.crt", sans):
            self.issue_cert("kube-apiserver", sans, client=False, server=True)
        if not (pki / "kube-controller-manager-serving.crt").exists():
            self.issue_cert(
                "kube-controller-manager", local, client=False, server=True, name="kube-controller-manager-serving"
            )
        if not (pki / "kube-scheduler-serving.crt").exists():
            self.issue_cert("kube-scheduler", local, client=False, server=True, name="kube-scheduler-serving")
        clients = {
            "admin": ("kubernetes-admin", "system:masters"),
            "kube-controller-manager": ("system:kube-controller-manager", None),
            "kube-scheduler": ("system:kube-scheduler", None),
        }
        for fname, (cn, org) in clients.items():
            if not (pki / f"{fname}.crt").exists():
                self.issue_cert(cn, [], client=True, server=False, organization=org, name=fname)
        # Front-proxy (request-header) CA and the apiserver's proxy client cert, as kubeadm
        # sets up. Without them the extension-apiserver-authentication ConfigMap lacks
        # requestheader-client-ca-file and the scheduler and kcm log errors about it forever;
        # it also lets aggregated API servers work. A separate CA, as the request-header CA
        # must never be the CA that signs ordinary client certs.
        front = pki / "front-proxy"
        if not (front / "front-proxy-client.crt").exists():
            front_ca = create_ca(front, "front-proxy-ca")
            issue_cert(front_ca, "front-proxy-client", client=True, out_dir=front)
        # kubeconfigs carry the apiserver port, which may change between runs: always rewrite
        write_kubeconfig(self.kubeconfig, self.server, self.ca.cert_file, pki / "admin.crt", pki / "admin.key", "admin")
        write_kubeconfig(
            self.controller_manager_kubeconfig,
            self.server,
            self.ca.cert_file,
            pki / "kube-controller-manager.crt",
            pki / "kube-controller-manager.key",
            "kube-controller-manager",
        )
        write_kubeconfig(
            self.scheduler_kubeconfig,
            self.server,
            self.ca.cert_file,
            pki / "kube-scheduler.crt",
            pki / "kube-scheduler.key",
            "kube-scheduler",
        )
        (self.workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self.scheduler_config_file.write_text(self._scheduler_config_text())

    def _scheduler_config_text(self) -> str:
        if self.scheduler_config is None:
            return DEFAULT_SCHEDULER_CONFIG.format(kubeconfig=json.dumps(str(self.scheduler_kubeconfig)))
        cfg = yaml.safe_load(self.scheduler_config)
        if not isinstance(cfg, dict):
            raise ControlPlaneError("scheduler_config must be a KubeSchedulerConfiguration YAML mapping")
        cfg.setdefault("apiVersion", "kubescheduler.config.k8s.io/v1")
        cfg.setdefault("kind", "KubeSchedulerConfiguration")
        cc = cfg.setdefault("clientConnection", {}) or {}
        cfg["clientConnection"] = cc
        cc.setdefault("kubeconfig", str(self.scheduler_kubeconfig))
        le = cfg.setdefault("leaderElection", {}) or {}
        cfg["leaderElection"] = le
        le.setdefault("leaderElect", False)
        return yaml.safe_dump(cfg, sort_keys=False)

    def _argv(self, name: str) -> list[str]:
        pki, ports = self.pki_dir, self.ports
        if name == "etcd":
            peer = f"http://127.0.0.1:{ports.etcd_peer}"
            argv = [
                str(self.binary("etcd")),
                "--name=trustgate-e2e",
                f"--data-dir={self.etcd_data_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=trustgate-e2e={peer}",
                "--unsafe-no-fsync",  # test data only: skip fsync (as envtest does)
                "--log-level=warn",
            ]
        elif name == "kube-apiserver":
            argv = [
                str(self.binary("kube-apiserver")),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.api_host}",
                f"--secure-port={ports.apiserver}",
                f"--tls-cert-file={pki / 'kube-apiserver.crt'}",
                f"--tls-private-key-file={pki / 'kube-apiserver.key'}",
                f"--client-ca-file={self.ca.cert_file}",
                "--authorization-mode=Node,RBAC",
                # Default admission chain, plus NodeRestriction as on real (kubeadm) clusters.
                # Nothing is disabled: ServiceAccount works because kube-controller-manager
                # runs (it creates the "default" ServiceAccounts; tokens come from the
                # TokenRequest API), and TaintNodesByCondition's not-ready taint is removed
                # by create_node(), standing in for the disabled node lifecycle controller.
                "--enable-admission-plugins=NodeRestriction",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # A loopback advertise address is rejected by Endpoints validation, so there
                # the "kubernetes" Service endpoint reconciler would only log errors.
                *(["--endpoint-reconciler-type=none"] if self.api_host.startswith("127.") else []),
                "--allow-privileged=true",
                f"--requestheader-client-ca-file={pki / 'front-proxy' / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy' / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy' / 'front-proxy-client.key'}",
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxbackup=1",
                "--audit-log-maxsize=100",
                "--profiling=false",
            ]
        elif name == "kube-controller-manager":
            kc = self.controller_manager_kubeconfig
            argv = [
                str(self.binary("kube-controller-manager")),
                f"--kubeconfig={kc}",
                *self._secure_serving(name, kc, ports.controller_manager),
                # The node lifecycle controller would mark kubelet-less nodes NotReady /
                # unreachable (and taint them) after its grace period; API-only nodes stay
                # as create_node() registered them.
                "--controllers=*" if self.node_lifecycle_controller else "--controllers=*,-node-lifecycle-controller",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca.cert_file}",
                f"--cluster-signing-cert-file={self.ca.cert_file}",
                f"--cluster-signing-key-file={self.ca.key_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--leader-elect=false",
                "--profiling=false",
            ]
        else:  # kube-scheduler
            kc = self.scheduler_kubeconfig
            argv = [
                str(self.binary("kube-scheduler")),
                f"--config={self.scheduler_config_file}",
                *self._secure_serving(name, kc, ports.scheduler),
                "--profiling=false",
            ]
        return argv + list(self.extra_args.get(name, []))

    def _secure_serving(self, name: str, kubeconfig: Path, port: int) -> list[str]:
        """The HTTPS endpoint of kube-controller-manager or kube-scheduler: on loopback, with its own
        serving certificate, client certificates from the cluster CA, and authentication and
        authorization delegated to the apiserver through its kubeconfig."""
        return [
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={self.pki_dir / f'{name}-serving.crt'}",
            f"--tls-private-key-file={self.pki_dir / f'{name}-serving.key'}",
            f"--client-ca-file={self.ca.cert_file}",
        ]

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_file))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return ctx

    def _probe(self, name: str) -> tuple[bool, str]:
        if name == "etcd":
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=3) as resp:
                body = resp.read().decode()
            return json.loads(body).get("health") == "true", body
        port = {
            "kube-apiserver": self.ports.apiserver,
            "kube-controller-manager": self.ports.controller_manager,
            "kube-scheduler": self.ports.scheduler,
        }[name]
        path = "/readyz" if name == "kube-apiserver" else "/healthz"
        host = self.api_host if name == "kube-apiserver" else "127.0.0.1"
        status, body = https_get(f"https://{host}:{port}{path}", self._ssl_context())
        return status == 200 and body.strip() == "ok", f"HTTP {status}: {body.strip()[-500:]}"

    def _wait_default_service_account(self) -> None:
        """kube-controller-manager is really working once it has created the ``default``
        ServiceAccount (pods are rejected by the ServiceAccount admission plugin before)."""
        client = self.client()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                client.get("/api/v1/namespaces/default/serviceaccounts/default")
                return
            except KubeAPIError as e:
                if e.status != 404:
                    raise
            except OSError:
                pass
            p = self._procs.get("kube-controller-manager")
            if time.monotonic() > deadline or p is None or p.popen.poll() is not None:
                log = self.logs_dir / "kube-controller-manager.log"
                raise ControlPlaneError(
                    "kube-controller-manager did not create ServiceAccount default/default within "
                    f"{self.startup_timeout:.0f}s\n--- tail of {log} ---\n{tail(log, LOG_TAIL_LINES)}"
                )
            time.sleep(0.2)

    def _write_pids(self) -> None:
        recorded = {
            name: {"pid": p.popen.pid, "start_time": proc_start_time(p.popen.pid), "argv0": p.popen.args[0]}  # type: ignore[index]
            for name, p in self._procs.items()
            if p.popen.poll() is None
        }
        pids_file = self.workdir / "pids.json"
        if recorded:
            tmp = pids_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(recorded, indent=2) + "\n")
            os.replace(tmp, pids_file)
        else:
            pids_file.unlink(missing_ok=True)
