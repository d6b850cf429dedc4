"""The development stack: the real control plane with trustgate wired in, on 127.0.0.1.

`python -m devkit.devstack up|down|status` (what `make dev-up` / `make dev-down` run), and the
`DevStack` class the end-to-end tests and the benchmarks share. It installs what the Helm chart renders
(CRDs, RBAC, the scheduler configuration, the webhook configurations the controller fills) adapted only
where loopback requires it (URLs instead of in-cluster Services), runs each trustgate service with its own
client certificate identity, so the RBAC rules are exercised as deployed, and has kube-apiserver
authenticate to the webhook with a client certificate (mTLS), as the README's install does.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devkit import chart
from devkit.controlplane import ControlPlane, free_ports, recorded_running, stop_recorded
from devkit.pki import CertKey, issue_cert, load_or_create_ca
from devkit.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "trustgate-system"
ISSUER = "https://aias.trustgate.dev.local"
SERVICES = ("extender", "webhook", "controller")
POLICY_REPORT_CRD = "policyreports.wgpolicyk8s.io"
SKEW_SECONDS = 2  # every component of the stack shares this machine's clock
IDENTITY = {service: f"system:serviceaccount:{NAMESPACE}:trustgate-{service}" for service in SERVICES}
CONFIGURATIONS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass
class DevStack:
    """The control plane and trustgate's services. With `real_nodes` (and the node kit), the control plane
    is the one of a `devkit.nodes.NodeStack`: those kubelets run pods, beside API-only nodes.

    A webhook replica is a service named `webhook` or `webhook-<n>` (`scale_webhook`): each has its own
    port, log (its stdout and stderr) and audit file, behind a round-robin balancer on the webhook's port,
    as a Service spreads connections over pods."""

    workdir: Path = ROOT / ".dev"
    bin_dir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)  # per service: reach the API server here instead
    service_args: dict[str, list[str]] = field(default_factory=dict)  # per service: flags added or replaced
    stdout: dict[str, str] = field(default_factory=dict)  # per service: its stdout here, not in its log
    real_nodes: tuple[str, ...] = ()
    kit: Any = None  # a devkit.nodes.kit.NodeKit, with real_nodes
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.cp = ControlPlane(self.workdir, bin_dir=self.bin_dir)
        self.issuer_key = self.workdir / "issuer.key"
        self.jwks = self.workdir / "issuer.jwks.json"
        self.audit_log = self.workdir / "audit.jsonl"
        self.services_file = self.workdir / "services.json"
        self.ports = self.ports or self._running_ports() or dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        # The API server authenticates to the webhook with a client certificate from a CA of its own
        # (the webhook trusts that CA only): its AdmissionConfiguration names the kubeconfig per webhook.
        self.webhook_clients = self.workdir / "webhook-clients"
        self.cp.extra_args.setdefault("kube-apiserver", []).append(
            f"--admission-control-config-file={self.workdir / 'admission-configuration.yaml'}"
        )
        self.node_stack: Any = None
        self.balancer: TcpProxy | None = None
        if self.real_nodes:
            from devkit.nodes.stack import NodeStack, configure_for_nodes

            self.node_stack = NodeStack(self.workdir / "nodes", self.real_nodes, self.kit, bin_dir=self.bin_dir)
            configure_for_nodes(self.cp, self.node_stack.net, mixed_with_api_only_nodes=True)

    # --- URLs and files ------------------------------------------------------------------

    @functools.cached_property
    def manifests(self) -> list[dict[str, Any]]:
        """What the chart renders with its defaults (the issuer named), in trustgate's namespace."""
        return chart.render({"issuer": {"name": ISSUER}}, namespace=NAMESPACE)

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    @property
    def ca_file(self) -> Path:
        return self.cp.pki_dir / "ca.crt"

    def url(self, service: str) -> str:
        return f"https://127.0.0.1:{self.ports[service]}"

    @property
    def webhook_replicas(self) -> list[str]:
        return sorted(s for s in self._procs if s == "webhook" or s.startswith("webhook-"))

    def audit_file(self, service: str) -> Path:
        """The JSON-lines audit file of a webhook replica (or the controller)."""
        return self.audit_log if service == "webhook" else self.workdir / f"audit-{service}.jsonl"

    def log_file(self, service: str) -> Path:
        return self.logs / f"trustgate-{service}.log"

    # --- lifecycle -----------------------------------------------------------------------

    def up(self) -> DevStack:
        self._issuer()
        self._certificates()
        self.cp.scheduler_config = self._scheduler_config()
        if self.node_stack is not None:
            self.node_stack.up(control_plane=self.cp)  # the host network, this control plane, the kubelets
        else:
            self.cp.start()
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        self.kubectl("apply", "-f", "-", input=chart.as_list([*chart.crds(), namespace]))
        self.kubectl("apply", "-f", "-", input=chart.as_list(chart.of_kind(self.manifests, *chart.RBAC_KINDS)))
        for crd in ("nodetrustreports.trustgate.dev", "trustpolicies.trustgate.dev", POLICY_REPORT_CRD):
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
        self.create_configurations()
        for service in SERVICES:
            self.start_service(service)
        self.wait_configured()
        self._write_endpoints()
        return self

    def down(self) -> None:
        for service in list(self._procs):
            self.stop_service(service)
        if self.balancer is not None:
            self.balancer.stop()
        _stop_recorded_services(self.workdir)
        if self.node_stack is not None:
            self.node_stack.down()  # the nodes, the control plane, the host network
        else:
            self.cp.stop()

    def scale_webhook(self, replicas: int) -> list[str]:
        """Run `replicas` webhook replicas behind a round-robin balancer on the webhook's port (1: the
        replica itself on that port, no balancer). Returns the replicas' service names."""
        port = self.ports["webhook"]
        if self.balancer is None:
            self.ports["webhook"] = self.ports.get("webhook-0") or free_ports(1)[0]
        for replica in self.webhook_replicas:
            self.stop_service(replica)
        if self.balancer is not None:
            self.balancer.stop()
            self.balancer = None
            port = self.ports.pop("webhook-0")
        if replicas == 1:
            self.ports["webhook"] = port
            self.start_service("webhook")
            return ["webhook"]
        self.ports["webhook-0"] = port  # the balancer's: the address the API server calls
        names = ["webhook", *(f"webhook-{i}" for i in range(2, replicas + 1))]
        for name in names[1:]:
            self.ports.setdefault(name, free_ports(1)[0])
        for name in names:
            self.start_service(name)
        more = [("127.0.0.1", self.ports[name]) for name in names[1:]]
        self.balancer = TcpProxy(("127.0.0.1", self.ports["webhook"]), port=port, more=more, idle_timeout=None)
        self.balancer.start()
        return names

    def start_service(self, service: str, wait: bool = True) -> None:
        log = open(self.log_file(service), "ab")  # noqa: SIM115 - owned by the child
        out = open(self.stdout[service], "ab") if service in self.stdout else log  # noqa: SIM115 - the child's
        process = subprocess.Popen(
            self.service_argv(service), stdout=out, stderr=log, cwd=self.workdir, start_new_session=True
        )
        self._procs[service] = process
        self._record()
        if wait:
            self.wait_ready(service)

    def stop_service(self, service: str, grace: float = 30.0) -> None:
        """Stop a service and all its gunicorn workers (its process group): SIGTERM, then SIGKILL."""
        process = self._procs.pop(service, None)
        if process is None:
            return
        if grace > 0:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
        _signal_group(process.pid, signal.SIGKILL)  # workers still draining connections go too
        process.wait()
        self._record()

    def crash_service(self, service: str) -> None:
        """SIGKILL a service with all its workers at once, as a node failure would."""
        self.stop_service(service, grace=0)

    def service_argv(self, service: str) -> list[str]:
        program = "webhook" if service.startswith("webhook") else service
        common = [
            f"--issuer={ISSUER}",
            f"--jwks={self.jwks}",
            f"--kubeconfig={self.service_kubeconfig(program)}",
            f"--namespace={NAMESPACE}",
            f"--skew={SKEW_SECONDS}",
        ]
        tls = [
            f"--bind=127.0.0.1:{self.ports[service]}",
            f"--tls-cert={self.workdir / f'{program}.crt'}",
            f"--tls-key={self.workdir / f'{program}.key'}",
        ]
        if service == "extender":  # the chart's settings (README, Performance)
            tls += [f"--client-ca={self.ca_file}", "--workers=1", "--threads=4"]
        elif program == "webhook":
            tls += [f"--client-ca={self.webhook_clients / 'ca.crt'}", f"--audit-log={self.audit_file(service)}"]
            tls += ["--workers=3", "--threads=8", f"--replica={service}"]
        else:
            webhook = f"https://127.0.0.1:{self.ports.get('webhook-0') or self.ports['webhook']}"
            tls += [f"--webhook-ca-bundle={self.ca_file}", f"--webhook-url={webhook}"]
            tls += ["--identity=dev-controller", "--workers=1", "--threads=2"]
            tls += [f"--audit-log={self.audit_file(service)}", f"--replica={service}", "--eviction-retry=2"]
        extra = self.service_args.get(service, [])
        replaced = {arg.split("=", 1)[0] for arg in extra}
        kept = [arg for arg in [*common, *tls] if arg.split("=", 1)[0] not in replaced]
        return [_bin(f"trustgate-{program}"), *kept, *extra]

    def service_kubeconfig(self, service: str) -> Path:
        """The service's kubeconfig: its own identity, and the API server at `servers[service]` if set."""
        path = self.workdir / f"trustgate-{service}.kubeconfig"
        server = self.servers.get(service)
        if server is None:
            return path
        config = yaml.safe_load(path.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = server
        rerouted = self.workdir / f"trustgate-{service}-rerouted.kubeconfig"
        rerouted.write_text(yaml.safe_dump(config))
        return rerouted

    def wait_ready(self, service: str, timeout: float = 60.0) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if service == "extender":
            context.load_cert_chain(self.workdir / "scheduler-client.crt", self.workdir / "scheduler-client.key")
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            process = self._procs.get(service)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"trustgate-{service} exited with {process.returncode}:\n{self.log_tail(service)}")
            try:
                with urllib.request.urlopen(f"{self.url(service)}/readyz", context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.2)
        raise RuntimeError(f"trustgate-{service} not ready after {timeout}s ({last}):\n{self.log_tail(service)}")

    def filter(self, pod: dict[str, Any], names: list[str]) -> tuple[list[str], dict[str, str]]:
        """Ask the extender exactly as kube-scheduler does (nodeCacheCapable: NodeNames, over mTLS):
        the passing node names and the failing ones with their reasons."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.workdir / "scheduler-client.crt", self.workdir / "scheduler-client.key")
        request = urllib.request.Request(
            f"{self.url('extender')}/filter",
            data=json.dumps({"Pod": pod, "NodeNames": names}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            result = json.load(response)
        return list(result.get("NodeNames") or []), dict(result.get("FailedAndUnresolvableNodes") or {})

    def log_tail(self, service: str, lines: int = 30) -> str:
        path = self.logs / f"trustgate-{service}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.cp.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )

    # --- set-up steps ----------------------------------------------------------------------

    def _issuer(self) -> None:
        if not self.issuer_key.exists():
            subprocess.run(
                [_bin("trustctl"), "keygen", "--key-out", str(self.issuer_key), "--jwks-out", str(self.jwks)],
                check=True,
                capture_output=True,
            )
        (self.workdir / "issuer").write_text(ISSUER + "\n")

    def _certificates(self) -> None:
        for service in SERVICES:
            issued = self.cp.issue_cert(f"trustgate-{service}", ["127.0.0.1", "localhost"], client=False, server=True)
            self._copy_cert(service, issued)

        scheduler = self.cp.issue_cert("kube-scheduler-extender-client", [], client=True, server=False)
        self._copy_cert("scheduler-client", scheduler)
        for service, user in IDENTITY.items():
            self.cp.issue_kubeconfig(f"trustgate-{service}", user)  # -> <workdir>/trustgate-<service>.kubeconfig
        self._admission_configuration()

    def _admission_configuration(self) -> None:
        """kube-apiserver's client certificate for the webhook, and where its AdmissionConfiguration says
        to use it: for the webhook's host and port, as the API server names a URL webhook's kubeconfig user."""
        clients = load_or_create_ca(self.webhook_clients, "trustgate-webhook-clients")
        client = issue_cert(clients, "kube-apiserver", [], client=True, server=False, name="kube-apiserver")
        kubeconfig = self.workdir / "admission-kubeconfig.yaml"
        user = f"127.0.0.1:{self.ports['webhook']}"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "users": [
                        {
                            "name": user,
                            "user": {
                                "client-certificate": str(client.cert_file),
                                "client-key": str(client.key_file),
                            },
                        }
                    ],
                }
            )
        )
        plugin = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        configuration = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": "ValidatingAdmissionWebhook", "configuration": plugin},
                {"name": "MutatingAdmissionWebhook", "configuration": plugin},
            ],
        }
        (self.workdir / "admission-configuration.yaml").write_text(yaml.safe_dump(configuration))

    def _copy_cert(self, name: str, issued: CertKey) -> None:
        for source, suffix in ((issued.cert_file, "crt"), (issued.key_file, "key")):
            target = self.workdir / f"{name}.{suffix}"
            target.write_bytes(Path(source).read_bytes())
            target.chmod(0o600)

    def _scheduler_config(self, without_extender: bool = False) -> str:
        """The chart's kube-scheduler configuration (or its emergency one, without the extender), with this
        stack's paths and URLs."""
        (configmap,) = [m for m in self.manifests if m["metadata"]["name"] == "trustgate-scheduler-config"]
        key = "kube-scheduler-config-without-extender.yaml" if without_extender else "kube-scheduler-config.yaml"
        config = yaml.safe_load(configmap["data"][key])
        config["clientConnection"]["kubeconfig"] = str(self.cp.scheduler_kubeconfig)
        config["leaderElection"] = {"leaderElect": False}
        for extender in config.get("extenders") or []:
            extender["urlPrefix"] = self.url("extender")
            extender["tlsConfig"] = {
                "caFile": str(self.ca_file),
                "certFile": str(self.workdir / "scheduler-client.crt"),
                "keyFile": str(self.workdir / "scheduler-client.key"),
            }
        return yaml.safe_dump(config)

    def use_scheduler_config(self, text: str) -> None:
        """Restart kube-scheduler with this configuration, as a kubeadm host does when its manifest changes;
        returns once it is ready."""
        self.cp.stop_component("kube-scheduler")
        self.cp.scheduler_config = text
        self.cp.scheduler_config_file.write_text(text)
        self.cp.start_component("kube-scheduler")

    def create_configurations(self) -> None:
        """The chart's two (empty) webhook configurations, which the controller fills."""
        kinds = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
        self.kubectl("apply", "-f", "-", input=chart.as_list(chart.of_kind(self.manifests, *kinds)))

    def wait_configured(self, timeout: float = 60.0) -> None:
        """Until the controller has filled the webhook configurations from the policies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.cp.client().get(
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/trustgate"
            )
            if any(w["name"] == "bindings.trustgate.dev" for w in found.get("webhooks") or []):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"the controller did not configure the webhooks in {timeout}s:\n{self.log_tail('controller')}"
        )

    def webhooks(self, kind: str = "validating") -> list[dict[str, Any]]:
        """The webhooks of trustgate's `validating` or `mutating` configuration, as the controller wrote them."""
        path = f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/trustgate"
        return list(self.cp.client().get(path).get("webhooks") or [])

    def _write_endpoints(self) -> None:
        endpoints = {"extender": self.url("extender"), "webhook": self.url("webhook"), "ca": str(self.ca_file)}
        (self.workdir / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")

    def _running_ports(self) -> dict[str, int]:
        """The ports of this workdir's running services, so that another process can attach to them."""
        if not recorded_running(self.workdir):
            return {}
        try:
            recorded = json.loads(self.services_file.read_text())
        except (OSError, ValueError):
            return {}
        return {name: entry["port"] for name, entry in recorded.items() if entry.get("port")}

    def _record(self) -> None:
        self.services_file.write_text(
            json.dumps({name: {"pid": p.pid, "port": self.ports.get(name)} for name, p in self._procs.items()})
        )


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)  # services run in their own session: the group id is the master's pid


def _stop_recorded_services(workdir: Path) -> list[str]:
    """Stop services recorded by another process (`make dev-down`)."""
    path = workdir / "services.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    for name, entry in recorded.items():
        _signal_group(int(entry["pid"]), signal.SIGTERM)
        stopped.append(name)
    path.unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--workdir", default=str(ROOT / ".dev"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    if args.command == "down":
        stopped = _stop_recorded_services(workdir) + stop_recorded(workdir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}; logs kept in {workdir / 'logs'}")
        return 0
    running = recorded_running(workdir)
    if args.command == "status":
        print(f"running: {', '.join(running) or 'nothing'}")
        return 0
    if running:
        print(f"already up ({', '.join(running)}); `make dev-down` first to restart")
        return 0
    started = time.monotonic()
    print("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and trustgate ...", flush=True)
    stack = DevStack(workdir).up()
    # the services outlive this process: forget the Popen objects without stopping them
    stack._procs.clear()
    print(f"ready in {time.monotonic() - started:.0f}s")
    print(f"  export KUBECONFIG={stack.kubeconfig}")
    print(f"  extender {stack.url('extender')}  webhook {stack.url('webhook')}  logs {stack.logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
