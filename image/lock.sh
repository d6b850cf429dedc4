#!/usr/bin/env bash
# Regenerate the image's locks (make image-lock; commit what changes):
#   image/requirements.lock  pyproject.toml's runtime dependencies, with hashes (pip-compile)
#   image/pip.lock           the pip that installs them inside the image (image/pip.in)
#   image/tools.lock         the build's own Python tools (image/tools.in)
#   image/debian.lock        image/packages.txt resolved on image/debian.sources (mmdebstrap)
#
#   bash image/lock.sh [--upgrade]
# pip-compile keeps the current pins of what still resolves unless --upgrade; Debian's mirror
# serves only its current versions, so debian.lock is always resolved anew.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${HERE}/.."
TOOLS="$(bash "${HERE}/tools.sh" | tail -n1)"
compile() {
  CUSTOM_COMPILE_COMMAND="make image-lock" PIP_FIND_LINKS="" "${TOOLS}/bin/pip-compile" --quiet \
    --generate-hashes --strip-extras --no-emit-index-url "$@"
}
compile "$@" --output-file image/requirements.lock pyproject.toml
compile "$@" --allow-unsafe --output-file image/pip.lock image/pip.in
compile "$@" --allow-unsafe --output-file image/tools.lock image/tools.in
bash "${HERE}/rootfs.sh" --resolve
