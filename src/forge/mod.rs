//! The code forge a config repository lives on (GitHub, GitLab, Gitea/Forgejo): release pull
//! requests, their comments and reviews, and who may approve a release. The [`Forge`] trait is
//! the only thing the controller knows of a forge; [`select::Forges`] picks one per repository.

pub mod bots;
pub mod command;
pub mod owners;
pub mod policy;
pub mod receiver;
pub mod render;

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod hooks;
pub mod plan;
pub mod preview;
pub mod rest;
pub mod select;
pub mod ttl;
mod wire;

pub use crate::api::{MergeMethod, RepositoryPermission as Permission};

/// `owner/name` of a repository on a forge. Forges treat both case-insensitively (GitHub
/// answers `Acme/Config` for `acme/config`), so equality, hashing and order ignore ASCII case.
#[derive(Clone, Debug)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
}

impl RepoId {
    fn key(&self) -> (String, String) {
        (self.owner.to_ascii_lowercase(), self.name.to_ascii_lowercase())
    }
}

impl PartialEq for RepoId {
    fn eq(&self, other: &Self) -> bool {
        self.owner.eq_ignore_ascii_case(&other.owner) && self.name.eq_ignore_ascii_case(&other.name)
    }
}

impl Eq for RepoId {}

impl std::hash::Hash for RepoId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for RepoId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RepoId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl RepoId {
    /// The repository a clone URL points at: `https://host/owner/name(.git)`,
    /// `ssh://git@host/owner/name.git`, `git@host:owner/name.git`. The host is not checked:
    /// the forge's API URL is configured separately (GitHub Enterprise).
    /// A `#branch` suffix (as `status.gitops.repository` writes it) is not part of the path.
    pub fn from_clone_url(url: &str) -> Option<RepoId> {
        let url = url.rsplit_once('#').map_or(url, |(url, _)| url);
        let path = if let Some((_, rest)) = url.split_once("://") {
            rest.split_once('/')?.1
        } else {
            // scp-like `user@host:owner/name.git`
            url.split_once(':')?.1
        };
        let path = path.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut parts = path.rsplitn(2, '/');
        let name = parts.next()?;
        let owner = parts.next()?.rsplit('/').next()?;
        if owner.is_empty() || name.is_empty() {
            return None;
        }
        Some(RepoId {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// Whether a pull request is still open, and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullRequestState {
    Open,
    /// Closed without merging.
    Closed,
    Merged,
}

/// A pull request as the forge reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PullRequest {
    pub number: u64,
    /// The page a person opens (`html_url`).
    pub url: String,
    pub state: PullRequestState,
    pub title: String,
    /// Branch the changes come from.
    pub head: String,
    /// The commit at the head of that branch, when the forge says: a head flaggit did not
    /// push voids the approvals given before it.
    pub head_sha: Option<String>,
    /// Branch the changes go to.
    pub base: String,
    /// Login of the user who opened it.
    pub author: String,
    /// The merge commit, once merged.
    pub merge_commit: Option<String>,
    /// Login of who merged it, once merged.
    pub merged_by: Option<String>,
    /// Login of who closed it without merging, when the forge says (GitHub: the issue's
    /// `closed_by`).
    pub closed_by: Option<String>,
    /// When it was opened, as the forge stamped it (GitHub: to the second).
    pub created_at: Option<Timestamp>,
}

/// An open pull request and the commit its head is at, as a preview needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenPullRequest {
    pub pull: PullRequest,
    /// The head commit (GitHub: `head.sha`); its content is fetched from the forge's ref for
    /// the pull request (GitHub: `refs/pull/<number>/head`), which also holds forks' heads.
    pub head_sha: String,
}

impl OpenPullRequest {
    /// `pull` as a preview takes it: open, into `base`, with the commit its head is at; None
    /// when it goes elsewhere, is not open, or the forge gave no head commit.
    pub fn of(pull: PullRequest, base: &str) -> Option<OpenPullRequest> {
        if pull.state != PullRequestState::Open || pull.base != base {
            return None;
        }
        let head_sha = pull.head_sha.clone().filter(|sha| !sha.is_empty())?;
        Some(OpenPullRequest { pull, head_sha })
    }
}

/// The paths a pull request's changes touch, from each change's path before (when the
/// forge gives one) and after: both sides of a rename, each path once, in the order given.
pub fn changed_paths(changes: impl IntoIterator<Item = (Option<String>, String)>) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for (before, after) in changes {
        for path in before.into_iter().chain([after]) {
            if !path.is_empty() && !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
}

/// A forge account, as a commit's author.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub login: String,
    /// The forge marks it a bot, or it is a well-known bot account.
    pub bot: bool,
}

/// What a new pull request says.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPullRequest {
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
}

impl MergeMethod {
    /// The name GitHub's merge endpoint takes (`merge_method`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Squash => "squash",
            Self::Rebase => "rebase",
        }
    }
}

/// A comment on a pull request (GitHub: an issue comment), or the body of a review.
#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub id: u64,
    /// Login of the writer.
    pub author: String,
    pub body: String,
    pub created_at: Timestamp,
    /// Later than `created_at` when the comment was edited: edited comments never count.
    pub updated_at: Timestamp,
    /// The page of the comment, for links in replies.
    pub url: String,
}

/// The verdict of a pull request review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
    Dismissed,
    Pending,
}

/// A submitted pull request review. An approving review counts as `/approve`.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    pub id: u64,
    pub author: String,
    pub state: ReviewState,
    pub body: String,
    pub submitted_at: Timestamp,
}

/// A reaction the controller puts on a comment: accepted (`+1`), refused (`-1`), or
/// understood and being acted on (`eyes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    PlusOne,
    MinusOne,
    Eyes,
    Rocket,
    Confused,
}

impl Reaction {
    /// The `content` GitHub's reactions endpoint takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlusOne => "+1",
            Self::MinusOne => "-1",
            Self::Eyes => "eyes",
            Self::Rocket => "rocket",
            Self::Confused => "confused",
        }
    }

    /// The reaction [`Reaction::as_str`] names.
    pub fn from_name(name: &str) -> Option<Reaction> {
        [
            Self::PlusOne,
            Self::MinusOne,
            Self::Eyes,
            Self::Rocket,
            Self::Confused,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }
}

/// The answer to a conditional request: the forge said nothing changed since `etag`.
#[derive(Clone, Debug, PartialEq)]
pub enum Polled<T> {
    NotModified,
    Changed { value: T, etag: Option<String> },
}

impl RepoId {
    /// Like [`RepoId::from_clone_url`], but the owner keeps every namespace segment
    /// (`https://gitlab.com/acme/platform/config.git` is owner `acme/platform`): GitLab
    /// nests groups, and addresses a project by its whole path.
    pub fn from_clone_url_nested(url: &str) -> Option<RepoId> {
        let url = url.rsplit_once('#').map_or(url, |(url, _)| url);
        let path = if let Some((_, rest)) = url.split_once("://") {
            rest.split_once('/')?.1
        } else {
            url.split_once(':')?.1
        };
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let (owner, name) = path.rsplit_once('/')?;
        if owner.is_empty() || name.is_empty() || owner.split('/').any(str::is_empty) {
            return None;
        }
        Some(RepoId {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// `owner/name`, the project path GitLab addresses (URL-encoded) and Gitea's `full_name`.
    pub fn full_path(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// How a forge call can fail. Never carries credentials.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error(
        "{forge} refused the credentials ({status}): check the token (or GitHub App) in the forge Secret"
    )]
    Unauthorized { forge: &'static str, status: u16 },
    #[error("{what} not found on {forge}: check the repository URL and that the token can see it")]
    NotFound { forge: &'static str, what: String },
    /// The forge asked to wait: retry after `retry_after`.
    #[error("{forge} rate limit reached: retrying in {retry_after:?}")]
    RateLimited {
        forge: &'static str,
        retry_after: Duration,
    },
    /// The request was understood and refused (a merge conflict, a closed pull request).
    #[error("{forge} refused to {action}: {message}")]
    Refused {
        forge: &'static str,
        action: String,
        message: String,
    },
    #[error("request to {forge} failed ({action}): {message}")]
    Request {
        forge: &'static str,
        action: String,
        message: String,
    },
    #[error("unexpected answer from {forge} ({action}): {message}")]
    Decode {
        forge: &'static str,
        action: String,
        message: String,
    },
}

impl Error {
    /// A short fixed name for the kind of failure, for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "ForgeUnauthorized",
            Self::NotFound { .. } => "ForgeNotFound",
            Self::RateLimited { .. } => "ForgeRateLimited",
            Self::Refused { .. } => "ForgeRefused",
            Self::Request { .. } => "ForgeRequest",
            Self::Decode { .. } => "ForgeDecode",
        }
    }

    /// Whether asking again cannot give another answer for the same request: the forge
    /// refused it for what it is (a login that is no user, a lookup the token may not make),
    /// not for the moment it was made. Bad credentials (401), rate limits, outages and
    /// transport failures are transient: they heal once the Secret or the forge is fixed.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Unauthorized { status, .. } => *status == 403,
            Self::NotFound { .. } | Self::Refused { .. } | Self::Decode { .. } => true,
            Self::RateLimited { .. } | Self::Request { .. } => false,
        }
    }
}

/// The operations release pull requests need. Implementations are cheap to share
/// (`Arc<dyn Forge>`) and safe to call concurrently.
#[async_trait]
pub trait Forge: Send + Sync {
    /// The forge's name for messages, e.g. `github`.
    fn kind(&self) -> &'static str;

    /// The login flaggit acts as on the forge, when the forge can tell: what it merges or
    /// closes as this user is never a person's decision.
    async fn own_login(&self) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// The open pull request from `head`, if there is one: lets a restarted controller find
    /// the release pull request it opened before.
    async fn find_pull_request(&self, repo: &RepoId, head: &str) -> Result<Option<PullRequest>, Error>;
    async fn open_pull_request(&self, repo: &RepoId, new: &NewPullRequest) -> Result<PullRequest, Error>;
    async fn pull_request(&self, repo: &RepoId, number: u64) -> Result<PullRequest, Error>;
    /// Replaces the description.
    async fn edit_pull_request(&self, repo: &RepoId, number: u64, body: &str) -> Result<(), Error>;
    /// Merges and returns the merge commit's id. `Refused` when the forge cannot merge.
    async fn merge_pull_request(
        &self,
        repo: &RepoId,
        number: u64,
        method: MergeMethod,
        title: &str,
        message: &str,
    ) -> Result<String, Error>;
    async fn close_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), Error>;
    /// Opens a closed (not merged) pull request again.
    async fn reopen_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), Error>;
    /// Who closed the pull request (GitHub: the issue's `closed_by`); None when the forge
    /// does not say.
    async fn closed_by(&self, repo: &RepoId, number: u64) -> Result<Option<String>, Error>;
    /// The forge login of the author of commit `sha` (GitHub: the commit's `author.login`);
    /// None when the author's e-mail belongs to no account of the forge.
    async fn commit_author(&self, repo: &RepoId, sha: &str) -> Result<Option<String>, Error>;
    /// The forge account of the author of commit `sha`, and whether the forge marks it a
    /// bot (GitHub: `author.type` is `Bot`). Forges that cannot tell leave it to the login
    /// (a `[bot]` suffix, a well-known bot account).
    async fn commit_account(&self, repo: &RepoId, sha: &str) -> Result<Option<Account>, Error> {
        Ok(self.commit_author(repo, sha).await?.map(|login| Account {
            bot: bots::is_bot_login(&login),
            login,
        }))
    }

    /// The comments of the pull request created or edited at or after `since` (all of them
    /// when None), oldest first, as a conditional request: with the `etag` of the last answer
    /// to the same question, an unchanged list costs no rate limit. A long pull request is
    /// then read a page at a time, not whole at every poll.
    async fn comments(
        &self,
        repo: &RepoId,
        number: u64,
        since: Option<Timestamp>,
        etag: Option<&str>,
    ) -> Result<Polled<Vec<Comment>>, Error>;
    /// Submitted reviews, oldest first.
    async fn reviews(&self, repo: &RepoId, number: u64) -> Result<Vec<Review>, Error>;
    /// One comment of pull request `number` by id; None once it was deleted. (GitLab
    /// addresses a note through its merge request; GitHub and Gitea ignore `number`.)
    async fn comment(&self, repo: &RepoId, number: u64, comment_id: u64) -> Result<Option<Comment>, Error>;
    async fn create_comment(&self, repo: &RepoId, number: u64, body: &str) -> Result<Comment, Error>;
    async fn edit_comment(
        &self,
        repo: &RepoId,
        number: u64,
        comment_id: u64,
        body: &str,
    ) -> Result<(), Error>;
    async fn react(
        &self,
        repo: &RepoId,
        number: u64,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<(), Error>;

    /// The user's permission on the repository (GitHub: the collaborator-permission
    /// endpoint). A user who is not a collaborator has `Read` on a public repository, `None`
    /// on a private one.
    async fn permission(&self, repo: &RepoId, user: &str) -> Result<Option<Permission>, Error>;
    /// Whether `user` is an active member of `org/team`.
    async fn is_team_member(&self, org: &str, team: &str, user: &str) -> Result<bool, Error>;

    /// The open pull requests into `base`, newest first (GitHub:
    /// `GET /repos/{o}/{r}/pulls?state=open&base=`; GitLab: `merge_requests?state=opened&
    /// target_branch=`; Gitea: `pulls?state=open` filtered on `base.ref`), for previews of the
    /// changes they make.
    async fn open_pull_requests(&self, repo: &RepoId, base: &str) -> Result<Vec<OpenPullRequest>, Error>;

    /// The paths a pull request changes (both sides of a rename), for previews (GitHub and
    /// Gitea: `GET /repos/{o}/{r}/pulls/{n}/files`; GitLab: `merge_requests/:iid/diffs`).
    async fn pull_request_files(&self, repo: &RepoId, number: u64) -> Result<Vec<String>, Error>;

    /// The git ref the head of pull request `number` can be fetched from, in the base
    /// repository (GitHub and Gitea: `refs/pull/<number>/head`; GitLab:
    /// `refs/merge-requests/<iid>/head`).
    fn pull_request_ref(&self, number: u64) -> String {
        format!("refs/pull/{number}/head")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_come_from_every_clone_url_shape() {
        let want = RepoId {
            owner: "acme".into(),
            name: "config".into(),
        };
        for url in [
            "https://github.com/acme/config.git",
            "https://github.com/acme/config",
            "https://x-access-token@github.example.com/acme/config/",
            "ssh://git@github.com/acme/config.git",
            "git@github.com:acme/config.git",
            "http://127.0.0.1:9418/acme/config.git",
            "git://127.0.0.1:9418/acme/config.git#main",
        ] {
            assert_eq!(RepoId::from_clone_url(url), Some(want.clone()), "{url}");
        }
        assert_eq!(RepoId::from_clone_url("https://github.com/config"), None);
        assert_eq!(RepoId::from_clone_url("not a url"), None);
    }

    #[test]
    fn nested_repo_ids_keep_every_group() {
        let id = |url| RepoId::from_clone_url_nested(url).map(|r| r.full_path());
        assert_eq!(
            id("https://gitlab.com/acme/platform/config.git").as_deref(),
            Some("acme/platform/config")
        );
        assert_eq!(
            id("git@gitlab.example.com:acme/platform/team/config.git#main").as_deref(),
            Some("acme/platform/team/config")
        );
        assert_eq!(
            id("https://oauth2:tok@gitlab.com/acme/config").as_deref(),
            Some("acme/config")
        );
        assert_eq!(id("https://gitlab.com/config.git"), None);
        assert_eq!(id("https://gitlab.com//config.git"), None);
        // The same as from_clone_url where there is one group.
        assert_eq!(
            RepoId::from_clone_url_nested("git://127.0.0.1:9418/acme/config.git"),
            RepoId::from_clone_url("git://127.0.0.1:9418/acme/config.git")
        );
    }

    #[test]
    fn repo_ids_compare_like_the_forge_does_ignoring_case() {
        use std::collections::HashMap;
        let configured = RepoId::from_clone_url("https://github.com/acme/config.git").expect("id");
        let delivered = RepoId {
            owner: "Acme".into(),
            name: "Config".into(),
        };
        assert_eq!(configured, delivered);
        assert_eq!(configured.cmp(&delivered), std::cmp::Ordering::Equal);
        let cache = HashMap::from([(delivered.clone(), 1)]);
        assert_eq!(cache.get(&configured), Some(&1));
        assert_ne!(
            configured,
            RepoId {
                owner: "acme".into(),
                name: "config2".into()
            }
        );
        // The spelling given is kept for display and URLs.
        assert_eq!(delivered.to_string(), "Acme/Config");
    }
}
