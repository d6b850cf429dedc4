"""/prioritize, and the decision functions themselves: the memoized hot loop must agree with a plain
`Snapshot.evaluate` of every node, for every kind of requirement, at every instant."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devkit.factories import node_object, pod_object, trust_policy
from extender import filter as filter_module
from extender.filter import (
    NOT_CLEAN,
    NodeIndex,
    filter_nodes,
    least_expiry,
    prioritize_nodes,
    requirement_of,
    score_at,
    scores,
)
from trustgate.core.node import NodeTrust
from trustgate.core.policy import pod_facts
from trustgate.core.reasons import NO_REPORT, UNKNOWN_NODE

from ..fuzzing import FUZZ
from .extender_support import NOW, World, names_args, nodes_args, trust_pod

# --- prioritize ---------------------------------------------------------------------------------


def prioritize(client, args):
    response = client.post("/prioritize", data=json.dumps(args), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.fixture
def aging(world: World) -> World:
    """Reports with 2 h, 1 h, 30 min and 6 min left, and nodes failing."""
    world.node("fresh", now=NOW - 60, ttl=7260)
    world.node("hour", now=NOW - 60, ttl=3660)
    world.node("half", now=NOW - 60, ttl=1860)
    world.node("stale", now=NOW - 3000, ttl=3360)
    world.node("bare", report=False)
    world.node("kernel", levels={"kernel": False})
    return world


CANDIDATES = ["stale", "bare", "half", "hour", "kernel", "fresh", "gone"]


def test_prioritize_prefers_more_validity_left(aging: World) -> None:
    result = prioritize(aging.client(), names_args(trust_pod(), CANDIDATES))
    assert [entry["Host"] for entry in result] == CANDIDATES  # one entry per candidate, in order
    scores = {entry["Host"]: entry["Score"] for entry in result}
    assert scores == {"fresh": 10, "hour": 5, "half": 3, "stale": 1, "bare": 0, "kernel": 0, "gone": 0}
    assert all(isinstance(entry["Score"], int) and 0 <= entry["Score"] <= 10 for entry in result)


def test_prioritize_with_full_nodes(aging: World) -> None:
    nodes = aging.node_objects(CANDIDATES)
    result = prioritize(aging.client(), nodes_args(trust_pod(), nodes))
    assert [e["Host"] for e in result] == [n["metadata"]["name"] for n in nodes]
    assert {e["Host"]: e["Score"] for e in result}["fresh"] == 10


def test_prioritize_with_lowercase_keys(aging: World) -> None:
    result = prioritize(aging.client(), {"pod": trust_pod(), "nodenames": ["hour", "fresh"]})
    assert result == [{"Host": "hour", "Score": 5}, {"Host": "fresh", "Score": 10}]


def test_prioritize_gives_warn_failures_no_preference(aging: World) -> None:
    aging.policies.append(trust_policy("soft", enforcement="Warn"))
    scores = {e["Host"]: e["Score"] for e in prioritize(aging.client(), names_args(pod_object("p"), CANDIDATES))}
    assert scores["kernel"] == 0 and scores["bare"] == 0 and scores["fresh"] == 10


@pytest.mark.parametrize("synced", [True, False])
def test_prioritize_without_an_opinion_scores_zero(aging: World, synced: bool) -> None:
    aging.synced = synced
    client = aging.client()
    pods = [pod_object("plain")] if synced else [pod_object("plain"), trust_pod()]
    for pod in pods:
        assert {e["Score"] for e in prioritize(client, names_args(pod, CANDIDATES))} == {0}


def test_prioritize_a_malformed_pod_scores_zero(aging: World) -> None:
    pod = trust_pod()
    pod["spec"]["nodeSelector"]["x"] = 1
    assert {e["Score"] for e in prioritize(aging.client(), names_args(pod, CANDIDATES))} == {0}


def test_prioritize_when_every_report_is_at_its_edge(world: World) -> None:
    world.node("a", now=NOW - 3600, ttl=3600)  # expires now, still within the clock skew
    scores = prioritize(world.client(), names_args(trust_pod(), ["a"]))
    assert scores == [{"Host": "a", "Score": 1}]


# --- equivalence of the memoized loop with plain evaluate ----------------------------------------------

REQUIREMENTS = {
    "trusted": trust_pod(),
    "country": trust_pod(node_selector={"asset.trustgate.dev/country": "US"}),
    "other-label": trust_pod(node_selector={"zone": "a"}),
    "affinity": pod_object(
        "p",
        affinity_terms=[
            {"matchExpressions": [{"key": "asset.trustgate.dev/country", "operator": "In", "values": ["US", "CA"]}]},
            {"matchExpressions": [{"key": "asset.trustgate.dev/tenant", "operator": "Exists"}]},
        ],
    ),
    "not-in": pod_object(
        "p",
        affinity_terms=[
            {
                "matchExpressions": [
                    {"key": "trustgate.dev/trusted", "operator": "In", "values": ["true"]},
                    {"key": "asset.trustgate.dev/country", "operator": "NotIn", "values": ["EU"]},
                    {"key": "asset.trustgate.dev/tenant", "operator": "DoesNotExist"},
                ]
            }
        ],
    ),
    "fields": pod_object(
        "p",
        affinity_terms=[
            {
                "matchExpressions": [{"key": "trustgate.dev/trusted", "operator": "In", "values": ["true"]}],
                "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n3"]}],
            }
        ],
    ),
    "policies": pod_object("p", labels={"app": "db"}),
    "warn-only": pod_object("p", labels={"tier": "soft"}),
}
POLICIES = [
    trust_policy("db", podSelector={"matchLabels": {"app": "db"}}, requiredLevels=["kernel", "boot"]),
    trust_policy(
        "db-us", podSelector={"matchLabels": {"app": "db"}}, enforcement="Warn", requiredAssetTags={"country": "US"}
    ),
    trust_policy("soft", podSelector={"matchLabels": {"tier": "soft"}}, enforcement="Warn"),
]


def random_world(world: World, seed: int, size: int = 120, spread: bool = False) -> list[str]:
    """Nodes failing each way, and valid ones expiring around the instants tested (`INSTANTS`) or, with
    `spread`, at any fraction of a second over two hours (for the scores)."""
    rng = random.Random(seed)
    names = []
    for i in range(size):
        name = f"n{i}"
        names.append(name)
        labels = {"zone": rng.choice("ab")}
        kind = rng.randrange(10)
        tags = rng.choice([{}, {"country": "US"}, {"country": "EU"}, {"country": "CA", "tenant": "acme"}])
        levels = rng.choice([None, {"kernel": False}, {"boot": False, "runtime": False}])
        issued = NOW - rng.choice([60, 1800, 3599, 3600, 3630, 3631, 7200])  # around expiry and the 30 s skew
        if kind == 0:
            world.node(name, report=False, labels=labels)
        elif kind == 1:
            world.node(name, labels=labels, system_uuid="4c4c4544-dead-beef-0000-000000000000")
        elif kind == 2:
            world.forged(name)
        elif kind == 3:
            world.node(name, labels=labels, now=NOW + rng.choice([10, 29, 31, 600]), asset_tags=tags)  # future iat
        elif spread:
            edge = rng.random() < 0.2
            exp = NOW + (rng.choice([-31, -30, 0, 0.5]) if edge else rng.uniform(-45, 7200))
            world.node(name, labels=labels, now=NOW - 7200, exp=exp, asset_tags=tags, levels=levels)
        else:
            world.node(name, labels=labels, now=issued, ttl=3600, asset_tags=tags, levels=levels)
    world.policies.extend(POLICIES)
    return [*names, "ghost"]


def plain(snapshot, pod, names, now):
    """The reference: `Snapshot.evaluate` for every node, no memo, no index."""
    requirement = requirement_of(snapshot, pod)
    passed, failed, clean = [], {}, {}
    for name in names:
        verdict = snapshot.evaluate(requirement, snapshot.node(name), now)
        clean[name] = verdict.passed
        if verdict.blocked:
            failed[name] = tuple(verdict.reasons(verdict.enforced_failures))
        else:
            passed.append(name)
    return passed, failed, clean


def plain_scores(snapshot, pod, nodes, now):
    """The reference scores (see `prioritize_nodes`), from `Snapshot.evaluate` of every node."""
    requirement = requirement_of(snapshot, pod)
    lefts = []
    for node in nodes:
        verdict = snapshot.evaluate(requirement, node, now)
        lefts.append(max(0.0, node.report.expires_at - now) if verdict.passed and node.report is not None else None)
    longest = max((left for left in lefts if left is not None), default=0.0)
    return [0 if left is None else 1 + (round(9 * left / longest) if longest > 0 else 0) for left in lefts]


# Around the reports' edges and the 30 s skew, then back in time: what the index keeps from a later
# instant (an expiry's reason, a class's verdict) must not leak into an earlier one.
INSTANTS = (NOW, NOW + 29.9995, NOW + 30, NOW + 30.0005, NOW - 31, NOW + 1800, NOW, NOW + 29.9995, NOW - 31)


@pytest.mark.parametrize("kind", sorted(REQUIREMENTS))
@pytest.mark.parametrize("seed", [1, 2])
def test_memoized_filter_equals_plain_evaluate(world: World, kind: str, seed: int) -> None:
    names = random_world(world, seed)
    snapshot = world.snapshot()
    pod = REQUIREMENTS[kind]
    assert snapshot.requirement(pod_facts(pod)) is not None
    index = NodeIndex()
    objects = [*world.node_objects(names), node_object("ghost")]
    for now in INSTANTS:
        expected_passed, expected_failed, _ = plain(snapshot, pod, names, now)
        for _ in range(2):  # cold at first, then warm
            outcome = filter_nodes(snapshot, pod, names, now, by_name=True, index=index)
            assert outcome.passed == expected_passed
            assert outcome.failed == expected_failed
        by_object = filter_nodes(snapshot, pod, objects, now, by_name=False, index=index)
        passed_objects = [n["metadata"]["name"] for n in by_object.passed]
        assert [n for n in passed_objects if n != "ghost"] == [n for n in expected_passed if n != "ghost"]
        # As an object, the ghost is a node without a report rather than an unknown name.
        assert by_object.failed.get("ghost", (NO_REPORT,))[-1] == NO_REPORT
        assert {k: v for k, v in by_object.failed.items() if k != "ghost"} == {
            k: v for k, v in expected_failed.items() if k != "ghost"
        }


@pytest.mark.parametrize("kind", sorted(REQUIREMENTS))
@pytest.mark.parametrize("seed", [3, 4])
def test_memoized_prioritize_equals_plain_evaluate(world: World, kind: str, seed: int) -> None:
    names = random_world(world, seed, size=200, spread=True)
    snapshot = world.snapshot()
    pod = REQUIREMENTS[kind]
    index = NodeIndex()
    objects = [*world.node_objects(names), node_object("ghost")]
    seen: set[int] = set()
    for now in (*INSTANTS, NOW + 3600, NOW + 7245):
        expected = plain_scores(snapshot, pod, [snapshot.node(name) for name in names], now)
        for _ in range(2):  # cold at first, then warm
            outcome = prioritize_nodes(snapshot, pod, names, now, by_name=True, index=index)
            assert (outcome.hosts, outcome.scores) == (names, expected)
            seen.update(outcome.scores)
        by_object = prioritize_nodes(snapshot, pod, objects, now, by_name=False, index=index)
        nodes = [snapshot.node_from_object(obj) for obj in objects]
        assert (by_object.hosts, by_object.scores) == (
            [n["metadata"]["name"] for n in objects],
            plain_scores(snapshot, pod, nodes, now),
        )
    assert len(seen - {0, 1, 10}) >= 5, seen  # the scores in between were given too


def reference_scores(expiries: list[float], now: float) -> list[int]:
    lefts = [None if exp == NOT_CLEAN else max(0.0, exp - now) for exp in expiries]
    longest = max((left for left in lefts if left is not None), default=0.0)
    return [0 if left is None else 1 + (round(9 * left / longest) if longest > 0 else 0) for left in lefts]


OFFSETS = st.one_of(
    st.none(),  # a node failing a check
    st.floats(-100, 1e6),
    st.integers(-100, 10**6).map(float),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 4.5, 1e-9, 5e-324]),
)


@FUZZ
@given(st.one_of(st.floats(0, 2**40), st.sampled_from([0.0, 1.0, NOW, 2.0**40 - 1])), st.lists(OFFSETS, max_size=40))
def test_scores_equal_the_formula(now: float, offsets: list[float | None]) -> None:
    expiries = [NOT_CLEAN if offset is None else min(max(0.0, now + offset), 2.0**40) for offset in offsets]
    assert scores(expiries, now) == reference_scores(expiries, now)


@pytest.mark.parametrize(
    ("expiries", "expected"),
    [
        ([], []),
        ([NOT_CLEAN, NOT_CLEAN], [0, 0]),
        ([NOW - 10, NOW], [1, 1]),  # no validity left anywhere
        ([NOW + 0.0, NOW + 1.0, NOW + 2.0], [1, 5, 10]),  # 4.5 rounds to even
        ([NOW + 1.0, NOW + 6.0, NOW + 18.0, NOT_CLEAN], [1, 4, 10, 0]),  # 2.5 rounds to even, 0.5 too
    ],
)
def test_scores_at_the_edges_of_rounding(expiries: list[float], expected: list[int]) -> None:
    assert scores(expiries, NOW) == expected == reference_scores(expiries, NOW)


@FUZZ
@given(st.floats(0, 2**40), st.floats(1e-6, 1e7), st.integers(2, 10))
def test_least_expiry_is_the_least(now: float, longest: float, score: int) -> None:
    bound = least_expiry(score, now, longest)
    if bound is not None:
        assert score_at(bound, now, longest) >= score > score_at(math.nextafter(bound, -math.inf), now, longest)
    if 1e8 < now < 1e10 and longest > 1:  # real clocks and report lifetimes: always found
        assert bound is not None


@FUZZ
@given(st.floats(0, 2**40 - 1e7), st.floats(1e-3, 1e7))
def test_scores_on_either_side_of_each_bound(now: float, validity: float) -> None:
    latest = now + validity
    longest = latest - now
    bounds = [least_expiry(score, now, longest) for score in range(2, 11)]
    expiries = [
        latest,
        now,
        *(exp for bound in bounds if bound is not None for exp in (bound, math.nextafter(bound, 0))),
    ]
    assert scores(expiries, now) == reference_scores(expiries, now)


def test_scores_without_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    expiries = [NOT_CLEAN, NOW + 5.0, NOW + 7.25, NOW + 3600.0, NOW - 3.0]
    monkeypatch.setattr(filter_module, "least_expiry", lambda *args: None)
    assert scores(expiries, NOW) == reference_scores(expiries, NOW)


def test_index_follows_snapshot_changes(world: World) -> None:
    world.node("a")
    index = NodeIndex()
    pod = trust_pod()
    assert filter_nodes(world.snapshot(), pod, ["a"], NOW, True, index).passed == ["a"]
    del world.reports["a"]
    assert filter_nodes(world.snapshot(), pod, ["a"], NOW, True, index).failed == {"a": (NO_REPORT,)}


def test_index_is_bounded(world: World) -> None:
    index = NodeIndex(limit=10)
    for i in range(25):
        world.nodes, world.reports = [], {}
        names = [world.node(f"n{i}-{j}", asset_tags={"serial": f"{i}-{j}"}) for j in range(3)]  # new classes too
        filter_nodes(world.snapshot(), trust_pod(), names, NOW, True, index)
        assert len(index) <= 10


def test_index_entry_of_a_deleted_node(world: World) -> None:
    world.node("a")
    world.node("b")
    index = NodeIndex()
    for by_name in (filter_nodes, prioritize_nodes):
        by_name(world.snapshot(), trust_pod(), ["a", "b"], NOW, True, index)
    world.nodes = [n for n in world.nodes if n["metadata"]["name"] != "a"]
    snapshot = world.snapshot()
    assert filter_nodes(snapshot, trust_pod(), ["a", "b"], NOW, True, index).failed == {"a": (UNKNOWN_NODE,)}
    assert prioritize_nodes(snapshot, trust_pod(), ["a", "b"], NOW, True, index).scores == [0, 10]


def test_filter_without_an_index(world: World) -> None:
    world.node("a")
    assert filter_nodes(world.snapshot(), trust_pod(), ["a", "b"], NOW, True).passed == ["a"]


# --- reason categories -------------------------------------------------------------------------------


def test_index_reset_in_the_middle_of_a_request(world: World) -> None:
    """Entries held from before a reset must never share a class number with entries made after it."""
    for i in range(6):
        world.node(f"eu{i}", asset_tags={"country": "EU"})
        world.node(f"ok{i}", asset_tags={"country": "US"})
    names = [f"{kind}{i}" for i in range(6) for kind in ("eu", "ok")]
    pod = trust_pod(node_selector={"asset.trustgate.dev/country": "US"})
    snapshot = world.snapshot()
    index = NodeIndex(limit=1)
    filter_nodes(snapshot, pod, ["ok0"], NOW, True, index)  # the US class gets the first number
    for i in range(2 * len(names) - 2):  # to one short of the limit, with entries of nodes deleted since
        index.entry(NodeTrust(name=f"gone{i}"), len(names))
    # eu0 takes the last place (a second class number), ok0 has its entry, eu1 resets the index: had the
    # numbers started over, the EU class would now get the US class's number, and eu1 its verdict.
    outcome = filter_nodes(snapshot, pod, names, NOW, True, index)
    expected_passed, expected_failed, _ = plain(snapshot, pod, names, NOW)
    assert outcome.passed == expected_passed
    assert outcome.failed == expected_failed
    assert len(index) < 2 * len(names)  # it did reset
