"""The pods bound to nodes, watched: what the pod trust controller judges again when trust changes.

One reflector (list, then watch) over the bound, unfinished pods of every namespace but the exempt
ones, kept as `RunningPod`s (labels, node constraints, images, node, uid: not the whole object), and
indexed by namespace and by node, so that a node losing trust finds its pods without a scan.
Listeners hear which pods changed (in what trust depends on), so that only those are judged again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient

from trustgate.cluster.cache import Reflector
from trustgate.cluster.resources import BOUND_PODS
from trustgate.core.policy import PolicyError
from trustgate.core.running import RunningPod, running_pod

log = logging.getLogger(__name__)

Key = tuple[str, str]


class BoundPods:
    def __init__(self, api: ApiClient, exempt: frozenset[str] = frozenset()) -> None:
        self.exempt = exempt
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pods: dict[Key, RunningPod] = {}
        self._by_namespace: dict[str, set[Key]] = {}
        self._by_node: dict[str, set[Key]] = {}
        self._listeners: list[Callable[[set[Key]], None]] = []
        self._connected = False
        self.reflector = Reflector(api, BOUND_PODS, self._replace, self._event, self._stopping, self._connection)

    def start(self) -> BoundPods:
        self.reflector.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.reflector.interrupt()
        self.reflector.join(timeout)

    @property
    def synced(self) -> bool:
        return self.reflector.synced.is_set() and self._connected

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return self.reflector.synced.wait(max(0.0, deadline - time.monotonic()))

    def add_listener(self, listener: Callable[[set[Key]], None]) -> None:
        """Call `listener(keys)` after those pods (namespace, name) changed or went; it must not block."""
        self._listeners.append(listener)

    def in_namespace(self, namespace: str) -> list[RunningPod]:
        with self._lock:
            return [self._pods[key] for key in self._by_namespace.get(namespace, ())]

    def namespaces(self) -> set[str]:
        with self._lock:
            return set(self._by_namespace)

    def namespaces_on(self, nodes: set[str]) -> set[str]:
        """The namespaces with a pod on one of `nodes`."""
        with self._lock:
            return {key[0] for node in nodes for key in self._by_node.get(node, ())}

    def get(self, key: Key) -> RunningPod | None:
        return self._pods.get(key)

    def __len__(self) -> int:
        return len(self._pods)

    # --- the reflector's side ------------------------------------------------------------------

    def _replace(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            changed = set(self._pods)
            self._pods.clear()
            self._by_namespace.clear()
            self._by_node.clear()
            for obj in items:
                changed |= self._apply("ADDED", obj)
        self._notify(changed)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        with self._lock:
            changed = self._apply(kind, obj)
        self._notify(changed)

    def _connection(self, connected: bool) -> None:
        self._connected = connected

    def _apply(self, kind: str, obj: dict[str, Any]) -> set[Key]:
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        if key[0] in self.exempt:
            return set()
        pod = None
        if kind != "DELETED":
            try:
                pod = running_pod(obj)
            except PolicyError as error:  # admission refuses such pods where trust is at stake
                log.debug("pod %s/%s left out: %s", *key, error)
        if pod is not None and self._pods.get(key) == pod:
            return set()  # a status update: nothing trust depends on changed
        self._remove(key)
        if pod is not None:
            self._pods[key] = pod
            self._by_namespace.setdefault(key[0], set()).add(key)
            self._by_node.setdefault(pod.facts.node_name, set()).add(key)
        return {key}

    def _remove(self, key: Key) -> None:
        old = self._pods.pop(key, None)
        if old is None:
            return
        for index, name in ((self._by_namespace, key[0]), (self._by_node, old.facts.node_name)):
            members = index.get(name)
            if members is not None:
                members.discard(key)
                if not members:
                    del index[name]

    def _notify(self, keys: set[Key]) -> None:
        if keys:
            for listener in self._listeners:
                listener(keys)
