//! The App Mesh, Kuma and Knative providers through the running controller, with their real
//! CRDs: the shared lifecycle (initialization, a hand edit put back, a promotion and a
//! rollback with exact weights, off-boarding), A/B on App Mesh, a capability refusal, and
//! server-side apply of the typed objects. Knative has no controller here: a stand-in
//! plays Knative Serving's part (revisions, their readiness and `status.traffic`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flaggit::api::{Canary, CanaryAnalysis, CanaryPhase, HttpMatchRequest, Provider, StringMatch};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::provider_support::{RoutingObject, lifecycle, record_until, success_rate_check, wait_until};
use crate::rollout::{Rig, analysis, canary_of, deployment};
use crate::support::control_plane;
use crate::traffic::{events_with_reason, wait_refused};

fn dynamic_api(
    client: &Client,
    ns: Option<&str>,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn virtual_routers(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic_api(
        client,
        Some(ns),
        "appmesh.k8s.aws",
        "v1beta2",
        "VirtualRouter",
        "virtualrouters",
    )
}

fn traffic_routes(client: &Client) -> Api<DynamicObject> {
    dynamic_api(
        client,
        None,
        "kuma.io",
        "v1alpha1",
        "TrafficRoute",
        "trafficroutes",
    )
}

/// The weights of `targets` (App Mesh weighted targets) for the podinfo nodes.
fn node_weights(targets: &Value) -> Option<(i64, i64)> {
    let weight = |name: &str| {
        targets
            .as_array()?
            .iter()
            .find(|t| t["virtualNodeRef"]["name"] == name)
            .and_then(|t| t["weight"].as_i64())
    };
    Some((weight("podinfo-primary")?, weight("podinfo-canary")?))
}

/// The App Mesh VirtualRouter `podinfo` (its first route has the weights).
#[derive(Clone, Copy, Debug)]
struct AppMeshRouter;

#[async_trait::async_trait]
impl RoutingObject for AppMeshRouter {
    async fn weights(&self, client: &Client, ns: &str) -> Option<(i64, i64)> {
        let router = virtual_routers(client, ns).get("podinfo").await.ok()?;
        node_weights(&router.data["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"])
    }

    async fn hand_edit(&self, client: &Client, ns: &str) {
        let api = virtual_routers(client, ns);
        let mut router = api.get("podinfo").await.expect("VirtualRouter");
        router.data["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"] = json!([
            { "virtualNodeRef": { "name": "podinfo-canary" }, "weight": 50 },
            { "virtualNodeRef": { "name": "podinfo-primary" }, "weight": 50 },
        ]);
        api.replace("podinfo", &PostParams::default(), &router)
            .await
            .expect("hand edit");
    }

    async fn owners(&self, client: &Client, ns: &str) -> Option<Vec<String>> {
        let router = virtual_routers(client, ns).get_opt("podinfo").await.ok()??;
        Some(router.owner_references().iter().map(|r| r.uid.clone()).collect())
    }
}

/// The cluster-scoped Kuma TrafficRoute `podinfo.<ns>`.
#[derive(Clone, Copy, Debug)]
struct KumaRoute;

#[async_trait::async_trait]
impl RoutingObject for KumaRoute {
    async fn weights(&self, client: &Client, ns: &str) -> Option<(i64, i64)> {
        let route = traffic_routes(client).get(&format!("podinfo.{ns}")).await.ok()?;
        let split = route.data["spec"]["conf"]["split"].as_array()?.clone();
        let weight = |service: &str| {
            split
                .iter()
                .find(|s| s["destination"]["kuma.io/service"] == format!("{service}_{ns}_svc_9898"))
                .and_then(|s| s["weight"].as_i64())
        };
        Some((weight("podinfo-primary")?, weight("podinfo-canary")?))
    }

    async fn hand_edit(&self, client: &Client, ns: &str) {
        let api = traffic_routes(client);
        let name = format!("podinfo.{ns}");
        let mut route = api.get(&name).await.expect("TrafficRoute");
        route.data["spec"]["conf"]["split"][0]["weight"] = json!(50);
        route.data["spec"]["conf"]["split"][1]["weight"] = json!(50);
        api.replace(&name, &PostParams::default(), &route)
            .await
            .expect("hand edit");
    }

    /// A cluster-scoped object has no owner reference: the Canary it belongs to is in its
    /// `flaggit.dev/canary` annotation.
    async fn owners(&self, client: &Client, ns: &str) -> Option<Vec<String>> {
        let route = traffic_routes(client)
            .get_opt(&format!("podinfo.{ns}"))
            .await
            .ok()??;
        assert!(
            route.owner_references().is_empty(),
            "no owner reference on a cluster-scoped object"
        );
        assert_eq!(route.data["mesh"], "default");
        Some(
            route
                .annotations()
                .get("flaggit.dev/canary")
                .cloned()
                .into_iter()
                .collect(),
        )
    }

    fn owner_id(&self, _uid: &str, ns: &str) -> String {
        format!("{ns}/podinfo")
    }
}

#[tokio::test]
async fn appmesh_v1beta2_lifecycle_with_revert_on_deletion() {
    lifecycle("prov-appmesh", Provider::AppMeshV1beta2, &AppMeshRouter, true).await;
}

#[tokio::test]
async fn appmesh_v1beta2_lifecycle_without_revert_on_deletion() {
    lifecycle(
        "prov-appmesh-keep",
        Provider::AppMeshV1beta2,
        &AppMeshRouter,
        false,
    )
    .await;
}

#[tokio::test]
async fn kuma_trafficroute_lifecycle_without_revert_on_deletion() {
    lifecycle("prov-kuma", Provider::Kuma, &KumaRoute, false).await;
}

#[tokio::test]
async fn kuma_trafficroute_lifecycle_with_revert_on_deletion() {
    lifecycle("prov-kuma-rev", Provider::Kuma, &KumaRoute, true).await;
}

fn header_match() -> Vec<HttpMatchRequest> {
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

/// App Mesh matches headers: an A/B run sends the matching requests to the canary through
/// route `podinfo-a`, everyone else to the primary through `podinfo-b`, and is promoted.
#[tokio::test]
async fn appmesh_v1beta2_ab_routes_matching_requests_then_promotes() {
    let rig = Rig::with_args("prov-appmesh-ab", &[]).await;
    let ns = rig.ns.name.clone();
    let canary_analysis = CanaryAnalysis {
        iterations: Some(3),
        match_: Some(header_match()),
        metrics: Some(vec![success_rate_check(&ns)]),
        ..analysis()
    };
    rig.initialize_podinfo(canary_of("podinfo", Provider::AppMeshV1beta2, canary_analysis))
        .await;
    // Everything Flagger writes is there, owned by the Canary.
    let uid = rig
        .canaries()
        .get("podinfo")
        .await
        .expect("canary")
        .uid()
        .expect("uid");
    for (kind, plural, names) in [
        (
            "VirtualNode",
            "virtualnodes",
            ["podinfo-primary", "podinfo-canary"],
        ),
        ("VirtualService", "virtualservices", ["podinfo", "podinfo-canary"]),
        ("VirtualRouter", "virtualrouters", ["podinfo", "podinfo-canary"]),
    ] {
        let api = dynamic_api(&rig.client, Some(&ns), "appmesh.k8s.aws", "v1beta2", kind, plural);
        for name in names {
            let object = api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
            let owners: Vec<_> = object.owner_references().iter().map(|r| r.uid.clone()).collect();
            assert_eq!(owners, std::slice::from_ref(&uid), "{kind} {name}");
        }
    }
    let nodes = dynamic_api(
        &rig.client,
        Some(&ns),
        "appmesh.k8s.aws",
        "v1beta2",
        "VirtualNode",
        "virtualnodes",
    );
    let primary = nodes.get("podinfo-primary").await.expect("node");
    assert_eq!(
        primary.data["spec"]["podSelector"],
        json!({ "matchLabels": { "app": "podinfo-primary" } })
    );
    assert_eq!(
        primary.data["spec"]["serviceDiscovery"]["dns"]["hostname"],
        format!("podinfo-primary.{ns}.svc.cluster.local.")
    );
    let routers = virtual_routers(&rig.client, &ns);
    let canary_router = routers.get("podinfo-canary").await.expect("router");
    assert_eq!(
        node_weights(&canary_router.data["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"]),
        Some((0, 100))
    );

    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let start = Instant::now();
    let routes = loop {
        let canary = rig.canaries().get("podinfo").await.expect("canary");
        if canary.status.as_ref().and_then(|s| s.iterations).unwrap_or(0) > 0 {
            break routers.get("podinfo").await.expect("router").data["spec"]["routes"].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(90), "no iteration started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(routes[0]["name"], "podinfo-a", "{routes:#}");
    assert_eq!(
        routes[0]["httpRoute"]["match"]["headers"],
        json!([{ "name": "x-canary", "match": { "exact": "insider" } }])
    );
    assert_eq!(
        node_weights(&routes[0]["httpRoute"]["action"]["weightedTargets"]),
        Some((0, 100))
    );
    assert_eq!(routes[1]["name"], "podinfo-b");
    assert_eq!(
        routes[1]["httpRoute"]["action"]["weightedTargets"],
        json!([{ "virtualNodeRef": { "name": "podinfo-primary" }, "weight": 100 }])
    );
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    assert_eq!(AppMeshRouter.weights(&rig.client, &ns).await, Some((100, 0)));
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    rig.finish().await;
}

/// Kuma's TrafficRoute has no header matching: an A/B Canary is refused (Flagger would send
/// every user to the canary), once, and nothing is generated.
#[tokio::test]
async fn kuma_refuses_ab_testing_once_and_generates_nothing() {
    let rig = Rig::with_args("prov-kuma-ab", &[]).await;
    let ns = rig.ns.name.clone();
    let canary_analysis = CanaryAnalysis {
        iterations: Some(3),
        match_: Some(header_match()),
        ..analysis()
    };
    rig.create(
        deployment("podinfo", "podinfo:6.0.0", None),
        canary_of("podinfo", Provider::Kuma, canary_analysis),
    )
    .await;
    let ready = wait_refused(&rig, "podinfo").await;
    assert_eq!(ready.reason.as_deref(), Some("UnsupportedByProvider"));
    let message = ready.message.unwrap_or_default();
    assert!(message.contains("spec.analysis.match"), "{message}");
    assert!(message.contains("kuma provider"), "{message}");
    assert!(
        traffic_routes(&rig.client)
            .get_opt(&format!("podinfo.{ns}"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        rig.deployments()
            .get_opt("podinfo-primary")
            .await
            .expect("get")
            .is_none()
    );
    // Touching the Canary's metadata (no spec change) re-reconciles it without a new event.
    rig.canaries()
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await
        .expect("touch");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = events_with_reason(&rig.client, &ns, "podinfo", "UnsupportedByProvider").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, 1, "{events:?}");
    rig.finish().await;
}

/// Applies `object` server-side (which, unlike create, refuses fields the schema does not
/// declare) and returns what the API server stored.
fn apply(object: &Value) -> Value {
    let applied = control_plane().kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=ssa-check",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(&object.to_string()),
    );
    serde_json::from_str(&applied).expect("json")
}

#[tokio::test]
async fn mesh_routing_objects_pass_server_side_apply_against_the_real_crds() {
    use flaggit::router::{
        RouterRole, Routes, appmesh_virtual_service_spec, new_traffic_route, traffic, virtual_node_spec,
        virtual_router_spec,
    };
    crate::support::install_routing_crds();
    let client = control_plane().client().await;
    let ns = crate::support::TestNamespace::create(&client, "prov-mesh-ssa").await;
    let mut canary: Canary = canary_of("podinfo", Provider::AppMeshV1beta2, analysis());
    canary.metadata.namespace = Some(ns.name.clone());
    let service = canary.spec.service.as_mut().expect("service");
    service.timeout = Some("15s".into());
    service.retries = Some(Box::new(flaggit::api::HttpRetry {
        attempts: Some(3),
        per_try_timeout: Some("5s".into()),
        retry_on: Some("server-error,gateway-error".into()),
    }));
    service.backends = Some(vec!["backend".into()]);
    let mut ab = canary.clone();
    ab.spec.analysis.as_mut().expect("analysis").iterations = Some(3);
    ab.spec.analysis.as_mut().expect("analysis").match_ = Some(header_match());

    let appmesh = |kind: &str, name: &str, spec: Value| {
        json!({
            "apiVersion": "appmesh.k8s.aws/v1beta2",
            "kind": kind,
            "metadata": { "name": name, "namespace": ns.name },
            "spec": spec,
        })
    };
    let node = virtual_node_spec(
        &canary,
        "podinfo-primary",
        BTreeMap::from([("app".to_string(), "podinfo-primary".to_string())]),
    )
    .expect("node");
    let node = serde_json::to_value(&node).expect("json");
    assert_eq!(
        apply(&appmesh("VirtualNode", "podinfo-primary", node.clone()))["spec"],
        node
    );
    for (c, role, routes) in [
        (&canary, RouterRole::Apex, Routes::canary(30)),
        (&canary, RouterRole::Canary, Routes::PRIMARY),
        (&ab, RouterRole::Apex, Routes::canary(100)),
    ] {
        let spec = serde_json::to_value(virtual_router_spec(c, role, routes).expect("router")).expect("json");
        assert_eq!(
            apply(&appmesh("VirtualRouter", "podinfo", spec.clone()))["spec"],
            spec,
            "{role:?}"
        );
    }
    let vs = serde_json::to_value(appmesh_virtual_service_spec("podinfo")).expect("json");
    assert_eq!(
        apply(&appmesh("VirtualService", "podinfo", vs.clone()))["spec"],
        vs
    );

    // Kuma: the whole object, `mesh` beside `spec`; cluster-scoped.
    let mut kuma = canary.clone();
    kuma.spec.provider = Some(Provider::Kuma);
    let route = serde_json::to_value(new_traffic_route(&kuma).expect("route")).expect("json");
    let applied = apply(&route);
    assert_eq!(applied["spec"], route["spec"]);
    assert_eq!(applied["mesh"], "default");
    assert_eq!(applied["metadata"].get("namespace"), None);
    traffic_routes(&client)
        .delete(&format!("podinfo.{}", ns.name), &DeleteParams::default())
        .await
        .expect("delete the TrafficRoute");

    // Knative: the traffic flaggit writes into a Service.
    let traffic = serde_json::to_value(traffic("podinfo-00001", Routes::canary(40))).expect("json");
    let knative = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": { "name": "podinfo", "namespace": ns.name },
        "spec": {
            "template": { "spec": { "containers": [{ "image": "podinfo:6.0.0" }] } },
            "traffic": traffic,
        },
    });
    assert_eq!(apply(&knative)["spec"]["traffic"], traffic);

    // The example Canaries are valid Canaries.
    for example in [
        "appmesh.yaml",
        "appmesh-v1beta2.yaml",
        "kuma.yaml",
        "knative.yaml",
    ] {
        let path = crate::support::repo().join("examples/providers").join(example);
        let text = std::fs::read_to_string(&path).expect("example");
        let text = text.replace("namespace: test", &format!("namespace: {}", ns.name));
        control_plane().kubectl_ok(&["apply", "--dry-run=server", "-f", "-"], Some(&text));
    }
    ns.delete(&client).await;
}

fn knative_services(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic_api(
        client,
        Some(ns),
        "serving.knative.dev",
        "v1",
        "Service",
        "services",
    )
}

fn knative_revisions(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic_api(
        client,
        Some(ns),
        "serving.knative.dev",
        "v1",
        "Revision",
        "revisions",
    )
}

/// The Knative Service `podinfo`: `spec.traffic` has the weights, the primary revision is in
/// its `flagger.app/primary-revision` annotation.
#[derive(Clone, Copy, Debug)]
struct KnativeTraffic;

#[async_trait::async_trait]
impl RoutingObject for KnativeTraffic {
    async fn weights(&self, client: &Client, ns: &str) -> Option<(i64, i64)> {
        let service = knative_services(client, ns).get("podinfo").await.ok()?;
        let primary = service.annotations().get("flagger.app/primary-revision")?.clone();
        let traffic = service.data["spec"]["traffic"].as_array()?.clone();
        let canary = traffic.iter().find(|t| t["latestRevision"] == true)?["percent"].as_i64()?;
        let primary = traffic
            .iter()
            .find(|t| t["latestRevision"] != true && t["revisionName"] == primary.as_str())?["percent"]
            .as_i64()?;
        Some((primary, canary))
    }

    async fn hand_edit(&self, client: &Client, ns: &str) {
        let api = knative_services(client, ns);
        let mut service = api.get("podinfo").await.expect("Knative Service");
        let primary = service.annotations()["flagger.app/primary-revision"].clone();
        service.data["spec"]["traffic"] = json!([
            { "latestRevision": true, "percent": 50 },
            { "revisionName": primary, "percent": 50 },
        ]);
        api.replace("podinfo", &PostParams::default(), &service)
            .await
            .expect("hand edit");
    }

    async fn owners(&self, client: &Client, ns: &str) -> Option<Vec<String>> {
        let service = knative_services(client, ns).get_opt("podinfo").await.ok()??;
        Some(
            service
                .annotations()
                .get("flagger.app/primary-revision")
                .cloned()
                .into_iter()
                .collect(),
        )
    }
}

/// Plays Knative Serving for the Services of `ns`: a new Revision `<name>-0000<n>` (ready)
/// for each new template, and a status naming the latest revision and the traffic of
/// `spec.traffic` resolved to revisions, at the Service's generation.
fn fake_knative_serving(client: Client, ns: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let services = knative_services(&client, &ns);
        let revisions = knative_revisions(&client, &ns);
        let mut made: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        loop {
            for service in services
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let name = service.name_any();
                let template = service.data["spec"]["template"].clone();
                let list = made.entry(name.clone()).or_default();
                if list.last() != Some(&template) {
                    list.push(template.clone());
                    let revision_name = format!("{name}-{:05}", list.len());
                    let mut revision = DynamicObject::new(
                        &revision_name,
                        &ApiResource::from_gvk_with_plural(
                            &GroupVersionKind::gvk("serving.knative.dev", "v1", "Revision"),
                            "revisions",
                        ),
                    );
                    revision.data = json!({ "spec": template["spec"] });
                    revisions
                        .create(&PostParams::default(), &revision)
                        .await
                        .expect("create the Revision");
                    revisions
                        .patch_status(
                            &revision_name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(json!({ "status": {
                                "observedGeneration": 1,
                                "conditions": [{ "type": "Ready", "status": "True" }],
                            }})),
                        )
                        .await
                        .expect("the Revision is ready");
                }
                let latest = format!("{name}-{:05}", list.len());
                let spec_traffic = service.data["spec"]["traffic"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let traffic: Vec<Value> = if spec_traffic.is_empty() {
                    vec![json!({ "revisionName": latest, "latestRevision": true, "percent": 100 })]
                } else {
                    spec_traffic
                        .iter()
                        .map(|t| {
                            if t["latestRevision"] == true {
                                json!({ "revisionName": latest, "latestRevision": true, "percent": t["percent"] })
                            } else {
                                json!({ "revisionName": t["revisionName"], "latestRevision": false, "percent": t["percent"] })
                            }
                        })
                        .collect()
                };
                let status = json!({
                    "observedGeneration": service.metadata.generation,
                    "latestCreatedRevisionName": latest,
                    "latestReadyRevisionName": latest,
                    "traffic": traffic,
                });
                if service.data.get("status") != Some(&status) {
                    let _ = services
                        .patch_status(
                            &name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(json!({ "status": status })),
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn knative_service(image: &str) -> Value {
    json!({ "spec": { "template": { "spec": { "containers": [{ "image": image }] } } } })
}

async fn set_knative_image(rig: &Rig, image: &str) {
    knative_services(&rig.client, &rig.ns.name)
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(knative_service(image)),
        )
        .await
        .expect("a new template");
}

/// The life of a Knative canary: the target is the Knative Service itself, no Services or
/// primary workload; the split is between the primary revision and the latest one.
async fn knative_lifecycle(prefix: &str, revert_on_deletion: bool) {
    let rig = Rig::with_args(prefix, &[]).await;
    let ns = rig.ns.name.clone();
    let serving = fake_knative_serving(rig.client.clone(), ns.clone());
    rig.healthy("podinfo").await;
    let mut service = DynamicObject::new(
        "podinfo",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("serving.knative.dev", "v1", "Service"),
            "services",
        ),
    );
    service.data = knative_service("podinfo:6.0.0");
    knative_services(&rig.client, &ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create the Knative Service");
    let mut canary_analysis = analysis();
    canary_analysis.metrics = Some(vec![success_rate_check(&ns)]);
    canary_analysis.step_weight = Some(20);
    canary_analysis.max_weight = Some(60);
    let mut canary = canary_of("podinfo", Provider::Knative, canary_analysis);
    canary.spec.target_ref.api_version = "serving.knative.dev/v1".into();
    canary.spec.target_ref.kind = flaggit::api::TargetKind::Service;
    canary.spec.revert_on_deletion = Some(revert_on_deletion);
    rig.canaries()
        .create(&PostParams::default(), &canary)
        .await
        .expect("create the canary");
    rig.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(90))
        .await;
    let object = KnativeTraffic;
    assert_eq!(object.weights(&rig.client, &ns).await, Some((100, 0)));
    assert_eq!(
        object.owners(&rig.client, &ns).await,
        Some(vec!["podinfo-00001".to_string()])
    );
    // No Services and no primary workload.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(rig.client.clone(), &ns);
    for name in ["podinfo", "podinfo-primary", "podinfo-canary"] {
        assert!(services.get_opt(name).await.expect("get").is_none(), "{name}");
    }
    assert!(
        rig.deployments()
            .get_opt("podinfo-primary")
            .await
            .expect("get")
            .is_none()
    );

    // A hand edit of the split is put back.
    object.hand_edit(&rig.client, &ns).await;
    wait_until(
        "the hand edit to be put back",
        Duration::from_secs(60),
        || async { object.weights(&rig.client, &ns).await == Some((100, 0)) },
    )
    .await;

    // A new revision steps 20, 40, 60 and is promoted: it becomes the primary revision.
    set_knative_image(&rig, "podinfo:6.0.1").await;
    let promoted = record_until(&rig, &object, CanaryPhase::Succeeded, Duration::from_secs(120)).await;
    assert_eq!(promoted, [(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)]);
    assert_eq!(
        object.owners(&rig.client, &ns).await,
        Some(vec!["podinfo-00002".to_string()])
    );
    let status = rig
        .canaries()
        .get("podinfo")
        .await
        .expect("canary")
        .status
        .expect("status");
    assert_eq!(
        status.last_applied_spec.as_deref(),
        Some("flaggit1-podinfo-00002")
    );

    // A failing revision is rolled back with no traffic left on it.
    rig.failing("podinfo");
    crate::metrics_app::prometheus()
        .wait_for_value(
            &crate::rollout::success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    set_knative_image(&rig, "podinfo:6.0.2").await;
    let rolled_back = record_until(&rig, &object, CanaryPhase::Failed, Duration::from_secs(120)).await;
    assert_eq!(rolled_back.first(), Some(&(100, 0)), "{rolled_back:?}");
    assert_eq!(rolled_back.last(), Some(&(100, 0)), "{rolled_back:?}");
    assert!(
        rolled_back.iter().all(|w| [(100, 0), (80, 20)].contains(w)),
        "{rolled_back:?}"
    );
    assert_eq!(
        object.owners(&rig.client, &ns).await,
        Some(vec!["podinfo-00002".to_string()])
    );

    // Off-boarding.
    rig.canaries()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete the canary");
    wait_until("the canary to go", Duration::from_secs(90), || async {
        rig.canaries().get_opt("podinfo").await.expect("get").is_none()
    })
    .await;
    let service = knative_services(&rig.client, &ns)
        .get("podinfo")
        .await
        .expect("service");
    if revert_on_deletion {
        // The Service serves its latest revision again, as without flaggit.
        assert_eq!(service.annotations().get("flagger.app/primary-revision"), None);
        assert_eq!(
            service.data["spec"]["traffic"],
            json!([{ "latestRevision": true, "percent": 100 }])
        );
    } else {
        // Left as Flagger leaves it: all traffic on the primary revision.
        assert_eq!(object.weights(&rig.client, &ns).await, Some((100, 0)));
        assert_eq!(
            object.owners(&rig.client, &ns).await,
            Some(vec!["podinfo-00002".to_string()])
        );
    }
    serving.abort();
    rig.finish().await;
}

#[tokio::test]
async fn knative_revisions_lifecycle_with_revert_on_deletion() {
    knative_lifecycle("prov-knative", true).await;
}

#[tokio::test]
async fn knative_revisions_lifecycle_without_revert_on_deletion() {
    knative_lifecycle("prov-knative-keep", false).await;
}
