"""Key material from files: verification keys (JWKS, PEM) and signing keys, as operators give them.

The core (`trustgate.core.keys`) parses key material; this module only reads it from disk and names
the file in every error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from trustgate.core.keys import KeyConfigError, KeySet, PrivateKey, key_from_pem, keys_from_jwks, private_key_from_pem


def load_keys(
    jwks_paths: Iterable[str | Path] = (), pem_paths: Iterable[str | Path] = (), issuers: Iterable[str] | None = None
) -> KeySet:
    """Every key of the given JWKS and PEM files, optionally scoped to `issuers`."""
    scope = frozenset(issuers) if issuers is not None else None
    keys = []
    for path in jwks_paths:
        try:
            document = json.loads(read_file(path))
        except ValueError as error:
            raise KeyConfigError(f"{path}: not valid JSON ({error})") from None
        keys.extend(keys_from_jwks(document, source=str(path), issuers=scope))
    for path in pem_paths:
        keys.append(key_from_pem(read_file(path), source=str(path), issuers=scope))
    return KeySet(keys)


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise KeyConfigError(f"cannot read key file {path}: {error.strerror}") from None


def load_private_key(path: str | Path) -> PrivateKey:
    return private_key_from_pem(read_file(path), source=str(path))
