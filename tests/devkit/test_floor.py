"""The benchmarks' floor speaks trustgate's protocols and decides nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from devkit.floor import extender, webhook
from extender.main import ExtenderSettings
from trustgate.core.labels import TRUST_RESOURCE
from webhook.main import WebhookSettings

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}


def kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    cluster = {"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}
    context = {"name": "c", "context": {"cluster": "c", "user": "u"}}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "contexts": [context],
        "users": [{"name": "u", "user": {}}],
    }
    path.write_text(json.dumps(config | {"current-context": "c"}))
    return str(path)


def review(operation: str, obj: dict[str, object]) -> dict[str, object]:
    request = {"uid": "r1", "operation": operation, "object": obj, "kind": {"version": "v1", "kind": "Pod"}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def test_the_floor_extender_passes_every_node_it_is_given_and_prefers_none(tmp_path: Path) -> None:
    app = extender(ExtenderSettings(kubeconfig=kubeconfig(tmp_path))).test_client()
    names = ["a", "b", "failing"]
    passed = app.post("/filter", json={"Pod": POD, "NodeNames": names}).get_json()
    assert passed["NodeNames"] == names and not passed["FailedAndUnresolvableNodes"] and not passed["Error"]
    assert app.post("/prioritize", json={"Pod": POD, "NodeNames": names}).get_json() == []


def test_the_floor_webhook_admits_everything_and_marks_created_pods_as_trustgate_does(tmp_path: Path) -> None:
    app = webhook(WebhookSettings(kubeconfig=kubeconfig(tmp_path))).test_client()
    pinned = POD | {"spec": {**POD["spec"], "nodeName": "failing"}}
    assert app.post("/validate", json=review("CREATE", pinned)).get_json()["response"]["allowed"] is True
    marked = app.post("/mutate", json=review("CREATE", POD)).get_json()["response"]
    patch = json.loads(base64.b64decode(marked["patch"]))
    assert marked["allowed"] is True
    assert any(TRUST_RESOURCE in json.dumps(op) for op in patch)
    unchanged = app.post("/mutate", json=review("UPDATE", POD)).get_json()["response"]
    assert unchanged["allowed"] is True and "patch" not in unchanged
