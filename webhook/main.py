"""`trustgate-webhook`: the validating admission webhook, served by gunicorn over TLS.

Flags and `TRUSTGATE_*` variables are those of `trustgate.config` (issuers, keys, kubeconfig, TLS,
workers, threads, `--audit-log`, `--no-events`). The master process checks them and exits 2 on a
bad configuration, before serving anything; each gunicorn worker then calls `create()`, which
starts its own cluster cache (watch threads must not cross a fork) and audit sinks, and serves the
app over them. `/readyz` stays 503, and every placement is rejected, until that cache has synced.

Pods are not watched: a Binding's pod is read with a live GET (one apiserver round trip per
binding) rather than keeping every pod of the cluster in each worker's memory.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

from flask import Flask

from trustgate.audit import AuditLog, EventSink, JsonLinesSink, Sink
from trustgate.cluster.cache import ClusterCache
from trustgate.inventory import api_client
from trustgate.serving.server import run_service, service_settings
from webhook.app import create_app

PROG = "trustgate-webhook"


def create() -> Flask:
    """The app factory gunicorn calls in each worker."""
    from kubernetes import client

    settings = service_settings(PROG)
    api = api_client(settings.kubeconfig)
    cache = ClusterCache(api, settings.verifier()).start()
    sinks: list[Sink] = []
    if settings.audit_log:
        sinks.append(JsonLinesSink(settings.audit_log))
    if settings.events:
        sinks.append(EventSink(client.CoreV1Api(api)))
    app = create_app(cache, AuditLog(sinks))
    gc.freeze()  # keep the start-up objects out of full collections (a pause in the request path)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    return run_service(PROG, f"{__name__}:create", argv)

if __name__ == "__main__":
    sys.exit(main())
