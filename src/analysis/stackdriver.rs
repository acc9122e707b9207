//! The Stackdriver (Google Cloud Monitoring) metric provider: MQL queries over the
//! `timeSeries:query` REST method, authorized with a service-account key exchanged for an
//! OAuth token (a signed JWT posted to the key's `token_uri`), or with the GCE/GKE metadata
//! server's token when the Secret has no key.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::prometheus::excerpt;
use super::provider::{DEFAULT_TIMEOUT, MetricProvider, QueryError};
use super::vendor::{self, Http};

pub const DEFAULT_ADDRESS: &str = "https://monitoring.googleapis.com";
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";
/// The OAuth scope queries need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/monitoring.read";

/// A service-account key file's fields this provider uses.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// How an access token is obtained.
enum TokenSource {
    /// A JWT signed with the key, exchanged at `token_uri`.
    Key {
        email: String,
        key: jsonwebtoken::EncodingKey,
        key_id: Option<String>,
        token_uri: Url,
    },
    /// The metadata server of the node (Workload Identity).
    Metadata(Url),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// A Google Cloud project's Cloud Monitoring.
pub struct Stackdriver {
    http: Http,
    query_url: Url,
    address: String,
    tokens: TokenSource,
    /// The current token and when it stops being used (Unix seconds).
    cached: Mutex<Option<(String, i64)>>,
}

impl Stackdriver {
    /// A client for the Secret's `project`, with its `serviceAccountKey` (the JSON key file)
    /// or, without one, the metadata server's token. `address` replaces
    /// [`DEFAULT_ADDRESS`]; the key's `token_uri` says where tokens come from.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&BTreeMap<String, Vec<u8>>>,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let credentials = credentials.ok_or(
            "provider stackdriver needs spec.provider.secretRef: a Secret with the Google Cloud \
             `project` and, unless the controller runs with Workload Identity, `serviceAccountKey`",
        )?;
        Self::with_metadata_url(address, credentials, insecure_skip_verify, METADATA_TOKEN_URL)
    }

    /// [`Stackdriver::new`] with another metadata server (for tests).
    pub fn with_metadata_url(
        address: Option<&str>,
        credentials: &BTreeMap<String, Vec<u8>>,
        insecure_skip_verify: bool,
        metadata_url: &str,
    ) -> Result<Self, String> {
        let base = vendor::address(address, Some(DEFAULT_ADDRESS), "stackdriver")?;
        let project = vendor::credential(credentials, "project", "stackdriver")?;
        if project.contains(['/', '?', '#']) {
            return Err("the Secret key `project` must be a project id like my-project".into());
        }
        let tokens = match credentials.get("serviceAccountKey") {
            Some(key) => {
                let key: ServiceAccountKey = serde_json::from_slice(key).map_err(|e| {
                    format!(
                        "the Secret key `serviceAccountKey` is not a service-account JSON key \
                         ({}): paste the key file created with `gcloud iam service-accounts keys create`",
                        e.classify_name()
                    )
                })?;
                let token_uri = key.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
                TokenSource::Key {
                    key: jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes()).map_err(
                        |_| "the `private_key` of `serviceAccountKey` is not an RSA PEM key".to_string(),
                    )?,
                    email: key.client_email,
                    key_id: key.private_key_id,
                    token_uri: Url::parse(token_uri)
                        .map_err(|e| format!("the `token_uri` of `serviceAccountKey` is not a URL: {e}"))?,
                }
            }
            None => {
                TokenSource::Metadata(Url::parse(metadata_url).map_err(|e| format!("metadata URL: {e}"))?)
            }
        };
        Ok(Self {
            http: Http::new(insecure_skip_verify, DEFAULT_TIMEOUT)?,
            query_url: vendor::join(&base, &format!("/v3/projects/{project}/timeSeries:query")),
            address: vendor::shown(&base),
            tokens,
            cached: Mutex::new(None),
        })
    }

    /// A valid access token, fetched again a minute before it expires.
    async fn token(&self) -> Result<String, QueryError> {
        let mut cached = self.cached.lock().await;
        let now = vendor::now_unix();
        if let Some((token, _)) = cached.as_ref().filter(|(_, until)| *until > now) {
            return Ok(token.clone());
        }
        let request = match &self.tokens {
            TokenSource::Key {
                email,
                key,
                key_id,
                token_uri,
            } => {
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                header.kid = key_id.clone();
                let claims = Claims {
                    iss: email,
                    scope: SCOPE,
                    aud: token_uri.as_str(),
                    iat: now,
                    exp: now + 3600,
                };
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| QueryError::Request(format!("cannot sign the token request: {e}")))?;
                let form = format!(
                    "grant_type={}&assertion={assertion}",
                    "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                );
                self.http
                    .client()
                    .post(token_uri.clone())
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form)
            }
            TokenSource::Metadata(url) => self
                .http
                .client()
                .get(url.clone())
                .header("Metadata-Flavor", "Google"),
        };
        let body = self.http.send(request).await.map_err(|e| match e {
            QueryError::Status { status, body } => QueryError::Rejected {
                error_type: "TokenExchange".into(),
                error: format!("the OAuth token request answered HTTP {status}: {body}"),
            },
            other => other,
        })?;
        let token: Token = serde_json::from_str(&body)
            .map_err(|e| vendor::decode(format!("token answer: {}", e.classify_name()), ""))?;
        let until = now + token.expires_in.unwrap_or(3600) - 60;
        *cached = Some((token.access_token.clone(), until));
        Ok(token.access_token)
    }

    async fn query(&self, query: &str) -> Result<(u16, String), QueryError> {
        let token = self.token().await?;
        let authorization = vendor::secret_header(&format!("Bearer {token}"), "serviceAccountKey")
            .map_err(QueryError::Request)?;
        let request = self
            .http
            .client()
            .post(self.query_url.clone())
            .header("Authorization", authorization)
            .json(&serde_json::json!({ "query": query }));
        self.http.exchange(request).await
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// The kind of a JSON error without its text (which may quote the key material).
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "missing or mistyped fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Google's error body, `{"error":{"code":400,"message":"...","status":"INVALID_ARGUMENT"}}`.
fn failure(status: u16, body: &str) -> QueryError {
    let parsed = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            Some((
                error.get("status")?.as_str()?.to_string(),
                error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string(),
            ))
        });
    match parsed {
        Some((error_type, error)) => QueryError::Rejected { error_type, error },
        None => QueryError::Status {
            status,
            body: excerpt(body),
        },
    }
}

/// The value of a `timeSeries:query` answer: the first value of the first point of the first
/// series, as Flagger takes it. No series or point is [`QueryError::NoValues`].
pub fn parse_response(body: &str) -> Result<f64, QueryError> {
    let response: serde_json::Value = vendor::json(body)?;
    let value = response
        .get("timeSeriesData")
        .and_then(|d| d.get(0))
        .and_then(|s| s.get("pointData"))
        .and_then(|p| p.get(0))
        .and_then(|p| p.get("values"))
        .and_then(|v| v.get(0))
        .ok_or(QueryError::NoValues)?;
    if let Some(double) = value.get("doubleValue") {
        // Proto3 JSON writes NaN and infinities as strings.
        return match double {
            serde_json::Value::Number(n) => vendor::value(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => vendor::value(s.parse().unwrap_or(f64::NAN)),
            _ => Err(vendor::decode("`doubleValue` is not a number", body)),
        };
    }
    if let Some(int) = value.get("int64Value") {
        let text = int.as_str().map(str::to_owned).unwrap_or_else(|| int.to_string());
        return text
            .parse::<i64>()
            .map(|v| v as f64)
            .map_err(|_| vendor::decode("`int64Value` is not an integer", body));
    }
    Err(vendor::decode(
        "the point's value is neither a double nor an int64",
        body,
    ))
}

#[async_trait]
impl MetricProvider for Stackdriver {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        match self.query(query).await? {
            (200..=299, body) => parse_response(&body),
            (status, body) => Err(failure(status, &body)),
        }
    }

    /// Flagger's check: an empty query is answered with data or `INVALID_ARGUMENT`; anything
    /// else (`PERMISSION_DENIED` without the monitoring.read scope) is a failure.
    async fn is_online(&self) -> Result<bool, QueryError> {
        match self.query("").await? {
            (200..=299, _) => Ok(true),
            (status, body) => match failure(status, &body) {
                QueryError::Rejected { error_type, .. } if error_type == "INVALID_ARGUMENT" => Ok(true),
                other => Err(other),
            },
        }
    }

    fn kind(&self) -> &'static str {
        "stackdriver"
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

    const PRIVATE: &str = include_str!("../../tests/fixtures/providers/test-service-account.pem");
    const PUBLIC: &str = include_str!("../../tests/fixtures/providers/test-service-account.pub.pem");

    const SERIES: &str = r#"{"timeSeriesDescriptor":{"labelDescriptors":[{"key":"resource.project_id"}],
        "pointDescriptors":[{"key":"value.request_count","valueType":"DOUBLE","metricKind":"GAUGE"}]},
        "timeSeriesData":[{"labelValues":[{"stringValue":"p"}],"pointData":[
            {"values":[{"doubleValue":0.75}],"timeInterval":{"startTime":"2024-01-01T00:00:00Z","endTime":"2024-01-01T00:00:00Z"}},
            {"values":[{"doubleValue":0.5}],"timeInterval":{"startTime":"2023-12-31T23:59:00Z","endTime":"2023-12-31T23:59:00Z"}}]}]}"#;

    fn key_secret(token_uri: &str) -> BTreeMap<String, Vec<u8>> {
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": "my-project",
            "private_key_id": "kid-1",
            "private_key": PRIVATE,
            "client_email": "flaggit@my-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        });
        BTreeMap::from([
            ("project".to_string(), b"my-project".to_vec()),
            ("serviceAccountKey".to_string(), key.to_string().into_bytes()),
        ])
    }

    #[test]
    fn the_first_point_is_the_value() {
        assert_eq!(parse_response(SERIES), Ok(0.75));
        let int = r#"{"timeSeriesData":[{"pointData":[{"values":[{"int64Value":"12"}]}]}]}"#;
        assert_eq!(parse_response(int), Ok(12.0));
        let nan = r#"{"timeSeriesData":[{"pointData":[{"values":[{"doubleValue":"NaN"}]}]}]}"#;
        assert_eq!(parse_response(nan), Err(QueryError::NoValues));
    }

    #[test]
    fn no_series_is_no_values() {
        assert_eq!(
            parse_response(r#"{"timeSeriesDescriptor":{}}"#),
            Err(QueryError::NoValues)
        );
        assert_eq!(
            parse_response(r#"{"timeSeriesData":[{"pointData":[]}]}"#),
            Err(QueryError::NoValues)
        );
        let text = r#"{"timeSeriesData":[{"pointData":[{"values":[{"stringValue":"x"}]}]}]}"#;
        assert_eq!(parse_response(text).unwrap_err().category(), "QueryDecode");
    }

    #[test]
    fn the_secret_needs_a_project_and_a_usable_key() {
        assert!(Stackdriver::new(None, None, false).is_err());
        let err = Stackdriver::new(None, Some(&BTreeMap::new()), false)
            .err()
            .unwrap();
        assert!(err.contains("`project`"), "{err}");
        let mut creds = key_secret("http://t");
        creds.insert(
            "serviceAccountKey".into(),
            b"{\"private_key\": \"-----BEGIN secret-bits".to_vec(),
        );
        let err = Stackdriver::new(None, Some(&creds), false).err().unwrap();
        assert!(!err.contains("secret-bits"), "{err}");
        let sd = Stackdriver::new(None, Some(&key_secret("http://t")), false).unwrap();
        assert_eq!(
            sd.query_url.as_str(),
            "https://monitoring.googleapis.com/v3/projects/my-project/timeSeries:query"
        );
    }

    #[tokio::test]
    async fn the_key_is_exchanged_for_a_token_once_and_sent_with_the_query() {
        let oauth = fake::serve(&[(
            200,
            r#"{"access_token":"ya29.token","expires_in":3599,"token_type":"Bearer"}"#,
        )])
        .await;
        let monitoring = fake::serve(&[(200, SERIES)]).await;
        let token_uri = format!("{}/token", oauth.address);
        let sd = Stackdriver::new(Some(&monitoring.address), Some(&key_secret(&token_uri)), false).unwrap();
        let mql = "fetch k8s_container | metric 'kubernetes.io/container/cpu/core_usage_time' | within 5m";
        assert_eq!(sd.run_query(mql).await, Ok(0.75));
        assert_eq!(sd.run_query(mql).await, Ok(0.75));

        let exchange = oauth.request();
        assert_eq!(
            (exchange.method.as_str(), exchange.path.as_str()),
            ("POST", "/token")
        );
        assert_eq!(
            exchange.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let form = fake::Recorded {
            query: exchange.body.clone(),
            ..exchange.clone()
        };
        assert_eq!(
            form.param("grant_type").unwrap(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        );
        let jwt = form.param("assertion").unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[token_uri.as_str()]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["iss"], "flaggit@my-project.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );

        let queries = monitoring.requests();
        assert_eq!(queries.len(), 2);
        assert_eq!(queries[0].path, "/v3/projects/my-project/timeSeries:query");
        assert_eq!(queries[0].header("authorization"), Some("Bearer ya29.token"));
        let body: serde_json::Value = serde_json::from_str(&queries[0].body).unwrap();
        assert_eq!(body, serde_json::json!({ "query": mql }));
    }

    #[tokio::test]
    async fn metadata_tokens_errors_and_is_online() {
        let metadata = fake::serve(&[(200, r#"{"access_token":"meta-token","expires_in":100}"#)]).await;
        let monitoring = fake::serve(&[
            (400, r#"{"error":{"code":400,"message":"Query is empty.","status":"INVALID_ARGUMENT"}}"#),
            (403, r#"{"error":{"code":403,"message":"Permission monitoring.timeSeries.list denied","status":"PERMISSION_DENIED"}}"#),
            (502, "bad gateway"),
        ])
        .await;
        let creds = BTreeMap::from([("project".to_string(), b"p1".to_vec())]);
        let sd = Stackdriver::with_metadata_url(
            Some(&monitoring.address),
            &creds,
            false,
            &format!("{}/token", metadata.address),
        )
        .unwrap();
        assert_eq!(sd.is_online().await, Ok(true));
        assert_eq!(
            sd.run_query("fetch x").await.unwrap_err().to_string(),
            "PERMISSION_DENIED: Permission monitoring.timeSeries.list denied"
        );
        assert_eq!(
            sd.run_query("fetch x").await,
            Err(QueryError::Status {
                status: 502,
                body: "bad gateway".into()
            })
        );
        assert_eq!(metadata.request().header("metadata-flavor"), Some("Google"));
        assert_eq!(
            monitoring.requests()[1].header("authorization"),
            Some("Bearer meta-token")
        );

        let refused = fake::serve(&[(
            401,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )])
        .await;
        let sd = Stackdriver::new(
            Some(&monitoring.address),
            Some(&key_secret(&refused.address)),
            false,
        )
        .unwrap();
        let err = sd.run_query("fetch x").await.unwrap_err();
        assert!(
            err.to_string().contains("HTTP 401") && err.to_string().contains("invalid_grant"),
            "{err}"
        );
    }
}
