"""Development tooling that runs real infrastructure (worker nodes) on one machine."""
