"""The authority's HTTP API (JSON; binary fields in base64): what the trust agent talks to.

    POST /v1/register  {node, system_uuid, boot_id, ek_certificate, ek_public, ak_public}
                       -> 201 {agent_id, credential}
    POST /v1/activate  {agent_id, secret}                                   -> 200 {activated}
    POST /v1/nonce     {agent_id}                                           -> 200 {nonce, expires}
    POST /v1/attest    {agent_id, nonce, quote, signature, pcrs: {"0": hex, ...}, system_uuid, boot_id}
                       -> 200 {node, levels, asset_tags, reasons, expires, renew_after}
    GET  /v1/agents    the active agents and their last result (operators: `Readers`)
    POST /v1/keys/challenge  {}                                            -> 200 {nonce, expires}
    POST /v1/keys/release    {nonce, session_key, annotation, quote, signature, pcrs}
                       -> 200 {key: {epk, iv, ct}} or 403 {error, code}   (the key broker, `keybroker`)
    GET  /healthz, /readyz, /metrics   (no client certificate needed)

Every `/v1` call needs a verified client certificate (`attestation.identity`): none answers 401; one
that is not a node identity (agent calls) or not a reader (`/v1/agents`) answers 403. Registrations
are rate-limited per source address and in all (`attestation.ratelimit`): 429 with Retry-After.
Refusals answer 403 (or 404 for an unknown agent or registration: the agent registers again,
400 for a malformed request) with {"error": reason}.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from attestation.authority import Authority, Refused, Requester
from attestation.identity import Readers
from attestation.ratelimit import RegistrationLimiter
from keybroker.broker import KeyBroker, KeyRefused, parse_release
from trustgate.serving.identity import ClientIdentity, peer_identity

MAX_BODY = 64 * 1024
UNAUTHENTICATED = Counter(
    "trustgate_attestation_unauthenticated_total", "API calls refused for their client certificate", ["reason"]
)
Identify = Callable[[Mapping[str, Any]], ClientIdentity | None]


class BadRequest(Exception):
    pass


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"field {name} must be a string")
    return value


def _b64(body: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(_field(body, name), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"field {name} is not base64") from None


def _pcrs(body: dict[str, Any]) -> dict[int, bytes]:
    raw = body.get("pcrs")
    if not isinstance(raw, dict) or len(raw) > 24:
        raise BadRequest("field pcrs must map PCR numbers to hex SHA-256 values")
    try:
        return {int(k): bytes.fromhex(v) for k, v in raw.items()}
    except (ValueError, TypeError):
        raise BadRequest("field pcrs must map PCR numbers to hex SHA-256 values") from None


def create_app(
    authority: Authority,
    readers: Readers,
    limiter: RegistrationLimiter | None = None,
    identify: Identify = peer_identity,
    ready: Callable[[], bool] = lambda: True,
    broker: KeyBroker | None = None,
) -> Flask:
    """The API; `identify` reads the caller's verified client certificate (gunicorn's TLS socket)."""
    app = Flask("trustgate-attestation")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    limiter = limiter or RegistrationLimiter()

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object")
        return data

    def caller() -> ClientIdentity:
        identity = identify(request.environ)
        if identity is None:
            UNAUTHENTICATED.labels("no certificate").inc()
            raise Refused("a client certificate is required", 401)
        return identity

    def agent() -> Requester:
        """The calling agent: a node identity, which may act for that node only."""
        identity = caller()
        if identity.node is None:
            UNAUTHENTICATED.labels("not a node").inc()
            raise Refused(f"client certificate {identity} is not a node identity (CN=system:node:NAME)", 403)
        return Requester(identity.node, str(identity), request.remote_addr or "")

    @app.errorhandler(Refused)
    def refused(error: Refused) -> tuple[Response, int]:
        return jsonify(error=error.reason), error.status

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest) -> tuple[Response, int]:
        return jsonify(error=str(error)), 400

    @app.post("/v1/register")
    def register() -> Response | tuple[Response, int]:
        requester = agent()  # authenticated first: anonymous calls never drain the buckets
        limited = limiter.admit(requester.address)
        if limited is not None:
            answer = jsonify(error=f"too many registrations ({limited.limit} limit); retry later")
            answer.headers["Retry-After"] = limited.retry_after_header
            return answer, 429
        data = body()
        agent_id, credential = authority.register(
            node=_field(data, "node"),
            system_uuid=_field(data, "system_uuid"),
            boot_id=_field(data, "boot_id"),
            ek_cert=_b64(data, "ek_certificate"),
            ek_public=_b64(data, "ek_public"),
            ak_public=_b64(data, "ak_public"),
            requester=requester,
        )
        return jsonify(agent_id=agent_id, credential=base64.b64encode(credential).decode()), 201

    @app.post("/v1/activate")
    def activate() -> Response:
        requester = agent()
        data = body()
        authority.activate(_field(data, "agent_id"), _b64(data, "secret"), requester)
        return jsonify(activated=True)

    @app.post("/v1/nonce")
    def nonce() -> Response:
        requester = agent()
        value, expires = authority.nonce(_field(body(), "agent_id"), requester)
        return jsonify(nonce=base64.b64encode(value).decode(), expires=expires)

    @app.post("/v1/attest")
    def attest() -> Response:
        requester = agent()
        data = body()
        outcome = authority.attest(
            agent_id=_field(data, "agent_id"),
            nonce=_b64(data, "nonce"),
            quote=_b64(data, "quote"),
            signature=_b64(data, "signature"),
            pcrs=_pcrs(data),
            system_uuid=_field(data, "system_uuid"),
            boot_id=_field(data, "boot_id"),
            requester=requester,
        )
        return jsonify(
            node=outcome.node,
            levels=outcome.levels,
            asset_tags=outcome.asset_tags,
            reasons=outcome.reasons,
            expires=outcome.expires_at,
            renew_after=outcome.renew_after,
        )

    @app.get("/v1/agents")
    def agents() -> Response:
        identity = caller()
        if not readers.allow(identity):
            UNAUTHENTICATED.labels("not a reader").inc()
            raise Refused(f"client certificate {identity} may not read the agents (--reader, --reader-group)", 403)
        return jsonify(agents=authority.status())

    if broker is not None:

        @app.errorhandler(KeyRefused)
        def key_refused(error: KeyRefused) -> tuple[Response, int]:
            return jsonify(error=str(error), code=error.reason.code.value), error.status

        @app.post("/v1/keys/challenge")
        def key_challenge() -> Response:
            nonce, expires = broker.challenge(agent())
            return jsonify(nonce=base64.b64encode(nonce).decode(), expires=expires)

        @app.post("/v1/keys/release")
        def key_release() -> Response:
            requester = agent()
            try:
                release = parse_release(body())
            except ValueError as error:
                raise BadRequest(str(error)) from None
            return jsonify(key=broker.release(requester, release))

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/readyz")
    def readyz() -> tuple[str, int]:
        return ("ok", 200) if ready() else ("not ready", 503)

    @app.get("/metrics")
    def metrics() -> Response:
        text = generate_latest()
        if broker is not None:  # the broker's and its audit log's own registries
            text += generate_latest(broker.registry) + generate_latest(broker.audit.registry)
        return Response(text, mimetype=CONTENT_TYPE_LATEST)

    return app
