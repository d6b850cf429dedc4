"""The authority under real gunicorn over TLS with mTLS, and the real agent with its node's certificate.

The server is `trustgate-attestation serve` with its own flags, checks and app (devkit.authority_apps);
only reading a Node and publishing a report are files. The agent uses its real HTTPS transport and a
real TPM (swtpm). Certificates come from one cluster CA, as a kubelet's would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from agent.agent import Agent, AgentConfig, AuthorityRefused, AuthorityUnavailable, HttpTransport
from agent.tpm2 import Tpm2Tools
from attestation import ekcert
from attestation.flavors import flavors_from_values
from devkit.swtpm import LocalCa, SoftwareTpm, free_port_pair
from trustgate import certificates
from trustgate.core.keys import generate_private_key
from trustgate.core.report import LEVELS, decode_unverified

from ..kubeconfig import write_unreachable_kubeconfig

NODE = "worker-1"
OTHER = "worker-2"
FLOOD_SOURCE = "127.0.0.2"  # its own per-source bucket: the flood does not touch the agents' (127.0.0.1)
SOURCE_BURST = 10


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    @property
    def files(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)


def _write(directory: Path, name: str, issued: certificates.Issued) -> Pair:
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(issued.cert_pem)
    pair.key.write_bytes(issued.key_pem)
    return pair


@dataclass
class Server:
    url: str
    port: int
    ca: Path
    certs: dict[str, Pair]
    published: Path
    uuid_file: Path
    boot_file: Path
    boot_id: str
    process: subprocess.Popen[bytes]
    log: Path

    def context(self, who: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if who is not None:
            context.load_cert_chain(*self.certs[who].files)
        return context

    def request(
        self, method: str, path: str, who: str | None = None, body: Any = None, source: str = "127.0.0.1"
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context(who), timeout=10, source_address=(source, 0)
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def agent(self, tools: Tpm2Tools, who: str = NODE, node: str = NODE) -> Agent:
        client = self.certs[who].files if who else None
        transport = HttpTransport(self.url, str(self.ca), client, timeout=10)
        return Agent(AgentConfig(node, str(self.uuid_file), str(self.boot_file)), tools, transport)


@pytest.fixture(scope="module")
def server(swtpm: SoftwareTpm, ek_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("authority-tls")
    ca = certificates.new_ca("cluster-ca")
    (work / "ca.crt").write_bytes(ca.cert_pem)
    certs = {
        "server": _write(work, "server", certificates.issue(ca, "authority", ["127.0.0.1", "localhost"], server=True)),
        NODE: _write(
            work, NODE, certificates.issue(ca, f"system:node:{NODE}", organization="system:nodes", client=True)
        ),
        OTHER: _write(
            work, OTHER, certificates.issue(ca, f"system:node:{OTHER}", organization="system:nodes", client=True)
        ),
        "operator": _write(
            work, "operator", certificates.issue(ca, "alice", organization="system:masters", client=True)
        ),
        "stranger": _write(
            work,
            "stranger",
            certificates.issue(
                certificates.new_ca("other-ca"), f"system:node:{NODE}", organization="system:nodes", client=True
            ),
        ),
    }
    tools = Tpm2Tools(swtpm.tcti, work / "probe")
    host_uuid, boot_id = str(uuid.uuid4()), str(uuid.uuid4())
    (work / "product_uuid").write_text(host_uuid.upper() + "\n")
    (work / "boot_id").write_text(boot_id + "\n")
    (work / "nodes.json").write_text(json.dumps({NODE: [host_uuid, boot_id], OTHER: [str(uuid.uuid4()), "b"]}))
    (work / "enrollment.yaml").write_text(yaml.safe_dump({NODE: ekcert.fingerprint(tools.ek_certificate())}))
    swtpm.reboot()  # the PCRs as every test finds them (the `tools` fixture reboots too)
    flavors = flavors_from_values("clean", tools.pcr_read())
    (work / "flavors.yaml").write_text(yaml.safe_dump_all([f.to_object() for f in flavors]))
    key = generate_private_key("ES256")
    (work / "signing.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ek_ca.write_bundle(work / "ek-ca.pem")
    write_unreachable_kubeconfig(work / "kubeconfig", "https://127.0.0.1:9")
    published = work / "published"
    published.mkdir()
    port = free_port_pair()
    log = work / "authority.log"
    flags = [
        f"--kubeconfig={work / 'kubeconfig'}",
        "serve",
        "--issuer=https://aias.test",
        f"--signing-key={work / 'signing.pem'}",
        f"--ek-ca={work / 'ek-ca.pem'}",
        f"--enrollment={work / 'enrollment.yaml'}",
        f"--flavors={work / 'flavors.yaml'}",
        f"--tls-cert={certs['server'].cert}",
        f"--tls-key={certs['server'].key}",
        f"--client-ca={work / 'ca.crt'}",
        f"--bind=127.0.0.1:{port}",
        "--reader-group=system:masters",
        f"--register-burst={SOURCE_BURST}",
        "--register-rate=0.01",
        "--register-total-burst=100",
        "--report-ttl=120",
    ]
    argv = [sys.executable, "-m", "devkit.authority_apps", str(work / "nodes.json"), str(published), "--", *flags]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    world = Server(
        f"https://127.0.0.1:{port}",
        port,
        work / "ca.crt",
        certs,
        published,
        work / "product_uuid",
        work / "boot_id",
        boot_id,
        process,
        log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"the authority exited:\n{log.read_text()}"
            try:
                if world.request("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the authority did not serve:\n{log.read_text()}"
            time.sleep(0.1)
        yield world
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The gunicorn master and its workers (their own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_an_agent_with_its_node_certificate_registers_and_attests(server: Server, tools: Tpm2Tools) -> None:
    result = server.agent(tools).attest()
    assert result["levels"] == dict.fromkeys(LEVELS, True)
    claims = decode_unverified((server.published / f"{NODE}.jwt").read_text())[1]
    assert (claims["sub"], claims["boot_id"]) == (NODE, server.boot_id)


def test_without_a_client_certificate_the_api_answers_401_and_the_probes_answer(
    server: Server, tools: Tpm2Tools
) -> None:
    agent = server.agent(tools)
    agent.transport = HttpTransport(server.url, str(server.ca), None, timeout=10)
    with pytest.raises(AuthorityRefused, match="a client certificate is required") as refused:
        agent.attest()
    assert refused.value.status == 401
    for path in ("/v1/nonce", "/v1/attest", "/v1/activate"):
        assert server.request("POST", path, body={"agent_id": "x"})[0] == 401
    for path in ("/healthz", "/readyz", "/metrics"):
        assert server.request("GET", path)[0] == 200


def test_a_certificate_from_another_ca_ends_the_handshake(server: Server, tools: Tpm2Tools) -> None:
    with pytest.raises(AuthorityUnavailable, match=r"(?i)ssl|certificate|alert|reset|EOF"):
        server.agent(tools, who="stranger").attest()


def test_a_node_certificate_registers_its_own_node_only(server: Server, tools: Tpm2Tools) -> None:
    with pytest.raises(AuthorityRefused, match=f"client certificate is for node {OTHER}, not {NODE}") as refused:
        server.agent(tools, who=OTHER).attest()
    assert refused.value.status == 403


def test_the_agents_list_answers_readers_only(server: Server, tools: Tpm2Tools) -> None:
    server.agent(tools).attest()
    assert server.request("GET", "/v1/agents")[0] == 401
    status, _, body = server.request("GET", "/v1/agents", who=NODE)
    assert status == 403 and b"may not read the agents" in body
    status, _, body = server.request("GET", "/v1/agents", who="operator")
    assert status == 200 and [a["node"] for a in json.loads(body)["agents"]] == [NODE]


def test_a_registration_flood_gets_429(server: Server) -> None:
    statuses = []
    for _ in range(SOURCE_BURST + 5):
        status, headers, _ = server.request("POST", "/v1/register", who=OTHER, body={}, source=FLOOD_SOURCE)
        statuses.append(status)
    assert statuses == [400] * SOURCE_BURST + [429] * 5
    assert int(headers["Retry-After"]) >= 1
    # anonymous calls are refused before the limiter, so they cannot drain anyone's bucket
    assert server.request("POST", "/v1/register", body={}, source=FLOOD_SOURCE)[0] == 401
    metrics = server.request("GET", "/metrics")[2].decode()
    assert 'trustgate_attestation_rate_limited_total{limit="source"} 5.0' in metrics
