//! The rollout engine end to end: a real API server, a real Prometheus scraping the test
//! metrics app, and `flaggit run` as a child process. The tests play the kubelet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, PodSpec, PodTemplateSpec, Service, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use flaggit::api::{
    Canary, CanaryAnalysis, CanaryMetric, CanaryPhase, CanaryService, CanarySpec,
    CrossNamespaceObjectReference, HttpMatchRequest, Provider, StringMatch, TargetRef, ThresholdRange,
};

use crate::kubelet::{Kubelet, Pods};
use crate::metrics_app::{MetricsApp, metrics_app, prometheus};
use crate::support::{ControlPlane, Flaggit, TestNamespace, control_plane};

/// One test's world: a namespace, the kubelet, the traffic, and a controller watching it.
pub(crate) struct Rig {
    pub(crate) client: Client,
    pub(crate) ns: TestNamespace,
    kubelet: Kubelet,
    app: &'static MetricsApp,
    flaggit: Option<Flaggit>,
    prometheus_url: String,
    extra: Vec<String>,
    cp: &'static ControlPlane,
}

impl Rig {
    async fn new(prefix: &str) -> Self {
        Self::with_args(prefix, &[]).await
    }

    /// A rig whose controller gets `extra` flags.
    pub(crate) async fn with_args(prefix: &str, extra: &[String]) -> Self {
        let name = TestNamespace::unique_name(prefix);
        Self::on(control_plane(), &name, extra).await
    }

    /// A rig on the control plane `cp` (one cluster of several), in the namespace `namespace`.
    pub(crate) async fn on(cp: &'static ControlPlane, namespace: &str, extra: &[String]) -> Self {
        cp.install_routing_crds();
        Self::without_routing_crds(cp, namespace, extra).await
    }

    /// A rig on `cp` that installs flaggit's CRDs only: the routing CRDs are the test's business.
    pub(crate) async fn without_routing_crds(
        cp: &'static ControlPlane,
        namespace: &str,
        extra: &[String],
    ) -> Self {
        cp.install_crds();
        let client = cp.client().await;
        let ns = TestNamespace::create_named(&client, namespace).await;
        let kubelet = Kubelet::start(client.clone(), &ns.name);
        let app = metrics_app();
        let prometheus_url = prometheus().url().to_string();
        let mut rig = Self {
            client,
            ns,
            kubelet,
            app,
            flaggit: None,
            prometheus_url,
            extra: extra.to_vec(),
            cp,
        };
        rig.start_controller();
        rig
    }

    pub(crate) fn start_controller(&mut self) {
        let cp = self.cp;
        let mut args: Vec<&str> = vec![
            "--leader-election",
            "false",
            "--namespace",
            &self.ns.name,
            "--mesh-provider",
            "istio",
            "--metrics-server",
            &self.prometheus_url,
            "--min-analysis-interval",
            "1s",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        self.flaggit = Some(Flaggit::start(&cp.kubeconfig, &args));
    }

    /// Restarts the controller with `extra` flags in place of the ones it had.
    pub(crate) fn restart_with(&mut self, extra: &[String]) {
        if let Some(flaggit) = self.flaggit.take() {
            let _ = flaggit.terminate(std::time::Duration::from_secs(10));
        }
        self.extra = extra.to_vec();
        self.start_controller();
    }

    /// Stops the controller the hard way (SIGKILL), as a crash would.
    pub(crate) fn kill_controller(&mut self) {
        if let Some(mut flaggit) = self.flaggit.take() {
            let _ = flaggit.child.kill();
            let _ = flaggit.child.wait();
        }
    }

    pub(crate) fn flaggit(&self) -> &Flaggit {
        self.flaggit.as_ref().expect("the controller runs")
    }

    pub(crate) fn canaries(&self) -> Api<Canary> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub(crate) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Good traffic for the canary pods of `workload`, once Prometheus has a success rate
    /// for it.
    pub(crate) async fn healthy(&self, workload: &str) {
        self.app.set(
            &self.ns.name,
            workload,
            &format!("{workload}-7d4b9c-x2x9z"),
            20.0,
            0.0,
            20,
        );
        let query = format!(
            "sum(rate(istio_requests_total{{destination_workload_namespace=\"{}\",destination_workload=\"{workload}\"}}[10s]))",
            self.ns.name
        );
        prometheus().wait_for_value(&query, Duration::from_secs(60)).await;
    }

    /// Traffic where half of the canary's requests fail.
    pub(crate) fn failing(&self, workload: &str) {
        self.app.set(
            &self.ns.name,
            workload,
            &format!("{workload}-7d4b9c-x2x9z"),
            20.0,
            0.5,
            20,
        );
    }

    /// Healthy traffic, the podinfo Deployment at 6.0.0 and `canary` for it, initialized.
    pub(crate) async fn initialize_podinfo(&self, canary: Canary) {
        self.healthy("podinfo").await;
        self.create(deployment("podinfo", "podinfo:6.0.0", None), canary)
            .await;
        self.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(60))
            .await;
    }

    pub(crate) async fn create(&self, deployment: Deployment, canary: Canary) {
        self.deployments()
            .create(&PostParams::default(), &deployment)
            .await
            .expect("create the deployment");
        self.canaries()
            .create(&PostParams::default(), &canary)
            .await
            .expect("create the canary");
    }

    /// Waits for `phase`, recording every canary weight seen on the way.
    pub(crate) async fn wait_phase(
        &self,
        name: &str,
        phase: CanaryPhase,
        timeout: Duration,
    ) -> (Canary, Vec<i32>) {
        let start = Instant::now();
        let mut weights = Vec::new();
        loop {
            if let Ok(canary) = self.canaries().get(name).await {
                let status = canary.status.clone().unwrap_or_default();
                if let Some(w) = status.canary_weight
                    && weights.last() != Some(&w)
                {
                    weights.push(w);
                }
                if status.phase == Some(phase) {
                    return (canary, weights);
                }
            }
            assert!(
                start.elapsed() < timeout,
                "canary {name} did not reach {phase:?} in {timeout:?}; status {:#?}\nlog:\n{}",
                self.canaries().get(name).await.ok().and_then(|c| c.status),
                self.flaggit().log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn set_image(&self, name: &str, image: &str) {
        let patch =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        self.deployments()
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .expect("patch the image");
    }

    pub(crate) async fn image_of(&self, name: &str) -> String {
        let deployment = self.deployments().get(name).await.expect("deployment");
        deployment
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
            .unwrap_or_default()
    }

    pub(crate) async fn replicas_of(&self, name: &str) -> i32 {
        let deployment = self.deployments().get(name).await.expect("deployment");
        deployment.spec.and_then(|s| s.replicas).unwrap_or(-1)
    }

    /// The messages of the canary's events, oldest first.
    pub(crate) async fn events(&self, name: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut events: Vec<_> = api
            .list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect();
        events.sort_by_key(|e| (e.first_timestamp.clone().map(|t| t.0), e.metadata.name.clone()));
        events.into_iter().filter_map(|e| e.message).collect()
    }

    pub(crate) async fn finish(mut self) {
        if let Some(flaggit) = self.flaggit.take() {
            let _ = flaggit.terminate(Duration::from_secs(10));
        }
        for workload in ["podinfo", "good"] {
            self.app
                .stop(&self.ns.name, workload, &format!("{workload}-7d4b9c-x2x9z"));
        }
        self.ns.delete(&self.client).await;
    }
}

/// A query with a value only while the Istio success rate of `workload` meets `condition`
/// (for example `< 99`), over the window the canaries' checks use.
pub(crate) fn success_rate_where(namespace: &str, workload: &str, condition: &str) -> String {
    let requests = |extra: &str| {
        format!(
            "sum(rate(istio_requests_total{{destination_workload_namespace=\"{namespace}\",destination_workload=\"{workload}\"{extra}}}[10s]))"
        )
    };
    format!(
        "{} / {} * 100 {condition}",
        requests(",response_code!~\"5.*\""),
        requests("")
    )
}

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

/// A Deployment `name` with label `app: name`, running `image`, optionally mounting the
/// ConfigMap `config`.
pub(crate) fn deployment(name: &str, image: &str, config: Option<&str>) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels(name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some(image.into()),
                        ports: Some(vec![ContainerPort {
                            container_port: 9898,
                            name: Some("http".into()),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    volumes: config.map(|c| {
                        vec![Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: c.into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn success_rate(min: f64) -> CanaryMetric {
    CanaryMetric {
        name: "request-success-rate".into(),
        interval: Some("10s".into()),
        threshold_range: Some(ThresholdRange {
            min: Some(min),
            max: None,
        }),
        ..Default::default()
    }
}

pub(crate) fn analysis() -> CanaryAnalysis {
    CanaryAnalysis {
        interval: Some("1s".into()),
        threshold: Some(2),
        metrics: Some(vec![success_rate(99.0)]),
        ..Default::default()
    }
}

pub(crate) fn canary_of(target: &str, provider: Provider, analysis: CanaryAnalysis) -> Canary {
    Canary::new(
        target,
        CanarySpec {
            provider: Some(provider),
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: Default::default(),
                name: target.into(),
            },
            progress_deadline_seconds: Some(60),
            service: Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            analysis: Some(analysis),
            ..Default::default()
        },
    )
}

pub(crate) fn stepping(step: i32, max: i32) -> CanaryAnalysis {
    CanaryAnalysis {
        step_weight: Some(step),
        max_weight: Some(max),
        ..analysis()
    }
}

/// The weights of the VirtualService route to `<name>-primary` and `<name>-canary`.
async fn istio_weights(client: &Client, ns: &str, name: &str) -> Option<(i64, i64)> {
    let vs = virtual_services(client, ns).get(name).await.ok()?;
    let routes = vs.data["spec"]["http"][0]["route"].as_array()?.clone();
    let weight = |host: String| {
        routes
            .iter()
            .find(|r| r["destination"]["host"] == host)
            .and_then(|r| r["weight"].as_i64())
            .unwrap_or(0)
    };
    Some((
        weight(format!("{name}-primary")),
        weight(format!("{name}-canary")),
    ))
}

#[tokio::test]
async fn a_healthy_canary_steps_to_max_weight_and_is_promoted() {
    let rig = Rig::new("rollout-ok").await;
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, stepping(20, 60)))
        .await;
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.0");
    assert_eq!(
        rig.replicas_of("podinfo").await,
        0,
        "the target is scaled to zero"
    );
    let services: Api<Service> = Api::namespaced(rig.client.clone(), &rig.ns.name);
    for name in ["podinfo", "podinfo-primary", "podinfo-canary"] {
        services
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("service {name}: {e}"));
    }
    assert_eq!(
        istio_weights(&rig.client, &rig.ns.name, "podinfo").await,
        Some((100, 0))
    );

    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let (canary, weights) = rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    assert_eq!(
        weights.iter().filter(|w| **w > 0).copied().collect::<Vec<_>>(),
        [20, 40, 60],
        "{weights:?}"
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    assert_eq!(rig.replicas_of("podinfo").await, 0, "the canary is scaled down");
    assert_eq!(
        istio_weights(&rig.client, &rig.ns.name, "podinfo").await,
        Some((100, 0))
    );
    let status = canary.status.expect("status");
    assert_eq!(status.last_applied_spec, status.last_promoted_spec);
    let events = rig.events("podinfo").await;
    for expected in [
        "New revision detected! Scaling up podinfo.",
        "Starting canary analysis for podinfo.",
        "Advance podinfo.",
        "Copying podinfo.",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down podinfo.",
    ] {
        assert!(
            events.iter().any(|e| e.starts_with(expected)),
            "no {expected:?} in {events:#?}"
        );
    }
    let metrics = rig.flaggit().get("/metrics").expect("metrics").1;
    assert!(
        metrics.contains(&format!(
            "flagger_canary_successes_total{{name=\"podinfo\",namespace=\"{}\",deployment_strategy=\"canary\",analysis_status=\"completed\"}} 1",
            rig.ns.name
        )),
        "{metrics}"
    );
    assert!(metrics.contains("flagger_canary_metric_analysis{"), "{metrics}");
    rig.finish().await;
}

#[tokio::test]
async fn a_failing_canary_is_rolled_back_at_the_threshold_and_retried_on_request() {
    let rig = Rig::new("rollout-fail").await;
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, stepping(10, 50)))
        .await;
    rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&rig.ns.name, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let (canary, _) = rig
        .wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(90))
        .await;
    let status = canary.status.expect("status");
    assert_eq!(
        status.failed_checks,
        Some(2),
        "rolled back on the tick that reached the threshold"
    );
    assert_eq!(
        rig.image_of("podinfo-primary").await,
        "podinfo:6.0.0",
        "never promoted"
    );
    assert_eq!(rig.replicas_of("podinfo").await, 0);
    assert_eq!(
        istio_weights(&rig.client, &rig.ns.name, "podinfo").await,
        Some((100, 0))
    );
    let events = rig.events("podinfo").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Halt podinfo.") && e.contains("success rate")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Rolling back podinfo.")
                && e.ends_with("failed checks threshold reached 2"))
    );

    // Nothing happens on its own: a failed revision is not retried ...
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rig.canaries()
            .get("podinfo")
            .await
            .expect("canary")
            .status
            .and_then(|s| s.phase),
        Some(CanaryPhase::Failed)
    );
    // ... until the retry annotation asks for it, without touching the pod template.
    rig.healthy("podinfo").await;
    prometheus()
        .wait_for_value(
            &success_rate_where(&rig.ns.name, "podinfo", ">= 99"),
            Duration::from_secs(60),
        )
        .await;
    let retry = |canary: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flaggit"))
            .args(["retry", &canary, "--kubeconfig"])
            .arg(&control_plane().kubeconfig)
            .output()
            .expect("flaggit retry runs")
    };
    let bad = retry("podinfo".into());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("write it as <namespace>/<name>"));
    let done = retry(format!("{}/podinfo", rig.ns.name));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(String::from_utf8_lossy(&done.stdout).contains("retry of"));
    rig.wait_phase("podinfo", CanaryPhase::Progressing, Duration::from_secs(30))
        .await;
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    // A canary that has not failed has nothing to retry.
    let again = retry(format!("{}/podinfo", rig.ns.name));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not Failed"));
    rig.finish().await;
}

#[tokio::test]
async fn progress_deadline_rolls_back() {
    let rig = Rig::new("rollout-deadline").await;
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, stepping(10, 50)))
        .await;
    rig.kubelet.set("podinfo", Pods::Stuck);
    rig.set_image("podinfo", "podinfo:broken").await;
    rig.wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(60))
        .await;
    let events = rig.events("podinfo").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Rolling back podinfo.") && e.contains("progress deadline exceeded")),
        "{events:#?}"
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.0");
    rig.finish().await;
}

#[tokio::test]
async fn ab_testing_routes_matching_requests_then_promotes() {
    let rig = Rig::new("rollout-ab").await;
    let analysis = CanaryAnalysis {
        iterations: Some(3),
        match_: Some(vec![HttpMatchRequest {
            headers: Some(BTreeMap::from([(
                "x-canary".to_string(),
                StringMatch {
                    exact: Some("insider".into()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        }]),
        ..analysis()
    };
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, analysis))
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    // While iterating, the first route matches the header and sends it to the canary.
    let start = Instant::now();
    let matched = loop {
        let canary = rig.canaries().get("podinfo").await.expect("canary");
        if canary.status.as_ref().and_then(|s| s.iterations).unwrap_or(0) > 0 {
            break virtual_service(&rig.client, &rig.ns.name, "podinfo").await;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no iteration started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        matched["spec"]["http"][0]["match"][0]["headers"]["x-canary"]["exact"], "insider",
        "{matched:#}"
    );
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let events = rig.events("podinfo").await;
    assert!(
        events.iter().any(|e| e.ends_with("canary iteration 3/3")),
        "{events:#?}"
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    rig.finish().await;
}

async fn virtual_service(client: &Client, ns: &str, name: &str) -> serde_json::Value {
    virtual_services(client, ns)
        .get(name)
        .await
        .expect("virtual service")
        .data
}

/// The Istio VirtualServices of `ns`, read as flaggit's router writes them.
fn virtual_services(client: &Client, ns: &str) -> Api<kube::api::DynamicObject> {
    let (group, version, kind, plural) = flaggit::router::VIRTUAL_SERVICE;
    let resource = kube::api::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

#[tokio::test]
async fn blue_green_with_the_kubernetes_provider() {
    let rig = Rig::new("rollout-bg").await;
    let analysis = CanaryAnalysis {
        iterations: Some(2),
        ..analysis()
    };
    rig.initialize_podinfo(canary_of("podinfo", Provider::Kubernetes, analysis))
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let events = rig.events("podinfo").await;
    assert!(
        events.iter().any(|e| e.ends_with("canary iteration 2/2")),
        "{events:#?}"
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    // The apex Service selects the primary pods throughout.
    let services: Api<Service> = Api::namespaced(rig.client.clone(), &rig.ns.name);
    let apex = services.get("podinfo").await.expect("apex");
    assert_eq!(
        apex.spec.and_then(|s| s.selector),
        Some(labels("podinfo-primary"))
    );
    rig.finish().await;
}

#[tokio::test]
async fn mirroring_shadows_traffic_before_shifting_it() {
    let rig = Rig::new("rollout-mirror").await;
    let analysis = CanaryAnalysis {
        mirror: Some(true),
        mirror_weight: Some(50),
        ..stepping(25, 50)
    };
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, analysis))
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let start = Instant::now();
    let mirrored = loop {
        let vs = virtual_service(&rig.client, &rig.ns.name, "podinfo").await;
        if vs["spec"]["http"][0].get("mirror").is_some() {
            break vs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never mirrored: {vs:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        mirrored["spec"]["http"][0]["mirrorPercentage"]["value"], 50.0,
        "{mirrored:#}"
    );
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let vs = virtual_service(&rig.client, &rig.ns.name, "podinfo").await;
    assert!(vs["spec"]["http"][0].get("mirror").is_none(), "{vs:#}");
    rig.finish().await;
}

#[tokio::test]
async fn a_configmap_change_starts_a_rollout_and_a_revert_starts_none() {
    let rig = Rig::new("rollout-config").await;
    rig.healthy("podinfo").await;
    let configs: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &rig.ns.name);
    let config = |value: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some("podinfo-config".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("level".to_string(), value.to_string())])),
        ..Default::default()
    };
    configs
        .create(&PostParams::default(), &config("info"))
        .await
        .expect("create config");
    // Many small steps: the revert below must land mid-rollout even on a busy machine.
    rig.create(
        deployment("podinfo", "podinfo:6.0.0", Some("podinfo-config")),
        canary_of("podinfo", Provider::Istio, stepping(5, 95)),
    )
    .await;
    rig.wait_phase("podinfo", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;
    configs
        .get("podinfo-config-primary")
        .await
        .expect("the primary gets its own copy");

    let changed = Instant::now();
    configs
        .replace("podinfo-config", &PostParams::default(), &{
            let mut c = configs.get("podinfo-config").await.expect("config");
            c.data = config("debug").data;
            c
        })
        .await
        .expect("change config");
    rig.wait_phase("podinfo", CanaryPhase::Progressing, Duration::from_secs(10))
        .await;
    eprintln!("config change detected in {:?}", changed.elapsed());
    assert!(
        changed.elapsed() < Duration::from_secs(3),
        "detected through the watch, not a poll"
    );
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(240))
        .await;
    let primary_config = configs
        .get("podinfo-config-primary")
        .await
        .expect("primary config");
    assert_eq!(
        primary_config
            .data
            .and_then(|d| d.get("level").cloned())
            .as_deref(),
        Some("debug")
    );

    // A new image, then back to the promoted one mid-rollout: the rollout ends, nothing promoted.
    let before = rig.events("podinfo").await.len();
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    rig.wait_phase("podinfo", CanaryPhase::Progressing, Duration::from_secs(10))
        .await;
    rig.set_image("podinfo", "podinfo:6.0.0").await;
    let (canary, _) = rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(120))
        .await;
    let events = rig.events("podinfo").await;
    assert!(
        events[before..]
            .iter()
            .any(|e| e.contains("back at the promoted revision")),
        "{events:#?}"
    );
    assert!(
        !events[before..].iter().any(|e| e.starts_with("Copying")),
        "{events:#?}"
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.0");
    let status = canary.status.expect("status");
    assert_eq!(status.last_applied_spec, status.last_promoted_spec);
    // And it stays that way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rig.canaries().get("podinfo").await.expect("canary");
    assert_eq!(after.status.and_then(|s| s.phase), Some(CanaryPhase::Succeeded));
    rig.finish().await;
}

#[tokio::test]
async fn suspend_pauses_mid_rollout_and_resume_continues() {
    let rig = Rig::new("rollout-suspend").await;
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, stepping(10, 100)))
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let start = Instant::now();
    while rig
        .canaries()
        .get("podinfo")
        .await
        .ok()
        .and_then(|c| c.status.and_then(|s| s.canary_weight))
        .unwrap_or(0)
        < 20
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never reached weight 20"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let suspend = |on: bool| json!({"spec": {"suspend": on}});
    rig.canaries()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&suspend(true)))
        .await
        .expect("suspend");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = rig
        .canaries()
        .get("podinfo")
        .await
        .expect("canary")
        .status
        .expect("status");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = rig
        .canaries()
        .get("podinfo")
        .await
        .expect("canary")
        .status
        .expect("status");
    assert_eq!(later.canary_weight, held.canary_weight, "no step while suspended");
    assert_eq!(later.phase, Some(CanaryPhase::Progressing));
    let events = rig.events("podinfo").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "skipping canary run as object is suspended")
            .count(),
        1,
        "suspension is reported once: {events:#?}"
    );
    rig.canaries()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&suspend(false)))
        .await
        .expect("resume");
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    rig.finish().await;
}

#[tokio::test]
async fn a_killed_controller_resumes_at_the_same_step_without_double_promotion() {
    let mut rig = Rig::new("rollout-kill").await;
    let analysis = CanaryAnalysis {
        interval: Some("2s".into()),
        ..stepping(10, 60)
    };
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, analysis))
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let start = Instant::now();
    let weight = loop {
        let w = rig
            .canaries()
            .get("podinfo")
            .await
            .ok()
            .and_then(|c| c.status.and_then(|s| s.canary_weight))
            .unwrap_or(0);
        if w >= 30 {
            break w;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never reached weight 30"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut killed = rig.flaggit.take().expect("controller");
    killed.child.kill().expect("SIGKILL the controller");
    let _ = killed.child.wait();
    drop(killed);
    let routes = istio_weights(&rig.client, &rig.ns.name, "podinfo")
        .await
        .expect("routes");
    assert_eq!(
        routes.1,
        i64::from(weight),
        "the routes hold the step while nobody acts"
    );
    rig.start_controller();
    let (_, weights) = rig
        .wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;
    let shifted: Vec<i32> = weights.iter().copied().filter(|w| *w > 0).collect();
    assert!(
        shifted.windows(2).all(|w| w[1] == w[0] + 10),
        "steps continue one by one: {weights:?}"
    );
    assert_eq!(
        shifted.first(),
        Some(&weight),
        "resumed at the step it was at: {weights:?}"
    );
    // The event follows the status write that says Succeeded; give it a moment under load.
    let completed = |events: &[String]| {
        events
            .iter()
            .filter(|e| e.starts_with("Promotion completed!"))
            .count()
    };
    let start = std::time::Instant::now();
    let mut events = rig.events("podinfo").await;
    while completed(&events) == 0 && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        events = rig.events("podinfo").await;
    }
    assert_eq!(completed(&events), 1, "{events:#?}");
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    rig.finish().await;
}

#[tokio::test]
async fn revert_on_deletion_restores_the_target_without_a_gap() {
    let rig = Rig::new("rollout-revert").await;
    let mut canary = canary_of("podinfo", Provider::Istio, stepping(50, 50));
    canary.spec.revert_on_deletion = Some(true);
    rig.initialize_podinfo(canary).await;
    assert!(
        rig.canaries()
            .get("podinfo")
            .await
            .expect("canary")
            .finalizers()
            .contains(&"finalizer.flagger.app".to_string())
    );
    // The target's pods take a while to become ready once scaled back up.
    rig.kubelet.set("podinfo", Pods::Pending);
    rig.canaries()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete");
    let services: Api<Service> = Api::namespaced(rig.client.clone(), &rig.ns.name);
    let start = Instant::now();
    let mut released = false;
    loop {
        let selector = services
            .get("podinfo")
            .await
            .ok()
            .and_then(|s| s.spec.and_then(|s| s.selector))
            .unwrap_or_default();
        let backing = selector.get("app").cloned().unwrap_or_default();
        if let Ok(d) = rig.deployments().get(&backing).await {
            let ready = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            assert!(
                ready > 0,
                "the apex Service selects {backing}, which has no ready pods"
            );
        }
        if backing == "podinfo" {
            break;
        }
        if !released && start.elapsed() > Duration::from_secs(3) {
            // Still selecting the primary while the target is not ready: now let it be ready.
            rig.kubelet.set("podinfo", Pods::Ready);
            released = true;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the apex never came back to the target"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released, "switched to the target before its pods were ready");
    // The canary goes away once the target serves.
    let start = Instant::now();
    while rig.canaries().get_opt("podinfo").await.expect("get").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the canary was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rig.replicas_of("podinfo").await > 0);
    rig.finish().await;
}

/// Bad input is reported in the canary's status and events, and holds up nothing else.
#[tokio::test]
async fn bad_canaries_report_what_is_wrong_and_leave_others_alone() {
    let rig = Rig::new("rollout-bad").await;
    rig.healthy("good").await;
    // A healthy canary beside the bad ones.
    rig.create(
        deployment("good", "good:1", None),
        canary_of("good", Provider::Istio, stepping(50, 50)),
    )
    .await;

    // The target does not exist.
    rig.canaries()
        .create(
            &PostParams::default(),
            &canary_of("missing", Provider::Istio, stepping(10, 50)),
        )
        .await
        .expect("create");
    // The selector has none of the selector labels.
    let mut unlabelled = deployment("unlabelled", "x:1", None);
    let spec = unlabelled.spec.as_mut().expect("spec");
    spec.selector.match_labels = Some(BTreeMap::from([("tier".to_string(), "web".to_string())]));
    spec.template.metadata = Some(ObjectMeta {
        labels: Some(BTreeMap::from([("tier".to_string(), "web".to_string())])),
        ..Default::default()
    });
    rig.create(
        unlabelled,
        canary_of("unlabelled", Provider::Istio, stepping(10, 50)),
    )
    .await;
    // A MetricTemplate that does not exist.
    let mut analysis = stepping(10, 50);
    analysis.metrics = Some(vec![CanaryMetric {
        name: "errors".into(),
        template_ref: Some(CrossNamespaceObjectReference {
            name: "no-such-template".into(),
            namespace: None,
        }),
        ..Default::default()
    }]);
    rig.create(
        deployment("untemplated", "x:1", None),
        canary_of("untemplated", Provider::Istio, analysis),
    )
    .await;
    // A second canary for the good target.
    let mut second = canary_of("good", Provider::Istio, stepping(10, 50));
    second.metadata.name = Some("good-again".into());
    rig.canaries()
        .create(&PostParams::default(), &second)
        .await
        .expect("create");

    rig.wait_phase("good", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;
    for (name, reason, words) in [
        ("missing", "TargetNotFound", "not found"),
        (
            "unlabelled",
            "NoSelectorLabel",
            "app, name, app.kubernetes.io/name",
        ),
        ("untemplated", "", "no-such-template"),
        ("good-again", "SharedTarget", "also the target of canary good"),
    ] {
        let start = Instant::now();
        let ready = loop {
            let canary = rig.canaries().get(name).await.expect("canary");
            let ready = canary
                .status
                .and_then(|s| s.conditions)
                .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"));
            if let Some(ready) = ready {
                break ready;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} reports nothing"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(ready.status, "False", "{name}: {ready:?}");
        if !reason.is_empty() {
            assert_eq!(ready.reason.as_deref(), Some(reason), "{name}: {ready:?}");
        }
        let message = ready.message.unwrap_or_default();
        assert!(message.contains(words), "{name}: {message}");
        let events = rig.events(name).await;
        assert!(events.iter().any(|e| e.contains(words)), "{name}: {events:#?}");
        // Nothing was generated for it.
        assert!(!virtual_service_exists(&rig.client, &rig.ns.name, name).await);
    }
    // The healthy canary beside them still releases.
    rig.set_image("good", "good:2").await;
    rig.wait_phase("good", CanaryPhase::Succeeded, Duration::from_secs(60))
        .await;
    // Fixing the input clears the error.
    rig.deployments()
        .create(&PostParams::default(), &deployment("missing", "m:1", None))
        .await
        .expect("create");
    rig.wait_phase("missing", CanaryPhase::Initialized, Duration::from_secs(60))
        .await;
    rig.finish().await;
}

async fn virtual_service_exists(client: &Client, ns: &str, name: &str) -> bool {
    virtual_services(client, ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .is_some()
}
