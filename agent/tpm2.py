"""The TPM as the trust agent uses it: Debian's tpm2-tools, one subprocess per TPM command.

The TCTI comes from configuration: `device:/dev/tpmrm0` on a real host (the kernel's resource
manager), `swtpm:host=127.0.0.1,port=P` for an emulated TPM. Without a resource manager, objects
that the tools load stay in the TPM's few transient slots, so every operation starts and ends by
flushing transient objects and sessions (harmless under `/dev/tpmrm0`).

The EK is recreated from the endorsement seed with the standard template (`tpm2_createek -G rsa`,
the key its certificate certifies); the AK (restricted RSASSA-SHA256 signing key, child of the EK)
is created once and kept as its public and wrapped private parts in the agent's state directory, and
loaded under the EK with a PolicySecret(endorsement) session whenever it is needed.

The AK is created with `tpm2_create` and every algorithm spelled out (name algorithm SHA-256,
scheme RSASSA-SHA256, the restricted-signing attributes), not with `tpm2_createak`, whose name
algorithm is whatever that tool's version defaults to: the authority refuses SHA-1 anywhere, and
the agent checks the created key the same way before it keeps it.

The agent and the node's key provider (`trustgate-keyprovider`, which quotes with the same AK for
each image key it asks for) are separate processes on one TPM: a conversation holds an exclusive
`flock` on `tpm.lock` in the state directory, so that neither flushes the other's objects midway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

EK_CERT_NV_RSA = 0x01C00002  # TCG EK Credential Profile: RSA 2048 EK certificate
QUOTE_PCRS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 17, 18)  # the five levels (DESIGN.md)
DIGEST = 32  # SHA-256
AK_NAME_ALG = "sha256"
AK_KEY = "rsa2048:rsassa-sha256:null"  # key type : signing scheme-hash : no symmetric (a signing key)
AK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


class TpmCommandError(RuntimeError):
    pass


@dataclass(frozen=True)
class Quote:
    message: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    pcrs: dict[int, bytes]  # SHA-256 bank, as read with the quote


def der_length(data: bytes) -> int:
    """The length of the DER object at the start of `data` (NV indices are often padded)."""
    if len(data) < 2 or data[0] != 0x30:
        raise TpmCommandError("EK certificate in NV is not DER")
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def _check_ak(public: bytes) -> None:
    """The created AK is what the authority accepts (SHA-256 name, RSASSA-SHA256, restricted signing)."""
    from attestation import tpm

    try:
        ak = tpm.parse_public(public, what="AK public")
        tpm.check_attestation_key(ak)
    except tpm.TpmError as error:
        raise TpmCommandError(f"tpm2_create made an unusable attestation key: {error.reason}") from None
    if (ak.name_alg, ak.scheme) != (tpm.ALG_SHA256, (tpm.ALG_RSASSA, tpm.ALG_SHA256)):
        raise TpmCommandError("tpm2_create did not make an RSASSA-SHA256 key with a SHA-256 name")


class Tpm2Tools:
    def __init__(self, tcti: str, state_dir: str | Path, timeout: float = 30.0) -> None:
        self.tcti = tcti
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._thread_lock = threading.Lock()  # one TPM conversation at a time in this process

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One TPM conversation at a time: across this process's threads, and across processes that
        share the state directory (the agent and the key provider)."""
        with self._thread_lock, open(self.state_dir / "tpm.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- plumbing -------------------------------------------------------------------------

    def run(self, *argv: str, cwd: Path | None = None) -> bytes:
        env = dict(os.environ, TPM2TOOLS_TCTI=self.tcti)
        try:
            result = subprocess.run(list(argv), capture_output=True, env=env, cwd=cwd, timeout=self.timeout)
        except FileNotFoundError:
            raise TpmCommandError(f"{argv[0]} not found: install tpm2-tools") from None
        except subprocess.TimeoutExpired:
            raise TpmCommandError(f"{argv[0]} timed out after {self.timeout:.0f}s (TCTI {self.tcti})") from None
        if result.returncode != 0:
            error = result.stderr.decode(errors="replace").strip().splitlines()
            raise TpmCommandError(f"{' '.join(argv[:2])} failed: {' / '.join(error[-3:]) or result.returncode}")
        return result.stdout

    def flush(self) -> None:
        for kind in ("-t", "-s", "-l"):  # transient objects, loaded and saved sessions
            self.run("tpm2_flushcontext", kind)

    @property
    def ak_public_file(self) -> Path:
        return self.state_dir / "ak.pub"

    @property
    def ak_private_file(self) -> Path:
        return self.state_dir / "ak.priv"

    # --- what the agent needs ---------------------------------------------------------------

    def ek_certificate(self, index: int = EK_CERT_NV_RSA) -> bytes:
        with self._lock(), tempfile.TemporaryDirectory(prefix="tpm-") as tmp:
            out = Path(tmp) / "ek.der"
            self.run("tpm2_nvread", f"0x{index:08x}", "-C", "o", "-o", str(out))
            data = out.read_bytes()
        return data[: der_length(data)]

    def _create_ek(self, tmp: Path) -> None:
        self.run("tpm2_createek", "-c", str(tmp / "ek.ctx"), "-G", "rsa", "-u", str(tmp / "ek.pub"))

    def ek_public(self) -> bytes:
        """The EK's TPM2B_PUBLIC."""
        with self._lock(), tempfile.TemporaryDirectory(prefix="tpm-") as tmp:
            try:
                self.flush()
                self._create_ek(Path(tmp))
                return (Path(tmp) / "ek.pub").read_bytes()
            finally:
                self.flush()

    def ensure_ak(self, recreate: bool = False) -> bytes:
        """The AK's TPM2B_PUBLIC; creates the AK on first use (or when `recreate`)."""
        with self._lock():
            if recreate or not (self.ak_public_file.exists() and self.ak_private_file.exists()):
                with tempfile.TemporaryDirectory(prefix="tpm-") as name:
                    tmp = Path(name)
                    try:
                        self.flush()
                        self._create_ek(tmp)
                        self._policy_session(tmp)
                        self.run(
                            "tpm2_create",
                            "-C", str(tmp / "ek.ctx"),
                            "-P", f"session:{tmp / 'session.ctx'}",
                            "-g", AK_NAME_ALG,
                            "-G", AK_KEY,
                            "-a", AK_ATTRIBUTES,
                            "-u", str(tmp / "ak.pub"),
                            "-r", str(tmp / "ak.priv"),
                        )  # fmt: skip
                    finally:
                        self.flush()
                    _check_ak((tmp / "ak.pub").read_bytes())
                    for part in ("pub", "priv"):
                        target = self.state_dir / f"ak.{part}"
                        target.with_suffix(".tmp").write_bytes((tmp / f"ak.{part}").read_bytes())
                        os.replace(target.with_suffix(".tmp"), target)
            return self.ak_public_file.read_bytes()

    def _load_ak(self, tmp: Path) -> None:
        """EK and AK into the TPM (as `ek.ctx`, `ak.ctx` in `tmp`); the AK's parent is the EK."""
        self._create_ek(tmp)
        self._policy_session(tmp)
        self.run(
            "tpm2_load",
            "-C", str(tmp / "ek.ctx"),
            "-P", f"session:{tmp / 'session.ctx'}",
            "-u", str(self.ak_public_file),
            "-r", str(self.ak_private_file),
            "-c", str(tmp / "ak.ctx"),
        )  # fmt: skip
        self.flush()  # the saved contexts (ek.ctx, ak.ctx) stay loadable; the TPM has only 3 object slots

    def _policy_session(self, tmp: Path) -> None:
        """A policy session satisfying the EK's authPolicy: PolicySecret(TPM_RH_ENDORSEMENT)."""
        self.run("tpm2_startauthsession", "--policy-session", "-S", str(tmp / "session.ctx"))
        self.run("tpm2_policysecret", "-S", str(tmp / "session.ctx"), "-c", "e")

    def activate_credential(self, credential_file: bytes) -> bytes:
        """TPM2_ActivateCredential: recovers the secret the authority encrypted to this EK and AK."""
        with self._lock(), tempfile.TemporaryDirectory(prefix="tpm-") as name:
            tmp = Path(name)
            (tmp / "credential").write_bytes(credential_file)
            try:
                self.flush()
                self._load_ak(tmp)
                self._policy_session(tmp)
                self.run(
                    "tpm2_activatecredential",
                    "-c", str(tmp / "ak.ctx"),
                    "-C", str(tmp / "ek.ctx"),
                    "-i", str(tmp / "credential"),
                    "-o", str(tmp / "secret"),
                    "-P", f"session:{tmp / 'session.ctx'}",
                )  # fmt: skip
                return (tmp / "secret").read_bytes()
            finally:
                self.flush()

    def quote(self, nonce: bytes, pcrs: Sequence[int] = QUOTE_PCRS) -> Quote:
        """TPM2_Quote by the AK over the SHA-256 `pcrs`, qualified by `nonce`, with their values."""
        selection = "sha256:" + ",".join(str(p) for p in sorted(pcrs))
        with self._lock(), tempfile.TemporaryDirectory(prefix="tpm-") as name:
            tmp = Path(name)
            try:
                self.flush()
                self._load_ak(tmp)
                self.run(
                    "tpm2_quote",
                    "-c", str(tmp / "ak.ctx"),
                    "-l", selection,
                    "-q", nonce.hex(),
                    "-g", "sha256",
                    "-m", str(tmp / "quote.msg"),
                    "-s", str(tmp / "quote.sig"),
                    "-o", str(tmp / "quote.pcrs"),
                    "-F", "values",
                )  # fmt: skip
                values = (tmp / "quote.pcrs").read_bytes()
                message, signature = (tmp / "quote.msg").read_bytes(), (tmp / "quote.sig").read_bytes()
            finally:
                self.flush()
        ordered = sorted(pcrs)
        if len(values) != DIGEST * len(ordered):
            raise TpmCommandError(f"tpm2_quote returned {len(values)} bytes of PCR values for {len(ordered)} PCRs")
        return Quote(message, signature, {p: values[i * DIGEST : (i + 1) * DIGEST] for i, p in enumerate(ordered)})

    def pcr_read(self, pcrs: Sequence[int] = QUOTE_PCRS) -> dict[int, bytes]:
        ordered = sorted(pcrs)
        with self._lock(), tempfile.TemporaryDirectory(prefix="tpm-") as name:
            out = Path(name) / "pcrs"
            self.run("tpm2_pcrread", "sha256:" + ",".join(map(str, ordered)), "-o", str(out))
            values = out.read_bytes()
        return {p: values[i * DIGEST : (i + 1) * DIGEST] for i, p in enumerate(ordered)}

    def pcr_extend(self, pcr: int, value: bytes) -> None:
        """Extend a SHA-256 PCR (tests and demos: what a changed boot component does)."""
        with self._lock():
            self.run("tpm2_pcrextend", f"{pcr}:sha256={value.hex()}")
