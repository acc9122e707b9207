//! Workloads: the target a Canary releases and the `-primary` copy flaggit makes of it.
//! Deployment and DaemonSet targets: selector discovery, the primary and its ConfigMaps,
//! Secrets and autoscaler (HPA or KEDA ScaledObject), promotion, scaling to and from zero,
//! readiness, revision hashes and config tracking. Service targets: the `-primary` and
//! `-canary` Service copies. [`for_target`] is the only place that matches on the target kind;
//! a Knative Service target (provider `knative`) is [`KnativeWorkload`].

mod autoscaler;
mod configs;
mod daemonset;
mod deployment;
pub mod keda;
mod knative;
pub mod readiness;
mod service;
pub mod template;

use async_trait::async_trait;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, ServicePort};
use kube::{Client, ResourceExt};

use crate::api::{Canary, TargetKind};
pub use crate::rollout::{Readiness, Revision};
pub use configs::{primary_checksums, restore_primary_config_maps};
pub use daemonset::DaemonSetWorkload;
pub use deployment::DeploymentWorkload;
pub use knative::{KNATIVE_GROUP, KnativeWorkload, is_knative_target, revision_readiness};
pub use service::{ServiceWorkload, portable_spec, service_copy};
pub use template::{ConfigKind, ConfigRef, primary_name, tracked_refs};

/// Controller-wide settings of the workload layer.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Labels looked for, in order, in the target's `spec.selector.matchLabels`; the first
    /// one found is the selector label (`--selector-labels`).
    pub selector_labels: Vec<String>,
    /// Label and annotation prefixes copied from the target to the primary; `*` copies all
    /// (`--include-label-prefix`).
    pub include_label_prefixes: Vec<String>,
    /// Track the ConfigMaps and Secrets the target uses (`--enable-config-tracking`).
    pub config_tracking: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            selector_labels: vec!["app".into(), "name".into(), "app.kubernetes.io/name".into()],
            include_label_prefixes: Vec::new(),
            config_tracking: true,
        }
    }
}

/// The target as observed now.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// What identifies this version of the target.
    pub revision: Revision,
    /// The selector label (for example `app`) and the target's value of it (`podinfo`).
    pub selector_label: String,
    pub selector_value: String,
    /// Extra container ports found with `service.portDiscovery`.
    pub discovered_ports: Vec<ServicePort>,
    /// The target's labels and annotations: they say which Flux Kustomization or Argo CD
    /// Application applied it.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The pod template the revision was computed from.
    pub template: PodTemplateSpec,
    /// Rebuild recovery: create a missing primary with these images (container -> image)
    /// instead of the target's, the version the Git ledger says was promoted.
    pub pinned_images: Option<BTreeMap<String, String>>,
    /// The target's own replica count (`spec.replicas`) where it has one (a Deployment), so
    /// scaling the canary up needs no second read of the target.
    pub replicas: Option<i32>,
}

impl Target {
    /// The images of the target's containers and init containers.
    pub fn images(&self) -> BTreeMap<String, String> {
        template::images(&self.template)
    }

    /// The target's labels and annotations as object metadata, which is what source
    /// discovery reads.
    pub fn metadata(&self) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            labels: Some(self.labels.clone()),
            annotations: Some(self.annotations.clone()),
            ..Default::default()
        }
    }
}

/// What a workload operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {namespace}/{name} not found: create it or fix spec.targetRef")]
    TargetNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// The target's selector has none of the selector labels; the text names them.
    #[error("{0}")]
    NoSelectorLabel(String),
    #[error("cannot read {kind} {name}: {source}")]
    Get {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write {kind} {name}: {source}")]
    Write {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A ConfigMap or Secret the target uses (not optionally) does not exist.
    #[error("{kind} {namespace}/{name} used by {target} not found: create it or mark the reference optional")]
    ConfigNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        target: String,
    },
    /// The Canary asks for something the target cannot do; the text names the field.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A short fixed name for the kind of failure: event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::TargetNotFound { .. } => "TargetNotFound",
            Self::NoSelectorLabel(_) => "NoSelectorLabel",
            Self::Get { .. } => "GetWorkload",
            Self::Write { .. } => "WriteWorkload",
            Self::ConfigNotFound { .. } => "ConfigNotFound",
            Self::Invalid(_) => "InvalidTarget",
        }
    }
}

/// A kind of target (Flagger's `canary.Controller`).
#[async_trait]
pub trait Workload: Send + Sync {
    /// Reads the target: its revision, selector label and discovered ports.
    async fn observe(&self, canary: &Canary) -> Result<Target, Error>;
    /// Creates what is missing of the primary workload, its ConfigMap/Secret copies and its
    /// autoscaler. An existing primary's pod template is left alone (that is `promote`).
    async fn initialize(&self, canary: &Canary, target: &Target) -> Result<(), Error>;
    /// Copies the target to the primary: pod template, tracked configs, workload settings
    /// and (when the target has one) the autoscaler.
    async fn promote(&self, canary: &Canary, target: &Target) -> Result<(), Error>;
    /// Whether the primary is ready, judged by `analysis.primaryReadyThreshold` and
    /// `progressDeadlineSeconds`.
    async fn primary_ready(&self, canary: &Canary, now: jiff::Timestamp) -> Result<Readiness, Error>;
    /// Whether the target (the canary) is ready, judged by `analysis.canaryReadyThreshold`
    /// and `progressDeadlineSeconds`.
    async fn canary_ready(&self, canary: &Canary, now: jiff::Timestamp) -> Result<Readiness, Error>;
    /// Scales the target to zero (DaemonSet: a node selector no node matches).
    async fn scale_to_zero(&self, canary: &Canary) -> Result<(), Error>;
    /// Scales the target back up to serve as canary; `target` is this reconcile's observation
    /// of it.
    async fn scale_from_zero(&self, canary: &Canary, target: &Target) -> Result<(), Error>;
    /// `revertOnDeletion`: scales the target back up to the primary's size so it can serve
    /// all traffic again.
    async fn finalize(&self, canary: &Canary) -> Result<(), Error>;
    /// Whether the live primary was made from this target as it is now (ignoring the
    /// `-primary` renames). Used to adopt a canary whose status was written by Flagger.
    async fn target_matches_primary(&self, canary: &Canary, target: &Target) -> Result<bool, Error>;
    /// The images the primary runs (container -> image); empty when there is no primary.
    async fn primary_images(&self, canary: &Canary) -> Result<BTreeMap<String, String>, Error>;
}

/// The workload implementation for a target kind. Keep the returned value between
/// reconciles where possible: it remembers which autoscaling version the cluster serves.
pub fn for_target(kind: TargetKind, client: Client, settings: Settings) -> Result<Box<dyn Workload>, Error> {
    match kind {
        TargetKind::Deployment => Ok(Box::new(DeploymentWorkload::new(client, settings))),
        TargetKind::DaemonSet => Ok(Box::new(DaemonSetWorkload::new(client, settings))),
        TargetKind::Service => Ok(Box::new(ServiceWorkload::new(client, settings))),
    }
}

/// The Canary's namespace (a Canary is always namespaced).
/// The target workload of `canary`, or `TargetNotFound`.
async fn get_target<K>(api: &kube::Api<K>, kind: &'static str, canary: &Canary) -> Result<K, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = &canary.spec.target_ref.name;
    get_opt(api, kind, name)
        .await?
        .ok_or_else(|| Error::TargetNotFound {
            kind,
            namespace: namespace_of(canary),
            name: name.clone(),
        })
}

/// The `-primary` workload of `canary`, if it exists.
async fn get_primary<K>(api: &kube::Api<K>, kind: &'static str, canary: &Canary) -> Result<Option<K>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    get_opt(api, kind, &primary_name(&canary.spec.target_ref.name)).await
}

async fn get_opt<K>(api: &kube::Api<K>, kind: &'static str, name: &str) -> Result<Option<K>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Get {
        kind,
        name: name.to_string(),
        source,
    })
}

fn namespace_of(canary: &Canary) -> String {
    canary.namespace().unwrap_or_default()
}

/// `analysis.primaryReadyThreshold` / `canaryReadyThreshold` (default 100) and
/// `progressDeadlineSeconds` (default 600).
fn thresholds(canary: &Canary) -> (i32, i32, i64) {
    let analysis = canary.spec.analysis();
    let primary = analysis.and_then(|a| a.primary_ready_threshold).unwrap_or(100);
    let canary_threshold = analysis.and_then(|a| a.canary_ready_threshold).unwrap_or(100);
    let deadline = canary.spec.progress_deadline_seconds.unwrap_or(600);
    (primary, canary_threshold, i64::from(deadline))
}

/// Whether a kube error is the API server's 404.
fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

/// Prefixes the text of a non-ready result with what was judged.
fn describe(readiness: Readiness, what: &str) -> Readiness {
    match readiness {
        Readiness::Ready => Readiness::Ready,
        Readiness::Waiting(text) => Readiness::Waiting(format!("{what} not ready: {text}")),
        Readiness::Failed(text) => Readiness::Failed(format!("{what} not ready: {text}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CanarySpec};

    #[test]
    fn thresholds_default_to_flagger_values() {
        let canary = Canary::new("podinfo", CanarySpec::default());
        assert_eq!(thresholds(&canary), (100, 100, 600));
        let mut spec = CanarySpec {
            progress_deadline_seconds: Some(60),
            canary_analysis: Some(Box::new(CanaryAnalysis {
                primary_ready_threshold: Some(80),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(thresholds(&Canary::new("podinfo", spec.clone())), (80, 100, 60));
        // `analysis` wins over the deprecated `canaryAnalysis`.
        spec.analysis = Some(CanaryAnalysis {
            canary_ready_threshold: Some(50),
            ..Default::default()
        });
        assert_eq!(thresholds(&Canary::new("podinfo", spec)), (100, 50, 60));
    }

    #[test]
    fn describe_names_what_is_not_ready() {
        assert_eq!(describe(Readiness::Ready, "x"), Readiness::Ready);
        assert_eq!(
            describe(
                Readiness::Waiting("1 of 2".into()),
                "primary deployment test/podinfo-primary"
            ),
            Readiness::Waiting("primary deployment test/podinfo-primary not ready: 1 of 2".into())
        );
        assert_eq!(
            describe(Readiness::Failed("deadline".into()), "canary"),
            Readiness::Failed("canary not ready: deadline".into())
        );
    }

    #[test]
    fn error_categories_are_fixed_names() {
        let missing = Error::ConfigNotFound {
            kind: "ConfigMap",
            namespace: "test".into(),
            name: "cfg".into(),
            target: "Deployment test/podinfo".into(),
        };
        assert_eq!(missing.category(), "ConfigNotFound");
        assert_eq!(
            missing.to_string(),
            "ConfigMap test/cfg used by Deployment test/podinfo not found: create it or mark the reference optional"
        );
        let target = Error::TargetNotFound {
            kind: "Deployment",
            namespace: "test".into(),
            name: "podinfo".into(),
        };
        assert_eq!(target.category(), "TargetNotFound");
    }
}
