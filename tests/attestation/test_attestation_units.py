"""EK certificate paths, flavors and the service's configuration checks (no TPM needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation import ekcert
from attestation.flavors import Flavor, FlavorError, flavor_from_object, flavors_from_values, judge, load_flavor_file
from attestation.main import main
from trustgate.certificates import issue, new_ca

NOW = dt.datetime.now(dt.UTC)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def pki():  # type: ignore[no-untyped-def]
    root = new_ca("root")
    inter = new_ca("inter", issuer=root)
    ek = issue(inter, "ek", client=True)
    return root.cert, inter.cert, inter, ek.cert


def test_a_chain_to_the_bundle_verifies(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, _, ek = pki
    assert ekcert.EkVerifier([root, inter]).verify(_der(ek)).subject == ek.subject
    assert ekcert.EkVerifier([inter]).verify(_der(ek))  # an intermediate is an anchor too


def test_unknown_issuer_and_missing_intermediate(pki) -> None:  # type: ignore[no-untyped-def]
    root, _, _, ek = pki
    other = new_ca("other").cert
    with pytest.raises(ekcert.EkCertificateError, match="issuer CN=inter is not in the EK CA bundle"):
        ekcert.EkVerifier([other]).verify(_der(ek))
    with pytest.raises(ekcert.EkCertificateError, match="not issued by a trusted TPM manufacturer CA"):
        ekcert.EkVerifier([root]).verify(_der(ek))


def test_same_name_other_key_is_not_the_issuer(pki) -> None:  # type: ignore[no-untyped-def]
    _, _, _, ek = pki
    impostor = new_ca("inter").cert  # a CA named like the real issuer
    with pytest.raises(ekcert.EkCertificateError, match="not in the EK CA bundle"):
        ekcert.EkVerifier([impostor]).verify(_der(ek))


def test_issuer_must_be_a_ca_that_may_sign(pki) -> None:  # type: ignore[no-untyped-def]
    leafy = issue(None, "leafy", server=True)
    ek = issue(leafy, "ek", client=True).cert
    with pytest.raises(ekcert.EkCertificateError, match="is not a CA certificate"):
        ekcert.EkVerifier([leafy.cert]).verify(_der(ek))
    nosign = new_ca("nosign", cert_sign=False)
    ek2 = issue(nosign, "ek", client=True).cert
    with pytest.raises(ekcert.EkCertificateError, match="may not sign certificates"):
        ekcert.EkVerifier([nosign.cert]).verify(_der(ek2))


def test_expired_and_garbage(pki) -> None:  # type: ignore[no-untyped-def]
    root, inter, inter_ca, _ = pki
    old = issue(inter_ca, "ek", client=True, lifetime=dt.timedelta(days=1)).cert
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
