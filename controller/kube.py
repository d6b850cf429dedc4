"""The controller's writes to the API server: webhook configurations, Events about policies, PolicyReports
and evictions."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.eviction import EvictionBlocked, PodGone
from controller.webhooks import CONFIGURATION, INVALID_POLICY
from trustgate.cluster.api import post_raw
from trustgate.cluster.resources import GROUP_VERSION
from trustgate.core import policyreport
from trustgate.core.policy import TrustPolicy

COMPONENT = "trustgate-controller"


def _written(write: Callable[..., Any], *args: Any) -> bool:
    """Whether `write(*args)` landed; False when another writer was first (409): read again and retry."""
    try:
        write(*args)
    except ApiException as error:
        if error.status != 409:
            raise
        return False
    return True


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
            if _written(replace, self.name, body):
                return
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


class PolicyReports:
    """trustgate's PolicyReports (`wgpolicyk8s.io/v1alpha2`, one per namespace) in the API server."""

    def __init__(self, api: client.ApiClient) -> None:
        self.objects = client.CustomObjectsApi(api)

    def existing(self) -> dict[str, str]:
        found: dict[str, str] = {}
        token = None
        while True:
            page = self.objects.list_cluster_custom_object(
                policyreport.GROUP,
                policyreport.VERSION,
                policyreport.PLURAL,
                label_selector=",".join(f"{k}={v}" for k, v in policyreport.MANAGED_BY.items()),
                field_selector=f"metadata.name={policyreport.REPORT_NAME}",
                limit=500,
                **({"_continue": token} if token else {}),
            )
            for item in page.get("items") or []:
                found[item["metadata"]["namespace"]] = policyreport.content(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return found

    def put(self, report: dict[str, Any]) -> None:
        namespace = report["metadata"]["namespace"]
        args = (policyreport.GROUP, policyreport.VERSION, namespace, policyreport.PLURAL)
        for _ in range(5):  # optimistic concurrency: re-read after a conflict
            try:
                current = self.objects.get_namespaced_custom_object(*args, policyreport.REPORT_NAME)
            except ApiException as error:
                if error.status != 404:
                    raise
                if _written(self.objects.create_namespaced_custom_object, *args, report):
                    return
                continue
            body = json.loads(json.dumps(report))
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if _written(self.objects.replace_namespaced_custom_object, *args, policyreport.REPORT_NAME, body):
                return
        raise RuntimeError(f"PolicyReport {namespace}/{policyreport.REPORT_NAME} kept changing under us")

    def delete(self, namespace: str) -> None:
        try:
            self.objects.delete_namespaced_custom_object(
                policyreport.GROUP, policyreport.VERSION, namespace, policyreport.PLURAL, policyreport.REPORT_NAME
            )
        except ApiException as error:
            if error.status != 404:
                raise


def evict_pod(api: client.ApiClient) -> Callable[[str, str, str], None]:
    """`evict(namespace, name, uid)` through the Eviction API (policy/v1), the pod's uid as a precondition.

    Raises `EvictionBlocked` when the API server refuses for now (429: a PodDisruptionBudget), `PodGone`
    when the pod is gone or is another pod (404, 409), `ApiException` otherwise. A raw POST: the
    generated client cannot read the Status the API server answers."""

    def evict(namespace: str, name: str, uid: str) -> None:
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if uid:
            body["deleteOptions"] = {"preconditions": {"uid": uid}}
        response = post_raw(api, f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", body)
        if 200 <= response.status < 300:
            return
        text = response.read()
        message = _status_message(text) or f"HTTP {response.status}"
        if response.status == 429:
            raise EvictionBlocked(message)
        if response.status in (404, 409):
            raise PodGone(message)
        raise ApiException(status=response.status, reason=response.reason, body=text)

    return evict


def _status_message(text: bytes) -> str:
    try:
        return str(json.loads(text).get("message") or "")
    except (ValueError, AttributeError):
        return ""
