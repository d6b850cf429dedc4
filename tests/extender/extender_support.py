"""Helpers for the scheduler extender's tests: a small cluster world and ExtenderArgs as kube-scheduler sends them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from devkit.factories import Issuer, node_object, pod_object
from extender.app import create_app
from trustgate.core.keys import generate_private_key
from trustgate.core.signing import sign_claims
from trustgate.core.snapshot import Snapshot, StaticCluster

NOW = 1_790_000_000.0  # a fixed clock: 2026-09-21T14:13:20Z
TRUSTED = {"trustgate.dev/trusted": "true"}


@dataclass
class World:
    """Nodes, their reports and policies; `app()` serves them through the extender."""

    issuer: Issuer
    nodes: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    policies: list[dict[str, Any]] = field(default_factory=list)
    namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)
    synced: bool = True
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def node(self, name: str, report: bool = True, labels: Mapping[str, str] | None = None, **claims: Any) -> str:
        """Add a node with (by default) a valid report; `claims` override the report's claims."""
        self.nodes.append(node_object(name, labels=labels))
        if report:
            claims.setdefault("now", NOW - 60)
            self.reports[name] = self.issuer.token(name, **claims)
        return name

    def forged(self, name: str) -> str:
        """A node whose report is signed by a key the verifier does not trust (same kid)."""
        self.nodes.append(node_object(name))
        claims = self.issuer.claims(name, now=NOW - 60)
        kid = self.issuer.jwks["keys"][0]["kid"]
        self.reports[name] = sign_claims(claims, generate_private_key("ES256"), alg="ES256", kid=kid)
        return name

    def snapshot(self) -> Snapshot:
        return Snapshot.build(
            self.issuer.verifier(),
            nodes=self.nodes,
            reports=self.reports,
            policies=self.policies,
            namespaces=self.namespaces,
            synced=self.synced,
        )

    def app(self, **options: Any) -> Flask:
        return create_app(StaticCluster(self.snapshot()), self.registry, clock=lambda: NOW, **options)

    def client(self, **options: Any) -> FlaskClient:
        return self.app(**options).test_client()

    def node_objects(self, names: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(names)
        return [n for n in self.nodes if n["metadata"]["name"] in wanted]


def trust_pod(**kwargs: Any) -> dict[str, Any]:
    """A pod that requires trust through its nodeSelector (plus any other `pod_object` arguments)."""
    selector = {**TRUSTED, **kwargs.pop("node_selector", {})}
    return pod_object("secure", node_selector=selector, **kwargs)


def names_args(pod: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """ExtenderArgs as kube-scheduler sends them with nodeCacheCapable: true."""
    return {"Pod": pod, "Nodes": None, "NodeNames": names}


def nodes_args(pod: Mapping[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """ExtenderArgs as kube-scheduler sends them with nodeCacheCapable: false (a v1.NodeList)."""
    return {"Pod": pod, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None}
