"""Turning an image into an encrypted one whose key the broker holds, and rotating that key.

`encrypt_image` copies an image within a registry (or to another repository of it), each layer
encrypted with a fresh layer key (ocicrypt's AES_256_CTR_HMAC_SHA256, `keybroker.layers`). Each layer
key is sealed under one new image key (`keybroker.wrapping.seal`) and travels in the layer's
`org.opencontainers.image.enc.keys.provider.trustgate` annotation; the image key is registered in
the broker's store with the image's repository and the TrustPolicy that covers it. The config blob is
copied unchanged: containerd checks each decrypted layer against its diff id.

`rotate_image_key` reads the encrypted image back, opens every layer with the current image key,
and encrypts it again with new layer keys under a new image key, replacing the old key in the store
in the same write: wrapped keys of the old image (in copies, mirrors, a node's cache of manifests)
are then useless, since the broker no longer holds the key they were sealed under.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from keybroker import layers
from keybroker.registry import OCI_MANIFEST, ImageName, Registry
from keybroker.store import KeyStore, StoredKey, created_now, new_kid
from keybroker.wrapping import ANNOTATION, Envelope, new_image_key, open_sealed, seal
from trustgate.core.release import ImageKeyRecord


class EncryptionError(Exception):
    """The image cannot be encrypted or rotated as asked."""


@dataclass(frozen=True)
class Encrypted:
    image: str  # the reference pushed
    digest: str  # its manifest digest
    kid: str
    layers: int
    replaced: str = ""  # the key id a rotation retired


def _encrypt_layers(
    registry: Registry,
    source: ImageName,
    target: ImageName,
    manifest: dict[str, Any],
    key: bytes,
    kid: str,
    plain: Any,
) -> list[dict[str, Any]]:
    out = []
    for descriptor in manifest.get("layers") or []:
        blob, media_type, digest = plain(descriptor)
        encrypted = layers.encrypt(blob, digest)
        envelope = seal(key, kid, str(target), digest, encrypted.private_options)
        pushed = registry.push_blob(target, encrypted.ciphertext)
        annotations = {
            k: v
            for k, v in (descriptor.get("annotations") or {}).items()
            if not k.startswith("org.opencontainers.image.enc.")
        }
        annotations[ANNOTATION] = base64.b64encode(envelope.to_bytes()).decode()
        annotations[layers.PUBOPTS_ANNOTATION] = base64.b64encode(encrypted.public_options).decode()
        out.append(
            {
                "mediaType": layers.encrypted_media_type(media_type),
                "digest": pushed,
                "size": len(encrypted.ciphertext),
                "annotations": annotations,
            }
        )
    if not out:
        raise EncryptionError(f"{source} has no layers to encrypt")
    return out


def _push(
    registry: Registry, source: ImageName, target: ImageName, manifest: dict[str, Any], new_layers: list[dict[str, Any]]
) -> str:
    config = manifest["config"]
    if not registry.has_blob(target, config["digest"]):
        registry.push_blob(target, registry.blob(source, config["digest"]))
    config_type = config.get("mediaType")
    if config_type == "application/vnd.docker.container.image.v1+json":
        config_type = "application/vnd.oci.image.config.v1+json"  # the same JSON; an OCI manifest names it so
    encrypted = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": config["digest"], "size": config["size"]},
        "layers": new_layers,
    }
    if manifest.get("annotations"):
        encrypted["annotations"] = manifest["annotations"]
    return registry.push_manifest(target, encrypted)


def encrypt_image(registry: Registry, store: KeyStore, source: str, target: str, policy: str) -> Encrypted:
    """`source` pushed as `target` with encrypted layers; the new image key registered for `policy`."""
    src, dst = ImageName.parse(source), ImageName.parse(target)
    manifest, _, _ = registry.manifest(src)
    if any(layers.ENCRYPTED_SUFFIX in (d.get("mediaType") or "") for d in manifest.get("layers") or []):
        raise EncryptionError(f"{source} is encrypted already: to change its key, use rotate-key")
    key, kid = new_image_key(), new_kid()

    def plain(descriptor: dict[str, Any]) -> tuple[bytes, str, str]:
        return registry.blob(src, descriptor["digest"]), descriptor["mediaType"], descriptor["digest"]

    new_layers = _encrypt_layers(registry, src, dst, manifest, key, kid, plain)
    store.put(StoredKey(ImageKeyRecord(kid=kid, image=str(dst), policy=policy), key, created_now()))
    digest = _push(registry, src, dst, manifest, new_layers)
    return Encrypted(str(dst), digest, kid, len(new_layers))


def rotate_image_key(registry: Registry, store: KeyStore, target: str) -> Encrypted:
    """`target` encrypted again under a new image key; the old key leaves the store."""
    dst = ImageName.parse(target)
    manifest, _, _ = registry.manifest(dst)
    envelopes = []
    for descriptor in manifest.get("layers") or []:
        wrapped = (descriptor.get("annotations") or {}).get(ANNOTATION)
        if not wrapped:
            raise EncryptionError(f"layer {descriptor.get('digest')} of {target} has no trustgate-wrapped key")
        envelopes.append(Envelope.from_bytes(base64.b64decode(wrapped)))
    kids = {e.kid for e in envelopes}
    if len(kids) != 1:
        raise EncryptionError(f"{target} has layers under {len(kids)} image keys; expected one")
    [old_kid] = kids
    old = store.get(old_kid)
    if old is None:
        raise EncryptionError(
            f"the broker holds no key {old_kid} for {target}: it cannot be decrypted, encrypt the source again"
        )
    key, kid = new_image_key(), new_kid()

    def plain(descriptor: dict[str, Any]) -> tuple[bytes, str, str]:
        envelope = Envelope.from_bytes(base64.b64decode(descriptor["annotations"][ANNOTATION]))
        options = open_sealed(old.key, envelope)
        public = base64.b64decode(descriptor["annotations"][layers.PUBOPTS_ANNOTATION])
        blob = layers.decrypt(registry.blob(dst, descriptor["digest"]), options, public)
        return blob, descriptor["mediaType"].removesuffix(layers.ENCRYPTED_SUFFIX), envelope.layer

    new_layers = _encrypt_layers(registry, dst, dst, manifest, key, kid, plain)
    record = ImageKeyRecord(kid=kid, image=old.record.image, policy=old.record.policy)
    digest = _push(registry, dst, dst, manifest, new_layers)
    store.put(StoredKey(record, key, created_now()), replaces=[old_kid])
    return Encrypted(str(dst), digest, kid, len(new_layers), replaced=old_kid)
