"""The webhook never locks the cluster: what keeps working while it is down, and the README's
emergency procedure ("If the webhook is down") run step by step with the real kubectl.

Uses the shared session stack and leaves it as it found it: the webhook process running and the
ValidatingWebhookConfiguration of deploy/webhook.yaml registered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.devstack import DevStack
from devkit.waiting import eventually

pytestmark = pytest.mark.e2e

PAUSE = "registry.k8s.io/pause:3.10"
UNTRUSTED_NODE = "emergency-no-report"  # no Node, no report: trust-requiring pods are refused there


def pod(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [{"name": "main", "image": PAUSE}],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            **spec,
        },
    }


def trust_pod(name: str, namespace: str) -> dict[str, Any]:
    """The pod the webhook exists to stop: trust required, pinned to a node without a report."""
    return pod(name, namespace, nodeName=UNTRUSTED_NODE, nodeSelector={"trustgate.dev/trusted": "true"})


def create(stack: DevStack, manifest: dict[str, Any], dry_run: bool = False) -> tuple[bool, str]:
    args = ["create", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    result = stack.kubectl(*args, check=False, input=json.dumps(manifest))
    return result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def namespaces(stack: DevStack) -> Iterator[None]:
    stack.kubectl("create", "namespace", "emergency", check=False)
    # Trying to pass as kube-system: the apiserver sets kubernetes.io/metadata.name to the real name,
    # so the exclusion (by that label) cannot be claimed by labelling a namespace.
    fake = {"kubernetes.io/metadata.name": "kube-system", "trustgate.dev/exempt": "true"}
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fake-system", "labels": fake}}
    stack.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    for namespace in ("emergency", "fake-system"):
        eventually(
            lambda ns=namespace: stack.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
            f"the default ServiceAccount of {namespace}",
        )
    yield
    for namespace in ("kube-system", "trustgate-system"):
        stack.kubectl("delete", "pod", "-n", namespace, "-l", "emergency-test", "--wait=false", check=False)
    stack.kubectl("delete", "namespace", "emergency", "fake-system", "--wait=false", check=False)


def register(stack: DevStack) -> None:
    """deploy/webhook.yaml's configuration, from scratch (a clean last-applied annotation)."""
    stack.kubectl("delete", "validatingwebhookconfiguration", "trustgate", "--ignore-not-found")
    stack._register_webhook()


@pytest.fixture
def restored(stack: DevStack, namespaces: None) -> Iterator[None]:
    """Whatever a test does, the webhook runs and is registered as deployed afterwards."""
    try:
        yield
    finally:
        register(stack)
        if "webhook" not in stack._procs:
            stack.start_service("webhook")
        eventually(lambda: create(stack, trust_pod("after", "emergency"), dry_run=True)[0] is False, "the webhook back")


@pytest.fixture
def webhook_down(stack: DevStack, restored: None) -> None:
    stack.stop_service("webhook")


def test_with_the_webhook_down_only_kube_system_and_trustgate_system_admit_pods(stack, webhook_down) -> None:
    started = time.monotonic()
    for namespace in ("kube-system", "trustgate-system"):
        for manifest in (pod("emergency-plain", namespace), trust_pod("emergency-trust", namespace)):
            manifest["metadata"]["labels"] = {"emergency-test": "true"}
            admitted, error = create(stack, manifest)
            assert admitted, f"{namespace} must never depend on the webhook: {error}"
    for namespace in ("emergency", "fake-system"):
        admitted, error = create(stack, pod("plain", namespace))
        assert not admitted and 'failed calling webhook "pods.trustgate.dev"' in error, error
    labels = stack.cp.client().get("/api/v1/namespaces/fake-system")["metadata"]["labels"]
    assert labels["kubernetes.io/metadata.name"] == "fake-system"
    print(
        f"\nwebhook down: kube-system and trustgate-system admitted, others refused ({time.monotonic() - started:.1f}s)"
    )


# README, "If the webhook is down": keep the applied manifest itself (no server fields such as
# resourceVersion or uid), so that applying it back leaves the next `kubectl apply` of deploy/ working.
README_SAVE = ["apply", "view-last-applied", "validatingwebhookconfiguration", "trustgate"]


def test_the_emergency_procedure_restores_admission_and_then_the_backstop(stack, webhook_down, tmp_path) -> None:
    saved: Path = tmp_path / "trustgate-webhook.yaml"
    # 0. the outage: every pod in a covered namespace is refused
    admitted, error = create(stack, pod("blocked", "emergency"))
    assert not admitted and "failed calling webhook" in error

    # 1. keep a copy: kubectl apply view-last-applied validatingwebhookconfiguration trustgate > trustgate-webhook.yaml
    saved.write_text(stack.kubectl(*README_SAVE).stdout)
    assert yaml.safe_load(saved.read_text())["webhooks"][0]["failurePolicy"] == "Fail"

    # 2. kubectl delete validatingwebhookconfiguration trustgate
    deleted_at = time.monotonic()
    stack.kubectl("delete", "validatingwebhookconfiguration", "trustgate")

    # admission is restored (the apiserver drops the webhook from its informer within moments)
    eventually(lambda: create(stack, pod("restored", "emergency"))[0], "a pod admitted without the webhook", 30)
    restored = time.monotonic() - deleted_at
    # ... and the backstop is gone, as the README warns: a trust pod on an untrusted node gets in
    assert create(stack, trust_pod("unchecked", "emergency"), dry_run=True)[0]

    # 3. repair trustgate-webhook, 4. kubectl apply -f trustgate-webhook.yaml
    stack.start_service("webhook")
    applied = stack.kubectl("apply", "-f", str(saved), check=False)
    assert applied.returncode == 0, f"the saved configuration does not apply back: {applied.stderr}"
    reapplied = time.monotonic()

    # the backstop is back: the same trust pod is refused again, with its reason
    def refused() -> str | None:
        admitted, error = create(stack, trust_pod("checked", "emergency"), dry_run=True)
        return None if admitted else error

    error = eventually(refused, "the webhook enforcing again", 30)
    assert "denied the request" in error and UNTRUSTED_NODE in error
    assert create(stack, pod("plain-again", "emergency"))[0]  # plain pods are admitted through it
    print(
        f"\nemergency procedure: admission restored {restored:.1f}s after the delete; "
        f"enforcement back {time.monotonic() - reapplied:.1f}s after the re-apply"
    )
    # and the next upgrade (kubectl apply of the manifest) still works
    upgrade = stack.kubectl("apply", "-f", "-", check=False, input=json.dumps(stack.webhook_configuration()))
    assert upgrade.returncode == 0, upgrade.stderr
