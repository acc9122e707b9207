//! What the provider rollout tests share: a routing object whose weights can be read and
//! hand-edited, the lifecycle every provider goes through, and the waits.

use std::time::{Duration, Instant};

use flaggit::api::{Canary, CanaryMetric, CanaryPhase, Provider, ThresholdRange};
use k8s_openapi::api::core::v1::Service;
use kube::api::DeleteParams;
use kube::{Api, Client, ResourceExt};

use crate::metrics_app::prometheus;
use crate::rollout::{Rig, analysis, canary_of, success_rate_where};

/// Where a provider keeps the weights, and how to read and hand-edit them.
pub(crate) trait RoutingObject: Copy + std::fmt::Debug {
    /// (primary, canary) as the object says now.
    async fn weights(self, client: &Client, ns: &str) -> Option<(i64, i64)>;
    /// Someone sets the split to 50/50 by hand.
    async fn hand_edit(self, client: &Client, ns: &str);
    /// Who the routing object belongs to (owner reference uids, or what stands in for
    /// them); None when it is gone.
    async fn owners(self, client: &Client, ns: &str) -> Option<Vec<String>>;
    /// What [`RoutingObject::owners`] says for the Canary with `uid` in `ns`.
    fn owner_id(self, uid: &str, _ns: &str) -> String {
        uid.to_string()
    }
    /// Whatever the provider needs before the Canary is created.
    async fn prepare(self, _rig: &Rig, _canary: &mut Canary) {}
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

/// Polls the routing object until the canary reaches `phase`, returning the distinct
/// weights seen on the way.
pub(crate) async fn record_until<O: RoutingObject>(
    rig: &Rig,
    object: O,
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

/// Initialize, drift, promote, roll back, off-board: the life of one canary on `provider`.
pub(crate) async fn lifecycle<O: RoutingObject>(
    prefix: &str,
    provider: Provider,
    object: O,
    revert_on_deletion: bool,
) {
    let rig = Rig::with_args(prefix, &[]).await;
    let ns = rig.ns.name.clone();
    let mut canary_analysis = analysis();
    canary_analysis.metrics = Some(vec![success_rate_check(&ns)]);
    canary_analysis.step_weight = Some(20);
    canary_analysis.max_weight = Some(60);
    let mut canary: Canary = canary_of("podinfo", provider, canary_analysis);
    canary.spec.revert_on_deletion = Some(revert_on_deletion);
    object.prepare(&rig, &mut canary).await;
    rig.initialize_podinfo(canary).await;
    let uid = rig
        .canaries()
        .get("podinfo")
        .await
        .expect("canary")
        .uid()
        .expect("uid");
    assert_eq!(object.weights(&rig.client, &ns).await, Some((100, 0)));
    assert_eq!(
        object.owners(&rig.client, &ns).await,
        Some(vec![object.owner_id(&uid, &ns)])
    );

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

    // Off-boarding.
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
    // The garbage collector (or, for a cluster-scoped one, flaggit) removes the routing
    // object with the Canary.
    wait_until(
        "the routing object to be collected",
        Duration::from_secs(60),
        || async { object.owners(&rig.client, &ns).await.is_none() },
    )
    .await;
    rig.finish().await;
}
