"""The attestation authority's decisions: registration, credential activation, nonces, attestation.

No HTTP and no cluster client here: the cluster sits behind three small callables (`nodes`,
`flavors`, `publish`) and node binding behind an `Enrollment`. Every call names its `Requester`,
the node identity of the caller's verified client certificate (see `attestation.identity`).

    register(node, system_uuid, boot_id, ek_cert, ek_public, ak_public, requester) -> agent id, credential
    activate(agent id, secret, requester)   the TPM of that EK holds that AK; enrolled: the agent is active
    nonce(agent id, requester)              fresh, random, single-use, short-lived
    attest(agent id, nonce, quote, signature, pcrs, system_uuid, boot_id, requester) -> a signed report

Node binding (why enrollment): an agent is bound to a node only when the SHA-256 of its EK
certificate is enrolled for that node by an operator (`trustgate-attestation approve|enroll`, or the
`--enrollment` file). The EK is the one identity a host cannot fake or move, and the enrollment is
written by an operator, not by anything running on the node, so a compromised node (which holds its
kubelet and ServiceAccount credentials) still cannot get reports for another node or bring another
TPM. TOFU or a ServiceAccount token would bind whatever TPM first spoke for the node.

Enrollment requests: an EK that is not enrolled for the node it asks for is recorded for review,
and only once it has proven itself: the caller's certificate is that node's, the node exists, the EK
certificate chains to a manufacturer CA, and the TPM decrypted the credential made for that EK and
AK (TPM2_ActivateCredential). Requests are kept apart, one per EK fingerprint, at most
`Enrollment`'s limit per node, the least recently seen dropped first (logged, counted), so a second
registrant for a node never replaces the first: the operator sees every candidate and approves one
by its fingerprint.

Every refusal raises `Refused` with a reason and is recorded (log line, Prometheus counter, the
recent-events ring). Once an agent is active, any failed attestation publishes a report with every
level false, so no stale valid report outlives evidence against the host. Every report carries the
host's boot id: one without it is never issued.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
REQUESTS_DROPPED = Counter(
    "trustgate_attestation_requests_dropped_total",
    "Enrollment requests dropped because their node had as many newer ones as it may keep",
)
MAX_REQUESTS_PER_NODE = 5
REQUEST_REFRESH = 60.0  # seconds: a request seen again sooner is not written again
NONCES_PER_AGENT = 4  # outstanding nonces; a newer one retires the oldest

NodeLookup = Callable[[str], tuple[str, str] | None]  # node -> (systemUUID, bootID), None when absent
FlavorSource = Callable[[], Iterable[Flavor]]
Publish = Callable[[str, str], Any]  # (node, token)


class Refused(Exception):
    """A request the authority turns down; `status` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Requester:
    """The caller, from its verified client certificate: the node it may act for, and how to name it."""

    node: str
    subject: str = ""
    address: str = ""

    def __str__(self) -> str:
        return f"{self.subject or 'node ' + self.node} from {self.address or 'an unknown address'}"


@dataclass(frozen=True)
class EnrollmentRequest:
    """An EK, proven held by a TPM (credential activation), that asked to be enrolled for `node`."""

    node: str
    ek_fingerprint: str
    system_uuid: str
    requester: str
    first_requested: float
    last_requested: float
    count: int = 1


def merge_request(
    existing: Sequence[EnrollmentRequest], new: EnrollmentRequest, limit: int = MAX_REQUESTS_PER_NODE
) -> tuple[list[EnrollmentRequest], list[EnrollmentRequest], bool]:
    """(kept, dropped, changed): `new` beside the other EKs' requests, never instead of them.

    A request from an EK already recorded refreshes that entry (last seen, count); a new EK is added,
    and past `limit` the least recently seen ones are dropped. `changed` is False when nothing worth
    writing happened (the same EK again within `REQUEST_REFRESH` seconds)."""
    same = next((r for r in existing if r.ek_fingerprint == new.ek_fingerprint), None)
    if same is not None:
        if (
            new.last_requested - same.last_requested < REQUEST_REFRESH
            and (same.system_uuid, same.requester) == (new.system_uuid, new.requester)
            and len(existing) <= limit
        ):
            return list(existing), [], False
        new = replace(
            new, first_requested=same.first_requested, count=same.count + 1, last_requested=new.last_requested
        )
    merged = sorted([*(r for r in existing if r.ek_fingerprint != new.ek_fingerprint), new], key=_recency)
    cut = max(0, len(merged) - limit)
    return merged[cut:], merged[:cut], True


def _recency(request: EnrollmentRequest) -> tuple[float, float]:
    return request.last_requested, request.first_requested


class Enrollment(Protocol):
    def enrolled(self, node: str) -> frozenset[str]:
        """The EK certificate fingerprints enrolled for `node` (one object read, never a list)."""
        ...

    def request(self, request: EnrollmentRequest) -> list[EnrollmentRequest]:
        """Record `request` beside the node's others; returns the requests dropped to make room."""
        ...


class StaticEnrollment:
    """node -> EK certificate SHA-256 fingerprints (a file, or a dict in tests); requests kept in memory."""

    def __init__(self, mapping: Mapping[str, str | Iterable[str]], max_requests: int = MAX_REQUESTS_PER_NODE) -> None:
        self.mapping = {
            node: {fp.lower()} if isinstance(fp, str) else {f.lower() for f in fp} for node, fp in mapping.items()
        }
        self.max_requests = max_requests
        self.requests: dict[str, list[EnrollmentRequest]] = {}
        self._lock = threading.Lock()

    def enrolled(self, node: str) -> frozenset[str]:
        return frozenset(self.mapping.get(node, ()))

    def request(self, request: EnrollmentRequest) -> list[EnrollmentRequest]:
        with self._lock:
            kept, dropped, _ = merge_request(self.requests.get(request.node, []), request, self.max_requests)
            self.requests[request.node] = kept
        return dropped


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
    requester: Requester


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
    nonces: deque[bytes] = field(default_factory=lambda: deque(maxlen=NONCES_PER_AGENT))


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
    max_pending: int = 1024  # registrations awaiting activation; rate limits keep far below
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

    def _check_requester(self, step: str, node: str, requester: Requester) -> None:
        """A caller acts only for the node its client certificate names."""
        if requester.node != node:
            raise self._refuse(step, node, f"client certificate is for node {requester.node}, not {node}")

    # --- registration -----------------------------------------------------------------------

    def register(
        self,
        node: str,
        system_uuid: str,
        boot_id: str,
        ek_cert: bytes,
        ek_public: bytes,
        ak_public: bytes,
        requester: Requester,
    ) -> tuple[str, bytes]:
        """Checks the caller, the node, the EK and the AK; returns (agent id, tpm2-tools credential file).

        Nothing is recorded for the node here: whether the EK is enrolled is decided at activation,
        once the TPM has shown it holds that EK."""
        step = "register"
        if not node or not system_uuid or not boot_id:
            raise self._refuse(step, node, "node, system_uuid and boot_id are required", 400)
        self._check_requester(step, node, requester)
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
            if len(self.pending) >= self.max_pending:
                raise self._refuse(step, node, "too many registrations awaiting activation; retry later", 429)
            self.pending[agent_id] = Pending(
                node,
                system_uuid,
                boot_id,
                ek_fp,
                ak,
                ak.qualified_name(tpm.endorsement_qualified_name(ek)),
                hashlib.sha256(secret).digest(),
                self.clock() + self.registration_ttl,
                requester,
            )
        self._record(step, "ok", node, ek=ek_fp[:16])
        return agent_id, credential.tpm2_tools_file()

    def activate(self, agent_id: str, secret: bytes, requester: Requester) -> None:
        """The agent's TPM decrypted the credential: the AK lives in the TPM of that EK.

        An enrolled EK makes the agent active; any other EK is recorded as an enrollment request
        (it has just proven it is held by a TPM) and refused until an operator approves it."""
        step = "activate"
        with self._lock:
            self._expire()
            pending = self.pending.get(agent_id)
            if pending is not None and pending.node == requester.node:
                del self.pending[agent_id]  # one try: a wrong secret ends the registration
        if pending is None:
            raise self._refuse(step, None, "unknown or expired registration; register again", 404)
        self._check_requester(step, pending.node, requester)
        if not hmac.compare_digest(hashlib.sha256(secret).digest(), pending.secret_digest):
            raise self._refuse(step, pending.node, "credential activation failed: wrong secret; register again")
        node, ek_fp = pending.node, pending.ek_fingerprint
        enrolled = self.enrollment.enrolled(node)
        if ek_fp not in enrolled:
            if self.nodes(node) is None:  # deleted since the registration: nothing is recorded for it
                raise self._refuse(step, node, f"node {node} does not exist")
            now = self.clock()
            request = EnrollmentRequest(node, ek_fp, pending.system_uuid, str(requester), now, now)
            for dropped in self.enrollment.request(request):
                REQUESTS_DROPPED.inc()
                self._record(
                    "request",
                    "dropped",
                    node,
                    f"dropped the enrollment request of EK {dropped.ek_fingerprint} "
                    f"(last seen {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(dropped.last_requested))}): "
                    f"node {node} keeps only its newest requests",
                )
            other = f" (node {node} has EK {', '.join(sorted(f[:16] + '…' for f in enrolled))} enrolled)"
            raise self._refuse(
                step,
                node,
                f"EK {ek_fp} is not enrolled for node {node}{other if enrolled else ''}; its request is recorded: "
                f"an operator approves it with `trustgate-attestation approve {node} {ek_fp}`",
            )
        with self._lock:
            for old_id, old in list(self.agents.items()):
                if old.node == node:  # one agent per node: the newest registration wins
                    del self.agents[old_id]
            self.agents[agent_id] = Agent(
                agent_id, node, pending.system_uuid, pending.boot_id, ek_fp, pending.ak, pending.signer
            )
        self._record(step, "ok", node)

    # --- attestation --------------------------------------------------------------------------

    def _agent(self, agent_id: str, step: str, requester: Requester) -> Agent:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise self._refuse(step, None, "unknown agent; register again", 404)
        self._check_requester(step, agent.node, requester)
        return agent

    def nonce(self, agent_id: str, requester: Requester) -> tuple[bytes, float]:
        agent = self._agent(agent_id, "nonce", requester)
        value = secrets.token_bytes(32)
        expires = self.clock() + self.nonce_ttl
        with self._lock:
            self._expire()
            if len(agent.nonces) == agent.nonces.maxlen:
                self.nonces.pop(agent.nonces[0], None)  # the oldest outstanding nonce of this agent retires
            agent.nonces.append(value)
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
        requester: Requester,
    ) -> Outcome:
        started = time.perf_counter()
        agent = self._agent(agent_id, "attest", requester)
        if not boot_id:
            raise self._refuse("attest", agent.node, "boot_id is required: a report is bound to the current boot", 400)
        try:
            judgement, attest = self._verify(agent, nonce, quote, signature, pcrs, system_uuid)
            if agent.reset_count is not None and attest.reset_count != agent.reset_count and boot_id == agent.boot_id:
                raise self._refuse(
                    "attest", agent.node, "the TPM was reset (reboot) but the host reports the same boot id"
                )
            if agent.ek_fingerprint not in self.enrollment.enrolled(agent.node):
                with self._lock:
                    self.agents.pop(agent.agent_id, None)  # its next call registers again, and is recorded
                raise self._refuse("attest", agent.node, f"EK {agent.ek_fingerprint[:16]}… is no longer enrolled")
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
        if not agent.boot_id:  # a report without it would outlive a reboot of the host
            raise Refused(f"no boot id for node {agent.node}: a report is always bound to the host's boot", 400)
        claims = report_claims(
            issuer=self.issuer,
            node=agent.node,
            system_uuid=agent.system_uuid,
            boot_id=agent.boot_id,
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
        for agent in self.agents.values():
            while agent.nonces and agent.nonces[0] not in self.nonces:
                agent.nonces.popleft()

    def active_agents(self, node: str) -> list[Agent]:
        """The agents activated for `node` that have attested (the key broker checks quotes against their AKs)."""
        with self._lock:
            return [a for a in self.agents.values() if a.node == node and a.last_attested]

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
