"""Kubernetes selector semantics, as the API server and kube-scheduler apply them.

Two kinds: `metav1.LabelSelector` (TrustPolicy's namespace and pod selectors) and the
pod's node constraints (`nodeSelector` plus required node affinity: terms ORed,
expressions within a term ANDed). Parsing is strict: a malformed selector raises
`SelectorError` instead of matching everything or nothing by accident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LABEL_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
NODE_OPERATORS = LABEL_OPERATORS | {"Gt", "Lt"}


class SelectorError(ValueError):
    """A selector that does not follow the Kubernetes API rules."""


@dataclass(frozen=True)
class Requirement:
    """One `key operator values` expression."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "In":
            return labels.get(self.key) in self.values
        if op == "NotIn":
            return labels.get(self.key) not in self.values
        if op == "Exists":
            return self.key in labels
        if op == "DoesNotExist":
            return self.key not in labels
        value = labels.get(self.key)
        try:
            number, bound = int(value), int(self.values[0])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return number > bound if op == "Gt" else number < bound

    def describe(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{self.key} {self.operator}"
        return f"{self.key} {self.operator} [{', '.join(self.values)}]"


def parse_requirement(expression: Any, operators: frozenset[str]) -> Requirement:
    if not isinstance(expression, Mapping):
        raise SelectorError("a match expression must be an object")
    key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError("a match expression needs a key")
    if not isinstance(operator, str) or operator not in operators:
        raise SelectorError(f"operator {operator!r} of key {key} is not one of {', '.join(sorted(operators))}")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"values of key {key} must be a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise SelectorError(f"operator {operator} of key {key} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f"operator {operator} of key {key} takes no values")
    if operator in ("Gt", "Lt") and len(values) != 1:
        raise SelectorError(f"operator {operator} of key {key} needs exactly one value")
    return Requirement(key=key, operator=operator, values=tuple(values))


@dataclass(frozen=True)
class LabelSelector:
    """A parsed `metav1.LabelSelector`: every requirement must hold (the empty selector matches all)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)


def parse_label_selector(selector: Any) -> LabelSelector:
    if selector is None:
        return LabelSelector()
    if not isinstance(selector, Mapping):
        raise SelectorError("a label selector must be an object")
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in match_labels.items()
    ):
        raise SelectorError("matchLabels must map strings to strings")
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError("matchExpressions must be a list")
    requirements = [Requirement(k, "In", (v,)) for k, v in match_labels.items()]
    requirements += [parse_requirement(e, LABEL_OPERATORS) for e in expressions]
    return LabelSelector(tuple(requirements))


@dataclass(frozen=True)
class NodeSelectorTerm:
    """Expressions ANDed; `matchFields` supports `metadata.name`, the only field Kubernetes allows."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str], node_name: str) -> bool:
        if not self.expressions and not self.fields:
            return False  # an empty term selects no node (k8s.io/component-helpers nodeaffinity)
        return all(r.matches(labels) for r in self.expressions) and all(
            r.matches({"metadata.name": node_name}) for r in self.fields
        )


@dataclass(frozen=True)
class NodeConstraints:
    """A pod's hard node constraints: `nodeSelector` ANDed with the ORed required affinity terms."""

    node_selector: tuple[Requirement, ...] = ()
    terms: tuple[NodeSelectorTerm, ...] | None = None  # None: no required node affinity

    def matches(self, labels: Mapping[str, str], node_name: str = "") -> bool:
        if not all(r.matches(labels) for r in self.node_selector):
            return False
        return self.terms is None or any(term.matches(labels, node_name) for term in self.terms)

    def keys(self) -> frozenset[str]:
        keys = {r.key for r in self.node_selector}
        for term in self.terms or ():
            keys.update(r.key for r in term.expressions)
        return frozenset(keys)

    def requirements(self) -> Sequence[Requirement]:
        found = list(self.node_selector)
        for term in self.terms or ():
            found.extend(term.expressions)
        return found


def parse_node_constraints(pod_spec: Mapping[str, Any]) -> NodeConstraints:
    node_selector = pod_spec.get("nodeSelector") or {}
    if not isinstance(node_selector, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in node_selector.items()
    ):
        raise SelectorError("spec.nodeSelector must map strings to strings")
    selector = tuple(Requirement(k, "In", (v,)) for k, v in node_selector.items())
    required = _dig(pod_spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return NodeConstraints(node_selector=selector)
    terms_raw = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    if not isinstance(terms_raw, list):
        raise SelectorError("requiredDuringSchedulingIgnoredDuringExecution needs a nodeSelectorTerms list")
    terms = []
    for term in terms_raw:
        if not isinstance(term, Mapping):
            raise SelectorError("a nodeSelectorTerm must be an object")
        expressions, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
        if not isinstance(expressions, list) or not isinstance(fields, list):
            raise SelectorError("matchExpressions and matchFields must be lists")
        parsed_fields = tuple(parse_requirement(f, NODE_OPERATORS) for f in fields)
        if any(f.key != "metadata.name" for f in parsed_fields):
            raise SelectorError("matchFields supports only metadata.name")
        terms.append(NodeSelectorTerm(tuple(parse_requirement(e, NODE_OPERATORS) for e in expressions), parsed_fields))
    return NodeConstraints(node_selector=selector, terms=tuple(terms))


def _dig(value: Any, *path: str) -> Any:
    for name in path:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise SelectorError(f"{name}'s parent must be an object")
        value = value.get(name)
    return value
