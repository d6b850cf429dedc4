"""Property-based tests of report verification: whatever the bytes, the verifier only ever refuses
with a ReportError, never accepts a modified token, and accepts exactly the well-formed claim sets.

Examples per target: TRUSTGATE_FUZZ_EXAMPLES (default 10,000); a long run is a bigger value.
"""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Any

from hypothesis import assume, event, given
from hypothesis import strategies as st

from devkit.factories import ISSUER, Issuer
from trustgate.core.report import (
    LEVELS,
    MalformedReport,
    NodeIdentity,
    ReportError,
    ReportVerifier,
    TrustReport,
    VerifierSettings,
)

from ...fuzzing import FUZZ
from ..craft import NOW, b64url, craft, decode_segment, header_for, identity, issuer_for, kid_of, parts

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
KEY_BEARING = {"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"}
MAX_LIFETIME = 24 * 3600.0
MAX_DATE = 2**40  # about the year 36812: the first instant a report may not name
FUZZ_ALGS = ("ES256", "EdDSA", "RS256")


@cache
def verifier_for(alg: str, **settings_: Any) -> ReportVerifier:
    """One verifier per configuration for a whole module run (its cache is keyed by token, so sharing is
    safe). A small cache: the default one would keep every fuzzed token (up to 1 MiB each) alive."""
    issuer = issuer_for(alg)
    return ReportVerifier(issuer.keyset(), VerifierSettings(issuers=frozenset({issuer.name}), **settings_), 256)


def es() -> Issuer:
    return issuer_for("ES256")


def verify(verifier: ReportVerifier, token: Any) -> TrustReport | ReportError:
    """The verifier's outcome; any exception other than a ReportError fails the test (it propagates)."""
    try:
        report = verifier.verify(token)
    except ReportError as error:
        assert isinstance(error.reason, str) and error.reason
        event(type(error).__name__)  # --hypothesis-show-statistics: how the examples were decided
        return error
    event("accepted")
    return report


def assert_bound(report: TrustReport) -> None:
    """An accepted report describes one host: any other node identity fails the binding."""
    assert report.binding_failure(NodeIdentity(report.node + "-other", report.system_uuid, report.boot_id or ""))
    assert report.binding_failure(NodeIdentity(report.node, report.system_uuid + "0", report.boot_id or ""))
    assert report.binding_failure(NodeIdentity(report.node, "", report.boot_id or ""))
    if report.boot_id is not None:
        assert report.binding_failure(NodeIdentity(report.node, report.system_uuid, report.boot_id + "0"))
    assert report.binding_failure(NodeIdentity(report.node, report.system_uuid, report.boot_id or "")) is None


def raw_object(pairs: list[tuple[str, Any]]) -> str:
    """A JSON object from member pairs, keeping duplicates (json.dumps of a dict cannot write them)."""
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"


def sign_raw(header_text: str, payload_text: str, issuer: Issuer | None = None) -> str:
    issuer = issuer or es()
    return craft(header_text, payload_text, issuer.key, alg=issuer.alg)


# --- strategies ---------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
shallow_values = (
    scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.sampled_from(["a", "alg", ""]), scalars, max_size=2)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@cache
def _valid_token(alg: str, node: str, variant: int) -> str:
    tags = [{}, {"country": "US"}, {"tenant": "acme", "rack": "r1"}, {"\u00e9": "\u2603"}][variant]
    return issuer_for(alg).token(node, now=NOW, asset_tags=tags, jti=f"{alg}-{node}-{variant}")


BAD_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            1,
            -1,
            0.5,
            MAX_DATE - 1,
            253_402_300_800,
            MAX_DATE,
            2**63,
            10**20,
            1e308,
            "",
            " ",
            "\x00",
            "\ufeff",
            "n1 ",
            "N1",
            "n\u0430",
            "\u202e1n",
            "trustgate\x00",
            [],
            {},
            ["trustgate", 1],
            [["trustgate"]],
            {"trustgate": True},
            dict.fromkeys(LEVELS, 1),
            dict.fromkeys([*LEVELS, "tpm"], True),
            {"a": {"b": "c"}},
            {"a": ["b"]},
            str(int(NOW)),
            ISSUER + "/",
            "https://evil.example",
            "vault",
        ]
    ),
    st.sampled_from([("x", 20_000), ("\u00e9", 3000), ("\\", 4000)]).map(lambda c: c[0] * c[1]),  # huge strings
    shallow_values,
)
string_maps = st.sampled_from(
    [{}, {"country": "US"}, {"tenant": "acme", "rack": "r1"}, {"\u00e9": "\u2603"}, {"": ""}, {"k": "v" * 300}]
)


def _claim_pairs(
    iat: float,
    lifetime: float,
    mask: int,
    aud: Any,
    sub: str,
    optional: int,
    tags: dict[str, str],
    features: dict[str, str],
    corruptions: list[tuple[str, str, Any]],
) -> list[tuple[str, Any]]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": aud,
        "sub": sub,
        "system_uuid": identity("n1").system_uuid,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": "report-1",
        "levels": {level: bool(mask & (1 << i)) for i, level in enumerate(LEVELS)},
    }
    for bit, (name, value) in enumerate(
        {"boot_id": identity("n1").boot_id, "nbf": iat, "asset_tags": tags, "features": features}.items()
    ):
        if optional & (1 << bit):
            claims[name] = value
    pairs = list(claims.items())
    for kind, name, value in corruptions:
        names = [k for k, _ in pairs]
        if kind == "set" and name == "levels.kernel":
            pairs = [(k, {**v, "kernel": value} if k == "levels" and isinstance(v, dict) else v) for k, v in pairs]
        elif kind == "set" and name in names:
            pairs = [(k, value if k == name else v) for k, v in pairs]
        elif kind == "set" or kind == "extra":
            pairs.append((name, value))
        elif kind == "delete":
            pairs = [(k, v) for k, v in pairs if k != name]
        else:  # a duplicate member, at the front
            pairs.insert(0, (name, value))
    return pairs


CLAIM_NAMES = (
    "iss",
    "aud",
    "sub",
    "system_uuid",
    "boot_id",
    "iat",
    "exp",
    "nbf",
    "jti",
    "levels",
    "asset_tags",
    "features",
)
CORRUPTIONS = st.one_of(
    st.tuples(
        st.sampled_from(["set", "set", "delete", "dup"]), st.sampled_from([*CLAIM_NAMES, "levels.kernel"]), BAD_VALUES
    ),
    st.tuples(st.just("extra"), st.sampled_from(["x-extra", "", "\u00e9", "level"]), shallow_values),
)
# A genuine claim set, then up to three claims replaced, removed or duplicated, or an extra member. Built
# from a handful of module-level strategies (cheap to draw), so that a good share of the examples is
# accepted and the acceptance rule is really tested, not only the rejections.
claim_pairs = st.builds(
    _claim_pairs,
    iat=st.one_of(st.sampled_from([NOW, 0, MAX_DATE - 86401]), st.integers(0, MAX_DATE), st.floats(0, MAX_DATE)),
    lifetime=st.one_of(st.integers(-2, 86402), st.sampled_from([0, 0.5, 86400, 86400.5, 86401])),
    mask=st.integers(0, 31),
    aud=st.sampled_from(["trustgate", ["trustgate"], ["vault", "trustgate"]]),
    sub=st.sampled_from(["n1", "n2", "\u00e9t\u00e9"]),
    optional=st.integers(0, 15),
    tags=string_maps,
    features=string_maps,
    corruptions=st.lists(CORRUPTIONS, max_size=3),
)


# --- an independent statement of the claim rules (DESIGN.md's table) ----------------------------------


def _is_date(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value < MAX_DATE and math.isfinite(value)


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def claims_acceptable(claims: dict[str, Any]) -> bool:
    required = ("iss", "aud", "sub", "system_uuid", "iat", "exp", "jti", "levels")
    if any(name not in claims for name in required):
        return False
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    dates = [claims["iat"], claims["exp"]] + ([claims["nbf"]] if "nbf" in claims else [])
    lv = claims["levels"]
    return (
        claims["iss"] == ISSUER
        and isinstance(audiences, list)
        and all(isinstance(a, str) for a in audiences)
        and "trustgate" in audiences
        and all(_nonempty(claims[name]) for name in ("sub", "system_uuid", "jti"))
        and "boot_id" in claims  # required unless the verifier allows reports without one
        and _nonempty(claims["boot_id"])
        and all(_is_date(d) for d in dates)
        and 0 < claims["exp"] - claims["iat"] <= MAX_LIFETIME
        and isinstance(lv, dict)
        and set(lv) == set(LEVELS)
        and all(isinstance(v, bool) for v in lv.values())
        and all(_string_map(claims.get(name, {})) for name in ("asset_tags", "features"))
    )


# --- properties ---------------------------------------------------------------------------------------


@FUZZ
@given(
    st.one_of(
        st.text(max_size=64),
        st.binary(max_size=96).map(lambda b: b.decode("latin-1")),
        st.lists(st.text(alphabet=B64URL + "=+/", max_size=24), min_size=1, max_size=5).map(".".join),
        st.lists(scalars.map(lambda v: b64url(json.dumps(v).encode())), min_size=3, max_size=3).map(".".join),
        st.text(B64URL, max_size=64).map(lambda p: f"{b64url(b'{}')}.{p}.{b64url(b'x' * 64)}"),
        scalars.filter(lambda v: not isinstance(v, str)),
        st.binary(max_size=64),
        st.lists(scalars, max_size=3),
        st.dictionaries(st.text(max_size=4), scalars, max_size=2),
    )
)
def test_arbitrary_input_is_refused_with_a_report_error(token: Any) -> None:
    outcome = verify(verifier_for("ES256"), token)

    assert isinstance(outcome, ReportError)
    if not isinstance(token, str):
        assert isinstance(outcome, MalformedReport) and outcome.reason == "token is not a string"


ODD_CHARS = B64URL + ".=+/ \n\x00\x7f\u00e9\u0661\uff21\ufeff\U0001f600"


@st.composite
def mutated_tokens(draw: st.DrawFn) -> tuple[str, str, str]:
    """(alg, valid token, the token with one character replaced, inserted or deleted)."""
    alg, node, variant = draw(st.sampled_from(VALID_VARIANTS))
    token = _valid_token(alg, node, variant)
    # Anywhere, or in the signature's last characters, where some bits are unused.
    position = draw(st.one_of(st.integers(0, 1023), st.integers(-3, -1))) % len(token)
    original = token[position]
    replacement = draw(
        st.one_of(
            st.integers(0, 7).map(lambda bit: chr(ord(original) ^ (1 << bit))),  # one flipped bit
            st.sampled_from(ODD_CHARS),
        )
    )
    mode = draw(st.sampled_from(["replace", "replace", "insert", "delete"]))
    if mode == "replace":
        mutated = token[:position] + replacement + token[position + 1 :]
    elif mode == "insert":
        mutated = token[:position] + replacement + token[position:]
    else:
        mutated = token[:position] + token[position + 1 :]
    return alg, token, mutated


VALID_VARIANTS = [
    (alg, node, variant) for alg in FUZZ_ALGS for node in ("n1", "n2", "worker-0") for variant in range(4)
]


@FUZZ
@given(mutated_tokens())
def test_a_valid_token_with_one_character_changed_is_never_accepted_unless_it_decodes_the_same(
    mutation: tuple[str, str, str],
) -> None:
    alg, token, mutated = mutation
    assume(mutated != token)

    outcome = verify(verifier_for(alg), mutated)

    if isinstance(outcome, TrustReport):
        # Only the unused low bits of the signature's last base64 character may change: the header and
        # payload are signed as text, and the signature must decode to the very same bytes.
        assert [decode_segment(s) for s in parts(mutated)] == [decode_segment(s) for s in parts(token)]
        assert parts(mutated)[:2] == parts(token)[:2]
        assert outcome == verify(verifier_for(alg), token)
        assert_bound(outcome)


HEADER_NAMES = ["alg", "kid", "typ", "crit", "cty", "zip", "b64", *sorted(KEY_BEARING), "ALG", "Kid", "", "\u00e9", "x"]
HEADER_VALUES = [
    "ES256",
    "es256",
    "ES256 ",
    "none",
    "HS256",
    "EdDSA",
    "JWT",
    "jwt",
    "application/JWT",
    "at+jwt",
    "JOSE",
]
HEADER_VALUES += [
    "",
    "@kid",
    "@kid ",
    None,
    True,
    0,
    1.5,
    [],
    ["ES256"],
    ["@kid"],
    {},
    {"kty": "EC"},
    "a" * 300,
    "\x00",
]
HEADER_MEMBERS = [(name, value) for name in HEADER_NAMES for value in HEADER_VALUES]


@FUZZ
@given(
    st.lists(st.one_of(st.sampled_from(HEADER_MEMBERS), st.tuples(st.text(max_size=4), shallow_values)), max_size=6),
    st.booleans(),
)
def test_any_signed_header_is_refused_or_is_a_plain_es256_header(pairs: list[tuple[str, Any]], base: bool) -> None:
    """Random headers (duplicates included), correctly signed with the issuer's ES256 key."""
    kid = kid_of(es().key)
    if base:  # start from the genuine header so that the random members are the only difference
        pairs = [("alg", "ES256"), ("kid", "@kid"), *pairs]
    pairs = [(k, v.replace("@kid", kid) if isinstance(v, str) else v) for k, v in pairs]
    token = sign_raw(raw_object(pairs), json.dumps(es().claims("n1", now=NOW)))

    outcome = verify(verifier_for("ES256"), token)

    names = [k for k, _ in pairs]
    if len(names) != len(set(names)):
        assert isinstance(outcome, MalformedReport)
        assert "duplicate JSON member" in outcome.reason
    elif isinstance(outcome, TrustReport):
        header = dict(pairs)
        assert header["alg"] == "ES256" and header["kid"] == kid
        assert not (KEY_BEARING | {"crit"}) & set(header)
        assert str(header.get("typ", "JWT")).upper() in {"JWT", "APPLICATION/JWT"}
        assert_bound(outcome)


@FUZZ
@given(claim_pairs)
def test_signed_claims_are_accepted_exactly_when_well_formed(pairs: list[tuple[str, Any]]) -> None:
    """Random claim sets (wrong types, missing members, duplicates, huge strings, unicode), correctly signed."""
    token = sign_raw(json.dumps(header_for(es())), raw_object(pairs))
    verifier = verifier_for("ES256")

    outcome = verify(verifier, token)

    names = [k for k, _ in pairs]
    if len(token) > verifier.settings.max_token_bytes:
        assert isinstance(outcome, MalformedReport) and "larger than" in outcome.reason
    elif len(names) != len(set(names)):
        assert isinstance(outcome, MalformedReport) and "duplicate JSON member" in outcome.reason
    else:
        claims = dict(pairs)
        assert isinstance(outcome, TrustReport) == claims_acceptable(claims), outcome
        if isinstance(outcome, TrustReport):
            assert (outcome.node, outcome.issuer, outcome.jti) == (claims["sub"], claims["iss"], claims["jti"])
            assert dict(outcome.levels) == claims["levels"]
            assert outcome.trusted_levels == {k for k, v in claims["levels"].items() if v}
            assert_bound(outcome)
            for now in (0.0, NOW, outcome.issued_at - 31, outcome.expires_at, outcome.expires_at + 30, MAX_DATE):
                reason = outcome.time_failure(now, 30.0)  # names instants in its reasons: must format any of them
                assert reason is None or isinstance(reason.message, str)
            try:
                bound = verifier.verify_for(token, identity("n1"), NOW)
            except ReportError:
                pass
            else:
                assert bound.node == "n1" and bound.system_uuid == identity("n1").system_uuid


@cache
def genuine_texts() -> tuple[str, str]:
    """The JSON texts of a genuine header and claim set."""
    return json.dumps(header_for(es())), json.dumps(es().claims("n1", now=NOW))


def _nest(depth: int, kind: str) -> str:
    opener, closer = {"list": ("[", "]"), "object": ('{"a":', "}"), "mixed": ('[{"a":', "}]")}[kind]
    return opener * depth + "0" + closer * depth


@FUZZ
@given(
    st.integers(1, 10_000),
    st.sampled_from(["list", "object", "mixed"]),
    st.sampled_from(["payload", "claim", "header"]),
)
def test_deeply_nested_json_is_refused_without_crashing(depth: int, kind: str, where: str) -> None:
    verifier = verifier_for("ES256", max_token_bytes=2**20)
    header_text, claims_text = genuine_texts()
    nested = _nest(depth, kind)
    if where == "payload":
        token = sign_raw(header_text, nested)
    elif where == "claim":
        token = sign_raw(header_text, claims_text[:-1] + f', "features": {nested}}}')
    else:
        token = sign_raw(header_text[:-1] + f', "ext": {nested}}}', claims_text)

    outcome = verify(verifier, token)

    not_json = f"token {'header' if where == 'header' else 'payload'} is not JSON"
    if depth >= 2000:  # beyond the interpreter's recursion limit: the parser gives up, the token is malformed
        assert isinstance(outcome, MalformedReport) and outcome.reason == not_json
    elif depth >= 500 and isinstance(outcome, MalformedReport) and outcome.reason == not_json:
        pass  # where exactly the parser gives up depends on the stack depth of the caller
    elif where == "header":  # an unknown header member is ignored, however nested
        assert isinstance(outcome, TrustReport)
    elif where == "claim":
        assert isinstance(outcome, ReportError) and outcome.reason == "claim features must be an object of strings"
    elif kind == "object":
        assert isinstance(outcome, ReportError) and outcome.reason.startswith("required claim")
    else:
        assert isinstance(outcome, MalformedReport) and outcome.reason == "token payload is not a JSON object"


@FUZZ
@given(
    st.sampled_from(["payload", "header"]),
    st.sampled_from(["\ufeff", " ", "\n", "x", "}", "]", ",", "\x00", "{}", "\u00e9", "\\", '"']),
    st.sampled_from(["prefix", "suffix", "inside"]),
    st.integers(0, 4),
)
def test_signed_json_text_with_stray_characters_is_refused_unless_only_whitespace(
    where: str, stray: str, place: str, count: int
) -> None:
    header_text = json.dumps(header_for(es()), separators=(",", ":"))
    claims_text = json.dumps(es().claims("n1", now=NOW), separators=(",", ":"))
    text = header_text if where == "header" else claims_text
    junk = stray * count
    if place == "prefix":
        text = junk + text
    elif place == "suffix":
        text = text + junk
    else:
        text = text[:1] + junk + text[1:]
    token = sign_raw(text, claims_text) if where == "header" else sign_raw(header_text, text)

    outcome = verify(verifier_for("ES256"), token)

    if junk.strip(" \n") == "":
        assert isinstance(outcome, TrustReport)  # JSON allows whitespace around values
        assert_bound(outcome)
    else:
        assert isinstance(outcome, MalformedReport), outcome
