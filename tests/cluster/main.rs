//! Tests against a real Kubernetes API server (and controller-manager) started on loopback by
//! `scripts/control-plane.sh`. One binary, so one control plane serves every test.

mod git_remote;
mod kubelet;
mod metrics_app;
mod support;

mod analysis;
mod crds;
mod gitops;
mod gitrepo;
mod process;
mod providers;
mod rbac;
mod rollout;
mod router;
mod source;
mod workload;
