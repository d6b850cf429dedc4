"""The control plane's own failure, raised by every part of it."""

from __future__ import annotations


class ControlPlaneError(RuntimeError):
    """A component failed to build, start or become ready."""
