"""`trustgate-controller`: the controllers behind the services, one active instance by leader election.

- the label controller mirrors verified node trust into the labels trustgate owns (`controller.labels`);
- the webhook configurations are kept in step with the TrustPolicies (`controller.webhooks`), when the
  CA the API server verifies the webhook with is known: trustgate's own (`--manage-certificates`, the
  default of the chart: `controller.certificates` issues and renews it) or a file (`--webhook-ca-bundle`).
- the pod trust controller publishes the trust of running pods as PolicyReports (`controller.podtrust`)
  and evicts, where a policy says `onTrustLost: Evict`, the pods of nodes that lost it (`controller.eviction`).

It serves `/healthz`, `/readyz` and `/metrics` over TLS like the other services; one gunicorn worker
runs the controllers in threads (and is never recycled: its caches and Lease live for its lifetime).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flask import Flask
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge

from controller import nodemetrics
from controller.certificates import CA_LIFETIME, LEAF_LIFETIME, Certificates, Served, service_names
from controller.eviction import EvictionPacing, Evictor
from controller.kube import KubeSecrets, KubeWriter, PolicyReports, evict_pod
from controller.labels import LabelController
from controller.leader import Controller, Follower, run_leader_election
from controller.podtrust import PodTrustController
from controller.webhooks import WebhookConfigurations, ca_bundle_from
from trustgate.audit.sinks import audit_log
from trustgate.cluster.api import api_client
from trustgate.cluster.cache import ClusterCache
from trustgate.cluster.pods import BoundPods
from trustgate.core.policyreport import DEFAULT_MAX_RESULTS
from trustgate.core.scope import SCHEDULER, Endpoint, Scope
from trustgate.serving.probes import add_probes, cache_not_ready
from trustgate.settings import (
    AuditSettings,
    ConfigError,
    ServingSettings,
    TrustSettings,
    option,
    positive_float,
    positive_int,
    seconds,
)
from trustgate.startup import Command, Service

COMPONENT = "trustgate-controller"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"must be more than 0 and at most 1, not {value}")
    return value


@dataclass(frozen=True)
class ControllerSettings(TrustSettings, ServingSettings, AuditSettings):
    identity: str | None = option("leader election identity; default: $POD_NAME, else the host name")
    webhook_ca_bundle: str | None = option("PEM CA bundle the API server verifies the webhook with; manages them")
    webhook_service: str = option("the webhook's Service (in --namespace)", "trustgate-webhook")
    webhook_port: int = option("the webhook Service's port", 443, parse=int)
    webhook_url: str | None = option("the webhook's URL instead of its Service (an API server outside the cluster)")
    webhook_timeout: int = option("seconds kube-apiserver waits for the webhook (1-30)", 3, parse=int)
    webhook_failure_policy: str = option(
        "Fail (the default: what the webhook cannot judge is refused) or Ignore (admitted unjudged while it is down)",
        "Fail",
    )
    extender_user: str | None = option(
        "the extender's user, whose bindings it checked itself; default: its ServiceAccount in --namespace"
    )
    manage_certificates: bool = option(
        "issue and renew trustgate's CA and serving certificates (Secrets <service>-tls) and inject the CA",
        False,
        switch=True,
    )
    certificate_lifetime: float = option(
        "serving certificate lifetime, seconds", LEAF_LIFETIME.total_seconds(), parse=seconds
    )
    ca_lifetime: float = option("CA lifetime, seconds", CA_LIFETIME.total_seconds(), parse=seconds)
    certificate_services: tuple[str, ...] = option(
        "Services that get a serving certificate (repeatable)",
        ("trustgate-webhook", "trustgate-extender", "trustgate-attestation"),
        repeated=True,
        flag="--certificate-service",
    )
    check_scheduler_bindings: bool = option(
        "send kube-scheduler's bindings to the webhook too (while the scheduler runs without the extender)",
        False,
        switch=True,
    )
    no_pod_trust: bool = option(
        "do not publish the trust of running pods (PolicyReports) nor evict (onTrustLost: Evict)", False, switch=True
    )
    policy_report_max_results: int = option(
        "most results in one namespace's PolicyReport (failures first; the summary counts every pod)",
        DEFAULT_MAX_RESULTS,
        parse=positive_int,
    )
    eviction_rate: float = option("most evictions per second (onTrustLost: Evict)", 2.0, parse=positive_float)
    eviction_burst: int = option("most evictions at once", 10, parse=positive_int)
    eviction_retry: float = option(
        "seconds before an eviction a PodDisruptionBudget refused is tried again", 5.0, parse=seconds
    )
    eviction_pause_fraction: float = option(
        "hold evictions while more than this share of the nodes with a report fail trust (and more than one)",
        0.5,
        parse=_fraction,
    )

    def check(self) -> None:
        super().check()
        if self.workers != 1:
            raise ConfigError("the controller runs one worker: one cache, one Lease")
        if self.webhook_failure_policy not in ("Fail", "Ignore"):
            raise ConfigError(f"--webhook-failure-policy must be Fail or Ignore, not {self.webhook_failure_policy!r}")
        if not 1 <= self.webhook_timeout <= 30:
            raise ConfigError(f"--webhook-timeout must be 1 to 30 seconds, not {self.webhook_timeout}")

    def scope(self) -> Scope:
        extender = self.extender_user or f"system:serviceaccount:{self.namespace}:trustgate-extender"
        binders = (extender,) if self.check_scheduler_bindings else (SCHEDULER, extender)
        return Scope(
            exempt=self.exempt,
            binders=binders,
            timeout_seconds=self.webhook_timeout,
            failure_policy=self.webhook_failure_policy,
        )


def create(settings: ControllerSettings) -> Flask:
    """The app factory gunicorn calls in the worker: starts the cache, the controllers and the election."""
    api = api_client(settings.kubeconfig)
    cache = ClusterCache(api, settings.verifier(), exempt=settings.exempt).start()
    registry = CollectorRegistry()
    core = client.CoreV1Api(api)
    labels = LabelController(cache, lambda name, body: core.patch_node(name, body))
    controllers: list[Controller] = [labels]
    pods: BoundPods | None = None
    if not settings.no_pod_trust:
        pods = BoundPods(api, exempt=settings.exempt).start()
        controllers += _pod_trust(settings, api, cache, pods, registry)
    certificates = _certificates(settings, api) if settings.manage_certificates else None
    bundle = certificates.bundle if certificates is not None else None
    if bundle is None and settings.webhook_ca_bundle:
        bundle = ca_bundle_from(settings.webhook_ca_bundle)
    if certificates is not None:
        controllers.append(certificates)
    if bundle is not None:
        configurations = _configurations(settings, api, cache, bundle, registry)
        controllers.append(configurations)
        if certificates is not None:
            certificates.on_bundle = configurations.wake  # a new CA: inject it at once
    for controller in controllers:
        threading.Thread(target=controller.run, name=type(controller).__name__, daemon=True).start()
    leading = Gauge(
        "trustgate_controller_leading", "1 while this replica holds the controllers' Lease", registry=registry
    )
    leading.set_function(lambda: 1.0 if labels.leading.is_set() else 0.0)
    nodemetrics.register(registry, cache.snapshot)

    def synced() -> bool:
        return cache.snapshot().synced and (pods is None or pods.synced)

    synced_gauge = Gauge("trustgate_controller_cache_synced", "1 once the cluster cache has synced.", registry=registry)
    synced_gauge.set_function(lambda: 1.0 if synced() else 0.0)
    identity = settings.identity or os.environ.get("POD_NAME") or socket.gethostname()
    followers = [Follower(c.start_leading, c.stop_leading) for c in controllers]
    threading.Thread(
        target=run_leader_election, args=(followers, settings.namespace, identity, api), name="election", daemon=True
    ).start()
    app = Flask("trustgate-controller")
    add_probes(app, registry, cache_not_ready(synced))
    return app


def _certificates(settings: ControllerSettings, api: client.ApiClient) -> Certificates:
    served = [Served(f"{name}-tls", service_names(name, settings.namespace)) for name in settings.certificate_services]
    return Certificates(
        KubeSecrets(api, settings.namespace),
        served,
        ca_lifetime=dt.timedelta(seconds=settings.ca_lifetime),
        leaf_lifetime=dt.timedelta(seconds=settings.certificate_lifetime),
    )


def _configurations(
    settings: ControllerSettings,
    api: client.ApiClient,
    cache: ClusterCache,
    bundle: Callable[[], str],
    registry: CollectorRegistry,
) -> WebhookConfigurations:
    def endpoint() -> Endpoint:
        return Endpoint(
            bundle(),
            service=settings.webhook_service,
            namespace=settings.namespace,
            port=settings.webhook_port,
            url=settings.webhook_url,
        )

    return WebhookConfigurations(cache, KubeWriter(api), settings.scope(), endpoint, registry)


def _pod_trust(
    settings: ControllerSettings,
    api: client.ApiClient,
    cache: ClusterCache,
    pods: BoundPods,
    registry: CollectorRegistry,
) -> list[Controller]:
    """The pod trust controller and its evictor."""
    audit = audit_log(registry, settings, client.CoreV1Api(api), component=COMPONENT)
    controller = PodTrustController(
        cache, pods, PolicyReports(api), registry, max_results=settings.policy_report_max_results
    )
    evictor = Evictor(
        evict_pod(api),
        controller.current,
        controller.untrusted_share,
        audit,
        registry,
        EvictionPacing(
            rate=settings.eviction_rate,
            burst=settings.eviction_burst,
            retry=settings.eviction_retry,
            pause_fraction=settings.eviction_pause_fraction,
        ),
        user=f"system:serviceaccount:{settings.namespace}:trustgate-controller",
    )
    controller.evictions = evictor
    return [controller, evictor]


SERVICE = Service(
    COMPONENT,
    Command(ControllerSettings, app=create, server={"max_requests": 0, "max_requests_jitter": 0}),
    description=__doc__.splitlines()[0],
)


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
