"""The cluster cache against a real kube-apiserver: add, replace, delete, expiry, 410 relist, restarts."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from devkit import chart
from devkit.controlplane import ControlPlane
from devkit.factories import Issuer, boot_of, uuid_of
from devkit.waiting import eventually
from trustgate.cluster.api import api_client
from trustgate.cluster.cache import ClusterCache
from trustgate.cluster.reports import publish
from trustgate.cluster.resources import REPORTS
from trustgate.core.reasons import NO_REPORT

from .harness import binaries

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("cache-cp"), bin_dir=binaries())
    cp.start()
    try:
        cp.kubectl_run("apply", "-f", str(chart.CHART / "crds"))
        cp.kubectl_run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def cache(control_plane: ControlPlane, issuer: Issuer) -> Iterator[ClusterCache]:
    cache = ClusterCache(api_client(str(control_plane.kubeconfig)), issuer.verifier(skew_seconds=0)).start()
    assert cache.wait_synced(30), "the cache did not sync with the API server"
    yield cache
    cache.stop()


@pytest.fixture
def api(control_plane: ControlPlane):
    return api_client(str(control_plane.kubeconfig))


def add_node(cp: ControlPlane, name: str) -> None:
    cp.create_node(name, system_uuid=uuid_of(name), boot_id=boot_of(name))


def test_the_cache_is_synced_and_ready_after_listing(cache: ClusterCache) -> None:
    assert cache.synced
    assert cache.snapshot().synced


def test_a_new_node_without_a_report_fails_with_no_report(control_plane, cache: ClusterCache) -> None:
    add_node(control_plane, "bare")
    trust = eventually(lambda: cache.snapshot().nodes.get("bare"), "node bare in the cache")
    assert trust.failure == NO_REPORT


def test_a_published_report_is_verified_and_bound_to_its_node(control_plane, cache, api, issuer) -> None:
    add_node(control_plane, "w1")
    publish(api, "w1", issuer.token("w1", asset_tags={"country": "US"}))
    trust = eventually(
        lambda: (t := cache.snapshot().nodes.get("w1")) and t.report and t.failure is None and t, "w1 trusted"
    )
    assert trust.report.asset_tags == {"country": "US"}


def test_a_replaced_report_takes_effect_for_the_next_snapshot(control_plane, cache, api, issuer) -> None:
    add_node(control_plane, "w2")
    publish(api, "w2", issuer.token("w2"))
    eventually(lambda: "kernel" in cache.snapshot().node("w2").trusted_levels, "w2 trusted")
    assert publish(api, "w2", issuer.token("w2", levels={"kernel": False})) == "replaced"
    eventually(
        lambda: (t := cache.snapshot().node("w2")).failure is None and "kernel" not in t.trusted_levels,
        "the replaced report with kernel untrusted",
    )


def test_a_deleted_report_leaves_the_node_without_report(control_plane, cache, api, issuer) -> None:
    add_node(control_plane, "w3")
    publish(api, "w3", issuer.token("w3"))
    eventually(lambda: cache.snapshot().node("w3").failure is None, "w3 trusted")
    control_plane.kubectl_run("delete", "nodetrustreport", "w3")
    eventually(lambda: cache.snapshot().node("w3").failure == NO_REPORT, "w3 back to no report")


def test_a_report_copied_from_another_host_is_bound_elsewhere(control_plane, cache, api, issuer) -> None:
    add_node(control_plane, "w4")
    publish(api, "w4", issuer.token("w4", system_uuid=uuid_of("w1")))
    trust = eventually(lambda: (t := cache.snapshot().node("w4")).report and t, "w4's report")
    assert trust.failure is not None and "report bound to another host" in trust.failure.message


def test_expiry_is_decided_at_decision_time_without_any_event(control_plane, cache, api, issuer) -> None:
    add_node(control_plane, "w5")
    publish(api, "w5", issuer.token("w5", now=time.time() - 58, ttl=60))
    snapshot = eventually(lambda: (s := cache.snapshot()).node("w5").report and s, "w5's report")
    trust = snapshot.node("w5")
    assert trust.failure_at(time.time(), snapshot.skew) is None
    time.sleep(max(0.0, trust.report.expires_at - time.time()) + 0.1)
    assert "trust report expired at" in str(trust.failure_at(time.time(), snapshot.skew) or "")
    assert str(cache.snapshot().node("w5").failure_at(time.time(), snapshot.skew)).startswith("trust report expired")


def test_a_watch_from_an_expired_resource_version_relists_and_keeps_serving(control_plane, cache, api, issuer) -> None:
    reflector = next(r for r in cache.reflectors if r.resource is REPORTS)
    lists_before = reflector.lists
    reflector.version = "1"  # far older than the API server's watch cache: the next watch gets 410 Gone
    reflector.interrupt()
    eventually(lambda: reflector.lists > lists_before, "a relist after 410 Gone", timeout=30)
    add_node(control_plane, "w6")
    publish(api, "w6", issuer.token("w6"))
    eventually(lambda: cache.snapshot().node("w6").failure is None, "w6 trusted after the relist")


def test_the_cache_reconnects_after_the_api_server_restarts(control_plane, cache, api, issuer) -> None:
    control_plane.restart_apiserver()
    add_node(control_plane, "w7")
    publish(api_client(str(control_plane.kubeconfig)), "w7", issuer.token("w7"))
    eventually(lambda: cache.snapshot().node("w7").failure is None, "w7 trusted after the restart", timeout=60)


def test_trust_policies_and_namespaces_are_tracked(control_plane, cache) -> None:
    control_plane.kubectl_run("create", "namespace", "secure")
    control_plane.kubectl_run("label", "namespace", "secure", "tier=secure")
    policy = "apiVersion: trustgate.dev/v1alpha1\nkind: TrustPolicy\nmetadata: {name: pci}\nspec: {enforcement: Warn}\n"
    subprocess.run(
        [str(control_plane.kubectl), "--kubeconfig", str(control_plane.kubeconfig), "apply", "-f", "-"],
        input=policy,
        text=True,
        check=True,
        capture_output=True,
    )
    eventually(lambda: cache.snapshot().namespaces.get("secure", {}).get("tier") == "secure", "namespace labels")
    policy_seen = eventually(lambda: [p for p in cache.snapshot().policies if p.name == "pci"], "TrustPolicy pci")
    assert policy_seen[0].enforcement == "Warn"
