"""`trustgate-controller`: the controllers behind the services, one active instance by leader election.

- the label controller mirrors verified node trust into the labels trustgate owns (`controller.labels`);
- the webhook configurations are kept in step with the TrustPolicies (`controller.webhooks`), when
  `--webhook-ca-bundle` names the CA the API server verifies the webhook with.

It serves `/healthz`, `/readyz` and `/metrics` over TLS like the other services; one gunicorn worker
runs the controllers in threads (and is never recycled: its caches and Lease live for its lifetime).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from flask import Flask
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge

from controller.kube import KubeWriter
from controller.labels import LabelController
from controller.leader import Follower, run_leader_election
from controller.webhooks import WebhookConfigurations, ca_bundle_from
from trustgate.cluster.api import api_client
from trustgate.cluster.cache import ClusterCache
from trustgate.core.scope import SCHEDULER, Endpoint, Scope
from trustgate.serving.probes import add_probes, cache_not_ready
from trustgate.settings import ConfigError, ServingSettings, TrustSettings, option
from trustgate.startup import Command, Service


@dataclass(frozen=True)
class ControllerSettings(TrustSettings, ServingSettings):
    identity: str | None = option("leader election identity; default: $POD_NAME, else the host name")
    webhook_ca_bundle: str | None = option("PEM CA bundle the API server verifies the webhook with; manages them")
    webhook_service: str = option("the webhook's Service (in --namespace)", "trustgate-webhook")
    webhook_port: int = option("the webhook Service's port", 443, parse=int)
    webhook_url: str | None = option("the webhook's URL instead of its Service (an API server outside the cluster)")
    extender_user: str | None = option(
        "the extender's user, whose bindings it checked itself; default: its ServiceAccount in --namespace"
    )
    check_scheduler_bindings: bool = option(
        "send kube-scheduler's bindings to the webhook too (while the scheduler runs without the extender)",
        False,
        switch=True,
    )

    def check(self) -> None:
        super().check()
        if self.workers != 1:
            raise ConfigError("the controller runs one worker: one cache, one Lease")

    def scope(self) -> Scope:
        extender = self.extender_user or f"system:serviceaccount:{self.namespace}:trustgate-extender"
        binders = (extender,) if self.check_scheduler_bindings else (SCHEDULER, extender)
        return Scope(exempt=self.exempt, binders=binders)


def create(settings: ControllerSettings) -> Flask:
    """The app factory gunicorn calls in the worker: starts the cache, the controllers and the election."""
    api = api_client(settings.kubeconfig)
    cache = ClusterCache(api, settings.verifier(), exempt=settings.exempt).start()
    registry = CollectorRegistry()
    core = client.CoreV1Api(api)
    labels = LabelController(cache, lambda name, body: core.patch_node(name, body))
    followers = [Follower(labels.start_leading, labels.stop_leading)]
    threading.Thread(target=labels.run, name="label-controller", daemon=True).start()
    if settings.webhook_ca_bundle:
        bundle = ca_bundle_from(settings.webhook_ca_bundle)
        configurations = WebhookConfigurations(
            cache,
            KubeWriter(api),
            settings.scope(),
            lambda: Endpoint(
                bundle(),
                service=settings.webhook_service,
                namespace=settings.namespace,
                port=settings.webhook_port,
                url=settings.webhook_url,
            ),
            registry,
        )
        followers.append(Follower(configurations.start_leading, configurations.stop_leading))
        threading.Thread(target=configurations.run, name="webhook-configurations", daemon=True).start()
    leading = Gauge(
        "trustgate_controller_leading", "1 while this replica holds the controllers' Lease", registry=registry
    )
    leading.set_function(lambda: 1.0 if labels.leading.is_set() else 0.0)
    identity = settings.identity or os.environ.get("POD_NAME") or socket.gethostname()
    threading.Thread(
        target=run_leader_election, args=(followers, settings.namespace, identity, api), name="election", daemon=True
    ).start()
    app = Flask("trustgate-controller")
    add_probes(app, registry, cache_not_ready(lambda: cache.snapshot().synced))
    return app


SERVICE = Service(
    "trustgate-controller",
    Command(ControllerSettings, app=create, server={"max_requests": 0, "max_requests_jitter": 0}),
    description=__doc__.splitlines()[0],
)


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
