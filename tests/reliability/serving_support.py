"""Real gunicorn over TLS on 127.0.0.1 for the reliability and serving tests: throwaway PKI and a server process.

The server is `python -m trustgate.serving.server <factory>` (what `trustgate-extender` and
`trustgate-webhook` run, minus the cluster), so every setting under test is the production one.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from devkit.pki import CertKey, create_ca, issue_cert

ROOT = Path(__file__).resolve().parents[2]
EXTENDER_APP = "devkit.extender_apps:instrumented"  # the extender with test-only routes
WEBHOOK_APP = "devkit.admission_apps:create"  # the webhook over TRUSTGATE_BENCH_NODES nodes


# --- PKI (devkit.pki, named as these tests use it) ------------------------------------------------


@dataclass
class CA:
    name: str
    issued: CertKey

    @property
    def cert(self) -> x509.Certificate:
        return self.issued.cert

    @property
    def path(self) -> Path:
        return self.issued.cert_file

    @classmethod
    def create(cls, directory: Path, name: str) -> CA:
        return cls(name, create_ca(directory, name, name=name, path_length=0))

    def issue(self, directory: Path, name: str, server: bool = True, key_type: str = "ec") -> Leaf:
        """A leaf certificate (server: for 127.0.0.1 and localhost; else a client certificate)."""
        sans = ["127.0.0.1", "localhost"] if server else []
        leaf = issue_cert(
            self.issued, name, sans, server=server, client=not server, out_dir=directory, key_kind=key_type
        )
        return Leaf(leaf.cert, leaf.cert_file, leaf.key_file)


@dataclass
class Leaf:
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def client_context(ca: CA | Path, client: Leaf | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path if isinstance(ca, CA) else ca))
    if client is not None:
        context.load_cert_chain(str(client.cert_path), str(client.key_path))
    return context


def peer_serial(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m trustgate.serving.server <factory>` on a free loopback port, in its own process group."""

    def __init__(
        self,
        directory: Path,
        cert: Path,
        key: Path,
        factory: str = EXTENDER_APP,
        client_ca: Path | None = None,
        workers: int = 1,
        threads: int = 2,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.log_path = directory / f"gunicorn-{self.port}.log"
        self.command = [sys.executable, "-m", "trustgate.serving.server", factory, "--bind", f"127.0.0.1:{self.port}"]
        self.command += ["--certfile", str(cert), "--keyfile", str(key), "--workers", str(workers)]
        self.command += ["--threads", str(threads), "--graceful-timeout", "2", *args]
        if client_ca is not None:
            self.command += ["--client-ca", str(client_ca)]
        self.env = os.environ | {"TRUSTGATE_BENCH_NODES": "20"} | (env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, probe: ssl.SSLContext, timeout: float = 60) -> Server:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.request(probe, "GET", "/healthz", timeout=2)[0] == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not come up:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def connection(self, context: ssl.SSLContext, timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=timeout)

    def request(
        self,
        context: ssl.SSLContext,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, bytes]:
        connection = self.connection(context, timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def workers(self) -> list[int]:
        assert self.process is not None
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]
