//! Each provider beyond Istio and Gateway API through the running controller, with its real
//! CRD installed: initialization, a hand edit put back, a promoting rollout and a rollback
//! with the routing object's exact weights at each step, and off-boarding with or without
//! `revertOnDeletion`. The objects flaggit's types serialize are also server-side applied,
//! which (unlike create) refuses any field the CRD schema does not declare.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flaggit::api::{Canary, CanaryMetric, CanaryPhase, IngressRef, Provider, ThresholdRange};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, ServiceBackendPort,
};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::metrics_app::prometheus;
use crate::rollout::{Rig, analysis, canary_of, success_rate_where};
use crate::support::control_plane;

/// Where a provider keeps the weights, and how to read and hand-edit them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Object {
    TrafficSplit(&'static str),
    NginxIngress,
    HttpProxy,
}

impl Object {
    fn proxy_api(client: &Client, ns: &str) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("projectcontour.io", "v1", "HTTPProxy"),
            "httpproxies",
        );
        Api::namespaced_with(client.clone(), ns, &ar)
    }

    fn split_api(client: &Client, ns: &str, version: &str) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("split.smi-spec.io", version, "TrafficSplit"),
            "trafficsplits",
        );
        Api::namespaced_with(client.clone(), ns, &ar)
    }

    /// (primary, canary) as the object says now.
    pub(crate) async fn weights(self, client: &Client, ns: &str) -> Option<(i64, i64)> {
        match self {
            Self::TrafficSplit(version) => {
                let split = Self::split_api(client, ns, version).get("podinfo").await.ok()?;
                let backends = split.data["spec"]["backends"].as_array()?.clone();
                let weight = |service: &str| {
                    backends.iter().find(|b| b["service"] == service).and_then(|b| {
                        b["weight"]
                            .as_i64()
                            .or_else(|| b["weight"].as_str().and_then(|w| w.parse().ok()))
                    })
                };
                Some((weight("podinfo-primary")?, weight("podinfo-canary")?))
            }
            Self::HttpProxy => {
                let proxy = Self::proxy_api(client, ns).get("podinfo").await.ok()?;
                let services = proxy.data["spec"]["routes"][0]["services"].as_array()?.clone();
                let weight = |name: &str| {
                    services
                        .iter()
                        .find(|s| s["name"] == name)
                        .map(|s| s["weight"].as_i64().unwrap_or(0))
                };
                Some((weight("podinfo-primary")?, weight("podinfo-canary")?))
            }
            Self::NginxIngress => {
                let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
                let ingress = api.get("podinfo-canary").await.ok()?;
                let canary: i64 = ingress
                    .annotations()
                    .get("nginx.ingress.kubernetes.io/canary-weight")?
                    .parse()
                    .ok()?;
                Some((100 - canary, canary))
            }
        }
    }

    /// Someone sets the split to 50/50 by hand.
    pub(crate) async fn hand_edit(self, client: &Client, ns: &str) {
        match self {
            Self::TrafficSplit(version) => {
                let api = Self::split_api(client, ns, version);
                let mut split = api.get("podinfo").await.expect("TrafficSplit");
                let fifty = if version == "v1alpha1" {
                    json!("50")
                } else {
                    json!(50)
                };
                split.data["spec"]["backends"] = json!([
                    { "service": "podinfo-canary", "weight": fifty },
                    { "service": "podinfo-primary", "weight": fifty },
                ]);
                api.replace("podinfo", &PostParams::default(), &split)
                    .await
                    .expect("hand edit");
            }
            Self::HttpProxy => {
                let api = Self::proxy_api(client, ns);
                let mut proxy = api.get("podinfo").await.expect("HTTPProxy");
                proxy.data["spec"]["routes"][0]["services"][0]["weight"] = json!(50);
                proxy.data["spec"]["routes"][0]["services"][1]["weight"] = json!(50);
                api.replace("podinfo", &PostParams::default(), &proxy)
                    .await
                    .expect("hand edit");
            }
            Self::NginxIngress => {
                let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
                api.patch(
                    "podinfo-canary",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "annotations": {
                        "nginx.ingress.kubernetes.io/canary-weight": "50",
                    }}})),
                )
                .await
                .expect("hand edit");
            }
        }
    }

    /// The owner reference uids of the routing object (empty when it is gone).
    async fn owners(self, client: &Client, ns: &str) -> Option<Vec<String>> {
        let meta = match self {
            Self::TrafficSplit(version) => {
                Self::split_api(client, ns, version)
                    .get_opt("podinfo")
                    .await
                    .ok()??
                    .metadata
            }
            Self::HttpProxy => {
                Self::proxy_api(client, ns)
                    .get_opt("podinfo")
                    .await
                    .ok()??
                    .metadata
            }
            Self::NginxIngress => {
                Api::<Ingress>::namespaced(client.clone(), ns)
                    .get_opt("podinfo-canary")
                    .await
                    .ok()??
                    .metadata
            }
        };
        Some(
            meta.owner_references
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.uid)
                .collect(),
        )
    }
}

/// Polls `check` every 100 ms until it says yes, failing after `timeout` (generous: the
/// machine may be busy).
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
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

/// The success rate of the podinfo canary pods as a plain query (no provider's builtin).
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

/// The original Ingress `podinfo` the nginx provider copies.
async fn original_ingress(client: &Client, ns: &str) {
    let ingress = Ingress {
        metadata: ObjectMeta {
            name: Some("podinfo".into()),
            annotations: Some(BTreeMap::from([(
                "nginx.ingress.kubernetes.io/rewrite-target".to_string(),
                "/".to_string(),
            )])),
            labels: Some(BTreeMap::from([("app".to_string(), "podinfo".to_string())])),
            ..Default::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: Some("nginx".into()),
            rules: Some(vec![IngressRule {
                host: Some("app.example.com".into()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: "podinfo".into(),
                                port: Some(ServiceBackendPort {
                                    number: Some(9898),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Api::<Ingress>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &ingress)
        .await
        .expect("create the original Ingress");
}

/// Polls the routing object until the canary reaches `phase`, returning the distinct
/// weights seen on the way.
async fn record_until(rig: &Rig, object: Object, phase: CanaryPhase, timeout: Duration) -> Vec<(i64, i64)> {
    let start = Instant::now();
    let mut seen: Vec<(i64, i64)> = Vec::new();
    loop {
        if let Some(w) = object.weights(&rig.client, &rig.ns.name).await
            && seen.last() != Some(&w)
        {
            seen.push(w);
        }
        let canary = rig.canaries().get("podinfo").await.expect("canary");
        if canary.status.and_then(|s| s.phase) == Some(phase) {
            if let Some(w) = object.weights(&rig.client, &rig.ns.name).await
                && seen.last() != Some(&w)
            {
                seen.push(w);
            }
            return seen;
        }
        assert!(
            start.elapsed() < timeout,
            "no {phase:?} in {timeout:?}; weights {seen:?}\nlog:\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Initialize, drift, promote, roll back, off-board: the life of one canary on `provider`.
async fn lifecycle(prefix: &str, provider: Provider, object: Object, revert_on_deletion: bool) {
    let rig = Rig::with_args(prefix, &[]).await;
    let ns = rig.ns.name.clone();
    let mut canary_analysis = analysis();
    canary_analysis.metrics = Some(vec![success_rate_check(&ns)]);
    canary_analysis.step_weight = Some(20);
    canary_analysis.max_weight = Some(60);
    let mut canary: Canary = canary_of("podinfo", provider, canary_analysis);
    canary.spec.revert_on_deletion = Some(revert_on_deletion);
    if matches!(object, Object::NginxIngress) {
        original_ingress(&rig.client, &ns).await;
        canary.spec.ingress_ref = Some(IngressRef {
            api_version: "networking.k8s.io/v1".into(),
            name: "podinfo".into(),
            ..Default::default()
        });
    }
    rig.initialize_podinfo(canary).await;
    let uid = rig
        .canaries()
        .get("podinfo")
        .await
        .expect("canary")
        .uid()
        .expect("uid");
    assert_eq!(object.weights(&rig.client, &ns).await, Some((100, 0)));
    assert_eq!(object.owners(&rig.client, &ns).await, Some(vec![uid]));

    // A hand edit of the weights between rollouts is put back by the watch.
    object.hand_edit(&rig.client, &ns).await;
    let edited = Instant::now();
    wait_until(
        "the hand edit to be put back",
        Duration::from_secs(60),
        || async { object.weights(&rig.client, &ns).await == Some((100, 0)) },
    )
    .await;
    eprintln!("{provider:?}: hand edit put back after {:?}", edited.elapsed());

    // A healthy revision steps 20, 40, 60 and is promoted.
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let promoted = record_until(&rig, object, CanaryPhase::Succeeded, Duration::from_secs(120)).await;
    assert_eq!(
        promoted,
        [(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)],
        "{provider:?}"
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");

    // A failing revision is rolled back with no traffic left on it.
    rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    rig.set_image("podinfo", "podinfo:6.0.2").await;
    let rolled_back = record_until(&rig, object, CanaryPhase::Failed, Duration::from_secs(120)).await;
    assert_eq!(rolled_back.first(), Some(&(100, 0)), "{rolled_back:?}");
    assert_eq!(rolled_back.last(), Some(&(100, 0)), "{rolled_back:?}");
    assert!(
        rolled_back.iter().all(|w| [(100, 0), (80, 20)].contains(w)),
        "{provider:?}: {rolled_back:?}"
    );
    assert_eq!(
        rig.image_of("podinfo-primary").await,
        "podinfo:6.0.1",
        "never promoted"
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
    if revert_on_deletion {
        // The target serves again and the apex Service selects it; without revertOnDeletion
        // the generated Services go with the Canary (the garbage collector), as under Flagger.
        let services: Api<Service> = Api::namespaced(rig.client.clone(), &ns);
        let apex = services.get("podinfo").await.expect("apex Service");
        let selector = apex.spec.and_then(|s| s.selector).unwrap_or_default();
        assert_eq!(
            selector.get("app").map(String::as_str),
            Some("podinfo"),
            "{provider:?}"
        );
        assert!(rig.replicas_of("podinfo").await > 0, "the target serves again");
    }
    // The garbage collector removes the routing object with the Canary.
    wait_until(
        "the routing object to be collected",
        Duration::from_secs(60),
        || async { object.owners(&rig.client, &ns).await.is_none() },
    )
    .await;
    rig.finish().await;
}

#[tokio::test]
async fn linkerd_trafficsplit_v1alpha1_lifecycle_with_revert_on_deletion() {
    lifecycle(
        "prov-linkerd",
        Provider::Linkerd,
        Object::TrafficSplit("v1alpha1"),
        true,
    )
    .await;
}

#[tokio::test]
async fn osm_trafficsplit_v1alpha2_lifecycle_without_revert_on_deletion() {
    lifecycle("prov-osm", Provider::Osm, Object::TrafficSplit("v1alpha2"), false).await;
}

#[tokio::test]
async fn nginx_canary_ingress_lifecycle_with_revert_on_deletion() {
    lifecycle("prov-nginx", Provider::Nginx, Object::NginxIngress, true).await;
}

#[tokio::test]
async fn contour_httpproxy_lifecycle_without_revert_on_deletion() {
    lifecycle("prov-contour", Provider::Contour, Object::HttpProxy, false).await;
}

/// What flaggit's types serialize is server-side applied: unlike create, which prunes a field
/// the schema does not declare without a word, apply refuses it.
#[tokio::test]
async fn typed_routing_objects_pass_server_side_apply_against_the_real_crds() {
    use flaggit::router::{SmiVersion, traffic_split_spec};
    crate::support::install_routing_crds();
    let cp = control_plane();
    let client = cp.client().await;
    let ns = crate::support::TestNamespace::create(&client, "prov-ssa").await;
    let mut canary = canary_of("podinfo", Provider::Linkerd, analysis());
    canary.metadata.namespace = Some(ns.name.clone());
    for (version, routes) in [
        (SmiVersion::V1alpha1, flaggit::router::Routes::canary(30)),
        (SmiVersion::V1alpha2, flaggit::router::Routes::PRIMARY),
    ] {
        let spec = traffic_split_spec(&canary, version, routes).expect("spec");
        let api_version = match version {
            SmiVersion::V1alpha1 => "split.smi-spec.io/v1alpha1",
            _ => "split.smi-spec.io/v1alpha2",
        };
        let object = json!({
            "apiVersion": api_version,
            "kind": "TrafficSplit",
            "metadata": { "name": "podinfo", "namespace": ns.name },
            "spec": spec,
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
            applied["spec"],
            serde_json::to_value(&spec).expect("json"),
            "{version:?}: nothing pruned"
        );
    }
    // Contour: retries without retryOn (Flagger writes `retryOn: [""]`, which this CRD
    // refuses), timeouts and an A/B route.
    let mut ab = canary.clone();
    ab.spec.provider = Some(Provider::Contour);
    let service = ab.spec.service.as_mut().expect("service");
    service.timeout = Some("15s".into());
    service.retries = Some(flaggit::api::HttpRetry {
        attempts: Some(3),
        per_try_timeout: Some("5s".into()),
        ..Default::default()
    });
    let analysis = ab.spec.analysis.as_mut().expect("analysis");
    analysis.iterations = Some(5);
    analysis.match_ = Some(vec![flaggit::api::HttpMatchRequest {
        headers: Some(BTreeMap::from([(
            "x-canary".to_string(),
            flaggit::api::StringMatch {
                prefix: Some("ins".into()),
                ..Default::default()
            },
        )])),
        ..Default::default()
    }]);
    for routes in [
        flaggit::router::Routes::PRIMARY,
        flaggit::router::Routes::canary(100),
    ] {
        let spec = flaggit::router::http_proxy_spec(&ab, routes, Some("contour")).expect("spec");
        let object = json!({
            "apiVersion": "projectcontour.io/v1",
            "kind": "HTTPProxy",
            "metadata": { "name": "podinfo", "namespace": ns.name },
            "spec": spec,
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
            applied["spec"],
            serde_json::to_value(&spec).expect("json"),
            "nothing pruned"
        );
    }
    ns.delete(&client).await;
}
