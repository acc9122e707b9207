//! The gloo, traefik, apisix and skipper providers through the running controller, with the
//! real CRDs installed: initialization, a hand edit put back, a promoting rollout and a
//! rollback with the routing object's exact weights at each step, Gloo's A/B run, off-boarding
//! with and without `revertOnDeletion`, the refusal of A/B where the provider cannot match
//! headers, and the objects flaggit's types serialize server-side applied against the CRDs.

use std::collections::BTreeMap;
use std::time::Duration;

use flaggit::api::{
    Canary, CanaryPhase, CanaryWebhook, HookType, HttpMatchRequest, Provider, RouteRef, StringMatch,
    UpstreamRef,
};
use flaggit::router::Routes;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::provider_support::{
    RoutingObject, initialized, lifecycle, off_board, original_ingress, owner_uids, record_until, wait_until,
};
use crate::rollout::{Rig, analysis, canary_of, deployment, stepping};
use crate::support::control_plane;
use crate::traffic::{events_with_reason, wait_refused};

/// The routing object of each provider, read as raw JSON (independently of flaggit's types).
#[derive(Clone, Copy, Debug)]
enum Object {
    /// RouteTable `podinfo`, route 0.
    GlooRouteTable,
    /// TraefikService `podinfo`.
    TraefikService,
    /// ApisixRoute `podinfo-route-podinfo-canary`.
    ApisixRoute,
    /// Ingress `podinfo-canary`, annotation `zalando.org/backend-weights`.
    SkipperIngress,
}

fn dynamic(
    client: &Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn route_tables(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic(client, ns, "gateway.solo.io", "v1", "RouteTable", "routetables")
}

fn upstreams(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic(client, ns, "gloo.solo.io", "v1", "Upstream", "upstreams")
}

fn traefik_services(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic(
        client,
        ns,
        "traefik.io",
        "v1alpha1",
        "TraefikService",
        "traefikservices",
    )
}

fn apisix_routes(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic(
        client,
        ns,
        "apisix.apache.org",
        "v2",
        "ApisixRoute",
        "apisixroutes",
    )
}

const APISIX_COPY: &str = "podinfo-route-podinfo-canary";

fn primary_upstream(ns: &str) -> String {
    format!("{ns}-podinfo-primaryupstream-9898")
}

fn canary_upstream(ns: &str) -> String {
    format!("{ns}-podinfo-canaryupstream-9898")
}

/// (primary, canary) of a list of entries naming a target under `key` with a `weight`
/// (missing weight or entry: 0).
fn weights_of(
    entries: &[Value],
    key: impl Fn(&Value) -> Option<&str>,
    primary: &str,
    canary: &str,
) -> (i64, i64) {
    let weight = |name: &str| {
        entries
            .iter()
            .find(|e| key(e) == Some(name))
            .and_then(|e| e["weight"].as_i64())
            .unwrap_or(0)
    };
    (weight(primary), weight(canary))
}

impl Object {
    async fn get(self, client: &Client, ns: &str) -> Option<DynamicObject> {
        match self {
            Self::GlooRouteTable => route_tables(client, ns).get_opt("podinfo").await.ok()?,
            Self::TraefikService => traefik_services(client, ns).get_opt("podinfo").await.ok()?,
            Self::ApisixRoute => apisix_routes(client, ns).get_opt(APISIX_COPY).await.ok()?,
            Self::SkipperIngress => {
                let ingress = Api::<Ingress>::namespaced(client.clone(), ns)
                    .get_opt("podinfo-canary")
                    .await
                    .ok()??;
                Some(DynamicObject {
                    types: None,
                    metadata: ingress.metadata,
                    data: json!({}),
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl RoutingObject for Object {
    async fn prepare(&self, client: &Client, ns: &str, canary: &mut Canary) {
        match self {
            Self::GlooRouteTable => {
                // An Upstream whose connection settings the generated ones copy.
                let template: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "gloo.solo.io/v1",
                    "kind": "Upstream",
                    "metadata": { "name": "podinfo-settings", "namespace": ns },
                    "spec": {
                        "kube": { "serviceName": "unused", "serviceNamespace": ns, "servicePort": 80 },
                        "loadBalancerConfig": { "roundRobin": {} },
                        "httpProxyHostname": "proxy.example.com",
                        "useHttp2": true,
                    },
                }))
                .expect("an Upstream");
                upstreams(client, ns)
                    .create(&PostParams::default(), &template)
                    .await
                    .expect("create the settings Upstream");
                canary.spec.upstream_ref = Some(UpstreamRef {
                    api_version: "gloo.solo.io/v1".into(),
                    name: "podinfo-settings".into(),
                    ..Default::default()
                });
            }
            Self::TraefikService => {}
            Self::ApisixRoute => {
                let route: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "apisix.apache.org/v2",
                    "kind": "ApisixRoute",
                    "metadata": { "name": "podinfo-route", "namespace": ns, "labels": { "team": "a" } },
                    "spec": { "http": [{
                        "name": "main",
                        "match": { "hosts": ["app.example.com"], "paths": ["/*"] },
                        "backends": [{ "serviceName": "podinfo", "servicePort": 9898, "resolveGranularity": "service" }],
                    }]},
                }))
                .expect("an ApisixRoute");
                apisix_routes(client, ns)
                    .create(&PostParams::default(), &route)
                    .await
                    .expect("create the original ApisixRoute");
                canary.spec.route_ref = Some(RouteRef {
                    api_version: "apisix.apache.org/v2".into(),
                    name: "podinfo-route".into(),
                    ..Default::default()
                });
            }
            Self::SkipperIngress => {
                let annotations = BTreeMap::from([(
                    "zalando.org/skipper-predicate".to_string(),
                    "Method(\"GET\")".to_string(),
                )]);
                original_ingress(client, ns, annotations, canary).await;
            }
        }
    }

    async fn weights(&self, client: &Client, ns: &str) -> Option<(i64, i64)> {
        let object = self.get(client, ns).await?;
        let spec = &object.data["spec"];
        match self {
            Self::GlooRouteTable => {
                let destinations = spec["routes"][0]["routeAction"]["multi"]["destinations"].as_array()?;
                Some(weights_of(
                    destinations,
                    |d| d["destination"]["upstream"]["name"].as_str(),
                    &primary_upstream(ns),
                    &canary_upstream(ns),
                ))
            }
            Self::TraefikService => {
                let services = spec["weighted"]["services"].as_array()?;
                Some(weights_of(
                    services,
                    |s| s["name"].as_str(),
                    "podinfo-primary",
                    "podinfo-canary",
                ))
            }
            Self::ApisixRoute => {
                let backends = spec["http"][0]["backends"].as_array()?;
                Some(weights_of(
                    backends,
                    |b| b["serviceName"].as_str(),
                    "podinfo-primary",
                    "podinfo-canary",
                ))
            }
            Self::SkipperIngress => {
                let raw = object
                    .metadata
                    .annotations?
                    .get("zalando.org/backend-weights")?
                    .clone();
                let weights: BTreeMap<String, i64> = serde_json::from_str(&raw).ok()?;
                Some((*weights.get("podinfo-primary")?, *weights.get("podinfo-canary")?))
            }
        }
    }

    async fn hand_edit(&self, client: &Client, ns: &str) {
        let mut object = self.get(client, ns).await.expect("the routing object");
        match self {
            Self::GlooRouteTable => {
                for d in object.data["spec"]["routes"][0]["routeAction"]["multi"]["destinations"]
                    .as_array_mut()
                    .expect("destinations")
                {
                    d["weight"] = json!(50);
                }
                route_tables(client, ns)
                    .replace("podinfo", &PostParams::default(), &object)
                    .await
                    .expect("hand edit");
            }
            Self::TraefikService => {
                object.data["spec"]["weighted"]["services"] = json!([
                    { "name": "podinfo-primary", "namespace": ns, "port": 9898, "weight": 50 },
                    { "name": "podinfo-canary", "namespace": ns, "port": 9898, "weight": 50 },
                ]);
                traefik_services(client, ns)
                    .replace("podinfo", &PostParams::default(), &object)
                    .await
                    .expect("hand edit");
            }
            Self::ApisixRoute => {
                for b in object.data["spec"]["http"][0]["backends"]
                    .as_array_mut()
                    .expect("backends")
                {
                    b["weight"] = json!(50);
                }
                apisix_routes(client, ns)
                    .replace(APISIX_COPY, &PostParams::default(), &object)
                    .await
                    .expect("hand edit");
            }
            Self::SkipperIngress => {
                Api::<Ingress>::namespaced(client.clone(), ns)
                    .patch(
                        "podinfo-canary",
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "metadata": { "annotations": {
                            "zalando.org/backend-weights": r#"{"podinfo-canary":50,"podinfo-primary":50}"#,
                        }}})),
                    )
                    .await
                    .expect("hand edit");
            }
        }
    }

    async fn owners(&self, client: &Client, ns: &str) -> Option<Vec<String>> {
        Some(owner_uids(self.get(client, ns).await?.metadata))
    }
}

#[tokio::test]
async fn gloo_routetable_lifecycle_with_revert_on_deletion() {
    lifecycle("prov-gloo", Provider::Gloo, &Object::GlooRouteTable, true).await;
}

#[tokio::test]
async fn traefik_traefikservice_lifecycle_without_revert_on_deletion() {
    lifecycle("prov-traefik", Provider::Traefik, &Object::TraefikService, false).await;
}

#[tokio::test]
async fn apisix_canary_route_lifecycle_with_revert_on_deletion() {
    lifecycle("prov-apisix", Provider::Apisix, &Object::ApisixRoute, true).await;
}

#[tokio::test]
async fn skipper_canary_ingress_lifecycle_without_revert_on_deletion() {
    lifecycle("prov-skipper", Provider::Skipper, &Object::SkipperIngress, false).await;
}

/// The other off-boarding mode of each provider than its lifecycle test's.
#[tokio::test]
async fn ingress_providers_off_board_in_the_other_mode() {
    for (prefix, provider, object, revert) in [
        ("off-gloo", Provider::Gloo, Object::GlooRouteTable, false),
        ("off-traefik", Provider::Traefik, Object::TraefikService, true),
        ("off-apisix", Provider::Apisix, Object::ApisixRoute, false),
        ("off-skipper", Provider::Skipper, Object::SkipperIngress, true),
    ] {
        let (rig, _) = initialized(prefix, provider, &object, revert, |_| {}).await;
        off_board(&rig, provider, &object, revert).await;
        if matches!(object, Object::SkipperIngress | Object::ApisixRoute) {
            // The user's own Ingress or route is never touched.
            let original = match object {
                Object::SkipperIngress => Api::<Ingress>::namespaced(rig.client.clone(), &rig.ns.name)
                    .get("podinfo")
                    .await
                    .map(|i| i.metadata),
                _ => apisix_routes(&rig.client, &rig.ns.name)
                    .get("podinfo-route")
                    .await
                    .map(|r| r.metadata),
            };
            assert!(original.is_ok(), "{provider:?}: the original is still there");
        }
        rig.finish().await;
    }
}

/// Gloo: the generated Upstreams, and an A/B run that sends the matching users to the canary
/// on a first route while a second route keeps everyone else on the primary.
#[tokio::test]
async fn gloo_ab_run_routes_matching_users_and_keeps_the_rest_on_the_primary() {
    let ab = vec![HttpMatchRequest {
        headers: Some(BTreeMap::from([(
            "x-canary".to_string(),
            StringMatch {
                exact: Some("insider".into()),
                ..Default::default()
            },
        )])),
        ..Default::default()
    }];
    let (rig, uid) = initialized(
        "prov-gloo-ab",
        Provider::Gloo,
        &Object::GlooRouteTable,
        false,
        |c| {
            let a = c.spec.analysis.as_mut().expect("analysis");
            a.step_weight = None;
            a.max_weight = None;
            a.iterations = Some(3);
            a.match_ = Some(ab);
        },
    )
    .await;
    let ns = rig.ns.name.clone();

    // The Upstreams point at the generated Services, with their selectors and the settings
    // of spec.upstreamRef (Gloo's spelling of httpProxyHostname; no labels).
    let services: Api<Service> = Api::namespaced(rig.client.clone(), &ns);
    for (upstream, service) in [
        (primary_upstream(&ns), "podinfo-primary"),
        (canary_upstream(&ns), "podinfo-canary"),
    ] {
        let object = upstreams(&rig.client, &ns)
            .get(&upstream)
            .await
            .expect("Upstream");
        assert_eq!(owner_uids(object.metadata.clone()), vec![uid.clone()]);
        let selector = services
            .get(service)
            .await
            .expect("Service")
            .spec
            .and_then(|s| s.selector)
            .expect("selector");
        let spec = &object.data["spec"];
        assert_eq!(
            spec["kube"],
            json!({ "serviceName": service, "serviceNamespace": ns, "servicePort": 9898, "selector": selector }),
        );
        assert_eq!(spec["loadBalancerConfig"], json!({ "roundRobin": {} }));
        assert_eq!(spec["httpProxyHostname"], "proxy.example.com");
        assert_eq!(spec["useHttp2"], true);
        assert!(spec.get("labels").is_none(), "{spec}");
    }
    let expected_matchers = json!([{ "headers": [{ "name": "x-canary", "value": "insider" }] }]);
    let table = Object::GlooRouteTable
        .get(&rig.client, &ns)
        .await
        .expect("RouteTable");
    assert_eq!(table.data["spec"]["routes"][0]["matchers"], expected_matchers);

    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let seen = record_until(
        &rig,
        &Object::GlooRouteTable,
        CanaryPhase::Succeeded,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(seen, [(100, 0), (0, 100), (100, 0)]);
    // The fallback route sent everyone else to the primary all along (checked at the end;
    // route 1 is never rewritten with other weights).
    let table = Object::GlooRouteTable
        .get(&rig.client, &ns)
        .await
        .expect("RouteTable");
    let fallback = &table.data["spec"]["routes"][1];
    assert!(fallback.get("matchers").is_none(), "{fallback}");
    assert_eq!(
        weights_of(
            fallback["routeAction"]["multi"]["destinations"]
                .as_array()
                .expect("destinations"),
            |d| d["destination"]["upstream"]["name"].as_str(),
            &primary_upstream(&ns),
            &canary_upstream(&ns),
        ),
        (100, 0)
    );
    assert_eq!(table.data["spec"]["routes"][0]["matchers"], expected_matchers);
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    rig.finish().await;
}

/// Traefik: a change of the Canary mid-rollout (new apex labels) is written to the
/// TraefikService with the live weights kept; Flagger writes 100 for both services (50/50).
#[tokio::test]
async fn traefik_reconcile_mid_rollout_keeps_the_live_weights() {
    let (rig, _) = initialized(
        "prov-traefik-live",
        Provider::Traefik,
        &Object::TraefikService,
        false,
        |c| {
            let a = c.spec.analysis.as_mut().expect("analysis");
            // One step, then a promotion gate that never answers yes: the rollout holds at
            // 20 % while the spec changes.
            a.step_weight = Some(20);
            a.max_weight = Some(20);
            a.webhooks = Some(vec![CanaryWebhook {
                name: "closed-gate".into(),
                type_: Some(HookType::ConfirmPromotion),
                url: "http://127.0.0.1:9/closed".into(),
                ..Default::default()
            }]);
        },
    )
    .await;
    let ns = rig.ns.name.clone();
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    wait_until("the first step at 20 %", Duration::from_secs(120), || async {
        Object::TraefikService.weights(&rig.client, &ns).await == Some((80, 20))
    })
    .await;
    rig.canaries()
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "service": { "apex": { "labels": { "team": "payments" } } } } })),
        )
        .await
        .expect("label the apex");
    wait_until(
        "the new label on the TraefikService",
        Duration::from_secs(60),
        || async {
            Object::TraefikService
                .get(&rig.client, &ns)
                .await
                .and_then(|o| o.metadata.labels)
                .is_some_and(|l| l.get("team").map(String::as_str) == Some("payments"))
        },
    )
    .await;
    assert_eq!(
        Object::TraefikService.weights(&rig.client, &ns).await,
        Some((80, 20)),
        "the rollout's weights survive the rewrite"
    );
    let canary = rig.canaries().get("podinfo").await.expect("canary");
    assert_eq!(canary.status.and_then(|s| s.canary_weight), Some(20));
    rig.finish().await;
}

/// Traefik, APISIX and Skipper cannot match headers: an A/B Canary gets one condition and
/// one event naming spec.analysis.match, and nothing is generated (Flagger would send every
/// user to the canary).
#[tokio::test]
async fn ab_on_an_ingress_provider_without_header_matching_is_refused_once() {
    let rig = Rig::with_args("ingress-refuse", &[]).await;
    let ab = |mut a: flaggit::api::CanaryAnalysis| {
        a.iterations = Some(3);
        a.step_weight = None;
        a.match_ = Some(vec![HttpMatchRequest {
            headers: Some(BTreeMap::from([(
                "x-canary".to_string(),
                StringMatch {
                    exact: Some("insider".into()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        }]);
        a
    };
    let cases = [
        ("traefik-ab", Provider::Traefik, "traefik provider"),
        ("apisix-ab", Provider::Apisix, "apisix provider"),
        ("skipper-ab", Provider::Skipper, "skipper provider"),
    ];
    for (name, provider, _) in &cases {
        rig.create(
            deployment(name, "podinfo:6.0.0", None),
            canary_of(name, *provider, ab(stepping(10, 50))),
        )
        .await;
    }
    for (name, _, words) in &cases {
        let ready = wait_refused(&rig, name).await;
        assert_eq!(ready.reason.as_deref(), Some("UnsupportedByProvider"), "{name}");
        let message = ready.message.unwrap_or_default();
        assert!(message.contains("spec.analysis.match"), "{name}: {message}");
        assert!(message.contains(words), "{name}: {message}");
        let status = rig
            .canaries()
            .get(name)
            .await
            .expect("canary")
            .status
            .expect("status");
        assert_eq!(status.phase, Some(CanaryPhase::Initializing), "{name}");
        assert_eq!(status.canary_weight, Some(0), "{name}");
    }
    // Another canary on traefik initializes meanwhile; by then a refusal re-run on a timer
    // would have published (or counted) the event again.
    rig.healthy("good").await;
    rig.create(
        deployment("good", "good:1", None),
        canary_of("good", Provider::Traefik, stepping(50, 50)),
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
        let services: Api<Service> = Api::namespaced(rig.client.clone(), &rig.ns.name);
        assert!(services.get_opt(&primary).await.expect("get").is_none(), "{name}");
    }
    assert!(
        traefik_services(&rig.client, &rig.ns.name)
            .get_opt("traefik-ab")
            .await
            .expect("get")
            .is_none()
    );
    rig.finish().await;
}

/// Server-side applies `spec` as `<kind> podinfo` and returns the stored spec.
fn apply(api_version: &str, kind: &str, ns: &str, spec: &Value) -> Value {
    let object = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": { "name": "podinfo", "namespace": ns },
        "spec": spec,
    });
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
    let applied: Value = serde_json::from_str(&applied).expect("json");
    applied["spec"].clone()
}

/// What flaggit's gloo, traefik and apisix types serialize is server-side applied: unlike
/// create, which prunes a field the schema does not declare without a word, apply refuses it.
#[tokio::test]
async fn ingress_routing_objects_pass_server_side_apply_against_the_real_crds() {
    crate::support::install_routing_crds();
    let cp = control_plane();
    let client = cp.client().await;
    let ns = crate::support::TestNamespace::create(&client, "prov-ssa-ingress").await;
    let mut canary = canary_of("podinfo", Provider::Gloo, analysis());
    canary.metadata.namespace = Some(ns.name.clone());
    canary.metadata.uid = Some("uid".into());
    canary.spec.route_ref = Some(RouteRef {
        api_version: "apisix.apache.org/v2".into(),
        name: "podinfo-route".into(),
        ..Default::default()
    });
    let mut ab = canary.clone();
    ab.spec.analysis.as_mut().expect("analysis").match_ = Some(vec![
        HttpMatchRequest {
            headers: Some(BTreeMap::from([(
                "user-agent".to_string(),
                StringMatch {
                    prefix: Some("Mozilla".into()),
                    ..Default::default()
                },
            )])),
            method: Some(StringMatch {
                exact: Some("GET".into()),
                ..Default::default()
            }),
            query_params: Some(BTreeMap::from([(
                "beta".to_string(),
                StringMatch {
                    exact: Some("1".into()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        },
        HttpMatchRequest {
            without_headers: Some(BTreeMap::from([(
                "x-opt-out".to_string(),
                StringMatch {
                    regex: Some(".+".into()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        },
    ]);
    let same = |spec: Value, applied: Value, what: &str| assert_eq!(applied, spec, "{what}: nothing pruned");

    for (c, routes) in [(&canary, Routes::canary(30)), (&ab, Routes::canary(100))] {
        let spec =
            serde_json::to_value(flaggit::router::route_table_spec(c, routes).expect("spec")).expect("json");
        same(
            spec.clone(),
            apply("gateway.solo.io/v1", "RouteTable", &ns.name, &spec),
            "RouteTable",
        );
    }
    let config: flaggit::router::UpstreamSpec = serde_json::from_value(json!({
        "loadBalancerConfig": { "roundRobin": {} },
        "connectionConfig": { "maxRequestsPerConnection": 10 },
        "httpProxyHostname": "proxy.example.com",
        "useHttp2": true,
        "initialStreamWindowSize": 65535,
    }))
    .expect("settings");
    let upstream = flaggit::router::upstream_spec(
        &canary,
        "podinfo-primary",
        BTreeMap::from([("app".to_string(), "podinfo-primary".to_string())]),
        Some(&config),
    )
    .expect("spec");
    let spec = serde_json::to_value(upstream).expect("json");
    same(
        spec.clone(),
        apply("gloo.solo.io/v1", "Upstream", &ns.name, &spec),
        "Upstream",
    );

    for routes in [Routes::PRIMARY, Routes::canary(40), Routes::canary(100)] {
        let spec =
            serde_json::to_value(flaggit::router::traefik_service_spec(&canary, routes).expect("spec"))
                .expect("json");
        same(
            spec.clone(),
            apply("traefik.io/v1alpha1", "TraefikService", &ns.name, &spec),
            "TraefikService",
        );
    }

    let original: flaggit::router::ApisixRouteSpec = serde_json::from_value(json!({ "http": [{
        "name": "main",
        "priority": 1,
        "timeout": { "read": "10s" },
        "match": {
            "hosts": ["app.example.com"],
            "paths": ["/*"],
            "methods": ["GET", "POST"],
            "exprs": [{ "subject": { "scope": "Header", "name": "x-env" }, "op": "Equal", "value": "prod" }],
        },
        "websocket": true,
        "backends": [{ "serviceName": "podinfo", "servicePort": 9898, "resolveGranularity": "service", "subset": "v1" }],
        "plugins": [{ "name": "proxy-rewrite", "enable": true, "config": { "uri": "/" } }],
        "authentication": { "enable": true, "type": "keyAuth", "keyAuth": { "header": "apikey" } },
    }]}))
    .expect("a route");
    for routes in [Routes::PRIMARY, Routes::canary(20)] {
        let spec = serde_json::to_value(
            flaggit::router::canary_route_spec(&canary, &original, routes).expect("spec"),
        )
        .expect("json");
        same(
            spec.clone(),
            apply("apisix.apache.org/v2", "ApisixRoute", &ns.name, &spec),
            "ApisixRoute",
        );
    }
    ns.delete(&client).await;
}
