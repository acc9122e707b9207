//! What GitHub and Gitea share (Gitea's API v1 copies GitHub's REST API): the JSON shapes of
//! users, pull requests, changed files, issue comments and reviews, how they become the forge
//! types, and the pull request and comment calls both make alike.

use axum::http::Method;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{Rest, decode, enc};
use super::{
    Comment, Error as ForgeError, NewPullRequest, Polled, PullRequest, PullRequestState, Reaction, RepoId,
    Review, ReviewState, changed_paths,
};

#[derive(Deserialize)]
pub struct WireUser {
    pub login: String,
}

/// The login of a user; a deleted account (null, or Gitea's empty login) is `ghost`, as
/// both forges name it.
pub fn login(user: Option<WireUser>) -> String {
    user.map(|u| u.login)
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "ghost".into())
}

/// A timestamp field of an answer.
pub fn timestamp(
    forge: &'static str,
    action: &str,
    field: &str,
    value: &str,
) -> Result<Timestamp, ForgeError> {
    value.parse().map_err(|e| ForgeError::Decode {
        forge,
        action: action.to_owned(),
        message: format!("{field} {value:?}: {e}"),
    })
}

#[derive(Deserialize)]
pub struct WireRef {
    #[serde(rename = "ref")]
    pub name: String,
    #[serde(default)]
    pub sha: Option<String>,
}

#[derive(Deserialize)]
pub struct WirePull {
    pub number: u64,
    pub html_url: String,
    pub state: String,
    pub title: String,
    pub head: WireRef,
    pub base: WireRef,
    pub user: Option<WireUser>,
    /// Absent from GitHub's lists, where `merged_at` says it.
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<String>,
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
    #[serde(default)]
    pub merged_by: Option<WireUser>,
    #[serde(default)]
    pub created_at: Option<String>,
}

impl From<WirePull> for PullRequest {
    fn from(p: WirePull) -> Self {
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
            merge_commit: if merged {
                p.merge_commit_sha.filter(|s| !s.is_empty())
            } else {
                None
            },
            merged_by: if merged {
                p.merged_by.map(|u| u.login).filter(|l| !l.is_empty())
            } else {
                None
            },
            closed_by: None,
            created_at: p.created_at.and_then(|t| t.parse().ok()),
        }
    }
}

/// One changed file of a pull request (`GET /repos/{o}/{r}/pulls/{n}/files`).
#[derive(Deserialize)]
pub struct WireFile {
    pub filename: String,
    /// The path before a rename.
    #[serde(default)]
    pub previous_filename: Option<String>,
}

/// The paths the files touch, both sides of a rename, in the order given.
pub fn file_paths(files: Vec<WireFile>) -> Vec<String> {
    changed_paths(files.into_iter().map(|f| (f.previous_filename, f.filename)))
}

/// An issue comment (a pull request's conversation).
#[derive(Deserialize)]
pub struct WireComment {
    pub id: u64,
    pub user: Option<WireUser>,
    #[serde(default)]
    pub body: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub html_url: String,
}

impl WireComment {
    pub fn into_comment(self, forge: &'static str, action: &str) -> Result<Comment, ForgeError> {
        Ok(Comment {
            id: self.id,
            author: login(self.user),
            body: self.body.unwrap_or_default(),
            created_at: timestamp(forge, action, "created_at", &self.created_at)?,
            updated_at: timestamp(forge, action, "updated_at", &self.updated_at)?,
            url: self.html_url,
        })
    }
}

/// Comments as a conditional list answered them, oldest first.
pub fn comments_of(
    forge: &'static str,
    action: &str,
    polled: Polled<Vec<WireComment>>,
) -> Result<Polled<Vec<Comment>>, ForgeError> {
    let Polled::Changed { value, etag } = polled else {
        return Ok(Polled::NotModified);
    };
    let mut comments = value
        .into_iter()
        .map(|c| c.into_comment(forge, action))
        .collect::<Result<Vec<_>, _>>()?;
    comments.sort_by_key(|c| (c.created_at, c.id));
    Ok(Polled::Changed {
        value: comments,
        etag,
    })
}

#[derive(Deserialize)]
pub struct WireReview {
    pub id: u64,
    pub user: Option<WireUser>,
    /// GitHub: `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`, `PENDING`; Gitea:
    /// `APPROVED`, `PENDING`, `COMMENT`, `REQUEST_CHANGES` or `REQUEST_REVIEW`.
    pub state: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub submitted_at: Option<String>,
    /// Gitea's mark of a dismissed review (GitHub says it in `state`).
    #[serde(default)]
    pub dismissed: bool,
}

/// The submitted reviews, oldest first: those `state_of` (the state and the dismissed
/// mark) gives a state that counts, and that have a submission time.
pub fn reviews_of(
    forge: &'static str,
    action: &str,
    reviews: Vec<WireReview>,
    state_of: fn(&str, bool) -> Option<ReviewState>,
) -> Result<Vec<Review>, ForgeError> {
    let mut out = Vec::new();
    for r in reviews {
        let (Some(state), Some(submitted_at)) = (state_of(&r.state, r.dismissed), r.submitted_at) else {
            continue;
        };
        out.push(Review {
            id: r.id,
            author: login(r.user),
            state,
            body: r.body.unwrap_or_default(),
            submitted_at: timestamp(forge, action, "submitted_at", &submitted_at)?,
        });
    }
    out.sort_by_key(|r| (r.submitted_at, r.id));
    Ok(out)
}

/// The API path of a repository (`/repos/{owner}/{repo}`).
pub fn repo_path(repo: &RepoId) -> String {
    format!("/repos/{}/{}", enc(&repo.owner), enc(&repo.name))
}

/// How a pull request is named in messages (`pull request acme/config#3`).
pub fn pr_what(repo: &RepoId, number: u64) -> String {
    format!("pull request {repo}#{number}")
}

fn comment_what(repo: &RepoId, comment_id: u64) -> String {
    format!("comment {comment_id} in {repo}")
}

/// The calls GitHub and Gitea make alike, over one forge's [`Rest`] client.
pub struct Pulls<'a>(pub &'a Rest);

impl Pulls<'_> {
    pub async fn open(&self, repo: &RepoId, new: &NewPullRequest) -> Result<PullRequest, ForgeError> {
        const ACTION: &str = "open the pull request";
        let body = json!({"title": new.title, "body": new.body, "head": new.head, "base": new.base});
        let what = format!("repository {repo}");
        let path = format!("{}/pulls", repo_path(repo));
        let answer = self.0.send_json(Method::POST, ACTION, &what, path, body).await?;
        Ok(decode::<WirePull>(self.0.forge(), ACTION, &answer.body)?.into())
    }

    pub async fn get(&self, repo: &RepoId, number: u64) -> Result<PullRequest, ForgeError> {
        let path = format!("{}/pulls/{number}", repo_path(repo));
        let pull: WirePull = self
            .0
            .get_json("read the pull request", &pr_what(repo, number), path)
            .await?;
        Ok(pull.into())
    }

    /// Changes the pull request (`body`, `state`): `action` says what for messages.
    pub async fn edit(
        &self,
        repo: &RepoId,
        number: u64,
        action: &str,
        change: Value,
    ) -> Result<(), ForgeError> {
        let path = format!("{}/pulls/{number}", repo_path(repo));
        self.0
            .send_json(Method::PATCH, action, &pr_what(repo, number), path, change)
            .await?;
        Ok(())
    }

    /// One issue comment by id; None once it was deleted.
    pub async fn comment(&self, repo: &RepoId, comment_id: u64) -> Result<Option<Comment>, ForgeError> {
        const ACTION: &str = "read the comment";
        let path = format!("{}/issues/comments/{comment_id}", repo_path(repo));
        let what = comment_what(repo, comment_id);
        match self.0.get_json::<WireComment>(ACTION, &what, path).await {
            Ok(comment) => comment.into_comment(self.0.forge(), ACTION).map(Some),
            Err(ForgeError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn create_comment(
        &self,
        repo: &RepoId,
        number: u64,
        body: &str,
    ) -> Result<Comment, ForgeError> {
        const ACTION: &str = "comment on the pull request";
        let path = format!("{}/issues/{number}/comments", repo_path(repo));
        let answer = self
            .0
            .send_json(
                Method::POST,
                ACTION,
                &pr_what(repo, number),
                path,
                json!({"body": body}),
            )
            .await?;
        let forge = self.0.forge();
        decode::<WireComment>(forge, ACTION, &answer.body)?.into_comment(forge, ACTION)
    }

    pub async fn edit_comment(&self, repo: &RepoId, comment_id: u64, body: &str) -> Result<(), ForgeError> {
        let path = format!("{}/issues/comments/{comment_id}", repo_path(repo));
        self.0
            .send_json(
                Method::PATCH,
                "edit the comment",
                &comment_what(repo, comment_id),
                path,
                json!({"body": body}),
            )
            .await?;
        Ok(())
    }

    /// Puts `reaction` on the comment: 201 for a new reaction, 200 when it was already there.
    pub async fn react(&self, repo: &RepoId, comment_id: u64, reaction: Reaction) -> Result<(), ForgeError> {
        let path = format!("{}/issues/comments/{comment_id}/reactions", repo_path(repo));
        self.0
            .send_json(
                Method::POST,
                "react to the comment",
                &comment_what(repo, comment_id),
                path,
                json!({"content": reaction.as_str()}),
            )
            .await?;
        Ok(())
    }
}
