"""How hard the fuzz targets try: TRUSTGATE_FUZZ_EXAMPLES examples each (default 10,000; a long run is a
bigger value). And the JSON with a duplicate member that the extender's and the webhook's fuzzers both send."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("TRUSTGATE_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dumps_with_duplicate_member(document: Any, target: Any, key: str, junk: Any) -> bytes:
    """The JSON of `document` with an earlier member `key` (holding `junk`) in `target`, the object inside
    `document` that holds `key`: a decoder keeping the last of duplicate members (as Go's encoding/json
    does) reads `document` itself. Where `target` is no such object, the plain JSON of `document`."""
    if not isinstance(target, dict) or key not in target:
        return json.dumps(document).encode()

    def encode(value: Any) -> str:
        if isinstance(value, dict):
            members = [f"{json.dumps(key)}:{json.dumps(junk)}"] if value is target else []
            members += [f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()]
            return "{" + ",".join(members) + "}"
        if isinstance(value, list):
            return "[" + ",".join(encode(v) for v in value) + "]"
        return json.dumps(value)

    return encode(document).encode()
