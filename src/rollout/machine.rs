//! One analysis tick as a pure function. [`decide`] either asks a [`Question`] (the
//! controller answers it — readiness, a gate, the metric checks — and calls again) or returns
//! the [`Decision`]: actions in order, the new status, events, alerts and Git records.
//!
//! Behaviour follows Flagger's `advanceCanary` (flagger-spec §4.2), with three of its quirks
//! fixed: rollback happens on the tick that reaches the failed-checks threshold, a suspended
//! canary reports suspension once instead of every tick, and a target reverted to the
//! promoted revision never starts an analysis (also mid-rollout, where it ends the rollout).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{Plan, Strategy};
use super::types::{CheckResult, REVISION_PREFIX, Readiness, Revision, Routes};
use crate::api::{CanaryCondition, CanaryPhase, CanaryStatus};

/// Gates: points where a release waits for approval (webhooks, PR comments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gate {
    /// Before a new revision is scaled up.
    ConfirmRollout,
    /// Once, before traffic reaches the canary; a closed gate counts as a failed check.
    PreRollout,
    /// Before each traffic increase.
    ConfirmTrafficIncrease,
    /// Before the primary is updated.
    ConfirmPromotion,
    /// Asked every tick; an open gate rolls the release back.
    Rollback,
}

/// What the state machine needs to know before it can decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Question {
    PrimaryReady,
    CanaryReady,
    Gate(Gate),
    /// Run the `rollout` webhooks and the metric checks.
    Analysis,
    /// Was the live primary made from the target as it is now? Asked only for a status
    /// written by Flagger, whose hashes flaggit cannot reproduce.
    TargetIsPrimary,
}

/// The answer to a [`Question::Gate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateAnswer {
    pub open: bool,
    /// Which gate holds the release and why, for the event ("approval-gate: 403 ...").
    pub message: String,
    /// Do not alert while this gate holds the release (`muteAlert`).
    pub mute_alert: bool,
}

impl GateAnswer {
    pub fn open() -> Self {
        Self {
            open: true,
            message: String::new(),
            mute_alert: false,
        }
    }

    pub fn closed(message: impl Into<String>) -> Self {
        Self {
            open: false,
            message: message.into(),
            mute_alert: false,
        }
    }
}

/// The answer to [`Question::Analysis`]: the `rollout` webhooks and metric checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnalysisAnswer {
    /// None when everything passed; otherwise the event message of the first failure.
    pub failure: Option<String>,
    /// The metric checks that ran, in order.
    pub checks: Vec<CheckResult>,
}

/// Answers gathered so far in this tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    pub primary_ready: Option<Readiness>,
    pub canary_ready: Option<Readiness>,
    pub gates: Vec<(Gate, GateAnswer)>,
    pub analysis: Option<AnalysisAnswer>,
    pub target_is_primary: Option<bool>,
}

impl Answers {
    fn gate(&self, gate: Gate) -> Option<&GateAnswer> {
        self.gates.iter().find(|(g, _)| *g == gate).map(|(_, a)| a)
    }

    /// Records the answer to `question`-like gate `gate`.
    pub fn set_gate(&mut self, gate: Gate, answer: GateAnswer) {
        self.gates.retain(|(g, _)| *g != gate);
        self.gates.push((gate, answer));
    }
}

/// What the controller observed before the tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub now: Timestamp,
    /// The target's revision now.
    pub revision: Revision,
    /// The traffic split in force now.
    pub routes: Routes,
    /// `spec.suspend`.
    pub suspended: bool,
    /// The `flaggit.dev/retry` annotation of the Canary.
    pub retry: Option<String>,
    /// Whether this reconcile is an analysis tick (the interval has passed since the last
    /// one). Reconciles between ticks only detect revisions and suspension.
    pub tick_due: bool,
    pub answers: Answers,
}

/// Something to do to the cluster, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SetRoutes(Routes),
    /// Scale the target up to serve as canary.
    ScaleCanaryUp,
    /// Scale the target to zero.
    ScaleCanaryDown,
    /// Copy the target to the primary.
    Promote,
    /// Call the `post-rollout` webhooks with this phase.
    PostRolloutHooks(CanaryPhase),
}

/// A Kubernetes event on the Canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub message: String,
}

/// Alert severities, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

/// A message for the canary's alert providers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub severity: Severity,
    pub message: String,
}

/// How a release ended, for the `flagger_canary_{successes,failures}_total` metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { skipped: bool },
    Failed,
}

/// What a record in the Git ledger says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// The primary was created from the target.
    Initialized,
    /// A new revision was detected and the analysis starts.
    Detected,
    /// A new revision replaced the one under analysis; the analysis starts over.
    Restarted,
    /// A gate holds the release.
    Waiting,
    /// Traffic moved one step (weight or iteration).
    Step,
    /// A check failed; the release holds its step.
    Halted,
    /// The analysis passed; the primary is being updated.
    Promoting,
    /// The release was promoted.
    Promoted,
    /// The release was rolled back.
    RolledBack,
    /// The target went back to the promoted revision: the rollout ended with no change.
    Cancelled,
}

/// One entry for the Git record (and the ledger) of a release.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub kind: RecordKind,
    /// The target revision the record is about.
    pub revision: String,
    pub phase: CanaryPhase,
    pub weight: i32,
    pub iteration: i32,
    pub failed_checks: i32,
    pub checks: Vec<CheckResult>,
    /// Why (rollback reason, the gate that holds the release, the failed check).
    pub reason: String,
}

/// When to look at the canary again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// At the next analysis tick (`analysis.interval` from now).
    Interval,
    /// Soon, while waiting for pods to become ready: `min(interval, 5s)`.
    Soon,
    /// Keep the tick already scheduled (this reconcile was between ticks).
    Keep,
    /// Nothing is running: wait for a change.
    Idle,
}

/// Waiting for readiness re-checks this often at most.
pub const SOON: Duration = Duration::from_secs(5);

/// The outcome of a tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// The status to write (equal to the old one when nothing changed).
    pub status: CanaryStatus,
    pub events: Vec<Event>,
    pub alerts: Vec<Alert>,
    pub records: Vec<Record>,
    pub outcome: Option<Outcome>,
    pub requeue: Requeue,
    /// Whether the analysis ran (the tick counts towards `flagger_canary_duration_seconds`).
    pub analysed: bool,
}

/// Either more information is needed, or the tick is decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Ask(Question),
    Decide(Box<Decision>),
}

/// Decides one reconcile of a canary. Call again with the answer while it returns
/// [`Step::Ask`]; each question is asked at most once per tick.
pub fn decide(plan: &Plan, status: &CanaryStatus, obs: &Observation) -> Step {
    let mut tick = Tick::new(plan, status, obs);
    match tick.run() {
        Ok(()) => Step::Decide(Box::new(tick.decision)),
        Err(question) => Step::Ask(question),
    }
}

/// The status phase, with "no phase" read as Initializing.
fn phase_of(status: &CanaryStatus) -> CanaryPhase {
    status.phase.unwrap_or(CanaryPhase::Initializing)
}

struct Tick<'a> {
    plan: &'a Plan,
    obs: &'a Observation,
    old: &'a CanaryStatus,
    decision: Decision,
}

/// `Err` carries the question to ask before deciding.
type Asked<T> = Result<T, Question>;

impl<'a> Tick<'a> {
    fn new(plan: &'a Plan, status: &'a CanaryStatus, obs: &'a Observation) -> Self {
        Self {
            plan,
            obs,
            old: status,
            decision: Decision {
                actions: Vec::new(),
                status: status.clone(),
                events: Vec::new(),
                alerts: Vec::new(),
                records: Vec::new(),
                outcome: None,
                requeue: Requeue::Idle,
                analysed: false,
            },
        }
    }

    fn run(&mut self) -> Asked<()> {
        self.note_retry();
        if self.obs.suspended {
            if self.old.suspended != Some(true) {
                self.event(false, "skipping canary run as object is suspended".into());
                self.decision.status.suspended = Some(true);
            }
            self.decision.requeue = Requeue::Idle;
            return Ok(());
        }
        self.decision.status.suspended = None;

        let phase = phase_of(self.old);
        match phase {
            CanaryPhase::Initializing => self.initialize(),
            CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed => self.idle(phase),
            CanaryPhase::Waiting => self.waiting(),
            CanaryPhase::Progressing
            | CanaryPhase::WaitingPromotion
            | CanaryPhase::Promoting
            | CanaryPhase::Finalising => self.running(phase),
            // Deletion is the finalizer's business.
            CanaryPhase::Terminating | CanaryPhase::Terminated => Ok(()),
        }
    }

    // --- phases -------------------------------------------------------------------------

    fn initialize(&mut self) -> Asked<()> {
        // Flagger's initial status has weight 0; without it `kubectl get canary` is blank.
        self.decision.status.canary_weight.get_or_insert(0);
        if !self.plan.skip_analysis {
            match self.primary_ready()? {
                Readiness::Ready => {}
                // The primary's own changes wake the canary; the interval is a fallback.
                Readiness::Waiting(_) => {
                    self.set_phase(CanaryPhase::Initializing);
                    self.decision.requeue = Requeue::Interval;
                    return Ok(());
                }
                Readiness::Failed(message) => {
                    self.set_phase(CanaryPhase::Initializing);
                    self.event(
                        true,
                        format!("Primary of {} is not ready: {message}", self.plan.id()),
                    );
                    self.decision.requeue = Requeue::Interval;
                    return Ok(());
                }
            }
        }
        self.act(Action::ScaleCanaryDown);
        self.set_phase(CanaryPhase::Initialized);
        self.set_applied();
        self.decision.status.last_promoted_spec = Some(self.obs.revision.hash.clone());
        self.event(false, format!("Initialization done! {}", self.plan.id()));
        self.alert(
            Severity::Info,
            format!("New {} detected, initialization completed.", self.plan.kind),
        );
        self.record(RecordKind::Initialized, "");
        self.decision.requeue = Requeue::Idle;
        Ok(())
    }

    fn idle(&mut self, phase: CanaryPhase) -> Asked<()> {
        if self.foreign_hashes() {
            // Written by Flagger: adopt the canary if the primary already runs this target.
            if self.ask_target_is_primary()? {
                self.set_applied();
                self.decision.status.last_promoted_spec = Some(self.obs.revision.hash.clone());
                self.event(
                    false,
                    format!(
                        "Adopted {} from Flagger: the primary runs the current target",
                        self.plan.id()
                    ),
                );
                return Ok(());
            }
            return self.new_revision();
        }
        let hash = &self.obs.revision.hash;
        let changed = Some(hash) != self.old.last_applied_spec.as_ref()
            && Some(hash) != self.old.last_promoted_spec.as_ref();
        let retry = phase == CanaryPhase::Failed && self.retry_requested();
        if retry && !changed {
            self.event(
                false,
                format!(
                    "Retrying {} at the request of annotation flaggit.dev/retry",
                    self.plan.target_id()
                ),
            );
        }
        if changed || retry {
            return self.new_revision();
        }
        Ok(())
    }

    fn waiting(&mut self) -> Asked<()> {
        if Some(&self.obs.revision.hash) == self.old.last_promoted_spec.as_ref() {
            // The new revision went away before it started: the primary serves as before.
            self.set_phase(CanaryPhase::Initialized);
            self.set_applied();
            self.event(
                false,
                format!(
                    "{} is back at the promoted revision; no rollout needed",
                    self.plan.target_id()
                ),
            );
            self.record(RecordKind::Cancelled, "target reverted to the promoted revision");
            return Ok(());
        }
        if !self.obs.tick_due {
            self.decision.requeue = Requeue::Keep;
            return Ok(());
        }
        self.new_revision()
    }

    /// A new revision (or a retry) waits for `confirm-rollout`, then scales the canary up.
    fn new_revision(&mut self) -> Asked<()> {
        let gate = self.gate(Gate::ConfirmRollout)?;
        let waiting = phase_of(self.old) == CanaryPhase::Waiting;
        if !gate.open {
            if !waiting {
                self.set_phase(CanaryPhase::Waiting);
                self.event(
                    true,
                    format!(
                        "Halt {} advancement waiting for approval {}",
                        self.plan.id(),
                        gate.message
                    ),
                );
                if !gate.mute_alert {
                    self.alert(Severity::Warn, "Canary is waiting for approval.".into());
                }
                self.record(RecordKind::Waiting, &gate.message);
            }
            self.decision.requeue = Requeue::Interval;
            return Ok(());
        }
        if waiting {
            self.event(
                false,
                format!("Confirm-rollout check passed for {}", self.plan.id()),
            );
        }
        self.event(
            false,
            format!("New revision detected! Scaling up {}", self.plan.target_id()),
        );
        self.alert(
            Severity::Info,
            "New revision detected, progressing canary analysis.".into(),
        );
        self.act(Action::ScaleCanaryUp);
        self.start_progressing();
        self.record(RecordKind::Detected, "");
        self.decision.requeue = Requeue::Interval;
        Ok(())
    }

    fn running(&mut self, phase: CanaryPhase) -> Asked<()> {
        let analysing = matches!(phase, CanaryPhase::Progressing | CanaryPhase::WaitingPromotion);
        let hash = &self.obs.revision.hash;
        if analysing && self.foreign_hashes() {
            // A rollout Flagger started: carry on with it under flaggit's hash.
            self.set_applied();
        } else if analysing && Some(hash) != self.old.last_applied_spec.as_ref() {
            self.revision_changed_mid_rollout();
            return Ok(());
        }
        if !self.obs.tick_due {
            self.decision.requeue = Requeue::Keep;
            return Ok(());
        }

        if !self.plan.skip_analysis {
            match self.primary_ready()? {
                Readiness::Ready => {}
                Readiness::Waiting(_) => {
                    self.decision.requeue = Requeue::Soon;
                    return Ok(());
                }
                Readiness::Failed(message) if !analysing => {
                    self.failed_promotion(&message);
                    return Ok(());
                }
                Readiness::Failed(message) => {
                    self.event(
                        true,
                        format!("Rolling back {} primary not ready: {message}", self.plan.id()),
                    );
                    self.alert(Severity::Error, format!("Primary not ready: {message}"));
                    self.rollback(&format!("primary not ready: {message}"));
                    return Ok(());
                }
            }
        }

        match self.canary_ready()? {
            Readiness::Ready => {}
            Readiness::Waiting(_) => {
                self.decision.requeue = Requeue::Soon;
                return Ok(());
            }
            Readiness::Failed(message) if analysing => {
                self.event(
                    true,
                    format!(
                        "Rolling back {} progress deadline exceeded {message}",
                        self.plan.id()
                    ),
                );
                self.alert(Severity::Error, format!("Progress deadline exceeded {message}"));
                self.rollback(&format!("progress deadline exceeded: {message}"));
                return Ok(());
            }
            // Promoting or finalising: the canary is about to be scaled down anyway.
            Readiness::Failed(_) => {}
        }

        if self.plan.skip_analysis && analysing {
            self.act(Action::SetRoutes(Routes::PRIMARY));
            self.act(Action::Promote);
            self.act(Action::ScaleCanaryDown);
            self.succeed(true);
            return Ok(());
        }

        let rollback = if analysing {
            Some(self.gate(Gate::Rollback)?)
        } else {
            None
        };
        if let Some(gate) = rollback.filter(|g| g.open) {
            self.event(
                true,
                format!("Rolling back {} manual webhook invoked", self.plan.id()),
            );
            self.alert(Severity::Warn, "Rolling back manual webhook invoked".into());
            // Who asked (the rollback webhook, or `/rollback` on the release pull request).
            let reason = if gate.message.is_empty() {
                "manual rollback requested".to_string()
            } else {
                format!("manual rollback requested: {}", gate.message)
            };
            self.rollback(&reason);
            return Ok(());
        }

        match phase {
            CanaryPhase::Promoting => {
                self.promotion_traffic_shift();
                return Ok(());
            }
            CanaryPhase::Finalising => {
                self.act(Action::ScaleCanaryDown);
                self.succeed(false);
                return Ok(());
            }
            _ => {}
        }

        if self.failed_checks() >= self.plan.threshold {
            self.threshold_rollback();
            return Ok(());
        }

        self.decision.analysed = true;
        let routes = self.obs.routes;
        let first = routes.canary == 0 && self.iterations() == 0 && !(self.plan.mirror && routes.mirrored);
        let mut checks = Vec::new();
        if first {
            self.event(
                false,
                format!("Starting canary analysis for {}", self.plan.target_id()),
            );
            let gate = self.gate(Gate::PreRollout)?;
            if !gate.open {
                self.failed_check(gate.message.clone(), Vec::new());
                return Ok(());
            }
        } else {
            let analysis = self.analysis()?;
            if let Some(failure) = analysis.failure {
                self.failed_check(failure, analysis.checks);
                return Ok(());
            }
            checks = analysis.checks;
        }

        match self.plan.strategy {
            Strategy::Canary => self.canary_step(checks),
            Strategy::AbTesting => self.ab_step(checks),
            Strategy::BlueGreen => self.blue_green_step(checks),
        }
    }

    // --- strategies ---------------------------------------------------------------------

    fn canary_step(&mut self, checks: Vec<CheckResult>) -> Asked<()> {
        let routes = self.obs.routes;
        let max = self.plan.max_weight;
        if routes.canary >= max {
            return self.promote(checks);
        }
        let next = self.plan.next_step(routes.canary);
        // The first mirroring step moves no traffic, so it needs no approval.
        let mirror_first = self.plan.mirror && routes.canary == 0 && !routes.mirrored;
        if next > 0 && !mirror_first {
            let gate = self.gate(Gate::ConfirmTrafficIncrease)?;
            if !gate.open {
                self.event(
                    true,
                    format!(
                        "Halt {} advancement waiting for traffic increase approval {}",
                        self.plan.id(),
                        gate.message
                    ),
                );
                if !gate.mute_alert {
                    self.alert(
                        Severity::Warn,
                        "Canary traffic increase is waiting for approval.".into(),
                    );
                }
                self.decision.requeue = Requeue::Interval;
                return Ok(());
            }
        }
        let new = if mirror_first {
            Routes {
                mirrored: true,
                ..Routes::PRIMARY
            }
        } else {
            Routes::canary((routes.canary + next).min(max))
        };
        self.act(Action::SetRoutes(new));
        self.decision.status.canary_weight = Some(new.canary);
        if new.mirrored {
            self.event(
                false,
                format!("Start traffic mirroring to {}", self.plan.target_id()),
            );
        } else {
            self.event(
                false,
                format!("Advance {} canary weight {}", self.plan.id(), new.canary),
            );
        }
        self.step_record(checks);
        self.decision.requeue = Requeue::Interval;
        Ok(())
    }

    fn ab_step(&mut self, checks: Vec<CheckResult>) -> Asked<()> {
        let done = self.iterations();
        if done >= self.plan.iterations {
            return self.promote(checks);
        }
        let iteration = done + 1;
        self.act(Action::SetRoutes(Routes::canary(100)));
        self.decision.status.canary_weight = Some(100);
        self.decision.status.iterations = Some(iteration);
        self.event(
            false,
            format!(
                "Advance {} canary iteration {iteration}/{}",
                self.plan.id(),
                self.plan.iterations
            ),
        );
        self.step_record(checks);
        self.decision.requeue = Requeue::Interval;
        Ok(())
    }

    fn blue_green_step(&mut self, checks: Vec<CheckResult>) -> Asked<()> {
        let done = self.iterations();
        let n = self.plan.iterations;
        let routing = !self.plan.blue_green_only;
        if done < n {
            if routing && self.plan.mirror && !self.obs.routes.mirrored {
                self.act(Action::SetRoutes(Routes {
                    mirrored: true,
                    ..Routes::PRIMARY
                }));
                self.event(false, "Start traffic mirroring".into());
            }
            self.decision.status.iterations = Some(done + 1);
            self.event(
                false,
                format!("Advance {} canary iteration {}/{n}", self.plan.id(), done + 1),
            );
            self.step_record(checks);
            self.decision.requeue = Requeue::Interval;
            return Ok(());
        }
        if !self.promotion_gate()? {
            return Ok(());
        }
        if done == n {
            if routing {
                self.event(
                    false,
                    if self.plan.mirror {
                        "Stop traffic mirroring and route all traffic to canary".into()
                    } else {
                        "Routing all traffic to canary".into()
                    },
                );
                self.act(Action::SetRoutes(Routes::canary(100)));
                self.decision.status.canary_weight = Some(100);
            }
            self.decision.status.iterations = Some(done + 1);
            self.step_record(checks);
            self.decision.requeue = Requeue::Interval;
            return Ok(());
        }
        self.start_promotion(checks);
        Ok(())
    }

    /// At the end of the analysis: the `confirm-promotion` gate, then promotion.
    fn promote(&mut self, checks: Vec<CheckResult>) -> Asked<()> {
        if self.promotion_gate()? {
            self.start_promotion(checks);
        }
        Ok(())
    }

    /// Asks `confirm-promotion`; when it is closed, holds the release in WaitingPromotion
    /// (the checks keep running every tick) and returns false.
    fn promotion_gate(&mut self) -> Asked<bool> {
        let gate = self.gate(Gate::ConfirmPromotion)?;
        let waiting = phase_of(self.old) == CanaryPhase::WaitingPromotion;
        if !gate.open {
            if !waiting {
                self.set_phase(CanaryPhase::WaitingPromotion);
                self.event(
                    true,
                    format!(
                        "Halt {} advancement waiting for promotion approval {}",
                        self.plan.id(),
                        gate.message
                    ),
                );
                if !gate.mute_alert {
                    self.alert(Severity::Warn, "Canary promotion is waiting for approval.".into());
                }
                self.record(RecordKind::Waiting, &gate.message);
            }
            self.decision.requeue = Requeue::Interval;
            return Ok(false);
        }
        if waiting {
            self.event(
                false,
                format!("Confirm-promotion check passed for {}", self.plan.id()),
            );
        }
        Ok(true)
    }

    fn start_promotion(&mut self, checks: Vec<CheckResult>) {
        self.event(
            false,
            format!(
                "Copying {} template spec to {}-primary.{}",
                self.plan.target_id(),
                self.plan.target,
                self.plan.namespace
            ),
        );
        self.act(Action::Promote);
        self.set_phase(CanaryPhase::Promoting);
        let mut record = self.make_record(RecordKind::Promoting, "");
        record.checks = checks;
        self.decision.records.push(record);
        self.decision.requeue = Requeue::Interval;
    }

    /// Promoting: move traffic back to the (updated) primary, in one go or by
    /// `stepWeightPromotion`.
    fn promotion_traffic_shift(&mut self) {
        self.decision.requeue = Requeue::Interval;
        let step = self.plan.step_weight_promotion;
        if self.plan.blue_green_only {
            self.set_phase(CanaryPhase::Finalising);
            return;
        }
        let primary = self.obs.routes.primary + step;
        if step <= 0 || primary >= 100 {
            self.act(Action::SetRoutes(Routes::PRIMARY));
            self.decision.status.canary_weight = Some(0);
            self.event(false, "Routing all traffic to primary".into());
            self.set_phase(CanaryPhase::Finalising);
            return;
        }
        let routes = Routes::canary(100 - primary);
        self.act(Action::SetRoutes(routes));
        self.decision.status.canary_weight = Some(routes.canary);
        self.event(
            false,
            format!("Advance {} primary weight {primary}", self.plan.id()),
        );
    }

    // --- endings ------------------------------------------------------------------------

    fn succeed(&mut self, skipped: bool) {
        self.set_phase(CanaryPhase::Succeeded);
        self.decision.status.canary_weight = Some(0);
        self.decision.status.iterations = Some(0);
        self.decision.status.last_promoted_spec = self.decision.status.last_applied_spec.clone();
        self.decision.outcome = Some(Outcome::Succeeded { skipped });
        self.act(Action::PostRolloutHooks(CanaryPhase::Succeeded));
        if skipped {
            self.event(
                false,
                format!(
                    "Promotion completed! Canary analysis was skipped for {}",
                    self.plan.target_id()
                ),
            );
            self.alert(
                Severity::Info,
                "Canary analysis was skipped, promotion finished.".into(),
            );
        } else {
            self.event(
                false,
                format!("Promotion completed! Scaling down {}", self.plan.target_id()),
            );
            self.alert(
                Severity::Info,
                "Canary analysis completed successfully, promotion finished.".into(),
            );
        }
        self.record(
            RecordKind::Promoted,
            if skipped { "analysis skipped" } else { "" },
        );
        self.decision.requeue = Requeue::Idle;
    }

    fn threshold_rollback(&mut self) {
        let n = self.failed_checks();
        self.event(
            true,
            format!(
                "Rolling back {} failed checks threshold reached {n}",
                self.plan.id()
            ),
        );
        self.alert(Severity::Error, format!("Failed checks threshold reached {n}"));
        self.rollback(&format!("failed checks threshold reached {n}"));
    }

    fn rollback(&mut self, reason: &str) {
        self.act(Action::SetRoutes(Routes::PRIMARY));
        self.event(
            true,
            format!("Canary failed! Scaling down {}", self.plan.target_id()),
        );
        self.act(Action::ScaleCanaryDown);
        self.set_phase(CanaryPhase::Failed);
        self.decision.status.canary_weight = Some(0);
        self.decision.status.iterations = Some(0);
        self.decision.outcome = Some(Outcome::Failed);
        self.act(Action::PostRolloutHooks(CanaryPhase::Failed));
        self.record(RecordKind::RolledBack, reason);
        self.decision.requeue = Requeue::Idle;
    }

    /// The primary failed to roll out after promotion: all traffic stays on the canary,
    /// which runs the new version, and the release is marked failed.
    fn failed_promotion(&mut self, message: &str) {
        self.act(Action::SetRoutes(Routes::canary(100)));
        self.set_phase(CanaryPhase::Failed);
        self.decision.status.canary_weight = Some(100);
        self.event(
            true,
            format!(
                "Promotion failed! Primary of {} not ready: {message}",
                self.plan.id()
            ),
        );
        self.alert(
            Severity::Error,
            format!("Promotion failed, primary not ready: {message}"),
        );
        self.decision.outcome = Some(Outcome::Failed);
        self.act(Action::PostRolloutHooks(CanaryPhase::Failed));
        self.record(RecordKind::RolledBack, &format!("promotion failed: {message}"));
        self.decision.requeue = Requeue::Idle;
    }

    fn failed_check(&mut self, message: String, checks: Vec<CheckResult>) {
        let failed = self.failed_checks() + 1;
        self.decision.status.failed_checks = Some(failed);
        self.event(true, message.clone());
        let mut record = self.make_record(RecordKind::Halted, &message);
        record.checks = checks;
        self.decision.records.push(record);
        if failed >= self.plan.threshold {
            self.threshold_rollback();
        } else {
            self.decision.requeue = Requeue::Interval;
        }
    }

    fn revision_changed_mid_rollout(&mut self) {
        self.decision.requeue = Requeue::Interval;
        if Some(&self.obs.revision.hash) == self.old.last_promoted_spec.as_ref() {
            self.act(Action::SetRoutes(Routes::PRIMARY));
            self.act(Action::ScaleCanaryDown);
            self.set_applied();
            self.set_phase(CanaryPhase::Succeeded);
            self.decision.status.canary_weight = Some(0);
            self.decision.status.iterations = Some(0);
            self.decision.status.failed_checks = Some(0);
            self.event(
                false,
                format!(
                    "Rollout of {} cancelled: the target is back at the promoted revision",
                    self.plan.target_id()
                ),
            );
            self.record(RecordKind::Cancelled, "target reverted to the promoted revision");
            self.decision.requeue = Requeue::Idle;
            return;
        }
        self.event(
            false,
            format!(
                "New revision detected! Restarting analysis for {}",
                self.plan.target_id()
            ),
        );
        self.act(Action::SetRoutes(Routes::PRIMARY));
        self.start_progressing();
        self.record(RecordKind::Restarted, "");
    }

    // --- questions ----------------------------------------------------------------------

    fn primary_ready(&self) -> Asked<Readiness> {
        self.obs
            .answers
            .primary_ready
            .clone()
            .ok_or(Question::PrimaryReady)
    }

    fn canary_ready(&self) -> Asked<Readiness> {
        self.obs.answers.canary_ready.clone().ok_or(Question::CanaryReady)
    }

    fn gate(&self, gate: Gate) -> Asked<GateAnswer> {
        self.obs.answers.gate(gate).cloned().ok_or(Question::Gate(gate))
    }

    fn analysis(&self) -> Asked<AnalysisAnswer> {
        self.obs.answers.analysis.clone().ok_or(Question::Analysis)
    }

    fn ask_target_is_primary(&self) -> Asked<bool> {
        self.obs
            .answers
            .target_is_primary
            .ok_or(Question::TargetIsPrimary)
    }

    // --- status helpers -----------------------------------------------------------------

    fn failed_checks(&self) -> i32 {
        self.decision.status.failed_checks.unwrap_or(0)
    }

    fn iterations(&self) -> i32 {
        self.decision.status.iterations.unwrap_or(0)
    }

    /// Whether the status hashes were written by Flagger (no flaggit prefix).
    fn foreign_hashes(&self) -> bool {
        self.old
            .last_applied_spec
            .as_deref()
            .is_some_and(|hash| !hash.starts_with(REVISION_PREFIX))
    }

    fn retry_requested(&self) -> bool {
        self.obs.retry.is_some() && self.obs.retry != self.old.last_retry
    }

    /// The retry annotation is consumed whenever it changes, so a value set while nothing
    /// failed does not fire at a later failure.
    fn note_retry(&mut self) {
        if self.obs.retry.is_some() && self.obs.retry != self.old.last_retry {
            self.decision.status.last_retry = self.obs.retry.clone();
        }
    }

    fn set_applied(&mut self) {
        self.decision.status.last_applied_spec = Some(self.obs.revision.hash.clone());
        self.decision.status.tracked_configs = if self.obs.revision.configs.is_empty() {
            None
        } else {
            Some(self.obs.revision.configs.clone())
        };
    }

    fn start_progressing(&mut self) {
        self.set_phase(CanaryPhase::Progressing);
        self.set_applied();
        self.decision.status.canary_weight = Some(0);
        self.decision.status.iterations = Some(0);
        self.decision.status.failed_checks = Some(0);
    }

    fn set_phase(&mut self, phase: CanaryPhase) {
        let status = &mut self.decision.status;
        let now = Time(self.obs.now);
        if status.phase != Some(phase) {
            status.last_transition_time = Some(now.clone());
        }
        status.phase = Some(phase);
        let condition = promoted_condition(phase, self.plan.kind, now);
        let conditions = status.conditions.get_or_insert_default();
        match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
            // Unchanged: left as it is, so an unchanged status is not written again.
            Some(existing)
                if existing.status == condition.status
                    && existing.reason == condition.reason
                    && existing.message == condition.message => {}
            Some(existing) => {
                // The transition time moves only when the condition's status does.
                let keep = existing.status == condition.status;
                let since = existing.last_transition_time.clone();
                *existing = CanaryCondition {
                    last_transition_time: if keep {
                        since
                    } else {
                        condition.last_transition_time
                    },
                    ..condition
                };
            }
            None => conditions.push(condition),
        }
    }

    fn act(&mut self, action: Action) {
        self.decision.actions.push(action);
    }

    fn event(&mut self, warning: bool, message: String) {
        self.decision.events.push(Event { warning, message });
    }

    fn alert(&mut self, severity: Severity, message: String) {
        self.decision.alerts.push(Alert { severity, message });
    }

    fn make_record(&self, kind: RecordKind, reason: &str) -> Record {
        let status = &self.decision.status;
        Record {
            kind,
            revision: self.obs.revision.hash.clone(),
            phase: phase_of(status),
            weight: status.canary_weight.unwrap_or(0),
            iteration: status.iterations.unwrap_or(0),
            failed_checks: status.failed_checks.unwrap_or(0),
            checks: Vec::new(),
            reason: reason.to_string(),
        }
    }

    fn record(&mut self, kind: RecordKind, reason: &str) {
        let record = self.make_record(kind, reason);
        self.decision.records.push(record);
    }

    fn step_record(&mut self, checks: Vec<CheckResult>) {
        let mut record = self.make_record(RecordKind::Step, "");
        record.checks = checks;
        self.decision.records.push(record);
    }
}

/// The `Promoted` condition for a phase (Flagger's `MakeStatusConditions`), with the
/// Terminating and Terminated messages Flagger never wrote.
pub fn promoted_condition(phase: CanaryPhase, kind: &str, now: Time) -> CanaryCondition {
    use CanaryPhase::*;
    let (status, message) = match phase {
        Initializing => (
            "Unknown",
            format!("New {kind} detected, starting initialization."),
        ),
        Initialized => ("True", format!("{kind} initialization completed.")),
        Waiting | WaitingPromotion => ("Unknown", "Waiting for approval.".to_string()),
        Progressing => (
            "Unknown",
            "New revision detected, progressing canary analysis.".to_string(),
        ),
        Promoting => (
            "Unknown",
            "Canary analysis completed, starting primary rolling update.".to_string(),
        ),
        Finalising => (
            "Unknown",
            "Canary analysis completed, routing all traffic to primary.".to_string(),
        ),
        Succeeded => (
            "True",
            "Canary analysis completed successfully, promotion finished.".to_string(),
        ),
        Failed => ("False", format!("Canary analysis failed, {kind} scaled to zero.")),
        Terminating => (
            "Unknown",
            format!("Canary is being deleted, restoring the {kind}."),
        ),
        Terminated => (
            "True",
            format!("Canary deleted, the {kind} serves traffic again."),
        ),
    };
    CanaryCondition {
        type_: "Promoted".into(),
        status: status.into(),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
        reason: Some(format!("{phase:?}")),
        message: Some(message),
    }
}
