"""POST /validate: every admission rule, with AdmissionReviews shaped as kube-apiserver sends them."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from devkit.factories import Issuer, pod_object, trust_policy
from trustgate.audit.reader import read_records
from trustgate.audit.sinks import AuditLog, JsonLinesSink
from trustgate.core.snapshot import Snapshot, StaticCluster
from webhook.app import create_app

from .reviews import (
    AUDIT_POLICY,
    ENCRYPTED_POLICY,
    EXPIRED,
    KERNEL_UNTRUSTED,
    NO_REPORT,
    PCI_POLICY,
    TRUST_SELECTOR,
    TRUSTED,
    WARN_POLICY,
    ephemeral_update,
    pod_binding,
    pod_create,
    pod_update,
    snapshot,
)

Post = Callable[[dict[str, Any]], dict[str, Any]]
ALL_POLICIES = [PCI_POLICY, ENCRYPTED_POLICY, WARN_POLICY, AUDIT_POLICY]


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_well_formed(response: Mapping[str, Any]) -> None:
    for warning in response.get("warnings", []):
        assert len(warning) < 120, warning
    for key in response.get("auditAnnotations", {}):
        assert "/" not in key and key


def assert_plain_allow(response: Mapping[str, Any]) -> None:
    assert response["allowed"] is True
    assert "status" not in response and "warnings" not in response and "auditAnnotations" not in response


# pods CREATE


def test_trust_requiring_pod_created_on_trusted_node_is_allowed_at_once(post: Post, audit_path: Path) -> None:
    pod = pod_object(node_selector=TRUST_SELECTOR, node_name=TRUSTED)
    assert_plain_allow(post(pod_create(pod)))
    assert records(audit_path) == []


def test_trust_requiring_pod_created_on_expired_node_is_rejected(post: Post, audit_path: Path) -> None:
    pod = pod_object(name="web", node_selector=TRUST_SELECTOR, node_name=EXPIRED)
    review = pod_create(pod)
    response = post(review)
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert message.startswith(f"trustgate: pod default/web may not run on node {EXPIRED}: trust report expired at ")
    assert message.endswith("(node affinity)")
    assert_well_formed(response)
    annotations = response["auditAnnotations"]
    assert annotations["trustgate-decision"] == "rejected"
    assert annotations["trustgate-node"] == EXPIRED
    assert annotations["trustgate-policy"] == "node affinity"
    assert "trust report expired at" in annotations["trustgate-reasons"]
    [record] = records(audit_path)
    assert record["uid"] == review["request"]["uid"]
    assert record["decision"] == "rejected" and record["enforcement"] == "Enforce"
    assert (record["namespace"], record["pod"], record["node"]) == ("default", "web", EXPIRED)
    assert record["operation"] == "CREATE" and record["user"] == "alice@example.com"
    assert record["reasons"][0].startswith("trust report expired at")
    assert record["time"].endswith("Z")


def marked(pod: dict[str, Any]) -> dict[str, Any]:
    pod["spec"]["containers"][0]["resources"] = {"limits": {"trustgate.dev/trust": "1"}}
    return pod


def test_a_marked_pod_without_node_name_is_allowed(post: Post) -> None:
    """No nodeName: the scheduler with the extender picks the node and binds it."""
    pod = marked(pod_object(node_selector=TRUST_SELECTOR, images=["registry.example/secret/app:1"]))
    assert_plain_allow(post(pod_create(pod)))
    assert_plain_allow(post(pod_create(pod_object(name="plain"))))  # needs no trust: needs no mark


def test_an_unmarked_trust_requiring_pod_without_node_name_is_refused(post: Post, audit_path: Path) -> None:
    """Without the mark kube-scheduler would not consult the extender: it could land anywhere."""
    response = post(pod_create(pod_object(name="db", node_selector=TRUST_SELECTOR)))
    assert response["allowed"] is False
    assert "requires trust but does not request trustgate.dev/trust" in response["status"]["message"]
    [record] = records(audit_path)
    assert record["codes"] == ["not_marked"]


def test_pod_not_requiring_trust_is_allowed_on_any_node(post: Post) -> None:
    assert_plain_allow(post(pod_create(pod_object(node_name=NO_REPORT))))


def test_policy_selected_pod_rejection_names_every_failed_check(post: Post) -> None:
    pod = pod_object(name="api", namespace="payments", node_name=KERNEL_UNTRUSTED)
    response = post(pod_create(pod))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        f"trustgate: pod payments/api may not run on node {KERNEL_UNTRUSTED}: "
        "level kernel not trusted (TrustPolicy pci)"
    )


def test_one_message_for_several_sources_and_checks(post: Post) -> None:
    selector = TRUST_SELECTOR | {"asset.trustgate.dev/country": "US"}
    pod = pod_object(name="ledger", namespace="payments", node_selector=selector, node_name=KERNEL_UNTRUSTED)
    response = post(pod_create(pod))
    message = response["status"]["message"]
    assert message.count("trustgate:") == 1
    assert f"pod payments/ledger may not run on node {KERNEL_UNTRUSTED}: " in message
    assert "level kernel not trusted" in message
    assert "asset tag country" in message
    assert "node affinity" in message and "TrustPolicy pci" in message


def test_unknown_node_is_rejected(post: Post) -> None:
    pod = pod_object(node_selector=TRUST_SELECTOR, node_name="ghost")
    response = post(pod_create(pod))
    assert response["allowed"] is False
    assert "node not found in the cluster" in response["status"]["message"]


def test_node_without_report_is_rejected(post: Post) -> None:
    response = post(pod_create(pod_object(node_selector=TRUST_SELECTOR, node_name=NO_REPORT)))
    assert "no trust report" in response["status"]["message"]


def test_encrypted_image_makes_a_pod_trust_requiring(post: Post) -> None:
    pod = pod_object(init_images=["registry.example/secret/keys:2"], node_name=NO_REPORT)
    response = post(pod_create(pod))
    assert response["allowed"] is False
    assert "(TrustPolicy encrypted)" in response["status"]["message"]


def test_generate_name_pod(post: Post) -> None:
    pod = pod_object(node_selector=TRUST_SELECTOR, node_name=EXPIRED)
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "web-"
    response = post(pod_create(pod))
    assert response["allowed"] is False
    assert "pod default/web-" in response["status"]["message"]


# pods/binding and bindings CREATE


@pytest.mark.parametrize("legacy", [False, True], ids=["pods/binding", "bindings"])
def test_binding_to_failing_node_is_rejected(issuer: Issuer, audit: AuditLog, audit_path: Path, legacy: bool) -> None:
    pod = pod_object(name="vault", labels={"app": "vault"}, node_selector=TRUST_SELECTOR)
    client = create_app(StaticCluster(snapshot(issuer), pods=[pod]), audit).test_client()
    review = pod_binding(pod, EXPIRED, legacy=legacy)
    body = client.post("/validate", json=review).get_json()
    response = body["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["message"].startswith(f"trustgate: pod default/vault may not run on node {EXPIRED}: ")
    [record] = records(audit_path)
    assert record["user"] == "system:kube-scheduler" and record["pod_uid"] == "uid-default-vault"


@pytest.mark.parametrize("legacy", [False, True], ids=["pods/binding", "bindings"])
def test_binding_to_trusted_node_is_allowed(issuer: Issuer, audit: AuditLog, legacy: bool) -> None:
    pod = pod_object(name="vault", node_selector=TRUST_SELECTOR)
    client = create_app(StaticCluster(snapshot(issuer), pods=[pod]), audit).test_client()
    assert_plain_allow(client.post("/validate", json=pod_binding(pod, TRUSTED, legacy=legacy)).get_json()["response"])


def test_binding_of_pod_not_requiring_trust_is_allowed(issuer: Issuer, audit: AuditLog) -> None:
    pod = pod_object(name="plain")
    client = create_app(StaticCluster(snapshot(issuer), pods=[pod]), audit).test_client()
    assert_plain_allow(client.post("/validate", json=pod_binding(pod, NO_REPORT)).get_json()["response"])


class LiveCluster(StaticCluster):
    """A snapshot that has not seen a pod yet, with the apiserver's answer for a live GET."""

    def __init__(
        self,
        snapshot: Snapshot,
        live: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        pods: list[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(snapshot, pods or [])
        self.live = dict(live or {})
        self.gets: list[tuple[str, str]] = []

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.gets.append((namespace, name))
        return self.live.get((namespace, name))


def test_binding_looks_up_a_pod_the_snapshot_has_not_seen(issuer: Issuer, audit: AuditLog) -> None:
    pod = pod_object(name="fresh", namespace="payments")
    cluster = LiveCluster(snapshot(issuer, policies=[PCI_POLICY]), {("payments", "fresh"): pod})
    client = create_app(cluster, audit).test_client()
    response = client.post("/validate", json=pod_binding(pod, KERNEL_UNTRUSTED)).get_json()["response"]
    assert cluster.gets == [("payments", "fresh")]
    assert response["allowed"] is False
    assert "level kernel not trusted (TrustPolicy pci)" in response["status"]["message"]


def test_binding_with_a_stale_snapshot_pod_asks_the_apiserver(issuer: Issuer, audit: AuditLog) -> None:
    """Same name, other uid: the pod was replaced; the live one (trust-requiring now) is judged."""
    old = pod_object(name="web")
    old["metadata"]["uid"] = "old-uid"
    new = pod_object(name="web", node_selector=TRUST_SELECTOR)
    cluster = LiveCluster(snapshot(issuer), {("default", "web"): new}, pods=[old])
    client = create_app(cluster, audit).test_client()
    response = client.post("/validate", json=pod_binding(new, EXPIRED)).get_json()["response"]
    assert cluster.gets == [("default", "web")]
    assert response["allowed"] is False


@pytest.mark.parametrize("legacy", [False, True], ids=["pods/binding", "bindings"])
def test_binding_of_missing_pod_is_rejected(issuer: Issuer, audit: AuditLog, audit_path: Path, legacy: bool) -> None:
    pod = pod_object(name="gone")
    client = create_app(LiveCluster(snapshot(issuer)), audit).test_client()
    response = client.post("/validate", json=pod_binding(pod, TRUSTED, legacy=legacy)).get_json()["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "pod not found" in message and "default/gone" in message and TRUSTED in message
    assert response["auditAnnotations"]["trustgate-decision"] == "rejected"
    [record] = records(audit_path)
    assert record["decision"] == "rejected" and record["pod"] == "gone"


def test_binding_lookup_failure_fails_closed(issuer: Issuer, audit: AuditLog) -> None:
    class Broken(StaticCluster):
        def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
            raise ConnectionError("apiserver unreachable")

    pod = pod_object(name="web", node_selector=TRUST_SELECTOR)
    client = create_app(Broken(snapshot(issuer)), audit).test_client()
    answer = client.post("/validate", json=pod_binding(pod, TRUSTED))
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["allowed"] is False
    assert "apiserver unreachable" in response["status"]["message"]


def test_binding_without_target_is_rejected(post: Post) -> None:
    review = pod_binding(pod_object(name="web"), TRUSTED)
    del review["request"]["object"]["target"]
    response = post(review)
    assert response["allowed"] is False
    assert "target must name a Node" in response["status"]["message"]


def test_binding_for_another_pod_than_the_url_is_rejected(post: Post) -> None:
    review = pod_binding(pod_object(name="web"), TRUSTED)
    review["request"]["object"]["metadata"]["name"] = "other"
    assert post(review)["allowed"] is False


# pods/ephemeralcontainers UPDATE


def test_encrypted_ephemeral_container_on_untrusted_node_is_rejected(post: Post, audit_path: Path) -> None:
    pod = pod_object(name="shell", node_name=NO_REPORT)
    review = ephemeral_update(pod, ["registry.example/secret/debug:1"])
    response = post(review)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message == (
        f"trustgate: pod default/shell may not run on node {NO_REPORT}: no trust report (TrustPolicy encrypted)"
    )
    [record] = records(audit_path)
    assert record["operation"] == "UPDATE" and record["policy"] == "TrustPolicy encrypted"


def test_plain_ephemeral_container_on_untrusted_node_is_allowed(post: Post) -> None:
    pod = pod_object(name="shell", node_name=NO_REPORT)
    assert_plain_allow(post(ephemeral_update(pod, ["busybox:1.36"])))


def test_encrypted_ephemeral_container_on_trusted_node_is_allowed(post: Post) -> None:
    pod = pod_object(name="shell", node_name=TRUSTED)
    assert_plain_allow(post(ephemeral_update(pod, ["registry.example/secret/debug:1"])))


def test_ephemeral_container_on_trust_requiring_pod_whose_node_expired(post: Post) -> None:
    pod = pod_object(name="db", node_selector=TRUST_SELECTOR, node_name=EXPIRED)
    response = post(ephemeral_update(pod, ["busybox:1.36"]))
    assert response["allowed"] is False and "trust report expired" in response["status"]["message"]


# Enforcement: Warn and Audit


def test_warn_policy_admits_with_warnings(post: Post, audit_path: Path) -> None:
    pod = pod_object(name="w", labels={"tier": "sensitive"}, node_name=KERNEL_UNTRUSTED)
    response = post(pod_create(pod))
    assert response["allowed"] is True and "status" not in response
    assert response["warnings"] == [
        f"trustgate: node {KERNEL_UNTRUSTED} fails TrustPolicy warn-only: level kernel not trusted"
    ]
    assert response["auditAnnotations"]["trustgate-decision"] == "warned"
    assert response["auditAnnotations"]["trustgate-enforcement"] == "Warn"
    assert_well_formed(response)
    [record] = records(audit_path)
    assert record["decision"] == "warned" and record["enforcement"] == "Warn"
    assert record["policy"] == "TrustPolicy warn-only"


def test_audit_policy_admits_and_records_only(post: Post, audit_path: Path) -> None:
    pod = pod_object(name="a", labels={"tier": "watched"}, node_name=NO_REPORT)
    response = post(pod_create(pod))
    assert response["allowed"] is True
    assert "warnings" not in response and "status" not in response
    assert response["auditAnnotations"]["trustgate-decision"] == "audited"
    [record] = records(audit_path)
    assert record["decision"] == "audited" and record["reasons"] == ["no trust report"]
    assert record["codes"] == ["no_report"]


@pytest.mark.parametrize("enforcement", ["Warn", "Audit"])
def test_a_warn_or_audit_policy_does_not_weaken_the_pods_own_trust_selector(
    issuer: Issuer, audit: AuditLog, audit_path: Path, enforcement: str
) -> None:
    soft = trust_policy("firmware-only", requiredLevels=["firmware"], enforcement=enforcement)
    client = create_app(StaticCluster(snapshot(issuer, policies=[soft])), audit).test_client()
    pod = pod_object(name="db", node_selector=TRUST_SELECTOR, node_name=KERNEL_UNTRUSTED)
    response = client.post("/validate", json=pod_create(pod)).get_json()["response"]
    assert response["allowed"] is False
    assert "level kernel not trusted (node affinity)" in response["status"]["message"]
    [record] = records(audit_path)
    assert record["decision"] == "rejected" and record["codes"] == ["level"]


def test_enforce_wins_over_warn_and_keeps_the_warnings(post: Post, audit_path: Path) -> None:
    pod = pod_object(name="both", namespace="payments", labels={"tier": "sensitive"}, node_name=KERNEL_UNTRUSTED)
    response = post(pod_create(pod))
    assert response["allowed"] is False
    assert "(TrustPolicy pci)" in response["status"]["message"]
    assert "warn-only" not in response["status"]["message"]
    assert any("warn-only" in w for w in response["warnings"])
    [record] = records(audit_path)
    assert record["decision"] == "rejected" and record["policy"] == "TrustPolicy pci, TrustPolicy warn-only"


def test_warnings_stay_under_120_characters(issuer: Issuer, audit: AuditLog) -> None:
    long_policy = dict(WARN_POLICY, metadata={"name": "p" * 150})
    long_node = "n" * 200
    cluster = StaticCluster(snapshot(issuer, policies=[long_policy]))
    client = create_app(cluster, audit).test_client()
    pod = pod_object(labels={"tier": "sensitive"}, node_name=long_node)
    response = client.post("/validate", json=pod_create(pod)).get_json()["response"]
    assert response["allowed"] is True and response["warnings"]
    assert all(len(w) < 120 and w.endswith("...") for w in response["warnings"])
    assert_well_formed(response)


def test_trusted_node_passes_every_policy_without_annotations(post: Post) -> None:
    pod = pod_object(namespace="payments", labels={"tier": "sensitive"}, node_name=TRUSTED)
    assert_plain_allow(post(pod_create(pod)))


# Dry run


@pytest.mark.parametrize(
    ("pod", "allowed"),
    [
        (pod_object(node_selector=TRUST_SELECTOR, node_name=EXPIRED), False),
        (pod_object(labels={"tier": "sensitive"}, node_name=NO_REPORT), True),
    ],
    ids=["reject", "warn"],
)
def test_dry_run_decides_the_same_but_records_nothing(
    post: Post, audit_path: Path, pod: dict[str, Any], allowed: bool
) -> None:
    wet = post(pod_create(pod))
    assert len(records(audit_path)) == 1
    dry = post(pod_create(pod, dry_run=True))
    assert len(records(audit_path)) == 1
    assert dry["allowed"] is wet["allowed"] is allowed
    assert dry.get("status") == wet.get("status")
    assert dry.get("warnings") == wet.get("warnings")
    assert dry["auditAnnotations"].pop("trustgate-uid") != wet["auditAnnotations"].pop("trustgate-uid")
    assert dry["auditAnnotations"] == wet["auditAnnotations"]


# Cache not synced


@pytest.fixture
def unsynced(issuer: Issuer, audit: AuditLog) -> Any:
    pod = pod_object(name="vault")
    cluster = StaticCluster(snapshot(issuer, policies=[PCI_POLICY], synced=False), pods=[pod])
    return create_app(cluster, audit).test_client()


@pytest.mark.parametrize(
    "review",
    [
        pod_create(pod_object(node_selector=TRUST_SELECTOR, node_name=TRUSTED)),
        pod_create(pod_object(name="plain", node_name=TRUSTED)),
        pod_binding(pod_object(name="vault"), TRUSTED),
        pod_binding(pod_object(name="vault"), TRUSTED, legacy=True),
        ephemeral_update(pod_object(name="s", node_name=TRUSTED), ["busybox"]),
    ],
    ids=["trust-requiring", "unknown", "binding", "legacy-binding", "ephemeral"],
)
def test_not_synced_rejects_placements(unsynced: Any, review: dict[str, Any]) -> None:
    response = unsynced.post("/validate", json=review).get_json()["response"]
    assert response["allowed"] is False
    assert "trust cache not ready" in response["status"]["message"]
    assert response["status"]["code"] == 503
    assert response["auditAnnotations"]["trustgate-decision"] == "rejected"


def test_not_synced_still_allows_marked_pods_the_scheduler_will_place(unsynced: Any) -> None:
    review = pod_create(marked(pod_object(node_selector=TRUST_SELECTOR)))
    assert_plain_allow(unsynced.post("/validate", json=review).get_json()["response"])
    unmarked = unsynced.post("/validate", json=pod_create(pod_object(node_selector=TRUST_SELECTOR)))
    assert unmarked.get_json()["response"]["allowed"] is False  # cannot tell whether it needs the mark


# Updates of bound pods


def bound(name: str, node: str, **kwargs: Any) -> dict[str, Any]:
    return pod_object(name=name, node_name=node, **kwargs)


def test_an_image_swap_to_an_encrypted_image_on_an_untrusted_node_is_refused(post: Post, audit_path: Path) -> None:
    old = bound("db", NO_REPORT, images=["nginx:1.27"])
    new = bound("db", NO_REPORT, images=["registry.example/secret/db:1"])
    response = post(pod_update(old, new))
    assert response["allowed"] is False
    assert "no trust report (TrustPolicy encrypted)" in response["status"]["message"]
    [record] = records(audit_path)
    assert record["operation"] == "UPDATE" and record["decision"] == "rejected" and record["node"] == NO_REPORT


def test_an_init_container_image_swap_is_judged_too(post: Post) -> None:
    old = bound("db", NO_REPORT)
    old["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    new = bound("db", NO_REPORT)
    new["spec"]["initContainers"] = [{"name": "init", "image": "registry.example/secret/seed:2"}]
    assert post(pod_update(old, new))["allowed"] is False


def test_a_label_change_that_a_policy_selects_on_an_untrusted_node_is_refused(issuer: Issuer, audit: AuditLog) -> None:
    strict = trust_policy("strict", podSelector={"matchLabels": {"tier": "secret"}})
    client = create_app(StaticCluster(snapshot(issuer, policies=[strict])), audit).test_client()
    old, new = bound("web", EXPIRED, labels={"tier": "web"}), bound("web", EXPIRED, labels={"tier": "secret"})
    response = client.post("/validate", json=pod_update(old, new)).get_json()["response"]
    assert response["allowed"] is False and "TrustPolicy strict" in response["status"]["message"]


def test_an_update_that_adds_no_failed_check_is_allowed_even_on_a_node_that_lost_trust(post: Post) -> None:
    old = bound("db", EXPIRED, node_selector=TRUST_SELECTOR, labels={"v": "1"})
    new = bound("db", EXPIRED, node_selector=TRUST_SELECTOR, labels={"v": "2"})
    assert_plain_allow(post(pod_update(old, new)))


def test_an_image_swap_on_a_trusted_node_is_allowed(post: Post) -> None:
    old = bound("db", TRUSTED, images=["nginx:1.27"])
    new = bound("db", TRUSTED, images=["registry.example/secret/db:1"])
    assert_plain_allow(post(pod_update(old, new)))


def test_an_update_of_a_pod_not_bound_yet_may_not_make_it_trust_requiring_without_the_mark(post: Post) -> None:
    old, new = pod_object(name="db"), pod_object(name="db", images=["registry.example/secret/db:1"])
    response = post(pod_update(old, new))
    assert response["allowed"] is False and "does not request trustgate.dev/trust" in response["status"]["message"]
    assert_plain_allow(post(pod_update(marked(old), marked(new))))  # the extender filters and binds it


# A namespace the cache has not seen yet


class ReadsNamespaces(StaticCluster):
    def __init__(self, snapshot: Snapshot, live: dict[str, dict[str, str]]) -> None:
        super().__init__(snapshot)
        self.live, self.reads = live, []

    def get_namespace(self, name: str) -> dict[str, str] | None:
        self.reads.append(name)
        return self.live.get(name)


def test_a_namespace_missing_from_the_cache_is_read_live(issuer: Issuer, audit: AuditLog) -> None:
    cluster = ReadsNamespaces(snapshot(issuer, policies=[PCI_POLICY]), {"fresh": {"compliance": "pci"}})
    client = create_app(cluster, audit).test_client()
    pod = pod_object(name="db", namespace="fresh", node_name=KERNEL_UNTRUSTED)
    response = client.post("/validate", json=pod_create(pod)).get_json()["response"]
    assert cluster.reads == ["fresh"]
    assert response["allowed"] is False and "(TrustPolicy pci)" in response["status"]["message"]


def test_a_namespace_that_cannot_be_found_fails_closed(issuer: Issuer, audit: AuditLog) -> None:
    cluster = ReadsNamespaces(snapshot(issuer, policies=[PCI_POLICY]), {})
    client = create_app(cluster, audit).test_client()
    pod = pod_object(name="db", namespace="ghost", node_name=TRUSTED)
    response = client.post("/validate", json=pod_create(pod)).get_json()["response"]
    assert response["allowed"] is False and "namespace ghost not found" in response["status"]["message"]


def test_without_namespace_selectors_an_unknown_namespace_needs_no_read(issuer: Issuer, audit: AuditLog) -> None:
    cluster = ReadsNamespaces(snapshot(issuer, policies=[ENCRYPTED_POLICY]), {})
    client = create_app(cluster, audit).test_client()
    pod = pod_object(name="db", namespace="ghost", node_name=TRUSTED)
    assert client.post("/validate", json=pod_create(pod)).get_json()["response"]["allowed"] is True
    assert cluster.reads == []


# Requests the webhook does not judge


@pytest.mark.parametrize(("operation", "sub"), [("DELETE", ""), ("UPDATE", "status")])
def test_other_pod_operations_are_allowed(post: Post, operation: str, sub: str) -> None:
    review = pod_create(pod_object(node_selector=TRUST_SELECTOR, node_name=EXPIRED))
    review["request"]["operation"] = operation
    if sub:
        review["request"]["subResource"] = sub
    assert_plain_allow(post(review))


# Audit sinks in the request path


def test_audit_write_failure_still_rejects_and_is_counted(issuer: Issuer, tmp_path: Path) -> None:
    audit = AuditLog([JsonLinesSink(tmp_path / "missing" / "dir" / "audit.jsonl")])
    client = create_app(StaticCluster(snapshot(issuer)), audit).test_client()
    review = pod_create(pod_object(node_selector=TRUST_SELECTOR, node_name=EXPIRED))
    for _ in range(2):
        response = client.post("/validate", json=review).get_json()["response"]
        assert response["allowed"] is False and response["status"]["code"] == 403
    assert audit.failures("jsonl") == 2
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'trustgate_audit_write_failures_total{sink="jsonl"} 2.0' in metrics


def test_read_only_audit_file_still_rejects(issuer: Issuer, tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        audit = AuditLog([JsonLinesSink(directory / "audit.jsonl")])
        client = create_app(StaticCluster(snapshot(issuer)), audit).test_client()
        review = pod_create(pod_object(node_selector=TRUST_SELECTOR, node_name=EXPIRED))
        assert client.post("/validate", json=review).get_json()["response"]["allowed"] is False
        writable = (directory / "audit.jsonl").exists()
        assert audit.failures("jsonl") == (0 if writable else 1)  # root may write anyway
    finally:
        directory.chmod(0o700)


def test_records_are_read_back_newest_first(post: Post, audit_path: Path) -> None:
    post(pod_create(pod_object(name="first", node_selector=TRUST_SELECTOR, node_name=EXPIRED)))
    post(pod_create(pod_object(name="second", labels={"tier": "sensitive"}, node_name=NO_REPORT)))
    found = read_records(audit_path)
    assert [r.pod for r in found] == ["second", "first"]
    assert [r.pod for r in read_records(audit_path, decision="rejected")] == ["first"]
