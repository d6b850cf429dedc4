"""Who calls the authority: the verified client certificate of the TLS connection (mTLS).

Agents: the node's kubelet client certificate. A trust agent presents the client certificate of its
node's kubelet (`/var/lib/kubelet/pki/kubelet-client-current.pem`: subject CN=system:node:NAME,
O=system:nodes), and the authority trusts the cluster's client CA (`--client-ca`, the `client-ca-file`
of `kube-system/extension-apiserver-authentication`). Why this identity:

- it is already on every node, bound to that Node's name by the cluster CA (the same binding the API
  server's Node authorizer and NodeRestriction rely on), and renewed by the kubelet: no second PKI to
  run, no per-node secret to distribute;
- mTLS proves possession of the key on every connection, where a bearer token (a ServiceAccount
  token bound to the agent's Pod, checked by TokenReview) can be replayed by whoever sees it for its
  lifetime, and would make every registration wait on, and load, the API server;
- the agent is privileged on its host anyway (it owns the TPM), so reading the kubelet's key gives it
  nothing it did not have.

A cluster without kubelet client certificates (some managed offerings) uses per-node certificates
from an operator CA with the same subject convention, mounted at the same path: the authority only
checks the CA and the subject. An agent may act only for the node its certificate names, so a
compromised node cannot register, activate or attest for another one.

Operators: `/v1/agents` answers only certificates whose CN is in `--reader` or one of whose O
(group) is in `--reader-group` (both empty: nobody). Probes and metrics need no certificate, so the
listener asks for one without requiring it (kubelet probes present none), and every `/v1` endpoint
refuses a connection without one (401) or with the wrong kind (403).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trustgate.serving.identity import ClientIdentity


@dataclass(frozen=True)
class Readers:
    """Who may read the authority's view of the agents (`/v1/agents`)."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, users: Iterable[str] = (), groups: Iterable[str] = ()) -> Readers:
        return cls(frozenset(u for u in users if u), frozenset(g for g in groups if g))

    def allow(self, identity: ClientIdentity) -> bool:
        return identity.common_name in self.users or any(g in self.groups for g in identity.organizations)
