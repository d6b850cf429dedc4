"""The cost of trust, measured side by side: `python -m bench [--quick] [--only NAME ...] [--out PATH]`.

Runs every benchmark below, writes `bench/results.json` (every run, with the machine and its load
average) and `bench/results.md` (the table), and prints the table. Each figure is the median over
repeated runs, with the min and max; each comparison is a ratio of runs made in the same session,
alternating A and B (ABBA order) so that noise from other load on the machine hits both alike.

  verify           report verification cold and warm, per algorithm, 5,000 reports (bench.verify)
  filter           extender /filter and /prioritize server-side latency: 100 / 1,000 / 5,000 NodeNames,
                   1,000 full Nodes beside the JSON decode+encode floor (bench.filter)
  admission        webhook admission over TLS driven by wrk, against a no-op Flask handler under the
                   same gunicorn settings (bench.admission)
  webhook-threads  bursts of trust pod creations through the real API server with the webhook at
                   3 workers x 2 threads against the chart's 3 x 8: timeouts (the API server fails
                   closed after 3 s) and rates
  scheduling       500 API-only nodes (88% valid reports, 2% failing each other way), 1,000 pods
                   created concurrently and as a backlog, in four variants: no trustgate (the
                   baseline: no extender, no webhook configuration, no trustgate process); trustgate
                   installed with plain pods (no TrustPolicy selects them); installed with trust
                   pods; the floor (the installation with a no-op extender and webhook, devkit.floor)
                   with trust pods. Plus a Deployment's plain pods: webhook calls per pod.
  scale            the same at 5,000 nodes (nodeCacheCapable: true), 500 pods
  revocation       delay from replacing a valid report by a failing one (or deleting it) to the
                   first refusal by the extender (POST /filter) and by the webhook (server-side
                   dry-run create), 100 trials
  memory           RSS of each extender and webhook gunicorn worker holding 500 and 5,000 nodes
  encrypted        pod start on a real node from an encrypted image against a plain one of the same size,
                   side by side (bench.encrypted: real kubelet and containerd, key broker, emulated TPM)

The stack benchmarks (webhook-threads ... memory) run the real control plane, built once by
`devkit/controlplane/build.sh` (cached in ~/.cache/trustgate), in a throw-away directory.
`--quick` is a few-minute smoke run with small counts. `--profile` samples the extender and webhook
workers with py-spy (if installed in the venv) during one scheduling run at each scale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT, fmt, fmt_summary, loadavg, machine, summary

SECTIONS = (
    "verify", "filter", "admission", "webhook-threads", "scheduling", "scale", "revocation", "memory", "encrypted",
)  # fmt: skip
STACK_SECTIONS = frozenset(SECTIONS[3:8])

TARGETS = {
    "plain_ratio": 0.95,  # plain pods with trustgate installed: >= 95% of no trustgate
    "trust_ratio": 0.90,  # trust pods: >= 90% of the floor
    "revocation_p99_ms": 1000.0,
    "rss_mib": 150.0,
    "admission_rps": 1500.0,
    "admission_p99_ms": 10.0,
    "admission_ratio": 0.70,
    "filter_p99_ms": 3.0,  # bench.filter.TARGET_NAMES_P99_MS
    "prioritize_filter_ratio": 1.2,  # bench.filter.TARGET_PRIORITIZE_RATIO
    "filter_floor_ratio": 1.5,
}


@dataclass
class Plan:
    verify_count: int = 5000
    verify_repeat: int = 3
    filter_iterations: int = 200
    filter_repeat: int = 3
    admission_duration: float = 10.0
    admission_repeat: int = 3
    admission_configs: tuple[str, ...] = ("gthread-3x2", "gthread-3x8")
    nodes: int = 500
    pods: int = 1000
    repeat: int = 3
    scale_nodes: int = 5000
    scale_pods: int = 500
    burst_pods: int = 500
    revocation_trials: int = 100
    threads: int = 16  # concurrent pod creators
    variants: tuple[str, ...] = ("no-trustgate", "plain", "trust", "floor")
    deployment_replicas: int = 200
    webhook_threads: int = 8
    burst_threads: tuple[int, ...] = (2, 8)


FULL = Plan()
QUICK = Plan(
    verify_count=300,
    verify_repeat=2,
    filter_iterations=30,
    filter_repeat=1,
    admission_duration=3.0,
    admission_repeat=2,
    admission_configs=("gthread-3x2",),
    nodes=100,
    pods=150,
    repeat=1,
    scale_nodes=600,
    scale_pods=100,
    burst_pods=150,
    revocation_trials=10,
    deployment_replicas=30,
)


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# --- 6. verification --------------------------------------------------------------------------------------


def run_verify(plan: Plan) -> dict[str, Any]:
    from bench import verify

    rows = []
    for alg in verify.ALGORITHMS:
        result = verify.bench_algorithm(alg, plan.verify_count, plan.verify_repeat)
        cold = summary(t / result.count * 1e6 for t in result.cold_runs)
        warm = summary(t / result.count * 1e6 for t in result.warm_runs)
        rows.append({"alg": alg, "key": result.key, "count": result.count, "cold_us": cold, "warm_us": warm})
        log(f"verify {alg}: cold {cold['median']:.1f} µs, warm {warm['median']:.2f} µs per report")
    return {"count": plan.verify_count, "repeat": plan.verify_repeat, "rows": rows}


# --- 2. extender /filter --------------------------------------------------------------------------------


def run_filter(plan: Plan) -> dict[str, Any]:
    from bench import filter as filter_bench
    from extender.wire import JSON_LIBRARY

    thresholds = gc.get_threshold()
    runs: list[list[dict[str, Any]]] = []
    try:
        for i in range(plan.filter_repeat):
            runs.append(filter_bench.run(plan.filter_iterations))
            log(f"filter run {i + 1}/{plan.filter_repeat} done")
    finally:  # filter.run tunes the collector as the extender does: undo it for what follows
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    cases = []
    for index, first in enumerate(runs[0]):
        rows = [run[index] for run in runs]
        case = {key: first[key] for key in ("case", "verb", "nodes", "body_bytes")}
        for key in filter_bench.FIGURES:
            if key in first:
                case[key] = summary(row[key] for row in rows)
        cases.append(case)
    return {"iterations": plan.filter_iterations, "repeat": plan.filter_repeat, "json": JSON_LIBRARY, "cases": cases}


# --- 3. admission over TLS with wrk -------------------------------------------------------------------------


def ensure_wrk() -> str | None:
    """The path of wrk, installing it with apt-get when running as root on Debian/Ubuntu."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: installing it with `apt-get install -y wrk` (running as root)")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        return shutil.which("wrk")
    return None


def run_admission(plan: Plan) -> dict[str, Any]:
    from bench import admission
    from devkit.admission_apps import admission_review, node_name, write_tls

    if ensure_wrk() is None:
        message = "skipped: needs wrk; install it with `apt-get install -y wrk` (Debian/Ubuntu)"
        log(f"admission {message}")
        return {"skipped": message}
    nodes = 1000
    args = argparse.Namespace(
        duration=plan.admission_duration, connections=4, wrk_threads=1, repeat=plan.admission_repeat
    )
    env = os.environ | {"TRUSTGATE_BENCH_NODES": str(nodes)}  # bench is importable from cwd=ROOT (python -m)
    out: dict[str, Any] = {"nodes": nodes, "connections": args.connections, "duration_s": args.duration, "configs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        directory = Path(tmp)
        cert, key = write_tls(directory / "tls")
        body = directory / "review.json"
        body.write_text(json.dumps(admission_review(node_name(nodes // 2))))
        script = directory / "review.lua"
        script.write_text(admission.LUA)
        files = {"cert": cert, "key": key, "body": body, "script": script}
        for name in plan.admission_configs:
            runs = admission.measure_config(admission.CONFIGS[name], files, args, env)
            hook, noop = runs["webhook"], runs["noop"]
            entry = {
                "webhook_rps": summary(r.rps for r in hook),
                "webhook_p50_ms": summary(r.p50_ms for r in hook),
                "webhook_p99_ms": summary(r.p99_ms for r in hook),
                "noop_rps": summary(r.rps for r in noop),
                "noop_p50_ms": summary(r.p50_ms for r in noop),
                "noop_p99_ms": summary(r.p99_ms for r in noop),
                "ratio": summary(h.rps / n.rps for h, n in zip(hook, noop, strict=True)),
                "errors": sum(r.errors for r in hook + noop),
                "runs": {app: [asdict(r) for r in rs] for app, rs in runs.items()},
            }
            out["configs"][name] = entry
            log(
                f"admission {name}: webhook {entry['webhook_rps']['median']:.0f}/s p99 "
                f"{entry['webhook_p99_ms']['median']:.1f} ms, no-op {entry['noop_rps']['median']:.0f}/s, "
                f"ratio {entry['ratio']['median']:.0%}"
            )
    return out


# --- the stack ------------------------------------------------------------------------------------------


@dataclass
class StackResults:
    setup: dict[str, Any] = field(default_factory=dict)
    burst: dict[str, Any] | None = None
    scheduling: dict[str, Any] | None = None
    scale: dict[str, Any] | None = None
    revocation: dict[str, Any] | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)


STREAM_KEYS = (
    "bound_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "create_per_s",
    "create_errors",
    "schedule_retries",
    "bind_webhook_failures",
    "webhook_failures",
    "webhook_calls_per_pod",
)
BACKLOG_KEYS = (
    "scheduled_per_s",
    "first_to_last_per_s",
    "tail_s",
    "create_errors",
    "schedule_retries",
    "bind_webhook_failures",
    "webhook_failures",
    "webhook_calls_per_pod",
)
#: (A, B) pairs whose throughput ratio A/B is reported, each from runs of the same repetition.
RATIOS = (("plain", "no-trustgate"), ("trust", "floor"), ("trust", "no-trustgate"), ("floor", "no-trustgate"))
RATIO_TARGETS = {"plain/no-trustgate": "plain_ratio", "trust/floor": "trust_ratio"}


def compare(
    bs: Any,
    variants: tuple[str, ...],
    mode: str,
    pods: int,
    plan: Plan,
    label: str,
    before_run: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Runs of each variant, alternating (ABBA), and per-pair ratios against the first variant."""
    from bench.stack import VARIANTS

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(plan.repeat):
        for name in variants if rep % 2 == 0 else tuple(reversed(variants)):
            if before_run is not None:
                before_run(name, rep)
            result = bs.scheduling_run(VARIANTS[name], pods, mode=mode, threads=plan.threads)
            runs[name].append(result)
            rate = result.get("bound_per_s", result.get("scheduled_per_s", 0.0))
            if mode == "stream":
                extra = f", p99 {result['latency_p99_ms']:.0f} ms"
            else:
                extra = f" (p5-p95; first to last {result.get('first_to_last_per_s', 0.0):.1f}/s)"
            log(
                f"{label} {mode} {name} #{rep + 1}: {rate:.1f} pods/s{extra}, created {result['create_per_s']:.0f}/s, "
                f"{result['bound']}/{pods} bound, {result['create_errors']} creates refused, "
                f"{result['schedule_retries']} scheduling retries, {result['webhook_failures']:.0f} webhook calls "
                f"failed, {result['webhook_calls_per_pod']:.2f} webhook calls per pod"
                + (f", misplaced {result['misplaced']}" if result.get("misplaced") else "")
            )
    keys = STREAM_KEYS if mode == "stream" else BACKLOG_KEYS
    rate_key = "bound_per_s" if mode == "stream" else "scheduled_per_s"
    out: dict[str, Any] = {"mode": mode, "pods": pods, "variants": {}, "ratios": {}}
    for name, results in runs.items():
        out["variants"][name] = {key: summary(r.get(key, 0.0) for r in results) for key in keys} | {
            "cpu_ms_per_pod": {
                component: summary(r["cpu_ms_per_pod"].get(component, 0.0) for r in results)
                for component in results[0]["cpu_ms_per_pod"]
            },
            "misplaced": sum(r.get("misplaced", 0) for r in results),
            "incomplete": sum(1 for r in results if not r["complete"]),
            "runs": results,
        }
    for a, b in RATIOS:
        if a in runs and b in runs:
            pairs = zip(runs[a], runs[b], strict=True)
            out["ratios"][f"{a}/{b}"] = summary(x[rate_key] / y[rate_key] for x, y in pairs if y[rate_key])
    return out


def run_stack(plan: Plan, selected: set[str], profile_dir: Path | None, results: dict[str, Any]) -> None:
    from bench.stack import INSTALLED, SCHEDULER_QPS, BenchStack

    workdir = Path(tempfile.mkdtemp(prefix="trustgate-bench-"))
    webhook_args = [f"--threads={plan.webhook_threads}"]
    bs = BenchStack(workdir, log=log, service_args={"webhook": webhook_args})
    out = StackResults()
    results["stack"] = out

    def scheduling(nodes: int, pods: int) -> dict[str, Any]:
        """Every variant compared at `nodes` nodes, pods created concurrently (profiled) and as a backlog."""
        label = f"{nodes} nodes"
        return {
            "nodes": nodes,
            "stream": _profiled(
                bs, profile_dir, f"{nodes}", out, lambda: compare(bs, plan.variants, "stream", pods, plan, label)
            ),
            "backlog": compare(bs, plan.variants, "backlog", pods, plan, label),
        }

    try:
        started = time.monotonic()
        bs.up()
        out.setup["stack_up_s"] = time.monotonic() - started
        out.setup["webhook_gunicorn"] = f"3 workers x {plan.webhook_threads} threads (gthread)"
        out.setup["extender_gunicorn"] = "1 worker x 4 threads (gthread), as deployed"
        out.setup["scheduler_client_qps"] = SCHEDULER_QPS
        seconds = bs.add_nodes(plan.nodes)
        caught = bs.wait_caught_up()
        out.setup[f"nodes_{plan.nodes}"] = {"create_s": seconds, "caught_up_s": caught}
        log(f"{plan.nodes} nodes registered in {seconds:.1f}s, services caught up in {caught:.1f}s")
        if "memory" in selected:
            out.memory[str(plan.nodes)] = bs.worker_rss()
            log(f"memory at {plan.nodes} nodes: {out.memory[str(plan.nodes)]}")

        if "webhook-threads" in selected:

            def set_threads(name: str, rep: int) -> None:
                bs.restart_service("webhook", [f"--threads={name.split('x')[-1]}"])

            from bench.stack import INSTALLED, TRUST_NS, VARIANTS, Variant

            for threads in plan.burst_threads:
                VARIANTS[f"webhook-3x{threads}"] = Variant(
                    f"webhook-3x{threads}", INSTALLED, TRUST_NS, f"webhook 3 workers x {threads} threads, trust pods"
                )
            names = tuple(f"webhook-3x{t}" for t in reversed(plan.burst_threads))
            out.burst = compare(bs, names, "stream", plan.burst_pods, plan, "webhook-threads", set_threads)
            bs.restart_service("webhook", webhook_args)

        if "scheduling" in selected:
            out.scheduling = scheduling(plan.nodes, plan.pods) | {
                "deployment": bs.deployment_run(plan.deployment_replicas)
            }
            deployment = out.scheduling["deployment"]
            log(
                f"Deployment of {deployment['replicas']} plain pods: {deployment['webhook_calls_per_pod']:.2f} "
                f"webhook calls per pod, bound in {deployment['seconds']:.1f}s"
            )

        if selected & {"scale", "revocation", "memory"}:
            more = plan.scale_nodes - len(bs.hosts)
            seconds = bs.add_nodes(more, threads=24)
            caught = bs.wait_caught_up(600)
            out.setup[f"nodes_{plan.scale_nodes}"] = {"create_s": seconds, "caught_up_s": caught}
            log(f"{more} more nodes registered in {seconds:.1f}s ({more / seconds:.0f}/s), caught up in {caught:.1f}s")
            if "memory" in selected:
                out.memory[f"{plan.scale_nodes}"] = bs.worker_rss()
                log(f"memory at {plan.scale_nodes} nodes: {out.memory[str(plan.scale_nodes)]}")

        if "scale" in selected:
            out.scale = scheduling(plan.scale_nodes, plan.scale_pods)

        if selected & {"revocation", "memory"}:
            bs.install(INSTALLED)
        if "revocation" in selected:
            out.revocation = bs.revocation(plan.revocation_trials)
            out.revocation["nodes"] = len(bs.hosts)
            rev = out.revocation
            log(
                f"revocation: extender p50 {rev['extender']['p50_ms']:.0f} ms p99 {rev['extender']['p99_ms']:.0f} ms, "
                f"webhook p50 {rev['webhook']['p50_ms']:.0f} ms p99 {rev['webhook']['p99_ms']:.0f} ms"
            )

        if "memory" in selected and (out.scale or out.revocation):
            out.memory[f"{plan.scale_nodes} after load"] = bs.worker_rss()
            log(f"memory at {plan.scale_nodes} nodes after the runs: {out.memory[f'{plan.scale_nodes} after load']}")
    finally:
        bs.down()
        shutil.rmtree(workdir, ignore_errors=True)


def _profiled(bs: Any, profile_dir: Path | None, label: str, out: StackResults, run: Callable[[], Any]) -> Any:
    """Run `run`, sampling the extender and webhook workers with py-spy during its first ~20 s."""
    if profile_dir is None:
        return run()
    from bench.profile import summarize
    from bench.stack import py_spy

    profile_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for service in ("extender", "webhook"):
        for pid in bs.service_pids(service):
            path = profile_dir / f"{service}-{pid}-{label}.txt"
            spy = py_spy(pid, 25, path)
            if spy is not None:
                spies.append((service, path, spy))
    result = run()
    for service, path, spy in spies:
        spy.wait(60)
        if path.exists():
            out.profiles.setdefault(label, {}).setdefault(service, []).append(summarize(path))
    return result


# --- the table -------------------------------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []  # figure, value, target, verdict

    def add(figure: str, value: str, target: str = "", ok: bool | None = None) -> None:
        rows.append((figure, value, target, _verdict(ok)))

    if results.get("encrypted"):
        from bench.encrypted import rows as encrypted_rows

        for figure, value in encrypted_rows(results["encrypted"]):
            add(figure, value)
    stack: StackResults | None = results.get("stack")
    if stack and stack.scheduling:
        _scheduling_rows(add, stack.scheduling, "")
    if stack and stack.scale:
        _scheduling_rows(add, stack.scale, " (nodeCacheCapable)")
    if stack and stack.burst:
        burst = stack.burst
        for name, variant in burst["variants"].items():
            threads = name.split("x")[-1]
            refused = variant["create_errors"]
            add(
                f"Trust pod create bursts ({burst['pods']} pods, 16 clients), webhook at 3 workers x {threads}"
                " threads: creates refused (webhook timed out) / pods per s / p99 create→bound",
                f"{fmt_summary(refused, 0)} / {fmt_summary(variant['bound_per_s'])} / "
                f"{fmt_summary(variant['latency_p99_ms'], 0, ' ms')}" + _failures(variant),
                "0 refused",
                refused["max"] == 0,
            )
    filt = results.get("filter")
    if filt:
        for case in filt["cases"]:
            n = f"{case['nodes']:,}"
            label = case["case"].replace("NodeNames", f"{n} NodeNames").replace("full Nodes", f"{n} full Nodes")
            label = f"/{case['verb']} {label}"
            if "x_filter_cpu_p50_ms" in case:
                steady = case["case"] == "trust pod, NodeNames" and case["nodes"] == 5000
                add(
                    f"{label}: p50 / p99 ms (CPU p99; x /filter CPU p50)",
                    f"{fmt_summary(case['p50_ms'], 2)} / {fmt_summary(case['p99_ms'], 2)} "
                    f"({fmt_summary(case['cpu_p99_ms'], 2)}; {fmt_summary(case['x_filter_cpu_p50_ms'], 2, 'x')})",
                    f"<= {TARGETS['prioritize_filter_ratio']}x /filter" if steady else "",
                    case["x_filter_cpu_p50_ms"]["median"] <= TARGETS["prioritize_filter_ratio"] if steady else None,
                )
            elif "ratio_p50" in case:
                add(
                    f"{label}: p50 / p99 ms (floor p50 ms, x floor)",
                    f"{fmt_summary(case['p50_ms'], 2)} / {fmt_summary(case['p99_ms'], 2)} "
                    f"({fmt_summary(case['floor_p50_ms'], 2)}, {fmt_summary(case['ratio_p50'], 2, 'x')})",
                    f"<= {TARGETS['filter_floor_ratio']}x floor",
                    case["ratio_p50"]["median"] <= TARGETS["filter_floor_ratio"],
                )
            else:
                steady = case["case"] == "trust pod, NodeNames" and case["nodes"] == 5000
                add(
                    f"{label}: p50 / p99 ms (CPU p99)",
                    f"{fmt_summary(case['p50_ms'], 2)} / {fmt_summary(case['p99_ms'], 2)} "
                    f"({fmt_summary(case['cpu_p99_ms'], 2)})",
                    f"p99 < {TARGETS['filter_p99_ms']:.0f} ms" if steady else "",
                    case["p99_ms"]["median"] < TARGETS["filter_p99_ms"] if steady else None,
                )
    adm = results.get("admission")
    if adm and "configs" in adm:
        for name, entry in adm["configs"].items():
            ok = (
                entry["webhook_rps"]["median"] >= TARGETS["admission_rps"]
                and entry["webhook_p99_ms"]["median"] < TARGETS["admission_p99_ms"]
                and entry["ratio"]["median"] >= TARGETS["admission_ratio"]
            )
            add(
                f"Webhook admission over TLS, wrk {adm['connections']} connections, gunicorn {name}: "
                "req/s / p50 / p99 ms (no-op: req/s / p99); ratio",
                f"{fmt_summary(entry['webhook_rps'], 0)} / {fmt_summary(entry['webhook_p50_ms'], 2)} / "
                f"{fmt_summary(entry['webhook_p99_ms'], 2)} (no-op {fmt_summary(entry['noop_rps'], 0)} / "
                f"{fmt_summary(entry['noop_p99_ms'], 2)}); {fmt_summary(entry['ratio'], percent=True)}",
                ">= 1,500/s, p99 < 10 ms, >= 70%",
                ok,
            )
    elif adm:
        add("Webhook admission over TLS (wrk)", adm.get("skipped", "skipped"))
    if stack and stack.revocation:
        rev = stack.revocation
        for which in ("extender", "webhook"):
            r = rev[which]
            add(
                f"Revocation → first refusal by the {which} ({rev['trials']} trials, {rev['nodes']:,} nodes): "
                "p50 / p99 / max ms",
                f"{fmt(r['p50_ms'], 0)} / {fmt(r['p99_ms'], 0)} / {fmt(r['max_ms'], 0)}"
                + (f" ({r['timeouts']} never refused)" if r["timeouts"] else ""),
                "p99 < 1 s",
                r["p99_ms"] < TARGETS["revocation_p99_ms"] and not r["timeouts"],
            )
    if stack and stack.memory:
        scale = str(results["plan"]["scale_nodes"])
        for label, services in stack.memory.items():
            cells = []
            worst = 0.0
            for service in ("extender", "webhook"):
                values = services.get(service) or []
                worst = max([worst, *values])
                cells.append(f"{service} {', '.join(f'{v:.0f}' for v in values)}")
            big = label.split()[0] == scale
            count, _, after = label.partition(" ")
            add(
                f"RSS per gunicorn worker (MiB), {int(count):,} nodes{', after the runs' if after else ''}",
                "; ".join(cells),
                "< 150 MiB" if big else "",
                worst < TARGETS["rss_mib"] if big else None,
            )
    ver = results.get("verify")
    if ver:
        for row in ver["rows"]:
            add(
                f"Verify {row['alg']} ({row['key']}), {ver['count']:,} reports: cold / warm µs per report",
                f"{fmt_summary(row['cold_us'], 1)} / {fmt_summary(row['warm_us'], 2)}",
            )
    lines = ["| figure | median [min, max] | target | |", "|---|---|---|---|"]
    lines += [f"| {figure} | {value} | {target} | {verdict} |" for figure, value, target, verdict in rows]
    return "\n".join(lines)


def _failures(variant: dict[str, Any]) -> str:
    """Failed webhook calls (the API server's count: timeouts included) and kube-scheduler's retries, summed
    over the runs: both targets are 0 in every variant."""
    failed = sum(variant["webhook_failures"]["runs"])
    retries = sum(variant["schedule_retries"]["runs"])
    return f"; failed webhook calls {failed:.0f}, scheduling retries {retries:.0f}"


CPU_COMPONENTS = (
    ("kube-apiserver", "apiserver"),
    ("etcd", "etcd"),
    ("kube-scheduler", "scheduler"),
    ("trustgate-extender", "extender"),
    ("trustgate-webhook", "webhook"),
    ("trustgate-controller", "controller"),
    ("kube-controller-manager", "kcm"),
    ("bench client", "load generator"),
)


def _scheduling_rows(add: Callable[..., None], section: dict[str, Any], suffix: str) -> None:
    from bench.stack import VARIANTS

    nodes = section["nodes"]
    for mode in ("stream", "backlog"):
        runs = section[mode]
        pods = f"{runs['pods']:,} pods"
        how = f"{pods} created by 16 clients" if mode == "stream" else f"backlog of {pods}"
        for name, variant in runs["variants"].items():
            failed, retries = sum(variant["webhook_failures"]["runs"]), sum(variant["schedule_retries"]["runs"])
            if mode == "stream":
                figure = "pods bound/s; p99 create→bound"
                value = f"{fmt_summary(variant['bound_per_s'])}; {fmt_summary(variant['latency_p99_ms'], 0, ' ms')}"
            else:
                figure = "pods scheduled/s (5th to 95th percentile binding); tail after the 95th"
                value = f"{fmt_summary(variant['scheduled_per_s'])}; {fmt_summary(variant['tail_s'], 1, ' s')}"
            refused = variant["create_errors"]["max"]
            add(
                f"Scheduling {nodes:,} nodes{suffix}, {how}, {VARIANTS[name].description}: {figure}; "
                "webhook calls per pod; failed webhook calls, scheduling retries (all runs)",
                value
                + f"; {fmt_summary(variant['webhook_calls_per_pod'], 2)}"
                + _failures(variant)
                + (f" ({refused:.0f} creates refused)" if refused else "")
                + (f" ({variant['misplaced']} MISPLACED)" if variant["misplaced"] else ""),
                "0 failed, 0 retries",
                failed == 0 and retries == 0 and not variant["misplaced"],
            )
        if mode == "stream":
            for name, variant in runs["variants"].items():
                cpu = variant["cpu_ms_per_pod"]
                parts = [f"total {fmt(cpu['total']['median'])}"] + [
                    f"{short} {fmt(cpu[component]['median'])}"
                    for component, short in CPU_COMPONENTS
                    if component in cpu and cpu[component]["median"] >= 0.05
                ]
                add(f"↳ CPU ms per pod by component, {name}", "; ".join(parts))
        for pair, ratio in runs["ratios"].items():
            target = RATIO_TARGETS.get(pair)
            ok = ratio["median"] >= TARGETS[target] if target else None
            add(
                f"↳ {'throughput' if mode == 'stream' else 'scheduling-rate'} ratio {pair} ({nodes:,} nodes, {how})",
                fmt_summary(ratio, percent=True),
                f">= {TARGETS[target]:.0%}" if target else "",
                ok,
            )
    deployment = section.get("deployment")
    if deployment:
        add(
            f"Webhook calls per plain pod of a Deployment ({deployment['replicas']} replicas, {nodes:,} nodes), "
            "kube-apiserver's count from creation to the last binding",
            f"{deployment['webhook_calls_per_pod']:.2f} (failed {deployment['webhook_failures']:.0f})",
            "0",
            deployment["webhook_calls_per_pod"] == 0,
        )


def _notes(results: dict[str, Any]) -> str:
    plan = results["plan"]
    lines = [
        "Notes:",
        "- Stack: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (Kubernetes built from source) and "
        "trustgate under gunicorn over TLS, all on this machine; API-only nodes (no kubelet: bound = spec.nodeName "
        "set, seen on a watch). Nodes: 88% valid reports, 2% each of no report, forged signature, expired, copied, "
        "pre-reboot, level failing. Trust pods are selected by a namespace TrustPolicy.",
        f"- Webhook on the stack: 3 workers x {plan['webhook_threads']} threads (the chart has 3 x 8; the pod create "
        "burst rows compare 3 x 2); extender 1 worker x 4 threads with nodeCacheCapable: true, as deployed. "
        "kube-scheduler client QPS/burst raised to 5000 in every variant (the default 50/100 caps bindings near "
        "50/s and hides any extender cost).",
        "- Pods created concurrently: 16 client threads, as fast as the API server admits them; throughput = pods / "
        "(last binding - first create). Backlog: pods created with kube-scheduler stopped, then started; rate "
        "between its 5th and 95th percentile bindings (pods retried after a failed call wait out the scheduler's "
        "backoff: the tail). CPU ms per pod: user+system time of each process during the run.",
        "- Variants: no-trustgate is what a cluster has without trustgate (kube-scheduler without the extender, no "
        "webhook configuration, no trustgate process running); plain and trust run with trustgate installed as the "
        "chart installs it (extender, webhook, controller; webhook configurations scoped by the controller); floor "
        "is that installation with the extender and webhook replaced by devkit.floor (the same flags, ports, TLS, "
        "client certificates and gunicorn settings; /filter passes every node, /bind binds, /validate admits, "
        "/mutate marks) so that trust/floor is the cost of trustgate's decisions and caches alone.",
        "- Webhook calls and failed calls are kube-apiserver's own counts (apiserver_admission_webhook_request_total,"
        " apiserver_admission_webhook_rejection_count{error_type=calling_webhook_error}) over the run.",
        "- Comparisons alternate A/B/B/A in one session; ratios are per pair. Everything shares the machine's CPUs "
        "(including the load generator and other users' jobs: see the load averages), so the extender's and the "
        "webhook's CPU slows the API server down too.",
    ]
    if results.get("stack_error"):
        lines.append(f"- The stack benchmarks stopped early: {results['stack_error']}")
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, NaN and infinities as null."""
    if isinstance(value, StackResults):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run with small counts")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="NAME", help=f"only: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json", help="JSON results (and .md)")
    parser.add_argument("--webhook-threads", type=int, help="gthread threads per webhook worker on the stack (8)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the services during scheduling runs")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.webhook_threads:
        plan.webhook_threads = args.webhook_threads
    selected = set(args.only or SECTIONS)

    started, wall = time.monotonic(), dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "started": wall.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "load_start": loadavg(),
        "plan": asdict(plan),
        "sections": [s for s in SECTIONS if s in selected],
    }
    log(f"machine: {results['machine']}; load average {results['load_start']}")
    timings: dict[str, float] = {}

    def section(name: str, run: Callable[[], Any]) -> None:
        if name not in selected:
            return
        begun = time.monotonic()
        log(f"--- {name}")
        results[name] = run()
        timings[name] = time.monotonic() - begun

    section("verify", lambda: run_verify(plan))
    section("filter", lambda: run_filter(plan))
    section("admission", lambda: run_admission(plan))
    if selected & STACK_SECTIONS:
        begun = time.monotonic()
        log("--- stack (the control plane is built first if it is not cached)")
        try:
            run_stack(plan, selected, args.profile, results)
        except Exception as error:  # keep what was measured; say what failed
            log(f"stack benchmarks failed:\n{traceback.format_exc()}")
            results["stack_error"] = f"{type(error).__name__}: {error}"
        timings["stack"] = time.monotonic() - begun

    if "encrypted" in selected:
        from bench.encrypted import run as run_encrypted

        section("encrypted", lambda: run_encrypted(pairs=2 if args.quick else 5, payload_mib=8))

    results["load_end"] = loadavg()
    results["section_seconds"] = timings
    results["wall_seconds"] = time.monotonic() - started
    text = table(results)
    header = (
        f"Measured {results['started']} on {results['machine']['nproc']} CPUs ({results['machine']['cpu_model']}), "
        f"load average {results['load_start'][0] if results['load_start'] else '?'} at start, "
        f"{results['load_end'][0] if results['load_end'] else '?'} at end; "
        f"{'quick smoke run' if args.quick else 'full run'} in {results['wall_seconds'] / 60:.1f} min."
    )
    if "stack_error" in results:
        header += f" The stack benchmarks stopped early: {results['stack_error']}"
    results["table"] = text
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(results), indent=2) + "\n")
    notes = _notes(results)
    args.out.with_suffix(".md").write_text(f"{header}\n\n{text}\n\n{notes}\n")
    print(header)
    print()
    print(text)
    print()
    print(notes)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
