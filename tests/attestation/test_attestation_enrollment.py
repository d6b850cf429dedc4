"""Enrollment requests, registration limits and client identities, as pure values (no TPM, no cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.main import main as agent_main
from attestation.authority import REQUEST_REFRESH, EnrollmentRequest, StaticEnrollment, merge_request
from attestation.identity import Readers
from attestation.kube import EnrollmentError, KubeEnrollment, check_fingerprint, request_to_object, requests_of
from attestation.ratelimit import RATE_LIMITED, Rate, RegistrationLimiter
from trustgate import certificates
from trustgate.serving.identity import ClientIdentity, identity_from_der

from ..clock import Clock


def _request(fp: str, at: float, node: str = "n1", uuid: str = "u", requester: str = "r") -> EnrollmentRequest:
    return EnrollmentRequest(node, fp * 64, uuid, requester, at, at)


# --- requests side by side ---------------------------------------------------------------------------


def test_a_second_ek_is_kept_beside_the_first() -> None:
    kept, dropped, changed = merge_request([_request("a", 100)], _request("b", 200))
    assert [r.ek_fingerprint[0] for r in kept] == ["a", "b"] and dropped == [] and changed


def test_the_same_ek_refreshes_its_entry_instead_of_adding_one() -> None:
    first = _request("a", 100)
    kept, _, changed = merge_request([first], _request("a", 100 + REQUEST_REFRESH / 2))
    assert (kept, changed) == ([first], False), "seen again within the refresh time: nothing to write"
    kept, _, changed = merge_request([first], _request("a", 100 + REQUEST_REFRESH + 1, uuid="other"))
    (entry,) = kept
    assert changed and (entry.first_requested, entry.last_requested, entry.count) == (100, 161, 2)
    assert entry.system_uuid == "other"


def test_past_the_limit_the_least_recently_seen_are_dropped() -> None:
    existing = [_request("a", 100), _request("b", 300), _request("c", 200)]
    kept, dropped, _ = merge_request(existing, _request("d", 400), limit=3)
    assert [r.ek_fingerprint[0] for r in kept] == ["c", "b", "d"]
    assert [r.ek_fingerprint[0] for r in dropped] == ["a"]
    # an old requester that comes back is the newest again
    kept, dropped, _ = merge_request(kept, _request("c", 500), limit=3)
    assert [r.ek_fingerprint[0] for r in kept] == ["b", "d", "c"] and dropped == []


def test_static_enrollment_keeps_requests_per_node() -> None:
    enrollment = StaticEnrollment({"n1": "AA" * 32}, max_requests=2)
    assert enrollment.enrolled("n1") == frozenset({"aa" * 32}) and enrollment.enrolled("n2") == frozenset()
    assert enrollment.request(_request("a", 1)) == []
    assert enrollment.request(_request("b", 2)) == []
    assert enrollment.request(_request("b", 3, node="n2")) == []
    (dropped,) = enrollment.request(_request("c", 4))
    assert dropped.ek_fingerprint == "a" * 64
    assert [r.ek_fingerprint[0] for r in enrollment.requests["n1"]] == ["b", "c"]
    assert [r.ek_fingerprint[0] for r in enrollment.requests["n2"]] == ["b"]


# --- registration limits -------------------------------------------------------------------------------


def test_one_source_is_limited_to_its_burst_then_its_rate() -> None:
    clock = Clock(1000.0)
    limiter = RegistrationLimiter(Rate(3, 0.5), Rate(100, 100), clock=clock)
    assert [limiter.admit("10.0.0.1") for _ in range(3)] == [None] * 3
    refusal = limiter.admit("10.0.0.1")
    assert refusal is not None and refusal.limit == "source" and refusal.retry_after == pytest.approx(2.0)
    assert refusal.retry_after_header == "2"
    assert limiter.admit("10.0.0.2") is None, "another source has its own bucket"
    clock.now += 2
    assert limiter.admit("10.0.0.1") is None and limiter.admit("10.0.0.1") is not None


def test_all_sources_together_are_limited_and_a_refusal_takes_nothing() -> None:
    clock = Clock(1000.0)
    limiter = RegistrationLimiter(Rate(2, 1), Rate(4, 1), clock=clock)
    before = RATE_LIMITED.labels("total")._value.get()
    admitted = [limiter.admit(f"10.0.0.{i}") is None for i in range(6)]
    assert admitted == [True] * 4 + [False] * 2
    assert RATE_LIMITED.labels("total")._value.get() == before + 2
    refusal = limiter.admit("10.0.0.9")
    assert refusal is not None and refusal.limit == "total"
    clock.now += 1
    assert limiter.admit("10.0.0.9") is None, "the refused source's own token was not spent"


def test_the_source_table_is_bounded() -> None:
    limiter = RegistrationLimiter(Rate(1, 0.001), Rate(10_000, 1), max_sources=3, clock=Clock(1000.0))
    for i in range(10):
        limiter.admit(f"10.0.0.{i}")
    assert len(limiter._sources) == 3


def test_a_rate_must_admit_something() -> None:
    with pytest.raises(ValueError, match="burst of at least 1"):
        Rate(0, 1)
    with pytest.raises(ValueError, match="positive refill"):
        Rate(1, 0)


# --- identities ----------------------------------------------------------------------------------------


def test_a_kubelet_certificate_is_a_node_identity() -> None:
    ca = certificates.new_ca("cluster-ca")
    kubelet = certificates.issue(ca, "system:node:worker-1", organization="system:nodes", client=True)
    identity = identity_from_der(kubelet.cert.public_bytes(_der()))
    assert identity == ClientIdentity("system:node:worker-1", ("system:nodes",))
    assert identity.node == "worker-1" and str(identity) == "CN=system:node:worker-1, O=system:nodes"


@pytest.mark.parametrize(
    "identity",
    [
        ClientIdentity("system:node:worker-1", ()),  # not in the nodes group
        ClientIdentity("system:node:", ("system:nodes",)),  # no node name
        ClientIdentity("worker-1", ("system:nodes",)),
        ClientIdentity("system:serviceaccount:trustgate-system:trustgate-agent", ("system:serviceaccounts",)),
    ],
)
def test_other_subjects_are_no_node_identity(identity: ClientIdentity) -> None:
    assert identity.node is None


def test_readers_by_name_or_group() -> None:
    readers = Readers.of(["alice"], ["system:masters", ""])
    assert readers.allow(ClientIdentity("alice"))
    assert readers.allow(ClientIdentity("bob", ("system:masters",)))
    assert not readers.allow(ClientIdentity("system:node:n1", ("system:nodes",)))
    assert not Readers().allow(ClientIdentity("alice", ("system:masters",))), "no readers configured: nobody"


def _der():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


# --- the agent's configuration -------------------------------------------------------------------------


def test_the_agent_needs_its_node_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "--authority=https://127.0.0.1:1", "--node=n1"]
    assert agent_main(base) == 2
    assert "--client-cert is required" in capsys.readouterr().err
    (tmp_path / "bad.pem").write_text("not a certificate")
    assert agent_main([*base, f"--client-cert={tmp_path / 'bad.pem'}"]) == 2
    assert "is not usable" in capsys.readouterr().err


# --- AttestedAgent status writes (the API server is faked here; the real one is in tests/e2e) ----------


class FakeObjects:
    """CustomObjectsApi for one AttestedAgent: resourceVersion checks like the API server's."""

    def __init__(self, conflicts: int = 0, exists: bool = True) -> None:
        self.obj: dict | None = (
            {"metadata": {"name": "n1", "resourceVersion": "1"}, "spec": {"ekCertificateSHA256": "ee" * 32}}
            if exists
            else None
        )
        self.conflicts, self.writes = conflicts, 0

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str) -> dict:
        from kubernetes.client.exceptions import ApiException

        if self.obj is None:
            raise ApiException(status=404)
        return json.loads(json.dumps(self.obj))

    def create_cluster_custom_object(self, group: str, version: str, plural: str, body: dict) -> dict:
        self.obj = body | {"metadata": body["metadata"] | {"resourceVersion": "1"}}
        return json.loads(json.dumps(self.obj))

    def replace_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: dict
    ) -> dict:
        from kubernetes.client.exceptions import ApiException

        assert self.obj is not None
        if self.conflicts:  # someone else wrote in between
            self.conflicts -= 1
            self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
            self.obj["status"] = {"requests": [request_to_object(_request("c", 50))]}
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        self.writes += 1
        self.obj = body | {
            "metadata": body["metadata"] | {"resourceVersion": str(int(body["metadata"]["resourceVersion"]) + 1)}
        }
        self.obj["spec"] = self.obj.get("spec") or {}
        return body


def _kube_enrollment(objects: FakeObjects, max_requests: int = 5) -> KubeEnrollment:
    from kubernetes import client

    enrollment = KubeEnrollment(client.ApiClient(), max_requests)
    enrollment.objects = objects  # type: ignore[assignment]
    return enrollment


def test_a_conflicting_write_is_merged_again_not_lost() -> None:
    objects = FakeObjects(conflicts=1)
    enrollment = _kube_enrollment(objects)
    assert enrollment.request(_request("a", 100)) == []
    assert [r.ek_fingerprint[0] for r in requests_of(objects.obj)] == ["c", "a"], "the other writer's request was lost"
    assert objects.obj is not None and objects.obj["status"]["pending"] == 2
    assert objects.obj["spec"] == {"ekCertificateSHA256": "ee" * 32}, "the enrollment is never touched"
    assert enrollment.enrolled("n1") == frozenset({"ee" * 32})


def test_a_node_without_an_attestedagent_gets_one_without_an_enrollment() -> None:
    objects = FakeObjects(exists=False)
    enrollment = _kube_enrollment(objects, max_requests=1)
    assert enrollment.enrolled("n1") == frozenset()
    enrollment.request(_request("a", 100))
    (dropped,) = enrollment.request(_request("b", 200))
    assert dropped.ek_fingerprint == "a" * 64
    assert objects.obj is not None and objects.obj["spec"] == {}
    assert [r.ek_fingerprint[0] for r in requests_of(objects.obj)] == ["b"]


def test_endless_conflicts_end_in_an_error() -> None:
    enrollment = _kube_enrollment(FakeObjects(conflicts=100))
    with pytest.raises(EnrollmentError, match="conflicting writes"):
        enrollment.request(_request("a", 100))


def test_fingerprints_are_checked() -> None:
    assert check_fingerprint(" " + "AB" * 32 + "\n") == "ab" * 32
    for bad in ("ab" * 31, "zz" * 32, ""):
        with pytest.raises(EnrollmentError, match="is not an EK fingerprint"):
            check_fingerprint(bad)
