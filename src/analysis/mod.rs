//! Metric analysis: the metric providers (Prometheus first), MetricTemplate rendering with
//! the template variables, the builtin `request-success-rate` / `request-duration` queries of
//! each traffic provider, and threshold ranges. [`provider_for`] is the only place that
//! matches on the metric provider type.

pub mod builtin;
pub mod cloudwatch;
pub mod datadog;
pub mod dynatrace;
pub mod externalmetrics;
pub mod graphite;
pub mod influxdb;
pub mod keptn;
pub mod newrelic;
pub mod prometheus;
pub mod provider;
pub mod sigv4;
pub mod splunk;
pub mod stackdriver;
pub mod template;
mod vendor;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::api::{Canary, CanaryMetric, MetricProvider as ProviderSpec, MetricProviderType, MetricTemplate};
pub use crate::rollout::CheckResult;

use builtin::{Check, Observer};
pub use provider::{Context as ProviderContext, MetricProvider, QueryError, provider_for};
use template::{RenderError, TemplateContext, render};

/// Controller-wide settings of the analysis.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Prometheus for the builtin metrics and inline queries of canaries without
    /// `spec.metricsServer` (`--metrics-server`).
    pub metrics_server: String,
    /// The traffic provider of canaries without `spec.provider` (`--mesh-provider`); picks
    /// whose metrics the builtin queries read.
    pub mesh_provider: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            metrics_server: "http://prometheus:9090".into(),
            mesh_provider: "istio".into(),
        }
    }
}

/// What verifying or checking a canary's metrics can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "spec.analysis.metrics[{index}] `{name}` is not a builtin metric (request-success-rate, \
         request-duration) and has neither `templateRef` nor `query`: add a templateRef to a \
         MetricTemplate"
    )]
    InvalidMetric { index: usize, name: String },
    #[error(
        "spec.analysis.metrics[{index}].templateRef: MetricTemplate {namespace}/{name} not found: \
         create it or fix the reference"
    )]
    TemplateNotFound {
        index: usize,
        namespace: String,
        name: String,
    },
    #[error("cannot read MetricTemplate {namespace}/{name}: {source}")]
    GetTemplate {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "MetricTemplate {template}: spec.provider.secretRef names Secret {namespace}/{name}, which \
         does not exist: create it in the template's namespace or fix the reference"
    )]
    SecretNotFound {
        template: String,
        namespace: String,
        name: String,
    },
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    GetSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{origin}: metric provider `{provider}` is not supported yet: use prometheus")]
    ProviderNotSupported { origin: String, provider: String },
    /// The provider's settings are unusable; `problem` names the field and the fix.
    #[error("{origin}: {problem}")]
    ProviderConfig { origin: String, problem: String },
    #[error("metric `{metric}` of {origin}: {source}")]
    RenderQuery {
        metric: String,
        origin: String,
        #[source]
        source: RenderError,
    },
    #[error("{provider} at {address} is not available: {source}")]
    ProviderUnavailable {
        provider: String,
        address: String,
        #[source]
        source: QueryError,
    },
    #[error(
        "{provider} at {address} answered `vector(1)` with another value than 1: is it a Prometheus API?"
    )]
    ProviderOffline { provider: String, address: String },
}

impl Error {
    /// A short fixed name for the kind of failure: event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidMetric { .. } => "InvalidMetric",
            Self::TemplateNotFound { .. } => "MetricTemplateNotFound",
            Self::GetTemplate { .. } => "GetMetricTemplate",
            Self::SecretNotFound { .. } => "MetricSecretNotFound",
            Self::GetSecret { .. } => "GetMetricSecret",
            Self::ProviderNotSupported { .. } => "MetricProviderNotSupported",
            Self::ProviderConfig { .. } => "InvalidMetricProvider",
            Self::RenderQuery { .. } => "RenderMetricQuery",
            Self::ProviderUnavailable { .. } => "MetricProviderUnavailable",
            Self::ProviderOffline { .. } => "MetricProviderOffline",
        }
    }
}

/// A MetricTemplate resolved for one metric: its query rendered, its provider built.
struct Resolved {
    query: String,
    provider: Box<dyn MetricProvider>,
}

/// Runs a canary's metric checks against its providers.
#[derive(Clone)]
pub struct Analyzer {
    client: Client,
    settings: Settings,
}

impl Analyzer {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self { client, settings }
    }

    /// Checks, before any traffic moves, that every metric can run: each is builtin or has a
    /// `query` or `templateRef`; each referenced MetricTemplate exists, its provider is
    /// usable, its Secret exists with the keys the provider needs, and its query renders.
    pub async fn verify(&self, canary: &Canary) -> Result<(), Error> {
        for (index, metric) in metrics(canary).iter().enumerate() {
            validate(index, metric)?;
            if builtin::is_builtin(&metric.name) || has_query(metric) {
                self.metrics_server(canary)?;
            }
            if metric.template_ref.is_some() {
                self.resolve_template(canary, index, metric).await?;
            }
        }
        Ok(())
    }

    /// Checks that every provider the metrics use answers (at initialization; Flagger only
    /// reports the outcome as an event).
    pub async fn check_providers(&self, canary: &Canary) -> Result<(), Error> {
        let mut server_checked = false;
        for (index, metric) in metrics(canary).iter().enumerate() {
            if !server_checked && (builtin::is_builtin(&metric.name) || has_query(metric)) {
                online(self.metrics_server(canary)?.as_ref()).await?;
                server_checked = true;
            }
            if metric.template_ref.is_some() {
                let resolved = self.resolve_template(canary, index, metric).await?;
                online(resolved.provider.as_ref()).await?;
            }
        }
        Ok(())
    }

    /// Runs the checks in Flagger's order (builtin and inline queries, then MetricTemplates)
    /// and stops at the first failure. Returns the results so far: the passed ones with their
    /// values, then the failing one with its event message.
    pub async fn run(&self, canary: &Canary) -> Vec<CheckResult> {
        self.checks(canary, true).await
    }

    /// Runs every check, past failures too: a preview shows them all.
    pub async fn run_all(&self, canary: &Canary) -> Vec<CheckResult> {
        self.checks(canary, false).await
    }

    async fn checks(&self, canary: &Canary, stop_at_failure: bool) -> Vec<CheckResult> {
        let metrics = metrics(canary);
        let mut results = Vec::new();
        let subject = format!("{}.{}", canary.name_any(), canary.namespace().unwrap_or_default());

        let needs_server = metrics
            .iter()
            .any(|m| builtin::is_builtin(&m.name) || has_query(m));
        let server = needs_server.then(|| self.metrics_server(canary));
        let metrics_provider = builtin::metrics_provider(canary, &self.settings.mesh_provider);
        let observer = Observer::for_provider(&metrics_provider);

        for (index, metric) in metrics.iter().enumerate() {
            if let Err(e) = validate(index, metric) {
                results.push(failed(metric, None, e.to_string()));
                if stop_at_failure {
                    return results;
                }
                continue;
            }
            let server = match &server {
                Some(Ok(server)) => server.as_ref(),
                Some(Err(e)) if builtin::is_builtin(&metric.name) || has_query(metric) => {
                    results.push(failed(metric, None, e.to_string()));
                    if stop_at_failure {
                        return results;
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(check) = Check::builtin(&metric.name) {
                let context = observer.context(&TemplateContext::new(canary, metric));
                let query = observer.query(&metric.name).map(|q| render(q, &context));
                let result = match query {
                    Some(Ok(query)) => {
                        let value = server.run_query(&query).await.map(|v| match check {
                            Check::Duration => observer.duration_ms(v),
                            _ => v,
                        });
                        judge(canary, metric, check, &subject, &metrics_provider, server, value)
                    }
                    Some(Err(source)) => failed(
                        metric,
                        None,
                        Error::RenderQuery {
                            metric: metric.name.clone(),
                            origin: format!("the {metrics_provider} builtin queries"),
                            source,
                        }
                        .to_string(),
                    ),
                    None => continue,
                };
                let passed = result.passed;
                results.push(result);
                if !passed && stop_at_failure {
                    return results;
                }
            }
            if let Some(query) = metric.query.as_deref().filter(|q| !q.trim().is_empty()) {
                let value = server.run_query(query).await;
                let result = judge(
                    canary,
                    metric,
                    Check::Custom,
                    &subject,
                    server.kind(),
                    server,
                    value,
                );
                let passed = result.passed;
                results.push(result);
                if !passed && stop_at_failure {
                    return results;
                }
            }
        }

        for (index, metric) in metrics.iter().enumerate() {
            if metric.template_ref.is_none() {
                continue;
            }
            let result = match self.resolve_template(canary, index, metric).await {
                Ok(resolved) => {
                    let provider = resolved.provider.as_ref();
                    let value = provider.run_query(&resolved.query).await;
                    judge(
                        canary,
                        metric,
                        Check::Custom,
                        &subject,
                        provider.kind(),
                        provider,
                        value,
                    )
                }
                Err(e) => failed(metric, None, e.to_string()),
            };
            let passed = result.passed;
            results.push(result);
            if !passed && stop_at_failure {
                return results;
            }
        }
        results
    }

    /// The Prometheus of the builtin metrics and inline queries.
    fn metrics_server(&self, canary: &Canary) -> Result<Box<dyn MetricProvider>, Error> {
        let (address, origin) = match canary.spec.metrics_server.as_deref().filter(|a| !a.is_empty()) {
            Some(address) => (address, "spec.metricsServer"),
            None => (self.settings.metrics_server.as_str(), "--metrics-server"),
        };
        let spec = ProviderSpec {
            type_: Some(MetricProviderType::Prometheus),
            address: Some(address.to_string()),
            ..Default::default()
        };
        provider_for(&spec, None, origin, &ProviderContext::default()).map_err(|e| match e {
            // The field to fix is the metrics server address, not a template's.
            Error::ProviderConfig { origin, problem } => Error::ProviderConfig {
                problem: problem.replace("spec.provider.address", "the address"),
                origin,
            },
            other => other,
        })
    }

    /// Reads the metric's MetricTemplate and its Secret, builds the provider and renders
    /// the query.
    async fn resolve_template(
        &self,
        canary: &Canary,
        index: usize,
        metric: &CanaryMetric,
    ) -> Result<Resolved, Error> {
        let Some(reference) = &metric.template_ref else {
            return Err(Error::InvalidMetric {
                index,
                name: metric.name.clone(),
            });
        };
        let namespace = reference
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| canary.namespace())
            .unwrap_or_default();
        let template = Api::<MetricTemplate>::namespaced(self.client.clone(), &namespace)
            .get_opt(&reference.name)
            .await
            .map_err(|source| Error::GetTemplate {
                namespace: namespace.clone(),
                name: reference.name.clone(),
                source,
            })?
            .ok_or_else(|| Error::TemplateNotFound {
                index,
                namespace: namespace.clone(),
                name: reference.name.clone(),
            })?;
        let origin = format!("MetricTemplate {namespace}/{}", reference.name);
        let secret = match &template.spec.provider.secret_ref {
            Some(secret_ref) => Some(
                Api::<Secret>::namespaced(self.client.clone(), &namespace)
                    .get_opt(&secret_ref.name)
                    .await
                    .map_err(|source| Error::GetSecret {
                        namespace: namespace.clone(),
                        name: secret_ref.name.clone(),
                        source,
                    })?
                    .ok_or_else(|| Error::SecretNotFound {
                        template: format!("{namespace}/{}", reference.name),
                        namespace: namespace.clone(),
                        name: secret_ref.name.clone(),
                    })?,
            ),
            None => None,
        };
        let context = ProviderContext::for_metric(metric.interval.as_deref(), self.client.clone());
        let provider = provider_for(&template.spec.provider, secret.as_ref(), &origin, &context)?;
        let query =
            render(&template.spec.query, &TemplateContext::new(canary, metric)).map_err(|source| {
                Error::RenderQuery {
                    metric: metric.name.clone(),
                    origin: origin.clone(),
                    source,
                }
            })?;
        Ok(Resolved { query, provider })
    }
}

fn metrics(canary: &Canary) -> &[CanaryMetric] {
    canary
        .spec
        .analysis()
        .and_then(|a| a.metrics.as_deref())
        .unwrap_or_default()
}

fn has_query(metric: &CanaryMetric) -> bool {
    metric.query.as_deref().is_some_and(|q| !q.trim().is_empty())
}

/// A metric must be builtin, or have a query or a template to run.
fn validate(index: usize, metric: &CanaryMetric) -> Result<(), Error> {
    if builtin::is_builtin(&metric.name) || has_query(metric) || metric.template_ref.is_some() {
        Ok(())
    } else {
        Err(Error::InvalidMetric {
            index,
            name: metric.name.clone(),
        })
    }
}

async fn online(provider: &dyn MetricProvider) -> Result<(), Error> {
    match provider.is_online().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::ProviderOffline {
            provider: provider.kind().to_string(),
            address: provider.address().to_string(),
        }),
        Err(source) => Err(Error::ProviderUnavailable {
            provider: provider.kind().to_string(),
            address: provider.address().to_string(),
            source,
        }),
    }
}

fn failed(metric: &CanaryMetric, value: Option<f64>, message: String) -> CheckResult {
    CheckResult {
        name: metric.name.clone(),
        value,
        passed: false,
        message,
    }
}

/// The result of one query: judged against the thresholds, or Flagger's message for why
/// there is no value. `reported_provider` is what the "no values" message names.
fn judge(
    canary: &Canary,
    metric: &CanaryMetric,
    check: Check,
    subject: &str,
    reported_provider: &str,
    provider: &dyn MetricProvider,
    value: Result<f64, QueryError>,
) -> CheckResult {
    match value {
        Ok(value) => match builtin::evaluate(check, metric, subject, value) {
            None => CheckResult {
                name: metric.name.clone(),
                value: Some(value),
                passed: true,
                message: String::new(),
            },
            Some(message) => failed(metric, Some(value), message),
        },
        Err(QueryError::NoValues) => failed(
            metric,
            None,
            format!(
                "Halt advancement no values found for {reported_provider} metric {} probably {}.{} is not \
                 receiving traffic",
                metric.name,
                canary.spec.target_ref.name,
                canary.namespace().unwrap_or_default()
            ),
        ),
        Err(e) => failed(
            metric,
            None,
            format!(
                "Metric query failed for {} on {} {}: {e}",
                metric.name,
                provider.kind(),
                provider.address()
            ),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn metrics_need_a_builtin_name_query_or_template() {
        let ok = [
            CanaryMetric {
                name: "request-success-rate".into(),
                ..Default::default()
            },
            CanaryMetric {
                name: "x".into(),
                query: Some("up".into()),
                ..Default::default()
            },
            CanaryMetric {
                name: "x".into(),
                template_ref: Some(Default::default()),
                ..Default::default()
            },
        ];
        for metric in &ok {
            assert!(validate(0, metric).is_ok(), "{metric:?}");
        }
        let bad = CanaryMetric {
            name: "latency".into(),
            query: Some("  ".into()),
            ..Default::default()
        };
        let err = validate(3, &bad).unwrap_err();
        assert_eq!(err.category(), "InvalidMetric");
        assert!(
            err.to_string().starts_with("spec.analysis.metrics[3] `latency`"),
            "{err}"
        );
    }

    #[test]
    fn default_settings_are_flaggers_flags() {
        let settings = Settings::default();
        assert_eq!(settings.metrics_server, "http://prometheus:9090");
        assert_eq!(settings.mesh_provider, "istio");
    }
}
