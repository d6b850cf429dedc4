"""Trust policy: what a pod requires of its node, and whether a node meets it.

Pure functions over plain data. `requirement_for` derives a pod's requirement from its
node constraints and the TrustPolicies that select it (None: the pod needs no trust,
the cheap and common case). `evaluate` judges one node against a requirement and names
every check that fails, grouped by the source that demanded it, so that a `Warn` policy
never blocks and an `Enforce` one always does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trustgate.core import images
from trustgate.core.labels import ASSET_LABEL_PREFIX, TRUSTED_LABEL, is_trust_label
from trustgate.core.node import NodeTrust
from trustgate.core.reasons import Code, Reason
from trustgate.core.report import LEVELS
from trustgate.core.selectors import (
    LabelSelector,
    NodeConstraints,
    Requirement,
    SelectorError,
    parse_label_selector,
    parse_node_constraints,
)

ALL_LEVELS = frozenset(LEVELS)
NODE_AFFINITY = "node affinity"
_LEVEL_REASONS = {level: Reason(Code.LEVEL, f"level {level} not trusted") for level in LEVELS}
SELECT_ALL = LabelSelector()


class PolicyError(ValueError):
    """A pod or TrustPolicy whose trust requirement cannot be determined."""


class Enforcement(enum.StrEnum):
    ENFORCE = "Enforce"
    WARN = "Warn"
    AUDIT = "Audit"


class OnTrustLost(enum.StrEnum):
    """What happens to a running pod a policy selects when its node stops satisfying the policy."""

    REPORT = "Report"  # its PolicyReport result turns to fail, nothing else
    EVICT = "Evict"  # it is evicted through the Eviction API (PodDisruptionBudgets respected)


@dataclass(frozen=True)
class TrustPolicy:
    """A parsed `TrustPolicy`. Selectors are ANDed and a missing selector selects everything;
    with `encryptedImages`, only pods using a matching image are selected.

    A malformed policy keeps its `error` and fails closed, but only for what its well-formed parts
    select: a selector or image list that cannot be read is left out of the selection, and a policy
    with no readable selection part that was given selects nothing (`selects_nothing`). One typo can
    then never make a policy select, and refuse, every pod of the cluster."""

    name: str
    namespace_selector: LabelSelector = SELECT_ALL
    pod_selector: LabelSelector = SELECT_ALL
    encrypted_images: tuple[str, ...] = ()
    required_levels: frozenset[str] = ALL_LEVELS
    required_asset_tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    enforcement: Enforcement = Enforcement.ENFORCE
    on_trust_lost: OnTrustLost = OnTrustLost.REPORT
    error: Reason | None = None
    selects_nothing: bool = False

    def selects(self, pod: PodFacts, namespace_labels: Mapping[str, str]) -> bool:
        if self.selects_nothing:
            return False
        if not self.namespace_selector.matches(namespace_labels) or not self.pod_selector.matches(pod.labels):
            return False
        if self.encrypted_images:
            return any(self.encrypted_image(image) for image in pod.images)
        return True

    def encrypted_image(self, image: str) -> bool:
        return any(images.matches(image, pattern) for pattern in self.encrypted_images)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> TrustPolicy:
        """Parse a TrustPolicy object; a malformed one is kept, marked with its errors (see the class)."""
        metadata = resource.get("metadata") if isinstance(resource, Mapping) else None
        name = str((metadata if isinstance(metadata, Mapping) else {}).get("name") or "<unnamed>")
        if not isinstance(resource, Mapping):
            return cls(name=name, error=_invalid(name, ["not an object"]), selects_nothing=True)
        spec = resource.get("spec") or {}
        if not isinstance(spec, Mapping):
            return cls(name=name, error=_invalid(name, ["spec must be an object"]), selects_nothing=True)
        return _parse_policy(name, spec)


def _invalid(name: str, problems: list[str]) -> Reason:
    return Reason(Code.POLICY_INVALID, f"TrustPolicy {name} is invalid: {'; '.join(problems)}")


def _parse_policy(name: str, spec: Mapping[str, Any]) -> TrustPolicy:
    problems: list[str] = []
    selection_given, selection_read = 0, 0

    def part(key: str, parse: Any, default: Any) -> Any:
        nonlocal selection_given, selection_read
        selection = key in ("namespaceSelector", "podSelector", "encryptedImages")
        if spec.get(key) is None:
            return default
        selection_given += selection
        try:
            value = parse(spec[key])
        except (PolicyError, SelectorError, TypeError, AttributeError, ValueError) as error:
            problems.append(str(error))
            return default
        selection_read += selection
        return value

    namespace_selector = part("namespaceSelector", parse_label_selector, SELECT_ALL)
    pod_selector = part("podSelector", parse_label_selector, SELECT_ALL)
    encrypted = part("encryptedImages", _parse_images, ())
    levels = part("requiredLevels", _parse_levels, ALL_LEVELS)
    tags = part("requiredAssetTags", _parse_tags, MappingProxyType({}))
    enforcement = part("enforcement", _parse_enforcement, Enforcement.ENFORCE)
    on_trust_lost = part("onTrustLost", _parse_on_trust_lost, OnTrustLost.REPORT)
    if problems:
        enforcement = Enforcement.ENFORCE  # its text cannot be trusted: what it selects, it blocks
        on_trust_lost = OnTrustLost.REPORT  # ...but it never evicts: a typo must not empty a node
    return TrustPolicy(
        name=name,
        namespace_selector=namespace_selector,
        pod_selector=pod_selector,
        encrypted_images=encrypted,
        required_levels=levels,
        required_asset_tags=tags,
        enforcement=enforcement,
        on_trust_lost=on_trust_lost,
        error=_invalid(name, problems) if problems else None,
        selects_nothing=selection_given > selection_read and selection_read == 0,
    )


def _parse_images(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(i, str) and i for i in value):
        raise PolicyError("encryptedImages must be a list of image patterns")
    return tuple(value)


def _parse_levels(value: Any) -> frozenset[str]:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value) and set(value) <= ALL_LEVELS:
        return frozenset(value)
    raise PolicyError(f"requiredLevels must be a non-empty list of {', '.join(LEVELS)}")


def _parse_tags(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PolicyError("requiredAssetTags must map strings to strings")
    return MappingProxyType(dict(value))


def _parse_enforcement(value: Any) -> Enforcement:
    try:
        return Enforcement(value)
    except ValueError:
        raise PolicyError("enforcement must be Enforce, Warn or Audit") from None


def _parse_on_trust_lost(value: Any) -> OnTrustLost:
    try:
        return OnTrustLost(value)
    except ValueError:
        raise PolicyError("onTrustLost must be Report or Evict") from None


@dataclass(frozen=True)
class PodFacts:
    """What trust decisions read from a Pod."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    images: tuple[str, ...]
    constraints: NodeConstraints
    node_name: str


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    """Parse a `v1.Pod`; raises `PolicyError` when its node constraints are malformed."""
    if not isinstance(pod, Mapping):
        raise PolicyError("pod must be an object")
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
        raise PolicyError("pod metadata and spec must be objects")
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise PolicyError("pod labels must be an object")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise PolicyError("pod labels must be an object of strings")  # a podSelector could not match them
    for member in ("namespace", "name", "generateName"):
        if metadata.get(member) is not None and not isinstance(metadata[member], str):
            raise PolicyError(f"pod metadata.{member} must be a string")
    try:
        constraints = parse_node_constraints(spec)
    except SelectorError as error:
        raise PolicyError(f"pod node constraints: {error}") from None
    return PodFacts(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or metadata.get("generateName") or ""),
        labels=labels,
        images=tuple(_images(spec)),
        constraints=constraints,
        node_name=str(spec.get("nodeName") or ""),
    )


def _images(spec: Mapping[str, Any]) -> Iterable[str]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        containers = spec.get(kind) or []
        if not isinstance(containers, list):
            raise PolicyError(f"spec.{kind} must be a list")
        for container in containers:
            if not isinstance(container, Mapping):
                raise PolicyError(f"spec.{kind} entries must be objects")
            image = container.get("image")
            if isinstance(image, str):
                yield image


@dataclass(frozen=True)
class Source:
    """One reason a pod requires trust: its own node constraints, or a TrustPolicy."""

    name: str
    enforcement: Enforcement
    levels: frozenset[str]
    asset_tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    policy_error: Reason | None = None
    on_trust_lost: OnTrustLost = OnTrustLost.REPORT  # a pod's own node constraints only ever report


def policy_source(policy: TrustPolicy) -> Source:
    """A TrustPolicy as a source of a requirement: what it requires, how it enforces it, and its error
    when it is malformed. A pod's requirement and an image key's are made of the same sources."""
    return Source(
        name=f"TrustPolicy {policy.name}",
        enforcement=policy.enforcement,
        levels=policy.required_levels,
        asset_tags=policy.required_asset_tags,
        policy_error=policy.error,
        on_trust_lost=policy.on_trust_lost,
    )


@dataclass(frozen=True)
class TrustRequirement:
    sources: tuple[Source, ...]
    constraints: NodeConstraints | None  # the pod's constraints, when they use trust labels
    constraints_use_other_labels: bool = False

    @property
    def enforced(self) -> bool:
        return any(s.enforcement is Enforcement.ENFORCE for s in self.sources)

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)


def requirement_for(
    pod: PodFacts, namespace_labels: Mapping[str, str], policies: Sequence[TrustPolicy]
) -> TrustRequirement | None:
    """The pod's trust requirement, or None when it needs no trust."""
    selected = [p for p in policies if p.selects(pod, namespace_labels)]
    keys = pod.constraints.keys()
    uses_trust = any(_demands_trust(r) for r in pod.constraints.requirements())
    if not selected and not uses_trust:
        return None
    sources = [policy_source(p) for p in selected]
    if uses_trust:
        # Only an Enforce policy narrows what the pod's own selectors enforce: a Warn or Audit policy adds
        # warnings and records and never removes a check.
        enforcing = [p.required_levels for p in selected if p.enforcement is Enforcement.ENFORCE and p.error is None]
        narrowed = frozenset().union(*enforcing) if enforcing else ALL_LEVELS
        sources.insert(0, Source(name=NODE_AFFINITY, enforcement=Enforcement.ENFORCE, levels=narrowed))
    return TrustRequirement(
        sources=tuple(sources),
        constraints=pod.constraints if uses_trust else None,
        constraints_use_other_labels=any(not is_trust_label(k) for k in keys),
    )


def _demands_trust(requirement: Requirement) -> bool:
    if requirement.key == TRUSTED_LABEL:
        return requirement.operator == "In" and "true" in requirement.values
    return requirement.key.startswith(ASSET_LABEL_PREFIX)


@dataclass(frozen=True)
class Failure:
    source: Source
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class Verdict:
    node: str
    failures: tuple[Failure, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def enforced_failures(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.source.enforcement is Enforcement.ENFORCE)

    @property
    def blocked(self) -> bool:
        return bool(self.enforced_failures)

    def reasons(self, failures: Iterable[Failure] | None = None) -> list[Reason]:
        """Every distinct failed check, in order."""
        seen: dict[Reason, None] = {}
        for failure in self.failures if failures is None else failures:
            seen.update(dict.fromkeys(failure.reasons))
        return list(seen)


def evaluate(requirement: TrustRequirement, node: NodeTrust, now: float, skew: float) -> Verdict:
    """Judge `node` against `requirement` at time `now`."""
    base = node.failure_at(now, skew)
    failures: list[Failure] = []
    for source in requirement.sources:
        reasons: list[Reason]
        if source.policy_error is not None:
            reasons = [source.policy_error]
        elif base is not None:
            reasons = [base]
        else:
            reasons = [
                _LEVEL_REASONS[level] for level in LEVELS if level in source.levels and level not in node.trusted_levels
            ]
            reasons += _asset_tag_reasons(source, node)
            if source.name == NODE_AFFINITY and requirement.constraints is not None:
                reasons += _constraint_reasons(requirement, node, trusted=not reasons)
        if reasons:
            failures.append(Failure(source=source, reasons=tuple(reasons)))
    return Verdict(node=node.name, failures=tuple(failures))


def _asset_tag_reasons(source: Source, node: NodeTrust) -> list[Reason]:
    tags = node.report.asset_tags if node.report else {}
    reasons = []
    for tag, wanted in source.asset_tags.items():
        actual = tags.get(tag)
        if actual is None:
            reasons.append(Reason(Code.ASSET_TAG, f"asset tag {tag} missing, {source.name} requires {wanted}"))
        elif actual != wanted:
            reasons.append(Reason(Code.ASSET_TAG, f"asset tag {tag}={actual} not in [{wanted}]"))
    return reasons


def _constraint_reasons(requirement: TrustRequirement, node: NodeTrust, trusted: bool) -> list[Reason]:
    constraints = requirement.constraints
    assert constraints is not None
    labels = node.label_view(trusted=trusted, include_unsigned=requirement.constraints_use_other_labels)
    if constraints.matches(labels, node.name):
        return []
    failed = [r for r in constraints.node_selector if not r.matches(labels)]
    for term in constraints.terms or ():
        failed += [r for r in term.expressions if not r.matches(labels)]
    reasons = [reason for reason in (_requirement_reason(r, labels) for r in failed) if reason is not None]
    if reasons or not trusted:  # not trusted: the level reasons already say why
        return reasons
    return [Reason(Code.NODE_LABEL, "node affinity not satisfied by the node's verified labels")]


def _requirement_reason(requirement: Requirement, labels: Mapping[str, str]) -> Reason | None:
    key = requirement.key
    if key == TRUSTED_LABEL:
        return None  # a false `trusted` already has its level reasons
    if not key.startswith(ASSET_LABEL_PREFIX):
        return Reason(Code.NODE_LABEL, f"node label {requirement.describe()} not satisfied")
    tag, value, values = key[len(ASSET_LABEL_PREFIX) :], labels.get(key), ", ".join(requirement.values)
    op = requirement.operator
    if op == "In":
        message = (
            f"asset tag {tag}={value} not in [{values}]"
            if value is not None
            else f"asset tag {tag} missing, required in [{values}]"
        )
    elif op == "NotIn":
        message = f"asset tag {tag}={value} is excluded by [{values}]"
    elif op == "Exists":
        message = f"asset tag {tag} missing"
    elif op == "DoesNotExist":
        message = f"asset tag {tag}={value} present, must be absent"
    else:
        message = f"asset tag {tag}={value} fails {requirement.describe()}"
    return Reason(Code.ASSET_TAG, message)
