"""The holes a security review found, each shown closed on the real control plane.

- a bound pod changed into a trust-requiring one (an image swapped, a label that a policy selects);
- a caller other than kube-apiserver asking the webhook for decisions (mTLS);
- a pinned pod in a namespace created a moment ago with a policy's labels;
- the controller changing node fields other than trustgate's labels (ValidatingAdmissionPolicy);
- a malformed TrustPolicy (refused by the API server; plain pods keep scheduling).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devkit.devstack import ISSUER, DevStack
from devkit.factories import trust_policy as policy
from devkit.fleet import NO_REPORT, VALID, Fleet
from devkit.tcp_proxy import TcpProxy
from devkit.waiting import eventually

pytestmark = pytest.mark.e2e

PAUSE = "registry.k8s.io/pause:3.10"
SECRET_IMAGE = "registry.example/secret/db:1"


def apply(stack: DevStack, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return stack.kubectl("apply", "-f", "-", check=False, input=json.dumps(manifest))


def pod(name: str, namespace: str, node: str | None = None, image: str = PAUSE, **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": image}],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def scoped(stack: DevStack, text: str) -> None:
    """Until the controller has written a webhook configuration that mentions `text` (a policy's rule)."""
    eventually(lambda: text in json.dumps(stack.webhooks()), f"the webhooks scoped for {text}", 30)


def enforced(stack: DevStack, manifest: dict[str, Any]) -> None:
    """Until the API server refuses `manifest` (a dry run): it has loaded the webhook configuration."""
    eventually(
        lambda: (
            stack.kubectl("create", "--dry-run=server", "-f", "-", check=False, input=json.dumps(manifest)).returncode
        ),
        "the API server to call the newly scoped webhook",
        30,
    )


@pytest.fixture(scope="module")
def nodes(stack: DevStack) -> Iterator[Fleet]:
    fleet = Fleet(stack, ISSUER)
    fleet.add("holes-trusted", VALID)
    fleet.add("holes-bare", NO_REPORT)
    stack.kubectl("create", "namespace", "holes", check=False)
    yield fleet
    fleet.remove()


# --- 1. a running pod changed into a trust-requiring one ---------------------------------------------


def test_a_bound_pod_cannot_swap_in_an_encrypted_image_on_an_untrusted_node(stack: DevStack, nodes: Fleet) -> None:
    apply(stack, policy("holes-encrypted", encryptedImages=["registry.example/secret/*"]))
    scoped(stack, "registry\\\\.example")
    name = f"swap-{uuid.uuid4().hex[:6]}"
    assert apply(stack, pod(name, "holes", node="holes-bare")).returncode == 0  # plain: fine anywhere
    patch = {"spec": {"containers": [{"name": "main", "image": SECRET_IMAGE}]}}
    result = stack.kubectl("patch", "pod", "-n", "holes", name, "-p", json.dumps(patch), check=False)
    assert result.returncode != 0 and "TrustPolicy holes-encrypted" in result.stderr, result.stderr
    assert "no trust report" in result.stderr
    result = stack.kubectl("get", "pod", "-n", "holes", name, "-o", "jsonpath={.spec.containers[0].image}")
    assert result.stdout == PAUSE


def test_a_bound_pod_cannot_take_a_label_a_policy_selects_on_an_untrusted_node(stack: DevStack, nodes: Fleet) -> None:
    apply(stack, policy("holes-tier", podSelector={"matchLabels": {"holes-tier": "secret"}}))
    scoped(stack, "holes-tier")
    name = f"relabel-{uuid.uuid4().hex[:6]}"
    assert apply(stack, pod(name, "holes", node="holes-bare")).returncode == 0
    result = stack.kubectl("label", "pod", "-n", "holes", name, "holes-tier=secret", check=False)
    assert result.returncode != 0 and "TrustPolicy holes-tier" in result.stderr, result.stderr
    on_trusted = f"trusted-{uuid.uuid4().hex[:6]}"
    assert apply(stack, pod(on_trusted, "holes", node="holes-trusted")).returncode == 0
    assert stack.kubectl("label", "pod", "-n", "holes", on_trusted, "holes-tier=secret", check=False).returncode == 0


# --- 4. only kube-apiserver may ask the webhook ------------------------------------------------------


def test_a_caller_without_the_api_servers_client_certificate_gets_no_decision_and_leaves_no_record(
    stack: DevStack, nodes: Fleet
) -> None:
    before = stack.audit_log.read_text() if stack.audit_log.exists() else ""
    forged_pod = pod("x" * 200_000, "payments", node="holes-bare")  # a huge name, a made-up user
    forged_pod["spec"]["nodeSelector"] = {"trustgate.dev/trusted": "true"}
    forged = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "payments",
            "operation": "CREATE",
            "userInfo": {"username": "made-up"},
            "object": forged_pod,
        },
    }
    context = ssl.create_default_context(cafile=str(stack.ca_file))  # the server's CA, but no client certificate
    request = urllib.request.Request(
        f"{stack.url('webhook')}/validate",
        data=json.dumps(forged).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=context, timeout=5)
    assert refused.value.code == 401
    time.sleep(0.5)
    after = stack.audit_log.read_text() if stack.audit_log.exists() else ""
    assert after == before  # nothing recorded
    # ... while kube-apiserver, with its client certificate, gets decisions: a pinned trust pod is refused
    trust = pod(f"pinned-{uuid.uuid4().hex[:6]}", "holes", node="holes-bare")
    trust["spec"]["nodeSelector"] = {"trustgate.dev/trusted": "true"}
    result = apply(stack, trust)
    assert result.returncode != 0 and 'admission webhook "labels.pods.trustgate.dev" denied' in result.stderr


# --- 7. a namespace the cache has not seen yet -------------------------------------------------------


@pytest.fixture
def slow_webhook_watches(stack: DevStack) -> Iterator[None]:
    """The webhook's connection to the API server made slow: a new namespace reaches its cache late."""
    proxy = TcpProxy(("127.0.0.1", stack.cp.ports.apiserver), delay=0.25).start()
    stack.stop_service("webhook")
    stack.servers["webhook"] = f"https://127.0.0.1:{proxy.port}"
    stack.start_service("webhook")
    try:
        yield
    finally:
        stack.stop_service("webhook")
        stack.servers.pop("webhook")
        proxy.stop()
        stack.start_service("webhook")


def test_a_pinned_pod_in_a_namespace_created_a_moment_ago_with_a_policys_labels_is_judged(
    stack: DevStack, nodes: Fleet, slow_webhook_watches: None
) -> None:
    apply(stack, policy("holes-pci", namespaceSelector={"matchLabels": {"holes-compliance": "pci"}}))
    scoped(stack, "holes-compliance")
    probe = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "holes-probe", "labels": {"holes-compliance": "pci"}},
    }
    apply(stack, probe)
    enforced(stack, pod("probe", "holes-probe", node="holes-bare"))  # the API server has the new webhook
    outcomes = []
    for attempt in range(5):  # create the namespace and the pod back to back, before any watch delivers it
        namespace = f"holes-fresh-{uuid.uuid4().hex[:6]}"
        manifests = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"holes-compliance": "pci"}},
            },
            pod(f"db-{attempt}", namespace, node="holes-bare"),
        ]
        result = stack.kubectl(
            "create", "-f", "-", check=False, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        )
        outcomes.append(result.stderr.strip() or "admitted")
        stack.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    # judged from a live read of the namespace, or refused as undecidable (fail closed): never admitted
    judged = [o for o in outcomes if "TrustPolicy holes-pci" in o and "no trust report" in o]
    assert all(o in judged or "fail closed" in o for o in outcomes) and judged, outcomes


# --- 8. the controller may change trustgate's labels and nothing else --------------------------------


def test_the_controllers_node_patches_are_limited_to_trustgates_labels(stack: DevStack, nodes: Fleet) -> None:
    controller = ["--kubeconfig", str(stack.workdir / "trustgate-controller.kubeconfig")]

    def patch(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(stack.cp.kubectl), *controller, "patch", "node", "holes-bare", "-p", json.dumps(body)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    owned = patch({"metadata": {"labels": {"asset.trustgate.dev/test": "x"}}})
    assert owned.returncode == 0, owned.stderr
    for body in (
        {"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}},
        {"metadata": {"labels": {"kubernetes.io/hostname": "elsewhere"}}},
        {"metadata": {"annotations": {"note": "x"}}},
        {"spec": {"unschedulable": True}},
        {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}},
    ):
        result = patch(body)
        assert result.returncode != 0 and "trustgate-node-labels" in result.stderr, (body, result.stderr)
    patch({"metadata": {"labels": {"asset.trustgate.dev/test": None}}})


# --- 13: a malformed policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}, "need at least one value"),
        (
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}},
            "take no values",
        ),
        ({"requiredLevels": ["bios"]}, "Unsupported value"),
        ({"enforcement": "Block"}, "Unsupported value"),
        ({"encryptedImages": ["registry.example/[secret"]}, "classes must be closed"),
        ({"requiredAssetTags": {"bad key": "x"}}, "asset tag names"),
        ({"namespaceSelector": {"matchLabels": {"env": "has space"}}}, "should match"),
    ],
)
def test_a_malformed_policy_is_refused_by_the_api_server(stack: DevStack, spec: dict[str, Any], message: str) -> None:
    result = apply(stack, policy(f"holes-bad-{uuid.uuid4().hex[:6]}", **spec))
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_plain_pods_keep_scheduling_beside_malformed_policies(stack: DevStack, nodes: Fleet) -> None:
    name = f"plain-{uuid.uuid4().hex[:6]}"
    assert apply(stack, pod(name, "holes")).returncode == 0
    bound = eventually(
        lambda: json.loads(stack.kubectl("get", "pod", "-n", "holes", name, "-o", "json").stdout)["spec"].get(
            "nodeName"
        ),
        "the plain pod scheduled",
        60,
    )
    assert bound
