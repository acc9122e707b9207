//! The AlertProvider resource: a chat service that receives a canary's alerts.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalObjectReference, MetricTemplateStatus};

/// A Slack, Microsoft Teams, Discord, Rocket.Chat or Google Chat destination for alerts,
/// referenced from a Canary's `analysis.alerts[].providerRef`. Give either `address` or a
/// `secretRef` whose Secret holds the `address`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "AlertProvider",
    namespaced,
    category = "all",
    status = "MetricTemplateStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "AlertProvider is a chat service that receives Canary alerts.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderSpec {
    /// Type of chat service.
    #[serde(rename = "type")]
    pub type_: AlertProviderType,
    /// Channel to post to (Slack, Rocket.Chat). Default `general`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// User name the alerts are posted as. Default `flagger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Incoming webhook URL. Prefer `secretRef`: a URL here is readable by anyone who can
    /// read the AlertProvider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP(S) proxy used to reach the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// A Secret in the provider's namespace with the key `address` (the webhook URL, which
    /// overrides `address`) and optionally `token` (sent as a bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

// Chat services flaggit can alert.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertProviderType {
    #[default]
    Slack,
    Msteams,
    Discord,
    Rocket,
    Gchat,
}
