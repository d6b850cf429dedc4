#!/usr/bin/env bash
# Debian's tools for the image build and its tests: mmdebstrap (the root filesystem; mmtarfilter),
# umoci (the OCI layout), skopeo (reads the archive back), runc (runs the image in the tests), and
# the archive keyring apt checks bookworm with. Idempotent; needs root.
set -euo pipefail
needed=()
for tool in mmdebstrap mmtarfilter umoci skopeo runc; do
    command -v "$tool" >/dev/null 2>&1 || needed+=("$tool")
done
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || needed+=(debian-archive-keyring)
if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends mmdebstrap umoci skopeo runc debian-archive-keyring
