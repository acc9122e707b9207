//! The `gloo` provider: Upstreams `<ns>-<apex>-primaryupstream-<port>` and
//! `<ns>-<apex>-canaryupstream-<port>` (`gloo.solo.io/v1`) for the generated Services, and a
//! RouteTable `<apex>` (`gateway.solo.io/v1`) splitting between them, meant to be delegated to
//! from the user's VirtualService (Flagger's `gloo.go`). A/B adds a first route with the
//! `analysis.match` headers, methods and query parameters.
//!
//! Unlike Flagger: the Upstream copies only fields Gloo's schema has (Flagger also copies
//! `labels` and `httpProxyHostName`, which the API server prunes, and loses
//! `httpProxyHostname`); an A/B RouteTable keeps a second route sending everyone else to the
//! primary (Flagger's single matching route leaves non-matching requests unrouted, even
//! between rollouts); each `analysis.match` entry is its own matcher (OR, as in Istio;
//! Flagger ANDs them all); and reconcile keeps the live weights.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed, created_meta,
    escape_regex, get_typed, routing_meta, service_spec, typed_api, write_typed,
};
use crate::api::{Canary, Capabilities, HttpMatchRequest, StringMatch};

const ROUTE_TABLE: RoutingKind = RoutingKind {
    group: "gateway.solo.io",
    version: "v1",
    kind: "RouteTable",
    plural: "routetables",
    namespaced: true,
};

const UPSTREAM: RoutingKind = RoutingKind {
    group: "gloo.solo.io",
    version: "v1",
    kind: "Upstream",
    plural: "upstreams",
    namespaced: true,
};

/// The RouteTable and the Upstreams, watched for drift.
pub const KINDS: &[RoutingKind] = &[ROUTE_TABLE, UPSTREAM];

/// The fields of `RouteTable.spec` flaggit writes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteTableSpec {
    #[serde(default)]
    pub routes: Vec<GlooRoute>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GlooRoute {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Matcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inheritable_path_matchers: Option<bool>,
    #[serde(default)]
    pub route_action: RouteAction,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<QueryParameterMatcher>,
}

/// A header condition; without a value it matches any value (the header is present).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatcher {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert_match: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct QueryParameterMatcher {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RouteAction {
    #[serde(default)]
    pub multi: MultiDestination,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MultiDestination {
    #[serde(default)]
    pub destinations: Vec<WeightedDestination>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct WeightedDestination {
    pub destination: Destination,
    /// Omitted at 0, as Gloo's Go type does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Destination {
    pub upstream: ResourceRef,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ResourceRef {
    pub name: String,
    pub namespace: String,
}

/// The fields of `Upstream.spec` flaggit writes: the Kubernetes Service, and the connection
/// settings copied from `spec.upstreamRef`. The nested settings are Gloo's own configuration,
/// passed through as read (flaggit neither builds nor interprets them; the CRD validates them).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeUpstream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_http2: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_stream_window_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_connection_window_size: Option<u32>,
    /// Gloo spells it `httpProxyHostname` (Flagger writes `httpProxyHostName`, which is pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_proxy_hostname: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeUpstream {
    pub service_name: String,
    pub service_namespace: String,
    pub service_port: i32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// The names of the two Upstreams (Flagger's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamNames {
    pub primary: String,
    pub canary: String,
}

impl UpstreamNames {
    pub fn of(canary: &Canary) -> Result<Self, Error> {
        let port = service_spec(canary)?.port;
        let ns = canary.namespace().unwrap_or_default();
        let apex = ServiceNames::of(canary).apex;
        Ok(Self {
            primary: format!("{ns}-{apex}-primaryupstream-{port}"),
            canary: format!("{ns}-{apex}-canaryupstream-{port}"),
        })
    }
}

/// The Upstream spec for the Service `service` (with its selector), carrying the connection
/// settings of `config` (the `spec.upstreamRef` Upstream), if any.
pub fn upstream_spec(
    canary: &Canary,
    service: &str,
    selector: BTreeMap<String, String>,
    config: Option<&UpstreamSpec>,
) -> Result<UpstreamSpec, Error> {
    let port = service_spec(canary)?.port;
    let mut spec = config.cloned().unwrap_or_default();
    spec.kube = Some(KubeUpstream {
        service_name: service.to_string(),
        service_namespace: canary.namespace().unwrap_or_default(),
        service_port: port,
        selector,
    });
    Ok(spec)
}

/// The RouteTable spec for `canary` at `routes` (see the module documentation).
pub fn route_table_spec(canary: &Canary, routes: Routes) -> Result<RouteTableSpec, Error> {
    let upstreams = UpstreamNames::of(canary)?;
    let namespace = canary.namespace().unwrap_or_default();
    let destination = |name: &str, weight: i32| WeightedDestination {
        destination: Destination {
            upstream: ResourceRef {
                name: name.to_string(),
                namespace: namespace.clone(),
            },
        },
        weight: u32::try_from(weight).ok().filter(|w| *w > 0),
    };
    let route = |matchers: Vec<Matcher>, routes: Routes| GlooRoute {
        matchers,
        inheritable_path_matchers: Some(true),
        route_action: RouteAction {
            multi: MultiDestination {
                destinations: vec![
                    destination(&upstreams.primary, routes.primary),
                    destination(&upstreams.canary, routes.canary),
                ],
            },
        },
    };
    let ab = canary
        .spec
        .analysis()
        .and_then(|a| a.match_.as_deref())
        .filter(|m| !m.is_empty());
    let routes = match ab {
        None => vec![route(Vec::new(), routes)],
        Some(matches) => vec![
            route(gloo_matchers(matches)?, routes),
            route(Vec::new(), Routes::PRIMARY),
        ],
    };
    Ok(RouteTableSpec { routes })
}

/// One Gloo matcher per `analysis.match` entry (Gloo ORs matchers, ANDs what is inside one).
pub fn gloo_matchers(matches: &[HttpMatchRequest]) -> Result<Vec<Matcher>, Error> {
    let mut out = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        let refuse = |field: &str, why: &str| {
            Err(Error::Invalid(format!(
                "spec.analysis.match[{i}].{field}: the gloo provider {why}"
            )))
        };
        let unsupported = [
            ("uri", m.uri.is_some()),
            ("scheme", m.scheme.is_some()),
            ("authority", m.authority.is_some()),
            ("port", m.port.is_some()),
            ("sourceLabels", m.source_labels.is_some()),
            ("sourceNamespace", m.source_namespace.is_some()),
            ("gateways", m.gateways.is_some()),
            ("ignoreUriCase", m.ignore_uri_case.is_some()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return refuse(
                name,
                "matches on headers, method and query parameters only (the path comes from the delegating VirtualService)",
            );
        }
        let mut matcher = Matcher::default();
        for (name, value) in m.headers.iter().flatten() {
            let Some((value, regex)) = value_matcher(value) else {
                return refuse(&format!("headers.{name}"), "needs exact, prefix, suffix or regex");
            };
            matcher.headers.push(HeaderMatcher {
                name: name.clone(),
                value: Some(value),
                regex,
                invert_match: false,
            });
        }
        for (name, value) in m.without_headers.iter().flatten() {
            let Some((value, regex)) = value_matcher(value) else {
                return refuse(
                    &format!("withoutHeaders.{name}"),
                    "needs exact, prefix, suffix or regex",
                );
            };
            matcher.headers.push(HeaderMatcher {
                name: name.clone(),
                value: Some(value),
                regex,
                invert_match: true,
            });
        }
        if let Some(method) = &m.method {
            match &method.exact {
                Some(exact) => matcher.methods.push(exact.clone()),
                None => return refuse("method", "matches a method exactly"),
            }
        }
        for (name, value) in m.query_params.iter().flatten() {
            let Some((value, regex)) = value_matcher(value) else {
                return refuse(
                    &format!("queryParams.{name}"),
                    "needs exact, prefix, suffix or regex",
                );
            };
            matcher.query_parameters.push(QueryParameterMatcher {
                name: name.clone(),
                value: Some(value),
                regex,
            });
        }
        out.push(matcher);
    }
    Ok(out)
}

/// A Gloo value and whether it is a regex (Envoy's, matched against the whole value): prefix
/// and suffix become regexes (Flagger drops them, which matches any value).
fn value_matcher(m: &StringMatch) -> Option<(String, bool)> {
    match (&m.exact, &m.prefix, &m.suffix, &m.regex) {
        (Some(exact), None, None, None) => Some((exact.clone(), false)),
        (None, Some(prefix), None, None) => Some((format!("{}.*", escape_regex(prefix)), true)),
        (None, None, Some(suffix), None) => Some((format!(".*{}", escape_regex(suffix)), true)),
        (None, None, None, Some(regex)) => Some((regex.clone(), true)),
        _ => None,
    }
}

/// The split of the first route: the primary and canary upstreams' weights, when they add up
/// to 100.
pub fn routes_of_route_table(canary: &Canary, spec: &RouteTableSpec) -> Option<Routes> {
    let upstreams = UpstreamNames::of(canary).ok()?;
    let destinations = &spec.routes.first()?.route_action.multi.destinations;
    let weight = |name: &str| {
        destinations
            .iter()
            .find(|d| d.destination.upstream.name == name)
            .map(|d| i64::from(d.weight.unwrap_or(0)))
    };
    let (primary, canary_weight) = (weight(&upstreams.primary)?, weight(&upstreams.canary)?);
    (primary + canary_weight == 100).then(|| Routes::canary(i32::try_from(canary_weight).unwrap_or(0)))
}

/// The Gloo router.
pub struct GlooRouter {
    client: Client,
}

impl GlooRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The Upstream named by `spec.upstreamRef` (default namespace: the Canary's).
    async fn config_upstream(&self, canary: &Canary) -> Result<Option<UpstreamSpec>, Error> {
        let Some(reference) = canary.spec.upstream_ref.as_ref() else {
            return Ok(None);
        };
        let namespace = reference
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| canary.namespace())
            .unwrap_or_default();
        let api = typed_api::<UpstreamSpec>(&self.client, &UPSTREAM, &namespace);
        let upstream = get_typed(&api, &UPSTREAM, &reference.name).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "spec.upstreamRef: Upstream {namespace}/{} does not exist: create it or remove the reference",
                reference.name
            ))
        })?;
        Ok(Some(upstream.spec))
    }

    async fn ensure_upstream(
        &self,
        canary: &Canary,
        name: &str,
        service: &str,
        config: Option<&UpstreamSpec>,
    ) -> Result<(), Error> {
        let namespace = canary.namespace().unwrap_or_default();
        let services: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
        let svc = services.get(service).await.map_err(|source| Error::Get {
            kind: "Service",
            name: service.to_string(),
            source,
        })?;
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        let spec = upstream_spec(canary, service, selector, config)?;
        let api = typed_api(&self.client, &UPSTREAM, &namespace);
        let live: Option<Typed<UpstreamSpec>> = get_typed(&api, &UPSTREAM, name).await?;
        let meta = match &live {
            Some(live) => live.metadata.clone(),
            None => created_meta(canary, &UPSTREAM, name),
        };
        write_typed(&api, &UPSTREAM, live.as_ref(), meta, spec).await
    }

    fn route_tables(&self, canary: &Canary) -> Api<Typed<RouteTableSpec>> {
        typed_api(
            &self.client,
            &ROUTE_TABLE,
            &canary.namespace().unwrap_or_default(),
        )
    }
}

#[async_trait]
impl Router for GlooRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED_AB
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let names = ServiceNames::of(canary);
        let upstreams = UpstreamNames::of(canary)?;
        let config = self.config_upstream(canary).await?;
        self.ensure_upstream(canary, &upstreams.primary, &names.primary, config.as_ref())
            .await?;
        self.ensure_upstream(canary, &upstreams.canary, &names.canary, config.as_ref())
            .await?;
        let api = self.route_tables(canary);
        let live = get_typed(&api, &ROUTE_TABLE, &names.apex).await?;
        let routes = live
            .as_ref()
            .and_then(|l| routes_of_route_table(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let spec = route_table_spec(canary, routes)?;
        let meta = routing_meta(canary, &names.apex, live.as_ref().map(|l| &l.metadata));
        write_typed(&api, &ROUTE_TABLE, live.as_ref(), meta, spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let name = ServiceNames::of(canary).apex;
        let api = self.route_tables(canary);
        let live = get_typed(&api, &ROUTE_TABLE, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("RouteTable {name} does not exist yet")))?;
        let spec = route_table_spec(canary, request.routes)?;
        write_typed(&api, &ROUTE_TABLE, Some(&live), live.metadata.clone(), spec).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let name = ServiceNames::of(canary).apex;
        let live = get_typed(&self.route_tables(canary), &ROUTE_TABLE, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("RouteTable {name} does not exist yet")))?;
        routes_of_route_table(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "RouteTable {name} has no weights for the primary and canary upstreams adding up to 100: reconcile rewrites it"
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // flaggit only ever creates the RouteTable and Upstreams; the garbage collector
        // removes them.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService};

    fn canary(analysis: CanaryAnalysis) -> Canary {
        let mut c = crate::testing::podinfo(
            Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            Some(analysis),
        );
        c.metadata.namespace = Some("test".into());
        c
    }

    fn header(name: &str, m: StringMatch) -> HttpMatchRequest {
        HttpMatchRequest {
            headers: Some(BTreeMap::from([(name.to_string(), m)])),
            ..Default::default()
        }
    }

    #[test]
    fn weighted_route_table_names_flaggers_upstreams() {
        let c = canary(CanaryAnalysis::default());
        let spec = route_table_spec(&c, Routes::canary(30)).expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({ "routes": [{
                "inheritablePathMatchers": true,
                "routeAction": { "multi": { "destinations": [
                    { "destination": { "upstream": { "name": "test-podinfo-primaryupstream-9898", "namespace": "test" } }, "weight": 70 },
                    { "destination": { "upstream": { "name": "test-podinfo-canaryupstream-9898", "namespace": "test" } }, "weight": 30 },
                ]}},
            }]})
        );
        assert_eq!(routes_of_route_table(&c, &spec), Some(Routes::canary(30)));
        let primary = route_table_spec(&c, Routes::PRIMARY).expect("builds");
        assert_eq!(
            primary.routes[0].route_action.multi.destinations[1].weight, None,
            "0 is omitted"
        );
        assert_eq!(routes_of_route_table(&c, &primary), Some(Routes::PRIMARY));
        let mut broken = primary.clone();
        broken.routes[0].route_action.multi.destinations[0].weight = Some(50);
        assert_eq!(routes_of_route_table(&c, &broken), None);
    }

    #[test]
    fn ab_matches_first_then_everyone_else_to_the_primary() {
        let analysis = CanaryAnalysis {
            iterations: Some(5),
            match_: Some(vec![
                HttpMatchRequest {
                    method: Some(StringMatch {
                        exact: Some("GET".into()),
                        ..Default::default()
                    }),
                    ..header(
                        "x-canary",
                        StringMatch {
                            exact: Some("insider".into()),
                            ..Default::default()
                        },
                    )
                },
                header(
                    "user-agent",
                    StringMatch {
                        prefix: Some("Mozilla/5.0 (".into()),
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        };
        let c = canary(analysis);
        let spec = route_table_spec(&c, Routes::canary(100)).expect("builds");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(
            json["routes"][0]["matchers"],
            serde_json::json!([
                { "headers": [{ "name": "x-canary", "value": "insider" }], "methods": ["GET"] },
                { "headers": [{ "name": "user-agent", "value": "Mozilla/5\\.0 \\(.*", "regex": true }] },
            ])
        );
        assert_eq!(routes_of_route_table(&c, &spec), Some(Routes::canary(100)));
        assert!(json["routes"][1].get("matchers").is_none(), "{json}");
        assert_eq!(
            json["routes"][1]["routeAction"]["multi"]["destinations"][0]["weight"],
            100
        );
        assert!(
            json["routes"][1]["routeAction"]["multi"]["destinations"][1]
                .get("weight")
                .is_none()
        );
    }

    #[test]
    fn inexpressible_matches_name_the_field() {
        let uri = gloo_matchers(&[HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some("/api".into()),
                ..Default::default()
            }),
            ..Default::default()
        }])
        .expect_err("uri");
        assert!(uri.to_string().contains("spec.analysis.match[0].uri"), "{uri}");
        let empty = gloo_matchers(&[header("x", StringMatch::default())]).expect_err("no value");
        assert!(
            empty.to_string().contains("spec.analysis.match[0].headers.x"),
            "{empty}"
        );
    }

    #[test]
    fn upstreams_copy_only_fields_gloo_has() {
        let c = canary(CanaryAnalysis::default());
        let config: UpstreamSpec = serde_json::from_value(serde_json::json!({
            "kube": { "serviceName": "template", "serviceNamespace": "gloo-system", "servicePort": 80 },
            "labels": { "copied": "no" },
            "httpProxyHostName": "dropped.example.com",
            "httpProxyHostname": "proxy.example.com",
            "loadBalancerConfig": { "roundRobin": {} },
            "useHttp2": true,
        }))
        .expect("reads");
        let spec = upstream_spec(
            &c,
            "podinfo-primary",
            BTreeMap::from([("app".to_string(), "podinfo-primary".to_string())]),
            Some(&config),
        )
        .expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({
                "kube": {
                    "serviceName": "podinfo-primary",
                    "serviceNamespace": "test",
                    "servicePort": 9898,
                    "selector": { "app": "podinfo-primary" },
                },
                "loadBalancerConfig": { "roundRobin": {} },
                "useHttp2": true,
                "httpProxyHostname": "proxy.example.com",
            })
        );
        let names = UpstreamNames::of(&c).expect("names");
        assert_eq!(names.primary, "test-podinfo-primaryupstream-9898");
        assert_eq!(names.canary, "test-podinfo-canaryupstream-9898");
    }
}
