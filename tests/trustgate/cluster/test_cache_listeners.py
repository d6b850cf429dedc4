"""The cluster cache tells its listeners outside its own lock.

A controller's listener takes the controller's lock; the same controller reads a snapshot while holding
it. Called under the cache's lock, the two threads waited on each other for good, and the controller
labelled no node again (found at 500 nodes, where a watch event and a reconcile overlap at once)."""

from __future__ import annotations

import threading

from devkit.factories import Issuer, node_object
from trustgate.cluster.cache import ClusterCache
from trustgate.cluster.resources import NODES, REPORTS


def synced_cache(issuer: Issuer) -> ClusterCache:
    cache = ClusterCache(api=None, verifier=issuer.verifier())  # type: ignore[arg-type] - never started
    lists = {NODES.kind: [node_object("w1")], REPORTS.kind: []}
    for reflector in cache.reflectors:
        reflector.on_replace(lists.get(reflector.resource.kind, []))
        reflector.on_connection(True)
    return cache


def test_a_listener_holding_a_lock_another_thread_holds_while_it_reads_a_snapshot_never_deadlocks() -> None:
    issuer = Issuer()
    cache = synced_cache(issuer)
    controller_lock = threading.Lock()
    in_listener = threading.Event()
    heard: list[str] = []

    def listener() -> None:
        in_listener.set()
        with controller_lock:
            heard.append("change")

    cache.add_change_listener(listener)
    (reports,) = [r for r in cache.reflectors if r.resource.kind == REPORTS.kind]
    report = {"metadata": {"name": "w1"}, "spec": {"token": issuer.token("w1")}}
    watcher = threading.Thread(target=reports.on_event, args=("ADDED", report), daemon=True)
    read: list[object] = []
    reader = threading.Thread(target=lambda: read.append(cache.snapshot()), daemon=True)
    with controller_lock:  # the controller, mid-reconcile: holds its lock, then reads a snapshot
        watcher.start()
        assert in_listener.wait(5)
        reader.start()
        reader.join(timeout=3)
        snapshot_read = not reader.is_alive()
    watcher.join(timeout=5)
    assert snapshot_read, "a snapshot read waited on a watch event that waited on the reader's lock"
    assert heard == ["change"] and not watcher.is_alive()
    assert cache.snapshot().node("w1").failure is None
