"""Issuing trust reports: what the attestation authority (and `trustctl sign`) produces."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from trustgate.core.keys import PrivateKey, default_algorithm, thumbprint
from trustgate.core.report import AUDIENCE, LEVELS


def report_claims(
    issuer: str,
    node: str,
    system_uuid: str,
    ttl_seconds: float,
    boot_id: str | None = None,
    levels: Mapping[str, bool] | None = None,
    asset_tags: Mapping[str, str] | None = None,
    features: Mapping[str, str] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a report; every level is trusted unless `levels` says otherwise."""
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": node,
        "system_uuid": system_uuid,
        "iat": issued_at,
        "exp": issued_at + int(ttl_seconds),
        "jti": str(uuid.uuid4()),
        "levels": {level: True for level in LEVELS} | dict(levels or {}),
        "asset_tags": dict(asset_tags or {}),
    }
    if boot_id:
        claims["boot_id"] = boot_id
    if features:
        claims["features"] = dict(features)
    return claims


def sign_claims(claims: Mapping[str, Any], key: PrivateKey, alg: str | None = None, kid: str | None = None) -> str:
    """A compact JWS over `claims`, with `kid` the key's RFC 7638 thumbprint unless given."""
    alg = alg or default_algorithm(key)
    kid = kid or thumbprint(key.public_key())  # type: ignore[arg-type]
    return jwt.encode(dict(claims), key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})
