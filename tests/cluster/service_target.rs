//! `targetRef.kind: Service` through the running controller: the target Service is the apex,
//! flaggit keeps `<target>-canary` (a copy brought up to date at every reconcile) and
//! `<target>-primary` (a copy brought up to date at promotion), and the router splits the
//! apex's traffic between them. A change to the target Service's spec is a new revision.
//! Here through Linkerd's TrafficSplit, with the real CRD; the target is never changed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flaggit::api::{CanaryMetric, CanaryPhase, Provider, TargetKind, ThresholdRange};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::metrics_app::prometheus;
use crate::rollout::{Rig, analysis, canary_of, success_rate_where};

/// The target: Service `podinfo` selecting `app: <version>` on port 9898, type NodePort so
/// that its node port must not be copied.
fn target_service(version: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("podinfo".into()),
            labels: Some(BTreeMap::from([
                ("app".to_string(), "podinfo".to_string()),
                ("kustomize.toolkit.fluxcd.io/name".to_string(), "apps".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            selector: Some(selector(version)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 9898,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The success rate of the podinfo pods, as a plain query (the metrics app's Istio series).
fn success_rate_check(ns: &str) -> CanaryMetric {
    CanaryMetric {
        name: "success-rate".into(),
        interval: Some("10s".into()),
        query: Some(success_rate_where(ns, "podinfo", "")),
        threshold_range: Some(ThresholdRange {
            min: Some(99.0),
            max: None,
        }),
        ..Default::default()
    }
}

fn selector(version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), version.to_string())])
}

async fn selector_of(services: &Api<Service>, name: &str) -> Option<BTreeMap<String, String>> {
    services.get_opt(name).await.ok()??.spec?.selector
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (primary, canary) weights of the TrafficSplit `podinfo`.
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

/// Polls until the canary reaches `phase`, returning the distinct weights seen.
async fn record_until(rig: &Rig, splits: &Api<DynamicObject>, phase: CanaryPhase) -> Vec<(i64, i64)> {
    let start = Instant::now();
    let mut seen: Vec<(i64, i64)> = Vec::new();
    loop {
        if let Some(w) = weights(splits).await
            && seen.last() != Some(&w)
        {
            seen.push(w);
        }
        let canary = rig.canaries().get("podinfo").await.expect("canary");
        if canary.status.and_then(|s| s.phase) == Some(phase) {
            if let Some(w) = weights(splits).await
                && seen.last() != Some(&w)
            {
                seen.push(w);
            }
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {phase:?} in 120 s; weights {seen:?}\nlog:\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn service_target_promotes_and_rolls_back_through_a_trafficsplit() {
    let rig = Rig::with_args("svc-target", &[]).await;
    let ns = rig.ns.name.clone();
    let services: Api<Service> = Api::namespaced(rig.client.clone(), &ns);
    let splits: Api<DynamicObject> = Api::namespaced_with(
        rig.client.clone(),
        &ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("split.smi-spec.io", "v1alpha1", "TrafficSplit"),
            "trafficsplits",
        ),
    );
    services
        .create(&PostParams::default(), &target_service("podinfo-v1"))
        .await
        .expect("create the target Service");
    let target_port = services
        .get("podinfo")
        .await
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()[0]
        .node_port;
    assert!(target_port.is_some(), "the API server allocated a node port");

    let mut canary_analysis = analysis();
    canary_analysis.metrics = Some(vec![success_rate_check(&ns)]);
    canary_analysis.step_weight = Some(20);
    canary_analysis.max_weight = Some(60);
    let mut canary = canary_of("podinfo", Provider::Linkerd, canary_analysis);
    canary.spec.target_ref.api_version = "v1".into();
    canary.spec.target_ref.kind = TargetKind::Service;
    rig.healthy("podinfo").await;
    rig.canaries()
        .create(&PostParams::default(), &canary)
        .await
        .expect("create the canary");
    rig.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;
    let uid = rig.canaries().get("podinfo").await.unwrap().uid().unwrap();

    // The copies: the target's spec, their own node ports, owned by the Canary, no Flux labels.
    for name in ["podinfo-primary", "podinfo-canary"] {
        let copy = services.get(name).await.expect(name);
        assert_eq!(
            copy.metadata.owner_references.as_ref().unwrap()[0].uid,
            uid,
            "{name}"
        );
        assert!(!copy.labels().keys().any(|k| k.contains("fluxcd")), "{name}");
        let spec = copy.spec.unwrap();
        assert_eq!(spec.selector, Some(selector("podinfo-v1")), "{name}");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_ne!(spec.ports.unwrap()[0].node_port, target_port, "{name}");
    }
    assert_eq!(weights(&splits).await, Some((100, 0)));
    // The target Service is the apex and is left alone.
    let target = services.get("podinfo").await.unwrap();
    assert_eq!(target.spec.unwrap().selector, Some(selector("podinfo-v1")));
    assert!(target.metadata.owner_references.is_none());

    // A new spec of the target Service is a new revision: the canary copy follows it at once,
    // traffic steps 20, 40, 60, and promotion copies it to the primary.
    services
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "podinfo-v2"}}})),
        )
        .await
        .unwrap();
    let promoted = record_until(&rig, &splits, CanaryPhase::Succeeded).await;
    assert_eq!(promoted, [(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)]);
    assert_eq!(
        selector_of(&services, "podinfo-primary").await,
        Some(selector("podinfo-v2"))
    );

    // A failing revision is rolled back: the primary keeps v2, no traffic left on v3.
    rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    services
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "podinfo-v3"}}})),
        )
        .await
        .unwrap();
    wait_for(
        "the canary copy to follow the target",
        Duration::from_secs(60),
        || async { selector_of(&services, "podinfo-canary").await == Some(selector("podinfo-v3")) },
    )
    .await;
    let rolled_back = record_until(&rig, &splits, CanaryPhase::Failed).await;
    assert_eq!(rolled_back.last(), Some(&(100, 0)), "{rolled_back:?}");
    assert_eq!(
        selector_of(&services, "podinfo-primary").await,
        Some(selector("podinfo-v2")),
        "never promoted"
    );

    // Deleting the Canary leaves the target Service as it is; the copies and the split go
    // with the Canary.
    rig.canaries()
        .delete("podinfo", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the copies to be collected", Duration::from_secs(90), || async {
        services.get_opt("podinfo-primary").await.unwrap().is_none()
            && services.get_opt("podinfo-canary").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        selector_of(&services, "podinfo").await,
        Some(selector("podinfo-v3"))
    );
    rig.finish().await;
}

#[tokio::test]
async fn service_target_example_is_accepted() {
    let cp = crate::support::control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let ns = crate::support::TestNamespace::create(&client, "svc-example").await;
    // In a namespace of this test's own (the example says `test`, which other tests use).
    let example =
        std::fs::read_to_string(crate::support::repo().join("examples/providers/service-target.yaml"))
            .unwrap();
    let example = example.replace("namespace: test", &format!("namespace: {}", ns.name));
    cp.kubectl_ok(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&example),
    );
    ns.delete(&client).await;
}
