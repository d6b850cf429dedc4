"""Key and quote checks against crafted TPM structures: weak hashes, foreign schemes, wrong signers.

Each case is one the authority must refuse although every byte is well formed and the signature is
mathematically valid; a well-formed crafted quote verifies, so each refusal is for its stated reason.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from attestation import tpm

from .crafted import Key, ecc_key, endorsement_key, quote, rsa_key, sign

PCRS = {p: hashlib.sha256(bytes([p])).digest() for p in (0, 7, 10)}


def _signer(ak: Key, ek: Key | None = None) -> bytes:
    return ak.parsed.qualified_name(tpm.endorsement_qualified_name((ek or endorsement_key()).parsed))


def _quote_for(ak: Key, signer: bytes, scheme: int, hash_alg: int) -> tuple[bytes, bytes, bytes]:
    nonce = os.urandom(32)
    message = quote(signer, nonce, PCRS, digest_alg=hash_alg)
    return message, sign(ak, message, scheme, hash_alg), nonce


@pytest.mark.parametrize(
    ("ak", "scheme", "hash_alg"),
    [
        pytest.param(lambda: rsa_key(), tpm.ALG_RSASSA, tpm.ALG_SHA256, id="rsassa-sha256"),
        pytest.param(
            lambda: rsa_key(scheme=tpm.ALG_RSAPSS, scheme_hash=tpm.ALG_SHA384),
            tpm.ALG_RSAPSS,
            tpm.ALG_SHA384,
            id="rsapss-sha384",
        ),
        pytest.param(lambda: ecc_key(), tpm.ALG_ECDSA, tpm.ALG_SHA256, id="ecdsa-sha256"),
    ],
)
def test_a_well_formed_crafted_quote_verifies(ak, scheme: int, hash_alg: int) -> None:  # type: ignore[no-untyped-def]
    key = ak()
    tpm.check_attestation_key(key.parsed)
    signer = _signer(key)
    message, signature, nonce = _quote_for(key, signer, scheme, hash_alg)
    attest = tpm.verify_quote(key.parsed, message, signature, nonce, PCRS, signer)
    assert attest.qualified_signer == signer


# --- the attestation key -------------------------------------------------------------------------


def test_an_ak_with_a_sha1_name_is_refused() -> None:
    with pytest.raises(tpm.TpmError, match="attestation key's name algorithm is SHA-1: SHA-256 or stronger"):
        tpm.check_attestation_key(rsa_key(name_alg=tpm.ALG_SHA1).parsed)


def test_an_ak_with_an_rsassa_sha1_scheme_is_refused() -> None:
    with pytest.raises(tpm.TpmError, match="attestation key's signing scheme hash is SHA-1"):
        tpm.check_attestation_key(rsa_key(scheme_hash=tpm.ALG_SHA1).parsed)


def test_an_ak_with_sha1_name_and_scheme_is_refused_by_both_counts() -> None:
    key = rsa_key(name_alg=tpm.ALG_SHA1, scheme_hash=tpm.ALG_SHA1).parsed
    with pytest.raises(tpm.TpmError, match="SHA-1"):
        tpm.check_attestation_key(key)


def test_an_ak_without_a_signing_scheme_is_refused() -> None:
    with pytest.raises(tpm.TpmError, match="signing scheme is none, not RSAPSS or RSASSA"):
        tpm.check_attestation_key(rsa_key(scheme=tpm.ALG_NULL).parsed)


def test_an_ecc_ak_with_an_rsa_scheme_is_refused() -> None:
    with pytest.raises(tpm.TpmError, match="signing scheme is RSASSA, not ECDSA"):
        tpm.check_attestation_key(ecc_key(scheme=tpm.ALG_RSASSA).parsed)


def test_an_ek_with_a_sha1_name_is_refused() -> None:
    tpm.check_endorsement_key(endorsement_key().parsed)
    with pytest.raises(tpm.TpmError, match="endorsement key's name algorithm is SHA-1"):
        tpm.check_endorsement_key(endorsement_key(tpm.ALG_SHA1).parsed)


# --- the quote's signature -------------------------------------------------------------------------


def test_a_quote_signed_with_sha1_is_refused() -> None:
    key = rsa_key()
    signer = _signer(key)
    message, signature, nonce = _quote_for(key, signer, tpm.ALG_RSASSA, tpm.ALG_SHA1)
    with pytest.raises(tpm.TpmError, match="quote signature's hash is SHA-1: SHA-256 or stronger"):
        tpm.verify_quote(key.parsed, message, signature, nonce, PCRS, signer)


def test_a_sha1_quote_from_a_sha1_ak_is_refused_even_though_it_matches_the_key() -> None:
    key = rsa_key(scheme_hash=tpm.ALG_SHA1)  # registered before the key check (or by a lax authority)
    signer = _signer(key)
    message, signature, nonce = _quote_for(key, signer, tpm.ALG_RSASSA, tpm.ALG_SHA1)
    with pytest.raises(tpm.TpmError, match="SHA-1"):
        tpm.verify_quote(key.parsed, message, signature, nonce, PCRS, signer)


@pytest.mark.parametrize(
    ("scheme", "hash_alg", "shown"),
    [
        (tpm.ALG_RSAPSS, tpm.ALG_SHA256, "RSAPSS-SHA-256"),
        (tpm.ALG_RSASSA, tpm.ALG_SHA384, "RSASSA-SHA-384"),
    ],
)
def test_a_quote_in_another_scheme_than_the_aks_is_refused(scheme: int, hash_alg: int, shown: str) -> None:
    key = rsa_key()  # RSASSA-SHA256
    signer = _signer(key)
    message, signature, nonce = _quote_for(key, signer, scheme, hash_alg)
    with pytest.raises(tpm.TpmError, match=f"quote signature is {shown}, not the attestation key's scheme RSASSA"):
        tpm.verify_quote(key.parsed, message, signature, nonce, PCRS, signer)


def test_an_ecdsa_signature_on_an_rsa_ak_is_refused() -> None:
    key, other = rsa_key(), ecc_key()
    signer = _signer(key)
    message, _, nonce = _quote_for(key, signer, tpm.ALG_RSASSA, tpm.ALG_SHA256)
    with pytest.raises(tpm.TpmError, match="quote signature is ECDSA-SHA-256, not the attestation key's"):
        tpm.verify_quote(key.parsed, message, sign(other, message, tpm.ALG_ECDSA, tpm.ALG_SHA256), nonce, PCRS, signer)


# --- qualifiedSigner ---------------------------------------------------------------------------------


def test_a_quote_naming_another_signer_is_refused() -> None:
    key = rsa_key()
    other = rsa_key()
    message, signature, nonce = _quote_for(key, _signer(other), tpm.ALG_RSASSA, tpm.ALG_SHA256)
    with pytest.raises(tpm.TpmError, match="qualifiedSigner is not the attestation key's qualified name"):
        tpm.verify_quote(key.parsed, message, signature, nonce, PCRS, _signer(key))


def test_a_quote_by_the_ak_under_another_parent_is_refused() -> None:
    key, ek, other_ek = rsa_key(), endorsement_key(), endorsement_key()
    message, signature, nonce = _quote_for(key, _signer(key, other_ek), tpm.ALG_RSASSA, tpm.ALG_SHA256)
    with pytest.raises(tpm.TpmError, match="qualifiedSigner"):
        tpm.verify_quote(key.parsed, message, signature, nonce, PCRS, _signer(key, ek))


def test_a_quote_naming_the_ak_by_its_name_rather_than_qualified_name_is_refused() -> None:
    key = rsa_key()
    message, signature, nonce = _quote_for(key, key.parsed.name, tpm.ALG_RSASSA, tpm.ALG_SHA256)
    with pytest.raises(tpm.TpmError, match="qualifiedSigner"):
        tpm.verify_quote(key.parsed, message, signature, nonce, PCRS, _signer(key))


def test_qualified_name_known_answer() -> None:
    """QN(EK) = nameAlg || H(handle(TPM_RH_ENDORSEMENT) || Name(EK)); QN(AK) = nameAlg || H(QN(EK) || Name(AK))."""
    ek, ak = endorsement_key(), rsa_key()
    ek_qn = b"\x00\x0b" + hashlib.sha256(b"\x40\x00\x00\x0b" + ek.parsed.name).digest()
    assert tpm.endorsement_qualified_name(ek.parsed) == ek_qn
    assert _signer(ak, ek) == b"\x00\x0b" + hashlib.sha256(ek_qn + ak.parsed.name).digest()
