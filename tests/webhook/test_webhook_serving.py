"""The webhook under the real gunicorn over TLS (`trustgate.serving.server`), as kube-apiserver reaches it."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.admission_apps import EXPIRED_NODE, admission_review, node_name, write_tls

from ..reliability.serving_support import WEBHOOK_APP
from ..reliability.serving_support import Server as Gunicorn


class Server:
    def __init__(self, port: int, cert: Path, audit: Path) -> None:
        self.port, self.audit = port, audit
        self.context = ssl.create_default_context(cafile=str(cert))

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)

    def post(self, conn: http.client.HTTPSConnection, body: bytes) -> tuple[int, dict[str, Any]]:
        conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("serving")
    cert, key = write_tls(directory / "tls")
    audit = directory / "audit.jsonl"
    env = {"TRUSTGATE_BENCH_AUDIT": str(audit)}
    gunicorn = Gunicorn(directory, cert, key, factory=WEBHOOK_APP, args=("--log-level", "warning"), env=env)
    with gunicorn:
        running = Server(gunicorn.port, cert, audit)
        gunicorn.start(running.context)
        yield running


def test_webhook_over_tls_under_gunicorn(server: Server) -> None:
    conn = server.connection()
    try:
        status, body = server.post(conn, json.dumps(admission_review(node_name(3), uid="allow-1")).encode())
        assert status == 200
        assert body["response"] == {"uid": "allow-1", "allowed": True}
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")

        # same connection (keep-alive): a rejection, recorded in the audit log
        status, body = server.post(conn, json.dumps(admission_review(EXPIRED_NODE, uid="deny-1")).encode())
        assert status == 200
        response = body["response"]
        assert response["uid"] == "deny-1" and response["allowed"] is False
        assert response["status"]["code"] == 403
        assert f"may not run on node {EXPIRED_NODE}: trust report expired at" in response["status"]["message"]

        status, body = server.post(conn, b"{broken")
        assert status == 400 and body["reason"] == "BadRequest"
    finally:
        conn.close()
    [record] = [json.loads(line) for line in server.audit.read_text().splitlines()]
    assert record["uid"] == "deny-1" and record["node"] == EXPIRED_NODE and record["decision"] == "rejected"

    conn = server.connection()
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    assert "trustgate_webhook_admission_requests_total" in metrics
    assert "trustgate_audit_records_total" in metrics


def test_plain_http_is_refused(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        assert answer.status != 200
    except (ConnectionError, http.client.HTTPException, OSError):
        pass  # the TLS server drops a plaintext client
    finally:
        conn.close()
