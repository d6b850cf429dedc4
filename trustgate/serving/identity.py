"""Who is on the other end of a request: the verified client certificate of its TLS connection (mTLS).

With a client CA configured, the listener asks every client for a certificate and verifies any it
presents against that CA during the handshake (one that does not verify ends the connection). It
does not require one, so that kubelet probes (which present none) reach `/healthz` and `/readyz`;
the endpoints that decide or write (`require_client_certificate`) refuse a request without one
with 401, before reading it: no decision, no record.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from flask import Flask, Response, request

NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"


@dataclass(frozen=True)
class ClientIdentity:
    """The subject of a verified client certificate."""

    common_name: str
    organizations: tuple[str, ...] = ()

    @property
    def node(self) -> str | None:
        """The node a node identity (CN=system:node:NAME, O=system:nodes) stands for; None otherwise."""
        if NODES_GROUP not in self.organizations or not self.common_name.startswith(NODE_PREFIX):
            return None
        return self.common_name.removeprefix(NODE_PREFIX) or None

    def __str__(self) -> str:
        groups = "".join(f", O={o}" for o in self.organizations)
        return f"CN={self.common_name}{groups}"


@functools.lru_cache(maxsize=64)  # the same few clients call on every request: parse each certificate once
def identity_from_der(der: bytes) -> ClientIdentity:
    subject = x509.load_der_x509_certificate(der).subject
    names = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1:  # a subject with several CNs names no one in particular
        return ClientIdentity("", ())
    groups = tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return ClientIdentity(names[0], groups)


def peer_identity(environ: Mapping[str, Any]) -> ClientIdentity | None:
    """The verified client certificate of the request's connection under gunicorn; None without one.

    The listener verifies any certificate a client presents against `--client-ca` during the
    handshake (a certificate that does not verify ends the connection), so one that is here is valid."""
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return identity_from_der(der) if der else None


def require_client_certificate(app: Flask, paths: Iterable[str], refusal: Any, names: Iterable[str] = ()) -> None:
    """Answer `refusal(message)` (a 401 Response) to a request for one of `paths` without a verified
    client certificate, or (with `names`) with one whose common name is not among them: a cluster CA
    signs many clients, and only kube-scheduler, or kube-apiserver, may ask for a decision."""
    protected, allowed = frozenset(paths), frozenset(names)

    @app.before_request
    def authenticate() -> Response | None:
        if request.path not in protected:
            return None
        identity = peer_identity(request.environ)
        if identity is None:
            return refusal("a client certificate signed by the configured client CA is required")
        if allowed and identity.common_name not in allowed:
            return refusal(f"client {identity.common_name!r} may not ask for decisions")
        return None
