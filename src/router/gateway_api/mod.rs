//! The `gatewayapi:v1` and `gatewayapi:v1beta1` providers: one HTTPRoute `<apex>` attached to
//! `spec.service.gatewayRefs` with weighted backendRefs to `<apex>-primary` and
//! `<apex>-canary` (plus A/B, mirroring and session-affinity rules). The HTTPRoute's fields
//! are typed in [`types`]; one set serves both versions.
//!
//! Readiness: [`Router::get_routes`] only reports weights the Gateways have taken on, so every
//! parent in `spec.parentRefs` must have an entry in `status.parents` with condition
//! `Accepted=True` and `observedGeneration >= metadata.generation`. A route with no status
//! for a parent (no Gateway controller has seen it yet, or none ever will because the parent
//! does not exist) is not ready either: Flagger skips such parents, but then shifts traffic
//! that nothing serves, so flaggit waits and says which parent is silent.

mod types;

use async_trait::async_trait;
use kube::api::ApiResource;
use kube::{Api, Client, ResourceExt};

pub use types::HttpRouteSpec;
use types::{
    FilterType, HttpBackendRef, HttpCorsFilter, HttpHeader, HttpHeaderFilter, HttpHeaderMatch, HttpPathMatch,
    HttpPathModifier, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteStatus, HttpRouteTimeouts,
    HttpUrlRewriteFilter, PathMatchType, PathModifierType, RouteParentStatus, ValueMatchType,
};

use super::istio::merge_matches;
use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed,
    affinity_cookies_for, cookie_regex, expire_cookie_value, get_typed, primary_set_cookie_value,
    routing_meta, service_spec, set_cookie_value, typed_api, write_typed,
};
use crate::api::{
    BackendObjectReference, Canary, CanaryService, Capabilities, HeaderOperations, HttpMatchRequest,
    HttpRequestMirrorFilter, ParentReference, Provider, StringMatch,
};

const GROUP: &str = "gateway.networking.k8s.io";

/// Which served version of the Gateway API the HTTPRoute is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayApiVersion {
    V1,
    V1beta1,
}

impl GatewayApiVersion {
    /// The HTTPRoute kind of this version.
    fn kind(self) -> &'static RoutingKind {
        match self {
            Self::V1 => &KINDS[0],
            Self::V1beta1 => &KINDS[1],
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
    version.kind().api_resource()
}

/// An HTTPRoute as flaggit reads and writes it.
pub type HttpRoute = Typed<HttpRouteSpec>;

/// The Gateway API router.
pub struct GatewayApiRouter {
    client: Client,
    version: GatewayApiVersion,
}

impl GatewayApiRouter {
    pub fn new(client: Client, version: GatewayApiVersion) -> Self {
        Self { client, version }
    }

    fn api(&self, canary: &Canary) -> Api<HttpRoute> {
        typed_api(
            &self.client,
            self.version.kind(),
            &canary.namespace().unwrap_or_default(),
        )
    }

    async fn live(&self, canary: &Canary) -> Result<HttpRoute, Error> {
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
        let kind = self.version.kind();
        let name = ServiceNames::of(canary).apex;
        let live = get_typed(&api, kind, &name).await?;
        let routes = live
            .as_ref()
            .and_then(|l| routes_of_http_route(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let request = RouteRequest {
            routes,
            cookies: cookies.clone(),
        };
        let spec = http_route_spec(canary, &request, self.version)?;
        let meta = routing_meta(canary, &name, live.as_ref().map(|l| &l.metadata));
        write_typed(&api, kind, live.as_ref(), meta, spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let live = self.live(canary).await?;
        let spec = http_route_spec(canary, request, self.version)?;
        let meta = live.metadata.clone();
        write_typed(&self.api(canary), self.version.kind(), Some(&live), meta, spec).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.live(canary).await?;
        check_accepted(&live)?;
        routes_of_http_route(canary, &live.spec).ok_or_else(|| {
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
pub fn check_accepted(route: &HttpRoute) -> Result<(), Error> {
    let name = route.name_any();
    let namespace = route.namespace().unwrap_or_default();
    let generation = route.metadata.generation.unwrap_or(0);
    let status: HttpRouteStatus = match &route.status {
        None | Some(serde_json::Value::Null) => HttpRouteStatus::default(),
        Some(value) => serde_json::from_value(value.clone()).map_err(|err| {
            Error::NotReady(format!(
                "HTTPRoute {name} has a status.parents flaggit cannot read ({err}): check the \
                 Gateway controller that writes it"
            ))
        })?,
    };
    for parent in &route.spec.parent_refs {
        let wanted = parent_key(parent, &namespace);
        let describe = format!("{}/{} {}/{}", wanted.0, wanted.1, wanted.2, wanted.3);
        let matching: Vec<&RouteParentStatus> = status
            .parents
            .iter()
            .filter(|s| parent_key(&s.parent_ref, &namespace) == wanted)
            .collect();
        if matching.is_empty() {
            return Err(Error::NotReady(format!(
                "HTTPRoute {name} has no status from its parent {describe}: check that a Gateway \
                 controller runs and that spec.service.gatewayRefs names an existing Gateway"
            )));
        }
        for status in matching {
            let Some(accepted) = status.conditions.iter().find(|c| c.type_ == "Accepted") else {
                return Err(Error::NotReady(format!(
                    "HTTPRoute {name} is not yet accepted by {describe}"
                )));
            };
            if accepted.status != "True" {
                return Err(Error::NotReady(format!(
                    "HTTPRoute {name} is not accepted by {describe}: {} {}",
                    accepted.reason, accepted.message
                )));
            }
            let observed = accepted.observed_generation.unwrap_or(0);
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
fn parent_key(parent: &ParentReference, namespace: &str) -> (String, String, String, String, String, i32) {
    let text = |field: &Option<String>, default: &str| {
        field
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    (
        text(&parent.group, GROUP),
        text(&parent.kind, "Gateway"),
        text(&parent.namespace, namespace),
        parent.name.clone(),
        text(&parent.section_name, ""),
        parent.port.unwrap_or(0),
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
) -> Result<HttpRouteSpec, Error> {
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
    let parent_refs: Vec<ParentReference> = refs
        .into_iter()
        .map(|r| ParentReference {
            group: Some(r.group.unwrap_or_else(|| GROUP.into())),
            kind: Some(r.kind.unwrap_or_else(|| "Gateway".into())),
            ..r
        })
        .collect();

    let service_match = svc.match_.clone().unwrap_or_default();
    let mut base_matches = map_matches(&service_match, "spec.service.match")?;
    if base_matches.is_empty() {
        base_matches.push(HttpRouteMatch::default());
    }
    let base_matches: Vec<HttpRouteMatch> = base_matches.into_iter().map(with_default_path).collect();
    let filters = filters(svc)?;
    let timeouts = timeouts(svc);
    let service_ref = |name: &str| BackendObjectReference {
        kind: Some("Service".into()),
        name: name.to_string(),
        port: Some(svc.port),
        ..Default::default()
    };
    let backend = |name: &str, weight: i32| HttpBackendRef {
        backend: service_ref(name),
        weight: Some(weight),
        filters: Vec::new(),
    };
    let rule =
        |matches: &[HttpRouteMatch], filters: &[HttpRouteFilter], backend_refs: Vec<HttpBackendRef>| {
            HttpRouteRule {
                matches: matches.to_vec(),
                filters: filters.to_vec(),
                backend_refs,
                timeouts: timeouts.clone(),
            }
        };

    let analysis = canary.spec.analysis();
    let mut weighted_filters = filters.clone();
    if routes.mirrored {
        weighted_filters.push(HttpRouteFilter::request_mirror(HttpRequestMirrorFilter {
            backend_ref: service_ref(&names.canary),
            percent: analysis
                .and_then(|a| a.mirror_weight)
                .filter(|w| *w > 0 && *w < 100),
        }));
    }
    let mut primary_ref = backend(&names.primary, routes.primary);
    let mut canary_ref = backend(&names.canary, routes.canary);

    let ab_match = analysis.and_then(|a| a.match_.clone()).filter(|m| !m.is_empty());
    let mut rules = Vec::new();
    if let Some(ab_match) = ab_match {
        // Validate the analysis conditions in their own field's terms before merging.
        map_matches(&ab_match, "spec.analysis.match")?;
        let merged = merge_matches(&ab_match, &service_match);
        let ab_matches: Vec<HttpRouteMatch> = map_matches(&merged, "spec.analysis.match")?
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
                canary_ref.filters = vec![set_cookie_filter(&set_cookie_value(affinity, cookie))];
            }
            if let Some(cookie) = &cookies.primary {
                rules.push(rule(
                    &with_cookie(&base_matches, cookie),
                    &filters,
                    vec![backend(&names.primary, 100)],
                ));
                primary_ref.filters = vec![set_cookie_filter(&primary_set_cookie_value(canary, cookie))];
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

    Ok(HttpRouteSpec {
        parent_refs,
        hostnames: svc.hosts.clone().unwrap_or_default(),
        rules,
    })
}

/// A match with the API server's default path (PathPrefix `/`) when it has none, so the
/// object written equals the object read back.
fn with_default_path(mut m: HttpRouteMatch) -> HttpRouteMatch {
    if m.path.is_none() {
        m.path = Some(HttpPathMatch {
            type_: Some(PathMatchType::PathPrefix),
            value: Some("/".into()),
        });
    }
    m
}

/// `matches` each also requiring a `Cookie` header that carries `cookie`.
fn with_cookie(matches: &[HttpRouteMatch], cookie: &str) -> Vec<HttpRouteMatch> {
    let cookie_header = HttpHeaderMatch {
        type_: Some(ValueMatchType::RegularExpression),
        name: "Cookie".into(),
        value: cookie_regex(cookie),
    };
    matches
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.headers.push(cookie_header.clone());
            m
        })
        .collect()
}

fn set_cookie_filter(value: &str) -> HttpRouteFilter {
    HttpRouteFilter::response_header_modifier(HttpHeaderFilter {
        add: vec![HttpHeader {
            name: "Set-Cookie".into(),
            value: value.to_string(),
        }],
        ..Default::default()
    })
}

/// Adds a response header to the rule's ResponseHeaderModifier filter, or adds that filter:
/// a rule may have only one filter of each type.
fn add_response_header(filters: &mut Vec<HttpRouteFilter>, name: &str, value: &str) {
    let header = HttpHeader {
        name: name.to_string(),
        value: value.to_string(),
    };
    let existing = filters
        .iter_mut()
        .find(|f| f.type_ == FilterType::ResponseHeaderModifier);
    match existing {
        Some(filter) => filter
            .response_header_modifier
            .get_or_insert_with(HttpHeaderFilter::default)
            .add
            .push(header),
        None => filters.push(HttpRouteFilter::response_header_modifier(HttpHeaderFilter {
            add: vec![header],
            ..Default::default()
        })),
    }
}

/// The Istio-shaped `matches` (at `field`) as Gateway API HTTPRouteMatches. Only what the
/// Gateway API can express is accepted: uri exact/prefix/regex, method exact, headers and
/// queryParams exact/regex; anything else is an error naming the field.
fn map_matches(matches: &[HttpMatchRequest], field: &str) -> Result<Vec<HttpRouteMatch>, Error> {
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
        let mut out_match = HttpRouteMatch::default();
        if let Some(uri) = &m.uri {
            let (type_, value) = if let Some(v) = &uri.regex {
                (PathMatchType::RegularExpression, v)
            } else if let Some(v) = &uri.exact {
                (PathMatchType::Exact, v)
            } else if let Some(v) = &uri.prefix {
                (PathMatchType::PathPrefix, v)
            } else {
                return Err(Error::Invalid(format!(
                    "{at}.uri: the Gateway API matches paths by exact, prefix or regex only"
                )));
            };
            out_match.path = Some(HttpPathMatch {
                type_: Some(type_),
                value: Some(value.clone()),
            });
        }
        if let Some(method) = &m.method {
            let Some(exact) = &method.exact else {
                return Err(Error::Invalid(format!(
                    "{at}.method: the Gateway API matches methods by exact value only"
                )));
            };
            out_match.method = Some(exact.clone());
        }
        for (key, values, list) in [
            ("headers", &m.headers, &mut out_match.headers),
            ("queryParams", &m.query_params, &mut out_match.query_params),
        ] {
            for (name, value) in values.iter().flatten() {
                let (type_, v) = exact_or_regex(value).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{at}.{key}.{name}: the Gateway API matches {key} by exact or regex only"
                    ))
                })?;
                list.push(HttpHeaderMatch {
                    type_: Some(type_),
                    name: name.clone(),
                    value: v.to_string(),
                });
            }
        }
        if !out_match.is_empty() {
            out.push(out_match);
        }
    }
    Ok(out)
}

fn exact_or_regex(m: &StringMatch) -> Option<(ValueMatchType, &str)> {
    if let Some(v) = &m.exact {
        Some((ValueMatchType::Exact, v))
    } else if let Some(v) = &m.regex {
        Some((ValueMatchType::RegularExpression, v))
    } else {
        None
    }
}

/// The route filters `spec.service` asks for.
fn filters(svc: &CanaryService) -> Result<Vec<HttpRouteFilter>, Error> {
    let mut out = Vec::new();
    if let Some(headers) = &svc.headers {
        if let Some(ops) = &headers.request {
            out.push(HttpRouteFilter::request_header_modifier(header_modifier(ops)));
        }
        if let Some(ops) = &headers.response {
            out.push(HttpRouteFilter::response_header_modifier(header_modifier(ops)));
        }
    }
    if let Some(rewrite) = &svc.rewrite {
        let url = HttpUrlRewriteFilter {
            hostname: rewrite.authority.clone().filter(|a| !a.is_empty()),
            path: rewrite.uri.clone().filter(|u| !u.is_empty()).map(|uri| {
                if rewrite.type_.as_deref() == Some("ReplacePrefixMatch") {
                    HttpPathModifier {
                        type_: PathModifierType::ReplacePrefixMatch,
                        replace_full_path: None,
                        replace_prefix_match: Some(uri),
                    }
                } else {
                    HttpPathModifier {
                        type_: PathModifierType::ReplaceFullPath,
                        replace_full_path: Some(uri),
                        replace_prefix_match: None,
                    }
                }
            }),
        };
        if url != HttpUrlRewriteFilter::default() {
            out.push(HttpRouteFilter::url_rewrite(url));
        }
    }
    for mirror in svc.mirror.iter().flatten() {
        let b = &mirror.backend_ref;
        out.push(HttpRouteFilter::request_mirror(HttpRequestMirrorFilter {
            backend_ref: BackendObjectReference {
                // An absent group is the core group; "" is the same but some servers refuse it.
                group: b.group.clone().filter(|g| !g.is_empty()),
                kind: Some(b.kind.clone().unwrap_or_else(|| "Service".into())),
                ..b.clone()
            },
            percent: mirror.percent,
        }));
    }
    if let Some(cors) = &svc.cors_policy {
        let mut allow_origins: Vec<String> = cors.allow_origin.clone().unwrap_or_default();
        for (i, origin) in cors.allow_origins.iter().flatten().enumerate() {
            match &origin.exact {
                Some(exact) => allow_origins.push(exact.clone()),
                None => {
                    return Err(Error::Invalid(format!(
                        "spec.service.corsPolicy.allowOrigins[{i}]: the Gateway API CORS filter \
                         takes exact origins (or `*` wildcards written as exact) only"
                    )));
                }
            }
        }
        let max_age = cors
            .max_age
            .as_ref()
            .map(|max_age| {
                crate::rollout::parse_duration(max_age)
                    .map(|d| d.as_secs())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "spec.service.corsPolicy.maxAge {max_age:?} is not a duration like 24h \
                             or 600s"
                        ))
                    })
            })
            .transpose()?;
        out.push(HttpRouteFilter::cors(HttpCorsFilter {
            allow_origins,
            allow_methods: cors.allow_methods.clone().unwrap_or_default(),
            allow_headers: cors.allow_headers.clone().unwrap_or_default(),
            expose_headers: cors.expose_headers.clone().unwrap_or_default(),
            max_age,
            allow_credentials: cors.allow_credentials,
        }));
    }
    Ok(out)
}

/// A header modifier with its headers sorted by name, so the object is stable.
fn header_modifier(ops: &HeaderOperations) -> HttpHeaderFilter {
    // BTreeMap iterates in name order.
    let list = |headers: &Option<std::collections::BTreeMap<String, String>>| {
        headers
            .iter()
            .flatten()
            .map(|(name, value)| HttpHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    HttpHeaderFilter {
        set: list(&ops.set),
        add: list(&ops.add),
        remove: ops.remove.clone().unwrap_or_default(),
    }
}

fn timeouts(svc: &CanaryService) -> Option<HttpRouteTimeouts> {
    let t = HttpRouteTimeouts {
        request: svc.timeout.clone().filter(|t| !t.is_empty()),
        backend_request: svc.backend_timeout.clone().filter(|t| !t.is_empty()),
    };
    (t != HttpRouteTimeouts::default()).then_some(t)
}

/// Whether a rule is a sticky-session rule (matched on the `Cookie` header by regex).
fn is_sticky(rule: &HttpRouteRule) -> bool {
    rule.matches.iter().any(|m| {
        m.headers.iter().any(|h| {
            h.type_ == Some(ValueMatchType::RegularExpression) && h.name.eq_ignore_ascii_case("cookie")
        })
    })
}

/// The split an HTTPRoute spec routes: the weights of the first non-sticky rule with
/// backendRefs to both primary and canary; mirrored when that rule mirrors to the canary.
/// None when no rule does.
pub fn routes_of_http_route(canary: &Canary, spec: &HttpRouteSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    for rule in spec.rules.iter().filter(|r| !is_sticky(r)) {
        let weight_of = |name: &str| {
            rule.backend_refs
                .iter()
                .find(|b| b.backend.name == name)
                // The Gateway API's default weight is 1.
                .map(|b| b.weight.unwrap_or(1))
        };
        if let (Some(primary), Some(canary_weight)) = (weight_of(&names.primary), weight_of(&names.canary)) {
            let mirrored = rule.filters.iter().any(|f| {
                f.type_ == FilterType::RequestMirror
                    && f.request_mirror
                        .as_ref()
                        .is_some_and(|m| m.backend_ref.name == names.canary)
            });
            return Some(Routes {
                primary,
                canary: canary_weight,
                mirrored,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::api::{CanaryAnalysis, CanaryStatus, CorsPolicy, Headers, HttpRewrite, SessionAffinity};

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

    /// The spec for an owned canary at `routes`, as the JSON the API server receives.
    fn spec_of(c: Canary, routes: Routes) -> Result<Value, Error> {
        http_route_spec(&c, &request(&c, routes), GatewayApiVersion::V1).map(|s| json_of(&s))
    }

    fn json_of(spec: impl serde::Serialize) -> Value {
        serde_json::to_value(spec).expect("serializes")
    }

    /// [`super::routes_of_http_route`] of the JSON `spec`, parsed back into the typed spec as
    /// a route read from the API server is.
    fn routes_of_http_route(c: &Canary, spec: &Value) -> Option<Routes> {
        let typed: HttpRouteSpec = serde_json::from_value(spec.clone()).expect("parses back");
        super::routes_of_http_route(c, &typed)
    }

    /// The request the controller makes at `routes`, with the cookies of the status.
    fn request(c: &Canary, routes: Routes) -> RouteRequest {
        RouteRequest {
            routes,
            cookies: AffinityCookies::stored(c.status.as_ref()),
        }
    }

    fn build(c: &Canary, routes: Routes) -> Value {
        json_of(http_route_spec(c, &request(c, routes), GatewayApiVersion::V1).expect("builds"))
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
        let mapped: Vec<Value> = map_matches(&matches, "spec.service.match")
            .expect("maps")
            .iter()
            .map(json_of)
            .collect();
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
        s.headers = Some(Box::new(Headers {
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
        }));
        s.rewrite = Some(Box::new(HttpRewrite {
            uri: Some("/v2".into()),
            authority: Some("backend.example.com".into()),
            type_: Some("ReplacePrefixMatch".into()),
        }));
        s.mirror = Some(vec![HttpRequestMirrorFilter {
            backend_ref: BackendObjectReference {
                name: "shadow".into(),
                port: Some(80),
                ..Default::default()
            },
            percent: Some(10),
        }]);
        s.cors_policy = Some(Box::new(CorsPolicy {
            allow_origin: Some(vec!["https://a.example.com".into()]),
            allow_origins: Some(vec![exact("https://b.example.com")]),
            allow_methods: Some(vec!["GET".into()]),
            max_age: Some("24h".into()),
            allow_credentials: Some(true),
            ..Default::default()
        }));
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
        s.rewrite = Some(Box::new(HttpRewrite {
            uri: Some("/".into()),
            ..Default::default()
        }));
        let spec = build(&canary(s, CanaryAnalysis::default()), Routes::PRIMARY);
        assert_eq!(
            spec["rules"][0]["filters"][0]["urlRewrite"]["path"],
            json!({ "type": "ReplaceFullPath", "replaceFullPath": "/" })
        );
    }

    #[test]
    fn cors_origin_patterns_are_refused() {
        let mut s = svc();
        s.cors_policy = Some(Box::new(CorsPolicy {
            allow_origins: Some(vec![StringMatch {
                regex: Some(".*".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }));
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
                session_affinity: Some(Box::new(SessionAffinity {
                    cookie_name: "flagger-cookie".into(),
                    max_age: Some(120),
                    ..Default::default()
                })),
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
        c.spec.service.as_mut().expect("svc").headers = Some(Box::new(Headers {
            response: Some(HeaderOperations {
                add: Some(BTreeMap::from([("x-r".into(), "1".into())])),
                ..Default::default()
            }),
            ..Default::default()
        }));
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

    #[test]
    fn a_live_route_with_fields_flaggit_does_not_write_is_read() {
        // As a newer Gateway API server (or a hand edit) returns it: defaults left out,
        // `group: ""`, rule names, filter types and mirror fractions flaggit never writes.
        let live = json!({
            "parentRefs": [{ "name": "gateway" }],
            "useDefaultGateways": "All",
            "rules": [{
                "name": "main",
                "matches": [
                    { "headers": [{ "name": "x-user", "value": "a" }] },
                    { "path": { "type": "ImplementationSpecific", "value": "/x" } },
                ],
                "filters": [
                    { "type": "RequestRedirect", "requestRedirect": { "scheme": "https" } },
                    { "type": "URLRewrite", "urlRewrite": { "path": { "type": "ReplaceRegex", "replaceRegex": "x" } } },
                    { "type": "ExtensionRef", "extensionRef": { "group": "x", "kind": "Y", "name": "z" } },
                    { "type": "RequestMirror", "requestMirror": {
                        "backendRef": { "group": "", "name": "podinfo-canary", "port": 9898 },
                        "fraction": { "numerator": 1, "denominator": 3 },
                    }},
                ],
                "backendRefs": [
                    { "group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898 },
                    { "group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": 3 },
                ],
                "sessionPersistence": { "type": "Cookie" },
                "retry": { "attempts": 2 },
            }],
        });
        let c = canary(svc(), CanaryAnalysis::default());
        let spec: HttpRouteSpec = serde_json::from_value(live).expect("tolerant read");
        assert_eq!(spec.rules[0].filters[0].type_, FilterType::Other);
        assert_eq!(spec.rules[0].matches[0].headers[0].type_, None);
        assert_eq!(
            spec.rules[0].matches[1].path.as_ref().and_then(|p| p.type_),
            Some(PathMatchType::Other)
        );
        // An absent weight is the API's default of 1.
        assert_eq!(
            super::routes_of_http_route(&c, &spec),
            Some(Routes {
                primary: 1,
                canary: 3,
                mirrored: true,
            })
        );
        // What flaggit writes differs, so reconcile rewrites the route.
        assert_ne!(
            spec,
            http_route_spec(&c, &request(&c, Routes::PRIMARY), GatewayApiVersion::V1).expect("builds")
        );
    }

    #[test]
    fn a_status_flaggit_cannot_read_is_not_ready_with_the_reason() {
        let mut route = route_with_status(1, json!([]));
        route.status =
            Some(json!({ "parents": [{ "parentRef": { "name": "gw" }, "conditions": "Accepted" }] }));
        let err = check_accepted(&route).expect_err("unreadable");
        assert_eq!(err.category(), "RouteNotReady");
        assert!(err.to_string().contains("cannot read"), "{err}");
        route.status = None;
        assert!(
            check_accepted(&route)
                .expect_err("no status")
                .to_string()
                .contains("no status")
        );
    }

    fn route_with_status(generation: i64, parents: Value) -> HttpRoute {
        let spec = HttpRouteSpec {
            parent_refs: vec![ParentReference {
                group: Some(GROUP.into()),
                kind: Some("Gateway".into()),
                name: "gw".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut route = HttpRoute::new("podinfo", &http_route_resource(GatewayApiVersion::V1), spec);
        route.metadata.namespace = Some("test".into());
        route.metadata.generation = Some(generation);
        // The status as a Gateway controller writes it.
        route.status = Some(json!({ "parents": parents }));
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
