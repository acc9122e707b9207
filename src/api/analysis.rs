//! `spec.analysis`: the step schedule, metric checks, webhooks and alerts of a release.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::HttpMatchRequest;

/// How a release is analysed. Exactly one of `iterations` (A/B testing and Blue/Green),
/// `stepWeight` or `stepWeights` (canary) must be set, together with `interval` and
/// `threshold`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Time between two analysis steps, in seconds or minutes, for example `30s` or `1m`.
    /// Default `60s`; values under `10s` are raised to `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|s)"))]
    pub interval: Option<String>,

    /// Number of failed checks after which the release is rolled back. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub threshold: Option<i32>,

    /// Number of checks to run for A/B testing (with `match`) and Blue/Green (without).
    /// Set exactly one of `iterations`, `stepWeight` and `stepWeights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub iterations: Option<i32>,

    /// Highest percentage of traffic routed to the canary before promotion, 0-100.
    /// Default 100; with `stepWeights`, the last step (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_weight: Option<i32>,

    /// Percentage of traffic added to the canary at each successful step, 0-100, for example
    /// 5 for 5%, 10%, 15%, ... up to `maxWeight`. Set exactly one of `iterations`,
    /// `stepWeight` and `stepWeights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub step_weight: Option<i32>,

    /// Explicit traffic schedule for the canary, in percent, for example `[1, 10, 50, 80]`.
    /// Set exactly one of `iterations`, `stepWeight` and `stepWeights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 0, max = 100)))]
    pub step_weights: Option<Vec<i32>>,

    /// Percentage of traffic moved back to the primary at each step after the primary was
    /// updated (progressive promotion). 0 or unset moves all traffic at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub step_weight_promotion: Option<i32>,

    /// Mirror (shadow) traffic to the canary before shifting any to it (canary strategy), or
    /// during the iterations of Blue/Green. Istio and Gateway API only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,

    /// Percentage of traffic mirrored to the canary, 0-100; unset mirrors all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub mirror_weight: Option<i32>,

    /// Percentage of primary pods that must be available for the primary to count as ready.
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub primary_ready_threshold: Option<i32>,

    /// Percentage of canary pods that must be available for the canary to count as ready.
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub canary_ready_threshold: Option<i32>,

    /// A/B testing: requests matching any of these conditions (headers, query parameters,
    /// source labels) are routed to the canary for `iterations` checks.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "match")]
    pub match_: Option<Vec<HttpMatchRequest>>,

    /// Keep a user on the version they first reached, with a cookie (Istio and Gateway API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<Box<SessionAffinity>>,

    /// Metric checks run at every step; any failing check counts towards `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<CanaryMetric>>,

    /// Webhooks called at the points of the release their `type` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<CanaryWebhook>>,

    /// Where this canary's alerts go. Without it, the controller-wide notifier is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<CanaryAlert>>,
}

/// Cookie-based session affinity during a release.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Name of the cookie that pins a user to the canary.
    pub cookie_name: String,
    /// Name of the cookie that pins a user to the primary; must differ from `cookieName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    /// `Domain` attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Set the `HttpOnly` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// `Max-Age` of the cookie in seconds. Default 86400 (one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i32>,
    /// Set the `Partitioned` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    /// `Path` attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `SameSite` attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// Set the `Secure` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

// Values of the cookie `SameSite` attribute.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// One metric check of the analysis.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// Name of the check. `request-success-rate` (percent) and `request-duration`
    /// (milliseconds, p99) are builtin for the provider's metrics; any other name needs a
    /// `templateRef` or a `query`.
    pub name: String,
    /// Time window the query looks back over, for example `1m`. Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|s)"))]
    pub interval: Option<String>,
    /// Deprecated: use `thresholdRange`. For `request-success-rate` the minimum, otherwise
    /// the maximum accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The accepted range of the metric's value; a value outside it fails the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated: use `templateRef`. An inline PromQL query run on `metricsServer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The MetricTemplate that holds the query and its provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceObjectReference>,
    /// Values for `{{ variables.<key> }}` in the template's query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, String>>,
}

/// The accepted range of a metric value; either bound may be left out.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct ThresholdRange {
    /// Lowest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A reference to a MetricTemplate or AlertProvider, by default in the Canary's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct CrossNamespaceObjectReference {
    /// Name of the object.
    pub name: String,
    /// Namespace of the object; default the Canary's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A webhook called during the release.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    /// Name of the webhook, shown in events.
    pub name: String,
    /// When the webhook is called and what its answer means: `confirm-rollout`,
    /// `pre-rollout`, `rollout` (default), `confirm-traffic-increase`, `confirm-promotion`,
    /// `post-rollout`, `rollback` or `event`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<HookType>,
    /// URL the JSON payload is POSTed to.
    pub url: String,
    /// Do not send an alert while this gate holds the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    /// Request timeout, for example `30s`. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|s)"))]
    pub timeout: Option<String>,
    /// Key/value pairs sent as `metadata` in the payload (the load tester reads `cmd`,
    /// `type`, ... from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Retries after a failed call. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retries: Option<i32>,
    /// Skip TLS certificate verification of the URL.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "disableTLS")]
    pub disable_tls: Option<bool>,
}

// The points of a release at which a webhook is called.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    /// Before a new revision is scaled up; a failure holds the release in `Waiting`.
    ConfirmRollout,
    /// Once, before traffic is routed to the canary; a failure counts as a failed check.
    PreRollout,
    /// At every step, before the metric checks; a failure counts as a failed check.
    Rollout,
    /// Before each traffic increase; a failure holds the step.
    ConfirmTrafficIncrease,
    /// Before promotion; a failure holds the release in `WaitingPromotion`.
    ConfirmPromotion,
    /// After promotion or rollback.
    PostRollout,
    /// At every step; success rolls the release back.
    Rollback,
    /// For every Kubernetes event of the canary.
    Event,
}

/// An alert destination of this canary.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    /// Name of this alert.
    pub name: String,
    /// Lowest severity that is sent: `info` sends everything, `warn` warnings and errors,
    /// `error` only errors. Default `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// The AlertProvider that delivers the alert.
    pub provider_ref: CrossNamespaceObjectReference,
}

// Alert severities, lowest first.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Treated as `info` (Flagger never sends alerts with an empty severity; flaggit does).
    #[serde(rename = "")]
    Unset,
    Info,
    Warn,
    Error,
}
