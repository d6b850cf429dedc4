# Everything is set up from the project's own files: `make test` on a fresh clone is enough.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test unit lint bench clean

# The product with its test extras, and the development kit (devkit/, a distribution of its own).
$(STAMP): pyproject.toml devkit/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./devkit
	touch $(STAMP)

# Everything the end-to-end tests run on, built here: the control plane, the real nodes, the TPM tools,
# helm, the trustgate image (`make image`; the install tests build their own two tags from the tree), and
# the encrypted-image cluster's registry and layer decoder.
test: $(STAMP) controlplane nodes tpm-tools image helm registry-tools layer-decoder
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest -m "not e2e"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP) controlplane
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache

# A real control plane (built once from the Go module proxy, cached in ~/.cache/trustgate) with trustgate.
.PHONY: controlplane nodes tpm-tools registry-tools layer-decoder dev-up dev-down dev-encrypted demo
# Debian's swtpm and tpm2-tools: the emulated TPMs of the attestation tests (needs root and apt).
tpm-tools:
	bash agent/install-tpm-tools.sh

controlplane:
	bash devkit/controlplane/build.sh

# Real worker nodes: kubelet and kube-proxy (after the control plane, which shares their build), containerd,
# Debian's runc and CNI plugins, the pause and busybox images (cached in ~/.cache/trustgate; needs root).
nodes: controlplane
	bash devkit/nodes/build.sh

# Encrypted images: Debian's docker-registry (the local registry of the e2e cluster; needs root and apt) and
# trustgate-layer-decoder, containerd's stream processor (Go, cached in ~/.cache/trustgate; about 70 s cold).
registry-tools:
	command -v docker-registry >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry; }

layer-decoder:
	bash keyprovider/build-decoder.sh

dev-up: $(STAMP) controlplane
	$(BIN)/python -m devkit.devstack up

# Encrypted images on two real nodes (local registry, key broker, emulated TPMs) until Ctrl-C; needs root.
dev-encrypted: $(STAMP) controlplane registry-tools layer-decoder
	$(BIN)/python -m devkit.encrypted .dev/encrypted

dev-down: $(STAMP)
	$(BIN)/python -m devkit.devstack down

# Two real nodes with emulated TPMs, trustgate installed with helm from the image, and its story told on
# them (needs root); DEMO_KEEP=1 leaves the cluster up until Ctrl-C.
demo: $(STAMP) controlplane nodes tpm-tools image helm
	$(BIN)/python -m devkit.demo $(if $(DEMO_KEEP),--keep)

# The trustgate OCI image, built without a container daemon: build/trustgate-image.oci.tar, tagged
# trustgate:<pyproject's version> or trustgate:$(TAG) (make image TAG=0.1.1). Needs root.
.PHONY: image image-tools image-lock helm
image-tools:
	bash image/install-build-tools.sh

image: image-tools
	PYTHON=$(PYTHON) bash image/build.sh $(if $(TAG),--tag $(TAG))

# Regenerate image/*.lock (UPGRADE=1: newest versions of the Python packages too); commit them.
image-lock: image-tools
	PYTHON=$(PYTHON) bash image/lock.sh $(if $(UPGRADE),--upgrade)

# helm built from the Go module proxy (tools/helm/go.mod), cached in ~/.cache/trustgate.
helm:
	bash tools/helm/build.sh
