//! The `skipper` provider: an Ingress `<ingressRef>-canary` (`networking.k8s.io/v1`), a copy
//! of the `spec.ingressRef` Ingress in which every path to `<apex>` goes to `<apex>-primary`
//! and a copy of it to `<apex>-canary`, split by the `zalando.org/backend-weights` annotation
//! (Flagger's `skipper.go`). `zalando.org/skipper-predicate` starts with `Weight(100)` so the
//! copy wins over the original, or `False()` (the copy is off) once the canary's weight is
//! back to 0. The original Ingress is never changed.
//!
//! Unlike Flagger: reconcile keeps the live weights (Flagger writes 100/0 when it updates the
//! copy's spec), the copy gets the GitOps hands-off annotations from the start (Flagger adds
//! them only on update) and no kubectl last-applied annotation.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::DeleteParams;
use kube::{Api, Client, ResourceExt};

use super::{AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, post_params};
use crate::api::{Canary, Capabilities};
use crate::objects::{GITOPS_HANDS_OFF, owner_ref};

/// The copy Ingress, watched for drift (the same kind as the nginx provider's).
pub const KINDS: &[RoutingKind] = &[RoutingKind {
    group: "networking.k8s.io",
    version: "v1",
    kind: "Ingress",
    plural: "ingresses",
    namespaced: true,
}];

pub const BACKEND_WEIGHTS: &str = "zalando.org/backend-weights";
pub const PREDICATE: &str = "zalando.org/skipper-predicate";
const ROUTE_WEIGHT: &str = "Weight(100)";
const ROUTE_DISABLED: &str = "False()";
const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn ingress_ref(canary: &Canary) -> Result<&str, Error> {
    canary
        .spec
        .ingress_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::Invalid(
                "spec.ingressRef is required by the skipper provider: name the Ingress that routes to the apex Service"
                    .into(),
            )
        })
}

/// `<ingressRef>-canary`.
pub fn canary_ingress_name(canary: &Canary) -> Result<String, Error> {
    Ok(format!("{}-canary", ingress_ref(canary)?))
}

/// The copy's spec: every path to the apex goes to the primary, and a copy of it to the
/// canary is appended to the same rule.
pub fn canary_ingress_spec(canary: &Canary, original: &Ingress) -> Result<Ingress, Error> {
    let names = ServiceNames::of(canary);
    let mut copy = original.clone();
    let mut found = false;
    for rule in copy.spec.iter_mut().flat_map(|s| s.rules.iter_mut().flatten()) {
        let Some(http) = rule.http.as_mut() else {
            continue;
        };
        let mut canary_paths = Vec::new();
        for path in &mut http.paths {
            if let Some(service) = path.backend.service.as_mut()
                && service.name == names.apex
            {
                service.name = names.primary.clone();
                let mut to_canary = path.clone();
                if let Some(service) = to_canary.backend.service.as_mut() {
                    service.name = names.canary.clone();
                }
                canary_paths.push(to_canary);
                found = true;
            }
        }
        http.paths.extend(canary_paths);
    }
    if !found {
        return Err(Error::Invalid(format!(
            "spec.ingressRef: Ingress {} has no path to the Service {}: point a path at it",
            original.name_any(),
            names.apex
        )));
    }
    Ok(copy)
}

/// Puts `first` at the front of a `&&`-joined predicate, dropping our own predicates.
pub fn insert_predicate(raw: &str, first: &str) -> String {
    let mut predicates = vec![first];
    predicates.extend(
        raw.split("&&")
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != ROUTE_WEIGHT && *p != ROUTE_DISABLED),
    );
    predicates.join(" && ")
}

/// The copy's annotations: the original's (without kubectl's last-applied copy), the GitOps
/// hands-off annotations, the weights, and the predicate (`False()` when `disabled`).
pub fn canary_annotations(
    canary: &Canary,
    original: &BTreeMap<String, String>,
    routes: Routes,
    disabled: bool,
) -> BTreeMap<String, String> {
    let names = ServiceNames::of(canary);
    let mut out: BTreeMap<String, String> = original
        .iter()
        .filter(|(k, _)| k.as_str() != KUBECTL_LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in GITOPS_HANDS_OFF {
        out.insert(k.to_string(), v.to_string());
    }
    let weights = BTreeMap::from([(names.primary, routes.primary), (names.canary, routes.canary)]);
    out.insert(
        BACKEND_WEIGHTS.into(),
        serde_json::to_string(&weights).expect("a map of strings to numbers serializes"),
    );
    let first = if disabled { ROUTE_DISABLED } else { ROUTE_WEIGHT };
    let predicate = insert_predicate(original.get(PREDICATE).map_or("", String::as_str), first);
    out.insert(PREDICATE.into(), predicate);
    out
}

/// The split the copy's annotations say, and whether the copy is switched off.
pub fn routes_of_annotations(
    canary: &Canary,
    annotations: &BTreeMap<String, String>,
) -> Result<(Routes, bool), Error> {
    let names = ServiceNames::of(canary);
    let unreadable = |why: &str| {
        Error::NotReady(format!(
            "annotation {BACKEND_WEIGHTS} {why}: reconcile rewrites it"
        ))
    };
    let raw = annotations
        .get(BACKEND_WEIGHTS)
        .ok_or_else(|| unreadable("is missing"))?;
    let weights: BTreeMap<String, i64> =
        serde_json::from_str(raw).map_err(|_| unreadable("is not a JSON map of weights"))?;
    let (Some(primary), Some(canary_weight)) = (weights.get(&names.primary), weights.get(&names.canary))
    else {
        return Err(unreadable("has no weights for the primary and the canary"));
    };
    if primary + canary_weight != 100 {
        return Err(unreadable("does not add up to 100"));
    }
    let disabled = annotations
        .get(PREDICATE)
        .is_some_and(|p| p.split("&&").next().map(str::trim) == Some(ROUTE_DISABLED));
    Ok((
        Routes::canary(i32::try_from(*canary_weight).unwrap_or(0)),
        disabled,
    ))
}

/// The Skipper router.
pub struct SkipperRouter {
    client: Client,
}

impl SkipperRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, canary: &Canary) -> Api<Ingress> {
        Api::namespaced(self.client.clone(), &canary.namespace().unwrap_or_default())
    }

    async fn get(&self, canary: &Canary, name: &str) -> Result<Option<Ingress>, Error> {
        self.api(canary).get_opt(name).await.map_err(|source| Error::Get {
            kind: "Ingress",
            name: name.to_string(),
            source,
        })
    }

    async fn original(&self, canary: &Canary) -> Result<Ingress, Error> {
        let name = ingress_ref(canary)?;
        self.get(canary, name).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "spec.ingressRef: Ingress {name} does not exist: create it or fix the name"
            ))
        })
    }

    async fn live(&self, canary: &Canary) -> Result<Ingress, Error> {
        let name = canary_ingress_name(canary)?;
        self.get(canary, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("Ingress {name} does not exist yet")))
    }

    /// Writes `desired` over `live` (a replace with its resourceVersion) or creates it;
    /// nothing when nothing changed.
    async fn write(&self, canary: &Canary, live: Option<&Ingress>, desired: Ingress) -> Result<(), Error> {
        let name = desired.name_any();
        let apply_err = |source| Error::Apply {
            kind: "Ingress",
            name: name.clone(),
            source,
        };
        match live {
            Some(live) => {
                if live.spec == desired.spec
                    && live.metadata.annotations == desired.metadata.annotations
                    && live.metadata.labels == desired.metadata.labels
                {
                    return Ok(());
                }
                self.api(canary)
                    .replace(&name, &post_params(), &desired)
                    .await
                    .map_err(apply_err)?;
            }
            None => {
                self.api(canary)
                    .create(&post_params(), &desired)
                    .await
                    .map_err(apply_err)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Router for SkipperRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let original = self.original(canary).await?;
        let copy = canary_ingress_spec(canary, &original)?;
        let name = canary_ingress_name(canary)?;
        let live = self.get(canary, &name).await?;
        let empty = BTreeMap::new();
        let original_annotations = original.metadata.annotations.as_ref().unwrap_or(&empty);
        let (routes, disabled) = live
            .as_ref()
            .and_then(|l| {
                routes_of_annotations(canary, l.metadata.annotations.as_ref().unwrap_or(&empty)).ok()
            })
            .unwrap_or((Routes::PRIMARY, false));
        let mut desired = live.clone().unwrap_or_else(|| Ingress {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: canary.namespace(),
                owner_references: Some(vec![owner_ref(canary)]),
                ..Default::default()
            },
            ..Default::default()
        });
        desired.spec = copy.spec;
        desired.metadata.labels = original.metadata.labels.clone();
        desired.metadata.annotations =
            Some(canary_annotations(canary, original_annotations, routes, disabled));
        self.write(canary, live.as_ref(), desired).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let original = self.original(canary).await?;
        let live = self.live(canary).await?;
        let mut desired = live.clone();
        desired.metadata.annotations = Some(canary_annotations(
            canary,
            original.metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()),
            request.routes,
            request.routes.canary == 0,
        ));
        self.write(canary, Some(&live), desired).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.live(canary).await?;
        routes_of_annotations(
            canary,
            live.metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()),
        )
        .map(|(routes, _)| routes)
    }

    async fn finalize(&self, canary: &Canary) -> Result<(), Error> {
        // As Flagger: the copy goes at once, so the original Ingress serves alone again.
        let name = canary_ingress_name(canary)?;
        let params = DeleteParams {
            grace_period_seconds: Some(2),
            ..Default::default()
        };
        match self.api(canary).delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
            Err(source) => Err(Error::Apply {
                kind: "Ingress",
                name,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService, IngressRef};
    use k8s_openapi::api::networking::v1::{
        HTTPIngressPath, HTTPIngressRuleValue, IngressBackend, IngressRule, IngressServiceBackend,
        IngressSpec, ServiceBackendPort,
    };

    fn canary() -> Canary {
        let mut c = crate::testing::podinfo(
            Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            Some(CanaryAnalysis::default()),
        );
        c.metadata.namespace = Some("test".into());
        c.spec.ingress_ref = Some(IngressRef {
            api_version: "networking.k8s.io/v1".into(),
            name: "podinfo".into(),
            ..Default::default()
        });
        c
    }

    fn path(service: &str, at: &str) -> HTTPIngressPath {
        HTTPIngressPath {
            path: Some(at.into()),
            path_type: "Prefix".into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: service.into(),
                    port: Some(ServiceBackendPort {
                        number: Some(9898),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            },
        }
    }

    fn original() -> Ingress {
        Ingress {
            metadata: kube::api::ObjectMeta {
                name: Some("podinfo".into()),
                ..Default::default()
            },
            spec: Some(IngressSpec {
                rules: Some(vec![IngressRule {
                    host: Some("app.example.com".into()),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![path("podinfo", "/"), path("other", "/other")],
                    }),
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn paths_to_the_apex_go_to_the_primary_plus_a_canary_copy() {
        let copy = canary_ingress_spec(&canary(), &original()).expect("builds");
        let paths: Vec<(String, String)> = copy.spec.expect("spec").rules.expect("rules")[0]
            .http
            .clone()
            .expect("http")
            .paths
            .into_iter()
            .map(|p| {
                (
                    p.path.unwrap_or_default(),
                    p.backend.service.expect("service").name,
                )
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("/".to_string(), "podinfo-primary".to_string()),
                ("/other".to_string(), "other".to_string()),
                ("/".to_string(), "podinfo-canary".to_string()),
            ]
        );
        let mut elsewhere = original();
        elsewhere
            .spec
            .as_mut()
            .expect("spec")
            .rules
            .as_mut()
            .expect("rules")[0]
            .http
            .as_mut()
            .expect("http")
            .paths
            .remove(0);
        let err = canary_ingress_spec(&canary(), &elsewhere).expect_err("no apex path");
        assert!(err.to_string().starts_with("spec.ingressRef"), "{err}");
    }

    #[test]
    fn weights_and_predicate_live_in_annotations() {
        let c = canary();
        let original = BTreeMap::from([
            (
                PREDICATE.to_string(),
                "Header(\"X\", \"y\") && False()".to_string(),
            ),
            (KUBECTL_LAST_APPLIED.to_string(), "{}".to_string()),
        ]);
        let step = canary_annotations(&c, &original, Routes::canary(20), false);
        assert_eq!(
            step[BACKEND_WEIGHTS],
            r#"{"podinfo-canary":20,"podinfo-primary":80}"#
        );
        assert_eq!(step[PREDICATE], "Weight(100) && Header(\"X\", \"y\")");
        assert!(!step.contains_key(KUBECTL_LAST_APPLIED));
        assert_eq!(step["helm.toolkit.fluxcd.io/driftDetection"], "disabled");
        assert_eq!(
            routes_of_annotations(&c, &step).expect("reads"),
            (Routes::canary(20), false)
        );
        let off = canary_annotations(&c, &original, Routes::PRIMARY, true);
        assert_eq!(off[PREDICATE], "False() && Header(\"X\", \"y\")");
        assert_eq!(
            routes_of_annotations(&c, &off).expect("reads"),
            (Routes::PRIMARY, true)
        );
        let mut bad = off.clone();
        bad.insert(BACKEND_WEIGHTS.into(), r#"{"podinfo-primary":50}"#.into());
        assert!(routes_of_annotations(&c, &bad).is_err());
        assert_eq!(insert_predicate("", ROUTE_WEIGHT), "Weight(100)");
    }
}
