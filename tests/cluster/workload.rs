//! The workload layer against a real API server: primary Deployment/DaemonSet creation with
//! renamed configs, config copies and the primary HPA, revision detection, promotion,
//! readiness from status the tests write (there is no kubelet or deployment controller),
//! scaling to and from zero, finalize, and the errors for a missing target or selector label.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use flaggit::api::{
    AutoscalerKind, AutoscalerRef, Canary, CanaryAnalysis, CanaryService, CanarySpec, TargetKind, TargetRef,
};
use flaggit::workload::template::{FLAGGER_ID, SCALE_TO_ZERO_KEY, config_map_checksum};
use flaggit::workload::{Error, Readiness, Settings, for_target};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::support::{TestNamespace, control_plane, repo};

/// A pod template that uses a ConfigMap (volume and env), an Opaque Secret (envFrom), an
/// optional missing ConfigMap and a registry Secret (not tracked).
fn pod_template(app: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}, "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {
            "containers": [{
                "name": "podinfo",
                "image": image,
                "ports": [{"name": "http", "containerPort": 9898}, {"name": "http-metrics", "containerPort": 9797}],
                "env": [{"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "podinfo-config", "key": "color"}}}],
                "envFrom": [
                    {"secretRef": {"name": "podinfo-secret"}},
                    {"secretRef": {"name": "registry"}},
                    {"configMapRef": {"name": "maybe", "optional": true}},
                ],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/podinfo"}],
            }],
            "volumes": [{"name": "config", "configMap": {"name": "podinfo-config"}}],
        }
    })
}

fn deployment_json(name: &str, replicas: i32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {"app": name, "team": "a", "kustomize.toolkit.fluxcd.io/name": "apps"},
            "annotations": {"kustomize.toolkit.fluxcd.io/checksum": "x", "team/owner": "ops"},
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": 3,
            "progressDeadlineSeconds": 120,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, image),
        }
    })
}

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("object deserializes");
    api.create(&PostParams::default(), &object)
        .await
        .expect("object is created")
}

async fn create_configs(client: &Client, ns: &str) {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    create(
        &config_maps,
        json!({"metadata": {"name": "podinfo-config", "labels": {"team": "a", "kustomize.toolkit.fluxcd.io/name": "apps"}},
               "data": {"color": "blue", "page.html": "<b>hi</b>"}}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    create(
        &secrets,
        json!({"metadata": {"name": "podinfo-secret"}, "type": "Opaque", "stringData": {"TOKEN": "s3cr3t"}}),
    )
    .await;
    create(
        &secrets,
        json!({"metadata": {"name": "registry"}, "type": "kubernetes.io/dockerconfigjson",
               "stringData": {".dockerconfigjson": "{\"auths\":{}}"}}),
    )
    .await;
}

async fn create_canary(client: &Client, ns: &str, kind: TargetKind, name: &str, hpa: Option<&str>) -> Canary {
    control_plane().install_crds();
    let mut canary = Canary::new(
        name,
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind,
                name: name.into(),
            },
            autoscaler_ref: hpa.map(|hpa| AutoscalerRef {
                api_version: "autoscaling/v2".into(),
                kind: AutoscalerKind::HorizontalPodAutoscaler,
                name: hpa.into(),
                ..Default::default()
            }),
            service: Some(CanaryService {
                port: 9898,
                port_discovery: Some(true),
                ..Default::default()
            }),
            analysis: Some(CanaryAnalysis {
                interval: Some("1m".into()),
                threshold: Some(5),
                step_weight: Some(10),
                primary_ready_threshold: Some(100),
                canary_ready_threshold: Some(50),
                ..Default::default()
            }),
            progress_deadline_seconds: Some(60),
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

fn hpa_v2beta2(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers"),
    )
}

async fn merge<K>(api: &Api<K>, name: &str, patch: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch applies");
}

/// Changes the target's image, keeping the rest of the container (a strategic merge patch).
async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "podinfo", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("strategic merge patch applies");
}

async fn set_status<K>(api: &Api<K>, name: &str, status: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .expect("status patch applies");
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

fn flagger_id(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[FLAGGER_ID]
        .clone()
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().unwrap().replicas
}

#[tokio::test]
async fn initialize_creates_primary_with_renamed_configs_copies_and_hpa() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "wl-init").await;
    create_configs(&client, &ns.name).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    create(
        &deployments,
        deployment_json("podinfo", 2, "ghcr.io/stefanprodan/podinfo:6.0.0"),
    )
    .await;
    create(
        &hpa_v2beta2(&client, &ns.name),
        json!({
            "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podinfo", "labels": {"team": "a", "kustomize.toolkit.fluxcd.io/name": "apps"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}}}],
            }
        }),
    )
    .await;
    let canary = create_canary(
        &client,
        &ns.name,
        TargetKind::Deployment,
        "podinfo",
        Some("podinfo"),
    )
    .await;
    // The workload runs as the controller's ServiceAccount: the shipped RBAC is enough.
    let manifests = repo().join("manifests");
    cp.kubectl_ok(
        &["apply", "--server-side", "-k", manifests.to_str().expect("utf-8")],
        None,
    );
    let sa_kubeconfig = cp.kubeconfig_as(
        "system:serviceaccount:flaggit-system:flaggit",
        "kubeconfig-workload-sa",
    );
    let as_sa = cp.client_from(&sa_kubeconfig).await;
    let workload = for_target(TargetKind::Deployment, as_sa, settings()).expect("Deployment is supported");

    let target = workload.observe(&canary).await.expect("observe");
    assert_eq!(
        (target.selector_label.as_str(), target.selector_value.as_str()),
        ("app", "podinfo")
    );
    assert_eq!(
        target.revision.configs.keys().collect::<Vec<_>>(),
        ["configmap/podinfo-config", "secret/podinfo-secret"],
        "the registry secret is not tracked and the optional missing ConfigMap is skipped"
    );
    let ports: Vec<_> = target
        .discovered_ports
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    assert_eq!(ports, [("http-metrics".to_string(), 9797)]);

    workload.initialize(&canary, &target).await.expect("initialize");
    let primary = deployments.get("podinfo-primary").await.expect("primary exists");
    let owner = &primary.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (canary.uid().unwrap().as_str(), Some(true))
    );
    let labels = primary.labels();
    assert_eq!(labels["app"], "podinfo-primary");
    assert_eq!(labels["team"], "a");
    assert!(!labels.keys().any(|k| k.contains("fluxcd")), "{labels:?}");
    assert!(!primary.annotations().keys().any(|k| k.contains("fluxcd")));
    assert_eq!(primary.annotations()["team/owner"], "ops");
    let spec = primary.spec.clone().unwrap();
    assert_eq!(replicas(&primary), Some(2));
    assert_eq!(
        (spec.min_ready_seconds, spec.progress_deadline_seconds),
        (Some(3), Some(120))
    );
    assert_eq!(spec.selector.match_labels.unwrap()["app"], "podinfo-primary");
    let pod = spec.template.spec.clone().unwrap();
    assert_eq!(
        spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()["app"],
        "podinfo-primary"
    );
    assert!(!flagger_id(&primary).is_empty());
    let container = &pod.containers[0];
    let env_from: Vec<String> = container
        .env_from
        .iter()
        .flatten()
        .map(|e| {
            e.secret_ref
                .as_ref()
                .map(|s| s.name.clone())
                .or_else(|| e.config_map_ref.as_ref().map(|c| c.name.clone()))
                .unwrap()
        })
        .collect();
    assert_eq!(env_from, ["podinfo-secret-primary", "registry", "maybe"]);
    assert_eq!(
        container.env.as_ref().unwrap()[0]
            .value_from
            .as_ref()
            .unwrap()
            .config_map_key_ref
            .as_ref()
            .unwrap()
            .name,
        "podinfo-config-primary"
    );
    assert_eq!(
        pod.volumes.as_ref().unwrap()[0].config_map.as_ref().unwrap().name,
        "podinfo-config-primary"
    );

    // The config copies: same data, owned by the Canary, no GitOps labels.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let source = config_maps.get("podinfo-config").await.unwrap();
    let copy = config_maps
        .get("podinfo-config-primary")
        .await
        .expect("ConfigMap copy");
    assert_eq!(copy.data, source.data);
    assert_eq!(copy.owner_references()[0].uid, canary.uid().unwrap());
    assert_eq!(copy.labels().keys().collect::<Vec<_>>(), ["team"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = secrets.get("podinfo-secret-primary").await.expect("Secret copy");
    assert_eq!(secret.data, secrets.get("podinfo-secret").await.unwrap().data);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert!(secrets.get_opt("registry-primary").await.unwrap().is_none());

    // The primary HPA, written as v2beta2 (all this server serves).
    let hpas = hpa_v2beta2(&client, &ns.name);
    let hpa = hpas.get("podinfo-primary").await.expect("primary HPA");
    assert_eq!(hpa.data["spec"]["scaleTargetRef"]["name"], "podinfo-primary");
    assert_eq!(
        (
            hpa.data["spec"]["minReplicas"].as_i64(),
            hpa.data["spec"]["maxReplicas"].as_i64()
        ),
        (Some(2), Some(4))
    );
    assert_eq!(hpa.data["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(
        hpa.metadata.owner_references.as_ref().unwrap()[0].uid,
        canary.uid().unwrap()
    );
    assert!(!hpa.labels().keys().any(|k| k.contains("fluxcd")));

    // Initialize again leaves the primary alone, and the primary matches the target.
    workload
        .initialize(&canary, &target)
        .await
        .expect("initialize twice");
    let again = deployments.get("podinfo-primary").await.unwrap();
    assert_eq!(flagger_id(&again), flagger_id(&primary));
    assert!(workload.target_matches_primary(&canary, &target).await.unwrap());

    // Promote with an autoscaler: the template and HPA are updated, the replicas the
    // autoscaler set on the primary are kept.
    merge(&deployments, "podinfo-primary", json!({"spec": {"replicas": 3}})).await;
    set_image(&deployments, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1").await;
    assert!(!workload.target_matches_primary(&canary, &target).await.unwrap());
    merge(&hpas, "podinfo", json!({"spec": {"maxReplicas": 6}})).await;
    workload.promote(&canary, &target).await.expect("promote");
    let promoted = deployments.get("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&promoted), "ghcr.io/stefanprodan/podinfo:6.0.1");
    assert_ne!(
        flagger_id(&promoted),
        flagger_id(&primary),
        "a new flagger-id rolls the primary"
    );
    assert_eq!(replicas(&promoted), Some(3));
    assert_eq!(
        hpas.get("podinfo-primary").await.unwrap().data["spec"]["maxReplicas"],
        6
    );
    assert!(workload.target_matches_primary(&canary, &target).await.unwrap());
    ns.delete(&client).await;
}

#[tokio::test]
async fn observe_detects_template_and_config_changes_and_promote_copies_them() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "wl-rev").await;
    create_configs(&client, &ns.name).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    create(
        &deployments,
        deployment_json("podinfo", 3, "ghcr.io/stefanprodan/podinfo:6.0.0"),
    )
    .await;
    let canary = create_canary(&client, &ns.name, TargetKind::Deployment, "podinfo", None).await;
    let workload = for_target(TargetKind::Deployment, client.clone(), settings()).unwrap();

    let first = workload.observe(&canary).await.unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let data = config_maps.get("podinfo-config").await.unwrap().data;
    assert_eq!(
        first.revision.configs["configmap/podinfo-config"],
        config_map_checksum(data.as_ref())
    );
    assert_eq!(
        workload.observe(&canary).await.unwrap().revision,
        first.revision,
        "unchanged target, same hash"
    );
    workload.initialize(&canary, &first).await.unwrap();

    // A template change is a new revision.
    set_image(&deployments, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1").await;
    let second = workload.observe(&canary).await.unwrap();
    assert_ne!(second.revision.hash, first.revision.hash);
    assert_eq!(second.revision.configs, first.revision.configs);
    // Scaling the target is not.
    merge(&deployments, "podinfo", json!({"spec": {"replicas": 0}})).await;
    assert_eq!(workload.observe(&canary).await.unwrap().revision, second.revision);
    merge(&deployments, "podinfo", json!({"spec": {"replicas": 3}})).await;

    // A ConfigMap data change is a new revision, with a new checksum.
    merge(
        &config_maps,
        "podinfo-config",
        json!({"data": {"color": "green"}}),
    )
    .await;
    let third = workload.observe(&canary).await.unwrap();
    assert_ne!(third.revision.hash, second.revision.hash);
    assert_ne!(
        third.revision.configs["configmap/podinfo-config"],
        second.revision.configs["configmap/podinfo-config"]
    );
    assert_eq!(
        third.revision.configs["secret/podinfo-secret"],
        second.revision.configs["secret/podinfo-secret"]
    );

    // Promote copies the template, the settings and the config data.
    workload.promote(&canary, &third).await.unwrap();
    let primary = deployments.get("podinfo-primary").await.unwrap();
    assert_eq!(image_of(&primary), "ghcr.io/stefanprodan/podinfo:6.0.1");
    assert_eq!(
        replicas(&primary),
        Some(3),
        "without an autoscaler the target's replicas are copied"
    );
    let copy = config_maps.get("podinfo-config-primary").await.unwrap();
    assert_eq!(copy.data.unwrap()["color"], "green");

    // What the target drops, the promoted primary drops too.
    let remove = json!([
        {"op": "remove", "path": "/spec/template/spec/containers/0/volumeMounts"},
        {"op": "remove", "path": "/spec/template/spec/volumes"},
    ]);
    deployments
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::<Value>::Json(serde_json::from_value(remove).unwrap()),
        )
        .await
        .expect("json patch applies");
    workload.promote(&canary, &third).await.unwrap();
    let primary = deployments.get("podinfo-primary").await.unwrap();
    let pod = primary.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        (pod.volumes, pod.containers[0].volume_mounts.clone()),
        (None, None)
    );

    // Opting a ConfigMap out of tracking removes it from the revision.
    merge(
        &config_maps,
        "podinfo-config",
        json!({"metadata": {"annotations": {"flagger.app/config-tracking": "disabled"}}}),
    )
    .await;
    let fourth = workload.observe(&canary).await.unwrap();
    assert_eq!(
        fourth.revision.configs.keys().collect::<Vec<_>>(),
        ["secret/podinfo-secret"]
    );
    assert_ne!(fourth.revision.hash, third.revision.hash);
    ns.delete(&client).await;
}

#[tokio::test]
async fn readiness_follows_the_deployment_status() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "wl-ready").await;
    create_configs(&client, &ns.name).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    create(&deployments, deployment_json("podinfo", 2, "podinfo:1")).await;
    let canary = create_canary(&client, &ns.name, TargetKind::Deployment, "podinfo", None).await;
    let workload = for_target(TargetKind::Deployment, client.clone(), settings()).unwrap();
    let now = jiff::Timestamp::now();

    let waiting = |r: Readiness| match r {
        Readiness::Waiting(text) => text,
        other => panic!("expected Waiting, got {other:?}"),
    };
    // No status written yet: the (absent) deployment controller has not observed it.
    let text = waiting(workload.canary_ready(&canary, now).await.unwrap());
    assert!(text.contains("observed deployment generation"), "{text}");
    assert!(waiting(workload.primary_ready(&canary, now).await.unwrap()).contains("does not exist"));

    let status = |updated: i32, available: i32| {
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": updated, "readyReplicas": available,
               "availableReplicas": available})
    };
    set_status(&deployments, "podinfo", status(1, 1)).await;
    let text = waiting(workload.canary_ready(&canary, now).await.unwrap());
    assert!(
        text.starts_with(&format!("canary deployment {}/podinfo not ready", ns.name)),
        "{text}"
    );
    assert!(text.contains("1 out of 2 new replicas"), "{text}");
    set_status(&deployments, "podinfo", status(2, 0)).await;
    assert!(
        waiting(workload.canary_ready(&canary, now).await.unwrap()).contains("0 of 1 (readyThreshold 50%)")
    );
    set_status(&deployments, "podinfo", status(2, 1)).await;
    assert_eq!(
        workload.canary_ready(&canary, now).await.unwrap(),
        Readiness::Ready,
        "50% is enough for the canary"
    );

    // The primary needs 100%.
    let target = workload.observe(&canary).await.unwrap();
    workload.initialize(&canary, &target).await.unwrap();
    let generation = deployments
        .get("podinfo-primary")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    set_status(
        &deployments,
        "podinfo-primary",
        json!({"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1,
               "availableReplicas": 1}),
    )
    .await;
    assert!(
        waiting(workload.primary_ready(&canary, now).await.unwrap()).contains("1 of 2 (readyThreshold 100%)")
    );
    set_status(
        &deployments,
        "podinfo-primary",
        json!({"readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;
    assert_eq!(
        workload.primary_ready(&canary, now).await.unwrap(),
        Readiness::Ready
    );

    // A primary scaled to zero is not ready (Flagger's check never fires).
    merge(&deployments, "podinfo-primary", json!({"spec": {"replicas": 0}})).await;
    assert!(waiting(workload.primary_ready(&canary, now).await.unwrap()).contains("scaled to zero"));

    // Progress deadline exceeded: the rollout failed.
    set_status(
        &deployments,
        "podinfo",
        json!({"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                "lastUpdateTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
    )
    .await;
    match workload.canary_ready(&canary, now).await.unwrap() {
        Readiness::Failed(text) => assert!(text.contains("progress deadline"), "{text}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    ns.delete(&client).await;
}

#[tokio::test]
async fn scale_to_and_from_zero_and_finalize() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "wl-scale").await;
    create_configs(&client, &ns.name).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    create(&deployments, deployment_json("podinfo", 3, "podinfo:1")).await;
    let canary = create_canary(&client, &ns.name, TargetKind::Deployment, "podinfo", None).await;
    let workload = for_target(TargetKind::Deployment, client.clone(), settings()).unwrap();
    let target = workload.observe(&canary).await.unwrap();
    workload.initialize(&canary, &target).await.unwrap();
    assert_eq!(
        replicas(&deployments.get("podinfo-primary").await.unwrap()),
        Some(3)
    );

    workload.scale_to_zero(&canary).await.unwrap();
    let scaled = deployments.get("podinfo").await.unwrap();
    assert_eq!(replicas(&scaled), Some(0));
    // Written without a field manager of ours: the GitOps tool's apply will not conflict.
    let managers: Vec<_> = scaled
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.iter().any(|m| m == flaggit::objects::FIELD_MANAGER),
        "{managers:?}"
    );

    // From zero: the target has none, there is no autoscaler, so the primary's count.
    let at_zero = workload.observe(&canary).await.unwrap();
    workload.scale_from_zero(&canary, &at_zero).await.unwrap();
    assert_eq!(replicas(&deployments.get("podinfo").await.unwrap()), Some(3));

    // Finalize: the target gets the primary's replicas.
    workload.scale_to_zero(&canary).await.unwrap();
    merge(&deployments, "podinfo-primary", json!({"spec": {"replicas": 4}})).await;
    workload.finalize(&canary).await.unwrap();
    assert_eq!(replicas(&deployments.get("podinfo").await.unwrap()), Some(4));

    // Without a primary, finalize scales from zero (to one here).
    workload.scale_to_zero(&canary).await.unwrap();
    deployments
        .delete("podinfo-primary", &Default::default())
        .await
        .unwrap();
    workload.finalize(&canary).await.unwrap();
    assert_eq!(replicas(&deployments.get("podinfo").await.unwrap()), Some(1));
    ns.delete(&client).await;
}

#[tokio::test]
async fn daemonset_primary_scale_to_zero_and_readiness() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "wl-ds").await;
    create_configs(&client, &ns.name).await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    create(
        &daemonsets,
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "labels": {"name": "agent"}},
            "spec": {"selector": {"matchLabels": {"name": "agent"}}, "template": {
                "metadata": {"labels": {"name": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": "agent:1",
                    "envFrom": [{"configMapRef": {"name": "podinfo-config"}}]}]}}}
        }),
    )
    .await;
    let canary = create_canary(&client, &ns.name, TargetKind::DaemonSet, "agent", None).await;
    let workload = for_target(TargetKind::DaemonSet, client.clone(), settings()).unwrap();
    let target = workload.observe(&canary).await.unwrap();
    assert_eq!(
        (target.selector_label.as_str(), target.selector_value.as_str()),
        ("name", "agent")
    );
    workload.initialize(&canary, &target).await.unwrap();
    let primary = daemonsets.get("agent-primary").await.expect("primary DaemonSet");
    let spec = primary.spec.unwrap();
    assert_eq!(spec.selector.match_labels.unwrap()["name"], "agent-primary");
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.containers[0].env_from.as_ref().unwrap()[0]
            .config_map_ref
            .as_ref()
            .unwrap()
            .name,
        "podinfo-config-primary"
    );
    assert_eq!(
        primary.metadata.owner_references.unwrap()[0].uid,
        canary.uid().unwrap()
    );

    let node_selector = |ds: DaemonSet| {
        ds.spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .node_selector
            .unwrap_or_default()
    };
    workload.scale_to_zero(&canary).await.unwrap();
    let scaled = daemonsets.get("agent").await.unwrap();
    assert_eq!(node_selector(scaled)[SCALE_TO_ZERO_KEY], "true");
    assert_eq!(
        workload.observe(&canary).await.unwrap().revision,
        target.revision,
        "scale to zero is not a revision"
    );
    // Promoting a scaled-down target does not scale the primary down.
    workload.promote(&canary, &target).await.unwrap();
    assert!(!node_selector(daemonsets.get("agent-primary").await.unwrap()).contains_key(SCALE_TO_ZERO_KEY));
    let at_zero = workload.observe(&canary).await.unwrap();
    workload.scale_from_zero(&canary, &at_zero).await.unwrap();
    assert!(!node_selector(daemonsets.get("agent").await.unwrap()).contains_key(SCALE_TO_ZERO_KEY));
    workload.scale_to_zero(&canary).await.unwrap();
    workload.finalize(&canary).await.unwrap();
    assert!(!node_selector(daemonsets.get("agent").await.unwrap()).contains_key(SCALE_TO_ZERO_KEY));

    let now = jiff::Timestamp::now();
    let generation = daemonsets
        .get("agent")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    let status = |updated: i32, available: i32| {
        json!({"observedGeneration": generation, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
               "numberMisscheduled": 0, "numberReady": available, "updatedNumberScheduled": updated,
               "numberAvailable": available})
    };
    set_status(&daemonsets, "agent", status(1, 1)).await;
    match workload.canary_ready(&canary, now).await.unwrap() {
        Readiness::Waiting(text) => assert!(text.contains("1 out of 2 new pods"), "{text}"),
        other => panic!("expected Waiting, got {other:?}"),
    }
    set_status(&daemonsets, "agent", status(2, 1)).await;
    assert_eq!(
        workload.canary_ready(&canary, now).await.unwrap(),
        Readiness::Ready,
        "canary threshold 50%"
    );
    ns.delete(&client).await;
}

#[tokio::test]
async fn missing_target_selector_label_or_config_is_an_error_that_says_so() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "wl-err").await;
    let canary = create_canary(&client, &ns.name, TargetKind::Deployment, "podinfo", None).await;
    let workload = for_target(TargetKind::Deployment, client.clone(), settings()).unwrap();
    let err = workload.observe(&canary).await.unwrap_err();
    assert!(matches!(err, Error::TargetNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "Deployment {}/podinfo not found: create it or fix spec.targetRef",
            ns.name
        )
    );
    assert!(matches!(
        workload.scale_to_zero(&canary).await,
        Err(Error::TargetNotFound { .. })
    ));

    // A required ConfigMap that does not exist.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    create(&deployments, deployment_json("podinfo", 1, "podinfo:1")).await;
    let err = workload.observe(&canary).await.unwrap_err();
    assert_eq!(err.category(), "ConfigNotFound");
    assert!(
        err.to_string().contains(&format!(
            "ConfigMap {}/podinfo-config used by Deployment",
            ns.name
        )),
        "{err}"
    );

    // A selector with none of the selector labels.
    let mut other = deployment_json("web", 1, "web:1");
    other["spec"]["selector"] = json!({"matchLabels": {"tier": "web"}});
    other["spec"]["template"]["metadata"]["labels"] = json!({"tier": "web"});
    create(&deployments, other).await;
    let web = create_canary(&client, &ns.name, TargetKind::Deployment, "web", None).await;
    let err = workload.observe(&web).await.unwrap_err();
    assert_eq!(err.category(), "NoSelectorLabel");
    assert_eq!(
        err.to_string(),
        format!(
            "spec.selector.matchLabels of Deployment {}/web must contain one of app, name, app.kubernetes.io/name \
             (flag --selector-labels)",
            ns.name
        )
    );
    ns.delete(&client).await;
}
