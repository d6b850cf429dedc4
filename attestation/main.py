"""`trustgate-attestation`: the attestation authority, and the operator's enrollment commands.

    trustgate-attestation serve --issuer URL --signing-key key.pem --ek-ca bundle.pem \\
        --tls-cert ... --tls-key ... [--kubeconfig ...] [--enrollment file] [--flavors file]
    trustgate-attestation approve NODE            # enroll the EK that NODE's agent asked with
    trustgate-attestation enroll NODE SHA256      # enroll an EK certificate fingerprint for NODE

Every flag may also be given as `TRUSTGATE_<FLAG>` (e.g. TRUSTGATE_SIGNING_KEY). Without
`--enrollment` the AttestedAgent objects are the enrollment; without `--flavors`, the TrustFlavor
objects are the flavors. One gunicorn worker (registrations and nonces live in its memory; an agent
that the authority forgot after a restart registers again on its own), several threads.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from flask import Flask

from attestation.app import create_app
from attestation.authority import Authority, StaticEnrollment
from attestation.ekcert import EkVerifier, load_bundle
from attestation.flavors import FileFlavors
from trustgate.core.keys import KeyConfigError, load_private_key
from trustgate.inventory import api_client, publish
from trustgate.serving.server import serve

PROG = "trustgate-attestation"
_args: argparse.Namespace | None = None


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get("TRUSTGATE_" + name.upper().replace("-", "_"), default)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    top.add_argument("--kubeconfig", default=_env("kubeconfig"), help="default: in-cluster service account")
    commands = top.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve", help="run the authority")
    s.add_argument("--issuer", default=_env("issuer"), help="the reports' iss")
    s.add_argument("--signing-key", default=_env("signing-key"), help="PEM private key that signs reports")
    s.add_argument("--ek-ca", action="append", default=None, help="PEM bundle of trusted EK CAs (repeatable)")
    s.add_argument("--enrollment", default=_env("enrollment"), help="YAML {node: ek-sha256}; default AttestedAgents")
    s.add_argument("--flavors", default=_env("flavors"), help="YAML of TrustFlavor objects; default the cluster's")
    s.add_argument("--report-ttl", type=float, default=float(_env("report-ttl", "600")), help="seconds")
    s.add_argument("--nonce-ttl", type=float, default=float(_env("nonce-ttl", "60")), help="seconds")
    s.add_argument("--bind", default=_env("bind", "0.0.0.0:8443"))
    s.add_argument("--tls-cert", default=_env("tls-cert"))
    s.add_argument("--tls-key", default=_env("tls-key"))
    s.add_argument("--client-ca", default=_env("client-ca"), help="require agent client certificates (mTLS)")
    s.add_argument("--threads", type=int, default=int(_env("threads", "8") or 8))
    a = commands.add_parser("approve", help="enroll the EK that NODE's agent asked to register with")
    a.add_argument("node")
    e = commands.add_parser("enroll", help="enroll an EK certificate SHA-256 fingerprint for NODE")
    e.add_argument("node")
    e.add_argument("fingerprint")
    return top


def check(args: argparse.Namespace) -> None:
    ek_ca = args.ek_ca or [p for p in (_env("ek-ca") or "").split(",") if p]
    args.ek_ca = ek_ca
    for name in ("issuer", "signing_key", "tls_cert", "tls_key"):
        if not getattr(args, name):
            raise ValueError(f"--{name.replace('_', '-')} is required")
    if not ek_ca:
        raise ValueError("--ek-ca is required: the TPM manufacturers' CA certificates")
    load_private_key(args.signing_key)
    load_bundle(ek_ca)
    for path in (args.enrollment, args.flavors, args.kubeconfig):
        if path and not Path(path).is_file():
            raise ValueError(f"{path} does not exist")


def build(args: argparse.Namespace) -> Authority:
    from attestation import kube

    api = api_client(args.kubeconfig)
    if args.enrollment:
        enrollment = StaticEnrollment(yaml.safe_load(Path(args.enrollment).read_text()) or {})
    else:
        enrollment = kube.KubeEnrollment(api)  # type: ignore[assignment]
    return Authority(
        issuer=args.issuer,
        signing_key=load_private_key(args.signing_key),
        ek_verifier=EkVerifier(load_bundle(args.ek_ca)),
        enrollment=enrollment,
        nodes=kube.node_lookup(api),
        flavors=FileFlavors(args.flavors) if args.flavors else kube.KubeFlavors(api),
        publish=lambda node, token: publish(api, node, token),
        report_ttl=args.report_ttl,
        nonce_ttl=args.nonce_ttl,
    )


def create() -> Flask:
    """The app factory gunicorn calls in its worker."""
    args = _args if _args is not None else parser().parse_args(["serve"])
    if _args is None:
        check(args)
    return create_app(build(args))


def main(argv: Sequence[str] | None = None) -> int:
    global _args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if args.command in ("approve", "enroll"):
        from attestation import kube

        try:
            fingerprint = kube.enroll(api_client(args.kubeconfig), args.node, getattr(args, "fingerprint", None))
        except ValueError as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return 1
        print(f"node {args.node} enrolled with EK {fingerprint}")
        return 0
    try:
        check(args)
    except (ValueError, OSError, KeyConfigError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    _args = args
    serve(
        f"{__name__}:create",
        bind=args.bind,
        certfile=args.tls_cert,
        keyfile=args.tls_key,
        client_ca=args.client_ca,
        workers=1,
        threads=args.threads,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
