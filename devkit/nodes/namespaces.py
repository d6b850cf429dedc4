"""A node's own view of the machine: network, mount and UTS namespaces held by one process.

trustgate binds a trust report to the node's ``status.nodeInfo.systemUUID`` and ``bootID``,
which the kubelet reads (through cAdvisor) from ``/sys/class/dmi/id/product_uuid`` and
``/proc/sys/kernel/random/boot_id``. Two nodes on one machine would report the same ones, so
each node's processes run in a mount namespace in which per-node files are mounted over them
(and over ``/etc/machine-id``); an agent started in the namespace reads the same identity.
Where the machine has no DMI table at all (a VM without SMBIOS), the namespace gets one by an
overlay on ``/sys/class`` and ``/sys/devices/virtual``. The UTS namespace gives each node its
own hostname.

A few directories that containerd, the CNI plugins and the kubelet use at fixed paths get a
per-node directory mounted over them too, so the nodes do not see each other's files and
nothing is left on the host. Every mount lives only in the namespace: when the node's last
process exits, they are gone.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devkit.nodes.procs import NodeError, Process, run

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MACHINE_ID = Path("/etc/machine-id")
DMI_UUID = Path("/sys/class/dmi/id/product_uuid")
DMI_UUID_DEVICE = Path("/sys/devices/virtual/dmi/id/product_uuid")

#: Fixed paths given a private, per-node directory (created empty on the host if missing).
#: /var/lib/kubelet holds the node's pki/kubelet-client-current.pem, where agents on a kubeadm node
#: find the kubelet's client certificate; /var/lib/trustgate-agent is the trust agent's hostPath state.
PRIVATE_DIRS: tuple[str, ...] = (
    "/run/containerd",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/lib/kubelet",
    "/var/lib/trustgate-agent",
)


@dataclass(frozen=True)
class Identity:
    """What the node's kubelet reports as ``nodeInfo.systemUUID``, ``bootID`` and ``machineID``."""

    system_uuid: str
    boot_id: str

    @property
    def machine_id(self) -> str:
        return self.system_uuid.replace("-", "").lower()


@dataclass
class NodeNamespaces:
    """The namespaces of one node, held open by a ``sleep`` that every component joins."""

    name: str
    netns: str
    workdir: Path
    identity: Identity
    holder: Process | None = field(default=None, repr=False)

    def start(self) -> NodeNamespaces:
        if not Path(f"/run/netns/{self.netns}").exists():
            raise NodeError(f"network namespace {self.netns} does not exist (HostNetwork.add_node first)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            "--",
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "slave",
            "--",
            "sleep",
            "infinity",
        ]
        self.holder = Process.start(f"{self.name} namespaces", argv, self.workdir / "logs" / "namespaces.log")
        own = os.readlink("/proc/self/ns/mnt")

        def unshared() -> bool:
            self.holder.check_running()  # type: ignore[union-attr]
            try:
                pid = self.holder.pid  # type: ignore[union-attr]
                return os.readlink(f"/proc/{pid}/ns/mnt") != own and Path(f"/proc/{pid}/exe").resolve().name == "sleep"
            except OSError:
                return False

        deadline = time.monotonic() + 10
        while not unshared():
            if time.monotonic() > deadline:
                raise NodeError(f"{self.name}: the namespace holder did not start")
            time.sleep(0.02)
        try:
            self._set_up()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        if self.holder is None or not self.holder.running():
            raise NodeError(f"{self.name}: namespaces are not running")
        return self.holder.pid

    def enter(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside the node (its mount, UTS and network namespaces)."""
        return ["nsenter", "-t", str(self.pid), "-m", "-u", "-n", "--", *argv]

    def run(self, argv: Sequence[str], what: str, timeout: float = 60.0) -> str:
        return run(self.enter(argv), f"{self.name}: {what}", timeout=timeout)

    def set_boot_id(self, boot_id: str) -> None:
        """Change the bootID the node's processes read (in place: the mount shows this inode)."""
        (self.workdir / "identity" / "boot_id").write_text(boot_id + "\n")
        self.identity = Identity(self.identity.system_uuid, boot_id)
        seen = self.run(["cat", str(BOOT_ID)], "reading the boot_id back").strip()
        if seen != boot_id:
            raise NodeError(f"{self.name}: the namespace shows boot_id {seen}, not {boot_id}")

    def stop(self) -> None:
        if self.holder is not None:
            self.holder.stop(grace=0)
            self.holder = None

    # ---- set-up -------------------------------------------------------------------------

    def _set_up(self) -> None:
        ident = self.workdir / "identity"
        ident.mkdir(parents=True, exist_ok=True)
        self.run(["hostname", self.name], "setting the hostname")
        boot_id = ident / "boot_id"
        boot_id.write_text(self.identity.boot_id + "\n")
        self._bind(boot_id, BOOT_ID)
        if MACHINE_ID.exists():
            machine_id = ident / "machine-id"
            machine_id.write_text(self.identity.machine_id + "\n")
            self._bind(machine_id, MACHINE_ID)
        self._set_system_uuid(ident)
        for target in PRIVATE_DIRS:
            if not Path(target).is_dir():
                raise NodeError(f"{target} is missing on the host (HostNetwork.up() makes it)")
            private = self.workdir / "private" / target.strip("/").replace("/", "-")
            private.mkdir(parents=True, exist_ok=True)
            self._bind(private, Path(target))
        self._verify()

    def _set_system_uuid(self, ident: Path) -> None:
        uuid_file = ident / "product_uuid"
        uuid_file.write_text(self.identity.system_uuid + "\n")
        if DMI_UUID.exists():
            self._bind(uuid_file, DMI_UUID.resolve())
            if DMI_UUID_DEVICE.exists() and DMI_UUID_DEVICE.resolve() != DMI_UUID.resolve():
                self._bind(uuid_file, DMI_UUID_DEVICE)
            return
        # No DMI on this machine: lay one over sysfs, as a real machine has it
        # (/sys/class/dmi/id -> ../../devices/virtual/dmi/id). The upper directories are
        # filled before the overlays are mounted (overlayfs forbids changing them after).
        devices = ident / "sys-devices-virtual"
        (devices / "upper" / "dmi" / "id").mkdir(parents=True, exist_ok=True)
        (devices / "upper" / "dmi" / "id" / "product_uuid").write_text(self.identity.system_uuid + "\n")
        classes = ident / "sys-class"
        (classes / "upper" / "dmi").mkdir(parents=True, exist_ok=True)
        link = classes / "upper" / "dmi" / "id"
        if not link.is_symlink():
            link.symlink_to("../../devices/virtual/dmi/id")
        self._overlay(Path("/sys/devices/virtual"), devices)
        self._overlay(Path("/sys/class"), classes)

    def _overlay(self, lower: Path, base: Path) -> None:
        """Mount an overlay of ``base/upper`` on ``lower`` in the namespace."""
        upper, work = base / "upper", base / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}",
                str(lower),
            ],
            f"overlay on {lower}",
        )

    def _bind(self, source: Path, target: Path) -> None:
        self.run(["mount", "--bind", str(source), str(target)], f"mounting {source} on {target}")

    def _verify(self) -> None:
        read = self.run(["cat", str(DMI_UUID), str(BOOT_ID)], "reading the identity back").split()
        want = [self.identity.system_uuid, self.identity.boot_id]
        if read != want:
            raise NodeError(f"{self.name}: the namespace shows identity {read}, not {want}")
        host = subprocess.run(["cat", str(BOOT_ID)], capture_output=True, text=True).stdout.strip()
        if host == self.identity.boot_id:
            raise NodeError(f"{self.name}: boot_id {host} is the host's own; give the node its own")
