"""The kit's child processes: stopped for certain, the tail of their logs, their state in /proc.

The control plane's components, a node's daemons and the emulated hosts' TPMs, agents and servers
are all stopped, diagnosed and checked for the same way.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any


def stop(process: subprocess.Popen[Any] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaped either way, so no zombie is left behind."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log, for an error that says why a process failed."""
    try:
        data = path.read_bytes()[-64 * 1024 :].decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, which may hold spaces and parentheses:
    [0] is the state ("Z" for a zombie), [19] the start time. None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
