"""deploy/agent.yaml and deploy/attestation.yaml name only settings their programs have, and the
authority's RBAC lets it record enrollment requests but never write an enrollment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agent.main import AgentSettings
from attestation.main import AuthoritySettings
from trustgate.settings import Settings, _options, env_of, flag_of

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _container(name: str) -> dict[str, Any]:
    (workload,) = [d for d in _documents(name) if d["kind"] in ("Deployment", "DaemonSet")]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _known(settings: type[Settings]) -> tuple[set[str], set[str]]:
    options = _options(settings)
    return {flag_of(f.name, o) for f, o in options}, {env_of(f.name, o) for f, o in options}


def _check(name: str, settings: type[Settings]) -> None:
    flags, envs = _known(settings)
    container = _container(name)
    given = [a.split("=", 1)[0] for a in [*container["command"][1:], *container.get("args", [])] if a.startswith("--")]
    assert set(given) <= flags, f"{name}: unknown flags {set(given) - flags}"
    named = {e["name"] for e in container.get("env", []) if e["name"].startswith("TRUSTGATE_")}
    assert named <= envs, f"{name}: unknown variables {named - envs}"


def test_the_agents_manifest_names_its_settings() -> None:
    _check("agent.yaml", AgentSettings)
    env = {e["name"] for e in _container("agent.yaml")["env"]}
    assert {"TRUSTGATE_NODE", "TRUSTGATE_AUTHORITY", "TRUSTGATE_CLIENT_CERT"} <= env  # what `run` requires


def test_the_authoritys_manifest_names_its_settings() -> None:
    _check("attestation.yaml", AuthoritySettings)
    env = {e["name"] for e in _container("attestation.yaml")["env"]}
    assert "TRUSTGATE_CLIENT_CA" in env


def test_the_authority_may_record_requests_but_not_enroll() -> None:
    (role,) = [
        d
        for d in _documents("attestation.yaml")
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "trustgate:attestation"
    ]
    verbs = {resource: set(rule["verbs"]) for rule in role["rules"] for resource in rule["resources"]}
    assert verbs["attestedagents"] == {"get", "create"}, "patch or update would let it write spec (the enrollment)"
    assert verbs["attestedagents/status"] == {"get", "update"}


def test_the_request_limit_fits_the_schema() -> None:
    from attestation.authority import MAX_REQUESTS_PER_NODE
    from attestation.main import MAX_REQUESTS_STORED

    (crd,) = [d for d in _documents("attestation-crds.yaml") if d["metadata"]["name"] == "attestedagents.trustgate.dev"]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}, "the authority writes requests through the status only"
    requests = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["requests"]
    assert requests["maxItems"] == MAX_REQUESTS_STORED >= MAX_REQUESTS_PER_NODE


def test_the_key_broker_reads_one_secret_by_name_and_writes_no_trust_object() -> None:
    documents = _documents("attestation.yaml")
    (role,) = [d for d in documents if d["kind"] == "Role" and d["metadata"]["name"] == "trustgate:keybroker"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["trustgate-image-keys"], "verbs": ["get"]}
    ]
    (cluster,) = [d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "trustgate:keybroker"]
    writes = {
        r for rule in cluster["rules"] for r in rule["resources"] if set(rule["verbs"]) - {"get", "list", "watch"}
    }
    assert writes == {"events"}
