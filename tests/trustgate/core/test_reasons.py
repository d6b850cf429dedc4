"""Every failure the core finds carries its stable code, whatever its message says."""

from __future__ import annotations

import time
from typing import Any

import pytest

from devkit.factories import Issuer, node_object, pod_object, trust_policy
from trustgate.core.labels import TRUSTED_LABEL
from trustgate.core.policy import pod_facts
from trustgate.core.reasons import CODES, Code, Reason, describe
from trustgate.core.snapshot import Snapshot

NOW = time.time()
COUNTRY = "asset.trustgate.dev/country"


def blocking(
    issuer: Issuer, token: str | None, pod: dict[str, Any], node: dict[str, Any] | None = None, **kw: Any
) -> list[Reason]:
    """The reasons `pod` fails on a node `n1` whose report is `token`."""
    node = node or node_object("n1")
    name = node["metadata"]["name"]
    snapshot = Snapshot.build(issuer.verifier(), nodes=[node], reports={name: token} if token else {}, **kw)
    requirement = snapshot.requirement(pod_facts(pod))
    assert requirement is not None
    return snapshot.evaluate(requirement, snapshot.node(name), NOW).reasons()


TRUSTED = pod_object(node_selector={TRUSTED_LABEL: "true"})


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no report", Code.NO_REPORT),
        ("bad signature", Code.INVALID_REPORT),
        ("expired", Code.EXPIRED),
        ("not yet valid", Code.NOT_YET_VALID),
        ("issued in the future", Code.NOT_YET_VALID),
        ("copied from another node", Code.BOUND_ELSEWHERE),
        ("other system UUID", Code.BOUND_ELSEWHERE),
        ("node without system UUID", Code.BOUND_ELSEWHERE),
        ("rebooted", Code.REBOOTED),
        ("level fails", Code.LEVEL),
    ],
)
def test_each_node_failure_carries_its_code(issuer: Issuer, case: str, code: Code) -> None:
    other = Issuer()
    node = node_object("n1")
    token: str | None = {
        "no report": None,
        "bad signature": other.token("n1", now=NOW),
        "expired": issuer.token("n1", now=NOW - 7200, ttl=3600),
        "not yet valid": issuer.token("n1", nbf=NOW + 3600, now=NOW),
        "issued in the future": issuer.token("n1", now=NOW + 3600),
        "copied from another node": issuer.token("n2", now=NOW),
        "other system UUID": issuer.token("n1", system_uuid="00000000-0000-0000-0000-000000000000", now=NOW),
        "node without system UUID": issuer.token("n1", now=NOW),
        "rebooted": issuer.token("n1", boot_id="an-earlier-boot", now=NOW),
        "level fails": issuer.token("n1", levels={"kernel": False}, now=NOW),
    }[case]
    if case == "node without system UUID":
        node["status"]["nodeInfo"]["systemUUID"] = ""
    reasons = blocking(issuer, token, TRUSTED, node)
    assert reasons and reasons[0].code is code, reasons


def test_asset_tag_node_label_and_policy_failures_carry_their_codes(issuer: Issuer) -> None:
    token = issuer.token("n1", asset_tags={"country": "DE"}, now=NOW)
    assert {r.code for r in blocking(issuer, token, pod_object(node_selector={COUNTRY: "US"}))} == {Code.ASSET_TAG}
    pod = pod_object(node_selector={TRUSTED_LABEL: "true", "kubernetes.io/os": "windows"})
    assert [r.code for r in blocking(issuer, token, pod)] == [Code.NODE_LABEL]
    broken = trust_policy("broken", requiredLevels="kernel")
    assert [r.code for r in blocking(issuer, token, pod_object(), policies=[broken])] == [Code.POLICY_INVALID]


def test_an_unknown_node_has_its_own_code(issuer: Issuer) -> None:
    snapshot = Snapshot.build(issuer.verifier())
    assert snapshot.node("ghost").failure == Reason(Code.UNKNOWN_NODE, "node not found in the cluster")


def test_codes_are_a_small_fixed_set_of_metric_label_values() -> None:
    assert len(CODES) == len(set(CODES)) <= 24
    assert all(code.value.isidentifier() and code.value.islower() for code in CODES)


def test_only_describe_joins_messages() -> None:
    reasons = [Reason(Code.LEVEL, "level kernel not trusted"), Reason(Code.ASSET_TAG, "asset tag x missing")]
    assert describe(reasons) == "level kernel not trusted; asset tag x missing"
    assert str(reasons[0]) == "level kernel not trusted"
