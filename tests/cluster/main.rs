//! Tests against a real Kubernetes API server (and controller-manager) started on loopback by
//! `scripts/control-plane.sh`. One binary, so one control plane serves every test.

mod support;

mod crds;
mod process;
mod rbac;
mod router;
