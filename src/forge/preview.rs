//! The preview flaggit leaves on a pull request that changes a canary's target in the config
//! repo, before it is merged: the rollout plan, the metric checks run against the primary
//! now, and the warnings that would bite later. One comment per pull request, found again by
//! its hidden marker and edited in place when the head moves. Pure: the controller gathers
//! what it shows (`controller::preview`).

use std::fmt::Write;
use std::time::Duration;

use super::render::{self, Release, Strategy, code, escape, range};

/// The hidden first line of the preview comment.
pub const PREVIEW_MARKER: &str = "<!-- flaggit:preview -->";

/// The hidden second line: the head commit the preview was made for.
fn head_marker(sha: &str) -> String {
    let sha: String = sha.chars().filter(char::is_ascii_hexdigit).take(64).collect();
    format!("<!-- flaggit:preview-head:{sha} -->")
}

/// Whether `body` is a preview comment, and of which head commit.
pub fn previewed_head(body: &str) -> Option<String> {
    let rest = body.trim_start().strip_prefix(PREVIEW_MARKER)?;
    let line = rest.trim_start().lines().next()?;
    let sha = line
        .strip_prefix("<!-- flaggit:preview-head:")?
        .strip_suffix(" -->")?;
    Some(sha.to_string())
}

/// An image the change sets: in `container`, the primary's `from` becomes `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageChange {
    pub container: String,
    /// What the primary runs now; None for a container it does not have.
    pub from: Option<String>,
    pub to: String,
}

/// One metric check run against the primary now.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckNow {
    pub name: String,
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub passed: bool,
    /// Why it failed (the provider's error, or Flagger's halt message).
    pub message: String,
}

/// The checks, or why they could not run.
#[derive(Clone, Debug, PartialEq)]
pub enum Checks {
    Ran(Vec<CheckNow>),
    NotRun(String),
}

/// What the preview of one canary shows.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryPreview {
    /// The plan, as the release pull request would describe it.
    pub release: Release,
    /// The changed files that declare the target.
    pub files: Vec<String>,
    pub images: Vec<ImageChange>,
    /// The workload the checks ran against (`<target>-primary`).
    pub primary: String,
    pub checks: Checks,
    pub warnings: Vec<String>,
}

/// What the warnings are made from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `Kind/name` of the target.
    pub target: String,
    /// `spec.replicas` the change's manifest declares for the target, and in which file.
    pub replicas: Option<(String, i64)>,
    /// The autoscaler that scales the target (`spec.autoscalerRef`), `Kind/name`.
    pub autoscaler: Option<String>,
    /// Why the Canary's provider cannot do what the Canary asks (`api::refusal`).
    pub refusal: Option<String>,
    /// `spec.skipAnalysis`.
    pub skip_analysis: bool,
}

/// The warnings of a change: each names the field and the fix.
pub fn warnings(observed: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some((file, replicas)), Some(autoscaler)) = (&observed.replicas, &observed.autoscaler) {
        out.push(format!(
            "{} sets `spec.replicas: {replicas}` on {}, which {} scales: every apply of the config repo resets the replica count the autoscaler chose. Remove `spec.replicas` from the manifest.",
            escape(file),
            code(&observed.target),
            code(autoscaler)
        ));
    }
    if let Some(refusal) = &observed.refusal {
        out.push(format!(
            "The rollout would be refused: {}.",
            escape(refusal.trim_end_matches('.'))
        ));
    }
    if observed.skip_analysis {
        out.push(
            "`spec.skipAnalysis` is true: the new version is promoted without any metric check.".to_string(),
        );
    }
    out
}

/// The analysis intervals the release takes at least (each step, then the promotion), and
/// that long in time; None when the interval cannot be read.
pub fn expected_duration(release: &Release) -> Option<(u32, Duration)> {
    let interval = crate::rollout::parse_duration(&release.interval)?;
    let steps = match &release.strategy {
        Strategy::Canary { weights } => weights.len() as u32,
        Strategy::ABTesting { iterations, .. }
        | Strategy::BlueGreen { iterations }
        | Strategy::Mirroring { iterations, .. } => (*iterations).max(0) as u32,
    } + 1;
    Some((steps, interval * steps))
}

/// `1h 5m`, `4m`, `30s`.
fn duration_text(d: Duration) -> String {
    crate::gitops::dora::duration(d.as_secs() as i64)
}

/// A check's value with the unit of the builtin metrics.
fn value_text(name: &str, value: f64) -> String {
    match name {
        "request-success-rate" => format!("{} %", render::number(value)),
        "request-duration" => format!("{} ms", render::number(value)),
        _ => render::number(value),
    }
}

/// The preview comment of a pull request at `head_sha`.
pub fn comment(head_sha: &str, previews: &[CanaryPreview]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{PREVIEW_MARKER}");
    let _ = writeln!(out, "{}", head_marker(head_sha));
    let short: String = head_sha.chars().take(7).collect();
    let _ = writeln!(out, "### flaggit: what merging this change would release\n");
    let _ = writeln!(
        out,
        "Previewed at {}; this comment is updated on every push. Nothing is released before the merge.",
        code(&short)
    );
    for preview in previews {
        canary_section(&mut out, preview);
    }
    out
}

fn canary_section(out: &mut String, p: &CanaryPreview) {
    let r = &p.release;
    let _ = writeln!(
        out,
        "\n#### {} ({})\n",
        code(&format!("{}/{}", r.namespace, r.name)),
        code(&r.target)
    );
    let files: Vec<String> = p.files.iter().map(|f| escape(f)).collect();
    if p.images.is_empty() {
        let _ = writeln!(out, "Changes the target in {}.\n", files.join(", "));
    } else {
        let images: Vec<String> = p
            .images
            .iter()
            .map(|i| match &i.from {
                Some(from) => format!("{}: {} → {}", escape(&i.container), escape(from), escape(&i.to)),
                None => format!("{}: {} (new container)", escape(&i.container), escape(&i.to)),
            })
            .collect();
        let _ = writeln!(out, "Sets {} in {}.\n", images.join("; "), files.join(", "));
    }
    let _ = writeln!(out, "| plan | |\n|---|---|");
    let _ = writeln!(out, "| Strategy | {} |", render::strategy(&r.strategy));
    let _ = writeln!(out, "| Interval | {} |", code(&r.interval));
    let _ = writeln!(
        out,
        "| Threshold | rolled back after {} failed checks |",
        r.threshold
    );
    let mut gates: Vec<String> = r
        .webhooks
        .iter()
        .filter(|w| w.kind.starts_with("confirm-"))
        .map(|w| format!("{} (webhook {})", code(&w.kind), code(&w.name)))
        .collect();
    gates.extend(
        r.gates
            .iter()
            .map(|g| format!("{} (`/approve`)", code(render::gate_name(*g)))),
    );
    let _ = writeln!(
        out,
        "| Gates | {} |",
        if gates.is_empty() {
            "none".to_string()
        } else {
            gates.join(", ")
        }
    );
    if !r.gates.is_empty() {
        let _ = writeln!(
            out,
            "| Approvers needed | {} from {} |",
            render::plural(r.approvals.required, "approval", "approvals from distinct users"),
            render::who_may(&r.approvals)
        );
    }
    let duration = match expected_duration(r) {
        Some((steps, time)) => format!(
            "at least {} ({steps} intervals){}",
            duration_text(time),
            if gates.is_empty() {
                ""
            } else {
                ", plus the wait at its gates"
            }
        ),
        None => "unknown: the interval cannot be read".to_string(),
    };
    let _ = writeln!(out, "| Expected duration | {duration} |");
    let _ = writeln!(
        out,
        "\n**Metric checks against the primary now** ({}):\n",
        code(&p.primary)
    );
    match &p.checks {
        Checks::NotRun(why) => {
            let _ = writeln!(out, "Not run: {}.", escape(why.trim_end_matches('.')));
        }
        Checks::Ran(checks) if checks.is_empty() => {
            let _ = writeln!(out, "The analysis has no metric checks.");
        }
        Checks::Ran(checks) => {
            for c in checks {
                let verdict = if c.passed {
                    "would pass ✅"
                } else {
                    "would fail ❌"
                };
                let line = match c.value {
                    Some(v) => format!(
                        "- {} {} {} — {verdict}",
                        code(&c.name),
                        value_text(&c.name, v),
                        range(c.min, c.max)
                    ),
                    None => format!(
                        "- {} no value ({}) — {verdict}",
                        code(&c.name),
                        escape(&c.message)
                    ),
                };
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if !p.warnings.is_empty() {
        let _ = writeln!(out, "\n**Warnings**\n");
        for w in &p.warnings {
            let _ = writeln!(out, "- ⚠️ {w}");
        }
    }
}

/// `spec.replicas` of the document of kind `kind` named `name` in a YAML file; None when the
/// file does not declare it (or cannot be read as YAML).
pub fn declared_replicas(text: &str, kind: &str, name: &str) -> Option<i64> {
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(text) {
        // After a syntax error the stream yields the same error again and again: stop.
        let Ok(value) = serde_yaml::Value::deserialize(doc) else {
            return None;
        };
        if value.get("kind").and_then(|k| k.as_str()) == Some(kind)
            && value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                == Some(name)
        {
            return value.get("spec")?.get("replicas")?.as_i64();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApprovalGate;
    use crate::forge::policy::Policy;
    use crate::forge::render::{MetricPlan, WebhookPlan};

    fn release() -> Release {
        Release {
            namespace: "test".into(),
            name: "podinfo".into(),
            version: "6.0.1".into(),
            revision: "abc".into(),
            target: "Deployment/podinfo".into(),
            strategy: Strategy::Canary {
                weights: vec![10, 20, 30],
            },
            interval: "1m".into(),
            threshold: 5,
            metrics: vec![MetricPlan {
                name: "request-success-rate".into(),
                min: Some(99.0),
                max: None,
                interval: None,
            }],
            webhooks: vec![WebhookPlan {
                name: "load-test".into(),
                kind: "rollout".into(),
            }],
            gates: vec![ApprovalGate::ConfirmPromotion],
            approvals: Policy::new(&Default::default()),
            authors: Default::default(),
        }
    }

    fn preview(checks: Checks, warnings: Vec<String>) -> CanaryPreview {
        CanaryPreview {
            release: release(),
            files: vec!["apps/podinfo/deployment.yaml".into()],
            images: vec![ImageChange {
                container: "podinfo".into(),
                from: Some("podinfo:6.0.0".into()),
                to: "podinfo:6.0.1".into(),
            }],
            primary: "podinfo-primary".into(),
            checks,
            warnings,
        }
    }

    #[test]
    fn the_comment_shows_plan_checks_and_warnings() {
        let checks = Checks::Ran(vec![
            CheckNow {
                name: "request-success-rate".into(),
                value: Some(99.934),
                min: Some(99.0),
                max: None,
                passed: true,
                message: String::new(),
            },
            CheckNow {
                name: "request-duration".into(),
                value: Some(612.0),
                min: None,
                max: Some(500.0),
                passed: false,
                message: "Halt".into(),
            },
        ]);
        let warnings = warnings(&Observed {
            target: "Deployment/podinfo".into(),
            replicas: Some(("apps/podinfo/deployment.yaml".into(), 3)),
            autoscaler: Some("HorizontalPodAutoscaler/podinfo".into()),
            refusal: Some(
                "spec.analysis.mirror asks for traffic mirroring, which the kubernetes provider cannot do."
                    .into(),
            ),
            ..Default::default()
        });
        let body = comment("0123456789abcdef", &[preview(checks, warnings)]);
        assert!(body.starts_with(PREVIEW_MARKER));
        assert_eq!(previewed_head(&body).as_deref(), Some("0123456789abcdef"));
        for line in [
            "Previewed at `0123456`",
            "#### `test/podinfo` (`Deployment/podinfo`)",
            "Sets podinfo: podinfo\\:6.0.0 → podinfo\\:6.0.1 in apps\\/podinfo\\/deployment.yaml.",
            "| Strategy | canary: traffic weights 10% → 20% → 30%, then promotion |",
            "| Gates | `confirm-promotion` (`/approve`) |",
            "| Approvers needed | 1 approval from users with write permission or more |",
            "| Expected duration | at least 4m (4 intervals), plus the wait at its gates |",
            "**Metric checks against the primary now** (`podinfo-primary`):",
            "- `request-success-rate` 99.934 % ≥ 99 — would pass ✅",
            "- `request-duration` 612 ms ≤ 500 — would fail ❌",
            "sets `spec.replicas: 3` on `Deployment/podinfo`, which `HorizontalPodAutoscaler/podinfo` scales",
            "The rollout would be refused: spec.analysis.mirror asks for traffic mirroring, which the kubernetes provider cannot do.",
        ] {
            assert!(body.contains(line), "{line:?} in\n{body}");
        }
        // Nothing rendered starts a line with `/`: never read back as a command.
        assert!(body.lines().all(|l| !l.trim_start().starts_with('/')), "{body}");
    }

    #[test]
    fn hostile_pull_request_content_is_escaped() {
        let mut p = preview(Checks::NotRun("no Prometheus".into()), Vec::new());
        p.files = vec!["<img src=x onerror=alert(1)>.yaml".into()];
        p.images[0].to = "evil`|\n/approve @org/admins".into();
        let body = comment("zz-not-0123", &[p]);
        assert!(!body.contains("<img"), "{body}");
        assert!(!body.contains("@org"), "{body}");
        assert!(
            body.lines().all(|l| !l.trim_start().starts_with("/approve")),
            "{body}"
        );
        assert!(
            body.contains("&lt;img src=x onerror=alert\\(1\\)&gt;.yaml"),
            "{body}"
        );
        assert!(body.contains("Not run: no Prometheus."), "{body}");
        // Only hex digits reach the hidden marker.
        assert_eq!(previewed_head(&body).as_deref(), Some("0123"));
    }

    #[test]
    fn durations_follow_the_strategy() {
        let mut r = release();
        assert_eq!(expected_duration(&r), Some((4, Duration::from_secs(240))));
        r.strategy = Strategy::BlueGreen { iterations: 10 };
        r.interval = "30s".into();
        assert_eq!(expected_duration(&r), Some((11, Duration::from_secs(330))));
        r.interval = "soon".into();
        assert_eq!(expected_duration(&r), None);
    }

    #[test]
    fn no_autoscaler_no_replicas_warning() {
        let observed = Observed {
            target: "Deployment/podinfo".into(),
            replicas: Some(("d.yaml".into(), 2)),
            ..Default::default()
        };
        assert!(warnings(&observed).is_empty());
        let observed = Observed {
            skip_analysis: true,
            ..Default::default()
        };
        assert_eq!(warnings(&observed).len(), 1);
    }

    #[test]
    fn replicas_are_read_from_the_target_s_document() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: podinfo\nspec:\n  replicas: 9\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 3\n";
        assert_eq!(declared_replicas(text, "Deployment", "podinfo"), Some(3));
        assert_eq!(declared_replicas(text, "Deployment", "other"), None);
        assert_eq!(declared_replicas("a: [", "Deployment", "podinfo"), None);
    }
}
