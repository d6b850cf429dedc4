"""Start or stop the Kubernetes control plane alone in WORKDIR; it outlives this process (`up`) until `down`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devkit.controlplane.controlplane import ControlPlane
from devkit.controlplane.processes import stop_recorded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devkit.controlplane", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--scheduler-config", type=Path, help="KubeSchedulerConfiguration YAML file")
    args = ap.parse_args(argv)
    if args.action == "down":
        stopped = stop_recorded(args.workdir)
        print("stopped: " + (", ".join(stopped) or "nothing"))
        return 0
    cfg = args.scheduler_config.read_text() if args.scheduler_config else None
    t0 = time.monotonic()
    cp = ControlPlane(args.workdir, scheduler_config=cfg)
    cp.start()
    print(f"control plane ready in {time.monotonic() - t0:.1f}s: {cp.server}")
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
