"""Plain-data builders for tests: signing keys, reports and Kubernetes objects as the API serves them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trustgate.core.keys import KeySet, PrivateKey, generate_private_key, jwks_for, keys_from_jwks
from trustgate.core.report import ReportVerifier, VerifierSettings
from trustgate.core.signing import report_claims, sign_claims

ISSUER = "https://aias.example"


@dataclass
class Issuer:
    """An attestation authority for tests: a key, its JWKS and a verifier trusting it."""

    alg: str = "ES256"
    name: str = ISSUER
    key: PrivateKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = generate_private_key(self.alg)

    @property
    def jwks(self) -> dict[str, Any]:
        return jwks_for(self.key.public_key(), self.alg)  # type: ignore[arg-type]

    def keyset(self) -> KeySet:
        return KeySet(keys_from_jwks(self.jwks))

    def verifier(self, **settings: Any) -> ReportVerifier:
        return ReportVerifier(self.keyset(), VerifierSettings(issuers=frozenset({self.name}), **settings))

    def claims(self, node: str, **overrides: Any) -> dict[str, Any]:
        base = report_claims(
            issuer=self.name,
            node=node,
            system_uuid=overrides.pop("system_uuid", uuid_of(node)),
            boot_id=overrides.pop("boot_id", boot_of(node)),
            ttl_seconds=overrides.pop("ttl", 3600),
            levels=overrides.pop("levels", None),
            asset_tags=overrides.pop("asset_tags", None),
            now=overrides.pop("now", time.time()),
        )
        return base | overrides

    def token(self, node: str, **overrides: Any) -> str:
        return sign_claims(self.claims(node, **overrides), self.key, alg=self.alg)


def uuid_of(node: str) -> str:
    return f"4c4c4544-0000-1000-8000-{abs(hash(node)) % 10**12:012d}"


def boot_of(node: str) -> str:
    return f"b00700{abs(hash(node + 'boot')) % 10**8:08d}"


def node_object(
    name: str,
    labels: Mapping[str, str] | None = None,
    system_uuid: str | None = None,
    boot_id: str | None = None,
) -> dict[str, Any]:
    """A `v1.Node` as a node agent registers it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {"kubernetes.io/hostname": name})},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "nodeInfo": {
                "systemUUID": uuid_of(name) if system_uuid is None else system_uuid,
                "bootID": boot_of(name) if boot_id is None else boot_id,
            },
        },
    }


def pod_object(
    name: str = "web",
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    node_selector: Mapping[str, str] | None = None,
    affinity_terms: list[dict[str, Any]] | None = None,
    images: list[str] | None = None,
    init_images: list[str] | None = None,
    ephemeral_images: list[str] | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """A `v1.Pod`; `affinity_terms` are nodeSelectorTerms of required node affinity."""
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images or ["nginx:1.27"])]
    }
    if init_images:
        spec["initContainers"] = [{"name": f"init{i}", "image": image} for i, image in enumerate(init_images)]
    if ephemeral_images:
        spec["ephemeralContainers"] = [{"name": f"dbg{i}", "image": image} for i, image in enumerate(ephemeral_images)]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if affinity_terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": affinity_terms}}
        }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "labels": dict(labels or {}),
        },
        "spec": spec,
    }


def trust_policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustPolicy", "metadata": {"name": name}, "spec": spec}
