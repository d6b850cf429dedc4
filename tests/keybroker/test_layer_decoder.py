"""trustgate-layer-decoder (Go, ocicrypt) decrypts the layers `trustctl image encrypt` writes, as containerd
runs it: the encrypted blob on stdin, imgcrypt's payload (the layer descriptor) on fd 3, the key providers
of OCICRYPT_KEYPROVIDER_CONFIG asked for the layer key; a provider's refusal reaches its stderr.

The key provider here is a stand-in that answers with the sealed layer options (the broker's part is
tested in test_broker.py, the whole chain on real nodes in tests/e2e/test_encrypted_images.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keybroker import layers
from keybroker.wrapping import ANNOTATION, new_image_key, open_sealed, seal

from ..prerequisites import in_ci, unavailable

pytestmark = pytest.mark.e2e  # builds a Go program
ROOT = Path(__file__).resolve().parents[2]
PAYLOAD_TYPE = b"io.containerd.ocicrypt.v1.Payload"
PROVIDER = """
import base64, json, os, sys
from keybroker.wrapping import Envelope, open_sealed
request = json.load(sys.stdin)
if os.environ.get("REFUSE"):
    print("trustgate-keyprovider: the key broker refused the layer key: level runtime not trusted", file=sys.stderr)
    sys.exit(1)
envelope = Envelope.from_bytes(base64.b64decode(request["keyunwrapparams"]["annotation"]))
options = open_sealed(bytes.fromhex(os.environ["IMAGE_KEY"]), envelope)
print(json.dumps({"keyunwrapresults": {"optsdata": base64.b64encode(options).decode()}}))
"""


@pytest.fixture(scope="module")
def decoder() -> Path:
    done = subprocess.run(["bash", str(ROOT / "keyprovider/build-decoder.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        message = f"cannot build trustgate-layer-decoder: {done.stderr[-1500:]}"
        pytest.fail(message) if in_ci() else unavailable(message)
    return Path(done.stdout.strip().splitlines()[-1])


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _payload(descriptor: dict[str, object]) -> bytes:
    """imgcrypt's Payload as containerd hands it over: a protobuf Any with the JSON of the Go struct."""
    value = json.dumps({"DecryptConfig": {"Parameters": None}, "Descriptor": descriptor}).encode()
    return b"\x0a" + _varint(len(PAYLOAD_TYPE)) + PAYLOAD_TYPE + b"\x12" + _varint(len(value)) + value


def _decode(decoder: Path, tmp_path: Path, ciphertext: bytes, descriptor: dict[str, object], **env: str):
    provider = tmp_path / "provider.py"
    provider.write_text(PROVIDER)
    config = tmp_path / "ocicrypt.json"
    config.write_text(
        json.dumps({"key-providers": {"trustgate": {"cmd": {"path": sys.executable, "args": [str(provider)]}}}})
    )
    payload = tmp_path / "payload"
    payload.write_bytes(_payload(descriptor))
    environment = dict(os.environ, OCICRYPT_KEYPROVIDER_CONFIG=str(config), PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        ["bash", "-c", 'exec "$0" 3<"$1"', str(decoder), str(payload)],  # the payload on fd 3, as containerd does
        input=ciphertext,
        capture_output=True,
        env=environment,
        timeout=60,
    )


def _encrypted(blob: bytes) -> tuple[bytes, dict[str, object], bytes]:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    encrypted = layers.encrypt(blob, digest)
    key = new_image_key()
    envelope = seal(key, "ik-1", "r.example/secret/app:1", digest, encrypted.private_options)
    assert open_sealed(key, envelope) == encrypted.private_options
    descriptor = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+encrypted",
        "digest": "sha256:" + hashlib.sha256(encrypted.ciphertext).hexdigest(),
        "size": len(encrypted.ciphertext),
        "annotations": {
            ANNOTATION: base64.b64encode(envelope.to_bytes()).decode(),
            layers.PUBOPTS_ANNOTATION: base64.b64encode(encrypted.public_options).decode(),
        },
    }
    return encrypted.ciphertext, descriptor, key


def test_ocicrypt_decrypts_what_trustctl_encrypts(decoder: Path, tmp_path: Path) -> None:
    blob = os.urandom(300_000)
    ciphertext, descriptor, key = _encrypted(blob)
    done = _decode(decoder, tmp_path, ciphertext, descriptor, IMAGE_KEY=key.hex())
    assert done.returncode == 0, done.stderr
    assert done.stdout == blob


def test_an_altered_layer_is_not_returned_whole(decoder: Path, tmp_path: Path) -> None:
    ciphertext, descriptor, key = _encrypted(os.urandom(50_000))
    altered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    done = _decode(decoder, tmp_path, altered, descriptor, IMAGE_KEY=key.hex())
    assert done.returncode == 1 and b"hmac" in done.stderr.lower()


def test_the_providers_refusal_is_the_decoders_error(decoder: Path, tmp_path: Path) -> None:
    ciphertext, descriptor, key = _encrypted(os.urandom(1000))
    done = _decode(decoder, tmp_path, ciphertext, descriptor, IMAGE_KEY=key.hex(), REFUSE="1")
    assert done.returncode == 1 and done.stdout == b""
    assert b"the key broker refused the layer key: level runtime not trusted" in done.stderr
