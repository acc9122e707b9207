//! Several clusters on one config repository: two real control planes, each with its own
//! `flaggit run --cluster-name`, release the same app (same namespace and canary name) at the
//! same time through one `git daemon`. Each cluster has its own kustomize overlay.

use std::collections::BTreeMap;
use std::time::Duration;

use flaggit::api::{CanaryMetric, CanaryPhase, GitOpsSpec, Provider, ThresholdRange};

use crate::git_remote::{BareRepo, GitDaemon, TempDir, git};
use crate::gitops::wait_for;
use crate::metrics_app::prometheus;
use crate::rollout::{Rig, canary_of, deployment, stepping, success_rate_where};
use crate::support::{ControlPlane, TestNamespace, control_plane, second_control_plane};

const BASE: &str = "apps/podinfo/deployment.yaml";

fn base() -> String {
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n        - name: app\n          image: podinfo:6.0.0\n".to_string()
}

/// A cluster's overlay: the base plus its own image tag.
fn overlay(tag: &str) -> String {
    format!(
        "# this cluster's overlay\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../apps/podinfo\nimages:\n  - name: podinfo\n    newTag: \"{tag}\" # bumped by CI\n"
    )
}

/// (cluster, record number, kind) of every flaggit record on `main`, oldest first.
fn records(repo: &BareRepo) -> Vec<(String, i64, String)> {
    let log = git(&repo.path, &["log", "--reverse", "--format=%B%n--end--", "main"]);
    log.split("--end--\n")
        .filter_map(|entry| {
            let trailers: BTreeMap<&str, &str> = entry
                .lines()
                .filter_map(|l| l.split_once(": "))
                .filter(|(k, _)| k.starts_with("Flaggit-"))
                .collect();
            Some((
                trailers.get("Flaggit-Cluster")?.to_string(),
                trailers.get("Flaggit-Record")?.parse().ok()?,
                trailers.get("Flaggit-Kind")?.to_string(),
            ))
        })
        .collect()
}

fn of(records: &[(String, i64, String)], cluster: &str) -> (Vec<i64>, Vec<String>) {
    records
        .iter()
        .filter(|(c, _, _)| c == cluster)
        .map(|(_, n, k)| (*n, k.clone()))
        .unzip()
}

/// A rig for `cluster` on `cp`, writing to `url`.
async fn cluster(cp: &'static ControlPlane, namespace: &str, name: &str, url: &str, cache: &TempDir) -> Rig {
    let args: Vec<String> = [
        "--git-url",
        url,
        "--git-cache-dir",
        &cache.path().join(name).display().to_string(),
        "--git-batch-window",
        "100ms",
        "--cluster-name",
        name,
    ]
    .map(String::from)
    .to_vec();
    Rig::on(cp, namespace, &args).await
}

/// The canary of one cluster: its overlay as the GitOps path, its own success-rate floor.
fn canary(overlay: &str, min_success_rate: f64) -> flaggit::api::Canary {
    let mut analysis = stepping(25, 50);
    analysis.metrics = Some(vec![CanaryMetric {
        name: "request-success-rate".into(),
        interval: Some("10s".into()),
        threshold_range: Some(ThresholdRange {
            min: Some(min_success_rate),
            max: None,
        }),
        ..Default::default()
    }]);
    let mut canary = canary_of("podinfo", Provider::Istio, analysis);
    canary.spec.gitops = Some(Box::new(GitOpsSpec {
        path: Some(overlay.into()),
        ..Default::default()
    }));
    canary
}

fn flaggit(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args(args)
        .env_remove("KUBECONFIG")
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

#[tokio::test]
async fn two_clusters_release_the_same_app_into_one_repository_without_clobbering() {
    // The same namespace and canary name in both clusters.
    let namespace = TestNamespace::unique_name("fleet");
    let files = BTreeMap::from([
        (BASE, base()),
        (
            // The base places the app in its namespace, as a team's base would.
            "apps/podinfo/kustomization.yaml",
            format!("namespace: {namespace}\nresources:\n  - deployment.yaml\n"),
        ),
        ("clusters/a/kustomization.yaml", overlay("6.0.0")),
        ("clusters/b/kustomization.yaml", overlay("6.0.0")),
    ]);
    let files: BTreeMap<&str, &str> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let repo = BareRepo::new("fleet", &files);
    let daemon = GitDaemon::start(&repo.root);
    let url = daemon.url(&repo);
    let cache = TempDir::new("fleet-cache");
    let a = cluster(control_plane(), &namespace, "a", &url, &cache).await;
    let b = cluster(second_control_plane(), &namespace, "b", &url, &cache).await;

    // Both clusters share the metrics; "a" asks for 99% success, "b" for 10%.
    a.healthy("podinfo").await;
    tokio::join!(
        a.create(
            deployment("podinfo", "podinfo:6.0.0", None),
            canary("clusters/a", 99.0)
        ),
        b.create(
            deployment("podinfo", "podinfo:6.0.0", None),
            canary("clusters/b", 10.0)
        ),
    );
    tokio::join!(
        a.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(60)),
        b.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(60)),
    );

    // Half the requests fail from now on: "a" will roll back, "b" will promote.
    a.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&namespace, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    repo.human_commit(
        &[
            ("clusters/a/kustomization.yaml", &overlay("6.0.1")),
            ("clusters/b/kustomization.yaml", &overlay("6.0.1")),
        ],
        "podinfo 6.0.1 everywhere",
    );
    // Overlapping releases: both clusters apply 6.0.1 at once.
    tokio::join!(
        a.set_image("podinfo", "podinfo:6.0.1"),
        b.set_image("podinfo", "podinfo:6.0.1")
    );
    tokio::join!(
        a.wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(120)),
        b.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120)),
    );
    let all = wait_for("both clusters' last records", Duration::from_secs(30), || {
        let all = records(&repo);
        let done = |cluster: &str, kind: &str| all.iter().any(|(c, _, k)| c == cluster && k == kind);
        (done("a", "RolledBack") && done("b", "Promoted")).then_some(all)
    })
    .await;

    // Every record once, numbered per cluster, nothing of the other cluster's in between.
    let (numbers_a, kinds_a) = of(&all, "a");
    let (numbers_b, kinds_b) = of(&all, "b");
    assert_eq!(
        numbers_a,
        (1..=numbers_a.len() as i64).collect::<Vec<_>>(),
        "{all:?}"
    );
    assert_eq!(
        numbers_b,
        (1..=numbers_b.len() as i64).collect::<Vec<_>>(),
        "{all:?}"
    );
    assert_eq!(
        kinds_b,
        ["Initialized", "Detected", "Step", "Step", "Promoting", "Promoted"],
        "{all:?}"
    );
    assert_eq!(kinds_a.first().map(String::as_str), Some("Initialized"));
    assert_eq!(kinds_a.get(1).map(String::as_str), Some("Detected"));
    assert_eq!(kinds_a.last().map(String::as_str), Some("RolledBack"), "{all:?}");
    let subjects = git(&repo.path, &["log", "--format=%s", "main"]);
    assert!(
        subjects.contains(&format!(
            "rollout({namespace}/podinfo@a): roll back podinfo:6.0.1 to podinfo:6.0.0"
        )),
        "{subjects}"
    );
    assert!(
        subjects.contains(&format!("rollout({namespace}/podinfo@b): promoted podinfo:6.0.1")),
        "{subjects}"
    );

    // One ledger per cluster, none in the single-cluster place.
    let ledger = |cluster: &str| repo.show("main", &format!(".flaggit/{cluster}/{namespace}/podinfo.yaml"));
    let ledger_a = ledger("a").expect("a's ledger");
    let ledger_b = ledger("b").expect("b's ledger");
    assert!(
        ledger_a.contains("\ncluster: a\n") && ledger_a.contains("outcome: RolledBack"),
        "{ledger_a}"
    );
    assert!(
        ledger_b.contains("\ncluster: b\n") && ledger_b.contains("outcome: Promoted"),
        "{ledger_b}"
    );
    assert_ne!(
        ledger_a.lines().find(|l| l.starts_with("clusterUid:")),
        ledger_b.lines().find(|l| l.starts_with("clusterUid:")),
        "each cluster signs its ledger with its own kube-system uid"
    );
    assert_eq!(
        repo.show("main", &format!(".flaggit/{namespace}/podinfo.yaml")),
        None
    );

    // Each rollback edits only its own overlay; the base is never touched.
    assert_eq!(
        repo.show("main", "clusters/a/kustomization.yaml"),
        Some(overlay("6.0.0"))
    );
    assert_eq!(
        repo.show("main", "clusters/b/kustomization.yaml"),
        Some(overlay("6.0.1"))
    );
    assert_eq!(repo.show("main", BASE), Some(base()));

    // `flaggit history` shows the fleet side by side, or one cluster.
    let id = format!("{namespace}/podinfo");
    let (ok, table) = flaggit(&["history", &id, "--repo", &url]);
    assert!(ok, "{table}");
    let fleet: Vec<&str> = table.lines().take(3).collect();
    assert!(fleet[0].starts_with("CLUSTER  RUNS"), "{table}");
    assert!(
        fleet[1].starts_with("a ")
            && fleet[1].contains("app=podinfo:6.0.0")
            && fleet[1].contains("RolledBack"),
        "{table}"
    );
    assert!(
        fleet[2].starts_with("b ") && fleet[2].contains("app=podinfo:6.0.1") && fleet[2].contains("Promoted"),
        "{table}"
    );
    let (ok, json) = flaggit(&["history", &id, "--repo", &url, "--cluster", "a", "-o", "json"]);
    assert!(ok, "{json}");
    let only_a: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
    assert_eq!(only_a.len(), kinds_a.len());
    assert!(only_a.iter().all(|e| e["cluster"] == "a"), "{json}");

    // `flaggit ledger verify` against each cluster: its own ledger, the other side by side.
    let kubeconfig_b = second_control_plane().kubeconfig.display().to_string();
    let (ok, verify_b) = flaggit(&[
        "ledger",
        "verify",
        "--namespace",
        &namespace,
        "--kubeconfig",
        &kubeconfig_b,
        "--repo",
        &url,
    ]);
    assert!(ok, "{verify_b}");
    let row = verify_b.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains(&format!("{id}  b ")) && row.contains("a: runs app=podinfo:6.0.0 (RolledBack"),
        "found by the cluster's uid, with a's ledger beside it: {verify_b}"
    );
    let kubeconfig_a = control_plane().kubeconfig.display().to_string();
    let (ok, verify_a) = flaggit(&[
        "ledger",
        "verify",
        "--namespace",
        &namespace,
        "--kubeconfig",
        &kubeconfig_a,
        "--repo",
        &url,
        "--cluster",
        "a",
        "-o",
        "json",
    ]);
    assert!(ok, "{verify_a}");
    let verdicts: Vec<serde_json::Value> = serde_json::from_str(&verify_a).expect("json");
    assert_eq!(verdicts[0]["cluster"], "a");
    assert_eq!(verdicts[0]["fleet"][0]["cluster"], "b");

    // Cluster b is a stranger to a's ledger: verifying b's canary against it is a mismatch.
    let (mismatch, text) = flaggit(&[
        "ledger",
        "verify",
        "--namespace",
        &namespace,
        "--kubeconfig",
        &kubeconfig_b,
        "--repo",
        &url,
        "--cluster",
        "a",
    ]);
    assert!(!mismatch, "b runs 6.0.1, a's ledger says 6.0.0: {text}");
    a.finish().await;
    b.finish().await;
}
