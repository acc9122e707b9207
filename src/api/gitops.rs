//! `spec.gitops`: flaggit's own block — where a canary's rollouts are recorded in Git, and who
//! approves them. Every field is optional and falls back to the controller-wide settings.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// Where this canary's rollouts are recorded in the GitOps config repo, and how its gates are
/// approved.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsSpec {
    /// The config repository that declares the target. Default the source Flux or Argo CD
    /// applied the target from, else the controller's `--git-url`. Allowed only if it is
    /// that discovered repository or a `--git-allow` rule grants it to this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<GitRepositoryRef>,
    /// Path in the repository of the file (or directory) that declares the target, for
    /// example `apps/podinfo/deployment.yaml`. Default discovered from the Flux
    /// Kustomization or Argo CD Application that applied the target. Allowed only under
    /// that discovered path (the whole `--git-url` repository) or under a `--git-allow` rule's path.
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
    /// How release pull requests end (mode `pull-request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestSettings>,
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
    /// Let the author of the change approve their own release. The authors are the authors
    /// of the config-repo commits that changed the canary's path since the last promotion,
    /// as the forge maps their e-mail to an account. A merge of the release pull request
    /// counts as the merger's `/approve`. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_approval: Option<bool>,
    /// Accept approvals although an author of the release is unknown: a commit whose e-mail
    /// belongs to no forge account, or no commit found for the revision. Default false: no
    /// approval counts then, since it could be the author's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unknown_author: Option<bool>,
    /// Take who may approve from an ownership file in the config repository, read at the
    /// release's base commit (the last promotion), so a release cannot change its own
    /// approvers: only owners of the files the release changed may `/approve`, with at
    /// least one approval from the owners of each changed file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<OwnersSource>,
    /// How long an approval counts, e.g. `24h` or `90m`: an older one is void and must be
    /// given again. Default: approvals do not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// An ownership file in the config repository.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnersSource {
    /// `codeowners`: GitHub/GitLab CODEOWNERS syntax, read from `.github/CODEOWNERS`,
    /// `CODEOWNERS` or `docs/CODEOWNERS` (the first found); the last matching pattern
    /// wins. `owners`: Kubernetes OWNERS files (`approvers`, `options.no_parent_owners`),
    /// the nearest one up the tree from each changed file and its parents.
    pub file: OwnersFileKind,
    /// Where the file is instead: the CODEOWNERS path, or the OWNERS file name. Default as
    /// above (`OWNERS` for `owners`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Distinct owners who must approve, whichever files they own. Default 1. At least one
    /// owner of each changed file must approve besides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_approvals: Option<i32>,
}

// The syntax of an ownership file.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OwnersFileKind {
    /// GitHub/GitLab CODEOWNERS.
    #[default]
    Codeowners,
    /// Kubernetes OWNERS files.
    Owners,
}

/// How a release pull request is merged on promotion, and where a rollback's revert goes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestSettings {
    /// `merge` (default: a merge commit, so `git log` keeps every step), `squash` or
    /// `rebase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_method: Option<MergeMethod>,
    /// Where a rollback writes the previous version back: `direct` (default) commits the
    /// revert to the base branch at once, so Git names the serving version again;
    /// `pull-request` opens a revert pull request for a person to merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<RevertMode>,
    /// The forge the repository lives on: `github`, `gitlab` or `gitea` (Gitea and
    /// Forgejo). Default told from the repository URL: `github.com`, `gitlab.com`,
    /// `codeberg.org` and the hosts of the controller's `--forge-host` rules; else GitHub.
    /// The forge's API URL and token are the controller's (`--github-secret`,
    /// `--gitlab-secret`, `--gitea-secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeKind>,
}

// The code forges release pull requests can be opened on.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    /// GitHub or GitHub Enterprise Server.
    Github,
    /// GitLab (gitlab.com or self-managed): merge requests and notes.
    Gitlab,
    /// Gitea or Forgejo (Codeberg): pull requests and issue comments.
    Gitea,
}

impl ForgeKind {
    /// The name used in flags, fields and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
        }
    }
}

impl std::str::FromStr for ForgeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "github" => Ok(Self::Github),
            "gitlab" => Ok(Self::Gitlab),
            "gitea" | "forgejo" => Ok(Self::Gitea),
            other => Err(format!("{other:?} is not a forge: use github, gitlab or gitea")),
        }
    }
}

// How a release pull request is merged.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    /// A merge commit.
    #[default]
    Merge,
    /// One squashed commit.
    Squash,
    /// The step commits rebased onto the base branch.
    Rebase,
}

// Where a rollback's revert goes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RevertMode {
    /// Committed to the base branch.
    #[default]
    Direct,
    /// Proposed in its own pull request.
    PullRequest,
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

/// The Git record of a canary, as the controller last saw it. The pending records are the
/// outbox: they are written here in the same status update as the rollout step they
/// describe, so a record survives a controller restart and reaches Git exactly once.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsStatus {
    /// The repository and branch records go to (`url#branch`), when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The file or directory that declares the target, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Why records are not written (no repository found, a source that is not Git ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Sequence number of the last record made for this canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_record: Option<i64>,
    /// Sequence number of the last record that reached the remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_record: Option<i64>,
    /// The commit on the remote that holds the last pushed record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<String>,
    /// When a push last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_time: Option<String>,
    /// Why the last push failed; cleared by the next successful one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The number of the off-boarding record, once the Canary is being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_boarding_record: Option<i64>,
    /// Records not yet on the remote (the outbox), oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<PendingRecord>>,
    /// The release pull request of the current revision (mode `pull-request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<Box<PullRequestStatus>>,
    /// What its reviewers said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Box<ReviewStatus>>,
}

/// A release pull request, as the Git writer opened, merged or closed it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestStatus {
    pub number: i64,
    /// The page of the pull request.
    pub url: String,
    /// The release branch, `flaggit/<namespace>/<name>/<revision>`.
    pub branch: String,
    /// The target revision the pull request releases.
    pub revision: String,
    /// The version people know the release by (the image tag).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `open`, `merged` or `closed`.
    pub state: String,
    /// Who opened it (flaggit's own account).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// Forge logins of the authors of the config-repo commits that introduced the revision
    /// on the canary's path: they may not approve their own release unless allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Those commits whose author has no forge account (`Name <e-mail> (commit)`). With any,
    /// or with no author at all (no commit found), the author is unknown and approvals wait
    /// unless `approvals.allowUnknownAuthor`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_authors: Vec<String>,
    /// When the pull request was opened, as the forge stamped it: commands written before
    /// (allowing for clock skew) are answered but never count.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub opened_at: String,
    /// `merge` or `close` once flaggit itself set out to end the pull request. Written
    /// before the forge is asked, so a merge or close flaggit made is never taken for a
    /// person's decision, even across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<String>,
    /// The release-branch commit flaggit pushed last: a branch head that is not flaggit's
    /// is someone else's push, which voids the approvals given before it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub head: String,
    /// A release-branch head someone other than flaggit pushed, found by the Git writer
    /// when it built its next record on it: the approvals given before are void.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub foreign_head: String,
    /// Authors of the change that are bots (Flux image automation, Renovate, Dependabot, a
    /// `[bot]` account): the release then needs at least one approval from a person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bots: Vec<String>,
    /// The commits that brought the revision (`short-sha author`), as the description names
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
    /// Who owns what the release changed, from `approvals.owners`, read at the base commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<ReleaseOwners>,
}

/// The owners of the files a release changed, read from the ownership file at the release's
/// base commit (what was promoted), never from the release itself.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseOwners {
    /// The file read (`.github/CODEOWNERS`, `apps/OWNERS`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// The commit it was read at.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// One group per distinct set of owners: each needs an approval from one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<OwnerGroup>,
    /// Why the owners are not known (a malformed file, with its line; no file; a changed
    /// file nobody owns): no approval counts until it is fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Owners who must approve for some of the changed files.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerGroup {
    /// The rule that named them (a CODEOWNERS pattern, an OWNERS file).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    /// Changed files they own (the first few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// `user`, `org/team` or an e-mail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Approvals needed from this group (a GitLab section's `[Section][2]`). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<i32>,
}

/// What the reviewers of the release pull request said, as the controller judged it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewStatus {
    /// The pull request this review belongs to (0 while the revision has none); a new pull
    /// request starts a new review.
    pub number: i64,
    /// The revision this review belongs to: a review, its approvals and its pause and
    /// rollback requests count for this revision and pull request only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// Why the review cannot act now, e.g. the revision has no release pull request yet, so
    /// its gates bound to `/approve` stay closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The status comment the controller keeps up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_comment: Option<i64>,
    /// A digest of the status comment as last written, to skip edits that change nothing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_digest: String,
    /// The ETag of the last comment list, for conditional polling.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comments_etag: String,
    /// The newest comment judged; later comments are new.
    #[serde(default)]
    pub last_comment: i64,
    /// When the newest comment judged was written: polls ask only for comments written or
    /// edited since (RFC 3339), so a long pull request is not read whole every time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments_since: Option<String>,
    /// The newest review judged.
    #[serde(default)]
    pub last_review: i64,
    /// Approvals given, per gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<PullRequestApproval>,
    /// Commands judged, accepted or refused, oldest first (the last 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<PullRequestCommand>,
    /// Commands already written into a record's trailers (counted from the first judged).
    #[serde(default)]
    pub recorded_commands: i64,
    /// Commands judged in all, including those dropped from `commands`.
    #[serde(default)]
    pub judged_commands: i64,
    /// Set by `/pause`, cleared by `/resume`: every gate stays closed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Why the release is to be rolled back: `/rollback`, or a person closed the pull
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// Who merged the pull request when a person did: the promotion is approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_by: Option<String>,
    /// Why the review cannot be read now (rate limit, credentials); cleared when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The analysis steps of this release so far (the last 50), for the status comment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ReviewStep>,
    /// Answers to commands already judged that are still to be given on the pull request
    /// (retried until the forge takes them; the command is never judged twice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<PendingAnswer>,
    /// The release-branch head the approvals are bound to: flaggit's own pushes move it and
    /// keep them, anyone else's push voids the approvals given before it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub head: String,
    /// The last foreign release-branch head the approvals were voided for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub voided_for: String,
    /// Approvals that no longer count and why (a foreign push, expiry, a new revision), for
    /// the status comment (the last 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voided: Vec<VoidedApproval>,
}

/// An approval that was voided.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VoidedApproval {
    pub user: String,
    pub gate: String,
    pub reason: String,
    /// When it was voided (RFC 3339).
    pub at: String,
}

/// What the controller still has to say on the pull request about a judged command.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingAnswer {
    /// What the answer is about (`comment-<id>`, `review-<id>`, `close-<time>`): the reply
    /// carries it as a hidden marker, so a retried reply whose first attempt was lost is not
    /// posted twice.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The comment to react to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<i64>,
    /// The reaction: `+1`, `-1` or `confused`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reaction: String,
    /// The reply to post.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reply: String,
    /// Reopen the pull request: a person closed it without the right to roll back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reopen: bool,
}

/// One analysis step as the status comment shows it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewStep {
    /// The ledger record number.
    pub record: i64,
    pub time: String,
    #[serde(default)]
    pub weight: i32,
    #[serde(default)]
    pub iteration: i32,
    #[serde(default)]
    pub failed_checks: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<RecordedCheck>,
}

/// An approval of one gate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestApproval {
    /// `confirm-rollout`, `confirm-traffic-increase` or `confirm-promotion`.
    pub gate: String,
    pub user: String,
    /// The canary weight when given: a traffic-increase approval counts for one step.
    #[serde(default)]
    pub weight: i32,
    pub at: String,
    /// Where it was given: `comment/<id>`, `review/<id>` or `merge`. It stops counting when
    /// that comment is deleted or edited, that review dismissed, or the user loses the right.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The revision it approved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// The release-branch head it saw: a push by anyone but flaggit after it voids it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub head: String,
    /// The owner groups (`pullRequest.owners.groups`, by index) the approver belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<i32>,
}

/// A command said on the release pull request, and what came of it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestCommand {
    pub user: String,
    /// The command as understood, e.g. `/approve`.
    pub command: String,
    pub accepted: bool,
    /// Why it was refused, or what it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    pub at: String,
}

/// One rollout record waiting to be pushed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingRecord {
    /// Sequence number within this canary; the ledger remembers the last one applied, which
    /// makes writing a record twice impossible.
    pub seq: i64,
    /// What happened: `Initialized`, `Detected`, `Step`, `Promoted`, `RolledBack` ...
    pub kind: String,
    /// The target revision the record is about.
    pub revision: String,
    pub phase: String,
    #[serde(default)]
    pub weight: i32,
    #[serde(default)]
    pub iteration: i32,
    #[serde(default)]
    pub failed_checks: i32,
    /// The metric checks of this step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<RecordedCheck>,
    /// Why: the rollback reason, the gate that holds the release, who approved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the controller made the record (RFC 3339).
    pub time: String,
    /// The target's images (container -> image) at this record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The primary's images when the record was made: what a rollback writes back to Git.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primary_images: BTreeMap<String, String>,
    /// Checksums of the tracked ConfigMaps and Secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
    /// Checksums of the primary's copies of the tracked ConfigMaps and Secrets when the record
    /// was made (rollbacks): a ConfigMap that differs is written back to Git, a Secret that
    /// differs is named for a revert by hand.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primary_configs: BTreeMap<String, String>,
    /// Step records left out of the outbox while the remote was unreachable for long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elided: Option<i64>,
    /// Who approved the gate this record passed (`Flaggit-Approved-By` trailers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
    /// Commands said on the release pull request since the previous record
    /// (`Flaggit-Command` trailers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

/// A metric check as recorded in Git.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCheck {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub passed: bool,
}
