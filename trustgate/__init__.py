"""trustgate: keep trust-requiring Kubernetes workloads on hosts with a verified boot-chain trust report."""
