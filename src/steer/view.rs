//! `flaggit status`: a compact view of canaries — phase, weight, failed checks, what holds
//! the release, the last commands — and the last Git records of one canary.

use std::fmt::Write as _;

use crate::api::{Canary, CanaryPhase};
use crate::gitops::message::Entry;

/// One line: `Progressing weight 40/60 failed checks 0/2`.
pub fn one_line(canary: &Canary) -> String {
    let status = canary.status.clone().unwrap_or_default();
    let analysis = canary.spec.analysis.as_ref();
    let max = analysis.and_then(|a| a.max_weight).unwrap_or(100);
    let threshold = analysis.and_then(|a| a.threshold).unwrap_or(0);
    format!(
        "{:?} weight {}/{max} failed checks {}/{threshold}",
        status.phase.unwrap_or(CanaryPhase::Initializing),
        status.canary_weight.unwrap_or(0),
        status.failed_checks.unwrap_or(0),
    )
}

/// A table of canaries: one row each.
pub fn table(canaries: &[Canary]) -> String {
    let mut rows = vec![[
        "CANARY".to_string(),
        "PHASE".to_string(),
        "WEIGHT".to_string(),
        "FAILED".to_string(),
        "LAST CHANGE".to_string(),
        "MESSAGE".to_string(),
    ]];
    for canary in canaries {
        let status = canary.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Promoted"))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        rows.push([
            format!(
                "{}/{}",
                canary.metadata.namespace.as_deref().unwrap_or_default(),
                canary.metadata.name.as_deref().unwrap_or_default()
            ),
            format!("{:?}", status.phase.unwrap_or(CanaryPhase::Initializing)),
            status.canary_weight.unwrap_or(0).to_string(),
            status.failed_checks.unwrap_or(0).to_string(),
            status
                .last_transition_time
                .map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            ready,
        ]);
    }
    columns(&rows)
}

fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// One canary in detail: its line, what holds it, the last commands and Git records.
pub fn detail(canary: &Canary, records: Result<&[Entry], &str>) -> String {
    let status = canary.status.clone().unwrap_or_default();
    let mut out = format!(
        "{}/{}  {}\n",
        canary.metadata.namespace.as_deref().unwrap_or_default(),
        canary.metadata.name.as_deref().unwrap_or_default(),
        one_line(canary)
    );
    if let Some(message) = status
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Promoted"))
        .and_then(|c| c.message.clone())
    {
        let _ = writeln!(out, "  status    {message}");
    }
    let review = status.gitops.as_ref().and_then(|g| g.review.as_ref());
    let steering = status.steering.as_ref();
    if let Some(user) = steering.and_then(|s| s.paused_by.as_ref()) {
        let _ = writeln!(
            out,
            "  held      paused by {user} (`flaggit resume` lets it go on)"
        );
    }
    if review.is_some_and(|r| r.paused) {
        let _ = writeln!(out, "  held      paused on the release pull request");
    }
    if let Some(reason) = steering
        .and_then(|s| s.rollback.as_ref())
        .or(review.and_then(|r| r.rollback.as_ref()))
    {
        let _ = writeln!(out, "  rollback  {reason}");
    }
    if let Some(pr) = status.gitops.as_ref().and_then(|g| g.pull_request.as_ref()) {
        let _ = writeln!(out, "  release   {} ({})", pr.url, pr.state);
    }
    for command in steering
        .map(|s| s.commands.as_slice())
        .unwrap_or_default()
        .iter()
        .rev()
        .take(5)
    {
        let _ = writeln!(
            out,
            "  command   {} {} {} {}: {}",
            command.at,
            command.user,
            command.command,
            if command.accepted { "accepted" } else { "refused" },
            command.outcome
        );
    }
    match records {
        Ok([]) => out.push_str("  records   none in Git yet\n"),
        Ok(entries) => {
            out.push_str("  records   (newest last; `flaggit history` shows all)\n");
            let start = entries.len().saturating_sub(6);
            for e in &entries[start..] {
                let mut line = format!(
                    "    {}  #{:<3} {:<11} weight {:<3}",
                    e.time, e.record, e.kind, e.weight
                );
                if !e.checks.is_empty() {
                    let _ = write!(line, "  {}", crate::gitops::message::display_checks(&e.checks));
                }
                if !e.reason.is_empty() {
                    let _ = write!(line, "  {}", e.reason);
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        Err(why) => {
            let _ = writeln!(out, "  records   cannot read them from Git: {why}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryStatus, SteeringCommand, SteeringStatus};

    #[test]
    fn detail_shows_phase_holds_commands_and_records() {
        let mut canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "demo"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "analysis": {"interval": "10s", "threshold": 2, "maxWeight": 60, "stepWeight": 20}}
        }))
        .expect("a canary");
        canary.status = Some(CanaryStatus {
            phase: Some(CanaryPhase::Progressing),
            canary_weight: Some(40),
            failed_checks: Some(1),
            steering: Some(Box::new(SteeringStatus {
                paused_by: Some("alice".into()),
                commands: vec![SteeringCommand {
                    user: "alice".into(),
                    command: "pause".into(),
                    accepted: true,
                    outcome: "holds the release at its current step".into(),
                    at: "2026-01-01T00:00:00Z".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        });
        let entry = Entry {
            record: 4,
            kind: "Step".into(),
            weight: 40,
            checks: "request-success-rate=99.93333333333333:pass".into(),
            time: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        let text = detail(&canary, Ok(&[entry]));
        assert!(
            text.starts_with("demo/podinfo  Progressing weight 40/60 failed checks 1/2\n"),
            "{text}"
        );
        assert!(text.contains("paused by alice"), "{text}");
        assert!(text.contains("alice pause accepted"), "{text}");
        assert!(text.contains("#4   Step"), "{text}");
        assert!(
            text.contains("request-success-rate 99.93% pass"),
            "rounded: {text}"
        );
        let table = table(std::slice::from_ref(&canary));
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("demo/podinfo  Progressing  40")),
            "{table}"
        );
    }
}
