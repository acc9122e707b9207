//! Signed records: a branch whose pre-receive hook refuses unsigned commits (as a protected
//! branch that requires signatures does) refuses flaggit's unsigned push with a clear
//! `lastError`; with `--git-signing-secret`, every record is signed and `git verify-commit`
//! accepts it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::git_remote::{BareRepo, GitDaemon, TempDir, git, git_try, ssh_keygen};
use crate::gitops::{MANIFEST, gitops_canary, manifest};
use crate::rollout::Rig;
use crate::support::{TestNamespace, control_plane};

/// Refuses every pushed commit that has no signature header.
const REQUIRE_SIGNATURES: &str = r#"#!/bin/sh
zero=0000000000000000000000000000000000000000
while read old new ref; do
  if [ "$old" = "$zero" ]; then range="$new"; else range="$old..$new"; fi
  for c in $(git rev-list "$range"); do
    if ! git cat-file commit "$c" | grep -q '^gpgsig '; then
      echo "error: commit $c is not signed: $ref requires signed commits" >&2
      exit 1
    fi
  done
done
"#;

/// `git verify-commit` of `commit` against an allowed-signers file naming `public_key`.
fn verify_commit(repo: &BareRepo, dir: &TempDir, commit: &str, public_key: &str) -> (bool, String) {
    let allowed = dir
        .path()
        .join(format!("allowed-signers-{}", rand::random::<u32>()));
    std::fs::write(&allowed, format!("flaggit@users.noreply.github.com {public_key}"))
        .expect("write allowed signers");
    let (ok, out, err) = git_try(
        &repo.path,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
            "verify-commit",
            "--verbose",
            commit,
        ],
    );
    (ok, format!("{out}{err}"))
}

#[tokio::test]
async fn records_are_signed_and_an_unsigned_push_to_a_signed_branch_says_why() {
    let v0 = manifest("podinfo:6.0.0");
    let repo = BareRepo::new("signed", &BTreeMap::from([(MANIFEST, v0.as_str())]));
    let seed = repo.head("main").expect("seeded");
    let hook = repo.path.join("hooks/pre-receive");
    std::fs::write(&hook, REQUIRE_SIGNATURES).expect("write the hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod the hook");
    let daemon = GitDaemon::start(&repo.root);
    let cache = TempDir::new("signed-cache");
    let args: Vec<String> = [
        "--git-url",
        &daemon.url(&repo),
        "--git-cache-dir",
        &cache.path().display().to_string(),
        "--git-batch-window",
        "100ms",
    ]
    .map(String::from)
    .to_vec();
    let ns = TestNamespace::unique_name("git-signed");
    let mut rig = Rig::on(control_plane(), &ns, &args).await;
    rig.initialize_podinfo(gitops_canary()).await;

    // Unsigned: the branch refuses the record, and the status says why and what to do.
    let canaries = rig.canaries();
    let start = std::time::Instant::now();
    let error = loop {
        let error = canaries
            .get("podinfo")
            .await
            .expect("canary")
            .status
            .and_then(|s| s.gitops)
            .and_then(|g| g.last_error)
            .unwrap_or_default();
        if error.contains("requires signed commits") {
            break error;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no refusal in lastError: {error:?}\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        error.contains("--git-signing-secret") && error.contains("is not signed"),
        "{error}"
    );
    assert_eq!(repo.head("main"), Some(seed.clone()), "nothing unsigned landed");
    // The writer's figures on /metrics say the same.
    let (_, metrics) = rig.flaggit().get("/metrics").expect("/metrics answers");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("flaggit_git_rejected_pushes_total") >= 1.0, "{metrics}");
    assert!(
        value("flaggit_git_last_error_timestamp_seconds") > 1.7e9,
        "{metrics}"
    );
    assert!(value("flaggit_git_records_pending") >= 1.0, "{metrics}");
    assert_eq!(value("flaggit_git_pushes_total"), 0.0);

    // A signing key in a Secret: the same record goes through, signed.
    let keys = TempDir::new("signing-key");
    let (private_key, public_key) = ssh_keygen(&keys.path().join("id"));
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("flaggit-signing".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("signingKey".to_string(), private_key.clone())])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(rig.client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the signing Secret");
    let mut signed_args = args.clone();
    signed_args.extend([
        "--git-signing-secret".to_string(),
        format!("{ns}/flaggit-signing"),
    ]);
    rig.restart_with(&signed_args);
    let canaries = rig.canaries();
    let start = std::time::Instant::now();
    loop {
        let gitops = canaries
            .get("podinfo")
            .await
            .expect("canary")
            .status
            .and_then(|s| s.gitops)
            .unwrap_or_default();
        if gitops.pushed_record == Some(1) && gitops.last_error.is_none() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the signed record never landed: {gitops:?}\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (_, metrics) = rig.flaggit().get("/metrics").expect("/metrics answers");
    assert!(metrics.contains("\nflaggit_git_pushes_total 1\n"), "{metrics}");
    assert!(metrics.contains("\nflaggit_git_records_pending 0\n"), "{metrics}");

    // Every commit flaggit made verifies against its key, and against no other.
    let commits = git(&repo.path, &["rev-list", &format!("{seed}..main")]);
    let commits: Vec<&str> = commits.lines().collect();
    assert!(!commits.is_empty());
    for commit in &commits {
        let (ok, out) = verify_commit(&repo, &keys, commit, &public_key);
        assert!(ok, "git verify-commit {commit}: {out}");
        assert!(out.contains("Good \"git\" signature"), "{out}");
    }
    let (_, other_key) = ssh_keygen(&keys.path().join("other"));
    let (ok, out) = verify_commit(&repo, &keys, commits[0], &other_key);
    assert!(!ok, "a signature by another key must not verify: {out}");
    let log = rig.flaggit().log();
    assert!(
        !log.contains(private_key.lines().nth(1).unwrap_or("-")),
        "the key never reaches the log"
    );
    rig.finish().await;
}
