"""Trust report verification: every bad token fails with its own reason, and only with a ReportError."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import get_default_algorithms

import trustgate.core.report as report_module
from devkit.factories import ISSUER, Issuer
from trustgate.core.keys import KeySet, VerificationKey, algorithms_for, jwks_for, key_from_pem, keys_from_jwks
from trustgate.core.report import (
    LEVELS,
    ClaimError,
    MalformedReport,
    ReportError,
    ReportVerifier,
    SignatureError,
    VerifierSettings,
    format_time,
)
from trustgate.keyfiles import load_keys

from ..craft import (
    NOW,
    b64json,
    b64url,
    craft,
    decode_segment,
    header_for,
    identity,
    issuer_for,
    kid_of,
    parts,
    rsa_key,
    signed,
)

ALL_ALGORITHMS = ("ES256", "ES384", "PS256", "PS384", "RS256", "RS384", "EdDSA")


def reject(verifier: ReportVerifier, token: Any, kind: type[ReportError] = ReportError) -> str:
    """The reason `verifier` rejects `token` for; fails the test if it is accepted or crashes otherwise."""
    with pytest.raises(kind) as caught:
        verifier.verify(token)
    return caught.value.reason


def reject_for(verifier: ReportVerifier, token: str, node: str = "n1", now: float = NOW, **ident: str) -> str:
    with pytest.raises(ReportError) as caught:
        verifier.verify_for(token, identity(node, **ident), now)
    return caught.value.reason


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


# --- accepted reports ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_a_report_signed_with_each_allowed_algorithm_verifies(alg: str) -> None:
    issuer = issuer_for(alg)
    token = issuer.token("n1", now=NOW, asset_tags={"country": "US"})

    report = issuer.verifier().verify_for(token, identity("n1"), NOW + 60)

    assert (report.algorithm, report.kid, report.node) == (alg, kid_of(issuer.key), "n1")
    assert report.issuer == ISSUER
    assert report.expires_at == NOW + 3600
    assert report.trusted_levels == frozenset(LEVELS)
    assert dict(report.asset_tags) == {"country": "US"}


def test_the_verified_report_keeps_levels_asset_tags_features_and_boot_id(issuer: Issuer, verifier) -> None:
    claims = issuer.claims("n1", now=NOW, levels={"kernel": False}, asset_tags={"tenant": "acme"})
    claims["features"] = {"tpm": "2.0"}
    report = verifier.verify(signed(issuer, claims))

    assert report.trusted_levels == frozenset(LEVELS) - {"kernel"}
    assert dict(report.levels)["kernel"] is False
    assert dict(report.features) == {"tpm": "2.0"}
    assert report.to_claims()["boot_id"] == identity("n1").boot_id
    assert report.to_claims()["asset_tags"] == {"tenant": "acme"}


def test_two_keys_in_one_jwks_during_a_rotation_both_verify() -> None:
    old, new = Issuer("ES256"), Issuer("EdDSA")
    jwks = {"keys": old.jwks["keys"] + new.jwks["keys"]}
    verifier = ReportVerifier(KeySet(keys_from_jwks(jwks)), VerifierSettings(issuers=frozenset({ISSUER})))

    assert verifier.verify(old.token("n1", now=NOW)).kid == kid_of(old.key)
    assert verifier.verify(new.token("n1", now=NOW)).kid == kid_of(new.key)


def test_merged_key_sets_verify_reports_of_either_key() -> None:
    old, new = Issuer("ES256"), Issuer("ES384")
    verifier = ReportVerifier(old.keyset().merged(new.keyset()), VerifierSettings(issuers=frozenset({ISSUER})))

    assert {verifier.verify(i.token("n1", now=NOW)).algorithm for i in (old, new)} == {"ES256", "ES384"}


def test_a_pem_key_verifies_reports_under_its_thumbprint_kid(tmp_path) -> None:
    issuer = issuer_for("PS256")
    pem = tmp_path / "aias.pem"
    pem.write_bytes(
        issuer.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = ReportVerifier(load_keys(pem_paths=[pem]), VerifierSettings(issuers=frozenset({ISSUER})))

    assert verifier.verify(issuer.token("n1", now=NOW)).kid == kid_of(issuer.key)


# --- algorithm and key attacks --------------------------------------------------------------------


def test_alg_none_is_rejected_as_not_allowed(issuer: Issuer, verifier) -> None:
    token = craft({"alg": "none", "kid": kid_of(issuer.key), "typ": "JWT"}, issuer.claims("n1", now=NOW))

    assert reject(verifier, token, SignatureError).startswith("algorithm 'none' not allowed")


def test_alg_none_with_an_empty_signature_is_not_even_a_compact_jws(issuer: Issuer, verifier) -> None:
    token = b64json({"alg": "none", "typ": "JWT"}) + "." + b64json(issuer.claims("n1", now=NOW)) + "."

    assert reject(verifier, token, MalformedReport).startswith("not a compact JWS")


def test_hs256_signed_with_the_public_key_pem_as_hmac_secret_is_rejected() -> None:
    """Algorithm confusion: the verifier must never use an RSA public key as an HMAC secret."""
    key = rsa_key()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    verification_key = key_from_pem(pem)
    verifier = ReportVerifier(KeySet([verification_key]), VerifierSettings(issuers=frozenset({ISSUER})))
    header = b64json({"alg": "HS256", "kid": verification_key.kid, "typ": "JWT"})
    payload = b64json(issuer_for("RS256").claims("n1", now=NOW))
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()

    reason = reject(verifier, f"{header}.{payload}.{b64url(mac)}", SignatureError)

    assert reason.startswith("algorithm 'HS256' not allowed")


@pytest.mark.parametrize("alg", ["es256", "Es256", "ES512", "RS512", "PS512", "HS256", "HS512", "ES256K", "Ed25519"])
def test_algorithms_outside_the_allow_list_are_rejected_by_name_even_in_other_case(issuer: Issuer, verifier, alg):
    token = craft(header_for(issuer, alg=alg), issuer.claims("n1", now=NOW), issuer.key, alg="ES256")

    assert reject(verifier, token, SignatureError).startswith(f"algorithm {alg!r} not allowed")


@pytest.mark.parametrize("alg", [None, 256, ["ES256"], {"name": "ES256"}, True])
def test_a_missing_or_non_string_alg_is_rejected_without_crashing(issuer: Issuer, verifier, alg) -> None:
    header = {k: v for k, v in header_for(issuer, alg=alg).items() if v is not None}
    token = craft(header, issuer.claims("n1", now=NOW), issuer.key, alg="ES256")

    assert " not allowed (allowed: ES256, ES384, EdDSA, PS256, PS384, RS256, RS384)" in reject(verifier, token)


@pytest.mark.parametrize("header_alg", ["ES256", "ES384", "EdDSA"])
def test_an_rsa_key_cannot_verify_an_ec_or_eddsa_header_even_with_an_rsa_signature(header_alg: str) -> None:
    rsa_issuer = issuer_for("RS256")
    verifier = rsa_issuer.verifier()
    token = craft(header_for(rsa_issuer, alg=header_alg), rsa_issuer.claims("n1", now=NOW), rsa_issuer.key, "RS256")

    reason = reject(verifier, token, SignatureError)

    assert reason == f"key {kid_of(rsa_issuer.key)} is an RSA 2048-bit key and cannot verify {header_alg}"


def test_an_rsa_key_published_without_alg_still_cannot_verify_es256() -> None:
    rsa_issuer = issuer_for("RS256")
    jwk = {k: v for k, v in rsa_issuer.jwks["keys"][0].items() if k != "alg"}
    verifier = ReportVerifier(KeySet(keys_from_jwks({"keys": [jwk]})), VerifierSettings(issuers=frozenset({ISSUER})))
    token = craft(header_for(rsa_issuer, alg="ES256"), rsa_issuer.claims("n1", now=NOW), rsa_issuer.key, "RS256")

    assert reject(verifier, token, SignatureError).endswith("RSA 2048-bit key and cannot verify ES256")


@pytest.mark.parametrize("header_alg", ["RS256", "PS256", "EdDSA", "ES384"])
def test_a_p256_key_verifies_es256_only(issuer: Issuer, verifier, header_alg: str) -> None:
    token = craft(header_for(issuer, alg=header_alg), issuer.claims("n1", now=NOW), issuer.key, "ES256")

    assert reject(verifier, token, SignatureError).endswith(f"EC secp256r1 key and cannot verify {header_alg}")


def test_an_rsa_key_pinned_to_rs256_by_its_jwk_cannot_verify_ps256() -> None:
    rsa_issuer = issuer_for("RS256")  # its JWKS says alg RS256
    token = craft(header_for(rsa_issuer, alg="PS256"), rsa_issuer.claims("n1", now=NOW), rsa_issuer.key, "PS256")

    assert reject(rsa_issuer.verifier(), token, SignatureError).endswith("cannot verify PS256")


def test_an_unknown_kid_is_rejected_naming_the_kid(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW), kid="rotated-away")

    assert reject(verifier, token, SignatureError) == "unknown signing key (kid 'rotated-away')"


@pytest.mark.parametrize("kid", [None, "", 7, ["k"]])
def test_a_missing_or_non_string_kid_is_rejected(issuer: Issuer, verifier, kid) -> None:
    header = {k: v for k, v in header_for(issuer, kid=kid).items() if v is not None}
    token = craft(header, issuer.claims("n1", now=NOW), issuer.key)

    assert reject(verifier, token, SignatureError) == "token header has no kid"


def test_the_right_kid_on_a_token_signed_by_another_key_fails_the_signature(issuer: Issuer, verifier) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    token = craft(header_for(issuer), issuer.claims("n1", now=NOW), attacker)

    assert reject(verifier, token, SignatureError) == f"signature does not verify with key {kid_of(issuer.key)}"


def test_a_tampered_payload_fails_the_signature(issuer: Issuer, verifier) -> None:
    header, _, signature = parts(issuer.token("n1", now=NOW, levels={"kernel": False}))
    forged = b64json(issuer.claims("n1", now=NOW))  # every level true

    assert reject(verifier, f"{header}.{forged}.{signature}", SignatureError).startswith("signature does not verify")


def test_a_tampered_header_fails_the_signature(issuer: Issuer, verifier) -> None:
    _, payload, signature = parts(issuer.token("n1", now=NOW))
    header = b64json(header_for(issuer, typ="jwt"))

    assert reject(verifier, f"{header}.{payload}.{signature}", SignatureError).startswith("signature does not verify")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_a_signature_with_one_flipped_bit_fails_for_every_algorithm(alg: str) -> None:
    issuer = issuer_for(alg)
    header, payload, signature = parts(issuer.token("n1", now=NOW))
    raw = bytearray(decode_segment(signature))
    raw[len(raw) // 2] ^= 0x01

    reason = reject(issuer.verifier(), f"{header}.{payload}.{b64url(bytes(raw))}", SignatureError)

    assert reason == f"signature does not verify with key {kid_of(issuer.key)}"


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (lambda t: t.rsplit(".", 1)[0], "not a compact JWS"),
        (lambda t: t.rsplit(".", 1)[0] + ".", "not a compact JWS"),
        (lambda t: t[:20], "not a compact JWS"),
        (lambda t: t[:-8], "signature does not verify"),  # 86 -> 78 base64url chars: a short signature
        (lambda t: t[:-1], "token signature is not base64url"),  # 86 -> 85 chars: 1 mod 4 cannot decode
    ],
    ids=["no-signature", "empty-signature", "header-only", "short-signature", "undecodable-signature"],
)
def test_a_truncated_token_is_rejected(issuer: Issuer, verifier, cut, reason: str) -> None:
    token = issuer.token("n1", now=NOW)
    assert len(parts(token)[2]) == 86  # ES256: 64 signature bytes

    assert reject(verifier, cut(token)).startswith(reason)


def test_a_header_carrying_its_own_key_material_is_rejected_even_with_a_valid_kid(issuer: Issuer, verifier) -> None:
    jwk = jwks_for(issuer.key.public_key(), "ES256")["keys"][0]
    token = signed(issuer, issuer.claims("n1", now=NOW), jwk=jwk)  # real key, real kid, valid signature

    assert reject(verifier, token, SignatureError) == (
        "token header carries key material (jwk); keys come only from configuration"
    )


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"])
def test_a_header_pointing_at_an_attacker_key_is_rejected(issuer: Issuer, verifier, member: str) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = jwks_for(attacker.public_key(), "ES256")["keys"][0]
    value = {
        "jwk": attacker_jwk,
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIBattacker"],
        "x5t": "attacker-thumbprint",
        "x5t#S256": "attacker-thumbprint",
    }[member]
    header = {"alg": "ES256", "kid": kid_of(attacker), "typ": "JWT", member: value}
    token = craft(header, issuer.claims("n1", now=NOW), attacker)

    assert reject(verifier, token, SignatureError) == (
        f"token header carries key material ({member}); keys come only from configuration"
    )


def test_a_critical_header_extension_is_rejected(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW), crit=["exp"], exp=NOW)

    assert reject(verifier, token, SignatureError) == "token header has critical extensions (crit), none are supported"


@pytest.mark.parametrize(
    ("scope", "accepted"),
    [(["https://other.example"], False), ([ISSUER], True), ([ISSUER, "https://other.example"], True)],
)
def test_a_key_scoped_to_other_issuers_may_not_sign_for_this_one(tmp_path, issuer: Issuer, scope, accepted) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks))
    keys = load_keys(jwks_paths=[jwks], issuers=scope)
    verifier = ReportVerifier(keys, VerifierSettings(issuers=frozenset({ISSUER, "https://other.example"})))
    token = issuer.token("n1", now=NOW)

    if accepted:
        assert verifier.verify(token).issuer == ISSUER
    else:
        assert reject(verifier, token, SignatureError) == (
            f"key {kid_of(issuer.key)} may not sign for issuer '{ISSUER}'"
        )


def test_a_scoped_verification_key_still_verifies_its_own_issuer() -> None:
    other = Issuer("EdDSA", name="https://other.example")
    key = VerificationKey(
        kid=kid_of(other.key),
        key=other.key.public_key(),
        algorithms=algorithms_for(other.key.public_key()),
        issuers=frozenset({"https://other.example"}),
    )
    verifier = ReportVerifier(KeySet([key]), VerifierSettings(issuers=frozenset({ISSUER, "https://other.example"})))
    forged = Issuer("EdDSA")
    forged.key = other.key  # same key, signing for the other trusted issuer

    assert verifier.verify(other.token("n1", now=NOW)).issuer == "https://other.example"
    assert reject(verifier, forged.token("n1", now=NOW), SignatureError).endswith(f"may not sign for issuer '{ISSUER}'")


# --- structure --------------------------------------------------------------------------------------


def test_a_duplicate_member_in_the_header_is_rejected(issuer: Issuer, verifier) -> None:
    header = f'{{"alg":"ES256","kid":"{kid_of(issuer.key)}","alg":"none"}}'
    token = craft(header, issuer.claims("n1", now=NOW), issuer.key, alg="ES256")

    assert reject(verifier, token, MalformedReport) == "token header: duplicate JSON member 'alg'"


def test_a_duplicate_member_in_a_correctly_signed_payload_is_rejected(issuer: Issuer, verifier) -> None:
    claims = json.dumps(issuer.claims("n1", now=NOW))
    payload = claims[:-1] + ',"sub":"n2"}'  # a second sub that a lenient parser would let win

    assert reject(verifier, signed(issuer, payload), MalformedReport) == "token payload: duplicate JSON member 'sub'"


def test_a_duplicate_member_in_a_nested_payload_object_is_rejected(issuer: Issuer, verifier) -> None:
    claims = json.dumps(issuer.claims("n1", now=NOW, levels={"kernel": False}))
    payload = claims.replace('"kernel": false', '"kernel": false, "kernel": true')

    assert reject(verifier, signed(issuer, payload), MalformedReport) == "token payload: duplicate JSON member 'kernel'"


def test_a_token_over_16_kib_is_rejected_before_any_parsing(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW, asset_tags={"padding": "x" * 16 * 1024})
    assert len(token) > 16 * 1024

    assert reject(verifier, token, MalformedReport) == "token larger than 16384 bytes"


def test_the_size_limit_accepts_a_token_of_exactly_the_limit(issuer: Issuer) -> None:
    token = issuer.token("n1", now=NOW)

    assert issuer.verifier(max_token_bytes=len(token)).verify(token).node == "n1"
    reason = reject(issuer.verifier(max_token_bytes=len(token) - 1), token, MalformedReport)
    assert reason == f"token larger than {len(token) - 1} bytes"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "not a compact JWS"),
        ("garbage", "not a compact JWS"),
        ("a.b", "not a compact JWS"),
        ("a.b.c.d", "not a compact JWS"),
        ("eyJ!.eyJ.sig", "not a compact JWS"),
        ("eyJhbGciOiJFUzI1NiJ9=.e30.c2ln", "not a compact JWS"),  # padding is not base64url
        (" eyJhbGciOiJFUzI1NiJ9.e30.c2ln", "not a compact JWS"),
        ("abcde.e30.c2ln", "token header is not base64url"),
        (b64url(b"hello") + ".e30.c2ln", "token header is not JSON"),
        (b64url(b"\xff\xfe\xfd\xfc") + ".e30.c2ln", "token header is not JSON"),
        (b64json("[1, 2]") + ".e30.c2ln", "token header is not a JSON object"),
        (b64json('"ES256"') + ".e30.c2ln", "token header is not a JSON object"),
        (b64json("null") + ".e30.c2ln", "token header is not a JSON object"),
        (b64json("[" * 3000 + "]" * 3000) + ".e30.c2ln", "token header is not JSON"),
        (b64json('{"alg": NaN}') + ".e30.c2ln", "token header: non-standard JSON number NaN"),
        (b64json('{"alg": -Infinity}') + ".e30.c2ln", "token header: non-standard JSON number -Infinity"),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else None,
)
def test_garbage_is_malformed_with_a_specific_reason(verifier, token: str, reason: str) -> None:
    assert reject(verifier, token, MalformedReport).startswith(reason)


@pytest.mark.parametrize("token", [None, 42, b"eyJ.eyJ.sig", ["a.b.c"], {"token": "a.b.c"}, 1.5])
def test_a_token_that_is_not_a_string_is_malformed(verifier, token: Any) -> None:
    assert reject(verifier, token, MalformedReport) == "token is not a string"


def test_a_signed_payload_that_is_not_json_is_malformed(issuer: Issuer, verifier) -> None:
    assert reject(verifier, signed(issuer, "not json"), MalformedReport) == "token payload is not JSON"
    assert reject(verifier, signed(issuer, "[1]"), MalformedReport) == "token payload is not a JSON object"


# --- claims -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "system_uuid", "iat", "exp", "jti", "levels"])
def test_a_report_missing_a_required_claim_is_rejected_naming_it(issuer: Issuer, verifier, claim: str) -> None:
    claims = issuer.claims("n1", now=NOW)
    del claims[claim]

    assert reject(verifier, signed(issuer, claims), ClaimError) == f"required claim {claim} is missing"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"levels": {level: "true" for level in LEVELS}}, "level firmware must be true or false"),
        ({"levels": {level: 1 for level in LEVELS}}, "level firmware must be true or false"),
        ({"levels": dict.fromkeys(LEVELS[:4], True)}, "claim levels is missing level runtime"),
        ({"levels": dict.fromkeys([*LEVELS, "bios"], True)}, "claim levels has unknown level 'bios'"),
        ({"levels": list(LEVELS)}, "claim levels must be an object of booleans"),
        ({"levels": True}, "claim levels must be an object of booleans"),
        ({"exp": str(int(NOW) + 3600)}, "claim exp must be a NumericDate (seconds since the epoch)"),
        ({"exp": None}, "claim exp must be a NumericDate (seconds since the epoch)"),
        ({"iat": True}, "claim iat must be a NumericDate (seconds since the epoch)"),
        ({"nbf": "now"}, "claim nbf must be a NumericDate (seconds since the epoch)"),
        ({"asset_tags": {"country": 1}}, "claim asset_tags must be an object of strings"),
        ({"asset_tags": {"rack": None}}, "claim asset_tags must be an object of strings"),
        ({"asset_tags": ["country=US"]}, "claim asset_tags must be an object of strings"),
        ({"features": {"tpm": 2}}, "claim features must be an object of strings"),
        ({"sub": 7}, "claim sub must be a non-empty string"),
        ({"sub": ""}, "claim sub must be a non-empty string"),
        ({"system_uuid": None}, "claim system_uuid must be a non-empty string"),
        ({"jti": ""}, "claim jti must be a non-empty string"),
        ({"boot_id": 12}, "claim boot_id must be a non-empty string"),
        ({"iss": ["https://aias.example"]}, "claim iss must be a non-empty string"),
        ({"aud": 1}, "claim aud must be a string or a list of strings"),
        ({"aud": ["trustgate", 1]}, "claim aud must be a string or a list of strings"),
    ],
    ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else None,
)
def test_a_claim_of_the_wrong_type_is_rejected(issuer: Issuer, verifier, overrides, reason: str) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW) | overrides)

    assert reject(verifier, token, ClaimError) == reason


@pytest.mark.parametrize("audience", ["kubernetes", ["kubernetes", "vault"], []])
def test_a_report_for_another_audience_is_rejected(issuer: Issuer, verifier, audience) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW, aud=audience))

    assert reject(verifier, token, ClaimError) == "audience is not 'trustgate'"


def test_an_audience_list_containing_trustgate_is_accepted(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW, aud=["vault", "trustgate"]))

    assert verifier.verify_for(token, identity("n1"), NOW).node == "n1"


def test_a_report_from_an_untrusted_issuer_is_rejected_even_with_a_trusted_key(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW, iss="https://evil.example"))

    assert reject(verifier, token, ClaimError) == "issuer 'https://evil.example' is not trusted"


def test_a_report_lifetime_over_the_maximum_is_rejected(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW, ttl=25 * 3600)

    assert reject(verifier, token, ClaimError) == "report lifetime 90000s exceeds the maximum 86400s"


def test_the_maximum_lifetime_is_configurable(issuer: Issuer) -> None:
    token = issuer.token("n1", now=NOW, ttl=2 * 3600)

    assert issuer.verifier(max_lifetime_seconds=2 * 3600).verify(token).node == "n1"
    reason = reject(issuer.verifier(max_lifetime_seconds=3600), token, ClaimError)
    assert reason == "report lifetime 7200s exceeds the maximum 3600s"


def test_a_float_exp_far_in_the_future_is_rejected_by_the_lifetime_limit(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW, exp=1.0e12))

    assert reject(verifier, token, ClaimError).startswith("report lifetime ")


def test_a_report_that_expires_before_it_was_issued_is_rejected(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW, exp=NOW))

    assert reject(verifier, token, ClaimError) == "report expires before it was issued (exp <= iat)"


@pytest.mark.parametrize(
    ("claim", "raw"),
    [
        ("exp", "-1"),
        ("iat", "-1700000000"),
        ("exp", "1e400"),  # parses as infinity
        ("exp", "1e308"),
        ("exp", str(2**40)),
        ("exp", "1" + "0" * 400),  # an int too large for a float
        ("iat", "-" + "9" * 400),
        ("nbf", "1" + "0" * 400),
    ],
    ids=["negative-exp", "negative-iat", "overflow-float", "huge-float", "year-36812", "huge-int", "huge-neg", "nbf"],
)
def test_numeric_dates_out_of_range_are_rejected(issuer: Issuer, verifier, claim: str, raw: str) -> None:
    claims = issuer.claims("n1", now=NOW)
    claims[claim] = "@@"
    payload = json.dumps(claims).replace('"@@"', raw)

    assert reject(verifier, signed(issuer, payload), ClaimError) == f"claim {claim} is out of range"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_numbers_in_a_signed_payload_are_malformed(issuer: Issuer, verifier, constant: str) -> None:
    claims = issuer.claims("n1", now=NOW)
    claims["exp"] = "@@"
    payload = json.dumps(claims).replace('"@@"', constant)

    assert reject(verifier, signed(issuer, payload), MalformedReport) == (
        f"token payload: non-standard JSON number {constant}"
    )


def test_a_fractional_numeric_date_is_accepted(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW, iat=NOW + 0.25, exp=NOW + 600.5))

    assert verifier.verify_for(token, identity("n1"), NOW + 1).expires_at == NOW + 600.5


# --- time checks at decision time ------------------------------------------------------------------


def test_an_expired_report_is_rejected_with_its_expiry_time(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW, ttl=3600)
    expected = utc(NOW + 3600)
    assert expected == "2026-11-18T12:06:40Z"

    assert reject_for(verifier, token, now=NOW + 7200) == f"trust report expired at {expected}"


def test_expiry_allows_the_configured_clock_skew_and_no_more(issuer: Issuer) -> None:
    token = issuer.token("n1", now=NOW, ttl=3600)
    verifier = issuer.verifier(skew_seconds=30)

    assert verifier.verify_for(token, identity("n1"), NOW + 3600 + 29.9).node == "n1"
    assert reject_for(verifier, token, now=NOW + 3600 + 30).startswith("trust report expired at ")
    assert reject_for(issuer.verifier(skew_seconds=0), token, now=NOW + 3600).startswith("trust report expired at ")


def test_a_report_whose_nbf_is_in_the_future_is_not_yet_valid(issuer: Issuer, verifier) -> None:
    token = signed(issuer, issuer.claims("n1", now=NOW, nbf=NOW + 600))

    assert reject_for(verifier, token, now=NOW) == f"trust report not valid before {utc(NOW + 600)}"
    assert verifier.verify_for(token, identity("n1"), NOW + 600 - 29).node == "n1"


def test_a_report_issued_in_the_future_is_not_yet_valid(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW + 3600)

    assert reject_for(verifier, token, now=NOW) == f"trust report issued in the future ({utc(NOW + 3600)})"


def test_format_time_is_utc_iso8601_with_z() -> None:
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(NOW + 0.9) == "2026-11-18T11:06:40Z"


# --- node binding -----------------------------------------------------------------------------------


def test_a_report_for_another_node_name_is_rejected(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW)

    assert reject_for(verifier, token, node="n2", system_uuid=identity("n1").system_uuid) == (
        "report bound to another host (issued for node n1)"
    )


def test_a_report_for_another_system_uuid_is_rejected(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW, system_uuid="4c4c4544-0000-1000-8000-000000000001")

    assert reject_for(verifier, token, system_uuid="4c4c4544-0000-1000-8000-000000000002") == (
        "report bound to another host (system UUID 4c4c4544-0000-1000-8000-000000000001, "
        "node has 4c4c4544-0000-1000-8000-000000000002)"
    )


def test_the_system_uuid_matches_case_insensitively(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW, system_uuid="4C4C4544-0000-1000-8000-ABCDEF000001")

    report = verifier.verify_for(token, identity("n1", system_uuid="4c4c4544-0000-1000-8000-abcdef000001"), NOW)

    assert report.system_uuid == "4C4C4544-0000-1000-8000-ABCDEF000001"


def test_a_node_without_a_system_uuid_cannot_be_bound(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW)

    assert reject_for(verifier, token, system_uuid="") == "node reports no system UUID to bind the report to"


def test_a_report_from_before_the_last_reboot_is_rejected(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW)

    assert reject_for(verifier, token, boot_id="b00700fresh") == (
        "report predates the node's last reboot (boot id differs)"
    )


def test_a_report_without_boot_id_is_refused_by_default(issuer: Issuer, verifier) -> None:
    claims = issuer.claims("n1", now=NOW)
    del claims["boot_id"]
    token = signed(issuer, claims)

    assert reject_for(verifier, token) == "required claim boot_id is missing"


def test_a_report_without_boot_id_is_accepted_whatever_the_node_boot_id_when_allowed(issuer: Issuer) -> None:
    verifier = issuer.verifier(allow_missing_boot_id=True)
    claims = issuer.claims("n1", now=NOW)
    del claims["boot_id"]
    token = signed(issuer, claims)

    assert verifier.verify_for(token, identity("n1", boot_id="anything"), NOW).boot_id is None
    assert verifier.verify_for(token, identity("n1", boot_id=""), NOW).node == "n1"


def test_the_node_binding_is_checked_before_the_clock(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW)

    assert reject_for(verifier, token, node="n2", now=NOW + 10**6).startswith("report bound to another host")


# --- the verification cache -------------------------------------------------------------------------


class CountingAlgorithm:
    """Wraps a PyJWT algorithm object and counts signature verifications."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        self.calls += 1
        return self.inner.verify(msg, key, sig)


@pytest.fixture
def crypto_calls(monkeypatch) -> CountingAlgorithm:
    counter = CountingAlgorithm(get_default_algorithms()["ES256"])
    monkeypatch.setitem(report_module._ALGORITHMS, "ES256", counter)
    return counter


def test_verifying_the_same_token_twice_runs_the_crypto_once(issuer: Issuer, verifier, crypto_calls) -> None:
    token = issuer.token("n1", now=NOW)

    first = verifier.verify(token)
    second = verifier.verify_for(token, identity("n1"), NOW + 1)

    assert second is first
    assert crypto_calls.calls == 1
    assert verifier.cache_len() == 1


def test_distinct_tokens_are_verified_and_cached_separately(issuer: Issuer, verifier, crypto_calls) -> None:
    for node in ("n1", "n2", "n1"):
        verifier.verify(issuer.token(node, now=NOW))

    assert crypto_calls.calls == 3
    assert verifier.cache_len() == 3


def test_a_cached_failure_is_returned_again_without_the_crypto(issuer: Issuer, verifier, crypto_calls) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    token = craft(header_for(issuer), issuer.claims("n1", now=NOW), attacker)

    first = reject(verifier, token, SignatureError)
    with pytest.raises(SignatureError) as again:
        verifier.verify(token)

    assert again.value.reason == first == f"signature does not verify with key {kid_of(issuer.key)}"
    assert crypto_calls.calls == 1


def test_a_cached_report_is_still_rejected_once_it_expires(issuer: Issuer, verifier, crypto_calls) -> None:
    token = issuer.token("n1", now=NOW, ttl=600)
    assert verifier.verify_for(token, identity("n1"), NOW + 1).node == "n1"

    assert reject_for(verifier, token, now=NOW + 3600) == f"trust report expired at {utc(NOW + 600)}"
    assert crypto_calls.calls == 1  # the second decision came from the cache and still saw the expiry


def test_a_report_already_expired_when_first_cached_is_never_accepted_later(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW - 7200, ttl=600)
    verifier.verify(token)  # signature and claims are fine: cached as a report, not as "valid now"

    for now in (NOW, NOW + 1, NOW + 86400):
        assert reject_for(verifier, token, now=now) == f"trust report expired at {utc(NOW - 6600)}"


def test_a_cached_report_is_still_bound_to_its_node(issuer: Issuer, verifier) -> None:
    token = issuer.token("n1", now=NOW)
    verifier.verify_for(token, identity("n1"), NOW)

    assert reject_for(verifier, token, node="n2", system_uuid=identity("n1").system_uuid).startswith(
        "report bound to another host"
    )


def test_the_cache_is_bounded_and_drops_the_oldest_entry(issuer: Issuer, crypto_calls) -> None:
    verifier = ReportVerifier(issuer.keyset(), VerifierSettings(issuers=frozenset({ISSUER})), cache_size=2)
    first, second, third = (issuer.token(node, now=NOW) for node in ("n1", "n2", "n3"))
    for token in (first, second, third):
        verifier.verify(token)
    assert verifier.cache_len() == 2

    verifier.verify(third)
    assert crypto_calls.calls == 3
    verifier.verify(first)  # evicted: verified again
    assert crypto_calls.calls == 4


def test_verifier_settings_refuse_an_empty_issuer_list_and_negative_limits() -> None:
    with pytest.raises(ValueError, match="at least one trusted issuer"):
        VerifierSettings(issuers=frozenset())
    with pytest.raises(ValueError, match="clock skew must be >= 0"):
        VerifierSettings(issuers=frozenset({ISSUER}), skew_seconds=-1)
    with pytest.raises(ValueError, match="maximum lifetime > 0"):
        VerifierSettings(issuers=frozenset({ISSUER}), max_lifetime_seconds=0)
