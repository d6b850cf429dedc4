"""Encrypted images on real nodes: a layer key leaves the key broker only for a node that the TrustPolicy
covering the image trusts, wrapped to that node's attested session, whatever put the pod there.

Two real nodes (kubelet, containerd 2.4 decrypting through trustgate-layer-decoder and
trustgate-keyprovider), a local registry, the attestation authority with its key broker, and per node
an emulated TPM on the node's own loopback with its trust agent (devkit.encrypted). node-1 is trusted;
node-2's runtime measurement (PCR 10) is tampered with from the start, so its report fails the
policy. The image is encrypted with `trustctl image encrypt`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.encrypted import BRIDGE, REGISTRY_PORT, SKEW, EncryptedImages
from devkit.nodes.leftovers import leftovers
from devkit.registry import missing as registry_missing
from devkit.waiting import eventually
from trustgate.core.reasons import Code

from ..prerequisites import in_ci, require_tpm_tools, unavailable
from .harness import binaries, node_kit, require_host, tear_down

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = f"{BRIDGE}:{REGISTRY_PORT}"
PLAIN = f"{REGISTRY}/plain/secret-app:1"
SECRET = f"{REGISTRY}/secret/app:1"
TENANT_PLAIN = f"{REGISTRY}/plain/tenant-app:1"
TENANT = f"{REGISTRY}/tenant/app:1"
MARKER = "the secret workload"
POLICY = "secret-images"
TENANT_POLICY = "tenant-images"
DECODER_HINT = "bash keyprovider/build-decoder.sh (needs Go and the Go module proxy; about a minute cold)"


def _build(script: str, hint: str) -> Path:
    done = subprocess.run(["bash", str(ROOT / script)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        message = f"cannot build with {script}: {done.stderr.strip()[-2000:]}; try: {hint}"
        pytest.fail(message) if in_ci() else unavailable(message)
    return Path(done.stdout.strip().splitlines()[-1])


def policy(name: str, images: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": name},
        "spec": {"encryptedImages": images, **spec},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EncryptedImages]:
    require_host()
    require_tpm_tools()
    missing = registry_missing()
    if missing:
        unavailable(missing)
    bin_dir = binaries()
    kit = node_kit()
    decoder = _build("keyprovider/build-decoder.sh", DECODER_HINT)
    work = tmp_path_factory.mktemp("encrypted")
    cluster = EncryptedImages(work, kit, decoder, bin_dir)
    try:
        cluster.up()
        cluster.tamper("node-2")  # node-2's runtime changed: its next attestation fails the runtime level
        eventually(lambda: cluster.report_levels("node-2") == {**_all(True), "runtime": False}, "node-2 failing")
        cluster.apply(policy(POLICY, [f"{REGISTRY}/secret/*"]))
        cluster.apply(policy(TENANT_POLICY, [f"{REGISTRY}/tenant/*"], requiredAssetTags={"tenant": "other"}))
        cluster.push_image(PLAIN, marker=MARKER)
        cluster.push_image(TENANT_PLAIN, marker="tenant")
        cluster.encrypt(PLAIN, SECRET, POLICY)
        cluster.encrypt(TENANT_PLAIN, TENANT, TENANT_POLICY)
        yield cluster
    finally:
        tear_down(cluster.down, lambda: leftovers(cluster.stack.net, cluster.names, kit, work / "cluster"))


def _all(value: bool) -> dict[str, bool]:
    return dict.fromkeys(("firmware", "boot", "bootloader", "kernel", "runtime"), value)


def _records(world: EncryptedImages, node: str, decision: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in world.records()
        if r["operation"] == "KEY_RELEASE" and r["node"] == node and (decision is None or r["decision"] == decision)
    ]


def _pull_refused(world: EncryptedImages, pod: str, namespace: str = "default") -> str:
    """The pod's events once its image pull failed with the key broker's refusal."""

    def refused() -> str | None:
        for event in world.events(pod, namespace):
            if "the key broker refused the layer key" in event:
                return event
        return None

    event = eventually(refused, f"pod {pod}'s pull to fail with the broker's reason", timeout=120, interval=0.5)
    print(f"\n{namespace}/{pod}: {event}")
    return event


def test_the_encrypted_image_is_encrypted_in_the_registry(world: EncryptedImages) -> None:
    from keybroker.registry import ImageName

    assert world.registry is not None
    manifest, _, _ = world.registry.client().manifest(ImageName.parse(SECRET))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+encrypted"
    assert "org.opencontainers.image.enc.keys.provider.trustgate" in layer["annotations"]
    blob = world.registry.client().blob(ImageName.parse(SECRET), layer["digest"])
    assert MARKER.encode() not in blob
    keys = world.trustctl("image", "keys", "--json", f"--kubeconfig={world.cp.kubeconfig}")
    registered = [json.loads(line) for line in keys.stdout.splitlines()]
    assert {(k["image"], k["policy"]) for k in registered} == {(SECRET, POLICY), (TENANT, TENANT_POLICY)}


def test_an_encrypted_image_runs_on_the_trusted_node(world: EncryptedImages) -> None:
    world.create_pod(world.pod("secret-a", SECRET, node="node-1"))
    seconds = world.running("secret-a")
    logs = world.kubectl("logs", "secret-a").stdout
    assert MARKER in logs
    assert _diff_id(world) in world.unpacked_layers("node-1")  # what the failing node never gets
    [release] = _records(world, "node-1", "released")
    assert release["image"] == SECRET and release["policy"] == f"TrustPolicy {POLICY}"
    assert release["user"] == "CN=system:node:node-1, O=system:nodes"
    print(f"\nencrypted pod created to Running on node-1 in {seconds:.2f}s")


def _diff_id(world: EncryptedImages) -> str:
    from devkit.encrypted import layer_diff_id

    return layer_diff_id(world.workdir / "images" / PLAIN.replace("/", "_").replace(":", "_") / "image.oci.tar")


def _never_decrypted(world: EncryptedImages, node: str) -> None:
    """No snapshot of the secret layer on `node`: its plain content was never unpacked there."""
    assert _diff_id(world) not in world.unpacked_layers(node)


def test_a_static_pod_on_the_failing_node_cannot_decrypt(world: EncryptedImages) -> None:
    """A static pod reaches the kubelet from its manifest folder: no API server, no webhook, no scheduler."""
    manifest = world.stack.nodes["node-2"].static_pod_dir / "static-secret.yaml"
    body = world.pod("static-secret", SECRET)
    manifest.write_text(yaml.safe_dump(body))
    try:
        event = _pull_refused(world, "static-secret-node-2")
        assert "level runtime not trusted" in event, event
        _never_decrypted(world, "node-2")
        refused = _records(world, "node-2", "rejected")
        assert refused and refused[-1]["image"] == SECRET and refused[-1]["codes"] == [Code.LEVEL.value]
    finally:
        manifest.unlink()


UNREACHABLE_WEBHOOK = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingWebhookConfiguration",
    "metadata": {"name": "trustgate"},
    "webhooks": [
        {
            "name": "pods.trustgate.dev",
            "clientConfig": {"url": "https://127.0.0.1:9/validate"},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
                ]
            },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 2,
        }
    ],
}


def test_a_pod_admitted_while_the_webhook_fails_open_cannot_decrypt(world: EncryptedImages) -> None:
    """The README's emergency procedure for a webhook that cannot come back (failurePolicy Ignore: pods are
    admitted unjudged) admits a pod pinned to the failing node with nodeName; its pull still gets no key.
    No trustgate webhook runs on this cluster: a configuration pointing nowhere stands for one that is down."""
    world.apply(UNREACHABLE_WEBHOOK)
    pinned = world.pod("pinned-secret", SECRET, node_name="node-2")
    down = eventually(
        lambda: "failed calling webhook" in _create_error(world, pinned), "the webhook to refuse", timeout=30
    )
    assert down
    # the emergency procedure: what `helm upgrade ... --set webhook.failurePolicy=Ignore` renders
    patch = [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]
    world.kubectl("patch", "validatingwebhookconfiguration", "trustgate", "--type=json", "-p", json.dumps(patch))
    eventually(lambda: _create_error(world, pinned) == "", "the pod to be admitted unjudged", timeout=30)
    event = _pull_refused(world, "pinned-secret")
    assert "level runtime not trusted" in event
    _never_decrypted(world, "node-2")
    world.delete_pod("pinned-secret")
    world.kubectl("delete", "validatingwebhookconfiguration", "trustgate")


def _create_error(world: EncryptedImages, body: dict[str, Any]) -> str:
    from devkit.controlplane import KubeAPIError

    try:
        world.create_pod(body)
    except KubeAPIError as error:
        return str(error)
    return ""


# --- attacks: each refused by the broker and recorded ---------------------------------------------


def _refused(answer: dict[str, Any], text: str) -> None:
    assert answer["status"] == 403, answer
    assert text in answer["error"], answer


def test_a_request_replayed_from_another_node_is_refused(world: EncryptedImages) -> None:
    wrapped = world.wrapped_key(SECRET)
    body = world.key_request("node-1", wrapped, prepare_only=True)  # node-1's challenge, quoted by node-1's TPM
    _refused(world.send_release("node-2", body), "challenge was issued to node node-1, not node-2")
    _refused(world.send_release("node-1", body), "already used challenge")  # single use, even for its owner
    refusal = _records(world, "node-2", "rejected")[-1]
    assert refusal["codes"] == [Code.CHALLENGE.value] and refusal["image"] == SECRET


def test_a_request_with_a_copied_report_is_refused(world: EncryptedImages) -> None:
    world.stop_agent("node-2")  # else it would publish node-2's own (failing) report again
    world.publish("node-2", world.report_token("node-1"))
    time.sleep(1)  # the broker's watch
    answer = world.key_request("node-2", world.wrapped_key(SECRET))
    _refused(answer, "report bound to another host")
    assert _records(world, "node-2", "rejected")[-1]["codes"] == [Code.BOUND_ELSEWHERE.value]


def test_a_request_from_a_node_whose_report_expired_is_refused(world: EncryptedImages) -> None:
    token = world.sign_report("node-2", ttl=2)  # genuine, every level trusted, short-lived
    world.publish("node-2", token)
    time.sleep(2 + SKEW + 1)
    answer = world.key_request("node-2", world.wrapped_key(SECRET))
    _refused(answer, "trust report expired at")
    assert _records(world, "node-2", "rejected")[-1]["codes"] == [Code.EXPIRED.value]
    world._start_agent(world.hosts["node-2"])
    eventually(lambda: world.report_levels("node-2") == {**_all(True), "runtime": False}, "node-2's own report again")


def test_a_request_for_an_image_the_policy_does_not_grant_is_refused(world: EncryptedImages) -> None:
    """node-1 is trusted, but the policy covering the tenant image wants an asset tag it does not carry."""
    answer = world.key_request("node-1", world.wrapped_key(TENANT))
    _refused(answer, "asset tag tenant missing, TrustPolicy tenant-images requires other")
    refusal = _records(world, "node-1", "rejected")[-1]
    assert refusal["image"] == TENANT and refusal["policy"] == f"TrustPolicy {TENANT_POLICY}"


def test_trustctl_audit_shows_the_releases_and_refusals(world: EncryptedImages) -> None:
    trustctl = str(Path(sys.executable).parent / "trustctl")
    table = subprocess.run(
        [trustctl, "audit", "--file", str(world.audit_log)], capture_output=True, text=True, check=True
    ).stdout
    assert f"image {SECRET}" in table and f"image {TENANT}" in table
    assert "released" in table and "rejected" in table
    events = subprocess.run(
        [trustctl, "audit", "--kubeconfig", str(world.cp.kubeconfig), "--node", "node-2", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    from_events = [json.loads(line) for line in events.splitlines()]
    assert any(r["operation"] == "KEY_RELEASE" and r["decision"] == "rejected" for r in from_events)


# --- rotation and revocation -------------------------------------------------------------------------


def test_rotating_the_key_makes_old_wrapped_keys_useless(world: EncryptedImages) -> None:
    old = world.wrapped_key(SECRET)
    done = world.trustctl(
        "image",
        "rotate-key",
        SECRET,
        f"--kubeconfig={world.cp.kubeconfig}",
        f"--registry-ca={world.registry.ca_file}",  # type: ignore[union-attr]
    )
    assert done.returncode == 0, done.stderr
    assert world.wrapped_key(SECRET) != old
    _refused(world.key_request("node-1", old), "is not held by the broker (rotated or never registered)")
    world.delete_pod("secret-a")
    world.remove_image("node-1", SECRET, _diff_id(world))
    released = len(_records(world, "node-1", "released"))
    world.create_pod(world.pod("secret-a2", SECRET, node="node-1"))
    world.running("secret-a2")  # the image as rotated: pulled and decrypted again, with the new key
    assert len(_records(world, "node-1", "released")) == released + 1


def test_once_the_nodes_report_fails_its_next_pull_fails(world: EncryptedImages) -> None:
    world.tamper("node-1")
    eventually(lambda: (world.report_levels("node-1") or {}).get("runtime") is False, "node-1's report to fail")
    world.delete_pod("secret-a2")
    world.remove_image("node-1", SECRET, _diff_id(world))
    world.create_pod(world.pod("secret-a3", SECRET, node_name="node-1"))
    event = _pull_refused(world, "secret-a3")
    assert "level runtime not trusted" in event
    _never_decrypted(world, "node-1")
    world.delete_pod("secret-a3")
