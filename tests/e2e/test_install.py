"""trustgate installed from its Helm chart on two real nodes, as an operator installs it, and operated there.

One cluster for the whole module (devkit.install): the real control plane, two kubelet nodes (containerd,
CNI, kube-proxy) each with an emulated TPM (swtpm in the node's namespaces), the trustgate image built
from this tree and imported into both nodes, `helm install` of chart/trustgate with serving certificates
that live minutes, kube-scheduler given the chart's configuration the kubeadm way, the authority as a
Deployment and the agents as a DaemonSet. The tests run in the order of an operator's first day, each
leaving the cluster as the next expects: installed and attested; node-b's TPM tampered with; workloads
placed; trustgate upgraded under a stream of pod creations; a node drained; certificates rotated
under load.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from devkit import workloads
from devkit.controlplane import KubeAPIError
from devkit.install import (
    EXTENDER_SERVICE,
    ISSUER,
    NAMESPACE,
    REPORT_TTL,
    WEBHOOK_SERVICE,
    ControlPlaneFiles,
    Installation,
    TrustgateImage,
    build_image,
    install_values,
    project_version,
)
from devkit.nodes.stack import NodeStack
from devkit.podstream import PodStream
from devkit.waiting import eventually
from trustgate.core.labels import TRUSTED_LABEL
from trustgate.core.report import LEVELS

from ..image.image_support import require_build_prerequisites
from ..prerequisites import require_helm, require_tpm_tools
from .harness import binaries, node_kit, require_host

pytestmark = pytest.mark.e2e

NODES = ("worker-a", "worker-b")  # not test_real_nodes' names: cgroup roots are machine-wide
TRUSTED, TAMPERED = NODES
LIFETIME = 150  # seconds of a serving certificate: the controller renews it every 100 s
UPGRADE_TAG = "0.1.1"
APPS, PLAIN = workloads.APPS, workloads.PLAIN  # a TrustPolicy makes every pod of APPS trust-requiring
ASSET_PROBE = {"trustgate.test/asset": "probe"}  # pods a second policy asks a tag no report carries


@dataclass
class Cluster:
    installed: Installation
    upgrade: TrustgateImage
    busybox: str
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def stack(self) -> NodeStack:
        return self.installed.stack

    def get(self, path: str, **params: str) -> Any:
        return self.installed.client.get(path, **params)

    def create(self, namespace: str, body: dict[str, Any], dry_run: bool = False) -> str | None:
        """The API server's refusal of a pod, or None when it is admitted."""
        params = {"dryRun": "All"} if dry_run else None
        try:
            self.installed.client.request("POST", f"/api/v1/namespaces/{namespace}/pods", body, params=params)
        except KubeAPIError as error:
            return f"HTTP {error.status}: {error.body}"
        return None

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/namespaces/{namespace}/pods/{name}")  # type: ignore[no-any-return]

    def running(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self.pod(namespace, name)
        return pod if pod["status"].get("phase") == "Running" else None

    def labels(self, node: str) -> dict[str, str]:
        return self.get(f"/api/v1/nodes/{node}")["metadata"].get("labels", {})  # type: ignore[no-any-return]


def app_pod(cluster: Cluster, name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return workloads.pod(cluster.busybox, name, namespace, **spec)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_host()
    require_helm()
    require_tpm_tools()
    require_build_prerequisites()
    bin_dir, kit = binaries(), node_kit()
    work = tmp_path_factory.mktemp("install")
    t = time.monotonic()
    current = build_image(project_version(), work / "image")
    upgrade = build_image(UPGRADE_TAG, work / "image-upgrade")
    built = time.monotonic() - t
    plane = ControlPlaneFiles(work / "cluster" / "cp")
    stack = NodeStack(
        work / "cluster", NODES, kit, bin_dir=bin_dir, mixed_with_api_only_nodes=False, extra_args=plane.extra_args()
    )
    stack.up()
    installed = Installation(stack, plane, work / "install", current, install_values(current, LIFETIME))
    try:
        installed.install()
        installed.timings["image_builds"] = round(built, 1)
        print("\ninstall timings (s):", json.dumps(stack.timings | installed.timings))
        yield Cluster(installed, upgrade, kit.test_image.ref)
    finally:
        installed.close()
        stack.down()


@pytest.fixture(scope="module")
def apps(cluster: Cluster) -> Cluster:
    """Namespace trusted-apps, made trust-requiring by a TrustPolicy, and plain-apps, which is not."""
    asset = {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "country-xx"},
        "spec": {"podSelector": {"matchLabels": ASSET_PROBE}, "requiredAssetTags": {"country": "XX"}},
    }
    cluster.installed.apply(*workloads.namespaces_and_policy(), asset)
    # The controller scopes the webhooks from the policies: once it has, trusted-apps' pods are sent to them.
    eventually(
        lambda: (
            cluster.create(APPS, app_pod(cluster, "scope-probe", APPS, nodeName=TRUSTED), dry_run=True) is None
            and "trusted-apps" in json.dumps(cluster.installed.webhooks("mutating"))
        ),
        "the webhooks scoped to the new policies",
        timeout=60,
    )
    return cluster


# --- installed --------------------------------------------------------------------------------------------


def test_every_trustgate_pod_runs_and_is_ready_on_the_real_nodes(cluster: Cluster) -> None:
    installed = cluster.installed
    assert not installed.not_ready() and not installed.rolled_out()
    pods = installed.pods()
    components = {p["metadata"]["labels"]["app.kubernetes.io/name"] for p in pods}
    assert components == {f"trustgate-{c}" for c in ("extender", "webhook", "controller", "attestation", "agent")}
    assert {p["spec"]["nodeName"] for p in pods} == set(NODES)
    for pod in pods:
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["image"] == installed.image.ref, (pod["metadata"]["name"], status)
    agents = [p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/name"] == "trustgate-agent"]
    assert sorted(p["spec"]["nodeName"] for p in agents) == sorted(NODES)


def test_the_api_server_calls_the_webhook_through_its_service(apps: Cluster) -> None:
    cluster = apps
    for kind in ("validating", "mutating"):
        for webhook in cluster.installed.webhooks(kind):
            assert webhook["clientConfig"]["service"] == {
                "namespace": NAMESPACE,
                "name": "trustgate-webhook",
                "port": 443,
                "path": webhook["clientConfig"]["service"]["path"],
            }
            assert "url" not in webhook["clientConfig"]
    pinned = app_pod(cluster, "asset-pinned", APPS, nodeName=TRUSTED)
    pinned["metadata"]["labels"].update(ASSET_PROBE)
    refusal = cluster.create(APPS, pinned)
    assert refusal and "HTTP 403" in refusal and TRUSTED in refusal and "asset tag country missing" in refusal, refusal
    assert cluster.create(APPS, app_pod(cluster, "pinned-a", APPS, nodeName=TRUSTED)) is None
    unbound = app_pod(cluster, "unbound", APPS)
    assert cluster.installed.marked(APPS, unbound), "the mutating webhook marks the pods kube-scheduler will place"


def test_kube_scheduler_calls_the_extender_through_its_service(apps: Cluster) -> None:
    cluster = apps
    config = yaml.safe_load(cluster.installed.cp.scheduler_config_file.read_text())
    (extender,) = config["extenders"]
    service = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/services/trustgate-extender")
    assert extender["urlPrefix"] == f"https://{service['spec']['clusterIP']}:8443"
    assert extender["tlsConfig"]["serverName"] == EXTENDER_SERVICE
    plane = cluster.installed.plane.directory
    assert Path(extender["tlsConfig"]["caFile"]) == plane / "ca.crt"
    assert (plane / "ca.crt").read_text() == cluster.installed.ca_bundle()
    probe = app_pod(cluster, "asset-scheduled", APPS)
    probe["metadata"]["labels"].update(ASSET_PROBE)
    assert cluster.create(APPS, probe) is None

    def extender_reason() -> str | None:
        events = cluster.get(f"/api/v1/namespaces/{APPS}/events", fieldSelector="involvedObject.name=asset-scheduled")[
            "items"
        ]
        messages = [e["message"] for e in events if e["reason"] == "FailedScheduling"]
        return next((m for m in messages if "asset tag country missing" in m), None)

    reason = eventually(extender_reason, "kube-scheduler to report the extender's reason", timeout=60, interval=1)
    assert "0/2 nodes are available" in reason, reason
    placed = app_pod(cluster, "scheduled", APPS)
    assert cluster.create(APPS, placed) is None
    assert eventually(lambda: cluster.running(APPS, "scheduled"), "a trust pod bound by the extender", timeout=120)
    for name in ("asset-scheduled", "scheduled", "pinned-a"):
        cluster.installed.client.delete(f"/api/v1/namespaces/{APPS}/pods/{name}")


# --- attestation ------------------------------------------------------------------------------------------


def test_the_agents_attest_and_each_node_gets_a_report_bound_to_it(cluster: Cluster) -> None:
    for name in NODES:
        claims = cluster.installed.report_claims(name)
        identity = cluster.stack.identities[name]
        assert claims is not None
        assert (claims["iss"], claims["sub"]) == (ISSUER, name)
        assert (claims["system_uuid"], claims["boot_id"]) == (identity.system_uuid, identity.boot_id)
        assert claims["levels"] == dict.fromkeys(LEVELS, True)
        assert claims["exp"] - claims["iat"] == REPORT_TTL
    eventually(
        lambda: all(cluster.labels(n).get(TRUSTED_LABEL) == "true" for n in NODES), "both nodes labelled trusted"
    )


def test_tampering_with_one_nodes_tpm_fails_that_node_only(cluster: Cluster, record_property: Any) -> None:
    cluster.installed.tamper(TAMPERED, 8, b"an unsigned kernel module")  # PCR 8: the kernel level
    tampered = time.monotonic()

    def kernel_failed() -> dict[str, Any] | None:
        claims = cluster.installed.report_claims(TAMPERED)
        return claims if claims and claims["levels"]["kernel"] is False else None

    claims = eventually(kernel_failed, f"{TAMPERED}'s report to fail the kernel level", timeout=120, interval=0.5)
    delay = time.monotonic() - tampered
    assert claims["levels"] == {level: level != "kernel" for level in LEVELS}
    eventually(lambda: cluster.labels(TAMPERED).get(TRUSTED_LABEL) == "false", f"{TAMPERED} labelled untrusted")
    assert cluster.installed.report_claims(TRUSTED)["levels"] == dict.fromkeys(LEVELS, True)  # type: ignore[index]
    assert cluster.labels(TRUSTED)[TRUSTED_LABEL] == "true"
    record_property("tamper_to_report_seconds", round(delay, 1))
    print(f"\n{TAMPERED}: tampered PCR 8 to a failing report in {delay:.1f}s")


# --- placement --------------------------------------------------------------------------------------------


def ledger(cluster: Cluster) -> dict[str, Any]:
    return workloads.deployment(cluster.busybox, "ledger", APPS, replicas=4)


def ledger_pods(cluster: Cluster) -> list[dict[str, Any]]:
    pods = cluster.get(f"/api/v1/namespaces/{APPS}/pods", labelSelector="app=ledger")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ledger_running(cluster: Cluster) -> list[dict[str, Any]] | None:
    pods = ledger_pods(cluster)
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    return running if len(running) == 4 == len(pods) else None


def test_a_deployment_of_trust_pods_runs_only_on_the_trusted_node(apps: Cluster) -> None:
    apps.installed.apply(ledger(apps))
    running = eventually(lambda: ledger_running(apps), "4 ledger pods Running", timeout=180, interval=1)
    assert {p["spec"]["nodeName"] for p in running} == {TRUSTED}


def test_the_same_pod_pinned_to_the_failing_node_is_refused(apps: Cluster) -> None:
    template = ledger(apps)["spec"]["template"]
    pinned = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ledger-pinned", **template["metadata"]}}
    pinned["spec"] = {**template["spec"], "nodeName": TAMPERED}
    refusal = apps.create(APPS, pinned)
    assert refusal and "HTTP 403" in refusal, refusal
    assert TAMPERED in refusal and "level kernel not trusted" in refusal, refusal
    pinned["spec"]["nodeName"] = TRUSTED  # the control: the same pod on the trusted node is admitted
    assert apps.create(APPS, pinned, dry_run=True) is None


def test_a_plain_pod_runs_on_either_node(apps: Cluster) -> None:
    for node in NODES:
        body = app_pod(apps, f"plain-{node}", PLAIN, nodeSelector={"kubernetes.io/hostname": node})
        assert apps.create(PLAIN, body) is None
    for node in NODES:
        pod = eventually(lambda n=node: apps.running(PLAIN, f"plain-{n}"), f"a plain pod on {node}", timeout=120)
        assert pod["spec"]["nodeName"] == node
    assert apps.create(PLAIN, app_pod(apps, "plain-pinned", PLAIN, nodeName=TAMPERED), dry_run=True) is None
    for node in NODES:  # bare pods: a drain would have to force them off
        apps.installed.client.delete(f"/api/v1/namespaces/{PLAIN}/pods/plain-{node}")


# --- operations under load --------------------------------------------------------------------------------

#: Where the streams' pods may land (workloads.stream_kinds): trust pods, scheduled or pinned, on the trusted node.
ALLOWED = {"trust": {TRUSTED}, "pinned": {TRUSTED}}
SCHEDULED = {"trust", "plain"}


def stream(cluster: Cluster, prefix: str) -> PodStream:
    kinds = workloads.stream_kinds(cluster.busybox, TRUSTED)
    return PodStream(cluster.installed.client, kinds, interval=0.5, prefix=prefix)


def assert_nothing_lost(report: Any, what: str) -> dict[str, Any]:
    summary = report.summary(SCHEDULED)
    refused = [f"{p.kind} {p.name}: {p.refused}" for p in report.refused]
    misplaced = [f"{p.kind} {p.name} on {p.node}" for p in report.placed_outside(ALLOWED)]
    unbound = [f"{p.kind} {p.name}" for p in report.unbound]
    print(f"\n{what}: {json.dumps(summary)}")
    assert not refused, f"{what}: admissions refused: {refused}"
    assert not misplaced, f"{what}: trust pods on an untrusted node: {misplaced}"
    assert not unbound, f"{what}: pods never scheduled: {unbound}"
    placed = {p.kind for p in report.pods if p.node}
    assert placed == {"trust", "pinned", "plain"}, f"{what}: the stream placed only {placed}"
    return summary


def test_a_rolling_upgrade_under_a_stream_of_pods_refuses_none_and_misplaces_none(
    apps: Cluster, record_property: Any
) -> None:
    installed = apps.installed
    installed.import_image(apps.upgrade)
    before = {p["metadata"]["name"] for p in installed.pods()}
    pods = stream(apps, "upgrade").start()
    eventually(lambda: len([p for p in pods.pods.values() if p.bound]) >= 6, "the stream under way", timeout=120)
    started = time.monotonic()
    installed.upgrade(apps.upgrade)
    finished = time.monotonic()
    upgrade_seconds = finished - started
    eventually(
        lambda: len([p for p in pods.pods.values() if p.sent > finished and p.bound]) >= 6,
        "the stream going on after the upgrade",
        timeout=120,
    )
    report = pods.stop()
    after = [p for p in installed.pods() if not p["metadata"].get("deletionTimestamp")]
    assert not before & {p["metadata"]["name"] for p in after}, "every trustgate pod was replaced"
    assert {s["image"] for p in after for s in p["status"]["containerStatuses"]} == {apps.upgrade.ref}
    summary = assert_nothing_lost(report, f"rolling upgrade to {apps.upgrade.ref} ({upgrade_seconds:.0f}s)")
    summary["upgrade_seconds"] = round(upgrade_seconds, 1)
    record_property("rolling_upgrade", summary)
    apps.notes["upgrade"] = summary


def serving_pods(cluster: Cluster) -> dict[str, str]:
    """Pod name to node of the extender and webhook replicas."""
    return {
        p["metadata"]["name"]: p["spec"]["nodeName"]
        for p in cluster.installed.pods()
        if p["metadata"]["labels"]["app.kubernetes.io/name"] in ("trustgate-extender", "trustgate-webhook")
        and not p["metadata"].get("deletionTimestamp")
    }


def test_draining_the_node_of_the_extender_and_webhook_moves_them_without_deadlock(
    apps: Cluster, record_property: Any
) -> None:
    installed = apps.installed
    placement = serving_pods(apps)
    drained = max(NODES, key=lambda n: (list(placement.values()).count(n), n == TRUSTED))
    other = next(n for n in NODES if n != drained)
    started = time.monotonic()
    done = installed.kubectl(
        "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=600s", check=False, timeout=660
    )
    drain_seconds = time.monotonic() - started
    assert done.returncode == 0, f"kubectl drain {drained}: {done.stderr}\n{installed.explain()}"
    try:
        installed.wait_ready()
        moved = serving_pods(apps)
        assert set(moved.values()) == {other}, moved
        services = {
            p["metadata"]["name"]: p["spec"]["nodeName"]
            for p in installed.pods()
            if p["metadata"]["labels"]["app.kubernetes.io/name"] != "trustgate-agent"
        }
        assert set(services.values()) == {other}, services
        # Admission resumes: trustgate answers (a refusal that names its check, not a failed webhook call) ...
        pinned = app_pod(apps, "after-drain", APPS, nodeName=TAMPERED)
        refusal = apps.create(APPS, pinned, dry_run=True)
        assert refusal and "level kernel not trusted" in refusal, refusal
        # ... and pods that need no trust are admitted and scheduled.
        assert apps.create(PLAIN, app_pod(apps, "after-drain", PLAIN)) is None
        pod = eventually(lambda: apps.running(PLAIN, "after-drain"), "a plain pod after the drain", timeout=120)
        assert pod["spec"]["nodeName"] == other
    finally:
        installed.kubectl("uncordon", drained)
    if drained == TRUSTED:  # the trust pods had nowhere to go; back on the trusted node now
        running = eventually(lambda: ledger_running(apps), "the ledger back on the trusted node", timeout=180)
        assert {p["spec"]["nodeName"] for p in running} == {TRUSTED}
    record_property("drain", {"node": drained, "seconds": round(drain_seconds, 1)})
    print(f"\ndrained {drained} in {drain_seconds:.0f}s; extender and webhook now on {other}")


def served(ip: str, port: int, server_name: str, bundle: str, path: str | None = None) -> tuple[int, int]:
    """(certificate serial, HTTP status or 0) of what `ip:port` serves as `server_name`, verified against
    trustgate's CA bundle; with `path`, a GET of it on the same connection."""
    context = ssl.create_default_context(cadata=bundle)
    with (
        socket.create_connection((ip, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        status = 0
        if path is not None:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            status = int(tls.recv(64).split(b" ", 2)[1])
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number, status


@dataclass
class Prober:
    """GET /healthz of Services (ClusterIP, port, name) over verified TLS, a new connection each time."""

    targets: list[tuple[str, int, str]]
    bundle: str
    failures: list[str] = field(default_factory=list)
    count: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stopped.is_set():
            for ip, port, name in self.targets:
                try:
                    status = served(ip, port, name, self.bundle, "/healthz")[1]
                except (OSError, ssl.SSLError, ValueError, IndexError) as error:
                    self.failures.append(f"{name}: {type(error).__name__}: {error}")
                    continue
                if status == 200:
                    self.count += 1
                else:
                    self.failures.append(f"{name}: HTTP {status}")
            self.stopped.wait(0.2)


def test_certificates_rotate_under_a_stream_of_pods_without_a_failed_request(
    apps: Cluster, record_property: Any
) -> None:
    installed = apps.installed
    bundle = installed.ca_bundle()
    assert bundle
    replicas = {
        p["status"]["podIP"]: WEBHOOK_SERVICE if "webhook" in p["metadata"]["name"] else EXTENDER_SERVICE
        for p in installed.pods()
        if p["metadata"]["labels"]["app.kubernetes.io/name"] in ("trustgate-extender", "trustgate-webhook")
        and not p["metadata"].get("deletionTimestamp")
    }
    first = {ip: served(ip, 8443, name, bundle)[0] for ip, name in replicas.items()}
    targets = []
    for name, port in (("trustgate-webhook", 443), ("trustgate-extender", 8443)):
        ip = installed.client.get(f"/api/v1/namespaces/{NAMESPACE}/services/{name}")["spec"]["clusterIP"]
        targets.append((ip, port, f"{name}.{NAMESPACE}.svc"))
    prober = Prober(targets, bundle)
    probing = threading.Thread(target=prober.run, daemon=True)
    pods = stream(apps, "rotation").start()
    probing.start()
    started = time.monotonic()
    try:

        def rotated_everywhere() -> bool:
            return all(served(ip, 8443, name, bundle)[0] != first[ip] for ip, name in replicas.items())

        eventually(
            rotated_everywhere, "every replica serving a renewed certificate", timeout=2 * LIFETIME + 120, interval=2
        )
        rotation_seconds = time.monotonic() - started
    finally:
        prober.stopped.set()
        probing.join(30)
        report = pods.stop()
    # The controller renewed the Secret: it holds a certificate no webhook replica served at the start. (Its
    # resourceVersion may be the one read at the start: the kubelet takes up to a minute to bring a renewed
    # Secret into the pods, so a renewal just before the test looks unchanged.)
    renewed = installed.client.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/trustgate-webhook-tls")
    held = x509.load_pem_x509_certificate(base64.b64decode(renewed["data"]["tls.crt"])).serial_number
    assert held not in {first[ip] for ip, name in replicas.items() if name == WEBHOOK_SERVICE}
    assert installed.ca_bundle() == bundle, "the CA stayed: only the serving certificates were renewed"
    summary = assert_nothing_lost(report, "certificate rotation")
    assert not prober.failures, (
        f"{len(prober.failures)} of {prober.count + len(prober.failures)} probes failed: {prober.failures[:5]}"
    )
    assert prober.count > 0
    summary |= {"probes": prober.count, "probe_failures": 0, "rotated_within_s": round(rotation_seconds, 1)}
    record_property("certificate_rotation", summary)
    print(f"every replica served a renewed certificate {rotation_seconds:.0f}s into the stream: {json.dumps(summary)}")
