//! Tests against a real Kubernetes API server (and controller-manager) started on loopback by
//! `scripts/control-plane.sh`. One binary, so one control plane serves every test.

mod fake_github;
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
mod dora;
mod fleet;
mod forge_github;
mod gitops;
mod gitrepo;
mod grafana;
mod image;
mod keda;
mod late_crds;
mod loadtester;
mod preview;
mod process;
mod provider_rollouts;
mod provider_rollouts_ingress;
mod provider_rollouts_mesh;
mod provider_support;
mod providers;
mod pull_requests;
mod quickstart;
mod rbac;
mod refusal;
mod review_failures;
mod review_policy;
mod rollout;
mod router;
mod service_target;
mod signing;
mod source;
mod steer;
mod traffic;
mod workload;
