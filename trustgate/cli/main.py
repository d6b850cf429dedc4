"""`trustctl`: make keys, sign, verify and inspect trust reports, look at the cluster's trust, encrypt images.

Exit codes: 0 success, 1 the token (or cluster state) is not acceptable, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trustgate.audit.apiserver import records_from_audit_log
from trustgate.audit.reader import merge, read_records, records_from_events
from trustgate.audit.record import DECISIONS
from trustgate.cli.tables import NODE_HEADERS, audit_table, format_table, node_row
from trustgate.core.keys import (
    KEYGEN_ALGORITHMS,
    KeyConfigError,
    generate_private_key,
    jwks_for,
    private_key_pem,
)
from trustgate.core.report import LEVELS, NodeIdentity, ReportError, ReportVerifier, decode_unverified
from trustgate.core.signing import report_claims, sign_claims
from trustgate.keyfiles import load_private_key
from trustgate.settings import ConfigError, TrustSettings

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(Exception):
    """Bad arguments or configuration: exit 2 with the message."""


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `1h`, `2d` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30s, 15m, 1h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _level(text: str) -> tuple[str, bool]:
    level, value = _pair(text)
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {level!r} (levels: {', '.join(LEVELS)})")
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"level {level} must be true or false")
    return level, value.lower() == "true"


def cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_private_key(args.alg)
    jwks = jwks_for(key.public_key(), args.alg)  # type: ignore[arg-type]
    key_out = Path(args.key_out)
    key_out.write_bytes(private_key_pem(key))
    key_out.chmod(0o600)
    Path(args.jwks_out).write_text(json.dumps(jwks, indent=2) + "\n")
    print(f"wrote {args.alg} signing key {args.key_out} and JWKS {args.jwks_out} (kid {jwks['keys'][0]['kid']})")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    key = load_private_key(args.key)
    claims = report_claims(
        issuer=args.issuer,
        node=args.node,
        system_uuid=args.system_uuid,
        boot_id=args.boot_id,
        ttl_seconds=args.ttl,
        levels=dict(args.level),
        asset_tags=dict(args.asset_tag),
        features=dict(args.feature),
    )
    print(sign_claims(claims, key, alg=args.alg))
    return EXIT_OK


def _read_token(source: str) -> str:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    return text.strip()


def cmd_verify(args: argparse.Namespace) -> int:
    verifier = _verifier(args)
    try:
        token = _read_token(args.token)
    except OSError as exc:
        raise UsageError(f"cannot read token {args.token}: {exc.strerror}") from None
    node = NodeIdentity(name=args.node, system_uuid=args.system_uuid, boot_id=args.boot_id or "")
    try:
        report = verifier.verify_for(token, node, time.time())
    except ReportError as error:
        print(f"trust report rejected: {error.reason}", file=sys.stderr)
        return EXIT_REJECTED
    print(json.dumps(report.to_claims() | {"kid": report.kid, "alg": report.algorithm}, indent=2, sort_keys=True))
    return EXIT_OK


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a token longer than a file name may be
        return False


def cmd_inspect(args: argparse.Namespace) -> int:
    source = args.token
    token = _read_token(source) if source == "-" or _is_file(source) else source
    try:
        header, payload = decode_unverified(token)
    except ReportError as error:
        print(f"cannot decode token: {error.reason}", file=sys.stderr)
        return EXIT_REJECTED
    print("UNVERIFIED: the signature and claims below have NOT been checked; use `trustctl verify`.")
    print(json.dumps({"header": header, "claims": payload}, indent=2, sort_keys=True))
    return EXIT_OK


def _verifier(args: argparse.Namespace) -> ReportVerifier:
    settings = TrustSettings(
        issuers=tuple(args.issuer),
        jwks=tuple(args.jwks or ()),
        pem=tuple(args.pem or ()),
        skew_seconds=args.skew,
        max_lifetime_seconds=args.max_lifetime,
        allow_missing_boot_id=args.allow_reports_without_boot_id,
    )
    try:
        return settings.verifier()
    except ConfigError as error:
        raise UsageError(str(error)) from None


# The cluster commands import the kubernetes client lazily: keygen, sign and verify start fast without it.
def cmd_publish(args: argparse.Namespace) -> int:
    from trustgate.cluster.api import api_client
    from trustgate.cluster.reports import publish

    try:
        token = _read_token(args.token)
    except OSError as exc:
        raise UsageError(f"cannot read token {args.token}: {exc.strerror}") from None
    outcome = publish(api_client(args.kubeconfig), args.node, token)
    print(f"nodetrustreport/{args.node} {outcome}")
    return EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    from trustgate.cluster.api import api_client
    from trustgate.cluster.reports import read_snapshot

    snapshot = read_snapshot(api_client(args.kubeconfig), _verifier(args))
    now = time.time()
    rows = [node_row(trust, now, snapshot.skew) for trust in sorted(snapshot.nodes.values(), key=lambda t: t.name)]
    if args.json:
        for row in rows:
            print(json.dumps(row.__dict__ | {"failing_levels": list(row.failing_levels)}, sort_keys=True))
    else:
        print(format_table(NODE_HEADERS, [row.cells() for row in rows]))
    return EXIT_OK if all(row.trusted for row in rows) or not args.fail_untrusted else EXIT_REJECTED


def _events_api(kubeconfig: str | None) -> Any:
    from kubernetes import client

    from trustgate.cluster.api import api_client

    return client.CoreV1Api(api_client(kubeconfig))


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit records newest first, each once, from every source given: the replicas' files and log captures
    (`--file`), kube-apiserver's audit log (`--apiserver-audit-log`) and the cluster's Events (`--events`,
    `--kubeconfig`, or when no other source is given)."""
    filters = {"since": args.since, "namespace": args.namespace, "node": args.node, "decision": args.decision}
    files, apiserver_logs = args.file or [], args.apiserver_audit_log or []
    from_replicas, from_events, from_apiserver = [], [], []  # merged in this order: the fullest copies first
    try:
        if files:
            from_replicas = read_records(files, **filters)
        if apiserver_logs:
            from_apiserver = records_from_audit_log(apiserver_logs, **filters)
    except OSError as error:
        raise UsageError(f"cannot read {error.filename or 'an audit file'}: {error.strerror or error}") from None
    if args.events or args.kubeconfig or not (files or apiserver_logs):
        try:
            from_events = records_from_events(_events_api(args.kubeconfig), **filters)
        except Exception as error:  # kubeconfig or API errors
            raise UsageError(f"cannot read the audit Events: {error}") from None
    records = merge(from_replicas, from_events, from_apiserver)
    if args.json:
        for record in records:
            print(record.to_json())
    elif records:
        print(audit_table(records))
    else:
        print("no audit records match", file=sys.stderr)
    return EXIT_OK


def _add_key_options(parser: argparse.ArgumentParser, issuer_required: bool = True) -> None:
    parser.add_argument("--jwks", action="append", help="JWKS file (repeatable)")
    parser.add_argument("--pem", action="append", help="PEM public key file (repeatable)")
    parser.add_argument("--issuer", action="append", required=issuer_required, help="trusted issuer (repeatable)")
    parser.add_argument("--skew", type=parse_duration, default=30.0)
    parser.add_argument("--max-lifetime", type=parse_duration, default=24 * 3600.0)
    parser.add_argument(
        "--allow-reports-without-boot-id", action="store_true", help="accept reports that name no boot (boot_id)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trustctl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="create an attestation signing key and its JWKS")
    keygen.add_argument("--alg", default="ES256", choices=KEYGEN_ALGORITHMS)
    keygen.add_argument("--key-out", required=True, help="private key (PEM) to write")
    keygen.add_argument("--jwks-out", required=True, help="public JWKS to write")
    keygen.set_defaults(handler=cmd_keygen)

    sign = commands.add_parser("sign", help="sign a trust report for a node and print the JWT")
    sign.add_argument("--key", required=True, help="private key (PEM)")
    sign.add_argument("--alg", choices=KEYGEN_ALGORITHMS, help="default: from the key type (PS256 for RSA)")
    sign.add_argument("--issuer", required=True)
    sign.add_argument("--node", required=True, help="Kubernetes node name (sub)")
    sign.add_argument("--system-uuid", required=True)
    sign.add_argument("--boot-id")
    sign.add_argument("--level", type=_level, action="append", default=[], metavar="LEVEL=true|false")
    sign.add_argument("--asset-tag", type=_pair, action="append", default=[], metavar="KEY=VALUE")
    sign.add_argument("--feature", type=_pair, action="append", default=[], metavar="KEY=VALUE")
    sign.add_argument("--ttl", type=parse_duration, default=3600.0, help="validity, e.g. 1h (default)")
    sign.set_defaults(handler=cmd_sign)

    verify = commands.add_parser("verify", help="verify a report for a node identity")
    _add_key_options(verify)
    verify.add_argument("--node", required=True)
    verify.add_argument("--system-uuid", required=True)
    verify.add_argument("--boot-id")
    verify.add_argument("token", nargs="?", default="-", help="token file, or - for stdin (default)")
    verify.set_defaults(handler=cmd_verify)

    inspect = commands.add_parser("inspect", help="show a token's header and claims WITHOUT verifying")
    inspect.add_argument("token", help="the token, a file holding it, or - for stdin")
    inspect.set_defaults(handler=cmd_inspect)

    publish = commands.add_parser("publish", help="create or replace a node's NodeTrustReport")
    publish.add_argument("--kubeconfig", help="default: in-cluster service account")
    publish.add_argument("--node", required=True)
    publish.add_argument("token", nargs="?", default="-", help="token file, or - for stdin (default)")
    publish.set_defaults(handler=cmd_publish)

    nodes = commands.add_parser("nodes", help="a table of nodes and their verified trust")
    nodes.add_argument("--kubeconfig", help="default: in-cluster service account")
    _add_key_options(nodes)
    nodes.add_argument("--json", action="store_true", help="one JSON object per node")
    nodes.add_argument("--fail-untrusted", action="store_true", help="exit 1 when any node is not trusted")
    nodes.set_defaults(handler=cmd_nodes)

    audit = commands.add_parser(
        "audit",
        help="list rejected pods, trust policy violations and evictions",
        description="Audit records newest first, each once, merged from every source given: the replicas' "
        "JSON-lines files and captured stdout (--file), kube-apiserver's audit log (--apiserver-audit-log), and "
        "trustgate's Events in the cluster (--events or --kubeconfig; the default when no file is given).",
    )
    audit.add_argument(
        "--file",
        metavar="PATH",
        action="append",
        help="an audit file or a log capture of a replica's stdout, or a directory of them (repeatable)",
    )
    audit.add_argument(
        "--apiserver-audit-log",
        metavar="PATH",
        action="append",
        help="a kube-apiserver audit log file, or a directory of them (repeatable)",
    )
    audit.add_argument("--events", action="store_true", help="also read the cluster's Events")
    audit.add_argument("--kubeconfig", metavar="PATH", help="read the Events of this cluster")
    audit.add_argument("--since", type=parse_duration, metavar="DURATION", help="only newer records, e.g. 1h")
    audit.add_argument("--namespace", "-n", metavar="NS")
    audit.add_argument("--node", metavar="NODE")
    audit.add_argument("--decision", choices=DECISIONS)
    audit.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    audit.set_defaults(handler=cmd_audit)

    from keybroker.cli import add_commands

    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("verify", "nodes") and not (args.jwks or args.pem):
        parser.error(f"{args.command} needs --jwks or --pem")
    handler: Callable[[argparse.Namespace], int] = args.handler
    from keybroker.cli import ImageCommandError

    try:
        return handler(args)
    except (UsageError, KeyConfigError, ValueError, ImageCommandError) as error:
        print(f"trustctl {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
