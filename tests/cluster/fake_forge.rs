//! What the loopback forges share: the server (axum on 127.0.0.1:0 in its own thread and
//! runtime, stopped on Drop), the request plumbing (percent-decoding, queries, a log), real git
//! merges in the bare repositories, and one state model of repositories, pull requests (merge
//! requests), comments (notes) with reactions, reviews, permissions, teams and accounts. Each
//! forge's wire shapes live in its own file ([`fake_gitlab`](crate::fake_gitlab),
//! [`fake_gitea`](crate::fake_gitea)); `fake_github` keeps its own state and uses the helpers.

#![allow(dead_code)] // a harness: each test uses a part of it

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::git_remote::TempDir;

/// The login behind the token a fake forge is started with.
pub const BOT_LOGIN: &str = "flaggit-bot";

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// RFC 3339 to the second (GitHub, Gitea).
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .expect("timestamp in range")
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// RFC 3339 with milliseconds (GitLab: `2026-01-01T10:00:00.000Z`).
pub fn rfc3339_millis(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .expect("timestamp in range")
        .strftime("%Y-%m-%dT%H:%M:%S.000Z")
        .to_string()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

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

/// git in `dir` as `author` (`author@users.noreply.example.com`), committed by `committer`.
pub fn run_git(dir: &Path, args: &[&str], author: &str, committer: &str) -> Result<String, String> {
    git_as(
        dir,
        args,
        (author, &format!("{author}@users.noreply.example.com")),
        (
            committer,
            &format!("noreply@{}.example.com", committer.to_ascii_lowercase()),
        ),
    )
}

/// git in `dir` with the author and the committer given as (name, e-mail); its output, or
/// what it said when it failed.
pub fn git_as(
    dir: &Path,
    args: &[&str],
    author: (&str, &str),
    committer: (&str, &str),
) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", author.0)
        .env("GIT_AUTHOR_EMAIL", author.1)
        .env("GIT_COMMITTER_NAME", committer.0)
        .env("GIT_COMMITTER_EMAIL", committer.1)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Why a merge did not happen.
#[derive(Debug)]
pub enum MergeFailure {
    /// The branches do not merge cleanly (or a branch is gone).
    Conflict(String),
    /// The fake itself failed (clone, push).
    Broken(String),
}

/// What to merge, and how: `method` is `merge` (a merge commit), `squash` or `rebase`.
pub struct Merge<'a> {
    pub base: &'a str,
    pub head: &'a str,
    pub method: &'a str,
    pub title: &'a str,
    pub message: &'a str,
}

/// A real merge in the bare repository, through a temporary clone, running git with `git`
/// (which says who merges). Returns the new head of the base branch.
pub fn git_merge(
    bare: &Path,
    merge: &Merge<'_>,
    git: impl Fn(&Path, &[&str]) -> Result<String, String>,
) -> Result<String, MergeFailure> {
    let Merge {
        base,
        head,
        method,
        title,
        message,
    } = *merge;
    let work = TempDir::new("fake-forge-merge");
    let w = work.path();
    let bare = bare.to_str().expect("utf-8 path");
    let git = |args: &[&str]| git(w, args);
    git(&["clone", "--quiet", bare, "."]).map_err(MergeFailure::Broken)?;
    let base_ref = format!("origin/{base}");
    let head_ref = format!("origin/{head}");
    git(&["checkout", "--quiet", "-B", "merge-base", &base_ref]).map_err(MergeFailure::Conflict)?;
    let mut commit_args = vec!["-m", title];
    if !message.is_empty() {
        commit_args.extend(["-m", message]);
    }
    match method {
        "merge" => {
            let mut args = vec!["merge", "--quiet", "--no-ff", "--no-edit"];
            args.extend(commit_args.iter().copied());
            args.push(&head_ref);
            git(&args).map_err(MergeFailure::Conflict)?;
        }
        "squash" => {
            git(&["merge", "--quiet", "--squash", &head_ref]).map_err(MergeFailure::Conflict)?;
            let mut args = vec!["commit", "--quiet"];
            args.extend(commit_args.iter().copied());
            git(&args).map_err(MergeFailure::Conflict)?;
        }
        "rebase" => {
            git(&["checkout", "--quiet", "-B", "merge-base", &head_ref]).map_err(MergeFailure::Conflict)?;
            if let Err(e) = git(&["rebase", "--quiet", "--force-rebase", &base_ref]) {
                let _ = git(&["rebase", "--abort"]);
                return Err(MergeFailure::Conflict(e));
            }
        }
        other => return Err(MergeFailure::Broken(format!("unknown merge method {other:?}"))),
    }
    git(&["push", "--quiet", "origin", &format!("HEAD:refs/heads/{base}")]).map_err(MergeFailure::Broken)?;
    git(&["rev-parse", "HEAD"]).map_err(MergeFailure::Broken)
}

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    /// Path without the API prefix.
    pub path: String,
    pub query: String,
    pub status: u16,
    pub login: Option<String>,
}

/// How a pull request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

#[derive(Clone, Debug)]
pub struct Repo {
    /// The owner, or the whole namespace (`acme/platform`) on GitLab.
    pub owner: String,
    pub name: String,
    pub bare: PathBuf,
    pub id: u64,
}

impl Repo {
    pub fn full_path(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Clone, Debug)]
pub struct Pull {
    /// GitLab's iid, Gitea's index; unique across the fake's repositories.
    pub number: u64,
    pub id: u64,
    pub repo: usize,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub author: String,
    pub state: PullState,
    pub merged_by: Option<String>,
    pub closed_by: Option<String>,
    pub merge_commit_sha: Option<String>,
    pub head_sha: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub merged_at: Option<i64>,
}

/// A comment (GitLab: a note; `system` for GitLab's own notes).
#[derive(Clone, Debug)]
pub struct Note {
    pub id: u64,
    pub pr: u64,
    pub author: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub system: bool,
    /// (login, reaction name as the forge spells it)
    pub reactions: Vec<(String, String)>,
}

/// A submitted review (Gitea) or approval (GitLab).
#[derive(Clone, Debug)]
pub struct ReviewRec {
    pub id: u64,
    pub pr: u64,
    pub author: String,
    /// As the forge spells it (`APPROVED`).
    pub state: String,
    pub body: String,
    pub submitted_at: i64,
    pub dismissed: bool,
}

/// Everything a fake forge holds.
pub struct State {
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    /// `/api/v4`, `/api/v1`
    pub prefix: String,
    pub tokens: BTreeMap<String, String>,
    pub repos: Vec<Repo>,
    pub pulls: Vec<Pull>,
    pub notes: Vec<Note>,
    pub reviews: Vec<ReviewRec>,
    /// The user's access on every repository, in the forge's own terms (GitLab's access
    /// level `30`, Gitea's `write`).
    pub access: BTreeMap<String, String>,
    /// Members (lowercase logins) of each team (lowercase `org/team`; GitLab: a group path).
    pub teams: BTreeMap<String, BTreeSet<String>>,
    /// Accounts by lowercase login, with their ids.
    pub users: BTreeMap<String, u64>,
    /// Commit author e-mails (lowercase) linked to an account.
    pub emails: BTreeMap<String, String>,
    pub next_id: u64,
    pub next_number: u64,
    pub last_time: i64,
    pub requests: Vec<LoggedRequest>,
}

impl State {
    /// Strictly increasing seconds: an edit is always later than its comment.
    pub fn tick(&mut self) -> i64 {
        self.last_time = unix_now().max(self.last_time + 1);
        self.last_time
    }

    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The account's id, creating the account.
    pub fn user_id(&mut self, login: &str) -> u64 {
        let next = self.users.len() as u64 + 1;
        *self.users.entry(login.to_ascii_lowercase()).or_insert(next)
    }

    pub fn login_of(&self, id: u64) -> Option<String> {
        self.users.iter().find(|(_, v)| **v == id).map(|(k, _)| k.clone())
    }

    pub fn api(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }

    pub fn repo_index(&self, full_path: &str) -> Option<usize> {
        self.repos
            .iter()
            .position(|r| r.full_path().eq_ignore_ascii_case(full_path))
    }

    pub fn pull_index(&self, repo: usize, number: u64) -> Option<usize> {
        self.pulls
            .iter()
            .position(|p| p.repo == repo && p.number == number)
    }

    pub fn branch_sha(&self, repo: usize, branch: &str) -> Option<String> {
        run_git(
            &self.repos[repo].bare,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
            "forge",
            "Forge",
        )
        .ok()
    }

    /// The head branch's commit while the pull request is open; the last one seen after.
    pub fn head_sha(&self, i: usize) -> String {
        let p = &self.pulls[i];
        if p.state == PullState::Open {
            self.branch_sha(p.repo, &p.head)
                .unwrap_or_else(|| p.head_sha.clone())
        } else {
            p.head_sha.clone()
        }
    }

    /// Keeps `name` (GitLab `refs/merge-requests/<iid>/head`, Gitea `refs/pull/<n>/head`)
    /// at the head of pull request `i` in the bare repository, as both forges do for every
    /// pull request (forks' too), so clients fetch its content from the base repository.
    pub fn sync_head_ref(&self, i: usize, name: &str) {
        let sha = self.head_sha(i);
        if !sha.is_empty() {
            let bare = &self.repos[self.pulls[i].repo].bare;
            let _ = run_git(bare, &["update-ref", name, &sha], "forge", "Forge");
        }
    }

    /// What the head of pull request `i` changes since it left the base (the three-dot
    /// diff): (status letter `A`, `M`, `D` or `R`, path, path before a rename).
    pub fn changed_files(&self, i: usize) -> Result<Vec<(char, String, Option<String>)>, String> {
        let p = &self.pulls[i];
        let head = self.head_sha(i);
        let base = self
            .branch_sha(p.repo, &p.base)
            .ok_or_else(|| format!("target branch {} does not exist", p.base))?;
        let out = run_git(
            &self.repos[p.repo].bare,
            &["diff", "--name-status", "-M", &format!("{base}...{head}")],
            "forge",
            "Forge",
        )?;
        let mut files = Vec::new();
        for line in out.lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            let status = parts.first().and_then(|s| s.chars().next()).unwrap_or('M');
            match parts.as_slice() {
                [_, old, new] if status == 'R' => files.push(('R', new.to_string(), Some(old.to_string()))),
                [_, path] => files.push((status, path.to_string(), None)),
                _ => {}
            }
        }
        Ok(files)
    }

    /// The author e-mail of a commit, from the bare repository.
    pub fn commit_email(&self, repo: usize, sha: &str) -> Option<(String, String)> {
        let shown = run_git(
            &self.repos[repo].bare,
            &[
                "show",
                "-s",
                "--format=%H%n%ae%n%an%n%aI%n%s",
                &format!("{sha}^{{commit}}"),
            ],
            "forge",
            "Forge",
        )
        .ok()?;
        let mut lines = shown.lines();
        let id = lines.next()?.to_string();
        Some((id, lines.next()?.to_string()))
    }

    /// Opens a pull request from `head` to `base`; Err(message) when a branch is missing or
    /// an open one exists for the same branches.
    pub fn open_pull(
        &mut self,
        login: &str,
        repo: usize,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<usize, String> {
        if title.is_empty() {
            return Err("title is missing".into());
        }
        let head_sha = self
            .branch_sha(repo, head)
            .ok_or_else(|| format!("source branch {head} does not exist"))?;
        if self.branch_sha(repo, base).is_none() {
            return Err(format!("target branch {base} does not exist"));
        }
        if self
            .pulls
            .iter()
            .any(|p| p.repo == repo && p.state == PullState::Open && p.head == head && p.base == base)
        {
            return Err("already exists".into());
        }
        let number = self.next_number;
        self.next_number += 1;
        let id = self.new_id();
        let now = self.tick();
        self.pulls.push(Pull {
            number,
            id,
            repo,
            title: title.to_string(),
            body: body.to_string(),
            head: head.to_string(),
            base: base.to_string(),
            author: login.to_string(),
            state: PullState::Open,
            merged_by: None,
            closed_by: None,
            merge_commit_sha: None,
            head_sha,
            created_at: now,
            updated_at: now,
            closed_at: None,
            merged_at: None,
        });
        Ok(self.pulls.len() - 1)
    }

    pub fn set_state(&mut self, i: usize, open: bool, by: &str) {
        let sha = self.head_sha(i);
        let now = self.tick();
        let p = &mut self.pulls[i];
        p.head_sha = sha;
        p.state = if open { PullState::Open } else { PullState::Closed };
        p.updated_at = now;
        p.closed_at = (!open).then_some(now);
        p.closed_by = (!open).then(|| by.to_string());
    }

    /// A real merge; Err((status, message)) as the forge refuses it.
    pub fn merge(
        &mut self,
        i: usize,
        login: &str,
        method: &str,
        title: &str,
        message: &str,
        committer: &str,
    ) -> Result<String, (u16, String)> {
        let p = self.pulls[i].clone();
        if p.state != PullState::Open {
            return Err((405, "the pull request is not open".into()));
        }
        let head_sha = self.head_sha(i);
        let bare = self.repos[p.repo].bare.clone();
        let merge = Merge {
            base: &p.base,
            head: &p.head,
            method,
            title,
            message,
        };
        let merged = git_merge(&bare, &merge, |dir, args| run_git(dir, args, login, committer)).map_err(
            |e| match e {
                MergeFailure::Conflict(e) => {
                    eprintln!("fake forge: !{} does not merge: {e}", p.number);
                    (406, "Branch cannot be merged".to_string())
                }
                MergeFailure::Broken(e) => (500, e),
            },
        )?;
        let now = self.tick();
        let pull = &mut self.pulls[i];
        pull.head_sha = head_sha;
        pull.state = PullState::Merged;
        pull.merged_by = Some(login.to_string());
        pull.merge_commit_sha = Some(merged.clone());
        pull.merged_at = Some(now);
        pull.closed_at = Some(now);
        pull.updated_at = now;
        Ok(merged)
    }

    pub fn add_note(&mut self, login: &str, pr: u64, body: &str, system: bool) -> u64 {
        let id = self.new_id();
        let now = self.tick();
        self.user_id(login);
        self.notes.push(Note {
            id,
            pr,
            author: login.to_string(),
            body: body.to_string(),
            created_at: now,
            updated_at: now,
            system,
            reactions: Vec::new(),
        });
        id
    }

    /// A page of `items`: `size_key` (`per_page` or `limit`) items from page `page`, with a
    /// `Link` header to the next and previous pages (both forges send one).
    pub fn page(
        &self,
        path: &str,
        query: &BTreeMap<String, String>,
        size_key: &str,
        default_size: usize,
        items: Vec<Value>,
    ) -> (Vec<(&'static str, String)>, Value) {
        let size = query
            .get(size_key)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default_size)
            .clamp(1, 100);
        let page = query
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let last = items.len().div_ceil(size).max(1);
        let link_to = |n: usize| {
            let mut q = query.clone();
            q.insert("page".into(), n.to_string());
            q.insert(size_key.into(), size.to_string());
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
        let total = items.len();
        let slice: Vec<Value> = items.into_iter().skip((page - 1) * size).take(size).collect();
        let mut headers = vec![("x-total", total.to_string())];
        if !links.is_empty() {
            headers.push(("link", links.join(", ")));
        }
        (headers, Value::Array(slice))
    }
}

/// One parsed request, as a forge's routes see it.
pub struct Request<'a> {
    pub method: &'a Method,
    /// Path segments below the API prefix, percent-decoded (`acme%2Fconfig` is one segment
    /// `acme/config`).
    pub segments: Vec<String>,
    /// The path below the prefix as sent (for `Link` headers).
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: Value,
    /// Whose token it carried.
    pub login: String,
}

impl Request<'_> {
    pub fn seg(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }
}

/// An answer: status, extra headers, JSON body (None for no body).
pub type Answer = (StatusCode, Vec<(&'static str, String)>, Option<Value>);

/// A forge's wire dialect: who the token is, and the routes.
pub trait Dialect: Send + Sync + 'static {
    /// The login the request's credentials belong to; None answers 401.
    fn login(&self, state: &State, headers: &HeaderMap) -> Option<String>;
    fn route(&self, state: &mut State, request: &Request<'_>) -> Answer;
    fn unauthorized(&self) -> Value;
}

struct Shared {
    state: Mutex<State>,
    dialect: Box<dyn Dialect>,
}

/// A fake forge server.
pub struct FakeForge {
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeForge {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl FakeForge {
    /// A fake at `http://127.0.0.1:PORT{prefix}` accepting `token` as [`BOT_LOGIN`].
    pub fn start(dialect: Box<dyn Dialect>, prefix: &str, token: &str) -> FakeForge {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake forge");
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("non-blocking listener");
        let origin = format!("http://127.0.0.1:{port}");
        let mut state = State {
            origin: origin.clone(),
            prefix: prefix.to_string(),
            tokens: BTreeMap::from([(token.to_string(), BOT_LOGIN.to_string())]),
            repos: Vec::new(),
            pulls: Vec::new(),
            notes: Vec::new(),
            reviews: Vec::new(),
            access: BTreeMap::new(),
            teams: BTreeMap::new(),
            users: BTreeMap::new(),
            emails: BTreeMap::new(),
            next_id: 1000,
            next_number: 1,
            last_time: 0,
            requests: Vec::new(),
        };
        state.user_id(BOT_LOGIN);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            dialect,
        });
        let app = Router::new().fallback(serve).with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake forge runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .expect("fake forge serves");
            });
        });
        FakeForge {
            url: format!("{origin}{prefix}"),
            shared,
            shutdown: Some(tx),
        }
    }

    /// The API base URL to give the client.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("fake forge state")
    }

    /// Serves `owner/name` (owner may be a nested namespace) from the bare repository.
    pub fn add_repo(&self, full_path: &str, bare: &Path) {
        let mut state = self.lock();
        let (owner, name) = full_path.rsplit_once('/').expect("owner/name");
        let id = state.new_id();
        state.repos.push(Repo {
            owner: owner.to_string(),
            name: name.to_string(),
            bare: bare.to_path_buf(),
            id,
        });
    }

    /// The user's access on every repository, in the forge's own terms.
    pub fn set_access(&self, login: &str, access: &str) {
        let mut state = self.lock();
        state.user_id(login);
        state
            .access
            .insert(login.to_ascii_lowercase(), access.to_string());
    }

    /// A member of team (GitLab: group) `team`.
    pub fn add_team_member(&self, team: &str, login: &str) {
        let mut state = self.lock();
        state.user_id(login);
        state
            .teams
            .entry(team.to_ascii_lowercase())
            .or_default()
            .insert(login.to_ascii_lowercase());
    }

    /// Commits by `email` belong to `login`.
    pub fn link_email(&self, email: &str, login: &str) {
        let mut state = self.lock();
        state.user_id(login);
        state.emails.insert(email.to_ascii_lowercase(), login.to_string());
    }

    fn only_pull(&self, state: &State, number: u64) -> usize {
        state
            .pulls
            .iter()
            .position(|p| p.number == number)
            .unwrap_or_else(|| panic!("no pull request {number}"))
    }

    /// `login` comments; returns the comment's id.
    pub fn comment_as(&self, login: &str, pr: u64, body: &str) -> u64 {
        let mut state = self.lock();
        self.only_pull(&state, pr);
        state.add_note(login, pr, body, false)
    }

    /// The writer edits the comment (updated_at moves on).
    pub fn edit_comment_as(&self, id: u64, body: &str) {
        let mut state = self.lock();
        let now = state.tick();
        let note = state
            .notes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("the comment exists");
        note.body = body.to_string();
        note.updated_at = now;
    }

    /// A GitLab approval: the approval and its system note.
    pub fn approve_as(&self, login: &str, pr: u64) -> u64 {
        let mut state = self.lock();
        self.only_pull(&state, pr);
        state.add_note(login, pr, "approved this merge request", true)
    }

    /// A submitted review (Gitea: `APPROVED`, `REQUEST_CHANGES`, `COMMENT`); returns its id.
    pub fn review_as(&self, login: &str, pr: u64, review_state: &str, body: &str) -> u64 {
        let mut state = self.lock();
        self.only_pull(&state, pr);
        let id = state.new_id();
        let submitted_at = state.tick();
        state.reviews.push(ReviewRec {
            id,
            pr,
            author: login.to_string(),
            state: review_state.to_string(),
            body: body.to_string(),
            submitted_at,
            dismissed: false,
        });
        id
    }

    /// A person merges with a merge commit (a real git merge).
    pub fn merge_as(&self, login: &str, pr: u64) -> Result<String, String> {
        let mut state = self.lock();
        let i = self.only_pull(&state, pr);
        let title = format!(
            "Merge branch '{}' into '{}'",
            state.pulls[i].head, state.pulls[i].base
        );
        state
            .merge(i, login, "merge", &title, "", "Forge")
            .map_err(|(_, m)| m)
    }

    /// A person closes the pull request without merging.
    pub fn close_as(&self, login: &str, pr: u64) {
        let mut state = self.lock();
        let i = self.only_pull(&state, pr);
        state.set_state(i, false, login);
    }

    /// A person opens a pull request from `head` (a branch of the bare repository) into `base`
    /// of the repository `full_path`; returns its number.
    pub fn open_pull_as(&self, login: &str, full_path: &str, head: &str, base: &str, title: &str) -> u64 {
        let mut state = self.lock();
        let repo = state.repo_index(full_path).expect("the repository was added");
        state.user_id(login);
        let i = state
            .open_pull(login, repo, head, base, title, "")
            .expect("the pull request opens");
        state.pulls[i].number
    }

    pub fn pull(&self, pr: u64) -> Pull {
        let state = self.lock();
        state.pulls[self.only_pull(&state, pr)].clone()
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.lock().pulls.clone()
    }

    /// The comments (not system notes) of a pull request, oldest first.
    pub fn comments(&self, pr: u64) -> Vec<Note> {
        self.lock()
            .notes
            .iter()
            .filter(|n| n.pr == pr && !n.system)
            .cloned()
            .collect()
    }

    /// (login, reaction) on a comment.
    pub fn reactions(&self, comment: u64) -> Vec<(String, String)> {
        self.lock()
            .notes
            .iter()
            .find(|n| n.id == comment)
            .map(|n| n.reactions.clone())
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().requests.clone()
    }
}

/// Every request: the handling is synchronous (git runs in it), off the async workers.
async fn serve(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, extra, body) =
        tokio::task::spawn_blocking(move || handle(&shared, &method, &uri, &headers, &body))
            .await
            .expect("the handler does not panic");
    let mut response = match body {
        None => status.into_response(),
        Some(body) => {
            let mut r = (status, body.to_string()).into_response();
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
    };
    for (k, v) in extra {
        response
            .headers_mut()
            .insert(k, HeaderValue::from_str(&v).expect("header value"));
    }
    response
}

fn handle(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Answer {
    let mut state = shared.state.lock().expect("fake forge state");
    let raw = uri.path();
    let path = raw.strip_prefix(state.prefix.as_str()).unwrap_or(raw).to_string();
    let query_text = uri.query().unwrap_or("").to_string();
    let login = shared.dialect.login(&state, headers);
    let answer = match &login {
        None => (
            StatusCode::UNAUTHORIZED,
            Vec::new(),
            Some(shared.dialect.unauthorized()),
        ),
        Some(login) => {
            let body = if body.is_empty() {
                Value::Null
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => {
                        let answer = (
                            StatusCode::BAD_REQUEST,
                            Vec::new(),
                            Some(serde_json::json!({"message": format!("invalid JSON: {e}")})),
                        );
                        log(
                            &mut state,
                            method,
                            &path,
                            &query_text,
                            &answer,
                            Some(login.clone()),
                        );
                        return answer;
                    }
                }
            };
            let request = Request {
                method,
                segments: path
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(percent_decode)
                    .collect(),
                path: path.clone(),
                query: parse_query(&query_text),
                headers,
                body,
                login: login.clone(),
            };
            shared.dialect.route(&mut state, &request)
        }
    };
    log(&mut state, method, &path, &query_text, &answer, login);
    answer
}

fn log(state: &mut State, method: &Method, path: &str, query: &str, answer: &Answer, login: Option<String>) {
    state.requests.push(LoggedRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        status: answer.0.as_u16(),
        login,
    });
}
