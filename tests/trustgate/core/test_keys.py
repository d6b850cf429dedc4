"""Verification keys: thumbprint kids, algorithm binding, and loud failures for unusable key material."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from trustgate.core.keys import (
    KeyConfigError,
    KeySet,
    VerificationKey,
    algorithms_for,
    default_algorithm,
    generate_private_key,
    jwks_for,
    key_from_pem,
    keys_from_jwks,
    private_key_pem,
    thumbprint,
)
from trustgate.keyfiles import load_keys, load_private_key

from ..craft import rsa_key

# RFC 7638, section 3.1: the example RSA key and its SHA-256 JWK thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknj"
    "hMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qM"
    "QvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJz"
    "KnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
# RFC 8037, appendix A.3: the example Ed25519 key and its thumbprint.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"

ALL_RSA = frozenset({"PS256", "PS384", "RS256", "RS384"})


def rfc7638_key() -> rsa.RSAPublicKey:
    return RSAAlgorithm.from_jwk({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})  # type: ignore[return-value]


def pem_of(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_jwk(key: Any, **extra: Any) -> dict[str, Any]:
    loader = {ec.EllipticCurvePublicKey: ECAlgorithm, rsa.RSAPublicKey: RSAAlgorithm}
    algorithm = next((a for cls, a in loader.items() if isinstance(key, cls)), OKPAlgorithm)
    return dict(algorithm.to_jwk(key, as_dict=True)) | {"kid": "k1"} | extra


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def config_error(call, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(KeyConfigError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# --- thumbprints ------------------------------------------------------------------------------------


def test_the_thumbprint_of_the_rfc7638_example_key_is_the_published_one() -> None:
    assert thumbprint(rfc7638_key()) == RFC7638_THUMBPRINT


def test_a_pem_key_kid_is_its_rfc7638_thumbprint(tmp_path) -> None:
    pem = tmp_path / "aias.pem"
    pem.write_bytes(pem_of(rfc7638_key()))

    (key,) = load_keys(pem_paths=[pem])

    assert key.kid == RFC7638_THUMBPRINT
    assert key.algorithms == ALL_RSA
    assert key.issuers is None


def test_the_thumbprint_of_the_rfc8037_ed25519_example_key_is_the_published_one() -> None:
    key = OKPAlgorithm.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})

    assert thumbprint(key) == RFC8037_THUMBPRINT  # type: ignore[arg-type]


def test_the_thumbprint_ignores_kid_alg_and_use_members() -> None:
    with_extras = keys_from_jwks({"keys": [{"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "kid": "x", "alg": "RS256"}]})

    assert thumbprint(with_extras[0].key) == RFC7638_THUMBPRINT


@pytest.mark.parametrize("alg", ["ES256", "ES384", "PS256", "EdDSA"])
def test_jwks_for_publishes_the_public_key_under_its_thumbprint(alg: str) -> None:
    key = rsa_key() if alg == "PS256" else generate_private_key(alg)
    (jwk,) = jwks_for(key.public_key(), alg)["keys"]  # type: ignore[arg-type]

    assert jwk["kid"] == thumbprint(key.public_key())  # type: ignore[arg-type]
    assert (jwk["alg"], jwk["use"]) == (alg, "sig")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
    assert keys_from_jwks({"keys": [jwk]})[0].algorithms == {alg}


# --- algorithms bound to key types ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), {"ES256"}),
        (lambda: ec.generate_private_key(ec.SECP384R1()), {"ES384"}),
        (lambda: ec.generate_private_key(ec.SECP521R1()), set()),
        (lambda: ec.generate_private_key(ec.SECP256K1()), set()),
        (rsa_key, ALL_RSA),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), set()),
        (ed25519.Ed25519PrivateKey.generate, {"EdDSA"}),
        (ed448.Ed448PrivateKey.generate, {"EdDSA"}),
    ],
    ids=["P-256", "P-384", "P-521", "secp256k1", "RSA-2048", "RSA-1024", "Ed25519", "Ed448"],
)
def test_each_key_type_verifies_only_the_algorithms_it_can_produce(make, expected) -> None:
    assert algorithms_for(make().public_key()) == expected


def test_an_alg_member_in_the_jwk_narrows_the_key_to_that_algorithm() -> None:
    (key,) = keys_from_jwks({"keys": [public_jwk(rsa_key().public_key(), alg="PS384")]})

    assert key.algorithms == {"PS384"}


def test_keys_for_encryption_are_left_out_of_the_set() -> None:
    document = {
        "keys": [
            public_jwk(rsa_key().public_key(), kid="enc", use="enc"),
            public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), kid="sig", use="sig"),
        ]
    }

    assert [key.kid for key in keys_from_jwks(document)] == ["sig"]


def test_keys_loaded_with_issuers_are_scoped_to_them(tmp_path) -> None:
    jwks = write_json(tmp_path / "jwks.json", {"keys": [public_jwk(rsa_key().public_key())]})

    (key,) = load_keys(jwks_paths=[jwks], issuers=["https://aias.example"])

    assert key.issuers == frozenset({"https://aias.example"})


def test_a_key_set_finds_keys_by_kid_and_merges_with_another() -> None:
    a = VerificationKey("a", rsa_key().public_key(), ALL_RSA)
    b = VerificationKey("b", ed25519.Ed25519PrivateKey.generate().public_key(), frozenset({"EdDSA"}))

    merged = KeySet([a]).merged(KeySet([b]))

    assert (merged.get("a"), merged.get("b"), merged.get("c"), len(merged)) == (a, b, None, 2)


# --- unusable key material --------------------------------------------------------------------------


def test_a_missing_key_file_is_a_config_error_naming_it(tmp_path) -> None:
    missing = tmp_path / "nope.json"

    assert config_error(load_keys, jwks_paths=[missing]) == f"cannot read key file {missing}: No such file or directory"
    assert config_error(load_keys, pem_paths=[missing]).startswith(f"cannot read key file {missing}")


def test_a_jwks_file_that_is_not_json_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text("keys: [] # yaml, not json")

    assert config_error(load_keys, jwks_paths=[path]).startswith(f"{path}: not valid JSON (")


@pytest.mark.parametrize("document", [[], {"keys": {}}, {"key": []}, "keys"])
def test_json_that_is_not_a_jwks_is_a_config_error(tmp_path, document) -> None:
    path = write_json(tmp_path / "jwks.json", document)

    assert config_error(load_keys, jwks_paths=[path]) == (f"{path}: not a JWKS (expected an object with a 'keys' list)")


@pytest.mark.parametrize(
    "document",
    [{"keys": []}, {"keys": [{"kty": "EC", "use": "enc", "kid": "e"}]}],
    ids=["empty", "only-encryption-keys"],
)
def test_a_jwks_without_a_usable_signing_key_is_a_config_error(tmp_path, document) -> None:
    path = write_json(tmp_path / "jwks.json", document)

    assert config_error(load_keys, jwks_paths=[path]).startswith("no usable verification key")


def test_no_key_files_at_all_is_a_config_error() -> None:
    assert config_error(load_keys).startswith("no usable verification key")


@pytest.mark.parametrize(
    "private",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        rsa_key,
        ed25519.Ed25519PrivateKey.generate,
    ],
    ids=["EC", "RSA", "OKP"],
)
def test_private_key_material_in_a_jwks_is_refused(tmp_path, private) -> None:
    key = private()
    loader = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else None
    loader = loader or (RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else OKPAlgorithm)
    jwk = dict(loader.to_jwk(key, as_dict=True)) | {"kid": "leaked"}
    path = write_json(tmp_path / "jwks.json", {"keys": [jwk]})

    assert config_error(load_keys, jwks_paths=[path]) == (
        f"{path}: key #0 (kid leaked) contains private key material; publish only public keys"
    )


def test_an_ec_p521_key_is_refused_with_the_allowed_algorithms() -> None:
    jwk = public_jwk(ec.generate_private_key(ec.SECP521R1()).public_key(), kid="p521")

    assert config_error(keys_from_jwks, {"keys": [jwk]}) == (
        "JWKS: key #0 (kid p521): a EC secp521r1 key cannot verify any allowed algorithm "
        "(ES256, ES384, EdDSA, PS256, PS384, RS256, RS384)"
    )


def test_an_rsa_1024_bit_key_is_refused_in_a_jwks_and_as_pem() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()

    assert "RSA 1024-bit key cannot verify any allowed algorithm" in config_error(
        keys_from_jwks, {"keys": [public_jwk(weak)]}
    )
    assert config_error(key_from_pem, pem_of(weak), source="weak.pem") == (
        "weak.pem: a RSA 1024-bit key cannot verify any allowed algorithm"
    )


@pytest.mark.parametrize("alg", ["ES256", "HS256", "none", "RS512"])
def test_a_jwk_whose_alg_its_key_cannot_verify_is_refused(alg: str) -> None:
    jwk = public_jwk(rsa_key().public_key(), alg=alg)

    assert "RSA 2048-bit key cannot verify any allowed algorithm" in config_error(keys_from_jwks, {"keys": [jwk]})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kid": None}, "JWKS: key #0 has no 'kid'; every verification key needs one"),
        ({"kid": ""}, "JWKS: key #0 has no 'kid'; every verification key needs one"),
        ({"kid": 7}, "JWKS: key #0 has no 'kid'; every verification key needs one"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "JWKS: key #0: unsupported key type 'oct' (use EC, RSA or OKP)"),
        ({"kty": None}, "JWKS: key #0: unsupported key type None (use EC, RSA or OKP)"),
        ({"kty": ["EC"]}, "JWKS: key #0: unsupported key type ['EC'] (use EC, RSA or OKP)"),
        ({"alg": ["ES256"]}, "JWKS: key #0 (kid k1): 'alg' must be a string"),
        ({"x": "AAAA"}, "JWKS: key #0: invalid EC key ("),
        ({"crv": "P-999"}, "JWKS: key #0: invalid EC key ("),
    ],
    ids=["no-kid", "empty-kid", "int-kid", "symmetric", "no-kty", "list-kty", "list-alg", "bad-point", "bad-curve"],
)
def test_a_malformed_jwk_is_a_config_error_saying_what_is_wrong(change, reason: str) -> None:
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()) | change
    jwk = {k: v for k, v in jwk.items() if v is not None}

    assert config_error(keys_from_jwks, {"keys": [jwk]}).startswith(reason)


def test_a_jwks_entry_that_is_not_an_object_is_a_config_error() -> None:
    assert config_error(keys_from_jwks, {"keys": ["k1"]}, source="aias.json") == "aias.json: key #0 is not an object"


def test_two_keys_with_the_same_kid_are_refused() -> None:
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), kid="same")
    other = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), kid="same")

    assert config_error(lambda: KeySet(keys_from_jwks({"keys": [jwk, other]}))) == (
        "two verification keys share kid 'same'"
    )


@pytest.mark.parametrize(
    "data",
    [b"not a pem", lambda: private_key_pem(ec.generate_private_key(ec.SECP256R1()))],
    ids=["garbage", "private-key"],
)
def test_a_pem_file_without_a_public_key_is_a_config_error(data) -> None:
    data = data() if callable(data) else data

    assert config_error(key_from_pem, data, source="aias.pem").startswith("aias.pem: not a PEM public key (")


def test_a_pem_p521_key_is_refused() -> None:
    pem = pem_of(ec.generate_private_key(ec.SECP521R1()).public_key())

    assert config_error(key_from_pem, pem) == "PEM: a EC secp521r1 key cannot verify any allowed algorithm"


# --- private keys, for trustctl ---------------------------------------------------------------------


def test_generating_a_key_for_an_unsupported_algorithm_is_a_config_error() -> None:
    assert config_error(generate_private_key, "HS256") == (
        "cannot generate a key for 'HS256'; choose one of ES256, ES384, PS256, PS384, RS256, RS384, EdDSA"
    )


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (rsa_key, "PS256"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    ],
    ids=["EC", "RSA", "Ed25519"],
)
def test_the_default_signing_algorithm_follows_the_key_type(make, alg: str) -> None:
    assert default_algorithm(make()) == alg


def test_a_private_key_round_trips_through_pem(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(private_key_pem(key))

    assert thumbprint(load_private_key(path).public_key()) == thumbprint(key.public_key())  # type: ignore[arg-type]


def test_loading_a_public_key_as_the_signing_key_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "public.pem"
    path.write_bytes(pem_of(ec.generate_private_key(ec.SECP256R1()).public_key()))

    assert config_error(load_private_key, path).startswith(f"{path}: not an unencrypted PEM private key (")
