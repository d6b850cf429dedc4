"""The cluster cache: watches Nodes, Namespaces, NodeTrustReports and TrustPolicies and serves
consistent `Snapshot`s to request handlers.

Each resource has a reflector thread: list, then watch from the list's resourceVersion,
resume from the last seen resourceVersion when a watch ends, relist on 410 Gone, and back
off on errors. From a failed list or watch until the next one succeeds, the cache is not
synced: it cannot see revocations written meanwhile, so no decision is made on it (fail
closed). Tokens are verified once, when a report or its node changes, never per request.
Reads use the kubernetes client's ApiClient with raw JSON: decisions work on plain
dicts, and skipping model deserialization keeps a 5,000-node relist cheap.

Pods are not watched: every pod of the cluster would then cost each process an event at
creation and one at binding, whether it needs trust or not. A Binding's pod is read when a
Binding is judged, from the API server's watch cache (no etcd read).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from trustgate.cluster.api import get_object, get_raw, list_objects
from trustgate.cluster.resources import NAMESPACES, NODES, POLICIES, REPORTS, Resource
from trustgate.core.node import NodeTrust, assess, node_identity, node_labels
from trustgate.core.policy import TrustPolicy
from trustgate.core.report import NodeIdentity, ReportVerifier
from trustgate.core.snapshot import ReadThrough, Snapshot

log = logging.getLogger(__name__)

WATCH_SECONDS = 240


class Gone(Exception):
    """The resourceVersion we would resume from is too old (HTTP 410): relist."""


class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self, initial: float = 0.2, maximum: float = 3.0) -> None:
        self.initial, self.maximum, self.current = initial, maximum, initial

    def next(self) -> float:
        delay = self.current * random.uniform(0.8, 1.2)
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class Reflector(threading.Thread):
    """Keeps one resource's objects in step with the API server and reports each change."""

    def __init__(
        self,
        api: ApiClient,
        resource: Resource,
        on_replace: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        stopping: threading.Event,
        on_connection: Callable[[bool], None] = lambda connected: None,
    ) -> None:
        super().__init__(name=f"reflector-{resource.kind}", daemon=True)
        self.api, self.resource = api, resource
        self.on_replace, self.on_event, self.on_connection = on_replace, on_event, on_connection
        self.stopping = stopping
        self.synced = threading.Event()
        self.lists = 0
        self.version: str | None = None  # where the next watch resumes; None: list first
        self._response: Any = None

    def run(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                if self.version is None:
                    items, self.version = self._list()
                    self.on_replace(items)  # marks the store synced under its lock
                    self.on_connection(True)
                    self.synced.set()
                    self.lists += 1
                self.version = self._watch(self.version)
                backoff.reset()
            except Gone:
                log.info("%s watch expired (410 Gone); relisting", self.resource.kind)
                self.on_connection(False)  # changes may have been missed: stale until the relist
                self.version = None
            except Exception as error:  # the API server may be restarting: keep trying, never die
                self.on_connection(False)  # changes written meanwhile are unseen until we are back
                delay = backoff.next()
                log.warning("%s watch failed (%s); retrying in %.1fs", self.resource.kind, error, delay)
                self.stopping.wait(delay)

    def interrupt(self) -> None:
        """End the current watch; the loop resumes from `version` (or stops, when stopping)."""
        response = self._response
        if response is not None:
            response.shutdown()  # unblocks a read in progress in the reflector's thread (urllib3 >= 2.3)

    def _get(self, query: list[tuple[str, Any]], timeout: float) -> Any:
        return get_raw(self.api, self.resource.path, [*self.resource.query, *query], timeout)

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        return list_objects(self.api, self.resource)

    def _watch(self, version: str) -> str:
        seconds = int(WATCH_SECONDS * random.uniform(0.9, 1.1))
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", seconds),
        ]
        try:
            response = self._get(query, seconds + 30)
        except ApiException as error:
            if error.status == 410:
                raise Gone() from None
            raise
        self.on_connection(True)  # the stream replays every change since `version` first
        self._response = response
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind != "BOOKMARK":
                    self.on_event(kind, obj)
                if self.stopping.is_set():
                    break
        finally:
            self._response = None
            response.release_conn()
        return version


@dataclass(frozen=True)
class _NodeFacts:
    identity: NodeIdentity
    labels: Mapping[str, str]


class ClusterCache(ReadThrough):
    """A `ClusterView` fed by watches. `snapshot()` is cheap: it rebuilds only after a change."""

    def __init__(self, api: ApiClient, verifier: ReportVerifier, exempt: frozenset[str] = frozenset()) -> None:
        self.api, self.verifier, self.exempt = api, verifier, exempt
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._nodes: dict[str, _NodeFacts] = {}
        self._tokens: dict[str, str] = {}
        self._trust: dict[str, NodeTrust] = {}
        self._policies: dict[str, TrustPolicy] = {}
        self._namespaces: dict[str, Mapping[str, str]] = {}
        self._snapshot: Snapshot | None = None
        self._listeners: list[Callable[[set[str]], None]] = []
        self._change_listeners: list[Callable[[], None]] = []
        self._synced_kinds: set[str] = set()
        self._disconnected: set[str] = set()  # kinds whose list or watch failed and has not succeeded since
        self.reflectors = [
            Reflector(api, r, self._replacer(r), self._handler(r), self._stopping, self._connection(r))
            for r in (NODES, NAMESPACES, REPORTS, POLICIES)
        ]

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ClusterCache:
        for reflector in self.reflectors:
            reflector.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        for reflector in self.reflectors:
            reflector.interrupt()
        for reflector in self.reflectors:
            reflector.join(timeout)

    @property
    def synced(self) -> bool:
        """Every resource listed, and every watch connected (or replaying) now."""
        return len(self._synced_kinds) == len(self.reflectors) and not self._disconnected

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.synced.wait(max(0.0, deadline - time.monotonic())) for r in self.reflectors)

    def add_listener(self, listener: Callable[[set[str]], None]) -> None:
        """Call `listener(node_names)` after any change that may alter those nodes' trust."""
        self._listeners.append(listener)

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after any change at all (a new snapshot is due), outside the cache's lock."""
        self._change_listeners.append(listener)

    # --- ClusterView ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        current = self._snapshot
        if current is not None:
            return current
        with self._lock:
            if self._snapshot is None:
                self._snapshot = Snapshot(
                    verifier=self.verifier,
                    synced=self.synced,
                    nodes=MappingProxyType(dict(self._trust)),
                    tokens=MappingProxyType(dict(self._tokens)),
                    policies=tuple(self._policies.values()),
                    namespaces=MappingProxyType(dict(self._namespaces)),
                    exempt=self.exempt,
                )
            return self._snapshot

    def cached_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The pod as the API server's watch cache has it (resourceVersion=0): no etcd read, and at most
        as old as the watches that feed this cache; a pod not there yet is read from etcd (`get_pod`)."""
        return get_object(self.api, f"/api/v1/namespaces/{namespace}/pods/{name}", query=[("resourceVersion", "0")])

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return get_object(self.api, f"/api/v1/namespaces/{namespace}/pods/{name}")

    def get_namespace(self, name: str) -> Mapping[str, str] | None:
        found = get_object(self.api, f"/api/v1/namespaces/{name}")
        return None if found is None else MappingProxyType(dict((found.get("metadata") or {}).get("labels") or {}))

    # --- store updates -------------------------------------------------------------------------

    def _replacer(self, resource: Resource) -> Callable[[list[dict[str, Any]]], None]:
        def replace(items: list[dict[str, Any]]) -> None:
            with self._lock:
                changed = self._clear(resource)
                for obj in items:
                    changed |= self._apply(resource, "ADDED", obj)
                self._synced_kinds.add(resource.kind)
                self._snapshot = None
            self._notify(changed)

        return replace

    def _connection(self, resource: Resource) -> Callable[[bool], None]:
        def connection(connected: bool) -> None:
            if connected != (resource.kind in self._disconnected):
                return  # no change (the common case: a watch resumed after its timeout)
            with self._lock:
                if connected:
                    self._disconnected.discard(resource.kind)
                else:
                    self._disconnected.add(resource.kind)
                self._snapshot = None
            self._notify(set())
            if not connected:
                log.warning("%s watch lost: not synced, no decision until it is back", resource.kind)

        return connection

    def _handler(self, resource: Resource) -> Callable[[str, dict[str, Any]], None]:
        def handle(kind: str, obj: dict[str, Any]) -> None:
            with self._lock:
                changed = self._apply(resource, kind, obj)
                self._snapshot = None
            self._notify(changed)

        return handle

    def _clear(self, resource: Resource) -> set[str]:
        if resource is NODES:
            names = set(self._nodes)
            self._nodes.clear()
        elif resource is REPORTS:
            names = set(self._tokens)
            self._tokens.clear()
        else:
            {POLICIES: self._policies, NAMESPACES: self._namespaces}[resource].clear()
            return set()
        for name in names:
            self._reassess(name)
        return names

    def _apply(self, resource: Resource, kind: str, obj: dict[str, Any]) -> set[str]:
        deleted = kind == "DELETED"
        metadata = obj.get("metadata") or {}
        name = metadata.get("name") or ""
        if resource is NODES:
            if deleted:
                self._nodes.pop(name, None)
            else:
                facts = _NodeFacts(node_identity(obj), node_labels(obj))
                if self._nodes.get(name) == facts:
                    return set()  # a status update that changes nothing trust depends on
                self._nodes[name] = facts
        elif resource is REPORTS:
            if deleted:
                self._tokens.pop(name, None)
            else:
                token = (obj.get("spec") or {}).get("token")
                token = token if isinstance(token, str) else ""
                if self._tokens.get(name) == token:
                    return set()
                self._tokens[name] = token
        elif resource is POLICIES:
            if deleted:
                self._policies.pop(name, None)
            else:
                self._policies[name] = TrustPolicy.from_resource(obj)
            return set()
        else:
            if deleted:
                self._namespaces.pop(name, None)
            else:
                self._namespaces[name] = MappingProxyType(dict(metadata.get("labels") or {}))
            return set()
        self._reassess(name)
        return {name}

    def _reassess(self, name: str) -> None:
        facts = self._nodes.get(name)
        if facts is None:
            self._trust.pop(name, None)
            return
        self._trust[name] = assess(facts.identity, facts.labels, self._tokens.get(name), self.verifier)

    def _notify(self, names: set[str]) -> None:
        """Tell the listeners, outside the lock: a listener may take locks of its own and read a snapshot
        (which takes this lock) while holding them."""
        for listener in self._change_listeners:
            listener()
        if names:
            for listener in self._listeners:
                listener(names)
