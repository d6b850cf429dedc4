"""The TPM 2.0 algorithms the authority runs in software, with `cryptography` only.

- `parse_public`: a TPM2B_PUBLIC / TPMT_PUBLIC (RSA or ECC) into a `cryptography` key, its
  attributes and its Name (nameAlg || H(TPMT_PUBLIC)), TPM 2.0 Part 1, 16.
- `make_credential`: TPM2_MakeCredential (Part 1, 24): a random seed encrypted to the EK
  (RSA-OAEP with label "IDENTITY\\0", or ECDH + KDFe for an ECC EK), the credential encrypted with
  AES-CFB under KDFa(seed, "STORAGE", Name of the AK), and an HMAC under KDFa(seed, "INTEGRITY")
  over the encrypted credential and the AK's Name. Only the TPM holding the EK's private key, with
  an object of that exact Name loaded, can recover the credential (TPM2_ActivateCredential).
- `verify_quote`: a TPMS_ATTEST of type quote, its signature by the AK (RSASSA, RSAPSS or ECDSA),
  the signer's qualified name, the qualifying data (the authority's nonce) and the PCR digest over
  the reported PCR values.

Hash strength: SHA-1 collisions are practical, so a key whose Name is a SHA-1 digest, or a quote
signed over a SHA-1 digest, proves nothing about which key or which PCR values were meant. Keys
(nameAlg) and quote signatures must use SHA-256 or stronger, and a quote's signature must use the
AK's own scheme and hash: a restricted AK signs with its scheme only, so any other scheme on a quote
means the quote did not come from that AK's TPM.

All big-endian, as on the wire. Every parse error is a `TpmError` with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # AES-CFB is "decrepit" in cryptography >= 45, yet it is what TPM 2.0 credentials use
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB  # type: ignore[assignment]

# TPM_ALG_ID
ALG_RSA, ALG_SHA1, ALG_HMAC, ALG_AES, ALG_KEYEDHASH = 0x0001, 0x0004, 0x0005, 0x0006, 0x0008
ALG_SHA256, ALG_SHA384, ALG_SHA512, ALG_NULL = 0x000B, 0x000C, 0x000D, 0x0010
ALG_RSASSA, ALG_RSAES, ALG_RSAPSS, ALG_OAEP = 0x0014, 0x0015, 0x0016, 0x0017
ALG_ECDSA, ALG_ECDH, ALG_ECDAA, ALG_SM2, ALG_ECSCHNORR = 0x0018, 0x0019, 0x001A, 0x001B, 0x001C
ALG_ECC, ALG_SYMCIPHER, ALG_CFB = 0x0023, 0x0025, 0x0043
# TPM_ECC_CURVE
CURVES: dict[int, type[ec.EllipticCurve]] = {0x0003: ec.SECP256R1, 0x0004: ec.SECP384R1, 0x0005: ec.SECP521R1}
# TPM_GENERATED / TPM_ST
GENERATED_VALUE = 0xFF544347
ST_ATTEST_QUOTE = 0x8018
# TPMA_OBJECT bits
FIXED_TPM, ST_CLEAR, FIXED_PARENT, SENSITIVE_DATA_ORIGIN = 1 << 1, 1 << 2, 1 << 4, 1 << 5
USER_WITH_AUTH, ADMIN_WITH_POLICY, NO_DA, RESTRICTED, DECRYPT, SIGN = 1 << 6, 1 << 7, 1 << 10, 1 << 16, 1 << 17, 1 << 18

HASHES: dict[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    ALG_SHA1: ("sha1", hashes.SHA1),
    ALG_SHA256: ("sha256", hashes.SHA256),
    ALG_SHA384: ("sha384", hashes.SHA384),
    ALG_SHA512: ("sha512", hashes.SHA512),
}
HASH_IDS = {name: alg for alg, (name, _) in HASHES.items()}
STRONG_HASHES = frozenset({ALG_SHA256, ALG_SHA384, ALG_SHA512})  # SHA-1 is accepted nowhere
SIGNING_SCHEMES = {ALG_RSA: frozenset({ALG_RSASSA, ALG_RSAPSS}), ALG_ECC: frozenset({ALG_ECDSA})}
ALG_NAMES = {
    ALG_SHA1: "SHA-1",
    ALG_SHA256: "SHA-256",
    ALG_SHA384: "SHA-384",
    ALG_SHA512: "SHA-512",
    ALG_RSASSA: "RSASSA",
    ALG_RSAPSS: "RSAPSS",
    ALG_ECDSA: "ECDSA",
    ALG_NULL: "none",
}
TPM_RH_ENDORSEMENT = 0x4000000B  # the endorsement hierarchy's handle: the Name at the top of an EK's qualified name
CREDENTIAL_FILE_MAGIC, CREDENTIAL_FILE_VERSION = 0xBADCC0DE, 1  # tpm2-tools' makecredential output


class TpmError(Exception):
    """A TPM structure that is malformed, or a check that failed; `reason` is for operators."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def alg_name(alg: int) -> str:
    return ALG_NAMES.get(alg, f"0x{alg:04x}")


def _hash_name(alg: int) -> str:
    try:
        return HASHES[alg][0]
    except KeyError:
        raise TpmError(f"unsupported hash algorithm 0x{alg:04x}") from None


def digest(alg: int, data: bytes) -> bytes:
    return hashlib.new(_hash_name(alg), data).digest()


def digest_size(alg: int) -> int:
    return hashlib.new(_hash_name(alg)).digest_size


# --- reading TPM structures ----------------------------------------------------------------


class Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = bytes(data), 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TpmError(f"{self.what}: truncated at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self) -> bytes:
        return self.take(self.u16())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise TpmError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes")


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


# --- keys and names ------------------------------------------------------------------------


@dataclass(frozen=True)
class TpmPublic:
    """A parsed TPMT_PUBLIC (RSA or ECC) and its exact bytes, from which the Name is computed."""

    raw: bytes  # the TPMT_PUBLIC (without the TPM2B size)
    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    symmetric: tuple[int, int, int]  # (algorithm, key bits, mode); (ALG_NULL, 0, 0) when none
    scheme: tuple[int, int]  # (scheme, hash); (ALG_NULL, 0) when none
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    @property
    def name(self) -> bytes:
        return struct.pack(">H", self.name_alg) + digest(self.name_alg, self.raw)

    def qualified_name(self, parent_qualified_name: bytes) -> bytes:
        """QN = nameAlg || H_nameAlg(parent's QN || Name) (Part 1, 16.6): binds the object to its parents."""
        return struct.pack(">H", self.name_alg) + digest(self.name_alg, parent_qualified_name + self.name)

    def has(self, *attributes: int) -> bool:
        return all(self.attributes & a for a in attributes)

    def public_numbers_equal(self, other: object) -> bool:
        if isinstance(self.key, rsa.RSAPublicKey) and isinstance(other, rsa.RSAPublicKey):
            return self.key.public_numbers() == other.public_numbers()
        if isinstance(self.key, ec.EllipticCurvePublicKey) and isinstance(other, ec.EllipticCurvePublicKey):
            return self.key.public_numbers() == other.public_numbers()
        return False


def parse_public(data: bytes, sized: bool = True, what: str = "TPM2B_PUBLIC") -> TpmPublic:
    """Parse a TPM2B_PUBLIC (`sized`, as tpm2-tools writes it) or a bare TPMT_PUBLIC."""
    outer = Reader(data, what)
    raw = outer.tpm2b() if sized else outer.take(len(data))
    outer.end()
    r = Reader(raw, what)
    kind, name_alg, attributes = r.u16(), r.u16(), r.u32()
    if name_alg not in HASHES:
        raise TpmError(f"{what}: unsupported name algorithm 0x{name_alg:04x}")
    auth_policy = r.tpm2b()
    if kind not in (ALG_RSA, ALG_ECC):
        raise TpmError(f"{what}: object type 0x{kind:04x} is not an RSA or ECC key")
    sym_alg = r.u16()
    symmetric = (sym_alg, r.u16(), r.u16()) if sym_alg != ALG_NULL else (ALG_NULL, 0, 0)
    scheme_alg = r.u16()
    scheme = (scheme_alg, r.u16()) if scheme_alg != ALG_NULL else (ALG_NULL, 0)
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kind == ALG_RSA:
        r.u16()  # keyBits: the modulus says it
        exponent = r.u32() or 65537
        modulus = r.tpm2b()
        if not modulus:
            raise TpmError(f"{what}: RSA key without a modulus")
        key = rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
    else:
        curve_id = r.u16()
        kdf = r.u16()
        if kdf != ALG_NULL:
            r.u16()
        x, y = r.tpm2b(), r.tpm2b()
        curve = CURVES.get(curve_id)
        if curve is None:
            raise TpmError(f"{what}: unsupported ECC curve 0x{curve_id:04x}")
        try:
            numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve())
            key = numbers.public_key()
        except ValueError as error:
            raise TpmError(f"{what}: ECC point not on the curve ({error})") from None
    r.end()
    return TpmPublic(raw, kind, name_alg, attributes, auth_policy, symmetric, scheme, key)


def check_attestation_key(ak: TpmPublic) -> None:
    """An AK must be a restricted signing key that never left this TPM and was generated in it."""
    missing = [
        name
        for name, bit in (
            ("fixedTPM", FIXED_TPM),
            ("fixedParent", FIXED_PARENT),
            ("sensitiveDataOrigin", SENSITIVE_DATA_ORIGIN),
            ("restricted", RESTRICTED),
            ("sign", SIGN),
        )
        if not ak.attributes & bit
    ]
    if missing:
        raise TpmError(f"attestation key lacks the attributes {', '.join(missing)}")
    if ak.attributes & DECRYPT:
        raise TpmError("attestation key is also a decryption key")
    _require_strong(ak.name_alg, "attestation key's name algorithm")
    scheme, scheme_hash = ak.scheme
    allowed = SIGNING_SCHEMES[ak.type]
    if scheme not in allowed:
        names = " or ".join(sorted(alg_name(a) for a in allowed))
        raise TpmError(f"attestation key's signing scheme is {alg_name(scheme)}, not {names}")
    _require_strong(scheme_hash, "attestation key's signing scheme hash")


def _require_strong(alg: int, what: str) -> None:
    if alg not in STRONG_HASHES:
        raise TpmError(f"{what} is {alg_name(alg)}: SHA-256 or stronger is required")


def check_endorsement_key(ek: TpmPublic) -> None:
    """An EK (TCG EK profile): a restricted decryption storage key, fixed to the TPM, AES-128-CFB."""
    if not ek.has(FIXED_TPM, FIXED_PARENT, SENSITIVE_DATA_ORIGIN, RESTRICTED, DECRYPT):
        raise TpmError("endorsement key is not a restricted decryption key fixed to its TPM")
    if ek.attributes & SIGN:
        raise TpmError("endorsement key is a signing key")
    if ek.symmetric[0] != ALG_AES or ek.symmetric[2] != ALG_CFB:
        raise TpmError("endorsement key's symmetric algorithm is not AES-CFB")
    _require_strong(ek.name_alg, "endorsement key's name algorithm")


def endorsement_qualified_name(ek: TpmPublic) -> bytes:
    """The qualified name of a primary key of the endorsement hierarchy (an EK)."""
    return ek.qualified_name(struct.pack(">I", TPM_RH_ENDORSEMENT))


# --- key derivation ------------------------------------------------------------------------


def kdfa(hash_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa (SP 800-108 counter mode with HMAC), TPM 2.0 Part 1, 11.4.10.2."""
    name, out, counter = _hash_name(hash_alg), b"", 0
    while len(out) * 8 < bits:
        counter += 1
        message = struct.pack(">I", counter) + label + b"\x00" + context_u + context_v + struct.pack(">I", bits)
        out += hmac.new(key, message, name).digest()
    return _truncate_bits(out, bits)


def kdfe(hash_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (SP 800-56A concatenation KDF), TPM 2.0 Part 1, 11.4.10.3."""
    out, counter = b"", 0
    while len(out) * 8 < bits:
        counter += 1
        out += digest(hash_alg, struct.pack(">I", counter) + z + label + b"\x00" + party_u + party_v)
    return _truncate_bits(out, bits)


def _truncate_bits(data: bytes, bits: int) -> bytes:
    data = data[: (bits + 7) // 8]
    if bits % 8:
        data = bytes([data[0] & ((1 << (bits % 8)) - 1)]) + data[1:]
    return data


# --- MakeCredential ------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    id_object: bytes  # TPM2B_ID_OBJECT contents: TPM2B_DIGEST(integrityHMAC) || encIdentity
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET contents

    def tpm2_tools_file(self) -> bytes:
        """The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads."""
        header = struct.pack(">II", CREDENTIAL_FILE_MAGIC, CREDENTIAL_FILE_VERSION)
        return header + tpm2b(self.id_object) + tpm2b(self.encrypted_secret)


def _encrypt_seed(ek: TpmPublic, label: bytes) -> tuple[bytes, bytes]:
    """A fresh seed and its encryption to the EK (`label` with its terminating zero)."""
    size = digest_size(ek.name_alg)
    if isinstance(ek.key, rsa.RSAPublicKey):
        seed = os.urandom(size)
        hash_cls = HASHES[ek.name_alg][1]
        oaep = padding.OAEP(mgf=padding.MGF1(hash_cls()), algorithm=hash_cls(), label=label + b"\x00")
        return seed, ek.key.encrypt(seed, oaep)
    ephemeral = ec.generate_private_key(ek.key.curve)
    z = ephemeral.exchange(ec.ECDH(), ek.key)
    coordinate = (ek.key.curve.key_size + 7) // 8
    eph = ephemeral.public_key().public_numbers()
    eph_x, eph_y = eph.x.to_bytes(coordinate, "big"), eph.y.to_bytes(coordinate, "big")
    ek_x = ek.key.public_numbers().x.to_bytes(coordinate, "big")
    seed = kdfe(ek.name_alg, z, label, eph_x, ek_x, size * 8)
    return seed, tpm2b(eph_x) + tpm2b(eph_y)


def make_credential(ek: TpmPublic, object_name: bytes, credential: bytes) -> Credential:
    """TPM2_MakeCredential in software: `credential` for the TPM with `ek`, bound to `object_name`."""
    if not 1 <= len(credential) <= digest_size(ek.name_alg):
        raise TpmError(f"credential must be 1 to {digest_size(ek.name_alg)} bytes")
    sym_alg, sym_bits, sym_mode = ek.symmetric
    if sym_alg != ALG_AES or sym_mode != ALG_CFB:
        raise TpmError("endorsement key's symmetric algorithm is not AES-CFB")
    seed, encrypted_secret = _encrypt_seed(ek, b"IDENTITY")
    sym_key = kdfa(ek.name_alg, seed, b"STORAGE", object_name, b"", sym_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(b"\x00" * 16)).encryptor()
    enc_identity = encryptor.update(tpm2b(credential)) + encryptor.finalize()
    hmac_key = kdfa(ek.name_alg, seed, b"INTEGRITY", b"", b"", digest_size(ek.name_alg) * 8)
    integrity = hmac.new(hmac_key, enc_identity + object_name, _hash_name(ek.name_alg)).digest()
    return Credential(tpm2b(integrity) + enc_identity, encrypted_secret)


# --- quotes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attest:
    """A TPMS_ATTEST of type quote."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selection: tuple[tuple[int, tuple[int, ...]], ...]  # ((hash alg, (pcr, ...)), ...)
    pcr_digest: bytes


def parse_attest(data: bytes) -> Attest:
    r = Reader(data, "TPMS_ATTEST")
    magic, kind = r.u32(), r.u16()
    if magic != GENERATED_VALUE:
        raise TpmError(f"quote was not generated by a TPM (magic 0x{magic:08x})")
    if kind != ST_ATTEST_QUOTE:
        raise TpmError(f"attestation structure is not a quote (type 0x{kind:04x})")
    signer, extra = r.tpm2b(), r.tpm2b()
    clock, reset_count, restart_count, safe = r.u64(), r.u32(), r.u32(), r.u8()
    firmware = r.u64()
    selection = []
    for _ in range(r.u32()):
        alg = r.u16()
        bitmap = r.take(r.u8())
        pcrs = tuple(i * 8 + bit for i, byte in enumerate(bitmap) for bit in range(8) if byte >> bit & 1)
        selection.append((alg, pcrs))
    pcr_digest = r.tpm2b()
    r.end()
    return Attest(signer, extra, clock, reset_count, restart_count, bool(safe), firmware, tuple(selection), pcr_digest)


@dataclass(frozen=True)
class Signature:
    algorithm: int
    hash_alg: int
    value: bytes  # RSA: the signature; ECDSA: DER (r, s)


def parse_signature(data: bytes) -> Signature:
    r = Reader(data, "TPMT_SIGNATURE")
    algorithm, hash_alg = r.u16(), r.u16()
    if algorithm in (ALG_RSASSA, ALG_RSAPSS):
        value = r.tpm2b()
    elif algorithm == ALG_ECDSA:
        sig_r, sig_s = r.tpm2b(), r.tpm2b()
        value = encode_dss_signature(int.from_bytes(sig_r, "big"), int.from_bytes(sig_s, "big"))
    else:
        raise TpmError(f"unsupported signature scheme 0x{algorithm:04x}")
    r.end()
    if hash_alg not in HASHES:
        raise TpmError(f"unsupported signature hash 0x{hash_alg:04x}")
    return Signature(algorithm, hash_alg, value)


def verify_signature(key: TpmPublic, message: bytes, signature: bytes) -> Signature:
    """The signature by `key` over `message`, in the key's own scheme and hash, SHA-256 or stronger."""
    sig = parse_signature(signature)
    _require_strong(sig.hash_alg, "quote signature's hash")
    if (sig.algorithm, sig.hash_alg) != key.scheme:
        raise TpmError(
            f"quote signature is {alg_name(sig.algorithm)}-{alg_name(sig.hash_alg)}, not the attestation key's "
            f"scheme {alg_name(key.scheme[0])}-{alg_name(key.scheme[1])}"
        )
    hash_alg = HASHES[sig.hash_alg][1]()
    try:
        if isinstance(key.key, rsa.RSAPublicKey):
            if sig.algorithm == ALG_RSASSA:
                key.key.verify(sig.value, message, padding.PKCS1v15(), hash_alg)
            elif sig.algorithm == ALG_RSAPSS:
                pss = padding.PSS(mgf=padding.MGF1(HASHES[sig.hash_alg][1]()), salt_length=padding.PSS.AUTO)
                key.key.verify(sig.value, message, pss, hash_alg)
            else:
                raise TpmError("an ECDSA signature cannot come from an RSA key")
        else:
            if sig.algorithm != ALG_ECDSA:
                raise TpmError("an RSA signature cannot come from an ECC key")
            key.key.verify(sig.value, message, ec.ECDSA(hash_alg))
    except InvalidSignature:
        raise TpmError("quote signature does not verify with the attestation key") from None
    return sig


def pcr_digest(hash_alg: int, values: Sequence[bytes]) -> bytes:
    return digest(hash_alg, b"".join(values))


def verify_quote(
    ak: TpmPublic,
    message: bytes,
    signature: bytes,
    nonce: bytes,
    pcr_values: Mapping[int, bytes],
    signer: bytes,
    bank: int = ALG_SHA256,
) -> Attest:
    """Check a quote end to end; returns the parsed TPMS_ATTEST. Raises `TpmError` with the reason.

    `signer` is the AK's qualified name (for the agent's AK, a child of the EK:
    `ak.qualified_name(endorsement_qualified_name(ek))`), which the TPM puts in the quote as
    qualifiedSigner. `pcr_values` are the values the host reports for the PCRs of `bank`; they must
    be exactly the PCRs the quote selected, and their digest the one the TPM signed.
    """
    sig = verify_signature(ak, message, signature)  # first: nothing unsigned is interpreted
    attest = parse_attest(message)
    if not hmac.compare_digest(attest.qualified_signer, signer):
        raise TpmError(
            "quote's qualifiedSigner is not the attestation key's qualified name "
            "(another key, or the AK is not a child of the registered EK)"
        )
    if not hmac.compare_digest(attest.extra_data, nonce):
        raise TpmError("quote is not over this attestation's nonce (stale or replayed quote)")
    if len(attest.selection) != 1 or attest.selection[0][0] != bank:
        raise TpmError(f"quote must select exactly one PCR bank ({_hash_name(bank)})")
    selected = attest.selection[0][1]
    if sorted(pcr_values) != list(selected):
        raise TpmError(f"reported PCRs {sorted(pcr_values)} are not the quoted PCRs {list(selected)}")
    size = digest_size(bank)
    if any(len(pcr_values[i]) != size for i in selected):
        raise TpmError(f"PCR values must be {size}-byte {_hash_name(bank)} digests")
    expected = pcr_digest(sig.hash_alg, [pcr_values[i] for i in selected])  # the signing scheme's hash
    if not hmac.compare_digest(expected, attest.pcr_digest):
        raise TpmError("reported PCR values do not match the quoted PCR digest")
    return attest
