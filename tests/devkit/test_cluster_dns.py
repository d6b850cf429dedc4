"""The node stack's DNS for Services, asked by a resolver of its own (busybox nslookup), as pods ask it."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from devkit.controlplane import KubeAPIError
from devkit.nodes.dns import ClusterDns

from ..prerequisites import unavailable

SERVICES = {("trustgate-system", "trustgate-attestation"): ["10.0.0.17"], ("apps", "headless"): ["None"]}


class Client:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def get(self, path: str, **params: str) -> Any:
        self.asked.append(path)
        _, _, _, namespace, _, name = path.strip("/").split("/")
        if (namespace, name) not in SERVICES:
            raise KubeAPIError(404, "GET", path, "not found")
        return {"spec": {"clusterIPs": SERVICES[(namespace, name)]}}


class Cluster:
    def __init__(self) -> None:
        self.api = Client()

    def client(self) -> Client:
        return self.api


@pytest.fixture
def dns() -> Iterator[ClusterDns]:
    if shutil.which("busybox") is None:
        unavailable("busybox not installed (apt-get install busybox): its nslookup is the resolver under test")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ClusterDns(Cluster(), "127.0.0.1", port).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def nslookup(dns: ClusterDns, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["busybox", "nslookup", "-type=a", name, f"127.0.0.1:{dns.port}"], capture_output=True, text=True, timeout=30
    )


def test_a_service_name_resolves_to_its_cluster_ip(dns: ClusterDns) -> None:
    answer = nslookup(dns, "trustgate-attestation.trustgate-system.svc.cluster.local")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "Address: 10.0.0.17" in answer.stdout


def test_names_of_no_service_do_not_resolve_and_names_outside_the_cluster_are_refused(dns: ClusterDns) -> None:
    for name in ("missing.trustgate-system.svc.cluster.local", "example.org"):
        answer = nslookup(dns, name)
        assert answer.returncode != 0 and "10.0.0" not in answer.stdout, (name, answer.stdout)
    headless = nslookup(dns, "headless.apps.svc.cluster.local")  # it exists, with no ClusterIP: no address
    assert "Address:" not in headless.stdout.split("\n\n", 1)[1], headless.stdout
    assert dns.resolve("missing.trustgate-system.svc.cluster.local")[0] == 3  # NXDOMAIN
    assert dns.resolve("trustgate-system.svc.trustgate-system.svc.cluster.local")[0] == 3  # a search-list try
    assert dns.resolve("example.org")[0] == 5  # REFUSED: nothing is resolved beyond the cluster
