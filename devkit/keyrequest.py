"""One image key request as a node's key provider makes it, for the end-to-end tests and benchmarks.

Run on a node (`WorkerNode.enter`), with that node's certificate and TPM:

    python -m devkit.keyrequest --broker URL --ca CA --client-cert C --client-key K --tcti T --state-dir D \\
        ANNOTATION_B64 [--prepare-only]

prints one JSON object: `{"status": 200, "answer": ...}` or `{"status": 403, "error": ...}` for a whole
request; with `--prepare-only`, the release body the node would send (challenge taken, quote made),
which a test then replays from elsewhere to show what the broker does with it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

from agent.agent import AuthorityRefused, HttpTransport
from agent.tpm2 import QUOTE_PCRS, Tpm2Tools
from keybroker.wrapping import binding, new_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.keyrequest")
    parser.add_argument("annotation", help="the wrapped key, base64 (the layer annotation's value)")
    for flag in ("--broker", "--ca", "--client-cert", "--client-key", "--tcti", "--state-dir"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args(argv)
    transport = HttpTransport(args.broker, args.ca, (args.client_cert, args.client_key))
    annotation = base64.b64decode(args.annotation)
    try:
        nonce = base64.b64decode(transport.post("/v1/keys/challenge", {})["nonce"])
        _, session_public = new_session()
        quote = Tpm2Tools(args.tcti, args.state_dir).quote(binding(nonce, session_public, annotation), QUOTE_PCRS)
        body = {
            "nonce": base64.b64encode(nonce).decode(),
            "session_key": base64.b64encode(session_public).decode(),
            "annotation": args.annotation,
            "quote": base64.b64encode(quote.message).decode(),
            "signature": base64.b64encode(quote.signature).decode(),
            "pcrs": {str(p): v.hex() for p, v in quote.pcrs.items()},
        }
        if args.prepare_only:
            print(json.dumps(body))
            return 0
        print(json.dumps({"status": 200, "answer": transport.post("/v1/keys/release", body)}))
    except AuthorityRefused as refusal:
        print(json.dumps({"status": refusal.status, "error": refusal.reason}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
