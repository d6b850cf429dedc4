"""trustgate-controller's settings: what they make of the webhook configurations' scope."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.main import ControllerSettings
from devkit.pki import issue_cert
from trustgate.core.keys import generate_private_key, jwks_for
from trustgate.settings import ConfigError


@pytest.fixture
def required(tmp_path: Path) -> list[str]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(generate_private_key("ES256").public_key(), "ES256")))  # type: ignore[arg-type]
    tls = issue_cert(None, "trustgate-controller", ["localhost"], server=True, out_dir=tmp_path)
    return [
        "--issuer=https://aias.example",
        f"--jwks={jwks}",
        f"--tls-cert={tls.cert_file}",
        f"--tls-key={tls.key_file}",
    ]


def test_the_webhook_timeout_sets_the_scope_timeout(required: list[str]) -> None:
    settings = ControllerSettings.parse([*required, "--webhook-timeout=7"], prog="trustgate-controller")
    assert settings.scope().timeout_seconds == 7


def test_the_webhook_timeout_defaults_to_three_seconds(required: list[str]) -> None:
    assert ControllerSettings.parse(required, prog="trustgate-controller").scope().timeout_seconds == 3


@pytest.mark.parametrize("seconds", ["0", "31"])
def test_a_webhook_timeout_outside_the_api_servers_range_is_refused_at_start(required: list[str], seconds: str) -> None:
    with pytest.raises(ConfigError, match="--webhook-timeout must be 1 to 30 seconds"):
        ControllerSettings.parse([*required, f"--webhook-timeout={seconds}"], prog="trustgate-controller")


def test_kube_schedulers_bindings_skip_the_webhook_unless_asked(required: list[str]) -> None:
    default = ControllerSettings.parse(required, prog="trustgate-controller").scope()
    checked = ControllerSettings.parse([*required, "--check-scheduler-bindings"], prog="trustgate-controller").scope()
    assert "system:kube-scheduler" in default.binders
    assert "system:kube-scheduler" not in checked.binders
    assert "system:serviceaccount:trustgate-system:trustgate-extender" in checked.binders


def test_the_webhooks_fail_closed_unless_the_operator_asks_otherwise(required: list[str]) -> None:
    assert ControllerSettings.parse(required, prog="trustgate-controller").scope().failure_policy == "Fail"
    ignore = ControllerSettings.parse([*required, "--webhook-failure-policy=Ignore"], prog="trustgate-controller")
    assert ignore.scope().failure_policy == "Ignore"
    with pytest.raises(ConfigError, match="must be Fail or Ignore"):
        ControllerSettings.parse([*required, "--webhook-failure-policy=ignore"], prog="trustgate-controller")
