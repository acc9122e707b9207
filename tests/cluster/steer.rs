//! `flaggit status / pause / resume / rollback / retry / promote` against the real API server,
//! as real ServiceAccount identities (TokenRequest tokens): RBAC decides who may, a refusal
//! says why, the Git record names the caller, and `kubectl flaggit` runs the same binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use flaggit::api::{CanaryPhase, GitOpsSpec, Provider};

use crate::git_remote::{BareRepo, GitDaemon, TempDir, git};
use crate::gitops::wait_for;
use crate::rollout::{Rig, canary_of, stepping};
use crate::support::{control_plane, repo};

const MANIFEST: &str = "apps/podinfo/deployment.yaml";

fn manifest(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
    )
}

/// A ServiceAccount `name` in `namespace` and a kubeconfig with a token of it.
async fn user(client: &Client, namespace: &str, name: &str, dir: &Path) -> PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create the ServiceAccount");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a token for the ServiceAccount")
        .status
        .expect("the token")
        .token;
    let admin = std::fs::read_to_string(&control_plane().kubeconfig).expect("kubeconfig");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&admin).expect("yaml");
    for entry in doc["users"].as_sequence_mut().expect("users") {
        entry["user"]["token"] = serde_yaml::Value::String(token.clone());
    }
    let path = dir.join(format!("kubeconfig-{name}"));
    std::fs::write(&path, serde_yaml::to_string(&doc).expect("yaml")).expect("write kubeconfig");
    path
}

fn flaggit(kubeconfig: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("FLAGGIT_GIT_URL")
        .output()
        .expect("flaggit runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (kind, trailers) of the flaggit records on `main`, oldest first.
fn records(repo: &BareRepo) -> Vec<BTreeMap<String, Vec<String>>> {
    let log = git(&repo.path, &["log", "--reverse", "--format=%B%n--end--", "main"]);
    log.split("--end--\n")
        .map(|entry| {
            let mut trailers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in entry.lines().filter_map(|l| l.split_once(": ")) {
                if k.starts_with("Flaggit-") {
                    trailers.entry(k.into()).or_default().push(v.into());
                }
            }
            trailers
        })
        .filter(|t| !t.is_empty())
        .collect()
}

#[tokio::test]
async fn commands_from_the_command_line_obey_rbac_and_name_the_caller_in_git() {
    let cp = control_plane();
    // The shipped roles: flaggit-cli (send commands) and flaggit-canary-operator (the verbs).
    cp.kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            repo().join("manifests/namespace.yaml").to_str().expect("utf-8"),
            "-f",
            repo().join("manifests/rbac.yaml").to_str().expect("utf-8"),
        ],
        None,
    );
    let git_repo = BareRepo::new(
        "config",
        &BTreeMap::from([(MANIFEST, manifest("podinfo:6.0.0").as_str())]),
    );
    let daemon = GitDaemon::start(&git_repo.root);
    let cache = TempDir::new("flaggit-cache");
    let args = vec![
        "--git-url".to_string(),
        daemon.url(&git_repo),
        "--git-cache-dir".to_string(),
        cache.path().display().to_string(),
        "--git-batch-window".to_string(),
        "100ms".to_string(),
    ];
    let rig = Rig::with_args("steer", &args).await;
    let ns = rig.ns.name.clone();
    // What a Flux Kustomization of apps/podinfo renders: the manifest (which names no
    // namespace) placed in the test namespace, so a rollback knows it is the target's.
    git_repo.human_commit(
        &[(crate::gitops::PLACEMENT, &crate::gitops::placement(&ns))],
        "place apps/podinfo in its namespace",
    );
    let id = format!("{ns}/podinfo");
    let mut analysis = stepping(2, 50);
    analysis.interval = Some("2s".into());
    let mut canary = canary_of("podinfo", Provider::Istio, analysis);
    canary.spec.gitops = Some(Box::new(GitOpsSpec {
        path: Some("apps/podinfo".into()),
        ..Default::default()
    }));
    rig.initialize_podinfo(canary).await;

    // alice may steer canaries in this namespace, carol may only send commands, dave neither.
    let dir = TempDir::new("steer-users");
    let alice = user(&rig.client, &ns, "alice", dir.path()).await;
    let carol = user(&rig.client, &ns, "carol", dir.path()).await;
    let dave = user(&rig.client, &ns, "dave", dir.path()).await;
    let sa = |name: &str| format!("system:serviceaccount:{ns}:{name}");
    for name in ["alice", "carol"] {
        cp.kubectl_ok(
            &[
                "create",
                "clusterrolebinding",
                &format!("flaggit-cli-{ns}-{name}"),
                "--clusterrole=flaggit-cli",
                &format!("--serviceaccount={ns}:{name}"),
            ],
            None,
        );
    }
    cp.kubectl_ok(
        &[
            "-n",
            &ns,
            "create",
            "rolebinding",
            "alice-steers",
            "--clusterrole=flaggit-canary-operator",
            &format!("--serviceaccount={ns}:alice"),
        ],
        None,
    );
    cp.kubectl_ok(
        &[
            "-n",
            &ns,
            "create",
            "rolebinding",
            "everyone-reads",
            "--clusterrole=flaggit-canaries-reader",
            &format!("--serviceaccount={ns}:carol"),
            &format!("--serviceaccount={ns}:dave"),
        ],
        None,
    );

    // Nothing to roll back yet: refused by the release's rules, not by RBAC.
    let early = flaggit(&alice, &["rollback", &id, "--timeout", "60s"]);
    assert!(!early.status.success(), "{}", text(&early));
    assert!(
        text(&early).contains("nothing to roll back: the release is Initialized"),
        "{}",
        text(&early)
    );

    // A release starts; alice pauses it and it holds its step.
    git_repo.human_commit(&[(MANIFEST, &manifest("podinfo:6.0.1"))], "bump podinfo to 6.0.1");
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    rig.wait_phase("podinfo", CanaryPhase::Progressing, Duration::from_secs(60))
        .await;
    // promote approves the step the release is at, and waits until the canary moves on.
    let promoted = flaggit(&alice, &["promote", &id, "--timeout", "90s"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    assert!(
        String::from_utf8_lossy(&promoted.stdout).contains("accepted: approves confirm-traffic-increase"),
        "{}",
        text(&promoted)
    );
    let paused = flaggit(&alice, &["pause", &id, "--timeout", "60s"]);
    assert!(paused.status.success(), "{}", text(&paused));
    assert!(
        String::from_utf8_lossy(&paused.stdout).contains("holds the release at its current step"),
        "{}",
        text(&paused)
    );
    let holding = format!("paused by {} with `flaggit pause`", sa("alice"));
    let mut held_at = None;
    for _ in 0..300 {
        let events = rig.events("podinfo").await;
        if events.iter().any(|e| e.contains(&holding)) {
            held_at = rig
                .canaries()
                .get("podinfo")
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.canary_weight);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_at = held_at.expect("a Halt event names who paused the release");

    // `flaggit status` shows the hold; `kubectl flaggit` is the same program.
    let plugins = TempDir::new("kubectl-plugins");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_flaggit"),
        plugins.path().join("kubectl-flaggit"),
    )
    .expect("link kubectl-flaggit");
    let path = format!(
        "{}:{}",
        plugins.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = std::process::Command::new(cp.kube_bin.join("kubectl"))
        .args(["flaggit", "status", &id])
        .env("KUBECONFIG", &carol)
        .env("PATH", &path)
        .output()
        .expect("kubectl flaggit runs");
    assert!(status.status.success(), "{}", text(&status));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.starts_with(&format!("{id}  Progressing weight {held_at}/50")),
        "{shown}"
    );
    assert!(shown.contains(&format!("paused by {}", sa("alice"))), "{shown}");

    // carol may not roll back: a clear refusal, and nothing changes.
    let refused = flaggit(&carol, &["rollback", &id, "--reason", "I think it is broken"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    let message = text(&refused);
    assert!(
        message.contains(&format!(
            "refused: {} may not rollback canary {id}: RBAC grants no verb `rollback`",
            sa("carol")
        )) && message.contains("flaggit-canary-operator"),
        "{message}"
    );
    // dave may not even send commands.
    let unsent = flaggit(&dave, &["pause", &id]);
    assert!(!unsent.status.success());
    assert!(
        text(&unsent).contains("you may not send flaggit commands"),
        "{}",
        text(&unsent)
    );
    let canary = rig.canaries().get("podinfo").await.expect("canary");
    let status = canary.status.expect("status");
    assert_eq!(status.phase, Some(CanaryPhase::Progressing));
    assert_eq!(status.canary_weight, Some(held_at), "paused: no step was taken");

    // alice rolls back, with a reason; the command waits until the canary has failed.
    let resumed = flaggit(&alice, &["resume", &id]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let rolled = flaggit(
        &alice,
        &[
            "rollback",
            &id,
            "--reason",
            "latency alerts in eu-west",
            "--timeout",
            "90s",
        ],
    );
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert!(
        String::from_utf8_lossy(&rolled.stdout).contains(&format!("{id}  Failed")),
        "{}",
        text(&rolled)
    );
    let rollback = wait_for("the rollback record", Duration::from_secs(30), || {
        records(&git_repo)
            .into_iter()
            .find(|t| t.get("Flaggit-Kind").is_some_and(|k| k[0] == "RolledBack"))
    })
    .await;
    assert_eq!(
        rollback["Flaggit-Reason"],
        [format!(
            "manual rollback requested: rollback requested by {} with `flaggit rollback`: latency alerts in eu-west",
            sa("alice")
        )],
        "{rollback:?}"
    );
    let commands: Vec<String> = records(&git_repo)
        .into_iter()
        .flat_map(|t| t.get("Flaggit-Command").cloned().unwrap_or_default())
        .collect();
    for expected in [
        format!(
            "{} flaggit promote accepted: approves confirm-traffic-increase",
            sa("alice")
        ),
        format!("{} flaggit pause accepted", sa("alice")),
        format!("{} flaggit rollback refused", sa("carol")),
        format!("{} flaggit resume accepted", sa("alice")),
        format!("{} flaggit rollback accepted", sa("alice")),
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(&expected)),
            "{expected} in {commands:#?}"
        );
    }
    assert_eq!(
        git_repo.show("main", MANIFEST).as_deref(),
        Some(manifest("podinfo:6.0.0").as_str()),
        "the rollback wrote the serving image back"
    );

    // carol may not retry; alice may, and the release runs again.
    let refused = flaggit(&carol, &["retry", &id]);
    assert!(text(&refused).contains("may not retry"), "{}", text(&refused));
    let retried = flaggit(&alice, &["retry", &id, "--timeout", "90s"]);
    assert!(retried.status.success(), "{}", text(&retried));
    let retried = String::from_utf8_lossy(&retried.stdout);
    assert!(retried.contains(&format!("retry of {id} accepted")), "{retried}");
    assert!(retried.contains(&format!("{id}  Progressing")), "{retried}");
    let all = flaggit(&carol, &["status", "-n", &ns]);
    assert!(all.status.success(), "{}", text(&all));
    let table = String::from_utf8_lossy(&all.stdout);
    assert!(table.starts_with("CANARY "), "{table}");
    assert!(table.contains(&format!("{id}  Progressing")), "{table}");
    rig.finish().await;
}
