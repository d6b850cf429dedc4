"""Long-running node processes: started with their output in a log, stopped for certain."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devkit.subprocesses import stat_fields, tail


class NodeError(RuntimeError):
    """A node (or the host network for nodes) could not be set up, or a component failed."""


def run(argv: Sequence[str], what: str | None = None, timeout: float = 60.0, check: bool = True) -> str:
    """Run a short command; on failure raise NodeError with its output, naming ``what`` it was for."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise NodeError(f"{what or argv[0]}: {argv[0]} not found ({e})") from None
    except subprocess.TimeoutExpired:
        raise NodeError(f"{what or argv[0]}: {' '.join(argv)} did not finish in {timeout:.0f}s") from None
    if check and done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise NodeError(f"{what or argv[0]}: `{' '.join(argv)}` exited with {done.returncode}: {output}")
    return done.stdout


def pid_alive(pid: int) -> bool:
    """True for a running process (a zombie counts as gone)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def find_pids(exe: Path, arg_suffix: str) -> list[int]:
    """Processes of ``exe`` in this network namespace with an argument ending in ``arg_suffix``."""
    own_net = os.readlink("/proc/self/ns/net")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "exe") != str(exe) or os.readlink(entry / "ns" / "net") != own_net:
                continue
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace").endswith(arg_suffix) for a in args):
            found.append(int(entry.name))
    return found


def kill_pids(pids: Sequence[int], grace: float) -> None:
    """SIGTERM (when ``grace`` > 0), then SIGKILL whatever is left after ``grace`` seconds."""
    sig = signal.SIGTERM if grace > 0 else signal.SIGKILL
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)


@dataclass
class Process:
    """One component of a node, e.g. its kubelet, with stdout and stderr in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            f.write(f"\n=== starting: {' '.join(argv)}\n".encode())
            f.flush()
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # a Ctrl-C meant for the caller does not reach the node
                )
            except OSError as e:
                raise NodeError(f"cannot start {name} ({argv[0]}): {e}") from None
        return cls(name, popen, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def check_running(self) -> None:
        if not self.running():
            raise NodeError(
                f"{self.name} exited with code {self.popen.returncode}\n--- {self.log} ---\n{tail(self.log)}"
            )

    def stop(self, grace: float = 10.0) -> None:
        if self.running():
            kill_pids([self.pid], grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def wait_for(
    check: Callable[[], bool], what: str, timeout: float, watch: Sequence[Process] = (), interval: float = 0.2
) -> float:
    """Poll ``check`` until true; fail early when a watched process exits. Returns the seconds waited."""
    start = time.monotonic()
    while True:
        for proc in watch:
            proc.check_running()
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            logs = "".join(f"\n--- {p.log} ---\n{tail(p.log)}" for p in watch)
            raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}{logs}")
        time.sleep(interval)
