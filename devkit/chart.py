"""trustgate's Helm chart, rendered by the real helm (tools/helm builds it): what the dev stack applies.

The dev stack runs trustgate's services as local processes, but everything else it installs (CRDs,
RBAC, the webhook configurations the controller fills, kube-scheduler's extender configuration) is
taken from the chart, so that what the tests exercise is what an operator installs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "chart" / "trustgate"
HELM_GO_MOD = ROOT / "tools" / "helm" / "go.mod"
RBAC_KINDS = frozenset(
    {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
)


class ChartError(RuntimeError):
    """helm is missing or refused to render the chart."""


def helm_version() -> str:
    found = re.search(r"^require helm\.sh/helm/v3 (\S+)$", HELM_GO_MOD.read_text(), re.M)
    if found is None:
        raise ChartError(f"{HELM_GO_MOD} does not require helm.sh/helm/v3")
    return found.group(1)


def helm_binary() -> Path:
    """`TRUSTGATE_HELM`, else where `make helm` puts it (~/.cache/trustgate/helm-<version>/bin/helm)."""
    override = os.environ.get("TRUSTGATE_HELM")
    cache = Path(os.environ.get("TRUSTGATE_CACHE") or Path.home() / ".cache" / "trustgate")
    path = Path(override) if override else cache / f"helm-{helm_version()}" / "bin" / "helm"
    if not os.access(path, os.X_OK):
        raise ChartError(f"helm not found at {path}; build it with `make helm` (bash tools/helm/build.sh)")
    return path


def helm(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ChartError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def render(
    values: Mapping[str, Any],
    namespace: str = "trustgate-system",
    release: str = "trustgate",
    api_versions: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The chart's objects (without its CRDs) for these values, as `helm template` renders them."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(values, file)
        file.flush()
        extra = [f"--api-versions={v}" for v in api_versions]
        out = helm("template", release, str(CHART), f"--namespace={namespace}", f"--values={file.name}", *extra)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def crds() -> list[dict[str, Any]]:
    """The chart's CustomResourceDefinitions (crds/: helm installs them before anything else)."""
    files = sorted((CHART / "crds").glob("*.yaml"))
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(objects: Iterable[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def as_list(objects: Iterable[dict[str, Any]]) -> str:
    """Objects as one `kubectl apply -f -` input."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
