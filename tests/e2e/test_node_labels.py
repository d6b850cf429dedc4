"""The label controller on the real control plane: labels follow verified reports, by the clock too."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from devkit.devstack import ISSUER, NAMESPACE, SKEW_SECONDS, DevStack
from devkit.fleet import VALID, Fleet
from devkit.waiting import eventually
from trustgate.core.report import decode_unverified

pytestmark = pytest.mark.e2e
TRUSTED = "trustgate.dev/trusted"
COUNTRY = "asset.trustgate.dev/country"


@pytest.fixture(scope="module")
def fleet(stack: DevStack) -> Iterator[Fleet]:
    fleet = Fleet(stack, ISSUER)
    yield fleet
    fleet.remove()


def labels(stack: DevStack, node: str) -> dict[str, str]:
    return stack.cp.client().get(f"/api/v1/nodes/{node}")["metadata"].get("labels") or {}


def test_only_one_controller_holds_the_lease(stack: DevStack) -> None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"

    def holders() -> list[str]:
        return [lease["spec"].get("holderIdentity") for lease in stack.cp.client().get(path)["items"]]

    assert eventually(holders, "the controllers' Lease") == ["dev-controller"]


def test_trusted_flips_to_false_at_expiry_without_any_api_event(stack: DevStack, fleet: Fleet) -> None:
    fleet.add("short-lived", VALID, {"country": "US"}, team="payments")
    fleet.publish("short-lived", VALID, ttl=6)
    eventually(lambda: labels(stack, "short-lived").get(TRUSTED) == "true", "trusted=true")
    assert labels(stack, "short-lived")[COUNTRY] == "US"
    report = stack.cp.client().get("/apis/trustgate.dev/v1alpha1/nodetrustreports/short-lived")
    version = report["metadata"]["resourceVersion"]
    _, claims = decode_unverified(report["spec"]["token"])
    invalid_from = claims["exp"] + SKEW_SECONDS
    eventually(lambda: labels(stack, "short-lived").get(TRUSTED) == "false", "trusted=false", timeout=30, interval=0.05)
    flipped = time.time()
    current = json.loads(fleet.stack.kubectl("get", "ntr", "short-lived", "-o", "json").stdout)
    assert current["metadata"]["resourceVersion"] == version  # nothing was written to the report meanwhile
    assert flipped >= invalid_from
    after = labels(stack, "short-lived")
    assert COUNTRY not in after and after["team"] == "payments"
    print(f"trusted=false seen {flipped - invalid_from:.3f}s after the report stopped being valid (exp + skew)")


def test_a_trusted_label_forged_by_hand_is_set_back(stack: DevStack, fleet: Fleet) -> None:
    fleet.add("forged", "none")
    eventually(lambda: labels(stack, "forged").get(TRUSTED) == "false", "trusted=false on a node without report")
    stack.kubectl("label", "node", "forged", f"{TRUSTED}=true", f"{COUNTRY}=US", "--overwrite")
    eventually(
        lambda: labels(stack, "forged").get(TRUSTED) == "false" and COUNTRY not in labels(stack, "forged"),
        "the forged labels set back",
    )
