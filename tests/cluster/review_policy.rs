//! The review policy of release pull requests: a bot's change needs a person, owners come
//! from CODEOWNERS read at the release's base commit, and approvals are bound to the revision,
//! the release branch head and an age. `flaggit run` against the real API server, git daemon
//! and the stateful fake GitHub.

use std::time::Duration;

use flaggit::api::{ApprovalGate, Canary, CanaryPhase, OwnersFileKind, OwnersSource};

use crate::approvals::{review, wait_review, wait_status_comment};
use crate::gitops::wait_for;
use crate::pull_requests::{AUTHOR, MANIFEST, World, kinds, manifest, pr_canary, world};
use crate::rollout::stepping;

/// Renovate's commits: a GitHub App, whose no-reply address GitHub maps to `renovate[bot]`.
const RENOVATE: &str = "renovate[bot] <29139614+renovate[bot]@users.noreply.github.com>";

/// A canary gating its promotion on `required` approvals, with `edit` applied to its
/// approval policy.
fn gated(required: i32, edit: impl FnOnce(&mut flaggit::api::Approvals)) -> Canary {
    let mut canary = pr_canary(vec![ApprovalGate::ConfirmPromotion], required, stepping(50, 50));
    let approvals = canary
        .spec
        .gitops
        .as_mut()
        .and_then(|g| g.approvals.as_mut())
        .expect("pr_canary sets approvals");
    edit(approvals);
    canary
}

/// A release of `image` on main: `author`'s commit (the human's when None) bumping the
/// manifest and writing `files` besides; "Flux" applies it.
async fn release_by(w: &World, author: Option<&str>, image: &str, files: &[(&str, &str)]) {
    wait_for("the Initialized record on main", Duration::from_secs(60), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;
    let bump = manifest(image);
    let mut all = vec![(MANIFEST, bump.as_str())];
    all.extend_from_slice(files);
    w.repo
        .commit_on("main", author, &all, &format!("bump podinfo to {image}"));
    w.rig.set_image("podinfo", image).await;
}

/// Opens the release of 6.0.1 and waits until it asks for the promotion; returns its pull
/// request.
async fn waiting_promotion(w: &World, author: Option<&str>, files: &[(&str, &str)]) -> u64 {
    release_by(w, author, "podinfo:6.0.1", files).await;
    let pr = w
        .pull_request(&format!("Release {}/podinfo 6.0.1", w.rig.ns.name))
        .await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(120))
        .await;
    pr
}

#[tokio::test]
async fn a_release_a_bot_authored_needs_an_approval_from_a_person() {
    let w = world("rp-bot", false, "1s").await;
    w.github.set_permission("fluxcdbot", "write");
    w.github.set_permission("alice", "write");
    w.rig.initialize_podinfo(gated(1, |_| {})).await;
    let pr = waiting_promotion(&w, Some(RENOVATE), &[]).await;

    let body = w.github.pull(pr).body;
    assert!(body.contains("@renovate[bot] (bot)"), "the bot is marked: {body}");
    assert!(body.contains("A bot authored this change"), "{body}");
    assert!(body.contains("Commits: `"), "the commits are listed: {body}");

    // Another bot may write, and its approval counts as one, but never as the person's.
    let bot = w.github.comment_as("fluxcdbot", pr, "/approve");
    w.wait_reaction(bot, "+1").await;
    let status = wait_status_comment(&w, pr, "an approval from a person").await;
    assert!(status.contains("1/1 approvals (fluxcdbot)"), "{status}");
    assert_eq!(w.phase().await, Some(CanaryPhase::WaitingPromotion));
    let canary = w.rig.canaries().get("podinfo").await.expect("canary");
    let pull = canary
        .status
        .and_then(|s| s.gitops)
        .and_then(|g| g.pull_request)
        .expect("the pull request status");
    assert_eq!(pull.bots, ["renovate[bot]"]);

    let alice = w.github.comment_as("alice", pr, "/approve");
    w.wait_reaction(alice, "+1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    w.finish().await;
}

#[tokio::test]
async fn codeowners_read_at_the_base_commit_decide_who_approves() {
    let w = world("rp-owners", false, "1s").await;
    for user in [AUTHOR, "bob", "olga"] {
        w.github.set_permission(user, "write");
    }
    w.repo.human_commit(
        &[(
            ".github/CODEOWNERS",
            "# who owns what\n*               @acme/platform\n/apps/podinfo/  @olga\n",
        )],
        "owners",
    );
    w.rig
        .initialize_podinfo(gated(1, |a| {
            // The author may approve, so only the owners file can refuse them.
            a.allow_self_approval = Some(true);
            a.owners = Some(OwnersSource {
                file: OwnersFileKind::Codeowners,
                ..Default::default()
            });
        }))
        .await;
    // The release makes its author and bob owners of what it changes: too late.
    let pr = waiting_promotion(
        &w,
        None,
        &[(
            ".github/CODEOWNERS",
            "*               @acme/platform\n/apps/podinfo/  @olga @hank @bob\n",
        )],
    )
    .await;
    let body = w.github.pull(pr).body;
    assert!(body.contains("Owners, from `.github/CODEOWNERS`"), "{body}");

    let own = w.github.comment_as(AUTHOR, pr, "/approve");
    w.wait_reaction(own, "-1").await;
    let reply = w.wait_reply(pr, "hank owns none of the files").await;
    assert!(reply.contains("CODEOWNERS at"), "{reply}");
    let bob = w.github.comment_as("bob", pr, "/approve");
    w.wait_reaction(bob, "-1").await;
    w.wait_reply(pr, "bob owns none of the files").await;
    assert_eq!(w.phase().await, Some(CanaryPhase::WaitingPromotion));

    let olga = w.github.comment_as("olga", pr, "/approve");
    w.wait_reaction(olga, "+1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    w.finish().await;
}

#[tokio::test]
async fn a_malformed_codeowners_holds_the_release_naming_file_and_line() {
    let w = world("rp-badowners", false, "1s").await;
    w.github.set_permission("olga", "write");
    w.repo.human_commit(
        &[(
            ".github/CODEOWNERS",
            "/apps/podinfo/ @olga\n!/apps/podinfo/secret.yaml @x\n",
        )],
        "owners",
    );
    w.rig
        .initialize_podinfo(gated(1, |a| {
            a.owners = Some(OwnersSource {
                file: OwnersFileKind::Codeowners,
                ..Default::default()
            });
        }))
        .await;
    let pr = waiting_promotion(&w, None, &[]).await;
    let olga = w.github.comment_as("olga", pr, "/approve");
    w.wait_reaction(olga, "-1").await;
    let reply = w.wait_reply(pr, "CODEOWNERS line 2").await;
    assert!(reply.contains("negated patterns"), "{reply}");
    let canary = w.rig.canaries().get("podinfo").await.expect("canary");
    let owners = canary
        .status
        .and_then(|s| s.gitops)
        .and_then(|g| g.pull_request)
        .and_then(|p| p.owners)
        .expect("the owners as read");
    assert_eq!(
        owners.error.as_deref(),
        Some(
            ".github/CODEOWNERS line 2: `!/apps/podinfo/secret.yaml`: negated patterns (`!`) are not supported in CODEOWNERS"
        )
    );
    assert_eq!(w.phase().await, Some(CanaryPhase::WaitingPromotion));
    assert_eq!(
        w.repo.show("main", ".github/CODEOWNERS").as_deref(),
        Some("/apps/podinfo/ @olga\n!/apps/podinfo/secret.yaml @x\n"),
        "the file is never written over"
    );
    w.finish().await;
}

#[tokio::test]
async fn a_push_to_the_release_branch_by_someone_else_voids_the_approvals() {
    let w = world("rp-push", false, "1s").await;
    w.github.set_permission("alice", "write");
    w.github.set_permission("carol", "write");
    w.rig.initialize_podinfo(gated(2, |_| {})).await;
    let pr = waiting_promotion(&w, None, &[]).await;
    let alice = w.github.comment_as("alice", pr, "/approve");
    w.wait_reaction(alice, "+1").await;
    wait_review(&w, "alice's approval", |r| r.approvals.len() == 1).await;

    let branch = w.github.pull(pr).head;
    let foreign = w.repo.commit_on(
        &branch,
        None,
        &[("notes.md", "sneaked in\n")],
        "a change nobody reviewed",
    );
    let voided = wait_review(&w, "the approvals voided", |r| !r.voided.is_empty()).await;
    assert!(voided.approvals.is_empty(), "{voided:#?}");
    assert!(
        voided.voided[0]
            .reason
            .contains("pushed to by someone other than flaggit"),
        "{voided:#?}"
    );
    let status = wait_status_comment(&w, pr, "Voided approvals").await;
    assert!(status.contains("someone other than flaggit"), "{status}");
    assert_eq!(w.phase().await, Some(CanaryPhase::WaitingPromotion));

    // Approvals given after the push count.
    for user in ["alice", "carol"] {
        let again = w.github.comment_as(user, pr, "/approve");
        w.wait_reaction(again, "+1").await;
    }
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    // The writer built the promotion records on that push and said so; the review had
    // voided for it already, so the approvals given since were not voided again.
    let canary = w.rig.canaries().get("podinfo").await.expect("canary");
    let gitops = canary.status.and_then(|s| s.gitops).expect("gitops status");
    assert_eq!(
        gitops.pull_request.map(|p| p.foreign_head).as_deref(),
        Some(foreign.as_str())
    );
    assert_eq!(gitops.review.map(|r| r.voided.len()), Some(1));
    w.finish().await;
}

#[tokio::test]
async fn a_new_revision_voids_the_approvals_of_the_one_before() {
    let w = world("rp-revision", false, "1s").await;
    w.github.set_permission("alice", "write");
    w.rig.initialize_podinfo(gated(2, |_| {})).await;
    let first = waiting_promotion(&w, None, &[]).await;
    let alice = w.github.comment_as("alice", first, "/approve");
    w.wait_reaction(alice, "+1").await;
    wait_review(&w, "alice's approval", |r| r.approvals.len() == 1).await;

    release_by(&w, None, "podinfo:6.0.2", &[]).await;
    let second = w
        .pull_request(&format!("Release {}/podinfo 6.0.2", w.rig.ns.name))
        .await;
    let status = wait_status_comment(&w, second, "Voided approvals").await;
    assert!(status.contains("a new revision needs new approvals"), "{status}");
    let now = review(&w).await;
    assert!(now.approvals.is_empty(), "{now:#?}");
    assert_eq!(now.voided.len(), 1, "{now:#?}");
    assert_eq!(now.voided[0].user, "alice");
    w.finish().await;
}

#[tokio::test]
async fn approvals_older_than_max_age_are_void() {
    let w = world("rp-age", false, "1s").await;
    w.github.set_permission("alice", "write");
    w.github.set_permission("carol", "write");
    w.rig
        .initialize_podinfo(gated(1, |a| a.max_age = Some("60s".into())))
        .await;
    let pr = waiting_promotion(&w, None, &[]).await;
    // Written 100 s before the pull request opened (within the clock-skew allowance, so it
    // is the pull request's): more than a minute old whenever it is read.
    let opened = w.github.created_at(pr);
    let old = w.github.comment_at("alice", pr, "/approve", opened - 100);
    w.wait_reaction(old, "+1").await;
    let voided = wait_review(&w, "the old approval voided", |r| !r.voided.is_empty()).await;
    assert!(voided.voided[0].reason.starts_with("expired"), "{voided:#?}");
    assert!(voided.approvals.is_empty(), "{voided:#?}");
    wait_status_comment(&w, pr, "expired").await;
    assert_eq!(w.phase().await, Some(CanaryPhase::WaitingPromotion));

    let carol = w.github.comment_as("carol", pr, "/approve");
    w.wait_reaction(carol, "+1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    w.finish().await;
}
