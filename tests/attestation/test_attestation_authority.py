"""The authority end to end over its HTTP API, with the real agent code and a real TPM (swtpm).

Only the cluster and TLS are replaced: Nodes are a dict, reports are published into a list, flavors
come from the PCR values of the clean emulated host, and the caller's verified client certificate is
handed to the app directly (tests/attestation/test_attestation_tls.py runs the real listener).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from agent.agent import Agent, AgentConfig, AuthorityRefused
from agent.tpm2 import Tpm2Tools
from attestation import ekcert, tpm
from attestation.app import create_app
from attestation.authority import Authority, StaticEnrollment
from attestation.flavors import LEVEL_PCRS, Flavor, flavors_from_values
from attestation.identity import Readers
from devkit.swtpm import LocalCa, SoftwareTpm
from trustgate.core.keys import KeySet, generate_private_key, key_from_pem
from trustgate.core.report import LEVELS, NodeIdentity, ReportVerifier, VerifierSettings, decode_unverified
from trustgate.serving.identity import ClientIdentity

ISSUER = "https://aias.test"
NODE = "worker-1"
IDENTITY = "trustgate.test.client-identity"  # where these tests put the caller's certificate subject
OPERATOR = ClientIdentity("alice", ("system:masters",))


def node_identity(node: str) -> ClientIdentity:
    """The subject of a kubelet's client certificate."""
    return ClientIdentity(f"system:node:{node}", ("system:nodes",))


class FlaskTransport:
    def __init__(self, client: FlaskClient, identity: ClientIdentity | None) -> None:
        self.client, self.identity = client, identity

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body, environ_base={IDENTITY: self.identity})
        data = response.get_json(silent=True) or {}
        if response.status_code >= 400:
            raise AuthorityRefused(response.status_code, data.get("error", ""))
        return data

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        response = self.client.get(path, environ_base={IDENTITY: self.identity})
        return response.status_code, response.get_json(silent=True) or {}


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
        app = create_app(self.authority, Readers.of(groups=["system:masters"]), identify=lambda env: env.get(IDENTITY))
        self.client = app.test_client()
        self.transport = self.transport_for(node_identity(NODE))
        self.agent = self.host.agent(self.transport)
        from cryptography.hazmat.primitives import serialization

        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.verifier = ReportVerifier(KeySet([key_from_pem(pem)]), VerifierSettings(issuers=frozenset({ISSUER})))

    def transport_for(self, identity: ClientIdentity | None) -> FlaskTransport:
        return FlaskTransport(self.client, identity)

    def report(self, index: int = -1) -> Any:
        node, token = self.published[index]
        identity = NodeIdentity(node, *self.nodes[node])
        return self.verifier.verify_for(token, identity, time.time())

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.authority.events if e["result"] != "ok"]


@pytest.fixture
def world(swtpm: SoftwareTpm, tools: Tpm2Tools, tmp_path: Path, ek_ca: LocalCa) -> World:
    return World(swtpm, tools, tmp_path, ek_ca)


@pytest.fixture(scope="module")
def other_swtpm(ek_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareTpm]:
    """A second host's TPM, with an EK certificate from the same manufacturer CA."""
    with SoftwareTpm(tmp_path_factory.mktemp("other-swtpm"), ek_ca) as tpm_:
        yield tpm_


@pytest.fixture
def second_tpm(other_swtpm: SoftwareTpm, tmp_path: Path) -> Tpm2Tools:
    return Tpm2Tools(other_swtpm.tcti, tmp_path / "second-host")


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


def test_a_certificate_acts_only_for_its_own_node(world: World) -> None:
    world.nodes["worker-2"] = (world.host.system_uuid, world.host.boot_id)
    impostor = world.host.agent(world.transport, node="worker-2")  # worker-1's certificate
    with pytest.raises(AuthorityRefused, match="client certificate is for node worker-1, not worker-2") as refused:
        impostor.attest()
    assert refused.value.status == 403
    assert world.enrollment.requests == {} and world.published == []


def test_an_enrolled_ek_claiming_another_node_is_only_a_request_for_it(world: World) -> None:
    """Even with worker-2's own certificate, worker-1's TPM gets nothing for worker-2 but a request."""
    world.nodes["worker-2"] = (world.host.system_uuid, world.host.boot_id)
    other = world.host.agent(world.transport_for(node_identity("worker-2")), node="worker-2")
    with pytest.raises(AuthorityRefused, match=f"EK {world.ek_fp} is not enrolled for node worker-2"):
        other.attest()
    assert [r.ek_fingerprint for r in world.enrollment.requests["worker-2"]] == [world.ek_fp]
    assert world.published == []


def test_an_unenrolled_ek_is_recorded_after_activation_and_approved_by_fingerprint(world: World) -> None:
    world.enrollment.mapping.clear()
    with pytest.raises(
        AuthorityRefused, match=f"approves it with `trustgate-attestation approve {NODE} {world.ek_fp}`"
    ):
        world.agent.attest()
    (request,) = world.enrollment.requests[NODE]
    assert (request.node, request.ek_fingerprint, request.system_uuid) == (NODE, world.ek_fp, world.host.system_uuid)
    assert request.requester.startswith(f"CN=system:node:{NODE}, O=system:nodes from ")
    world.enrollment.mapping[NODE] = {world.ek_fp}  # the operator approves
    assert all(world.agent.attest()["levels"].values())


def test_nothing_is_recorded_before_the_tpm_proves_it_holds_the_ek(world: World) -> None:
    world.enrollment.mapping.clear()
    answer = world.transport.post("/v1/register", _registration(world.agent))
    assert world.enrollment.requests == {}, "a registration alone proves nothing"
    guess = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(AuthorityRefused, match="wrong secret"):
        world.transport.post("/v1/activate", {"agent_id": answer["agent_id"], "secret": guess})
    assert world.enrollment.requests == {}, "nor does a failed activation"


def test_a_second_registrant_for_a_node_is_kept_beside_the_first(world: World, second_tpm: Tpm2Tools) -> None:
    world.enrollment.mapping.clear()
    intruder = Host(second_tpm, second_tpm.state_dir, NODE)
    intruder.system_uuid = world.host.system_uuid  # it may claim anything it likes
    intruder.uuid_file.write_text(world.host.system_uuid)
    for agent in (world.agent, intruder.agent(world.transport), world.agent):
        with pytest.raises(AuthorityRefused, match="is not enrolled"):
            agent.attest()
    intruder_fp = ekcert.fingerprint(second_tpm.ek_certificate())
    requests = {r.ek_fingerprint: r for r in world.enrollment.requests[NODE]}
    assert set(requests) == {world.ek_fp, intruder_fp}, "the second registrant replaced the first"
    assert requests[world.ek_fp].count == 1  # seen again within a minute: not rewritten


def test_a_node_keeps_only_its_newest_requests(world: World, second_tpm: Tpm2Tools) -> None:
    from attestation.authority import REQUESTS_DROPPED

    world.enrollment.mapping.clear()
    world.enrollment.max_requests = 1
    before = REQUESTS_DROPPED._value.get()
    with pytest.raises(AuthorityRefused, match="is not enrolled"):
        world.agent.attest()
    intruder = Host(second_tpm, second_tpm.state_dir, NODE)
    intruder.uuid_file.write_text(world.host.system_uuid)
    with pytest.raises(AuthorityRefused, match="is not enrolled"):
        intruder.agent(world.transport).attest()
    assert [r.ek_fingerprint for r in world.enrollment.requests[NODE]] == [
        ekcert.fingerprint(second_tpm.ek_certificate())
    ]
    assert REQUESTS_DROPPED._value.get() == before + 1
    dropped = [e for e in world.authority.events if e["step"] == "request" and e["result"] == "dropped"]
    assert len(dropped) == 1 and world.ek_fp in dropped[0]["reason"]


def test_a_node_that_does_not_exist_gets_nothing_recorded(world: World) -> None:
    ghost = world.host.agent(world.transport_for(node_identity("ghost")), node="ghost")
    with pytest.raises(AuthorityRefused, match="node ghost does not exist") as refused:
        ghost.attest()
    assert refused.value.status == 403
    assert world.enrollment.requests == {} and world.authority.pending == {}


def test_a_node_deleted_before_activation_gets_nothing_recorded(world: World) -> None:
    world.enrollment.mapping.clear()
    answer = world.transport.post("/v1/register", _registration(world.agent))
    secret = world.agent.tpm.activate_credential(base64.b64decode(answer["credential"]))
    del world.nodes[NODE]
    with pytest.raises(AuthorityRefused, match=f"node {NODE} does not exist"):
        world.transport.post(
            "/v1/activate", {"agent_id": answer["agent_id"], "secret": base64.b64encode(secret).decode()}
        )
    assert world.enrollment.requests == {}


def test_calls_without_a_node_certificate_are_refused(world: World) -> None:
    body = _registration(world.agent)
    with pytest.raises(AuthorityRefused, match="a client certificate is required") as refused:
        world.transport_for(None).post("/v1/register", body)
    assert refused.value.status == 401
    with pytest.raises(AuthorityRefused, match="is not a node identity") as refused:
        world.transport_for(OPERATOR).post("/v1/register", body)
    assert refused.value.status == 403
    # a kubelet-like CN without the nodes group is no node identity either
    with pytest.raises(AuthorityRefused, match="is not a node identity"):
        world.transport_for(ClientIdentity(f"system:node:{NODE}", ())).post("/v1/register", body)
    assert world.authority.pending == {}


def test_another_nodes_certificate_cannot_use_an_agents_session(world: World) -> None:
    world.agent.attest()
    stranger = world.transport_for(node_identity("worker-2"))
    with pytest.raises(AuthorityRefused, match="client certificate is for node worker-2, not worker-1"):
        stranger.post("/v1/nonce", {"agent_id": world.agent.agent_id})
    assert all(world.agent.attest()["levels"].values())  # the agent's own session is untouched


def test_only_readers_see_the_agents(world: World) -> None:
    world.agent.attest()
    assert world.transport_for(None).get("/v1/agents")[0] == 401
    assert world.transport_for(node_identity(NODE)).get("/v1/agents")[0] == 403
    status, body = world.transport_for(OPERATOR).get("/v1/agents")
    assert status == 200 and [a["node"] for a in body["agents"]] == [NODE]
    assert world.client.get("/healthz").status_code == 200  # probes need no certificate


def test_registration_floods_get_429(world: World) -> None:
    from attestation.ratelimit import RATE_LIMITED, Rate, RegistrationLimiter

    limiter = RegistrationLimiter(Rate(3, 0.001), Rate(100, 0.001))
    app = create_app(world.authority, Readers(), limiter, identify=lambda env: env.get(IDENTITY))
    flood = FlaskTransport(app.test_client(), node_identity(NODE))
    before = RATE_LIMITED.labels("source")._value.get()
    statuses = []
    for _ in range(6):
        try:
            flood.post("/v1/register", {"node": NODE})
        except AuthorityRefused as refused:
            statuses.append(refused.status)
    assert statuses == [400, 400, 400, 429, 429, 429]
    assert RATE_LIMITED.labels("source")._value.get() == before + 3
    response = app.test_client().post("/v1/register", json={}, environ_base={IDENTITY: node_identity(NODE)})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1


def test_the_agent_waits_as_long_as_a_429_asks(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def limited(path: str, body: dict[str, Any]) -> dict[str, Any]:
        calls.append(path)
        raise AuthorityRefused(429, "too many registrations", retry_after=30)

    monkeypatch.setattr(world.transport, "post", limited)
    waits: list[float] = []
    stop = threading.Event()

    def record(_stop: Any, seconds: float) -> bool:
        waits.append(seconds)
        stop.set()
        return True

    world.agent._jitter = lambda: 1.0
    world.agent._wait = record  # type: ignore[method-assign]
    world.agent.run(stop)
    assert calls == ["/v1/register"] and waits == [30]


def test_every_report_is_bound_to_the_boot(world: World) -> None:
    with pytest.raises(AuthorityRefused, match="required") as refused:
        world.transport.post("/v1/register", _registration(world.agent, boot_id=""))
    assert refused.value.status == 400
    body = _registration(world.agent)
    del body["boot_id"]
    with pytest.raises(AuthorityRefused, match="field boot_id must be a string"):
        world.transport.post("/v1/register", body)
    with pytest.raises(AuthorityRefused, match="boot_id is required") as refused:
        _attest_with(world, lambda body, nonce: body.update(boot_id=""))
    assert refused.value.status == 400
    assert world.published == []
    world.agent.attest()
    assert [decode_unverified(token)[1]["boot_id"] for _, token in world.published] == [world.host.boot_id]


def test_no_report_is_issued_without_a_boot_id(world: World) -> None:
    from attestation.authority import Refused

    world.agent.attest()
    (agent,) = world.authority.agents.values()
    agent.boot_id = ""
    with pytest.raises(Refused, match="a report is always bound to the host's boot"):
        world.authority._issue(agent, dict.fromkeys(LEVELS, True), {}, [])
    world.authority._publish_failing(agent, "", "evidence")  # nor a failing one: it is logged instead
    assert len(world.published) == 1


def test_an_enrollment_removed_ends_the_agents_reports(world: World) -> None:
    assert all(world.agent.attest()["levels"].values())
    world.enrollment.mapping.clear()  # the operator removes the enrollment
    with pytest.raises(AuthorityRefused, match="is no longer enrolled"):
        world.agent.attest()
    assert not any(world.report().levels.values())
    with pytest.raises(AuthorityRefused, match="unknown agent"):
        world.agent.attest()
    with pytest.raises(AuthorityRefused, match="is not enrolled"):  # registers again: a request now
        world.agent.attest()
    assert [r.ek_fingerprint for r in world.enrollment.requests[NODE]] == [world.ek_fp]


def test_an_agent_holds_a_few_nonces_at_most(world: World) -> None:
    from attestation.authority import NONCES_PER_AGENT

    world.agent.attest()
    issued = [world.transport.post("/v1/nonce", {"agent_id": world.agent.agent_id}) for _ in range(20)]
    assert len(world.authority.nonces) == NONCES_PER_AGENT
    first = issued[0]["nonce"]
    with pytest.raises(AuthorityRefused, match="unknown, expired or already used nonce"):
        _attest_with(world, lambda body, nonce: body.update(nonce=first))


def test_host_uuid_not_the_nodes(world: World) -> None:
    world.nodes[NODE] = (str(uuid.uuid4()), world.host.boot_id)
    with pytest.raises(AuthorityRefused, match="is not node worker-1's"):
        world.agent.attest()


def _registration(agent: Agent, **overrides: Any) -> dict[str, Any]:
    """The body the agent's register() sends, with `overrides`."""
    body = {
        "node": agent.config.node,
        "system_uuid": agent.system_uuid(),
        "boot_id": agent.boot_id(),
        "ek_certificate": base64.b64encode(agent.tpm.ek_certificate()).decode(),
        "ek_public": base64.b64encode(agent.tpm.ek_public()).decode(),
        "ak_public": base64.b64encode(agent.tpm.ensure_ak()).decode(),
    }
    return body | overrides


@pytest.mark.parametrize(
    ("weakness", "reason"),
    [
        ({"name_alg": tpm.ALG_SHA1}, "name algorithm is SHA-1"),
        ({"scheme_hash": tpm.ALG_SHA1}, "signing scheme hash is SHA-1"),
    ],
)
def test_an_attestation_key_using_sha1_is_refused_at_registration(
    world: World, weakness: dict[str, int], reason: str
) -> None:
    from .crafted import rsa_key

    weak = base64.b64encode(rsa_key(**weakness).public).decode()
    with pytest.raises(AuthorityRefused, match=reason) as refused:
        world.transport.post("/v1/register", _registration(world.agent, ak_public=weak))
    assert refused.value.status == 403
    assert world.authority.pending == {} and world.published == []


def test_activation_with_the_wrong_secret(world: World) -> None:
    agent = world.agent
    answer = world.transport.post("/v1/register", _registration(agent))
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
