//! Release pull requests end to end: `flaggit run` against a real API server and Prometheus,
//! a bare repository served by `git daemon`, and the loopback GitHub of `fake_github` over
//! the same repository (merges there are real git merges). Reviewers are played by the test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use flaggit::api::{ApprovalGate, Approvals, Canary, CanaryPhase, GitOpsMode, GitOpsSpec, Provider};
use flaggit::forge::receiver::{PATH, sign};

use crate::fake_github::{BOT_LOGIN, FakeGitHub};
use crate::git_remote::{BareRepo, GitDaemon, HUMAN_EMAIL, TempDir, git};
use crate::gitops::{PLACEMENT, placement, wait_for};
use crate::metrics_app::prometheus;
use crate::rollout::{Rig, canary_of, stepping, success_rate_where};

pub(crate) const MANIFEST: &str = "apps/podinfo/deployment.yaml";
const TOKEN: &str = "ghp_test-token";
const WEBHOOK_SECRET: &str = "hook-s3cret";

pub(crate) fn manifest(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
    )
}

/// The `Flaggit-*` trailers of each flaggit commit on `rev` (first parent), oldest first.
pub(crate) fn records(repo: &BareRepo, rev: &str) -> Vec<BTreeMap<String, String>> {
    let log = git(
        &repo.path,
        &["log", "--first-parent", "--format=%B%n--end--", rev],
    );
    let mut out: Vec<BTreeMap<String, String>> = Vec::new();
    for entry in log.split("--end--\n") {
        let mut trailers = BTreeMap::new();
        for (k, v) in entry.lines().filter_map(|l| l.split_once(": ")) {
            if k.starts_with("Flaggit-") {
                trailers
                    .entry(k.to_string())
                    .and_modify(|old: &mut String| {
                        old.push_str(", ");
                        old.push_str(v)
                    })
                    .or_insert_with(|| v.to_string());
            }
        }
        if !trailers.is_empty() {
            out.push(trailers);
        }
    }
    out.reverse();
    out
}

pub(crate) fn kinds(repo: &BareRepo, rev: &str) -> Vec<String> {
    records(repo, rev)
        .into_iter()
        .map(|t| t.get("Flaggit-Kind").cloned().unwrap_or_default())
        .collect()
}

pub(crate) struct World {
    pub(crate) rig: Rig,
    pub(crate) repo: BareRepo,
    pub(crate) github: FakeGitHub,
    _daemon: GitDaemon,
    _cache: TempDir,
    secret: String,
}

/// The GitHub login the human's commits (`HUMAN_EMAIL`) belong to: the author of every
/// release in these tests.
pub(crate) const AUTHOR: &str = "hank";

/// A config repo `acme/config` on git daemon and the fake GitHub, a GitHub Secret, and the
/// controller. `webhooks`: the Secret has a webhook secret (else the controller polls).
pub(crate) async fn world(prefix: &str, webhooks: bool, poll: &str) -> World {
    let v0 = manifest("podinfo:6.0.0");
    let repo = BareRepo::new("acme/config", &BTreeMap::from([(MANIFEST, v0.as_str())]));
    let daemon = GitDaemon::start(&repo.root);
    let github = FakeGitHub::start(TOKEN);
    github.add_repo("acme", "config", &repo.path);
    github.link_email(HUMAN_EMAIL, AUTHOR);
    let cache = TempDir::new("flaggit-cache");
    let client = crate::support::control_plane().client().await;
    let secret = format!("github-{prefix}-{}", rand::random::<u32>());
    let mut data = BTreeMap::from([("token".to_string(), TOKEN.to_string())]);
    if webhooks {
        data.insert("webhookSecret".into(), WEBHOOK_SECRET.into());
    }
    let object: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": secret },
        "stringData": data,
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client, "default")
        .create(&PostParams::default(), &object)
        .await
        .expect("create the GitHub Secret");
    let args: Vec<String> = [
        "--git-url",
        &daemon.url(&repo),
        "--git-cache-dir",
        &cache.path().display().to_string(),
        "--git-batch-window",
        "100ms",
        "--github-secret",
        &format!("default/{secret}"),
        "--github-api-url",
        &github.url(),
        "--forge-poll-interval",
        poll,
        "--forge-permission-ttl",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rig = Rig::with_args(prefix, &args).await;
    // What a Flux Kustomization of apps/podinfo renders: the manifest (which names no
    // namespace), placed in the test namespace. Without it the manifest is nobody's target.
    repo.human_commit(
        &[(PLACEMENT, &placement(&rig.ns.name))],
        "place apps/podinfo in its namespace",
    );
    World {
        rig,
        repo,
        github,
        _daemon: daemon,
        _cache: cache,
        secret,
    }
}

impl World {
    pub(crate) async fn finish(self) {
        let client = crate::support::control_plane().client().await;
        let _ = Api::<Secret>::namespaced(client, "default")
            .delete(&self.secret, &DeleteParams::default())
            .await;
        self.rig.finish().await;
    }

    /// A new version: the human's commit on main, which "Flux" applies. The first one waits
    /// for the Initialized record: the promotion it records bounds the commits of a revision.
    pub(crate) async fn release(&self, image: &str) {
        wait_for("the Initialized record on main", Duration::from_secs(60), || {
            kinds(&self.repo, "main")
                .contains(&"Initialized".to_string())
                .then_some(())
        })
        .await;
        self.repo.human_commit(
            &[(MANIFEST, &manifest(image))],
            &format!("bump podinfo to {image}"),
        );
        self.rig.set_image("podinfo", image).await;
    }

    /// The release pull request of `title`, once opened.
    pub(crate) async fn pull_request(&self, title: &str) -> u64 {
        // Injected GitHub failures make the writer back off: a generous deadline.
        wait_for("the release pull request", Duration::from_secs(240), || {
            self.github
                .pulls()
                .into_iter()
                .find(|p| p.title == title)
                .map(|p| p.number)
        })
        .await
    }

    /// The controller's replies on a pull request (not the status comment).
    pub(crate) fn replies(&self, pr: u64) -> Vec<String> {
        self.github
            .comments(pr)
            .into_iter()
            .filter(|c| c.author == BOT_LOGIN && !c.body.starts_with("<!-- flaggit:status"))
            .map(|c| c.body)
            .collect()
    }

    pub(crate) async fn wait_reply(&self, pr: u64, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let replies = self.replies(pr);
            if let Some(reply) = replies.iter().find(|r| r.contains(needle)) {
                return reply.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no reply says {needle:?}; the replies: {replies:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn wait_reaction(&self, comment: u64, content: &str) {
        wait_for(&format!("a {content} reaction"), Duration::from_secs(120), || {
            self.github
                .reactions(comment)
                .iter()
                .any(|(_, c)| c == content)
                .then_some(())
        })
        .await
    }

    pub(crate) async fn phase(&self) -> Option<CanaryPhase> {
        let canary = self.rig.canaries().get("podinfo").await.expect("canary");
        canary.status.and_then(|s| s.phase)
    }

    pub(crate) async fn weight(&self) -> i32 {
        let canary = self.rig.canaries().get("podinfo").await.expect("canary");
        canary.status.and_then(|s| s.canary_weight).unwrap_or(0)
    }

    /// Sends a signed GitHub webhook delivery to the controller; returns the HTTP status.
    async fn deliver(&self, event: &str, delivery: &str, body: &serde_json::Value, secret: &str) -> u16 {
        let body = serde_json::to_vec(body).expect("json");
        let url = format!("http://127.0.0.1:{}{PATH}", self.rig.flaggit().port);
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign(secret.as_bytes(), &body))
            .body(body)
            .send()
            .await
            .expect("the controller answers")
            .status()
            .as_u16()
    }
}

pub(crate) fn pr_canary(
    gates: Vec<ApprovalGate>,
    required: i32,
    analysis: flaggit::api::CanaryAnalysis,
) -> Canary {
    let mut canary = canary_of("podinfo", Provider::Istio, analysis);
    canary.spec.gitops = Some(Box::new(GitOpsSpec {
        path: Some("apps/podinfo".into()),
        mode: Some(GitOpsMode::PullRequest),
        approvals: Some(Approvals {
            gates: Some(gates),
            required: Some(required),
            ..Default::default()
        }),
        ..Default::default()
    }));
    canary
}

/// An `issue_comment` delivery about pull request `number` of acme/config.
fn comment_event(number: u64, comment: u64, user: &str) -> serde_json::Value {
    serde_json::json!({
        "action": "created",
        "issue": { "number": number, "pull_request": { "url": "x" } },
        "comment": { "id": comment, "body": "", "user": { "login": user } },
        "repository": { "name": "config", "full_name": "acme/config", "owner": { "login": "acme" } },
        "sender": { "login": user },
    })
}

#[tokio::test]
async fn two_approvals_from_writers_promote_and_merge_the_release_pull_request() {
    let w = world("pr-approve", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("alice", "write");
    w.github.set_permission("carol", "maintain");
    w.github.set_permission("reader", "read");
    w.github.set_permission(AUTHOR, "write");
    w.rig
        .initialize_podinfo(pr_canary(
            vec![ApprovalGate::ConfirmPromotion],
            2,
            stepping(25, 50),
        ))
        .await;
    wait_for("the Initialized record on main", Duration::from_secs(30), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;

    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    let snapshot = w.github.pull(pr);
    assert!(
        snapshot
            .head
            .starts_with(&format!("flaggit/{ns}/podinfo/flaggit1-")),
        "{snapshot:?}"
    );
    assert_eq!(snapshot.base, "main");
    assert!(
        snapshot.body.contains("confirm-promotion"),
        "the plan names the gate: {}",
        snapshot.body
    );
    assert!(
        snapshot.body.contains(&format!("Authored by @{AUTHOR}")),
        "the description names the author of the bump: {}",
        snapshot.body
    );
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(90))
        .await;
    assert_eq!(
        kinds(&w.repo, "main"),
        ["Initialized"],
        "the release's records are on its branch, not on main"
    );

    // The author of the image bump may not approve it, although they may write; the bot
    // that opened the pull request is no author, and may not approve either; nor a reader.
    let own = w.github.comment_as(AUTHOR, pr, "/approve");
    w.wait_reaction(own, "-1").await;
    w.wait_reply(pr, &format!("{AUTHOR} is an author of this release"))
        .await;
    let bot = w.github.comment_as(BOT_LOGIN, pr, "/approve");
    w.wait_reaction(bot, "-1").await;
    let read = w.github.comment_as("reader", pr, "/approve");
    w.wait_reaction(read, "-1").await;
    w.wait_reply(pr, "has read permission on acme").await;
    // An approval edited after the fact never counts.
    let edited = w.github.comment_as("carol", pr, "lgtm");
    w.github.edit_comment_as(edited, "/approve");

    // Text is data: shell metacharacters and markup around the command.
    let alice = w.github.comment_as(
        "alice",
        pr,
        "checked the dashboards $(rm -rf /) `id` <script>alert(1)</script> && echo pwned\n/approve",
    );
    w.wait_reaction(alice, "+1").await;
    // A huge comment is read as plain text and answered, not choked on.
    let huge = format!("{}\n/status", "x".repeat(300_000));
    w.github.comment_as("alice", pr, &huge);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        w.phase().await,
        Some(CanaryPhase::WaitingPromotion),
        "one of two approvals"
    );

    // Polling is conditional: an unchanged comment list is a 304 that costs no rate limit.
    // (Waited for, not checked after a fixed sleep: on a busy machine the controller's own
    // replies, reactions and status edits can change the list between the first few polls.)
    wait_for("a 304 on If-None-Match", Duration::from_secs(60), || {
        w.github
            .requests()
            .into_iter()
            .any(|r| {
                r.path.ends_with(&format!("/issues/{pr}/comments"))
                    && r.if_none_match.is_some()
                    && r.status == 304
            })
            .then_some(())
    })
    .await;
    let carol = w.github.comment_as("carol", pr, "/approve");
    w.wait_reaction(carol, "+1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let merged = wait_for("the merge", Duration::from_secs(30), || {
        let p = w.github.pull(pr);
        p.merged.then_some(p)
    })
    .await;
    assert_eq!(merged.merged_by.as_deref(), Some(BOT_LOGIN));

    // main has the merge commit (two parents), so git log keeps every step.
    let parents = git(&w.repo.path, &["log", "-1", "--format=%P", "main"]);
    assert_eq!(parents.split_whitespace().count(), 2, "a merge commit: {parents}");
    let all = records(&w.repo, "main^2");
    let kinds_on_branch: Vec<&str> = all.iter().map(|t| t["Flaggit-Kind"].as_str()).collect();
    assert_eq!(
        kinds_on_branch,
        [
            "Initialized",
            "Detected",
            "Step",
            "Step",
            "Waiting",
            "Promoting",
            "Promoted"
        ]
    );
    let promoting = &all[5];
    assert_eq!(promoting["Flaggit-Approved-By"], "alice, carol", "{promoting:?}");
    let commands = all
        .iter()
        .filter_map(|t| t.get("Flaggit-Command"))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        commands.contains(&format!("@{AUTHOR} /approve refused")),
        "{commands}"
    );
    assert!(
        commands.contains(&format!("@{BOT_LOGIN} /approve refused")),
        "{commands}"
    );
    assert!(commands.contains("@reader /approve refused"), "{commands}");
    assert!(commands.contains("@alice /approve accepted"), "{commands}");
    assert!(
        commands.contains("@carol /approve refused: edited comments do not count"),
        "{commands}"
    );
    let ledger = w
        .repo
        .show("main", &format!(".flaggit/{ns}/podinfo.yaml"))
        .expect("ledger");
    assert!(ledger.contains("podinfo:6.0.1"), "{ledger}");

    // One status comment, edited in place, with the steps.
    let status: Vec<String> = w
        .github
        .comments(pr)
        .into_iter()
        .filter(|c| c.body.starts_with("<!-- flaggit:status"))
        .map(|c| c.body)
        .collect();
    assert_eq!(status.len(), 1, "{status:?}");
    assert!(status[0].contains("| 50"), "{}", status[0]);
    assert!(status[0].contains("alice"), "{}", status[0]);
    let replies = w.replies(pr).join("\n");
    assert!(
        !replies.contains("<script>"),
        "nothing echoed unescaped: {replies}"
    );
    w.finish().await;
}

#[tokio::test]
async fn comments_pause_resume_and_roll_back_through_webhooks() {
    // Polling only every 10 minutes: what happens here arrives by webhook.
    let w = world("pr-webhook", true, "600s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("alice", "write");
    w.rig
        .initialize_podinfo(pr_canary(
            Vec::new(),
            1,
            flaggit::api::CanaryAnalysis {
                interval: Some("3s".into()),
                ..stepping(10, 90)
            },
        ))
        .await;
    // The person's commit must not race the controller's first push.
    wait_for("the Initialized record on main", Duration::from_secs(30), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    wait_for("the first step", Duration::from_secs(60), || {
        None::<()>.or(Some(()))
    })
    .await;
    let start = Instant::now();
    while w.weight().await < 10 {
        assert!(start.elapsed() < Duration::from_secs(60), "no traffic moved");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A delivery with a bad signature is refused; nothing is read.
    let pause = w.github.comment_as("alice", pr, "/pause");
    let forged = w
        .deliver(
            "issue_comment",
            "d-forged",
            &comment_event(pr, pause, "alice"),
            "wrong",
        )
        .await;
    assert_eq!(forged, 401);
    let ok = w
        .deliver(
            "issue_comment",
            "d-1",
            &comment_event(pr, pause, "alice"),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(ok, 200);
    w.wait_reaction(pause, "+1").await;
    let held = w.weight().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(w.weight().await, held, "/pause holds the weight");
    assert_eq!(w.phase().await, Some(CanaryPhase::Progressing));

    // A replayed delivery (same id) is ignored: /resume is only read once it is delivered.
    let resume = w.github.comment_as("alice", pr, "/resume");
    let replay = w
        .deliver(
            "issue_comment",
            "d-1",
            &comment_event(pr, resume, "alice"),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(replay, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w.github.reactions(resume).is_empty(), "a replay nudges nothing");
    // GitHub spells the repository as its owner does; the clone URL says acme/config.
    let mut resumed = comment_event(pr, resume, "alice");
    resumed["repository"] = serde_json::json!({
        "name": "Config", "full_name": "Acme/Config", "owner": { "login": "Acme" }
    });
    w.deliver("issue_comment", "d-2", &resumed, WEBHOOK_SECRET).await;
    w.wait_reaction(resume, "+1").await;
    let start = Instant::now();
    while w.weight().await <= held {
        if start.elapsed() > Duration::from_secs(30) {
            let canary = w.rig.canaries().get("podinfo").await.expect("canary");
            let log = w.rig.flaggit().log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "/resume did not let the release go on: {:#?}\n{}",
                canary.status,
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // /rollback mid-analysis: the release fails, its PR is closed with the reason, and main
    // names the serving version again.
    let rollback = w.github.comment_as("alice", pr, "/rollback latency looks off");
    w.deliver(
        "issue_comment",
        "d-3",
        &comment_event(pr, rollback, "alice"),
        WEBHOOK_SECRET,
    )
    .await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(60))
        .await;
    let closed = wait_for("the closed pull request", Duration::from_secs(30), || {
        let p = w.github.pull(pr);
        (p.state == "closed").then_some(p)
    })
    .await;
    assert!(!closed.merged);
    wait_for("the rollback on main", Duration::from_secs(30), || {
        kinds(&w.repo, "main")
            .ends_with(&["RolledBack".to_string()])
            .then_some(())
    })
    .await;
    assert_eq!(
        w.repo.show("main", MANIFEST).as_deref(),
        Some(manifest("podinfo:6.0.0").as_str())
    );
    let reason = records(&w.repo, "main").last().cloned().unwrap_or_default();
    assert!(
        reason["Flaggit-Reason"].contains("rollback requested by @alice"),
        "{reason:?}"
    );
    w.finish().await;
}

#[tokio::test]
async fn a_person_merging_approves_and_a_person_closing_rolls_back() {
    let w = world("pr-person", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("dana", "write");
    w.rig
        .initialize_podinfo(pr_canary(
            vec![ApprovalGate::ConfirmPromotion],
            1,
            stepping(25, 50),
        ))
        .await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(90))
        .await;
    w.github
        .merge_as("dana", pr)
        .expect("a person merges the release");
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(60))
        .await;
    wait_for("the promotion on main", Duration::from_secs(30), || {
        kinds(&w.repo, "main")
            .contains(&"Promoted".to_string())
            .then_some(())
    })
    .await;
    let promoting = records(&w.repo, "main")
        .into_iter()
        .find(|t| t["Flaggit-Kind"] == "Promoting")
        .expect("a Promoting record");
    assert_eq!(
        promoting.get("Flaggit-Approved-By").map(String::as_str),
        Some("dana")
    );

    // The next release is closed by a person: that is a rollback.
    w.rig.failing("podinfo");
    let _ = prometheus();
    let _ = success_rate_where;
    w.release("podinfo:6.0.2").await;
    let next = w.pull_request(&format!("Release {ns}/podinfo 6.0.2")).await;
    w.github.close_as("dana", next);
    w.rig
        .wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(90))
        .await;
    wait_for("the revert on main", Duration::from_secs(30), || {
        (w.repo.show("main", MANIFEST).as_deref() == Some(manifest("podinfo:6.0.1").as_str())).then_some(())
    })
    .await;
    let last = records(&w.repo, "main").last().cloned().unwrap_or_default();
    assert_eq!(last["Flaggit-Kind"], "RolledBack");
    assert!(
        last["Flaggit-Reason"].contains("closed without merging"),
        "{last:?}"
    );
    let _ = ResourceExt::name_any(&w.rig.canaries().get("podinfo").await.expect("canary"));
    w.finish().await;
}

#[tokio::test]
async fn a_rollback_the_protected_base_branch_refuses_becomes_a_revert_pull_request() {
    let w = world("pr-protected", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.rig
        .initialize_podinfo(pr_canary(Vec::new(), 1, stepping(25, 50)))
        .await;
    wait_for("the first record on main", Duration::from_secs(30), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;
    // From now on main takes no push from flaggit (GitHub's branch protection, as a hook).
    crate::gitops::protect_main(&w.repo);
    w.rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    w.release("podinfo:6.0.1").await;
    let release = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    // A long conversation: more comments than one page holds.
    for i in 0..120 {
        w.github.comment_as("chatter", release, &format!("note {i}"));
    }
    w.rig
        .wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(90))
        .await;
    let main = w.repo.head("main");
    let revert = w.pull_request(&format!("Revert {ns}/podinfo 6.0.1")).await;
    let revert = w.github.pull(revert);
    assert!(revert.head.ends_with("-revert"), "{}", revert.head);
    assert_eq!(revert.base, "main");
    wait_for("the revert commit", Duration::from_secs(30), || {
        (w.repo.show(&revert.head, MANIFEST).as_deref() == Some(manifest("podinfo:6.0.0").as_str()))
            .then_some(())
    })
    .await;
    let last = records(&w.repo, &revert.head).last().cloned().unwrap_or_default();
    assert_eq!(last["Flaggit-Kind"], "RolledBack");
    wait_for("the release pull request closed", Duration::from_secs(30), || {
        (w.github.pull(release).state == "closed").then_some(())
    })
    .await;
    assert_eq!(
        w.repo.head("main"),
        main,
        "nothing was pushed to the protected main"
    );
    let events = w.rig.events("podinfo").await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("refused by a rule of the server")),
        "{events:#?}"
    );

    // The release pull request is polled every second: once its long list was read, each
    // poll asks only for the comments written since (one short page), not every page again.
    let comment_polls = || -> Vec<String> {
        w.github
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/issues/{release}/comments")))
            .map(|r| r.query)
            .collect()
    };
    wait_for("polls with since=", Duration::from_secs(60), || {
        (comment_polls().iter().filter(|q| q.contains("since=")).count() >= 3).then_some(())
    })
    .await;
    // flaggit's own find-before-create of a note reads the list whole once more; the polls
    // go back to since= after it.
    wait_for(
        "a poll with since= after every whole read",
        Duration::from_secs(60),
        || {
            comment_polls()
                .last()
                .is_some_and(|q| q.contains("since="))
                .then_some(())
        },
    )
    .await;
    let polls = comment_polls();
    let second_pages = polls.iter().filter(|q| q.contains("page=2")).count();
    assert!(
        second_pages <= 3,
        "the long list was read whole {second_pages} times: {polls:#?}"
    );
    w.finish().await;
}
