//! The release pull request's side of a rollout (`spec.gitops.mode: pull-request`): reads what
//! reviewers said (comments, approving reviews, a person merging or closing the pull request),
//! judges each command, answers on the pull request, keeps the one status comment current,
//! and turns it all into gate answers. Everything it decides is kept in
//! `status.gitops.review`, so a restarted controller neither forgets an approval nor judges a
//! comment twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use crate::api::{
    ApprovalGate, Canary, CanaryPhase, CanaryStatus, PendingRecord, PullRequestApproval, PullRequestCommand,
    PullRequestStatus, ReviewStatus, ReviewStep,
};
use crate::forge::command::{self, Command};
use crate::forge::policy::{Policy, Verdict};
use crate::forge::{Comment, Forge, Polled, PullRequestState, Reaction, RepoId, ReviewState, render};
use crate::gitops::source::Source;
use crate::rollout::{Gate, GateAnswer};

/// Commands kept in the status (older ones are in the ledger's trailers).
const MAX_COMMANDS: usize = 50;
/// Steps kept for the status comment.
const MAX_STEPS: usize = 50;
/// Comments in one answer past which polls ask only for newer ones (half of GitHub's page).
const SINCE_AFTER: usize = 50;

/// Release pull requests of all canaries: the forge, and when each was last read.
pub(super) struct Reviews {
    pub forge: Arc<dyn Forge>,
    poll_every: Duration,
    polled: Mutex<HashMap<ObjectRef<Canary>, Instant>>,
    nudged: Mutex<HashSet<ObjectRef<Canary>>>,
}

impl Reviews {
    pub fn new(forge: Arc<dyn Forge>, poll_every: Duration) -> Self {
        Self {
            forge,
            poll_every,
            polled: Mutex::default(),
            nudged: Mutex::default(),
        }
    }

    /// How often an open release pull request is read when no webhook says it changed.
    pub fn poll_every(&self) -> Duration {
        self.poll_every
    }

    /// A webhook said the canary's pull request changed: read it at the next reconcile.
    pub fn nudge(&self, key: ObjectRef<Canary>) {
        lock(&self.nudged).insert(key);
    }

    /// Whether the pull request is to be read now (nudged, or not read for a poll interval),
    /// and if so, marks it read.
    fn due(&self, key: &ObjectRef<Canary>) -> bool {
        let nudged = lock(&self.nudged).remove(key);
        let mut polled = lock(&self.polled);
        let due = nudged || polled.get(key).is_none_or(|at| at.elapsed() >= self.poll_every);
        if due {
            polled.insert(key.clone(), Instant::now());
        }
        due
    }

    pub fn forget(&self, key: &ObjectRef<Canary>) {
        lock(&self.polled).remove(key);
        lock(&self.nudged).remove(key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("the review locks are never held across a panic")
}

/// Whether the canary's gates and records go through a release pull request.
pub(super) fn applies(canary: &Canary) -> bool {
    crate::gitops::release::wants_pull_requests(canary)
}

/// Reads the canary's open release pull request (when due) and updates `status.gitops.review`
/// with what reviewers said; answers them on the pull request. Forge failures are kept in
/// `review.lastError` and retried at the next reconcile: a comment is judged once, after it
/// could be judged.
pub(super) async fn sync(
    reviews: &Reviews,
    client: &Client,
    canary: &Canary,
    status: &mut CanaryStatus,
    source: &Source,
) {
    let phase = status.phase.unwrap_or(CanaryPhase::Initializing);
    let weight = status.canary_weight.unwrap_or(0);
    let Some(gitops) = status.gitops.as_mut() else {
        return;
    };
    let Some(pr) = gitops.pull_request.clone() else {
        return;
    };
    let review = gitops.review.get_or_insert_with(Default::default);
    if review.number != pr.number {
        *review = ReviewStatus {
            number: pr.number,
            ..Default::default()
        };
    }
    if !reviews.due(&ObjectRef::from_obj(canary)) {
        return;
    }
    let Some(repo) = RepoId::from_clone_url(&source.remote.url) else {
        review.last_error = Some("cannot tell owner/name from the repository URL".into());
        return;
    };
    let mut reader = Reader {
        forge: reviews.forge.as_ref(),
        client,
        canary,
        repo,
        pr: &pr,
        policy: policy(canary),
        phase,
        weight,
    };
    review.last_error = match reader.read(review).await {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(pull_request = %pr.url, error = %error, "cannot read the release pull request; retrying");
            Some(error)
        }
    };
    if let Err(error) = reader.update_status_comment(review).await {
        tracing::warn!(pull_request = %pr.url, error = %error, "cannot update the status comment; retrying");
        review.last_error.get_or_insert(error);
    }
}

fn policy(canary: &Canary) -> Policy {
    Policy::new(&approvals(canary).cloned().unwrap_or_default())
}

fn approvals(canary: &Canary) -> Option<&crate::api::Approvals> {
    canary.spec.gitops.as_ref()?.approvals.as_ref()
}

/// The gates bound to `/approve`.
fn bound_gates(canary: &Canary) -> Vec<ApprovalGate> {
    approvals(canary)
        .and_then(|a| a.gates.clone())
        .unwrap_or_default()
}

struct Reader<'a> {
    forge: &'a dyn Forge,
    client: &'a Client,
    canary: &'a Canary,
    repo: RepoId,
    pr: &'a PullRequestStatus,
    policy: Policy,
    phase: CanaryPhase,
    weight: i32,
}

impl Reader<'_> {
    /// An open pull request is read whole; an ended one only for its comments while the
    /// release failed (`/retry`), since nothing else said there can act.
    async fn read(&mut self, review: &mut ReviewStatus) -> Result<(), String> {
        if self.pr.state != "open" {
            if self.phase == CanaryPhase::Failed {
                self.read_comments(review).await?;
            }
            return Ok(());
        }
        let now = self
            .forge
            .pull_request(&self.repo, self.pr.number as u64)
            .await
            .map_err(|e| e.to_string())?;
        match now.state {
            PullRequestState::Merged if review.merged_by.is_none() => {
                let by = now.merged_by.unwrap_or_else(|| "someone".into());
                tracing::info!(pull_request = %self.pr.url, merged_by = %by, "release pull request merged by a person: promotion approved");
                review.merged_by = Some(by);
            }
            PullRequestState::Closed if review.rollback.is_none() => {
                tracing::info!(pull_request = %self.pr.url, "release pull request closed by a person: rolling back");
                review.rollback = Some("the release pull request was closed without merging".into());
            }
            _ => {}
        }
        self.read_comments(review).await?;
        self.read_reviews(review).await
    }

    async fn read_comments(&mut self, review: &mut ReviewStatus) -> Result<(), String> {
        let number = self.pr.number as u64;
        let etag = (!review.comments_etag.is_empty()).then_some(review.comments_etag.as_str());
        let after = review
            .comments_since
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        let polled = self
            .forge
            .comments(&self.repo, number, after, etag)
            .await
            .map_err(|e| e.to_string())?;
        let Polled::Changed { value, etag } = polled else {
            return Ok(());
        };
        let since = opened_at(self.pr);
        let seen = review.last_comment;
        for comment in value.iter().filter(|c| c.id as i64 > seen) {
            self.judge_comment(review, comment, since).await?;
            review.last_comment = comment.id as i64;
        }
        // Every comment of the answer is judged. Once the answer is long, the next polls ask
        // only for what is newer; a short one is kept, so its ETag keeps answering 304.
        if value.len() >= SINCE_AFTER
            && let Some(newest) = value.iter().map(|c| c.created_at).max()
            && after.is_none_or(|after| newest > after)
        {
            review.comments_since = Some(newest.to_string());
        }
        // Only once every comment of the list is judged: a failure reads the list again.
        review.comments_etag = etag.unwrap_or_default();
        Ok(())
    }

    async fn judge_comment(
        &mut self,
        review: &mut ReviewStatus,
        comment: &Comment,
        since: Timestamp,
    ) -> Result<(), String> {
        if render::is_status_comment(&comment.body) || comment.created_at < since {
            return Ok(());
        }
        let parsed = command::parse(&comment.body);
        if parsed.is_empty() {
            return Ok(());
        }
        let mut replies = Vec::new();
        let mut refused = false;
        if comment.updated_at > comment.created_at {
            // Edited before it was read: what was approved is not what is there now.
            for command in &parsed.commands {
                let reason = "edited comments do not count: write the command in a new comment";
                self.log(
                    review,
                    &comment.author,
                    command,
                    Err(reason.to_string()),
                    comment.created_at,
                );
                replies.push(render::refused_reply(&comment.author, command, reason));
            }
            refused = true;
        } else {
            for command in &parsed.commands {
                let outcome = self
                    .judge(review, &comment.author, command, comment.created_at)
                    .await?;
                match &outcome {
                    Ok(_) if matches!(command, Command::Status) => {
                        replies.push(render::status_reply(
                            &comment.author,
                            &release(self.canary, self.pr),
                            &status_view(self.canary, self.phase, self.weight, review),
                        ));
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        tracing::info!(user = %comment.author, command = %command, reason = %reason, "pull request command refused");
                        replies.push(render::refused_reply(&comment.author, command, reason));
                        refused = true;
                    }
                }
            }
        }
        if !parsed.unknown.is_empty() {
            replies.push(render::unknown_reply(&comment.author, &parsed.unknown));
        }
        let reaction = match (refused, parsed.commands.is_empty()) {
            (true, _) => Reaction::MinusOne,
            (false, true) => Reaction::Confused,
            (false, false) => Reaction::PlusOne,
        };
        let number = self.pr.number as u64;
        self.forge
            .react(&self.repo, comment.id, reaction)
            .await
            .map_err(|e| e.to_string())?;
        if !replies.is_empty() {
            self.forge
                .create_comment(&self.repo, number, &replies.join("\n\n"))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Approving reviews count as `/approve` from their author.
    async fn read_reviews(&mut self, review: &mut ReviewStatus) -> Result<(), String> {
        let number = self.pr.number as u64;
        let reviews = self
            .forge
            .reviews(&self.repo, number)
            .await
            .map_err(|e| e.to_string())?;
        let since = opened_at(self.pr);
        let seen = review.last_review;
        for submitted in reviews.iter().filter(|r| r.id as i64 > seen) {
            if submitted.state == ReviewState::Approved && submitted.submitted_at >= since {
                let command = Command::Approve;
                let outcome = self
                    .judge(review, &submitted.author, &command, submitted.submitted_at)
                    .await?;
                if let Err(reason) = &outcome {
                    let reply = render::refused_reply(&submitted.author, &command, reason);
                    self.forge
                        .create_comment(&self.repo, number, &reply)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            review.last_review = submitted.id as i64;
        }
        Ok(())
    }

    /// Authorizes `command` from `user`, carries it out if allowed, and logs the verdict.
    /// The outer Err is a forge failure (judge again later); the inner one a refusal.
    async fn judge(
        &mut self,
        review: &mut ReviewStatus,
        user: &str,
        command: &Command,
        at: Timestamp,
    ) -> Result<Result<String, String>, String> {
        let verdict = self
            .policy
            .authorize(self.forge, &self.repo, &self.pr.author, user, command)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = match verdict {
            Verdict::Accepted => self.apply(review, user, command, at).await,
            Verdict::Refused(reason) => Err(reason),
        };
        self.log(review, user, command, outcome.clone(), at);
        Ok(outcome)
    }

    /// Carries out an authorized command; Err says why it cannot be done now.
    async fn apply(
        &mut self,
        review: &mut ReviewStatus,
        user: &str,
        command: &Command,
        at: Timestamp,
    ) -> Result<String, String> {
        let analysing = matches!(
            self.phase,
            CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion
        );
        match command {
            Command::Approve => {
                let gates = bound_gates(self.canary);
                let Some(gate) = waiting_gate(self.phase, &gates) else {
                    return Err(
                        "no gate of this release waits for /approve: bind one in spec.gitops.approvals.gates"
                            .into(),
                    );
                };
                let gate_name = render::gate_name(gate).to_string();
                let weight = if gate == ApprovalGate::ConfirmTrafficIncrease {
                    self.weight
                } else {
                    0
                };
                let already = review
                    .approvals
                    .iter()
                    .any(|a| a.gate == gate_name && a.weight == weight && a.user.eq_ignore_ascii_case(user));
                if !already {
                    review.approvals.push(PullRequestApproval {
                        gate: gate_name.clone(),
                        user: user.to_string(),
                        weight,
                        at: at.to_string(),
                    });
                }
                let count = approvers(review, gate, weight).len();
                Ok(format!("approves {gate_name} ({count}/{})", self.policy.required))
            }
            Command::Rollback { reason } if analysing => {
                let why = reason
                    .as_deref()
                    .map(|r| command::sanitize(r, 200))
                    .unwrap_or_default();
                review.rollback = Some(if why.is_empty() {
                    format!("rollback requested by @{user} on the pull request")
                } else {
                    format!("rollback requested by @{user} on the pull request: {why}")
                });
                Ok("rolls back at the next analysis tick".into())
            }
            Command::Rollback { .. } => Err(format!("nothing to roll back: the release is {:?}", self.phase)),
            Command::Pause => {
                review.paused = true;
                Ok("holds the release at its current step".into())
            }
            Command::Resume => {
                review.paused = false;
                Ok("lets the release go on".into())
            }
            Command::Retry if self.phase == CanaryPhase::Failed => {
                let id = format!(
                    "{}/{}",
                    self.canary.namespace().unwrap_or_default(),
                    self.canary.name_any()
                );
                super::retry::request_retry(self.client.clone(), &id)
                    .await
                    .map_err(|e| format!("cannot request the retry: {e}"))?;
                Ok("runs the release again".into())
            }
            Command::Retry => Err(format!(
                "only a failed release can be retried: this one is {:?}",
                self.phase
            )),
            Command::Status => Ok("answered".into()),
        }
    }

    fn log(
        &self,
        review: &mut ReviewStatus,
        user: &str,
        command: &Command,
        outcome: Result<String, String>,
        at: Timestamp,
    ) {
        let (accepted, outcome) = match outcome {
            Ok(what) => (true, what),
            Err(why) => (false, why),
        };
        review.commands.push(PullRequestCommand {
            user: user.to_string(),
            command: command.to_string(),
            accepted,
            outcome,
            at: at.to_string(),
        });
        review.judged_commands += 1;
        let excess = review.commands.len().saturating_sub(MAX_COMMANDS);
        review.commands.drain(..excess);
    }

    /// Writes the status comment when what it shows changed.
    async fn update_status_comment(&self, review: &mut ReviewStatus) -> Result<(), String> {
        let body = render::status_comment(
            &release(self.canary, self.pr),
            &status_view(self.canary, self.phase, self.weight, review),
        );
        let digest = digest(&body);
        if digest == review.status_digest {
            return Ok(());
        }
        let number = self.pr.number as u64;
        match review.status_comment {
            Some(id) => self
                .forge
                .edit_comment(&self.repo, id as u64, &body)
                .await
                .map_err(|e| e.to_string())?,
            None => {
                let comment = self
                    .forge
                    .create_comment(&self.repo, number, &body)
                    .await
                    .map_err(|e| e.to_string())?;
                review.status_comment = Some(comment.id as i64);
            }
        }
        review.status_digest = digest;
        Ok(())
    }
}

fn digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..12])
}

fn opened_at(pr: &PullRequestStatus) -> Timestamp {
    pr.opened_at.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The gate an `/approve` given now opens: the one the release waits at, else the next bound
/// gate of this release (an approval given ahead, e.g. of the promotion during the analysis).
pub(super) fn waiting_gate(phase: CanaryPhase, bound: &[ApprovalGate]) -> Option<ApprovalGate> {
    let has = |g| bound.contains(&g).then_some(g);
    match phase {
        CanaryPhase::Waiting => has(ApprovalGate::ConfirmRollout),
        CanaryPhase::WaitingPromotion => has(ApprovalGate::ConfirmPromotion),
        CanaryPhase::Progressing => {
            has(ApprovalGate::ConfirmTrafficIncrease).or_else(|| has(ApprovalGate::ConfirmPromotion))
        }
        _ => has(ApprovalGate::ConfirmRollout)
            .or_else(|| has(ApprovalGate::ConfirmTrafficIncrease))
            .or_else(|| has(ApprovalGate::ConfirmPromotion)),
    }
}

/// Distinct users who approved `gate` (at `weight`, for traffic increases), in order.
fn approvers(review: &ReviewStatus, gate: ApprovalGate, weight: i32) -> Vec<String> {
    let name = render::gate_name(gate);
    let mut users: Vec<String> = Vec::new();
    for approval in review
        .approvals
        .iter()
        .filter(|a| a.gate == name && a.weight == weight)
    {
        if !users.iter().any(|u| u.eq_ignore_ascii_case(&approval.user)) {
            users.push(approval.user.clone());
        }
    }
    users
}

/// Combines the webhook answer of a gate with what the release pull request says: a gate
/// bound to `/approve` needs both; `/pause` closes every gate; `/rollback` or a closed pull
/// request opens the rollback gate; a person merging the pull request approves the promotion.
pub(super) fn answer_gate(canary: &Canary, status: &CanaryStatus, gate: Gate, answer: &mut GateAnswer) {
    let Some(gitops) = status.gitops.as_ref() else {
        return;
    };
    let (Some(pr), Some(review)) = (gitops.pull_request.as_ref(), gitops.review.as_ref()) else {
        return;
    };
    if review.number != pr.number {
        return;
    }
    let approval_gate = match gate {
        Gate::ConfirmRollout => ApprovalGate::ConfirmRollout,
        Gate::ConfirmTrafficIncrease => ApprovalGate::ConfirmTrafficIncrease,
        Gate::ConfirmPromotion => ApprovalGate::ConfirmPromotion,
        Gate::Rollback => {
            if let Some(reason) = &review.rollback
                && !answer.open
            {
                *answer = GateAnswer::open();
                answer.message = reason.clone();
            }
            return;
        }
        Gate::PreRollout => return,
    };
    if !answer.open {
        return;
    }
    if review.paused {
        *answer = GateAnswer::closed(format!("paused by /pause on {}", pr.url));
        return;
    }
    if !bound_gates(canary).contains(&approval_gate) {
        return;
    }
    if approval_gate == ApprovalGate::ConfirmPromotion && review.merged_by.is_some() {
        return;
    }
    let weight = if approval_gate == ApprovalGate::ConfirmTrafficIncrease {
        status.canary_weight.unwrap_or(0)
    } else {
        0
    };
    let have = approvers(review, approval_gate, weight).len();
    let required = policy(canary).required;
    if have < required {
        *answer = GateAnswer::closed(format!(
            "{} waits for {} more /approve on {}",
            render::gate_name(approval_gate),
            required - have,
            pr.url
        ));
    }
}

/// Adds to the records of a decision who approved the gate each one passed, and the commands
/// judged since the previous record; remembers the steps for the status comment.
pub(super) fn annotate(records: &mut [PendingRecord], old: &CanaryStatus, status: &mut CanaryStatus) {
    let Some(review) = status.gitops.as_mut().and_then(|g| g.review.as_mut()) else {
        return;
    };
    let old_weight = old.canary_weight.unwrap_or(0);
    for record in records.iter_mut() {
        let passed = match record.kind.as_str() {
            "Detected" => Some((ApprovalGate::ConfirmRollout, 0)),
            "Step" => Some((ApprovalGate::ConfirmTrafficIncrease, old_weight)),
            "Promoting" => Some((ApprovalGate::ConfirmPromotion, 0)),
            _ => None,
        };
        if let Some((gate, weight)) = passed {
            record.approved_by = approvers(review, gate, weight);
            if gate == ApprovalGate::ConfirmPromotion
                && let Some(by) = &review.merged_by
                && !record.approved_by.contains(by)
            {
                record.approved_by.push(by.clone());
            }
        }
        if matches!(
            record.kind.as_str(),
            "Step" | "Halted" | "Promoting" | "Promoted" | "RolledBack"
        ) {
            review.steps.push(ReviewStep {
                record: record.seq,
                time: record.time.clone(),
                weight: record.weight,
                iteration: record.iteration,
                failed_checks: record.failed_checks,
                checks: record.checks.clone(),
            });
        }
    }
    let excess = review.steps.len().saturating_sub(MAX_STEPS);
    review.steps.drain(..excess);
    let unrecorded = (review.judged_commands - review.recorded_commands).max(0) as usize;
    if unrecorded > 0
        && let Some(first) = records.first_mut()
    {
        let start = review.commands.len().saturating_sub(unrecorded);
        first.commands = review.commands[start..]
            .iter()
            .map(|c| {
                format!(
                    "@{} {} {}{}",
                    c.user,
                    c.command,
                    if c.accepted { "accepted" } else { "refused" },
                    if c.outcome.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", c.outcome)
                    }
                )
            })
            .collect();
        review.recorded_commands = review.judged_commands;
    }
}

/// What the pull request's description says of the release.
pub(super) fn release(canary: &Canary, pr: &PullRequestStatus) -> render::Release {
    crate::forge::plan::release(canary, &pr.revision, &pr.version)
}

fn status_view(canary: &Canary, phase: CanaryPhase, weight: i32, review: &ReviewStatus) -> render::Status {
    let gates = bound_gates(canary);
    let waiting = match phase {
        CanaryPhase::Waiting | CanaryPhase::WaitingPromotion | CanaryPhase::Progressing => {
            waiting_gate(phase, &gates).map(|gate| {
                let w = if gate == ApprovalGate::ConfirmTrafficIncrease {
                    weight
                } else {
                    0
                };
                render::Waiting::Approval {
                    gate,
                    approved_by: approvers(review, gate, w),
                    required: policy(canary).required,
                }
            })
        }
        _ => None,
    };
    render::Status {
        phase: format!("{phase:?}"),
        steps: review
            .steps
            .iter()
            .map(|s| render::Step {
                time: s.time.parse().unwrap_or(Timestamp::UNIX_EPOCH),
                record: s.record,
                weight: s.weight,
                iteration: s.iteration,
                checks: s
                    .checks
                    .iter()
                    .map(|c| render::Check {
                        name: c.name.clone(),
                        value: c.value,
                        passed: c.passed,
                    })
                    .collect(),
                failed_checks: s.failed_checks,
            })
            .collect(),
        waiting,
        log: review
            .commands
            .iter()
            .filter_map(|c| {
                Some(render::Logged {
                    time: c.at.parse().ok()?,
                    user: c.user.clone(),
                    command: command::parse(&c.command).commands.into_iter().next()?,
                    verdict: if c.accepted {
                        Verdict::Accepted
                    } else {
                        Verdict::Refused(c.outcome.clone())
                    },
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approve_opens_the_gate_the_release_waits_at() {
        let all = [
            ApprovalGate::ConfirmRollout,
            ApprovalGate::ConfirmTrafficIncrease,
            ApprovalGate::ConfirmPromotion,
        ];
        assert_eq!(
            waiting_gate(CanaryPhase::Waiting, &all),
            Some(ApprovalGate::ConfirmRollout)
        );
        assert_eq!(
            waiting_gate(CanaryPhase::WaitingPromotion, &all),
            Some(ApprovalGate::ConfirmPromotion)
        );
        assert_eq!(
            waiting_gate(CanaryPhase::Progressing, &all),
            Some(ApprovalGate::ConfirmTrafficIncrease)
        );
        let promotion = [ApprovalGate::ConfirmPromotion];
        assert_eq!(
            waiting_gate(CanaryPhase::Progressing, &promotion),
            Some(ApprovalGate::ConfirmPromotion)
        );
        assert_eq!(waiting_gate(CanaryPhase::Waiting, &promotion), None);
        assert_eq!(waiting_gate(CanaryPhase::Progressing, &[]), None);
    }

    #[test]
    fn approvals_count_once_per_user_and_traffic_approvals_once_per_step() {
        let approval = |gate: &str, user: &str, weight| PullRequestApproval {
            gate: gate.into(),
            user: user.into(),
            weight,
            at: String::new(),
        };
        let review = ReviewStatus {
            approvals: vec![
                approval("confirm-promotion", "alice", 0),
                approval("confirm-promotion", "Alice", 0),
                approval("confirm-promotion", "bob", 0),
                approval("confirm-traffic-increase", "carol", 10),
            ],
            ..Default::default()
        };
        assert_eq!(
            approvers(&review, ApprovalGate::ConfirmPromotion, 0),
            ["alice", "bob"]
        );
        assert_eq!(
            approvers(&review, ApprovalGate::ConfirmTrafficIncrease, 10),
            ["carol"]
        );
        assert!(approvers(&review, ApprovalGate::ConfirmTrafficIncrease, 20).is_empty());
    }
}
