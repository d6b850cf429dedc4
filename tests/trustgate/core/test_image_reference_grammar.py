"""The image reference grammar, case by case from distribution/reference's own test tables.

Each table below is one Go test function of reference_test.go, normalize_test.go or regexp_test.go,
transcribed input by input. Go's tests register only sha256 (`import _ "crypto/sha256"`), so the
tables that involve digests parse with that one algorithm, as `GO_TEST_ALGORITHMS`.
"""

from __future__ import annotations

import pytest

from trustgate.core import images
from trustgate.core.reference import (
    Problem,
    Reference,
    ReferenceError,
    familiar_name,
    familiar_string,
    is_domain,
    is_identifier,
    parse,
    parse_any_reference,
    parse_docker_ref,
    parse_named,
    parse_normalized_named,
    with_digest,
    with_name,
    with_tag,
)

GO_TEST_ALGORITHMS = {"sha256": 64}
F64 = "f" * 64
SHA_F = "sha256:" + F64
BE17 = "sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912"
DBCC = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
E669 = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582"
SHORT_DIGEST = "sha256:1234567890098765432112345667890098765"

INVALID_FORMAT = Problem.INVALID_FORMAT
UPPERCASE = Problem.NAME_CONTAINS_UPPERCASE
NAME_EMPTY = Problem.NAME_EMPTY
TOO_LONG = Problem.NAME_TOO_LONG
NOT_CANONICAL = Problem.NAME_NOT_CANONICAL


def problem_of(call, *args, **kwargs) -> Problem:
    with pytest.raises(ReferenceError) as raised:
        call(*args, **kwargs)
    return raised.value.problem


# --- reference_test.go: TestReferenceParse -----------------------------------------------------------

# (input, error, repository, domain, tag, digest)
REFERENCE_PARSE = [
    ("test_com", None, "test_com", "", None, None),
    ("test.com:tag", None, "test.com", "", "tag", None),
    ("test.com:5000", None, "test.com", "", "5000", None),
    ("test.com/repo:tag", None, "test.com/repo", "test.com", "tag", None),
    ("test:5000/repo", None, "test:5000/repo", "test:5000", None, None),
    ("test:5000/repo:tag", None, "test:5000/repo", "test:5000", "tag", None),
    ("test:5000/repo@" + SHA_F, None, "test:5000/repo", "test:5000", None, SHA_F),
    ("test:5000/repo:tag@" + SHA_F, None, "test:5000/repo", "test:5000", "tag", SHA_F),
    ("test:5000/repo", None, "test:5000/repo", "test:5000", None, None),
    ("", NAME_EMPTY, None, None, None, None),
    (":justtag", INVALID_FORMAT, None, None, None, None),
    ("@" + SHA_F, INVALID_FORMAT, None, None, None, None),
    ("repo@sha256:" + "f" * 34, Problem.DIGEST_INVALID_LENGTH, None, None, None, None),
    ("validname@invaliddigest:" + F64, Problem.DIGEST_UNSUPPORTED, None, None, None, None),
    ("validname@sha512:" + "f" * 128, Problem.DIGEST_UNSUPPORTED, None, None, None, None),  # not registered
    ("Uppercase:tag", UPPERCASE, None, None, None, None),
    # Go leaves "Uppercase/lowercase:tag" out: "Uppercase" is read as a domain, so it passes.
    ("test:5000/Uppercase/lowercase:tag", UPPERCASE, None, None, None, None),
    ("lowercase:Uppercase", None, "lowercase", "", "Uppercase", None),
    ("domain/" + "a" * 256 + ":tag", TOO_LONG, None, None, None, None),
    ("a/" * 127 + "a:tag-puts-this-over-max", None, "a/" * 127 + "a", "a", "tag-puts-this-over-max", None),
    ("aa/asdf$$^/aa", INVALID_FORMAT, None, None, None, None),
    ("sub-dom1.foo.com/bar/baz/quux", None, "sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", None, None),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        None,
        "sub-dom1.foo.com/bar/baz/quux",
        "sub-dom1.foo.com",
        "some-long-tag",
        None,
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        None,
        "b.gcr.io/test.example.com/my-app",
        "b.gcr.io",
        "test.example.com",
        None,
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", None, "xn--n3h.com/myimage", "xn--n3h.com", "xn--n3h.com", None),
    (
        "xn--7o8h.com/myimage:xn--7o8h.com@" + SHA_F,
        None,
        "xn--7o8h.com/myimage",
        "xn--7o8h.com",
        "xn--7o8h.com",
        SHA_F,
    ),
    ("foo_bar.com:8080", None, "foo_bar.com", "", "8080", None),
    ("foo/foo_bar.com:8080", None, "foo/foo_bar.com", "foo", "8080", None),
    ("192.168.1.1", None, "192.168.1.1", "", None, None),
    ("192.168.1.1:tag", None, "192.168.1.1", "", "tag", None),
    ("192.168.1.1:5000", None, "192.168.1.1", "", "5000", None),
    ("192.168.1.1/repo", None, "192.168.1.1/repo", "192.168.1.1", None, None),
    ("192.168.1.1:5000/repo", None, "192.168.1.1:5000/repo", "192.168.1.1:5000", None, None),
    ("192.168.1.1:5000/repo:5050", None, "192.168.1.1:5000/repo", "192.168.1.1:5000", "5050", None),
    ("[2001:db8::1]", INVALID_FORMAT, None, None, None, None),
    ("[2001:db8::1]:5000", INVALID_FORMAT, None, None, None, None),
    ("[2001:db8::1]:tag", INVALID_FORMAT, None, None, None, None),
    ("[2001:db8::1]/repo", None, "[2001:db8::1]/repo", "[2001:db8::1]", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", None, "[2001:db8:1:2:3:4:5:6]/repo", "[2001:db8:1:2:3:4:5:6]", "tag", None),
    ("[2001:db8::1]:5000/repo", None, "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", None, None),
    ("[2001:db8::1]:5000/repo:tag", None, "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "tag", None),
    ("[2001:db8::1]:5000/repo@" + SHA_F, None, "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", None, SHA_F),
    (
        "[2001:db8::1]:5000/repo:tag@" + SHA_F,
        None,
        "[2001:db8::1]:5000/repo",
        "[2001:db8::1]:5000",
        "tag",
        SHA_F,
    ),
    ("[2001:db8::]:5000/repo", None, "[2001:db8::]:5000/repo", "[2001:db8::]:5000", None, None),
    ("[::1]:5000/repo", None, "[::1]:5000/repo", "[::1]:5000", None, None),
    ("[fe80::1%eth0]:5000/repo", INVALID_FORMAT, None, None, None, None),
    ("[fe80::1%@invalidzone]:5000/repo", INVALID_FORMAT, None, None, None, None),
    ("example.com/" + "a" * 255 + ":tag", None, "example.com/" + "a" * 255, "example.com", "tag", None),
]


@pytest.mark.parametrize(("text", "error", "repository", "domain", "tag", "digest"), REFERENCE_PARSE)
def test_reference_parse(text, error, repository, domain, tag, digest) -> None:
    if error is not None:
        assert problem_of(parse, text, algorithms=GO_TEST_ALGORITHMS) is error
        return
    reference = parse(text, algorithms=GO_TEST_ALGORITHMS)
    assert str(reference) == text
    assert (reference.name, reference.domain, reference.tag, reference.digest) == (repository, domain, tag, digest)


# --- reference_test.go: TestWithNameFailure, TestDomainAndPath ---------------------------------------

WITH_NAME_FAILURE = [
    ("", INVALID_FORMAT),
    (":justtag", INVALID_FORMAT),
    ("@" + SHA_F, INVALID_FORMAT),
    ("validname@invaliddigest:" + F64, INVALID_FORMAT),
    ("example.com/repo:tag", INVALID_FORMAT),
    ("example.com/" + "a" * 256, TOO_LONG),
    ("aa/asdf$$^/aa", INVALID_FORMAT),
]


@pytest.mark.parametrize(("name", "error"), WITH_NAME_FAILURE)
def test_with_name_failure(name: str, error: Problem) -> None:
    assert problem_of(with_name, name) is error


DOMAIN_AND_PATH = [
    ("test.com/foo", "test.com", "foo"),
    ("test_com/foo", "", "test_com/foo"),
    ("test:8080/foo", "test:8080", "foo"),
    ("test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
]


@pytest.mark.parametrize(("name", "domain", "path"), DOMAIN_AND_PATH)
def test_domain_and_path(name: str, domain: str, path: str) -> None:
    reference = with_name(name)
    assert (reference.domain, reference.path) == (domain, path)


# --- reference_test.go: TestSerialization (the parse and the round trip; JSON is Go's own) -----------

SERIALIZATION = [
    ("", NAME_EMPTY, None, None, None),
    ("example.com:8000/named", None, "example.com:8000/named", None, None),
    ("example.com:8000/named:tagged", None, "example.com:8000/named", "tagged", None),
    (
        "other.com/named@sha256:1234567890098765432112345667890098765432112345667890098765432112",
        None,
        "other.com/named",
        None,
        "sha256:1234567890098765432112345667890098765432112345667890098765432112",
    ),
]


@pytest.mark.parametrize(("text", "error", "name", "tag", "digest"), SERIALIZATION)
def test_serialization(text, error, name, tag, digest) -> None:
    if error is not None:
        assert problem_of(parse, text, algorithms=GO_TEST_ALGORITHMS) is error
        return
    reference = parse(text, algorithms=GO_TEST_ALGORITHMS)
    assert (reference.name, reference.tag, reference.digest) == (name, tag, digest)
    assert parse(str(reference), algorithms=GO_TEST_ALGORITHMS) == reference


# --- reference_test.go: TestWithTag, TestWithDigest ---------------------------------------------------

WITH_TAG = [
    ("test.com/foo", None, "tag", "test.com/foo:tag"),
    ("foo", None, "tag2", "foo:tag2"),
    ("test.com:8000/foo", None, "tag4", "test.com:8000/foo:tag4"),
    ("test.com:8000/foo", None, "TAG5", "test.com:8000/foo:TAG5"),
    ("test.com:8000/foo", SHORT_DIGEST, "TAG5", "test.com:8000/foo:TAG5@" + SHORT_DIGEST),
]


@pytest.mark.parametrize(("name", "digest", "tag", "combined"), WITH_TAG)
def test_with_tag(name: str, digest: str | None, tag: str, combined: str) -> None:
    reference = with_name(name)
    if digest is not None:
        reference = with_digest(reference, digest)
    assert str(with_tag(reference, tag)) == combined


WITH_DIGEST = [
    ("test.com/foo", SHORT_DIGEST, None, "test.com/foo@" + SHORT_DIGEST),
    ("foo", SHORT_DIGEST, None, "foo@" + SHORT_DIGEST),
    ("test.com:8000/foo", SHORT_DIGEST, None, "test.com:8000/foo@" + SHORT_DIGEST),
    ("test.com:8000/foo", SHORT_DIGEST, "latest", "test.com:8000/foo:latest@" + SHORT_DIGEST),
]


@pytest.mark.parametrize(("name", "digest", "tag", "combined"), WITH_DIGEST)
def test_with_digest(name: str, digest: str, tag: str | None, combined: str) -> None:
    reference = with_name(name)
    if tag is not None:
        reference = with_tag(reference, tag)
    assert str(with_digest(reference, digest)) == combined


# --- reference_test.go: TestParseNamed -----------------------------------------------------------------

PARSE_NAMED = [
    ("test.com/foo", "test.com", "foo", None),
    ("test:8080/foo", "test:8080", "foo", None),
    ("test_com/foo", None, None, NOT_CANONICAL),
    ("test.com", None, None, NOT_CANONICAL),
    ("foo", None, None, NOT_CANONICAL),
    ("library/foo", None, None, NOT_CANONICAL),
    ("docker.io/library/foo", "docker.io", "library/foo", None),
    ("docker.io/foo", None, None, NOT_CANONICAL),  # ambiguous: the parser adds "library/"
]


@pytest.mark.parametrize(("text", "domain", "path", "error"), PARSE_NAMED)
def test_parse_named(text: str, domain: str | None, path: str | None, error: Problem | None) -> None:
    if error is not None:
        assert problem_of(parse_named, text) is error
        return
    reference = parse_named(text)
    assert (reference.domain, reference.path) == (domain, path)


# --- normalize_test.go: TestValidateReferenceName, TestValidateRemoteName ----------------------------

VALID_REFERENCE_NAMES = [
    "docker/docker",
    "library/debian",
    "debian",
    "localhost/library/debian",
    "localhost/debian",
    "LOCALDOMAIN/library/debian",
    "LOCALDOMAIN/debian",
    "docker.io/docker/docker",
    "docker.io/library/debian",
    "docker.io/debian",
    "index.docker.io/docker/docker",
    "index.docker.io/library/debian",
    "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian",
    "127.0.0.1:5000/debian",
    "192.168.0.1",
    "192.168.0.1:80",
    "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    # valid with a hostname: that removes the ambiguity of a value that could be an identifier
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "Docker/docker",
    "DOCKER/docker",
]
INVALID_REFERENCE_NAMES = [
    "https://github.com/docker/docker",
    "docker/Docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker///docker",
    "docker.io/docker/Docker",
    "docker.io/docker///docker",
    "[fc00::1]",
    "[fc00::1]:5000",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
]
VALID_REMOTE_NAMES = [
    "docker/docker",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",  # 64 characters, not all hex
    "docker-rules/docker",
    "docker---rules/docker",
    "doc/docker",
    "d/docker",
    "jess/t",
    "dock__er/docker",
]
INVALID_REMOTE_NAMES = [
    "docker/Docker",
    "docker///docker",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "-docker/docker",
    "docker-/docker",
    "-docker-/docker",
    "____/____",
    "_docker/_docker",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_"
    "lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_"
    "valid_namespace_because_its_lenth_is_greater_than_255/docker",
]


@pytest.mark.parametrize("name", VALID_REFERENCE_NAMES + VALID_REMOTE_NAMES)
def test_validate_name_valid(name: str) -> None:
    parse_normalized_named(name)


@pytest.mark.parametrize("name", INVALID_REFERENCE_NAMES + INVALID_REMOTE_NAMES)
def test_validate_name_invalid(name: str) -> None:
    with pytest.raises(ReferenceError):
        parse_normalized_named(name)


# --- normalize_test.go: TestParseRepositoryInfo -----------------------------------------------------

# (remote name, familiar name, full name, ambiguous name or None, domain)
REPOSITORY_INFO = [
    ("fooo", "localhost/fooo", "localhost/fooo", "localhost/fooo", "localhost"),
    ("fooo/bar", "localhost/fooo/bar", "localhost/fooo/bar", "localhost/fooo/bar", "localhost"),
    ("fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN"),
    ("fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN"),
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", None, "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", None, "docker.io"),
    ("private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase", None, "127.0.0.1:8000"),
    ("privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", None, "127.0.0.1:8000"),
    ("private/moonbase", "example.com/private/moonbase", "example.com/private/moonbase", None, "example.com"),
    ("privatebase", "example.com/privatebase", "example.com/privatebase", None, "example.com"),
    (
        "private/moonbase",
        "example.com:8000/private/moonbase",
        "example.com:8000/private/moonbase",
        None,
        "example.com:8000",
    ),
    ("privatebasee", "example.com:8000/privatebasee", "example.com:8000/privatebasee", None, "example.com:8000"),
    (
        "library/ubuntu-12.04-base",
        "ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base",
        "index.docker.io/library/ubuntu-12.04-base",
        "docker.io",
    ),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", None, "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", None, "docker.io"),
    ("bar", "Foo/bar", "Foo/bar", None, "Foo"),
    ("bar", "FOO/bar", "FOO/bar", None, "FOO"),
]
REPOSITORY_INFO_CASES = [
    pytest.param(written, remote, familiar, full, domain, id=f"{index}/{written}")
    for index, (remote, familiar, full, ambiguous, domain) in enumerate(REPOSITORY_INFO)
    for written in (familiar, full, *([ambiguous] if ambiguous else []))
]


@pytest.mark.parametrize(("written", "remote", "familiar", "full", "domain"), REPOSITORY_INFO_CASES)
def test_parse_repository_info(written: str, remote: str, familiar: str, full: str, domain: str) -> None:
    reference = parse_normalized_named(written)
    assert familiar_name(reference) == familiar
    assert str(reference) == full
    assert reference.domain == domain
    assert reference.path == remote


# --- normalize_test.go: TestParseReferenceWithTagAndDigest, TestInvalidReferenceComponents ----------


def test_parse_reference_with_tag_and_digest() -> None:
    short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
    reference = parse_normalized_named(short)
    assert str(reference) == "docker.io/library/" + short
    assert reference.tag == "latest"
    assert reference.digest == short.partition("@")[2]
    assert familiar_string(reference) == short


def test_invalid_reference_components() -> None:
    with pytest.raises(ReferenceError):
        parse_normalized_named("-foo")
    busybox = parse_normalized_named("busybox")
    assert problem_of(with_tag, busybox, "-foo") is Problem.TAG_INVALID_FORMAT
    assert problem_of(with_digest, busybox, "foo") is Problem.DIGEST_INVALID_FORMAT


# --- normalize_test.go: TestParseAnyReference --------------------------------------------------------

# (reference, equivalent, the expected value when it is not `parse(equivalent)`)
PARSE_ANY_REFERENCE = [
    ("redis", "docker.io/library/redis", None),
    ("redis:latest", "docker.io/library/redis:latest", None),
    ("docker.io/library/redis:latest", "docker.io/library/redis:latest", None),
    ("redis@sha256:" + DBCC, "docker.io/library/redis@sha256:" + DBCC, None),
    ("docker.io/library/redis@sha256:" + DBCC, "docker.io/library/redis@sha256:" + DBCC, None),
    ("dmcgowan/myapp", "docker.io/dmcgowan/myapp", None),
    ("dmcgowan/myapp:latest", "docker.io/dmcgowan/myapp:latest", None),
    ("docker.io/mcgowan/myapp:latest", "docker.io/mcgowan/myapp:latest", None),
    ("dmcgowan/myapp@sha256:" + DBCC, "docker.io/dmcgowan/myapp@sha256:" + DBCC, None),
    ("docker.io/dmcgowan/myapp@sha256:" + DBCC, "docker.io/dmcgowan/myapp@sha256:" + DBCC, None),
    (DBCC, "sha256:" + DBCC, Reference("", "", digest="sha256:" + DBCC)),
    ("sha256:" + DBCC, "sha256:" + DBCC, Reference("", "", digest="sha256:" + DBCC)),
    (DBCC[:-1], "docker.io/library/" + DBCC[:-1], None),  # 63 characters: a name, not an identifier
    ("dbcc1", "docker.io/library/dbcc1", None),
]


@pytest.mark.parametrize(("text", "equivalent", "expected"), PARSE_ANY_REFERENCE)
def test_parse_any_reference(text: str, equivalent: str, expected: Reference | None) -> None:
    reference = parse_any_reference(text)
    assert str(reference) == equivalent
    assert reference == (expected if expected is not None else parse(equivalent))


# --- normalize_test.go: TestNormalizedSplitHostname ---------------------------------------------------

NORMALIZED_SPLIT_HOSTNAME = [
    ("test.com/foo", "test.com", "foo"),
    ("test_com/foo", "docker.io", "test_com/foo"),
    ("docker/migrator", "docker.io", "docker/migrator"),
    ("test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080", "foo"),
    ("foo", "docker.io", "library/foo"),
    ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ("docker.io/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
]


@pytest.mark.parametrize(("text", "domain", "path"), NORMALIZED_SPLIT_HOSTNAME)
def test_normalized_split_hostname(text: str, domain: str, path: str) -> None:
    reference = parse_normalized_named(text)
    assert (reference.domain, reference.path) == (domain, path)


# --- normalize_test.go: TestMatchError, TestMatch ----------------------------------------------------
# Go's FamiliarMatch uses path.Match; trustgate's patterns are fnmatch globs matched by `images.matches`,
# whose answers agree with every case of TestMatch. "[-x]" is an error to path.Match and a character
# class to fnmatch: it must not raise, and matches neither "foo" nor its qualified forms.


def test_match_error() -> None:
    assert images.matches("foo", "[-x]") is False


MATCH = [
    ("foo", "foo/**/ba[rz]", False),
    ("foo/any/bat", "foo/**/ba[rz]", False),
    ("foo/a/bar", "foo/**/ba[rz]", True),
    ("foo/b/baz", "foo/**/ba[rz]", True),
    ("foo/c/baz:tag", "foo/**/ba[rz]", True),
    ("foo/c/baz:tag", "foo/*/baz:tag", True),
    ("foo/c/baz:tag", "foo/c/baz:tag", True),
    ("example.com/foo/c/baz:tag", "*/foo/c/baz", True),
    ("example.com/foo/c/baz:tag", "example.com/foo/c/baz", True),
]


@pytest.mark.parametrize(("image", "pattern", "expected"), MATCH)
def test_match(image: str, pattern: str, expected: bool) -> None:
    assert images.matches(image, pattern) is expected


# --- normalize_test.go: TestParseDockerRef ------------------------------------------------------------

PARSE_DOCKER_REF = [
    ("busybox", "docker.io/library/busybox:latest"),  # nothing
    ("busybox:latest", "docker.io/library/busybox:latest"),  # tag only
    ("busybox@" + E669, "docker.io/library/busybox@" + E669),  # digest only
    ("library/busybox", "docker.io/library/busybox:latest"),  # path only
    ("docker.io/busybox", "docker.io/library/busybox:latest"),  # hostname only
    ("docker.io/library/busybox", "docker.io/library/busybox:latest"),  # no tag
    ("docker.io/busybox:latest", "docker.io/library/busybox:latest"),  # no path
    ("library/busybox:latest", "docker.io/library/busybox:latest"),  # no hostname
    ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),  # full reference with tag
    ("gcr.io/library/busybox", "gcr.io/library/busybox:latest"),  # gcr reference without tag
    ("gcr.io/library/busybox:latest@" + E669, "gcr.io/library/busybox@" + E669),  # both tag and digest
]


@pytest.mark.parametrize(("text", "expected"), PARSE_DOCKER_REF)
def test_parse_docker_ref(text: str, expected: str) -> None:
    output = str(parse_docker_ref(text))
    assert output == expected
    parse(output)


# --- regexp_test.go: TestDomainRegexp ----------------------------------------------------------------

DOMAIN_REGEXP = [
    ("test.com", True),
    ("test.com:10304", True),
    ("test.com:http", False),
    ("localhost", True),
    ("localhost:8080", True),
    ("a", True),
    ("a.b", True),
    ("ab.cd.com", True),
    ("a-b.com", True),
    ("-ab.com", False),
    ("ab-.com", False),
    ("ab.c-om", True),
    ("ab.-com", False),
    ("ab.com-", False),
    ("0101.com", True),
    ("001a.com", True),
    ("b.gbc.io:443", True),
    ("b.gbc.io", True),
    ("xn--n3h.com", True),
    ("Asdf.com", True),
    ("192.168.1.1:75050", True),
    ("192.168.1.1:750050", True),  # more than 5 port digits: for validation to refuse, not the grammar
    ("[fd00:1:2::3]:75050", True),
    ("[fd00:1:2::3]75050", False),
    ("[fd00:1:2::3]::75050", False),
    ("[fd00:1:2::3%eth0]:75050", False),
    ("[fd00123123123]:75050", True),
    ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:75050", True),
    ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:750505", True),
    ("fd00:1:2::3:75050", False),
]


@pytest.mark.parametrize(("text", "match"), DOMAIN_REGEXP)
def test_domain_regexp(text: str, match: bool) -> None:
    assert is_domain(text) is match


# --- regexp_test.go: TestFullNameRegexp (the anchored name: `with_name`) -----------------------------

# (input, match, (domain, path) or None when Go's case gives no submatches)
FULL_NAME_REGEXP = [
    ("", False, None),
    ("short", True, ("", "short")),
    ("simple/name", True, ("simple", "name")),
    ("library/ubuntu", True, ("library", "ubuntu")),
    ("docker/stevvooe/app", True, ("docker", "stevvooe/app")),
    (
        "aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb",
        True,
        ("aa", "aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb"),
    ),
    ("aa/aa/bb/bb/bb", True, ("aa", "aa/bb/bb/bb")),
    ("a/a/a/a", True, ("a", "a/a/a")),
    ("a/a/a/a/", False, None),
    ("a//a/a", False, None),
    ("a", True, ("", "a")),
    ("a/aa", True, ("a", "aa")),
    ("a/aa/a", True, ("a", "aa/a")),
    ("foo.com", True, ("", "foo.com")),
    ("foo.com/", False, None),
    ("foo.com:8080/bar", True, ("foo.com:8080", "bar")),
    ("foo.com:http/bar", False, None),
    ("foo.com/bar", True, ("foo.com", "bar")),
    ("foo.com/bar/baz", True, ("foo.com", "bar/baz")),
    ("localhost:8080/bar", True, ("localhost:8080", "bar")),
    ("sub-dom1.foo.com/bar/baz/quux", True, ("sub-dom1.foo.com", "bar/baz/quux")),
    ("blog.foo.com/bar/baz", True, ("blog.foo.com", "bar/baz")),
    ("a^a", False, None),
    ("aa/asdf$$^/aa", False, None),
    ("asdf$$^/aa", False, None),
    ("aa-a/a", True, ("aa-a", "a")),
    ("a/" * 128 + "a", True, ("a", "a/" * 127 + "a")),
    ("a-/a/a/a", False, None),
    ("foo.com/a-/a/a", False, None),
    ("-foo/bar", False, None),
    ("foo/bar-", False, None),
    ("foo-/bar", False, None),
    ("foo/-bar", False, None),
    ("_foo/bar", False, None),
    ("foo_bar", True, ("", "foo_bar")),
    ("foo_bar.com", True, ("", "foo_bar.com")),
    ("foo_bar.com:8080", False, None),
    ("foo_bar.com:8080/app", False, None),
    ("foo.com/foo_bar", True, ("foo.com", "foo_bar")),
    ("____/____", False, None),
    ("_docker/_docker", False, None),
    ("docker_/docker_", False, None),
    ("b.gcr.io/test.example.com/my-app", True, ("b.gcr.io", "test.example.com/my-app")),
    ("xn--n3h.com/myimage", True, ("xn--n3h.com", "myimage")),
    ("xn--7o8h.com/myimage", True, ("xn--7o8h.com", "myimage")),
    ("example.com/xn--7o8h.com/myimage", True, ("example.com", "xn--7o8h.com/myimage")),
    (
        "example.com/some_separator__underscore/myimage",
        True,
        ("example.com", "some_separator__underscore/myimage"),
    ),
    ("example.com/__underscore/myimage", False, None),
    ("example.com/..dots/myimage", False, None),
    ("example.com/.dots/myimage", False, None),
    ("example.com/nodouble..dots/myimage", False, None),
    ("example.com/nodouble..dots/myimage", False, None),
    ("docker./docker", False, None),
    (".docker/docker", False, None),
    ("docker-/docker", False, None),
    ("-docker/docker", False, None),
    ("do..cker/docker", False, None),
    ("do__cker:8080/docker", False, None),
    ("do__cker/docker", True, ("", "do__cker/docker")),
    ("b.gcr.io/test.example.com/my-app", True, ("b.gcr.io", "test.example.com/my-app")),
    (
        "registry.io/foo/project--id.module--name.ver---sion--name",
        True,
        ("registry.io", "foo/project--id.module--name.ver---sion--name"),
    ),
    ("Asdf.com/foo/bar", True, None),  # uppercase in the host name
    ("Foo/FarB", False, None),  # uppercase in the path
]


@pytest.mark.parametrize(("text", "match", "subs"), FULL_NAME_REGEXP)
def test_full_name_regexp(text: str, match: bool, subs: tuple[str, str] | None) -> None:
    if not match:
        assert problem_of(with_name, text) is INVALID_FORMAT
        return
    reference = with_name(text)
    assert reference.name == text
    if subs is not None:
        assert (reference.domain, reference.path) == subs


# --- regexp_test.go: TestReferenceRegexp (`parse`) ------------------------------------------------------

# (input, match, (name, tag, digest) when it matches)
REFERENCE_REGEXP = [
    ("registry.com:8080/myapp:tag", True, ("registry.com:8080/myapp", "tag", None)),
    ("registry.com:8080/myapp@" + BE17, True, ("registry.com:8080/myapp", None, BE17)),
    ("registry.com:8080/myapp:tag2@" + BE17, True, ("registry.com:8080/myapp", "tag2", BE17)),
    ("registry.com:8080/myapp@sha256:badbadbadbad", False, None),
    ("registry.com:8080/myapp:invalid~tag", False, None),
    ("bad_hostname.com:8080/myapp:tag", False, None),
    ("localhost:8080@" + BE17, True, ("localhost", "8080", BE17)),  # localhost as a name, 8080 its tag
    ("localhost:8080/name@" + BE17, True, ("localhost:8080/name", None, BE17)),
    ("localhost:http/name@" + BE17, False, None),
    ("localhost@" + BE17, True, ("localhost", None, BE17)),  # localhost as a name without a host
    ("registry.com:8080/myapp@bad", False, None),
    ("registry.com:8080/myapp@2bad", False, None),
]


@pytest.mark.parametrize(("text", "match", "groups"), REFERENCE_REGEXP)
def test_reference_regexp(text: str, match: bool, groups: tuple[str, str | None, str | None] | None) -> None:
    if not match:
        assert problem_of(parse, text, algorithms=GO_TEST_ALGORITHMS) is INVALID_FORMAT
        return
    reference = parse(text, algorithms=GO_TEST_ALGORITHMS)
    assert (reference.name, reference.tag, reference.digest) == groups


# --- regexp_test.go: TestIdentifierRegexp -------------------------------------------------------------

IDENTIFIER_REGEXP = [
    ("da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821", True),
    ("7EC43B381E5AEFE6E04EFB0B3F0693FF2A4A50652D64AEC573905F2DB5889A1C", False),
    ("da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf", False),
    ("sha256:da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821", False),
    ("da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf98218482", False),
]


@pytest.mark.parametrize(("text", "match"), IDENTIFIER_REGEXP)
def test_identifier_regexp(text: str, match: bool) -> None:
    assert is_identifier(text) is match


# --- beyond Go's tables: what a container runtime registers, and strings Go's `$` would not allow ------


def test_runtimes_register_sha384_and_sha512() -> None:
    assert parse("validname@sha512:" + "f" * 128).digest == "sha512:" + "f" * 128
    assert parse("validname@sha384:" + "f" * 96).digest == "sha384:" + "f" * 96
    assert problem_of(parse, "validname@sha512:" + "f" * 64) is Problem.DIGEST_INVALID_LENGTH


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("nginx\n", INVALID_FORMAT),
        ("nginx:1\n", INVALID_FORMAT),
        ("repo@sha256:" + "F" * 64, Problem.DIGEST_INVALID_FORMAT),  # go-digest wants lowercase hex
        ("repo@sha256", INVALID_FORMAT),
        ("repo:tag:tag", INVALID_FORMAT),
        ("repo@" + SHA_F + "@" + SHA_F, INVALID_FORMAT),
        ("repo:" + "t" * 129, INVALID_FORMAT),
        ("répo", INVALID_FORMAT),
        ("repo:tägg", INVALID_FORMAT),
    ],
)
def test_strings_outside_the_grammar(text: str, error: Problem) -> None:
    assert problem_of(parse_normalized_named, text) is error
