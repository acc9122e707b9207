//! The Git record end to end: `flaggit run` against a real API server and Prometheus, writing
//! to a bare repository served by `git daemon` on loopback. The tests play Flux: they commit
//! new versions to the repository and apply them to the cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use flaggit::api::{Canary, CanaryPhase, GitOpsSpec, Provider};

use crate::git_remote::{BareRepo, GitDaemon, TempDir, git, git_try};
use crate::metrics_app::prometheus;
use crate::rollout::{Rig, canary_of, deployment, stepping, success_rate_where};

pub(crate) const MANIFEST: &str = "apps/podinfo/deployment.yaml";
pub(crate) const PLACEMENT: &str = "apps/podinfo/kustomization.yaml";

/// The kustomization that puts the manifest in namespace `ns`.
pub(crate) fn placement(ns: &str) -> String {
    format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\nresources:\n  - deployment.yaml\n"
    )
}

/// The podinfo Deployment as the config repo declares it: comments and quoting a reviewer
/// would not want a bot to touch.
pub(crate) fn manifest(image: &str) -> String {
    format!(
        "# podinfo, the demo app\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  labels:\n    app: podinfo # selector label\nspec:\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n        - name: app\n          image: \"{image}\" # bumped by CI\n          ports:\n            - containerPort: 9898\n"
    )
}

/// The flaggit records on `main`, oldest first: (commit, trailers).
fn records(repo: &BareRepo) -> Vec<(String, BTreeMap<String, String>)> {
    let log = git(&repo.path, &["log", "--format=%H%n%B%n--end--", "main"]);
    let mut out = Vec::new();
    for entry in log.split("--end--\n") {
        let mut lines = entry.lines();
        let Some(commit) = lines.next().filter(|c| !c.is_empty()) else {
            continue;
        };
        let trailers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.starts_with("Flaggit-"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !trailers.is_empty() {
            out.push((commit.to_string(), trailers));
        }
    }
    out.reverse();
    out
}

fn kinds(repo: &BareRepo) -> Vec<String> {
    records(repo)
        .into_iter()
        .map(|(_, t)| t.get("Flaggit-Kind").cloned().unwrap_or_default())
        .collect()
}

pub(crate) async fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn gitops_canary() -> Canary {
    let mut canary = canary_of("podinfo", Provider::Istio, stepping(25, 50));
    canary.spec.revert_on_deletion = Some(true);
    canary.spec.gitops = Some(Box::new(GitOpsSpec {
        path: Some("apps/podinfo".into()),
        ..Default::default()
    }));
    canary
}

struct World {
    rig: Rig,
    repo: BareRepo,
    daemon: GitDaemon,
    _cache: TempDir,
}

async fn world(prefix: &str, files: &[(&str, &str)]) -> World {
    let files: BTreeMap<&str, &str> = files.iter().copied().collect();
    let repo = BareRepo::new("config", &files);
    let daemon = GitDaemon::start(&repo.root);
    let cache = TempDir::new("flaggit-cache");
    let args = vec![
        "--git-url".to_string(),
        daemon.url(&repo),
        "--git-cache-dir".to_string(),
        cache.path().display().to_string(),
        "--git-batch-window".to_string(),
        "100ms".to_string(),
    ];
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
        daemon,
        _cache: cache,
    }
}

#[tokio::test]
async fn every_step_is_committed_and_a_rollback_writes_the_serving_version_back() {
    let v0 = manifest("podinfo:6.0.0");
    let w = world(
        "git-record",
        &[(MANIFEST, &v0), ("apps/podinfo/broken.yaml", "kind: [unclosed\n")],
    )
    .await;
    let ns = w.rig.ns.name.clone();
    w.rig.initialize_podinfo(gitops_canary()).await;
    let ledger_path = format!(".flaggit/{ns}/podinfo.yaml");
    wait_for("the ledger", Duration::from_secs(20), || {
        w.repo.show("main", &ledger_path)
    })
    .await;
    assert_eq!(kinds(&w.repo), ["Initialized"]);

    // A release: the human commits 6.0.1, "Flux" applies it, the analysis passes.
    w.repo
        .human_commit(&[(MANIFEST, &manifest("podinfo:6.0.1"))], "bump podinfo to 6.0.1");
    w.rig.set_image("podinfo", "podinfo:6.0.1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let promoted = wait_for("the promotion record", Duration::from_secs(20), || {
        let kinds = kinds(&w.repo);
        kinds.contains(&"Promoted".to_string()).then_some(kinds)
    })
    .await;
    assert_eq!(
        promoted,
        ["Initialized", "Detected", "Step", "Step", "Promoting", "Promoted"],
        "one commit per record, in order"
    );
    let all = records(&w.repo);
    // The first step moves traffic; the checks of the second are of the canary at 25%.
    assert_eq!(all[2].1.get("Flaggit-Weight").map(String::as_str), Some("25"));
    let step = &all[3].1;
    assert_eq!(step.get("Flaggit-Canary"), Some(&format!("{ns}/podinfo")));
    assert_eq!(step.get("Flaggit-Weight").map(String::as_str), Some("50"));
    assert_eq!(step.get("Flaggit-Phase").map(String::as_str), Some("Progressing"));
    assert!(
        step.get("Flaggit-Checks")
            .is_some_and(|c| c.starts_with("request-success-rate=")),
        "{step:?}"
    );
    assert!(
        step.get("Flaggit-Revision")
            .is_some_and(|r| r.starts_with("flaggit1-"))
    );
    let numbers: Vec<i64> = all
        .iter()
        .map(|(_, t)| t["Flaggit-Record"].parse().expect("a number"))
        .collect();
    assert_eq!(numbers, (1..=6).collect::<Vec<_>>(), "each record exactly once");
    let ledger = w.repo.show("main", &ledger_path).expect("ledger");
    assert!(ledger.contains("podinfo:6.0.1"), "{ledger}");
    assert!(
        git(&w.repo.path, &["log", "--format=%s", "main"]).contains("bump podinfo to 6.0.1"),
        "the human's commit is kept"
    );

    // A bad release: 6.0.2 fails its checks and is rolled back; Git says 6.0.1 again.
    w.rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    w.repo
        .human_commit(&[(MANIFEST, &manifest("podinfo:6.0.2"))], "bump podinfo to 6.0.2");
    w.rig.set_image("podinfo", "podinfo:6.0.2").await;
    let (failed, _) = w
        .rig
        .wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(90))
        .await;
    let (commit, trailers) = wait_for("the rollback record", Duration::from_secs(20), || {
        records(&w.repo)
            .into_iter()
            .find(|(_, t)| t["Flaggit-Kind"] == "RolledBack")
    })
    .await;
    assert!(
        trailers["Flaggit-Reason"].contains("failed checks threshold reached"),
        "{trailers:?}"
    );
    assert_eq!(
        w.repo.show("main", MANIFEST).expect("manifest"),
        manifest("podinfo:6.0.1"),
        "the manifest names the serving version again, byte for byte"
    );
    let diff = git(
        &w.repo.path,
        &[
            "diff",
            "--unified=0",
            &format!("{commit}~1"),
            &commit,
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
            "-          image: \"podinfo:6.0.2\" # bumped by CI",
            "+          image: \"podinfo:6.0.1\" # bumped by CI"
        ]
    );
    assert_eq!(
        w.repo.show("main", "apps/podinfo/broken.yaml").as_deref(),
        Some("kind: [unclosed\n"),
        "a file that does not parse is never written"
    );
    let gitops = failed.status.and_then(|s| s.gitops).unwrap_or_default();
    assert!(gitops.repository.is_some_and(|r| r.ends_with("config.git#main")));

    // "Flux" applies the reverted manifest: the target equals the primary, no new analysis.
    w.rig.set_image("podinfo", "podinfo:6.0.1").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let canary = w.rig.canaries().get("podinfo").await.expect("canary");
    assert_eq!(canary.status.and_then(|s| s.phase), Some(CanaryPhase::Failed));
    assert!(
        !kinds(&w.repo).ends_with(&["Detected".to_string()]),
        "{:?}",
        kinds(&w.repo)
    );

    // `flaggit history` reads it all back from the trailers.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args([
            "history",
            &format!("{ns}/podinfo"),
            "--repo",
            &w.daemon.url(&w.repo),
            "-o",
            "json",
        ])
        .output()
        .expect("flaggit history runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let history: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let history_kinds: Vec<&str> = history.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(history_kinds, kinds(&w.repo));
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args([
            "history",
            &format!("{ns}/podinfo"),
            "--repo",
            &w.daemon.url(&w.repo),
        ])
        .output()
        .expect("flaggit history runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("TIME "), "{table}");
    assert!(table.contains("RolledBack"), "{table}");

    // `flaggit ledger verify` finds the ledger in line with the cluster.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args(["ledger", "verify", "--namespace", &ns, "--kubeconfig"])
        .arg(&crate::support::control_plane().kubeconfig)
        .args(["--repo", &w.daemon.url(&w.repo)])
        .output()
        .expect("flaggit ledger verify runs");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // Off-boarding: the deletion waits for its record, and the ledger is closed.
    w.rig
        .canaries()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete the canary");
    wait_for("the off-boarding record", Duration::from_secs(30), || {
        kinds(&w.repo)
            .ends_with(&["OffBoarded".to_string()])
            .then_some(())
    })
    .await;
    let ledger = w.repo.show("main", &ledger_path).expect("ledger");
    assert!(ledger.contains("closed:"), "{ledger}");
    let canaries: Api<Canary> = w.rig.canaries();
    let start = Instant::now();
    while canaries.get_opt("podinfo").await.expect("read").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the canary was never released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.rig.finish().await;
}

#[tokio::test]
async fn records_wait_out_an_outage_and_a_crash_and_arrive_once_in_order() {
    let v0 = manifest("podinfo:6.0.0");
    let mut w = world("git-outage", &[(MANIFEST, &v0)]).await;
    let ns = w.rig.ns.name.clone();
    w.rig.initialize_podinfo(gitops_canary()).await;
    wait_for("the first record", Duration::from_secs(20), || {
        (kinds(&w.repo) == ["Initialized"]).then_some(())
    })
    .await;

    // The remote goes away; the release goes on and its records wait in the outbox.
    w.daemon.stop();
    w.rig.set_image("podinfo", "podinfo:6.0.1").await;
    let start = Instant::now();
    let waiting = loop {
        let canary = w.rig.canaries().get("podinfo").await.expect("canary");
        let gitops = canary.status.clone().and_then(|s| s.gitops).unwrap_or_default();
        if gitops.last_error.is_some() && gitops.pending.as_ref().is_some_and(|p| p.len() >= 2) {
            break gitops;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no outbox: {gitops:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(waiting.last_error.as_deref().is_some_and(|e| !e.is_empty()));

    // The controller crashes meanwhile; its successor finds the outbox in the status.
    w.rig.kill_controller();
    w.rig.start_controller();
    w.rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    assert_eq!(
        kinds(&w.repo),
        ["Initialized"],
        "nothing reached the stopped remote"
    );

    // The writer has backed off to half a minute between attempts. The remote comes back
    // just after an attempt failed: the records go out once the remote answers a probe, not
    // when the backoff ends (which a slow, busy machine could make look like a lost record).
    w.rig
        .flaggit()
        .wait_for_log("retry_in=32s", Duration::from_secs(120));
    let restarted = Instant::now();
    w.daemon.restart();
    let all = wait_for("the records after the outage", Duration::from_secs(120), || {
        let all = records(&w.repo);
        all.iter()
            .any(|(_, t)| t["Flaggit-Kind"] == "Promoted")
            .then_some(all)
    })
    .await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(25),
        "the records went out {took:?} after the remote came back: a probe every 2 s should find it long before the 32 s backoff ends"
    );
    let numbers: Vec<i64> = all
        .iter()
        .map(|(_, t)| t["Flaggit-Record"].parse().expect("a number"))
        .collect();
    assert_eq!(
        numbers,
        (1..=numbers.len() as i64).collect::<Vec<_>>(),
        "in order, none twice"
    );
    assert_eq!(
        kinds(&w.repo),
        ["Initialized", "Detected", "Step", "Step", "Promoting", "Promoted"]
    );
    let start = Instant::now();
    loop {
        let canary = w.rig.canaries().get("podinfo").await.expect("canary");
        let gitops = canary.status.and_then(|s| s.gitops).unwrap_or_default();
        if gitops.last_error.is_none() && gitops.pushed_record == Some(6) {
            assert_eq!(gitops.last_commit, w.repo.head("main"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never acknowledged: {gitops:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = ns;
    w.rig.finish().await;
}

#[tokio::test]
async fn a_rebuilt_cluster_analyses_the_target_instead_of_promoting_it() {
    // The repository remembers 6.0.0 as promoted; the rebuilt cluster has 6.0.1 applied.
    let repo_files = |ns: &str| {
        (
            format!(".flaggit/{ns}/podinfo.yaml"),
            format!(
                "canary: {ns}/podinfo\nuid: from-the-old-cluster\ntarget: Deployment/podinfo\nrecord: 9\npromoted:\n  revision: flaggit1-old\n  images:\n    app: podinfo:6.0.0\n  commit: 0123abcd\n  at: 2026-11-01T00:00:00Z\n"
            ),
        )
    };
    let v1 = manifest("podinfo:6.0.1");
    let w = world("git-rebuild", &[(MANIFEST, &v1)]).await;
    let ns = w.rig.ns.name.clone();
    let (path, ledger) = repo_files(&ns);
    w.repo
        .human_commit(&[(&path, &ledger)], "ledger from before the rebuild");

    w.rig.healthy("podinfo").await;
    w.rig
        .deployments()
        .create(
            &PostParams::default(),
            &deployment("podinfo", "podinfo:6.0.1", None),
        )
        .await
        .expect("create the deployment");
    w.rig
        .canaries()
        .create(&PostParams::default(), &gitops_canary())
        .await
        .expect("create the canary");
    // The primary comes back at the promoted version, and 6.0.1 is analysed, not adopted.
    let start = Instant::now();
    while w
        .rig
        .deployments()
        .get_opt("podinfo-primary")
        .await
        .expect("read")
        .is_none()
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no primary");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.rig.image_of("podinfo-primary").await, "podinfo:6.0.0");
    let (_, weights) = w
        .rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    assert!(
        weights.contains(&25),
        "6.0.1 went through the analysis: {weights:?}"
    );
    assert_eq!(w.rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    let events = w.rig.events("podinfo").await;
    assert!(
        events.iter().any(|e| e.starts_with("Recovered podinfo")),
        "{events:#?}"
    );
    let kinds = wait_for("the records", Duration::from_secs(20), || {
        let k = kinds(&w.repo);
        k.contains(&"Promoted".to_string()).then_some(k)
    })
    .await;
    assert_eq!(kinds[0], "Recovered", "{kinds:?}");
    assert!(!kinds.contains(&"Initialized".to_string()), "{kinds:?}");
    let canary = w.rig.canaries().get("podinfo").await.expect("canary");
    assert!(canary.uid().is_some());
    w.rig.finish().await;
}

/// A human's commit on main while the controller pushes records too: a push the controller
/// got in first is refused, so the human pulls and pushes again, as a person would.
fn human_commit_while_recording(repo: &BareRepo, files: &[(&str, &str)], message: &str) {
    for _ in 0..20 {
        let work = repo.clone_work();
        for (path, content) in files {
            let file = work.path().join(path);
            std::fs::create_dir_all(file.parent().expect("file has a parent")).expect("mkdir");
            std::fs::write(&file, content).expect("write file");
        }
        git(work.path(), &["add", "--all"]);
        git(work.path(), &["commit", "--quiet", "-m", message]);
        if git_try(
            work.path(),
            &["push", "--quiet", "origin", "HEAD:refs/heads/main"],
        )
        .0
        {
            return;
        }
    }
    panic!("the human could not push {message:?} in 20 tries");
}

/// Polls `check` until it answers, as `wait_for` does, for checks that talk to the API server.
async fn wait_for_async<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The canary's `status.gitops`, as the API server has it now.
async fn gitops_status(rig: &Rig) -> Option<flaggit::api::GitOpsStatus> {
    rig.canaries()
        .get("podinfo")
        .await
        .ok()?
        .status?
        .gitops
        .map(|g| *g)
}

/// Warning events on `name` whose message contains `text`: (message, count).
async fn events_saying(rig: &Rig, name: &str, text: &str) -> Vec<(String, i32)> {
    let api: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(rig.canaries().into_client(), &rig.ns.name);
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| Some((e.message?, e.count.unwrap_or(1))))
        .filter(|(message, _)| message.contains(text))
        .collect()
}

#[tokio::test]
async fn a_repository_the_namespace_is_not_allowed_is_refused_in_status_and_one_event() {
    let v0 = manifest("podinfo:6.0.0");
    let w = world("git-refused", &[(MANIFEST, &v0)]).await;
    let ns = w.rig.ns.name.clone();
    let mut canary = gitops_canary();
    // Another team's repository, with a token written as the URL's user.
    canary.spec.gitops = Some(Box::new(GitOpsSpec {
        repository: Some(flaggit::api::GitRepositoryRef {
            url: "https://ghp_SECRETTOKEN@git.example/team-b/config.git".into(),
            ..Default::default()
        }),
        path: Some("apps/podinfo".into()),
        ..Default::default()
    }));
    w.rig.initialize_podinfo(canary).await;
    let message = wait_for_async(
        "the refusal in status.gitops.message",
        Duration::from_secs(30),
        || async {
            gitops_status(&w.rig)
                .await?
                .message
                .filter(|m| m.contains("not allowed"))
        },
    )
    .await;
    assert!(
        message.contains("spec.gitops.repository https://git.example/team-b/config.git is not allowed")
            && message.contains(&format!("namespace {ns}"))
            && message.contains("--git-allow"),
        "{message}"
    );
    assert!(!message.contains("SECRETTOKEN"), "{message}");

    // The rollout goes on without records; more reconciles say nothing new.
    w.rig.set_image("podinfo", "podinfo:6.0.1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Progressing, Duration::from_secs(60))
        .await;
    let events = events_saying(&w.rig, "podinfo", "not allowed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, 1, "one event, not one per reconcile: {events:?}");
    assert!(!events[0].0.contains("SECRETTOKEN"), "{events:?}");
    assert_eq!(
        w.repo.show("main", &format!(".flaggit/{ns}/podinfo.yaml")),
        None,
        "nothing is written anywhere"
    );
    w.rig.finish().await;
}

#[tokio::test]
async fn a_rollback_edits_only_the_canarys_manifest_and_none_when_two_could_be_it() {
    let tagged = |tag: &str| {
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: team-b\nresources:\n  - deployment.yaml\nimages:\n  - name: podinfo\n    newTag: {tag}\n"
        )
    };
    let copy = "apps/podinfo/copy/deployment.yaml";
    let team_b = "apps/podinfo/team-b/kustomization.yaml";
    let w = world(
        "git-whose",
        &[
            (MANIFEST, &manifest("podinfo:6.0.0")),
            // A manifest nothing places in the canary's namespace, and another team's
            // kustomization on the same image.
            (copy, &manifest("podinfo:6.0.0")),
            (team_b, &tagged("6.0.0")),
            ("apps/podinfo/team-b/deployment.yaml", &manifest("podinfo")),
        ],
    )
    .await;
    let ns = w.rig.ns.name.clone();
    w.rig.initialize_podinfo(gitops_canary()).await;
    w.rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    let repo = &w.repo;
    let rolled_back = |n: usize| {
        move || {
            let kinds = kinds(repo);
            (kinds.iter().filter(|k| *k == "RolledBack").count() >= n).then_some(())
        }
    };

    // 6.0.1 fails: only the canary's manifest goes back to 6.0.0.
    human_commit_while_recording(
        &w.repo,
        &[
            (MANIFEST, &manifest("podinfo:6.0.1")),
            (copy, &manifest("podinfo:6.0.1")),
            (team_b, &tagged("6.0.1")),
        ],
        "bump podinfo to 6.0.1 everywhere",
    );
    w.rig.set_image("podinfo", "podinfo:6.0.1").await;
    wait_for(
        "the first rollback record",
        Duration::from_secs(120),
        rolled_back(1),
    )
    .await;
    assert_eq!(w.repo.show("main", MANIFEST), Some(manifest("podinfo:6.0.0")));
    assert_eq!(
        w.repo.show("main", copy),
        Some(manifest("podinfo:6.0.1")),
        "not the canary's"
    );
    assert_eq!(
        w.repo.show("main", team_b),
        Some(tagged("6.0.1")),
        "another team's"
    );

    // 6.0.2 fails, and a second file now declares the target in its namespace: neither is
    // edited, and both are named.
    let again = "apps/podinfo/again.yaml";
    let declared = manifest("podinfo:6.0.2").replace(
        "  name: podinfo\n",
        &format!("  name: podinfo\n  namespace: {ns}\n"),
    );
    human_commit_while_recording(
        &w.repo,
        &[(MANIFEST, &manifest("podinfo:6.0.2")), (again, &declared)],
        "bump podinfo to 6.0.2, twice",
    );
    w.rig.set_image("podinfo", "podinfo:6.0.2").await;
    wait_for(
        "the second rollback record",
        Duration::from_secs(120),
        rolled_back(2),
    )
    .await;
    assert_eq!(w.repo.show("main", MANIFEST), Some(manifest("podinfo:6.0.2")));
    assert_eq!(w.repo.show("main", again), Some(declared));
    let last_error = wait_for_async("lastError naming both files", Duration::from_secs(30), || async {
        gitops_status(&w.rig)
            .await?
            .last_error
            .filter(|e| e.contains("more than one file"))
    })
    .await;
    assert!(
        last_error.contains(&format!("({again}, {MANIFEST})")) && last_error.contains("edited none"),
        "{last_error}"
    );
    let events = wait_for_async("the event naming both files", Duration::from_secs(30), || async {
        let events = events_saying(&w.rig, "podinfo", "more than one file").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].0.contains(again) && events[0].0.contains(MANIFEST),
        "{events:?}"
    );
    w.rig.finish().await;
}

/// A Deployment `name` as the config repo declares it.
fn manifest_of(name: &str, image: &str) -> String {
    manifest(image).replace("podinfo", name)
}

fn gitops_canary_of(name: &str) -> Canary {
    let mut canary = canary_of(name, Provider::Istio, stepping(25, 50));
    canary.spec.gitops = Some(Box::new(GitOpsSpec {
        path: Some(format!("apps/{name}")),
        ..Default::default()
    }));
    canary
}

/// Whether the controller process still serves its health endpoint.
fn alive(rig: &Rig) -> bool {
    rig.flaggit()
        .get("/healthz")
        .is_some_and(|(status, _)| status == 200)
}

#[tokio::test]
async fn a_hostile_file_next_to_the_target_is_refused_and_the_controller_goes_on() {
    // 200 KB of `- - - ...`: a tree 100,000 levels deep, which overflowed the stack when dropped.
    let deep = "- ".repeat(100_000);
    const DEEP: &str = "apps/podinfo/deep.yaml";
    const GOOD: &str = "apps/good/deployment.yaml";
    let v0 = manifest("podinfo:6.0.0");
    let good_v0 = manifest_of("good", "good:1.0.0");
    let w = world("git-hostile", &[(MANIFEST, &v0), (DEEP, &deep), (GOOD, &good_v0)]).await;
    let ns = w.rig.ns.name.clone();
    w.rig.initialize_podinfo(gitops_canary_of("podinfo")).await;
    w.rig.healthy("good").await;
    w.rig
        .create(deployment("good", "good:1.0.0", None), gitops_canary_of("good"))
        .await;
    w.rig
        .wait_phase("good", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;

    // podinfo 6.0.1 fails and is rolled back: the writer reads every YAML file of the path.
    w.rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    w.repo
        .human_commit(&[(MANIFEST, &manifest("podinfo:6.0.1"))], "bump podinfo to 6.0.1");
    w.rig.set_image("podinfo", "podinfo:6.0.1").await;
    w.rig
        .wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(90))
        .await;
    let podinfo = format!("{ns}/podinfo");
    wait_for("the rollback record", Duration::from_secs(60), || {
        records(&w.repo)
            .into_iter()
            .find(|(_, t)| t["Flaggit-Kind"] == "RolledBack" && t["Flaggit-Canary"] == podinfo)
    })
    .await;
    assert!(
        alive(&w.rig),
        "the controller survived the file:\n{}",
        w.rig.flaggit().log()
    );
    assert_eq!(
        w.repo.show("main", DEEP).as_deref(),
        Some(deep.as_str()),
        "a file that cannot be parsed is never written"
    );
    assert_eq!(
        w.repo.show("main", MANIFEST).expect("manifest"),
        manifest("podinfo:6.0.0"),
        "the target's own manifest is still written back"
    );
    let start = Instant::now();
    loop {
        let canary = w.rig.canaries().get("podinfo").await.expect("canary");
        let error = canary
            .status
            .and_then(|s| s.gitops)
            .and_then(|g| g.last_error)
            .unwrap_or_default();
        if error.contains(DEEP) {
            assert!(error.contains("levels deep"), "{error}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "lastError does not name the file: {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = w.rig.events("podinfo").await;
    assert!(
        events
            .iter()
            .any(|e| e.contains(DEEP) && e.contains("never overwrites")),
        "{events:#?}"
    );

    // Another canary's release goes on and reaches Git, through the same writer.
    w.repo.human_commit(
        &[(GOOD, &manifest_of("good", "good:1.0.1"))],
        "bump good to 1.0.1",
    );
    w.rig.set_image("good", "good:1.0.1").await;
    w.rig
        .wait_phase("good", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let good = format!("{ns}/good");
    wait_for("good's promotion record", Duration::from_secs(60), || {
        records(&w.repo)
            .iter()
            .any(|(_, t)| t["Flaggit-Kind"] == "Promoted" && t["Flaggit-Canary"] == good)
            .then_some(())
    })
    .await;
    assert!(alive(&w.rig), "{}", w.rig.flaggit().log());
    assert_eq!(w.repo.show("main", DEEP).as_deref(), Some(deep.as_str()));
    w.rig.finish().await;
}

/// A pre-receive hook that refuses pushes to `main` over `git daemon` (which sets
/// REMOTE_ADDR; a person's local push is let through) with GitHub's words.
pub(crate) fn protect_main(repo: &BareRepo) {
    let hook = repo.path.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  if [ -n \"$REMOTE_ADDR\" ] && [ \"$ref\" = refs/heads/main ]; then\n    echo \"error: GH006: Protected branch update failed for refs/heads/main.\" >&2\n    echo \"error: At least 1 approving review is required by reviewers with write access.\" >&2\n    exit 1\n  fi\ndone\nexit 0\n",
    )
    .expect("write the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod the hook");
}

fn unprotect(repo: &BareRepo) {
    std::fs::remove_file(repo.path.join("hooks/pre-receive")).expect("remove the hook");
}

#[tokio::test]
async fn a_protected_branch_is_reported_as_such_not_retried_as_a_race() {
    let v0 = manifest("podinfo:6.0.0");
    let w = world("git-protected", &[(MANIFEST, &v0)]).await;
    protect_main(&w.repo);
    let seeded = w.repo.head("main");
    w.rig.initialize_podinfo(gitops_canary()).await;
    let start = Instant::now();
    let error = loop {
        let canary = w.rig.canaries().get("podinfo").await.expect("canary");
        let error = canary
            .status
            .and_then(|s| s.gitops)
            .and_then(|g| g.last_error)
            .unwrap_or_default();
        if !error.is_empty() {
            break error;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no lastError:\n{}",
            w.rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(error.contains("refused by a rule of the server"), "{error}");
    assert!(error.contains("GH006: Protected branch update failed"), "{error}");
    assert!(!error.contains("others keep pushing"), "{error}");
    let start = Instant::now();
    loop {
        let events = w.rig.events("podinfo").await;
        if events
            .iter()
            .any(|e| e.contains("branch protection") && e.contains("GH006"))
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no event: {events:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.repo.head("main"), seeded, "nothing was pushed to main");

    // Once the rule is lifted the waiting record goes out: refusal backs off, it does not wedge.
    unprotect(&w.repo);
    wait_for("the first record", Duration::from_secs(90), || {
        (kinds(&w.repo) == ["Initialized"]).then_some(())
    })
    .await;
    w.rig.finish().await;
}
