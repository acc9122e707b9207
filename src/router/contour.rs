//! The `contour` provider: an HTTPProxy `<apex>` (`projectcontour.io/v1`) with weighted
//! services `<apex>-primary` and `<apex>-canary`, meant to be included from the user's root
//! HTTPProxy (Flagger's `contour.go`). A/B adds a first route with header conditions.
//!
//! Unlike Flagger: no `retryOn: [""]` (which Contour's CRD refuses) when `retries.retryOn` is
//! unset, a regex header match is refused (Flagger writes a bare `{name}` condition, which
//! matches any value), and reconcile keeps the live weights.

use async_trait::async_trait;
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed, get_typed,
    routing_meta, service_spec, typed_api, write_typed,
};
use crate::api::{Canary, Capabilities};

/// The HTTPProxy, watched for drift.
pub const KINDS: &[RoutingKind] = &[RoutingKind {
    group: "projectcontour.io",
    version: "v1",
    kind: "HTTPProxy",
    plural: "httpproxies",
    namespaced: true,
}];

/// The fields of `HTTPProxy.spec` flaggit writes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpProxySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    #[serde(default)]
    pub routes: Vec<ProxyRoute>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRoute {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<MatchCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_policy: Option<TimeoutPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    pub services: Vec<ProxyService>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MatchCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatchCondition>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HeaderMatchCondition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TimeoutPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyService {
    pub name: String,
    pub port: i32,
    /// Omitted at 0, as Contour's Go type does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_policy: Option<HeadersPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HeadersPolicy {
    #[serde(default)]
    pub set: Vec<HeaderValue>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

/// The Contour router.
pub struct ContourRouter {
    client: Client,
    /// `--ingress-class`.
    ingress_class: Option<String>,
}

impl ContourRouter {
    pub fn new(client: Client, ingress_class: Option<String>) -> Self {
        Self {
            client,
            ingress_class,
        }
    }
}

/// The HTTPProxy spec for `canary` at `routes` (see the module documentation).
pub fn http_proxy_spec(
    canary: &Canary,
    routes: Routes,
    ingress_class: Option<&str>,
) -> Result<HttpProxySpec, Error> {
    let svc = service_spec(canary)?;
    let names = ServiceNames::of(canary);
    let namespace = canary.namespace().unwrap_or_default();
    let prefix = svc
        .match_
        .as_ref()
        .and_then(|m| m.first())
        .and_then(|m| m.uri.as_ref())
        .and_then(|u| u.prefix.clone())
        .unwrap_or_else(|| "/".into());
    let timeout_policy = svc
        .timeout
        .as_ref()
        .filter(|t| !t.is_empty())
        .map(|t| TimeoutPolicy {
            response: Some(t.clone()),
            idle: Some("5m".into()),
        });
    let retry_policy = svc.retries.as_ref().map(|r| RetryPolicy {
        count: Some(i64::from(r.attempts.unwrap_or(0))),
        per_try_timeout: r.per_try_timeout.clone().filter(|t| !t.is_empty()),
        retry_on: r
            .retry_on
            .as_deref()
            .filter(|on| !on.is_empty())
            .map(|on| on.split(',').map(|s| s.trim().to_string()).collect()),
    });
    let service = |name: &str, weight: i32| ProxyService {
        name: name.to_string(),
        port: svc.port,
        weight: (weight > 0).then_some(i64::from(weight)),
        request_headers_policy: Some(HeadersPolicy {
            set: vec![HeaderValue {
                name: "l5d-dst-override".into(),
                value: format!("{name}.{namespace}.svc.cluster.local:{}", svc.port),
            }],
        }),
    };
    let route = |conditions: Vec<MatchCondition>, routes: Routes| ProxyRoute {
        conditions,
        timeout_policy: timeout_policy.clone(),
        retry_policy: retry_policy.clone(),
        services: vec![
            service(&names.primary, routes.primary),
            service(&names.canary, routes.canary),
        ],
    };
    let plain = vec![MatchCondition {
        prefix: Some(prefix.clone()),
        header: None,
    }];
    let ab = canary
        .spec
        .analysis()
        .and_then(|a| a.match_.as_ref())
        .filter(|m| !m.is_empty());
    let routes = match ab {
        None => vec![route(plain, routes)],
        Some(matches) => {
            let mut conditions = Vec::new();
            for (i, m) in matches.iter().enumerate() {
                for (name, value) in m.headers.iter().flatten() {
                    let header = match (&value.exact, &value.prefix, &value.suffix) {
                        (Some(exact), None, None) => HeaderMatchCondition {
                            name: name.clone(),
                            exact: Some(exact.clone()),
                            contains: None,
                        },
                        (None, Some(part), None) | (None, None, Some(part)) => HeaderMatchCondition {
                            name: name.clone(),
                            exact: None,
                            contains: Some(part.clone()),
                        },
                        _ => {
                            return Err(Error::Invalid(format!(
                                "spec.analysis.match[{i}].headers.{name}: the contour provider matches headers by exact, prefix or suffix (as contains), not regex"
                            )));
                        }
                    };
                    conditions.push(MatchCondition {
                        prefix: Some(prefix.clone()),
                        header: Some(header),
                    });
                }
            }
            vec![route(conditions, routes), route(plain, Routes::PRIMARY)]
        }
    };
    Ok(HttpProxySpec {
        ingress_class_name: ingress_class.map(str::to_string),
        routes,
    })
}

/// Primary's weight of the first route; the canary has the rest (Flagger's reading).
pub fn routes_of_http_proxy(canary: &Canary, spec: &HttpProxySpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let services = &spec.routes.first()?.services;
    let weight = |name: &str| {
        services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.weight.unwrap_or(0))
    };
    let (primary, canary_weight) = (weight(&names.primary)?, weight(&names.canary)?);
    (primary + canary_weight == 100).then(|| Routes::canary(i32::try_from(canary_weight).unwrap_or(0)))
}

#[async_trait]
impl Router for ContourRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED_AB
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let kind = &KINDS[0];
        let api = typed_api(&self.client, kind, &canary.namespace().unwrap_or_default());
        let name = ServiceNames::of(canary).apex;
        let live: Option<Typed<HttpProxySpec>> = get_typed(&api, kind, &name).await?;
        let routes = live
            .as_ref()
            .and_then(|l| routes_of_http_proxy(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let spec = http_proxy_spec(canary, routes, self.ingress_class.as_deref())?;
        let meta = routing_meta(canary, &name, live.as_ref().map(|l| &l.metadata));
        write_typed(&api, kind, live.as_ref(), meta, spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let kind = &KINDS[0];
        let api = typed_api(&self.client, kind, &canary.namespace().unwrap_or_default());
        let name = ServiceNames::of(canary).apex;
        let live: Typed<HttpProxySpec> = get_typed(&api, kind, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("HTTPProxy {name} does not exist yet")))?;
        let spec = http_proxy_spec(canary, request.routes, self.ingress_class.as_deref())?;
        write_typed(&api, kind, Some(&live), live.metadata.clone(), spec).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let kind = &KINDS[0];
        let api = typed_api(&self.client, kind, &canary.namespace().unwrap_or_default());
        let names = ServiceNames::of(canary);
        let live: Typed<HttpProxySpec> = get_typed(&api, kind, &names.apex)
            .await?
            .ok_or_else(|| Error::NotReady(format!("HTTPProxy {} does not exist yet", names.apex)))?;
        routes_of_http_proxy(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "HTTPProxy {} has no weights for {} and {} adding up to 100: reconcile rewrites it",
                names.apex, names.primary, names.canary
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // flaggit only ever creates the HTTPProxy; the garbage collector removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService, HttpMatchRequest, HttpRetry, StringMatch};

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

    #[test]
    fn weighted_route_with_linkerd_override_and_no_zero_weight() {
        let c = canary(svc(), CanaryAnalysis::default());
        let spec = http_proxy_spec(&c, Routes::canary(30), Some("contour")).expect("builds");
        assert_eq!(
            serde_json::to_value(&spec).expect("json"),
            serde_json::json!({
                "ingressClassName": "contour",
                "routes": [{
                    "conditions": [{ "prefix": "/" }],
                    "services": [
                        { "name": "podinfo-primary", "port": 9898, "weight": 70, "requestHeadersPolicy": { "set": [
                            { "name": "l5d-dst-override", "value": "podinfo-primary.test.svc.cluster.local:9898" }] } },
                        { "name": "podinfo-canary", "port": 9898, "weight": 30, "requestHeadersPolicy": { "set": [
                            { "name": "l5d-dst-override", "value": "podinfo-canary.test.svc.cluster.local:9898" }] } },
                    ],
                }],
            })
        );
        assert_eq!(routes_of_http_proxy(&c, &spec), Some(Routes::canary(30)));
        let primary = http_proxy_spec(&c, Routes::PRIMARY, None).expect("builds");
        let json = serde_json::to_value(&primary).expect("json");
        assert!(json["routes"][0]["services"][1].get("weight").is_none(), "{json}");
        assert_eq!(routes_of_http_proxy(&c, &primary), Some(Routes::PRIMARY));
    }

    #[test]
    fn retries_without_retry_on_write_no_empty_value() {
        let mut s = svc();
        s.timeout = Some("15s".into());
        s.retries = Some(Box::new(HttpRetry {
            attempts: Some(3),
            per_try_timeout: Some("5s".into()),
            ..Default::default()
        }));
        let spec = http_proxy_spec(
            &canary(s.clone(), CanaryAnalysis::default()),
            Routes::PRIMARY,
            None,
        )
        .expect("builds");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(
            json["routes"][0]["retryPolicy"],
            serde_json::json!({ "count": 3, "perTryTimeout": "5s" })
        );
        assert_eq!(
            json["routes"][0]["timeoutPolicy"],
            serde_json::json!({ "response": "15s", "idle": "5m" })
        );
        s.retries.as_mut().expect("retries").retry_on = Some("5xx,gateway-error".into());
        let spec =
            http_proxy_spec(&canary(s, CanaryAnalysis::default()), Routes::PRIMARY, None).expect("builds");
        assert_eq!(
            spec.routes[0]
                .retry_policy
                .as_ref()
                .and_then(|r| r.retry_on.clone()),
            Some(vec!["5xx".to_string(), "gateway-error".to_string()])
        );
    }

    #[test]
    fn ab_routes_match_headers_first_then_send_the_rest_to_the_primary() {
        let header = |m: StringMatch| HttpMatchRequest {
            headers: Some(BTreeMap::from([("x-canary".to_string(), m)])),
            ..Default::default()
        };
        let analysis = CanaryAnalysis {
            iterations: Some(5),
            match_: Some(vec![header(StringMatch {
                exact: Some("insider".into()),
                ..Default::default()
            })]),
            ..Default::default()
        };
        let c = canary(svc(), analysis.clone());
        let spec = http_proxy_spec(&c, Routes::canary(100), None).expect("builds");
        assert_eq!(spec.routes.len(), 2);
        assert_eq!(
            spec.routes[0].conditions[0].header,
            Some(HeaderMatchCondition {
                name: "x-canary".into(),
                exact: Some("insider".into()),
                contains: None,
            })
        );
        assert_eq!(spec.routes[1].services[0].weight, Some(100));
        assert_eq!(spec.routes[1].services[1].weight, None);
        assert_eq!(routes_of_http_proxy(&c, &spec), Some(Routes::canary(100)));
        let regex = CanaryAnalysis {
            match_: Some(vec![header(StringMatch {
                regex: Some(".*".into()),
                ..Default::default()
            })]),
            ..analysis
        };
        let err = http_proxy_spec(&canary(svc(), regex), Routes::PRIMARY, None).expect_err("regex");
        assert!(
            err.to_string()
                .contains("spec.analysis.match[0].headers.x-canary"),
            "{err}"
        );
    }
}
