//! DaemonSet targets: the `-primary` DaemonSet and its configs, promotion, readiness from the
//! DaemonSet status, and "scaling to zero" with a node selector no node matches.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::configs::{self, ConfigObject};
use super::template::{
    ConfigRef, PrimaryNaming, SCALE_TO_ZERO_KEY, discover_ports, filter_metadata, new_flagger_id,
    primary_name, primary_pod_template, revision, same_template, selector_label, without_scale_to_zero,
};
use super::{
    Error, Readiness, Settings, Target, describe, get_primary, get_target, is_not_found, namespace_of,
    readiness, thresholds,
};
use crate::api::Canary;
use crate::objects;

const KIND: &str = "DaemonSet";

/// A DaemonSet target and its `-primary` copy.
pub struct DaemonSetWorkload {
    client: Client,
    settings: Settings,
}

impl DaemonSetWorkload {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self { client, settings }
    }

    fn api(&self, canary: &Canary) -> Api<DaemonSet> {
        Api::namespaced(self.client.clone(), &namespace_of(canary))
    }

    async fn target(&self, canary: &Canary) -> Result<DaemonSet, Error> {
        get_target(&self.api(canary), KIND, canary).await
    }

    async fn primary(&self, canary: &Canary) -> Result<Option<DaemonSet>, Error> {
        get_primary(&self.api(canary), KIND, canary).await
    }

    async fn tracked(
        &self,
        canary: &Canary,
        target: &DaemonSet,
    ) -> Result<BTreeMap<ConfigRef, ConfigObject>, Error> {
        let pod_spec = target.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let description = format!("{KIND} {}/{}", namespace_of(canary), canary.spec.target_ref.name);
        configs::read(
            &self.client,
            &namespace_of(canary),
            pod_spec,
            &description,
            self.settings.config_tracking,
        )
        .await
    }

    fn selector(&self, canary: &Canary, target: &DaemonSet) -> Result<(String, String), Error> {
        let spec = target.spec.clone().unwrap_or_default();
        selector_label(
            KIND,
            &namespace_of(canary),
            &canary.spec.target_ref.name,
            &spec.selector,
            &self.settings.selector_labels,
        )
    }

    /// The primary DaemonSet built from the target; its pod template never carries the
    /// scale-to-zero node selector (the target may be scaled to zero when it is copied).
    fn build_primary(
        &self,
        canary: &Canary,
        target: &DaemonSet,
        configs: &BTreeSet<ConfigRef>,
        flagger_id: &str,
    ) -> Result<DaemonSet, Error> {
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
        let template = without_scale_to_zero(&spec.template);
        Ok(DaemonSet {
            metadata: ObjectMeta {
                name: Some(primary_name(&canary.spec.target_ref.name)),
                namespace: Some(namespace_of(canary)),
                labels: Some(naming.primary_labels(Some(&labels))),
                annotations: Some(filter_metadata(target.metadata.annotations.as_ref(), include)),
                owner_references: Some(vec![objects::owner_ref(canary)]),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                min_ready_seconds: spec.min_ready_seconds,
                revision_history_limit: spec.revision_history_limit,
                update_strategy: spec.update_strategy.clone(),
                selector: naming.primary_selector(),
                template: primary_pod_template(&template, &naming, flagger_id),
            }),
            status: None,
        })
    }

    async fn copy_to_primary(&self, canary: &Canary, target: &DaemonSet) -> Result<(), Error> {
        let configs = self.tracked(canary, target).await?;
        let copied = configs::write_primaries(
            &self.client,
            canary,
            &configs,
            &self.settings.include_label_prefixes,
        )
        .await?;
        let primary = self.build_primary(canary, target, &copied, &new_flagger_id())?;
        let name = primary.name_any();
        objects::apply(&self.api(canary), &name, &primary)
            .await
            .map_err(|source| Error::Write {
                kind: KIND,
                name,
                source,
            })?;
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the scale-to-zero node selector of the target.
    async fn set_scale_to_zero(&self, canary: &Canary, value: Option<&str>) -> Result<(), Error> {
        let name = &canary.spec.target_ref.name;
        // A merge patch, so the GitOps tool's apply of the target does not conflict with us.
        let patch = serde_json::json!({
            "spec": { "template": { "spec": { "nodeSelector": { SCALE_TO_ZERO_KEY: value } } } }
        });
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

    fn since(canary: &Canary) -> Option<jiff::Timestamp> {
        canary.status.as_ref()?.last_transition_time.as_ref().map(|t| t.0)
    }
}

#[async_trait]
impl super::Workload for DaemonSetWorkload {
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
        let template = without_scale_to_zero(&spec.template);
        Ok(Target {
            revision: revision(&template, configs::checksums(&configs)),
            selector_label,
            selector_value,
            discovered_ports,
            labels: target.labels().clone(),
            annotations: target.annotations().clone(),
            template,
            pinned_images: None,
            replicas: None,
        })
    }

    async fn initialize(&self, canary: &Canary, observed: &Target) -> Result<(), Error> {
        let mut target = self.target(canary).await?;
        if let (Some(images), Some(spec)) = (&observed.pinned_images, target.spec.as_mut()) {
            super::template::pin_images(&mut spec.template, images);
        }
        if self.primary(canary).await?.is_none() {
            self.copy_to_primary(canary, &target).await?;
        }
        Ok(())
    }

    async fn promote(&self, canary: &Canary, _target: &Target) -> Result<(), Error> {
        let target = self.target(canary).await?;
        self.copy_to_primary(canary, &target).await
    }

    async fn primary_ready(&self, canary: &Canary, now: jiff::Timestamp) -> Result<Readiness, Error> {
        let what = format!(
            "primary daemonset {}/{}",
            namespace_of(canary),
            primary_name(&canary.spec.target_ref.name)
        );
        let Some(primary) = self.primary(canary).await? else {
            return Ok(Readiness::Waiting(format!("{what} does not exist yet")));
        };
        let (threshold, _, deadline) = thresholds(canary);
        let result = readiness::daemonset(&primary, threshold, deadline, Self::since(canary), now);
        Ok(describe(result, &what))
    }

    async fn canary_ready(&self, canary: &Canary, now: jiff::Timestamp) -> Result<Readiness, Error> {
        let target = self.target(canary).await?;
        let what = format!(
            "canary daemonset {}/{}",
            namespace_of(canary),
            canary.spec.target_ref.name
        );
        let (_, threshold, deadline) = thresholds(canary);
        let result = readiness::daemonset(&target, threshold, deadline, Self::since(canary), now);
        Ok(describe(result, &what))
    }

    async fn scale_to_zero(&self, canary: &Canary) -> Result<(), Error> {
        self.set_scale_to_zero(canary, Some("true")).await
    }

    async fn scale_from_zero(&self, canary: &Canary, _target: &Target) -> Result<(), Error> {
        self.set_scale_to_zero(canary, None).await
    }

    async fn finalize(&self, canary: &Canary) -> Result<(), Error> {
        self.set_scale_to_zero(canary, None).await
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
        let expected = self.build_primary(canary, &target, &configs::refs(&configs), "")?;
        let (Some(expected), Some(live)) = (expected.spec, primary.spec) else {
            return Ok(false);
        };
        Ok(same_template(&expected.template, &live.template))
    }
}
