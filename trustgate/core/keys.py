"""Verification keys: which public keys may sign trust reports, and with which algorithm.

Keys come only from operator-provided files (a JWKS and/or PEM public keys), never
from a token. Each key is bound to the algorithms its type can produce, so a token
cannot pick an algorithm that reinterprets the key (RSA key read as an HMAC secret).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ALLOWED_ALGORITHMS: frozenset[str] = frozenset({"ES256", "ES384", "PS256", "PS384", "RS256", "RS384", "EdDSA"})
KEYGEN_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "PS256", "PS384", "RS256", "RS384", "EdDSA")
MIN_RSA_BITS = 2048

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey

_RSA_ALGS = frozenset({"PS256", "PS384", "RS256", "RS384"})
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


class KeyConfigError(Exception):
    """The configured key material cannot be used; raised at start, never per request."""


@dataclass(frozen=True)
class VerificationKey:
    """One public key, the algorithms it may verify, and the issuers it may sign for."""

    kid: str
    key: PublicKey
    algorithms: frozenset[str]
    issuers: frozenset[str] | None = None  # None: any configured issuer

    @property
    def description(self) -> str:
        return describe_key(self.key)


class KeySet:
    """Keys by `kid`; several may be valid at once during a rotation."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self._by_kid: dict[str, VerificationKey] = {}
        for key in keys:
            if key.kid in self._by_kid:
                raise KeyConfigError(f"two verification keys share kid {key.kid!r}")
            self._by_kid[key.kid] = key
        if not self._by_kid:
            raise KeyConfigError("no usable verification key: give a JWKS or PEM file with at least one signing key")

    def get(self, kid: str) -> VerificationKey | None:
        return self._by_kid.get(kid)

    def __len__(self) -> int:
        return len(self._by_kid)

    def __iter__(self):
        return iter(self._by_kid.values())

    def merged(self, other: KeySet) -> KeySet:
        return KeySet([*self, *other])


def algorithms_for(key: PublicKey) -> frozenset[str]:
    """The allowed JWS algorithms a key of this type can verify."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": frozenset({"ES256"}), "secp384r1": frozenset({"ES384"})}.get(key.curve.name, frozenset())
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGS if key.key_size >= MIN_RSA_BITS else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def describe_key(key: PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name} key"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}-bit key"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448 key"
    return type(key).__name__


def public_jwk(key: PublicKey) -> dict[str, Any]:
    """The public JWK members of a key (no `kid`, no `alg`)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return dict(ECAlgorithm.to_jwk(key, as_dict=True))
    if isinstance(key, rsa.RSAPublicKey):
        return dict(RSAAlgorithm.to_jwk(key, as_dict=True))
    return dict(OKPAlgorithm.to_jwk(key, as_dict=True))


def thumbprint(key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the `kid` trustctl derives from a key."""
    jwk = public_jwk(key)
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def keys_from_jwks(document: Any, source: str = "JWKS", issuers: frozenset[str] | None = None) -> list[VerificationKey]:
    """Parse an RFC 7517 key set. Keys not meant for signatures (`use` other than `sig`) are left out."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeyConfigError(f"{source}: not a JWKS (expected an object with a 'keys' list)")
    keys: list[VerificationKey] = []
    for index, jwk in enumerate(document["keys"]):
        where = f"{source}: key #{index}"
        if not isinstance(jwk, Mapping):
            raise KeyConfigError(f"{where} is not an object")
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyConfigError(f"{where} has no 'kid'; every verification key needs one")
        if any(private in jwk for private in ("d", "p", "q")):
            raise KeyConfigError(f"{where} (kid {kid}) contains private key material; publish only public keys")
        key = _jwk_to_public_key(jwk, where)
        algorithms = algorithms_for(key)
        if "alg" in jwk:
            if not isinstance(jwk["alg"], str):
                raise KeyConfigError(f"{where} (kid {kid}): 'alg' must be a string")
            algorithms = algorithms & {jwk["alg"]}
        if not algorithms:
            raise KeyConfigError(
                f"{where} (kid {kid}): a {describe_key(key)} cannot verify any allowed algorithm "
                f"({', '.join(sorted(ALLOWED_ALGORITHMS))})"
            )
        keys.append(VerificationKey(kid=kid, key=key, algorithms=algorithms, issuers=issuers))
    return keys


def key_from_pem(data: bytes, source: str = "PEM", issuers: frozenset[str] | None = None) -> VerificationKey:
    """A PEM public key; its `kid` is its RFC 7638 thumbprint."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyConfigError(f"{source}: not a PEM public key ({exc})") from None
    algorithms = algorithms_for(key)  # type: ignore[arg-type]
    if not algorithms:
        raise KeyConfigError(f"{source}: a {describe_key(key)} cannot verify any allowed algorithm")  # type: ignore[arg-type]
    return VerificationKey(kid=thumbprint(key), key=key, algorithms=algorithms, issuers=issuers)  # type: ignore[arg-type]


def _jwk_to_public_key(jwk: Mapping[str, Any], where: str) -> PublicKey:
    loaders = {"EC": ECAlgorithm, "RSA": RSAAlgorithm, "OKP": OKPAlgorithm}
    kty = jwk.get("kty")
    loader = loaders.get(kty) if isinstance(kty, str) else None
    if loader is None:
        raise KeyConfigError(f"{where}: unsupported key type {jwk.get('kty')!r} (use EC, RSA or OKP)")
    try:
        key = loader.from_jwk(dict(jwk))
    except Exception as exc:  # PyJWT raises several types for malformed members
        raise KeyConfigError(f"{where}: invalid {jwk.get('kty')} key ({exc})") from None
    if not isinstance(key, PublicKey):
        raise KeyConfigError(f"{where}: expected a public key")
    return key


# --- key generation and signing, for trustctl and tests -------------------------------------


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg in _RSA_ALGS:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyConfigError(f"cannot generate a key for {alg!r}; choose one of {', '.join(KEYGEN_ALGORITHMS)}")


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(data: bytes, source: str = "PEM") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyConfigError(f"{source}: not an unencrypted PEM private key ({exc})") from None
    return key  # type: ignore[return-value]


def default_algorithm(key: PrivateKey) -> str:
    """The signing algorithm trustctl uses for a key when none is named."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return "PS256"
    return sorted(algorithms_for(public))[0]  # type: ignore[arg-type]


def jwks_for(key: PublicKey, alg: str) -> dict[str, Any]:
    jwk = public_jwk(key) | {"kid": thumbprint(key), "alg": alg, "use": "sig"}
    return {"keys": [jwk]}
