"""The layer cipher (ocicrypt's format), the sealed layer keys and the session wrapping."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from keybroker import layers
from keybroker.wrapping import (
    Envelope,
    WrappingError,
    binding,
    new_image_key,
    new_session,
    open_sealed,
    seal,
    unwrap,
    wrap,
)


def test_a_layer_round_trips_and_its_options_are_ocicrypts() -> None:
    blob = os.urandom(70_000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    encrypted = layers.encrypt(blob, digest)
    assert encrypted.ciphertext != blob and len(encrypted.ciphertext) == len(blob)
    private, public = json.loads(encrypted.private_options), json.loads(encrypted.public_options)
    assert set(private) == {"symkey", "digest", "cipheroptions"} and private["digest"] == digest
    assert (
        len(base64.b64decode(private["symkey"])) == 32
        and len(base64.b64decode(private["cipheroptions"]["nonce"])) == 16
    )
    assert public["cipher"] == "AES_256_CTR_HMAC_SHA256" and len(base64.b64decode(public["hmac"])) == 32
    assert layers.decrypt(encrypted.ciphertext, encrypted.private_options, encrypted.public_options) == blob


def test_an_altered_layer_or_wrong_key_is_refused() -> None:
    blob = b"layer" * 1000
    encrypted = layers.encrypt(blob, "sha256:" + hashlib.sha256(blob).hexdigest())
    altered = bytes([encrypted.ciphertext[0] ^ 1]) + encrypted.ciphertext[1:]
    with pytest.raises(layers.LayerCipherError, match="HMAC"):
        layers.decrypt(altered, encrypted.private_options, encrypted.public_options)
    other = layers.encrypt(blob, "sha256:" + "0" * 64)
    with pytest.raises(layers.LayerCipherError, match="HMAC"):
        layers.decrypt(encrypted.ciphertext, other.private_options, encrypted.public_options)


def test_media_types() -> None:
    assert layers.encrypted_media_type("application/vnd.oci.image.layer.v1.tar+gzip") == (
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    )
    assert layers.encrypted_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip") == (
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    )
    with pytest.raises(layers.LayerCipherError):
        layers.encrypted_media_type("application/vnd.oci.image.layer.v1.tar+encrypted")


def test_a_sealed_layer_key_opens_only_with_its_image_key_and_as_written() -> None:
    key = new_image_key()
    envelope = seal(key, "ik-1", "r.example/secret/app:1", "sha256:" + "a" * 64, b"options")
    parsed = Envelope.from_bytes(envelope.to_bytes())
    assert parsed == envelope and b"options" not in envelope.to_bytes()
    assert open_sealed(key, parsed) == b"options"
    with pytest.raises(WrappingError):
        open_sealed(new_image_key(), parsed)
    moved = Envelope(parsed.kid, "r.example/public/app:1", parsed.layer, parsed.iv, parsed.ciphertext)
    with pytest.raises(WrappingError, match="tampered"):
        open_sealed(key, moved)  # the image is bound as associated data


@pytest.mark.parametrize("data", [b"", b"[]", b"not json", b'{"v":2}', b'{"v":1,"kid":"k","image":"i"}'])
def test_malformed_envelopes(data: bytes) -> None:
    with pytest.raises(WrappingError):
        Envelope.from_bytes(data)


def test_the_session_wrap_binds_the_request() -> None:
    session, public = new_session()
    bound = binding(b"nonce", public, b"annotation")
    wrapped = wrap(b"layer key", public, bound)
    assert unwrap(wrapped, session, bound) == b"layer key"
    with pytest.raises(WrappingError):
        unwrap(wrapped, session, binding(b"other nonce", public, b"annotation"))
    assert binding(b"a", b"bc", b"") != binding(b"ab", b"c", b"")  # length-prefixed: no ambiguity
