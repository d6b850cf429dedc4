"""The trustgate image as image/build.sh makes it: reproducible, named, non-root, every entry point
runnable, its SBOM true to its dpkg database and its Python dists, its lock exactly the runtime
dependencies of pyproject.toml."""

from __future__ import annotations

import json
import re
import subprocess
from importlib.metadata import Distribution, distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .image_support import (
    IMAGE_DIR,
    PYPROJECT,
    REPO,
    SCRIPTS,
    VERSION,
    Build,
    Runc,
    build,
    dpkg_installed,
    read_debian_lock,
    read_pins,
    sbom_components,
)

pytestmark = pytest.mark.e2e

UID = 65532


def site_packages(runc: Runc) -> Path:
    (found,) = (runc.rootfs / "opt/trustgate/lib").glob("python3*/site-packages")
    return found


def image_dists(runc: Runc) -> dict[str, Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in distributions(path=[str(site_packages(runc))])}


def test_two_builds_give_the_same_image(image: Build, tmp_path: Path) -> None:
    """The Debian layer made again by mmdebstrap (not taken from the cache) and everything else
    again: the same manifest digest and the same archive, byte for byte."""
    again = build(tmp_path / "again", "--rebuild-rootfs")
    assert again.digest == image.digest
    assert again.archive.read_bytes() == image.archive.read_bytes()


def test_archive_names_the_image_for_skopeo_and_containerd(image: Build) -> None:
    (entry,) = image.index["manifests"]
    assert entry["digest"] == image.digest
    assert entry["annotations"] == {
        "org.opencontainers.image.ref.name": VERSION,
        "io.containerd.image.name": f"docker.io/library/trustgate:{VERSION}",
    }
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{image.archive}:{VERSION}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    described = json.loads(inspected.stdout)
    assert described["Digest"] == image.digest
    assert described["Labels"]["org.opencontainers.image.version"] == VERSION
    assert described["Os"] == "linux" and described["Architecture"] == "amd64"


def test_another_tag_names_the_same_layers(image: Build, tmp_path: Path) -> None:
    tagged = build(tmp_path / "tagged", "--tag", "0.1.1-rolling")
    assert tagged.index["manifests"][0]["annotations"]["io.containerd.image.name"] == (
        "docker.io/library/trustgate:0.1.1-rolling"
    )
    assert tagged.config["config"]["Labels"]["org.opencontainers.image.version"] == "0.1.1-rolling"
    assert tagged.manifest["layers"] == image.manifest["layers"]


def test_runs_as_a_fixed_non_root_user(image: Build, runc: Runc) -> None:
    assert image.config["config"]["User"] == f"{UID}:{UID}"
    result = runc.run(["id"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"uid={UID}(trustgate) gid={UID}(trustgate)")


def test_console_scripts_are_those_of_pyproject(runc: Runc) -> None:
    trustgate = image_dists(runc)["trustgate"]
    installed = {entry.name for entry in trustgate.entry_points if entry.group == "console_scripts"}
    assert installed == set(SCRIPTS)
    assert all((runc.rootfs / "opt/trustgate/bin" / script).is_file() for script in SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_entry_point_answers_help(runc: Runc, script: str) -> None:
    result = runc.run([script, "--help"])
    assert result.returncode == 0, f"{script} --help in the image: {result.stderr[-2000:]}"
    assert result.stdout.startswith("usage: "), result.stdout[:500]


def test_agent_finds_every_tpm2_tool_it_runs(runc: Runc) -> None:
    called = set(re.findall(r'"(tpm2_[a-z]+)"', (REPO / "agent/tpm2.py").read_text()))
    assert called, "agent/tpm2.py names no tpm2_* tool"
    missing = sorted(tool for tool in called if not (runc.rootfs / "usr/bin" / tool).exists())
    assert not missing, f"not in the image: {missing}"
    result = runc.run(["tpm2_quote", "-v"])
    assert result.returncode == 0 and 'tool="tpm2_quote"' in result.stdout, result.stderr


def test_sbom_in_the_image_is_the_one_beside_the_archive(image: Build, runc: Runc) -> None:
    inside = runc.rootfs / "usr/share/doc/trustgate/sbom.cdx.json"
    assert inside.read_bytes() == image.sbom.read_bytes()
    sbom = json.loads(inside.read_text())
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    assert sbom["metadata"]["component"]["name"] == "trustgate"


def test_sbom_python_packages_are_the_lock_and_trustgate(image: Build, runc: Runc) -> None:
    sbom = json.loads(image.sbom.read_text())
    listed = {canonicalize_name(c["name"]): c["version"] for c in sbom_components(sbom, "pypi")}
    expected = read_pins(IMAGE_DIR / "requirements.lock") | {"trustgate": VERSION}
    assert listed == expected
    installed = {name: dist.version for name, dist in image_dists(runc).items()}
    assert listed == installed


def test_sbom_debian_packages_are_dpkg_status_and_the_lock(image: Build, runc: Runc) -> None:
    sbom = json.loads(image.sbom.read_text())
    listed = {c["name"]: c["version"] for c in sbom_components(sbom, "deb")}
    assert listed == dpkg_installed(runc.rootfs / "var/lib/dpkg/status")
    assert listed == read_debian_lock(IMAGE_DIR / "debian.lock")


def test_lock_is_exactly_the_runtime_dependencies_of_pyproject(runc: Runc) -> None:
    """The closure of [project.dependencies] over the image's installed metadata (at the locked
    versions) is the lock: nothing missing, nothing extra (no test tools)."""
    dists = image_dists(runc)
    pins = read_pins(IMAGE_DIR / "requirements.lock")
    wanted = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} of pyproject.toml is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
    closure: set[tuple[str, frozenset[str]]] = set()
    pending = [(canonicalize_name(r.name), frozenset(r.extras)) for r in wanted]
    while pending:
        name, extras = pending.pop()
        if (name, extras) in closure:
            continue
        closure.add((name, extras))
        for text in dists[name].requires or []:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    assert {name for name, _ in closure} == set(pins)
