"""Hand-made tokens for attacks that a JWT library refuses to produce (bad headers, raw JSON, foreign keys)."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import get_default_algorithms

from devkit.factories import Issuer, boot_of, uuid_of
from trustgate.core.keys import PrivateKey, thumbprint
from trustgate.core.report import NodeIdentity

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z: every token in these tests is issued at this instant
RSA_ALGS = ("PS256", "PS384", "RS256", "RS384")
_SIGNERS = get_default_algorithms()


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA key shared by the RSA algorithms (key generation is the slow part of these tests)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def issuer_for(alg: str) -> Issuer:
    """An issuer signing with `alg`; the RSA algorithms share one key."""
    issuer = Issuer(alg="EdDSA" if alg in RSA_ALGS else alg)
    if alg in RSA_ALGS:
        issuer.alg, issuer.key = alg, rsa_key()
    return issuer


def identity(node: str = "n1", **overrides: str) -> NodeIdentity:
    """The identity of the node that factories' `node_object(node)` registers."""
    values = {"name": node, "system_uuid": uuid_of(node), "boot_id": boot_of(node)} | overrides
    return NodeIdentity(**values)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    """A JSON value (or raw JSON text given as str) as a base64url segment."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return b64url(text.encode())


def kid_of(key: PrivateKey) -> str:
    return thumbprint(key.public_key())  # type: ignore[arg-type]


def craft(header: Any, payload: Any, key: PrivateKey | None = None, alg: str | None = None) -> str:
    """A compact JWS with exactly the given header and payload (dicts or raw JSON text), signed by `key`
    with the JWS algorithm `alg` (default: the header's); without a key the signature is a fixed junk value."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    if key is None:
        return f"{signing_input}.{b64url(b'not a signature')}"
    alg = alg or header["alg"]
    signature = _SIGNERS[alg].sign(signing_input.encode("ascii"), _SIGNERS[alg].prepare_key(key))
    return f"{signing_input}.{b64url(signature)}"


def header_for(issuer: Issuer, **extra: Any) -> dict[str, Any]:
    return {"alg": issuer.alg, "kid": kid_of(issuer.key), "typ": "JWT"} | extra


def signed(issuer: Issuer, payload: Any, **header: Any) -> str:
    """`payload` (dict or raw JSON) correctly signed by the issuer's key, with extra header members."""
    return craft(header_for(issuer, **header), payload, issuer.key, alg=issuer.alg)


def parts(token: str) -> tuple[str, str, str]:
    header, payload, signature = token.split(".")
    return header, payload, signature


def decode_segment(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
