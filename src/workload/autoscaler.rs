//! The primary's autoscaler. A HorizontalPodAutoscaler is written as JSON under whichever of
//! `autoscaling/v2` and `autoscaling/v2beta2` the cluster serves (the fields are the same); a
//! KEDA ScaledObject is typed ([`super::keda`]), and the target's is paused while the canary
//! is scaled down, so that KEDA does not scale it back up.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, TypeMeta};
use kube::{Api, Client};
use serde::Serialize;
use tokio::sync::OnceCell;

use super::keda::{self, ScaledObject};
use super::template::{filter_metadata, primary_hpa_spec, primary_name};
use super::{Error, is_not_found, namespace_of};
use crate::api::{AutoscalerKind, AutoscalerRef, Canary};
use crate::objects;

const HPA_KIND: &str = "HorizontalPodAutoscaler";
const SO_KIND: &str = "ScaledObject";

/// A merge patch of annotations: `None` removes the key.
#[derive(Debug, Serialize)]
struct AnnotationsPatch<'a> {
    metadata: AnnotationsOnly<'a>,
}

#[derive(Debug, Serialize)]
struct AnnotationsOnly<'a> {
    annotations: BTreeMap<&'a str, Option<&'a str>>,
}

/// Reads target autoscalers and writes primary ones; remembers the served HPA version.
pub struct Autoscalers {
    client: Client,
    hpa_version: OnceCell<&'static str>,
}

impl Autoscalers {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            hpa_version: OnceCell::new(),
        }
    }

    /// `v2` where the cluster serves it (1.23+), else `v2beta2`. Asked once.
    async fn hpa_version(&self) -> Result<&'static str, Error> {
        let version = self
            .hpa_version
            .get_or_try_init(|| async {
                match self.client.list_api_group_resources("autoscaling/v2").await {
                    Ok(list)
                        if list
                            .resources
                            .iter()
                            .any(|r| r.name == "horizontalpodautoscalers") =>
                    {
                        Ok("v2")
                    }
                    Ok(_) => Ok("v2beta2"),
                    Err(e) if is_not_found(&e) => Ok("v2beta2"),
                    Err(source) => Err(Error::Get {
                        kind: "APIResourceList",
                        name: "autoscaling/v2".into(),
                        source,
                    }),
                }
            })
            .await?;
        Ok(version)
    }

    async fn hpa_api(&self, namespace: &str) -> Result<(Api<DynamicObject>, ApiResource), Error> {
        let version = self.hpa_version().await?;
        let gvk = GroupVersionKind::gvk("autoscaling", version, HPA_KIND);
        let resource = ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers");
        Ok((
            Api::namespaced_with(self.client.clone(), namespace, &resource),
            resource,
        ))
    }

    /// The target's HPA named by `reference`.
    async fn target_hpa<'c>(
        &self,
        canary: &Canary,
        reference: &'c AutoscalerRef,
    ) -> Result<Option<(&'c AutoscalerRef, DynamicObject)>, Error> {
        let namespace = namespace_of(canary);
        let (api, _) = self.hpa_api(&namespace).await?;
        let hpa = api.get_opt(&reference.name).await.map_err(|source| Error::Get {
            kind: HPA_KIND,
            name: reference.name.clone(),
            source,
        })?;
        match hpa {
            Some(hpa) => Ok(Some((reference, hpa))),
            None => Err(Error::Invalid(format!(
                "HorizontalPodAutoscaler {namespace}/{} not found: create it or fix spec.autoscalerRef",
                reference.name
            ))),
        }
    }

    /// The target autoscaler's minimum replicas (HPA `minReplicas`, ScaledObject
    /// `minReplicaCount`), when the Canary has one.
    pub async fn min_replicas(&self, canary: &Canary) -> Result<Option<i32>, Error> {
        let Some(reference) = &canary.spec.autoscaler_ref else {
            return Ok(None);
        };
        match reference.kind {
            AutoscalerKind::HorizontalPodAutoscaler => {
                let hpa = self.target_hpa(canary, reference).await?;
                Ok(hpa.and_then(|(_, hpa)| {
                    hpa.data["spec"]["minReplicas"]
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                }))
            }
            AutoscalerKind::ScaledObject => Ok(self
                .target_scaled_object(canary, reference)
                .await?
                .spec
                .min_replica_count),
        }
    }

    /// Creates the primary autoscaler `<autoscaler>-primary` scaling `primary_workload` when
    /// it is missing; with `update`, also brings an existing one up to date with the target's.
    pub async fn reconcile_primary(
        &self,
        canary: &Canary,
        primary_workload: &str,
        include_prefixes: &[String],
        update: bool,
    ) -> Result<(), Error> {
        let Some(reference) = &canary.spec.autoscaler_ref else {
            return Ok(());
        };
        match reference.kind {
            AutoscalerKind::HorizontalPodAutoscaler => {
                self.reconcile_primary_hpa(canary, reference, primary_workload, include_prefixes, update)
                    .await
            }
            AutoscalerKind::ScaledObject => {
                self.reconcile_primary_scaled_object(
                    canary,
                    reference,
                    primary_workload,
                    include_prefixes,
                    update,
                )
                .await
            }
        }
    }

    /// Pauses the target's ScaledObject at zero replicas (annotation
    /// `autoscaling.keda.sh/paused-replicas: "0"`), so KEDA leaves the scaled-down canary at
    /// zero. Nothing to do for an HPA, which does not act on a workload at zero.
    pub async fn pause_target(&self, canary: &Canary) -> Result<(), Error> {
        self.annotate_target_scaled_object(canary, Some("0")).await
    }

    /// Removes the pause of [`Self::pause_target`], handing the target back to KEDA.
    pub async fn resume_target(&self, canary: &Canary) -> Result<(), Error> {
        self.annotate_target_scaled_object(canary, None).await
    }

    async fn annotate_target_scaled_object(
        &self,
        canary: &Canary,
        paused: Option<&str>,
    ) -> Result<(), Error> {
        let Some(reference) = canary
            .spec
            .autoscaler_ref
            .as_ref()
            .filter(|r| r.kind == AutoscalerKind::ScaledObject)
        else {
            return Ok(());
        };
        let patch = AnnotationsPatch {
            metadata: AnnotationsOnly {
                annotations: BTreeMap::from([(keda::PAUSED_REPLICAS_ANNOTATION, paused)]),
            },
        };
        // A merge patch, not an apply: the GitOps tool applies the target ScaledObject.
        match self
            .scaled_objects(canary)
            .patch(&reference.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Nothing paused is left to resume (off-boarding after the ScaledObject went).
            Err(e) if is_not_found(&e) && paused.is_none() => Ok(()),
            Err(e) if is_not_found(&e) => Err(scaled_object_not_found(canary, reference)),
            Err(source) => Err(Error::Write {
                kind: SO_KIND,
                name: reference.name.clone(),
                source,
            }),
        }
    }

    fn scaled_objects(&self, canary: &Canary) -> Api<ScaledObject> {
        Api::namespaced_with(self.client.clone(), &namespace_of(canary), &keda::api_resource())
    }

    /// The target's ScaledObject named by `reference`, or an error saying it is missing.
    async fn target_scaled_object(
        &self,
        canary: &Canary,
        reference: &AutoscalerRef,
    ) -> Result<ScaledObject, Error> {
        let found = self
            .scaled_objects(canary)
            .get_opt(&reference.name)
            .await
            .map_err(|source| Error::Get {
                kind: SO_KIND,
                name: reference.name.clone(),
                source,
            })?;
        found.ok_or_else(|| scaled_object_not_found(canary, reference))
    }

    /// The primary ScaledObject `<so>-primary`: the target's spec made about the primary
    /// ([`keda::primary_spec`]), its labels and annotations (filtered, never the pause
    /// annotations), owned by the Canary.
    async fn reconcile_primary_scaled_object(
        &self,
        canary: &Canary,
        reference: &AutoscalerRef,
        primary_workload: &str,
        include_prefixes: &[String],
        update: bool,
    ) -> Result<(), Error> {
        let target = self.target_scaled_object(canary, reference).await?;
        let api = self.scaled_objects(canary);
        let name = primary_name(&reference.name);
        if !update {
            let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
                kind: SO_KIND,
                name: name.clone(),
                source,
            })?;
            if existing.is_some() {
                return Ok(());
            }
        }
        let namespace = namespace_of(canary);
        let spec = keda::primary_spec(
            &target.spec,
            &canary.spec.target_ref.name,
            primary_workload,
            reference,
            &format!("{SO_KIND} {namespace}/{}", reference.name),
        )
        .map_err(Error::Invalid)?;
        let mut annotations = filter_metadata(target.metadata.annotations.as_ref(), include_prefixes);
        annotations.retain(|key, _| keda::copies_annotation(key));
        let mut primary = ScaledObject::new(&name, &keda::api_resource(), spec);
        primary.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(filter_metadata(target.metadata.labels.as_ref(), include_prefixes)),
            annotations: Some(annotations),
            owner_references: Some(vec![objects::owner_ref(canary)]),
            ..Default::default()
        };
        objects::apply(&api, &name, &primary)
            .await
            .map_err(|source| Error::Write {
                kind: SO_KIND,
                name,
                source,
            })?;
        Ok(())
    }

    /// The primary HPA `<hpa>-primary`.
    async fn reconcile_primary_hpa(
        &self,
        canary: &Canary,
        reference: &AutoscalerRef,
        primary_workload: &str,
        include_prefixes: &[String],
        update: bool,
    ) -> Result<(), Error> {
        let Some((reference, target)) = self.target_hpa(canary, reference).await? else {
            return Ok(());
        };
        let namespace = namespace_of(canary);
        let (api, resource) = self.hpa_api(&namespace).await?;
        let name = primary_name(&reference.name);
        if !update {
            let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
                kind: HPA_KIND,
                name: name.clone(),
                source,
            })?;
            if existing.is_some() {
                return Ok(());
            }
        }
        let spec = primary_hpa_spec(
            &target.data["spec"],
            primary_workload,
            reference.primary_scaler_replicas.as_ref(),
        );
        let primary = DynamicObject {
            types: Some(TypeMeta {
                api_version: resource.api_version.clone(),
                kind: HPA_KIND.into(),
            }),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                labels: Some(filter_metadata(target.metadata.labels.as_ref(), include_prefixes)),
                annotations: Some(filter_metadata(
                    target.metadata.annotations.as_ref(),
                    include_prefixes,
                )),
                owner_references: Some(vec![objects::owner_ref(canary)]),
                ..Default::default()
            },
            data: serde_json::json!({ "spec": spec }),
        };
        objects::apply(&api, &name, &primary)
            .await
            .map_err(|source| Error::Write {
                kind: HPA_KIND,
                name,
                source,
            })?;
        Ok(())
    }
}

fn scaled_object_not_found(canary: &Canary, reference: &AutoscalerRef) -> Error {
    Error::Invalid(format!(
        "{SO_KIND} {}/{} not found (is KEDA installed?): create it or fix spec.autoscalerRef",
        namespace_of(canary),
        reference.name
    ))
}
