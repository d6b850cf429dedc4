"""The ocicrypt key-provider protocol, command form (containers/ocicrypt, docs/keyprovider.md).

ocicrypt runs the provider once per wrapped key with one JSON object on stdin and reads one from
stdout; Go's `[]byte` members are standard base64:

    {"op": "keyunwrap", "keyunwrapparams": {"dc": {...}, "annotation": B64}}
        -> {"keyunwrapresults": {"optsdata": B64}}
    {"op": "keywrap", "keywrapparams": {"ec": {...}, "optsdata": B64}}
        -> {"keywrapresults": {"annotation": B64}}

A failure is a non-zero exit with the reason on stderr: ocicrypt puts that stderr in its error,
which containerd returns from the pull, and kubelet shows in the pod's events.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

UNWRAP, WRAP = "keyunwrap", "keywrap"
MAX_INPUT = 1 << 20


class ProtocolError(Exception):
    """Input that is not a key-provider request."""


@dataclass(frozen=True)
class UnwrapRequest:
    annotation: bytes  # one wrapped key, as the layer annotation holds it (base64-decoded by ocicrypt)


def parse(data: bytes) -> str | UnwrapRequest:
    """The operation's request: an `UnwrapRequest`, or the name of another operation."""
    if len(data) > MAX_INPUT:
        raise ProtocolError(f"key-provider input larger than {MAX_INPUT} bytes")
    try:
        message: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("key-provider input is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError('key-provider input has no "op"')
    operation = message["op"]
    if operation != UNWRAP:
        return operation
    params = message.get("keyunwrapparams")
    annotation = params.get("annotation") if isinstance(params, dict) else None
    if not isinstance(annotation, str):
        raise ProtocolError("keyunwrap input has no keyunwrapparams.annotation")
    try:
        return UnwrapRequest(base64.b64decode(annotation, validate=True))
    except (binascii.Error, ValueError):
        raise ProtocolError("keyunwrapparams.annotation is not base64") from None


def unwrap_result(options: bytes) -> bytes:
    return json.dumps({"keyunwrapresults": {"optsdata": base64.b64encode(options).decode()}}).encode()
