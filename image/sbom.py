"""The image's SBOM, CycloneDX 1.6 JSON: every Debian package of its dpkg status and every Python
distribution of its virtualenv, read from the image's root filesystem.

No offline tool from PyPI or Debian reads both a root filesystem's dpkg status and its Python dists
(syft is not in Debian; cyclonedx-py inspects only an environment it can run), so this fills the
CycloneDX library's model from python-debian's parser and importlib.metadata.

    python image/sbom.py ROOTFS --venv /opt/trustgate --name trustgate --version 0.1.0 --output FILE

SOURCE_DATE_EPOCH, if set, is the BOM's timestamp; the serial number derives from the content.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import Distribution, distributions
from pathlib import Path

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.contrib.this.builders import this_component
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from debian.deb822 import Deb822
from packageurl import PackageURL
from packaging.utils import canonicalize_name


def os_release(root: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (root / "etc/os-release").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip().strip('"')
    return fields


def debian_packages(root: Path) -> Iterator[Deb822]:
    """The installed packages of the dpkg database under `root`."""
    with (root / "var/lib/dpkg/status").open(encoding="utf-8") as status:
        for paragraph in Deb822.iter_paragraphs(status):
            if paragraph.get("Status", "").split()[-1:] == ["installed"]:
                yield paragraph


def debian_component(package: Deb822, distro: str) -> Component:
    purl = PackageURL(
        type="deb",
        namespace="debian",
        name=package["Package"],
        version=package["Version"],
        qualifiers={"arch": package["Architecture"], "distro": distro},
    )
    return Component(
        type=ComponentType.LIBRARY,
        name=package["Package"],
        version=package["Version"],
        publisher=package.get("Maintainer"),
        description=package.get("Description", "").split("\n")[0] or None,
        purl=purl,
        bom_ref=purl.to_string(),
    )


def site_packages(root: Path, venv: str) -> Path:
    found = sorted((root / venv.lstrip("/")).glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise SystemExit(f"sbom.py: expected one lib/python3*/site-packages under {venv}, found {len(found)}")
    return found[0]


def python_component(dist: Distribution) -> Component:
    name = dist.metadata["Name"]
    purl = PackageURL(type="pypi", name=canonicalize_name(name), version=dist.version)
    declared = dist.metadata.get("License-Expression") or dist.metadata.get("License") or ""
    licenses = [LicenseFactory().make_from_string(declared)] if declared and "\n" not in declared else []
    return Component(
        type=ComponentType.LIBRARY,
        name=name,
        version=dist.version,
        description=dist.metadata.get("Summary") or None,
        licenses=licenses,
        purl=purl,
        bom_ref=purl.to_string(),
    )


def image_bom(root: Path, venv: str, name: str, version: str, timestamp: datetime) -> Bom:
    release = os_release(root)
    distro = f"{release.get('ID', 'debian')}-{release.get('VERSION_ID', '')}".rstrip("-")
    components = [debian_component(package, distro) for package in debian_packages(root)]
    components += [python_component(dist) for dist in distributions(path=[str(site_packages(root, venv))])]
    refs = sorted(str(component.bom_ref) for component in components)
    image = Component(type=ComponentType.CONTAINER, name=name, version=version, bom_ref=f"{name}-image")
    content = hashlib.sha256("\n".join(refs).encode()).hexdigest()
    bom = Bom(
        components=components,
        # Unique per content, the same for the same content: the build stays reproducible.
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"{name}:{version}:{content}"),
        metadata=BomMetaData(component=image, timestamp=timestamp, tools=ToolRepository(components=[this_component()])),
    )
    bom.register_dependency(image, components)
    return bom


def render(bom: Bom) -> str:
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        raise SystemExit(f"sbom.py: the SBOM does not validate against CycloneDX 1.6: {errors}")
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sbom.py", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the image's root filesystem, unpacked")
    parser.add_argument("--venv", required=True, help="the virtualenv's path inside the image")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    timestamp = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    text = render(image_bom(args.root, args.venv, args.name, args.version, timestamp))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
