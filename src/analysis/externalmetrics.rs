//! The externalmetrics provider: one value from the Kubernetes External Metrics API
//! (`external.metrics.k8s.io/v1beta1`, served by KEDA, the Datadog cluster agent, ...),
//! through the controller's Kubernetes client or, with `address`, straight to an adapter.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::Client;
use kube::api::ListParams;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::vendor::{self, Http};

const API: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// A parsed `[<namespace>/]<metricName>[?labelSelector=<selector>]` query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub namespace: String,
    pub metric: String,
    pub label_selector: Option<String>,
}

fn invalid(reason: String) -> QueryError {
    QueryError::Rejected {
        error_type: "InvalidQuery".into(),
        error: format!("{reason}: write <namespace>/<metricName>?labelSelector=<url-encoded selector>"),
    }
}

/// Parses a query as Flagger does; the namespace defaults to `default`.
pub fn parse_query(query: &str) -> Result<Query, QueryError> {
    let query = query.trim();
    let url = Url::parse(&format!("dummy:///{query}"))
        .map_err(|e| invalid(format!("`{query}` is malformed ({e})")))?;
    let path = url.path().trim_start_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    let (namespace, metric) = match parts.as_slice() {
        [metric] => ("default", *metric),
        [namespace, metric] => (
            if namespace.is_empty() {
                "default"
            } else {
                namespace
            },
            *metric,
        ),
        _ => return Err(invalid(format!("`{query}` has too many slashes"))),
    };
    if metric.is_empty() {
        return Err(invalid("the metric name is empty".into()));
    }
    let decode = |s: &str| {
        Url::parse(&format!("dummy:///?x={s}"))
            .ok()
            .and_then(|u| u.query_pairs().next().map(|(_, v)| v.into_owned()))
            .unwrap_or_else(|| s.to_string())
    };
    Ok(Query {
        namespace: decode(namespace),
        metric: decode(metric),
        label_selector: url
            .query_pairs()
            .find(|(k, _)| k == "labelSelector")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty()),
    })
}

/// A Kubernetes quantity (`250m`, `1.5k`, `2Gi`, `1e3`) as a float.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let number = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c))
            .then(|| n.parse::<f64>().ok())
            .flatten()
    };
    if let Some(value) = number(text) {
        return Some(value);
    }
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| Some(number(text.strip_suffix(suffix)?)? * factor))
}

#[derive(Deserialize)]
struct ValueList {
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(Deserialize)]
struct Value {
    value: String,
}

/// The value of an `ExternalMetricValueList`: its first item, as Flagger takes it. No item
/// is [`QueryError::NoValues`].
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let list: ValueList = vendor::json(body)?;
    let item = list.items.first().ok_or(QueryError::NoValues)?;
    parse_quantity(&item.value)
        .ok_or_else(|| vendor::decode(format!("`{}` is not a quantity", item.value), body))
}

enum Transport {
    /// The controller's own client and identity.
    Kube(Client),
    /// An adapter or API server at `spec.provider.address`.
    Http {
        http: Http,
        base: Url,
        authorization: Option<HeaderValue>,
    },
}

/// The External Metrics API.
pub struct ExternalMetrics {
    transport: Transport,
    address: String,
}

impl ExternalMetrics {
    /// Through `client`, or with `address` straight to that server, sending the Secret's
    /// `token` as a bearer token.
    pub fn new(
        client: Client,
        address: Option<&str>,
        credentials: &BTreeMap<String, Vec<u8>>,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let token = credentials
            .get("token")
            .map(|t| String::from_utf8_lossy(t).trim().to_string());
        match address.map(str::trim).filter(|a| !a.is_empty()) {
            None if token.is_some() => Err(
                "the Secret key `token` is used with spec.provider.address: without an address \
                 flaggit queries its own cluster with its own service account; set the address \
                 of the API server or adapter, or drop the secretRef"
                    .into(),
            ),
            None => Ok(Self {
                transport: Transport::Kube(client),
                address: "the Kubernetes API".into(),
            }),
            Some(address) => {
                let base = vendor::address(Some(address), None, "externalmetrics")?;
                let authorization = token
                    .map(|t| vendor::secret_header(&format!("Bearer {t}"), "token"))
                    .transpose()?;
                Ok(Self {
                    address: vendor::shown(&base),
                    transport: Transport::Http {
                        http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
                        base,
                        authorization,
                    },
                })
            }
        }
    }

    /// The raw `ExternalMetricValueList` of a metric.
    async fn list(&self, query: &Query) -> Result<String, QueryError> {
        let path = format!("{API}/namespaces/{}/{}", query.namespace, query.metric);
        let what = format!("external metric {}/{}", query.namespace, query.metric);
        match &self.transport {
            Transport::Kube(client) => {
                let mut params = ListParams::default();
                if let Some(selector) = &query.label_selector {
                    params = params.labels(selector);
                }
                let request = kube::core::Request::new(&path)
                    .list(&params)
                    .map_err(|e| QueryError::Request(format!("{what}: {e}")))?;
                client.request_text(request).await.map_err(|e| match e {
                    kube::Error::Api(status) => QueryError::Status {
                        status: status.code,
                        body: format!("{what}: {}", status.message),
                    },
                    other => QueryError::Request(format!("{what}: {other}")),
                })
            }
            Transport::Http {
                http,
                base,
                authorization,
            } => {
                let mut url = vendor::join(base, &path);
                if let Some(selector) = &query.label_selector {
                    url.query_pairs_mut().append_pair("labelSelector", selector);
                }
                let mut request = http.client().get(url).header("Accept", "application/json");
                if let Some(authorization) = authorization {
                    request = request.header("Authorization", authorization.clone());
                }
                http.send(request).await
            }
        }
    }
}

#[async_trait]
impl MetricProvider for ExternalMetrics {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        parse_response(&self.list(&parse_query(query)?).await?)
    }

    /// Flagger's check: listing `kube-system/dummy-metric` gets an answer.
    async fn is_online(&self) -> Result<bool, QueryError> {
        let dummy = Query {
            namespace: "kube-system".into(),
            metric: "dummy-metric".into(),
            label_selector: None,
        };
        self.list(&dummy).await?;
        Ok(true)
    }

    fn kind(&self) -> &'static str {
        "externalmetrics"
    }

    fn address(&self) -> &str {
        &self.address
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::analysis::vendor::fake;

    const LIST: &str = r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[{"metricName":"requests","metricLabels":{"app":"podinfo"},"timestamp":"2024-01-01T00:00:00Z","value":"1500m"}]}"#;

    /// A kube client whose API server is the fake (the 1.20 test server has no aggregation
    /// layer to register an external metrics adapter with).
    fn kube_client(address: &str) -> Client {
        crate::install_crypto_provider();
        Client::try_from(kube::Config::new(address.parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn through_the_kube_client() {
        let vendor = fake::serve(&[(200, LIST)]).await;
        let provider =
            ExternalMetrics::new(kube_client(&vendor.address), None, &BTreeMap::new(), false).unwrap();
        assert_eq!(provider.address(), "the Kubernetes API");
        let value = provider
            .run_query("app/requests?labelSelector=app%3Dpodinfo%2Cenv%21%3Ddev")
            .await;
        assert_eq!(value, Ok(1.5));
        let request = vendor.request();
        assert_eq!(
            request.path,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/app/requests"
        );
        assert_eq!(request.param("labelSelector").unwrap(), "app=podinfo,env!=dev");
    }

    #[tokio::test]
    async fn through_the_kube_client_errors_name_the_metric() {
        let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;
        let vendor = fake::serve(&[(404, status)]).await;
        let provider =
            ExternalMetrics::new(kube_client(&vendor.address), None, &BTreeMap::new(), false).unwrap();
        let err = provider.is_online().await.unwrap_err();
        assert_eq!(
            err,
            QueryError::Status {
                status: 404,
                body: "external metric kube-system/dummy-metric: the server could not find the requested resource".into()
            }
        );
        assert_eq!(
            vendor.request().path,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/kube-system/dummy-metric"
        );
    }

    #[tokio::test]
    async fn with_an_address_and_token() {
        let vendor = fake::serve(&[(200, LIST), (200, r#"{"items":[]}"#), (401, "Unauthorized")]).await;
        let token = BTreeMap::from([("token".to_string(), b"sa-token\n".to_vec())]);
        let client = kube_client("http://127.0.0.1:9");
        let provider = ExternalMetrics::new(client, Some(&vendor.address), &token, false).unwrap();
        assert_eq!(provider.address(), vendor.address);
        assert_eq!(provider.run_query("requests").await, Ok(1.5));
        assert_eq!(provider.run_query("requests").await, Err(QueryError::NoValues));
        assert_eq!(provider.is_online().await.unwrap_err().category(), "QueryStatus");
        let requests = vendor.requests();
        assert_eq!(
            requests[0].path,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/requests"
        );
        assert_eq!(requests[0].query, "");
        assert_eq!(requests[0].header("authorization"), Some("Bearer sa-token"));
    }

    #[tokio::test]
    async fn a_token_without_an_address_is_refused() {
        let token = BTreeMap::from([("token".to_string(), b"t".to_vec())]);
        let err = ExternalMetrics::new(kube_client("http://127.0.0.1:9"), None, &token, false)
            .err()
            .unwrap();
        assert!(err.contains("spec.provider.address"), "{err}");
    }

    #[test]
    fn queries_parse_like_flaggers() {
        assert_eq!(
            parse_query("app/http_requests?labelSelector=service%3Dpodinfo%2Cenv%3Dprod").unwrap(),
            Query {
                namespace: "app".into(),
                metric: "http_requests".into(),
                label_selector: Some("service=podinfo,env=prod".into())
            }
        );
        assert_eq!(
            parse_query("metric").unwrap(),
            Query {
                namespace: "default".into(),
                metric: "metric".into(),
                label_selector: None
            }
        );
        assert_eq!(parse_query("/metric").unwrap().namespace, "default");
        for bad in ["a/b/c", "ns/", ""] {
            assert_eq!(parse_query(bad).unwrap_err().category(), "QueryRejected", "{bad}");
        }
    }

    #[test]
    fn quantities() {
        for (text, value) in [
            ("123", 123.0),
            ("1500m", 1.5),
            ("2k", 2000.0),
            ("1Ki", 1024.0),
            ("1.5Gi", 1.5 * 1024f64.powi(3)),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("2E", 2e18),
            ("-5", -5.0),
            ("250u", 250e-6),
        ] {
            let parsed = parse_quantity(text).unwrap_or(f64::NAN);
            assert!(
                (parsed - value).abs() <= value.abs() * 1e-12,
                "{text}: {parsed} != {value}"
            );
        }
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("m"), None);
    }

    #[test]
    fn first_item_is_the_value() {
        let body = r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1",
            "metadata":{},"items":[{"metricName":"http_requests","metricLabels":{"service":"podinfo"},
            "timestamp":"2024-01-01T00:00:00Z","value":"2500m"},{"metricName":"x","timestamp":"2024-01-01T00:00:00Z","value":"9"}]}"#;
        assert_eq!(parse_response(body), Ok(2.5));
        assert_eq!(parse_response(r#"{"items":[]}"#), Err(QueryError::NoValues));
        assert_eq!(
            parse_response(r#"{"items":[{"value":"x1"}]}"#)
                .unwrap_err()
                .category(),
            "QueryDecode"
        );
    }
}
