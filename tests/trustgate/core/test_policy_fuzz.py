"""Property-based tests of policy evaluation over arbitrary Pods, TrustPolicies and Nodes (any JSON shape).

Invariants: parsing a pod raises nothing but PolicyError; parsing a TrustPolicy raises nothing (a malformed
one fails closed); building a snapshot and evaluating never raise; fields that trust decisions do not read
never change a verdict; a trust-requiring pod is blocked on every node without a valid report whenever a
source of its requirement is Enforce.

Examples per target: TRUSTGATE_FUZZ_EXAMPLES (default 10,000); a long run is a bigger value.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from devkit.factories import Issuer, node_object
from trustgate.core.labels import ASSET_LABEL_PREFIX, TRUSTED_LABEL
from trustgate.core.node import NodeTrust
from trustgate.core.policy import (
    Enforcement,
    PodFacts,
    PolicyError,
    TrustPolicy,
    Verdict,
    evaluate,
    pod_facts,
)
from trustgate.core.reasons import NO_REPORT, UNKNOWN_NODE, Reason
from trustgate.core.report import LEVELS, ReportVerifier
from trustgate.core.snapshot import Snapshot, StaticCluster, UnknownNamespace

from ...fuzzing import FUZZ
from ..craft import NOW, issuer_for

LATER = NOW + 60
COUNTRY = ASSET_LABEL_PREFIX + "country"
TENANT = ASSET_LABEL_PREFIX + "tenant"
NODE_NAMES = ("n1", "n2", "n3", "n4", "n5", "n6")


def es() -> Issuer:
    return issuer_for("ES256")


@cache
def verifier() -> ReportVerifier:
    """One verifier for the module: its cache makes each pooled token's verification a dictionary lookup."""
    return es().verifier()


@cache
def reports() -> dict[str, str]:
    """Node name -> report: n1..n3 valid (differing levels and tags), n4 expired, n5 another node's, n6 garbage."""
    issuer = es()
    return {
        "n1": issuer.token("n1", now=NOW, asset_tags={"country": "US", "tenant": "acme"}),
        "n2": issuer.token("n2", now=NOW, asset_tags={"country": "EU"}, levels={"kernel": False}),
        "n3": issuer.token("n3", now=NOW, levels={"runtime": False, "boot": False}),
        "n4": issuer.token("n4", now=NOW - 7200, ttl=600),
        "n5": issuer.token("n1", now=NOW),
        "n6": "eyJhbGciOiJub25lIn0.e30.c2ln",
    }


# --- strategies ---------------------------------------------------------------------------------------
#
# Built from pools of parts (valid ones and broken ones) rather than random documents: the validators read
# types at fixed places, so a broken part of each kind at each place finds what random JSON would, at a
# fraction of the cost of drawing it; the combinations still number in the millions.

ABSENT = object()  # a member left out
JUNK = [None, True, False, 0, -1, 2**64, 1.5, "", "x", "true", "\x00", [], [None], ["a"], [[]], {}, {"a": 1}]
JUNK += [{"key": 1}, {"matchExpressions": 1}, [{"key": []}], {"nodeSelectorTerms": "x"}, "a" * 300]
junk = st.sampled_from(JUNK)

LABEL_SETS = [
    {},
    {"app": "web"},
    {"app": "db", "tier": "x"},
    {TRUSTED_LABEL: "true"},
    {TRUSTED_LABEL: "false", "zone": "a"},
    {COUNTRY: "US"},
    {COUNTRY: "EU", TENANT: "acme"},
    {TRUSTED_LABEL: "true", COUNTRY: "US", "kubernetes.io/hostname": "n1"},
    {"\u00e9": "\u00e9", "": ""},
]
labels = st.sampled_from(LABEL_SETS)
BAD_LABEL_SETS = [{"app": 1}, {"app": None}, {"app": ["web"]}, "app=web", ["app"], 7]

EXPRESSIONS = [
    {"key": key, "operator": op, "values": values} if values else {"key": key, "operator": op}
    for key in (TRUSTED_LABEL, COUNTRY, TENANT, "zone", "kubernetes.io/hostname")
    for op, values in (
        ("In", ["true"]),
        ("In", ["US", "EU"]),
        ("NotIn", ["EU"]),
        ("NotIn", ["true"]),
        ("Exists", None),
        ("DoesNotExist", None),
        ("Gt", ["1"]),
        ("Lt", ["10"]),
    )
]
BAD_EXPRESSIONS = [
    {"key": "", "operator": "In", "values": ["a"]},
    {"key": 1, "operator": "In", "values": ["a"]},
    {"key": "a", "operator": "Bogus", "values": ["a"]},
    {"key": "a", "operator": "in", "values": ["a"]},
    {"key": "a", "operator": "In"},
    {"key": "a", "operator": "In", "values": "US"},
    {"key": "a", "operator": "In", "values": [1]},
    {"key": "a", "operator": "Exists", "values": ["x"]},
    {"key": "a", "operator": "Gt", "values": ["1", "2"]},
    {"key": "a", "operator": None},
    *JUNK,
]
FIELDS = [
    {"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]},
    {"key": "metadata.name", "operator": "NotIn", "values": ["n3"]},
]
BAD_FIELDS = [
    {"key": "metadata.uid", "operator": "In", "values": ["x"]},
    {"key": "metadata.name", "operator": "Exists"},
]


def _term(expressions: Any, fields: Any) -> dict[str, Any]:
    term: dict[str, Any] = {"matchExpressions": expressions}
    if fields is not ABSENT:
        term["matchFields"] = fields
    return term


def _affinity(terms: Any) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def _valid_affinities(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Required node affinities: 1-2 terms ORed, 0-3 expressions ANDed, sometimes a metadata.name field."""
    affinities = []
    for _ in range(count):
        terms = [
            _term(
                rng.sample(EXPRESSIONS, rng.randint(0, 3)),
                rng.choice([ABSENT, ABSENT, ABSENT, [FIELDS[0]], [FIELDS[1]]]),
            )
            for _ in range(rng.randint(1, 2))
        ]
        affinities.append(_affinity(terms))
    return affinities


VALID_AFFINITIES = _valid_affinities(random.Random(20261126), 400)
BROKEN_AFFINITIES = [
    *(_affinity([_term([EXPRESSIONS[0], bad], ABSENT)]) for bad in BAD_EXPRESSIONS),
    *(_affinity([_term([EXPRESSIONS[1]], bad)]) for bad in [BAD_FIELDS[:1], BAD_FIELDS[1:], *JUNK[1:]]),
    *(
        _affinity(
            [
                VALID_AFFINITIES[0]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                    "nodeSelectorTerms"
                ][0],
                j,
            ]
        )
        for j in JUNK
    ),
    *(_affinity([_term(j, ABSENT)]) for j in JUNK),
    *(_affinity(j) for j in JUNK),
    *({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": j}} for j in JUNK),
    *({"nodeAffinity": j} for j in JUNK),
    *JUNK,
]


_SCATTER = 2**61 - 1  # a prime larger than any pool: coprime to every product of pool sizes


def indexed(build: Callable[..., Any], **pools: Sequence[Any]) -> st.SearchStrategy[Any]:
    """`build(**parts)` with one part from each pool, chosen by a single integer index into their product.

    One draw per object instead of one per part: drawing is what these properties spend their time on.
    Hypothesis favours small integers, so the index is scattered over the product first (multiplying by a
    prime coprime to its size is a bijection); 0 still maps to 0, each pool's first (simplest) entry."""
    names = list(pools)
    sizes = [len(pools[name]) for name in names]
    total = math.prod(sizes)

    def decode(index: int) -> Any:
        index = index * _SCATTER % total
        parts = {}
        for name, size in zip(names, sizes, strict=True):
            index, position = divmod(index, size)
            parts[name] = pools[name][position]
        return build(**parts)

    return st.integers(0, total - 1).map(decode)


IMAGES = ["nginx:1.27", "registry.example/secure/app:1", "REGISTRY.EXAMPLE/secure/app", "docker.io/library/redis", ""]
CONTAINER_LISTS = [
    [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    for images in (
        [IMAGES[0]],
        [IMAGES[1]],
        [IMAGES[0], IMAGES[2]],
        [IMAGES[3]],
        [IMAGES[4], IMAGES[0]],
        [],
    )
] + [[{"name": "c0"}], [{"name": "c0", "image": 5}]]
BAD_CONTAINER_LISTS = [[None], ["nginx"], [[]], {"name": "c0"}, "nginx", 1]


def _pod(
    name: str,
    namespace: str,
    pod_labels: Any,
    containers: Any,
    init: Any,
    ephemeral: Any,
    node_selector: Any,
    pod_affinity: Any,
    node_name: Any,
    patch: Any,
) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace, "labels": pod_labels}
    spec: dict[str, Any] = {"containers": containers}
    for key, value in (
        ("initContainers", init),
        ("ephemeralContainers", ephemeral),
        ("nodeSelector", node_selector),
        ("affinity", pod_affinity),
        ("nodeName", node_name),
    ):
        if value is not ABSENT:
            spec[key] = value
    pod: Any = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    if patch is not None:  # one more broken part, anywhere: pod, metadata or spec level
        where, key, value = patch
        if where == "pod" and key == "":
            return value
        {"pod": pod, "metadata": metadata, "spec": spec}[where][key] = value
    return pod


PATCH_KEYS = {
    "pod": ("metadata", "spec", ""),
    "metadata": ("labels", "namespace", "name"),
    "spec": ("nodeSelector", "affinity", "containers", "initContainers", "ephemeralContainers", "nodeName"),
}
PATCHES = [(where, key, value) for where, keys in PATCH_KEYS.items() for key in keys for value in JUNK]


def pods(wellformed: bool = False) -> st.SearchStrategy[Any]:
    """Pods whose parts are drawn from the pools; unless `wellformed`, half of them have broken parts."""
    return _pods(True) if wellformed else st.one_of(_pods(True), _pods(False))


def _pods(wellformed: bool) -> st.SearchStrategy[Any]:
    optional = [ABSENT, ABSENT]
    broken = not wellformed
    return indexed(
        _pod,
        name=["web", "db", ""],
        namespace=["default", "secure", "kube-public", ""],
        pod_labels=LABEL_SETS * 3 + BAD_LABEL_SETS[:3] * broken,
        containers=CONTAINER_LISTS * 4 + BAD_CONTAINER_LISTS * broken,
        init=[*optional, *CONTAINER_LISTS] + [None, 1] * broken,
        ephemeral=[*optional * 3, *CONTAINER_LISTS[:3]] + BAD_CONTAINER_LISTS[:2] * broken,
        node_selector=[*optional, *LABEL_SETS] * 3 + BAD_LABEL_SETS * broken,
        pod_affinity=[ABSENT] * len(VALID_AFFINITIES) + VALID_AFFINITIES + BROKEN_AFFINITIES * broken,
        node_name=[ABSENT, "n1", "n4"] + [5, None, ["n1"]] * broken,
        patch=[None] * len(PATCHES) * 3 + PATCHES * broken if broken else [None],
    )


SELECTORS = [
    None,
    {},
    {"matchLabels": {"app": "web"}},
    {"matchLabels": {"trust": "required"}},
    {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]},
    {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
    {"matchLabels": {"kubernetes.io/metadata.name": "default"}},
]
BAD_SELECTORS = [{"matchLabels": {"app": 1}}, {"matchLabels": ["app"]}, {"matchExpressions": "x"}, *BAD_EXPRESSIONS[:5]]
POLICY_MEMBERS = {
    "namespaceSelector": (SELECTORS, BAD_SELECTORS + JUNK[1:]),
    "podSelector": (SELECTORS, BAD_SELECTORS + JUNK[1:]),
    "encryptedImages": ([None, [], ["registry.example/secure/*"], ["redis"], ["*"]], [[""], [1], "x", {"a": 1}]),
    "requiredLevels": (
        [None, ["kernel"], ["firmware", "boot"], list(LEVELS), ["runtime"]],
        [[], ["bios"], "kernel", [["kernel"]], [{"a": 1}], 1, True],
    ),
    "requiredAssetTags": (
        [None, {}, {"country": "US"}, {"tenant": "acme", "country": "EU"}],
        [{"country": 1}, ["c"], "x"],
    ),
    "enforcement": ([None, "Enforce", "Warn", "Audit", "Warn", "Audit"], ["enforce", "Block", 1, ["Warn"], {}]),
}


def _policy(shape: Any, name: Any, **members: Any) -> Any:
    spec = {key: value for key, value in members.items() if value is not ABSENT}
    resource: Any = {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustPolicy", "metadata": {"name": name}}
    resource["spec"] = spec
    if shape is not None:  # a broken object: spec, metadata or the whole resource
        where, value = shape
        if where == "resource":
            return value
        resource[where] = value
    return resource


def policy_resources(wellformed: bool = False) -> st.SearchStrategy[Any]:
    """TrustPolicies from the pools; unless `wellformed`, half of them have broken members (or are broken)."""
    return _policy_resources(True) if wellformed else st.one_of(_policy_resources(True), _policy_resources(False))


def _policy_resources(wellformed: bool) -> st.SearchStrategy[Any]:
    members = {
        key: [ABSENT, ABSENT, *good] * 4 + ([] if wellformed else bad) for key, (good, bad) in POLICY_MEMBERS.items()
    }
    shapes = [(where, value) for where in ("spec", "metadata", "resource") for value in JUNK]
    return indexed(
        _policy,
        shape=[None] if wellformed else [None] * len(shapes) * 4 + shapes,
        name=["p", "secure-images"] if wellformed else ["p", "secure-images", "", 7],
        **members,
    )


def _node(name: str, node_labels: Any, shape: Any) -> Any:
    node = node_object(name, labels=node_labels or None)
    if shape is not None:
        path, value = shape
        if path == "node":
            return value
        *parents, last = path.split(".")
        target = node
        for part in parents:
            target = target[part]
        target[last] = value
    return node


NODE_PATHS = ("node", "metadata", "status", "metadata.name", "metadata.labels", "status.nodeInfo")
NODE_PATHS += ("status.nodeInfo.systemUUID", "status.nodeInfo.bootID")
NODE_SHAPES = [(path, value) for path in NODE_PATHS for value in JUNK]


def node_resources(wellformed: bool = False) -> st.SearchStrategy[Any]:
    """A Node named n1..n6 (see `reports`), with labels that may claim trust; unless `wellformed`, odd shapes."""
    shapes = [None] if wellformed else [None] * len(NODE_SHAPES) + NODE_SHAPES
    return indexed(_node, name=NODE_NAMES, node_labels=LABEL_SETS, shape=shapes)


namespaces = st.builds(
    lambda default: {"default": default, "secure": {"trust": "required"}, "kube-public": {}, "": {}}, labels
)


# --- helpers ------------------------------------------------------------------------------------------


@cache
def trusted_node() -> NodeTrust:
    """n1 with its valid report: every level trusted."""
    node = snapshot_of([node_object("n1")], [], {}).node("n1")
    assert node.failure_at(LATER, 30) is None and node.trusted_levels == set(LEVELS)
    return node


def facts_or_none(pod: Any) -> PodFacts | None:
    """`pod_facts`, or None when it refuses the pod with a PolicyError (anything else fails the test)."""
    try:
        facts = pod_facts(pod)
    except PolicyError as error:
        assert str(error)
        event("PolicyError")
        return None
    event("parsed")
    return facts


def snapshot_of(nodes: list[Any], policies: list[Any], spaces: dict[str, Any]) -> Snapshot:
    tokens = reports()
    return Snapshot.build(verifier(), nodes=nodes, reports=tokens, policies=policies, namespaces=spaces)


def verdict_summary(verdict: Verdict | None) -> Any:
    if verdict is None:
        return None
    return [(f.source.name, f.source.enforcement, f.reasons) for f in verdict.failures]


def decisions(snapshot: Snapshot, pod: dict[str, Any]) -> list[Any]:
    """Per node of the snapshot (and an unknown one): the requirement's sources and the verdict."""
    requirement = snapshot.requirement(pod_facts(pod))
    if requirement is None:
        return [None]
    out: list[Any] = [[(s.name, s.enforcement, sorted(s.levels), dict(s.asset_tags)) for s in requirement.sources]]
    for name in [*sorted(snapshot.nodes), "unknown"]:
        out.append((name, verdict_summary(snapshot.evaluate(requirement, snapshot.node(name), LATER))))
    return out


# --- properties ---------------------------------------------------------------------------------------


@FUZZ
@given(pods(), st.lists(policy_resources(), max_size=2), namespaces)
def test_pod_facts_parses_or_raises_policy_error_and_requirements_never_raise(pod, policies, spaces) -> None:
    facts = facts_or_none(pod)
    parsed = [TrustPolicy.from_resource(p) for p in policies]
    if facts is not None:
        assert all(isinstance(image, str) for image in facts.images)
        snapshot = Snapshot(verifier(), policies=tuple(parsed), namespaces=spaces)
        try:
            requirement = snapshot.requirement(facts)
        except UnknownNamespace:  # the one refusal: a namespace the snapshot has not seen, read live by adapters
            assert facts.namespace not in spaces and snapshot.selects_by_namespace
            return
        if any(p.error and not p.selects_nothing and p.selects(facts, spaces.get(facts.namespace, {})) for p in parsed):
            assert requirement is not None and requirement.enforced  # what a broken policy selects, it blocks


@FUZZ
@given(policy_resources(), pods(wellformed=True))
def test_a_trust_policy_is_always_parsed_and_a_malformed_one_fails_closed(resource: Any, pod) -> None:
    policy = TrustPolicy.from_resource(resource)

    assert isinstance(policy, TrustPolicy) and isinstance(policy.name, str)
    if not isinstance(resource, dict):
        assert policy.error is not None  # not even an object: invalid, never a select-all default
    facts = pod_facts(pod)
    if policy.error is not None:
        event("invalid policy")
        assert policy.error.message.startswith(f"TrustPolicy {policy.name} is invalid: ")
        assert policy.enforcement is Enforcement.ENFORCE  # its text cannot be trusted
        for labels in ({}, {"any": "labels"}):
            selected = policy.selects(facts, labels)
            readable = _readable_selection(resource)
            if readable is None:
                assert not selected  # no readable selector: a typo never selects the whole cluster
                continue
            assert selected == readable.selects(facts, labels)  # exactly what its readable parts select
            if selected:
                requirement = Snapshot(verifier(), policies=(policy,)).requirement(facts, labels)
                assert requirement is not None and requirement.enforced
                verdict = evaluate(requirement, trusted_node(), LATER, 30)
                assert verdict.blocked and policy.error in verdict.reasons()
    else:
        event("valid policy")
        assert policy.required_levels and policy.required_levels <= set(LEVELS)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in policy.required_asset_tags.items())
        assert isinstance(policy.enforcement, Enforcement)


@FUZZ
@given(
    st.lists(node_resources(), max_size=4),
    st.lists(policy_resources(), max_size=2),
    namespaces,
    pods(),
    st.lists(pods(), max_size=1),
    node_resources(),
)
def test_building_a_snapshot_and_evaluating_never_raise(nodes, policies, spaces, pod, others, extra_node) -> None:
    snapshot = snapshot_of(nodes, policies, spaces)
    StaticCluster(snapshot, pods=[pod, *others])
    facts = facts_or_none(pod)
    if facts is None:
        return
    try:
        requirement = snapshot.requirement(facts)
    except UnknownNamespace:  # the documented refusal to guess: the adapters then read the namespace live
        assert facts.namespace not in snapshot.namespaces and snapshot.selects_by_namespace
        requirement = snapshot.requirement(facts, namespace_labels={})
    candidates = [*snapshot.nodes.values(), snapshot.node("absent")]
    try:  # a Node given by a caller (the extender's non-cache mode): assessed, or refused as malformed
        candidates.append(snapshot.node_from_object(extra_node))
    except ValueError as error:
        assert str(error).startswith("malformed v1.Node")
    for node in candidates:
        assert isinstance(node, NodeTrust)
        if requirement is None:
            continue
        verdict = snapshot.evaluate(requirement, node, LATER)
        assert all(isinstance(r, Reason) and r.message for r in verdict.reasons())
        if node.failure_at(LATER, snapshot.skew) is not None:
            assert not verdict.passed  # a node that cannot be trusted never passes a trust-requiring pod
            assert verdict.blocked == requirement.enforced


IRRELEVANT_KEYS = st.sampled_from(["x-extra", "priority", "dnsPolicy", "tolerations", "unknownField", "\u00e9"])
ANNOTATIONS = st.sampled_from([{}, {"a": "b"}, {TRUSTED_LABEL: "true"}, {COUNTRY: "US", "note": ""}])


@FUZZ
@given(
    pods(wellformed=True),
    st.lists(policy_resources(wellformed=True), max_size=2),
    st.lists(node_resources(wellformed=True), min_size=1, max_size=3),
    namespaces,
    st.lists(
        st.tuples(st.sampled_from(["pod.metadata", "pod.spec", "container", "policy", "node"]), IRRELEVANT_KEYS, junk),
        min_size=1,
        max_size=4,
    ),
    ANNOTATIONS,
)
def test_fields_that_decisions_do_not_read_never_change_a_verdict(
    pod, policies, nodes, spaces, additions, notes
) -> None:
    before = decisions(snapshot_of(nodes, policies, spaces), pod)

    pod, policies, nodes = copy.deepcopy(pod), copy.deepcopy(policies), copy.deepcopy(nodes)
    pod["metadata"]["annotations"] = notes
    for node in nodes:
        node["metadata"]["annotations"] = dict(notes)
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    for where, key, value in additions:
        if where == "pod.metadata":
            pod["metadata"][key] = value
        elif where == "pod.spec":
            pod["spec"][key] = value
        elif where == "container":
            for container in pod["spec"]["containers"]:
                container[key] = value
        elif where == "policy":
            for policy in policies:
                policy["spec"][key] = value
                policy["metadata"]["annotations"] = dict(notes)
        else:
            for node in nodes:
                node["status"][key] = value
                node["metadata"][key] = value
    after = decisions(snapshot_of(nodes, policies, spaces), pod)

    event("requires trust" if before != [None] else "no trust needed")
    assert after == before


@FUZZ
@given(pods(wellformed=True), st.lists(policy_resources(wellformed=True), max_size=3), namespaces, labels)
def test_a_trust_requiring_pod_is_blocked_on_every_node_without_a_valid_report(pod, policies, spaces, claimed) -> None:
    """No report, an expired one, another node's, garbage, an unknown node: blocked whenever a source enforces."""
    claimed_trust = {**claimed, TRUSTED_LABEL: "true", COUNTRY: "US"}  # labels that lie: they gain nothing
    nodes = [node_object(name, labels=claimed_trust) for name in ("n4", "n5", "n6", "bare")]
    snapshot = snapshot_of(nodes, policies, spaces)
    requirement = snapshot.requirement(pod_facts(pod))
    if requirement is None:
        event("no trust needed")
        return
    event("enforced" if requirement.enforced else "warn/audit only")
    for name in ("n4", "n5", "n6", "bare", "absent"):
        node = snapshot.node(name)
        assert node.failure_at(LATER, snapshot.skew) is not None
        verdict = snapshot.evaluate(requirement, node, LATER)
        assert not verdict.passed
        assert verdict.blocked == requirement.enforced
    assert snapshot.node("bare").failure == NO_REPORT
    assert snapshot.node("absent").failure == UNKNOWN_NODE


def _readable_selection(resource: Any) -> TrustPolicy | None:
    """The policy made of `resource`'s readable selection parts only (None: it gives none it can read)."""
    spec = resource.get("spec") if isinstance(resource, dict) else None
    if not isinstance(spec, dict):
        return None
    kept = {}
    for key in ("namespaceSelector", "podSelector", "encryptedImages"):
        if spec.get(key) is not None and TrustPolicy.from_resource({"spec": {key: spec[key]}}).error is None:
            kept[key] = spec[key]
    given = [key for key in ("namespaceSelector", "podSelector", "encryptedImages") if spec.get(key) is not None]
    if given and not kept:
        return None
    return TrustPolicy.from_resource({"metadata": {"name": "readable"}, "spec": kept})


def _softened(resource: dict[str, Any], enforcement: str) -> dict[str, Any]:
    softened = copy.deepcopy(resource)
    softened["spec"]["enforcement"] = enforcement
    softened["metadata"]["name"] = "added"
    return softened


@FUZZ
@given(
    pods(wellformed=True),
    st.lists(policy_resources(wellformed=True), max_size=3),
    policy_resources(wellformed=True),
    st.sampled_from(["Warn", "Audit"]),
    st.lists(node_resources(wellformed=True), min_size=1, max_size=4),
    namespaces,
)
def test_adding_a_warn_or_audit_policy_never_turns_a_refusal_into_an_allow(
    pod, policies, extra, enforcement, nodes, spaces
) -> None:
    facts = pod_facts(pod)
    before = snapshot_of(nodes, policies, spaces)
    after = snapshot_of(nodes, [*policies, _softened(extra, enforcement)], spaces)
    old, new = before.requirement(facts), after.requirement(facts)
    if old is None:
        event("needed no trust before")
        return
    assert new is not None
    for name in [*sorted(before.nodes), "absent"]:
        was = before.evaluate(old, before.node(name), LATER)
        now = after.evaluate(new, after.node(name), LATER)
        if was.blocked:
            event("refused before")
            assert now.blocked, (name, was, now)
            assert set(was.reasons(was.enforced_failures)) <= set(now.reasons(now.enforced_failures))
