"""Trust policy: which pods require trust, and whether a node's signed report satisfies them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from devkit.factories import Issuer, node_object, pod_object, trust_policy
from trustgate.core.labels import TRUSTED_LABEL
from trustgate.core.policy import (
    ALL_LEVELS,
    NODE_AFFINITY,
    Enforcement,
    OnTrustLost,
    PolicyError,
    TrustPolicy,
    Verdict,
    pod_facts,
)
from trustgate.core.reasons import Code, Reason, messages
from trustgate.core.report import LEVELS
from trustgate.core.snapshot import Snapshot, UnknownNamespace

from ..craft import NOW, craft, header_for, identity

TRUSTED = {TRUSTED_LABEL: "true"}
COUNTRY = "asset.trustgate.dev/country"
SECURE = "registry.example/secure/*"
LATER = NOW + 60


def world(
    issuer: Issuer,
    reports: Mapping[str, str | None],
    labels: Mapping[str, Mapping[str, str]] | None = None,
    policies: tuple[dict[str, Any], ...] = (),
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
    nodes: tuple[dict[str, Any], ...] = (),
) -> Snapshot:
    """A snapshot with a Node per entry of `reports` (None: the node has no report)."""
    objects = [node_object(name, labels=(labels or {}).get(name)) for name in reports] + list(nodes)
    return Snapshot.build(
        issuer.verifier(),
        nodes=objects,
        reports={name: token for name, token in reports.items() if token is not None},
        policies=policies,
        namespaces=namespaces,
    )


def decide(snapshot: Snapshot, pod: dict[str, Any], node: str = "n1", now: float = LATER) -> Verdict | None:
    """The verdict for `pod` on `node`, or None when the pod needs no trust."""
    requirement = snapshot.requirement(pod_facts(pod))
    return None if requirement is None else snapshot.evaluate(requirement, snapshot.node(node), now)


def reasons(snapshot: Snapshot, pod: dict[str, Any], node: str = "n1", now: float = LATER) -> list[str]:
    verdict = decide(snapshot, pod, node, now)
    assert verdict is not None, "the pod was expected to require trust"
    return messages(verdict.reasons())


def affinity(key: str, operator: str, *values: str) -> list[dict[str, Any]]:
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expression["values"] = list(values)
    return [{"matchExpressions": [expression]}]


@pytest.fixture
def good(issuer: Issuer) -> Snapshot:
    """n1 has a valid report with every level trusted and country US."""
    return world(issuer, {"n1": issuer.token("n1", now=NOW, asset_tags={"country": "US"})})


# --- which pods require trust -----------------------------------------------------------------------


def test_a_pod_that_needs_no_trust_gets_no_requirement(good: Snapshot) -> None:
    assert good.requirement(pod_facts(pod_object())) is None
    assert good.requirement(pod_facts(pod_object(node_selector={"disk": "ssd"}))) is None


def test_a_pod_selecting_untrusted_nodes_needs_no_trust(good: Snapshot) -> None:
    assert good.requirement(pod_facts(pod_object(node_selector={TRUSTED_LABEL: "false"}))) is None


@pytest.mark.parametrize(
    "pod",
    [pod_object(node_selector=TRUSTED), pod_object(affinity_terms=affinity(TRUSTED_LABEL, "In", "true"))],
    ids=["nodeSelector", "affinity"],
)
def test_a_pod_selecting_trusted_nodes_requires_all_five_levels(good: Snapshot, pod) -> None:
    requirement = good.requirement(pod_facts(pod))

    assert requirement is not None
    assert [(s.name, s.levels, s.enforcement) for s in requirement.sources] == [
        (NODE_AFFINITY, ALL_LEVELS, Enforcement.ENFORCE)
    ]
    assert requirement.enforced
    assert ALL_LEVELS == frozenset(LEVELS) == {"firmware", "boot", "bootloader", "kernel", "runtime"}


def test_a_trusted_node_passes_a_trust_requiring_pod(good: Snapshot) -> None:
    verdict = decide(good, pod_object(node_selector=TRUSTED))

    assert verdict is not None and verdict.passed and not verdict.blocked and messages(verdict.reasons()) == []


def test_a_node_failing_one_level_fails_naming_the_level(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW, levels={"kernel": False})})

    assert reasons(snapshot, pod_object(node_selector=TRUSTED))[0] == "level kernel not trusted"


def test_every_failing_level_is_named_in_chain_order(issuer: Issuer) -> None:
    levels = {"runtime": False, "firmware": False, "bootloader": False}
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW, levels=levels)})

    found = reasons(snapshot, pod_object(node_selector=TRUSTED))

    assert [reason for reason in found if reason.startswith("level ")] == [
        "level firmware not trusted",
        "level bootloader not trusted",
        "level runtime not trusted",
    ]


# --- asset tags from the signed report --------------------------------------------------------------


def test_asset_tags_come_from_the_signed_report_not_the_node_labels(issuer: Issuer) -> None:
    snapshot = world(
        issuer,
        {"n1": issuer.token("n1", now=NOW, asset_tags={"country": "DE"})},
        labels={"n1": {COUNTRY: "US", TRUSTED_LABEL: "true"}},  # unsigned labels that lie
    )
    pod = pod_object(affinity_terms=affinity(COUNTRY, "In", "US"))

    assert reasons(snapshot, pod) == ["asset tag country=DE not in [US]"]
    assert reasons(snapshot, pod_object(node_selector={COUNTRY: "US"})) == ["asset tag country=DE not in [US]"]


def test_a_signed_asset_tag_passes_whatever_the_node_labels_say(issuer: Issuer) -> None:
    snapshot = world(
        issuer, {"n1": issuer.token("n1", now=NOW, asset_tags={"country": "US"})}, labels={"n1": {COUNTRY: "DE"}}
    )

    verdict = decide(snapshot, pod_object(affinity_terms=affinity(COUNTRY, "In", "US", "CA")))

    assert verdict is not None and verdict.passed


def test_an_asset_tag_absent_from_the_report_fails_even_if_a_label_claims_it(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW)}, labels={"n1": {COUNTRY: "US"}})

    assert reasons(snapshot, pod_object(affinity_terms=affinity(COUNTRY, "In", "US"))) == [
        "asset tag country missing, required in [US]"
    ]


def test_a_pod_using_an_asset_tag_also_requires_every_level(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW, levels={"boot": False}, asset_tags={"country": "US"})})

    assert reasons(snapshot, pod_object(affinity_terms=affinity(COUNTRY, "In", "US"))) == ["level boot not trusted"]


@pytest.mark.parametrize(
    ("tags", "operator", "values", "expected"),
    [
        ({"country": "DE"}, "NotIn", ("DE", "FR"), ["asset tag country=DE is excluded by [DE, FR]"]),
        ({"country": "US"}, "NotIn", ("DE", "FR"), []),
        ({}, "NotIn", ("DE",), []),
        ({"country": "US"}, "Exists", (), []),
        ({}, "Exists", (), ["asset tag country missing"]),
        ({}, "DoesNotExist", (), []),
        ({"country": "US"}, "DoesNotExist", (), ["asset tag country=US present, must be absent"]),
        ({"country": "5"}, "Gt", ("7",), ["asset tag country=5 fails asset.trustgate.dev/country Gt [7]"]),
    ],
    ids=lambda value: None,
)
def test_asset_tag_operators_are_evaluated_on_the_signed_tags(issuer: Issuer, tags, operator, values, expected):
    opposite = {COUNTRY: "DE"} if tags.get("country") != "DE" else {}  # unsigned labels must not matter
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW, asset_tags=tags)}, labels={"n1": opposite})

    assert reasons(snapshot, pod_object(affinity_terms=affinity(COUNTRY, operator, *values))) == expected


def test_asset_tag_terms_are_ored_and_expressions_anded(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW, asset_tags={"country": "CA", "tenant": "acme"})})
    either = [
        {"matchExpressions": [{"key": COUNTRY, "operator": "In", "values": ["US"]}]},
        {"matchExpressions": [{"key": "asset.trustgate.dev/tenant", "operator": "In", "values": ["acme"]}]},
    ]
    both = [{"matchExpressions": [e for term in either for e in term["matchExpressions"]]}]

    assert reasons(snapshot, pod_object(affinity_terms=either)) == []
    assert reasons(snapshot, pod_object(affinity_terms=both)) == ["asset tag country=CA not in [US]"]


def test_node_affinity_on_ordinary_labels_is_honoured_beside_the_trust_labels(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW), "n2": issuer.token("n2", now=NOW)})
    term = [
        {
            "matchExpressions": [
                {"key": TRUSTED_LABEL, "operator": "In", "values": ["true"]},
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]},
            ]
        }
    ]

    assert reasons(snapshot, pod_object(affinity_terms=term), node="n1") == []
    assert reasons(snapshot, pod_object(affinity_terms=term), node="n2") == [
        "node label kubernetes.io/hostname In [n1] not satisfied"
    ]


def test_an_unsigned_trusted_label_on_a_node_without_a_report_gains_nothing(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": None}, labels={"n1": {TRUSTED_LABEL: "true", COUNTRY: "US"}})

    assert reasons(snapshot, pod_object(node_selector=TRUSTED | {COUNTRY: "US"})) == ["no trust report"]


# --- TrustPolicy --------------------------------------------------------------------------------------


def test_a_policy_narrowing_required_levels_passes_a_node_failing_only_others(issuer: Issuer) -> None:
    token = issuer.token("n1", now=NOW, levels={"runtime": False})
    narrow = trust_policy("boot-chain", podSelector={"matchLabels": {"app": "db"}}, requiredLevels=["firmware", "boot"])
    default = trust_policy("everything", podSelector={"matchLabels": {"app": "db"}})
    db = pod_object(labels={"app": "db"})

    assert reasons(world(issuer, {"n1": token}, policies=(narrow,)), db) == []
    assert reasons(world(issuer, {"n1": token}, policies=(default,)), db) == ["level runtime not trusted"]
    assert reasons(world(issuer, {"n1": token}), pod_object(node_selector=TRUSTED))[0] == "level runtime not trusted"


def test_a_narrowing_policy_also_narrows_the_pods_own_trust_selector(issuer: Issuer) -> None:
    token = issuer.token("n1", now=NOW, levels={"runtime": False})
    narrow = trust_policy("boot-chain", requiredLevels=["firmware", "boot"])
    snapshot = world(issuer, {"n1": token}, policies=(narrow,))

    requirement = snapshot.requirement(pod_facts(pod_object(node_selector=TRUSTED)))

    assert requirement is not None
    assert [s.levels for s in requirement.sources] == [{"firmware", "boot"}, {"firmware", "boot"}]
    assert reasons(snapshot, pod_object(node_selector=TRUSTED)) == []


@pytest.mark.parametrize("enforcement", ["Warn", "Audit"])
def test_a_warn_or_audit_policy_never_narrows_the_pods_own_trust_selector(issuer: Issuer, enforcement: str) -> None:
    token = issuer.token("n1", now=NOW, levels={"kernel": False})
    soft = trust_policy("firmware-only", requiredLevels=["firmware"], enforcement=enforcement)
    snapshot = world(issuer, {"n1": token}, policies=(soft,))

    verdict = decide(snapshot, pod_object(node_selector=TRUSTED))

    assert verdict is not None and verdict.blocked
    assert messages(verdict.reasons(verdict.enforced_failures)) == ["level kernel not trusted"]
    assert [f.source.name for f in verdict.enforced_failures] == [NODE_AFFINITY]


def test_a_narrowing_policy_still_fails_a_node_missing_a_level_it_requires(issuer: Issuer) -> None:
    token = issuer.token("n1", now=NOW, levels={"boot": False, "runtime": False})
    narrow = trust_policy("boot-chain", requiredLevels=["firmware", "boot"])

    assert reasons(world(issuer, {"n1": token}, policies=(narrow,)), pod_object()) == ["level boot not trusted"]


def test_required_asset_tags_are_checked_against_the_signed_report(issuer: Issuer) -> None:
    policy = trust_policy("acme-only", requiredAssetTags={"tenant": "acme"})
    tokens = {
        "n1": issuer.token("n1", now=NOW, asset_tags={"tenant": "acme"}),
        "n2": issuer.token("n2", now=NOW, asset_tags={"tenant": "globex"}),
        "n3": issuer.token("n3", now=NOW),
    }
    snapshot = world(issuer, tokens, labels={"n3": {"asset.trustgate.dev/tenant": "acme"}}, policies=(policy,))

    assert reasons(snapshot, pod_object(), node="n1") == []
    assert reasons(snapshot, pod_object(), node="n2") == ["asset tag tenant=globex not in [acme]"]
    assert reasons(snapshot, pod_object(), node="n3") == [
        "asset tag tenant missing, TrustPolicy acme-only requires acme"
    ]


@pytest.mark.parametrize(
    ("namespace", "app", "selected"),
    [("prod", "db", True), ("prod", "web", False), ("dev", "db", False), ("dev", "web", False)],
)
def test_namespace_and_pod_selectors_are_anded(issuer: Issuer, good, namespace: str, app: str, selected: bool):
    policy = trust_policy(
        "prod-db", namespaceSelector={"matchLabels": {"env": "prod"}}, podSelector={"matchLabels": {"app": "db"}}
    )
    snapshot = world(
        issuer,
        {"n1": issuer.token("n1", now=NOW)},
        policies=(policy,),
        namespaces={"prod": {"env": "prod"}, "dev": {"env": "dev"}},
    )

    requirement = snapshot.requirement(pod_facts(pod_object(namespace=namespace, labels={"app": app})))

    assert (requirement is not None) is selected
    if selected:
        assert requirement.policies == ("TrustPolicy prod-db",)


@pytest.mark.parametrize(
    ("spec", "selected"),
    [
        ({}, {("prod", "db"), ("prod", "web"), ("dev", "db"), ("dev", "web")}),
        ({"namespaceSelector": {"matchLabels": {"env": "prod"}}}, {("prod", "db"), ("prod", "web")}),
        (
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}},
            {("prod", "db"), ("dev", "db")},
        ),
    ],
    ids=["no-selectors", "namespace-only", "pod-only"],
)
def test_a_missing_selector_selects_everything_on_its_side(issuer: Issuer, spec, selected) -> None:
    snapshot = world(
        issuer,
        {"n1": issuer.token("n1", now=NOW)},
        policies=(trust_policy("p", **spec),),
        namespaces={"prod": {"env": "prod"}, "dev": {"env": "dev"}},
    )
    pods = [(ns, app) for ns in ("prod", "dev") for app in ("db", "web")]

    chosen = {
        (ns, app) for ns, app in pods if snapshot.requirement(pod_facts(pod_object(namespace=ns, labels={"app": app})))
    }

    assert chosen == selected


@pytest.mark.parametrize(
    "pod",
    [
        pod_object(images=["nginx:1.27", "registry.example/secure/payments:2.1"]),
        pod_object(init_images=["registry.example/secure/migrate@sha256:" + "a" * 64]),
        pod_object(ephemeral_images=["registry.example/secure/debug/tools:latest"]),
    ],
    ids=["container", "init-container", "ephemeral-container"],
)
def test_an_encrypted_image_in_any_container_makes_the_pod_require_trust(issuer: Issuer, pod) -> None:
    snapshot = world(issuer, {"n1": None}, policies=(trust_policy("encrypted", encryptedImages=[SECURE]),))

    assert reasons(snapshot, pod) == ["no trust report"]
    assert decide(snapshot, pod).failures[0].source.name == "TrustPolicy encrypted"


@pytest.mark.parametrize(
    "image",
    [
        "nginx:1.27",
        "registry.example/secured/app:1",
        "registry.example/secure",
        "mirror.example/registry.example/secure/app:1",
        "registry.example.evil/secure/app:1",
    ],
)
def test_images_not_matching_an_encrypted_pattern_do_not_require_trust(issuer: Issuer, image: str) -> None:
    snapshot = world(issuer, {"n1": None}, policies=(trust_policy("encrypted", encryptedImages=[SECURE]),))

    assert (
        decide(snapshot, pod_object(images=[image], init_images=["busybox:1.36"], ephemeral_images=["alpine"])) is None
    )


def test_encrypted_image_patterns_are_globs(issuer: Issuer) -> None:
    policy = trust_policy("encrypted", encryptedImages=["*/vault-?:v[0-9]*"])
    snapshot = world(issuer, {"n1": None}, policies=(policy,))

    assert decide(snapshot, pod_object(images=["registry.example/vault-a:v1.2"])) is not None
    assert decide(snapshot, pod_object(images=["registry.example/vault-ab:v1.2"])) is None
    assert decide(snapshot, pod_object(images=["registry.example/vault-a:latest"])) is None


def test_encrypted_images_and_selectors_must_both_match(issuer: Issuer) -> None:
    policy = trust_policy("db-encrypted", podSelector={"matchLabels": {"app": "db"}}, encryptedImages=[SECURE])
    snapshot = world(issuer, {"n1": None}, policies=(policy,))
    image = ["registry.example/secure/pg:16"]

    assert decide(snapshot, pod_object(labels={"app": "db"}, images=image)) is not None
    assert decide(snapshot, pod_object(labels={"app": "web"}, images=image)) is None
    assert decide(snapshot, pod_object(labels={"app": "db"})) is None


@pytest.mark.parametrize(
    ("enforcement", "blocked"),
    [("Enforce", True), ("Warn", False), ("Audit", False), (None, True)],
)
def test_enforcement_decides_whether_a_failure_blocks(issuer: Issuer, enforcement, blocked: bool) -> None:
    spec = {"enforcement": enforcement} if enforcement else {}
    snapshot = world(issuer, {"n1": None}, policies=(trust_policy("p", **spec),))

    verdict = decide(snapshot, pod_object())

    assert verdict is not None and not verdict.passed
    assert verdict.blocked is blocked
    assert snapshot.requirement(pod_facts(pod_object())).enforced is blocked
    assert messages(verdict.reasons()) == ["no trust report"]
    assert verdict.failures[0].source.enforcement == (enforcement or "Enforce")


def test_a_warn_policy_does_not_soften_the_pods_own_trust_selector(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": None}, policies=(trust_policy("p", enforcement="Warn"),))

    verdict = decide(snapshot, pod_object(node_selector=TRUSTED))

    assert verdict is not None and verdict.blocked
    assert [f.source.name for f in verdict.enforced_failures] == [NODE_AFFINITY]
    assert [f.source.name for f in verdict.failures] == [NODE_AFFINITY, "TrustPolicy p"]
    assert messages(verdict.reasons()) == ["no trust report"]  # the same reason from both sources, named once


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (
            {"requiredLevels": ["bios"]},
            "requiredLevels must be a non-empty list of firmware, boot, bootloader, kernel, runtime",
        ),
        ({"requiredLevels": []}, "requiredLevels must be a non-empty list of"),
        ({"requiredLevels": "firmware"}, "requiredLevels must be a non-empty list of"),
        ({"requiredLevels": [["firmware"]]}, "requiredLevels must be a non-empty list of"),
        ({"enforcement": "Block"}, "enforcement must be Enforce, Warn or Audit"),
        ({"enforcement": "Warn", "requiredAssetTags": {"tier": 1}}, "requiredAssetTags must map strings to strings"),
        (
            {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": {"matchLabels": ["app=db"]}},
            "matchLabels must map strings to strings",
        ),
    ],
    ids=lambda value: None,
)
def test_an_invalid_trust_policy_fails_closed_for_what_its_readable_parts_select(
    issuer: Issuer, spec, error: str
) -> None:
    snapshot = world(
        issuer,
        {"n1": issuer.token("n1", now=NOW)},
        policies=(trust_policy("broken", **spec),),
        namespaces={"prod": {"env": "prod"}, "dev": {"env": "dev"}},
    )

    verdict = decide(snapshot, pod_object(namespace="prod"))

    assert verdict is not None and verdict.blocked  # even a Warn policy blocks: we cannot trust its text
    (reason,) = messages(verdict.reasons())
    assert reason.startswith("TrustPolicy broken is invalid: ") and error in reason
    if "namespaceSelector" in spec:
        assert decide(snapshot, pod_object(namespace="dev")) is None  # outside its readable selector


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}},
        {"namespaceSelector": {"matchLabels": ["env=prod"]}},
        {"encryptedImages": "registry.example/*", "enforcement": "Warn"},
        {"encryptedImages": [""], "requiredLevels": ["kernel"]},
        {"podSelector": {"matchLabels": {"app": 1}}, "namespaceSelector": {"matchExpressions": "x"}},
    ],
    ids=lambda value: None,
)
def test_a_policy_whose_only_selectors_are_malformed_selects_nothing(issuer: Issuer, spec) -> None:
    policy = TrustPolicy.from_resource(trust_policy("typo", **spec))
    snapshot = world(issuer, {"n1": None}, policies=(trust_policy("typo", **spec),))

    assert policy.error is not None and policy.selects_nothing
    assert decide(snapshot, pod_object(namespace="default", labels={"app": "web"})) is None


def test_a_trust_policy_whose_spec_is_not_an_object_is_invalid() -> None:
    policy = TrustPolicy.from_resource({"metadata": {"name": "odd"}, "spec": "Enforce"})

    assert policy.error == Reason(Code.POLICY_INVALID, "TrustPolicy odd is invalid: spec must be an object")


def test_a_valid_trust_policy_is_parsed_with_its_defaults() -> None:
    policy = TrustPolicy.from_resource(trust_policy("p"))

    assert (policy.error, policy.required_levels, policy.enforcement, policy.encrypted_images) == (
        None,
        ALL_LEVELS,
        Enforcement.ENFORCE,
        (),
    )
    assert policy.on_trust_lost is OnTrustLost.REPORT


def test_on_trust_lost_evict_reaches_the_requirement_of_the_pods_it_selects(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": None}, policies=(trust_policy("p", onTrustLost="Evict"),))

    requirement = snapshot.requirement(pod_facts(pod_object(node_selector=TRUSTED)))

    assert requirement is not None
    assert [(s.name, s.on_trust_lost) for s in requirement.sources] == [
        (NODE_AFFINITY, OnTrustLost.REPORT),  # a pod's own selector only ever reports
        ("TrustPolicy p", OnTrustLost.EVICT),
    ]


def test_a_policy_with_an_unknown_on_trust_lost_is_invalid_and_never_evicts() -> None:
    policy = TrustPolicy.from_resource(trust_policy("p", onTrustLost="Delete", requiredLevels=["bios"]))
    evicting = TrustPolicy.from_resource(trust_policy("q", onTrustLost="Evict", requiredLevels=["bios"]))

    assert policy.error is not None and "onTrustLost must be Report or Evict" in policy.error.message
    assert policy.on_trust_lost is OnTrustLost.REPORT
    assert evicting.error is not None and evicting.on_trust_lost is OnTrustLost.REPORT


# --- node failures ----------------------------------------------------------------------------------


def test_a_node_without_a_report_fails_with_no_trust_report(issuer: Issuer) -> None:
    assert reasons(world(issuer, {"n1": None}), pod_object(node_selector=TRUSTED)) == ["no trust report"]


def test_a_node_with_an_expired_report_fails_with_the_expiry_time(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW, ttl=600)})

    assert reasons(snapshot, pod_object(node_selector=TRUSTED), now=NOW + 3600) == [
        "trust report expired at 2026-11-18T11:16:40Z"
    ]
    assert reasons(snapshot, pod_object(node_selector=TRUSTED), now=NOW + 599) == []


def test_a_node_holding_another_nodes_report_fails_as_bound_elsewhere(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n2", now=NOW)})

    assert reasons(snapshot, pod_object(node_selector=TRUSTED)) == ["report bound to another host (issued for node n2)"]


def test_a_report_for_another_machine_with_the_same_node_name_fails(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW, system_uuid="4c4c4544-0000-1000-8000-0000000000ff")})

    (reason,) = reasons(snapshot, pod_object(node_selector=TRUSTED))
    assert reason.startswith("report bound to another host (system UUID 4c4c4544-0000-1000-8000-0000000000ff")


def test_a_node_that_rebooted_since_its_report_fails(issuer: Issuer) -> None:
    snapshot = Snapshot.build(
        issuer.verifier(), nodes=[node_object("n1", boot_id="rebooted")], reports={"n1": issuer.token("n1", now=NOW)}
    )

    assert reasons(snapshot, pod_object(node_selector=TRUSTED)) == [
        "report predates the node's last reboot (boot id differs)"
    ]


def test_a_node_whose_report_has_an_invalid_signature_fails_saying_so(issuer: Issuer) -> None:
    forged = craft(header_for(issuer), issuer.claims("n1", now=NOW), ec.generate_private_key(ec.SECP256R1()))
    snapshot = world(issuer, {"n1": forged})

    (reason,) = reasons(snapshot, pod_object(node_selector=TRUSTED))
    assert reason.startswith("trust report invalid: signature does not verify with key ")


def test_a_node_whose_report_is_garbage_fails_saying_so(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": "not-a-token"})

    assert reasons(snapshot, pod_object(node_selector=TRUSTED)) == [
        "trust report invalid: not a compact JWS (expected three base64url parts separated by dots)"
    ]


def test_a_namespace_the_snapshot_has_not_seen_is_not_taken_for_an_unlabelled_one(issuer: Issuer) -> None:
    by_namespace = trust_policy("prod", namespaceSelector={"matchLabels": {"env": "prod"}})
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW)}, policies=(by_namespace,), namespaces={})
    facts = pod_facts(pod_object(namespace="fresh"))

    with pytest.raises(UnknownNamespace, match="namespace fresh is not in the trust cache yet"):
        snapshot.requirement(facts)
    assert snapshot.requirement(facts, {"env": "prod"}) is not None  # as read live
    assert snapshot.requirement(facts, {}) is None
    by_pod = world(issuer, {}, policies=(trust_policy("db", podSelector={"matchLabels": {"app": "db"}}),))
    assert by_pod.requirement(facts) is None  # no policy reads namespace labels: nothing to wait for


def test_an_unknown_node_fails_with_its_own_reason(good: Snapshot) -> None:
    assert reasons(good, pod_object(node_selector=TRUSTED), node="ghost") == ["node not found in the cluster"]


def test_a_node_object_given_by_the_caller_is_assessed_with_the_cached_report(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW)})

    assert snapshot.node_from_object(node_object("n1")) is snapshot.node("n1")
    rebooted = snapshot.node_from_object(node_object("n1", boot_id="rebooted"))
    assert rebooted.failure == Reason(Code.REBOOTED, "report predates the node's last reboot (boot id differs)")
    assert snapshot.node_from_object(node_object("n9")).failure == Reason(Code.NO_REPORT, "no trust report")


def test_the_node_identity_is_read_from_node_info(issuer: Issuer) -> None:
    snapshot = world(issuer, {"n1": issuer.token("n1", now=NOW)})

    assert snapshot.node("n1").identity == identity("n1")


# --- pods that cannot be read ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        ("pod", "pod must be an object"),
        ({"metadata": ["web"], "spec": {}}, "pod metadata and spec must be objects"),
        ({"metadata": {"labels": ["a"]}, "spec": {}}, "pod labels must be an object"),
        ({"spec": {"nodeSelector": {"a": 1}}}, "pod node constraints: spec.nodeSelector must map strings to strings"),
        ({"spec": {"containers": {"image": "x"}}}, "spec.containers must be a list"),
        ({"spec": {"initContainers": ["x"]}}, "spec.initContainers entries must be objects"),
        (
            {
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {"matchExpressions": [{"key": "a", "operator": ["In"], "values": ["b"]}]}
                                ]
                            }
                        }
                    }
                }
            },
            "pod node constraints: operator ['In'] of key a is not one of",
        ),
    ],
    ids=lambda value: None,
)
def test_a_malformed_pod_raises_a_policy_error(pod, reason: str) -> None:
    with pytest.raises(PolicyError) as caught:
        pod_facts(pod)

    assert str(caught.value).startswith(reason)


def test_pod_facts_collect_images_of_every_container_kind() -> None:
    facts = pod_facts(pod_object(images=["a", "b"], init_images=["i"], ephemeral_images=["e"], node_name="n1"))

    assert sorted(facts.images) == ["a", "b", "e", "i"]
    assert (facts.namespace, facts.name, facts.node_name) == ("default", "web", "n1")


def test_pods_of_exempt_namespaces_never_need_trust_whatever_a_policy_selects(issuer: Issuer) -> None:
    everything = trust_policy("everything")
    snapshot = Snapshot.build(
        issuer.verifier(),
        nodes=[node_object("n1")],
        policies=[everything],
        namespaces={"kube-system": {}, "trustgate-system": {}, "default": {}},
        exempt=frozenset({"kube-system", "trustgate-system"}),
    )
    for namespace in ("kube-system", "trustgate-system"):
        assert snapshot.requirement(pod_facts(pod_object(namespace=namespace, node_selector=TRUSTED))) is None
    assert snapshot.requirement(pod_facts(pod_object(namespace="default"))) is not None
