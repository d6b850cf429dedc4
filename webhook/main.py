"""`trustgate-webhook`: the validating admission webhook, served by gunicorn over TLS.

The master process checks the settings and exits 2 on a bad configuration, before serving anything;
each gunicorn worker then calls `create`, which starts its own cluster cache (watch threads must not
cross a fork) and audit sinks, and serves the app over them. `/readyz` stays 503, and every placement
is rejected, until that cache has synced.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from flask import Flask
from prometheus_client import CollectorRegistry

from trustgate.audit.sinks import AuditLog, EventSink, JsonLinesSink, Sink
from trustgate.cluster.api import api_client
from trustgate.cluster.cache import ClusterCache
from trustgate.settings import ServingSettings, TrustSettings, option
from trustgate.startup import Command, Service
from webhook.app import create_app


@dataclass(frozen=True)
class WebhookSettings(TrustSettings, ServingSettings):
    audit_log: str | None = option("JSON-lines file every audit record is appended to")
    no_events: bool = option("do not write a Kubernetes Event per audit record", False, switch=True)


def create(settings: WebhookSettings) -> Flask:
    """The app factory gunicorn calls in each worker."""
    from kubernetes import client

    api = api_client(settings.kubeconfig)
    # Bindings name a pod: the pods not bound yet are watched, so that a Binding is judged without a read.
    cache = ClusterCache(api, settings.verifier(), watch_pods=True, exempt=settings.exempt).start()
    sinks: list[Sink] = []
    if settings.audit_log:
        sinks.append(JsonLinesSink(settings.audit_log))
    if not settings.no_events:
        sinks.append(EventSink(client.CoreV1Api(api)))
    registry = CollectorRegistry()
    app = create_app(
        cache,
        AuditLog(sinks, registry),
        registry,
        client_certificates=settings.client_ca is not None,
        client_names=settings.client_names,
    )
    gc.freeze()  # keep the start-up objects out of full collections (a pause in the request path)
    return app


SERVICE = Service("trustgate-webhook", Command(WebhookSettings, app=create), description=__doc__.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
