"""The scheduler extender's HTTP face: a Flask app that decodes, decides and encodes.

    POST /filter      ExtenderArgs -> ExtenderFilterResult
    POST /prioritize  ExtenderArgs -> HostPriorityList
    GET  /healthz     200 while serving
    GET  /readyz      200 once the cluster cache has synced, else 503
    GET  /metrics     Prometheus text format

Protocol errors (bad JSON, wrong content type, missing Pod, body too large, unknown path or method)
get a 4xx whose JSON body is an ExtenderFilterResult carrying only `Error`; an unexpected exception
gets a 500 with a generic `Error` (the details are logged). kube-scheduler treats any of these, like a
200 with `Error`, as a failed call: with `ignorable: false` the pod is retried, never placed unchecked.

Metrics live in the registry given to `create_app` (a fresh one per app otherwise), so each gunicorn
worker exposes its own counters; see `trustgate.serving.server` for why one worker is the default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from werkzeug.exceptions import HTTPException, MethodNotAllowed, UnsupportedMediaType

from extender.bind import RecentPods, binding_refusal
from extender.filter import (
    FilterOutcome,
    MalformedNode,
    NodeIndex,
    PrioritizeOutcome,
    count_codes,
    filter_nodes,
    prioritize_nodes,
)
from extender.wire import (
    ExtenderArgs,
    WireError,
    decode_args,
    decode_binding_args,
    encode_binding_result,
    encode_error,
    encode_filter_result,
    encode_priorities,
)
from trustgate.core.reasons import Code, Reason
from trustgate.core.snapshot import ClusterView, Snapshot
from trustgate.serving.identity import require_client_certificate
from trustgate.serving.probes import add_probes, cache_not_ready

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
JSON = "application/json"
_VERBS = frozenset({"filter", "prioritize", "bind", "healthz", "readyz", "metrics"})
Binder = Callable[[str, str, str, str], None]  # (namespace, pod, uid, node): write the Binding, raise on failure
_ERROR_KINDS = {Code.NOT_READY: "not_synced", Code.POLICY_INVALID: "invalid_pod"}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Metrics:
    def __init__(self, registry: CollectorRegistry, cluster: ClusterView) -> None:
        self.requests = Counter(
            "trustgate_extender_requests",
            "Extender HTTP requests by verb and status code.",
            ["verb", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "trustgate_extender_request_duration_seconds",
            "Server-side extender request latency by verb.",
            ["verb"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "trustgate_extender_errors",
            "Requests answered with an error, by kind (not_synced, invalid_pod, bad_request, internal).",
            ["verb", "kind"],
            registry=registry,
        )
        self.pods = Counter(
            "trustgate_extender_filtered_pods",
            "Pods filtered, by whether they require trust.",
            ["requires_trust"],
            registry=registry,
        )
        self.failed = Counter(
            "trustgate_extender_nodes_failed",
            "Candidate nodes removed for a trust-requiring pod, by the code of their first reason.",
            ["reason"],
            registry=registry,
        )
        cache_nodes = Gauge(
            "trustgate_extender_cache_nodes", "Nodes in the current cluster snapshot.", registry=registry
        )
        cache_nodes.set_function(lambda: len(cluster.snapshot().nodes))
        cache_age = Gauge(
            "trustgate_extender_cache_age_seconds", "Seconds since the current snapshot was built.", registry=registry
        )
        cache_age.set_function(lambda: max(0.0, time.time() - cluster.snapshot().built_at))
        self.binds = Counter(
            "trustgate_extender_binds",
            "Bind calls, by outcome (bound, or the code of the refusal).",
            ["outcome"],
            registry=registry,
        )
        synced = Gauge("trustgate_extender_cache_synced", "1 once the cluster cache has synced.", registry=registry)
        synced.set_function(lambda: 1.0 if cluster.snapshot().synced else 0.0)


def create_app(
    cluster: ClusterView,
    registry: CollectorRegistry | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    clock: Callable[[], float] = time.time,
    binder: Binder | None = None,
    client_certificates: bool = False,
    client_names: tuple[str, ...] = (),
) -> Flask:
    """The extender's WSGI app over `cluster`. `clock` gives `now` for report expiry (once per request)."""
    app = Flask("trustgate.extender")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    metrics = _Metrics(registry, cluster)
    add_probes(app, registry, cache_not_ready(lambda: cluster.snapshot().synced))
    if client_certificates:  # only kube-scheduler (its client certificate) may ask for decisions
        require_client_certificate(
            app,
            ("/filter", "/prioritize", "/bind"),
            lambda why: reply(encode_error(Reason(Code.BAD_REQUEST, why)), 401),
            client_names,
        )
    index = NodeIndex()  # per-node facts kept across requests (see extender.filter)
    recent = RecentPods()  # the pods filtered lately, for their Bind

    def body() -> bytes:
        if request.mimetype != JSON:
            raise UnsupportedMediaType(f"Content-Type must be {JSON}, not {request.mimetype or 'missing'}")
        return request.get_data(cache=False)

    def read_args() -> Any:
        return decode_args(body())

    def reply(body: bytes, status: int = 200) -> Response:
        return Response(body, status=status, mimetype=JSON)

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        rule = request.url_rule
        verb = rule.endpoint if rule is not None and rule.endpoint in _VERBS else "other"
        metrics.requests.labels(verb, str(response.status_code)).inc()
        started = g.get("started")
        if started is not None:
            metrics.latency.labels(verb).observe(time.perf_counter() - started)
        if 400 <= response.status_code < 600:
            metrics.errors.labels(verb, "internal" if response.status_code >= 500 else "bad_request").inc()
        return response

    @app.post("/filter", endpoint="filter", provide_automatic_options=False)
    def filter_view() -> Response:
        args = read_args()
        snapshot = cluster.snapshot()
        body, outcome = filter_request(snapshot, args, clock(), index)
        if outcome.error is not None:
            metrics.errors.labels("filter", _ERROR_KINDS.get(outcome.error.code, "internal")).inc()
            log.warning("filter error for pod %s: %s", _pod_name(args.pod), outcome.error.message)
        else:
            metrics.pods.labels("true" if outcome.requires_trust else "false").inc()
            for code, count in count_codes(outcome.failed).items():
                metrics.failed.labels(code).inc(count)
            if outcome.requires_trust:
                recent.remember(args.pod)
        return reply(body)

    @app.post("/prioritize", endpoint="prioritize", provide_automatic_options=False)
    def prioritize_view() -> Response:
        args = read_args()
        body, outcome = prioritize_request(cluster.snapshot(), args, clock(), index)
        if outcome.error is not None:
            log.info("prioritize gives no preference for pod %s: %s", _pod_name(args.pod), outcome.error.message)
        return reply(body)

    @app.post("/bind", endpoint="bind", provide_automatic_options=False)
    def bind_view() -> Response:
        args = decode_binding_args(body())
        refusal = bind(args.namespace, args.pod, args.uid, args.node)
        metrics.binds.labels("bound" if refusal is None else refusal.code).inc()
        if refusal is not None:
            log.warning("refused to bind pod %s/%s to %s: %s", args.namespace, args.pod, args.node, refusal.message)
        return reply(encode_binding_result(refusal))

    def bind(namespace: str, name: str, uid: str, node: str) -> Reason | None:
        pod = recent.get(uid) if uid else None
        if pod is None:
            pod = cluster.find_pod(namespace, name, uid)
        if pod is None:
            return Reason(Code.POD_NOT_FOUND, f"pod {namespace}/{name} not found: not bound")
        refusal = binding_refusal(cluster.snapshot(), pod, node, clock())
        if refusal is not None:
            return refusal
        if binder is None:
            return Reason(Code.INTERNAL, "this extender does not bind (no API access configured)")
        try:
            binder(namespace, name, uid, node)
        except Exception as error:  # the API server refused or was unreachable: kube-scheduler retries the pod
            return Reason(Code.INTERNAL, f"cannot bind pod {namespace}/{name} to {node}: {error}"[:512])
        return None

    @app.errorhandler(WireError)
    @app.errorhandler(MalformedNode)
    def bad_request(error: ValueError) -> Response:
        return reply(encode_error(Reason(Code.BAD_REQUEST, f"bad request: {error}")), 400)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = reply(
            encode_error(Reason(Code.BAD_REQUEST, f"{error.name}: {error.description}")), error.code or 500
        )
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return reply(encode_error(Reason(Code.INTERNAL, "internal error (see the extender's log)")), 500)

    return app


def filter_request(
    snapshot: Snapshot, args: ExtenderArgs, now: float, index: NodeIndex | None = None
) -> tuple[bytes, FilterOutcome]:
    """One /filter call after decoding: decide and encode (what the view does, minus HTTP and metrics)."""
    candidates = args.node_names if args.by_name else args.nodes
    outcome = filter_nodes(snapshot, args.pod, candidates, now, args.by_name, index)
    return encode_filter_result(args, outcome.passed, outcome.failed, outcome.error), outcome


def prioritize_request(
    snapshot: Snapshot, args: ExtenderArgs, now: float, index: NodeIndex | None = None
) -> tuple[bytes, PrioritizeOutcome]:
    """One /prioritize call after decoding: decide and encode."""
    candidates = args.node_names if args.by_name else args.nodes
    outcome = prioritize_nodes(snapshot, args.pod, candidates, now, args.by_name, index)
    return encode_priorities(outcome.hosts, outcome.scores), outcome


def _pod_name(pod: dict[str, Any]) -> str:
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return "<unnamed>"
    return f"{metadata.get('namespace') or ''}/{metadata.get('name') or metadata.get('generateName') or ''}"
