"""The probes and metrics every trustgate HTTP service serves, with the same texts and meaning.

GET /healthz   200 "ok" while the process serves (liveness)
GET /readyz    200 "ready" once the service can decide; else 503 and why not (readiness)
GET /metrics   the app's own Prometheus registry (one per app, so that tests and workers never share)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

NotReady = Callable[[], str | None]  # why the service cannot decide yet; None when it can
TEXT = "text/plain"


def add_probes(app: Flask, registry: CollectorRegistry, not_ready: NotReady) -> None:
    def healthz() -> Response:
        return Response("ok\n", mimetype=TEXT)

    def readyz() -> Response:
        try:
            why = not_ready()
        except Exception:  # a broken readiness check means not ready, never a crashed probe
            log.exception("readiness check failed")
            why = "readiness check failed (see the log)"
        if why is None:
            return Response("ready\n", mimetype=TEXT)
        return Response(f"{why}\n", status=503, mimetype=TEXT)

    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    for path, view in (("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics)):
        app.add_url_rule(
            path, endpoint=path.strip("/"), view_func=view, methods=["GET"], provide_automatic_options=False
        )


def cache_not_ready(synced: Callable[[], bool]) -> NotReady:
    """Not ready until the cluster cache has synced: no decision is made before."""
    return lambda: None if synced() else "trust report cache not synced"
