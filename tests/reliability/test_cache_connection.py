"""The cluster cache is not synced while a watch is down: no decision is made on what it cannot see.

Unit level (no API server): the reflectors' callbacks are driven by hand. The end-to-end proof is
tests/e2e/test_chaos.py (after a long kube-apiserver outage, a node revoked the moment the
apiserver is back is never admitted on a stale cache).
"""

from __future__ import annotations

import pytest

from devkit.factories import Issuer, node_object
from trustgate.cluster.cache import Backoff, ClusterCache
from trustgate.cluster.resources import NODES, REPORTS


@pytest.fixture
def cache() -> ClusterCache:
    issuer = Issuer()
    cache = ClusterCache(api=None, verifier=issuer.verifier())  # type: ignore[arg-type] - never started
    lists = {
        NODES.kind: [node_object("w1")],
        REPORTS.kind: [{"metadata": {"name": "w1"}, "spec": {"token": issuer.token("w1")}}],
    }
    for reflector in cache.reflectors:
        reflector.on_replace(lists.get(reflector.resource.kind, []))
        reflector.on_connection(True)
    return cache


def test_a_listed_and_watching_cache_is_synced(cache: ClusterCache) -> None:
    assert cache.synced and cache.snapshot().synced
    assert cache.snapshot().node("w1").failure is None


@pytest.mark.parametrize("kind", ["Node", "Namespace", "NodeTrustReport", "TrustPolicy"])
def test_a_lost_watch_unsyncs_the_cache_until_it_is_back(cache: ClusterCache, kind: str) -> None:
    before = cache.snapshot()
    (reflector,) = [r for r in cache.reflectors if r.resource.kind == kind]
    reflector.on_connection(False)
    assert not cache.synced
    assert not cache.snapshot().synced  # the cached snapshot was dropped, not served stale
    assert before.synced  # a snapshot already handed out is immutable
    reflector.on_connection(False)  # repeated failures while in backoff change nothing
    assert not cache.snapshot().synced
    reflector.on_connection(True)
    assert cache.synced and cache.snapshot().synced


def test_two_lost_watches_need_both_back(cache: ClusterCache) -> None:
    nodes, reports = cache.reflectors[0], cache.reflectors[2]
    nodes.on_connection(False)
    reports.on_connection(False)
    nodes.on_connection(True)
    assert not cache.snapshot().synced
    reports.on_connection(True)
    assert cache.snapshot().synced


def test_reconnect_attempts_back_off_to_at_most_a_few_seconds() -> None:
    backoff = Backoff()
    delays = [backoff.next() for _ in range(20)]
    assert delays[0] < 0.3 and max(delays) <= 3.0 * 1.2
    backoff.reset()
    assert backoff.next() < 0.3
