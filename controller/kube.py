"""The controller's writes to the API server: webhook configurations and Events about policies."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.webhooks import CONFIGURATION, INVALID_POLICY
from trustgate.cluster.resources import GROUP_VERSION
from trustgate.core.policy import TrustPolicy

COMPONENT = "trustgate-controller"


class KubeWriter:
    def __init__(self, api: client.ApiClient, name: str = CONFIGURATION) -> None:
        self.admission = client.AdmissionregistrationV1Api(api)
        self.core = client.CoreV1Api(api)
        self.name = name

    def write(self, validating: list[dict[str, Any]], mutating: list[dict[str, Any]]) -> None:
        # The mark first: once the validating webhooks reach a newly covered namespace they refuse its
        # unmarked pods, so the mutating webhook must be marking them by then. (Narrowing in this order
        # only marks a few pods that no longer need it, which the extender passes untouched.)
        self._put("MutatingWebhookConfiguration", mutating)
        self._put("ValidatingWebhookConfiguration", validating)

    def _put(self, kind: str, webhooks: list[dict[str, Any]]) -> None:
        suffix = (
            "validating_webhook_configuration" if kind.startswith("Validating") else "mutating_webhook_configuration"
        )
        read, replace = (getattr(self.admission, f"{verb}_{suffix}") for verb in ("read", "replace"))
        body: dict[str, Any] = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/managed-by": "trustgate"}},
            "webhooks": webhooks,
        }
        for _ in range(5):  # optimistic concurrency: re-read after a conflict
            try:
                current = read(self.name, _preload_content=False)
            except ApiException as error:
                if error.status == 404:  # the install creates it; the controller may not create webhooks
                    raise RuntimeError(f"{kind} {self.name} does not exist: reinstall trustgate") from None
                raise
            existing = json.loads(current.data)
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            body["metadata"]["labels"] = {**(existing["metadata"].get("labels") or {}), **body["metadata"]["labels"]}
            try:
                replace(self.name, body)
                return
            except ApiException as error:
                if error.status != 409:
                    raise
        raise RuntimeError(f"{kind} {self.name} kept changing under us; retrying later")

    def report_invalid(self, policy: TrustPolicy) -> None:
        assert policy.error is not None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.core.create_namespaced_event(
            "default",  # Events about cluster-scoped objects live in the default namespace
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{policy.name}."},
                "involvedObject": {"apiVersion": GROUP_VERSION, "kind": "TrustPolicy", "name": policy.name},
                "reason": INVALID_POLICY,
                "type": "Warning",
                "message": policy.error.message[:1024],
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "source": {"component": COMPONENT},
            },
        )


class KubeSecrets:
    """Secrets and ConfigMaps in trustgate's namespace, for `controller.certificates`."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def read(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    def write(self, name: str, data: Mapping[str, bytes]) -> None:
        tls = "tls.crt" in data and "tls.key" in data
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "trustgate"}},
            "type": "kubernetes.io/tls" if tls else "Opaque",
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }
        self._put(
            self.core.read_namespaced_secret,
            self.core.create_namespaced_secret,
            self.core.replace_namespaced_secret,
            name,
            body,
        )

    def publish(self, name: str, data: Mapping[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "trustgate"}},
            "data": dict(data),
        }
        core = self.core
        self._put(
            core.read_namespaced_config_map,
            core.create_namespaced_config_map,
            core.replace_namespaced_config_map,
            name,
            body,
        )

    def _put(self, read: Any, create: Any, replace: Any, name: str, body: dict[str, Any]) -> None:
        try:
            current = read(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            create(self.namespace, body)
            return
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        replace(name, self.namespace, body)
