//! The Dynatrace metric provider: metric selectors over `/api/v2/metrics/query` with an API
//! token, over the last ten metric intervals at resolution `Inf`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::vendor::{self, Http, WINDOW_INTERVALS};

pub const TOKEN: &str = "dynatrace_token";

/// A Dynatrace environment (`https://<environment-id>.live.dynatrace.com`).
pub struct Dynatrace {
    http: Http,
    query_url: Url,
    validate_url: Url,
    address: String,
    authorization: HeaderValue,
    window: Duration,
}

impl Dynatrace {
    /// A client for `address` (required) with the Secret's `dynatrace_token`.
    pub fn new(
        address: Option<&str>,
        credentials: &BTreeMap<String, Vec<u8>>,
        interval: Duration,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let base = vendor::address(address, None, "dynatrace")?;
        let token = vendor::credential(credentials, TOKEN, "dynatrace")?;
        let mut validate_url = vendor::join(&base, "/api/v2/metrics");
        validate_url.query_pairs_mut().append_pair("pageSize", "1");
        Ok(Self {
            http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
            query_url: vendor::join(&base, "/api/v2/metrics/query"),
            validate_url,
            address: vendor::shown(&base),
            authorization: vendor::secret_header(&format!("Api-Token {token}"), TOKEN)?,
            window: interval * WINDOW_INTERVALS,
        })
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    result: Vec<Result_>,
}

#[derive(Deserialize)]
struct Result_ {
    #[serde(default)]
    data: Vec<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    values: Vec<Option<f64>>,
}

/// The value of a metrics query answer: the first value of the last data series of the
/// first result, as Flagger takes it. Nothing there, or null, is [`QueryError::NoValues`].
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let response: Response = vendor::json(body)?;
    let value = response
        .result
        .first()
        .and_then(|r| r.data.last())
        .and_then(|d| d.values.first())
        .copied()
        .flatten()
        .ok_or(QueryError::NoValues)?;
    vendor::value(value)
}

#[async_trait]
impl MetricProvider for Dynatrace {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        let to = vendor::now_unix() * 1000;
        let from = to - self.window.as_millis() as i64;
        let request = self
            .http
            .client()
            .get(vendor::with_query(
                &self.query_url,
                &[
                    ("metricSelector", query.to_string()),
                    ("resolution", "Inf".to_string()),
                    ("from", from.to_string()),
                    ("to", to.to_string()),
                ],
            ))
            .header("Authorization", self.authorization.clone())
            .header("Accept", "application/json");
        parse_response(&self.http.send(request).await?)
    }

    /// Flagger's check: listing one metric succeeds with the token.
    async fn is_online(&self) -> Result<bool, QueryError> {
        let request = self
            .http
            .client()
            .get(self.validate_url.clone())
            .header("Authorization", self.authorization.clone());
        self.http.send(request).await?;
        Ok(true)
    }

    fn kind(&self) -> &'static str {
        "dynatrace"
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

    const ANSWER: &str = r#"{"totalCount":1,"nextPageKey":null,"resolution":"Inf","result":[
        {"metricId":"builtin:service.response.time:avg","dataPointCountRatio":0.0001,
         "dimensionCountRatio":0.0001,"data":[
            {"dimensions":["SERVICE-1"],"dimensionMap":{"dt.entity.service":"SERVICE-1"},
             "timestamps":[1700000600000],"values":[1500.0]},
            {"dimensions":["SERVICE-2"],"dimensionMap":{"dt.entity.service":"SERVICE-2"},
             "timestamps":[1700000600000],"values":[2750.5]}]}]}"#;

    fn token() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(TOKEN.to_string(), b"dt0c01.secret".to_vec())])
    }

    #[test]
    fn the_last_series_first_value_is_the_value() {
        assert_eq!(parse_response(ANSWER), Ok(2750.5));
    }

    #[test]
    fn empty_answers_are_no_values() {
        assert_eq!(parse_response(r#"{"result":[]}"#), Err(QueryError::NoValues));
        assert_eq!(
            parse_response(r#"{"result":[{"data":[]}]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(
            parse_response(r#"{"result":[{"data":[{"values":[null]}]}]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(parse_response("[").unwrap_err().category(), "QueryDecode");
    }

    #[test]
    fn address_and_token_are_required() {
        assert!(Dynatrace::new(None, &token(), Duration::from_secs(60), false).is_err());
        let err = Dynatrace::new(
            Some("https://abc.live.dynatrace.com"),
            &BTreeMap::new(),
            Duration::from_secs(60),
            false,
        )
        .err()
        .unwrap();
        assert!(err.contains("`dynatrace_token`"), "{err}");
    }

    #[tokio::test]
    async fn queries_send_selector_window_and_token() {
        let vendor = fake::serve(&[(200, ANSWER)]).await;
        let dt = Dynatrace::new(Some(&vendor.address), &token(), Duration::from_secs(60), false).unwrap();
        let selector = "builtin:service.response.time:filter(eq(\"dt.entity.service\",\"SERVICE-1\")):avg";
        assert_eq!(dt.run_query(selector).await, Ok(2750.5));
        let request = vendor.request();
        assert_eq!(request.path, "/api/v2/metrics/query");
        assert_eq!(request.param("metricSelector").unwrap(), selector);
        assert_eq!(request.param("resolution").unwrap(), "Inf");
        let from: i64 = request.param("from").unwrap().parse().unwrap();
        let to: i64 = request.param("to").unwrap().parse().unwrap();
        assert_eq!(to - from, 600_000);
        assert_eq!(request.header("authorization"), Some("Api-Token dt0c01.secret"));
    }

    #[tokio::test]
    async fn is_online_lists_one_metric_and_maps_errors() {
        let vendor = fake::serve(&[(200, r#"{"totalCount":1,"metrics":[]}"#)]).await;
        let dt = Dynatrace::new(Some(&vendor.address), &token(), Duration::from_secs(60), false).unwrap();
        assert_eq!(dt.is_online().await, Ok(true));
        let request = vendor.request();
        assert_eq!(
            (request.path.as_str(), request.query.as_str()),
            ("/api/v2/metrics", "pageSize=1")
        );
        assert_eq!(request.header("authorization"), Some("Api-Token dt0c01.secret"));
        let vendor = fake::serve(&[(
            401,
            r#"{"error":{"code":401,"message":"Token Authentication failed"}}"#,
        )])
        .await;
        let dt = Dynatrace::new(Some(&vendor.address), &token(), Duration::from_secs(60), false).unwrap();
        assert_eq!(dt.run_query("x").await.unwrap_err().category(), "QueryStatus");
        assert!(dt.is_online().await.is_err());
    }
}
