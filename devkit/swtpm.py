"""Emulated TPMs for tests and the demo: Debian's `swtpm` on loopback TCP, manufactured by `swtpm_setup`.

    ca = LocalCa(workdir / "ek-ca")                      # swtpm_localca's root + issuing CA
    tpm = SoftwareTpm(workdir / "host-a", ca).start()    # EK (RSA 2048 + ECC P-384) and EK certificates
    tpm.tcti                                             # "swtpm:host=127.0.0.1,port=..."
    ca.bundle()                                          # the PEM CA bundle the authority trusts
    tpm.stop()

`swtpm_setup --tpm2 --create-ek-cert --create-platform-cert` runs the TPM once on a Unix socket,
creates the EKs (persisted at 0x81010001 RSA and 0x81010016 ECC), and has `swtpm_localca` issue their
certificates (stored in NV 0x01c00002 / 0x01c00016); the local CA's keys are created on first use in
its `statedir`. Then `swtpm socket --server type=tcp --ctrl type=tcp --flags startup-clear` serves it.
A restart of the process keeps the TPM state (seeds, NV) but resets the PCRs, like a reboot.

`SoftwareTpm(directory, ca, port=2321, enter=node.enter)` runs it inside a real node's namespaces
(devkit.nodes), on that node's own loopback: only what runs on the node (its trust agent, with host
networking) reaches it, as only the node reaches its TPM; `tpm.command(argv)` runs a tpm2-tools
command there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devkit.subprocesses import stop

REQUIRED = ("swtpm", "swtpm_setup", "swtpm_localca", "tpm2_createek")
INSTALL_HINT = "apt-get install -y swtpm swtpm-tools tpm2-tools (or: bash agent/install-tpm-tools.sh)"


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED if shutil.which(tool) is None]


def free_port_pair() -> int:
    """A port P with P+1 also free (server and control channel) on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of loopback ports")


@dataclass
class LocalCa:
    """The EK certificate authority of `swtpm_localca`, kept in `directory`."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "localca.conf").write_text(
            f"statedir = {self.directory}\n"
            f"signingkey = {self.directory / 'signkey.pem'}\n"
            f"issuercert = {self.directory / 'issuercert.pem'}\n"
            f"certserial = {self.directory / 'certserial'}\n"
        )
        (self.directory / "localca.options").write_text(
            "--platform-manufacturer trustgate\n--platform-version 2.1\n--platform-model swtpm\n"
        )
        (self.directory / "swtpm_setup.conf").write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {self.directory / 'localca.conf'}\n"
            f"create_certs_tool_options = {self.directory / 'localca.options'}\n"
            "active_pcr_banks = sha256\n"
        )

    @property
    def setup_config(self) -> Path:
        return self.directory / "swtpm_setup.conf"

    def bundle(self) -> bytes:
        """Root and issuing CA certificates (PEM); exists once a first TPM was manufactured."""
        return (self.directory / "swtpm-localca-rootca-cert.pem").read_bytes() + (
            self.directory / "issuercert.pem"
        ).read_bytes()

    def write_bundle(self, path: Path) -> Path:
        Path(path).write_bytes(self.bundle())
        return Path(path)


@dataclass
class SoftwareTpm:
    directory: Path
    ca: LocalCa
    port: int = 0
    enter: Callable[[list[str]], list[str]] | None = None  # a command as run inside a node
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.state = self.directory / "state"

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def manufacture(self) -> None:
        """Create the TPM state with EKs and EK certificates (once)."""
        if (self.state / "tpm2-00.permall").exists():
            return
        self.state.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                "swtpm_setup",
                "--tpm2",
                "--tpmstate",
                str(self.state),
                "--create-ek-cert",
                "--create-platform-cert",
                "--config",
                str(self.ca.setup_config),
                "--overwrite",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"swtpm_setup failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> SoftwareTpm:
        self.manufacture()
        self.port = self.port or (2321 if self.enter is not None else free_port_pair())
        log = open(self.directory / "swtpm.log", "ab")  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(
            self._where(
                [
                    "swtpm",
                    "socket",
                    "--tpm2",
                    "--server",
                    f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                    "--ctrl",
                    f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                    "--tpmstate",
                    f"dir={self.state}",
                    "--flags",
                    "not-need-init,startup-clear",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self._listening():
            if self._process.poll() is not None:
                raise RuntimeError(f"swtpm exited with {self._process.returncode}; see {self.directory / 'swtpm.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"swtpm did not listen on port {self.port}")
            time.sleep(0.05)
        self._relax_dictionary_attack_protection()
        return self

    def _where(self, argv: list[str]) -> list[str]:
        return self.enter(argv) if self.enter is not None else argv

    def _listening(self) -> bool:
        if self.enter is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False
        probe = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), timeout=0.5)"
        return (
            subprocess.run(self._where([sys.executable, "-c", probe]), capture_output=True, timeout=30).returncode == 0
        )

    def command(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A tpm2-tools command against this TPM (inside its node when it runs in one)."""
        env = dict(os.environ, TPM2TOOLS_TCTI=self.tcti)
        return subprocess.run(self._where(list(argv)), env=env, capture_output=True, text=True, timeout=timeout)

    def _relax_dictionary_attack_protection(self) -> None:
        """Failed activations (the bad-input tests) count as authorization failures; a test TPM must not
        lock itself out (0x921, "DA lockout mode"). Lockout auth is empty on a fresh swtpm."""
        for argv in (
            ["tpm2_dictionarylockout", "--clear-lockout"],
            ["tpm2_dictionarylockout", "--setup-parameters", "--max-tries=1000", "--recovery-time=1",
             "--lockout-recovery-time=1"],
        ):  # fmt: skip
            done = self.command(argv)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop(process, grace=5)

    def reboot(self) -> None:
        """Power-cycle: the same TPM (seeds, NV, EK) with PCRs back to their reset values."""
        self.stop()
        self.start()

    def __enter__(self) -> SoftwareTpm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
