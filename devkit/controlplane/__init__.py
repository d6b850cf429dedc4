"""The real Kubernetes control plane for the tests, the dev stack and the benchmarks.

`binaries` finds (or builds, with `build.sh`) the upstream binaries; `controlplane` runs them
(`ControlPlane`) and registers API-only nodes (`create_node`); `kubeclient` is the minimal REST
client the harness drives it with; `processes` supervises the components across processes.
"""

from __future__ import annotations

from devkit.controlplane.binaries import BINARIES, cached_bin_dir, expected_bin_dir, find_binaries, k8s_version
from devkit.controlplane.controlplane import NOT_READY_TAINT_KEY, ControlPlane, Ports, create_node
from devkit.controlplane.errors import ControlPlaneError
from devkit.controlplane.kubeclient import KeepAliveClient, KubeAPIError, KubeClient, https_get, write_kubeconfig
from devkit.controlplane.processes import (
    COMPONENTS,
    free_port,
    free_ports,
    port_is_free,
    recorded_running,
    stop_recorded,
)

__all__ = [
    "BINARIES",
    "COMPONENTS",
    "NOT_READY_TAINT_KEY",
    "ControlPlane",
    "ControlPlaneError",
    "KeepAliveClient",
    "KubeAPIError",
    "KubeClient",
    "Ports",
    "cached_bin_dir",
    "create_node",
    "expected_bin_dir",
    "find_binaries",
    "free_port",
    "free_ports",
    "https_get",
    "k8s_version",
    "port_is_free",
    "recorded_running",
    "stop_recorded",
    "write_kubeconfig",
]
