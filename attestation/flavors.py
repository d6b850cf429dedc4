"""Flavors: the expected SHA-256 PCR values of one level of the chain of trust, from a known-good host.

A level is trusted when at least one flavor of that level matches every one of its PCRs. A flavor must
pin every PCR of its level (`LEVEL_PCRS`), so no level is judged on part of its measurements. A
flavor may grant asset tags: they come from what the host measured (the flavor's PCRs matched),
never from what the host claims.

Stored as `TrustFlavor` objects (trustgate.dev/v1alpha1, cluster-scoped) or, for tests and simple
set-ups, a YAML/JSON file holding a list of the same objects:

    apiVersion: trustgate.dev/v1alpha1
    kind: TrustFlavor
    metadata: {name: kernel-6-1-0-28}
    spec:
      level: kernel
      pcrs: {"7": "<64 hex>", "8": "<64 hex>", "9": "<64 hex>"}
      assetTags: {}            # optional
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trustgate.cluster.resources import GROUP_VERSION
from trustgate.core.report import LEVELS

LEVEL_PCRS: dict[str, tuple[int, ...]] = {
    "firmware": (0,),
    "boot": (1, 2, 3, 17, 18),
    "bootloader": (4, 5),
    "kernel": (7, 8, 9),
    "runtime": (10,),
}
QUOTED_PCRS: tuple[int, ...] = tuple(sorted(p for pcrs in LEVEL_PCRS.values() for p in pcrs))
assert set(LEVEL_PCRS) == set(LEVELS)


class FlavorError(ValueError):
    pass


@dataclass(frozen=True)
class Flavor:
    name: str
    level: str
    pcrs: Mapping[int, bytes]
    asset_tags: Mapping[str, str] = field(default_factory=dict)

    def mismatches(self, values: Mapping[int, bytes]) -> list[int]:
        return [pcr for pcr, expected in sorted(self.pcrs.items()) if values.get(pcr) != expected]

    def to_object(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"level": self.level, "pcrs": {str(p): v.hex() for p, v in sorted(self.pcrs.items())}}
        if self.asset_tags:
            spec["assetTags"] = dict(self.asset_tags)
        return {
            "apiVersion": GROUP_VERSION,
            "kind": "TrustFlavor",
            "metadata": {"name": self.name},
            "spec": spec,
        }


def flavor_from_object(obj: Mapping[str, Any]) -> Flavor:
    name = str((obj.get("metadata") or {}).get("name") or "")
    spec = obj.get("spec") or {}
    where = f"TrustFlavor {name or '(unnamed)'}"
    if not name:
        raise FlavorError("a TrustFlavor needs metadata.name")
    level = spec.get("level")
    if level not in LEVEL_PCRS:
        raise FlavorError(f"{where}: level must be one of {', '.join(LEVELS)}")
    raw = spec.get("pcrs")
    if not isinstance(raw, Mapping):
        raise FlavorError(f"{where}: spec.pcrs must map PCR numbers to SHA-256 hex values")
    pcrs: dict[int, bytes] = {}
    for key, value in raw.items():
        try:
            pcr, digest = int(key), bytes.fromhex(str(value).removeprefix("0x"))
        except ValueError:
            raise FlavorError(f"{where}: PCR {key!r} = {value!r} is not a PCR number and hex digest") from None
        if len(digest) != 32:
            raise FlavorError(f"{where}: PCR {pcr} is not a 32-byte SHA-256 value")
        pcrs[pcr] = digest
    if sorted(pcrs) != list(LEVEL_PCRS[level]):
        raise FlavorError(
            f"{where}: a {level} flavor must pin exactly PCRs {list(LEVEL_PCRS[level])}, got {sorted(pcrs)}"
        )
    tags = spec.get("assetTags") or {}
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise FlavorError(f"{where}: spec.assetTags must map strings to strings")
    return Flavor(name, level, pcrs, dict(tags))


def flavors_from_values(prefix: str, values: Mapping[int, bytes], levels: Iterable[str] = LEVELS) -> list[Flavor]:
    """One flavor per level from the PCR values of a known-good host (`trustgate-agent flavor`)."""
    return [Flavor(f"{prefix}-{level}", level, {p: values[p] for p in LEVEL_PCRS[level]}) for level in levels]


def load_flavor_file(path: str | Path) -> list[Flavor]:
    documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    objects: list[Any] = []
    for document in documents:
        if isinstance(document, list):
            objects.extend(document)
        elif isinstance(document, Mapping) and document.get("kind") == "List":
            objects.extend(document.get("items") or [])
        else:
            objects.append(document)
    return [flavor_from_object(o) for o in objects]


@dataclass(frozen=True)
class Judgement:
    levels: dict[str, bool]
    asset_tags: dict[str, str]
    matched: dict[str, str]  # level -> flavor name
    reasons: list[str]


def judge(flavors: Iterable[Flavor], values: Mapping[int, bytes]) -> Judgement:
    by_level: dict[str, list[Flavor]] = {level: [] for level in LEVELS}
    for flavor in flavors:
        by_level[flavor.level].append(flavor)
    levels: dict[str, bool] = {}
    tags: dict[str, str] = {}
    matched: dict[str, str] = {}
    reasons: list[str] = []
    for level in LEVELS:
        candidates = sorted(by_level[level], key=lambda f: f.name)
        hit = next((f for f in candidates if not f.mismatches(values)), None)
        levels[level] = hit is not None
        if hit is not None:
            matched[level] = hit.name
            tags.update(hit.asset_tags)
        elif not candidates:
            reasons.append(f"level {level}: no flavor defined")
        else:
            pcrs = sorted({p for f in candidates for p in f.mismatches(values)})
            reasons.append(f"level {level}: PCR {', '.join(map(str, pcrs))} match no {level} flavor")
    return Judgement(levels, tags, matched, reasons)


class FileFlavors:
    """Flavors from a file, re-read when it changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None
        self._flavors: list[Flavor] = []

    def __call__(self) -> list[Flavor]:
        stat = self.path.stat()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            self._flavors, self._stamp = load_flavor_file(self.path), stamp
        return self._flavors
