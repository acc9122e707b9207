//! `scripts/quickstart.sh`, the README's first command, tells its whole story: run shortened
//! (`FLAGGIT_QUICKSTART_FAST=1`) with this build's binary, it must leave a config repo where
//! 6.0.1 was promoted step by step, 6.0.2 was rolled back, and the manifest says 6.0.1 again.

use std::process::Command;

use crate::git_remote::{TempDir, git};
use crate::support::repo;

const MANIFEST: &str = "apps/podinfo/deployment.yaml";

#[test]
fn the_quickstart_promotes_a_release_and_rolls_back_a_broken_one_in_git() {
    let state = TempDir::new("quickstart");
    let out = Command::new(repo().join("scripts/quickstart.sh"))
        .env("FLAGGIT_QUICKSTART_FAST", "1")
        .env("FLAGGIT_QUICKSTART_STATE", state.path())
        .env("FLAGGIT_BIN", env!("CARGO_BIN_EXE_flaggit"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("the quickstart runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs = std::fs::read_to_string(state.path().join("logs/controller.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the quickstart failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ncontroller log:\n{logs}"
    );

    let config = state.path().join("config.git");
    let subjects = git(&config, &["log", "--reverse", "--format=%s", "main"]);
    let kinds = git(
        &config,
        &[
            "log",
            "--reverse",
            "--format=%(trailers:key=Flaggit-Kind,valueonly)",
            "main",
        ],
    );
    let kinds: Vec<&str> = kinds.lines().filter(|l| !l.is_empty()).collect();
    let promoted = kinds
        .iter()
        .position(|k| *k == "Promoted")
        .expect("a Promoted record");
    let rolled_back = kinds
        .iter()
        .position(|k| *k == "RolledBack")
        .expect("a RolledBack record");
    assert!(promoted < rolled_back, "{kinds:?}");
    let steps = kinds[..promoted].iter().filter(|k| **k == "Step").count();
    assert_eq!(steps, 3, "20%, 40%, 60% before the promotion: {kinds:?}");
    assert!(subjects.contains("promoted podinfo:6.0.1"), "{subjects}");
    assert!(
        subjects.contains("roll back podinfo:6.0.2 to podinfo:6.0.1"),
        "{subjects}"
    );

    // The write-back: the manifest names the serving version again, and only its image changed.
    let manifest = git(&config, &["show", &format!("main:{MANIFEST}")]);
    assert!(
        manifest.contains("image: ghcr.io/stefanprodan/podinfo:6.0.1\n"),
        "{manifest}"
    );
    let rollback = git(
        &config,
        &[
            "log",
            "--format=%H",
            "--grep=^Flaggit-Kind: RolledBack$",
            "-1",
            "main",
        ],
    );
    let diff = git(
        &config,
        &[
            "diff",
            "--unified=0",
            &format!("{}~1", rollback.trim()),
            rollback.trim(),
            "--",
            MANIFEST,
        ],
    );
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-')) && !l.starts_with("+++") && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        [
            "-          image: ghcr.io/stefanprodan/podinfo:6.0.2",
            "+          image: ghcr.io/stefanprodan/podinfo:6.0.1"
        ]
    );

    // What it prints for the reader: the log, the write-back, history, status, the dashboard.
    for shown in [
        "git log --oneline",
        "+          image: ghcr.io/stefanprodan/podinfo:6.0.1",
        "RolledBack",
        "demo/podinfo  Failed",
        "Dashboard:   http://127.0.0.1:",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not shown:\n{stdout}");
    }
    // It stopped what it started.
    let pids = std::fs::read_to_string(state.path().join("cluster/pids")).unwrap_or_default();
    assert!(pids.is_empty(), "control plane still recorded as running: {pids}");
}
