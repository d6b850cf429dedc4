"""The extender's decisions: pure functions from (Snapshot, Pod, candidate nodes, now) to results.

No HTTP and no wire format here (see `wire`); the Flask views only decode, call these, and encode.

Each request takes one snapshot and one `now`, and every verdict comes from the core
(`Snapshot.evaluate`, `NodeTrust.failure_at`). The loop around it is the extender's hot path
(kube-scheduler may send 5,000 candidates per pod), so the judgements are shared where the core
cannot tell nodes apart (`_Judge`), and what a node's `NodeTrust` implies for every request is
kept from one request to the next (`NodeIndex`). Tests compare the result with a plain `evaluate`
of every node."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extender.wire import MAX_PRIORITY
from trustgate.core.labels import is_trust_label
from trustgate.core.node import NO_REPORT, NodeTrust
from trustgate.core.policy import PolicyError, TrustRequirement, pod_facts
from trustgate.core.reasons import reason_category
from trustgate.core.snapshot import Snapshot

NOT_SYNCED = "trustgate: the trust report cache has not synced yet (no decision is made before it has; retry)"
_PASS: tuple[str, bool] = ("", True)  # (blocking reason, clean): passes every check


class MalformedNode(ValueError):
    """A candidate that is not a usable v1.Node object."""


@dataclass(slots=True)
class FilterOutcome:
    """`passed` holds the candidates as given (names or Node objects). With `error`, nothing passes."""

    passed: list[Any] | None = None
    failed: dict[str, str] = field(default_factory=dict)  # node -> why (FailedAndUnresolvableNodes)
    error: str = ""
    requires_trust: bool = False


@dataclass(slots=True)
class PrioritizeOutcome:
    scores: list[tuple[str, int]]
    requires_trust: bool = False
    error: str = ""  # why every score is 0 (logged, never sent: prioritize errors are ignored anyway)


def requirement_of(snapshot: Snapshot, pod: Mapping[str, Any]) -> TrustRequirement | None:
    """The pod's trust requirement (None: it needs no trust). Raises `PolicyError` for a malformed pod."""
    return snapshot.requirement(pod_facts(pod))


def filter_nodes(
    snapshot: Snapshot,
    pod: Mapping[str, Any],
    candidates: list[Any],
    now: float,
    by_name: bool,
    index: NodeIndex | None = None,
) -> FilterOutcome:
    """Filter `candidates` (node names when `by_name`, else Node objects) for `pod` at `now`.

    An unsynced snapshot answers with an error for every pod, trust-requiring or not: until the
    TrustPolicies are listed we cannot tell whether a pod requires trust, and passing it unchecked
    would fail open. kube-scheduler retries the pod (`ignorable: false`). `index` carries per-node
    facts from one request to the next (a fresh one is used when None).
    """
    if not snapshot.synced:
        return FilterOutcome(error=NOT_SYNCED)
    try:
        requirement = requirement_of(snapshot, pod)
    except PolicyError as error:
        return FilterOutcome(error=f"trustgate: cannot determine the pod's trust requirement: {error}")
    if requirement is None:
        return FilterOutcome(passed=candidates)  # fast path: untouched
    judge = _Judge(snapshot, requirement, now, index if index is not None else NodeIndex())
    passed: list[Any] = []
    failed: dict[str, str] = {}
    keep = passed.append
    if by_name:
        passed, failed = judge.filter_names(candidates)
    else:
        for obj, node, indexed in _trusts(snapshot, candidates):
            reason = judge(node, indexed)[0]
            if reason:
                failed[node.name] = reason
            else:
                keep(obj)
    return FilterOutcome(passed=passed, failed=failed, requires_trust=True)


def prioritize_nodes(
    snapshot: Snapshot,
    pod: Mapping[str, Any],
    candidates: list[Any],
    now: float,
    by_name: bool,
    index: NodeIndex | None = None,
) -> PrioritizeOutcome:
    """Scores 0..10, preferring reports with more validity left.

    A node that passes every check of the pod's requirement scores
    `1 + round(9 * remaining / max_remaining)`, where `remaining` is the time its report has left and
    `max_remaining` the largest among those nodes: the freshest scores 10 and a passing node never
    scores below 1. Nodes with any failed check (including Warn-only ones) score 0. Pods that need no
    trust score 0 everywhere (no opinion, so the other scores decide), as do all nodes when the
    snapshot has not synced or the pod is malformed; the filter already refuses those.
    """
    names = candidates if by_name else [_name_of(obj) for obj in candidates]
    if not snapshot.synced:
        return PrioritizeOutcome([(name, 0) for name in names], error=NOT_SYNCED)
    try:
        requirement = requirement_of(snapshot, pod)
    except PolicyError as error:
        return PrioritizeOutcome([(name, 0) for name in names], error=f"malformed pod: {error}")
    if requirement is None:
        return PrioritizeOutcome([(name, 0) for name in names])
    judge = _Judge(snapshot, requirement, now, index if index is not None else NodeIndex())
    judged: Iterable[tuple[NodeTrust, bool]]
    if by_name:
        lookup = snapshot.nodes.get
        judged = ((lookup(name) or snapshot.node(name), name in snapshot.nodes) for name in candidates)
    else:
        judged = ((node, indexed) for _, node, indexed in _trusts(snapshot, candidates))
    remaining: list[tuple[str, float | None]] = []
    for node, indexed in judged:
        clean = judge(node, indexed)[1]
        left = max(0.0, node.report.expires_at - now) if clean and node.report is not None else None
        remaining.append((node.name, left))
    longest = max((left for _, left in remaining if left is not None), default=0.0)
    scores = [
        (name, 0 if left is None else 1 + (round((MAX_PRIORITY - 1) * left / longest) if longest > 0 else 0))
        for name, left in remaining
    ]
    return PrioritizeOutcome(scores, requires_trust=True)


def _trusts(snapshot: Snapshot, objects: Iterable[Mapping[str, Any]]) -> Iterable[tuple[Any, NodeTrust, bool]]:
    """Each Node object with its trust state (the cached report, bound to the object's identity) and
    whether that state is the snapshot's own object (it then has an entry in the `NodeIndex`)."""
    lookup = snapshot.nodes.get
    for obj in objects:
        name = _name_of(obj)
        try:
            node = snapshot.node_from_object(obj)
        except (AttributeError, TypeError, ValueError) as error:
            raise MalformedNode(f"Nodes.items has a malformed v1.Node {name!r} ({type(error).__name__})") from None
        yield obj, node, lookup(name) is node


def _name_of(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise MalformedNode("Nodes.items has a v1.Node without metadata.name")
    return name


class NodeIndex:
    """Per-process memo of what each `NodeTrust` object implies for every request, kept across requests.

    A snapshot's `NodeTrust` objects are immutable and survive from one snapshot to the next until
    their node or report changes (then the cache builds a new object). For each object the index
    keeps an `Entry`: its static failure, or else a small integer naming its trust class (trusted
    levels and signed asset tags) and the window in which its report is valid. Entries are keyed by
    object identity and checked with `is` (an entry holds its node, so the id cannot be reused
    meanwhile); a changed node simply gets a new entry, and the index starts over when it outgrows
    the cluster. Thread-safe under the GIL (a lost update only costs a recomputation).
    """

    MARGIN = 1e-3  # seconds: near a window edge, the core's own clock check decides

    def __init__(self, limit: int = 4096) -> None:
        self.entries: dict[int, Entry] = {}
        self._classes: dict[Any, int] = {}
        # Class numbers are never reused, not even after a reset: a request that still holds entries
        # from before a reset (its own or another thread's) must not mistake one class for another.
        self._numbers = itertools.count()
        self._limit = limit

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, node: NodeTrust, cluster_size: int) -> Entry:
        found = self.entries.get(id(node))
        if found is not None and found[0] is node:
            return found
        if len(self.entries) >= max(self._limit, 2 * cluster_size):
            self.entries, self._classes = {}, {}
        report = node.report
        if node.failure is not None or report is None:
            found = (node, node.failure or NO_REPORT, -1, math.inf, -math.inf)
        else:
            key = (node.trusted_levels, frozenset(report.asset_tags.items()))
            trust_class = self._classes.get(key)
            if trust_class is None:
                trust_class = self._classes[key] = next(self._numbers)
            start = report.issued_at if report.not_before is None else max(report.issued_at, report.not_before)
            found = (node, None, trust_class, start + self.MARGIN, report.expires_at - self.MARGIN)
        self.entries[id(node)] = found
        return found


# (node, static failure, trust class, start, end). With a static failure the window is empty. Without,
# the core finds the report valid at `now` when `start <= now + skew` and `now - skew < end` (its rules:
# now + skew >= iat and nbf, now < exp + skew); both bounds are shrunk by `NodeIndex.MARGIN`, so that
# rounding can never make this test disagree with the core's own: near an edge it fails and the core
# is asked.
Entry = tuple[NodeTrust, "str | None", int, float, float]
_PROBE = "\x00trustgate-failure\x00"


class _Judge:
    """`judge(node) -> (blocking reason or "", clean)` for one requirement at one instant.

    `blocking reason` joins the reasons of the Enforce sources that fail ("" when the node may be
    used; Warn and Audit failures never block). `clean` is true when no check fails at all.

    Verdicts come from `Snapshot.evaluate`, reused within the request where `evaluate` cannot tell
    nodes apart:
    - once a node's report is valid at `now`, `evaluate` reads only its trusted levels, its signed
      asset tags, the unsigned labels the pod's node constraints use and, for `matchFields`, its
      name: nodes that agree on those share one verdict (memoized by that key);
    - a node without a usable report (none, invalid, bound elsewhere, expired...) fails every source
      with that one message, or with the source's own policy error: its verdict is the verdict of a
      probe node whose message is a placeholder, with the placeholder replaced.
    The tests check both against a plain `evaluate` of every node.
    """

    __slots__ = (
        "cluster_size",
        "failing",
        "index",
        "label_keys",
        "memo",
        "now",
        "now_minus",
        "now_plus",
        "requirement",
        "simple",
        "skew",
        "snapshot",
        "use_name",
    )

    def __init__(self, snapshot: Snapshot, requirement: TrustRequirement, now: float, index: NodeIndex) -> None:
        self.snapshot, self.requirement, self.now, self.skew = snapshot, requirement, now, snapshot.skew
        self.now_plus, self.now_minus = now + self.skew, now - self.skew
        self.index, self.cluster_size = index, len(snapshot.nodes)
        self.memo: dict[Any, tuple[str, bool]] = {}
        constraints = requirement.constraints
        labels: set[str] = set()
        self.use_name = False
        if constraints is not None:
            if requirement.constraints_use_other_labels:
                used = constraints.keys()  # NodeConstraints.keys(): every label key it tests
                labels = {key for key in used if not is_trust_label(key)}
            self.use_name = any(term.fields for term in constraints.terms or ())
        self.label_keys = tuple(sorted(labels))
        self.simple = not (self.label_keys or self.use_name)
        self.failing = self.judge(NodeTrust(name="", failure=_PROBE))  # the verdict of any unusable report

    def __call__(self, node: NodeTrust, indexed: bool = True) -> tuple[str, bool]:
        """Judge `node`; `indexed` is false for NodeTrust objects that are not the snapshot's own."""
        if indexed:
            _, failure, trust_class, start, end = self.index.entry(node, self.cluster_size)
            if failure is not None:
                return self.without_report(failure)
            if start <= self.now_plus and self.now_minus < end:
                return self.valid(trust_class if self.simple else (trust_class, *self._extra(node)), node)
        base = node.failure_at(self.now, self.skew)
        if base is not None:
            return self.without_report(base)
        tags = frozenset(node.report.asset_tags.items()) if node.report is not None else frozenset()
        return self.valid(("unindexed", node.trusted_levels, tags, *self._extra(node)), node)

    def valid(self, key: Any, node: NodeTrust) -> tuple[str, bool]:
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = self.judge(node)
        return found

    def without_report(self, failure: str) -> tuple[str, bool]:
        reason, clean = self.failing
        return (reason.replace(_PROBE, failure), clean) if reason else self.failing

    def filter_names(self, names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        """`self(node)[0]` over the snapshot's nodes by name, with the common cases inlined: this loop
        runs once per candidate node, thousands of times per pod."""
        passed: list[str] = []
        failed: dict[str, str] = {}
        keep, lookup, entries, memo = passed.append, self.snapshot.nodes.get, self.index.entries, self.memo
        now_plus, now_minus = (self.now_plus, self.now_minus) if self.simple else (math.inf, -math.inf)
        failing = self.failing[0]
        for name in names:
            node = lookup(name)
            entry = entries.get(id(node))
            if entry is None or entry[0] is not node:
                reason = self(node)[0] if node is not None else self.unknown(name)
            elif entry[1] is not None:
                reason = failing and failing.replace(_PROBE, entry[1])
            elif entry[3] <= now_plus and now_minus < entry[4]:
                found = memo.get(entry[2])
                reason = found[0] if found is not None else self(node)[0]
            else:
                reason = self(node)[0]  # expired, not yet valid, at a window edge, or a complex requirement
            if reason:
                failed[name] = reason
            else:
                keep(name)
        return passed, failed

    def _extra(self, node: NodeTrust) -> tuple[Any, ...]:
        return (tuple(node.labels.get(k) for k in self.label_keys), node.name if self.use_name else None)

    def unknown(self, name: str) -> str:
        return self(self.snapshot.node(name), indexed=False)[0]

    def judge(self, node: NodeTrust) -> tuple[str, bool]:
        verdict = self.snapshot.evaluate(self.requirement, node, self.now)
        if verdict.passed:
            return _PASS
        enforced = verdict.enforced_failures
        return ("; ".join(verdict.reasons(enforced)) if enforced else "", False)


def categorize(failed: Mapping[str, str]) -> Counter[str]:
    """Failed nodes counted by the category of their first reason."""
    return Counter(reason_category(reason) for reason in failed.values())
