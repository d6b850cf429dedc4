"""Encrypted images on real nodes: a layer key leaves the key broker only for a node that the TrustPolicy
covering the image trusts, wrapped to that node's attested session, whatever put the pod there.

Two real nodes (kubelet, containerd 2.4 decrypting through trustgate-layer-decoder and
trustgate-keyprovider), a local registry, the attestation authority with its key broker, and per node
an emulated TPM on the node's own loopback with its trust agent (devkit.encrypted). node-a is trusted;
node-b's runtime measurement (PCR 10) is tampered with from the start, so its report fails the
policy. The image is encrypted with `trustctl image encrypt`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.encrypted import BRIDGE, REGISTRY_PORT, EncryptedImages
from devkit.nodes.kit import BUILD_HINT, NodeKit, cached_kit, find_kit
from devkit.nodes.leftovers import leftovers
from devkit.registry import missing as registry_missing
from devkit.waiting import eventually

from ..prerequisites import in_ci, require_tpm_tools, unavailable
from .harness import binaries
from .test_real_nodes import require_host

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


def node_kit() -> NodeKit:
    if in_ci() or os.environ.get("TRUSTGATE_E2E_BUILD") == "1":
        try:
            return find_kit(build=True)
        except Exception as error:
            pytest.fail(f"cannot build the node binaries and images ({error}); try: {BUILD_HINT}")
    kit = cached_kit()
    if kit is None:
        unavailable(f"worker node binaries and images are not built; build: {BUILD_HINT}")
    return kit


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
        cluster.tamper("node-b")  # node-b's runtime changed: its next attestation fails the runtime level
        eventually(lambda: cluster.report_levels("node-b") == {**_all(True), "runtime": False}, "node-b failing")
        cluster.apply(policy(POLICY, [f"{REGISTRY}/secret/*"]))
        cluster.apply(policy(TENANT_POLICY, [f"{REGISTRY}/tenant/*"], requiredAssetTags={"tenant": "other"}))
        cluster.push_image(PLAIN, marker=MARKER)
        cluster.push_image(TENANT_PLAIN, marker="tenant")
        cluster.encrypt(PLAIN, SECRET, POLICY)
        cluster.encrypt(TENANT_PLAIN, TENANT, TENANT_POLICY)
        yield cluster
    finally:
        errors = []
        try:
            cluster.down()
        except Exception as error:
            errors.append(str(error))
        left = leftovers(cluster.stack.net, cluster.names, kit, work / "cluster")
        assert not errors and not left, f"teardown errors: {errors}; left on the host: {left}"


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

    return eventually(refused, f"pod {pod}'s pull to fail with the broker's reason", timeout=120, interval=0.5)


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
    world.create_pod(world.pod("secret-a", SECRET, node="node-a"))
    seconds = world.running("secret-a")
    logs = world.kubectl("logs", "secret-a").stdout
    assert MARKER in logs
    [release] = _records(world, "node-a", "released")
    assert release["image"] == SECRET and release["policy"] == f"TrustPolicy {POLICY}"
    assert release["user"] == "CN=system:node:node-a, O=system:nodes"
    print(f"\nencrypted pod created to Running on node-a in {seconds:.2f}s")
