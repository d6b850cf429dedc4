"""One stack of real nodes per host network namespace at a time.

The node bridge and its addresses, the routes to the pod and Service CIDRs and the host kube-proxy's
nftables tables belong to the host's network namespace: a second stack brought up beside a first one
takes them over and the first one dies. ``NodeStack.up()`` therefore holds a lock until ``down()``:
the abstract Unix socket :data:`LOCK_NAME`, which exists once per network namespace and goes with its
holder however it ends. It waits (saying so) while another stack holds it, or while node processes of
a stack that takes no lock are still run by a live parent in the same network namespace, or while a stack
of the version before holds its file lock :data:`FILE_LOCK` (an ``flock``, held here too, so that both
versions exclude each other on a machine where both run). A stack in
a network namespace of its own (`unshare --net --mount`) shares none of that with the host's; node
names, and so the nodes' cgroup roots, stay machine-wide: give such stacks names of their own.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devkit.nodes.kit import NodeKit
from devkit.nodes.network import HostNetwork, link_exists
from devkit.nodes.procs import NodeError

LOCK_NAME = "trustgate-nodes"
FILE_LOCK = Path("/run/trustgate-nodes.lock")


def _run_from_here(pid: int) -> bool:
    """A node process whose parent still runs it (its stack is up, not an orphan of a killed run), from
    this network namespace (the host of that stack is this one)."""
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        here = os.readlink("/proc/self/ns/net") == os.readlink(f"/proc/{ppid}/ns/net")
        return ppid > 1 and here and "python" in Path(os.readlink(f"/proc/{ppid}/exe")).name
    except (OSError, IndexError, ValueError):
        return False


def foreign_node_processes(kit: NodeKit, gateway: str) -> list[int]:
    """The kubelets, containerds, kube-proxies and bridge-bound API server of another live stack (one that
    holds no lock); they stop in that order, before its network goes."""
    binaries = {str(kit.kubelet), str(kit.containerd), str(kit.kube_proxy)}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            exe = os.readlink(entry / "exe")
            ours = exe in binaries or (
                exe.endswith("/kube-apiserver")
                and f"--bind-address={gateway}".encode() in (entry / "cmdline").read_bytes()
            )
        except OSError:
            continue
        if ours and _run_from_here(int(entry.name)):
            found.append(int(entry.name))
    return found


@dataclass
class HostLock:
    kit: NodeKit
    owner: str
    network: HostNetwork
    timeout: float = 3600.0
    file_lock: Path = FILE_LOCK
    _sock: socket.socket | None = field(default=None, repr=False)
    _fd: int = field(default=-1, repr=False)

    def acquire(self) -> HostLock:
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind("\0" + LOCK_NAME)
            except OSError:
                sock.close()
                holder = f"another stack holds @{LOCK_NAME} (ss -xlp | grep {LOCK_NAME})"
            else:
                others = foreign_node_processes(self.kit, self.network.gateway)
                fd = self._lock_file() if not others else -1
                if fd >= 0:
                    self._sock, self._fd = sock, fd
                    self._let_a_teardown_finish()
                    return self
                sock.close()
                holder = (
                    f"processes {others} of a stack that takes no lock"
                    if others
                    else f"a stack of the version before holds {self.file_lock} (fuser {self.file_lock})"
                )
            if time.monotonic() > deadline:
                raise NodeError(f"another node stack is still up after {self.timeout:.0f}s: {holder}")
            if not told:
                print(f"{self.owner}: waiting for another node stack to go down: {holder}", file=sys.stderr, flush=True)
                told = True
            time.sleep(2)

    def _let_a_teardown_finish(self, grace: float = 15.0) -> None:
        """A stack that takes no lock removes its bridge last, right after its API server: give it that moment
        (a bridge still there after it is left over from a run killed outright, and is taken over)."""
        deadline = time.monotonic() + grace
        while link_exists(self.network.bridge) and time.monotonic() < deadline:
            time.sleep(0.5)

    def _lock_file(self) -> int:
        """The flock of :data:`FILE_LOCK`, or -1 while another process holds it."""
        fd = os.open(self.file_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return -1
        return fd

    def release(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the flock
