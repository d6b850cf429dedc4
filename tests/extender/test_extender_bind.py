"""POST /bind: a trust-requiring pod is bound only if its node still passes at that moment."""

from __future__ import annotations

from typing import Any

from devkit.factories import pod_object
from extender.app import create_app
from trustgate.core.snapshot import StaticCluster

from .extender_support import NOW, World, names_args, trust_pod


class Binder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.bound: list[tuple[str, str, str, str]] = []
        self.fail = fail

    def __call__(self, namespace: str, pod: str, uid: str, node: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.bound.append((namespace, pod, uid, node))


def binding(pod: dict[str, Any], node: str) -> dict[str, str]:
    metadata = pod["metadata"]
    return {"PodName": metadata["name"], "PodNamespace": metadata["namespace"], "PodUID": metadata["uid"], "Node": node}


def with_uid(pod: dict[str, Any], uid: str = "9f1c") -> dict[str, Any]:
    pod["metadata"]["uid"] = uid
    return pod


def test_a_filtered_trust_pod_is_bound_to_a_node_that_still_passes(world: World) -> None:
    world.node("good")
    binder = Binder()
    client = world.client(binder=binder)
    pod = with_uid(trust_pod())
    assert client.post("/filter", json=names_args(pod, ["good"])).get_json()["NodeNames"] == ["good"]
    answer = client.post("/bind", json=binding(pod, "good"))
    assert answer.status_code == 200 and answer.get_json() == {"Error": ""}
    assert binder.bound == [("default", "secure", "9f1c", "good")]


def test_a_node_that_lost_trust_since_the_filter_is_refused_and_nothing_is_written(world: World) -> None:
    world.node("good")
    pod = with_uid(trust_pod())
    world.client().post("/filter", json=names_args(pod, ["good"]))
    world.reports["good"] = world.issuer.token("good", now=NOW - 60, levels={"kernel": False})  # revoked meanwhile
    binder = Binder()
    cluster = StaticCluster(world.snapshot(), pods=[pod])
    answer = (
        create_app(cluster, clock=lambda: NOW, binder=binder).test_client().post("/bind", json=binding(pod, "good"))
    )
    assert answer.get_json()["Error"] == "trustgate: node good no longer passes: level kernel not trusted"
    assert binder.bound == []


def test_a_pod_neither_filtered_nor_found_is_not_bound(world: World) -> None:
    world.node("good")
    binder = Binder()
    answer = world.client(binder=binder).post("/bind", json=binding(with_uid(trust_pod()), "good"))
    assert "pod default/secure not found" in answer.get_json()["Error"]
    assert binder.bound == []


def test_a_pod_that_needs_no_trust_is_bound_wherever_the_scheduler_says(world: World) -> None:
    world.node("bare", report=False)
    binder = Binder()
    pod = with_uid(pod_object("plain"))
    cluster = StaticCluster(world.snapshot(), pods=[pod])
    answer = (
        create_app(cluster, clock=lambda: NOW, binder=binder).test_client().post("/bind", json=binding(pod, "bare"))
    )
    assert answer.get_json() == {"Error": ""} and binder.bound == [("default", "plain", "9f1c", "bare")]


def test_a_refused_binding_write_is_an_error_for_the_scheduler_to_retry(world: World) -> None:
    world.node("good")
    client = world.client(binder=Binder(fail=ConnectionError("apiserver unreachable")))
    pod = with_uid(trust_pod())
    client.post("/filter", json=names_args(pod, ["good"]))
    assert "apiserver unreachable" in client.post("/bind", json=binding(pod, "good")).get_json()["Error"]


def test_binding_args_are_decoded_like_go_and_malformed_ones_refused(world: World) -> None:
    world.node("good")
    binder = Binder()
    client = world.client(binder=binder)
    pod = with_uid(trust_pod())
    client.post("/filter", json=names_args(pod, ["good"]))
    lower = {"podname": "secure", "podnamespace": "default", "poduid": "9f1c", "node": "good"}
    assert client.post("/bind", json=lower).get_json() == {"Error": ""}
    assert client.post("/bind", json={"PodName": "secure"}).status_code == 400
    assert client.post("/bind", data="{}", content_type="text/plain").status_code == 415
