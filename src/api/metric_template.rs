//! The MetricTemplate resource: a reusable query against a metrics provider.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::canary::CanaryCondition;

/// A query and the metrics provider it runs on, referenced from a Canary's
/// `analysis.metrics[].templateRef`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "MetricTemplate",
    namespaced,
    category = "all",
    status = "MetricTemplateStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "MetricTemplate is a query against a metrics provider, used by Canary analysis.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.type")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    /// The metrics provider the query runs on.
    pub provider: MetricProvider,
    /// The query, with template variables: `{{ name }}`, `{{ namespace }}`, `{{ target }}`,
    /// `{{ service }}`, `{{ ingress }}`, `{{ route }}`, `{{ interval }}` and
    /// `{{ variables.<key> }}` (from the canary metric's `templateVariables`). An unknown
    /// variable fails the check with an error naming it.
    pub query: String,
}

/// A metrics provider and how to reach it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// Type of provider. Default `prometheus`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<MetricProviderType>,
    /// Address of the provider's API, for example `http://prometheus.monitoring:9090`.
    /// Required for prometheus, graphite, influxdb, dynatrace and splunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A Secret in the template's namespace with the provider's credentials, for example
    /// `token` or `username`/`password` for Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// HTTP headers sent with every query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Cloud region (CloudWatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Skip TLS certificate verification of the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

// Metrics providers a MetricTemplate can query.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetricProviderType {
    Prometheus,
    Influxdb,
    Datadog,
    Externalmetrics,
    Stackdriver,
    Cloudwatch,
    Newrelic,
    Graphite,
    Dynatrace,
    Keptn,
    Splunk,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct LocalObjectReference {
    /// Name of the object.
    pub name: String,
}

/// The observed state of a MetricTemplate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct MetricTemplateStatus {
    /// Conditions of the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CanaryCondition>>,
}
