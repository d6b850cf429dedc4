"""What a control plane needs, beyond API-only nodes, for real kubelets in network namespaces.

The launcher uses a control plane through the small :class:`ClusterAccess` protocol (which
``devkit.controlplane.ControlPlane`` satisfies), so it does not import
the test helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class CertFiles(Protocol):
    @property
    def cert_file(self) -> Path: ...

    @property
    def key_file(self) -> Path: ...


class RestClient(Protocol):
    def get(self, path: str, **params: str) -> Any: ...

    def merge_patch(self, path: str, patch: Any) -> Any: ...


class ClusterAccess(Protocol):
    """The parts of a control plane a node uses: its CA, its apiserver URL, issuing certificates."""

    @property
    def server(self) -> str: ...

    @property
    def ca(self) -> CertFiles: ...

    def issue_cert(
        self,
        common_name: str,
        sans: list[str],
        client: bool,
        server: bool,
        organization: str | None = None,
        name: str | None = None,
    ) -> CertFiles: ...

    def issue_kubeconfig(self, name: str, common_name: str, organization: str | None = None) -> Path: ...

    def client(self) -> RestClient: ...


def apiserver_args(cp: ClusterAccess) -> list[str]:
    """kube-apiserver flags for real nodes; issues its kubelet client certificate.

    - ``--kubelet-client-certificate``: logs, exec and port-forward go to the kubelet's port
      10250, which authenticates clients by the cluster CA (anonymous access is off);
      ``system:masters`` is what kubeadm gave this identity for years.
    - ``--kubelet-certificate-authority``: the kubelets' serving certificates are issued by
      the cluster CA, so the apiserver verifies them.
    - ``--kubelet-preferred-address-types=InternalIP``: a node's Hostname does not resolve.
    - ``--enable-aggregator-routing``: the apiserver reaches webhook and aggregated API
      Services at their endpoints (pod IPs, routed from the host) rather than relying on a
      ClusterIP path.
    """
    client = cp.issue_cert(
        "kube-apiserver-kubelet-client",
        [],
        client=True,
        server=False,
        organization="system:masters",
        name="kube-apiserver-kubelet-client",
    )
    return [
        f"--kubelet-client-certificate={client.cert_file}",
        f"--kubelet-client-key={client.key_file}",
        f"--kubelet-certificate-authority={cp.ca.cert_file}",
        "--kubelet-preferred-address-types=InternalIP",
        "--enable-aggregator-routing=true",
    ]


#: Long enough that API-only nodes (which renew no Lease) stay Ready for any test run, while
#: the node lifecycle controller still clears the not-ready taint of kubelets that report Ready.
MIXED_NODE_MONITOR_GRACE_PERIOD = "24h"


def controller_manager_args(mixed_with_api_only_nodes: bool) -> list[str]:
    """kube-controller-manager flags to pair with ``ControlPlane(node_lifecycle_controller=True)``.

    With API-only nodes in the same cluster, the grace period before a silent node is marked
    NotReady is stretched to :data:`MIXED_NODE_MONITOR_GRACE_PERIOD`; the price is that a
    real node that dies is noticed only after that long.
    """
    if mixed_with_api_only_nodes:
        return [f"--node-monitor-grace-period={MIXED_NODE_MONITOR_GRACE_PERIOD}"]
    return []
