"""trustgate installed from its Helm chart onto a cluster of real nodes, the way an operator installs it on kubeadm.

    plane = ControlPlaneFiles(workdir / "cluster" / "cp")       # before the cluster: kube-apiserver's side
    stack = NodeStack(workdir / "cluster", ["node-a", "node-b"], kit, extra_args=plane.extra_args())
    stack.up()
    installed = Installation(stack, plane, workdir / "install", TrustgateImage.built()).install()
    ...
    installed.close()                                             # the emulated TPMs; then stack.down()

What `install()` does, in order (README, "Install"):

1. the image archive is imported into every node's containerd (`ctr -n k8s.io images import`): nothing is pulled;
2. trustgate's namespace and CRDs; the issuer key (`trustctl keygen`) as the Secrets `trustgate-issuer`
   (jwks.json) and `trustgate-attestation-key` (key.pem); the TPM makers' EK CA (`trustgate-ek-ca`); the
   client CAs of kube-scheduler, kube-apiserver and the kubelets (ConfigMaps);
3. each node's TPM: a swtpm inside the node's namespaces on its loopback, port 2321 (agents run with host
   networking and reach it as `swtpm:host=127.0.0.1,port=2321`); its EK enrolled for its node by
   fingerprint (`trustgate-agent ek-fingerprint` on the node, `trustgate-attestation enroll`), the
   flavors captured on the first node (`trustgate-agent flavor`);
4. `helm install` of chart/trustgate;
5. kube-scheduler on the host given the chart's KubeSchedulerConfiguration, written the kubeadm way:
   the CA bundle of ConfigMap trustgate-ca as its caFile, a client certificate of the cluster CA
   (CN system:kube-scheduler), all in `<control plane>/etc/kubernetes/trustgate`, then restarted with it.
   The host resolves no Service names (there is no cluster DNS on a control-plane host), so the extender
   is called at its Service's ClusterIP with `tlsConfig.serverName` set to the Service's name;
6. waits until every trustgate pod is Running and Ready, the controller has filled the webhook
   configurations, and every node has a report.

kube-apiserver's part comes before the cluster starts (`ControlPlaneFiles.extra_args()`): the
AdmissionConfiguration whose kubeconfig gives it, for `trustgate-webhook.trustgate-system.svc:443`, a
client certificate from a CA of its own, which the webhook trusts through ConfigMap
trustgate-apiserver-client-ca. It reaches the webhook's Service through its endpoints
(`--enable-aggregator-routing`, devkit/nodes/cluster_access.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devkit import chart
from devkit.controlplane import ControlPlane, KubeAPIError, KubeClient
from devkit.nodes.stack import NodeStack
from devkit.paths import Under
from devkit.pki import issue_cert, load_or_create_ca
from devkit.swtpm import LocalCa, SoftwareTpm
from devkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMESPACE = "trustgate-system"
RELEASE = "trustgate"
ISSUER = "https://trustgate-attestation.trustgate-system.svc"
TPM_PORT = 2321
TCTI = f"swtpm:host=127.0.0.1,port={TPM_PORT}"
FLAVOR = "swtpm-golden"
REPORT_TTL = 120  # seconds; the agents renew well before
AGENT_INTERVAL = 5  # seconds between an agent's attestations: how soon tampering shows
IMAGE_HINT = "make image (bash image/build.sh; needs root)"
WEBHOOK_SERVICE = f"trustgate-webhook.{NAMESPACE}.svc"
EXTENDER_SERVICE = f"trustgate-extender.{NAMESPACE}.svc"
DEPLOYMENTS = ("trustgate-extender", "trustgate-webhook", "trustgate-controller", "trustgate-attestation")
DAEMONSETS = ("trustgate-agent",)


class InstallError(RuntimeError):
    """A step of the install failed; the message names the step and what was seen."""


@dataclass(frozen=True)
class TrustgateImage:
    """An OCI archive from `make image` and the tag inside it (the reference kubelets resolve)."""

    archive: Path
    tag: str

    @classmethod
    def load(cls, archive: Path) -> TrustgateImage:
        if not archive.is_file():
            raise InstallError(f"no trustgate image at {archive}; build it: {IMAGE_HINT}")
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            if member is None:
                raise InstallError(f"{archive} is not an OCI archive (no index.json)")
            index = json.load(member)
        names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name", "") for m in index["manifests"]]
        tags = [n.rsplit(":", 1)[-1] for n in names if n]
        if not tags:
            raise InstallError(f"{archive} names no tag (org.opencontainers.image.ref.name)")
        return cls(archive.resolve(), tags[0])

    @classmethod
    def built(cls) -> TrustgateImage:
        return cls.load(ROOT / "build" / "trustgate-image.oci.tar")

    @property
    def ref(self) -> str:
        return f"docker.io/library/trustgate:{self.tag}"


def project_version() -> str:
    """pyproject.toml's version: the tag `make image` gives the image."""
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def build_image(tag: str, output: Path) -> TrustgateImage:
    """`make image TAG=<tag>` into `output` (image/build.sh; needs root): another tag of this tree."""
    done = subprocess.run(
        ["bash", str(ROOT / "image" / "build.sh"), "--tag", tag, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise InstallError(f"image/build.sh --tag {tag} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return TrustgateImage.load(Path(done.stdout.strip().splitlines()[-1]))


@dataclass
class ControlPlaneFiles:
    """trustgate's files on the control-plane host, in `<control plane>/etc/kubernetes/trustgate`."""

    cp_workdir: Path

    webhook_client_ca = Under("webhook-client-ca.crt", base="directory")
    admission_configuration = Under("admission-configuration.yaml", base="directory")

    def __post_init__(self) -> None:
        self.cp_workdir = Path(self.cp_workdir).resolve()
        self.directory = self.cp_workdir / "etc" / "kubernetes" / "trustgate"

    def extra_args(self) -> dict[str, list[str]]:
        """kube-apiserver's client certificate for the webhook and its AdmissionConfiguration (before it starts)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ca = load_or_create_ca(self.directory / "webhook-clients", "trustgate-webhook-clients")
        self.webhook_client_ca.write_bytes(ca.cert_file.read_bytes())
        client = issue_cert(
            ca, "kube-apiserver", [], client=True, server=False, out_dir=self.directory, name="apiserver-webhook-client"
        )
        kubeconfig = self.directory / "admission-kubeconfig.yaml"
        # kube-apiserver picks the user by the webhook Service's name and port.
        user = {"client-certificate": str(client.cert_file), "client-key": str(client.key_file)}
        kubeconfig.write_text(
            yaml.safe_dump(
                {"apiVersion": "v1", "kind": "Config", "users": [{"name": f"{WEBHOOK_SERVICE}:443", "user": user}]}
            )
        )
        plugin = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        self.admission_configuration.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "AdmissionConfiguration",
                    "plugins": [
                        {"name": "ValidatingAdmissionWebhook", "configuration": plugin},
                        {"name": "MutatingAdmissionWebhook", "configuration": plugin},
                    ],
                }
            )
        )
        return {"kube-apiserver": [f"--admission-control-config-file={self.admission_configuration}"]}


def install_values(image: TrustgateImage, certificate_lifetime: int | None = None) -> dict[str, Any]:
    """The chart's values for this cluster: the image already on the nodes, emulated TPMs, the authority on."""
    values: dict[str, Any] = {
        "issuer": {"name": ISSUER},
        "image": {"tag": image.tag, "pullPolicy": "Never"},
        "attestation": {"enabled": True, "reportTTLSeconds": REPORT_TTL},
        "agent": {
            "enabled": True,
            "tcti": TCTI,
            "tpmDevice": "",
            "hostNetwork": True,
            "intervalSeconds": AGENT_INTERVAL,
        },
    }
    if certificate_lifetime is not None:
        values["certificates"] = {"certificateLifetimeSeconds": certificate_lifetime}
    return values


@dataclass
class Installation:
    """trustgate on `stack`: install, upgrade, and what the tests and the demo look at."""

    stack: NodeStack
    plane: ControlPlaneFiles
    workdir: Path
    image: TrustgateImage
    values: dict[str, Any] = field(default_factory=dict)
    say: Callable[[str], None] = lambda _: None
    tpms: dict[str, SoftwareTpm] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.values = self.values or install_values(self.image)

    @property
    def cp(self) -> ControlPlane:
        return self.stack.cp  # type: ignore[no-any-return]

    @property
    def client(self) -> KubeClient:
        return self.cp.client()

    @property
    def node_names(self) -> list[str]:
        return list(self.stack.nodes)

    # ---- the install ---------------------------------------------------------------------

    def install(self) -> Installation:
        chart.helm_binary()  # fails early, saying how to build it
        self._step("images", self.import_image, self.image)
        self._step("prerequisites", self._prerequisites)
        self._step("tpms", self._tpms)
        self._step("enrollment", self._enroll)
        self._step("helm_install", self._helm_install)
        self._step("scheduler", self._configure_scheduler)
        self._step("ready", self.wait_ready)
        self._step("reports", self.wait_reports)
        return self

    def _step(self, name: str, action: Callable[..., object], *args: Any) -> None:
        t = time.monotonic()
        action(*args)
        self.timings[name] = round(time.monotonic() - t, 1)

    def import_image(self, image: TrustgateImage) -> None:
        self.say(f"importing {image.ref} into every node's containerd (nothing is pulled)")
        for node in self.stack.nodes.values():
            node.import_image(image.archive)

    def _prerequisites(self) -> None:
        self.say(f"namespace {NAMESPACE}, CRDs, the issuer key, the client CAs")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        self.apply(*chart.crds(), namespace)
        for crd in ("nodetrustreports", "trustpolicies", "attestedagents", "trustflavors"):
            self.kubectl("wait", "--for=condition=Established", "--timeout=120s", f"crd/{crd}.trustgate.dev")
        key, jwks = self.workdir / "issuer.key", self.workdir / "issuer.jwks.json"
        if not key.exists():
            run([str(BIN / "trustctl"), "keygen", "--key-out", str(key), "--jwks-out", str(jwks)], "trustctl keygen")
        self.apply(
            secret("trustgate-issuer", {"jwks.json": jwks.read_bytes()}),
            secret("trustgate-attestation-key", {"key.pem": key.read_bytes()}),
            config_map("trustgate-scheduler-client-ca", {"ca.crt": self.cp.ca.cert_file.read_text()}),
            config_map("trustgate-apiserver-client-ca", {"ca.crt": self.plane.webhook_client_ca.read_text()}),
            config_map("trustgate-attestation-client-ca", {"ca.crt": self.cp.ca.cert_file.read_text()}),
        )

    def _tpms(self) -> None:
        self.say("a TPM for every node (swtpm in the node's namespaces, on its loopback)")
        ek_ca = LocalCa(self.workdir / "ek-ca")
        for name, node in self.stack.nodes.items():
            self.tpms[name] = SoftwareTpm(self.workdir / f"tpm-{name}", ek_ca, port=TPM_PORT, enter=node.enter).start()
        self.apply(secret("trustgate-ek-ca", {"ek-ca.pem": ek_ca.bundle()}))

    def on_node(self, node: str, *argv: str) -> str:
        """A command run on a node (its namespaces), e.g. `trustgate-agent ek-fingerprint`."""
        return run(self.stack.nodes[node].enter(list(argv)), f"{argv[0]} on {node}")

    def agent_cli(self, node: str, *argv: str) -> str:
        state = self.workdir / f"agent-cli-{node}"
        state.mkdir(exist_ok=True)
        return self.on_node(node, str(BIN / "trustgate-agent"), "--tcti", TCTI, "--state-dir", str(state), *argv)

    def _enroll(self) -> None:
        self.say("enrolling every node's EK (trustgate-agent ek-fingerprint on the node) and capturing the flavors")
        for name in self.node_names:
            fingerprint = self.agent_cli(name, "ek-fingerprint").strip()
            run(
                [
                    str(BIN / "trustgate-attestation"),
                    "--kubeconfig",
                    str(self.cp.kubeconfig),
                    "enroll",
                    name,
                    fingerprint,
                ],
                f"enrolling {name}",
            )
        flavors = self.agent_cli(self.node_names[0], "flavor", "--name", FLAVOR)
        self.kubectl("apply", "-f", "-", input=flavors)

    def helm(self, *args: str, timeout: float = 300) -> str:
        return chart.helm(*args, "--kubeconfig", str(self.cp.kubeconfig), "--namespace", NAMESPACE, timeout=timeout)

    def _helm_install(self) -> None:
        self.say(f"helm install {RELEASE} chart/trustgate (image {self.image.ref})")
        values = self.workdir / "values.json"
        values.write_text(json.dumps(self.values, indent=1))
        self.helm("install", RELEASE, str(chart.CHART), f"--values={values}")

    def _configure_scheduler(self) -> None:
        """kube-scheduler consults the extender: the chart's configuration, its CA bundle and a client certificate."""
        self.say("kube-scheduler: the chart's configuration, CA bundle and a client certificate; restarted")
        bundle = eventually(
            lambda: self.ca_bundle(), "ConfigMap trustgate-ca from the controller", timeout=300, interval=1
        )
        directory = self.plane.directory
        (directory / "ca.crt").write_text(bundle)
        client = self.cp.issue_cert(
            "system:kube-scheduler", [], client=True, server=False, name="kube-scheduler-extender-client"
        )
        for source, target in ((client.cert_file, "scheduler-client.crt"), (client.key_file, "scheduler-client.key")):
            (directory / target).write_bytes(Path(source).read_bytes())
            (directory / target).chmod(0o600)
        configmap = self.client.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/trustgate-scheduler-config")
        config = yaml.safe_load(configmap["data"]["kube-scheduler-config.yaml"])
        config["clientConnection"]["kubeconfig"] = str(self.cp.scheduler_kubeconfig)
        (extender,) = config["extenders"]
        ip = self.client.get(f"/api/v1/namespaces/{NAMESPACE}/services/trustgate-extender")["spec"]["clusterIP"]
        port = extender["urlPrefix"].rsplit(":", 1)[1]
        extender["urlPrefix"] = f"https://{ip}:{port}"
        extender["tlsConfig"] = {
            "serverName": EXTENDER_SERVICE,
            "caFile": str(directory / "ca.crt"),
            "certFile": str(directory / "scheduler-client.crt"),
            "keyFile": str(directory / "scheduler-client.key"),
        }
        text = yaml.safe_dump(config, sort_keys=False)
        (directory / "scheduler-config.yaml").write_text(text)
        self.cp.reconfigure_scheduler(text)

    def ca_bundle(self) -> str | None:
        try:
            found = self.client.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/trustgate-ca")
        except KubeAPIError:
            return None
        return str(found.get("data", {}).get("ca.crt") or "") or None

    # ---- waiting ------------------------------------------------------------------------------

    def rolled_out(self) -> list[str]:
        """What is not rolled out yet (empty: every Deployment and DaemonSet runs its current template, all Ready)."""
        pending = []
        for name in DEPLOYMENTS:
            d = self.client.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")
            want, status = d["spec"]["replicas"], d.get("status", {})
            counts = {
                k: status.get(f"{k}Replicas" if k else "replicas", 0) for k in ("updated", "ready", "available", "")
            }
            if status.get("observedGeneration", 0) < d["metadata"]["generation"] or set(counts.values()) != {want}:
                pending.append(f"deployment {name}: {counts} of {want}")
        for name in DAEMONSETS:
            ds = self.client.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{name}")
            status = ds.get("status", {})
            want = status.get("desiredNumberScheduled", -1)
            got = [status.get(k, 0) for k in ("updatedNumberScheduled", "numberReady", "numberAvailable")]
            if status.get("observedGeneration", 0) < ds["metadata"]["generation"] or got != [want] * 3 or want < 1:
                pending.append(f"daemonset {name}: {got} of {want}")
        return pending

    def pods(self) -> list[dict[str, Any]]:
        return list(self.client.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"])

    def not_ready(self) -> list[str]:
        """trustgate pods that are not Running and Ready on a real node."""
        found = []
        for pod in self.pods():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
            phase, node = pod["status"].get("phase"), pod["spec"].get("nodeName")
            if phase != "Running" or not ready or node not in self.stack.nodes:
                found.append(f"{pod['metadata']['name']} ({phase}, ready={ready}, node={node})")
        return found

    def wait_ready(self, timeout: float = 600) -> None:
        def settled() -> bool:
            return not self.rolled_out() and not self.not_ready()

        try:
            eventually(settled, "every trustgate pod Running and Ready", timeout=timeout, interval=1)
        except AssertionError as error:
            raise InstallError(f"{error}: {self.rolled_out()} {self.not_ready()}\n{self.explain()}") from None
        eventually(self.webhooks_configured, "the controller to fill the webhook configurations", timeout=120)

    def webhooks(self, kind: str = "validating") -> list[dict[str, Any]]:
        """The webhooks of trustgate's `validating` or `mutating` configuration, as the controller wrote them."""
        path = f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/trustgate"
        return list(self.client.get(path).get("webhooks") or [])

    def marked(self, namespace: str, pod: Mapping[str, Any]) -> bool:
        """Whether a dry-run create of `pod` comes back marked by the mutating webhook (it requires trust)."""
        from trustgate.core.labels import TRUST_RESOURCE

        created = self.client.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod, params={"dryRun": "All"})
        return TRUST_RESOURCE in created["spec"]["containers"][0].get("resources", {}).get("limits", {})

    def webhooks_configured(self) -> bool:
        found = self.client.get("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/trustgate")
        return any(w["name"] == "bindings.trustgate.dev" for w in found.get("webhooks") or [])

    def report_claims(self, node: str) -> dict[str, Any] | None:
        from trustgate.core.report import decode_unverified

        try:
            report = self.client.get(f"/apis/trustgate.dev/v1alpha1/nodetrustreports/{node}")
        except KubeAPIError:
            return None
        return decode_unverified(report["spec"]["token"])[1]  # type: ignore[no-any-return]

    def wait_reports(self, timeout: float = 300) -> None:
        self.say("the agents attest; waiting for every node's report")
        for name in self.node_names:
            try:
                eventually(
                    lambda n=name: self.report_claims(n), f"a trust report for {name}", timeout=timeout, interval=1
                )
            except AssertionError as error:
                raise InstallError(f"{error}\n{self.explain()}") from None

    def explain(self) -> str:
        """trustgate's pods, recent events and the tails of its logs, for a failure message."""
        pods = self.kubectl("get", "pods", "-o", "wide", "-n", NAMESPACE, check=False).stdout
        events = self.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False).stdout
        logs = []
        for pod in self.pods():
            name = pod["metadata"]["name"]
            out = self.kubectl("logs", "-n", NAMESPACE, name, "--tail=15", check=False)
            logs.append(f"--- {name} ---\n{(out.stdout or out.stderr).strip()}")
        return f"{pods}\n{events[-4000:]}\n" + "\n".join(logs)

    # ---- operations -----------------------------------------------------------------------------

    def upgrade(self, image: TrustgateImage, wait: bool = True) -> None:
        """`helm upgrade` to another image tag (already imported into the nodes); returns once rolled out."""
        self.say(f"helm upgrade {RELEASE} to {image.ref}")
        self.helm("upgrade", RELEASE, str(chart.CHART), "--reuse-values", f"--set=image.tag={image.tag}")
        self.image = image
        if wait:
            self.wait_ready()

    def tamper(self, node: str, pcr: int, what: bytes) -> None:
        """One more measurement in a PCR of the node's TPM, as an unexpected boot component would leave."""
        import hashlib

        done = self.tpms[node].command(["tpm2_pcrextend", f"{pcr}:sha256={hashlib.sha256(what).hexdigest()}"])
        if done.returncode != 0:
            raise InstallError(f"tpm2_pcrextend on {node}'s TPM failed: {done.stderr.strip()}")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.cp.kubectl), f"--kubeconfig={self.cp.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise InstallError(f"kubectl {' '.join(args[:3])} failed: {done.stderr.strip()}")
        return done

    def apply(self, *objects: Mapping[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=chart.as_list(list(objects)))  # type: ignore[arg-type]

    def close(self) -> None:
        for tpm in self.tpms.values():
            tpm.stop()


def run(argv: Sequence[str], what: str, timeout: float = 120) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise InstallError(f"{what}: `{' '.join(argv)}` exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def secret(name: str, data: Mapping[str, bytes]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "data": encoded}


def config_map(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": dict(data),
    }
