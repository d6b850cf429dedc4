"""trustgate.core.release: the TrustPolicies covering an image decide whether its key goes to a node."""

from __future__ import annotations

from devkit.factories import Issuer, node_object, trust_policy
from trustgate.core.policy import TrustPolicy
from trustgate.core.reasons import Code
from trustgate.core.release import ImageKeyRecord, KeyRequest, covering_policies, decide
from trustgate.core.snapshot import Snapshot

IMAGE = "registry.example:5000/secret/app:1"
RECORD = ImageKeyRecord(kid="ik-1", image=IMAGE, policy="secret")
NOW = 1_795_000_000.0


def policies(*resources: dict) -> tuple[TrustPolicy, ...]:
    return tuple(TrustPolicy.from_resource(r) for r in resources)


SECRET = trust_policy("secret", encryptedImages=["registry.example:5000/secret/*"])


def snapshot(issuer: Issuer, **claims: object) -> Snapshot:
    return Snapshot.build(
        issuer.verifier(),
        nodes=[node_object("n1"), node_object("n2")],
        reports={"n1": issuer.token("n1", now=NOW, **claims), "n2": issuer.token("n2", now=NOW)},
    )


def request(node: str = "n1", requester: str | None = None, image: str = IMAGE) -> KeyRequest:
    return KeyRequest(requester=requester or node, node=node, kid="ik-1", image=image)


def test_released_to_a_node_that_meets_the_covering_policy(issuer: Issuer) -> None:
    decision = decide(request(), RECORD, snapshot(issuer).node("n1"), policies(SECRET), NOW, 30)
    assert decision.released and decision.decision == "released" and decision.policies == ("secret",)


def test_refused_for_a_failing_level(issuer: Issuer) -> None:
    levels = {"firmware": True, "boot": True, "bootloader": True, "kernel": True, "runtime": False}
    decision = decide(request(), RECORD, snapshot(issuer, levels=levels).node("n1"), policies(SECRET), NOW, 30)
    assert not decision.released and decision.decision == "rejected"
    assert [(r.code, r.message) for r in decision.reasons] == [(Code.LEVEL, "level runtime not trusted")]


def test_a_policy_narrowing_the_levels_narrows_the_release(issuer: Issuer) -> None:
    narrow = trust_policy("secret", encryptedImages=["registry.example:5000/secret/*"], requiredLevels=["firmware"])
    levels = {"firmware": True, "boot": False, "bootloader": False, "kernel": False, "runtime": False}
    node = snapshot(issuer, levels=levels).node("n1")
    assert decide(request(), RECORD, node, policies(narrow), NOW, 30).released


def test_every_covering_policy_must_pass(issuer: Issuer) -> None:
    tenant = trust_policy("tenant", encryptedImages=["registry.example:5000/*"], requiredAssetTags={"tenant": "acme"})
    decision = decide(request(), RECORD, snapshot(issuer).node("n1"), policies(SECRET, tenant), NOW, 30)
    assert [r.code for r in decision.reasons] == [Code.ASSET_TAG]
    assert "asset tag tenant missing" in decision.reasons[0].message
    tagged = snapshot(issuer, asset_tags={"tenant": "acme"}).node("n1")
    assert decide(request(), RECORD, tagged, policies(SECRET, tenant), NOW, 30).released


def test_an_image_no_policy_covers_is_released_to_no_one(issuer: Issuer) -> None:
    other = trust_policy("other", encryptedImages=["registry.example:5000/other/*"])
    decision = decide(request(), RECORD, snapshot(issuer).node("n1"), policies(other), NOW, 30)
    assert [r.code for r in decision.reasons] == [Code.NOT_COVERED]


def test_the_policies_selectors_do_not_matter_a_key_has_no_pod(issuer: Issuer) -> None:
    scoped = trust_policy(
        "secret",
        encryptedImages=["registry.example:5000/secret/*"],
        namespaceSelector={"matchLabels": {"team": "payments"}},
        podSelector={"matchLabels": {"app": "db"}},
    )
    assert covering_policies(IMAGE, policies(scoped))
    levels = {"firmware": True, "boot": True, "bootloader": True, "kernel": True, "runtime": False}
    node = snapshot(issuer, levels=levels).node("n1")
    assert not decide(request(), RECORD, node, policies(scoped), NOW, 30).released


def test_expired_copied_and_missing_reports_are_refused(issuer: Issuer) -> None:
    view = snapshot(issuer, ttl=60)
    expired = decide(request(), RECORD, view.node("n1"), policies(SECRET), NOW + 3600, 30)
    assert [r.code for r in expired.reasons] == [Code.EXPIRED]
    copied = Snapshot.build(
        issuer.verifier(), nodes=[node_object("n1"), node_object("n2")], reports={"n2": issuer.token("n1", now=NOW)}
    )
    bound = decide(request("n2"), RECORD, copied.node("n2"), policies(SECRET), NOW, 30)
    assert [r.code for r in bound.reasons] == [Code.BOUND_ELSEWHERE]
    missing = decide(request("n3"), RECORD, view.node("n3"), policies(SECRET), NOW, 30)
    assert [r.code for r in missing.reasons] == [Code.UNKNOWN_NODE]


def test_a_request_for_another_node_or_an_unknown_key_is_refused(issuer: Issuer) -> None:
    view = snapshot(issuer)
    other = decide(request("n1", requester="n2"), RECORD, view.node("n1"), policies(SECRET), NOW, 30)
    assert [r.code for r in other.reasons] == [Code.CHALLENGE]
    unknown = decide(request(), None, view.node("n1"), policies(SECRET), NOW, 30)
    assert [r.code for r in unknown.reasons] == [Code.UNKNOWN_KEY]
    renamed = decide(
        request(image="registry.example:5000/public/app:1"), RECORD, view.node("n1"), policies(SECRET), NOW, 30
    )
    assert [r.code for r in renamed.reasons] == [Code.UNKNOWN_KEY]


def test_warn_and_audit_policies_release_and_record_the_violation(issuer: Issuer) -> None:
    levels = {"firmware": True, "boot": True, "bootloader": True, "kernel": True, "runtime": False}
    node = snapshot(issuer, levels=levels).node("n1")
    for mode, decision in (("Warn", "warned"), ("Audit", "audited")):
        relaxed = trust_policy("secret", encryptedImages=["registry.example:5000/secret/*"], enforcement=mode)
        result = decide(request(), RECORD, node, policies(relaxed), NOW, 30)
        assert result.released and result.decision == decision
        assert [r.code for r in result.violations] == [Code.LEVEL]


def test_a_malformed_covering_policy_refuses(issuer: Issuer) -> None:
    broken = trust_policy("secret", encryptedImages=["registry.example:5000/secret/*"], requiredLevels=["nope"])
    result = decide(request(), RECORD, snapshot(issuer).node("n1"), policies(broken), NOW, 30)
    assert [r.code for r in result.reasons] == [Code.POLICY_INVALID]
