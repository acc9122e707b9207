//! `gitops::repo` against real remotes on loopback: git daemon, git http-backend with Basic
//! auth, and sshd with a client key and a checked host key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flaggit::gitops::repo::{Push, Repo, Signer};
use flaggit::gitops::{Author, Credentials, Remote};

use crate::git_remote::{
    BareRepo, GitDaemon, HUMAN_EMAIL, HUMAN_NAME, HttpGit, Silent, Sshd, TempDir, git, git_try, ssh_keygen,
};

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";

fn seeded(name: &str) -> BareRepo {
    BareRepo::new(
        name,
        &BTreeMap::from([("apps/web/deploy.yaml", DEPLOY), ("README.md", "config repo\n")]),
    )
}

fn author() -> Author {
    Author {
        name: "flaggit-test".to_string(),
        email: "bot@flaggit.test".to_string(),
    }
}

fn open(url: &str, credentials: Credentials) -> (TempDir, Repo) {
    let cache = TempDir::new("cache");
    let remote = Remote {
        url: url.to_string(),
        branch: "main".to_string(),
    };
    let repo = Repo::open(cache.path(), remote, credentials).expect("open the cache clone");
    (cache, repo)
}

fn file(path: &str, content: &str) -> (String, Option<Vec<u8>>) {
    (path.to_string(), Some(content.as_bytes().to_vec()))
}

/// Fetch, read, commit two files, push; the git CLI sees the commit, its author and content.
fn round_trip(bare: &BareRepo, url: &str, credentials: Credentials) {
    let (_cache, mut repo) = open(url, credentials);
    let head = repo.fetch().expect("fetch");
    assert_eq!(head.map(|h| h.to_string()), bare.head("main"));
    let head = head.expect("seeded repository has a head");
    assert_eq!(repo.head(), Some(head));
    assert_eq!(
        repo.read_file(head, "apps/web/deploy.yaml").expect("read"),
        Some(DEPLOY.as_bytes().to_vec())
    );
    let ledger = "phase: Succeeded\n";
    let changed = DEPLOY.replace("web", "web2");
    let commit = repo
        .commit(
            Some(head),
            &[
                file(".flaggit/test/web.yaml", ledger),
                file("apps/web/deploy.yaml", &changed),
            ],
            "rollout(test/web): promote\n\nFlaggit-Phase: Succeeded\n",
            &author(),
        )
        .expect("commit");
    assert_eq!(repo.push(commit).expect("push"), Push::Pushed);
    assert_eq!(repo.head(), Some(commit));
    assert_eq!(bare.head("main"), Some(commit.to_string()));

    let work = bare.clone_work();
    assert_eq!(
        std::fs::read_to_string(work.path().join(".flaggit/test/web.yaml")).expect("ledger in clone"),
        ledger
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("apps/web/deploy.yaml")).expect("deploy in clone"),
        changed
    );
    assert_eq!(
        git(work.path(), &["log", "-1", "--format=%an|%ae|%cn|%s%n%b"]).trim(),
        "flaggit-test|bot@flaggit.test|flaggit-test|rollout(test/web): promote\nFlaggit-Phase: Succeeded"
    );
    assert_eq!(git(work.path(), &["rev-list", "--count", "HEAD"]).trim(), "2");
}

#[test]
fn gitrepo_round_trip_over_git_daemon() {
    let bare = seeded("daemon");
    let daemon = GitDaemon::start(&bare.root);
    round_trip(&bare, &daemon.url(&bare), Credentials::None);
}

#[test]
fn gitrepo_round_trip_over_http_basic_auth_in_one_push() {
    let bare = seeded("http");
    let server = HttpGit::start(&bare.root, "bot", "t0ken-secret");
    let credentials = Credentials::Basic {
        username: "bot".to_string(),
        password: "t0ken-secret".to_string(),
    };
    round_trip(&bare, &server.url(&bare), credentials);
    assert_eq!(server.receive_packs(), 1, "{:#?}", server.requests());
}

#[test]
fn gitrepo_round_trip_over_ssh_with_a_key_from_memory() {
    let bare = seeded("ssh");
    let sshd = Sshd::start();
    let credentials = Credentials::Ssh {
        username: None,
        identity: sshd.private_key.clone(),
        passphrase: None,
        known_hosts: sshd.known_hosts.clone(),
    };
    round_trip(&bare, &sshd.url(&bare), credentials);
}

#[test]
fn gitrepo_first_push_to_an_empty_remote_creates_the_branch() {
    let bare = BareRepo::new("empty", &BTreeMap::new());
    let daemon = GitDaemon::start(&bare.root);
    let (_cache, mut repo) = open(&daemon.url(&bare), Credentials::None);
    assert_eq!(repo.fetch().expect("fetch an empty remote"), None);
    assert_eq!(repo.head(), None);
    let root = repo
        .commit(None, &[file("a.yaml", "a: 1\n")], "first record", &author())
        .expect("root commit");
    assert_eq!(repo.push(root).expect("push"), Push::Pushed);
    assert_eq!(bare.head("main"), Some(root.to_string()));
    assert_eq!(bare.show("main", "a.yaml").as_deref(), Some("a: 1\n"));
    assert_eq!(repo.fetch().expect("fetch again"), Some(root));
}

#[test]
fn gitrepo_rejected_push_is_rebuilt_on_the_new_head_keeping_the_human_commit() {
    let bare = seeded("race");
    let daemon = GitDaemon::start(&bare.root);
    let (_cache, mut repo) = open(&daemon.url(&bare), Credentials::None);
    let head = repo.fetch().expect("fetch").expect("head");
    let ours = repo
        .commit(
            Some(head),
            &[file(".flaggit/test/web.yaml", "weight: 10\n")],
            "ours",
            &author(),
        )
        .expect("commit");
    let human = bare.human_commit(&[("apps/web/svc.yaml", "kind: Service\n")], "human edit");

    let Push::Rejected { reason } = repo.push(ours).expect("push") else {
        panic!("a push over the human's commit must be rejected");
    };
    assert!(!reason.is_empty());
    assert_eq!(
        bare.head("main"),
        Some(human.clone()),
        "the remote was not rewritten"
    );

    let new_head = repo.fetch().expect("fetch after rejection").expect("head");
    assert_eq!(new_head.to_string(), human);
    let rebuilt = repo
        .commit(
            Some(new_head),
            &[file(".flaggit/test/web.yaml", "weight: 10\n")],
            "ours",
            &author(),
        )
        .expect("re-commit");
    assert_eq!(repo.push(rebuilt).expect("push again"), Push::Pushed);
    assert_eq!(
        bare.log("main"),
        vec![
            "flaggit-test|bot@flaggit.test|ours".to_string(),
            format!("{HUMAN_NAME}|{HUMAN_EMAIL}|human edit"),
            format!("{HUMAN_NAME}|{HUMAN_EMAIL}|seed"),
        ]
    );
    assert_eq!(
        bare.show("main", "apps/web/svc.yaml").as_deref(),
        Some("kind: Service\n")
    );
    // A commit that does not descend from the head is refused before any network call.
    assert!(matches!(
        repo.push(ours).expect("push a stale commit"),
        Push::Rejected { .. }
    ));
}

#[test]
fn gitrepo_own_push_is_the_known_head_until_a_fetch_shows_another() {
    let bare = seeded("own-push");
    let daemon = GitDaemon::start(&bare.root);
    let (_cache, mut repo) = open(&daemon.url(&bare), Credentials::None);
    let head = repo.fetch().expect("fetch").expect("head");
    assert!(!repo.head_is_own_push(), "a fetched head is not ours");
    let commit = |repo: &Repo, parent, weight: u32| {
        repo.commit(
            Some(parent),
            &[file(".flaggit/test/web.yaml", &format!("weight: {weight}\n"))],
            "ours",
            &author(),
        )
        .expect("commit")
    };
    let first = commit(&repo, head, 10);
    assert_eq!(repo.push(first).expect("push"), Push::Pushed);
    assert!(repo.head_is_own_push());
    // Someone pushes; the clone has not seen it, and a push on its own head is rejected.
    let human = bare.human_commit(&[("apps/web/svc.yaml", "kind: Service\n")], "human edit");
    assert!(repo.head_is_own_push(), "not seen without a fetch");
    let second = commit(&repo, first, 20);
    assert!(matches!(repo.push(second).expect("push"), Push::Rejected { .. }));
    assert_eq!(
        bare.head("main"),
        Some(human.clone()),
        "the remote was not rewritten"
    );
    assert_eq!(repo.fetch().expect("fetch").map(|h| h.to_string()), Some(human));
    assert!(!repo.head_is_own_push(), "the fetched head is someone else's");
}

#[test]
fn gitrepo_server_side_rejection_is_rejected_not_an_error() {
    let bare = seeded("hooked");
    let hook = bare.path.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'branch main is protected' >&2\nexit 1\n").expect("write hook");
    git(&bare.path, &["config", "core.hooksPath", "hooks"]);
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&hook)
        .status()
        .expect("chmod");
    let daemon = GitDaemon::start(&bare.root);
    let (_cache, mut repo) = open(&daemon.url(&bare), Credentials::None);
    let head = repo.fetch().expect("fetch").expect("head");
    let ours = repo
        .commit(Some(head), &[file("x.yaml", "x\n")], "ours", &author())
        .expect("commit");
    // A hook's refusal is a rule of the server, not a race: retrying cannot help.
    assert!(matches!(repo.push(ours).expect("push"), Push::Refused { .. }));
    assert_eq!(bare.head("main"), Some(head.to_string()));
    assert_eq!(repo.head(), Some(head));
}

#[test]
fn gitrepo_wrong_password_is_an_auth_error_quickly_and_never_shows_the_password() {
    let bare = seeded("auth");
    let server = HttpGit::start(&bare.root, "bot", "right-password");
    let wrong = "wr0ng-Pa55word";
    let url = server
        .url(&bare)
        .replace("http://", &format!("http://bot:{wrong}@"));
    let (_cache, mut repo) = open(
        &url,
        Credentials::Basic {
            username: "bot".to_string(),
            password: wrong.to_string(),
        },
    );
    let start = Instant::now();
    let error = repo.fetch().expect_err("a wrong password fails");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(error.category(), "GitAuth", "{error}");
    let message = error.to_string();
    assert!(!message.contains(wrong), "{message}");
    assert!(!format!("{error:?}").contains(wrong), "{error:?}");
    assert!(
        message.contains(&format!("http://127.0.0.1:{}", server.port)),
        "{message}"
    );
    assert!(message.contains("credentials Secret"), "{message}");
    // One answer, not a loop: a handful of requests at most.
    assert!(server.requests().len() <= 3, "{:#?}", server.requests());

    let (_cache, mut anonymous) = open(&server.url(&bare), Credentials::None);
    let error = anonymous.fetch().expect_err("no credentials fails");
    assert_eq!(error.category(), "GitAuth", "{error}");
}

#[test]
fn gitrepo_host_key_is_checked_against_known_hosts() {
    let bare = seeded("hostkey");
    let sshd = Sshd::start();
    let other = Sshd::start();
    let with_known_hosts = |known_hosts: String| Credentials::Ssh {
        username: None,
        identity: sshd.private_key.clone(),
        passphrase: None,
        known_hosts,
    };
    // The other server's key, listed under this server's name: a changed or spoofed key.
    let spoofed = other
        .known_hosts
        .replace(&format!(":{}", other.port), &format!(":{}", sshd.port));
    for (known_hosts, expected) in [
        (spoofed, "differs"),
        (other.known_hosts.clone(), "no entry"),
        (String::new(), "empty"),
    ] {
        let (_cache, mut repo) = open(&sshd.url(&bare), with_known_hosts(known_hosts));
        let error = repo.fetch().expect_err("an unknown host key is refused");
        assert_eq!(error.category(), "GitHostKey", "{error}");
        assert!(error.to_string().contains(expected), "{error}");
        assert!(error.to_string().contains("ssh-keyscan"), "{error}");
    }
    let (_cache, mut repo) = open(&sshd.url(&bare), with_known_hosts(sshd.known_hosts_hashed()));
    assert_eq!(
        repo.fetch()
            .expect("a hashed known_hosts entry is accepted")
            .map(|h| h.to_string()),
        bare.head("main")
    );
}

#[test]
fn gitrepo_wrong_ssh_key_is_an_auth_error() {
    let bare = seeded("sshauth");
    let sshd = Sshd::start();
    let stranger = Sshd::start();
    let (_cache, mut repo) = open(
        &sshd.url(&bare),
        Credentials::Ssh {
            username: None,
            identity: stranger.private_key.clone(),
            passphrase: None,
            known_hosts: sshd.known_hosts.clone(),
        },
    );
    let start = Instant::now();
    let error = repo.fetch().expect_err("a key the server does not know fails");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(error.category(), "GitAuth", "{error}");
    assert!(!error.to_string().contains("PRIVATE KEY"), "{error}");
}

#[test]
fn gitrepo_remote_down_fails_in_seconds_and_recovers() {
    let bare = seeded("outage");
    let mut daemon = GitDaemon::start(&bare.root);
    let (_cache, mut repo) = open(&daemon.url(&bare), Credentials::None);
    let head = repo.fetch().expect("fetch").expect("head");
    let ours = repo
        .commit(Some(head), &[file("x.yaml", "x\n")], "ours", &author())
        .expect("commit");
    daemon.stop();
    let start = Instant::now();
    let error = repo.push(ours).expect_err("the remote is down");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(error.category(), "GitPush", "{error}");
    assert!(repo.fetch().is_err());
    assert_eq!(repo.head(), Some(head), "a failed call keeps the last known head");
    daemon.restart();
    assert_eq!(repo.push(ours).expect("push after the outage"), Push::Pushed);
    assert_eq!(bare.head("main"), Some(ours.to_string()));
}

#[test]
fn gitrepo_a_hung_remote_times_out() {
    let silent = Silent::start();
    let (_cache, mut repo) = open(
        &format!("git://127.0.0.1:{}/x.git", silent.port),
        Credentials::None,
    );
    repo.set_stall_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let error = repo.fetch().expect_err("nobody answers");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert_eq!(error.category(), "GitTimeout", "{error}");
}

#[test]
fn gitrepo_list_files_and_log_see_remote_history() {
    let bare = seeded("history");
    bare.human_commit(&[("apps/api/deploy.yaml", "kind: Deployment\n")], "add api");
    let daemon = GitDaemon::start(&bare.root);
    let (_cache, mut repo) = open(&daemon.url(&bare), Credentials::None);
    let head = repo.fetch().expect("fetch").expect("head");
    assert_eq!(
        repo.list_files(head, "").expect("list"),
        vec!["README.md", "apps/api/deploy.yaml", "apps/web/deploy.yaml"]
    );
    assert_eq!(
        repo.list_files(head, "apps/web").expect("list"),
        vec!["apps/web/deploy.yaml"]
    );
    let ours = repo
        .commit(
            Some(head),
            &[("README.md".to_string(), None)],
            "drop readme",
            &author(),
        )
        .expect("commit");
    assert_eq!(repo.list_files(ours, "").expect("list").len(), 2);
    let log = repo.log(ours, 10).expect("log");
    let summary: Vec<(String, String)> = log
        .iter()
        .map(|c| (c.author.clone(), c.message.trim().to_string()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("flaggit-test".to_string(), "drop readme".to_string()),
            (HUMAN_NAME.to_string(), "add api".to_string()),
            (HUMAN_NAME.to_string(), "seed".to_string()),
        ]
    );
    assert_eq!(log[1].email, HUMAN_EMAIL);
    assert_eq!(log[1].id, head);
    assert_eq!(repo.log(ours, 2).expect("log").len(), 2);
}

#[test]
fn gitrepo_signed_commits_pass_git_verify_commit() {
    let bare = seeded("signed");
    let daemon = GitDaemon::start(&bare.root);
    let keys = TempDir::new("signing");
    let (private, public) = ssh_keygen(&keys.path().join("signing_key"));
    let signer = Signer::from_openssh(&private).expect("signer");
    assert!(
        public.starts_with(&signer.public_key()),
        "{public} vs {}",
        signer.public_key()
    );
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(&allowed, format!("{} {public}", author().email)).expect("write allowed signers");

    let (_cache, mut repo) = open(&daemon.url(&bare), Credentials::None);
    let head = repo.fetch().expect("fetch").expect("head");
    let signed = repo
        .commit_signed(
            Some(head),
            &[file("a.yaml", "a\n")],
            "signed record",
            &author(),
            None,
            &signer,
        )
        .expect("signed commit");
    assert_eq!(repo.push(signed).expect("push"), Push::Pushed);

    let work = bare.clone_work();
    let verify = |allowed_file: &std::path::Path| {
        git_try(
            work.path(),
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("gpg.ssh.allowedSignersFile={}", allowed_file.display()),
                "verify-commit",
                "HEAD",
            ],
        )
    };
    let (ok, out, err) = verify(&allowed);
    assert!(ok, "git verify-commit failed:\n{out}\n{err}");
    assert!(err.contains("Good \"git\" signature"), "{err}");
    // Another key in the allowed signers: the same commit does not verify.
    let (_, stranger_public) = ssh_keygen(&keys.path().join("stranger_key"));
    let other_allowed = keys.path().join("other_allowed_signers");
    std::fs::write(&other_allowed, format!("{} {stranger_public}", author().email))
        .expect("write allowed signers");
    let (ok, _, err) = verify(&other_allowed);
    assert!(!ok, "verified against the wrong key: {err}");
}
