//! The dashboard's HTML: the canary table, the detail page and its tabs, the onboarding and
//! sign-in pages. Pure functions from data to markup, every value escaped.

use std::fmt::Write as _;

use kube::ResourceExt;

use super::chart;
use crate::api::{ApprovalGate, Canary, HookType, TargetKind};
use crate::gitops::message::Entry;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A whole page around `body`; `who` is the signed-in viewer, if any.
pub fn page(title: &str, who: Option<&str>, body: &str) -> String {
    let user = match who {
        Some(who) => format!(
            r#"<span class="who">Signed in as <strong>{}</strong></span> <form method="post" action="/logout" class="inline"><button type="submit">Sign out</button></form>"#,
            escape(who)
        ),
        None => String::new(),
    };
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · flaggit</title><link rel="stylesheet" href="/assets/app.css"><script src="/assets/app.js" defer></script></head>
<body><a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/">flaggit</a> <span class="live" id="live" aria-live="polite"></span> {user}</header>
<main id="main">{body}</main></body></html>"##,
        title = escape(title),
    )
}

/// One row of the canary table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub target: String,
    pub provider: String,
    pub strategy: String,
    pub phase: String,
    pub weight: i32,
    pub failed_checks: i32,
    pub threshold: i32,
    pub last_transition: String,
    pub promoted: String,
}

/// Flagger's deployment strategy, from the analysis: mirroring, A/B testing, blue/green or
/// canary.
pub fn strategy(canary: &Canary) -> &'static str {
    let Some(analysis) = canary.spec.analysis() else {
        return "canary";
    };
    if analysis.mirror == Some(true) {
        "blue/green mirroring"
    } else if analysis.match_.as_ref().is_some_and(|m| !m.is_empty()) {
        "A/B testing"
    } else if analysis.iterations.is_some()
        && analysis.step_weight.is_none()
        && analysis.step_weights.is_none()
    {
        "blue/green"
    } else {
        "canary"
    }
}

impl Row {
    pub fn of(canary: &Canary) -> Self {
        let status = canary.status.clone().unwrap_or_default();
        let target = &canary.spec.target_ref;
        Self {
            namespace: canary.namespace().unwrap_or_default(),
            name: canary.name_any(),
            target: format!("{:?}/{}", target.kind, target.name),
            provider: canary
                .spec
                .provider
                .map_or("kubernetes (default)".to_string(), |p| p.as_str().to_string()),
            strategy: strategy(canary).into(),
            phase: status.phase.map_or("Unknown".into(), |p| format!("{p:?}")),
            weight: status.canary_weight.unwrap_or(0),
            failed_checks: status.failed_checks.unwrap_or(0),
            threshold: canary.spec.analysis().and_then(|a| a.threshold).unwrap_or(0),
            last_transition: status
                .last_transition_time
                .map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            promoted: status.last_promoted_spec.unwrap_or_default(),
        }
    }
}

/// The table's filters, from the query string.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub q: String,
}

impl Filter {
    pub fn matches(&self, row: &Row) -> bool {
        let q = self.q.trim().to_lowercase();
        (self.namespace.is_empty() || row.namespace == self.namespace)
            && (self.phase.is_empty() || row.phase == self.phase)
            && (q.is_empty()
                || [
                    &row.name,
                    &row.namespace,
                    &row.target,
                    &row.provider,
                    &row.promoted,
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(&q)))
    }
}

/// Rows that pass `filter`, most recent transition first.
pub fn select(mut rows: Vec<Row>, filter: &Filter) -> Vec<Row> {
    rows.retain(|r| filter.matches(r));
    rows.sort_by(|a, b| {
        b.last_transition
            .cmp(&a.last_transition)
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    rows
}

const PHASES: &[&str] = &[
    "Initializing",
    "Initialized",
    "Waiting",
    "Progressing",
    "WaitingPromotion",
    "Promoting",
    "Finalising",
    "Succeeded",
    "Failed",
    "Terminating",
    "Terminated",
];

fn phase_badge(phase: &str) -> String {
    let class = match phase {
        "Succeeded" | "Initialized" => "ok",
        "Failed" => "bad",
        "Progressing" | "Promoting" | "Finalising" | "Initializing" => "busy",
        "Waiting" | "WaitingPromotion" => "wait",
        _ => "idle",
    };
    format!(r#"<span class="phase {class}">{}</span>"#, escape(phase))
}

fn options(selected: &str, values: &[String], all: &str) -> String {
    let mut out = format!(r#"<option value="">{}</option>"#, escape(all));
    for v in values {
        let _ = write!(
            out,
            r#"<option value="{0}"{1}>{0}</option>"#,
            escape(v),
            if v == selected { " selected" } else { "" }
        );
    }
    out
}

/// The canary table with its filter form.
pub fn table(rows: &[Row], filter: &Filter, namespaces: &[String]) -> String {
    let phases: Vec<String> = PHASES.iter().map(|p| p.to_string()).collect();
    let mut out = format!(
        r#"<h1>Canaries</h1>
<form class="filters" method="get" action="/" role="search">
<label>Namespace <select name="namespace">{}</select></label>
<label>Phase <select name="phase">{}</select></label>
<label>Search <input type="search" name="q" value="{}" placeholder="name, target, revision"></label>
<button type="submit">Filter</button></form>"#,
        options(&filter.namespace, namespaces, "All namespaces"),
        options(&filter.phase, &phases, "All phases"),
        escape(&filter.q)
    );
    out.push_str(
        r#"<table id="canaries" data-live="1"><caption>Canaries you may list, most recent transition first</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Namespace</th><th scope="col">Target</th><th scope="col">Provider / strategy</th><th scope="col">Phase</th><th scope="col">Weight</th><th scope="col">Failed checks</th><th scope="col">Last transition</th><th scope="col">Promoted revision</th></tr></thead><tbody>"#,
    );
    if rows.is_empty() {
        out.push_str(r#"<tr><td colspan="9">No canary matches the filters.</td></tr>"#);
    }
    for r in rows {
        let _ = write!(
            out,
            r#"<tr data-canary="{ns}/{name}"><th scope="row"><a href="/canaries/{ens}/{ename}">{name}</a></th><td>{ns}</td><td>{target}</td><td>{provider}<br><small>{strategy}</small></td><td>{phase}</td><td class="num">{weight}%</td><td class="num">{failed} / {threshold}</td><td>{transition}</td><td><code>{promoted}</code></td></tr>"#,
            ns = escape(&r.namespace),
            name = escape(&r.name),
            ens = encode(&r.namespace),
            ename = encode(&r.name),
            target = escape(&r.target),
            provider = escape(&r.provider),
            strategy = escape(&r.strategy),
            phase = phase_badge(&r.phase),
            weight = r.weight,
            failed = r.failed_checks,
            threshold = r.threshold,
            transition = escape(&r.last_transition),
            promoted = escape(&r.promoted),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The tabs of the detail page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Events,
    Yaml,
    History,
    Dora,
}

impl Tab {
    pub fn parse(text: &str) -> Self {
        match text {
            "events" => Self::Events,
            "yaml" => Self::Yaml,
            "history" => Self::History,
            "dora" => Self::Dora,
            _ => Self::Overview,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Self::Overview => "overview",
            Self::Events => "events",
            Self::Yaml => "yaml",
            Self::History => "history",
            Self::Dora => "dora",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Overview => "Overview",
            Self::Events => "Events",
            Self::Yaml => "YAML",
            Self::History => "History",
            Self::Dora => "DORA",
        }
    }
}

/// The detail page: a summary of the live status, the tab bar, and the chosen tab's content.
pub fn detail(canary: &Canary, tab: Tab, content: &str) -> String {
    let row = Row::of(canary);
    let mut out = format!(
        r#"<nav aria-label="Breadcrumb"><a href="/">Canaries</a> / {ns}</nav>
<h1>{name}</h1>
<dl class="summary" data-canary="{ns}/{name}"><div><dt>Phase</dt><dd id="phase">{phase}</dd></div><div><dt>Weight</dt><dd id="weight">{weight}%</dd></div><div><dt>Failed checks</dt><dd id="failed">{failed} / {threshold}</dd></div><div><dt>Target</dt><dd>{target}</dd></div><div><dt>Provider / strategy</dt><dd>{provider} · {strategy}</dd></div><div><dt>Promoted revision</dt><dd><code>{promoted}</code></dd></div><div><dt>Last transition</dt><dd>{transition}</dd></div></dl>
<nav class="tabs" aria-label="Canary details"><ul>"#,
        ns = escape(&row.namespace),
        name = escape(&row.name),
        phase = phase_badge(&row.phase),
        weight = row.weight,
        failed = row.failed_checks,
        threshold = row.threshold,
        target = escape(&row.target),
        provider = escape(&row.provider),
        strategy = escape(&row.strategy),
        promoted = escape(&row.promoted),
        transition = escape(&row.last_transition),
    );
    for t in [Tab::Overview, Tab::Events, Tab::Yaml, Tab::History, Tab::Dora] {
        let _ = write!(
            out,
            r#"<li><a href="?tab={}"{}>{}</a></li>"#,
            t.slug(),
            if t == tab { r#" aria-current="page""# } else { "" },
            t.label()
        );
    }
    let _ = write!(
        out,
        r#"</ul></nav><section id="tab-{}" aria-label="{}">{content}</section>"#,
        tab.slug(),
        tab.label()
    );
    out
}

/// The overview tab: timeline chart, gates, conditions, analysis and generated objects.
pub fn overview(canary: &Canary, chart_html: &str, chart_source: &str) -> String {
    let mut out = format!(
        r#"<h2>Timeline</h2><p class="note">{}</p>{chart_html}"#,
        escape(chart_source)
    );
    out.push_str(&gates(canary));
    out.push_str("<h2>Conditions</h2>");
    let conditions = canary
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if conditions.is_empty() {
        out.push_str("<p>No conditions yet.</p>");
    } else {
        out.push_str(r#"<table><thead><tr><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Last transition</th></tr></thead><tbody>"#);
        for c in conditions {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.type_),
                escape(&c.status),
                escape(c.reason.as_deref().unwrap_or("")),
                escape(c.message.as_deref().unwrap_or("")),
                c.last_transition_time
                    .map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default()
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("<h2>Analysis</h2>");
    match canary.spec.analysis() {
        Some(analysis) => {
            let yaml = serde_yaml::to_string(analysis).unwrap_or_default();
            let _ = write!(out, "<pre><code>{}</code></pre>", escape(&yaml));
        }
        None => out.push_str("<p>No analysis configured.</p>"),
    }
    out.push_str("<h2>Generated objects</h2><ul>");
    for (kind, name) in generated(canary) {
        let _ = write!(out, "<li>{} <code>{}</code></li>", escape(&kind), escape(&name));
    }
    out.push_str("</ul>");
    out
}

/// The objects flaggit creates for a canary, by kind and name.
pub fn generated(canary: &Canary) -> Vec<(String, String)> {
    let target = &canary.spec.target_ref;
    let apex = canary
        .spec
        .service
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| target.name.clone());
    let mut out = Vec::new();
    match target.kind {
        TargetKind::Deployment => out.push(("Deployment".into(), format!("{}-primary", target.name))),
        TargetKind::DaemonSet => out.push(("DaemonSet".into(), format!("{}-primary", target.name))),
        TargetKind::Service => {}
    }
    if let Some(hpa) = &canary.spec.autoscaler_ref {
        out.push((format!("{:?}", hpa.kind), format!("{}-primary", hpa.name)));
    }
    for name in [apex.clone(), format!("{apex}-primary"), format!("{apex}-canary")] {
        out.push(("Service".into(), name));
    }
    let route = match canary.spec.provider.map(|p| p.as_str()) {
        Some("istio") => Some("VirtualService"),
        Some("gatewayapi:v1" | "gatewayapi:v1beta1") => Some("HTTPRoute"),
        Some("linkerd" | "smi:v1alpha1" | "smi:v1alpha2" | "smi:v1alpha3" | "osm") => Some("TrafficSplit"),
        _ => None,
    };
    if let Some(kind) = route {
        out.push((kind.into(), apex));
    }
    out
}

fn gates(canary: &Canary) -> String {
    let phase = canary
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_default();
    let waiting_on = |gate: &str| match gate {
        "confirm-rollout" => phase == "Waiting",
        "confirm-promotion" => phase == "WaitingPromotion",
        "confirm-traffic-increase" => phase == "Progressing",
        _ => false,
    };
    let mut rows = Vec::new();
    for hook in canary
        .spec
        .analysis()
        .and_then(|a| a.webhooks.clone())
        .unwrap_or_default()
    {
        let gate = match hook.type_ {
            Some(HookType::ConfirmRollout) => "confirm-rollout",
            Some(HookType::ConfirmPromotion) => "confirm-promotion",
            Some(HookType::ConfirmTrafficIncrease) => "confirm-traffic-increase",
            _ => continue,
        };
        rows.push((gate, format!("webhook {} ({})", hook.name, hook.url)));
    }
    let approvals = canary.spec.gitops.as_ref().and_then(|g| g.approvals.clone());
    if let Some(approvals) = approvals {
        for gate in approvals.gates.unwrap_or_default() {
            let gate = match gate {
                ApprovalGate::ConfirmRollout => "confirm-rollout",
                ApprovalGate::ConfirmTrafficIncrease => "confirm-traffic-increase",
                ApprovalGate::ConfirmPromotion => "confirm-promotion",
            };
            let mut who = format!(
                "pull-request approval: {} approver(s) with {} permission",
                approvals.required.unwrap_or(1),
                approvals
                    .permission
                    .map_or("write".into(), |p| format!("{p:?}").to_lowercase())
            );
            let named: Vec<String> = approvals
                .approvers
                .iter()
                .flatten()
                .chain(approvals.teams.iter().flatten())
                .cloned()
                .collect();
            if !named.is_empty() {
                let _ = write!(who, " or {}", named.join(", "));
            }
            rows.push((gate, who));
        }
    }
    let mut out = "<h2>Gates</h2>".to_string();
    if rows.is_empty() {
        out.push_str("<p>No gates: the rollout advances on its metric checks alone.</p>");
        return out;
    }
    out.push_str(r#"<table><thead><tr><th scope="col">Gate</th><th scope="col">Waits on</th><th scope="col">State</th></tr></thead><tbody>"#);
    for (gate, what) in rows {
        let _ = write!(
            out,
            "<tr><td>{gate}</td><td>{}</td><td>{}</td></tr>",
            escape(&what),
            if waiting_on(gate) {
                "<strong>waiting</strong>"
            } else {
                "—"
            }
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// One Kubernetes event of a canary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventRow {
    pub time: String,
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

/// The Events tab; `events` newest first.
pub fn events(events: &[EventRow]) -> String {
    if events.is_empty() {
        return "<p>No events for this canary.</p>".into();
    }
    let mut out = r#"<table><caption>Kubernetes events, newest first</caption><thead><tr><th scope="col">Time</th><th scope="col">Type</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Count</th></tr></thead><tbody>"#.to_string();
    for e in events {
        let _ = write!(
            out,
            r#"<tr class="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td></tr>"#,
            if e.type_ == "Warning" { "warning" } else { "" },
            escape(&e.time),
            escape(&e.type_),
            escape(&e.reason),
            escape(&e.message),
            e.count
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The YAML tab.
pub fn yaml(text: &str) -> String {
    format!(
        r#"<pre class="yaml" tabindex="0" aria-label="The live Canary as YAML"><code>{}</code></pre>"#,
        escape(text)
    )
}

/// One past rollout, summarised from its ledger records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Release {
    /// The cluster the release ran in (`Flaggit-Cluster`); empty in the single-cluster layout.
    pub cluster: String,
    pub revision: String,
    pub outcome: String,
    pub started: String,
    pub duration: String,
    pub approved_by: Vec<String>,
    pub commit: String,
    pub reason: String,
}

/// Groups ledger records (oldest first) into releases, per cluster, newest first.
pub fn releases(entries: &[Entry]) -> Vec<Release> {
    let mut out: Vec<(Release, Option<i64>)> = Vec::new();
    for e in entries {
        let at = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%#z", &e.time)
            .or_else(|_| e.time.parse::<jiff::Timestamp>())
            .ok()
            .map(|t| t.as_second());
        let starts = matches!(e.kind.as_str(), "Detected" | "Initialized" | "Restarted");
        // Clusters release on their own: a record continues its own cluster's last release.
        let last = out.iter().rposition(|(r, _)| r.cluster == e.cluster);
        let index = match last {
            Some(i) if out[i].0.revision == e.revision && !starts => i,
            _ => {
                out.push((
                    Release {
                        cluster: e.cluster.clone(),
                        revision: e.revision.clone(),
                        outcome: "In progress".into(),
                        started: e.time.clone(),
                        ..Default::default()
                    },
                    at,
                ));
                out.len() - 1
            }
        };
        let (release, start) = &mut out[index];
        // Approvers are trailers of the record whose gate they opened (`Flaggit-Approved-By`).
        for user in &e.approved_by {
            if !release.approved_by.contains(user) {
                release.approved_by.push(user.clone());
            }
        }
        match e.kind.as_str() {
            "Promoted" | "RolledBack" | "Cancelled" | "Initialized" => {
                release.outcome = e.kind.clone();
                release.commit = e.commit.clone();
                release.reason = e.reason.clone();
                if let (Some(start), Some(at)) = (*start, at) {
                    release.duration = duration_text(at - start);
                }
            }
            _ => {
                if release.commit.is_empty() || release.outcome == "In progress" {
                    release.commit = e.commit.clone();
                }
            }
        }
    }
    out.into_iter().rev().map(|(r, _)| r).collect()
}

/// `1h 2m 3s`.
pub fn duration_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, sec) => format!("{h}h {m}m {sec}s"),
    }
}

/// A web link to `commit` when the repository is on a forge with a known URL layout.
pub fn commit_link(repository: &str, commit: &str) -> Option<String> {
    let base = repository.split('#').next().unwrap_or(repository);
    let base = base.strip_suffix(".git").unwrap_or(base);
    let web = if let Some(rest) = base.strip_prefix("git@") {
        let (host, path) = rest.split_once(':')?;
        format!("https://{host}/{path}")
    } else if base.starts_with("https://") {
        base.to_string()
    } else {
        return None;
    };
    let separator = if web.contains("gitlab") {
        "/-/commit/"
    } else {
        "/commit/"
    };
    Some(format!("{web}{separator}{commit}"))
}

/// The History tab.
pub fn history(releases: &[Release], repository: &str, error: Option<&str>) -> String {
    if let Some(error) = error {
        return format!(
            r#"<p role="alert">The Git history could not be read: {}</p>"#,
            escape(error)
        );
    }
    if releases.is_empty() {
        return "<p>No rollout records in the config repository yet.</p>".into();
    }
    let clusters = releases.iter().any(|r| !r.cluster.is_empty());
    let mut out = format!(
        r#"<table><caption>Rollouts recorded in {}, newest first</caption><thead><tr>{}<th scope="col">Revision</th><th scope="col">Outcome</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Approved by</th><th scope="col">Commit</th></tr></thead><tbody>"#,
        escape(repository),
        if clusters {
            r#"<th scope="col">Cluster</th>"#
        } else {
            ""
        }
    );
    for r in releases {
        let short: String = r.commit.chars().take(10).collect();
        let commit = match commit_link(repository, &r.commit) {
            Some(url) if !r.commit.is_empty() => format!(
                r#"<a href="{}"><code>{}</code></a>"#,
                escape(&url),
                escape(&short)
            ),
            _ => format!("<code>{}</code>", escape(&short)),
        };
        let cluster = match (clusters, r.cluster.as_str()) {
            (false, _) => String::new(),
            (true, "") => "<td>(unnamed)</td>".to_string(),
            (true, name) => format!("<td>{}</td>", escape(name)),
        };
        let _ = write!(
            out,
            r#"<tr>{cluster}<td><code>{}</code></td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{commit}</td></tr>"#,
            escape(&r.revision),
            phase_badge(&r.outcome),
            if r.reason.is_empty() {
                String::new()
            } else {
                format!("<br><small>{}</small>", escape(&r.reason))
            },
            escape(&r.started),
            escape(&r.duration),
            escape(&r.approved_by.join(", ")),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The DORA tab: the canary's four figures over the report's window, per cluster.
pub fn dora(report: &crate::gitops::dora::Report, window: &str, error: Option<&str>) -> String {
    use crate::gitops::dora;
    if let Some(error) = error {
        return format!(
            r#"<p role="alert">The Git history could not be read: {}</p>"#,
            escape(error)
        );
    }
    if report.canaries.is_empty() {
        return format!(
            "<p>No release of this canary ended in the last {}: no DORA figures yet.</p>",
            escape(window)
        );
    }
    let mut out = format!(
        r#"<table><caption>DORA figures over the last {}, from the config repository's record</caption><thead><tr><th scope="col">Cluster</th>"#,
        escape(window)
    );
    for header in dora::HEADERS {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, escape(&header.to_lowercase()));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &report.canaries {
        let cluster = if row.cluster.is_empty() {
            "(unnamed)"
        } else {
            row.cluster.as_str()
        };
        let _ = write!(out, "<tr><td>{}</td>", escape(cluster));
        for cell in dora::cells(&row.figures) {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table><p class=\"note\">Lead time runs from the change commit to its promotion; the change failure rate is rollbacks over ended releases; time to restore runs from a rollback to the next promotion (docs/metrics.md).</p>");
    out
}

/// Chart steps from ledger records of the newest release.
pub fn steps_of(entries: &[Entry]) -> Vec<chart::Step> {
    let start = entries
        .iter()
        .rposition(|e| matches!(e.kind.as_str(), "Detected" | "Restarted"))
        .unwrap_or(0);
    entries[start..]
        .iter()
        .filter_map(|e| {
            let at = e.time.parse::<jiff::Timestamp>().ok()?.as_second();
            Some(chart::Step {
                at,
                weight: e.weight,
                checks: chart::parse_checks(&e.checks),
            })
        })
        .collect()
}

/// The page shown when the CRDs are missing or there is no canary to show.
pub fn onboarding(crds_missing: bool) -> String {
    let why = if crds_missing {
        "The flagger.app CustomResourceDefinitions are not installed in this cluster."
    } else {
        "There is no Canary you may see yet: none exists, or none in a namespace where you may list canaries."
    };
    format!(
        r#"<h1>Get started with flaggit</h1><p>{why}</p>
<ol><li>Install flaggit and its CRDs: <code>kubectl apply -k github.com/flaggit/flaggit/manifests</code> (see <a href="https://github.com/flaggit/flaggit/blob/main/docs/install.md">docs/install.md</a>).</li>
<li>Create a Canary for a Deployment:</li></ol>
<pre><code>apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
        interval: 1m</code></pre>
<p>Ask your cluster admin for the <code>flaggit-canaries-reader</code> ClusterRole in the namespaces you work in.</p>"#
    )
}

/// The page a request without an identity gets (with status 401).
pub fn sign_in(message: &str) -> String {
    format!(
        r#"<h1>Sign in</h1><p role="alert">{}</p>
<p>The dashboard shows what Kubernetes RBAC lets you list. Prove who you are in one of these ways:</p>
<ul><li>Open it through your cluster's authenticating proxy (oauth2-proxy and the like), which sets <code>X-Forwarded-User</code>.</li>
<li>Send <code>Authorization: Bearer &lt;token&gt;</code>, or paste a token below. A ServiceAccount token comes from <code>kubectl create token &lt;serviceaccount&gt;</code>; an OIDC id-token works when the API server accepts it.</li></ul>
<form method="post" action="/login" class="login"><label for="token">Bearer token</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button></form>"#,
        escape(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryPhase, CanarySpec, CanaryStatus, Provider, TargetRef};

    fn canary(ns: &str, name: &str, phase: CanaryPhase, weight: i32) -> Canary {
        let mut c = Canary::new(
            name,
            CanarySpec {
                provider: Some(Provider::Istio),
                target_ref: TargetRef {
                    api_version: "apps/v1".into(),
                    kind: TargetKind::Deployment,
                    name: name.into(),
                },
                analysis: Some(CanaryAnalysis {
                    threshold: Some(5),
                    step_weight: Some(10),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some(ns.into());
        c.status = Some(CanaryStatus {
            phase: Some(phase),
            canary_weight: Some(weight),
            failed_checks: Some(1),
            ..Default::default()
        });
        c
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn a_row_reads_spec_and_status() {
        let row = Row::of(&canary("apps", "podinfo", CanaryPhase::Progressing, 30));
        assert_eq!(row.target, "Deployment/podinfo");
        assert_eq!(row.provider, "istio");
        assert_eq!(row.strategy, "canary");
        assert_eq!(
            (row.phase.as_str(), row.weight, row.failed_checks, row.threshold),
            ("Progressing", 30, 1, 5)
        );
    }

    #[test]
    fn strategies_follow_the_analysis() {
        let mut c = canary("a", "b", CanaryPhase::Initialized, 0);
        let analysis = c.spec.analysis.as_mut().expect("set above");
        analysis.step_weight = None;
        analysis.iterations = Some(10);
        assert_eq!(strategy(&c), "blue/green");
        c.spec.analysis.as_mut().expect("set above").mirror = Some(true);
        assert_eq!(strategy(&c), "blue/green mirroring");
    }

    #[test]
    fn filters_and_order() {
        let mut a = Row::of(&canary("apps", "podinfo", CanaryPhase::Progressing, 30));
        a.last_transition = "2026-11-22 10:00:00".into();
        let mut b = Row::of(&canary("web", "frontend", CanaryPhase::Succeeded, 0));
        b.last_transition = "2026-11-22 11:00:00".into();
        let all = select(vec![a.clone(), b.clone()], &Filter::default());
        assert_eq!(
            all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["frontend", "podinfo"]
        );
        let by_ns = Filter {
            namespace: "apps".into(),
            ..Default::default()
        };
        assert_eq!(select(vec![a.clone(), b.clone()], &by_ns), vec![a.clone()]);
        let by_phase = Filter {
            phase: "Succeeded".into(),
            ..Default::default()
        };
        assert_eq!(select(vec![a.clone(), b.clone()], &by_phase), vec![b.clone()]);
        let by_text = Filter {
            q: "FRONT".into(),
            ..Default::default()
        };
        assert_eq!(select(vec![a, b.clone()], &by_text), vec![b]);
    }

    #[test]
    fn the_table_escapes_and_links() {
        let mut row = Row::of(&canary("apps", "podinfo", CanaryPhase::Failed, 0));
        row.promoted = "<script>".into();
        let html = table(&[row], &Filter::default(), &["apps".into()]);
        assert!(html.contains(r#"href="/canaries/apps/podinfo""#));
        assert!(html.contains(r#"<span class="phase bad">Failed</span>"#));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("1 / 5"));
    }

    #[test]
    fn generated_objects_are_named_from_target_and_provider() {
        let names = generated(&canary("apps", "podinfo", CanaryPhase::Initialized, 0));
        assert_eq!(
            names,
            vec![
                ("Deployment".to_string(), "podinfo-primary".to_string()),
                ("Service".into(), "podinfo".into()),
                ("Service".into(), "podinfo-primary".into()),
                ("Service".into(), "podinfo-canary".into()),
                ("VirtualService".into(), "podinfo".into()),
            ]
        );
    }

    fn entry(kind: &str, revision: &str, time: &str, commit: &str, reason: &str) -> Entry {
        Entry {
            kind: kind.into(),
            revision: revision.into(),
            time: time.into(),
            commit: commit.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn releases_summarise_the_ledger() {
        let entries = vec![
            entry("Detected", "r1", "2026-11-22T10:00:00Z", "c1", ""),
            entry("Step", "r1", "2026-11-22T10:01:00Z", "c2", ""),
            Entry {
                approved_by: vec!["alice".into(), "carol".into()],
                ..entry("Promoting", "r1", "2026-11-22T10:02:00Z", "c3", "")
            },
            entry("Promoted", "r1", "2026-11-22T10:03:05Z", "c4", ""),
            entry("Detected", "r2", "2026-11-22T11:00:00Z", "c5", ""),
            entry(
                "RolledBack",
                "r2",
                "2026-11-22T11:00:30Z",
                "c6",
                "failed checks threshold reached 5",
            ),
            entry("Detected", "r3", "2026-11-22T12:00:00Z", "c7", ""),
        ];
        let releases = releases(&entries);
        assert_eq!(releases.len(), 3);
        assert_eq!(
            (releases[0].revision.as_str(), releases[0].outcome.as_str()),
            ("r3", "In progress")
        );
        assert_eq!(
            (releases[1].outcome.as_str(), releases[1].duration.as_str()),
            ("RolledBack", "30s")
        );
        assert_eq!(releases[1].commit, "c6");
        assert_eq!(releases[2].duration, "3m 5s");
        assert_eq!(releases[2].approved_by, ["alice", "carol"]);
    }

    #[test]
    fn each_cluster_s_releases_stay_apart_and_the_tab_names_the_cluster() {
        let at = |cluster: &str, e: Entry| Entry {
            cluster: cluster.into(),
            ..e
        };
        // Two clusters release r2 at the same time; only "a" rolls it back.
        let entries = vec![
            at("a", entry("Detected", "r2", "2026-11-22T10:00:00Z", "c1", "")),
            at("b", entry("Detected", "r2", "2026-11-22T10:00:01Z", "c2", "")),
            at("a", entry("Step", "r2", "2026-11-22T10:00:10Z", "c3", "")),
            at("b", entry("Promoted", "r2", "2026-11-22T10:00:40Z", "c4", "")),
            at(
                "a",
                entry("RolledBack", "r2", "2026-11-22T10:00:50Z", "c5", "failed"),
            ),
        ];
        let releases = releases(&entries);
        let summary: Vec<(&str, &str, &str)> = releases
            .iter()
            .map(|r| (r.cluster.as_str(), r.outcome.as_str(), r.duration.as_str()))
            .collect();
        assert_eq!(summary, [("b", "Promoted", "39s"), ("a", "RolledBack", "50s")]);
        let html = history(&releases, "git://h/config.git#main", None);
        assert!(html.contains(r#"<th scope="col">Cluster</th>"#), "{html}");
        assert!(
            html.contains("<tr><td>b</td>") && html.contains("<tr><td>a</td>"),
            "{html}"
        );
        let single = history(
            &super::releases(&[entry("Detected", "r1", "t", "c", "")]),
            "r",
            None,
        );
        assert!(!single.contains("Cluster"), "no column without named clusters");
    }

    #[test]
    fn commit_links_for_known_forges() {
        assert_eq!(
            commit_link("https://github.com/org/config.git#main", "abc").as_deref(),
            Some("https://github.com/org/config/commit/abc")
        );
        assert_eq!(
            commit_link("git@gitlab.com:org/config.git", "abc").as_deref(),
            Some("https://gitlab.com/org/config/-/commit/abc")
        );
        assert_eq!(commit_link("git://127.0.0.1:9418/config.git", "abc"), None);
    }

    #[test]
    fn the_dora_tab_shows_each_cluster_s_figures() {
        use crate::gitops::dora::{Figures, Report, Row};
        let report = Report {
            canaries: vec![Row {
                canary: "test/podinfo".into(),
                cluster: "<eu>".into(),
                figures: Figures {
                    deployments: 3,
                    deployments_per_day: 0.1,
                    lead_time: Some(3_600),
                    releases: 4,
                    failures: 1,
                    change_failure_rate: Some(0.25),
                    restores: 1,
                    time_to_restore: Some(7_200),
                },
            }],
            ..Default::default()
        };
        let html = dora(&report, "30d", None);
        assert!(
            html.contains(
                "<td>&lt;eu&gt;</td><td>3</td><td>0.10</td><td>1h</td><td>25% (1/4)</td><td>2h (1)</td>"
            ),
            "{html}"
        );
        assert!(
            dora(&Report::default(), "30d", None).contains("No release of this canary ended in the last 30d")
        );
        assert!(dora(&report, "30d", Some("<x>")).contains("&lt;x&gt;"));
        assert_eq!(Tab::parse("dora"), Tab::Dora);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(5), "5s");
        assert_eq!(duration_text(125), "2m 5s");
        assert_eq!(duration_text(3725), "1h 2m 5s");
    }

    #[test]
    fn chart_steps_start_at_the_newest_release() {
        let mut e1 = entry("Detected", "r1", "2026-11-22T10:00:00Z", "c1", "");
        e1.weight = 0;
        let mut e2 = entry("Detected", "r2", "2026-11-22T11:00:00Z", "c2", "");
        e2.weight = 0;
        let mut e3 = entry("Step", "r2", "2026-11-22T11:01:00Z", "c3", "");
        e3.weight = 10;
        e3.checks = "rate=99.5:pass".into();
        let steps = steps_of(&[e1, e2, e3]);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].weight, 10);
        assert_eq!(steps[1].checks, vec![("rate".to_string(), Some(99.5))]);
    }

    #[test]
    fn onboarding_says_why_and_how_to_start() {
        assert!(onboarding(true).contains("CustomResourceDefinitions are not installed"));
        let none = onboarding(false);
        assert!(none.contains("no Canary you may see") && none.contains("kind: Canary"));
    }

    #[test]
    fn the_sign_in_page_says_how() {
        let html = sign_in("No identity");
        assert!(html.contains("X-Forwarded-User") && html.contains(r#"action="/login""#));
    }
}
