"""The attestation authority's decisions: registration, credential activation, nonces, attestation.

No HTTP and no cluster client here: the cluster sits behind three small callables (`nodes`,
`flavors`, `publish`) and node binding behind an `Enrollment`.

    register(node, system_uuid, boot_id, ek_cert, ek_public, ak_public)  -> agent id, credential
    activate(agent id, secret)        the agent proved its AK lives in the TPM of that EK
    nonce(agent id)                   fresh, random, single-use, short-lived
    attest(agent id, nonce, quote, signature, pcrs, system_uuid, boot_id)  -> a signed report, published

Node binding (why enrollment): an agent is bound to a node only when the SHA-256 of its EK
certificate is enrolled for that node by an operator (`trustgate-attestation enroll`, or the
`--enrollment` file). The EK is the one identity a host cannot fake or move, and the enrollment is
written by an operator, not by anything running on the node, so a compromised node (which holds its
kubelet and ServiceAccount credentials) still cannot get reports for another node or bring another
TPM. TOFU or a ServiceAccount token would bind whatever TPM first spoke for the node.

Every refusal raises `Refused` with a reason and is recorded (log line, Prometheus counter, the
recent-events ring). Once an agent is active, any failed attestation publishes a report with every
level false, so no stale valid report outlives evidence against the host.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from attestation import tpm
from attestation.ekcert import EkCertificateError, EkVerifier, fingerprint
from attestation.flavors import QUOTED_PCRS, Flavor, judge
from trustgate.core.keys import PrivateKey
from trustgate.core.report import LEVELS
from trustgate.core.signing import report_claims, sign_claims

log = logging.getLogger("trustgate.attestation")

RESULTS = Counter(
    "trustgate_attestation_total", "Registrations, activations and attestations by outcome", ["step", "result"]
)
LATENCY = Histogram("trustgate_attestation_seconds", "Time to verify an attestation and publish its report")

NodeLookup = Callable[[str], tuple[str, str] | None]  # node -> (systemUUID, bootID), None when absent
FlavorSource = Callable[[], Iterable[Flavor]]
Publish = Callable[[str, str], Any]  # (node, token)


class Refused(Exception):
    """A request the authority turns down; `status` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Enrollment(Protocol):
    def nodes_for(self, ek_fingerprint: str) -> set[str]: ...
    def request(self, node: str, ek_fingerprint: str) -> None: ...


class StaticEnrollment:
    """node -> EK certificate SHA-256 fingerprints (a file, or a dict in tests)."""

    def __init__(self, mapping: Mapping[str, str | Iterable[str]]) -> None:
        self.mapping = {
            node: {fp.lower()} if isinstance(fp, str) else {f.lower() for f in fp} for node, fp in mapping.items()
        }
        self.requests: dict[str, str] = {}

    def nodes_for(self, ek_fingerprint: str) -> set[str]:
        return {node for node, fps in self.mapping.items() if ek_fingerprint in fps}

    def request(self, node: str, ek_fingerprint: str) -> None:
        self.requests[node] = ek_fingerprint


@dataclass
class Pending:
    node: str
    system_uuid: str
    boot_id: str
    ek_fingerprint: str
    ak: tpm.TpmPublic
    signer: bytes  # the AK's qualified name under the EK: what its quotes name as qualifiedSigner
    secret_digest: bytes
    expires: float


@dataclass
class Agent:
    agent_id: str
    node: str
    system_uuid: str
    boot_id: str
    ek_fingerprint: str
    ak: tpm.TpmPublic
    signer: bytes
    reset_count: int | None = None
    last_result: str = ""
    last_levels: dict[str, bool] = field(default_factory=dict)
    last_pcrs: dict[int, bytes] = field(default_factory=dict)
    last_attested: float = 0.0


@dataclass(frozen=True)
class Outcome:
    node: str
    token: str
    levels: dict[str, bool]
    asset_tags: dict[str, str]
    reasons: list[str]
    expires_at: int
    renew_after: float


@dataclass
class Authority:
    issuer: str
    signing_key: PrivateKey
    ek_verifier: EkVerifier
    enrollment: Enrollment
    nodes: NodeLookup
    flavors: FlavorSource
    publish: Publish
    report_ttl: float = 600.0
    nonce_ttl: float = 60.0
    registration_ttl: float = 300.0
    clock: Callable[[], float] = time.time
    pending: dict[str, Pending] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    nonces: dict[bytes, tuple[str, float]] = field(default_factory=dict)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=500))

    def __post_init__(self) -> None:
        self._lock = threading.RLock()

    # --- recording --------------------------------------------------------------------------

    def _record(self, step: str, result: str, node: str | None, reason: str = "", **extra: Any) -> None:
        event = {"time": self.clock(), "step": step, "result": result, "node": node, "reason": reason, **extra}
        self.events.append(event)
        RESULTS.labels(step, result).inc()
        (log.info if result == "ok" else log.warning)("%s %s node=%s %s", step, result, node, reason)

    def _refuse(self, step: str, node: str | None, reason: str, status: int = 403) -> Refused:
        self._record(step, "refused", node, reason)
        return Refused(reason, status)

    # --- registration -----------------------------------------------------------------------

    def register(
        self, node: str, system_uuid: str, boot_id: str, ek_cert: bytes, ek_public: bytes, ak_public: bytes
    ) -> tuple[str, bytes]:
        """Checks the EK, the AK and the node binding; returns (agent id, tpm2-tools credential file)."""
        step = "register"
        if not node or not system_uuid:
            raise self._refuse(step, node, "node and system_uuid are required", 400)
        try:
            certificate = self.ek_verifier.verify(ek_cert)
        except EkCertificateError as error:
            raise self._refuse(step, node, error.reason) from None
        ek_fp = fingerprint(ek_cert)
        try:
            ek = tpm.parse_public(ek_public, what="EK public")
            tpm.check_endorsement_key(ek)
            ak = tpm.parse_public(ak_public, what="AK public")
            tpm.check_attestation_key(ak)
        except tpm.TpmError as error:
            raise self._refuse(step, node, error.reason) from None
        if not ek.public_numbers_equal(certificate.public_key()):
            raise self._refuse(step, node, "EK public key is not the key of the EK certificate")
        enrolled = self.enrollment.nodes_for(ek_fp)
        if node not in enrolled:
            if enrolled:
                reason = f"EK {ek_fp[:16]}… is enrolled for node {', '.join(sorted(enrolled))}, not {node}"
            else:
                self.enrollment.request(node, ek_fp)
                reason = f"EK {ek_fp[:16]}… is not enrolled for node {node}; an operator must approve it"
            raise self._refuse(step, node, reason)
        identity = self.nodes(node)
        if identity is None:
            raise self._refuse(step, node, f"node {node} does not exist")
        if identity[0] and identity[0].casefold() != system_uuid.casefold():
            raise self._refuse(step, node, f"host system UUID {system_uuid} is not node {node}'s ({identity[0]})")
        secret = secrets.token_bytes(32)
        credential = tpm.make_credential(ek, ak.name, secret)
        agent_id = secrets.token_urlsafe(24)
        with self._lock:
            self._expire()
            self.pending[agent_id] = Pending(
                node,
                system_uuid,
                boot_id,
                ek_fp,
                ak,
                ak.qualified_name(tpm.endorsement_qualified_name(ek)),
                hashlib.sha256(secret).digest(),
                self.clock() + self.registration_ttl,
            )
        self._record(step, "ok", node, ek=ek_fp[:16])
        return agent_id, credential.tpm2_tools_file()

    def activate(self, agent_id: str, secret: bytes) -> None:
        """The agent's TPM decrypted the credential: the AK is bound to the enrolled EK."""
        with self._lock:
            self._expire()
            pending = self.pending.pop(agent_id, None)  # one try: a wrong secret ends the registration
        if pending is None:
            raise self._refuse("activate", None, "unknown or expired registration; register again", 404)
        if not hmac.compare_digest(hashlib.sha256(secret).digest(), pending.secret_digest):
            raise self._refuse("activate", pending.node, "credential activation failed: wrong secret; register again")
        with self._lock:
            for old_id, old in list(self.agents.items()):
                if old.node == pending.node:  # one agent per node: the newest registration wins
                    del self.agents[old_id]
            self.agents[agent_id] = Agent(
                agent_id,
                pending.node,
                pending.system_uuid,
                pending.boot_id,
                pending.ek_fingerprint,
                pending.ak,
                pending.signer,
            )
        self._record("activate", "ok", pending.node)

    # --- attestation --------------------------------------------------------------------------

    def _agent(self, agent_id: str, step: str) -> Agent:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise self._refuse(step, None, "unknown agent; register again", 404)
        return agent

    def nonce(self, agent_id: str) -> tuple[bytes, float]:
        agent = self._agent(agent_id, "nonce")
        value = secrets.token_bytes(32)
        expires = self.clock() + self.nonce_ttl
        with self._lock:
            self._expire()
            self.nonces[value] = (agent.agent_id, expires)
        return value, expires

    def attest(
        self,
        agent_id: str,
        nonce: bytes,
        quote: bytes,
        signature: bytes,
        pcrs: Mapping[int, bytes],
        system_uuid: str,
        boot_id: str,
    ) -> Outcome:
        started = time.perf_counter()
        agent = self._agent(agent_id, "attest")
        try:
            judgement, attest = self._verify(agent, nonce, quote, signature, pcrs, system_uuid)
            if agent.reset_count is not None and attest.reset_count != agent.reset_count and boot_id == agent.boot_id:
                raise self._refuse(
                    "attest", agent.node, "the TPM was reset (reboot) but the host reports the same boot id"
                )
        except Refused as refusal:
            self._publish_failing(agent, boot_id, refusal.reason)
            raise
        agent.boot_id, agent.reset_count = boot_id, attest.reset_count
        outcome = self._issue(agent, judgement.levels, judgement.asset_tags, judgement.reasons)
        agent.last_pcrs = dict(pcrs)
        result = "ok" if all(judgement.levels.values()) else "untrusted"
        self._record("attest", result, agent.node, "; ".join(judgement.reasons), matched=judgement.matched)
        LATENCY.observe(time.perf_counter() - started)
        return outcome

    def _verify(
        self, agent: Agent, nonce: bytes, quote: bytes, signature: bytes, pcrs: Mapping[int, bytes], system_uuid: str
    ) -> tuple[Any, tpm.Attest]:
        with self._lock:
            entry = self.nonces.pop(nonce, None)  # single use, whatever the outcome
        if entry is None:
            raise self._refuse("attest", agent.node, "unknown, expired or already used nonce (replayed quote?)")
        owner, expires = entry
        if owner != agent.agent_id:
            raise self._refuse("attest", agent.node, "nonce was issued to another agent")
        if self.clock() > expires:
            raise self._refuse("attest", agent.node, "nonce expired before the quote arrived")
        if system_uuid.casefold() != agent.system_uuid.casefold():
            raise self._refuse("attest", agent.node, "host system UUID changed since registration; register again")
        try:
            attest = tpm.verify_quote(agent.ak, quote, signature, nonce, pcrs, agent.signer)
        except tpm.TpmError as error:
            raise self._refuse("attest", agent.node, error.reason) from None
        if tuple(sorted(pcrs)) != QUOTED_PCRS:
            raise self._refuse("attest", agent.node, f"quote must cover PCRs {list(QUOTED_PCRS)}")
        return judge(self.flavors(), pcrs), attest

    def _issue(self, agent: Agent, levels: Mapping[str, bool], tags: Mapping[str, str], reasons: list[str]) -> Outcome:
        claims = report_claims(
            issuer=self.issuer,
            node=agent.node,
            system_uuid=agent.system_uuid,
            boot_id=agent.boot_id or None,
            ttl_seconds=self.report_ttl,
            levels=dict(levels),
            asset_tags=dict(tags),
            features={"attestation": "tpm2-quote", "ek": agent.ek_fingerprint[:16]},
            now=self.clock(),
        )
        token = sign_claims(claims, self.signing_key)
        self.publish(agent.node, token)
        agent.last_levels, agent.last_attested = dict(levels), self.clock()
        agent.last_result = "trusted" if all(levels.values()) else "; ".join(reasons)
        return Outcome(agent.node, token, dict(levels), dict(tags), reasons, claims["exp"], self.report_ttl / 3)

    def _publish_failing(self, agent: Agent, boot_id: str, reason: str) -> None:
        try:
            agent.boot_id = boot_id or agent.boot_id
            self._issue(agent, {level: False for level in LEVELS}, {}, [f"attestation failed: {reason}"])
        except Exception as error:  # the refusal stands; publishing is best effort here
            log.error("could not publish the failing report of node %s: %s", agent.node, error)

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (_, expires) in self.nonces.items() if expires < now]:
            del self.nonces[key]
        for key in [k for k, p in self.pending.items() if p.expires < now]:
            del self.pending[key]

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "node": a.node,
                "ek": a.ek_fingerprint,
                "lastAttested": a.last_attested,
                "levels": a.last_levels,
                "result": a.last_result,
            }
            for a in sorted(self.agents.values(), key=lambda a: a.node)
        ]
