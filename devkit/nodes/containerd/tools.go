//go:build tools

// Package tools pins the containerd commands that devkit/nodes/build.sh builds
// for the worker nodes: containerd itself, its runc shim and the ctr client.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
