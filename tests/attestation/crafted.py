"""TPM 2.0 structures built in software, byte for byte as a TPM lays them out, for the checks no
real TPM will produce on request: SHA-1 names and schemes, foreign signature schemes, wrong signers."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from attestation import tpm

AK_ATTRIBUTES = tpm.FIXED_TPM | tpm.FIXED_PARENT | tpm.SENSITIVE_DATA_ORIGIN | tpm.USER_WITH_AUTH | tpm.RESTRICTED
AK_ATTRIBUTES |= tpm.SIGN
EK_ATTRIBUTES = tpm.FIXED_TPM | tpm.FIXED_PARENT | tpm.SENSITIVE_DATA_ORIGIN | tpm.ADMIN_WITH_POLICY
EK_ATTRIBUTES |= tpm.RESTRICTED | tpm.DECRYPT
CURVE_IDS = {"secp256r1": 0x0003, "secp384r1": 0x0004}


@dataclass(frozen=True)
class Key:
    """A crafted key: its TPM2B_PUBLIC bytes, the parsed form and the software private key."""

    public: bytes
    parsed: tpm.TpmPublic
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _scheme(alg: int, hash_alg: int) -> bytes:
    return struct.pack(">H", alg) if alg == tpm.ALG_NULL else struct.pack(">HH", alg, hash_alg)


def rsa_key(
    name_alg: int = tpm.ALG_SHA256,
    scheme: int = tpm.ALG_RSASSA,
    scheme_hash: int = tpm.ALG_SHA256,
    attributes: int = AK_ATTRIBUTES,
    symmetric: tuple[int, int, int] | None = None,
) -> Key:
    private = rsa.generate_private_key(65537, 2048)
    modulus = private.public_key().public_numbers().n.to_bytes(256, "big")
    sym = struct.pack(">H", tpm.ALG_NULL) if symmetric is None else struct.pack(">HHH", *symmetric)
    body = (
        struct.pack(">HHI", tpm.ALG_RSA, name_alg, attributes)
        + tpm.tpm2b(b"")
        + sym
        + _scheme(scheme, scheme_hash)
        + struct.pack(">HI", 2048, 0)
        + tpm.tpm2b(modulus)
    )
    public = tpm.tpm2b(body)
    return Key(public, tpm.parse_public(public), private)


def ecc_key(name_alg: int = tpm.ALG_SHA256, scheme: int = tpm.ALG_ECDSA, scheme_hash: int = tpm.ALG_SHA256) -> Key:
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    body = (
        struct.pack(">HHI", tpm.ALG_ECC, name_alg, AK_ATTRIBUTES)
        + tpm.tpm2b(b"")
        + struct.pack(">H", tpm.ALG_NULL)
        + _scheme(scheme, scheme_hash)
        + struct.pack(">HH", CURVE_IDS["secp256r1"], tpm.ALG_NULL)
        + tpm.tpm2b(numbers.x.to_bytes(32, "big"))
        + tpm.tpm2b(numbers.y.to_bytes(32, "big"))
    )
    public = tpm.tpm2b(body)
    return Key(public, tpm.parse_public(public), private)


def quote(
    signer: bytes, nonce: bytes, pcrs: Mapping[int, bytes], digest_alg: int = tpm.ALG_SHA256, reset_count: int = 0
) -> bytes:
    """A TPMS_ATTEST of type quote over the SHA-256 bank's `pcrs`, their digest taken with `digest_alg`."""
    bitmap = bytearray(3)
    for pcr in pcrs:
        bitmap[pcr // 8] |= 1 << (pcr % 8)
    selection = struct.pack(">IHB", 1, tpm.ALG_SHA256, len(bitmap)) + bytes(bitmap)
    values = [pcrs[p] for p in sorted(pcrs)]
    return (
        struct.pack(">IH", tpm.GENERATED_VALUE, tpm.ST_ATTEST_QUOTE)
        + tpm.tpm2b(signer)
        + tpm.tpm2b(nonce)
        + struct.pack(">QIIB", 1000, reset_count, 0, 1)
        + struct.pack(">Q", 0x20240101)
        + selection
        + tpm.tpm2b(tpm.pcr_digest(digest_alg, values))
    )


def sign(key: Key, message: bytes, scheme: int, hash_alg: int) -> bytes:
    """A TPMT_SIGNATURE over `message` (the TPM signs the digest of TPMS_ATTEST with `hash_alg`)."""
    hash_cls = tpm.HASHES[hash_alg][1]
    digest = tpm.digest(hash_alg, message)
    prehashed = Prehashed(hash_cls())
    if isinstance(key.private, rsa.RSAPrivateKey):
        if scheme == tpm.ALG_RSAPSS:
            pad: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls.digest_size)
        else:
            pad = padding.PKCS1v15()
        value = key.private.sign(digest, pad, prehashed)
        return struct.pack(">HH", scheme, hash_alg) + tpm.tpm2b(value)
    r, s = decode_dss_signature(key.private.sign(digest, ec.ECDSA(prehashed)))
    return struct.pack(">HH", scheme, hash_alg) + tpm.tpm2b(r.to_bytes(32, "big")) + tpm.tpm2b(s.to_bytes(32, "big"))


def endorsement_key(name_alg: int = tpm.ALG_SHA256) -> Key:
    """An RSA EK (TCG template L-1 shape: restricted decryption, AES-128-CFB) with the given name algorithm."""
    return rsa_key(name_alg, tpm.ALG_NULL, tpm.ALG_NULL, EK_ATTRIBUTES, symmetric=(tpm.ALG_AES, 128, tpm.ALG_CFB))
