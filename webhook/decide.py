"""Admission decisions: pure functions from a `Snapshot` and an `AdmissionRequest` to a `Decision`.

Handled requests (everything else is allowed untouched, it cannot place a pod on a node):

- `pods` CREATE with `spec.nodeName` set (such a pod skips the scheduler and the binding);
- `pods` UPDATE of a bound pod (its images or labels may make it trust-requiring, or require more);
- `pods/binding` and legacy `bindings` CREATE: the object is a Binding, the pod is looked up;
- `pods/ephemeralcontainers` UPDATE: the object is the whole Pod, ephemeral containers included.

Fail closed: while the trust cache is not synced, for a pod that cannot be found, a malformed
object or a pod whose requirement cannot be read, the request is rejected with a clear message.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trustgate.audit.record import DECISION_AUDITED, DECISION_REJECTED, DECISION_WARNED
from trustgate.core.labels import TRUST_RESOURCE
from trustgate.core.policy import Enforcement, Failure, PodFacts, PolicyError, TrustRequirement, Verdict, pod_facts
from trustgate.core.reasons import Code, Reason, describe
from trustgate.core.snapshot import ClusterView, Snapshot, UnknownNamespace
from webhook.mark import is_marked, mark_patch
from webhook.review import AdmissionRequest

PREFIX = "trustgate: "

CODE_FORBIDDEN = 403
CODE_BAD_REQUEST = 400
CODE_UNAVAILABLE = 503

_EMPTY: Mapping[str, str] = MappingProxyType({})
_RANK = {Enforcement.ENFORCE: 0, Enforcement.WARN: 1, Enforcement.AUDIT: 2}


@dataclass(frozen=True)
class Violation:
    """What an audit record says about a decision that is not a plain allow."""

    decision: str  # rejected | warned | audited
    namespace: str
    pod: str
    node: str
    reasons: tuple[Reason, ...]
    policy: str = ""
    enforcement: str = ""
    pod_uid: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: int = 200
    message: str = ""
    warnings: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    violation: Violation | None = None

    @property
    def outcome(self) -> str:
        """`allowed`, or the violation's decision (`rejected`, `warned`, `audited`)."""
        if self.violation is not None:
            return self.violation.decision
        return "allowed" if self.allowed else DECISION_REJECTED


ALLOW = Decision(allowed=True)


class _Reject(Exception):
    """A request decided as a fail-closed rejection before any policy evaluation."""

    def __init__(self, reason: Reason, code: int, namespace: str = "", pod: str = "", node: str = "") -> None:
        super().__init__(reason.message)
        self.reason, self.code, self.namespace, self.pod, self.node = reason, code, namespace, pod, node


def decide(snapshot: Snapshot, request: AdmissionRequest, reads: ClusterView, now: float | None = None) -> Decision:
    """The decision for one admission request, from `snapshot`; `reads` finds what it has not seen (a
    Binding's pod, a namespace created a moment ago)."""
    try:
        return _decide(snapshot, request, reads, now)
    except _Reject as reject:
        return refuse(reject.reason, reject.code, reject.namespace, reject.pod, reject.node)


def _decide(snapshot: Snapshot, request: AdmissionRequest, reads: ClusterView, now: float | None) -> Decision:
    if request.problems:
        raise _bad("malformed AdmissionReview: " + "; ".join(request.problems))
    if request.resource.group != "":
        return ALLOW  # not a core resource: no pod placement
    route = (request.resource.resource, request.sub_resource, request.operation)
    handler = _ROUTES.get(route)
    if handler is None:
        return ALLOW  # cannot change the node a pod runs on, nor what it requires there
    return handler(_Context(snapshot, request, reads, time.time() if now is None else now))


@dataclass(frozen=True)
class _Context:
    snapshot: Snapshot
    request: AdmissionRequest
    reads: ClusterView
    now: float


def _pod_create(ctx: _Context) -> Decision:
    pod = _object_of_kind(ctx.request, "Pod")
    node = _node_name(pod)
    if not node:
        return _unbound(ctx, pod)  # the extender will filter and bind it: it must carry the mark
    return _judge(ctx, pod, node, created=True)


def _unbound(ctx: _Context, pod: Mapping[str, Any]) -> Decision:
    """A pod not bound yet must carry trustgate's mark if it requires trust: without it kube-scheduler
    would not consult the extender (the mutating webhook adds the mark at creation)."""
    facts = _facts(ctx, pod, "", "")
    if is_marked(pod) or _requirement(ctx, facts, "") is None:
        return ALLOW
    reason = Reason(
        Code.NOT_MARKED,
        f"pod {facts.namespace}/{facts.name} requires trust but does not request {TRUST_RESOURCE}: without it "
        "the scheduler would place it unchecked (trustgate's mutating webhook adds it at creation; recreate the pod)",
    )
    return refuse(reason, CODE_FORBIDDEN, facts.namespace, facts.name)


def mark(snapshot: Snapshot, request: AdmissionRequest, reads: ClusterView, now: float | None = None) -> Marking:
    """The mutating step: the patch that marks a trust-requiring pod being created, or why it cannot be told."""
    try:
        pod = _object_of_kind(request, "Pod")
        if request.problems or request.operation != "CREATE" or _node_name(pod):
            return Marking()
        ctx = _Context(snapshot, request, reads, time.time() if now is None else now)
        if _requirement(ctx, _facts(ctx, pod, "", ""), "") is None:
            return Marking()
        return Marking(patch=tuple(mark_patch(pod)))
    except _Reject as reject:
        return Marking(refusal=refuse(reject.reason, reject.code, reject.namespace, reject.pod, reject.node))


@dataclass(frozen=True)
class Marking:
    """A JSON patch for the pod (empty: none), or a refusal when its requirement cannot be read."""

    patch: tuple[dict[str, Any], ...] = ()
    refusal: Decision | None = None


def _pod_update(ctx: _Context) -> Decision:
    """A bound pod whose images or labels change may not become trust-requiring, or require more, on a node
    that fails it. What failed already before the update (the node lost trust after placement) is not the
    update's doing: it is reported for running pods, not refused here."""
    pod = _object_of_kind(ctx.request, "Pod")
    node = _node_name(pod)
    if not node:
        return _unbound(ctx, pod)  # a label change may have made it trust-requiring after its creation
    decision = _judge(ctx, pod, node)
    if decision.allowed or not isinstance(ctx.request.old_object, Mapping):
        return decision
    before, after = _blocking(ctx, ctx.request.old_object, node), _blocking(ctx, pod, node)
    return ALLOW if before is not None and after is not None and after <= before else decision


def _ephemeral_containers(ctx: _Context) -> Decision:
    pod = _object_of_kind(ctx.request, "Pod")
    node = _node_name(pod)
    if not node:
        return ALLOW  # not bound yet: the Binding will see the ephemeral containers
    return _judge(ctx, pod, node)


def _binding(ctx: _Context) -> Decision:
    request, snapshot = ctx.request, ctx.snapshot
    binding = _object_of_kind(request, "Binding")
    metadata = binding.get("metadata") or {}
    target = binding.get("target") or {}
    if not isinstance(metadata, Mapping) or not isinstance(target, Mapping):
        raise _bad("malformed Binding: metadata and target must be objects")
    for member in ("name", "namespace"):
        if metadata.get(member) is not None and not isinstance(metadata[member], str):
            raise _bad(f"malformed Binding: metadata.{member} must be a string")
    name = _text(metadata.get("name")) or request.name
    namespace = _text(metadata.get("namespace")) or request.namespace
    uid = _text(metadata.get("uid"))
    node = _text(target.get("name"))
    if not name or not namespace:
        raise _bad("malformed Binding: no pod name or namespace")
    if request.name and request.name != name:
        raise _bad(
            f"malformed Binding: name {name} does not match the request's pod {request.name}", namespace, request.name
        )
    if target.get("kind") not in (None, "", "Node") or not node:
        raise _bad(f"malformed Binding for pod {namespace}/{name}: target must name a Node")
    if not snapshot.synced:
        raise _Reject(_not_ready(namespace, name, node), CODE_UNAVAILABLE, namespace, name, node)
    pod = ctx.reads.find_pod(namespace, name, uid)
    if pod is None:
        raise _Reject(
            Reason(
                Code.POD_NOT_FOUND, f"pod not found: cannot check the binding of pod {namespace}/{name} to node {node}"
            ),
            CODE_FORBIDDEN,
            namespace,
            name,
            node,
        )
    return _judge(ctx, pod, node, namespace=namespace)


_ROUTES: dict[tuple[str, str, str], Callable[[_Context], Decision]] = {
    ("pods", "", "CREATE"): _pod_create,
    ("pods", "", "UPDATE"): _pod_update,
    ("pods", "binding", "CREATE"): _binding,
    ("bindings", "", "CREATE"): _binding,
    ("pods", "ephemeralcontainers", "UPDATE"): _ephemeral_containers,
}


def _judge(ctx: _Context, pod: Mapping[str, Any], node: str, namespace: str = "", created: bool = False) -> Decision:
    """Evaluate `pod` on `node`: allow, warn, audit or reject. `created`: the pod exists only if admitted."""
    facts = _facts(ctx, pod, node, namespace)
    requirement = _requirement(ctx, facts, node)
    if requirement is None:
        return ALLOW
    verdict = ctx.snapshot.evaluate(requirement, ctx.snapshot.node(node), ctx.now)
    if verdict.passed:
        return ALLOW
    pod_uid = _text((pod.get("metadata") or {}).get("uid"))
    decision = _violation(verdict, facts.namespace, facts.name, node, pod_uid)
    if created and not decision.allowed and decision.violation is not None:
        # A rejected CREATE leaves no pod behind: audit Events then point at the namespace.
        decision = dataclasses.replace(decision, violation=dataclasses.replace(decision.violation, pod_uid=""))
    return decision


def _blocking(ctx: _Context, pod: Mapping[str, Any], node: str) -> set[Reason] | None:
    """The Enforce failures of `pod` on `node` (empty: none), or None when they cannot be told."""
    try:
        requirement = _requirement(ctx, _facts(ctx, pod, node, ""), node)
    except _Reject:
        return None
    if requirement is None:
        return set()
    verdict = ctx.snapshot.evaluate(requirement, ctx.snapshot.node(node), ctx.now)
    return set(verdict.reasons(verdict.enforced_failures))


def _facts(ctx: _Context, pod: Mapping[str, Any], node: str, namespace: str) -> PodFacts:
    request = ctx.request
    try:
        facts = pod_facts(pod)
    except PolicyError as error:
        metadata = pod.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        ns = namespace or _text(metadata.get("namespace")) or request.namespace
        name = _text(metadata.get("name")) or request.name
        raise _Reject(
            Reason(Code.POLICY_INVALID, f"cannot determine the trust requirement of pod {ns}/{name}: {error}"),
            CODE_FORBIDDEN,
            ns,
            name,
            node,
        ) from None
    if not facts.namespace or (namespace and facts.namespace != namespace):
        facts = dataclasses.replace(facts, namespace=namespace or request.namespace)
    if not facts.name:
        facts = dataclasses.replace(facts, name=request.name)
    return facts


def _requirement(ctx: _Context, facts: PodFacts, node: str) -> TrustRequirement | None:
    snapshot = ctx.snapshot
    if not snapshot.synced:  # the policies and namespaces may be incomplete: every pod counts as unknown
        raise _Reject(
            _not_ready(facts.namespace, facts.name, node), CODE_UNAVAILABLE, facts.namespace, facts.name, node
        )
    try:
        return snapshot.requirement(facts)
    except UnknownNamespace:
        labels = ctx.reads.find_namespace(facts.namespace)  # created a moment ago: the cache has not seen it
    if labels is None:
        reason = Reason(
            Code.NOT_READY,
            f"namespace {facts.namespace} not found: cannot tell whether pod {facts.namespace}/{facts.name} "
            "requires trust (fail closed)",
        )
        raise _Reject(reason, CODE_UNAVAILABLE, facts.namespace, facts.name, node)
    return snapshot.requirement(facts, labels)


def _violation(verdict: Verdict, namespace: str, pod: str, node: str, pod_uid: str) -> Decision:
    failures = sorted(verdict.failures, key=lambda f: _RANK[f.source.enforcement])
    strongest = failures[0].source.enforcement
    decision = {
        Enforcement.ENFORCE: DECISION_REJECTED,
        Enforcement.WARN: DECISION_WARNED,
        Enforcement.AUDIT: DECISION_AUDITED,
    }[strongest]
    sources = list(dict.fromkeys(f.source.name for f in failures))
    violation = Violation(
        decision=decision,
        namespace=namespace,
        pod=pod,
        node=node,
        reasons=tuple(verdict.reasons(failures)),
        policy=", ".join(sources),
        enforcement=str(strongest),
        pod_uid=pod_uid,
    )
    warn = [f for f in failures if f.source.enforcement is Enforcement.WARN]
    warnings = tuple(f"{PREFIX}node {node} fails {f.source.name}: {r.message}" for f in warn for r in f.reasons)
    annotations = {
        "trustgate-decision": decision,
        "trustgate-pod": f"{namespace}/{pod}",
        "trustgate-node": node,
        "trustgate-policy": violation.policy,
        "trustgate-enforcement": violation.enforcement,
        "trustgate-reasons": describe(violation.reasons),
    }
    if decision != DECISION_REJECTED:
        return Decision(allowed=True, warnings=warnings, annotations=annotations, violation=violation)
    enforced = [f for f in failures if f.source.enforcement is Enforcement.ENFORCE]
    message = f"{PREFIX}pod {namespace}/{pod} may not run on node {node}: {describe_failures(enforced)}"
    return Decision(
        allowed=False,
        code=CODE_FORBIDDEN,
        message=message,
        warnings=warnings,
        annotations=annotations,
        violation=violation,
    )


def describe_failures(failures: list[Failure] | tuple[Failure, ...]) -> str:
    """Every failed check once, each run of checks followed by the sources that demanded them:
    `trust report expired at ... (node affinity, TrustPolicy pci); level kernel not trusted (TrustPolicy pci)`."""
    by_reason: dict[str, list[str]] = {}  # message -> the sources that demanded it
    for failure in failures:
        for reason in failure.reasons:
            names = by_reason.setdefault(reason.message, [])
            if failure.source.name not in names:
                names.append(failure.source.name)
    parts: list[str] = []
    items = list(by_reason.items())
    for index, (reason, names) in enumerate(items):
        last_of_run = index + 1 == len(items) or items[index + 1][1] != names
        parts.append(f"{reason} ({', '.join(names)})" if last_of_run else reason)
    return "; ".join(parts)


def refuse(reason: Reason, code: int, namespace: str = "", pod: str = "", node: str = "") -> Decision:
    """A fail-closed rejection: the request could not be judged (malformed, not ready, pod not found...)."""
    violation = Violation(decision=DECISION_REJECTED, namespace=namespace, pod=pod, node=node, reasons=(reason,))
    annotations = {"trustgate-decision": DECISION_REJECTED, "trustgate-reasons": reason.message}
    if node:
        annotations["trustgate-node"] = node
    if pod:
        annotations["trustgate-pod"] = f"{namespace}/{pod}"
    message = PREFIX + reason.message
    return Decision(allowed=False, code=code, message=message, annotations=annotations, violation=violation)


def _bad(message: str, namespace: str = "", pod: str = "") -> _Reject:
    return _Reject(Reason(Code.BAD_REQUEST, message), CODE_BAD_REQUEST, namespace, pod)


def _not_ready(namespace: str, pod: str, node: str) -> Reason:
    return Reason(
        Code.NOT_READY, f"trust cache not ready, cannot admit pod {namespace}/{pod} on node {node} yet (fail closed)"
    )


def _object_of_kind(request: AdmissionRequest, kind: str) -> Mapping[str, Any]:
    obj = request.object
    if not isinstance(obj, Mapping):
        raise _bad(f"request has no {kind} object", request.namespace, request.name)
    found = obj.get("kind") or request.kind.kind
    if found != kind or (request.kind.kind and request.kind.kind != kind):
        shown = str(found or request.kind.kind or "unknown")[:64]
        raise _bad(
            f"expected a {kind} for {request.resource_path} {request.operation}, got {shown}",
            request.namespace,
            request.name,
        )
    if obj.get("apiVersion") not in (None, "v1"):
        raise _bad(
            f"expected a v1 {kind}, got apiVersion {str(obj.get('apiVersion'))[:64]}", request.namespace, request.name
        )
    return obj


def _node_name(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec")
    if spec is None:
        return ""
    if not isinstance(spec, Mapping):
        raise _bad("malformed Pod: spec must be an object")
    node = spec.get("nodeName")
    if node is not None and not isinstance(node, str):
        raise _bad("malformed Pod: spec.nodeName must be a string")
    return node or ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
