"""An immutable view of the cluster that request handlers decide from.

The cluster cache builds a new `Snapshot` whenever a watched object changes and swaps it
in atomically; a request takes one reference and sees one consistent state throughout.
Tests build snapshots from plain data with `Snapshot.build`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Protocol

from trustgate.core.node import NodeTrust, assess, node_identity, node_labels
from trustgate.core.policy import PodFacts, TrustPolicy, TrustRequirement, Verdict, evaluate, requirement_for
from trustgate.core.reasons import UNKNOWN_NODE
from trustgate.core.report import ReportVerifier

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class UnknownNamespace(LookupError):
    """A pod's namespace is not in the snapshot (yet) and policies select by namespace."""

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace} is not in the trust cache yet")
        self.namespace = namespace


@dataclass(frozen=True)
class Snapshot:
    verifier: ReportVerifier
    synced: bool = False
    nodes: Mapping[str, NodeTrust] = field(default_factory=lambda: _EMPTY)
    tokens: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # node name -> report token
    policies: tuple[TrustPolicy, ...] = ()
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: _EMPTY)  # name -> labels
    exempt: frozenset[str] = frozenset()  # namespaces whose pods never need trust (the control plane, trustgate)
    built_at: float = field(default_factory=time.time)

    @property
    def skew(self) -> float:
        return self.verifier.settings.skew_seconds

    def requirement(self, pod: PodFacts, namespace_labels: Mapping[str, str] | None = None) -> TrustRequirement | None:
        """The pod's requirement, from its namespace's labels (`namespace_labels`, else the snapshot's).

        Raises `UnknownNamespace` when the snapshot has not seen the pod's namespace yet and a policy
        selects by namespace: judging it against no labels could miss a policy that selects it (a
        namespace created a moment ago, with a policy's labels). The adapters then read it live."""
        if pod.namespace in self.exempt:
            return None  # whatever a policy selects: the control plane and trustgate must always be able to run
        labels = namespace_labels if namespace_labels is not None else self.namespaces.get(pod.namespace)
        if labels is None:
            if self.selects_by_namespace:
                raise UnknownNamespace(pod.namespace)
            labels = _EMPTY
        return requirement_for(pod, labels, self.policies)

    @cached_property
    def selects_by_namespace(self) -> bool:
        return any(policy.namespace_selector.requirements for policy in self.policies)

    def node(self, name: str) -> NodeTrust:
        """The cached trust state of a node; an unknown name fails with its own reason."""
        found = self.nodes.get(name)
        return found if found is not None else NodeTrust(name=name, failure=UNKNOWN_NODE)

    def node_from_object(self, node: Mapping[str, Any]) -> NodeTrust:
        """Trust state for a Node object given by the caller, with the report from the cache."""
        identity = node_identity(node)
        labels = node_labels(node)
        cached = self.nodes.get(identity.name)
        if cached is not None and cached.identity == identity and cached.labels == labels:
            return cached
        return assess(identity, labels, self.tokens.get(identity.name), self.verifier)

    def evaluate(self, requirement: TrustRequirement, node: NodeTrust, now: float | None = None) -> Verdict:
        return evaluate(requirement, node, time.time() if now is None else now, self.skew)

    @classmethod
    def build(
        cls,
        verifier: ReportVerifier,
        nodes: Iterable[Mapping[str, Any]] = (),
        reports: Mapping[str, str] | None = None,
        policies: Iterable[Mapping[str, Any]] = (),
        namespaces: Mapping[str, Mapping[str, str]] | None = None,
        synced: bool = True,
        exempt: frozenset[str] = frozenset(),
    ) -> Snapshot:
        """A snapshot from plain Kubernetes objects (as JSON) and report tokens by node name."""
        tokens = dict(reports or {})
        trusts = {}
        for node in nodes:
            try:
                identity, labels = node_identity(node), node_labels(node)
            except ValueError:
                continue  # a malformed Node is left out: it reads as unknown, which fails closed
            trusts[identity.name] = assess(identity, labels, tokens.get(identity.name), verifier)
        return cls(
            verifier=verifier,
            synced=synced,
            nodes=MappingProxyType(trusts),
            tokens=MappingProxyType(tokens),
            policies=tuple(TrustPolicy.from_resource(p) for p in policies),
            namespaces=MappingProxyType(dict(namespaces or {})),
            exempt=exempt,
        )


class ClusterView(Protocol):
    """All that request handlers need from the cluster: the current snapshot, and a Binding's pod."""

    def snapshot(self) -> Snapshot: ...

    def find_pod(self, namespace: str, name: str, uid: str) -> Mapping[str, Any] | None:
        """The pod named by a Binding (None: it does not exist). `uid`, when given, must match."""
        ...

    def find_namespace(self, name: str) -> Mapping[str, str] | None:
        """A namespace's labels, read live when the snapshot has not seen it (None: it does not exist)."""
        ...


class ReadThrough:
    """`find_pod` and `find_namespace` from a local copy first and the API server second: a pod or
    namespace created a moment ago, or a pod replaced by one of the same name (another uid), is read live."""

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def cached_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """A live read; None when the pod does not exist."""
        return None

    def get_namespace(self, name: str) -> Mapping[str, str] | None:
        """A namespace's labels, read live; None when it does not exist."""
        return None

    def find_namespace(self, name: str) -> Mapping[str, str] | None:
        cached = self.snapshot().namespaces.get(name)
        return cached if cached is not None else self.get_namespace(name)

    def find_pod(self, namespace: str, name: str, uid: str) -> Mapping[str, Any] | None:
        cached = self.cached_pod(namespace, name)
        if cached is not None and (not uid or (cached.get("metadata") or {}).get("uid") in (None, "", uid)):
            return cached
        return self.get_pod(namespace, name)


class StaticCluster(ReadThrough):
    """A `ClusterView` over a fixed snapshot and pods, for tests and one-shot tools."""

    def __init__(self, snapshot: Snapshot, pods: Iterable[Mapping[str, Any]] = ()) -> None:
        self.current = snapshot
        self.pods = {_pod_key(pod): pod for pod in pods}

    def snapshot(self) -> Snapshot:
        return self.current

    def cached_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.pods.get((namespace, name))


def _pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    return (namespace if isinstance(namespace, str) else "", name if isinstance(name, str) else "")
