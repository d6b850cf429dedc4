"""The authority's HTTP API (JSON; binary fields in base64): what the trust agent talks to.

    POST /v1/register  {node, system_uuid, boot_id, ek_certificate, ek_public, ak_public}
                       -> 201 {agent_id, credential}
    POST /v1/activate  {agent_id, secret}                                   -> 200 {node}
    POST /v1/nonce     {agent_id}                                           -> 200 {nonce, expires}
    POST /v1/attest    {agent_id, nonce, quote, signature, pcrs: {"0": hex, ...}, system_uuid, boot_id}
                       -> 200 {node, levels, asset_tags, reasons, expires, renew_after}
    GET  /v1/agents    the active agents and their last result
    GET  /healthz, /readyz, /metrics

Refusals answer 403 (or 404 for an unknown agent or registration: the agent registers again,
400 for a malformed request) with {"error": reason}.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from attestation.authority import Authority, Refused

MAX_BODY = 64 * 1024


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


def create_app(authority: Authority, ready: Callable[[], bool] = lambda: True) -> Flask:
    app = Flask("trustgate-attestation")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object")
        return data

    @app.errorhandler(Refused)
    def refused(error: Refused) -> tuple[Response, int]:
        return jsonify(error=error.reason), error.status

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest) -> tuple[Response, int]:
        return jsonify(error=str(error)), 400

    @app.post("/v1/register")
    def register() -> tuple[Response, int]:
        data = body()
        agent_id, credential = authority.register(
            node=_field(data, "node"),
            system_uuid=_field(data, "system_uuid"),
            boot_id=data.get("boot_id") if isinstance(data.get("boot_id"), str) else "",
            ek_cert=_b64(data, "ek_certificate"),
            ek_public=_b64(data, "ek_public"),
            ak_public=_b64(data, "ak_public"),
        )
        return jsonify(agent_id=agent_id, credential=base64.b64encode(credential).decode()), 201

    @app.post("/v1/activate")
    def activate() -> Response:
        data = body()
        authority.activate(_field(data, "agent_id"), _b64(data, "secret"))
        return jsonify(activated=True)

    @app.post("/v1/nonce")
    def nonce() -> Response:
        value, expires = authority.nonce(_field(body(), "agent_id"))
        return jsonify(nonce=base64.b64encode(value).decode(), expires=expires)

    @app.post("/v1/attest")
    def attest() -> Response:
        data = body()
        outcome = authority.attest(
            agent_id=_field(data, "agent_id"),
            nonce=_b64(data, "nonce"),
            quote=_b64(data, "quote"),
            signature=_b64(data, "signature"),
            pcrs=_pcrs(data),
            system_uuid=_field(data, "system_uuid"),
            boot_id=data.get("boot_id") if isinstance(data.get("boot_id"), str) else "",
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
        return jsonify(agents=authority.status())

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/readyz")
    def readyz() -> tuple[str, int]:
        return ("ok", 200) if ready() else ("not ready", 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    return app
