//! The `istio` provider: DestinationRules `<apex>-primary` and `<apex>-canary` and the
//! VirtualService `<apex>` that splits traffic between them (weights, A/B matches, mirroring,
//! session affinity). An existing VirtualService is taken over and given back on finalize.

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde_json::{Map, Value, json};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, affinity_cookies_for,
    cookie_regex, expire_cookie_value, get_dynamic, owned_by, primary_set_cookie_value, routing_meta,
    service_spec, set_cookie_value, write_dynamic,
};
use crate::api::{Canary, CanaryService, Capabilities, HttpMatchRequest, StringMatch};
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

    fn api(&self, canary: &Canary, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &canary.namespace().unwrap_or_default(), ar)
    }

    async fn virtual_service(&self, canary: &Canary) -> Result<DynamicObject, Error> {
        let ar = resource(VIRTUAL_SERVICE);
        let name = ServiceNames::of(canary).apex;
        self.api(canary, &ar)
            .get(&name)
            .await
            .map_err(|source| Error::Get {
                kind: "VirtualService",
                name,
                source,
            })
    }
}

#[async_trait]
impl Router for IstioRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn reconcile(&self, canary: &Canary, cookies: &AffinityCookies) -> Result<(), Error> {
        let names = ServiceNames::of(canary);
        let dr = resource(DESTINATION_RULE);
        let dr_api = self.api(canary, &dr);
        for host in [&names.primary, &names.canary] {
            let live = get_dynamic(&dr_api, "DestinationRule", host).await?;
            let meta = routing_meta(canary, host, live.as_ref().map(|l| &l.metadata));
            let spec = destination_rule_spec(canary, host)?;
            write_dynamic(&dr_api, &dr, "DestinationRule", live.as_ref(), meta, spec).await?;
        }

        let vs = resource(VIRTUAL_SERVICE);
        let vs_api = self.api(canary, &vs);
        let live = get_dynamic(&vs_api, "VirtualService", &names.apex).await?;
        let routes = live
            .as_ref()
            .and_then(|l| l.data.get("spec"))
            .and_then(|spec| routes_of_virtual_service(canary, spec))
            .unwrap_or(Routes::PRIMARY);
        let request = RouteRequest {
            routes,
            cookies: cookies.clone(),
        };
        let spec = virtual_service_spec(canary, &request)?;
        let mut meta = routing_meta(canary, &names.apex, live.as_ref().map(|l| &l.metadata));
        if let Some(live) = &live {
            let annotations = meta.annotations.get_or_insert_with(Default::default);
            let taken_over = !owned_by(&live.metadata, canary);
            if taken_over
                && !annotations.contains_key(KUBECTL_LAST_APPLIED)
                && !annotations.contains_key(ORIGINAL_CONFIGURATION)
            {
                let original = live.data.get("spec").cloned().unwrap_or(Value::Null);
                annotations.insert(ORIGINAL_CONFIGURATION.into(), original.to_string());
            }
        }
        write_dynamic(&vs_api, &vs, "VirtualService", live.as_ref(), meta, spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let live = self.virtual_service(canary).await?;
        let spec = virtual_service_spec(canary, request)?;
        let vs = resource(VIRTUAL_SERVICE);
        let meta = live.metadata.clone();
        write_dynamic(
            &self.api(canary, &vs),
            &vs,
            "VirtualService",
            Some(&live),
            meta,
            spec,
        )
        .await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.virtual_service(canary).await?;
        live.data
            .get("spec")
            .and_then(|spec| routes_of_virtual_service(canary, spec))
            .ok_or_else(|| {
                let names = ServiceNames::of(canary);
                Error::NotReady(format!(
                    "VirtualService {} has no route to both {} and {}: reconcile rewrites it",
                    names.apex, names.primary, names.canary
                ))
            })
    }

    /// Restores the spec of a VirtualService flaggit took over, from kubectl's last-applied
    /// configuration or the original-configuration annotation. One flaggit created is left
    /// to the garbage collector.
    async fn finalize(&self, canary: &Canary) -> Result<(), Error> {
        let vs = resource(VIRTUAL_SERVICE);
        let api = self.api(canary, &vs);
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

/// The spec a taken-over VirtualService had before flaggit changed it.
fn original_spec(live: &DynamicObject) -> Option<Value> {
    let annotations = live.annotations();
    if let Some(applied) = annotations.get(KUBECTL_LAST_APPLIED) {
        let applied: Value = serde_json::from_str(applied).ok()?;
        return applied.get("spec").cloned();
    }
    serde_json::from_str(annotations.get(ORIGINAL_CONFIGURATION)?).ok()
}

/// The spec of DestinationRule `host` (`<apex>-primary` or `<apex>-canary`).
pub fn destination_rule_spec(canary: &Canary, host: &str) -> Result<Value, Error> {
    let svc = service_spec(canary)?;
    let mut spec = json!({ "host": host });
    if let Some(policy) = &svc.traffic_policy {
        spec["trafficPolicy"] = to_value(policy);
    }
    Ok(spec)
}

fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
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
pub fn virtual_service_spec(canary: &Canary, request: &RouteRequest) -> Result<Value, Error> {
    let routes = request.routes;
    let svc = service_spec(canary)?;
    let names = ServiceNames::of(canary);
    let delegation = svc.delegation == Some(true);
    let hosts = svc.hosts.clone().unwrap_or_default();
    let gateways = svc.gateways.clone().unwrap_or_default();
    let mut spec = Map::new();
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
        let gateways = if gateways.is_empty() {
            vec!["mesh".to_string()]
        } else {
            gateways
        };
        spec.insert("hosts".into(), json!(hosts));
        spec.insert("gateways".into(), json!(gateways));
    }
    // A destination needs a port when the Service has several and the caller is not the mesh.
    let with_port = svc.port_discovery == Some(true)
        && (delegation
            || svc
                .gateways
                .as_ref()
                .and_then(|g| g.first())
                .is_some_and(|g| g != "mesh"));
    let dest = |host: &str, weight: i32, port: bool| {
        let mut destination = json!({ "host": host });
        if port {
            destination["port"] = json!({ "number": svc.port });
        }
        json!({ "destination": destination, "weight": weight })
    };

    if svc.app_protocol.as_deref() == Some("tcp") {
        spec.insert(
            "tcp".into(),
            json!([{ "route": [
                dest(&names.primary, routes.primary, true),
                dest(&names.canary, routes.canary, true),
            ]}]),
        );
        return Ok(Value::Object(spec));
    }

    let analysis = canary.spec.analysis();
    let ab_match = analysis.and_then(|a| a.match_.clone()).filter(|m| !m.is_empty());
    let service_match = svc.match_.clone().unwrap_or_default();

    let mut weighted = base_route(svc);
    weighted.insert(
        "route".into(),
        json!([
            dest(&names.primary, routes.primary, with_port),
            dest(&names.canary, routes.canary, with_port),
        ]),
    );
    if routes.mirrored {
        weighted.insert("mirror".into(), json!({ "host": names.canary }));
        if let Some(percent) = analysis.and_then(|a| a.mirror_weight).filter(|w| *w > 0) {
            weighted.insert("mirrorPercentage".into(), json!({ "value": f64::from(percent) }));
        }
    }

    let http = if let Some(ab_match) = ab_match {
        set_match(&mut weighted, &merge_matches(&ab_match, &service_match));
        let mut rest = base_route(svc);
        set_match(&mut rest, &service_match);
        rest.insert("route".into(), json!([dest(&names.primary, 100, with_port)]));
        vec![Value::Object(weighted), Value::Object(rest)]
    } else if let Some((affinity, cookies)) = affinity_cookies_for(canary, request)? {
        set_match(&mut weighted, &service_match);
        let mut http = Vec::new();
        if let Some(cookie) = &cookies.canary {
            let mut sticky = weighted.clone();
            sticky.remove("mirror");
            sticky.remove("mirrorPercentage");
            set_match(&mut sticky, &with_cookie(&service_match, cookie));
            sticky.insert(
                "route".into(),
                json!([
                    dest(&names.primary, 0, with_port),
                    dest(&names.canary, 100, with_port),
                ]),
            );
            http.push(Value::Object(sticky));
            add_destination_set_cookie(&mut weighted, 1, &set_cookie_value(affinity, cookie));
        }
        if let Some(cookie) = &cookies.primary {
            let mut sticky = weighted.clone();
            sticky.remove("mirror");
            sticky.remove("mirrorPercentage");
            set_match(&mut sticky, &with_cookie(&service_match, cookie));
            sticky.insert("route".into(), json!([dest(&names.primary, 100, with_port)]));
            http.push(Value::Object(sticky));
            add_destination_set_cookie(&mut weighted, 0, &primary_set_cookie_value(canary, cookie));
        }
        if let Some(cookie) = &cookies.previous {
            let mut expire = weighted.clone();
            set_match(&mut expire, &with_cookie(&service_match, cookie));
            add_set_cookie(&mut expire, &expire_cookie_value(cookie));
            http.push(Value::Object(expire));
        }
        http.push(Value::Object(weighted));
        http
    } else {
        set_match(&mut weighted, &service_match);
        vec![Value::Object(weighted)]
    };
    spec.insert("http".into(), Value::Array(http));
    Ok(Value::Object(spec))
}

/// An HTTP route with the service's options and no match or destinations yet.
fn base_route(svc: &CanaryService) -> Map<String, Value> {
    let mut route = Map::new();
    if let Some(rewrite) = &svc.rewrite {
        // Istio's rewrite has no `type` (that is the Gateway API's).
        let mut value = Map::new();
        if let Some(uri) = rewrite.uri.as_ref().filter(|u| !u.is_empty()) {
            value.insert("uri".into(), json!(uri));
        }
        if let Some(authority) = rewrite.authority.as_ref().filter(|a| !a.is_empty()) {
            value.insert("authority".into(), json!(authority));
        }
        if !value.is_empty() {
            route.insert("rewrite".into(), Value::Object(value));
        }
    }
    if let Some(timeout) = svc.timeout.as_ref().filter(|t| !t.is_empty()) {
        route.insert("timeout".into(), json!(timeout));
    }
    if let Some(retries) = &svc.retries {
        route.insert("retries".into(), to_value(retries));
    }
    if let Some(cors) = &svc.cors_policy {
        route.insert("corsPolicy".into(), to_value(cors));
    }
    if let Some(headers) = &svc.headers {
        route.insert("headers".into(), to_value(headers));
    }
    route
}

fn set_match(route: &mut Map<String, Value>, matches: &[HttpMatchRequest]) {
    if matches.is_empty() {
        route.remove("match");
    } else {
        route.insert("match".into(), to_value(&matches));
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
fn add_destination_set_cookie(route: &mut Map<String, Value>, index: usize, value: &str) {
    if let Some(dest) = route
        .get_mut("route")
        .and_then(|r| r.get_mut(index))
        .and_then(Value::as_object_mut)
    {
        add_set_cookie(dest, value);
    }
}

/// Adds `Set-Cookie: value` to `headers.response.add` of a route or destination, keeping the
/// headers already there.
fn add_set_cookie(target: &mut Map<String, Value>, value: &str) {
    let headers = target.entry("headers").or_insert_with(|| json!({}));
    if !headers["response"].is_object() {
        headers["response"] = json!({});
    }
    if !headers["response"]["add"].is_object() {
        headers["response"]["add"] = json!({});
    }
    headers["response"]["add"]["Set-Cookie"] = json!(value);
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
fn is_sticky(route: &Value) -> bool {
    route["match"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["headers"]["cookie"]["regex"].is_string()))
}

/// The split a VirtualService spec routes: the weights of the first (non-sticky) HTTP or TCP
/// route that sends to both primary and canary; mirrored when it mirrors to the canary.
/// None when no route does.
pub fn routes_of_virtual_service(canary: &Canary, spec: &Value) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let candidates = spec["http"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !is_sticky(r))
        .chain(spec["tcp"].as_array().into_iter().flatten());
    for route in candidates {
        let weight_of = |host: &str| {
            route["route"].as_array()?.iter().find_map(|d| {
                (d["destination"]["host"].as_str() == Some(host)).then(|| d["weight"].as_i64().unwrap_or(0))
            })
        };
        if let (Some(primary), Some(canary_weight)) = (weight_of(&names.primary), weight_of(&names.canary)) {
            return Some(Routes {
                primary: i32::try_from(primary).unwrap_or(0),
                canary: i32::try_from(canary_weight).unwrap_or(0),
                mirrored: route["mirror"]["host"].as_str() == Some(names.canary.as_str()),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{
        CanaryAnalysis, CanaryStatus, HeaderOperations, Headers, HttpRetry, HttpRewrite, SessionAffinity,
        TrafficPolicy,
    };

    fn canary(service: CanaryService, analysis: CanaryAnalysis) -> Canary {
        crate::testing::podinfo(Some(service), Some(analysis))
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
                rewrite: Some(HttpRewrite {
                    uri: Some("/".into()),
                    type_: Some("ReplacePrefixMatch".into()),
                    ..Default::default()
                }),
                retries: Some(HttpRetry {
                    attempts: Some(3),
                    per_try_timeout: Some("1s".into()),
                    retry_on: Some("5xx".into()),
                }),
                headers: Some(Headers {
                    request: Some(HeaderOperations {
                        add: Some(BTreeMap::from([("x-a".into(), "1".into())])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
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
        s.headers = Some(Headers {
            response: Some(HeaderOperations {
                add: Some(BTreeMap::from([("x-served-by".into(), "podinfo".into())])),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut c = canary(
            s,
            CanaryAnalysis {
                step_weight: Some(10),
                session_affinity: Some(SessionAffinity {
                    cookie_name: "flagger-cookie".into(),
                    max_age: Some(600),
                    ..Default::default()
                }),
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
        s.traffic_policy = Some(TrafficPolicy {
            tls: Some(crate::api::ClientTlsSettings {
                mode: Some(crate::api::TlsMode::IstioMutual),
                ..Default::default()
            }),
            ..Default::default()
        });
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
