//! The Services every provider needs (Flagger's KubernetesDefaultRouter): `<apex>-primary`
//! and `<apex>-canary` selecting the primary and canary pods, and the apex `<apex>` that
//! clients call, which selects the primary pods. Objects are built by pure functions; the
//! [`ServiceRouter`] only reads and writes them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

use super::{Error, ServiceNames, owned_by, post_params, service_spec};
use crate::api::{Canary, CustomMetadata, TrafficDistribution};
use crate::objects::{GITOPS_HANDS_OFF, owner_ref};

/// The annotation kubectl keeps the last applied manifest in.
const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which of the three generated Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceRole {
    /// `<apex>`: what clients call; selects the primary pods.
    Apex,
    /// `<apex>-primary`: selects the primary pods.
    Primary,
    /// `<apex>-canary`: selects the target's (canary) pods.
    Canary,
}

/// Reads and writes the generated Services of a Canary.
pub struct ServiceRouter {
    client: Client,
}

impl ServiceRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates or updates `<apex>-primary` (selecting `selector_label: <selector_value>-primary`)
    /// and `<apex>-canary` (selecting `selector_label: <selector_value>`). `discovered_ports`
    /// (name -> port) are the target's other container ports, exposed when
    /// `spec.service.portDiscovery` is on.
    pub async fn initialize(
        &self,
        canary: &Canary,
        selector_label: &str,
        selector_value: &str,
        discovered_ports: &BTreeMap<String, i32>,
    ) -> Result<(), Error> {
        for role in [ServiceRole::Primary, ServiceRole::Canary] {
            let desired = build_service(canary, role, selector_label, selector_value, discovered_ports)?;
            self.write(canary, desired).await?;
        }
        Ok(())
    }

    /// Creates or updates the apex Service `<apex>`, selecting the primary pods.
    pub async fn reconcile(
        &self,
        canary: &Canary,
        selector_label: &str,
        selector_value: &str,
        discovered_ports: &BTreeMap<String, i32>,
    ) -> Result<(), Error> {
        let desired = build_service(
            canary,
            ServiceRole::Apex,
            selector_label,
            selector_value,
            discovered_ports,
        )?;
        self.write(canary, desired).await
    }

    /// Gives the apex Service back when the Canary is deleted: its selector is restored from
    /// kubectl's last-applied configuration, else pointed at the target's pods
    /// (`selector_label: selector_value`). An apex Service flaggit created is kept, without
    /// its owner reference, so the garbage collector does not remove what clients call.
    pub async fn finalize(
        &self,
        canary: &Canary,
        selector_label: &str,
        selector_value: &str,
    ) -> Result<(), Error> {
        let name = ServiceNames::of(canary).apex;
        let api = self.api(canary);
        let Some(live) = api.get_opt(&name).await.map_err(|source| Error::Get {
            kind: "Service",
            name: name.clone(),
            source,
        })?
        else {
            return Ok(());
        };
        let owned = owned_by(&live.metadata, canary);
        let selector = restored_selector(&live, selector_label, selector_value);
        if !owned && live.spec.as_ref().and_then(|s| s.selector.as_ref()) == Some(&selector) {
            return Ok(());
        }
        let mut restored = live.clone();
        restored.spec.get_or_insert_with(Default::default).selector = Some(selector);
        if owned {
            // An apex flaggit created outlives the Canary: clients keep calling it, so it is
            // disowned (the garbage collector would delete it) and serves the target.
            let uid = canary.uid();
            if let Some(owners) = restored.metadata.owner_references.as_mut() {
                owners.retain(|o| Some(&o.uid) != uid.as_ref());
            }
        }
        api.replace(&name, &post_params(), &restored)
            .await
            .map_err(|source| Error::Apply {
                kind: "Service",
                name,
                source,
            })?;
        Ok(())
    }

    fn api(&self, canary: &Canary) -> Api<Service> {
        Api::namespaced(self.client.clone(), &canary.namespace().unwrap_or_default())
    }

    async fn write(&self, canary: &Canary, desired: Service) -> Result<(), Error> {
        let api = self.api(canary);
        let name = desired.name_any();
        let live = api.get_opt(&name).await.map_err(|source| Error::Get {
            kind: "Service",
            name: name.clone(),
            source,
        })?;
        let apply_err = |source| Error::Apply {
            kind: "Service",
            name: name.clone(),
            source,
        };
        match live {
            None => {
                api.create(&post_params(), &desired).await.map_err(apply_err)?;
            }
            Some(live) => {
                if let Some(updated) = update_service(canary, &live, &desired) {
                    api.replace(&name, &post_params(), &updated)
                        .await
                        .map_err(apply_err)?;
                }
            }
        }
        Ok(())
    }
}

/// The Service `role` of `canary` as flaggit creates it: ClusterIP (or headless), the main
/// port from `spec.service` plus `discovered_ports`, the selector of the role, the role's
/// custom metadata, GitOps hands-off annotations and an owner reference to the Canary.
pub fn build_service(
    canary: &Canary,
    role: ServiceRole,
    selector_label: &str,
    selector_value: &str,
    discovered_ports: &BTreeMap<String, i32>,
) -> Result<Service, Error> {
    let svc = service_spec(canary)?;
    let names = ServiceNames::of(canary);
    let (name, pods, custom) = match role {
        ServiceRole::Apex => (names.apex, format!("{selector_value}-primary"), &svc.apex),
        ServiceRole::Primary => (names.primary, format!("{selector_value}-primary"), &svc.primary),
        ServiceRole::Canary => (names.canary, selector_value.to_string(), &svc.canary),
    };
    let port_name = svc
        .port_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "http".into());
    let target_port = svc
        .target_port
        .clone()
        .filter(|p| !matches!(p, IntOrString::Int(0)) && !matches!(p, IntOrString::String(s) if s.is_empty()))
        .unwrap_or(IntOrString::Int(svc.port));
    let mut ports = vec![ServicePort {
        name: Some(port_name.clone()),
        protocol: Some("TCP".into()),
        port: svc.port,
        target_port: Some(target_port),
        app_protocol: svc.app_protocol.clone().filter(|p| !p.is_empty()),
        ..Default::default()
    }];
    if svc.port_discovery == Some(true) {
        for (port_name_extra, &port) in discovered_ports {
            if port == svc.port || *port_name_extra == port_name {
                continue;
            }
            ports.push(ServicePort {
                name: Some(port_name_extra.clone()),
                protocol: Some("TCP".into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                ..Default::default()
            });
        }
    }
    let (labels, annotations) = custom_metadata(custom.as_deref());
    let mut labels = labels;
    labels.insert(selector_label.to_string(), name.clone());
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: canary.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref(canary)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: (svc.headless == Some(true)).then(|| "None".to_string()),
            selector: Some(BTreeMap::from([(selector_label.to_string(), pods)])),
            ports: Some(ports),
            traffic_distribution: svc.traffic_distribution.map(traffic_distribution),
            ..Default::default()
        }),
        status: None,
    })
}

fn traffic_distribution(value: TrafficDistribution) -> String {
    value.as_str().to_string()
}

/// The labels and annotations of `custom`, with the GitOps hands-off annotations.
fn custom_metadata(custom: Option<&CustomMetadata>) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let labels = custom.and_then(|m| m.labels.clone()).unwrap_or_default();
    let mut annotations = custom.and_then(|m| m.annotations.clone()).unwrap_or_default();
    for (k, v) in GITOPS_HANDS_OFF {
        annotations.insert(k.to_string(), v.to_string());
    }
    (labels, annotations)
}

/// The live Service `live` brought in line with `desired`, or None when nothing changes.
/// Ports and selector are always flaggit's (node ports the cluster assigned are kept); labels
/// and annotations only when the Canary owns the Service, and then the keys listed in
/// `spec.service.unmanagedMetadata` keep their live values.
pub fn update_service(canary: &Canary, live: &Service, desired: &Service) -> Option<Service> {
    let mut updated = live.clone();
    let spec = updated.spec.get_or_insert_with(Default::default);
    let desired_spec = desired.spec.clone().unwrap_or_default();
    let live_ports = live
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut ports = desired_spec.ports.clone().unwrap_or_default();
    for port in &mut ports {
        // A NodePort/LoadBalancer apex keeps the node port clients already use.
        port.node_port = live_ports
            .iter()
            .find(|p| p.port == port.port && p.protocol == port.protocol)
            .or_else(|| live_ports.iter().find(|p| p.name == port.name))
            .and_then(|p| p.node_port);
    }
    spec.ports = Some(ports);
    spec.selector = desired_spec.selector.clone();
    if desired_spec.traffic_distribution.is_some() {
        spec.traffic_distribution = desired_spec.traffic_distribution.clone();
    }
    if owned_by(&live.metadata, canary) {
        let unmanaged = canary
            .spec
            .service
            .as_ref()
            .and_then(|s| s.unmanaged_metadata.clone())
            .unwrap_or_default();
        updated.metadata.labels = Some(keep_unmanaged(
            desired.metadata.labels.clone().unwrap_or_default(),
            live.metadata.labels.as_ref(),
            unmanaged.labels.as_deref().unwrap_or_default(),
        ));
        updated.metadata.annotations = Some(keep_unmanaged(
            desired.metadata.annotations.clone().unwrap_or_default(),
            live.metadata.annotations.as_ref(),
            unmanaged.annotations.as_deref().unwrap_or_default(),
        ));
    }
    let same = normalized(&updated) == normalized(live);
    (!same).then_some(updated)
}

/// `desired` where each `unmanaged` key has its live value (or stays absent).
fn keep_unmanaged(
    mut desired: BTreeMap<String, String>,
    live: Option<&BTreeMap<String, String>>,
    unmanaged: &[String],
) -> BTreeMap<String, String> {
    for key in unmanaged {
        desired.remove(key);
        if let Some(value) = live.and_then(|l| l.get(key)) {
            desired.insert(key.clone(), value.clone());
        }
    }
    desired
}

/// What `update_service` compares: metadata maps (absent = empty) and the spec.
fn normalized(
    svc: &Service,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    Option<ServiceSpec>,
) {
    (
        svc.metadata.labels.clone().unwrap_or_default(),
        svc.metadata.annotations.clone().unwrap_or_default(),
        svc.spec.clone(),
    )
}

/// The selector to give back to a Service flaggit took over: the one in kubectl's
/// last-applied configuration, else the target's pods.
fn restored_selector(live: &Service, selector_label: &str, selector_value: &str) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Applied {
        spec: Option<AppliedSpec>,
    }
    #[derive(Deserialize)]
    struct AppliedSpec {
        selector: Option<BTreeMap<String, String>>,
    }
    live.annotations()
        .get(KUBECTL_LAST_APPLIED)
        .and_then(|text| serde_json::from_str::<Applied>(text).ok())
        .and_then(|a| a.spec)
        .and_then(|s| s.selector)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| BTreeMap::from([(selector_label.to_string(), selector_value.to_string())]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryService, UnmanagedMetadata};

    fn canary(service: CanaryService) -> Canary {
        let mut c = crate::testing::podinfo(Some(service), None);
        c.metadata.namespace = Some("test".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn basic() -> CanaryService {
        CanaryService {
            port: 9898,
            ..Default::default()
        }
    }

    fn ports_of(svc: &Service) -> Vec<ServicePort> {
        svc.spec.clone().and_then(|s| s.ports).unwrap_or_default()
    }

    #[test]
    fn each_role_selects_its_pods() {
        let c = canary(basic());
        let none = BTreeMap::new();
        let cases = [
            (ServiceRole::Apex, "podinfo", "podinfo-primary"),
            (ServiceRole::Primary, "podinfo-primary", "podinfo-primary"),
            (ServiceRole::Canary, "podinfo-canary", "podinfo"),
        ];
        for (role, name, pods) in cases {
            let svc = build_service(&c, role, "app", "podinfo", &none).expect("builds");
            assert_eq!(svc.name_any(), name);
            let spec = svc.spec.clone().expect("spec");
            assert_eq!(spec.selector, Some(BTreeMap::from([("app".into(), pods.into())])));
            assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
            assert_eq!(spec.cluster_ip, None);
            assert_eq!(svc.labels()["app"], name);
            assert!(owned_by(&svc.metadata, &c));
            assert_eq!(
                svc.annotations()["kustomize.toolkit.fluxcd.io/reconcile"],
                "disabled"
            );
        }
    }

    #[test]
    fn main_port_defaults() {
        let c = canary(basic());
        let svc = build_service(&c, ServiceRole::Apex, "app", "podinfo", &BTreeMap::new()).expect("builds");
        let ports = ports_of(&svc);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].port, 9898);
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(9898)));
        assert_eq!(ports[0].app_protocol, None);
    }

    #[test]
    fn port_options_and_discovered_ports() {
        let c = canary(CanaryService {
            port: 80,
            port_name: Some("web".into()),
            target_port: Some(IntOrString::String("http".into())),
            app_protocol: Some("http".into()),
            port_discovery: Some(true),
            headless: Some(true),
            traffic_distribution: Some(TrafficDistribution::PreferClose),
            ..Default::default()
        });
        let discovered = BTreeMap::from([
            ("metrics".to_string(), 9797),
            ("web".to_string(), 8080),
            ("dup".to_string(), 80),
        ]);
        let svc = build_service(&c, ServiceRole::Canary, "app", "podinfo", &discovered).expect("builds");
        let ports = ports_of(&svc);
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert_eq!(ports[0].name.as_deref(), Some("web"));
        assert_eq!(ports[0].target_port, Some(IntOrString::String("http".into())));
        assert_eq!(ports[0].app_protocol.as_deref(), Some("http"));
        assert_eq!(ports[1].name.as_deref(), Some("metrics"));
        assert_eq!(ports[1].target_port, Some(IntOrString::Int(9797)));
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.traffic_distribution.as_deref(), Some("PreferClose"));
    }

    #[test]
    fn discovered_ports_need_port_discovery() {
        let c = canary(basic());
        let discovered = BTreeMap::from([("metrics".to_string(), 9797)]);
        let svc = build_service(&c, ServiceRole::Primary, "app", "podinfo", &discovered).expect("builds");
        assert_eq!(ports_of(&svc).len(), 1);
    }

    #[test]
    fn role_metadata_is_applied() {
        let c = canary(CanaryService {
            port: 80,
            primary: Some(Box::new(CustomMetadata {
                labels: Some(BTreeMap::from([("tier".into(), "primary".into())])),
                annotations: Some(BTreeMap::from([("a".into(), "1".into())])),
            })),
            ..Default::default()
        });
        let none = BTreeMap::new();
        let primary = build_service(&c, ServiceRole::Primary, "app", "podinfo", &none).expect("ok");
        assert_eq!(primary.labels()["tier"], "primary");
        assert_eq!(primary.annotations()["a"], "1");
        let canary_svc = build_service(&c, ServiceRole::Canary, "app", "podinfo", &none).expect("ok");
        assert!(!canary_svc.labels().contains_key("tier"));
    }

    #[test]
    fn missing_service_is_a_clear_error() {
        let mut c = canary(basic());
        c.spec.service = None;
        let err =
            build_service(&c, ServiceRole::Apex, "app", "podinfo", &BTreeMap::new()).expect_err("no service");
        assert!(err.to_string().contains("spec.service"));
    }

    fn foreign_apex() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("podinfo".into()),
                labels: Some(BTreeMap::from([("owner".into(), "team".into())])),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("NodePort".into()),
                selector: Some(BTreeMap::from([
                    ("app".into(), "podinfo".into()),
                    ("extra".into(), "x".into()),
                ])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
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
    fn foreign_apex_keeps_node_port_and_metadata() {
        let c = canary(basic());
        let desired = build_service(&c, ServiceRole::Apex, "app", "podinfo", &BTreeMap::new()).expect("ok");
        let live = foreign_apex();
        let updated = update_service(&c, &live, &desired).expect("selector changes");
        let spec = updated.spec.clone().expect("spec");
        assert_eq!(
            spec.selector,
            Some(BTreeMap::from([("app".into(), "podinfo-primary".into())]))
        );
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(ports_of(&updated)[0].node_port, Some(30080));
        assert_eq!(updated.metadata.labels, live.metadata.labels);
        assert_eq!(updated.metadata.annotations, None);
        // Once in line, a second pass writes nothing.
        assert!(update_service(&c, &updated, &desired).is_none());
    }

    #[test]
    fn owned_service_metadata_keeps_unmanaged_keys_only() {
        let c = canary(CanaryService {
            port: 9898,
            unmanaged_metadata: Some(Box::new(UnmanagedMetadata {
                annotations: Some(vec!["linkerd.io/inject".into()]),
                labels: Some(vec!["mesh".into()]),
            })),
            ..Default::default()
        });
        let desired =
            build_service(&c, ServiceRole::Primary, "app", "podinfo", &BTreeMap::new()).expect("ok");
        let mut live = desired.clone();
        live.metadata.labels = Some(BTreeMap::from([
            ("mesh".into(), "yes".into()),
            ("stray".into(), "1".into()),
        ]));
        live.metadata.annotations = Some(BTreeMap::from([("linkerd.io/inject".into(), "enabled".into())]));
        let updated = update_service(&c, &live, &desired).expect("metadata changes");
        let labels = updated.labels();
        assert_eq!(labels["mesh"], "yes");
        assert_eq!(labels["app"], "podinfo-primary");
        assert!(!labels.contains_key("stray"));
        let annotations = updated.annotations();
        assert_eq!(annotations["linkerd.io/inject"], "enabled");
        assert_eq!(annotations["helm.toolkit.fluxcd.io/driftDetection"], "disabled");
    }

    #[test]
    fn restored_selector_prefers_kubectl_annotation() {
        let mut live = foreign_apex();
        assert_eq!(
            restored_selector(&live, "app", "podinfo"),
            BTreeMap::from([("app".into(), "podinfo".into())])
        );
        live.metadata.annotations = Some(BTreeMap::from([(
            KUBECTL_LAST_APPLIED.into(),
            r#"{"apiVersion":"v1","kind":"Service","spec":{"selector":{"name":"web"}}}"#.into(),
        )]));
        assert_eq!(
            restored_selector(&live, "app", "podinfo"),
            BTreeMap::from([("name".into(), "web".into())])
        );
    }
}
