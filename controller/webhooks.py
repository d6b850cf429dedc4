"""trustgate's webhook configurations, kept in step with the installed TrustPolicies.

The API server sends a request to a webhook only when the webhook's configuration matches it. This
controller renders the configurations from the policies (`trustgate.core.scope`) whenever the cache
sees a change, and writes them when they differ from what it last wrote: a pod that no policy can
select never reaches trustgate. A policy the cache holds malformed (one written before the CRD's
validation, say) is reported: a log line, a Warning Event on the policy, and a metric.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.loop import Loop
from trustgate.cluster.cache import ClusterCache
from trustgate.core.policy import TrustPolicy
from trustgate.core.scope import Endpoint, Scope, mutating_webhooks, validating_webhooks

log = logging.getLogger(__name__)

CONFIGURATION = "trustgate"
INVALID_POLICY = "InvalidTrustPolicy"


class ConfigWriter(Protocol):
    def write(self, validating: list[dict[str, Any]], mutating: list[dict[str, Any]]) -> None:
        """Make the two configurations hold exactly these webhooks (raise on failure)."""

    def report_invalid(self, policy: TrustPolicy) -> None:
        """Tell the operator that the cache holds this policy malformed."""


class WebhookConfigurations(Loop):
    def __init__(
        self,
        cache: ClusterCache,
        writer: ConfigWriter,
        scope: Scope,
        endpoint: Callable[[], Endpoint],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__()
        self.cache, self.writer, self.scope, self.endpoint = cache, writer, scope, endpoint
        self._written: Any = None
        self._reported: set[tuple[str, str]] = set()
        self.writes = Counter(
            "trustgate_webhook_configuration_writes_total",
            "Writes of trustgate's webhook configurations, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.invalid = Gauge(
            "trustgate_policies_invalid",
            "TrustPolicies the cache holds malformed (each fails closed for what its readable parts select)",
            registry=registry,
        )
        cache.add_change_listener(self.wake)

    def start_leading(self) -> None:
        self._written = None  # another replica may have written meanwhile: write again
        super().start_leading()

    def run(self) -> None:
        while self.sleep(30):  # woken by every change (policies, the CA bundle); the timeout retries a failed write
            snapshot = self.cache.snapshot()
            if not snapshot.synced:
                continue  # rendering from a partial list of policies would narrow the webhooks
            self._report(snapshot.policies)
            if self.leading.is_set():
                self.reconcile(snapshot.policies)

    def reconcile(self, policies: Sequence[TrustPolicy]) -> None:
        endpoint = self.endpoint()
        if not endpoint.ca_bundle:
            return  # no CA yet (trustgate's own is being issued): a webhook nobody can verify helps no one
        rendered = (
            validating_webhooks(policies, self.scope, endpoint),
            mutating_webhooks(policies, self.scope, endpoint),
        )
        if rendered == self._written:
            return
        try:
            self.writer.write(*rendered)
        except Exception as error:  # retried on the next change or after the timeout
            log.warning("cannot write the webhook configurations: %s", error)
            self.writes.labels("failed").inc()
            if not self._stopping.wait(2):
                self._wake.set()
            return
        self._written = rendered
        self.writes.labels("written").inc()
        log.info("webhook configurations: %d validating, %d mutating webhooks", len(rendered[0]), len(rendered[1]))

    def _report(self, policies: Sequence[TrustPolicy]) -> None:
        invalid = [p for p in policies if p.error is not None]
        self.invalid.set(len(invalid))
        for policy in invalid:
            key = (policy.name, policy.error.message if policy.error else "")
            if key in self._reported:
                continue
            self._reported.add(key)
            log.error("%s", key[1])
            if self.leading.is_set():
                try:
                    self.writer.report_invalid(policy)
                except Exception as error:
                    log.warning("cannot record an Event for TrustPolicy %s: %s", policy.name, error)


def ca_bundle_from(path: str) -> Callable[[], str]:
    """The CA bundle the API server verifies the webhook with, read afresh (it may be rotated)."""
    return lambda: base64.b64encode(Path(path).read_bytes()).decode()
