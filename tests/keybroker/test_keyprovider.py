"""trustgate-keyprovider: the ocicrypt key-provider protocol on stdin and stdout, failures on stderr."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agent.agent import AuthorityRefused
from keyprovider import main as keyprovider
from keyprovider.protocol import ProtocolError, UnwrapRequest, parse


def test_parse() -> None:
    request = {"op": "keyunwrap", "keyunwrapparams": {"dc": {}, "annotation": base64.b64encode(b"wrapped").decode()}}
    assert parse(json.dumps(request).encode()) == UnwrapRequest(b"wrapped")
    assert parse(b'{"op": "keywrap", "keywrapparams": {}}') == "keywrap"
    for bad in (b"nope", b"[]", b'{"op": "keyunwrap"}', b'{"op": "keyunwrap", "keyunwrapparams": {"annotation": "%"}}'):
        with pytest.raises(ProtocolError):
            parse(bad)


class FakeClient:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def layer_options(self, annotation: bytes) -> bytes:
        if isinstance(self.answer, Exception):
            raise self.answer
        return bytes(self.answer)


def run(monkeypatch: pytest.MonkeyPatch, answer: Any, data: bytes) -> tuple[int, bytes]:
    settings = keyprovider.KeyProviderSettings(broker="https://broker", client_cert="/cert.pem")
    monkeypatch.setattr(keyprovider.KeyProviderSettings, "client", lambda self: FakeClient(answer))
    return keyprovider.run(settings, data)


UNWRAP = json.dumps({"op": "keyunwrap", "keyunwrapparams": {"annotation": base64.b64encode(b"w").decode()}}).encode()


def test_the_released_options_go_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run(monkeypatch, b'{"symkey":"k"}', UNWRAP)
    assert code == 0
    assert base64.b64decode(json.loads(out)["keyunwrapresults"]["optsdata"]) == b'{"symkey":"k"}'


def test_the_brokers_refusal_goes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(monkeypatch, AuthorityRefused(403, "level runtime not trusted"), UNWRAP)
    assert (code, out) == (1, b"")
    assert "the key broker refused the layer key: level runtime not trusted" in capsys.readouterr().err


def test_keywrap_is_not_offered(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(monkeypatch, b"", b'{"op": "keywrap"}') == (1, b"")
    assert "trustctl image encrypt" in capsys.readouterr().err


def test_a_bad_configuration_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert keyprovider.main(["--broker", "https://b"]) == 2
    assert "--client-cert" in capsys.readouterr().err
