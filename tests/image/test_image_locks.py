"""The image's lock files, without building the image: every Python pin hash-checked and within
pyproject.toml's bounds, every wanted Debian package locked, each lock saying how to regenerate it."""

from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .image_support import IMAGE_DIR, PYPROJECT, read_debian_lock, read_pins

PYTHON_LOCKS = ("requirements.lock", "pip.lock", "tools.lock")


def test_every_python_pin_has_hashes() -> None:
    for name in PYTHON_LOCKS:
        text = (IMAGE_DIR / name).read_text()
        entries = re.split(r"\n(?=[a-z0-9])", text.split("\n", 1)[1], flags=re.IGNORECASE)
        pinned = [entry for entry in entries if "==" in entry.split("\n", 1)[0]]
        assert pinned, f"{name} pins nothing"
        unhashed = [entry.split()[0] for entry in pinned if "--hash=sha256:" not in entry]
        assert not unhashed, f"{name}: no hashes for {unhashed}"
        assert "make image-lock" in text, f"{name} does not say how to regenerate it"


def test_requirements_lock_meets_pyproject() -> None:
    pins = read_pins(IMAGE_DIR / "requirements.lock")
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} of pyproject.toml is not in image/requirements.lock: make image-lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
    test_only = {canonicalize_name(Requirement(t).name) for t in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert not test_only & set(pins), "test tools in the image's lock"


def test_pip_lock_is_pip_alone() -> None:
    assert set(read_pins(IMAGE_DIR / "pip.lock")) == {"pip"}


def test_debian_lock_covers_the_wanted_packages() -> None:
    lock = IMAGE_DIR / "debian.lock"
    assert re.search(r"^# SOURCE_DATE_EPOCH \d+$", lock.read_text(), flags=re.MULTILINE)
    wanted = (IMAGE_DIR / "packages.txt").read_text()
    names = {word for line in wanted.splitlines() for word in line.partition("#")[0].split()}
    locked = read_debian_lock(lock)
    assert names <= set(locked), f"not in image/debian.lock: {sorted(names - set(locked))}"
    assert all(locked.values()), "a package without a version in image/debian.lock"
