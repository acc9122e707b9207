//! What a command from the command line does to a release, decided in pure code: which gate
//! `promote` approves, when `rollback`, `pause`, `resume` and `retry` can act, and how the
//! holds they leave answer the rollout's gates. The rules are the release pull request's
//! (`/approve`, `/rollback`, `/pause`, `/resume`, `/retry`), with RBAC in place of the
//! repository permission.

use crate::api::{ApprovalGate, CanaryPhase, PullRequestApproval, SteeringStatus};
use crate::rollout::{Gate, GateAnswer};

use super::request::{Command, Verb};

/// What an accepted command changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An approval of `gate` (at `weight` for traffic increases) by the caller.
    Approve {
        gate: ApprovalGate,
        weight: i32,
    },
    /// Roll back at the next analysis tick, for this reason (naming who asked).
    Rollback(String),
    Pause,
    Resume,
    /// Run the failed release again (the controller sets `flaggit.dev/retry`).
    Retry,
}

/// Whether the release is being analysed: only then can it be approved, paused or rolled back.
pub fn analysing(phase: CanaryPhase) -> bool {
    matches!(
        phase,
        CanaryPhase::Waiting | CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    )
}

/// The gate `promote` approves in a release without a pull request: the one the phase waits at.
pub fn waiting_gate(phase: CanaryPhase) -> Option<ApprovalGate> {
    match phase {
        CanaryPhase::Waiting => Some(ApprovalGate::ConfirmRollout),
        CanaryPhase::Progressing => Some(ApprovalGate::ConfirmTrafficIncrease),
        CanaryPhase::WaitingPromotion => Some(ApprovalGate::ConfirmPromotion),
        _ => None,
    }
}

pub fn gate_name(gate: ApprovalGate) -> &'static str {
    match gate {
        ApprovalGate::ConfirmRollout => "confirm-rollout",
        ApprovalGate::ConfirmTrafficIncrease => "confirm-traffic-increase",
        ApprovalGate::ConfirmPromotion => "confirm-promotion",
    }
}

/// Judges `command` from `user` (already allowed by RBAC) against a release in `phase` at
/// `weight`, where `waiting` is the gate an approval now opens. Ok(change, what it does) or
/// Err(why it cannot be done now).
pub fn judge(
    command: &Command,
    user: &str,
    phase: CanaryPhase,
    weight: i32,
    waiting: Option<ApprovalGate>,
) -> Result<(Change, String), String> {
    match command.verb {
        Verb::Promote => {
            let Some(gate) = waiting.filter(|_| analysing(phase)) else {
                return Err(format!("nothing waits for approval: the release is {phase:?}"));
            };
            let weight = if gate == ApprovalGate::ConfirmTrafficIncrease {
                weight
            } else {
                0
            };
            Ok((
                Change::Approve { gate, weight },
                format!("approves {}", gate_name(gate)),
            ))
        }
        Verb::Rollback if analysing(phase) => {
            let mut reason = format!("rollback requested by {user} with `flaggit rollback`");
            let why = one_line(&command.reason);
            if !why.is_empty() {
                reason.push_str(": ");
                reason.push_str(&why);
            }
            Ok((
                Change::Rollback(reason),
                "rolls back at the next analysis tick".into(),
            ))
        }
        Verb::Rollback => Err(format!("nothing to roll back: the release is {phase:?}")),
        Verb::Pause if analysing(phase) => {
            Ok((Change::Pause, "holds the release at its current step".into()))
        }
        Verb::Pause => Err(format!(
            "nothing to pause: the release is {phase:?} (spec.suspend stops new releases)"
        )),
        Verb::Resume => Ok((Change::Resume, "lets the release go on".into())),
        Verb::Retry if phase == CanaryPhase::Failed => Ok((Change::Retry, "runs the release again".into())),
        Verb::Retry => Err(format!(
            "the release is {phase:?}, not Failed: only a failed release can be retried (a new revision starts by itself)"
        )),
    }
}

/// One line of printable text: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The `source` of an approval given from the command line: Kubernetes RBAC judged it, so
/// the forge's rules are not asked about it again.
pub const CLI_SOURCE: &str = "cli";

/// Applies an accepted change to the holds of a release without a pull request.
pub fn hold(steering: &mut SteeringStatus, change: &Change, user: &str, at: &str) {
    match change {
        Change::Approve { gate, weight } => {
            let name = gate_name(*gate);
            let already = steering
                .approvals
                .iter()
                .any(|a| a.gate == name && a.weight == *weight && a.user == user);
            if !already {
                steering.approvals.push(PullRequestApproval {
                    gate: name.into(),
                    user: user.into(),
                    weight: *weight,
                    at: at.into(),
                    source: CLI_SOURCE.into(),
                    ..Default::default()
                });
            }
        }
        Change::Rollback(reason) => steering.rollback = Some(reason.clone()),
        Change::Pause => steering.paused_by = Some(user.into()),
        Change::Resume => steering.paused_by = None,
        Change::Retry => {}
    }
}

/// Forgets the holds when the release they were given for is over or replaced: they are for
/// one release, as a pull request's approvals are.
pub fn expire(steering: &mut SteeringStatus, phase: CanaryPhase, revision: &str) {
    if !analysing(phase) || steering.revision != revision {
        steering.approvals.clear();
        steering.paused_by = None;
        steering.rollback = None;
        steering.revision = revision.to_string();
    }
}

/// Combines a gate's webhook answer with the command line's holds: `pause` closes every
/// approval gate, `promote` opens the one it approved, `rollback` opens the rollback gate.
pub fn answer_gate(steering: &SteeringStatus, weight: i32, gate: Gate, answer: &mut GateAnswer) {
    let approval_gate = match gate {
        Gate::ConfirmRollout => ApprovalGate::ConfirmRollout,
        Gate::ConfirmTrafficIncrease => ApprovalGate::ConfirmTrafficIncrease,
        Gate::ConfirmPromotion => ApprovalGate::ConfirmPromotion,
        Gate::Rollback => {
            if let Some(reason) = &steering.rollback
                && !answer.open
            {
                *answer = GateAnswer::open();
                answer.message = reason.clone();
            }
            return;
        }
        Gate::PreRollout => return,
    };
    if let Some(user) = &steering.paused_by {
        *answer = GateAnswer::closed(format!("paused by {user} with `flaggit pause`"));
        return;
    }
    if answer.open {
        return;
    }
    let weight = if approval_gate == ApprovalGate::ConfirmTrafficIncrease {
        weight
    } else {
        0
    };
    let name = gate_name(approval_gate);
    if let Some(approval) = steering
        .approvals
        .iter()
        .find(|a| a.gate == name && a.weight == weight)
    {
        *answer = GateAnswer::open();
        answer.message = format!("approved by {} with `flaggit promote`", approval.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(verb: Verb, reason: &str) -> Command {
        Command {
            verb,
            namespace: "demo".into(),
            name: "podinfo".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn each_verb_acts_only_where_the_pull_request_command_would() {
        use CanaryPhase::*;
        let judge_in =
            |verb, phase| judge(&command(verb, ""), "alice", phase, 20, waiting_gate(phase)).map(|(c, _)| c);
        assert_eq!(
            judge_in(Verb::Promote, Progressing),
            Ok(Change::Approve {
                gate: ApprovalGate::ConfirmTrafficIncrease,
                weight: 20
            })
        );
        assert_eq!(
            judge_in(Verb::Promote, WaitingPromotion),
            Ok(Change::Approve {
                gate: ApprovalGate::ConfirmPromotion,
                weight: 0
            })
        );
        assert!(judge_in(Verb::Promote, Succeeded).is_err());
        assert!(judge_in(Verb::Rollback, Failed).is_err());
        assert!(judge_in(Verb::Pause, Initialized).is_err());
        assert_eq!(judge_in(Verb::Pause, Waiting), Ok(Change::Pause));
        assert_eq!(judge_in(Verb::Resume, Succeeded), Ok(Change::Resume));
        assert_eq!(judge_in(Verb::Retry, Failed), Ok(Change::Retry));
        let refused = judge_in(Verb::Retry, Progressing).expect_err("refused");
        assert!(refused.contains("only a failed release"), "{refused}");
    }

    #[test]
    fn a_rollback_reason_names_who_asked_on_one_line() {
        let (change, _) = judge(
            &command(Verb::Rollback, "p99 doubled\nsee dashboard"),
            "system:serviceaccount:demo:alice",
            CanaryPhase::Progressing,
            40,
            None,
        )
        .expect("accepted");
        assert_eq!(
            change,
            Change::Rollback(
                "rollback requested by system:serviceaccount:demo:alice with `flaggit rollback`: p99 doubled see dashboard"
                    .into()
            )
        );
    }

    #[test]
    fn holds_answer_the_gates_and_expire_with_the_release() {
        let mut steering = SteeringStatus {
            revision: "r1".into(),
            ..Default::default()
        };
        let change = Change::Approve {
            gate: ApprovalGate::ConfirmTrafficIncrease,
            weight: 20,
        };
        hold(&mut steering, &change, "alice", "t");
        hold(&mut steering, &change, "alice", "t");
        assert_eq!(steering.approvals.len(), 1, "one approval per user and step");

        let mut closed = GateAnswer::closed("waiting for the load tester gate");
        answer_gate(&steering, 20, Gate::ConfirmTrafficIncrease, &mut closed);
        assert!(closed.open, "promote opens the step it approved");
        let mut next = GateAnswer::closed("waiting");
        answer_gate(&steering, 40, Gate::ConfirmTrafficIncrease, &mut next);
        assert!(!next.open, "and only that step");

        hold(&mut steering, &Change::Pause, "bob", "t");
        let mut open = GateAnswer::open();
        answer_gate(&steering, 20, Gate::ConfirmPromotion, &mut open);
        assert!(!open.open);
        assert!(open.message.contains("paused by bob"), "{}", open.message);
        hold(&mut steering, &Change::Resume, "bob", "t");
        let mut open = GateAnswer::open();
        answer_gate(&steering, 20, Gate::ConfirmPromotion, &mut open);
        assert!(open.open);

        hold(
            &mut steering,
            &Change::Rollback("rollback requested by bob".into()),
            "bob",
            "t",
        );
        let mut rollback = GateAnswer::closed("");
        answer_gate(&steering, 20, Gate::Rollback, &mut rollback);
        assert!(rollback.open);
        assert_eq!(rollback.message, "rollback requested by bob");

        expire(&mut steering, CanaryPhase::Progressing, "r1");
        assert!(steering.rollback.is_some(), "the same release keeps its holds");
        expire(&mut steering, CanaryPhase::Failed, "r1");
        assert!(steering.rollback.is_none() && steering.approvals.is_empty());
        hold(&mut steering, &Change::Pause, "bob", "t");
        expire(&mut steering, CanaryPhase::Progressing, "r2");
        assert!(steering.paused_by.is_none(), "a new release starts without holds");
        assert_eq!(steering.revision, "r2");
    }
}
