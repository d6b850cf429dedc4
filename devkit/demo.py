"""`make demo`: trustgate installed with helm on two real nodes, and what it does there, step by step.

Brings up a cluster on this machine (devkit.nodes: the upstream control plane, two kubelet nodes with
containerd and kube-proxy, each with an emulated TPM), installs trustgate from its chart and the image
built here as an operator installs it (devkit.install), then shows the nodes attested by their agents,
one node's TPM tampered with, where trust pods and plain pods land, a pinned pod refused, a rolling
upgrade of trustgate under a stream of pod creations, `trustctl nodes` and `trustctl audit`. Needs root;
about ten minutes. `--keep` leaves the cluster up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devkit import chart, workloads
from devkit.controlplane import KubeAPIError, find_binaries
from devkit.install import (
    ISSUER,
    NAMESPACE,
    ControlPlaneFiles,
    Installation,
    InstallError,
    TrustgateImage,
    build_image,
    install_values,
)
from devkit.nodes.kit import find_kit
from devkit.nodes.stack import NodeStack
from devkit.podstream import PodStream
from devkit.swtpm import INSTALL_HINT, missing_tools
from devkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODES = ("node-a", "node-b")
TRUSTED, TAMPERED = NODES
UPGRADE_TAG = "0.1.1"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(text: str) -> None:
    print("\n".join(f"   {line}" for line in text.rstrip().splitlines()), flush=True)


class Demo:
    def __init__(self, installed: Installation, busybox: str) -> None:
        self.installed, self.busybox = installed, busybox

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = self.installed.kubectl(*args, input=stdin, check=False)
        return done.stdout if done.returncode == 0 else f"REFUSED: {done.stderr.strip()}"

    def trustctl_nodes(self) -> str:
        keys = ["--jwks", str(self.installed.workdir / "issuer.jwks.json"), "--issuer", ISSUER]
        argv = [str(BIN / "trustctl"), "nodes", "--kubeconfig", str(self.installed.cp.kubeconfig), *keys]
        return subprocess.run(argv, capture_output=True, text=True).stdout

    def story(self) -> None:
        installed = self.installed
        say("trustgate's pods, on the real nodes")
        show(self.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide"))
        say("the agents have attested both nodes: reports signed by the authority, verified by trustctl")
        show(self.trustctl_nodes())

        say(f"tampering: one more measurement in PCR 8 (the kernel level) of {TAMPERED}'s TPM")
        installed.tamper(TAMPERED, 8, b"an unsigned kernel module")
        started = time.monotonic()

        def kernel_failed() -> bool:
            claims = installed.report_claims(TAMPERED)
            return bool(claims and claims["levels"]["kernel"] is False)

        eventually(kernel_failed, f"{TAMPERED}'s report to fail", timeout=120, interval=0.5)
        print(f"   {TAMPERED}'s next attestation fails the kernel level, {time.monotonic() - started:.1f}s later")
        show(self.trustctl_nodes())

        say(f"a TrustPolicy makes every pod in {workloads.APPS} trust-requiring; a Deployment of 4 there")
        installed.apply(*workloads.namespaces_and_policy())
        probe = workloads.pod(self.busybox, "probe", workloads.APPS)

        def scoped() -> bool:  # refused while the webhooks' scope catches up with the policy
            try:
                return installed.marked(workloads.APPS, probe)
            except KubeAPIError:
                return False

        eventually(scoped, "the webhooks scoped to the policy", timeout=60)
        installed.apply(workloads.deployment(self.busybox, "ledger", workloads.APPS, replicas=4))
        for node in NODES:
            plain = workloads.pod(self.busybox, f"plain-{node}", workloads.PLAIN, nodeName=node)
            installed.apply(plain)

        def ledger_running() -> bool:
            pods = installed.client.get(f"/api/v1/namespaces/{workloads.APPS}/pods", labelSelector="app=ledger")
            return sum(p["status"].get("phase") == "Running" for p in pods["items"]) == 4

        eventually(ledger_running, "the ledger's pods to run", timeout=180, interval=1)
        say("where each pod landed: the trust pods only on the trusted node, plain pods on either")
        show(self.kubectl("get", "pods", "-n", workloads.APPS, "-o", "wide"))
        show(self.kubectl("get", "pods", "-n", workloads.PLAIN, "-o", "wide"))

        say(f"the same trust pod pinned to {TAMPERED} with nodeName (no scheduler involved): the webhook refuses it")
        pinned = workloads.pod(self.busybox, "ledger-pinned", workloads.APPS, nodeName=TAMPERED)
        show(self.kubectl("create", "-f", "-", stdin=json.dumps(pinned)))

        say(f"a rolling upgrade of trustgate to trustgate:{UPGRADE_TAG} while pods are created, 2 per second")
        upgrade = build_image(UPGRADE_TAG, installed.workdir / "image-upgrade")
        installed.import_image(upgrade)
        stream = PodStream(installed.client, workloads.stream_kinds(self.busybox, TRUSTED), prefix="demo").start()
        time.sleep(5)
        started = time.monotonic()
        installed.upgrade(upgrade)
        took = time.monotonic() - started
        time.sleep(5)
        report = stream.stop()
        summary = report.summary({"trust", "plain"})
        misplaced = report.placed_outside({"trust": {TRUSTED}, "pinned": {TRUSTED}})
        print(f"   upgraded in {took:.0f}s: {summary['created']} pods created, {summary['refused']} refused, ")
        print(f"   {len(misplaced)} trust pods on an untrusted node, {summary['unbound']} never scheduled;")
        print(f"   longest wait for a node: {summary['longest_scheduling_stall_s']}s ({summary['longest_stall_pod']})")

        say("trustctl audit: every refusal, recorded by the webhook (as Events, across its replicas)")
        argv = [str(BIN / "trustctl"), "audit", "--kubeconfig", str(installed.cp.kubeconfig)]
        show(subprocess.run(argv, capture_output=True, text=True).stdout)


def prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "the demo runs real nodes: run it as root"
    missing = missing_tools()
    if missing:
        return f"{', '.join(missing)} not installed: {INSTALL_HINT}"
    try:
        chart.helm_binary()
        TrustgateImage.built()
    except (chart.ChartError, InstallError) as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / ".dev" / "demo")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up until Ctrl-C")
    args = parser.parse_args(argv)
    problem = prerequisites()
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 1
    workdir = args.workdir.resolve()
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    say("two real nodes on this machine: kubelet, containerd and kube-proxy each, and an emulated TPM each")
    plane = ControlPlaneFiles(workdir / "cluster" / "cp")
    kit = find_kit(build=True)
    stack = NodeStack(
        workdir / "cluster",
        NODES,
        kit,
        bin_dir=find_binaries(build=True),
        mixed_with_api_only_nodes=False,
        extra_args=plane.extra_args(),
    )
    started = time.monotonic()
    stack.up()
    print(f"   control plane and nodes up in {time.monotonic() - started:.0f}s")
    image = TrustgateImage.built()
    installed = Installation(
        stack, plane, workdir / "install", image, install_values(image), say=lambda m: print(f"   {m}")
    )
    try:
        say(f"installing trustgate as an operator does: helm install, image {image.ref} imported into the nodes")
        started = time.monotonic()
        installed.install()
        print(f"   installed, every pod Ready and both nodes attested, in {time.monotonic() - started:.0f}s")
        Demo(installed, kit.test_image.ref).story()
        if args.keep:
            say("the cluster stays up; Ctrl-C to stop it")
            print(f"   export KUBECONFIG={stack.cp.kubeconfig}")
            print(
                "   kubectl get nodes -L trustgate.dev/trusted; kubectl get ntr,tp; kubectl -n trustgate-system get po"
            )
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
    except (InstallError, KubeAPIError, AssertionError) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    finally:
        say("stopping the cluster")
        installed.close()
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
