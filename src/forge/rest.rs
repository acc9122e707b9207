//! The HTTP side shared by the forges: one JSON request with the credentials, conditional
//! GETs, `Link: rel="next"` paging, rate-limit backoff, and the mapping of HTTP answers to
//! [`forge::Error`](super::Error). What differs between forges is a [`Transport`] (reqwest with
//! a token header for GitLab and Gitea, octocrab for GitHub, whose App tokens it renews) and a
//! [`Dialect`] (how each says "rate limited" and "refused"). Credentials are never logged,
//! printed nor put in an error.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::Value;

use super::ttl::TtlCache;
use super::{Error as ForgeError, Polled};

/// Pages followed at most for one list (100 items each): a bound, not a limit in practice.
const MAX_PAGES: usize = 100;
/// The wait when a forge limits without saying for how long.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// The statuses GitLab and Gitea refuse an action with (see [`status_error`]).
const REFUSED: &[u16] = &[405, 406, 409, 422];

/// Why a client could not be configured. Never carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the {forge} Secret has no `{key}`: set `token` to an access token")]
    ReadSecretKey { forge: &'static str, key: &'static str },
    #[error("the {forge} Secret's `{key}` is not valid: {reason}")]
    ReadSecretValue {
        forge: &'static str,
        key: &'static str,
        reason: String,
    },
    #[error("the {forge} API URL {url:?} is not valid: use {example}")]
    ParseApiUrl {
        forge: &'static str,
        url: String,
        example: &'static str,
    },
    #[error("could not build the {forge} client: {message}")]
    BuildClient { forge: &'static str, message: String },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadSecretKey { .. } => "ForgeSecretKey",
            Self::ReadSecretValue { .. } => "ForgeSecretValue",
            Self::ParseApiUrl { .. } => "ForgeApiUrl",
            Self::BuildClient { .. } => "ForgeClient",
        }
    }
}

/// The text of a Secret key: trimmed, UTF-8, not empty; None when the key is absent.
pub fn secret_text(
    forge: &'static str,
    data: &BTreeMap<String, Vec<u8>>,
    key: &'static str,
) -> Result<Option<String>, Error> {
    let Some(bytes) = data.get(key) else {
        return Ok(None);
    };
    let value = std::str::from_utf8(bytes).map_err(|_| Error::ReadSecretValue {
        forge,
        key,
        reason: "not UTF-8 text".into(),
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::ReadSecretValue {
            forge,
            key,
            reason: "empty".into(),
        });
    }
    Ok(Some(value.to_owned()))
}

/// Sends one request and gives back the answer whatever its status; a failure to get an
/// answer at all is the forge error.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, call: &Call<'_>) -> Result<Answer, ForgeError>;
}

/// How one forge's answers read where forges differ.
#[derive(Clone, Copy)]
pub struct Dialect {
    pub forge: &'static str,
    /// The statuses that refuse the action asked (not mergeable, conflicts, head changed).
    pub refused: &'static [u16],
    /// How long the forge asked to wait, when the answer (status, headers, body, the time
    /// in epoch seconds) is a rate limit.
    pub rate_limit_wait: fn(u16, &HeaderMap, &str, u64) -> Option<Duration>,
    /// The wait after a successful answer that spent the last call of the budget.
    pub spent_wait: fn(&HeaderMap, u64) -> Option<Duration>,
    /// The forge's error message in an answer's body.
    pub error_message: fn(&str) -> String,
}

impl Dialect {
    /// GitLab's and Gitea's: 429 limits, `message`/`error` bodies.
    pub const fn plain(forge: &'static str) -> Dialect {
        Dialect {
            forge,
            refused: REFUSED,
            rate_limit_wait: plain_rate_limit_wait,
            spent_wait: |_, _| None,
            error_message,
        }
    }

    /// The error for a non-success status that is not a rate limit.
    pub fn status_error(&self, action: &str, what: &str, status: u16, message: &str) -> ForgeError {
        let forge = self.forge;
        match status {
            401 | 403 => ForgeError::Unauthorized { forge, status },
            404 => ForgeError::NotFound {
                forge,
                what: what.to_owned(),
            },
            s if self.refused.contains(&s) => ForgeError::Refused {
                forge,
                action: action.to_owned(),
                message: message.to_owned(),
            },
            _ => ForgeError::Request {
                forge,
                action: action.to_owned(),
                message: format!("HTTP {status}: {message}"),
            },
        }
    }
}

fn plain_rate_limit_wait(status: u16, headers: &HeaderMap, _body: &str, now: u64) -> Option<Duration> {
    rate_limit_wait(status, headers, now)
}

/// A JSON REST client of one forge's API.
pub struct Rest {
    dialect: Dialect,
    api_url: String,
    transport: Box<dyn Transport>,
    /// Set by a rate-limit answer: every call fails fast until then.
    blocked_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("forge", &self.dialect.forge)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

/// One request to send.
pub struct Call<'a> {
    pub method: Method,
    /// What flaggit was doing, for messages (`merge the merge request`).
    pub action: &'a str,
    /// The object a 404 is about (`merge request acme/config!3`).
    pub what: &'a str,
    /// Path and query below the API URL (`/projects/acme%2Fconfig/merge_requests`).
    pub path: String,
    pub body: Option<Value>,
    pub etag: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, action: &'a str, what: &'a str, path: String) -> Self {
        Self {
            method,
            action,
            what,
            path,
            body: None,
            etag: None,
        }
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// A response that was not an error.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// The API URL when it is one: http(s) with a host.
pub fn parse_api_url(api_url: &str) -> Option<Uri> {
    let uri: Uri = api_url.parse().ok()?;
    (matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()).then_some(uri)
}

/// reqwest sending a token header on every request (GitLab, Gitea).
struct Http {
    forge: &'static str,
    http: reqwest::Client,
    api_url: String,
    auth: (HeaderName, HeaderValue),
}

#[async_trait]
impl Transport for Http {
    async fn send(&self, call: &Call<'_>) -> Result<Answer, ForgeError> {
        let url = format!("{}{}", self.api_url, call.path);
        let method = reqwest::Method::from_bytes(call.method.as_str().as_bytes())
            .expect("an HTTP method is a valid method");
        let mut request = self
            .http
            .request(method, url)
            .header(self.auth.0.clone(), self.auth.1.clone())
            .header("accept", "application/json");
        if let Some(etag) = call.etag {
            request = request.header("if-none-match", etag);
        }
        if let Some(body) = &call.body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let transport = |e: reqwest::Error| ForgeError::Request {
            forge: self.forge,
            action: call.action.to_owned(),
            // reqwest's message names the URL, which holds no credentials here.
            message: crate::redact::text(&e.to_string()),
        };
        let response = request.send().await.map_err(transport)?;
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_str().as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.append(name, value);
            }
        }
        let body = response.text().await.map_err(transport)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl Rest {
    /// A client for `api_url` (`https://gitlab.com/api/v4`, `https://gitea.example.com/api/v1`)
    /// sending `auth` (`PRIVATE-TOKEN: ...`, `Authorization: token ...`) on every request.
    pub fn new(
        forge: &'static str,
        example: &'static str,
        api_url: &str,
        auth_name: &'static str,
        auth_value: &str,
    ) -> Result<Rest, Error> {
        let api_url = api_url.trim().trim_end_matches('/');
        if parse_api_url(api_url).is_none() {
            return Err(Error::ParseApiUrl {
                forge,
                url: crate::redact::url(api_url),
                example,
            });
        }
        let mut value = HeaderValue::from_str(auth_value).map_err(|_| Error::ReadSecretValue {
            forge,
            key: "token",
            reason: "not a valid HTTP header value".into(),
        })?;
        value.set_sensitive(true);
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("flaggit/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::BuildClient {
                forge,
                message: e.to_string(),
            })?;
        let transport = Http {
            forge,
            http,
            api_url: api_url.to_owned(),
            auth: (HeaderName::from_static(auth_name), value),
        };
        Ok(Rest::with_transport(Dialect::plain(forge), api_url, transport))
    }

    /// A client for `api_url` that sends its requests through `transport`.
    pub fn with_transport(dialect: Dialect, api_url: &str, transport: impl Transport + 'static) -> Rest {
        Rest {
            dialect,
            api_url: api_url.to_owned(),
            transport: Box::new(transport),
            blocked_until: Mutex::new(None),
        }
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The forge's name, for messages.
    pub fn forge(&self) -> &'static str {
        self.dialect.forge
    }

    /// How long calls still fail fast after a rate-limit answer; None when they go out.
    pub fn rate_limited_for(&self) -> Option<Duration> {
        let until = (*self.blocked_until.lock().unwrap_or_else(PoisonError::into_inner))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    fn block_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut blocked = self.blocked_until.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.is_none_or(|b| b < until) {
            *blocked = Some(until);
        }
    }

    /// One request: fails fast while rate-limited, maps every failure to a forge error.
    pub async fn call(&self, call: Call<'_>) -> Result<Answer, ForgeError> {
        let (action, what) = (call.action, call.what);
        let answer = self.exchange(call).await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_MODIFIED {
            return Ok(answer);
        }
        Err(self.dialect.status_error(
            action,
            what,
            answer.status.as_u16(),
            &(self.dialect.error_message)(&answer.body),
        ))
    }

    /// One request whose answer is returned whatever its status, but for a rate limit (which
    /// blocks the client for the wait asked) and a failure to get an answer at all.
    pub async fn exchange(&self, call: Call<'_>) -> Result<Answer, ForgeError> {
        let forge = self.dialect.forge;
        if let Some(retry_after) = self.rate_limited_for() {
            return Err(ForgeError::RateLimited { forge, retry_after });
        }
        let answer = self.transport.send(&call).await?;
        let now = unix_now();
        let status = answer.status;
        if let Some(wait) =
            (self.dialect.rate_limit_wait)(status.as_u16(), &answer.headers, &answer.body, now)
        {
            tracing::warn!(
                forge,
                action = call.action,
                wait_seconds = wait.as_secs(),
                "forge rate limit"
            );
            self.block_for(wait);
            return Err(ForgeError::RateLimited {
                forge,
                retry_after: wait,
            });
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            // The budget is spent: the next call would be refused, so do not send it.
            if let Some(wait) = (self.dialect.spent_wait)(&answer.headers, now) {
                self.block_for(wait);
            }
        }
        Ok(answer)
    }

    pub async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        action: &str,
        what: &str,
        path: String,
    ) -> Result<T, ForgeError> {
        let answer = self.call(Call::new(Method::GET, action, what, path)).await?;
        decode(self.dialect.forge, action, &answer.body)
    }

    pub async fn send_json(
        &self,
        method: Method,
        action: &str,
        what: &str,
        path: String,
        body: Value,
    ) -> Result<Answer, ForgeError> {
        self.call(Call::new(method, action, what, path).json(body)).await
    }

    /// The login of the token's user (`GET /user`), kept in `known` once asked. None when
    /// the token has no user (a GitHub App's installation token, a GitLab token without the
    /// `read_user` scope): flaggit then relies on what it recorded before merging or closing.
    pub async fn token_login<U: for<'de> Deserialize<'de>>(
        &self,
        known: &TtlCache<(), Option<String>>,
        login: fn(U) -> String,
    ) -> Result<Option<String>, ForgeError> {
        if let Some(known) = known.get(&()) {
            return Ok(known);
        }
        let user = match self
            .get_json::<U>("read the token's user", "the authenticated user", "/user".into())
            .await
        {
            Ok(user) => Some(login(user)),
            Err(ForgeError::Unauthorized { .. } | ForgeError::NotFound { .. }) => None,
            Err(error) => return Err(error),
        };
        known.put((), user.clone());
        Ok(user)
    }

    /// Every item of a paged list, every page read (an unconditional [`Rest::get_all`]).
    pub async fn list<T: for<'de> Deserialize<'de>>(
        &self,
        action: &str,
        what: &str,
        path: String,
    ) -> Result<Vec<T>, ForgeError> {
        match self.get_all(action, what, path, None, |_: &[T]| false).await? {
            Polled::Changed { value, .. } => Ok(value),
            // Only an ETag asked for gets this answer.
            Polled::NotModified => Ok(Vec::new()),
        }
    }

    /// Every item of a paged list, following `Link: rel="next"` (GitHub, GitLab and Gitea
    /// send it), or until `enough` says the items so far suffice. Returns the first page's
    /// ETag only when the list fit in one page: a page's ETag says nothing of the others.
    pub async fn get_all<T: for<'de> Deserialize<'de>>(
        &self,
        action: &str,
        what: &str,
        path: String,
        etag: Option<&str>,
        enough: impl Fn(&[T]) -> bool,
    ) -> Result<Polled<Vec<T>>, ForgeError> {
        let forge = self.dialect.forge;
        let mut call = Call::new(Method::GET, action, what, path);
        call.etag = etag;
        let first = self.call(call).await?;
        if first.status == StatusCode::NOT_MODIFIED {
            return Ok(Polled::NotModified);
        }
        let mut etag = first
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut items: Vec<T> = decode(forge, action, &first.body)?;
        let mut next = next_page(&first.headers, &self.api_url);
        let mut pages = 1;
        while let Some(path) = next {
            if enough(&items) {
                etag = None;
                break;
            }
            if pages >= MAX_PAGES {
                return Err(ForgeError::Decode {
                    forge,
                    action: action.to_owned(),
                    message: format!("more than {MAX_PAGES} pages"),
                });
            }
            etag = None;
            let page = self.call(Call::new(Method::GET, action, what, path)).await?;
            items.extend(decode::<Vec<T>>(forge, action, &page.body)?);
            next = next_page(&page.headers, &self.api_url);
            pages += 1;
        }
        Ok(Polled::Changed { value: items, etag })
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// How long the forge asked to wait, when the answer is a rate limit: a 429 with
/// `Retry-After` (seconds), else until `RateLimit-Reset` (GitLab, epoch seconds), else a
/// minute. Gitea and GitLab answer 429 for limits, never 403.
pub fn rate_limit_wait(status: u16, headers: &HeaderMap, now: u64) -> Option<Duration> {
    if status != 429 {
        return None;
    }
    if let Some(secs) = header(headers, "retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs.max(1)));
    }
    if let Some(reset) = header(headers, "ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    Some(DEFAULT_RATE_LIMIT_WAIT)
}

/// The forge's error message: GitLab's `message` (a string, or field → messages) or
/// `error`, Gitea's `message`; else the start of the body.
pub fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.chars().take(200).collect();
    };
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Value::Object(fields) => Some(
                fields
                    .iter()
                    .map(|(k, v)| match v {
                        Value::Array(items) => format!(
                            "{k} {}",
                            items
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        other => format!("{k} {}", other.as_str().unwrap_or_default()),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => None,
        }
    };
    value
        .get("message")
        .and_then(text)
        .or_else(|| value.get("error").and_then(text))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// The error for a non-success status that is not a rate limit. GitLab refuses a merge with
/// 405 (not mergeable), 406 (conflicts) or 409 (head changed); Gitea with 405 or 409.
pub fn status_error(forge: &'static str, action: &str, what: &str, status: u16, message: &str) -> ForgeError {
    Dialect::plain(forge).status_error(action, what, status, message)
}

pub fn decode<T: for<'de> Deserialize<'de>>(
    forge: &'static str,
    action: &str,
    body: &str,
) -> Result<T, ForgeError> {
    serde_json::from_str(body).map_err(|e| ForgeError::Decode {
        forge,
        action: action.to_owned(),
        message: e.to_string(),
    })
}

/// The path and query, below the API URL, of the `rel="next"` link: the token goes to the
/// configured API and nowhere else, so a link elsewhere is not followed.
pub fn next_page(headers: &HeaderMap, api_url: &str) -> Option<String> {
    let link = header(headers, "link")?;
    let api: Uri = api_url.parse().ok()?;
    let prefix = api.path().trim_end_matches('/');
    link.split(',').find_map(|part| {
        let (url, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        if !is_next {
            return None;
        }
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        let uri: Uri = url.parse().ok()?;
        if uri.authority().is_some() && uri.authority() != api.authority() {
            return None;
        }
        let path = uri.path_and_query()?.as_str();
        Some(path.strip_prefix(prefix).unwrap_or(path).to_owned())
    })
}

/// Percent-encodes a path segment or query value (`acme/config` → `acme%2Fconfig`, the
/// form GitLab takes for a project path).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Constant-time equality of two secrets (the time depends on the length only).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn limits_wait_as_the_forge_says() {
        assert_eq!(
            rate_limit_wait(429, &headers(&[("retry-after", "7")]), 0),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(429, &headers(&[("ratelimit-reset", "1000")]), 940),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate_limit_wait(429, &headers(&[("ratelimit-reset", "10")]), 940),
            Some(Duration::from_secs(1)),
            "a reset already past waits a second, never zero"
        );
        assert_eq!(
            rate_limit_wait(429, &HeaderMap::new(), 0),
            Some(DEFAULT_RATE_LIMIT_WAIT)
        );
        assert_eq!(rate_limit_wait(403, &headers(&[("retry-after", "7")]), 0), None);
    }

    #[test]
    fn statuses_map_to_forge_errors() {
        assert_eq!(
            status_error("gitlab", "merge", "mr", 401, "401 Unauthorized"),
            ForgeError::Unauthorized {
                forge: "gitlab",
                status: 401
            }
        );
        assert_eq!(
            status_error("gitea", "read", "x", 404, "").category(),
            "ForgeNotFound"
        );
        for status in [405, 406, 409, 422] {
            assert_eq!(
                status_error("gitlab", "merge", "mr", status, "Branch cannot be merged").category(),
                "ForgeRefused",
                "{status}"
            );
        }
        let e = status_error("gitea", "merge", "pr", 500, "boom");
        assert!(e.to_string().contains("HTTP 500"), "{e}");
    }

    #[test]
    fn error_messages_of_both_forges() {
        assert_eq!(
            error_message(r#"{"message":"405 Method Not Allowed"}"#),
            "405 Method Not Allowed"
        );
        assert_eq!(
            error_message(r#"{"message":{"source_branch":["is invalid"]}}"#),
            "source_branch is invalid"
        );
        assert_eq!(
            error_message(
                r#"{"message":["Another open merge request already exists for this source branch: !1"]}"#
            ),
            "Another open merge request already exists for this source branch: !1"
        );
        assert_eq!(
            error_message(r#"{"error":"insufficient_scope"}"#),
            "insufficient_scope"
        );
        assert_eq!(
            error_message(
                r#"{"message":"Please try again later","url":"https://gitea.example.com/api/swagger"}"#
            ),
            "Please try again later"
        );
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn next_links_stay_on_the_configured_api() {
        let h = headers(&[(
            "link",
            "<https://gitlab.example.com/api/v4/projects/1/merge_requests/2/notes?page=2&per_page=100>; rel=\"next\", \
             <https://gitlab.example.com/api/v4/projects/1/merge_requests/2/notes?page=1&per_page=100>; rel=\"first\"",
        )]);
        assert_eq!(
            next_page(&h, "https://gitlab.example.com/api/v4").as_deref(),
            Some("/projects/1/merge_requests/2/notes?page=2&per_page=100")
        );
        // A link to another host would carry the token elsewhere: not followed.
        assert_eq!(next_page(&h, "https://gitlab.com/api/v4"), None);
        let last = headers(&[("link", "<https://g/api/v1/x?page=1>; rel=\"prev\"")]);
        assert_eq!(next_page(&last, "https://g/api/v1"), None);
        assert_eq!(next_page(&HeaderMap::new(), "https://g/api/v1"), None);
    }

    #[test]
    fn project_paths_are_percent_encoded() {
        assert_eq!(enc("acme/platform/config"), "acme%2Fplatform%2Fconfig");
        assert_eq!(enc("flaggit/ns/podinfo/x"), "flaggit%2Fns%2Fpodinfo%2Fx");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"", b"x"));
    }

    #[test]
    fn api_urls_must_be_http_with_a_host_and_tokens_never_show() {
        for bad in ["gitlab.com/api/v4", "ftp://x/api", "not a url"] {
            let e =
                Rest::new("gitlab", "https://gitlab.com/api/v4", bad, "private-token", "t").expect_err(bad);
            assert_eq!(e.category(), "ForgeApiUrl", "{bad}");
        }
        let rest = Rest::new(
            "gitea",
            "https://gitea.example.com/api/v1",
            "https://gitea.example.com/api/v1/",
            "authorization",
            "token s3cret-t0ken",
        )
        .expect("client");
        assert_eq!(rest.api_url(), "https://gitea.example.com/api/v1");
        assert!(!format!("{rest:?}").contains("s3cret"));
        let e = Rest::new(
            "gitlab",
            "x",
            "https://gitlab.com/api/v4",
            "private-token",
            "bad\ntoken",
        )
        .expect_err("newline");
        assert!(!e.to_string().contains("bad"), "{e}");
    }
}
