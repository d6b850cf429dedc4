"""Limits of the real gunicorn over TLS (trustgate.serving.server): one slow, huge or hung request cannot
take the service down. Loopback only, each test bounded in time.

- a body over the app's limit is refused (extender 413, webhook 400) before it is read;
- request line, header count and header size over gunicorn's limits: 414 / 431;
- one client dribbling its headers does not delay the others (gthread);
- connections stalled mid-handshake or mid-headers free their thread after `REQUEST_IO_TIMEOUT`
  (before that fix they held it forever: `threads` of them stopped the worker for good);
- a worker that hangs holding the GIL misses its heartbeat and is killed and replaced;
- `max_requests` recycling replaces the worker without failing a request.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustgate.serving.server import REQUEST_IO_TIMEOUT

from .serving_support import CA, WEBHOOK_APP, Leaf, Server, client_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Leaf]:
    directory = tmp_path_factory.mktemp("limits-pki")
    ca = CA.create(directory, "limits-ca")
    return ca, ca.issue(directory, "server")


@pytest.fixture(scope="module")
def context(pki: tuple[CA, Leaf]) -> ssl.SSLContext:
    return client_context(pki[0])


@pytest.fixture(scope="module")
def extender(
    pki: tuple[CA, Leaf], context: ssl.SSLContext, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, leaf = pki
    with Server(tmp_path_factory.mktemp("extender"), leaf.cert_path, leaf.key_path, threads=2).start(context) as server:
        yield server


def healthy(server: Server, context: ssl.SSLContext, timeout: float = 2) -> bool:
    try:
        return server.request(context, "GET", "/healthz", timeout=timeout)[0] == 200
    except (OSError, ssl.SSLError):
        return False


def raw_request(server: Server, context: ssl.SSLContext, head: bytes, body: bytes = b"", timeout: float = 5) -> bytes:
    """Send bytes as they are; return the status code the server answers with."""
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer.split(b"\r\n", 1)[0].split(b" ")[1]


# --- body size ------------------------------------------------------------------------------------


def test_an_extender_body_over_64_mib_is_refused_without_being_read(extender: Server, context: ssl.SSLContext) -> None:
    started = time.monotonic()
    head = b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70000000\r\n\r\n"
    status = raw_request(extender, context, head, b'{"Pod": ')  # the rest never comes
    assert status == b"413", status
    assert time.monotonic() - started < 3  # answered at once, not after reading (or waiting for) 70 MB
    assert healthy(extender, context)


def test_a_webhook_body_over_8_mib_is_refused_declared_or_streamed(
    pki: tuple[CA, Leaf], context: ssl.SSLContext, tmp_path: Path
) -> None:
    _, leaf = pki
    with Server(tmp_path, leaf.cert_path, leaf.key_path, factory=WEBHOOK_APP).start(context) as server:
        head = (
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9437184\r\n\r\n"
        )
        assert raw_request(server, context, head, b"{") == b"400"
        # no Content-Length: 9 MiB streamed in chunks is cut off at the limit too
        chunk = b"x" * 65536
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(144)) + b"0\r\n\r\n"
        head = b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        try:
            status = raw_request(server, context, head, chunked, timeout=10)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            status = b"reset"  # the server answered and closed while we were still sending
        assert status in (b"400", b"413", b"reset"), status
        assert healthy(server, context)


# --- request line and headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /healthz?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(70)) + b"\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", b"431"),
    ],
    ids=["request-line-over-4094", "65-plus-headers", "header-over-8190"],
)
def test_request_line_and_header_limits(
    extender: Server, context: ssl.SSLContext, head: bytes, expected: bytes
) -> None:
    assert raw_request(extender, context, head) == expected
    assert healthy(extender, context)


def test_headers_within_the_limits_are_served(extender: Server, context: ssl.SSLContext) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(60)) + b"\r\n"
    assert raw_request(extender, context, head) == b"200"


# --- slow clients ---------------------------------------------------------------------------------------


def test_one_client_dribbling_its_headers_does_not_delay_the_others(extender: Server, context: ssl.SSLContext) -> None:
    raw = socket.create_connection(("127.0.0.1", extender.port), timeout=10)
    slow = context.wrap_socket(raw, server_hostname="127.0.0.1")
    latencies = []
    try:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        for byte in b"X-Slow: " + b"s" * 10:  # one byte every 0.2 s while others are served
            slow.sendall(bytes([byte]))
            started = time.monotonic()
            assert extender.request(context, "GET", "/healthz", timeout=5)[0] == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.2)
    finally:
        slow.close()
    assert max(latencies) < 1.0, latencies


def test_connections_stalled_mid_handshake_or_mid_headers_free_their_threads(
    pki: tuple[CA, Leaf], context: ssl.SSLContext, tmp_path: Path
) -> None:
    """As many stalled connections as the worker has threads: one stops inside its ClientHello, one
    after its first header line. The service answers again within REQUEST_IO_TIMEOUT (plus the 5 s
    gunicorn waits for a first byte at most), and the stalled connections are closed."""
    _, leaf = pki
    with Server(tmp_path, leaf.cert_path, leaf.key_path, threads=2).start(context) as server:
        hello = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        hello.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the first bytes of a ClientHello
        headers = context.wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=30), server_hostname="127.0.0.1"
        )
        headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        stalled = time.monotonic()
        try:
            time.sleep(0.5)
            assert not healthy(server, context, timeout=1), "the worker's threads were not both held"
            while not healthy(server, context, timeout=1):
                assert time.monotonic() - stalled < REQUEST_IO_TIMEOUT + 6, f"still blocked:\n{server.log()}"
            recovered = time.monotonic() - stalled
            assert hello.recv(1) == b""  # closed by the server
            assert closed_by_peer(headers)
        finally:
            hello.close()
            headers.close()
        print(f"\ntwo stalled connections held both threads for {recovered:.1f}s")
        assert "closing the connection from 127.0.0.1" in server.log()


def closed_by_peer(sock: ssl.SSLSocket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True


# --- hung and recycled workers ----------------------------------------------------------------------


def test_a_worker_hung_holding_the_gil_is_killed_and_replaced(
    pki: tuple[CA, Leaf], context: ssl.SSLContext, tmp_path: Path
) -> None:
    _, leaf = pki
    args = ("--timeout", "2")
    with Server(tmp_path, leaf.cert_path, leaf.key_path, workers=2, threads=2, args=args).start(context) as server:
        before = set(server.workers())
        hung = threading.Thread(target=lambda: healthy_hog(server, context), daemon=True)
        hung.start()
        time.sleep(0.3)
        started, served = time.monotonic(), 0
        while set(server.workers()) & before == before:  # until one of them is replaced
            assert time.monotonic() - started < 15, f"no worker was replaced:\n{server.log()}"
            assert server.request(context, "GET", "/healthz", timeout=5)[0] == 200  # the other worker serves
            served += 1
            time.sleep(0.05)
        replaced = time.monotonic() - started
        hung.join(10)
        deadline = time.monotonic() + 20
        while len(server.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(server.workers()) == 2
        assert healthy(server, context)
        assert "WORKER TIMEOUT" in server.log()
        print(f"\nhung worker replaced after {replaced:.1f}s; {served} requests served meanwhile, none failed")


def healthy_hog(server: Server, context: ssl.SSLContext) -> None:
    with contextlib.suppress(OSError, ssl.SSLError, ConnectionError):  # its worker is killed under it
        server.request(context, "GET", "/_test/hog?n=1000000000000", timeout=30)


def test_max_requests_recycling_replaces_the_worker_without_failing_a_request(
    pki: tuple[CA, Leaf], context: ssl.SSLContext, tmp_path: Path
) -> None:
    _, leaf = pki
    args = ("--max-requests", "15", "--max-requests-jitter", "0")
    with Server(tmp_path, leaf.cert_path, leaf.key_path, workers=1, threads=2, args=args).start(context) as server:
        pids: list[str] = []
        failures: list[str] = []
        lock = threading.Lock()

        def client(keep_alive: bool) -> None:
            connection = server.connection(context) if keep_alive else None
            for _ in range(40):
                try:
                    if connection is not None:
                        connection.request("GET", "/_test/pid")
                        response = connection.getresponse()
                        status, body = response.status, response.read()
                    else:
                        status, body = server.request(context, "GET", "/_test/pid")
                    with lock:
                        pids.append(body.decode()) if status == 200 else failures.append(f"HTTP {status}")
                except Exception as error:  # every failure counts
                    with lock:
                        failures.append(repr(error))

        threads = [threading.Thread(target=client, args=(keep,)) for keep in (True, False)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert len(pids) == 80
        print(f"\n80 requests across {len(set(pids))} successive workers (max_requests 15), no failure")
        assert len(set(pids)) >= 4
