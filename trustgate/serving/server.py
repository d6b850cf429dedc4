"""Serving a Flask (WSGI) app under gunicorn over TLS, for the extender and the webhook.

    serve(create_app, bind="0.0.0.0:8443", certfile=..., keyfile=..., client_ca=...)
    python -m trustgate.serving.server module:factory --bind ... --certfile ... --keyfile ...  # tests

- TLS 1.2 minimum, ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only (TLS 1.3 suites are
  all AEAD), no compression or renegotiation, HTTP/1.1 only (no h2 via ALPN). With `client_ca`,
  a client certificate signed by it is required (mTLS: kube-scheduler's `tlsConfig.certFile`).
  gunicorn builds the SSL context per connection, so renewed certificate files are picked up
  without a restart (and while they are half-written, the last good ones keep serving).
- Each worker imports and calls the app factory itself (no `preload_app`): the cluster cache
  starts watch threads, which must not be created before a fork.
- gthread workers; bounded request line and headers; worker timeout, graceful shutdown,
  keep-alive, and recycling after `max_requests` (with jitter, so workers do not restart together).
- A deadline on each request's socket I/O (`REQUEST_IO_TIMEOUT`, see `DeadlineSocket`): a client
  that stalls mid-handshake or mid-request frees its worker thread after that long.
- Prometheus: each worker process keeps its own registry (no multiprocess mode, which needs a
  shared directory, cleanup hooks, and cannot serve callback gauges such as the cache age).
  kube-scheduler calls an extender one pod at a time, so the extender runs a single worker, whose
  threads serve probes and scrapes alongside, and its metrics are exact. With several workers a
  scrape reads whichever worker accepted it; scale with replicas rather than workers when the
  metrics matter.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.config import Config

log = logging.getLogger(__name__)

TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# kube-apiserver and kube-scheduler send a request at once and give up on an answer after a few
# seconds (webhook timeoutSeconds, extender httpTimeout): a request that has not arrived in 5 s
# (or a response not taken in 5 s) has no one waiting for it.
REQUEST_IO_TIMEOUT = 5.0
_SUPPORTED = frozenset(Config().settings)  # this gunicorn's settings
_OPTIONAL = frozenset({"http_protocols", "control_socket_disable"})  # newer gunicorns only
DEFAULTS: dict[str, Any] = {
    "timeout": 30,  # a worker silent this long is killed and replaced
    "graceful_timeout": 20,
    # Longer than Go's idle-connection timeout (90 s in kube-scheduler's and kube-apiserver's transports),
    # so that the client, not the server, closes idle connections: no request races a closing socket.
    "keepalive": 120,
    "max_requests": 50_000,
    "max_requests_jitter": 5_000,
    "limit_request_line": 4094,
    "limit_request_fields": 64,
    "limit_request_field_size": 8190,
    "loglevel": "info",
    "accesslog": None,
}


class DeadlineSocket(ssl.SSLSocket):
    """A server-side TLS connection on which reading a request (the TLS handshake, request line,
    headers and body) must finish within `REQUEST_IO_TIMEOUT` seconds, and so must writing its
    response.

    gthread gives a connection a worker thread as soon as its first byte arrives and then reads it
    in blocking mode with no time limit: a client that sends part of a ClientHello or of its headers
    and stops (slowloris, or a peer lost behind a partition, which sends no FIN) would hold the
    thread forever, and `threads` such connections stop the worker for good, its heartbeat still
    beating so gunicorn never replaces it. The deadline starts at the first blocking operation after
    gunicorn puts the socket in blocking mode (each request on a keep-alive connection starts
    afresh), and again when the connection turns from reading to writing. A timeout gunicorn sets
    itself (draining a body, closing gracefully) still applies when it is shorter.
    """

    _deadline: float | None = None
    _phase = ""
    _requested: float | None = None  # the timeout the socket's user asked for (None: blocking)

    def settimeout(self, value: float | None) -> None:
        self._requested = value
        super().settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._deadline, self._phase = None, ""
        self._requested = None if flag else 0.0
        super().setblocking(flag)

    def _arm(self, phase: str) -> None:
        if self._requested == 0.0:
            return  # non-blocking: gunicorn's poller waits, no thread does
        now = time.monotonic()
        if phase != self._phase or self._deadline is None:
            self._phase, self._deadline = phase, now + REQUEST_IO_TIMEOUT
        remaining = self._deadline - now
        if remaining <= 0:
            self._expired()
        requested = self._requested
        super().settimeout(remaining if requested is None else min(requested, remaining))

    def _expired(self) -> None:
        peer = self._peer()
        log.warning("closing the connection from %s: no %s within %.0fs", peer, self._phase, REQUEST_IO_TIMEOUT)
        # gunicorn closes a reset connection quietly (a timeout would log a traceback per connection)
        raise ConnectionResetError(errno.ECONNRESET, f"request {self._phase} deadline exceeded")

    def _peer(self) -> str:
        try:
            host, port = self.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "a client"

    def _guarded(self, phase: str, operation: Callable[[], Any]) -> Any:
        self._arm(phase)
        try:
            return operation()
        except TimeoutError:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._expired()
            raise  # gunicorn's own, shorter timeout

    def do_handshake(self, *args: Any, **kwargs: Any) -> None:
        self._guarded("request", lambda: super(DeadlineSocket, self).do_handshake(*args, **kwargs))

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return self._guarded("request", lambda: super(DeadlineSocket, self).read(*args, **kwargs))

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        return self._guarded("request", lambda: super(DeadlineSocket, self).recv(*args, **kwargs))

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        return self._guarded("request", lambda: super(DeadlineSocket, self).recv_into(*args, **kwargs))

    def write(self, *args: Any, **kwargs: Any) -> int:
        return self._guarded("response", lambda: super(DeadlineSocket, self).write(*args, **kwargs))

    def send(self, *args: Any, **kwargs: Any) -> int:
        return self._guarded("response", lambda: super(DeadlineSocket, self).send(*args, **kwargs))

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._guarded("response", lambda: super(DeadlineSocket, self).sendall(*args, **kwargs))


_last_good: list[ssl.SSLContext] = []  # this worker's last context built from consistent files


def tls_context(config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn's `ssl_context` hook: harden the context built from certfile/keyfile/ca_certs/cert_reqs.

    gunicorn calls it for every new connection, so renewed files on disk serve the next one. While
    they cannot be loaded (a rotation that replaces the certificate before its key, a file being
    rewritten), the last context that loaded keeps serving instead of refusing the connection."""
    try:
        context = default_factory()
    except (ssl.SSLError, OSError) as error:
        if not _last_good:
            raise
        log.warning("cannot load the TLS files (%s); serving the previous certificate meanwhile", error)
        return _last_good[0]
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    context.sslsocket_class = DeadlineSocket
    _last_good[:] = [context]
    return context


def gunicorn_settings(
    bind: str,
    certfile: str,
    keyfile: str,
    client_ca: str | None = None,
    workers: int = 1,
    threads: int = 4,
    **overrides: Any,
) -> dict[str, Any]:
    """gunicorn settings (the names of its config file) for a TLS server; `overrides` may set any
    other gunicorn setting (timeout, keepalive, max_requests, accesslog, ...)."""
    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be at least 1")
    settings: dict[str, Any] = {
        **DEFAULTS,
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "preload_app": False,
        "certfile": certfile,
        "keyfile": keyfile,
        "ca_certs": client_ca,
        # asked for, verified when given, not required: probes present none (see trustgate.serving.identity)
        "cert_reqs": ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE,
        "ciphers": TLS_CIPHERS,
        "ssl_context": tls_context,
        "http_protocols": "h1",
        "do_handshake_on_connect": False,  # the worker thread handshakes, not the accept loop
        "forwarded_allow_ips": "",  # nothing in front of us may claim another client address
        "control_socket_disable": True,  # no runtime control socket (gunicorn >= 25.1 opens one in $HOME)
    }
    settings.update(overrides)
    return {name: value for name, value in settings.items() if name in _SUPPORTED or name not in _OPTIONAL}


def load_factory(app_factory_path: str) -> Callable[[], Any]:
    """`module:function` -> the function."""
    module_name, _, attribute = app_factory_path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"app factory must be given as module:function, not {app_factory_path!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise TypeError(f"{app_factory_path} is not callable")
    return factory


class FactoryApplication(BaseApplication):
    """gunicorn running the WSGI app that `factory()` returns, built in each worker after the fork."""

    def __init__(self, factory: Callable[[], Any], settings: dict[str, Any]) -> None:
        self.factory = factory
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        for name, value in self.settings.items():
            if name not in self.cfg.settings:
                raise ValueError(f"unknown gunicorn setting {name!r}")
            self.cfg.set(name, value)

    def load(self) -> Any:
        return self.factory()


def serve(factory: Callable[[], Any], **options: Any) -> None:
    """Run gunicorn over TLS until it is stopped (SIGTERM: graceful). `options` are `gunicorn_settings`'s
    (`bind`, `certfile`, `keyfile`, `client_ca`, `workers`, `threads`, and any other gunicorn setting)."""
    FactoryApplication(factory, gunicorn_settings(**options)).run()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m trustgate.serving.server module:factory --bind ... --certfile ... --keyfile ...`"""
    parser = argparse.ArgumentParser(prog="python -m trustgate.serving.server", description=main.__doc__)
    parser.add_argument("app", help="the app factory, module:function")
    parser.add_argument("--bind", default="0.0.0.0:8443")
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--client-ca", help="require client certificates signed by this CA (mTLS)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--timeout", type=int, default=DEFAULTS["timeout"])
    parser.add_argument("--graceful-timeout", type=int, default=DEFAULTS["graceful_timeout"])
    parser.add_argument("--keepalive", type=int, default=DEFAULTS["keepalive"])
    parser.add_argument("--max-requests", type=int, default=DEFAULTS["max_requests"])
    parser.add_argument("--max-requests-jitter", type=int, default=DEFAULTS["max_requests_jitter"])
    parser.add_argument("--log-level", default=DEFAULTS["loglevel"])
    parser.add_argument("--access-log", help="access log file, - for stderr")
    args = parser.parse_args(argv)
    serve(
        load_factory(args.app),
        bind=args.bind,
        certfile=args.certfile,
        keyfile=args.keyfile,
        client_ca=args.client_ca,
        workers=args.workers,
        threads=args.threads,
        timeout=args.timeout,
        graceful_timeout=args.graceful_timeout,
        keepalive=args.keepalive,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        loglevel=args.log_level,
        accesslog=args.access_log,
    )


if __name__ == "__main__":
    main()
