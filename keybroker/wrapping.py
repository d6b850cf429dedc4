"""The two encryptions of a layer key: at rest in the image, and in flight to one node.

At rest (`seal` / `open_sealed`): ocicrypt's private layer options (the layer's symmetric key, nonce
and plain digest, as JSON) are sealed with AES-256-GCM under the image key that only the broker
holds, and travel in the layer annotation `org.opencontainers.image.enc.keys.provider.trustgate`
as an `Envelope`: key id, image, layer digest, IV and ciphertext, the first three bound as
associated data. The image's manifest thus holds nothing a registry reader can use.

In flight (`wrap` / `unwrap`): the broker releases a layer key to the X25519 public key of the node's
attested session (an ephemeral key pair that the node's key provider made for this one request and
keeps in memory only). The key is ECDH between that key and an ephemeral key of the broker, through
HKDF-SHA256 salted with the request's `binding`, and the layer key is sealed with AES-256-GCM with
the binding as associated data. The binding is what the node's TPM quoted (as qualifying data) to
prove that this session key was made for this challenge by the TPM of the node: only the process
that holds the session's private key, on that node, can unwrap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROVIDER = "trustgate"
ANNOTATION = f"org.opencontainers.image.enc.keys.provider.{PROVIDER}"
ENVELOPE_VERSION = 1
IMAGE_KEY_BYTES = 32
MAX_ENVELOPE_BYTES = 8192
_BINDING_LABEL = b"trustgate image key release v1\x00"
_WRAP_INFO = b"trustgate layer key to a node session v1"


class WrappingError(Exception):
    """A sealed or wrapped key that cannot be opened (malformed, another key, or tampered with)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str, error: type[Exception] = WrappingError) -> bytes:
    """The bytes of a base64 member of a JSON document; `error` (naming `what`) when it is none."""
    if not isinstance(value, str):
        raise error(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{what} is not base64") from None


@dataclass(frozen=True)
class Envelope:
    """A layer key sealed under an image key (the content of the provider annotation)."""

    kid: str
    image: str
    layer: str  # the digest of the encrypted layer's plain content
    iv: bytes
    ciphertext: bytes

    def associated_data(self) -> bytes:
        return json.dumps([ENVELOPE_VERSION, self.kid, self.image, self.layer], separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        document = {
            "v": ENVELOPE_VERSION,
            "kid": self.kid,
            "image": self.image,
            "layer": self.layer,
            "iv": _b64(self.iv),
            "ct": _b64(self.ciphertext),
        }
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        if len(data) > MAX_ENVELOPE_BYTES:
            raise WrappingError(f"wrapped key larger than {MAX_ENVELOPE_BYTES} bytes")
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise WrappingError("wrapped key is not JSON (not a trustgate-wrapped layer key)") from None
        if not isinstance(document, dict) or document.get("v") != ENVELOPE_VERSION:
            raise WrappingError("wrapped key is not a trustgate envelope of version 1")
        for name in ("kid", "image", "layer"):
            if not isinstance(document.get(name), str) or not document[name]:
                raise WrappingError(f"wrapped key has no {name}")
        return cls(
            kid=document["kid"],
            image=document["image"],
            layer=document["layer"],
            iv=unb64(document.get("iv"), "wrapped key iv"),
            ciphertext=unb64(document.get("ct"), "wrapped key ciphertext"),
        )


def new_image_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * IMAGE_KEY_BYTES)


def seal(image_key: bytes, kid: str, image: str, layer: str, layer_options: bytes) -> Envelope:
    """`layer_options` (ocicrypt's private layer options, JSON) sealed under `image_key`."""
    draft = Envelope(kid, image, layer, os.urandom(12), b"")
    ciphertext = AESGCM(image_key).encrypt(draft.iv, layer_options, draft.associated_data())
    return Envelope(kid, image, layer, draft.iv, ciphertext)


def open_sealed(image_key: bytes, envelope: Envelope) -> bytes:
    try:
        return AESGCM(image_key).decrypt(envelope.iv, envelope.ciphertext, envelope.associated_data())
    except (InvalidTag, ValueError):
        raise WrappingError(f"the wrapped key does not open with image key {envelope.kid} (tampered with?)") from None


def binding(nonce: bytes, session_public: bytes, annotation: bytes) -> bytes:
    """What the node's TPM quotes for a request: the challenge, the session key and the wrapped key asked for."""
    digest = hashlib.sha256(_BINDING_LABEL)
    for part in (nonce, session_public, annotation):
        digest.update(struct.pack(">I", len(part)) + part)
    return digest.digest()


def new_session() -> tuple[X25519PrivateKey, bytes]:
    """A session key pair for one request: the private key never leaves the caller's memory."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _session_key(shared: bytes, salt: bytes, ephemeral: bytes, session: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_WRAP_INFO + ephemeral + session).derive(shared)


def wrap(secret: bytes, session_public: bytes, bound: bytes) -> dict[str, str]:
    """`secret` for the holder of the session key `session_public` (raw X25519), bound to `bound`."""
    try:
        peer = X25519PublicKey.from_public_bytes(session_public)
    except ValueError:
        raise WrappingError("session key is not a raw X25519 public key") from None
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _session_key(ephemeral.exchange(peer), bound, ephemeral_public, session_public)
    iv = os.urandom(12)
    return {"epk": _b64(ephemeral_public), "iv": _b64(iv), "ct": _b64(AESGCM(key).encrypt(iv, secret, bound))}


def unwrap(wrapped: Any, session: X25519PrivateKey, bound: bytes) -> bytes:
    if not isinstance(wrapped, dict):
        raise WrappingError("the released key is not an object")
    ephemeral_public = unb64(wrapped.get("epk"), "released key epk")
    try:
        peer = X25519PublicKey.from_public_bytes(ephemeral_public)
    except ValueError:
        raise WrappingError("the released key's epk is not a raw X25519 public key") from None
    session_public = session.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _session_key(session.exchange(peer), bound, ephemeral_public, session_public)
    try:
        return AESGCM(key).decrypt(unb64(wrapped.get("iv"), "released key iv"), unb64(wrapped.get("ct"), "ct"), bound)
    except (InvalidTag, ValueError):
        raise WrappingError("the released key does not open with this session's key") from None
