"""A local OCI registry for the development stack and the end-to-end cluster: Debian's docker-registry
(the CNCF distribution registry), over TLS with a certificate of the cluster CA, storing on disk.

    registry = LocalRegistry(workdir, "172.30.0.1", 5000, cert).start()
    registry.push_archive(kit.test_image.archive, "172.30.0.1:5000/plain/busybox:1")
    registry.hosts_dir   # containerd's hosts.toml tree (registry.config_path) trusting its CA
    registry.stop()

Real nodes reach it on the bridge address (`devkit.nodes.network`); nothing listens beyond it.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devkit.subprocesses import stop
from keybroker.registry import DOCKER_MANIFEST, OCI_MANIFEST, ImageName, Registry

BINARY = "/usr/bin/docker-registry"
INSTALL_HINT = "apt-get install -y docker-registry (or: make registry-tools)"


def missing() -> str | None:
    return None if shutil.which(BINARY) else f"{BINARY} not installed; {INSTALL_HINT}"


@dataclass
class LocalRegistry:
    workdir: Path
    address: str
    port: int
    cert_file: Path
    key_file: Path
    ca_file: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def hosts_dir(self) -> Path:
        """containerd's `registry.config_path`: this registry over HTTPS, verified with the cluster CA."""
        return self.workdir / "hosts"

    def client(self) -> Registry:
        return Registry(self.host, ca_file=str(self.ca_file))

    def start(self) -> LocalRegistry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}, "delete": {"enabled": True}},
            "http": {
                "addr": self.host,
                "tls": {"certificate": str(self.cert_file), "key": str(self.key_file)},
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        (self.workdir / "config.yml").write_text(yaml.safe_dump(config))
        host_dir = self.hosts_dir / self.host
        host_dir.mkdir(parents=True, exist_ok=True)
        (host_dir / "hosts.toml").write_text(
            f'server = "https://{self.host}"\n\n[host."https://{self.host}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  ca = "{self.ca_file}"\n'
        )
        log = open(self.workdir / "registry.log", "ab")  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(
            [BINARY, "serve", str(self.workdir / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + 30
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited {self._process.returncode}; see {self.workdir}/registry.log"
                )
            try:
                with urllib.request.urlopen(f"https://{self.host}/v2/", context=context, timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer on {self.host}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        stop(process, grace=10)

    def push_archive(self, archive: Path, reference: str) -> str:
        """Push the single-image OCI archive `archive` (as `devkit.nodes.ociarchive` writes) as `reference`."""
        image = ImageName.parse(reference)
        registry = self.client()
        with tarfile.open(archive) as tar:

            def read(name: str) -> bytes:
                member = tar.extractfile(name)
                assert member is not None, f"{archive} has no {name}"
                return member.read()

            index = json.loads(read("index.json"))
            [entry] = index["manifests"]
            manifest_bytes = read("blobs/sha256/" + entry["digest"].split(":", 1)[1])
            manifest = json.loads(manifest_bytes)
            for descriptor in [manifest["config"], *manifest["layers"]]:
                registry.push_blob(image, read("blobs/sha256/" + descriptor["digest"].split(":", 1)[1]))
        media_type = manifest.get("mediaType") or OCI_MANIFEST
        assert media_type in (OCI_MANIFEST, DOCKER_MANIFEST)
        return registry.push_manifest(image, manifest, media_type)
