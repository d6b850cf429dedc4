"""The network the worker nodes live on: a host bridge, one network namespace per node.

Each node gets a network namespace joined to the host bridge by a veth pair, so every node has
its own address and its own ports (two kubelets both on :10250) and its own netfilter tables
(each node's kube-proxy). Pod traffic is routed, never NATed: the host has a route to each
node's pod CIDR via that node's address, and each node's default route is the host, so the
apiserver on the host reaches pods and kubelets, and pods on one node reach pods on another.

Forwarding is switched on for the host, and a small nftables table keeps it to the bridge:
nothing from a node namespace is forwarded out of the machine, and nothing from outside is
forwarded in. The kubelets change a few machine-wide sysctls (:data:`KUBELET_SYSCTLS`); those
and forwarding are recorded before the first node and set back when the network goes down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.nodes.namespaces import PRIVATE_DIRS
from devkit.nodes.procs import NodeError, kill_pids, run

FORWARD_KEY = "net/ipv4/ip_forward"
FORWARD_SYSCTL = Path("/proc/sys", FORWARD_KEY)
GUARD_TABLE = "trustgate-nodes"
NETNS_DIR = Path("/run/netns")


def host_netns_id() -> str:
    """This process's network namespace (its inode): the host of the nodes, its sysctls and its bridge."""
    return os.readlink("/proc/self/ns/net").split("[", 1)[1].rstrip("]")


#: The host as it was before the first node (sysctls, directories that did not exist), kept
#: until down() has put it back, so a run killed outright leaves the originals to the next one.
SAVED_STATE = Path(f"/run/trustgate-nodes-host-state-{host_netns_id()}.json")
#: Machine-wide sysctls every kubelet sets at start (its "kernel tunables"); set back by down().
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


@dataclass(frozen=True)
class NodeAddress:
    """A node's place on the network."""

    name: str
    index: int
    ip: str
    pod_cidr: str
    netns: str
    host_veth: str


@dataclass
class HostNetwork:
    """The host side: bridge ``bridge`` with ``gateway`` in ``node_cidr``; pods in ``cluster_cidr``.

    Node ``i`` (from 1) gets the ``i + 10``-th address of ``node_cidr`` and the ``i``-th /24
    of ``cluster_cidr``. ``service_cidr`` is routed to the bridge so the host picks the bridge
    address as the source of its connections to ClusterIPs (the host's kube-proxy DNATs them).
    """

    bridge: str = "tgnodes0"
    node_cidr: str = "172.30.0.0/24"
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.0.0.0/24"
    _up: bool = field(default=False, repr=False)

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.node_cidr)[1])

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.node_cidr).prefixlen

    def address(self, name: str, index: int) -> NodeAddress:
        if not 1 <= index <= 200:
            raise ValueError(f"node index {index} out of range 1..200")
        net = ipaddress.ip_network(self.node_cidr)
        pods = list(ipaddress.ip_network(self.cluster_cidr).subnets(new_prefix=24))[index]
        return NodeAddress(
            name=name,
            index=index,
            ip=str(net[10 + index]),
            pod_cidr=str(pods),
            netns=f"trustgate-{name}"[:64],
            host_veth=f"tgv{index}-{name}"[:15],
        )

    # ---- host side --------------------------------------------------------------------

    def up(self) -> HostNetwork:
        """Create the bridge, turn on forwarding, install the guard table. Idempotent."""
        if not link_exists(self.bridge):
            run(["ip", "link", "add", self.bridge, "type", "bridge"], "creating the node bridge")
        addr = f"{self.gateway}/{self.prefix_len}"
        if addr not in run(["ip", "-o", "-4", "addr", "show", "dev", self.bridge]):
            run(["ip", "addr", "add", addr, "dev", self.bridge], "addressing the node bridge")
        run(["ip", "link", "set", self.bridge, "up"], "bringing up the node bridge")
        run(
            ["ip", "route", "replace", self.service_cidr, "dev", self.bridge, "src", self.gateway],
            "routing the Service CIDR to the node bridge",
        )
        state = _load_state()
        if state is None:
            sysctls = {key: Path("/proc/sys", key).read_text().strip() for key in (FORWARD_KEY, *KUBELET_SYSCTLS)}
            state = {"sysctls": sysctls, "made_dirs": []}
        # Mount points of the nodes' private directories (and ip netns's own directory):
        # made here, before any node, and removed again by down(), after the last node.
        for d in (NETNS_DIR, *map(Path, PRIVATE_DIRS)):
            missing = [p for p in (d, *d.parents) if not p.exists()]
            state["made_dirs"] += [str(p) for p in sorted(missing, key=lambda p: len(p.parts))]
        SAVED_STATE.write_text(json.dumps(state, indent=1) + "\n")
        for d in (NETNS_DIR, *map(Path, PRIVATE_DIRS)):
            d.mkdir(parents=True, exist_ok=True)
        FORWARD_SYSCTL.write_text("1\n")
        self._install_guard()
        self._up = True
        return self

    def down(self) -> None:
        """Remove the bridge, its routes and the guard table; sysctls and directories go back as they were."""
        errors: list[str] = []
        for cmd in (
            ["nft", "delete", "table", "inet", GUARD_TABLE],
            ["ip", "route", "del", self.service_cidr, "dev", self.bridge],
            ["ip", "link", "del", self.bridge],
        ):
            try:
                run(cmd, check=False)
            except NodeError as e:
                errors.append(str(e))
        self._up = False
        if link_exists(self.bridge):
            errors.append(f"bridge {self.bridge} is still there")
        state = _load_state()
        if state is not None:
            for key, value in state["sysctls"].items():
                Path("/proc/sys", key).write_text(value + "\n")
            in_use = mount_points_elsewhere()
            for d in map(Path, reversed(state["made_dirs"])):
                if d == NETNS_DIR and d.is_dir() and not any(d.iterdir()):
                    run(["umount", str(d)], check=False)  # ip netns makes it a shared mount point
                if str(d) in in_use:
                    continue  # another stack's nodes (in a network namespace of their own) have it mounted
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    errors.append(f"{d}, made for the nodes, cannot be removed: {e}")
            SAVED_STATE.unlink()
        if errors:
            raise NodeError("host network teardown: " + "; ".join(errors))

    def _install_guard(self) -> None:
        rules = f"""
table inet {GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname "{self.bridge}" oifname "{self.bridge}" accept
    iifname "{self.bridge}" drop
    oifname "{self.bridge}" drop
  }}
}}
"""
        run(["nft", "delete", "table", "inet", GUARD_TABLE], check=False)
        _nft(rules, "installing the node forwarding guard")

    # ---- per node ---------------------------------------------------------------------

    def add_node(self, node: NodeAddress) -> None:
        """The node's network namespace, its veth pair to the bridge, and routes both ways."""
        if not self._up:
            raise NodeError("the host network is not up (HostNetwork.up() first)")
        self.remove_node(node)  # leftovers of a run that was killed
        run(["ip", "netns", "add", node.netns], f"creating network namespace {node.netns}")
        run(
            ["ip", "link", "add", node.host_veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns],
            f"creating the veth pair of {node.name}",
        )
        run(["ip", "link", "set", node.host_veth, "master", self.bridge, "up"], f"attaching {node.host_veth}")
        inside = ["ip", "netns", "exec", node.netns]
        run([*inside, "ip", "link", "set", "lo", "up"], f"lo in {node.netns}")
        run([*inside, "ip", "addr", "add", f"{node.ip}/{self.prefix_len}", "dev", "eth0"], f"address of {node.name}")
        run([*inside, "ip", "link", "set", "eth0", "up"], f"eth0 in {node.netns}")
        run([*inside, "ip", "route", "add", "default", "via", self.gateway], f"default route of {node.name}")
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),  # kube-proxy sees bridged pod-to-pod traffic
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
        ):
            run([*inside, "sh", "-c", f"echo {value} > /proc/sys/{key}"], f"sysctl {key} in {node.netns}")
        run(
            ["ip", "route", "replace", node.pod_cidr, "via", node.ip, "dev", self.bridge],
            f"host route to the pods of {node.name}",
        )

    def remove_node(self, node: NodeAddress) -> None:
        """Undo ``add_node``; kills whatever still runs in the namespace. Safe to repeat."""
        run(["ip", "route", "del", node.pod_cidr], check=False)
        if (NETNS_DIR / node.netns).exists():
            pids = run(["ip", "netns", "pids", node.netns], check=False).split()
            if pids:
                kill_pids([int(p) for p in pids], grace=2.0)
            run(["ip", "netns", "del", node.netns], f"deleting network namespace {node.netns}")
        # Deleting the namespace deletes the veth pair too, a moment later (asynchronously).
        run(["ip", "link", "del", node.host_veth], check=False)
        deadline = time.monotonic() + 10
        while link_exists(node.host_veth):
            if time.monotonic() > deadline:
                raise NodeError(f"{node.host_veth} of {node.name} is still there 10 s after its namespace was deleted")
            time.sleep(0.05)


def mount_points_elsewhere() -> set[str]:
    """Mount points in the mount namespaces of other processes: removing one would detach it there."""
    own = os.readlink("/proc/self/ns/mnt")
    seen, found = {own}, set()
    for entry in Path("/proc").iterdir():
        try:
            ns = os.readlink(entry / "ns" / "mnt") if entry.name.isdigit() else own
            if ns in seen:
                continue
            seen.add(ns)
            found |= {line.split()[4] for line in (entry / "mountinfo").read_text().splitlines()}
        except (OSError, IndexError):
            continue
    return found


def original_sysctls() -> dict[str, str]:
    """The host sysctls nodes change, as they were before any node (also after a killed run)."""
    state = _load_state()
    if state is not None:
        return dict(state["sysctls"])
    return {key: Path("/proc/sys", key).read_text().strip() for key in (FORWARD_KEY, *KUBELET_SYSCTLS)}


def _load_state() -> dict[str, Any] | None:
    try:
        return json.loads(SAVED_STATE.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def link_exists(name: str) -> bool:
    """Asked over netlink: /sys/class/net shows the links of the namespace sysfs was mounted in."""
    done = subprocess.run(["ip", "-o", "link", "show", "dev", name], capture_output=True, stdin=subprocess.DEVNULL)
    return done.returncode == 0


def _nft(ruleset: str, what: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True)
    if done.returncode != 0:
        raise NodeError(f"{what}: nft -f failed: {done.stderr.strip()}")
