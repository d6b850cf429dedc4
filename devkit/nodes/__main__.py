"""Run a control plane with real worker nodes in the foreground until interrupted.

    PYTHONPATH=tests/e2e python -m devkit.nodes run .dev/nodes --nodes node-a,node-b

Builds what is missing (devkit/nodes/build.sh and the control plane's build.sh), brings up the
host network, the control plane on the bridge address, the host's kube-proxy and the nodes,
prints the kubeconfig and each node's identity, and tears everything down on Ctrl-C or SIGTERM.
Needs root. ``controlplane.cluster`` comes from tests/e2e (hence the PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from devkit.nodes.controlplane import apiserver_args, controller_manager_args
from devkit.nodes.hostproxy import HostProxy
from devkit.nodes.kit import find_kit
from devkit.nodes.namespaces import Identity
from devkit.nodes.network import HostNetwork
from devkit.nodes.node import WorkerNode


def run(workdir: Path, names: list[str], scheduler_config: str | None) -> int:
    from controlplane.cluster import ControlPlane, find_binaries

    kit = find_kit(build=True)
    bin_dir = find_binaries(build=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    net = HostNetwork()
    started: list[Any] = []
    try:
        started.append(net.up())
        cp = ControlPlane(
            workdir / "cp",
            scheduler_config=scheduler_config,
            bin_dir=bin_dir,
            bind_address=net.gateway,
            node_lifecycle_controller=True,
        )
        cp.extra_args = {
            "kube-apiserver": apiserver_args(cp),
            "kube-controller-manager": controller_manager_args(mixed_with_api_only_nodes=True),
        }
        started.append(cp.start())
        started.append(HostProxy(cp, net, kit, workdir / "host-proxy").start())
        report = {}
        for index, name in enumerate(names, start=1):
            node = WorkerNode(name, index, Identity(str(uuid.uuid4()), str(uuid.uuid4())), cp, net, kit, workdir / name)
            node.stop()  # whatever a run killed outright left behind
            started.append(node.start())
            node.import_image(kit.test_image.archive)
            report[name] = {
                "ip": node.ip,
                "podCIDR": node.pod_cidr,
                "systemUUID": node.identity.system_uuid,
                "bootID": node.identity.boot_id,
                "startSeconds": round(node.timings["start_total"], 2),
            }
        print(
            json.dumps({"kubeconfig": str(cp.kubeconfig), "testImage": kit.test_image.ref, "nodes": report}, indent=2)
        )
        print(f"export KUBECONFIG={cp.kubeconfig}   # Ctrl-C to stop", flush=True)
        while not stop.is_set():
            for thing in started:
                if isinstance(thing, WorkerNode):
                    thing.check_running()
            stop.wait(2)
        return 0
    finally:
        t0 = time.monotonic()
        failed = False
        for thing in reversed(started):
            try:
                if isinstance(thing, HostNetwork):
                    thing.down()
                else:
                    thing.stop()
            except Exception as e:
                failed = True
                print(f"teardown of {type(thing).__name__}: {e}", file=sys.stderr)
        print(f"stopped in {time.monotonic() - t0:.1f}s" + (" (with errors, see above)" if failed else ""))


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
