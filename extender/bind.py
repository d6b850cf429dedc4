"""Binding a trust-requiring pod: the last check, at the moment of placement.

kube-scheduler hands the Bind step of the pods trustgate manages (those carrying its extended
resource) to the extender (`bindVerb`). Between the filter and the bind, a node's report may have
expired or been revoked: the node is judged again from the current snapshot, and only then is the
Binding written. The Filter decision found the pod's requirement from the pod itself; the bind call
names the pod only, so the extender keeps the pods it filtered recently (`RecentPods`) and reads
any other one live.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from extender.filter import requirement_of
from trustgate.core.policy import PolicyError
from trustgate.core.reasons import Code, Reason, describe
from trustgate.core.snapshot import Snapshot, UnknownNamespace


class RecentPods:
    """The last pods seen by /filter, by uid (bounded, oldest out first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._pods: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def remember(self, pod: Mapping[str, Any]) -> None:
        metadata = pod.get("metadata")
        uid = metadata.get("uid") if isinstance(metadata, Mapping) else None
        if not isinstance(uid, str) or not uid:
            return
        with self._lock:
            self._pods[uid] = pod
            self._pods.move_to_end(uid)
            while len(self._pods) > self._limit:
                self._pods.popitem(last=False)

    def get(self, uid: str) -> Mapping[str, Any] | None:
        with self._lock:
            return self._pods.get(uid)


def binding_refusal(snapshot: Snapshot, pod: Mapping[str, Any], node: str, now: float) -> Reason | None:
    """Why `pod` may not be bound to `node` now (None: it may). Fail closed on anything unreadable."""
    if not snapshot.synced:
        return Reason(Code.NOT_READY, "the trust report cache has not synced yet (retry)")
    try:
        requirement = requirement_of(snapshot, pod)
    except PolicyError as error:
        return Reason(Code.POLICY_INVALID, f"cannot determine the pod's trust requirement: {error}")
    except UnknownNamespace as error:
        return Reason(Code.NOT_READY, f"{error} (retry)")
    if requirement is None:
        return None
    verdict = snapshot.evaluate(requirement, snapshot.node(node), now)
    if not verdict.blocked:
        return None
    reasons = verdict.reasons(verdict.enforced_failures)
    return Reason(reasons[0].code, f"node {node} no longer passes: {describe(reasons)}")
