//! Unit tests of the state machine: a small simulated world answers the questions and
//! applies the decisions, and each test walks a release through its phases.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::api::{
    CanaryAnalysis, CanaryPhase, CanarySpec, CanaryStatus, Capabilities, HttpMatchRequest, TargetRef,
};

const V1: &str = "flaggit1-aaaa";
const V2: &str = "flaggit1-bbbb";
const V3: &str = "flaggit1-cccc";

fn spec(analysis: CanaryAnalysis) -> CanarySpec {
    CanarySpec {
        target_ref: TargetRef {
            api_version: "apps/v1".into(),
            kind: Default::default(),
            name: "podinfo".into(),
        },
        analysis: Some(analysis),
        ..Default::default()
    }
}

fn canary_analysis(step: i32, max: i32, threshold: i32) -> CanaryAnalysis {
    CanaryAnalysis {
        interval: Some("1m".into()),
        threshold: Some(threshold),
        step_weight: Some(step),
        max_weight: Some(max),
        ..Default::default()
    }
}

/// A simulated cluster: answers questions from its settings and applies decisions.
struct World {
    plan: Plan,
    status: CanaryStatus,
    routes: Routes,
    revision: String,
    configs: BTreeMap<String, String>,
    primary: Readiness,
    canary: Readiness,
    closed_gates: Vec<Gate>,
    analysis_failure: Option<String>,
    target_is_primary: bool,
    suspended: bool,
    retry: Option<String>,
    tick_due: bool,
    now: jiff::Timestamp,
    /// Everything done, in order.
    actions: Vec<Action>,
    events: Vec<String>,
    alerts: Vec<Alert>,
    records: Vec<RecordKind>,
    outcomes: Vec<Outcome>,
    asked: Vec<Question>,
}

impl World {
    fn new(spec: &CanarySpec) -> Self {
        Self::with_provider(spec, Capabilities::ALL)
    }

    fn with_provider(spec: &CanarySpec, capabilities: Capabilities) -> Self {
        Self {
            plan: Plan::new(spec, "podinfo", "test", capabilities, MIN_INTERVAL),
            status: CanaryStatus::default(),
            routes: Routes::PRIMARY,
            revision: V1.into(),
            configs: BTreeMap::new(),
            primary: Readiness::Ready,
            canary: Readiness::Ready,
            closed_gates: Vec::new(),
            analysis_failure: None,
            target_is_primary: false,
            suspended: false,
            retry: None,
            tick_due: true,
            now: "2026-11-22T10:00:00Z".parse().expect("timestamp"),
            actions: Vec::new(),
            events: Vec::new(),
            alerts: Vec::new(),
            records: Vec::new(),
            outcomes: Vec::new(),
            asked: Vec::new(),
        }
    }

    fn phase(&self) -> Option<CanaryPhase> {
        self.status.phase
    }

    fn tick(&mut self) -> Decision {
        let mut obs = Observation {
            now: self.now,
            revision: Revision {
                hash: self.revision.clone(),
                configs: self.configs.clone(),
            },
            routes: self.routes,
            suspended: self.suspended,
            retry: self.retry.clone(),
            tick_due: self.tick_due,
            answers: Answers::default(),
        };
        let mut questions = Vec::new();
        let decision = loop {
            match decide(&self.plan, &self.status, &obs) {
                Step::Decide(decision) => break *decision,
                Step::Ask(question) => {
                    assert!(
                        !questions.contains(&question),
                        "asked {question:?} twice in one tick"
                    );
                    questions.push(question);
                    self.answer(question, &mut obs.answers);
                }
            }
        };
        self.asked = questions;
        for action in &decision.actions {
            if let Action::SetRoutes(routes) = action {
                self.routes = *routes;
            }
        }
        self.actions.extend(decision.actions.iter().cloned());
        self.events
            .extend(decision.events.iter().map(|e| e.message.clone()));
        self.alerts.extend(decision.alerts.iter().cloned());
        self.records.extend(decision.records.iter().map(|r| r.kind));
        self.outcomes.extend(decision.outcome);
        self.status = decision.status.clone();
        self.now += Duration::from_secs(60);
        decision
    }

    fn answer(&self, question: Question, answers: &mut Answers) {
        match question {
            Question::PrimaryReady => answers.primary_ready = Some(self.primary.clone()),
            Question::CanaryReady => answers.canary_ready = Some(self.canary.clone()),
            Question::Gate(gate) => {
                let closed = self.closed_gates.contains(&gate);
                // The rollback gate is "open" only when a rollback is requested.
                answers.set_gate(
                    gate,
                    if closed {
                        GateAnswer::closed(format!("{gate:?} says no"))
                    } else {
                        GateAnswer::open()
                    },
                );
            }
            Question::Analysis => {
                answers.analysis = Some(AnalysisAnswer {
                    failure: self.analysis_failure.clone(),
                    checks: vec![CheckResult {
                        name: "request-success-rate".into(),
                        value: Some(99.5),
                        passed: self.analysis_failure.is_none(),
                        message: self.analysis_failure.clone().unwrap_or_default(),
                    }],
                })
            }
            Question::TargetIsPrimary => answers.target_is_primary = Some(self.target_is_primary),
        }
    }

    /// Runs ticks until the phase is `phase`, at most `max` ticks; returns how many.
    fn tick_until(&mut self, phase: CanaryPhase, max: usize) -> usize {
        for n in 1..=max {
            self.tick();
            if self.phase() == Some(phase) {
                return n;
            }
        }
        panic!(
            "phase {phase:?} not reached in {max} ticks; at {:?}, events {:#?}",
            self.phase(),
            self.events
        );
    }

    fn initialized(mut self) -> Self {
        // The rollback gate answers "open" only when asked to roll back.
        self.closed_gates.push(Gate::Rollback);
        self.tick();
        assert_eq!(self.phase(), Some(CanaryPhase::Initialized));
        self.clear();
        self
    }

    fn clear(&mut self) {
        self.actions.clear();
        self.events.clear();
        self.alerts.clear();
        self.records.clear();
        self.outcomes.clear();
    }

    fn weights(&self) -> Vec<i32> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::SetRoutes(r) => Some(r.canary),
                _ => None,
            })
            .collect()
    }
}

// --- plan --------------------------------------------------------------------------------

#[test]
fn plan_applies_flaggers_defaults() {
    let plan = Plan::new(
        &spec(CanaryAnalysis {
            step_weight: Some(10),
            ..Default::default()
        }),
        "podinfo",
        "test",
        Capabilities::ALL,
        MIN_INTERVAL,
    );
    assert_eq!(plan.interval, Duration::from_secs(60));
    assert_eq!(plan.threshold, 1);
    assert_eq!(plan.max_weight, 100);
    assert_eq!(plan.strategy, Strategy::Canary);
    assert!(!plan.skip_analysis);
}

#[test]
fn plan_clamps_the_interval_and_reads_strategies() {
    let mut analysis = canary_analysis(10, 50, 2);
    analysis.interval = Some("2s".into());
    let plan = Plan::new(&spec(analysis.clone()), "p", "n", Capabilities::ALL, MIN_INTERVAL);
    assert_eq!(plan.interval, MIN_INTERVAL);
    let plan = Plan::new(
        &spec(analysis.clone()),
        "p",
        "n",
        Capabilities::ALL,
        Duration::from_secs(1),
    );
    assert_eq!(plan.interval, Duration::from_secs(2));

    analysis.step_weight = None;
    analysis.iterations = Some(3);
    assert_eq!(
        Plan::new(&spec(analysis.clone()), "p", "n", Capabilities::ALL, MIN_INTERVAL).strategy,
        Strategy::BlueGreen
    );
    analysis.match_ = Some(vec![HttpMatchRequest::default()]);
    assert_eq!(
        Plan::new(&spec(analysis.clone()), "p", "n", Capabilities::ALL, MIN_INTERVAL).strategy,
        Strategy::AbTesting
    );
    // A provider without header matching cannot route by match: Blue/Green.
    assert_eq!(
        Plan::new(
            &spec(analysis),
            "p",
            "n",
            Capabilities::BLUE_GREEN_ONLY,
            MIN_INTERVAL
        )
        .strategy,
        Strategy::BlueGreen
    );
}

#[test]
fn kubernetes_provider_forces_blue_green_with_ten_iterations() {
    let plan = Plan::new(
        &spec(canary_analysis(10, 50, 1)),
        "p",
        "n",
        Capabilities::BLUE_GREEN_ONLY,
        MIN_INTERVAL,
    );
    assert_eq!(plan.strategy, Strategy::BlueGreen);
    assert_eq!(plan.iterations, 10);
}

#[test]
fn step_weights_schedule_and_max_weight() {
    let analysis = CanaryAnalysis {
        step_weights: Some(vec![1, 10, 50, 80]),
        ..Default::default()
    };
    let plan = Plan::new(&spec(analysis.clone()), "p", "n", Capabilities::ALL, MIN_INTERVAL);
    assert_eq!(plan.max_weight, 80);
    assert_eq!(plan.next_step(0), 1);
    assert_eq!(plan.next_step(1), 9);
    assert_eq!(plan.next_step(10), 40);
    assert_eq!(plan.next_step(50), 30);
    let capped = CanaryAnalysis {
        max_weight: Some(60),
        ..analysis
    };
    assert_eq!(
        Plan::new(&spec(capped), "p", "n", Capabilities::ALL, MIN_INTERVAL).max_weight,
        60
    );
}

#[test]
fn parses_intervals() {
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    for bad in ["", "m", "1 minute", "10", "1x", "-1s"] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

// --- initialization ---------------------------------------------------------------------

#[test]
fn initialization_waits_for_the_primary_then_scales_the_target_down() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1)));
    world.primary = Readiness::Waiting("0 of 2 updated replicas are available".into());
    let decision = world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Initializing));
    // `kubectl get canary` shows weight 0 from the first status on, as under Flagger.
    assert_eq!(world.status.canary_weight, Some(0));
    assert_eq!(decision.requeue, Requeue::Interval);
    assert!(decision.actions.is_empty());
    let condition = &world.status.conditions.as_ref().expect("condition")[0];
    assert_eq!(condition.type_, "Promoted");
    assert_eq!(condition.status, "Unknown");
    assert_eq!(
        condition.message.as_deref(),
        Some("New Deployment detected, starting initialization.")
    );

    world.primary = Readiness::Ready;
    let decision = world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Initialized));
    assert_eq!(world.status.canary_weight, Some(0));
    assert_eq!(decision.actions, vec![Action::ScaleCanaryDown]);
    assert_eq!(world.status.last_applied_spec.as_deref(), Some(V1));
    assert_eq!(world.status.last_promoted_spec.as_deref(), Some(V1));
    assert_eq!(world.events, ["Initialization done! podinfo.test"]);
    assert_eq!(
        world.alerts,
        [Alert {
            severity: Severity::Info,
            message: "New Deployment detected, initialization completed.".into()
        }]
    );
    assert_eq!(world.records, [RecordKind::Initialized]);
    assert_eq!(decision.requeue, Requeue::Idle);
}

#[test]
fn skip_analysis_initializes_without_waiting_for_the_primary() {
    let mut s = spec(canary_analysis(10, 50, 1));
    s.skip_analysis = Some(true);
    let mut world = World::new(&s);
    world.primary = Readiness::Waiting("not yet".into());
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Initialized));
    assert!(!world.asked.contains(&Question::PrimaryReady));
}

#[test]
fn initialized_and_unchanged_does_nothing() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    let decision = world.tick();
    assert!(decision.actions.is_empty());
    assert!(decision.events.is_empty());
    assert_eq!(decision.requeue, Requeue::Idle);
    assert_eq!(world.phase(), Some(CanaryPhase::Initialized));
}

// --- canary strategy --------------------------------------------------------------------

#[test]
fn successful_canary_steps_to_max_weight_and_promotes() {
    let mut world = World::new(&spec(canary_analysis(20, 60, 2))).initialized();
    world.revision = V2.into();
    let decision = world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(decision.actions, vec![Action::ScaleCanaryUp]);
    assert_eq!(world.events, ["New revision detected! Scaling up podinfo.test"]);
    assert_eq!(world.status.last_applied_spec.as_deref(), Some(V2));
    assert_eq!(world.status.last_promoted_spec.as_deref(), Some(V1));

    world.tick_until(CanaryPhase::Promoting, 10);
    assert_eq!(world.weights(), [20, 40, 60]);
    assert!(
        world
            .events
            .contains(&"Starting canary analysis for podinfo.test".to_string())
    );
    assert!(
        world
            .events
            .contains(&"Advance podinfo.test canary weight 60".to_string())
    );
    assert!(world.actions.contains(&Action::Promote));
    world.tick_until(CanaryPhase::Finalising, 1);
    assert_eq!(world.routes, Routes::PRIMARY);
    world.tick_until(CanaryPhase::Succeeded, 1);
    assert_eq!(
        world.actions.last(),
        Some(&Action::PostRolloutHooks(CanaryPhase::Succeeded))
    );
    assert!(world.actions.contains(&Action::ScaleCanaryDown));
    assert_eq!(world.status.last_promoted_spec.as_deref(), Some(V2));
    assert_eq!(world.outcomes, [Outcome::Succeeded { skipped: false }]);
    assert_eq!(
        world.records,
        [
            RecordKind::Detected,
            RecordKind::Step,
            RecordKind::Step,
            RecordKind::Step,
            RecordKind::Promoting,
            RecordKind::Promoted
        ]
    );
    assert_eq!(
        world.events.last().map(String::as_str),
        Some("Promotion completed! Scaling down podinfo.test")
    );
    // The promoted revision is not analysed again.
    world.clear();
    world.tick();
    assert!(world.actions.is_empty());
}

#[test]
fn weights_never_exceed_max_weight() {
    let mut world = World::new(&spec(canary_analysis(30, 50, 1))).initialized();
    world.revision = V2.into();
    world.tick_until(CanaryPhase::Promoting, 10);
    assert_eq!(world.weights(), [30, 50]);
}

#[test]
fn step_weights_are_followed() {
    let analysis = CanaryAnalysis {
        interval: Some("1m".into()),
        threshold: Some(1),
        step_weights: Some(vec![5, 25, 75]),
        ..Default::default()
    };
    let mut world = World::new(&spec(analysis)).initialized();
    world.revision = V2.into();
    world.tick_until(CanaryPhase::Promoting, 10);
    assert_eq!(world.weights(), [5, 25, 75]);
}

#[test]
fn failing_checks_roll_back_on_the_tick_that_reaches_the_threshold() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 2))).initialized();
    world.revision = V2.into();
    world.tick(); // detected
    world.tick(); // first step: pre-rollout, weight 10
    world.analysis_failure = Some("Halt podinfo.test advancement success rate 80.00% < 99%".into());
    world.tick();
    assert_eq!(world.status.failed_checks, Some(1));
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(world.routes.canary, 10, "a failed check holds the step");
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Failed), "{:#?}", world.events);
    assert_eq!(world.routes, Routes::PRIMARY);
    assert_eq!(world.status.failed_checks, Some(2));
    assert_eq!(world.outcomes, [Outcome::Failed]);
    assert!(world.actions.contains(&Action::ScaleCanaryDown));
    assert!(
        world
            .actions
            .contains(&Action::PostRolloutHooks(CanaryPhase::Failed))
    );
    assert!(!world.actions.contains(&Action::Promote));
    assert!(
        world
            .events
            .contains(&"Rolling back podinfo.test failed checks threshold reached 2".to_string())
    );
    assert!(
        world
            .events
            .contains(&"Canary failed! Scaling down podinfo.test".to_string())
    );
    assert!(world.alerts.contains(&Alert {
        severity: Severity::Error,
        message: "Failed checks threshold reached 2".into()
    }));
    assert_eq!(world.records.last(), Some(&RecordKind::RolledBack));
    assert_eq!(world.status.last_promoted_spec.as_deref(), Some(V1));
}

#[test]
fn a_failed_revision_is_not_retried_until_asked() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into();
    world.analysis_failure = Some("Halt".into());
    world.tick_until(CanaryPhase::Failed, 10);
    world.analysis_failure = None;
    world.clear();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Failed));
    assert!(world.actions.is_empty(), "{:?}", world.actions);

    world.retry = Some("1".into());
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(world.status.last_retry.as_deref(), Some("1"));
    assert_eq!(world.status.failed_checks, Some(0));
    assert!(world.events[0].starts_with("Retrying podinfo.test"));
    world.tick_until(CanaryPhase::Succeeded, 20);
    // The same annotation value does not retry again.
    world.clear();
    world.tick();
    assert!(world.actions.is_empty());
}

#[test]
fn a_retry_annotation_set_while_healthy_is_consumed() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.retry = Some("early".into());
    world.tick();
    assert_eq!(world.status.last_retry.as_deref(), Some("early"));
    world.revision = V2.into();
    world.analysis_failure = Some("Halt".into());
    world.tick_until(CanaryPhase::Failed, 10);
    world.clear();
    world.tick();
    assert_eq!(
        world.phase(),
        Some(CanaryPhase::Failed),
        "a stale value must not retry"
    );
}

#[test]
fn a_new_revision_after_a_failure_starts_a_new_analysis() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into();
    world.analysis_failure = Some("Halt".into());
    world.tick_until(CanaryPhase::Failed, 10);
    world.analysis_failure = None;
    world.revision = V3.into();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(world.status.last_applied_spec.as_deref(), Some(V3));
}

#[test]
fn reverting_to_the_promoted_revision_after_a_failure_starts_nothing() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into();
    world.analysis_failure = Some("Halt".into());
    world.tick_until(CanaryPhase::Failed, 10);
    world.revision = V1.into();
    world.clear();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Failed));
    assert!(world.actions.is_empty());
    assert!(world.records.is_empty());
}

#[test]
fn reverting_mid_rollout_ends_it_without_analysis() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    assert_eq!(world.routes.canary, 10);
    world.revision = V1.into();
    world.clear();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(world.routes, Routes::PRIMARY);
    assert_eq!(
        world.actions,
        [Action::SetRoutes(Routes::PRIMARY), Action::ScaleCanaryDown]
    );
    assert!(!world.actions.contains(&Action::Promote));
    assert_eq!(world.records, [RecordKind::Cancelled]);
    assert!(world.outcomes.is_empty());
}

#[test]
fn a_new_revision_mid_rollout_restarts_the_analysis() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 3))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    world.analysis_failure = Some("Halt".into());
    world.tick();
    assert_eq!(world.status.failed_checks, Some(1));
    world.analysis_failure = None;
    world.revision = V3.into();
    world.tick_due = false; // detected between ticks, at once
    world.clear();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(world.routes, Routes::PRIMARY);
    assert_eq!(world.status.failed_checks, Some(0));
    assert_eq!(world.status.last_applied_spec.as_deref(), Some(V3));
    assert_eq!(
        world.events,
        ["New revision detected! Restarting analysis for podinfo.test"]
    );
    assert_eq!(world.records, [RecordKind::Restarted]);
}

#[test]
fn between_ticks_nothing_advances() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    world.tick_due = false;
    world.clear();
    let decision = world.tick();
    assert!(decision.actions.is_empty());
    assert_eq!(decision.requeue, Requeue::Keep);
    assert!(world.asked.is_empty(), "asked {:?}", world.asked);
}

#[test]
fn progress_deadline_rolls_back() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 5))).initialized();
    world.revision = V2.into();
    world.tick();
    world.canary = Readiness::Waiting("1 of 2 updated replicas are available".into());
    let decision = world.tick();
    assert_eq!(decision.requeue, Requeue::Soon);
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    world.canary = Readiness::Failed("podinfo has exceeded its progress deadline".into());
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Failed));
    assert!(
        world
            .events
            .iter()
            .any(|e| e
                .starts_with("Rolling back podinfo.test progress deadline exceeded podinfo has exceeded"))
    );
    assert!(
        world
            .alerts
            .iter()
            .any(|a| a.severity == Severity::Error && a.message.starts_with("Progress deadline exceeded"))
    );
}

#[test]
fn pre_rollout_failure_counts_as_a_failed_check() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 2))).initialized();
    world.closed_gates.push(Gate::PreRollout);
    world.revision = V2.into();
    world.tick();
    world.tick();
    assert_eq!(world.status.failed_checks, Some(1));
    assert_eq!(world.routes, Routes::PRIMARY);
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Failed));
}

#[test]
fn confirm_rollout_holds_a_new_revision_in_waiting() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.closed_gates.push(Gate::ConfirmRollout);
    world.revision = V2.into();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Waiting));
    assert!(world.actions.is_empty(), "nothing scales up while waiting");
    assert_eq!(world.alerts[0].message, "Canary is waiting for approval.");
    world.clear();
    world.tick();
    assert!(
        world.events.is_empty(),
        "waiting is reported once: {:?}",
        world.events
    );
    world.closed_gates.retain(|g| *g != Gate::ConfirmRollout);
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(world.actions, [Action::ScaleCanaryUp]);
}

#[test]
fn waiting_revision_reverted_goes_back_to_initialized() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.closed_gates.push(Gate::ConfirmRollout);
    world.revision = V2.into();
    world.tick();
    world.revision = V1.into();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Initialized));
    assert!(!world.actions.contains(&Action::ScaleCanaryUp));
}

#[test]
fn confirm_traffic_increase_holds_the_step_without_failing() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    assert_eq!(world.routes.canary, 10);
    world.closed_gates.push(Gate::ConfirmTrafficIncrease);
    world.tick();
    world.tick();
    assert_eq!(world.routes.canary, 10);
    assert_eq!(world.status.failed_checks, Some(0));
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    world.closed_gates.retain(|g| *g != Gate::ConfirmTrafficIncrease);
    world.tick();
    assert_eq!(world.routes.canary, 20);
}

#[test]
fn confirm_promotion_waits_and_keeps_checking() {
    let mut world = World::new(&spec(canary_analysis(50, 50, 1))).initialized();
    world.closed_gates.push(Gate::ConfirmPromotion);
    world.revision = V2.into();
    world.tick();
    world.tick();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::WaitingPromotion));
    assert_eq!(world.routes.canary, 50);
    world.clear();
    world.tick();
    assert!(
        world.asked.contains(&Question::Analysis),
        "checks run while waiting"
    );
    assert!(world.events.is_empty(), "{:?}", world.events);
    world.analysis_failure = Some("Halt".into());
    world.tick();
    assert_eq!(
        world.phase(),
        Some(CanaryPhase::Failed),
        "a failure while waiting rolls back"
    );
}

#[test]
fn confirm_promotion_opened_promotes() {
    let mut world = World::new(&spec(canary_analysis(50, 50, 1))).initialized();
    world.closed_gates.push(Gate::ConfirmPromotion);
    world.revision = V2.into();
    world.tick_until(CanaryPhase::WaitingPromotion, 5);
    world.closed_gates.retain(|g| *g != Gate::ConfirmPromotion);
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Promoting));
    assert!(world.actions.contains(&Action::Promote));
}

#[test]
fn rollback_gate_rolls_back() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 5))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    world.closed_gates.retain(|g| *g != Gate::Rollback);
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Failed));
    assert!(
        world
            .events
            .contains(&"Rolling back podinfo.test manual webhook invoked".to_string())
    );
}

#[test]
fn skip_analysis_promotes_at_once() {
    let mut s = spec(canary_analysis(10, 50, 1));
    s.skip_analysis = Some(true);
    let mut world = World::new(&s).initialized();
    world.revision = V2.into();
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(
        world.actions[1..4],
        [
            Action::SetRoutes(Routes::PRIMARY),
            Action::Promote,
            Action::ScaleCanaryDown
        ]
    );
    assert_eq!(world.outcomes, [Outcome::Succeeded { skipped: true }]);
    assert!(!world.asked.contains(&Question::Analysis));
}

#[test]
fn progressive_promotion_moves_traffic_back_in_steps() {
    let mut analysis = canary_analysis(50, 50, 1);
    analysis.step_weight_promotion = Some(20);
    let mut world = World::new(&spec(analysis)).initialized();
    world.revision = V2.into();
    world.tick_until(CanaryPhase::Promoting, 5);
    world.actions.clear();
    world.tick_until(CanaryPhase::Finalising, 5);
    assert_eq!(world.weights(), [30, 10, 0]);
    assert!(
        world
            .events
            .contains(&"Advance podinfo.test primary weight 70".to_string())
    );
}

#[test]
fn promotion_waits_for_the_primary_and_fails_if_it_never_becomes_ready() {
    let mut world = World::new(&spec(canary_analysis(50, 50, 1))).initialized();
    world.revision = V2.into();
    world.tick_until(CanaryPhase::Promoting, 5);
    world.primary = Readiness::Waiting("rolling".into());
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Promoting));
    world.primary = Readiness::Failed("deadline".into());
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Failed));
    assert_eq!(
        world.routes,
        Routes::canary(100),
        "traffic stays on the working canary"
    );
    assert!(
        world
            .alerts
            .iter()
            .any(|a| a.message == "Promotion failed, primary not ready: deadline")
    );
}

#[test]
fn mirroring_mirrors_one_step_before_shifting() {
    let mut analysis = canary_analysis(25, 50, 1);
    analysis.mirror = Some(true);
    let mut world = World::new(&spec(analysis)).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    assert_eq!(
        world.routes,
        Routes {
            primary: 100,
            canary: 0,
            mirrored: true
        }
    );
    world.tick();
    assert_eq!(world.routes, Routes::canary(25));
    assert!(
        world.asked.contains(&Question::Analysis),
        "the mirrored step is analysed"
    );
    world.tick_until(CanaryPhase::Succeeded, 5);
}

// --- A/B and Blue/Green -----------------------------------------------------------------

fn iterations_analysis(iterations: i32, with_match: bool, mirror: bool) -> CanaryAnalysis {
    CanaryAnalysis {
        interval: Some("1m".into()),
        threshold: Some(2),
        iterations: Some(iterations),
        mirror: Some(mirror),
        match_: with_match.then(|| vec![HttpMatchRequest::default()]),
        ..Default::default()
    }
}

#[test]
fn ab_testing_routes_matched_traffic_for_n_iterations() {
    let mut world = World::new(&spec(iterations_analysis(3, true, false))).initialized();
    world.revision = V2.into();
    world.tick(); // detected
    world.tick(); // pre-rollout, iteration 1
    assert_eq!(world.status.iterations, Some(1));
    assert_eq!(world.routes, Routes::canary(100));
    world.tick_until(CanaryPhase::Promoting, 5);
    assert!(
        world
            .events
            .contains(&"Advance podinfo.test canary iteration 3/3".to_string())
    );
    world.tick_until(CanaryPhase::Succeeded, 3);
    assert_eq!(world.routes, Routes::PRIMARY);
}

#[test]
fn blue_green_checks_then_switches_then_promotes() {
    let mut world = World::new(&spec(iterations_analysis(2, false, false))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    world.tick();
    assert_eq!(world.status.iterations, Some(2));
    assert_eq!(world.routes, Routes::PRIMARY, "no traffic during the iterations");
    world.tick();
    assert_eq!(world.routes, Routes::canary(100));
    assert!(
        world
            .events
            .contains(&"Routing all traffic to canary".to_string())
    );
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Promoting));
    world.tick_until(CanaryPhase::Succeeded, 3);
}

#[test]
fn blue_green_mirroring_mirrors_during_the_iterations() {
    let mut world = World::new(&spec(iterations_analysis(2, false, true))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    assert!(world.routes.mirrored);
    assert_eq!(world.routes.canary, 0);
    world.tick();
    world.tick();
    assert_eq!(world.routes, Routes::canary(100));
    assert!(
        world
            .events
            .contains(&"Stop traffic mirroring and route all traffic to canary".to_string())
    );
}

#[test]
fn kubernetes_blue_green_never_sets_routes() {
    let mut world = World::with_provider(
        &spec(iterations_analysis(2, false, false)),
        Capabilities::BLUE_GREEN_ONLY,
    )
    .initialized();
    world.revision = V2.into();
    world.tick_until(CanaryPhase::Succeeded, 10);
    assert!(world.weights().is_empty(), "{:?}", world.actions);
    assert!(world.actions.contains(&Action::Promote));
}

// --- suspend, migration -----------------------------------------------------------------

#[test]
fn suspend_pauses_and_is_reported_once() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into();
    world.tick();
    world.tick();
    world.suspended = true;
    world.clear();
    world.tick();
    world.tick();
    world.tick();
    assert_eq!(world.events, ["skipping canary run as object is suspended"]);
    assert!(world.actions.is_empty());
    assert_eq!(world.routes.canary, 10);
    assert_eq!(world.status.suspended, Some(true));
    world.suspended = false;
    world.tick();
    assert_eq!(world.routes.canary, 20, "resumes at the next step");
    assert_eq!(world.status.suspended, None);
}

#[test]
fn a_canary_migrated_from_flagger_is_adopted_when_the_primary_matches() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1)));
    world.status.phase = Some(CanaryPhase::Succeeded);
    world.status.last_applied_spec = Some("7d9c8f6b5".into());
    world.status.last_promoted_spec = Some("7d9c8f6b5".into());
    world.target_is_primary = true;
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Succeeded));
    assert_eq!(world.status.last_promoted_spec.as_deref(), Some(V1));
    assert!(world.actions.is_empty());
    assert!(world.events[0].starts_with("Adopted podinfo.test from Flagger"));
}

#[test]
fn a_canary_migrated_from_flagger_with_a_new_target_is_analysed() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1)));
    world.status.phase = Some(CanaryPhase::Succeeded);
    world.status.last_applied_spec = Some("7d9c8f6b5".into());
    world.status.last_promoted_spec = Some("7d9c8f6b5".into());
    world.target_is_primary = false;
    world.closed_gates.push(Gate::Rollback);
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
}

#[test]
fn a_config_change_is_a_new_revision() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    world.revision = V2.into(); // the hash covers the configs
    world.configs = BTreeMap::from([("configmap/podinfo".to_string(), "0123abcd".to_string())]);
    world.tick();
    assert_eq!(world.phase(), Some(CanaryPhase::Progressing));
    assert_eq!(
        world
            .status
            .tracked_configs
            .as_ref()
            .and_then(|c| c.get("configmap/podinfo")),
        Some(&"0123abcd".to_string())
    );
}

#[test]
fn an_unchanged_condition_is_left_alone() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1)));
    world.primary = Readiness::Waiting("not yet".into());
    world.tick();
    let first = world.status.clone();
    world.tick();
    assert_eq!(world.status, first, "nothing changed, so nothing to write");
}

#[test]
fn condition_transition_time_moves_only_with_its_status() {
    let mut world = World::new(&spec(canary_analysis(10, 50, 1))).initialized();
    let first = world.status.conditions.as_ref().expect("conditions")[0].clone();
    world.revision = V2.into();
    world.tick(); // Progressing: Unknown
    world.tick(); // still Progressing
    let progressing = world.status.conditions.as_ref().expect("conditions")[0].clone();
    assert_eq!(progressing.status, "Unknown");
    assert_ne!(progressing.last_transition_time, first.last_transition_time);
    world.tick(); // another step
    let later = world.status.conditions.as_ref().expect("conditions")[0].clone();
    assert_eq!(later.last_transition_time, progressing.last_transition_time);
}
