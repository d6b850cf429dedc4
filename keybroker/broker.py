"""The key broker's protocol: a challenge, then a release against TPM evidence and the TrustPolicy.

    challenge(requester)                -> nonce: fresh, random, single-use, short-lived, for that node only
    release(requester, ReleaseRequest)  -> the layer key wrapped to the request's session key, or KeyRefused

A release request names a challenge, a session public key (X25519, made for this request by the
node's key provider, kept in its memory), the wrapped layer key taken from the image's annotation,
and a TPM quote by the node's attestation key whose qualifying data is `wrapping.binding(nonce,
session key, annotation)`. So the broker knows, before it looks at any policy, that

1. the caller holds the client certificate of node N (the listener verified it; `Requester`),
2. the challenge was issued to N, is unexpired and unused (it is used up now, whatever follows),
3. N's TPM (the attestation key the authority activated under N's enrolled EK) quoted this very
   challenge, session key and wrapped key, over the PCR values that N's last attestation judged.

Then `trustgate.core.release.decide` judges N's current report (from the cluster cache: verified,
bound to N's systemUUID and bootID, unexpired) against the TrustPolicies covering the image the key
was registered for. Only then is the layer key opened with the image key and wrapped to the session
key: never in clear, and to nobody but the holder of that session's private key on N. Every release
and every refusal is one audit record (the same sinks as admission refusals).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from attestation import tpm
from attestation.authority import Requester
from keybroker.store import KeyStore, KeyStoreError
from keybroker.wrapping import Envelope, WrappingError, binding, open_sealed, unb64, wrap
from trustgate.audit.record import DECISION_REJECTED, OPERATION_KEY_RELEASE, AuditRecord, format_rfc3339
from trustgate.audit.sinks import AuditLog
from trustgate.core.reasons import Code, Reason
from trustgate.core.release import KeyRequest, ReleaseDecision, decide
from trustgate.core.snapshot import Snapshot

log = logging.getLogger("trustgate.keybroker")

CHALLENGE_TTL = 60.0
MAX_CHALLENGES = 4096  # outstanding challenges in all; the oldest go first
SESSION_KEY_BYTES = 32


@dataclass(frozen=True)
class AttestedKey:
    """An attestation key the authority activated for a node, and the PCRs of its last attestation."""

    ak: tpm.TpmPublic
    signer: bytes  # its qualified name: what its quotes name as qualifiedSigner
    pcrs: Mapping[int, bytes] = field(default_factory=dict)


AttestedKeys = Callable[[str], Sequence[AttestedKey]]


class KeyRefused(Exception):
    """A key request turned down: `reasons` are recorded (once: `recorded`) and answered with `status`."""

    def __init__(self, reason: Reason | Sequence[Reason], status: int = 403, recorded: bool = False) -> None:
        self.reasons: tuple[Reason, ...] = (reason,) if isinstance(reason, Reason) else tuple(reason)
        super().__init__("; ".join(r.message for r in self.reasons))
        self.status, self.recorded = status, recorded

    @property
    def reason(self) -> Reason:
        return self.reasons[0]


@dataclass(frozen=True)
class ReleaseRequest:
    nonce: bytes
    session_key: bytes
    annotation: bytes  # the wrapped key as the layer annotation has it (one entry, base64-decoded)
    quote: bytes
    signature: bytes
    pcrs: Mapping[int, bytes]


class KeyBroker:
    def __init__(
        self,
        store: KeyStore,
        snapshot: Callable[[], Snapshot],
        attested_keys: AttestedKeys,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        challenge_ttl: float = CHALLENGE_TTL,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store, self.snapshot, self.attested_keys, self.audit = store, snapshot, attested_keys, audit
        self.clock, self.challenge_ttl = clock, challenge_ttl
        self._challenges: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests_total = Counter(
            "trustgate_image_key_requests_total",
            "Image key requests, by decision and reason code",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.release_seconds = Histogram(
            "trustgate_image_key_release_seconds",
            "Time to decide an image key request (evidence, policy, wrapping)",
            registry=self.registry,
        )

    # --- challenges -------------------------------------------------------------------------

    def challenge(self, requester: Requester) -> tuple[bytes, float]:
        now = self.clock()
        nonce = secrets.token_bytes(32)
        with self._lock:
            for key in [k for k, (_, expires) in self._challenges.items() if expires < now]:
                del self._challenges[key]
            while len(self._challenges) >= MAX_CHALLENGES:
                self._challenges.pop(next(iter(self._challenges)))
            self._challenges[nonce] = (requester.node, now + self.challenge_ttl)
        return nonce, now + self.challenge_ttl

    def _take_challenge(self, nonce: bytes, requester: Requester) -> str:
        with self._lock:
            entry = self._challenges.pop(nonce, None)  # single use, whatever the outcome
        if entry is None:
            raise KeyRefused(Reason(Code.CHALLENGE, "unknown, expired or already used challenge (a replayed request?)"))
        owner, expires = entry
        if owner != requester.node:
            raise KeyRefused(
                Reason(
                    Code.CHALLENGE,
                    f"challenge was issued to node {owner}, not {requester.node} "
                    "(a request replayed from another node?)",
                )
            )
        if self.clock() > expires:
            raise KeyRefused(Reason(Code.CHALLENGE, "challenge expired before the request arrived"))
        return owner

    # --- releases ---------------------------------------------------------------------------

    def release(self, requester: Requester, request: ReleaseRequest) -> dict[str, str]:
        """The layer key wrapped to `request.session_key`; raises `KeyRefused` (recorded) otherwise."""
        started = time.perf_counter()
        envelope: Envelope | None = None
        try:
            try:
                envelope = Envelope.from_bytes(request.annotation)
            except WrappingError as error:
                raise KeyRefused(Reason(Code.BAD_REQUEST, str(error)), 400) from None
            node = self._take_challenge(request.nonce, requester)
            if len(request.session_key) != SESSION_KEY_BYTES:
                raise KeyRefused(Reason(Code.BAD_REQUEST, "session key must be a raw X25519 public key"), 400)
            self._check_evidence(node, request)
            snapshot = self.snapshot()
            if not snapshot.synced:
                raise KeyRefused(Reason(Code.NOT_READY, "the broker's view of the cluster is not synced yet"), 503)
            try:
                stored = self.store.get(envelope.kid)
            except KeyStoreError as error:
                raise KeyRefused(Reason(Code.INTERNAL, str(error)), 503) from None
            decision = decide(
                KeyRequest(requester=requester.node, node=node, kid=envelope.kid, image=envelope.image),
                stored.record if stored is not None else None,
                snapshot.node(node),
                snapshot.policies,
                self.clock(),
                snapshot.skew,
            )
            if not decision.released:
                self._record(requester, decision)
                raise KeyRefused(decision.reasons, recorded=True)
            assert stored is not None
            try:
                options = open_sealed(stored.key, envelope)
            except WrappingError as error:
                raise KeyRefused(Reason(Code.UNKNOWN_KEY, str(error))) from None
            wrapped = wrap(
                options, request.session_key, binding(request.nonce, request.session_key, request.annotation)
            )
            self._record(requester, decision)
            return wrapped
        except KeyRefused as refusal:
            if not refusal.recorded:
                self._record_refusal(requester, envelope, refusal.reasons)
            raise
        finally:
            self.release_seconds.observe(time.perf_counter() - started)

    def _check_evidence(self, node: str, request: ReleaseRequest) -> None:
        keys = self.attested_keys(node)
        if not keys:
            raise KeyRefused(
                Reason(
                    Code.EVIDENCE,
                    f"node {node} has no attestation key activated with the authority (is its agent running?)",
                )
            )
        expected = binding(request.nonce, request.session_key, request.annotation)
        failures = []
        for key in keys:
            try:
                tpm.verify_quote(key.ak, request.quote, request.signature, expected, request.pcrs, key.signer)
            except tpm.TpmError as error:
                failures.append(error.reason)
                continue
            if key.pcrs and dict(request.pcrs) != dict(key.pcrs):
                changed = sorted(i for i in request.pcrs if key.pcrs.get(i) != request.pcrs[i])
                raise KeyRefused(
                    Reason(
                        Code.EVIDENCE,
                        f"PCRs {changed} changed since node {node}'s last attestation (report not current)",
                    )
                )
            return
        raise KeyRefused(
            Reason(Code.EVIDENCE, f"TPM quote does not verify with node {node}'s attestation key: {failures[-1]}")
        )

    # --- audit ------------------------------------------------------------------------------

    def _record(self, requester: Requester, decision: ReleaseDecision) -> None:
        reasons = decision.reasons or decision.violations
        self._write(
            requester,
            decision.decision,
            decision.image,
            ", ".join(f"TrustPolicy {p}" for p in decision.policies),
            decision.enforcement.value if decision.enforcement else "",
            list(reasons),
        )

    def _record_refusal(self, requester: Requester, envelope: Envelope | None, reasons: Sequence[Reason]) -> None:
        self._write(requester, DECISION_REJECTED, envelope.image if envelope else "", "", "", list(reasons))

    def _write(
        self, requester: Requester, decision: str, image: str, policy: str, enforcement: str, reasons: list[Reason]
    ) -> None:
        for reason in reasons or [None]:
            self.requests_total.labels(decision, reason.code.value if reason else "none").inc()
        self.audit.record(
            AuditRecord(
                time=format_rfc3339(self.clock()),
                uid=str(uuid.uuid4()),
                operation=OPERATION_KEY_RELEASE,
                namespace="",
                pod="",
                node=requester.node,
                user=requester.subject or f"system:node:{requester.node}",
                policy=policy,
                enforcement=enforcement,
                decision=decision,
                reasons=[r.message for r in reasons],
                codes=[r.code.value for r in reasons],
                image=image,
            )
        )
        (log.info if decision != DECISION_REJECTED else log.warning)(
            "image key %s for node %s (%s): %s",
            decision,
            requester.node,
            image or "?",
            "; ".join(r.message for r in reasons),
        )


def parse_release(body: Mapping[str, Any]) -> ReleaseRequest:
    """A `ReleaseRequest` from its JSON form (binary fields base64); `ValueError` with the member at fault."""

    def raw(name: str) -> bytes:
        return unb64(body.get(name), f"field {name}", ValueError)

    pcrs = body.get("pcrs")
    if not isinstance(pcrs, dict) or len(pcrs) > 24:
        raise ValueError("field pcrs must map PCR numbers to hex SHA-256 values")
    try:
        values = {int(k): bytes.fromhex(v) for k, v in pcrs.items()}
    except (TypeError, ValueError):
        raise ValueError("field pcrs must map PCR numbers to hex SHA-256 values") from None
    return ReleaseRequest(
        nonce=raw("nonce"),
        session_key=raw("session_key"),
        annotation=raw("annotation"),
        quote=raw("quote"),
        signature=raw("signature"),
        pcrs=values,
    )


def request_digest(request: ReleaseRequest) -> str:
    """A short fingerprint of a request for logs (never its contents)."""
    return hashlib.sha256(request.nonce + request.session_key).hexdigest()[:12]
