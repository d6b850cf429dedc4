"""The label controller: owned labels only, flipped at the moment of expiry, written by the leader only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from controller.labels import LabelController, label_patch, next_change
from devkit.factories import Issuer, node_object
from trustgate.core.labels import TRUSTED_LABEL
from trustgate.core.snapshot import Snapshot


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


def trust_of(issuer: Issuer, labels: dict[str, str] | None = None, **claims):
    node = node_object("n1", labels=labels)
    snapshot = Snapshot.build(issuer.verifier(), nodes=[node], reports={"n1": issuer.token("n1", **claims)})
    return snapshot.node("n1")


def test_a_valid_report_sets_trusted_and_its_asset_tags(issuer: Issuer) -> None:
    trust = trust_of(issuer, asset_tags={"country": "US", "tenant": "acme"})
    assert label_patch(trust, time.time(), 30) == {
        TRUSTED_LABEL: "true",
        "asset.trustgate.dev/country": "US",
        "asset.trustgate.dev/tenant": "acme",
    }


def test_labels_already_in_step_need_no_patch(issuer: Issuer) -> None:
    labels = {TRUSTED_LABEL: "true", "asset.trustgate.dev/country": "US", "team": "x"}
    assert label_patch(trust_of(issuer, labels=labels, asset_tags={"country": "US"}), time.time(), 30) == {}


def test_asset_labels_the_report_no_longer_carries_are_removed_and_others_untouched(issuer: Issuer) -> None:
    labels = {TRUSTED_LABEL: "true", "asset.trustgate.dev/country": "US", "asset.trustgate.dev/old": "x", "team": "y"}
    patch = label_patch(trust_of(issuer, labels=labels, asset_tags={"country": "DE"}), time.time(), 30)
    assert patch == {"asset.trustgate.dev/country": "DE", "asset.trustgate.dev/old": None}


def test_a_failing_level_sets_trusted_false_and_drops_asset_labels(issuer: Issuer) -> None:
    labels = {TRUSTED_LABEL: "true", "asset.trustgate.dev/country": "US"}
    trust = trust_of(issuer, labels=labels, levels={"kernel": False}, asset_tags={"country": "US"})
    assert label_patch(trust, time.time(), 30) == {TRUSTED_LABEL: "false", "asset.trustgate.dev/country": None}


def test_an_expired_report_sets_trusted_false(issuer: Issuer) -> None:
    trust = trust_of(issuer, labels={TRUSTED_LABEL: "true"}, ttl=60)
    assert label_patch(trust, time.time() + 3600, 30) == {TRUSTED_LABEL: "false"}


def test_a_node_without_report_is_labelled_untrusted() -> None:
    snapshot = Snapshot.build(Issuer().verifier(), nodes=[node_object("n1")])
    assert label_patch(snapshot.node("n1"), time.time(), 30) == {TRUSTED_LABEL: "false"}


def test_the_next_change_of_a_valid_report_is_its_expiry_plus_skew(issuer: Issuer) -> None:
    now = time.time()
    trust = trust_of(issuer, ttl=600, now=now)
    assert next_change(trust, now, 30) == pytest.approx(int(now) + 600 + 30)


class FakeCache:
    """Just the part of ClusterCache the controller uses, over one snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current, self.synced = snapshot, True
        self.listeners: list[Callable[[set[str]], None]] = []

    def add_listener(self, listener: Callable[[set[str]], None]) -> None:
        self.listeners.append(listener)

    def snapshot(self) -> Snapshot:
        return self.current

    def wait_synced(self, timeout: float) -> bool:
        return True


def run_controller(cache: FakeCache, leading: bool) -> tuple[LabelController, list, threading.Thread]:
    patches: list[tuple[float, str, dict]] = []
    controller = LabelController(cache, lambda name, body: patches.append((time.time(), name, body)))  # type: ignore[arg-type]
    if leading:
        controller.start_leading()
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    return controller, patches, thread


def test_the_leader_flips_trusted_to_false_when_the_report_expires_without_any_event(issuer: Issuer) -> None:
    verifier = issuer.verifier(skew_seconds=0)
    now = time.time()
    # iat in the past so that exp lands about 1.5 s from now
    token = issuer.token("n1", now=now - 58.5, ttl=60)
    node = node_object("n1", labels={TRUSTED_LABEL: "true"})
    cache = FakeCache(Snapshot.build(verifier, nodes=[node], reports={"n1": token}))
    controller, patches, thread = run_controller(cache, leading=True)
    deadline = time.time() + 10
    while not patches and time.time() < deadline:
        time.sleep(0.05)
    controller.stop()
    thread.join(5)
    assert patches, "no patch was made after the report expired"
    when, name, body = patches[0]
    expires_at = cache.current.node("n1").report.expires_at
    assert name == "n1" and body == {"metadata": {"labels": {TRUSTED_LABEL: "false"}}}
    assert when >= expires_at


def test_a_follower_never_writes_labels(issuer: Issuer) -> None:
    cache = FakeCache(Snapshot.build(issuer.verifier(), nodes=[node_object("n1")], reports={}))
    controller, patches, thread = run_controller(cache, leading=False)
    controller.mark_dirty({"n1"})
    time.sleep(0.3)
    controller.stop()
    thread.join(5)
    assert patches == []
