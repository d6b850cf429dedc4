"""End to end from TPM to scheduler: emulated hosts (swtpm) attested by the real authority and agents.

Real parts: kube-apiserver, kube-scheduler (with the extender), etcd, the webhook and the label
controller (the shared DevStack); the attestation authority under gunicorn over TLS with its own
ServiceAccount identity and the RBAC of deploy/attestation.yaml; one trust agent process per emulated
host talking to its own swtpm through tpm2-tools over TCP, exactly as it would to /dev/tpmrm0.
Only the hardware is emulated: each host is a swtpm with an EK certificate from a local CA, an
identity file pair (product_uuid, boot_id) and an API-only Node with the same systemUUID and bootID.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from attestation.ekcert import fingerprint
from attestation.flavors import LEVEL_PCRS
from devkit.attested import REPORT_TTL, SELECTOR, Attested
from devkit.devstack import DevStack
from devkit.waiting import eventually
from trustgate.core.report import LEVELS

from ..prerequisites import require_tpm_tools

pytestmark = pytest.mark.e2e

HOSTS = [f"tpm-{i}" for i in range(6)]  # tpm-0..4: one level each is tampered; tpm-5: enrolled by approval


@pytest.fixture(scope="module")
def attested(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attested]:
    require_tpm_tools()
    world = Attested(stack, tmp_path_factory.mktemp("attested"))
    try:
        world.install()
        for name in HOSTS:
            world.add_host(name)
        world.capture_flavors(world.hosts["tpm-0"])  # every emulated host boots the same "firmware"
        for name in HOSTS[:-1]:
            world.enroll(world.hosts[name])
        world.start_authority()
        for host in world.hosts.values():
            world.start_agent(host)
        yield world
    finally:
        world.close()


def test_agents_register_attest_and_reports_appear(attested: Attested) -> None:
    enrolled = HOSTS[:-1]
    passed = eventually(lambda: attested.verdicts(enrolled)[0] == enrolled, "reports of the enrolled hosts", timeout=90)
    assert passed
    for name in enrolled:
        claims = attested.report_claims(name)
        assert claims is not None
        host = attested.hosts[name]
        assert (claims["sub"], claims["system_uuid"], claims["boot_id"]) == (name, host.system_uuid, host.boot_id)
        assert claims["levels"] == dict.fromkeys(LEVELS, True)
        assert claims["exp"] - claims["iat"] == REPORT_TTL
    labels = lambda n: attested.stack.cp.client().get(f"/api/v1/nodes/{n}")["metadata"]["labels"]  # noqa: E731
    eventually(lambda: all(labels(n).get("trustgate.dev/trusted") == "true" for n in enrolled), "trusted labels")


def test_an_unenrolled_host_is_refused_until_an_operator_approves(attested: Attested) -> None:
    host = attested.hosts["tpm-5"]
    client = attested.stack.cp.client()

    def requested() -> str | None:
        try:
            agent = client.get("/apis/trustgate.dev/v1alpha1/attestedagents/tpm-5")
        except Exception:
            return None
        return (agent["metadata"].get("annotations") or {}).get("trustgate.dev/requested-ek-sha256")

    assert eventually(requested, "the refused registration recorded for approval") == fingerprint(
        host.tools.ek_certificate()
    )
    assert attested.report_claims("tpm-5") is None
    assert "is not enrolled for node tpm-5" in (attested.stack.logs / "agent-tpm-5.log").read_text()
    result = attested.cli("-m", "attestation.main", "--kubeconfig", str(attested.stack.kubeconfig), "approve", "tpm-5")
    assert result.returncode == 0, result.stderr
    eventually(lambda: attested.verdicts(["tpm-5"])[0] == ["tpm-5"], "tpm-5 trusted after approval", timeout=90)


def test_trust_requiring_pods_schedule_onto_attested_nodes(attested: Attested) -> None:
    from .test_trust_placement import apply, bound_node, pod

    stack = attested.stack
    apply(stack, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "attested"}})
    for i in range(4):
        apply(stack, pod(f"attested-{i}", namespace="attested", nodeSelector=SELECTOR))
    placed = [eventually(lambda i=i: bound_node(stack, "attested", f"attested-{i}"), "pod bound") for i in range(4)]
    assert set(placed) <= set(HOSTS), placed


def test_extending_one_pcr_of_a_level_fails_exactly_that_level(attested: Attested, record_property: Any) -> None:
    """Host tpm-i gets one PCR of level i extended (all at once); each must fail exactly that level."""
    import hashlib

    from .test_trust_placement import dry_run_refused, trusted_pod

    tampered = dict(zip(HOSTS[:5], LEVELS, strict=True))
    started: dict[str, float] = {}
    for name, level in tampered.items():
        pcr = LEVEL_PCRS[level][0]  # 0, 1, 4, 7, 10 (PCRs 17-18 need locality 4)
        attested.hosts[name].tools.pcr_extend(pcr, hashlib.sha256(f"evil {level}".encode()).digest())
        started[name] = time.monotonic()
    delays: dict[str, float] = {}
    pending = set(tampered)
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        _, failed = attested.verdicts(sorted(pending))
        for name in list(pending):
            if f"level {tampered[name]} not trusted" in failed.get(name, ""):
                delays[name] = time.monotonic() - started[name]
                pending.discard(name)
        time.sleep(0.1)
    assert not pending, f"not refused within 60 s: {sorted(pending)}"
    for name, level in tampered.items():
        claims = attested.report_claims(name)
        assert claims is not None
        assert claims["levels"] == {lvl: lvl != level for lvl in LEVELS}, (name, claims["levels"])
        pinned = trusted_pod(f"pinned-{name}", namespace="attested", nodeName=name)
        refusal = dry_run_refused(attested.stack, pinned)
        assert refusal and f"level {level} not trusted" in refusal, refusal
    record_property("tamper_to_refusal_seconds", {tampered[n]: round(d, 2) for n, d in delays.items()})
    print("tampering to refusal (s):", {tampered[n]: round(d, 2) for n, d in sorted(delays.items())})
    assert attested.verdicts(["tpm-5"])[0] == ["tpm-5"]  # the untouched host stays trusted


def test_a_rebooted_host_is_untrusted_until_it_attests_again(attested: Attested) -> None:
    host = attested.hosts["tpm-5"]
    attested.stop_agent(host)
    host.tpm.reboot()  # PCRs back to their boot values, TPM resetCount + 1
    host.boot_id = str(uuid.uuid4())
    host.write_identity()
    attested.stack.cp.client().merge_patch(
        "/api/v1/nodes/tpm-5/status", {"status": {"nodeInfo": {"bootID": host.boot_id}}}
    )
    reason = eventually(lambda: attested.verdicts(["tpm-5"])[1].get("tpm-5"), "tpm-5 untrusted after reboot")
    assert "last reboot" in reason
    rebooted = time.monotonic()
    attested.start_agent(host)
    eventually(lambda: attested.verdicts(["tpm-5"])[0] == ["tpm-5"], "tpm-5 trusted again", timeout=60)
    print(f"rebooted host trusted again {time.monotonic() - rebooted:.1f} s after its agent started")
    assert attested.report_claims("tpm-5")["boot_id"] == host.boot_id  # type: ignore[index]


def test_a_host_that_stops_attesting_loses_trust_when_its_report_expires(attested: Attested) -> None:
    host = attested.hosts["tpm-5"]
    attested.stop_agent(host)
    claims = attested.report_claims("tpm-5")
    assert claims is not None and attested.verdicts(["tpm-5"])[0] == ["tpm-5"]
    reason = eventually(
        lambda: attested.verdicts(["tpm-5"])[1].get("tpm-5"), "the report to expire", timeout=REPORT_TTL + 60
    )
    assert "expired" in reason
    print(
        f"stopped attesting: untrusted {time.time() - claims['exp']:.1f} s after the last report's exp "
        f"({time.time() - claims['iat']:.1f} s after its iat; {reason})"
    )
