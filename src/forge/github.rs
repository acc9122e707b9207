//! GitHub and GitHub Enterprise as a [`Forge`]: release pull requests, their comments,
//! reviews and reactions, and who may approve, over octocrab's raw requests (its typed API
//! cannot send `If-None-Match` nor show rate-limit headers). Owns the mapping of GitHub's
//! answers to [`forge::Error`](super::Error), the rate-limit backoff and the permission cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use jiff::Timestamp;
use octocrab::Octocrab;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Account, Comment, Error as ForgeError, Forge, MergeMethod, NewPullRequest, OpenPullRequest, Permission,
    Polled, PullRequest, PullRequestState, Reaction, RepoId, Review, ReviewState,
};

/// The public GitHub API; GitHub Enterprise Server answers on `https://<host>/api/v3`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// How long a permission answer is reused: a burst of comments costs one call.
pub const DEFAULT_PERMISSION_TTL: Duration = Duration::from_secs(60);
/// GitHub's advice when it limits without saying for how long (secondary rate limits).
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Pages followed at most for one list (100 items each): a bound, not a limit in practice.
const MAX_PAGES: usize = 100;
const FORGE: &str = "github";

/// Why a GitHub client could not be configured. Never carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the forge Secret has no `{key}`: set `token` (or `password`) for a token, or \
         `githubAppID`, `githubAppInstallationID` and `githubAppPrivateKey` for a GitHub App"
    )]
    ReadSecretKey { key: &'static str },
    #[error("the forge Secret's `{key}` is not valid: {reason}")]
    ReadSecretValue { key: &'static str, reason: String },
    #[error("the GitHub API URL {url:?} is not valid: use https://api.github.com or https://<host>/api/v3")]
    ParseApiUrl { url: String },
    #[error("the GitHub App private key is not an RSA key in PEM form: check githubAppPrivateKey")]
    ParsePrivateKey,
    #[error("could not build the GitHub client: {message}")]
    BuildClient { message: String },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadSecretKey { .. } => "GitHubSecretKey",
            Self::ReadSecretValue { .. } => "GitHubSecretValue",
            Self::ParseApiUrl { .. } => "GitHubApiUrl",
            Self::ParsePrivateKey => "GitHubPrivateKey",
            Self::BuildClient { .. } => "GitHubClient",
        }
    }
}

/// How the controller signs in to GitHub. `Debug` never shows the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub enum GitHubAuth {
    /// A personal access token (classic or fine-grained) or any bearer token.
    Token(String),
    /// A GitHub App installation: the app's JWT is exchanged for installation tokens,
    /// renewed before they expire.
    App {
        app_id: u64,
        installation_id: u64,
        private_key_pem: String,
    },
}

impl std::fmt::Debug for GitHubAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .field("private_key_pem", &"<redacted>")
                .finish(),
        }
    }
}

impl GitHubAuth {
    /// Reads a Secret's data: `token` (or `password`, as in a Git basic-auth Secret), else a
    /// GitHub App under Flux's key names `githubAppID`, `githubAppInstallationID`,
    /// `githubAppPrivateKey`.
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<GitHubAuth, Error> {
        let text = |key: &'static str| -> Result<Option<String>, Error> {
            match data.get(key) {
                None => Ok(None),
                Some(bytes) => {
                    let value = std::str::from_utf8(bytes).map_err(|_| Error::ReadSecretValue {
                        key,
                        reason: "not UTF-8 text".into(),
                    })?;
                    let value = value.trim();
                    if value.is_empty() {
                        return Err(Error::ReadSecretValue {
                            key,
                            reason: "empty".into(),
                        });
                    }
                    Ok(Some(value.to_owned()))
                }
            }
        };
        for key in ["token", "password"] {
            if let Some(token) = text(key)? {
                return Ok(GitHubAuth::Token(token));
            }
        }
        let Some(app_id) = text("githubAppID")? else {
            // Neither shape: name the token key, the common case.
            return Err(Error::ReadSecretKey { key: "token" });
        };
        let number = |key: &'static str, value: String| {
            value.parse::<u64>().map_err(|_| Error::ReadSecretValue {
                key,
                reason: "not a number".into(),
            })
        };
        let app_id = number("githubAppID", app_id)?;
        let installation_id = text("githubAppInstallationID")?.ok_or(Error::ReadSecretKey {
            key: "githubAppInstallationID",
        })?;
        let installation_id = number("githubAppInstallationID", installation_id)?;
        let private_key_pem = text("githubAppPrivateKey")?.ok_or(Error::ReadSecretKey {
            key: "githubAppPrivateKey",
        })?;
        Ok(GitHubAuth::App {
            app_id,
            installation_id,
            private_key_pem,
        })
    }
}

/// Permission answers by (repository, lowercase login), with when they were given.
type PermissionCache = HashMap<(RepoId, String), (Instant, Option<Permission>)>;

/// A GitHub (or GitHub Enterprise) API client for release pull requests.
pub struct GitHub {
    crab: Octocrab,
    api_url: String,
    permission_ttl: Duration,
    permissions: Mutex<PermissionCache>,
    /// Held while a permission is looked up: concurrent misses wait for one answer.
    permission_lookup: tokio::sync::Mutex<()>,
    /// Set by a rate-limit answer: every call fails fast until then.
    blocked_until: Mutex<Option<Instant>>,
    /// The token's login once asked (None inside: the token has no user).
    own_login: Mutex<Option<Option<String>>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// A client for the API at `api_url` ([`DEFAULT_API_URL`], or `https://host/api/v3` for
    /// GitHub Enterprise). Needs a Tokio runtime.
    pub fn new(api_url: &str, auth: GitHubAuth) -> Result<GitHub, Error> {
        let api_url = api_url.trim_end_matches('/');
        let uri: Uri = api_url.parse().map_err(|_| Error::ParseApiUrl {
            url: api_url.to_owned(),
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(Error::ParseApiUrl {
                url: api_url.to_owned(),
            });
        }
        // octocrab's client spawns its buffer task on the current runtime (it panics without).
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::BuildClient {
                message: "no Tokio runtime: create the client inside the controller's runtime".into(),
            });
        }
        let build_error = |e: octocrab::Error| Error::BuildClient {
            message: e.to_string(),
        };
        let builder = Octocrab::builder()
            .base_uri(uri)
            .map_err(|_| Error::ParseApiUrl {
                url: api_url.to_owned(),
            })?
            // No automatic retries: octocrab's would resend a rate-limited call at once;
            // the controller retries on its own schedule, after the wait GitHub asked for.
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            .set_write_timeout(Some(Duration::from_secs(30)));
        let crab = match auth {
            GitHubAuth::Token(token) => builder.personal_token(token).build().map_err(build_error)?,
            GitHubAuth::App {
                app_id,
                installation_id,
                private_key_pem,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
                    .map_err(|_| Error::ParsePrivateKey)?;
                builder
                    .app(octocrab::models::AppId(app_id), key)
                    .build()
                    .map_err(build_error)?
                    .installation(octocrab::models::InstallationId(installation_id))
                    .map_err(build_error)?
            }
        };
        Ok(GitHub {
            crab,
            api_url: api_url.to_owned(),
            permission_ttl: DEFAULT_PERMISSION_TTL,
            permissions: Mutex::new(HashMap::new()),
            permission_lookup: tokio::sync::Mutex::new(()),
            blocked_until: Mutex::new(None),
            own_login: Mutex::new(None),
        })
    }

    /// How long a permission answer is reused (default [`DEFAULT_PERMISSION_TTL`]).
    pub fn with_permission_ttl(mut self, ttl: Duration) -> GitHub {
        self.permission_ttl = ttl;
        self
    }

    /// The API URL this client talks to.
    pub fn api_url(&self) -> &str {
        &self.api_url
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
    /// `what` names the object for a not-found message.
    async fn call(&self, req: Call<'_>) -> Result<Answer, ForgeError> {
        if let Some(retry_after) = self.rate_limited_for() {
            return Err(ForgeError::RateLimited {
                forge: FORGE,
                retry_after,
            });
        }
        let transport = |e: octocrab::Error| transport_error(req.action, e);
        let path = req.path.as_str();
        let response = match req.method {
            Method::GET => {
                let headers = req
                    .etag
                    .and_then(|etag| HeaderValue::from_str(etag).ok())
                    .map(|etag| {
                        let mut headers = HeaderMap::new();
                        headers.insert(axum::http::header::IF_NONE_MATCH, etag);
                        headers
                    });
                self.crab._get_with_headers(path, headers).await
            }
            Method::POST => self.crab._post(path, req.body.as_ref()).await,
            Method::PATCH => self.crab._patch(path, req.body.as_ref()).await,
            Method::PUT => self.crab._put(path, req.body.as_ref()).await,
            _ => self.crab._delete(path, req.body.as_ref()).await,
        }
        .map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self.crab.body_to_string(response).await.map_err(transport)?;
        let now = unix_now();
        if let Some(wait) = rate_limit_wait(status.as_u16(), &headers, &error_message(&body), now) {
            tracing::warn!(
                action = req.action,
                wait_seconds = wait.as_secs(),
                "GitHub rate limit"
            );
            self.block_for(wait);
            return Err(ForgeError::RateLimited {
                forge: FORGE,
                retry_after: wait,
            });
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            // The budget is spent: the next call would be refused, so do not send it.
            if let Some(wait) = exhausted_wait(&headers, now) {
                self.block_for(wait);
            }
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        Err(status_error(
            req.action,
            req.what,
            status.as_u16(),
            &error_message(&body),
        ))
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        action: &str,
        what: &str,
        path: String,
    ) -> Result<T, ForgeError> {
        let answer = self.call(Call::new(Method::GET, action, what, path)).await?;
        decode(action, &answer.body)
    }

    /// Every item of a paged list, following `Link: rel="next"`. Returns the first page's
    /// ETag only when the list fit in one page: a page's ETag says nothing of the others.
    async fn get_all<T: for<'de> Deserialize<'de>>(
        &self,
        action: &str,
        what: &str,
        path: String,
        etag: Option<&str>,
    ) -> Result<Polled<Vec<T>>, ForgeError> {
        let mut call = Call::new(Method::GET, action, what, path);
        call.etag = etag;
        let first = self.call(call).await?;
        if first.status == StatusCode::NOT_MODIFIED {
            return Ok(Polled::NotModified);
        }
        let mut etag = first
            .headers
            .get(axum::http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut items: Vec<T> = decode(action, &first.body)?;
        let mut next = next_page(&first.headers);
        let mut pages = 1;
        while let Some(path) = next {
            if pages >= MAX_PAGES {
                return Err(ForgeError::Decode {
                    forge: FORGE,
                    action: action.to_owned(),
                    message: format!("more than {MAX_PAGES} pages"),
                });
            }
            etag = None;
            let page = self.call(Call::new(Method::GET, action, what, path)).await?;
            items.extend(decode::<Vec<T>>(action, &page.body)?);
            next = next_page(&page.headers);
            pages += 1;
        }
        Ok(Polled::Changed { value: items, etag })
    }

    async fn send_json(
        &self,
        method: Method,
        action: &str,
        what: &str,
        path: String,
        body: Value,
    ) -> Result<Answer, ForgeError> {
        let mut call = Call::new(method, action, what, path);
        call.body = Some(body);
        self.call(call).await
    }
}

/// One request to send.
struct Call<'a> {
    method: Method,
    action: &'a str,
    what: &'a str,
    path: String,
    body: Option<Value>,
    etag: Option<&'a str>,
}

impl<'a> Call<'a> {
    fn new(method: Method, action: &'a str, what: &'a str, path: String) -> Self {
        Self {
            method,
            action,
            what,
            path,
            body: None,
            etag: None,
        }
    }
}

/// A response that was not an error.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// How long GitHub asked to wait, when the answer is a rate limit: a 403 or 429 with
/// `retry-after`, or with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch
/// seconds); a 429, or a 403 whose message speaks of a rate limit, without either header
/// waits a minute, as GitHub's documentation advises.
fn rate_limit_wait(status: u16, headers: &HeaderMap, message: &str, now: u64) -> Option<Duration> {
    if status != 403 && status != 429 {
        return None;
    }
    if let Some(secs) = header(headers, "retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs.max(1)));
    }
    if let Some(wait) = exhausted_wait(headers, now) {
        return Some(wait);
    }
    if status == 429 || message.to_ascii_lowercase().contains("rate limit") {
        return Some(DEFAULT_RATE_LIMIT_WAIT);
    }
    None
}

/// The wait until `x-ratelimit-reset` when `x-ratelimit-remaining` is 0 (at least a second:
/// clocks differ).
fn exhausted_wait(headers: &HeaderMap, now: u64) -> Option<Duration> {
    if header(headers, "x-ratelimit-remaining")? != "0" {
        return None;
    }
    let reset = header(headers, "x-ratelimit-reset")?.parse::<u64>().ok()?;
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

/// GitHub's error `message`, with the details of a 422's `errors` list.
fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.chars().take(200).collect();
    };
    let mut message = value["message"].as_str().unwrap_or_default().to_owned();
    let details: Vec<String> = value["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    let field = o.get("field").and_then(Value::as_str)?;
                    let code = o.get("code").and_then(Value::as_str).unwrap_or("invalid");
                    Some(format!("{field} {code}"))
                }),
            _ => None,
        })
        .collect();
    if !details.is_empty() {
        message = format!("{message} ({})", details.join("; "));
    }
    message
}

/// The error for a non-success status that is not a rate limit.
fn status_error(action: &str, what: &str, status: u16, message: &str) -> ForgeError {
    match status {
        401 | 403 => ForgeError::Unauthorized { forge: FORGE, status },
        404 => ForgeError::NotFound {
            forge: FORGE,
            what: what.to_owned(),
        },
        405 | 409 | 422 => ForgeError::Refused {
            forge: FORGE,
            action: action.to_owned(),
            message: message.to_owned(),
        },
        _ => ForgeError::Request {
            forge: FORGE,
            action: action.to_owned(),
            message: format!("HTTP {status}: {message}"),
        },
    }
}

/// A failure before an answer came back; octocrab reports a failed installation-token
/// exchange as a GitHub error with its status.
fn transport_error(action: &str, error: octocrab::Error) -> ForgeError {
    if let octocrab::Error::GitHub { source, .. } = &error {
        let status = source.status_code.as_u16();
        if status == 401 || status == 403 || status == 404 {
            return ForgeError::Unauthorized { forge: FORGE, status };
        }
        return status_error(action, "the GitHub App installation", status, &source.message);
    }
    ForgeError::Request {
        forge: FORGE,
        action: action.to_owned(),
        message: error.to_string(),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(action: &str, body: &str) -> Result<T, ForgeError> {
    serde_json::from_str(body).map_err(|e| ForgeError::Decode {
        forge: FORGE,
        action: action.to_owned(),
        message: e.to_string(),
    })
}

/// The path and query of the `rel="next"` link, to send to the configured API (the
/// credentials go nowhere else).
fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = header(headers, "link")?;
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
        Some(uri.path_and_query()?.as_str().to_owned())
    })
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
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

fn repo_path(repo: &RepoId) -> String {
    format!("/repos/{}/{}", enc(&repo.owner), enc(&repo.name))
}

fn timestamp(action: &str, field: &str, value: &str) -> Result<Timestamp, ForgeError> {
    value.parse().map_err(|e| ForgeError::Decode {
        forge: FORGE,
        action: action.to_owned(),
        message: format!("{field} {value:?}: {e}"),
    })
}

/// The permission a collaborator-permission answer grants: `role_name` when it is one of
/// the built-in roles (it tells maintain and triage apart), else the legacy `permission`
/// (custom roles map to their base there).
fn permission_of(permission: &str, role_name: Option<&str>) -> Result<Option<Permission>, String> {
    let parse = |s: &str| match s {
        "admin" => Ok(Some(Permission::Admin)),
        "maintain" => Ok(Some(Permission::Maintain)),
        "write" => Ok(Some(Permission::Write)),
        "triage" => Ok(Some(Permission::Triage)),
        "read" => Ok(Some(Permission::Read)),
        "none" => Ok(None),
        other => Err(format!("unknown permission {other:?}")),
    };
    if let Some(Ok(p)) = role_name.map(parse) {
        return Ok(p);
    }
    parse(permission)
}

#[derive(Deserialize)]
struct WireUser {
    login: String,
}

fn login(user: Option<WireUser>) -> String {
    // A deleted account shows as null; GitHub names it `ghost`.
    user.map(|u| u.login).unwrap_or_else(|| "ghost".into())
}

#[derive(Deserialize)]
struct WireRef {
    #[serde(rename = "ref")]
    name: String,
    #[serde(default)]
    sha: Option<String>,
}

/// One entry of `GET /repos/{o}/{r}/pulls/{n}/files`.
#[derive(Deserialize)]
struct WireFile {
    filename: String,
    #[serde(default)]
    previous_filename: Option<String>,
}

#[derive(Deserialize)]
struct WirePull {
    number: u64,
    html_url: String,
    state: String,
    title: String,
    head: WireRef,
    base: WireRef,
    user: Option<WireUser>,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    #[serde(default)]
    merged_by: Option<WireUser>,
    #[serde(default)]
    created_at: Option<String>,
}

impl From<WirePull> for PullRequest {
    fn from(p: WirePull) -> Self {
        // Lists carry no `merged`; `merged_at` says it for both shapes.
        let merged = p.merged.unwrap_or(false) || p.merged_at.is_some();
        let state = match (p.state.as_str(), merged) {
            (_, true) => PullRequestState::Merged,
            ("open", _) => PullRequestState::Open,
            _ => PullRequestState::Closed,
        };
        PullRequest {
            number: p.number,
            url: p.html_url,
            state,
            title: p.title,
            head_sha: p.head.sha,
            head: p.head.name,
            base: p.base.name,
            author: login(p.user),
            // An open pull request's merge_commit_sha is GitHub's test merge: not a merge.
            merge_commit: if merged { p.merge_commit_sha } else { None },
            merged_by: if merged {
                p.merged_by.map(|u| u.login)
            } else {
                None
            },
            closed_by: None,
            created_at: p.created_at.and_then(|t| t.parse().ok()),
        }
    }
}

#[derive(Deserialize)]
struct WireComment {
    id: u64,
    user: Option<WireUser>,
    #[serde(default)]
    body: Option<String>,
    created_at: String,
    updated_at: String,
    html_url: String,
}

impl WireComment {
    fn into_comment(self, action: &str) -> Result<Comment, ForgeError> {
        Ok(Comment {
            id: self.id,
            author: login(self.user),
            body: self.body.unwrap_or_default(),
            created_at: timestamp(action, "created_at", &self.created_at)?,
            updated_at: timestamp(action, "updated_at", &self.updated_at)?,
            url: self.html_url,
        })
    }
}

#[derive(Deserialize)]
struct WireReview {
    id: u64,
    user: Option<WireUser>,
    state: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    submitted_at: Option<String>,
}

fn review_state(state: &str) -> Option<ReviewState> {
    Some(match state {
        "APPROVED" => ReviewState::Approved,
        "CHANGES_REQUESTED" => ReviewState::ChangesRequested,
        "COMMENTED" => ReviewState::Commented,
        "DISMISSED" => ReviewState::Dismissed,
        "PENDING" => ReviewState::Pending,
        _ => return None,
    })
}

#[async_trait]
impl Forge for GitHub {
    fn kind(&self) -> &'static str {
        FORGE
    }

    async fn own_login(&self) -> Result<Option<String>, ForgeError> {
        #[derive(Deserialize)]
        struct User {
            login: String,
        }
        if let Some(known) = self
            .own_login
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(known);
        }
        let login = match self
            .get_json::<User>("read the token's user", "the authenticated user", "/user".into())
            .await
        {
            Ok(user) => Some(user.login),
            // A GitHub App's installation token has no user: flaggit then relies on what it
            // recorded before merging or closing.
            Err(ForgeError::Unauthorized { .. } | ForgeError::NotFound { .. }) => None,
            Err(error) => return Err(error),
        };
        *self.own_login.lock().unwrap_or_else(PoisonError::into_inner) = Some(login.clone());
        Ok(login)
    }

    async fn find_pull_request(&self, repo: &RepoId, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        let what = format!("repository {repo}");
        let path = format!(
            "{}/pulls?state=open&head={}&per_page=100",
            repo_path(repo),
            enc(&format!("{}:{head}", repo.owner))
        );
        let pulls: Vec<WirePull> = self.get_json("find the pull request", &what, path).await?;
        Ok(pulls
            .into_iter()
            .map(PullRequest::from)
            .find(|p| p.head == head && p.state == PullRequestState::Open))
    }

    async fn open_pull_requests(
        &self,
        repo: &RepoId,
        base: &str,
    ) -> Result<Vec<OpenPullRequest>, ForgeError> {
        const ACTION: &str = "list the open pull requests";
        let what = format!("repository {repo}");
        let path = format!(
            "{}/pulls?state=open&base={}&per_page=100",
            repo_path(repo),
            enc(base)
        );
        let Polled::Changed { value, .. } = self.get_all::<WirePull>(ACTION, &what, path, None).await? else {
            return Ok(Vec::new());
        };
        Ok(value
            .into_iter()
            .map(|p| {
                let head_sha = p.head.sha.clone().unwrap_or_default();
                OpenPullRequest {
                    pull: PullRequest::from(p),
                    head_sha,
                }
            })
            .filter(|p| p.pull.state == PullRequestState::Open)
            .collect())
    }

    async fn pull_request_files(&self, repo: &RepoId, number: u64) -> Result<Vec<String>, ForgeError> {
        const ACTION: &str = "list the files of the pull request";
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/pulls/{number}/files?per_page=100", repo_path(repo));
        let Polled::Changed { value, .. } = self.get_all::<WireFile>(ACTION, &what, path, None).await? else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        for file in value {
            files.extend(file.previous_filename);
            files.push(file.filename);
        }
        Ok(files)
    }

    async fn open_pull_request(
        &self,
        repo: &RepoId,
        new: &NewPullRequest,
    ) -> Result<PullRequest, ForgeError> {
        let body = json!({"title": new.title, "body": new.body, "head": new.head, "base": new.base});
        let what = format!("repository {repo}");
        let answer = self
            .send_json(
                Method::POST,
                "open the pull request",
                &what,
                format!("{}/pulls", repo_path(repo)),
                body,
            )
            .await?;
        Ok(decode::<WirePull>("open the pull request", &answer.body)?.into())
    }

    async fn pull_request(&self, repo: &RepoId, number: u64) -> Result<PullRequest, ForgeError> {
        #[derive(Deserialize)]
        struct Issue {
            #[serde(default)]
            closed_by: Option<WireUser>,
        }
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/pulls/{number}", repo_path(repo));
        let pull: WirePull = self.get_json("read the pull request", &what, path).await?;
        let mut pull = PullRequest::from(pull);
        if pull.state == PullRequestState::Closed {
            // Only the issue says who closed a pull request.
            let path = format!("{}/issues/{number}", repo_path(repo));
            let issue: Issue = self
                .get_json("read who closed the pull request", &what, path)
                .await?;
            pull.closed_by = issue.closed_by.map(|u| u.login);
        }
        Ok(pull)
    }

    async fn edit_pull_request(&self, repo: &RepoId, number: u64, body: &str) -> Result<(), ForgeError> {
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/pulls/{number}", repo_path(repo));
        self.send_json(
            Method::PATCH,
            "edit the pull request",
            &what,
            path,
            json!({"body": body}),
        )
        .await?;
        Ok(())
    }

    async fn merge_pull_request(
        &self,
        repo: &RepoId,
        number: u64,
        method: MergeMethod,
        title: &str,
        message: &str,
    ) -> Result<String, ForgeError> {
        #[derive(Deserialize)]
        struct Merged {
            sha: String,
        }
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/pulls/{number}/merge", repo_path(repo));
        let body = json!({
            "merge_method": method.as_str(),
            "commit_title": title,
            "commit_message": message,
        });
        let answer = self
            .send_json(Method::PUT, "merge the pull request", &what, path, body)
            .await?;
        Ok(decode::<Merged>("merge the pull request", &answer.body)?.sha)
    }

    async fn close_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), ForgeError> {
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/pulls/{number}", repo_path(repo));
        self.send_json(
            Method::PATCH,
            "close the pull request",
            &what,
            path,
            json!({"state": "closed"}),
        )
        .await?;
        Ok(())
    }

    async fn reopen_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), ForgeError> {
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/pulls/{number}", repo_path(repo));
        self.send_json(
            Method::PATCH,
            "reopen the pull request",
            &what,
            path,
            json!({"state": "open"}),
        )
        .await?;
        Ok(())
    }

    async fn closed_by(&self, repo: &RepoId, number: u64) -> Result<Option<String>, ForgeError> {
        #[derive(Deserialize)]
        struct Issue {
            #[serde(default)]
            closed_by: Option<WireUser>,
        }
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/issues/{number}", repo_path(repo));
        let issue: Issue = self
            .get_json("read who closed the pull request", &what, path)
            .await?;
        Ok(issue.closed_by.map(|u| u.login))
    }

    async fn commit_author(&self, repo: &RepoId, sha: &str) -> Result<Option<String>, ForgeError> {
        #[derive(Deserialize)]
        struct Commit {
            // null when the commit's e-mail belongs to no GitHub account.
            #[serde(default)]
            author: Option<WireUser>,
        }
        let what = format!("commit {sha} in {repo}");
        let path = format!("{}/commits/{}", repo_path(repo), enc(sha));
        let commit: Commit = self.get_json("read the commit's author", &what, path).await?;
        Ok(commit.author.map(|u| u.login))
    }

    async fn commit_account(&self, repo: &RepoId, sha: &str) -> Result<Option<Account>, ForgeError> {
        #[derive(Deserialize)]
        struct Author {
            login: String,
            #[serde(default, rename = "type")]
            kind: Option<String>,
        }
        #[derive(Deserialize)]
        struct Commit {
            #[serde(default)]
            author: Option<Author>,
        }
        let what = format!("commit {sha} in {repo}");
        let path = format!("{}/commits/{}", repo_path(repo), enc(sha));
        let commit: Commit = self.get_json("read the commit's author", &what, path).await?;
        Ok(commit.author.map(|a| Account {
            bot: a.kind.as_deref() == Some("Bot") || crate::forge::bots::is_bot_login(&a.login),
            login: a.login,
        }))
    }

    async fn comments(
        &self,
        repo: &RepoId,
        number: u64,
        since: Option<Timestamp>,
        etag: Option<&str>,
    ) -> Result<Polled<Vec<Comment>>, ForgeError> {
        const ACTION: &str = "list the pull request comments";
        let what = format!("pull request {repo}#{number}");
        let mut path = format!("{}/issues/{number}/comments?per_page=100", repo_path(repo));
        if let Some(since) = since {
            // GitHub: only comments updated at or after this time (ISO 8601, whole seconds).
            path.push_str(&format!(
                "&since={}",
                enc(&since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            ));
        }
        match self.get_all::<WireComment>(ACTION, &what, path, etag).await? {
            Polled::NotModified => Ok(Polled::NotModified),
            Polled::Changed { value, etag } => {
                let mut comments = value
                    .into_iter()
                    .map(|c| c.into_comment(ACTION))
                    .collect::<Result<Vec<_>, _>>()?;
                comments.sort_by_key(|c| (c.created_at, c.id));
                Ok(Polled::Changed {
                    value: comments,
                    etag,
                })
            }
        }
    }

    async fn reviews(&self, repo: &RepoId, number: u64) -> Result<Vec<Review>, ForgeError> {
        const ACTION: &str = "list the pull request reviews";
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/pulls/{number}/reviews?per_page=100", repo_path(repo));
        let Polled::Changed { value, .. } = self.get_all::<WireReview>(ACTION, &what, path, None).await?
        else {
            return Ok(Vec::new());
        };
        let mut reviews = Vec::new();
        for r in value {
            // A pending review is a draft only its writer sees: not submitted.
            let (Some(state), Some(submitted_at)) = (review_state(&r.state), r.submitted_at) else {
                continue;
            };
            reviews.push(Review {
                id: r.id,
                author: login(r.user),
                state,
                body: r.body.unwrap_or_default(),
                submitted_at: timestamp(ACTION, "submitted_at", &submitted_at)?,
            });
        }
        reviews.sort_by_key(|r| (r.submitted_at, r.id));
        Ok(reviews)
    }

    async fn comment(
        &self,
        repo: &RepoId,
        _number: u64,
        comment_id: u64,
    ) -> Result<Option<Comment>, ForgeError> {
        const ACTION: &str = "read the comment";
        let what = format!("comment {comment_id} in {repo}");
        let path = format!("{}/issues/comments/{comment_id}", repo_path(repo));
        match self.get_json::<WireComment>(ACTION, &what, path).await {
            Ok(comment) => comment.into_comment(ACTION).map(Some),
            Err(ForgeError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn create_comment(&self, repo: &RepoId, number: u64, body: &str) -> Result<Comment, ForgeError> {
        const ACTION: &str = "comment on the pull request";
        let what = format!("pull request {repo}#{number}");
        let path = format!("{}/issues/{number}/comments", repo_path(repo));
        let answer = self
            .send_json(Method::POST, ACTION, &what, path, json!({"body": body}))
            .await?;
        decode::<WireComment>(ACTION, &answer.body)?.into_comment(ACTION)
    }

    async fn edit_comment(
        &self,
        repo: &RepoId,
        _number: u64,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let what = format!("comment {comment_id} in {repo}");
        let path = format!("{}/issues/comments/{comment_id}", repo_path(repo));
        self.send_json(
            Method::PATCH,
            "edit the comment",
            &what,
            path,
            json!({"body": body}),
        )
        .await?;
        Ok(())
    }

    async fn react(
        &self,
        repo: &RepoId,
        _number: u64,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<(), ForgeError> {
        let what = format!("comment {comment_id} in {repo}");
        let path = format!("{}/issues/comments/{comment_id}/reactions", repo_path(repo));
        self.send_json(
            Method::POST,
            "react to the comment",
            &what,
            path,
            json!({"content": reaction.as_str()}),
        )
        .await?;
        Ok(())
    }

    async fn permission(&self, repo: &RepoId, user: &str) -> Result<Option<Permission>, ForgeError> {
        #[derive(Deserialize)]
        struct Answer {
            permission: String,
            #[serde(default)]
            role_name: Option<String>,
        }
        const ACTION: &str = "read the collaborator permission";
        // Logins are case-insensitive on GitHub.
        let key = (repo.clone(), user.to_ascii_lowercase());
        let cached = || {
            let cache = self.permissions.lock().unwrap_or_else(PoisonError::into_inner);
            cache
                .get(&key)
                .filter(|(at, _)| at.elapsed() < self.permission_ttl)
                .map(|(_, permission)| *permission)
        };
        if let Some(permission) = cached() {
            return Ok(permission);
        }
        let _lookup = self.permission_lookup.lock().await;
        // Another caller may have asked while this one waited.
        if let Some(permission) = cached() {
            return Ok(permission);
        }
        let what = format!("user {user} in repository {repo}");
        let path = format!("{}/collaborators/{}/permission", repo_path(repo), enc(user));
        let answer: Answer = self.get_json(ACTION, &what, path).await?;
        let permission =
            permission_of(&answer.permission, answer.role_name.as_deref()).map_err(|message| {
                ForgeError::Decode {
                    forge: FORGE,
                    action: ACTION.to_owned(),
                    message,
                }
            })?;
        let mut cache = self.permissions.lock().unwrap_or_else(PoisonError::into_inner);
        let ttl = self.permission_ttl;
        cache.retain(|_, (at, _)| at.elapsed() < ttl);
        cache.insert(key, (Instant::now(), permission));
        Ok(permission)
    }

    async fn is_team_member(&self, org: &str, team: &str, user: &str) -> Result<bool, ForgeError> {
        #[derive(Deserialize)]
        struct Membership {
            state: String,
        }
        let what = format!("team {org}/{team}");
        let path = format!("/orgs/{}/teams/{}/memberships/{}", enc(org), enc(team), enc(user));
        match self
            .get_json::<Membership>("read the team membership", &what, path)
            .await
        {
            Ok(m) => Ok(m.state == "active"),
            // GitHub answers 404 for "not a member" (and for a team the token cannot see).
            Err(ForgeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
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

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn retry_after_is_obeyed_on_403_and_429() {
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(rate_limit_wait(429, &h, "", 0), Some(Duration::from_secs(7)));
        assert_eq!(rate_limit_wait(403, &h, "", 0), Some(Duration::from_secs(7)));
        assert_eq!(rate_limit_wait(500, &h, "", 0), None);
        assert_eq!(rate_limit_wait(200, &h, "", 0), None);
    }

    #[test]
    fn an_exhausted_budget_waits_until_the_reset() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1000")]);
        assert_eq!(
            rate_limit_wait(403, &h, "API rate limit exceeded", 940),
            Some(Duration::from_secs(60))
        );
        // A reset already past still waits a second (clock skew), never zero.
        assert_eq!(rate_limit_wait(403, &h, "", 2000), Some(Duration::from_secs(1)));
        let left = headers(&[("x-ratelimit-remaining", "12"), ("x-ratelimit-reset", "1000")]);
        assert_eq!(exhausted_wait(&left, 940), None);
        assert_eq!(rate_limit_wait(403, &left, "Bad credentials", 940), None);
    }

    #[test]
    fn limits_without_headers_wait_a_minute() {
        let none = HeaderMap::new();
        assert_eq!(rate_limit_wait(429, &none, "", 0), Some(DEFAULT_RATE_LIMIT_WAIT));
        assert_eq!(
            rate_limit_wait(403, &none, "You have exceeded a secondary rate limit", 0),
            Some(DEFAULT_RATE_LIMIT_WAIT)
        );
        assert_eq!(
            rate_limit_wait(403, &none, "Resource not accessible by integration", 0),
            None
        );
    }

    #[test]
    fn statuses_map_to_forge_errors() {
        assert_eq!(
            status_error("merge", "pr", 401, "Bad credentials"),
            ForgeError::Unauthorized {
                forge: FORGE,
                status: 401
            }
        );
        assert_eq!(
            status_error("merge", "pr", 403, "x").category(),
            "ForgeUnauthorized"
        );
        assert_eq!(
            status_error("read", "pull request a/b#3", 404, "Not Found"),
            ForgeError::NotFound {
                forge: FORGE,
                what: "pull request a/b#3".into()
            }
        );
        for status in [405, 409, 422] {
            assert_eq!(
                status_error(
                    "merge the pull request",
                    "pr",
                    status,
                    "Pull Request is not mergeable"
                ),
                ForgeError::Refused {
                    forge: FORGE,
                    action: "merge the pull request".into(),
                    message: "Pull Request is not mergeable".into()
                }
            );
        }
        let e = status_error("merge", "pr", 502, "Bad Gateway");
        assert_eq!(e.category(), "ForgeRequest");
        assert!(e.to_string().contains("HTTP 502"), "{e}");
    }

    #[test]
    fn validation_errors_carry_their_details() {
        let body = r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom",
            "message":"A pull request already exists for acme:rel."},{"resource":"PullRequest",
            "field":"head","code":"invalid"}],"documentation_url":"https://docs.github.com"}"#;
        assert_eq!(
            error_message(body),
            "Validation Failed (A pull request already exists for acme:rel.; head invalid)"
        );
        assert_eq!(error_message(r#"{"message":"Not Found"}"#), "Not Found");
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn the_next_link_becomes_a_path_on_the_configured_api() {
        let h = headers(&[(
            "link",
            "<https://ghe.example.com/api/v3/repositories/1/issues/2/comments?per_page=100&page=2>; \
             rel=\"next\", <https://ghe.example.com/api/v3/repositories/1/issues/2/comments?per_page=100&page=3>; \
             rel=\"last\"",
        )]);
        assert_eq!(
            next_page(&h).as_deref(),
            Some("/api/v3/repositories/1/issues/2/comments?per_page=100&page=2")
        );
        let last = headers(&[(
            "link",
            "<https://api.github.com/x?page=1>; rel=\"prev\", <https://api.github.com/x?page=1>; rel=\"first\"",
        )]);
        assert_eq!(next_page(&last), None);
        assert_eq!(next_page(&HeaderMap::new()), None);
    }

    #[test]
    fn role_name_wins_over_the_legacy_permission() {
        assert_eq!(
            permission_of("write", Some("maintain")),
            Ok(Some(Permission::Maintain))
        );
        assert_eq!(
            permission_of("read", Some("triage")),
            Ok(Some(Permission::Triage))
        );
        // A custom role falls back to its base permission.
        assert_eq!(
            permission_of("write", Some("deployer")),
            Ok(Some(Permission::Write))
        );
        assert_eq!(permission_of("admin", None), Ok(Some(Permission::Admin)));
        assert_eq!(permission_of("none", None), Ok(None));
        assert!(permission_of("owner", None).is_err());
    }

    #[test]
    fn secrets_give_a_token_or_an_app() {
        assert_eq!(
            GitHubAuth::from_secret(&secret(&[("token", "ghp_abc\n")])).expect("token"),
            GitHubAuth::Token("ghp_abc".into())
        );
        assert_eq!(
            GitHubAuth::from_secret(&secret(&[("username", "git"), ("password", "ghp_x")]))
                .expect("password"),
            GitHubAuth::Token("ghp_x".into())
        );
        let app = secret(&[
            ("githubAppID", "12"),
            ("githubAppInstallationID", "34"),
            ("githubAppPrivateKey", "-----BEGIN RSA PRIVATE KEY-----"),
        ]);
        assert_eq!(
            GitHubAuth::from_secret(&app).expect("app"),
            GitHubAuth::App {
                app_id: 12,
                installation_id: 34,
                private_key_pem: "-----BEGIN RSA PRIVATE KEY-----".into()
            }
        );
    }

    #[test]
    fn secret_errors_name_the_missing_or_bad_key() {
        let e = GitHubAuth::from_secret(&secret(&[])).expect_err("empty");
        assert!(e.to_string().contains("`token`"), "{e}");
        let e = GitHubAuth::from_secret(&secret(&[("githubAppID", "12"), ("githubAppPrivateKey", "k")]))
            .expect_err("no installation");
        assert!(e.to_string().contains("githubAppInstallationID"), "{e}");
        let e = GitHubAuth::from_secret(&secret(&[
            ("githubAppID", "12"),
            ("githubAppInstallationID", "3"),
        ]))
        .expect_err("no key");
        assert!(e.to_string().contains("githubAppPrivateKey"), "{e}");
        let e = GitHubAuth::from_secret(&secret(&[
            ("githubAppID", "twelve"),
            ("githubAppInstallationID", "3"),
            ("githubAppPrivateKey", "k"),
        ]))
        .expect_err("bad id");
        assert_eq!(e.category(), "GitHubSecretValue");
        assert!(e.to_string().contains("githubAppID"), "{e}");
        let e = GitHubAuth::from_secret(&secret(&[("token", " ")])).expect_err("blank");
        assert!(e.to_string().contains("`token`"), "{e}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let token = format!("{:?}", GitHubAuth::Token("ghp_secret".into()));
        assert!(!token.contains("ghp_secret"), "{token}");
        let app = format!(
            "{:?}",
            GitHubAuth::App {
                app_id: 1,
                installation_id: 2,
                private_key_pem: "PRIVATE-PEM".into()
            }
        );
        assert!(
            !app.contains("PRIVATE-PEM") && app.contains("installation_id: 2"),
            "{app}"
        );
    }

    #[test]
    fn a_client_needs_a_runtime_and_says_so() {
        let e = GitHub::new(DEFAULT_API_URL, GitHubAuth::Token("t".into())).expect_err("no runtime");
        assert_eq!(e.category(), "GitHubClient");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let github = rt
            .block_on(async {
                GitHub::new("https://ghe.example.com/api/v3/", GitHubAuth::Token("t0k".into()))
            })
            .expect("client");
        assert_eq!(github.api_url(), "https://ghe.example.com/api/v3");
        assert_eq!(github.rate_limited_for(), None);
        assert!(!format!("{github:?}").contains("t0k"));
    }

    #[test]
    fn api_urls_must_be_http_with_a_host() {
        for bad in ["api.github.com", "ftp://x/api", "not a url"] {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let e = rt
                .block_on(async { GitHub::new(bad, GitHubAuth::Token("t".into())) })
                .expect_err(bad);
            assert_eq!(e.category(), "GitHubApiUrl", "{bad}");
        }
    }

    #[test]
    fn list_pulls_decode_to_the_forge_shape() {
        let p: WirePull = serde_json::from_value(json!({
            "number": 7, "html_url": "https://github.com/a/b/pull/7", "state": "closed",
            "title": "Release", "head": {"ref": "flaggit/x"}, "base": {"ref": "main"},
            "user": {"login": "flaggit-bot"}, "merged_at": "2026-01-01T00:00:00Z",
            "created_at": "2025-12-31T23:59:59Z",
            "merge_commit_sha": "abc", "merged_by": {"login": "alice"}
        }))
        .expect("decode");
        let p = PullRequest::from(p);
        assert_eq!(p.state, PullRequestState::Merged);
        assert_eq!(p.merged_by.as_deref(), Some("alice"));
        assert_eq!(
            p.created_at,
            Some("2025-12-31T23:59:59Z".parse().expect("a time")),
            "the forge's own stamp, to the second"
        );
        let open: WirePull = serde_json::from_value(json!({
            "number": 8, "html_url": "u", "state": "open", "title": "t", "head": {"ref": "h"},
            "base": {"ref": "main"}, "user": null, "merge_commit_sha": "test-merge"
        }))
        .expect("decode");
        let open = PullRequest::from(open);
        assert_eq!(
            (open.state, open.merge_commit, open.author.as_str()),
            (PullRequestState::Open, None, "ghost")
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            enc("acme:flaggit/test/podinfo/6.0.1"),
            "acme%3Aflaggit%2Ftest%2Fpodinfo%2F6.0.1"
        );
        assert_eq!(enc("a b&c"), "a%20b%26c");
    }
}
