//! The Datadog metric provider: timeseries queries over `/api/v1/query` with the API and
//! application keys, over the last ten metric intervals.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::vendor::{self, Http, WINDOW_INTERVALS};

pub const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";
pub const API_KEY: &str = "datadog_api_key";
pub const APPLICATION_KEY: &str = "datadog_application_key";

/// A Datadog site (`https://api.datadoghq.com`, `https://api.datadoghq.eu`, ...).
pub struct Datadog {
    http: Http,
    query_url: Url,
    validate_url: Url,
    address: String,
    api_key: HeaderValue,
    application_key: HeaderValue,
    /// How far back a query reaches: ten metric intervals.
    window: Duration,
}

impl Datadog {
    /// A client for `address` (default [`DEFAULT_ADDRESS`]) with the Secret's
    /// `datadog_api_key` and `datadog_application_key`.
    pub fn new(
        address: Option<&str>,
        credentials: &BTreeMap<String, Vec<u8>>,
        interval: Duration,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let base = vendor::address(address, Some(DEFAULT_ADDRESS), "datadog")?;
        let api_key = vendor::credential(credentials, API_KEY, "datadog")?;
        let application_key = vendor::credential(credentials, APPLICATION_KEY, "datadog")?;
        Ok(Self {
            http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
            query_url: vendor::join(&base, "/api/v1/query"),
            validate_url: vendor::join(&base, "/api/v1/validate"),
            address: vendor::shown(&base),
            api_key: vendor::secret_header(&api_key, API_KEY)?,
            application_key: vendor::secret_header(&application_key, APPLICATION_KEY)?,
            window: interval * WINDOW_INTERVALS,
        })
    }

    fn get(&self, url: &Url) -> reqwest::RequestBuilder {
        self.http
            .client()
            .get(url.clone())
            .header("DD-API-KEY", self.api_key.clone())
            .header("DD-APPLICATION-KEY", self.application_key.clone())
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    series: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    pointlist: Vec<Vec<Option<f64>>>,
}

/// The value of a `/api/v1/query` answer: the first (oldest) point of the first series, as
/// Flagger does, because the newest bucket is usually incomplete. No series, no points or a
/// null value is [`QueryError::NoValues`].
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let response: Response = vendor::json(body)?;
    if response.status.as_deref() == Some("error") {
        return Err(QueryError::Rejected {
            error_type: "error".into(),
            error: response.error.unwrap_or_default(),
        });
    }
    let point = response
        .series
        .first()
        .and_then(|s| s.pointlist.first())
        .ok_or(QueryError::NoValues)?;
    match point.as_slice() {
        [_, Some(v), ..] => vendor::value(*v),
        [_, None, ..] => Err(QueryError::NoValues),
        _ => Err(vendor::decode("a point is not a [timestamp, value] pair", body)),
    }
}

#[async_trait]
impl MetricProvider for Datadog {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        let to = vendor::now_unix();
        let from = to - self.window.as_secs() as i64;
        let url = vendor::with_query(
            &self.query_url,
            &[
                ("query", query.to_string()),
                ("from", from.to_string()),
                ("to", to.to_string()),
            ],
        );
        let request = self.get(&url);
        parse_response(&self.http.send(request).await?)
    }

    /// Datadog's key validation endpoint answers 200 for valid keys.
    async fn is_online(&self) -> Result<bool, QueryError> {
        self.http.send(self.get(&self.validate_url)).await?;
        Ok(true)
    }

    fn kind(&self) -> &'static str {
        "datadog"
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
            (API_KEY.to_string(), b"api-123\n".to_vec()),
            (APPLICATION_KEY.to_string(), b"app-456".to_vec()),
        ])
    }

    const SERIES: &str = r#"{"status":"ok","res_type":"time_series","from_date":1700000000000,
        "to_date":1700000600000,"query":"avg:x{*}","series":[{"metric":"x","display_name":"x",
        "pointlist":[[1700000000000.0,12.5],[1700000060000.0,99.0]],"scope":"*","length":2}]}"#;

    #[test]
    fn the_oldest_point_of_the_first_series_is_the_value() {
        assert_eq!(parse_response(SERIES), Ok(12.5));
    }

    #[test]
    fn no_series_no_points_or_null_is_no_values() {
        assert_eq!(
            parse_response(r#"{"status":"ok","series":[]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(
            parse_response(r#"{"status":"ok","series":[{"pointlist":[]}]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(
            parse_response(r#"{"status":"ok","series":[{"pointlist":[[1,null]]}]}"#),
            Err(QueryError::NoValues)
        );
    }

    #[test]
    fn error_status_and_malformed_answers() {
        let err = parse_response(r#"{"status":"error","error":"Error parsing query: x"}"#);
        assert_eq!(err.unwrap_err().to_string(), "error: Error parsing query: x");
        assert_eq!(parse_response("{").unwrap_err().category(), "QueryDecode");
        let err = parse_response(r#"{"series":[{"pointlist":[[1]]}]}"#).unwrap_err();
        assert_eq!(err.category(), "QueryDecode");
    }

    #[test]
    fn both_keys_are_required_and_never_quoted() {
        let mut creds = keys();
        creds.remove(APPLICATION_KEY);
        let err = Datadog::new(None, &creds, Duration::from_secs(60), false)
            .err()
            .unwrap();
        assert!(err.contains("`datadog_application_key`"), "{err}");
        assert!(!err.contains("api-123"), "{err}");
        let dd = Datadog::new(None, &keys(), Duration::from_secs(60), false).unwrap();
        assert_eq!(dd.address(), DEFAULT_ADDRESS);
        assert_eq!(dd.query_url.as_str(), "https://api.datadoghq.com/api/v1/query");
    }

    #[tokio::test]
    async fn queries_send_keys_and_a_ten_interval_window() {
        let vendor = fake::serve(&[(200, SERIES)]).await;
        let dd = Datadog::new(Some(&vendor.address), &keys(), Duration::from_secs(30), false).unwrap();
        assert_eq!(dd.run_query("avg:x{env:prod} by {host}").await, Ok(12.5));
        let request = vendor.request();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/api/v1/query")
        );
        assert_eq!(request.param("query").unwrap(), "avg:x{env:prod} by {host}");
        let from: i64 = request.param("from").unwrap().parse().unwrap();
        let to: i64 = request.param("to").unwrap().parse().unwrap();
        assert_eq!(to - from, 300);
        assert!((vendor::now_unix() - to).abs() < 5);
        assert_eq!(request.header("dd-api-key"), Some("api-123"));
        assert_eq!(request.header("dd-application-key"), Some("app-456"));
    }

    #[tokio::test]
    async fn http_errors_keep_status_and_body() {
        let vendor = fake::serve(&[(403, r#"{"errors":["Forbidden"]}"#)]).await;
        let dd = Datadog::new(Some(&vendor.address), &keys(), Duration::from_secs(60), false).unwrap();
        assert_eq!(
            dd.run_query("x").await,
            Err(QueryError::Status {
                status: 403,
                body: r#"{"errors":["Forbidden"]}"#.into()
            })
        );
        assert_eq!(dd.is_online().await.unwrap_err().category(), "QueryStatus");
    }

    #[tokio::test]
    async fn is_online_validates_the_keys() {
        let vendor = fake::serve(&[(200, r#"{"valid":true}"#)]).await;
        let dd = Datadog::new(Some(&vendor.address), &keys(), Duration::from_secs(60), false).unwrap();
        assert_eq!(dd.is_online().await, Ok(true));
        let request = vendor.request();
        assert_eq!(request.path, "/api/v1/validate");
        assert_eq!(request.header("dd-api-key"), Some("api-123"));
        assert_eq!(request.header("dd-application-key"), Some("app-456"));
    }
}
