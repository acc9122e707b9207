//! The Graphite metric provider: render API queries (`target=...&from=...`) returning JSON,
//! with optional basic auth.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Url;
use reqwest::header::HeaderValue;

use super::prometheus::collapse_whitespace;
use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::vendor::{self, Http};

/// A Graphite (or graphite-web compatible) server.
pub struct Graphite {
    http: Http,
    render_url: Url,
    address: String,
    authorization: Option<HeaderValue>,
}

impl Graphite {
    /// A client for `address` (required). With a Secret, its `username` and `password` are
    /// sent as basic auth and both are required.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&BTreeMap<String, Vec<u8>>>,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let base = vendor::address(address, None, "graphite")?;
        let authorization = match credentials {
            Some(credentials) => {
                let user = vendor::credential(credentials, "username", "graphite")?;
                let password = vendor::credential(credentials, "password", "graphite")?;
                let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
                Some(vendor::secret_header(&basic, "password")?)
            }
            None => None,
        };
        Ok(Self {
            http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
            render_url: vendor::join(&base, "/render"),
            address: vendor::shown(&base),
            authorization,
        })
    }

    /// The render URL of `query`, a render API query string: its parameters trimmed and
    /// sorted by name (as Go's `url.Values.Encode` does), with `format=json`.
    pub fn render_url(&self, query: &str) -> Url {
        let query = collapse_whitespace(query);
        let parsed = Url::parse(&format!("http://x/render?{query}")).ok();
        let mut pairs: Vec<(String, String)> = parsed
            .iter()
            .flat_map(|u| u.query_pairs().into_owned().collect::<Vec<_>>())
            .filter(|(k, _)| k != "format")
            // A query written over several lines leaves spaces around `&`.
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        pairs.push(("format".into(), "json".into()));
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut url = self.render_url.clone();
        url.query_pairs_mut().extend_pairs(pairs);
        url
    }
}

/// The value of a render answer: the last non-null datapoint of the last target that has
/// one, as Flagger does. No datapoint with a value is [`QueryError::NoValues`].
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let targets: Vec<serde_json::Value> = vendor::json(body)?;
    let mut value = None;
    for target in &targets {
        let points = target
            .get("datapoints")
            .and_then(|p| p.as_array())
            .ok_or_else(|| vendor::decode("a target without `datapoints`", body))?;
        for point in points {
            let sample = point
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| vendor::decode("a datapoint is not [value, timestamp]", body))?;
            match &sample[0] {
                serde_json::Value::Null => {}
                serde_json::Value::Number(n) => value = n.as_f64(),
                serde_json::Value::String(s) => {
                    value = Some(
                        s.parse()
                            .map_err(|_| vendor::decode(format!("the value `{s}` is not a number"), body))?,
                    );
                }
                _ => return Err(vendor::decode("a datapoint value is not a number", body)),
            }
        }
    }
    vendor::value(value.ok_or(QueryError::NoValues)?)
}

#[async_trait]
impl MetricProvider for Graphite {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        let mut request = self.http.client().get(self.render_url(query));
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization.clone());
        }
        parse_response(&self.http.send(request).await?)
    }

    /// Flagger's check: `target=test` answers, with or without values.
    async fn is_online(&self) -> Result<bool, QueryError> {
        match self.run_query("target=test").await {
            Ok(_) | Err(QueryError::NoValues) => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn kind(&self) -> &'static str {
        "graphite"
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

    #[test]
    fn the_last_non_null_point_is_the_value() {
        let body = r#"[{"target":"a","tags":{"name":"a"},"datapoints":[[1.5,1700000000],[2.5,1700000060],[null,1700000120]]}]"#;
        assert_eq!(parse_response(body), Ok(2.5));
        let strings = r#"[{"target":"a","datapoints":[["3.25","1700000000"]]}]"#;
        assert_eq!(parse_response(strings), Ok(3.25));
    }

    #[test]
    fn no_targets_or_only_nulls_are_no_values() {
        assert_eq!(parse_response("[]"), Err(QueryError::NoValues));
        assert_eq!(
            parse_response(r#"[{"target":"a","datapoints":[[null,1]]}]"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(parse_response("{}").unwrap_err().category(), "QueryDecode");
        assert_eq!(
            parse_response(r#"[{"target":"a","datapoints":[[1]]}]"#)
                .unwrap_err()
                .category(),
            "QueryDecode"
        );
    }

    #[test]
    fn render_urls_sort_parameters_and_force_json() {
        let g = Graphite::new(Some("http://graphite:8080/web/"), None, false).unwrap();
        let url = g.render_url("target=sumSeries(app.{a,b}.errors)&from=-10min\n&format=raw");
        assert_eq!(
            url.as_str(),
            "http://graphite:8080/web/render?format=json&from=-10min&target=sumSeries%28app.%7Ba%2Cb%7D.errors%29"
        );
    }

    #[test]
    fn credentials_need_both_keys() {
        let creds = BTreeMap::from([("username".to_string(), b"u".to_vec())]);
        let err = Graphite::new(Some("http://g"), Some(&creds), false)
            .err()
            .unwrap();
        assert!(err.contains("`password`"), "{err}");
        assert!(Graphite::new(None, None, false).is_err());
    }

    #[tokio::test]
    async fn queries_send_basic_auth() {
        let body = r#"[{"target":"x","datapoints":[[7.0,1700000000]]}]"#;
        let vendor = fake::serve(&[(200, body)]).await;
        let creds = BTreeMap::from([
            ("username".to_string(), b"u".to_vec()),
            ("password".to_string(), b"p".to_vec()),
        ]);
        let g = Graphite::new(Some(&vendor.address), Some(&creds), false).unwrap();
        assert_eq!(g.run_query("target=x&from=-1min").await, Ok(7.0));
        let request = vendor.request();
        assert_eq!(request.path, "/render");
        assert_eq!(request.query, "format=json&from=-1min&target=x");
        assert_eq!(request.header("authorization"), Some("Basic dTpw"));
    }

    #[tokio::test]
    async fn is_online_accepts_no_values_but_not_errors() {
        let vendor = fake::serve(&[(200, "[]")]).await;
        let g = Graphite::new(Some(&vendor.address), None, false).unwrap();
        assert_eq!(g.is_online().await, Ok(true));
        assert_eq!(vendor.request().param("target").unwrap(), "test");
        let vendor = fake::serve(&[(500, "boom")]).await;
        let g = Graphite::new(Some(&vendor.address), None, false).unwrap();
        assert_eq!(
            g.is_online().await,
            Err(QueryError::Status {
                status: 500,
                body: "boom".into()
            })
        );
    }
}
