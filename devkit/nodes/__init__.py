"""Real Kubernetes worker nodes (containerd, kubelet, kube-proxy) side by side on one machine.

``build.sh`` builds and caches the binaries and images; :class:`~devkit.nodes.node.WorkerNode`
runs one node in its own namespaces against a running control plane; ``HostNetwork`` is the
bridge they share; ``HostProxy`` lets the host reach ClusterIPs.
"""
