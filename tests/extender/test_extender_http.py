"""Bad input, probes and metrics: every protocol error is a 4xx with an `Error`, never a traceback."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from devkit.factories import pod_object
from extender.app import create_app
from trustgate.core.snapshot import StaticCluster

from .extender_support import NOW, World, names_args, nodes_args, trust_pod

ERROR_KEYS = {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}


@pytest.fixture
def client(world: World):
    world.node("good")
    world.node("bare", report=False)
    return world.client(max_body_bytes=64 * 1024)


def assert_error(response, status: int, words: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == ERROR_KEYS
    assert body["NodeNames"] is None and body["Nodes"] is None
    assert words in body["Error"], body["Error"]
    assert "Traceback" not in body["Error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"NodeNames": ["good"]}', "has no Pod"),
        (b'{"Pod": null, "NodeNames": ["good"]}', "has no Pod"),
        (b'{"Pod": "web", "NodeNames": ["good"]}', "Pod must be a v1.Pod object"),
        (b'{"Pod": {}, "NodeNames": null, "Nodes": null}', "neither NodeNames nor Nodes"),
        (b'{"Pod": {}}', "neither NodeNames nor Nodes"),
        (b'{"Pod": {}, "NodeNames": ["good"], "Nodes": {"items": []}}', "not both"),
        (b'{"Pod": {}, "NodeNames": "good"}', "NodeNames must be a list"),
        (b'{"Pod": {}, "NodeNames": ["good", 3]}', "NodeNames must be a list"),
        (b'{"Pod": {}, "Nodes": []}', "Nodes must be a v1.NodeList"),
        (b'{"Pod": {}, "Nodes": {"items": {}}}', "items must be a list"),
        (b'{"Pod": {}, "Nodes": {"items": ["good"]}}', "items must be a list"),
    ],
)
def test_malformed_args_are_rejected(client, body: bytes, words: str) -> None:
    for path in ("/filter", "/prioritize"):
        assert_error(client.post(path, data=body, content_type="application/json"), 400, words)


@pytest.mark.parametrize("pod", [trust_pod(), pod_object("plain")], ids=["trust", "plain"])
def test_malformed_node_objects_are_rejected(client, pod) -> None:
    for node in ({"metadata": "good"}, {"metadata": {"name": 7}}, {"kind": "Node"}):
        args = nodes_args(pod, [node])
        response = client.post("/filter", data=json.dumps(args), content_type="application/json")
        if pod["metadata"]["name"] == "plain":
            assert response.status_code == 200  # the fast path does not look at nodes, it echoes them
        else:
            assert_error(response, 400, "v1.Node without metadata.name")


@pytest.mark.parametrize(
    "node",
    [
        {"metadata": {"name": "good"}, "status": {"nodeInfo": "x"}},
        {"metadata": {"name": "good"}, "status": "Ready"},
        {"metadata": {"name": "good", "labels": ["a"]}},
    ],
)
def test_a_malformed_node_is_rejected(client, node) -> None:
    response = client.post("/filter", data=json.dumps(nodes_args(trust_pod(), [node])), content_type="application/json")
    assert_error(response, 400, "malformed v1.Node 'good'")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_content_type_must_be_json(client, content_type) -> None:
    body = json.dumps(names_args(trust_pod(), ["good"]))
    response = client.post("/filter", data=body, content_type=content_type)
    assert_error(response, 415, "Content-Type must be application/json")


def test_json_content_type_with_charset_is_fine(client) -> None:
    body = json.dumps(names_args(trust_pod(), ["good"]))
    response = client.post("/filter", data=body, content_type="application/json; charset=utf-8")
    assert response.status_code == 200


def test_body_over_the_limit(client) -> None:
    names = [f"node-{i:06d}" for i in range(8000)]
    response = client.post("/filter", data=json.dumps(names_args(trust_pod(), names)), content_type="application/json")
    assert_error(response, 413, "Request Entity Too Large")


def test_unknown_verb_and_wrong_method(client) -> None:
    assert_error(client.post("/unbind", json={}), 404, "Not Found")
    assert_error(client.post("/preempt", json={}), 404, "Not Found")
    response = client.get("/filter")
    assert_error(response, 405, "Method Not Allowed")
    assert response.headers["Allow"] == "POST"
    assert_error(client.put("/prioritize", json={}), 405, "Method Not Allowed")
    assert_error(client.post("/healthz"), 405, "Method Not Allowed")


class Exploding(StaticCluster):
    def snapshot(self):
        raise RuntimeError("secret detail")


def test_an_unexpected_error_is_a_generic_500(world: World, caplog) -> None:
    app = create_app(Exploding(world.snapshot()), CollectorRegistry(), clock=lambda: NOW)
    response = app.test_client().post("/filter", json=names_args(trust_pod(), ["good"]))
    assert_error(response, 500, "internal error")
    assert "secret detail" not in response.get_data(as_text=True)
    assert "secret detail" in caplog.text


# --- probes and metrics --------------------------------------------------------------------------


def test_healthz_and_readyz(world: World) -> None:
    world.node("good")
    client = world.client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    world.synced = False
    world.registry = CollectorRegistry()
    unsynced = world.client()
    assert unsynced.get("/healthz").status_code == 200
    assert unsynced.get("/readyz").status_code == 503


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_metrics(world: World) -> None:
    world.node("good")
    world.node("bare", report=False)
    world.node("expired", now=NOW - 7200, ttl=3600)
    world.node("kernel", levels={"kernel": False})
    client = world.client()
    client.post("/filter", json=names_args(trust_pod(), ["good", "bare", "expired", "kernel", "gone"]))
    client.post("/filter", json=names_args(pod_object("plain"), ["good"]))
    client.post("/prioritize", json=names_args(trust_pod(), ["good"]))
    client.post("/filter", data=b"{", content_type="application/json")
    registry = world.registry
    assert sample(registry, "trustgate_extender_requests_total", verb="filter", code="200") == 2
    assert sample(registry, "trustgate_extender_requests_total", verb="filter", code="400") == 1
    assert sample(registry, "trustgate_extender_requests_total", verb="prioritize", code="200") == 1
    assert sample(registry, "trustgate_extender_request_duration_seconds_count", verb="filter") == 3
    assert sample(registry, "trustgate_extender_errors_total", verb="filter", kind="bad_request") == 1
    assert sample(registry, "trustgate_extender_filtered_pods_total", requires_trust="true") == 1
    assert sample(registry, "trustgate_extender_filtered_pods_total", requires_trust="false") == 1
    for reason in ("no_report", "expired", "level", "unknown_node"):
        assert sample(registry, "trustgate_extender_nodes_failed_total", reason=reason) == 1, reason
    assert sample(registry, "trustgate_extender_cache_nodes") == 4
    assert 0 <= sample(registry, "trustgate_extender_cache_age_seconds") < 60
    assert sample(registry, "trustgate_extender_cache_synced") == 1
    text = client.get("/metrics").get_data(as_text=True)
    assert 'trustgate_extender_nodes_failed_total{reason="expired"} 1.0' in text
    assert client.get("/metrics").headers["Content-Type"].startswith("text/plain")


def test_not_synced_is_counted(world: World) -> None:
    world.synced = False
    world.client().post("/filter", json=names_args(trust_pod(), ["good"]))
    assert sample(world.registry, "trustgate_extender_errors_total", verb="filter", kind="not_synced") == 1


def test_apps_with_default_registries_do_not_collide(world: World) -> None:
    first = create_app(StaticCluster(world.snapshot()))
    second = create_app(StaticCluster(world.snapshot()))
    assert b"trustgate_extender_requests_total" in first.test_client().get("/metrics").data
    assert b"process_" in second.test_client().get("/metrics").data


STDLIB_CHECK = """
import json, sys
sys.modules["orjson"] = None  # as if orjson were not installed
from extender import wire
assert wire.JSON_LIBRARY == "json", wire.JSON_LIBRARY
args = wire.decode_args(json.dumps({"pod": {}, "nodenames": ["a", "\u00e9"]}).encode())
assert args.node_names == ["a", "\u00e9"]
from trustgate.core.reasons import NO_REPORT
reply = json.loads(wire.encode_filter_result(args, ["\u00e9"], {"a": (NO_REPORT,)}))
assert reply["NodeNames"] == ["\u00e9"] and reply["FailedAndUnresolvableNodes"] == {"a": "no trust report"}
for hosts in (["a", "\u00e9"], ["a", 'b"c\\\\d\\n']):
    dicts = [{"Host": host, "Score": score} for host, score in zip(hosts, [10, 0])]
    expected = json.dumps(dicts, separators=(",", ":"), ensure_ascii=False).encode()
    assert wire.encode_priorities(hosts, [10, 0]) == expected, (wire.encode_priorities(hosts, [10, 0]), expected)
try:
    wire.decode_args(b"[" * 100000)
except wire.WireError as error:
    assert "not valid JSON" in str(error)
else:
    raise AssertionError("deep nesting accepted")
print("ok")
"""


def test_the_wire_works_without_orjson() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", STDLIB_CHECK], cwd=root, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_deeply_nested_json_is_a_bad_request(client) -> None:
    response = client.post("/filter", data=b'{"Pod": ' + b"[" * 10_000, content_type="application/json")
    assert_error(response, 400, "not valid JSON")
