//! The routers against a real API server with the Istio and Gateway API CRDs installed, so
//! every Service, VirtualService, DestinationRule and HTTPRoute written is validated by it.

use std::collections::BTreeMap;

use flaggit::api::{
    BackendObjectReference, Canary, CanaryAnalysis, CanaryService, CanarySpec, CanaryStatus,
    ClientTlsSettings, ConnectionPoolSettings, CorsPolicy, CustomMetadata, HeaderOperations, Headers,
    HttpMatchRequest, HttpRequestMirrorFilter, HttpRetry, HttpRewrite, HttpSettings, LoadBalancerSettings,
    OutlierDetection, ParentReference, SessionAffinity, SimpleLb, StringMatch, TargetRef, TlsMode,
    TrafficPolicy, UnmanagedMetadata,
};
use flaggit::router::{
    self, AffinityCookies, Error, GatewayApiVersion, RouteRequest, Routes, ServiceRouter, VIRTUAL_SERVICE,
    for_provider, http_route_resource,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::support::{ControlPlane, TestNamespace, control_plane};

async fn setup(prefix: &str) -> (&'static ControlPlane, Client, TestNamespace) {
    let cp = control_plane();
    crate::support::install_routing_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    (cp, client, ns)
}

fn spec(service: CanaryService, analysis: CanaryAnalysis) -> CanarySpec {
    CanarySpec {
        target_ref: TargetRef {
            api_version: "apps/v1".into(),
            name: "podinfo".into(),
            ..Default::default()
        },
        service: Some(service),
        analysis: Some(CanaryAnalysis {
            interval: Some("30s".into()),
            threshold: Some(5),
            ..analysis
        }),
        ..Default::default()
    }
}

fn canary_analysis() -> CanaryAnalysis {
    CanaryAnalysis {
        step_weight: Some(10),
        max_weight: Some(50),
        ..Default::default()
    }
}

/// Creates the Canary `podinfo` so that generated objects can point their owner reference at
/// its uid.
async fn create_canary(client: &Client, namespace: &str, spec: CanarySpec) -> Canary {
    let mut canary = Canary::new("podinfo", spec);
    canary.metadata.namespace = Some(namespace.to_string());
    Api::<Canary>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &canary)
        .await
        .expect("the API server accepts the Canary")
}

fn gateway_service() -> CanaryService {
    CanaryService {
        port: 9898,
        gateway_refs: Some(vec![ParentReference {
            name: "gateway".into(),
            namespace: Some("istio-ingress".into()),
            ..Default::default()
        }]),
        hosts: Some(vec!["app.example.com".into()]),
        timeout: Some("30s".into()),
        ..Default::default()
    }
}

/// The request the controller makes at `routes`, with the cookies the status holds.
fn request(canary: &Canary, routes: Routes) -> RouteRequest {
    RouteRequest {
        routes,
        cookies: AffinityCookies::stored(canary.status.as_ref()),
    }
}

fn dynamic_api(client: &Client, namespace: &str, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, ar)
}

fn assert_owned(object_owner_uid: Option<String>, canary: &Canary) {
    assert_eq!(object_owner_uid, canary.uid(), "owner reference to the Canary");
}

fn owner_uid(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "Canary" && r.controller == Some(true))
        .map(|r| r.uid.clone())
}

// ---------------------------------------------------------------------------------------
// Services

#[tokio::test]
async fn services_are_generated_with_selectors_ports_and_owners() {
    let (_cp, client, ns) = setup("router-svc").await;
    let canary = create_canary(
        &client,
        &ns.name,
        spec(
            CanaryService {
                port: 9898,
                target_port: Some(IntOrString::String("http".into())),
                port_discovery: Some(true),
                app_protocol: Some("http".into()),
                apex: Some(Box::new(CustomMetadata {
                    labels: Some(BTreeMap::from([("team".into(), "web".into())])),
                    annotations: None,
                })),
                primary: Some(Box::new(CustomMetadata {
                    labels: None,
                    annotations: Some(BTreeMap::from([("role".into(), "primary".into())])),
                })),
                unmanaged_metadata: Some(Box::new(UnmanagedMetadata {
                    annotations: Some(vec!["linkerd.io/inject".into()]),
                    labels: None,
                })),
                ..Default::default()
            },
            canary_analysis(),
        ),
    )
    .await;
    let services = ServiceRouter::new(client.clone());
    let discovered = BTreeMap::from([("metrics".to_string(), 9797)]);
    services
        .initialize(&canary, "app", "podinfo", &discovered)
        .await
        .expect("primary and canary Services");
    services
        .reconcile(&canary, "app", "podinfo", &discovered)
        .await
        .expect("apex Service");

    let api = Api::<Service>::namespaced(client.clone(), &ns.name);
    for (name, pods) in [
        ("podinfo", "podinfo-primary"),
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        let svc = api.get(name).await.expect("Service exists");
        let s = svc.spec.clone().expect("spec");
        assert_eq!(
            s.selector,
            Some(BTreeMap::from([("app".to_string(), pods.to_string())])),
            "{name}"
        );
        let ports = s.ports.expect("ports");
        assert_eq!(ports.len(), 2, "{name}: main and discovered port");
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].port, 9898);
        assert_eq!(ports[0].target_port, Some(IntOrString::String("http".into())));
        assert_eq!(ports[0].app_protocol.as_deref(), Some("http"));
        assert_eq!(ports[1].name.as_deref(), Some("metrics"));
        assert_eq!(ports[1].port, 9797);
        assert_owned(owner_uid(&svc.metadata), &canary);
        assert_eq!(
            svc.annotations()["kustomize.toolkit.fluxcd.io/reconcile"],
            "disabled"
        );
        assert_eq!(svc.labels()["app"], name);
    }
    assert_eq!(api.get("podinfo").await.expect("apex").labels()["team"], "web");
    assert_eq!(
        api.get("podinfo-primary").await.expect("primary").annotations()["role"],
        "primary"
    );

    // Another tool annotates the primary; flaggit keeps the unmanaged key, drops a stray one.
    api.patch(
        "podinfo-primary",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": {
            "linkerd.io/inject": "enabled", "stray": "x",
        }}})),
    )
    .await
    .expect("annotate");
    services
        .initialize(&canary, "app", "podinfo", &discovered)
        .await
        .expect("second pass");
    let primary = api.get("podinfo-primary").await.expect("primary");
    assert_eq!(primary.annotations()["linkerd.io/inject"], "enabled");
    assert!(!primary.annotations().contains_key("stray"));
    assert_eq!(primary.annotations()["role"], "primary");

    // A pass with nothing to change writes nothing.
    let before = primary.resource_version();
    services
        .initialize(&canary, "app", "podinfo", &discovered)
        .await
        .expect("third pass");
    let after = api
        .get("podinfo-primary")
        .await
        .expect("primary")
        .resource_version();
    assert_eq!(before, after, "an unchanged Service is not rewritten");
    ns.delete(&client).await;
}

#[tokio::test]
async fn existing_apex_service_keeps_node_ports_and_is_given_back() {
    let (cp, client, ns) = setup("router-apex").await;
    // The user's own Service, applied with kubectl (so it has a last-applied annotation).
    let manifest = format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: podinfo
  namespace: {ns}
  labels:
    owner: team-a
spec:
  type: NodePort
  selector:
    app: podinfo
  ports:
  - name: http
    port: 9898
    targetPort: 9898
    nodePort: 30998
"#,
        ns = ns.name
    );
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&manifest));
    let canary = create_canary(
        &client,
        &ns.name,
        spec(
            CanaryService {
                port: 9898,
                apex: Some(Box::new(CustomMetadata {
                    labels: Some(BTreeMap::from([("team".into(), "web".into())])),
                    annotations: None,
                })),
                ..Default::default()
            },
            canary_analysis(),
        ),
    )
    .await;
    let services = ServiceRouter::new(client.clone());
    services
        .reconcile(&canary, "app", "podinfo", &BTreeMap::new())
        .await
        .expect("the apex Service is taken over");

    let api = Api::<Service>::namespaced(client.clone(), &ns.name);
    let apex = api.get("podinfo").await.expect("apex");
    let s = apex.spec.clone().expect("spec");
    assert_eq!(
        s.selector,
        Some(BTreeMap::from([("app".into(), "podinfo-primary".into())]))
    );
    assert_eq!(s.type_.as_deref(), Some("NodePort"));
    let ports = s.ports.expect("ports");
    assert_eq!(ports[0].node_port, Some(30998), "the node port is kept");
    // Not flaggit's Service: its metadata stays the user's, and no owner reference is added.
    assert_eq!(apex.labels().get("owner").map(String::as_str), Some("team-a"));
    assert!(!apex.labels().contains_key("team"));
    assert_eq!(owner_uid(&apex.metadata), None);

    services
        .finalize(&canary, "app", "podinfo")
        .await
        .expect("finalize");
    let apex = api.get("podinfo").await.expect("apex");
    assert_eq!(
        apex.spec.expect("spec").selector,
        Some(BTreeMap::from([("app".into(), "podinfo".into())])),
        "the selector is restored from kubectl's last-applied configuration"
    );

    // Without a last-applied annotation the apex is pointed at the target's pods.
    api.patch(
        "podinfo",
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": { "annotations": { "kubectl.kubernetes.io/last-applied-configuration": null } },
            "spec": { "selector": { "app": "podinfo-primary" } },
        })),
    )
    .await
    .expect("patch");
    services.finalize(&canary, "app", "web").await.expect("finalize");
    assert_eq!(
        api.get("podinfo")
            .await
            .expect("apex")
            .spec
            .expect("spec")
            .selector,
        Some(BTreeMap::from([("app".into(), "web".into())]))
    );
    ns.delete(&client).await;
}

// ---------------------------------------------------------------------------------------
// Gateway API

/// Writes the status a Gateway controller would: one parent, Accepted `accepted` at the
/// route's current generation.
async fn accept_route(api: &Api<DynamicObject>, accepted: bool) {
    let route = api.get("podinfo").await.expect("HTTPRoute");
    let generation = route.metadata.generation.expect("generation");
    let status = json!({ "status": { "parents": [{
        "parentRef": { "group": "gateway.networking.k8s.io", "kind": "Gateway",
            "name": "gateway", "namespace": "istio-ingress" },
        "controllerName": "example.com/gateway-controller",
        "conditions": [{
            "type": "Accepted",
            "status": if accepted { "True" } else { "False" },
            "reason": if accepted { "Accepted" } else { "NotAllowedByListeners" },
            "message": "set by the test",
            "observedGeneration": generation,
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        }],
    }]}});
    api.patch_status("podinfo", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("status written");
}

fn backend_weights(route: &DynamicObject, rule: usize) -> Vec<(String, i64)> {
    route.data["spec"]["rules"][rule]["backendRefs"]
        .as_array()
        .expect("backendRefs")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_string(),
                b["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

async fn gateway_api_weights(version: GatewayApiVersion) {
    let (cp, client, ns) = setup("router-gw").await;
    let canary = create_canary(&client, &ns.name, spec(gateway_service(), canary_analysis())).await;
    let router =
        for_provider(&version.provider().into(), client.clone(), &Default::default()).expect("router");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile");

    let api = dynamic_api(&client, &ns.name, &http_route_resource(version));
    let route = api.get("podinfo").await.expect("HTTPRoute created");
    assert_eq!(
        route.types.as_ref().map(|t| t.api_version.clone()),
        Some(format!(
            "gateway.networking.k8s.io/{}",
            match version {
                GatewayApiVersion::V1 => "v1",
                GatewayApiVersion::V1beta1 => "v1beta1",
            }
        ))
    );
    assert_owned(owner_uid(&route.metadata), &canary);
    assert_eq!(
        route.annotations()["helm.toolkit.fluxcd.io/driftDetection"],
        "disabled"
    );
    assert_eq!(route.data["spec"]["hostnames"], json!(["app.example.com"]));
    assert_eq!(route.data["spec"]["rules"][0]["timeouts"]["request"], "30s");
    assert_eq!(
        backend_weights(&route, 0),
        [("podinfo-primary".into(), 100), ("podinfo-canary".into(), 0)]
    );

    // No Gateway has accepted it yet.
    let err = router.get_routes(&canary).await.expect_err("not accepted yet");
    assert!(matches!(err, Error::NotReady(_)), "{err}");
    accept_route(&api, true).await;
    assert_eq!(router.get_routes(&canary).await.expect("routes"), Routes::PRIMARY);

    router
        .set_routes(&canary, &request(&canary, Routes::canary(30)))
        .await
        .expect("set routes");
    // The new generation is not accepted yet: the weights are not in force.
    let err = router.get_routes(&canary).await.expect_err("stale generation");
    assert!(err.to_string().contains("not yet accepted"), "{err}");
    accept_route(&api, true).await;
    let routes = router.get_routes(&canary).await.expect("routes");
    assert_eq!((routes.primary, routes.canary, routes.mirrored), (70, 30, false));

    // Someone annotates the route; reconcile keeps that and the live weights.
    cp.kubectl_ok(
        &[
            "annotate",
            "-n",
            &ns.name,
            "httproutes.gateway.networking.k8s.io/podinfo",
            "note=kept",
        ],
        None,
    );
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile again");
    let route = api.get("podinfo").await.expect("HTTPRoute");
    assert_eq!(route.annotations()["note"], "kept");
    assert_eq!(
        backend_weights(&route, 0),
        [("podinfo-primary".into(), 70), ("podinfo-canary".into(), 30)]
    );

    // A Gateway that refuses the route makes it not ready, with the reason.
    accept_route(&api, false).await;
    let err = router.get_routes(&canary).await.expect_err("refused");
    assert!(err.to_string().contains("NotAllowedByListeners"), "{err}");
    ns.delete(&client).await;
}

#[tokio::test]
async fn gateway_api_v1_routes_weights() {
    gateway_api_weights(GatewayApiVersion::V1).await;
}

#[tokio::test]
async fn gateway_api_v1beta1_routes_weights() {
    gateway_api_weights(GatewayApiVersion::V1beta1).await;
}

/// A hand edit of what flaggit writes (weights aside, which reconcile keeps) is read back into
/// the typed route, seen as drift and put back; the foreign annotation stays.
#[tokio::test]
async fn gateway_api_hand_edits_are_put_back_by_reconcile() {
    let (cp, client, ns) = setup("router-gw-drift").await;
    let canary = create_canary(&client, &ns.name, spec(gateway_service(), canary_analysis())).await;
    let router = for_provider(
        &"gatewayapi:v1beta1".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    let cookies = AffinityCookies::stored(canary.status.as_ref());
    router.reconcile(&canary, &cookies).await.expect("reconcile");
    let api = dynamic_api(
        &client,
        &ns.name,
        &http_route_resource(GatewayApiVersion::V1beta1),
    );
    let written = api.get("podinfo").await.expect("HTTPRoute");

    let edit = json!({
        "metadata": { "annotations": { "note": "kept" } },
        "spec": {
            "hostnames": ["other.example.com"],
            "rules": [{
                "matches": [{ "path": { "type": "Exact", "value": "/only" } }],
                "backendRefs": [
                    { "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 60 },
                    { "kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": 40 },
                ],
            }],
        },
    });
    cp.kubectl_ok(
        &[
            "patch",
            "-n",
            &ns.name,
            "httproutes.v1beta1.gateway.networking.k8s.io/podinfo",
            "--type=merge",
            "-p",
            &edit.to_string(),
        ],
        None,
    );
    router
        .reconcile(&canary, &cookies)
        .await
        .expect("reconcile the edit");
    let route = api.get("podinfo").await.expect("HTTPRoute");
    assert_eq!(route.annotations()["note"], "kept");
    assert_eq!(route.data["spec"]["hostnames"], written.data["spec"]["hostnames"]);
    assert_eq!(
        route.data["spec"]["rules"][0]["matches"],
        written.data["spec"]["rules"][0]["matches"]
    );
    assert_eq!(
        route.data["spec"]["rules"][0]["timeouts"],
        written.data["spec"]["rules"][0]["timeouts"]
    );
    assert_eq!(
        backend_weights(&route, 0),
        [("podinfo-primary".into(), 60), ("podinfo-canary".into(), 40)]
    );
    ns.delete(&client).await;
}

#[tokio::test]
async fn gateway_api_without_gateway_refs_is_a_clear_error() {
    let (_cp, client, ns) = setup("router-gw-refs").await;
    let mut service = gateway_service();
    service.gateway_refs = None;
    let canary = create_canary(&client, &ns.name, spec(service, canary_analysis())).await;
    let router = for_provider(
        &"gatewayapi:v1".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    let err = router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect_err("no gatewayRefs");
    assert_eq!(err.category(), "InvalidRoute");
    assert!(
        err.to_string()
            .starts_with("spec.service.gatewayRefs is required by provider gatewayapi:v1"),
        "{err}"
    );
    let api = dynamic_api(&client, &ns.name, &http_route_resource(GatewayApiVersion::V1));
    assert!(api.get_opt("podinfo").await.expect("get").is_none());
    ns.delete(&client).await;
}

fn header_match(name: &str, value: &str) -> HttpMatchRequest {
    HttpMatchRequest {
        headers: Some(BTreeMap::from([(
            name.to_string(),
            StringMatch {
                exact: Some(value.to_string()),
                ..Default::default()
            },
        )])),
        ..Default::default()
    }
}

#[tokio::test]
async fn gateway_api_ab_testing_and_mirroring() {
    let (_cp, client, ns) = setup("router-gw-ab").await;
    let canary = create_canary(
        &client,
        &ns.name,
        spec(
            gateway_service(),
            CanaryAnalysis {
                iterations: Some(5),
                match_: Some(vec![header_match("x-canary", "insider")]),
                ..Default::default()
            },
        ),
    )
    .await;
    let router = for_provider(
        &"gatewayapi:v1".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile");
    router
        .set_routes(&canary, &request(&canary, Routes::canary(100)))
        .await
        .expect("A/B routes");
    let api = dynamic_api(&client, &ns.name, &http_route_resource(GatewayApiVersion::V1));
    let route = api.get("podinfo").await.expect("HTTPRoute");
    let rules = route.data["spec"]["rules"].as_array().expect("rules").clone();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[0]["matches"][0]["headers"],
        json!([{ "type": "Exact", "name": "x-canary", "value": "insider" }])
    );
    assert_eq!(
        backend_weights(&route, 0),
        [("podinfo-primary".into(), 0), ("podinfo-canary".into(), 100)]
    );
    assert_eq!(backend_weights(&route, 1), [("podinfo-primary".into(), 100)]);
    accept_route(&api, true).await;
    assert_eq!(
        router.get_routes(&canary).await.expect("routes"),
        Routes::canary(100)
    );

    // Blue/Green mirroring, and the canary strategy's mirror step (Flagger ignores that one).
    for analysis in [
        CanaryAnalysis {
            iterations: Some(5),
            mirror: Some(true),
            ..Default::default()
        },
        CanaryAnalysis {
            step_weight: Some(10),
            mirror: Some(true),
            mirror_weight: Some(50),
            ..Default::default()
        },
    ] {
        let mut mirrored_canary = canary.clone();
        mirrored_canary.spec.analysis = Some(analysis);
        let routes = Routes {
            mirrored: true,
            ..Routes::PRIMARY
        };
        router
            .set_routes(&mirrored_canary, &request(&mirrored_canary, routes))
            .await
            .expect("mirror");
        let route = api.get("podinfo").await.expect("HTTPRoute");
        let filter = &route.data["spec"]["rules"][0]["filters"][0];
        assert_eq!(filter["type"], "RequestMirror");
        assert_eq!(filter["requestMirror"]["backendRef"]["name"], "podinfo-canary");
        accept_route(&api, true).await;
        assert_eq!(router.get_routes(&mirrored_canary).await.expect("routes"), routes);
    }
    ns.delete(&client).await;
}

fn affinity_analysis() -> CanaryAnalysis {
    CanaryAnalysis {
        session_affinity: Some(Box::new(SessionAffinity {
            cookie_name: "flagger-cookie".into(),
            max_age: Some(3600),
            ..Default::default()
        })),
        ..canary_analysis()
    }
}

#[tokio::test]
async fn gateway_api_session_affinity() {
    let (_cp, client, ns) = setup("router-gw-sa").await;
    let mut canary = create_canary(&client, &ns.name, spec(gateway_service(), affinity_analysis())).await;
    let router = for_provider(
        &"gatewayapi:v1".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile");

    let mut rng = rand::thread_rng();
    let cookies = router::next_affinity_cookies(&canary, Routes::canary(10), &mut rng);
    let cookie = cookies.canary.clone().expect("a cookie");
    canary.status = Some(CanaryStatus {
        session_affinity_cookie: Some(cookie.clone()),
        ..Default::default()
    });
    router
        .set_routes(&canary, &request(&canary, Routes::canary(10)))
        .await
        .expect("sticky routes");
    let api = dynamic_api(&client, &ns.name, &http_route_resource(GatewayApiVersion::V1));
    let route = api.get("podinfo").await.expect("HTTPRoute");
    let rules = route.data["spec"]["rules"].as_array().expect("rules").clone();
    assert_eq!(rules.len(), 2);
    let (name, value) = cookie.split_once('=').expect("name=value");
    assert_eq!(
        rules[0]["matches"][0]["headers"][0],
        json!({ "type": "RegularExpression", "name": "Cookie", "value": format!(".*{name}.*{value}.*") })
    );
    assert_eq!(
        backend_weights(&route, 0),
        [("podinfo-primary".into(), 0), ("podinfo-canary".into(), 100)]
    );
    assert_eq!(
        rules[1]["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["add"][0]["value"],
        format!("{cookie}; Max-Age=3600")
    );
    accept_route(&api, true).await;
    assert_eq!(
        router.get_routes(&canary).await.expect("routes"),
        Routes::canary(10)
    );

    // Back at weight 0 the cookie is expired.
    let cookies = router::next_affinity_cookies(&canary, Routes::PRIMARY, &mut rng);
    canary.status = Some(CanaryStatus {
        previous_session_affinity_cookie: cookies.previous.clone(),
        ..Default::default()
    });
    router
        .set_routes(&canary, &request(&canary, Routes::PRIMARY))
        .await
        .expect("expire routes");
    let route = api.get("podinfo").await.expect("HTTPRoute");
    assert_eq!(
        route.data["spec"]["rules"][0]["filters"][0]["responseHeaderModifier"]["add"][0]["value"],
        format!("{cookie}; Max-Age=-1")
    );
    ns.delete(&client).await;
}

// ---------------------------------------------------------------------------------------
// Istio

fn istio_resource((group, version, kind, plural): (&str, &str, &str, &str)) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn destinations(vs: &DynamicObject, route: usize) -> Vec<(String, i64)> {
    vs.data["spec"]["http"][route]["route"]
        .as_array()
        .expect("route")
        .iter()
        .map(|d| {
            (
                d["destination"]["host"].as_str().unwrap_or_default().to_string(),
                d["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn istio_routes_weights_ab_mirroring_and_affinity() {
    let (_cp, client, ns) = setup("router-istio").await;
    let service = CanaryService {
        port: 9898,
        hosts: Some(vec!["app.example.com".into()]),
        gateways: Some(vec!["public-gateway.istio-system.svc.cluster.local".into()]),
        timeout: Some("15s".into()),
        ..Default::default()
    };
    let mut canary = create_canary(&client, &ns.name, spec(service, affinity_analysis())).await;
    let router = for_provider(
        &"istio".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile");

    let drs = dynamic_api(&client, &ns.name, &istio_resource(router::DESTINATION_RULE));
    for host in ["podinfo-primary", "podinfo-canary"] {
        let dr = drs.get(host).await.expect("DestinationRule");
        assert_eq!(dr.data["spec"]["host"], host);
        assert_owned(owner_uid(&dr.metadata), &canary);
    }
    let vss = dynamic_api(&client, &ns.name, &istio_resource(VIRTUAL_SERVICE));
    let vs = vss.get("podinfo").await.expect("VirtualService");
    assert_owned(owner_uid(&vs.metadata), &canary);
    assert_eq!(
        vs.annotations()["kustomize.toolkit.fluxcd.io/reconcile"],
        "disabled"
    );
    assert_eq!(vs.data["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
    assert_eq!(vs.data["spec"]["http"][0]["timeout"], "15s");
    assert_eq!(
        destinations(&vs, 0),
        [("podinfo-primary".into(), 100), ("podinfo-canary".into(), 0)]
    );
    assert_eq!(router.get_routes(&canary).await.expect("routes"), Routes::PRIMARY);

    // Weights, with session affinity: a sticky route first, then the weighted one.
    canary.status = Some(CanaryStatus {
        session_affinity_cookie: Some("flagger-cookie=AbCdEfGhIj".into()),
        ..Default::default()
    });
    router
        .set_routes(&canary, &request(&canary, Routes::canary(30)))
        .await
        .expect("set routes");
    assert_eq!(
        router.get_routes(&canary).await.expect("routes"),
        Routes::canary(30)
    );
    let vs = vss.get("podinfo").await.expect("VirtualService");
    assert_eq!(
        vs.data["spec"]["http"][0]["match"][0]["headers"]["cookie"]["regex"],
        ".*flagger-cookie.*AbCdEfGhIj.*"
    );
    assert_eq!(
        destinations(&vs, 0),
        [("podinfo-primary".into(), 0), ("podinfo-canary".into(), 100)]
    );
    assert_eq!(
        vs.data["spec"]["http"][1]["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
        "flagger-cookie=AbCdEfGhIj; Max-Age=3600"
    );
    // Reconcile keeps the live weights.
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile again");
    assert_eq!(
        router.get_routes(&canary).await.expect("routes"),
        Routes::canary(30)
    );

    // A/B testing.
    let mut ab = canary.clone();
    ab.spec.analysis = Some(CanaryAnalysis {
        iterations: Some(5),
        match_: Some(vec![header_match("x-canary", "insider")]),
        ..Default::default()
    });
    router
        .set_routes(&ab, &request(&ab, Routes::canary(100)))
        .await
        .expect("A/B");
    let vs = vss.get("podinfo").await.expect("VirtualService");
    assert_eq!(
        vs.data["spec"]["http"][0]["match"][0]["headers"]["x-canary"]["exact"],
        "insider"
    );
    assert_eq!(destinations(&vs, 1), [("podinfo-primary".into(), 100)]);
    assert_eq!(router.get_routes(&ab).await.expect("routes"), Routes::canary(100));

    // Mirroring.
    let mut mirrored = canary.clone();
    mirrored.spec.analysis = Some(CanaryAnalysis {
        step_weight: Some(10),
        mirror: Some(true),
        mirror_weight: Some(25),
        ..Default::default()
    });
    let routes = Routes {
        mirrored: true,
        ..Routes::PRIMARY
    };
    router
        .set_routes(&mirrored, &request(&mirrored, routes))
        .await
        .expect("mirror");
    let vs = vss.get("podinfo").await.expect("VirtualService");
    assert_eq!(vs.data["spec"]["http"][0]["mirror"]["host"], "podinfo-canary");
    assert_eq!(vs.data["spec"]["http"][0]["mirrorPercentage"]["value"], 25.0);
    assert_eq!(router.get_routes(&mirrored).await.expect("routes"), routes);
    ns.delete(&client).await;
}

#[tokio::test]
async fn istio_takes_over_a_virtual_service_and_gives_it_back() {
    let (cp, client, ns) = setup("router-istio-vs").await;
    let canary = create_canary(
        &client,
        &ns.name,
        spec(
            CanaryService {
                port: 9898,
                ..Default::default()
            },
            canary_analysis(),
        ),
    )
    .await;
    let router = for_provider(
        &"istio".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    let vss = dynamic_api(&client, &ns.name, &istio_resource(VIRTUAL_SERVICE));
    let original = json!({
        "hosts": ["podinfo"],
        "http": [{ "route": [{ "destination": { "host": "podinfo" } }], "timeout": "5s" }],
    });

    // Created through the API (no kubectl annotation): the original spec goes to flaggit's
    // annotation.
    let mut vs = DynamicObject::new("podinfo", &istio_resource(VIRTUAL_SERVICE));
    vs.data = json!({ "spec": original });
    vss.create(&PostParams::default(), &vs)
        .await
        .expect("user's VirtualService");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("take over");
    let taken = vss.get("podinfo").await.expect("VirtualService");
    assert_eq!(
        owner_uid(&taken.metadata),
        None,
        "a taken-over object gets no owner"
    );
    assert_eq!(
        destinations(&taken, 0),
        [("podinfo-primary".into(), 100), ("podinfo-canary".into(), 0)]
    );
    let stored: Value = serde_json::from_str(&taken.annotations()[router::ORIGINAL_CONFIGURATION])
        .expect("original spec is JSON");
    assert_eq!(stored, original);
    // A second reconcile does not overwrite the original with flaggit's own spec.
    router
        .set_routes(&canary, &request(&canary, Routes::canary(20)))
        .await
        .expect("set");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile");
    let taken = vss.get("podinfo").await.expect("VirtualService");
    let stored: Value = serde_json::from_str(&taken.annotations()[router::ORIGINAL_CONFIGURATION])
        .expect("original spec is JSON");
    assert_eq!(stored, original);

    router.finalize(&canary).await.expect("finalize");
    let restored = vss.get("podinfo").await.expect("VirtualService");
    assert_eq!(restored.data["spec"], original);
    assert!(
        !restored
            .annotations()
            .contains_key(router::ORIGINAL_CONFIGURATION)
    );
    assert!(
        !restored
            .annotations()
            .contains_key("kustomize.toolkit.fluxcd.io/reconcile"),
        "Flux may manage the given-back VirtualService again"
    );

    // Applied with kubectl: finalize restores kubectl's last-applied spec.
    vss.delete("podinfo", &Default::default()).await.expect("delete");
    let manifest = format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: podinfo
  namespace: {ns}
spec:
  hosts: [podinfo]
  http:
  - route:
    - destination:
        host: podinfo
      weight: 100
"#,
        ns = ns.name
    );
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&manifest));
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("take over");
    let taken = vss.get("podinfo").await.expect("VirtualService");
    assert!(!taken.annotations().contains_key(router::ORIGINAL_CONFIGURATION));
    assert_eq!(
        taken.data["spec"]["http"][0]["route"][0]["destination"]["host"],
        "podinfo-primary"
    );
    router.finalize(&canary).await.expect("finalize");
    let restored = vss.get("podinfo").await.expect("VirtualService");
    assert_eq!(
        restored.data["spec"],
        json!({ "hosts": ["podinfo"], "http": [{ "route": [{ "destination": { "host": "podinfo" }, "weight": 100 }] }] })
    );
    ns.delete(&client).await;
}

fn headers() -> Headers {
    Headers {
        request: Some(HeaderOperations {
            set: Some(BTreeMap::from([("x-env".into(), "prod".into())])),
            add: Some(BTreeMap::from([("x-via".into(), "flaggit".into())])),
            remove: Some(vec!["x-debug".into()]),
        }),
        response: Some(HeaderOperations {
            add: Some(BTreeMap::from([("x-served-by".into(), "podinfo".into())])),
            ..Default::default()
        }),
    }
}

fn cors() -> CorsPolicy {
    CorsPolicy {
        allow_origin: Some(vec!["https://app.example.com".into()]),
        allow_methods: Some(vec!["GET".into(), "POST".into()]),
        allow_headers: Some(vec!["x-user".into()]),
        expose_headers: Some(vec!["x-trace".into()]),
        max_age: Some("24h".into()),
        allow_credentials: Some(true),
        ..Default::default()
    }
}

#[tokio::test]
async fn gateway_api_route_with_every_option_is_accepted_and_stable() {
    let (_cp, client, ns) = setup("router-gw-all").await;
    let service = CanaryService {
        backend_timeout: Some("10s".into()),
        headers: Some(Box::new(headers())),
        rewrite: Some(Box::new(HttpRewrite {
            uri: Some("/v2".into()),
            authority: Some("backend.example.com".into()),
            type_: Some("ReplacePrefixMatch".into()),
        })),
        mirror: Some(vec![HttpRequestMirrorFilter {
            backend_ref: BackendObjectReference {
                name: "shadow".into(),
                port: Some(80),
                ..Default::default()
            },
            percent: Some(10),
        }]),
        cors_policy: Some(Box::new(cors())),
        match_: Some(vec![HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some("/api".into()),
                ..Default::default()
            }),
            method: Some(StringMatch {
                exact: Some("GET".into()),
                ..Default::default()
            }),
            query_params: Some(BTreeMap::from([(
                "beta".into(),
                StringMatch {
                    regex: Some("^(1|true)$".into()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        }]),
        apex: Some(Box::new(CustomMetadata {
            labels: Some(BTreeMap::from([("team".into(), "web".into())])),
            annotations: Some(BTreeMap::from([("note".into(), "apex".into())])),
        })),
        ..gateway_service()
    };
    let canary = create_canary(&client, &ns.name, spec(service, canary_analysis())).await;
    let router = for_provider(
        &"gatewayapi:v1".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("the server accepts every filter");
    let api = dynamic_api(&client, &ns.name, &http_route_resource(GatewayApiVersion::V1));
    let route = api.get("podinfo").await.expect("HTTPRoute");
    assert_eq!(route.labels()["team"], "web");
    assert_eq!(route.annotations()["note"], "apex");
    let types: Vec<&str> = route.data["spec"]["rules"][0]["filters"]
        .as_array()
        .expect("filters")
        .iter()
        .filter_map(|f| f["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "URLRewrite",
            "RequestMirror",
            "CORS"
        ]
    );
    assert_eq!(
        route.data["spec"]["rules"][0]["filters"][4]["cors"]["maxAge"],
        86400
    );
    assert_eq!(
        route.data["spec"]["rules"][0]["timeouts"],
        json!({ "request": "30s", "backendRequest": "10s" })
    );
    // Nothing changed, nothing written: a write would make the Gateways re-accept the route.
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("reconcile again");
    let again = api.get("podinfo").await.expect("HTTPRoute");
    assert_eq!(route.resource_version(), again.resource_version());
    ns.delete(&client).await;
}

/// Every shape of HTTPRoute the router generates (weights with every filter, A/B, session
/// affinity cookies and their expiry, both kinds of mirroring), server-side applied in both
/// served versions: unlike create, which prunes a field the schema does not declare without a
/// word, apply refuses it. What the server stores also parses back into the same typed spec.
#[tokio::test]
async fn gateway_api_routes_pass_server_side_apply_against_the_real_crds() {
    let (cp, client, ns) = setup("router-gw-ssa").await;
    let canary_of = |service: CanaryService, analysis: CanaryAnalysis| {
        let mut canary = Canary::new("podinfo", spec(service, analysis));
        canary.metadata.namespace = Some(ns.name.clone());
        canary
    };
    let every_filter = CanaryService {
        backend_timeout: Some("10s".into()),
        headers: Some(Box::new(headers())),
        rewrite: Some(Box::new(HttpRewrite {
            uri: Some("/v2".into()),
            authority: Some("backend.example.com".into()),
            type_: Some("ReplacePrefixMatch".into()),
        })),
        mirror: Some(vec![HttpRequestMirrorFilter {
            backend_ref: BackendObjectReference {
                name: "shadow".into(),
                port: Some(80),
                ..Default::default()
            },
            percent: Some(10),
        }]),
        cors_policy: Some(Box::new(cors())),
        ..gateway_service()
    };
    let weighted = canary_of(every_filter.clone(), canary_analysis());
    let ab = canary_of(
        CanaryService {
            match_: Some(vec![HttpMatchRequest {
                uri: Some(StringMatch {
                    prefix: Some("/api".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..every_filter.clone()
        },
        CanaryAnalysis {
            iterations: Some(5),
            match_: Some(vec![
                HttpMatchRequest {
                    method: Some(StringMatch {
                        exact: Some("GET".into()),
                        ..Default::default()
                    }),
                    query_params: Some(BTreeMap::from([(
                        "beta".into(),
                        StringMatch {
                            regex: Some("^(1|true)$".into()),
                            ..Default::default()
                        },
                    )])),
                    ..header_match("x-canary", "insider")
                },
                HttpMatchRequest {
                    headers: Some(BTreeMap::from([(
                        "x-user".into(),
                        StringMatch {
                            regex: Some("^tester-.*".into()),
                            ..Default::default()
                        },
                    )])),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
    );
    let sticky_service = CanaryService {
        headers: Some(Box::new(headers())),
        ..gateway_service()
    };
    let sticky = canary_of(
        sticky_service,
        CanaryAnalysis {
            session_affinity: Some(Box::new(SessionAffinity {
                cookie_name: "flagger-cookie".into(),
                primary_cookie_name: Some("primary-cookie".into()),
                max_age: Some(3600),
                ..Default::default()
            })),
            ..canary_analysis()
        },
    );
    let cookies = AffinityCookies {
        canary: Some("flagger-cookie=abcdefghij".into()),
        primary: Some("primary-cookie=klmnopqrst".into()),
        previous: Some("flagger-cookie=uvwxyzabcd".into()),
    };
    let blue_green_mirror = canary_of(
        gateway_service(),
        CanaryAnalysis {
            iterations: Some(5),
            mirror: Some(true),
            ..Default::default()
        },
    );
    let canary_mirror = canary_of(
        every_filter,
        CanaryAnalysis {
            mirror: Some(true),
            mirror_weight: Some(50),
            ..canary_analysis()
        },
    );
    let mirrored = Routes {
        mirrored: true,
        ..Routes::PRIMARY
    };
    let cases: [(&str, &Canary, RouteRequest); 7] = [
        ("weighted", &weighted, Routes::canary(30).into()),
        ("ab", &ab, Routes::canary(100).into()),
        (
            "sticky",
            &sticky,
            RouteRequest {
                routes: Routes::canary(20),
                cookies: cookies.clone(),
            },
        ),
        (
            "sticky-expiry",
            &sticky,
            RouteRequest {
                routes: Routes::PRIMARY,
                cookies,
            },
        ),
        ("mirror-bg", &blue_green_mirror, mirrored.into()),
        ("mirror-canary", &canary_mirror, mirrored.into()),
        (
            "mirror-canary-weighted",
            &canary_mirror,
            Routes {
                mirrored: true,
                ..Routes::canary(10)
            }
            .into(),
        ),
    ];
    for version in [GatewayApiVersion::V1, GatewayApiVersion::V1beta1] {
        let api_version = match version {
            GatewayApiVersion::V1 => "gateway.networking.k8s.io/v1",
            GatewayApiVersion::V1beta1 => "gateway.networking.k8s.io/v1beta1",
        };
        for (what, canary, request) in &cases {
            let spec = router::http_route_spec(canary, request, version).expect("spec");
            let json = serde_json::to_value(&spec).expect("json");
            let object = json!({
                "apiVersion": api_version,
                "kind": "HTTPRoute",
                "metadata": { "name": format!("{what}-{}", version.provider().as_str().replace([':', '.'], "-")), "namespace": ns.name },
                "spec": json,
            });
            let applied = cp.kubectl_ok(
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
            assert_eq!(
                applied["spec"], json,
                "{api_version} {what}: nothing pruned or defaulted"
            );
            let read: router::HttpRouteSpec =
                serde_json::from_value(applied["spec"].clone()).expect("the stored spec parses back");
            assert_eq!(read, spec, "{api_version} {what}");
            assert_eq!(
                router::routes_of_http_route(canary, &read),
                Some(request.routes),
                "{api_version} {what}"
            );
        }
    }
    ns.delete(&client).await;
}

#[tokio::test]
async fn istio_objects_with_every_option_are_accepted() {
    let (_cp, client, ns) = setup("router-istio-all").await;
    let service = CanaryService {
        port: 9898,
        port_discovery: Some(true),
        gateways: Some(vec!["istio-system/public-gateway".into(), "mesh".into()]),
        hosts: Some(vec!["app.example.com".into()]),
        timeout: Some("15s".into()),
        retries: Some(Box::new(HttpRetry {
            attempts: Some(3),
            per_try_timeout: Some("5s".into()),
            retry_on: Some("gateway-error,connect-failure".into()),
        })),
        rewrite: Some(Box::new(HttpRewrite {
            uri: Some("/".into()),
            authority: Some("podinfo.internal".into()),
            ..Default::default()
        })),
        headers: Some(Box::new(headers())),
        cors_policy: Some(Box::new(cors())),
        match_: Some(vec![HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some("/api".into()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        traffic_policy: Some(Box::new(TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                simple: Some(SimpleLb::LeastRequest),
                ..Default::default()
            }),
            connection_pool: Some(ConnectionPoolSettings {
                http: Some(HttpSettings {
                    http1_max_pending_requests: Some(100),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx_errors: Some(5),
                interval: Some("10s".into()),
                base_ejection_time: Some("30s".into()),
                ..Default::default()
            }),
            tls: Some(ClientTlsSettings {
                mode: Some(TlsMode::IstioMutual),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let canary = create_canary(&client, &ns.name, spec(service, canary_analysis())).await;
    let router = for_provider(
        &"istio".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("the server accepts every option");
    let vss = dynamic_api(&client, &ns.name, &istio_resource(VIRTUAL_SERVICE));
    let vs = vss.get("podinfo").await.expect("VirtualService");
    let http = &vs.data["spec"]["http"][0];
    assert_eq!(http["retries"]["attempts"], 3);
    assert_eq!(http["corsPolicy"]["allowCredentials"], true);
    assert_eq!(http["headers"]["request"]["remove"], json!(["x-debug"]));
    assert_eq!(http["rewrite"]["authority"], "podinfo.internal");
    assert_eq!(http["route"][0]["destination"]["port"]["number"], 9898);
    let drs = dynamic_api(&client, &ns.name, &istio_resource(router::DESTINATION_RULE));
    let dr = drs.get("podinfo-primary").await.expect("DestinationRule");
    assert_eq!(
        dr.data["spec"]["trafficPolicy"]["loadBalancer"]["simple"],
        "LEAST_REQUEST"
    );
    assert_eq!(
        dr.data["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"],
        5
    );

    // A TCP service gets a TCP route instead.
    let mut tcp = canary.clone();
    if let Some(s) = tcp.spec.service.as_mut() {
        s.app_protocol = Some("tcp".into());
    }
    router
        .set_routes(&tcp, &request(&tcp, Routes::canary(40)))
        .await
        .expect("tcp route");
    let vs = vss.get("podinfo").await.expect("VirtualService");
    assert!(vs.data["spec"].get("http").is_none());
    assert_eq!(router.get_routes(&tcp).await.expect("routes"), Routes::canary(40));
    ns.delete(&client).await;
}

/// Applies `object` server-side as `ssa-check` and returns the spec the API server stored
/// (without a field the schema does not declare: 1.20 prunes it without a word).
fn apply_spec(cp: &ControlPlane, object: &Value) -> Value {
    let applied = cp.kubectl_ok(
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

/// Every shape of VirtualService the Istio router writes (weights with every route option,
/// A/B, session affinity with canary, primary and expiring cookies, mirroring, TCP,
/// delegation) and its DestinationRules pass server-side apply against Istio's CRDs, and
/// what the server stores reads back as the spec written: nothing refused or pruned.
#[tokio::test]
async fn istio_routing_objects_pass_server_side_apply_against_the_real_crds() {
    let (cp, client, ns) = setup("router-istio-ssa").await;
    let base = CanaryService {
        port: 9898,
        port_discovery: Some(true),
        gateways: Some(vec!["istio-system/public-gateway".into(), "mesh".into()]),
        hosts: Some(vec!["app.example.com".into()]),
        timeout: Some("15s".into()),
        retries: Some(Box::new(HttpRetry {
            attempts: Some(3),
            per_try_timeout: Some("5s".into()),
            retry_on: Some("gateway-error,connect-failure".into()),
        })),
        rewrite: Some(Box::new(HttpRewrite {
            uri: Some("/".into()),
            authority: Some("podinfo.internal".into()),
            type_: Some("ReplacePrefixMatch".into()),
        })),
        headers: Some(Box::new(headers())),
        cors_policy: Some(Box::new(cors())),
        match_: Some(vec![HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some("/api".into()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        traffic_policy: Some(Box::new(TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                simple: Some(SimpleLb::LeastRequest),
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx_errors: Some(5),
                interval: Some("10s".into()),
                ..Default::default()
            }),
            tls: Some(ClientTlsSettings {
                mode: Some(TlsMode::IstioMutual),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let canary_with = |service: CanaryService, analysis: CanaryAnalysis| {
        let mut canary = Canary::new("podinfo", spec(service, analysis));
        canary.metadata.namespace = Some(ns.name.clone());
        canary
    };
    let weighted = canary_with(base.clone(), canary_analysis());
    let ab = canary_with(
        base.clone(),
        CanaryAnalysis {
            iterations: Some(5),
            match_: Some(vec![header_match("x-canary", "insider")]),
            ..Default::default()
        },
    );
    let mut affinity = canary_with(base.clone(), affinity_analysis());
    if let Some(sa) = affinity
        .spec
        .analysis
        .as_mut()
        .and_then(|a| a.session_affinity.as_mut())
    {
        sa.primary_cookie_name = Some("primary-cookie".into());
    }
    let mirrored = canary_with(
        base.clone(),
        CanaryAnalysis {
            mirror: Some(true),
            mirror_weight: Some(25),
            ..canary_analysis()
        },
    );
    let tcp = canary_with(
        CanaryService {
            app_protocol: Some("tcp".into()),
            ..base.clone()
        },
        canary_analysis(),
    );
    let delegate = canary_with(
        CanaryService {
            delegation: Some(true),
            hosts: None,
            gateways: None,
            ..base.clone()
        },
        canary_analysis(),
    );
    let cookies = |canary: Option<&str>, primary: Option<&str>, previous: Option<&str>| AffinityCookies {
        canary: canary.map(str::to_string),
        primary: primary.map(str::to_string),
        previous: previous.map(str::to_string),
    };
    let mirror = Routes {
        mirrored: true,
        ..Routes::PRIMARY
    };
    let cases = [
        (
            "weights",
            &weighted,
            Routes::canary(30),
            AffinityCookies::default(),
        ),
        ("A/B", &ab, Routes::canary(100), AffinityCookies::default()),
        (
            "sticky canary and primary",
            &affinity,
            Routes::canary(20),
            cookies(
                Some("flagger-cookie=AbCdEfGhIj"),
                Some("primary-cookie=KlMnOpQrSt"),
                None,
            ),
        ),
        (
            "expiring cookie",
            &affinity,
            Routes::PRIMARY,
            cookies(None, None, Some("flagger-cookie=AbCdEfGhIj")),
        ),
        ("mirroring", &mirrored, mirror, AffinityCookies::default()),
        ("TCP", &tcp, Routes::canary(40), AffinityCookies::default()),
        (
            "delegation",
            &delegate,
            Routes::canary(10),
            AffinityCookies::default(),
        ),
    ];
    let (group, version, kind, _) = VIRTUAL_SERVICE;
    for (case, canary, routes, cookies) in cases {
        let spec = router::virtual_service_spec(canary, &RouteRequest { routes, cookies }).expect(case);
        let object = json!({
            "apiVersion": format!("{group}/{version}"),
            "kind": kind,
            "metadata": { "name": "podinfo", "namespace": ns.name },
            "spec": spec,
        });
        let stored = apply_spec(cp, &object);
        let read: router::VirtualServiceSpec = serde_json::from_value(stored.clone()).expect(case);
        assert_eq!(read, spec, "{case}: nothing pruned\n{stored:#}");
        assert_eq!(
            router::routes_of_virtual_service(canary, &read),
            Some(routes),
            "{case}"
        );
    }

    let (group, version, kind, _) = router::DESTINATION_RULE;
    for host in ["podinfo-primary", "podinfo-canary"] {
        let spec = router::destination_rule_spec(&weighted, host).expect("DestinationRule");
        let object = json!({
            "apiVersion": format!("{group}/{version}"),
            "kind": kind,
            "metadata": { "name": host, "namespace": ns.name },
            "spec": spec,
        });
        let stored = apply_spec(cp, &object);
        assert_eq!(
            stored,
            serde_json::to_value(&spec).expect("json"),
            "{host}: nothing pruned"
        );
    }
    ns.delete(&client).await;
}

/// A VirtualService with fields flaggit does not type (`exportTo`, a route's `name` and
/// `fault`, a destination's `subset`) is read, taken over and given back with every field.
#[tokio::test]
async fn istio_gives_back_the_fields_of_a_taken_over_virtual_service_it_does_not_type() {
    let (_cp, client, ns) = setup("router-istio-untyped").await;
    let canary = create_canary(
        &client,
        &ns.name,
        spec(
            CanaryService {
                port: 9898,
                ..Default::default()
            },
            canary_analysis(),
        ),
    )
    .await;
    let router = for_provider(
        &"istio".parse().expect("provider"),
        client.clone(),
        &Default::default(),
    )
    .expect("router");
    let vss = dynamic_api(&client, &ns.name, &istio_resource(VIRTUAL_SERVICE));
    let original = json!({
        "hosts": ["podinfo"],
        "exportTo": ["."],
        "http": [{
            "name": "all",
            "fault": { "abort": { "httpStatus": 503, "percentage": { "value": 1 } } },
            "route": [{ "destination": { "host": "podinfo", "subset": "stable" } }],
        }],
    });
    let mut vs = DynamicObject::new("podinfo", &istio_resource(VIRTUAL_SERVICE));
    vs.data = json!({ "spec": original });
    vss.create(&PostParams::default(), &vs)
        .await
        .expect("the server keeps every field of the user's VirtualService");
    assert_eq!(
        router
            .get_routes(&canary)
            .await
            .expect_err("not routed yet")
            .to_string(),
        "VirtualService podinfo has no route to both podinfo-primary and podinfo-canary: reconcile rewrites it"
    );
    router
        .reconcile(&canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await
        .expect("take over");
    let taken = vss.get("podinfo").await.expect("VirtualService");
    let stored: Value = serde_json::from_str(&taken.annotations()[router::ORIGINAL_CONFIGURATION])
        .expect("original spec is JSON");
    assert_eq!(stored, original);
    assert_eq!(
        destinations(&taken, 0),
        [("podinfo-primary".into(), 100), ("podinfo-canary".into(), 0)]
    );
    router
        .set_routes(&canary, &request(&canary, Routes::canary(20)))
        .await
        .expect("set");
    assert_eq!(
        router.get_routes(&canary).await.expect("routes"),
        Routes::canary(20)
    );
    router.finalize(&canary).await.expect("finalize");
    let restored = vss.get("podinfo").await.expect("VirtualService");
    assert_eq!(restored.data["spec"], original);
    ns.delete(&client).await;
}
