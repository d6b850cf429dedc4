"""Configuration files of a node's containerd, CNI network, kubelet and kube-proxy.

Every path a component would otherwise take from its defaults (``/var/lib/...``, ``/run/...``,
``/etc/cni/net.d``) is set to the node's own directory, so two nodes on one machine share
nothing but the kernel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from devkit.paths import Under

#: The kube-proxy mode: nftables is GA since 1.33; this kernel has nf_tables and NAT built in.
PROXY_MODE = "nftables"


@dataclass(frozen=True)
class NodePaths:
    """A node's directories and sockets, all under ``root``."""

    root: Path

    containerd_root = Under("containerd", "root")
    containerd_state = Under("containerd", "state")
    containerd_socket = Under("containerd", "containerd.sock")
    containerd_config = Under("containerd", "config.toml")
    runc_root = Under("containerd", "runc")
    cni_conf_dir = Under("cni", "net.d")
    cni_ipam_dir = Under("cni", "ipam")
    kubelet_root = Under("kubelet")
    kubelet_config = Under("kubelet-config.yaml")
    pod_logs = Under("pod-logs")
    resolv_conf = Under("resolv.conf")
    kube_proxy_config = Under("kube-proxy-config.yaml")
    logs = Under("logs")
    #: The node's ocicrypt key-provider configuration (read by the layer decoder at every decryption).
    keyprovider_config = Under("ocicrypt-keyprovider.json")

    def make(self) -> None:
        for d in (
            self.containerd_root,
            self.containerd_state,
            self.runc_root,
            self.cni_conf_dir,
            self.cni_ipam_dir,
            self.kubelet_root,
            self.pod_logs,
            self.logs,
            self.root / "manifests",
        ):
            d.mkdir(parents=True, exist_ok=True)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass(frozen=True)
class Decryption:
    """How a node's containerd decrypts encrypted layers: ``decoder`` is the stream processor
    (trustgate-layer-decoder), and the key providers are in the node's ``keyprovider_config``."""

    decoder: Path


ENCRYPTED_LAYERS = {
    "io.containerd.ocicrypt.decoder.v1.tar.gzip": (
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    "io.containerd.ocicrypt.decoder.v1.tar": (
        "application/vnd.oci.image.layer.v1.tar+encrypted",
        "application/vnd.oci.image.layer.v1.tar",
    ),
}


def _decryption(paths: NodePaths, decryption: Decryption | None) -> str:
    """The stream processors of containerd's default configuration, pointed at the node's decoder and
    key-provider configuration. The ids are the ones imgcrypt's CRI payload is addressed to."""
    if decryption is None:
        return ""
    q = _toml_str
    env = q(f"OCICRYPT_KEYPROVIDER_CONFIG={paths.keyprovider_config}")
    return "".join(
        f"""
[stream_processors.{q(name)}]
  accepts = [{q(accepts)}]
  returns = {q(returns)}
  path = {q(str(decryption.decoder))}
  args = []
  env = [{env}]
"""
        for name, (accepts, returns) in ENCRYPTED_LAYERS.items()
    )


def containerd_config(
    paths: NodePaths,
    runc: Path,
    cni_bin_dir: Path,
    sandbox_image: str,
    decryption: Decryption | None = None,
    registry_config_dir: Path | None = None,
) -> str:
    """containerd 2.4 (config version 4) with only the CRI, a runc shim and overlayfs.

    Plugins that use fixed host-wide paths (NRI's socket, the opt directory) are disabled, as
    are snapshotters that need tools or devices this machine lacks. Network namespaces of pods
    are mounted under the node's state directory, not in the host's ``/run/netns``.

    With ``decryption``, encrypted layers go through its decoder. The CRI plugin then pulls with
    containerd's local pull (``use_local_image_pull``): only that path hands the decoder imgcrypt's
    payload (``image_decryption.key_model = "node"``, the default); the transfer service does not.
    ``registry_config_dir`` is a ``hosts.toml`` tree (``<host:port>/hosts.toml``) for registries.
    """
    disabled = [
        "io.containerd.nri.v1.nri",
        "io.containerd.internal.v1.opt",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.blockfile",
        "io.containerd.snapshotter.v1.erofs",
        "io.containerd.differ.v1.erofs",
        "io.containerd.mount-handler.v1.erofs",
        "io.containerd.image-verifier.v1.bindir",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
    ]
    q = _toml_str
    registry = (
        f"\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = {q(str(registry_config_dir))}\n"
        if registry_config_dir is not None
        else ""
    )
    decrypting = (
        "  use_local_image_pull = true\n\n"
        "[plugins.'io.containerd.cri.v1.images'.image_decryption]\n  key_model = 'node'\n"
        if decryption is not None
        else ""
    )
    return f"""\
version = 4
root = {q(str(paths.containerd_root))}
state = {q(str(paths.containerd_state))}
imports = []
disabled_plugins = [{", ".join(q(p) for p in disabled)}]

[plugins.'io.containerd.server.v1.grpc']
  address = {q(str(paths.containerd_socket))}

[plugins.'io.containerd.server.v1.ttrpc']
  address = {q(str(paths.containerd_socket) + ".ttrpc")}

[plugins.'io.containerd.server.v1.debug']
  address = ""

[plugins.'io.containerd.server.v1.metrics']
  address = ""

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
{decrypting}{registry}
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = {q(sandbox_image)}

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which a sandboxed root may lack (as on the
  # test machines): keep sandboxes and containers at or above containerd's own score.
  restrict_oom_score_adj = true
  cdi_spec_dirs = []

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = {q(str(runc))}
  Root = {q(str(paths.runc_root))}
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [{q(str(cni_bin_dir))}]
  conf_dir = {q(str(paths.cni_conf_dir))}

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
{_decryption(paths, decryption)}"""


def cni_conflist(paths: NodePaths, pod_cidr: str) -> str:
    """Debian's plugins: a ``cni0`` bridge as the pods' gateway, host-local IPAM, portmap.

    No masquerading: pod addresses are routed (the host routes each node's pod CIDR).
    """
    conf = {
        "cniVersion": "1.0.0",
        "name": "trustgate",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


@dataclass(frozen=True)
class KubeletSettings:
    """What differs between nodes in their KubeletConfiguration."""

    node_ip: str
    pod_cidr: str
    cgroup_root: str
    ca_file: Path
    tls_cert_file: Path
    tls_key_file: Path
    cluster_dns: tuple[str, ...] = ()  # the stack's DNS for Services (devkit/nodes/dns.py)


def kubelet_config(paths: NodePaths, s: KubeletSettings) -> str:
    """A KubeletConfiguration for a cgroup v1 host without systemd.

    Authentication is by client certificates of the cluster CA (the apiserver's kubelet
    client certificate) with authorization by SubjectAccessReview, as kubeadm sets it up;
    the read-only port is off. The serving certificate is issued by the cluster CA so the
    apiserver can verify it.
    """
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": s.cgroup_root,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "address": s.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(s.tls_cert_file),
        "tlsPrivateKeyFile": str(s.tls_key_file),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(s.ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "imageServiceEndpoint": f"unix://{paths.containerd_socket}",
        "podLogsDir": str(paths.pod_logs),
        "staticPodPath": str(paths.root / "manifests"),
        "podCIDR": s.pod_cidr,
        "resolvConf": str(paths.resolv_conf),
        "clusterDomain": "cluster.local",
        **({"clusterDNS": list(s.cluster_dns)} if s.cluster_dns else {}),
        "failSwapOn": False,
        "serializeImagePulls": False,
        "registerNode": True,
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "localStorageCapacityIsolation": True,
        "maxPods": 110,
        "protectKernelDefaults": False,
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def kube_proxy_config(
    kubeconfig: Path, hostname: str, bind_address: str, cluster_cidr: str, node_port_addresses: list[str]
) -> str:
    """kube-proxy in nftables mode that leaves the machine-wide conntrack sysctls alone.

    ``conntrack.maxPerCore: 0`` and zero timeouts mean "do not change": a kube-proxy in a node
    namespace may not set ``nf_conntrack_max`` at all, and the one on the host should not.
    """
    cfg = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": PROXY_MODE,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": hostname,
        "bindAddress": bind_address,
        "healthzBindAddress": f"{bind_address}:10256",
        "metricsBindAddress": f"{bind_address}:10249",
        "clusterCIDR": cluster_cidr,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": node_port_addresses,
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "syncPeriod": "30s",
        "minSyncPeriod": "0s",
    }
    return yaml.safe_dump(cfg, sort_keys=False)
