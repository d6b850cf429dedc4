"""Running pods judged again against their node's current trust, and published as a PolicyReport."""

from __future__ import annotations

import time

import pytest

from devkit.factories import Issuer, node_object, pod_object, trust_policy
from trustgate.core.labels import TRUSTED_LABEL
from trustgate.core.policy import PolicyError
from trustgate.core.policyreport import API_VERSION, REPORT_NAME, Entry, content, report_body
from trustgate.core.reasons import Code
from trustgate.core.running import Result, judge, required, running_pod
from trustgate.core.snapshot import Snapshot

NOW = time.time()
TRUSTED = {TRUSTED_LABEL: "true"}


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


def world(issuer: Issuer, policies=(), **tokens: str | None) -> Snapshot:
    """Nodes good (a valid report), bare (none), old (expired) and weak (kernel untrusted), and `tokens`."""
    reports = {
        "good": issuer.token("good", now=NOW),
        "old": issuer.token("old", now=NOW - 7200, ttl=3600),
        "weak": issuer.token("weak", now=NOW, levels={"kernel": False}),
    }
    reports |= {k: v for k, v in tokens.items() if v}
    names = ["good", "bare", "old", "weak", *tokens]
    return Snapshot.build(
        issuer.verifier(),
        nodes=[node_object(n) for n in dict.fromkeys(names)],
        reports=reports,
        policies=list(policies),
        namespaces={"default": {}, "shop": {}},
    )


def placed(node: str, **kw) -> object:
    return running_pod(pod_object(node_name=node, **kw))


def test_a_trust_pod_on_a_node_that_still_satisfies_it_passes(issuer: Issuer) -> None:
    trust = judge(world(issuer), placed("good", node_selector=TRUSTED), NOW)

    assert trust is not None and trust.result is Result.PASS and trust.reasons == ()
    assert trust.sources == ("node affinity",) and not trust.evict


def test_a_pod_that_needs_no_trust_has_no_result(issuer: Issuer) -> None:
    assert judge(world(issuer), placed("bare"), NOW) is None


@pytest.mark.parametrize(
    ("node", "code"),
    [("bare", Code.NO_REPORT), ("old", Code.EXPIRED), ("weak", Code.LEVEL), ("gone", Code.UNKNOWN_NODE)],
)
def test_a_trust_pod_on_a_node_that_lost_trust_fails_with_the_reason(issuer: Issuer, node: str, code: Code) -> None:
    trust = judge(world(issuer), placed(node, node_selector=TRUSTED), NOW)

    assert trust is not None and trust.result is Result.FAIL
    assert [r.code for r in trust.reasons] == [code] and trust.node == node


def test_a_report_that_expires_turns_the_result_to_fail_at_that_moment(issuer: Issuer) -> None:
    snapshot = world(issuer, short=issuer.token("short", now=NOW, ttl=60))
    pod = placed("short", node_selector=TRUSTED)

    assert judge(snapshot, pod, NOW + 59).result is Result.PASS  # type: ignore[union-attr]
    assert judge(snapshot, pod, NOW + 61 + snapshot.skew).result is Result.FAIL  # type: ignore[union-attr]


def test_warn_and_audit_policies_warn_and_only_enforce_policies_fail(issuer: Issuer) -> None:
    policies = [
        trust_policy("soft", podSelector={"matchLabels": {"tier": "soft"}}, enforcement="Warn"),
        trust_policy("quiet", podSelector={"matchLabels": {"tier": "quiet"}}, enforcement="Audit"),
    ]
    snapshot = world(issuer, policies)

    soft = judge(snapshot, placed("bare", labels={"tier": "soft"}), NOW)
    quiet = judge(snapshot, placed("bare", labels={"tier": "quiet"}), NOW)

    assert soft is not None and (soft.result, soft.enforcement) == (Result.WARN, "Warn")
    assert quiet is not None and (quiet.result, quiet.enforcement) == (Result.WARN, "Audit")


def test_a_pods_requirement_is_kept_while_the_pod_the_policies_and_its_namespace_stay_the_same(
    issuer: Issuer,
) -> None:
    policies = [trust_policy("soft", podSelector={"matchLabels": {"tier": "soft"}}, enforcement="Warn")]
    snapshot = world(issuer, policies)
    pod = placed("bare", labels={"tier": "soft"})
    kept = required(snapshot, pod)

    assert kept.requirement is not None and kept.requirement.policies == ("TrustPolicy soft",)
    assert required(snapshot, pod, kept) is kept
    same_policies = Snapshot(issuer.verifier(), policies=tuple(snapshot.policies), namespaces=snapshot.namespaces)
    assert required(same_policies, pod, kept) is kept
    # another pod object, other policies or other namespace labels: worked out again
    assert required(snapshot, placed("bare", labels={"tier": "soft"}), kept) is not kept
    assert required(world(issuer), pod, kept).requirement is None
    relabelled = Snapshot(issuer.verifier(), policies=snapshot.policies, namespaces={"default": {"team": "a"}})
    renewed = required(relabelled, pod, kept)
    assert renewed is not kept and renewed.requirement == kept.requirement
    assert judge(snapshot, pod, NOW, kept) == judge(snapshot, pod, NOW)


def test_only_an_enforce_policy_with_on_trust_lost_evict_asks_for_eviction(issuer: Issuer) -> None:
    policies = [
        trust_policy("evict", podSelector={"matchLabels": {"app": "db"}}, onTrustLost="Evict"),
        trust_policy("report", podSelector={"matchLabels": {"app": "web"}}),
        trust_policy("warn-evict", podSelector={"matchLabels": {"app": "ui"}}, enforcement="Warn", onTrustLost="Evict"),
    ]
    snapshot = world(issuer, policies)

    def evicts(app: str, node: str) -> bool:
        trust = judge(snapshot, placed(node, labels={"app": app}), NOW)
        assert trust is not None
        return trust.evict

    assert evicts("db", "weak") and evicts("db", "bare") and not evicts("db", "good")
    assert not evicts("web", "weak")  # Report: the result fails, nothing else
    assert not evicts("ui", "weak")  # a Warn policy admits pods there: evicting would loop
    assert not evicts("db", "gone")  # a deleted node's pods are the pod garbage collector's


def test_a_pod_being_deleted_keeps_its_result_and_is_never_evicted_again(issuer: Issuer) -> None:
    pod = pod_object(name="db-0", labels={"app": "db"}, node_name="weak")
    pod["metadata"]["deletionTimestamp"] = "2026-11-26T10:00:00Z"
    policy = trust_policy("evict", podSelector={"matchLabels": {"app": "db"}}, onTrustLost="Evict")

    trust = judge(world(issuer, [policy]), running_pod(pod), NOW)

    assert trust is not None and trust.result is Result.FAIL and not trust.evict


def test_a_malformed_policy_reports_an_error_and_never_evicts(issuer: Issuer) -> None:
    broken = trust_policy("broken", podSelector={"matchLabels": {"app": "db"}}, requiredLevels=["bios"])
    broken["spec"]["onTrustLost"] = "Evict"
    trust = judge(world(issuer, [broken]), placed("good", labels={"app": "db"}), NOW)

    assert trust is not None and trust.result is Result.ERROR and not trust.evict


def test_a_pod_not_bound_to_a_node_is_not_a_running_pod() -> None:
    with pytest.raises(PolicyError):
        running_pod(pod_object())


def test_the_policy_report_has_one_result_per_pod_failures_first_and_a_complete_summary(issuer: Issuer) -> None:
    snapshot = world(issuer)
    entries = [
        Entry(judge(snapshot, placed(node, name=f"{node}-pod", node_selector=TRUSTED), NOW), NOW - 10)  # type: ignore[arg-type]
        for node in ("good", "bare", "weak")
    ]

    report = report_body("default", entries)

    assert report["apiVersion"] == API_VERSION and report["kind"] == "PolicyReport"
    assert report["metadata"]["name"] == REPORT_NAME and report["metadata"]["namespace"] == "default"
    assert report["summary"] == {"pass": 1, "fail": 2, "warn": 0, "error": 0, "skip": 0}
    assert [r["resources"][0]["name"] for r in report["results"]] == ["bare-pod", "weak-pod", "good-pod"]
    failed = report["results"][0]
    assert failed["result"] == "fail" and failed["source"] == "trustgate" and failed["scored"] is True
    assert failed["properties"] == {"node": "bare", "policies": "node affinity", "codes": "no_report"}
    assert failed["message"] == "node bare fails node affinity: no trust report"
    assert failed["resources"][0]["uid"] == "uid-default-bare-pod"
    assert failed["timestamp"]["seconds"] == int(NOW - 10)


def test_a_large_namespace_keeps_its_report_bounded_and_says_how_many_results_it_left_out(issuer: Issuer) -> None:
    snapshot = world(issuer)
    entries = [
        Entry(judge(snapshot, placed("good" if i % 2 else "bare", name=f"p{i:03d}", node_selector=TRUSTED), NOW), NOW)  # type: ignore[arg-type]
        for i in range(30)
    ]

    report = report_body("default", entries, max_results=10)

    assert len(report["results"]) == 10 and {r["result"] for r in report["results"]} == {"fail"}
    assert report["summary"]["fail"] == 15 and report["summary"]["pass"] == 15
    assert report["metadata"]["annotations"] == {"trustgate.dev/results-omitted": "20"}


def test_report_content_ignores_member_order_and_metadata(issuer: Issuer) -> None:
    entry = Entry(judge(world(issuer), placed("bare", node_selector=TRUSTED), NOW), NOW)  # type: ignore[arg-type]
    report = report_body("default", [entry])
    served = {
        "metadata": {"resourceVersion": "42", **report["metadata"]},
        "results": [dict(sorted(r.items())) for r in report["results"]],
        "summary": dict(sorted(report["summary"].items())),
    }

    assert content(served) == content(report)
