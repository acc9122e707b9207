//! Commit messages of the Git record: a subject people read in `git log --oneline`, and
//! `Flaggit-*` trailers that `flaggit history` reads back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::api::PendingRecord;

/// Trailer keys, in the order they are written.
pub const CANARY: &str = "Flaggit-Canary";
/// The cluster the record was made in (`--cluster-name`); absent in the single-cluster layout.
pub const CLUSTER: &str = "Flaggit-Cluster";
pub const RECORD: &str = "Flaggit-Record";
pub const KIND: &str = "Flaggit-Kind";
pub const REVISION: &str = "Flaggit-Revision";
pub const PHASE: &str = "Flaggit-Phase";
pub const WEIGHT: &str = "Flaggit-Weight";
pub const ITERATION: &str = "Flaggit-Iteration";
pub const CHECKS: &str = "Flaggit-Checks";
pub const IMAGES: &str = "Flaggit-Images";
pub const REASON: &str = "Flaggit-Reason";
pub const TIME: &str = "Flaggit-Time";
/// One per approver of the gate the record passed, like `Co-authored-by`.
pub const APPROVED_BY: &str = "Flaggit-Approved-By";
/// One per command said on the release pull request since the previous record.
pub const COMMAND: &str = "Flaggit-Command";
/// One per tracked Secret a rollback could not write back (it changed in the failed release).
pub const SECRET_CHANGED: &str = "Flaggit-Secret-Changed";

/// The names of the tracked configs of `kind` (`configmap` or `secret`) whose checksum
/// differs between the target (`configs`) and the primary (`primary`): what a rollback
/// changed back in the cluster.
pub fn changed_configs(
    kind: &str,
    configs: &BTreeMap<String, String>,
    primary: &BTreeMap<String, String>,
) -> Vec<String> {
    configs
        .iter()
        .filter_map(|(key, checksum)| {
            let name = key.strip_prefix(kind)?.strip_prefix('/')?;
            primary
                .get(key)
                .is_some_and(|p| p != checksum)
                .then(|| name.to_string())
        })
        .collect()
}

/// What a rollback says about a Secret that changed in the failed release.
pub fn secret_note(name: &str) -> String {
    format!(
        "Secret {name} changed in the failed release and was rolled back in the cluster only: flaggit never writes Secrets to Git, so revert {name} (or its SOPS-encrypted file) in the config repo by hand"
    )
}

/// The commit message of one record of canary `id` (`namespace/name`) in `cluster`. `edited`
/// lists the manifests a rollback rewrote, for the body.
/// One `Flaggit-Command` value: who said what, and what came of it.
pub fn command_line(who: &str, command: &str, accepted: bool, outcome: &str) -> String {
    let verdict = if accepted { "accepted" } else { "refused" };
    if outcome.is_empty() {
        format!("{who} {command} {verdict}")
    } else {
        format!("{who} {command} {verdict}: {outcome}")
    }
}

pub fn commit_message(id: &str, cluster: Option<&str>, record: &PendingRecord, edited: &[String]) -> String {
    let mut text = subject(&scope(id, cluster), record);
    text.push_str("\n\n");
    let body = body(record, edited);
    if !body.is_empty() {
        text.push_str(&body);
        text.push_str("\n\n");
    }
    for (key, value) in trailers(id, cluster, record) {
        let _ = writeln!(text, "{key}: {value}");
    }
    text
}

/// What the subject names: `test/podinfo`, or `test/podinfo@prod-eu` in a named cluster.
pub fn scope(id: &str, cluster: Option<&str>) -> String {
    match cluster {
        Some(cluster) => format!("{id}@{cluster}"),
        None => id.to_string(),
    }
}

/// `rollout(test/podinfo): advance canary weight 20 (request-success-rate 99.80%, ...)`.
pub fn subject(id: &str, record: &PendingRecord) -> String {
    let image = main_image(&record.images);
    let what = match record.kind.as_str() {
        "Initialized" => format!("initialize the primary at {image}"),
        "Detected" => format!("start rolling out {image}"),
        "Restarted" => format!("restart the analysis for {image}"),
        "Waiting" => format!("wait before {image}: {}", one_line(&record.reason)),
        "Step" if record.iteration > 0 && record.weight == 0 => {
            format!("analysis iteration {}{}", record.iteration, checks_suffix(record))
        }
        "Step" if record.iteration > 0 => format!(
            "analysis iteration {} at weight {}{}",
            record.iteration,
            record.weight,
            checks_suffix(record)
        ),
        "Step" => format!("advance canary weight {}{}", record.weight, checks_suffix(record)),
        "Halted" => format!(
            "halt at weight {} ({} failed): {}",
            record.weight,
            record.failed_checks,
            one_line(&record.reason)
        ),
        "Promoting" => format!("promote {image}{}", checks_suffix(record)),
        "Promoted" => format!("promoted {image}"),
        "RolledBack" => format!(
            "roll back {image} to {}: {}",
            main_image(&record.primary_images),
            one_line(&record.reason)
        ),
        "Cancelled" => format!("cancel the rollout: {}", one_line(&record.reason)),
        "Recovered" => format!("recover the primary at {image}: {}", one_line(&record.reason)),
        "OffBoarded" => format!("off-board the canary: {}", one_line(&record.reason)),
        other => format!("{}: {}", other.to_lowercase(), one_line(&record.reason)),
    };
    truncate(&format!("rollout({id}): {what}"), 200)
}

fn body(record: &PendingRecord, edited: &[String]) -> String {
    let mut lines = Vec::new();
    if !record.reason.is_empty() && record.reason.contains('\n') {
        lines.push(record.reason.trim().to_string());
    }
    for check in &record.checks {
        lines.push(format!(
            "- {} {} ({})",
            check.name,
            check
                .value
                .map_or("no value".to_string(), |v| format_value(&check.name, v)),
            if check.passed { "passed" } else { "failed" }
        ));
    }
    if let Some(elided) = record.elided {
        lines.push(format!(
            "{elided} step records were left out while the repository could not be written."
        ));
    }
    if !edited.is_empty() {
        lines.push(format!(
            "Wrote the serving version back to: {}.",
            edited.join(", ")
        ));
    }
    if record.kind == "RolledBack" {
        for secret in changed_configs("secret", &record.configs, &record.primary_configs) {
            lines.push(format!("{}.", secret_note(&secret)));
        }
    }
    lines.join("\n")
}

/// The trailers of a record, in order.
pub fn trailers(id: &str, cluster: Option<&str>, record: &PendingRecord) -> Vec<(&'static str, String)> {
    let mut out = vec![(CANARY, id.to_string())];
    if let Some(cluster) = cluster {
        out.push((CLUSTER, cluster.to_string()));
    }
    out.extend([
        (RECORD, record.seq.to_string()),
        (KIND, record.kind.clone()),
        (REVISION, record.revision.clone()),
        (PHASE, record.phase.clone()),
        (WEIGHT, record.weight.to_string()),
    ]);
    if record.iteration > 0 {
        out.push((ITERATION, record.iteration.to_string()));
    }
    if !record.checks.is_empty() {
        let checks: Vec<String> = record
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{}={}:{}",
                    c.name,
                    c.value.map_or("none".to_string(), |v| format!("{v}")),
                    if c.passed { "pass" } else { "fail" }
                )
            })
            .collect();
        out.push((CHECKS, checks.join(", ")));
    }
    if !record.images.is_empty() {
        let images: Vec<String> = record.images.iter().map(|(c, i)| format!("{c}={i}")).collect();
        out.push((IMAGES, images.join(", ")));
    }
    if !record.reason.is_empty() {
        out.push((REASON, truncate(&one_line(&record.reason), 500)));
    }
    for user in &record.approved_by {
        out.push((APPROVED_BY, one_line(user)));
    }
    for command in &record.commands {
        out.push((COMMAND, truncate(&one_line(command), 300)));
    }
    if record.kind == "RolledBack" {
        for secret in changed_configs("secret", &record.configs, &record.primary_configs) {
            out.push((SECRET_CHANGED, secret));
        }
    }
    out.push((TIME, record.time.clone()));
    out
}

/// One record read back from a commit's trailers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Entry {
    pub commit: String,
    pub canary: String,
    /// Empty for records of the single-cluster layout.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    pub record: i64,
    pub kind: String,
    pub revision: String,
    pub phase: String,
    pub weight: i32,
    pub iteration: i32,
    pub checks: String,
    pub images: String,
    pub reason: String,
    pub time: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
}

/// Reads the trailers of a commit message; None when it is not a flaggit record.
pub fn parse(commit: &str, message: &str) -> Option<Entry> {
    let mut trailers: BTreeMap<&str, &str> = BTreeMap::new();
    let mut approved_by = Vec::new();
    // Trailers are the last paragraph: `Key: value` lines.
    let last = message.trim_end().rsplit("\n\n").next()?;
    for line in last.lines() {
        let (key, value) = line.split_once(": ")?;
        if key.trim() == APPROVED_BY {
            approved_by.push(value.trim().to_string());
        }
        trailers.insert(key.trim(), value.trim());
    }
    let canary = trailers.get(CANARY)?.to_string();
    let get = |key: &str| trailers.get(key).map(|v| v.to_string()).unwrap_or_default();
    Some(Entry {
        commit: commit.to_string(),
        canary,
        cluster: get(CLUSTER),
        record: get(RECORD).parse().unwrap_or(0),
        kind: get(KIND),
        revision: get(REVISION),
        phase: get(PHASE),
        weight: get(WEIGHT).parse().unwrap_or(0),
        iteration: get(ITERATION).parse().unwrap_or(0),
        checks: get(CHECKS),
        images: get(IMAGES),
        reason: get(REASON),
        time: get(TIME),
        subject: message.lines().next().unwrap_or_default().to_string(),
        approved_by,
    })
}

/// The image people recognise: the only one, or `container=image` pairs for several.
fn main_image(images: &BTreeMap<String, String>) -> String {
    match images.len() {
        0 => "the target".to_string(),
        1 => short_image(images.values().next().map(String::as_str).unwrap_or_default()),
        _ => images
            .iter()
            .map(|(c, i)| format!("{c}={}", short_image(i)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `ghcr.io/stefanprodan/podinfo:6.0.1` -> `podinfo:6.0.1`; digests shortened to 12.
fn short_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once("@sha256:") {
        Some((name, digest)) => format!("{name}@{}", &digest[..digest.len().min(12)]),
        None => last.to_string(),
    }
}

fn checks_suffix(record: &PendingRecord) -> String {
    if record.checks.is_empty() {
        return String::new();
    }
    let checks: Vec<String> = record
        .checks
        .iter()
        .map(|c| match c.value {
            Some(v) => format!("{} {}", c.name, format_value(&c.name, v)),
            None => format!("{} {}", c.name, if c.passed { "ok" } else { "failed" }),
        })
        .collect();
    format!(" ({})", checks.join(", "))
}

/// One check of a record's `Flaggit-Checks` trailer (`name=value:pass`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrailerCheck {
    pub name: String,
    /// None when the check had no value (`none`) or the value is not a number.
    pub value: Option<f64>,
    /// None when the trailer did not say (older records).
    pub passed: Option<bool>,
}

/// The checks of a `Flaggit-Checks` trailer, in order; parts that are not `name=...` are
/// skipped, so a hand-written trailer never stops a reader.
pub fn parse_checks(text: &str) -> Vec<TrailerCheck> {
    text.split(", ")
        .filter_map(|part| {
            let (name, rest) = part.trim().split_once('=')?;
            let (value, passed) = match rest.rsplit_once(':') {
                Some((value, "pass")) => (value, Some(true)),
                Some((value, "fail")) => (value, Some(false)),
                _ => (rest, None),
            };
            Some(TrailerCheck {
                name: name.to_string(),
                value: value.parse::<f64>().ok().filter(|v| v.is_finite()),
                passed,
            })
        })
        .collect()
}

/// A `Flaggit-Checks` trailer for people: values rounded with their unit, as the commit
/// subject shows them (`request-success-rate 99.93% pass, request-duration 412ms pass`).
/// The trailer itself keeps the exact values.
pub fn display_checks(text: &str) -> String {
    parse_checks(text)
        .iter()
        .map(|c| {
            let value = c
                .value
                .map_or_else(|| "none".to_string(), |v| format_value(&c.name, v));
            match c.passed {
                Some(true) => format!("{} {value} pass", c.name),
                Some(false) => format!("{} {value} fail", c.name),
                None => format!("{} {value}", c.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builtin checks get their unit; others print as the query returned them.
fn format_value(name: &str, value: f64) -> String {
    match name {
        "request-success-rate" => format!("{value:.2}%"),
        "request-duration" => format!("{value:.0}ms"),
        _ => {
            let rounded = (value * 1000.0).round() / 1000.0;
            format!("{rounded}")
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RecordedCheck;

    fn record(kind: &str) -> PendingRecord {
        PendingRecord {
            seq: 7,
            kind: kind.to_string(),
            revision: "flaggit1-abc".to_string(),
            phase: "Progressing".to_string(),
            weight: 20,
            time: "2026-11-22T10:00:00Z".to_string(),
            images: BTreeMap::from([(
                "podinfo".to_string(),
                "ghcr.io/stefanprodan/podinfo:6.0.2".to_string(),
            )]),
            primary_images: BTreeMap::from([(
                "podinfo".to_string(),
                "ghcr.io/stefanprodan/podinfo:6.0.1".to_string(),
            )]),
            checks: vec![
                RecordedCheck {
                    name: "request-success-rate".into(),
                    value: Some(99.8123),
                    passed: true,
                },
                RecordedCheck {
                    name: "request-duration".into(),
                    value: Some(120.4),
                    passed: true,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_step_names_the_weight_and_the_metric_values() {
        assert_eq!(
            subject("test/podinfo", &record("Step")),
            "rollout(test/podinfo): advance canary weight 20 (request-success-rate 99.81%, request-duration 120ms)"
        );
    }

    #[test]
    fn a_rollback_names_both_versions_and_the_reason() {
        let mut r = record("RolledBack");
        r.reason = "Canary analysis failed:\n  success rate 91% < 99%".into();
        r.checks.clear();
        assert_eq!(
            subject("test/podinfo", &r),
            "rollout(test/podinfo): roll back podinfo:6.0.2 to podinfo:6.0.1: Canary analysis failed: success rate 91% < 99%"
        );
    }

    #[test]
    fn iterations_are_named_for_ab_and_blue_green() {
        let mut r = record("Step");
        r.weight = 0;
        r.iteration = 3;
        r.checks.clear();
        assert_eq!(
            subject("test/podinfo", &r),
            "rollout(test/podinfo): analysis iteration 3"
        );
    }

    #[test]
    fn approvers_and_commands_are_trailers_of_their_own() {
        let mut r = record("Promoting");
        r.approved_by = vec!["alice".into(), "carol".into()];
        r.commands = vec![
            "@bob /approve refused: bob has read permission on acme/config; approving needs write".into(),
            "@alice /approve\n`rm -rf /` accepted".into(),
        ];
        let message = commit_message("test/podinfo", None, &r, &[]);
        assert!(message.contains("\nFlaggit-Approved-By: alice\nFlaggit-Approved-By: carol\n"));
        assert!(message.contains("\nFlaggit-Command: @alice /approve `rm -rf /` accepted\n"));
        let entry = parse("abc123", &message).expect("a flaggit record");
        assert_eq!(entry.approved_by, ["alice", "carol"]);
        assert_eq!(entry.kind, "Promoting");
    }

    #[test]
    fn trailers_round_trip_through_parse() {
        let mut r = record("Halted");
        r.reason = "Halt advancement: success rate 91.20% < 99%".into();
        r.checks[0].passed = false;
        let message = commit_message("test/podinfo", None, &r, &[]);
        let entry = parse("abc123", &message).expect("a flaggit record");
        assert_eq!(entry.canary, "test/podinfo");
        assert_eq!(entry.record, 7);
        assert_eq!(entry.kind, "Halted");
        assert_eq!(entry.revision, "flaggit1-abc");
        assert_eq!(entry.weight, 20);
        assert_eq!(
            entry.checks,
            "request-success-rate=99.8123:fail, request-duration=120.4:pass"
        );
        assert_eq!(entry.images, "podinfo=ghcr.io/stefanprodan/podinfo:6.0.2");
        assert_eq!(entry.reason, r.reason);
        assert_eq!(entry.time, "2026-11-22T10:00:00Z");
        assert!(
            entry
                .subject
                .starts_with("rollout(test/podinfo): halt at weight 20")
        );
    }

    #[test]
    fn multi_line_reasons_stay_out_of_the_trailers() {
        let mut r = record("RolledBack");
        r.reason = "line one\nline two".into();
        let message = commit_message("test/podinfo", None, &r, &["apps/podinfo/deployment.yaml".into()]);
        let entry = parse("c", &message).expect("a record");
        assert_eq!(entry.reason, "line one line two");
        assert!(message.contains("Wrote the serving version back to: apps/podinfo/deployment.yaml."));
    }

    #[test]
    fn a_named_cluster_is_in_the_subject_and_a_trailer() {
        let message = commit_message("test/podinfo", Some("prod-eu"), &record("Promoted"), &[]);
        assert!(
            message.starts_with("rollout(test/podinfo@prod-eu): promoted podinfo:6.0.2\n"),
            "{message}"
        );
        assert!(
            message.contains("\nFlaggit-Canary: test/podinfo\nFlaggit-Cluster: prod-eu\nFlaggit-Record: 7\n")
        );
        let entry = parse("c", &message).expect("a record");
        assert_eq!(
            (entry.canary.as_str(), entry.cluster.as_str()),
            ("test/podinfo", "prod-eu")
        );
        let single = parse(
            "c",
            &commit_message("test/podinfo", None, &record("Promoted"), &[]),
        )
        .expect("a record");
        assert_eq!(single.cluster, "");
    }

    #[test]
    fn a_rollback_names_the_secrets_it_could_not_write_back() {
        let mut r = record("RolledBack");
        r.configs = BTreeMap::from([
            ("configmap/podinfo".into(), "c2".into()),
            ("secret/db".into(), "s2".into()),
            ("secret/tls".into(), "t1".into()),
        ]);
        r.primary_configs = BTreeMap::from([
            ("configmap/podinfo".into(), "c1".into()),
            ("secret/db".into(), "s1".into()),
            ("secret/tls".into(), "t1".into()),
        ]);
        assert_eq!(
            changed_configs("configmap", &r.configs, &r.primary_configs),
            ["podinfo"]
        );
        let message = commit_message("test/podinfo", None, &r, &[]);
        assert!(message.contains("\nFlaggit-Secret-Changed: db\n"), "{message}");
        assert!(!message.contains("Secret-Changed: tls"), "{message}");
        assert!(
            message.contains("revert db (or its SOPS-encrypted file)"),
            "{message}"
        );
        assert!(
            !message.contains("s1") && !message.contains("s2"),
            "no checksum in the message"
        );
    }

    #[test]
    fn other_commits_are_not_records() {
        assert_eq!(parse("c", "fix: typo\n\nSigned-off-by: A <a@b>"), None);
        assert_eq!(parse("c", "just a subject"), None);
    }

    #[test]
    fn long_subjects_are_cut() {
        let mut r = record("Halted");
        r.reason = "x".repeat(1000);
        assert_eq!(subject("test/podinfo", &r).chars().count(), 200);
    }

    #[test]
    fn several_containers_are_named_each() {
        let mut r = record("Detected");
        r.images
            .insert("sidecar".into(), "envoy@sha256:0123456789abcdef0123".into());
        assert_eq!(
            subject("test/podinfo", &r),
            "rollout(test/podinfo): start rolling out podinfo=podinfo:6.0.2 sidecar=envoy@0123456789ab"
        );
    }

    #[test]
    fn checks_are_shown_rounded_with_their_unit_and_kept_exact_in_the_trailer() {
        let trailer = "request-success-rate=99.93333333333333:pass, request-duration=412.1234:pass, \
                       error-budget=0.123456:fail, latency=none:fail";
        assert_eq!(
            display_checks(trailer),
            "request-success-rate 99.93% pass, request-duration 412ms pass, error-budget 0.123 fail, latency none fail"
        );
        let parsed = parse_checks(trailer);
        assert_eq!(
            parsed[0].value,
            Some(99.93333333333333),
            "the trailer keeps the exact value"
        );
        assert_eq!(parsed[3].value, None);
        // Older or hand-written trailers: no verdict, stray parts skipped, NaN not a value.
        assert_eq!(display_checks("rate=1.00004, junk, x=NaN"), "rate 1, x none");
    }
}
