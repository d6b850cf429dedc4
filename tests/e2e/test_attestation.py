"""End to end from TPM to scheduler: emulated hosts (swtpm) attested by the real authority and agents.

Real parts: kube-apiserver, kube-scheduler (with the extender), etcd, the webhook and the label
controller (the shared DevStack); the attestation authority under gunicorn over TLS with its own
ServiceAccount identity and the RBAC of the Helm chart; one trust agent process per emulated
host talking to its own swtpm through tpm2-tools over TCP, exactly as it would to /dev/tpmrm0.
Only the hardware is emulated: each host is a swtpm with an EK certificate from a local CA, an
identity file pair (product_uuid, boot_id) and an API-only Node with the same systemUUID and bootID.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.agent import Agent, AgentConfig, AuthorityRefused, HttpTransport
from attestation.ekcert import fingerprint
from attestation.flavors import LEVEL_PCRS
from devkit.attested import REGISTER_BURST, REPORT_TTL, SELECTOR, Attested, EmulatedHost
from devkit.controlplane import KubeAPIError
from devkit.devstack import DevStack
from devkit.swtpm import SoftwareTpm
from devkit.waiting import eventually
from trustgate.core.report import LEVELS

from ..prerequisites import require_tpm_tools

pytestmark = pytest.mark.e2e

HOSTS = [f"tpm-{i}" for i in range(6)]  # tpm-0..4: one level each is tampered; tpm-5: enrolled by approval
FLOOD_SOURCE = "127.0.0.2"  # a source of its own: the agents register from 127.0.0.1


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


AGENTS_PATH = "/apis/trustgate.dev/v1alpha1/attestedagents"


def _requests(attested: Attested, node: str) -> dict[str, dict[str, Any]]:
    """status.requests of the node's AttestedAgent, by EK fingerprint."""
    try:
        agent = attested.stack.cp.client().get(f"{AGENTS_PATH}/{node}")
    except KubeAPIError as error:
        assert error.status == 404, error
        return {}
    return {r["ekCertificateSHA256"]: r for r in (agent.get("status") or {}).get("requests", [])}


def _operator(attested: Attested, *argv: str) -> subprocess.CompletedProcess[str]:
    return attested.cli("-m", "attestation.main", "--kubeconfig", str(attested.stack.kubeconfig), *argv)


@pytest.fixture(scope="module")
def intruder(attested: Attested) -> Iterator[EmulatedHost]:
    """A second TPM (a genuine one: its EK certificate is from the same manufacturer CA) on no Node of its own."""
    directory = attested.workdir / "intruder"
    directory.mkdir()
    host = EmulatedHost("intruder", SoftwareTpm(directory / "tpm", attested.ca).start(), directory)
    try:
        yield host
    finally:
        attested.stop_agent(host)
        host.tpm.stop()


def test_a_second_registrant_cannot_get_its_ek_approved_by_node_name_alone(
    attested: Attested, intruder: EmulatedHost
) -> None:
    """tpm-5 is not enrolled; with tpm-5's own node certificate, another TPM asks for tpm-5 too. Both
    requests are kept; `approve tpm-5` alone enrolls neither, and approving tpm-5's EK leaves the intruder out."""
    host = attested.hosts["tpm-5"]
    legitimate, other = fingerprint(host.tools.ek_certificate()), fingerprint(intruder.tools.ek_certificate())
    eventually(lambda: legitimate in _requests(attested, "tpm-5"), "tpm-5's request, recorded after activation")
    assert attested.report_claims("tpm-5") is None
    assert f"EK {legitimate} is not enrolled for node tpm-5" in (attested.stack.logs / "agent-tpm-5.log").read_text()
    intruder.system_uuid, intruder.boot_id = host.system_uuid, host.boot_id  # it claims to be that host
    intruder.write_identity()
    attested.start_agent(intruder, node="tpm-5")
    eventually(lambda: other in _requests(attested, "tpm-5"), "the intruder's request, beside the first")
    requests = _requests(attested, "tpm-5")
    assert set(requests) == {legitimate, other}, "the second registrant replaced the first"
    assert all(
        r["requester"].startswith("CN=system:node:tpm-5, O=system:nodes from 127.0.0.1") for r in requests.values()
    )

    listed = _operator(attested, "requests", "tpm-5")
    assert listed.returncode == 0 and legitimate in listed.stdout and other in listed.stdout, listed
    table = attested.stack.kubectl("get", "attestedagent", "tpm-5").stdout.splitlines()
    assert table[0].split() == ["NAME", "EK", "REQUESTS", "AGE"] and table[1].split()[:2] == ["tpm-5", "2"], table
    alone = _operator(attested, "approve", "tpm-5")
    assert alone.returncode == 1, alone
    assert "give the EK fingerprint" in alone.stderr and legitimate in alone.stdout and other in alone.stdout
    unrequested = _operator(attested, "approve", "tpm-5", "ab" * 32)
    assert unrequested.returncode == 1 and "has asked for node tpm-5" in unrequested.stderr, unrequested
    agent = attested.stack.cp.client().get(f"{AGENTS_PATH}/tpm-5")
    assert not (agent.get("spec") or {}).get("ekCertificateSHA256"), "nothing may be enrolled without a fingerprint"

    approved = _operator(attested, "approve", "tpm-5", legitimate)
    assert approved.returncode == 0, approved.stderr
    eventually(lambda: attested.verdicts(["tpm-5"])[0] == ["tpm-5"], "tpm-5 trusted after approval", timeout=90)
    claims = attested.report_claims("tpm-5")
    assert claims is not None and claims["features"]["ek"] == legitimate[:16]
    assert set(_requests(attested, "tpm-5")) == {other}, "the intruder's request stays for the operator to see"
    refused_after = (attested.stack.logs / "agent-intruder.log").stat().st_size
    eventually(
        lambda: (attested.stack.logs / "agent-intruder.log").stat().st_size > refused_after, "the intruder refused"
    )
    assert attested.report_claims("tpm-5")["features"]["ek"] == legitimate[:16]  # type: ignore[index]
    attested.stop_agent(intruder)


def test_a_node_name_that_is_no_node_creates_nothing(attested: Attested, intruder: EmulatedHost) -> None:
    cert = attested.node_certificate("no-such-node")
    transport = HttpTransport(attested.url(), str(attested.stack.ca_file), (str(cert.cert_file), str(cert.key_file)))
    intruder.write_identity()
    agent = Agent(
        AgentConfig("no-such-node", str(intruder.directory / "product_uuid"), str(intruder.directory / "boot_id")),
        intruder.tools,
        transport,
    )
    with pytest.raises(AuthorityRefused, match="node no-such-node does not exist") as refused:
        agent.attest()
    assert refused.value.status == 403
    spoofed = Agent(agent.config, intruder.tools, HttpTransport(attested.url(), str(attested.stack.ca_file), None))
    with pytest.raises(AuthorityRefused, match="a client certificate is required"):
        spoofed.attest()
    with pytest.raises(KubeAPIError) as missing:
        attested.stack.cp.client().get(f"{AGENTS_PATH}/no-such-node")
    assert missing.value.status == 404


def test_the_agents_list_answers_operators_only(attested: Attested) -> None:
    pki = attested.stack.cp.pki_dir
    assert _get(attested, "/v1/agents")[0] == 401
    node = attested.node_certificate("tpm-0")
    assert _get(attested, "/v1/agents", (node.cert_file, node.key_file))[0] == 403
    status, body = _get(attested, "/v1/agents", (pki / "admin.crt", pki / "admin.key"))  # O=system:masters
    assert status == 200
    assert {a["node"] for a in json.loads(body)["agents"]} >= set(HOSTS[:-1])


def test_a_registration_flood_gets_429_while_the_fleet_attests(attested: Attested) -> None:
    cert = attested.node_certificate("no-such-node")
    statuses = [
        _post(attested, "/v1/register", (cert.cert_file, cert.key_file), source=FLOOD_SOURCE)[0]
        for _ in range(2 * REGISTER_BURST)
    ]
    assert statuses[:REGISTER_BURST] == [400] * REGISTER_BURST and 429 in statuses, statuses
    assert set(statuses) == {400, 429}
    metrics = _get(attested, "/metrics")[1].decode()
    assert 'trustgate_attestation_rate_limited_total{limit="source"}' in metrics
    enrolled = HOSTS[:-1]
    eventually(lambda: attested.verdicts(enrolled)[0] == enrolled, "the fleet still trusted", timeout=30)


def _connection(attested: Attested, cert: tuple[Path, Path] | None, source: str) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(attested.stack.ca_file))
    if cert is not None:
        context.load_cert_chain(*map(str, cert))
    return http.client.HTTPSConnection(
        "127.0.0.1", attested.port, context=context, timeout=10, source_address=(source, 0)
    )


def _get(attested: Attested, path: str, cert: tuple[Path, Path] | None = None) -> tuple[int, bytes]:
    connection = _connection(attested, cert, "127.0.0.1")
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _post(attested: Attested, path: str, cert: tuple[Path, Path], source: str) -> tuple[int, bytes]:
    connection = _connection(attested, cert, source)
    try:
        connection.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


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
