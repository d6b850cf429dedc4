"""Smoke test: the real control plane runs here and schedules onto API-only nodes.

Needs the binaries from ``bash devkit/controlplane/build.sh`` (cached under
``~/.cache/trustgate``). Locally the test is skipped when they are not built; with
``CI=true`` it builds them and fails if that is impossible. ``TRUSTGATE_E2E_BUILD=1``
builds them locally too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devkit.controlplane import NOT_READY_TAINT_KEY, ControlPlane, k8s_version, recorded_running
from devkit.waiting import eventually

from ..harness import binaries

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = binaries()
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"), bin_dir=bin_dir)
    t0 = time.monotonic()
    cp.start()
    print(f"control plane started in {time.monotonic() - t0:.1f}s at {cp.server}")
    try:
        yield cp
    finally:
        cp.stop()
        assert not recorded_running(cp.workdir)


def _kubectl_json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl_run(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def nodes(control_plane: ControlPlane) -> list[str]:
    names = ["smoke-node-a", "smoke-node-b"]
    for name in names:
        node = control_plane.create_node(name, system_uuid=str(uuid.uuid4()), boot_id=str(uuid.uuid4()))
        assert not [t for t in node["spec"].get("taints") or [] if t["key"] == NOT_READY_TAINT_KEY]
    return names


def test_version_is_real(control_plane: ControlPlane) -> None:
    version = control_plane.client().get("/version")
    assert version["gitVersion"] == k8s_version()
    assert version["major"] == "1"


def test_nodes_are_registered_with_status(control_plane: ControlPlane, nodes: list[str]) -> None:
    for name in nodes:
        node = _kubectl_json(control_plane, "get", "node", name)
        assert node["status"]["nodeInfo"]["systemUUID"]
        assert node["status"]["nodeInfo"]["bootID"]
        assert node["status"]["allocatable"]["pods"] == "110"
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        assert not node["spec"].get("taints")


def test_plain_pod_is_bound_by_scheduler(control_plane: ControlPlane, nodes: list[str]) -> None:
    control_plane.kubectl_run("run", "smoke-pod", "--image=registry.k8s.io/pause:3.10", "--restart=Never")

    def bound() -> str | None:
        pod = _kubectl_json(control_plane, "get", "pod", "smoke-pod")
        node_name: str | None = pod["spec"].get("nodeName")
        return node_name

    node_name = eventually(bound, "smoke-pod to be bound")
    assert node_name in nodes
    events = _kubectl_json(control_plane, "get", "events", "--field-selector", "involvedObject.name=smoke-pod")
    assert any(e["reason"] == "Scheduled" for e in events["items"])


def test_deployment_pods_created_and_bound(control_plane: ControlPlane, nodes: list[str]) -> None:
    control_plane.kubectl_run("create", "deployment", "smoke-web", "--image=registry.k8s.io/pause:3.10", "--replicas=2")

    def all_bound() -> list[dict[str, Any]] | None:
        pods: list[dict[str, Any]] = _kubectl_json(control_plane, "get", "pods", "-l", "app=smoke-web")["items"]
        if len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods):
            return pods
        return None

    pods = eventually(all_bound, "2 smoke-web pods created by the ReplicaSet and bound")
    for pod in pods:
        owners = pod["metadata"].get("ownerReferences") or []
        assert [o["kind"] for o in owners] == ["ReplicaSet"]
        assert pod["spec"]["nodeName"] in nodes
        # the ServiceAccount admission plugin ran (kube-controller-manager created "default")
        assert pod["spec"]["serviceAccountName"] == "default"


def test_restart_apiserver_keeps_data(control_plane: ControlPlane, nodes: list[str]) -> None:
    old_pid = control_plane.pid("kube-apiserver")
    control_plane.restart_apiserver(grace=1.0)  # SIGKILL after 1 s: watches keep it from exiting sooner
    assert control_plane.pid("kube-apiserver") not in (None, old_pid)
    names = {n["metadata"]["name"] for n in _kubectl_json(control_plane, "get", "nodes")["items"]}
    assert set(nodes) <= names
