"""The queries of trustgate's alerts and dashboard (chart/trustgate/files), and the metrics they name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

FILES = Path(__file__).resolve().parents[1] / "chart" / "trustgate" / "files"
RULES = FILES / "prometheus-rules.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"
# Grafana's own variables, as it substitutes them before sending a query
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def rule_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    for panel in panels(json.loads(DASHBOARD.read_text())["panels"]):
        for target in panel.get("targets") or []:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            yield panel["title"], expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (raises ValueError when it does not parse)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        kind = type(node).__name__
        if kind == "VectorSelector":
            names.add(node.name or _name_matcher(node))
        elif kind == "MatrixSelector":
            visit(node.vector_selector)
        elif kind == "BinaryExpr":
            visit(node.lhs)
            visit(node.rhs)
        elif kind in ("AggregateExpr", "ParenExpr", "UnaryExpr", "SubqueryExpr"):
            visit(node.expr)
        elif kind == "Call":
            for argument in node.args:
                visit(argument)

    visit(promql_parser.parse(expr))
    return names - {""}


def _name_matcher(selector: Any) -> str:
    match = re.search(r'__name__="([^"]+)"', str(selector))
    return match.group(1) if match else ""


def exposed_names(text: str) -> set[str]:
    """Every sample name a /metrics exposition can serve, from its families' names and types (a labelled
    counter that has counted nothing yet still declares its family)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "untyped": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names
