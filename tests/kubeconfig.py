"""A kubeconfig naming an API server that is not there: a service under test starts, its cluster never answers."""

from __future__ import annotations

import json
from pathlib import Path


def write_unreachable_kubeconfig(path: Path, server: str) -> Path:
    """A token-authenticated kubeconfig for `server` (a port nothing listens on), written as JSON (which is YAML)."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": server}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    return path
