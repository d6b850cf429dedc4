"""A corpus of hostile trust-report tokens: each one is refused with a ReportError naming why.

Every case builds a token (and, where the attack needs it, the verifier configuration and the node
it is presented for) and runs it through `verify_for` at a fixed instant. A case passes only when the
verifier raises a `ReportError` subclass (never accepts, never crashes with anything else) whose reason
contains the expected fragment, and the node layer (`assess` + `failure_at`) also leaves the node
untrusted. test_report.py pins exact reasons for single rules; this table is about breadth.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import get_default_algorithms

from devkit.factories import ISSUER, Issuer, boot_of, uuid_of
from trustgate.core.keys import KeySet, VerificationKey, algorithms_for, jwks_for, keys_from_jwks
from trustgate.core.node import assess
from trustgate.core.report import (
    LEVELS,
    ClaimError,
    MalformedReport,
    NodeIdentity,
    ReportError,
    ReportVerifier,
    SignatureError,
    VerifierSettings,
)

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
    signed,
)

OTHER_ISSUER = "https://other-aias.example"
_SIGNERS = get_default_algorithms()


@dataclass(frozen=True)
class Case:
    token: str
    verifier: ReportVerifier | None = None  # default: a fresh verifier trusting the ES256 issuer
    node: NodeIdentity | None = None  # default: identity("n1"), the node every token is issued for
    now: float = NOW + 60


@dataclass(frozen=True)
class Attack:
    name: str
    fragment: str
    build: Callable[[], Case]
    kind: type[ReportError] = ReportError


# --- builders -----------------------------------------------------------------------------------------


def es() -> Issuer:
    return issuer_for("ES256")


def claims(**overrides: Any) -> dict[str, Any]:
    return es().claims("n1", now=NOW) | overrides


def without(name: str) -> dict[str, Any]:
    values = claims()
    del values[name]
    return values


def good(**overrides: Any) -> Case:
    """A correctly signed ES256 report for n1 with the given claim overrides."""
    return Case(signed(es(), claims(**overrides)))


def raw_payload(text: str, **header: Any) -> Case:
    """Raw payload text (not re-serialized), correctly signed."""
    return Case(signed(es(), text, **header))


def with_raw_claim(name: str, raw: str) -> Case:
    """A signed report whose claim `name` is the JSON text `raw` (numbers json.dumps would not write)."""
    values = claims(**{name: "@@"})
    return raw_payload(json.dumps(values).replace('"@@"', raw))


def headed(header: Any, key: Any = None, alg: str = "ES256", payload: Any = None) -> Case:
    """The ES256 issuer's claims under an arbitrary header (dict or raw JSON), signed by `key` with `alg`."""
    return Case(craft(header, claims() if payload is None else payload, key or es().key, alg=alg))


def alg_header(alg: Any) -> Case:
    return Case(craft(header_for(es(), alg=alg), claims(), es().key, alg="ES256"))


def unsigned_alg(alg: str) -> Case:
    """`alg: none` in its spellings, with a junk signature (an empty one is not even a compact JWS)."""
    return Case(craft({"alg": alg, "kid": kid_of(es().key), "typ": "JWT"}, claims()))


@cache
def public_pem() -> bytes:
    return (
        es().key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def hmac_confusion(alg: str, secret: bytes) -> Case:
    """Algorithm confusion: HS* keyed with what the verifier publishes (its public key as PEM or JWK JSON)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64json({'alg': alg, 'kid': kid_of(es().key), 'typ': 'JWT'})}.{b64json(claims())}"
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return Case(f"{signing_input}.{b64url(mac)}")


def jwk_json() -> bytes:
    return json.dumps(jwks_for(es().key.public_key(), "ES256")["keys"][0]).encode()


def attacker_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_bearing(member: str) -> Case:
    """The attacker signs with its own key and points the header at it (the kid is the real one)."""
    attacker = attacker_key()
    value = {
        "jwk": jwks_for(attacker.public_key(), "ES256")["keys"][0],
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIBkTCB+wIJAattacker"],
        "x5t": b64url(hashlib.sha1(b"attacker").digest()),
        "x5t#S256": b64url(hashlib.sha256(b"attacker").digest()),
    }[member]
    return headed(header_for(es(), **{member: value}), key=attacker)


def kid_header(kid: Any) -> Case:
    return headed(header_for(es(), kid=kid))


def raw_header(template: str) -> Case:
    """A raw JSON header (`{kid}` filled in), correctly signed with ES256."""
    return headed(template.replace("{kid}", kid_of(es().key)))


def rsa_signed_under_es_header() -> Case:
    rsa_issuer = issuer_for("RS256")
    header = header_for(rsa_issuer, alg="ES256")
    return Case(craft(header, rsa_issuer.claims("n1", now=NOW), rsa_issuer.key, alg="RS256"), rsa_issuer.verifier())


def rotated_out() -> Case:
    """Signed by a key that the old JWKS listed and the current one no longer does."""
    old, current = Issuer("ES256"), es()
    old_jwks = {"keys": old.jwks["keys"] + current.jwks["keys"]}
    settings = VerifierSettings(issuers=frozenset({ISSUER}))
    token = old.token("n1", now=NOW)
    assert ReportVerifier(KeySet(keys_from_jwks(old_jwks)), settings).verify(token).node == "n1"  # valid before
    return Case(token, ReportVerifier(current.keyset(), settings))


def scoped_to_other_issuer(via_load: bool) -> Case:
    """Two trusted issuers, each key scoped to its own: the other issuer's key forges a report for ISSUER."""
    mine, theirs = es(), Issuer("EdDSA", name=OTHER_ISSUER)
    if via_load:  # the same scoping load_keys applies to a JWKS file
        keys = [
            *keys_from_jwks(mine.jwks, issuers=frozenset({ISSUER})),
            *keys_from_jwks(theirs.jwks, issuers=frozenset({OTHER_ISSUER})),
        ]
    else:
        keys = [
            VerificationKey(kid_of(k.key), k.key.public_key(), algorithms_for(k.key.public_key()), frozenset({k.name}))
            for k in (mine, theirs)
        ]
    verifier = ReportVerifier(KeySet(keys), VerifierSettings(issuers=frozenset({ISSUER, OTHER_ISSUER})))
    assert verifier.verify(theirs.token("n1", now=NOW)).issuer == OTHER_ISSUER  # its own reports verify
    forged = signed(theirs, theirs.claims("n1", now=NOW, iss=ISSUER))
    return Case(forged, verifier)


def der_signature() -> Case:
    """ECDSA in ASN.1 DER (what OpenSSL produces) instead of JOSE's fixed-size r||s."""
    signing_input = f"{b64json(header_for(es()))}.{b64json(claims())}"
    der = es().key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    return Case(f"{signing_input}.{b64url(der)}")


@cache
def rsa_token_with_leading_zero() -> str:
    """An RS256 token whose signature's first octet is 0 (PKCS#1 v1.5 is deterministic: search the jti)."""
    rsa_issuer = issuer_for("RS256")
    for n in range(20_000):
        token = rsa_issuer.token("n1", now=NOW, jti=f"report-{n}")
        if decode_segment(parts(token)[2])[0] == 0:
            return token
    raise AssertionError("no RSA signature with a leading zero octet found")


def rsa_leading_zero_stripped() -> Case:
    header, payload, signature = parts(rsa_token_with_leading_zero())
    stripped = decode_segment(signature)[1:]  # 255 octets: an integer-minimal encoding, not I2OSP(k)
    return Case(f"{header}.{payload}.{b64url(stripped)}", issuer_for("RS256").verifier())


def valid_token() -> str:
    return es().token("n1", now=NOW)


def mutate(change: Callable[[str, str, str], str]) -> Callable[[], Case]:
    return lambda: Case(change(*parts(valid_token())))


def flip_signature_bit(header: str, payload: str, signature: str) -> str:
    raw = bytearray(decode_segment(signature))
    raw[0] ^= 0x80
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def tamper_payload(header: str, payload: str, signature: str) -> str:
    return f"{header}.{b64json(claims(levels=dict.fromkeys(LEVELS, True), sub='n1', jti='forged'))}.{signature}"


def standard_alphabet() -> Case:
    for n in range(1000):
        token = es().token("n1", now=NOW, jti=f"std-{n}")
        if "-" in token or "_" in token:
            return Case(token.replace("-", "+").replace("_", "/"))
    raise AssertionError("no token with a URL-safe-only character found")


def padded() -> Case:
    header, payload, signature = parts(valid_token())
    assert len(signature) % 4 == 2  # 64 octets: two padding characters in standard base64
    return Case(f"{header}.{payload}.{signature}==")


def signature_of_another_token() -> Case:
    header, payload, _ = parts(valid_token())
    return Case(f"{header}.{payload}.{parts(es().token('n2', now=NOW))[2]}")


def sign_segments(header: str, payload: str, key: Any = None, alg: str = "ES256") -> str:
    """Sign already-encoded segments (for bytes that are not UTF-8 JSON text)."""
    signer = _SIGNERS[alg]
    signature = signer.sign(f"{header}.{payload}".encode("ascii"), signer.prepare_key(key or es().key))
    return f"{header}.{payload}.{b64url(signature)}"


def utf16_header() -> Case:
    return Case(sign_segments(b64url(json.dumps(header_for(es())).encode("utf-16")), b64json(claims())))


def latin1_payload() -> Case:
    text = json.dumps(claims(sub="n\u00e9"), ensure_ascii=False).encode("latin-1")
    return Case(sign_segments(b64json(header_for(es())), b64url(text)))


def bound(node: NodeIdentity, **overrides: Any) -> Callable[[], Case]:
    return lambda: Case(signed(es(), claims(**overrides)), node=node)


HOMOGLYPH = "n\u0430de-1"  # Cyrillic small a: renders like "nade-1"


# --- the corpus ---------------------------------------------------------------------------------------

S, M, C = SignatureError, MalformedReport, ClaimError

ATTACKS: list[Attack] = [
    # algorithm games
    Attack("alg-none", "algorithm 'none' not allowed", lambda: unsigned_alg("none"), S),
    Attack("alg-None", "algorithm 'None' not allowed", lambda: unsigned_alg("None"), S),
    Attack("alg-NONE", "algorithm 'NONE' not allowed", lambda: unsigned_alg("NONE"), S),
    Attack("alg-nOnE", "algorithm 'nOnE' not allowed", lambda: unsigned_alg("nOnE"), S),
    Attack("alg-missing", "algorithm None not allowed", lambda: headed({"kid": kid_of(es().key)}), S),
    Attack("alg-empty", "algorithm '' not allowed", lambda: alg_header(""), S),
    Attack("alg-list", "algorithm ['ES256'] not allowed", lambda: alg_header(["ES256"]), S),
    Attack("alg-es256-lower", "algorithm 'es256' not allowed", lambda: alg_header("es256"), S),
    Attack("alg-Es256-mixed", "algorithm 'Es256' not allowed", lambda: alg_header("Es256"), S),
    Attack("alg-trailing-space", "algorithm 'ES256 ' not allowed", lambda: alg_header("ES256 "), S),
    Attack("alg-leading-space", "algorithm ' ES256' not allowed", lambda: alg_header(" ES256"), S),
    Attack("alg-nul-suffix", "not allowed", lambda: alg_header("ES256\x00"), S),
    Attack("alg-ES512", "algorithm 'ES512' not allowed", lambda: alg_header("ES512"), S),
    Attack(
        "hs256-public-pem-secret", "algorithm 'HS256' not allowed", lambda: hmac_confusion("HS256", public_pem()), S
    ),
    Attack(
        "hs384-public-pem-secret", "algorithm 'HS384' not allowed", lambda: hmac_confusion("HS384", public_pem()), S
    ),
    Attack(
        "hs512-public-pem-secret", "algorithm 'HS512' not allowed", lambda: hmac_confusion("HS512", public_pem()), S
    ),
    Attack("hs256-jwk-json-secret", "algorithm 'HS256' not allowed", lambda: hmac_confusion("HS256", jwk_json()), S),
    Attack("hs512-jwk-json-secret", "algorithm 'HS512' not allowed", lambda: hmac_confusion("HS512", jwk_json()), S),
    Attack("rs-signed-es-header", "RSA 2048-bit key and cannot verify ES256", rsa_signed_under_es_header, S),
    Attack("es-key-ps256-header", "cannot verify PS256", lambda: alg_header("PS256"), S),
    # key selection
    Attack("kid-unknown", "unknown signing key (kid 'aias-2019')", lambda: kid_header("aias-2019"), S),
    Attack("kid-right-key-wrong", "signature does not verify", lambda: headed(header_for(es()), attacker_key()), S),
    Attack(
        "kid-path-traversal", "unknown signing key (kid '../../etc/passwd')", lambda: kid_header("../../etc/passwd"), S
    ),
    Attack("kid-dev-null", "unknown signing key (kid '/dev/null')", lambda: kid_header("/dev/null"), S),
    Attack("kid-nul-bytes", "unknown signing key", lambda: kid_header(kid_of(es().key) + "\x00\x00"), S),
    Attack("kid-only-nul", "unknown signing key (kid '\\x00')", lambda: kid_header("\x00"), S),
    Attack("kid-enormous", "unknown signing key (kid 'AAAAAAAA", lambda: kid_header("A" * 10_000), S),
    Attack("kid-sql", "unknown signing key", lambda: kid_header("' OR '1'='1"), S),
    Attack("kid-number", "token header has no kid", lambda: kid_header(0), S),
    Attack("kid-object", "token header has no kid", lambda: kid_header({"$ne": ""}), S),
    Attack("kid-rotated-out", "unknown signing key", rotated_out, S),
    Attack(
        "key-scoped-to-other-issuer", f"may not sign for issuer '{ISSUER}'", lambda: scoped_to_other_issuer(False), S
    ),
    Attack("jwks-scoped-to-other-issuer", "may not sign for issuer", lambda: scoped_to_other_issuer(True), S),
    # headers that bring their own key or demand extensions
    *(
        Attack(f"header-{member}", f"carries key material ({member})", lambda m=member: key_bearing(m), S)
        for member in ("jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256")
    ),
    Attack("crit-b64", "critical extensions (crit)", lambda: headed(header_for(es(), crit=["b64"], b64=False)), S),
    Attack("crit-empty", "critical extensions (crit)", lambda: headed(header_for(es(), crit=[])), S),
    Attack("typ-access-token", "token type 'at+jwt' is not JWT", lambda: headed(header_for(es(), typ="at+jwt")), S),
    Attack("typ-jwe", "token type 'JWE' is not JWT", lambda: headed(header_for(es(), typ="JWE")), S),
    Attack("typ-number", "token type 1 is not JWT", lambda: headed(header_for(es(), typ=1)), S),
    Attack("typ-null", "token type None is not JWT", lambda: headed(header_for(es(), typ=None)), S),
    Attack("typ-padded", "token type ' JWT' is not JWT", lambda: headed(header_for(es(), typ=" JWT")), S),
    # duplicate JSON members: whichever a lenient parser keeps, this one refuses both orders
    Attack(
        "dup-alg-permissive-first",
        "duplicate JSON member 'alg'",
        lambda: raw_header('{"alg":"none","kid":"{kid}","alg":"ES256","typ":"JWT"}'),
        M,
    ),
    Attack(
        "dup-alg-strict-first",
        "duplicate JSON member 'alg'",
        lambda: raw_header('{"alg":"ES256","kid":"{kid}","alg":"HS256","typ":"JWT"}'),
        M,
    ),
    Attack("dup-kid", "duplicate JSON member 'kid'", lambda: raw_header('{"alg":"ES256","kid":"x","kid":"{kid}"}'), M),
    Attack(
        "dup-sub",
        "token payload: duplicate JSON member 'sub'",
        lambda: raw_payload(json.dumps(claims(sub="n2"))[:-1] + ', "sub": "n1"}'),
        M,
    ),
    Attack(
        "dup-exp",
        "token payload: duplicate JSON member 'exp'",
        lambda: raw_payload(json.dumps(claims())[:-1] + f', "exp": {int(NOW) + 10**6}}}'),
        M,
    ),
    # signature encodings and tampering
    Attack("tampered-payload", "signature does not verify", mutate(tamper_payload), S),
    Attack("tampered-signature", "signature does not verify", mutate(flip_signature_bit), S),
    Attack("signature-of-another-token", "signature does not verify", signature_of_another_token, S),
    Attack("truncated-signature", "signature does not verify", mutate(lambda h, p, s: f"{h}.{p}.{s[:-8]}"), S),
    Attack("truncated-token", "not a compact JWS", lambda: Case(valid_token()[:40]), M),
    Attack("zero-length-signature", "not a compact JWS", mutate(lambda h, p, s: f"{h}.{p}."), M),
    Attack("ecdsa-der-signature", "signature does not verify", der_signature, S),
    Attack("rsa-leading-zero-stripped", "signature does not verify", rsa_leading_zero_stripped, S),
    Attack("base64-padding", "not a compact JWS", padded, M),
    Attack("base64-standard-alphabet", "not a compact JWS", standard_alphabet, M),
    Attack("four-parts", "not a compact JWS", mutate(lambda h, p, s: f"{h}.{p}.{s}.{s}"), M),
    Attack("jwe-five-parts", "not a compact JWS", mutate(lambda h, p, s: f"{h}..{p}.{s}.{s[:22]}"), M),
    Attack("whitespace-inside", "not a compact JWS", mutate(lambda h, p, s: f"{h}.{p}\n.{s}"), M),
    Attack("trailing-newline", "not a compact JWS", mutate(lambda h, p, s: f"{h}.{p}.{s}\n"), M),
    Attack("non-ascii-digits", "not a compact JWS", mutate(lambda h, p, s: f"{h}.{p}.{s[:-1]}\u0661"), M),
    # structure
    Attack("oversized", "token larger than 16384 bytes", lambda: good(asset_tags={"pad": "x" * 20_000}), M),
    Attack("garbage", "not a compact JWS", lambda: Case("\x00\xff garbage \u202e"), M),
    Attack("empty", "not a compact JWS", lambda: Case(""), M),
    Attack("payload-json-array", "token payload is not a JSON object", lambda: raw_payload(json.dumps([claims()])), M),
    Attack("payload-json-string", "token payload is not a JSON object", lambda: raw_payload('"n1"'), M),
    Attack("payload-bom", "token payload is not JSON", lambda: raw_payload("\ufeff" + json.dumps(claims())), M),
    Attack("payload-trailing-garbage", "token payload is not JSON", lambda: raw_payload(json.dumps(claims()) + "x"), M),
    Attack("payload-two-objects", "token payload is not JSON", lambda: raw_payload(json.dumps(claims()) + "{}"), M),
    Attack("payload-latin1", "token payload is not JSON", latin1_payload, M),
    Attack(
        "header-trailing-garbage",
        "token header is not JSON",
        lambda: raw_header('{"alg":"ES256","kid":"{kid}","typ":"JWT"}garbage'),
        M,
    ),
    Attack("header-utf16", "token header is not JSON", utf16_header, M),
    Attack("payload-nan", "non-standard JSON number NaN", lambda: with_raw_claim("exp", "NaN"), M),
    # time
    Attack("expired", "trust report expired at", lambda: Case(valid_token(), now=NOW + 3600 + 31)),
    Attack("nbf-future", "not valid before", lambda: good(nbf=NOW + 600)),
    Attack("iat-future", "issued in the future", lambda: good(iat=NOW + 600, exp=NOW + 1200)),
    Attack("lifetime-over-max", "exceeds the maximum 86400s", lambda: good(exp=NOW + 86400 + 1), C),
    Attack("exp-float-far-future", "exceeds the maximum", lambda: good(exp=4_102_444_800.5), C),
    Attack("exp-float-beyond-range", "claim exp is out of range", lambda: good(exp=1.0e18), C),
    Attack("exp-negative", "claim exp is out of range", lambda: good(exp=-1), C),
    Attack("iat-negative", "claim iat is out of range", lambda: good(iat=-86400), C),
    Attack("exp-10e20", "claim exp is out of range", lambda: good(exp=10**20), C),
    Attack("exp-2e63", "claim exp is out of range", lambda: good(exp=2**63), C),
    Attack("iat-2e63", "claim iat is out of range", lambda: good(iat=2**63), C),
    Attack("iat-10e20", "claim iat is out of range", lambda: good(iat=10**20), C),
    Attack(
        "iat-year-36812",
        "trust report issued in the future (1099511627676 seconds after 1970-01-01T00:00:00Z)",
        lambda: good(iat=2**40 - 100, exp=2**40 - 50),
        C,
    ),
    Attack(
        "iat-year-10000",
        "issued in the future (253402300800 seconds after",
        lambda: good(iat=253_402_300_800, exp=253_402_300_860),
        C,
    ),
    Attack(
        "iat-year-9999",
        "issued in the future (9999-12-31T23:59:59Z)",
        lambda: good(iat=253_402_300_799.5, exp=253_402_300_859.5),
        C,
    ),
    Attack("iat-after-exp", "exp <= iat", lambda: good(iat=NOW + 60, exp=NOW + 30), C),
    Attack("exp-string", "claim exp must be a NumericDate", lambda: good(exp=str(int(NOW) + 600)), C),
    Attack("exp-bool", "claim exp must be a NumericDate", lambda: good(exp=True), C),
    Attack("nbf-huge", "claim nbf is out of range", lambda: with_raw_claim("nbf", "1e999")),
    # required claims
    *(
        Attack(f"missing-{name}", f"required claim {name} is missing", lambda n=name: Case(signed(es(), without(n))), C)
        for name in ("iss", "aud", "sub", "system_uuid", "iat", "exp", "jti", "levels")
    ),
    # types, audience, issuer
    Attack("aud-wrong", "audience is not 'trustgate'", lambda: good(aud="kubernetes"), C),
    Attack("aud-list-without-trustgate", "audience is not 'trustgate'", lambda: good(aud=["vault", "trustgate "]), C),
    Attack("aud-list-non-strings", "string or a list of strings", lambda: good(aud=[1, None, True]), C),
    Attack("aud-nested-list", "string or a list of strings", lambda: good(aud=[["trustgate"]]), C),
    Attack("aud-object", "string or a list of strings", lambda: good(aud={"trustgate": True}), C),
    Attack("aud-case", "audience is not 'trustgate'", lambda: good(aud="TrustGate"), C),
    Attack("iss-wrong", "issuer 'https://evil.example' is not trusted", lambda: good(iss="https://evil.example"), C),
    Attack("iss-trailing-slash", "is not trusted", lambda: good(iss=ISSUER + "/"), C),
    Attack("iss-list", "claim iss must be a non-empty string", lambda: good(iss=[ISSUER]), C),
    Attack("sub-number", "claim sub must be a non-empty string", lambda: good(sub=1), C),
    Attack("jti-object", "claim jti must be a non-empty string", lambda: good(jti={"id": 1}), C),
    Attack(
        "levels-extra-unknown", "unknown level 'tpm'", lambda: good(levels=dict.fromkeys([*LEVELS, "tpm"], True)), C
    ),
    Attack("levels-integers", "must be true or false", lambda: good(levels={lv: 1 for lv in LEVELS}), C),
    Attack(
        "levels-zero-and-one",
        "must be true or false",
        lambda: good(levels={lv: i % 2 for i, lv in enumerate(LEVELS)}),
        C,
    ),
    Attack("levels-strings", "must be true or false", lambda: good(levels=dict.fromkeys(LEVELS, "true")), C),
    Attack("levels-missing-one", "missing level runtime", lambda: good(levels=dict.fromkeys(LEVELS[:4], True)), C),
    Attack("levels-null", "claim levels must be an object", lambda: good(levels=None), C),
    Attack("levels-list", "claim levels must be an object", lambda: good(levels=[True] * 5), C),
    Attack(
        "asset-tags-nested", "asset_tags must be an object of strings", lambda: good(asset_tags={"a": {"b": "c"}}), C
    ),
    Attack(
        "asset-tags-list-value", "asset_tags must be an object of strings", lambda: good(asset_tags={"a": ["US"]}), C
    ),
    Attack("asset-tags-string", "asset_tags must be an object of strings", lambda: good(asset_tags="country=US"), C),
    Attack("features-nested", "features must be an object of strings", lambda: good(features={"tpm": {"v": 2}}), C),
    # host binding
    Attack("sub-other-node", "report bound to another host (issued for node n2)", bound(identity("n1"), sub="n2")),
    Attack(
        "sub-homoglyph",
        "report bound to another host (issued for node nade-1)",
        bound(identity(HOMOGLYPH), sub="nade-1", system_uuid=uuid_of(HOMOGLYPH), boot_id=boot_of(HOMOGLYPH)),
    ),
    Attack(
        "sub-homoglyph-in-report",
        "report bound to another host (issued for node n\u0430de-1)",
        bound(identity("nade-1"), sub=HOMOGLYPH, system_uuid=uuid_of("nade-1"), boot_id=boot_of("nade-1")),
    ),
    Attack("sub-case", "report bound to another host", bound(identity("n1"), sub="N1")),
    Attack("sub-trailing-nul", "report bound to another host", bound(identity("n1"), sub="n1\x00")),
    Attack(
        "system-uuid-whitespace",
        "report bound to another host (system UUID",
        lambda: good(system_uuid=f" {identity('n1').system_uuid}\n"),
    ),
    Attack("system-uuid-other", "report bound to another host (system UUID", lambda: good(system_uuid="0" * 36)),
    Attack("node-without-uuid", "node reports no system UUID", bound(identity("n1", system_uuid=""))),
    Attack("boot-id-empty", "claim boot_id must be a non-empty string", lambda: good(boot_id=""), C),
    Attack("boot-id-null", "claim boot_id must be a non-empty string", lambda: good(boot_id=None), C),
    Attack("boot-id-other", "boot id differs", bound(identity("n1", boot_id="b00700after-reboot"))),
    Attack("boot-id-node-has-none", "boot id differs", bound(identity("n1", boot_id=""))),
]


def test_the_corpus_is_large_and_every_attack_has_a_unique_name() -> None:
    names = [attack.name for attack in ATTACKS]
    assert len(names) == len(set(names))
    assert len(ATTACKS) >= 40


@pytest.mark.parametrize("attack", ATTACKS, ids=[attack.name for attack in ATTACKS])
def test_an_attack_token_is_refused_with_its_reason(attack: Attack) -> None:
    case = attack.build()
    verifier = case.verifier or es().verifier()
    node = case.node or identity("n1")

    try:
        report = verifier.verify_for(case.token, node, case.now)
    except ReportError as error:
        assert isinstance(error, attack.kind), f"{type(error).__name__}: {error.reason}"
        assert attack.fragment in error.reason
        assert len(error.reason) < 300, "a reason must stay short even for an enormous input"
    else:
        pytest.fail(f"attack token accepted: {report}")

    # The node layer agrees: a node presenting this token is not trusted at that instant.
    trust = assess(node, {}, case.token, verifier)
    assert trust.failure_at(case.now, verifier.settings.skew_seconds) is not None


def test_the_corpus_controls_verify() -> None:
    """The building blocks are sound: unmodified, they produce reports the verifier accepts."""
    verifier = es().verifier()
    for token in (valid_token(), signed(es(), claims()), craft(header_for(es()), claims(), es().key)):
        assert verifier.verify_for(token, identity("n1"), NOW + 60).node == "n1"
    assert verifier.verify_for(signed(es(), claims(), typ="jwt"), identity("n1"), NOW).node == "n1"
    assert verifier.verify_for(signed(es(), claims(), typ="application/JWT"), identity("n1"), NOW).node == "n1"
    rsa_issuer = issuer_for("RS256")
    assert rsa_issuer.verifier().verify(rsa_token_with_leading_zero()).node == "n1"
    assert len(decode_segment(parts(rsa_token_with_leading_zero())[2])) == 256


def test_a_cached_refusal_does_not_keep_the_frames_of_the_callers_it_was_raised_to() -> None:
    """Raising the cached exception object again would chain each caller's frames onto its traceback, and
    the verifier's cache would keep them, with everything they reference, alive for good."""
    verifier = es().verifier()
    token = unsigned_alg("none").token

    class Request:  # stands for what a caller's frame holds: a request body, a snapshot...
        pass

    def decide() -> weakref.ref[Request]:
        request = Request()
        for _ in range(3):
            with pytest.raises(SignatureError):
                verifier.verify(token)
        return weakref.ref(request)

    alive = decide()
    gc.collect()

    assert alive() is None
    with pytest.raises(SignatureError) as again:
        verifier.verify(token)
    assert again.value.reason.startswith("algorithm 'none' not allowed")
