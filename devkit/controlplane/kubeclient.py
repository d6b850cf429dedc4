"""A minimal JSON REST client for the apiserver over mutual TLS, and client-certificate kubeconfigs.

Only the standard library (and PyYAML for kubeconfigs): the control plane is driven before, and
independently of, the ``kubernetes`` client the product uses.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from devkit.controlplane.errors import ControlPlaneError
from devkit.pki import write_private


class KubeAPIError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def write_kubeconfig(
    path: Path, server: str, ca_file: Path, cert_file: Path, key_file: Path, user: str = "user"
) -> Path:
    """Write a kubeconfig with absolute file references (client-certificate auth)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "trustgate-e2e",
                "cluster": {"server": server, "certificate-authority": str(Path(ca_file).resolve())},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(Path(cert_file).resolve()),
                    "client-key": str(Path(key_file).resolve()),
                },
            }
        ],
        "contexts": [{"name": "trustgate-e2e", "context": {"cluster": "trustgate-e2e", "user": user}}],
        "current-context": "trustgate-e2e",
        "preferences": {},
    }
    write_private(Path(path), yaml.safe_dump(cfg, sort_keys=False).encode())
    return Path(path)


class KubeClient:
    """A minimal JSON REST client for the apiserver over mutual TLS (stdlib only)."""

    def __init__(self, server: str, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 15.0) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(ca_file))
        self._ctx.load_cert_chain(str(cert_file), str(key_file))
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path | str) -> KubeClient:
        """Build a client from the current context of a client-certificate kubeconfig."""
        path = Path(path)
        cfg = yaml.safe_load(path.read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        tmp = tempfile.TemporaryDirectory(prefix="kubeclient-")

        def materialise(section: Mapping[str, Any], key: str, fname: str) -> Path:
            if section.get(f"{key}-data"):
                p = Path(tmp.name) / fname
                p.write_bytes(base64.b64decode(section[f"{key}-data"]))
                return p
            if not section.get(key):
                raise ControlPlaneError(f"{path}: {key} missing (only client-certificate kubeconfigs are supported)")
            p = Path(section[key])
            return p if p.is_absolute() else path.parent / p

        client = cls(
            cluster["server"],
            materialise(cluster, "certificate-authority", "ca.crt"),
            materialise(user, "client-certificate", "client.crt"),
            materialise(user, "client-key", "client.key"),
        )
        tmp.cleanup()  # the SSL context has loaded everything
        return client

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """The JSON answer (None when empty, the text when not JSON); raises `KubeAPIError` unless 2xx."""
        status, raw = self.raw(method, path, body, content_type, params)
        if not 200 <= status < 300:
            raise KubeAPIError(status, method, path, raw.decode(errors="replace"))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        """The status and body of any answer."""
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Accept": accept} | ({"Content-Type": content_type} if data is not None else {})
        return self._send(method, url, data, headers)

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.server + url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, obj: Any) -> Any:
        return self.request("POST", path, obj)

    def merge_patch(self, path: str, patch: Any) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


class KeepAliveClient(KubeClient):
    """`KubeClient` over one persistent HTTPS connection per thread (the stock one reconnects, with a
    full TLS handshake, for every request): what a load generator needs to measure the server, not itself."""

    def __init__(self, server: str, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 30.0) -> None:
        super().__init__(server, ca_file, cert_file, key_file, timeout)
        parsed = urllib.parse.urlsplit(self.server)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 443
        self._local = threading.local()

    def connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(2):
            conn = self.connection()
            try:
                conn.request(method, url, body=data, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # a keep-alive connection the server closed while idle: the request was not processed
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def https_get(url: str, ctx: ssl.SSLContext, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
