#!/usr/bin/env bash
# Debian's TPM tooling for the trust agent and the tests: tpm2-tools (what the agent runs against
# /dev/tpmrm0 or an emulator), swtpm and swtpm-tools (the emulated TPMs of the tests and the demo,
# with swtpm_setup/swtpm_localca for EK certificates; swtpm-tools pulls in gnutls-bin's certtool).
# Idempotent; needs root (CI and the dev machines run as root).
set -euo pipefail
needed=()
for tool in swtpm swtpm_setup swtpm_localca tpm2_createek tpm2_quote tpm2_activatecredential; do
    command -v "$tool" >/dev/null 2>&1 || needed+=("$tool")
done
if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends swtpm swtpm-tools tpm2-tools
