"""API-only worker nodes with trust reports of every kind, for the end-to-end tests, demo and benchmarks.

Nodes are registered as a node agent would (capacity, allocatable, systemUUID, bootID); reports are
signed with the stack's development issuer key and published with `trustgate.inventory.publish`,
exactly what `trustctl publish` does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trustgate.cluster.api import api_client
from trustgate.cluster.reports import publish
from trustgate.core.keys import generate_private_key, thumbprint
from trustgate.core.signing import report_claims, sign_claims
from trustgate.keyfiles import load_private_key

# What kind of report a node gets, and what the decision should say about it.
VALID = "valid"
NO_REPORT = "none"
BAD_SIGNATURE = "bad-signature"
EXPIRED = "expired"
COPIED = "copied"  # a valid report of another host (system UUID differs)
REBOOTED = "rebooted"  # a report from before the node's last reboot (boot id differs)
LEVEL_FAILS = "level-fails"  # signed, bound, kernel level untrusted
KINDS = (VALID, NO_REPORT, BAD_SIGNATURE, EXPIRED, COPIED, REBOOTED, LEVEL_FAILS)


@dataclass
class Host:
    name: str
    kind: str
    system_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    asset_tags: Mapping[str, str] = field(default_factory=dict)


class Fleet:
    def __init__(self, stack: Any, issuer: str) -> None:
        self.stack = stack
        self.issuer = issuer
        self.key = load_private_key(stack.issuer_key)
        self.api = api_client(str(stack.kubeconfig))
        self.hosts: dict[str, Host] = {}

    def add(self, name: str, kind: str = VALID, asset_tags: Mapping[str, str] | None = None, **labels: str) -> Host:
        host = Host(name, kind, asset_tags=dict(asset_tags or {}))
        self.stack.cp.create_node(name, system_uuid=host.system_uuid, boot_id=host.boot_id, labels=labels or None)
        self.hosts[name] = host
        if kind != NO_REPORT:
            self.publish(name, kind)
        return host

    def token(self, name: str, kind: str = VALID, ttl: float = 3600, **overrides: Any) -> str:
        host = self.hosts[name]
        now = time.time()
        claims = report_claims(
            issuer=self.issuer,
            node=name,
            system_uuid=host.system_uuid,
            boot_id=host.boot_id,
            ttl_seconds=ttl,
            asset_tags=host.asset_tags,
            now=now,
        )
        key, kid = self.key, None
        if kind == EXPIRED:
            claims |= {"iat": int(now) - 7200, "exp": int(now) - 3600}
        elif kind == COPIED:
            claims["system_uuid"] = str(uuid.uuid4())
        elif kind == REBOOTED:
            claims["boot_id"] = str(uuid.uuid4())
        elif kind == LEVEL_FAILS:
            claims["levels"]["kernel"] = False
        elif kind == BAD_SIGNATURE:  # the issuer's kid, someone else's key
            key, kid = generate_private_key("ES256"), thumbprint(self.key.public_key())  # type: ignore[arg-type]
        return sign_claims(claims | overrides, key, kid=kid)

    def publish(self, name: str, kind: str = VALID, **overrides: Any) -> str:
        self.hosts[name].kind = kind
        return publish(self.api, name, self.token(name, kind, **overrides))

    def remove(self) -> None:
        """Delete every node of this fleet and its report: other users of a shared stack count its nodes."""
        if self.hosts:
            for kind in ("nodetrustreport", "node"):
                self.stack.kubectl("delete", kind, *self.hosts, "--ignore-not-found", "--wait=false", check=False)
        self.hosts.clear()
