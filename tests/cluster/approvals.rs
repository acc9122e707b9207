//! Who can approve a release, and when an approval stops counting: a merge and a close of the
//! release pull request are judged like `/approve` and `/rollback`, approvals are withdrawn
//! with their comment, review or permission, a lookup that can never succeed refuses one
//! comment instead of blocking the queue, and answers retried after a failure are logged
//! once. `flaggit run` against the real API server, git daemon and the stateful fake GitHub.

use std::time::{Duration, Instant};

use flaggit::api::{ApprovalGate, Approvals, CanaryPhase, ReviewStatus};

use crate::fake_github::BOT_LOGIN;
use crate::gitops::wait_for;
use crate::pull_requests::{World, pr_canary, records, world};
use crate::rollout::stepping;

/// The review the controller keeps in the canary's status.
pub(crate) async fn review(w: &World) -> ReviewStatus {
    let canary = w.rig.canaries().get("podinfo").await.expect("canary");
    canary
        .status
        .and_then(|s| s.gitops)
        .and_then(|g| g.review)
        .map(|r| *r)
        .unwrap_or_default()
}

/// Waits until the review in the status satisfies `check`.
pub(crate) async fn wait_review(
    w: &World,
    what: &str,
    check: impl Fn(&ReviewStatus) -> bool,
) -> ReviewStatus {
    let start = Instant::now();
    loop {
        let review = review(w).await;
        if check(&review) {
            return review;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {review:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The status comment's text, once it says `needle`.
pub(crate) async fn wait_status_comment(w: &World, pr: u64, needle: &str) -> String {
    wait_for(
        &format!("a status comment saying {needle:?}"),
        Duration::from_secs(60),
        || {
            w.github
                .comments(pr)
                .into_iter()
                .find(|c| c.body.starts_with("<!-- flaggit:status") && c.body.contains(needle))
                .map(|c| c.body)
        },
    )
    .await
}

/// The release branch of pull request `pr`, once flaggit merged it (its records are all there).
async fn merged_branch(w: &World, pr: u64) -> String {
    wait_for(
        "the merge of the release pull request",
        Duration::from_secs(60),
        || {
            let pull = w.github.pull(pr);
            pull.merged.then_some(pull.head)
        },
    )
    .await
}

/// Every `Flaggit-Command` trailer of the commits on `rev`.
fn command_trailers(w: &World, rev: &str) -> Vec<String> {
    records(&w.repo, rev)
        .into_iter()
        .filter_map(|t| t.get("Flaggit-Command").cloned())
        .flat_map(|c| c.split(", @").map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[tokio::test]
async fn a_merge_counts_as_one_approval_and_a_close_needs_the_right_to_roll_back() {
    let w = world("pr-merge", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("dana", "write");
    w.github.set_permission("alice", "write");
    w.github.set_permission("tess", "triage");
    w.rig
        .initialize_podinfo(pr_canary(
            vec![ApprovalGate::ConfirmPromotion],
            2,
            stepping(25, 50),
        ))
        .await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(90))
        .await;

    // Triage may close pull requests on GitHub; that is no right to roll back.
    w.github.close_as("tess", pr);
    let reply = w.wait_reply(pr, "closing the pull request counts as").await;
    assert!(reply.contains("tess has triage permission"), "{reply}");
    assert!(reply.contains("it was reopened"), "{reply}");
    wait_for("the pull request reopened", Duration::from_secs(30), || {
        (w.github.pull(pr).state == "open").then_some(())
    })
    .await;
    assert_eq!(w.phase().await, Some(CanaryPhase::WaitingPromotion));

    // A writer's merge is one approval of two: the release waits, and says so.
    w.github
        .merge_as("dana", pr)
        .expect("a person merges the release");
    let status = wait_status_comment(&w, pr, "merged by @dana").await;
    assert!(status.contains("1/2 approvals (dana)"), "{status}");
    assert_eq!(
        w.phase().await,
        Some(CanaryPhase::WaitingPromotion),
        "one approval of two does not promote"
    );
    let alice = w.github.comment_as("alice", pr, "/approve");
    w.wait_reaction(alice, "+1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    wait_for("the Promoted record on main", Duration::from_secs(60), || {
        records(&w.repo, "main")
            .iter()
            .any(|t| t["Flaggit-Kind"] == "Promoted")
            .then_some(())
    })
    .await;
    let promoting = records(&w.repo, "main")
        .into_iter()
        .find(|t| t["Flaggit-Kind"] == "Promoting")
        .expect("a Promoting record");
    assert_eq!(
        promoting.get("Flaggit-Approved-By").map(String::as_str),
        Some("dana, alice")
    );
    let commands = command_trailers(&w, "main").join("\n");
    assert!(commands.contains("tess /rollback refused"), "{commands}");
    assert!(commands.contains("dana /approve accepted"), "{commands}");
    w.finish().await;
}

#[tokio::test]
async fn approvals_are_withdrawn_with_their_comment_review_or_permission() {
    let w = world("pr-withdraw", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    for user in ["dave", "alice", "bob", "carol", "erin", "frank"] {
        w.github.set_permission(user, "write");
    }
    w.rig
        .initialize_podinfo(pr_canary(
            vec![ApprovalGate::ConfirmPromotion],
            2,
            stepping(25, 50),
        ))
        .await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(90))
        .await;
    // Held while the approvals come in, so that none opens the gate by itself.
    let pause = w.github.comment_as("dave", pr, "/pause");
    w.wait_reaction(pause, "+1").await;
    let alice = w.github.comment_as("alice", pr, "/approve");
    let bob = w.github.review_as("bob", pr, "APPROVED", "ship it");
    let carol = w.github.comment_as("carol", pr, "/approve");
    w.wait_reaction(alice, "+1").await;
    w.wait_reaction(carol, "+1").await;
    wait_review(&w, "three approvals in the status", |r| r.approvals.len() == 3).await;

    w.github.delete_comment(alice);
    w.github.dismiss_review(bob);
    w.github.set_permission("carol", "read");
    wait_review(&w, "every approval withdrawn", |r| r.approvals.is_empty()).await;
    let resume = w.github.comment_as("dave", pr, "/resume");
    w.wait_reaction(resume, "+1").await;
    wait_status_comment(&w, pr, "0/2 approvals").await;
    assert_eq!(
        w.phase().await,
        Some(CanaryPhase::WaitingPromotion),
        "withdrawn approvals do not promote"
    );

    let erin = w.github.comment_as("erin", pr, "/approve");
    w.wait_reaction(erin, "+1").await;
    w.github.review_as("frank", pr, "APPROVED", "");
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let branch = merged_branch(&w, pr).await;
    let promoting = records(&w.repo, &branch)
        .into_iter()
        .find(|t| t["Flaggit-Kind"] == "Promoting")
        .expect("a Promoting record");
    assert_eq!(
        promoting.get("Flaggit-Approved-By").map(String::as_str),
        Some("erin, frank")
    );
    w.finish().await;
}

#[tokio::test]
async fn a_lookup_that_cannot_succeed_refuses_one_comment_and_the_queue_moves_on() {
    let w = world("pr-lookup", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("rita", "read");
    w.github.set_permission("alice", "write");
    // The token may not read acme's teams: GitHub answers 403 for every membership.
    w.github.hide_teams_of("acme");
    let mut canary = pr_canary(vec![ApprovalGate::ConfirmPromotion], 1, stepping(25, 50));
    if let Some(gitops) = canary.spec.gitops.as_mut() {
        gitops.approvals = Some(Approvals {
            teams: Some(vec!["acme/sre".into()]),
            ..gitops.approvals.clone().unwrap_or_default()
        });
    }
    w.rig.initialize_podinfo(canary).await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;

    let rita = w.github.comment_as("rita", pr, "/approve");
    w.wait_reaction(rita, "-1").await;
    let reply = w.wait_reply(pr, "@rita: `/approve` was refused").await;
    assert!(reply.contains("cannot tell whether"), "{reply}");
    assert!(reply.contains("rita is in team acme"), "{reply}");
    // GitHub's permission endpoint does not know App logins: 404, for good.
    let bot = w.github.comment_as("renovate[bot]", pr, "/approve");
    w.wait_reaction(bot, "-1").await;
    // The comments after them are judged.
    let approve = w.github.comment_as("alice", pr, "/approve");
    w.wait_reaction(approve, "+1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    let branch = merged_branch(&w, pr).await;
    let trailers = command_trailers(&w, &branch);
    assert!(
        trailers.iter().any(|c| c.contains("rita /approve refused")),
        "{trailers:#?}"
    );
    assert!(
        trailers
            .iter()
            .any(|c| c.contains("renovate[bot] /approve refused")),
        "{trailers:#?}"
    );
    w.finish().await;
}

#[tokio::test]
async fn a_retried_answer_never_judges_its_comment_twice() {
    let w = world("pr-retry-answer", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("alice", "write");
    w.rig
        .initialize_podinfo(pr_canary(
            vec![ApprovalGate::ConfirmPromotion],
            1,
            stepping(25, 50),
        ))
        .await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;

    // Two failed reactions: the /pause is answered once one goes through, and judged once.
    w.github.fail_next("POST", "/reactions", 502, 2);
    let pause = w.github.comment_as("alice", pr, "/pause");
    w.wait_reaction(pause, "+1").await;
    let resume = w.github.comment_as("alice", pr, "/resume");
    w.wait_reaction(resume, "+1").await;
    let failed = w
        .github
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(&format!("/comments/{pause}/reactions")) && r.status == 502)
        .count();
    assert_eq!(failed, 2, "the reaction was retried");
    let pauses = review(&w)
        .await
        .commands
        .iter()
        .filter(|c| c.user == "alice" && c.command == "/pause")
        .count();
    assert_eq!(pauses, 1, "a retried reaction does not judge the comment again");

    let approve = w.github.comment_as("alice", pr, "/approve");
    w.wait_reaction(approve, "+1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    let branch = merged_branch(&w, pr).await;
    let trailers = command_trailers(&w, &branch);
    let paused = trailers
        .iter()
        .filter(|c| c.contains("alice /pause accepted"))
        .count();
    assert_eq!(
        paused, 1,
        "one Flaggit-Command trailer per command: {trailers:#?}"
    );
    assert_eq!(
        w.github
            .reactions(pause)
            .iter()
            .filter(|(who, _)| who == BOT_LOGIN)
            .count(),
        1
    );
    w.finish().await;
}
