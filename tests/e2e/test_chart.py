"""The chart's objects are accepted by the real API server, as an operator's `helm install` sends them.

Every object the chart renders (with everything enabled) is applied with a server-side dry run against
the dev stack's kube-apiserver, so its schema, defaulting and admission (CEL of the admission policy
included) run exactly as at install, without changing the stack.
"""

from __future__ import annotations

from typing import Any

import pytest

from devkit import chart
from devkit.devstack import ISSUER, DevStack

pytestmark = pytest.mark.e2e

NAMESPACE = "chart-dry-run"
VALUES: dict[str, Any] = {"issuer": {"name": ISSUER}, "attestation": {"enabled": True}, "agent": {"enabled": True}}


def test_every_object_the_chart_renders_is_accepted_by_the_api_server(stack: DevStack) -> None:
    stack.kubectl("create", "namespace", NAMESPACE, check=False)
    objects = chart.render(VALUES, namespace=NAMESPACE)
    result = stack.kubectl("apply", "--dry-run=server", "-f", "-", input=chart.as_list(objects), check=False)
    assert result.returncode == 0, result.stderr
    accepted = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(objects), result.stdout


def test_the_api_server_refuses_a_trust_policy_the_crd_rules_out(stack: DevStack) -> None:
    """The control: the dry run does judge what it is given (here the CRD's own validation)."""
    policy = {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "dry-run-bad"},
        "spec": {"podSelector": {"matchLabels": {"a": "b"}}, "enforcement": "Sometimes"},
    }
    result = stack.kubectl("apply", "--dry-run=server", "-f", "-", input=chart.as_list([policy]), check=False)
    assert result.returncode != 0
    assert "enforcement" in result.stderr
