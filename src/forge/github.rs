//! GitHub and GitHub Enterprise as a [`Forge`]: release pull requests, their comments,
//! reviews and reactions, and who may approve, over octocrab's raw requests (its typed API
//! cannot send `If-None-Match` nor show rate-limit headers). Owns the mapping of GitHub's
//! answers to [`forge::Error`](super::Error), the rate-limit backoff and the permission cache.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue, Method};
use jiff::Timestamp;
use octocrab::Octocrab;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{self, Answer, Call, Dialect, Rest, Transport, decode, enc, header};
use super::ttl::TtlCache;
use super::wire::{
    Pulls, WireComment, WireFile, WirePull, WireReview, WireUser, comments_of, file_paths, pr_what,
    repo_path, reviews_of,
};
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
            rest::secret_text(FORGE, data, key).map_err(|e| match e {
                rest::Error::ReadSecretValue { key, reason, .. } => Error::ReadSecretValue { key, reason },
                _ => Error::ReadSecretKey { key },
            })
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

/// How GitHub's answers read: 403 or 429 limits, with the budget in `x-ratelimit-*`
/// headers; 405, 409 and 422 refuse.
const DIALECT: Dialect = Dialect {
    forge: FORGE,
    refused: &[405, 409, 422],
    rate_limit_wait,
    spent_wait: exhausted_wait,
    error_message,
};

/// A GitHub (or GitHub Enterprise) API client for release pull requests.
pub struct GitHub {
    rest: Rest,
    /// Permission answers by (repository, lowercase login).
    permissions: TtlCache<(RepoId, String), Option<Permission>>,
    /// Held while a permission is looked up: concurrent misses wait for one answer.
    permission_lookup: tokio::sync::Mutex<()>,
    /// The token's login once asked (None inside: the token has no user): never forgotten.
    own_login: TtlCache<(), Option<String>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.rest.api_url())
            .finish_non_exhaustive()
    }
}

/// octocrab's raw requests: it signs them with the token, or with a GitHub App installation
/// token it renews before it expires.
struct Octo(Octocrab);

#[async_trait]
impl Transport for Octo {
    async fn send(&self, call: &Call<'_>) -> Result<Answer, ForgeError> {
        let crab = &self.0;
        let transport = |e: octocrab::Error| transport_error(call.action, e);
        let path = call.path.as_str();
        let response = match call.method {
            Method::GET => {
                let headers = call
                    .etag
                    .and_then(|etag| HeaderValue::from_str(etag).ok())
                    .map(|etag| {
                        let mut headers = HeaderMap::new();
                        headers.insert(axum::http::header::IF_NONE_MATCH, etag);
                        headers
                    });
                crab._get_with_headers(path, headers).await
            }
            Method::POST => crab._post(path, call.body.as_ref()).await,
            Method::PATCH => crab._patch(path, call.body.as_ref()).await,
            Method::PUT => crab._put(path, call.body.as_ref()).await,
            _ => crab._delete(path, call.body.as_ref()).await,
        }
        .map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = crab.body_to_string(response).await.map_err(transport)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl GitHub {
    /// A client for the API at `api_url` ([`DEFAULT_API_URL`], or `https://host/api/v3` for
    /// GitHub Enterprise). Needs a Tokio runtime.
    pub fn new(api_url: &str, auth: GitHubAuth) -> Result<GitHub, Error> {
        let api_url = api_url.trim_end_matches('/');
        let uri = rest::parse_api_url(api_url).ok_or_else(|| Error::ParseApiUrl {
            url: api_url.to_owned(),
        })?;
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
            rest: Rest::with_transport(DIALECT, api_url, Octo(crab)),
            permissions: TtlCache::new(DEFAULT_PERMISSION_TTL),
            permission_lookup: tokio::sync::Mutex::new(()),
            own_login: TtlCache::new(Duration::MAX),
        })
    }

    /// How long a permission answer is reused (default [`DEFAULT_PERMISSION_TTL`]).
    pub fn with_permission_ttl(mut self, ttl: Duration) -> GitHub {
        self.permissions = TtlCache::new(ttl);
        self
    }

    /// The API URL this client talks to.
    pub fn api_url(&self) -> &str {
        self.rest.api_url()
    }

    /// How long calls still fail fast after a rate-limit answer; None when they go out.
    pub fn rate_limited_for(&self) -> Option<Duration> {
        self.rest.rate_limited_for()
    }
}

/// How long GitHub asked to wait, when the answer is a rate limit: a 403 or 429 with
/// `retry-after`, or with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch
/// seconds); a 429, or a 403 whose message speaks of a rate limit, without either header
/// waits a minute, as GitHub's documentation advises.
fn rate_limit_wait(status: u16, headers: &HeaderMap, body: &str, now: u64) -> Option<Duration> {
    if status != 403 && status != 429 {
        return None;
    }
    if let Some(secs) = header(headers, "retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs.max(1)));
    }
    if let Some(wait) = exhausted_wait(headers, now) {
        return Some(wait);
    }
    if status == 429 || error_message(body).to_ascii_lowercase().contains("rate limit") {
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

/// A failure before an answer came back; octocrab reports a failed installation-token
/// exchange as a GitHub error with its status.
fn transport_error(action: &str, error: octocrab::Error) -> ForgeError {
    if let octocrab::Error::GitHub { source, .. } = &error {
        let status = source.status_code.as_u16();
        if status == 401 || status == 403 || status == 404 {
            return ForgeError::Unauthorized { forge: FORGE, status };
        }
        return DIALECT.status_error(action, "the GitHub App installation", status, &source.message);
    }
    ForgeError::Request {
        forge: FORGE,
        action: action.to_owned(),
        message: error.to_string(),
    }
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
        self.rest
            .token_login(&self.own_login, |u: WireUser| u.login)
            .await
    }

    async fn find_pull_request(&self, repo: &RepoId, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        let what = format!("repository {repo}");
        let path = format!(
            "{}/pulls?state=open&head={}&per_page=100",
            repo_path(repo),
            enc(&format!("{}:{head}", repo.owner))
        );
        let pulls: Vec<WirePull> = self.rest.get_json("find the pull request", &what, path).await?;
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
        let pulls: Vec<WirePull> = self.rest.list(ACTION, &what, path).await?;
        Ok(pulls
            .into_iter()
            .filter_map(|p| OpenPullRequest::of(p.into(), base))
            .collect())
    }

    async fn pull_request_files(&self, repo: &RepoId, number: u64) -> Result<Vec<String>, ForgeError> {
        const ACTION: &str = "list the files of the pull request";
        let what = pr_what(repo, number);
        let path = format!("{}/pulls/{number}/files?per_page=100", repo_path(repo));
        let files: Vec<WireFile> = self.rest.list(ACTION, &what, path).await?;
        Ok(file_paths(files))
    }

    async fn open_pull_request(
        &self,
        repo: &RepoId,
        new: &NewPullRequest,
    ) -> Result<PullRequest, ForgeError> {
        Pulls(&self.rest).open(repo, new).await
    }

    async fn pull_request(&self, repo: &RepoId, number: u64) -> Result<PullRequest, ForgeError> {
        #[derive(Deserialize)]
        struct Issue {
            #[serde(default)]
            closed_by: Option<WireUser>,
        }
        let what = pr_what(repo, number);
        let mut pull = Pulls(&self.rest).get(repo, number).await?;
        if pull.state == PullRequestState::Closed {
            // Only the issue says who closed a pull request.
            let path = format!("{}/issues/{number}", repo_path(repo));
            let issue: Issue = self
                .rest
                .get_json("read who closed the pull request", &what, path)
                .await?;
            pull.closed_by = issue.closed_by.map(|u| u.login);
        }
        Ok(pull)
    }

    async fn edit_pull_request(&self, repo: &RepoId, number: u64, body: &str) -> Result<(), ForgeError> {
        Pulls(&self.rest)
            .edit(repo, number, "edit the pull request", json!({"body": body}))
            .await
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
        let what = pr_what(repo, number);
        let path = format!("{}/pulls/{number}/merge", repo_path(repo));
        let body = json!({
            "merge_method": method.as_str(),
            "commit_title": title,
            "commit_message": message,
        });
        let answer = self
            .rest
            .send_json(Method::PUT, "merge the pull request", &what, path, body)
            .await?;
        Ok(decode::<Merged>(FORGE, "merge the pull request", &answer.body)?.sha)
    }

    async fn close_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), ForgeError> {
        Pulls(&self.rest)
            .edit(repo, number, "close the pull request", json!({"state": "closed"}))
            .await
    }

    async fn reopen_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), ForgeError> {
        Pulls(&self.rest)
            .edit(repo, number, "reopen the pull request", json!({"state": "open"}))
            .await
    }

    async fn closed_by(&self, repo: &RepoId, number: u64) -> Result<Option<String>, ForgeError> {
        #[derive(Deserialize)]
        struct Issue {
            #[serde(default)]
            closed_by: Option<WireUser>,
        }
        let what = pr_what(repo, number);
        let path = format!("{}/issues/{number}", repo_path(repo));
        let issue: Issue = self
            .rest
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
        let commit: Commit = self
            .rest
            .get_json("read the commit's author", &what, path)
            .await?;
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
        let commit: Commit = self
            .rest
            .get_json("read the commit's author", &what, path)
            .await?;
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
        let what = pr_what(repo, number);
        let mut path = format!("{}/issues/{number}/comments?per_page=100", repo_path(repo));
        if let Some(since) = since {
            // GitHub: only comments updated at or after this time (ISO 8601, whole seconds).
            path.push_str(&format!(
                "&since={}",
                enc(&since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            ));
        }
        let polled = self
            .rest
            .get_all::<WireComment>(ACTION, &what, path, etag, |_| false)
            .await?;
        comments_of(FORGE, ACTION, polled)
    }

    async fn reviews(&self, repo: &RepoId, number: u64) -> Result<Vec<Review>, ForgeError> {
        const ACTION: &str = "list the pull request reviews";
        let what = pr_what(repo, number);
        let path = format!("{}/pulls/{number}/reviews?per_page=100", repo_path(repo));
        let reviews: Vec<WireReview> = self.rest.list(ACTION, &what, path).await?;
        // A pending review is a draft only its writer sees: it has no submission time.
        reviews_of(FORGE, ACTION, reviews, |state, _| review_state(state))
    }

    async fn comment(
        &self,
        repo: &RepoId,
        _number: u64,
        comment_id: u64,
    ) -> Result<Option<Comment>, ForgeError> {
        Pulls(&self.rest).comment(repo, comment_id).await
    }

    async fn create_comment(&self, repo: &RepoId, number: u64, body: &str) -> Result<Comment, ForgeError> {
        Pulls(&self.rest).create_comment(repo, number, body).await
    }

    async fn edit_comment(
        &self,
        repo: &RepoId,
        _number: u64,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        Pulls(&self.rest).edit_comment(repo, comment_id, body).await
    }

    async fn react(
        &self,
        repo: &RepoId,
        _number: u64,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<(), ForgeError> {
        Pulls(&self.rest).react(repo, comment_id, reaction).await
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
        if let Some(permission) = self.permissions.get(&key) {
            return Ok(permission);
        }
        let _lookup = self.permission_lookup.lock().await;
        // Another caller may have asked while this one waited.
        if let Some(permission) = self.permissions.get(&key) {
            return Ok(permission);
        }
        let what = format!("user {user} in repository {repo}");
        let path = format!("{}/collaborators/{}/permission", repo_path(repo), enc(user));
        let answer: Answer = self.rest.get_json(ACTION, &what, path).await?;
        let permission =
            permission_of(&answer.permission, answer.role_name.as_deref()).map_err(|message| {
                ForgeError::Decode {
                    forge: FORGE,
                    action: ACTION.to_owned(),
                    message,
                }
            })?;
        self.permissions.put(key, permission);
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
            .rest
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
            DIALECT.status_error("merge", "pr", 401, "Bad credentials"),
            ForgeError::Unauthorized {
                forge: FORGE,
                status: 401
            }
        );
        assert_eq!(
            DIALECT.status_error("merge", "pr", 403, "x").category(),
            "ForgeUnauthorized"
        );
        assert_eq!(
            DIALECT.status_error("read", "pull request a/b#3", 404, "Not Found"),
            ForgeError::NotFound {
                forge: FORGE,
                what: "pull request a/b#3".into()
            }
        );
        for status in [405, 409, 422] {
            assert_eq!(
                DIALECT.status_error(
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
        let e = DIALECT.status_error("merge", "pr", 502, "Bad Gateway");
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
        // The shared pager gives the path below the API URL; octocrab puts it back under
        // the API's path, so the next request goes where the link says.
        let api = "https://ghe.example.com/api/v3";
        assert_eq!(
            rest::next_page(&h, api)
                .map(|path| format!("{api}{path}"))
                .as_deref(),
            Some("https://ghe.example.com/api/v3/repositories/1/issues/2/comments?per_page=100&page=2")
        );
        let last = headers(&[(
            "link",
            "<https://api.github.com/x?page=1>; rel=\"prev\", <https://api.github.com/x?page=1>; rel=\"first\"",
        )]);
        assert_eq!(rest::next_page(&last, DEFAULT_API_URL), None);
        assert_eq!(rest::next_page(&HeaderMap::new(), DEFAULT_API_URL), None);
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
