//! The `gatewayapi:v1` and `gatewayapi:v1beta1` providers: one HTTPRoute `<apex>` attached to
//! `spec.service.gatewayRefs` with weighted backendRefs to `<apex>-primary` and
//! `<apex>-canary` (plus A/B, mirroring and session-affinity rules).
//!
//! Readiness: [`Router::get_routes`] only reports weights the Gateways have taken on, so every
//! parent in `spec.parentRefs` must have an entry in `status.parents` with condition
//! `Accepted=True` and `observedGeneration >= metadata.generation`. A route with no status
//! for a parent (no Gateway controller has seen it yet, or none ever will because the parent
//! does not exist) is not ready either: Flagger skips such parents, but then shifts traffic
//! that nothing serves, so flaggit waits and says which parent is silent.

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::istio::merge_matches;
use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, affinity_cookies_for,
    cookie_regex, expire_cookie_value, get_dynamic, primary_set_cookie_value, routing_meta, service_spec,
    set_cookie_value, write_dynamic,
};
use crate::api::{
    Canary, CanaryService, Capabilities, HeaderOperations, HttpMatchRequest, Provider, StringMatch,
};

const GROUP: &str = "gateway.networking.k8s.io";

/// Which served version of the Gateway API the HTTPRoute is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayApiVersion {
    V1,
    V1beta1,
}

impl GatewayApiVersion {
    fn version(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1beta1 => "v1beta1",
        }
    }

    /// The provider that selects this version.
    pub fn provider(self) -> Provider {
        match self {
            Self::V1 => Provider::GatewayApiV1,
            Self::V1beta1 => Provider::GatewayApiV1beta1,
        }
    }
}

/// The HTTPRoute, watched for drift (in whichever of the two versions the server serves).
pub const KINDS: &[RoutingKind] = &[
    RoutingKind {
        group: GROUP,
        version: "v1",
        kind: "HTTPRoute",
        plural: "httproutes",
        namespaced: true,
    },
    RoutingKind {
        group: GROUP,
        version: "v1beta1",
        kind: "HTTPRoute",
        plural: "httproutes",
        namespaced: true,
    },
];

/// The HTTPRoute resource of `version`.
pub fn http_route_resource(version: GatewayApiVersion) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, version.version(), "HTTPRoute"),
        "httproutes",
    )
}

/// The Gateway API router.
pub struct GatewayApiRouter {
    client: Client,
    version: GatewayApiVersion,
    resource: ApiResource,
}

impl GatewayApiRouter {
    pub fn new(client: Client, version: GatewayApiVersion) -> Self {
        Self {
            client,
            version,
            resource: http_route_resource(version),
        }
    }

    fn api(&self, canary: &Canary) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &canary.namespace().unwrap_or_default(),
            &self.resource,
        )
    }

    async fn live(&self, canary: &Canary) -> Result<DynamicObject, Error> {
        let name = ServiceNames::of(canary).apex;
        self.api(canary).get(&name).await.map_err(|source| Error::Get {
            kind: "HTTPRoute",
            name,
            source,
        })
    }
}

#[async_trait]
impl Router for GatewayApiRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn reconcile(&self, canary: &Canary, cookies: &AffinityCookies) -> Result<(), Error> {
        let api = self.api(canary);
        let name = ServiceNames::of(canary).apex;
        let live = get_dynamic(&api, "HTTPRoute", &name).await?;
        let routes = live
            .as_ref()
            .and_then(|l| l.data.get("spec"))
            .and_then(|spec| routes_of_http_route(canary, spec))
            .unwrap_or(Routes::PRIMARY);
        let request = RouteRequest {
            routes,
            cookies: cookies.clone(),
        };
        let spec = http_route_spec(canary, &request, self.version)?;
        let meta = routing_meta(canary, &name, live.as_ref().map(|l| &l.metadata));
        write_dynamic(&api, &self.resource, "HTTPRoute", live.as_ref(), meta, spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let live = self.live(canary).await?;
        let spec = http_route_spec(canary, request, self.version)?;
        let meta = live.metadata.clone();
        write_dynamic(
            &self.api(canary),
            &self.resource,
            "HTTPRoute",
            Some(&live),
            meta,
            spec,
        )
        .await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.live(canary).await?;
        check_accepted(&live)?;
        live.data
            .get("spec")
            .and_then(|spec| routes_of_http_route(canary, spec))
            .ok_or_else(|| {
                let names = ServiceNames::of(canary);
                Error::NotReady(format!(
                    "HTTPRoute {} has no rule routing to both {} and {}: reconcile rewrites it",
                    names.apex, names.primary, names.canary
                ))
            })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // flaggit only ever creates the HTTPRoute; the garbage collector removes it.
        Ok(())
    }
}

/// Fails with [`Error::NotReady`] unless every parent of the route accepted its current
/// generation (see the module documentation).
pub fn check_accepted(route: &DynamicObject) -> Result<(), Error> {
    let name = route.name_any();
    let namespace = route.namespace().unwrap_or_default();
    let generation = route.metadata.generation.unwrap_or(0);
    let statuses = route.data["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for parent in route.data["spec"]["parentRefs"].as_array().into_iter().flatten() {
        let wanted = parent_key(parent, &namespace);
        let describe = format!("{}/{} {}/{}", wanted.0, wanted.1, wanted.2, wanted.3);
        let matching: Vec<&Value> = statuses
            .iter()
            .filter(|s| parent_key(&s["parentRef"], &namespace) == wanted)
            .collect();
        if matching.is_empty() {
            return Err(Error::NotReady(format!(
                "HTTPRoute {name} has no status from its parent {describe}: check that a Gateway \
                 controller runs and that spec.service.gatewayRefs names an existing Gateway"
            )));
        }
        for status in matching {
            let accepted = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Accepted");
            let Some(accepted) = accepted else {
                return Err(Error::NotReady(format!(
                    "HTTPRoute {name} is not yet accepted by {describe}"
                )));
            };
            if accepted["status"] != "True" {
                return Err(Error::NotReady(format!(
                    "HTTPRoute {name} is not accepted by {describe}: {} {}",
                    accepted["reason"].as_str().unwrap_or_default(),
                    accepted["message"].as_str().unwrap_or_default()
                )));
            }
            let observed = accepted["observedGeneration"].as_i64().unwrap_or(0);
            if observed < generation {
                return Err(Error::NotReady(format!(
                    "HTTPRoute {name} generation {generation} is not yet accepted by {describe} \
                     (it has seen generation {observed})"
                )));
            }
        }
    }
    Ok(())
}

/// A parent reference with its defaults filled in: (group, kind, namespace, name,
/// sectionName, port).
fn parent_key(parent: &Value, namespace: &str) -> (String, String, String, String, String, i64) {
    let text = |field: &str, default: &str| {
        parent[field]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    (
        text("group", GROUP),
        text("kind", "Gateway"),
        text("namespace", namespace),
        text("name", ""),
        text("sectionName", ""),
        parent["port"].as_i64().unwrap_or(0),
    )
}

/// The spec of HTTPRoute `<apex>` routing `routes`.
///
/// - parentRefs from `spec.service.gatewayRefs` (required), hostnames from `hosts`;
/// - one rule with the service's matches (default PathPrefix `/`), filters (header
///   modifiers, URLRewrite, static mirrors, CORS), timeouts and weighted backendRefs;
/// - A/B (`analysis.match`): that rule matches the analysis conditions too and a second rule
///   sends the rest to the primary;
/// - `routes.mirrored`: a RequestMirror filter to the canary, for Blue/Green and, unlike
///   Flagger (spec §8 quirk 10), for the canary strategy's mirror step;
/// - session affinity (canary strategy): cookie-matched sticky rules first, `Set-Cookie`
///   filters on the backendRefs of the weighted rule.
pub fn http_route_spec(
    canary: &Canary,
    request: &RouteRequest,
    version: GatewayApiVersion,
) -> Result<Value, Error> {
    let routes = request.routes;
    let svc = service_spec(canary)?;
    let names = ServiceNames::of(canary);
    let refs = svc.gateway_refs.clone().unwrap_or_default();
    if refs.is_empty() {
        return Err(Error::Invalid(format!(
            "spec.service.gatewayRefs is required by provider {}: add the Gateway the route \
             attaches to",
            version.provider().as_str()
        )));
    }
    let parent_refs: Vec<Value> = refs
        .iter()
        .map(|r| {
            let mut p = json!({
                "group": r.group.clone().unwrap_or_else(|| GROUP.into()),
                "kind": r.kind.clone().unwrap_or_else(|| "Gateway".into()),
                "name": r.name,
            });
            if let Some(ns) = &r.namespace {
                p["namespace"] = json!(ns);
            }
            if let Some(section) = &r.section_name {
                p["sectionName"] = json!(section);
            }
            if let Some(port) = r.port {
                p["port"] = json!(port);
            }
            p
        })
        .collect();

    let service_match = svc.match_.clone().unwrap_or_default();
    let mut base_matches = map_matches(&service_match, "spec.service.match")?;
    if base_matches.is_empty() {
        base_matches.push(json!({}));
    }
    let base_matches: Vec<Value> = base_matches.into_iter().map(with_default_path).collect();
    let filters = filters(svc)?;
    let timeouts = timeouts(svc);
    let backend = |name: &str, weight: i32| json!({ "kind": "Service", "name": name, "port": svc.port, "weight": weight });
    let rule = |matches: &[Value], filters: &[Value], backends: Vec<Value>| {
        let mut r = json!({ "matches": matches, "backendRefs": backends });
        if !filters.is_empty() {
            r["filters"] = json!(filters);
        }
        if let Some(t) = &timeouts {
            r["timeouts"] = t.clone();
        }
        r
    };

    let analysis = canary.spec.analysis();
    let mut weighted_filters = filters.clone();
    if routes.mirrored {
        let mut mirror = json!({
            "backendRef": { "kind": "Service", "name": names.canary, "port": svc.port },
        });
        if let Some(percent) = analysis
            .and_then(|a| a.mirror_weight)
            .filter(|w| *w > 0 && *w < 100)
        {
            mirror["percent"] = json!(percent);
        }
        weighted_filters.push(json!({ "type": "RequestMirror", "requestMirror": mirror }));
    }
    let mut primary_ref = backend(&names.primary, routes.primary);
    let mut canary_ref = backend(&names.canary, routes.canary);

    let ab_match = analysis.and_then(|a| a.match_.clone()).filter(|m| !m.is_empty());
    let mut rules = Vec::new();
    if let Some(ab_match) = ab_match {
        // Validate the analysis conditions in their own field's terms before merging.
        map_matches(&ab_match, "spec.analysis.match")?;
        let merged = merge_matches(&ab_match, &service_match);
        let ab_matches: Vec<Value> = map_matches(&merged, "spec.analysis.match")?
            .into_iter()
            .map(with_default_path)
            .collect();
        rules.push(rule(
            &ab_matches,
            &weighted_filters,
            vec![primary_ref, canary_ref],
        ));
        rules.push(rule(&base_matches, &filters, vec![backend(&names.primary, 100)]));
    } else {
        if let Some((affinity, cookies)) = affinity_cookies_for(canary, request)? {
            if let Some(cookie) = &cookies.canary {
                rules.push(rule(
                    &with_cookie(&base_matches, cookie),
                    &filters,
                    vec![backend(&names.primary, 0), backend(&names.canary, 100)],
                ));
                canary_ref["filters"] = json!([set_cookie_filter(&set_cookie_value(affinity, cookie))]);
            }
            if let Some(cookie) = &cookies.primary {
                rules.push(rule(
                    &with_cookie(&base_matches, cookie),
                    &filters,
                    vec![backend(&names.primary, 100)],
                ));
                primary_ref["filters"] =
                    json!([set_cookie_filter(&primary_set_cookie_value(canary, cookie))]);
            }
            if let Some(cookie) = &cookies.previous {
                let mut expire_filters = weighted_filters.clone();
                add_response_header(&mut expire_filters, "Set-Cookie", &expire_cookie_value(cookie));
                rules.push(rule(
                    &with_cookie(&base_matches, cookie),
                    &expire_filters,
                    vec![primary_ref.clone(), canary_ref.clone()],
                ));
            }
        }
        rules.push(rule(
            &base_matches,
            &weighted_filters,
            vec![primary_ref, canary_ref],
        ));
    }

    let mut spec = json!({ "parentRefs": parent_refs, "rules": rules });
    if let Some(hosts) = svc.hosts.as_ref().filter(|h| !h.is_empty()) {
        spec["hostnames"] = json!(hosts);
    }
    Ok(spec)
}

/// A match with the API server's default path (PathPrefix `/`) when it has none, so the
/// object written equals the object read back.
fn with_default_path(mut m: Value) -> Value {
    if m.get("path").is_none() {
        m["path"] = json!({ "type": "PathPrefix", "value": "/" });
    }
    m
}

/// `matches` each also requiring a `Cookie` header that carries `cookie`.
fn with_cookie(matches: &[Value], cookie: &str) -> Vec<Value> {
    let cookie_header = json!({
        "type": "RegularExpression",
        "name": "Cookie",
        "value": cookie_regex(cookie),
    });
    matches
        .iter()
        .map(|m| {
            let mut m = m.clone();
            match m["headers"].as_array_mut() {
                Some(headers) => headers.push(cookie_header.clone()),
                None => m["headers"] = json!([cookie_header]),
            }
            m
        })
        .collect()
}

fn set_cookie_filter(value: &str) -> Value {
    json!({
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": { "add": [{ "name": "Set-Cookie", "value": value }] },
    })
}

/// Adds a response header to the rule's ResponseHeaderModifier filter, or adds that filter:
/// a rule may have only one filter of each type.
fn add_response_header(filters: &mut Vec<Value>, name: &str, value: &str) {
    let header = json!({ "name": name, "value": value });
    if let Some(filter) = filters.iter_mut().find(|f| f["type"] == "ResponseHeaderModifier") {
        let modifier = &mut filter["responseHeaderModifier"];
        match modifier["add"].as_array_mut() {
            Some(add) => add.push(header),
            None => modifier["add"] = json!([header]),
        }
    } else {
        filters.push(json!({
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": { "add": [header] },
        }));
    }
}

/// The Istio-shaped `matches` (at `field`) as Gateway API HTTPRouteMatches. Only what the
/// Gateway API can express is accepted: uri exact/prefix/regex, method exact, headers and
/// queryParams exact/regex; anything else is an error naming the field.
fn map_matches(matches: &[HttpMatchRequest], field: &str) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let unsupported = [
            ("scheme", m.scheme.is_some()),
            ("authority", m.authority.is_some()),
            ("port", m.port.is_some()),
            ("sourceLabels", m.source_labels.is_some()),
            ("gateways", m.gateways.is_some()),
            ("ignoreUriCase", m.ignore_uri_case == Some(true)),
            ("withoutHeaders", m.without_headers.is_some()),
            ("sourceNamespace", m.source_namespace.is_some()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(Error::Invalid(format!(
                "{at}.{name} has no Gateway API equivalent: remove it (the Gateway API matches \
                 uri, method, headers and queryParams)"
            )));
        }
        let mut out_match = serde_json::Map::new();
        if let Some(uri) = &m.uri {
            let (kind, value) = if let Some(v) = &uri.regex {
                ("RegularExpression", v)
            } else if let Some(v) = &uri.exact {
                ("Exact", v)
            } else if let Some(v) = &uri.prefix {
                ("PathPrefix", v)
            } else {
                return Err(Error::Invalid(format!(
                    "{at}.uri: the Gateway API matches paths by exact, prefix or regex only"
                )));
            };
            out_match.insert("path".into(), json!({ "type": kind, "value": value }));
        }
        if let Some(method) = &m.method {
            let Some(exact) = &method.exact else {
                return Err(Error::Invalid(format!(
                    "{at}.method: the Gateway API matches methods by exact value only"
                )));
            };
            out_match.insert("method".into(), json!(exact));
        }
        for (key, list, values) in [
            ("headers", "headers", &m.headers),
            ("queryParams", "queryParams", &m.query_params),
        ] {
            let mut items = Vec::new();
            for (name, value) in values.iter().flatten() {
                let (kind, v) = exact_or_regex(value).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{at}.{key}.{name}: the Gateway API matches {key} by exact or regex only"
                    ))
                })?;
                items.push(json!({ "type": kind, "name": name, "value": v }));
            }
            if !items.is_empty() {
                out_match.insert(list.into(), Value::Array(items));
            }
        }
        if !out_match.is_empty() {
            out.push(Value::Object(out_match));
        }
    }
    Ok(out)
}

fn exact_or_regex(m: &StringMatch) -> Option<(&'static str, &str)> {
    if let Some(v) = &m.exact {
        Some(("Exact", v))
    } else if let Some(v) = &m.regex {
        Some(("RegularExpression", v))
    } else {
        None
    }
}

/// The route filters `spec.service` asks for.
fn filters(svc: &CanaryService) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    if let Some(headers) = &svc.headers {
        for (kind, field, ops) in [
            ("RequestHeaderModifier", "requestHeaderModifier", &headers.request),
            (
                "ResponseHeaderModifier",
                "responseHeaderModifier",
                &headers.response,
            ),
        ] {
            if let Some(ops) = ops {
                out.push(json!({ "type": kind, field: header_modifier(ops) }));
            }
        }
    }
    if let Some(rewrite) = &svc.rewrite {
        let mut url = serde_json::Map::new();
        if let Some(host) = rewrite.authority.as_ref().filter(|a| !a.is_empty()) {
            url.insert("hostname".into(), json!(host));
        }
        if let Some(uri) = rewrite.uri.as_ref().filter(|u| !u.is_empty()) {
            let path = if rewrite.type_.as_deref() == Some("ReplacePrefixMatch") {
                json!({ "type": "ReplacePrefixMatch", "replacePrefixMatch": uri })
            } else {
                json!({ "type": "ReplaceFullPath", "replaceFullPath": uri })
            };
            url.insert("path".into(), path);
        }
        if !url.is_empty() {
            out.push(json!({ "type": "URLRewrite", "urlRewrite": url }));
        }
    }
    for mirror in svc.mirror.iter().flatten() {
        let b = &mirror.backend_ref;
        // An absent group is the core group; "" is the same but some servers refuse it.
        let mut backend = json!({
            "kind": b.kind.clone().unwrap_or_else(|| "Service".into()),
            "name": b.name,
        });
        if let Some(group) = b.group.as_ref().filter(|g| !g.is_empty()) {
            backend["group"] = json!(group);
        }
        if let Some(ns) = &b.namespace {
            backend["namespace"] = json!(ns);
        }
        if let Some(port) = b.port {
            backend["port"] = json!(port);
        }
        let mut filter = json!({ "backendRef": backend });
        if let Some(percent) = mirror.percent {
            filter["percent"] = json!(percent);
        }
        out.push(json!({ "type": "RequestMirror", "requestMirror": filter }));
    }
    if let Some(cors) = &svc.cors_policy {
        let mut origins: Vec<String> = cors.allow_origin.clone().unwrap_or_default();
        for (i, origin) in cors.allow_origins.iter().flatten().enumerate() {
            match &origin.exact {
                Some(exact) => origins.push(exact.clone()),
                None => {
                    return Err(Error::Invalid(format!(
                        "spec.service.corsPolicy.allowOrigins[{i}]: the Gateway API CORS filter \
                         takes exact origins (or `*` wildcards written as exact) only"
                    )));
                }
            }
        }
        let mut value = serde_json::Map::new();
        for (key, list) in [
            ("allowOrigins", Some(origins)),
            ("allowMethods", cors.allow_methods.clone()),
            ("allowHeaders", cors.allow_headers.clone()),
            ("exposeHeaders", cors.expose_headers.clone()),
        ] {
            if let Some(list) = list.filter(|l| !l.is_empty()) {
                value.insert(key.into(), json!(list));
            }
        }
        if let Some(max_age) = &cors.max_age {
            let secs = crate::rollout::parse_duration(max_age).ok_or_else(|| {
                Error::Invalid(format!(
                    "spec.service.corsPolicy.maxAge {max_age:?} is not a duration like 24h or 600s"
                ))
            })?;
            value.insert("maxAge".into(), json!(secs.as_secs()));
        }
        if let Some(credentials) = cors.allow_credentials {
            value.insert("allowCredentials".into(), json!(credentials));
        }
        out.push(json!({ "type": "CORS", "cors": value }));
    }
    Ok(out)
}

/// A header modifier with its headers sorted by name, so the object is stable.
fn header_modifier(ops: &HeaderOperations) -> Value {
    let mut value = serde_json::Map::new();
    for (key, headers) in [("set", &ops.set), ("add", &ops.add)] {
        // BTreeMap iterates in name order.
        let list: Vec<Value> = headers
            .iter()
            .flatten()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        if !list.is_empty() {
            value.insert(key.into(), Value::Array(list));
        }
    }
    if let Some(remove) = ops.remove.as_ref().filter(|r| !r.is_empty()) {
        value.insert("remove".into(), json!(remove));
    }
    Value::Object(value)
}

fn timeouts(svc: &CanaryService) -> Option<Value> {
    let mut t = serde_json::Map::new();
    if let Some(request) = svc.timeout.as_ref().filter(|t| !t.is_empty()) {
        t.insert("request".into(), json!(request));
    }
    if let Some(backend) = svc.backend_timeout.as_ref().filter(|t| !t.is_empty()) {
        t.insert("backendRequest".into(), json!(backend));
    }
    (!t.is_empty()).then_some(Value::Object(t))
}

/// Whether a rule is a sticky-session rule (matched on the `Cookie` header by regex).
fn is_sticky(rule: &Value) -> bool {
    rule["matches"].as_array().is_some_and(|ms| {
        ms.iter().any(|m| {
            m["headers"].as_array().is_some_and(|hs| {
                hs.iter().any(|h| {
                    h["type"] == "RegularExpression"
                        && h["name"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case("cookie"))
                })
            })
        })
    })
}

/// The split an HTTPRoute spec routes: the weights of the first non-sticky rule with
/// backendRefs to both primary and canary; mirrored when that rule mirrors to the canary.
/// None when no rule does.
pub fn routes_of_http_route(canary: &Canary, spec: &Value) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    for rule in spec["rules"].as_array().into_iter().flatten() {
        if is_sticky(rule) {
            continue;
        }
        let weight_of = |name: &str| {
            rule["backendRefs"].as_array()?.iter().find_map(|b| {
                // The Gateway API's default weight is 1.
                (b["name"].as_str() == Some(name)).then(|| b["weight"].as_i64().unwrap_or(1))
            })
        };
        if let (Some(primary), Some(canary_weight)) = (weight_of(&names.primary), weight_of(&names.canary)) {
            let mirrored = rule["filters"].as_array().into_iter().flatten().any(|f| {
                f["type"] == "RequestMirror"
                    && f["requestMirror"]["backendRef"]["name"].as_str() == Some(names.canary.as_str())
            });
            return Some(Routes {
                primary: i32::try_from(primary).unwrap_or(0),
                canary: i32::try_from(canary_weight).unwrap_or(0),
                mirrored,
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
        BackendObjectReference, CanaryAnalysis, CanaryStatus, CorsPolicy, Headers, HttpRequestMirrorFilter,
        HttpRewrite, ParentReference, SessionAffinity,
    };

    fn svc() -> CanaryService {
        CanaryService {
            port: 9898,
            gateway_refs: Some(vec![ParentReference {
                name: "gateway".into(),
                namespace: Some("istio-ingress".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn canary(service: CanaryService, analysis: CanaryAnalysis) -> Canary {
        crate::testing::podinfo(Some(service), Some(analysis))
    }

    /// The spec for an owned canary at `routes`.
    fn spec_of(c: Canary, routes: Routes) -> Result<Value, Error> {
        http_route_spec(&c, &request(&c, routes), GatewayApiVersion::V1)
    }

    /// The request the controller makes at `routes`, with the cookies of the status.
    fn request(c: &Canary, routes: Routes) -> RouteRequest {
        RouteRequest {
            routes,
            cookies: AffinityCookies::stored(c.status.as_ref()),
        }
    }

    fn build(c: &Canary, routes: Routes) -> Value {
        http_route_spec(c, &request(c, routes), GatewayApiVersion::V1).expect("builds")
    }

    fn exact(v: &str) -> StringMatch {
        StringMatch {
            exact: Some(v.into()),
            ..Default::default()
        }
    }

    #[test]
    fn default_route_is_all_primary_on_every_path() {
        let c = canary(svc(), CanaryAnalysis::default());
        let spec = build(&c, Routes::PRIMARY);
        assert_eq!(
            spec,
            json!({
                "parentRefs": [{
                    "group": "gateway.networking.k8s.io", "kind": "Gateway",
                    "name": "gateway", "namespace": "istio-ingress",
                }],
                "rules": [{
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                    "backendRefs": [
                        { "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 100 },
                        { "kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": 0 },
                    ],
                }],
            })
        );
        assert_eq!(routes_of_http_route(&c, &spec), Some(Routes::PRIMARY));
    }

    #[test]
    fn gateway_refs_are_required() {
        let mut s = svc();
        s.gateway_refs = None;
        let c = canary(s, CanaryAnalysis::default());
        for version in [GatewayApiVersion::V1, GatewayApiVersion::V1beta1] {
            let err = http_route_spec(&c, &request(&c, Routes::PRIMARY), version).expect_err("no refs");
            assert_eq!(err.category(), "InvalidRoute");
            assert_eq!(
                err.to_string(),
                format!(
                    "spec.service.gatewayRefs is required by provider {}: add the Gateway the \
                     route attaches to",
                    version.provider().as_str()
                )
            );
        }
    }

    #[test]
    fn matches_map_from_istio_shapes() {
        let matches = vec![
            HttpMatchRequest {
                uri: Some(StringMatch {
                    regex: Some("/api/.*".into()),
                    ..Default::default()
                }),
                method: Some(exact("POST")),
                headers: Some(BTreeMap::from([
                    ("x-b".into(), exact("1")),
                    (
                        "x-a".into(),
                        StringMatch {
                            regex: Some("^a.*".into()),
                            ..Default::default()
                        },
                    ),
                ])),
                query_params: Some(BTreeMap::from([("q".into(), exact("v"))])),
                ..Default::default()
            },
            HttpMatchRequest {
                uri: Some(exact("/exact")),
                ..Default::default()
            },
            HttpMatchRequest::default(),
        ];
        let mapped = map_matches(&matches, "spec.service.match").expect("maps");
        assert_eq!(
            mapped,
            vec![
                json!({
                    "path": { "type": "RegularExpression", "value": "/api/.*" },
                    "method": "POST",
                    "headers": [
                        { "type": "RegularExpression", "name": "x-a", "value": "^a.*" },
                        { "type": "Exact", "name": "x-b", "value": "1" },
                    ],
                    "queryParams": [{ "type": "Exact", "name": "q", "value": "v" }],
                }),
                json!({ "path": { "type": "Exact", "value": "/exact" } }),
            ]
        );
    }

    #[test]
    fn unsupported_matches_name_the_field() {
        let cases: Vec<(HttpMatchRequest, &str)> = vec![
            (
                HttpMatchRequest {
                    uri: Some(StringMatch {
                        suffix: Some(".png".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.service.match[0].uri",
            ),
            (
                HttpMatchRequest {
                    method: Some(StringMatch {
                        prefix: Some("P".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.service.match[0].method",
            ),
            (
                HttpMatchRequest {
                    headers: Some(BTreeMap::from([(
                        "x-user".into(),
                        StringMatch {
                            prefix: Some("a".into()),
                            ..Default::default()
                        },
                    )])),
                    ..Default::default()
                },
                "spec.service.match[0].headers.x-user",
            ),
            (
                HttpMatchRequest {
                    query_params: Some(BTreeMap::from([(
                        "q".into(),
                        StringMatch {
                            suffix: Some("a".into()),
                            ..Default::default()
                        },
                    )])),
                    ..Default::default()
                },
                "spec.service.match[0].queryParams.q",
            ),
            (
                HttpMatchRequest {
                    source_labels: Some(BTreeMap::new()),
                    ..Default::default()
                },
                "spec.service.match[0].sourceLabels",
            ),
        ];
        for (m, field) in cases {
            let err = map_matches(&[m], "spec.service.match").expect_err(field);
            assert!(err.to_string().starts_with(field), "{err} should name {field}");
        }
    }

    #[test]
    fn filters_timeouts_and_hostnames() {
        let mut s = svc();
        s.hosts = Some(vec!["app.example.com".into()]);
        s.timeout = Some("30s".into());
        s.backend_timeout = Some("10s".into());
        s.headers = Some(Headers {
            request: Some(HeaderOperations {
                set: Some(BTreeMap::from([
                    ("x-z".into(), "1".into()),
                    ("x-a".into(), "2".into()),
                ])),
                remove: Some(vec!["x-drop".into()]),
                ..Default::default()
            }),
            response: Some(HeaderOperations {
                add: Some(BTreeMap::from([("x-r".into(), "3".into())])),
                ..Default::default()
            }),
        });
        s.rewrite = Some(HttpRewrite {
            uri: Some("/v2".into()),
            authority: Some("backend.example.com".into()),
            type_: Some("ReplacePrefixMatch".into()),
        });
        s.mirror = Some(vec![HttpRequestMirrorFilter {
            backend_ref: BackendObjectReference {
                name: "shadow".into(),
                port: Some(80),
                ..Default::default()
            },
            percent: Some(10),
        }]);
        s.cors_policy = Some(CorsPolicy {
            allow_origin: Some(vec!["https://a.example.com".into()]),
            allow_origins: Some(vec![exact("https://b.example.com")]),
            allow_methods: Some(vec!["GET".into()]),
            max_age: Some("24h".into()),
            allow_credentials: Some(true),
            ..Default::default()
        });
        let c = canary(s, CanaryAnalysis::default());
        let spec = build(&c, Routes::PRIMARY);
        assert_eq!(spec["hostnames"], json!(["app.example.com"]));
        let rule = &spec["rules"][0];
        assert_eq!(
            rule["timeouts"],
            json!({ "request": "30s", "backendRequest": "10s" })
        );
        assert_eq!(
            rule["filters"],
            json!([
                { "type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{ "name": "x-a", "value": "2" }, { "name": "x-z", "value": "1" }],
                    "remove": ["x-drop"],
                }},
                { "type": "ResponseHeaderModifier", "responseHeaderModifier": {
                    "add": [{ "name": "x-r", "value": "3" }],
                }},
                { "type": "URLRewrite", "urlRewrite": {
                    "hostname": "backend.example.com",
                    "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2" },
                }},
                { "type": "RequestMirror", "requestMirror": {
                    "backendRef": { "kind": "Service", "name": "shadow", "port": 80 },
                    "percent": 10,
                }},
                { "type": "CORS", "cors": {
                    "allowOrigins": ["https://a.example.com", "https://b.example.com"],
                    "allowMethods": ["GET"],
                    "maxAge": 86400,
                    "allowCredentials": true,
                }},
            ])
        );
        // A static mirror to another Service is not canary mirroring.
        assert_eq!(routes_of_http_route(&c, &spec), Some(Routes::PRIMARY));
    }

    #[test]
    fn full_path_rewrite_by_default() {
        let mut s = svc();
        s.rewrite = Some(HttpRewrite {
            uri: Some("/".into()),
            ..Default::default()
        });
        let spec = build(&canary(s, CanaryAnalysis::default()), Routes::PRIMARY);
        assert_eq!(
            spec["rules"][0]["filters"][0]["urlRewrite"]["path"],
            json!({ "type": "ReplaceFullPath", "replaceFullPath": "/" })
        );
    }

    #[test]
    fn cors_origin_patterns_are_refused() {
        let mut s = svc();
        s.cors_policy = Some(CorsPolicy {
            allow_origins: Some(vec![StringMatch {
                regex: Some(".*".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let err = spec_of(canary(s, CanaryAnalysis::default()), Routes::PRIMARY).expect_err("regex origin");
        assert!(
            err.to_string()
                .contains("spec.service.corsPolicy.allowOrigins[0]")
        );
    }

    #[test]
    fn weights_round_trip() {
        let c = canary(svc(), CanaryAnalysis::default());
        for weight in [0, 5, 30, 70, 100] {
            let spec = build(&c, Routes::canary(weight));
            assert_eq!(routes_of_http_route(&c, &spec), Some(Routes::canary(weight)));
        }
    }

    #[test]
    fn ab_testing_has_a_match_rule_and_a_primary_rule() {
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
                match_: Some(vec![HttpMatchRequest {
                    headers: Some(BTreeMap::from([("x-canary".into(), exact("insider"))])),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        );
        let spec = build(&c, Routes::canary(100));
        let rules = spec["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["matches"],
            json!([{
                "path": { "type": "PathPrefix", "value": "/api" },
                "headers": [{ "type": "Exact", "name": "x-canary", "value": "insider" }],
            }])
        );
        assert_eq!(
            rules[1]["matches"],
            json!([{ "path": { "type": "PathPrefix", "value": "/api" } }])
        );
        assert_eq!(rules[1]["backendRefs"].as_array().expect("refs").len(), 1);
        assert_eq!(routes_of_http_route(&c, &spec), Some(Routes::canary(100)));
    }

    #[test]
    fn ab_match_errors_name_the_analysis_field() {
        let c = canary(
            svc(),
            CanaryAnalysis {
                iterations: Some(10),
                match_: Some(vec![HttpMatchRequest {
                    headers: Some(BTreeMap::from([(
                        "x".into(),
                        StringMatch {
                            suffix: Some("s".into()),
                            ..Default::default()
                        },
                    )])),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        );
        let err =
            http_route_spec(&c, &request(&c, Routes::PRIMARY), GatewayApiVersion::V1).expect_err("suffix");
        assert!(
            err.to_string().starts_with("spec.analysis.match[0].headers.x"),
            "{err}"
        );
    }

    #[test]
    fn mirroring_for_blue_green_and_canary_strategies() {
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
            let percent = analysis.mirror_weight;
            let c = canary(svc(), analysis);
            let routes = Routes {
                mirrored: true,
                ..Routes::PRIMARY
            };
            let spec = build(&c, routes);
            let filter = &spec["rules"][0]["filters"][0];
            assert_eq!(filter["type"], "RequestMirror");
            assert_eq!(filter["requestMirror"]["backendRef"]["name"], "podinfo-canary");
            assert_eq!(
                filter["requestMirror"]["percent"].as_i64(),
                percent.map(i64::from)
            );
            assert_eq!(routes_of_http_route(&c, &spec), Some(routes));
        }
    }

    fn affinity_canary(status: CanaryStatus) -> Canary {
        let mut c = canary(
            svc(),
            CanaryAnalysis {
                step_weight: Some(10),
                session_affinity: Some(SessionAffinity {
                    cookie_name: "flagger-cookie".into(),
                    max_age: Some(120),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        c.status = Some(status);
        c
    }

    #[test]
    fn session_affinity_rules() {
        let c = affinity_canary(CanaryStatus {
            session_affinity_cookie: Some("flagger-cookie=abcdefghij".into()),
            ..Default::default()
        });
        let spec = build(&c, Routes::canary(30));
        let rules = spec["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["matches"][0]["headers"],
            json!([{ "type": "RegularExpression", "name": "Cookie", "value": ".*flagger-cookie.*abcdefghij.*" }])
        );
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 100);
        assert_eq!(
            rules[1]["backendRefs"][1]["filters"],
            json!([{ "type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "add": [{ "name": "Set-Cookie", "value": "flagger-cookie=abcdefghij; Max-Age=120" }],
            }}])
        );
        assert_eq!(routes_of_http_route(&c, &spec), Some(Routes::canary(30)));
    }

    #[test]
    fn session_affinity_expiry_merges_into_the_response_filter() {
        let mut c = affinity_canary(CanaryStatus {
            previous_session_affinity_cookie: Some("flagger-cookie=old".into()),
            ..Default::default()
        });
        c.spec.service.as_mut().expect("svc").headers = Some(Headers {
            response: Some(HeaderOperations {
                add: Some(BTreeMap::from([("x-r".into(), "1".into())])),
                ..Default::default()
            }),
            ..Default::default()
        });
        let spec = build(&c, Routes::PRIMARY);
        let rules = spec["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 2);
        let filters = rules[0]["filters"].as_array().expect("filters");
        assert_eq!(filters.len(), 1, "one ResponseHeaderModifier per rule");
        assert_eq!(
            filters[0]["responseHeaderModifier"]["add"],
            json!([
                { "name": "x-r", "value": "1" },
                { "name": "Set-Cookie", "value": "flagger-cookie=old; Max-Age=-1" },
            ])
        );
        assert_eq!(routes_of_http_route(&c, &spec), Some(Routes::PRIMARY));
    }

    fn route_with_status(generation: i64, parents: Value) -> DynamicObject {
        let mut route =
            DynamicObject::new("podinfo", &http_route_resource(GatewayApiVersion::V1)).within("test");
        route.metadata.generation = Some(generation);
        route.data = json!({
            "spec": { "parentRefs": [{ "group": GROUP, "kind": "Gateway", "name": "gw" }] },
            "status": { "parents": parents },
        });
        route
    }

    fn parent_status(status: &str, observed: i64) -> Value {
        json!({
            "parentRef": { "name": "gw", "namespace": "test" },
            "controllerName": "example.com/gateway",
            "conditions": [{ "type": "Accepted", "status": status, "observedGeneration": observed,
                "reason": "Accepted", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z" }],
        })
    }

    #[test]
    fn accepted_parents_make_a_ready_route() {
        assert!(check_accepted(&route_with_status(2, json!([parent_status("True", 2)]))).is_ok());
        assert!(check_accepted(&route_with_status(2, json!([parent_status("True", 3)]))).is_ok());
    }

    #[test]
    fn unaccepted_stale_or_silent_parents_are_not_ready() {
        for (route, needle) in [
            (
                route_with_status(2, json!([parent_status("False", 2)])),
                "not accepted",
            ),
            (
                route_with_status(3, json!([parent_status("True", 2)])),
                "generation 3",
            ),
            (route_with_status(1, json!([])), "no status"),
            (route_with_status(1, Value::Null), "no status"),
        ] {
            let err = check_accepted(&route).expect_err(needle);
            assert_eq!(err.category(), "RouteNotReady");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
