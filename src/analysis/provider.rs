//! The metric provider plug-in family: the [`MetricProvider`] trait, the errors a query can
//! end with, and [`provider_for`], the one place that picks an implementation by type.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;

use crate::api::{MetricProvider as ProviderSpec, MetricProviderType};

use super::Error;
use super::prometheus::Prometheus;

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

/// Builds the provider `spec` describes, with the credentials of `secret`. `origin` says
/// where the spec came from (e.g. `MetricTemplate test/latency`) for error messages.
pub fn provider_for(
    spec: &ProviderSpec,
    secret: Option<&Secret>,
    origin: &str,
) -> Result<Box<dyn MetricProvider>, Error> {
    let credentials = secret.map(secret_data).unwrap_or_default();
    let problem = |problem: String| Error::ProviderConfig {
        origin: origin.to_string(),
        problem,
    };
    match spec.type_.unwrap_or(MetricProviderType::Prometheus) {
        MetricProviderType::Prometheus => {
            let address = spec
                .address
                .as_deref()
                .filter(|a| !a.trim().is_empty())
                .ok_or_else(|| {
                    problem(
                        "spec.provider.address is required by provider prometheus: set the Prometheus URL, \
                     for example http://prometheus.monitoring:9090"
                            .to_string(),
                    )
                })?;
            let prometheus = Prometheus::new(
                address,
                secret.map(|_| &credentials),
                spec.headers.as_ref(),
                spec.insecure_skip_verify.unwrap_or(false),
                DEFAULT_TIMEOUT,
            )
            .map_err(problem)?;
            Ok(Box::new(prometheus))
        }
        other => Err(Error::ProviderNotSupported {
            origin: origin.to_string(),
            provider: type_name(Some(other)),
        }),
    }
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
        let provider = provider_for(&spec(None, Some("http://prom:9090")), None, "here").unwrap();
        assert_eq!(provider.kind(), "prometheus");
        assert_eq!(provider.address(), "http://prom:9090");
    }

    #[test]
    fn prometheus_needs_an_address() {
        let err = provider_for(&spec(None, None), None, "MetricTemplate a/b")
            .err()
            .expect("no address");
        assert_eq!(err.category(), "InvalidMetricProvider");
        let text = err.to_string();
        assert!(
            text.starts_with("MetricTemplate a/b: spec.provider.address"),
            "{text}"
        );
    }

    #[test]
    fn other_types_are_not_supported_yet() {
        let err = provider_for(
            &spec(Some(MetricProviderType::Datadog), Some("https://x")),
            None,
            "MetricTemplate a/b",
        )
        .err()
        .expect("unsupported");
        assert_eq!(err.category(), "MetricProviderNotSupported");
        assert!(
            err.to_string().contains("`datadog` is not supported yet"),
            "{err}"
        );
    }

    #[test]
    fn secret_with_a_token_is_accepted() {
        let s = secret(&[("token", "abc")]);
        assert!(provider_for(&spec(None, Some("http://p:9090")), Some(&s), "o").is_ok());
    }

    #[test]
    fn secret_with_username_and_password_is_accepted() {
        let s = secret(&[("username", "u"), ("password", "p")]);
        assert!(provider_for(&spec(None, Some("http://p:9090")), Some(&s), "o").is_ok());
    }

    #[test]
    fn secret_without_usable_keys_is_refused_without_echoing_values() {
        let s = secret(&[("username", "only-user-secret-value")]);
        let err = provider_for(&spec(None, Some("http://p:9090")), Some(&s), "o")
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
