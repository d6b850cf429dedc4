"""Encrypted images on real nodes: a local registry, the attestation authority with its key broker,
one emulated TPM and trust agent per node (in the node's namespaces), and containerd on every node
decrypting layers through trustgate-layer-decoder and trustgate-keyprovider.

    world = EncryptedImages(workdir, find_kit(), decoder, bin_dir).up()
    world.encrypt(plain_ref, encrypted_ref, policy)          # trustctl image encrypt
    world.pod(...) / world.events(...) / world.records()     # what the tests look at
    world.down()

Only the hardware is emulated: each node's TPM is a swtpm on that node's own loopback (nothing else
reaches it), with an EK certificate from a local CA. Everything else is the real thing: kubelets and
containerd 2.4 (`devkit.nodes`), Debian's docker-registry over TLS, the authority under gunicorn over
TLS with its ServiceAccount identity and the RBAC the Helm chart renders (`attestation.keyBroker`), the
agents and key providers with each node's kubelet-style client certificate.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.devstack import ROOT
from devkit.nodes.configs import Decryption
from devkit.nodes.kit import NodeKit
from devkit.nodes.node import WorkerNode
from devkit.nodes.ociarchive import ImageConfig, build_archive
from devkit.nodes.stack import NodeStack
from devkit.registry import LocalRegistry
from devkit.subprocesses import stop
from devkit.swtpm import LocalCa, SoftwareTpm
from devkit.waiting import eventually, wait_ready
from trustgate.core.keys import generate_private_key, private_key_pem
from trustgate.core.report import decode_unverified
from trustgate.core.signing import report_claims, sign_claims

BRIDGE = "172.30.0.1"  # devkit.nodes.network's host address: what the nodes reach
REGISTRY_PORT = 5000
ISSUER = "https://aias.trustgate.e2e.local"
REPORT_TTL = 30
SKEW = 2
AGENT_INTERVAL = 2
IDENTITY = "system:serviceaccount:trustgate-system:trustgate-attestation"
NAMESPACE = "default"


def _python(*argv: str) -> list[str]:
    return [sys.executable, *argv]


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@dataclass
class Host:
    """A node's emulated TPM, its trust agent and its key provider's configuration."""

    node: WorkerNode
    tpm: SoftwareTpm
    directory: Path
    agent: subprocess.Popen[bytes] | None = None

    @property
    def state_dir(self) -> Path:
        return self.directory / "agent"

    def tools(self, *argv: str) -> str:
        """A tpm2-tools or `trustgate-agent` command on the node, against its TPM."""
        env = dict(os.environ, TPM2TOOLS_TCTI=self.tpm.tcti)
        done = subprocess.run(self.node.enter(list(argv)), capture_output=True, text=True, env=env, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[:3]} on {self.node.name} failed: {done.stderr.strip()}")
        return done.stdout

    def agent_command(self, *argv: str) -> str:
        return self.tools(
            *_python("-m", "agent.main", "--tcti", self.tpm.tcti, "--state-dir", str(self.state_dir), *argv)
        )


def make_image(directory: Path, reference: str, payload_bytes: int, marker: str) -> Path:
    """A busybox image with `payload_bytes` of random data and a marker file: a layer no node has yet."""
    rootfs = directory / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "data").mkdir()
    (rootfs / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (rootfs / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "cat", "sleep", "echo", "ls"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "data" / "marker").write_text(marker + "\n")
    (rootfs / "data" / "payload").write_bytes(os.urandom(payload_bytes))
    archive = directory / "image.oci.tar"
    archive.write_bytes(build_archive(rootfs, reference, ImageConfig([], ["/bin/sh"], ["PATH=/bin"], "")))
    return archive


class EncryptedImages:
    def __init__(
        self,
        workdir: Path,
        kit: NodeKit,
        decoder: Path,
        bin_dir: Path | None,
        nodes: tuple[str, ...] = ("node-1", "node-2"),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.kit, self.decoder, self.bin_dir, self.names = kit, decoder, bin_dir, nodes
        self.registry: LocalRegistry | None = None
        self.hosts: dict[str, Host] = {}
        self.authority: subprocess.Popen[bytes] | None = None
        self.audit_log = self.workdir / "keybroker-audit.jsonl"
        self.stack = NodeStack(
            self.workdir / "cluster",
            nodes,
            kit,
            bin_dir=bin_dir,
            decryption=Decryption(decoder),
            registry_config_dir=self.workdir / "registry" / "hosts",
            mixed_with_api_only_nodes=False,
        )

    # --- lifecycle -----------------------------------------------------------------------------

    def up(self) -> EncryptedImages:
        try:
            self.stack.up(after_control_plane=self._start_registry)
            self._install()
            self._start_tpms()
            self._start_authority()
            for host in self.hosts.values():
                self._start_agent(host)
                self._write_keyprovider_config(host)
            for name in self.names:
                eventually(lambda name=name: self.report_levels(name) is not None, f"a report for {name}", timeout=90)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        errors = []
        for host in self.hosts.values():
            stop(host.agent, grace=15)
            host.agent = None
            host.tpm.stop()
        stop(self.authority, grace=15)
        self.authority = None
        try:
            self.stack.down()
        except Exception as error:
            errors.append(str(error))
        if self.registry is not None:
            self.registry.stop()
        if errors:
            raise RuntimeError("; ".join(errors))

    @property
    def cp(self) -> Any:
        return self.stack.cp

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl_run(*args, check=check)

    # --- set-up --------------------------------------------------------------------------------

    def _start_registry(self, cp: Any) -> None:
        cert = cp.issue_cert("registry", [BRIDGE], client=False, server=True, name="registry")
        self.registry = LocalRegistry(
            self.workdir / "registry", BRIDGE, REGISTRY_PORT, cert.cert_file, cert.key_file, cp.ca.cert_file
        ).start()

    def _install(self) -> None:
        """The CRDs and the authority's and key broker's RBAC, as the Helm chart renders them."""
        from devkit import chart

        values = {"issuer": {"name": ISSUER}, "attestation": {"enabled": True, "keyBroker": {"enabled": True}}}
        rendered = chart.render(values, namespace="trustgate-system")
        rbac = chart.of_kind(rendered, "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "trustgate-system"}}
        manifest = self.workdir / "install.json"
        manifest.write_text(chart.as_list([*chart.crds(), namespace, *rbac]))
        self.kubectl("apply", "-f", str(manifest))
        for crd in ("nodetrustreports", "trustpolicies", "trustflavors", "attestedagents"):
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.trustgate.dev")
        self.kubeconfig = self.cp.issue_kubeconfig("trustgate-attestation", IDENTITY)
        self.tls = self.cp.issue_cert("trustgate-attestation", [BRIDGE], client=False, server=True)
        self.issuer_key = self.workdir / "issuer.key"
        self.issuer_key.write_bytes(private_key_pem(generate_private_key("ES256")))

    def node_certificate(self, node: str) -> Any:
        """A kubelet-style client certificate for `node` (CN=system:node:NAME, O=system:nodes)."""
        return self.cp.issue_cert(
            f"system:node:{node}", [], client=True, server=False, organization="system:nodes", name=f"keys-{node}"
        )

    def _start_tpms(self) -> None:
        ca = LocalCa(self.workdir / "ek-ca")
        for name in self.names:
            node = self.stack.nodes[name]
            directory = self.workdir / "tpm" / name
            directory.mkdir(parents=True)
            self.hosts[name] = Host(node, SoftwareTpm(directory / "tpm", ca, enter=node.enter).start(), directory)
        self.ek_ca = ca.write_bundle(self.workdir / "ek-ca.pem")
        golden = self.hosts[self.names[0]].agent_command("flavor", "--name", "swtpm-golden")
        flavors = self.workdir / "flavors.yaml"
        flavors.write_text(golden)
        self.kubectl("apply", "-f", str(flavors))
        for name, host in self.hosts.items():
            fingerprint = host.agent_command("ek-fingerprint").strip()
            enrolled = subprocess.run(
                _python("-m", "attestation.main", "--kubeconfig", str(self.cp.kubeconfig), "enroll", name, fingerprint),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert enrolled.returncode == 0, enrolled.stderr

    def _start_authority(self) -> None:
        self.port = _free_port(BRIDGE)
        log = open(self.workdir / "authority.log", "ab")  # noqa: SIM115 - owned by the child
        self.authority = subprocess.Popen(
            _python(
                "-m", "attestation.main", "--kubeconfig", str(self.kubeconfig), "serve",
                f"--issuer={ISSUER}", f"--signing-key={self.issuer_key}", f"--ek-ca={self.ek_ca}",
                f"--tls-cert={self.tls.cert_file}", f"--tls-key={self.tls.key_file}",
                f"--bind={BRIDGE}:{self.port}", f"--report-ttl={REPORT_TTL}", f"--skew={SKEW}",
                f"--client-ca={self.cp.ca.cert_file}", "--image-keys", f"--audit-log={self.audit_log}",
                "--register-burst=30", "--register-rate=2",
            ),
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_ready(self.authority, self.url, self.cp.ca.cert_file, "the authority and key broker", timeout=60)

    @property
    def url(self) -> str:
        return f"https://{BRIDGE}:{self.port}"

    def _start_agent(self, host: Host) -> None:
        cert = self.node_certificate(host.node.name)
        log = open(host.directory / "agent.log", "ab")  # noqa: SIM115 - owned by the child
        host.agent = subprocess.Popen(
            host.node.enter(_python(
                "-m", "agent.main", "--tcti", host.tpm.tcti, "--state-dir", str(host.state_dir), "run",
                f"--authority={self.url}", f"--ca={self.cp.ca.cert_file}", f"--node={host.node.name}",
                f"--client-cert={cert.cert_file}", f"--client-key={cert.key_file}",
                f"--interval={AGENT_INTERVAL}", "--max-backoff=2",
            )),
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def stop_agent(self, name: str) -> None:
        host = self.hosts[name]
        stop(host.agent, grace=15)
        host.agent = None

    def keyprovider_args(self, host: Host) -> list[str]:
        cert = self.node_certificate(host.node.name)
        return [
            f"--broker={self.url}",
            f"--ca={self.cp.ca.cert_file}",
            f"--client-cert={cert.cert_file}",
            f"--client-key={cert.key_file}",
            f"--tcti={host.tpm.tcti}",
            f"--state-dir={host.state_dir}",
        ]

    def _write_keyprovider_config(self, host: Host) -> None:
        command = {
            "path": str(Path(sys.executable).parent / "trustgate-keyprovider"),
            "args": self.keyprovider_args(host),
        }
        config = {"key-providers": {"trustgate": {"cmd": command}}}
        host.node.paths.keyprovider_config.write_text(json.dumps(config, indent=2) + "\n")

    # --- images ----------------------------------------------------------------------------------

    def push_image(self, reference: str, payload_bytes: int = 1 << 20, marker: str = "") -> str:
        directory = self.workdir / "images" / reference.replace("/", "_").replace(":", "_")
        archive = make_image(directory, reference, payload_bytes, marker or reference)
        assert self.registry is not None
        return self.registry.push_archive(archive, reference)

    def trustctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "trustctl"), *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    def encrypt(self, source: str, target: str, policy: str) -> str:
        assert self.registry is not None
        done = self.trustctl(
            "image", "encrypt", source, target, f"--policy={policy}", f"--kubeconfig={self.cp.kubeconfig}",
            f"--registry-ca={self.registry.ca_file}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def wrapped_key(self, reference: str) -> str:
        """The trustgate annotation (base64) of the first layer of `reference`, as a node reads it."""
        from keybroker.registry import ImageName
        from keybroker.wrapping import ANNOTATION

        assert self.registry is not None
        manifest, _, _ = self.registry.client().manifest(ImageName.parse(reference))
        return str(manifest["layers"][0]["annotations"][ANNOTATION])

    def apply(self, document: dict[str, Any]) -> None:
        path = self.workdir / f"apply-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(document))
        self.kubectl("apply", "-f", str(path))

    # --- trust -----------------------------------------------------------------------------------

    def report_levels(self, node: str) -> dict[str, bool] | None:
        try:
            report = self.cp.client().get(f"/apis/trustgate.dev/v1alpha1/nodetrustreports/{node}")
        except Exception:
            return None
        return dict(decode_unverified(report["spec"]["token"])[1]["levels"])

    def report_token(self, node: str) -> str:
        return str(self.cp.client().get(f"/apis/trustgate.dev/v1alpha1/nodetrustreports/{node}")["spec"]["token"])

    def publish(self, node: str, token: str) -> None:
        from devkit.controlplane import KubeAPIError

        path = f"/apis/trustgate.dev/v1alpha1/nodetrustreports/{node}"
        try:
            self.cp.client().merge_patch(path, {"spec": {"token": token}})
        except KubeAPIError:
            self.cp.client().create(
                "/apis/trustgate.dev/v1alpha1/nodetrustreports",
                {"apiVersion": "trustgate.dev/v1alpha1", "kind": "NodeTrustReport", "metadata": {"name": node},
                 "spec": {"token": token}},
            )  # fmt: skip

    def sign_report(self, node: str, ttl: float) -> str:
        """A report for `node` with every level trusted, signed with the authority's key (a test's forgery
        of a genuine, short-lived report)."""
        from trustgate.keyfiles import load_private_key

        identity = self.stack.identities[node]
        claims = report_claims(
            issuer=ISSUER, node=node, system_uuid=identity.system_uuid, boot_id=identity.boot_id, ttl_seconds=ttl
        )
        return sign_claims(claims, load_private_key(self.issuer_key))

    def tamper(self, node: str, pcr: int = 10) -> None:
        """What a changed runtime does to the node's measurements: PCR `pcr` extended (the runtime level)."""
        self.hosts[node].tools("tpm2_pcrextend", f"{pcr}:sha256={'ab' * 32}")

    # --- key requests from a node ---------------------------------------------------------------

    def key_request(self, node: str, annotation: str, prepare_only: bool = False) -> dict[str, Any]:
        host = self.hosts[node]
        argv = _python("-m", "devkit.keyrequest", annotation, *self.keyprovider_args(host))
        if prepare_only:
            argv.append("--prepare-only")
        done = subprocess.run(host.node.enter(argv), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def send_release(self, as_node: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a release body from the host with `as_node`'s certificate."""
        from agent.agent import AuthorityRefused, HttpTransport

        cert = self.node_certificate(as_node)
        transport = HttpTransport(self.url, str(self.cp.ca.cert_file), (str(cert.cert_file), str(cert.key_file)))
        try:
            return {"status": 200, "answer": transport.post("/v1/keys/release", body)}
        except AuthorityRefused as refusal:
            return {"status": refusal.status, "error": refusal.reason}

    def records(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    # --- pods ------------------------------------------------------------------------------------

    def pod(self, name: str, image: str, node: str | None = None, node_name: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["/bin/sh", "-c", "cat /data/marker; exec sleep 3600"]}
            ],
        }  # fmt: skip
        if node is not None:
            spec["nodeSelector"] = {"kubernetes.io/hostname": node}
        if node_name is not None:
            spec["nodeName"] = node_name
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}

    def create_pod(self, body: dict[str, Any]) -> None:
        self.cp.client().create(f"/api/v1/namespaces/{body['metadata']['namespace']}/pods", body)

    def get_pod(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return dict(self.cp.client().get(f"/api/v1/namespaces/{namespace}/pods/{name}"))

    def delete_pod(self, name: str, namespace: str = NAMESPACE) -> None:
        from devkit.controlplane import KubeAPIError

        try:  # graceful (the pods' 1 s): the object goes once kubelet has stopped its containers
            self.cp.client().delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
        except KubeAPIError:
            return

        def gone() -> bool:
            try:
                self.get_pod(name, namespace)
            except KubeAPIError:
                return True
            return False

        eventually(gone, f"pod {name} to be deleted", timeout=60)

    def events(self, name: str, namespace: str = NAMESPACE) -> list[str]:
        listed = self.cp.client().get(
            f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}"
        )
        return [f"{e.get('reason')}: {e.get('message')}" for e in listed.get("items") or []]

    def running(self, name: str, timeout: float = 120, namespace: str = NAMESPACE) -> float:
        """Seconds until pod `name` runs; raises AssertionError with its events otherwise."""
        started = time.monotonic()

        def is_running() -> bool:
            return self.get_pod(name, namespace).get("status", {}).get("phase") == "Running"

        try:
            eventually(is_running, f"pod {name} to run", timeout=timeout, interval=0.1)
        except AssertionError as error:
            raise AssertionError(f"{error}; events: {self.events(name, namespace)}") from None
        return time.monotonic() - started

    def remove_image(self, node: str, reference: str, diff_id: str | None = None) -> None:
        """The image gone from the node, unpacked layers included (as image GC leaves it once no container
        uses them): the next pod pulls and decrypts again. The pods that ran it must be deleted first."""
        worker = self.stack.nodes[node]
        repository = reference.rsplit("@", 1)[0].rsplit(":", 1)[0]
        containers = [line.split() for line in worker.ctr("containers", "ls").splitlines()[1:] if line.strip()]
        users = [row[0] for row in containers if len(row) > 1 and row[1].startswith(repository)]
        for container in users:  # exited containers kubelet has not collected yet hold the image's snapshots
            worker.ctr("tasks", "rm", "-f", container, check=False)
            worker.ctr("containers", "rm", container)
        rows = [line.split() for line in worker.ctr("images", "ls").splitlines()[1:] if line.strip()]
        targets = {row[2] for row in rows if row[0].startswith(repository + ":") or row[0].startswith(repository + "@")}
        refs = [row[0] for row in rows if row[2] in targets]  # with the image id (sha256:...) CRI adds
        if refs:
            worker.ctr("images", "rm", "--sync", *refs)
        if diff_id is not None:
            eventually(lambda: diff_id not in self.unpacked_layers(node), f"{reference}'s layer to leave {node}")

    def unpacked_layers(self, node: str) -> str:
        """The node's snapshots (a decrypted, unpacked layer shows as its chain id)."""
        return str(self.stack.nodes[node].ctr("snapshots", "ls"))


def layer_diff_id(archive: Path) -> str:
    """The diff id of the single layer of an archive made by `make_image`."""
    import tarfile

    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]).read())  # type: ignore[union-attr]
        config = json.loads(tar.extractfile("blobs/sha256/" + manifest["config"]["digest"][7:]).read())  # type: ignore[union-attr]
    return str(config["rootfs"]["diff_ids"][0])


def main(argv: list[str] | None = None) -> int:
    """`python -m devkit.encrypted WORKDIR`: the encrypted-image cluster until Ctrl-C (as root)."""
    import argparse

    from devkit.controlplane import find_binaries
    from devkit.nodes.kit import find_kit

    parser = argparse.ArgumentParser(prog="python -m devkit.encrypted", description=main.__doc__)
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    decoder = subprocess.run(
        ["bash", str(ROOT / "keyprovider/build-decoder.sh")], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    workdir = args.workdir / time.strftime("%Y%m%d-%H%M%S")  # every run from scratch: new TPMs, keys, cluster
    world = EncryptedImages(workdir, find_kit(build=True), Path(decoder), find_binaries(build=True)).up()
    try:
        print(f"registry https://{BRIDGE}:{REGISTRY_PORT} (CA {world.cp.ca.cert_file}), key broker {world.url}")
        print(f"kubeconfig {world.cp.kubeconfig}; nodes {', '.join(world.names)}; broker audit {world.audit_log}")
        print("Ctrl-C to stop", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        world.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
