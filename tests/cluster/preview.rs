//! The preview on a person's pull request that changes a canary's target in the config repo:
//! `flaggit run` with a loopback GitHub, GitLab or Gitea over a real bare repository (the
//! world of [`forge_flows`](crate::forge_flows)), the primary's traffic in the test
//! Prometheus, and an HPA that scales the target. The comment shows the plan, the metric check
//! run against the primary now, and the warning about `spec.replicas`; a second push edits the
//! same comment. One test body, [`preview_flow`], runs on each forge.

use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

use flaggit::api::{ApprovalGate, AutoscalerKind, AutoscalerRef, ForgeKind};
use flaggit::forge::preview::PREVIEW_MARKER;

use crate::fake_forge::BOT_LOGIN;
use crate::forge_flows::{Note, World, name_forge, world};
use crate::git_remote::{TempDir, git};
use crate::gitops::wait_for;
use crate::metrics_app::{metrics_app, prometheus};
use crate::pull_requests::{AUTHOR, MANIFEST, kinds, manifest, pr_canary};
use crate::rollout::{stepping, success_rate_where};

/// The manifest a person proposes: a new image, and `replicas` although an HPA scales it.
fn proposed(image: &str) -> String {
    manifest(image).replace("spec:\n  selector:", "spec:\n  replicas: 3\n  selector:")
}

/// A person pushes `content` of the manifest to `branch` (from main the first time).
fn push_branch(w: &World, work: &TempDir, branch: &str, content: &str, message: &str) {
    let dir = work.path();
    if !dir.join(".git").exists() {
        git(
            dir,
            &["clone", "--quiet", w.repo.path.to_str().expect("utf-8"), "."],
        );
        git(dir, &["checkout", "--quiet", "-b", branch]);
    }
    std::fs::write(dir.join(MANIFEST), content).expect("write the manifest");
    git(dir, &["commit", "--quiet", "-am", message]);
    git(
        dir,
        &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")],
    );
}

fn previews(w: &World, pr: u64) -> Vec<Note> {
    w.fake
        .notes(pr)
        .into_iter()
        .filter(|c| c.body.starts_with(PREVIEW_MARKER))
        .collect()
}

#[tokio::test]
async fn a_pull_request_changing_the_target_gets_one_preview_updated_on_each_push() {
    preview_flow(ForgeKind::Github).await;
}

#[tokio::test]
async fn a_merge_request_changing_the_target_gets_one_preview_updated_on_each_push_on_gitlab() {
    preview_flow(ForgeKind::Gitlab).await;
}

#[tokio::test]
async fn a_pull_request_changing_the_target_gets_one_preview_updated_on_each_push_on_gitea() {
    preview_flow(ForgeKind::Gitea).await;
}

/// The whole preview flow on forge `kind`.
async fn preview_flow(kind: ForgeKind) {
    let w = world(&format!("pr-preview-{}", kind.as_str()), kind).await;
    let ns = w.rig.ns.name.clone();
    // The primary serves well right now: 20 requests a second, no errors.
    metrics_app().set(
        &ns,
        "podinfo-primary",
        "podinfo-primary-5f6d7c-a1b2c",
        20.0,
        0.0,
        10,
    );
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo-primary", ">= 99"),
            Duration::from_secs(60),
        )
        .await;
    // An HPA scales the target.
    let client = crate::support::control_plane().client().await;
    let gvk = GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    let hpas: Api<DynamicObject> = Api::namespaced_with(
        client,
        &ns,
        &ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers"),
    );
    let hpa: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        }
    }))
    .expect("an HPA");
    hpas.create(&PostParams::default(), &hpa)
        .await
        .expect("create the HPA");
    let mut canary = pr_canary(vec![ApprovalGate::ConfirmPromotion], 1, stepping(25, 50));
    canary.spec.autoscaler_ref = Some(AutoscalerRef {
        api_version: "autoscaling/v2beta2".into(),
        kind: AutoscalerKind::HorizontalPodAutoscaler,
        name: "podinfo".into(),
        ..Default::default()
    });
    name_forge(&mut canary, kind);
    w.rig.initialize_podinfo(canary).await;
    wait_for("the Initialized record on main", Duration::from_secs(60), || {
        kinds(&w.repo, "main")
            .contains(&"Initialized".to_string())
            .then_some(())
    })
    .await;

    // A person proposes podinfo 6.0.1 in a pull request of their own.
    let work = TempDir::new("preview-work");
    push_branch(
        &w,
        &work,
        "bump-podinfo",
        &proposed("podinfo:6.0.1"),
        "bump podinfo to 6.0.1",
    );
    let pr = w
        .fake
        .open_pull_as(AUTHOR, "bump-podinfo", "main", "Bump podinfo");
    let first = wait_for("the preview comment", Duration::from_secs(120), || {
        previews(&w, pr).into_iter().next()
    })
    .await;
    assert_eq!(first.author, BOT_LOGIN);
    let body = &first.body;
    eprintln!("the preview comment:\n{body}");
    for line in [
        format!("#### `{ns}/podinfo` (`Deployment/podinfo`)"),
        "Sets app: podinfo\\:6.0.0 → podinfo\\:6.0.1 in apps\\/podinfo\\/deployment.yaml.".to_string(),
        "| Strategy | canary: traffic weights 25% → 50%, then promotion |".to_string(),
        "| Interval | `1s` |".to_string(),
        "| Gates | `confirm-promotion` (`/approve`) |".to_string(),
        "| Approvers needed | 1 approval from users with write permission or more |".to_string(),
        "| Expected duration | at least 3s (3 intervals), plus the wait at its gates |".to_string(),
        "**Metric checks against the primary now** (`podinfo-primary`):".to_string(),
        "- `request-success-rate` 100 % ≥ 99 — would pass ✅".to_string(),
        "apps\\/podinfo\\/deployment.yaml sets `spec.replicas: 3` on `Deployment/podinfo`, which `HorizontalPodAutoscaler/podinfo` scales".to_string(),
    ] {
        assert!(body.contains(&line), "{line:?} in the preview:\n{body}");
    }

    // A second push: the same comment, edited to the new head.
    push_branch(&w, &work, "bump-podinfo", &proposed("podinfo:6.0.2"), "no, 6.0.2");
    let edited = wait_for("the preview of the second push", Duration::from_secs(120), || {
        previews(&w, pr)
            .into_iter()
            .find(|c| c.body.contains("podinfo\\:6.0.2"))
    })
    .await;
    assert_eq!(edited.id, first.id, "the preview is edited in place");
    assert_ne!(edited.updated_at, edited.created_at);
    // Polls at the same head change nothing: still one comment, unchanged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = previews(&w, pr);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].body, edited.body);
    assert!(
        !w.fake.pulls().iter().any(|p| p.head.starts_with("flaggit/")),
        "nothing was released"
    );
    metrics_app().stop(&ns, "podinfo-primary", "podinfo-primary-5f6d7c-a1b2c");
    w.finish().await;
}
