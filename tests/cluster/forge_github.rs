//! The `GitHub` forge against the loopback fake GitHub (`fake_github.rs`) over real bare git
//! repositories: pull requests opened, found, edited, merged for real and closed; comments
//! polled with ETags and pages; reactions, reviews, permissions with their cache, team
//! membership; wrong credentials, rate limits, a GitHub Enterprise base path and App auth.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use flaggit::forge::github::{GitHub, GitHubAuth};
use flaggit::forge::{
    Error, Forge, MergeMethod, NewPullRequest, Permission, Polled, PullRequestState, Reaction, RepoId,
    ReviewState,
};

use crate::fake_github::{APP_LOGIN, BOT_LOGIN, FakeGitHub};
use crate::git_remote::{BareRepo, HUMAN_EMAIL, TempDir, git};

const TOKEN: &str = "ghp_test_token";
const BRANCH: &str = "flaggit/test/podinfo/6.0.1";

fn repo_id() -> RepoId {
    RepoId {
        owner: "acme".into(),
        name: "config".into(),
    }
}

/// A config repo with `main` and a release branch that changes one file.
fn config_repo() -> BareRepo {
    let bare = BareRepo::new(
        "config",
        &BTreeMap::from([
            ("apps/podinfo.yaml", "image: podinfo:6.0.0\n"),
            ("README.md", "config\n"),
        ]),
    );
    branch(&bare, BRANCH, "apps/podinfo.yaml", "image: podinfo:6.0.1\n");
    bare
}

/// Pushes `branch` off `main` with one commit writing `file`.
fn branch(bare: &BareRepo, branch: &str, file: &str, content: &str) -> String {
    let work = bare.clone_work();
    let w = work.path();
    git(w, &["checkout", "--quiet", "-b", branch]);
    std::fs::write(w.join(file), content).expect("write the file");
    git(
        w,
        &["commit", "--quiet", "-am", &format!("release step on {branch}")],
    );
    git(
        w,
        &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")],
    );
    bare.head(branch).expect("the branch exists")
}

fn setup() -> (BareRepo, FakeGitHub, GitHub) {
    let bare = config_repo();
    let fake = FakeGitHub::start(TOKEN);
    fake.add_repo("acme", "config", &bare.path);
    let github = GitHub::new(&fake.url(), GitHubAuth::Token(TOKEN.into())).expect("client");
    (bare, fake, github)
}

fn release(head: &str) -> NewPullRequest {
    NewPullRequest {
        title: "Release test/podinfo 6.0.1".into(),
        body: "plan".into(),
        head: head.into(),
        base: "main".into(),
    }
}

fn parents(bare: &BareRepo, rev: &str) -> Vec<String> {
    git(&bare.path, &["rev-list", "--parents", "-n", "1", rev])
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn pull_requests_open_find_edit_merge_and_close() {
    let (bare, fake, github) = setup();
    let repo = repo_id();
    let main_before = bare.head("main").expect("main");
    let step = bare.head(BRANCH).expect("branch");

    assert_eq!(github.find_pull_request(&repo, BRANCH).await.expect("find"), None);
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    assert_eq!(
        (pr.state, pr.head.as_str(), pr.base.as_str()),
        (PullRequestState::Open, BRANCH, "main")
    );
    assert_eq!(pr.author, BOT_LOGIN);
    assert_eq!(pr.title, "Release test/podinfo 6.0.1");
    assert!(
        pr.url.ends_with(&format!("/acme/config/pull/{}", pr.number)),
        "{}",
        pr.url
    );

    let found = github
        .find_pull_request(&repo, BRANCH)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found, pr);
    // A second one from the same branch is refused with GitHub's reason.
    match github.open_pull_request(&repo, &release(BRANCH)).await {
        Err(Error::Refused { message, .. }) => assert!(message.contains("already exists"), "{message}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    match github.open_pull_request(&repo, &release("no/such/branch")).await {
        Err(Error::Refused { message, .. }) => assert!(message.contains("head invalid"), "{message}"),
        other => panic!("expected Refused, got {other:?}"),
    }

    github
        .edit_pull_request(&repo, pr.number, "plan, step 1 done")
        .await
        .expect("edit");
    assert_eq!(fake.pull(pr.number).body, "plan, step 1 done");

    let sha = github
        .merge_pull_request(
            &repo,
            pr.number,
            MergeMethod::Merge,
            "Promote podinfo 6.0.1",
            "Flaggit-Approved-By: alice",
        )
        .await
        .expect("merge");
    // A real merge commit on main with both parents, carrying the title and message.
    assert_eq!(bare.head("main").as_deref(), Some(sha.as_str()));
    assert_eq!(parents(&bare, &sha), vec![main_before, step]);
    let message = git(&bare.path, &["log", "-1", "--format=%B", &sha]);
    assert!(
        message.starts_with("Promote podinfo 6.0.1\n\nFlaggit-Approved-By: alice"),
        "{message}"
    );
    assert_eq!(
        bare.show("main", "apps/podinfo.yaml").as_deref(),
        Some("image: podinfo:6.0.1\n")
    );

    let merged = github.pull_request(&repo, pr.number).await.expect("read");
    assert_eq!(merged.state, PullRequestState::Merged);
    assert_eq!(merged.merge_commit.as_deref(), Some(sha.as_str()));
    assert_eq!(merged.merged_by.as_deref(), Some(BOT_LOGIN));
    assert_eq!(github.find_pull_request(&repo, BRANCH).await.expect("find"), None);
    // Merging twice is refused, not an error of the request.
    let again = github
        .merge_pull_request(&repo, pr.number, MergeMethod::Merge, "t", "")
        .await
        .expect_err("merged already");
    assert_eq!(again.category(), "ForgeRefused");

    // Close: a rollback.
    branch(
        &bare,
        "flaggit/test/podinfo/6.0.2",
        "apps/podinfo.yaml",
        "image: podinfo:6.0.2\n",
    );
    let second = github
        .open_pull_request(&repo, &release("flaggit/test/podinfo/6.0.2"))
        .await
        .expect("open");
    github
        .close_pull_request(&repo, second.number)
        .await
        .expect("close");
    let closed = github.pull_request(&repo, second.number).await.expect("read");
    assert_eq!(
        (closed.state, closed.merge_commit),
        (PullRequestState::Closed, None)
    );
    assert_eq!(fake.pull(second.number).state, "closed");
    assert_eq!(
        bare.head("main").as_deref(),
        Some(sha.as_str()),
        "closing does not touch main"
    );

    match github.pull_request(&repo, 999).await {
        Err(Error::NotFound { what, .. }) => assert_eq!(what, "pull request acme/config#999"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn squash_rebase_and_conflicts_merge_as_git_does() {
    let (bare, fake, github) = setup();
    let repo = repo_id();

    // Branched before the squash lands: the rebase has to replay it onto a newer main.
    let head = branch(&bare, "rebase-me", "README.md", "rebased\n");
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    let sha = github
        .merge_pull_request(&repo, pr.number, MergeMethod::Squash, "Squashed release", "")
        .await
        .expect("squash");
    assert_eq!(parents(&bare, &sha).len(), 1, "a squash has one parent");
    assert_eq!(
        git(&bare.path, &["log", "-1", "--format=%s", &sha]).trim(),
        "Squashed release"
    );

    let squashed = sha;
    let pr = github
        .open_pull_request(&repo, &release("rebase-me"))
        .await
        .expect("open");
    let sha = github
        .merge_pull_request(&repo, pr.number, MergeMethod::Rebase, "", "")
        .await
        .expect("rebase");
    assert_eq!(parents(&bare, &sha), vec![squashed], "replayed onto the squash");
    assert_ne!(sha, head, "rebased onto the new main");
    assert_eq!(
        bare.show("main", "apps/podinfo.yaml").as_deref(),
        Some("image: podinfo:6.0.1\n")
    );
    assert_eq!(bare.show("main", "README.md").as_deref(), Some("rebased\n"));

    // Both branches change the same line: not mergeable, the pull request stays open.
    branch(&bare, "conflict-a", "apps/podinfo.yaml", "image: podinfo:7.0.0\n");
    branch(&bare, "conflict-b", "apps/podinfo.yaml", "image: podinfo:8.0.0\n");
    let a = github
        .open_pull_request(&repo, &release("conflict-a"))
        .await
        .expect("open a");
    let b = github
        .open_pull_request(&repo, &release("conflict-b"))
        .await
        .expect("open b");
    github
        .merge_pull_request(&repo, a.number, MergeMethod::Merge, "a", "")
        .await
        .expect("merge a");
    let main = bare.head("main");
    match github
        .merge_pull_request(&repo, b.number, MergeMethod::Merge, "b", "")
        .await
    {
        Err(Error::Refused { message, .. }) => assert!(message.contains("not mergeable"), "{message}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(bare.head("main"), main);
    assert_eq!(fake.pull(b.number).state, "open");
}

#[tokio::test]
async fn a_person_merging_or_closing_is_seen() {
    let (bare, fake, github) = setup();
    let repo = repo_id();
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    let sha = fake.merge_as("alice", pr.number).expect("alice merges");
    assert_eq!(parents(&bare, &sha).len(), 2);
    let seen = github.pull_request(&repo, pr.number).await.expect("read");
    assert_eq!(seen.state, PullRequestState::Merged);
    assert_eq!(seen.merged_by.as_deref(), Some("alice"));

    branch(&bare, "other", "README.md", "x\n");
    let number = fake.open_pull_as("bob", "acme", "config", "other", "main", "By hand");
    fake.close_as("bob", number);
    let closed = github.pull_request(&repo, number).await.expect("read");
    assert_eq!(
        (closed.state, closed.author.as_str()),
        (PullRequestState::Closed, "bob")
    );
}

#[tokio::test]
async fn commit_authors_closers_and_reopening_read_as_github_answers_them() {
    let (bare, fake, github) = setup();
    let repo = repo_id();
    let sha = bare.head(BRANCH).expect("the release branch");
    // The human's e-mail belongs to no account until it is linked: author null.
    assert_eq!(github.commit_author(&repo, &sha).await.expect("read"), None);
    fake.link_email(HUMAN_EMAIL, "hank");
    assert_eq!(
        github.commit_author(&repo, &sha).await.expect("read").as_deref(),
        Some("hank")
    );
    let missing = github
        .commit_author(&repo, "0000000000000000000000000000000000000000")
        .await
        .expect_err("no such commit");
    assert!(missing.is_permanent(), "{missing:?}");
    // The account's type says whether a person or a bot made the commit.
    let person = github.commit_account(&repo, &sha).await.expect("read");
    assert_eq!(
        person,
        Some(flaggit::forge::Account {
            login: "hank".into(),
            bot: false
        })
    );
    fake.link_email(HUMAN_EMAIL, "renovate[bot]");
    let bot = github.commit_account(&repo, &sha).await.expect("read");
    assert_eq!(
        bot,
        Some(flaggit::forge::Account {
            login: "renovate[bot]".into(),
            bot: true
        }),
        "GitHub answers type Bot"
    );
    fake.link_email(HUMAN_EMAIL, "hank");

    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    assert_eq!(
        pr.head_sha.as_deref(),
        Some(sha.as_str()),
        "the head commit of the release branch"
    );
    assert_eq!(github.closed_by(&repo, pr.number).await.expect("read"), None);
    fake.close_as("tess", pr.number);
    assert_eq!(
        github.closed_by(&repo, pr.number).await.expect("read").as_deref(),
        Some("tess")
    );
    github
        .reopen_pull_request(&repo, pr.number)
        .await
        .expect("reopen");
    let reopened = github.pull_request(&repo, pr.number).await.expect("read");
    assert_eq!(reopened.state, PullRequestState::Open);
    fake.merge_as("alice", pr.number).expect("alice merges");
    let refused = github
        .reopen_pull_request(&repo, pr.number)
        .await
        .expect_err("a merged pull request stays merged");
    assert!(refused.is_permanent(), "{refused:?}");
}

#[tokio::test]
async fn lookups_github_never_answers_are_permanent_errors() {
    let (_bare, fake, github) = setup();
    let repo = repo_id();
    let bot = github
        .permission(&repo, "renovate[bot]")
        .await
        .expect_err("GitHub: not a user");
    assert!(bot.is_permanent(), "{bot:?}");
    fake.hide_teams_of("acme");
    let team = github
        .is_team_member("acme", "sre", "rita")
        .await
        .expect_err("the token may not read the org's teams");
    assert!(team.is_permanent(), "{team:?}");
    fake.fail_next("GET", "/collaborators/alice/permission", 502, 1);
    let down = github
        .permission(&repo, "alice")
        .await
        .expect_err("a 502 is an outage");
    assert!(!down.is_permanent(), "{down:?}");
}

#[tokio::test]
async fn comments_poll_with_etags() {
    let (_bare, fake, github) = setup();
    let repo = repo_id();
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");

    let status = github
        .create_comment(&repo, pr.number, "| step | weight |")
        .await
        .expect("comment");
    assert_eq!(status.author, BOT_LOGIN);
    assert!(
        status.url.contains(&format!("#issuecomment-{}", status.id)),
        "{}",
        status.url
    );
    let Polled::Changed { value, etag } = github.comments(&repo, pr.number, None, None).await.expect("poll")
    else {
        panic!("a first poll has an answer");
    };
    assert_eq!(value, vec![status.clone()]);
    let etag = etag.expect("an ETag");

    fake.clear_requests();
    assert_eq!(
        github
            .comments(&repo, pr.number, None, Some(&etag))
            .await
            .expect("poll"),
        Polled::NotModified
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].status, requests[0].if_none_match.as_deref()),
        (304, Some(etag.as_str()))
    );

    // A new comment with shell metacharacters changes the list; it comes back verbatim.
    let body = "/approve $(rm -rf /) `id` ; echo \"x\" | tee /etc/passwd && \u{1F680}";
    let id = fake.comment_as("alice", pr.number, body);
    let Polled::Changed { value, etag: second } = github
        .comments(&repo, pr.number, None, Some(&etag))
        .await
        .expect("poll")
    else {
        panic!("the list changed");
    };
    assert_ne!(second.as_deref(), Some(etag.as_str()));
    assert_eq!(value.len(), 2);
    assert_eq!(
        (value[1].id, value[1].author.as_str(), value[1].body.as_str()),
        (id, "alice", body)
    );
    assert_eq!(value[1].created_at, value[1].updated_at);
    assert!(value[0].created_at < value[1].created_at, "oldest first");

    // An edit moves updated_at past created_at; the controller's own edit works too.
    fake.edit_comment_as(id, "/approve");
    github
        .edit_comment(&repo, pr.number, status.id, "| step | weight |\n| 1 | 10 |")
        .await
        .expect("edit");
    let Polled::Changed { value, .. } = github
        .comments(&repo, pr.number, None, second.as_deref())
        .await
        .expect("poll")
    else {
        panic!("the list changed");
    };
    assert!(value[1].updated_at > value[1].created_at);
    assert_eq!(value[0].body, "| step | weight |\n| 1 | 10 |");
    assert_eq!(fake.comments(pr.number)[0].body, value[0].body);

    // A huge body is plain text both ways.
    let huge = "x".repeat(60_000);
    github
        .create_comment(&repo, pr.number, &huge)
        .await
        .expect("huge comment");
    assert_eq!(fake.comments(pr.number)[2].body.len(), 60_000);
}

#[tokio::test]
async fn comments_follow_every_page() {
    let (_bare, fake, github) = setup();
    let repo = repo_id();
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    let ids: Vec<u64> = (0..205)
        .map(|i| fake.comment_as("alice", pr.number, &format!("c{i}")))
        .collect();
    fake.clear_requests();
    let Polled::Changed { value, etag } = github.comments(&repo, pr.number, None, None).await.expect("poll")
    else {
        panic!("an answer");
    };
    assert_eq!(value.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    assert_eq!(value[204].body, "c204");
    // Three pages of 100; a page's ETag cannot vouch for the whole list.
    let pages: Vec<String> = fake.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages[2].contains("page=3"), "{pages:?}");
    assert_eq!(etag, None);
}

#[tokio::test]
async fn comments_since_read_only_what_is_new() {
    let (_bare, fake, github) = setup();
    let repo = repo_id();
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    let ids: Vec<u64> = (0..205)
        .map(|i| fake.comment_as("alice", pr.number, &format!("c{i}")))
        .collect();
    let Polled::Changed { value, .. } = github.comments(&repo, pr.number, None, None).await.expect("poll")
    else {
        panic!("an answer");
    };
    let newest = value.last().expect("comments").created_at;
    // Later: a new comment, and an old one edited (GitHub: updated_at >= since is returned).
    let new = fake.comment_as("bob", pr.number, "/approve");
    fake.edit_comment_as(ids[3], "c3, edited");
    fake.clear_requests();
    let Polled::Changed { value, etag } = github
        .comments(&repo, pr.number, Some(newest), None)
        .await
        .expect("poll")
    else {
        panic!("an answer");
    };
    assert_eq!(
        value.iter().map(|c| c.id).collect::<Vec<_>>(),
        [ids[3], ids[204], new],
        "the edited, the newest seen (same second), the new"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "one page, not three: {requests:?}");
    assert!(requests[0].query.contains("since="), "{}", requests[0].query);
    assert!(
        requests[0].query.contains("per_page=100"),
        "{}",
        requests[0].query
    );
    // The short answer is conditional too.
    let etag = etag.expect("one page has an ETag");
    assert_eq!(
        github
            .comments(&repo, pr.number, Some(newest), Some(&etag))
            .await
            .expect("poll"),
        Polled::NotModified
    );
}

#[tokio::test]
async fn reactions_and_reviews() {
    let (_bare, fake, github) = setup();
    let repo = repo_id();
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    let id = fake.comment_as("alice", pr.number, "/approve");
    github
        .react(&repo, pr.number, id, Reaction::Eyes)
        .await
        .expect("eyes");
    github
        .react(&repo, pr.number, id, Reaction::PlusOne)
        .await
        .expect("+1");
    github
        .react(&repo, pr.number, id, Reaction::PlusOne)
        .await
        .expect("+1 twice is fine");
    assert_eq!(
        fake.reactions(id),
        vec![
            (BOT_LOGIN.to_string(), "eyes".to_string()),
            (BOT_LOGIN.to_string(), "+1".to_string())
        ]
    );
    assert_eq!(
        github
            .react(&repo, pr.number, 4242, Reaction::MinusOne)
            .await
            .expect_err("none")
            .category(),
        "ForgeNotFound"
    );

    assert_eq!(github.reviews(&repo, pr.number).await.expect("reviews"), vec![]);
    fake.review_as("bob", pr.number, "CHANGES_REQUESTED", "not yet");
    fake.review_as("alice", pr.number, "APPROVED", "ship it");
    let reviews = github.reviews(&repo, pr.number).await.expect("reviews");
    let got: Vec<(&str, ReviewState, &str)> = reviews
        .iter()
        .map(|r| (r.author.as_str(), r.state, r.body.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("bob", ReviewState::ChangesRequested, "not yet"),
            ("alice", ReviewState::Approved, "ship it")
        ]
    );
}

#[tokio::test]
async fn permissions_are_cached_and_teams_checked() {
    let (_bare, fake, github) = setup();
    let repo = repo_id();
    fake.set_permission("alice", "write");
    fake.set_permission("carol", "maintain");
    fake.set_permission("dave", "triage");
    fake.clear_requests();
    assert_eq!(
        github.permission(&repo, "alice").await.expect("perm"),
        Some(Permission::Write)
    );
    assert_eq!(
        github.permission(&repo, "Alice").await.expect("perm"),
        Some(Permission::Write)
    );
    assert_eq!(fake.requests().len(), 1, "the second lookup is cached");
    assert_eq!(
        github.permission(&repo, "carol").await.expect("perm"),
        Some(Permission::Maintain)
    );
    assert_eq!(
        github.permission(&repo, "dave").await.expect("perm"),
        Some(Permission::Triage)
    );
    assert_eq!(github.permission(&repo, "mallory").await.expect("perm"), None);

    // Without a cache every lookup asks, and sees a change at once.
    let uncached = GitHub::new(&fake.url(), GitHubAuth::Token(TOKEN.into()))
        .expect("client")
        .with_permission_ttl(Duration::ZERO);
    fake.clear_requests();
    uncached.permission(&repo, "alice").await.expect("perm");
    fake.set_permission("alice", "read");
    assert_eq!(
        uncached.permission(&repo, "alice").await.expect("perm"),
        Some(Permission::Read)
    );
    assert_eq!(fake.requests().len(), 2);
    // The cached client still has the old answer within its TTL.
    assert_eq!(
        github.permission(&repo, "alice").await.expect("perm"),
        Some(Permission::Write)
    );

    fake.add_team_member("acme", "releasers", "erin");
    fake.set_team_membership("acme", "releasers", "frank", "pending");
    assert!(
        github
            .is_team_member("acme", "releasers", "erin")
            .await
            .expect("team")
    );
    assert!(
        !github
            .is_team_member("acme", "releasers", "frank")
            .await
            .expect("team")
    );
    assert!(
        !github
            .is_team_member("acme", "releasers", "mallory")
            .await
            .expect("team")
    );
    assert!(
        !github
            .is_team_member("acme", "other", "erin")
            .await
            .expect("team")
    );
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let (_bare, fake, _github) = setup();
    let wrong = GitHub::new(&fake.url(), GitHubAuth::Token("ghp_wrong".into())).expect("client");
    let e = wrong
        .find_pull_request(&repo_id(), BRANCH)
        .await
        .expect_err("refused");
    assert_eq!(
        e,
        Error::Unauthorized {
            forge: "github",
            status: 401
        }
    );
    assert!(!e.to_string().contains("ghp_wrong"));
}

#[tokio::test]
async fn rate_limits_fail_fast_until_the_time_github_gave() {
    let (_bare, fake, github) = setup();
    let repo = repo_id();
    fake.rate_limit_next(1, Duration::from_secs(2));
    fake.clear_requests();
    let started = Instant::now();
    match github.find_pull_request(&repo, BRANCH).await {
        Err(Error::RateLimited { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(2)),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1);
    // Until then nothing is sent.
    match github.permission(&repo, "alice").await {
        Err(Error::RateLimited { retry_after, .. }) => assert!(retry_after <= Duration::from_secs(2)),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1, "no request while limited");
    while github.rate_limited_for().is_some() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        github
            .find_pull_request(&repo, BRANCH)
            .await
            .expect("after the wait"),
        None
    );
    assert_eq!(fake.requests().len(), 2);

    // The primary limit: remaining 0 and a reset time.
    fake.exhaust_next(1, Duration::from_secs(30));
    match github.reviews(&repo, 1).await {
        Err(Error::RateLimited { retry_after, .. }) => {
            assert!(
                retry_after > Duration::from_secs(25) && retry_after <= Duration::from_secs(31),
                "{retry_after:?}"
            )
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(
        github
            .find_pull_request(&repo, BRANCH)
            .await
            .expect_err("still limited")
            .category(),
        "ForgeRateLimited"
    );
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn github_enterprise_base_path() {
    let bare = config_repo();
    let fake = FakeGitHub::start_at(TOKEN, "/api/v3");
    fake.add_repo("acme", "config", &bare.path);
    assert!(fake.url().ends_with("/api/v3"));
    let github = GitHub::new(&format!("{}/", fake.url()), GitHubAuth::Token(TOKEN.into())).expect("client");
    let repo = repo_id();
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open");
    for i in 0..120 {
        fake.comment_as("alice", pr.number, &format!("c{i}"));
    }
    let Polled::Changed { value, .. } = github.comments(&repo, pr.number, None, None).await.expect("poll")
    else {
        panic!("an answer");
    };
    assert_eq!(value.len(), 120, "the next page stays under /api/v3");
    assert!(
        fake.requests().iter().all(|r| r.status < 400),
        "{:?}",
        fake.requests()
    );

    // The same server without the prefix is not the API.
    let root = fake.url().trim_end_matches("/api/v3").to_string();
    let wrong = GitHub::new(&root, GitHubAuth::Token(TOKEN.into())).expect("client");
    assert_eq!(
        wrong
            .pull_request(&repo, pr.number)
            .await
            .expect_err("no API")
            .category(),
        "ForgeNotFound"
    );
}

fn rsa_key(dir: &TempDir, name: &str) -> String {
    let path = dir.path().join(name);
    let ok = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl genrsa");
    std::fs::read_to_string(&path).expect("read the key")
}

#[tokio::test]
async fn github_app_tokens_come_from_the_installation() {
    let (_bare, fake, _github) = setup();
    let dir = TempDir::new("app-keys");
    let key = rsa_key(&dir, "app.pem");
    fake.add_app(42, 7, &key);
    fake.clear_requests();
    let github = GitHub::new(
        &fake.url(),
        GitHubAuth::App {
            app_id: 42,
            installation_id: 7,
            private_key_pem: key,
        },
    )
    .expect("client");
    let repo = repo_id();
    let pr = github
        .open_pull_request(&repo, &release(BRANCH))
        .await
        .expect("open as the app");
    assert_eq!(pr.author, APP_LOGIN);
    github
        .create_comment(&repo, pr.number, "status")
        .await
        .expect("comment");
    let requests = fake.requests();
    let exchanges = requests
        .iter()
        .filter(|r| r.path == "/app/installations/7/access_tokens")
        .count();
    assert_eq!(exchanges, 1, "one token for both calls: {requests:?}");
    assert!(
        requests
            .iter()
            .filter(|r| r.path.starts_with("/repos/"))
            .all(|r| r.login.as_deref() == Some(APP_LOGIN))
    );

    // A key GitHub does not know for the app: its JWT is refused.
    let other = rsa_key(&dir, "other.pem");
    let impostor = GitHub::new(
        &fake.url(),
        GitHubAuth::App {
            app_id: 42,
            installation_id: 7,
            private_key_pem: other,
        },
    )
    .expect("client");
    let e = impostor
        .pull_request(&repo, pr.number)
        .await
        .expect_err("refused");
    assert_eq!(e.category(), "ForgeUnauthorized", "{e}");

    // A key that is not PEM fails when the client is built, naming the key.
    let bad = GitHub::new(
        &fake.url(),
        GitHubAuth::App {
            app_id: 42,
            installation_id: 7,
            private_key_pem: "not a key".into(),
        },
    )
    .expect_err("bad key");
    assert_eq!(bad.category(), "GitHubPrivateKey");
}
