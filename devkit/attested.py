"""Emulated attested hosts: swtpm TPMs, their trust agents and the attestation authority, on a DevStack.

Only the hardware is emulated: each host is a swtpm with an EK certificate from a local CA, an identity
file pair (product_uuid, boot_id) and an API-only Node with the same systemUUID and bootID. The agents
talk to their swtpm through tpm2-tools over TCP, exactly as they would to /dev/tpmrm0, and the authority
runs under gunicorn over TLS with the ServiceAccount identity and RBAC of the Helm chart. Each
agent presents a kubelet-style client certificate of its node (CN=system:node:NAME, O=system:nodes)
from the cluster CA, which the authority trusts as its client CA.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.tpm2 import Tpm2Tools
from attestation.ekcert import fingerprint
from devkit import chart
from devkit.devstack import ISSUER, NAMESPACE, ROOT, DevStack
from devkit.subprocesses import stop
from devkit.swtpm import LocalCa, SoftwareTpm, free_port_pair
from devkit.waiting import wait_ready
from trustgate.core.report import decode_unverified

REPORT_TTL = 30  # seconds: renewed every 10 s while the host attests
AGENT_INTERVAL = 2  # seconds between an agent's attestations (tampering shows within this)
SELECTOR = {"trustgate.dev/trusted": "true", "trustgate.dev/e2e": "attested"}
IDENTITY = "system:serviceaccount:trustgate-system:trustgate-attestation"
REGISTER_BURST, REGISTER_RATE = 30, 2  # per source: every agent here registers from 127.0.0.1


@dataclass
class EmulatedHost:
    name: str
    tpm: SoftwareTpm
    directory: Path
    system_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    agent: subprocess.Popen[bytes] | None = None

    @property
    def tools(self) -> Tpm2Tools:
        return Tpm2Tools(self.tpm.tcti, self.directory / "tools")

    def write_identity(self) -> None:
        (self.directory / "product_uuid").write_text(self.system_uuid.upper() + "\n")
        (self.directory / "boot_id").write_text(self.boot_id + "\n")


class Attested:
    """The authority, the emulated hosts and their agents, on the shared stack."""

    def __init__(self, stack: DevStack, workdir: Path) -> None:
        self.stack, self.workdir = stack, workdir
        self.port = free_port_pair()
        self.ca = LocalCa(workdir / "ek-ca")
        self.hosts: dict[str, EmulatedHost] = {}
        self.authority: subprocess.Popen[bytes] | None = None
        self.node_certs: dict[str, Any] = {}

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def python(self, *argv: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
        return subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)

    # --- set-up --------------------------------------------------------------------------------

    def install(self) -> None:
        values = {"issuer": {"name": ISSUER}, "attestation": {"enabled": True}}
        rbac = chart.of_kind(chart.render(values, namespace=NAMESPACE), "ClusterRole", "ClusterRoleBinding")
        self.stack.kubectl("apply", "-f", "-", input=chart.as_list([*chart.crds(), *rbac]))
        for crd in ("trustflavors", "attestedagents"):
            self.stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.trustgate.dev")
        self.kubeconfig = self.stack.cp.issue_kubeconfig("trustgate-attestation", IDENTITY)
        self.tls = self.stack.cp.issue_cert(
            "trustgate-attestation", ["127.0.0.1", "localhost"], client=False, server=True
        )

    def add_host(self, name: str) -> EmulatedHost:
        directory = self.workdir / name
        directory.mkdir(parents=True)
        host = EmulatedHost(name, SoftwareTpm(directory / "tpm", self.ca).start(), directory)
        host.write_identity()
        self.stack.cp.create_node(
            name, system_uuid=host.system_uuid, boot_id=host.boot_id, labels={"trustgate.dev/e2e": "attested"}
        )
        self.hosts[name] = host
        return host

    def capture_flavors(self, host: EmulatedHost) -> None:
        """`trustgate-agent flavor` on a known-good host, applied as TrustFlavor objects."""
        result = self.cli("-m", "agent.main", "--tcti", host.tpm.tcti, "--state-dir", str(host.directory / "tools"),
                          "flavor", "--name", "swtpm-golden")  # fmt: skip
        assert result.returncode == 0, result.stderr
        self.stack.kubectl("apply", "-f", "-", input=result.stdout)

    def node_certificate(self, node: str) -> Any:
        """A kubelet-style client certificate for `node` from the cluster CA (cert_file, key_file)."""
        if node not in self.node_certs:
            self.node_certs[node] = self.stack.cp.issue_cert(
                f"system:node:{node}", [], client=True, server=False, organization="system:nodes", name=f"node-{node}"
            )
        return self.node_certs[node]

    def enroll(self, host: EmulatedHost) -> None:
        fp = fingerprint(host.tools.ek_certificate())
        result = self.cli("-m", "attestation.main", "--kubeconfig", str(self.stack.kubeconfig), "enroll", host.name, fp)
        assert result.returncode == 0, result.stderr

    def start_authority(self) -> None:
        ca_bundle = self.ca.write_bundle(self.workdir / "ek-ca.pem")
        self.authority = self.python(
            "-m", "attestation.main", "--kubeconfig", str(self.kubeconfig), "serve",
            f"--issuer={ISSUER}", f"--signing-key={self.stack.issuer_key}", f"--ek-ca={ca_bundle}",
            f"--tls-cert={self.tls.cert_file}", f"--tls-key={self.tls.key_file}",
            f"--bind=127.0.0.1:{self.port}", f"--report-ttl={REPORT_TTL}",
            f"--client-ca={self.stack.ca_file}", "--reader-group=system:masters",
            f"--register-burst={REGISTER_BURST}", f"--register-rate={REGISTER_RATE}",
            log=self.stack.logs / "trustgate-attestation.log",
        )  # fmt: skip
        wait_ready(self.authority, self.url(), self.stack.ca_file, "the attestation authority", timeout=30)

    def start_agent(self, host: EmulatedHost, node: str | None = None) -> None:
        """The host's agent, for its own node or (an impostor) for `node`, with that node's certificate."""
        cert = self.node_certificate(node or host.name)
        host.agent = self.python(
            "-m", "agent.main", "--tcti", host.tpm.tcti, "--state-dir", str(host.directory / "agent"), "run",
            f"--authority={self.url()}", f"--ca={self.stack.ca_file}", f"--node={node or host.name}",
            f"--client-cert={cert.cert_file}", f"--client-key={cert.key_file}",
            f"--product-uuid={host.directory / 'product_uuid'}", f"--boot-id={host.directory / 'boot_id'}",
            f"--interval={AGENT_INTERVAL}", "--max-backoff=2",
            log=self.stack.logs / f"agent-{host.name}.log",
        )  # fmt: skip

    def stop_agent(self, host: EmulatedHost) -> None:
        stop(host.agent, grace=15)
        host.agent = None

    def close(self) -> None:
        for host in self.hosts.values():
            self.stop_agent(host)
            host.tpm.stop()
        stop(self.authority, grace=15)

    # --- observations ----------------------------------------------------------------------------

    def report_claims(self, name: str) -> dict[str, Any] | None:
        try:
            report = self.stack.cp.client().get(f"/apis/trustgate.dev/v1alpha1/nodetrustreports/{name}")
        except Exception:
            return None
        return decode_unverified(report["spec"]["token"])[1]

    def verdicts(self, names: list[str]) -> tuple[list[str], dict[str, str]]:
        """The extender's answer for a trust-requiring pod, asked as kube-scheduler asks it."""
        probe = {
            "metadata": {"name": "probe", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}], "nodeSelector": SELECTOR},
        }
        return self.stack.filter(probe, names)
