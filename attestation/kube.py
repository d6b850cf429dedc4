"""The authority's cluster access: Nodes (identity), TrustFlavors, AttestedAgents (enrollment), reports.

`AttestedAgent` (trustgate.dev/v1alpha1, cluster-scoped, name = node name) is the enrollment:
`spec.ekCertificateSHA256` is written by an operator (`trustgate-attestation approve|enroll`); the
authority only records an unknown EK that asked for a node in the annotation
`trustgate.dev/requested-ek-sha256`, for the operator to review and approve.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from attestation.flavors import Flavor, FlavorError, flavor_from_object
from trustgate.cluster.resources import AGENTS_PLURAL as AGENTS
from trustgate.cluster.resources import FLAVORS_PLURAL as FLAVORS
from trustgate.cluster.resources import GROUP, GROUP_VERSION, VERSION

REQUESTED = "trustgate.dev/requested-ek-sha256"
log = logging.getLogger("trustgate.attestation")


def node_lookup(api: client.ApiClient) -> Callable[[str], tuple[str, str] | None]:
    core = client.CoreV1Api(api)

    def lookup(name: str) -> tuple[str, str] | None:
        try:
            node = core.read_node(name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
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


class KubeEnrollment:
    def __init__(self, api: client.ApiClient) -> None:
        self.objects = client.CustomObjectsApi(api)

    def nodes_for(self, ek_fingerprint: str) -> set[str]:
        items = self.objects.list_cluster_custom_object(GROUP, VERSION, AGENTS).get("items", [])
        return {
            item["metadata"]["name"]
            for item in items
            if str((item.get("spec") or {}).get("ekCertificateSHA256", "")).lower() == ek_fingerprint
        }

    def request(self, node: str, ek_fingerprint: str) -> None:
        patch = {"metadata": {"annotations": {REQUESTED: ek_fingerprint}}}
        try:
            self.objects.patch_cluster_custom_object(GROUP, VERSION, AGENTS, node, patch)
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": GROUP_VERSION,
                "kind": "AttestedAgent",
                "metadata": {"name": node, **patch["metadata"]},
                "spec": {},
            }
            self.objects.create_cluster_custom_object(GROUP, VERSION, AGENTS, body)


def enroll(api: client.ApiClient, node: str, ek_fingerprint: str | None = None) -> str:
    """Bind `node` to an EK: the given fingerprint, or the one its agent requested (approval)."""
    objects = client.CustomObjectsApi(api)
    try:
        current: dict[str, Any] | None = objects.get_cluster_custom_object(GROUP, VERSION, AGENTS, node)
    except ApiException as error:
        if error.status != 404:
            raise
        current = None
    if ek_fingerprint is None:
        requested = ((current or {}).get("metadata", {}).get("annotations") or {}).get(REQUESTED)
        if not requested:
            raise ValueError(f"no agent asked to register for node {node}; give the EK fingerprint")
        ek_fingerprint = requested
    ek_fingerprint = ek_fingerprint.lower()
    if len(ek_fingerprint) != 64 or any(c not in "0123456789abcdef" for c in ek_fingerprint):
        raise ValueError("an EK fingerprint is the SHA-256 of the EK certificate, 64 hex digits")
    if current is None:
        body = {"apiVersion": GROUP_VERSION, "kind": "AttestedAgent", "metadata": {"name": node}}
        objects.create_cluster_custom_object(
            GROUP, VERSION, AGENTS, body | {"spec": {"ekCertificateSHA256": ek_fingerprint}}
        )
    else:
        patch = {"spec": {"ekCertificateSHA256": ek_fingerprint}, "metadata": {"annotations": {REQUESTED: None}}}
        objects.patch_cluster_custom_object(GROUP, VERSION, AGENTS, node, patch)
    return ek_fingerprint
