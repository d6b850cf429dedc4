"""Pods are not watched: a Binding's pod is read when a Binding is judged, from the API server's watch cache.

Watched, every pod of the cluster would cost each webhook worker an event at its creation and one at its
binding, whether it needs trust or not."""

from __future__ import annotations

import json
from typing import Any

from devkit.factories import Issuer, pod_object
from trustgate.cluster.cache import ClusterCache


class RecordingApi:
    """The two calls `trustgate.cluster.api.get_raw` makes, answered from `pods` by path."""

    def __init__(self, pods: dict[str, dict[str, Any]]) -> None:
        self.pods, self.reads = pods, []

    def param_serialize(self, method: str, path: str, query_params: list[tuple[str, Any]], **_: Any) -> tuple:
        self.reads.append((path, dict(query_params)))
        return method, path, {}, None, []

    def call_api(self, method: str, path: str, *_: Any, **__: Any) -> Any:
        found = self.pods.get(path)
        return Response(200, json.dumps(found).encode()) if found is not None else Response(404, b"{}")


class Response:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data, self.reason, self.response = status, data, "", self

    def read(self) -> bytes:
        return self.data


PATH = "/api/v1/namespaces/default/pods/web"


def test_the_cluster_cache_watches_no_pods() -> None:
    cache = ClusterCache(api=None, verifier=Issuer().verifier())  # type: ignore[arg-type] - never started

    assert "Pod" not in {reflector.resource.kind for reflector in cache.reflectors}


def test_a_bindings_pod_is_read_from_the_api_servers_watch_cache_once() -> None:
    api = RecordingApi({PATH: pod_object()})
    cache = ClusterCache(api=api, verifier=Issuer().verifier())  # type: ignore[arg-type]

    pod = cache.find_pod("default", "web", "uid-default-web")

    assert pod is not None and pod["metadata"]["name"] == "web"
    assert api.reads == [(PATH, {"resourceVersion": "0"})]


def test_a_pod_the_watch_cache_lacks_or_has_with_another_uid_is_read_from_etcd_and_missing_is_none() -> None:
    api = RecordingApi({PATH: pod_object()})
    cache = ClusterCache(api=api, verifier=Issuer().verifier())  # type: ignore[arg-type]

    assert cache.find_pod("default", "web", "another-uid") is not None  # read again: a quorum read
    assert cache.find_pod("default", "gone", "") is None

    assert api.reads == [
        (PATH, {"resourceVersion": "0"}),
        (PATH, {}),
        ("/api/v1/namespaces/default/pods/gone", {"resourceVersion": "0"}),
        ("/api/v1/namespaces/default/pods/gone", {}),
    ]
