"""Pack a root filesystem directory into a single-layer OCI image archive.

No registry can be reached from the test machines, so every image a node runs is built here
and loaded with ``ctr -n k8s.io images import``. The archive is an OCI image layout in a tar
(``oci-layout``, ``index.json``, ``blobs/sha256/...``) as ``ctr images export`` writes it; the
index names the image in both annotations containerd reads (``io.containerd.image.name`` for
the full reference, ``org.opencontainers.image.ref.name`` for the tag). The output is
reproducible: entries are sorted and owned by root with a zero timestamp, so the same files
give the same image digest.

    python3 devkit/nodes/ociarchive.py --rootfs DIR --ref NAME:TAG --out FILE [--entrypoint ...]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a node needs to run the image."""

    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    user: str
    architecture: str = "amd64"
    os: str = "linux"


@dataclass(frozen=True)
class Blob:
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": self.digest, "size": len(self.data)}


def layer_tar(rootfs: Path) -> bytes:
    """The root filesystem as an uncompressed, reproducible tar layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted(p for p in rootfs.rglob("*"))
        for path in paths:
            rel = path.relative_to(rootfs).as_posix()
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.pax_headers = {}
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            elif info.isdir() or info.issym() or info.islnk():
                tar.addfile(info)
            else:
                raise ValueError(f"{path}: only files, directories and links go into an image layer")
    return buf.getvalue()


def _json_blob(obj: object) -> Blob:
    return Blob(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def build_archive(rootfs: Path, ref: str, config: ImageConfig) -> bytes:
    """The OCI image layout tar for ``rootfs`` named ``ref`` (``name:tag``)."""
    if ":" not in ref.rsplit("/", 1)[-1]:
        raise ValueError(f"image reference {ref!r} needs a tag (name:tag)")
    layer = Blob(layer_tar(rootfs))
    image_config: dict[str, object] = {
        "architecture": config.architecture,
        "os": config.os,
        "config": {
            key: value
            for key, value in (
                ("Entrypoint", config.entrypoint),
                ("Cmd", config.cmd),
                ("Env", config.env),
                ("User", config.user),
            )
            if value
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }
    cfg = _json_blob(image_config)
    manifest = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": cfg.descriptor(CONFIG_MEDIA_TYPE),
            "layers": [layer.descriptor(LAYER_MEDIA_TYPE)],
        }
    )
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {
                **manifest.descriptor(MANIFEST_MEDIA_TYPE),
                "platform": {"architecture": config.architecture, "os": config.os},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        ],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index, sort_keys=True).encode())
        add_dir("blobs")
        add_dir("blobs/sha256")
        for blob in (layer, cfg, manifest):
            add("blobs/sha256/" + blob.digest.split(":", 1)[1], blob.data)
    return out.getvalue()


def _check_rootfs(rootfs: Path) -> None:
    if not rootfs.is_dir():
        raise SystemExit(f"ociarchive: {rootfs} is not a directory")
    for path in rootfs.rglob("*"):
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            raise SystemExit(f"ociarchive: {path} is neither a file, a directory nor a symlink")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rootfs", type=Path, required=True)
    ap.add_argument("--ref", required=True, help="full image reference with a tag, e.g. registry.k8s.io/pause:3.10")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--entrypoint", action="append", default=[], help="repeat for each argument")
    ap.add_argument("--cmd", action="append", default=[], help="repeat for each argument")
    ap.add_argument("--env", action="append", default=[], help="NAME=value, repeatable")
    ap.add_argument("--user", default="")
    args = ap.parse_args(argv)
    _check_rootfs(args.rootfs)
    data = build_archive(args.rootfs, args.ref, ImageConfig(args.entrypoint, args.cmd, args.env, args.user))
    tmp = args.out.with_name(args.out.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, args.out)
    print(f"{args.ref}: {args.out} ({len(data)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
