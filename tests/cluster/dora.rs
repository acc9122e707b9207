//! `flaggit dora` on a real config repository served by `git daemon`: a scripted history of
//! human changes and flaggit's record commits (the real commit messages, with dated commits),
//! one release on a merged release branch, and known answers for every figure.

use std::path::Path;
use std::process::{Command, Stdio};

use flaggit::api::PendingRecord;
use flaggit::gitops::message;

use crate::git_remote::{BareRepo, GitDaemon, TempDir, git};

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Commits in a working clone with fixed author and committer dates.
struct Script {
    work: TempDir,
    now: i64,
}

impl Script {
    fn dated(&self, ago: i64, name: &str, args: &[&str]) {
        let date = format!("@{} +0000", self.now - ago);
        let out = Command::new("git")
            .arg("-C")
            .arg(self.work.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", format!("{name}@example.com"))
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", format!("{name}@example.com"))
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A person changes the image of `app` `ago` seconds before now.
    fn change(&self, ago: i64, app: &str, tag: &str) {
        write(
            self.work.path(),
            &format!("apps/{app}/deployment.yaml"),
            &format!(
                "kind: Deployment\nmetadata:\n  name: {app}\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {app}:{tag}\n"
            ),
        );
        self.dated(ago, "dev", &["add", "--all"]);
        self.dated(ago, "dev", &["commit", "--quiet", "-m", &format!("{app}: {tag}")]);
    }

    /// flaggit records `kind` of `canary`'s `revision` `ago` seconds before now: its ledger
    /// file and the commit message the writer writes.
    fn record(&self, ago: i64, canary: &str, seq: i64, kind: &str, revision: &str) {
        let time = jiff::Timestamp::from_second(self.now - ago)
            .expect("in range")
            .to_string();
        let record = PendingRecord {
            seq,
            kind: kind.into(),
            revision: revision.into(),
            phase: "Progressing".into(),
            time: time.clone(),
            ..Default::default()
        };
        write(
            self.work.path(),
            &format!(".flaggit/{canary}.yaml"),
            &format!("canary: {canary}\nrecord: {seq}\nat: {time}\n"),
        );
        let text = message::commit_message(canary, None, &record, &[]);
        self.dated(ago, "flaggit", &["add", "--all"]);
        self.dated(ago, "flaggit", &["commit", "--quiet", "-m", &text]);
    }
}

fn write(dir: &Path, path: &str, content: &str) {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
    std::fs::write(file, content).expect("write");
}

/// Runs the CLI with its Git cache under `tmp`.
fn flaggit(tmp: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("KUBECONFIG")
        .env_remove("FLAGGIT_GIT_URL")
        .output()
        .expect("flaggit runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The cells of each line of a table (columns are two or more spaces apart).
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

/// The scripted history: test/podinfo releases 6.0.1 (promoted after 1h), 6.0.2 (rolled back),
/// 6.0.3 (promoted, 2h; restores after 25h 30m), 6.0.4 (4h) and 6.0.5 (2h, on a release branch
/// merged with a merge commit); test/web releases 2 (3h) and 3 (rolled back). An older
/// release, 35 days ago, is outside the 30-day window.
fn scripted(repo: &BareRepo, now: i64) {
    let script = Script {
        work: repo.clone_work(),
        now,
    };
    let s = &script;
    s.change(40 * DAY, "podinfo", "6.0.0");
    s.record(40 * DAY - HOUR, "test/podinfo", 1, "Initialized", "p0");
    s.change(35 * DAY, "podinfo", "5.9.9");
    s.record(35 * DAY - 300, "test/podinfo", 2, "Detected", "old");
    s.record(35 * DAY - 2 * HOUR, "test/podinfo", 3, "Promoted", "old");
    s.change(20 * DAY, "podinfo", "6.0.1");
    s.record(20 * DAY - 300, "test/podinfo", 4, "Detected", "p1");
    s.record(20 * DAY - 600, "test/podinfo", 5, "Step", "p1");
    s.record(20 * DAY - HOUR, "test/podinfo", 6, "Promoted", "p1");
    s.change(15 * DAY, "podinfo", "6.0.2");
    s.record(15 * DAY - 300, "test/podinfo", 7, "Detected", "p2");
    s.record(15 * DAY - 1_800, "test/podinfo", 8, "RolledBack", "p2");
    s.change(14 * DAY, "podinfo", "6.0.3");
    s.record(14 * DAY - 300, "test/podinfo", 9, "Detected", "p3");
    s.record(14 * DAY - 2 * HOUR, "test/podinfo", 10, "Promoted", "p3");
    s.change(10 * DAY, "web", "2");
    s.record(10 * DAY - 60, "test/web", 1, "Detected", "w2");
    s.record(10 * DAY - 3 * HOUR, "test/web", 2, "Promoted", "w2");
    s.change(5 * DAY, "podinfo", "6.0.4");
    s.record(5 * DAY - 300, "test/podinfo", 11, "Detected", "p4");
    s.record(5 * DAY - 4 * HOUR, "test/podinfo", 12, "Promoted", "p4");
    s.change(2 * DAY, "web", "3");
    s.record(2 * DAY - 60, "test/web", 3, "Detected", "w3");
    s.record(2 * DAY - HOUR, "test/web", 4, "RolledBack", "w3");
    // A release pull request: the records on its branch, merged into main.
    s.change(DAY, "podinfo", "6.0.5");
    s.dated(
        DAY - 1,
        "flaggit",
        &["checkout", "--quiet", "-b", "flaggit/test/podinfo/p5"],
    );
    s.record(DAY - 300, "test/podinfo", 13, "Detected", "p5");
    s.record(DAY - 2 * HOUR, "test/podinfo", 14, "Promoted", "p5");
    s.dated(DAY - 2 * HOUR - 1, "flaggit", &["checkout", "--quiet", "main"]);
    s.dated(
        DAY - 3 * HOUR,
        "reviewer",
        &[
            "merge",
            "--quiet",
            "--no-ff",
            "-m",
            "Merge release",
            "flaggit/test/podinfo/p5",
        ],
    );
    git(s.work.path(), &["push", "--quiet", "origin", "main"]);
}

#[test]
fn dora_figures_from_a_scripted_history_have_known_answers() {
    let repo = BareRepo::new(
        "dora",
        &std::collections::BTreeMap::from([("README.md", "config\n")]),
    );
    let now = jiff::Timestamp::now().as_second();
    scripted(&repo, now);
    let daemon = GitDaemon::start(&repo.root);
    let url = daemon.url(&repo);
    let cache = TempDir::new("dora-cache");
    let flaggit = |args: &[&str]| flaggit(cache.path(), args);

    let (ok, table) = flaggit(&["dora", "--repo", &url, "--since", "30d"]);
    assert!(ok, "{table}");
    eprintln!("flaggit dora --since 30d:\n{table}");
    assert_eq!(
        cells(&table),
        [
            vec![
                "CANARY",
                "DEPLOYS",
                "PER DAY",
                "LEAD TIME (MEDIAN)",
                "CHANGE FAILURE RATE",
                "TIME TO RESTORE (MEDIAN)"
            ],
            // Lead times 1h, 2h, 4h, 2h; restore 15d-30m to 14d-2h.
            vec!["test/podinfo", "4", "0.13", "2h", "20% (1/5)", "1d 1h (1)"],
            vec!["test/web", "1", "0.03", "3h", "50% (1/2)", "-"],
            vec!["(all)", "5", "0.17", "2h", "29% (2/7)", "1d 1h (1)"],
        ]
        .map(|row| row.into_iter().map(String::from).collect::<Vec<_>>())
    );

    // A shorter window, one canary, as JSON with the exact seconds.
    let (ok, json) = flaggit(&[
        "dora",
        "--repo",
        &url,
        "--since",
        "7d",
        "--canary",
        "test/podinfo",
        "-o",
        "json",
    ]);
    assert!(ok, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    let overall = &report["overall"];
    assert_eq!(overall["deployments"], 2, "{json}");
    assert_eq!(overall["leadTime"], 3 * HOUR, "median of 4h and 2h: {json}");
    assert_eq!(overall["failures"], 0, "{json}");
    assert_eq!(overall["changeFailureRate"], 0.0, "{json}");
    assert!(overall["timeToRestore"].is_null(), "{json}");
    assert_eq!(report["canaries"].as_array().map(Vec::len), Some(1), "{json}");

    let (ok, error) = flaggit(&["dora", "--repo", &url, "--since", "30"]);
    assert!(!ok && error.contains("30d, 12h"), "{error}");
    let (ok, error) = flaggit(&["dora"]);
    assert!(!ok && error.contains("pass --repo"), "{error}");
}
