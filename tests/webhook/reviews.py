"""AdmissionReview bodies shaped as kube-apiserver sends them, and a small test cluster."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from devkit.factories import Issuer, node_object, trust_policy
from trustgate.core.snapshot import Snapshot

SCHEDULER = {
    "username": "system:kube-scheduler",
    "uid": "uid-scheduler",
    "groups": ["system:authenticated"],
}
ALICE = {
    "username": "alice@example.com",
    "uid": "uid-alice",
    "groups": ["system:authenticated", "developers"],
}

TRUSTED = "worker-1"  # valid report, all levels
EXPIRED = "worker-2"  # report expired an hour ago
KERNEL_UNTRUSTED = "worker-3"  # valid report, level kernel false
NO_REPORT = "worker-4"  # no report at all
TRUST_SELECTOR = {"trustgate.dev/trusted": "true"}


def _gvk(kind: str) -> dict[str, str]:
    return {"group": "", "version": "v1", "kind": kind}


def _gvr(resource: str) -> dict[str, str]:
    return {"group": "", "version": "v1", "resource": resource}


def _request(
    *,
    kind: str,
    resource: str,
    operation: str,
    name: str,
    namespace: str,
    obj: Any,
    sub_resource: str = "",
    old: Any = None,
    user: Mapping[str, Any] = ALICE,
    dry_run: bool = False,
    uid: str | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": _gvk(kind),
        "resource": _gvr(resource),
        "requestKind": _gvk(kind),
        "requestResource": _gvr(resource),
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": dict(user),
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {
            "kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
            "apiVersion": "meta.k8s.io/v1",
        },
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _pod_request(pod: Mapping[str, Any], operation: str, **kwargs: Any) -> dict[str, Any]:
    """A request on `pod` itself (`pods`, or one of its subresources), named and namespaced as it is."""
    metadata = pod["metadata"]
    return _request(
        kind="Pod",
        resource="pods",
        operation=operation,
        name=metadata.get("name", ""),
        namespace=metadata["namespace"],
        obj=pod,
        **kwargs,
    )


def pod_create(pod: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """`POST /api/v1/namespaces/NS/pods`; the apiserver has filled in the namespace."""
    return _pod_request(pod, "CREATE", **kwargs)


def pod_update(old: Mapping[str, Any], new: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """`PUT /api/v1/namespaces/NS/pods/NAME`: a change to a pod (its labels, its images)."""
    return _pod_request(new, "UPDATE", old=old, **kwargs)


def binding_object(pod: Mapping[str, Any], node: str, with_uid: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": pod["metadata"]["name"],
        "namespace": pod["metadata"]["namespace"],
        "creationTimestamp": None,
    }
    if with_uid:
        metadata["uid"] = pod["metadata"]["uid"]
    return {"kind": "Binding", "apiVersion": "v1", "metadata": metadata, "target": {"kind": "Node", "name": node}}


def pod_binding(pod: Mapping[str, Any], node: str, legacy: bool = False, **kwargs: Any) -> dict[str, Any]:
    """The scheduler's `POST .../pods/NAME/binding` (or the legacy `POST .../bindings`)."""
    kwargs.setdefault("user", SCHEDULER)
    return _request(
        kind="Binding",
        resource="bindings" if legacy else "pods",
        sub_resource="" if legacy else "binding",
        operation="CREATE",
        name=pod["metadata"]["name"],
        namespace=pod["metadata"]["namespace"],
        obj=binding_object(pod, node),
        **kwargs,
    )


def ephemeral_update(pod: Mapping[str, Any], images: Iterable[str], **kwargs: Any) -> dict[str, Any]:
    """`kubectl debug`: UPDATE on `pods/ephemeralcontainers`, the object is the whole Pod."""
    new = copy.deepcopy(dict(pod))
    new["spec"]["ephemeralContainers"] = [
        {"name": f"debugger-{i}", "image": image, "targetContainerName": "c0", "stdin": True, "tty": True}
        for i, image in enumerate(images)
    ]
    return _pod_request(new, "UPDATE", sub_resource="ephemeralcontainers", old=pod, **kwargs)


def snapshot(
    issuer: Issuer,
    policies: Iterable[Mapping[str, Any]] = (),
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
    synced: bool = True,
    extra_nodes: int = 0,
) -> Snapshot:
    now = time.time()
    names = [TRUSTED, EXPIRED, KERNEL_UNTRUSTED, NO_REPORT] + [f"node-{i:04d}" for i in range(extra_nodes)]
    reports = {
        TRUSTED: issuer.token(TRUSTED),
        EXPIRED: issuer.token(EXPIRED, now=now - 7200, ttl=3600),
        KERNEL_UNTRUSTED: issuer.token(KERNEL_UNTRUSTED, levels={"kernel": False}),
    }
    reports |= {name: issuer.token(name) for name in names[4:]}
    return Snapshot.build(
        issuer.verifier(),
        nodes=[node_object(n) for n in names],
        reports=reports,
        policies=list(policies),
        namespaces=namespaces
        or {
            "default": {"kubernetes.io/metadata.name": "default"},
            "payments": {"kubernetes.io/metadata.name": "payments", "compliance": "pci"},
        },
        synced=synced,
    )


PCI_POLICY = trust_policy(
    "pci",
    namespaceSelector={"matchLabels": {"compliance": "pci"}},
    requiredLevels=["firmware", "boot", "kernel"],
)
ENCRYPTED_POLICY = trust_policy("encrypted", encryptedImages=["registry.example/secret/*"])
WARN_POLICY = trust_policy(
    "warn-only",
    podSelector={"matchLabels": {"tier": "sensitive"}},
    enforcement="Warn",
)
AUDIT_POLICY = trust_policy(
    "audit-only",
    podSelector={"matchLabels": {"tier": "watched"}},
    enforcement="Audit",
)
