"""WSGI app factories for serving the webhook under gunicorn in benchmarks and the TLS test.

    python -m trustgate.serving.server devkit.admission_apps:create --bind 127.0.0.1:8443 --certfile ... --keyfile ...

`create()` is the real webhook (`webhook.app.create_app`) over a `StaticCluster` of
`TRUSTGATE_BENCH_NODES` (default 1,000) nodes with valid reports, plus `worker-expired` (report
expired an hour ago) and `worker-noreport` (none), and four TrustPolicies. Each gunicorn worker
builds its own (a fresh signing key per worker: every worker is self-consistent). Audit records
go to `TRUSTGATE_BENCH_AUDIT` (default: discarded).

`noop()` answers every POST /validate with an allow that echoes the uid: the floor the webhook
is compared with (same server, same TLS, same JSON parsing of the body, no decision).
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from devkit.factories import Issuer, node_object, pod_object, trust_policy
from devkit.pki import issue_cert
from trustgate.audit.sinks import AuditLog, JsonLinesSink
from trustgate.core.snapshot import Snapshot, StaticCluster
from webhook.app import create_app
from webhook.review import dumps, loads

EXPIRED_NODE = "worker-expired"
NO_REPORT_NODE = "worker-noreport"
TRUSTED_SELECTOR = {"trustgate.dev/trusted": "true"}


def node_name(index: int) -> str:
    return f"node-{index:04d}"


def bench_snapshot(nodes: int = 1000, issuer: Issuer | None = None) -> Snapshot:
    issuer = issuer or Issuer()
    now = time.time()
    names = [node_name(i) for i in range(nodes)]
    reports = {name: issuer.token(name, asset_tags={"country": "US", "tenant": "acme"}) for name in names}
    reports[EXPIRED_NODE] = issuer.token(EXPIRED_NODE, now=now - 7200, ttl=3600)
    objects = [node_object(n) for n in [*names, EXPIRED_NODE, NO_REPORT_NODE]]
    for obj in objects:
        obj["metadata"]["labels"] |= {
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": "zone-a",
            "node.kubernetes.io/instance-type": "m5",
        }
    policies = [
        trust_policy("pci", namespaceSelector={"matchLabels": {"compliance": "pci"}}),
        trust_policy("encrypted", encryptedImages=["registry.example/secret/*"]),
        trust_policy("sensitive", podSelector={"matchLabels": {"tier": "sensitive"}}, enforcement="Warn"),
        trust_policy("watched", podSelector={"matchExpressions": [{"key": "audit", "operator": "Exists"}]}),
    ]
    namespaces = {
        "default": {"kubernetes.io/metadata.name": "default"},
        "shop": {"kubernetes.io/metadata.name": "shop", "team": "web"},
        "payments": {"kubernetes.io/metadata.name": "payments", "compliance": "pci"},
    }
    return Snapshot.build(issuer.verifier(), nodes=objects, reports=reports, policies=policies, namespaces=namespaces)


def create() -> Flask:
    nodes = int(os.environ.get("TRUSTGATE_BENCH_NODES", "1000"))
    sink = JsonLinesSink(os.environ.get("TRUSTGATE_BENCH_AUDIT", os.devnull))
    app = create_app(StaticCluster(bench_snapshot(nodes)), AuditLog([sink]))
    gc.freeze()  # long-lived objects out of the collector's way: a full collection costs ~7 ms otherwise
    return app


def noop() -> Flask:
    app = Flask("noop-webhook")

    @app.post("/validate")
    def validate() -> Response:
        review = loads(request.get_data(cache=False))  # the webhook's JSON library, for a fair floor
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
        return Response(dumps(answer), mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    gc.freeze()
    return app


def realistic_pod(node: str, namespace: str = "shop") -> dict[str, Any]:
    """A pod as a ReplicaSet controller creates it (after defaulting), pinned to `node` by nodeName."""
    pod = pod_object(
        name="web-7d4b9c8f6-x2x9z",
        namespace=namespace,
        labels={"app.kubernetes.io/name": "web", "pod-template-hash": "7d4b9c8f6", "tier": "frontend"},
        node_selector=TRUSTED_SELECTOR | {"kubernetes.io/os": "linux"},
        images=["registry.example/shop/web:2.14.1", "registry.example/ops/envoy:1.30.2"],
        init_images=["registry.example/ops/migrate:2.14.1"],
        node_name=node,
    )
    pod["metadata"] |= {
        "generateName": "web-7d4b9c8f6-",
        "uid": "3f1c5d1e-8a11-4a3c-9f55-2b1f7f0f8a21",
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-26T09:00:00Z", "prometheus.io/scrape": "true"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d4b9c8f6",
                "uid": "b3a1c2d4-0000-4000-8000-000000000001",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    spec = pod["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        container |= {
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(8)],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            "volumeMounts": [
                {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
            ],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 5},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
        }
    spec |= {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "web",
        "schedulerName": "default-scheduler",
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "volumes": [
            {
                "name": "kube-api-access-x1",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    ],
                },
            }
        ],
    }
    pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
    return pod


def admission_review(
    node: str, namespace: str = "shop", uid: str = "f0b2a1c9-6b8e-4c1d-9a7f-0e5d4c3b2a10"
) -> dict[str, Any]:
    """A pods CREATE AdmissionReview as kube-apiserver sends it."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": "web-7d4b9c8f6-x2x9z",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "c1d2e3f4-0000-4000-8000-000000000002",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": realistic_pod(node, namespace),
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def write_tls(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    leaf = issue_cert(
        None, "trustgate-webhook.bench", ["localhost", "127.0.0.1"], server=True, out_dir=directory, name="tls"
    )
    return leaf.cert_file, leaf.key_file
