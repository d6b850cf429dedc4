"""The trust agent: registers this host's TPM with the attestation authority, then attests.

    agent = Agent(AgentConfig(...), tpm=Tpm2Tools(tcti, state_dir), transport=HttpTransport(url, ca))
    agent.run(stop_event)      # register, activate, attest every `renew_after`, back off when refused or away
    agent.request_attestation()  # on demand (SIGUSR1 in the service)

Host identity comes from `/sys/class/dmi/id/product_uuid` (the Node's systemUUID) and
`/proc/sys/kernel/random/boot_id` (its bootID); both paths are configurable for tests.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.tpm2 import QUOTE_PCRS, Tpm2Tools, TpmCommandError

log = logging.getLogger("trustgate.agent")


class AuthorityUnavailable(Exception):
    """The authority could not be reached or failed (5xx): retry with back-off."""


class AuthorityRefused(Exception):
    def __init__(self, status: int, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason, self.retry_after = status, reason, retry_after


class Transport(Protocol):
    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...


class HttpTransport:
    """JSON over HTTPS to the authority, verified with `ca_file`, presenting the client certificate.

    The certificate files are read for each request: the kubelet renews its client certificate in
    place (`kubelet-client-current.pem`), and the agent must follow without a restart."""

    def __init__(
        self, url: str, ca_file: str | None = None, client_cert: tuple[str, str] | None = None, timeout: float = 15.0
    ) -> None:
        self.url = url.rstrip("/")
        self.ca_file, self.client_cert = ca_file, client_cert
        self.timeout = timeout

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            context.load_cert_chain(*self.client_cert)
        return context

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, context=self.context(), timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                reason = json.loads(error.read() or b"{}").get("error") or error.reason
            except ValueError:
                reason = str(error.reason)
            if error.code >= 500:
                raise AuthorityUnavailable(f"{error.code}: {reason}") from None
            raise AuthorityRefused(error.code, str(reason), _retry_after(error.headers.get("Retry-After"))) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise AuthorityUnavailable(str(error)) from None


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


@dataclass
class AgentConfig:
    node: str
    product_uuid_path: str = "/sys/class/dmi/id/product_uuid"
    boot_id_path: str = "/proc/sys/kernel/random/boot_id"
    interval: float = 120.0  # at most this long between attestations (the authority may ask for sooner)
    min_backoff: float = 1.0
    max_backoff: float = 60.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Agent:
    def __init__(
        self, config: AgentConfig, tpm: Tpm2Tools, transport: Transport, sleep_jitter: Callable[[], float] | None = None
    ) -> None:
        self.config = config
        self.tpm = tpm
        self.transport = transport
        self.agent_id: str | None = None
        self.last_result: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._jitter = sleep_jitter or (lambda: random.uniform(0.8, 1.2))

    # --- host identity ----------------------------------------------------------------------

    def system_uuid(self) -> str:
        return Path(self.config.product_uuid_path).read_text().strip().lower()

    def boot_id(self) -> str:
        return Path(self.config.boot_id_path).read_text().strip()

    # --- protocol -----------------------------------------------------------------------------

    def register(self) -> str:
        """Register and activate the credential; returns the agent id."""
        ak_public = self.tpm.ensure_ak()
        answer = self.transport.post(
            "/v1/register",
            {
                "node": self.config.node,
                "system_uuid": self.system_uuid(),
                "boot_id": self.boot_id(),
                "ek_certificate": _b64(self.tpm.ek_certificate()),
                "ek_public": _b64(self.tpm.ek_public()),
                "ak_public": _b64(ak_public),
            },
        )
        agent_id = answer["agent_id"]
        secret = self.tpm.activate_credential(base64.b64decode(answer["credential"]))
        self.transport.post("/v1/activate", {"agent_id": agent_id, "secret": _b64(secret)})
        self.agent_id = agent_id
        log.info("registered with the attestation authority as node %s", self.config.node)
        return agent_id

    def attest(self) -> dict[str, Any]:
        """One attestation: a fresh nonce, a quote over the five levels' PCRs, the authority's verdict."""
        if self.agent_id is None:
            self.register()
        assert self.agent_id is not None
        try:
            nonce = base64.b64decode(self.transport.post("/v1/nonce", {"agent_id": self.agent_id})["nonce"])
            quote = self.tpm.quote(nonce, QUOTE_PCRS)
            result = self.transport.post(
                "/v1/attest",
                {
                    "agent_id": self.agent_id,
                    "nonce": _b64(nonce),
                    "quote": _b64(quote.message),
                    "signature": _b64(quote.signature),
                    "pcrs": {str(p): v.hex() for p, v in quote.pcrs.items()},
                    "system_uuid": self.system_uuid(),
                    "boot_id": self.boot_id(),
                },
            )
        except AuthorityRefused as refusal:
            if refusal.status == 404:  # the authority forgot us (restart) or the registration expired
                self.agent_id = None
            raise
        self.last_result = result
        failing = [level for level, ok in result.get("levels", {}).items() if not ok]
        log.info("attested: %s", f"levels failing: {', '.join(failing)}" if failing else "all levels trusted")
        return result

    def request_attestation(self) -> None:
        """Attest now (on demand) instead of at the next scheduled time."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Attest on schedule until `stop` is set; back off exponentially while refused or unreachable."""
        backoff = self.config.min_backoff
        while not stop.is_set():
            try:
                result = self.attest()
                backoff = self.config.min_backoff
                delay = min(self.config.interval, float(result.get("renew_after") or self.config.interval))
            except (AuthorityUnavailable, AuthorityRefused, TpmCommandError, OSError, KeyError, ValueError) as error:
                # a rate-limited agent waits at least as long as the authority asks
                wait = max(backoff, getattr(error, "retry_after", 0.0))
                log.warning("attestation failed (retrying in %.0fs): %s", wait, error)
                delay, backoff = wait, min(backoff * 2, self.config.max_backoff)
            self._wake.clear()
            deadline = delay * self._jitter()
            if stop.wait(0) or self._wait(stop, deadline):
                continue

    def _wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep up to `seconds`, woken early by `stop` or an on-demand request."""
        waited = 0.0
        while waited < seconds and not stop.is_set() and not self._wake.is_set():
            step = min(0.2, seconds - waited)
            stop.wait(step)
            waited += step
        return stop.is_set()
