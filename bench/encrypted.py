"""The cost of encrypted images: pod start from an encrypted image against the same kind of image in clear.

On the real-node stack of the end-to-end tests (`devkit.encrypted`: two kubelets with containerd 2.4, the
local registry, the authority with its key broker, emulated TPMs): for each of `pairs` rounds, a plain
image and an encrypted one, both of `payload_mib` MiB of fresh random data (no layer is shared, so each
pod pulls, decrypts if it must, and unpacks its own), are started on the trusted node, in alternating
order (ABBA). A figure is pod created to Running, as the API server shows it. The difference is the
key provider's round trip (challenge, TPM quote, release: two HTTPS calls and a tpm2_quote) plus
AES-CTR/HMAC over the layer in the decoder. The broker's own decision time comes from its histogram.

    python -m bench.encrypted [--pairs N] [--payload-mib M]   (as root; builds what it needs, cached)
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ROOT, fmt_summary, loadavg, summary

POLICY = "bench-secret"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _broker_seconds(url: str, ca: str) -> tuple[float, float]:
    """(sum, count) of the broker's release histogram (metrics need no client certificate)."""
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(f"{url}/metrics", context=context, timeout=5) as answer:
        text = answer.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("trustgate_image_key_release_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("trustgate_image_key_release_seconds_count"):
            count = float(line.split()[-1])
    return total, count


def run(pairs: int = 5, payload_mib: int = 8) -> dict[str, Any]:
    from devkit.controlplane import find_binaries
    from devkit.encrypted import BRIDGE, REGISTRY_PORT, EncryptedImages
    from devkit.nodes.kit import find_kit

    decoder = Path(
        subprocess.run(
            ["bash", str(ROOT / "keyprovider/build-decoder.sh")], check=True, capture_output=True, text=True
        ).stdout.split()[-1]
    )
    registry = f"{BRIDGE}:{REGISTRY_PORT}"
    with tempfile.TemporaryDirectory(prefix="trustgate-bench-encrypted-") as tmp:
        world = EncryptedImages(Path(tmp), find_kit(build=True), decoder, find_binaries(build=True), nodes=("node-1",))
        world.up()
        try:
            world.apply(
                {
                    "apiVersion": "trustgate.dev/v1alpha1",
                    "kind": "TrustPolicy",
                    "metadata": {"name": POLICY},
                    "spec": {"encryptedImages": [f"{registry}/bench-secret/*"]},
                }
            )
            images = []
            for i in range(pairs):
                plain = f"{registry}/bench-plain/app{i}:1"
                source = f"{registry}/bench-source/app{i}:1"
                world.push_image(plain, payload_mib << 20, marker=f"plain {i}")
                world.push_image(source, payload_mib << 20, marker=f"secret {i}")
                encrypted = f"{registry}/bench-secret/app{i}:1"
                world.encrypt(source, encrypted, POLICY)
                images.append((plain, encrypted))
            _log(f"{pairs} pairs of {payload_mib} MiB images pushed; starting pods on node-1")
            times: dict[str, list[float]] = {"plain": [], "encrypted": []}
            before = _broker_seconds(world.url, str(world.cp.ca.cert_file))
            for i, (plain, encrypted) in enumerate(images):
                order = [("plain", plain), ("encrypted", encrypted)]
                if i % 2:
                    order.reverse()
                for kind, image in order:
                    name = f"{kind}-{i}"
                    world.create_pod(world.pod(name, image, node="node-1"))
                    times[kind].append(world.running(name, timeout=300))
                    world.delete_pod(name)
            after = _broker_seconds(world.url, str(world.cp.ca.cert_file))
        finally:
            world.down()
    ratios = [e / p for p, e in zip(times["plain"], times["encrypted"], strict=True)]
    releases = after[1] - before[1]
    return {
        "pairs": pairs,
        "payload_mib": payload_mib,
        "plain_s": summary(times["plain"]),
        "encrypted_s": summary(times["encrypted"]),
        "extra_s": summary([e - p for p, e in zip(times["plain"], times["encrypted"], strict=True)]),
        "ratio": summary(ratios),
        "broker_release_ms": (after[0] - before[0]) / releases * 1000 if releases else None,
        "releases": releases,
        "load": loadavg(),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    size = f"{result['payload_mib']} MiB + busybox"
    broker = result.get("broker_release_ms")
    return [
        (
            f"Pod created to Running on a real node, encrypted vs plain image ({size}, fresh pulls, "
            f"{result['pairs']} ABBA pairs): s",
            f"{fmt_summary(result['encrypted_s'], 2)} vs {fmt_summary(result['plain_s'], 2)}: "
            f"+{fmt_summary(result['extra_s'], 2, ' s')}, {fmt_summary(result['ratio'], 2, 'x')}",
        ),
        (
            "↳ key broker, per release (evidence, policy, wrapping; server side)",
            f"{broker:.1f} ms over {result['releases']:.0f} releases" if broker is not None else "-",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encrypted", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--payload-mib", type=int, default=8)
    parser.add_argument("--out", type=Path, help="write the result as JSON here too")
    args = parser.parse_args(argv)
    result = run(args.pairs, args.payload_mib)
    for figure, value in rows(result):
        print(f"{figure}: {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
