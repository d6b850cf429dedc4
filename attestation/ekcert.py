"""Endorsement key certificates: chained to a configured bundle of TPM manufacturer CAs.

EK certificates are not Web PKI certificates (empty or placeholder subjects, TPM-specific SANs and
extensions), so the path is checked here rather than with a TLS policy: each issuer is found by
name in the bundle, must be a CA (basicConstraints, keyCertSign when keyUsage is present), must have
signed the certificate below it, and every certificate on the path must be within its validity.
Every certificate of the bundle is a trust anchor (roots and the intermediates an operator chose).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

MAX_DEPTH = 5


class EkCertificateError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fingerprint(der: bytes) -> str:
    """The SHA-256 of the DER certificate, lowercase hex: how an EK is enrolled for a node."""
    return hashlib.sha256(der).hexdigest()


def load_bundle(paths: Iterable[str | Path]) -> list[x509.Certificate]:
    certificates: list[x509.Certificate] = []
    for path in paths:
        data = Path(path).read_bytes()
        try:
            certificates.extend(x509.load_pem_x509_certificates(data))
        except ValueError:
            certificates.append(x509.load_der_x509_certificate(data))
    if not certificates:
        raise ValueError("the EK CA bundle holds no certificate")
    return certificates


class EkVerifier:
    def __init__(self, anchors: Iterable[x509.Certificate]) -> None:
        self.anchors = list(anchors)
        if not self.anchors:
            raise ValueError("no EK CA certificate configured")

    def verify(self, der: bytes, now: datetime | None = None) -> x509.Certificate:
        """The parsed EK certificate, when it chains to the bundle; `EkCertificateError` otherwise."""
        moment = now or datetime.now(UTC)
        try:
            leaf = x509.load_der_x509_certificate(der)
        except ValueError as error:
            raise EkCertificateError(f"EK certificate is not a DER X.509 certificate ({error})") from None
        _check_validity(leaf, moment, "EK certificate")
        current = leaf
        for _ in range(MAX_DEPTH):
            issuer = self._issuer_of(current)
            if issuer is None:
                raise EkCertificateError(
                    f"EK certificate is not issued by a trusted TPM manufacturer CA "
                    f"(issuer {current.issuer.rfc4514_string() or '(empty)'} is not in the EK CA bundle)"
                )
            _check_validity(issuer, moment, f"EK CA {issuer.subject.rfc4514_string()}")
            _check_ca(issuer)
            if issuer.subject == issuer.issuer or issuer in self.anchors:
                return leaf
            current = issuer
        raise EkCertificateError("EK certificate chain too long")

    def _issuer_of(self, certificate: x509.Certificate) -> x509.Certificate | None:
        for candidate in self.anchors:
            if candidate.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(candidate)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return candidate
        return None


def _check_validity(certificate: x509.Certificate, moment: datetime, what: str) -> None:
    if moment < certificate.not_valid_before_utc:
        raise EkCertificateError(f"{what} is not valid before {certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}")
    if moment > certificate.not_valid_after_utc:
        raise EkCertificateError(f"{what} expired at {certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")


def _check_ca(certificate: x509.Certificate) -> None:
    name = certificate.subject.rfc4514_string()
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise EkCertificateError(f"EK issuer {name} is not a CA certificate")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise EkCertificateError(f"EK issuer {name} may not sign certificates")
