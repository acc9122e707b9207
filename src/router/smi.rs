//! The SMI providers — `linkerd`, `osm` and `smi:<version>[:<mesh>]`: one TrafficSplit
//! `<apex>` (`split.smi-spec.io`) whose backends `<apex>-canary` and `<apex>-primary` carry
//! the weights. One router, parametrised by the TrafficSplit version (Flagger's `smi.go`,
//! `smi_v1alpha2.go`, `smi_v1alpha3.go`).
//!
//! Unlike Flagger, reconcile keeps the live weights when it rewrites a changed spec (Flagger
//! puts all traffic back on the primary mid-rollout).

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed, created_meta,
    get_typed, service_spec, typed_api, write_typed,
};
use crate::api::{Canary, Capabilities};

const GROUP: &str = "split.smi-spec.io";

/// The annotation Istio's SMI adapter reads the gateways of the generated VirtualService from.
pub const ISTIO_GATEWAYS_ANNOTATION: &str = "VirtualService.v1alpha3.networking.istio.io/spec.gateways";

/// The TrafficSplit versions Flagger writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmiVersion {
    /// `linkerd` and `smi:v1alpha1`: weights are quantities, written as strings (`"100"`).
    V1alpha1,
    /// `osm` and `smi:v1alpha2`: integer weights.
    V1alpha2,
    /// `smi:v1alpha3`: integer weights. No current CRD serves this version.
    V1alpha3,
}

impl SmiVersion {
    fn kind(self) -> &'static RoutingKind {
        match self {
            Self::V1alpha1 => &KINDS[0],
            Self::V1alpha2 => &KINDS[1],
            Self::V1alpha3 => &KINDS[2],
        }
    }

    fn weight(self, weight: i32) -> IntOrString {
        match self {
            Self::V1alpha1 => IntOrString::String(weight.to_string()),
            Self::V1alpha2 | Self::V1alpha3 => IntOrString::Int(weight),
        }
    }
}

/// The TrafficSplit in each version, watched for drift (one served version is enough).
pub const KINDS: &[RoutingKind] = &[
    RoutingKind {
        group: GROUP,
        version: "v1alpha1",
        kind: "TrafficSplit",
        plural: "trafficsplits",
        namespaced: true,
    },
    RoutingKind {
        group: GROUP,
        version: "v1alpha2",
        kind: "TrafficSplit",
        plural: "trafficsplits",
        namespaced: true,
    },
    RoutingKind {
        group: GROUP,
        version: "v1alpha3",
        kind: "TrafficSplit",
        plural: "trafficsplits",
        namespaced: true,
    },
];

/// `spec` of a TrafficSplit (the fields of every version; `matches` only exists in v1alpha3
/// and is kept as found, never set).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The apex Service clients call.
    pub service: String,
    pub backends: Vec<TrafficSplitBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<TrafficSplitMatch>>,
}

/// A weighted backend Service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TrafficSplitBackend {
    pub service: String,
    /// A quantity (`"100"`) in v1alpha1, an integer in v1alpha2 and v1alpha3.
    pub weight: IntOrString,
}

/// A v1alpha3 match: a reference to an HTTPRouteGroup or TCPRoute.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    pub kind: String,
    pub name: String,
}

/// The SMI router.
pub struct SmiRouter {
    client: Client,
    version: SmiVersion,
    /// The mesh behind the TrafficSplit (`istio` adds the gateways annotation).
    mesh: Option<String>,
}

impl SmiRouter {
    pub fn new(client: Client, version: SmiVersion, mesh: Option<String>) -> Self {
        Self {
            client,
            version,
            mesh,
        }
    }
}

/// The TrafficSplit spec for `canary` at `routes`: service `hosts[0]` or the apex, backends
/// canary then primary (Flagger's order).
pub fn traffic_split_spec(
    canary: &Canary,
    version: SmiVersion,
    routes: Routes,
) -> Result<TrafficSplitSpec, Error> {
    let svc = service_spec(canary)?;
    let names = ServiceNames::of(canary);
    let service = svc
        .hosts
        .as_ref()
        .and_then(|h| h.first())
        .cloned()
        .unwrap_or(names.apex);
    Ok(TrafficSplitSpec {
        service,
        backends: vec![
            TrafficSplitBackend {
                service: names.canary,
                weight: version.weight(routes.canary),
            },
            TrafficSplitBackend {
                service: names.primary,
                weight: version.weight(routes.primary),
            },
        ],
        matches: None,
    })
}

/// The weights of the primary and canary backends; None when neither has any (Flagger's
/// "does not contain routes" error).
pub fn routes_of_traffic_split(canary: &Canary, spec: &TrafficSplitSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let weight_of = |service: &str| {
        spec.backends
            .iter()
            .find(|b| b.service == service)
            .and_then(|b| match &b.weight {
                IntOrString::Int(w) => Some(*w),
                IntOrString::String(w) => w.parse().ok(),
            })
            .unwrap_or(0)
    };
    let (primary, canary) = (weight_of(&names.primary), weight_of(&names.canary));
    (primary > 0 || canary > 0).then_some(Routes {
        primary,
        canary,
        mirrored: false,
    })
}

#[async_trait]
impl Router for SmiRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let kind = self.version.kind();
        let api = typed_api(&self.client, kind, &canary.namespace().unwrap_or_default());
        let name = ServiceNames::of(canary).apex;
        let live: Option<Typed<TrafficSplitSpec>> = get_typed(&api, kind, &name).await?;
        let Some(live) = live else {
            let mut meta = created_meta(canary, kind, &name);
            let gateways = service_spec(canary)?.gateways.clone().unwrap_or_default();
            if self.mesh.as_deref() == Some("istio") && !gateways.is_empty() {
                let value = serde_json::to_string(&gateways).unwrap_or_default();
                meta.annotations = Some(BTreeMap::from([(ISTIO_GATEWAYS_ANNOTATION.to_string(), value)]));
            }
            let spec = traffic_split_spec(canary, self.version, Routes::PRIMARY)?;
            return write_typed(&api, kind, None, meta, spec).await;
        };
        let routes = routes_of_traffic_split(canary, &live.spec).unwrap_or(Routes::PRIMARY);
        let mut spec = traffic_split_spec(canary, self.version, routes)?;
        spec.matches = live.spec.matches.clone();
        write_typed(&api, kind, Some(&live), live.metadata.clone(), spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let kind = self.version.kind();
        let api = typed_api(&self.client, kind, &canary.namespace().unwrap_or_default());
        let name = ServiceNames::of(canary).apex;
        let live: Typed<TrafficSplitSpec> = get_typed(&api, kind, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("TrafficSplit {name} does not exist yet")))?;
        let mut spec = live.spec.clone();
        spec.backends = traffic_split_spec(canary, self.version, request.routes)?.backends;
        write_typed(&api, kind, Some(&live), live.metadata.clone(), spec).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let kind = self.version.kind();
        let api = typed_api(&self.client, kind, &canary.namespace().unwrap_or_default());
        let names = ServiceNames::of(canary);
        let live: Typed<TrafficSplitSpec> = get_typed(&api, kind, &names.apex)
            .await?
            .ok_or_else(|| Error::NotReady(format!("TrafficSplit {} does not exist yet", names.apex)))?;
        routes_of_traffic_split(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "TrafficSplit {} has no weight on {} or {}: reconcile rewrites it",
                names.apex, names.primary, names.canary
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // flaggit only ever creates the TrafficSplit; the garbage collector removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService};

    fn canary(hosts: Option<Vec<String>>) -> Canary {
        crate::testing::podinfo(
            Some(CanaryService {
                port: 9898,
                hosts,
                ..Default::default()
            }),
            Some(CanaryAnalysis::default()),
        )
    }

    #[test]
    fn v1alpha1_weights_are_quantity_strings() {
        let c = canary(None);
        let spec = traffic_split_spec(&c, SmiVersion::V1alpha1, Routes::canary(30)).expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({
                "service": "podinfo",
                "backends": [
                    { "service": "podinfo-canary", "weight": "30" },
                    { "service": "podinfo-primary", "weight": "70" },
                ],
            })
        );
        assert_eq!(routes_of_traffic_split(&c, &spec), Some(Routes::canary(30)));
    }

    /// v1alpha3 is served by no current CRD, so this is its test below the API server: the
    /// exact JSON written, the read-back, and a `matches` list that survives a weight change.
    #[test]
    fn v1alpha2_and_v1alpha3_weights_are_integers() {
        let c = canary(Some(vec!["podinfo.test.svc.cluster.local".into()]));
        for version in [SmiVersion::V1alpha2, SmiVersion::V1alpha3] {
            let spec = traffic_split_spec(&c, version, Routes::PRIMARY).expect("builds");
            assert_eq!(
                serde_json::to_value(&spec).expect("json"),
                serde_json::json!({
                    "service": "podinfo.test.svc.cluster.local",
                    "backends": [
                        { "service": "podinfo-canary", "weight": 0 },
                        { "service": "podinfo-primary", "weight": 100 },
                    ],
                })
            );
            assert_eq!(routes_of_traffic_split(&c, &spec), Some(Routes::PRIMARY));
        }
        assert_eq!(SmiVersion::V1alpha3.kind().version, "v1alpha3");
        let live: TrafficSplitSpec = serde_json::from_value(serde_json::json!({
            "service": "podinfo",
            "backends": [
                { "service": "podinfo-canary", "weight": 0 },
                { "service": "podinfo-primary", "weight": 100 },
            ],
            "matches": [{ "kind": "HTTPRouteGroup", "name": "ab-test" }],
        }))
        .expect("a v1alpha3 split reads");
        assert_eq!(live.matches.as_ref().map(Vec::len), Some(1));
        let back = serde_json::to_value(&live).expect("json");
        assert_eq!(back["matches"][0]["kind"], "HTTPRouteGroup");
    }

    #[test]
    fn no_weights_means_no_routes() {
        let c = canary(None);
        let mut spec = traffic_split_spec(&c, SmiVersion::V1alpha2, Routes::PRIMARY).expect("builds");
        for b in &mut spec.backends {
            b.weight = IntOrString::Int(0);
        }
        assert_eq!(routes_of_traffic_split(&c, &spec), None);
        spec.backends.clear();
        assert_eq!(routes_of_traffic_split(&c, &spec), None);
    }
}
