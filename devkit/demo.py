"""`make demo`: trustgate on the running development stack (`make dev-up`), step by step.

Registers worker nodes as a node agent would, signs and publishes their trust reports with
`trustctl`, applies workloads with `kubectl`, then shows where every pod landed, what was refused
and why, `trustctl nodes` and `trustctl audit`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from devkit.attested import REPORT_TTL, Attested
from devkit.controlplane import KubeAPIError, KubeClient, create_node, find_binaries
from devkit.devstack import SKEW_SECONDS, DevStack
from devkit.swtpm import INSTALL_HINT, missing_tools
from devkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / ".dev"
BIN = Path(sys.executable).parent
NAMESPACE = "demo"

# name, what its report says, asset tags
NODES = [
    ("worker-us", "valid", {"country": "US", "tenant": "acme"}),
    ("worker-de", "valid", {"country": "DE", "tenant": "acme"}),
    ("worker-kernel", "kernel level fails", {"country": "US"}),
    ("worker-expired", "expired", {"country": "US"}),
    ("worker-copied", "copied from worker-us", {"country": "US"}),
    ("worker-bare", "no report", {}),
]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(*argv: str | Path, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, text=True, check=check)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(
        find_binaries(build=False) / "kubectl",
        f"--kubeconfig={DEV / 'kubeconfig'}",
        *args,
        stdin=stdin,
        check=check,
    )


def trustctl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(BIN / "trustctl", *args, check=check)


def trustctl_nodes() -> str:
    """`trustctl nodes` with the stack's issuer, its keys and its clock skew."""
    issuer = (DEV / "issuer").read_text().strip()
    keys = ["--jwks", DEV / "issuer.jwks.json", "--issuer", issuer, "--skew", str(SKEW_SECONDS)]
    return trustctl("nodes", "--kubeconfig", DEV / "kubeconfig", *keys).stdout


def register_nodes() -> dict[str, dict[str, str]]:
    client = KubeClient.from_kubeconfig(DEV / "kubeconfig")
    identities = {}
    for name, _, _ in NODES:
        identity = {"system_uuid": str(uuid.uuid4()), "boot_id": str(uuid.uuid4())}
        try:
            create_node(client, name, identity["system_uuid"], identity["boot_id"])
        except KubeAPIError as error:
            if error.status != 409:
                raise
            info = client.get(f"/api/v1/nodes/{name}")["status"]["nodeInfo"]
            identity = {"system_uuid": info["systemUUID"], "boot_id": info["bootID"]}
        identities[name] = identity
    return identities


def sign_and_publish(identities: dict[str, dict[str, str]]) -> None:
    issuer = (DEV / "issuer").read_text().strip()
    for name, kind, tags in NODES:
        if kind == "no report":
            continue
        identity = identities["worker-us" if kind.startswith("copied") else name]
        argv: list[str | Path] = [
            "sign",
            "--key",
            DEV / "issuer.key",
            "--issuer",
            issuer,
            "--node",
            name,
            "--system-uuid",
            identity["system_uuid"],
            "--boot-id",
            identity["boot_id"],
        ]
        argv += [a for k, v in tags.items() for a in ("--asset-tag", f"{k}={v}")]
        if kind == "kernel level fails":
            argv += ["--level", "kernel=false"]
        if kind == "expired":
            argv += ["--ttl", "1s"]
        token = trustctl(*argv).stdout.strip()
        token_file = DEV / f"{name}.jwt"
        token_file.write_text(token + "\n")
        published = trustctl("publish", "--kubeconfig", DEV / "kubeconfig", "--node", name, token_file)
        print(f"   {name:15} {kind:24} {published.stdout.strip()}")
    time.sleep(1 + SKEW_SECONDS + 0.5)  # worker-expired's one-second report runs out, skew included


def pod(name: str, image: str = "registry.k8s.io/pause:3.10", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": image}], **spec},
    }


def workloads() -> list[tuple[str, dict[str, Any]]]:
    trusted = {"trustgate.dev/trusted": "true"}
    us_only = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "asset.trustgate.dev/country", "operator": "In", "values": ["US"]}]}
                ]
            }
        }
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "payments", "namespace": NAMESPACE},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "payments"}},
            "template": {"metadata": {"labels": {"app": "payments"}}, "spec": pod("x", nodeSelector=trusted)["spec"]},
        },
    }
    return [
        ("a trusted Deployment (nodeSelector trustgate.dev/trusted=true)", deployment),
        ("a pod that must stay in the US (asset tag affinity)", pod("us-ledger", affinity=us_only)),
        (
            "an encrypted-image pod (TrustPolicy encrypted-models)",
            pod("model", image="registry.example/secure/model:1"),
        ),
        (
            "a trust pod pinned with nodeName to worker-kernel",
            pod("pinned", nodeSelector=trusted, nodeName="worker-kernel"),
        ),
        ("a plain pod (needs no trust)", pod("plain")),
    ]


ATTESTED = ("tpm-good", "tpm-tampered")
ATTESTED_PATH = """\
   So far reports were signed by hand. In a real cluster the attestation authority signs them, from
   TPM evidence. Here two hosts get a software TPM (swtpm) with an endorsement key certificate from a
   local CA. Each host's trust agent registers with the authority: the EK certificate is checked
   against the CA, the attestation key is bound to the EK by credential activation, and an operator
   enrolls the EK for its node. Every 2 s the agent then sends a TPM quote over the PCRs of the five
   levels, with a fresh nonce. The authority judges each level against flavors captured from a
   known-good host, then signs and publishes the report."""


def attested_path() -> None:
    say("the attested path: emulated TPMs, trust agents and the attestation authority")
    print(ATTESTED_PATH)
    missing = missing_tools()
    if missing:
        print(f"   skipped: {', '.join(missing)} not installed ({INSTALL_HINT})")
        return
    stack = DevStack(DEV)  # attaches to the running stack
    for name in ATTESTED:
        kubectl("delete", "node", name, "--ignore-not-found")
        kubectl("delete", "nodetrustreport", name, "--ignore-not-found")
    workdir = DEV / "attested"
    shutil.rmtree(workdir, ignore_errors=True)
    world = Attested(stack, workdir)
    try:
        world.install()
        hosts = [world.add_host(name) for name in ATTESTED]
        world.capture_flavors(hosts[0])
        for host in hosts:
            world.enroll(host)
        world.start_authority()
        for host in hosts:
            world.start_agent(host)
        started = time.monotonic()
        eventually(lambda: world.verdicts(list(ATTESTED))[0] == list(ATTESTED), "attested reports", timeout=120)
        print(f"   both hosts attested and trusted after {time.monotonic() - started:.1f}s")
        say("tampering: one extra measurement in PCR 8 (kernel level) of tpm-tampered")
        hosts[1].tools.pcr_extend(8, hashlib.sha256(b"an unsigned kernel module").digest())
        started = time.monotonic()

        def kernel_refusal() -> str | None:
            reason = world.verdicts(["tpm-tampered"])[1].get("tpm-tampered", "")
            return reason if "level kernel" in reason else None

        failed = eventually(kernel_refusal, "the kernel level to fail", timeout=60)
        print(f"   refused {time.monotonic() - started:.1f}s after tampering: {failed}")
        pinned = pod("pinned-tampered", nodeSelector={"trustgate.dev/trusted": "true"}, nodeName="tpm-tampered")
        result = kubectl("apply", "-f", "-", stdin=json.dumps(pinned), check=False)
        print(f"   a trust pod pinned to tpm-tampered: {result.stderr.strip() or result.stdout.strip()}")
        nodes = trustctl_nodes().splitlines()
        print("\n".join([nodes[0], *[line for line in nodes if line.startswith("tpm-")]]))
    finally:
        world.close()
    print(f"   (the emulated hosts are stopped now; their reports expire within {REPORT_TTL}s)")


def main() -> int:
    if not (DEV / "kubeconfig").exists():
        print("no development stack: run `make dev-up` first")
        return 1
    say("registering worker nodes (as a node agent would)")
    identities = register_nodes()
    say("signing and publishing trust reports with trustctl")
    sign_and_publish(identities)
    kubectl("create", "namespace", NAMESPACE, check=False)
    policy = {
        "apiVersion": "trustgate.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "encrypted-models"},
        "spec": {"encryptedImages": ["registry.example/secure/*"]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(policy))
    say("applying workloads with kubectl")
    for what, manifest in workloads():
        result = kubectl("apply", "-f", "-", stdin=json.dumps(manifest), check=False)
        verdict = result.stdout.strip() if result.returncode == 0 else "REFUSED: " + result.stderr.strip()
        print(f" - {what}\n     {verdict}")
    time.sleep(3)
    say("where each pod landed")
    pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    for item in sorted(pods, key=lambda p: p["metadata"]["name"]):
        print(f"   {item['metadata']['name']:28} -> {item['spec'].get('nodeName') or 'Pending (no node passes)'}")
    say("trustctl nodes")
    print(trustctl_nodes())
    attested_path()
    say("trustctl audit (refusals recorded by the webhook)")
    print(trustctl("audit", "--file", DEV / "audit.jsonl").stdout)
    say("explore further")
    print(
        f"   export KUBECONFIG={DEV / 'kubeconfig'}   # then: kubectl get nodes -L trustgate.dev/trusted,"
        "asset.trustgate.dev/country"
    )
    print("   kubectl get ntr,tp                     # reports and policies")
    print(f"   .venv/bin/trustctl inspect {DEV / 'worker-us.jwt'}")
    print(f"   logs: {DEV / 'logs'}      stop everything: make dev-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
