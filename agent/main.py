"""`trustgate-agent`: the trust agent of one worker (a DaemonSet pod with the host's TPM).

    trustgate-agent run --authority https://... --ca ca.crt --node $NODE_NAME \\
        --client-cert /var/lib/kubelet/pki/kubelet-client-current.pem [--tcti device:/dev/tpmrm0]
    trustgate-agent ek-fingerprint           # what an operator enrolls for this node
    trustgate-agent flavor --name NAME       # TrustFlavor objects (YAML) from this known-good host's PCRs

`run` attests every `--interval` seconds at most (sooner when the authority asks, to renew the
report before it expires), at once on SIGUSR1, and stops on SIGTERM/SIGINT. It authenticates with
its node's client certificate (the kubelet's, CN=system:node:NAME; see `attestation.identity`):
`--client-key` defaults to `--client-cert`, since the kubelet keeps both in one file.
"""

from __future__ import annotations

import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from agent.agent import Agent, AgentConfig, HttpTransport
from agent.settings import NodeClientSettings, TpmSettings
from agent.tpm2 import TpmCommandError
from trustgate.settings import ConfigError, option, seconds
from trustgate.startup import Command, Service

PROG = "trustgate-agent"


@dataclass(frozen=True)
class AgentSettings(NodeClientSettings):
    authority: str | None = option("https://host:port of the attestation authority")
    node: str | None = option("this Node's name")
    product_uuid: str = option("file with the host's DMI product UUID", "/sys/class/dmi/id/product_uuid")
    boot_id: str = option("file with the current boot id", "/proc/sys/kernel/random/boot_id")
    interval: float = option("longest time between attestations, seconds", 120.0, parse=seconds)
    max_backoff: float = option("longest wait after a failure, seconds", 60.0, parse=seconds)

    def check(self) -> None:
        super().check()
        if not self.authority or not self.node:
            raise ConfigError("--authority and --node (or TRUSTGATE_AUTHORITY and TRUSTGATE_NODE) are required")
        if not self.client_cert:
            raise ConfigError(
                "--client-cert is required: the authority accepts agents by their node's client certificate "
                "(e.g. /var/lib/kubelet/pki/kubelet-client-current.pem)"
            )
        try:
            self.transport()
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"client certificate {self.client_cert} is not usable ({error})") from None

    def transport(self) -> HttpTransport:
        assert self.authority is not None  # checked
        transport = self.https(self.authority)
        transport.context()  # fail at start on unreadable or mismatched files
        return transport


@dataclass(frozen=True)
class FlavorSettings(TpmSettings):
    name: str | None = option("name prefix, e.g. the image or hardware model")
    level: tuple[str, ...] = option("only these levels (repeatable)", repeated=True)

    def check(self) -> None:
        super().check()
        if not self.name:
            raise ConfigError("--name is required")


def run(settings: AgentSettings) -> int:
    assert settings.node is not None  # checked
    config = AgentConfig(
        settings.node,
        settings.product_uuid,
        settings.boot_id,
        interval=settings.interval,
        max_backoff=settings.max_backoff,
    )
    agent = Agent(config, settings.tpm(), settings.transport())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: agent.request_attestation())
    agent.run(stop)
    return 0


def ek_fingerprint(settings: TpmSettings) -> int:
    from attestation.ekcert import fingerprint

    return _tpm_errors(lambda: print(fingerprint(settings.tpm().ek_certificate())))


def flavor(settings: FlavorSettings) -> int:
    from attestation.flavors import LEVEL_PCRS, flavors_from_values

    def capture() -> None:
        assert settings.name is not None  # checked
        flavors = flavors_from_values(settings.name, settings.tpm().pcr_read(), list(settings.level or LEVEL_PCRS))
        print(yaml.safe_dump_all([f.to_object() for f in flavors], sort_keys=False), end="")

    return _tpm_errors(capture)


def _tpm_errors(action: Callable[[], None]) -> int:
    try:
        action()
    except TpmCommandError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    return 0


SERVICE = Service(
    PROG,
    commands={
        "run": Command(AgentSettings, run=run, help="register and attest until stopped"),
        "ek-fingerprint": Command(TpmSettings, run=ek_fingerprint, help="SHA-256 of this TPM's EK certificate"),
        "flavor": Command(FlavorSettings, run=flavor, help="TrustFlavor objects from this host's current PCR values"),
    },
    shared=TpmSettings,
    description=__doc__.splitlines()[0],
)


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
