"""The settings of the programs that run on a node as the node: the trust agent and the key provider.

Both quote with the agent's attestation key and authenticate to the authority (whose key broker the key
provider calls) with the node's client certificate, so they read the same flags and `TRUSTGATE_*`
variables for these."""

from __future__ import annotations

from dataclasses import dataclass

from agent.agent import HttpTransport
from agent.tpm2 import Tpm2Tools
from trustgate.settings import Settings, option


@dataclass(frozen=True)
class TpmSettings(Settings):
    tcti: str = option("how tpm2-tools reach the TPM", "device:/dev/tpmrm0")
    state_dir: str = option("where the attestation key is kept", "/var/lib/trustgate-agent")

    def tpm(self) -> Tpm2Tools:
        return Tpm2Tools(self.tcti, self.state_dir)


@dataclass(frozen=True)
class NodeClientSettings(TpmSettings):
    ca: str | None = option("CA bundle that signed the authority's certificate")
    client_cert: str | None = option("this node's client certificate for the authority (mTLS), PEM")
    client_key: str | None = option("its private key, PEM; default: in the --client-cert file")

    def https(self, url: str, timeout: float = 15.0) -> HttpTransport:
        """JSON over HTTPS to `url` as this node; `client_key` defaults to `client_cert`, since the kubelet
        keeps both in one file."""
        assert self.client_cert is not None  # checked
        return HttpTransport(url, self.ca, (self.client_cert, self.client_key or self.client_cert), timeout=timeout)
