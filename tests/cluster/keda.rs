//! `autoscalerRef.kind: ScaledObject` against a real API server with KEDA's real
//! ScaledObject CRD: the primary ScaledObject made from the target's (queries rewritten for
//! the primary, owned by the Canary, accepted by the schema unchanged), kept in step at
//! promotion, the target's paused while the canary is at zero and resumed on the way up and
//! at off-boarding, and clear errors for a missing ScaledObject or a stale query key.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use flaggit::api::{AutoscalerKind, AutoscalerRef, Canary, CanarySpec, TargetKind, TargetRef};
use flaggit::workload::keda::{
    self, Fallback, PAUSED_REPLICAS_ANNOTATION, ScaleTarget, ScaleTrigger, ScaledObject, ScaledObjectSpec,
};
use flaggit::workload::{Error, Settings, for_target};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::support::{TestNamespace, control_plane, eventually, repo};

/// Installs `tests/fixtures/crds/keda.yaml` once and waits until it is served.
fn install_keda_crd() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let cp = control_plane();
        cp.install_crds();
        let file = repo().join("tests/fixtures/crds/keda.yaml");
        cp.kubectl_ok(
            &["apply", "--server-side", "-f", file.to_str().expect("utf-8 path")],
            None,
        );
        eventually(
            "the ScaledObject CRD to be Established",
            Duration::from_secs(60),
            || {
                cp.kubectl(
                    &[
                        "wait",
                        "--for=condition=Established",
                        "--timeout=10s",
                        "crd/scaledobjects.keda.sh",
                    ],
                    None,
                )
                .0
                .then_some(())
            },
        );
    });
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "podinfo", "image": "podinfo:1"}]},
            },
        }
    }))
    .expect("deployment deserializes")
}

fn prometheus_trigger(name: Option<&str>, query: &str) -> ScaleTrigger {
    ScaleTrigger {
        type_: "prometheus".into(),
        name: name.map(String::from),
        metadata: BTreeMap::from([
            (
                "serverAddress".to_string(),
                "http://prometheus.monitoring:9090".to_string(),
            ),
            ("threshold".to_string(), "100".to_string()),
            ("query".to_string(), query.to_string()),
        ]),
        ..Default::default()
    }
}

/// The target's ScaledObject `podinfo-so`, scaling `podinfo` on two Prometheus queries.
fn target_scaled_object() -> ScaledObject {
    let spec = ScaledObjectSpec {
        scale_target_ref: ScaleTarget {
            name: "podinfo".into(),
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            env_source_container_name: None,
        },
        polling_interval: Some(10),
        cooldown_period: Some(20),
        min_replica_count: Some(2),
        max_replica_count: Some(4),
        triggers: vec![
            prometheus_trigger(
                Some("requests"),
                r#"sum(rate(http_requests_total{deployment="podinfo"}[1m]))"#,
            ),
            prometheus_trigger(
                Some("latency"),
                r#"histogram_quantile(0.99, rate(latency_bucket{deployment="podinfo-canary"}[1m]))"#,
            ),
        ],
        fallback: Some(Fallback {
            failure_threshold: 3,
            replicas: 2,
            behavior: Some("static".into()),
        }),
        ..Default::default()
    };
    let mut object = ScaledObject::new("podinfo-so", &keda::api_resource(), spec);
    object.metadata.labels = Some(BTreeMap::from([
        ("team".to_string(), "a".to_string()),
        ("kustomize.toolkit.fluxcd.io/name".to_string(), "apps".to_string()),
    ]));
    object
}

async fn create_canary(client: &Client, ns: &str, queries: Option<&[(&str, &str)]>) -> Canary {
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: TargetKind::Deployment,
                name: "podinfo".into(),
            },
            autoscaler_ref: Some(AutoscalerRef {
                api_version: "keda.sh/v1alpha1".into(),
                kind: AutoscalerKind::ScaledObject,
                name: "podinfo-so".into(),
                primary_scaler_queries: queries
                    .map(|q| q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                primary_scaler_replicas: None,
            }),
            ..Default::default()
        },
    );
    canary.metadata.namespace = Some(ns.into());
    Api::<Canary>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &canary)
        .await
        .expect("canary is created")
}

fn settings() -> Settings {
    Settings {
        include_label_prefixes: vec!["*".into()],
        ..Settings::default()
    }
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().unwrap().replicas
}

fn paused(so: &ScaledObject) -> Option<String> {
    so.annotations().get(PAUSED_REPLICAS_ANNOTATION).cloned()
}

#[tokio::test]
async fn keda_primary_scaled_object_follows_target_and_pauses_it_at_zero() {
    install_keda_crd();
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "keda").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment("podinfo", 2))
        .await
        .unwrap();
    let scaled_objects: Api<ScaledObject> =
        Api::namespaced_with(client.clone(), &ns.name, &keda::api_resource());
    let target = scaled_objects
        .create(&PostParams::default(), &target_scaled_object())
        .await
        .unwrap();
    let canary = create_canary(
        &client,
        &ns.name,
        Some(&[(
            "latency",
            "histogram_quantile(0.99, rate(primary_latency_bucket[1m]))",
        )]),
    )
    .await;

    // The workload runs as the controller's ServiceAccount: the shipped RBAC is enough.
    let manifests = repo().join("manifests");
    cp.kubectl_ok(
        &["apply", "--server-side", "-k", manifests.to_str().expect("utf-8")],
        None,
    );
    let kubeconfig = cp.kubeconfig_as(
        "system:serviceaccount:flaggit-system:flaggit",
        "kubeconfig-keda-sa",
    );
    let as_sa = cp.client_from(&kubeconfig).await;
    let workload = for_target(TargetKind::Deployment, as_sa, settings()).unwrap();
    let observed = workload.observe(&canary).await.unwrap();
    workload.initialize(&canary, &observed).await.unwrap();

    // The primary ScaledObject scales the primary, on queries about the primary.
    let primary = scaled_objects.get("podinfo-so-primary").await.unwrap();
    assert_eq!(primary.spec.scale_target_ref.name, "podinfo-primary");
    assert_eq!(
        primary.spec.triggers[0].metadata["query"],
        r#"sum(rate(http_requests_total{deployment="podinfo-primary"}[1m]))"#,
        "the unnamed-in-primaryScalerQueries trigger is rewritten"
    );
    assert_eq!(
        primary.spec.triggers[1].metadata["query"],
        "histogram_quantile(0.99, rate(primary_latency_bucket[1m]))",
        "primaryScalerQueries wins for the trigger it names"
    );
    // The API server kept every field flaggit wrote: nothing pruned by the real schema.
    let expected = keda::primary_spec(
        &target.spec,
        "podinfo",
        "podinfo-primary",
        canary.spec.autoscaler_ref.as_ref().unwrap(),
        "so",
    )
    .unwrap();
    assert_eq!(primary.spec, expected);
    let owner = &primary.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, canary.uid().unwrap());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(primary.labels().get("team").map(String::as_str), Some("a"));
    assert!(!primary.labels().keys().any(|k| k.contains("fluxcd")));

    // Scaled to zero: KEDA is told to hold the target at zero.
    workload.scale_to_zero(&canary).await.unwrap();
    assert_eq!(
        paused(&scaled_objects.get("podinfo-so").await.unwrap()).as_deref(),
        Some("0")
    );
    assert_eq!(replicas(&deployments.get("podinfo").await.unwrap()), Some(0));

    // A change to the target's ScaledObject waits for promotion, as for an HPA.
    scaled_objects
        .patch(
            "podinfo-so",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"maxReplicaCount": 6}})),
        )
        .await
        .unwrap();
    workload.initialize(&canary, &observed).await.unwrap();
    let primary = scaled_objects.get("podinfo-so-primary").await.unwrap();
    assert_eq!(primary.spec.max_replica_count, Some(4));

    // Up from zero: the pause goes and the target gets the ScaledObject's minimum.
    let at_zero = workload.observe(&canary).await.unwrap();
    workload.scale_from_zero(&canary, &at_zero).await.unwrap();
    assert_eq!(paused(&scaled_objects.get("podinfo-so").await.unwrap()), None);
    assert_eq!(replicas(&deployments.get("podinfo").await.unwrap()), Some(2));

    // Promotion brings the primary in step; the target's pause is never copied.
    workload.scale_to_zero(&canary).await.unwrap();
    workload.promote(&canary, &observed).await.unwrap();
    let primary = scaled_objects.get("podinfo-so-primary").await.unwrap();
    assert_eq!(primary.spec.max_replica_count, Some(6));
    assert_eq!(paused(&primary), None);

    // Off-boarding hands the target back to KEDA at the primary's size.
    workload.finalize(&canary).await.unwrap();
    assert_eq!(paused(&scaled_objects.get("podinfo-so").await.unwrap()), None);
    assert_eq!(replicas(&deployments.get("podinfo").await.unwrap()), Some(2));

    // With the target's ScaledObject gone, off-boarding still finishes.
    scaled_objects
        .delete("podinfo-so", &Default::default())
        .await
        .unwrap();
    workload.finalize(&canary).await.unwrap();
    ns.delete(&client).await;
}

#[tokio::test]
async fn keda_example_is_accepted_by_the_real_crds() {
    install_keda_crd();
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "keda-example").await;
    // In a namespace of this test's own (the example says `test`, which other tests use).
    let example = std::fs::read_to_string(repo().join("examples/autoscaling/keda.yaml")).unwrap();
    let example = example.replace("namespace: test", &format!("namespace: {}", ns.name));
    cp.kubectl_ok(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&example),
    );
    ns.delete(&client).await;
}

#[tokio::test]
async fn keda_bad_references_are_clear_errors() {
    install_keda_crd();
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "keda-bad").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment("podinfo", 1))
        .await
        .unwrap();
    let workload = for_target(TargetKind::Deployment, client.clone(), settings()).unwrap();

    // No ScaledObject: the error names it and the field.
    let canary = create_canary(&client, &ns.name, None).await;
    let observed = workload.observe(&canary).await.unwrap();
    let error = workload.initialize(&canary, &observed).await.unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains(&format!("ScaledObject {}/podinfo-so not found", ns.name)),
        "{text}"
    );
    assert!(text.contains("spec.autoscalerRef"), "{text}");

    // A primaryScalerQueries key naming no trigger: refused, nothing written.
    let scaled_objects: Api<ScaledObject> =
        Api::namespaced_with(client.clone(), &ns.name, &keda::api_resource());
    scaled_objects
        .create(&PostParams::default(), &target_scaled_object())
        .await
        .unwrap();
    let mut canary = canary;
    canary
        .spec
        .autoscaler_ref
        .as_mut()
        .unwrap()
        .primary_scaler_queries = Some(BTreeMap::from([("rps".to_string(), "sum(up)".to_string())]));
    let error = workload.initialize(&canary, &observed).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("spec.autoscalerRef.primaryScalerQueries"), "{text}");
    assert!(text.contains(r#""rps""#), "{text}");
    assert!(
        scaled_objects
            .get_opt("podinfo-so-primary")
            .await
            .unwrap()
            .is_none(),
        "no primary ScaledObject from a refused spec"
    );
    ns.delete(&client).await;
}
