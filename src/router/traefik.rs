//! The `traefik` provider: a TraefikService `<apex>` (`traefik.io/v1alpha1`) whose weighted
//! round robin splits between `<apex>-primary` and `<apex>-canary`, referenced from the
//! user's IngressRoute (`kind: TraefikService`) (Flagger's `traefik.go`). The canary is listed
//! only while it gets traffic, as under Flagger.
//!
//! Unlike Flagger: reconcile keeps the live weights (Flagger writes weight 100 for both
//! services when it updates a TraefikService mid-rollout: a 50/50 split until the next step).

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{
    AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, Typed, get_typed,
    routing_meta, service_spec, typed_api, write_typed,
};
use crate::api::{Canary, Capabilities};

const TRAEFIK_SERVICE: RoutingKind = RoutingKind {
    group: "traefik.io",
    version: "v1alpha1",
    kind: "TraefikService",
    plural: "traefikservices",
    namespaced: true,
};

/// The TraefikService, watched for drift.
pub const KINDS: &[RoutingKind] = &[TRAEFIK_SERVICE];

/// The fields of `TraefikService.spec` flaggit writes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TraefikServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted: Option<WeightedRoundRobin>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct WeightedRoundRobin {
    #[serde(default)]
    pub services: Vec<WeightedService>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct WeightedService {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// Omitted at 0, as Flagger's Go type does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// The TraefikService spec at `routes`: the primary always, the canary while it has weight.
pub fn traefik_service_spec(canary: &Canary, routes: Routes) -> Result<TraefikServiceSpec, Error> {
    let port = service_spec(canary)?.port;
    let names = ServiceNames::of(canary);
    let service = |name: &str, weight: i32| WeightedService {
        name: name.to_string(),
        namespace: canary.namespace(),
        port: Some(IntOrString::Int(port)),
        weight: u32::try_from(weight).ok().filter(|w| *w > 0),
    };
    let mut services = vec![service(&names.primary, routes.primary)];
    if routes.canary > 0 {
        services.push(service(&names.canary, routes.canary));
    }
    Ok(TraefikServiceSpec {
        weighted: Some(WeightedRoundRobin { services }),
    })
}

/// The split the TraefikService says: the primary's and canary's weights (a missing service
/// has none), when they add up to 100.
pub fn routes_of_traefik_service(canary: &Canary, spec: &TraefikServiceSpec) -> Option<Routes> {
    let names = ServiceNames::of(canary);
    let services = &spec.weighted.as_ref()?.services;
    let weight = |name: &str| {
        services
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| i64::from(s.weight.unwrap_or(0)))
    };
    let (primary, canary_weight) = (weight(&names.primary), weight(&names.canary));
    (primary + canary_weight == 100).then(|| Routes::canary(i32::try_from(canary_weight).unwrap_or(0)))
}

/// The Traefik router.
pub struct TraefikRouter {
    client: Client,
}

impl TraefikRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, canary: &Canary) -> kube::Api<Typed<TraefikServiceSpec>> {
        typed_api(
            &self.client,
            &TRAEFIK_SERVICE,
            &canary.namespace().unwrap_or_default(),
        )
    }

    async fn live(&self, canary: &Canary) -> Result<Typed<TraefikServiceSpec>, Error> {
        let name = ServiceNames::of(canary).apex;
        get_typed(&self.api(canary), &TRAEFIK_SERVICE, &name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("TraefikService {name} does not exist yet")))
    }
}

#[async_trait]
impl Router for TraefikRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let api = self.api(canary);
        let name = ServiceNames::of(canary).apex;
        let live = get_typed(&api, &TRAEFIK_SERVICE, &name).await?;
        let routes = live
            .as_ref()
            .and_then(|l| routes_of_traefik_service(canary, &l.spec))
            .unwrap_or(Routes::PRIMARY);
        let spec = traefik_service_spec(canary, routes)?;
        let meta = routing_meta(canary, &name, live.as_ref().map(|l| &l.metadata));
        write_typed(&api, &TRAEFIK_SERVICE, live.as_ref(), meta, spec).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let live = self.live(canary).await?;
        let spec = traefik_service_spec(canary, request.routes)?;
        write_typed(
            &self.api(canary),
            &TRAEFIK_SERVICE,
            Some(&live),
            live.metadata.clone(),
            spec,
        )
        .await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.live(canary).await?;
        routes_of_traefik_service(canary, &live.spec).ok_or_else(|| {
            Error::NotReady(format!(
                "TraefikService {} has no primary and canary weights adding up to 100: reconcile rewrites it",
                live.name_any()
            ))
        })
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // flaggit only ever creates the TraefikService; the garbage collector removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanaryService};

    fn canary() -> Canary {
        let mut c = crate::testing::podinfo(
            Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            Some(CanaryAnalysis::default()),
        );
        c.metadata.namespace = Some("test".into());
        c
    }

    #[test]
    fn the_canary_is_listed_only_while_it_has_weight() {
        let c = canary();
        let created = traefik_service_spec(&c, Routes::PRIMARY).expect("builds");
        assert_eq!(
            serde_json::to_value(&created).expect("json"),
            serde_json::json!({ "weighted": { "services": [
                { "name": "podinfo-primary", "namespace": "test", "port": 9898, "weight": 100 },
            ]}})
        );
        assert_eq!(routes_of_traefik_service(&c, &created), Some(Routes::PRIMARY));
        let step = traefik_service_spec(&c, Routes::canary(40)).expect("builds");
        assert_eq!(
            serde_json::to_value(&step).expect("json"),
            serde_json::json!({ "weighted": { "services": [
                { "name": "podinfo-primary", "namespace": "test", "port": 9898, "weight": 60 },
                { "name": "podinfo-canary", "namespace": "test", "port": 9898, "weight": 40 },
            ]}})
        );
        assert_eq!(routes_of_traefik_service(&c, &step), Some(Routes::canary(40)));
        // Blue/Green: the primary stays listed without weight.
        let all = traefik_service_spec(&c, Routes::canary(100)).expect("builds");
        assert_eq!(all.weighted.as_ref().expect("weighted").services[0].weight, None);
        assert_eq!(routes_of_traefik_service(&c, &all), Some(Routes::canary(100)));
    }

    #[test]
    fn flaggers_fifty_fifty_is_not_a_valid_reading() {
        // What Flagger's reconcile writes mid-rollout: both at 100. flaggit neither writes it
        // nor reads it as a split; reconcile would rewrite it.
        let c = canary();
        let mut spec = traefik_service_spec(&c, Routes::canary(20)).expect("builds");
        for s in &mut spec.weighted.as_mut().expect("weighted").services {
            s.weight = Some(100);
        }
        assert_eq!(routes_of_traefik_service(&c, &spec), None);
    }
}
