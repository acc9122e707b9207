//! The release pull request flow, the same on every forge: `flaggit run` against a real API
//! server and Prometheus, a bare repository served by `git daemon`, and a loopback GitHub,
//! GitLab or Gitea over the same repository (merges there are real git merges). One test body,
//! [`release_flow`], runs on each: the release pull request opens naming its author; the
//! author's, a reader's and a writer's `/approve` are judged (refused with a reply, refused,
//! accepted); the accepted one promotes and merges; the next release's `/rollback` rolls back
//! and closes its pull request; and the controller's webhook receiver for that forge takes a
//! delivery with the right secret and refuses one with a wrong secret. [`team_review_flow`]
//! has a member of an approving team, without the permission, approve with the forge's own
//! review (GitLab: the Approve button).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use flaggit::api::{ApprovalGate, Canary, CanaryPhase, ForgeKind, PullRequestSettings};
use flaggit::forge::hooks;
use flaggit::forge::receiver::sign;

use crate::fake_forge::{FakeForge, PullState};
use crate::fake_github::FakeGitHub;
use crate::git_remote::{BareRepo, GitDaemon, HUMAN_EMAIL, TempDir, git};
use crate::gitops::{PLACEMENT, placement, wait_for};
use crate::pull_requests::{AUTHOR, MANIFEST, kinds, manifest, pr_canary, records};
use crate::rollout::{Rig, stepping};

const TOKEN: &str = "forge-test-token";
const WEBHOOK_SECRET: &str = "hook-s3cret";
const BOT: &str = crate::fake_forge::BOT_LOGIN;

/// The fake forge of one test.
pub(crate) enum Fake {
    GitHub(FakeGitHub),
    Other(ForgeKind, FakeForge),
}

/// A pull request as any fake holds it.
#[derive(Debug)]
pub(crate) struct Pr {
    number: u64,
    title: String,
    pub(crate) head: String,
    base: String,
    body: String,
    /// `open`, `closed` or `merged`.
    state: &'static str,
    merged_by: Option<String>,
}

/// A comment as any fake holds it; the times as the fake stamps them (they only compare).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Note {
    pub(crate) id: u64,
    pub(crate) author: String,
    pub(crate) body: String,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

impl Fake {
    fn start(kind: ForgeKind) -> Fake {
        match kind {
            ForgeKind::Github => Fake::GitHub(FakeGitHub::start(TOKEN)),
            ForgeKind::Gitlab => Fake::Other(kind, crate::fake_gitlab::start(TOKEN)),
            ForgeKind::Gitea => Fake::Other(kind, crate::fake_gitea::start(TOKEN)),
        }
    }

    fn kind(&self) -> ForgeKind {
        match self {
            Fake::GitHub(_) => ForgeKind::Github,
            Fake::Other(kind, _) => *kind,
        }
    }

    fn url(&self) -> String {
        match self {
            Fake::GitHub(f) => f.url(),
            Fake::Other(_, f) => f.url(),
        }
    }

    fn add_repo(&self, repo: &BareRepo) {
        match self {
            Fake::GitHub(f) => f.add_repo("acme", "config", &repo.path),
            Fake::Other(_, f) => f.add_repo("acme/config", &repo.path),
        }
    }

    fn link_email(&self, email: &str, login: &str) {
        match self {
            Fake::GitHub(f) => f.link_email(email, login),
            Fake::Other(_, f) => f.link_email(email, login),
        }
    }

    /// Write access, in the forge's terms: GitHub `write`, GitLab Developer, Gitea `write`.
    fn grant_write(&self, login: &str) {
        match self {
            Fake::GitHub(f) => f.set_permission(login, "write"),
            Fake::Other(ForgeKind::Gitlab, f) => f.set_access(login, crate::fake_gitlab::DEVELOPER),
            Fake::Other(_, f) => f.set_access(login, "write"),
        }
    }

    /// Read access: GitHub `read`, GitLab Reporter, Gitea `read`.
    fn grant_read(&self, login: &str) {
        match self {
            Fake::GitHub(f) => f.set_permission(login, "read"),
            Fake::Other(ForgeKind::Gitlab, f) => f.set_access(login, crate::fake_gitlab::REPORTER),
            Fake::Other(_, f) => f.set_access(login, "read"),
        }
    }

    /// `login` approves with the forge's own button: GitHub's and Gitea's approving review,
    /// GitLab's Approve (recorded as a system note).
    fn approve_with_review(&self, login: &str, pr: u64) {
        match self {
            Fake::GitHub(f) => {
                f.review_as(login, pr, "APPROVED", "");
            }
            Fake::Other(ForgeKind::Gitlab, f) => {
                f.approve_as(login, pr);
            }
            Fake::Other(_, f) => {
                f.review_as(login, pr, "APPROVED", "");
            }
        }
    }

    /// `login` is a member of team `acme/releasers` (GitLab: the group `acme/releasers`).
    fn add_releaser(&self, login: &str) {
        match self {
            Fake::GitHub(f) => f.add_team_member("acme", "releasers", login),
            Fake::Other(_, f) => f.add_team_member("acme/releasers", login),
        }
    }

    fn comment_as(&self, login: &str, pr: u64, body: &str) -> u64 {
        match self {
            Fake::GitHub(f) => f.comment_as(login, pr, body),
            Fake::Other(_, f) => f.comment_as(login, pr, body),
        }
    }

    fn reactions(&self, comment: u64) -> Vec<String> {
        let pairs = match self {
            Fake::GitHub(f) => f.reactions(comment),
            Fake::Other(_, f) => f.reactions(comment),
        };
        pairs.into_iter().map(|(_, r)| r).collect()
    }

    /// `login` opens a pull request from `head` (a branch of the bare repository) into `base`.
    pub(crate) fn open_pull_as(&self, login: &str, head: &str, base: &str, title: &str) -> u64 {
        match self {
            Fake::GitHub(f) => f.open_pull_as(login, "acme", "config", head, base, title),
            Fake::Other(_, f) => f.open_pull_as(login, "acme/config", head, base, title),
        }
    }

    /// The comments of `pr` (GitLab: its notes that are no system notes), oldest first.
    pub(crate) fn notes(&self, pr: u64) -> Vec<Note> {
        match self {
            Fake::GitHub(f) => f
                .comments(pr)
                .into_iter()
                .map(|c| Note {
                    id: c.id,
                    author: c.author,
                    body: c.body,
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                })
                .collect(),
            Fake::Other(_, f) => f
                .comments(pr)
                .into_iter()
                .filter(|n| !n.system)
                .map(|n| Note {
                    id: n.id,
                    author: n.author,
                    body: n.body,
                    created_at: n.created_at.to_string(),
                    updated_at: n.updated_at.to_string(),
                })
                .collect(),
        }
    }

    /// The reactions that say accepted and refused, as the forge names them.
    fn verdicts(&self) -> (&'static str, &'static str) {
        match self.kind() {
            ForgeKind::Gitlab => ("thumbsup", "thumbsdown"),
            ForgeKind::Github | ForgeKind::Gitea => ("+1", "-1"),
        }
    }

    pub(crate) fn pulls(&self) -> Vec<Pr> {
        match self {
            Fake::GitHub(f) => f
                .pulls()
                .into_iter()
                .map(|p| Pr {
                    number: p.number,
                    title: p.title,
                    head: p.head,
                    base: p.base,
                    body: p.body,
                    state: match (p.state.as_str(), p.merged) {
                        (_, true) => "merged",
                        ("open", _) => "open",
                        _ => "closed",
                    },
                    merged_by: p.merged_by,
                })
                .collect(),
            Fake::Other(_, f) => f
                .pulls()
                .into_iter()
                .map(|p| Pr {
                    number: p.number,
                    title: p.title,
                    head: p.head,
                    base: p.base,
                    body: p.body,
                    state: match p.state {
                        PullState::Open => "open",
                        PullState::Closed => "closed",
                        PullState::Merged => "merged",
                    },
                    merged_by: p.merged_by,
                })
                .collect(),
        }
    }

    fn pull(&self, number: u64) -> Pr {
        self.pulls()
            .into_iter()
            .find(|p| p.number == number)
            .expect("the pull request exists")
    }

    /// (author, body) of the comments, oldest first.
    fn comments(&self, pr: u64) -> Vec<(String, String)> {
        match self {
            Fake::GitHub(f) => f.comments(pr).into_iter().map(|c| (c.author, c.body)).collect(),
            Fake::Other(_, f) => f.comments(pr).into_iter().map(|n| (n.author, n.body)).collect(),
        }
    }

    /// A webhook delivery about a comment on pull request `pr`, as this forge sends it,
    /// proving `secret`: (path, headers, body).
    fn comment_delivery(
        &self,
        pr: u64,
        comment: u64,
        user: &str,
        delivery: &str,
        secret: &str,
    ) -> (String, Vec<(String, String)>, Vec<u8>) {
        let kind = self.kind();
        let path = hooks::path(kind).to_string();
        match kind {
            ForgeKind::Github | ForgeKind::Gitea => {
                let body = serde_json::to_vec(&serde_json::json!({
                    "action": "created",
                    "issue": { "number": pr, "pull_request": { "url": "x" } },
                    "comment": { "id": comment, "body": "", "user": { "login": user } },
                    "repository": { "name": "config", "full_name": "acme/config", "owner": { "login": "acme" } },
                    "sender": { "login": user },
                    "is_pull": true,
                }))
                .expect("json");
                let signature = sign(secret.as_bytes(), &body);
                let headers = if kind == ForgeKind::Github {
                    vec![
                        ("x-github-event".into(), "issue_comment".into()),
                        ("x-github-delivery".into(), delivery.into()),
                        ("x-hub-signature-256".into(), signature),
                    ]
                } else {
                    vec![
                        ("x-gitea-event".into(), "issue_comment".into()),
                        ("x-gitea-delivery".into(), delivery.into()),
                        (
                            "x-gitea-signature".into(),
                            signature.trim_start_matches("sha256=").into(),
                        ),
                    ]
                };
                (path, headers, body)
            }
            ForgeKind::Gitlab => {
                let body = serde_json::to_vec(&serde_json::json!({
                    "object_kind": "note", "event_type": "note",
                    "user": { "id": 9, "name": user, "username": user },
                    "project": { "id": 1, "path_with_namespace": "acme/config" },
                    "object_attributes": { "id": comment, "note": "", "noteable_type": "MergeRequest", "action": "create" },
                    "merge_request": { "iid": pr, "state": "opened" },
                }))
                .expect("json");
                let headers = vec![
                    ("x-gitlab-event".into(), "Note Hook".into()),
                    ("idempotency-key".into(), delivery.into()),
                    ("x-gitlab-token".into(), secret.into()),
                ];
                (path, headers, body)
            }
        }
    }
}

pub(crate) struct World {
    pub(crate) rig: Rig,
    pub(crate) repo: BareRepo,
    pub(crate) fake: Fake,
    /// A GitHub beside the forge under test: the canary's `forge` field must pick the right one.
    _other: Option<FakeGitHub>,
    _daemon: GitDaemon,
    _cache: TempDir,
    secrets: Vec<String>,
}

async fn secret(prefix: &str, data: BTreeMap<String, String>) -> String {
    let client = crate::support::control_plane().client().await;
    let name = format!("{prefix}-{}", rand::random::<u32>());
    let object: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "stringData": data,
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client, "default")
        .create(&PostParams::default(), &object)
        .await
        .expect("create the forge Secret");
    name
}

/// A config repo `acme/config` on git daemon and on the fake `kind`, its Secret (token and
/// webhook secret), and the controller configured for it. For GitLab and Gitea, a GitHub is
/// configured too, so the repository's forge is picked by the canary's field.
pub(crate) async fn world(prefix: &str, kind: ForgeKind) -> World {
    let v0 = manifest("podinfo:6.0.0");
    let repo = BareRepo::new("acme/config", &BTreeMap::from([(MANIFEST, v0.as_str())]));
    let daemon = GitDaemon::start(&repo.root);
    let fake = Fake::start(kind);
    fake.add_repo(&repo);
    fake.link_email(HUMAN_EMAIL, AUTHOR);
    let cache = TempDir::new("flaggit-cache");
    let data = BTreeMap::from([
        ("token".to_string(), TOKEN.to_string()),
        ("webhookSecret".to_string(), WEBHOOK_SECRET.to_string()),
    ]);
    let name = secret(kind.as_str(), data).await;
    let mut secrets = vec![name.clone()];
    let mut args: Vec<String> = [
        "--git-url",
        &daemon.url(&repo),
        "--git-cache-dir",
        &cache.path().display().to_string(),
        "--git-batch-window",
        "100ms",
        &format!("--{}-secret", kind.as_str()),
        &format!("default/{name}"),
        &format!("--{}-api-url", kind.as_str()),
        &fake.url(),
        "--forge-poll-interval",
        "1s",
        "--forge-permission-ttl",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let other = if kind == ForgeKind::Github {
        None
    } else {
        let github = FakeGitHub::start("other-token");
        let name = secret(
            "github",
            BTreeMap::from([("token".to_string(), "other-token".to_string())]),
        )
        .await;
        args.extend([
            "--github-secret".to_string(),
            format!("default/{name}"),
            "--github-api-url".to_string(),
            github.url(),
        ]);
        secrets.push(name);
        Some(github)
    };
    let rig = Rig::with_args(prefix, &args).await;
    repo.human_commit(
        &[(PLACEMENT, &placement(&rig.ns.name))],
        "place apps/podinfo in its namespace",
    );
    World {
        rig,
        repo,
        fake,
        _other: other,
        _daemon: daemon,
        _cache: cache,
        secrets,
    }
}

impl World {
    pub(crate) async fn finish(self) {
        let client = crate::support::control_plane().client().await;
        for name in &self.secrets {
            let _ = Api::<Secret>::namespaced(client.clone(), "default")
                .delete(name, &DeleteParams::default())
                .await;
        }
        self.rig.finish().await;
    }

    async fn release(&self, image: &str) {
        self.repo.human_commit(
            &[(MANIFEST, &manifest(image))],
            &format!("bump podinfo to {image}"),
        );
        self.rig.set_image("podinfo", image).await;
    }

    async fn pull_request(&self, title: &str) -> u64 {
        wait_for("the release pull request", Duration::from_secs(120), || {
            self.fake
                .pulls()
                .into_iter()
                .find(|p| p.title == title)
                .map(|p| p.number)
        })
        .await
    }

    async fn wait_reaction(&self, comment: u64, content: &str) {
        wait_for(&format!("a {content} reaction"), Duration::from_secs(120), || {
            self.fake
                .reactions(comment)
                .iter()
                .any(|c| c == content)
                .then_some(())
        })
        .await
    }

    /// The controller's replies (not the status comment).
    fn replies(&self, pr: u64) -> Vec<String> {
        self.fake
            .comments(pr)
            .into_iter()
            .filter(|(author, body)| author == BOT && !body.starts_with("<!-- flaggit:status"))
            .map(|(_, body)| body)
            .collect()
    }

    async fn wait_reply(&self, pr: u64, needle: &str) {
        let start = Instant::now();
        loop {
            let replies = self.replies(pr);
            if replies.iter().any(|r| r.contains(needle)) {
                return;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let all: Vec<String> = self
                    .fake
                    .comments(pr)
                    .into_iter()
                    .map(|(author, body)| format!("{author}: {}", body.chars().take(300).collect::<String>()))
                    .collect();
                let log = self.rig.flaggit().log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "no reply says {needle:?}; the comments: {all:#?}\nthe controller's log, newest first:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Posts a comment delivery to the controller's receiver of this forge; the HTTP status.
    async fn deliver(&self, pr: u64, comment: u64, delivery: &str, secret: &str) -> u16 {
        let (path, headers, body) = self.fake.comment_delivery(pr, comment, "alice", delivery, secret);
        let url = format!("http://127.0.0.1:{}{path}", self.rig.flaggit().port);
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request
            .body(body)
            .send()
            .await
            .expect("the controller answers")
            .status()
            .as_u16()
    }
}

/// Names forge `kind` in the canary's pull request settings where [`world`] configured two:
/// the repository's host (127.0.0.1) names no forge.
pub(crate) fn name_forge(canary: &mut Canary, kind: ForgeKind) {
    if kind != ForgeKind::Github {
        canary.spec.gitops.as_mut().expect("gitops").pull_request = Some(PullRequestSettings {
            forge: Some(kind),
            ..Default::default()
        });
    }
}

/// The whole flow on forge `kind`.
async fn release_flow(kind: ForgeKind) {
    let w = world(&format!("flow-{}", kind.as_str()), kind).await;
    let ns = w.rig.ns.name.clone();
    let (accepted, refused) = w.fake.verdicts();
    w.fake.grant_write("alice");
    w.fake.grant_write(AUTHOR);
    w.fake.grant_read("reader");
    let mut canary = pr_canary(vec![ApprovalGate::ConfirmPromotion], 1, stepping(25, 50));
    name_forge(&mut canary, kind);
    w.rig.initialize_podinfo(canary).await;
    wait_for("the Initialized record on main", Duration::from_secs(60), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;

    // The release pull request opens on this forge, naming the author of the change.
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    let opened = w.fake.pull(pr);
    assert!(
        opened.head.starts_with(&format!("flaggit/{ns}/podinfo/")),
        "{opened:?}"
    );
    assert_eq!(opened.base, "main");
    assert!(opened.body.contains("confirm-promotion"), "{}", opened.body);
    assert!(
        opened.body.contains(&format!("Authored by @{AUTHOR}")),
        "the forge mapped the commit's e-mail to its account: {}",
        opened.body
    );
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(120))
        .await;

    // The webhook receiver of this forge: a wrong secret is refused, the right one accepted.
    let note = w.fake.comment_as("chatter", pr, "looks fine");
    assert_eq!(w.deliver(pr, note, "d-forged", "wrong-secret").await, 401);
    assert_eq!(w.deliver(pr, note, "d-1", WEBHOOK_SECRET).await, 200);

    // The author may not approve their own change; a reader may not approve.
    let own = w.fake.comment_as(AUTHOR, pr, "/approve");
    w.wait_reaction(own, refused).await;
    w.wait_reply(pr, &format!("{AUTHOR} is an author of this release"))
        .await;
    let read = w.fake.comment_as("reader", pr, "/approve");
    w.wait_reaction(read, refused).await;
    // GitLab's Reporter is triage; GitHub's and Gitea's read is read. Neither writes.
    w.wait_reply(pr, "permission on acme").await;
    w.wait_reply(pr, "approving needs write").await;
    assert_eq!(
        w.rig
            .canaries()
            .get("podinfo")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.phase),
        Some(CanaryPhase::WaitingPromotion)
    );

    // A writer's approval promotes, and flaggit merges the release.
    let alice = w.fake.comment_as("alice", pr, "/approve");
    w.wait_reaction(alice, accepted).await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    let merged = wait_for("the merge", Duration::from_secs(60), || {
        let p = w.fake.pull(pr);
        (p.state == "merged").then_some(p)
    })
    .await;
    assert_eq!(merged.merged_by.as_deref(), Some(BOT));
    let parents = git(&w.repo.path, &["log", "-1", "--format=%P", "main"]);
    assert_eq!(parents.split_whitespace().count(), 2, "a merge commit: {parents}");
    // The release's records are on its branch, the merge's second parent.
    let promoting = records(&w.repo, "main^2")
        .into_iter()
        .find(|t| t.get("Flaggit-Kind").map(String::as_str) == Some("Promoting"))
        .expect("a Promoting record");
    assert_eq!(promoting["Flaggit-Approved-By"], "alice", "{promoting:?}");
    let commands = records(&w.repo, "main^2")
        .iter()
        .filter_map(|t| t.get("Flaggit-Command").cloned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        commands.contains(&format!("@{AUTHOR} /approve refused")),
        "{commands}"
    );
    assert!(commands.contains("@reader /approve refused"), "{commands}");
    assert!(commands.contains("@alice /approve accepted"), "{commands}");

    // The next release: /rollback while it waits rolls back and closes its pull request.
    w.release("podinfo:6.0.2").await;
    let next = w.pull_request(&format!("Release {ns}/podinfo 6.0.2")).await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(120))
        .await;
    let rollback = w.fake.comment_as("alice", next, "/rollback latency looks off");
    w.wait_reaction(rollback, accepted).await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(120))
        .await;
    wait_for("the closed pull request", Duration::from_secs(60), || {
        (w.fake.pull(next).state == "closed").then_some(())
    })
    .await;
    wait_for("the rollback on main", Duration::from_secs(60), || {
        kinds(&w.repo, "main")
            .ends_with(&["RolledBack".to_string()])
            .then_some(())
    })
    .await;
    assert_eq!(
        w.repo.show("main", MANIFEST).as_deref(),
        Some(manifest("podinfo:6.0.1").as_str())
    );
    let last = records(&w.repo, "main").last().cloned().unwrap_or_default();
    assert!(
        last["Flaggit-Reason"].contains("rollback requested by @alice"),
        "{last:?}"
    );
    if let Some(github) = &w._other {
        assert!(github.pulls().is_empty(), "nothing went to the other forge");
    }
    w.finish().await;
}

/// An approving review (GitLab: the Approve button) by a member of an approving team, who
/// could not approve by permission, promotes on forge `kind`.
async fn team_review_flow(kind: ForgeKind) {
    let w = world(&format!("team-{}", kind.as_str()), kind).await;
    let ns = w.rig.ns.name.clone();
    w.fake.grant_read("bob");
    w.fake.add_releaser("bob");
    let mut canary = pr_canary(vec![ApprovalGate::ConfirmPromotion], 1, stepping(25, 50));
    let gitops = canary.spec.gitops.as_mut().expect("gitops");
    let approvals = gitops.approvals.as_mut().expect("approvals");
    approvals.permission = Some(flaggit::api::RepositoryPermission::Maintain);
    approvals.teams = Some(vec!["acme/releasers".into()]);
    if kind != ForgeKind::Github {
        gitops.pull_request = Some(PullRequestSettings {
            forge: Some(kind),
            ..Default::default()
        });
    }
    w.rig.initialize_podinfo(canary).await;
    wait_for("the Initialized record on main", Duration::from_secs(60), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(120))
        .await;
    w.fake.approve_with_review("bob", pr);
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    let merged = wait_for("the merge", Duration::from_secs(60), || {
        let p = w.fake.pull(pr);
        (p.state == "merged").then_some(p)
    })
    .await;
    assert_eq!(merged.merged_by.as_deref(), Some(BOT));
    let promoting = records(&w.repo, "main^2")
        .into_iter()
        .find(|t| t.get("Flaggit-Kind").map(String::as_str) == Some("Promoting"))
        .expect("a Promoting record");
    assert_eq!(promoting["Flaggit-Approved-By"], "bob", "{promoting:?}");
    w.finish().await;
}

#[tokio::test]
async fn a_team_members_review_approves_on_gitlab() {
    team_review_flow(ForgeKind::Gitlab).await;
}

#[tokio::test]
async fn a_team_members_review_approves_on_gitea() {
    team_review_flow(ForgeKind::Gitea).await;
}

#[tokio::test]
async fn a_team_members_review_approves_on_github() {
    team_review_flow(ForgeKind::Github).await;
}

#[tokio::test]
async fn the_release_flow_on_github() {
    release_flow(ForgeKind::Github).await;
}

#[tokio::test]
async fn the_release_flow_on_gitlab() {
    release_flow(ForgeKind::Gitlab).await;
}

#[tokio::test]
async fn the_release_flow_on_gitea() {
    release_flow(ForgeKind::Gitea).await;
}
