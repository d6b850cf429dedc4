"""Two real worker nodes (containerd, kubelet, kube-proxy) on this machine, on the real control plane.

Each node runs in its own network, mount and UTS namespaces with its own systemUUID and bootID
(devkit/nodes). The tests show that both nodes become Ready reporting the identity they were
given, that pods run on each, that a ClusterIP Service answers from the host and from a pod on
the other node, that the apiserver reaches kubelets and pods, that a reboot gives a node a new
bootID, and that an API-only node in the same cluster stays Ready while the node lifecycle
controller runs. Teardown checks that nothing is left on the host.
"""

from __future__ import annotations

import calendar
import ipaddress
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from devkit.controlplane import ControlPlane
from devkit.nodes.kit import NodeKit
from devkit.nodes.leftovers import leftovers
from devkit.nodes.namespaces import Identity
from devkit.nodes.network import original_sysctls
from devkit.nodes.node import WorkerNode, node_condition
from devkit.nodes.procs import tail
from devkit.nodes.stack import NodeStack
from devkit.waiting import eventually

from .harness import binaries, node_kit, require_host, tear_down

pytestmark = pytest.mark.e2e

NODES = ("node-a", "node-b")
API_ONLY = "api-only"
NAMESPACE = "default"


@dataclass
class RealCluster:
    stack: NodeStack
    kit: NodeKit

    @property
    def cp(self) -> ControlPlane:
        return cast(ControlPlane, self.stack.cp)

    @property
    def nodes(self) -> dict[str, WorkerNode]:
        return self.stack.nodes

    @property
    def identities(self) -> dict[str, Identity]:
        return self.stack.identities

    @property
    def timings(self) -> dict[str, float]:
        return self.stack.timings

    def kubectl(self, *args: str, timeout: float = 60.0) -> str:
        return self.cp.kubectl_run(*args, timeout=timeout).stdout

    def get(self, path: str) -> Any:
        return self.cp.client().get(path)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    require_host()
    bin_dir = binaries()
    kit = node_kit()
    work = tmp_path_factory.mktemp("real-nodes")
    sysctls_before = original_sysctls()
    stack = NodeStack(work, NODES, kit, bin_dir=bin_dir, node_labels={"trustgate.test/real": "true"})

    def api_only_node(cp: ControlPlane) -> None:
        cp.create_node(API_ONLY, str(uuid.uuid4()), str(uuid.uuid4()))

    def left_on_the_host() -> list[str]:
        found = leftovers(stack.net, NODES, kit, work)
        return found + [
            f"sysctl {k} = {v} (was {sysctls_before[k]})"
            for k, v in host_sysctls(sysctls_before).items()
            if v != sysctls_before[k]
        ]

    try:
        yield RealCluster(stack.up(after_control_plane=api_only_node), kit)
    finally:
        tear_down(stack.down, left_on_the_host)


def explain(real: RealCluster, pod_name: str) -> str:
    """A pod's status, its events and its node's kubelet log, for a failure message."""
    status = json.dumps(real.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}").get("status"), indent=1)
    events = real.cp.kubectl_run("get", "events", "--field-selector", f"involvedObject.name={pod_name}", check=False)
    node = real.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}")["spec"].get("nodeName")
    kubelet = tail(real.nodes[node].logs()["kubelet"]) if node in real.nodes else "(not scheduled)"
    return f"status: {status[:3000]}\nevents:\n{events.stdout}\nkubelet log of {node}:\n{kubelet}"


def host_sysctls(keys: dict[str, str]) -> dict[str, str]:
    return {k: Path("/proc/sys", k).read_text().strip() for k in keys}


def pod(name: str, node: str, command: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "IMAGE",
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", command],
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                }
            ],
        },
    }


# busybox 1.35's wget crashes with its own -T, so the applet timeout bounds it.
FETCH = ("busybox", "timeout", "5", "wget", "-q", "-O", "-")
WEB = 'echo "hello from $NODE" > /www/index.html; echo serving; exec httpd -f -p 8080 -h /www'


@pytest.fixture(scope="module")
def pods(real: RealCluster) -> dict[str, dict[str, Any]]:
    """A web server pod on each node, a client pod on node-b, and a Service in front of web-a."""
    client = real.cp.client()
    created = {}
    for name, node, command in (
        ("web-a", "node-a", WEB),
        ("web-b", "node-b", WEB),
        ("client-b", "node-b", "sleep 3600"),
    ):
        body = pod(name, node, command)
        body["spec"]["containers"][0]["image"] = real.kit.test_image.ref
        created[name] = (time.monotonic(), client.create(f"/api/v1/namespaces/{NAMESPACE}/pods", body))
    client.create(
        f"/api/v1/namespaces/{NAMESPACE}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web-a"},
            "spec": {"selector": {"app": "web-a"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    running = {}
    for name, (t0, _) in created.items():

        def is_running(name: str = name) -> dict[str, Any] | None:
            p = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
            return p if p["status"].get("phase") == "Running" else None

        try:
            running[name] = eventually(is_running, f"pod {name} to run", timeout=120, interval=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{explain(real, name)}") from None
        real.timings[f"pod_{name}_create_to_running"] = time.monotonic() - t0
    return running


def test_nodes_ready_with_their_own_identity(real: RealCluster) -> None:
    infos = {}
    for name in NODES:
        node = real.get(f"/api/v1/nodes/{name}")
        assert node_condition(node) == "True"
        info = node["status"]["nodeInfo"]
        assert info["systemUUID"] == real.identities[name].system_uuid
        assert info["bootID"] == real.identities[name].boot_id
        assert info["machineID"] == real.identities[name].machine_id
        assert info["kubeletVersion"] == real.kit.k8s_version
        assert info["containerRuntimeVersion"] == f"containerd://{real.kit.containerd_version.lstrip('v')}"
        assert {"type": "InternalIP", "address": real.nodes[name].ip} in node["status"]["addresses"]
        assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")]
        infos[name] = info
    a, b = (infos[n] for n in NODES)
    assert a["systemUUID"] != b["systemUUID"] and a["bootID"] != b["bootID"]
    host_boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert host_boot_id not in (a["bootID"], b["bootID"])
    print("\ntimings:", json.dumps({n: real.nodes[n].timings for n in NODES} | real.timings, indent=1))


def test_node_processes_see_the_node_identity(real: RealCluster) -> None:
    """What a trust agent started on the node would read."""
    for name in NODES:
        argv = real.nodes[name].enter(["cat", "/sys/class/dmi/id/product_uuid", "/proc/sys/kernel/random/boot_id"])
        seen = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        assert seen == [real.identities[name].system_uuid, real.identities[name].boot_id]


def test_a_pod_runs_on_each_node(real: RealCluster, pods: dict[str, dict[str, Any]]) -> None:
    for name, node in (("web-a", "node-a"), ("web-b", "node-b"), ("client-b", "node-b")):
        p = pods[name]
        assert p["spec"]["nodeName"] == node
        ip = p["status"]["podIP"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(real.nodes[node].pod_cidr)
    print("\npod timings:", json.dumps(real.timings, indent=1))


def test_cluster_ip_answers_from_the_host(real: RealCluster, pods: dict[str, dict[str, Any]]) -> None:
    svc = real.get(f"/api/v1/namespaces/{NAMESPACE}/services/web-a")
    url = f"http://{svc['spec']['clusterIP']}/"

    def answer() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    assert eventually(answer, f"{url} from the host", timeout=60, interval=0.5).strip() == "hello from node-a"


def test_cluster_ip_answers_from_a_pod_on_the_other_node(real: RealCluster, pods: dict[str, dict[str, Any]]) -> None:
    svc = real.get(f"/api/v1/namespaces/{NAMESPACE}/services/web-a")
    url = f"http://{svc['spec']['clusterIP']}/"

    def answer() -> str | None:
        done = real.cp.kubectl_run("exec", "client-b", "--", *FETCH, url, check=False)
        return done.stdout if done.returncode == 0 else None

    assert eventually(answer, f"{url} from client-b on node-b", timeout=60, interval=1).strip() == "hello from node-a"
    pod_ip = pods["web-b"]["status"]["podIP"]
    out = real.kubectl("exec", "client-b", "--", *FETCH, f"http://{pod_ip}:8080/")
    assert out.strip() == "hello from node-b"


def test_apiserver_reaches_kubelets_and_pods(real: RealCluster, pods: dict[str, dict[str, Any]]) -> None:
    assert "serving" in real.kubectl("logs", "web-a")  # apiserver -> kubelet on node-a
    for name, node in (("web-a", "node-a"), ("web-b", "node-b")):  # apiserver -> pod IP
        body = real.cp.client().request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}:8080/proxy/")
        assert str(body).strip() == f"hello from {node}"


def test_reboot_gives_the_node_a_new_boot_id(real: RealCluster, pods: dict[str, dict[str, Any]]) -> None:
    """How a test makes a node's trust report stale: the node comes back with another bootID."""
    node = real.nodes["node-b"]
    before = real.get("/api/v1/nodes/node-b")["status"]["nodeInfo"]
    new_boot_id = str(uuid.uuid4())
    node.reboot(new_boot_id)
    after = real.get("/api/v1/nodes/node-b")["status"]["nodeInfo"]
    assert after["bootID"] == new_boot_id != before["bootID"]
    assert after["systemUUID"] == before["systemUUID"]
    assert real.get("/api/v1/nodes/node-a")["status"]["nodeInfo"]["bootID"] == real.identities["node-a"].boot_id
    seen = subprocess.run(node.enter(["cat", "/proc/sys/kernel/random/boot_id"]), capture_output=True, text=True)
    assert seen.stdout.strip() == new_boot_id
    print(f"\nnode-b rebooted to Ready in {node.timings['reboot_to_ready']:.1f}s")


#: kube-controller-manager's default --node-monitor-grace-period, plus its 5 s monitor period.
DEFAULT_GRACE = 50 + 5


def test_api_only_node_stays_ready_beside_real_ones(real: RealCluster, pods: dict[str, dict[str, Any]]) -> None:
    """The node lifecycle controller runs (it took the not-ready taint off the real nodes) and,
    with its grace period stretched, leaves the API-only node (which renews no Lease) alone
    past the default grace period."""
    node = real.get(f"/api/v1/nodes/{API_ONLY}")
    created = calendar.timegm(time.strptime(node["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    time.sleep(max(0.0, created + DEFAULT_GRACE + 5 - time.time()))
    node = real.get(f"/api/v1/nodes/{API_ONLY}")
    assert node_condition(node) == "True"
    assert not node["spec"].get("taints")
    for name in NODES:
        real_node = real.get(f"/api/v1/nodes/{name}")
        assert node_condition(real_node) == "True"
        assert not real_node["spec"].get("taints")
    print(f"\nAPI-only node {API_ONLY} still Ready and untainted {time.time() - created:.0f}s after it was created")
