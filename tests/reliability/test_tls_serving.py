"""TLS of the real gunicorn (trustgate.serving.server) on 127.0.0.1, as kube-apiserver and kube-scheduler meet it.

- TLS 1.2 is the minimum: a client that offers at most TLS 1.1 (or 1.0) is refused;
- only ECDHE with AEAD in TLS 1.2: clients offering only RSA key exchange, DHE, or CBC suites
  are refused (each refusal is checked against a permissive server with the same certificate,
  which accepts the same client: the refusal is the policy's, not the certificate's or OpenSSL's);
- HTTP/2 is never negotiated (ALPN gives http/1.1 or nothing; an h2 preface is not served);
- the serving certificate is re-read from disk for each new connection: rotated under load (same
  CA with a new serial, then a certificate from a second CA) with no failed request, and every
  connection opened after a rotation sees the new certificate; a torn rotation (the certificate
  file replaced before its key) fails no connection either;
- mTLS for the extender: no client certificate, one from another CA, or a server-only certificate
  are refused; kube-scheduler's client certificate is accepted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .serving_support import CA, Leaf, Server, client_context, peer_serial

FILTER = json.dumps({"Pod": {"metadata": {"name": "p", "namespace": "default"}}, "NodeNames": ["trusted-1"]}).encode()


@dataclass
class Pki:
    directory: Path
    ca: CA
    other_ca: CA
    server: Leaf
    rsa_server: Leaf
    client: Leaf
    foreign_client: Leaf
    server_as_client: Leaf
    bundle: Path = field(init=False)

    def __post_init__(self) -> None:
        self.bundle = self.directory / "bundle.crt"  # both CAs, as a client trusts during a CA rotation
        self.bundle.write_bytes(self.ca.path.read_bytes() + self.other_ca.path.read_bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("tls-pki")
    ca, other = CA.create(directory, "ca-one"), CA.create(directory, "ca-two")
    return Pki(
        directory,
        ca,
        other,
        server=ca.issue(directory / "ec", "server"),
        rsa_server=ca.issue(directory / "rsa", "server", key_type="rsa"),
        client=ca.issue(directory, "kube-scheduler", server=False),
        foreign_client=other.issue(directory, "intruder", server=False),
        server_as_client=ca.issue(directory / "server-as-client", "server"),
    )


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("tls-server")
    with Server(directory, pki.server.cert_path, pki.server.key_path).start(client_context(pki.ca)) as running:
        yield running


@pytest.fixture(scope="module")
def rsa_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("tls-rsa-server")
    leaf = pki.rsa_server
    with Server(directory, leaf.cert_path, leaf.key_path).start(client_context(pki.ca)) as running:
        yield running


def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    """(TLS version, cipher) of a completed handshake with 127.0.0.1:port; raises if refused."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        version, cipher = tls.version(), tls.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0]


def legacy_client(ca: CA, maximum: ssl.TLSVersion, ciphers: str = "ALL") -> ssl.SSLContext:
    """A client that really offers old protocol versions and weak suites (security level 0)."""
    context = client_context(ca)
    context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    return context


@contextlib.contextmanager
def permissive_server(leaf: Leaf) -> Iterator[int]:
    """A server with the same certificate that accepts anything OpenSSL can speak (the control)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert_path, leaf.key_path)
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stopping.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        thread.join(5)
        listener.close()


def refused(port: int, context: ssl.SSLContext) -> bool:
    try:
        handshake(port, context)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


# --- versions and ciphers -------------------------------------------------------------------------


def test_tls_1_2_and_1_3_are_served(server: Server, pki: Pki) -> None:
    assert handshake(server.port, client_context(pki.ca))[0] == "TLSv1.3"
    tls12 = client_context(pki.ca)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = handshake(server.port, tls12)
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1], ids=["TLSv1.1", "TLSv1.0"])
def test_a_client_offering_at_most_tls_1_1_is_refused(server: Server, pki: Pki, maximum: ssl.TLSVersion) -> None:
    client = legacy_client(pki.ca, maximum)
    with permissive_server(pki.server) as control:
        try:
            version, _ = handshake(control, client)
        except ssl.SSLError as error:
            pytest.skip(f"this OpenSSL cannot speak {maximum.name} at all ({error})")
    assert version == {ssl.TLSVersion.TLSv1_1: "TLSv1.1", ssl.TLSVersion.TLSv1: "TLSv1"}[maximum]
    assert refused(server.port, client)


@pytest.mark.parametrize(
    "suite",
    [
        "AES128-SHA",  # RSA key exchange, CBC, SHA-1
        "AES256-GCM-SHA384",  # RSA key exchange: no forward secrecy
        "ECDHE-RSA-AES128-SHA",  # ECDHE, but CBC with SHA-1
        "ECDHE-RSA-AES256-SHA384",  # ECDHE, but CBC
        "AES128-SHA256",  # RSA key exchange, CBC
    ],
)
def test_a_client_offering_only_weak_suites_is_refused(rsa_server: Server, pki: Pki, suite: str) -> None:
    client = legacy_client(pki.ca, ssl.TLSVersion.TLSv1_2, suite)
    with permissive_server(pki.rsa_server) as control:
        try:
            _, negotiated = handshake(control, client)
        except ssl.SSLError as error:
            pytest.skip(f"this OpenSSL does not offer {suite} ({error})")
    assert negotiated == suite
    assert refused(rsa_server.port, client)
    good = legacy_client(pki.ca, ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256")
    assert handshake(rsa_server.port, good) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")


# --- no HTTP/2 ---------------------------------------------------------------------------------------


def test_http2_is_never_negotiated(server: Server, pki: Pki) -> None:
    for offered, expected in ((["h2", "http/1.1"], "http/1.1"), (["h2"], None)):
        context = client_context(pki.ca)
        context.set_alpn_protocols(offered)
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.selected_alpn_protocol() == expected
            if expected is None:  # speaking HTTP/2 anyway (prior knowledge) is not served
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                answer = b""
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    answer = tls.recv(4096)
                assert not answer or answer.startswith(b"HTTP/1.1 4"), answer


# --- certificate rotation ---------------------------------------------------------------------------


class Mount:
    """A Secret volume as the kubelet writes it: tls.crt -> ..data/tls.crt, and an update swaps the
    ..data symlink in one rename (atomic)."""

    def __init__(self, directory: Path, leaf: Leaf) -> None:
        self.directory = directory
        self.generation = 0
        directory.mkdir(parents=True, exist_ok=True)
        self.swap(leaf)
        for name in ("tls.crt", "tls.key"):
            (directory / name).symlink_to(f"..data/{name}")

    def swap(self, leaf: Leaf) -> None:
        self.generation += 1
        version = self.directory / f"..version-{self.generation}"
        version.mkdir()
        (version / "tls.crt").write_bytes(leaf.cert_path.read_bytes())
        (version / "tls.key").write_bytes(leaf.key_path.read_bytes())
        staging = self.directory / "..data_tmp"
        staging.symlink_to(version.name)
        os.replace(staging, self.directory / "..data")


@dataclass
class Load:
    """Clients hammering /healthz during a rotation: one keep-alive connection and two that open a
    new connection per request (recording when each connection started and the serial it saw)."""

    server: Server
    context: ssl.SSLContext
    fresh: list[tuple[float, int]] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def served_serial(connection: http.client.HTTPSConnection) -> int:
        """GET /healthz over `connection`; the serial of the certificate that answered it."""
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        assert isinstance(connection.sock, ssl.SSLSocket)
        return peer_serial(connection.sock)

    def keep_alive(self) -> None:
        connection = self.server.connection(self.context)
        while not self.stopping.is_set():
            try:
                self.kept.append(self.served_serial(connection))
            except Exception as error:  # every failure counts
                self.failures.append(f"keep-alive: {error!r}")
                connection.close()

    def new_connections(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            connection = self.server.connection(self.context)
            try:
                self.fresh.append((started, self.served_serial(connection)))
            except Exception as error:  # every failure counts
                self.failures.append(f"new connection: {error!r}")
            finally:
                connection.close()

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.keep_alive, daemon=True)]
        self.threads += [threading.Thread(target=self.new_connections, daemon=True) for _ in range(2)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def seen_after(self, moment: float) -> set[int]:
        return {serial for started, serial in list(self.fresh) if started > moment}

    def wait_served(self, serial: int, moment: float, failure: str) -> None:
        """Until a connection opened after `moment` has seen `serial`; fails with `failure` 5 s after `moment`."""
        deadline = moment + 5
        while serial not in self.seen_after(moment):
            assert time.monotonic() < deadline, failure
            time.sleep(0.02)


def test_the_serving_certificate_is_rotated_under_load_without_a_failed_request(pki: Pki, tmp_path: Path) -> None:
    mount = Mount(tmp_path / "secret", pki.server)
    renewed = pki.ca.issue(tmp_path / "renewed", "server")  # same CA, new key and serial
    moved = pki.other_ca.issue(tmp_path / "moved", "server")  # a certificate from a second CA
    context = client_context(pki.bundle)
    cert, key = mount.directory / "tls.crt", mount.directory / "tls.key"
    with Server(tmp_path, cert, key, threads=4).start(context) as server, Load(server, context) as load:
        time.sleep(1.0)
        rotations = []
        for leaf in (renewed, moved):
            mount.swap(leaf)
            rotated = time.monotonic()
            rotations.append((rotated, leaf.serial))
            load.wait_served(leaf.serial, rotated, "no new connection saw the rotated certificate")
            time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    for rotated, serial in rotations:
        assert load.seen_after(rotated) <= {serial} | {s for r, s in rotations if r > rotated}
    assert {pki.server.serial, renewed.serial, moved.serial} <= {serial for _, serial in load.fresh}
    assert load.kept and set(load.kept) == {pki.server.serial}  # an open connection keeps its session
    print(
        f"\nrotation under load: {len(load.fresh)} new connections and {len(load.kept)} keep-alive requests, "
        f"0 failed; every connection opened after a rotation saw the new certificate"
    )


def test_a_torn_rotation_fails_no_connection(pki: Pki, tmp_path: Path) -> None:
    """The certificate file replaced 0.5 s before its key (a tool writing files one by one): the
    mismatched pair on disk must not refuse new connections; the last good pair serves meanwhile."""
    directory = tmp_path / "files"
    directory.mkdir()
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(pki.server.cert_path.read_bytes())
    key.write_bytes(pki.server.key_path.read_bytes())
    renewed = pki.ca.issue(tmp_path / "renewed", "server")
    context = client_context(pki.ca)
    with Server(tmp_path, cert, key, threads=4).start(context) as server, Load(server, context) as load:
        time.sleep(0.5)
        cert.write_bytes(renewed.cert_path.read_bytes())
        time.sleep(0.5)
        key.write_bytes(renewed.key_path.read_bytes())
        completed = time.monotonic()
        load.wait_served(renewed.serial, completed, "the renewed certificate was never served")
        time.sleep(0.5)
    assert not load.failures, load.failures[:5]
    assert load.seen_after(completed + 0.1) == {renewed.serial}


# --- mTLS ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("mtls-server")
    leaf = pki.server
    probe = client_context(pki.ca, pki.client)
    server = Server(
        directory, leaf.cert_path, leaf.key_path, factory="devkit.extender_apps:authenticated", client_ca=pki.ca.path
    )
    with server.start(probe) as running:
        yield running


def post_filter(server: Server, context: ssl.SSLContext) -> int:
    return server.request(context, "POST", "/filter", FILTER, {"Content-Type": "application/json"})[0]


def test_mtls_accepts_the_schedulers_client_certificate(mtls_server: Server, pki: Pki) -> None:
    status, body = mtls_server.request(
        client_context(pki.ca, pki.client), "POST", "/filter", FILTER, {"Content-Type": "application/json"}
    )
    assert status == 200 and json.loads(body)["NodeNames"] == ["trusted-1"]


@pytest.mark.parametrize("client", ["foreign", "server-only"])
def test_mtls_refuses_a_client_with_an_invalid_client_certificate(mtls_server: Server, pki: Pki, client: str) -> None:
    leaf = {"foreign": pki.foreign_client, "server-only": pki.server_as_client}[client]
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        post_filter(mtls_server, client_context(pki.ca, leaf))


def test_mtls_answers_no_decision_without_a_client_certificate_but_serves_probes(mtls_server: Server, pki: Pki) -> None:
    """Kubelet probes present no certificate: they reach /readyz; a decision needs the scheduler's."""
    context = client_context(pki.ca, None)
    assert post_filter(mtls_server, context) == 401
    assert mtls_server.request(context, "GET", "/readyz")[0] == 200
