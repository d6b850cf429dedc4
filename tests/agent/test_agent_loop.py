"""The trust agent: host identity, scheduling, back-off while the authority is away, on-demand attestation."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.agent import Agent, AgentConfig, AuthorityRefused, AuthorityUnavailable, HttpTransport
from agent.main import main
from agent.tpm2 import Tpm2Tools, TpmCommandError, der_length


class ScriptedAuthority:
    """Answers like the authority (without checking anything), failing as scripted."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(path)
        if self.failures:
            raise self.failures.pop(0)
        if path == "/v1/register":
            return {"agent_id": "a1", "credential": "cred"}
        if path == "/v1/nonce":
            return {"nonce": base64.b64encode(b"n" * 32).decode()}
        if path == "/v1/attest":
            return {"levels": {"firmware": True}, "renew_after": 5.0}
        return {}


class FakeTpm:
    def ensure_ak(self) -> bytes:
        return b"ak"

    def ek_certificate(self) -> bytes:
        return b"cert"

    def ek_public(self) -> bytes:
        return b"ek"

    def activate_credential(self, blob: bytes) -> bytes:
        return b"secret"

    def quote(self, nonce: bytes, pcrs: Any) -> Any:
        from agent.tpm2 import Quote

        return Quote(b"msg", b"sig", {0: b"\x00" * 32})


def make_agent(tmp_path: Path, transport: Any, tpm: Any = None) -> tuple[Agent, list[float]]:
    (tmp_path / "uuid").write_text("4C4C4544-0000-1111-2222-333344445555\n")
    (tmp_path / "boot").write_text("b1\n")
    config = AgentConfig(
        "n1", str(tmp_path / "uuid"), str(tmp_path / "boot"), interval=30, min_backoff=1, max_backoff=8
    )
    agent = Agent(config, tpm or FakeTpm(), transport, sleep_jitter=lambda: 1.0)  # type: ignore[arg-type]
    return agent, []


def run_steps(agent: Agent, steps: int) -> list[float]:
    """Run the loop for `steps` iterations, recording the waits instead of sleeping."""
    waits: list[float] = []
    stop = threading.Event()

    def fake_wait(stop_event: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) >= steps:
            stop.set()
        return stop.is_set()

    agent._wait = fake_wait  # type: ignore[method-assign]
    agent.run(stop)
    return waits


def test_identity_from_the_host_files(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path, ScriptedAuthority([]))
    assert agent.system_uuid() == "4c4c4544-0000-1111-2222-333344445555"  # as the Node's systemUUID
    assert agent.boot_id() == "b1"


def test_backs_off_exponentially_while_the_authority_is_away_then_follows_its_schedule(tmp_path: Path) -> None:
    away = [AuthorityUnavailable("connection refused")] * 5
    authority = ScriptedAuthority(list(away))
    agent, _ = make_agent(tmp_path, authority)
    waits = run_steps(agent, 8)
    assert waits == [1, 2, 4, 8, 8, 5.0, 5.0, 5.0]  # capped back-off, then renew_after from the authority
    assert authority.calls[:5] == ["/v1/register"] * 5
    assert authority.calls[5:9] == ["/v1/register", "/v1/activate", "/v1/nonce", "/v1/attest"]
    assert agent.agent_id == "a1"


def test_refusals_back_off_too_and_unknown_agent_registers_again(tmp_path: Path) -> None:
    authority = ScriptedAuthority([AuthorityRefused(403, "EK not enrolled")])
    agent, _ = make_agent(tmp_path, authority)
    assert run_steps(agent, 2) == [1, 5.0]
    authority.failures = [AuthorityRefused(404, "unknown agent; register again")]
    with pytest.raises(AuthorityRefused):
        agent.attest()
    assert agent.agent_id is None
    agent.attest()
    assert authority.calls[-4:] == ["/v1/register", "/v1/activate", "/v1/nonce", "/v1/attest"]
    assert agent.agent_id == "a1"


def test_on_demand_attestation_wakes_the_loop(tmp_path: Path) -> None:
    authority = ScriptedAuthority([])
    agent, _ = make_agent(tmp_path, authority)
    agent.config.interval = 3600
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for expected in (1, 2, 3):
            _wait_for(lambda n=expected: authority.calls.count("/v1/attest") >= n)
            agent.request_attestation()
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_http_transport_reports_an_absent_authority_as_unavailable() -> None:
    from devkit.swtpm import free_port_pair

    transport = HttpTransport(f"https://127.0.0.1:{free_port_pair()}", timeout=2)
    with pytest.raises(AuthorityUnavailable):
        transport.post("/v1/nonce", {"agent_id": "x"})


def test_der_length_trims_nv_padding() -> None:
    assert der_length(b"\x30\x82\x01\x00" + b"\x00" * 300) == 4 + 256
    assert der_length(b"\x30\x05abcde\xff\xff") == 7
    with pytest.raises(TpmCommandError):
        der_length(b"\xff\xff")


def test_cli_ek_fingerprint_and_flavor_capture(tools: Tpm2Tools, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    import yaml

    args = ["--tcti", tools.tcti, "--state-dir", str(tools.state_dir)]
    assert main([*args, "ek-fingerprint"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(tools.ek_certificate()).hexdigest()
    assert main([*args, "flavor", "--name", "golden"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [o["metadata"]["name"] for o in objects] == [
        f"golden-{lvl}" for lvl in ("firmware", "boot", "bootloader", "kernel", "runtime")
    ]
    boot = objects[1]["spec"]
    assert boot["level"] == "boot" and sorted(boot["pcrs"], key=int) == ["1", "2", "3", "17", "18"]
    assert boot["pcrs"]["17"] == "ff" * 32


def test_cli_reports_an_absent_tpm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from devkit.swtpm import free_port_pair

    tcti = f"swtpm:host=127.0.0.1,port={free_port_pair()}"
    assert main(["--tcti", tcti, "--state-dir", str(tmp_path), "ek-fingerprint"]) == 1
    assert "tpm2_nvread" in capsys.readouterr().err
