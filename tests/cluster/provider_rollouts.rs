//! Each provider beyond Istio and Gateway API through the running controller, with its real
//! CRD installed: initialization, a hand edit put back, a promoting rollout and a rollback
//! with the routing object's exact weights at each step, and off-boarding with or without
//! `revertOnDeletion`. The objects flaggit's types serialize are also server-side applied,
//! which (unlike create) refuses any field the CRD schema does not declare. The shared steps
//! are in `provider_support.rs`; the ingress providers are in `provider_rollouts_ingress.rs`.

use std::collections::BTreeMap;

use flaggit::api::{Canary, Provider};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::provider_support::{RoutingObject, lifecycle, original_ingress, owner_uids};
use crate::rollout::{analysis, canary_of};
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
}

#[async_trait::async_trait]
impl RoutingObject for Object {
    async fn prepare(&self, client: &Client, ns: &str, canary: &mut Canary) {
        if matches!(self, Self::NginxIngress) {
            let annotations = BTreeMap::from([(
                "nginx.ingress.kubernetes.io/rewrite-target".to_string(),
                "/".to_string(),
            )]);
            original_ingress(client, ns, annotations, canary).await;
        }
    }

    async fn weights(&self, client: &Client, ns: &str) -> Option<(i64, i64)> {
        match *self {
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

    async fn hand_edit(&self, client: &Client, ns: &str) {
        match *self {
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

    async fn owners(&self, client: &Client, ns: &str) -> Option<Vec<String>> {
        let meta = match *self {
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
        Some(owner_uids(meta))
    }
}

#[tokio::test]
async fn linkerd_trafficsplit_v1alpha1_lifecycle_with_revert_on_deletion() {
    lifecycle(
        "prov-linkerd",
        Provider::Linkerd,
        &Object::TrafficSplit("v1alpha1"),
        true,
    )
    .await;
}

#[tokio::test]
async fn osm_trafficsplit_v1alpha2_lifecycle_without_revert_on_deletion() {
    lifecycle(
        "prov-osm",
        Provider::Osm,
        &Object::TrafficSplit("v1alpha2"),
        false,
    )
    .await;
}

#[tokio::test]
async fn nginx_canary_ingress_lifecycle_with_revert_on_deletion() {
    lifecycle("prov-nginx", Provider::Nginx, &Object::NginxIngress, true).await;
}

#[tokio::test]
async fn contour_httpproxy_lifecycle_without_revert_on_deletion() {
    lifecycle("prov-contour", Provider::Contour, &Object::HttpProxy, false).await;
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
    service.retries = Some(Box::new(flaggit::api::HttpRetry {
        attempts: Some(3),
        per_try_timeout: Some("5s".into()),
        ..Default::default()
    }));
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
