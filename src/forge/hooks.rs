//! How each forge signs and shapes its webhook deliveries: GitHub's `X-Hub-Signature-256`,
//! GitLab's `X-Gitlab-Token` (the secret itself, compared in constant time) and Gitea's or
//! Forgejo's `X-Gitea-Signature`/`X-Forgejo-Signature` (the hex HMAC-SHA256 of the body); the
//! headers naming the event and the delivery; and the payloads flaggit reads. The receiver
//! ([`super::receiver`]) does the rest the same way for all three.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::RepoId;
use super::receiver::{Decoded, Event, Secrets};
use crate::api::ForgeKind;

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn first<'h>(headers: &'h HeaderMap, names: &[&str]) -> Option<&'h str> {
    names.iter().find_map(|name| header(headers, name))
}

/// Where the controller mounts the receiver of `kind` on its HTTP port.
pub fn path(kind: ForgeKind) -> &'static str {
    match kind {
        ForgeKind::Github => super::receiver::PATH,
        ForgeKind::Gitlab => "/forge/gitlab/webhook",
        ForgeKind::Gitea => "/forge/gitea/webhook",
    }
}

/// The header naming the event (`issue_comment`, `Note Hook`).
pub fn event(kind: ForgeKind, headers: &HeaderMap) -> String {
    let names: &[&str] = match kind {
        ForgeKind::Github => &["x-github-event"],
        ForgeKind::Gitlab => &["x-gitlab-event"],
        ForgeKind::Gitea => &["x-forgejo-event", "x-gitea-event", "x-gogs-event"],
    };
    first(headers, names).unwrap_or("").chars().take(40).collect()
}

/// The delivery's id, to drop replays; empty when the forge sent none. GitLab repeats
/// `Idempotency-Key` on a retried delivery (17.4 on); `X-Gitlab-Event-UUID` before.
pub fn delivery(kind: ForgeKind, headers: &HeaderMap) -> String {
    let names: &[&str] = match kind {
        ForgeKind::Github => &["x-github-delivery"],
        ForgeKind::Gitlab => &["idempotency-key", "x-gitlab-event-uuid"],
        ForgeKind::Gitea => &["x-forgejo-delivery", "x-gitea-delivery", "x-gogs-delivery"],
    };
    // Header values are attacker-controlled: cut before logging.
    first(headers, names).unwrap_or("").chars().take(64).collect()
}

/// Whether a delivery must name itself: GitHub and Gitea always do, so one without an id is
/// not theirs; GitLab only from 15.x on.
pub fn needs_delivery_id(kind: ForgeKind) -> bool {
    kind != ForgeKind::Gitlab
}

/// Whether the delivery proves it knows one of the secrets; `signed` says whether it carried
/// a signature (or token) at all, for the log.
pub fn verify(kind: ForgeKind, secrets: &Secrets, headers: &HeaderMap, body: &[u8]) -> (bool, bool) {
    match kind {
        ForgeKind::Github => {
            let signature = header(headers, "x-hub-signature-256").unwrap_or("");
            (secrets.verify(body, signature), !signature.is_empty())
        }
        ForgeKind::Gitlab => {
            let token = header(headers, "x-gitlab-token").unwrap_or("");
            (secrets.verify_token(token.as_bytes()), !token.is_empty())
        }
        ForgeKind::Gitea => {
            let signature = first(headers, &["x-forgejo-signature", "x-gitea-signature"]).unwrap_or("");
            (secrets.verify_hex(body, signature), !signature.is_empty())
        }
    }
}

/// What a delivery of `kind` says.
pub fn decode(kind: ForgeKind, event: &str, body: &[u8]) -> Decoded {
    match kind {
        ForgeKind::Github => super::receiver::decode(event, body),
        ForgeKind::Gitlab => decode_gitlab(event, body),
        ForgeKind::Gitea => decode_gitea(event, body),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Decoded> {
    serde_json::from_slice(body).map_err(|e| Decoded::Invalid(e.to_string()))
}

#[derive(Deserialize)]
struct GitLabUser {
    username: String,
}

#[derive(Deserialize)]
struct GitLabProject {
    path_with_namespace: String,
}

#[derive(Deserialize)]
struct GitLabNote {
    id: u64,
    noteable_type: String,
    #[serde(default)]
    action: Option<String>,
}

#[derive(Deserialize)]
struct GitLabMergeRequestRef {
    iid: u64,
}

#[derive(Deserialize)]
struct GitLabNoteHook {
    user: GitLabUser,
    project: GitLabProject,
    object_attributes: GitLabNote,
    #[serde(default)]
    merge_request: Option<GitLabMergeRequestRef>,
}

#[derive(Deserialize)]
struct GitLabMergeRequest {
    iid: u64,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
struct GitLabMergeRequestHook {
    project: GitLabProject,
    object_attributes: GitLabMergeRequest,
}

/// A project path (`acme/platform/config`) as the id GitLab gives it: the owner keeps
/// every group.
fn gitlab_repo(path: &str) -> Option<RepoId> {
    let (owner, name) = path.rsplit_once('/')?;
    (!owner.is_empty() && !name.is_empty()).then(|| RepoId {
        owner: owner.to_owned(),
        name: name.to_owned(),
    })
}

fn nudge(repo: Option<RepoId>, number: u64, event: Event) -> Decoded {
    match repo {
        Some(repo) => Decoded::Nudge { repo, number, event },
        None => Decoded::Invalid("the project path is not group/name".into()),
    }
}

/// GitLab's `Note Hook` on a merge request and `Merge Request Hook`.
fn decode_gitlab(event: &str, body: &[u8]) -> Decoded {
    match event {
        "Note Hook" => {
            let hook = match parse::<GitLabNoteHook>(body) {
                Ok(hook) => hook,
                Err(invalid) => return invalid,
            };
            let (Some(mr), "MergeRequest") =
                (hook.merge_request, hook.object_attributes.noteable_type.as_str())
            else {
                // A note on an issue, a commit or a snippet.
                return Decoded::Ignored;
            };
            let action = match hook.object_attributes.action.as_deref() {
                Some("update") => "edited",
                _ => "created",
            };
            nudge(
                gitlab_repo(&hook.project.path_with_namespace),
                mr.iid,
                Event::Comment {
                    action: action.into(),
                    comment_id: hook.object_attributes.id,
                    author: hook.user.username,
                },
            )
        }
        "Merge Request Hook" => {
            let hook = match parse::<GitLabMergeRequestHook>(body) {
                Ok(hook) => hook,
                Err(invalid) => return invalid,
            };
            let mr = hook.object_attributes;
            let action = mr.action.unwrap_or_default();
            let event = match action.as_str() {
                "approved" | "approval" => Event::Review {
                    action: "submitted".into(),
                    review_id: 0,
                    state: "approved".into(),
                },
                "unapproved" | "unapproval" => Event::Review {
                    action: "dismissed".into(),
                    review_id: 0,
                    state: "dismissed".into(),
                },
                _ => Event::PullRequest {
                    merged: mr.state.as_deref() == Some("merged"),
                    action,
                },
            };
            nudge(gitlab_repo(&hook.project.path_with_namespace), mr.iid, event)
        }
        _ => Decoded::Ignored,
    }
}

#[derive(Deserialize)]
struct GiteaPull {
    number: u64,
}

#[derive(Deserialize)]
struct GiteaRepository {
    full_name: String,
}

#[derive(Deserialize)]
struct GiteaReviewHook {
    pull_request: GiteaPull,
    repository: GiteaRepository,
}

/// Gitea's and Forgejo's events: `issue_comment` and `pull_request` have GitHub's shape;
/// reviews come as `pull_request_review_approved`, `_rejected` or `_comment`.
fn decode_gitea(event: &str, body: &[u8]) -> Decoded {
    let Some(verdict) = event.strip_prefix("pull_request_review_") else {
        return match event {
            "issue_comment" | "pull_request" => super::receiver::decode(event, body),
            _ => Decoded::Ignored,
        };
    };
    let hook = match parse::<GiteaReviewHook>(body) {
        Ok(hook) => hook,
        Err(invalid) => return invalid,
    };
    let repo = hook
        .repository
        .full_name
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty())
        .map(|(owner, name)| RepoId {
            owner: owner.to_owned(),
            name: name.to_owned(),
        });
    let state = match verdict {
        "approved" => "approved",
        "rejected" => "changes_requested",
        _ => "commented",
    };
    nudge(
        repo,
        hook.pull_request.number,
        Event::Review {
            action: "submitted".into(),
            review_id: 0,
            state: state.into(),
        },
    )
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
    fn gitlab_tokens_must_equal_a_secret() {
        let secrets = Secrets::new(vec![b"hook-s3cret".to_vec(), b"old".to_vec()]);
        let verify = |token: &str| {
            verify(
                ForgeKind::Gitlab,
                &secrets,
                &headers(&[("x-gitlab-token", token)]),
                b"{}",
            )
        };
        assert_eq!(verify("hook-s3cret"), (true, true));
        assert_eq!(verify("old"), (true, true), "a rotated secret");
        assert_eq!(verify("hook-s3cre"), (false, true));
        assert_eq!(verify("hook-s3cret "), (false, true));
        assert_eq!(verify(""), (false, false));
        assert_eq!(
            super::verify(ForgeKind::Gitlab, &secrets, &HeaderMap::new(), b"{}"),
            (false, false)
        );
    }

    #[test]
    fn gitea_and_forgejo_sign_the_body_in_hex() {
        let secrets = Secrets::new(vec![b"hook-s3cret".to_vec()]);
        let body = br#"{"action":"created"}"#;
        let hex = super::super::receiver::sign(b"hook-s3cret", body);
        let hex = hex.trim_start_matches("sha256=");
        for name in ["x-gitea-signature", "x-forgejo-signature"] {
            assert_eq!(
                verify(ForgeKind::Gitea, &secrets, &headers(&[(name, hex)]), body),
                (true, true),
                "{name}"
            );
        }
        let forged = super::super::receiver::sign(b"guess", body);
        let forged = forged.trim_start_matches("sha256=");
        assert_eq!(
            verify(
                ForgeKind::Gitea,
                &secrets,
                &headers(&[("x-gitea-signature", forged)]),
                body
            ),
            (false, true)
        );
        assert_eq!(
            verify(
                ForgeKind::Gitea,
                &secrets,
                &headers(&[("x-gitea-signature", hex)]),
                b"{}"
            ),
            (false, true),
            "another body"
        );
    }

    #[test]
    fn events_and_deliveries_come_from_each_forges_headers() {
        let h = headers(&[
            ("x-gitlab-event", "Note Hook"),
            ("x-gitlab-event-uuid", "u-1"),
            ("idempotency-key", "k-1"),
        ]);
        assert_eq!(event(ForgeKind::Gitlab, &h), "Note Hook");
        assert_eq!(delivery(ForgeKind::Gitlab, &h), "k-1");
        let h = headers(&[
            ("x-forgejo-event", "issue_comment"),
            ("x-forgejo-delivery", "f-1"),
        ]);
        assert_eq!(event(ForgeKind::Gitea, &h), "issue_comment");
        assert_eq!(delivery(ForgeKind::Gitea, &h), "f-1");
        assert_eq!(path(ForgeKind::Gitlab), "/forge/gitlab/webhook");
        assert!(needs_delivery_id(ForgeKind::Gitea) && !needs_delivery_id(ForgeKind::Gitlab));
    }

    #[test]
    fn gitlab_note_and_merge_request_hooks_nudge_their_merge_request() {
        let note = serde_json::json!({
            "object_kind": "note", "event_type": "note",
            "user": {"id": 1, "name": "Alice", "username": "alice"},
            "project": {"id": 5, "path_with_namespace": "acme/platform/config"},
            "object_attributes": {"id": 1244, "note": "/approve", "noteable_type": "MergeRequest", "action": "create"},
            "merge_request": {"id": 7, "iid": 3, "state": "opened"}
        });
        let Decoded::Nudge { repo, number, event } = decode(
            ForgeKind::Gitlab,
            "Note Hook",
            &serde_json::to_vec(&note).expect("json"),
        ) else {
            panic!("a note on a merge request nudges it")
        };
        assert_eq!((repo.full_path().as_str(), number), ("acme/platform/config", 3));
        assert_eq!(
            event,
            Event::Comment {
                action: "created".into(),
                comment_id: 1244,
                author: "alice".into()
            }
        );
        let on_issue = serde_json::json!({
            "user": {"username": "alice"}, "project": {"path_with_namespace": "acme/config"},
            "object_attributes": {"id": 1, "noteable_type": "Issue"}, "issue": {"iid": 1}
        });
        assert!(matches!(
            decode(
                ForgeKind::Gitlab,
                "Note Hook",
                &serde_json::to_vec(&on_issue).expect("json")
            ),
            Decoded::Ignored
        ));
        let merged = serde_json::json!({
            "object_kind": "merge_request", "user": {"username": "dana"},
            "project": {"path_with_namespace": "acme/config"},
            "object_attributes": {"iid": 4, "action": "merge", "state": "merged"}
        });
        let Decoded::Nudge { number, event, .. } = decode(
            ForgeKind::Gitlab,
            "Merge Request Hook",
            &serde_json::to_vec(&merged).expect("json"),
        ) else {
            panic!("a merge nudges")
        };
        assert_eq!(number, 4);
        assert_eq!(
            event,
            Event::PullRequest {
                action: "merge".into(),
                merged: true
            }
        );
        let approved = serde_json::json!({
            "project": {"path_with_namespace": "acme/config"},
            "object_attributes": {"iid": 4, "action": "approved", "state": "opened"}
        });
        assert!(matches!(
            decode(
                ForgeKind::Gitlab,
                "Merge Request Hook",
                &serde_json::to_vec(&approved).expect("json")
            ),
            Decoded::Nudge {
                event: Event::Review { .. },
                ..
            }
        ));
        assert!(matches!(
            decode(ForgeKind::Gitlab, "Push Hook", b"{}"),
            Decoded::Ignored
        ));
        assert!(matches!(
            decode(ForgeKind::Gitlab, "Note Hook", b"[]"),
            Decoded::Invalid(_)
        ));
    }

    #[test]
    fn gitea_comments_reuse_githubs_shape_and_reviews_are_nudges() {
        let comment = serde_json::json!({
            "action": "created",
            "issue": {"id": 9, "number": 2, "pull_request": {"merged": false}},
            "comment": {"id": 31, "body": "/approve", "user": {"login": "alice"}},
            "repository": {"full_name": "acme/config"}, "sender": {"login": "alice"}, "is_pull": true
        });
        let Decoded::Nudge { repo, number, .. } = decode(
            ForgeKind::Gitea,
            "issue_comment",
            &serde_json::to_vec(&comment).expect("json"),
        ) else {
            panic!("a comment on a pull request nudges it")
        };
        assert_eq!((repo.full_path().as_str(), number), ("acme/config", 2));
        let on_issue = serde_json::json!({
            "action": "created", "issue": {"number": 2, "pull_request": null},
            "comment": {"id": 31, "user": {"login": "alice"}}, "repository": {"full_name": "acme/config"}
        });
        assert!(matches!(
            decode(
                ForgeKind::Gitea,
                "issue_comment",
                &serde_json::to_vec(&on_issue).expect("json")
            ),
            Decoded::Ignored
        ));
        let review = serde_json::json!({
            "action": "reviewed", "number": 2, "pull_request": {"number": 2, "merged": false},
            "repository": {"full_name": "acme/config"}, "review": {"type": "pull_request_review_approved", "content": "ok"}
        });
        let Decoded::Nudge { event, .. } = decode(
            ForgeKind::Gitea,
            "pull_request_review_approved",
            &serde_json::to_vec(&review).expect("json"),
        ) else {
            panic!("a review nudges")
        };
        assert!(matches!(event, Event::Review { ref state, .. } if state == "approved"));
        assert!(matches!(
            decode(ForgeKind::Gitea, "push", b"{}"),
            Decoded::Ignored
        ));
    }
}
