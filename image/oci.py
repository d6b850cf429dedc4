"""Name the image of an OCI layout, as containerd's `ctr images export` does, and describe it.

    python image/oci.py tag LAYOUT --name trustgate --tag 0.1.0
    python image/oci.py digest LAYOUT

`tag` sets the one manifest's org.opencontainers.image.ref.name (the tag, which skopeo's
oci-archive:FILE:TAG and umoci use) and io.containerd.image.name (the full reference, which
`ctr images import` names the image with: docker.io/library/trustgate:0.1.0 for trustgate:0.1.0, the
name kubelet asks for when a pod says image: trustgate:0.1.0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def full_reference(name: str, tag: str) -> str:
    """`name:tag` with the registry and namespace Docker and containerd's CRI assume for a short name."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return f"{name}:{tag}"
    return f"docker.io/{name if rest else 'library/' + name}:{tag}"


def read_index(layout: Path) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    if len(index.get("manifests", [])) != 1:
        raise SystemExit(f"oci.py: {layout}/index.json should list one manifest")
    return index


def tag(layout: Path, name: str, tag: str) -> None:
    index = read_index(layout)
    index["manifests"][0]["annotations"] = {CONTAINERD_NAME: full_reference(name, tag), REF_NAME: tag}
    (layout / "index.json").write_text(json.dumps(index, separators=(",", ":"), sort_keys=True))


def manifest_digest(layout: Path) -> str:
    return str(read_index(layout)["manifests"][0]["digest"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oci.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tagging = commands.add_parser("tag", help="name the layout's image")
    tagging.add_argument("layout", type=Path)
    tagging.add_argument("--name", required=True)
    tagging.add_argument("--tag", required=True)
    digest = commands.add_parser("digest", help="print the image's manifest digest")
    digest.add_argument("layout", type=Path)
    args = parser.parse_args(argv)
    if args.command == "tag":
        tag(args.layout, args.name, args.tag)
    else:
        print(manifest_digest(args.layout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
