//! The primary's HorizontalPodAutoscaler, written as JSON under whichever of
//! `autoscaling/v2` and `autoscaling/v2beta2` the cluster serves (the fields are the same).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, TypeMeta};
use kube::{Api, Client};
use tokio::sync::OnceCell;

use super::template::{filter_metadata, primary_hpa_spec, primary_name};
use super::{Error, is_not_found, namespace_of};
use crate::api::{AutoscalerKind, AutoscalerRef, Canary};
use crate::objects;

const HPA_KIND: &str = "HorizontalPodAutoscaler";

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

    /// The target's HPA, if the Canary names one. A ScaledObject is refused.
    async fn target_hpa<'c>(
        &self,
        canary: &'c Canary,
    ) -> Result<Option<(&'c AutoscalerRef, DynamicObject)>, Error> {
        let Some(reference) = &canary.spec.autoscaler_ref else {
            return Ok(None);
        };
        if reference.kind == AutoscalerKind::ScaledObject {
            return Err(Error::Invalid(
                "spec.autoscalerRef.kind ScaledObject (KEDA) is not supported by flaggit yet: use a \
                 HorizontalPodAutoscaler"
                    .into(),
            ));
        }
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

    /// The target HPA's `minReplicas`, when the Canary has one.
    pub async fn min_replicas(&self, canary: &Canary) -> Result<Option<i32>, Error> {
        let hpa = self.target_hpa(canary).await?;
        Ok(hpa.and_then(|(_, hpa)| {
            hpa.data["spec"]["minReplicas"]
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
        }))
    }

    /// Creates the primary HPA `<hpa>-primary` scaling `primary_workload` when it is missing;
    /// with `update`, also brings an existing one up to date with the target's HPA.
    pub async fn reconcile_primary(
        &self,
        canary: &Canary,
        primary_workload: &str,
        include_prefixes: &[String],
        update: bool,
    ) -> Result<(), Error> {
        let Some((reference, target)) = self.target_hpa(canary).await? else {
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
