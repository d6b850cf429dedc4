"""Supervising the control plane's processes: pid files another process can act on, stopping, free ports.

Components run in their own sessions so that they outlive the process that started them (``make
dev-up``); ``<workdir>/pids.json`` records them with their start times, so that ``make dev-down`` (or
any later process) stops exactly them and never a recycled pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from devkit.subprocesses import stat_fields

#: Start order; stop order is the reverse.
COMPONENTS: tuple[str, ...] = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (sockets held open together, so no duplicates)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def proc_start_time(pid: int) -> str | None:
    """Process start time (clock ticks since boot) from /proc, to detect pid reuse."""
    fields = stat_fields(pid)
    return None if fields is None else fields[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    fields = stat_fields(pid)
    return fields is None or fields[0] != "Z"


def terminate_pid(pid: int, grace: float, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""

    def alive() -> bool:
        if popen is not None:
            return popen.poll() is None
        return _pid_alive(pid)

    if not alive():
        return
    try:
        os.kill(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive():
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if popen is not None:
        popen.wait(timeout=10)
    else:
        deadline = time.monotonic() + 10
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def recorded_running(workdir: Path | str) -> list[str]:
    """Names of the components recorded in ``<workdir>/pids.json`` that are still running."""
    try:
        recorded: dict[str, dict[str, Any]] = json.loads((Path(workdir) / "pids.json").read_text())
    except (OSError, ValueError):
        return []
    return [
        name
        for name, entry in recorded.items()
        if proc_start_time(int(entry["pid"])) == entry.get("start_time") and _pid_alive(int(entry["pid"]))
    ]


def stop_recorded(workdir: Path | str, grace: float = 5.0) -> list[str]:
    """Stop the components recorded in ``<workdir>/pids.json`` (e.g. from another process).

    A pid is only signalled if its process start time still matches the recorded one, so a
    recycled pid is never killed. Returns the names of the components that were stopped.
    """
    pids_file = Path(workdir) / "pids.json"
    try:
        recorded: dict[str, dict[str, Any]] = json.loads(pids_file.read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    for name in reversed(COMPONENTS):
        entry = recorded.get(name)
        if not entry:
            continue
        pid = int(entry["pid"])
        if proc_start_time(pid) != entry.get("start_time"):
            continue  # already gone, or the pid now belongs to someone else
        terminate_pid(pid, grace)
        stopped.append(name)
    pids_file.unlink(missing_ok=True)
    return stopped
