//! A stateful Gitea/Forgejo on loopback: the API v1 endpoints the `Gitea` forge calls, in the
//! shapes of Gitea's swagger (pull requests, issue comments, reactions, reviews, the issue
//! timeline, git commits, collaborator permissions, organization teams), over the shared state
//! of [`fake_forge`](crate::fake_forge). Merging is a real git merge; tokens come as
//! `Authorization: token ...`.

#![allow(dead_code)] // a harness: each test uses a part of it

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_forge::{Answer, Dialect, FakeForge, Note, PullState, Request, State, rfc3339};

/// Starts a fake Gitea whose API is at `{url}/api/v1`.
pub fn start(token: &str) -> FakeForge {
    FakeForge::start(Box::new(Gitea), "/api/v1", token)
}

struct Gitea;

fn error(status: u16, message: &str) -> Answer {
    (
        StatusCode::from_u16(status).expect("status"),
        Vec::new(),
        Some(json!({"message": message, "url": "https://gitea.example.com/api/swagger"})),
    )
}

fn ok(value: Value) -> Answer {
    (StatusCode::OK, Vec::new(), Some(value))
}

fn created(value: Value) -> Answer {
    (StatusCode::CREATED, Vec::new(), Some(value))
}

fn user(state: &mut State, login: &str) -> Value {
    let id = state.user_id(login);
    json!({"id": id, "login": login, "full_name": "", "email": format!("{login}@noreply.example.com"),
        "avatar_url": "", "username": login})
}

fn pull_json(state: &mut State, i: usize) -> Value {
    let p = state.pulls[i].clone();
    let repo = state.repos[p.repo].clone();
    let author = user(state, &p.author);
    let merged_by = p.merged_by.clone().map(|l| user(state, &l));
    let sha = state.head_sha(i);
    state.sync_head_ref(i, &format!("refs/pull/{}/head", p.number));
    let html = format!("{}/{}/pulls/{}", state.origin, repo.full_path(), p.number);
    let repo_json = json!({"id": repo.id, "name": repo.name, "full_name": repo.full_path(),
        "owner": {"login": repo.owner}});
    json!({
        "id": p.id,
        "url": html,
        "number": p.number,
        "user": author,
        "title": p.title,
        "body": p.body,
        "state": if p.state == PullState::Open { "open" } else { "closed" },
        "html_url": html,
        "mergeable": p.state == PullState::Open,
        "merged": p.state == PullState::Merged,
        "merged_at": p.merged_at.map(rfc3339),
        "merge_commit_sha": p.merge_commit_sha,
        "merged_by": merged_by,
        "base": {"label": p.base, "ref": p.base, "sha": "", "repo_id": repo.id, "repo": repo_json},
        "head": {"label": p.head, "ref": p.head, "sha": sha, "repo_id": repo.id, "repo": repo_json},
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
        "closed_at": p.closed_at.map(rfc3339),
    })
}

fn comment_json(state: &mut State, n: &Note) -> Value {
    let p = state
        .pulls
        .iter()
        .find(|p| p.number == n.pr)
        .cloned()
        .expect("the pull request");
    let repo = state.repos[p.repo].full_path();
    json!({
        "id": n.id,
        "html_url": format!("{}/{repo}/pulls/{}#issuecomment-{}", state.origin, n.pr, n.id),
        "pull_request_url": format!("{}/{repo}/pulls/{}", state.origin, n.pr),
        "issue_url": "",
        "user": user(state, &n.author),
        "original_author": "",
        "original_author_id": 0,
        "body": n.body,
        "assets": [],
        "created_at": rfc3339(n.created_at),
        "updated_at": rfc3339(n.updated_at),
    })
}

impl Dialect for Gitea {
    fn login(&self, state: &State, headers: &HeaderMap) -> Option<String> {
        let value = headers.get("authorization").and_then(|v| v.to_str().ok())?;
        let token = value
            .strip_prefix("token ")
            .or_else(|| value.strip_prefix("Bearer "))?;
        state.tokens.get(token).cloned()
    }

    fn unauthorized(&self) -> Value {
        json!({"message": "token is required", "url": "https://gitea.example.com/api/swagger"})
    }

    fn route(&self, state: &mut State, r: &Request<'_>) -> Answer {
        let seg = r.seg();
        let m = r.method;
        match seg.as_slice() {
            ["user"] if m == Method::GET => {
                let login = r.login.clone();
                ok(user(state, &login))
            }
            ["orgs", org, "teams", "search"] if m == Method::GET => {
                let q = r.query.get("q").cloned().unwrap_or_default().to_ascii_lowercase();
                let prefix = format!("{}/", org.to_ascii_lowercase());
                let teams: Vec<Value> = state
                    .teams
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .filter(|name| name.contains(&q))
                    .map(|name| {
                        let id = team_id(&format!("{prefix}{name}"));
                        json!({"id": id, "name": name, "permission": "write"})
                    })
                    .collect();
                ok(json!({"data": teams, "ok": true}))
            }
            ["teams", id, "members", login] if m == Method::GET => {
                let member = state
                    .teams
                    .iter()
                    .find(|(k, _)| team_id(k).to_string() == *id)
                    .is_some_and(|(_, members)| members.contains(&login.to_ascii_lowercase()));
                if member {
                    ok(user(state, login))
                } else {
                    (StatusCode::NOT_FOUND, Vec::new(), None)
                }
            }
            ["repos", owner, name, rest @ ..] => {
                let Some(repo) = state.repo_index(&format!("{owner}/{name}")) else {
                    return error(404, "The target couldn't be found.");
                };
                self.repo(state, r, repo, rest)
            }
            _ => error(404, "Not Found"),
        }
    }
}

/// A stable id for a team.
fn team_id(key: &str) -> u64 {
    key.bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        % 100_000
}

impl Gitea {
    fn repo(&self, state: &mut State, r: &Request<'_>, repo: usize, rest: &[&str]) -> Answer {
        let m = r.method;
        match rest {
            ["pulls"] if m == Method::GET => {
                let want = r.query.get("state").map(String::as_str).unwrap_or("open");
                let indices: Vec<usize> = (0..state.pulls.len())
                    .filter(|&i| {
                        let p = &state.pulls[i];
                        p.repo == repo
                            && match want {
                                "open" => p.state == PullState::Open,
                                "closed" => p.state != PullState::Open,
                                _ => true,
                            }
                    })
                    .rev()
                    .collect();
                let items: Vec<Value> = indices.into_iter().map(|i| pull_json(state, i)).collect();
                let (headers, page) = state.page(&r.path, &r.query, "limit", 30, items);
                (StatusCode::OK, headers, Some(page))
            }
            ["pulls"] if m == Method::POST => {
                let (Some(head), Some(base), Some(title)) = (r.str("head"), r.str("base"), r.str("title"))
                else {
                    return error(422, "head, base and title are required");
                };
                let body = r.str("body").unwrap_or_default().to_string();
                match state.open_pull(&r.login, repo, head, base, title, &body) {
                    Ok(i) => created(pull_json(state, i)),
                    Err(e) if e.contains("already exists") => error(
                        409,
                        &format!(
                            "pull request already exists for these targets [head: {head}, base: {base}]"
                        ),
                    ),
                    Err(e) => error(404, &e),
                }
            }
            ["pulls", n, more @ ..] => {
                let Some(i) = n.parse().ok().and_then(|n| state.pull_index(repo, n)) else {
                    return error(404, "The target couldn't be found.");
                };
                self.pull(state, r, i, more)
            }
            ["issues", n, "comments"] => {
                let Some(i) = n.parse().ok().and_then(|n| state.pull_index(repo, n)) else {
                    return error(404, "The target couldn't be found.");
                };
                let number = state.pulls[i].number;
                if m == Method::POST {
                    let Some(body) = r.str("body") else {
                        return error(422, "body is required");
                    };
                    let login = r.login.clone();
                    let id = state.add_note(&login, number, body, false);
                    let note = state
                        .notes
                        .iter()
                        .find(|n| n.id == id)
                        .cloned()
                        .expect("just added");
                    return created(comment_json(state, &note));
                }
                let since = r
                    .query
                    .get("since")
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_second());
                let notes: Vec<Note> = state
                    .notes
                    .iter()
                    .filter(|n| n.pr == number && !n.system && since.is_none_or(|s| n.updated_at >= s))
                    .cloned()
                    .collect();
                let items: Vec<Value> = notes.iter().map(|n| comment_json(state, n)).collect();
                ok(Value::Array(items))
            }
            ["issues", n, "timeline"] if m == Method::GET => {
                let Some(i) = n.parse().ok().and_then(|n| state.pull_index(repo, n)) else {
                    return error(404, "The target couldn't be found.");
                };
                let p = state.pulls[i].clone();
                let mut events = Vec::new();
                if let (PullState::Closed, Some(by), Some(at)) = (p.state, &p.closed_by, p.closed_at) {
                    let by = user(state, by);
                    events.push(json!({"id": state.next_id + 1, "type": "close", "user": by,
                        "created_at": rfc3339(at), "body": ""}));
                }
                let (headers, page) = state.page(&r.path, &r.query, "limit", 30, events);
                (StatusCode::OK, headers, Some(page))
            }
            ["issues", "comments", id, more @ ..] => {
                let Some(n) = id
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| state.notes.iter().position(|n| n.id == id && !n.system))
                else {
                    return error(404, "The target couldn't be found.");
                };
                match (more, m) {
                    ([], &Method::GET) => {
                        let note = state.notes[n].clone();
                        ok(comment_json(state, &note))
                    }
                    ([], &Method::PATCH) => {
                        if state.notes[n].author != r.login {
                            return error(403, "user should be the owner of the comment");
                        }
                        let now = state.tick();
                        state.notes[n].body = r.str("body").unwrap_or_default().to_string();
                        state.notes[n].updated_at = now;
                        let note = state.notes[n].clone();
                        ok(comment_json(state, &note))
                    }
                    (["reactions"], &Method::POST) => {
                        let Some(content) = r.str("content") else {
                            return error(422, "content is required");
                        };
                        let allowed = [
                            "+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes",
                        ];
                        if !allowed.contains(&content) {
                            return error(403, &format!("'{content}' is not an allowed reaction"));
                        }
                        let login = r.login.clone();
                        let by = user(state, &login);
                        let now = rfc3339(state.tick());
                        let reaction = json!({"user": by, "content": content, "created_at": now});
                        if state.notes[n]
                            .reactions
                            .iter()
                            .any(|(l, c)| *l == login && c == content)
                        {
                            return ok(reaction);
                        }
                        state.notes[n].reactions.push((login, content.to_string()));
                        created(reaction)
                    }
                    _ => error(405, "Method Not Allowed"),
                }
            }
            ["git", "commits", sha] if m == Method::GET => {
                let Some((id, email)) = state.commit_email(repo, sha) else {
                    return error(404, "The target couldn't be found.");
                };
                let account = state.emails.get(&email.to_ascii_lowercase()).cloned();
                let author = account.map(|l| user(state, &l)).unwrap_or(Value::Null);
                ok(json!({
                    "sha": id, "html_url": "", "author": author, "committer": null, "parents": [],
                    "commit": {"message": "", "author": {"name": "", "email": email, "date": ""},
                        "committer": {"name": "", "email": email, "date": ""}}
                }))
            }
            ["collaborators", login, "permission"] if m == Method::GET => {
                let key = login.to_ascii_lowercase();
                if !state.users.contains_key(&key) {
                    return error(404, "user does not exist");
                }
                let permission = state.access.get(&key).cloned().unwrap_or_else(|| "none".into());
                let u = user(state, login);
                ok(json!({"permission": permission, "role_name": permission, "user": u}))
            }
            _ => error(404, "Not Found"),
        }
    }

    fn pull(&self, state: &mut State, r: &Request<'_>, i: usize, rest: &[&str]) -> Answer {
        let m = r.method;
        match rest {
            [] if m == Method::GET => ok(pull_json(state, i)),
            [] if m == Method::PATCH => {
                if let Some(body) = r.str("body") {
                    state.pulls[i].body = body.to_string();
                }
                let login = r.login.clone();
                match (r.str("state"), state.pulls[i].state) {
                    (Some("closed"), PullState::Open) => state.set_state(i, false, &login),
                    (Some("open"), PullState::Closed) => state.set_state(i, true, &login),
                    _ => {}
                }
                state.pulls[i].updated_at = state.tick();
                created(pull_json(state, i))
            }
            ["merge"] if m == Method::POST => {
                let style = r.str("Do").unwrap_or("merge");
                let method = match style {
                    "merge" | "squash" | "rebase" => style,
                    "rebase-merge" => "merge",
                    _ => return error(422, &format!("invalid merge style {style:?}")),
                };
                let p = state.pulls[i].clone();
                let default = format!(
                    "Merge pull request '{}' (#{}) from {} into {}",
                    p.title, p.number, p.head, p.base
                );
                let title = r
                    .str("MergeTitleField")
                    .filter(|t| !t.is_empty())
                    .unwrap_or(&default)
                    .to_string();
                let message = r.str("MergeMessageField").unwrap_or_default().to_string();
                let login = r.login.clone();
                match state.merge(i, &login, method, &title, &message, "Gitea") {
                    Ok(_) => (StatusCode::OK, Vec::new(), None),
                    Err((405, _)) => error(405, "The PR is not open"),
                    Err((406, _)) => error(409, "Merge conflict"),
                    Err((status, message)) => error(status, &message),
                }
            }
            ["files"] if m == Method::GET => {
                // Gitea's changed files: the changes since the head left the base (the
                // three-dot diff); a rename carries `previous_filename`.
                let files = match state.changed_files(i) {
                    Ok(files) => files,
                    Err(e) => return error(500, &e),
                };
                let items: Vec<Value> = files
                    .into_iter()
                    .map(|(status, filename, previous)| {
                        let status = match status {
                            'A' => "added",
                            'D' => "deleted",
                            'R' => "renamed",
                            _ => "changed",
                        };
                        let mut v = json!({"filename": filename, "status": status,
                            "additions": 0, "deletions": 0, "changes": 0});
                        if let (Some(previous), Value::Object(map)) = (previous, &mut v) {
                            map.insert("previous_filename".into(), Value::String(previous));
                        }
                        v
                    })
                    .collect();
                let (headers, page) = state.page(&r.path, &r.query, "limit", 30, items);
                (StatusCode::OK, headers, Some(page))
            }
            ["reviews"] if m == Method::GET => {
                let number = state.pulls[i].number;
                let reviews: Vec<_> = state
                    .reviews
                    .iter()
                    .filter(|rv| rv.pr == number)
                    .cloned()
                    .collect();
                let items: Vec<Value> = reviews
                    .iter()
                    .map(|rv| {
                        json!({"id": rv.id, "user": user(state, &rv.author), "state": rv.state,
                            "body": rv.body, "commit_id": "", "stale": false, "official": true,
                            "dismissed": rv.dismissed, "submitted_at": rfc3339(rv.submitted_at)})
                    })
                    .collect();
                let (headers, page) = state.page(&r.path, &r.query, "limit", 30, items);
                (StatusCode::OK, headers, Some(page))
            }
            _ => error(404, "Not Found"),
        }
    }
}
