"""The trust of running pods: does the node of each placed, trust-requiring pod still satisfy it?

Admission judges a pod once, when it is placed. Its node's report can expire, be revoked or start
failing a level afterwards; `judge` takes a placed pod again against the current snapshot, names
every failed check, and says whether a policy that selects it asks for eviction. Pure: the pod
trust controller feeds it from the watches and publishes what it says.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trustgate.core.policy import (
    Enforcement,
    OnTrustLost,
    PodFacts,
    PolicyError,
    TrustPolicy,
    TrustRequirement,
    Verdict,
    pod_facts,
)
from trustgate.core.reasons import Code, Reason
from trustgate.core.snapshot import Snapshot, UnknownNamespace

# Failures that are not the node's: a policy that cannot be read, a node the cache does not know (deleted:
# the pod garbage collector removes its pods). They are reported, and never evict anything.
_NOT_THE_NODES = frozenset({Code.POLICY_INVALID, Code.UNKNOWN_NODE})


class Result(enum.StrEnum):
    """A PolicyReport result (wgpolicyk8s.io): Enforce failures fail, Warn and Audit ones warn."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class RunningPod:
    """What trust decisions keep of a pod bound to a node."""

    facts: PodFacts
    uid: str
    terminating: bool = False  # being deleted (evicted already): still on its node, never evicted again

    @property
    def key(self) -> tuple[str, str]:
        return (self.facts.namespace, self.facts.name)


def running_pod(pod: Mapping[str, Any]) -> RunningPod:
    """A bound `v1.Pod` (as JSON); raises `PolicyError` when its node constraints cannot be read."""
    facts = pod_facts(pod)
    if not facts.node_name:
        raise PolicyError("pod is not bound to a node")
    metadata = pod.get("metadata") or {}
    uid = metadata.get("uid")
    return RunningPod(
        facts=facts, uid=uid if isinstance(uid, str) else "", terminating=bool(metadata.get("deletionTimestamp"))
    )


@dataclass(frozen=True)
class PodTrust:
    """One pod's trust on its node, as the namespace's PolicyReport shows it."""

    namespace: str
    name: str
    uid: str
    node: str
    result: Result
    sources: tuple[str, ...]  # every source that requires trust of the pod
    failing: tuple[str, ...] = ()  # the sources whose checks fail
    reasons: tuple[Reason, ...] = ()
    enforcement: str = ""  # the strongest enforcement among the failing sources
    evict: bool = False  # an Enforce TrustPolicy with onTrustLost: Evict fails on the node's own trust

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class Required:
    """A running pod's requirement and what it was worked out from. A namespace is judged again on every
    change of one of its pods, and most of its pods are as they were: their requirement is kept while the
    pod, the policies and the namespace's labels stay the same objects."""

    pod: RunningPod
    policies: tuple[TrustPolicy, ...]
    labels: Mapping[str, str] | None
    requirement: TrustRequirement | None


def required(snapshot: Snapshot, pod: RunningPod, kept: Required | None = None) -> Required:
    """`pod`'s requirement under `snapshot`, `kept` when it still holds; raises `UnknownNamespace`."""
    labels = snapshot.namespaces.get(pod.facts.namespace)
    if kept is not None and kept.pod is pod and kept.labels is labels and kept.policies == snapshot.policies:
        return kept
    return Required(pod, snapshot.policies, labels, snapshot.requirement(pod.facts))


def judge(snapshot: Snapshot, pod: RunningPod, now: float, kept: Required | None = None) -> PodTrust | None:
    """`pod`'s trust on its node at `now`; None when it requires none. The snapshot must be synced.
    `kept`: the pod's `Required` from an earlier judgement, reused when it still holds."""
    facts = pod.facts
    try:
        requirement = required(snapshot, pod, kept).requirement
    except UnknownNamespace as error:
        reason = Reason(Code.NOT_READY, str(error))
        return _trust(pod, Result.ERROR, (), (), (reason,))
    if requirement is None:
        return None
    verdict = snapshot.evaluate(requirement, snapshot.node(facts.node_name), now)
    sources = requirement.policies
    if verdict.passed:
        return _trust(pod, Result.PASS, sources, (), ())
    return _failed(pod, sources, verdict)


def _failed(pod: RunningPod, sources: tuple[str, ...], verdict: Verdict) -> PodTrust:
    reasons = tuple(verdict.reasons())
    failing = tuple(dict.fromkeys(f.source.name for f in verdict.failures))
    enforced = verdict.enforced_failures
    if all(r.code is Code.POLICY_INVALID for r in reasons):
        result = Result.ERROR
    else:
        result = Result.FAIL if enforced else Result.WARN
    evict = not pod.terminating and any(
        f.source.on_trust_lost is OnTrustLost.EVICT
        and f.source.enforcement is Enforcement.ENFORCE
        and f.source.policy_error is None
        and all(r.code not in _NOT_THE_NODES for r in f.reasons)
        for f in verdict.failures
    )
    strongest = (
        Enforcement.ENFORCE
        if enforced
        else Enforcement.WARN
        if any(f.source.enforcement is Enforcement.WARN for f in verdict.failures)
        else Enforcement.AUDIT
    )
    return _trust(pod, result, sources, failing, reasons, enforcement=str(strongest), evict=evict)


def _trust(
    pod: RunningPod,
    result: Result,
    sources: tuple[str, ...],
    failing: tuple[str, ...],
    reasons: tuple[Reason, ...],
    enforcement: str = "",
    evict: bool = False,
) -> PodTrust:
    return PodTrust(
        namespace=pod.facts.namespace,
        name=pod.facts.name,
        uid=pod.uid,
        node=pod.facts.node_name,
        result=result,
        sources=sources,
        failing=failing,
        reasons=reasons,
        enforcement=enforcement,
        evict=evict,
    )
