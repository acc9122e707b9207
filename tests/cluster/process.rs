//! The controller process: readiness, one active replica through the Lease, handover when
//! the leader stops or dies, and a clean exit on SIGTERM.

use std::time::{Duration, Instant};

use crate::support::{Flaggit, TestNamespace, control_plane, eventually};

fn leader_flags(namespace: &str) -> Vec<String> {
    [
        // Only this test's namespace: the other tests' canaries have controllers of their own.
        "--namespace",
        namespace,
        "--leader-election-namespace",
        namespace,
        "--lease-duration-seconds",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn is_leader(flaggit: &Flaggit) -> bool {
    flaggit
        .get("/metrics")
        .is_some_and(|(_, body)| body.contains("\nflaggit_leader 1\n"))
}

#[tokio::test]
async fn one_replica_leads_and_hands_over_when_it_stops_or_dies() {
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "leader").await;
    let flags = leader_flags(&ns.name);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    let first = Flaggit::start(&cp.kubeconfig, &flags);
    first.wait_for_log("acquired the leader lease", Duration::from_secs(60));
    let second = Flaggit::start(&cp.kubeconfig, &flags);
    second.wait_for_log("waiting for the leader lease", Duration::from_secs(60));
    // Both are ready (the CRDs are served), only one leads.
    eventually("both replicas ready", Duration::from_secs(30), || {
        let ready = |f: &Flaggit| f.get("/readyz").is_some_and(|(s, _)| s == 200);
        (ready(&first) && ready(&second)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        is_leader(&first) && !is_leader(&second),
        "exactly the first replica leads: {:?}\n{}\n{}",
        first.get("/metrics"),
        first.log(),
        second.log()
    );
    assert_eq!(second.get("/healthz"), Some((200, "OK".to_string())));

    // A clean stop releases the lease: the standby takes over at its next retry.
    let stopped = Instant::now();
    assert_eq!(
        first.terminate(Duration::from_secs(40)),
        Some(0),
        "SIGTERM exits 0"
    );
    second.wait_for_log("acquired the leader lease", Duration::from_secs(10));
    eprintln!("handover after SIGTERM: {:.1}s", stopped.elapsed().as_secs_f64());

    // A crash (SIGKILL) keeps the lease until it expires (4s here), then a standby takes it.
    let third = Flaggit::start(&cp.kubeconfig, &flags);
    third.wait_for_log("waiting for the leader lease", Duration::from_secs(60));
    let mut second = second;
    let killed = Instant::now();
    second.child.kill().expect("SIGKILL the leader");
    third.wait_for_log("acquired the leader lease", Duration::from_secs(20));
    let handover = killed.elapsed();
    eprintln!("handover after SIGKILL: {:.1}s", handover.as_secs_f64());
    assert!(
        handover >= Duration::from_secs(3),
        "took over a lease that had not expired: {handover:?}"
    );
    assert!(is_leader(&third));
    assert_eq!(third.terminate(Duration::from_secs(40)), Some(0));
    ns.delete(&client).await;
}

#[tokio::test]
async fn runs_without_leader_election_and_reports_canaries() {
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "no-election").await;
    let flaggit = Flaggit::start(
        &cp.kubeconfig,
        &["--leader-election", "false", "--namespace", &ns.name],
    );
    flaggit.wait_for_log("the flagger.app CRDs are served", Duration::from_secs(60));
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&crate::support::tutorial_canary_yaml(&ns.name)),
    );
    flaggit.wait_for_log("canary picked up", Duration::from_secs(30));
    cp.kubectl_ok(
        &[
            "-n",
            &ns.name,
            "patch",
            "canary",
            "podinfo",
            "--type=merge",
            "-p",
            r#"{"spec":{"analysis":{"stepWeight":10}}}"#,
        ],
        None,
    );
    flaggit.wait_for_log("canary spec changed", Duration::from_secs(30));
    let log = flaggit.log();
    assert!(
        log.contains("strategy=\"canary\"") || log.contains("strategy=canary"),
        "{log}"
    );
    assert_eq!(flaggit.terminate(Duration::from_secs(40)), Some(0));
    ns.delete(&client).await;
}
