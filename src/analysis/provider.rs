//! The metric provider plug-in family: the [`MetricProvider`] trait, the errors a query can
//! end with, and [`provider_for`], the one place that picks an implementation by type.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;

use crate::api::{MetricProvider as ProviderSpec, MetricProviderType};

use super::Error;
use super::cloudwatch::{self, CloudWatch};
use super::datadog::Datadog;
use super::dynatrace::Dynatrace;
use super::externalmetrics::ExternalMetrics;
use super::graphite::Graphite;
use super::influxdb::InfluxDb;
use super::keptn::Keptn;
use super::newrelic::NewRelic;
use super::prometheus::Prometheus;
use super::splunk::Splunk;
use super::stackdriver::Stackdriver;

/// A metrics backend a query runs on.
#[async_trait]
pub trait MetricProvider: Send + Sync {
    /// Runs `query` and returns its single value.
    async fn run_query(&self, query: &str) -> Result<f64, QueryError>;
    /// Whether the backend answers queries (Prometheus: `vector(1)` returns 1).
    async fn is_online(&self) -> Result<bool, QueryError>;
    /// The provider type as written in a MetricTemplate, e.g. `prometheus`.
    fn kind(&self) -> &'static str;
    /// The address queries go to, without any credentials, for messages.
    fn address(&self) -> &str;
}

/// How a query can fail. Never carries credentials.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Empty result or NaN: usually the workload receives no traffic.
    #[error("no values found")]
    NoValues,
    #[error(
        "the query returned {0} series instead of one: aggregate it to a single value, for \
         example with sum()"
    )]
    MultipleValues(usize),
    #[error("request failed: {0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// The backend understood the request and refused the query.
    #[error("{error_type}: {error}")]
    Rejected { error_type: String, error: String },
    #[error("unexpected response ({reason}): {body}")]
    Decode { reason: String, body: String },
}

impl QueryError {
    /// A short fixed name for the kind of failure.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoValues => "NoValues",
            Self::MultipleValues(_) => "MultipleValues",
            Self::Request(_) => "QueryRequest",
            Self::Timeout(_) => "QueryTimeout",
            Self::Status { .. } => "QueryStatus",
            Self::Rejected { .. } => "QueryRejected",
            Self::Decode { .. } => "QueryDecode",
        }
    }
}

/// How long a query may take unless a provider says otherwise (Flagger's Prometheus timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider type's name as written in manifests (`prometheus`, `datadog`, ...).
pub fn type_name(kind: Option<MetricProviderType>) -> String {
    let kind = kind.unwrap_or(MetricProviderType::Prometheus);
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A Secret's keys and values (`data`, plus `stringData` of objects not yet stored).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// What a provider needs besides its spec and Secret.
#[derive(Clone)]
pub struct Context {
    /// The metric's `interval` (default 1m): datadog, dynatrace, cloudwatch and splunk query
    /// the last ten intervals, newrelic the last one.
    pub interval: Duration,
    /// The cluster, for keptn and externalmetrics (None where no metric needs them).
    pub client: Option<kube::Client>,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            client: None,
        }
    }
}

impl Context {
    /// The context of a canary metric: its `interval` (Flagger's `1m` when unset or
    /// unparsable; the CRD pattern refuses the latter) and the controller's client.
    pub fn for_metric(interval: Option<&str>, client: kube::Client) -> Self {
        Self {
            interval: interval
                .and_then(crate::rollout::parse_duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_INTERVAL),
            client: Some(client),
        }
    }
}

/// A metric's interval when it sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Builds the provider `spec` describes, with the credentials of `secret`. `origin` says
/// where the spec came from (e.g. `MetricTemplate test/latency`) for error messages.
pub fn provider_for(
    spec: &ProviderSpec,
    secret: Option<&Secret>,
    origin: &str,
    context: &Context,
) -> Result<Box<dyn MetricProvider>, Error> {
    let credentials = secret.map(secret_data).unwrap_or_default();
    let problem = |problem: String| Error::ProviderConfig {
        origin: origin.to_string(),
        problem,
    };
    let address = spec.address.as_deref();
    let insecure = spec.insecure_skip_verify.unwrap_or(false);
    let interval = context.interval;
    let client = || {
        context.client.clone().ok_or_else(|| {
            problem(format!(
                "provider {} reads the cluster, and no Kubernetes client was given",
                type_name(spec.type_)
            ))
        })
    };
    let provider: Box<dyn MetricProvider> = match spec.type_.unwrap_or(MetricProviderType::Prometheus) {
        MetricProviderType::Prometheus => {
            let address = address.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
                problem(
                    "spec.provider.address is required by provider prometheus: set the Prometheus URL, \
                     for example http://prometheus.monitoring:9090"
                        .to_string(),
                )
            })?;
            Box::new(
                Prometheus::new(
                    address,
                    secret.map(|_| &credentials),
                    spec.headers.as_ref(),
                    insecure,
                    DEFAULT_TIMEOUT,
                )
                .map_err(problem)?,
            )
        }
        MetricProviderType::Datadog => {
            Box::new(Datadog::new(address, &credentials, interval, insecure).map_err(problem)?)
        }
        MetricProviderType::Newrelic => {
            Box::new(NewRelic::new(address, &credentials, interval, insecure).map_err(problem)?)
        }
        MetricProviderType::Graphite => {
            Box::new(Graphite::new(address, secret.map(|_| &credentials), insecure).map_err(problem)?)
        }
        MetricProviderType::Influxdb => {
            Box::new(InfluxDb::new(address, secret.map(|_| &credentials), insecure).map_err(problem)?)
        }
        MetricProviderType::Dynatrace => {
            Box::new(Dynatrace::new(address, &credentials, interval, insecure).map_err(problem)?)
        }
        MetricProviderType::Cloudwatch => Box::new(
            CloudWatch::new(
                spec.region.as_deref(),
                address,
                &credentials,
                &cloudwatch::environment(),
                interval,
                insecure,
            )
            .map_err(problem)?,
        ),
        MetricProviderType::Stackdriver => {
            Box::new(Stackdriver::new(address, secret.map(|_| &credentials), insecure).map_err(problem)?)
        }
        MetricProviderType::Splunk => {
            Box::new(Splunk::new(address, &credentials, interval, insecure).map_err(problem)?)
        }
        MetricProviderType::Keptn => Box::new(Keptn::new(client()?)),
        MetricProviderType::Externalmetrics => {
            Box::new(ExternalMetrics::new(client()?, address, &credentials, insecure).map_err(problem)?)
        }
    };
    Ok(provider)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn spec(kind: Option<MetricProviderType>, address: Option<&str>) -> ProviderSpec {
        ProviderSpec {
            type_: kind,
            address: address.map(str::to_owned),
            ..Default::default()
        }
    }

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn prometheus_is_the_default_type() {
        let provider = provider_for(
            &spec(None, Some("http://prom:9090")),
            None,
            "here",
            &Context::default(),
        )
        .unwrap();
        assert_eq!(provider.kind(), "prometheus");
        assert_eq!(provider.address(), "http://prom:9090");
    }

    #[test]
    fn prometheus_needs_an_address() {
        let err = provider_for(&spec(None, None), None, "MetricTemplate a/b", &Context::default())
            .err()
            .expect("no address");
        assert_eq!(err.category(), "InvalidMetricProvider");
        let text = err.to_string();
        assert!(
            text.starts_with("MetricTemplate a/b: spec.provider.address"),
            "{text}"
        );
    }

    fn build(
        kind: MetricProviderType,
        address: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> Result<Box<dyn MetricProvider>, Error> {
        let s = secret(pairs);
        let spec = ProviderSpec {
            region: Some("us-east-1".into()),
            ..spec(Some(kind), address)
        };
        provider_for(
            &spec,
            (!pairs.is_empty()).then_some(&s),
            "MetricTemplate a/b",
            &Context::default(),
        )
    }

    #[test]
    fn every_http_type_builds_with_its_secret_keys() {
        use MetricProviderType::*;
        type Case<'a> = (
            MetricProviderType,
            Option<&'a str>,
            &'a [(&'a str, &'a str)],
            &'a str,
        );
        let cases: [Case; 8] = [
            (
                Datadog,
                None,
                &[("datadog_api_key", "a"), ("datadog_application_key", "b")],
                "https://api.datadoghq.com",
            ),
            (
                Newrelic,
                None,
                &[("newrelic_account_id", "1"), ("newrelic_query_key", "k")],
                "https://insights-api.newrelic.com",
            ),
            (Graphite, Some("http://graphite"), &[], "http://graphite"),
            (
                Influxdb,
                Some("http://influx:8086"),
                &[("token", "t"), ("org", "o")],
                "http://influx:8086",
            ),
            (
                Dynatrace,
                Some("https://x.live.dynatrace.com"),
                &[("dynatrace_token", "t")],
                "https://x.live.dynatrace.com",
            ),
            (
                Cloudwatch,
                None,
                &[("aws_access_key_id", "a"), ("aws_secret_access_key", "s")],
                "https://monitoring.us-east-1.amazonaws.com",
            ),
            (
                Stackdriver,
                None,
                &[("project", "p")],
                "https://monitoring.googleapis.com",
            ),
            (
                Splunk,
                Some("https://api.us1.signalfx.com"),
                &[("sf_token_key", "t")],
                "https://api.us1.signalfx.com",
            ),
        ];
        for (kind, address, pairs, shown) in cases {
            let provider = build(kind, address, pairs).unwrap();
            assert_eq!(provider.kind(), type_name(Some(kind)));
            assert_eq!(provider.address(), shown);
        }
    }

    #[test]
    fn missing_keys_name_the_template_and_the_key() {
        let err = build(
            MetricProviderType::Datadog,
            None,
            &[("datadog_api_key", "secret-value")],
        )
        .err()
        .expect("no application key");
        assert_eq!(err.category(), "InvalidMetricProvider");
        let text = err.to_string();
        assert!(text.starts_with("MetricTemplate a/b: "), "{text}");
        assert!(text.contains("`datadog_application_key`"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
        let err = build(MetricProviderType::Dynatrace, None, &[("dynatrace_token", "t")])
            .err()
            .expect("no address");
        assert!(
            err.to_string()
                .contains("spec.provider.address is required by provider dynatrace"),
            "{err}"
        );
    }

    #[test]
    fn cluster_types_need_a_client() {
        for kind in [MetricProviderType::Keptn, MetricProviderType::Externalmetrics] {
            let err = build(kind, None, &[]).err().expect("no client");
            assert!(err.to_string().contains("no Kubernetes client"), "{err}");
        }
    }

    #[test]
    fn metric_intervals_default_to_a_minute() {
        let interval = |text: Option<&str>| {
            text.and_then(crate::rollout::parse_duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_INTERVAL)
        };
        assert_eq!(interval(Some("30s")), Duration::from_secs(30));
        assert_eq!(interval(Some("0s")), DEFAULT_INTERVAL);
        assert_eq!(interval(None), DEFAULT_INTERVAL);
        assert_eq!(Context::default().interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn secret_with_a_token_is_accepted() {
        let s = secret(&[("token", "abc")]);
        assert!(
            provider_for(
                &spec(None, Some("http://p:9090")),
                Some(&s),
                "o",
                &Context::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn secret_with_username_and_password_is_accepted() {
        let s = secret(&[("username", "u"), ("password", "p")]);
        assert!(
            provider_for(
                &spec(None, Some("http://p:9090")),
                Some(&s),
                "o",
                &Context::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn secret_without_usable_keys_is_refused_without_echoing_values() {
        let s = secret(&[("username", "only-user-secret-value")]);
        let err = provider_for(
            &spec(None, Some("http://p:9090")),
            Some(&s),
            "o",
            &Context::default(),
        )
        .err()
        .expect("no password");
        let text = err.to_string();
        assert!(text.contains("password"), "{text}");
        assert!(!text.contains("only-user-secret-value"), "{text}");
    }

    #[test]
    fn type_names_are_the_manifest_spelling() {
        assert_eq!(type_name(None), "prometheus");
        assert_eq!(
            type_name(Some(MetricProviderType::Externalmetrics)),
            "externalmetrics"
        );
        assert_eq!(type_name(Some(MetricProviderType::Newrelic)), "newrelic");
    }

    #[test]
    fn secret_data_merges_string_data() {
        let mut s = secret(&[("token", "a")]);
        s.string_data = Some(BTreeMap::from([
            ("token".into(), "b".into()),
            ("x".into(), "y".into()),
        ]));
        let data = secret_data(&s);
        assert_eq!(data.get("token").map(Vec::as_slice), Some(&b"b"[..]));
        assert_eq!(data.get("x").map(Vec::as_slice), Some(&b"y"[..]));
    }
}
