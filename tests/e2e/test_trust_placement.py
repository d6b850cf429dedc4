"""End to end on the real control plane: where trust-requiring pods land, and what is refused.

kube-scheduler (with the extender in its profile), kube-apiserver (calling the webhook),
kube-controller-manager (Deployments), etcd, the trustgate services under gunicorn over TLS, and
kubectl are all real. No kubelet runs, so a scheduled pod stays Pending with `spec.nodeName` set:
the assertions are on bindings.
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

from devkit.devstack import ISSUER, DevStack
from devkit.factories import trust_policy as policy
from devkit.fleet import BAD_SIGNATURE, COPIED, EXPIRED, LEVEL_FAILS, NO_REPORT, REBOOTED, VALID, Fleet
from devkit.waiting import eventually
from trustgate.audit.reader import read_records

pytestmark = pytest.mark.e2e

PAUSE = "registry.k8s.io/pause:3.10"
SECRET_IMAGE = "registry.example/secure/model:1.0"
UNTRUSTED = ("none", "bad-signature", "expired", "copied", "rebooted", "level-fails")


@pytest.fixture(scope="module")
def fleet(stack: DevStack) -> Iterator[Fleet]:
    fleet = Fleet(stack, ISSUER)
    fleet.add("trusted-us", VALID, {"country": "US", "tenant": "acme"})
    fleet.add("trusted-de", VALID, {"country": "DE", "tenant": "acme"})
    for name, kind in zip(UNTRUSTED, (NO_REPORT, BAD_SIGNATURE, EXPIRED, COPIED, REBOOTED, LEVEL_FAILS), strict=True):
        fleet.add(name, kind, {"country": "US"})
    for namespace, labels in (("secure", {"tier": "secure"}), ("fr-only", {}), ("apps", {})):
        apply(stack, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
    apply(stack, policy("secure-ns", namespaceSelector={"matchLabels": {"tier": "secure"}}))
    apply(
        stack,
        policy(
            "fr-only",
            namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "fr-only"}},
            requiredAssetTags={"country": "FR"},
        ),
    )
    apply(stack, policy("encrypted-models", encryptedImages=["registry.example/secure/*"]))
    # Ready when every service has seen every node: the label controller labelled the trusted ones,
    # and the extender (asked directly, as the scheduler would) passes exactly those.
    eventually(lambda: labels_of(stack, "trusted-de").get("trustgate.dev/trusted") == "true", "trusted labels")
    everything = ["trusted-us", "trusted-de", *UNTRUSTED]
    eventually(
        lambda: extender_filter(stack, trusted_pod(), everything)[0] == ["trusted-us", "trusted-de"],
        "the extender to see the fleet",
    )
    yield fleet
    fleet.remove()


# --- helpers ------------------------------------------------------------------------------------


def kubectl(stack: DevStack, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return stack.kubectl(*args, check=False, input=input)


def apply(stack: DevStack, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    result = kubectl(stack, "apply", "-f", "-", input=json.dumps(manifest))
    assert result.returncode == 0, result.stderr
    return result


def pod(name: str, namespace: str = "apps", image: str = PAUSE, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": image}], "terminationGracePeriodSeconds": 0, **spec},
    }


def trusted_pod(name: str = "probe", **spec: Any) -> dict[str, Any]:
    return pod(name, nodeSelector={"trustgate.dev/trusted": "true"}, **spec)


def asset_affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
    terms = [{"matchExpressions": list(expressions)}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def get(stack: DevStack, path: str) -> Any:
    return stack.cp.client().get(path)


def labels_of(stack: DevStack, node: str) -> dict[str, str]:
    return get(stack, f"/api/v1/nodes/{node}")["metadata"].get("labels") or {}


def bound_node(stack: DevStack, namespace: str, name: str) -> str | None:
    return get(stack, f"/api/v1/namespaces/{namespace}/pods/{name}")["spec"].get("nodeName")


def extender_filter(stack: DevStack, pod: dict[str, Any], names: list[str]) -> tuple[list[str], dict[str, str]]:
    return stack.filter(pod, names)


def events(stack: DevStack, namespace: str, reason: str) -> list[dict[str, Any]]:
    items = get(stack, f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in items if e.get("reason") == reason]


def dry_run_refused(stack: DevStack, manifest: dict[str, Any]) -> str | None:
    """The webhook's refusal of a server-side dry-run create, or None when it is admitted."""
    result = kubectl(stack, "create", "--dry-run=server", "-f", "-", input=json.dumps(manifest))
    return result.stderr if result.returncode else None


# --- 1. trust-requiring Deployments land only on nodes with valid reports --------------------------


@pytest.mark.parametrize(
    ("namespace", "selector"),
    [("secure", {}), ("apps", {"trustgate.dev/trusted": "true"})],
    ids=["by-TrustPolicy", "by-nodeSelector"],
)
def test_a_trust_requiring_deployment_lands_only_on_nodes_with_valid_reports(stack, fleet, namespace, selector):
    name = f"web-{namespace}"
    template = pod(name, namespace=namespace, nodeSelector=selector) if selector else pod(name, namespace)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 8,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template["metadata"] | {"name": None}, "spec": template["spec"]},
        },
    }
    deployment["spec"]["template"]["metadata"].pop("name")
    apply(stack, deployment)

    def placements() -> dict[str, str] | None:
        pods = get(stack, f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3D{name}")["items"]
        bound = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}
        return bound if len(bound) == 8 and all(bound.values()) else None

    bound = eventually(placements, f"8 pods of {name} bound")
    assert set(bound.values()) <= {"trusted-us", "trusted-de"}, bound


def test_the_extender_names_the_reason_of_every_untrusted_node(stack, fleet):
    passed, failed = extender_filter(stack, trusted_pod(), ["trusted-us", *UNTRUSTED, "ghost"])
    assert passed == ["trusted-us"]
    assert failed["none"] == "no trust report"
    assert "signature does not verify" in failed["bad-signature"]
    assert "trust report expired at" in failed["expired"]
    assert "report bound to another host" in failed["copied"]
    assert "boot id differs" in failed["rebooted"]
    assert failed["level-fails"] == "level kernel not trusted"
    assert failed["ghost"] == "node not found in the cluster"


# --- 2. asset-tag affinity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"key": "asset.trustgate.dev/country", "operator": "In", "values": ["US"]}, ["trusted-us"]),
        ({"key": "asset.trustgate.dev/country", "operator": "NotIn", "values": ["US"]}, ["trusted-de"]),
        ({"key": "asset.trustgate.dev/country", "operator": "Exists"}, ["trusted-us", "trusted-de"]),
    ],
    ids=["In", "NotIn", "Exists"],
)
def test_asset_tag_affinity_picks_exactly_the_matching_nodes(stack, fleet, expression, expected):
    name = f"tagged-{expression['operator'].lower()}"
    manifest = pod(name, affinity=asset_affinity(expression))
    everything = ["trusted-us", "trusted-de", *UNTRUSTED]
    assert extender_filter(stack, manifest, everything)[0] == expected
    apply(stack, manifest)
    assert eventually(lambda: bound_node(stack, "apps", name), f"{name} bound") in expected


def test_a_pod_no_node_can_satisfy_stays_pending_with_the_extenders_reasons(stack, fleet):
    apply(stack, pod("needs-fr", namespace="fr-only"))

    def failed_scheduling() -> str | None:
        found = [e["message"] for e in events(stack, "fr-only", "FailedScheduling")]
        return found[-1] if found else None

    message = eventually(failed_scheduling, "a FailedScheduling event")
    assert bound_node(stack, "fr-only", "needs-fr") is None
    assert "asset tag country=US not in [FR]" in message
    assert "no trust report" in message


# --- 3. nodeName cannot bypass -------------------------------------------------------------------------


def test_kubectl_apply_of_a_trust_pod_pinned_to_an_untrusted_node_is_refused_and_audited(stack, fleet):
    result = kubectl(stack, "apply", "-f", "-", input=json.dumps(trusted_pod("pinned-bad", nodeName="expired")))
    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert "apps/pinned-bad" in result.stderr and "expired" in result.stderr
    assert "trust report expired at" in result.stderr

    def audited() -> list[Any]:
        return [r for r in read_records(stack.audit_log) if r.pod == "pinned-bad"]

    (record,) = eventually(audited, "an audit record")
    assert record.decision == "rejected" and record.node == "expired"
    event = eventually(lambda: events(stack, "apps", "TrustPolicyViolation"), "a TrustPolicyViolation event")
    assert any("expired" in e["message"] for e in event)
    trustctl = str(Path(sys.executable).parent / "trustctl")
    listing = subprocess.run(
        [trustctl, "audit", "--file", str(stack.audit_log)], capture_output=True, text=True, check=True
    )
    assert "pinned-bad" in listing.stdout


def test_the_same_pod_pinned_to_a_trusted_node_is_admitted(stack, fleet):
    apply(stack, trusted_pod("pinned-good", nodeName="trusted-us"))
    assert bound_node(stack, "apps", "pinned-good") == "trusted-us"


# --- 4. a second scheduler's Binding -------------------------------------------------------------------


def test_a_binding_to_an_untrusted_node_is_refused_and_to_a_trusted_one_accepted(stack, fleet):
    apply(stack, trusted_pod("second-sched", schedulerName="another-scheduler"))
    client = stack.cp.client()
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "second-sched", "namespace": "apps"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "copied"},
    }
    with pytest.raises(Exception) as refused:
        client.create("/api/v1/namespaces/apps/pods/second-sched/binding", binding)
    assert getattr(refused.value, "status", None) == 403
    assert "report bound to another host" in str(getattr(refused.value, "body", refused.value))
    binding["target"]["name"] = "trusted-de"
    client.create("/api/v1/namespaces/apps/pods/second-sched/binding", binding)
    assert bound_node(stack, "apps", "second-sched") == "trusted-de"


# --- 5. encrypted images ---------------------------------------------------------------------------------


def test_an_encrypted_image_pod_lands_only_on_trusted_nodes(stack, fleet):
    apply(stack, pod("model", image=SECRET_IMAGE))
    assert eventually(lambda: bound_node(stack, "apps", "model"), "model bound") in ("trusted-us", "trusted-de")


def test_an_encrypted_image_pod_pinned_to_an_untrusted_node_is_refused(stack, fleet):
    refusal = dry_run_refused(stack, pod("model-pinned", image=SECRET_IMAGE, nodeName="level-fails"))
    assert refusal and "level kernel not trusted" in refusal and "encrypted-models" in refusal


def test_an_ephemeral_container_with_an_encrypted_image_on_an_untrusted_node_is_refused(stack, fleet):
    apply(stack, pod("plain-on-untrusted", nodeName="none"))
    result = kubectl(stack, "debug", "-n", "apps", "plain-on-untrusted", f"--image={SECRET_IMAGE}", "--container=dbg")
    assert result.returncode != 0
    assert "no trust report" in result.stderr
    plain = kubectl(stack, "debug", "-n", "apps", "plain-on-untrusted", f"--image={PAUSE}", "--container=dbg2")
    assert plain.returncode == 0, plain.stderr


# --- 6. revocation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_revoking_a_report_keeps_the_next_pods_off_the_node(stack, fleet, how):
    node = f"revoke-{how}"
    fleet.add(node, VALID)
    probe = trusted_pod(f"probe-{how}", nodeName=node)
    eventually(lambda: dry_run_refused(stack, probe) is None, f"{node} admitted while trusted")
    written = time.monotonic()
    if how == "replaced":
        fleet.publish(node, LEVEL_FAILS)
    else:
        kubectl(stack, "delete", "nodetrustreport", node)
    refusal = eventually(lambda: dry_run_refused(stack, probe), f"the first refusal on {node}", interval=0.01)
    webhook_delay = time.monotonic() - written
    passed, _ = extender_filter(stack, trusted_pod(), [node])
    extender_delay = time.monotonic() - written
    print(
        f"revocation by {how}: webhook refused after {webhook_delay * 1000:.0f} ms; extender {passed=} "
        f"checked at {extender_delay * 1000:.0f} ms"
    )
    assert passed == []
    assert ("level kernel not trusted" if how == "replaced" else "no trust report") in refusal


# --- 7. everything else is untouched; the webhook fails closed ----------------------------------------------


def test_pods_that_need_no_trust_schedule_anywhere(stack, fleet):
    apply(stack, pod("plain"))
    assert eventually(lambda: bound_node(stack, "apps", "plain"), "plain bound")
    apply(stack, pod("plain-pinned", nodeName="none"))
    assert bound_node(stack, "apps", "plain-pinned") == "none"


def test_with_the_webhook_down_trust_pods_are_refused_and_kube_system_is_unaffected(stack, fleet):
    stack.crash_service("webhook")
    try:
        result = kubectl(stack, "apply", "-f", "-", input=json.dumps(trusted_pod("while-down", nodeName="trusted-us")))
        assert result.returncode != 0, result.stdout
        assert "failed calling webhook" in result.stderr, result.stderr
        apply(stack, pod("system-ok", namespace="kube-system", nodeName="none"))
        assert bound_node(stack, "kube-system", "system-ok") == "none"
    finally:
        stack.start_service("webhook")
