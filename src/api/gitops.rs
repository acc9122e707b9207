//! `spec.gitops`: flaggit's own block — where a canary's rollouts are recorded in Git, and who
//! approves them. Every field is optional and falls back to the controller-wide settings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// Where this canary's rollouts are recorded in the GitOps config repo, and how its gates are
/// approved.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsSpec {
    /// The config repository that declares the target. Default the controller's
    /// `--git-url`, or the source Flux or Argo CD applied the target from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<GitRepositoryRef>,
    /// Path in the repository of the file (or directory) that declares the target, for
    /// example `apps/podinfo/deployment.yaml`. Default discovered from the Flux
    /// Kustomization or Argo CD Application that applied the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How records reach the repository: `commit` pushes them to the branch; `pull-request`
    /// opens a release pull request per revision and merges it on promotion. Default
    /// `commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<GitOpsMode>,
    /// Which records are written: `every-step` (default) or `transitions` (detection,
    /// promotion, rollback, approvals and off-boarding only), for busy repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordLevel>,
    /// Gates approved by comments on the release pull request (mode `pull-request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Approvals>,
    /// What happens when the repository cannot be written: `Continue` (default) keeps
    /// rolling out and keeps the records in the outbox until the push succeeds; `Block`
    /// holds the rollout at its current step until the record is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
}

/// A Git repository and the credentials to write to it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryRef {
    /// Clone URL: `https://...`, `ssh://git@host/org/repo.git` or `git@host:org/repo.git`.
    pub url: String,
    /// Branch the records and rollbacks are written to. Default `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A Secret in the Canary's namespace with the credentials: `username` and `password`
    /// (or a token as password) for HTTPS; `identity` (private key) and `known_hosts` for
    /// SSH. The same keys as a Flux GitRepository secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

// How records reach the repository.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GitOpsMode {
    /// Push a commit to the branch for every record.
    #[default]
    Commit,
    /// Open a release pull request per revision; steps are commits on its branch.
    PullRequest,
}

// Which records are written to Git.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RecordLevel {
    /// A commit for every analysis step as well as every transition.
    #[default]
    EveryStep,
    /// Commits for transitions only.
    Transitions,
}

// What happens when Git cannot be written.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Keep rolling out; records wait in the outbox.
    #[default]
    Continue,
    /// Hold the rollout until the record is pushed.
    Block,
}

/// Gates approved from the release pull request, and who may approve them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Approvals {
    /// Gates that wait for `/approve` on the pull request, beside any webhook gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Vec<ApprovalGate>>,
    /// Distinct approvers needed to open a gate. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub required: Option<i32>,
    /// Lowest repository permission that counts as an approver. Default `write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<RepositoryPermission>,
    /// Users who may approve whatever their repository permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
    /// Teams (`org/team-slug`) whose members may approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
    /// Let the author of the change approve their own release. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_approval: Option<bool>,
}

// Gates that can be bound to pull-request approval.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalGate {
    /// Before a new revision starts rolling out.
    ConfirmRollout,
    /// Before each traffic increase.
    ConfirmTrafficIncrease,
    /// Before the primary is updated.
    ConfirmPromotion,
}

// Repository permission levels, lowest first.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryPermission {
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}
