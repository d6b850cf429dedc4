"""Encrypted-image patterns match an image however its reference is written."""

from __future__ import annotations

import pytest

from trustgate.core.images import matches, normalize


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("acme/app", "docker.io/acme/app"),
        ("index.docker.io/acme/app", "docker.io/acme/app"),
        ("REGISTRY.example/secure/app:1", "registry.example/secure/app:1"),
        ("localhost/app", "localhost/app"),
        ("registry.example:5000/secure/app@sha256:abc", "registry.example:5000/secure/app@sha256:abc"),
    ],
)
def test_references_normalize_as_container_runtimes_resolve_them(reference: str, expected: str) -> None:
    assert normalize(reference) == expected


@pytest.mark.parametrize(
    "image",
    [
        "registry.example/secure/app:1.0",
        "REGISTRY.example/secure/app:1.0",
        "Registry.Example/secure/app@sha256:0123",
    ],
)
def test_a_registry_pattern_matches_whatever_the_case_of_the_registry_host(image: str) -> None:
    assert matches(image, "registry.example/secure/*")


@pytest.mark.parametrize("image", ["secret-model", "library/secret-model:2", "docker.io/library/secret-model"])
def test_a_docker_hub_pattern_matches_short_and_qualified_forms(image: str) -> None:
    assert matches(image, "docker.io/library/secret-model*")
    assert matches(image, "secret-model*")


def test_an_untagged_image_matches_a_pattern_for_its_latest_tag() -> None:
    assert matches("registry.example/secure/app", "registry.example/secure/app:latest")


@pytest.mark.parametrize(
    "image", ["registry.example/public/app:1", "other.example/secure/app:1", "secure/app", "nginx:1.27"]
)
def test_other_images_do_not_match(image: str) -> None:
    assert not matches(image, "registry.example/secure/*")
