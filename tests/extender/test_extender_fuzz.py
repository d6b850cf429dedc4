"""Property-based tests of the extender over HTTP: any body, any ExtenderArgs shape, any broken part.

Invariants: never a 5xx or a traceback; a 4xx always carries `Error` and no node; a 200 without `Error`
means the pod was readable and the candidates passing are exactly those the core (`Snapshot.evaluate`)
does not block; a pod whose trust requirement cannot be read is refused (`Error` or 4xx); duplicate JSON
keys are read like Go's encoding/json (the last wins); fields that decisions do not read change nothing.

Examples per target: TRUSTGATE_FUZZ_EXAMPLES (default 10,000); a long run is a bigger value.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from flask.testing import FlaskClient
from hypothesis import event, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from devkit.factories import Issuer, node_object, pod_object, trust_policy
from extender.app import create_app
from extender.wire import WireError, loads
from trustgate.core.policy import PolicyError, pod_facts
from trustgate.core.snapshot import Snapshot, StaticCluster, UnknownNamespace

from ..fuzzing import FUZZ, dumps_with_duplicate_member
from .extender_support import NOW, World

JSON = "application/json"
TRUSTED = {"trustgate.dev/trusted": "true"}
COUNTRY = "asset.trustgate.dev/country"


@cache
def world() -> World:
    """Nodes passing and failing for each reason, a policy of each enforcement, two namespaces."""
    world = World(Issuer())
    world.node("good", asset_tags={"country": "US"})
    world.node("eu", asset_tags={"country": "EU"})
    world.node("bare", report=False)
    world.node("expired", now=NOW - 7200, ttl=600)
    world.node("kernel", levels={"kernel": False})
    world.forged("forged")
    world.node("elsewhere", report=False)
    world.reports["elsewhere"] = world.reports["good"]  # another node's report
    world.policies = [
        trust_policy("pci", namespaceSelector={"matchLabels": {"compliance": "pci"}}, requiredLevels=["boot"]),
        trust_policy("secret-images", encryptedImages=["registry.example/secret/*"]),
        trust_policy("warn", podSelector={"matchLabels": {"tier": "sensitive"}}, enforcement="Warn"),
        trust_policy("audit", podSelector={"matchLabels": {"tier": "watched"}}, enforcement="Audit"),
    ]
    world.namespaces = {"default": {}, "payments": {"compliance": "pci"}}
    return world


@cache
def snapshot() -> Snapshot:
    return world().snapshot()


@cache
def client() -> FlaskClient:
    """One app for the whole module: its per-node index then lives across requests, as in production."""
    return create_app(StaticCluster(snapshot()), CollectorRegistry(), clock=lambda: NOW).test_client()


NODE_NAMES = ["good", "eu", "bare", "expired", "kernel", "forged", "elsewhere", "unknown", "\u00e9", ""]


# --- pools --------------------------------------------------------------------------------------------

JUNK = [None, True, 0, -1, 2**64, 1.5, "", "x", "\u00e9" * 50, "a" * 5000, [], [None], ["a"], [[]], {}, {"a": 1}]
JUNK += [{"metadata": 1}, [{"metadata": {"name": 1}}], "\ud7ff\ue000\U0010ffff"]


def _affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
            }
        }
    }


PODS = [
    pod_object("plain"),
    pod_object("trusted", node_selector=TRUSTED),
    pod_object("us", affinity_terms=[{"matchExpressions": [{"key": COUNTRY, "operator": "In", "values": ["US"]}]}]),
    pod_object(
        "not-eu", affinity_terms=[{"matchExpressions": [{"key": COUNTRY, "operator": "NotIn", "values": ["EU"]}]}]
    ),
    pod_object("secret", images=["registry.example/secret/app:1"]),
    pod_object("init-secret", init_images=["registry.example/secret/init"]),
    pod_object("pci", namespace="payments"),
    pod_object("sensitive", labels={"tier": "sensitive"}),
    pod_object("watched", labels={"tier": "watched"}),
    pod_object("zone", node_selector={**TRUSTED, "zone": "a"}),
    pod_object(
        "named", affinity_terms=[{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["good"]}]}]
    ),
    pod_object("untrusted-ok", node_selector={"trustgate.dev/trusted": "false"}),
]
POD_PARTS = {  # where a pod may break, and what may break it (any JSON; the parser decides)
    "pod": ("metadata", "spec"),
    "metadata": ("labels", "namespace", "name"),
    "spec": ("nodeSelector", "affinity", "containers", "initContainers", "ephemeralContainers", "nodeName"),
}
POD_BREAKS = [(where, key, value) for where, keys in POD_PARTS.items() for key in keys for value in JUNK]
POD_BREAKS += [("spec", "affinity", _affinity({"key": COUNTRY, "operator": op})) for op in ("In", "Bogus", "Gt")]
POD_BREAKS += [("spec", "affinity", _affinity({"key": COUNTRY, "operator": "In", "values": v})) for v in ("US", [1])]
ARGS_BREAKS = ["Pod", "NodeNames", "Nodes", "Nodes.items", "item", "item.metadata", "item.metadata.name"]
ARGS_BREAKS += ["item.status", "item.status.nodeInfo", "item.metadata.labels", "item.status.nodeInfo.systemUUID"]


def _break_pod(pod: dict[str, Any], where: str, key: str, value: Any) -> None:
    target = pod if where == "pod" else pod[where]
    target[key] = copy.deepcopy(value)


@st.composite
def extender_args(draw: st.DrawFn, broken: bool = True) -> tuple[dict[str, Any], list[str], bool]:
    """(ExtenderArgs, candidate names, by_name): a genuine request, then maybe one broken part."""
    pod = copy.deepcopy(draw(st.sampled_from(PODS)))
    names = draw(st.lists(st.sampled_from(NODE_NAMES[:-2] if not broken else NODE_NAMES), max_size=6))
    by_name = draw(st.booleans())
    if by_name:
        args: dict[str, Any] = {"Pod": pod, "Nodes": None, "NodeNames": names}
    else:
        objects = {n["metadata"]["name"]: n for n in world().nodes}
        items = [copy.deepcopy(objects[n]) if n in objects else node_object(n) for n in names]
        args = {"Pod": pod, "Nodes": {"metadata": {}, "items": items}, "NodeNames": None}
    if broken and draw(st.booleans()):
        if draw(st.booleans()):
            _break_pod(pod, *draw(st.sampled_from(POD_BREAKS)))
        else:
            part, value = draw(st.sampled_from(ARGS_BREAKS)), copy.deepcopy(draw(st.sampled_from(JUNK)))
            items = (args.get("Nodes") or {}).get("items") or []
            if "." not in part:
                if part == "item":
                    if items:
                        items[0] = value
                else:
                    args[part] = value
            elif part == "Nodes.items":
                if args["Nodes"] is not None:
                    args["Nodes"]["items"] = value
            elif items:
                *path, last = part.split(".")[1:]
                target = items[0]
                for step in path:
                    target = target.setdefault(step, {})
                target[last] = value
    return args, names, by_name


# --- the oracle ---------------------------------------------------------------------------------------


def oracle(args: dict[str, Any]) -> dict[str, Any] | None:
    """What the core says about a well-formed request: {"blocked": names, "failing": names (any failed
    check), "names": candidates}, or {"error": why} for an unreadable pod, or None for a request the wire
    format refuses (then a 4xx is the only right answer)."""
    pod, names, nodes = args.get("Pod"), args.get("NodeNames"), args.get("Nodes")
    if not isinstance(pod, dict) or (names is None) == (nodes is None):
        return None
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        return None
    if nodes is not None:
        items = nodes.get("items") if isinstance(nodes, dict) else None
        if (
            not isinstance(nodes, dict)
            or not isinstance(items, list | None)
            or not all(isinstance(i, dict) for i in items or [])
        ):
            return None
    snap = snapshot()
    try:
        requirement = snap.requirement(pod_facts(pod))
    except (PolicyError, UnknownNamespace) as error:  # a pod from a namespace the cache has not seen
        return {"error": str(error)}
    if names is not None:
        trusts = [snap.node(n) for n in names]
        candidates = list(names)
    else:
        candidates, trusts = [], []
        for item in nodes.get("items") or []:
            metadata = item.get("metadata")
            name = metadata.get("name") if isinstance(metadata, dict) else None
            if not isinstance(name, str) or not name:
                return None if requirement is not None else {"blocked": set(), "failing": set(), "names": None}
            try:
                trusts.append(snap.node_from_object(item))
            except ValueError:
                return None if requirement is not None else {"blocked": set(), "failing": set(), "names": None}
            candidates.append(name)
    if requirement is None:
        return {
            "blocked": set(),
            "failing": set(),
            "passing": sorted(candidates, key=repr),
            "names": candidates,
            "trust": False,
            "clean": [(name, False) for name in candidates],
        }
    verdicts = [(trust.name, snap.evaluate(requirement, trust, NOW)) for trust in trusts]
    return {
        "blocked": {name for name, v in verdicts if v.blocked},
        "failing": {name for name, v in verdicts if not v.passed},
        "passing": sorted((name for name, v in verdicts if not v.blocked), key=repr),  # per candidate: names may repeat
        "clean": [(name, v.passed) for name, v in verdicts],
        "names": candidates,
        "trust": True,
    }


def post(path: str, body: bytes) -> Any:
    response = client().post(path, data=body, content_type=JSON)
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert response.mimetype == JSON
    return response.status_code, json.loads(text)


def filter_decision(status: int, body: Any) -> Any:
    """The decision a filter reply carries: ('refused', error) or (passing names, failed map)."""
    assert isinstance(body, dict)
    if status != 200 or body["Error"]:
        assert body["Error"] and body["Nodes"] is None and body["NodeNames"] is None
        return ("refused", status)
    if body["NodeNames"] is not None:
        passing = body["NodeNames"]
    else:
        passing = [_name(item) for item in (body["Nodes"] or {}).get("items") or []]
    return (sorted(passing, key=repr), dict(sorted((body["FailedAndUnresolvableNodes"] or {}).items())))


def _name(item: Any) -> Any:
    """A passing Node's name (the fast path echoes even malformed objects: then whatever is there)."""
    metadata = item.get("metadata") if isinstance(item, dict) else None
    return metadata.get("name") if isinstance(metadata, dict) else None


def prioritize_decision(status: int, body: Any) -> Any:
    if status != 200:
        assert isinstance(body, dict) and body["Error"]
        return ("refused", status)
    assert isinstance(body, list)
    return [(entry["Host"], entry["Score"]) for entry in body]  # in the order of the candidates


def check(args: dict[str, Any], body: bytes) -> tuple[Any, Any]:
    """POST `body` (the JSON of `args`, duplicates allowed) to both verbs; check them against the oracle."""
    expected = oracle(args)
    filtered = filter_decision(*post("/filter", body))
    priorities = prioritize_decision(*post("/prioritize", body))
    if expected is None:
        event("refused by the wire format")
        assert filtered[0] == "refused" and filtered[1] == 400
        return filtered, priorities
    if "error" in expected:
        event("unreadable pod")
        assert filtered[0] == "refused"  # fails closed: no node for a pod whose requirement is unknown
        assert isinstance(priorities, tuple) or all(score == 0 for _, score in priorities)
        return filtered, priorities
    if expected["names"] is None:  # a pod needing no trust: its malformed nodes are echoed, not read
        event("fast path over malformed nodes")
        assert filtered[0] != "refused"
        return filtered, priorities
    event("requires trust" if expected["trust"] else "needs no trust")
    passing, failed = filtered
    assert passing == expected["passing"]
    assert set(failed) == expected["blocked"]
    assert all(reason for reason in failed.values())
    assert [host for host, _ in priorities] == [name for name, _ in expected["clean"]]
    for (_, score), (_, clean) in zip(priorities, expected["clean"], strict=True):
        assert 0 <= score <= 10
        assert (score >= 1) if clean else (score == 0)  # any failed check (even Warn-only) scores 0
    return filtered, priorities


def dumps_with_duplicate(args: dict[str, Any], where: str, key: str, junk: Any) -> bytes:
    """The JSON of `args` with an earlier member `key` (holding `junk`) repeated in the object at `where`."""
    pod = args.get("Pod") if isinstance(args.get("Pod"), dict) else {}
    target = {"args": args, "pod": pod, "spec": pod.get("spec")}.get(where)
    return dumps_with_duplicate_member(args, target, key, junk)


# --- properties ---------------------------------------------------------------------------------------


@FUZZ
@given(
    extender_args(),
    st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["args", "pod", "spec"]),
            st.sampled_from(["Pod", "NodeNames", "Nodes", "metadata", "spec", "nodeSelector", "containers"]),
            st.sampled_from([*JUNK[:12], {"trustgate.dev/trusted": "true"}, pod_object("dup")]),
        ),
    ),
)
def test_any_extender_args_are_answered_safely_and_agree_with_the_core(request_args, duplicate) -> None:
    args, _, _ = request_args
    body = json.dumps(args).encode() if duplicate is None else dumps_with_duplicate(args, *duplicate)

    check(args, body)  # with duplicates, the last member wins: the oracle reads `args` itself


RAW_BODIES = st.one_of(
    st.binary(max_size=256),
    st.text(max_size=128).map(str.encode),
    st.sampled_from([b"", b"null", b"[]", b"{}", b'{"Pod": {}}', b'{"pod": {}, "nodenames": []}', b"\xef\xbb\xbf{}"]),
    st.integers(1, 5000).map(lambda n: b'{"Pod":' + b"[" * n + b"]" * n + b', "NodeNames": []}'),
    st.integers(1, 3000).map(lambda n: b'{"Pod": {"metadata": ' + b'{"a":' * n + b"1" + b"}" * n + b"}}"),
    st.sampled_from(['"\\ud800"', '"\\udfff\\ud800"', "1e999", "-0", "123456789012345678901234567890"]).map(
        lambda v: b'{"Pod": {"metadata": {"name": ' + v.encode() + b'}}, "NodeNames": ["good"]}'
    ),
)


@FUZZ
@given(RAW_BODIES, st.sampled_from(["/filter", "/prioritize"]))
def test_arbitrary_bodies_never_get_a_5xx_or_a_traceback(body: bytes, path: str) -> None:
    status, reply = post(path, body)

    if status != 200:
        assert 400 <= status < 500 and reply["Error"] and reply["NodeNames"] is None and reply["Nodes"] is None
    try:
        args = loads(body)  # the extender's own parser: what it cannot parse must get a 400
    except WireError:
        assert status == 400
        return
    if isinstance(args, dict) and path == "/filter" and status == 200 and not reply["Error"]:
        # Accepted: then it was a request the oracle can judge (lowercase keys are Go's case folding).
        folded = {k.casefold(): v for k, v in args.items()}
        canonical = {"Pod": folded.get("pod"), "Nodes": folded.get("nodes"), "NodeNames": folded.get("nodenames")}
        assert oracle(canonical) is not None


IRRELEVANT = [
    ("args", "Extra", {"a": 1}),
    ("args", "Weight", 5),
    ("pod.metadata", "annotations", {"trustgate.dev/trusted": "true", "x": "y"}),
    ("pod.metadata", "resourceVersion", "42"),
    ("pod.metadata", "ownerReferences", [{"kind": "ReplicaSet", "name": "web-1"}]),
    ("pod.spec", "tolerations", [{"key": "trustgate.dev/trusted", "operator": "Exists"}]),
    ("pod.spec", "priority", 1000),
    ("pod.spec", "x-unknown", None),
    ("container", "resources", {"limits": {"cpu": "1"}}),
    ("container", "env", [{"name": "TRUSTED", "value": "true"}]),
    ("nodes", "kind", "NodeList"),
    ("nodes", "apiVersion", "v1"),
    ("node.metadata", "annotations", {"trustgate.dev/trusted": "true"}),
    ("node.status", "conditions", [{"type": "Ready", "status": "True"}]),
    ("node.status", "capacity", {"cpu": "64"}),
    ("node", "spec", {"taints": [{"key": "a", "effect": "NoSchedule"}]}),
]


def _add(args: dict[str, Any], where: str, key: str, value: Any) -> None:
    pod = args["Pod"]
    items = (args.get("Nodes") or {}).get("items") or []
    targets = {
        "args": [args],
        "pod.metadata": [pod["metadata"]],
        "pod.spec": [pod["spec"]],
        "container": pod["spec"]["containers"],
        "nodes": [args["Nodes"]] if args.get("Nodes") else [],
        "node.metadata": [i["metadata"] for i in items],
        "node.status": [i["status"] for i in items],
        "node": items,
    }[where]
    for target in targets:
        target[key] = copy.deepcopy(value)


@FUZZ
@given(extender_args(broken=False), st.lists(st.sampled_from(IRRELEVANT), min_size=1, max_size=4))
def test_fields_the_decision_does_not_read_never_change_it(request_args, additions) -> None:
    args, _, _ = request_args
    before = check(args, json.dumps(args).encode())

    args = copy.deepcopy(args)
    for where, key, value in additions:
        _add(args, where, key, value)
    after = check(args, json.dumps(args).encode())

    assert after == before
