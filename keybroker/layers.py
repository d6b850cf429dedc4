"""ocicrypt's layer cipher, AES_256_CTR_HMAC_SHA256, as containerd's decoders read it.

A layer is encrypted with AES-256-CTR under a fresh 32-byte key and a 16-byte initial counter block,
and authenticated with HMAC-SHA256 (keyed with the same key) over the ciphertext. What decrypts it is
split as ocicrypt splits it: the private options (the key, the counter block and the digest of the
plain blob, which the decoder checks) go to the key wrappers, the public options (cipher name, HMAC)
into the layer annotation `org.opencontainers.image.enc.pubopts`. Both are JSON with byte strings in
standard base64, as Go encodes `[]byte`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CIPHER = "AES_256_CTR_HMAC_SHA256"
PUBOPTS_ANNOTATION = "org.opencontainers.image.enc.pubopts"
ENCRYPTED_SUFFIX = "+encrypted"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
# Docker's layer media types and their OCI equivalents, which is what ocicrypt writes when it encrypts them.
_AS_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER + "+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER,
}
ENCRYPTABLE = frozenset({OCI_LAYER, OCI_LAYER + "+gzip", OCI_LAYER + "+zstd", *_AS_OCI})


class LayerCipherError(Exception):
    """A layer that cannot be encrypted or decrypted as asked (its options, its HMAC, its digest)."""


@dataclass(frozen=True)
class EncryptedLayer:
    ciphertext: bytes
    private_options: bytes  # JSON: what the key wrappers protect
    public_options: bytes  # JSON: what the annotation carries in clear


def encrypted_media_type(media_type: str) -> str:
    if media_type not in ENCRYPTABLE:
        raise LayerCipherError(f"layer media type {media_type} cannot be encrypted (not an OCI or Docker tar layer)")
    return _AS_OCI.get(media_type, media_type) + ENCRYPTED_SUFFIX


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ctr(key: bytes, counter: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    return cipher.update(data) + cipher.finalize()


def encrypt(blob: bytes, digest: str) -> EncryptedLayer:
    """`blob` (whose digest is `digest`) encrypted with a fresh key."""
    key, counter = os.urandom(32), os.urandom(16)
    ciphertext = _ctr(key, counter, blob)
    mac = hmac.new(key, ciphertext, hashlib.sha256).digest()
    private = {"symkey": _b64(key), "digest": digest, "cipheroptions": {"nonce": _b64(counter)}}
    public = {"cipher": CIPHER, "hmac": _b64(mac), "cipheroptions": {}}
    return EncryptedLayer(ciphertext, json.dumps(private).encode(), json.dumps(public).encode())


def decrypt(ciphertext: bytes, private_options: bytes, public_options: bytes) -> bytes:
    """The plain blob; checks the HMAC first and the plain digest last (`LayerCipherError` otherwise)."""
    try:
        private, public = json.loads(private_options), json.loads(public_options)
        key = base64.b64decode(private["symkey"], validate=True)
        counter = base64.b64decode(private["cipheroptions"]["nonce"], validate=True)
        expected_mac = base64.b64decode(public["hmac"], validate=True)
        digest = private["digest"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise LayerCipherError("layer options are not ocicrypt's private and public options") from None
    if public.get("cipher") != CIPHER:
        raise LayerCipherError(f"layer cipher {public.get('cipher')!r} is not {CIPHER}")
    if len(key) != 32 or len(counter) != 16:
        raise LayerCipherError("layer key must be 32 bytes and its counter block 16")
    if not hmac.compare_digest(hmac.new(key, ciphertext, hashlib.sha256).digest(), expected_mac):
        raise LayerCipherError("layer HMAC does not verify (wrong key or altered layer)")
    plain = _ctr(key, counter, ciphertext)
    if not isinstance(digest, str) or digest != "sha256:" + hashlib.sha256(plain).hexdigest():
        raise LayerCipherError(f"decrypted layer is not {digest}")
    return plain
