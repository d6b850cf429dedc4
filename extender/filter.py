"""The extender's decisions: pure functions from (Snapshot, Pod, candidate nodes, now) to results.

No HTTP and no wire format here (see `wire`); the Flask views only decode, call these, and encode.

Each request takes one snapshot and one `now`, and every verdict comes from the core
(`Snapshot.evaluate`, `NodeTrust.failure_at`). The loop around it is the extender's hot path
(kube-scheduler may send 5,000 candidates per pod), so the judgements are shared where the core
cannot tell nodes apart (`Judge`), and what a node's `NodeTrust` implies for every request is
kept from one request to the next (`NodeIndex`). Tests compare the result with a plain `evaluate`
of every node."""

from __future__ import annotations

import itertools
import math
import sys
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extender.wire import MAX_PRIORITY
from trustgate.core.labels import is_trust_label
from trustgate.core.node import NodeTrust
from trustgate.core.policy import Enforcement, PolicyError, TrustRequirement, pod_facts
from trustgate.core.reasons import NO_REPORT, Code, Reason
from trustgate.core.snapshot import Snapshot, UnknownNamespace

NOT_SYNCED = Reason(
    Code.NOT_READY, "the trust report cache has not synced yet (no decision is made before it has; retry)"
)
Blocking = tuple[Reason, ...]  # the failed checks of the Enforce sources: empty when the node may be used
Judged = tuple[Blocking, bool]  # (blocking, clean): clean when no check fails at all, Warn and Audit included
_PASS: Judged = ((), True)


class MalformedNode(ValueError):
    """A candidate that is not a usable v1.Node object."""


@dataclass(slots=True)
class FilterOutcome:
    """`passed` holds the candidates as given (names or Node objects). With `error`, nothing passes."""

    passed: list[Any] | None = None
    failed: dict[str, Blocking] = field(default_factory=dict)  # node -> why (FailedAndUnresolvableNodes)
    error: Reason | None = None
    requires_trust: bool = False


@dataclass(slots=True)
class PrioritizeOutcome:
    """`scores[i]` is the score of `hosts[i]`: the candidates' names, in their order."""

    hosts: list[str]
    scores: list[int]
    requires_trust: bool = False
    error: Reason | None = None  # why every score is 0 (logged, never sent: prioritize errors are ignored anyway)


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
    judge = _judge_for(snapshot, pod, now, index, "cannot determine the pod's trust requirement")
    if judge is None:
        return FilterOutcome(passed=candidates)  # fast path: untouched
    if not isinstance(judge, Judge):
        return FilterOutcome(error=judge)
    passed: list[Any] = []
    failed: dict[str, Blocking] = {}
    keep = passed.append
    if by_name:
        passed, failed = judge.filter_names(candidates)
    else:
        for obj, node, indexed in _trusts(snapshot, candidates):
            blocking = judge(node, indexed)[0]
            if blocking:
                failed[node.name] = blocking
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
    `1 + round(9 * remaining / max_remaining)` (`score_at`), where `remaining` is the time its report
    has left (at least 0) and `max_remaining` the largest among those nodes: the freshest scores 10
    and a passing node never scores below 1. Nodes with any failed check (including Warn-only ones)
    score 0. Pods that need no trust score 0 everywhere (no opinion, so the other scores decide), as
    do all nodes when the snapshot has not synced or the pod is malformed; the filter already refuses
    those. By name, the nodes are judged in one loop (`Judge.expiries`) and scored all at once
    (`scores`).
    """
    names = candidates if by_name else [_name_of(obj) for obj in candidates]
    judge = _judge_for(snapshot, pod, now, index, "malformed pod")
    if not isinstance(judge, Judge):  # no trust needed (None), or no decision (the Reason)
        return PrioritizeOutcome(names, [0] * len(names), error=judge)
    expiries: list[float]
    if by_name:
        expiries = judge.expiries(candidates)
    else:
        expiries = [
            node.report.expires_at if judge(node, indexed)[1] and node.report is not None else NOT_CLEAN
            for _, node, indexed in _trusts(snapshot, candidates)
        ]
    return PrioritizeOutcome(names, scores(expiries, now), requires_trust=True)


NOT_CLEAN = -math.inf  # the expiry `Judge.expiries` gives a node failing any check: it scores 0
_ANY_EXPIRY = -sys.float_info.max  # at or below every real expiry, above NOT_CLEAN


def score_at(exp: float, now: float, longest: float) -> int:
    """The score of a node passing every check whose report expires at `exp`, where `longest` (> 0) is
    the most validity left among such nodes: `1 + round(9 * max(0.0, exp - now) / longest)`."""
    return 1 + round((MAX_PRIORITY - 1) * (exp - now if exp > now else 0.0) / longest)


def scores(expiries: list[float], now: float) -> list[int]:
    """`prioritize_nodes`'s scores, from each node's report expiry (`NOT_CLEAN`: the node fails a check).

    Scoring thousands of nodes one `score_at` at a time costs as much as judging them, so: `score_at`
    is monotonic in `exp` (each float operation in it is), hence each score from 2 to 10 starts at one
    least expiry (`least_expiry`), and a node's score is the number of those bounds at or below its
    expiry (plus the floor that makes any clean node score at least 1): one `bisect` per node, at C
    speed. The most validity left, `max(0.0, exp - now)` over the clean nodes, is
    `max(0.0, max(exp) - now)`, float subtraction being monotonic too. The tests compare both ways."""
    latest = max(expiries, default=NOT_CLEAN)
    if latest == NOT_CLEAN:
        return [0] * len(expiries)
    longest = max(0.0, latest - now)
    bounds = [_ANY_EXPIRY]
    if longest > 0:  # else every clean node scores 1
        for score in range(2, MAX_PRIORITY + 1):
            bound = least_expiry(score, now, longest)
            if bound is None:  # not where the arithmetic puts it: score node by node
                return [0 if exp == NOT_CLEAN else score_at(exp, now, longest) for exp in expiries]
            bounds.append(bound)
    return list(map(bisect_right, itertools.repeat(bounds), expiries))


def least_expiry(score: int, now: float, longest: float, steps: int = 64) -> float | None:
    """The least float `exp` with `score_at(exp, now, longest) >= score`, searched one float at a time
    from where real-number arithmetic puts it (where `9 * left / longest` passes `score - 1.5`, and
    `round` goes up to `score - 1`): float rounding moves that edge by a float or two. None when it is
    not within `steps` floats of there (the caller then scores node by node)."""
    exp = now + (score - 1.5) * longest / (MAX_PRIORITY - 1)
    if score_at(exp, now, longest) >= score:
        for _ in range(steps):
            below = math.nextafter(exp, -math.inf)
            if score_at(below, now, longest) < score:
                return exp
            exp = below
    else:
        for _ in range(steps):
            exp = math.nextafter(exp, math.inf)
            if score_at(exp, now, longest) >= score:
                return exp
    return None


def _judge_for(
    snapshot: Snapshot, pod: Mapping[str, Any], now: float, index: NodeIndex | None, malformed: str
) -> Judge | Reason | None:
    """The `Judge` of the pod's requirement at `now` (over a fresh `NodeIndex` when `index` is None),
    shared by /filter and /prioritize; None when the pod needs no trust; the `Reason` no decision can
    be made for: an unsynced snapshot, a malformed pod (its error after `malformed`), a namespace the
    cache has not seen yet."""
    if not snapshot.synced:
        return NOT_SYNCED
    try:
        requirement = requirement_of(snapshot, pod)
    except PolicyError as error:
        return Reason(Code.POLICY_INVALID, f"{malformed}: {error}")
    except UnknownNamespace as error:
        return _unknown_namespace(error)
    if requirement is None:
        return None
    return Judge(snapshot, requirement, now, index if index is not None else NodeIndex())


def _unknown_namespace(error: UnknownNamespace) -> Reason:
    """A namespace created a moment ago: kube-scheduler retries the pod once the cache has seen it."""
    return Reason(Code.NOT_READY, f"{error}; no decision for its pods until it is (retry)")


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
    """Per-process memo of what each node's `NodeTrust` implies for every request, kept across requests.

    A snapshot's `NodeTrust` objects are immutable and survive from one snapshot to the next until
    their node or report changes (then the cache builds a new object). For each node the index keeps
    an `Entry` for its latest object, by name: a request finds it by the name it was given (the
    snapshot's own lookup of that name then reuses the string's hash) and uses it only if `entry.node
    is` the snapshot's object; a changed node simply gets a new entry. The index starts over when it
    outgrows the cluster (names of deleted nodes) or its trust classes do. Thread-safe under the GIL
    (a lost update only costs a recomputation).
    """

    MARGIN = 1e-3  # seconds: near a window edge, the core's own clock check decides

    def __init__(self, limit: int = 4096) -> None:
        self.entries: dict[str, Entry] = {}
        self._classes: dict[Any, int] = {}
        # Class numbers are never reused, not even after a reset: a request that still holds entries
        # from before a reset (its own or another thread's) must not mistake one class for another.
        self._numbers = itertools.count()
        self._limit = limit

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, node: NodeTrust, cluster_size: int) -> Entry:
        found = self.entries.get(node.name)
        if found is not None and found.node is node:
            return found
        bound = max(self._limit, 2 * cluster_size)
        if (found is None and len(self.entries) >= bound) or len(self._classes) >= bound:
            self.entries, self._classes = {}, {}
        report = node.report
        # Entry(node, failure, trust_class, start, end, expired_after, expires_at), by position: a cold
        # index makes thousands at once.
        if node.failure is not None or report is None:
            found = Entry(node, (node.failure or NO_REPORT,), -1, math.inf, -math.inf, math.inf, -math.inf)
        else:
            key = (node.trusted_levels, frozenset(report.asset_tags.items()))
            trust_class = self._classes.get(key)
            if trust_class is None:
                trust_class = self._classes[key] = next(self._numbers)
            start = report.issued_at if report.not_before is None else max(report.issued_at, report.not_before)
            exp = report.expires_at
            found = Entry(node, None, trust_class, start + self.MARGIN, exp - self.MARGIN, exp + self.MARGIN, exp)
        self.entries[node.name] = found
        return found


@dataclass(slots=True, eq=False)
class Entry:
    """What one `NodeTrust` implies for every request.

    With a static `failure` (no report, an invalid one, bound elsewhere), kept as the 1-tuple every
    request shares, the window is empty and the report never expires. Without, `trust_class` names the
    node's trusted levels and signed asset tags, and the core finds the report valid at `now` when
    `start <= now + skew` and `now - skew < end` (its rules: now + skew >= iat and nbf, now < exp +
    skew), and expired when `now - skew >= expired_after` (now >= exp + skew). Each bound is moved by
    `NodeIndex.MARGIN` to the side where its test fails, so that rounding can never make these tests
    disagree with the core's own: near an edge they fail and the core is asked. `expired` keeps the
    core's EXPIRED reason once it has given it (`(reason,)`): its message names only the report's
    `exp`, so past `expired_after` it is what the core would say again.
    """

    node: NodeTrust
    failure: Blocking | None
    trust_class: int
    start: float
    end: float
    expired_after: float
    expires_at: float  # the report's exp (prioritize scores by the validity left)
    expired: Blocking | None = None


class Judge:
    """`judge(node) -> (blocking, clean)` for one requirement at one instant (see `Judged`).

    Verdicts come from `Snapshot.evaluate`, reused within the request where `evaluate` cannot tell
    nodes apart:
    - once a node's report is valid at `now`, `evaluate` reads only its trusted levels, its signed
      asset tags, the unsigned labels the pod's node constraints use and, for `matchFields`, its
      name: nodes that agree on those share one verdict (memoized by that key);
    - a node without a usable report (none, invalid, bound elsewhere, expired...) fails every source
      with that one reason, or with the source's own policy error: `unusable` lists, per Enforce
      source, its policy error or None for "the node's own failure".
    The tests check both against a plain `evaluate` of every node.
    """

    __slots__ = ("index", "key_of", "memo", "now", "requirement", "skew", "snapshot", "unusable", "window")

    def __init__(self, snapshot: Snapshot, requirement: TrustRequirement, now: float, index: NodeIndex) -> None:
        self.snapshot, self.requirement, self.now, self.skew = snapshot, requirement, now, snapshot.skew
        self.index = index
        self.memo: dict[Any, Judged] = {}
        self.key_of = _VerdictKey.of(requirement)
        # Where the loops below may decide from the trust class alone: inside the report's validity window
        # for simple requirements, nowhere for keyed ones (unsigned labels, node names).
        self.window = (now + self.skew, now - self.skew) if self.key_of is None else (-math.inf, math.inf)
        enforced = [s for s in requirement.sources if s.enforcement is Enforcement.ENFORCE]
        self.unusable: tuple[Reason | None, ...] = tuple(s.policy_error for s in enforced)

    def __call__(self, node: NodeTrust, indexed: bool = True) -> Judged:
        """Judge `node`; `indexed` is false for NodeTrust objects that are not the snapshot's own."""
        if indexed:
            return self.indexed(self.index.entry(node, len(self.snapshot.nodes)))
        base = node.failure_at(self.now, self.skew)
        if base is not None:
            return self.without_report(base), False
        return self.valid_at_edge(node)

    def indexed(self, entry: Entry) -> Judged:
        """Judge the node of `entry` (the snapshot's own object)."""
        if entry.failure is not None:
            return self.without_report(entry.failure[0], entry.failure), False
        now, skew, node = self.now, self.skew, entry.node
        if entry.start <= now + skew and now - skew < entry.end:
            key = entry.trust_class if self.key_of is None else (entry.trust_class, *self.key_of(node))
            return self.valid(key, node)
        if entry.expired is not None and now - skew >= entry.expired_after:
            return self.without_report(entry.expired[0], entry.expired), False
        base = node.failure_at(now, skew)  # expired (asked the first time), not yet valid, or near an edge
        if base is None:
            return self.valid_at_edge(node)
        alone = None
        if base.code is Code.EXPIRED:  # its message names only the report's exp: the same at every later instant
            alone = entry.expired = (base,)
        return self.without_report(base, alone), False

    def valid_at_edge(self, node: NodeTrust) -> Judged:
        """A node the core finds valid where the index could not tell (or that has no entry)."""
        tags = frozenset(node.report.asset_tags.items()) if node.report is not None else frozenset()
        extra = () if self.key_of is None else self.key_of(node)
        return self.valid(("unindexed", node.trusted_levels, tags, *extra), node)

    def valid(self, key: Any, node: NodeTrust) -> Judged:
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = self.judge(node)
        return found

    def without_report(self, failure: Reason, alone: Blocking | None = None) -> Blocking:
        """What blocks a node whose report is unusable for `failure` (`alone`: `(failure,)`, if at hand)."""
        unusable = self.unusable
        if unusable == (None,):  # the common case: one Enforce source, a valid policy
            return alone if alone is not None else (failure,)
        return tuple(dict.fromkeys(failure if error is None else error for error in unusable))

    def filter_names(self, names: Iterable[str]) -> tuple[list[str], dict[str, Blocking]]:
        """`self(node)[0]` over the snapshot's nodes by name, with the common cases inlined: this loop
        runs once per candidate node, thousands of times per pod. A node's entry is found by its name
        and used when it is current (made for the snapshot's object, looked up with a subscript: on the
        snapshot's mappingproxy, `get` is a method call on the dict behind it, a subscript goes straight
        to it); inside the report's window the trust class's verdict decides (simple requirements only:
        see `window`); a static failure or an expiry decide by themselves; anything else is `indexed`,
        or judged `by_name`."""
        passed: list[str] = []
        failed: dict[str, Blocking] = {}
        keep, nodes, get = passed.append, self.snapshot.nodes, self.index.entries.get
        verdicts: dict[int, Blocking] = {}  # trust class -> what blocks its nodes inside their window
        now_plus, now_minus = self.window
        past = self.now - self.skew  # an expiry is checked at the real instant, for keyed requirements too
        alone = self.unusable == (None,)
        for name in names:
            entry = get(name)
            try:  # is it current?
                if entry is not None and entry.node is not nodes[name]:
                    entry = None
            except KeyError:  # the name of no node (any more)
                entry = None
            if entry is None:
                blocking = self.by_name(name)[0]
            elif entry.start <= now_plus and now_minus < entry.end:
                try:
                    blocking = verdicts[entry.trust_class]
                except KeyError:  # the first node of its class in this request
                    blocking = verdicts[entry.trust_class] = self.indexed(entry)[0]
            elif entry.failure is not None:
                blocking = entry.failure if alone else self.without_report(entry.failure[0])
            elif entry.expired is not None and past >= entry.expired_after:
                blocking = entry.expired if alone else self.without_report(entry.expired[0])
            else:  # not yet valid, near an edge, expired for the first time, or a keyed requirement
                blocking = self.indexed(entry)[0]
            if blocking:
                failed[name] = blocking
            else:
                keep(name)
        return passed, failed

    def expiries(self, names: Iterable[str]) -> list[float]:
        """For each name, its report's `exp` when `self(node)[1]` (the node passes every check, Warn and
        Audit included), else `NOT_CLEAN`: what /prioritize scores. Inlined like `filter_names`, whose
        cases it follows; a static failure or an expiry are never clean."""
        out: list[float] = []
        add, nodes, get = out.append, self.snapshot.nodes, self.index.entries.get
        cleanness: dict[int, bool] = {}  # trust class -> whether its nodes pass every check inside their window
        now_plus, now_minus = self.window
        past = self.now - self.skew
        for name in names:
            entry = get(name)
            try:  # as in `filter_names`
                if entry is not None and entry.node is not nodes[name]:
                    entry = None
            except KeyError:
                entry = None
            if entry is None:
                node, clean = self.snapshot.nodes.get(name), self.by_name(name)[1]
                add(node.report.expires_at if clean and node is not None and node.report is not None else NOT_CLEAN)
                continue
            if entry.start <= now_plus and now_minus < entry.end:
                try:
                    clean = cleanness[entry.trust_class]
                except KeyError:
                    clean = cleanness[entry.trust_class] = self.indexed(entry)[1]
            elif entry.failure is not None or past >= entry.expired_after:
                clean = False
            else:
                clean = self.indexed(entry)[1]
            add(entry.expires_at if clean else NOT_CLEAN)
        return out

    def by_name(self, name: str) -> Judged:
        """Judge a node that has no current entry (a cold index, a changed node), or an unknown name."""
        node = self.snapshot.nodes.get(name)
        if node is None:
            return self(self.snapshot.node(name), indexed=False)
        return self.indexed(self.index.entry(node, len(self.snapshot.nodes)))

    def judge(self, node: NodeTrust) -> Judged:
        verdict = self.snapshot.evaluate(self.requirement, node, self.now)
        if verdict.passed:
            return _PASS
        return tuple(verdict.reasons(verdict.enforced_failures)), False


@dataclass(frozen=True, slots=True)
class _VerdictKey:
    """What besides its trust class tells a node's verdict apart: the unsigned labels the pod's node
    constraints test, and its name when they use `matchFields`."""

    label_keys: tuple[str, ...]
    use_name: bool

    @staticmethod
    def of(requirement: TrustRequirement) -> Any:
        """A function node -> key parts, or None when the trust class alone decides."""
        constraints = requirement.constraints
        if constraints is None:
            return None
        labels: tuple[str, ...] = ()
        if requirement.constraints_use_other_labels:
            labels = tuple(sorted(k for k in constraints.keys() if not is_trust_label(k)))  # noqa: SIM118
        use_name = any(term.fields for term in constraints.terms or ())
        if not labels and not use_name:
            return None
        return _VerdictKey(labels, use_name).parts

    def parts(self, node: NodeTrust) -> tuple[Any, ...]:
        return (tuple(node.labels.get(k) for k in self.label_keys), node.name if self.use_name else None)


def count_codes(failed: Mapping[str, Blocking]) -> Counter[Code]:
    """Failed nodes counted by the code of their first reason."""
    return Counter(blocking[0].code for blocking in failed.values())
