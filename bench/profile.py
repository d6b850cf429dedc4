"""Summaries of py-spy profiles (`py-spy record --format raw`: one `frame;frame;... count` line per stack).

`python -m bench.profile FILE...` prints, for each file, where the samples went: the functions that
were on the CPU (leaf frames, "self") and the project's own functions with everything they called
("total"), as shares of all samples.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

PROJECT = ("extender/", "webhook/", "trustgate/")


def _frames(stack: str) -> list[str]:
    return [frame for frame in stack.split(";") if frame]


def _short(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `function (module.py)`, keeping the package for our code."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for package in PROJECT:
        if package in path:
            return f"{name} ({package}{path.split(package, 1)[1]})"
    return f"{name} ({Path(path).name})" if path else name


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        leaf[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames if any(p in f for p in PROJECT)}:
            inclusive[frame] += count
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "file": str(path),
        "samples": total,
        "self_percent": [(frame, share(n)) for frame, n in leaf.most_common(top)],
        "project_total_percent": [(frame, share(n)) for frame, n in inclusive.most_common(top)],
    }


def main(argv: list[str]) -> int:
    for name in argv:
        result = summarize(Path(name))
        print(f"{name}: {result['samples']} samples")
        print("  self:")
        for frame, percent in result["self_percent"]:
            print(f"    {percent:5.1f}%  {frame}")
        print("  project code, total:")
        for frame, percent in result["project_total_percent"]:
            print(f"    {percent:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
