"""Configuration and key errors: each is a clear message at start and exit code 2, never a server.

`trustgate.settings` is checked directly for every case, and the real entry points
(`trustgate-extender`, `trustgate-webhook`, `trustgate-controller`) are run as processes for the
errors an operator meets most: missing or unreadable JWKS, a JWKS with no usable key, an empty
issuer list, a certificate that does not match its key, missing TLS files. A good configuration
run the same way does listen (the control: "not listening" means something).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devkit.pki import issue_cert
from extender.main import ExtenderSettings
from trustgate.core.keys import generate_private_key, jwks_for, private_key_pem
from trustgate.settings import ConfigError, TrustSettings, positive_float

from ..kubeconfig import write_unreachable_kubeconfig

BIN = Path(sys.executable).parent
ISSUER = "https://aias.example"


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    leaf = issue_cert(None, name, ["localhost"], server=True, out_dir=directory)
    return leaf.cert_file, leaf.key_file


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad configuration files, by name."""
    d = tmp_path_factory.mktemp("config")
    key = generate_private_key("ES256")
    good = jwks_for(key.public_key(), "ES256")  # type: ignore[arg-type]
    paths = {
        "jwks": d / "jwks.json",
        "jwks-empty": d / "jwks-empty.json",
        "jwks-not-json": d / "jwks-not-json.json",
        "jwks-oct": d / "jwks-oct.json",
        "jwks-private": d / "jwks-private.json",
        "jwks-no-kid": d / "jwks-no-kid.json",
        "jwks-unreadable": d / "jwks-dir.json",  # a directory: open() fails, as for a file we may not read
        "pem-not-a-key": d / "not-a-key.pem",
        "missing": d / "does-not-exist.json",
        "kubeconfig": d / "kubeconfig",
    }
    paths["jwks"].write_text(json.dumps(good))
    paths["jwks-empty"].write_text(json.dumps({"keys": []}))
    paths["jwks-not-json"].write_text("{keys: [")
    paths["jwks-oct"].write_text(json.dumps({"keys": [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]}))
    private = json.loads(json.dumps(good))
    private["keys"][0]["d"] = "AAAA"
    paths["jwks-private"].write_text(json.dumps(private))
    no_kid = json.loads(json.dumps(good))
    no_kid["keys"][0].pop("kid")
    paths["jwks-no-kid"].write_text(json.dumps(no_kid))
    paths["jwks-unreadable"].mkdir()
    paths["pem-not-a-key"].write_bytes(private_key_pem(key))  # a private key where a public one belongs
    paths["cert"], paths["key"] = _self_signed(d, "server")
    _, paths["other-key"] = _self_signed(d, "other")
    write_unreachable_kubeconfig(paths["kubeconfig"], "https://127.0.0.1:1")
    return paths


def good_args(files: dict[str, Path], serving: bool = True) -> dict[str, str]:
    args = {"--issuer": ISSUER, "--jwks": str(files["jwks"]), "--kubeconfig": str(files["kubeconfig"])}
    if serving:
        args |= {"--tls-cert": str(files["cert"]), "--tls-key": str(files["key"])}
    return args


def argv(args: dict[str, str | None]) -> list[str]:
    return [f"{flag}={value}" for flag, value in args.items() if value is not None]


# (case, serving only, flags changed from a good configuration, words the message must contain)
CASES = [
    ("no-issuer", False, {"--issuer": None}, "no trusted issuer"),
    ("empty-issuer", False, {"--issuer": ""}, "an empty trusted issuer"),
    ("blank-issuer", False, {"--issuer": "  "}, "an empty trusted issuer"),
    ("no-key", False, {"--jwks": None}, "no verification key"),
    ("empty-jwks-path", False, {"--jwks": ""}, "an empty --jwks or --pem path"),
    ("missing-jwks", False, {"--jwks": "missing"}, "cannot read key file {missing}: No such file or directory"),
    ("unreadable-jwks", False, {"--jwks": "jwks-unreadable"}, "cannot read key file {jwks-unreadable}"),
    ("jwks-not-json", False, {"--jwks": "jwks-not-json"}, "{jwks-not-json}: not valid JSON"),
    ("jwks-without-keys", False, {"--jwks": "jwks-empty"}, "no usable verification key"),
    ("jwks-symmetric-key", False, {"--jwks": "jwks-oct"}, "unsupported key type 'oct'"),
    ("jwks-private-key", False, {"--jwks": "jwks-private"}, "contains private key material"),
    ("jwks-key-without-kid", False, {"--jwks": "jwks-no-kid"}, "has no 'kid'"),
    ("pem-not-a-public-key", False, {"--jwks": None, "--pem": "pem-not-a-key"}, "not a PEM public key"),
    ("missing-kubeconfig", False, {"--kubeconfig": "missing"}, "kubeconfig {missing} does not exist"),
    ("no-tls", True, {"--tls-cert": None, "--tls-key": None}, "TLS is required"),
    ("missing-cert", True, {"--tls-cert": "missing"}, "TLS file not found: {missing}"),
    ("missing-key", True, {"--tls-key": "missing"}, "TLS file not found: {missing}"),
    ("cert-key-mismatch", True, {"--tls-key": "other-key"}, "and key {other-key} do not match"),
    ("missing-client-ca", True, {"--client-ca": "missing"}, "client CA {missing} is not usable"),
]


def parse_settings(args: list[str], serving: bool) -> TrustSettings:
    """The settings of a serving service (the extender's), or those that verify reports and nothing else."""
    return (ExtenderSettings if serving else TrustSettings).parse(args, "trustgate-test")


def resolve(files: dict[str, Path], changes: dict[str, str | None], serving: bool) -> dict[str, str | None]:
    args: dict[str, str | None] = dict(good_args(files, serving))
    for flag, value in changes.items():
        args[flag] = str(files[value]) if value in files else value
    return args


def expected(files: dict[str, Path], words: str) -> str:
    return words.format_map({name: str(path) for name, path in files.items()})


@pytest.mark.parametrize(("case", "serving_only", "changes", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_configuration_error_is_refused_with_a_clear_message(files, case, serving_only, changes, words) -> None:
    for serving in (True,) if serving_only else (True, False):
        with pytest.raises(ConfigError) as error:
            parse_settings(argv(resolve(files, changes, serving)), serving)
        assert expected(files, words) in str(error.value)


def test_the_good_configuration_passes(files: dict[str, Path]) -> None:
    settings = parse_settings(argv(good_args(files)), serving=True)
    assert isinstance(settings, ExtenderSettings)
    assert settings.issuers == (ISSUER,) and settings.tls_cert == str(files["cert"])
    parse_settings(argv(good_args(files, serving=False)), serving=False)


# --- the real entry points ---------------------------------------------------------------------------


ENTRY_CASES = ["missing-jwks", "unreadable-jwks", "jwks-without-keys", "no-issuer", "empty-issuer"]
SERVING_CASES = ["cert-key-mismatch", "missing-cert", "missing-key"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run(program: str, args: list[str]) -> tuple[int, str, str]:
    done = subprocess.run([str(BIN / program), *args], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_the_entry_points_exit_2_with_the_reason_and_never_serve(files: dict[str, Path]) -> None:
    runs = []
    for program in ("trustgate-extender", "trustgate-webhook", "trustgate-controller"):
        serving = True
        for case in ENTRY_CASES + (SERVING_CASES if serving else []):
            _, _, changes, words = next(c for c in CASES if c[0] == case)
            args = resolve(files, changes, serving)
            port = free_port()
            if serving:
                args["--bind"] = f"127.0.0.1:{port}"
            runs.append((program, case, port, expected(files, words), argv(args)))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: run(r[0], r[4]), runs))
    problems = []
    for (program, case, port, words, _), (code, out, err) in zip(runs, results, strict=True):
        said = err + out
        if code != 2 or f"{program}: " not in said or words not in said:
            problems.append(f"{program} [{case}]: exit {code}, said {said.strip()[-300:]!r}, expected {words!r}")
        if "Listening at" in said or "Booting worker" in said or listening(port):
            problems.append(f"{program} [{case}] started serving")
        if "Traceback" in said:
            problems.append(f"{program} [{case}] printed a traceback instead of a message")
    assert not problems, "\n".join(problems)
    print(f"\n{len(runs)} bad configurations: every entry point exited 2 with the reason, none listened")


def test_a_good_configuration_does_serve(files: dict[str, Path]) -> None:
    """The control for the test above: the same harness sees a server listen (and stay unready:
    its kubeconfig points nowhere, so its cache never syncs)."""
    port = free_port()
    args = argv(good_args(files) | {"--bind": f"127.0.0.1:{port}", "--workers": "1"})
    process = subprocess.Popen(
        [str(BIN / "trustgate-extender"), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        context = ssl.create_default_context(cafile=str(files["cert"]))
        context.check_hostname = False
        while True:
            assert process.poll() is None, f"the extender exited with {process.returncode}"
            if listening(port):
                break
            assert time.monotonic() < deadline, "the extender never listened"
            time.sleep(0.1)
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                    context.wrap_socket(raw) as tls,
                ):
                    tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    status = tls.recv(64).split(b" ")[1]
            except (OSError, IndexError):
                time.sleep(0.2)
        assert status == b"503"
    finally:
        process.terminate()
        process.wait(20)


def test_the_control_plane_and_trustgates_namespace_are_always_exempt(files: dict[str, Path]) -> None:
    settings = parse_settings(argv(good_args(files) | {"--namespace": "tg", "--exempt-namespace": "infra"}), True)
    assert settings.exempt == {"kube-system", "tg", "infra"}


@pytest.mark.parametrize("text", ["0", "-1", "nan", "-inf"])
def test_a_rate_must_be_more_than_zero(text: str) -> None:
    with pytest.raises(ValueError, match=f"must be more than 0, not {text}"):
        positive_float(text)


def test_a_rate_above_zero_is_read_as_a_number() -> None:
    assert (positive_float("0.5"), positive_float("2")) == (0.5, 2.0)
