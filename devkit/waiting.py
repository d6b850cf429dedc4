"""Waiting for the cluster to converge: controllers, caches and agents act asynchronously."""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_ready(process: subprocess.Popen[Any] | None, url: str, cafile: Path, what: str, timeout: float) -> None:
    """Wait until the server `process` runs answers 200 on `url`/readyz over TLS (verified with `cafile`),
    failing at once if it exits: a server that cannot start says so instead of timing out."""
    context = ssl.create_default_context(cafile=str(cafile))

    def ready() -> bool:
        assert process is not None and process.poll() is None, f"{what} exited"
        try:
            with urllib.request.urlopen(f"{url}/readyz", context=context, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    eventually(ready, f"{what} to be ready", timeout=timeout)
