//! A provider's CRDs installed after flaggit started: the controller finds the new kind at
//! its next discovery and watches its objects from then on, so a hand edit is put back in
//! seconds, without a restart. Runs on a control plane of its own, where no routing CRD is
//! served until the test installs one.

use std::time::{Duration, Instant};

use flaggit::api::Provider;

use crate::provider_rollouts::Object;
use crate::provider_support::RoutingObject;
use crate::rollout::{Rig, analysis, canary_of};
use crate::support::{TestNamespace, bare_control_plane, eventually, repo};

#[tokio::test]
async fn routing_crds_installed_after_start_are_watched_without_a_restart() {
    let cp = bare_control_plane();
    let namespace = TestNamespace::unique_name("late-crds");
    let rig = Rig::without_routing_crds(
        cp,
        &namespace,
        &["--routing-discovery-interval".to_string(), "1s".to_string()],
    )
    .await;
    // The first discovery is over before the CRD arrives (it found no routing kind).
    rig.flaggit().wait_for_log(
        "watching the routing kinds the API server serves",
        Duration::from_secs(90),
    );
    let log = rig.flaggit().log();
    let first = log
        .lines()
        .find(|l| l.contains("watching the routing kinds the API server serves"))
        .expect("logged");
    assert!(!first.contains("HTTPProxy"), "no HTTPProxy served yet: {first}");

    let crd = repo().join("tests/fixtures/crds/contour.yaml");
    cp.kubectl_ok(
        &["apply", "--server-side", "-f", crd.to_str().expect("utf-8 path")],
        None,
    );
    // `kubectl wait` fails outright while a just-created CRD has no conditions yet.
    eventually("Contour's CRD to be Established", Duration::from_secs(90), || {
        cp.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=10s",
                "crd/httpproxies.projectcontour.io",
            ],
            None,
        )
        .0
        .then_some(())
    });
    rig.flaggit().wait_for_log(
        "routing kind now served by the API server; watching it",
        Duration::from_secs(90),
    );

    let ns = rig.ns.name.clone();
    let mut canary_analysis = analysis();
    canary_analysis.step_weight = Some(20);
    canary_analysis.max_weight = Some(60);
    rig.initialize_podinfo(canary_of("podinfo", Provider::Contour, canary_analysis))
        .await;
    let object = Object::HttpProxy;
    assert_eq!(object.weights(&rig.client, &ns).await, Some((100, 0)));

    // An idle canary is resynced every 5 minutes; only the watch puts this back sooner.
    object.hand_edit(&rig.client, &ns).await;
    let edited = Instant::now();
    loop {
        if object.weights(&rig.client, &ns).await == Some((100, 0)) {
            break;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(90),
            "the hand edit of an HTTPProxy (CRD installed after start) was not put back: {}",
            rig.flaggit().log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("late HTTPProxy: hand edit put back after {:?}", edited.elapsed());
    rig.finish().await;
}
