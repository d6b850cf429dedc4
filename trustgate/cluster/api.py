"""The one way trustgate builds an API client, and raw JSON reads that skip model deserialization.

Decisions work on plain dicts; reading raw JSON through the kubernetes client's `ApiClient`
(instead of its models) keeps a 5,000-node relist cheap.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from trustgate.cluster.resources import Resource

LIST_PAGE = 500


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A client for `kubeconfig`; without one, as kubectl: $KUBECONFIG or ~/.kube/config, else in-cluster."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        return config.new_client_from_config()
    except config.ConfigException:
        config.load_incluster_config()
        return client.ApiClient()


def get_raw(api: client.ApiClient, path: str, query: list[tuple[str, Any]], timeout: float) -> Any:
    """GET `path` as raw JSON; returns the streaming urllib3 response, raises ApiException unless 2xx."""
    method, url, headers, body, post_params = api.param_serialize(
        "GET", path, query_params=query, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, headers, body, post_params, _request_timeout=(5, timeout))
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason, body=response.read())
    return response.response


def get_object(
    api: client.ApiClient, path: str, timeout: float = 3, query: list[tuple[str, Any]] | None = None
) -> dict[str, Any] | None:
    """One object as plain JSON; None when it does not exist."""
    try:
        return json.loads(get_raw(api, path, query or [], timeout).data)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def list_objects(api: client.ApiClient, resource: Resource) -> tuple[list[dict[str, Any]], str]:
    """Every object of `resource` as plain JSON, page by page, and the list's resourceVersion."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        query: list[tuple[str, Any]] = [*resource.query, ("limit", LIST_PAGE)]
        if token:
            query.append(("continue", token))
        try:
            page = json.loads(get_raw(api, resource.path, query, 60).data)
        except ApiException as error:
            if error.status == 410:
                items, token = [], None  # the continue token expired mid-list: start over
                continue
            raise
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items, page["metadata"]["resourceVersion"]


def post_raw(api: client.ApiClient, path: str, body: dict[str, Any]) -> Any:
    """POST `body` to `path` and return the response, its body read, whatever its status: the API server
    answers subresources (a Binding, an Eviction) with a Status the generated client cannot read.

    The body is always read: an unread response keeps its connection out of the pool, and every
    request would then open (and handshake) a connection of its own."""
    method, url, headers, payload, post_params = api.param_serialize(
        "POST",
        path,
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, payload, post_params, _request_timeout=(5, 10))
    response.read()
    return response


def bind_pod(api: client.ApiClient, namespace: str, name: str, uid: str, node: str) -> None:
    """Write the Binding of a pod to a node (the scheduler's last step); raises ApiException on refusal.

    A raw POST: the generated client's `create_namespaced_binding` cannot read the API server's answer
    (a Status, not a Binding)."""
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, **({"uid": uid} if uid else {})},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    response = post_raw(api, f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body)
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason, body=response.read())
