//! The `apisix` provider: an ApisixRoute `<routeRef>-<apex>-canary` (`apisix.apache.org/v2`)
//! holding a copy of the `spec.routeRef` route's rule that sends to `<apex>`, with priority
//! 10000 and weighted backends `<apex>-primary` and `<apex>-canary` (Flagger's `apisix.go`).
//! The user's ApisixRoute is never changed.
//!
//! Unlike Flagger: reconcile keeps the live weights (Flagger writes 100/0 whenever it updates
//! the copy), it keeps the copy's labels and annotations in line with the original's, and the
//! copy carries the GitOps hands-off annotations.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed, created_meta,
    get_typed, typed_api, write_typed,
};
use crate::api::{Canary, Capabilities};
use crate::objects::GITOPS_HANDS_OFF;

const APISIX_ROUTE: RoutingKind = RoutingKind {
    group: "apisix.apache.org",
    version: "v2",
    kind: "ApisixRoute",
    plural: "apisixroutes",
    namespaced: true,
};

/// The canary ApisixRoute, watched for drift.
pub const KINDS: &[RoutingKind] = &[APISIX_ROUTE];

/// Flagger's priority of the canary rule, above the original's.
pub const CANARY_PRIORITY: i64 = 10000;

const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `ApisixRoute.spec` as flaggit reads and writes it: the HTTP rules.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ApisixRouteSpec {
    #[serde(default)]
    pub http: Vec<HttpRule>,
}

/// One `spec.http[]` rule, with every field of the v2 schema so a copy loses nothing.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<UpstreamTimeout>,
    #[serde(rename = "match")]
    pub match_: HttpMatch,
    /// Always written, as Flagger's Go type does.
    #[serde(default)]
    pub websocket: bool,
    #[serde(
        default,
        rename = "plugin_config_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub plugin_config_name: Option<String>,
    #[serde(default)]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<Plugin>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct UpstreamTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exprs: Option<Vec<MatchExpr>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MatchExpr {
    pub subject: ExprSubject,
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ExprSubject {
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    pub service_name: String,
    pub service_port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_granularity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

/// A plugin of the rule; its `config` is APISIX's own (schemaless in the CRD), copied as read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Plugin {
    pub name: String,
    pub enable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    pub enable: bool,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<JwtAuth>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct KeyAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct JwtAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

fn route_ref(canary: &Canary) -> Result<&str, Error> {
    canary
        .spec
        .route_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::Invalid(
                "spec.routeRef is required by the apisix provider: name the ApisixRoute that sends to the apex Service"
                    .into(),
            )
        })
}

/// `<routeRef>-<apex>-canary`.
pub fn canary_route_name(canary: &Canary) -> Result<String, Error> {
    Ok(format!(
        "{}-{}-canary",
        route_ref(canary)?,
        ServiceNames::of(canary).apex
    ))
}

/// The canary route's spec at `routes`: the original's first rule with a backend to the apex
/// Service (which must be its only backend), at priority 10000, split between the primary and
/// the canary on the original backend's port, granularity and subset.
pub fn canary_route_spec(
    canary: &Canary,
    original: &ApisixRouteSpec,
    routes: Routes,
) -> Result<ApisixRouteSpec, Error> {
    let names = ServiceNames::of(canary);
    let route_name = route_ref(canary)?;
    let rule = original
        .http
        .iter()
        .find(|r| r.backends.iter().any(|b| b.service_name == names.apex))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "spec.routeRef: ApisixRoute {route_name} has no spec.http rule with a backend {}: point a rule at the apex Service",
                names.apex
            ))
        })?;
    let [backend] = rule.backends.as_slice() else {
        return Err(Error::Invalid(format!(
            "spec.routeRef: the rule {} of ApisixRoute {route_name} has {} backends; the apisix provider needs exactly one, the apex Service {}",
            rule.name,
            rule.backends.len(),
            names.apex
        )));
    };
    let weighted = |name: &str, weight: i32| Backend {
        service_name: name.to_string(),
        weight: Some(i64::from(weight)),
        ..backend.clone()
    };
    let mut rule = rule.clone();
    rule.priority = Some(CANARY_PRIORITY);
    rule.backends = vec![
        weighted(&names.primary, routes.primary),
        weighted(&names.canary, routes.canary),
    ];
    Ok(ApisixRouteSpec { http: vec![rule] })
}

/// The split of the rule that sends to the primary, when the weights add up to 100.
pub fn routes_of_apisix_route(canary: &Canary, spec: &ApisixRouteSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let rule = spec
        .http
        .iter()
        .find(|r| r.backends.iter().any(|b| b.service_name == names.primary))?;
    let weight = |name: &str| {
        rule.backends
            .iter()
            .find(|b| b.service_name == name)
            .map(|b| b.weight.unwrap_or(0))
    };
    let (primary, canary_weight) = (weight(&names.primary)?, weight(&names.canary)?);
    (primary + canary_weight == 100).then(|| Routes::canary(i32::try_from(canary_weight).unwrap_or(0)))
}

/// The copy's metadata: the live copy's (or a new one's, owned by the Canary) with the
/// original route's labels and annotations (without kubectl's last-applied copy) and the
/// GitOps hands-off annotations.
pub fn canary_route_meta(
    canary: &Canary,
    name: &str,
    original: &ObjectMeta,
    live: Option<&ObjectMeta>,
) -> ObjectMeta {
    let mut meta = live
        .cloned()
        .unwrap_or_else(|| created_meta(canary, &APISIX_ROUTE, name));
    meta.labels = original.labels.clone().filter(|l| !l.is_empty());
    let mut annotations: BTreeMap<String, String> = original
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != KUBECTL_LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in GITOPS_HANDS_OFF {
        annotations.insert(k.to_string(), v.to_string());
    }
    meta.annotations = Some(annotations);
    meta
}

/// The APISIX router.
pub struct ApisixRouter {
    client: Client,
}

impl ApisixRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, canary: &Canary) -> Api<Typed<ApisixRouteSpec>> {
        typed_api(
            &self.client,
            &APISIX_ROUTE,
            &canary.namespace().unwrap_or_default(),
        )
    }

    async fn original(&self, canary: &Canary) -> Result<Typed<ApisixRouteSpec>, Error> {
        let name = route_ref(canary)?;
        get_typed(&self.api(canary), &APISIX_ROUTE, name)
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "spec.routeRef: ApisixRoute {name} does not exist: create it or fix the name"
                ))
            })
    }

    async fn live(&self, canary: &Canary) -> Result<Typed<ApisixRouteSpec>, Error> {
        let name = canary_route_name(canary)?;
        get_typed(&self.api(canary), &APISIX_ROUTE, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("ApisixRoute {name} does not exist yet")))
    }
}

#[async_trait]
impl Router for ApisixRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let original = self.original(canary).await?;
        let name = canary_route_name(canary)?;
        let api = self.api(canary);
        let live = get_typed(&api, &APISIX_ROUTE, &name).await?;
        let routes = live
            .as_ref()
            .and_then(|l| routes_of_apisix_route(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let spec = canary_route_spec(canary, &original.spec, routes)?;
        let meta = canary_route_meta(
            canary,
            &name,
            &original.metadata,
            live.as_ref().map(|l| &l.metadata),
        );
        write_typed(&api, &APISIX_ROUTE, live.as_ref(), meta, spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let original = self.original(canary).await?;
        let live = self.live(canary).await?;
        let spec = canary_route_spec(canary, &original.spec, request.routes)?;
        write_typed(
            &self.api(canary),
            &APISIX_ROUTE,
            Some(&live),
            live.metadata.clone(),
            spec,
        )
        .await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.live(canary).await?;
        routes_of_apisix_route(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "ApisixRoute {} has no primary and canary weights adding up to 100: reconcile rewrites it",
                live.name_any()
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // The original route was never changed; the garbage collector removes the copy.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService, RouteRef};

    fn canary() -> Canary {
        let mut c = crate::testing::podinfo(
            Some(CanaryService {
                port: 80,
                ..Default::default()
            }),
            Some(CanaryAnalysis::default()),
        );
        c.metadata.namespace = Some("test".into());
        c.spec.route_ref = Some(RouteRef {
            api_version: "apisix.apache.org/v2".into(),
            name: "podinfo-route".into(),
            ..Default::default()
        });
        c
    }

    fn original() -> ApisixRouteSpec {
        serde_json::from_value(serde_json::json!({ "http": [
            { "name": "other", "match": { "paths": ["/other"] }, "backends": [{ "serviceName": "other", "servicePort": 80 }] },
            {
                "name": "method",
                "match": { "hosts": ["app.example.com"], "paths": ["/*"], "methods": ["GET"] },
                "backends": [{ "serviceName": "podinfo", "servicePort": 80, "resolveGranularity": "service" }],
                "plugins": [{ "name": "proxy-rewrite", "enable": true, "config": { "uri": "/" } }],
            },
        ]}))
        .expect("reads")
    }

    #[test]
    fn the_copy_holds_the_apex_rule_split_at_priority_10000() {
        let c = canary();
        assert_eq!(
            canary_route_name(&c).expect("name"),
            "podinfo-route-podinfo-canary"
        );
        let spec = canary_route_spec(&c, &original(), Routes::canary(20)).expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({ "http": [{
                "name": "method",
                "priority": 10000,
                "match": { "hosts": ["app.example.com"], "paths": ["/*"], "methods": ["GET"] },
                "websocket": false,
                "backends": [
                    { "serviceName": "podinfo-primary", "servicePort": 80, "resolveGranularity": "service", "weight": 80 },
                    { "serviceName": "podinfo-canary", "servicePort": 80, "resolveGranularity": "service", "weight": 20 },
                ],
                "plugins": [{ "name": "proxy-rewrite", "enable": true, "config": { "uri": "/" } }],
            }]})
        );
        assert_eq!(routes_of_apisix_route(&c, &spec), Some(Routes::canary(20)));
        let primary = canary_route_spec(&c, &original(), Routes::PRIMARY).expect("builds");
        assert_eq!(primary.http[0].backends[1].weight, Some(0), "0 is written");
        assert_eq!(routes_of_apisix_route(&c, &primary), Some(Routes::PRIMARY));
    }

    #[test]
    fn a_route_without_a_single_apex_backend_is_refused_with_the_field() {
        let c = canary();
        let mut two = original();
        let again = two.http[1].backends[0].clone();
        two.http[1].backends.push(again);
        let err = canary_route_spec(&c, &two, Routes::PRIMARY).expect_err("two backends");
        assert!(err.to_string().contains("exactly one"), "{err}");
        let mut none = original();
        none.http.remove(1);
        let err = canary_route_spec(&c, &none, Routes::PRIMARY).expect_err("no apex");
        assert!(err.to_string().starts_with("spec.routeRef"), "{err}");
        let mut unset = canary();
        unset.spec.route_ref = None;
        let err = canary_route_spec(&unset, &original(), Routes::PRIMARY).expect_err("no routeRef");
        assert!(err.to_string().contains("spec.routeRef is required"), "{err}");
    }

    #[test]
    fn the_copy_takes_the_originals_metadata_and_keeps_its_owner() {
        let c = canary();
        let original = ObjectMeta {
            labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
            annotations: Some(BTreeMap::from([
                (KUBECTL_LAST_APPLIED.to_string(), "{}".to_string()),
                ("k8s.apisix.apache.org/x".to_string(), "1".to_string()),
            ])),
            ..Default::default()
        };
        let meta = canary_route_meta(&c, "podinfo-route-podinfo-canary", &original, None);
        assert_eq!(meta.name.as_deref(), Some("podinfo-route-podinfo-canary"));
        assert_eq!(meta.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(meta.labels, original.labels);
        let annotations = meta.annotations.expect("annotations");
        assert!(!annotations.contains_key(KUBECTL_LAST_APPLIED));
        assert_eq!(annotations["k8s.apisix.apache.org/x"], "1");
        assert_eq!(annotations["kustomize.toolkit.fluxcd.io/reconcile"], "disabled");
    }
}
