//! The New Relic metric provider: NRQL over the Insights query API with the account's query
//! key, over the last metric interval.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::vendor::{self, Http};

pub const DEFAULT_ADDRESS: &str = "https://insights-api.newrelic.com";
pub const ACCOUNT_ID: &str = "newrelic_account_id";
pub const QUERY_KEY: &str = "newrelic_query_key";

/// A New Relic account's Insights query API.
pub struct NewRelic {
    http: Http,
    query_url: Url,
    address: String,
    query_key: HeaderValue,
    /// The `SINCE` of every query: one metric interval, as Flagger's code does.
    since: Duration,
}

impl NewRelic {
    /// A client for `address` (default [`DEFAULT_ADDRESS`]) with the Secret's
    /// `newrelic_account_id` and `newrelic_query_key`.
    pub fn new(
        address: Option<&str>,
        credentials: &BTreeMap<String, Vec<u8>>,
        interval: Duration,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let base = vendor::address(address, Some(DEFAULT_ADDRESS), "newrelic")?;
        let account = vendor::credential(credentials, ACCOUNT_ID, "newrelic")?;
        if !account.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "the Secret key `{ACCOUNT_ID}` must be the numeric New Relic account id"
            ));
        }
        let query_key = vendor::credential(credentials, QUERY_KEY, "newrelic")?;
        Ok(Self {
            http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
            query_url: vendor::join(&base, &format!("/v1/accounts/{account}/query")),
            address: vendor::shown(&base),
            query_key: vendor::secret_header(&query_key, QUERY_KEY)?,
            since: interval,
        })
    }

    async fn nrql(&self, query: &str) -> Result<String, QueryError> {
        let nrql = format!("{} SINCE {} seconds ago", query.trim(), self.since.as_secs());
        let request = self
            .http
            .client()
            .get(vendor::with_query(&self.query_url, &[("nrql", nrql)]))
            .header("X-Query-Key", self.query_key.clone())
            .header("Accept", "application/json");
        self.http.send(request).await
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    results: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// The value of an Insights answer: `results[0].result` of a one-result answer (what an
/// arithmetic NRQL select is named). Anything else is [`QueryError::NoValues`], as in Flagger.
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let response: Response = vendor::json(body)?;
    let [result] = response.results.as_slice() else {
        return Err(QueryError::NoValues);
    };
    match result.get("result") {
        None | Some(serde_json::Value::Null) => Err(QueryError::NoValues),
        Some(serde_json::Value::Number(n)) => {
            vendor::value(n.as_f64().ok_or_else(|| vendor::decode("not a number", body))?)
        }
        Some(_) => Err(vendor::decode("`results[0].result` is not a number", body)),
    }
}

#[async_trait]
impl MetricProvider for NewRelic {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        parse_response(&self.nrql(query).await?)
    }

    /// Flagger's check: `SELECT * FROM Metric` is accepted.
    async fn is_online(&self) -> Result<bool, QueryError> {
        self.nrql("SELECT * FROM Metric").await?;
        Ok(true)
    }

    fn kind(&self) -> &'static str {
        "newrelic"
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

    fn keys() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (ACCOUNT_ID.to_string(), b"100200".to_vec()),
            (QUERY_KEY.to_string(), b"NRIQ-secret".to_vec()),
        ])
    }

    #[test]
    fn one_result_is_the_value() {
        let body = r#"{"results":[{"result":1.25}],"metadata":{"eventTypes":["Metric"]}}"#;
        assert_eq!(parse_response(body), Ok(1.25));
    }

    #[test]
    fn empty_null_or_several_results_are_no_values() {
        assert_eq!(parse_response(r#"{"results":[]}"#), Err(QueryError::NoValues));
        assert_eq!(
            parse_response(r#"{"results":[{"result":null}]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(
            parse_response(r#"{"results":[{"count":3}]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(
            parse_response(r#"{"results":[{"result":1},{"result":2}]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(
            parse_response(r#"{"results":[{"result":"x"}]}"#)
                .unwrap_err()
                .category(),
            "QueryDecode"
        );
        assert_eq!(parse_response("nope").unwrap_err().category(), "QueryDecode");
    }

    #[test]
    fn account_and_key_are_required() {
        let mut creds = keys();
        creds.remove(QUERY_KEY);
        let err = NewRelic::new(None, &creds, Duration::from_secs(60), false)
            .err()
            .unwrap();
        assert!(err.contains("`newrelic_query_key`"), "{err}");
        creds = keys();
        creds.insert(ACCOUNT_ID.into(), b"1/../x".to_vec());
        assert!(NewRelic::new(None, &creds, Duration::from_secs(60), false).is_err());
        let nr = NewRelic::new(None, &keys(), Duration::from_secs(60), false).unwrap();
        assert_eq!(
            nr.query_url.as_str(),
            "https://insights-api.newrelic.com/v1/accounts/100200/query"
        );
    }

    #[tokio::test]
    async fn queries_append_since_and_send_the_query_key() {
        let vendor = fake::serve(&[(200, r#"{"results":[{"result":0.5}]}"#)]).await;
        let nr = NewRelic::new(Some(&vendor.address), &keys(), Duration::from_secs(120), false).unwrap();
        let query = "SELECT filter(sum(x), WHERE status >= '500') / sum(x) * 100 FROM Metric\n";
        assert_eq!(nr.run_query(query).await, Ok(0.5));
        let request = vendor.request();
        assert_eq!(request.path, "/v1/accounts/100200/query");
        assert_eq!(
            request.param("nrql").unwrap(),
            "SELECT filter(sum(x), WHERE status >= '500') / sum(x) * 100 FROM Metric SINCE 120 seconds ago"
        );
        assert_eq!(request.header("x-query-key"), Some("NRIQ-secret"));
    }

    #[tokio::test]
    async fn unauthorized_and_is_online() {
        let vendor = fake::serve(&[(401, r#"{"error":"Invalid query key"}"#)]).await;
        let nr = NewRelic::new(Some(&vendor.address), &keys(), Duration::from_secs(60), false).unwrap();
        let err = nr.run_query("SELECT 1").await.unwrap_err();
        assert_eq!(err.to_string(), r#"HTTP 401: {"error":"Invalid query key"}"#);
        assert!(nr.is_online().await.is_err());
        let vendor = fake::serve(&[(200, r#"{"results":[{"events":[]}]}"#)]).await;
        let nr = NewRelic::new(Some(&vendor.address), &keys(), Duration::from_secs(60), false).unwrap();
        assert_eq!(nr.is_online().await, Ok(true));
        assert_eq!(
            vendor.request().param("nrql").unwrap(),
            "SELECT * FROM Metric SINCE 60 seconds ago"
        );
    }
}
