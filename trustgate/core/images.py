"""Image references as container runtimes resolve them, for matching `encryptedImages` patterns.

`nginx`, `docker.io/library/nginx:latest` and `DOCKER.IO/library/nginx` pull the same image, so a
pattern must match all of them. Normalization follows distribution/reference's
ParseNormalizedNamed (default registry docker.io, `library/` for official images, registry host
case-insensitive, implicit `:latest`); no maintained Python package implements it.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

DEFAULT_REGISTRY = "docker.io"
_REGISTRY_ALIASES = {"index.docker.io": DEFAULT_REGISTRY}


def normalize(reference: str) -> str:
    """The fully qualified form of an image reference, without adding a tag."""
    first, sep, rest = reference.partition("/")
    is_registry = sep and ("." in first or ":" in first or first == "localhost" or first != first.lower())
    if is_registry:
        registry, path = first.lower(), rest
    else:
        registry, path = DEFAULT_REGISTRY, reference
    registry = _REGISTRY_ALIASES.get(registry, registry)
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = "library/" + path
    return f"{registry}/{path}"


def _forms(reference: str) -> set[str]:
    full = normalize(reference)
    forms = {reference, full}
    last = full.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        forms.add(full + ":latest")
    return forms


def matches(image: str, pattern: str) -> bool:
    """Whether `image` matches the glob `pattern`, in the image's written or normalized forms.

    Matching errs towards a match: a false match only asks for a trusted node, a missed one
    would let an encrypted image be pulled onto an untrusted node.
    """
    patterns = {pattern, normalize(pattern)}
    return any(fnmatchcase(form, p) for form in _forms(image) for p in patterns)
