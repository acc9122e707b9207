//! The CloudWatch metric provider: `GetMetricData` over CloudWatch's JSON protocol, signed
//! with SigV4, for the last ten metric intervals. The query is a JSON array of
//! `MetricDataQuery` objects, as in Flagger.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use serde::Deserialize;

use super::prometheus::excerpt;
use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::sigv4::{self, Credentials};
use super::vendor::{self, Http, WINDOW_INTERVALS};

/// Flagger's `MaxDatapoints`.
pub const MAX_DATAPOINTS: u32 = 20;
const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The controller's own AWS credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN` from its environment (a Secret's `aws_*` keys take precedence).
pub fn environment() -> BTreeMap<String, Vec<u8>> {
    [
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ]
    .into_iter()
    .filter_map(|(var, key)| Some((key.to_string(), std::env::var(var).ok()?.into_bytes())))
    .collect()
}

/// CloudWatch in one region.
pub struct CloudWatch {
    http: Http,
    url: Url,
    /// `host[:port]` as sent in the Host header, which is signed.
    host: String,
    address: String,
    region: String,
    credentials: Credentials,
    window: Duration,
}

impl CloudWatch {
    /// A client for `region` (required) at `https://monitoring.<region>.amazonaws.com` or
    /// `address`. Credentials come from the Secret's `aws_access_key_id`,
    /// `aws_secret_access_key` and optional `aws_session_token`, else from `environment`.
    pub fn new(
        region: Option<&str>,
        address: Option<&str>,
        secret: &BTreeMap<String, Vec<u8>>,
        environment: &BTreeMap<String, Vec<u8>>,
        interval: Duration,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let region = region
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or("spec.provider.region is required by provider cloudwatch: set the AWS region, for example us-east-1")?;
        let default = format!("https://monitoring.{region}.amazonaws.com");
        let url = vendor::address(address, Some(&default), "cloudwatch")?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err("spec.provider.address has no host".into()),
        };
        let source = if secret.contains_key("aws_access_key_id") {
            secret
        } else {
            environment
        };
        let missing = |key: &str| {
            format!(
                "provider cloudwatch has no AWS credentials ({key}): give the controller \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put aws_access_key_id and \
                 aws_secret_access_key in the Secret of spec.provider.secretRef"
            )
        };
        let text = |key: &str| {
            source
                .get(key)
                .map(|v| String::from_utf8_lossy(v).trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let credentials = Credentials {
            access_key_id: text("aws_access_key_id").ok_or_else(|| missing("aws_access_key_id"))?,
            secret_access_key: text("aws_secret_access_key")
                .ok_or_else(|| missing("aws_secret_access_key"))?,
            session_token: text("aws_session_token"),
        };
        Ok(Self {
            http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
            address: vendor::shown(&url),
            url: vendor::join(&url, "/"),
            host,
            region: region.to_string(),
            credentials,
            window: interval * WINDOW_INTERVALS,
        })
    }

    /// POSTs a signed `GetMetricData` call; returns the status and body.
    async fn get_metric_data(&self, body: &serde_json::Value, now: i64) -> Result<(u16, String), QueryError> {
        let payload = body.to_string();
        let (amz_date, _) = sigv4::amz_date(now);
        let mut headers = vec![
            ("content-type", CONTENT_TYPE),
            ("host", self.host.as_str()),
            ("x-amz-date", amz_date.as_str()),
            ("x-amz-target", TARGET),
        ];
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token", token.as_str()));
        }
        let request = sigv4::Request {
            method: "POST",
            path: self.url.path(),
            query: &[],
            headers: &headers,
            payload: payload.as_bytes(),
        };
        let authorization =
            sigv4::authorization(&request, &self.credentials, &self.region, "monitoring", &amz_date);
        let mut builder = self.http.client().post(self.url.clone()).body(payload.clone());
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            builder = builder.header(*name, *value);
        }
        let authorization =
            vendor::secret_header(&authorization, "aws_secret_access_key").map_err(QueryError::Request)?;
        self.http
            .exchange(builder.header("authorization", authorization))
            .await
    }
}

/// CloudWatch's JSON error, `{"__type":"...#ValidationError","message":"..."}`.
fn failure(status: u16, body: &str) -> QueryError {
    let parsed: Option<(String, String)> =
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let kind = v.get("__type")?.as_str()?;
                let kind = kind.rsplit('#').next().unwrap_or(kind).to_string();
                let message = v
                    .get("message")
                    .or_else(|| v.get("Message"))
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string();
                Some((kind, message))
            });
    match parsed {
        Some((error_type, error)) => QueryError::Rejected { error_type, error },
        None => QueryError::Status {
            status,
            body: excerpt(body),
        },
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    #[serde(default)]
    metric_data_results: Vec<Result_>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Result_ {
    #[serde(default)]
    values: Vec<f64>,
}

/// The value of a `GetMetricData` answer: the first value of the first result, as Flagger
/// takes it. No result or no value is [`QueryError::NoValues`].
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let response: Response = vendor::json(body)?;
    let value = response
        .metric_data_results
        .first()
        .and_then(|r| r.values.first())
        .ok_or(QueryError::NoValues)?;
    vendor::value(*value)
}

/// The `GetMetricData` body of `query` for the window ending at `now`.
pub fn request_body(query: &str, now: i64, window: Duration) -> Result<serde_json::Value, QueryError> {
    let queries: serde_json::Value = serde_json::from_str(query).map_err(|e| QueryError::Rejected {
        error_type: "InvalidQuery".into(),
        error: format!("the query is not JSON ({e}): write a JSON array of MetricDataQuery"),
    })?;
    if !queries.is_array() {
        return Err(QueryError::Rejected {
            error_type: "InvalidQuery".into(),
            error: "the query must be a JSON array of MetricDataQuery objects".into(),
        });
    }
    Ok(serde_json::json!({
        "MetricDataQueries": queries,
        "StartTime": now - window.as_secs() as i64,
        "EndTime": now,
        "MaxDatapoints": MAX_DATAPOINTS,
    }))
}

#[async_trait]
impl MetricProvider for CloudWatch {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        let now = vendor::now_unix();
        let body = request_body(query, now, self.window)?;
        match self.get_metric_data(&body, now).await? {
            (200..=299, body) => parse_response(&body),
            (status, body) => Err(failure(status, &body)),
        }
    }

    /// Flagger's check: an empty `GetMetricData` is answered, with 200 or a 400 validation
    /// error; 403 (no `cloudwatch:GetMetricData` permission) and the like are failures.
    async fn is_online(&self) -> Result<bool, QueryError> {
        let body = serde_json::json!({"MetricDataQueries": [], "StartTime": 0, "EndTime": 0});
        match self.get_metric_data(&body, vendor::now_unix()).await? {
            (200..=299 | 400, _) => Ok(true),
            (status, body) => Err(failure(status, &body)),
        }
    }

    fn kind(&self) -> &'static str {
        "cloudwatch"
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

    const QUERY: &str = r#"[{"Id":"e1","Expression":"m1 / m2","Label":"ErrorRate"},
        {"Id":"m1","MetricStat":{"Metric":{"Namespace":"MyKubernetesApp","MetricName":"ErrorCount"},
         "Period":60,"Stat":"Sum","Unit":"Count"},"ReturnData":false}]"#;

    fn keys() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("aws_access_key_id".to_string(), b"AKIDEXAMPLE".to_vec()),
            (
                "aws_secret_access_key".to_string(),
                b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_vec(),
            ),
            ("aws_session_token".to_string(), b"session-token".to_vec()),
        ])
    }

    fn client(address: &str) -> CloudWatch {
        CloudWatch::new(
            Some("eu-west-1"),
            Some(address),
            &keys(),
            &BTreeMap::new(),
            Duration::from_secs(60),
            false,
        )
        .unwrap()
    }

    #[test]
    fn region_and_credentials_are_required() {
        let err = CloudWatch::new(
            None,
            None,
            &keys(),
            &BTreeMap::new(),
            Duration::from_secs(60),
            false,
        )
        .err()
        .unwrap();
        assert!(err.starts_with("spec.provider.region is required"), "{err}");
        let err = CloudWatch::new(
            Some("us-east-1"),
            None,
            &BTreeMap::new(),
            &BTreeMap::new(),
            Duration::from_secs(60),
            false,
        )
        .err()
        .unwrap();
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        let env = BTreeMap::from([
            ("aws_access_key_id".to_string(), b"AKID".to_vec()),
            ("aws_secret_access_key".to_string(), b"s".to_vec()),
        ]);
        let cw = CloudWatch::new(
            Some("us-east-1"),
            None,
            &BTreeMap::new(),
            &env,
            Duration::from_secs(60),
            false,
        )
        .unwrap();
        assert_eq!(cw.address(), "https://monitoring.us-east-1.amazonaws.com");
        assert_eq!(cw.host, "monitoring.us-east-1.amazonaws.com");
        assert_eq!(cw.credentials.session_token, None);
    }

    #[test]
    fn bodies_carry_the_window_and_refuse_non_arrays() {
        let body = request_body(QUERY, 1_700_000_600, Duration::from_secs(600)).unwrap();
        assert_eq!(body["StartTime"], 1_700_000_000);
        assert_eq!(body["EndTime"], 1_700_000_600);
        assert_eq!(body["MaxDatapoints"], 20);
        assert_eq!(body["MetricDataQueries"][0]["Id"], "e1");
        let err = request_body(r#"{"Id":"m1"}"#, 0, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("JSON array"), "{err}");
        assert!(request_body("nope", 0, Duration::ZERO).is_err());
    }

    #[test]
    fn first_value_of_the_first_result() {
        let body = r#"{"MetricDataResults":[{"Id":"e1","Label":"ErrorRate","StatusCode":"Complete",
            "Timestamps":[1700000540,1700000480],"Values":[0.25,0.5]}],"Messages":[]}"#;
        assert_eq!(parse_response(body), Ok(0.25));
        let empty =
            r#"{"MetricDataResults":[{"Id":"e1","StatusCode":"Complete","Timestamps":[],"Values":[]}]}"#;
        assert_eq!(parse_response(empty), Err(QueryError::NoValues));
        assert_eq!(
            parse_response(r#"{"MetricDataResults":[]}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(parse_response("<xml/>").unwrap_err().category(), "QueryDecode");
    }

    #[tokio::test]
    async fn queries_are_signed_get_metric_data_calls() {
        let answer = r#"{"MetricDataResults":[{"Id":"e1","Values":[1.5]}],"Messages":[]}"#;
        let vendor = fake::serve(&[(200, answer)]).await;
        let cw = client(&vendor.address);
        assert_eq!(cw.run_query(QUERY).await, Ok(1.5));
        let request = vendor.request();
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/"));
        assert_eq!(request.header("x-amz-target"), Some(TARGET));
        assert_eq!(request.header("content-type"), Some(CONTENT_TYPE));
        assert_eq!(request.header("x-amz-security-token"), Some("session-token"));
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        let end = body["EndTime"].as_i64().unwrap();
        assert_eq!(end - body["StartTime"].as_i64().unwrap(), 600);
        assert_eq!(body["MetricDataQueries"][1]["MetricStat"]["Stat"], "Sum");
        // The signature the fake received verifies with the same key and request.
        let amz_date = request.header("x-amz-date").unwrap();
        assert_eq!(amz_date, sigv4::amz_date(end).0);
        let host = vendor.address.trim_start_matches("http://");
        let signed = sigv4::Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &[
                ("content-type", CONTENT_TYPE),
                ("host", host),
                ("x-amz-date", amz_date),
                ("x-amz-security-token", "session-token"),
                ("x-amz-target", TARGET),
            ],
            payload: request.body.as_bytes(),
        };
        let expected = sigv4::authorization(&signed, &cw.credentials, "eu-west-1", "monitoring", amz_date);
        assert_eq!(request.header("authorization"), Some(expected.as_str()));
        assert!(expected.contains("/eu-west-1/monitoring/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "), "{expected}");
    }

    #[tokio::test]
    async fn aws_errors_are_rejections_and_is_online_accepts_400() {
        let denied = r#"{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"User is not authorized to perform: cloudwatch:GetMetricData"}"#;
        let vendor = fake::serve(&[(403, denied)]).await;
        let cw = client(&vendor.address);
        let err = cw.run_query(QUERY).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "AccessDeniedException: User is not authorized to perform: cloudwatch:GetMetricData"
        );
        assert!(cw.is_online().await.is_err());
        let invalid = r#"{"__type":"com.amazonaws.monitoring#InvalidParameterValueException","message":"The parameter MetricDataQueries must not be empty"}"#;
        let vendor = fake::serve(&[(400, invalid)]).await;
        let cw = client(&vendor.address);
        assert_eq!(cw.is_online().await, Ok(true));
        let vendor = fake::serve(&[(503, "Service Unavailable")]).await;
        let cw = client(&vendor.address);
        assert_eq!(
            cw.run_query(QUERY).await,
            Err(QueryError::Status {
                status: 503,
                body: "Service Unavailable".into()
            })
        );
    }
}
