"""Dependencies point down: the pure core imports no I/O library and nothing above it; the shared library
imports no service; the product imports no development tooling. `trustctl` (trustgate/cli) is an
application on top, like the services."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("extender", "webhook", "controller", "attestation", "agent", "keybroker", "keyprovider")
# What reaches the network, files, processes, threads or the clock of a server: never in the core.
IO_MODULES = {
    "socket", "ssl", "http", "urllib", "requests", "subprocess", "threading", "asyncio", "multiprocessing",
    "pathlib", "shutil", "tempfile", "io", "os", "logging", "sqlite3",
    "kubernetes", "flask", "werkzeug", "gunicorn", "prometheus_client",
}  # fmt: skip


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("trustgate/core"), ids=lambda p: p.name)
def test_the_core_imports_no_io_library_and_nothing_above_it(path: Path) -> None:
    found = imports(path)
    assert not {name for name in found if name.split(".")[0] in IO_MODULES}, f"{path.name} does I/O"
    above = {name for name in found if name.startswith("trustgate.") and not name.startswith("trustgate.core")}
    assert not above, f"{path.name} imports {above}"


LIBRARY = [p for p in modules("trustgate") if "cli" not in p.relative_to(ROOT).parts]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_shared_library_imports_no_service_and_no_development_tooling(path: Path) -> None:
    roots = {name.split(".")[0] for name in imports(path)}
    assert not roots & {*SERVICES, "devkit", "bench", "tests"}


@pytest.mark.parametrize("package", [*SERVICES, "trustgate/cli"])
def test_no_application_imports_development_tooling(package: str) -> None:
    for path in modules(package):
        assert not {name.split(".")[0] for name in imports(path)} & {"devkit", "bench", "tests"}, path
