"""The pod trust controller and the evictor, over a fixed snapshot: what they publish, evict and record."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller import podtrust
from controller.eviction import EvictionBlocked, EvictionPacing, Evictor, PodGone
from controller.nodemetrics import NodeTrustCollector
from controller.podtrust import PodTrustController
from devkit.factories import Issuer, node_object, pod_object, trust_policy
from devkit.waiting import eventually
from trustgate.audit.record import AuditRecord
from trustgate.audit.sinks import AuditLog
from trustgate.core.labels import TRUSTED_LABEL
from trustgate.core.running import PodTrust, Result, judge, running_pod
from trustgate.core.snapshot import Snapshot

from ..clock import Clock

TRUSTED = {TRUSTED_LABEL: "true"}
EVICTING = trust_policy("evict", podSelector={"matchLabels": {"app": "db"}}, onTrustLost="Evict")


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


class StaticCache:
    """The part of ClusterCache the controllers read, over a snapshot a test replaces."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.listeners: list[Callable[[set[str]], None]] = []
        self.change_listeners: list[Callable[[], None]] = []

    def snapshot(self) -> Snapshot:
        return self.current

    def wait_synced(self, timeout: float) -> bool:
        return True

    def add_listener(self, listener: Callable[[set[str]], None]) -> None:
        self.listeners.append(listener)

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        self.change_listeners.append(listener)

    def replace(self, snapshot: Snapshot, nodes: set[str]) -> None:
        self.current = snapshot
        for listener in self.change_listeners:
            listener()
        for node_listener in self.listeners:
            node_listener(nodes)


class StaticPods:
    """The part of BoundPods the controller reads, over fixed pods."""

    synced = True

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = {(p.facts.namespace, p.facts.name): p for p in map(running_pod, pods)}
        self.listeners: list[Callable[[set[tuple[str, str]]], None]] = []

    def wait_synced(self, timeout: float) -> bool:
        return True

    def add_listener(self, listener: Callable[[set[tuple[str, str]]], None]) -> None:
        self.listeners.append(listener)

    def change(self, add: list[dict[str, Any]] = (), remove: tuple[tuple[str, str], ...] = ()) -> None:  # type: ignore[assignment]
        """As BoundPods after watch events: the pods change, then the listeners hear which."""
        for key in remove:
            del self.pods[key]
        added = {(p.facts.namespace, p.facts.name): p for p in map(running_pod, add)}
        self.pods |= added
        for listener in self.listeners:
            listener(set(remove) | set(added))

    def in_namespace(self, namespace: str) -> list:
        return [p for k, p in self.pods.items() if k[0] == namespace]

    def namespaces(self) -> set[str]:
        return {k[0] for k in self.pods}

    def namespaces_on(self, nodes: set[str]) -> set[str]:
        return {k[0] for k, p in self.pods.items() if p.facts.node_name in nodes}

    def get(self, key: tuple[str, str]) -> Any:
        return self.pods.get(key)


class Reports:
    def __init__(self, existing: dict[str, str] | None = None) -> None:
        self.written: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self.deleted: list[str] = []
        self.before = existing or {}

    def existing(self) -> dict[str, str]:
        return dict(self.before)

    def put(self, report: dict[str, Any]) -> None:
        self.written[report["metadata"]["namespace"]] = report
        self.writes += 1

    def delete(self, namespace: str) -> None:
        self.deleted.append(namespace)


class Queue:
    def __init__(self) -> None:
        self.asked: list[PodTrust] = []

    def request(self, trust: PodTrust) -> None:
        self.asked.append(trust)


def world(issuer: Issuer, reports: dict[str, str | None], policies=()) -> Snapshot:
    return Snapshot.build(
        issuer.verifier(skew_seconds=0),
        nodes=[node_object(n) for n in reports],
        reports={n: t for n, t in reports.items() if t},
        policies=list(policies),
        namespaces={"shop": {}, "db": {}},
    )


def started(
    cache: StaticCache,
    pods: StaticPods,
    reports: Reports,
    queue: Queue | None = None,
    clock: Callable[[], float] = time.time,
) -> PodTrustController:
    controller = PodTrustController(cache, pods, reports, CollectorRegistry(), evictions=queue, clock=clock)  # type: ignore[arg-type]
    controller.start_leading()
    threading.Thread(target=controller.run, daemon=True).start()
    return controller


def result_of(reports: Reports, namespace: str, pod: str) -> str | None:
    report = reports.written.get(namespace)
    for entry in (report or {}).get("results", []):
        if entry["resources"][0]["name"] == pod:
            return entry["result"]
    return None


def test_a_revoked_report_turns_the_pods_on_that_node_to_fail_and_leaves_others_alone(issuer: Issuer) -> None:
    good = {"a": issuer.token("a"), "b": issuer.token("b")}
    cache = StaticCache(world(issuer, good))
    pods = StaticPods([pod_object(name=f"web-{n}", namespace="shop", node_selector=TRUSTED, node_name=n) for n in "ab"])
    reports = Reports()
    controller = started(cache, pods, reports)
    eventually(lambda: result_of(reports, "shop", "web-a") == "pass", "the first report", 5)

    cache.replace(world(issuer, {"a": None, "b": good["b"]}), {"a"})

    eventually(lambda: result_of(reports, "shop", "web-a") == "fail", "web-a failing", 5)
    assert result_of(reports, "shop", "web-b") == "pass"
    assert reports.written["shop"]["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    controller.stop()


def test_a_report_that_expires_fails_its_pods_by_timer_without_any_event(issuer: Issuer) -> None:
    now = time.time()
    cache = StaticCache(world(issuer, {"a": issuer.token("a", now=now - 58.5, ttl=60)}))
    pods = StaticPods([pod_object(name="web", namespace="shop", node_selector=TRUSTED, node_name="a")])
    reports = Reports()
    controller = started(cache, pods, reports)
    eventually(lambda: result_of(reports, "shop", "web") == "pass", "the first report", 5)

    eventually(lambda: result_of(reports, "shop", "web") == "fail", "web failing at expiry", 10)

    assert time.time() >= cache.current.node("a").report.expires_at  # type: ignore[union-attr]
    controller.stop()


def test_a_pod_that_comes_or_goes_is_judged_alone_and_the_others_keep_their_results(
    issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = {"a": issuer.token("a")}
    cache = StaticCache(world(issuer, {**good, "b": None}))
    pods = StaticPods(
        [pod_object(name=f"web-{i}", namespace="shop", node_selector=TRUSTED, node_name="a") for i in range(3)]
    )
    reports = Reports()
    judged: list[str] = []

    def judging(snapshot: Snapshot, pod: Any, *rest: Any) -> PodTrust | None:
        judged.append(pod.facts.name)
        return judge(snapshot, pod, *rest)

    monkeypatch.setattr(podtrust, "judge", judging)
    controller = started(cache, pods, reports)
    eventually(lambda: result_of(reports, "shop", "web-2") == "pass", "the first report", 5)
    judged.clear()

    pods.change(
        add=[pod_object(name="late", namespace="shop", node_selector=TRUSTED, node_name="b")],
        remove=(("shop", "web-0"),),
    )

    eventually(lambda: result_of(reports, "shop", "late") == "fail", "the new pod failing", 5)
    assert judged == ["late"]
    assert [result_of(reports, "shop", f"web-{i}") for i in range(3)] == [None, "pass", "pass"]
    assert reports.written["shop"]["summary"] == {"pass": 2, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    gauge = {s.labels["result"]: s.value for m in controller.results.collect() for s in m.samples}
    assert gauge == {"pass": 2, "fail": 1, "warn": 0, "error": 0}
    controller.stop()


def test_a_report_is_rewritten_at_most_once_a_second_but_at_once_when_a_pod_fails_anew(issuer: Issuer) -> None:
    clock = Clock(time.time())
    cache = StaticCache(world(issuer, {"a": issuer.token("a"), "b": None}))
    pods = StaticPods([pod_object(name="web-0", namespace="shop", node_selector=TRUSTED, node_name="a")])
    reports = Reports()
    controller = started(cache, pods, reports, clock=clock)
    eventually(lambda: result_of(reports, "shop", "web-0") == "pass", "the first report", 5)

    for i in range(1, 6):  # passing pods, within the second: they wait
        pods.change(add=[pod_object(name=f"web-{i}", namespace="shop", node_selector=TRUSTED, node_name="a")])
    pods.change(add=[pod_object(name="late", namespace="shop", node_selector=TRUSTED, node_name="b")])

    eventually(lambda: result_of(reports, "shop", "late") == "fail", "the failing pod written at once", 5)
    assert reports.writes == 2 and len(reports.written["shop"]["results"]) == 7
    pods.change(add=[pod_object(name="web-6", namespace="shop", node_selector=TRUSTED, node_name="a")])
    clock.now += 1.0  # the second is over: the waiting change is written
    controller.notify()
    eventually(lambda: result_of(reports, "shop", "web-6") == "pass", "the passing pod written a second later", 5)
    assert reports.writes == 3
    controller.stop()


def test_a_namespace_whose_last_trust_pod_is_gone_loses_its_report(issuer: Issuer) -> None:
    cache = StaticCache(world(issuer, {"a": issuer.token("a")}))
    reports = Reports(existing={"old": "[stale]"})
    controller = started(cache, StaticPods([]), reports)

    eventually(lambda: reports.deleted == ["old"], "the stale report deleted", 5)
    controller.stop()


def test_pods_that_an_evicting_policy_selects_are_queued_for_eviction_by_the_leader_only(issuer: Issuer) -> None:
    cache = StaticCache(world(issuer, {"a": None}, policies=[EVICTING]))
    pods = StaticPods(
        [
            pod_object(name="db-0", namespace="db", labels={"app": "db"}, node_name="a"),
            pod_object(name="web-0", namespace="shop", node_selector=TRUSTED, node_name="a"),
        ]
    )
    queue = Queue()
    controller = started(cache, pods, Reports(), queue)

    eventually(lambda: [t.name for t in queue.asked] == ["db-0"], "db-0 queued", 5)
    controller.stop()


# The evictor


def trust_of(issuer: Issuer, node_token: str | None, name: str = "db-0") -> tuple[Snapshot, Any]:
    snapshot = world(issuer, {"a": node_token}, policies=[EVICTING])
    pod = running_pod(pod_object(name=name, namespace="db", labels={"app": "db"}, node_name="a"))
    return snapshot, pod


def evictor(
    evict: Callable[[str, str, str], None], current: Callable[[Any], PodTrust | None], share=(1, 3), **pacing: Any
) -> tuple[Evictor, list[AuditRecord], CollectorRegistry]:
    records: list[AuditRecord] = []

    class Memory:
        name = "memory"

        def write(self, record: AuditRecord) -> None:
            records.append(record)

    registry = CollectorRegistry()
    pacing = {"rate": 50.0, "burst": 5, "retry": 0.2} | pacing
    ev = Evictor(evict, current, lambda: share, AuditLog([Memory()]), registry, EvictionPacing(**pacing))
    ev.start_leading()
    threading.Thread(target=ev.run, daemon=True).start()
    return ev, records, registry


def outcome(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value("trustgate_pod_evictions_total", {"outcome": name}) or 0.0


def test_an_eviction_a_disruption_budget_refuses_is_tried_again_and_recorded_once_done(issuer: Issuer) -> None:
    snapshot, pod = trust_of(issuer, None)
    trust = judge(snapshot, pod, time.time())
    assert trust is not None and trust.evict and trust.result is Result.FAIL
    calls: list[float] = []

    def evict(namespace: str, name: str, uid: str) -> None:
        calls.append(time.monotonic())
        assert (namespace, name, uid) == ("db", "db-0", "uid-db-db-0")
        if len(calls) < 3:
            raise EvictionBlocked("Cannot evict pod as it would violate the pod's disruption budget.")

    ev, records, registry = evictor(evict, lambda key: trust)
    ev.request(trust)
    ev.request(trust)  # asked again while it waits: still one eviction

    eventually(lambda: outcome(registry, "evicted") == 1, "the eviction", 5)
    assert outcome(registry, "blocked") == 2 and len(calls) == 3
    assert calls[1] - calls[0] >= 0.2  # the retry waits
    (record,) = records
    assert (record.decision, record.operation, record.pod, record.node) == ("evicted", "EVICT", "db-0", "a")
    assert record.pod_uid == "uid-db-db-0" and record.codes == ["no_report"]
    ev.stop()


def test_a_pod_whose_node_got_its_trust_back_is_kept(issuer: Issuer) -> None:
    revoked, pod = trust_of(issuer, None)
    restored, _ = trust_of(issuer, issuer.token("a"))
    evicted: list[str] = []
    ev, _, registry = evictor(lambda ns, name, uid: evicted.append(name), lambda key: judge(restored, pod, time.time()))

    ev.request(judge(revoked, pod, time.time()))  # type: ignore[arg-type]

    eventually(lambda: outcome(registry, "kept") == 1, "the pod kept", 5)
    assert evicted == []
    ev.stop()


def test_evictions_are_paced(issuer: Issuer) -> None:
    snapshot = world(issuer, {"a": None}, policies=[EVICTING])
    pods = [
        running_pod(pod_object(name=f"db-{i}", namespace="db", labels={"app": "db"}, node_name="a")) for i in range(6)
    ]
    times: list[float] = []
    ev, _, _ = evictor(
        lambda ns, name, uid: times.append(time.monotonic()),
        lambda key: judge(snapshot, next(p for p in pods if p.key == key), time.time()),
        rate=10.0,
        burst=2,
    )
    for pod in pods:
        ev.request(judge(snapshot, pod, time.time()))  # type: ignore[arg-type]

    eventually(lambda: len(times) == 6, "six evictions", 5)
    assert times[-1] - times[0] >= 0.35  # 2 at once, then one per 0.1 s
    ev.stop()


def test_evictions_are_held_while_most_nodes_lose_trust_at_once(issuer: Issuer) -> None:
    snapshot, pod = trust_of(issuer, None)
    trust = judge(snapshot, pod, time.time())
    evicted: list[str] = []
    ev, _, registry = evictor(lambda ns, name, uid: evicted.append(name), lambda key: trust, share=(3, 4))

    ev.request(trust)  # type: ignore[arg-type]

    eventually(lambda: outcome(registry, "paused") >= 1, "evictions held", 5)
    assert evicted == [] and registry.get_sample_value("trustgate_evictions_paused") == 1
    ev.stop()


def test_a_pod_gone_before_its_eviction_is_not_recorded(issuer: Issuer) -> None:
    snapshot, pod = trust_of(issuer, None)
    trust = judge(snapshot, pod, time.time())

    def evict(namespace: str, name: str, uid: str) -> None:
        raise PodGone("pods db-0 not found")

    ev, records, registry = evictor(evict, lambda key: trust)
    ev.request(trust)  # type: ignore[arg-type]

    eventually(lambda: outcome(registry, "gone") == 1, "the pod gone", 5)
    assert records == []
    ev.stop()


def test_node_metrics_count_states_and_show_each_valid_reports_expiry(issuer: Issuer) -> None:
    now = time.time()
    snapshot = world(
        issuer,
        {
            "good": issuer.token("good", now=now, ttl=600),
            "weak": issuer.token("weak", levels={"kernel": False}),
            "bare": None,
        },
    )
    families = {f.name: f for f in NodeTrustCollector(lambda: snapshot).collect()}

    states = {s.labels["state"]: s.value for s in families["trustgate_nodes"].samples}
    assert states == {"trusted": 1, "untrusted": 1, "no_report": 1}
    expiry = {s.labels["node"]: s.value for s in families["trustgate_node_report_expiry_timestamp_seconds"].samples}
    assert set(expiry) == {"good", "weak"} and expiry["good"] == pytest.approx(int(now) + 600)
