//! The `kuma` provider: one cluster-scoped TrafficRoute (`kuma.io/v1alpha1`) splitting the
//! apex Kuma service `<apex>_<ns>_svc_<port>` between `<apex>-primary_…` and
//! `<apex>-canary_…` (Flagger's `kuma.go`).
//!
//! Unlike Flagger:
//! - The TrafficRoute is named `<apex>.<ns>`, not `<apex>`: it is cluster-scoped, so two
//!   namespaces with a Canary for the same apex would otherwise share (and fight over) one.
//! - A cluster-scoped object cannot have an owner reference to a namespaced Canary (the
//!   garbage collector ignores it), so flaggit marks it with the Canary's namespace/name,
//!   never touches one it did not create, and deletes it when the Canary is deleted (the
//!   Canary keeps a finalizer for that). Flagger leaves it behind.
//! - Reconcile keeps the live weights (Flagger writes 100/0 when anything else differs).

use std::borrow::Cow;
use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, post_params,
    routing_meta, service_spec,
};
use crate::api::{Canary, Capabilities};

/// The TrafficRoute, watched for drift. Cluster-scoped.
pub const KINDS: &[RoutingKind] = &[RoutingKind {
    group: "kuma.io",
    version: "v1alpha1",
    kind: "TrafficRoute",
    plural: "trafficroutes",
    namespaced: false,
}];

/// The annotation naming the Canary (`<namespace>/<name>`) a TrafficRoute belongs to: it
/// stands in for the owner reference a cluster-scoped object cannot have.
pub const CANARY_ANNOTATION: &str = "flaggit.dev/canary";

/// The Kuma tag that names a service.
const SERVICE_TAG: &str = "kuma.io/service";

/// The Canary annotation naming the Kuma mesh (Flagger's); `default` without it.
pub const MESH_ANNOTATION: &str = "kuma.io/mesh";

/// A Kuma TrafficRoute: `mesh` sits beside `spec`, so this is its own type rather than a
/// [`super::Typed`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TrafficRoute {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    pub spec: TrafficRouteSpec,
}

impl kube::Resource for TrafficRoute {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KINDS[0].kind.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        KINDS[0].group.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        KINDS[0].version.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        KINDS[0].plural.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `TrafficRoute.spec` (Kuma's `TrafficRoute` protobuf as JSON; the CRD keeps it schemaless).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TrafficRouteSpec {
    #[serde(default)]
    pub sources: Vec<Selector>,
    #[serde(default)]
    pub destinations: Vec<Selector>,
    #[serde(default)]
    pub conf: TrafficRouteConf,
}

/// Tags a data plane proxy must have.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Selector {
    #[serde(rename = "match", default)]
    pub match_: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TrafficRouteConf {
    #[serde(default)]
    pub split: Vec<Split>,
}

/// A weighted destination.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Split {
    pub weight: u32,
    pub destination: BTreeMap<String, String>,
}

/// The TrafficRoute's name for `canary`: `<apex>.<namespace>` (neither contains a dot).
pub fn traffic_route_name(canary: &Canary) -> String {
    format!(
        "{}.{}",
        ServiceNames::of(canary).apex,
        canary.namespace().unwrap_or_default()
    )
}

/// The `<namespace>/<name>` a TrafficRoute is marked with.
fn canary_id(canary: &Canary) -> String {
    format!("{}/{}", canary.namespace().unwrap_or_default(), canary.name_any())
}

/// The Kuma service name of a Kubernetes Service: `<name>_<ns>_svc_<port>`.
fn kuma_service(name: &str, canary: &Canary, port: i32) -> BTreeMap<String, String> {
    BTreeMap::from([(
        SERVICE_TAG.to_string(),
        format!("{name}_{}_svc_{port}", canary.namespace().unwrap_or_default()),
    )])
}

/// The TrafficRoute spec for `canary` at `routes`: every source, the apex destination, the
/// split primary first then canary (Flagger's order; both weights always written).
pub fn traffic_route_spec(canary: &Canary, routes: Routes) -> Result<TrafficRouteSpec, Error> {
    let port = service_spec(canary)?.port;
    let names = ServiceNames::of(canary);
    Ok(TrafficRouteSpec {
        sources: vec![Selector {
            match_: BTreeMap::from([(SERVICE_TAG.to_string(), "*".to_string())]),
        }],
        destinations: vec![Selector {
            match_: kuma_service(&names.apex, canary, port),
        }],
        conf: TrafficRouteConf {
            split: vec![
                Split {
                    weight: routes.primary.max(0).unsigned_abs(),
                    destination: kuma_service(&names.primary, canary, port),
                },
                Split {
                    weight: routes.canary.max(0).unsigned_abs(),
                    destination: kuma_service(&names.canary, canary, port),
                },
            ],
        },
    })
}

/// The weights of the split: the primary's, and the rest on the canary (as Flagger reads
/// them); None when the primary has no split entry and the canary none either.
pub fn routes_of_traffic_route(canary: &Canary, spec: &TrafficRouteSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let weight_of = |name: &str| {
        spec.conf
            .split
            .iter()
            .find(|s| {
                s.destination
                    .get(SERVICE_TAG)
                    .and_then(|service| service.split('_').next())
                    == Some(name)
            })
            .map(|s| i32::try_from(s.weight).unwrap_or(i32::MAX))
    };
    match (weight_of(&names.primary), weight_of(&names.canary)) {
        (Some(primary), _) if primary > 0 => Some(Routes {
            primary,
            canary: 100 - primary.min(100),
            mirrored: false,
        }),
        (_, Some(canary)) if canary > 0 => Some(Routes::canary(canary.min(100))),
        _ => None,
    }
}

/// Whether the live TrafficRoute was made for this Canary.
fn is_ours(live: &TrafficRoute, canary: &Canary) -> bool {
    live.annotations().get(CANARY_ANNOTATION) == Some(&canary_id(canary))
}

/// The error for a TrafficRoute of that name that flaggit did not create for this Canary.
fn not_ours(name: &str, canary: &Canary, live: &TrafficRoute) -> Error {
    let owner = live
        .annotations()
        .get(CANARY_ANNOTATION)
        .map_or_else(|| "nobody (not flaggit)".to_string(), |o| format!("Canary {o}"));
    Error::Invalid(format!(
        "TrafficRoute {name} exists and belongs to {owner}, not to Canary {}: delete it (a \
         TrafficRoute Flagger made is named after the apex alone) or set spec.service.name to \
         another apex",
        canary_id(canary)
    ))
}

/// The Kuma router.
pub struct KumaRouter {
    client: Client,
}

impl KumaRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self) -> Api<TrafficRoute> {
        Api::all(self.client.clone())
    }

    async fn get(&self, name: &str) -> Result<Option<TrafficRoute>, Error> {
        self.api().get_opt(name).await.map_err(|source| Error::Get {
            kind: KINDS[0].kind,
            name: name.to_string(),
            source,
        })
    }

    /// The live TrafficRoute of `canary`, refusing one that is not flaggit's for it.
    async fn get_ours(&self, canary: &Canary) -> Result<Option<TrafficRoute>, Error> {
        let name = traffic_route_name(canary);
        match self.get(&name).await? {
            Some(live) if !is_ours(&live, canary) => Err(not_ours(&name, canary, &live)),
            live => Ok(live),
        }
    }

    async fn write(&self, live: Option<&TrafficRoute>, route: TrafficRoute) -> Result<(), Error> {
        let name = route.name_any();
        let apply_err = |source| Error::Apply {
            kind: KINDS[0].kind,
            name: name.clone(),
            source,
        };
        match live {
            Some(live) => {
                if live.metadata.labels == route.metadata.labels
                    && live.metadata.annotations == route.metadata.annotations
                    && live.spec == route.spec
                {
                    return Ok(());
                }
                self.api()
                    .replace(&name, &post_params(), &route)
                    .await
                    .map_err(apply_err)?;
            }
            None => {
                self.api()
                    .create(&post_params(), &route)
                    .await
                    .map_err(apply_err)?;
            }
        }
        Ok(())
    }
}

/// The metadata of the TrafficRoute: the apex metadata and GitOps hands-off annotations
/// (over the live object's, so foreign keys survive), no namespace, no owner reference,
/// and the Canary it belongs to.
fn traffic_route_meta(canary: &Canary, name: &str, live: Option<&ObjectMeta>) -> ObjectMeta {
    let mut meta = routing_meta(canary, name, live);
    if live.is_none() {
        meta.namespace = None;
        meta.owner_references = None;
    }
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CANARY_ANNOTATION.to_string(), canary_id(canary));
    meta
}

/// A new TrafficRoute for `canary` with all traffic on the primary, in the mesh the
/// Canary's `kuma.io/mesh` annotation names (`default` without it).
pub fn new_traffic_route(canary: &Canary) -> Result<TrafficRoute, Error> {
    let name = traffic_route_name(canary);
    Ok(TrafficRoute {
        api_version: format!("{}/{}", KINDS[0].group, KINDS[0].version),
        kind: KINDS[0].kind.to_string(),
        metadata: traffic_route_meta(canary, &name, None),
        mesh: Some(
            canary
                .annotations()
                .get(MESH_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| "default".into()),
        ),
        spec: traffic_route_spec(canary, Routes::PRIMARY)?,
    })
}

#[async_trait]
impl Router for KumaRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let Some(live) = self.get_ours(canary).await? else {
            return self.write(None, new_traffic_route(canary)?).await;
        };
        let routes = routes_of_traffic_route(canary, &live.spec).unwrap_or(Routes::PRIMARY);
        let mut route = live.clone();
        route.metadata = traffic_route_meta(canary, &live.name_any(), Some(&live.metadata));
        route.spec = traffic_route_spec(canary, routes)?;
        self.write(Some(&live), route).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let name = traffic_route_name(canary);
        let live = self
            .get_ours(canary)
            .await?
            .ok_or_else(|| Error::NotReady(format!("TrafficRoute {name} does not exist yet")))?;
        let mut route = live.clone();
        route.spec.conf = traffic_route_spec(canary, request.routes)?.conf;
        self.write(Some(&live), route).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let name = traffic_route_name(canary);
        let live = self
            .get_ours(canary)
            .await?
            .ok_or_else(|| Error::NotReady(format!("TrafficRoute {name} does not exist yet")))?;
        routes_of_traffic_route(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "TrafficRoute {name} has no weight on the primary or the canary: reconcile rewrites it"
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // Nothing was taken over; the TrafficRoute itself goes in `delete`.
        Ok(())
    }

    fn cleans_up(&self) -> bool {
        true
    }

    async fn delete(&self, canary: &Canary) -> Result<(), Error> {
        let name = traffic_route_name(canary);
        let Some(live) = self.get(&name).await? else {
            return Ok(());
        };
        if !is_ours(&live, canary) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api().delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(source) => Err(Error::Apply {
                kind: KINDS[0].kind,
                name,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService, CustomMetadata};

    fn canary() -> Canary {
        let mut c = crate::testing::podinfo(
            Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            Some(CanaryAnalysis::default()),
        );
        c.metadata.namespace = Some("test".into());
        c
    }

    #[test]
    fn a_new_traffic_route_has_flaggers_spec_and_a_namespaced_name() {
        let mut c = canary();
        c.spec.service.as_mut().expect("service").apex = Some(Box::new(CustomMetadata {
            labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            annotations: None,
        }));
        let route = new_traffic_route(&c).expect("builds");
        assert_eq!(
            serde_json::to_value(&route).expect("json"),
            serde_json::json!({
                "apiVersion": "kuma.io/v1alpha1",
                "kind": "TrafficRoute",
                "metadata": {
                    "name": "podinfo.test",
                    "labels": { "team": "a" },
                    "annotations": {
                        "flaggit.dev/canary": "test/podinfo",
                        "helm.toolkit.fluxcd.io/driftDetection": "disabled",
                        "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
                    },
                },
                "mesh": "default",
                "spec": {
                    "sources": [{ "match": { "kuma.io/service": "*" } }],
                    "destinations": [{ "match": { "kuma.io/service": "podinfo_test_svc_9898" } }],
                    "conf": { "split": [
                        { "weight": 100, "destination": { "kuma.io/service": "podinfo-primary_test_svc_9898" } },
                        { "weight": 0, "destination": { "kuma.io/service": "podinfo-canary_test_svc_9898" } },
                    ] },
                },
            })
        );
        assert_eq!(routes_of_traffic_route(&c, &route.spec), Some(Routes::PRIMARY));
        c.metadata.annotations = Some(BTreeMap::from([(MESH_ANNOTATION.into(), "prod".into())]));
        assert_eq!(
            new_traffic_route(&c).expect("builds").mesh.as_deref(),
            Some("prod")
        );
    }

    #[test]
    fn the_same_apex_in_two_namespaces_gets_two_traffic_routes() {
        let a = canary();
        let mut b = canary();
        b.metadata.namespace = Some("other".into());
        assert_ne!(traffic_route_name(&a), traffic_route_name(&b));
        let route = new_traffic_route(&b).expect("builds");
        assert!(!is_ours(&route, &a));
        assert!(is_ours(&route, &b));
        let text = not_ours("podinfo.test", &a, &route).to_string();
        assert!(text.contains("Canary other/podinfo"), "{text}");
    }

    #[test]
    fn weights_are_read_from_the_primary_split() {
        let c = canary();
        let spec = traffic_route_spec(&c, Routes::canary(40)).expect("builds");
        assert_eq!(spec.conf.split[0].weight, 60);
        assert_eq!(spec.conf.split[1].weight, 40);
        assert_eq!(routes_of_traffic_route(&c, &spec), Some(Routes::canary(40)));
        let all = traffic_route_spec(&c, Routes::canary(100)).expect("builds");
        assert_eq!(routes_of_traffic_route(&c, &all), Some(Routes::canary(100)));
        let mut none = spec.clone();
        none.conf.split.iter_mut().for_each(|s| s.weight = 0);
        assert_eq!(routes_of_traffic_route(&c, &none), None);
        none.conf.split.clear();
        assert_eq!(routes_of_traffic_route(&c, &none), None);
    }
}
