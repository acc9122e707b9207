//! What the per-provider rollout tests share: a routing object read and hand-edited through
//! [`RoutingObject`], the life of one canary on a provider ([`lifecycle`]), and polling helpers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flaggit::api::{Canary, CanaryMetric, CanaryPhase, IngressRef, Provider, ThresholdRange};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, ServiceBackendPort,
};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::metrics_app::prometheus;
use crate::rollout::{Rig, analysis, canary_of, success_rate_where};

/// Where a provider keeps the weights, and how to read and hand-edit them.
#[async_trait::async_trait]
pub(crate) trait RoutingObject: Send + Sync + std::fmt::Debug {
    /// Creates what the Canary refers to (an original Ingress or route) and points it there.
    async fn prepare(&self, _client: &Client, _ns: &str, _canary: &mut Canary) {}
    /// (primary, canary) as the object says now.
    async fn weights(&self, client: &Client, ns: &str) -> Option<(i64, i64)>;
    /// Someone sets the split to 50/50 by hand.
    async fn hand_edit(&self, client: &Client, ns: &str);
    /// Who the routing object belongs to (owner reference uids, or what stands in for them
    /// on a cluster-scoped object); None when it is gone.
    async fn owners(&self, client: &Client, ns: &str) -> Option<Vec<String>>;
    /// What [`RoutingObject::owners`] says for the Canary with `uid` in `ns`.
    fn owner_id(&self, uid: &str, _ns: &str) -> String {
        uid.to_string()
    }
}

/// The owner uids of `meta`.
pub(crate) fn owner_uids(meta: ObjectMeta) -> Vec<String> {
    meta.owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.uid)
        .collect()
}

/// Polls `check` every 100 ms until it says yes, failing after `timeout` (generous: the
/// machine may be busy).
pub(crate) async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The success rate of the podinfo canary pods as a plain query (no provider's builtin).
pub(crate) fn success_rate_check(ns: &str) -> CanaryMetric {
    CanaryMetric {
        name: "success-rate".into(),
        interval: Some("10s".into()),
        query: Some(success_rate_where(ns, "podinfo", "")),
        threshold_range: Some(ThresholdRange {
            min: Some(99.0),
            max: None,
        }),
        ..Default::default()
    }
}

/// The original Ingress `podinfo` (with `annotations`) that the nginx and skipper providers
/// copy, and the Canary's `ingressRef` to it.
pub(crate) async fn original_ingress(
    client: &Client,
    ns: &str,
    annotations: BTreeMap<String, String>,
    canary: &mut Canary,
) {
    let ingress = Ingress {
        metadata: ObjectMeta {
            name: Some("podinfo".into()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([("app".to_string(), "podinfo".to_string())])),
            ..Default::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: Some("nginx".into()),
            rules: Some(vec![IngressRule {
                host: Some("app.example.com".into()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: "podinfo".into(),
                                port: Some(ServiceBackendPort {
                                    number: Some(9898),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Api::<Ingress>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &ingress)
        .await
        .expect("create the original Ingress");
    canary.spec.ingress_ref = Some(IngressRef {
        api_version: "networking.k8s.io/v1".into(),
        name: "podinfo".into(),
        ..Default::default()
    });
}

/// Polls the routing object until the canary reaches `phase`, returning the distinct
/// weights seen on the way.
pub(crate) async fn record_until(
    rig: &Rig,
    object: &dyn RoutingObject,
    phase: CanaryPhase,
    timeout: Duration,
) -> Vec<(i64, i64)> {
    let start = Instant::now();
    let mut seen: Vec<(i64, i64)> = Vec::new();
    loop {
        if let Some(w) = object.weights(&rig.client, &rig.ns.name).await
            && seen.last() != Some(&w)
        {
            seen.push(w);
        }
        let canary = rig.canaries().get("podinfo").await.expect("canary");
        if canary.status.and_then(|s| s.phase) == Some(phase) {
            if let Some(w) = object.weights(&rig.client, &rig.ns.name).await
                && seen.last() != Some(&w)
            {
                seen.push(w);
            }
            return seen;
        }
        assert!(
            start.elapsed() < timeout,
            "no {phase:?} in {timeout:?}; weights {seen:?}\nlog:\n{}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rig with the podinfo canary on `provider` initialized: all traffic on the primary and
/// the routing object owned by the Canary. Returns the Canary's uid.
pub(crate) async fn initialized(
    prefix: &str,
    provider: Provider,
    object: &dyn RoutingObject,
    revert_on_deletion: bool,
    edit: impl FnOnce(&mut Canary),
) -> (Rig, String) {
    let rig = Rig::with_args(prefix, &[]).await;
    let ns = rig.ns.name.clone();
    let mut canary_analysis = analysis();
    canary_analysis.metrics = Some(vec![success_rate_check(&ns)]);
    canary_analysis.step_weight = Some(20);
    canary_analysis.max_weight = Some(60);
    let mut canary: Canary = canary_of("podinfo", provider, canary_analysis);
    canary.spec.revert_on_deletion = Some(revert_on_deletion);
    object.prepare(&rig.client, &ns, &mut canary).await;
    edit(&mut canary);
    rig.initialize_podinfo(canary).await;
    let uid = rig
        .canaries()
        .get("podinfo")
        .await
        .expect("canary")
        .uid()
        .expect("uid");
    assert_eq!(
        object.weights(&rig.client, &ns).await,
        Some((100, 0)),
        "{object:?}"
    );
    assert_eq!(
        object.owners(&rig.client, &ns).await,
        Some(vec![object.owner_id(&uid, &ns)]),
        "{object:?}"
    );
    (rig, uid)
}

/// Initialize, drift, promote, roll back, off-board: the life of one canary on `provider`.
pub(crate) async fn lifecycle(
    prefix: &str,
    provider: Provider,
    object: &dyn RoutingObject,
    revert_on_deletion: bool,
) {
    let (rig, _) = initialized(prefix, provider, object, revert_on_deletion, |_| {}).await;
    let ns = rig.ns.name.clone();

    // A hand edit of the weights between rollouts is put back by the watch.
    object.hand_edit(&rig.client, &ns).await;
    let edited = Instant::now();
    wait_until(
        "the hand edit to be put back",
        Duration::from_secs(60),
        || async { object.weights(&rig.client, &ns).await == Some((100, 0)) },
    )
    .await;
    eprintln!("{provider:?}: hand edit put back after {:?}", edited.elapsed());

    // A healthy revision steps 20, 40, 60 and is promoted.
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let promoted = record_until(&rig, object, CanaryPhase::Succeeded, Duration::from_secs(120)).await;
    assert_eq!(
        promoted,
        [(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)],
        "{provider:?}"
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");

    // A failing revision is rolled back with no traffic left on it.
    rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    rig.set_image("podinfo", "podinfo:6.0.2").await;
    let rolled_back = record_until(&rig, object, CanaryPhase::Failed, Duration::from_secs(120)).await;
    assert_eq!(rolled_back.first(), Some(&(100, 0)), "{rolled_back:?}");
    assert_eq!(rolled_back.last(), Some(&(100, 0)), "{rolled_back:?}");
    assert!(
        rolled_back.iter().all(|w| [(100, 0), (80, 20)].contains(w)),
        "{provider:?}: {rolled_back:?}"
    );
    assert_eq!(
        rig.image_of("podinfo-primary").await,
        "podinfo:6.0.1",
        "never promoted"
    );

    off_board(&rig, provider, object, revert_on_deletion).await;
    rig.finish().await;
}

/// Deletes the Canary: with `revertOnDeletion` the target serves again behind the apex
/// Service; either way the routing object goes.
pub(crate) async fn off_board(
    rig: &Rig,
    provider: Provider,
    object: &dyn RoutingObject,
    revert_on_deletion: bool,
) {
    let ns = rig.ns.name.clone();
    rig.canaries()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete the canary");
    wait_until("the canary to go", Duration::from_secs(90), || async {
        rig.canaries().get_opt("podinfo").await.expect("get").is_none()
    })
    .await;
    if revert_on_deletion {
        // The target serves again and the apex Service selects it; without revertOnDeletion
        // the generated Services go with the Canary (the garbage collector), as under Flagger.
        let services: Api<Service> = Api::namespaced(rig.client.clone(), &ns);
        let apex = services.get("podinfo").await.expect("apex Service");
        let selector = apex.spec.and_then(|s| s.selector).unwrap_or_default();
        assert_eq!(
            selector.get("app").map(String::as_str),
            Some("podinfo"),
            "{provider:?}"
        );
        assert!(rig.replicas_of("podinfo").await > 0, "the target serves again");
    }
    // The garbage collector (or the router's finalize) removes the routing object.
    wait_until(
        "the routing object to be removed",
        Duration::from_secs(60),
        || async { object.owners(&rig.client, &ns).await.is_none() },
    )
    .await;
}
