//! Service targets (`targetRef.kind: Service`, Flagger's `service_controller.go`): the target
//! is a Kubernetes Service whose spec is the version being released. flaggit keeps
//! `<target>-canary`, a copy of the target Service brought up to date at every reconcile, and
//! `<target>-primary`, a copy made once and brought up to date at promotion. A mesh or ingress
//! router then splits the traffic of the target Service (the apex) between the two. There are
//! no pods of flaggit's to scale or wait for: readiness is always ready, scaling does nothing.
//!
//! Unlike Flagger, the copies never take the target's cluster IP or node ports (Flagger's
//! copies of a NodePort or LoadBalancer Service are refused for the allocated node ports),
//! a headless target stays headless in its copies, and the GitOps tool's labels are never
//! copied.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::api::ObjectMeta;
use kube::{Api, Client, ResourceExt};

use super::template::{filter_metadata, primary_name, service_revision};
use super::{Error, Readiness, Settings, Target, get_opt, get_target, namespace_of};
use crate::api::Canary;
use crate::objects;

const KIND: &str = "Service";

/// A Service target and its `-primary` and `-canary` copies.
pub struct ServiceWorkload {
    client: Client,
    settings: Settings,
}

impl ServiceWorkload {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self { client, settings }
    }

    fn api(&self, canary: &Canary) -> Api<Service> {
        Api::namespaced(self.client.clone(), &namespace_of(canary))
    }

    async fn target(&self, canary: &Canary) -> Result<Service, Error> {
        get_target(&self.api(canary), KIND, canary).await
    }

    async fn write(&self, canary: &Canary, service: &Service) -> Result<(), Error> {
        let name = service.name_any();
        objects::apply(&self.api(canary), &name, service)
            .await
            .map_err(|source| Error::Write {
                kind: KIND,
                name,
                source,
            })?;
        Ok(())
    }

    /// A core `v1` Service, and the apex the routers use (`spec.service.name` or the
    /// target's name) is the target: the copies are named after the target.
    fn check_apex(canary: &Canary) -> Result<(), Error> {
        let api_version = &canary.spec.target_ref.api_version;
        if !api_version.is_empty() && api_version != "v1" {
            return Err(Error::Invalid(format!(
                "spec.targetRef.apiVersion {api_version:?} with kind Service is not a Kubernetes Service \
                 (apiVersion v1): Knative Services are released with provider knative"
            )));
        }
        let target = &canary.spec.target_ref.name;
        match canary.spec.service.as_ref().and_then(|s| s.name.as_deref()) {
            Some(apex) if apex != target => Err(Error::Invalid(format!(
                "spec.service.name {apex:?} differs from spec.targetRef.name {target:?}: with a Service target \
                 the target Service is the apex, and the routes go to {target}-primary and {target}-canary; \
                 remove spec.service.name or set it to {target:?}"
            ))),
            _ => Ok(()),
        }
    }
}

/// The copy `name` of the target Service: its spec without what the API server assigns to
/// one Service only (cluster IPs, node ports), `spec.service.trafficDistribution` when set,
/// the target's labels and annotations under `include_prefixes`, owned by the Canary.
pub fn service_copy(canary: &Canary, target: &Service, name: &str, include_prefixes: &[String]) -> Service {
    let mut spec = portable_spec(target.spec.as_ref());
    if let Some(distribution) = canary.spec.service.as_ref().and_then(|s| s.traffic_distribution) {
        spec.traffic_distribution = Some(distribution.as_str().to_string());
    }
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: canary.namespace(),
            labels: Some(filter_metadata(target.metadata.labels.as_ref(), include_prefixes)),
            annotations: Some(filter_metadata(
                target.metadata.annotations.as_ref(),
                include_prefixes,
            )),
            owner_references: Some(vec![objects::owner_ref(canary)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// `spec` without the fields the API server allocates to one Service: its cluster IPs
/// (`None`, headless, is kept), node ports and health check node port.
pub fn portable_spec(spec: Option<&ServiceSpec>) -> ServiceSpec {
    let mut spec = spec.cloned().unwrap_or_default();
    if spec.cluster_ip.as_deref() != Some("None") {
        spec.cluster_ip = None;
    }
    spec.cluster_ips = None;
    spec.health_check_node_port = None;
    for port in spec.ports.iter_mut().flatten() {
        port.node_port = None;
    }
    spec
}

#[async_trait]
impl super::Workload for ServiceWorkload {
    async fn observe(&self, canary: &Canary) -> Result<Target, Error> {
        Self::check_apex(canary)?;
        let target = self.target(canary).await?;
        Ok(Target {
            revision: service_revision(&portable_spec(target.spec.as_ref())),
            selector_label: String::new(),
            selector_value: String::new(),
            discovered_ports: Vec::new(),
            labels: target.labels().clone(),
            annotations: target.annotations().clone(),
            template: Default::default(),
            pinned_images: None,
            replicas: None,
        })
    }

    async fn initialize(&self, canary: &Canary, _observed: &Target) -> Result<(), Error> {
        Self::check_apex(canary)?;
        let target = self.target(canary).await?;
        let name = &canary.spec.target_ref.name;
        let include = &self.settings.include_label_prefixes;
        self.write(
            canary,
            &service_copy(canary, &target, &format!("{name}-canary"), include),
        )
        .await?;
        let primary = primary_name(name);
        if get_opt(&self.api(canary), KIND, &primary).await?.is_none() {
            self.write(canary, &service_copy(canary, &target, &primary, include))
                .await?;
        }
        Ok(())
    }

    async fn promote(&self, canary: &Canary, _observed: &Target) -> Result<(), Error> {
        let target = self.target(canary).await?;
        let primary = primary_name(&canary.spec.target_ref.name);
        self.write(
            canary,
            &service_copy(canary, &target, &primary, &self.settings.include_label_prefixes),
        )
        .await
    }

    async fn primary_ready(&self, _canary: &Canary, _now: jiff::Timestamp) -> Result<Readiness, Error> {
        Ok(Readiness::Ready)
    }

    async fn canary_ready(&self, _canary: &Canary, _now: jiff::Timestamp) -> Result<Readiness, Error> {
        Ok(Readiness::Ready)
    }

    async fn scale_to_zero(&self, _canary: &Canary) -> Result<(), Error> {
        Ok(())
    }

    async fn scale_from_zero(&self, _canary: &Canary, _target: &Target) -> Result<(), Error> {
        Ok(())
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // The target Service was never changed: nothing to give back.
        Ok(())
    }

    async fn target_matches_primary(&self, canary: &Canary, _target: &Target) -> Result<bool, Error> {
        let target = self.target(canary).await?;
        let primary = primary_name(&canary.spec.target_ref.name);
        let Some(live) = get_opt(&self.api(canary), KIND, &primary).await? else {
            return Ok(false);
        };
        let expected = service_copy(canary, &target, &primary, &[]);
        let mut live = portable_spec(live.spec.as_ref());
        let mut expected = expected.spec.unwrap_or_default();
        // Defaulted by the API server on the copy, perhaps not on the target as read.
        for spec in [&mut live, &mut expected] {
            spec.ip_families = None;
            spec.ip_family_policy = None;
            spec.internal_traffic_policy = None;
            spec.session_affinity = spec.session_affinity.take().filter(|a| a != "None");
        }
        Ok(live == expected)
    }

    async fn primary_images(&self, _canary: &Canary) -> Result<BTreeMap<String, String>, Error> {
        Ok(BTreeMap::new())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::api::{CanaryService, CanarySpec, TargetKind, TargetRef, TrafficDistribution};
    use k8s_openapi::api::core::v1::ServicePort;

    fn canary(service_name: Option<&str>) -> Canary {
        let mut canary = Canary::new(
            "podinfo",
            CanarySpec {
                target_ref: TargetRef {
                    api_version: "v1".into(),
                    kind: TargetKind::Service,
                    name: "podinfo".into(),
                },
                service: Some(CanaryService {
                    port: 9898,
                    name: service_name.map(String::from),
                    traffic_distribution: Some(TrafficDistribution::PreferClose),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        canary.metadata.namespace = Some("test".into());
        canary.metadata.uid = Some("uid-1".into());
        canary
    }

    fn target(cluster_ip: &str, kind: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("podinfo".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "podinfo".to_string()),
                    ("kustomize.toolkit.fluxcd.io/name".to_string(), "apps".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(kind.into()),
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                health_check_node_port: Some(31000),
                selector: Some(BTreeMap::from([("app".to_string(), "podinfo-v2".to_string())])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 9898,
                    node_port: Some(30080),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn copies_take_the_spec_without_allocated_fields() {
        let copy = service_copy(
            &canary(None),
            &target("10.0.0.7", "NodePort"),
            "podinfo-canary",
            &["*".into()],
        );
        assert_eq!(copy.metadata.name.as_deref(), Some("podinfo-canary"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("test"));
        assert_eq!(copy.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        let labels = copy.metadata.labels.unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("podinfo"));
        assert!(!labels.keys().any(|k| k.contains("fluxcd")), "{labels:?}");
        let spec = copy.spec.unwrap();
        assert_eq!((spec.cluster_ip, spec.cluster_ips), (None, None));
        assert_eq!(spec.health_check_node_port, None);
        assert_eq!(spec.ports.unwrap()[0].node_port, None);
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.selector.unwrap()["app"], "podinfo-v2");
        assert_eq!(spec.traffic_distribution.as_deref(), Some("PreferClose"));
    }

    #[test]
    fn headless_targets_stay_headless() {
        let spec = portable_spec(target("None", "ClusterIP").spec.as_ref());
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    }

    #[test]
    fn revision_follows_the_spec_not_the_allocated_ip() {
        let a = service_revision(&portable_spec(target("10.0.0.7", "ClusterIP").spec.as_ref()));
        let b = service_revision(&portable_spec(target("10.0.0.8", "ClusterIP").spec.as_ref()));
        assert_eq!(a, b);
        let mut changed = target("10.0.0.7", "ClusterIP");
        changed.spec.as_mut().unwrap().selector =
            Some(BTreeMap::from([("app".to_string(), "podinfo-v3".to_string())]));
        assert_ne!(a, service_revision(&portable_spec(changed.spec.as_ref())));
        assert!(a.hash.starts_with(crate::rollout::REVISION_PREFIX));
    }

    #[test]
    fn a_different_apex_name_is_refused_naming_both_fields() {
        assert!(ServiceWorkload::check_apex(&canary(None)).is_ok());
        assert!(ServiceWorkload::check_apex(&canary(Some("podinfo"))).is_ok());
        let error = ServiceWorkload::check_apex(&canary(Some("frontend"))).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("spec.service.name"), "{text}");
        assert!(text.contains("spec.targetRef.name"), "{text}");
        assert_eq!(error.category(), "InvalidTarget");
        let mut knative = canary(None);
        knative.spec.target_ref.api_version = "serving.knative.dev/v1".into();
        let text = ServiceWorkload::check_apex(&knative).unwrap_err().to_string();
        assert!(text.contains("spec.targetRef.apiVersion"), "{text}");
    }
}
