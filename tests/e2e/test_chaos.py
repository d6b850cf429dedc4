"""Chaos on the real control plane: nothing trust-requiring lands on a failing node, whatever breaks.

One dedicated DevStack (real etcd, kube-apiserver, kube-controller-manager, kube-scheduler with the
extender, the webhook and the label controller under gunicorn over TLS), not the shared session
stack: this module kills things. While 1,000 trust-requiring pods are created (a thread pool on the
REST API), the reports of 15 nodes change underneath (renewed, revoked by a failing report, deleted,
replaced by reports that expire within seconds), and the extender and the webhook are SIGKILLed
(master and workers) and restarted, and kube-apiserver is SIGKILLed and restarted (every watch of
every cache breaks). Five more nodes never have a valid report.

The invariant is checked over every binding that happened, after the fact:

- *Which report was in force at the binding* is decided by etcd's order, not by clocks: every
  NodeTrustReport write and every binding gets a resourceVersion from the same etcd, so the report
  in force is the last write to that node with a smaller resourceVersion than the binding's.
- *When the binding happened*: the latest moment it can have happened, `min(seen by our pods
  watch, PodScheduled.lastTransitionTime + 1 s)` (both on this host's clock, as the API writes'
  acknowledgement times are).
- A binding is **misplaced** when the report in force failed the policy (failing report, deleted,
  or valid but `exp + skew` passed) and the binding happened more than `WINDOW` (1 s) after the
  failing write was acknowledged by the API server (or after the expiry). Within that window it is
  **ambiguous**: the services learn of a write through their watches, and the webhook admits a
  binding a moment before it is committed, so a binding racing a revocation by a few hundred
  milliseconds is the documented propagation delay, not a hole. Ambiguous bindings are counted
  and printed; misplaced ones must be zero.
- Stronger, with no window at all: no pod is ever bound to a node that never had a valid report.

Pods stay Pending (no kubelet); only bindings are judged. The services run with `--skew=0`, so a
report is void exactly at its `exp`.

A second test keeps kube-apiserver down for 15 s, long enough for the caches' reconnect backoff to
grow, and revokes a node the moment it is back: neither service may pass that node on the state of
a cache that has not reconnected yet (before trustgate.cluster.cache counted a lost watch as "not synced",
both did for 4-5 s).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import random
import signal
import ssl
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from devkit.controlplane import KubeAPIError, KubeClient
from devkit.devstack import ISSUER, DevStack
from devkit.factories import trust_policy
from devkit.fleet import BAD_SIGNATURE, COPIED, EXPIRED, LEVEL_FAILS, REBOOTED, VALID, Fleet, Host
from devkit.waiting import eventually

from .harness import binaries, running

pytestmark = pytest.mark.e2e

PODS = 1000
CREATE_RATE = 30.0  # pods per second offered (the scheduler binds what it can)
CREATORS = 6
SKEW = 0
WINDOW = 1.0  # seconds after a failing write (or an expiry) during which a binding is "ambiguous"
CHURN_EVERY = 0.25  # seconds between report changes
DYNAMIC = [f"chaos-{i:02d}" for i in range(15)]
PROBE = DYNAMIC[0]  # changed only by the fault thread, to time cache recovery
NEVER_VALID = {
    "never-none": None,
    "never-badsig": BAD_SIGNATURE,
    "never-copied": COPIED,
    "never-level": LEVEL_FAILS,
    "never-expired": EXPIRED,
}
REVOKED_KINDS = (LEVEL_FAILS, COPIED, BAD_SIGNATURE, REBOOTED)
NTR = "/apis/trustgate.dev/v1alpha1/nodetrustreports"
SELECTOR = "app=chaos"


class ChaosStack(DevStack):
    """The dev stack with the services' clock-skew allowance at 0: a report dies exactly at `exp`."""

    def service_argv(self, service: str) -> list[str]:
        return [*super().service_argv(service), f"--skew={SKEW}"]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    yield from running(ChaosStack(tmp_path_factory.mktemp("chaos"), bin_dir=binaries()))


@pytest.fixture(scope="module")
def reports(chaos: ChaosStack) -> Iterator[Reports]:
    """The 20 nodes, their first reports, the namespaces and the TrustPolicy; the report writer."""
    reports = _setup(chaos)
    yield reports
    reports.deletions.watch.stopping.set()


# --- recording report writes --------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    node: str
    action: str  # renew | expiring | revoke:<kind> | delete | initial
    valid: bool  # whether the report written passes the policy (until `exp`)
    exp: float | None
    sent: float
    acked: float
    rv: int


def _exp_of(token: str) -> float:
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


class Reports:
    """Writes NodeTrustReports and records each write with its resourceVersion and client-side times."""

    def __init__(self, stack: DevStack, fleet: Fleet, deletions: Deletions) -> None:
        self.client = stack.cp.client()
        self.fleet = fleet
        self.deletions = deletions
        self.lock = threading.Lock()  # held across a write: the fault thread takes it before killing the apiserver
        self.writes: list[Write] = []
        self.exists: dict[str, bool] = {}

    def write(self, node: str, kind: str | None, ttl: float = 3600, action: str = "") -> Write:
        with self.lock:
            sent = time.time()
            if kind is None:
                status = self.client.delete(f"{NTR}/{node}")
                self.exists[node] = False
                exp = None
                acked = time.time()
                rv = self.deletions.rv_of(node, status["details"]["uid"])
            else:
                token = self.fleet.token(node, kind, ttl=ttl)
                self.fleet.hosts[node].kind = kind
                exp = _exp_of(token)
                if self.exists.get(node):
                    answer = self.client.merge_patch(f"{NTR}/{node}", {"spec": {"token": token}})
                else:
                    body = {"apiVersion": "trustgate.dev/v1alpha1", "kind": "NodeTrustReport"}
                    answer = self.client.create(NTR, body | {"metadata": {"name": node}, "spec": {"token": token}})
                    self.exists[node] = True
                acked = time.time()
                rv = int(answer["metadata"]["resourceVersion"])
            record = Write(node, action or str(kind), kind == VALID, exp, sent, acked, rv)
            self.writes.append(record)
            return record

    def history(self, node: str) -> list[Write]:
        return sorted((w for w in self.writes if w.node == node), key=lambda w: w.rv)


def churn(reports: Reports, stop: threading.Event, seed: int) -> collections.Counter[str]:
    """Change a random node's report every CHURN_EVERY seconds until `stop`."""
    rng = random.Random(seed)
    counts: collections.Counter[str] = collections.Counter()
    nodes = [n for n in DYNAMIC if n != PROBE]
    while not stop.wait(CHURN_EVERY):
        node = rng.choice(nodes)
        action = rng.choices(["renew", "expiring", "revoke", "delete"], weights=[3, 3, 2, 1])[0]
        if action == "delete" and not reports.exists.get(node):
            action = "renew"
        if action == "renew":
            reports.write(node, VALID, action="renew")
        elif action == "expiring":
            reports.write(node, VALID, ttl=rng.uniform(2, 6), action="expiring")
        elif action == "revoke":
            kind = rng.choice(REVOKED_KINDS)
            reports.write(node, kind, action=f"revoke:{kind}")
        else:
            reports.write(node, None, action="delete")
        counts[action] += 1
    return counts


# --- watching bindings and report deletions ----------------------------------------------------


class Watch(threading.Thread):
    """A watch on `path` (resumed from the last resourceVersion, relisted on 410 Gone) that hands each
    object to `see(event_type, object, seen_at)`; a listing hands them as "LISTED"."""

    def __init__(self, stack: DevStack, path: str, see: Any, **params: str) -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        cp = stack.cp
        self.client = cp.client()
        self.context = ssl.create_default_context(cafile=str(cp.ca.cert_file))
        self.context.load_cert_chain(str(cp.pki_dir / "admin.crt"), str(cp.pki_dir / "admin.key"))
        self.url, self.path, self.params, self.see = cp.server + path, path, params, see
        self.stopping = threading.Event()
        self.reconnects = 0

    def run(self) -> None:
        version: str | None = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    listing = self.client.get(self.path, **self.params)
                    now = time.time()
                    for obj in listing["items"]:
                        self.see("LISTED", obj, now)
                    version = listing["metadata"]["resourceVersion"]
                query = urllib.parse.urlencode(
                    {"watch": "1", "resourceVersion": version, "timeoutSeconds": "50", **self.params}
                )
                with urllib.request.urlopen(f"{self.url}?{query}", context=self.context, timeout=60) as response:
                    for line in response:
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            version = None if obj.get("code") == 410 else version
                            break
                        version = obj["metadata"]["resourceVersion"]
                        self.see(event["type"], obj, time.time())
                        if self.stopping.is_set():
                            return
            except Exception:  # the apiserver is restarting: resume from `version`
                self.reconnects += 1
                self.stopping.wait(0.1)


@dataclass
class Seen:
    node: str
    rv: int
    at: float  # when our watch (or a relist) saw it bound
    via_watch: bool


class Bindings:
    """The first resourceVersion at which each pod is bound, and when we saw it."""

    def __init__(self, stack: DevStack) -> None:
        self.bound: dict[str, Seen] = {}
        self.lock = threading.Lock()
        self.watch = Watch(stack, "/api/v1/pods", self._see, labelSelector=SELECTOR)

    def _see(self, kind: str, pod: dict[str, Any], at: float) -> None:
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        if node and name not in self.bound:
            with self.lock:
                self.bound[name] = Seen(node, int(pod["metadata"]["resourceVersion"]), at, kind != "LISTED")

    def after(self, moment: float) -> list[float]:
        with self.lock:
            return sorted(s.at for s in self.bound.values() if s.at > moment)


class Deletions:
    """The resourceVersion of each NodeTrustReport deletion (a DELETE of a custom resource answers
    with a Status, which carries none; the watch's DELETED event does)."""

    def __init__(self, stack: DevStack) -> None:
        self.seen: dict[tuple[str, str], int] = {}  # (name, uid) -> rv of the deletion
        self.changed = threading.Condition()
        self.watch = Watch(stack, NTR, self._see)

    def _see(self, kind: str, obj: dict[str, Any], at: float) -> None:
        if kind == "DELETED":
            with self.changed:
                self.seen[(obj["metadata"]["name"], obj["metadata"]["uid"])] = int(obj["metadata"]["resourceVersion"])
                self.changed.notify_all()

    def rv_of(self, name: str, uid: str, timeout: float = 30) -> int:
        with self.changed:
            if not self.changed.wait_for(lambda: (name, uid) in self.seen, timeout):
                raise AssertionError(f"no DELETED event for the report of {name}")
            return self.seen[(name, uid)]


# --- faults -------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def sigkill_service(stack: DevStack, service: str) -> None:
    """SIGKILL a service's gunicorn master and its workers at once (a crashed container), then reap it."""
    process = stack._procs[service]
    for pid in [*_children(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(10)
    stack.stop_service(service)  # forget it (already dead)


def readyz(stack: DevStack, service: str) -> bool:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    if service == "extender":
        context.load_cert_chain(stack.workdir / "scheduler-client.crt", stack.workdir / "scheduler-client.key")
    try:
        with urllib.request.urlopen(f"{stack.url(service)}/readyz", context=context, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def extender_passes(stack: DevStack, node: str) -> bool | None:
    """The extender's filter verdict on `node` for a trust-requiring pod; None if it cannot answer."""
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    context.load_cert_chain(stack.workdir / "scheduler-client.crt", stack.workdir / "scheduler-client.key")
    pod = {
        "metadata": {"name": "probe", "namespace": "chaos-selector"},
        "spec": {"nodeSelector": {"trustgate.dev/trusted": "true"}},
    }
    request = urllib.request.Request(
        f"{stack.url('extender')}/filter",
        data=json.dumps({"Pod": pod, "NodeNames": [node]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=2) as response:
            result = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if result.get("Error"):
        return None
    return node in (result.get("NodeNames") or [])


def webhook_admits(client: KubeClient, node: str) -> bool | None:
    """A server-side dry run of a trust-requiring pod pinned to `node`: admitted, refused, or no answer."""
    pod = manifest("probe-pinned", "chaos-selector") | {}
    pod["spec"] = pod["spec"] | {"nodeName": node}
    try:
        client.request("POST", "/api/v1/namespaces/chaos-selector/pods", pod, params={"dryRun": "All"})
        return True
    except KubeAPIError as error:
        return False if error.status == 403 and "denied the request" in error.body else None
    except OSError:
        return None


@dataclass
class Fault:
    what: str
    at: float
    ready_after: float = float("nan")  # the service (or apiserver) answers again
    bound_after: float = float("nan")  # the first pod bound after it was ready, from the fault
    caches_after: float = float("nan")  # apiserver only: both caches reflect a write made after it came back
    notes: list[str] = field(default_factory=list)


def wait_for(check: Any, timeout: float, interval: float = 0.05) -> float:
    started = time.time()
    while time.time() - started < timeout:
        if check():
            return time.time()
        time.sleep(interval)
    raise AssertionError(f"recovery took longer than {timeout}s")


def next_binding(watch: Bindings, after: float, timeout: float = 60) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        later = watch.after(after)
        if later:
            return later[0]
        time.sleep(0.05)
    return float("nan")


def kill_service(stack: DevStack, watch: Bindings, service: str) -> Fault:
    fault = Fault(f"SIGKILL {service}", time.time())
    sigkill_service(stack, service)
    stack.start_service(service, wait=False)  # the kubelet restarts the container at once
    ready = wait_for(lambda: readyz(stack, service), 60)
    fault.ready_after = ready - fault.at
    fault.bound_after = next_binding(watch, ready) - fault.at
    return fault


def restart_apiserver(stack: DevStack, reports: Reports, watch: Bindings) -> Fault:
    """SIGKILL kube-apiserver (every watch breaks), start it again, and time the caches' recovery:
    a revocation written once it is back must reach the extender's and the webhook's caches."""
    client = stack.cp.client()
    with reports.lock:  # no report write is in flight when it dies
        fault = Fault("SIGKILL kube-apiserver", time.time())
        stack.cp.stop_component("kube-apiserver", grace=0)
        stack.cp.start_component("kube-apiserver")
        ready = time.time()
    fault.ready_after = ready - fault.at
    reports.write(PROBE, LEVEL_FAILS, action="probe-revoke")
    extender = wait_for(lambda: extender_passes(stack, PROBE) is False, 60)
    webhook = wait_for(lambda: all(webhook_admits(client, PROBE) is False for _ in range(6)), 60)
    fault.caches_after = max(extender, webhook) - fault.at
    fault.notes.append(f"extender cache {extender - ready:.2f}s, webhook caches {webhook - ready:.2f}s after ready")
    reports.write(PROBE, VALID, action="probe-renew")
    fault.bound_after = next_binding(watch, ready) - fault.at
    return fault


# --- pods ---------------------------------------------------------------------------------------


def manifest(name: str, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
    }
    if namespace == "chaos-selector":
        spec["nodeSelector"] = {"trustgate.dev/trusted": "true"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "chaos"}},
        "spec": spec,
    }


def create_pod(client: KubeClient, index: int, refusals: collections.Counter[str]) -> None:
    """Create one pod (3 in 4 trust-requiring by a TrustPolicy on their namespace, 1 in 4 by nodeSelector),
    retrying while the webhook or the apiserver is down."""
    namespace = "chaos-selector" if index % 4 == 0 else "chaos-policy"
    body = manifest(f"chaos-{index:04d}", namespace)
    deadline = time.monotonic() + 180
    while True:
        try:
            client.create(f"/api/v1/namespaces/{namespace}/pods", body)
            return
        except KubeAPIError as error:
            if error.status == 409:  # an earlier attempt did land
                return
            refusals["webhook unavailable" if "failed calling webhook" in error.body else f"HTTP {error.status}"] += 1
        except OSError:
            refusals["apiserver unreachable"] += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"could not create pod {index}")
        time.sleep(0.2)


def _scheduled_at(pod: dict[str, Any]) -> float | None:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            return datetime.fromisoformat(condition["lastTransitionTime"].replace("Z", "+00:00")).timestamp()
    return None


# --- the judgement ------------------------------------------------------------------------------


@dataclass
class Verdicts:
    checked: int = 0
    misplaced: list[str] = field(default_factory=list)
    on_never_valid: list[str] = field(default_factory=list)
    ambiguous_revocation: list[float] = field(default_factory=list)  # seconds after the failing write's ack
    ambiguous_expiry: list[float] = field(default_factory=list)  # seconds after exp


def judge(pods: list[dict[str, Any]], watch: Bindings, reports: Reports) -> Verdicts:
    verdicts = Verdicts()
    histories = {node: reports.history(node) for node in DYNAMIC}
    for pod in pods:
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        if not node:
            continue
        verdicts.checked += 1
        seen = watch.bound.get(name)
        rv = seen.rv if seen else int(pod["metadata"]["resourceVersion"])
        scheduled = _scheduled_at(pod)
        bounds = [t for t in (seen.at if seen else None, scheduled + 1 if scheduled else None) if t is not None]
        latest = min(bounds) if bounds else time.time()
        if node in NEVER_VALID:
            verdicts.on_never_valid.append(f"{name} -> {node}")
            continue
        earlier = [w for w in histories.get(node, []) if w.rv < rv]
        if not earlier:
            verdicts.misplaced.append(f"{name} -> {node}: no report had been written")
            continue
        in_force = earlier[-1]
        if in_force.valid:
            assert in_force.exp is not None
            late = latest - (in_force.exp + SKEW)
            if late <= 0:
                continue
            if late <= WINDOW:
                verdicts.ambiguous_expiry.append(late)
            else:
                verdicts.misplaced.append(f"{name} -> {node}: bound {late:.2f}s after its report expired")
        else:
            late = latest - in_force.acked
            if late <= WINDOW:
                verdicts.ambiguous_revocation.append(late)
            else:
                verdicts.misplaced.append(
                    f"{name} -> {node}: bound {late:.2f}s after {in_force.action} (rv {in_force.rv})"
                )
    return verdicts


# --- the test -----------------------------------------------------------------------------------


def _setup(stack: ChaosStack) -> Reports:
    fleet = Fleet(stack, ISSUER)
    deletions = Deletions(stack)
    deletions.watch.start()
    reports = Reports(stack, fleet, deletions)
    for name in [*DYNAMIC, *NEVER_VALID]:
        host = Host(name, VALID)
        stack.cp.create_node(name, system_uuid=host.system_uuid, boot_id=host.boot_id, pods="2000")
        fleet.hosts[name] = host
    for name in DYNAMIC:
        reports.write(name, VALID, action="initial")
    for name, kind in NEVER_VALID.items():
        if kind is not None:
            reports.write(name, kind, action="never-valid")
    for namespace, labels in (("chaos-policy", {"chaos": "policy"}), ("chaos-selector", {})):
        stack.kubectl("create", "namespace", namespace)
        if labels:
            stack.kubectl("label", "namespace", namespace, "chaos=policy")
    policy = trust_policy("chaos", namespaceSelector={"matchLabels": {"chaos": "policy"}})
    stack.kubectl("apply", "-f", "-", input=json.dumps(policy))
    client = stack.cp.client()
    for namespace in ("chaos-policy", "chaos-selector"):
        eventually(
            lambda ns=namespace: _exists(client, f"/api/v1/namespaces/{ns}/serviceaccounts/default"), "default SA"
        )
    eventually(
        lambda: extender_passes(stack, DYNAMIC[-1]) and extender_passes(stack, "never-copied") is False, "the extender"
    )
    eventually(
        lambda: webhook_admits(client, "never-level") is False and webhook_admits(client, DYNAMIC[-1]), "the webhook"
    )
    return reports


def _exists(client: KubeClient, path: str) -> bool:
    try:
        client.get(path)
        return True
    except KubeAPIError:
        return False


class Background(threading.Thread):
    """A thread whose result (or exception) the test collects."""

    def __init__(self, name: str, target: Any) -> None:
        super().__init__(name=name, daemon=True)
        self.target, self.result, self.error = target, None, None

    def run(self) -> None:
        try:
            self.result = self.target()
        except BaseException as error:  # reported by collect()
            self.error = error

    def collect(self, timeout: float) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not finish within {timeout}s"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error
        return self.result


def test_no_trust_pod_is_bound_to_a_failing_node_through_crashes_restarts_and_report_churn(
    chaos: ChaosStack, reports: Reports
) -> None:
    started = time.monotonic()
    bindings = Bindings(chaos)
    bindings.watch.start()
    client = chaos.cp.client()
    refusals: collections.Counter[str] = collections.Counter()
    stop_churn = threading.Event()
    churner = Background("report churn", lambda: churn(reports, stop_churn, seed=7))
    t0 = time.time()

    def inject() -> list[Fault]:
        faults = []
        for at, action in (
            (6, lambda: kill_service(chaos, bindings, "extender")),
            (16, lambda: kill_service(chaos, bindings, "webhook")),
            (26, lambda: restart_apiserver(chaos, reports, bindings)),
        ):
            time.sleep(max(0.0, t0 + at - time.time()))
            faults.append(action())
        return faults

    injector = Background("fault injection", inject)
    churner.start()
    injector.start()
    with ThreadPoolExecutor(CREATORS) as pool:
        futures = []
        for index in range(PODS):
            time.sleep(max(0.0, t0 + index / CREATE_RATE - time.time()))
            futures.append(pool.submit(create_pod, client, index, refusals))
        for future in futures:
            future.result()
    created = time.time()
    faults = injector.collect(180)
    stop_churn.set()
    churned = churner.collect(30)
    for node in DYNAMIC:  # the storm is over: every changing node is valid again, so every pod can land
        reports.write(node, VALID, action="final-renew")
    try:
        eventually(lambda: len(bindings.bound) >= PODS, f"all {PODS} pods bound", timeout=180, interval=0.5)
    finally:
        bindings.watch.stopping.set()
        pods = client.get("/api/v1/pods", labelSelector=SELECTOR)["items"]
        verdicts = judge(pods, bindings, reports)
        report_figures(pods, verdicts, faults, reports, refusals, churned, bindings, t0, created, started)
    assert len(pods) == PODS and verdicts.checked == PODS
    assert not verdicts.on_never_valid, verdicts.on_never_valid
    assert not verdicts.misplaced, verdicts.misplaced
    assert refusals["webhook unavailable"] > 0, "no pod creation met the webhook's outage (fail closed unproven)"


def report_figures(pods, verdicts, faults, reports, refusals, churned, watch, t0, created, started) -> None:
    revocations = [w for w in reports.writes if not w.valid and w.action not in ("never-valid",)]
    print(
        f"\nchaos: {len(pods)} pods created in {created - t0:.1f}s, {verdicts.checked} bindings checked, "
        f"{len(reports.writes)} report writes (churn: {dict(churned)}), "
        f"{len(revocations)} failing writes (revocations/deletions)"
    )
    print(f"  create refusals while down: {dict(refusals)}; watch reconnects: {watch.watch.reconnects}")
    print(f"  misplaced: {len(verdicts.misplaced)}; on never-valid nodes: {len(verdicts.on_never_valid)}")
    for label, values in (("revocation", verdicts.ambiguous_revocation), ("expiry", verdicts.ambiguous_expiry)):
        detail = (
            f" (max {max(values) * 1000:.0f} ms, median {statistics.median(values) * 1000:.0f} ms)" if values else ""
        )
        print(f"  ambiguous (within {WINDOW:.0f}s of a {label}): {len(values)}{detail}")
    per_node = collections.Counter(p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName"))
    print(f"  bindings per node: {dict(sorted(per_node.items()))}")
    for fault in faults:
        notes = f" ({'; '.join(fault.notes)})" if fault.notes else ""
        caches = f", caches current {fault.caches_after:.2f}s" if fault.caches_after == fault.caches_after else ""
        print(
            f"  fault at t={fault.at - t0:5.1f}s {fault.what}: ready again {fault.ready_after:.2f}s{caches}, "
            f"next pod bound {fault.bound_after:.2f}s{notes}"
        )
    print(f"  test ran {time.monotonic() - started:.0f}s (without the stack's start)")


def test_after_a_long_apiserver_outage_no_decision_is_made_on_a_stale_cache(
    chaos: ChaosStack, reports: Reports
) -> None:
    """kube-apiserver down long enough for the caches' reconnect backoff to grow, then back: a node
    revoked the moment it returns must not be admitted (by the webhook) nor passed (by the extender)
    on the stale state of a cache that has not reconnected yet."""
    node = DYNAMIC[1]
    client = chaos.cp.client()
    reports.write(node, VALID, action="renew")
    eventually(lambda: extender_passes(chaos, node) and webhook_admits(client, node), f"{node} trusted")

    chaos.cp.stop_component("kube-apiserver", grace=0)
    time.sleep(15)  # reconnect attempts back off meanwhile
    chaos.cp.start_component("kube-apiserver")
    back = time.time()
    revoked = reports.write(node, LEVEL_FAILS, action="revoke")
    stale: list[str] = []
    first_refusal: dict[str, float] = {}
    answers: collections.Counter[str] = collections.Counter()
    while time.time() < revoked.acked + 15 and len(first_refusal) < 2:
        for service, verdict in (("extender", extender_passes(chaos, node)), ("webhook", webhook_admits(client, node))):
            now = time.time()
            answers[f"{service} {({True: 'passed', False: 'refused', None: 'unavailable'})[verdict]}"] += 1
            if verdict and now > revoked.acked + WINDOW:
                stale.append(f"{service} passed {node} {now - revoked.acked:.2f}s after its revocation")
            if verdict is False:
                first_refusal.setdefault(service, round(now - revoked.acked, 2))
        time.sleep(0.05)
    print(
        f"\nafter a 15 s apiserver outage, {node} revoked {revoked.acked - back:.2f}s after the apiserver was ready: "
        f"answers until both refuse it {dict(answers)}; first refusal (s after the revocation) {first_refusal}; "
        f"stale decisions: {len(stale)}"
    )
    reports.write(node, VALID, action="renew")
    for service in ("extender", "webhook"):
        chaos.wait_ready(service)
    assert not stale, stale
    assert set(first_refusal) == {"extender", "webhook"}
