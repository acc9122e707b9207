//! The JSON bodies each chat service receives (Flagger's shapes) and the fields that describe
//! the canary in them.

use serde_json::{Value, json};

use crate::api::{AlertProviderType, Canary};
use crate::rollout::Severity;

/// Default channel of Slack, Discord and Rocket.Chat messages.
pub const DEFAULT_CHANNEL: &str = "general";
/// Default user name messages are posted as.
pub const DEFAULT_USERNAME: &str = "flagger";

/// One `title: value` line under the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

impl Field {
    fn new(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: value.into(),
        }
    }
}

/// What is said, about which canary, independent of the chat service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The canary's name.
    pub name: String,
    pub namespace: String,
    pub text: String,
    pub severity: Severity,
    pub fields: Vec<Field>,
}

impl Message {
    /// The message for `canary`, with the `Cluster` field first when a cluster name is set,
    /// then the canary's metadata fields.
    pub fn new(canary: &Canary, text: &str, severity: Severity, cluster: Option<&str>) -> Self {
        let namespace = canary.metadata.namespace.clone().unwrap_or_default();
        let mut fields = Vec::new();
        if let Some(cluster) = cluster.filter(|c| !c.is_empty()) {
            fields.push(Field::new("Cluster", cluster));
        }
        fields.extend(metadata_fields(canary));
        Self {
            name: canary.metadata.name.clone().unwrap_or_default(),
            namespace,
            text: text.to_owned(),
            severity,
            fields,
        }
    }

    /// `<name>.<namespace>`, the author line of every message.
    fn subject(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// Flagger's `alertMetadata`: target, failed checks threshold, progress deadline and how
/// traffic is routed, plus mirroring when the analysis mirrors traffic.
pub fn metadata_fields(canary: &Canary) -> Vec<Field> {
    let spec = &canary.spec;
    let namespace = canary.metadata.namespace.as_deref().unwrap_or_default();
    let analysis = spec.analysis();
    let threshold = analysis.and_then(|a| a.threshold).filter(|t| *t > 0).unwrap_or(1);
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let mut fields = vec![
        Field::new(
            "Target",
            format!(
                "{}/{}.{namespace}",
                spec.target_ref.kind.as_str(),
                spec.target_ref.name
            ),
        ),
        Field::new("Failed checks threshold", threshold.to_string()),
        Field::new("Progress deadline", format!("{deadline}s")),
    ];
    let Some(analysis) = analysis else {
        return fields;
    };
    let steps = analysis.step_weights.as_deref().unwrap_or_default();
    let routing = if let Some(step) = analysis.step_weight.filter(|s| *s > 0) {
        let max = analysis.max_weight.filter(|m| *m > 0).unwrap_or(100);
        Some(format!("Weight step: {step} max: {max}"))
    } else if let Some(last) = steps.last() {
        let max = analysis.max_weight.filter(|m| *m > 0).unwrap_or((*last).min(100));
        let list: Vec<String> = steps.iter().map(i32::to_string).collect();
        Some(format!("Weight steps: {} max: {max}", list.join(",")))
    } else if analysis.match_.as_ref().is_some_and(|m| !m.is_empty()) {
        Some("A/B Testing".to_owned())
    } else if analysis.iterations.is_some_and(|i| i > 0) {
        Some("Blue/Green".to_owned())
    } else {
        None
    };
    if let Some(routing) = routing {
        fields.push(Field::new("Traffic routing", routing));
    }
    if analysis.mirror == Some(true) {
        let weight = analysis.mirror_weight.filter(|w| *w > 0).unwrap_or(100);
        fields.push(Field::new("Traffic mirroring", format!("{weight}%")));
    }
    fields
}

/// The body posted to a provider of `kind`. `channel` and `username` are used by the
/// Slack-shaped services (Slack, Discord, Rocket.Chat) only.
pub fn body(kind: AlertProviderType, message: &Message, channel: &str, username: &str) -> Value {
    let error = message.severity == Severity::Error;
    match kind {
        AlertProviderType::Slack | AlertProviderType::Discord => {
            slack(message, channel, username, if error { "danger" } else { "good" })
        }
        AlertProviderType::Rocket => slack(
            message,
            channel,
            username,
            if error { "#FF0000" } else { "#0076D7" },
        ),
        AlertProviderType::Msteams => msteams(message, if error { "FF0000" } else { "0076D7" }),
        AlertProviderType::Gchat => gchat(message),
    }
}

fn slack(message: &Message, channel: &str, username: &str, color: &str) -> Value {
    let fields: Vec<Value> = message
        .fields
        .iter()
        .map(|f| json!({"title": f.name, "value": f.value, "short": false}))
        .collect();
    json!({
        "channel": channel,
        "username": username,
        "icon_emoji": ":rocket:",
        "attachments": [{
            "color": color,
            "author_name": message.subject(),
            "text": message.text,
            "mrkdwn_in": ["text"],
            "fields": fields,
        }],
    })
}

fn msteams(message: &Message, color: &str) -> Value {
    let facts: Vec<Value> = message
        .fields
        .iter()
        .map(|f| json!({"name": f.name, "value": f.value}))
        .collect();
    json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": color,
        "summary": message.subject(),
        "sections": [{
            "activityTitle": message.text,
            "activitySubtitle": message.subject(),
            "facts": facts,
        }],
    })
}

fn gchat(message: &Message) -> Value {
    let paragraph = |text: String| json!({"widgets": [{"textParagraph": {"text": text}}]});
    let mut sections = vec![paragraph(format!(
        "<font color=#848484><strong>{}</strong></font>",
        message.text
    ))];
    sections.extend(message.fields.iter().map(|f| {
        paragraph(format!(
            "{}<br><font color=#848484><strong>{}</strong></font>",
            f.name, f.value
        ))
    }));
    json!({
        "cards": [{
            "header": {
                "title": "Flagger",
                "subtitle": message.subject(),
                "imageUrl": "https://flagger.app/favicon.png",
            },
            "sections": sections,
        }],
    })
}

/// The URL a message to `kind` is posted to: Discord takes Slack's shape at `<url>/slack`.
pub fn endpoint(kind: AlertProviderType, address: &str) -> String {
    if kind != AlertProviderType::Discord || address.ends_with("/slack") {
        return address.to_owned();
    }
    match address.split_once('?') {
        Some((path, query)) => format!("{}/slack?{query}", path.trim_end_matches('/')),
        None => format!("{}/slack", address.trim_end_matches('/')),
    }
}
