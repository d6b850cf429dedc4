"""The webhook's HTTP layer: decode the AdmissionReview, decide, record, encode.

`create_app` is the explicit app factory; the WSGI server (gunicorn over TLS, see
`trustgate.serving.server`) imports a module that calls it with the cluster view and audit log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from trustgate.audit.record import DECISIONS, AuditRecord, format_rfc3339
from trustgate.audit.sinks import AuditLog
from trustgate.core.reasons import CATEGORIES, reason_category
from trustgate.core.snapshot import ClusterView, Snapshot
from webhook.decide import Decision, Violation, decide
from webhook.review import (
    MAX_BODY_BYTES,
    AdmissionRequest,
    ReviewError,
    bad_request_body,
    decode_review,
    dumps,
    encode_response,
)

log = logging.getLogger(__name__)

OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
RESOURCES = ("pods", "pods/binding", "bindings", "pods/ephemeralcontainers")
OUTCOMES = ("allowed", *DECISIONS)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
JSON = "application/json"


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "trustgate_webhook_admission_requests_total",
            "Admission requests by operation, resource and decision (invalid: answered 400)",
            ["operation", "resource", "decision"],
            registry=registry,
        )
        self.latency = Histogram(
            "trustgate_webhook_admission_duration_seconds",
            "Time to answer an admission request",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.violations = Counter(
            "trustgate_webhook_violations_total",
            "Rejections and policy violations (dry runs included) by decision and reason category",
            ["decision", "reason"],
            registry=registry,
        )
        for decision in DECISIONS:
            for category in CATEGORIES:
                self.violations.labels(decision, category)
        self._request_children: dict[tuple[str, str, str], Any] = {}

    def count(self, operation: str, resource: str, decision: str) -> None:
        key = (
            operation if operation in OPERATIONS else "other",
            resource if resource in RESOURCES else "other",
            decision,
        )
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children.setdefault(key, self.requests.labels(*key))
        child.inc()


class _Forward(Collector):
    """Exposes another registry's metrics (the audit log's) through the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


def create_app(
    cluster: ClusterView,
    audit: AuditLog,
    registry: CollectorRegistry | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Flask:
    """The webhook application: `POST /validate`, `GET /healthz`, `/readyz`, `/metrics`."""
    app = Flask("trustgate-webhook")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    registry = registry if registry is not None else CollectorRegistry()
    metrics = _Metrics(registry)
    if audit.registry is not registry:
        registry.register(_Forward(audit.registry))
    app.extensions["trustgate"] = {"cluster": cluster, "audit": audit, "registry": registry}

    def lookup_pod(snapshot: Snapshot) -> Any:
        def lookup(namespace: str, name: str, uid: str) -> Mapping[str, Any] | None:
            cached = snapshot.pods.get((namespace, name))
            if cached is not None and (not uid or (cached.get("metadata") or {}).get("uid") in (None, "", uid)):
                return cached
            return cluster.get_pod(namespace, name)  # created a moment ago, or replaced: ask the apiserver

        return lookup

    def answer(payload: dict[str, Any], status: int = 200) -> Response:
        return Response(dumps(payload), status=status, mimetype=JSON)

    def bad_request(message: str) -> Response:
        metrics.count("other", "other", "invalid")
        log.warning("invalid admission request: %s", message)
        return answer(bad_request_body(message), 400)

    @app.post("/validate")
    def validate() -> Response:
        started = time.perf_counter()
        try:
            try:
                body = request.get_data(cache=False)
            except RequestEntityTooLarge:
                return bad_request(f"request body larger than {max_body_bytes} bytes")
            if len(body) > max_body_bytes:
                return bad_request(f"request body larger than {max_body_bytes} bytes")
            try:
                review = decode_review(body)
            except ReviewError as error:
                return bad_request(str(error))
            decision = _decide_safely(cluster, review, lookup_pod)
            if decision.violation is not None:
                _account(metrics, audit, review, decision)
            metrics.count(review.operation, review.resource_path, decision.outcome)
            return answer(
                encode_response(
                    review.uid,
                    decision.allowed,
                    code=decision.code,
                    message=decision.message,
                    warnings=decision.warnings,
                    annotations=decision.annotations,
                )
            )
        finally:
            metrics.latency.observe(time.perf_counter() - started)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            synced = cluster.snapshot().synced
        except Exception:
            log.exception("cannot read the trust cache")
            synced = False
        if synced:
            return Response("ok\n", mimetype="text/plain")
        return Response("trust cache not synced\n", status=503, mimetype="text/plain")

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if isinstance(error, RequestEntityTooLarge) and request.path == "/validate":
            return bad_request(f"request body larger than {max_body_bytes} bytes")
        body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code}
        body |= {"reason": error.name.replace(" ", ""), "message": error.description or error.name}
        return answer(body, code)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 500}
        body |= {"reason": "InternalError", "message": "trustgate webhook internal error"}
        return answer(body, 500)

    return app


def _decide_safely(cluster: ClusterView, review: AdmissionRequest, lookup_pod: Any) -> Decision:
    """`decide`, with any unexpected error turned into a rejection (never an allow)."""
    try:
        snapshot = cluster.snapshot()
        return decide(snapshot, review, lookup_pod(snapshot))
    except Exception as error:
        log.exception("cannot decide admission request %s", review.uid)
        reason = f"internal error deciding {review.resource_path} {review.operation}: {type(error).__name__}"
        detail = str(error)[:200]
        reason = f"{reason}: {detail}" if detail else reason
        return Decision(
            allowed=False,
            code=500,
            message=f"trustgate: {reason} (fail closed)",
            annotations={"trustgate-decision": "rejected", "trustgate-reasons": reason},
            violation=Violation(
                decision="rejected",
                namespace=review.namespace,
                pod=review.name,
                node="",
                reasons=(reason,),
            ),
        )


def _account(metrics: _Metrics, audit: AuditLog, review: AdmissionRequest, decision: Decision) -> None:
    """Count a violation, log a rejection and, unless it is a dry run, record it."""
    violation = decision.violation
    assert violation is not None
    for category in {reason_category(r) for r in violation.reasons} or {"other"}:
        metrics.violations.labels(violation.decision, category).inc()
    if not decision.allowed:
        log.info(
            "rejected %s %s (uid %s, dry run %s): %s",
            review.operation,
            review.resource_path,
            review.uid,
            review.dry_run,
            decision.message,
        )
    if review.dry_run:
        return
    audit.record(
        AuditRecord(
            time=format_rfc3339(time.time()),
            uid=review.uid,
            operation=review.operation,
            namespace=violation.namespace or review.namespace,
            pod=violation.pod,
            node=violation.node,
            user=review.username,
            policy=violation.policy,
            enforcement=violation.enforcement,
            decision=violation.decision,
            reasons=list(violation.reasons),
            pod_uid=violation.pod_uid,
        )
    )
