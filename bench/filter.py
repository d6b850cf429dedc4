"""Server-side latency of the extender's /filter and /prioritize:
`python -m bench.filter [--repeat N] [--against REV] [--profile CASE] [--json PATH] [--stdlib-json]`.

Times exactly what the server does per request once the body is read, minus HTTP: decode the raw
body (`wire.decode_args`), take the decision and encode the reply (`extender.app.filter_request`,
`prioritize_request`), over a snapshot of a mixed population of 5,000 nodes: 84% valid (expiries
spread over two hours), the rest failing each way (no report, expired, bound to another host,
rebooted, a level not trusted, the wrong asset tag, a forged signature).

Cases: a trust-requiring pod (`nodeSelector` on trusted=true and asset tag country=US) with 100,
1,000 and 5,000 NodeNames (nodeCacheCapable) against a warm `NodeIndex` (the steady state of a
worker), /prioritize of the same pod and nodes, 5,000 with a cold index (the first request after a
relist), 1,000 full Node objects as a kubelet reports them (~4 KiB each); and a pod needing no trust
(the fast path). For full Nodes the floor is decoding and encoding the same payload with the same
JSON library and nothing else.

The machine is shared: wall-clock and CPU-time percentiles are both shown (the wall clock includes
time spent preempted by other processes), and what is compared is timed in alternation, call by
call (ABBA), so that other load hits both alike: /filter and /prioritize of the same nodes, a full
Node request and its floor, and, with `--against REV`, this tree's extender and the one at git
revision REV (every reply compared byte for byte; each keeps its own index, so both run with more
memory in use than one server: the absolute figures are a run's without `--against`). Each figure
is the median of `--repeat` runs.
`--profile CASE` runs one case under cProfile instead and prints where the time goes.

Targets: p99 < 3 ms at 5,000 NodeNames; /prioritize within 1.2x /filter for the same 5,000 nodes
(CPU p50); full Nodes within 1.5x of the floor."""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, fmt_summary, loadavg, summary
from devkit.factories import Issuer, node_object, pod_object
from trustgate.core.keys import generate_private_key
from trustgate.core.signing import sign_claims
from trustgate.core.snapshot import Snapshot

ITERATIONS = 200
REPEAT = 3
TARGET_NAMES_P99_MS = 3.0  # /filter of a trust-requiring pod, 5,000 NodeNames, warm index
TARGET_PRIORITIZE_RATIO = 1.2  # /prioritize against /filter of the same 5,000 NodeNames (CPU p50)
TARGET_FLOOR_RATIO = 1.5  # 1,000 full Nodes against decoding and encoding the same body
EXTENDER_MODULES = ("extender.wire", "extender.filter", "extender.bind", "extender.app")  # import order
COUNTRY = "asset.trustgate.dev/country"


def realistic_node(name: str, index: int) -> dict[str, Any]:
    """A Node as a kubelet reports it (labels, annotations, conditions, addresses, images)."""
    node = node_object(name)
    zone = f"zone-{index % 3}"
    node["metadata"].update(
        {
            "uid": f"9a0c1e2f-0000-4000-8000-{index:012d}",
            "resourceVersion": str(1_000_000 + index),
            "creationTimestamp": "2026-01-10T08:00:00Z",
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m6i.2xlarge",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": zone,
                "trustgate.dev/trusted": "true",
                "asset.trustgate.dev/country": "US",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
            },
        }
    )
    node["spec"] = {
        "podCIDR": f"10.{index // 256 % 256}.{index % 256}.0/24",
        "providerID": f"aws:///{zone}/i-{index:017x}",
    }
    status = node["status"]
    status["capacity"] = {"cpu": "8", "ephemeral-storage": "104845292Ki", "memory": "32386544Ki", "pods": "110"}
    status["allocatable"] = {"cpu": "7910m", "ephemeral-storage": "96625420948", "memory": "31369712Ki", "pods": "110"}
    status["conditions"] = [
        {
            "type": kind,
            "status": "False" if kind != "Ready" else "True",
            "lastHeartbeatTime": "2026-11-26T09:59:30Z",
            "lastTransitionTime": "2026-01-10T08:01:00Z",
            "reason": f"Kubelet{kind}",
            "message": f"kubelet reports {kind}",
        }
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
    ]
    status["addresses"] = [
        {"type": "InternalIP", "address": f"10.0.{index // 256 % 256}.{index % 256}"},
        {"type": "Hostname", "address": name},
    ]
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
    status["nodeInfo"].update(
        {
            "machineID": f"{index:032x}",
            "kernelVersion": "6.8.0-1018-aws",
            "osImage": "Ubuntu 24.04.1 LTS",
            "containerRuntimeVersion": "containerd://1.7.22",
            "kubeletVersion": "v1.34.1",
            "kubeProxyVersion": "v1.34.1",
            "operatingSystem": "linux",
            "architecture": "amd64",
        }
    )
    status["images"] = [
        {
            "names": [f"registry.example/team/app-{i}@sha256:{i:064x}", f"registry.example/team/app-{i}:v{i}"],
            "sizeBytes": 10_000_000 + i,
        }
        for i in range(12)
    ]
    return node


def population(size: int, issuer: Issuer, now: float) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Nodes and their reports: 80% valid (with some spread in expiry), the rest failing each way."""
    rogue = generate_private_key("ES256")
    nodes, reports = [], {}
    for i in range(size):
        name = f"node-{i:05d}"
        nodes.append(realistic_node(name, i))
        kind = i % 50
        ttl = 3600 + (i % 7) * 600
        if kind == 0:
            continue  # no report
        if kind == 1:
            reports[name] = issuer.token(name, now=now - 7200, ttl=3600)  # expired
        elif kind == 2:
            reports[name] = issuer.token(name, system_uuid="4c4c4544-dead-beef-0000-000000000000", now=now, ttl=ttl)
        elif kind == 3:
            reports[name] = issuer.token(name, boot_id="b00700deadbeef", now=now, ttl=ttl)
        elif kind == 4:
            reports[name] = issuer.token(name, levels={"kernel": False}, asset_tags={"country": "US"}, now=now)
        elif kind in (5, 6):
            reports[name] = issuer.token(name, asset_tags={"country": "EU"}, now=now, ttl=ttl)
        elif kind == 7:
            claims = issuer.claims(name, asset_tags={"country": "US"}, now=now)
            reports[name] = sign_claims(claims, rogue, alg="ES256", kid=issuer.jwks["keys"][0]["kid"])
        else:
            reports[name] = issuer.token(name, asset_tags={"country": "US"}, now=now - (i % 11) * 60, ttl=ttl)
    return nodes, reports


def go_marshal(pod: dict[str, Any], nodes: list[dict[str, Any]] | None, names: list[str] | None) -> bytes:
    """ExtenderArgs as kube-scheduler's json.Marshal writes it (field order, null for the unused one)."""
    node_list = {"metadata": {}, "items": nodes} if nodes is not None else None
    return json.dumps({"Pod": pod, "Nodes": node_list, "NodeNames": names}, separators=(",", ":")).encode()


# --- what is timed ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """One version of the extender's request path, from the body on."""

    name: str
    decode_args: Callable[[bytes], Any]
    filter_request: Callable[..., tuple[bytes, Any]]
    prioritize_request: Callable[..., tuple[bytes, Any]]
    node_index: Callable[[], Any]


def this_tree() -> Variant:
    from extender import app, filter, wire

    return Variant("this tree", wire.decode_args, app.filter_request, app.prioritize_request, filter.NodeIndex)


def at_revision(revision: str) -> Variant:
    """The extender's modules as of git `revision`, beside this tree's: each is executed under its own name
    while its siblings of that revision stand in `sys.modules` for this tree's, which are then put back."""
    short = _git("rev-parse", "--short", revision).strip()
    saved = {name: sys.modules.get(name) for name in EXTENDER_MODULES}
    loaded: dict[str, types.ModuleType] = {}
    try:
        for name in EXTENDER_MODULES:
            path = name.replace(".", "/") + ".py"
            module = types.ModuleType(name)
            module.__file__ = f"{short}:{path}"
            sys.modules[name] = loaded[name] = module
            exec(compile(_git("show", f"{revision}:{path}"), module.__file__, "exec"), module.__dict__)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    app, filter_module, wire = loaded["extender.app"], loaded["extender.filter"], loaded["extender.wire"]
    return Variant(short, wire.decode_args, app.filter_request, app.prioritize_request, filter_module.NodeIndex)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True, slots=True)
class Case:
    """One kind of request: `verb` over `body`, against the worker's warm index unless `cold`."""

    key: str  # for --profile
    label: str
    verb: str  # "filter" or "prioritize"
    nodes: int
    body: bytes
    cold: bool = False  # a fresh NodeIndex for every call: the first request after a relist
    floor: bool = False  # also time the JSON floor: decode and encode the same body, nothing else


def cases(size: int = 5000) -> tuple[Snapshot, float, list[list[Case]]]:
    """The snapshot, its `now` and the cases, in groups whose members are timed in alternation."""
    issuer = Issuer()
    now = time.time()
    nodes, reports = population(size, issuer, now)
    snapshot = Snapshot.build(issuer.verifier(), nodes=nodes, reports=reports)
    trust_pod = pod_object("secure", node_selector={"trustgate.dev/trusted": "true", COUNTRY: "US"})
    plain_pod = pod_object("plain")
    names = [n["metadata"]["name"] for n in nodes]
    by_name = {count: go_marshal(trust_pod, None, names[:count]) for count in (100, 1000, 5000)}
    full_nodes = go_marshal(trust_pod, nodes[:1000], None)
    trust, cold, plain = (
        "trust pod, NodeNames",
        "trust pod, NodeNames, cold index (first request after a relist)",
        ("no-trust pod (fast path), NodeNames"),
    )
    groups = [
        [Case("filter-100", trust, "filter", 100, by_name[100])],
        [
            Case("filter-1000", trust, "filter", 1000, by_name[1000]),
            Case("prioritize-1000", trust, "prioritize", 1000, by_name[1000]),
        ],
        [
            Case("filter-5000", trust, "filter", 5000, by_name[5000]),
            Case("prioritize-5000", trust, "prioritize", 5000, by_name[5000]),
        ],
        [Case("filter-5000-cold", cold, "filter", 5000, by_name[5000], cold=True)],
        [Case("filter-5000-no-trust", plain, "filter", 5000, go_marshal(plain_pod, None, names))],
        [Case("filter-1000-nodes", "trust pod, full Nodes", "filter", 1000, full_nodes, floor=True)],
    ]
    return snapshot, now, groups


def request(case: Case, variant: Variant, snapshot: Snapshot, now: float, index: Any) -> Callable[[], bytes]:
    """What the server does for one `case` request once its body is read: decode, decide, encode."""
    decide = variant.filter_request if case.verb == "filter" else variant.prioritize_request
    decode, fresh = variant.decode_args, variant.node_index

    def call() -> bytes:
        return decide(snapshot, decode(case.body), now, fresh() if case.cold else index)[0]

    return call


def timed(functions: Sequence[Callable[[], Any]], iterations: int) -> list[dict[str, float]]:
    """p50/p99 of wall-clock and of this thread's CPU time, in ms, for each function. They are timed in
    alternation: each iteration calls every function once, in reverse order every other time (ABBA), so
    that load from other processes and the collector's work fall on all of them alike. On a busy machine
    the wall clock includes time spent preempted; the CPU time is what the request itself costs."""
    for function in functions:
        for _ in range(5):
            function()  # warm up
    wall: list[list[float]] = [[] for _ in functions]
    cpu: list[list[float]] = [[] for _ in functions]
    order = list(enumerate(functions))
    gc.collect()
    for iteration in range(iterations):
        for k, function in order if iteration % 2 == 0 else reversed(order):
            started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
            function()
            cpu[k].append((time.thread_time_ns() - started_cpu) / 1e6)
            wall[k].append((time.perf_counter_ns() - started) / 1e6)
    return [
        {"p50_ms": statistics.median(w), "p99_ms": p99(w), "cpu_p50_ms": statistics.median(c), "cpu_p99_ms": p99(c)}
        for w, c in zip(wall, cpu, strict=True)
    ]


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def counts(case: Case, reply: bytes) -> tuple[int, int]:
    """(passed, failed) of a /filter reply; (scored above 0, scored 0) of a /prioritize one."""
    document = json.loads(reply)
    if case.verb == "prioritize":
        positive = sum(1 for entry in document if entry["Score"] > 0)
        return positive, len(document) - positive
    passed = document["NodeNames"] if document["NodeNames"] is not None else document["Nodes"]["items"]
    return len(passed), len(document["FailedAndUnresolvableNodes"] or {})


def run(iterations: int = ITERATIONS, tune: bool = True, against: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One run of every case, for this tree's extender and the one at each revision in `against`."""
    from extender.main import tune_gc
    from extender.wire import dumps, loads

    variants = [this_tree(), *(at_revision(revision) for revision in against)]
    snapshot, now, groups = cases()
    if tune:
        tune_gc()  # as a worker of `trustgate-extender` does once its app is built
    indexes = [variant.node_index() for variant in variants]  # the server keeps one per worker
    rows: list[dict[str, Any]] = []
    for group in groups:
        members = [
            (case, v, request(case, variant, snapshot, now, indexes[v]))
            for case in group
            for v, variant in enumerate(variants)
        ]
        functions = [call for _, _, call in members]
        floors = [case for case in group if case.floor]
        functions += [lambda body=case.body: dumps(loads(body)) for case in floors]
        cold = any(case.cold for case in group)
        times = timed(functions, max(20, iterations // 4) if cold else iterations)
        first_reply: dict[str, bytes] = {}
        group_rows = []
        for (case, v, call), measured in zip(members, times, strict=False):
            reply = call()
            passed, failed = counts(case, reply)
            row: dict[str, Any] = {
                "case": case.label,
                "verb": case.verb,
                "nodes": case.nodes,
                "variant": variants[v].name,
                "body_bytes": len(case.body),
                "passed": passed,
                "failed": failed,
                **measured,
            }
            if v > 0:
                row["same_reply"] = reply == first_reply[case.key]
            first_reply.setdefault(case.key, reply)
            group_rows.append((case, v, row))
        for case, floor_times in zip(floors, times[len(members) :], strict=True):
            for _, _, row in (m for m in group_rows if m[0] is case):
                row.update({f"floor_{key}": value for key, value in floor_times.items()})
                row["ratio_p50"] = row["p50_ms"] / row["floor_p50_ms"]
                row["cpu_ratio_p50"] = row["cpu_p50_ms"] / row["floor_cpu_p50_ms"]
        for case, v, row in group_rows:
            if case.verb == "prioritize":  # against /filter of the same nodes, timed in the same alternation
                filtered = next(r for c, w, r in group_rows if c.verb == "filter" and c.nodes == case.nodes and w == v)
                for key in ("p50_ms", "p99_ms", "cpu_p50_ms", "cpu_p99_ms"):
                    row[f"x_filter_{key}"] = row[key] / filtered[key]
        rows += [row for _, _, row in group_rows]
    return rows


# --- repeats, table, targets ------------------------------------------------------------------------

FIGURES = (
    "p50_ms",
    "p99_ms",
    "cpu_p50_ms",
    "cpu_p99_ms",
    "floor_p50_ms",
    "floor_cpu_p50_ms",
    "ratio_p50",
    "cpu_ratio_p50",
    "x_filter_p50_ms",
    "x_filter_p99_ms",
    "x_filter_cpu_p50_ms",
    "x_filter_cpu_p99_ms",
)


def summarize(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of repeated runs, each figure as `common.summary` (median, min, max)."""
    rows = []
    for same in zip(*runs, strict=True):
        first = same[0]
        row = {key: value for key, value in first.items() if key not in FIGURES and key != "same_reply"}
        row.update({key: summary(r[key] for r in same) for key in FIGURES if key in first})
        if "same_reply" in first:
            row["same_reply"] = all(r["same_reply"] for r in same)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], iterations: int, repeat: int) -> str:
    from extender.wire import JSON_LIBRARY

    spread = f", median [min, max] of {repeat} runs" if repeat > 1 else ""
    lines = [
        f"/filter and /prioritize server-side latency (ms), {iterations} iterations per case (cold: fewer){spread}, "
        f"JSON: {JSON_LIBRARY}",
        "",
        "| case | verb | nodes | body | variant | passed/failed | p50 | p99 | CPU p50 | CPU p99 "
        "| x /filter (p50 / CPU p50) | floor p50 / CPU p50 | x floor (p50 / CPU) | CPU p50 x this tree |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mine = {(row["case"], row["verb"], row["nodes"]): row for row in rows if row["variant"] == "this tree"}
    for row in rows:
        cell = {key: fmt_summary(row[key], 2) for key in FIGURES if key in row}
        vs_filter = f"{cell['x_filter_p50_ms']} / {cell['x_filter_cpu_p50_ms']}" if "x_filter_p50_ms" in cell else ""
        floor = f"{cell['floor_p50_ms']} / {cell['floor_cpu_p50_ms']}" if "floor_p50_ms" in cell else ""
        ratio = f"{cell['ratio_p50']} / {cell['cpu_ratio_p50']}" if "ratio_p50" in cell else ""
        versus = ""
        if row["variant"] != "this tree":
            base = mine[(row["case"], row["verb"], row["nodes"])]
            versus = f"{row['cpu_p50_ms']['median'] / base['cpu_p50_ms']['median']:.2f}x"
            versus += "" if row["same_reply"] else " (replies DIFFER)"
        lines.append(
            f"| {row['case']} | /{row['verb']} | {row['nodes']:,} | {row['body_bytes'] / 1024:,.0f} KiB "
            f"| {row['variant']} | {row['passed']}/{row['failed']} "
            f"| {cell['p50_ms']} | {cell['p99_ms']} | {cell['cpu_p50_ms']} | {cell['cpu_p99_ms']} "
            f"| {vs_filter} | {floor} | {ratio} | {versus} |"
        )
    return "\n".join(lines)


def steady(row: dict[str, Any], verb: str) -> bool:
    """The steady state of a worker at 5,000 NodeNames (a warm index, a trust-requiring pod)."""
    return row["case"] == "trust pod, NodeNames" and row["verb"] == verb and row["nodes"] == 5000


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Whether each target is met, per variant, from the medians of summarized rows."""
    notes = []
    for row in rows:
        who = "" if row["variant"] == "this tree" else f"[{row['variant']}] "
        median = {key: row[key]["median"] for key in FIGURES if key in row}
        if steady(row, "filter"):
            ok, cpu_ok = median["p99_ms"] < TARGET_NAMES_P99_MS, median["cpu_p99_ms"] < TARGET_NAMES_P99_MS
            notes.append(
                f"{who}/filter 5,000 NodeNames p99 {median['p99_ms']:.2f} ms wall, {median['cpu_p99_ms']:.2f} ms CPU "
                f"(target < {TARGET_NAMES_P99_MS}): wall {_ok(ok)}, CPU {_ok(cpu_ok)}"
            )
        if steady(row, "prioritize"):
            ok = median["x_filter_cpu_p50_ms"] <= TARGET_PRIORITIZE_RATIO
            notes.append(
                f"{who}/prioritize 5,000 NodeNames {median['x_filter_cpu_p50_ms']:.2f}x /filter's CPU p50 "
                f"({median['x_filter_p50_ms']:.2f}x wall p50, {median['x_filter_cpu_p99_ms']:.2f}x CPU p99) "
                f"(target <= {TARGET_PRIORITIZE_RATIO}): {_ok(ok)}"
            )
        if "ratio_p50" in median:
            ok = min(median["ratio_p50"], median["cpu_ratio_p50"]) <= TARGET_FLOOR_RATIO
            notes.append(
                f"{who}full Nodes {median['ratio_p50']:.2f}x (wall) / {median['cpu_ratio_p50']:.2f}x (CPU) the JSON "
                f"floor (target <= {TARGET_FLOOR_RATIO}): {_ok(ok)}"
            )
        if row.get("same_reply") is False:
            notes.append(f"{who}{row['case']} /{row['verb']} {row['nodes']:,}: replies DIFFER from this tree's")
    return notes


def _ok(ok: bool) -> str:
    return "met" if ok else "MISSED"


def profile(key: str, iterations: int, against: Sequence[str], top: int = 25) -> str:
    """cProfile of `iterations` calls of the case named `key`, for each variant: the functions by own time."""
    from extender.main import tune_gc

    variants = [this_tree(), *(at_revision(revision) for revision in against)]
    snapshot, now, groups = cases()
    found = [case for group in groups for case in group if case.key == key]
    if not found:
        raise SystemExit(f"no case {key!r}; cases: {', '.join(c.key for g in groups for c in g)}")
    tune_gc()
    out = []
    for variant in variants:
        call = request(found[0], variant, snapshot, now, variant.node_index())
        for _ in range(5):
            call()
        profiler = cProfile.Profile()
        profiler.runcall(lambda call=call: [call() for _ in range(iterations)])
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
        out.append(f"== {key}, {variant.name}, {iterations} calls ==\n{text.getvalue()}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.filter", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--repeat", type=int, default=REPEAT, help=f"runs, medians reported ({REPEAT})")
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="REV",
        help="also time the extender at this git revision, in alternation with this tree's",
    )
    parser.add_argument("--profile", metavar="CASE", help="profile one case (e.g. filter-5000) instead")
    parser.add_argument("--stdlib-json", action="store_true", help="measure without orjson")
    parser.add_argument("--default-gc", action="store_true", help="keep CPython's default GC thresholds")
    args = parser.parse_args(argv)
    if args.stdlib_json:
        sys.modules["orjson"] = None  # type: ignore[assignment]  # makes `import orjson` fail
    if args.profile:
        print(profile(args.profile, args.iterations, args.against))
        return 0
    load = loadavg()
    runs = [run(args.iterations, tune=not args.default_gc, against=args.against) for _ in range(args.repeat)]
    rows = summarize(runs)
    print(table(rows, args.iterations, args.repeat))
    print(f"GC: {'CPython defaults' if args.default_gc else 'tuned as in trustgate-extender (extender.main.tune_gc)'}")
    print(f"Load average {', '.join(map(str, load))} at start, {', '.join(map(str, loadavg()))} at end")
    print()
    for note in verdicts(rows):
        print(f"- {note}")
    if args.json:
        from extender.wire import JSON_LIBRARY

        args.json.write_text(json.dumps({"json_library": JSON_LIBRARY, "rows": rows, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
