"""Where the broker keeps image keys: a Kubernetes Secret in trustgate's namespace.

One data entry per key id, holding the key and what it was registered for (the image and the
TrustPolicy named at registration) as JSON. Why a Secret: keys at rest get the cluster's secret
encryption and RBAC (only the authority's ServiceAccount reads it; the Node authorizer gives
kubelets no access to a Secret that no pod mounts), they survive restarts and are shared by
replicas, and an operator registers or rotates keys with the same client as everything else
(`trustctl image encrypt|rotate-key`). The broker reads the Secret on every release, so a rotated
or removed key is refused from the next request on.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from trustgate.core.release import ImageKeyRecord

SECRET_NAME = "trustgate-image-keys"
_KID = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")


class KeyStoreError(Exception):
    """The key store cannot be read or written; `reason` is for operators."""


@dataclass(frozen=True)
class StoredKey:
    record: ImageKeyRecord
    key: bytes
    created: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "kid": self.record.kid,
                "image": self.record.image,
                "policy": self.record.policy,
                "key": base64.b64encode(self.key).decode(),
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> StoredKey:
        try:
            data = json.loads(text)
            record = ImageKeyRecord(kid=str(data["kid"]), image=str(data["image"]), policy=str(data["policy"]))
            key = base64.b64decode(data["key"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise KeyStoreError("an image key entry is not a stored key") from None
        if len(key) != 32:
            raise KeyStoreError(f"image key {record.kid} is not 32 bytes")
        return cls(record, key, str(data.get("created") or ""))


def new_kid() -> str:
    return "ik-" + secrets.token_hex(8)


def created_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KeyStore(Protocol):
    def get(self, kid: str) -> StoredKey | None: ...

    def put(self, key: StoredKey, replaces: Iterable[str] = ()) -> None:
        """Store `key`, removing the keys `replaces` in the same write (a rotation)."""
        ...

    def all(self) -> list[StoredKey]: ...


class MemoryKeyStore:
    """Keys in memory: tests and one-shot tools."""

    def __init__(self, keys: Iterable[StoredKey] = ()) -> None:
        self._keys = {k.record.kid: k for k in keys}
        self._lock = threading.Lock()

    def get(self, kid: str) -> StoredKey | None:
        return self._keys.get(kid)

    def put(self, key: StoredKey, replaces: Iterable[str] = ()) -> None:
        with self._lock:
            for kid in replaces:
                self._keys.pop(kid, None)
            self._keys[key.record.kid] = key

    def all(self) -> list[StoredKey]:
        return list(self._keys.values())


class SecretKeyStore:
    """Keys in the Secret `name` of `namespace`, through a kubernetes `ApiClient`."""

    def __init__(self, api: Any, namespace: str, name: str = SECRET_NAME) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.namespace, self.name = namespace, name
        self._errors = client.exceptions.ApiException

    def _read(self) -> dict[str, str]:
        try:
            secret = self.core.read_namespaced_secret(self.name, self.namespace)
        except self._errors as error:
            if error.status == 404:
                return {}
            raise KeyStoreError(
                f"cannot read Secret {self.namespace}/{self.name}: {error.status} {error.reason}"
            ) from None
        return dict(secret.data or {})

    def get(self, kid: str) -> StoredKey | None:
        if not _KID.fullmatch(kid):
            return None
        value = self._read().get(kid)
        return None if value is None else StoredKey.from_json(base64.b64decode(value).decode())

    def all(self) -> list[StoredKey]:
        return [StoredKey.from_json(base64.b64decode(v).decode()) for v in self._read().values()]

    def put(self, key: StoredKey, replaces: Iterable[str] = ()) -> None:
        data: dict[str, str | None] = {kid: None for kid in replaces}  # a merge patch removes null members
        data[key.record.kid] = base64.b64encode(key.to_json().encode()).decode()
        try:
            self.core.patch_namespaced_secret(self.name, self.namespace, {"data": data})
        except self._errors as error:
            if error.status != 404:
                raise KeyStoreError(
                    f"cannot write Secret {self.namespace}/{self.name}: {error.status} {error.reason}"
                ) from None
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/part-of": "trustgate"},
                },
                "type": "Opaque",
                "data": {k: v for k, v in data.items() if v is not None},
            }
            try:
                self.core.create_namespaced_secret(self.namespace, body)
            except self._errors as created:
                raise KeyStoreError(
                    f"cannot create Secret {self.namespace}/{self.name}: {created.status} {created.reason}"
                ) from None
