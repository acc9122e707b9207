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
use kube::{Api, Client, ResourceExt};

use crate::api::{
    ApprovalGate, Canary, CanaryPhase, CanaryStatus, GitOpsStatus, PendingAnswer, PendingRecord,
    PullRequestApproval, PullRequestCommand, PullRequestStatus, RecordLevel, ReviewStatus, ReviewStep,
    VoidedApproval,
};
use crate::forge::command::{self, Command};
use crate::forge::policy::{self, Authors, BranchChange, Policy, Source as Given, Verdict};
use crate::forge::select::Forges;
use crate::forge::{Comment, Forge, Polled, PullRequestState, Reaction, RepoId, Review, ReviewState, render};
use crate::gitops::message::command_line;
use crate::gitops::source::Source;
use crate::rollout::{Gate, GateAnswer};

/// Commands kept in the status (older ones are in the ledger's trailers).
const MAX_COMMANDS: usize = 50;
/// Steps kept for the status comment.
const MAX_STEPS: usize = 50;
/// Comments in one answer past which polls ask only for newer ones (half of GitHub's page).
const SINCE_AFTER: usize = 50;

/// Release pull requests of all canaries: the forges, and when each was last read.
pub(super) struct Reviews {
    pub forges: Arc<Forges>,
    poll_every: Duration,
    polled: Mutex<HashMap<ObjectRef<Canary>, Instant>>,
    nudged: Mutex<HashSet<ObjectRef<Canary>>>,
}

impl Reviews {
    pub fn new(forges: Arc<Forges>, poll_every: Duration) -> Self {
        Self {
            forges,
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

/// Reads the release pull request of `revision` (the target's revision now; when due) and
/// updates `status.gitops.review` with what reviewers said; answers them on the pull
/// request. The review belongs to that revision and pull request only: a review of another
/// one is dropped, and while the revision has no pull request of its own nothing is read and
/// its gates bound to `/approve` stay closed. Forge failures are kept in `review.lastError`
/// and retried at the next reconcile: a comment is judged once, after it could be judged.
pub(super) async fn sync(
    reviews: &Reviews,
    client: &Client,
    canary: &Canary,
    status: &mut CanaryStatus,
    source: &Source,
    revision: &str,
) {
    let phase = status.phase.unwrap_or(CanaryPhase::Initializing);
    let weight = status.canary_weight.unwrap_or(0);
    let analysed = status.last_applied_spec.clone();
    let Some(gitops) = status.gitops.as_mut() else {
        return;
    };
    let own = own_pull_request(gitops, revision).cloned();
    let why = gitops.last_error.clone();
    let writing = writing(gitops);
    let review = gitops.review.get_or_insert_with(Default::default);
    let number = own.as_ref().map_or(0, |pr| pr.number);
    if !belongs(review, revision, number) {
        // The steps are the revision's, whichever pull request shows them; so is what was
        // voided. Approvals of another revision are void, and the new review says so.
        let (steps, voided) = if review.revision == revision {
            (
                std::mem::take(&mut review.steps),
                std::mem::take(&mut review.voided),
            )
        } else {
            let at = Timestamp::now().to_string();
            let voided = review
                .approvals
                .iter()
                .map(|a| VoidedApproval {
                    user: a.user.clone(),
                    gate: a.gate.clone(),
                    reason: format!(
                        "given for revision {}: a new revision needs new approvals",
                        review.revision
                    ),
                    at: at.clone(),
                })
                .collect();
            (Vec::new(), voided)
        };
        **review = ReviewStatus {
            number,
            steps,
            voided,
            ..Default::default()
        };
    }
    review.revision = revision.to_string();
    let Some(pr) = own else {
        review.message = awaiting_pull_request(phase, revision, why.as_deref());
        return;
    };
    review.message = None;
    if !reviews.due(&ObjectRef::from_obj(canary)) {
        return;
    }
    let requested = canary
        .spec
        .gitops
        .as_ref()
        .and_then(|g| g.pull_request.as_ref())
        .and_then(|p| p.forge);
    let picked = match reviews.forges.pick(&source.remote.url, requested) {
        Ok(picked) => picked,
        Err(error) => {
            review.last_error = Some(error);
            return;
        }
    };
    let mut reader = Reader {
        forge: picked.forge.as_ref(),
        client,
        canary,
        repo: picked.repo,
        pr: &pr,
        policy: release_policy(canary, &pr),
        phase,
        weight,
        listed: None,
        authors: authors_of(&pr),
        current: analysed.as_deref() == Some(pr.revision.as_str()),
        head: review.head.clone(),
        writing,
        now: Timestamp::now(),
        owner_groups: HashMap::new(),
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

/// The release pull request of `revision`, when the status knows one.
fn own_pull_request<'a>(gitops: &'a GitOpsStatus, revision: &str) -> Option<&'a PullRequestStatus> {
    gitops
        .pull_request
        .as_deref()
        .filter(|pr| pr.revision == revision)
}

/// Whether a stored review is the one of `revision` and pull request `number` (0: none yet).
/// A review stored before reviews named their revision is taken for its pull request's.
pub(super) fn belongs(review: &ReviewStatus, revision: &str, number: i64) -> bool {
    review.number == number && (review.revision == revision || review.revision.is_empty())
}

/// What the status says while the release of `revision` has no pull request of its own.
fn awaiting_pull_request(phase: CanaryPhase, revision: &str, why: Option<&str>) -> Option<String> {
    let releasing = matches!(
        phase,
        CanaryPhase::Waiting | CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    );
    releasing.then(|| {
        let why = why
            .map(|e| format!(" (the Git writer's last error: {e})"))
            .unwrap_or_default();
        format!(
            "revision {revision} has no release pull request yet{why}: its gates bound to /approve \
             stay closed until it opens, and nothing said on another pull request counts for it"
        )
    })
}

fn policy(canary: &Canary) -> Policy {
    Policy::new(&approvals(canary).cloned().unwrap_or_default())
}

/// The policy of one release: the spec's, with the owners the Git writer read for it.
fn release_policy(canary: &Canary, pr: &PullRequestStatus) -> Policy {
    policy(canary).with_owners(pr.owners.clone())
}

/// Whether the Git writer has records of the canary not yet acknowledged as pushed: a
/// release-branch head it has not recorded may be its own push in flight.
fn writing(gitops: &GitOpsStatus) -> bool {
    let pushed = gitops.pushed_record.unwrap_or(0);
    gitops.pending.iter().flatten().any(|r| r.seq > pushed)
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
    /// The pull request's comments as read in this pass: what flaggit already answered.
    listed: Option<Vec<Comment>>,
    /// Who made the revision the pull request releases: they may not approve it.
    authors: Authors,
    /// Whether the pull request releases the revision analysed now: a merge or close of an
    /// older one (superseded, or ended by flaggit) decides nothing.
    current: bool,
    /// The release-branch head approvals given in this pass are bound to.
    head: String,
    /// Whether the Git writer has records in flight (see [`writing`]).
    writing: bool,
    /// The time of this pass: approvals older than `maxAge` by it are void.
    now: Timestamp,
    /// The owner groups of each approver judged in this pass (lowercased login).
    owner_groups: HashMap<String, Vec<i32>>,
}

impl Reader<'_> {
    /// An open pull request is read whole; an ended one only for its comments while the
    /// release failed (`/retry`), since nothing else said there can act. Answers owed from an
    /// earlier read go out first.
    async fn read(&mut self, review: &mut ReviewStatus) -> Result<(), String> {
        self.flush_answers(review).await?;
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
        self.bind_branch(review, now.head_sha.as_deref().unwrap_or_default())
            .await?;
        let deciding = self.current && analysing(self.phase);
        match now.state {
            // flaggit's own merge (recorded before it asked the forge) decides nothing.
            PullRequestState::Merged
                if review.merged_by.is_none()
                    && self.by_a_person(Ending::Merge, now.merged_by.as_deref()).await? =>
            {
                let by = now.merged_by.clone().unwrap_or_else(|| "someone".into());
                if deciding {
                    tracing::info!(pull_request = %self.pr.url, merged_by = %by, "release pull request merged by a person: judged as their /approve");
                    let verdict = self.verdict(&by, &Command::Approve).await?;
                    let at = Timestamp::now();
                    let outcome = self
                        .decide(review, &by, &Command::Approve, verdict, at, Some(Given::Merge))
                        .await;
                    if let Err(reason) = outcome {
                        let reply = render::refused_reply(
                            &by,
                            &Command::Approve,
                            &format!("merging counts as /approve: {reason}"),
                        );
                        review.answers.push(PendingAnswer {
                            source: format!("merge-{}", self.pr.number),
                            reply,
                            ..Default::default()
                        });
                    }
                }
                review.merged_by = Some(by);
                self.flush_answers(review).await?;
            }
            PullRequestState::Closed
                if deciding && review.rollback.is_none() && !review.answers.iter().any(|a| a.reopen) =>
            {
                let by = match now.closed_by.clone() {
                    Some(by) => Some(by),
                    None => self
                        .forge
                        .closed_by(&self.repo, self.pr.number as u64)
                        .await
                        .map_err(|e| e.to_string())?,
                };
                // flaggit's own close (superseded, rolled back) is never a person's.
                if self.by_a_person(Ending::Close, by.as_deref()).await? {
                    let by = by.unwrap_or_else(|| "someone".into());
                    self.judge_close(review, &by).await?;
                    self.flush_answers(review).await?;
                }
            }
            _ => {}
        }
        let comments = self.read_comments(review).await?;
        let reviews = self.read_reviews(review).await?;
        self.revalidate(review, comments.as_deref(), &reviews).await
    }

    /// Binds the approvals to the release branch's `current` head: flaggit's own push keeps
    /// them, anyone else's voids those given before it (said in the status comment). A head
    /// flaggit may be pushing right now is checked against the live status first; while it
    /// is still unclear, the approvals wait (an Err keeps the gates closed).
    async fn bind_branch(&mut self, review: &mut ReviewStatus, current: &str) -> Result<(), String> {
        let mut change = policy::branch_change(&review.head, current, &self.pr.head, self.writing);
        let mut reported = self.pr.foreign_head.clone();
        if matches!(change, BranchChange::Foreign | BranchChange::Unsettled) {
            let api: Api<Canary> =
                Api::namespaced(self.client.clone(), &self.canary.namespace().unwrap_or_default());
            let live = api
                .get_status(&self.canary.name_any())
                .await
                .map_err(|e| format!("cannot read the canary status again: {e}"))?;
            let gitops = live.status.and_then(|s| s.gitops).unwrap_or_default();
            let live_pr = gitops
                .pull_request
                .as_ref()
                .filter(|p| p.number == self.pr.number);
            let own = live_pr.map_or_else(|| self.pr.head.clone(), |p| p.head.clone());
            if let Some(live) = live_pr.filter(|p| !p.foreign_head.is_empty()) {
                reported.clone_from(&live.foreign_head);
            }
            change = policy::branch_change(&review.head, current, &own, writing(&gitops));
        }
        // The Git writer built on someone else's push before this review saw it.
        if change != BranchChange::Foreign && !reported.is_empty() && reported != review.voided_for {
            let short: String = reported.chars().take(7).collect();
            self.void_all(
                review,
                &format!(
                    "the release branch was pushed to by someone other than flaggit (at {short}): \
                     approve again after reviewing the change"
                ),
            );
            review.voided_for = reported;
        }
        let short: String = current.chars().take(7).collect();
        match change {
            BranchChange::Same => {}
            BranchChange::Own => review.head = current.to_owned(),
            BranchChange::Unsettled => {
                return Err(format!(
                    "the release branch moved to {short} while flaggit is writing to it: the \
                     approvals wait until it is clear whether flaggit pushed it"
                ));
            }
            BranchChange::Foreign => {
                let reason = format!(
                    "the release branch was pushed to by someone other than flaggit (now at \
                     {short}): approve again after reviewing the change"
                );
                self.void_all(review, &reason);
                review.head = current.to_owned();
                review.voided_for = current.to_owned();
            }
        }
        self.head.clone_from(&review.head);
        Ok(())
    }

    /// Voids every approval given so far: the release branch changed under them.
    fn void_all(&self, review: &mut ReviewStatus, reason: &str) {
        tracing::info!(pull_request = %self.pr.url, voided = review.approvals.len(), "foreign push to the release branch: approvals voided");
        for approval in std::mem::take(&mut review.approvals) {
            void(review, &approval, reason, self.now);
        }
    }

    /// Whether a merge or close (`ending`) by `actor` was a person's decision: not when
    /// flaggit recorded that it would do it (the live status is read again, since the writer
    /// records it just before asking the forge), nor when `actor` is flaggit's own login.
    async fn by_a_person(&self, ending: Ending, actor: Option<&str>) -> Result<bool, String> {
        let own = match self.forge.own_login().await {
            Ok(own) => own,
            Err(error) => {
                tracing::debug!(error = %error, "cannot tell flaggit's own login; relying on the recorded intent");
                None
            }
        };
        if !person_ended(ending, self.pr.ending.as_deref(), actor, own.as_deref()) {
            return Ok(false);
        }
        let api: Api<Canary> =
            Api::namespaced(self.client.clone(), &self.canary.namespace().unwrap_or_default());
        let live = api
            .get_status(&self.canary.name_any())
            .await
            .map_err(|e| format!("cannot read the canary status again: {e}"))?;
        let declared = live
            .status
            .and_then(|s| s.gitops)
            .and_then(|g| g.pull_request)
            .filter(|p| p.number == self.pr.number)
            .and_then(|p| p.ending);
        Ok(person_ended(ending, declared.as_deref(), actor, own.as_deref()))
    }

    /// The comments of this pass (read once, without a condition, when not yet read).
    async fn listed(&mut self) -> Result<&mut Vec<Comment>, crate::forge::Error> {
        if self.listed.is_none() {
            let polled = self
                .forge
                .comments(&self.repo, self.pr.number as u64, None, None)
                .await?;
            self.listed = Some(match polled {
                Polled::Changed { value, .. } => value,
                Polled::NotModified => Vec::new(),
            });
        }
        Ok(self.listed.get_or_insert_default())
    }

    /// Answers the comment or review `source` (`comment-<id>`, `review-<id>`) once: a reply
    /// already on the pull request (from an attempt whose outcome was lost) is not repeated.
    async fn reply_once(&mut self, source: &str, text: &str) -> Result<(), crate::forge::Error> {
        let marker = render::reply_marker(source);
        if self
            .listed()
            .await?
            .iter()
            .any(|c| render::has_marker(&c.body, &marker))
        {
            return Ok(());
        }
        let number = self.pr.number as u64;
        let created = self
            .forge
            .create_comment(&self.repo, number, &render::marked(&marker, text))
            .await?;
        self.listed().await?.push(created);
        Ok(())
    }

    /// A person closing the release pull request asks for a rollback, and is judged like
    /// `/rollback`; a close that does not count is undone (the pull request reopened).
    async fn judge_close(&mut self, review: &mut ReviewStatus, by: &str) -> Result<(), String> {
        let command = Command::Rollback { reason: None };
        let verdict = self.verdict(by, &command).await?;
        let at = Timestamp::now();
        match verdict {
            Verdict::Accepted => {
                tracing::info!(pull_request = %self.pr.url, closed_by = %by, "release pull request closed by a person: rolling back");
                review.rollback = Some(format!(
                    "the release pull request was closed without merging by @{}",
                    render::login_of(by)
                ));
                self.log(
                    review,
                    by,
                    &command,
                    Ok("closed the pull request: rolls back at the next analysis tick".into()),
                    at,
                );
            }
            Verdict::Refused(reason) => {
                tracing::info!(pull_request = %self.pr.url, closed_by = %by, reason = %reason, "release pull request closed by someone who may not roll back: reopening");
                let reason =
                    format!("closing the pull request counts as /rollback: {reason}; it was reopened");
                self.log(review, by, &command, Err(reason.clone()), at);
                review.answers.push(PendingAnswer {
                    source: format!("close-{}", at.as_second()),
                    reply: render::refused_reply(by, &command, &reason),
                    reopen: true,
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    /// Judges the comments not judged yet; returns the comment list when it was read anew.
    async fn read_comments(&mut self, review: &mut ReviewStatus) -> Result<Option<Vec<Comment>>, String> {
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
            return Ok(None);
        };
        self.listed = Some(value.clone());
        let since = opened_at(self.pr);
        let seen = review.last_comment;
        // In the order written (ids grow), which the cursor `last_comment` relies on.
        let mut fresh: Vec<&Comment> = value.iter().filter(|c| c.id as i64 > seen).collect();
        fresh.sort_by_key(|c| c.id);
        for comment in fresh {
            self.judge_comment(review, comment, since).await?;
            // Judged once: its answer is owed from now on, the comment is never judged again.
            review.last_comment = comment.id as i64;
            self.flush_answers(review).await?;
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
        Ok(Some(value))
    }

    /// Judges every command of a comment and owes it its answer (reaction and reply). A
    /// transient forge failure leaves the whole comment unjudged, with nothing logged.
    async fn judge_comment(
        &mut self,
        review: &mut ReviewStatus,
        comment: &Comment,
        since: Option<Timestamp>,
    ) -> Result<(), String> {
        if render::is_status_comment(&comment.body) {
            return Ok(());
        }
        let parsed = command::parse(&comment.body);
        if parsed.is_empty() {
            return Ok(());
        }
        let mut replies = Vec::new();
        let mut refused = false;
        if !written_for(since, comment.created_at) {
            // Answered, never dropped: the writer learns why it did not count.
            let reason = too_old(&self.pr.revision);
            for command in &parsed.commands {
                self.log(
                    review,
                    &comment.author,
                    command,
                    Err(reason.clone()),
                    comment.created_at,
                );
                replies.push(render::refused_reply(&comment.author, command, &reason));
            }
            refused = true;
        } else if comment.updated_at > comment.created_at {
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
            let mut verdicts = Vec::new();
            for command in &parsed.commands {
                verdicts.push(self.verdict(&comment.author, command).await?);
            }
            for (command, verdict) in parsed.commands.iter().zip(verdicts) {
                let source = Some(Given::Comment(comment.id));
                let outcome = self
                    .decide(
                        review,
                        &comment.author,
                        command,
                        verdict,
                        comment.created_at,
                        source,
                    )
                    .await;
                match &outcome {
                    Ok(_) if matches!(command, Command::Status) => {
                        replies.push(render::status_reply(
                            &comment.author,
                            &release(self.canary, self.pr),
                            &status_view(self.canary, self.pr, self.phase, self.weight, review, self.now),
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
        review.answers.push(PendingAnswer {
            source: format!("comment-{}", comment.id),
            comment: Some(comment.id as i64),
            reaction: reaction.as_str().to_string(),
            reply: replies.join("\n\n"),
            reopen: false,
        });
        Ok(())
    }

    /// Approving reviews count as `/approve` from their author. Returns every review.
    async fn read_reviews(&mut self, review: &mut ReviewStatus) -> Result<Vec<Review>, String> {
        let number = self.pr.number as u64;
        let reviews = self
            .forge
            .reviews(&self.repo, number)
            .await
            .map_err(|e| e.to_string())?;
        let since = opened_at(self.pr);
        let seen = review.last_review;
        for submitted in reviews.iter().filter(|r| r.id as i64 > seen) {
            if submitted.state == ReviewState::Approved {
                let command = Command::Approve;
                let outcome = if written_for(since, submitted.submitted_at) {
                    let verdict = self.verdict(&submitted.author, &command).await?;
                    let source = Some(Given::Review(submitted.id));
                    self.decide(
                        review,
                        &submitted.author,
                        &command,
                        verdict,
                        submitted.submitted_at,
                        source,
                    )
                    .await
                } else {
                    let reason = too_old(&self.pr.revision);
                    self.log(
                        review,
                        &submitted.author,
                        &command,
                        Err(reason.clone()),
                        submitted.submitted_at,
                    );
                    Err(reason)
                };
                if let Err(reason) = &outcome {
                    review.answers.push(PendingAnswer {
                        source: format!("review-{}", submitted.id),
                        reply: render::refused_reply(&submitted.author, &command, reason),
                        ..Default::default()
                    });
                }
            }
            review.last_review = submitted.id as i64;
            self.flush_answers(review).await?;
        }
        Ok(reviews)
    }

    /// Approvals hold only while what gave them does: drops those whose comment was deleted
    /// or edited, whose review was dismissed, or whose user may no longer approve (the
    /// permission is read again, cached by the forge). Until they could be checked, the
    /// gates bound to `/approve` stay closed (see [`answer_gate`]).
    async fn revalidate(
        &mut self,
        review: &mut ReviewStatus,
        comments: Option<&[Comment]>,
        reviews: &[Review],
    ) -> Result<(), String> {
        let mut reasons = Vec::with_capacity(review.approvals.len());
        for approval in &review.approvals {
            reasons.push(match approval.source.parse::<Given>() {
                // A list read anew may hold only the newest comments: look an absent one up.
                Ok(Given::Comment(id)) if comments.is_some_and(|list| !list.iter().any(|c| c.id == id)) => {
                    let one = self
                        .forge
                        .comment(&self.repo, self.pr.number as u64, id)
                        .await
                        .map_err(|e| format!("cannot check the approvals again: {e}"))?;
                    policy::withdrawn(Given::Comment(id), Some(one.as_slice()), reviews)
                }
                Ok(source) => policy::withdrawn(source, comments, reviews),
                Err(_) => None,
            });
        }
        let mut reasons = reasons.into_iter();
        review.approvals.retain(|approval| match reasons.next().flatten() {
            Some(reason) => {
                tracing::info!(pull_request = %self.pr.url, user = %approval.user, gate = %approval.gate, reason = %reason, "approval withdrawn");
                false
            }
            None => true,
        });
        // Expired approvals are void, and the status comment says so.
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut review.approvals)
            .into_iter()
            .partition(|a| is_expired(a, self.now, self.policy.max_age));
        review.approvals = kept;
        for approval in expired {
            let reason = format!(
                "expired: given at {}, and approvals count for {} (spec.gitops.approvals.maxAge)",
                approval.at,
                approvals(self.canary)
                    .and_then(|a| a.max_age.clone())
                    .unwrap_or_default()
            );
            void(review, &approval, &reason, self.now);
        }
        let mut users: Vec<String> = Vec::new();
        // Approvals from the command line were judged by Kubernetes RBAC, not the forge.
        for a in review
            .approvals
            .iter()
            .filter(|a| a.source != crate::steer::judge::CLI_SOURCE)
        {
            if !users.iter().any(|u| u.eq_ignore_ascii_case(&a.user)) {
                users.push(a.user.clone());
            }
        }
        for user in users {
            let verdict = self
                .verdict(&user, &Command::Approve)
                .await
                .map_err(|e| format!("cannot check the approvals again: {e}"))?;
            // Team memberships change: the groups an approval counts for follow them.
            if let Some(groups) = self.owner_groups.get(&user.to_lowercase()) {
                for a in review
                    .approvals
                    .iter_mut()
                    .filter(|a| a.user.eq_ignore_ascii_case(&user))
                {
                    a.groups.clone_from(groups);
                }
            }
            if let Verdict::Refused(reason) = verdict {
                tracing::info!(pull_request = %self.pr.url, user = %user, reason = %reason, "approval withdrawn");
                review.approvals.retain(|a| {
                    !a.user.eq_ignore_ascii_case(&user) || a.source == crate::steer::judge::CLI_SOURCE
                });
            }
        }
        Ok(())
    }

    /// Whether `user` may give `command`. A permanent forge failure (a login the forge does
    /// not know, a lookup the token may not make) is a refusal that says so; a transient
    /// one is an Err: judge again later.
    async fn verdict(&mut self, user: &str, command: &Command) -> Result<Verdict, String> {
        match self
            .policy
            .authorize(self.forge, &self.repo, &self.authors, user, command)
            .await
        {
            Ok(Verdict::Accepted) if matches!(command, Command::Approve) && self.policy.owners_wanted => {
                // Which changed files the approver owns: each group needs one of its owners.
                let groups = match self.policy.owned_groups(self.forge, user).await {
                    Ok(groups) => groups,
                    Err(error) if error.is_permanent() => Vec::new(),
                    Err(error) => return Err(error.to_string()),
                };
                self.owner_groups.insert(
                    user.to_lowercase(),
                    groups.into_iter().map(|g| g as i32).collect(),
                );
                Ok(Verdict::Accepted)
            }
            Ok(verdict) => Ok(verdict),
            Err(error) if error.is_permanent() => Ok(Verdict::Refused(format!(
                "cannot tell whether @{} may do this: {error}",
                render::login_of(user)
            ))),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Carries out `command` from `user` if the verdict allows, and logs what came of it.
    async fn decide(
        &mut self,
        review: &mut ReviewStatus,
        user: &str,
        command: &Command,
        verdict: Verdict,
        at: Timestamp,
        source: Option<Given>,
    ) -> Result<String, String> {
        let outcome = match verdict {
            Verdict::Accepted => self.apply(review, user, command, at, source).await,
            Verdict::Refused(reason) => Err(reason),
        };
        self.log(review, user, command, outcome.clone(), at);
        outcome
    }

    /// Carries out an authorized command; Err says why it cannot be done now.
    async fn apply(
        &mut self,
        review: &mut ReviewStatus,
        user: &str,
        command: &Command,
        at: Timestamp,
        source: Option<Given>,
    ) -> Result<String, String> {
        let analysing = analysing(self.phase);
        match command {
            Command::Approve => {
                let gates = bound_gates(self.canary);
                let merge = source == Some(Given::Merge);
                let gate = if merge {
                    gates
                        .contains(&ApprovalGate::ConfirmPromotion)
                        .then_some(ApprovalGate::ConfirmPromotion)
                } else {
                    waiting_gate(self.phase, &gates)
                };
                let Some(gate) = gate else {
                    if merge {
                        return Ok("merged; no gate of this release waits for /approve".into());
                    }
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
                        source: source.map(|s| s.to_string()).unwrap_or_default(),
                        revision: self.pr.revision.clone(),
                        head: self.head.clone(),
                        groups: self
                            .owner_groups
                            .get(&user.to_lowercase())
                            .cloned()
                            .unwrap_or_default(),
                    });
                }
                let count = approvers(review, gate, weight).len();
                let what = if merge { "merged: approves" } else { "approves" };
                Ok(format!("{what} {gate_name} ({count}/{})", self.policy.required))
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

    /// Gives the answers owed (reopen, reaction, reply), oldest first, each part once: a
    /// part the forge took is not sent again, a part it refuses for good is dropped.
    async fn flush_answers(&mut self, review: &mut ReviewStatus) -> Result<(), String> {
        let number = self.pr.number as u64;
        while let Some(answer) = review.answers.first_mut() {
            if answer.reopen {
                settle(self.forge.reopen_pull_request(&self.repo, number).await)?;
                answer.reopen = false;
            }
            if let (Some(id), Some(reaction)) = (answer.comment, Reaction::from_name(&answer.reaction)) {
                settle(self.forge.react(&self.repo, number, id as u64, reaction).await)?;
            }
            answer.reaction.clear();
            if !answer.reply.is_empty() {
                let (source, reply) = (answer.source.clone(), answer.reply.clone());
                settle(self.reply_once(&source, &reply).await)?;
                if let Some(answer) = review.answers.first_mut() {
                    answer.reply.clear();
                }
            }
            review.answers.remove(0);
        }
        Ok(())
    }

    /// Writes the status comment when what it shows changed.
    async fn update_status_comment(&mut self, review: &mut ReviewStatus) -> Result<(), String> {
        let body = render::status_comment(
            &release(self.canary, self.pr),
            &status_view(self.canary, self.pr, self.phase, self.weight, review, self.now),
        );
        let digest = digest(&body);
        if digest == review.status_digest {
            return Ok(());
        }
        let number = self.pr.number as u64;
        if review.status_comment.is_none() {
            // Find before create: one written by an attempt whose id was lost is edited.
            let own = self.forge.own_login().await.ok().flatten();
            let author = self.pr.author.clone();
            let found = self.listed().await.map_err(|e| e.to_string())?.iter().find(|c| {
                render::is_status_comment(&c.body)
                    && (own.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(&c.author))
                        || c.author.eq_ignore_ascii_case(&author))
            });
            review.status_comment = found.map(|c| c.id as i64);
        }
        match review.status_comment {
            Some(id) => self
                .forge
                .edit_comment(&self.repo, number, id as u64, &body)
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

/// A forge side effect's result: a permanent refusal (a deleted comment, a pull request that
/// cannot be reopened) is given up on, a transient failure is retried at the next read.
fn settle(result: Result<(), crate::forge::Error>) -> Result<(), String> {
    match result {
        Err(error) if error.is_permanent() => {
            tracing::warn!(error = %error, "the forge refused an answer to a command; giving up on it");
            Ok(())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// Whether the release is being analysed: the phases commands and gates act in.
fn analysing(phase: CanaryPhase) -> bool {
    matches!(
        phase,
        CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion
    )
}

/// The authors of the revision a pull request releases, as the writer found them.
fn authors_of(pr: &PullRequestStatus) -> Authors {
    Authors {
        logins: pr.authors.clone(),
        unknown: pr.unknown_authors.clone(),
        bots: pr.bots.clone(),
        commits: pr.commits.clone(),
    }
}

fn digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..12])
}

/// When the pull request was opened, when the status knows.
fn opened_at(pr: &PullRequestStatus) -> Option<Timestamp> {
    pr.opened_at.parse().ok()
}

/// How far the forge's clock and the controller's may differ.
const CLOCK_SKEW: i64 = 120;

/// Whether something written `at` was written for the pull request opened at `opened`.
/// Compared at the forge's precision (GitHub stamps to the second) with room for clock skew:
/// a comment in the pull request's first second is the pull request's.
pub(super) fn written_for(opened: Option<Timestamp>, at: Timestamp) -> bool {
    opened.is_none_or(|opened| at.as_second() >= opened.as_second() - CLOCK_SKEW)
}

/// Why a command older than the pull request does not count.
fn too_old(revision: &str) -> String {
    format!(
        "it was written before this release pull request was opened for revision {revision}: \
         give the command again"
    )
}

/// How a pull request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Merge,
    Close,
}

/// Whether a pull request that ended so (`ending`, by `actor` when the forge says) was
/// ended by a person: not when flaggit `declared` that ending before asking the forge, nor
/// when `actor` is flaggit's `own` login.
fn person_ended(ending: Ending, declared: Option<&str>, actor: Option<&str>, own: Option<&str>) -> bool {
    let name = match ending {
        Ending::Merge => "merge",
        Ending::Close => "close",
    };
    if declared == Some(name) {
        return false;
    }
    !matches!((actor, own), (Some(actor), Some(own)) if actor.eq_ignore_ascii_case(own))
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

/// Voided approvals kept for the status comment.
const MAX_VOIDED: usize = 20;

/// Records that `approval` no longer counts, and why.
fn void(review: &mut ReviewStatus, approval: &PullRequestApproval, reason: &str, now: Timestamp) {
    review.voided.push(VoidedApproval {
        user: approval.user.clone(),
        gate: approval.gate.clone(),
        reason: reason.to_owned(),
        at: now.to_string(),
    });
    let excess = review.voided.len().saturating_sub(MAX_VOIDED);
    review.voided.drain(..excess);
}

/// Whether an approval is older than `maxAge` at `now`. An approval from the command line
/// (`flaggit approve`) expires alike.
fn is_expired(approval: &PullRequestApproval, now: Timestamp, max_age: Option<Duration>) -> bool {
    approval
        .at
        .parse::<Timestamp>()
        .is_ok_and(|at| policy::expired(at, now, max_age))
}

/// The approvers of `gate` (at `weight`) who count at `now`: one entry per user, with the
/// owner groups they belong to; expired approvals and those of another revision left out.
fn counted(
    review: &ReviewStatus,
    gate: ApprovalGate,
    weight: i32,
    revision: &str,
    now: Timestamp,
    max_age: Option<Duration>,
) -> Vec<policy::Counted> {
    let name = render::gate_name(gate);
    let mut users: Vec<policy::Counted> = Vec::new();
    for approval in review.approvals.iter().filter(|a| {
        a.gate == name
            && a.weight == weight
            && (a.revision.is_empty() || a.revision == revision)
            && !is_expired(a, now, max_age)
    }) {
        let groups = approval.groups.iter().filter_map(|g| usize::try_from(*g).ok());
        match users
            .iter_mut()
            .find(|u| u.user.eq_ignore_ascii_case(&approval.user))
        {
            Some(user) => {
                for g in groups {
                    if !user.groups.contains(&g) {
                        user.groups.push(g);
                    }
                }
            }
            None => users.push(policy::Counted {
                user: approval.user.clone(),
                groups: groups.collect(),
            }),
        }
    }
    users
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
/// Only the review of `revision` (the one asking) and its own pull request counts: while
/// it has none, the gates bound to `/approve` stay closed and nothing else applies.
pub(super) fn answer_gate(
    canary: &Canary,
    status: &CanaryStatus,
    revision: &str,
    gate: Gate,
    answer: &mut GateAnswer,
    now: Timestamp,
) {
    let Some(gitops) = status.gitops.as_ref() else {
        return;
    };
    let pr = own_pull_request(gitops, revision);
    let review = gitops
        .review
        .as_ref()
        .filter(|r| pr.is_some_and(|pr| belongs(r, revision, pr.number)));
    let (Some(pr), Some(review)) = (pr, review) else {
        let bound = approval_gate_of(gate).filter(|g| bound_gates(canary).contains(g));
        if let Some(bound) = bound
            && answer.open
        {
            *answer = GateAnswer::closed(format!(
                "{} waits for the release pull request of revision {revision}, which is not open yet",
                render::gate_name(bound)
            ));
        }
        return;
    };
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
    if let Some(error) = &review.last_error {
        // Approvals are checked again at each read: one that could not be checked may have
        // been withdrawn, so none counts until the forge answers.
        *answer = GateAnswer::closed(format!(
            "{} waits: the approvals on {} cannot be checked now ({error})",
            render::gate_name(approval_gate),
            pr.url
        ));
        return;
    }
    let weight = if approval_gate == ApprovalGate::ConfirmTrafficIncrease {
        status.canary_weight.unwrap_or(0)
    } else {
        0
    };
    if !pr.foreign_head.is_empty() && pr.foreign_head != review.voided_for {
        // Someone else pushed to the release branch: the approvals wait to be voided.
        *answer = GateAnswer::closed(format!(
            "{} waits: someone other than flaggit pushed to the release branch of {}, which voids \
             the approvals given before",
            render::gate_name(approval_gate),
            pr.url
        ));
        return;
    }
    let policy = release_policy(canary, pr);
    let have = counted(review, approval_gate, weight, revision, now, policy.max_age);
    let unmet = policy.unmet(&have, &authors_of(pr));
    if !unmet.is_empty() {
        *answer = GateAnswer::closed(format!(
            "{} waits for {} on {}",
            render::gate_name(approval_gate),
            unmet.join("; "),
            pr.url
        ));
    }
}

/// The approval gate a rollout gate is, if any.
fn approval_gate_of(gate: Gate) -> Option<ApprovalGate> {
    match gate {
        Gate::ConfirmRollout => Some(ApprovalGate::ConfirmRollout),
        Gate::ConfirmTrafficIncrease => Some(ApprovalGate::ConfirmTrafficIncrease),
        Gate::ConfirmPromotion => Some(ApprovalGate::ConfirmPromotion),
        Gate::Rollback | Gate::PreRollout => None,
    }
}

/// Adds to the records of a decision who approved the gate each one passed, and the commands
/// judged since the previous record; remembers the steps for the status comment.
/// The steps carry the numbers the records get in Git (`level` decides which are written).
pub(super) fn annotate(
    records: &mut [PendingRecord],
    old: &CanaryStatus,
    status: &mut CanaryStatus,
    level: RecordLevel,
) {
    let numbers = crate::gitops::outbox::numbers(status, records, level);
    let Some(review) = status.gitops.as_mut().and_then(|g| g.review.as_mut()) else {
        return;
    };
    let old_weight = old.canary_weight.unwrap_or(0);
    for (record, seq) in records.iter_mut().zip(numbers) {
        // A review says nothing of another revision's records.
        let own = review.revision.is_empty() || review.revision == record.revision;
        let passed = match record.kind.as_str() {
            "Detected" => Some((ApprovalGate::ConfirmRollout, 0)),
            "Step" => Some((ApprovalGate::ConfirmTrafficIncrease, old_weight)),
            "Promoting" => Some((ApprovalGate::ConfirmPromotion, 0)),
            _ => None,
        };
        if let Some((gate, weight)) = passed.filter(|_| own) {
            record.approved_by = approvers(review, gate, weight);
        }
        if matches!(
            record.kind.as_str(),
            "Step" | "Halted" | "Promoting" | "Promoted" | "RolledBack"
        ) {
            review.steps.push(ReviewStep {
                record: seq,
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
            .map(|c| command_line(&format!("@{}", c.user), &c.command, c.accepted, &c.outcome))
            .collect();
        review.recorded_commands = review.judged_commands;
    }
}

/// What the pull request's description says of the release.
pub(super) fn release(canary: &Canary, pr: &PullRequestStatus) -> render::Release {
    let mut release = crate::forge::plan::release(canary, &pr.revision, &pr.version);
    release.authors = authors_of(pr);
    release.approvals = release.approvals.with_owners(pr.owners.clone());
    release
}

fn status_view(
    canary: &Canary,
    pr: &PullRequestStatus,
    phase: CanaryPhase,
    weight: i32,
    review: &ReviewStatus,
    now: Timestamp,
) -> render::Status {
    let gates = bound_gates(canary);
    let policy = release_policy(canary, pr);
    let waiting = match phase {
        CanaryPhase::Waiting | CanaryPhase::WaitingPromotion | CanaryPhase::Progressing => {
            waiting_gate(phase, &gates).map(|gate| {
                let w = if gate == ApprovalGate::ConfirmTrafficIncrease {
                    weight
                } else {
                    0
                };
                let have = counted(review, gate, w, &pr.revision, now, policy.max_age);
                // The count is shown on its own; the rest of what is missing below it.
                let missing = policy
                    .unmet(&have, &authors_of(pr))
                    .into_iter()
                    .filter(|m| !m.ends_with("more /approve"))
                    .collect();
                render::Waiting::Approval {
                    gate,
                    approved_by: have.into_iter().map(|c| c.user).collect(),
                    required: policy.required,
                    merged_by: review
                        .merged_by
                        .clone()
                        .filter(|_| gate == ApprovalGate::ConfirmPromotion),
                    missing,
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
        voided: review
            .voided
            .iter()
            .map(|v| format!("@{}'s approval of {}: {}", v.user, v.gate, v.reason))
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

    fn canary_with(gates: Vec<ApprovalGate>) -> Canary {
        let mut canary = Canary::new("podinfo", Default::default());
        canary.spec.gitops = Some(Box::new(crate::api::GitOpsSpec {
            mode: Some(crate::api::GitOpsMode::PullRequest),
            approvals: Some(crate::api::Approvals {
                gates: Some(gates),
                ..Default::default()
            }),
            ..Default::default()
        }));
        canary
    }

    fn pull_request(number: i64, revision: &str) -> PullRequestStatus {
        PullRequestStatus {
            number,
            revision: revision.into(),
            state: "open".into(),
            url: format!("https://github.com/acme/config/pull/{number}"),
            ..Default::default()
        }
    }

    /// Revision A's pull request #7 with two promotion approvals, a pause and a rollback.
    fn reviewed_a(pr_revision: &str, pr_number: i64) -> CanaryStatus {
        let approval = |user: &str| PullRequestApproval {
            gate: "confirm-promotion".into(),
            user: user.into(),
            weight: 0,
            at: String::new(),
            source: String::new(),
            ..Default::default()
        };
        CanaryStatus {
            gitops: Some(Box::new(GitOpsStatus {
                pull_request: Some(Box::new(pull_request(pr_number, pr_revision))),
                review: Some(Box::new(ReviewStatus {
                    number: 7,
                    revision: "rev-a".into(),
                    approvals: vec![approval("alice"), approval("carol")],
                    rollback: Some("rollback requested by @alice on the pull request".into()),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn answer(canary: &Canary, status: &CanaryStatus, revision: &str, gate: Gate, open: bool) -> GateAnswer {
        let mut answer = if open {
            GateAnswer::open()
        } else {
            GateAnswer::closed("webhook says no")
        };
        answer_gate(canary, status, revision, gate, &mut answer, Timestamp::now());
        answer
    }

    #[test]
    fn a_review_counts_for_its_own_revision_and_pull_request_only() {
        let canary = canary_with(vec![ApprovalGate::ConfirmPromotion]);
        // A's own release: its approvals open the promotion, its /rollback the rollback.
        let a = reviewed_a("rev-a", 7);
        assert!(answer(&canary, &a, "rev-a", Gate::ConfirmPromotion, true).open);
        assert!(answer(&canary, &a, "rev-a", Gate::Rollback, false).open);

        // B arrived and its pull request could not be opened: the status still names A's.
        for status in [reviewed_a("rev-a", 7), reviewed_a("rev-b", 8)] {
            let promotion = answer(&canary, &status, "rev-b", Gate::ConfirmPromotion, true);
            assert!(!promotion.open, "A's approvals never promote B");
            assert!(
                promotion.message.contains("revision rev-b"),
                "{}",
                promotion.message
            );
            assert!(
                !answer(&canary, &status, "rev-b", Gate::Rollback, false).open,
                "A's /rollback never rolls back B"
            );
        }
        // A gate not bound to /approve follows its webhook alone.
        let unbound = canary_with(vec![]);
        assert!(
            answer(
                &unbound,
                &reviewed_a("rev-a", 7),
                "rev-b",
                Gate::ConfirmPromotion,
                true
            )
            .open
        );
    }

    #[test]
    fn a_stored_review_belongs_to_one_revision_and_one_pull_request() {
        let review = ReviewStatus {
            number: 7,
            revision: "rev-a".into(),
            ..Default::default()
        };
        assert!(belongs(&review, "rev-a", 7));
        assert!(!belongs(&review, "rev-b", 7), "same number, other revision");
        assert!(!belongs(&review, "rev-a", 8), "same revision, other pull request");
        assert!(!belongs(&review, "rev-a", 0));
        let legacy = ReviewStatus {
            number: 7,
            ..Default::default()
        };
        assert!(
            belongs(&legacy, "rev-a", 7),
            "a review from before revisions were kept"
        );
        assert!(
            awaiting_pull_request(CanaryPhase::Progressing, "rev-b", Some("HTTP 502"))
                .is_some_and(|m| m.contains("rev-b") && m.contains("HTTP 502"))
        );
        assert_eq!(awaiting_pull_request(CanaryPhase::Succeeded, "rev-b", None), None);
    }

    #[test]
    fn flaggit_s_own_merge_or_close_is_never_a_person_s() {
        use Ending::{Close, Merge};
        // Declared before the forge was asked.
        assert!(!person_ended(Close, Some("close"), None, None));
        assert!(!person_ended(Merge, Some("merge"), Some("flaggit-bot"), None));
        // Done as flaggit's own login, whatever was recorded.
        assert!(!person_ended(
            Close,
            None,
            Some("Flaggit-Bot"),
            Some("flaggit-bot")
        ));
        assert!(!person_ended(
            Merge,
            None,
            Some("flaggit-bot"),
            Some("flaggit-bot")
        ));
        // A person.
        assert!(person_ended(Close, None, Some("dana"), Some("flaggit-bot")));
        assert!(person_ended(Close, None, None, None));
        assert!(person_ended(Merge, None, Some("dana"), None));
        // flaggit meant to merge; a person closed it first.
        assert!(person_ended(
            Close,
            Some("merge"),
            Some("dana"),
            Some("flaggit-bot")
        ));
    }

    #[test]
    fn timestamps_compare_at_the_forge_s_precision_with_room_for_skew() {
        let opened: Timestamp = "2026-12-03T12:00:00.734Z".parse().expect("a time");
        let at = |t: &str| t.parse::<Timestamp>().expect("a time");
        assert!(
            written_for(Some(opened), at("2026-12-03T12:00:00Z")),
            "the first second"
        );
        assert!(
            written_for(Some(opened), at("2026-12-03T11:59:00Z")),
            "clock skew"
        );
        assert!(!written_for(Some(opened), at("2026-12-03T11:50:00Z")));
        assert!(written_for(None, at("2000-01-01T00:00:00Z")));
    }

    #[test]
    fn steps_carry_the_numbers_their_records_get() {
        let mut status = CanaryStatus {
            gitops: Some(Box::new(GitOpsStatus {
                last_record: Some(4),
                review: Some(Box::new(ReviewStatus {
                    number: 7,
                    revision: "rev-a".into(),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        };
        let record = |kind: &str| PendingRecord {
            kind: kind.into(),
            revision: "rev-a".into(),
            ..Default::default()
        };
        let mut records = [record("Step"), record("Step")];
        annotate(
            &mut records,
            &CanaryStatus::default(),
            &mut status,
            RecordLevel::EveryStep,
        );
        let steps = |s: &CanaryStatus| -> Vec<i64> {
            s.gitops
                .as_ref()
                .and_then(|g| g.review.as_ref())
                .map(|r| r.steps.iter().map(|s| s.record).collect())
                .unwrap_or_default()
        };
        assert_eq!(steps(&status), [5, 6]);
        let mut records = [record("Step"), record("Promoting")];
        annotate(
            &mut records,
            &CanaryStatus::default(),
            &mut status,
            RecordLevel::Transitions,
        );
        assert_eq!(
            steps(&status),
            [5, 6, 0, 5],
            "a step left out of Git has no number"
        );
    }

    /// A canary in pull-request mode with `gates` bound to `/approve`, and its status with
    /// release pull request #7 and `review`.
    fn gated(required: i32, review: ReviewStatus) -> (Canary, CanaryStatus) {
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": { "name": "podinfo", "namespace": "test" },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
                "service": { "port": 9898 },
                "gitops": {
                    "mode": "pull-request",
                    "approvals": { "gates": ["confirm-promotion"], "required": required },
                },
            },
        }))
        .expect("a canary");
        let status = CanaryStatus {
            phase: Some(CanaryPhase::WaitingPromotion),
            gitops: Some(Box::new(crate::api::GitOpsStatus {
                pull_request: Some(Box::new(PullRequestStatus {
                    number: 7,
                    revision: "rev-1".into(),
                    url: "https://github.com/acme/config/pull/7".into(),
                    state: "open".into(),
                    ..Default::default()
                })),
                review: Some(Box::new(ReviewStatus { number: 7, ..review })),
                ..Default::default()
            })),
            ..Default::default()
        };
        (canary, status)
    }

    fn promotion_answer(canary: &Canary, status: &CanaryStatus) -> GateAnswer {
        let mut answer = GateAnswer::open();
        answer_gate(
            canary,
            status,
            "rev-1",
            Gate::ConfirmPromotion,
            &mut answer,
            Timestamp::now(),
        );
        answer
    }

    fn approval(user: &str, source: &str) -> PullRequestApproval {
        PullRequestApproval {
            gate: "confirm-promotion".into(),
            user: user.into(),
            weight: 0,
            at: String::new(),
            source: source.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_merge_is_one_approval_and_does_not_open_the_gate_by_itself() {
        let merged = ReviewStatus {
            merged_by: Some("dana".into()),
            approvals: vec![approval("dana", "merge")],
            ..Default::default()
        };
        let (canary, status) = gated(2, merged.clone());
        let answer = promotion_answer(&canary, &status);
        assert!(!answer.open, "one approval of two");
        assert!(
            answer.message.contains("waits for 1 more /approve"),
            "{}",
            answer.message
        );
        // A refused merge left no approval: the merge alone opens nothing.
        let (canary, status) = gated(
            1,
            ReviewStatus {
                merged_by: Some("tess".into()),
                ..Default::default()
            },
        );
        assert!(!promotion_answer(&canary, &status).open);
        let (canary, status) = gated(
            2,
            ReviewStatus {
                approvals: vec![approval("dana", "merge"), approval("alice", "comment/9")],
                ..merged
            },
        );
        assert!(promotion_answer(&canary, &status).open);
        let gitops = status.gitops.as_ref().expect("gitops");
        let view = status_view(
            &canary,
            gitops.pull_request.as_ref().expect("pull request"),
            CanaryPhase::WaitingPromotion,
            0,
            gitops.review.as_ref().expect("review"),
            Timestamp::now(),
        );
        let Some(render::Waiting::Approval {
            merged_by,
            approved_by,
            ..
        }) = view.waiting
        else {
            panic!("waiting for approvals")
        };
        assert_eq!(
            merged_by.as_deref(),
            Some("dana"),
            "the status comment says who merged"
        );
        assert_eq!(approved_by, ["dana", "alice"]);
    }

    #[test]
    fn approvals_that_could_not_be_checked_again_keep_the_gate_closed() {
        let (canary, status) = gated(
            1,
            ReviewStatus {
                approvals: vec![approval("alice", "comment/9")],
                last_error: Some("request to github failed: HTTP 502".into()),
                ..Default::default()
            },
        );
        let answer = promotion_answer(&canary, &status);
        assert!(!answer.open);
        assert!(
            answer.message.contains("cannot be checked now"),
            "{}",
            answer.message
        );
    }

    #[test]
    fn approvals_count_once_per_user_and_traffic_approvals_once_per_step() {
        let approval = |gate: &str, user: &str, weight| PullRequestApproval {
            gate: gate.into(),
            user: user.into(),
            weight,
            at: String::new(),
            source: String::new(),
            ..Default::default()
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
