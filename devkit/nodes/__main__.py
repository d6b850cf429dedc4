"""Run a control plane with real worker nodes in the foreground until interrupted.

    python -m devkit.nodes run .dev/nodes --nodes node-a,node-b

Builds what is missing (devkit/nodes/build.sh and the control plane's build.sh), brings up the
host network, the control plane on the bridge address, the host's kube-proxy and the nodes,
prints the kubeconfig and each node's identity, and tears everything down on Ctrl-C or SIGTERM.
Needs root.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from devkit.nodes.kit import find_kit
from devkit.nodes.procs import NodeError
from devkit.nodes.stack import NodeStack


def run(workdir: Path, names: list[str], scheduler_config: str | None) -> int:
    from devkit.controlplane import find_binaries

    kit = find_kit(build=True)
    stack = NodeStack(workdir, names, kit, bin_dir=find_binaries(build=True), scheduler_config=scheduler_config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.up()
        report = {
            name: {
                "ip": node.ip,
                "podCIDR": node.pod_cidr,
                "systemUUID": node.identity.system_uuid,
                "bootID": node.identity.boot_id,
                "startSeconds": round(node.timings["start_total"], 2),
            }
            for name, node in stack.nodes.items()
        }
        kubeconfig = stack.cp.kubeconfig
        print(json.dumps({"kubeconfig": str(kubeconfig), "testImage": kit.test_image.ref, "nodes": report}, indent=2))
        print(f"export KUBECONFIG={kubeconfig}   # Ctrl-C to stop", flush=True)
        while not stop.is_set():
            for node in stack.nodes.values():
                node.check_running()
            stop.wait(2)
        return 0
    finally:
        t0 = time.monotonic()
        try:
            stack.down()
            print(f"stopped in {time.monotonic() - t0:.1f}s")
        except NodeError as e:
            print(f"stopped with errors: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devkit.nodes", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="control plane + real nodes until Ctrl-C")
    r.add_argument("workdir", type=Path)
    r.add_argument("--nodes", default="node-a,node-b", help="comma-separated node names (default: node-a,node-b)")
    r.add_argument("--scheduler-config", type=Path, help="KubeSchedulerConfiguration YAML file")
    args = ap.parse_args(argv)
    names = [n for n in args.nodes.split(",") if n]
    cfg = args.scheduler_config.read_text() if args.scheduler_config else None
    return run(args.workdir.resolve(), names, cfg)


if __name__ == "__main__":
    sys.exit(main())
