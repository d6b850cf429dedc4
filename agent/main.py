"""`trustgate-agent`: the trust agent of one worker (a DaemonSet pod with the host's TPM).

    trustgate-agent run --authority https://... --ca ca.crt --node $NODE_NAME [--tcti device:/dev/tpmrm0]
    trustgate-agent ek-fingerprint           # what an operator enrolls for this node
    trustgate-agent flavor --name NAME       # TrustFlavor objects (YAML) from this known-good host's PCRs

`run` attests every `--interval` seconds at most (sooner when the authority asks, to renew the
report before it expires), at once on SIGUSR1, and stops on SIGTERM/SIGINT. Flags may also be given
as TRUSTGATE_<FLAG> variables (TRUSTGATE_AUTHORITY, TRUSTGATE_TCTI, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

import yaml

from agent.agent import Agent, AgentConfig, HttpTransport
from agent.tpm2 import Tpm2Tools, TpmCommandError

PROG = "trustgate-agent"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get("TRUSTGATE_" + name.upper().replace("-", "_"), default)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    top.add_argument("--tcti", default=_env("tcti", "device:/dev/tpmrm0"))
    top.add_argument("--state-dir", default=_env("state-dir", "/var/lib/trustgate-agent"))
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="register and attest until stopped")
    run.add_argument("--authority", default=_env("authority"), help="https://host:port of the authority")
    run.add_argument("--ca", default=_env("ca"), help="CA bundle that signed the authority's certificate")
    run.add_argument("--client-cert", default=_env("client-cert"))
    run.add_argument("--client-key", default=_env("client-key"))
    run.add_argument("--node", default=_env("node") or os.environ.get("NODE_NAME"), help="this Node's name")
    run.add_argument("--product-uuid", default=_env("product-uuid", "/sys/class/dmi/id/product_uuid"))
    run.add_argument("--boot-id", default=_env("boot-id", "/proc/sys/kernel/random/boot_id"))
    run.add_argument("--interval", type=float, default=float(_env("interval", "120") or 120))
    run.add_argument("--max-backoff", type=float, default=float(_env("max-backoff", "60") or 60))
    commands.add_parser("ek-fingerprint", help="SHA-256 of this TPM's EK certificate")
    flavor = commands.add_parser("flavor", help="TrustFlavor objects from this host's current PCR values")
    flavor.add_argument("--name", required=True, help="name prefix, e.g. the image or hardware model")
    flavor.add_argument("--level", action="append", help="only these levels (repeatable)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    tpm = Tpm2Tools(args.tcti, args.state_dir)
    try:
        if args.command == "ek-fingerprint":
            from attestation.ekcert import fingerprint

            print(fingerprint(tpm.ek_certificate()))
            return 0
        if args.command == "flavor":
            from attestation.flavors import LEVEL_PCRS, flavors_from_values

            levels = args.level or list(LEVEL_PCRS)
            flavors = flavors_from_values(args.name, tpm.pcr_read(), levels)
            print(yaml.safe_dump_all([f.to_object() for f in flavors], sort_keys=False), end="")
            return 0
    except TpmCommandError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    if not args.authority or not args.node:
        print(f"{PROG}: --authority and --node (or NODE_NAME) are required", file=sys.stderr)
        return 2
    client_cert = (args.client_cert, args.client_key) if args.client_cert and args.client_key else None
    config = AgentConfig(
        args.node, args.product_uuid, args.boot_id, interval=args.interval, max_backoff=args.max_backoff
    )
    agent = Agent(config, tpm, HttpTransport(args.authority, args.ca, client_cert))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: agent.request_attestation())
    agent.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
