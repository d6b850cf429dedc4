"""The webhook configurations follow the policies: written when they change, never otherwise."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from controller.webhooks import WebhookConfigurations
from devkit.factories import trust_policy
from trustgate.core.policy import TrustPolicy
from trustgate.core.scope import Endpoint, Scope


class Writer:
    def __init__(self, fail: int = 0) -> None:
        self.written: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self.reported: list[str] = []
        self.fail = fail

    def write(self, validating: list[dict[str, Any]], mutating: list[dict[str, Any]]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("apiserver unreachable")
        self.written.append((validating, mutating))

    def report_invalid(self, policy: TrustPolicy) -> None:
        self.reported.append(policy.name)


class Cache:
    def add_change_listener(self, listener: Any) -> None:
        self.listener = listener


def controller(writer: Writer, registry: CollectorRegistry | None = None) -> WebhookConfigurations:
    scope = Scope(exempt=frozenset({"kube-system", "trustgate-system"}))
    return WebhookConfigurations(Cache(), writer, scope, lambda: Endpoint("Q0E="), registry or CollectorRegistry())  # type: ignore[arg-type]


def parsed(*resources: dict[str, Any]) -> list[TrustPolicy]:
    return [TrustPolicy.from_resource(r) for r in resources]


def test_the_configurations_are_written_once_per_change_of_policies() -> None:
    writer = Writer()
    configurations = controller(writer)
    pci = parsed(trust_policy("pci", namespaceSelector={"matchLabels": {"compliance": "pci"}}))
    configurations.reconcile([])
    configurations.reconcile([])
    configurations.reconcile(pci)
    configurations.reconcile(pci)
    assert len(writer.written) == 2
    names = [w["name"] for w in writer.written[1][0]]
    assert names[:2] == ["bindings.trustgate.dev", "labels.pods.trustgate.dev"] and len(names) == 3


def test_a_failed_write_is_retried_and_counted() -> None:
    registry = CollectorRegistry()
    writer = Writer(fail=1)
    configurations = controller(writer, registry)
    configurations.reconcile([])
    configurations.reconcile([])
    assert len(writer.written) == 1
    assert registry.get_sample_value("trustgate_webhook_configuration_writes_total", {"outcome": "failed"}) == 1
    assert registry.get_sample_value("trustgate_webhook_configuration_writes_total", {"outcome": "written"}) == 1


def test_a_malformed_policy_is_reported_once_and_counted() -> None:
    registry = CollectorRegistry()
    writer = Writer()
    configurations = controller(writer, registry)
    configurations.leading.set()
    typo = parsed(trust_policy("typo", podSelector={"matchExpressions": [{"key": "app", "operator": "In"}]}))
    configurations._report(typo)
    configurations._report(typo)
    assert writer.reported == ["typo"]
    assert registry.get_sample_value("trustgate_policies_invalid") == 1
