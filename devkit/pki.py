"""The test PKI: CAs, server and client certificates written as PEM files.

The certificates are the product's own (`trustgate.certificates`, what trustgate issues for its
webhook and extender); this module only puts them where processes can read them: each certificate
with its key, `<name>.crt` and `<name>.key` (0600), and the value that names both.

    ca = create_ca(workdir / "pki")                                          # pki/ca.crt, pki/ca.key
    leaf = issue_cert(ca, "trustgate-webhook", ["127.0.0.1", "localhost"], server=True)
    leaf.cert_file, leaf.key_file                                           # pki/trustgate-webhook.crt, .key
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from trustgate.certificates import Issued, PrivateKey, general_names, generate_key, issue, load, new_ca

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key, both also written as PEM files."""

    cert: x509.Certificate
    key: PrivateKey
    cert_file: Path
    key_file: Path

    @property
    def issued(self) -> Issued:
        return Issued(self.cert, self.key)

    @property
    def cert_pem(self) -> bytes:
        return self.issued.cert_pem

    @property
    def key_pem(self) -> bytes:
        return self.issued.key_pem


def create_ca(
    directory: Path,
    common_name: str = "trustgate-e2e-ca",
    *,
    name: str = "ca",
    lifetime: dt.timedelta = CA_LIFETIME,
    path_length: int | None = None,
) -> CertKey:
    """A self-signed CA written as `directory/<name>.crt` and `.key`."""
    return write(new_ca(common_name, lifetime, path_length=path_length), Path(directory), name)


def issue_cert(
    ca: CertKey | None,
    common_name: str,
    sans: Iterable[str] = (),
    *,
    server: bool = False,
    client: bool = False,
    organization: str | None = None,
    out_dir: Path | None = None,
    name: str | None = None,
    lifetime: dt.timedelta = LEAF_LIFETIME,
    key_kind: str = "ec",
) -> CertKey:
    """A leaf certificate signed by `ca` (None: self-signed), see `trustgate.certificates.issue`.

    Written to `out_dir` (default: the CA's directory) as `<name>.crt` / `<name>.key`, `name`
    defaulting to a file-safe form of the common name.
    """
    if out_dir is None:
        if ca is None:
            raise ValueError("a self-signed certificate needs out_dir")
        out_dir = ca.cert_file.parent
    issued = issue(
        ca.issued if ca is not None else None,
        common_name,
        sans,
        server=server,
        client=client,
        organization=organization,
        lifetime=lifetime,
        key=generate_key(key_kind),
    )
    return write(issued, Path(out_dir), name or safe_name(common_name))


def has_sans(cert_file: Path, sans: Iterable[str]) -> bool:
    """Whether the certificate in `cert_file` names every one of `sans`."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    try:
        found = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(name.value) for name in found}
    return all(str(name.value) in have for name in general_names(sans))


def load_cert_key(cert_file: Path, key_file: Path) -> CertKey:
    """A certificate and key written by `create_ca` or `issue_cert`."""
    issued = load(Path(cert_file).read_bytes(), Path(key_file).read_bytes())
    return CertKey(issued.cert, issued.key, Path(cert_file), Path(key_file))


def load_or_create_ca(directory: Path, common_name: str = "trustgate-e2e-ca") -> CertKey:
    """The CA of `directory` if it has one (a work directory reused across runs), else a new one."""
    directory = Path(directory)
    if (directory / "ca.crt").exists() and (directory / "ca.key").exists():
        return load_cert_key(directory / "ca.crt", directory / "ca.key")
    return create_ca(directory, common_name)


def write(issued: Issued, directory: Path, name: str) -> CertKey:
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    write_private(key_file, issued.key_pem)
    write_public(cert_file, issued.cert_pem)
    return CertKey(issued.cert, issued.key, cert_file, key_file)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` readable by its owner only, replacing the file at once (no half-written key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def safe_name(common_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", common_name).strip("-") or "cert"
