"""MakeCredential and quote verification in software, checked against a real TPM (swtpm)."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from cryptography import x509

from agent.tpm2 import QUOTE_PCRS, Tpm2Tools, TpmCommandError
from attestation import tpm


def _signer(tools: Tpm2Tools, ak: tpm.TpmPublic) -> bytes:
    """The AK's qualified name: a child of the EK, which is a primary key of the endorsement hierarchy."""
    return ak.qualified_name(tpm.endorsement_qualified_name(tpm.parse_public(tools.ek_public())))


def test_keys_parse_and_name_matches_the_tpm(tools: Tpm2Tools, tmp_path: Path) -> None:
    ak = tpm.parse_public(tools.ensure_ak())
    ek = tpm.parse_public(tools.ek_public())
    tpm.check_attestation_key(ak)
    tpm.check_endorsement_key(ek)
    assert ek.symmetric == (tpm.ALG_AES, 128, tpm.ALG_CFB)
    assert ak.scheme == (tpm.ALG_RSASSA, tpm.ALG_SHA256)
    assert (ak.name_alg, ek.name_alg) == (tpm.ALG_SHA256, tpm.ALG_SHA256)
    # the EK the tools recreate is the key the EK certificate (from swtpm_localca) certifies
    cert = x509.load_der_x509_certificate(tools.ek_certificate())
    assert ek.public_numbers_equal(cert.public_key())
    with pytest.raises(tpm.TpmError, match="lacks the attributes"):
        tpm.check_attestation_key(ek)
    with pytest.raises(tpm.TpmError, match="not a restricted decryption key"):
        tpm.check_endorsement_key(ak)


def test_make_credential_is_activated_by_the_tpm(tools: Tpm2Tools) -> None:
    ak = tpm.parse_public(tools.ensure_ak())
    ek = tpm.parse_public(tools.ek_public())
    secret = os.urandom(32)
    credential = tpm.make_credential(ek, ak.name, secret)
    assert tools.activate_credential(credential.tpm2_tools_file()) == secret


def test_credential_for_another_name_is_refused_by_the_tpm(tools: Tpm2Tools) -> None:
    ak = tpm.parse_public(tools.ensure_ak())
    ek = tpm.parse_public(tools.ek_public())
    other_name = ak.name[:2] + hashlib.sha256(b"another key").digest()
    credential = tpm.make_credential(ek, other_name, os.urandom(32))
    with pytest.raises(TpmCommandError, match="tpm2_activatecredential"):
        tools.activate_credential(credential.tpm2_tools_file())


def test_credential_for_another_tpm_is_refused(tools: Tpm2Tools) -> None:
    ak = tpm.parse_public(tools.ensure_ak())
    ek = tpm.parse_public(tools.ek_public())
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(65537, 2048).public_key()
    foreign_ek = tpm.TpmPublic(
        ek.raw, ek.type, ek.name_alg, ek.attributes, ek.auth_policy, ek.symmetric, ek.scheme, stranger
    )
    credential = tpm.make_credential(foreign_ek, ak.name, os.urandom(32))
    with pytest.raises(TpmCommandError):
        tools.activate_credential(credential.tpm2_tools_file())


def test_make_credential_to_an_ecc_ek(tools: Tpm2Tools, tmp_path: Path) -> None:
    """ECDH + KDFe seed for an ECC EK (TCG template L-2, NIST P-256)."""
    run, t = tools.run, tmp_path
    tools.flush()
    try:
        run("tpm2_createek", "-c", str(t / "ek.ctx"), "-G", "ecc", "-u", str(t / "ek.pub"))
        run("tpm2_createak", "-C", str(t / "ek.ctx"), "-c", str(t / "ak.ctx"), "-G", "ecc", "-g", "sha256",
            "-s", "ecdsa", "-u", str(t / "ak.pub"), "-r", str(t / "ak.priv"), "-n", str(t / "ak.name"))  # fmt: skip
        ek, ak = tpm.parse_public((t / "ek.pub").read_bytes()), tpm.parse_public((t / "ak.pub").read_bytes())
        assert ak.name == (t / "ak.name").read_bytes()
        secret = os.urandom(16)
        (t / "cred").write_bytes(tpm.make_credential(ek, ak.name, secret).tpm2_tools_file())
        tools.flush()
        # the saved contexts survive the flush: load them again for the activation
        run("tpm2_startauthsession", "--policy-session", "-S", str(t / "s.ctx"))
        run("tpm2_policysecret", "-S", str(t / "s.ctx"), "-c", "e")
        run("tpm2_activatecredential", "-c", str(t / "ak.ctx"), "-C", str(t / "ek.ctx"), "-i", str(t / "cred"),
            "-o", str(t / "out"), "-P", f"session:{t / 's.ctx'}")  # fmt: skip
        assert (t / "out").read_bytes() == secret
        # and an ECDSA quote verifies
        tools.flush()
        nonce = os.urandom(20)
        run("tpm2_quote", "-c", str(t / "ak.ctx"), "-l", "sha256:0,10", "-q", nonce.hex(), "-g", "sha256",
            "-m", str(t / "q.msg"), "-s", str(t / "q.sig"), "-o", str(t / "q.pcrs"), "-F", "values")  # fmt: skip
        values = (t / "q.pcrs").read_bytes()
        signer = ak.qualified_name(tpm.endorsement_qualified_name(ek))
        message, signature = (t / "q.msg").read_bytes(), (t / "q.sig").read_bytes()
        attest = tpm.verify_quote(ak, message, signature, nonce, {0: values[:32], 10: values[32:]}, signer)
        assert attest.selection == ((tpm.ALG_SHA256, (0, 10)),)
    finally:
        tools.flush()


def test_quote_verifies(tools: Tpm2Tools) -> None:
    ak = tpm.parse_public(tools.ensure_ak())
    nonce = os.urandom(32)
    quote = tools.quote(nonce)
    attest = tpm.verify_quote(ak, quote.message, quote.signature, nonce, quote.pcrs, _signer(tools, ak))
    assert attest.extra_data == nonce
    assert attest.selection == ((tpm.ALG_SHA256, QUOTE_PCRS),)
    assert attest.qualified_signer == _signer(tools, ak)  # the TPM's own qualified name of the AK


def test_quote_naming_a_signer_other_than_the_tpms_is_refused(tools: Tpm2Tools) -> None:
    ak = tpm.parse_public(tools.ensure_ak())
    nonce = os.urandom(32)
    quote = tools.quote(nonce)
    with pytest.raises(tpm.TpmError, match="qualifiedSigner is not the attestation key's qualified name"):
        tpm.verify_quote(ak, quote.message, quote.signature, nonce, quote.pcrs, ak.name)
    assert quote.pcrs[17] == b"\xff" * 32  # locality-4 PCRs keep their reset value without a DRTM launch
    assert quote.pcrs[0] == b"\x00" * 32


def test_quote_follows_pcr_extension(tools: Tpm2Tools) -> None:
    ak = tpm.parse_public(tools.ensure_ak())
    before = tools.pcr_read()
    measurement = hashlib.sha256(b"a new kernel").digest()
    tools.pcr_extend(8, measurement)
    nonce = os.urandom(32)
    quote = tools.quote(nonce)
    tpm.verify_quote(ak, quote.message, quote.signature, nonce, quote.pcrs, _signer(tools, ak))
    assert quote.pcrs[8] == hashlib.sha256(before[8] + measurement).digest()
    assert {p: v for p, v in quote.pcrs.items() if p != 8} == {p: v for p, v in before.items() if p != 8}


class TestBadQuotes:
    @pytest.fixture
    def quoted(self, tools: Tpm2Tools) -> tuple[tpm.TpmPublic, bytes, object]:
        ak = tpm.parse_public(tools.ensure_ak())
        nonce = os.urandom(32)
        self.signer = _signer(tools, ak)
        return ak, nonce, tools.quote(nonce)

    def test_wrong_nonce(self, quoted) -> None:  # type: ignore[no-untyped-def]
        ak, _nonce, quote = quoted
        with pytest.raises(tpm.TpmError, match="not over this attestation's nonce"):
            tpm.verify_quote(ak, quote.message, quote.signature, os.urandom(32), quote.pcrs, self.signer)

    def test_signature_from_another_key(self, quoted, tools: Tpm2Tools) -> None:  # type: ignore[no-untyped-def]
        ak, nonce, quote = quoted
        other = tpm.parse_public(tools.ensure_ak(recreate=True))
        assert other.name != ak.name
        with pytest.raises(tpm.TpmError, match="does not verify with the attestation key"):
            tpm.verify_quote(other, quote.message, quote.signature, nonce, quote.pcrs, _signer(tools, other))

    def test_tampered_message(self, quoted) -> None:  # type: ignore[no-untyped-def]
        ak, nonce, quote = quoted
        tampered = quote.message[:-1] + bytes([quote.message[-1] ^ 1])  # the PCR digest's last byte
        with pytest.raises(tpm.TpmError, match="does not verify"):
            tpm.verify_quote(ak, tampered, quote.signature, nonce, quote.pcrs, self.signer)

    def test_pcrs_not_matching_the_digest(self, quoted) -> None:  # type: ignore[no-untyped-def]
        ak, nonce, quote = quoted
        lying = dict(quote.pcrs) | {7: hashlib.sha256(b"what the verifier wants").digest()}
        with pytest.raises(tpm.TpmError, match="do not match the quoted PCR digest"):
            tpm.verify_quote(ak, quote.message, quote.signature, nonce, lying, self.signer)

    def test_pcrs_other_than_quoted(self, quoted) -> None:  # type: ignore[no-untyped-def]
        ak, nonce, quote = quoted
        fewer = {p: v for p, v in quote.pcrs.items() if p != 10}
        with pytest.raises(tpm.TpmError, match="are not the quoted PCRs"):
            tpm.verify_quote(ak, quote.message, quote.signature, nonce, fewer, self.signer)

    def test_garbage_signature(self, quoted) -> None:  # type: ignore[no-untyped-def]
        ak, nonce, quote = quoted
        for signature in (b"", b"\x00\x14", struct.pack(">HH", 0x99, tpm.ALG_SHA256) + b"\x00\x00"):
            with pytest.raises(tpm.TpmError):
                tpm.verify_quote(ak, quote.message, signature, nonce, quote.pcrs, self.signer)


def test_not_a_quote() -> None:
    with pytest.raises(tpm.TpmError, match="not generated by a TPM"):
        tpm.parse_attest(b"\x00" * 64)
    with pytest.raises(tpm.TpmError, match="not a quote"):
        tpm.parse_attest(struct.pack(">IH", tpm.GENERATED_VALUE, 0x8017) + b"\x00" * 60)
    with pytest.raises(tpm.TpmError, match="truncated"):
        tpm.parse_attest(struct.pack(">IH", tpm.GENERATED_VALUE, tpm.ST_ATTEST_QUOTE) + b"\x00\x40")


def test_public_parse_errors() -> None:
    with pytest.raises(tpm.TpmError, match="truncated"):
        tpm.parse_public(b"\x00\x10\x00\x01")
    with pytest.raises(tpm.TpmError, match="not an RSA or ECC key"):
        tpm.parse_public(tpm.tpm2b(struct.pack(">HHI", tpm.ALG_KEYEDHASH, tpm.ALG_SHA256, 0) + b"\x00\x00"))


def test_kdfa_known_answer() -> None:
    # KDFa is HMAC(key, [i]4 || label || 00 || contextU || contextV || [bits]4): one block here
    import hmac

    key, bits = b"k" * 32, 128
    expected = hmac.new(key, b"\x00\x00\x00\x01STORAGE\x00nameu\x00\x00\x00\x80", "sha256").digest()[:16]
    assert tpm.kdfa(tpm.ALG_SHA256, key, b"STORAGE", b"name", b"u", bits) == expected
    assert len(tpm.kdfa(tpm.ALG_SHA256, key, b"X", b"", b"", 512)) == 64
