"""`trustctl`: keygen, sign, verify and inspect, with their exit codes (0 ok, 1 rejected, 2 usage)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from trustgate.cli.main import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, main, parse_duration
from trustgate.core.keys import thumbprint
from trustgate.keyfiles import load_private_key

from ..craft import decode_segment

ISSUER = "https://aias.example"
UUID = "4C4C4544-0042-3510-8052-B7C04F4E3332"
IDENTITY = ["--node", "worker-1", "--system-uuid", UUID.lower(), "--boot-id", "b007"]


@pytest.fixture(scope="module")
def es256_key(tmp_path_factory) -> tuple[Path, Path]:
    """An ES256 key and its JWKS, made by `trustctl keygen`."""
    folder = tmp_path_factory.mktemp("keys")
    key, jwks = folder / "aias.pem", folder / "jwks.json"
    assert main(["keygen", "--alg", "ES256", "--key-out", str(key), "--jwks-out", str(jwks)]) == EXIT_OK
    return key, jwks


def sign(capsys, key: Path, *extra: str, node: str = "worker-1") -> str:
    args = ["sign", "--key", str(key), "--issuer", ISSUER, "--node", node, "--system-uuid", UUID, "--boot-id", "b007"]
    assert main([*args, *extra]) == EXIT_OK
    return capsys.readouterr().out.strip()


def verify(capsys, jwks: Path, token_file: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["verify", "--jwks", str(jwks), "--issuer", ISSUER, *IDENTITY, *extra, str(token_file)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("alg", ["ES256", "ES384", "PS256", "RS256", "EdDSA"])
def test_keygen_writes_a_private_key_and_a_jwks_whose_kid_is_the_thumbprint(tmp_path, capsys, alg: str) -> None:
    key, jwks = tmp_path / "key.pem", tmp_path / "jwks.json"

    assert main(["keygen", "--alg", alg, "--key-out", str(key), "--jwks-out", str(jwks)]) == EXIT_OK

    (jwk,) = json.loads(jwks.read_text())["keys"]
    expected_kid = thumbprint(load_private_key(key).public_key())  # type: ignore[arg-type]
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == (expected_kid, alg, "sig")
    assert "d" not in jwk
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert f"(kid {expected_kid})" in capsys.readouterr().out


def test_sign_then_verify_round_trip_exits_0_printing_the_claims(tmp_path, capsys, es256_key) -> None:
    key, jwks = es256_key
    token = sign(capsys, key, "--level", "kernel=false", "--asset-tag", "country=US", "--feature", "tpm=2.0")
    token_file = tmp_path / "report.jwt"
    token_file.write_text(token + "\n")

    code, out, err = verify(capsys, jwks, token_file)

    assert (code, err) == (EXIT_OK, "")
    claims = json.loads(out)
    assert (claims["sub"], claims["iss"], claims["system_uuid"], claims["boot_id"]) == (
        "worker-1",
        ISSUER,
        UUID,
        "b007",
    )
    assert claims["levels"] == {"firmware": True, "boot": True, "bootloader": True, "kernel": False, "runtime": True}
    assert (claims["asset_tags"], claims["features"]) == ({"country": "US"}, {"tpm": "2.0"})
    assert (claims["alg"], claims["kid"]) == ("ES256", json.loads(jwks.read_text())["keys"][0]["kid"])
    assert claims["exp"] - claims["iat"] == 3600


def test_verify_reads_the_token_from_stdin(monkeypatch, capsys, es256_key) -> None:
    key, jwks = es256_key
    token = sign(capsys, key, "--ttl", "15m")
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))

    code = main(["verify", "--jwks", str(jwks), "--issuer", ISSUER, *IDENTITY])

    assert code == EXIT_OK
    claims = json.loads(capsys.readouterr().out)
    assert claims["exp"] - claims["iat"] == 900


def test_verify_of_a_token_for_another_node_exits_1_with_the_reason_on_stderr(tmp_path, capsys, es256_key) -> None:
    key, jwks = es256_key
    token_file = tmp_path / "report.jwt"
    token_file.write_text(sign(capsys, key, node="worker-2"))

    code, out, err = verify(capsys, jwks, token_file)

    assert (code, out) == (EXIT_REJECTED, "")
    assert err == "trust report rejected: report bound to another host (issued for node worker-2)\n"


def test_verify_rejects_a_report_living_longer_than_the_maximum(tmp_path, capsys, es256_key) -> None:
    key, jwks = es256_key
    token_file = tmp_path / "report.jwt"
    token_file.write_text(sign(capsys, key, "--ttl", "2h"))

    code, _, err = verify(capsys, jwks, token_file, "--max-lifetime", "1h")

    assert code == EXIT_REJECTED
    assert err == "trust report rejected: report lifetime 7200s exceeds the maximum 3600s\n"


def test_verify_rejects_a_report_from_an_issuer_that_is_not_trusted(tmp_path, capsys, es256_key) -> None:
    key, jwks = es256_key
    token_file = tmp_path / "report.jwt"
    token_file.write_text(sign(capsys, key))

    code = main(["verify", "--jwks", str(jwks), "--issuer", "https://other.example", *IDENTITY, str(token_file)])

    assert code == EXIT_REJECTED
    assert capsys.readouterr().err == f"trust report rejected: issuer '{ISSUER}' is not trusted\n"


def test_verify_rejects_a_report_signed_by_a_key_outside_the_jwks(tmp_path, capsys, es256_key) -> None:
    key, _ = es256_key
    other_key, other_jwks = tmp_path / "other.pem", tmp_path / "other.json"
    assert main(["keygen", "--key-out", str(other_key), "--jwks-out", str(other_jwks)]) == EXIT_OK
    capsys.readouterr()
    token_file = tmp_path / "report.jwt"
    token_file.write_text(sign(capsys, key))

    code, _, err = verify(capsys, other_jwks, token_file)

    assert code == EXIT_REJECTED
    assert err.startswith("trust report rejected: unknown signing key (kid ")


def test_verify_without_any_key_is_a_usage_error_exiting_2(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["verify", "--issuer", ISSUER, *IDENTITY, "report.jwt"])

    assert exited.value.code == EXIT_USAGE
    assert "verify needs --jwks or --pem" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["keygen", "--alg", "HS256", "--key-out", "k", "--jwks-out", "j"], "invalid choice: 'HS256'"),
        (["sign", "--key", "k", "--issuer", "i", "--node", "n"], "the following arguments are required: --system-uuid"),
        (
            ["sign", "--key", "k", "--issuer", "i", "--node", "n", "--system-uuid", "u", "--ttl", "1y"],
            "invalid duration '1y'",
        ),
        (
            ["sign", "--key", "k", "--issuer", "i", "--node", "n", "--system-uuid", "u", "--level", "bios=true"],
            "unknown level 'bios'",
        ),
        (
            ["sign", "--key", "k", "--issuer", "i", "--node", "n", "--system-uuid", "u", "--level", "boot=yes"],
            "level boot must be true or false",
        ),
        (
            ["sign", "--key", "k", "--issuer", "i", "--node", "n", "--system-uuid", "u", "--asset-tag", "US"],
            "expected KEY=VALUE, got 'US'",
        ),
    ],
    ids=[
        "no-command",
        "unknown-command",
        "bad-alg",
        "missing-option",
        "bad-duration",
        "bad-level",
        "bad-verdict",
        "bad-tag",
    ],
)
def test_bad_arguments_are_a_usage_error_exiting_2(capsys, argv, message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_an_unreadable_jwks_is_a_configuration_error_exiting_2(tmp_path, capsys) -> None:
    missing = tmp_path / "missing.json"

    code = main(["verify", "--jwks", str(missing), "--issuer", ISSUER, *IDENTITY, str(tmp_path / "t")])

    assert code == EXIT_USAGE
    assert capsys.readouterr().err == f"trustctl verify: cannot read key file {missing}: No such file or directory\n"


def test_an_unreadable_token_file_is_a_usage_error_exiting_2(tmp_path, capsys, es256_key) -> None:
    _, jwks = es256_key
    missing = tmp_path / "missing.jwt"

    code, _, err = verify(capsys, jwks, missing)

    assert code == EXIT_USAGE
    assert err == f"trustctl verify: cannot read token {missing}: No such file or directory\n"


def test_signing_with_a_key_that_is_not_a_private_key_exits_2(capsys, es256_key) -> None:
    _, jwks = es256_key

    code = main(["sign", "--key", str(jwks), "--issuer", ISSUER, "--node", "n", "--system-uuid", UUID])

    assert code == EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"trustctl sign: {jwks}: not an unencrypted PEM private key")


def test_inspect_shows_header_and_claims_marked_unverified(tmp_path, capsys, es256_key) -> None:
    key, _ = es256_key
    token = sign(capsys, key, "--asset-tag", "country=US")
    token_file = tmp_path / "report.jwt"
    token_file.write_text(token)

    assert main(["inspect", str(token_file)]) == EXIT_OK

    first, _, rest = capsys.readouterr().out.partition("\n")
    assert first.startswith("UNVERIFIED: the signature and claims below have NOT been checked")
    shown = json.loads(rest)
    assert shown["header"] == json.loads(decode_segment(token.split(".")[0]))
    assert (shown["claims"]["sub"], shown["claims"]["asset_tags"]) == ("worker-1", {"country": "US"})


def test_inspect_reads_the_token_from_stdin(monkeypatch, capsys, es256_key) -> None:
    key, _ = es256_key
    token = sign(capsys, key)
    monkeypatch.setattr("sys.stdin", io.StringIO(token))

    assert main(["inspect", "-"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("UNVERIFIED:")


def test_inspect_accepts_a_short_token_given_inline(capsys) -> None:
    token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJuMSJ9.c2ln"  # {"alg":"none"} . {"sub":"n1"}

    assert main(["inspect", token]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("UNVERIFIED:")
    assert json.loads(out.partition("\n")[2]) == {"header": {"alg": "none"}, "claims": {"sub": "n1"}}


def test_inspect_accepts_a_real_token_given_inline(capsys, es256_key) -> None:
    key, _ = es256_key
    token = sign(capsys, key)

    assert main(["inspect", token]) == EXIT_OK
    assert capsys.readouterr().out.startswith("UNVERIFIED:")


def test_inspect_of_something_that_is_not_a_token_exits_1(capsys) -> None:
    assert main(["inspect", "not-a-token"]) == EXIT_REJECTED
    assert (
        capsys.readouterr().err == "cannot decode token: not a compact JWS (expected three parts separated by dots)\n"
    )


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1.5h", 5400), ("2d", 172800)])
def test_durations_accept_seconds_minutes_hours_and_days(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
