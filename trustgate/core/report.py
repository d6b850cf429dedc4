"""Trust reports: signed JWTs from the attestation authority, verified once and cached.

Verification has two halves. `ReportVerifier.verify` checks what never changes for a
given token (structure, signature, issuer, audience, claim types, lifetime) and caches
the outcome by token. `TrustReport.binding_failure` and `time_failure` check what depends on the node and the
clock (host binding, expiry) and runs at every decision, so a cached report can never
outlive its `exp`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from jwt.algorithms import get_default_algorithms

from trustgate.core.keys import ALLOWED_ALGORITHMS, KeySet
from trustgate.core.reasons import Code, Reason

LEVELS: tuple[str, ...] = ("firmware", "boot", "bootloader", "kernel", "runtime")
AUDIENCE = "trustgate"
MAX_TOKEN_BYTES = 16 * 1024
DEFAULT_SKEW_SECONDS = 30.0
DEFAULT_MAX_LIFETIME_SECONDS = 24 * 3600.0

# Headers that would let a token bring or point at its own key; keys come only from configuration.
_KEY_BEARING_HEADERS = ("jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_JWT_TYPES = frozenset({"JWT", "APPLICATION/JWT"})  # RFC 7519 5.1: compared case-insensitively
_MAX_NUMERIC_DATE = 2**40  # about the year 36812; larger values are garbage, not dates
_ALGORITHMS = get_default_algorithms()


class ReportError(Exception):
    """A report that must not be trusted. `reason` is short and meant for operators."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedReport(ReportError):
    """Not a compact JWS, or a header or payload that is not a JSON object."""


class SignatureError(ReportError):
    """Bad algorithm, unknown key, or a signature that does not verify."""


class ClaimError(ReportError):
    """Signed, but a claim is missing, mistyped or not acceptable."""


@dataclass(frozen=True)
class VerifierSettings:
    issuers: frozenset[str]
    audience: str = AUDIENCE
    skew_seconds: float = DEFAULT_SKEW_SECONDS
    max_lifetime_seconds: float = DEFAULT_MAX_LIFETIME_SECONDS
    max_token_bytes: int = MAX_TOKEN_BYTES
    # A reboot voids a report only when it names the boot: trustgate's authority always does. Reports of
    # other authorities without a boot_id are accepted only when the operator says so.
    allow_missing_boot_id: bool = False

    def __post_init__(self) -> None:
        if not self.issuers:
            raise ValueError("at least one trusted issuer is required")
        if self.skew_seconds < 0 or self.max_lifetime_seconds <= 0:
            raise ValueError("clock skew must be >= 0 and maximum lifetime > 0")


@dataclass(frozen=True)
class NodeIdentity:
    """What a report must be bound to: the Node's name and its host identity from `status.nodeInfo`."""

    name: str
    system_uuid: str
    boot_id: str = ""


@dataclass(frozen=True)
class TrustReport:
    """The verified claims of a report (signature, issuer, audience, types and lifetime already checked)."""

    issuer: str
    node: str
    system_uuid: str
    issued_at: float
    expires_at: float
    jti: str
    levels: Mapping[str, bool]
    kid: str
    algorithm: str
    not_before: float | None = None
    boot_id: str | None = None
    asset_tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    features: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def trusted_levels(self) -> frozenset[str]:
        return frozenset(level for level, ok in self.levels.items() if ok)

    def binding_failure(self, node: NodeIdentity) -> Reason | None:
        """Why this report does not describe `node`, or None when it is bound to it."""
        if self.node != node.name:
            return Reason(Code.BOUND_ELSEWHERE, f"report bound to another host (issued for node {self.node})")
        if not node.system_uuid:
            return Reason(Code.BOUND_ELSEWHERE, "node reports no system UUID to bind the report to")
        if self.system_uuid.casefold() != node.system_uuid.casefold():
            return Reason(
                Code.BOUND_ELSEWHERE,
                f"report bound to another host (system UUID {self.system_uuid}, node has {node.system_uuid})",
            )
        if self.boot_id is not None and self.boot_id != node.boot_id:
            return Reason(Code.REBOOTED, "report predates the node's last reboot (boot id differs)")
        return None

    def time_failure(self, now: float, skew: float) -> Reason | None:
        """Why the report is not valid at `now`, or None while it is."""
        if now >= self.expires_at + skew:
            return Reason(Code.EXPIRED, f"trust report expired at {format_time(self.expires_at)}")
        if self.not_before is not None and now + skew < self.not_before:
            return Reason(Code.NOT_YET_VALID, f"trust report not valid before {format_time(self.not_before)}")
        if now + skew < self.issued_at:
            return Reason(Code.NOT_YET_VALID, f"trust report issued in the future ({format_time(self.issued_at)})")
        return None

    def to_claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.node,
            "system_uuid": self.system_uuid,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "jti": self.jti,
            "levels": dict(self.levels),
            "asset_tags": dict(self.asset_tags),
            "features": dict(self.features),
        }
        if self.not_before is not None:
            claims["nbf"] = self.not_before
        if self.boot_id is not None:
            claims["boot_id"] = self.boot_id
        return claims


def format_time(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # NumericDates go up to 2**40, datetime only to the year 9999
        return f"{timestamp:.0f} seconds after 1970-01-01T00:00:00Z"


class ReportVerifier:
    """Verifies tokens against a key set and settings, caching each token's outcome.

    A cached entry is either the `TrustReport` or the `ReportError` it raised; neither
    depends on the clock, so reusing it is safe. The cache is bounded (oldest out first).
    """

    def __init__(self, keys: KeySet, settings: VerifierSettings, cache_size: int = 65536) -> None:
        self.keys = keys
        self.settings = settings
        self._cache: dict[str, TrustReport | ReportError] = {}
        self._cache_size = cache_size

    def verify(self, token: str) -> TrustReport:
        """The report's verified claims; raises `ReportError` with the reason otherwise."""
        if not isinstance(token, str):  # before the cache lookup: a list or dict is not even hashable
            raise MalformedReport("token is not a string")
        outcome = self._cache.get(token)
        if outcome is None:
            try:
                outcome = self._verify_uncached(token)
            except ReportError as error:
                outcome = error.with_traceback(None)
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[token] = outcome
        if isinstance(outcome, ReportError):
            # A fresh exception: re-raising the cached one would chain every caller's frames onto its
            # traceback, and the cache would keep them (and all they reference) alive.
            raise type(outcome)(outcome.reason)
        return outcome

    def verify_for(self, token: str, node: NodeIdentity, now: float) -> TrustReport:
        """`verify`, then the node binding and the time checks at `now`."""
        report = self.verify(token)
        reason = report.binding_failure(node) or report.time_failure(now, self.settings.skew_seconds)
        if reason is not None:
            raise ClaimError(reason.message)
        return report

    def cache_len(self) -> int:
        return len(self._cache)

    def _verify_uncached(self, token: str) -> TrustReport:
        if not isinstance(token, str):
            raise MalformedReport("token is not a string")
        if len(token) > self.settings.max_token_bytes:
            raise MalformedReport(f"token larger than {self.settings.max_token_bytes} bytes")
        if not _COMPACT_JWS.fullmatch(token):
            raise MalformedReport("not a compact JWS (expected three base64url parts separated by dots)")
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = _decode_json_object(header_b64, "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            allowed = ", ".join(sorted(ALLOWED_ALGORITHMS))
            raise SignatureError(f"algorithm {alg!r:.64} not allowed (allowed: {allowed})")
        for name in _KEY_BEARING_HEADERS:
            if name in header:
                raise SignatureError(f"token header carries key material ({name}); keys come only from configuration")
        if "crit" in header:
            raise SignatureError("token header has critical extensions (crit), none are supported")
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() not in _JWT_TYPES:
            raise SignatureError(f"token type {typ!r:.64} is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise SignatureError("token header has no kid")
        key = self.keys.get(kid)
        if key is None:
            raise SignatureError(f"unknown signing key (kid {kid[:64]!r})")
        if alg not in key.algorithms:
            raise SignatureError(f"key {kid} is an {key.description} and cannot verify {alg}")
        signature = _b64decode(signature_b64, "signature")
        # PyJWT's algorithm objects do the cryptography (and the JOSE r||s form of ECDSA).
        if not _ALGORITHMS[alg].verify(f"{header_b64}.{payload_b64}".encode("ascii"), key.key, signature):
            raise SignatureError(f"signature does not verify with key {kid}")
        claims = _decode_json_object(payload_b64, "payload")
        report = self._claims_to_report(claims, kid, alg)
        if key.issuers is not None and report.issuer not in key.issuers:
            raise SignatureError(f"key {kid} may not sign for issuer {report.issuer!r}")
        return report

    def _claims_to_report(self, claims: Mapping[str, Any], kid: str, alg: str) -> TrustReport:
        settings = self.settings
        issuer = _string_claim(claims, "iss")
        if issuer not in settings.issuers:
            raise ClaimError(f"issuer {issuer[:128]!r} is not trusted")
        audience = _required(claims, "aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise ClaimError("claim aud must be a string or a list of strings")
        if settings.audience not in audiences:
            raise ClaimError(f"audience is not {settings.audience!r}")
        issued_at = _date_claim(claims, "iat")
        expires_at = _date_claim(claims, "exp")
        not_before = _date_claim(claims, "nbf") if "nbf" in claims else None
        if expires_at <= issued_at:
            raise ClaimError("report expires before it was issued (exp <= iat)")
        if expires_at - issued_at > settings.max_lifetime_seconds:
            lifetime, limit = expires_at - issued_at, settings.max_lifetime_seconds
            raise ClaimError(f"report lifetime {lifetime:.0f}s exceeds the maximum {limit:.0f}s")
        if "boot_id" in claims or not settings.allow_missing_boot_id:
            boot_id: str | None = _string_claim(claims, "boot_id")
        else:
            boot_id = None
        return TrustReport(
            issuer=issuer,
            node=_string_claim(claims, "sub"),
            system_uuid=_string_claim(claims, "system_uuid"),
            issued_at=issued_at,
            expires_at=expires_at,
            not_before=not_before,
            jti=_string_claim(claims, "jti"),
            boot_id=boot_id,
            levels=_levels_claim(claims),
            asset_tags=_string_map_claim(claims, "asset_tags"),
            features=_string_map_claim(claims, "features"),
            kid=kid,
            algorithm=alg,
        )


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload without any check, for display only (`trustctl inspect`)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise MalformedReport("not a compact JWS (expected three parts separated by dots)")
    return _decode_json_object(parts[0], "header"), _decode_json_object(parts[1], "payload")


def _b64decode(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedReport(f"token {what} is not base64url") from None


def _reject_duplicates(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedReport(f"duplicate JSON member {key[:64]!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise MalformedReport(f"non-standard JSON number {name}")


def _decode_json_object(segment: str, what: str) -> dict[str, Any]:
    raw = _b64decode(segment, what)
    try:
        # RFC 7515/7519: UTF-8 JSON. json.loads(bytes) would also take UTF-16/32 and a BOM.
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except MalformedReport as error:
        raise MalformedReport(f"token {what}: {error.reason}") from None
    except (ValueError, RecursionError):
        raise MalformedReport(f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedReport(f"token {what} is not a JSON object")
    return value


def _required(claims: Mapping[str, Any], name: str) -> Any:
    if name not in claims:
        raise ClaimError(f"required claim {name} is missing")
    return claims[name]


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = _required(claims, name)
    if not isinstance(value, str) or not value:
        raise ClaimError(f"claim {name} must be a non-empty string")
    return value


def _date_claim(claims: Mapping[str, Any], name: str) -> float:
    value = _required(claims, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimError(f"claim {name} must be a NumericDate (seconds since the epoch)")
    if not 0 <= value < _MAX_NUMERIC_DATE or not math.isfinite(value):  # range first: huge ints overflow isfinite
        raise ClaimError(f"claim {name} is out of range")
    return float(value)


def _levels_claim(claims: Mapping[str, Any]) -> Mapping[str, bool]:
    value = _required(claims, "levels")
    if not isinstance(value, dict):
        raise ClaimError("claim levels must be an object of booleans")
    for level in LEVELS:
        if level not in value:
            raise ClaimError(f"claim levels is missing level {level}")
    for level, verdict in value.items():
        if level not in LEVELS:
            raise ClaimError(f"claim levels has unknown level {level[:64]!r}")
        if not isinstance(verdict, bool):
            raise ClaimError(f"level {level} must be true or false")
    return MappingProxyType({level: value[level] for level in LEVELS})


def _string_map_claim(claims: Mapping[str, Any], name: str) -> Mapping[str, str]:
    value = claims.get(name, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ClaimError(f"claim {name} must be an object of strings")
    return MappingProxyType(dict(value))
