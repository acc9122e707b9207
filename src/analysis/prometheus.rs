//! The Prometheus metric provider: instant queries over `/api/v1/query` with bearer or basic
//! credentials and custom headers, and the parsing of Prometheus' answers to one value.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::provider::{MetricProvider, QueryError};

/// How much of an unexpected response body an error quotes.
const BODY_EXCERPT: usize = 300;

/// A Prometheus server (or anything speaking its HTTP API: Thanos, Mimir, VictoriaMetrics).
pub struct Prometheus {
    client: reqwest::Client,
    query_url: Url,
    /// The address without credentials, for messages.
    address: String,
    timeout: Duration,
}

impl Prometheus {
    /// A client for `address`. With `credentials` (a Secret's data), `token` is sent as a
    /// bearer token, else `username` and `password` as basic auth; one of them must be there.
    /// Errors say what to fix and never quote a credential.
    pub fn new(
        address: &str,
        credentials: Option<&BTreeMap<String, Vec<u8>>>,
        headers: Option<&BTreeMap<String, String>>,
        insecure_skip_verify: bool,
        timeout: Duration,
    ) -> Result<Self, String> {
        let base = Url::parse(address.trim()).map_err(|e| {
            format!(
                "spec.provider.address `{}` is not a URL ({e}): use http(s)://host:port",
                redact(address)
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "spec.provider.address `{}` must start with http:// or https://",
                redact(address)
            ));
        }
        let mut query_url = base.clone();
        let path = format!("{}/api/v1/query", base.path().trim_end_matches('/'));
        query_url.set_path(&path);
        query_url.set_query(None);

        let mut default_headers = HeaderMap::new();
        for (name, value) in headers.into_iter().flatten() {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("spec.provider.headers: `{name}` is not a valid HTTP header name"))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                format!("spec.provider.headers: the value of `{name}` is not a valid header value")
            })?;
            value.set_sensitive(true);
            default_headers.insert(header, value);
        }
        if let Some(credentials) = credentials {
            default_headers.insert(AUTHORIZATION, authorization(credentials)?);
        }

        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .default_headers(default_headers)
            .timeout(timeout)
            .tls_danger_accept_invalid_certs(insecure_skip_verify)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {}", error_chain(&e)))?;
        Ok(Self {
            client,
            query_url,
            address: redact(address),
            timeout,
        })
    }

    /// The same client with another request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The `Authorization` header for a Secret's data: `token`, else `username` + `password`.
fn authorization(credentials: &BTreeMap<String, Vec<u8>>) -> Result<HeaderValue, String> {
    let text = |key: &str| {
        credentials
            .get(key)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    };
    let value = if let Some(token) = text("token") {
        format!("Bearer {token}")
    } else {
        let (Some(user), Some(password)) = (text("username"), text("password")) else {
            return Err(
                "the Secret has neither `token` nor both `username` and `password`: add a \
                        bearer token as `token`, or basic-auth `username` and `password`"
                    .to_string(),
            );
        };
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    };
    let mut header = HeaderValue::from_str(&value).map_err(|_| {
        "the Secret's credentials contain characters not allowed in an HTTP header".to_string()
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// `address` without user information, so a URL with embedded credentials can be shown.
pub fn redact(address: &str) -> String {
    crate::redact::url(address)
}

/// An error and its causes, `a: b: c`, skipping repeats.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Collapses runs of whitespace (PromQL is often written over many lines).
pub fn collapse_whitespace(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `body` on one line, cut to [`BODY_EXCERPT`] characters, for error messages.
pub(super) fn excerpt(body: &str) -> String {
    let body = collapse_whitespace(body);
    match body.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}...", &body[..cut]),
        None => body,
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    value: (serde_json::Value, String),
}

/// The single value of a Prometheus `/api/v1/query` answer: the sample of a one-series
/// vector, or a scalar. Empty or NaN is [`QueryError::NoValues`]; several series or a range
/// vector is [`QueryError::MultipleValues`].
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let decode = |reason: String| QueryError::Decode {
        reason,
        body: excerpt(body),
    };
    let response: Response = serde_json::from_str(body).map_err(|e| decode(e.to_string()))?;
    if response.status != "success" {
        return Err(QueryError::Rejected {
            error_type: response.error_type.unwrap_or_else(|| response.status.clone()),
            error: response.error.unwrap_or_default(),
        });
    }
    let data = response.data.ok_or_else(|| decode("no `data`".into()))?;
    let sample = match data.result_type.as_str() {
        "vector" => {
            let series: Vec<Series> =
                serde_json::from_value(data.result).map_err(|e| decode(e.to_string()))?;
            match series.len() {
                0 => return Err(QueryError::NoValues),
                1 => series.into_iter().next().map(|s| s.value.1).unwrap_or_default(),
                n => return Err(QueryError::MultipleValues(n)),
            }
        }
        "scalar" => {
            let (_, value): (serde_json::Value, String) =
                serde_json::from_value(data.result).map_err(|e| decode(e.to_string()))?;
            value
        }
        "matrix" => {
            let count = data.result.as_array().map_or(0, Vec::len);
            return match count {
                0 => Err(QueryError::NoValues),
                n => Err(QueryError::MultipleValues(n.max(2))),
            };
        }
        other => return Err(decode(format!("result type `{other}` is not a number"))),
    };
    let value: f64 = sample
        .parse()
        .map_err(|_| decode(format!("sample `{sample}` is not a number")))?;
    if value.is_nan() {
        return Err(QueryError::NoValues);
    }
    Ok(value)
}

#[async_trait]
impl MetricProvider for Prometheus {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        let mut url = self.query_url.clone();
        url.query_pairs_mut()
            .append_pair("query", &collapse_whitespace(query));
        let response = self
            .client
            .get(url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.transport_error(e))?;
        if status.is_client_error() || status.is_server_error() {
            // Prometheus explains refused queries in its JSON error body: quote that.
            let body = match parse_response(&body) {
                Err(rejected @ QueryError::Rejected { .. }) => rejected.to_string(),
                _ => excerpt(&body),
            };
            return Err(QueryError::Status {
                status: status.as_u16(),
                body,
            });
        }
        parse_response(&body)
    }

    async fn is_online(&self) -> Result<bool, QueryError> {
        Ok(self.run_query("vector(1)").await? == 1.0)
    }

    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn address(&self) -> &str {
        &self.address
    }
}

impl Prometheus {
    fn transport_error(&self, error: reqwest::Error) -> QueryError {
        if error.is_timeout() {
            return QueryError::Timeout(self.timeout);
        }
        // Without the URL: it is ours to show, redacted, in the caller's message.
        QueryError::Request(error_chain(&error.without_url()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn one_series_vector_gives_its_value() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.123,"99.5"]}]}}"#;
        assert_eq!(parse_response(body), Ok(99.5));
    }

    #[test]
    fn scalar_gives_its_value() {
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1"]}}"#;
        assert_eq!(parse_response(body), Ok(1.0));
    }

    #[test]
    fn infinities_are_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#;
        assert_eq!(parse_response(body), Ok(f64::INFINITY));
    }

    #[test]
    fn empty_vector_is_no_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_response(body), Err(QueryError::NoValues));
    }

    #[test]
    fn nan_is_no_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(parse_response(body), Err(QueryError::NoValues));
    }

    #[test]
    fn several_series_are_multiple_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"2"]}]}}"#;
        assert_eq!(parse_response(body), Err(QueryError::MultipleValues(2)));
    }

    #[test]
    fn matrix_is_multiple_values() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#;
        assert_eq!(parse_response(body), Err(QueryError::MultipleValues(2)));
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(parse_response(empty), Err(QueryError::NoValues));
    }

    #[test]
    fn error_json_is_rejected_with_its_reason() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#;
        let err = parse_response(body).unwrap_err();
        assert_eq!(
            err,
            QueryError::Rejected {
                error_type: "bad_data".into(),
                error: "invalid parameter \"query\": 1:5: parse error".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "bad_data: invalid parameter \"query\": 1:5: parse error"
        );
    }

    #[test]
    fn non_json_is_a_decode_error_quoting_the_body() {
        let err = parse_response("<html>\n  502 Bad Gateway\n</html>").unwrap_err();
        assert_eq!(err.category(), "QueryDecode");
        assert!(
            err.to_string().contains("<html> 502 Bad Gateway </html>"),
            "{err}"
        );
    }

    #[test]
    fn string_results_and_bad_samples_are_decode_errors() {
        let string = r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert_eq!(parse_response(string).unwrap_err().category(), "QueryDecode");
        let bad = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#;
        assert!(parse_response(bad).unwrap_err().to_string().contains("`abc`"));
    }

    #[test]
    fn long_bodies_are_cut() {
        let err = parse_response(&"x".repeat(10_000)).unwrap_err();
        let QueryError::Decode { body, .. } = err else {
            panic!("decode error expected");
        };
        assert_eq!(body.len(), BODY_EXCERPT + 3);
    }

    #[test]
    fn whitespace_is_collapsed() {
        assert_eq!(
            collapse_whitespace("\n  sum(\n\trate(x[1m])\n  )  * 100\n"),
            "sum( rate(x[1m]) ) * 100"
        );
    }

    #[test]
    fn redaction_drops_user_information() {
        assert_eq!(redact("http://user:secret@prom:9090"), "http://prom:9090");
        assert_eq!(redact("http://prom:9090/sub/"), "http://prom:9090/sub/");
        assert_eq!(redact("http://token@prom:9090/x"), "http://prom:9090/x");
        assert!(!redact("not a url user:pw@host").contains("pw"));
    }

    #[test]
    fn the_query_path_keeps_the_address_path() {
        let p = Prometheus::new(
            "http://prom:9090/prefix/",
            None,
            None,
            false,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(p.query_url.as_str(), "http://prom:9090/prefix/api/v1/query");
        let p = Prometheus::new("https://prom", None, None, false, Duration::from_secs(1)).unwrap();
        assert_eq!(p.query_url.as_str(), "https://prom/api/v1/query");
    }

    #[test]
    fn bad_addresses_and_headers_are_refused() {
        let t = Duration::from_secs(1);
        assert!(Prometheus::new("prom:9090", None, None, false, t).is_err());
        assert!(Prometheus::new("ftp://prom", None, None, false, t).is_err());
        let headers = BTreeMap::from([("bad header".to_string(), "v".to_string())]);
        let err = Prometheus::new("http://p", None, Some(&headers), false, t)
            .err()
            .unwrap();
        assert!(err.contains("`bad header`"), "{err}");
        let headers = BTreeMap::from([("X-Key".to_string(), "line\nbreak-secret".to_string())]);
        let err = Prometheus::new("http://p", None, Some(&headers), false, t)
            .err()
            .unwrap();
        assert!(!err.contains("break-secret"), "{err}");
    }

    #[test]
    fn credentials_pick_bearer_then_basic() {
        let token = BTreeMap::from([("token".to_string(), b"t0k\n".to_vec())]);
        assert_eq!(authorization(&token).unwrap(), "Bearer t0k");
        let basic = BTreeMap::from([
            ("username".to_string(), b"u".to_vec()),
            ("password".to_string(), b"p".to_vec()),
        ]);
        assert_eq!(authorization(&basic).unwrap(), "Basic dTpw");
        assert!(authorization(&BTreeMap::new()).is_err());
    }

    /// Serves one canned HTTP answer on loopback and hands back the request it received.
    async fn serve_once(status: &str, body: &str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let handle = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (address, handle)
    }

    #[tokio::test]
    async fn queries_send_the_encoded_query_credentials_and_headers() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42"]}]}}"#;
        let (address, request) = serve_once("200 OK", body).await;
        let token = BTreeMap::from([("token".to_string(), b"s3cret".to_vec())]);
        let headers = BTreeMap::from([("X-Scope-OrgID".to_string(), "tenant-a".to_string())]);
        let p = Prometheus::new(
            &address,
            Some(&token),
            Some(&headers),
            false,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(p.run_query("sum(\n  up{job=\"a b\"}\n)").await, Ok(42.0));
        let request = request.await.unwrap().to_lowercase();
        assert!(
            request.starts_with("get /api/v1/query?query=sum%28+up%7bjob%3d%22a+b%22%7d+%29 http/1.1"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer s3cret"), "{request}");
        assert!(request.contains("x-scope-orgid: tenant-a"), "{request}");
    }

    #[tokio::test]
    async fn http_errors_carry_status_and_body_or_prometheus_reason() {
        let (address, _) = serve_once("502 Bad Gateway", "upstream down").await;
        let p = Prometheus::new(&address, None, None, false, Duration::from_secs(5)).unwrap();
        assert_eq!(
            p.run_query("up").await,
            Err(QueryError::Status {
                status: 502,
                body: "upstream down".into()
            })
        );
        let (address, _) = serve_once(
            "400 Bad Request",
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .await;
        let p = Prometheus::new(&address, None, None, false, Duration::from_secs(5)).unwrap();
        let err = p.run_query("up(").await.unwrap_err();
        assert_eq!(err.to_string(), "HTTP 400: bad_data: parse error");
    }

    #[tokio::test]
    async fn is_online_wants_one() {
        let one =
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#;
        let (address, _) = serve_once("200 OK", one).await;
        let p = Prometheus::new(&address, None, None, false, Duration::from_secs(5)).unwrap();
        assert_eq!(p.is_online().await, Ok(true));
        let two =
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}"#;
        let (address, _) = serve_once("200 OK", two).await;
        let p = Prometheus::new(&address, None, None, false, Duration::from_secs(5)).unwrap();
        assert_eq!(p.is_online().await, Ok(false));
    }

    #[tokio::test]
    async fn refused_connections_and_timeouts_are_request_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Prometheus::new(
            &format!("http://u:pw@127.0.0.1:{port}"),
            None,
            None,
            false,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(p.address(), format!("http://127.0.0.1:{port}"));
        let err = p.run_query("up").await.unwrap_err();
        assert_eq!(err.category(), "QueryRequest", "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");

        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", silent.local_addr().unwrap());
        let p = Prometheus::new(&address, None, None, false, Duration::from_secs(5))
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        assert_eq!(
            p.run_query("up").await,
            Err(QueryError::Timeout(Duration::from_millis(200)))
        );
    }
}
