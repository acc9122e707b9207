//! The kubelet and the Deployment controller of a node-less control plane, in one: every
//! Deployment gets the status it would reach once its pods are up and ready (observed
//! generation, replicas, Available and Progressing conditions). Nothing is scheduled or run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

/// The status a Deployment reaches when all its pods are ready, or None if it has it already.
pub fn ready_status(deployment: &Deployment, now: jiff::Timestamp) -> Option<DeploymentStatus> {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation == Some(generation)
        && status.replicas.unwrap_or(0) == replicas
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
    {
        return None;
    }
    let at = Some(Time(now));
    let condition = |type_: &str, reason: &str, message: &str| DeploymentCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: at.clone(),
        last_transition_time: at.clone(),
    };
    Some(DeploymentStatus {
        observed_generation: Some(generation),
        replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        unavailable_replicas: None,
        conditions: Some(vec![
            condition(
                "Available",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
            condition(
                "Progressing",
                "NewReplicaSetAvailable",
                "ReplicaSet has successfully progressed.",
            ),
        ]),
        ..Default::default()
    })
}

/// Marks every Deployment of `store` ready as it changes; runs until `events` ends.
pub async fn run(
    client: Client,
    store: Store<Deployment>,
    events: impl Stream<Item = Result<Deployment, kube::runtime::watcher::Error>>,
) {
    let mut events = std::pin::pin!(events);
    let mut resync = tokio::time::interval(Duration::from_secs(2));
    // What was last written per Deployment uid: the watch can lag behind our own writes.
    let mut written: HashMap<String, (i64, i32)> = HashMap::new();
    loop {
        let changed: Vec<Arc<Deployment>> = tokio::select! {
            event = events.next() => match event {
                Some(Ok(deployment)) => vec![Arc::new(deployment)],
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "watching Deployments; retrying");
                    Vec::new()
                }
                None => return,
            },
            _ = resync.tick() => store.state(),
        };
        let now = jiff::Timestamp::now();
        for deployment in changed {
            let Some(status) = ready_status(&deployment, now) else {
                continue;
            };
            let key = deployment.metadata.uid.clone().unwrap_or_default();
            let mark = (
                status.observed_generation.unwrap_or(0),
                status.replicas.unwrap_or(0),
            );
            if written.get(&key) == Some(&mark) {
                continue;
            }
            let namespace = deployment.namespace().unwrap_or_default();
            let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(
                    &deployment.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %namespace, deployment = %deployment.name_any(), replicas = mark.1, "pods ready");
                    written.insert(key, mark);
                }
                // Tried again at the next resync.
                Err(error) => {
                    tracing::warn!(namespace = %namespace, deployment = %deployment.name_any(), error = %error, "cannot write the Deployment status")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;

    fn deployment(generation: i64, replicas: Option<i32>, status: Option<DeploymentStatus>) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                name: Some("podinfo".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas,
                ..Default::default()
            }),
            status,
        }
    }

    #[test]
    fn a_new_generation_becomes_ready_with_every_replica() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let status = ready_status(&deployment(3, Some(2), None), now).expect("a status to write");
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.available_replicas, Some(2));
        let ready = deployment(3, Some(2), Some(status));
        assert!(ready_status(&ready, now).is_none(), "written once");
        let readiness = crate::workload::readiness::deployment(&ready, 100, 60, now);
        assert_eq!(
            readiness,
            crate::rollout::Readiness::Ready,
            "flaggit judges it ready"
        );
    }

    #[test]
    fn scaled_to_zero_reports_zero_replicas_and_no_replica_means_one() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let zero = ready_status(&deployment(2, Some(0), None), now).expect("status");
        assert_eq!(zero.replicas, Some(0));
        let default = ready_status(&deployment(1, None, None), now).expect("status");
        assert_eq!(default.replicas, Some(1));
    }
}
