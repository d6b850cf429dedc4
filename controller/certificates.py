"""trustgate's own TLS, managed by default: a CA and the serving certificates of its services, in Secrets.

As Kyverno and Gatekeeper do, the leader keeps a CA (`<prefix>-ca`) and one serving certificate per
service (`<service>-tls`: tls.crt, tls.key, ca.crt) in trustgate's namespace, issues them when they are
missing, and renews each well before it expires (a third of its lifetime before, by a timer). The
services read their certificate files per connection, and the kubelet refreshes mounted Secrets, so
a renewal drops no request. The CA bundle the API server and kube-scheduler verify trustgate with
holds the current CA and, for a while after a CA rotation, the previous one: certificates of either
verify until every service serves the new one. The bundle is also published in the ConfigMap
`<prefix>-ca` (key ca.crt), for the kube-scheduler host to copy (the extender's `caFile`).

With bring-your-own certificates (cert-manager), this controller stays off and the webhook
configurations take the CA bundle from a file (`--webhook-ca-bundle`).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from controller.loop import Loop
from trustgate.certificates import Issued, issue, load, new_ca

log = logging.getLogger(__name__)

CA_LIFETIME = dt.timedelta(days=365 * 5)
LEAF_LIFETIME = dt.timedelta(days=150)


@dataclass(frozen=True)
class Served:
    """One service's serving certificate: its Secret and the names clients reach it by."""

    secret: str
    dns_names: tuple[str, ...]


class SecretStore(Protocol):
    def read(self, name: str) -> Mapping[str, bytes] | None:
        """The data of a Secret in trustgate's namespace (None: it does not exist)."""

    def write(self, name: str, data: Mapping[str, bytes]) -> None:
        """Create or replace a Secret (type kubernetes.io/tls when it holds tls.crt and tls.key)."""

    def publish(self, name: str, data: Mapping[str, str]) -> None:
        """Create or replace a ConfigMap."""


def service_names(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names in-cluster clients use for a Service."""
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")


#: How much longer than configured a certificate may stay valid before it is re-issued (helm's whole days).
LONGER_THAN_CONFIGURED = dt.timedelta(minutes=1)


def renewal_time(cert: x509.Certificate, lifetime: dt.timedelta | None = None) -> dt.datetime:
    """A third of its lifetime before it expires: the configured lifetime, when that is shorter than the
    certificate's validity (which includes the issuer's backdating of notBefore)."""
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime is not None:
        validity = min(validity, lifetime)
    return cert.not_valid_after_utc - validity / 3


def needs_renewal(cert: x509.Certificate, now: dt.datetime, lifetime: dt.timedelta | None = None) -> bool:
    """Due a third of its lifetime before it expires, or at once when it outlives a certificate issued now
    (the configured lifetime was shortened, or the install could only issue whole days)."""
    if lifetime is not None and cert.not_valid_after_utc - now > lifetime + LONGER_THAN_CONFIGURED:
        return True
    return now >= renewal_time(cert, lifetime)


class Certificates(Loop):
    """Keeps the CA and the serving certificates current; `bundle()` is the CA bundle clients trust."""

    def __init__(
        self,
        store: SecretStore,
        served: Sequence[Served],
        prefix: str = "trustgate",
        ca_lifetime: dt.timedelta = CA_LIFETIME,
        leaf_lifetime: dt.timedelta = LEAF_LIFETIME,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_bundle: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.served, self.prefix = store, tuple(served), prefix
        self.ca_lifetime, self.leaf_lifetime, self.clock = ca_lifetime, leaf_lifetime, clock
        self.on_bundle = on_bundle
        self._bundle: bytes = b""
        super().__init__()

    @property
    def ca_secret(self) -> str:
        return f"{self.prefix}-ca"

    def bundle(self) -> str:
        """The CA bundle (base64 PEM), as webhook configurations carry it."""
        return base64.b64encode(self._bundle).decode()

    def run(self) -> None:
        """Reconcile when leading; then sleep until the next certificate is due (or an hour, to notice
        a Secret deleted by hand)."""
        while not self.stopping:
            delay = 60.0
            if self.leading.is_set():
                try:
                    due = self.reconcile()
                    delay = min(3600.0, max(1.0, (due - self.clock()).total_seconds()))
                except Exception as error:  # the API server may be away: try again soon
                    log.warning("cannot reconcile trustgate's certificates: %s", error)
                    delay = 5.0
            self.sleep(delay)

    def reconcile(self) -> dt.datetime:
        """Issue or renew what is missing or due; returns when the next renewal is due."""
        now = self.clock()
        ca, previous = self._ca(now)
        bundle = ca.cert_pem + (previous.cert_pem if previous is not None else b"")
        if bundle != self._bundle:
            self._bundle = bundle
            self.store.publish(self.ca_secret, {"ca.crt": bundle.decode()})
            self.on_bundle()
        due = renewal_time(ca.cert)
        for served in self.served:
            leaf = self._leaf(served, ca, previous, bundle, now)
            due = min(due, renewal_time(leaf.cert, self.leaf_lifetime))
        return due

    def _ca(self, now: dt.datetime) -> tuple[Issued, Issued | None]:
        data = self.store.read(self.ca_secret)
        current = load(data["tls.crt"], data["tls.key"]) if data and "tls.crt" in data else None
        previous = load(data["previous.crt"], data["previous.key"]) if data and "previous.crt" in data else None
        if previous is not None and previous.not_after <= now:
            previous = None
        # The CA goes by its own validity only: a copy of the bundle made by hand (kube-scheduler's caFile)
        # must not go stale because a lifetime setting changed.
        if current is None or needs_renewal(current.cert, now):
            if current is not None:
                log.info("rotating trustgate's CA (the previous one stays trusted until it expires)")
            previous, current = current, new_ca(f"{self.prefix}-ca", self.ca_lifetime, now=now)
            stored = {"tls.crt": current.cert_pem, "tls.key": current.key_pem}
            if previous is not None:
                stored |= {"previous.crt": previous.cert_pem, "previous.key": previous.key_pem}
            self.store.write(self.ca_secret, stored)
        return current, previous

    def _leaf(self, served: Served, ca: Issued, previous: Issued | None, bundle: bytes, now: dt.datetime) -> Issued:
        """The service's certificate: kept while a trusted CA signed it and it is not due (after a CA
        rotation it is re-issued by the new CA only when due, so clients have long had the new CA)."""
        data = self.store.read(served.secret) or {}
        leaf = load(data["tls.crt"], data["tls.key"]) if "tls.crt" in data and "tls.key" in data else None
        trusted = [c.cert for c in (ca, previous) if c is not None]
        stale = leaf is None or needs_renewal(leaf.cert, now, self.leaf_lifetime)
        if stale or not any(_verifies(leaf.cert, c) for c in trusted):  # type: ignore[union-attr]
            leaf = issue(ca, served.dns_names[0], served.dns_names, server=True, lifetime=self.leaf_lifetime, now=now)
            log.info("issued the serving certificate %s, valid until %s", served.secret, leaf.not_after)
        elif data.get("ca.crt") == bundle:
            return leaf
        issuer = ca if _verifies(leaf.cert, ca.cert) else previous
        chain = leaf.cert_pem + (issuer.cert_pem if issuer is not None else b"")
        self.store.write(served.secret, {"tls.crt": chain, "tls.key": leaf.key_pem, "ca.crt": bundle})
        return leaf


def _verifies(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
