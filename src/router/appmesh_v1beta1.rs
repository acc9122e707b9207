//! The legacy `appmesh` provider (`appmesh.k8s.aws/v1beta1`, the pre-1.0 App Mesh
//! controller; Flagger's `appmesh.go`): VirtualNodes `<apex>`, `<apex>-primary` and
//! `<apex>-canary` in `spec.service.meshName`, and VirtualServices `<apex>.<ns>` and
//! `<apex>-canary.<ns>` whose inline virtual router routes carry the weights.
//!
//! No current CRD serves v1beta1 (the 1.x controller serves v1beta2 under the same names),
//! so this router is tested below the API server: the exact JSON it writes and reads.
//!
//! Unlike Flagger: A/B entries are alternative routes and unexpressible matches are refused
//! (as for `appmesh:v1beta2`); an unchanged VirtualNode is not rewritten on every reconcile
//! (Flagger compares its labels with the live annotations); the gateway annotations are
//! added to the apex VirtualService's annotations rather than replacing them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::appmesh::{
    AccessLog, FileAccessLog, HttpRouteHeader, Logging, PortMapping, RouterRole, gateway_annotations,
    header_matches,
};
use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed, get_typed,
    routing_meta, service_spec, typed_api, write_typed,
};
use crate::api::{Canary, Capabilities};

const GROUP: &str = "appmesh.k8s.aws";

/// VirtualNode and VirtualService v1beta1, watched for drift where served.
pub const KINDS: &[RoutingKind] = &[
    RoutingKind {
        group: GROUP,
        version: "v1beta1",
        kind: "VirtualNode",
        plural: "virtualnodes",
        namespaced: true,
    },
    RoutingKind {
        group: GROUP,
        version: "v1beta1",
        kind: "VirtualService",
        plural: "virtualservices",
        namespaced: true,
    },
];
const VIRTUAL_NODE: &RoutingKind = &KINDS[0];
const VIRTUAL_SERVICE: &RoutingKind = &KINDS[1];

/// `VirtualNode.spec` (v1beta1).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeSpec {
    pub mesh_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<ServiceDiscovery>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub port_mapping: PortMapping,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ServiceDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsServiceDiscovery>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsServiceDiscovery {
    pub host_name: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    pub virtual_service: VirtualServiceBackend,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceBackend {
    pub virtual_service_name: String,
}

/// `VirtualService.spec` (v1beta1): the virtual router and its routes inline.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    pub mesh_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_router: Option<VirtualRouter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct VirtualRouter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Route {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(rename = "match")]
    pub match_: HttpRouteMatch,
    pub action: HttpRouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HttpRetryPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HttpRouteMatch {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HttpRouteHeader>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteAction {
    #[serde(default)]
    pub weighted_targets: Vec<WeightedTarget>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedTarget {
    pub virtual_node_name: String,
    pub weight: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_retry_timeout_millis: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_retry_events: Option<Vec<String>>,
}

/// `spec.service.meshName`, which v1beta1 objects need.
fn mesh_name(canary: &Canary) -> Result<String, Error> {
    service_spec(canary)?
        .mesh_name
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            Error::Invalid(
                "spec.service.meshName is required by the appmesh provider (App Mesh v1beta1): \
                 set it to your mesh, or use provider appmesh:v1beta2"
                    .into(),
            )
        })
}

fn protocol(canary: &Canary) -> String {
    let grpc = canary
        .spec
        .service
        .as_ref()
        .and_then(|s| s.port_name.as_deref())
        .is_some_and(|n| n.contains("grpc"));
    if grpc { "grpc" } else { "http" }.into()
}

/// The VirtualNode `name`, discovered by DNS as `host` (Flagger gives the apex node the
/// primary's host).
pub fn virtual_node_spec(canary: &Canary, host: &str) -> Result<VirtualNodeSpec, Error> {
    let svc = service_spec(canary)?;
    let access_log = canary
        .annotations()
        .get(super::appmesh::ACCESS_LOG_ANNOTATION)
        .is_some_and(|v| v == "enabled");
    Ok(VirtualNodeSpec {
        mesh_name: mesh_name(canary)?,
        listeners: vec![Listener {
            port_mapping: PortMapping {
                port: svc.port,
                protocol: protocol(canary),
            },
        }],
        service_discovery: Some(ServiceDiscovery {
            dns: Some(DnsServiceDiscovery {
                host_name: host.to_string(),
            }),
        }),
        backends: svc
            .backends
            .iter()
            .flatten()
            .map(|b| Backend {
                virtual_service: VirtualServiceBackend {
                    virtual_service_name: b.clone(),
                },
            })
            .collect(),
        logging: access_log.then(|| Logging {
            access_log: Some(AccessLog {
                file: Some(FileAccessLog {
                    path: "/dev/stdout".into(),
                }),
            }),
        }),
    })
}

fn retry_policy(canary: &Canary) -> Result<Option<HttpRetryPolicy>, Error> {
    let Some(retries) = service_spec(canary)?.retries.as_ref() else {
        return Ok(None);
    };
    let per_try = match retries.per_try_timeout.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => crate::rollout::parse_duration(t)
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "spec.service.retries.perTryTimeout {t:?} is not a duration: write it like 500ms or 5s"
                ))
            })?,
        None => 250,
    };
    let events = match retries.retry_on.as_deref().filter(|r| !r.is_empty()) {
        Some(on) => on.split(',').map(|e| e.trim().to_string()).collect(),
        None => vec!["gateway-error".to_string()],
    };
    Ok(Some(HttpRetryPolicy {
        per_retry_timeout_millis: Some(per_try),
        max_retries: Some(i64::from(retries.attempts.filter(|a| *a > 0).unwrap_or(1))),
        http_retry_events: Some(events),
    }))
}

/// The VirtualService spec of `role` at `routes` (the canary one always all canary).
pub fn virtual_service_spec(
    canary: &Canary,
    role: RouterRole,
    routes: Routes,
) -> Result<VirtualServiceSpec, Error> {
    let svc = service_spec(canary)?;
    let names = ServiceNames::of(canary);
    let prefix = svc
        .match_
        .as_ref()
        .and_then(|m| m.first())
        .and_then(|m| m.uri.as_ref())
        .and_then(|u| u.prefix.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let retry_policy = retry_policy(canary)?;
    let routes = match role {
        RouterRole::Apex => routes,
        RouterRole::Canary => Routes::canary(100),
    };
    let router_name = match role {
        RouterRole::Apex => names.apex.clone(),
        RouterRole::Canary => names.canary.clone(),
    };
    let target = |name: &str, weight: i32| WeightedTarget {
        virtual_node_name: name.to_string(),
        weight: i64::from(weight),
    };
    let weighted = || {
        vec![
            target(&names.canary, routes.canary),
            target(&names.primary, routes.primary),
        ]
    };
    let http = |headers: Option<Vec<HttpRouteHeader>>, targets: Vec<WeightedTarget>| HttpRoute {
        match_: HttpRouteMatch {
            prefix: prefix.clone(),
            headers,
        },
        action: HttpRouteAction {
            weighted_targets: targets,
        },
        retry_policy: retry_policy.clone(),
    };
    let ab = canary
        .spec
        .analysis()
        .and_then(|a| a.match_.as_ref())
        .filter(|m| !m.is_empty() && role == RouterRole::Apex);
    let route_list = match ab {
        None => vec![Route {
            name: router_name.clone(),
            http: Some(http(None, weighted())),
            priority: None,
        }],
        Some(matches) => {
            let mut list: Vec<Route> = header_matches(matches)?
                .into_iter()
                .enumerate()
                .map(|(i, headers)| Route {
                    name: if i == 0 {
                        format!("{}-a", names.apex)
                    } else {
                        format!("{}-a-{i}", names.apex)
                    },
                    http: Some(http(Some(headers), weighted())),
                    priority: Some(10 + i64::try_from(i).unwrap_or(9)),
                })
                .collect();
            list.push(Route {
                name: format!("{}-b", names.apex),
                http: Some(http(None, vec![target(&names.primary, 100)])),
                priority: Some(20),
            });
            list
        }
    };
    Ok(VirtualServiceSpec {
        mesh_name: mesh_name(canary)?,
        virtual_router: Some(VirtualRouter {
            name: router_name,
            listeners: vec![Listener {
                port_mapping: PortMapping {
                    port: svc.port,
                    protocol: protocol(canary),
                },
            }],
        }),
        routes: route_list,
    })
}

/// The weights of the first route; None when neither node has any.
pub fn routes_of_virtual_service(canary: &Canary, spec: &VirtualServiceSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let targets = &spec.routes.first()?.http.as_ref()?.action.weighted_targets;
    let weight_of = |name: &str| {
        targets
            .iter()
            .find(|t| t.virtual_node_name == name)
            .map_or(0, |t| i32::try_from(t.weight).unwrap_or(0))
    };
    let (primary, canary) = (weight_of(&names.primary), weight_of(&names.canary));
    (primary > 0 || canary > 0).then_some(Routes {
        primary,
        canary,
        mirrored: false,
    })
}

/// The names of the VirtualServices: `<apex>.<ns>` and `<apex>-canary.<ns>`.
pub fn virtual_service_name(canary: &Canary, role: RouterRole) -> String {
    let names = ServiceNames::of(canary);
    let service = match role {
        RouterRole::Apex => names.apex,
        RouterRole::Canary => names.canary,
    };
    format!("{service}.{}", canary.namespace().unwrap_or_default())
}

/// The legacy `appmesh` router.
pub struct AppMeshV1beta1Router {
    client: Client,
}

impl AppMeshV1beta1Router {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn reconcile_node(&self, canary: &Canary, name: &str, host: &str) -> Result<(), Error> {
        let api = typed_api(
            &self.client,
            VIRTUAL_NODE,
            &canary.namespace().unwrap_or_default(),
        );
        let spec = virtual_node_spec(canary, host)?;
        let live: Option<Typed<VirtualNodeSpec>> = get_typed(&api, VIRTUAL_NODE, name).await?;
        let meta = routing_meta(canary, name, live.as_ref().map(|l| &l.metadata));
        write_typed(&api, VIRTUAL_NODE, live.as_ref(), meta, spec).await
    }

    async fn reconcile_service(&self, canary: &Canary, role: RouterRole) -> Result<(), Error> {
        let api = typed_api(
            &self.client,
            VIRTUAL_SERVICE,
            &canary.namespace().unwrap_or_default(),
        );
        let name = virtual_service_name(canary, role);
        let live: Option<Typed<VirtualServiceSpec>> = get_typed(&api, VIRTUAL_SERVICE, &name).await?;
        let routes = live
            .as_ref()
            .filter(|_| role == RouterRole::Apex)
            .and_then(|l| routes_of_virtual_service(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let spec = virtual_service_spec(canary, role, routes)?;
        let mut meta = routing_meta(canary, &name, live.as_ref().map(|l| &l.metadata));
        if role == RouterRole::Apex {
            meta.annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(gateway_annotations(canary));
        }
        write_typed(&api, VIRTUAL_SERVICE, live.as_ref(), meta, spec).await
    }

    async fn apex_service(&self, canary: &Canary) -> Result<Typed<VirtualServiceSpec>, Error> {
        let api = typed_api(
            &self.client,
            VIRTUAL_SERVICE,
            &canary.namespace().unwrap_or_default(),
        );
        let name = virtual_service_name(canary, RouterRole::Apex);
        get_typed(&api, VIRTUAL_SERVICE, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("VirtualService {name} does not exist yet")))
    }
}

#[async_trait]
impl Router for AppMeshV1beta1Router {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED_AB
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let names = ServiceNames::of(canary);
        let ns = canary.namespace().unwrap_or_default();
        let primary_host = format!("{}.{ns}", names.primary);
        self.reconcile_node(canary, &names.apex, &primary_host).await?;
        self.reconcile_node(canary, &names.primary, &primary_host).await?;
        self.reconcile_node(canary, &names.canary, &format!("{}.{ns}", names.canary))
            .await?;
        self.reconcile_service(canary, RouterRole::Apex).await?;
        self.reconcile_service(canary, RouterRole::Canary).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let live = self.apex_service(canary).await?;
        let desired = virtual_service_spec(canary, RouterRole::Apex, request.routes)?;
        let fallback = format!("{}-b", ServiceNames::of(canary).apex);
        let action = desired
            .routes
            .first()
            .and_then(|r| r.http.as_ref())
            .map(|h| h.action.clone())
            .unwrap_or_default();
        let mut spec = live.spec.clone();
        for route in spec.routes.iter_mut().filter(|r| r.name != fallback) {
            if let Some(http) = route.http.as_mut() {
                http.action = action.clone();
            }
        }
        let api = typed_api(
            &self.client,
            VIRTUAL_SERVICE,
            &canary.namespace().unwrap_or_default(),
        );
        write_typed(&api, VIRTUAL_SERVICE, Some(&live), live.metadata.clone(), spec).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.apex_service(canary).await?;
        routes_of_virtual_service(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "VirtualService {} has no weight on the primary or canary node: reconcile rewrites it",
                live.name_any()
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // flaggit only ever creates these objects; the garbage collector removes them.
        Ok(())
    }
}

/// v1beta1 is served by no current CRD: these are its tests below the API server.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService, HttpMatchRequest, HttpRetry, StringMatch};

    fn canary(mesh: Option<&str>, analysis: CanaryAnalysis) -> Canary {
        let mut c = crate::testing::podinfo(
            Some(CanaryService {
                port: 9898,
                mesh_name: mesh.map(str::to_string),
                backends: Some(vec!["backend.test".into()]),
                retries: Some(Box::new(HttpRetry {
                    attempts: Some(2),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            Some(analysis),
        );
        c.metadata.namespace = Some("test".into());
        c
    }

    #[test]
    fn virtual_nodes_name_the_mesh_and_the_host() {
        let c = canary(Some("global"), CanaryAnalysis::default());
        let spec = virtual_node_spec(&c, "podinfo-primary.test").expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({
                "meshName": "global",
                "listeners": [{ "portMapping": { "port": 9898, "protocol": "http" } }],
                "serviceDiscovery": { "dns": { "hostName": "podinfo-primary.test" } },
                "backends": [{ "virtualService": { "virtualServiceName": "backend.test" } }],
            })
        );
        let err = virtual_node_spec(&canary(None, CanaryAnalysis::default()), "x").expect_err("no mesh");
        assert!(err.to_string().contains("spec.service.meshName"), "{err}");
    }

    #[test]
    fn the_apex_virtual_service_carries_the_weights() {
        let c = canary(Some("global"), CanaryAnalysis::default());
        assert_eq!(virtual_service_name(&c, RouterRole::Apex), "podinfo.test");
        assert_eq!(
            virtual_service_name(&c, RouterRole::Canary),
            "podinfo-canary.test"
        );
        let spec = virtual_service_spec(&c, RouterRole::Apex, Routes::canary(20)).expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({
                "meshName": "global",
                "virtualRouter": {
                    "name": "podinfo",
                    "listeners": [{ "portMapping": { "port": 9898, "protocol": "http" } }],
                },
                "routes": [{
                    "name": "podinfo",
                    "http": {
                        "match": { "prefix": "/" },
                        "action": { "weightedTargets": [
                            { "virtualNodeName": "podinfo-canary", "weight": 20 },
                            { "virtualNodeName": "podinfo-primary", "weight": 80 },
                        ] },
                        "retryPolicy": {
                            "perRetryTimeoutMillis": 250,
                            "maxRetries": 2,
                            "httpRetryEvents": ["gateway-error"],
                        },
                    },
                }],
            })
        );
        // What the API server gives back reads back to the same weights.
        let read: VirtualServiceSpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("json")).expect("reads");
        assert_eq!(routes_of_virtual_service(&c, &read), Some(Routes::canary(20)));
        let canary_vs = virtual_service_spec(&c, RouterRole::Canary, Routes::PRIMARY).expect("builds");
        assert_eq!(
            canary_vs.virtual_router.as_ref().map(|r| r.name.as_str()),
            Some("podinfo-canary")
        );
        assert_eq!(
            routes_of_virtual_service(&c, &canary_vs),
            Some(Routes::canary(100))
        );
    }

    #[test]
    fn ab_routes_match_headers_then_fall_back_to_the_primary() {
        let analysis = CanaryAnalysis {
            iterations: Some(5),
            match_: Some(vec![HttpMatchRequest {
                headers: Some(BTreeMap::from([(
                    "x-canary".to_string(),
                    StringMatch {
                        prefix: Some("ins".into()),
                        ..Default::default()
                    },
                )])),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let c = canary(Some("global"), analysis);
        let spec = virtual_service_spec(&c, RouterRole::Apex, Routes::PRIMARY).expect("builds");
        let json = serde_json::to_value(&spec.routes).expect("json");
        assert_eq!(json[0]["name"], "podinfo-a");
        assert_eq!(json[0]["priority"], 10);
        assert_eq!(
            json[0]["http"]["match"],
            serde_json::json!({ "prefix": "/", "headers": [{ "name": "x-canary", "match": { "prefix": "ins" } }] })
        );
        assert_eq!(json[1]["name"], "podinfo-b");
        assert_eq!(
            json[1]["http"]["action"]["weightedTargets"],
            serde_json::json!([{ "virtualNodeName": "podinfo-primary", "weight": 100 }])
        );
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(Routes::PRIMARY));
    }
}
