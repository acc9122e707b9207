//! Config rollbacks in Git: a release caused by a ConfigMap change that is rolled back writes
//! the ConfigMap's data back to the config repo (served by `git daemon`); a changed Secret is
//! only named. Rebuild recovery gives the primary the promoted ConfigMap data from the ledger.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, EnvFromSource, Secret, SecretEnvSource};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use flaggit::api::CanaryPhase;

use crate::git_remote::{BareRepo, GitDaemon, TempDir, git};
use crate::gitops::{MANIFEST, gitops_canary, manifest, wait_for};
use crate::metrics_app::prometheus;
use crate::rollout::{Rig, deployment, success_rate_where};
use crate::support::{TestNamespace, control_plane};

const CONFIG: &str = "apps/podinfo/config.yaml";

/// The ConfigMap as the config repo declares it.
fn config_yaml(color: &str) -> String {
    format!(
        "# podinfo's settings\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo-config\ndata:\n  color: {color} # the UI colour\n  level: info\n"
    )
}

fn config_map(color: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("podinfo-config".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("color".to_string(), color.to_string()),
            ("level".to_string(), "info".to_string()),
        ])),
        ..Default::default()
    }
}

fn secret(password: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("podinfo-db".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".to_string(), password.to_string())])),
        ..Default::default()
    }
}

async fn rig(prefix: &str, url: &str, cache: &TempDir) -> Rig {
    let args: Vec<String> = [
        "--git-url",
        url,
        "--git-cache-dir",
        &cache.path().display().to_string(),
        "--git-batch-window",
        "100ms",
    ]
    .map(String::from)
    .to_vec();
    Rig::on(control_plane(), &TestNamespace::unique_name(prefix), &args).await
}

/// The podinfo Deployment using the ConfigMap (a volume) and the Secret (`envFrom`).
fn podinfo(image: &str) -> k8s_openapi::api::apps::v1::Deployment {
    let mut deployment = deployment("podinfo", image, Some("podinfo-config"));
    if let Some(spec) = deployment.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        spec.containers[0].env_from = Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "podinfo-db".into(),
                optional: None,
            }),
            ..Default::default()
        }]);
    }
    deployment
}

#[tokio::test]
async fn a_rolled_back_config_change_is_written_back_and_a_secret_is_only_named() {
    let files = BTreeMap::from([
        (MANIFEST, manifest("podinfo:6.0.0")),
        (CONFIG, config_yaml("blue")),
    ]);
    let files: BTreeMap<&str, &str> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let repo = BareRepo::new("config-rollback", &files);
    let daemon = GitDaemon::start(&repo.root);
    let cache = TempDir::new("config-rollback-cache");
    let rig = rig("git-config", &daemon.url(&repo), &cache).await;
    let ns = rig.ns.name.clone();
    let configs: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(rig.client.clone(), &ns);
    configs
        .create(&PostParams::default(), &config_map("blue"))
        .await
        .expect("create the ConfigMap");
    secrets
        .create(&PostParams::default(), &secret("hunter2"))
        .await
        .expect("create the Secret");
    rig.healthy("podinfo").await;
    rig.create(podinfo("podinfo:6.0.0"), gitops_canary()).await;
    rig.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;

    // A bad config release: the colour and the database password change, the checks fail.
    rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    repo.human_commit(&[(CONFIG, &config_yaml("red"))], "podinfo turns red");
    let mut red = configs.get("podinfo-config").await.expect("config");
    red.data = config_map("red").data;
    configs
        .replace("podinfo-config", &PostParams::default(), &red)
        .await
        .expect("apply the red config");
    let mut rotated = secrets.get("podinfo-db").await.expect("secret");
    rotated.data = None;
    rotated.string_data = secret("correct-horse").string_data;
    secrets
        .replace("podinfo-db", &PostParams::default(), &rotated)
        .await
        .expect("apply the new password");
    rig.wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(120))
        .await;

    // Git says blue again: only the value's bytes changed, in the rollback's own commit.
    let rollback = wait_for("the rollback record", Duration::from_secs(30), || {
        let log = git(&repo.path, &["log", "--format=%H %s", "main"]);
        log.lines()
            .find(|l| l.contains("roll back"))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
    })
    .await;
    assert_eq!(repo.show("main", CONFIG), Some(config_yaml("blue")));
    let diff = git(
        &repo.path,
        &[
            "diff",
            "--unified=0",
            &format!("{rollback}~1"),
            &rollback,
            "--",
            CONFIG,
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
        ["-  color: red # the UI colour", "+  color: blue # the UI colour"]
    );
    let message = git(&repo.path, &["log", "-1", "--format=%B", &rollback]);
    assert!(
        message.contains("Flaggit-Secret-Changed: podinfo-db"),
        "{message}"
    );
    assert!(
        message.contains("revert podinfo-db (or its SOPS-encrypted file)"),
        "{message}"
    );
    assert!(message.contains("apps/podinfo/config.yaml"), "{message}");
    // The Secret's data is nowhere in the repository.
    let everything = git(&repo.path, &["log", "-p", "--all"]);
    assert!(!everything.contains("hunter2") && !everything.contains("correct-horse"));
    // The event says so once.
    let events = rig.events("podinfo").await;
    let notes = events
        .iter()
        .filter(|e| e.starts_with("Secret podinfo-db changed in the failed release"))
        .count();
    assert_eq!(notes, 1, "{events:#?}");
    rig.finish().await;
}

#[tokio::test]
async fn a_rebuilt_cluster_gives_the_primary_the_promoted_config_back() {
    // The ledger remembers `blue` as promoted; the rebuilt cluster has `red` applied.
    let blue = config_map("blue").data.expect("data");
    let checksum = flaggit::workload::template::config_map_checksum(Some(&blue));
    let repo = BareRepo::new(
        "config-rebuild",
        &BTreeMap::from([(MANIFEST, manifest("podinfo:6.0.0").as_str())]),
    );
    let daemon = GitDaemon::start(&repo.root);
    let cache = TempDir::new("config-rebuild-cache");
    let rig = rig("git-config-rebuild", &daemon.url(&repo), &cache).await;
    let ns = rig.ns.name.clone();
    let ledger = format!(
        "canary: {ns}/podinfo\nuid: from-the-old-cluster\ntarget: Deployment/podinfo\nrecord: 4\npromoted:\n  revision: flaggit1-old\n  images:\n    app: podinfo:6.0.0\n  configs:\n    configmap/podinfo-config: {checksum}\n  configMaps:\n    podinfo-config:\n      color: blue\n      level: info\n  commit: 0123abcd\n  at: 2026-11-01T00:00:00Z\n"
    );
    repo.human_commit(
        &[(&format!(".flaggit/{ns}/podinfo.yaml"), &ledger)],
        "ledger from before the rebuild",
    );
    let configs: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &ns);
    configs
        .create(&PostParams::default(), &config_map("red"))
        .await
        .expect("create the ConfigMap");
    let secrets: Api<Secret> = Api::namespaced(rig.client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &secret("hunter2"))
        .await
        .expect("create the Secret");
    rig.healthy("podinfo").await;
    rig.create(podinfo("podinfo:6.0.0"), gitops_canary()).await;

    // The primary's copy holds the promoted `blue`, and `red` goes through the analysis.
    let start = std::time::Instant::now();
    loop {
        let copy = configs.get_opt("podinfo-config-primary").await.expect("read");
        let color = copy.and_then(|c| c.data).and_then(|d| d.get("color").cloned());
        if color.as_deref() == Some("blue") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the primary never got the promoted config back: {color:?}\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, weights) = rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    assert!(
        weights.contains(&25),
        "red went through the analysis: {weights:?}"
    );
    let copy = configs.get("podinfo-config-primary").await.expect("primary copy");
    assert_eq!(
        copy.data.and_then(|d| d.get("color").cloned()).as_deref(),
        Some("red"),
        "promoted after the analysis"
    );
    let events = rig.events("podinfo").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Recovered podinfo") && e.contains("ConfigMap podinfo-config")),
        "{events:#?}"
    );
    // The promotion's ledger keeps the data recovery needs.
    let written = wait_for("the promotion in the ledger", Duration::from_secs(30), || {
        repo.show("main", &format!(".flaggit/{ns}/podinfo.yaml"))
            .filter(|l| l.contains("outcome: Promoted"))
    })
    .await;
    assert!(
        written.contains("configMaps:\n    podinfo-config:\n      color: red"),
        "{written}"
    );
    rig.finish().await;
}
