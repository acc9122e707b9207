//! The text people read on a release pull request: its title and plan, the one status comment
//! updated in place, and the replies to commands. Pure functions over plain structs the
//! controller fills from the Canary spec and the ledger. Nothing rendered here ever starts a
//! line with `/`, so the controller's own comments are never read back as commands.

use std::fmt::Write;

use jiff::Timestamp;

use super::command::{self, Command};
use super::policy::{Authors, Policy, Verdict, permission_name};
use crate::api::ApprovalGate;
use crate::rollout::REVISION_PREFIX;

/// The hidden first line of the status comment: how the controller finds it again.
pub const STATUS_MARKER: &str = "<!-- flaggit:status -->";

/// The hidden first line of a release pull request's description.
pub const RELEASE_MARKER: &str = "<!-- flaggit:release -->";

/// Longest name (metric, webhook, team) shown; longer ones are cut.
const MAX_NAME: usize = 100;

/// How the release shifts traffic.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Weighted steps (`stepWeight`/`maxWeight` or `stepWeights`), in percent.
    Canary { weights: Vec<i32> },
    /// Iterations of header or cookie matched traffic.
    ABTesting { iterations: i32, matches: Vec<String> },
    /// Iterations against the canary before switching all traffic at once.
    BlueGreen { iterations: i32 },
    /// Iterations with traffic mirrored to the canary (`mirror: true`), then a switch.
    Mirroring {
        iterations: i32,
        mirror_weight: Option<i32>,
    },
}

impl Strategy {
    fn by_weight(&self) -> bool {
        matches!(self, Strategy::Canary { .. })
    }
}

/// A metric check of the analysis and the range it must stay in.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPlan {
    pub name: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub interval: Option<String>,
}

/// A Flagger webhook of the analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookPlan {
    pub name: String,
    /// Its type as spelt in the spec: `confirm-promotion`, `pre-rollout`, `rollout` ...
    pub kind: String,
}

/// Everything the description of a release pull request says.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    pub namespace: String,
    pub name: String,
    /// From [`version`].
    pub version: String,
    pub revision: String,
    /// `Kind/name` of the target.
    pub target: String,
    pub strategy: Strategy,
    pub interval: String,
    /// Failed checks that roll the release back.
    pub threshold: i32,
    pub metrics: Vec<MetricPlan>,
    pub webhooks: Vec<WebhookPlan>,
    /// Gates bound to `/approve` on the pull request.
    pub gates: Vec<ApprovalGate>,
    pub approvals: Policy,
    /// Who made the change: the authors of its config-repo commits.
    pub authors: Authors,
}

/// One analysis step, from a ledger record.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub time: Timestamp,
    /// The ledger record number.
    pub record: i64,
    pub weight: i32,
    pub iteration: i32,
    pub checks: Vec<Check>,
    pub failed_checks: i32,
}

/// A metric's value at a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    pub value: Option<f64>,
    pub passed: bool,
}

/// What the release waits for now.
#[derive(Clone, Debug, PartialEq)]
pub enum Waiting {
    /// `/approve` on the pull request.
    Approval {
        gate: ApprovalGate,
        approved_by: Vec<String>,
        required: usize,
        /// A person merged the pull request: their merge counts as one approval, and the
        /// release still waits for the policy.
        merged_by: Option<String>,
        /// What else the policy still needs (an owner of some files, a person for a bot's
        /// change), beyond the count.
        missing: Vec<String>,
    },
    /// A Flagger webhook gate.
    Webhook { name: String, kind: String },
}

/// A command someone gave, and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    pub time: Timestamp,
    pub user: String,
    pub command: Command,
    pub verdict: Verdict,
}

/// What the status comment shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// `Progressing`, `Waiting`, `Succeeded`, `Failed` ...
    pub phase: String,
    pub steps: Vec<Step>,
    pub waiting: Option<Waiting>,
    pub log: Vec<Logged>,
    /// Approvals that no longer count, each with why (`@alice's approval of
    /// confirm-promotion: ...`).
    pub voided: Vec<String>,
}

/// The release's version: the image tag of the target's first container, else the short
/// revision.
pub fn version(first_image: Option<&str>, revision: &str) -> String {
    let tag = first_image.and_then(|image| {
        let image = image.split('@').next().unwrap_or(image);
        let last = image.rsplit('/').next().unwrap_or(image);
        let (_, tag) = last.split_once(':')?;
        (!tag.is_empty()).then(|| tag.to_owned())
    });
    tag.unwrap_or_else(|| {
        let hash = revision.strip_prefix(REVISION_PREFIX).unwrap_or(revision);
        hash.chars().take(7).collect()
    })
}

/// The pull request title: `Release <namespace>/<name> <version>`, or
/// `Release <namespace>/<name>@<cluster> <version>` in a named cluster (as the commit subjects
/// name it), so two clusters' pull requests for one release are told apart in the list.
pub fn title(namespace: &str, name: &str, cluster: Option<&str>, version: &str) -> String {
    let what = match cluster.filter(|c| !c.is_empty()) {
        Some(cluster) => format!("{namespace}/{name}@{cluster}"),
        None => format!("{namespace}/{name}"),
    };
    command::sanitize(&format!("Release {what} {version}"), 200)
}

/// The pull request description: the plan, the gates, who may approve, and the commands.
pub fn body(release: &Release) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{RELEASE_MARKER}");
    let _ = writeln!(
        out,
        "flaggit is releasing {} {} (revision {}) of {}.\n",
        code(&format!("{}/{}", release.namespace, release.name)),
        code(&release.version),
        code(&release.revision),
        code(&release.target),
    );
    let _ = writeln!(out, "{}\n", authors_line(&release.authors));
    if !release.authors.commits.is_empty() {
        let commits: Vec<String> = release
            .authors
            .commits
            .iter()
            .map(|c| match c.split_once(' ') {
                Some((id, who)) => format!("{} {}", code(id), escape(who)),
                None => code(c),
            })
            .collect();
        let _ = writeln!(out, "Commits: {}.\n", commits.join(", "));
    }
    if release.authors.has_bot() {
        let bots: Vec<String> = release.authors.bots.iter().map(|b| code(b)).collect();
        let _ = writeln!(
            out,
            "A bot authored this change ({}): a gate opens only with an approval from a person.\n",
            bots.join(", ")
        );
    }
    let _ = writeln!(out, "### Plan\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Strategy | {} |", strategy(&release.strategy));
    let _ = writeln!(out, "| Interval | {} |", code(&release.interval));
    let _ = writeln!(
        out,
        "| Threshold | rolled back after {} failed checks |",
        release.threshold
    );
    if !release.metrics.is_empty() {
        let _ = writeln!(out, "\n### Metrics\n");
        let _ = writeln!(out, "| metric | threshold | interval |\n|---|---|---|");
        for m in &release.metrics {
            let interval = m
                .interval
                .as_deref()
                .map(code)
                .unwrap_or_else(|| "analysis interval".into());
            let _ = writeln!(
                out,
                "| {} | {} | {interval} |",
                code(&m.name),
                range(m.min, m.max)
            );
        }
    }
    let _ = writeln!(out, "\n### Gates\n");
    let webhook_gates: Vec<_> = release
        .webhooks
        .iter()
        .filter(|w| w.kind.starts_with("confirm-"))
        .collect();
    if webhook_gates.is_empty() && release.gates.is_empty() {
        let _ = writeln!(out, "None: the release proceeds while its checks pass.");
    }
    for w in webhook_gates {
        let _ = writeln!(out, "- {}: webhook {}", code(&w.kind), code(&w.name));
    }
    for gate in &release.gates {
        let _ = writeln!(
            out,
            "- {}: `/approve` on this pull request",
            code(gate_name(*gate))
        );
    }
    let hooks: Vec<_> = release
        .webhooks
        .iter()
        .filter(|w| !w.kind.starts_with("confirm-"))
        .collect();
    if !hooks.is_empty() {
        let names: Vec<_> = hooks
            .iter()
            .map(|w| format!("{} ({})", code(&w.name), code(&w.kind)))
            .collect();
        let _ = writeln!(out, "\nWebhooks: {}.", names.join(", "));
    }
    let policy = &release.approvals;
    if !release.gates.is_empty() {
        let _ = writeln!(
            out,
            "\nA gate opens after {} from {}.{}",
            plural(policy.required, "approval", "approvals from distinct users"),
            who_may(policy),
            if policy.allow_self_approval {
                ""
            } else {
                " The author of the change may not approve it."
            }
        );
    }
    if let Some(owners) = policy.owners.as_ref().filter(|_| policy.owners_wanted) {
        let at: String = owners.commit.chars().take(7).collect();
        match &owners.error {
            Some(error) => {
                let _ = writeln!(
                    out,
                    "\n**The owners of this release cannot be read** (at {}): {}. No approval \
                     counts until it is fixed.",
                    code(&at),
                    escape(error)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "\nOwners, from {} at {} (the base commit, not this release):\n",
                    code(&owners.file),
                    code(&at)
                );
                for group in &owners.groups {
                    let who: Vec<String> = group.owners.iter().map(|o| code(o)).collect();
                    let paths: Vec<String> = group.paths.iter().map(|p| code(p)).collect();
                    let _ = writeln!(out, "- {}: one of {}", paths.join(", "), who.join(", "));
                }
            }
        }
    }
    if let Some(max_age) = policy.max_age {
        let _ = writeln!(
            out,
            "\nAn approval counts for {}; a push to the release branch by anyone but flaggit voids \
             the approvals given before it.",
            code(&duration(max_age))
        );
    }
    let _ = writeln!(out, "\n### Commands\n");
    let _ = writeln!(
        out,
        "Comment one command per line; edited comments are not read.\n"
    );
    let _ = writeln!(out, "| command | what it does |\n|---|---|");
    for (name, what) in [
        (
            "approve",
            "opens the gate waiting now (an approving review counts too)",
        ),
        ("rollback [reason]", "stops the release and rolls back"),
        ("pause", "holds the analysis at its current step"),
        ("resume", "continues a paused analysis"),
        ("retry", "starts the analysis again after a failed release"),
        ("status", "replies with a fresh summary"),
    ] {
        let _ = writeln!(out, "| `/{name}` | {what} |");
    }
    let _ = writeln!(out, "\nCommands are taken from {}.", who_may(policy));
    out
}

/// The status comment: [`STATUS_MARKER`], the phase, a table of steps, the gate waiting now
/// and the commands given.
pub fn status_comment(release: &Release, status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{STATUS_MARKER}");
    let _ = writeln!(out, "### {}: {}\n", heading(release), escape(&status.phase));
    if status.steps.is_empty() {
        let _ = writeln!(out, "No analysis step yet.");
    } else {
        let _ = write!(out, "{}", steps_table(release, &status.steps));
    }
    if let Some(waiting) = &status.waiting {
        let _ = writeln!(out, "\n{}", waiting_line(waiting));
    }
    if !status.voided.is_empty() {
        let _ = writeln!(out, "\n#### Voided approvals\n");
        for voided in &status.voided {
            let _ = writeln!(out, "- {}", escape(voided));
        }
    }
    if !status.log.is_empty() {
        let _ = writeln!(out, "\n#### Commands\n");
        let _ = writeln!(out, "| time (UTC) | who | command | result |\n|---|---|---|---|");
        for entry in &status.log {
            let result = match &entry.verdict {
                Verdict::Accepted => "accepted".to_owned(),
                Verdict::Refused(reason) => format!("refused: {}", escape(reason)),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {result} |",
                entry.time.strftime("%Y-%m-%d %H:%M:%S"),
                escape(&entry.user),
                command_text(&entry.command)
            );
        }
    }
    out
}

/// The hidden first line of a note flaggit leaves on a pull request, by what it is about
/// (e.g. `superseded:<revision>`): a retry finds the note and does not leave it twice.
pub fn note_marker(key: &str) -> String {
    format!("<!-- flaggit:note:{} -->", marker_key(key))
}

/// The hidden first line of the reply to a comment or review (`comment-<id>`,
/// `review-<id>`): a retry finds the reply and does not answer twice.
pub fn reply_marker(source: &str) -> String {
    format!("<!-- flaggit:reply:{} -->", marker_key(source))
}

/// `text` under its hidden `marker` line.
pub fn marked(marker: &str, text: &str) -> String {
    format!("{marker}\n{text}")
}

/// Whether a comment body starts with `marker`.
pub fn has_marker(body: &str, marker: &str) -> bool {
    body.trim_start().starts_with(marker)
}

/// A key that cannot end the HTML comment it sits in.
fn marker_key(key: &str) -> String {
    let kept: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'))
        .take(120)
        .collect();
    kept.replace("--", "-")
}

/// The note on a release pull request that a newer revision replaced.
pub fn superseded_note(id: &str, revision: &str) -> String {
    format!(
        "Superseded: {} moved on to revision {} before this release ended.",
        code(id),
        code(revision)
    )
}

/// The note on a release pull request flaggit closes because the release ended (`RolledBack`,
/// `Cancelled`), with the reason escaped: it may quote a reviewer's `/rollback`.
pub fn ended_note(kind: &str, reason: &str, base: &str, commit: Option<&str>) -> String {
    let mut note = format!("**{kind}**: {}", escape(reason));
    if kind == "RolledBack" {
        let _ = write!(
            note,
            "\n\nThe serving version is written back to {} in {}.",
            code(base),
            commit.map(code).unwrap_or_else(|| "the next commit".into())
        );
    }
    note
}

/// The note on a release pull request whose rollback went to a revert pull request.
pub fn reverted_note(revert_url: &str) -> String {
    // The forge's own URL, not text someone wrote.
    format!("**RolledBack**: see the revert pull request {revert_url}.")
}

/// The description of a revert pull request.
pub fn revert_body(revision: &str, reason: &str, base: &str) -> String {
    format!(
        "The release of revision {} was rolled back: {}\n\nMerge this pull request to write the serving version back to {}.",
        code(revision),
        escape(reason),
        code(base)
    )
}

/// Whether a comment is the status comment.
pub fn is_status_comment(body: &str) -> bool {
    body.trim_start().starts_with(STATUS_MARKER)
}

/// The reply to a refused command.
pub fn refused_reply(user: &str, command: &Command, reason: &str) -> String {
    format!(
        "@{}: {} was refused: {}",
        login(user),
        command_text(command),
        escape(reason)
    )
}

/// The reply to `/words` that are not commands.
pub fn unknown_reply(user: &str, words: &[String]) -> String {
    let words: Vec<String> = words.iter().map(|w| code(&format!("/{w}"))).collect();
    let known: Vec<String> = Command::NAMES.iter().map(|n| format!("`/{n}`")).collect();
    format!(
        "@{}: unknown command {}. The commands are {}.",
        login(user),
        words.join(", "),
        known.join(", ")
    )
}

/// The reply to `/status`: the phase, the last step and what the release waits for.
pub fn status_reply(user: &str, release: &Release, status: &Status) -> String {
    let mut out = format!(
        "@{}: {} is {}",
        login(user),
        heading(release),
        escape(&status.phase)
    );
    if let Some(step) = status.steps.last() {
        let at = if release.strategy.by_weight() {
            format!("weight {}%", step.weight)
        } else {
            format!("iteration {}", step.iteration)
        };
        let _ = write!(
            out,
            " at {at}, {} failed checks of {}",
            step.failed_checks, release.threshold
        );
    }
    out.push('.');
    if let Some(waiting) = &status.waiting {
        let _ = write!(out, " {}", waiting_line(waiting));
    }
    out
}

/// `Release <namespace>/<name> <version>` with the names in code spans.
fn heading(release: &Release) -> String {
    format!(
        "Release {} {}",
        code(&format!("{}/{}", release.namespace, release.name)),
        code(&release.version)
    )
}

fn steps_table(release: &Release, steps: &[Step]) -> String {
    // One column per planned metric, then any metric the steps report that the plan lacks.
    let mut columns: Vec<(String, String)> = release
        .metrics
        .iter()
        .map(|m| (m.name.clone(), range(m.min, m.max)))
        .collect();
    for check in steps.iter().flat_map(|s| &s.checks) {
        if !columns.iter().any(|(name, _)| *name == check.name) {
            columns.push((check.name.clone(), "–".into()));
        }
    }
    let by_weight = release.strategy.by_weight();
    let mut out = String::new();
    let _ = write!(
        out,
        "| time (UTC) | record | {} |",
        if by_weight { "weight" } else { "iteration" }
    );
    for (name, range) in &columns {
        let _ = write!(out, " {} {range} |", code(name));
    }
    let _ = writeln!(out, " failed checks |");
    let _ = writeln!(out, "|---|---|---|{}---|", "---|".repeat(columns.len()));
    for step in steps {
        let at = if by_weight {
            format!("{}%", step.weight)
        } else {
            step.iteration.to_string()
        };
        // A step left out of Git (`records: transitions`) has no record number.
        let record = if step.record > 0 {
            step.record.to_string()
        } else {
            "–".into()
        };
        let _ = write!(
            out,
            "| {} | {record} | {at} |",
            step.time.strftime("%Y-%m-%d %H:%M:%S"),
        );
        for (name, _) in &columns {
            let cell = match step.checks.iter().find(|c| c.name == *name) {
                None => "–".to_owned(),
                Some(c) => format!(
                    "{} {}",
                    c.value.map(number).unwrap_or_else(|| "no value".into()),
                    if c.passed { "✅" } else { "❌" }
                ),
            };
            let _ = write!(out, " {cell} |");
        }
        let _ = writeln!(out, " {} |", step.failed_checks);
    }
    out
}

fn waiting_line(waiting: &Waiting) -> String {
    match waiting {
        Waiting::Approval {
            gate,
            approved_by,
            required,
            merged_by,
            missing,
        } => {
            let names = if approved_by.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = approved_by.iter().map(|u| escape(u)).collect();
                format!(" ({})", names.join(", "))
            };
            let merged = match merged_by {
                Some(by) => format!(
                    " The pull request was merged by @{}: a merge counts as one approval, and the \
                     release waits until the approval policy is met.",
                    login(by)
                ),
                None => String::new(),
            };
            let mut line = format!(
                "**Waiting for** {}: {}/{required} approvals{names}. Comment `/approve` to approve.{merged}",
                code(gate_name(*gate)),
                approved_by.len()
            );
            for need in missing {
                let _ = write!(line, "\n- Still needed: {}", escape(need));
            }
            line
        }
        Waiting::Webhook { name, kind } => {
            format!("**Waiting for** {}: webhook {}.", code(kind), code(name))
        }
    }
}

/// A command as logged: its word, and a rollback's reason escaped.
fn command_text(command: &Command) -> String {
    match command {
        Command::Rollback { reason: Some(reason) } => format!("`/rollback` {}", escape(reason)),
        other => format!("`{other}`"),
    }
}

pub(super) fn strategy(strategy: &Strategy) -> String {
    match strategy {
        Strategy::Canary { weights } => {
            let steps: Vec<String> = weights.iter().map(|w| format!("{w}%")).collect();
            format!("canary: traffic weights {}, then promotion", steps.join(" → "))
        }
        Strategy::ABTesting { iterations, matches } => {
            let matches: Vec<String> = matches.iter().map(|m| code(m)).collect();
            let to = if matches.is_empty() {
                String::new()
            } else {
                format!(" of traffic matching {}", matches.join(" or "))
            };
            format!("A/B testing: {iterations} iterations{to}, then promotion")
        }
        Strategy::BlueGreen { iterations } => {
            format!("blue/green: {iterations} iterations against the canary, then all traffic switches")
        }
        Strategy::Mirroring {
            iterations,
            mirror_weight,
        } => {
            let share = mirror_weight
                .map(|w| format!(" ({w}% of requests)"))
                .unwrap_or_default();
            format!(
                "mirroring: {iterations} iterations of mirrored traffic{share}, then all traffic switches"
            )
        }
    }
}

/// Who made the change, as the description names them.
fn authors_line(authors: &Authors) -> String {
    let unknown: Vec<String> = authors.unknown.iter().map(|u| code(u)).collect();
    match (authors.logins.is_empty(), unknown.is_empty()) {
        (true, true) => "The author of this change is unknown: no config-repo commit that brought \
                         this revision was found."
            .to_owned(),
        (true, false) => format!(
            "The author of this change is unknown: no account matches {}.",
            unknown.join(", ")
        ),
        (false, known) => {
            let names: Vec<String> = authors
                .logins
                .iter()
                .map(|u| {
                    let bot = authors.bots.iter().any(|b| b.eq_ignore_ascii_case(u));
                    format!("@{}{}", login(u), if bot { " (bot)" } else { "" })
                })
                .collect();
            let mut line = format!(
                "Authored by {} (the config-repo commits of this revision)",
                names.join(", ")
            );
            if !known {
                let _ = write!(line, "; no account matches {}", unknown.join(", "));
            }
            line.push('.');
            line
        }
    }
}

pub(super) fn who_may(policy: &Policy) -> String {
    let mut who = vec![format!(
        "users with {} permission or more",
        permission_name(policy.permission)
    )];
    if !policy.approvers.is_empty() {
        let names: Vec<String> = policy.approvers.iter().map(|u| escape(u)).collect();
        who.push(names.join(", "));
    }
    for (org, team) in &policy.teams {
        who.push(format!("members of {}", code(&format!("{org}/{team}"))));
    }
    match who.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => who.concat(),
    }
}

/// A duration the way specs write it: `24h`, `90m`, `45s`.
fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

pub fn gate_name(gate: ApprovalGate) -> &'static str {
    match gate {
        ApprovalGate::ConfirmRollout => "confirm-rollout",
        ApprovalGate::ConfirmTrafficIncrease => "confirm-traffic-increase",
        ApprovalGate::ConfirmPromotion => "confirm-promotion",
    }
}

/// A threshold range: `≥ 99`, `≤ 500`, `1 – 2`, or `–` when unbounded.
pub(super) fn range(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("{} – {}", number(min), number(max)),
        (Some(min), None) => format!("≥ {}", number(min)),
        (None, Some(max)) => format!("≤ {}", number(max)),
        (None, None) => "–".into(),
    }
}

/// A metric value with at most 3 decimals and no trailing zeros.
pub(super) fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.to_owned() }
}

/// Free text made markdown-safe on one line: the one function every echo of text someone
/// else wrote (a `/rollback` reason, a login, a refusal that quotes either) goes through.
pub fn escape(text: &str) -> String {
    command::escape_markdown(text, 500)
}

/// A name in a code span: backticks and table pipes cannot break out of it.
pub(super) fn code(text: &str) -> String {
    let clean = command::sanitize(text, MAX_NAME)
        .replace('`', "'")
        .replace('|', "\\|");
    format!("`{clean}`")
}

/// A GitHub login as it appears after `@`: only the characters logins have.
pub fn login_of(user: &str) -> String {
    login(user)
}

fn login(user: &str) -> String {
    user.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '[' | ']'))
        .take(60)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::api::RepositoryPermission;

    fn at(hms: &str) -> Timestamp {
        format!("2026-11-22T{hms}Z").parse().expect("a timestamp")
    }

    fn canary() -> Release {
        Release {
            namespace: "test".into(),
            name: "podinfo".into(),
            version: version(Some("ghcr.io/stefanprodan/podinfo:6.0.1"), "flaggit1-5f7c9d2a1b"),
            revision: "flaggit1-5f7c9d2a1b".into(),
            target: "Deployment/podinfo".into(),
            strategy: Strategy::Canary {
                weights: vec![10, 20, 30],
            },
            interval: "1m".into(),
            threshold: 5,
            metrics: vec![
                MetricPlan {
                    name: "request-success-rate".into(),
                    min: Some(99.0),
                    max: None,
                    interval: Some("1m".into()),
                },
                MetricPlan {
                    name: "request-duration".into(),
                    min: None,
                    max: Some(500.0),
                    interval: None,
                },
            ],
            webhooks: vec![
                WebhookPlan {
                    name: "load-test".into(),
                    kind: "rollout".into(),
                },
                WebhookPlan {
                    name: "qa-gate".into(),
                    kind: "confirm-rollout".into(),
                },
            ],
            gates: vec![ApprovalGate::ConfirmPromotion],
            approvals: Policy {
                required: 2,
                permission: RepositoryPermission::Write,
                approvers: BTreeSet::from(["alice".to_owned()]),
                teams: vec![("acme".into(), "sre".into())],
                allow_self_approval: false,
                allow_unknown_author: false,
                ..Policy::default()
            },
            authors: Authors {
                logins: vec!["hank".into()],
                unknown: vec![],
                ..Authors::default()
            },
        }
    }

    fn ab() -> Release {
        Release {
            namespace: "test".into(),
            name: "abtest".into(),
            version: version(Some("localhost:5000/abtest"), "flaggit1-0a1b2c3d4e"),
            revision: "flaggit1-0a1b2c3d4e".into(),
            target: "Deployment/abtest".into(),
            strategy: Strategy::ABTesting {
                iterations: 10,
                matches: vec!["x-canary: insider".into()],
            },
            interval: "30s".into(),
            threshold: 2,
            metrics: vec![MetricPlan {
                name: "error-rate".into(),
                min: Some(0.0),
                max: Some(1.5),
                interval: Some("30s".into()),
            }],
            webhooks: vec![],
            gates: vec![],
            approvals: Policy::default(),
            authors: Authors::default(),
        }
    }

    fn check(name: &str, value: Option<f64>, passed: bool) -> Check {
        Check {
            name: name.into(),
            value,
            passed,
        }
    }

    #[test]
    fn versions_come_from_the_first_image_tag_else_the_short_revision() {
        assert_eq!(version(Some("ghcr.io/stefanprodan/podinfo:6.0.1"), "x"), "6.0.1");
        assert_eq!(version(Some("localhost:5000/podinfo:1.2"), "x"), "1.2");
        assert_eq!(version(Some("podinfo:1.2@sha256:abcd"), "x"), "1.2");
        assert_eq!(
            version(Some("localhost:5000/podinfo"), "flaggit1-5f7c9d2a1b"),
            "5f7c9d2"
        );
        assert_eq!(version(Some("podinfo@sha256:abcd"), "abc"), "abc");
        assert_eq!(version(None, "flaggit1-5f7c9d2a1b"), "5f7c9d2");
        assert_eq!(
            title("test", "podinfo", None, "6.0.1"),
            "Release test/podinfo 6.0.1"
        );
    }

    #[test]
    fn a_release_title_names_the_cluster_when_one_is_set() {
        assert_eq!(
            title("test", "podinfo", Some("prod-eu"), "6.0.1"),
            "Release test/podinfo@prod-eu 6.0.1"
        );
        assert_eq!(
            title("test", "podinfo", Some(""), "6.0.1"),
            "Release test/podinfo 6.0.1"
        );
    }

    #[test]
    fn a_canary_release_describes_its_whole_plan() {
        let want = "<!-- flaggit:release -->
flaggit is releasing `test/podinfo` `6.0.1` (revision `flaggit1-5f7c9d2a1b`) of `Deployment/podinfo`.

Authored by @hank (the config-repo commits of this revision).

### Plan

| | |
|---|---|
| Strategy | canary: traffic weights 10% → 20% → 30%, then promotion |
| Interval | `1m` |
| Threshold | rolled back after 5 failed checks |

### Metrics

| metric | threshold | interval |
|---|---|---|
| `request-success-rate` | ≥ 99 | `1m` |
| `request-duration` | ≤ 500 | analysis interval |

### Gates

- `confirm-rollout`: webhook `qa-gate`
- `confirm-promotion`: `/approve` on this pull request

Webhooks: `load-test` (`rollout`).

A gate opens after 2 approvals from distinct users from users with write permission or more, alice or \
members of `acme/sre`. The author of the change may not approve it.

### Commands

Comment one command per line; edited comments are not read.

| command | what it does |
|---|---|
| `/approve` | opens the gate waiting now (an approving review counts too) |
| `/rollback [reason]` | stops the release and rolls back |
| `/pause` | holds the analysis at its current step |
| `/resume` | continues a paused analysis |
| `/retry` | starts the analysis again after a failed release |
| `/status` | replies with a fresh summary |

Commands are taken from users with write permission or more, alice or members of `acme/sre`.
";
        assert_eq!(body(&canary()), want);
    }

    #[test]
    fn an_ab_release_describes_its_iterations_and_has_no_gates() {
        let text = body(&ab());
        assert!(
            text.starts_with(
                "<!-- flaggit:release -->
flaggit is releasing `test/abtest` `0a1b2c3` (revision `flaggit1-0a1b2c3d4e`) of `Deployment/abtest`.

The author of this change is unknown: no config-repo commit that brought this revision was found.

### Plan

| | |
|---|---|
| Strategy | A/B testing: 10 iterations of traffic matching `x-canary: insider`, then promotion |
| Interval | `30s` |
| Threshold | rolled back after 2 failed checks |

### Metrics

| metric | threshold | interval |
|---|---|---|
| `error-rate` | 0 – 1.5 | `30s` |

### Gates

None: the release proceeds while its checks pass.

### Commands
"
            ),
            "{text}"
        );
        assert!(text.ends_with("Commands are taken from users with write permission or more.\n"));
    }

    #[test]
    fn the_canary_status_comment_shows_steps_the_waiting_gate_and_the_command_log() {
        let status = Status {
            phase: "Progressing".into(),
            steps: vec![
                Step {
                    time: at("12:01:00"),
                    record: 3,
                    weight: 10,
                    iteration: 0,
                    checks: vec![
                        check("request-success-rate", Some(99.5), true),
                        check("request-duration", Some(120.25), true),
                    ],
                    failed_checks: 0,
                },
                Step {
                    time: at("12:02:00"),
                    record: 4,
                    weight: 20,
                    iteration: 0,
                    checks: vec![
                        check("request-success-rate", Some(97.0), false),
                        check("request-duration", None, false),
                    ],
                    failed_checks: 2,
                },
            ],
            voided: Vec::new(),
            waiting: Some(Waiting::Approval {
                gate: ApprovalGate::ConfirmPromotion,
                approved_by: vec!["carol".into()],
                required: 2,
                merged_by: None,
                missing: Vec::new(),
            }),
            log: vec![
                Logged {
                    time: at("12:03:00"),
                    user: "carol".into(),
                    command: Command::Approve,
                    verdict: Verdict::Accepted,
                },
                Logged {
                    time: at("12:04:00"),
                    user: "bob".into(),
                    command: Command::Rollback {
                        reason: Some("<b>now</b> @acme/admins".into()),
                    },
                    verdict: Verdict::Refused(
                        "@bob has read permission on acme/config; /rollback needs write".into(),
                    ),
                },
            ],
        };
        let want = "<!-- flaggit:status -->
### Release `test/podinfo` `6.0.1`: Progressing

| time (UTC) | record | weight | `request-success-rate` ≥ 99 | `request-duration` ≤ 500 | failed checks |
|---|---|---|---|---|---|
| 2026-11-22 12:01:00 | 3 | 10% | 99.5 ✅ | 120.25 ✅ | 0 |
| 2026-11-22 12:02:00 | 4 | 20% | 97 ❌ | no value ❌ | 2 |

**Waiting for** `confirm-promotion`: 1/2 approvals (carol). Comment `/approve` to approve.

#### Commands

| time (UTC) | who | command | result |
|---|---|---|---|
| 2026-11-22 12:03:00 | carol | `/approve` | accepted |
| 2026-11-22 12:04:00 | bob | `/rollback` &lt;b&gt;now&lt;\\/b&gt; &#64;acme\\/admins | refused: &#64;bob has read permission on \
acme\\/config; \\/rollback needs write |
";
        let got = status_comment(&canary(), &status);
        assert!(is_status_comment(&got));
        assert_eq!(got, want);
    }

    #[test]
    fn the_ab_status_comment_counts_iterations() {
        let status = Status {
            phase: "Succeeded".into(),
            steps: vec![Step {
                time: at("09:00:30"),
                record: 7,
                weight: 0,
                iteration: 3,
                checks: vec![
                    check("error-rate", Some(0.1 + 0.2), true),
                    check("latency", Some(2.0), true),
                ],
                failed_checks: 0,
            }],
            voided: Vec::new(),
            waiting: None,
            log: vec![],
        };
        let want = "<!-- flaggit:status -->
### Release `test/abtest` `0a1b2c3`: Succeeded

| time (UTC) | record | iteration | `error-rate` 0 – 1.5 | `latency` – | failed checks |
|---|---|---|---|---|---|
| 2026-11-22 09:00:30 | 7 | 3 | 0.3 ✅ | 2 ✅ | 0 |
";
        assert_eq!(status_comment(&ab(), &status), want);
        let empty = Status {
            phase: "Waiting".into(),
            steps: vec![],
            voided: Vec::new(),
            waiting: Some(Waiting::Webhook {
                name: "qa-gate".into(),
                kind: "confirm-rollout".into(),
            }),
            log: vec![],
        };
        assert_eq!(
            status_comment(&ab(), &empty),
            "<!-- flaggit:status -->\n### Release `test/abtest` `0a1b2c3`: Waiting\n\nNo analysis step yet.\n\n\
             **Waiting for** `confirm-rollout`: webhook `qa-gate`.\n"
        );
    }

    #[test]
    fn replies_say_why_and_never_echo_raw_text() {
        assert_eq!(
            refused_reply(
                "bob",
                &Command::Approve,
                "@bob has read permission on acme/config; approving needs write"
            ),
            "@bob: `/approve` was refused: &#64;bob has read permission on acme\\/config; approving needs write"
        );
        assert_eq!(
            unknown_reply("bob", &["lgtm".into(), "x`|y".into()]),
            "@bob: unknown command `/lgtm`, `/x'\\|y`. The commands are `/approve`, `/rollback`, `/pause`, \
             `/resume`, `/retry`, `/status`."
        );
        assert_eq!(
            refused_reply("<img src=x>", &Command::Pause, "no"),
            "@imgsrcx: `/pause` was refused: no"
        );
        let status = Status {
            phase: "Progressing".into(),
            steps: vec![Step {
                time: at("12:01:00"),
                record: 3,
                weight: 10,
                iteration: 0,
                checks: vec![],
                failed_checks: 1,
            }],
            voided: Vec::new(),
            waiting: Some(Waiting::Approval {
                gate: ApprovalGate::ConfirmTrafficIncrease,
                approved_by: vec![],
                required: 1,
                merged_by: None,
                missing: Vec::new(),
            }),
            log: vec![],
        };
        assert_eq!(
            status_reply("carol", &canary(), &status),
            "@carol: Release `test/podinfo` `6.0.1` is Progressing at weight 10%, 1 failed checks of 5. \
             **Waiting for** `confirm-traffic-increase`: 0/1 approvals. Comment `/approve` to approve."
        );
    }

    #[test]
    fn notes_echo_reasons_through_the_one_escape() {
        let reason = "rollback requested by @alice on the pull request: <b>now</b> @acme/admins";
        let note = ended_note("RolledBack", reason, "main", Some("abc123"));
        assert_eq!(
            note,
            "**RolledBack**: rollback requested by &#64;alice on the pull request\\: &lt;b&gt;now&lt;\\/b&gt; \
             &#64;acme\\/admins\n\nThe serving version is written back to `main` in `abc123`."
        );
        assert!(!note.contains('<') && !note.contains("@acme"), "{note}");
        let body = revert_body("flaggit1-abc", "<img src=x onerror=alert(1)> @org/team", "main");
        assert!(!body.contains('<') && !body.contains("@org"), "{body}");
        assert_eq!(
            superseded_note("test/podinfo", "flaggit1-`x`"),
            "Superseded: `test/podinfo` moved on to revision `flaggit1-'x'` before this release ended."
        );
    }

    #[test]
    fn markers_find_a_note_or_reply_again_and_cannot_be_broken_out_of() {
        let marker = note_marker("superseded:flaggit1-abc");
        assert_eq!(marker, "<!-- flaggit:note:superseded:flaggit1-abc -->");
        let text = marked(&marker, "Superseded");
        assert!(has_marker(&text, &marker));
        assert!(!has_marker(&text, &note_marker("superseded:flaggit1-abd")));
        assert_eq!(reply_marker("comment-12"), "<!-- flaggit:reply:comment-12 -->");
        assert_eq!(
            note_marker("x --> <script> -- y"),
            "<!-- flaggit:note:x-script-y -->"
        );
        assert!(command::parse(&text).is_empty());
    }

    #[test]
    fn nothing_rendered_reads_as_a_command() {
        let hostile = "\n/approve\n/rollback";
        let mut release = canary();
        release.metrics[0].name = hostile.into();
        release.webhooks[0].name = hostile.into();
        release.version = hostile.into();
        let status = Status {
            phase: hostile.into(),
            steps: vec![],
            voided: Vec::new(),
            waiting: Some(Waiting::Webhook {
                name: hostile.into(),
                kind: hostile.into(),
            }),
            log: vec![Logged {
                time: at("12:00:00"),
                user: hostile.into(),
                command: Command::Rollback {
                    reason: Some(hostile.into()),
                },
                verdict: Verdict::Refused(hostile.into()),
            }],
        };
        for text in [
            body(&release),
            status_comment(&release, &status),
            status_reply(hostile, &release, &status),
            refused_reply(hostile, &Command::Approve, hostile),
            unknown_reply(hostile, &[hostile.into()]),
        ] {
            assert!(command::parse(&text).is_empty(), "{text}");
        }
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(99.0), "99");
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(-0.0001), "0");
        assert_eq!(number(1234.5678), "1234.568");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
