"""The authority end to end over its HTTP API, with the real agent code and a real TPM (swtpm).

Only the cluster is replaced: Nodes are a dict, reports are published into a list, flavors come
from the PCR values of the clean emulated host.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from agent.agent import Agent, AgentConfig, AuthorityRefused
from agent.tpm2 import Tpm2Tools
from attestation import ekcert
from attestation.app import create_app
from attestation.authority import Authority, StaticEnrollment
from attestation.flavors import LEVEL_PCRS, Flavor, flavors_from_values
from devkit.swtpm import LocalCa, SoftwareTpm
from trustgate.core.keys import KeySet, generate_private_key, key_from_pem
from trustgate.core.report import LEVELS, NodeIdentity, ReportVerifier, VerifierSettings

ISSUER = "https://aias.test"
NODE = "worker-1"


class FlaskTransport:
    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        data = response.get_json(silent=True) or {}
        if response.status_code >= 400:
            raise AuthorityRefused(response.status_code, data.get("error", ""))
        return data


class Host:
    """One emulated host: its TPM, its identity files and its agent."""

    def __init__(self, tools: Tpm2Tools, directory: Path, node: str = NODE) -> None:
        self.tools = tools
        self.uuid_file, self.boot_file = directory / "product_uuid", directory / "boot_id"
        self.system_uuid, self.boot_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.uuid_file.write_text(self.system_uuid.upper() + "\n")  # DMI UUIDs are upper case; Nodes lower
        self.boot_file.write_text(self.boot_id + "\n")
        self.node = node

    def agent(self, transport: Any, node: str | None = None) -> Agent:
        config = AgentConfig(node or self.node, str(self.uuid_file), str(self.boot_file))
        return Agent(config, self.tools, transport)


class World:
    def __init__(self, swtpm: SoftwareTpm, tools: Tpm2Tools, tmp_path: Path, ca: LocalCa) -> None:
        self.host = Host(tools, tmp_path)
        self.key = generate_private_key("ES256")
        self.published: list[tuple[str, str]] = []
        self.nodes: dict[str, tuple[str, str]] = {NODE: (self.host.system_uuid, self.host.boot_id)}
        self.ek_fp = ekcert.fingerprint(tools.ek_certificate())
        self.enrollment = StaticEnrollment({NODE: self.ek_fp})
        self.flavors: list[Flavor] = flavors_from_values("clean", tools.pcr_read())
        bundle = tmp_path / "ek-ca.pem"
        ca.write_bundle(bundle)
        self.authority = Authority(
            issuer=ISSUER,
            signing_key=self.key,
            ek_verifier=ekcert.EkVerifier(ekcert.load_bundle([bundle])),
            enrollment=self.enrollment,
            nodes=self.nodes.get,
            flavors=lambda: self.flavors,
            publish=lambda node, token: self.published.append((node, token)),
            report_ttl=300,
        )
        self.transport = FlaskTransport(create_app(self.authority).test_client())
        self.agent = self.host.agent(self.transport)
        from cryptography.hazmat.primitives import serialization

        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.verifier = ReportVerifier(KeySet([key_from_pem(pem)]), VerifierSettings(issuers=frozenset({ISSUER})))

    def report(self, index: int = -1) -> Any:
        node, token = self.published[index]
        identity = NodeIdentity(node, *self.nodes[node])
        return self.verifier.verify_for(token, identity, time.time())

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.authority.events if e["result"] != "ok"]


@pytest.fixture
def world(swtpm: SoftwareTpm, tools: Tpm2Tools, tmp_path: Path, ek_ca: LocalCa) -> World:
    return World(swtpm, tools, tmp_path, ek_ca)


def test_register_attest_and_publish_a_verifiable_report(world: World) -> None:
    result = world.agent.attest()
    assert result["levels"] == dict.fromkeys(LEVELS, True)
    assert result["reasons"] == []
    report = world.report()
    assert (report.node, report.system_uuid, report.boot_id) == (NODE, world.host.system_uuid, world.host.boot_id)
    assert report.expires_at - report.issued_at == 300
    assert all(report.levels.values())
    # renewal: the next attestation (fresh nonce) publishes a new report
    world.agent.attest()
    assert len(world.published) == 2
    assert world.report(-1).jti != world.report(0).jti
    assert world.authority.status()[0]["result"] == "trusted"


@pytest.mark.parametrize("level", LEVELS)
def test_extending_a_pcr_fails_exactly_that_level(world: World, level: str) -> None:
    world.agent.attest()
    pcr = next(p for p in LEVEL_PCRS[level] if p < 17)  # PCRs 17-18 need locality 4 (a DRTM launch)
    world.host.tools.pcr_extend(pcr, hashlib.sha256(b"tampered " + level.encode()).digest())
    result = world.agent.attest()
    assert result["levels"] == {name: name != level for name in LEVELS}
    assert result["reasons"] == [f"level {level}: PCR {pcr} match no {level} flavor"]
    report = world.report()
    assert report.levels[level] is False and sum(report.levels.values()) == 4


def test_asset_tags_come_from_matching_flavors(world: World) -> None:
    runtime = next(f for f in world.flavors if f.level == "runtime")
    world.flavors = [f for f in world.flavors if f.level != "runtime"]
    world.flavors.append(Flavor("runtime-us", "runtime", runtime.pcrs, {"country": "US"}))
    world.flavors.append(Flavor("runtime-eu", "runtime", {10: b"\x01" * 32}, {"country": "EU"}))
    assert world.agent.attest()["asset_tags"] == {"country": "US"}
    assert dict(world.report().asset_tags) == {"country": "US"}


def test_no_flavor_means_untrusted(world: World) -> None:
    world.flavors = [f for f in world.flavors if f.level != "firmware"]
    result = world.agent.attest()
    assert result["levels"]["firmware"] is False
    assert result["reasons"] == ["level firmware: no flavor defined"]


# --- bad input: each refused with a reason, recorded, never a valid report --------------------


def test_ek_certificate_from_an_unknown_ca(world: World, tmp_path: Path) -> None:
    stranger = LocalCa(tmp_path / "other-ca")
    SoftwareTpm(tmp_path / "other-tpm", stranger).manufacture()  # creates that CA
    world.authority.ek_verifier = ekcert.EkVerifier(ekcert.load_bundle([stranger.write_bundle(tmp_path / "b.pem")]))
    with pytest.raises(AuthorityRefused, match="not issued by a trusted TPM manufacturer CA") as refused:
        world.agent.attest()
    assert refused.value.status == 403
    assert world.published == []
    assert "not issued by a trusted TPM manufacturer CA" in world.reasons()[-1]


def test_registration_claiming_another_node(world: World) -> None:
    world.nodes["worker-2"] = (world.host.system_uuid, world.host.boot_id)
    impostor = world.host.agent(world.transport, node="worker-2")
    with pytest.raises(AuthorityRefused, match=f"enrolled for node {NODE}, not worker-2"):
        impostor.attest()
    assert world.published == []


def test_unenrolled_ek_is_recorded_for_approval(world: World) -> None:
    world.enrollment.mapping.clear()
    with pytest.raises(AuthorityRefused, match="not enrolled for node worker-1; an operator must approve it"):
        world.agent.attest()
    assert world.enrollment.requests == {NODE: world.ek_fp}
    world.enrollment.mapping[NODE] = {world.ek_fp}  # the operator approves
    assert all(world.agent.attest()["levels"].values())


def test_host_uuid_not_the_nodes(world: World) -> None:
    world.nodes[NODE] = (str(uuid.uuid4()), world.host.boot_id)
    with pytest.raises(AuthorityRefused, match="is not node worker-1's"):
        world.agent.attest()


def test_activation_with_the_wrong_secret(world: World) -> None:
    agent = world.agent
    answer = world.transport.post(
        "/v1/register",
        {
            "node": NODE,
            "system_uuid": agent.system_uuid(),
            "boot_id": agent.boot_id(),
            "ek_certificate": base64.b64encode(agent.tpm.ek_certificate()).decode(),
            "ek_public": base64.b64encode(agent.tpm.ek_public()).decode(),
            "ak_public": base64.b64encode(agent.tpm.ensure_ak()).decode(),
        },
    )
    guess = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(AuthorityRefused, match="credential activation failed: wrong secret"):
        world.transport.post("/v1/activate", {"agent_id": answer["agent_id"], "secret": guess})
    # one try only: even the right secret no longer activates that registration
    secret = agent.tpm.activate_credential(base64.b64decode(answer["credential"]))
    with pytest.raises(AuthorityRefused, match="unknown or expired registration") as refused:
        world.transport.post(
            "/v1/activate", {"agent_id": answer["agent_id"], "secret": base64.b64encode(secret).decode()}
        )
    assert refused.value.status == 404
    with pytest.raises(AuthorityRefused, match="unknown agent"):
        world.transport.post("/v1/nonce", {"agent_id": answer["agent_id"]})


def _attest_with(world: World, mutate: Callable[[dict[str, Any], bytes], None]) -> None:
    """A hand-driven attestation whose request `mutate` alters before it is sent."""
    agent = world.agent
    if agent.agent_id is None:
        agent.register()
    nonce = base64.b64decode(world.transport.post("/v1/nonce", {"agent_id": agent.agent_id})["nonce"])
    quote = agent.tpm.quote(nonce)
    body = {
        "agent_id": agent.agent_id,
        "nonce": base64.b64encode(nonce).decode(),
        "quote": base64.b64encode(quote.message).decode(),
        "signature": base64.b64encode(quote.signature).decode(),
        "pcrs": {str(p): v.hex() for p, v in quote.pcrs.items()},
        "system_uuid": agent.system_uuid(),
        "boot_id": agent.boot_id(),
    }
    mutate(body, nonce)
    world.transport.post("/v1/attest", body)


def _assert_refused_and_failing(world: World, reason: str, mutate: Callable[[dict[str, Any], bytes], None]) -> None:
    world.agent.attest()  # a valid report first: the failure must replace it
    assert all(world.report().levels.values())
    with pytest.raises(AuthorityRefused, match=reason):
        _attest_with(world, mutate)
    report = world.report()
    assert not any(report.levels.values()), "a failed attestation must replace the report with a failing one"
    assert reason in world.reasons()[-1]


def test_quote_over_a_wrong_nonce(world: World) -> None:
    def other_nonce(body: dict[str, Any], nonce: bytes) -> None:
        fresh = base64.b64decode(world.transport.post("/v1/nonce", {"agent_id": body["agent_id"]})["nonce"])
        body["nonce"] = base64.b64encode(fresh).decode()  # a valid nonce, but not the one quoted

    _assert_refused_and_failing(world, "not over this attestation's nonce", other_nonce)


def test_replayed_nonce_and_quote(world: World) -> None:
    captured: dict[str, Any] = {}
    _attest_with(world, lambda body, nonce: captured.update(body))
    with pytest.raises(AuthorityRefused, match="already used nonce"):
        world.transport.post("/v1/attest", captured)
    assert not any(world.report().levels.values())


def test_signature_from_another_key(world: World, tmp_path: Path) -> None:
    other = Tpm2Tools(world.host.tools.tcti, tmp_path / "other-ak")

    def resign(body: dict[str, Any], nonce: bytes) -> None:
        quote = other.quote(nonce)  # same TPM, same PCRs and nonce, another AK
        body["quote"] = base64.b64encode(quote.message).decode()
        body["signature"] = base64.b64encode(quote.signature).decode()

    other.ensure_ak()
    _assert_refused_and_failing(world, "does not verify with the attestation key", resign)


def test_pcr_values_not_matching_the_quoted_digest(world: World) -> None:
    def lie(body: dict[str, Any], nonce: bytes) -> None:
        body["pcrs"]["8"] = "11" * 32

    _assert_refused_and_failing(world, "do not match the quoted PCR digest", lie)


def test_quote_missing_a_level(world: World) -> None:
    def fewer(body: dict[str, Any], nonce: bytes) -> None:
        del body["pcrs"]["10"]

    _assert_refused_and_failing(world, "are not the quoted PCRs", fewer)


def test_unknown_agent_registers_again(world: World) -> None:
    world.agent.attest()
    world.authority.agents.clear()  # the authority restarted
    with pytest.raises(AuthorityRefused, match="unknown agent"):
        world.agent.attest()
    assert world.agent.agent_id is None
    assert all(world.agent.attest()["levels"].values())


def test_reboot_without_a_new_boot_id_is_refused(world: World, swtpm: SoftwareTpm) -> None:
    world.agent.attest()
    swtpm.reboot()
    with pytest.raises(AuthorityRefused, match="TPM was reset"):
        world.agent.attest()
    new_boot = str(uuid.uuid4())
    world.host.boot_file.write_text(new_boot)
    world.nodes[NODE] = (world.host.system_uuid, new_boot)
    assert all(world.agent.attest()["levels"].values())
    assert world.report().boot_id == new_boot


def test_malformed_requests(world: World) -> None:
    for path, body in (
        ("/v1/register", {"node": 1}),
        ("/v1/attest", {"agent_id": "x", "nonce": "***"}),
        ("/v1/nonce", []),
    ):
        with pytest.raises(AuthorityRefused) as refused:
            world.transport.post(path, body)  # type: ignore[arg-type]
        assert refused.value.status == 400
