//! Tests against a real Kubernetes API server (and controller-manager) started on loopback by
//! `scripts/control-plane.sh`. One binary, so one control plane serves every test.

mod fake_forge;
mod fake_gitea;
mod fake_github;
mod fake_gitlab;
mod git_remote;
mod kubelet;
mod metrics_app;
mod support;

mod alerts;
mod analysis;
mod approvals;
mod config_rollback;
mod crds;
mod dashboard;
mod fleet;
mod forge_flows;
mod forge_github;
mod gitops;
mod gitrepo;
mod grafana;
mod image;
mod loadtester;
mod process;
mod provider_rollouts;
mod providers;
mod pull_requests;
mod quickstart;
mod rbac;
mod review_failures;
mod rollout;
mod router;
mod signing;
mod source;
mod steer;
mod traffic;
mod workload;
