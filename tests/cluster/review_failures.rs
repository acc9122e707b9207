//! Release pull requests while GitHub misbehaves: 5xx answers, secondary rate limits and
//! random failures from the loopback GitHub, against `flaggit run`, the real API server and a
//! bare repository on `git daemon`. A review belongs to one revision and one pull request,
//! flaggit's own closes are never a person's, every comment flaggit makes is made once, and
//! nothing a reviewer wrote is echoed raw.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flaggit::api::{ApprovalGate, CanaryPhase, CanaryStatus, ReviewStatus};

use crate::fake_github::{BOT_LOGIN, Injected};
use crate::git_remote::git;
use crate::gitops::wait_for;
use crate::pull_requests::{World, kinds, pr_canary, world};
use crate::rollout::stepping;

/// Waits until `check` finds what it looks for in the canary's status.
async fn wait_status<T>(
    w: &World,
    what: &str,
    timeout: Duration,
    check: impl Fn(&CanaryStatus) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        let status = w.rig.canaries().get("podinfo").await.ok().and_then(|c| c.status);
        if let Some(found) = status.as_ref().and_then(&check) {
            return found;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; status {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn review(status: &CanaryStatus) -> Option<ReviewStatus> {
    status.gitops.as_ref()?.review.as_deref().cloned()
}

/// Comments on `pr` whose body contains `needle`.
fn comments_with(w: &World, pr: u64, needle: &str) -> usize {
    w.github
        .comments(pr)
        .iter()
        .filter(|c| c.body.contains(needle))
        .count()
}

/// Initializes the podinfo canary with `canary`, once its `Initialized` record is on main (a
/// person's commit then cannot race the controller's push).
async fn initialize(w: &World, canary: flaggit::api::Canary) {
    w.rig.initialize_podinfo(canary).await;
    wait_for("the Initialized record on main", Duration::from_secs(30), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;
}

/// Waits for the canary's phase to be `phase`, with the status in the failure message.
async fn wait_phase(w: &World, phase: CanaryPhase, timeout: Duration) {
    w.rig.wait_phase("podinfo", phase, timeout).await;
}

/// The `Flaggit-*` trailers of every flaggit commit reachable from main (release branches
/// included, through their merges), oldest first.
fn every_record(w: &World) -> Vec<BTreeMap<String, String>> {
    let log = git(
        &w.repo.path,
        &["log", "--reverse", "--format=%B%n--end--", "main"],
    );
    log.split("--end--\n")
        .map(|entry| {
            entry
                .lines()
                .filter_map(|l| l.split_once(": "))
                .filter(|(k, _)| k.starts_with("Flaggit-"))
                .fold(BTreeMap::new(), |mut trailers, (k, v)| {
                    trailers
                        .entry(k.to_string())
                        .and_modify(|old: &mut String| {
                            old.push_str(", ");
                            old.push_str(v)
                        })
                        .or_insert_with(|| v.to_string());
                    trailers
                })
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The revision (`Flaggit-Revision`) of the records of `kind`.
fn revisions_of(w: &World, kind: &str) -> Vec<String> {
    every_record(w)
        .into_iter()
        .filter(|t| t.get("Flaggit-Kind").map(String::as_str) == Some(kind))
        .filter_map(|t| t.get("Flaggit-Revision").cloned())
        .collect()
}

#[tokio::test]
async fn approvals_on_one_revision_s_pull_request_never_promote_the_next() {
    let w = world("pr-carry", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    for user in ["alice", "carol", "dave", "erin"] {
        w.github.set_permission(user, "write");
    }
    initialize(
        &w,
        pr_canary(vec![ApprovalGate::ConfirmPromotion], 2, stepping(25, 50)),
    )
    .await;
    w.release("podinfo:6.0.1").await;
    let a = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    wait_phase(&w, CanaryPhase::WaitingPromotion, Duration::from_secs(90)).await;
    let alice = w.github.comment_as("alice", a, "/approve");
    w.wait_reaction(alice, "+1").await;
    let revision_a = wait_status(&w, "A's revision", Duration::from_secs(5), |s| {
        s.last_applied_spec.clone()
    })
    .await;

    // Revision B arrives while GitHub fails: opening B's pull request answers 502, closing A
    // answers 502 for a while, and the notes on A hit a secondary rate limit at first.
    w.github.fail_endpoint(
        "POST",
        "/pulls",
        Injected::ServerError(502),
        Duration::from_secs(25),
    );
    w.github.fail_endpoint(
        "PATCH",
        &format!("/pulls/{a}"),
        Injected::ServerError(502),
        Duration::from_secs(10),
    );
    w.github.fail_endpoint(
        "POST",
        &format!("/issues/{a}/comments"),
        Injected::SecondaryRateLimit { retry_after: 1 },
        Duration::from_secs(4),
    );
    w.release("podinfo:6.0.2").await;
    wait_status(&w, "B's detection", Duration::from_secs(60), |s| {
        (s.last_applied_spec.as_ref() != Some(&revision_a)).then_some(())
    })
    .await;
    // The second approval on A's pull request, given while B has no pull request of its own.
    w.github.comment_as("carol", a, "/approve");
    let message = wait_status(
        &w,
        "the review to say why B waits",
        Duration::from_secs(30),
        |s| {
            review(s)?
                .message
                .filter(|m| m.contains("has no release pull request yet"))
        },
    )
    .await;
    assert!(message.contains("/approve"), "{message}");
    wait_phase(&w, CanaryPhase::WaitingPromotion, Duration::from_secs(90)).await;

    // GitHub heals: B's pull request opens, and B still waits for approvals of its own.
    let b = w.pull_request(&format!("Release {ns}/podinfo 6.0.2")).await;
    assert_ne!(a, b);
    let closed = wait_for("A closed", Duration::from_secs(60), || {
        let p = w.github.pull(a);
        (p.state == "closed").then_some(p)
    })
    .await;
    assert!(!closed.merged, "A is never merged");
    assert_eq!(w.github.closed_by(a).as_deref(), Some(BOT_LOGIN));
    let review = wait_status(&w, "B's own review", Duration::from_secs(30), |s| {
        review(s).filter(|r| r.number == b as i64)
    })
    .await;
    assert!(review.approvals.is_empty(), "{review:?}");
    assert!(
        review.rollback.is_none(),
        "flaggit's close of A is not a person's: {review:?}"
    );
    assert_eq!(
        w.phase().await,
        Some(CanaryPhase::WaitingPromotion),
        "A's approvals never promote B"
    );
    let dave = w.github.comment_as("dave", b, "/approve");
    w.wait_reaction(dave, "+1").await;
    assert_eq!(w.phase().await, Some(CanaryPhase::WaitingPromotion), "1 of 2");
    w.github.comment_as("erin", b, "/approve");
    wait_phase(&w, CanaryPhase::Succeeded, Duration::from_secs(90)).await;
    wait_for("B merged", Duration::from_secs(60), || {
        w.github.pull(b).merged.then_some(())
    })
    .await;
    let promoting: Vec<BTreeMap<String, String>> = every_record(&w)
        .into_iter()
        .filter(|t| t["Flaggit-Kind"] == "Promoting")
        .collect();
    assert_eq!(promoting.len(), 1, "{promoting:?}");
    assert_eq!(
        promoting[0].get("Flaggit-Approved-By").map(String::as_str),
        Some("dave, erin")
    );
    assert!(
        revisions_of(&w, "RolledBack").is_empty(),
        "nothing was rolled back"
    );

    // Side effects once each, although every one of them was retried.
    assert_eq!(
        comments_with(&w, a, "Superseded"),
        1,
        "{:#?}",
        w.github.comments(a)
    );
    for pr in [a, b] {
        assert_eq!(
            comments_with(&w, pr, "<!-- flaggit:status"),
            1,
            "one status comment on #{pr}"
        );
    }
    w.finish().await;
}

#[tokio::test]
async fn a_rollback_on_one_pull_request_never_rolls_back_the_next_and_is_echoed_escaped() {
    let w = world("pr-rollback", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("alice", "write");
    w.github.set_permission("dave", "write");
    initialize(
        &w,
        pr_canary(vec![ApprovalGate::ConfirmPromotion], 1, stepping(25, 50)),
    )
    .await;
    w.release("podinfo:6.0.1").await;
    let a = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    wait_phase(&w, CanaryPhase::WaitingPromotion, Duration::from_secs(90)).await;
    let rollback = w.github.comment_as(
        "alice",
        a,
        "/rollback <b>latency</b> <img src=x onerror=alert(1)> cc @acme/admins",
    );
    w.wait_reaction(rollback, "+1").await;
    wait_phase(&w, CanaryPhase::Failed, Duration::from_secs(60)).await;
    let note = wait_for("the note closing A", Duration::from_secs(30), || {
        w.github
            .comments(a)
            .into_iter()
            .find(|c| c.author == BOT_LOGIN && c.body.contains("**RolledBack**"))
    })
    .await;
    assert!(
        !note.body.contains("<b>") && !note.body.contains("<img") && !note.body.contains("@acme"),
        "the reason is escaped: {}",
        note.body
    );
    assert!(
        note.body.contains("&lt;b&gt;latency&lt;\\/b&gt;") && note.body.contains("&#64;acme\\/admins"),
        "{}",
        note.body
    );

    // B arrives while its pull request cannot be opened: A's /rollback does not apply to it.
    w.github.fail_endpoint(
        "POST",
        "/pulls",
        Injected::ServerError(502),
        Duration::from_secs(15),
    );
    w.release("podinfo:6.0.2").await;
    wait_phase(&w, CanaryPhase::WaitingPromotion, Duration::from_secs(90)).await;
    let b = w.pull_request(&format!("Release {ns}/podinfo 6.0.2")).await;
    let dave = w.github.comment_as("dave", b, "/approve");
    w.wait_reaction(dave, "+1").await;
    wait_phase(&w, CanaryPhase::Succeeded, Duration::from_secs(90)).await;
    let rolled_back = revisions_of(&w, "RolledBack");
    assert_eq!(rolled_back.len(), 1, "only A was rolled back: {rolled_back:?}");
    assert_eq!(comments_with(&w, a, "**RolledBack**"), 1);
    w.finish().await;
}

#[tokio::test]
async fn a_command_in_the_first_second_counts_an_older_one_is_answered_and_steps_show_records() {
    let w = world("pr-second", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    w.github.set_permission("alice", "write");
    w.github.set_permission("carol", "write");
    initialize(
        &w,
        pr_canary(vec![ApprovalGate::ConfirmPromotion], 1, stepping(25, 50)),
    )
    .await;
    w.release("podinfo:6.0.1").await;
    let pr = w.pull_request(&format!("Release {ns}/podinfo 6.0.1")).await;
    let opened = w.github.created_at(pr);
    // GitHub stamps to the second: this approval has the pull request's own stamp.
    let first = w.github.comment_at("alice", pr, "/approve", opened);
    // A command stamped an hour before the pull request is answered, never dropped silently.
    let old = w.github.comment_at("carol", pr, "/pause", opened - 3600);
    w.wait_reaction(first, "+1").await;
    w.wait_reaction(old, "-1").await;
    let reply = w
        .wait_reply(pr, "before this release pull request was opened")
        .await;
    assert!(reply.contains("@carol"), "{reply}");
    wait_phase(&w, CanaryPhase::Succeeded, Duration::from_secs(90)).await;

    // The status comment's record column shows the numbers the step commits carry.
    wait_for("the merge", Duration::from_secs(30), || {
        w.github.pull(pr).merged.then_some(())
    })
    .await;
    let steps: Vec<String> = every_record(&w)
        .into_iter()
        .filter(|t| t["Flaggit-Kind"] == "Step")
        .filter_map(|t| t.get("Flaggit-Record").cloned())
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    let status = wait_for(
        "the status comment with both steps",
        Duration::from_secs(30),
        || {
            w.github
                .comments(pr)
                .into_iter()
                .find(|c| c.body.starts_with("<!-- flaggit:status"))
                .filter(|c| c.body.contains("| 50% |"))
        },
    )
    .await;
    let shown: Vec<String> = status
        .body
        .lines()
        .filter(|l| l.contains("% |") && l.starts_with("| 20"))
        .filter_map(|l| l.split('|').nth(2).map(|c| c.trim().to_string()))
        .collect();
    for record in &steps {
        assert!(
            shown.contains(record),
            "record {record} in the status comment: {shown:?}\n{}",
            status.body
        );
    }
    assert!(!shown.iter().any(|r| r == "0"), "{}", status.body);
    w.finish().await;
}

#[tokio::test]
async fn three_revisions_while_github_fails_at_random_are_each_decided_on_their_own_pull_request() {
    let w = world("pr-soak", false, "1s").await;
    let ns = w.rig.ns.name.clone();
    let reviewers = ["ann", "ben", "cat"];
    for user in reviewers.iter().chain(&["mallory"]) {
        w.github.set_permission(user, "write");
    }
    initialize(
        &w,
        pr_canary(vec![ApprovalGate::ConfirmPromotion], 1, stepping(25, 50)),
    )
    .await;
    let started = Instant::now();
    w.github.fail_randomly(0.2, 0x5eed_f1a9, Duration::from_secs(150));
    let mut pulls = Vec::new();
    for (i, reviewer) in reviewers.iter().enumerate() {
        let version = format!("6.0.{}", i + 1);
        w.release(&format!("podinfo:{version}")).await;
        let pr = w.pull_request(&format!("Release {ns}/podinfo {version}")).await;
        if let Some(previous) = pulls.last() {
            // A command on the previous release's pull request is not this release's.
            w.github.comment_as("mallory", *previous, "/approve");
        }
        wait_phase(&w, CanaryPhase::WaitingPromotion, Duration::from_secs(240)).await;
        let approve = w.github.comment_as(reviewer, pr, "/approve");
        w.wait_reaction(approve, "+1").await;
        wait_phase(&w, CanaryPhase::Succeeded, Duration::from_secs(240)).await;
        wait_for("the merge", Duration::from_secs(240), || {
            w.github.pull(pr).merged.then_some(())
        })
        .await;
        pulls.push(pr);
    }
    w.github.heal();
    let failures = w.github.count_status(502) + w.github.count_status(503) + w.github.count_status(403);
    assert!(failures > 10, "GitHub failed {failures} times");
    eprintln!(
        "soak: 3 releases in {:?} with {failures} failed GitHub requests",
        started.elapsed()
    );

    // Every release was approved by its own reviewer only.
    let approved: Vec<String> = every_record(&w)
        .into_iter()
        .filter(|t| t["Flaggit-Kind"] == "Promoting")
        .map(|t| t.get("Flaggit-Approved-By").cloned().unwrap_or_default())
        .collect();
    assert_eq!(approved, reviewers, "{approved:?}");
    // Each record once, whatever was retried.
    let numbers: Vec<i64> = every_record(&w)
        .into_iter()
        .filter_map(|t| t.get("Flaggit-Record")?.parse().ok())
        .collect();
    let mut unique = numbers.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(numbers.len(), unique.len(), "a record written twice: {numbers:?}");
    // Each comment answered once, and one status comment per pull request.
    for pr in &pulls {
        let comments = w.github.comments(*pr);
        let mut replies: BTreeMap<String, usize> = BTreeMap::new();
        for c in comments.iter().filter(|c| c.author == BOT_LOGIN) {
            let first = c.body.lines().next().unwrap_or_default().to_string();
            if first.starts_with("<!-- flaggit:") {
                *replies.entry(first).or_default() += 1;
            }
        }
        assert!(
            replies.values().all(|n| *n == 1),
            "#{pr} has a comment posted twice: {replies:#?}"
        );
        assert_eq!(
            replies.get("<!-- flaggit:status -->"),
            Some(&1),
            "#{pr}: {replies:#?}"
        );
    }
    w.finish().await;
}
