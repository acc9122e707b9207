//! A Canary refused mid-rollout (its spec edited to ask its provider for something it cannot
//! do) gets all its traffic back on the primary at once, says weight 0, and resumes from 0
//! once the spec is fixed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use flaggit::api::{CanaryMetric, CanaryPhase, Provider, ThresholdRange};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::rollout::{Rig, canary_of, stepping, success_rate_where};
use crate::traffic::wait_refused;

/// (primary, canary) weights of the TrafficSplit `podinfo` (v1alpha1: quantity strings).
async fn weights(splits: &Api<DynamicObject>) -> Option<(i64, i64)> {
    let split = splits.get_opt("podinfo").await.ok()??;
    let backends = split.data["spec"]["backends"].as_array()?.clone();
    let weight = |service: &str| {
        backends
            .iter()
            .find(|b| b["service"] == service)
            .and_then(|b| b["weight"].as_str().and_then(|w| w.parse().ok()))
    };
    Some((weight("podinfo-primary")?, weight("podinfo-canary")?))
}

async fn wait_weights(rig: &Rig, splits: &Api<DynamicObject>, want: (i64, i64)) {
    let start = Instant::now();
    while weights(splits).await != Some(want) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the TrafficSplit never showed {want:?} (now {:?}); log:\n{}",
            weights(splits).await,
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_refusal_mid_rollout_routes_everything_back_to_the_primary() {
    let rig = Rig::with_args("refuse-mid", &[]).await;
    let ns = rig.ns.name.clone();
    let splits: Api<DynamicObject> = Api::namespaced_with(
        rig.client.clone(),
        &ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("split.smi-spec.io", "v1alpha1", "TrafficSplit"),
            "trafficsplits",
        ),
    );
    // Slow steps, so the rollout is caught with traffic on the canary.
    let mut analysis = stepping(20, 40);
    analysis.interval = Some("15s".into());
    analysis.metrics = Some(vec![CanaryMetric {
        name: "success-rate".into(),
        interval: Some("10s".into()),
        query: Some(success_rate_where(&ns, "podinfo", "")),
        threshold_range: Some(ThresholdRange {
            min: Some(99.0),
            max: None,
        }),
        ..Default::default()
    }]);
    rig.initialize_podinfo(canary_of("podinfo", Provider::Linkerd, analysis))
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    wait_weights(&rig, &splits, (80, 20)).await;

    // Asking linkerd for A/B mid-rollout: refused, and no traffic stays on the canary.
    rig.canaries()
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"analysis": {"match": [{"headers": {"x-canary": {"exact": "1"}}}]}}}),
            ),
        )
        .await
        .unwrap();
    let ready = wait_refused(&rig, "podinfo").await;
    assert_eq!(ready.reason.as_deref(), Some("UnsupportedByProvider"));
    assert_eq!(weights(&splits).await, Some((100, 0)));
    let status = rig.canaries().get("podinfo").await.unwrap().status.unwrap();
    assert_eq!(status.canary_weight, Some(0));

    // Fixed: the rollout goes on from 0 and is promoted.
    rig.canaries()
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"analysis": {"match": null}}})),
        )
        .await
        .unwrap();
    let (_, seen) = rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(150))
        .await;
    assert!(seen.contains(&20), "{seen:?}");
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    assert_eq!(weights(&splits).await, Some((100, 0)));
    rig.finish().await;
}

/// A Canary with `revertOnDeletion` (so a finalizer) switched to a provider flaggit cannot
/// route through is still deleted: the target serves again, the apex Service selects it, and
/// an event says the routes were left. While some provider string is unsupported.
#[tokio::test]
async fn deleting_a_canary_switched_to_a_provider_it_cannot_run_on_finishes() {
    // Every provider is routed; `knative` on a Deployment target is what cannot run.
    let unsupported = Provider::Knative;
    let rig = Rig::with_args("refuse-delete", &[]).await;
    let mut canary = canary_of("podinfo", Provider::Istio, stepping(20, 40));
    canary.spec.revert_on_deletion = Some(true);
    rig.initialize_podinfo(canary).await;
    let start = Instant::now();
    while !rig
        .canaries()
        .get("podinfo")
        .await
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default()
        .iter()
        .any(|f| f == "finalizer.flagger.app")
    {
        assert!(start.elapsed() < Duration::from_secs(60), "no finalizer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.canaries()
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"provider": unsupported.as_str()}})),
        )
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let log = rig.flaggit().log();
        if log.contains("spec.targetRef must name a Knative Service") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not refused; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    rig.canaries()
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    let start = Instant::now();
    while rig.canaries().get_opt("podinfo").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the deletion hangs; log:\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events =
        crate::traffic::events_with_reason(&rig.client, &rig.ns.name, "podinfo", "InvalidTarget").await;
    assert!(
        events
            .iter()
            .any(|(message, _)| message.contains("without its routes")
                && message.contains(unsupported.as_str())),
        "{events:#?}"
    );
    assert!(rig.replicas_of("podinfo").await > 0, "the target serves again");
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(rig.client.clone(), &rig.ns.name);
    let selector = services
        .get("podinfo")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert_eq!(selector.get("app").map(String::as_str), Some("podinfo"));
    rig.finish().await;
}
