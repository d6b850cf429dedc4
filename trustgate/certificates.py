"""X.509 certificates for trustgate's own TLS: a CA, serving and client certificates. No file I/O.

trustgate manages the certificates of its webhook and extender by default (as Kyverno and Gatekeeper
do): a CA and serving certificates kept in Secrets, renewed before they expire. The development kit
issues every certificate of its test clusters with the same functions.

    ca = new_ca("trustgate-ca")
    leaf = issue(ca, "trustgate-webhook", sans=["trustgate-webhook.trustgate-system.svc"], server=True)
    leaf.cert_pem, leaf.key_pem
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
BACKDATE = dt.timedelta(minutes=5)  # tolerate clocks a little behind the issuer's


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def generate_key(kind: str = "ec") -> PrivateKey:
    """An EC P-256 key (the default) or an RSA 2048-bit one."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r} (ec or rsa)")


def new_ca(
    common_name: str,
    lifetime: dt.timedelta = dt.timedelta(days=3650),
    *,
    key: PrivateKey | None = None,
    now: dt.datetime | None = None,
    path_length: int | None = None,
    cert_sign: bool = True,
    issuer: Issued | None = None,
) -> Issued:
    """A CA: self-signed, or an intermediate signed by `issuer`."""
    key = key or generate_key()
    name = _name(common_name)
    builder = (
        _builder(name, issuer.cert.subject if issuer is not None else name, key, now, lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(cert_sign=cert_sign), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(_authority_key_identifier(issuer), critical=False)
    return _sign(builder, key, issuer.key if issuer is not None else key)


def issue(
    ca: Issued | None,
    common_name: str,
    sans: Iterable[str] = (),
    *,
    server: bool = False,
    client: bool = False,
    organization: str | None = None,
    lifetime: dt.timedelta = dt.timedelta(days=365),
    key: PrivateKey | None = None,
    now: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate signed by `ca` (None: self-signed). `sans` are IP addresses, DNS names or
    URIs (with `://`); `organization` becomes the subject's O, which Kubernetes reads as a group."""
    key = key or generate_key()
    usages = [
        u
        for u, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
        if wanted
    ]
    if not usages:
        raise ValueError("a certificate must be for server and/or client use")
    subject = _name(common_name, organization)
    issuer_name = ca.cert.subject if ca is not None else subject
    builder = (
        _builder(subject, issuer_name, key, now, lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(_authority_key_identifier(ca), critical=False)
    general = general_names(sans)
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return _sign(builder, key, ca.key if ca is not None else key)


def _authority_key_identifier(ca: Issued) -> x509.AuthorityKeyIdentifier:
    """The CA's own subject key identifier, which verifiers match: CAs made elsewhere (helm's genCA) do
    not derive it from the public key as this module does."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def general_names(sans: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.UniformResourceIdentifier(san) if "://" in san else x509.DNSName(san))
    return names


def load(cert_pem: bytes, key_pem: bytes) -> Issued:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("expected an EC or RSA private key")
    return Issued(x509.load_pem_x509_certificate(cert_pem), key)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, now: dt.datetime | None, lifetime: dt.timedelta
) -> x509.CertificateBuilder:
    start = now or dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(start + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(cert_sign: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _sign(builder: x509.CertificateBuilder, key: PrivateKey, signer: PrivateKey) -> Issued:
    return Issued(builder.sign(signer, hashes.SHA256()), key)
