"""Files and directories at fixed places under an object's directory, declared one per line.

A node's or a control plane's layout is a list of names under one directory; each entry reads as a
`Path` attribute, the way a property would, without a property's four lines of code per name.

    class Layout:
        root: Path
        config = Under("etc", "config.yaml")      # layout.config == layout.root / "etc" / "config.yaml"
"""

from __future__ import annotations

from pathlib import Path
from typing import overload


class Under:
    """A path `parts` below the directory an instance holds in its attribute `base`."""

    def __init__(self, *parts: str, base: str = "root") -> None:
        self.parts = parts
        self.base = base

    @overload
    def __get__(self, instance: None, owner: type) -> Under: ...

    @overload
    def __get__(self, instance: object, owner: type) -> Path: ...

    def __get__(self, instance: object | None, owner: type) -> Under | Path:
        if instance is None:
            return self
        return Path(getattr(instance, self.base)).joinpath(*self.parts)
