"""The workloads the install tests and the demo run on real nodes: busybox pods, nothing pulled.

`trusted-apps` is made trust-requiring by a TrustPolicy (every pod there must land on a trusted node),
`plain-apps` is not. The image is the node kit's busybox (devkit/nodes/build.sh), already on every node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

APPS = "trusted-apps"
PLAIN = "plain-apps"


def pod(image: str, name: str, namespace: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name.split("-")[0], **(labels or {})}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "exec sleep 3600"],
                }
            ],
            **spec,
        },
    }


def deployment(
    image: str, name: str, namespace: str, replicas: int, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """`replicas` of `pod(image, ...)` (`spec` as there), labelled `app: name` and `labels`."""
    template = pod(image, name, namespace, **spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, **(labels or {})}}, "spec": template["spec"]},
        },
    }


def namespaces_and_policy() -> list[dict[str, Any]]:
    """The two namespaces and the TrustPolicy that selects trusted-apps."""
    policy = {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": APPS},
        "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": APPS}}},
    }
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in (APPS, PLAIN)]
    return [*namespaces, policy]


def stream_kinds(image: str, trusted_node: str) -> dict[str, Callable[[str], dict[str, Any]]]:
    """For a PodStream: trust pods placed by kube-scheduler and the extender, trust pods pinned to the
    trusted node (judged by the webhook), and plain pods (which trustgate never sees)."""
    return {
        "trust": lambda name: pod(image, name, APPS),
        "pinned": lambda name: pod(image, name, APPS, nodeName=trusted_node),
        "plain": lambda name: pod(image, name, PLAIN),
    }
