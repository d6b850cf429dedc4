"""The image reference grammar of github.com/distribution/reference, the parser behind kubelet,
containerd and CRI-O: `Parse`, `ParseNormalizedNamed`, `ParseAnyReference`, `ParseDockerRef`,
`WithName`/`WithTag`/`WithDigest` and the familiar (Docker UI) forms, with go-digest's checks.

Hand-written: the one maintained Python port (docker-image-py) needs the third-party `regex`
module, and the core imports only the standard library.

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain '/'] path
    domain           := host [':' port-number]
    host             := domain-name | IPv4address | '[' IPv6address ']'
    domain-name      := domain-component ['.' domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    path             := path-component ['/' path-component]*
    path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" /[0-9a-fA-F]{32,}/
    identifier       := /[a-f0-9]{64}/
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"  # "the Docker Index", folded into docker.io
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
REPOSITORY_NAME_MAX = 255

# go-digest's algorithms and the hex length of each. Go checks only those a program registers (its
# own tests register sha256 alone); container runtimes register all three, so they are the default.
DIGEST_ALGORITHMS: Mapping[str, int] = MappingProxyType({"sha256": 64, "sha384": 96, "sha512": 128})

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"  # no zone identifier, no embedded IPv4
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"\w[\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# Whole strings only (fullmatch): `$` would accept a trailing newline. ASCII: Go's `\w` is ASCII.
_REFERENCE = re.compile(rf"(?:({_DOMAIN})/)?({_PATH})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_NAME = re.compile(rf"(?:({_DOMAIN})/)?({_PATH})", re.ASCII)
_DOMAIN_ONLY = re.compile(_DOMAIN, re.ASCII)
_TAG_ONLY = re.compile(_TAG, re.ASCII)
_DIGEST_ONLY = re.compile(_DIGEST, re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_HEX = re.compile(r"[a-f0-9]+")
# go-digest's own digest syntax, which decides "invalid" against "unsupported" for other algorithms.
_GO_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


class Problem(enum.StrEnum):
    """Why a string is not a reference: one for each error of distribution/reference and go-digest."""

    INVALID_FORMAT = "invalid reference format"
    NAME_CONTAINS_UPPERCASE = "repository name must be lowercase"
    NAME_EMPTY = "repository name must have at least one component"
    NAME_TOO_LONG = f"repository name must not be more than {REPOSITORY_NAME_MAX} characters"
    NAME_NOT_CANONICAL = "repository name must be canonical"
    IDENTIFIER = "invalid repository name, cannot specify 64-byte hexadecimal strings"
    TAG_INVALID_FORMAT = "invalid tag format"
    DIGEST_INVALID_FORMAT = "invalid digest format"
    DIGEST_INVALID_LENGTH = "invalid checksum digest length"
    DIGEST_UNSUPPORTED = "unsupported digest algorithm"


class ReferenceError(ValueError):
    """A string that is not an image reference; `problem` says which rule it breaks."""

    def __init__(self, problem: Problem, text: str) -> None:
        shown = text if len(text) <= 80 else text[:80] + "..."
        super().__init__(f"{problem.value}: {shown!r}")
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference. `domain` is "" when the string had none (`Parse`, familiar forms); a
    digest-only reference (`ParseAnyReference` of an identifier) has neither domain nor path."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        if not self.path:
            return self.digest or ""
        text = self.name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text


def parse(text: str, *, algorithms: Mapping[str, int] = DIGEST_ALGORITHMS) -> Reference:
    """`reference.Parse`: the reference exactly as written, its domain only where one is spelled out."""
    if text == "":
        raise ReferenceError(Problem.NAME_EMPTY, text)
    match = _REFERENCE.fullmatch(text)
    if match is None:
        lower = text.lower()
        if lower != text and _REFERENCE.fullmatch(lower) is not None:
            raise ReferenceError(Problem.NAME_CONTAINS_UPPERCASE, text)
        raise ReferenceError(Problem.INVALID_FORMAT, text)
    domain, path, tag, digest = match.groups()
    if len(path) > REPOSITORY_NAME_MAX:
        raise ReferenceError(Problem.NAME_TOO_LONG, text)
    if digest is not None:
        validate_digest(digest, algorithms=algorithms)
    return Reference(domain or "", path, tag, digest)


def parse_normalized_named(text: str, *, algorithms: Mapping[str, int] = DIGEST_ALGORITHMS) -> Reference:
    """`reference.ParseNormalizedNamed`: a familiar name made fully qualified (`nginx` is
    `docker.io/library/nginx`), as kubelet and containerd read a pod's `image`."""
    if _IDENTIFIER.fullmatch(text):
        raise ReferenceError(Problem.IDENTIFIER, text)
    domain, remainder = split_docker_domain(text)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise ReferenceError(Problem.NAME_CONTAINS_UPPERCASE, text)
    return parse(f"{domain}/{remainder}", algorithms=algorithms)


def parse_named(text: str, *, algorithms: Mapping[str, int] = DIGEST_ALGORITHMS) -> Reference:
    """`reference.ParseNamed`: like `parse_normalized_named`, for text already in canonical form."""
    reference = parse_normalized_named(text, algorithms=algorithms)
    if str(reference) != text:
        raise ReferenceError(Problem.NAME_NOT_CANONICAL, text)
    return reference


def parse_any_reference(text: str, *, algorithms: Mapping[str, int] = DIGEST_ALGORITHMS) -> Reference:
    """`reference.ParseAnyReference`: an identifier or a digest alone, else a normalized name."""
    if _IDENTIFIER.fullmatch(text):
        return Reference("", "", digest="sha256:" + text)
    try:
        validate_digest(text, algorithms=algorithms)
    except ReferenceError:
        return parse_normalized_named(text, algorithms=algorithms)
    return Reference("", "", digest=text)


def parse_docker_ref(text: str, *, algorithms: Mapping[str, int] = DIGEST_ALGORITHMS) -> Reference:
    """`reference.ParseDockerRef`, what a runtime pulls: a digest drops the tag, no tag means `latest`."""
    reference = parse_normalized_named(text, algorithms=algorithms)
    if reference.digest is not None:
        return replace(reference, tag=None)
    if reference.tag is None:
        return replace(reference, tag=DEFAULT_TAG)
    return reference


def split_docker_domain(name: str) -> tuple[str, str]:
    """`splitDockerDomain`: Docker's rule for whether the first component names a registry."""
    maybe_domain, slash, maybe_remote = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, maybe_remote
    elif names_a_registry(maybe_domain):
        domain, remote = maybe_domain, maybe_remote
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def names_a_registry(component: str) -> bool:
    """Whether a name's first component is a registry rather than a Docker Hub namespace: namespaces
    are lowercase and have no dot or colon, so this is `localhost`, a host, an address or a port."""
    return component == LOCALHOST or "." in component or ":" in component or component.lower() != component


def with_name(name: str) -> Reference:
    """`reference.WithName`: a repository name, without tag or digest."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ReferenceError(Problem.INVALID_FORMAT, name)
    domain, path = match.groups()
    if len(path) > REPOSITORY_NAME_MAX:
        raise ReferenceError(Problem.NAME_TOO_LONG, name)
    return Reference(domain or "", path)


def with_tag(reference: Reference, tag: str) -> Reference:
    """`reference.WithTag`."""
    if _TAG_ONLY.fullmatch(tag) is None:
        raise ReferenceError(Problem.TAG_INVALID_FORMAT, tag)
    return replace(reference, tag=tag)


def with_digest(reference: Reference, digest: str) -> Reference:
    """`reference.WithDigest`: checks the digest's syntax only, as Go does."""
    if _DIGEST_ONLY.fullmatch(digest) is None:
        raise ReferenceError(Problem.DIGEST_INVALID_FORMAT, digest)
    return replace(reference, digest=digest)


def validate_digest(digest: str, *, algorithms: Mapping[str, int] = DIGEST_ALGORITHMS) -> None:
    """go-digest's `Digest.Validate`: a known algorithm and lowercase hex of exactly its length."""
    algorithm, colon, encoded = digest.partition(":")
    if not algorithm or not colon or not encoded:
        raise ReferenceError(Problem.DIGEST_INVALID_FORMAT, digest)
    length = algorithms.get(algorithm)
    if length is None:
        known = _GO_DIGEST.fullmatch(digest) is not None
        raise ReferenceError(Problem.DIGEST_UNSUPPORTED if known else Problem.DIGEST_INVALID_FORMAT, digest)
    if len(encoded) != length:
        raise ReferenceError(Problem.DIGEST_INVALID_LENGTH, digest)
    if _HEX.fullmatch(encoded) is None:
        raise ReferenceError(Problem.DIGEST_INVALID_FORMAT, digest)


def is_domain(text: str) -> bool:
    """Whether `text` is a registry domain of the grammar: a host name, IPv4 or [IPv6], and a port."""
    return _DOMAIN_ONLY.fullmatch(text) is not None


def is_identifier(text: str) -> bool:
    """Whether `text` is a 64-hex image identifier, which may not be used as a repository name."""
    return _IDENTIFIER.fullmatch(text) is not None


def familiar(reference: Reference) -> Reference:
    """`familiarizeName`: Docker Hub's domain dropped, and `library/` for official images."""
    if reference.domain != DEFAULT_DOMAIN:
        return reference
    path = reference.path
    if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX) :]:
        path = path[len(OFFICIAL_REPO_PREFIX) :]
    return replace(reference, domain="", path=path)


def familiar_name(reference: Reference) -> str:
    """`reference.FamiliarName`: `nginx` for `docker.io/library/nginx:1`."""
    return familiar(reference).name


def familiar_string(reference: Reference) -> str:
    """`reference.FamiliarString`: `nginx:1` for `docker.io/library/nginx:1`."""
    return str(familiar(reference))
