"""`trustgate-attestation`: the attestation authority, and the operator's enrollment commands.

    trustgate-attestation serve --issuer URL --signing-key key.pem --ek-ca bundle.pem \\
        --tls-cert ... --tls-key ... [--kubeconfig ...] [--enrollment file] [--flavors file]
    trustgate-attestation approve NODE            # enroll the EK that NODE's agent asked with
    trustgate-attestation enroll NODE SHA256      # enroll an EK certificate fingerprint for NODE

Without `--enrollment` the AttestedAgent objects are the enrollment; without `--flavors`, the
TrustFlavor objects are the flavors. One gunicorn worker (registrations and nonces live in its
memory; an agent that the authority forgot after a restart registers again on its own).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from flask import Flask

from attestation.app import create_app
from attestation.authority import Authority, StaticEnrollment
from attestation.ekcert import EkVerifier, load_bundle
from attestation.flavors import FileFlavors
from trustgate.cluster.api import api_client
from trustgate.cluster.reports import publish
from trustgate.core.keys import KeyConfigError
from trustgate.keyfiles import load_private_key
from trustgate.settings import ClusterSettings, ConfigError, ServingSettings, option, seconds
from trustgate.startup import Command, Service

PROG = "trustgate-attestation"


@dataclass(frozen=True)
class AuthoritySettings(ClusterSettings, ServingSettings):
    issuer: str | None = option("the reports' iss")
    signing_key: str | None = option("PEM private key that signs reports")
    ek_ca: tuple[str, ...] = option("PEM bundle of trusted EK CAs (repeatable)", repeated=True)
    enrollment: str | None = option("YAML {node: ek-sha256}; default: the AttestedAgent objects")
    flavors: str | None = option("YAML of TrustFlavor objects; default: the cluster's")
    report_ttl: float = option("report lifetime, seconds", 600.0, parse=seconds)
    nonce_ttl: float = option("nonce lifetime, seconds", 60.0, parse=seconds)

    def check(self) -> None:
        for name in ("issuer", "signing_key"):
            if not getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')} is required")
        if not self.ek_ca:
            raise ConfigError("--ek-ca is required: the TPM manufacturers' CA certificates")
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
        super().check()


@dataclass(frozen=True)
class EnrollSettings(ClusterSettings):
    node: str = option("the Node to enroll", "", positional=True)


@dataclass(frozen=True)
class EnrollFingerprintSettings(EnrollSettings):
    fingerprint: str = option("SHA-256 of the node's EK certificate", "", positional=True)


def build(settings: AuthoritySettings) -> Authority:
    from attestation import kube

    api = api_client(settings.kubeconfig)
    if settings.enrollment:
        enrollment = StaticEnrollment(yaml.safe_load(Path(settings.enrollment).read_text()) or {})
    else:
        enrollment = kube.KubeEnrollment(api)  # type: ignore[assignment]
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


def create(settings: AuthoritySettings) -> Flask:
    """The app factory gunicorn calls in its worker."""
    return create_app(build(settings))


def enroll(settings: EnrollSettings) -> int:
    from attestation import kube

    given = settings.fingerprint if isinstance(settings, EnrollFingerprintSettings) else None
    try:
        fingerprint = kube.enroll(api_client(settings.kubeconfig), settings.node, given)
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    print(f"node {settings.node} enrolled with EK {fingerprint}")
    return 0


SERVICE = Service(
    PROG,
    commands={
        "serve": Command(AuthoritySettings, app=create, help="run the authority"),
        "approve": Command(EnrollSettings, run=enroll, help="enroll the EK that NODE's agent asked to register with"),
        "enroll": Command(EnrollFingerprintSettings, run=enroll, help="enroll an EK certificate fingerprint for NODE"),
    },
    shared=ClusterSettings,
    description=__doc__.splitlines()[0],
)


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
