"""`trustgate-keyprovider`: the ocicrypt key provider of a node, called by containerd's layer decoder.

    trustgate-keyprovider --broker https://... --ca ca.crt \\
        --client-cert /var/lib/kubelet/pki/kubelet-client-current.pem \\
        [--tcti device:/dev/tpmrm0] [--state-dir /var/lib/trustgate-agent]   < request.json > result.json

Listed in the node's ocicrypt configuration (`OCICRYPT_KEYPROVIDER_CONFIG`) as the provider
`trustgate`, with these flags as its `args`; every flag also has a `TRUSTGATE_*` variable. It
authenticates with the node's kubelet client certificate and quotes with the attestation key of the
node's trust agent (`--state-dir`, the agent's), so it runs on the node as root, as containerd does.

Exit codes: 0 with the result on stdout; 1 with the reason on stderr (the broker's refusal, an
unreachable broker, a TPM failure), which reaches the pod's events; 2 for a bad configuration.
`keywrap` is refused: images are encrypted, and their keys registered, by `trustctl image encrypt`.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from agent.agent import AuthorityRefused, AuthorityUnavailable
from agent.settings import NodeClientSettings
from agent.tpm2 import TpmCommandError
from keybroker.wrapping import WrappingError
from keyprovider.client import BrokerClient
from keyprovider.protocol import UNWRAP, ProtocolError, UnwrapRequest, parse, unwrap_result
from trustgate.settings import ConfigError, option

PROG = "trustgate-keyprovider"


@dataclass(frozen=True)
class KeyProviderSettings(NodeClientSettings):
    broker: str | None = option("https://host:port of the key broker (the attestation authority)")
    timeout: float = option("seconds to wait for the broker", 15.0, parse=float)

    def check(self) -> None:
        if not self.broker or not self.client_cert:
            raise ConfigError("--broker and --client-cert (or TRUSTGATE_BROKER, TRUSTGATE_CLIENT_CERT) are required")

    def client(self) -> BrokerClient:
        assert self.broker is not None  # checked
        return BrokerClient(self.https(self.broker, self.timeout), self.tpm())


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def run(settings: KeyProviderSettings, data: bytes) -> tuple[int, bytes]:
    try:
        request = parse(data)
    except ProtocolError as error:
        return _fail(str(error)), b""
    if not isinstance(request, UnwrapRequest):
        if request == "keywrap":
            return _fail("keywrap is not offered: encrypt with `trustctl image encrypt`, which registers the key"), b""
        return _fail(f"unknown operation {request!r} (expected {UNWRAP})"), b""
    try:
        options = settings.client().layer_options(request.annotation)
    except AuthorityRefused as refusal:
        return _fail(f"the key broker refused the layer key: {refusal.reason}"), b""
    except AuthorityUnavailable as error:
        return _fail(f"the key broker is unreachable: {error}"), b""
    except (TpmCommandError, WrappingError, ssl.SSLError, OSError, KeyError, ValueError) as error:
        return _fail(f"cannot obtain the layer key: {error}"), b""
    return 0, unwrap_result(options)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = KeyProviderSettings.parse(argv, PROG, __doc__.splitlines()[0])
    except ConfigError as error:
        return _fail(str(error), 2)
    code, output = run(settings, sys.stdin.buffer.read())
    if output:
        sys.stdout.buffer.write(output)
        sys.stdout.buffer.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
