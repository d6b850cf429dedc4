"""Refusals recorded where they outlive the webhook, read back as one list, on the real control plane.

Two webhook replicas behind a round-robin balancer, as a Service spreads the API server's connections
over pods; each writes its records to stdout (its log) and to its own file. A burst of pods is
refused while one replica is killed: every refusal that kube-apiserver's audit log shows is in
`trustctl audit`'s list of the replicas' files and logs, once. Then every sink fails (stdout and
the file on /dev/full): a Warn admission is refused and the unrecorded-records counter moves.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.controlplane.kubeclient import KubeAPIError
from devkit.devstack import ISSUER, DevStack
from devkit.fleet import NO_REPORT, Fleet
from devkit.waiting import eventually
from trustgate.audit.apiserver import records_from_audit_log
from trustgate.audit.record import AuditRecord

pytestmark = pytest.mark.e2e

NAMESPACE = "audit-burst"
BARE = "audit-bare"
PAUSE = "registry.k8s.io/pause:3.10"
BURST = 90
TRUSTCTL = str(Path(sys.executable).parent / "trustctl")


def policy(name: str, label: str, enforcement: str = "Enforce") -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": {"matchLabels": {label: "true"}}, "enforcement": enforcement},
    }


def pinned_pod(name: str, label: str) -> dict[str, Any]:
    """A pod created straight onto the node without a report: only the webhook can stop it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {label: "true"}},
        "spec": {
            "nodeName": BARE,
            "containers": [{"name": "main", "image": PAUSE}],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
        },
    }


@pytest.fixture(scope="module")
def replicas(stack: DevStack) -> Iterator[list[str]]:
    Fleet(stack, ISSUER).add(BARE, NO_REPORT)
    stack.kubectl("create", "namespace", NAMESPACE, check=False)
    for item in (policy("audit-burst", "audit-burst"), policy("audit-warn", "audit-warn", "Warn")):
        stack.kubectl("apply", "-f", "-", input=json.dumps(item))
    eventually(lambda: "audit-warn" in json.dumps(stack.webhooks()), "the webhooks scoped to the policies", 30)
    eventually(
        lambda: stack.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0,
        f"the default ServiceAccount of {NAMESPACE}",
    )
    try:
        yield stack.scale_webhook(2)
    finally:
        stack.stdout.clear()
        stack.service_args.pop("webhook", None)
        stack.scale_webhook(1)
        stack.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        for kind in ("trustpolicy/audit-burst", "trustpolicy/audit-warn", f"node/{BARE}"):
            stack.kubectl("delete", kind, "--ignore-not-found", check=False)


def trustctl_audit(*argv: str) -> list[AuditRecord]:
    result = subprocess.run([TRUSTCTL, "audit", "--json", *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [AuditRecord.from_json(line) for line in result.stdout.splitlines()]


def create(client: Any, body: dict[str, Any]) -> str:
    """`refused` (by trustgate), `failed` (the webhook call failed: the API server refused it) or `created`."""
    try:
        client.create(f"/api/v1/namespaces/{NAMESPACE}/pods", body)
        return "created"
    except KubeAPIError as error:
        if "trustgate: " in error.body and error.status in (403, 503):
            return "refused"
        if "failed calling webhook" in error.body:
            return "failed"
        raise


def test_every_refusal_the_api_server_logged_is_in_trustctl_audit_once_after_a_replica_is_killed_mid_burst(
    stack: DevStack, replicas: list[str]
) -> None:
    assert replicas == ["webhook", "webhook-2"]
    run = uuid.uuid4().hex[:6]
    outcomes: Counter[str] = Counter()
    done = threading.Semaphore(0)
    lock = threading.Lock()

    def creator(indexes: range) -> None:
        client = stack.cp.client()
        for i in indexes:
            outcome = create(client, pinned_pod(f"burst-{run}-{i:03d}", "audit-burst"))
            with lock:
                outcomes[outcome] += 1
            done.release()

    threads = [threading.Thread(target=creator, args=(range(t, BURST, 6),), daemon=True) for t in range(6)]
    for thread in threads:
        thread.start()
    for _ in range(BURST // 3):
        done.acquire(timeout=60)
    stack.crash_service("webhook-2")  # SIGKILL, every worker at once, in the middle of the burst
    for thread in threads:
        thread.join(120)
    assert sum(outcomes.values()) == BURST and outcomes["created"] == 0, outcomes
    assert outcomes["refused"] > BURST // 2, outcomes

    logged = records_from_audit_log([stack.cp.audit_log], namespace=NAMESPACE, decision="rejected")
    logged = [r for r in logged if r.pod.startswith(f"burst-{run}-")]
    assert len(logged) == outcomes["refused"]  # kube-apiserver logged each refusal it returned
    assert all(r.uid for r in logged)

    sources = [arg for replica in replicas for arg in ("--file", str(stack.audit_file(replica)))]
    sources += [arg for replica in replicas for arg in ("--file", str(stack.log_file(replica)))]  # their stdout
    listed = [r for r in trustctl_audit(*sources, "--namespace", NAMESPACE) if r.pod.startswith(f"burst-{run}-")]

    uids = Counter(r.uid for r in listed)
    assert max(uids.values()) == 1, "a record listed twice"
    missing = {r.uid for r in logged} - set(uids)
    assert not missing, f"{len(missing)} refusals in the API server's audit log are not in trustctl audit"
    stdout = [arg for replica in replicas for arg in ("--file", str(stack.log_file(replica)))]
    from_stdout = {r.uid for r in trustctl_audit(*stdout, "--namespace", NAMESPACE)}
    assert {r.uid for r in logged} <= from_stdout  # stdout alone, the log pipeline's copy, has them all too
    by_replica = Counter(r.replica for r in listed)
    assert by_replica["webhook"] > 0 and by_replica["webhook-2"] > 0, by_replica  # both held a part

    everything = trustctl_audit(
        *sources, "--apiserver-audit-log", str(stack.cp.audit_log), "--kubeconfig", str(stack.kubeconfig)
    )
    everything = [r for r in everything if r.pod.startswith(f"burst-{run}-")]
    assert max(Counter(r.uid for r in everything).values()) == 1  # files, Events and the audit log: each once
    assert {r.uid for r in logged} <= {r.uid for r in everything}
    print(f"\nburst of {BURST}: {dict(outcomes)}; records by replica {dict(by_replica)}; audit log {len(logged)}")


def unrecorded(stack: DevStack) -> dict[str, float]:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with urllib.request.urlopen(f"{stack.url('webhook')}/metrics", context=context, timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trustgate_audit_unrecorded_total":
                found[sample.labels["decision"]] = sample.value
            elif sample.name == "trustgate_audit_write_failures_total":
                found[f"sink:{sample.labels['sink']}"] = sample.value
    return found


def test_a_warn_admission_is_refused_when_every_audit_sink_fails_and_the_alert_metric_moves(
    stack: DevStack, replicas: list[str]
) -> None:
    # one replica, one worker (its metrics are the service's), stdout and the audit file on a full disk
    stack.stdout["webhook"] = "/dev/full"
    stack.service_args["webhook"] = ["--audit-log=/dev/full", "--workers=1"]
    stack.scale_webhook(1)
    client = stack.cp.client()
    before = unrecorded(stack)
    assert before["warned"] == 0

    name = f"warned-{uuid.uuid4().hex[:6]}"
    with pytest.raises(KubeAPIError) as refused:
        client.create(f"/api/v1/namespaces/{NAMESPACE}/pods", pinned_pod(name, "audit-warn"))

    assert refused.value.status == 503 and "cannot be recorded" in refused.value.body
    after = unrecorded(stack)
    assert after["warned"] == 1 and after["rejected"] == 1  # the admission, and its refusal (on Events only)
    assert after["sink:stdout"] >= 2 and after["sink:jsonl"] >= 2
    (logged,) = [r for r in records_from_audit_log([stack.cp.audit_log], namespace=NAMESPACE) if r.pod == name]
    assert logged.decision == "rejected" and "audit_unavailable" in logged.codes  # the API server's log has it

    stack.stdout.clear()
    stack.service_args.pop("webhook")
    stack.scale_webhook(1)
    admitted = f"warned-{uuid.uuid4().hex[:6]}"
    assert create(client, pinned_pod(admitted, "audit-warn")) == "created"  # sinks back: admitted, warned
    (record,) = [r for r in trustctl_audit("--file", str(stack.audit_log)) if r.pod == admitted]
    assert record.decision == "warned"
