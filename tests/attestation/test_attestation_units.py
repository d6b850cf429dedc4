"""EK certificate paths, flavors and the service's configuration checks (no TPM needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation import ekcert
from attestation.flavors import Flavor, FlavorError, flavor_from_object, flavors_from_values, judge, load_flavor_file
from attestation.main import main

NOW = dt.datetime.now(dt.UTC)


def _cert(
    subject: str, issuer_key, issuer: str | None = None, ca: bool = False, days: int = 30, key=None, cert_sign=True
):  # type: ignore[no-untyped-def]
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        usage = dict.fromkeys(
            ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "crl_sign", "encipher_only", "decipher_only"), False)  # fmt: skip
        builder = builder.add_extension(x509.KeyUsage(key_cert_sign=cert_sign, **usage), critical=True)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def pki():  # type: ignore[no-untyped-def]
    root, root_key = _cert("root", None, ca=True)
    inter, inter_key = _cert("inter", root_key, "root", ca=True)
    ek, _ = _cert("ek", inter_key, "inter")
    return root, inter, inter_key, ek


def test_a_chain_to_the_bundle_verifies(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, _, ek = pki
    assert ekcert.EkVerifier([root, inter]).verify(_der(ek)).subject == ek.subject
    assert ekcert.EkVerifier([inter]).verify(_der(ek))  # an intermediate is an anchor too


def test_unknown_issuer_and_missing_intermediate(pki) -> None:  # type: ignore[no-untyped-def]
    root, _, _, ek = pki
    other, _ = _cert("other", None, ca=True)
    with pytest.raises(ekcert.EkCertificateError, match="issuer CN=inter is not in the EK CA bundle"):
        ekcert.EkVerifier([other]).verify(_der(ek))
    with pytest.raises(ekcert.EkCertificateError, match="not issued by a trusted TPM manufacturer CA"):
        ekcert.EkVerifier([root]).verify(_der(ek))


def test_same_name_other_key_is_not_the_issuer(pki) -> None:  # type: ignore[no-untyped-def]
    _, _, _, ek = pki
    impostor, _ = _cert("inter", None, ca=True)  # a CA named like the real issuer
    with pytest.raises(ekcert.EkCertificateError, match="not in the EK CA bundle"):
        ekcert.EkVerifier([impostor]).verify(_der(ek))


def test_issuer_must_be_a_ca_that_may_sign(pki) -> None:  # type: ignore[no-untyped-def]
    root, root_key = _cert("leafy", None)
    ek, _ = _cert("ek", root_key, "leafy")
    with pytest.raises(ekcert.EkCertificateError, match="is not a CA certificate"):
        ekcert.EkVerifier([root]).verify(_der(ek))
    nosign, nosign_key = _cert("nosign", None, ca=True, cert_sign=False)
    ek2, _ = _cert("ek", nosign_key, "nosign")
    with pytest.raises(ekcert.EkCertificateError, match="may not sign certificates"):
        ekcert.EkVerifier([nosign]).verify(_der(ek2))


def test_expired_and_garbage(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, inter_key, _ = pki
    old, _ = _cert("ek", inter_key, "inter", days=1)
    with pytest.raises(ekcert.EkCertificateError, match="expired at"):
        ekcert.EkVerifier([root, inter]).verify(_der(old), now=NOW + dt.timedelta(days=2))
    with pytest.raises(ekcert.EkCertificateError, match="not a DER X"):
        ekcert.EkVerifier([root]).verify(b"\x30\x03abc")


def test_flavor_validation() -> None:
    good = {
        "metadata": {"name": "f"},
        "spec": {"level": "kernel", "pcrs": {"7": "00" * 32, "8": "0x" + "11" * 32, "9": "22" * 32}},
    }
    flavor = flavor_from_object(good)
    assert flavor.pcrs[8] == b"\x11" * 32
    bad_cases = [
        ({"metadata": {}, "spec": good["spec"]}, "needs metadata.name"),
        ({"metadata": {"name": "f"}, "spec": {"level": "gpu", "pcrs": {}}}, "level must be one of"),
        ({"metadata": {"name": "f"}, "spec": {"level": "kernel", "pcrs": {"7": "00" * 32}}}, "must pin exactly PCRs"),
        ({"metadata": {"name": "f"}, "spec": {"level": "runtime", "pcrs": {"10": "zz"}}}, "not a PCR number and hex"),
        ({"metadata": {"name": "f"}, "spec": {"level": "runtime", "pcrs": {"10": "00"}}}, "32-byte"),
    ]
    for obj, message in bad_cases:
        with pytest.raises(FlavorError, match=message):
            flavor_from_object(obj)


def test_judge_and_round_trip(tmp_path: Path) -> None:
    import yaml

    values = {p: bytes([p]) * 32 for p in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 17, 18)}
    flavors = flavors_from_values("golden", values)
    path = tmp_path / "flavors.yaml"
    path.write_text(yaml.safe_dump_all([f.to_object() for f in flavors]))
    assert load_flavor_file(path) == flavors
    assert all(judge(flavors, values).levels.values())
    changed = values | {9: b"\xee" * 32}
    verdict = judge(
        [*flavors, Flavor("alt-kernel", "kernel", {7: b"\x07" * 32, 8: b"\x08" * 32, 9: b"\xaa" * 32})], changed
    )
    assert verdict.levels["kernel"] is False and verdict.reasons == ["level kernel: PCR 9 match no kernel flavor"]
    assert verdict.matched["runtime"] == "golden-runtime"


def test_serve_refuses_an_incomplete_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--issuer", "x"]) == 2
    assert "--signing-key is required" in capsys.readouterr().err
    key = tmp_path / "k.pem"
    key.write_text("not a key")
    args = ["serve", "--issuer", "x", f"--signing-key={key}", "--tls-cert=c", "--tls-key=k", f"--ek-ca={key}"]
    assert main(args) == 2
    assert "--client-ca is required: agents authenticate with their node's client certificate" in (
        capsys.readouterr().err
    )
    assert main([*args, f"--client-ca={key}", "--max-requests=17"]) == 2
    assert "--max-requests is at most 16" in capsys.readouterr().err
    assert main([*args, f"--client-ca={key}"]) == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
