"""A TCP proxy on loopback that a test can cut: a component behind it loses its server, others do not.

proxy = TcpProxy(("127.0.0.1", apiserver_port)).start()   # proxy.port: where the component connects
proxy.cut()      # every connection dropped, new ones refused until `mend()`
proxy.mend()
proxy.stop()

balancer = TcpProxy(("127.0.0.1", a), port=p, more=[("127.0.0.1", b)]).start()  # round robin, as a Service
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Forwards each connection to `target`, or with `more` targets to each in turn (a target that refuses
    the connection is skipped, as a Service's endpoints drop a dead pod), listening on `port` (0: any).
    A connection idle for `idle_timeout` seconds is closed (None: never, as for keep-alive HTTP clients)."""

    def __init__(
        self,
        target: tuple[str, int],
        delay: float = 0.0,
        port: int = 0,
        more: list[tuple[str, int]] | None = None,
        idle_timeout: float | None = 5.0,
    ) -> None:
        self.target, self.delay, self.idle_timeout = target, delay, idle_timeout
        self.targets = [target, *(more or [])]
        self._next = 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._stopping = threading.Event()

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True).start()
        return self

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def mend(self) -> None:
        self._cut.clear()

    def stop(self) -> None:
        self._stopping.set()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()  # refused while cut
                continue
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        for _ in range(len(self.targets)):
            target = self.targets[self._next % len(self.targets)]
            self._next += 1
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                continue
            upstream.settimeout(self.idle_timeout)
            return upstream
        return None

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)  # a slow link: what it carries arrives late, in order
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(sock)
            sock.close()
