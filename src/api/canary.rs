//! The Canary resource: what to release, how to route it, how to judge it, and its status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CanaryAnalysis, CanaryService, GitOpsSpec, GitOpsStatus};

/// A Canary automates the release of a new version of a workload: it creates a primary copy,
/// shifts traffic to the new version step by step while checking metrics and webhooks, then
/// promotes it or rolls it back. flaggit also records every step in the GitOps config repo.
// Each printer column repeats `type_`/`priority`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    namespaced,
    category = "all",
    status = "CanaryStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "Canary is a progressive release of a Deployment, DaemonSet or Service, analysed and recorded in Git.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "string", json_path = ".status.canaryWeight"),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = "1"
    ),
    printcolumn(
        name = "FailedChecks",
        type_ = "string",
        json_path = ".status.failedChecks",
        priority = "1"
    ),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.analysis.interval",
        priority = "1"
    ),
    printcolumn(
        name = "Mirror",
        type_ = "boolean",
        json_path = ".spec.analysis.mirror",
        priority = "1"
    ),
    printcolumn(
        name = "StepWeight",
        type_ = "string",
        json_path = ".spec.analysis.stepWeight",
        priority = "1"
    ),
    printcolumn(
        name = "StepWeights",
        type_ = "string",
        json_path = ".spec.analysis.stepWeights",
        priority = "1"
    ),
    printcolumn(
        name = "MaxWeight",
        type_ = "string",
        json_path = ".spec.analysis.maxWeight",
        priority = "1"
    ),
    printcolumn(
        name = "LastTransitionTime",
        type_ = "string",
        json_path = ".status.lastTransitionTime"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Traffic management provider for this canary: the service mesh or ingress that shifts
    /// traffic between primary and canary. Overrides the controller's `--mesh-provider` flag.
    /// `kubernetes` supports Blue/Green only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,

    /// Address of the Prometheus server used for the builtin metrics
    /// (`request-success-rate`, `request-duration`) and inline `query` checks of this canary,
    /// for example `http://prometheus.istio-system:9090`. Overrides `--metrics-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,

    /// The workload to release: a Deployment, a DaemonSet, or a Service (Knative Service with
    /// `apiVersion: serving.knative.dev/v1`). flaggit creates `<name>-primary` from it and
    /// scales the target itself to zero between releases.
    pub target_ref: TargetRef,

    /// The autoscaler of the target (an `autoscaling/v2` or `v2beta2` HorizontalPodAutoscaler,
    /// or a KEDA ScaledObject). flaggit creates a `-primary` copy that scales the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,

    /// The Ingress to clone for the canary. Required by the `nginx` and `skipper` providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<IngressRef>,

    /// The ApisixRoute to split traffic on. Required by the `apisix` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<RouteRef>,

    /// A Gloo Upstream whose configuration is copied into the generated upstreams
    /// (`gloo` provider only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<UpstreamRef>,

    /// The Service that fronts the workload: flaggit generates `<name>`, `<name>-primary` and
    /// `<name>-canary` from it, plus the provider's routing objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<CanaryService>,

    /// How each release is analysed: the step schedule, the checks and their thresholds,
    /// webhooks and alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,

    /// Deprecated alias of `analysis`, still accepted. `analysis` wins when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_analysis: Option<Box<CanaryAnalysis>>,

    /// Seconds a primary or canary rollout may take to become ready before the release is
    /// rolled back. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub progress_deadline_seconds: Option<i32>,

    /// Promote a new revision without analysis (traffic moves to it in one go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_analysis: Option<bool>,

    /// When the Canary is deleted, restore the target so it serves traffic again and give
    /// back the routing objects flaggit took over, before the generated objects are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_on_deletion: Option<bool>,

    /// Pause this canary: no analysis step runs and no traffic moves until it is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// flaggit only: where this canary's rollouts are recorded in the GitOps config repo, and
    /// how promotions are approved. Unset fields fall back to the controller's defaults; with
    /// no repository configured at all the canary works exactly as under Flagger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<Box<GitOpsSpec>>,
}

// Traffic management providers, as accepted by Flagger's CRD.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum Provider {
    #[serde(rename = "apisix")]
    Apisix,
    #[serde(rename = "appmesh")]
    AppMesh,
    #[serde(rename = "appmesh:v1beta2")]
    AppMeshV1beta2,
    #[serde(rename = "contour")]
    Contour,
    #[serde(rename = "gatewayapi:v1")]
    GatewayApiV1,
    #[serde(rename = "gatewayapi:v1beta1")]
    GatewayApiV1beta1,
    #[serde(rename = "gloo")]
    Gloo,
    #[serde(rename = "istio")]
    Istio,
    #[serde(rename = "knative")]
    Knative,
    #[serde(rename = "kubernetes")]
    Kubernetes,
    #[serde(rename = "kuma")]
    Kuma,
    #[serde(rename = "linkerd")]
    Linkerd,
    #[serde(rename = "nginx")]
    Nginx,
    #[serde(rename = "osm")]
    Osm,
    #[serde(rename = "skipper")]
    Skipper,
    #[serde(rename = "smi:v1alpha1")]
    SmiV1alpha1,
    #[serde(rename = "smi:v1alpha2")]
    SmiV1alpha2,
    #[serde(rename = "smi:v1alpha3")]
    SmiV1alpha3,
    #[serde(rename = "traefik")]
    Traefik,
}

impl Provider {
    /// The provider string as written in manifests and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apisix => "apisix",
            Self::AppMesh => "appmesh",
            Self::AppMeshV1beta2 => "appmesh:v1beta2",
            Self::Contour => "contour",
            Self::GatewayApiV1 => "gatewayapi:v1",
            Self::GatewayApiV1beta1 => "gatewayapi:v1beta1",
            Self::Gloo => "gloo",
            Self::Istio => "istio",
            Self::Knative => "knative",
            Self::Kubernetes => "kubernetes",
            Self::Kuma => "kuma",
            Self::Linkerd => "linkerd",
            Self::Nginx => "nginx",
            Self::Osm => "osm",
            Self::Skipper => "skipper",
            Self::SmiV1alpha1 => "smi:v1alpha1",
            Self::SmiV1alpha2 => "smi:v1alpha2",
            Self::SmiV1alpha3 => "smi:v1alpha3",
            Self::Traefik => "traefik",
        }
    }
}

/// The workload a Canary releases.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the target, for example `apps/v1`.
    pub api_version: String,
    /// Kind of the target.
    pub kind: TargetKind,
    /// Name of the target in the Canary's namespace.
    pub name: String,
}

// Kinds of workload a Canary can release.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum TargetKind {
    #[default]
    Deployment,
    DaemonSet,
    Service,
}

/// The autoscaler of the target workload.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    /// API version, for example `autoscaling/v2` (or `autoscaling/v2beta2` on clusters older
    /// than 1.23) or `keda.sh/v1alpha1`.
    pub api_version: String,
    /// Kind of autoscaler.
    pub kind: AutoscalerKind,
    /// Name of the autoscaler in the Canary's namespace.
    pub name: String,
    /// KEDA only: queries for the primary ScaledObject's triggers, by trigger name (the
    /// ScaledObject's `spec.triggers[].name`; a key that names no trigger is an error).
    /// Without one, the trigger's query is copied with the target name rewritten to the
    /// primary's (`<target>` and `<target>-canary` become `<target>-primary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    /// Replica bounds for the primary autoscaler, when they should differ from the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

impl TargetKind {
    /// The kind as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::DaemonSet => "DaemonSet",
            Self::Service => "Service",
        }
    }
}

// Kinds of autoscaler flaggit can copy for the primary.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum AutoscalerKind {
    #[default]
    HorizontalPodAutoscaler,
    ScaledObject,
}

/// Replica bounds for the primary autoscaler.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    /// Minimum replicas of the primary (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Maximum replicas of the primary (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
}

/// A reference to the Ingress used by the `nginx` and `skipper` providers.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressRef {
    /// API version, for example `networking.k8s.io/v1`.
    pub api_version: String,
    /// Always `Ingress`.
    pub kind: IngressKind,
    /// Name of the Ingress in the Canary's namespace.
    pub name: String,
}

// The only kind an `ingressRef` can name.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum IngressKind {
    #[default]
    Ingress,
}

/// A reference to the ApisixRoute used by the `apisix` provider.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    /// API version, for example `apisix.apache.org/v2`.
    pub api_version: String,
    /// Always `ApisixRoute`.
    pub kind: RouteKind,
    /// Name of the ApisixRoute in the Canary's namespace.
    pub name: String,
}

// The only kind a `routeRef` can name.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RouteKind {
    #[default]
    ApisixRoute,
}

/// A reference to a Gloo Upstream whose settings the generated upstreams copy.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamRef {
    /// API version, for example `gloo.solo.io/v1`.
    pub api_version: String,
    /// Always `Upstream`.
    pub kind: UpstreamKind,
    /// Name of the Upstream.
    pub name: String,
    /// Namespace of the Upstream; default the Canary's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

// The only kind an `upstreamRef` can name.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum UpstreamKind {
    #[default]
    Upstream,
}

/// The observed state of a Canary, written by the controller.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Where the current release stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CanaryPhase>,
    /// Failed checks counted in the current analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<i32>,
    /// Percentage of traffic routed to the canary now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    /// Iterations done in the current A/B or Blue/Green analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    /// The session affinity cookie of the previous canary, expired at weight zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    /// The session affinity cookie given to users routed to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    /// The session affinity cookie given to users routed to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
    /// Checksums of the ConfigMaps and Secrets the target uses, keyed `configmap/<name>` or
    /// `secret/<name>`: a change to one starts a new release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Hash of the target's pod template the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Hash of the target's pod template that was last promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `Promoted` condition (Flagger's), and flaggit's `Ready` condition, which says
    /// whether the Canary could be reconciled and, when not, what to fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CanaryCondition>>,
    /// flaggit only: the last value of the `flaggit.dev/retry` annotation acted on. Setting
    /// the annotation to a new value re-runs a failed revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry: Option<String>,
    /// flaggit only: true while `spec.suspend` holds the canary (suspension is reported
    /// once, not at every tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
    /// flaggit only: the Git record of this canary: where it is written, what was pushed,
    /// and the records waiting to be pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<Box<GitOpsStatus>>,
    /// flaggit only: commands given from the command line (`flaggit promote`, `rollback`,
    /// `pause`, `resume`, `retry`), who gave them and what came of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<Box<super::SteeringStatus>>,
}

// Phases of a Canary's release, as in Flagger.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum CanaryPhase {
    /// The primary is being created from the target.
    Initializing,
    /// The primary serves all traffic; waiting for a new revision.
    Initialized,
    /// A new revision waits for a `confirm-rollout` gate.
    Waiting,
    /// Traffic is being shifted to the canary while checks run.
    Progressing,
    /// Analysis passed; waiting for a `confirm-promotion` gate.
    WaitingPromotion,
    /// The canary's spec is being copied to the primary.
    Promoting,
    /// The primary is updated; traffic returns to it.
    Finalising,
    /// The last release was promoted.
    Succeeded,
    /// The last release was rolled back.
    Failed,
    /// The Canary is being deleted and the target restored.
    Terminating,
    /// The target was restored after deletion.
    Terminated,
}

/// A condition of a Canary. flaggit sets the single type `Promoted`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCondition {
    /// Type of the condition; `Promoted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The phase that set this condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable description of the condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CanarySpec {
    /// The analysis in force: `analysis`, else the deprecated `canaryAnalysis`.
    pub fn analysis(&self) -> Option<&CanaryAnalysis> {
        self.analysis.as_ref().or(self.canary_analysis.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The controller caches every Canary, so its inline size is paid per canary: the large
    // optional parts are boxed and cost a pointer when unset (4752 bytes before, 1632 after).
    #[test]
    fn a_canary_keeps_its_large_optional_parts_out_of_line() {
        let size = std::mem::size_of::<Canary>();
        assert!(size <= 1800, "size_of::<Canary>() is {size} bytes");
    }
}
