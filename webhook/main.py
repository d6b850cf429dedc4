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

from trustgate.audit.sinks import audit_log
from trustgate.cluster.api import api_client
from trustgate.cluster.cache import ClusterCache
from trustgate.settings import AuditSettings, ConfigError, ServingSettings, TrustSettings, choice, option
from trustgate.startup import Command, Service
from webhook.app import ADMIT, REFUSE, create_app


@dataclass(frozen=True)
class WebhookSettings(TrustSettings, ServingSettings, AuditSettings):
    on_audit_failure: str = option(
        "what a Warn or Audit admission becomes when no durable audit sink (stdout, --audit-log) took its "
        "record: refuse (the default: nothing is admitted unrecorded) or admit",
        REFUSE,
        parse=choice(REFUSE, ADMIT),
    )

    def check(self) -> None:
        super().check()
        if self.no_audit_stdout and not self.audit_log and self.on_audit_failure == REFUSE:
            raise ConfigError(
                "--no-audit-stdout without --audit-log leaves no durable audit sink: every Warn and Audit "
                "admission would be refused; set --audit-log, or --on-audit-failure=admit"
            )


def create(settings: WebhookSettings) -> Flask:
    """The app factory gunicorn calls in each worker."""
    from kubernetes import client

    api = api_client(settings.kubeconfig)
    cache = ClusterCache(api, settings.verifier(), exempt=settings.exempt).start()
    registry = CollectorRegistry()
    audit = audit_log(registry, settings, client.CoreV1Api(api))
    app = create_app(
        cache,
        audit,
        registry,
        client_certificates=settings.client_ca is not None,
        client_names=settings.client_names,
        refuse_unrecorded=settings.on_audit_failure == REFUSE,
    )
    gc.freeze()  # keep the start-up objects out of full collections (a pause in the request path)
    return app


SERVICE = Service("trustgate-webhook", Command(WebhookSettings, app=create), description=__doc__.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
