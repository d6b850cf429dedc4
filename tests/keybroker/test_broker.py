"""The key broker's protocol with software attestation keys: challenges, quotes, policy, wrapping, audit."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from attestation import tpm
from attestation.app import create_app
from attestation.authority import Requester
from devkit.factories import Issuer, node_object, trust_policy
from keybroker.broker import AttestedKey, KeyBroker, KeyRefused, ReleaseRequest
from keybroker.store import MemoryKeyStore, StoredKey
from keybroker.wrapping import ANNOTATION, binding, new_image_key, new_session, seal, unwrap
from trustgate.audit.sinks import AuditLog, JsonLinesSink
from trustgate.core.reasons import Code
from trustgate.core.release import ImageKeyRecord
from trustgate.core.snapshot import Snapshot
from trustgate.serving.identity import ClientIdentity

from ..attestation import crafted

IMAGE = "registry.example:5000/secret/app:1"
PCRS = {p: bytes([p]) * 32 for p in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 17, 18)}
OPTIONS = b'{"symkey":"secret layer key"}'
LEVELS_DOWN = {"firmware": True, "boot": True, "bootloader": True, "kernel": True, "runtime": False}


class World:
    """A broker over nodes n1 (trusted) and n2 (runtime failing), each with a software AK."""

    def __init__(self, issuer: Issuer, tmp_path: Path) -> None:
        self.now = 1_795_000_000.0
        self.keys = {node: crafted.rsa_key() for node in ("n1", "n2")}
        self.signers = {node: b"\x00\x0b" + bytes([i]) * 32 for i, node in enumerate(self.keys)}
        self.image_key = new_image_key()
        self.store = MemoryKeyStore([StoredKey(ImageKeyRecord("ik-1", IMAGE, "secret"), self.image_key, "")])
        self.view = Snapshot.build(
            issuer.verifier(),
            nodes=[node_object("n1"), node_object("n2")],
            reports={
                "n1": issuer.token("n1", now=self.now),
                "n2": issuer.token("n2", now=self.now, levels=LEVELS_DOWN),
            },
            policies=[trust_policy("secret", encryptedImages=["registry.example:5000/secret/*"])],
        )
        self.audit_path = tmp_path / "audit.jsonl"
        self.broker = KeyBroker(
            self.store,
            lambda: self.view,
            lambda node: [AttestedKey(self.keys[node].parsed, self.signers[node], PCRS)] if node in self.keys else [],
            AuditLog([JsonLinesSink(self.audit_path)]),
            clock=lambda: self.now,
        )
        self.annotation = seal(self.image_key, "ik-1", IMAGE, "sha256:" + "ab" * 32, OPTIONS).to_bytes()

    def request(self, node: str, quoted_by: str | None = None, pcrs: dict[int, bytes] | None = None, **change: Any):
        nonce, _ = self.broker.challenge(Requester(node, f"CN=system:node:{node}"))
        session, public = new_session()
        annotation = change.pop("annotation", self.annotation)
        bound = binding(nonce, change.pop("quoted_session", public), annotation)
        signer = quoted_by or node
        message = crafted.quote(self.signers[signer], bound, pcrs or PCRS)
        signature = crafted.sign(self.keys[signer], message, tpm.ALG_RSASSA, tpm.ALG_SHA256)
        return session, ReleaseRequest(nonce, public, annotation, message, signature, pcrs or PCRS)

    def release(self, node: str, request: ReleaseRequest, as_node: str | None = None) -> dict[str, str]:
        who = as_node or node
        return self.broker.release(Requester(who, f"CN=system:node:{who}, O=system:nodes"), request)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
def world(issuer: Issuer, tmp_path: Path) -> World:
    return World(issuer, tmp_path)


def refused(
    world: World, node: str, request: ReleaseRequest, code: Code, text: str, as_node: str | None = None
) -> None:
    with pytest.raises(KeyRefused) as caught:
        world.release(node, request, as_node)
    assert caught.value.reason.code is code, caught.value
    assert text in str(caught.value)
    record = world.records()[-1]
    assert record["decision"] == "rejected" and record["codes"][0] == code.value
    assert record["operation"] == "KEY_RELEASE" and record["node"] == (as_node or node)


def test_the_trusted_node_gets_the_layer_key_wrapped_to_its_session(world: World) -> None:
    session, request = world.request("n1")
    wrapped = world.release("n1", request)
    assert OPTIONS not in json.dumps(wrapped).encode()
    assert unwrap(wrapped, session, binding(request.nonce, request.session_key, request.annotation)) == OPTIONS
    [record] = world.records()
    assert (record["decision"], record["image"], record["policy"]) == ("released", IMAGE, "TrustPolicy secret")
    assert record["user"] == "CN=system:node:n1, O=system:nodes"


def test_only_that_session_can_unwrap(world: World) -> None:
    _, request = world.request("n1")
    wrapped = world.release("n1", request)
    other, _ = new_session()
    with pytest.raises(Exception, match="does not open with this session"):
        unwrap(wrapped, other, binding(request.nonce, request.session_key, request.annotation))


def test_a_failing_node_is_refused_with_the_policys_reason(world: World) -> None:
    _, request = world.request("n2")
    refused(world, "n2", request, Code.LEVEL, "level runtime not trusted")


def test_a_request_replayed_from_another_node_or_twice_is_refused(world: World) -> None:
    _, request = world.request("n1")
    refused(world, "n1", request, Code.CHALLENGE, "issued to node n1, not n2", as_node="n2")
    refused(world, "n1", request, Code.CHALLENGE, "already used challenge")


def test_an_expired_challenge_is_refused(world: World) -> None:
    _, request = world.request("n1")
    world.now += 120
    refused(world, "n1", request, Code.CHALLENGE, "expired")


def test_a_quote_by_another_nodes_tpm_is_refused(world: World) -> None:
    _, request = world.request("n1", quoted_by="n2")
    refused(world, "n1", request, Code.EVIDENCE, "does not verify with node n1's attestation key")


def test_a_quote_over_another_session_key_is_refused(world: World) -> None:
    """The TPM vouches for one session key: swapping in another (a man in the middle) breaks the binding."""
    _, public = new_session()
    _, request = world.request("n1", quoted_session=public)
    refused(world, "n1", request, Code.EVIDENCE, "not over this attestation's nonce")


def test_pcrs_changed_since_the_last_attestation_are_refused(world: World) -> None:
    _, request = world.request("n1", pcrs={**PCRS, 10: b"\xee" * 32})
    refused(world, "n1", request, Code.EVIDENCE, "PCRs [10] changed since node n1's last attestation")


def test_unknown_rotated_or_altered_keys_are_refused(world: World) -> None:
    foreign = seal(new_image_key(), "ik-2", IMAGE, "sha256:" + "ab" * 32, OPTIONS).to_bytes()
    _, request = world.request("n1", annotation=foreign)
    refused(world, "n1", request, Code.UNKNOWN_KEY, "not held by the broker")
    document = json.loads(world.annotation)
    document["image"] = "registry.example:5000/secret/other:1"
    _, request = world.request("n1", annotation=json.dumps(document).encode())
    refused(world, "n1", request, Code.UNKNOWN_KEY, "was registered for")


def test_a_node_without_an_activated_attestation_key_is_refused(world: World) -> None:
    world.keys["n3"], world.signers["n3"] = world.keys["n1"], world.signers["n1"]
    _, request = world.request("n3")
    world.keys.pop("n3")
    refused(world, "n3", request, Code.EVIDENCE, "no attestation key activated")


def _app(world: World, node: str | None) -> Any:
    identity = ClientIdentity(f"system:node:{node}", ("system:nodes",)) if node else None
    return create_app(None, None, identify=lambda environ: identity, broker=world.broker).test_client()  # type: ignore[arg-type]


def test_the_http_api(world: World) -> None:
    assert _app(world, None).post("/v1/keys/challenge", json={}).status_code == 401
    client = _app(world, "n1")
    nonce = base64.b64decode(client.post("/v1/keys/challenge", json={}).get_json()["nonce"])
    session, public = new_session()
    bound = binding(nonce, public, world.annotation)
    message = crafted.quote(world.signers["n1"], bound, PCRS)
    body = {
        "nonce": base64.b64encode(nonce).decode(),
        "session_key": base64.b64encode(public).decode(),
        "annotation": base64.b64encode(world.annotation).decode(),
        "quote": base64.b64encode(message).decode(),
        "signature": base64.b64encode(crafted.sign(world.keys["n1"], message, tpm.ALG_RSASSA, tpm.ALG_SHA256)).decode(),
        "pcrs": {str(p): v.hex() for p, v in PCRS.items()},
    }
    answer = client.post("/v1/keys/release", json=body)
    assert answer.status_code == 200
    assert unwrap(answer.get_json()["key"], session, bound) == OPTIONS
    again = client.post("/v1/keys/release", json=body)
    assert again.status_code == 403 and again.get_json()["code"] == "challenge"
    assert client.post("/v1/keys/release", json={"nonce": "x"}).status_code == 400
    assert ANNOTATION.endswith(".trustgate")


def test_metrics_show_the_brokers_decisions(world: World) -> None:
    _, request = world.request("n1")
    world.release("n1", request)
    text = _app(world, None).get("/metrics").get_data(as_text=True)
    assert 'trustgate_image_key_requests_total{decision="released",reason="none"} 1.0' in text
    assert "trustgate_image_key_release_seconds_count 1.0" in text
    assert 'trustgate_audit_records_total{decision="released"' in text
