"""Image references as container runtimes resolve them, for matching `encryptedImages` patterns.

An encrypted image may only be pulled and decrypted on a trusted node, so a pattern must match every
reference that pulls the same image: `nginx`, `docker.io/library/nginx:latest`,
`DOCKER.IO:443/library/nginx` and `registry-1.docker.io/library/nginx@sha256:...` are one repository.
Matching errs towards a match wherever it cannot know better: a false match only asks for a trusted
node, a missed one lets an encrypted image run on an untrusted node.

An image is read with `reference.parse_normalized_named` (what kubelet and containerd do), then
resolved as a runtime reaches the registry:

| written                                    | resolved                                         |
| ------------------------------------------ | ------------------------------------------------ |
| `REGISTRY.Example/x`                       | `registry.example/x`: host names are case-blind  |
| `registry.example:443/x`, `:0443`          | `registry.example/x`: 443 is the HTTPS default   |
| `[0:0::1]:5000/x`                          | `[::1]:5000/x`: one spelling per IPv6 address    |
| `registry.example./x`                      | `registry.example/x`: the same name, for DNS     |
| `foo_bar.com/x` (not a domain to the grammar) | host `foo_bar.com`, the one containerd dials  |
| `index.docker.io/`, `registry-1.docker.io/`, `registry.hub.docker.com/` | `docker.io/` (see `HUB_ALIASES`) |
| `nginx`, `docker.io/nginx`                 | `docker.io/library/nginx`                        |
| `repo` (no tag, no digest)                 | `repo:latest`                                    |

A pattern is an fnmatch glob (`*`, `?`, `[...]`; `*` crosses `/`, so `registry.example/secret/*`
covers `registry.example/secret/a/b`) over a reference, split like one into name, `:tag` and
`@digest`:

- name: a literal registry host in the pattern (`registry.example/...`, `[::1]:5000/...`) is resolved
  as above and compared with the image's, and the rest of the name is a glob over the repository
  path, in full (`library/nginx`) or familiar (`nginx`) form; a pattern whose first component is a
  Docker Hub namespace (`acme/*`, `nginx`) is a Docker Hub path; a pattern with glob characters in
  its first component (`*/vault`, `*.example/x`, `nginx*`) is matched against every way of writing
  the image's name: each Docker Hub alias, with and without `:443`, and the familiar forms.
- no tag and no digest: every tag and every digest of the matching repositories.
- a tag: an image with that tag, or with no tag (`latest`) when the glob matches `latest`; and every
  image pinned by digest, whose tag is ignored at pull time: a digest may be the content of the
  pattern's tag, and nothing here can ask the registry.
- a digest: an image with that digest, tagged or not; and every image with a tag but no digest, as
  that tag may point at the pattern's digest.
- a glob may also run over the boundaries of name, tag and digest as the text is written
  (`registry.example/secret/*1` matches `registry.example/secret/db:1`, `registry.example:50*`
  matches `registry.example:5000/x`): a pattern with glob characters is also matched, as text,
  against each written form of the image (with an IPv6 host such as `[::1]:*/x` read as text too,
  not as a bracket expression).

An image outside the grammar (the API server takes almost any string) is never pulled by kubelet,
which refuses what it cannot parse, but is matched anyway, loosely: split like a reference without
validation, and also lowercased and stripped; its raw and lowercased text is matched against the
pattern as written too.

Patterns come from TrustPolicies (few), images from every container of every pod a policy might
select: both are parsed once and cached, so a call is two cache lookups and a few regex matches.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import translate
from functools import cached_property, lru_cache

from trustgate.core.reference import (
    DEFAULT_DOMAIN,
    DEFAULT_TAG,
    OFFICIAL_REPO_PREFIX,
    Reference,
    ReferenceError,
    is_domain,
    names_a_registry,
    parse_normalized_named,
    split_docker_domain,
)

HTTPS_PORT = "443"
# Hosts that serve Docker Hub's registry, folded into docker.io as a runtime reaches them all at one
# registry. index.docker.io: the legacy Docker Index name, folded by ParseNormalizedNamed itself.
# registry-1.docker.io: the registry API host that containerd and Docker dial for docker.io.
# registry.hub.docker.com: the Hub's v1-era API host, still written in image references and mirror
# settings; counted as the Hub because a wrong alias only over-matches, while a missing one would let
# a Hub image through under another name.
HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_HUB_HOSTS = (DEFAULT_DOMAIN, *sorted(HUB_ALIASES))
_GLOB_CHARACTERS = frozenset("*?[")
_IPV6_HOST = re.compile(r"\[[0-9a-f:]+\]")
_IMAGE_CACHE = 4096
_PATTERN_CACHE = 1024

Glob = Callable[[str], "re.Match[str] | None"]


def normalize(reference: str) -> str:
    """The reference as a runtime resolves it (host, port, Docker Hub name), without adding a tag."""
    return str(_image(reference).views[0].reference)


def matches(image: str, pattern: str) -> bool:
    """Whether `image` may pull an image that the `encryptedImages` glob `pattern` covers."""
    return _pattern(pattern).matches(_image(image))


# --- images -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """One resolved reading of an image, with the written forms that globs are matched against. The
    spellings of its name are made when a pattern with a glob in its host first needs them."""

    reference: Reference
    paths: tuple[str, ...]  # the repository path, and its familiar form on Docker Hub
    suffixes: tuple[str, ...]  # the tag and digest as they may be written after the name

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Every spelling of the repository name: each host alias, with and without `:443`, and the
        familiar forms on Docker Hub."""
        domain = self.reference.domain
        hosts = list(_HUB_HOSTS) if domain == DEFAULT_DOMAIN else [domain]
        hosts.extend([host + ":" + HTTPS_PORT for host in hosts if _split_port(host)[1] is None])
        names = [f"{host}/{path}" for host in hosts for path in self.paths]
        if domain == DEFAULT_DOMAIN:  # the familiar forms, but not `foo.bar/x`, which names a registry
            names.extend(path for path in self.paths if "/" not in path or not names_a_registry(path.split("/")[0]))
        return tuple(names)

    # The names, and every name with every suffix, one a line: one substring search of these skips
    # a glob whose literal text none of them contains.
    @cached_property
    def names_text(self) -> str:
        return "\n".join(self.names)

    @cached_property
    def forms_text(self) -> str:
        return "\n".join(name + suffix for name in self.names for suffix in self.suffixes)

    def names_for(self, host: str | None, needle: str, forms: bool) -> tuple[str, ...]:
        """The names a pattern's glob runs over here: with a `host`, the paths when the image is on
        that registry; without, every spelling, unless the glob's `needle` is in none of them (or, for
        `forms`, in none of the written forms). Empty when the glob cannot match."""
        if host is None:
            return self.names if needle in (self.forms_text if forms else self.names_text) else ()
        return self.paths if host == self.reference.domain else ()


@dataclass(frozen=True, slots=True)
class _Image:
    views: tuple[_View, ...]
    raw: tuple[str, ...] = ()  # an unparseable image's own text, matched against patterns as written


@lru_cache(maxsize=_IMAGE_CACHE)
def _image(text: str) -> _Image:
    try:
        return _Image((_view(parse_normalized_named(text)),))
    except ReferenceError:
        pass
    views: dict[Reference, _View] = {}
    for candidate in dict.fromkeys((text, text.strip(), text.lower(), text.strip().lower())):
        try:
            reference = parse_normalized_named(candidate)
        except ReferenceError:
            reference = _loose(candidate)
        view = _view(reference)
        views.setdefault(view.reference, view)
    return _Image(tuple(views.values()), raw=tuple(dict.fromkeys((text, text.lower()))))


def _loose(text: str) -> Reference:
    """A string outside the grammar split as a reference would be, without validating any part."""
    name, tag, digest = _split(text)
    domain, path = split_docker_domain(name)
    return Reference(domain, path, tag, digest)


def _view(parsed: Reference) -> _View:
    domain, path = parsed.domain, parsed.path
    if not domain:
        # `foo_bar.com/app`: a registry by splitDockerDomain's rule but not by the grammar, so Parse
        # keeps it in the path; containerd still dials the first component as the host.
        domain, _, path = path.partition("/")
    domain = canonical_domain(domain)
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path  # `registry-1.docker.io/nginx`, `DOCKER.IO/nginx`
    same = domain == parsed.domain and path == parsed.path
    reference = parsed if same else Reference(domain, path, parsed.tag, parsed.digest)
    paths = (path,)
    if domain == DEFAULT_DOMAIN and path.startswith(OFFICIAL_REPO_PREFIX):
        short = path[len(OFFICIAL_REPO_PREFIX) :]
        if "/" not in short:
            paths = (path, short)
    return _View(reference, paths, _suffixes(reference))


def _suffixes(reference: Reference) -> tuple[str, ...]:
    tag, digest = reference.tag, reference.digest
    suffixes = [""]
    if tag is not None:
        suffixes.append(":" + tag)
    elif digest is None:
        suffixes.append(":" + DEFAULT_TAG)
    if digest is not None:
        suffixes.append("@" + digest)
        if tag is not None:
            suffixes.append(f":{tag}@{digest}")
    return tuple(suffixes)


def canonical_domain(domain: str) -> str:
    """A registry host as a runtime dials it: lowercase, no `:443`, one IPv6 spelling, Hub aliases folded."""
    host, port = _split_port(domain.lower())
    if host.endswith(".") and not host.startswith("["):
        host = host[:-1]  # `registry.example.`: the same name, fully qualified for DNS
    if host.startswith("[") and host.endswith("]"):
        with contextlib.suppress(ValueError):  # outside the grammar's IPv6 subset: kept as written
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
    if port is not None and port.isascii() and port.isdigit():
        port = port.lstrip("0") or "0"
    if port == HTTPS_PORT:
        port = None
    if port is None and host in HUB_ALIASES:
        host = DEFAULT_DOMAIN
    return host if port is None else f"{host}:{port}"


def _split_port(domain: str) -> tuple[str, str | None]:
    if domain.startswith("["):
        end = domain.find("]") + 1
        if end and domain[end : end + 1] == ":":
            return domain[:end], domain[end + 1 :]
        return domain, None
    host, colon, port = domain.rpartition(":")
    return (host, port) if colon else (domain, None)


# --- patterns ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reading:
    """The pattern read as a reference: a glob over the repository name, then the tag and digest
    rules. With a `host`, the glob runs over the image's paths when the image is on that registry;
    without, over every spelling of the image's name."""

    host: str | None
    name: Glob
    tag: Glob | None
    digest: Glob | None
    needle: str = ""  # text that every name `name` matches contains

    def matches(self, view: _View) -> bool:
        names = view.names_for(self.host, self.needle, forms=False)
        if not names:
            return False
        reference = view.reference
        if self.digest is not None:  # a tag without a digest may point at the pattern's digest
            content = reference.digest is None or self.digest(reference.digest) is not None
        elif self.tag is not None:  # a digest may be the content of the pattern's tag
            content = reference.digest is not None or self.tag(reference.tag or DEFAULT_TAG) is not None
        else:
            content = True
        return content and any(map(self.name, names))


@dataclass(frozen=True, slots=True)
class _Text:
    """The pattern read as text, for a glob that may run over the boundary of name, tag and digest
    (`registry.example/secret/*1`, `registry-1.docker.io:*`): matched against each written form of
    the image, name and suffix. With a `host`, only the image's paths on that registry."""

    host: str | None
    glob: Glob
    needle: str = ""  # text that every form `glob` matches contains

    def matches(self, view: _View) -> bool:
        for name in view.names_for(self.host, self.needle, forms=True):
            for suffix in view.suffixes:
                if self.glob(name + suffix):
                    return True
        return False


@dataclass(frozen=True, slots=True)
class _Pattern:
    readings: tuple[_Reading | _Text, ...]
    raw: tuple[Glob, ...]  # the pattern as written, for the text of an image outside the grammar

    def matches(self, image: _Image) -> bool:
        for view in image.views:
            for reading in self.readings:
                if reading.matches(view):
                    return True
        for text in image.raw:
            for glob in self.raw:
                if glob(text):
                    return True
        return False


@lru_cache(maxsize=_PATTERN_CACHE)
def _pattern(pattern: str) -> _Pattern:
    name, tag, digest = _split(pattern)
    tail = pattern[len(name) :]  # the `:tag` and `@digest` as written
    tag_glob = _glob(tag) if tag is not None else None
    digest_glob = _glob(digest) if digest is not None else None
    first, slash, rest = name.partition("/")
    readings: list[_Reading | _Text] = []
    if slash and names_a_registry(first) and (not _has_glob(first) or is_domain(first)):
        host = canonical_domain(first)  # `registry.example/...`, `[::1]:5000/...`
        readings.append(_Reading(host, _glob(rest), tag_glob, digest_glob))
        if _has_glob(rest + tail):
            readings.append(_Text(host, _glob(rest + tail)))
    elif not _has_glob(first):  # a Docker Hub path: `acme/*`, `library/nginx`, `nginx`
        readings.append(_Reading(DEFAULT_DOMAIN, _glob(name), tag_glob, digest_glob))
        if _has_glob(pattern):
            readings.append(_Text(DEFAULT_DOMAIN, _glob(pattern)))
    if _has_glob(first):  # `*/vault`, `*.example/x`, `nginx*`: the host, if any, is in the glob
        for glob in _host_variants(first.lower() + slash + rest):
            readings.append(_Reading(None, _glob(glob), tag_glob, digest_glob, _needle(glob)))
    if _has_glob(pattern) and (_has_glob(first) or (not slash and names_a_registry(name))):
        # `registry.example:50*` or `*:v1`: the glob may cover a host, a port and a tag at once
        lowered = first.lower() + pattern[len(first) :]  # the host's part, if any, is case-blind
        for text in dict.fromkeys((pattern, *_host_variants(lowered))):
            readings.append(_Text(None, _glob(text), _needle(text)))
    return _Pattern(tuple(readings), raw=tuple(_glob(p) for p in dict.fromkeys((pattern, pattern.lower()))))


def _split(text: str) -> tuple[str, str | None, str | None]:
    """Name, tag and digest, as a reference splits: at the `@`, then at a `:` after the last `/`."""
    rest, at, digest = text.partition("@")
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        return rest[:colon], rest[colon + 1 :], digest if at else None
    return rest, None, digest if at else None


def _host_variants(glob: str) -> tuple[str, ...]:
    """A glob, and the same with the IPv6 hosts in its first component read as text, not as fnmatch's
    bracket expressions: `[::1]:*/x`."""
    first, slash, rest = glob.partition("/")
    literal = _IPV6_HOST.sub(lambda host: "[[]" + canonical_domain(host.group())[1:], first) + slash + rest
    return tuple(dict.fromkeys((glob, literal)))


def _has_glob(text: str) -> bool:
    return not _GLOB_CHARACTERS.isdisjoint(text)


def _needle(glob: str) -> str:
    """The longest literal run of a glob, which every string it matches contains. Only the text before
    any `[` counts: where a bracket expression ends is fnmatch's to decide."""
    return max(re.split(r"[*?]", glob.partition("[")[0]), key=len)


def _glob(glob: str) -> Glob:
    return re.compile(translate(glob)).match
