"""trustgate's CA and serving certificates: issued when missing, renewed well before expiry, rotated gently."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from cryptography import x509

from controller.certificates import Certificates, Served, service_names
from trustgate.certificates import load

from ..clock import Clock

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
WEBHOOK = Served("trustgate-webhook-tls", service_names("trustgate-webhook", "trustgate-system"))


class Store:
    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, bytes]] = {}
        self.config_maps: dict[str, dict[str, str]] = {}
        self.writes = 0

    def read(self, name: str) -> Mapping[str, bytes] | None:
        return self.secrets.get(name)

    def write(self, name: str, data: Mapping[str, bytes]) -> None:
        self.secrets[name] = dict(data)
        self.writes += 1

    def publish(self, name: str, data: Mapping[str, str]) -> None:
        self.config_maps[name] = dict(data)


def certificates(store: Store, clock: Clock[dt.datetime], bundles: list[str] | None = None) -> Certificates:
    return Certificates(
        store,
        [WEBHOOK],
        ca_lifetime=dt.timedelta(days=30),
        leaf_lifetime=dt.timedelta(days=9),
        clock=clock,
        on_bundle=lambda: bundles.append("changed") if bundles is not None else None,
    )


def leaf(store: Store) -> x509.Certificate:
    return load(store.secrets[WEBHOOK.secret]["tls.crt"], store.secrets[WEBHOOK.secret]["tls.key"]).cert


def test_a_ca_and_a_serving_certificate_for_the_services_names_are_issued_when_missing() -> None:
    store, clock = Store(), Clock(T0)
    due = certificates(store, clock).reconcile()
    cert = leaf(store)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "trustgate-webhook.trustgate-system.svc" in names
    assert store.config_maps["trustgate-ca"]["ca.crt"].encode() == store.secrets[WEBHOOK.secret]["ca.crt"]
    assert due == cert.not_valid_after_utc - dt.timedelta(days=9) / 3


def test_nothing_is_written_while_everything_is_current() -> None:
    store, clock = Store(), Clock(T0)
    manager = certificates(store, clock)
    manager.reconcile()
    writes = store.writes
    clock.now += dt.timedelta(days=2)
    manager.reconcile()
    assert store.writes == writes


def test_a_serving_certificate_is_renewed_a_third_of_its_lifetime_before_it_expires() -> None:
    store, clock = Store(), Clock(T0)
    manager = certificates(store, clock)
    manager.reconcile()
    first = leaf(store)
    clock.now += dt.timedelta(days=6, hours=1)  # 9-day certificate: renewed after 6 days
    manager.reconcile()
    assert leaf(store).serial_number != first.serial_number
    assert leaf(store).not_valid_after_utc > first.not_valid_after_utc


def test_a_lifetime_of_minutes_is_renewed_a_third_before_expiry_despite_the_backdated_start() -> None:
    """notBefore is backdated 5 minutes for clock skew: a 150-second certificate must not count as 450 s long."""
    store, clock = Store(), Clock(T0)
    manager = Certificates(store, [WEBHOOK], leaf_lifetime=dt.timedelta(seconds=150), clock=clock)
    due = manager.reconcile()
    first = leaf(store)
    assert due == first.not_valid_after_utc - dt.timedelta(seconds=50) == T0 + dt.timedelta(seconds=100)
    writes = store.writes
    clock.now += dt.timedelta(seconds=99)
    manager.reconcile()
    assert store.writes == writes
    clock.now += dt.timedelta(seconds=2)
    manager.reconcile()
    assert leaf(store).serial_number != first.serial_number


def test_a_certificate_valid_longer_than_the_configured_lifetime_is_reissued_at_once() -> None:
    """The chart issues whole days at install; with a shorter lifetime the controller replaces them at start."""
    store, clock = Store(), Clock(T0)
    Certificates(store, [WEBHOOK], leaf_lifetime=dt.timedelta(days=1), clock=clock).reconcile()
    installed = leaf(store)
    ca = store.secrets["trustgate-ca"]["tls.crt"]
    shorter = Certificates(store, [WEBHOOK], leaf_lifetime=dt.timedelta(seconds=150), clock=clock)
    shorter.reconcile()
    assert leaf(store).serial_number != installed.serial_number
    assert leaf(store).not_valid_after_utc == T0 + dt.timedelta(seconds=150)
    assert store.secrets["trustgate-ca"]["tls.crt"] == ca, "the CA stays: kube-scheduler's copy of it stays valid"


def test_a_ca_rotation_keeps_the_previous_ca_trusted_and_the_old_leaf_until_it_is_due() -> None:
    store, clock, bundles = Store(), Clock(T0), []
    manager = certificates(store, clock, bundles)
    manager.reconcile()
    old_ca = store.secrets["trustgate-ca"]["tls.crt"]
    clock.now += dt.timedelta(days=20, hours=1)  # the 30-day CA is due (and so is the day-0 leaf)
    manager.reconcile()
    bundle = store.config_maps["trustgate-ca"]["ca.crt"].encode()
    assert store.secrets["trustgate-ca"]["tls.crt"] != old_ca
    assert old_ca in bundle and store.secrets["trustgate-ca"]["tls.crt"] in bundle
    assert store.secrets[WEBHOOK.secret]["ca.crt"] == bundle
    assert len(bundles) == 2  # the bundle changed twice: issued, then rotated


def test_a_serving_certificate_signed_by_another_ca_is_replaced() -> None:
    store, clock = Store(), Clock(T0)
    certificates(store, clock).reconcile()
    foreign = Store()
    certificates(foreign, clock).reconcile()
    store.secrets[WEBHOOK.secret] = foreign.secrets[WEBHOOK.secret]
    certificates(store, clock).reconcile()
    ca = load(store.secrets["trustgate-ca"]["tls.crt"], store.secrets["trustgate-ca"]["tls.key"]).cert
    leaf(store).verify_directly_issued_by(ca)
