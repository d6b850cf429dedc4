"""End-to-end admission throughput and latency: `python -m bench.admission [--json PATH] [--duration 10]`.

Serves the real webhook (`devkit.admission_apps:create`: `webhook.app.create_app` over a
`StaticCluster` of 1,000 nodes and four TrustPolicies) under gunicorn over TLS on 127.0.0.1
through `trustgate.serving.server`, then, under the same gunicorn settings, a no-op Flask handler
(`devkit.admission_apps:noop`, parses the body and answers allow). Each is driven by `wrk` with a
Lua script POSTing a realistic pods CREATE AdmissionReview (~5 KB, a ReplicaSet's pod) with
`spec.nodeName` set to a trusted node and a `trustgate.dev/trusted` nodeSelector: the trust path
(requirement, report expiry, level and constraint checks), not the fast path.

Reports requests/s, p50 and p99 for both and the webhook/no-op throughput ratio, for each
gunicorn configuration tried (worker class, workers, threads). wrk runs on the same machine and
takes its share of the CPUs.

Targets: >= 1,500 admissions/s, p99 < 10 ms, >= 70% of the no-op's throughput.
Needs `wrk` (Debian/Ubuntu: `apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_RPS = 1500.0
TARGET_P99_MS = 10.0
TARGET_RATIO = 0.70


@dataclass(frozen=True)
class Config:
    name: str
    worker_class: str
    workers: int
    threads: int = 1


CONFIGS = {
    c.name: c
    for c in (
        Config("sync-2", "sync", 2),
        Config("sync-3", "sync", 3),
        Config("gthread-2x2", "gthread", 2, 2),
        Config("gthread-2x4", "gthread", 2, 4),
        Config("gthread-3x2", "gthread", 3, 2),
        Config("gthread-3x8", "gthread", 3, 8),
    )
}
DEFAULT_CONFIGS = ("gthread-2x2", "gthread-2x4", "gthread-3x2", "sync-2", "sync-3")

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Result:
    app: str
    config: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)  # wrk's connect/read/write/status/timeout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    factory: str, config: Config, cert: Path, key: Path, port: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "bench.admission",
        "--serve",
        factory,
        "--port",
        str(port),
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
        "--config",
        config.name,
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def wait_ready(port: int, cert: Path, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=context, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in time")


def check_answer(port: int, cert: Path, body: bytes) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(cert))
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/validate", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=5) as answer:
        return json.loads(answer.read())["response"]


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_wrk(port: int, script: Path, body: Path, duration: float, connections: int, threads: int) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(int(duration), 1)}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"https://127.0.0.1:{port}/validate",
    ]
    output = subprocess.run(
        command, env=os.environ | {"BENCH_BODY": str(body)}, capture_output=True, text=True, check=True
    ).stdout
    for line in output.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH ") :])
    raise RuntimeError(f"no summary from wrk:\n{output}")


ERROR_KINDS = ("connect", "read", "write", "status", "timeout")
APPS = (("webhook", "devkit.admission_apps:create"), ("noop", "devkit.admission_apps:noop"))


def to_result(app: str, config: Config, connections: int, summary: dict[str, Any]) -> Result:
    return Result(
        app=app,
        config=config.name,
        connections=connections,
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        errors=sum(summary[k] for k in ERROR_KINDS),
        error_kinds={k: summary[k] for k in ERROR_KINDS if summary[k]},
    )


def median(results: list[Result]) -> Result:
    """The median of each figure over the repeats (errors: the total)."""
    first = results[0]
    return Result(
        app=first.app,
        config=first.config,
        connections=first.connections,
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        errors=sum(r.errors for r in results),
        error_kinds={k: n for k in ERROR_KINDS if (n := sum(r.error_kinds.get(k, 0) for r in results))},
    )


def measure_config(
    config: Config, files: dict[str, Path], args: argparse.Namespace, env: dict[str, str]
) -> dict[str, list[Result]]:
    """Both apps served side by side (an idle server costs nothing), measured in alternation so that
    noise from other load on the machine hits both alike."""
    ports = {app: free_port() for app, _ in APPS}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    runs: dict[str, list[Result]] = {app: [] for app, _ in APPS}
    try:
        for app, factory in APPS:
            processes[app] = start_server(factory, config, files["cert"], files["key"], ports[app], env)
        for app, _ in APPS:
            wait_ready(ports[app], files["cert"], processes[app])
            response = check_answer(ports[app], files["cert"], files["body"].read_bytes())
            if response.get("allowed") is not True or "auditAnnotations" in response:
                raise RuntimeError(f"{app} did not allow the trust-path request: {response}")
            run_wrk(ports[app], files["script"], files["body"], 2, args.connections, args.wrk_threads)  # warm-up
        for _ in range(args.repeat):
            for app, _ in APPS:
                summary = run_wrk(
                    ports[app], files["script"], files["body"], args.duration, args.connections, args.wrk_threads
                )
                runs[app].append(to_result(app, config, args.connections, summary))
    finally:
        for process in processes.values():
            stop_server(process)
    return runs


def serve_main(args: argparse.Namespace) -> None:
    """Internal: run one server (a child process of the benchmark)."""
    from trustgate.serving.server import load_factory, serve

    config = CONFIGS[args.config]
    serve(
        load_factory(args.serve),
        bind=f"127.0.0.1:{args.port}",
        certfile=args.certfile,
        keyfile=args.keyfile,
        workers=config.workers,
        threads=config.threads,
        worker_class=config.worker_class,
        loglevel="warning",
        accesslog=None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument(
        "--connections", type=int, default=4, help="concurrent connections (default 4: 1,500/s at ~2 ms in flight is 3)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per app, medians reported (3)")
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS), help="gunicorn settings to try")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--certfile", help=argparse.SUPPRESS)
    parser.add_argument("--keyfile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        args.config = args.config[0]
        serve_main(args)
        return 0
    if shutil.which("wrk") is None:
        print("bench.admission needs wrk: install it with `apt-get install -y wrk` (Debian/Ubuntu)", file=sys.stderr)
        return 2

    from devkit.admission_apps import admission_review, node_name, write_tls

    configs = [CONFIGS[name] for name in (args.config or DEFAULT_CONFIGS)]
    env = os.environ | {"TRUSTGATE_BENCH_NODES": str(args.nodes)}  # bench is importable from cwd=ROOT (python -m)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        directory = Path(tmp)
        cert, key = write_tls(directory / "tls")
        body = directory / "review.json"
        body.write_text(json.dumps(admission_review(node_name(args.nodes // 2))))
        script = directory / "review.lua"
        script.write_text(LUA)
        files = {"cert": cert, "key": key, "body": body, "script": script}
        size = body.stat().st_size
        print(f"{args.nodes} nodes, body {size} bytes, {args.connections} connections, {os.cpu_count()} CPUs")
        for config in configs:
            runs = measure_config(config, files, args, env)
            for app, _ in APPS:
                result = median(runs[app])
                results.append(result)
                each = ", ".join(f"{r.rps:.0f}/s p99 {r.p99_ms:.1f}" for r in runs[app])
                print(
                    f"  {config.name:12} {app:8} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  errors {result.error_kinds or 0}  [{each}]",
                    flush=True,
                )
    rows = []
    for config in configs:
        hook = next(r for r in results if r.config == config.name and r.app == "webhook")
        noop = next(r for r in results if r.config == config.name and r.app == "noop")
        ratio = hook.rps / noop.rps if noop.rps else 0.0
        ok = hook.rps >= TARGET_RPS and hook.p99_ms < TARGET_P99_MS and ratio >= TARGET_RATIO and not hook.errors
        rows.append({"config": asdict(config), "webhook": asdict(hook), "noop": asdict(noop), "ratio": ratio, "ok": ok})
    best = max(rows, key=lambda row: (row["ok"], row["webhook"]["rps"]))
    print()
    columns = ("webhook/s", "p50", "p99", "noop/s", "p50", "p99", "ratio")
    print(f"{'config':12} " + " ".join(f"{c:>{max(len(c), 7)}}" for c in columns) + "  targets")
    for row in rows:
        hook, noop = row["webhook"], row["noop"]
        print(
            f"{row['config']['name']:12} {hook['rps']:10.0f} {hook['p50_ms']:7.2f} {hook['p99_ms']:7.2f} "
            f"{noop['rps']:8.0f} {noop['p50_ms']:7.2f} {noop['p99_ms']:7.2f} {row['ratio']:6.0%}  "
            f"{'met' if row['ok'] else 'MISSED'}"
        )
    print(
        f"best: {best['config']['name']} (targets: >= {TARGET_RPS:.0f}/s, p99 < {TARGET_P99_MS:.0f} ms, "
        f">= {TARGET_RATIO:.0%} of no-op)"
    )
    if args.json:
        report = {
            "nodes": args.nodes,
            "connections": args.connections,
            "duration_s": args.duration,
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
            "targets": {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS, "ratio": TARGET_RATIO},
            "results": rows,
            "best": best["config"]["name"],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if best["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
