//! The Splunk Observability (SignalFx) metric provider: SignalFlow programs run over the
//! last ten metric intervals through the SignalFlow REST endpoint
//! (`/v2/signalflow/execute`, answered as server-sent events), with the org's access token.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::HeaderValue;

use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::vendor::{self, Http, WINDOW_INTERVALS};

pub const TOKEN: &str = "sf_token_key";

/// A Splunk Observability realm (`https://api.<realm>.signalfx.com`).
pub struct Splunk {
    http: Http,
    execute_url: Url,
    validate_url: Url,
    address: String,
    token: HeaderValue,
    window: Duration,
}

/// `address` with `from` host prefix replaced by `to` (`api.` <-> `stream.`).
fn swap_host(url: &Url, from: &str, to: &str) -> Url {
    let mut url = url.clone();
    if let Some(rest) = url
        .host_str()
        .and_then(|h| h.strip_prefix(from))
        .map(str::to_owned)
    {
        let _ = url.set_host(Some(&format!("{to}{rest}")));
    }
    url
}

impl Splunk {
    /// A client for `address` (required: the realm's API or stream URL; `wss://` is read as
    /// `https://`) with the Secret's `sf_token_key`.
    pub fn new(
        address: Option<&str>,
        credentials: &BTreeMap<String, Vec<u8>>,
        interval: Duration,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let address = address.map(|a| {
            let a = a.trim();
            a.strip_prefix("wss://")
                .map(|r| format!("https://{r}"))
                .or_else(|| a.strip_prefix("ws://").map(|r| format!("http://{r}")))
                .unwrap_or_else(|| a.to_string())
        });
        let base = vendor::address(address.as_deref(), None, "splunk")?;
        let token = vendor::credential(credentials, TOKEN, "splunk")?;
        let stream = swap_host(&base, "api.", "stream.");
        let api = swap_host(&base, "stream.", "api.");
        let mut validate_url = vendor::join(&api, "/v2/metric");
        validate_url.query_pairs_mut().append_pair("limit", "1");
        Ok(Self {
            http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
            execute_url: vendor::join(&stream, "/v2/signalflow/execute"),
            validate_url,
            address: vendor::shown(&api),
            token: vendor::secret_header(&token, TOKEN)?,
            window: interval * WINDOW_INTERVALS,
        })
    }
}

/// The value of a SignalFlow event stream: the last non-null datapoint. None is
/// [`QueryError::NoValues`]; datapoints of more than one time series is
/// [`QueryError::MultipleValues`] (as Flagger: aggregate the program to one series).
pub fn parse_stream(body: &str) -> Result<f64, QueryError> {
    let mut series = BTreeSet::new();
    let mut last = None;
    for event in body.replace("\r\n", "\n").split("\n\n") {
        let mut name = "message";
        let mut data = String::new();
        for line in event.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
                data.push('\n');
            }
        }
        if data.trim().is_empty() {
            continue;
        }
        let message: serde_json::Value =
            serde_json::from_str(&data).map_err(|e| vendor::decode(e.to_string(), body))?;
        match name {
            "data" => {
                for point in message
                    .get("data")
                    .and_then(|d| d.as_array())
                    .into_iter()
                    .flatten()
                {
                    let Some(value) = point.get("value").and_then(|v| v.as_f64()) else {
                        continue;
                    };
                    series.insert(point.get("tsId").map(|t| t.to_string()).unwrap_or_default());
                    last = Some(value);
                }
            }
            "error" => {
                return Err(QueryError::Rejected {
                    error_type: message
                        .get("error")
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "error".into()),
                    error: message
                        .get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            _ => {
                if message.get("event").and_then(|e| e.as_str()) == Some("CHANNEL_ABORT") {
                    return Err(QueryError::Rejected {
                        error_type: "CHANNEL_ABORT".into(),
                        error: message
                            .pointer("/abortInfo/sf_job_abortReason")
                            .and_then(|m| m.as_str())
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
            }
        }
    }
    match series.len() {
        0 => Err(QueryError::NoValues),
        1 => vendor::value(last.unwrap_or(f64::NAN)),
        n => Err(QueryError::MultipleValues(n)),
    }
}

#[async_trait]
impl MetricProvider for Splunk {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        let stop = vendor::now_unix() * 1000;
        let start = stop - self.window.as_millis() as i64;
        let request = self
            .http
            .client()
            .post(vendor::with_query(
                &self.execute_url,
                &[
                    ("start", start.to_string()),
                    ("stop", stop.to_string()),
                    ("immediate", "true".to_string()),
                ],
            ))
            .header("X-SF-Token", self.token.clone())
            .header("Content-Type", "text/plain")
            .body(query.to_string());
        parse_stream(&self.http.send(request).await?)
    }

    /// Flagger's check: listing one metric succeeds with the token.
    async fn is_online(&self) -> Result<bool, QueryError> {
        let request = self
            .http
            .client()
            .get(self.validate_url.clone())
            .header("X-SF-Token", self.token.clone());
        self.http.send(request).await?;
        Ok(true)
    }

    fn kind(&self) -> &'static str {
        "splunk"
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

    const STREAM: &str = "event: control-message\ndata: {\ndata:   \"event\" : \"STREAM_START\",\ndata:   \"timestampMs\" : 1700000000000\ndata: }\n\n\
event: metadata\ndata: {\ndata:   \"properties\" : { \"sf_metric\" : \"requests\" },\ndata:   \"tsId\" : \"AAAAAKbLc8o\"\ndata: }\n\n\
event: data\ndata: {\ndata:   \"data\" : [ {\ndata:     \"tsId\" : \"AAAAAKbLc8o\",\ndata:     \"value\" : 3.0\ndata:   } ],\ndata:   \"logicalTimestampMs\" : 1700000000000\ndata: }\n\n\
event: data\ndata: {\ndata:   \"data\" : [ {\ndata:     \"tsId\" : \"AAAAAKbLc8o\",\ndata:     \"value\" : 4.5\ndata:   } ],\ndata:   \"logicalTimestampMs\" : 1700000060000\ndata: }\n\n\
event: control-message\ndata: {\ndata:   \"event\" : \"END_OF_CHANNEL\"\ndata: }\n\n";

    fn token() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(TOKEN.to_string(), b"sf-secret".to_vec())])
    }

    #[test]
    fn the_last_datapoint_is_the_value() {
        assert_eq!(parse_stream(STREAM), Ok(4.5));
    }

    #[test]
    fn no_data_several_series_and_errors() {
        let start = "event: control-message\ndata: {\"event\":\"STREAM_START\"}\n\n";
        assert_eq!(parse_stream(start), Err(QueryError::NoValues));
        let nulls = "event: data\ndata: {\"data\":[{\"tsId\":\"a\",\"value\":null}]}\n\n";
        assert_eq!(parse_stream(nulls), Err(QueryError::NoValues));
        let two =
            "event: data\ndata: {\"data\":[{\"tsId\":\"a\",\"value\":1},{\"tsId\":\"b\",\"value\":2}]}\n\n";
        assert_eq!(parse_stream(two), Err(QueryError::MultipleValues(2)));
        let error = "event: error\ndata: {\"error\":400,\"message\":\"Unable to parse program\"}\n\n";
        assert_eq!(
            parse_stream(error).unwrap_err().to_string(),
            "400: Unable to parse program"
        );
        assert_eq!(
            parse_stream("event: data\ndata: {oops\n\n")
                .unwrap_err()
                .category(),
            "QueryDecode"
        );
    }

    #[test]
    fn addresses_map_between_api_and_stream() {
        let sp = Splunk::new(
            Some("https://api.us1.signalfx.com"),
            &token(),
            Duration::from_secs(60),
            false,
        )
        .unwrap();
        assert_eq!(
            sp.execute_url.as_str(),
            "https://stream.us1.signalfx.com/v2/signalflow/execute"
        );
        assert_eq!(
            sp.validate_url.as_str(),
            "https://api.us1.signalfx.com/v2/metric?limit=1"
        );
        let sp = Splunk::new(
            Some("wss://stream.eu0.signalfx.com"),
            &token(),
            Duration::from_secs(60),
            false,
        )
        .unwrap();
        assert_eq!(
            sp.execute_url.as_str(),
            "https://stream.eu0.signalfx.com/v2/signalflow/execute"
        );
        assert_eq!(sp.address(), "https://api.eu0.signalfx.com");
        assert!(Splunk::new(None, &token(), Duration::from_secs(60), false).is_err());
        let err = Splunk::new(
            Some("https://api.x"),
            &BTreeMap::new(),
            Duration::from_secs(60),
            false,
        )
        .err()
        .unwrap();
        assert!(err.contains("`sf_token_key`"), "{err}");
    }

    #[tokio::test]
    async fn programs_are_posted_with_window_and_token() {
        let vendor = fake::serve(&[(200, STREAM)]).await;
        let sp = Splunk::new(Some(&vendor.address), &token(), Duration::from_secs(30), false).unwrap();
        let program = "data('requests', filter=filter('service', 'podinfo')).sum().publish()";
        assert_eq!(sp.run_query(program).await, Ok(4.5));
        let request = vendor.request();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/v2/signalflow/execute")
        );
        assert_eq!(request.body, program);
        assert_eq!(request.header("x-sf-token"), Some("sf-secret"));
        assert_eq!(request.param("immediate").unwrap(), "true");
        let start: i64 = request.param("start").unwrap().parse().unwrap();
        let stop: i64 = request.param("stop").unwrap().parse().unwrap();
        assert_eq!(stop - start, 300_000);
    }

    #[tokio::test]
    async fn is_online_and_unauthorized() {
        let vendor = fake::serve(&[
            (200, r#"{"count":1,"results":[{"name":"cpu.utilization"}]}"#),
            (401, r#"{"code":401,"message":"Unauthorized"}"#),
        ])
        .await;
        let sp = Splunk::new(Some(&vendor.address), &token(), Duration::from_secs(60), false).unwrap();
        assert_eq!(sp.is_online().await, Ok(true));
        assert_eq!(sp.run_query("x").await.unwrap_err().category(), "QueryStatus");
        let requests = vendor.requests();
        assert_eq!(
            (requests[0].path.as_str(), requests[0].query.as_str()),
            ("/v2/metric", "limit=1")
        );
        assert_eq!(requests[0].header("x-sf-token"), Some("sf-secret"));
    }
}
