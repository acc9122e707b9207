//! A stateful GitLab on loopback: the REST v4 endpoints the `GitLab` forge calls, in GitLab's
//! documented JSON shapes (merge requests, notes, award emoji, project and group members,
//! users, commits), over the shared state of [`fake_forge`](crate::fake_forge). Projects are
//! addressed by their URL-encoded path; merging is a real git merge. Tokens come as
//! `PRIVATE-TOKEN` or `Authorization: Bearer`.

#![allow(dead_code)] // a harness: each test uses a part of it

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_forge::{Answer, Dialect, FakeForge, Note, PullState, Request, State, rfc3339_millis};

/// GitLab's access levels, as `FakeForge::set_access` takes them.
pub const REPORTER: &str = "20";
pub const DEVELOPER: &str = "30";
pub const MAINTAINER: &str = "40";

/// Starts a fake GitLab whose API is at `{url}/api/v4`.
pub fn start(token: &str) -> FakeForge {
    FakeForge::start(Box::new(GitLab), "/api/v4", token)
}

struct GitLab;

fn error(status: u16, message: Value) -> Answer {
    (
        StatusCode::from_u16(status).expect("status"),
        Vec::new(),
        Some(json!({ "message": message })),
    )
}

fn not_found(what: &str) -> Answer {
    error(404, json!(format!("404 {what} Not Found")))
}

fn ok(value: Value) -> Answer {
    (StatusCode::OK, Vec::new(), Some(value))
}

fn created(value: Value) -> Answer {
    (StatusCode::CREATED, Vec::new(), Some(value))
}

fn user(state: &mut State, login: &str) -> Value {
    let id = state.user_id(login);
    json!({
        "id": id, "username": login, "name": login, "state": "active", "locked": false,
        "avatar_url": null, "web_url": format!("{}/{login}", state.origin)
    })
}

fn mr_json(state: &mut State, i: usize) -> Value {
    let p = state.pulls[i].clone();
    let repo = state.repos[p.repo].clone();
    let author = user(state, &p.author);
    let merged_by = p.merged_by.clone().map(|l| user(state, &l));
    let closed_by = match p.state {
        PullState::Closed => p.closed_by.clone().map(|l| user(state, &l)),
        _ => None,
    };
    let sha = state.head_sha(i);
    state.sync_head_ref(i, &format!("refs/merge-requests/{}/head", p.number));
    json!({
        "id": p.id,
        "iid": p.number,
        "project_id": repo.id,
        "title": p.title,
        "description": p.body,
        "state": match p.state { PullState::Open => "opened", PullState::Closed => "closed", PullState::Merged => "merged" },
        "created_at": rfc3339_millis(p.created_at),
        "updated_at": rfc3339_millis(p.updated_at),
        "merged_at": p.merged_at.map(rfc3339_millis),
        "closed_at": p.closed_at.filter(|_| p.state == PullState::Closed).map(rfc3339_millis),
        "merged_by": merged_by.clone(),
        "merge_user": merged_by,
        "closed_by": closed_by,
        "target_branch": p.base,
        "source_branch": p.head,
        "source_project_id": repo.id,
        "target_project_id": repo.id,
        "author": author,
        "draft": false,
        "work_in_progress": false,
        "merge_when_pipeline_succeeds": false,
        "detailed_merge_status": if p.state == PullState::Open { "mergeable" } else { "not_open" },
        "sha": sha,
        "merge_commit_sha": p.merge_commit_sha,
        "squash_commit_sha": null,
        "squash": false,
        "web_url": format!("{}/{}/-/merge_requests/{}", state.origin, repo.full_path(), p.number),
        "references": { "short": format!("!{}", p.number), "full": format!("{}!{}", repo.full_path(), p.number) },
    })
}

fn note_json(state: &mut State, n: &Note, project_id: u64, mr_id: u64) -> Value {
    json!({
        "id": n.id,
        "type": null,
        "body": n.body,
        "attachment": null,
        "author": user(state, &n.author),
        "created_at": rfc3339_millis(n.created_at),
        "updated_at": rfc3339_millis(n.updated_at),
        "system": n.system,
        "noteable_id": mr_id,
        "noteable_type": "MergeRequest",
        "noteable_iid": n.pr,
        "project_id": project_id,
        "resolvable": false,
        "confidential": false,
        "internal": false,
    })
}

fn levels(access: &str) -> u64 {
    access.parse().unwrap_or(0)
}

impl Dialect for GitLab {
    fn login(&self, state: &State, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })?;
        state.tokens.get(token).cloned()
    }

    fn unauthorized(&self) -> Value {
        json!({"message": "401 Unauthorized"})
    }

    fn route(&self, state: &mut State, r: &Request<'_>) -> Answer {
        let seg = r.seg();
        let m = r.method;
        match seg.as_slice() {
            ["user"] if m == Method::GET => {
                let login = r.login.clone();
                ok(user(state, &login))
            }
            ["users"] if m == Method::GET => {
                let found: Vec<String> = if let Some(name) = r.query.get("username") {
                    state
                        .users
                        .keys()
                        .filter(|l| l.eq_ignore_ascii_case(name))
                        .cloned()
                        .collect()
                } else if let Some(search) = r.query.get("search") {
                    // A search by e-mail matches public e-mails exactly.
                    state
                        .emails
                        .get(&search.to_ascii_lowercase())
                        .cloned()
                        .into_iter()
                        .collect()
                } else {
                    Vec::new()
                };
                let users: Vec<Value> = found.iter().map(|l| user(state, l)).collect();
                ok(Value::Array(users))
            }
            ["groups", group, "members", "all", id] if m == Method::GET => {
                let Some(members) = state.teams.get(&group.to_ascii_lowercase()).cloned() else {
                    return not_found("Group");
                };
                let Some(login) = id.parse().ok().and_then(|id| state.login_of(id)) else {
                    return not_found("Member");
                };
                if !members.contains(&login) {
                    return not_found("Member");
                }
                let mut member = user(state, &login);
                member["access_level"] = json!(30);
                ok(member)
            }
            ["projects", project, rest @ ..] => {
                let Some(repo) = state.repo_index(project) else {
                    return not_found("Project");
                };
                self.project(state, r, repo, rest)
            }
            _ => error(404, json!("404 Not Found")),
        }
    }
}

impl GitLab {
    fn project(&self, state: &mut State, r: &Request<'_>, repo: usize, rest: &[&str]) -> Answer {
        let m = r.method;
        let project_id = state.repos[repo].id;
        match rest {
            ["merge_requests"] if m == Method::GET => {
                let want = r.query.get("state").map(String::as_str);
                let source = r.query.get("source_branch");
                let target = r.query.get("target_branch");
                let indices: Vec<usize> = (0..state.pulls.len())
                    .filter(|&i| {
                        let p = &state.pulls[i];
                        p.repo == repo
                            && source.is_none_or(|s| *s == p.head)
                            && target.is_none_or(|t| *t == p.base)
                            && match want {
                                Some("opened") => p.state == PullState::Open,
                                Some("closed") => p.state == PullState::Closed,
                                Some("merged") => p.state == PullState::Merged,
                                _ => true,
                            }
                    })
                    .rev()
                    .collect();
                let items: Vec<Value> = indices.into_iter().map(|i| mr_json(state, i)).collect();
                let (headers, page) = state.page(&r.path, &r.query, "per_page", 20, items);
                (StatusCode::OK, headers, Some(page))
            }
            ["merge_requests"] if m == Method::POST => {
                let (Some(head), Some(base), Some(title)) =
                    (r.str("source_branch"), r.str("target_branch"), r.str("title"))
                else {
                    return error(400, json!("source_branch, target_branch, title are missing"));
                };
                let body = r.str("description").unwrap_or_default().to_string();
                match state.open_pull(&r.login, repo, head, base, title, &body) {
                    Ok(i) => created(mr_json(state, i)),
                    Err(e) if e.contains("already exists") => error(
                        409,
                        json!([format!(
                            "Another open merge request already exists for this source branch: {head}"
                        )]),
                    ),
                    Err(e) => error(422, json!([e])),
                }
            }
            ["merge_requests", iid, more @ ..] => {
                let Some(i) = iid.parse().ok().and_then(|n| state.pull_index(repo, n)) else {
                    return not_found("Merge Request");
                };
                self.merge_request(state, r, i, project_id, more)
            }
            ["repository", "commits", sha] if m == Method::GET => {
                let Some((id, email)) = state.commit_email(repo, sha) else {
                    return not_found("Commit");
                };
                ok(json!({
                    "id": id, "short_id": &id[..8.min(id.len())], "title": "", "message": "",
                    "author_name": email.split('@').next().unwrap_or_default(), "author_email": email,
                    "committer_email": email, "parent_ids": [], "web_url": format!("{}/-/commit/{id}", state.origin)
                }))
            }
            ["members", "all", id] if m == Method::GET => {
                let Some(login) = id.parse().ok().and_then(|id| state.login_of(id)) else {
                    return not_found("Member");
                };
                let Some(level) = state.access.get(&login).map(|a| levels(a)) else {
                    return not_found("Member");
                };
                let mut member = user(state, &login);
                member["access_level"] = json!(level);
                ok(member)
            }
            _ => error(404, json!("404 Not Found")),
        }
    }

    fn merge_request(
        &self,
        state: &mut State,
        r: &Request<'_>,
        i: usize,
        project_id: u64,
        rest: &[&str],
    ) -> Answer {
        let m = r.method;
        let number = state.pulls[i].number;
        let mr_id = state.pulls[i].id;
        match rest {
            [] if m == Method::GET => ok(mr_json(state, i)),
            [] if m == Method::PUT => {
                if let Some(description) = r.str("description") {
                    state.pulls[i].body = description.to_string();
                }
                match r.str("state_event") {
                    Some("close") if state.pulls[i].state == PullState::Open => {
                        let login = r.login.clone();
                        state.set_state(i, false, &login);
                    }
                    Some("reopen") if state.pulls[i].state == PullState::Closed => {
                        let login = r.login.clone();
                        state.set_state(i, true, &login);
                    }
                    _ => {}
                }
                state.pulls[i].updated_at = state.tick();
                ok(mr_json(state, i))
            }
            ["diffs"] if m == Method::GET => {
                // GitLab's diff of the merge request: the changes since the head left the
                // target (the three-dot diff), each with both paths.
                let files = match state.changed_files(i) {
                    Ok(files) => files,
                    Err(e) => return error(500, json!(e)),
                };
                let items: Vec<Value> = files
                    .into_iter()
                    .map(|(status, path, old)| {
                        json!({
                            "old_path": old.clone().unwrap_or_else(|| path.clone()),
                            "new_path": path,
                            "a_mode": if status == 'A' { "0" } else { "100644" },
                            "b_mode": if status == 'D' { "0" } else { "100644" },
                            "diff": "",
                            "new_file": status == 'A',
                            "renamed_file": status == 'R',
                            "deleted_file": status == 'D',
                            "generated_file": false,
                        })
                    })
                    .collect();
                let (headers, page) = state.page(&r.path, &r.query, "per_page", 20, items);
                (StatusCode::OK, headers, Some(page))
            }
            ["merge"] if m == Method::PUT => {
                let squash = r.body.get("squash").and_then(Value::as_bool).unwrap_or(false);
                let message = if squash {
                    r.str("squash_commit_message")
                } else {
                    r.str("merge_commit_message")
                };
                let p = state.pulls[i].clone();
                let default = format!("Merge branch '{}' into '{}'", p.head, p.base);
                let text = message.unwrap_or(&default).to_string();
                let (title, body) = text.split_once("\n\n").unwrap_or((&text, ""));
                let login = r.login.clone();
                match state.merge(
                    i,
                    &login,
                    if squash { "squash" } else { "merge" },
                    title,
                    body,
                    "GitLab",
                ) {
                    Ok(_) => ok(mr_json(state, i)),
                    Err((405, _)) => error(405, json!("405 Method Not Allowed")),
                    Err((406, _)) => error(406, json!("Branch cannot be merged")),
                    Err((status, message)) => error(status, json!(message)),
                }
            }
            ["notes"] if m == Method::GET => {
                let mut notes: Vec<Note> = state.notes.iter().filter(|n| n.pr == number).cloned().collect();
                let by_updated = r.query.get("order_by").map(String::as_str) == Some("updated_at");
                notes.sort_by_key(|n| {
                    if by_updated {
                        (n.updated_at, n.id)
                    } else {
                        (n.created_at, n.id)
                    }
                });
                // GitLab's default is newest first.
                if r.query.get("sort").map(String::as_str) != Some("asc") {
                    notes.reverse();
                }
                let items: Vec<Value> = notes
                    .iter()
                    .map(|n| note_json(state, n, project_id, mr_id))
                    .collect();
                let (headers, page) = state.page(&r.path, &r.query, "per_page", 20, items);
                (StatusCode::OK, headers, Some(page))
            }
            ["notes"] if m == Method::POST => {
                let Some(body) = r.str("body").filter(|b| !b.is_empty()) else {
                    return error(400, json!({"note": ["can't be blank"]}));
                };
                let login = r.login.clone();
                let id = state.add_note(&login, number, body, false);
                let note = state
                    .notes
                    .iter()
                    .find(|n| n.id == id)
                    .cloned()
                    .expect("just added");
                created(note_json(state, &note, project_id, mr_id))
            }
            ["notes", id, more @ ..] => {
                let Some(n) = id
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| state.notes.iter().position(|n| n.id == id && n.pr == number))
                else {
                    return not_found("Note");
                };
                match (more, m) {
                    ([], &Method::GET) => {
                        let note = state.notes[n].clone();
                        ok(note_json(state, &note, project_id, mr_id))
                    }
                    ([], &Method::PUT) => {
                        if state.notes[n].author != r.login {
                            return error(403, json!("403 Forbidden"));
                        }
                        let now = state.tick();
                        state.notes[n].body = r.str("body").unwrap_or_default().to_string();
                        state.notes[n].updated_at = now;
                        let note = state.notes[n].clone();
                        ok(note_json(state, &note, project_id, mr_id))
                    }
                    (["award_emoji"], &Method::POST) => {
                        let Some(name) = r.str("name") else {
                            return error(400, json!("name is missing"));
                        };
                        let login = r.login.clone();
                        if state.notes[n]
                            .reactions
                            .iter()
                            .any(|(l, e)| *l == login && e == name)
                        {
                            return error(
                                404,
                                json!("404 Award Emoji Name has already been taken Not Found"),
                            );
                        }
                        state.notes[n].reactions.push((login.clone(), name.to_string()));
                        let id = state.new_id();
                        let now = state.tick();
                        let note_id = state.notes[n].id;
                        let by = user(state, &login);
                        created(json!({
                            "id": id, "name": name, "user": by, "created_at": rfc3339_millis(now),
                            "updated_at": rfc3339_millis(now), "awardable_id": note_id, "awardable_type": "Note"
                        }))
                    }
                    _ => error(405, json!("405 Method Not Allowed")),
                }
            }
            _ => error(404, json!("404 Not Found")),
        }
    }
}
