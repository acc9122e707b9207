//! The `istio` provider: DestinationRules `<apex>-primary` and `<apex>-canary` and the
//! VirtualService `<apex>` that splits traffic between them (weights, A/B matches, mirroring,
//! session affinity). An existing VirtualService is taken over and given back on finalize.

mod types;

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

pub use self::types::{
    Destination, DestinationRuleSpec, HttpRoute, HttpRouteDestination, Percent, RouteDestination, TcpRoute,
    VirtualServiceSpec,
};
use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed,
    affinity_cookies_for, cookie_regex, expire_cookie_value, get_dynamic, get_typed, owned_by,
    primary_set_cookie_value, routing_meta, service_spec, set_cookie_value, typed_api, write_dynamic,
    write_typed,
};
use crate::api::{
    Canary, CanaryService, Capabilities, Headers, HttpMatchRequest, HttpRewrite, PortSelector, StringMatch,
};
use crate::objects::GITOPS_HANDS_OFF;

/// The annotation that keeps the spec of a VirtualService flaggit took over, so finalize can
/// give it back (Flagger's name, so a cluster migrated from Flagger restores the same way).
pub const ORIGINAL_CONFIGURATION: &str = "flagger.kubernetes.io/original-configuration";
const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// (group, version, kind, plural) of the Istio objects written.
pub const VIRTUAL_SERVICE: (&str, &str, &str, &str) = (
    "networking.istio.io",
    "v1beta1",
    "VirtualService",
    "virtualservices",
);
pub const DESTINATION_RULE: (&str, &str, &str, &str) = (
    "networking.istio.io",
    "v1beta1",
    "DestinationRule",
    "destinationrules",
);

/// The kinds the Istio router writes, watched for drift.
pub const KINDS: &[RoutingKind] = &[
    RoutingKind {
        group: VIRTUAL_SERVICE.0,
        version: VIRTUAL_SERVICE.1,
        kind: VIRTUAL_SERVICE.2,
        plural: VIRTUAL_SERVICE.3,
        namespaced: true,
    },
    RoutingKind {
        group: DESTINATION_RULE.0,
        version: DESTINATION_RULE.1,
        kind: DESTINATION_RULE.2,
        plural: DESTINATION_RULE.3,
        namespaced: true,
    },
];
const VIRTUAL_SERVICE_KIND: &RoutingKind = &KINDS[0];
const DESTINATION_RULE_KIND: &RoutingKind = &KINDS[1];

fn resource((group, version, kind, plural): (&str, &str, &str, &str)) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The Istio router.
pub struct IstioRouter {
    client: Client,
}

impl IstioRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn virtual_services(&self, canary: &Canary) -> Api<Typed<VirtualServiceSpec>> {
        typed_api(
            &self.client,
            VIRTUAL_SERVICE_KIND,
            &canary.namespace().unwrap_or_default(),
        )
    }

    /// VirtualServices as stored, every field kept: the spec of one flaggit takes over is
    /// given back as it was.
    fn raw_virtual_services(&self, canary: &Canary) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &canary.namespace().unwrap_or_default(),
            &resource(VIRTUAL_SERVICE),
        )
    }

    async fn virtual_service(&self, canary: &Canary) -> Result<Typed<VirtualServiceSpec>, Error> {
        let name = ServiceNames::of(canary).apex;
        self.virtual_services(canary)
            .get(&name)
            .await
            .map_err(|source| Error::Get {
                kind: "VirtualService",
                name,
                source,
            })
    }
}

/// The typed reading of a VirtualService read as stored.
fn typed_virtual_service(raw: &DynamicObject) -> Result<Typed<VirtualServiceSpec>, Error> {
    serde_json::to_value(raw)
        .and_then(serde_json::from_value)
        .map_err(|err| Error::Get {
            kind: "VirtualService",
            name: raw.name_any(),
            source: kube::Error::SerdeError(err),
        })
}

#[async_trait]
impl Router for IstioRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn reconcile(&self, canary: &Canary, cookies: &AffinityCookies) -> Result<(), Error> {
        let names = ServiceNames::of(canary);
        let dr_api = typed_api(
            &self.client,
            DESTINATION_RULE_KIND,
            &canary.namespace().unwrap_or_default(),
        );
        for host in [&names.primary, &names.canary] {
            let live: Option<Typed<DestinationRuleSpec>> =
                get_typed(&dr_api, DESTINATION_RULE_KIND, host).await?;
            let meta = routing_meta(canary, host, live.as_ref().map(|l| &l.metadata));
            let spec = destination_rule_spec(canary, host)?;
            write_typed(&dr_api, DESTINATION_RULE_KIND, live.as_ref(), meta, spec).await?;
        }

        // Read as stored once: a taken-over VirtualService's spec is kept verbatim.
        let raw = get_dynamic(&self.raw_virtual_services(canary), "VirtualService", &names.apex).await?;
        let live = raw.as_ref().map(typed_virtual_service).transpose()?;
        let routes = live
            .as_ref()
            .and_then(|l| routes_of_virtual_service(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let request = RouteRequest {
            routes,
            cookies: cookies.clone(),
        };
        let spec = virtual_service_spec(canary, &request)?;
        let mut meta = routing_meta(canary, &names.apex, live.as_ref().map(|l| &l.metadata));
        if let Some(raw) = &raw {
            let annotations = meta.annotations.get_or_insert_with(Default::default);
            let taken_over = !owned_by(&raw.metadata, canary);
            if taken_over
                && !annotations.contains_key(KUBECTL_LAST_APPLIED)
                && !annotations.contains_key(ORIGINAL_CONFIGURATION)
            {
                let original = raw.data.get("spec").cloned().unwrap_or(Value::Null);
                annotations.insert(ORIGINAL_CONFIGURATION.into(), original.to_string());
            }
        }
        write_typed(
            &self.virtual_services(canary),
            VIRTUAL_SERVICE_KIND,
            live.as_ref(),
            meta,
            spec,
        )
        .await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let live = self.virtual_service(canary).await?;
        let spec = virtual_service_spec(canary, request)?;
        let meta = live.metadata.clone();
        write_typed(
            &self.virtual_services(canary),
            VIRTUAL_SERVICE_KIND,
            Some(&live),
            meta,
            spec,
        )
        .await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.virtual_service(canary).await?;
        routes_of_virtual_service(canary, &live.spec).ok_or_else(|| {
            let names = ServiceNames::of(canary);
            Error::NotReady(format!(
                "VirtualService {} has no route to both {} and {}: reconcile rewrites it",
                names.apex, names.primary, names.canary
            ))
        })
    }

    /// Restores the spec of a VirtualService flaggit took over, from kubectl's last-applied
    /// configuration or the original-configuration annotation, as it was (every field, typed
    /// or not: it is the owner's). One flaggit created is left to the garbage collector.
    async fn finalize(&self, canary: &Canary) -> Result<(), Error> {
        let vs = resource(VIRTUAL_SERVICE);
        let api = self.raw_virtual_services(canary);
        let name = ServiceNames::of(canary).apex;
        let Some(live) = get_dynamic(&api, "VirtualService", &name).await? else {
            return Ok(());
        };
        if owned_by(&live.metadata, canary) {
            return Ok(());
        }
        let Some(original) = original_spec(&live) else {
            tracing::warn!(virtual_service = %name, "no original configuration to restore");
            return Ok(());
        };
        let mut meta = live.metadata.clone();
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(ORIGINAL_CONFIGURATION);
            // Left in place, they would stop Flux from ever applying the owner's VirtualService
            // again; keep them only where the owner's own manifest has them.
            for (key, _) in GITOPS_HANDS_OFF {
                if !kubectl_annotations(&live).contains_key(key) {
                    annotations.remove(key);
                }
            }
        }
        write_dynamic(&api, &vs, "VirtualService", Some(&live), meta, original).await
    }
}

/// The annotations of kubectl's last-applied manifest of `live`, if any.
fn kubectl_annotations(live: &DynamicObject) -> serde_json::Map<String, Value> {
    live.annotations()
        .get(KUBECTL_LAST_APPLIED)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|applied| applied["metadata"]["annotations"].as_object().cloned())
        .unwrap_or_default()
}

/// The spec a taken-over VirtualService had before flaggit changed it, as its owner wrote it.
fn original_spec(live: &DynamicObject) -> Option<Value> {
    let annotations = live.annotations();
    if let Some(applied) = annotations.get(KUBECTL_LAST_APPLIED) {
        let applied: Value = serde_json::from_str(applied).ok()?;
        return applied.get("spec").cloned();
    }
    serde_json::from_str(annotations.get(ORIGINAL_CONFIGURATION)?).ok()
}

/// The spec of DestinationRule `host` (`<apex>-primary` or `<apex>-canary`).
pub fn destination_rule_spec(canary: &Canary, host: &str) -> Result<DestinationRuleSpec, Error> {
    let svc = service_spec(canary)?;
    Ok(DestinationRuleSpec {
        host: host.to_string(),
        traffic_policy: svc.traffic_policy.as_deref().cloned(),
    })
}

/// The spec of VirtualService `<apex>` routing `routes`.
///
/// - hosts: `spec.service.hosts` plus the apex name (unless present or `*`); gateways:
///   `spec.service.gateways` or `mesh`; neither for a delegate VirtualService.
/// - one HTTP route with the service's match/rewrite/timeout/retries/corsPolicy/headers and
///   weighted destinations; with `analysis.match` (A/B) it matches the analysis conditions
///   and a second route sends the rest to the primary.
/// - `routes.mirrored`: the weighted route mirrors to the canary (`mirrorWeight` percent).
/// - session affinity (canary strategy only): sticky routes, matched on the cookie, go
///   first (see [`super::next_affinity_cookies`]).
/// - `appProtocol: tcp`: a TCP route with the weights instead of the HTTP routes.
pub fn virtual_service_spec(canary: &Canary, request: &RouteRequest) -> Result<VirtualServiceSpec, Error> {
    let routes = request.routes;
    let svc = service_spec(canary)?;
    let names = ServiceNames::of(canary);
    let delegation = svc.delegation == Some(true);
    let hosts = svc.hosts.clone().unwrap_or_default();
    let gateways = svc.gateways.clone().unwrap_or_default();
    let mut spec = VirtualServiceSpec::default();
    if delegation {
        if !hosts.is_empty() || !gateways.is_empty() {
            return Err(Error::Invalid(
                "spec.service.delegation makes a delegate VirtualService, which has no hosts or \
                 gateways of its own: remove spec.service.hosts and spec.service.gateways"
                    .into(),
            ));
        }
    } else {
        let mut hosts = hosts;
        if !hosts.iter().any(|h| h == &names.apex || h == "*") {
            hosts.push(names.apex.clone());
        }
        spec.hosts = hosts;
        spec.gateways = if gateways.is_empty() {
            vec!["mesh".to_string()]
        } else {
            gateways
        };
    }
    // A destination needs a port when the Service has several and the caller is not the mesh.
    let with_port = svc.port_discovery == Some(true)
        && (delegation
            || svc
                .gateways
                .as_ref()
                .and_then(|g| g.first())
                .is_some_and(|g| g != "mesh"));
    let destination = |host: &str, port: bool| Destination {
        host: host.to_string(),
        port: port.then_some(PortSelector {
            number: Some(svc.port),
        }),
    };
    let dest = |host: &str, weight: i32| HttpRouteDestination {
        destination: destination(host, with_port),
        weight,
        headers: None,
    };

    if svc.app_protocol.as_deref() == Some("tcp") {
        let tcp_dest = |host: &str, weight: i32| RouteDestination {
            destination: destination(host, true),
            weight,
        };
        spec.tcp = vec![TcpRoute {
            route: vec![
                tcp_dest(&names.primary, routes.primary),
                tcp_dest(&names.canary, routes.canary),
            ],
        }];
        return Ok(spec);
    }

    let analysis = canary.spec.analysis();
    let ab_match = analysis.and_then(|a| a.match_.clone()).filter(|m| !m.is_empty());
    let service_match = svc.match_.clone().unwrap_or_default();

    let mut weighted = HttpRoute {
        route: vec![
            dest(&names.primary, routes.primary),
            dest(&names.canary, routes.canary),
        ],
        ..base_route(svc)
    };
    if routes.mirrored {
        weighted.mirror = Some(destination(&names.canary, false));
        weighted.mirror_percentage =
            analysis
                .and_then(|a| a.mirror_weight)
                .filter(|w| *w > 0)
                .map(|percent| Percent {
                    value: f64::from(percent),
                });
    }

    spec.http = if let Some(ab_match) = ab_match {
        weighted.match_ = merge_matches(&ab_match, &service_match);
        let rest = HttpRoute {
            match_: service_match,
            route: vec![dest(&names.primary, 100)],
            ..base_route(svc)
        };
        vec![weighted, rest]
    } else if let Some((affinity, cookies)) = affinity_cookies_for(canary, request)? {
        weighted.match_ = service_match.clone();
        let mut http = Vec::new();
        if let Some(cookie) = &cookies.canary {
            http.push(HttpRoute {
                match_: with_cookie(&service_match, cookie),
                route: vec![dest(&names.primary, 0), dest(&names.canary, 100)],
                mirror: None,
                mirror_percentage: None,
                ..weighted.clone()
            });
            add_destination_set_cookie(&mut weighted, 1, &set_cookie_value(affinity, cookie));
        }
        if let Some(cookie) = &cookies.primary {
            http.push(HttpRoute {
                match_: with_cookie(&service_match, cookie),
                route: vec![dest(&names.primary, 100)],
                mirror: None,
                mirror_percentage: None,
                ..weighted.clone()
            });
            add_destination_set_cookie(&mut weighted, 0, &primary_set_cookie_value(canary, cookie));
        }
        if let Some(cookie) = &cookies.previous {
            let mut expire = HttpRoute {
                match_: with_cookie(&service_match, cookie),
                ..weighted.clone()
            };
            add_set_cookie(&mut expire.headers, &expire_cookie_value(cookie));
            http.push(expire);
        }
        http.push(weighted);
        http
    } else {
        weighted.match_ = service_match;
        vec![weighted]
    };
    Ok(spec)
}

/// An HTTP route with the service's options and no match or destinations yet.
fn base_route(svc: &CanaryService) -> HttpRoute {
    let non_empty = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    HttpRoute {
        // Istio's rewrite has no `type` (that is the Gateway API's).
        rewrite: svc
            .rewrite
            .as_ref()
            .map(|rewrite| HttpRewrite {
                uri: non_empty(&rewrite.uri),
                authority: non_empty(&rewrite.authority),
                type_: None,
            })
            .filter(|rewrite| rewrite.uri.is_some() || rewrite.authority.is_some()),
        timeout: non_empty(&svc.timeout),
        retries: svc.retries.as_deref().cloned(),
        cors_policy: svc.cors_policy.as_deref().cloned(),
        headers: svc.headers.as_deref().cloned(),
        ..Default::default()
    }
}

/// `matches` (or one catch-all match) each also requiring the `cookie` header to carry
/// `cookie`.
fn with_cookie(matches: &[HttpMatchRequest], cookie: &str) -> Vec<HttpMatchRequest> {
    let cookie_match = StringMatch {
        regex: Some(cookie_regex(cookie)),
        ..Default::default()
    };
    let base = if matches.is_empty() {
        vec![HttpMatchRequest::default()]
    } else {
        matches.to_vec()
    };
    base.into_iter()
        .map(|mut m| {
            m.headers
                .get_or_insert_with(Default::default)
                .insert("cookie".into(), cookie_match.clone());
            m
        })
        .collect()
}

/// Adds `Set-Cookie: value` to the response headers of destination `index` of `route`.
fn add_destination_set_cookie(route: &mut HttpRoute, index: usize, value: &str) {
    if let Some(dest) = route.route.get_mut(index) {
        add_set_cookie(&mut dest.headers, value);
    }
}

/// Adds `Set-Cookie: value` to `response.add` of the headers of a route or destination,
/// keeping the headers already there.
fn add_set_cookie(headers: &mut Option<Headers>, value: &str) {
    headers
        .get_or_insert_with(Default::default)
        .response
        .get_or_insert_with(Default::default)
        .add
        .get_or_insert_with(Default::default)
        .insert("Set-Cookie".into(), value.into());
}

/// The A/B conditions combined with the service's: every analysis match within every service
/// match (the analysis fields win; header and query maps are merged).
pub(crate) fn merge_matches(
    analysis: &[HttpMatchRequest],
    service: &[HttpMatchRequest],
) -> Vec<HttpMatchRequest> {
    if service.is_empty() {
        return analysis.to_vec();
    }
    if analysis.is_empty() {
        return service.to_vec();
    }
    let mut merged = Vec::with_capacity(analysis.len() * service.len());
    for a in analysis {
        for s in service {
            let mut m = s.clone();
            let a = a.clone();
            macro_rules! overlay {
                ($($field:ident),*) => { $( if a.$field.is_some() { m.$field = a.$field; } )* };
            }
            overlay!(
                name,
                uri,
                scheme,
                method,
                authority,
                port,
                source_labels,
                gateways,
                ignore_uri_case,
                source_namespace
            );
            for (field, extra) in [
                (&mut m.headers, a.headers),
                (&mut m.query_params, a.query_params),
                (&mut m.without_headers, a.without_headers),
            ] {
                if let Some(extra) = extra {
                    field.get_or_insert_with(Default::default).extend(extra);
                }
            }
            merged.push(m);
        }
    }
    merged
}

/// Whether an HTTP route is one of the sticky-session routes (matched on the cookie).
fn is_sticky(route: &HttpRoute) -> bool {
    route.match_.iter().any(|m| {
        m.headers
            .as_ref()
            .and_then(|headers| headers.get("cookie"))
            .is_some_and(|cookie| cookie.regex.is_some())
    })
}

/// The split a VirtualService spec routes: the weights of the first (non-sticky) HTTP or TCP
/// route that sends to both primary and canary; mirrored when it mirrors to the canary.
/// None when no route does.
pub fn routes_of_virtual_service(canary: &Canary, spec: &VirtualServiceSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    // Each candidate route as its (host, weight) destinations and the host it mirrors to.
    let http = spec.http.iter().filter(|r| !is_sticky(r)).map(|r| {
        let destinations: Vec<(&str, i32)> = r
            .route
            .iter()
            .map(|d| (d.destination.host.as_str(), d.weight))
            .collect();
        (destinations, r.mirror.as_ref().map(|m| m.host.as_str()))
    });
    let tcp = spec.tcp.iter().map(|r| {
        let destinations: Vec<(&str, i32)> = r
            .route
            .iter()
            .map(|d| (d.destination.host.as_str(), d.weight))
            .collect();
        (destinations, None)
    });
    for (destinations, mirror) in http.chain(tcp) {
        let weight_of = |host: &str| {
            destinations
                .iter()
                .find_map(|(h, weight)| (*h == host).then_some(*weight))
        };
        if let (Some(primary), Some(canary_weight)) = (weight_of(&names.primary), weight_of(&names.canary)) {
            return Some(Routes {
                primary,
                canary: canary_weight,
                mirrored: mirror == Some(names.canary.as_str()),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::api::{
        CanaryAnalysis, CanaryStatus, HeaderOperations, Headers, HttpRetry, HttpRewrite, SessionAffinity,
        TrafficPolicy,
    };

    fn canary(service: CanaryService, analysis: CanaryAnalysis) -> Canary {
        crate::testing::podinfo(Some(service), Some(analysis))
    }

    // The tests below see the specs as the API server does: as JSON, written from the typed
    // spec and read back into it.

    /// [`super::virtual_service_spec`], as JSON.
    fn virtual_service_spec(c: &Canary, request: &RouteRequest) -> Result<Value, Error> {
        super::virtual_service_spec(c, request).map(|spec| serde_json::to_value(spec).expect("json"))
    }

    /// [`super::destination_rule_spec`], as JSON.
    fn destination_rule_spec(c: &Canary, host: &str) -> Result<Value, Error> {
        super::destination_rule_spec(c, host).map(|spec| serde_json::to_value(spec).expect("json"))
    }

    /// [`super::routes_of_virtual_service`] of a spec read from JSON.
    fn routes_of_virtual_service(c: &Canary, spec: &Value) -> Option<Routes> {
        let typed: VirtualServiceSpec = serde_json::from_value(spec.clone()).expect("a VirtualService spec");
        super::routes_of_virtual_service(c, &typed)
    }

    /// The spec for an owned canary at `routes`.
    fn spec_of(c: Canary, routes: Routes) -> Result<Value, Error> {
        virtual_service_spec(&c, &request(&c, routes))
    }

    /// The request the controller makes at `routes`, with the cookies of the status.
    fn request(c: &Canary, routes: Routes) -> RouteRequest {
        RouteRequest {
            routes,
            cookies: AffinityCookies::stored(c.status.as_ref()),
        }
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

    fn exact(v: &str) -> StringMatch {
        StringMatch {
            exact: Some(v.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_route_all_to_primary_on_the_mesh() {
        let c = canary(svc(), CanaryAnalysis::default());
        let spec = virtual_service_spec(&c, &request(&c, Routes::PRIMARY)).expect("builds");
        assert_eq!(
            spec,
            json!({
                "hosts": ["podinfo"],
                "gateways": ["mesh"],
                "http": [{ "route": [
                    { "destination": { "host": "podinfo-primary" }, "weight": 100 },
                    { "destination": { "host": "podinfo-canary" }, "weight": 0 },
                ]}],
            })
        );
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(Routes::PRIMARY));
    }

    #[test]
    fn hosts_gateways_and_route_options() {
        let c = canary(
            CanaryService {
                port: 9898,
                hosts: Some(vec!["app.example.com".into()]),
                gateways: Some(vec!["public-gateway.istio-system.svc.cluster.local".into()]),
                timeout: Some("30s".into()),
                rewrite: Some(Box::new(HttpRewrite {
                    uri: Some("/".into()),
                    type_: Some("ReplacePrefixMatch".into()),
                    ..Default::default()
                })),
                retries: Some(Box::new(HttpRetry {
                    attempts: Some(3),
                    per_try_timeout: Some("1s".into()),
                    retry_on: Some("5xx".into()),
                })),
                headers: Some(Box::new(Headers {
                    request: Some(HeaderOperations {
                        add: Some(BTreeMap::from([("x-a".into(), "1".into())])),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                match_: Some(vec![HttpMatchRequest {
                    uri: Some(StringMatch {
                        prefix: Some("/api".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            CanaryAnalysis::default(),
        );
        let spec = virtual_service_spec(&c, &request(&c, Routes::canary(30))).expect("builds");
        assert_eq!(spec["hosts"], json!(["app.example.com", "podinfo"]));
        assert_eq!(
            spec["gateways"],
            json!(["public-gateway.istio-system.svc.cluster.local"])
        );
        let route = &spec["http"][0];
        assert_eq!(route["timeout"], "30s");
        assert_eq!(route["rewrite"], json!({ "uri": "/" }));
        assert_eq!(route["retries"]["perTryTimeout"], "1s");
        assert_eq!(route["headers"]["request"]["add"]["x-a"], "1");
        assert_eq!(route["match"][0]["uri"]["prefix"], "/api");
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(Routes::canary(30)));
    }

    #[test]
    fn wildcard_host_gets_no_apex() {
        let mut s = svc();
        s.hosts = Some(vec!["*".into()]);
        let spec = spec_of(canary(s, CanaryAnalysis::default()), Routes::PRIMARY).expect("builds");
        assert_eq!(spec["hosts"], json!(["*"]));
    }

    #[test]
    fn delegation_has_no_hosts_and_refuses_them() {
        let mut s = svc();
        s.delegation = Some(true);
        let spec = spec_of(canary(s.clone(), CanaryAnalysis::default()), Routes::PRIMARY).expect("builds");
        assert!(spec.get("hosts").is_none() && spec.get("gateways").is_none());
        s.hosts = Some(vec!["a".into()]);
        let err = spec_of(canary(s, CanaryAnalysis::default()), Routes::PRIMARY)
            .expect_err("hosts with delegation");
        assert!(err.to_string().contains("spec.service.delegation"));
    }

    #[test]
    fn port_discovery_behind_a_gateway_sets_destination_ports() {
        let mut s = svc();
        s.port_discovery = Some(true);
        s.gateways = Some(vec!["gw".into()]);
        let spec = spec_of(canary(s, CanaryAnalysis::default()), Routes::PRIMARY).expect("builds");
        assert_eq!(spec["http"][0]["route"][0]["destination"]["port"]["number"], 9898);
    }

    #[test]
    fn ab_testing_routes_matches_to_the_canary_and_the_rest_to_primary() {
        let mut s = svc();
        s.match_ = Some(vec![HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some("/api".into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let c = canary(
            s,
            CanaryAnalysis {
                iterations: Some(10),
                match_: Some(vec![header("x-canary", exact("insider"))]),
                ..Default::default()
            },
        );
        let spec = virtual_service_spec(&c, &request(&c, Routes::canary(100))).expect("builds");
        let http = spec["http"].as_array().expect("http");
        assert_eq!(http.len(), 2);
        assert_eq!(http[0]["match"][0]["headers"]["x-canary"]["exact"], "insider");
        assert_eq!(http[0]["match"][0]["uri"]["prefix"], "/api");
        assert_eq!(http[0]["route"][1]["weight"], 100);
        assert_eq!(http[1]["match"][0]["uri"]["prefix"], "/api");
        assert!(http[1]["match"][0].get("headers").is_none());
        assert_eq!(
            http[1]["route"],
            json!([{ "destination": { "host": "podinfo-primary" }, "weight": 100 }])
        );
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(Routes::canary(100)));
    }

    #[test]
    fn merged_matches_are_the_cross_product() {
        let analysis = vec![header("a", exact("1")), header("b", exact("2"))];
        let service = vec![
            HttpMatchRequest {
                uri: Some(StringMatch {
                    prefix: Some("/x".into()),
                    ..Default::default()
                }),
                ..header("s", exact("3"))
            },
            HttpMatchRequest {
                method: Some(exact("GET")),
                ..Default::default()
            },
        ];
        let merged = merge_matches(&analysis, &service);
        assert_eq!(merged.len(), 4);
        let h0 = merged[0].headers.as_ref().expect("headers");
        assert!(h0.contains_key("a") && h0.contains_key("s"));
        assert_eq!(merged[1].method, Some(exact("GET")));
        assert!(merged[3].headers.as_ref().expect("h").contains_key("b"));
        assert_eq!(merge_matches(&analysis, &[]), analysis);
        assert_eq!(merge_matches(&[], &service), service);
    }

    #[test]
    fn mirroring_with_a_percentage() {
        let c = canary(
            svc(),
            CanaryAnalysis {
                mirror: Some(true),
                mirror_weight: Some(40),
                ..Default::default()
            },
        );
        let routes = Routes {
            mirrored: true,
            ..Routes::PRIMARY
        };
        let spec = virtual_service_spec(&c, &request(&c, routes)).expect("builds");
        assert_eq!(spec["http"][0]["mirror"], json!({ "host": "podinfo-canary" }));
        assert_eq!(spec["http"][0]["mirrorPercentage"]["value"], 40.0);
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(routes));
        let plain = virtual_service_spec(&c, &request(&c, Routes::canary(10))).expect("builds");
        assert!(plain["http"][0].get("mirror").is_none());
    }

    fn affinity_canary(status: CanaryStatus) -> Canary {
        let mut s = svc();
        s.headers = Some(Box::new(Headers {
            response: Some(HeaderOperations {
                add: Some(BTreeMap::from([("x-served-by".into(), "podinfo".into())])),
                ..Default::default()
            }),
            ..Default::default()
        }));
        let mut c = canary(
            s,
            CanaryAnalysis {
                step_weight: Some(10),
                session_affinity: Some(Box::new(SessionAffinity {
                    cookie_name: "flagger-cookie".into(),
                    max_age: Some(600),
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        c.status = Some(status);
        c
    }

    #[test]
    fn session_affinity_sticks_canary_users() {
        let c = affinity_canary(CanaryStatus {
            session_affinity_cookie: Some("flagger-cookie=abcdefghij".into()),
            ..Default::default()
        });
        let spec = virtual_service_spec(&c, &request(&c, Routes::canary(20))).expect("builds");
        let http = spec["http"].as_array().expect("http");
        assert_eq!(http.len(), 2);
        assert_eq!(
            http[0]["match"][0]["headers"]["cookie"]["regex"],
            ".*flagger-cookie.*abcdefghij.*"
        );
        assert_eq!(http[0]["route"][1]["weight"], 100);
        assert_eq!(http[0]["route"][0]["weight"], 0);
        assert_eq!(
            http[1]["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
            "flagger-cookie=abcdefghij; Max-Age=600"
        );
        assert!(http[1]["route"][0].get("headers").is_none());
        // The sticky route does not hide the weights.
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(Routes::canary(20)));
    }

    #[test]
    fn session_affinity_expires_the_previous_cookie() {
        let c = affinity_canary(CanaryStatus {
            previous_session_affinity_cookie: Some("flagger-cookie=old".into()),
            ..Default::default()
        });
        let spec = virtual_service_spec(&c, &request(&c, Routes::PRIMARY)).expect("builds");
        let http = spec["http"].as_array().expect("http");
        assert_eq!(http.len(), 2);
        let add = &http[0]["headers"]["response"]["add"];
        assert_eq!(add["Set-Cookie"], "flagger-cookie=old; Max-Age=-1");
        assert_eq!(add["x-served-by"], "podinfo", "service headers are kept");
        assert_eq!(http[0]["route"][0]["weight"], 100);
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(Routes::PRIMARY));
    }

    #[test]
    fn session_affinity_needs_the_cookie_in_status() {
        let c = affinity_canary(CanaryStatus::default());
        assert!(virtual_service_spec(&c, &request(&c, Routes::canary(10))).is_err());
        let spec = virtual_service_spec(&c, &request(&c, Routes::PRIMARY)).expect("no cookie needed");
        assert_eq!(spec["http"].as_array().expect("http").len(), 1);
    }

    #[test]
    fn primary_cookie_pins_primary_users_for_an_interval() {
        let mut c = affinity_canary(CanaryStatus {
            session_affinity_cookie: Some("flagger-cookie=c".into()),
            primary_session_affinity_cookie: Some("primary-cookie=p".into()),
            ..Default::default()
        });
        if let Some(a) = c.spec.analysis.as_mut() {
            a.interval = Some("1m".into());
            if let Some(sa) = a.session_affinity.as_mut() {
                sa.primary_cookie_name = Some("primary-cookie".into());
            }
        }
        let spec = virtual_service_spec(&c, &request(&c, Routes::canary(10))).expect("builds");
        let http = spec["http"].as_array().expect("http");
        assert_eq!(http.len(), 3);
        assert_eq!(
            http[1]["route"],
            json!([{ "destination": { "host": "podinfo-primary" }, "weight": 100 }])
        );
        assert_eq!(
            http[2]["route"][0]["headers"]["response"]["add"]["Set-Cookie"],
            "primary-cookie=p; Max-Age=60"
        );
    }

    #[test]
    fn tcp_services_get_a_tcp_route() {
        let mut s = svc();
        s.app_protocol = Some("tcp".into());
        let c = canary(s, CanaryAnalysis::default());
        let spec = virtual_service_spec(&c, &request(&c, Routes::canary(25))).expect("builds");
        assert!(spec.get("http").is_none());
        assert_eq!(spec["tcp"][0]["route"][1]["destination"]["port"]["number"], 9898);
        assert_eq!(routes_of_virtual_service(&c, &spec), Some(Routes::canary(25)));
    }

    #[test]
    fn destination_rules_carry_the_traffic_policy() {
        let mut s = svc();
        s.traffic_policy = Some(Box::new(TrafficPolicy {
            tls: Some(crate::api::ClientTlsSettings {
                mode: Some(crate::api::TlsMode::IstioMutual),
                ..Default::default()
            }),
            ..Default::default()
        }));
        let c = canary(s, CanaryAnalysis::default());
        let spec = destination_rule_spec(&c, "podinfo-canary").expect("builds");
        assert_eq!(
            spec,
            json!({ "host": "podinfo-canary", "trafficPolicy": { "tls": { "mode": "ISTIO_MUTUAL" } } })
        );
    }

    #[test]
    fn foreign_routes_are_not_weights() {
        let c = canary(svc(), CanaryAnalysis::default());
        let spec = json!({ "http": [{ "route": [{ "destination": { "host": "other" } }] }] });
        assert_eq!(routes_of_virtual_service(&c, &spec), None);
    }

    #[test]
    fn live_specs_are_read_past_fields_flaggit_does_not_write() {
        let c = canary(svc(), CanaryAnalysis::default());
        let both = |primary: i32, canary: i32| {
            json!([
                { "destination": { "host": "podinfo-primary", "subset": "v1" }, "weight": primary },
                { "destination": { "host": "podinfo-canary" }, "weight": canary },
            ])
        };
        let spec = json!({
            "hosts": ["podinfo"],
            "exportTo": ["."],
            "http": [
                {
                    "name": "sticky",
                    "match": [{ "headers": { "cookie": { "regex": ".*flagger-cookie.*x.*" } }, "statPrefix": "s" }],
                    "route": both(0, 100),
                },
                { "name": "elsewhere", "route": [{ "destination": { "host": "other" } }] },
                {
                    "name": "weighted",
                    "fault": { "delay": { "fixedDelay": "1s", "percentage": { "value": 1 } } },
                    "retries": { "attempts": 2, "retryRemoteLocalities": true },
                    "route": both(80, 20),
                    "mirror": { "host": "podinfo-canary", "subset": "v2" },
                    "mirrorPercentage": { "value": 5 },
                },
            ],
            "tls": [{ "match": [{ "sniHosts": ["a.example.com"] }], "route": [{ "destination": { "host": "other" } }] }],
        });
        assert_eq!(
            routes_of_virtual_service(&c, &spec),
            Some(Routes {
                primary: 80,
                canary: 20,
                mirrored: true,
            }),
            "the sticky and foreign routes are skipped"
        );
        let tcp = json!({ "tcp": [{ "match": [{ "port": 5432 }], "route": both(60, 40) }] });
        assert_eq!(routes_of_virtual_service(&c, &tcp), Some(Routes::canary(40)));
    }

    #[test]
    fn written_specs_read_back_unchanged() {
        // What the API server returns must compare equal to what flaggit would write, or every
        // reconcile would write again.
        let mut c = affinity_canary(CanaryStatus {
            session_affinity_cookie: Some("flagger-cookie=c".into()),
            primary_session_affinity_cookie: Some("primary-cookie=p".into()),
            previous_session_affinity_cookie: Some("flagger-cookie=old".into()),
            ..Default::default()
        });
        if let Some(a) = c.spec.analysis.as_mut() {
            a.mirror = Some(true);
            a.mirror_weight = Some(30);
            if let Some(sa) = a.session_affinity.as_mut() {
                sa.primary_cookie_name = Some("primary-cookie".into());
            }
        }
        if let Some(s) = c.spec.service.as_mut() {
            s.port_discovery = Some(true);
            s.gateways = Some(vec!["gw".into()]);
            s.timeout = Some("5s".into());
            s.rewrite = Some(Box::new(HttpRewrite {
                uri: Some("/".into()),
                ..Default::default()
            }));
            s.retries = Some(Box::new(HttpRetry {
                attempts: Some(2),
                ..Default::default()
            }));
        }
        // Sticky canary and primary routes, then the weighted one; then the expiring one.
        for (routes, len) in [(Routes::canary(10), 3), (Routes::PRIMARY, 2)] {
            let routes = Routes {
                mirrored: true,
                ..routes
            };
            let spec = super::virtual_service_spec(&c, &request(&c, routes)).expect("builds");
            assert_eq!(spec.http.len(), len, "{routes:?}");
            let json = serde_json::to_value(&spec).expect("json");
            let read: VirtualServiceSpec = serde_json::from_value(json).expect("reads");
            assert_eq!(read, spec);
            assert_eq!(super::routes_of_virtual_service(&c, &read), Some(routes));
        }
    }

    #[test]
    fn original_spec_prefers_kubectl() {
        let mut vs = DynamicObject::new("podinfo", &resource(VIRTUAL_SERVICE));
        assert_eq!(original_spec(&vs), None);
        vs.metadata.annotations = Some(BTreeMap::from([(
            ORIGINAL_CONFIGURATION.to_string(),
            r#"{"hosts":["a"]}"#.to_string(),
        )]));
        assert_eq!(original_spec(&vs), Some(json!({ "hosts": ["a"] })));
        vs.metadata.annotations.as_mut().expect("a").insert(
            KUBECTL_LAST_APPLIED.into(),
            r#"{"kind":"VirtualService","spec":{"hosts":["b"]}}"#.into(),
        );
        assert_eq!(original_spec(&vs), Some(json!({ "hosts": ["b"] })));
    }
}
