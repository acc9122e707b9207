//! GitLab (gitlab.com and self-managed) as a [`Forge`], over the REST API v4: release merge
//! requests, their notes and award emoji, approvals (read from the merge request's system
//! notes), and who may approve (project access levels, group membership for teams). A project
//! is addressed by its URL-encoded path (`acme%2Fplatform%2Fconfig`), a merge request by its
//! `iid`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::rest::{self, Call, Rest, decode, enc};
use super::ttl::TtlCache;
use super::{
    Comment, Error as ForgeError, Forge, MergeMethod, NewPullRequest, OpenPullRequest, Permission, Polled,
    PullRequest, PullRequestState, Reaction, RepoId, Review, ReviewState, changed_paths,
};

/// gitlab.com's API; a self-managed GitLab answers on `https://<host>/api/v4`.
pub const DEFAULT_API_URL: &str = "https://gitlab.com/api/v4";
const FORGE: &str = "gitlab";
const EXAMPLE: &str = "https://gitlab.com/api/v4 or https://<host>/api/v4";
/// The system note GitLab writes when someone approves, and when they take it back.
const APPROVED: &str = "approved this merge request";
const UNAPPROVED: &str = "unapproved this merge request";

/// How the controller signs in to GitLab. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub enum GitLabAuth {
    /// A personal, project or group access token, sent as `PRIVATE-TOKEN`.
    PrivateToken(String),
    /// An OAuth 2 access token, sent as `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for GitLabAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PrivateToken(_) => f.write_str("PrivateToken(<redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl GitLabAuth {
    /// Reads a Secret's data: `token` (or `password`, as in a Git basic-auth Secret) is an
    /// access token; `oauthToken` an OAuth bearer token.
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<GitLabAuth, rest::Error> {
        for key in ["token", "password"] {
            if let Some(token) = rest::secret_text(FORGE, data, key)? {
                return Ok(GitLabAuth::PrivateToken(token));
            }
        }
        if let Some(token) = rest::secret_text(FORGE, data, "oauthToken")? {
            return Ok(GitLabAuth::Bearer(token));
        }
        Err(rest::Error::ReadSecretKey {
            forge: FORGE,
            key: "token",
        })
    }
}

/// A GitLab API client for release merge requests.
#[derive(Debug)]
pub struct GitLab {
    rest: Rest,
    permissions: TtlCache<(RepoId, String), Option<Permission>>,
    /// User ids by lowercase username: membership is asked by id.
    user_ids: TtlCache<String, u64>,
    own_login: TtlCache<(), Option<String>>,
}

impl GitLab {
    /// A client for the API at `api_url` ([`DEFAULT_API_URL`] or `https://host/api/v4`).
    pub fn new(api_url: &str, auth: GitLabAuth) -> Result<GitLab, rest::Error> {
        let rest = match &auth {
            GitLabAuth::PrivateToken(token) => Rest::new(FORGE, EXAMPLE, api_url, "private-token", token)?,
            GitLabAuth::Bearer(token) => Rest::new(
                FORGE,
                EXAMPLE,
                api_url,
                "authorization",
                &format!("Bearer {token}"),
            )?,
        };
        Ok(GitLab {
            rest,
            permissions: TtlCache::new(super::github::DEFAULT_PERMISSION_TTL),
            user_ids: TtlCache::new(Duration::from_secs(3600)),
            own_login: TtlCache::new(Duration::from_secs(3600)),
        })
    }

    /// How long a permission answer is reused.
    pub fn with_permission_ttl(mut self, ttl: Duration) -> GitLab {
        self.permissions = TtlCache::new(ttl);
        self
    }

    pub fn api_url(&self) -> &str {
        self.rest.api_url()
    }

    /// The id of the user `username`; NotFound when there is none.
    async fn user_id(&self, username: &str) -> Result<u64, ForgeError> {
        #[derive(Deserialize)]
        struct User {
            id: u64,
            username: String,
        }
        let key = username.to_ascii_lowercase();
        if let Some(id) = self.user_ids.get(&key) {
            return Ok(id);
        }
        let what = format!("user {username}");
        let users: Vec<User> = self
            .rest
            .get_json(
                "find the user",
                &what,
                format!("/users?username={}", enc(username)),
            )
            .await?;
        let id = users
            .into_iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .map(|u| u.id)
            .ok_or(ForgeError::NotFound { forge: FORGE, what })?;
        self.user_ids.put(key, id);
        Ok(id)
    }
}

fn project(repo: &RepoId) -> String {
    format!("/projects/{}", enc(&repo.full_path()))
}

fn mr_path(repo: &RepoId, iid: u64) -> String {
    format!("{}/merge_requests/{iid}", project(repo))
}

fn mr_what(repo: &RepoId, iid: u64) -> String {
    format!("merge request {repo}!{iid}")
}

fn timestamp(action: &str, field: &str, value: &str) -> Result<Timestamp, ForgeError> {
    super::wire::timestamp(FORGE, action, field, value)
}

/// The permission a project access level grants: Guest (10) and Planner (15) read,
/// Reporter (20) triages, Developer (30) writes, Maintainer (40) maintains, Owner (50)
/// administers; no access (0) and Minimal access (5) are none.
pub fn permission_of(access_level: u64) -> Option<Permission> {
    match access_level {
        50.. => Some(Permission::Admin),
        40..50 => Some(Permission::Maintain),
        30..40 => Some(Permission::Write),
        20..30 => Some(Permission::Triage),
        10..20 => Some(Permission::Read),
        _ => None,
    }
}

/// The award emoji GitLab names for a reaction.
pub fn emoji(reaction: Reaction) -> &'static str {
    match reaction {
        Reaction::PlusOne => "thumbsup",
        Reaction::MinusOne => "thumbsdown",
        Reaction::Eyes => "eyes",
        Reaction::Rocket => "rocket",
        Reaction::Confused => "confused",
    }
}

#[derive(Deserialize)]
struct WireUser {
    username: String,
}

fn login(user: Option<WireUser>) -> String {
    // A deleted account's notes and merge requests move to GitLab's "Ghost User".
    user.map(|u| u.username).unwrap_or_else(|| "ghost".into())
}

#[derive(Deserialize)]
struct WireMergeRequest {
    iid: u64,
    web_url: String,
    /// `opened`, `closed`, `merged` or `locked`.
    state: String,
    title: String,
    source_branch: String,
    target_branch: String,
    author: Option<WireUser>,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    #[serde(default)]
    squash_commit_sha: Option<String>,
    #[serde(default)]
    sha: Option<String>,
    /// `merged_by` is deprecated for `merge_user`; both are read.
    #[serde(default)]
    merge_user: Option<WireUser>,
    #[serde(default)]
    merged_by: Option<WireUser>,
    #[serde(default)]
    closed_by: Option<WireUser>,
    #[serde(default)]
    created_at: Option<String>,
}

impl From<WireMergeRequest> for PullRequest {
    fn from(mr: WireMergeRequest) -> Self {
        let state = match mr.state.as_str() {
            "merged" => PullRequestState::Merged,
            // `locked` is a merge in progress: still open.
            "opened" | "locked" => PullRequestState::Open,
            _ => PullRequestState::Closed,
        };
        let merged = state == PullRequestState::Merged;
        let head_sha = mr.sha.clone();
        PullRequest {
            number: mr.iid,
            head_sha,
            url: mr.web_url,
            state,
            title: mr.title,
            head: mr.source_branch,
            base: mr.target_branch,
            author: login(mr.author),
            // A fast-forward merge has no merge commit: the head (or its squash) is what landed.
            merge_commit: if merged {
                mr.merge_commit_sha.or(mr.squash_commit_sha).or(mr.sha)
            } else {
                None
            },
            merged_by: if merged {
                mr.merge_user.or(mr.merged_by).map(|u| u.username)
            } else {
                None
            },
            closed_by: if state == PullRequestState::Closed {
                mr.closed_by.map(|u| u.username)
            } else {
                None
            },
            created_at: mr.created_at.and_then(|t| t.parse().ok()),
        }
    }
}

#[derive(Deserialize)]
struct WireDiff {
    old_path: String,
    new_path: String,
}

/// The paths the diffs touch, both sides of a rename, each once, in the order given.
fn diff_paths(diffs: Vec<WireDiff>) -> Vec<String> {
    changed_paths(diffs.into_iter().map(|d| (Some(d.old_path), d.new_path)))
}

#[derive(Deserialize)]
struct WireNote {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    author: Option<WireUser>,
    created_at: String,
    updated_at: String,
    /// GitLab's own notes (approvals, pushes, state changes), not a person's comment.
    #[serde(default)]
    system: bool,
}

impl WireNote {
    fn into_comment(self, action: &str, mr_url: &str) -> Result<Comment, ForgeError> {
        Ok(Comment {
            id: self.id,
            author: login(self.author),
            body: self.body.unwrap_or_default(),
            created_at: timestamp(action, "created_at", &self.created_at)?,
            updated_at: timestamp(action, "updated_at", &self.updated_at)?,
            url: format!("{mr_url}#note_{}", self.id),
        })
    }
}

/// The approvals of a merge request as reviews, from its system notes (oldest first): each
/// `approved` note is an approving review, dismissed once the same user `unapproved` after it.
fn reviews_of(notes: &[(u64, String, String, Timestamp)]) -> Vec<Review> {
    let mut reviews = Vec::new();
    for (i, (id, author, body, at)) in notes.iter().enumerate() {
        if body.trim() != APPROVED {
            continue;
        }
        let withdrawn = notes[i + 1..]
            .iter()
            .any(|(_, later, body, _)| later.eq_ignore_ascii_case(author) && body.trim() == UNAPPROVED);
        reviews.push(Review {
            id: *id,
            author: author.clone(),
            state: if withdrawn {
                ReviewState::Dismissed
            } else {
                ReviewState::Approved
            },
            body: String::new(),
            submitted_at: *at,
        });
    }
    reviews
}

impl GitLab {
    /// The merge request's web URL, for links to its notes.
    async fn mr_url(&self, repo: &RepoId, iid: u64) -> Result<String, ForgeError> {
        let mr: WireMergeRequest = self
            .rest
            .get_json("read the merge request", &mr_what(repo, iid), mr_path(repo, iid))
            .await?;
        Ok(mr.web_url)
    }

    /// Every note of the merge request, oldest first, system notes included.
    async fn all_notes(&self, repo: &RepoId, iid: u64, action: &str) -> Result<Vec<WireNote>, ForgeError> {
        let path = format!(
            "{}/notes?sort=asc&order_by=created_at&per_page=100",
            mr_path(repo, iid)
        );
        self.rest.list(action, &mr_what(repo, iid), path).await
    }
}

#[async_trait]
impl Forge for GitLab {
    fn kind(&self) -> &'static str {
        FORGE
    }

    async fn own_login(&self) -> Result<Option<String>, ForgeError> {
        self.rest
            .token_login(&self.own_login, |u: WireUser| u.username)
            .await
    }

    async fn find_pull_request(&self, repo: &RepoId, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        let what = format!("project {repo}");
        let path = format!(
            "{}/merge_requests?state=opened&source_branch={}&per_page=100",
            project(repo),
            enc(head)
        );
        let mrs: Vec<WireMergeRequest> = self.rest.get_json("find the merge request", &what, path).await?;
        Ok(mrs
            .into_iter()
            .map(PullRequest::from)
            .find(|p| p.head == head && p.state == PullRequestState::Open))
    }

    async fn open_pull_requests(
        &self,
        repo: &RepoId,
        base: &str,
    ) -> Result<Vec<OpenPullRequest>, ForgeError> {
        const ACTION: &str = "list the open merge requests";
        let what = format!("project {repo}");
        let path = format!(
            "{}/merge_requests?state=opened&target_branch={}&order_by=created_at&sort=desc&per_page=100",
            project(repo),
            enc(base)
        );
        let mrs: Vec<WireMergeRequest> = self.rest.list(ACTION, &what, path).await?;
        Ok(mrs
            .into_iter()
            .filter_map(|mr| OpenPullRequest::of(mr.into(), base))
            .collect())
    }

    async fn pull_request_files(&self, repo: &RepoId, number: u64) -> Result<Vec<String>, ForgeError> {
        const ACTION: &str = "list the changes of the merge request";
        let path = format!("{}/diffs?per_page=100", mr_path(repo, number));
        let diffs: Vec<WireDiff> = self.rest.list(ACTION, &mr_what(repo, number), path).await?;
        Ok(diff_paths(diffs))
    }

    /// GitLab keeps every merge request's head, forks' too, in the target project.
    fn pull_request_ref(&self, number: u64) -> String {
        format!("refs/merge-requests/{number}/head")
    }

    async fn open_pull_request(
        &self,
        repo: &RepoId,
        new: &NewPullRequest,
    ) -> Result<PullRequest, ForgeError> {
        const ACTION: &str = "open the merge request";
        let body = json!({
            "source_branch": new.head,
            "target_branch": new.base,
            "title": new.title,
            "description": new.body,
        });
        let what = format!("project {repo}");
        let path = format!("{}/merge_requests", project(repo));
        let answer = self
            .rest
            .send_json(Method::POST, ACTION, &what, path, body)
            .await?;
        Ok(decode::<WireMergeRequest>(FORGE, ACTION, &answer.body)?.into())
    }

    async fn pull_request(&self, repo: &RepoId, number: u64) -> Result<PullRequest, ForgeError> {
        let mr: WireMergeRequest = self
            .rest
            .get_json(
                "read the merge request",
                &mr_what(repo, number),
                mr_path(repo, number),
            )
            .await?;
        Ok(mr.into())
    }

    async fn edit_pull_request(&self, repo: &RepoId, number: u64, body: &str) -> Result<(), ForgeError> {
        self.rest
            .send_json(
                Method::PUT,
                "edit the merge request",
                &mr_what(repo, number),
                mr_path(repo, number),
                json!({"description": body}),
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
        const ACTION: &str = "merge the merge request";
        let text = format!("{title}\n\n{message}");
        // GitLab's merge method (merge commit, semi-linear, fast-forward) is the project's
        // setting; only squashing is asked per merge.
        let body = match method {
            MergeMethod::Squash => json!({"squash": true, "squash_commit_message": text}),
            MergeMethod::Merge | MergeMethod::Rebase => json!({"merge_commit_message": text}),
        };
        let path = format!("{}/merge", mr_path(repo, number));
        let answer = self
            .rest
            .send_json(Method::PUT, ACTION, &mr_what(repo, number), path, body)
            .await?;
        let merged = PullRequest::from(decode::<WireMergeRequest>(FORGE, ACTION, &answer.body)?);
        merged.merge_commit.ok_or_else(|| ForgeError::Refused {
            forge: FORGE,
            action: ACTION.into(),
            message: "the merge request is not merged yet (a pipeline or approval rule holds it)".into(),
        })
    }

    async fn close_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), ForgeError> {
        self.rest
            .send_json(
                Method::PUT,
                "close the merge request",
                &mr_what(repo, number),
                mr_path(repo, number),
                json!({"state_event": "close"}),
            )
            .await?;
        Ok(())
    }

    async fn reopen_pull_request(&self, repo: &RepoId, number: u64) -> Result<(), ForgeError> {
        self.rest
            .send_json(
                Method::PUT,
                "reopen the merge request",
                &mr_what(repo, number),
                mr_path(repo, number),
                json!({"state_event": "reopen"}),
            )
            .await?;
        Ok(())
    }

    async fn closed_by(&self, repo: &RepoId, number: u64) -> Result<Option<String>, ForgeError> {
        Ok(self.pull_request(repo, number).await?.closed_by)
    }

    async fn commit_author(&self, repo: &RepoId, sha: &str) -> Result<Option<String>, ForgeError> {
        #[derive(Deserialize)]
        struct Commit {
            author_email: String,
        }
        let what = format!("commit {sha} in {repo}");
        let path = format!("{}/repository/commits/{}", project(repo), enc(sha));
        let commit: Commit = self
            .rest
            .get_json("read the commit's author", &what, path)
            .await?;
        // GitLab's commits carry no account: the e-mail is looked up among the users (a
        // public e-mail, or any e-mail for an administrator's token). One match or none.
        let users: Vec<WireUser> = self
            .rest
            .get_json(
                "find the commit author's account",
                &what,
                format!("/users?search={}", enc(&commit.author_email)),
            )
            .await?;
        Ok(match <[WireUser; 1]>::try_from(users) {
            Ok([user]) => Some(user.username),
            Err(_) => None,
        })
    }

    async fn comments(
        &self,
        repo: &RepoId,
        number: u64,
        since: Option<Timestamp>,
        etag: Option<&str>,
    ) -> Result<Polled<Vec<Comment>>, ForgeError> {
        const ACTION: &str = "list the merge request notes";
        let what = mr_what(repo, number);
        // Notes have no `since` filter: with one, the newest-updated come first and the
        // pages stop at the first note older than it.
        let path = match since {
            None => format!(
                "{}/notes?sort=asc&order_by=created_at&per_page=100",
                mr_path(repo, number)
            ),
            Some(_) => format!(
                "{}/notes?sort=desc&order_by=updated_at&per_page=100",
                mr_path(repo, number)
            ),
        };
        let older = |note: &WireNote| {
            since.is_some_and(|since| note.updated_at.parse::<Timestamp>().is_ok_and(|at| at < since))
        };
        let polled = self
            .rest
            .get_all::<WireNote>(ACTION, &what, path, etag, |notes| notes.last().is_some_and(older))
            .await?;
        let Polled::Changed { value, etag } = polled else {
            return Ok(Polled::NotModified);
        };
        let url = self.mr_url(repo, number).await?;
        let mut comments = value
            .into_iter()
            .filter(|n| !n.system && !older(n))
            .map(|n| n.into_comment(ACTION, &url))
            .collect::<Result<Vec<_>, _>>()?;
        comments.sort_by_key(|c| (c.created_at, c.id));
        Ok(Polled::Changed {
            value: comments,
            etag,
        })
    }

    async fn reviews(&self, repo: &RepoId, number: u64) -> Result<Vec<Review>, ForgeError> {
        const ACTION: &str = "list the merge request approvals";
        let mut notes = Vec::new();
        for note in self.all_notes(repo, number, ACTION).await? {
            if note.system {
                let at = timestamp(ACTION, "created_at", &note.created_at)?;
                notes.push((note.id, login(note.author), note.body.unwrap_or_default(), at));
            }
        }
        notes.sort_by_key(|(id, _, _, at)| (*at, *id));
        Ok(reviews_of(&notes))
    }

    async fn comment(
        &self,
        repo: &RepoId,
        number: u64,
        comment_id: u64,
    ) -> Result<Option<Comment>, ForgeError> {
        const ACTION: &str = "read the note";
        let what = format!("note {comment_id} of {}", mr_what(repo, number));
        let path = format!("{}/notes/{comment_id}", mr_path(repo, number));
        match self.rest.get_json::<WireNote>(ACTION, &what, path).await {
            Ok(note) => {
                let url = self.mr_url(repo, number).await?;
                note.into_comment(ACTION, &url).map(Some)
            }
            Err(ForgeError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn create_comment(&self, repo: &RepoId, number: u64, body: &str) -> Result<Comment, ForgeError> {
        const ACTION: &str = "comment on the merge request";
        let path = format!("{}/notes", mr_path(repo, number));
        let answer = self
            .rest
            .send_json(
                Method::POST,
                ACTION,
                &mr_what(repo, number),
                path,
                json!({"body": body}),
            )
            .await?;
        let note = decode::<WireNote>(FORGE, ACTION, &answer.body)?;
        let url = self.mr_url(repo, number).await?;
        note.into_comment(ACTION, &url)
    }

    async fn edit_comment(
        &self,
        repo: &RepoId,
        number: u64,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let what = format!("note {comment_id} of {}", mr_what(repo, number));
        let path = format!("{}/notes/{comment_id}", mr_path(repo, number));
        self.rest
            .send_json(Method::PUT, "edit the note", &what, path, json!({"body": body}))
            .await?;
        Ok(())
    }

    async fn react(
        &self,
        repo: &RepoId,
        number: u64,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<(), ForgeError> {
        const ACTION: &str = "award an emoji to the note";
        let what = format!("note {comment_id} of {}", mr_what(repo, number));
        let path = format!("{}/notes/{comment_id}/award_emoji", mr_path(repo, number));
        let call = Call::new(Method::POST, ACTION, &what, path).json(json!({"name": emoji(reaction)}));
        let answer = self.rest.exchange(call).await?;
        let message = rest::error_message(&answer.body);
        // Awarding the same emoji twice is refused as taken: it is there, which is the point.
        if answer.status.is_success() || message.contains("has already been taken") {
            return Ok(());
        }
        Err(rest::status_error(
            FORGE,
            ACTION,
            &what,
            answer.status.as_u16(),
            &message,
        ))
    }

    async fn permission(&self, repo: &RepoId, user: &str) -> Result<Option<Permission>, ForgeError> {
        #[derive(Deserialize)]
        struct Member {
            access_level: u64,
        }
        let key = (repo.clone(), user.to_ascii_lowercase());
        if let Some(permission) = self.permissions.get(&key) {
            return Ok(permission);
        }
        let id = self.user_id(user).await?;
        let what = format!("user {user} in project {repo}");
        // `members/all` counts what is inherited from the groups above the project.
        let path = format!("{}/members/all/{id}", project(repo));
        let permission = match self
            .rest
            .get_json::<Member>("read the project membership", &what, path)
            .await
        {
            Ok(member) => permission_of(member.access_level),
            Err(ForgeError::NotFound { .. }) => None,
            Err(error) => return Err(error),
        };
        self.permissions.put(key, permission);
        Ok(permission)
    }

    async fn is_team_member(&self, org: &str, team: &str, user: &str) -> Result<bool, ForgeError> {
        #[derive(Deserialize)]
        struct Member {
            #[serde(default)]
            state: Option<String>,
        }
        // A team is a group: `acme/platform` is the subgroup platform of acme.
        let group = format!("{org}/{team}");
        let id = match self.user_id(user).await {
            Ok(id) => id,
            Err(ForgeError::NotFound { .. }) => return Ok(false),
            Err(error) => return Err(error),
        };
        let what = format!("group {group}");
        let path = format!("/groups/{}/members/all/{id}", enc(&group));
        match self
            .rest
            .get_json::<Member>("read the group membership", &what, path)
            .await
        {
            Ok(member) => Ok(member.state.as_deref().is_none_or(|s| s == "active")),
            Err(ForgeError::NotFound { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn access_levels_map_to_permissions() {
        assert_eq!(permission_of(0), None);
        assert_eq!(permission_of(5), None, "minimal access");
        assert_eq!(permission_of(10), Some(Permission::Read), "guest");
        assert_eq!(permission_of(15), Some(Permission::Read), "planner");
        assert_eq!(permission_of(20), Some(Permission::Triage), "reporter");
        assert_eq!(permission_of(30), Some(Permission::Write), "developer");
        assert_eq!(permission_of(40), Some(Permission::Maintain), "maintainer");
        assert_eq!(permission_of(50), Some(Permission::Admin), "owner");
        assert_eq!(permission_of(60), Some(Permission::Admin), "admin");
    }

    #[test]
    fn merge_requests_decode_to_the_forge_shape() {
        let mr: WireMergeRequest = serde_json::from_value(json!({
            "id": 91, "iid": 7, "project_id": 3, "title": "Release", "description": "x",
            "state": "merged", "created_at": "2026-01-01T10:00:00.123Z",
            "web_url": "https://gitlab.com/acme/config/-/merge_requests/7",
            "source_branch": "flaggit/ns/podinfo/x", "target_branch": "main",
            "author": {"id": 1, "username": "flaggit-bot"},
            "merge_user": {"id": 2, "username": "alice"}, "merged_by": {"id": 2, "username": "alice"},
            "merge_commit_sha": "abc", "squash_commit_sha": null, "sha": "def", "closed_by": null
        }))
        .expect("decode");
        let pr = PullRequest::from(mr);
        assert_eq!(
            (
                pr.number,
                pr.state,
                pr.merge_commit.as_deref(),
                pr.merged_by.as_deref()
            ),
            (7, PullRequestState::Merged, Some("abc"), Some("alice"))
        );
        assert_eq!(pr.head, "flaggit/ns/podinfo/x");
        assert!(pr.created_at.is_some());
        let closed: WireMergeRequest = serde_json::from_value(json!({
            "iid": 8, "title": "t", "state": "closed", "web_url": "u", "source_branch": "h",
            "target_branch": "main", "author": null, "closed_by": {"username": "dana"}, "sha": "def"
        }))
        .expect("decode");
        let closed = PullRequest::from(closed);
        assert_eq!(
            (
                closed.state,
                closed.closed_by.as_deref(),
                closed.merge_commit,
                closed.author.as_str()
            ),
            (PullRequestState::Closed, Some("dana"), None, "ghost")
        );
        let ff: WireMergeRequest = serde_json::from_value(json!({
            "iid": 9, "title": "t", "state": "merged", "web_url": "u", "source_branch": "h",
            "target_branch": "main", "author": null, "merge_commit_sha": null, "sha": "head"
        }))
        .expect("decode");
        assert_eq!(
            PullRequest::from(ff).merge_commit.as_deref(),
            Some("head"),
            "a fast-forward merge landed the head"
        );
        let locked: WireMergeRequest = serde_json::from_value(json!({
            "iid": 10, "title": "t", "state": "locked", "web_url": "u", "source_branch": "h",
            "target_branch": "main", "author": null
        }))
        .expect("decode");
        assert_eq!(PullRequest::from(locked).state, PullRequestState::Open);
    }

    #[test]
    fn open_merge_requests_carry_their_head_commit_and_ref() {
        let mr = |iid: u64, state: &str, sha: Option<&str>| -> WireMergeRequest {
            serde_json::from_value(json!({
                "iid": iid, "title": "Bump", "state": state, "web_url": "u", "source_branch": "bump",
                "target_branch": "main", "author": {"username": "dana"}, "sha": sha
            }))
            .expect("decode")
        };
        let open = OpenPullRequest::of(mr(4, "opened", Some("c0ffee")).into(), "main").expect("open");
        assert_eq!(
            (open.pull.number, open.head_sha.as_str(), open.pull.head.as_str()),
            (4, "c0ffee", "bump")
        );
        assert_eq!(
            OpenPullRequest::of(mr(5, "opened", None).into(), "main"),
            None,
            "no head commit yet"
        );
        assert_eq!(
            OpenPullRequest::of(mr(6, "merged", Some("c0ffee")).into(), "main"),
            None
        );
        let gitlab = GitLab::new(DEFAULT_API_URL, GitLabAuth::PrivateToken("t".into())).expect("client");
        assert_eq!(gitlab.pull_request_ref(4), "refs/merge-requests/4/head");
    }

    #[test]
    fn merge_request_diffs_give_both_sides_of_a_rename_once() {
        let diffs: Vec<WireDiff> = serde_json::from_value(json!([
            {"old_path": "apps/a.yaml", "new_path": "apps/a.yaml", "a_mode": "100644", "b_mode": "100644",
             "diff": "@@ -1 +1 @@", "new_file": false, "renamed_file": false, "deleted_file": false},
            {"old_path": "apps/old.yaml", "new_path": "apps/new.yaml", "renamed_file": true},
            {"old_path": "gone.yaml", "new_path": "gone.yaml", "deleted_file": true}
        ]))
        .expect("decode");
        assert_eq!(
            diff_paths(diffs),
            vec!["apps/a.yaml", "apps/old.yaml", "apps/new.yaml", "gone.yaml"]
        );
    }

    #[test]
    fn approvals_come_from_system_notes_and_unapproving_dismisses() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).expect("time");
        let notes = vec![
            (1, "alice".to_string(), APPROVED.to_string(), at(1)),
            (2, "bob".to_string(), APPROVED.to_string(), at(2)),
            (3, "alice".to_string(), UNAPPROVED.to_string(), at(3)),
            (4, "carol".to_string(), "added 1 commit".to_string(), at(4)),
            (5, "alice".to_string(), APPROVED.to_string(), at(5)),
        ];
        let reviews = reviews_of(&notes);
        let states: Vec<(u64, &str, ReviewState)> = reviews
            .iter()
            .map(|r| (r.id, r.author.as_str(), r.state))
            .collect();
        assert_eq!(
            states,
            vec![
                (1, "alice", ReviewState::Dismissed),
                (2, "bob", ReviewState::Approved),
                (5, "alice", ReviewState::Approved),
            ]
        );
        assert_eq!(reviews[1].submitted_at, at(2));
    }

    #[test]
    fn reactions_are_award_emoji() {
        assert_eq!(emoji(Reaction::PlusOne), "thumbsup");
        assert_eq!(emoji(Reaction::MinusOne), "thumbsdown");
        assert_eq!(emoji(Reaction::Eyes), "eyes");
    }

    #[test]
    fn notes_link_into_their_merge_request_and_system_notes_are_marked() {
        let note: WireNote = serde_json::from_value(json!({
            "id": 302, "body": "/approve", "author": {"id": 1, "username": "alice"},
            "created_at": "2026-01-01T10:00:00.000Z", "updated_at": "2026-01-01T10:00:00.000Z",
            "system": false, "noteable_id": 91, "noteable_type": "MergeRequest", "noteable_iid": 7
        }))
        .expect("decode");
        let comment = note
            .into_comment("read", "https://gitlab.com/acme/config/-/merge_requests/7")
            .expect("comment");
        assert_eq!(
            comment.url,
            "https://gitlab.com/acme/config/-/merge_requests/7#note_302"
        );
        assert_eq!(comment.created_at, comment.updated_at);
    }

    #[test]
    fn secrets_give_an_access_or_oauth_token_and_debug_hides_them() {
        assert_eq!(
            GitLabAuth::from_secret(&secret(&[("token", "glpat-abc\n")])).expect("token"),
            GitLabAuth::PrivateToken("glpat-abc".into())
        );
        assert_eq!(
            GitLabAuth::from_secret(&secret(&[("oauthToken", "oa")])).expect("oauth"),
            GitLabAuth::Bearer("oa".into())
        );
        let e = GitLabAuth::from_secret(&secret(&[])).expect_err("empty");
        assert!(e.to_string().contains("`token`"), "{e}");
        let e = GitLabAuth::from_secret(&secret(&[("token", " ")])).expect_err("blank");
        assert_eq!(e.category(), "ForgeSecretValue");
        assert!(!format!("{:?}", GitLabAuth::PrivateToken("glpat-abc".into())).contains("glpat"));
        let gitlab =
            GitLab::new(DEFAULT_API_URL, GitLabAuth::PrivateToken("glpat-abc".into())).expect("client");
        assert!(!format!("{gitlab:?}").contains("glpat"));
        assert_eq!(
            project(
                &RepoId::from_clone_url_nested("https://gitlab.com/acme/platform/config.git").expect("id")
            ),
            "/projects/acme%2Fplatform%2Fconfig"
        );
    }
}
