"""trustgate.serving.server: the gunicorn settings, and the real gunicorn serving the extender over TLS and mTLS."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devkit.pki import create_ca, issue_cert
from trustgate.serving.server import TLS_CIPHERS, gunicorn_settings, load_factory

from .extender_support import names_args, trust_pod

ROOT = Path(__file__).resolve().parents[2]

# --- settings ---------------------------------------------------------------------------------------


def test_settings_for_tls() -> None:
    settings = gunicorn_settings("127.0.0.1:8443", "tls.crt", "tls.key", workers=2, threads=8, timeout=10)
    assert settings["bind"] == ["127.0.0.1:8443"]
    assert settings["certfile"] == "tls.crt" and settings["keyfile"] == "tls.key"
    assert settings["cert_reqs"] == ssl.CERT_NONE and settings["ca_certs"] is None
    assert settings["ciphers"] == TLS_CIPHERS
    assert settings["worker_class"] == "gthread" and settings["workers"] == 2 and settings["threads"] == 8
    assert settings["preload_app"] is False
    assert settings["http_protocols"] == "h1"
    assert settings["timeout"] == 10
    for name in ("graceful_timeout", "keepalive", "max_requests", "max_requests_jitter"):
        assert settings[name] > 0
    for name in ("limit_request_line", "limit_request_fields", "limit_request_field_size"):
        assert 0 < settings[name] <= 8190


def test_settings_for_mtls() -> None:
    settings = gunicorn_settings("0.0.0.0:8443", "tls.crt", "tls.key", client_ca="ca.crt")
    assert settings["cert_reqs"] == ssl.CERT_OPTIONAL  # verified when given; the app requires it for decisions
    assert settings["ca_certs"] == "ca.crt"


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        gunicorn_settings("0.0.0.0:8443", "c", "k", workers=0)
    with pytest.raises(ValueError):
        load_factory("extender.app")


# --- the real server ----------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (kube-scheduler's)."""
    ca = create_ca(tmp_path_factory.mktemp("pki"), "trustgate test CA", path_length=0)
    server = issue_cert(ca, "trustgate-extender", ["127.0.0.1", "localhost"], server=True, name="tls")
    client = issue_cert(ca, "system:kube-scheduler", client=True, name="client")
    return Pki(ca.cert_file, server.cert_file, server.key_file, client.cert_file, client.key_file)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client_context(pki: Pki, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))  # the pinned CA, as kube-scheduler's caFile
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def _request(port: int, context: ssl.SSLContext, method: str, path: str, body: bytes | None = None):
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        version = connection.sock.version()
        return response.status, response.read(), version
    finally:
        connection.close()


@pytest.fixture
def server(pki: Pki, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    """`python -m trustgate.serving.server devkit.extender_apps:create` on a free port; `request.param`: mTLS or not."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "trustgate.serving.server",
        "devkit.extender_apps:authenticated" if request.param else "devkit.extender_apps:create",
        "--bind",
        f"127.0.0.1:{port}",
        "--certfile",
        str(pki.server_cert),
        "--keyfile",
        str(pki.server_key),
        "--workers",
        "1",
        "--threads",
        "2",
        "--graceful-timeout",
        "2",
    ]
    if request.param:
        command += ["--client-ca", str(pki.ca)]
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        context = _client_context(pki, with_cert=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if _request(port, context, "GET", "/readyz")[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"gunicorn did not come up:\n{(tmp_path / 'gunicorn.log').read_text()}")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


FILTER_BODY = json.dumps(names_args(trust_pod(), ["trusted-1", "bare-1"])).encode()


@pytest.mark.parametrize("server", [False], indirect=True, ids=["tls"])
def test_gunicorn_serves_filter_over_tls(server: int, pki: Pki) -> None:
    status, body, version = _request(server, _client_context(pki, with_cert=False), "POST", "/filter", FILTER_BODY)
    assert status == 200
    assert version in ("TLSv1.2", "TLSv1.3")
    result = json.loads(body)
    assert result["NodeNames"] == ["trusted-1"]
    assert result["FailedAndUnresolvableNodes"] == {"bare-1": "no trust report"}

    # TLS 1.2 without forward secrecy (RSA key exchange) is refused, and so is an unpinned client.
    legacy = _client_context(pki, with_cert=False)
    legacy.maximum_version = ssl.TLSVersion.TLSv1_2
    legacy.set_ciphers("AES128-GCM-SHA256:AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        _request(server, legacy, "GET", "/healthz")
    with pytest.raises(ssl.SSLCertVerificationError):
        _request(server, ssl.create_default_context(), "GET", "/healthz")


@pytest.mark.parametrize("server", [True], indirect=True, ids=["mtls"])
def test_gunicorn_requires_a_client_certificate_with_mtls(server: int, pki: Pki) -> None:
    status, body, _ = _request(server, _client_context(pki, with_cert=True), "POST", "/filter", FILTER_BODY)
    assert status == 200
    assert json.loads(body)["NodeNames"] == ["trusted-1"]
    status, _, _ = _request(server, _client_context(pki, with_cert=False), "POST", "/filter", FILTER_BODY)
    assert status == 401  # no certificate, no decision (probes need none: kubelets present none)
    assert _request(server, _client_context(pki, with_cert=False), "GET", "/readyz")[0] == 200


def test_entry_point_refuses_a_bad_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from extender.main import main

    assert main(["--issuer", "https://aias.example", "--tls-cert", "x", "--tls-key", "y"]) == 2
    assert "no verification key" in capsys.readouterr().err
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    assert main(["--issuer", "https://aias.example", "--jwks", str(jwks)]) == 2
