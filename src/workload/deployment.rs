//! Deployment targets: the `-primary` Deployment, its configs and autoscaler, promotion,
//! readiness from the Deployment status, and scaling the target with its `replicas`.

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::autoscaler::Autoscalers;
use super::configs::{self, ConfigObject};
use super::template::{
    ConfigRef, PrimaryNaming, discover_ports, filter_metadata, new_flagger_id, primary_name,
    primary_pod_template, revision, same_template, scale_from_zero_replicas, selector_label,
};
use super::{
    Error, Readiness, Settings, Target, describe, get_primary, get_target, is_not_found, namespace_of,
    readiness, thresholds,
};
use crate::api::Canary;
use crate::objects;

const KIND: &str = "Deployment";

/// A Deployment target and its `-primary` copy.
pub struct DeploymentWorkload {
    client: Client,
    settings: Settings,
    autoscalers: Autoscalers,
}

impl DeploymentWorkload {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self {
            autoscalers: Autoscalers::new(client.clone()),
            client,
            settings,
        }
    }

    fn api(&self, canary: &Canary) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &namespace_of(canary))
    }

    async fn target(&self, canary: &Canary) -> Result<Deployment, Error> {
        get_target(&self.api(canary), KIND, canary).await
    }

    async fn primary(&self, canary: &Canary) -> Result<Option<Deployment>, Error> {
        get_primary(&self.api(canary), KIND, canary).await
    }

    fn describe_target(canary: &Canary) -> String {
        format!("{KIND} {}/{}", namespace_of(canary), canary.spec.target_ref.name)
    }

    async fn tracked(
        &self,
        canary: &Canary,
        target: &Deployment,
    ) -> Result<std::collections::BTreeMap<ConfigRef, ConfigObject>, Error> {
        let pod_spec = target.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        configs::read(
            &self.client,
            &namespace_of(canary),
            pod_spec,
            &Self::describe_target(canary),
            self.settings.config_tracking,
        )
        .await
    }

    fn selector(&self, canary: &Canary, target: &Deployment) -> Result<(String, String), Error> {
        let spec = target.spec.clone().unwrap_or_default();
        selector_label(
            KIND,
            &namespace_of(canary),
            &canary.spec.target_ref.name,
            &spec.selector,
            &self.settings.selector_labels,
        )
    }

    /// The primary Deployment as built from the target (Flagger's createPrimaryDeployment and
    /// Promote): the workload settings, the primary selector and pod template, `replicas`.
    fn build_primary(
        &self,
        canary: &Canary,
        target: &Deployment,
        configs: &std::collections::BTreeSet<ConfigRef>,
        replicas: Option<i32>,
        flagger_id: &str,
    ) -> Result<Deployment, Error> {
        let (label, value) = self.selector(canary, target)?;
        let naming = PrimaryNaming {
            target_name: &canary.spec.target_ref.name,
            selector_label: &label,
            selector_value: &value,
            selector_labels: &self.settings.selector_labels,
            configs,
        };
        let spec = target.spec.clone().unwrap_or_default();
        let include = &self.settings.include_label_prefixes;
        let labels = filter_metadata(target.metadata.labels.as_ref(), include);
        Ok(Deployment {
            metadata: ObjectMeta {
                name: Some(primary_name(&canary.spec.target_ref.name)),
                namespace: Some(namespace_of(canary)),
                labels: Some(naming.primary_labels(Some(&labels))),
                annotations: Some(filter_metadata(target.metadata.annotations.as_ref(), include)),
                owner_references: Some(vec![objects::owner_ref(canary)]),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                progress_deadline_seconds: spec.progress_deadline_seconds,
                min_ready_seconds: spec.min_ready_seconds,
                revision_history_limit: spec.revision_history_limit,
                strategy: spec.strategy.clone(),
                replicas,
                selector: naming.primary_selector(),
                template: primary_pod_template(&spec.template, &naming, flagger_id),
                paused: None,
            }),
            status: None,
        })
    }

    async fn write_primary(&self, canary: &Canary, primary: &Deployment) -> Result<(), Error> {
        let name = primary.name_any();
        objects::apply(&self.api(canary), &name, primary)
            .await
            .map_err(|source| Error::Write {
                kind: KIND,
                name,
                source,
            })?;
        Ok(())
    }

    /// Scales the target up from zero: to its own replicas, else the HPA's minimum, else the
    /// primary's (`target_replicas` is the target's `spec.replicas`).
    async fn scale_up(&self, canary: &Canary, target_replicas: Option<i32>) -> Result<(), Error> {
        self.autoscalers.resume_target(canary).await?;
        let hpa_min = self.autoscalers.min_replicas(canary).await?;
        let primary_replicas = self
            .primary(canary)
            .await?
            .and_then(|p| p.spec)
            .and_then(|s| s.replicas);
        let replicas = scale_from_zero_replicas(target_replicas, hpa_min, primary_replicas);
        self.set_target_replicas(canary, replicas).await
    }

    async fn set_target_replicas(&self, canary: &Canary, replicas: i32) -> Result<(), Error> {
        let name = &canary.spec.target_ref.name;
        // A merge patch, not an apply: the GitOps tool's own apply of the target must not
        // conflict with a field manager of ours.
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        match self
            .api(canary)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(Error::TargetNotFound {
                kind: KIND,
                namespace: namespace_of(canary),
                name: name.clone(),
            }),
            Err(source) => Err(Error::Write {
                kind: KIND,
                name: name.clone(),
                source,
            }),
        }
    }

    fn primary_description(canary: &Canary) -> String {
        format!(
            "primary deployment {}/{}",
            namespace_of(canary),
            primary_name(&canary.spec.target_ref.name)
        )
    }
}

#[async_trait]
impl super::Workload for DeploymentWorkload {
    async fn observe(&self, canary: &Canary) -> Result<Target, Error> {
        let target = self.target(canary).await?;
        let (selector_label, selector_value) = self.selector(canary, &target)?;
        let configs = self.tracked(canary, &target).await?;
        let spec = target.spec.clone().unwrap_or_default();
        let discovered_ports = match &canary.spec.service {
            Some(service) if service.port_discovery == Some(true) => {
                discover_ports(&spec.template.spec.clone().unwrap_or_default(), service)
            }
            _ => Vec::new(),
        };
        let template = spec.template.clone();
        Ok(Target {
            revision: revision(&template, configs::checksums(&configs)),
            selector_label,
            selector_value,
            discovered_ports,
            labels: target.labels().clone(),
            annotations: target.annotations().clone(),
            template,
            pinned_images: None,
            replicas: spec.replicas,
        })
    }

    async fn initialize(&self, canary: &Canary, observed: &Target) -> Result<(), Error> {
        let mut target = self.target(canary).await?;
        if let (Some(images), Some(spec)) = (&observed.pinned_images, target.spec.as_mut()) {
            super::template::pin_images(&mut spec.template, images);
        }
        let primary_workload = primary_name(&canary.spec.target_ref.name);
        if self.primary(canary).await?.is_none() {
            let configs = self.tracked(canary, &target).await?;
            let copied = configs::write_primaries(
                &self.client,
                canary,
                &configs,
                &self.settings.include_label_prefixes,
            )
            .await?;
            let replicas = target
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .filter(|&r| r > 0)
                .unwrap_or(1);
            let primary = self.build_primary(canary, &target, &copied, Some(replicas), &new_flagger_id())?;
            self.write_primary(canary, &primary).await?;
        }
        self.autoscalers
            .reconcile_primary(
                canary,
                &primary_workload,
                &self.settings.include_label_prefixes,
                false,
            )
            .await
    }

    async fn promote(&self, canary: &Canary, _target: &Target) -> Result<(), Error> {
        let target = self.target(canary).await?;
        let live = self.primary(canary).await?;
        let configs = self.tracked(canary, &target).await?;
        let copied = configs::write_primaries(
            &self.client,
            canary,
            &configs,
            &self.settings.include_label_prefixes,
        )
        .await?;
        let live_replicas = live
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas);
        let target_replicas = target.spec.as_ref().and_then(|s| s.replicas).filter(|&r| r > 0);
        // The autoscaler owns the primary's replicas; keep what it set (omitting the field
        // from our apply would reset it).
        let replicas = if canary.spec.autoscaler_ref.is_some() {
            live_replicas.or(target_replicas).or(Some(1))
        } else {
            target_replicas.or(live_replicas).or(Some(1))
        };
        let primary = self.build_primary(canary, &target, &copied, replicas, &new_flagger_id())?;
        self.write_primary(canary, &primary).await?;
        self.autoscalers
            .reconcile_primary(
                canary,
                &primary_name(&canary.spec.target_ref.name),
                &self.settings.include_label_prefixes,
                true,
            )
            .await
    }

    async fn primary_ready(&self, canary: &Canary, now: jiff::Timestamp) -> Result<Readiness, Error> {
        let what = Self::primary_description(canary);
        let Some(primary) = self.primary(canary).await? else {
            return Ok(Readiness::Waiting(format!("{what} does not exist yet")));
        };
        // Flagger means to check this but compares pointers; a primary at zero serves nothing.
        if primary.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
            return Ok(Readiness::Waiting(format!(
                "{what} is scaled to zero: halt advancement"
            )));
        }
        let (threshold, _, deadline) = thresholds(canary);
        Ok(describe(
            readiness::deployment(&primary, threshold, deadline, now),
            &what,
        ))
    }

    async fn canary_ready(&self, canary: &Canary, now: jiff::Timestamp) -> Result<Readiness, Error> {
        let target = self.target(canary).await?;
        let (_, threshold, deadline) = thresholds(canary);
        let what = format!(
            "canary deployment {}/{}",
            namespace_of(canary),
            canary.spec.target_ref.name
        );
        Ok(describe(
            readiness::deployment(&target, threshold, deadline, now),
            &what,
        ))
    }

    async fn scale_to_zero(&self, canary: &Canary) -> Result<(), Error> {
        // A KEDA ScaledObject would scale the target straight back up: pause it first.
        self.autoscalers.pause_target(canary).await?;
        self.set_target_replicas(canary, 0).await
    }

    async fn scale_from_zero(&self, canary: &Canary, target: &Target) -> Result<(), Error> {
        self.scale_up(canary, target.replicas).await
    }

    async fn finalize(&self, canary: &Canary) -> Result<(), Error> {
        // The target's ScaledObject scales it again once flaggit lets go.
        self.autoscalers.resume_target(canary).await?;
        let primary_replicas = self
            .primary(canary)
            .await?
            .and_then(|p| p.spec)
            .and_then(|s| s.replicas)
            .filter(|&r| r > 0);
        match primary_replicas {
            Some(replicas) => self.set_target_replicas(canary, replicas).await,
            None => {
                let target = self.target(canary).await?;
                self.scale_up(canary, target.spec.and_then(|s| s.replicas)).await
            }
        }
    }

    async fn primary_images(
        &self,
        canary: &Canary,
    ) -> Result<std::collections::BTreeMap<String, String>, Error> {
        Ok(self
            .primary(canary)
            .await?
            .and_then(|p| p.spec)
            .map(|s| super::template::images(&s.template))
            .unwrap_or_default())
    }

    async fn target_matches_primary(&self, canary: &Canary, _target: &Target) -> Result<bool, Error> {
        let target = self.target(canary).await?;
        let Some(primary) = self.primary(canary).await? else {
            return Ok(false);
        };
        let configs = self.tracked(canary, &target).await?;
        let expected = self.build_primary(canary, &target, &configs::refs(&configs), None, "")?;
        let (Some(expected), Some(live)) = (expected.spec, primary.spec) else {
            return Ok(false);
        };
        Ok(same_template(&expected.template, &live.template))
    }
}
