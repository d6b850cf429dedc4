"""What real nodes could leave on the host; the tests assert there is none after teardown."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from devkit.nodes import cgroups
from devkit.nodes.kit import NodeKit
from devkit.nodes.network import GUARD_TABLE, HostNetwork
from devkit.nodes.procs import run


def leftovers(network: HostNetwork, node_names: Iterable[str], kit: NodeKit, workdir: Path) -> list[str]:
    """Processes, network namespaces, links, routes, nftables tables, cgroups and mounts left over."""
    found: list[str] = []
    names = list(node_names)
    binaries = {str(p) for p in (kit.kubelet, kit.kube_proxy, kit.containerd, kit.containerd_shim)}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                exe = os.readlink(entry / "exe")
            except OSError:
                continue
            if exe in binaries:
                found.append(f"process {entry.name} ({exe})")
    for name in names:
        addr = network.address(name, 1)
        if Path(f"/run/netns/{addr.netns}").exists():
            found.append(f"network namespace {addr.netns}")
        if any(h.joinpath(f"trustgate-{name}").exists() for h in cgroups.hierarchies()):
            found.append(f"cgroup /trustgate-{name}")
    links = [line.split(":")[1].strip() for line in run(["ip", "-o", "link"], "ip link").splitlines()]
    ours = [link for link in links if _of_these_nodes(link.split("@")[0], network.bridge, names)]
    if ours:
        found.append("links: " + ", ".join(ours))
    routes = run(["ip", "route"], "ip route")
    found += [f"route {line}" for line in routes.splitlines() if network.bridge in line]
    tables = run(["nft", "list", "tables"], "nft list tables")
    found += [f"nftables {t}" for t in tables.splitlines() if GUARD_TABLE in t or "kube-proxy" in t]
    root = str(Path(workdir).resolve())
    found += [
        f"mount {line.split()[1]}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(root)
    ]
    return found


def _of_these_nodes(link: str, bridge: str, names: list[str]) -> bool:
    """The bridge, or the host end of one of these nodes' veths (``tgv<index>-<name>``, at most 15
    characters): another run's nodes, in a namespace of their own, are not this stack's leftovers."""
    if link == bridge:
        return True
    index = link.partition("-")[0]
    return index.startswith("tgv") and index[3:].isdigit() and any(f"{index}-{n}"[:15] == link for n in names)
