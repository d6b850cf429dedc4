"""The webhook's HTTP layer: decode the AdmissionReview, decide, record, encode.

`create_app` is the explicit app factory; `webhook.main` calls it in each gunicorn worker with
the cluster cache and the audit log (see `trustgate.serving.server` for the server).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from trustgate.audit.record import DECISION_REJECTED, DECISIONS, AuditRecord, format_rfc3339
from trustgate.audit.sinks import AuditLog
from trustgate.core.reasons import CODES, Code, Reason, describe, messages
from trustgate.core.snapshot import ClusterView
from trustgate.serving.identity import require_client_certificate
from trustgate.serving.probes import add_probes, cache_not_ready
from webhook.decide import CODE_UNAVAILABLE, PREFIX, Decision, Marking, Violation, decide, mark, refuse
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
REFUSE, ADMIT = "refuse", "admit"  # what an admission becomes when its record cannot be kept
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
            "Rejections and policy violations (dry runs included) by decision and reason code",
            ["decision", "reason"],
            registry=registry,
        )
        self.marks = Counter(
            "trustgate_webhook_marked_pods_total",
            "Pods seen by the mutating step: marked for the extender, or left unchanged",
            ["outcome"],
            registry=registry,
        )
        for decision in DECISIONS:
            for code in CODES:
                self.violations.labels(decision, code)
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


def create_app(
    cluster: ClusterView,
    audit: AuditLog,
    registry: CollectorRegistry | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    client_certificates: bool = False,
    client_names: tuple[str, ...] = (),
    refuse_unrecorded: bool = True,
) -> Flask:
    """The webhook application: `POST /validate`, `POST /mutate`, `GET /healthz`, `/readyz`, `/metrics`.

    `registry` (default: the audit log's) serves `/metrics`; the audit log's counters are shown there too.
    `refuse_unrecorded`: a Warn or Audit admission whose record no durable sink took is refused (safe:
    the security team's record of it would not exist); otherwise it is admitted, and only counted."""
    app = Flask("trustgate-webhook")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes  # the one body-size check: werkzeug stops reading past it
    registry = registry if registry is not None else audit.registry
    audit.expose(registry)
    metrics = _Metrics(registry)
    synced = Gauge("trustgate_webhook_cache_synced", "1 once the cluster cache has synced.", registry=registry)
    synced.set_function(lambda: 1.0 if cluster.snapshot().synced else 0.0)
    add_probes(app, registry, cache_not_ready(lambda: cluster.snapshot().synced))

    def answer(payload: dict[str, Any], status: int = 200) -> Response:
        return Response(dumps(payload), status=status, mimetype=JSON)

    if client_certificates:  # only kube-apiserver (its client certificate) may ask for decisions
        require_client_certificate(
            app,
            ("/validate", "/mutate"),
            lambda why: answer(_status(401, "Unauthorized", why), 401),
            client_names,
        )

    def bad_request(message: str) -> Response:
        metrics.count("other", "other", "invalid")
        log.warning("invalid admission request: %s", message)
        return answer(bad_request_body(message), 400)

    def reviewed(handle: Callable[[AdmissionRequest], Response]) -> Callable[[], Response]:
        """A view answering `handle(review)` for the request's AdmissionReview, or 400 when it cannot be
        decoded; either way timed from before the body is read."""

        @functools.wraps(handle)
        def view() -> Response:
            started = time.perf_counter()
            try:
                try:
                    review = decode_review(request.get_data(cache=False))
                except ReviewError as error:
                    return bad_request(str(error))
                return handle(review)
            finally:
                metrics.latency.observe(time.perf_counter() - started)

        return view

    @app.post("/validate")
    @reviewed
    def validate(review: AdmissionRequest) -> Response:
        decision = _decide_safely(cluster, review)
        if decision.violation is not None:
            decision = _account(metrics, audit, review, decision, refuse_unrecorded)
        metrics.count(review.operation, review.resource_path, decision.outcome)
        return answer(
            encode_response(
                review.uid,
                decision.allowed,
                code=decision.code,
                message=decision.message,
                warnings=decision.warnings,
                annotations=_annotations(review, decision),
            )
        )

    @app.post("/mutate")
    @reviewed
    def mutate(review: AdmissionRequest) -> Response:
        """Marks the trust-requiring pods being created (see webhook.mark)."""
        try:
            marking = mark(cluster.snapshot(), review, cluster)
        except Exception as error:
            log.exception("cannot mark admission request %s", review.uid)
            reason = Reason(Code.INTERNAL, f"internal error marking {review.resource_path}: {type(error).__name__}")
            marking = Marking(refusal=refuse(reason, 500, review.namespace, review.name))
        if marking.refusal is not None:
            decision = marking.refusal
            metrics.count(review.operation, review.resource_path, decision.outcome)
            if decision.violation is not None:
                decision = _account(metrics, audit, review, decision, refuse_unrecorded)
            return answer(
                encode_response(
                    review.uid,
                    False,
                    code=decision.code,
                    message=decision.message,
                    annotations=_annotations(review, decision),
                )
            )
        metrics.marks.labels("marked" if marking.patch else "unchanged").inc()
        return answer(encode_response(review.uid, True, patch=marking.patch))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if isinstance(error, RequestEntityTooLarge) and request.path == "/validate":
            return bad_request(f"request body larger than {max_body_bytes} bytes")
        return answer(_status(code, error.name.replace(" ", ""), error.description or error.name), code)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return answer(_status(500, "InternalError", "trustgate webhook internal error"), 500)

    return app


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def _decide_safely(cluster: ClusterView, review: AdmissionRequest) -> Decision:
    """`decide`, with any unexpected error turned into a rejection (never an allow)."""
    try:
        return decide(cluster.snapshot(), review, cluster)
    except Exception as error:
        log.exception("cannot decide admission request %s", review.uid)
        reason = f"internal error deciding {review.resource_path} {review.operation}: {type(error).__name__}"
        detail = str(error)[:200]
        reason = f"{reason}: {detail}" if detail else reason
        return refuse(Reason(Code.INTERNAL, f"{reason} (fail closed)"), 500, review.namespace, review.name)


def _annotations(review: AdmissionRequest, decision: Decision) -> dict[str, str]:
    """The decision's audit annotations, with what makes the API server's audit log a source of whole
    records: the admission uid (the record's identity), the operation and the reasons' codes."""
    if not decision.annotations:
        return {}
    annotations = dict(decision.annotations)
    annotations["trustgate-uid"] = review.uid
    annotations["trustgate-operation"] = review.operation
    if decision.violation is not None:
        annotations["trustgate-codes"] = ",".join(dict.fromkeys(r.code.value for r in decision.violation.reasons))
    return annotations


def _account(
    metrics: _Metrics, audit: AuditLog, review: AdmissionRequest, decision: Decision, refuse_unrecorded: bool
) -> Decision:
    """Count a violation, log a rejection and, unless it is a dry run, record it. Returns the decision to
    answer: an admission whose record no durable sink took becomes a refusal under `refuse_unrecorded`."""
    violation = decision.violation
    assert violation is not None
    for code in dict.fromkeys(reason.code for reason in violation.reasons):
        metrics.violations.labels(violation.decision, code).inc()
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
        return decision
    hold = decision.allowed and refuse_unrecorded
    if audit.record(_record(review, violation), durable_required=hold) or not hold:
        return decision
    refusal = _unrecorded(decision, violation)
    assert refusal.violation is not None
    metrics.violations.labels(DECISION_REJECTED, Code.AUDIT_UNAVAILABLE).inc()
    log.error("refused %s %s (uid %s): %s", review.operation, review.resource_path, review.uid, refusal.message)
    audit.record(_record(review, refusal.violation))
    return refusal


def _unrecorded(decision: Decision, violation: Violation) -> Decision:
    """The refusal of an admission whose record could not be kept."""
    pod = f"{violation.namespace}/{violation.pod}"
    reason = Reason(
        Code.AUDIT_UNAVAILABLE,
        f"the {violation.decision} admission of pod {pod} on node {violation.node} cannot be recorded (no audit "
        "sink could write it), so it is refused (--on-audit-failure=refuse)",
    )
    refusal = dataclasses.replace(
        violation,
        decision=DECISION_REJECTED,
        reasons=(*violation.reasons, reason),
        pod_uid="",  # a refused CREATE leaves no pod; an UPDATE's pod keeps running as it was
    )
    annotations = {**decision.annotations, "trustgate-decision": DECISION_REJECTED}
    annotations["trustgate-reasons"] = describe(refusal.reasons)
    return Decision(
        allowed=False,
        code=CODE_UNAVAILABLE,
        message=f"{PREFIX}{reason.message}: {describe(violation.reasons)}",
        warnings=decision.warnings,
        annotations=annotations,
        violation=refusal,
    )


def _record(review: AdmissionRequest, violation: Violation) -> AuditRecord:
    return AuditRecord(
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
        reasons=messages(violation.reasons),
        codes=list(dict.fromkeys(reason.code.value for reason in violation.reasons)),
        pod_uid=violation.pod_uid,
    )
