"""Trust report verification cost, cold and cached: `python -m bench.verify [--count 5000] [--json PATH]`.

For each allowed algorithm, N distinct reports (one per node, each with its own jti) are signed up
front with a key as `trustctl keygen` makes it (RSA: 3072 bits); signing is setup and is not measured.
Then, timed with `time.perf_counter`:

- cold: a fresh `ReportVerifier` takes the decision for every report once: `verify_for` = parse,
  signature, claims (all cached by token), then the node binding and the time checks;
- warm: the same verifier takes the same N decisions again. Every token is a cache hit, so this is
  the per-decision cost the extender and webhook pay for an unchanged report: a dict lookup plus the
  binding and time checks that are never cached.

Each pass runs `--repeat` times (default 3; cold with a new verifier each time) and the fastest counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cryptography
import jwt

from trustgate.core.keys import KeySet, describe_key, generate_private_key, jwks_for, keys_from_jwks
from trustgate.core.report import NodeIdentity, ReportVerifier, VerifierSettings
from trustgate.core.signing import report_claims, sign_claims

ALGORITHMS = ("ES256", "ES384", "PS256", "RS256", "EdDSA", "RS384", "PS384")
ISSUER = "https://aias.example"


@dataclass
class Result:
    alg: str
    key: str
    count: int
    sign_seconds: float  # setup, not part of the measurement
    cold_seconds: float
    warm_seconds: float
    cold_runs: tuple[float, ...] = ()  # every pass, seconds (cold_seconds is the fastest)
    warm_runs: tuple[float, ...] = ()

    @property
    def cold_us(self) -> float:
        return self.cold_seconds / self.count * 1e6

    @property
    def warm_us(self) -> float:
        return self.warm_seconds / self.count * 1e6

    @property
    def speedup(self) -> float:
        return self.cold_seconds / self.warm_seconds

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "cold_us_per_report": round(self.cold_us, 2),
            "warm_us_per_report": round(self.warm_us, 3),
            "speedup": round(self.speedup, 1),
        }


def passes(run: Callable[[], None], repeat: int) -> list[float]:
    """The duration of each of `repeat` passes (garbage collector off while timing)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return times


def fastest(run: Callable[[], None], repeat: int) -> float:
    return min(passes(run, repeat))


def bench_algorithm(alg: str, count: int, repeat: int) -> Result:
    key = generate_private_key(alg)
    public = key.public_key()
    keys = keys_from_jwks(jwks_for(public, alg))  # type: ignore[arg-type]
    settings = VerifierSettings(issuers=frozenset({ISSUER}))
    now = time.time()

    nodes = [
        NodeIdentity(name=f"node-{i:05d}", system_uuid=f"4c4c4544-0000-1000-8000-{i:012d}", boot_id=f"boot-{i:05d}")
        for i in range(count)
    ]
    start = time.perf_counter()
    tokens = [
        sign_claims(
            report_claims(
                ISSUER,
                node.name,
                node.system_uuid,
                ttl_seconds=3600,
                boot_id=node.boot_id,
                asset_tags={"country": "US", "tenant": "acme"},
                now=now,
            ),
            key,
            alg=alg,
        )
        for node in nodes
    ]
    sign_seconds = time.perf_counter() - start
    pairs = list(zip(tokens, nodes, strict=True))
    decide_at = now + 60

    def decide_all(verifier: ReportVerifier) -> None:
        for token, node in pairs:
            verifier.verify_for(token, node, decide_at)

    key_set = KeySet(keys)
    warm_verifier = ReportVerifier(key_set, settings)
    cold = passes(lambda: decide_all(ReportVerifier(key_set, settings)), repeat)
    decide_all(warm_verifier)  # fill the cache
    assert warm_verifier.cache_len() == count
    warm = passes(lambda: decide_all(warm_verifier), repeat)
    return Result(
        alg,
        describe_key(public),  # type: ignore[arg-type]
        count,
        sign_seconds,
        min(cold),
        min(warm),
        tuple(cold),
        tuple(warm),
    )


def table(results: Sequence[Result]) -> str:
    lines = [
        "| alg | key | cold total (s) | cold per report (µs) | warm per report (µs) | speedup |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.alg} | {r.key} | {r.cold_seconds:.3f} | {r.cold_us:.1f} | {r.warm_us:.2f} | {r.speedup:,.0f}x |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="distinct reports per algorithm (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="passes per measurement; the fastest counts")
    parser.add_argument("--alg", action="append", choices=ALGORITHMS, help="only these algorithms (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeat < 1:
        parser.error("--count and --repeat must be at least 1")

    results = []
    for alg in args.alg or ALGORITHMS:
        result = bench_algorithm(alg, args.count, args.repeat)
        results.append(result)
        print(
            f"{alg}: signed {args.count} in {result.sign_seconds:.1f}s (setup), "
            f"cold {result.cold_us:.1f} µs, warm {result.warm_us:.2f} µs per report",
            file=sys.stderr,
        )

    print(f"Trust report verification, {args.count} distinct reports per algorithm (best of {args.repeat})\n")
    print(table(results))
    if args.json:
        document = {
            "benchmark": "verify",
            "count": args.count,
            "repeat": args.repeat,
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "pyjwt": jwt.__version__,
            "machine": platform.machine(),
            "results": [r.as_json() for r in results],
        }
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
