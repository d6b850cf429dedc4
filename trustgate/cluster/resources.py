"""The API resources trustgate reads and writes: one definition of its group, version and plurals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP = "trustgate.dev"
VERSION = "v1alpha1"
GROUP_VERSION = f"{GROUP}/{VERSION}"

REPORTS_PLURAL = "nodetrustreports"
POLICIES_PLURAL = "trustpolicies"
FLAVORS_PLURAL = "trustflavors"
AGENTS_PLURAL = "attestedagents"


@dataclass(frozen=True)
class Resource:
    """A listable, watchable collection: its kind and its API path."""

    kind: str
    path: str
    query: tuple[tuple[str, str], ...] = ()  # e.g. a field selector: only these objects are listed and watched

    def key(self, obj: Mapping[str, Any]) -> str:
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace")
        return f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))


NODES = Resource("Node", "/api/v1/nodes")
NAMESPACES = Resource("Namespace", "/api/v1/namespaces")
PODS = Resource("Pod", "/api/v1/pods")
# Pods placed on a node and not finished: the running pods whose trust the pod trust controller keeps. A pod
# that succeeds or fails leaves the selection (a watch reports it DELETED).
BOUND_PODS = Resource(
    "Pod", "/api/v1/pods", (("fieldSelector", "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"),)
)
REPORTS = Resource("NodeTrustReport", f"/apis/{GROUP_VERSION}/{REPORTS_PLURAL}")
POLICIES = Resource("TrustPolicy", f"/apis/{GROUP_VERSION}/{POLICIES_PLURAL}")
