"""Kubernetes selector semantics: node constraints (nodeSelector + required affinity) and label selectors."""

from __future__ import annotations

from typing import Any

import pytest

from devkit.factories import pod_object
from trustgate.core.selectors import (
    LABEL_OPERATORS,
    NODE_OPERATORS,
    Requirement,
    SelectorError,
    parse_label_selector,
    parse_node_constraints,
    parse_requirement,
)

ZONE = "topology.kubernetes.io/zone"


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expression["values"] = list(values)
    return expression


def constraints(node_selector: dict[str, str] | None = None, terms: list[dict[str, Any]] | None = None):
    return parse_node_constraints(pod_object(node_selector=node_selector, affinity_terms=terms)["spec"])


# --- one expression ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "labels", "expected"),
    [
        (expr(ZONE, "In", "a", "b"), {ZONE: "b"}, True),
        (expr(ZONE, "In", "a", "b"), {ZONE: "c"}, False),
        (expr(ZONE, "In", "a"), {}, False),
        (expr(ZONE, "NotIn", "a"), {ZONE: "b"}, True),
        (expr(ZONE, "NotIn", "a"), {ZONE: "a"}, False),
        (expr(ZONE, "NotIn", "a"), {}, True),
        (expr(ZONE, "Exists"), {ZONE: ""}, True),
        (expr(ZONE, "Exists"), {}, False),
        (expr(ZONE, "DoesNotExist"), {}, True),
        (expr(ZONE, "DoesNotExist"), {ZONE: "a"}, False),
        (expr("cores", "Gt", "8"), {"cores": "16"}, True),
        (expr("cores", "Gt", "8"), {"cores": "8"}, False),
        (expr("cores", "Gt", "8"), {"cores": "many"}, False),
        (expr("cores", "Gt", "8"), {}, False),
        (expr("cores", "Lt", "8"), {"cores": "4"}, True),
        (expr("cores", "Lt", "8"), {"cores": "8"}, False),
        (expr("cores", "Lt", "8"), {"cores": "-1"}, True),
        (expr("cores", "Lt", "8"), {}, False),
    ],
    ids=lambda value: None,
)
def test_each_node_affinity_operator_follows_kubernetes_semantics(expression, labels, expected: bool) -> None:
    requirement = parse_requirement(expression, NODE_OPERATORS)

    assert requirement.matches(labels) is expected


def test_notin_and_doesnotexist_match_a_node_without_the_label() -> None:
    term = [expr(ZONE, "NotIn", "a"), expr("gpu", "DoesNotExist")]

    assert constraints(terms=[{"matchExpressions": term}]).matches({}, "n1")


def test_gt_and_lt_are_not_label_selector_operators() -> None:
    with pytest.raises(SelectorError, match="operator 'Gt' of key cores is not one of DoesNotExist, Exists, In, NotIn"):
        parse_requirement(expr("cores", "Gt", "8"), LABEL_OPERATORS)


def test_requirements_describe_themselves_for_reasons() -> None:
    assert Requirement(ZONE, "In", ("a", "b")).describe() == f"{ZONE} In [a, b]"
    assert Requirement(ZONE, "Exists").describe() == f"{ZONE} Exists"


# --- node constraints -------------------------------------------------------------------------------


def test_required_affinity_terms_are_ored() -> None:
    parsed = constraints(
        terms=[{"matchExpressions": [expr(ZONE, "In", "a")]}, {"matchExpressions": [expr(ZONE, "In", "b")]}]
    )

    assert parsed.matches({ZONE: "a"}) and parsed.matches({ZONE: "b"})
    assert not parsed.matches({ZONE: "c"})


def test_expressions_within_a_term_are_anded() -> None:
    parsed = constraints(terms=[{"matchExpressions": [expr(ZONE, "In", "a"), expr("gpu", "Exists")]}])

    assert parsed.matches({ZONE: "a", "gpu": "t4"})
    assert not parsed.matches({ZONE: "a"})
    assert not parsed.matches({"gpu": "t4"})


def test_node_selector_is_anded_with_the_affinity_terms() -> None:
    parsed = constraints(node_selector={"disk": "ssd"}, terms=[{"matchExpressions": [expr(ZONE, "In", "a")]}])

    assert parsed.matches({"disk": "ssd", ZONE: "a"})
    assert not parsed.matches({"disk": "hdd", ZONE: "a"})
    assert not parsed.matches({"disk": "ssd", ZONE: "b"})


@pytest.mark.parametrize("term", [{}, {"matchExpressions": []}, {"matchExpressions": [], "matchFields": []}])
def test_an_empty_term_matches_no_node(term) -> None:
    assert not constraints(terms=[term]).matches({ZONE: "a"}, "n1")


def test_an_empty_term_does_not_stop_another_term_from_matching() -> None:
    assert constraints(terms=[{}, {"matchExpressions": [expr(ZONE, "In", "a")]}]).matches({ZONE: "a"}, "n1")


def test_an_empty_list_of_terms_matches_no_node() -> None:
    assert not constraints(terms=[]).matches({ZONE: "a"}, "n1")


def test_match_fields_selects_by_node_name() -> None:
    parsed = constraints(terms=[{"matchFields": [expr("metadata.name", "In", "n1")]}])

    assert parsed.matches({}, "n1")
    assert not parsed.matches({}, "n2")


def test_match_fields_and_expressions_of_one_term_are_anded() -> None:
    parsed = constraints(
        terms=[{"matchFields": [expr("metadata.name", "NotIn", "n2")], "matchExpressions": [expr(ZONE, "In", "a")]}]
    )

    assert parsed.matches({ZONE: "a"}, "n1")
    assert not parsed.matches({ZONE: "a"}, "n2")
    assert not parsed.matches({ZONE: "b"}, "n1")


def test_a_label_called_metadata_name_does_not_satisfy_match_fields() -> None:
    parsed = constraints(terms=[{"matchFields": [expr("metadata.name", "In", "n1")]}])

    assert not parsed.matches({"metadata.name": "n1"}, "n2")


def test_a_pod_without_constraints_matches_every_node_and_has_no_keys() -> None:
    parsed = constraints()

    assert parsed.terms is None
    assert parsed.matches({}, "n1")
    assert parsed.keys() == frozenset()


def test_constraint_keys_and_requirements_cover_selector_and_terms_but_not_fields() -> None:
    parsed = constraints(
        node_selector={"disk": "ssd"},
        terms=[
            {"matchExpressions": [expr(ZONE, "In", "a")], "matchFields": [expr("metadata.name", "In", "n1")]},
            {"matchExpressions": [expr("gpu", "Exists")]},
        ],
    )

    assert parsed.keys() == {"disk", ZONE, "gpu"}
    assert [r.key for r in parsed.requirements()] == ["disk", ZONE, "gpu"]


# --- label selectors --------------------------------------------------------------------------------


def test_a_label_selector_ands_match_labels_and_match_expressions() -> None:
    selector = parse_label_selector(
        {"matchLabels": {"team": "payments"}, "matchExpressions": [expr("env", "In", "prod", "staging")]}
    )

    assert selector.matches({"team": "payments", "env": "prod"})
    assert not selector.matches({"team": "payments", "env": "dev"})
    assert not selector.matches({"team": "search", "env": "prod"})
    assert not selector.matches({"env": "prod"})


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": {}, "matchExpressions": []}, {"matchLabels": None}])
def test_an_absent_or_empty_label_selector_matches_everything(selector) -> None:
    assert parse_label_selector(selector).matches({})
    assert parse_label_selector(selector).matches({"any": "thing"})


# --- malformed selectors raise ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("zone In a", "a match expression must be an object"),
        ({"operator": "Exists"}, "a match expression needs a key"),
        (expr("", "Exists"), "a match expression needs a key"),
        ({"key": 5, "operator": "Exists"}, "a match expression needs a key"),
        (expr(ZONE, "Like", "a"), f"operator 'Like' of key {ZONE} is not one of"),
        (expr(ZONE, "in", "a"), f"operator 'in' of key {ZONE} is not one of"),
        ({"key": ZONE}, f"operator None of key {ZONE} is not one of"),
        ({"key": ZONE, "operator": ["In"], "values": ["a"]}, f"operator ['In'] of key {ZONE} is not one of"),
        ({"key": ZONE, "operator": {"op": "In"}}, f"operator {{'op': 'In'}} of key {ZONE} is not one of"),
        ({"key": ZONE, "operator": "In", "values": "a"}, f"values of key {ZONE} must be a list of strings"),
        ({"key": ZONE, "operator": "In", "values": [1]}, f"values of key {ZONE} must be a list of strings"),
        (expr(ZONE, "In"), f"operator In of key {ZONE} needs at least one value"),
        (expr(ZONE, "NotIn"), f"operator NotIn of key {ZONE} needs at least one value"),
        (expr(ZONE, "Exists", "a"), f"operator Exists of key {ZONE} takes no values"),
        (expr(ZONE, "DoesNotExist", "a"), f"operator DoesNotExist of key {ZONE} takes no values"),
        (expr("cores", "Gt"), "operator Gt of key cores needs exactly one value"),
        (expr("cores", "Lt", "1", "2"), "operator Lt of key cores needs exactly one value"),
    ],
    ids=lambda value: None,
)
def test_a_malformed_match_expression_raises_a_selector_error(expression, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_requirement(expression, NODE_OPERATORS)

    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        ("team=payments", "a label selector must be an object"),
        ({"matchLabels": ["team=payments"]}, "matchLabels must map strings to strings"),
        ({"matchLabels": {"replicas": 3}}, "matchLabels must map strings to strings"),
        ({"matchExpressions": {"key": "env"}}, "matchExpressions must be a list"),
        ({"matchExpressions": [expr("cores", "Gt", "1")]}, "operator 'Gt' of key cores is not one of"),
    ],
)
def test_a_malformed_label_selector_raises_a_selector_error(selector, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(selector)

    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"nodeSelector": ["disk=ssd"]}, "spec.nodeSelector must map strings to strings"),
        ({"nodeSelector": {"cores": 8}}, "spec.nodeSelector must map strings to strings"),
        ({"affinity": "node"}, "nodeAffinity's parent must be an object"),
        (
            {"affinity": {"nodeAffinity": []}},
            "requiredDuringSchedulingIgnoredDuringExecution's parent must be an object",
        ),
        (
            {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}},
            "requiredDuringSchedulingIgnoredDuringExecution needs a nodeSelectorTerms list",
        ),
        (
            {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}},
            "requiredDuringSchedulingIgnoredDuringExecution needs a nodeSelectorTerms list",
        ),
    ],
)
def test_a_malformed_pod_spec_raises_a_selector_error(spec, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_node_constraints(spec)

    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("term", "reason"),
    [
        ("zone=a", "a nodeSelectorTerm must be an object"),
        ({"matchExpressions": {"key": ZONE}}, "matchExpressions and matchFields must be lists"),
        ({"matchFields": "metadata.name"}, "matchExpressions and matchFields must be lists"),
        ({"matchFields": [expr("metadata.namespace", "In", "x")]}, "matchFields supports only metadata.name"),
        ({"matchExpressions": [expr(ZONE, "Near", "a")]}, f"operator 'Near' of key {ZONE} is not one of"),
    ],
)
def test_a_malformed_node_selector_term_raises_a_selector_error(term, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        constraints(terms=[term])

    assert str(caught.value).startswith(reason)


def test_preferred_affinity_is_not_a_hard_constraint() -> None:
    spec = {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}}}

    assert parse_node_constraints(spec).terms is None
