"""Marking trust-requiring pods at creation, so that kube-scheduler consults the extender for them only.

A JSON patch that gives the pod's first container a request and limit of one `trustgate.dev/trust`
(the extender's managed resource). kube-scheduler then asks the extender to filter, score and bind
this pod, and never for a pod without the mark: pods that need no trust do not wait on trustgate.
The validating webhook refuses an unbound trust-requiring pod without the mark (a pod created while
this webhook was bypassed, or changed into a trust-requiring one), so no such pod is scheduled
without the extender.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trustgate.core.labels import TRUST_RESOURCE

_QUANTITY = "1"


def is_marked(pod: Mapping[str, Any]) -> bool:
    """Whether any container or init container requests or limits the trust resource (as kube-scheduler's
    `HTTPExtender.IsInterested` reads it)."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return False
    for kind in ("containers", "initContainers"):
        for container in spec.get(kind) or ():
            resources = container.get("resources") if isinstance(container, Mapping) else None
            if not isinstance(resources, Mapping):
                continue
            for part in ("requests", "limits"):
                amounts = resources.get(part)
                if isinstance(amounts, Mapping) and TRUST_RESOURCE in amounts:
                    return True
    return False


def mark_patch(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that marks `pod`; empty when it is marked already or has no container."""
    if is_marked(pod):
        return []
    containers = (pod.get("spec") or {}).get("containers")
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], Mapping):
        return []
    resources = containers[0].get("resources")
    resources = dict(resources) if isinstance(resources, Mapping) else {}
    for part in ("requests", "limits"):
        amounts = resources.get(part)
        resources[part] = {**(amounts if isinstance(amounts, Mapping) else {}), TRUST_RESOURCE: _QUANTITY}
    return [{"op": "add", "path": "/spec/containers/0/resources", "value": resources}]
