"""Service configuration from flags and `TRUSTGATE_*` environment variables, checked at start.

Every flag `--some-name` may also be given as `TRUSTGATE_SOME_NAME` (lists: comma-separated).
Bad configuration raises `ConfigError` with a message an operator can act on; the entry
points turn it into exit code 2 before serving anything.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trustgate.core.keys import KeyConfigError, KeySet
from trustgate.core.report import DEFAULT_MAX_LIFETIME_SECONDS, DEFAULT_SKEW_SECONDS, ReportVerifier, VerifierSettings


class ConfigError(Exception):
    """Configuration that cannot work; the service must not start."""


@dataclass(frozen=True)
class Settings:
    issuers: tuple[str, ...]
    jwks: tuple[str, ...] = ()
    pem: tuple[str, ...] = ()
    kubeconfig: str | None = None  # None: in-cluster service account
    skew_seconds: float = DEFAULT_SKEW_SECONDS
    max_lifetime_seconds: float = DEFAULT_MAX_LIFETIME_SECONDS
    bind: str = "0.0.0.0:8443"
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    workers: int = 2
    threads: int = 4
    audit_log: str | None = None
    events: bool = True
    namespace: str = "trustgate-system"

    def verifier(self) -> ReportVerifier:
        """Load the keys and build the verifier; raises `ConfigError` when that is impossible."""
        try:
            keys = KeySet.load(self.jwks, self.pem)
            settings = VerifierSettings(
                issuers=frozenset(self.issuers),
                skew_seconds=self.skew_seconds,
                max_lifetime_seconds=self.max_lifetime_seconds,
            )
        except (KeyConfigError, ValueError) as error:
            raise ConfigError(str(error)) from None
        return ReportVerifier(keys, settings)

    def check(self, serving: bool = True) -> None:
        """Fail fast on everything that would otherwise fail on the first request."""
        if not self.issuers:
            raise ConfigError("no trusted issuer: set --issuer (or TRUSTGATE_ISSUER)")
        if any(not issuer.strip() for issuer in self.issuers):  # e.g. --issuer=$(UNSET_VARIABLE)
            raise ConfigError(f"an empty trusted issuer in {list(self.issuers)}: every --issuer must name one")
        if not self.jwks and not self.pem:
            raise ConfigError("no verification key: set --jwks and/or --pem (or TRUSTGATE_JWKS / TRUSTGATE_PEM)")
        if any(not path.strip() for path in (*self.jwks, *self.pem)):
            raise ConfigError("an empty --jwks or --pem path: every key file must be named")
        self.verifier()
        if self.kubeconfig is not None and not Path(self.kubeconfig).is_file():
            raise ConfigError(f"kubeconfig {self.kubeconfig} does not exist")
        if serving:
            self.tls_context()

    def tls_context(self) -> ssl.SSLContext:
        if not self.tls_cert or not self.tls_key:
            raise ConfigError("TLS is required: set --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):  # OpenSSL's own error does not say which file
            try:
                Path(path).read_bytes()
            except FileNotFoundError:
                raise ConfigError(f"TLS file not found: {path}") from None
            except OSError as error:
                raise ConfigError(f"cannot read TLS file {path}: {error.strerror}") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except ssl.SSLError as error:
            raise ConfigError(
                f"TLS certificate {self.tls_cert} and key {self.tls_key} do not match ({error})"
            ) from None
        if self.client_ca:
            try:
                context.load_verify_locations(self.client_ca)
            except (FileNotFoundError, ssl.SSLError) as error:
                raise ConfigError(f"client CA {self.client_ca} is not usable ({error})") from None
        return context


def _env(name: str) -> str | None:
    return os.environ.get("TRUSTGATE_" + name.upper().replace("-", "_"))


def add_arguments(parser: argparse.ArgumentParser, serving: bool = True) -> None:
    def env_list(name: str) -> list[str]:
        value = _env(name)
        return [item.strip() for item in value.split(",") if item.strip()] if value else []

    parser.add_argument("--issuer", action="append", default=None, help="trusted report issuer (repeatable)")
    parser.add_argument("--jwks", action="append", default=None, help="JWKS file of verification keys (repeatable)")
    parser.add_argument("--pem", action="append", default=None, help="PEM public key file (repeatable)")
    parser.add_argument("--kubeconfig", default=_env("kubeconfig"), help="default: in-cluster service account")
    parser.add_argument("--skew", type=float, default=float(_env("skew") or DEFAULT_SKEW_SECONDS), help="seconds")
    parser.add_argument(
        "--max-lifetime", type=float, default=float(_env("max-lifetime") or DEFAULT_MAX_LIFETIME_SECONDS)
    )
    parser.add_argument("--namespace", default=_env("namespace") or "trustgate-system")
    parser.set_defaults(_env_lists={name: env_list(name) for name in ("issuer", "jwks", "pem")})
    if serving:
        parser.add_argument("--bind", default=_env("bind") or "0.0.0.0:8443")
        parser.add_argument("--tls-cert", default=_env("tls-cert"))
        parser.add_argument("--tls-key", default=_env("tls-key"))
        parser.add_argument("--client-ca", default=_env("client-ca"), help="require client certificates (mTLS)")
        parser.add_argument("--workers", type=int, default=int(_env("workers") or 2))
        parser.add_argument("--threads", type=int, default=int(_env("threads") or 4))
        parser.add_argument("--audit-log", default=_env("audit-log"), help="JSON-lines audit file (webhook)")
        parser.add_argument(
            "--no-events", action="store_true", default=_env("no-events") == "true", help="do not write Events"
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    lists = args._env_lists

    def pick(name: str) -> tuple[str, ...]:
        return tuple(getattr(args, name) or lists[name])

    return Settings(
        issuers=pick("issuer"),
        jwks=pick("jwks"),
        pem=pick("pem"),
        kubeconfig=args.kubeconfig,
        skew_seconds=args.skew,
        max_lifetime_seconds=args.max_lifetime,
        namespace=args.namespace,
        bind=getattr(args, "bind", "0.0.0.0:8443"),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        client_ca=getattr(args, "client_ca", None),
        workers=getattr(args, "workers", 2),
        threads=getattr(args, "threads", 4),
        audit_log=getattr(args, "audit_log", None),
        events=not getattr(args, "no_events", False),
    )


def parse_settings(argv: Sequence[str] | None, prog: str, serving: bool = True) -> Settings:
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser, serving=serving)
    settings = settings_from_args(parser.parse_args(argv))
    settings.check(serving=serving)
    return settings
