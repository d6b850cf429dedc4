"""trustgate's development kit: what the tests, the benchmarks and the demo run on, never shipped.

The real Kubernetes control plane (`devkit.controlplane`), the development stack with trustgate wired
in (`devkit.devstack`, `make dev-up`), the demo (`devkit.demo`, `make demo`), nodes with reports of
every kind (`devkit.fleet`), emulated TPMs and attested hosts (`devkit.swtpm`, `devkit.attested`), the
test PKI (`devkit.pki`), plain-data factories (`devkit.factories`), the WSGI apps gunicorn serves in
the serving tests and benchmarks (`devkit.admission_apps`, `devkit.extender_apps`, `devkit.authority_apps`),
and real worker nodes (kubelet, containerd, CNI, kube-proxy) in network namespaces (`devkit.nodes`).

It is a distribution of its own (devkit/pyproject.toml), installed editable for development only, and
imports no pytest: test policy (skips, failures, fixtures) stays in tests/.
"""
