"""The authority's cluster access: Nodes (identity), TrustFlavors, AttestedAgents (enrollment), reports.

`AttestedAgent` (trustgate.dev/v1alpha1, cluster-scoped, name = node name) is the enrollment:
`spec.ekCertificateSHA256` is written by an operator (`trustgate-attestation approve|enroll`). The
authority writes only `status.requests`: the EKs that proved, by credential activation, that a TPM
holding them asked for that existing Node, one entry per EK fingerprint, at most a few per node
(the least recently seen dropped first). It reads one object by name per decision, never a list;
the operator's commands list, to show every request and to refuse enrolling one EK for two nodes.

Status updates carry the object's resourceVersion, so two requests for one node written at once
never lose one another: the later write conflicts and is merged again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from attestation.authority import MAX_REQUESTS_PER_NODE, EnrollmentRequest, merge_request
from attestation.flavors import Flavor, FlavorError, flavor_from_object
from trustgate.cluster.resources import AGENTS_PLURAL as AGENTS
from trustgate.cluster.resources import FLAVORS_PLURAL as FLAVORS
from trustgate.cluster.resources import GROUP, GROUP_VERSION, VERSION

log = logging.getLogger("trustgate.attestation")
CONFLICT_RETRIES = 5
T = TypeVar("T")


class EnrollmentError(Exception):
    """An enrollment an operator asked for that cannot be done; the message says why and what to do."""


def _unless(status: int, call: Callable[..., T], *args: Any) -> T | None:
    """What `call(*args)` answers, or None when the API server answers `status` instead (404: there is no
    such object; 409: another writer created it first)."""
    try:
        return call(*args)
    except ApiException as error:
        if error.status == status:
            return None
        raise


def node_lookup(api: client.ApiClient) -> Callable[[str], tuple[str, str] | None]:
    core = client.CoreV1Api(api)

    def lookup(name: str) -> tuple[str, str] | None:
        node = _unless(404, core.read_node, name)
        if node is None:
            return None
        info = node.status.node_info if node.status and node.status.node_info else None
        return (info.system_uuid or "", info.boot_id or "") if info else ("", "")

    return lookup


class KubeFlavors:
    """TrustFlavor objects, listed at most every `ttl` seconds; invalid ones are logged and skipped."""

    def __init__(self, api: client.ApiClient, ttl: float = 5.0) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = -1e9
        self._flavors: list[Flavor] = []

    def __call__(self) -> list[Flavor]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                items = self.objects.list_cluster_custom_object(GROUP, VERSION, FLAVORS).get("items", [])
                flavors = []
                for item in items:
                    try:
                        flavors.append(flavor_from_object(item))
                    except FlavorError as error:
                        log.error("ignoring %s", error)
                self._flavors, self._at = flavors, time.monotonic()
            return self._flavors


# --- status.requests <-> EnrollmentRequest ---------------------------------------------------------


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0


def request_to_object(request: EnrollmentRequest) -> dict[str, Any]:
    return {
        "ekCertificateSHA256": request.ek_fingerprint,
        "systemUUID": request.system_uuid,
        "requester": request.requester,
        "firstRequested": _timestamp(request.first_requested),
        "lastRequested": _timestamp(request.last_requested),
        "count": request.count,
    }


def requests_of(obj: dict[str, Any] | None) -> list[EnrollmentRequest]:
    """The enrollment requests recorded on an AttestedAgent (entries without a fingerprint are skipped)."""
    if not obj:
        return []
    node = str((obj.get("metadata") or {}).get("name", ""))
    entries = (obj.get("status") or {}).get("requests") or []
    return [
        EnrollmentRequest(
            node,
            str(entry["ekCertificateSHA256"]).lower(),
            str(entry.get("systemUUID", "")),
            str(entry.get("requester", "")),
            _seconds(entry.get("firstRequested")),
            _seconds(entry.get("lastRequested")),
            int(entry.get("count", 1) or 1),
        )
        for entry in entries
        if isinstance(entry, dict) and entry.get("ekCertificateSHA256")
    ]


def _status(obj: dict[str, Any], requests: list[EnrollmentRequest]) -> dict[str, Any]:
    return {**(obj.get("status") or {}), "requests": [request_to_object(r) for r in requests], "pending": len(requests)}


def _enrolled_of(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("spec") or {}).get("ekCertificateSHA256", "")).lower()


class KubeEnrollment:
    """AttestedAgent objects as the authority's `Enrollment`."""

    def __init__(self, api: client.ApiClient, max_requests: int = MAX_REQUESTS_PER_NODE) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.max_requests = max_requests
        self._lock = threading.Lock()  # this process's own writers queue; other writers conflict

    def _get(self, node: str) -> dict[str, Any] | None:
        return _unless(404, self.objects.get_cluster_custom_object, GROUP, VERSION, AGENTS, node)

    def enrolled(self, node: str) -> frozenset[str]:
        fingerprint = _enrolled_of(self._get(node))
        return frozenset({fingerprint}) if fingerprint else frozenset()

    def request(self, request: EnrollmentRequest) -> list[EnrollmentRequest]:
        """Merge `request` into the node's `status.requests` (creating the object without an enrollment
        when the node has none yet); returns the requests dropped to stay within the limit."""
        with self._lock:
            for _ in range(CONFLICT_RETRIES):
                obj = self._get(request.node) or self._create(request.node)
                if obj is None:
                    continue  # created by someone else meanwhile: read theirs
                kept, dropped, changed = merge_request(requests_of(obj), request, self.max_requests)
                if not changed:
                    return []
                obj["status"] = _status(obj, kept)
                try:
                    self.objects.replace_cluster_custom_object_status(GROUP, VERSION, AGENTS, request.node, obj)
                except ApiException as error:
                    if error.status == 409:
                        continue  # another writer was first: merge into theirs
                    raise
                return dropped
        raise EnrollmentError(f"could not record the enrollment request for node {request.node}: conflicting writes")

    def _create(self, node: str) -> dict[str, Any] | None:
        body = {"apiVersion": GROUP_VERSION, "kind": "AttestedAgent", "metadata": {"name": node}, "spec": {}}
        return _unless(409, self.objects.create_cluster_custom_object, GROUP, VERSION, AGENTS, body)


# --- the operator's commands -----------------------------------------------------------------------


def check_fingerprint(fingerprint: str) -> str:
    value = fingerprint.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise EnrollmentError(
            f"{fingerprint!r} is not an EK fingerprint: the SHA-256 of the EK certificate, 64 hex digits"
        )
    return value


def pending_requests(api: client.ApiClient, node: str | None = None) -> list[EnrollmentRequest]:
    """The enrollment requests of `node` (or of every node), oldest first."""
    objects = client.CustomObjectsApi(api)
    if node is not None:
        found = _unless(404, objects.get_cluster_custom_object, GROUP, VERSION, AGENTS, node)
        items = [found] if found is not None else []
    else:
        items = objects.list_cluster_custom_object(GROUP, VERSION, AGENTS).get("items", [])
    found = [r for item in items for r in requests_of(item)]
    return sorted(found, key=lambda r: (r.node, r.first_requested))


def _check_unique(objects: client.CustomObjectsApi, node: str, fingerprint: str) -> None:
    """One EK is one host: refuse to enroll it for a second node."""
    items: Iterable[dict[str, Any]] = objects.list_cluster_custom_object(GROUP, VERSION, AGENTS).get("items", [])
    others = sorted(
        item["metadata"]["name"]
        for item in items
        if _enrolled_of(item) == fingerprint and item["metadata"]["name"] != node
    )
    if others:
        raise EnrollmentError(
            f"EK {fingerprint} is already enrolled for node {', '.join(others)}; one TPM is one host "
            f"(delete that enrollment first: kubectl delete attestedagent {others[0]})"
        )


def approve(api: client.ApiClient, node: str, fingerprint: str) -> EnrollmentRequest:
    """Enroll the EK of one of `node`'s recorded requests (proven by credential activation)."""
    fingerprint = check_fingerprint(fingerprint)
    objects = client.CustomObjectsApi(api)
    requests = pending_requests(api, node)
    chosen = next((r for r in requests if r.ek_fingerprint == fingerprint), None)
    if chosen is None:
        listed = "; ".join(f"{r.ek_fingerprint} ({r.requester})" for r in requests) or "none"
        raise EnrollmentError(
            f"no agent with EK {fingerprint} has asked for node {node} (pending requests: {listed}); "
            f"to enroll an EK known out of band: trustgate-attestation enroll {node} {fingerprint}"
        )
    _check_unique(objects, node, fingerprint)
    objects.patch_cluster_custom_object(GROUP, VERSION, AGENTS, node, {"spec": {"ekCertificateSHA256": fingerprint}})
    _forget_request(objects, node, fingerprint)
    return chosen


def _forget_request(objects: client.CustomObjectsApi, node: str, fingerprint: str) -> None:
    """Drop the approved request from the status; the other candidates stay for the operator to see."""
    for _ in range(CONFLICT_RETRIES):
        obj = objects.get_cluster_custom_object(GROUP, VERSION, AGENTS, node)
        kept = [r for r in requests_of(obj) if r.ek_fingerprint != fingerprint]
        obj["status"] = _status(obj, kept)
        try:
            objects.replace_cluster_custom_object_status(GROUP, VERSION, AGENTS, node, obj)
            return
        except ApiException as error:
            if error.status != 409:
                raise
    log.warning("node %s is enrolled, but its approved request could not be removed from the status", node)


def enroll(api: client.ApiClient, node: str, fingerprint: str) -> str:
    """Bind `node` to an EK known out of band (e.g. from `trustgate-agent ek-fingerprint` on the host)."""
    fingerprint = check_fingerprint(fingerprint)
    objects = client.CustomObjectsApi(api)
    _check_unique(objects, node, fingerprint)
    spec = {"spec": {"ekCertificateSHA256": fingerprint}}
    try:
        objects.patch_cluster_custom_object(GROUP, VERSION, AGENTS, node, spec)
    except ApiException as error:
        if error.status != 404:
            raise
        body = {"apiVersion": GROUP_VERSION, "kind": "AttestedAgent", "metadata": {"name": node}}
        objects.create_cluster_custom_object(GROUP, VERSION, AGENTS, body | spec)
    return fingerprint
