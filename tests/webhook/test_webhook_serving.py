"""The webhook under the real gunicorn over TLS (`trustgate.serving.server`), as kube-apiserver reaches it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.admission_apps import EXPIRED_NODE, admission_review, node_name, write_tls

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    port = free_port()
    env = os.environ | {"TRUSTGATE_BENCH_NODES": "20", "TRUSTGATE_BENCH_AUDIT": str(audit)}
    command = [sys.executable, "-m", "trustgate.serving.server", "devkit.admission_apps:create"]
    command += ["--bind", f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key)]
    command += ["--workers", "1", "--threads", "2", "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    running = Server(port, cert, audit)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"gunicorn exited with {process.returncode}"
            try:
                conn = running.connection()
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "webhook not ready over TLS within 60 s"
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


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
