//! Traffic providers through the running controller: what a provider cannot do is refused
//! once, every provider string shows in `kubectl get canary`, and a hand edit of a routing
//! object flaggit owns is put back by the watch, not at the next resync.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flaggit::api::{Canary, CanaryPhase, HttpMatchRequest, ParentReference, Provider, StringMatch};
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::rollout::{Rig, canary_of, deployment, stepping};
use crate::support::control_plane;

/// The canary's `Ready` condition once it is False, waiting for it.
pub(crate) async fn wait_refused(rig: &Rig, name: &str) -> flaggit::api::CanaryCondition {
    let start = Instant::now();
    loop {
        let canary = rig.canaries().get(name).await.expect("canary");
        if let Some(ready) = canary
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready" && c.status == "False"))
        {
            return ready;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} was never refused; log:\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The warning events on `name` with `reason`, with their counts.
pub(crate) async fn events_with_reason(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Vec<(String, i32)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| (e.message.unwrap_or_default(), e.count.unwrap_or(1)))
        .collect()
}

fn ab_match() -> Vec<HttpMatchRequest> {
    vec![HttpMatchRequest {
        headers: Some(BTreeMap::from([(
            "x-canary".to_string(),
            StringMatch {
                exact: Some("insider".into()),
                ..Default::default()
            },
        )])),
        ..Default::default()
    }]
}

/// A provider that cannot do what the Canary asks: one condition naming the field, one
/// event, nothing generated, no rollout; fixing the spec lets it initialize.
#[tokio::test]
async fn a_canary_asking_too_much_of_its_provider_is_refused_once() {
    let rig = Rig::with_args("traffic-refuse", &[]).await;
    rig.healthy("podinfo").await;
    let ab = |mut a: flaggit::api::CanaryAnalysis| {
        a.iterations = Some(3);
        a.step_weight = None;
        a.match_ = Some(ab_match());
        a
    };
    let mirrored = |mut a: flaggit::api::CanaryAnalysis| {
        a.iterations = Some(3);
        a.step_weight = None;
        a.mirror = Some(true);
        a
    };
    let cases = [
        (
            "podinfo",
            Provider::Kubernetes,
            ab(stepping(10, 50)),
            "spec.analysis.match",
            "kubernetes provider",
        ),
        (
            "smi-ab",
            Provider::Linkerd,
            ab(stepping(10, 50)),
            "spec.analysis.match",
            "linkerd provider",
        ),
        (
            "osm-ab",
            Provider::SmiV1alpha2,
            ab(stepping(10, 50)),
            "spec.analysis.match",
            "smi:v1alpha2 provider",
        ),
        (
            "nginx-mirror",
            Provider::Nginx,
            mirrored(stepping(10, 50)),
            "spec.analysis.mirror",
            "nginx provider",
        ),
    ];
    for (name, provider, analysis, _, _) in &cases {
        rig.create(
            deployment(name, "podinfo:6.0.0", None),
            canary_of(name, *provider, analysis.clone()),
        )
        .await;
    }
    for (name, _, _, field, words) in &cases {
        let ready = wait_refused(&rig, name).await;
        assert_eq!(ready.reason.as_deref(), Some("UnsupportedByProvider"), "{name}");
        let message = ready.message.unwrap_or_default();
        assert!(message.contains(field), "{name}: {message}");
        assert!(message.contains(words), "{name}: {message}");
        let canary = rig.canaries().get(name).await.expect("canary");
        let status = canary.status.expect("status");
        assert_eq!(status.phase, Some(CanaryPhase::Initializing), "{name}");
        assert_eq!(status.canary_weight, Some(0), "{name}");
        // Nothing was generated.
        let primary = format!("{name}-primary");
        assert!(
            rig.deployments().get_opt(&primary).await.expect("get").is_none(),
            "{name}"
        );
        let services: Api<Service> = Api::namespaced(rig.client.clone(), &rig.ns.name);
        assert!(services.get_opt(&primary).await.expect("get").is_none(), "{name}");
    }

    // Another canary initializes meanwhile; by then a refusal re-run on a timer would have
    // published (or counted) the event again.
    rig.healthy("good").await;
    rig.create(
        deployment("good", "good:1", None),
        canary_of("good", Provider::Istio, stepping(50, 50)),
    )
    .await;
    rig.wait_phase("good", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;
    for (name, ..) in &cases {
        let events = events_with_reason(&rig.client, &rig.ns.name, name, "UnsupportedByProvider").await;
        assert_eq!(events.len(), 1, "{name}: {events:#?}");
        assert_eq!(events[0].1, 1, "{name}: the event was repeated: {events:#?}");
        let primary = format!("{name}-primary");
        assert!(
            rig.deployments().get_opt(&primary).await.expect("get").is_none(),
            "{name}"
        );
    }

    // Without the match it is a plain Blue/Green canary, which the provider can run.
    rig.canaries()
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "analysis": { "match": null } } })),
        )
        .await
        .expect("drop the match");
    rig.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;
    rig.finish().await;
}

/// Every provider string of Flagger's enum: a canary with it shows a phase and a weight in
/// `kubectl get canary`.
#[tokio::test]
async fn every_provider_string_shows_in_kubectl_get_canary() {
    let rig = Rig::with_args("traffic-all", &[]).await;
    rig.healthy("app").await;
    for provider in Provider::ALL {
        let name = format!("p-{}", provider.as_str().replace(':', "-"));
        let mut canary: Canary = canary_of(&name, provider, stepping(10, 50));
        let service = canary.spec.service.as_mut().expect("service");
        service.gateway_refs = Some(vec![ParentReference {
            name: "gateway".into(),
            namespace: Some("istio-ingress".into()),
            ..Default::default()
        }]);
        rig.create(deployment(&name, "app:1", None), canary).await;
    }
    let cp = control_plane();
    let start = Instant::now();
    loop {
        let table = cp.kubectl_ok(&["get", "canary", "-n", &rig.ns.name], None);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        // NAME STATUS WEIGHT LASTTRANSITIONTIME: four columns once all are filled in.
        let complete = rows.len() == Provider::ALL.len() && rows.iter().all(|r| r.len() == 4);
        if complete {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "blank columns:\n{table}\nlog:\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rig.finish().await;
}

fn virtual_services(client: &Client, ns: &str) -> Api<DynamicObject> {
    let (group, version, kind, plural) = flaggit::router::VIRTUAL_SERVICE;
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, version, kind),
        plural,
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// A hand edit of the VirtualService of an idle canary (weights and hosts) is put back by
/// the routing-object watch, well before the five-minute resync.
#[tokio::test]
async fn a_hand_edit_of_a_routing_object_is_put_back() {
    let rig = Rig::with_args("traffic-drift", &[]).await;
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, stepping(10, 50)))
        .await;
    let api = virtual_services(&rig.client, &rig.ns.name);
    let live = api.get("podinfo").await.expect("VirtualService");
    let mut spec = live.data["spec"].clone();
    spec["hosts"] = json!(["elsewhere.example.com"]);
    spec["http"][0]["route"][0]["weight"] = json!(50);
    spec["http"][0]["route"][1]["weight"] = json!(50);
    let mut edited = live.clone();
    edited.data["spec"] = spec;
    let edited_at = Instant::now();
    api.replace("podinfo", &PostParams::default(), &edited)
        .await
        .expect("hand edit");
    let reverted = loop {
        let vs = api.get("podinfo").await.expect("VirtualService");
        let spec = &vs.data["spec"];
        if spec["hosts"] == json!(["podinfo"])
            && spec["http"][0]["route"][0]["weight"] == json!(100)
            && spec["http"][0]["route"][1]["weight"] == json!(0)
        {
            break edited_at.elapsed();
        }
        assert!(
            edited_at.elapsed() < Duration::from_secs(60),
            "the edit stayed: {spec:#}\nlog:\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("VirtualService hand edit reverted after {reverted:?}");
    rig.finish().await;
}
