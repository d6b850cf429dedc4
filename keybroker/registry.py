"""Just enough of the OCI distribution API to rewrite one image: manifests and blobs, pull and push.

Over HTTPS (a CA bundle may be given) or, for a registry on this machine only, plain HTTP. No auth:
the local registry of the development stack and the end-to-end cluster has none; a registry that
asks for a token answers 401, which is reported as such.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from trustgate.core.reference import ReferenceError, parse_normalized_named

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, *INDEXES))
MAX_MANIFEST = 4 << 20


class RegistryError(Exception):
    """The registry refused or failed a request; the message names it."""


@dataclass(frozen=True)
class ImageName:
    host: str
    repository: str
    reference: str  # a tag or a digest

    @classmethod
    def parse(cls, text: str) -> ImageName:
        try:
            parsed = parse_normalized_named(text)
        except ReferenceError as error:
            raise RegistryError(f"{text!r} is not an image reference: {error}") from None
        return cls(parsed.domain, parsed.path, parsed.digest or parsed.tag or "latest")

    @property
    def repo(self) -> str:
        """The repository as a runtime names it (`host/path`): what a TrustPolicy's patterns match."""
        return f"{self.host}/{self.repository}"

    def __str__(self) -> str:
        sep = "@" if ":" in self.reference else ":"  # a tag has no colon, a digest always one
        return f"{self.repo}{sep}{self.reference}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    def __init__(self, host: str, ca_file: str | None = None, plain_http: bool = False, timeout: float = 60.0) -> None:
        self.base = f"{'http' if plain_http else 'https'}://{host}"
        self.context = None if plain_http else ssl.create_default_context(cafile=ca_file)
        self.timeout = timeout

    def _request(
        self, method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        full = url if url.startswith("http") else self.base + url
        request = urllib.request.Request(full, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=self.timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            if method == "HEAD" and error.code == 404:
                return 404, {}, b""
            detail = error.read()[:300].decode(errors="replace")
            raise RegistryError(f"{method} {full}: {error.code} {error.reason} {detail}".strip()) from None
        except (urllib.error.URLError, OSError) as error:
            raise RegistryError(f"{method} {full}: {error}") from None

    def manifest(self, image: ImageName) -> tuple[dict[str, Any], str, str]:
        """(manifest, media type, digest) of `image`; an index is refused (give a platform's digest)."""
        _, headers, body = self._request(
            "GET", f"/v2/{image.repository}/manifests/{image.reference}", headers={"Accept": ACCEPT}
        )
        if len(body) > MAX_MANIFEST:
            raise RegistryError(f"manifest of {image} larger than {MAX_MANIFEST} bytes")
        document = json.loads(body)
        media_type = document.get("mediaType") or headers.get("Content-Type", "")
        if media_type in INDEXES:
            raise RegistryError(f"{image} is an index of several platforms: name one platform's manifest by digest")
        if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise RegistryError(f"{image} has a manifest of type {media_type!r}, not an OCI or Docker image manifest")
        return document, media_type, digest_of(body)

    def blob(self, image: ImageName, digest: str) -> bytes:
        _, _, body = self._request("GET", f"/v2/{image.repository}/blobs/{digest}")
        if digest_of(body) != digest:
            raise RegistryError(f"blob {digest} of {image.repo} does not have that digest")
        return body

    def has_blob(self, image: ImageName, digest: str) -> bool:
        status, _, _ = self._request("HEAD", f"/v2/{image.repository}/blobs/{digest}")
        return status == 200

    def push_blob(self, image: ImageName, data: bytes) -> str:
        digest = digest_of(data)
        if self.has_blob(image, digest):
            return digest
        _, headers, _ = self._request("POST", f"/v2/{image.repository}/blobs/uploads/")
        location = headers.get("Location") or headers.get("location")
        if not location:
            raise RegistryError(f"the registry gave no upload location for {image.repo}")
        if not location.startswith("http"):
            location = self.base + location
        separator = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(digest)}",
            data=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        return digest

    def push_manifest(self, image: ImageName, manifest: dict[str, Any], media_type: str = OCI_MANIFEST) -> str:
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        self._request(
            "PUT",
            f"/v2/{image.repository}/manifests/{image.reference}",
            data=body,
            headers={"Content-Type": media_type},
        )
        return digest_of(body)
