//! The Keptn metric provider: reads a KeptnMetric's value, or runs a Keptn Analysis and
//! turns its verdict into 1 (pass) or 0 (fail), through the Kubernetes API.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};

use super::provider::{MetricProvider, QueryError};

const GROUP: &str = "metrics.keptn.sh";
const VERSION: &str = "v1beta1";
/// How long an Analysis may take, as in Flagger.
pub const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(10);
const QUERY_FORMAT: &str = "write keptnmetric/<namespace>/<name> or \
     analysis/<namespace>/<definition>[/<duration>[/<key>=<value>;...]]";

/// A parsed keptn query. Flagger lowercases the whole query; so does this.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Metric {
        namespace: String,
        name: String,
    },
    Analysis {
        namespace: String,
        definition: String,
        /// `timeframe.recent`, default `1m`.
        duration: String,
        args: BTreeMap<String, String>,
    },
}

fn invalid(reason: &str) -> QueryError {
    QueryError::Rejected {
        error_type: "InvalidQuery".into(),
        error: format!("{reason}: {QUERY_FORMAT}"),
    }
}

/// Parses `keptnmetric/<ns>/<name>` or `analysis/<ns>/<definition>/<duration>/<k=v;k=v>`.
pub fn parse_query(query: &str) -> Result<Query, QueryError> {
    let query = query.trim().to_lowercase();
    let parts: Vec<&str> = query.split('/').collect();
    if parts.len() < 3 || parts[1].is_empty() || parts[2].is_empty() {
        return Err(invalid("the query has fewer than three parts"));
    }
    let (namespace, name) = (parts[1].to_string(), parts[2].to_string());
    match parts[0] {
        "keptnmetric" | "keptnmetrics" => Ok(Query::Metric { namespace, name }),
        "analysis" | "analyses" => Ok(Query::Analysis {
            namespace,
            definition: name,
            duration: parts
                .get(3)
                .filter(|d| !d.is_empty())
                .unwrap_or(&"1m")
                .to_string(),
            args: parts
                .get(4)
                .into_iter()
                .flat_map(|a| a.split(';'))
                .filter_map(|pair| match pair.split('=').collect::<Vec<_>>().as_slice() {
                    [k, v] => Some((k.to_string(), v.to_string())),
                    _ => None,
                })
                .collect(),
        }),
        other => Err(invalid(&format!("unknown kind `{other}`"))),
    }
}

/// Keptn in the cluster the controller runs in.
pub struct Keptn {
    client: Client,
    analysis_timeout: Duration,
    poll: Duration,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

fn kube_error(action: &str, error: kube::Error) -> QueryError {
    match error {
        kube::Error::Api(status) => QueryError::Status {
            status: status.code,
            body: format!("{action}: {}", status.message),
        },
        other => QueryError::Request(format!("{action}: {other}")),
    }
}

impl Keptn {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            analysis_timeout: ANALYSIS_TIMEOUT,
            poll: Duration::from_secs(1),
        }
    }

    /// The same provider waiting `timeout` for an Analysis, polling every `poll`.
    pub fn with_timing(mut self, timeout: Duration, poll: Duration) -> Self {
        self.analysis_timeout = timeout;
        self.poll = poll;
        self
    }

    async fn metric(&self, namespace: &str, name: &str) -> Result<f64, QueryError> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource("KeptnMetric", "keptnmetrics"),
        );
        let what = format!("KeptnMetric {namespace}/{name}");
        let metric = api
            .get_opt(name)
            .await
            .map_err(|e| kube_error(&format!("reading {what}"), e))?
            .ok_or_else(|| QueryError::Rejected {
                error_type: "NotFound".into(),
                error: format!("{what} does not exist: create it or fix the query"),
            })?;
        // No value yet: Keptn has not evaluated the metric.
        let value = metric
            .data
            .pointer("/status/value")
            .and_then(|v| v.as_str())
            .ok_or(QueryError::NoValues)?;
        value.trim().parse().map_err(|_| QueryError::Decode {
            reason: format!("the status.value of {what} is not a number"),
            body: value.to_string(),
        })
    }

    async fn analysis(
        &self,
        namespace: &str,
        definition: &str,
        duration: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<f64, QueryError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource("Analysis", "analyses"));
        let what = format!("Analysis of AnalysisDefinition {namespace}/{definition}");
        let mut analysis = DynamicObject::new("", &resource("Analysis", "analyses")).within(namespace);
        analysis.metadata.name = None;
        analysis.metadata.generate_name = Some(format!("{definition}-"));
        analysis.data = serde_json::json!({
            "spec": {
                "analysisDefinition": { "name": definition },
                "timeframe": { "recent": duration },
                "args": args,
            }
        });
        let created = api
            .create(&PostParams::default(), &analysis)
            .await
            .map_err(|e| kube_error(&format!("creating the {what}"), e))?;
        let name = created.name_any();
        let verdict = tokio::time::timeout(self.analysis_timeout, async {
            loop {
                tokio::time::sleep(self.poll).await;
                let current = api
                    .get(&name)
                    .await
                    .map_err(|e| kube_error(&format!("reading Analysis {namespace}/{name}"), e))?;
                let completed =
                    current.data.pointer("/status/state").and_then(|s| s.as_str()) == Some("Completed");
                let pass = current.data.pointer("/status/pass").and_then(|p| p.as_bool());
                if let (true, Some(pass)) = (completed, pass) {
                    return Ok(if pass { 1.0 } else { 0.0 });
                }
            }
        })
        .await
        .unwrap_or(Err(QueryError::Timeout(self.analysis_timeout)));
        if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
            tracing::warn!(namespace, analysis = %name, error = %e, "cannot delete Keptn Analysis");
        }
        verdict
    }
}

#[async_trait]
impl MetricProvider for Keptn {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        match parse_query(query)? {
            Query::Metric { namespace, name } => self.metric(&namespace, &name).await,
            Query::Analysis {
                namespace,
                definition,
                duration,
                args,
            } => self.analysis(&namespace, &definition, &duration, &args).await,
        }
    }

    /// Flagger answers true without looking; this checks that the API server serves Keptn's
    /// metrics.keptn.sh/v1beta1 group, so a missing Keptn install shows at initialization.
    async fn is_online(&self) -> Result<bool, QueryError> {
        match self
            .client
            .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == "keptnmetrics") => Ok(true),
            Ok(_) => Err(QueryError::Rejected {
                error_type: "NotFound".into(),
                error: format!("{GROUP}/{VERSION} does not serve keptnmetrics: install Keptn"),
            }),
            Err(e) => Err(kube_error(
                &format!("{GROUP}/{VERSION} is not served (is Keptn installed?)"),
                e,
            )),
        }
    }

    fn kind(&self) -> &'static str {
        "keptn"
    }

    fn address(&self) -> &str {
        "the Kubernetes API"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn metric_queries() {
        assert_eq!(
            parse_query("KeptnMetric/Podinfo/Response-Time\n").unwrap(),
            Query::Metric {
                namespace: "podinfo".into(),
                name: "response-time".into()
            }
        );
        assert_eq!(
            parse_query("keptnmetrics/ns/m").unwrap(),
            Query::Metric {
                namespace: "ns".into(),
                name: "m".into()
            }
        );
    }

    #[test]
    fn analysis_queries_default_their_duration() {
        assert_eq!(
            parse_query("analysis/ns/def").unwrap(),
            Query::Analysis {
                namespace: "ns".into(),
                definition: "def".into(),
                duration: "1m".into(),
                args: BTreeMap::new()
            }
        );
        assert_eq!(
            parse_query("analyses/ns/def/5m/workload=podinfo;bad;env=prod").unwrap(),
            Query::Analysis {
                namespace: "ns".into(),
                definition: "def".into(),
                duration: "5m".into(),
                args: BTreeMap::from([
                    ("workload".into(), "podinfo".into()),
                    ("env".into(), "prod".into())
                ])
            }
        );
    }

    #[test]
    fn malformed_queries_say_the_format() {
        for query in ["keptnmetric/ns", "pods/ns/x", "keptnmetric//x", ""] {
            let err = parse_query(query).unwrap_err();
            assert_eq!(err.category(), "QueryRejected", "{query}");
            assert!(
                err.to_string().contains("keptnmetric/<namespace>/<name>"),
                "{err}"
            );
        }
    }
}
