"""Asking the key broker for one layer key, as this node, with this node's TPM.

    1. POST /v1/keys/challenge                         -> a nonce for this node (client certificate)
    2. a session key pair (X25519), in memory only
    3. a TPM quote by the node's attestation key over binding(nonce, session public key, wrapped key)
    4. POST /v1/keys/release {nonce, session key, wrapped key, quote, PCRs} -> the layer key, wrapped
    5. unwrap with the session's private key: the layer options, returned to ocicrypt on stdout

The attestation key is the agent's (its state directory), the one the authority activated under the
node's enrolled EK: the broker knows it, and no other TPM can quote with it. Nothing is written to
disk but the quote's own files in a temporary directory (evidence, not secrets); the session key and
the layer key live in this process's memory and die with it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Protocol

from agent.tpm2 import QUOTE_PCRS, Quote
from keybroker.wrapping import binding, new_session, unwrap


class Transport(Protocol):
    def post(self, path: str, body: dict[str, object]) -> dict[str, object]: ...


class Quoter(Protocol):
    def quote(self, nonce: bytes, pcrs: tuple[int, ...] = QUOTE_PCRS) -> Quote: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class BrokerClient:
    transport: Transport
    tpm: Quoter

    def layer_options(self, annotation: bytes) -> bytes:
        """The layer options sealed in `annotation`, as the broker releases them to this node."""
        challenge = self.transport.post("/v1/keys/challenge", {})
        nonce = base64.b64decode(str(challenge["nonce"]))
        session, session_public = new_session()
        bound = binding(nonce, session_public, annotation)
        quote = self.tpm.quote(bound, QUOTE_PCRS)
        answer = self.transport.post(
            "/v1/keys/release",
            {
                "nonce": _b64(nonce),
                "session_key": _b64(session_public),
                "annotation": _b64(annotation),
                "quote": _b64(quote.message),
                "signature": _b64(quote.signature),
                "pcrs": {str(p): v.hex() for p, v in quote.pcrs.items()},
            },
        )
        return unwrap(answer.get("key"), session, bound)
