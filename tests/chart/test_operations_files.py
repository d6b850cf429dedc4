"""trustgate's alert rules and dashboard are well-formed files whose every query is valid PromQL."""

from __future__ import annotations

import json

import pytest
import yaml

from ..operations import DASHBOARD, RULES, dashboard_queries, metric_names, rule_queries

ALERTS = {
    "TrustgateAuditRecordsUnrecorded",
    "TrustgateAuditWriteFailures",
    "TrustgateCacheNotSynced",
    "TrustgateRefusalSpike",
    "TrustgateNodeLostTrust",
    "TrustgateReportExpiringSoon",
}


def test_the_rules_file_is_the_groups_of_a_prometheus_rule_with_the_alerts_operators_need() -> None:
    rules = yaml.safe_load(RULES.read_text())

    assert list(rules) == ["groups"]
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts >= ALERTS
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize(("name", "expr"), [*rule_queries(), *dashboard_queries()], ids=lambda v: None)
def test_every_query_is_valid_promql_that_names_only_trustgate_metrics(name: str, expr: str) -> None:
    names = metric_names(expr)

    assert names, f"{name}: selects no metric"
    assert all(n.startswith("trustgate_") for n in names), f"{name}: {names}"


def test_the_dashboard_is_a_grafana_dashboard_over_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())

    assert dashboard["uid"] == "trustgate" and dashboard["schemaVersion"] >= 36
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12 and all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
