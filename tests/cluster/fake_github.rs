//! A stateful GitHub on loopback for tests: the REST endpoints the `GitHub` forge calls, in
//! GitHub's JSON shapes (fields copied from recorded bodies), over repositories backed by real
//! bare git repositories. Merging a pull request performs a real git merge (merge commit,
//! squash or rebase) in the bare repository and fails with 405 when it does not merge
//! cleanly. Keeps `refs/pull/<n>/head` at each open pull request's head and lists a pull
//! request's files from the three-dot diff, as GitHub does. Keeps comments with ETags, reviews, reactions, permissions, team members, tokens
//! (a GitHub App's JWT is checked with the openssl CLI and exchanged for an installation
//! token) and a log of every request. Served by axum on 127.0.0.1:0 in its own thread and
//! runtime, so sync and async tests can use it; stopped on Drop.
//!
//! Pull request numbers are unique across the fake's repositories (GitHub numbers them per
//! repository), so the test-side methods take a number alone.

#![allow(dead_code)] // a harness: each test uses a part of it

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::fake_forge::{
    Merge, MergeFailure, enc, git_as, git_merge, parse_query, percent_decode, rfc3339, unix_now,
};
use crate::git_remote::TempDir;

/// The login behind the token `FakeGitHub::start` is given.
pub const BOT_LOGIN: &str = "flaggit-bot";
/// The login of a GitHub App installation's token.
pub const APP_LOGIN: &str = "flaggit-app[bot]";
const DOCS: &str = "https://docs.github.com/rest";

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    /// Path without the API prefix (`/repos/o/r/pulls`).
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Whose token it carried, when it was a known one.
    pub login: Option<String>,
    pub if_none_match: Option<String>,
}

/// A pull request as the fake holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct PullSnapshot {
    pub number: u64,
    pub owner: String,
    pub repo: String,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub author: String,
    /// `open` or `closed`.
    pub state: String,
    pub merged: bool,
    pub merged_by: Option<String>,
    pub merge_commit_sha: Option<String>,
}

/// A comment as the fake holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct CommentSnapshot {
    pub id: u64,
    pub pr: u64,
    pub author: String,
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone)]
struct FakeRepo {
    owner: String,
    name: String,
    bare: PathBuf,
}

#[derive(Clone)]
struct Pull {
    number: u64,
    repo: usize,
    title: String,
    body: String,
    head: String,
    base: String,
    author: String,
    open: bool,
    merged_by: Option<String>,
    closed_by: Option<String>,
    merge_commit_sha: Option<String>,
    head_sha: String,
    created_at: i64,
    updated_at: i64,
    closed_at: Option<i64>,
    merged_at: Option<i64>,
}

#[derive(Clone)]
struct CommentRec {
    id: u64,
    pr: u64,
    author: String,
    body: String,
    created_at: i64,
    updated_at: i64,
    reactions: Vec<(u64, String, String, i64)>,
}

#[derive(Clone)]
struct ReviewRec {
    id: u64,
    pr: u64,
    author: String,
    state: String,
    body: String,
    submitted_at: i64,
    commit_id: String,
}

enum Limit {
    RetryAfter(u64),
    Exhausted(u64),
}

/// A failure the fake answers with instead of serving a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// An HTTP 5xx (GitHub answers 502 and 503 during incidents).
    ServerError(u16),
    /// A 403 secondary rate limit with `retry-after` (GitHub's limit on creating content).
    SecondaryRateLimit { retry_after: u64 },
}

impl Injected {
    fn answer(self) -> Answer {
        match self {
            Injected::ServerError(status) => (
                StatusCode::from_u16(status).expect("a status"),
                Vec::new(),
                json!({"message": "Server Error"}),
            ),
            Injected::SecondaryRateLimit { retry_after } => (
                StatusCode::FORBIDDEN,
                vec![("retry-after", retry_after.to_string())],
                json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", "documentation_url": DOCS}),
            ),
        }
    }
}

/// Requests to one endpoint that fail until a deadline.
struct Outage {
    method: Method,
    /// A part of the path (`/pulls`, `/issues/3/comments`).
    path: String,
    failure: Injected,
    until: std::time::Instant,
}

/// Every API request fails with probability `rate` until a deadline.
struct Chaos {
    rate: f64,
    rng: rand::rngs::StdRng,
    until: std::time::Instant,
}

struct App {
    installation_id: u64,
    private_key: TempDir,
}

struct State {
    /// `http://127.0.0.1:PORT`
    origin: String,
    /// `""` or `/api/v3`
    prefix: String,
    tokens: BTreeMap<String, String>,
    apps: BTreeMap<u64, App>,
    repos: Vec<FakeRepo>,
    pulls: Vec<Pull>,
    comments: Vec<CommentRec>,
    reviews: Vec<ReviewRec>,
    permissions: BTreeMap<String, String>,
    teams: BTreeMap<(String, String), BTreeMap<String, String>>,
    user_ids: BTreeMap<String, u64>,
    next_id: u64,
    next_number: u64,
    last_time: i64,
    /// Version of each pull request's comment list: ETags change with it.
    comment_versions: BTreeMap<u64, u64>,
    limits: VecDeque<Limit>,
    outages: Vec<Outage>,
    chaos: Option<Chaos>,
    /// Logins whose lookups answer 404 (a deleted or renamed account).
    missing: Vec<String>,
    requests: Vec<LoggedRequest>,
    /// Commit author e-mails (lowercase) linked to an account, as GitHub maps them.
    emails: BTreeMap<String, String>,
    /// Orgs whose team memberships the token may not read (GitHub answers 403).
    unreadable_orgs: Vec<String>,
    /// Injected failures: (method, path suffix, status), each answered once, in order.
    failures: Vec<(String, String, u16)>,
}

/// The fake GitHub server.
pub struct FakeGitHub {
    url: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        // Not joined: a client still holding a connection would keep the graceful shutdown
        // (and the test) waiting; the server thread ends on its own.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl FakeGitHub {
    /// A fake answering at `http://127.0.0.1:PORT` that accepts `token` as [`BOT_LOGIN`].
    pub fn start(token: &str) -> FakeGitHub {
        Self::start_at(token, "")
    }

    /// A fake whose API lives under `prefix`, as GitHub Enterprise's `/api/v3`.
    pub fn start_at(token: &str, prefix: &str) -> FakeGitHub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake GitHub");
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("non-blocking listener");
        let origin = format!("http://127.0.0.1:{port}");
        let prefix = prefix.trim_end_matches('/').to_string();
        let state = Arc::new(Mutex::new(State {
            origin: origin.clone(),
            prefix: prefix.clone(),
            tokens: BTreeMap::from([(token.to_string(), BOT_LOGIN.to_string())]),
            apps: BTreeMap::new(),
            repos: Vec::new(),
            pulls: Vec::new(),
            comments: Vec::new(),
            reviews: Vec::new(),
            permissions: BTreeMap::new(),
            teams: BTreeMap::new(),
            user_ids: BTreeMap::new(),
            next_id: 1000,
            next_number: 1,
            last_time: 0,
            comment_versions: BTreeMap::new(),
            limits: VecDeque::new(),
            outages: Vec::new(),
            chaos: None,
            missing: Vec::new(),
            requests: Vec::new(),
            emails: BTreeMap::new(),
            unreadable_orgs: Vec::new(),
            failures: Vec::new(),
        }));
        let app = Router::new().fallback(serve).with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake GitHub runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .expect("fake GitHub serves");
            });
        });
        FakeGitHub {
            url: format!("{origin}{prefix}"),
            state,
            shutdown: Some(tx),
        }
    }

    /// The API base URL to give the client.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake GitHub state")
    }

    /// Accepts one more token, as `login`.
    pub fn add_token(&self, token: &str, login: &str) {
        self.lock().tokens.insert(token.to_string(), login.to_string());
    }

    /// Serves `owner/name` from the bare repository at `bare`.
    pub fn add_repo(&self, owner: &str, name: &str, bare: &Path) {
        self.lock().repos.push(FakeRepo {
            owner: owner.to_string(),
            name: name.to_string(),
            bare: bare.to_path_buf(),
        });
    }

    /// Registers a GitHub App whose JWTs are signed by `private_key_pem` and may get tokens
    /// for `installation_id`; its tokens act as [`APP_LOGIN`].
    pub fn add_app(&self, app_id: u64, installation_id: u64, private_key_pem: &str) {
        let dir = TempDir::new("app-key");
        std::fs::write(dir.path().join("key.pem"), private_key_pem).expect("write the app key");
        self.lock().apps.insert(
            app_id,
            App {
                installation_id,
                private_key: dir,
            },
        );
    }

    /// The user's role on every repository: admin, maintain, write, triage, read or none.
    pub fn set_permission(&self, login: &str, role: &str) {
        self.lock()
            .permissions
            .insert(login.to_ascii_lowercase(), role.to_string());
    }

    /// An active member of `org/team`.
    pub fn add_team_member(&self, org: &str, team: &str, login: &str) {
        self.set_team_membership(org, team, login, "active");
    }

    /// A membership in `state` (`active` or `pending`, an invitation not yet accepted).
    pub fn set_team_membership(&self, org: &str, team: &str, login: &str, state: &str) {
        self.lock()
            .teams
            .entry((org.to_ascii_lowercase(), team.to_ascii_lowercase()))
            .or_default()
            .insert(login.to_ascii_lowercase(), state.to_string());
    }

    /// A person opens a pull request from `head` (which must exist in the bare repository).
    pub fn open_pull_as(
        &self,
        login: &str,
        owner: &str,
        name: &str,
        head: &str,
        base: &str,
        title: &str,
    ) -> u64 {
        let mut state = self.lock();
        let repo = state.repo_index(owner, name).expect("the repository was added");
        let pr = state
            .open_pull(login, repo, head, base, title, "")
            .expect("the pull request opens");
        pr["number"].as_u64().expect("a number")
    }

    /// `login` comments on the pull request; returns the comment id.
    pub fn comment_as(&self, login: &str, pr: u64, body: &str) -> u64 {
        let mut state = self.lock();
        assert!(state.pull_index(pr).is_some(), "no pull request #{pr}");
        state.add_comment(login, pr, body)
    }

    /// The writer edits the comment (updated_at moves on).
    pub fn edit_comment_as(&self, id: u64, body: &str) {
        let mut state = self.lock();
        let now = state.tick();
        let c = state
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .expect("the comment exists");
        c.body = body.to_string();
        c.updated_at = now;
        let pr = c.pr;
        state.bump_comments(pr);
    }

    pub fn delete_comment(&self, id: u64) {
        let mut state = self.lock();
        let pr = state
            .comments
            .iter()
            .find(|c| c.id == id)
            .expect("the comment exists")
            .pr;
        state.comments.retain(|c| c.id != id);
        state.bump_comments(pr);
    }

    /// `login` submits a review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`); returns its id.
    pub fn review_as(&self, login: &str, pr: u64, review_state: &str, body: &str) -> u64 {
        let mut state = self.lock();
        let i = state.pull_index(pr).expect("the pull request exists");
        let commit_id = state.head_sha(i);
        let id = state.new_id();
        let submitted_at = state.tick();
        state.reviews.push(ReviewRec {
            id,
            pr,
            author: login.to_string(),
            state: review_state.to_string(),
            body: body.to_string(),
            submitted_at,
            commit_id,
        });
        id
    }

    /// A person merges the pull request with a merge commit: a real git merge in the bare
    /// repository. Returns the merge commit, or why it could not merge.
    pub fn merge_as(&self, login: &str, pr: u64) -> Result<String, String> {
        let mut state = self.lock();
        let i = state.pull_index(pr).ok_or("no such pull request")?;
        state
            .merge(i, login, "merge", None, None, None)
            .map(|v| v["sha"].as_str().unwrap_or_default().to_string())
            .map_err(|(_, v)| v["message"].as_str().unwrap_or_default().to_string())
    }

    /// A person closes the pull request without merging.
    pub fn close_as(&self, login: &str, pr: u64) {
        let mut state = self.lock();
        let i = state.pull_index(pr).expect("the pull request exists");
        state.set_open(i, false);
        state.pulls[i].closed_by = Some(login.to_string());
    }

    /// Who closed the pull request, as the issue's `closed_by` says.
    pub fn closed_by(&self, pr: u64) -> Option<String> {
        let state = self.lock();
        let i = state.pull_index(pr).expect("the pull request exists");
        state.pulls[i].closed_by.clone()
    }

    /// When the pull request was opened (unix seconds, as GitHub stamps it).
    pub fn created_at(&self, pr: u64) -> i64 {
        let state = self.lock();
        let i = state.pull_index(pr).expect("the pull request exists");
        state.pulls[i].created_at
    }

    /// `login` comments on the pull request with `created_at` at unix second `at` (GitHub
    /// stamps to the second: a comment in a pull request's first second has its stamp).
    pub fn comment_at(&self, login: &str, pr: u64, body: &str, at: i64) -> u64 {
        let mut state = self.lock();
        assert!(state.pull_index(pr).is_some(), "no pull request #{pr}");
        let id = state.add_comment(login, pr, body);
        let c = state
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .expect("just added");
        c.created_at = at;
        c.updated_at = at;
        id
    }

    /// Requests `method` to paths ending in `path` (`/pulls`, `/pulls/3`) answer `failure`
    /// for `window`.
    pub fn fail_endpoint(&self, method: &str, path: &str, failure: Injected, window: Duration) {
        self.lock().outages.push(Outage {
            method: method.parse().expect("an HTTP method"),
            path: path.to_string(),
            failure,
            until: std::time::Instant::now() + window,
        });
    }

    /// Every API request fails with probability `rate` (a 502, 503 or a secondary rate limit,
    /// drawn from an RNG seeded with `seed`) for `window`.
    pub fn fail_randomly(&self, rate: f64, seed: u64, window: Duration) {
        use rand::SeedableRng;
        self.lock().chaos = Some(Chaos {
            rate,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            until: std::time::Instant::now() + window,
        });
    }

    /// Ends every injected failure.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.outages.clear();
        state.chaos = None;
    }

    /// Lookups of `login` (its permission, its team memberships) answer 404.
    pub fn not_found_for(&self, login: &str) {
        self.lock().missing.push(login.to_ascii_lowercase());
    }

    /// Requests answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.lock().requests.iter().filter(|r| r.status == status).count()
    }

    /// Commits authored with `email` belong to `login` (GitHub: a verified e-mail of the
    /// account). `<login>@users.noreply.github.com` belongs to `login` without this.
    pub fn link_email(&self, email: &str, login: &str) {
        self.lock()
            .emails
            .insert(email.to_ascii_lowercase(), login.to_string());
    }

    /// The token may not read `org`'s team memberships: GitHub answers 403.
    pub fn hide_teams_of(&self, org: &str) {
        self.lock().unreadable_orgs.push(org.to_ascii_lowercase());
    }

    /// The next `n` `method` requests whose path ends with `suffix` fail with `status`.
    pub fn fail_next(&self, method: &str, suffix: &str, status: u16, n: usize) {
        let mut state = self.lock();
        for _ in 0..n {
            state
                .failures
                .push((method.to_string(), suffix.to_string(), status));
        }
    }

    /// A maintainer dismisses the review (its state becomes `DISMISSED`).
    pub fn dismiss_review(&self, id: u64) {
        let mut state = self.lock();
        let review = state
            .reviews
            .iter_mut()
            .find(|r| r.id == id)
            .expect("the review exists");
        review.state = "DISMISSED".into();
    }

    pub fn pull(&self, pr: u64) -> PullSnapshot {
        let state = self.lock();
        let i = state.pull_index(pr).expect("the pull request exists");
        state.snapshot(i)
    }

    pub fn pulls(&self) -> Vec<PullSnapshot> {
        let state = self.lock();
        (0..state.pulls.len()).map(|i| state.snapshot(i)).collect()
    }

    /// The pull request's comments, oldest first.
    pub fn comments(&self, pr: u64) -> Vec<CommentSnapshot> {
        self.lock()
            .comments
            .iter()
            .filter(|c| c.pr == pr)
            .map(|c| CommentSnapshot {
                id: c.id,
                pr: c.pr,
                author: c.author.clone(),
                body: c.body.clone(),
                created_at: rfc3339(c.created_at),
                updated_at: rfc3339(c.updated_at),
            })
            .collect()
    }

    /// (login, content) of each reaction on the comment.
    pub fn reactions(&self, comment_id: u64) -> Vec<(String, String)> {
        self.lock()
            .comments
            .iter()
            .find(|c| c.id == comment_id)
            .map(|c| c.reactions.iter().map(|r| (r.1.clone(), r.2.clone())).collect())
            .unwrap_or_default()
    }

    /// The next `n` requests get a 429 with `retry-after`.
    pub fn rate_limit_next(&self, n: usize, retry_after: Duration) {
        let mut state = self.lock();
        for _ in 0..n {
            state.limits.push_back(Limit::RetryAfter(retry_after.as_secs()));
        }
    }

    /// The next `n` requests get a 403 with `x-ratelimit-remaining: 0` and a reset `reset_in`
    /// from now (GitHub's primary rate limit).
    pub fn exhaust_next(&self, n: usize, reset_in: Duration) {
        let mut state = self.lock();
        for _ in 0..n {
            state.limits.push_back(Limit::Exhausted(reset_in.as_secs()));
        }
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}

/// Every request: the handling is synchronous (git runs in it), off the async workers.
async fn serve(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = tokio::task::spawn_blocking(move || {
        let mut state = state.lock().expect("fake GitHub state");
        state.handle(&method, &uri, &headers, &body)
    })
    .await
    .expect("the handler does not panic");
    let (status, extra, body) = answer;
    let mut response = if status == StatusCode::NOT_MODIFIED || status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        let mut r = (status, body.to_string()).into_response();
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        r
    };
    for (k, v) in extra {
        response
            .headers_mut()
            .insert(k, HeaderValue::from_str(&v).expect("header value"));
    }
    response
}

type Answer = (StatusCode, Vec<(&'static str, String)>, Value);
type Failure = (StatusCode, Value);

fn fail(status: u16, message: &str) -> Failure {
    (
        StatusCode::from_u16(status).expect("status"),
        json!({"message": message, "documentation_url": DOCS}),
    )
}

fn not_found() -> Failure {
    fail(404, "Not Found")
}

/// git in `dir` as `author` (`author@users.noreply.github.com`), committed by GitHub.
fn run_git(dir: &Path, args: &[&str], author: &str) -> Result<String, String> {
    git_as(
        dir,
        args,
        (author, &format!("{author}@users.noreply.github.com")),
        ("GitHub", "noreply@github.com"),
    )
}

fn b64url(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()
}

impl State {
    fn tick(&mut self) -> i64 {
        // Strictly increasing seconds: an edit is always later than its comment.
        self.last_time = unix_now().max(self.last_time + 1);
        self.last_time
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn user_id(&mut self, login: &str) -> u64 {
        let next = self.user_ids.len() as u64 + 1;
        *self.user_ids.entry(login.to_ascii_lowercase()).or_insert(next)
    }

    fn user(&mut self, login: &str) -> Value {
        let id = self.user_id(login);
        json!({
            "login": login,
            "id": id,
            "node_id": format!("MDQ6VXNlcj{id}"),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
            "gravatar_id": "",
            "url": format!("{}{}/users/{login}", self.origin, self.prefix),
            "html_url": format!("{}/{login}", self.origin),
            "type": if login.ends_with("[bot]") { "Bot" } else { "User" },
            "site_admin": false
        })
    }

    fn api(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }

    fn repo_index(&self, owner: &str, name: &str) -> Option<usize> {
        self.repos
            .iter()
            .position(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    fn pull_index(&self, number: u64) -> Option<usize> {
        self.pulls.iter().position(|p| p.number == number)
    }

    fn bump_comments(&mut self, pr: u64) {
        *self.comment_versions.entry(pr).or_insert(0) += 1;
    }

    fn branch_sha(&self, repo: usize, branch: &str) -> Option<String> {
        run_git(
            &self.repos[repo].bare,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
            "GitHub",
        )
        .ok()
    }

    /// The head branch's commit while the pull request is open; the last one seen after.
    fn head_sha(&self, i: usize) -> String {
        let p = &self.pulls[i];
        if p.open {
            self.branch_sha(p.repo, &p.head)
                .unwrap_or_else(|| p.head_sha.clone())
        } else {
            p.head_sha.clone()
        }
    }

    /// GitHub keeps `refs/pull/<n>/head` at the head of every pull request (forks' too), so
    /// clients fetch a pull request's content from the base repository.
    fn sync_pull_ref(&self, repo: usize, number: u64, sha: &str) {
        if !sha.is_empty() {
            let _ = run_git(
                &self.repos[repo].bare,
                &["update-ref", &format!("refs/pull/{number}/head"), sha],
                "GitHub",
            );
        }
    }

    /// `GET /repos/{o}/{r}/pulls/{n}/files`: what the head changes since it left the base
    /// (the three-dot diff), in GitHub's shape; a rename carries `previous_filename`.
    fn files_json(&mut self, i: usize) -> Result<Vec<Value>, Failure> {
        let p = self.pulls[i].clone();
        let r = self.repos[p.repo].clone();
        let head = self.head_sha(i);
        self.sync_pull_ref(p.repo, p.number, &head);
        let base = self.branch_sha(p.repo, &p.base).ok_or_else(not_found)?;
        let out = run_git(
            &r.bare,
            &["diff", "--name-status", "-M", &format!("{base}...{head}")],
            "GitHub",
        )
        .map_err(|e| fail(500, &e))?;
        let mut files = Vec::new();
        for line in out.lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            let (status, filename, previous) = match parts.as_slice() {
                [s, old, new] if s.starts_with('R') => ("renamed", *new, Some(*old)),
                [s, f] if s.starts_with('A') => ("added", *f, None),
                [s, f] if s.starts_with('D') => ("removed", *f, None),
                [_, f] => ("modified", *f, None),
                _ => continue,
            };
            let blob =
                run_git(&r.bare, &["rev-parse", &format!("{head}:{filename}")], "GitHub").unwrap_or_default();
            let mut v = json!({
                "sha": blob,
                "filename": filename,
                "status": status,
                "additions": 0,
                "deletions": 0,
                "changes": 0,
                "blob_url": format!("{}/{}/{}/blob/{head}/{filename}", self.origin, r.owner, r.name),
                "raw_url": format!("{}/{}/{}/raw/{head}/{filename}", self.origin, r.owner, r.name),
                "contents_url": format!("{}/repos/{}/{}/contents/{filename}?ref={head}", self.api(), r.owner, r.name),
            });
            if let (Some(previous), Value::Object(map)) = (previous, &mut v) {
                map.insert("previous_filename".into(), Value::String(previous.to_string()));
            }
            files.push(v);
        }
        Ok(files)
    }

    fn snapshot(&self, i: usize) -> PullSnapshot {
        let p = &self.pulls[i];
        PullSnapshot {
            number: p.number,
            owner: self.repos[p.repo].owner.clone(),
            repo: self.repos[p.repo].name.clone(),
            title: p.title.clone(),
            body: p.body.clone(),
            head: p.head.clone(),
            base: p.base.clone(),
            author: p.author.clone(),
            state: if p.open { "open" } else { "closed" }.into(),
            merged: p.merged_at.is_some(),
            merged_by: p.merged_by.clone(),
            merge_commit_sha: p.merge_commit_sha.clone(),
        }
    }

    fn repo_json(&mut self, repo: usize) -> Value {
        let r = self.repos[repo].clone();
        let owner = self.user(&r.owner);
        json!({
            "id": repo + 1,
            "node_id": format!("MDEwOlJlcG9zaXRvcnk{}", repo + 1),
            "name": r.name,
            "full_name": format!("{}/{}", r.owner, r.name),
            "owner": owner,
            "private": true,
            "html_url": format!("{}/{}/{}", self.origin, r.owner, r.name),
            "url": format!("{}/repos/{}/{}", self.api(), r.owner, r.name),
            "default_branch": "main",
            "visibility": "private"
        })
    }

    fn pull_json(&mut self, i: usize, full: bool) -> Value {
        let p = self.pulls[i].clone();
        let r = self.repos[p.repo].clone();
        let repo = self.repo_json(p.repo);
        let author = self.user(&p.author);
        let owner = self.user(&r.owner);
        let head_sha = self.head_sha(i);
        self.sync_pull_ref(p.repo, p.number, &head_sha);
        let base_sha = self.branch_sha(p.repo, &p.base).unwrap_or_default();
        let api = format!("{}/repos/{}/{}", self.api(), r.owner, r.name);
        let html = format!("{}/{}/{}/pull/{}", self.origin, r.owner, r.name, p.number);
        let mut v = json!({
            "url": format!("{api}/pulls/{}", p.number),
            "id": 10_000 + p.number,
            "node_id": format!("MDExOlB1bGxSZXF1ZXN0{}", p.number),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "issue_url": format!("{api}/issues/{}", p.number),
            "commits_url": format!("{api}/pulls/{}/commits", p.number),
            "comments_url": format!("{api}/issues/{}/comments", p.number),
            "statuses_url": format!("{api}/statuses/{head_sha}"),
            "number": p.number,
            "state": if p.open { "open" } else { "closed" },
            "locked": false,
            "title": p.title,
            "user": author,
            "body": p.body,
            "labels": [],
            "milestone": null,
            "active_lock_reason": null,
            "created_at": rfc3339(p.created_at),
            "updated_at": rfc3339(p.updated_at),
            "closed_at": p.closed_at.map(rfc3339),
            "merged_at": p.merged_at.map(rfc3339),
            "merge_commit_sha": p.merge_commit_sha,
            "assignee": null,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": {
                "label": format!("{}:{}", r.owner, p.head),
                "ref": p.head,
                "sha": head_sha,
                "user": owner.clone(),
                "repo": repo.clone()
            },
            "base": {
                "label": format!("{}:{}", r.owner, p.base),
                "ref": p.base,
                "sha": base_sha,
                "user": owner,
                "repo": repo
            },
            "author_association": "COLLABORATOR",
            "auto_merge": null,
            "draft": false
        });
        if full {
            let merged_by = match &p.merged_by {
                Some(login) => self.user(login),
                None => Value::Null,
            };
            let comments = self.comments.iter().filter(|c| c.pr == p.number).count();
            let extra = json!({
                "merged": p.merged_at.is_some(),
                "mergeable": if p.open { Value::Bool(true) } else { Value::Null },
                "rebaseable": p.open,
                "mergeable_state": if p.open { "clean" } else { "unknown" },
                "merged_by": merged_by,
                "comments": comments,
                "review_comments": 0,
                "maintainer_can_modify": false,
                "commits": 1,
                "additions": 0,
                "deletions": 0,
                "changed_files": 0
            });
            if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
                v.extend(extra);
            }
        }
        v
    }

    /// `GET /repos/{o}/{r}/commits/{sha}`: the git commit, and the accounts its author and
    /// committer e-mails belong to (null when none).
    fn commit_json(&mut self, repo: usize, sha: &str) -> Result<Value, Failure> {
        let format = "%H%n%an%n%ae%n%aI%n%cn%n%ce%n%cI%n%T%n%P%n%B";
        let shown = run_git(
            &self.repos[repo].bare,
            &[
                "show",
                "-s",
                &format!("--format={format}"),
                &format!("{sha}^{{commit}}"),
            ],
            "GitHub",
        )
        .map_err(|_| fail(422, &format!("No commit found for SHA: {sha}")))?;
        let lines: Vec<&str> = shown.lines().collect();
        let field = |i: usize| lines.get(i).copied().unwrap_or_default().to_string();
        let message = lines.get(9..).map(|l| l.join("\n")).unwrap_or_default();
        let account = |state: &mut State, email: &str| {
            let email = email.to_ascii_lowercase();
            let login = state.emails.get(&email).cloned().or_else(|| {
                email
                    .strip_suffix("@users.noreply.github.com")
                    .map(|l| l.rsplit('+').next().unwrap_or(l).to_string())
            });
            match login {
                Some(login) => state.user(&login),
                None => Value::Null,
            }
        };
        let (id, author_email, committer_email) = (field(0), field(2), field(5));
        let author = account(self, &author_email);
        let committer = account(self, &committer_email);
        let r = self.repos[repo].clone();
        let api = format!("{}/repos/{}/{}", self.api(), r.owner, r.name);
        let parents: Vec<Value> = field(8)
            .split_whitespace()
            .map(|p| json!({"sha": p, "url": format!("{api}/commits/{p}")}))
            .collect();
        Ok(json!({
            "sha": id,
            "node_id": format!("C_{id}"),
            "commit": {
                "author": {"name": field(1), "email": author_email, "date": field(3)},
                "committer": {"name": field(4), "email": committer_email, "date": field(6)},
                "message": message,
                "tree": {"sha": field(7), "url": format!("{api}/git/trees/{}", field(7))},
                "url": format!("{api}/git/commits/{id}"),
                "comment_count": 0,
                "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null}
            },
            "url": format!("{api}/commits/{id}"),
            "html_url": format!("{}/{}/{}/commit/{id}", self.origin, r.owner, r.name),
            "comments_url": format!("{api}/commits/{id}/comments"),
            "author": author,
            "committer": committer,
            "parents": parents,
            "stats": {"total": 0, "additions": 0, "deletions": 0},
            "files": []
        }))
    }

    /// `GET /repos/{o}/{r}/issues/{n}` of a pull request: the issue view, with `closed_by`.
    fn issue_json(&mut self, i: usize) -> Value {
        let p = self.pulls[i].clone();
        let r = self.repos[p.repo].clone();
        let user = self.user(&p.author);
        let closed_by = match &p.closed_by {
            Some(login) if !p.open => self.user(login),
            _ => Value::Null,
        };
        let api = format!("{}/repos/{}/{}", self.api(), r.owner, r.name);
        let html = format!("{}/{}/{}/pull/{}", self.origin, r.owner, r.name, p.number);
        let comments = self.comments.iter().filter(|c| c.pr == p.number).count();
        json!({
            "url": format!("{api}/issues/{}", p.number),
            "repository_url": api,
            "comments_url": format!("{api}/issues/{}/comments", p.number),
            "html_url": html,
            "id": 20_000 + p.number,
            "node_id": format!("MDU6SXNzdWU{}", p.number),
            "number": p.number,
            "title": p.title,
            "user": user,
            "labels": [],
            "state": if p.open { "open" } else { "closed" },
            "state_reason": null,
            "locked": false,
            "assignee": null,
            "assignees": [],
            "milestone": null,
            "comments": comments,
            "created_at": rfc3339(p.created_at),
            "updated_at": rfc3339(p.updated_at),
            "closed_at": p.closed_at.map(rfc3339),
            "author_association": "COLLABORATOR",
            "active_lock_reason": null,
            "pull_request": {
                "url": format!("{api}/pulls/{}", p.number),
                "html_url": html,
                "diff_url": format!("{html}.diff"),
                "patch_url": format!("{html}.patch"),
                "merged_at": p.merged_at.map(rfc3339)
            },
            "body": p.body,
            "closed_by": closed_by
        })
    }

    fn comment_json(&mut self, c: &CommentRec) -> Value {
        let p = self.pull_index(c.pr).map(|i| self.pulls[i].repo).unwrap_or(0);
        let r = self.repos[p].clone();
        let user = self.user(&c.author);
        let api = format!("{}/repos/{}/{}", self.api(), r.owner, r.name);
        let count = |content: &str| c.reactions.iter().filter(|x| x.2 == content).count();
        json!({
            "url": format!("{api}/issues/comments/{}", c.id),
            "html_url": format!("{}/{}/{}/pull/{}#issuecomment-{}", self.origin, r.owner, r.name, c.pr, c.id),
            "issue_url": format!("{api}/issues/{}", c.pr),
            "id": c.id,
            "node_id": format!("MDEyOklzc3VlQ29tbWVudA{}", c.id),
            "user": user,
            "created_at": rfc3339(c.created_at),
            "updated_at": rfc3339(c.updated_at),
            "author_association": "COLLABORATOR",
            "body": c.body,
            "reactions": {
                "url": format!("{api}/issues/comments/{}/reactions", c.id),
                "total_count": c.reactions.len(),
                "+1": count("+1"), "-1": count("-1"), "laugh": count("laugh"),
                "hooray": count("hooray"), "confused": count("confused"), "heart": count("heart"),
                "rocket": count("rocket"), "eyes": count("eyes")
            },
            "performed_via_github_app": null
        })
    }

    fn add_comment(&mut self, login: &str, pr: u64, body: &str) -> u64 {
        let id = self.new_id();
        let now = self.tick();
        self.comments.push(CommentRec {
            id,
            pr,
            author: login.to_string(),
            body: body.to_string(),
            created_at: now,
            updated_at: now,
            reactions: Vec::new(),
        });
        self.bump_comments(pr);
        id
    }

    fn open_pull(
        &mut self,
        login: &str,
        repo: usize,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<Value, Failure> {
        let owner = self.repos[repo].owner.clone();
        // `owner:branch` names a branch of the same repository here (no forks).
        let head = head.split_once(':').map(|(_, b)| b).unwrap_or(head).to_string();
        let invalid = |field: &str| {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Validation Failed", "errors": [
                    {"resource": "PullRequest", "field": field, "code": "invalid"}
                ], "documentation_url": DOCS}),
            )
        };
        if title.is_empty() {
            return Err(invalid("title"));
        }
        let Some(head_sha) = self.branch_sha(repo, &head) else {
            return Err(invalid("head"));
        };
        if self.branch_sha(repo, base).is_none() {
            return Err(invalid("base"));
        }
        if self
            .pulls
            .iter()
            .any(|p| p.repo == repo && p.open && p.head == head && p.base == base)
        {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest",
                    "code": "custom", "message": format!("A pull request already exists for {owner}:{head}.")}],
                    "documentation_url": DOCS}),
            ));
        }
        let number = self.next_number;
        self.next_number += 1;
        let now = self.tick();
        self.pulls.push(Pull {
            number,
            repo,
            title: title.to_string(),
            body: body.to_string(),
            head,
            base: base.to_string(),
            author: login.to_string(),
            open: true,
            merged_by: None,
            closed_by: None,
            merge_commit_sha: None,
            head_sha,
            created_at: now,
            updated_at: now,
            closed_at: None,
            merged_at: None,
        });
        let i = self.pulls.len() - 1;
        Ok(self.pull_json(i, true))
    }

    fn set_open(&mut self, i: usize, open: bool) {
        let sha = self.head_sha(i);
        let now = self.tick();
        let p = &mut self.pulls[i];
        p.head_sha = sha;
        p.open = open;
        p.updated_at = now;
        p.closed_at = if open { None } else { Some(now) };
    }

    /// A real merge in the bare repository, through a temporary clone.
    fn merge(
        &mut self,
        i: usize,
        login: &str,
        method: &str,
        title: Option<&str>,
        message: Option<&str>,
        sha: Option<&str>,
    ) -> Result<Value, Failure> {
        let p = self.pulls[i].clone();
        if !p.open {
            return Err(fail(405, "Pull Request is not mergeable"));
        }
        let head_sha = self.head_sha(i);
        if let Some(sha) = sha
            && sha != head_sha
        {
            return Err(fail(
                409,
                "Head branch was modified. Review and try the merge again.",
            ));
        }
        let r = self.repos[p.repo].clone();
        let title = title.map(str::to_string).unwrap_or_else(|| match method {
            "squash" => format!("{} (#{})", p.title, p.number),
            _ => format!("Merge pull request #{} from {}/{}", p.number, r.owner, p.head),
        });
        let message = message.map(str::to_string).unwrap_or_else(|| p.title.clone());
        if !matches!(method, "merge" | "squash" | "rebase") {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": format!("Invalid merge_method {method:?}"), "documentation_url": DOCS}),
            ));
        }
        let merge = Merge {
            base: &p.base,
            head: &p.head,
            method,
            title: &title,
            message: &message,
        };
        let merged =
            git_merge(&r.bare, &merge, |dir, args| run_git(dir, args, login)).map_err(|e| match e {
                MergeFailure::Conflict(e) => {
                    eprintln!("fake GitHub: #{} does not merge: {e}", p.number);
                    fail(405, "Pull Request is not mergeable")
                }
                MergeFailure::Broken(e) => fail(500, &e),
            })?;
        let now = self.tick();
        let pull = &mut self.pulls[i];
        pull.head_sha = head_sha;
        pull.open = false;
        pull.merged_by = Some(login.to_string());
        pull.closed_by = Some(login.to_string());
        pull.merge_commit_sha = Some(merged.clone());
        pull.merged_at = Some(now);
        pull.closed_at = Some(now);
        pull.updated_at = now;
        Ok(json!({"sha": merged, "merged": true, "message": "Pull Request successfully merged"}))
    }

    /// A page of `items` with GitHub's `Link` header.
    fn page(
        &self,
        path: &str,
        query: &BTreeMap<String, String>,
        items: Vec<Value>,
    ) -> (Vec<(&'static str, String)>, Value) {
        let per_page = query
            .get("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(30)
            .clamp(1, 100);
        let page = query
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let last = items.len().div_ceil(per_page).max(1);
        let link_to = |n: usize| {
            let mut q = query.clone();
            q.insert("page".into(), n.to_string());
            q.insert("per_page".into(), per_page.to_string());
            let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
            format!("<{}{path}?{}>", self.api(), qs.join("&"))
        };
        let mut links = Vec::new();
        if page < last {
            links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
            links.push(format!("{}; rel=\"last\"", link_to(last)));
        }
        if page > 1 {
            links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
            links.push(format!("{}; rel=\"first\"", link_to(1)));
        }
        let slice: Vec<Value> = items
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        let headers = if links.is_empty() {
            Vec::new()
        } else {
            vec![("link", links.join(", "))]
        };
        (headers, Value::Array(slice))
    }

    fn verify_jwt(&self, jwt: &str, app_id: u64) -> bool {
        let Some(app) = self.apps.get(&app_id) else {
            return false;
        };
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return false;
        };
        let (Some(h), Some(c), Some(sig)) = (b64url(header), b64url(claims), b64url(signature)) else {
            return false;
        };
        let (Ok(h), Ok(c)) = (
            serde_json::from_slice::<Value>(&h),
            serde_json::from_slice::<Value>(&c),
        ) else {
            return false;
        };
        let iss = c["iss"]
            .as_u64()
            .or_else(|| c["iss"].as_str().and_then(|s| s.parse().ok()));
        let now = unix_now();
        let exp = c["exp"].as_i64().unwrap_or(0);
        let iat = c["iat"].as_i64().unwrap_or(i64::MAX);
        // GitHub: RS256, issued by the app, expiring within ten minutes, not from the future.
        if h["alg"] != "RS256" || iss != Some(app_id) || exp <= now || exp - iat > 600 || iat > now + 60 {
            return false;
        }
        let dir = app.private_key.path();
        std::fs::write(dir.join("signed"), format!("{header}.{claims}")).expect("write the signed part");
        std::fs::write(dir.join("signature"), sig).expect("write the signature");
        Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-prverify",
                "key.pem",
                "-signature",
                "signature",
                "signed",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn handle(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Answer {
        let full_path = uri.path().to_string();
        let path = full_path
            .strip_prefix(self.prefix.as_str())
            .filter(|p| p.starts_with('/') || p.is_empty())
            .map(str::to_string);
        let query = uri.query().unwrap_or_default().to_string();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")))
            .map(str::to_string);
        let login = auth.as_ref().and_then(|t| self.tokens.get(t)).cloned();
        let if_none_match = headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let injected = path.as_deref().and_then(|p| {
            self.failures
                .iter()
                .position(|(m, suffix, _)| m == method.as_str() && p.ends_with(suffix.as_str()))
        });
        let (status, extra, value) = match path {
            _ if injected.is_some() => {
                let (_, _, code) = self.failures.remove(injected.expect("checked"));
                let (s, v) = fail(code, "Server Error");
                (s, Vec::new(), v)
            }
            None => {
                let (s, v) = not_found();
                (s, Vec::new(), v)
            }
            Some(path) => self.route(
                method,
                &path,
                &query,
                auth.as_deref(),
                login.as_deref(),
                if_none_match.as_deref(),
                body,
            ),
        };
        self.requests.push(LoggedRequest {
            method: method.to_string(),
            path: full_path
                .strip_prefix(self.prefix.as_str())
                .unwrap_or(&full_path)
                .to_string(),
            query,
            status: status.as_u16(),
            login,
            if_none_match,
        });
        let reset = (unix_now() + 3600).to_string();
        let mut extra = extra;
        if !extra.iter().any(|(k, _)| *k == "x-ratelimit-remaining") {
            extra.push(("x-ratelimit-limit", "5000".into()));
            extra.push(("x-ratelimit-remaining", "4999".into()));
            extra.push(("x-ratelimit-reset", reset));
        }
        (status, extra, value)
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        auth: Option<&str>,
        login: Option<&str>,
        if_none_match: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let query = parse_query(query);
        let input: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    let (s, v) = fail(400, "Problems parsing JSON");
                    return (s, Vec::new(), v);
                }
            }
        };
        if let Some(limit) = self.limits.pop_front() {
            let now = unix_now();
            return match limit {
                Limit::RetryAfter(secs) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    vec![("retry-after", secs.to_string())],
                    json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", "documentation_url": DOCS}),
                ),
                Limit::Exhausted(secs) => (
                    StatusCode::FORBIDDEN,
                    vec![
                        ("x-ratelimit-limit", "5000".into()),
                        ("x-ratelimit-remaining", "0".into()),
                        ("x-ratelimit-reset", (now + secs as i64).to_string()),
                    ],
                    json!({"message": "API rate limit exceeded for installation.", "documentation_url": DOCS}),
                ),
            };
        }
        // The token exchange authenticates with the app's JWT, everything else with a token.
        if let (&Method::POST, ["app", "installations", id, "access_tokens"]) = (method, seg.as_slice()) {
            let id: u64 = id.parse().unwrap_or(0);
            let app_id = self
                .apps
                .iter()
                .find(|(_, a)| a.installation_id == id)
                .map(|(k, _)| *k);
            let Some(app_id) = app_id else {
                let (s, v) = not_found();
                return (s, Vec::new(), v);
            };
            let verified = auth.is_some_and(|jwt| self.verify_jwt(jwt, app_id));
            if !verified {
                let (s, v) = fail(401, "A JSON web token could not be decoded");
                return (s, Vec::new(), v);
            }
            let token = format!("ghs_{:032x}", rand::random::<u128>());
            self.tokens.insert(token.clone(), APP_LOGIN.to_string());
            return (
                StatusCode::CREATED,
                Vec::new(),
                json!({"token": token, "expires_at": rfc3339(unix_now() + 3600),
                       "permissions": {"pull_requests": "write", "issues": "write", "contents": "write"},
                       "repository_selection": "all"}),
            );
        }
        let Some(login) = login.map(str::to_string) else {
            let (s, v) = fail(401, "Bad credentials");
            return (s, Vec::new(), v);
        };
        if let Some(failure) = self.injected(method, path) {
            return failure.answer();
        }
        if seg
            .iter()
            .any(|s| self.missing.iter().any(|m| m.eq_ignore_ascii_case(s)))
        {
            let (s, v) = not_found();
            return (s, Vec::new(), v);
        }
        match self.route_api(method, &seg, &query, &login, if_none_match, &input) {
            Ok(answer) => answer,
            Err((s, v)) => (s, Vec::new(), v),
        }
    }

    /// The failure injected for this request, if any.
    fn injected(&mut self, method: &Method, path: &str) -> Option<Injected> {
        use rand::Rng;
        let now = std::time::Instant::now();
        self.outages.retain(|o| o.until > now);
        if let Some(outage) = self
            .outages
            .iter()
            .find(|o| o.method == *method && path.ends_with(&o.path))
        {
            return Some(outage.failure);
        }
        let chaos = self.chaos.as_mut().filter(|c| c.until > now)?;
        if !chaos.rng.gen_bool(chaos.rate) {
            return None;
        }
        Some(match chaos.rng.gen_range(0..3) {
            0 => Injected::ServerError(502),
            1 => Injected::ServerError(503),
            _ => Injected::SecondaryRateLimit { retry_after: 1 },
        })
    }

    fn repo_or_404(&self, owner: &str, name: &str) -> Result<usize, Failure> {
        self.repo_index(owner, name).ok_or_else(not_found)
    }

    fn pull_in(&self, repo: usize, number: &str) -> Result<usize, Failure> {
        let number: u64 = number.parse().map_err(|_| not_found())?;
        self.pull_index(number)
            .filter(|i| self.pulls[*i].repo == repo)
            .ok_or_else(not_found)
    }

    fn comment_in(&self, repo: usize, id: &str) -> Result<usize, Failure> {
        let id: u64 = id.parse().map_err(|_| not_found())?;
        self.comments
            .iter()
            .position(|c| c.id == id)
            .filter(|i| {
                self.pull_index(self.comments[*i].pr)
                    .is_some_and(|p| self.pulls[p].repo == repo)
            })
            .ok_or_else(not_found)
    }

    fn route_api(
        &mut self,
        method: &Method,
        seg: &[&str],
        query: &BTreeMap<String, String>,
        login: &str,
        if_none_match: Option<&str>,
        input: &Value,
    ) -> Result<Answer, Failure> {
        let ok = |v: Value| Ok((StatusCode::OK, Vec::new(), v));
        let created = |v: Value| Ok((StatusCode::CREATED, Vec::new(), v));
        let text = |key: &str| input.get(key).and_then(Value::as_str).map(str::to_string);
        match (method.clone(), seg) {
            (Method::GET, ["user"]) => {
                let user = self.user(login);
                ok(user)
            }
            (Method::GET, ["repos", o, r, "pulls"]) => {
                let repo = self.repo_or_404(o, r)?;
                let want_state = query
                    .get("state")
                    .map(String::as_str)
                    .unwrap_or("open")
                    .to_string();
                let head = query.get("head").cloned();
                let base = query.get("base").cloned();
                let owner = self.repos[repo].owner.clone();
                let mut indexes: Vec<usize> = (0..self.pulls.len())
                    .filter(|i| {
                        let p = &self.pulls[*i];
                        p.repo == repo
                            && match want_state.as_str() {
                                "all" => true,
                                "closed" => !p.open,
                                _ => p.open,
                            }
                            && head.as_ref().is_none_or(|h| {
                                // GitHub filters by `user:ref-name`.
                                h.split_once(':')
                                    .is_some_and(|(u, b)| u.eq_ignore_ascii_case(&owner) && b == p.head)
                            })
                            && base.as_ref().is_none_or(|b| *b == p.base)
                    })
                    .collect();
                indexes.reverse(); // newest first
                let items = indexes.into_iter().map(|i| self.pull_json(i, false)).collect();
                let (headers, v) = self.page(&format!("/repos/{o}/{r}/pulls"), query, items);
                Ok((StatusCode::OK, headers, v))
            }
            (Method::POST, ["repos", o, r, "pulls"]) => {
                let repo = self.repo_or_404(o, r)?;
                let pr = self.open_pull(
                    login,
                    repo,
                    &text("head").unwrap_or_default(),
                    &text("base").unwrap_or_default(),
                    &text("title").unwrap_or_default(),
                    &text("body").unwrap_or_default(),
                )?;
                created(pr)
            }
            (Method::GET, ["repos", o, r, "pulls", n]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                ok(self.pull_json(i, true))
            }
            (Method::PATCH, ["repos", o, r, "pulls", n]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                if let Some(title) = text("title") {
                    self.pulls[i].title = title;
                }
                if let Some(body) = text("body") {
                    self.pulls[i].body = body;
                }
                if let Some(base) = text("base") {
                    self.pulls[i].base = base;
                }
                match text("state").as_deref() {
                    Some("closed") if self.pulls[i].open => {
                        self.set_open(i, false);
                        self.pulls[i].closed_by = Some(login.to_string());
                    }
                    Some("open") if !self.pulls[i].open => {
                        if self.pulls[i].merged_at.is_some() {
                            return Err(fail(
                                422,
                                "state cannot be changed. The pull request cannot be reopened.",
                            ));
                        }
                        self.set_open(i, true)
                    }
                    _ => self.pulls[i].updated_at = self.tick(),
                }
                ok(self.pull_json(i, true))
            }
            (Method::PUT, ["repos", o, r, "pulls", n, "merge"]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                let method = text("merge_method").unwrap_or_else(|| "merge".into());
                let merged = self.merge(
                    i,
                    login,
                    &method,
                    text("commit_title").as_deref(),
                    text("commit_message").as_deref(),
                    text("sha").as_deref(),
                )?;
                ok(merged)
            }
            (Method::GET, ["repos", o, r, "pulls", n, "files"]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                let items = self.files_json(i)?;
                let (headers, v) = self.page(&format!("/repos/{o}/{r}/pulls/{n}/files"), query, items);
                Ok((StatusCode::OK, headers, v))
            }
            (Method::GET, ["repos", o, r, "pulls", n, "reviews"]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                let number = self.pulls[i].number;
                let (owner, name) = (self.repos[repo].owner.clone(), self.repos[repo].name.clone());
                let reviews: Vec<ReviewRec> =
                    self.reviews.iter().filter(|x| x.pr == number).cloned().collect();
                let mut items = Vec::new();
                for x in reviews {
                    let user = self.user(&x.author);
                    items.push(json!({
                        "id": x.id,
                        "node_id": format!("MDE3OlB1bGxSZXF1ZXN0UmV2aWV3{}", x.id),
                        "user": user,
                        "body": x.body,
                        "state": x.state,
                        "html_url": format!("{}/{owner}/{name}/pull/{number}#pullrequestreview-{}", self.origin, x.id),
                        "pull_request_url": format!("{}/repos/{owner}/{name}/pulls/{number}", self.api()),
                        "author_association": "COLLABORATOR",
                        "submitted_at": rfc3339(x.submitted_at),
                        "commit_id": x.commit_id
                    }));
                }
                let (headers, v) = self.page(&format!("/repos/{o}/{r}/pulls/{n}/reviews"), query, items);
                Ok((StatusCode::OK, headers, v))
            }
            (Method::GET, ["repos", o, r, "issues", n, "comments"]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                let number = self.pulls[i].number;
                let version = self.comment_versions.get(&number).copied().unwrap_or(0);
                let per_page = query.get("per_page").cloned().unwrap_or_else(|| "30".into());
                let page = query.get("page").cloned().unwrap_or_else(|| "1".into());
                // GitHub: `since` (ISO 8601) keeps the comments with updated_at >= since.
                let since = match query.get("since") {
                    None => None,
                    Some(text) => match text.parse::<jiff::Timestamp>() {
                        Ok(at) => Some(at.as_second()),
                        Err(_) => return Err(fail(422, "Invalid value for parameter 'since'")),
                    },
                };
                let etag = format!(
                    "W/\"c{number}-v{version}-p{page}-n{per_page}-s{}\"",
                    since.unwrap_or(0)
                );
                if if_none_match == Some(etag.as_str()) {
                    return Ok((StatusCode::NOT_MODIFIED, vec![("etag", etag)], Value::Null));
                }
                let comments: Vec<CommentRec> = self
                    .comments
                    .iter()
                    .filter(|c| c.pr == number && since.is_none_or(|since| c.updated_at >= since))
                    .cloned()
                    .collect();
                let items = comments.iter().map(|c| self.comment_json(c)).collect();
                let (mut headers, v) =
                    self.page(&format!("/repos/{o}/{r}/issues/{n}/comments"), query, items);
                headers.push(("etag", etag));
                Ok((StatusCode::OK, headers, v))
            }
            (Method::POST, ["repos", o, r, "issues", n, "comments"]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                let Some(body) = text("body") else {
                    return Err(fail(422, "Invalid request.\n\n\"body\" wasn't supplied."));
                };
                let number = self.pulls[i].number;
                let id = self.add_comment(login, number, &body);
                let c = self
                    .comments
                    .iter()
                    .find(|c| c.id == id)
                    .cloned()
                    .expect("just added");
                created(self.comment_json(&c))
            }
            (Method::GET, ["repos", o, r, "issues", "comments", id]) => {
                let repo = self.repo_or_404(o, r)?;
                let c = self.comments[self.comment_in(repo, id)?].clone();
                ok(self.comment_json(&c))
            }
            (Method::PATCH, ["repos", o, r, "issues", "comments", id]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.comment_in(repo, id)?;
                let Some(body) = text("body") else {
                    return Err(fail(422, "Invalid request.\n\n\"body\" wasn't supplied."));
                };
                let now = self.tick();
                self.comments[i].body = body;
                self.comments[i].updated_at = now;
                let pr = self.comments[i].pr;
                self.bump_comments(pr);
                let c = self.comments[i].clone();
                ok(self.comment_json(&c))
            }
            (Method::DELETE, ["repos", o, r, "issues", "comments", id]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.comment_in(repo, id)?;
                let c = self.comments.remove(i);
                self.bump_comments(c.pr);
                Ok((StatusCode::NO_CONTENT, Vec::new(), Value::Null))
            }
            (Method::POST, ["repos", o, r, "issues", "comments", id, "reactions"]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.comment_in(repo, id)?;
                let content = text("content").unwrap_or_default();
                let valid = [
                    "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
                ];
                if !valid.contains(&content.as_str()) {
                    return Err(fail(422, "Validation Failed"));
                }
                let user = self.user(login);
                if let Some(existing) = self.comments[i]
                    .reactions
                    .iter()
                    .find(|x| x.1 == login && x.2 == content)
                    .cloned()
                {
                    return ok(
                        json!({"id": existing.0, "node_id": format!("REA{}", existing.0), "user": user,
                        "content": existing.2, "created_at": rfc3339(existing.3)}),
                    );
                }
                let rid = self.new_id();
                let now = self.tick();
                self.comments[i]
                    .reactions
                    .push((rid, login.to_string(), content.clone(), now));
                created(
                    json!({"id": rid, "node_id": format!("REA{rid}"), "user": user, "content": content,
                    "created_at": rfc3339(now)}),
                )
            }
            (Method::GET, ["repos", o, r, "commits", sha]) => {
                let repo = self.repo_or_404(o, r)?;
                self.commit_json(repo, sha)
                    .map(|v| (StatusCode::OK, Vec::new(), v))
            }
            (Method::GET, ["repos", o, r, "issues", n]) => {
                let repo = self.repo_or_404(o, r)?;
                let i = self.pull_in(repo, n)?;
                ok(self.issue_json(i))
            }
            (Method::GET, ["repos", o, r, "collaborators", user, "permission"]) => {
                self.repo_or_404(o, r)?;
                if user.ends_with("[bot]") {
                    // GitHub: "<login> is not a user".
                    return Err(not_found());
                }
                let role = self
                    .permissions
                    .get(&user.to_ascii_lowercase())
                    .cloned()
                    .unwrap_or_else(|| "none".into());
                // The legacy field knows only admin/write/read/none.
                let legacy = match role.as_str() {
                    "admin" => "admin",
                    "maintain" | "write" => "write",
                    "triage" | "read" => "read",
                    _ => "none",
                };
                let user = self.user(user);
                ok(json!({"permission": legacy, "role_name": role, "user": user}))
            }
            (Method::GET, ["orgs", org, "teams", team, "memberships", user]) => {
                if self.unreadable_orgs.contains(&org.to_ascii_lowercase()) {
                    return Err(fail(
                        403,
                        "You must be a member of the organization to read its team memberships",
                    ));
                }
                let state = self
                    .teams
                    .get(&(org.to_ascii_lowercase(), team.to_ascii_lowercase()))
                    .and_then(|m| m.get(&user.to_ascii_lowercase()))
                    .cloned()
                    .ok_or_else(not_found)?;
                ok(json!({
                    "url": format!("{}/organizations/1/team/1/memberships/{user}", self.api()),
                    "role": "member",
                    "state": state
                }))
            }
            _ => Err(not_found()),
        }
    }
}
