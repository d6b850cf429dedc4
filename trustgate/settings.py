"""Settings of every trustgate service, declared once each.

A setting is a dataclass field declared with `option(...)`: its flag (`--some-name`), its environment
variable (`TRUSTGATE_SOME_NAME`), its default, its parser and its help all come from that one
declaration. A flag given on the command line wins over the variable; repeated settings take the flag
several times or a comma-separated variable. Settings classes compose by inheritance
(`class WebhookSettings(TrustSettings, ServingSettings)`), and `check()` fails fast, at start, with a
`ConfigError` an operator can act on: the entry points turn it into exit code 2 before serving anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from trustgate.core.keys import KeyConfigError
from trustgate.core.report import DEFAULT_MAX_LIFETIME_SECONDS, DEFAULT_SKEW_SECONDS, ReportVerifier
from trustgate.core.report import VerifierSettings as ReportRules
from trustgate.keyfiles import load_keys

ENV_PREFIX = "TRUSTGATE_"


class ConfigError(Exception):
    """Configuration that cannot work; the service must not start."""


@dataclass(frozen=True)
class Option:
    """How one settings field appears on the command line and in the environment."""

    help: str
    parse: Callable[[str], Any] = str
    flag: str | None = None  # default: --<field name with dashes>
    repeated: bool = False
    switch: bool = False  # a boolean flag: present means true
    positional: bool = False
    metavar: str | None = None
    optional: bool = False  # a positional that may be left out


def option(
    help: str,
    default: Any = None,
    *,
    parse: Callable[[str], Any] = str,
    flag: str | None = None,
    repeated: bool = False,
    switch: bool = False,
    positional: bool = False,
    metavar: str | None = None,
    optional: bool = False,
) -> Any:
    """A settings field (see the module docstring). Repeated settings default to an empty tuple."""
    spec = Option(help, parse, flag, repeated, switch, positional, metavar, optional)
    if repeated:
        return field(default=tuple(default or ()), metadata={"option": spec})
    return field(default=default, metadata={"option": spec})


def flag_of(name: str, spec: Option) -> str:
    return spec.flag or "--" + name.replace("_", "-")


def env_of(name: str, spec: Option) -> str:
    return ENV_PREFIX + flag_of(name, spec).lstrip("-").upper().replace("-", "_")


def _options(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


class Settings:
    """The base of every settings dataclass: parsing, environment fallback, checks."""

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return frozenset(f.name for f, _ in _options(cls))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
        """One argument per option; the environment is read later, so `--help` shows plain defaults."""
        skipped = set(skip)
        for f, spec in _options(cls):
            if f.name in skipped:
                continue
            kwargs: dict[str, Any] = {"help": _help(f, spec), "dest": f.name}
            if spec.positional:
                nargs = "?" if spec.optional else None
                parser.add_argument(f.name, help=spec.help, metavar=spec.metavar or f.name.upper(), nargs=nargs)
                continue
            if spec.switch:
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            else:
                kwargs["metavar"] = spec.metavar
                kwargs["action"] = "append" if spec.repeated else "store"
            parser.add_argument(flag_of(f.name, spec), default=None, **kwargs)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, environ: dict[str, str] | None = None) -> Self:
        """The settings from parsed flags, then `TRUSTGATE_*` variables, then the declared defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f, spec in _options(cls):
            given = getattr(args, f.name, None)
            raw = env.get(env_of(f.name, spec)) if given is None else None
            try:
                values[f.name] = _value(f, spec, given, raw)
            except (TypeError, ValueError) as error:
                source = flag_of(f.name, spec) if given is not None else env_of(f.name, spec)
                raise ConfigError(f"{source}: {error}") from None
        return cls(**values)

    @classmethod
    def parse(cls, argv: Sequence[str] | None, prog: str, description: str | None = None) -> Self:
        """Parse `argv` (and the environment) into checked settings; raises `ConfigError`."""
        parser = argparse.ArgumentParser(prog=prog, description=description)
        cls.add_arguments(parser)
        settings = cls.from_namespace(parser.parse_args(argv))
        settings.check()
        return settings

    def check(self) -> None:
        """Fail fast on what would otherwise fail on the first request. Subclasses extend it."""


def _help(f: dataclasses.Field[Any], spec: Option) -> str:
    env = env_of(f.name, spec)
    shown = f.default if f.default not in (None, (), dataclasses.MISSING) else None
    default = f"; default {shown}" if shown is not None and not spec.switch else ""
    return f"{spec.help} (env {env}{', comma-separated' if spec.repeated else ''}{default})"


def _value(f: dataclasses.Field[Any], spec: Option, given: Any, raw: str | None) -> Any:
    if spec.repeated:
        items = given if given is not None else ([i.strip() for i in raw.split(",") if i.strip()] if raw else None)
        return f.default if items is None else tuple(spec.parse(i) for i in items)
    if spec.switch:
        if given is not None:
            return True
        if raw is None:
            return f.default
        if raw.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw.strip().lower() in ("true", "1", "yes")
    text = given if given is not None else raw
    return f.default if text is None else spec.parse(text)


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"a duration cannot be negative ({text})")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # NaN too
        raise ValueError(f"must be more than 0, not {text}")
    return value


# --- the settings the services share --------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSettings(Settings):
    kubeconfig: str | None = option("kubeconfig file; default: the in-cluster service account")
    namespace: str = option("trustgate's own namespace", "trustgate-system")

    def check(self) -> None:
        super().check()
        if self.kubeconfig is not None and not Path(self.kubeconfig).is_file():
            raise ConfigError(f"kubeconfig {self.kubeconfig} does not exist")


@dataclass(frozen=True)
class TrustSettings(ClusterSettings):
    """What a service needs to verify trust reports."""

    issuers: tuple[str, ...] = option("trusted report issuer (repeatable)", flag="--issuer", repeated=True)
    jwks: tuple[str, ...] = option("JWKS file of verification keys (repeatable)", repeated=True)
    pem: tuple[str, ...] = option("PEM public key file (repeatable)", repeated=True)
    skew_seconds: float = option("clock skew allowance, seconds", DEFAULT_SKEW_SECONDS, parse=seconds, flag="--skew")
    max_lifetime_seconds: float = option(
        "longest accepted report lifetime, seconds", DEFAULT_MAX_LIFETIME_SECONDS, parse=seconds, flag="--max-lifetime"
    )

    exempt_namespaces: tuple[str, ...] = option(
        "namespaces whose pods never need trust, besides kube-system and trustgate's own (repeatable)",
        repeated=True,
        flag="--exempt-namespace",
    )
    allow_missing_boot_id: bool = option(
        "accept reports without boot_id (authorities that do not bind reports to a boot)",
        False,
        switch=True,
        flag="--allow-reports-without-boot-id",
    )

    @property
    def exempt(self) -> frozenset[str]:
        """The namespaces never judged: the control plane's, trustgate's own, and those configured."""
        return frozenset({"kube-system", self.namespace, *self.exempt_namespaces})

    def verifier(self) -> ReportVerifier:
        """Load the keys and build the verifier; raises `ConfigError` when that is impossible."""
        try:
            keys = load_keys(self.jwks, self.pem)
            rules = ReportRules(
                issuers=frozenset(self.issuers),
                skew_seconds=self.skew_seconds,
                max_lifetime_seconds=self.max_lifetime_seconds,
                allow_missing_boot_id=self.allow_missing_boot_id,
            )
        except (KeyConfigError, ValueError) as error:
            raise ConfigError(str(error)) from None
        return ReportVerifier(keys, rules)

    def check(self) -> None:
        if not self.issuers:
            raise ConfigError("no trusted issuer: set --issuer (or TRUSTGATE_ISSUER)")
        if any(not issuer.strip() for issuer in self.issuers):  # e.g. --issuer=$(UNSET_VARIABLE)
            raise ConfigError(f"an empty trusted issuer in {list(self.issuers)}: every --issuer must name one")
        if not self.jwks and not self.pem:
            raise ConfigError("no verification key: set --jwks and/or --pem (or TRUSTGATE_JWKS / TRUSTGATE_PEM)")
        if any(not path.strip() for path in (*self.jwks, *self.pem)):
            raise ConfigError("an empty --jwks or --pem path: every key file must be named")
        self.verifier()
        super().check()


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser that accepts one of `allowed` (case-insensitive) and returns it as spelled there."""

    def parse(text: str) -> str:
        for value in allowed:
            if text.strip().lower() == value.lower():
                return value
        raise ValueError(f"expected one of {', '.join(allowed)}, got {text!r}")

    return parse


@dataclass(frozen=True)
class AuditSettings(Settings):
    """Where a service's audit records go: stdout and a file are durable (they outlive the pod: the log
    pipeline, a volume); Events are for people to see, and expire."""

    audit_log: str | None = option(
        "JSON-lines file every audit record is appended to (on a volume; one file per replica, e.g. "
        "/var/log/trustgate/$(POD_NAME).jsonl)"
    )
    no_audit_stdout: bool = option("do not write audit records to stdout", False, switch=True)
    no_events: bool = option("do not write a Kubernetes Event per audit record", False, switch=True)
    replica: str | None = option("this replica's name in its audit records; default: $POD_NAME, else the host name")

    def replica_name(self) -> str:
        return self.replica or os.environ.get("POD_NAME") or socket.gethostname()


@dataclass(frozen=True)
class ServingSettings(Settings):
    """An HTTPS service under gunicorn."""

    bind: str = option("address:port to listen on", "0.0.0.0:8443")
    tls_cert: str | None = option("serving certificate (PEM; TLS 1.2 or newer only)")
    tls_key: str | None = option("serving certificate's private key (PEM)")
    client_ca: str | None = option("require client certificates signed by this CA (mTLS)")
    client_names: tuple[str, ...] = option(
        "accept only client certificates with one of these common names (repeatable; default: any the CA signed)",
        repeated=True,
        flag="--client-name",
    )
    workers: int = option("gunicorn worker processes", 1, parse=positive_int)
    threads: int = option("threads per worker", 4, parse=positive_int)

    def check(self) -> None:
        super().check()
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
