//! `status.steering`: the commands people gave a canary from the command line (`flaggit
//! promote`, `rollback`, `pause`, `resume`, `retry`), as the controller judged them, and what
//! they hold for the release in progress when it has no release pull request.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::PullRequestApproval;

/// What the command line said to this canary's current release.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SteeringStatus {
    /// The release the approvals, pause and rollback below are about (its
    /// `lastAppliedSpec`); a new release starts without them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// Gates approved with `flaggit promote`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<PullRequestApproval>,
    /// Set by `flaggit pause`, cleared by `flaggit resume`: every gate stays closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// Why the release is to be rolled back (`flaggit rollback`), naming who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// Commands judged, accepted or refused, oldest first (the last 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<SteeringCommand>,
    /// Commands judged in all, including those dropped from `commands`.
    #[serde(default)]
    pub judged_commands: i64,
    /// Commands already written into a record's trailers.
    #[serde(default)]
    pub recorded_commands: i64,
}

/// One command from the command line and the verdict on it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SteeringCommand {
    /// The request it came in (a CertificateSigningRequest's name): judged once.
    pub request: String,
    /// Who asked, as the API server authenticated them.
    pub user: String,
    /// `promote`, `rollback`, `pause`, `resume` or `retry`.
    pub command: String,
    pub accepted: bool,
    /// What it did, or why it was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    pub at: String,
}
