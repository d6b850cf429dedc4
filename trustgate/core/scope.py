"""Which admission requests can place a trust-requiring workload: the webhook configurations, from the policies.

The API server calls a webhook only for the requests its configuration matches, and evaluates the
configuration's `namespaceSelector` and CEL `matchConditions` itself. Rendering them from the installed
TrustPolicies (as Kyverno does) keeps every other pod away from trustgate: a pod that no policy can
select and that asks nothing of trust labels is never sent to the webhook, at creation or at binding.

Each entry is never narrower than the policies need: CEL cannot read a namespace's labels, so policies
are grouped by `namespaceSelector` (one entry per group, the selector as the entry's own), their pod
selectors ORed in CEL; an `encryptedImages` pattern becomes a CEL regex that matches every written form of
an image the pattern covers (and possibly a few more: the webhook decides exactly). Pure: policies in,
configuration objects out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trustgate.core.labels import ASSET_LABEL_PREFIX, TRUSTED_LABEL
from trustgate.core.policy import TrustPolicy
from trustgate.core.selectors import LabelSelector, Requirement

NAMESPACE_NAME = "kubernetes.io/metadata.name"
SCHEDULER = "system:kube-scheduler"
_GLOB = "*?["
_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

LABELS = "(has(object.metadata.labels) ? object.metadata.labels : {})"
IMAGES = (
    "(has(object.spec.containers) ? object.spec.containers.map(c, has(c.image) ? c.image : '') : [])"
    " + (has(object.spec.initContainers) ? object.spec.initContainers.map(c, has(c.image) ? c.image : '') : [])"
    " + (has(object.spec.ephemeralContainers)"
    " ? object.spec.ephemeralContainers.map(c, has(c.image) ? c.image : '') : [])"
)
UNBOUND = "(!has(object.spec.nodeName) || object.spec.nodeName == '')"


def _changed(path: str) -> str:
    new, old = f"object.{path}", f"oldObject.{path}"
    return f"(has({new}) != has({old}) || (has({new}) && {new} != {old}))"


# The operations worth a call: any CREATE (a pinned pod is judged, an unbound one must carry the mark), an
# ephemeral container, and an UPDATE that changes what a decision reads (labels, images, node constraints).
CHANGES = " || ".join(
    [
        "request.operation == 'CREATE'",
        "request.subResource == 'ephemeralcontainers'",
        _changed("metadata.labels"),
        f"({IMAGES}) != ({IMAGES.replace('object.', 'oldObject.')})",
        _changed("spec.nodeSelector"),
        _changed("spec.affinity"),
    ]
)
_TRUST_KEY = f"k == '{TRUSTED_LABEL}' || k.startsWith('{ASSET_LABEL_PREFIX}')"
_REQUIRED = "object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
TRUST_LABELS = (
    f"(has(object.spec.nodeSelector) && object.spec.nodeSelector.exists(k, {_TRUST_KEY}))"
    f" || (has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity) && has({_REQUIRED})"
    f" && {_REQUIRED}.nodeSelectorTerms.exists(t, has(t.matchExpressions)"
    f" && t.matchExpressions.map(e, e.key).exists(k, {_TRUST_KEY})))"
)


@dataclass(frozen=True)
class Endpoint:
    """Where the API server reaches the webhook: its Service, or a URL (an API server outside the cluster)."""

    ca_bundle: str  # base64 PEM
    service: str = "trustgate-webhook"
    namespace: str = "trustgate-system"
    port: int = 443
    url: str | None = None

    def client_config(self, path: str) -> dict[str, Any]:
        if self.url is not None:
            return {"url": self.url.rstrip("/") + path, "caBundle": self.ca_bundle}
        service = {"name": self.service, "namespace": self.namespace, "path": path, "port": self.port}
        return {"service": service, "caBundle": self.ca_bundle}


@dataclass(frozen=True)
class Scope:
    """How the webhooks are scoped: never for `exempt` namespaces, never for bindings by `binders`."""

    exempt: frozenset[str]
    binders: tuple[str, ...] = (SCHEDULER,)  # they consult the extender, which checks at bind time
    timeout_seconds: int = 3
    # Ignore lets the API server admit what the webhook could not judge while it is down (the extender
    # still filters kube-scheduler's pods); an operator's explicit choice, never the default.
    failure_policy: str = "Fail"


def validating_webhooks(policies: Sequence[TrustPolicy], scope: Scope, endpoint: Endpoint) -> list[dict[str, Any]]:
    """The `webhooks` of trustgate's ValidatingWebhookConfiguration."""
    bindings = _webhook(
        "bindings.trustgate.dev",
        endpoint.client_config("/validate"),
        scope,
        [_rule(["CREATE"], ["pods/binding", "bindings"])],
        _exempt_selector(scope),
        [_condition("not-a-binder", " && ".join(f"request.userInfo.username != {_quote(b)}" for b in scope.binders))],
    )
    pod_rules = [_rule(["CREATE", "UPDATE"], ["pods"]), _rule(["UPDATE"], ["pods/ephemeralcontainers"])]
    entries = [bindings]
    for name, selector, condition in _scopes(policies, scope):
        entries.append(
            _webhook(
                f"{name}.pods.trustgate.dev",
                endpoint.client_config("/validate"),
                scope,
                pod_rules,
                selector,
                [_condition("may-require-trust", condition), _condition("changes-placement", CHANGES)],
            )
        )
    return entries


def mutating_webhooks(policies: Sequence[TrustPolicy], scope: Scope, endpoint: Endpoint) -> list[dict[str, Any]]:
    """The `webhooks` of trustgate's MutatingWebhookConfiguration: the mark, for pods the scheduler will place."""
    entries = []
    for name, selector, condition in _scopes(policies, scope):
        entry = _webhook(
            f"{name}.mark.trustgate.dev",
            endpoint.client_config("/mutate"),
            scope,
            [_rule(["CREATE"], ["pods"])],
            selector,
            [_condition("may-require-trust", condition), _condition("unbound", UNBOUND)],
        )
        entry["reinvocationPolicy"] = "Never"
        entries.append(entry)
    return entries


def _scopes(policies: Sequence[TrustPolicy], scope: Scope) -> list[tuple[str, dict[str, Any], str]]:
    """(name, namespaceSelector, CEL) per scope: pods asking for trust labels anywhere, and one per group
    of policies sharing a namespaceSelector."""
    found = [("labels", _exempt_selector(scope), TRUST_LABELS)]
    groups: dict[str, tuple[LabelSelector, list[TrustPolicy]]] = {}
    for policy in policies:
        if policy.selects_nothing:
            continue
        key = json.dumps([(r.key, r.operator, r.values) for r in policy.namespace_selector.requirements])
        groups.setdefault(key, (policy.namespace_selector, []))[1].append(policy)
    for key, (namespaces, members) in sorted(groups.items()):
        name = "p-" + hashlib.sha256(key.encode()).hexdigest()[:10]
        selector = _namespace_selector(namespaces, scope)
        found.append((name, selector, " || ".join(f"({_selects(p)})" for p in sorted(members, key=lambda p: p.name))))
    return found


def _selects(policy: TrustPolicy) -> str:
    """CEL over the pod: the policy's podSelector and, if it has them, its encryptedImages."""
    parts = [_label_selector(policy.pod_selector)]
    if policy.encrypted_images:
        patterns = " || ".join(f"i.matches({_raw(image_regex(p))})" for p in policy.encrypted_images)
        parts.append(f"({IMAGES}).exists(i, {patterns})")
    return " && ".join(parts)


def _label_selector(selector: LabelSelector) -> str:
    if not selector.requirements:
        return "true"
    return " && ".join(_requirement(r) for r in selector.requirements)


def _requirement(requirement: Requirement) -> str:
    key, values = _quote(requirement.key), "[" + ", ".join(_quote(v) for v in requirement.values) + "]"
    present = f"{key} in {LABELS}"
    return {
        "In": f"({present} && {LABELS}[{key}] in {values})",
        "NotIn": f"(!({present}) || !({LABELS}[{key}] in {values}))",
        "Exists": f"({present})",
        "DoesNotExist": f"!({present})",
    }[requirement.operator]


def image_regex(pattern: str) -> str:
    """An RE2 regex matching every written form of an image that `pattern` covers: the literal start of its
    registry host (case-insensitive, any port) and of its repository path (`library/` optional on Docker Hub)."""
    host, path = _split(pattern)
    path_literal = _literal(path)
    if host in _HUB or host is None:
        path_literal = path_literal.removeprefix("library/")
        return "(?i)" + _escape(path_literal)
    host_literal = _literal(host).split(":")[0]
    if any(c in host for c in _GLOB):  # a glob in the host: its literal start is all we know
        return "(?i)" + _escape(host_literal)
    return "(?i)" + _escape(host_literal) + ".*" + _escape(path_literal)


def _split(pattern: str) -> tuple[str | None, str]:
    first, sep, rest = pattern.partition("/")
    if sep and ("." in first or ":" in first or first.lower() == "localhost" or any(c in first for c in _GLOB)):
        return first.lower(), rest
    return None, pattern


def _literal(text: str) -> str:
    """The start of `text` before any glob, without a tag or digest."""
    start = text[: min((text.index(c) for c in _GLOB if c in text), default=len(text))]
    start = start.split("@")[0]
    last = start.rsplit("/", 1)[-1]
    return start[: len(start) - len(last) + last.index(":")] if ":" in last else start


def _escape(text: str) -> str:
    return "".join("\\" + c if c in ".+*?()|[]{}^$\\" else c for c in text)


def _namespace_selector(namespaces: LabelSelector, scope: Scope) -> dict[str, Any]:
    selector = _exempt_selector(scope)
    for requirement in namespaces.requirements:
        expression: dict[str, Any] = {"key": requirement.key, "operator": requirement.operator}
        if requirement.values:
            expression["values"] = list(requirement.values)
        selector["matchExpressions"].append(expression)
    return selector


def _exempt_selector(scope: Scope) -> dict[str, Any]:
    """Never the control plane's, trustgate's or another exempt namespace: by name, as an opt-out label would
    let anyone who may label a namespace step out of the gate."""
    return {"matchExpressions": [{"key": NAMESPACE_NAME, "operator": "NotIn", "values": sorted(scope.exempt)}]}


def _rule(operations: list[str], resources: list[str]) -> dict[str, Any]:
    return {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": operations,
        "resources": resources,
        "scope": "Namespaced",
    }


def _condition(name: str, expression: str) -> dict[str, str]:
    return {"name": name, "expression": expression}


def _webhook(
    name: str,
    client_config: Mapping[str, Any],
    scope: Scope,
    rules: Iterable[dict[str, Any]],
    namespace_selector: dict[str, Any],
    conditions: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",
        "failurePolicy": scope.failure_policy,
        "timeoutSeconds": scope.timeout_seconds,
        "matchPolicy": "Equivalent",
        "clientConfig": dict(client_config),
        "namespaceSelector": namespace_selector,
        "objectSelector": {},
        "rules": list(rules),
        "matchConditions": conditions,
    }


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _raw(text: str) -> str:
    if "'" in text:
        return _quote(text)
    return f"r'{text}'"
