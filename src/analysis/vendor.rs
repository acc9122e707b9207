//! What the HTTP metric providers (datadog, newrelic, graphite, influxdb, dynatrace,
//! cloudwatch, stackdriver, splunk) share: address parsing, Secret keys, the HTTP client and
//! the mapping of transport failures and HTTP statuses to [`QueryError`].

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, Url};

use super::prometheus::{error_chain, excerpt, redact};
use super::provider::QueryError;

/// How many metric intervals back the windowed providers (datadog, dynatrace, cloudwatch,
/// splunk) query, as Flagger does.
pub const WINDOW_INTERVALS: u32 = 10;

/// The address of a provider: `given` (trimmed, non-empty) or the vendor's default; an
/// http(s) URL. Errors name the field and never quote user information.
pub fn address(given: Option<&str>, default: Option<&str>, kind: &str) -> Result<Url, String> {
    let text = match given.map(str::trim).filter(|a| !a.is_empty()) {
        Some(text) => text,
        None => default.ok_or_else(|| {
            format!("spec.provider.address is required by provider {kind}: set the API URL")
        })?,
    };
    let url = Url::parse(text).map_err(|e| {
        format!(
            "spec.provider.address `{}` is not a URL ({e}): use https://host[:port]",
            redact(text)
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "spec.provider.address `{}` must start with http:// or https://",
            redact(text)
        ));
    }
    Ok(url)
}

/// `base` with `path` appended to its own path (so `https://host/prefix` keeps `/prefix`).
pub fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url.set_query(None);
    url
}

/// `url` with query parameters appended (form-encoded).
pub fn with_query(url: &Url, pairs: &[(&str, String)]) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    url
}

/// The address for messages: without user information or a trailing slash.
pub fn shown(url: &Url) -> String {
    redact(url.as_str()).trim_end_matches('/').to_string()
}

/// The text of Secret key `key` (surrounding whitespace trimmed: `echo` adds a newline).
/// Errors name the key, never a value.
pub fn credential(credentials: &BTreeMap<String, Vec<u8>>, key: &str, kind: &str) -> Result<String, String> {
    credentials
        .get(key)
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!(
                "provider {kind} needs the Secret key `{key}`: add it to the Secret named in \
                 spec.provider.secretRef"
            )
        })
}

/// A header value that is never printed (reqwest hides sensitive values in Debug output).
pub fn secret_header(value: &str, key: &str) -> Result<HeaderValue, String> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| format!("the Secret key `{key}` has characters not allowed in an HTTP header"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The HTTP client of one provider, with its request timeout.
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    pub fn new(insecure_skip_verify: bool, timeout: Duration) -> Result<Self, String> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .tls_danger_accept_invalid_certs(insecure_skip_verify)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {}", error_chain(&e)))?;
        Ok(Self { client, timeout })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` and returns the body of a 2xx answer; other statuses are
    /// [`QueryError::Status`] quoting the start of the body.
    pub async fn send(&self, request: RequestBuilder) -> Result<String, QueryError> {
        let (status, body) = self.exchange(request).await?;
        if !(200..300).contains(&status) {
            return Err(QueryError::Status {
                status,
                body: excerpt(&body),
            });
        }
        Ok(body)
    }

    /// Sends `request` and returns the status and body, whatever the status.
    pub async fn exchange(&self, request: RequestBuilder) -> Result<(u16, String), QueryError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(e, self.timeout))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| transport_error(e, self.timeout))?;
        Ok((status, body))
    }
}

/// A failed exchange, without the URL (it may hold a query string with secrets in it).
pub fn transport_error(error: reqwest::Error, timeout: Duration) -> QueryError {
    if error.is_timeout() {
        return QueryError::Timeout(timeout);
    }
    QueryError::Request(error_chain(&error.without_url()))
}

/// An answer that is not what the vendor documents.
pub fn decode(reason: impl Into<String>, body: &str) -> QueryError {
    QueryError::Decode {
        reason: reason.into(),
        body: excerpt(body),
    }
}

/// Parses a JSON body into `T`, or a [`QueryError::Decode`] quoting it.
pub fn json<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, QueryError> {
    serde_json::from_str(body).map_err(|e| decode(e.to_string(), body))
}

/// NaN is no value, as in the Prometheus provider.
pub fn value(v: f64) -> Result<f64, QueryError> {
    if v.is_nan() {
        Err(QueryError::NoValues)
    } else {
        Ok(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn addresses_default_and_keep_their_path() {
        let url = address(None, Some("https://api.datadoghq.com"), "datadog").unwrap();
        assert_eq!(
            join(&url, "/api/v1/query").as_str(),
            "https://api.datadoghq.com/api/v1/query"
        );
        let url = address(Some(" http://g:8080/graphite/ "), None, "graphite").unwrap();
        assert_eq!(join(&url, "/render").as_str(), "http://g:8080/graphite/render");
        assert_eq!(shown(&url), "http://g:8080/graphite");
    }

    #[test]
    fn missing_or_bad_addresses_name_the_field() {
        let err = address(Some(""), None, "graphite").unwrap_err();
        assert!(
            err.starts_with("spec.provider.address is required by provider graphite"),
            "{err}"
        );
        let err = address(Some("ftp://u:pw@x"), None, "graphite").unwrap_err();
        assert!(err.contains("http://"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        assert!(address(Some("host:80 x"), None, "graphite").is_err());
    }

    #[test]
    fn credentials_are_trimmed_and_never_echoed() {
        let creds = BTreeMap::from([
            ("a".to_string(), b"value\n".to_vec()),
            ("blank".to_string(), b" \n".to_vec()),
        ]);
        assert_eq!(credential(&creds, "a", "datadog").unwrap(), "value");
        let err = credential(&creds, "blank", "datadog").unwrap_err();
        assert!(err.contains("`blank`") && err.contains("datadog"), "{err}");
        let err = secret_header("bad\nvalue-secret", "k").unwrap_err();
        assert!(!err.contains("value-secret"), "{err}");
    }

    #[test]
    fn nan_is_no_value() {
        assert_eq!(value(f64::NAN), Err(QueryError::NoValues));
        assert_eq!(value(2.5), Ok(2.5));
    }
}

/// A stand-in vendor API on loopback for the providers' tests: answers with canned responses
/// and records every request it receives.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub mod fake {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use reqwest::Url;

    /// One request as the vendor saw it.
    #[derive(Clone, Debug)]
    pub struct Recorded {
        pub method: String,
        pub path: String,
        pub query: String,
        pub headers: HeaderMap,
        pub body: String,
    }

    impl Recorded {
        /// A decoded query parameter.
        pub fn param(&self, key: &str) -> Option<String> {
            let url = Url::parse(&format!("http://x/?{}", self.query)).unwrap();
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        }

        pub fn header(&self, key: &str) -> Option<&str> {
            self.headers.get(key).map(|v| v.to_str().unwrap())
        }
    }

    #[derive(Clone)]
    struct Shared {
        answers: Arc<Vec<(u16, String)>>,
        requests: Arc<Mutex<Vec<Recorded>>>,
    }

    /// The running fake: its base address and what it received.
    pub struct Vendor {
        pub address: String,
        requests: Arc<Mutex<Vec<Recorded>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Vendor {
        pub fn requests(&self) -> Vec<Recorded> {
            self.requests.lock().unwrap().clone()
        }

        /// The only request received.
        pub fn request(&self) -> Recorded {
            let requests = self.requests();
            assert_eq!(requests.len(), 1, "{requests:#?}");
            requests[0].clone()
        }
    }

    impl Drop for Vendor {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Serves `answers` (status, JSON body) in order, repeating the last one.
    pub async fn serve(answers: &[(u16, &str)]) -> Vendor {
        let shared = Shared {
            answers: Arc::new(answers.iter().map(|(s, b)| (*s, b.to_string())).collect()),
            requests: Arc::default(),
        };
        let requests = shared.requests.clone();
        let router = axum::Router::new().fallback(answer).with_state(shared);
        let (addr, task) = crate::testing::serve(router).await;
        let address = format!("http://{addr}");
        Vendor {
            address,
            requests,
            task,
        }
    }

    async fn answer(State(shared): State<Shared>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let index = {
            let mut requests = shared.requests.lock().unwrap();
            requests.push(Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                headers: parts.headers.clone(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            requests.len() - 1
        };
        let (status, body) = shared
            .answers
            .get(index)
            .or(shared.answers.last())
            .cloned()
            .unwrap_or((404, String::new()));
        let content_type = if body.starts_with('{') || body.starts_with('[') {
            "application/json"
        } else {
            "text/plain"
        };
        (
            StatusCode::from_u16(status).unwrap(),
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response()
    }
}
