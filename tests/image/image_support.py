"""The image under test: building it with image/build.sh, reading its archive and locks, running it with runc."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from ..prerequisites import require_root, require_tools

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "image"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
ARCHIVE = "trustgate-image.oci.tar"
BUILD_TOOLS = ("mmdebstrap", "mmtarfilter", "umoci", "skopeo", "runc", "git", "chroot")
INSTALL_HINT = "make image-tools (Debian's mmdebstrap, umoci, skopeo, runc; needs root)"


def require_build_prerequisites() -> None:
    require_root("the image build and runc need root (mmdebstrap's root mode, chroot)")
    require_tools(BUILD_TOOLS, INSTALL_HINT)


@dataclass(frozen=True)
class Build:
    """One run of image/build.sh: its outputs."""

    output: Path

    @property
    def archive(self) -> Path:
        return self.output / ARCHIVE

    @property
    def sbom(self) -> Path:
        return self.output / "trustgate-image.sbom.cdx.json"

    @property
    def digest(self) -> str:
        return (self.output / "trustgate-image.digest").read_text().strip()

    def member(self, name: str) -> bytes:
        with tarfile.open(self.archive) as archive:
            extracted = archive.extractfile(name)
            assert extracted is not None, f"{name} is not a file in {self.archive}"
            return extracted.read()

    def blob(self, digest: str) -> Any:
        return json.loads(self.member(f"blobs/sha256/{digest.removeprefix('sha256:')}"))

    @property
    def index(self) -> Any:
        return json.loads(self.member("index.json"))

    @property
    def manifest(self) -> Any:
        return self.blob(self.digest)

    @property
    def config(self) -> Any:
        return self.blob(self.manifest["config"]["digest"])


def build(output: Path, *options: str) -> Build:
    """Run image/build.sh; its log goes to output/build.log, shown when it fails."""
    output.mkdir(parents=True, exist_ok=True)
    log = output / "build.log"
    with log.open("w") as sink:
        result = subprocess.run(
            ["bash", str(IMAGE_DIR / "build.sh"), "--output", str(output), *options],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=1800,
        )
    assert result.returncode == 0, f"image/build.sh failed ({result.returncode}):\n{log.read_text()[-4000:]}"
    return Build(output)


class Runc:
    """The image unpacked by umoci into a runtime bundle, run with runc as its config says (user
    65532, its environment) with a read-only root filesystem, as the Deployments run it."""

    def __init__(self, build: Build, workdir: Path) -> None:
        self.workdir = workdir
        self.state = workdir / "runc-state"  # not /run/runc: nothing shared with other runc users
        layout = workdir / "layout"
        layout.mkdir()
        subprocess.run(["tar", "-C", str(layout), "-xf", str(build.archive)], check=True, timeout=300)
        tag = build.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        self.bundle = workdir / "bundle"
        subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:{tag}", str(self.bundle)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        shutil.rmtree(layout)
        self.rootfs = self.bundle / "rootfs"
        self.spec = json.loads((self.bundle / "config.json").read_text())
        self._ids = itertools.count()

    def run(self, argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        container = f"trustgate-image-test-{os.getpid()}-{next(self._ids)}"
        bundle = self.workdir / container
        bundle.mkdir()
        spec = json.loads(json.dumps(self.spec))
        spec["process"].update(args=list(argv), terminal=False)
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        (bundle / "config.json").write_text(json.dumps(spec))
        try:
            return subprocess.run(
                ["runc", "--root", str(self.state), "run", "--bundle", str(bundle), container],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        finally:
            subprocess.run(["runc", "--root", str(self.state), "delete", "--force", container], capture_output=True)
            shutil.rmtree(bundle)


def read_pins(lock: Path) -> dict[str, str]:
    """image/requirements.lock or pip.lock: canonical name -> pinned version."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, rest = line.partition("==")
            pins[canonicalize_name(name)] = rest.split()[0]
    return pins


def read_debian_lock(lock: Path) -> dict[str, str]:
    entries = (line.partition("=") for line in lock.read_text().splitlines() if line and not line.startswith("#"))
    return {name: version for name, _, version in entries}


def dpkg_installed(status: Path) -> dict[str, str]:
    """The installed packages of a dpkg status file: name -> version."""
    installed: dict[str, str] = {}
    for paragraph in status.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status", "").endswith(" installed"):
            installed[fields["Package"]] = fields["Version"]
    return installed


def sbom_components(sbom: Any, purl_type: str) -> Iterator[dict[str, Any]]:
    return (c for c in sbom["components"] if c.get("purl", "").startswith(f"pkg:{purl_type}/"))
