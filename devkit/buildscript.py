"""Running one of the kit's build scripts (bash, cached builds): progress to stderr, the result path last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_build_script(script: Path) -> tuple[int, str]:
    """Run `script`, echoing its output to stderr; its exit code and the last line it printed (where the
    build scripts print the directory they built or found)."""
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:
        sys.stderr.write(line)
        sys.stderr.flush()
        last = line.strip() or last
    return proc.wait(), last


def build(script: Path, allowed: bool, error: type[Exception], not_built: str) -> Path:
    """The path `script` prints last, once it has run: what a kit function returns when its cache is
    incomplete. Raises `error`, with `not_built` when building is not `allowed` (only the cache may be
    consulted), or with the exit code when the script failed."""
    if not allowed:
        raise error(not_built)
    rc, last = run_build_script(script)
    if rc != 0:
        raise error(f"{script} failed with exit code {rc} (see its output above)")
    return Path(last)
