"""The cluster's DNS for Services, as CoreDNS answers them: ``<service>.<namespace>.svc.cluster.local``.

No DNS image can be pulled here, so the stack answers these names itself, on the bridge address
(port 53, UDP), from the API server: an A record with the Service's ClusterIP, NXDOMAIN for other
names in the cluster domain, REFUSED for anything outside it (nothing is resolved beyond the
machine). The kubelets name it as their ``clusterDNS``, so pods with ``dnsPolicy: ClusterFirst``
(and host-network pods with ``ClusterFirstWithHostNet``) reach Services by name as in any cluster.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from devkit.nodes.cluster_access import ClusterAccess

TYPE_A, TYPE_ANY, CLASS_IN = 1, 255, 1
NOERROR, FORMERR, NXDOMAIN, REFUSED = 0, 1, 3, 5
TTL = 5
CACHE_SECONDS = 2.0


def parse_question(message: bytes) -> tuple[int, int, str, int, bytes]:
    """(id, flags, name, qtype, raw question) of a query with one question; raises ValueError."""
    if len(message) < 12:
        raise ValueError("short message")
    ident, flags, qdcount = struct.unpack("!HHH", message[:6])
    if qdcount != 1:
        raise ValueError("one question expected")
    labels, at = [], 12
    while True:
        length = message[at]
        if length == 0:
            at += 1
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(message[at + 1 : at + 1 + length].decode("ascii").lower())
        at += 1 + length
    qtype, qclass = struct.unpack("!HH", message[at : at + 4])
    if qclass != CLASS_IN:
        raise ValueError("class IN only")
    return ident, flags, ".".join(labels), qtype, message[12 : at + 4]


def answer(ident: int, flags: int, question: bytes, rcode: int, addresses: list[str]) -> bytes:
    """A response: authoritative, recursion desired copied from the query, recursion available."""
    out_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    head = struct.pack("!HHHHHH", ident, out_flags, 1, len(addresses), 0, 0)
    records = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + IPv4Address(a).packed for a in addresses
    )
    return head + question + records


@dataclass
class ClusterDns:
    """Serves the Services of ``cluster`` on ``address``:``port`` (UDP) from a thread."""

    cluster: ClusterAccess
    address: str
    port: int = 53
    domain: str = "cluster.local"
    _sock: socket.socket | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _cache: dict[tuple[str, str], tuple[float, list[str] | None]] = field(default_factory=dict, repr=False)

    def start(self) -> ClusterDns:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, self.port))
        except OSError as error:
            sock.close()
            raise OSError(f"cannot serve the cluster's DNS on {self.address}:{self.port} ({error})") from None
        sock.settimeout(0.5)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="cluster-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def resolve(self, name: str) -> tuple[int, list[str]]:
        """(rcode, addresses) for a name."""
        suffix = f".svc.{self.domain}"
        if name.endswith(suffix):
            parts = name[: -len(suffix)].split(".")
            if len(parts) == 2:
                found = self._service_ips(parts[1], parts[0])
                if found is not None:
                    return NOERROR, found
            return NXDOMAIN, []
        if name == self.domain or name.endswith("." + self.domain):
            return NXDOMAIN, []
        return REFUSED, []

    def _service_ips(self, namespace: str, name: str) -> list[str] | None:
        now = time.monotonic()
        cached = self._cache.get((namespace, name))
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            service = self.cluster.client().get(f"/api/v1/namespaces/{namespace}/services/{name}")
        except Exception:  # not found, or the API server away: no such name for now
            found = None
        else:
            ips = [ip for ip in service.get("spec", {}).get("clusterIPs") or [] if ":" not in ip and ip != "None"]
            found = ips
        self._cache[(namespace, name)] = (now, found)
        return found

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                message, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                ident, flags, name, qtype, question = parse_question(message)
            except (ValueError, IndexError, UnicodeDecodeError, struct.error):
                if len(message) >= 2:
                    refusal = struct.pack("!HHHHHH", message[0] << 8 | message[1], 0x8000 | FORMERR, 0, 0, 0, 0)
                    with contextlib.suppress(OSError):
                        self._sock.sendto(refusal, peer)
                continue
            rcode, addresses = self.resolve(name)
            if qtype not in (TYPE_A, TYPE_ANY):
                addresses = []
            with contextlib.suppress(OSError):
                self._sock.sendto(answer(ident, flags, question, rcode, addresses), peer)
