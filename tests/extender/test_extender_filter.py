"""POST /filter as kube-scheduler calls it: both cache modes, both key casings, every failure reason."""

from __future__ import annotations

import copy
import json

import pytest

from devkit.factories import pod_object, trust_policy
from extender.filter import NOT_SYNCED

from .extender_support import NOW, TRUSTED, World, names_args, nodes_args, trust_pod

UUID = "4c4c4544-dead-beef-0000-000000000000"


def post(client, args, path="/filter"):
    response = client.post(path, data=json.dumps(args), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.fixture
def failing_world(world: World) -> World:
    """One node passing and one failing for each reason."""
    world.node("good", asset_tags={"country": "US"})
    world.node("no-report", report=False)
    world.node("expired", now=NOW - 7200, ttl=3600)
    world.node("other-host", system_uuid=UUID)
    world.node("rebooted", boot_id="b00700deadbeef")
    world.node("kernel", levels={"kernel": False})
    world.node("eu", asset_tags={"country": "EU"})
    world.forged("forged")
    return world


EXPECTED_REASONS = {
    "no-report": "no trust report",
    "expired": "trust report expired at ",
    "other-host": f"report bound to another host (system UUID {UUID}",
    "rebooted": "report predates the node's last reboot (boot id differs)",
    "kernel": "level kernel not trusted",
    "forged": "trust report invalid: signature does not verify",
    "unknown": "node not found in the cluster",
}
ALL = ["good", "no-report", "expired", "other-host", "rebooted", "kernel", "eu", "forged"]


def test_node_names_mode_filters_with_a_reason_per_node(failing_world: World) -> None:
    result = post(failing_world.client(), names_args(trust_pod(), [*ALL, "unknown"]))
    assert result["Error"] == ""
    assert result["Nodes"] is None
    assert result["NodeNames"] == ["good", "eu"]  # eu: the pod does not ask for a country
    assert result["FailedNodes"] == {}
    failed = result["FailedAndUnresolvableNodes"]
    assert set(failed) == set(EXPECTED_REASONS)
    for node, reason in EXPECTED_REASONS.items():
        assert failed[node].startswith(reason), (node, failed[node])


def test_expired_reason_names_the_expiry_time(failing_world: World) -> None:
    failed = post(failing_world.client(), names_args(trust_pod(), ["expired"]))["FailedAndUnresolvableNodes"]
    exp = int(NOW - 7200) + 3600
    from trustgate.core.report import format_time

    assert failed == {"expired": f"trust report expired at {format_time(exp)}"}


def test_full_nodes_mode_returns_the_passing_node_objects_unchanged(failing_world: World) -> None:
    nodes = failing_world.node_objects(ALL)
    sent = copy.deepcopy(nodes)
    result = post(failing_world.client(), nodes_args(trust_pod(), nodes))
    assert result["NodeNames"] is None
    assert result["Error"] == ""
    items = result["Nodes"]["items"]
    assert items == [n for n in sent if n["metadata"]["name"] in ("good", "eu")]
    assert set(result["FailedAndUnresolvableNodes"]) == set(EXPECTED_REASONS) - {"unknown"}


def test_full_nodes_mode_binds_the_report_to_the_node_object_sent(world: World) -> None:
    """The Node object kube-scheduler sends decides the identity: a new boot id voids the report."""
    world.node("n1")
    node = copy.deepcopy(world.node_objects(["n1"])[0])
    node["status"]["nodeInfo"]["bootID"] = "rebooted-since"
    result = post(world.client(), nodes_args(trust_pod(), [node]))
    assert result["Nodes"]["items"] == []
    assert "boot id differs" in result["FailedAndUnresolvableNodes"]["n1"]


def test_full_nodes_mode_with_an_unknown_node_fails_it(world: World) -> None:
    from devkit.factories import node_object

    result = post(world.client(), nodes_args(trust_pod(), [node_object("stranger")]))
    assert result["FailedAndUnresolvableNodes"] == {"stranger": "no trust report"}


@pytest.mark.parametrize(
    "keys",
    [("pod", "nodes", "nodenames"), ("POD", "NODES", "NODENAMES"), ("Pod", "nodes", "nodeNames")],
)
def test_keys_are_matched_case_insensitively_like_encoding_json(failing_world: World, keys) -> None:
    pod_key, nodes_key, names_key = keys
    client = failing_world.client()
    by_name = post(client, {pod_key: trust_pod(), nodes_key: None, names_key: ["good", "kernel"]})
    assert by_name["NodeNames"] == ["good"]
    assert set(by_name["FailedAndUnresolvableNodes"]) == {"kernel"}
    objects = failing_world.node_objects(["good", "kernel"])
    full = post(client, {pod_key: trust_pod(), nodes_key: {"items": objects}, names_key: None})
    assert [n["metadata"]["name"] for n in full["Nodes"]["items"]] == ["good"]


def test_reply_names_only_candidates(failing_world: World) -> None:
    candidates = ["good", "kernel", "unknown"]
    result = post(failing_world.client(), names_args(trust_pod(), candidates))
    returned = set(result["NodeNames"]) | set(result["FailedAndUnresolvableNodes"])
    assert returned == set(candidates)
    assert not set(result["NodeNames"]) & set(result["FailedAndUnresolvableNodes"])


def test_empty_candidate_lists(failing_world: World) -> None:
    client = failing_world.client()
    assert post(client, names_args(trust_pod(), []))["NodeNames"] == []
    assert post(client, {"Pod": trust_pod(), "Nodes": {"metadata": {}, "items": None}})["Nodes"]["items"] == []


# --- what makes a pod trust-requiring, and Enforce vs Warn ----------------------------------------


def test_asset_tag_in_node_selector(failing_world: World) -> None:
    pod = trust_pod(node_selector={"asset.trustgate.dev/country": "US"})
    result = post(failing_world.client(), names_args(pod, ["good", "eu"]))
    assert result["NodeNames"] == ["good"]
    assert result["FailedAndUnresolvableNodes"] == {"eu": "asset tag country=EU not in [US]"}


def test_asset_tag_affinity_operators(world: World) -> None:
    world.node("us", asset_tags={"country": "US"})
    world.node("eu", asset_tags={"country": "EU"})
    world.node("none")
    term = {"matchExpressions": [{"key": "asset.trustgate.dev/country", "operator": "NotIn", "values": ["EU"]}]}
    pod = pod_object("p", affinity_terms=[term])
    result = post(world.client(), names_args(pod, ["us", "eu", "none"]))
    assert result["NodeNames"] == ["us", "none"]
    assert result["FailedAndUnresolvableNodes"] == {"eu": "asset tag country=EU is excluded by [EU]"}


def test_trust_policy_required_asset_tags(world: World) -> None:
    world.node("us", asset_tags={"country": "US"})
    world.node("eu", asset_tags={"country": "EU"})
    world.policies.append(trust_policy("us-only", requiredAssetTags={"country": "US"}))
    result = post(world.client(), names_args(pod_object("plain"), ["us", "eu"]))
    assert result["NodeNames"] == ["us"]
    assert result["FailedAndUnresolvableNodes"] == {"eu": "asset tag country=EU not in [US]"}


def test_encrypted_image_makes_the_pod_trust_requiring(world: World) -> None:
    world.node("good")
    world.node("bare", report=False)
    world.policies.append(trust_policy("enc", encryptedImages=["registry.example/secret/*"]))
    client = world.client()
    result = post(client, names_args(pod_object("p", images=["registry.example/secret/db:1"]), ["good", "bare"]))
    assert result["NodeNames"] == ["good"]
    plain = post(client, names_args(pod_object("p", images=["nginx:1.27"]), ["good", "bare"]))
    assert plain["NodeNames"] == ["good", "bare"]


def test_warn_policy_does_not_filter(failing_world: World) -> None:
    failing_world.policies.append(trust_policy("soft", enforcement="Warn"))
    result = post(failing_world.client(), names_args(pod_object("plain"), ALL))
    assert result["NodeNames"] == ALL
    assert result["FailedAndUnresolvableNodes"] == {}


@pytest.mark.parametrize("enforcement", ["Warn", "Audit"])
def test_a_warn_or_audit_policy_does_not_narrow_the_pods_own_trust_selector(world: World, enforcement: str) -> None:
    world.node("kernel", levels={"kernel": False})
    world.node("good")
    world.policies.append(trust_policy("firmware-only", requiredLevels=["firmware"], enforcement=enforcement))
    result = post(world.client(), names_args(trust_pod(), ["kernel", "good"]))
    assert result["NodeNames"] == ["good"]
    assert result["FailedAndUnresolvableNodes"] == {"kernel": "level kernel not trusted"}


def test_enforce_and_warn_together_block_on_the_enforced_checks_only(world: World) -> None:
    world.node("kernel", levels={"kernel": False}, asset_tags={"country": "US"})
    world.node("eu", asset_tags={"country": "EU"})
    world.policies.append(trust_policy("kernel", requiredLevels=["kernel"]))
    world.policies.append(trust_policy("tags", enforcement="Warn", requiredAssetTags={"country": "US"}))
    result = post(world.client(), names_args(pod_object("plain"), ["kernel", "eu"]))
    assert result["NodeNames"] == ["eu"]
    assert result["FailedAndUnresolvableNodes"] == {"kernel": "level kernel not trusted"}


def test_invalid_policy_fails_closed(world: World) -> None:
    world.node("good")
    world.policies.append(trust_policy("broken", requiredLevels=["bios"]))
    result = post(world.client(), names_args(pod_object("plain"), ["good"]))
    assert result["NodeNames"] == []
    assert result["FailedAndUnresolvableNodes"]["good"].startswith("TrustPolicy broken is invalid")


# --- fast path, sync, malformed pods -----------------------------------------------------------------


def test_pod_without_trust_passes_untouched(failing_world: World) -> None:
    client = failing_world.client()
    names = [*ALL, "unknown", "unknown"]
    result = post(client, names_args(pod_object("plain"), names))
    assert result == {
        "Nodes": None,
        "NodeNames": names,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "",
    }
    nodes = failing_world.node_objects(ALL)
    args = nodes_args(pod_object("plain"), nodes)
    args["Nodes"]["metadata"] = {"resourceVersion": "42"}
    result = post(client, args)
    assert result["Nodes"] == args["Nodes"]


def test_trusted_false_selector_does_not_require_trust(failing_world: World) -> None:
    pod = pod_object("p", node_selector={"trustgate.dev/trusted": "false"})
    assert post(failing_world.client(), names_args(pod, ["no-report"]))["NodeNames"] == ["no-report"]


@pytest.mark.parametrize("pod", [trust_pod(), pod_object("plain")], ids=["trust", "plain"])
def test_not_synced_is_an_error_for_every_pod(failing_world: World, pod) -> None:
    failing_world.synced = False
    client = failing_world.client()
    for args in (names_args(pod, ["good"]), nodes_args(pod, failing_world.node_objects(["good"]))):
        result = post(client, args)
        assert result["Error"] == "trustgate: " + NOT_SYNCED.message
        assert result["NodeNames"] is None and result["Nodes"] is None


def test_malformed_pod_is_an_error(failing_world: World) -> None:
    pod = trust_pod()
    pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"x": 1}}}
    result = post(failing_world.client(), names_args(pod, ["good"]))
    assert "cannot determine the pod's trust requirement" in result["Error"]
    assert result["NodeNames"] is None


def test_other_labels_in_the_constraints_come_from_the_node(world: World) -> None:
    world.node("a", labels={"zone": "a"})
    world.node("b", labels={"zone": "b"})
    pod = trust_pod(node_selector={"zone": "a"})
    result = post(world.client(), names_args(pod, ["a", "b"]))
    assert result["NodeNames"] == ["a"]
    assert result["FailedAndUnresolvableNodes"] == {"b": "node label zone In [a] not satisfied"}


def test_a_trusted_label_set_by_hand_gains_nothing(world: World) -> None:
    world.node("liar", report=False, labels=TRUSTED)
    result = post(world.client(), names_args(trust_pod(), ["liar"]))
    assert result["FailedAndUnresolvableNodes"] == {"liar": "no trust report"}


def test_a_namespace_the_cache_has_not_seen_is_an_error_while_policies_select_by_namespace(world: World) -> None:
    world.node("good")
    world.policies.append(trust_policy("pci", namespaceSelector={"matchLabels": {"compliance": "pci"}}))
    result = post(world.client(), names_args(pod_object("p", namespace="created-a-moment-ago"), ["good"]))
    assert "namespace created-a-moment-ago is not in the trust cache yet" in result["Error"]
    assert result["NodeNames"] is None
