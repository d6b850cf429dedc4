"""The alerts and the dashboard name only metrics that trustgate's services serve, on the dev stack."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator

import pytest

from devkit.devstack import ISSUER, SERVICES, DevStack
from devkit.fleet import VALID, Fleet
from devkit.waiting import eventually

from ..operations import dashboard_queries, exposed_names, metric_names, rule_queries

pytestmark = pytest.mark.e2e


def scrape(stack: DevStack, service: str) -> str:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with urllib.request.urlopen(f"{stack.url(service)}/metrics", context=context, timeout=5) as response:
        return response.read().decode()


@pytest.fixture
def reporting_node(stack: DevStack) -> Iterator[str]:
    """A node with a valid report (its expiry is a series), unschedulable and gone afterwards: other
    modules count the stack's trusted nodes."""
    name = "operations-valid"
    Fleet(stack, ISSUER).add(name, VALID)
    stack.kubectl("cordon", name)
    try:
        yield name
    finally:
        stack.kubectl("delete", "nodetrustreport", name, "--ignore-not-found")
        stack.kubectl("delete", "node", name, "--ignore-not-found")


def test_every_metric_an_alert_or_a_dashboard_panel_uses_is_served_by_a_trustgate_service(
    stack: DevStack, reporting_node: str
) -> None:
    eventually(lambda: reporting_node in scrape(stack, "controller"), "the controller to see the report", 30)
    served = {service: exposed_names(scrape(stack, service)) for service in SERVICES}
    everything = set().union(*served.values())

    used = {(name, metric) for name, expr in [*rule_queries(), *dashboard_queries()] for metric in metric_names(expr)}
    missing = sorted({f"{name}: {metric}" for name, metric in used if metric not in everything})

    assert not missing, f"queries name metrics no service serves: {missing}"
    assert {m for _, m in used} >= {
        "trustgate_audit_unrecorded_total",
        "trustgate_node_trust_losses_total",
        "trustgate_node_report_expiry_timestamp_seconds",
        "trustgate_pod_trust_results",
    }
    print(f"\n{len({m for _, m in used})} metrics used by the alerts and the dashboard, all served")
