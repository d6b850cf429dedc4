"""A steady stream of pod creations, and where each pod was placed: load for upgrades, drains and rotations.

    stream = PodStream(client, {"trust": trust_pod, "plain": plain_pod}, interval=0.5).start()
    ...                                       # upgrade, drain, rotate ...
    report = stream.stop()                    # waits until every admitted pod is bound, then cleans up
    report.refused, report.unbound, report.placed_outside({"trust": {"node-a"}}), report.longest_stall()

Each kind's factory makes the pod for a name; kinds are created in turn, one every `interval` seconds,
from one thread. Another thread lists the stream's pods (by label) and notes when each is first seen
bound to a node, then deletes it at once, so the nodes do not fill up. A creation the API server
refuses (a webhook's refusal, or a webhook it could not call) is recorded with its message.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devkit.controlplane import KubeAPIError, KubeClient

LABEL = "trustgate.dev/stream"


@dataclass
class StreamedPod:
    name: str
    namespace: str
    kind: str
    sent: float  # time.monotonic() before the create request
    answered: float | None = None
    refused: str | None = None
    node: str | None = None
    bound: float | None = None  # when first seen bound

    @property
    def stall(self) -> float | None:
        return None if self.bound is None else self.bound - self.sent


@dataclass
class StreamReport:
    pods: list[StreamedPod]

    @property
    def refused(self) -> list[StreamedPod]:
        return [p for p in self.pods if p.refused is not None]

    @property
    def unbound(self) -> list[StreamedPod]:
        return [p for p in self.pods if p.refused is None and p.bound is None]

    def placed_outside(self, allowed: Mapping[str, set[str]]) -> list[StreamedPod]:
        """Pods of a kind bound to a node not allowed for that kind."""
        return [p for p in self.pods if p.kind in allowed and p.node is not None and p.node not in allowed[p.kind]]

    def longest_stall(self, kinds: set[str] | None = None) -> StreamedPod | None:
        """The pod that waited longest from its creation to its binding (of `kinds`)."""
        bound = [p for p in self.pods if p.stall is not None and (kinds is None or p.kind in kinds)]
        return max(bound, key=lambda p: p.stall or 0.0, default=None)

    def longest_answer(self) -> float:
        return max((p.answered - p.sent for p in self.pods if p.answered is not None), default=0.0)

    def summary(self, scheduled: set[str]) -> dict[str, Any]:
        stall = self.longest_stall(scheduled)
        return {
            "created": len(self.pods),
            "refused": len(self.refused),
            "unbound": len(self.unbound),
            "longest_scheduling_stall_s": round(stall.stall or 0.0, 2) if stall else None,
            "longest_stall_pod": f"{stall.namespace}/{stall.name}" if stall else None,
            "longest_create_s": round(self.longest_answer(), 2),
        }


@dataclass
class PodStream:
    client: KubeClient
    kinds: Mapping[str, Callable[[str], dict[str, Any]]]
    interval: float = 0.5
    prefix: str = "stream"
    poll: float = 0.2
    pods: dict[str, StreamedPod] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    errors: list[str] = field(default_factory=list)

    def start(self) -> PodStream:
        self._threads = [
            threading.Thread(target=self._create, name="pod-stream-create", daemon=True),
            threading.Thread(target=self._watch, name="pod-stream-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, settle: float = 180.0) -> StreamReport:
        """Stop creating; wait up to `settle` seconds for the admitted pods to be bound; delete what is left."""
        self._stop.set()
        self._threads[0].join(60)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            with self._lock:
                waiting = [p for p in self.pods.values() if p.refused is None and p.bound is None]
            if not waiting:
                break
            time.sleep(self.poll)
        self._done.set()
        self._threads[1].join(60)
        for pod in list(self.pods.values()):
            if pod.refused is None:
                self._delete(pod)
        with self._lock:
            return StreamReport(sorted(self.pods.values(), key=lambda p: p.sent))

    def _create(self) -> None:
        kinds = itertools.cycle(sorted(self.kinds))
        for number in itertools.count():
            if self._stop.is_set():
                return
            kind = next(kinds)
            body = self.kinds[kind](f"{self.prefix}-{kind}-{number}")
            body.setdefault("metadata", {}).setdefault("labels", {})[LABEL] = self.prefix
            meta = body["metadata"]
            pod = StreamedPod(meta["name"], meta.get("namespace", "default"), kind, time.monotonic())
            with self._lock:
                self.pods[pod.name] = pod
            try:
                self.client.create(f"/api/v1/namespaces/{pod.namespace}/pods", body)
            except KubeAPIError as error:
                pod.refused = f"HTTP {error.status}: {error.body[:500]}"
            except OSError as error:  # no answer at all (a timeout)
                pod.refused = f"{type(error).__name__}: {error}"
            pod.answered = time.monotonic()
            self._stop.wait(max(0.0, pod.sent + self.interval - time.monotonic()))

    def _watch(self) -> None:
        namespaces = {self.kinds[k]("probe").get("metadata", {}).get("namespace", "default") for k in self.kinds}
        while not self._done.is_set():
            for namespace in sorted(namespaces):
                try:
                    items = self.client.get(
                        f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"{LABEL}={self.prefix}"
                    )["items"]
                except (KubeAPIError, OSError) as error:
                    self.errors.append(f"listing pods in {namespace}: {error}")
                    continue
                seen = time.monotonic()
                for item in items:
                    with self._lock:
                        pod = self.pods.get(item["metadata"]["name"])
                    node = item["spec"].get("nodeName")
                    if pod is None or pod.bound is not None or not node:
                        continue
                    pod.node, pod.bound = node, seen
                    self._delete(pod)
            self._done.wait(self.poll)

    def _delete(self, pod: StreamedPod) -> None:
        try:
            self.client.request(
                "DELETE", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}", params={"gracePeriodSeconds": "0"}
            )
        except KubeAPIError as error:
            if error.status != 404:
                self.errors.append(f"deleting {pod.name}: {error}")
        except OSError as error:
            self.errors.append(f"deleting {pod.name}: {error}")
