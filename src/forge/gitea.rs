//! Gitea and Forgejo (Codeberg) as a [`Forge`], over the API v1: release pull requests, their
//! issue comments, reactions and reviews, and who may approve (the collaborator-permission
//! endpoint, organization teams). Forgejo keeps Gitea's API, so one client serves both.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::rest::{self, Rest, enc};
use super::ttl::TtlCache;
use super::wire::{
    Pulls, WireComment, WireFile, WirePull, WireReview, WireUser, comments_of, file_paths, pr_what,
    repo_path, reviews_of,
};
use super::{
    Comment, Error as ForgeError, Forge, MergeMethod, NewPullRequest, OpenPullRequest, Permission, Polled,
    PullRequest, PullRequestState, Reaction, RepoId, Review, ReviewState,
};

const FORGE: &str = "gitea";
const EXAMPLE: &str = "https://<host>/api/v1 (for Codeberg, https://codeberg.org/api/v1)";

/// How the controller signs in to Gitea: an access token, sent as `Authorization: token`.
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct GiteaAuth(pub String);

impl std::fmt::Debug for GiteaAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GiteaAuth(<redacted>)")
    }
}

impl GiteaAuth {
    /// Reads a Secret's data: `token` (or `password`, as in a Git basic-auth Secret).
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<GiteaAuth, rest::Error> {
        for key in ["token", "password"] {
            if let Some(token) = rest::secret_text(FORGE, data, key)? {
                return Ok(GiteaAuth(token));
            }
        }
        Err(rest::Error::ReadSecretKey {
            forge: FORGE,
            key: "token",
        })
    }
}

/// A Gitea or Forgejo API client for release pull requests.
#[derive(Debug)]
pub struct Gitea {
    rest: Rest,
    permissions: TtlCache<(RepoId, String), Option<Permission>>,
    own_login: TtlCache<(), Option<String>>,
}

impl Gitea {
    /// A client for the API at `api_url` (`https://host/api/v1`).
    pub fn new(api_url: &str, auth: GiteaAuth) -> Result<Gitea, rest::Error> {
        Ok(Gitea {
            rest: Rest::new(
                FORGE,
                EXAMPLE,
                api_url,
                "authorization",
                &format!("token {}", auth.0),
            )?,
            permissions: TtlCache::new(super::github::DEFAULT_PERMISSION_TTL),
            own_login: TtlCache::new(Duration::from_secs(3600)),
        })
    }

    /// How long a permission answer is reused.
    pub fn with_permission_ttl(mut self, ttl: Duration) -> Gitea {
        self.permissions = TtlCache::new(ttl);
        self
    }

    pub fn api_url(&self) -> &str {
        self.rest.api_url()
    }
}

/// The permission the collaborator-permission endpoint names: `owner` and `admin` administer,
/// `write` writes, `read` reads, `none` is none.
pub fn permission_of(permission: &str) -> Result<Option<Permission>, String> {
    match permission {
        "owner" | "admin" => Ok(Some(Permission::Admin)),
        "write" => Ok(Some(Permission::Write)),
        "read" => Ok(Some(Permission::Read)),
        "none" => Ok(None),
        other => Err(format!("unknown permission {other:?}")),
    }
}

/// Gitea's merge style (`Do`) for a merge method.
pub fn merge_style(method: MergeMethod) -> &'static str {
    match method {
        MergeMethod::Merge => "merge",
        MergeMethod::Squash => "squash",
        MergeMethod::Rebase => "rebase",
    }
}

fn review_state(state: &str, dismissed: bool) -> Option<ReviewState> {
    if dismissed {
        return Some(ReviewState::Dismissed);
    }
    Some(match state {
        "APPROVED" => ReviewState::Approved,
        "REQUEST_CHANGES" => ReviewState::ChangesRequested,
        "COMMENT" => ReviewState::Commented,
        "PENDING" => ReviewState::Pending,
        // A request for a review is no review.
        _ => return None,
    })
}

/// Who closed the pull request last, from its timeline (`close` events).
fn last_closer(events: Vec<TimelineEvent>) -> Option<String> {
    events
        .into_iter()
        .rfind(|e| e.kind == "close")
        .and_then(|e| e.user)
        .map(|u| u.login)
}

#[derive(Deserialize)]
struct TimelineEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<WireUser>,
}

#[async_trait]
impl Forge for Gitea {
    fn kind(&self) -> &'static str {
        FORGE
    }

    async fn own_login(&self) -> Result<Option<String>, ForgeError> {
        self.rest
            .token_login(&self.own_login, |u: WireUser| u.login)
            .await
    }

    async fn find_pull_request(&self, repo: &RepoId, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        const ACTION: &str = "find the pull request";
        let what = format!("repository {repo}");
        let path = format!("{}/pulls?state=open&limit=50", repo_path(repo));
        let Polled::Changed { value, .. } = self
            .rest
            .get_all::<WirePull>(ACTION, &what, path, None, |pulls| {
                pulls.iter().any(|p| p.head.name == head)
            })
            .await?
        else {
            return Ok(None);
        };
        Ok(value
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
        // The list has no base filter: every open pull request is read, and those into
        // other branches are left out here.
        let path = format!("{}/pulls?state=open&limit=50", repo_path(repo));
        let pulls: Vec<WirePull> = self.rest.list(ACTION, &what, path).await?;
        Ok(pulls
            .into_iter()
            .filter_map(|p| OpenPullRequest::of(p.into(), base))
            .collect())
    }

    async fn pull_request_files(&self, repo: &RepoId, number: u64) -> Result<Vec<String>, ForgeError> {
        const ACTION: &str = "list the files of the pull request";
        let path = format!("{}/pulls/{number}/files?limit=50", repo_path(repo));
        let files: Vec<WireFile> = self.rest.list(ACTION, &pr_what(repo, number), path).await?;
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
        let mut pull = Pulls(&self.rest).get(repo, number).await?;
        if pull.state == PullRequestState::Closed {
            pull.closed_by = self.closed_by(repo, number).await?;
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
        const ACTION: &str = "merge the pull request";
        let path = format!("{}/pulls/{number}/merge", repo_path(repo));
        let body = json!({
            "Do": merge_style(method),
            "MergeTitleField": title,
            "MergeMessageField": message,
        });
        self.rest
            .send_json(Method::POST, ACTION, &pr_what(repo, number), path, body)
            .await?;
        // The merge answers with no body: the merge commit is read from the pull request.
        self.pull_request(repo, number)
            .await?
            .merge_commit
            .ok_or_else(|| ForgeError::Decode {
                forge: FORGE,
                action: ACTION.into(),
                message: "the merged pull request names no merge commit".into(),
            })
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
        const ACTION: &str = "read who closed the pull request";
        let path = format!("{}/issues/{number}/timeline?limit=50", repo_path(repo));
        match self
            .rest
            .get_all::<TimelineEvent>(ACTION, &pr_what(repo, number), path, None, |_| false)
            .await
        {
            Ok(Polled::Changed { value, .. }) => Ok(last_closer(value)),
            Ok(Polled::NotModified) => Ok(None),
            // Gitea before 1.15 has no timeline: it does not say.
            Err(ForgeError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn commit_author(&self, repo: &RepoId, sha: &str) -> Result<Option<String>, ForgeError> {
        #[derive(Deserialize)]
        struct Commit {
            // null (or an empty login) when the e-mail belongs to no account.
            #[serde(default)]
            author: Option<WireUser>,
        }
        let what = format!("commit {sha} in {repo}");
        let path = format!("{}/git/commits/{}", repo_path(repo), enc(sha));
        let commit: Commit = self
            .rest
            .get_json("read the commit's author", &what, path)
            .await?;
        Ok(commit.author.map(|u| u.login).filter(|l| !l.is_empty()))
    }

    async fn comments(
        &self,
        repo: &RepoId,
        number: u64,
        since: Option<Timestamp>,
        etag: Option<&str>,
    ) -> Result<Polled<Vec<Comment>>, ForgeError> {
        const ACTION: &str = "list the pull request comments";
        let mut path = format!("{}/issues/{number}/comments", repo_path(repo));
        if let Some(since) = since {
            // Gitea: only comments updated at or after this time.
            path.push_str(&format!(
                "?since={}",
                enc(&since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            ));
        }
        let polled = self
            .rest
            .get_all::<WireComment>(ACTION, &pr_what(repo, number), path, etag, |_| false)
            .await?;
        comments_of(FORGE, ACTION, polled)
    }

    async fn reviews(&self, repo: &RepoId, number: u64) -> Result<Vec<Review>, ForgeError> {
        const ACTION: &str = "list the pull request reviews";
        let path = format!("{}/pulls/{number}/reviews?limit=50", repo_path(repo));
        let reviews: Vec<WireReview> = self.rest.list(ACTION, &pr_what(repo, number), path).await?;
        // A pending review is a draft: not submitted.
        reviews_of(FORGE, ACTION, reviews, |state, dismissed| {
            review_state(state, dismissed).filter(|s| *s != ReviewState::Pending)
        })
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
        }
        const ACTION: &str = "read the collaborator permission";
        let key = (repo.clone(), user.to_ascii_lowercase());
        if let Some(permission) = self.permissions.get(&key) {
            return Ok(permission);
        }
        let what = format!("user {user} in repository {repo}");
        let path = format!("{}/collaborators/{}/permission", repo_path(repo), enc(user));
        let answer: Answer = self.rest.get_json(ACTION, &what, path).await?;
        let permission = permission_of(&answer.permission).map_err(|message| ForgeError::Decode {
            forge: FORGE,
            action: ACTION.to_owned(),
            message,
        })?;
        self.permissions.put(key, permission);
        Ok(permission)
    }

    async fn is_team_member(&self, org: &str, team: &str, user: &str) -> Result<bool, ForgeError> {
        #[derive(Deserialize)]
        struct Found {
            #[serde(default)]
            data: Vec<Team>,
        }
        #[derive(Deserialize)]
        struct Team {
            id: u64,
            name: String,
        }
        let what = format!("team {org}/{team}");
        let path = format!("/orgs/{}/teams/search?q={}", enc(org), enc(team));
        let found: Found = self.rest.get_json("find the team", &what, path).await?;
        let Some(team) = found.data.into_iter().find(|t| t.name.eq_ignore_ascii_case(team)) else {
            return Err(ForgeError::NotFound { forge: FORGE, what });
        };
        let path = format!("/teams/{}/members/{}", team.id, enc(user));
        match self
            .rest
            .call(rest::Call::new(
                Method::GET,
                "read the team membership",
                &what,
                path,
            ))
            .await
        {
            Ok(_) => Ok(true),
            // Gitea answers 404 for "not a member".
            Err(ForgeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collaborator_permissions_map() {
        assert_eq!(permission_of("owner"), Ok(Some(Permission::Admin)));
        assert_eq!(permission_of("admin"), Ok(Some(Permission::Admin)));
        assert_eq!(permission_of("write"), Ok(Some(Permission::Write)));
        assert_eq!(permission_of("read"), Ok(Some(Permission::Read)));
        assert_eq!(permission_of("none"), Ok(None));
        assert!(permission_of("maintain").is_err());
    }

    #[test]
    fn merge_styles_are_gitea_do_values() {
        assert_eq!(merge_style(MergeMethod::Merge), "merge");
        assert_eq!(merge_style(MergeMethod::Squash), "squash");
        assert_eq!(merge_style(MergeMethod::Rebase), "rebase");
    }

    #[test]
    fn open_pulls_into_the_base_carry_their_head_commit_and_ref() {
        let pull = |number: u64, state: &str, base: &str, sha: Option<&str>| -> WirePull {
            serde_json::from_value(json!({
                "id": 100 + number, "number": number, "state": state, "title": "Bump",
                "html_url": "https://gitea.example.com/acme/config/pulls/3", "merged": false,
                "user": {"id": 1, "login": "dana"},
                "head": {"label": "bump", "ref": "bump", "sha": sha},
                "base": {"label": base, "ref": base, "sha": "base1"}
            }))
            .expect("decode")
        };
        let open = OpenPullRequest::of(pull(3, "open", "main", Some("c0ffee")).into(), "main").expect("open");
        assert_eq!(
            (open.pull.number, open.head_sha.as_str(), open.pull.head.as_str()),
            (3, "c0ffee", "bump")
        );
        assert_eq!(
            OpenPullRequest::of(pull(4, "open", "staging", Some("c0ffee")).into(), "main"),
            None
        );
        assert_eq!(
            OpenPullRequest::of(pull(5, "closed", "main", Some("c0ffee")).into(), "main"),
            None
        );
        assert_eq!(
            OpenPullRequest::of(pull(6, "open", "main", None).into(), "main"),
            None
        );
        let gitea = Gitea::new("https://gitea.example.com/api/v1", GiteaAuth("t".into())).expect("client");
        assert_eq!(gitea.pull_request_ref(3), "refs/pull/3/head");
    }

    #[test]
    fn pull_request_files_give_both_sides_of_a_rename() {
        let files: Vec<WireFile> = serde_json::from_value(json!([
            {"filename": "apps/a.yaml", "status": "changed", "additions": 1, "deletions": 1, "changes": 2},
            {"filename": "apps/new.yaml", "previous_filename": "apps/old.yaml", "status": "renamed"},
            {"filename": "gone.yaml", "previous_filename": "", "status": "deleted"}
        ]))
        .expect("decode");
        assert_eq!(
            file_paths(files),
            vec!["apps/a.yaml", "apps/old.yaml", "apps/new.yaml", "gone.yaml"]
        );
    }

    #[test]
    fn pulls_decode_to_the_forge_shape() {
        let p: WirePull = serde_json::from_value(json!({
            "id": 12, "number": 3, "html_url": "https://gitea.example.com/acme/config/pulls/3",
            "state": "closed", "title": "Release", "head": {"ref": "flaggit/x", "sha": "h"},
            "base": {"ref": "main"}, "user": {"login": "flaggit-bot"}, "merged": true,
            "merged_by": {"login": "alice"}, "merge_commit_sha": "abc",
            "created_at": "2026-01-01T10:00:00Z"
        }))
        .expect("decode");
        let p = PullRequest::from(p);
        assert_eq!(
            (p.state, p.merge_commit.as_deref(), p.merged_by.as_deref()),
            (PullRequestState::Merged, Some("abc"), Some("alice"))
        );
        let open: WirePull = serde_json::from_value(json!({
            "number": 4, "html_url": "u", "state": "open", "title": "t", "head": {"ref": "h"},
            "base": {"ref": "main"}, "user": null, "merged": false, "merge_commit_sha": null
        }))
        .expect("decode");
        let open = PullRequest::from(open);
        assert_eq!(
            (open.state, open.author.as_str()),
            (PullRequestState::Open, "ghost")
        );
    }

    #[test]
    fn reviews_map_and_dismissed_ones_say_so() {
        assert_eq!(review_state("APPROVED", false), Some(ReviewState::Approved));
        assert_eq!(review_state("APPROVED", true), Some(ReviewState::Dismissed));
        assert_eq!(
            review_state("REQUEST_CHANGES", false),
            Some(ReviewState::ChangesRequested)
        );
        assert_eq!(review_state("COMMENT", false), Some(ReviewState::Commented));
        assert_eq!(review_state("REQUEST_REVIEW", false), None);
    }

    #[test]
    fn the_last_close_event_names_the_closer() {
        let events: Vec<TimelineEvent> = serde_json::from_value(json!([
            {"type": "comment", "user": {"login": "a"}},
            {"type": "close", "user": {"login": "bob"}},
            {"type": "reopen", "user": {"login": "carol"}},
            {"type": "close", "user": {"login": "dana"}},
        ]))
        .expect("decode");
        assert_eq!(last_closer(events).as_deref(), Some("dana"));
        assert_eq!(last_closer(Vec::new()), None);
    }

    #[test]
    fn secrets_give_a_token_and_debug_hides_it() {
        let data: BTreeMap<String, Vec<u8>> = BTreeMap::from([("token".to_string(), b"gt0ken".to_vec())]);
        assert_eq!(
            GiteaAuth::from_secret(&data).expect("token"),
            GiteaAuth("gt0ken".into())
        );
        assert!(GiteaAuth::from_secret(&BTreeMap::new()).is_err());
        let gitea = Gitea::new("https://codeberg.org/api/v1", GiteaAuth("gt0ken".into())).expect("client");
        assert!(!format!("{gitea:?}").contains("gt0ken"));
        assert!(!format!("{:?}", GiteaAuth("gt0ken".into())).contains("gt0ken"));
    }
}
