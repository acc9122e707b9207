//! Readiness of a Deployment or DaemonSet from its status, as Flagger judges it
//! (deployment_ready.go, daemonset_ready.go): pure functions of the object, the threshold,
//! the progress deadline and the time now.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, DeploymentCondition};

use super::Readiness;

/// How many of `total` pods must be available for `threshold` percent (truncated, as Go's
/// `int32(float32(total) * ratio)`).
fn required(total: i32, threshold: i32) -> i32 {
    (f64::from(total) * f64::from(threshold) / 100.0) as i32
}

fn condition<'a>(deployment: &'a Deployment, type_: &str) -> Option<&'a DeploymentCondition> {
    deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the Deployment is ready. `threshold` is the percentage of updated replicas that
/// must be available, `deadline_seconds` how long replicas may stay unavailable before the
/// rollout has failed.
pub fn deployment(
    deployment: &Deployment,
    threshold: i32,
    deadline_seconds: i64,
    now: jiff::Timestamp,
) -> Readiness {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Readiness::Waiting(
            "waiting for rollout to finish: observed deployment generation less than desired generation"
                .into(),
        );
    }
    let progressing = condition(deployment, "Progressing");
    if progressing.and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded") {
        return Readiness::Failed("exceeded its progress deadline".into());
    }
    // Replicas unavailable for longer than the deadline: the waits below will not end.
    let stuck = progressing.is_some()
        && condition(deployment, "Available")
            .filter(|c| c.status == "False" && c.reason.as_deref() == Some("MinimumReplicasUnavailable"))
            .and_then(|c| c.last_update_time.as_ref())
            .is_some_and(|since| since.0 + jiff::SignedDuration::from_secs(deadline_seconds) < now);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready_needed = required(updated, threshold);
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas);
    let waiting = if let Some(desired) = desired.filter(|&desired| updated < desired) {
        format!("waiting for rollout to finish: {updated} out of {desired} new replicas have been updated")
    } else if replicas > updated {
        format!(
            "waiting for rollout to finish: {} old replicas are pending termination",
            replicas - updated
        )
    } else if available < ready_needed {
        format!(
            "waiting for rollout to finish: {available} of {ready_needed} (readyThreshold {threshold}%) updated \
             replicas are available"
        )
    } else {
        return Readiness::Ready;
    };
    if stuck {
        Readiness::Failed(format!(
            "exceeded its progressDeadlineSeconds ({deadline_seconds}s): {waiting}"
        ))
    } else {
        Readiness::Waiting(waiting)
    }
}

/// Whether the DaemonSet is ready. The deadline runs from the Canary's last phase change
/// (`since`); without one there is no deadline yet.
pub fn daemonset(
    daemonset: &DaemonSet,
    threshold: i32,
    deadline_seconds: i64,
    since: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Readiness {
    let generation = daemonset.metadata.generation.unwrap_or(0);
    let status = daemonset.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Readiness::Waiting(
            "waiting for rollout to finish: observed daemonset generation less than desired generation"
                .into(),
        );
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    let ready_needed = required(desired, threshold);
    let waiting = if updated < desired {
        format!("waiting for rollout to finish: {updated} out of {desired} new pods have been updated")
    } else if available < ready_needed {
        format!(
            "waiting for rollout to finish: {available} of {ready_needed} (readyThreshold {threshold}%) updated \
             pods are available"
        )
    } else {
        return Readiness::Ready;
    };
    let exceeded = since.is_some_and(|since| since + jiff::SignedDuration::from_secs(deadline_seconds) < now);
    if exceeded {
        Readiness::Failed(format!(
            "exceeded its progressDeadlineSeconds ({deadline_seconds}s): {waiting}"
        ))
    } else {
        Readiness::Waiting(waiting)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetStatus, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn ts(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn dep(desired: i32, replicas: i32, updated: i32, available: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn with_condition(
        mut d: Deployment,
        type_: &str,
        status: &str,
        reason: &str,
        at: jiff::Timestamp,
    ) -> Deployment {
        d.status
            .as_mut()
            .unwrap()
            .conditions
            .get_or_insert_with(Vec::new)
            .push(DeploymentCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                last_update_time: Some(Time(at)),
                ..Default::default()
            });
        d
    }

    fn waiting(r: Readiness) -> String {
        match r {
            Readiness::Waiting(text) => text,
            other => panic!("expected Waiting, got {other:?}"),
        }
    }

    fn failed(r: Readiness) -> String {
        match r {
            Readiness::Failed(text) => text,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn ready_when_all_replicas_updated_and_available() {
        assert_eq!(deployment(&dep(2, 2, 2, 2), 100, 600, ts(0)), Readiness::Ready);
        assert_eq!(deployment(&dep(0, 0, 0, 0), 100, 600, ts(0)), Readiness::Ready);
    }

    #[test]
    fn waits_for_observed_generation() {
        let mut d = dep(2, 2, 2, 2);
        d.status.as_mut().unwrap().observed_generation = Some(1);
        assert!(waiting(deployment(&d, 100, 600, ts(0))).contains("observed deployment generation"));
        d.status = None;
        assert!(waiting(deployment(&d, 100, 600, ts(0))).contains("observed deployment generation"));
    }

    #[test]
    fn waits_for_updated_old_and_available_replicas() {
        assert_eq!(
            waiting(deployment(&dep(3, 3, 1, 1), 100, 600, ts(0))),
            "waiting for rollout to finish: 1 out of 3 new replicas have been updated"
        );
        assert_eq!(
            waiting(deployment(&dep(2, 3, 2, 2), 100, 600, ts(0))),
            "waiting for rollout to finish: 1 old replicas are pending termination"
        );
        assert_eq!(
            waiting(deployment(&dep(2, 2, 2, 1), 100, 600, ts(0))),
            "waiting for rollout to finish: 1 of 2 (readyThreshold 100%) updated replicas are available"
        );
    }

    #[test]
    fn threshold_lowers_the_available_replicas_needed() {
        assert_eq!(deployment(&dep(4, 4, 4, 2), 50, 600, ts(0)), Readiness::Ready);
        assert!(matches!(
            deployment(&dep(4, 4, 4, 1), 50, 600, ts(0)),
            Readiness::Waiting(_)
        ));
        // 3 * 0.5 = 1.5 truncates to 1, as in Go.
        assert_eq!(deployment(&dep(3, 3, 3, 1), 50, 600, ts(0)), Readiness::Ready);
    }

    #[test]
    fn progress_deadline_exceeded_fails() {
        let d = with_condition(
            dep(2, 2, 1, 1),
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            ts(0),
        );
        assert!(failed(deployment(&d, 100, 600, ts(1))).contains("progress deadline"));
    }

    #[test]
    fn replicas_unavailable_past_the_deadline_fails_and_before_it_waits() {
        let d = with_condition(dep(2, 2, 2, 1), "Progressing", "True", "ReplicaSetUpdated", ts(0));
        let d = with_condition(d, "Available", "False", "MinimumReplicasUnavailable", ts(0));
        assert!(matches!(deployment(&d, 100, 60, ts(59)), Readiness::Waiting(_)));
        let text = failed(deployment(&d, 100, 60, ts(61)));
        assert!(text.contains("progressDeadlineSeconds (60s)"), "{text}");
        // Ready replicas are ready whatever the stale condition says.
        let ok = with_condition(dep(2, 2, 2, 2), "Progressing", "True", "x", ts(0));
        let ok = with_condition(ok, "Available", "False", "MinimumReplicasUnavailable", ts(0));
        assert_eq!(deployment(&ok, 100, 60, ts(600)), Readiness::Ready);
    }

    fn ds(desired: i32, updated: i32, available: i32) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                generation: Some(1),
                ..Default::default()
            },
            spec: None,
            status: Some(DaemonSetStatus {
                observed_generation: Some(1),
                desired_number_scheduled: desired,
                updated_number_scheduled: Some(updated),
                number_available: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn daemonset_readiness() {
        assert_eq!(daemonset(&ds(3, 3, 3), 100, 600, None, ts(0)), Readiness::Ready);
        assert_eq!(
            waiting(daemonset(&ds(3, 1, 1), 100, 600, None, ts(0))),
            "waiting for rollout to finish: 1 out of 3 new pods have been updated"
        );
        assert_eq!(
            waiting(daemonset(&ds(3, 3, 2), 100, 600, None, ts(0))),
            "waiting for rollout to finish: 2 of 3 (readyThreshold 100%) updated pods are available"
        );
        assert_eq!(daemonset(&ds(4, 4, 2), 50, 600, None, ts(0)), Readiness::Ready);
        let mut stale = ds(3, 3, 3);
        stale.metadata.generation = Some(2);
        assert!(waiting(daemonset(&stale, 100, 600, None, ts(0))).contains("observed daemonset generation"));
    }

    #[test]
    fn daemonset_deadline_runs_from_the_last_transition() {
        assert!(matches!(
            daemonset(&ds(3, 1, 1), 100, 60, Some(ts(0)), ts(59)),
            Readiness::Waiting(_)
        ));
        assert!(failed(daemonset(&ds(3, 1, 1), 100, 60, Some(ts(0)), ts(61))).contains("(60s)"));
        assert_eq!(
            daemonset(&ds(3, 3, 3), 100, 60, Some(ts(0)), ts(600)),
            Readiness::Ready
        );
    }
}
