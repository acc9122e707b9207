//! The outbox: records waiting for Git live in `status.gitops.pending`, written in the same
//! status update as the step they describe. Numbering them per canary lets the ledger tell
//! which ones are already on the remote, so none is lost or written twice.

use std::collections::BTreeMap;

use crate::api::{CanaryStatus, PendingRecord, RecordLevel, RecordedCheck};
use crate::rollout::{Record, RecordKind};

/// Records kept in a canary's outbox while the remote is unreachable; beyond it the oldest
/// step records are dropped (and counted), transitions are always kept.
pub const MAX_PENDING: usize = 200;

/// What the controller knows when it makes a record, beside the engine's record.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// RFC 3339.
    pub time: String,
    pub images: BTreeMap<String, String>,
    pub primary_images: BTreeMap<String, String>,
    pub configs: BTreeMap<String, String>,
    /// The primary's config checksums (rollbacks only).
    pub primary_configs: BTreeMap<String, String>,
}

/// The name a record kind has in Git.
pub fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Initialized => "Initialized",
        RecordKind::Detected => "Detected",
        RecordKind::Restarted => "Restarted",
        RecordKind::Waiting => "Waiting",
        RecordKind::Step => "Step",
        RecordKind::Halted => "Halted",
        RecordKind::Promoting => "Promoting",
        RecordKind::Promoted => "Promoted",
        RecordKind::RolledBack => "RolledBack",
        RecordKind::Cancelled => "Cancelled",
    }
}

/// The outbox entry of an engine record (its number is given by `append`).
pub fn from_record(record: &Record, facts: &Facts) -> PendingRecord {
    PendingRecord {
        seq: 0,
        kind: kind_name(record.kind).to_string(),
        revision: record.revision.clone(),
        phase: format!("{:?}", record.phase),
        weight: record.weight,
        iteration: record.iteration,
        failed_checks: record.failed_checks,
        checks: record
            .checks
            .iter()
            .map(|c| RecordedCheck {
                name: c.name.clone(),
                value: c.value.filter(|v| v.is_finite()),
                passed: c.passed,
            })
            .collect(),
        reason: record.reason.clone(),
        time: facts.time.clone(),
        images: facts.images.clone(),
        primary_images: facts.primary_images.clone(),
        configs: facts.configs.clone(),
        primary_configs: facts.primary_configs.clone(),
        elided: None,
        approved_by: Vec::new(),
        commands: Vec::new(),
    }
}

/// Adds `records` to the outbox in `status`, numbered after the last one, and drops those
/// the writer already pushed. Step-level records are left out at `RecordLevel::Transitions`.
/// Returns the number of the last record.
pub fn append(status: &mut CanaryStatus, records: Vec<PendingRecord>, level: RecordLevel) -> i64 {
    let numbers = numbers(status, &records, level);
    let gitops = status.gitops.get_or_insert_default();
    let pushed = gitops.pushed_record.unwrap_or(0);
    let mut last = gitops.last_record.unwrap_or(0).max(pushed);
    let mut pending: Vec<PendingRecord> = gitops
        .pending
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.seq > pushed)
        .collect();
    for (mut record, seq) in records.into_iter().zip(numbers) {
        if seq == 0 {
            continue;
        }
        last = seq;
        record.seq = seq;
        pending.push(record);
    }
    bound(&mut pending);
    gitops.last_record = (last > 0).then_some(last);
    gitops.pending = (!pending.is_empty()).then_some(pending);
    last
}

/// The numbers [`append`] gives `records` in `status`, in order; 0 for a record it leaves
/// out (a step at `RecordLevel::Transitions`).
pub fn numbers(status: &CanaryStatus, records: &[PendingRecord], level: RecordLevel) -> Vec<i64> {
    let gitops = status.gitops.as_ref();
    let pushed = gitops.and_then(|g| g.pushed_record).unwrap_or(0);
    let mut last = gitops.and_then(|g| g.last_record).unwrap_or(0).max(pushed);
    records
        .iter()
        .map(|record| {
            if level == RecordLevel::Transitions && is_step(&record.kind) {
                0
            } else {
                last += 1;
                last
            }
        })
        .collect()
}

/// The records the remote does not have yet, oldest first.
pub fn pending(status: Option<&CanaryStatus>) -> Vec<PendingRecord> {
    let Some(gitops) = status.and_then(|s| s.gitops.as_ref()) else {
        return Vec::new();
    };
    let pushed = gitops.pushed_record.unwrap_or(0);
    let mut records: Vec<PendingRecord> = gitops
        .pending
        .iter()
        .flatten()
        .filter(|r| r.seq > pushed)
        .cloned()
        .collect();
    records.sort_by_key(|r| r.seq);
    records
}

/// Whether the canary has records the remote does not have yet.
pub fn has_pending(status: Option<&CanaryStatus>) -> bool {
    !pending(status).is_empty()
}

fn is_step(kind: &str) -> bool {
    matches!(kind, "Step" | "Halted" | "Waiting")
}

/// Keeps the outbox at `MAX_PENDING`: the oldest step records go first, and the next record
/// kept says how many were left out.
fn bound(pending: &mut Vec<PendingRecord>) {
    while pending.len() > MAX_PENDING {
        let Some(index) = pending.iter().position(|r| is_step(&r.kind)) else {
            // Only transitions: keep them all rather than lose one.
            return;
        };
        let dropped = pending.remove(index);
        let carried = dropped.elided.unwrap_or(0) + 1;
        if let Some(next) = pending.get_mut(index) {
            next.elided = Some(next.elided.unwrap_or(0) + carried);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GitOpsStatus;

    fn rec(kind: &str) -> PendingRecord {
        PendingRecord {
            kind: kind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn records_are_numbered_after_the_last_one() {
        let mut status = CanaryStatus::default();
        assert_eq!(
            append(&mut status, vec![rec("Initialized")], RecordLevel::EveryStep),
            1
        );
        assert_eq!(
            append(
                &mut status,
                vec![rec("Detected"), rec("Step")],
                RecordLevel::EveryStep
            ),
            3
        );
        let seqs: Vec<i64> = status
            .gitops
            .as_ref()
            .and_then(|g| g.pending.clone())
            .unwrap_or_default()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(has_pending(Some(&status)));
    }

    #[test]
    fn pushed_records_leave_the_outbox() {
        let mut status = CanaryStatus::default();
        append(
            &mut status,
            vec![rec("Detected"), rec("Step")],
            RecordLevel::EveryStep,
        );
        status.gitops.as_mut().expect("set").pushed_record = Some(2);
        assert!(!has_pending(Some(&status)));
        assert_eq!(
            append(&mut status, vec![rec("Promoted")], RecordLevel::EveryStep),
            3
        );
        let gitops: GitOpsStatus = *status.gitops.clone().expect("set");
        assert_eq!(
            gitops
                .pending
                .expect("one")
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [3]
        );
    }

    #[test]
    fn numbering_never_goes_below_what_was_pushed() {
        // A status restored from an older copy must not reuse numbers the ledger has.
        let mut status = CanaryStatus {
            gitops: Some(Box::new(GitOpsStatus {
                pushed_record: Some(9),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(append(&mut status, vec![rec("Step")], RecordLevel::EveryStep), 10);
    }

    #[test]
    fn transitions_level_skips_steps() {
        let mut status = CanaryStatus::default();
        let last = append(
            &mut status,
            vec![
                rec("Detected"),
                rec("Step"),
                rec("Halted"),
                rec("Waiting"),
                rec("RolledBack"),
            ],
            RecordLevel::Transitions,
        );
        assert_eq!(last, 2);
        let kinds: Vec<String> = status
            .gitops
            .and_then(|g| g.pending)
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(kinds, ["Detected", "RolledBack"]);
    }

    #[test]
    fn a_long_outage_drops_old_steps_but_keeps_transitions() {
        let mut status = CanaryStatus::default();
        append(&mut status, vec![rec("Detected")], RecordLevel::EveryStep);
        for _ in 0..(MAX_PENDING + 50) {
            append(&mut status, vec![rec("Step")], RecordLevel::EveryStep);
        }
        append(&mut status, vec![rec("RolledBack")], RecordLevel::EveryStep);
        let pending = status.gitops.and_then(|g| g.pending).unwrap_or_default();
        assert_eq!(pending.len(), MAX_PENDING);
        assert_eq!(pending[0].kind, "Detected");
        assert_eq!(pending.last().map(|r| r.kind.as_str()), Some("RolledBack"));
        let elided: i64 = pending.iter().filter_map(|r| r.elided).sum();
        assert_eq!(elided, 52, "every dropped step is counted");
    }
}
