"""`trustgate-attestation`: the attestation authority, and the operator's enrollment commands.

    trustgate-attestation serve --issuer URL --signing-key key.pem --ek-ca bundle.pem \\
        --tls-cert ... --tls-key ... --client-ca agents-ca.crt [--reader-group system:masters] \\
        [--kubeconfig ...] [--enrollment file] [--flavors file] [--image-keys --audit-log FILE]
    trustgate-attestation requests [NODE]         # the EKs that asked for a node (proven by their TPM)
    trustgate-attestation approve NODE SHA256     # enroll the EK of one of NODE's requests
    trustgate-attestation enroll NODE SHA256      # enroll an EK certificate fingerprint known out of band

With `--image-keys` the authority is also the key broker of encrypted images (`keybroker`): it holds
their keys in the Secret `trustgate-image-keys` of `--namespace` and releases a layer key to a node's
key provider (`trustgate-keyprovider`) only against a TPM quote by that node's activated attestation
key and a current report that satisfies the TrustPolicies covering the image; it watches Nodes,
NodeTrustReports, TrustPolicies and Namespaces for that, and records every release and refusal
(`--audit-log`, Events, metrics).

Without `--enrollment` the AttestedAgent objects are the enrollment; without `--flavors`, the
TrustFlavor objects are the flavors. One gunicorn worker (registrations and nonces live in its
memory; an agent that the authority forgot after a restart registers again on its own). Agents
authenticate with client certificates (`--client-ca`, see `attestation.identity`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from flask import Flask

from attestation.app import create_app
from attestation.authority import MAX_REQUESTS_PER_NODE, Authority, EnrollmentRequest, StaticEnrollment
from attestation.ekcert import EkVerifier, load_bundle
from attestation.flavors import FileFlavors
from attestation.identity import Readers
from attestation.ratelimit import PER_SOURCE, TOTAL, Rate, RegistrationLimiter
from keybroker.broker import AttestedKey, KeyBroker
from keybroker.store import SecretKeyStore
from trustgate.audit.sinks import audit_log
from trustgate.cli.tables import format_table
from trustgate.cluster.api import api_client
from trustgate.cluster.cache import ClusterCache
from trustgate.cluster.reports import publish
from trustgate.core.keys import KeyConfigError, KeySet, VerificationKey, algorithms_for, thumbprint
from trustgate.core.report import DEFAULT_SKEW_SECONDS, ReportVerifier, VerifierSettings
from trustgate.keyfiles import load_keys, load_private_key
from trustgate.settings import (
    AuditSettings,
    ClusterSettings,
    ConfigError,
    ServingSettings,
    option,
    positive_float,
    positive_int,
    seconds,
)
from trustgate.startup import Command, Service

PROG = "trustgate-attestation"
MAX_REQUESTS_STORED = 16  # chart/trustgate/crds/attestation.trustgate.dev.yaml: status.requests maxItems
REQUEST_HEADERS = ("NODE", "EK SHA256", "SYSTEM UUID", "REQUESTER", "FIRST", "LAST", "COUNT")


@dataclass(frozen=True)
class AuthoritySettings(ClusterSettings, ServingSettings, AuditSettings):
    issuer: str | None = option("the reports' iss")
    signing_key: str | None = option("PEM private key that signs reports")
    ek_ca: tuple[str, ...] = option("PEM bundle of trusted EK CAs (repeatable)", repeated=True)
    enrollment: str | None = option("YAML {node: ek-sha256}; default: the AttestedAgent objects")
    flavors: str | None = option("YAML of TrustFlavor objects; default: the cluster's")
    report_ttl: float = option("report lifetime, seconds", 600.0, parse=seconds)
    nonce_ttl: float = option("nonce lifetime, seconds", 60.0, parse=seconds)
    reader: tuple[str, ...] = option("client certificate CN that may read /v1/agents (repeatable)", repeated=True)
    reader_group: tuple[str, ...] = option(
        "client certificate O (group) that may read /v1/agents (repeatable)", repeated=True
    )
    register_burst: int = option("registrations at once from one source address", PER_SOURCE.burst, parse=positive_int)
    register_rate: float = option(
        "registrations per second from one source address, sustained", PER_SOURCE.per_second, parse=positive_float
    )
    register_total_burst: int = option("registrations at once from all sources", TOTAL.burst, parse=positive_int)
    register_total_rate: float = option(
        "registrations per second from all sources, sustained", TOTAL.per_second, parse=positive_float
    )
    max_requests: int = option("enrollment requests kept per node", MAX_REQUESTS_PER_NODE, parse=positive_int)
    image_keys: bool = option(
        "serve the key broker of encrypted images (keys in the Secret trustgate-image-keys of --namespace)",
        False,
        switch=True,
    )
    jwks: tuple[str, ...] = option(
        "more JWKS files whose keys may sign the reports the key broker trusts (repeatable; its own key always)",
        repeated=True,
    )
    skew_seconds: float = option(
        "clock skew allowance for the key broker's report checks, seconds",
        DEFAULT_SKEW_SECONDS,
        parse=seconds,
        flag="--skew",
    )

    def check(self) -> None:
        for name in ("issuer", "signing_key"):
            if not getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')} is required")
        if not self.ek_ca:
            raise ConfigError("--ek-ca is required: the TPM manufacturers' CA certificates")
        if not self.client_ca:
            raise ConfigError("--client-ca is required: agents authenticate with their node's client certificate")
        if self.max_requests > MAX_REQUESTS_STORED:
            raise ConfigError(f"--max-requests is at most {MAX_REQUESTS_STORED} (the AttestedAgent schema's maxItems)")
        if self.workers != 1:
            raise ConfigError("the authority runs one worker: registrations and nonces live in its memory")
        try:
            load_private_key(self.signing_key)  # type: ignore[arg-type]
            load_bundle(self.ek_ca)
        except (ValueError, OSError, KeyConfigError) as error:
            raise ConfigError(str(error)) from None
        for path in (self.enrollment, self.flavors):
            if path and not Path(path).is_file():
                raise ConfigError(f"{path} does not exist")
        if self.image_keys:
            try:
                report_verifier(self)
            except (KeyConfigError, ValueError, OSError) as error:
                raise ConfigError(f"the key broker cannot verify reports: {error}") from None
            if self.audit_log and not Path(self.audit_log).parent.is_dir():
                raise ConfigError(f"--audit-log {self.audit_log}: no directory {Path(self.audit_log).parent}")
        elif self.audit_log or self.jwks:
            raise ConfigError("--audit-log and --jwks are the key broker's: give --image-keys too")
        super().check()


@dataclass(frozen=True)
class EnrollSettings(ClusterSettings):
    node: str = option("the Node to enroll", "", positional=True)


@dataclass(frozen=True)
class EnrollFingerprintSettings(EnrollSettings):
    fingerprint: str = option("SHA-256 of the node's EK certificate", "", positional=True)


@dataclass(frozen=True)
class ApproveSettings(EnrollSettings):
    fingerprint: str | None = option(
        "SHA-256 of the EK certificate of the request to approve; without it, the node's requests are shown",
        positional=True,
        optional=True,
    )


@dataclass(frozen=True)
class RequestsSettings(ClusterSettings):
    node: str | None = option("only this Node's requests", positional=True, optional=True)


def build(settings: AuthoritySettings) -> Authority:
    from attestation import kube

    api = api_client(settings.kubeconfig)
    if settings.enrollment:
        mapping = yaml.safe_load(Path(settings.enrollment).read_text()) or {}
        enrollment = StaticEnrollment(mapping, settings.max_requests)
    else:
        enrollment = kube.KubeEnrollment(api, settings.max_requests)  # type: ignore[assignment]
    assert settings.issuer is not None and settings.signing_key is not None  # checked
    return Authority(
        issuer=settings.issuer,
        signing_key=load_private_key(settings.signing_key),
        ek_verifier=EkVerifier(load_bundle(settings.ek_ca)),
        enrollment=enrollment,
        nodes=kube.node_lookup(api),
        flavors=FileFlavors(settings.flavors) if settings.flavors else kube.KubeFlavors(api),
        publish=lambda node, token: publish(api, node, token),
        report_ttl=settings.report_ttl,
        nonce_ttl=settings.nonce_ttl,
    )


def limiter(settings: AuthoritySettings) -> RegistrationLimiter:
    return RegistrationLimiter(
        Rate(settings.register_burst, settings.register_rate),
        Rate(settings.register_total_burst, settings.register_total_rate),
    )


def report_verifier(settings: AuthoritySettings) -> ReportVerifier:
    """The key broker's verifier: reports signed by this authority's key (and `--jwks`), for `--issuer`."""
    assert settings.issuer is not None and settings.signing_key is not None  # checked
    public = load_private_key(settings.signing_key).public_key()
    own = VerificationKey(kid=thumbprint(public), key=public, algorithms=algorithms_for(public))  # type: ignore[arg-type]
    keys = KeySet([own])
    if settings.jwks:
        keys = keys.merged(load_keys(settings.jwks, ()))
    rules = VerifierSettings(issuers=frozenset({settings.issuer}), skew_seconds=settings.skew_seconds)
    return ReportVerifier(keys, rules)


def key_broker(settings: AuthoritySettings, authority: Authority) -> tuple[KeyBroker, ClusterCache]:
    """The key broker beside `authority`, with its cluster cache (started) and audit sinks."""
    from kubernetes import client

    api = api_client(settings.kubeconfig)
    cache = ClusterCache(api, report_verifier(settings), exempt=frozenset()).start()
    audit = audit_log(None, settings, client.CoreV1Api(api), component="trustgate-key-broker")

    def attested_keys(node: str) -> list[AttestedKey]:
        return [AttestedKey(a.ak, a.signer, dict(a.last_pcrs)) for a in authority.active_agents(node)]

    broker = KeyBroker(SecretKeyStore(api, settings.namespace), cache.snapshot, attested_keys, audit)
    return broker, cache


def app_for(settings: AuthoritySettings, authority: Authority) -> Flask:
    readers = Readers.of(settings.reader, settings.reader_group)
    if not settings.image_keys:
        return create_app(authority, readers, limiter(settings))
    broker, cache = key_broker(settings, authority)
    return create_app(authority, readers, limiter(settings), ready=lambda: cache.synced, broker=broker)


def create(settings: AuthoritySettings) -> Flask:
    """The app factory gunicorn calls in its worker."""
    return app_for(settings, build(settings))


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request_table(requests: Sequence[EnrollmentRequest]) -> str:
    rows = [
        (
            r.node,
            r.ek_fingerprint,
            r.system_uuid,
            r.requester,
            _when(r.first_requested),
            _when(r.last_requested),
            r.count,
        )
        for r in requests
    ]
    return format_table(REQUEST_HEADERS, [[str(cell) for cell in row] for row in rows])


def show_requests(settings: RequestsSettings) -> int:
    from attestation import kube

    requests = kube.pending_requests(api_client(settings.kubeconfig), settings.node)
    if not requests:
        print(f"no enrollment requests{f' for node {settings.node}' if settings.node else ''}")
        return 0
    print(_request_table(requests))
    return 0


def approve(settings: ApproveSettings) -> int:
    """Approve one request by its EK fingerprint; without one, show the node's requests and refuse."""
    from attestation import kube

    api = api_client(settings.kubeconfig)
    if not settings.fingerprint:
        requests = kube.pending_requests(api, settings.node)
        if requests:
            print(_request_table(requests))
        print(
            f"{PROG}: give the EK fingerprint of the request to approve: approve {settings.node} SHA256 "
            f"(compare it with `trustgate-agent ek-fingerprint` on the host){'' if requests else '; none pending'}",
            file=sys.stderr,
        )
        return 1
    try:
        chosen = kube.approve(api, settings.node, settings.fingerprint)
    except kube.EnrollmentError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    print(f"node {settings.node} enrolled with EK {chosen.ek_fingerprint} (requested by {chosen.requester})")
    return 0


def enroll(settings: EnrollFingerprintSettings) -> int:
    from attestation import kube

    try:
        fingerprint = kube.enroll(api_client(settings.kubeconfig), settings.node, settings.fingerprint)
    except kube.EnrollmentError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    print(f"node {settings.node} enrolled with EK {fingerprint}")
    return 0


SERVICE = Service(
    PROG,
    commands={
        # Probes carry no client certificate: the listener asks for one without requiring it, and the
        # app refuses every /v1 call that has none (attestation.identity).
        "serve": Command(AuthoritySettings, app=create, help="run the authority"),
        "requests": Command(RequestsSettings, run=show_requests, help="list the EKs that asked to be enrolled"),
        "approve": Command(ApproveSettings, run=approve, help="enroll the EK of one of NODE's requests (SHA256)"),
        "enroll": Command(EnrollFingerprintSettings, run=enroll, help="enroll an EK certificate fingerprint for NODE"),
    },
    shared=ClusterSettings,
    description=__doc__.splitlines()[0],
)


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
