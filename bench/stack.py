"""Benchmarks on the real stack: scheduling throughput, revocation latency, worker memory.

The stack is `devkit.devstack`'s `DevStack` in a throw-away work directory: etcd,
kube-apiserver, kube-controller-manager and kube-scheduler built from source, and the trustgate
extender, webhook and label controller under gunicorn over TLS, with the settings of the Helm chart.
Nodes are API-only (no kubelet): a pod counts as scheduled once `spec.nodeName` is set, which is
seen on a watch of the pods.

All requests to the API server from here go through `KeepAliveClient`: one persistent TLS
connection per thread, so that the load generator itself stays cheap on a small machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.common import percentile
from devkit.controlplane import (
    COMPONENTS,
    ControlPlane,
    KeepAliveClient,
    KubeAPIError,
    create_node,
    find_binaries,
    port_is_free,
)
from devkit.devstack import ISSUER, SERVICES, DevStack
from devkit.fleet import (
    BAD_SIGNATURE,
    COPIED,
    EXPIRED,
    LEVEL_FAILS,
    NO_REPORT,
    REBOOTED,
    VALID,
    Fleet,
    Host,
)
from trustgate.core.labels import TRUST_RESOURCE

PAUSE = "registry.k8s.io/pause:3.10"
METRIC_LINE = re.compile(r"^(apiserver_admission_webhook_\w+)\{([^}]*)\} ([0-9.e+]+)$", re.M)
REPORTS = "/apis/trustgate.dev/v1alpha1/nodetrustreports"
TRUST_NS = "bench-trust"  # selected by the TrustPolicy "bench-trust": every pod in it requires trust
PLAIN_NS = "bench-plain"  # no policy: pods that need no trust
FAILING = (NO_REPORT, BAD_SIGNATURE, EXPIRED, COPIED, REBOOTED, LEVEL_FAILS)
#: kube-scheduler's client rate limit for the scheduling runs. The default (50 QPS, burst 100) caps
#: bindings at ~50/s whatever the scheduler does, which would hide the extender's cost entirely.
SCHEDULER_QPS = 5000


def kind_of(index: int) -> str:
    """88% valid reports; 2% each of no report, forged signature, expired, copied from another
    host, from before a reboot, and a level not trusted."""
    slot = index % 50
    return FAILING[slot] if slot < len(FAILING) else VALID


# --- HTTP -----------------------------------------------------------------------------------------


class ExtenderProbe:
    """POST /filter to the extender exactly as kube-scheduler does (NodeNames, over mTLS)."""

    def __init__(self, stack: DevStack) -> None:
        context = ssl.create_default_context(cafile=str(stack.ca_file))
        context.load_cert_chain(stack.workdir / "scheduler-client.crt", stack.workdir / "scheduler-client.key")
        self.context, self.port = context, stack.ports["extender"]
        self.conn: http.client.HTTPSConnection | None = None

    def filter(self, pod: dict[str, Any], names: list[str]) -> tuple[list[str], dict[str, str]]:
        body = json.dumps({"Pod": pod, "NodeNames": names, "Nodes": None}).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
            try:
                self.conn.request("POST", "/filter", body=body, headers={"Content-Type": "application/json"})
                response = self.conn.getresponse()
                result = json.loads(response.read())
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        if result.get("Error"):
            raise RuntimeError(f"extender error: {result['Error']}")
        return list(result.get("NodeNames") or []), dict(result.get("FailedAndUnresolvableNodes") or {})


class PodWatcher(threading.Thread):
    """Watches the pods of one namespace and records when each is first seen bound (monotonic clock).
    A watch that ends early is resumed from the last resourceVersion seen."""

    def __init__(self, cp: ControlPlane, namespace: str, resource_version: str) -> None:
        super().__init__(name=f"watch-{namespace}", daemon=True)
        self.context = ssl.create_default_context(cafile=str(cp.ca.cert_file))
        self.context.load_cert_chain(str(cp.pki_dir / "admin.crt"), str(cp.pki_dir / "admin.key"))
        self.port, self.namespace, self.version = cp.ports.apiserver, namespace, resource_version
        self.bound: dict[str, float] = {}
        self.nodes: dict[str, str] = {}
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.events = 0
        self.problems: list[str] = []
        self.conn, self.response = self._open()  # established before the caller creates anything

    def _open(self) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=None)
        query = urllib.parse.urlencode(
            {"watch": "1", "resourceVersion": self.version, "allowWatchBookmarks": "true", "timeoutSeconds": "1800"}
        )
        conn.request("GET", f"/api/v1/namespaces/{self.namespace}/pods?{query}", headers={"Accept": "application/json"})
        response = conn.getresponse()  # headers received: the watch is established
        if response.status != 200:
            raise RuntimeError(f"watch failed: HTTP {response.status} {response.read()[:500]!r}")
        return conn, response

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._read()
            except Exception as error:  # recorded; resumed below unless stopping
                if not self.stopping.is_set():
                    self.problems.append(f"{type(error).__name__}: {error}")
            if self.stopping.is_set():
                return
            self.conn.close()
            try:
                self.conn, self.response = self._open()
            except Exception as error:  # the API server may be busy: try again
                self.problems.append(f"reconnect: {type(error).__name__}: {error}")
                time.sleep(0.2)

    def _read(self) -> None:
        while True:
            line = self.response.readline()
            seen = time.monotonic()
            if not line:
                if not self.stopping.is_set():
                    self.problems.append("watch ended")
                return
            event = json.loads(line)
            self.events += 1
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                self.problems.append(f"watch error: {obj.get('message')}")
                if obj.get("code") == 410:  # too old to resume: give up (the run is reported incomplete)
                    self.stopping.set()
                return
            self.version = (obj.get("metadata") or {}).get("resourceVersion") or self.version
            name = (obj.get("metadata") or {}).get("name")
            node = (obj.get("spec") or {}).get("nodeName")
            if name and node and name not in self.bound:
                with self.changed:
                    self.bound[name] = seen
                    self.nodes[name] = node
                    self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.bound) >= count, timeout)

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError, AttributeError):
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self.join(5)


# --- objects -------------------------------------------------------------------------------------------


def pod_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {"name": "main", "image": PAUSE, "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}
            ],
            "terminationGracePeriodSeconds": 0,
            **spec,
        },
    }


def trust_policy() -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "bench-trust"},
        "spec": {"namespaceSelector": {"matchLabels": {"trustgate-bench": "trust"}}},
    }


def report_object(name: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "NodeTrustReport",
        "metadata": {"name": name},
        "spec": {"token": token},
    }


# --- the stack -----------------------------------------------------------------------------------------


NONE, INSTALLED, FLOOR = "none", "installed", "floor"


@dataclass(frozen=True)
class Variant:
    """One side of a scheduling comparison: what is installed, and which pods are created."""

    name: str
    install: str  # NONE, INSTALLED or FLOOR
    namespace: str
    description: str
    node_cache_capable: bool = True


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "no-trustgate",
            NONE,
            PLAIN_NS,
            "no trustgate: no extender in kube-scheduler's profile, no webhook configuration, no trustgate process",
        ),
        Variant("plain", INSTALLED, PLAIN_NS, "trustgate installed, pods no TrustPolicy selects"),
        Variant("trust", INSTALLED, TRUST_NS, "trustgate installed, pods a TrustPolicy selects"),
        Variant(
            "floor",
            FLOOR,
            TRUST_NS,
            "floor: trustgate's installation with a no-op extender and a no-op webhook (devkit.floor) on the same "
            "ports and serving settings, pods a TrustPolicy selects",
        ),
        Variant(
            "trust-full-nodes",
            INSTALLED,
            TRUST_NS,
            "trustgate installed, nodeCacheCapable: false, pods a TrustPolicy selects",
            node_cache_capable=False,
        ),
    )
}


class _Stack(DevStack):
    """DevStack with the extender and webhook replaced by their floor (`devkit.floor`, the same flags)."""

    floor: bool = False

    def service_argv(self, service: str) -> list[str]:
        argv = super().service_argv(service)
        if self.floor and service in ("extender", "webhook"):
            return [sys.executable, "-m", "devkit.floor", service, *argv[1:]]
        return argv


@dataclass
class BenchStack:
    workdir: Path
    log: Callable[[str], None] = print
    hosts: list[Host] = field(default_factory=list)
    service_args: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stack = _Stack(self.workdir, bin_dir=find_binaries(), service_args=dict(self.service_args))
        self.cp = self.stack.cp
        self.installed = INSTALLED

    # --- lifecycle ---

    def up(self) -> None:
        started = time.monotonic()
        self.stack.up()
        self.client = self.cp.client(KeepAliveClient)
        self.fleet = Fleet(self.stack, ISSUER)
        self.extender = ExtenderProbe(self.stack)
        self.client.create("/apis/trustgate.dev/v1alpha1/trustpolicies", trust_policy())
        for namespace, labels in ((TRUST_NS, {"trustgate-bench": "trust"}), (PLAIN_NS, {})):
            self.client.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
            )
        for namespace in (TRUST_NS, PLAIN_NS):  # the ServiceAccount admission plugin needs "default"
            self._eventually(
                lambda ns=namespace: self._exists(f"/api/v1/namespaces/{ns}/serviceaccounts/default"),
                f"ServiceAccount {namespace}/default",
            )
        self.log(f"stack up in {time.monotonic() - started:.0f}s ({self.workdir})")

    def down(self) -> None:
        for service in SERVICES:
            self.stop_service(service)
        self.stack.down()

    # --- nodes ---

    def add_nodes(self, count: int, threads: int = 16, prefix: str = "node") -> float:
        """Register `count` more API-only nodes with reports of each kind (see `kind_of`), in parallel.
        Returns the seconds it took."""
        start = len(self.hosts)
        new = [Host(f"{prefix}-{i:05d}", kind_of(i)) for i in range(start, start + count)]
        for host in new:
            self.fleet.hosts[host.name] = host
        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self._register, new))
        self.hosts.extend(new)
        return time.monotonic() - started

    def _register(self, host: Host) -> None:
        create_node(self.client, host.name, host.system_uuid, host.boot_id)
        if host.kind != NO_REPORT:
            self.client.create(REPORTS, report_object(host.name, self.fleet.token(host.name, host.kind)))

    def valid_names(self) -> list[str]:
        return [h.name for h in self.hosts if h.kind == VALID]

    def wait_caught_up(self, timeout: float = 300.0) -> float:
        """Until the extender passes exactly the valid nodes, the webhook admits a pod pinned to the
        newest valid node, and the label controller has labelled every valid node."""
        started = time.monotonic()
        names = [h.name for h in self.hosts]
        valid = self.valid_names()
        probe = pod_manifest("probe", TRUST_NS)
        self._eventually(lambda: sorted(self.extender.filter(probe, names)[0]) == sorted(valid), "extender", timeout)
        pinned = pod_manifest("probe", TRUST_NS, nodeName=valid[-1])
        self._eventually(lambda: all(self.dry_run_admitted(pinned) for _ in range(6)), "webhook", timeout)
        self._eventually(lambda: self.count_labelled() >= len(valid), "label controller", timeout, interval=1.0)
        return time.monotonic() - started

    def count_labelled(self) -> int:
        status, raw = self.client.raw(
            "GET",
            "/api/v1/nodes",
            params={"labelSelector": "trustgate.dev/trusted=true"},
            accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
        )
        if status != 200:
            raise KubeAPIError(status, "GET", "/api/v1/nodes", raw.decode(errors="replace"))
        return len(json.loads(raw).get("items") or [])

    def dry_run_admitted(self, pod: dict[str, Any]) -> bool:
        status, raw = self.client.raw(
            "POST", f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods", pod, params={"dryRun": "All"}
        )
        if status == 201:
            return True
        if status in (400, 403, 500):  # denied by the webhook (403), or failed calling it
            return False
        raise KubeAPIError(status, "POST", "dry-run pod", raw.decode(errors="replace"))

    def admission(self) -> tuple[bool, bool]:
        """What the API server's admission does now to a trust pod: (marked for the extender, a pod pinned
        to a failing node admitted). No trustgate: (False, True); installed: (True, False); floor: (True, True)."""
        status, raw = self.client.raw(
            "POST", f"/api/v1/namespaces/{TRUST_NS}/pods", pod_manifest("probe", TRUST_NS), params={"dryRun": "All"}
        )
        if status != 201:
            raise KubeAPIError(status, "POST", "dry-run pod", raw.decode(errors="replace"))
        limits = json.loads(raw)["spec"]["containers"][0].get("resources", {}).get("limits", {})
        failing = next(h.name for h in self.hosts if h.kind != VALID)
        return TRUST_RESOURCE in limits, self.dry_run_admitted(pod_manifest("probe", TRUST_NS, nodeName=failing))

    # --- what is installed ---

    def install(self, what: str) -> float:
        """Bring the stack to `what` (NONE, INSTALLED, FLOOR) and wait until the API server admits as it
        should; returns the seconds it took (0 when already there)."""
        if what == self.installed:
            return 0.0
        started = time.monotonic()
        if what == NONE:
            for service in SERVICES:
                self.stop_service(service)
            self.stack.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "trustgate")
        else:
            for service in ("extender", "webhook"):
                self.stop_service(service)
            self.stack.floor = what == FLOOR
            if self.installed == NONE:
                self.stack.create_configurations()
                self.stack.start_service("controller")
                self.stack.wait_configured()
            for service in ("extender", "webhook"):
                self.stack.start_service(service)
            if what == INSTALLED:
                self.wait_caught_up()
        expected = {NONE: (False, True), INSTALLED: (True, False), FLOOR: (True, True)}[what]
        # the API server's webhook configuration informer takes a moment
        self._eventually(lambda: all(self.admission() == expected for _ in range(3)), f"admission as {what}", 60)
        self.settle()
        self.installed = what
        return time.monotonic() - started

    def settle(self, idle: float = 0.05, timeout: float = 60.0) -> float:
        """Wait until trustgate's processes are idle after an installation: together under `idle` of a CPU
        over a second (a fresh process lists, verifies and syncs first). What is measured is the steady
        state, the one a cluster is in but for the moment trustgate is installed. Returns the seconds waited."""
        started = time.monotonic()
        before = self.cpu_seconds()
        while time.monotonic() - started < timeout:
            time.sleep(1.0)
            after = self.cpu_seconds()
            used = sum(
                seconds - before[name][0]
                for name, (seconds, pids) in after.items()
                if name.startswith("trustgate-") and name in before and before[name][1] == pids
            )
            if used < idle:
                break
            before = after
        return time.monotonic() - started

    # --- scheduler configuration ---

    def scheduler_config(self, variant: Variant) -> str:
        config = yaml.safe_load(self.stack._scheduler_config())
        config["clientConnection"]["qps"] = SCHEDULER_QPS
        config["clientConnection"]["burst"] = SCHEDULER_QPS
        if variant.install == NONE:
            config.pop("extenders", None)
        else:
            config["extenders"][0]["nodeCacheCapable"] = variant.node_cache_capable
        return yaml.safe_dump(config, sort_keys=False)

    def restart_scheduler(self, variant: Variant) -> float:
        """A fresh kube-scheduler with the variant's configuration, ready (caches synced)."""
        started = time.monotonic()
        self.stack.use_scheduler_config(self.scheduler_config(variant))
        return time.monotonic() - started

    def webhook_calls(self) -> tuple[float, float]:
        """kube-apiserver's own counts so far: calls to trustgate's webhooks, and those that failed
        (timed out or could not be made)."""
        text = self._metrics()
        calls = failed = 0.0
        for name, labels, value in METRIC_LINE.findall(text):
            if "trustgate.dev" not in labels:
                continue
            if name == "apiserver_admission_webhook_request_total":
                calls += float(value)
            elif name == "apiserver_admission_webhook_rejection_count" and "calling_webhook_error" in labels:
                failed += float(value)
        return calls, failed

    def _metrics(self) -> str:
        status, raw = self.client.raw("GET", "/metrics", accept="text/plain")
        if status != 200:
            raise KubeAPIError(status, "GET", "/metrics", raw.decode(errors="replace"))
        return raw.decode()

    # --- 1. scheduling throughput ---

    def scheduling_run(
        self, variant: Variant, pods: int, mode: str = "stream", threads: int = 16, timeout: float = 300.0
    ) -> dict[str, Any]:
        """Create `pods` pods from `threads` concurrent clients and wait until every one is bound.

        mode "stream": kube-scheduler runs while the pods are created (as fast as the API server takes
        them); figures: pods bound per second from the first create to the last binding, and the
        latency from each pod's create request to its binding (seen on a watch).
        mode "backlog": the pods are created while kube-scheduler is stopped, then it starts; figure:
        the scheduling rate from its first binding to its last (scheduler, extender and binding
        admission only; the create path is out of the picture).
        """
        install_s = self.install(variant.install)
        scheduler_log = self.cp.logs_dir / "kube-scheduler.log"
        log_start = scheduler_log.stat().st_size if scheduler_log.exists() else 0
        if mode == "backlog":
            self.cp.stop_component("kube-scheduler")
            restart = 0.0
        else:
            restart = self.restart_scheduler(variant)
            time.sleep(1.0)
        namespace = variant.namespace
        listing = self.client.get(f"/api/v1/namespaces/{namespace}/pods", limit="1")
        if listing.get("items"):
            raise RuntimeError(f"namespace {namespace} still has pods")
        watcher = PodWatcher(self.cp, namespace, listing["metadata"]["resourceVersion"])
        watcher.start()
        cpu_before = self.cpu_seconds()
        calls_before, failed_before = self.webhook_calls()
        run_id = new_run_id()
        names = [f"{run_id}-{i:05d}" for i in range(pods)]
        sent: dict[str, float] = {}
        errors: list[str] = []

        def create(name: str) -> None:
            sent[name] = time.monotonic()
            try:
                self.client.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest(name, namespace))
            except Exception as error:  # counted: a create refused (e.g. the webhook timed out)
                errors.append(f"{name}: {str(error)[:300]}")

        first = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, names))
        created = time.monotonic()
        if mode == "backlog":
            restart = self.restart_scheduler(variant)
        expected = pods - len(errors)
        complete = watcher.wait_for(expected, timeout)
        watcher.stop()
        cpu_after = self.cpu_seconds()
        calls_after, failed_after = self.webhook_calls()
        with open(scheduler_log, "rb") as log_file:
            log_file.seek(log_start)
            scheduler_errors = log_file.read().decode(errors="replace")
        bound = dict(watcher.bound)
        if not complete:  # tell a stuck scheduler from a lost watch
            pods_now = self.client.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
            in_api = sum(1 for p in pods_now if (p.get("spec") or {}).get("nodeName"))
            self.log(
                f"incomplete run: {len(bound)} bound seen on the watch, {in_api} bound in the API; "
                f"watch problems {watcher.problems[:3]}"
            )
        result: dict[str, Any] = {
            "variant": variant.name,
            "mode": mode,
            "pods": pods,
            "bound": len(bound),
            "create_errors": len(errors),
            "complete": complete and not errors,
            "errors": errors[:3],
            "watch_problems": watcher.problems[:5],
            "create_per_s": pods / (created - first),
            "scheduler_restart_s": restart,
            "install_s": install_s,
            # kube-apiserver's counts: calls to trustgate's webhooks per pod, and calls that failed (timeouts)
            "webhook_calls_per_pod": (calls_after - calls_before) / pods,
            "webhook_failures": failed_after - failed_before,
            "distinct_nodes": len(set(watcher.nodes.values())),
            # CPU time each component spent during the run, ms per pod (a new scheduler process counts whole)
            "cpu_ms_per_pod": cpu_delta(cpu_before, cpu_after, pods),
            # pods kube-scheduler had to retry (backoff): a failed extender call or binding
            "schedule_retries": scheduler_errors.count("Error scheduling pod"),
            "bind_webhook_failures": scheduler_errors.count("failed calling webhook"),
        }
        times = sorted(bound.values())
        if mode == "stream":
            latencies = [(bound[n] - sent[n]) * 1000 for n in names if n in bound]
            result |= {
                "bound_per_s": len(bound) / (times[-1] - first) if times else 0.0,
                "latency_p50_ms": percentile(latencies, 50),
                "latency_p99_ms": percentile(latencies, 99),
                "latency_max_ms": max(latencies) if latencies else None,
            }
        elif len(times) > 20:
            # the bulk rate, between the 5th and the 95th percentile bindings: a few pods retried after a
            # failed call wait out kube-scheduler's backoff (1 s doubling to 10 s), reported as the tail
            low, high = int(len(times) * 0.05), int(len(times) * 0.95) - 1
            result["scheduled_per_s"] = (high - low) / (times[high] - times[low])
            result["first_to_last_per_s"] = (len(times) - 1) / (times[-1] - times[0])
            result["tail_s"] = times[-1] - times[high]
        else:
            result["scheduled_per_s"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        if variant.install == INSTALLED and variant.namespace == TRUST_NS:  # only on nodes with valid reports
            valid = set(self.valid_names())
            result["misplaced"] = sum(1 for node in watcher.nodes.values() if node not in valid)
        self.delete_pods(namespace)
        return result

    def deployment_run(self, replicas: int, timeout: float = 300.0) -> dict[str, Any]:
        """A Deployment of `replicas` plain pods (no TrustPolicy selects them) created by kube-controller-manager
        and scheduled by kube-scheduler, trustgate installed: kube-apiserver's count of calls to trustgate's
        webhooks per pod, from the Deployment's creation until every pod is bound."""
        self.install(INSTALLED)
        self.restart_scheduler(VARIANTS["plain"])
        name = f"deploy-{new_run_id()}"
        labels = {"app": name}
        template = pod_manifest(name, PLAIN_NS)
        template["metadata"] = {"labels": labels}
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": PLAIN_NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
        }
        calls_before, failed_before = self.webhook_calls()
        started = time.monotonic()
        self.client.create(f"/apis/apps/v1/namespaces/{PLAIN_NS}/deployments", deployment)

        def bound() -> bool:
            pods = self.client.get(f"/api/v1/namespaces/{PLAIN_NS}/pods", labelSelector=f"app={name}")["items"]
            return len(pods) == replicas and all(p["spec"].get("nodeName") for p in pods)

        self._eventually(bound, f"{replicas} pods of Deployment {name} bound", timeout, interval=0.5)
        seconds = time.monotonic() - started
        calls_after, failed_after = self.webhook_calls()
        self.client.delete(f"/apis/apps/v1/namespaces/{PLAIN_NS}/deployments/{name}")
        self.delete_pods(PLAIN_NS)
        return {
            "replicas": replicas,
            "seconds": seconds,
            "webhook_calls_per_pod": (calls_after - calls_before) / replicas,
            "webhook_failures": failed_after - failed_before,
        }

    def cpu_seconds(self) -> dict[str, tuple[float, tuple[int, ...]]]:
        """CPU seconds (user + system) used so far by each component, with the pids counted."""
        out: dict[str, tuple[float, tuple[int, ...]]] = {}
        for name in COMPONENTS:
            pid = self.cp.pid(name)
            if pid is not None:
                out[name] = (proc_cpu(pid), (pid,))
        for service in ("extender", "webhook", "controller"):
            process = self.stack._procs.get(service)
            if process is not None:
                pids = (process.pid, *children(process.pid))
                out[f"trustgate-{service}"] = (sum(proc_cpu(pid) for pid in pids), pids)
        out["bench client"] = (time.process_time(), (os.getpid(),))
        return out

    def restart_service(self, service: str, args: list[str]) -> None:
        """Restart a trustgate service with other gunicorn settings (e.g. ["--threads=8"]); returns once
        it is ready (its cache synced)."""
        if self.stack.service_args.get(service) == args:
            return
        self.stop_service(service)
        self.stack.service_args[service] = args
        self.stack.start_service(service)

    def stop_service(self, service: str) -> None:
        """Stop a service and make sure its workers are gone too: a gthread worker blocked reading an idle
        keep-alive connection outlives its master (SIGKILLed by DevStack after 10 s) and keeps the port."""
        process = self.stack._procs.get(service)
        workers = children(process.pid) if process is not None else []
        self.stack.stop_service(service)
        deadline = time.monotonic() + 5
        for pid in workers:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        port = self.stack.ports.get(service)
        if port:
            self._eventually(lambda: port_is_free(port), f"port {port} of {service} free", 30)

    def delete_pods(self, namespace: str) -> None:
        self.client.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", params={"gracePeriodSeconds": "0"})
        self._eventually(
            lambda: not self.client.get(f"/api/v1/namespaces/{namespace}/pods", limit="1").get("items"),
            f"pods of {namespace} deleted",
            120,
        )

    # --- 4. revocation ---

    def revocation(self, trials: int, node: str = "revoke-0") -> dict[str, Any]:
        """Alternately replace the node's valid report by a failing one and delete it; each time, the
        delay until the extender and the webhook first refuse (both probed at once, fast)."""
        if node not in self.fleet.hosts:
            host = Host(node, VALID)
            self.fleet.hosts[node] = host
            create_node(self.client, node, host.system_uuid, host.boot_id)
        path = f"{REPORTS}/{node}"
        pod = pod_manifest("revocation-probe", TRUST_NS)
        pinned = pod_manifest("revocation-probe", TRUST_NS, nodeName=node)
        extender = ExtenderProbe(self.stack)
        webhook = self.cp.client(KeepAliveClient)
        report_exists = self._exists(path)

        def extender_refuses() -> bool:
            return not extender.filter(pod, [node])[0]

        def webhook_refuses() -> bool:
            status, _ = webhook.raw("POST", f"/api/v1/namespaces/{TRUST_NS}/pods", pinned, params={"dryRun": "All"})
            return status != 201

        samples: dict[str, dict[str, list[float]]] = {
            how: {"extender": [], "webhook": []} for how in ("replaced", "deleted")
        }
        polls = {"extender": 0, "webhook": 0}
        for trial in range(trials):
            how = ("replaced", "deleted")[trial % 2]
            valid = self.fleet.token(node, VALID)
            failing = self.fleet.token(node, LEVEL_FAILS)
            if report_exists:
                self.client.merge_patch(path, {"spec": {"token": valid}})
            else:
                self.client.create(REPORTS, report_object(node, valid))
            self._eventually(lambda: not extender_refuses(), "extender admits again", 30, 0.01)
            self._eventually(lambda: all(not webhook_refuses() for _ in range(6)), "webhook admits again", 30, 0.01)
            time.sleep(0.05)
            results: dict[str, float] = {}

            def poll(which: str, refuses: Callable[[], bool], since: float, into: dict[str, float]) -> None:
                deadline = since + 30
                while time.monotonic() < deadline:
                    polls[which] += 1
                    if refuses():
                        into[which] = (time.monotonic() - since) * 1000
                        return
                    time.sleep(0.002)

            written = time.monotonic()
            if how == "replaced":
                self.client.merge_patch(path, {"spec": {"token": failing}})
                report_exists = True
            else:
                self.client.delete(path)
                report_exists = False
            threads = [
                threading.Thread(target=poll, args=("extender", extender_refuses, written, results)),
                threading.Thread(target=poll, args=("webhook", webhook_refuses, written, results)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for which in ("extender", "webhook"):
                samples[how][which].append(results.get(which, float("inf")))
        out: dict[str, Any] = {"trials": trials, "polls": polls}
        for which in ("extender", "webhook"):
            every = samples["replaced"][which] + samples["deleted"][which]
            out[which] = {
                "p50_ms": percentile(every, 50),
                "p99_ms": percentile(every, 99),
                "max_ms": max(every),
                "timeouts": sum(1 for v in every if v == float("inf")),
                **{
                    f"{how}_p50_ms": percentile(samples[how][which], 50)
                    for how in ("replaced", "deleted")
                    if samples[how][which]
                },
            }
        return out

    # --- 5. memory ---

    def worker_rss(self) -> dict[str, list[float]]:
        """VmRSS (MiB) of each gunicorn worker of the extender and the webhook."""
        out = {}
        for service in ("extender", "webhook"):
            master = self.stack._procs[service].pid
            out[service] = [rss_mib(pid) for pid in children(master)]
        return out

    def service_pids(self, service: str) -> list[int]:
        return children(self.stack._procs[service].pid)

    # --- helpers ---

    def _exists(self, path: str) -> bool:
        try:
            self.client.get(path)
            return True
        except KubeAPIError as error:
            if error.status == 404:
                return False
            raise

    @staticmethod
    def _eventually(check: Callable[[], Any], what: str, timeout: float = 120.0, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
            except (OSError, KubeAPIError, http.client.HTTPException, RuntimeError):
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_delta(
    before: dict[str, tuple[float, tuple[int, ...]]], after: dict[str, tuple[float, tuple[int, ...]]], pods: int
) -> dict[str, float]:
    """CPU ms per pod of each component between two readings; a process started in between counts whole."""
    out = {}
    for name, (seconds, pids) in after.items():
        earlier = before.get(name)
        used = seconds - earlier[0] if earlier is not None and earlier[1] == pids else seconds
        out[name] = round(used * 1000 / pods, 3)
    out["total"] = round(sum(out.values()), 3)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def new_run_id() -> str:
    return "p" + uuid.uuid4().hex[:6]


def py_spy(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample a process with py-spy (if installed) into a speedscope profile, in the background."""
    executable = Path(sys.executable).parent / "py-spy"
    if not executable.exists():
        return None
    return subprocess.Popen(
        [
            str(executable),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            "--gil",  # only samples holding the GIL: where the CPU goes, not where threads wait
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
