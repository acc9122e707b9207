//! The `appmesh:v1beta2` provider (`appmesh.k8s.aws/v1beta2`, Flagger's
//! `appmesh_v1beta2.go`): VirtualNodes `<apex>-primary` and `<apex>-canary`, VirtualRouters
//! and VirtualServices `<apex>` and `<apex>-canary`. The weights live in the `<apex>`
//! VirtualRouter's first route; the `<apex>-canary` router always sends everything to the
//! canary node. A/B adds header routes before a primary-only fallback route.
//!
//! Unlike Flagger:
//! - The VirtualNodes select the pods the primary and canary Services select (the target's
//!   selector label and value), not `<selectorLabel>: <targetRef.name>[-primary]`, which
//!   selects nothing when the label's value is not the target's name.
//! - Each `analysis.match` entry is its own route (`<apex>-a`, `<apex>-a-1`, …): entries are
//!   alternatives. Flagger puts the headers of all entries in one route, so a request must
//!   match all of them. A match on anything but headers, or a header with more than one of
//!   exact/prefix/suffix/regex, is refused with the field named (Flagger ignores it).
//! - A `spec.service.timeout` or `retries.perTryTimeout` that is not a duration is refused
//!   (Flagger drops it silently). A deleted VirtualService is re-created and kept in line
//!   (Flagger only creates it with its router). The VirtualRouters and VirtualServices get
//!   the apex metadata and GitOps hands-off annotations too (Flagger: VirtualNodes only).

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed, get_typed,
    routing_meta, service_spec, typed_api, write_typed,
};
use crate::api::{Canary, Capabilities, HttpMatchRequest, StringMatch};

const GROUP: &str = "appmesh.k8s.aws";

/// VirtualNode, VirtualRouter and VirtualService, watched for drift.
pub const KINDS: &[RoutingKind] = &[
    RoutingKind {
        group: GROUP,
        version: "v1beta2",
        kind: "VirtualNode",
        plural: "virtualnodes",
        namespaced: true,
    },
    RoutingKind {
        group: GROUP,
        version: "v1beta2",
        kind: "VirtualRouter",
        plural: "virtualrouters",
        namespaced: true,
    },
    RoutingKind {
        group: GROUP,
        version: "v1beta2",
        kind: "VirtualService",
        plural: "virtualservices",
        namespaced: true,
    },
];
const VIRTUAL_NODE: &RoutingKind = &KINDS[0];
const VIRTUAL_ROUTER: &RoutingKind = &KINDS[1];
const VIRTUAL_SERVICE: &RoutingKind = &KINDS[2];

/// The Canary annotation that turns on the VirtualNodes' access log (Flagger's).
pub const ACCESS_LOG_ANNOTATION: &str = "appmesh.flagger.app/accesslog";

/// The mesh an object belongs to; filled in by the App Mesh controller, kept as found.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MeshRef {
    pub name: String,
    pub uid: String,
}

/// A reference to an App Mesh object by name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ObjectRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `VirtualNode.spec`: the fields Flagger writes and the two the App Mesh controller fills.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_ref: Option<MeshRef>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<ServiceDiscovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<Backend>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub port_mapping: PortMapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ListenerTimeout>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PortMapping {
    pub port: i32,
    /// `http` or `grpc` (the CRD also has `http2` and `tcp`).
    pub protocol: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ListenerTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTimeout>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<AppMeshDuration>,
}

/// App Mesh's duration: a value and a unit (`ms` or `s`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct AppMeshDuration {
    pub unit: String,
    pub value: i64,
}

impl AppMeshDuration {
    fn millis(value: i64) -> Self {
        Self {
            unit: "ms".into(),
            value,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ServiceDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsServiceDiscovery>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct DnsServiceDiscovery {
    pub hostname: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    pub virtual_service: VirtualServiceBackend,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service_ref: Option<ObjectRef>,
    #[serde(
        rename = "virtualServiceARN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub virtual_service_arn: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Logging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct AccessLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileAccessLog>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileAccessLog {
    pub path: String,
}

/// `VirtualRouter.spec`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualRouterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_ref: Option<MeshRef>,
    #[serde(default)]
    pub listeners: Vec<RouterListener>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouterListener {
    pub port_mapping: PortMapping,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRoute>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(rename = "match")]
    pub match_: HttpRouteMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HttpTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HttpRetryPolicy>,
    pub action: HttpRouteAction,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HttpRouteHeader>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HttpRouteHeader {
    pub name: String,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<HeaderMatchMethod>,
}

/// One of the four ways to match a header value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HeaderMatchMethod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_retry_events: Option<Vec<String>>,
    pub max_retries: i64,
    pub per_retry_timeout: AppMeshDuration,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_node_ref: Option<ObjectRef>,
    pub weight: i64,
}

/// `VirtualService.spec`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_ref: Option<MeshRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<VirtualServiceProvider>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_router: Option<VirtualRouterProvider>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualRouterProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_router_ref: Option<ObjectRef>,
}

/// A duration of the Canary's spec in milliseconds, or an error naming the field.
fn millis(field: &str, text: &str) -> Result<i64, Error> {
    crate::rollout::parse_duration(text)
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{field} {text:?} is not a duration: write it like 500ms, 15s or 1m"
            ))
        })
}

/// The port the mesh listens on: `targetPort` when it is a number, else `port`.
fn container_port(canary: &Canary) -> Result<i32, Error> {
    let svc = service_spec(canary)?;
    Ok(match &svc.target_port {
        Some(IntOrString::Int(port)) if *port > 0 => *port,
        _ => svc.port,
    })
}

/// `grpc` when `spec.service.portName` says so, else `http`.
fn protocol(canary: &Canary) -> String {
    let grpc = canary
        .spec
        .service
        .as_ref()
        .and_then(|s| s.port_name.as_deref())
        .is_some_and(|n| n.contains("grpc"));
    if grpc { "grpc" } else { "http" }.into()
}

fn route_timeout(canary: &Canary) -> Result<Option<HttpTimeout>, Error> {
    let timeout = service_spec(canary)?.timeout.as_deref().filter(|t| !t.is_empty());
    timeout
        .map(|t| {
            Ok(HttpTimeout {
                per_request: Some(AppMeshDuration::millis(millis("spec.service.timeout", t)?)),
            })
        })
        .transpose()
}

/// `spec.service.retries` as App Mesh's retry policy: at least one retry, 250 ms per try and
/// `gateway-error` unless said otherwise (Flagger's defaults).
fn retry_policy(canary: &Canary) -> Result<Option<HttpRetryPolicy>, Error> {
    let Some(retries) = service_spec(canary)?.retries.as_ref() else {
        return Ok(None);
    };
    let per_try = match retries.per_try_timeout.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => millis("spec.service.retries.perTryTimeout", t)?,
        None => 250,
    };
    let events = match retries.retry_on.as_deref().filter(|r| !r.is_empty()) {
        Some(on) => on.split(',').map(|e| e.trim().to_string()).collect(),
        None => vec!["gateway-error".to_string()],
    };
    Ok(Some(HttpRetryPolicy {
        http_retry_events: Some(events),
        max_retries: i64::from(retries.attempts.filter(|a| *a > 0).unwrap_or(1)),
        per_retry_timeout: AppMeshDuration::millis(per_try),
    }))
}

/// The VirtualNode spec of the primary or canary: a listener on the container port, DNS
/// discovery of `<service>.<ns>.svc.cluster.local.`, the pods `selector` names (the
/// Service's selector), the backends, and the access log when the Canary asks for it.
pub fn virtual_node_spec(
    canary: &Canary,
    service: &str,
    selector: BTreeMap<String, String>,
) -> Result<VirtualNodeSpec, Error> {
    let svc = service_spec(canary)?;
    let namespace = canary.namespace().unwrap_or_default();
    let backends: Vec<Backend> = svc
        .backends
        .iter()
        .flatten()
        .map(|b| Backend {
            virtual_service: if b.starts_with("arn:aws") {
                VirtualServiceBackend {
                    virtual_service_arn: Some(b.clone()),
                    ..Default::default()
                }
            } else {
                VirtualServiceBackend {
                    virtual_service_ref: Some(ObjectRef {
                        name: b.clone(),
                        namespace: None,
                    }),
                    ..Default::default()
                }
            },
        })
        .collect();
    let access_log = canary
        .annotations()
        .get(ACCESS_LOG_ANNOTATION)
        .is_some_and(|v| v == "enabled");
    Ok(VirtualNodeSpec {
        aws_name: None,
        mesh_ref: None,
        listeners: vec![Listener {
            port_mapping: PortMapping {
                port: container_port(canary)?,
                protocol: protocol(canary),
            },
            timeout: route_timeout(canary)?.map(|t| ListenerTimeout { http: Some(t) }),
        }],
        service_discovery: Some(ServiceDiscovery {
            dns: Some(DnsServiceDiscovery {
                hostname: format!("{service}.{namespace}.svc.cluster.local."),
            }),
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector),
            match_expressions: None,
        }),
        backends: (!backends.is_empty()).then_some(backends),
        logging: access_log.then(|| Logging {
            access_log: Some(AccessLog {
                file: Some(FileAccessLog {
                    path: "/dev/stdout".into(),
                }),
            }),
        }),
    })
}

/// Which of the two VirtualRouters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterRole {
    /// `<apex>`: carries the rollout's weights (and the A/B routes).
    Apex,
    /// `<apex>-canary`: always all to the canary node.
    Canary,
}

/// The header matches of `analysis.match`, one list per entry, or an error naming the field
/// App Mesh cannot express.
pub fn header_matches(matches: &[HttpMatchRequest]) -> Result<Vec<Vec<HttpRouteHeader>>, Error> {
    let refuse = |field: String, why: &str| {
        Error::Invalid(format!(
            "{field}: {why}; the appmesh provider matches request headers (exact, prefix, suffix or regex)"
        ))
    };
    if matches.len() > 10 {
        return Err(refuse(
            "spec.analysis.match".into(),
            "at most 10 alternatives fit before the fallback route",
        ));
    }
    let mut out = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        let other = [
            ("uri", m.uri.is_some()),
            ("method", m.method.is_some()),
            ("scheme", m.scheme.is_some()),
            ("authority", m.authority.is_some()),
            ("queryParams", m.query_params.is_some()),
            ("withoutHeaders", m.without_headers.is_some()),
            ("sourceLabels", m.source_labels.is_some()),
            ("port", m.port.is_some()),
        ];
        if let Some((name, _)) = other.iter().find(|(_, set)| *set) {
            return Err(refuse(
                format!("spec.analysis.match[{i}].{name}"),
                "App Mesh routes of flaggit cannot match on it",
            ));
        }
        let mut headers = Vec::new();
        for (name, value) in m.headers.iter().flatten() {
            let StringMatch {
                exact,
                prefix,
                suffix,
                regex,
            } = value.clone();
            let set = [&exact, &prefix, &suffix, &regex]
                .iter()
                .filter(|v| v.is_some())
                .count();
            if set != 1 {
                return Err(refuse(
                    format!("spec.analysis.match[{i}].headers.{name}"),
                    "set exactly one of exact, prefix, suffix, regex",
                ));
            }
            headers.push(HttpRouteHeader {
                name: name.clone(),
                match_: Some(HeaderMatchMethod {
                    exact,
                    prefix,
                    regex,
                    suffix,
                }),
            });
        }
        if headers.is_empty() || headers.len() > 10 {
            return Err(refuse(
                format!("spec.analysis.match[{i}].headers"),
                "each entry needs 1 to 10 headers",
            ));
        }
        out.push(headers);
    }
    Ok(out)
}

/// The name of the `i`th A/B route: `<apex>-a`, then `<apex>-a-1`, …
fn ab_route_name(apex: &str, i: usize) -> String {
    if i == 0 {
        format!("{apex}-a")
    } else {
        format!("{apex}-a-{i}")
    }
}

/// The VirtualRouter spec of `role` at `routes` (the apex router's weights; the canary
/// router is always all canary). See the module documentation for the A/B routes.
pub fn virtual_router_spec(
    canary: &Canary,
    role: RouterRole,
    routes: Routes,
) -> Result<VirtualRouterSpec, Error> {
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
    let timeout = route_timeout(canary)?;
    let retry_policy = retry_policy(canary)?;
    let routes = match role {
        RouterRole::Apex => routes,
        RouterRole::Canary => Routes::canary(100),
    };
    let node = |name: &str, weight: i32| WeightedTarget {
        virtual_node_ref: Some(ObjectRef {
            name: name.to_string(),
            namespace: None,
        }),
        weight: i64::from(weight),
    };
    let http_route = |headers: Option<Vec<HttpRouteHeader>>, targets: Vec<WeightedTarget>| HttpRoute {
        match_: HttpRouteMatch {
            prefix: Some(prefix.clone()),
            headers,
        },
        timeout: timeout.clone(),
        retry_policy: retry_policy.clone(),
        action: HttpRouteAction {
            weighted_targets: targets,
        },
    };
    let weighted = || {
        vec![
            node(&names.canary, routes.canary),
            node(&names.primary, routes.primary),
        ]
    };
    let ab = canary
        .spec
        .analysis()
        .and_then(|a| a.match_.as_ref())
        .filter(|m| !m.is_empty() && role == RouterRole::Apex);
    let route_list = match ab {
        None => vec![Route {
            name: match role {
                RouterRole::Apex => names.apex.clone(),
                RouterRole::Canary => names.canary.clone(),
            },
            priority: None,
            http_route: Some(http_route(None, weighted())),
        }],
        Some(matches) => {
            let mut list: Vec<Route> = header_matches(matches)?
                .into_iter()
                .enumerate()
                .map(|(i, headers)| Route {
                    name: ab_route_name(&names.apex, i),
                    priority: Some(10 + i64::try_from(i).unwrap_or(9)),
                    http_route: Some(http_route(Some(headers), weighted())),
                })
                .collect();
            list.push(Route {
                name: format!("{}-b", names.apex),
                priority: Some(20),
                http_route: Some(http_route(None, vec![node(&names.primary, 100)])),
            });
            list
        }
    };
    Ok(VirtualRouterSpec {
        aws_name: None,
        mesh_ref: None,
        listeners: vec![RouterListener {
            port_mapping: PortMapping {
                port: container_port(canary)?,
                protocol: protocol(canary),
            },
        }],
        routes: route_list,
    })
}

/// The weights of the apex VirtualRouter's first route; None when neither node has any.
pub fn routes_of_virtual_router(canary: &Canary, spec: &VirtualRouterSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let targets = &spec.routes.first()?.http_route.as_ref()?.action.weighted_targets;
    let weight_of = |name: &str| {
        targets
            .iter()
            .find(|t| t.virtual_node_ref.as_ref().is_some_and(|r| r.name == name))
            .map_or(0, |t| i32::try_from(t.weight).unwrap_or(0))
    };
    let (primary, canary) = (weight_of(&names.primary), weight_of(&names.canary));
    (primary > 0 || canary > 0).then_some(Routes {
        primary,
        canary,
        mirrored: false,
    })
}

/// The VirtualService `name` provided by the VirtualRouter of the same name.
pub fn virtual_service_spec(name: &str) -> VirtualServiceSpec {
    VirtualServiceSpec {
        aws_name: None,
        mesh_ref: None,
        provider: Some(VirtualServiceProvider {
            virtual_router: Some(VirtualRouterProvider {
                virtual_router_ref: Some(ObjectRef {
                    name: name.to_string(),
                    namespace: None,
                }),
            }),
        }),
    }
}

/// The App Mesh gateway annotations of the apex VirtualService, when `spec.service.hosts`
/// is set (Flagger's: each host followed by a comma).
pub fn gateway_annotations(canary: &Canary) -> BTreeMap<String, String> {
    let Some(svc) = canary.spec.service.as_ref() else {
        return BTreeMap::new();
    };
    let domains: String = svc.hosts.iter().flatten().map(|h| format!("{h},")).collect();
    if domains.is_empty() {
        return BTreeMap::new();
    }
    let mut a = BTreeMap::from([
        ("gateway.appmesh.k8s.aws/expose".to_string(), "true".to_string()),
        ("gateway.appmesh.k8s.aws/domain".to_string(), domains),
    ]);
    if let Some(timeout) = svc.timeout.as_ref().filter(|t| !t.is_empty()) {
        a.insert("gateway.appmesh.k8s.aws/timeout".into(), timeout.clone());
    }
    if let Some(attempts) = svc.retries.as_ref().and_then(|r| r.attempts).filter(|a| *a > 0) {
        a.insert("gateway.appmesh.k8s.aws/retries".into(), attempts.to_string());
    }
    a
}

/// The `appmesh:v1beta2` router.
pub struct AppMeshRouter {
    client: Client,
}

impl AppMeshRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The pod selector of a generated Service (the target's selector label, `-primary`
    /// valued for the primary), which the VirtualNode must select too.
    async fn selector_of(&self, canary: &Canary, name: &str) -> Result<BTreeMap<String, String>, Error> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &canary.namespace().unwrap_or_default());
        let service = api.get_opt(name).await.map_err(|source| Error::Get {
            kind: "Service",
            name: name.to_string(),
            source,
        })?;
        service
            .and_then(|s| s.spec)
            .and_then(|s| s.selector)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::NotReady(format!("Service {name} does not exist yet")))
    }

    async fn reconcile_node(&self, canary: &Canary, name: &str) -> Result<(), Error> {
        let api = typed_api(
            &self.client,
            VIRTUAL_NODE,
            &canary.namespace().unwrap_or_default(),
        );
        let mut spec = virtual_node_spec(canary, name, self.selector_of(canary, name).await?)?;
        let live: Option<Typed<VirtualNodeSpec>> = get_typed(&api, VIRTUAL_NODE, name).await?;
        if let Some(live) = &live {
            spec.aws_name = live.spec.aws_name.clone();
            spec.mesh_ref = live.spec.mesh_ref.clone();
        }
        let meta = routing_meta(canary, name, live.as_ref().map(|l| &l.metadata));
        write_typed(&api, VIRTUAL_NODE, live.as_ref(), meta, spec).await
    }

    async fn reconcile_router(&self, canary: &Canary, name: &str, role: RouterRole) -> Result<(), Error> {
        let api = typed_api(
            &self.client,
            VIRTUAL_ROUTER,
            &canary.namespace().unwrap_or_default(),
        );
        let live: Option<Typed<VirtualRouterSpec>> = get_typed(&api, VIRTUAL_ROUTER, name).await?;
        let routes = live
            .as_ref()
            .filter(|_| role == RouterRole::Apex)
            .and_then(|l| routes_of_virtual_router(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let mut spec = virtual_router_spec(canary, role, routes)?;
        if let Some(live) = &live {
            spec.aws_name = live.spec.aws_name.clone();
            spec.mesh_ref = live.spec.mesh_ref.clone();
        }
        let meta = routing_meta(canary, name, live.as_ref().map(|l| &l.metadata));
        write_typed(&api, VIRTUAL_ROUTER, live.as_ref(), meta, spec).await
    }

    async fn reconcile_service(&self, canary: &Canary, name: &str, role: RouterRole) -> Result<(), Error> {
        let api = typed_api(
            &self.client,
            VIRTUAL_SERVICE,
            &canary.namespace().unwrap_or_default(),
        );
        let live: Option<Typed<VirtualServiceSpec>> = get_typed(&api, VIRTUAL_SERVICE, name).await?;
        let mut spec = virtual_service_spec(name);
        if let Some(live) = &live {
            spec.aws_name = live.spec.aws_name.clone();
            spec.mesh_ref = live.spec.mesh_ref.clone();
        }
        let mut meta = routing_meta(canary, name, live.as_ref().map(|l| &l.metadata));
        if role == RouterRole::Apex {
            meta.annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(gateway_annotations(canary));
        }
        write_typed(&api, VIRTUAL_SERVICE, live.as_ref(), meta, spec).await
    }

    async fn apex_router(&self, canary: &Canary) -> Result<Typed<VirtualRouterSpec>, Error> {
        let api = typed_api(
            &self.client,
            VIRTUAL_ROUTER,
            &canary.namespace().unwrap_or_default(),
        );
        let name = ServiceNames::of(canary).apex;
        get_typed(&api, VIRTUAL_ROUTER, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("VirtualRouter {name} does not exist yet")))
    }
}

#[async_trait]
impl Router for AppMeshRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED_AB
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let names = ServiceNames::of(canary);
        self.reconcile_node(canary, &names.primary).await?;
        self.reconcile_node(canary, &names.canary).await?;
        // Each VirtualService after the VirtualRouter that provides it.
        self.reconcile_router(canary, &names.apex, RouterRole::Apex)
            .await?;
        self.reconcile_service(canary, &names.apex, RouterRole::Apex)
            .await?;
        self.reconcile_router(canary, &names.canary, RouterRole::Canary)
            .await?;
        self.reconcile_service(canary, &names.canary, RouterRole::Canary)
            .await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let live = self.apex_router(canary).await?;
        let names = ServiceNames::of(canary);
        let desired = virtual_router_spec(canary, RouterRole::Apex, request.routes)?;
        let mut spec = live.spec.clone();
        // The weighted routes (all but the A/B fallback) get the request's weights.
        let fallback = format!("{}-b", names.apex);
        let weighted = desired
            .routes
            .iter()
            .find(|r| r.name != fallback)
            .and_then(|r| r.http_route.as_ref())
            .map(|r| r.action.clone())
            .unwrap_or_default();
        for route in spec.routes.iter_mut().filter(|r| r.name != fallback) {
            if let Some(http) = route.http_route.as_mut() {
                http.action = weighted.clone();
            }
        }
        let api = typed_api(
            &self.client,
            VIRTUAL_ROUTER,
            &canary.namespace().unwrap_or_default(),
        );
        write_typed(&api, VIRTUAL_ROUTER, Some(&live), live.metadata.clone(), spec).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.apex_router(canary).await?;
        routes_of_virtual_router(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "VirtualRouter {} has no weight on the primary or canary node: reconcile rewrites it",
                live.name_any()
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // flaggit only ever creates these objects; the garbage collector removes them.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService, HttpRetry};

    fn canary(service: CanaryService, analysis: CanaryAnalysis) -> Canary {
        let mut c = crate::testing::podinfo(Some(service), Some(analysis));
        c.metadata.namespace = Some("test".into());
        c
    }

    fn svc() -> CanaryService {
        CanaryService {
            port: 9898,
            ..Default::default()
        }
    }

    fn header(name: &str, m: StringMatch) -> HttpMatchRequest {
        HttpMatchRequest {
            headers: Some(BTreeMap::from([(name.to_string(), m)])),
            ..Default::default()
        }
    }

    #[test]
    fn virtual_nodes_listen_discover_and_select_like_the_services() {
        let mut s = svc();
        s.target_port = Some(IntOrString::Int(8080));
        s.port_name = Some("grpc-api".into());
        s.timeout = Some("15s".into());
        s.backends = Some(vec![
            "backend.test".into(),
            "arn:aws:appmesh:eu-west-1:1:mesh/m/virtualService/x".into(),
        ]);
        let mut c = canary(s, CanaryAnalysis::default());
        c.metadata.annotations = Some(BTreeMap::from([(ACCESS_LOG_ANNOTATION.into(), "enabled".into())]));
        let spec = virtual_node_spec(
            &c,
            "podinfo-primary",
            BTreeMap::from([("app".into(), "podinfo-primary".into())]),
        )
        .expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({
                "listeners": [{
                    "portMapping": { "port": 8080, "protocol": "grpc" },
                    "timeout": { "http": { "perRequest": { "unit": "ms", "value": 15000 } } },
                }],
                "serviceDiscovery": { "dns": { "hostname": "podinfo-primary.test.svc.cluster.local." } },
                "podSelector": { "matchLabels": { "app": "podinfo-primary" } },
                "backends": [
                    { "virtualService": { "virtualServiceRef": { "name": "backend.test" } } },
                    { "virtualService": { "virtualServiceARN": "arn:aws:appmesh:eu-west-1:1:mesh/m/virtualService/x" } },
                ],
                "logging": { "accessLog": { "file": { "path": "/dev/stdout" } } },
            })
        );
    }

    #[test]
    fn the_apex_router_carries_the_weights_and_the_canary_router_all_canary() {
        let mut s = svc();
        s.retries = Some(Box::new(HttpRetry {
            attempts: Some(3),
            per_try_timeout: Some("5s".into()),
            retry_on: None,
        }));
        let c = canary(s, CanaryAnalysis::default());
        let apex = virtual_router_spec(&c, RouterRole::Apex, Routes::canary(30)).expect("builds");
        assert_eq!(
            serde_json::to_value(&apex).expect("json"),
            serde_json::json!({
                "listeners": [{ "portMapping": { "port": 9898, "protocol": "http" } }],
                "routes": [{
                    "name": "podinfo",
                    "httpRoute": {
                        "match": { "prefix": "/" },
                        "retryPolicy": {
                            "httpRetryEvents": ["gateway-error"],
                            "maxRetries": 3,
                            "perRetryTimeout": { "unit": "ms", "value": 5000 },
                        },
                        "action": { "weightedTargets": [
                            { "virtualNodeRef": { "name": "podinfo-canary" }, "weight": 30 },
                            { "virtualNodeRef": { "name": "podinfo-primary" }, "weight": 70 },
                        ] },
                    },
                }],
            })
        );
        assert_eq!(routes_of_virtual_router(&c, &apex), Some(Routes::canary(30)));
        let canary_router = virtual_router_spec(&c, RouterRole::Canary, Routes::PRIMARY).expect("builds");
        assert_eq!(canary_router.routes[0].name, "podinfo-canary");
        assert_eq!(
            routes_of_virtual_router(&c, &canary_router),
            Some(Routes::canary(100))
        );
    }

    #[test]
    fn ab_routes_are_alternatives_before_a_primary_fallback() {
        let analysis = CanaryAnalysis {
            iterations: Some(5),
            match_: Some(vec![
                header(
                    "x-canary",
                    StringMatch {
                        exact: Some("insider".into()),
                        ..Default::default()
                    },
                ),
                header(
                    "cookie",
                    StringMatch {
                        regex: Some("^(.*?;)?(canary=always)(;.*)?$".into()),
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        };
        let c = canary(svc(), analysis);
        let spec = virtual_router_spec(&c, RouterRole::Apex, Routes::canary(100)).expect("builds");
        let json = serde_json::to_value(&spec.routes).expect("json");
        assert_eq!(json[0]["name"], "podinfo-a");
        assert_eq!(json[0]["priority"], 10);
        assert_eq!(
            json[0]["httpRoute"]["match"],
            serde_json::json!({ "prefix": "/", "headers": [{ "name": "x-canary", "match": { "exact": "insider" } }] })
        );
        assert_eq!(json[1]["name"], "podinfo-a-1");
        assert_eq!(json[1]["priority"], 11);
        assert_eq!(
            json[1]["httpRoute"]["match"]["headers"][0]["match"],
            serde_json::json!({ "regex": "^(.*?;)?(canary=always)(;.*)?$" })
        );
        assert_eq!(json[2]["name"], "podinfo-b");
        assert_eq!(json[2]["priority"], 20);
        assert_eq!(
            json[2]["httpRoute"]["action"]["weightedTargets"],
            serde_json::json!([{ "virtualNodeRef": { "name": "podinfo-primary" }, "weight": 100 }])
        );
        assert_eq!(routes_of_virtual_router(&c, &spec), Some(Routes::canary(100)));
        // The canary router has no A/B routes.
        let canary_router = virtual_router_spec(&c, RouterRole::Canary, Routes::PRIMARY).expect("builds");
        assert_eq!(canary_router.routes.len(), 1);
    }

    #[test]
    fn what_app_mesh_cannot_match_is_refused_with_the_field() {
        let two_ways = header(
            "x-canary",
            StringMatch {
                exact: Some("a".into()),
                prefix: Some("b".into()),
                ..Default::default()
            },
        );
        let err = header_matches(&[two_ways]).expect_err("two ways");
        assert!(
            err.to_string()
                .contains("spec.analysis.match[0].headers.x-canary"),
            "{err}"
        );
        let uri = HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some("/api".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = header_matches(&[uri]).expect_err("uri");
        assert!(err.to_string().contains("spec.analysis.match[0].uri"), "{err}");
        let mut s = svc();
        s.timeout = Some("soon".into());
        let err = virtual_router_spec(
            &canary(s, CanaryAnalysis::default()),
            RouterRole::Apex,
            Routes::PRIMARY,
        )
        .expect_err("bad timeout");
        assert!(err.to_string().contains("spec.service.timeout"), "{err}");
    }

    #[test]
    fn gateway_annotations_follow_the_hosts() {
        let mut s = svc();
        assert!(gateway_annotations(&canary(s.clone(), CanaryAnalysis::default())).is_empty());
        s.hosts = Some(vec!["a.example.com".into(), "b.example.com".into()]);
        s.timeout = Some("10s".into());
        s.retries = Some(Box::new(HttpRetry {
            attempts: Some(2),
            ..Default::default()
        }));
        let a = gateway_annotations(&canary(s, CanaryAnalysis::default()));
        assert_eq!(a["gateway.appmesh.k8s.aws/expose"], "true");
        assert_eq!(
            a["gateway.appmesh.k8s.aws/domain"],
            "a.example.com,b.example.com,"
        );
        assert_eq!(a["gateway.appmesh.k8s.aws/timeout"], "10s");
        assert_eq!(a["gateway.appmesh.k8s.aws/retries"], "2");
        assert_eq!(
            serde_json::to_value(virtual_service_spec("podinfo")).expect("json"),
            serde_json::json!({ "provider": { "virtualRouter": { "virtualRouterRef": { "name": "podinfo" } } } })
        );
    }
}
