"""Encrypted-image patterns match an image however its reference is written."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustgate.core.images import canonical_domain, matches, normalize

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
HUB_HOSTS = ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]


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
        ("registry-1.docker.io/acme/app", "docker.io/acme/app"),
        ("registry.hub.docker.com/library/nginx", "docker.io/library/nginx"),
        ("DOCKER.IO/nginx", "docker.io/library/nginx"),
        ("docker.io:443/nginx", "docker.io/library/nginx"),
        ("registry.example:443/secure/app", "registry.example/secure/app"),
        ("registry.example:0443/secure/app", "registry.example/secure/app"),
        ("registry.example:5000/secure/app", "registry.example:5000/secure/app"),
        ("docker.io:5000/app", "docker.io:5000/app"),  # another port: not Docker Hub
        ("[0:0:0:0:0:0:0:1]:5000/app", "[::1]:5000/app"),
        ("[FC00::1]:443/app", "[fc00::1]/app"),
        ("LOCALHOST:5000/app", "localhost:5000/app"),
        ("nginx:1.27@" + D1, "docker.io/library/nginx:1.27@" + D1),
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


# --- the security review's examples ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "pattern"),
    [
        ("registry.example:443/secret/db:1", "registry.example/secret/*"),
        ("registry-1.docker.io/acme/vault:1", "docker.io/acme/vault*"),
        ("registry.example/secret/db:latest", "registry.example/secret/db"),
        ("registry.example/secret/db:v2", "registry.example/secret/db"),
        ("registry.example/secret/db@" + D1, "registry.example/secret/db"),
        ("docker.io/library/nginx:latest", "nginx"),
    ],
)
def test_the_reviews_examples_match(image: str, pattern: str) -> None:
    assert matches(image, pattern)


# --- registry hosts: case, port 443, IPv6, localhost ---------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "registry.example/secret/db",
        "REGISTRY.EXAMPLE/secret/db:1",
        "Registry.Example:443/secret/db",
        "registry.example:443/secret/db@" + D1,
        "registry.example:0443/secret/db:1",
        "REGISTRY.EXAMPLE:443/secret/db:1@" + D1,
        "registry.example/secret/a/b:1",  # `*` crosses `/`
    ],
)
@pytest.mark.parametrize(
    "pattern",
    [
        "registry.example/secret/*",
        "REGISTRY.EXAMPLE/secret/*",
        "registry.example:443/secret/*",
        "Registry.Example:443/secret/*",
        "*.example/secret/*",
        "*.EXAMPLE/secret/*",
        "registry.*/secret/*",
        "*/secret/*",
        "registry.example:*/secret/*",  # the port as it may be written
        "registry.example/sec?et/*",
        "registry.example/[rs]ecret/*",
    ],
)
def test_a_registry_host_is_case_blind_and_443_is_no_port(image: str, pattern: str) -> None:
    assert matches(image, pattern)


@pytest.mark.parametrize(
    "image",
    [
        "other.example/secret/db:1",
        "registry.example.evil.com/secret/db:1",
        "registry.exampl/secret/db:1",
        "evil.com/registry.example/secret/db:1",
        "mirror.example/registry.example/secret/db:1",
        "registry.example:5000/secret/db:1",
        "registry.example:4430/secret/db:1",
        "registry.example:44/secret/db:1",
        "registry.example/public/db:1",
        "registry.example/secretive/db:1",
        "registry.example/secret",
        "registry.example/public/secret/db:1",
        "secret/db:1",
        "docker.io/secret/db:1",
    ],
)
def test_a_registry_pattern_covers_only_its_registry_and_path(image: str) -> None:
    assert not matches(image, "registry.example/secret/*")
    assert not matches(image, "registry.example:443/secret/*")
    assert not matches(image, "REGISTRY.EXAMPLE/secret/*")


@pytest.mark.parametrize(
    ("image", "pattern", "expected"),
    [
        ("[::1]:5000/x:1", "[::1]:5000/x", True),
        ("[0:0:0:0:0:0:0:1]:5000/x", "[::1]:5000/x", True),
        ("[::1]:5000/x", "[0::1]:5000/x", True),
        ("[::1]/x", "[::1]:443/x", True),
        ("[::1]:443/x@" + D1, "[::1]/x", True),
        ("[FC00::1]:5000/x", "[fc00::1]:5000/*", True),
        ("[fc00::1]:5000/x", "[FC00::1]:5000/x", True),
        ("[::2]:5000/x", "[::1]:5000/x", False),
        ("[::1]:5001/x", "[::1]:5000/x", False),
        ("[::1]/x", "[::1]:5000/x", False),
        ("[::1]:5000/y", "[::1]:5000/x", False),
        ("[::1]:5000/x", "*:5000/x", True),
        ("[::1]:5000/x", "[::1]:*/x", True),  # `[::1]` as a host, not a bracket expression
        ("[::1]:5000/x", "[0::1]:50*", True),
        ("[::1]:5000/x", "*[::1]:5000/x", True),
        ("[::2]:5000/x", "[::1]:*/x", False),
        ("localhost/x:1", "localhost/x", True),
        ("LOCALHOST/x", "localhost/x", True),
        ("localhost:443/x", "localhost/x", True),
        ("localhost:5000/x", "localhost:5000/x", True),
        ("localhost:5000/x", "localhost:5000/*", True),
        ("localhost/x", "localhost:5000/x", False),
        ("localhost:5001/x", "localhost:5000/x", False),
        ("localhost/x", "x", False),  # localhost is a registry, not Docker Hub
        ("x", "localhost/x", False),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x", True),
        ("127.0.0.1:5000/x", "127.0.0.2:5000/x", False),
    ],
)
def test_ipv6_and_localhost_registries(image: str, pattern: str, expected: bool) -> None:
    assert matches(image, pattern) is expected


@pytest.mark.parametrize(
    ("image", "pattern", "expected"),
    [
        # `foo_bar.com` is no domain to the grammar, so Parse keeps it in the path; containerd dials it
        ("foo_bar.com/app:1", "foo_bar.com/*", True),
        ("foo_bar.com/app:1", "foo_bar.com/app", True),
        ("FOO_BAR.COM/app", "foo_bar.com/app", True),
        ("foo_bar.com/app", "docker.io/foo_bar.com/app", False),
        ("foo_bar.com/app", "other.com/app", False),
        # a fully qualified DNS name is the same host
        ("registry.example./secret/db", "registry.example/secret/*", True),
        ("registry.example/secret/db", "registry.example./secret/*", True),
    ],
)
def test_registry_names_the_grammar_refuses_as_a_domain(image: str, pattern: str, expected: bool) -> None:
    assert matches(image, pattern) is expected


# --- Docker Hub: aliases, familiar names and library/ ------------------------------------------------

HUB_VAULT_FORMS = [
    "acme/vault:1",
    *(f"{host}/acme/vault:1" for host in HUB_HOSTS),
    *(f"{host}:443/acme/vault:1" for host in HUB_HOSTS),
    "DOCKER.IO/acme/vault:1",
    "Index.Docker.IO:443/acme/vault:1",
    "Registry-1.Docker.Io/acme/vault@" + D1,
]


@pytest.mark.parametrize("image", HUB_VAULT_FORMS)
@pytest.mark.parametrize(
    "pattern",
    [
        "docker.io/acme/vault*",
        "acme/vault*",
        "acme/vault",
        "docker.io/acme/vault",
        "index.docker.io/acme/vault",
        "registry-1.docker.io/acme/*",
        "registry.hub.docker.com/acme/vault",
        "docker.io:443/acme/vault",
        "DOCKER.IO/acme/vault",
        "*/acme/vault",
        "*docker.io/acme/vault",
        "index.docker.*/acme/vault",
        "acme/*",
        "*vault*",
    ],
)
def test_every_docker_hub_alias_is_docker_hub(image: str, pattern: str) -> None:
    assert matches(image, pattern)


NGINX_FORMS = [
    "nginx",
    "nginx:latest",
    "library/nginx",
    "library/nginx:latest",
    "docker.io/nginx",
    "docker.io/library/nginx:latest",
    "index.docker.io/nginx",
    "index.docker.io/library/nginx",
    "registry-1.docker.io/nginx",
    "registry-1.docker.io/library/nginx:latest",
    "registry.hub.docker.com/library/nginx",
    "DOCKER.IO/nginx",
    "docker.io:443/library/nginx",
]


@pytest.mark.parametrize("image", NGINX_FORMS)
@pytest.mark.parametrize(
    "pattern",
    [
        "nginx",
        "nginx:latest",
        "library/nginx",
        "docker.io/nginx",
        "docker.io/library/nginx",
        "docker.io/library/nginx:latest",
        "index.docker.io/nginx",
        "registry-1.docker.io/library/nginx",
        "nginx*",
        "ngin?",
        "library/*",
        "docker.io/library/*",
        "*/nginx",
        "*/library/nginx:latest",
    ],
)
def test_an_official_image_is_one_image_in_every_form(image: str, pattern: str) -> None:
    assert matches(image, pattern)


@pytest.mark.parametrize(
    "image",
    [
        "nginx-unprivileged",
        "acme/nginx",
        "nginx/nginx",
        "library/nginx/extra",
        "registry.example/nginx",
        "registry.example/library/nginx",
        "quay.io/nginx",
        "docker.io:5000/library/nginx",
        "registry-2.docker.io/library/nginx",
        "docker.io.evil.com/library/nginx",
        "ngin",
    ],
)
def test_an_official_image_pattern_covers_no_other_repository(image: str) -> None:
    for pattern in ("nginx", "library/nginx", "docker.io/library/nginx", "registry-1.docker.io/nginx"):
        assert not matches(image, pattern), pattern


@pytest.mark.parametrize(
    "image",
    ["quay.io/acme/vault:1", "docker.io:5000/acme/vault", "registry-2.docker.io/acme/vault", "acme/vaul", "acmé/vault"],
)
def test_a_docker_hub_pattern_covers_no_other_registry(image: str) -> None:
    for pattern in ("docker.io/acme/vault*", "acme/vault*", "registry-1.docker.io/acme/vault"):
        assert not matches(image, pattern), pattern


# --- tags and digests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "pattern", "expected"),
    [
        # no tag, no digest: every tag and digest of the repository, and the untagged reference
        ("registry.example/secret/db", "registry.example/secret/db", True),
        ("registry.example/secret/db:v2", "registry.example/secret/db", True),
        ("registry.example/secret/db:v2@" + D1, "registry.example/secret/db", True),
        ("registry.example/secret/db@" + D1, "registry.example/secret/db", True),
        ("registry.example/secret/db2:v2", "registry.example/secret/db", False),
        ("registry.example/secret/db/x:v2", "registry.example/secret/db", False),
        ("registry.example/secret/d:v2", "registry.example/secret/db", False),
        # a tag: that tag, `latest` for an untagged image, and any digest (it may be that tag's)
        ("registry.example/secret/db:v1", "registry.example/secret/db:v1", True),
        ("registry.example/secret/db:v2", "registry.example/secret/db:v1", False),
        ("registry.example/secret/db:V1", "registry.example/secret/db:v1", False),  # tags are case-sensitive
        ("registry.example/secret/db", "registry.example/secret/db:v1", False),
        ("registry.example/secret/db", "registry.example/secret/db:latest", True),
        ("registry.example/secret/db:latest", "registry.example/secret/db:latest", True),
        ("registry.example/secret/db:v1@" + D1, "registry.example/secret/db:v1", True),
        ("registry.example/secret/db:v2@" + D1, "registry.example/secret/db:v1", True),  # the digest wins
        ("registry.example/secret/db@" + D1, "registry.example/secret/db:v1", True),
        ("registry.example/other/db@" + D1, "registry.example/secret/db:v1", False),
        # a digest: that digest with or without a tag, and any tag without a digest (it may point there)
        ("registry.example/secret/db@" + D1, "registry.example/secret/db@" + D1, True),
        ("registry.example/secret/db:v9@" + D1, "registry.example/secret/db@" + D1, True),
        ("registry.example/secret/db@" + D2, "registry.example/secret/db@" + D1, False),
        ("registry.example/secret/db:v1@" + D2, "registry.example/secret/db:v1@" + D1, False),
        ("registry.example/secret/db:v1", "registry.example/secret/db@" + D1, True),
        ("registry.example/secret/db", "registry.example/secret/db@" + D1, True),
        ("registry.example/secret/db:v2", "registry.example/secret/db:v1@" + D1, True),
        ("registry.example/other/db:v1", "registry.example/secret/db@" + D1, False),
        # globs in the tag and the digest
        ("registry.example/app:v1.2", "registry.example/app:v[0-9]*", True),
        ("registry.example/app:latest", "registry.example/app:v[0-9]*", False),
        ("registry.example/app", "registry.example/app:v[0-9]*", False),
        ("registry.example/app@" + D1, "registry.example/app:v[0-9]*", True),
        ("registry.example/app@" + D1, "registry.example/app@sha256:1*", True),
        ("registry.example/app@" + D2, "registry.example/app@sha256:1*", False),
        ("registry.example/app:x", "registry.example/app:*", True),
        # a glob at the end of the name also runs over the tag as written
        ("registry.example/secret/db:1", "registry.example/secret/*1", True),
        ("registry.example/secret/db:2", "registry.example/secret/*1", False),
        ("registry.example/app:latest", "registry.example/app*latest", True),
        ("registry.example/app", "registry.example/app*latest", True),
        ("registry.example/app:1", "registry.example/app?1", True),
        ("registry.example/vault-a:v1.2", "*/vault-?:v[0-9]*", True),
        ("registry.example:5000/x", "registry.example:50*", True),  # a glob over a port, not a tag
        ("registry.example:5000/x", "REGISTRY.EXAMPLE:50*", True),
        ("registry-1.docker.io/acme/x", "REGISTRY-1.DOCKER.IO:*", True),
        ("registry.example:5000/x:V1", "REG*:V1", True),
        ("registry.example:5000/x:v1", "REG*:V1", False),
        ("registry.example/vault-ab:v1.2", "*/vault-?:v[0-9]*", False),
        ("registry.example/vault-a:latest", "*/vault-?:v[0-9]*", False),
    ],
)
def test_tags_and_digests(image: str, pattern: str, expected: bool) -> None:
    assert matches(image, pattern) is expected


# --- images outside the grammar ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "REGISTRY.EXAMPLE/Secret/DB:1",  # uppercase path: matched lowercased
        " registry.example/secret/db:1",
        "registry.example/secret/db:1\n",
        "registry.example/secret/db@sha256:abc",
        "registry.example/secret/db:bad~tag",
        "registry.example/secret/db:1@sha256:" + "F" * 64,
        "registry.example:443/secret/db/",
        "registry.example/secret/db" + "/x" * 200,  # a path over 255 characters
    ],
)
def test_an_image_outside_the_grammar_errs_towards_a_match(image: str) -> None:
    assert matches(image, "registry.example/secret/*")
    assert matches(image, "registry.example/secret/db*")


@pytest.mark.parametrize("image", ["", ":", "@", "/", "//", "[", "[::1", "a@b@c", "\x00", "é/é:é@é", "a" * 5000])
def test_any_string_is_an_answer_not_an_exception(image: str) -> None:
    for pattern in ("registry.example/secret/*", "*", "[", "[!]", "nginx", "*/x:y@z", "[::1]:5000/x", ""):
        assert isinstance(matches(image, pattern), bool)
    assert isinstance(normalize(image), str)


def test_an_unmatched_image_outside_the_grammar_is_not_matched() -> None:
    assert not matches("other.example/Secret/DB:1", "registry.example/secret/*")
    assert not matches("registry.example/public/x@bad", "registry.example/secret/*")


@given(image=st.text(max_size=40), pattern=st.text(max_size=20))
@settings(max_examples=300, deadline=None)
def test_arbitrary_text_never_raises(image: str, pattern: str) -> None:
    assert isinstance(matches(image, pattern), bool)


# --- canonical hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("Registry.Example", "registry.example"),
        ("registry.example:443", "registry.example"),
        ("registry.example:00443", "registry.example"),
        ("registry.example:05000", "registry.example:5000"),
        ("registry.example:http", "registry.example:http"),
        ("registry-1.docker.io:443", "docker.io"),
        ("registry-1.docker.io:5000", "registry-1.docker.io:5000"),
        ("[0:0::1]:443", "[::1]"),
        ("[fd00123123123]:5000", "[fd00123123123]:5000"),  # the grammar takes it, ipaddress does not
        ("[::1", "[::1"),
    ],
)
def test_canonical_domain(domain: str, expected: str) -> None:
    assert canonical_domain(domain) == expected


# --- every written form of one image matches a pattern iff its canonical form does ----------------------

REGISTRIES = ["docker.io", "registry.example", "registry.example:5000", "localhost", "localhost:5000", "[::1]:5000"]
COMPONENT = st.from_regex(r"[a-z0-9]{1,3}(?:[-_][a-z0-9]{1,2})?", fullmatch=True)
TAGS = st.one_of(
    st.none(),
    st.sampled_from(["latest", "v1", "1.27", "V1"]),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,4}", fullmatch=True),
)
DIGESTS = st.one_of(st.none(), st.sampled_from([D1, D2]))


def written_forms(registry: str, path: str, tag: str | None, digest: str | None) -> list[str]:
    hub = registry == "docker.io"
    hosts = [registry, registry.upper()]
    if hub:
        hosts += [*HUB_HOSTS, *(host.upper() for host in HUB_HOSTS)]
    hosts += [host + ":443" for host in list(hosts) if not host.rpartition("]")[2].count(":")]
    paths = [path]
    if hub and "/" not in path:
        paths = ["library/" + path, path]
    elif hub and path.startswith("library/") and path.count("/") == 1:
        paths.append(path.removeprefix("library/"))
    names = [f"{host}/{p}" for host in hosts for p in paths] + (paths if hub else [])
    suffixes = [(f":{tag}" if tag else "") + (f"@{digest}" if digest else "")]
    if tag == "latest" and digest is None:
        suffixes.append("")  # implicit latest
    return [name + suffix for name in names for suffix in suffixes]


def canonical(registry: str, path: str, tag: str | None, digest: str | None) -> str:
    if registry == "docker.io" and "/" not in path:
        path = "library/" + path
    if tag is None and digest is None:
        tag = "latest"
    return f"{registry}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def name_of(reference: str) -> str:
    """A written reference without its tag and digest."""
    rest = reference.partition("@")[0]
    colon = rest.rfind(":")
    return rest[:colon] if colon > rest.rfind("/") else rest


@st.composite
def images_and_patterns(draw: st.DrawFn) -> tuple[list[str], str, str, bool]:
    registry = draw(st.sampled_from(REGISTRIES))
    path = "/".join(draw(st.lists(COMPONENT, min_size=1, max_size=3)))
    if registry == "docker.io" and draw(st.booleans()):
        path = "library/" + path.rpartition("/")[2]
    tag, digest = draw(TAGS), draw(DIGESTS)
    forms = written_forms(registry, path, tag, digest)
    # A pattern from a written form of this image or of another, then cut, globbed or retagged.
    own = draw(st.booleans())
    if own:
        pattern = draw(st.sampled_from(forms))
    else:
        registry2 = draw(st.sampled_from(REGISTRIES))
        path2 = "/".join(draw(st.lists(COMPONENT, min_size=1, max_size=3)))
        pattern = draw(st.sampled_from(written_forms(registry2, path2, draw(TAGS), draw(DIGESTS))))
    transform = draw(st.sampled_from(["as is", "name", "name:tag", "name@digest", "prefix*", "*suffix", "?", "text"]))
    must_match = own and transform in ("as is", "name", "prefix*", "*suffix", "?")
    if transform == "name":
        pattern = name_of(pattern)
    elif transform == "name:tag":
        pattern = name_of(pattern) + ":" + draw(st.sampled_from(["latest", "v1", "1.27", "v*", "*"]))
    elif transform == "name@digest":
        pattern = name_of(pattern) + "@" + draw(st.sampled_from([D1, D2, "sha256:1*"]))
    elif transform == "prefix*":
        pattern = pattern[: draw(st.integers(0, len(pattern)))] + "*"
    elif transform == "*suffix":
        pattern = "*" + pattern[draw(st.integers(0, len(pattern))) :]
    elif transform == "?":
        at = draw(st.integers(0, len(pattern) - 1))
        must_match = must_match and not 0 < at < pattern.find("]")  # `[:?:1]` is a bracket expression
        pattern = pattern[:at] + "?" + pattern[at + 1 :]
    elif transform == "text":
        pattern = draw(st.text(alphabet="abc1:/@*?.-[]", min_size=1, max_size=12))
    return forms, canonical(registry, path, tag, digest), pattern, must_match


@given(case=images_and_patterns())
@settings(max_examples=1000, deadline=None)
def test_every_written_form_of_an_image_matches_a_pattern_iff_its_canonical_form_does(case) -> None:
    forms, canonical_form, pattern, must_match = case
    expected = matches(canonical_form, pattern)
    assert {form: matches(form, pattern) for form in forms} == dict.fromkeys(forms, expected), pattern
    if must_match:  # one of the image's own forms, maybe cut short with a `*` or with a `?` for a character
        assert expected, pattern
