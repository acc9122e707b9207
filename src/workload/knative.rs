//! Knative Service targets (`provider: knative`, Flagger's `knative_controller.go`): there is
//! no `-primary` workload. The primary is the revision the Service's
//! `flagger.app/primary-revision` annotation names, the canary its latest created revision;
//! promotion moves the annotation. Readiness is each Revision's `Ready` condition. The
//! traffic between them is the knative router's (`router::knative`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::core::object::Object;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{Error, Readiness, Revision, Target, is_not_found, namespace_of};
use crate::api::Canary;
use crate::objects::FIELD_MANAGER;
use crate::router::{
    KnativeService, PRIMARY_REVISION_ANNOTATION, RevisionContainer, RevisionSpec, knative_api,
};

const KIND: &str = "Knative Service";

/// The API group of Knative Serving.
pub const KNATIVE_GROUP: &str = "serving.knative.dev";

/// Whether `targetRef` names a Knative Service.
pub fn is_knative_target(canary: &Canary) -> bool {
    canary.spec.target_ref.api_version.starts_with(KNATIVE_GROUP)
        && canary.spec.target_ref.kind == crate::api::TargetKind::Service
}

/// A Knative Revision as flaggit reads it: its containers and its `Ready` condition.
pub type KnativeRevision = Object<RevisionSpec, RevisionStatus>;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RevisionStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Whether a Revision is ready: `Ready` True; False is a failure (Knative gave up, for
/// example on an image that cannot be pulled); anything else is still coming.
pub fn revision_readiness(revision: &KnativeRevision) -> Readiness {
    let name = revision.name_any();
    let ready = revision
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => Readiness::Ready,
        Some(c) if c.status == "False" => Readiness::Failed(format!(
            "Knative Revision {name} is not ready: {}",
            c.message
                .as_deref()
                .or(c.reason.as_deref())
                .unwrap_or("Ready is False")
        )),
        _ => Readiness::Waiting(format!("Knative Revision {name} is not ready yet")),
    }
}

/// The images of a revision's containers, by name (Knative's default name for an unnamed
/// container is `user-container`).
pub fn revision_images(spec: &RevisionSpec) -> BTreeMap<String, String> {
    let named = |c: &RevisionContainer, i: usize| {
        c.name.clone().unwrap_or_else(|| {
            if i == 0 {
                "user-container".into()
            } else {
                format!("container-{i}")
            }
        })
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .enumerate()
        .filter_map(|(i, c)| Some((named(c, i), c.image.clone()?)))
        .collect()
}

/// The Service's revision template as a pod template (names and images), for the images
/// the records and the dashboard show.
fn pod_template(service: &KnativeService) -> PodTemplateSpec {
    let template = service.spec.template.clone().unwrap_or_default();
    let images = revision_images(&template.spec.unwrap_or_default());
    PodTemplateSpec {
        metadata: template.metadata,
        spec: Some(PodSpec {
            containers: images
                .into_iter()
                .map(|(name, image)| Container {
                    name,
                    image: Some(image),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    }
}

/// The revision a Target stands for: the latest created revision's name.
pub fn knative_revision(latest: &str) -> Revision {
    Revision {
        hash: format!("{}{latest}", crate::rollout::REVISION_PREFIX),
        configs: BTreeMap::new(),
    }
}

/// A Knative Service target.
pub struct KnativeWorkload {
    client: Client,
}

impl KnativeWorkload {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn service(&self, canary: &Canary) -> Result<KnativeService, Error> {
        let name = &canary.spec.target_ref.name;
        knative_api(&self.client, &namespace_of(canary))
            .get_opt(name)
            .await
            .map_err(|source| Error::Get {
                kind: KIND,
                name: name.clone(),
                source,
            })?
            .ok_or_else(|| Error::TargetNotFound {
                kind: KIND,
                namespace: namespace_of(canary),
                name: name.clone(),
            })
    }

    async fn revision(&self, canary: &Canary, name: &str) -> Result<Option<KnativeRevision>, Error> {
        let resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(KNATIVE_GROUP, "v1", "Revision"),
            "revisions",
        );
        let api: Api<KnativeRevision> =
            Api::namespaced_with(self.client.clone(), &namespace_of(canary), &resource);
        match api.get(name).await {
            Ok(revision) => Ok(Some(revision)),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
            Err(source) if is_not_found(&source) => Ok(None),
            Err(source) => Err(Error::Get {
                kind: "Knative Revision",
                name: name.to_string(),
                source,
            }),
        }
    }

    async fn readiness_of(
        &self,
        canary: &Canary,
        name: Option<String>,
        what: &str,
    ) -> Result<Readiness, Error> {
        let Some(name) = name else {
            return Ok(Readiness::Waiting(format!(
                "the {what} revision is not known yet"
            )));
        };
        Ok(match self.revision(canary, &name).await? {
            Some(revision) => revision_readiness(&revision),
            None => Readiness::Waiting(format!("Knative Revision {name} does not exist yet")),
        })
    }
}

fn latest_created(service: &KnativeService) -> Option<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.latest_created_revision_name.clone())
        .filter(|n| !n.is_empty())
}

fn primary_revision(service: &KnativeService) -> Option<String> {
    service
        .annotations()
        .get(PRIMARY_REVISION_ANNOTATION)
        .filter(|n| !n.is_empty())
        .cloned()
}

/// The annotation patch of a promotion (guarded by the resourceVersion).
#[derive(Debug, Serialize)]
struct AnnotationPatch {
    metadata: ObjectMeta,
}

#[async_trait]
impl super::Workload for KnativeWorkload {
    async fn observe(&self, canary: &Canary) -> Result<Target, Error> {
        let service = self.service(canary).await?;
        let latest = latest_created(&service).ok_or_else(|| {
            Error::Invalid(format!(
                "Knative Service {}/{} has no revision yet (status.latestCreatedRevisionName): is Knative Serving running?",
                namespace_of(canary),
                service.name_any()
            ))
        })?;
        Ok(Target {
            revision: knative_revision(&latest),
            selector_label: String::new(),
            selector_value: String::new(),
            discovered_ports: Vec::new(),
            labels: service.labels().clone(),
            annotations: service.annotations().clone(),
            template: pod_template(&service),
            pinned_images: None,
            replicas: None,
        })
    }

    async fn initialize(&self, _canary: &Canary, _target: &Target) -> Result<(), Error> {
        // Nothing to create: the router pins the primary revision on its first reconcile.
        Ok(())
    }

    async fn promote(&self, canary: &Canary, _target: &Target) -> Result<(), Error> {
        let service = self.service(canary).await?;
        let Some(latest) = latest_created(&service) else {
            return Ok(());
        };
        if primary_revision(&service).as_deref() == Some(latest.as_str()) {
            return Ok(());
        }
        let patch = AnnotationPatch {
            metadata: ObjectMeta {
                resource_version: service.resource_version(),
                annotations: Some(BTreeMap::from([(
                    PRIMARY_REVISION_ANNOTATION.to_string(),
                    latest,
                )])),
                ..Default::default()
            },
        };
        let name = service.name_any();
        knative_api(&self.client, &namespace_of(canary))
            .patch(
                &name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::Write {
                kind: KIND,
                name,
                source,
            })?;
        Ok(())
    }

    async fn primary_ready(&self, canary: &Canary, _now: jiff::Timestamp) -> Result<Readiness, Error> {
        let service = self.service(canary).await?;
        self.readiness_of(canary, primary_revision(&service), "primary")
            .await
    }

    async fn canary_ready(&self, canary: &Canary, _now: jiff::Timestamp) -> Result<Readiness, Error> {
        let service = self.service(canary).await?;
        self.readiness_of(canary, latest_created(&service), "canary")
            .await
    }

    async fn scale_to_zero(&self, _canary: &Canary) -> Result<(), Error> {
        // Knative scales revisions by their traffic.
        Ok(())
    }

    async fn scale_from_zero(&self, _canary: &Canary, _target: &Target) -> Result<(), Error> {
        Ok(())
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // The router hands the Service back serving its latest revision.
        Ok(())
    }

    async fn target_matches_primary(&self, canary: &Canary, _target: &Target) -> Result<bool, Error> {
        let service = self.service(canary).await?;
        Ok(primary_revision(&service).is_some() && primary_revision(&service) == latest_created(&service))
    }

    async fn primary_images(&self, canary: &Canary) -> Result<BTreeMap<String, String>, Error> {
        let service = self.service(canary).await?;
        let Some(name) = primary_revision(&service) else {
            return Ok(BTreeMap::new());
        };
        Ok(self
            .revision(canary, &name)
            .await?
            .map(|r| revision_images(&r.spec))
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(conditions: serde_json::Value) -> KnativeRevision {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": { "name": "podinfo-00002" },
            "spec": { "containers": [{ "image": "podinfo:6.0.1" }], "containerConcurrency": 0 },
            "status": { "conditions": conditions },
        }))
        .expect("a revision reads")
    }

    #[test]
    fn a_revision_is_ready_when_knative_says_so() {
        let ready = revision(serde_json::json!([{ "type": "Ready", "status": "True" }]));
        assert_eq!(revision_readiness(&ready), Readiness::Ready);
        let failed = revision(serde_json::json!([
            { "type": "Ready", "status": "False", "reason": "ContainerMissing", "message": "image not found" }
        ]));
        assert_eq!(
            revision_readiness(&failed),
            Readiness::Failed("Knative Revision podinfo-00002 is not ready: image not found".into())
        );
        let coming = revision(serde_json::json!([{ "type": "Ready", "status": "Unknown" }]));
        assert!(matches!(revision_readiness(&coming), Readiness::Waiting(_)));
        assert_eq!(
            revision_images(&ready.spec),
            BTreeMap::from([("user-container".to_string(), "podinfo:6.0.1".to_string())])
        );
    }

    #[test]
    fn the_revision_hash_is_the_revision_name() {
        assert_eq!(knative_revision("podinfo-00002").hash, "flaggit1-podinfo-00002");
    }
}
