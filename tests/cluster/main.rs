//! Tests against a real Kubernetes API server (and controller-manager) started on loopback by
//! `scripts/control-plane.sh`. One binary, so one control plane serves every test.

mod fake_github;
mod git_remote;
mod kubelet;
mod metrics_app;
mod support;

mod alerts;
mod analysis;
mod crds;
mod dashboard;
mod forge_github;
mod gitops;
mod gitrepo;
mod grafana;
mod loadtester;
mod process;
mod provider_rollouts;
mod providers;
mod pull_requests;
mod rbac;
mod rollout;
mod router;
mod source;
mod traffic;
mod workload;
