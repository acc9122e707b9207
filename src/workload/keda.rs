//! KEDA ScaledObjects (`keda.sh/v1alpha1`), typed: the fields flaggit reads from the target's
//! ScaledObject and writes to the primary's, and the pure rules that turn the one into the
//! other (Flagger's `scaled_object_reconciler.go`). No client here.
//!
//! Where flaggit differs from Flagger, on purpose:
//! - a query that already names `<target>-primary` keeps it (Flagger writes
//!   `<target>-primary-primary`);
//! - with `primaryScalerQueries`, a trigger the map does not name still gets the rewritten
//!   query (Flagger copies the target's query unchanged, so the primary scales on the
//!   canary's load), and a map key that names no trigger is an error, not ignored;
//! - the pause annotations of the target are never copied to the primary (a copied
//!   `paused-replicas: "0"` would hold the primary at zero).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::api::{ApiResource, GroupVersionKind};
use kube::core::object::{NotUsed, Object};
use serde::{Deserialize, Serialize};

use crate::api::AutoscalerRef;

/// The annotation that makes KEDA hold a ScaledObject's target at the given replica count.
/// flaggit sets it to `"0"` on the target's ScaledObject while the canary is scaled down.
pub const PAUSED_REPLICAS_ANNOTATION: &str = "autoscaling.keda.sh/paused-replicas";
/// KEDA's other pause annotation (pauses at the current count); never copied to the primary.
pub const PAUSED_ANNOTATION: &str = "autoscaling.keda.sh/paused";

/// A ScaledObject; its status is not read.
pub type ScaledObject = Object<ScaledObjectSpec, NotUsed>;

/// The API resource of `keda.sh/v1alpha1` ScaledObjects.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// `spec` of a ScaledObject: every field of KEDA 2.20's schema.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<AdvancedConfig>,
    #[serde(default)]
    pub triggers: Vec<ScaleTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// The workload a ScaledObject scales.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// The HPA KEDA creates for the ScaledObject.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingModifiers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One scaler.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTrigger {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
}

/// A TriggerAuthentication or ClusterTriggerAuthentication.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    pub failure_threshold: i32,
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<String>,
}

/// The trigger metadata key whose value is rewritten for the primary.
const QUERY: &str = "query";

/// The spec of the primary ScaledObject: the target's, scaling `primary_workload`, the
/// bounds of `primaryScalerReplicas` when given, the HPA name (if the target sets one) with
/// `-primary`, and every trigger's `query` either taken from `primaryScalerQueries` or
/// rewritten from the target's with [`primary_query`]. `describe` names the target
/// ScaledObject in errors.
pub fn primary_spec(
    target: &ScaledObjectSpec,
    target_name: &str,
    primary_workload: &str,
    reference: &AutoscalerRef,
    describe: &str,
) -> Result<ScaledObjectSpec, String> {
    let mut spec = target.clone();
    spec.scale_target_ref.name = primary_workload.to_string();
    if let Some(overrides) = &reference.primary_scaler_replicas {
        if let Some(min) = overrides.min_replicas {
            spec.min_replica_count = Some(min);
        }
        if let Some(max) = overrides.max_replicas {
            spec.max_replica_count = Some(max);
        }
    }
    if let Some(name) = spec
        .advanced
        .as_mut()
        .and_then(|a| a.horizontal_pod_autoscaler_config.as_mut())
        .and_then(|h| h.name.as_mut())
        .filter(|name| !name.is_empty())
    {
        *name = format!("{name}-primary");
    }
    let queries = reference.primary_scaler_queries.as_ref();
    if let Some(queries) = queries {
        let named: Vec<&str> = target.triggers.iter().filter_map(|t| t.name.as_deref()).collect();
        if let Some(unknown) = queries.keys().find(|key| !named.contains(&key.as_str())) {
            return Err(format!(
                "spec.autoscalerRef.primaryScalerQueries names trigger {unknown:?}, but {describe} has no \
                 trigger of that name (it has {named:?}): set spec.triggers[].name in the ScaledObject or \
                 fix the key"
            ));
        }
    }
    for trigger in &mut spec.triggers {
        let given = trigger
            .name
            .as_ref()
            .and_then(|name| queries.and_then(|q| q.get(name)));
        match given {
            Some(query) => {
                trigger.metadata.insert(QUERY.into(), query.clone());
            }
            None => {
                if let Some(query) = trigger.metadata.get_mut(QUERY) {
                    *query = primary_query(query, target_name);
                }
            }
        }
    }
    Ok(spec)
}

/// A query about the target rewritten to be about the primary: `<target>` and
/// `<target>-canary` become `<target>-primary`; `<target>-primary` stays as it is. Matching
/// is on the plain name, as Flagger does: check the result, or set `primaryScalerQueries`,
/// when the name is part of longer words in the query.
pub fn primary_query(query: &str, target: &str) -> String {
    if target.is_empty() {
        return query.to_string();
    }
    let primary = format!("{target}-primary");
    let canary = format!("{target}-canary");
    let mut out = String::with_capacity(query.len() + primary.len());
    let mut rest = query;
    while let Some(at) = rest.find(target) {
        out.push_str(&rest[..at]);
        let found = &rest[at..];
        let skip = if found.starts_with(&primary) {
            primary.len()
        } else if found.starts_with(&canary) {
            canary.len()
        } else {
            target.len()
        };
        out.push_str(&primary);
        rest = &found[skip..];
    }
    out.push_str(rest);
    out
}

/// Whether an annotation of the target ScaledObject may be copied to the primary's: never
/// KEDA's pause annotations.
pub fn copies_annotation(key: &str) -> bool {
    key != PAUSED_REPLICAS_ANNOTATION && key != PAUSED_ANNOTATION
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::api::{AutoscalerKind, ScalerReplicas};

    fn reference(queries: Option<&[(&str, &str)]>) -> AutoscalerRef {
        AutoscalerRef {
            api_version: "keda.sh/v1alpha1".into(),
            kind: AutoscalerKind::ScaledObject,
            name: "podinfo-so".into(),
            primary_scaler_queries: queries
                .map(|q| q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            primary_scaler_replicas: None,
        }
    }

    fn trigger(name: Option<&str>, query: &str) -> ScaleTrigger {
        ScaleTrigger {
            type_: "prometheus".into(),
            name: name.map(String::from),
            metadata: BTreeMap::from([
                ("serverAddress".to_string(), "http://prometheus:9090".to_string()),
                ("threshold".to_string(), "100".to_string()),
                (QUERY.to_string(), query.to_string()),
            ]),
            ..Default::default()
        }
    }

    fn target_spec(triggers: Vec<ScaleTrigger>) -> ScaledObjectSpec {
        ScaledObjectSpec {
            scale_target_ref: ScaleTarget {
                name: "podinfo".into(),
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                env_source_container_name: Some("podinfo".into()),
            },
            polling_interval: Some(10),
            cooldown_period: Some(20),
            min_replica_count: Some(1),
            max_replica_count: Some(3),
            triggers,
            fallback: Some(Fallback {
                failure_threshold: 3,
                replicas: 2,
                behavior: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn query_names_the_primary_instead_of_target_or_canary() {
        let cases = [
            (
                r#"sum(rate(http_requests_total{deployment="podinfo"}[2m]))"#,
                r#"sum(rate(http_requests_total{deployment="podinfo-primary"}[2m]))"#,
            ),
            (
                r#"rate(x{app="podinfo-canary"}[1m]) + rate(x{app="podinfo"}[1m])"#,
                r#"rate(x{app="podinfo-primary"}[1m]) + rate(x{app="podinfo-primary"}[1m])"#,
            ),
            // Already about the primary: kept (Flagger writes podinfo-primary-primary).
            (r#"x{app="podinfo-primary"}"#, r#"x{app="podinfo-primary"}"#),
            // Nothing about the target: unchanged.
            ("sum(up)", "sum(up)"),
            ("", ""),
            // Back to back, and at both ends.
            ("podinfopodinfo-canary", "podinfo-primarypodinfo-primary"),
            // A longer name containing the target is rewritten too, as in Flagger.
            ("podinfo-canaryx", "podinfo-primaryx"),
        ];
        for (query, want) in cases {
            assert_eq!(primary_query(query, "podinfo"), want, "query {query:?}");
        }
        assert_eq!(primary_query("abc", ""), "abc");
    }

    #[test]
    fn primary_spec_scales_the_primary_with_rewritten_queries() {
        let target = target_spec(vec![
            trigger(Some("requests"), r#"sum(rate(x{deployment="podinfo"}[1m]))"#),
            trigger(None, r#"sum(y{deployment="podinfo-canary"})"#),
        ]);
        let spec = primary_spec(&target, "podinfo", "podinfo-primary", &reference(None), "so").unwrap();
        assert_eq!(spec.scale_target_ref.name, "podinfo-primary");
        assert_eq!(spec.scale_target_ref.kind.as_deref(), Some("Deployment"));
        assert_eq!(
            spec.scale_target_ref.env_source_container_name.as_deref(),
            Some("podinfo")
        );
        assert_eq!(
            spec.triggers[0].metadata[QUERY],
            r#"sum(rate(x{deployment="podinfo-primary"}[1m]))"#
        );
        assert_eq!(
            spec.triggers[1].metadata[QUERY],
            r#"sum(y{deployment="podinfo-primary"})"#
        );
        // Everything else is the target's.
        assert_eq!(spec.triggers[0].metadata["threshold"], "100");
        assert_eq!(
            (spec.polling_interval, spec.cooldown_period),
            (Some(10), Some(20))
        );
        assert_eq!(
            (spec.min_replica_count, spec.max_replica_count),
            (Some(1), Some(3))
        );
        assert_eq!(spec.fallback, target.fallback);
        assert_eq!(spec.advanced, None, "no HPA config is invented");
    }

    #[test]
    fn primary_scaler_queries_replace_named_triggers_only() {
        let target = target_spec(vec![
            trigger(Some("requests"), r#"x{deployment="podinfo"}"#),
            trigger(Some("latency"), r#"y{deployment="podinfo"}"#),
        ]);
        let reference = reference(Some(&[("requests", "sum(custom_primary_query)")]));
        let spec = primary_spec(&target, "podinfo", "podinfo-primary", &reference, "so").unwrap();
        assert_eq!(spec.triggers[0].metadata[QUERY], "sum(custom_primary_query)");
        assert_eq!(
            spec.triggers[1].metadata[QUERY], r#"y{deployment="podinfo-primary"}"#,
            "a trigger the map does not name is rewritten, not left on the canary"
        );
    }

    #[test]
    fn primary_scaler_queries_naming_no_trigger_is_an_error_naming_the_field() {
        let target = target_spec(vec![trigger(Some("requests"), "q"), trigger(None, "q")]);
        let reference = reference(Some(&[("request", "q2")]));
        let error = primary_spec(
            &target,
            "podinfo",
            "podinfo-primary",
            &reference,
            "ScaledObject test/podinfo-so",
        )
        .unwrap_err();
        assert!(
            error.contains("spec.autoscalerRef.primaryScalerQueries"),
            "{error}"
        );
        assert!(error.contains(r#""request""#), "{error}");
        assert!(error.contains("ScaledObject test/podinfo-so"), "{error}");
    }

    #[test]
    fn trigger_without_query_is_copied_unchanged() {
        let cpu = ScaleTrigger {
            type_: "cpu".into(),
            metric_type: Some("Utilization".into()),
            metadata: BTreeMap::from([("value".to_string(), "podinfo".to_string())]),
            ..Default::default()
        };
        let target = target_spec(vec![cpu.clone()]);
        let spec = primary_spec(&target, "podinfo", "podinfo-primary", &reference(None), "so").unwrap();
        assert_eq!(spec.triggers, vec![cpu]);
    }

    #[test]
    fn primary_scaler_replicas_and_hpa_name() {
        let mut target = target_spec(vec![trigger(None, "q")]);
        target.advanced = Some(AdvancedConfig {
            horizontal_pod_autoscaler_config: Some(HorizontalPodAutoscalerConfig {
                name: Some("podinfo-hpa".into()),
                behavior: None,
            }),
            restore_to_original_replica_count: Some(true),
            scaling_modifiers: None,
        });
        let mut reference = reference(None);
        reference.primary_scaler_replicas = Some(ScalerReplicas {
            min_replicas: Some(2),
            max_replicas: None,
        });
        let spec = primary_spec(&target, "podinfo", "podinfo-primary", &reference, "so").unwrap();
        assert_eq!(
            (spec.min_replica_count, spec.max_replica_count),
            (Some(2), Some(3))
        );
        let advanced = spec.advanced.unwrap();
        assert_eq!(
            advanced.horizontal_pod_autoscaler_config.unwrap().name.as_deref(),
            Some("podinfo-hpa-primary")
        );
        assert_eq!(advanced.restore_to_original_replica_count, Some(true));
    }

    #[test]
    fn pause_annotations_are_not_copied() {
        assert!(!copies_annotation(PAUSED_REPLICAS_ANNOTATION));
        assert!(!copies_annotation(PAUSED_ANNOTATION));
        assert!(copies_annotation("scaledobject.keda.sh/transfer-hpa-ownership"));
    }

    #[test]
    fn spec_round_trips_through_the_crd_field_names() {
        let yaml = r#"
scaleTargetRef: {name: podinfo, kind: Deployment, apiVersion: apps/v1}
pollingInterval: 5
initialCooldownPeriod: 30
idleReplicaCount: 0
advanced:
  restoreToOriginalReplicaCount: false
  horizontalPodAutoscalerConfig:
    name: h
    behavior: {scaleDown: {stabilizationWindowSeconds: 60, policies: [{type: Percent, value: 50, periodSeconds: 15}]}}
  scalingModifiers: {formula: "a + b", target: "2", metricType: AverageValue}
triggers:
- type: prometheus
  name: requests
  metricType: AverageValue
  useCachedMetrics: true
  authenticationRef: {name: prom-auth, kind: ClusterTriggerAuthentication}
  metadata: {query: up, threshold: "1"}
fallback: {failureThreshold: 3, replicas: 2, behavior: currentReplicas}
"#;
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        let spec: ScaledObjectSpec = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap(), value);
    }
}
