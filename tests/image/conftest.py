"""One image build (image/build.sh, into a temporary directory) and its runc bundle for the image tests."""

from __future__ import annotations

import pytest

from .image_support import Build, Runc, build, require_build_prerequisites


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Build:
    require_build_prerequisites()
    return build(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def runc(image: Build, tmp_path_factory: pytest.TempPathFactory) -> Runc:
    return Runc(image, tmp_path_factory.mktemp("runc"))
