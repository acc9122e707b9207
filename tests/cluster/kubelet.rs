//! The tests' stand-in for the kubelet and the workload controllers, which the test control
//! plane does not run: it writes the status a Deployment would reach once its pods are up,
//! unless a test holds the Deployment back or declares its rollout stuck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// How a Deployment's pods behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pods {
    /// They become ready.
    Ready,
    /// They never become ready, and the rollout stays within its deadline.
    Pending,
    /// They never become ready and the Deployment reports ProgressDeadlineExceeded.
    Stuck,
}

/// Runs until dropped, marking the Deployments of one namespace ready.
pub struct Kubelet {
    overrides: Arc<Mutex<HashMap<String, Pods>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Kubelet {
    pub fn start(client: Client, namespace: &str) -> Self {
        let overrides: Arc<Mutex<HashMap<String, Pods>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let api: Api<Deployment> = Api::namespaced(client, namespace);
        let (o, s) = (overrides.clone(), stop.clone());
        let (store, writer) = reflector::store();
        let events = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut resync = tokio::time::interval(Duration::from_millis(300));
            let mut written: HashMap<String, (Option<i64>, Option<i32>, Pods)> = HashMap::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                // A changed Deployment at once; all of them now and then, for overrides.
                let changed: Vec<Arc<Deployment>> = tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(deployment)) => vec![Arc::new(deployment)],
                        _ => Vec::new(),
                    },
                    _ = resync.tick() => store.state(),
                };
                // What was written last for each Deployment: the store can lag behind our own
                // writes, and writing the same status again would only wake the controller.
                let work: Vec<_> = changed
                    .into_iter()
                    .filter_map(|deployment| {
                        let pods = o
                            .lock()
                            .expect("lock")
                            .get(&deployment.name_any())
                            .copied()
                            .unwrap_or(Pods::Ready);
                        let spec = (
                            deployment.metadata.generation,
                            deployment.spec.as_ref().and_then(|s| s.replicas),
                            pods,
                        );
                        let uid = deployment.metadata.uid.clone().unwrap_or_default();
                        (written.insert(uid, spec) != Some(spec)).then_some((deployment, pods))
                    })
                    .collect();
                let failed: Vec<String> = futures::stream::iter(work)
                    .map(|(deployment, pods)| {
                        let api = &api;
                        async move {
                            let ok = sync(api, &deployment, pods).await;
                            (!ok).then(|| deployment.metadata.uid.clone().unwrap_or_default())
                        }
                    })
                    .buffer_unordered(16)
                    .filter_map(futures::future::ready)
                    .collect()
                    .await;
                // A write that failed (a conflict, say) is tried again at the next resync.
                for uid in failed {
                    written.remove(&uid);
                }
            }
        });
        Self { overrides, stop }
    }

    pub fn set(&self, deployment: &str, pods: Pods) {
        self.overrides
            .lock()
            .expect("lock")
            .insert(deployment.to_string(), pods);
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Writes the status `pods` lead to, if it is not there yet; false if the write failed.
async fn sync(api: &Api<Deployment>, deployment: &Deployment, pods: Pods) -> bool {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let ready = if pods == Pods::Ready { replicas } else { 0 };
    let stuck = pods == Pods::Stuck;
    let stuck_now = status.conditions.as_ref().is_some_and(|c| {
        c.iter()
            .any(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    });
    if status.observed_generation == Some(generation)
        && status.replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == ready
        && stuck_now == stuck
    {
        return true;
    }
    let now = jiff::Timestamp::now().to_string();
    let progressing = if stuck {
        json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
               "message": format!("ReplicaSet has timed out progressing."),
               "lastUpdateTime": now, "lastTransitionTime": now})
    } else {
        json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
               "message": "ReplicaSet has successfully progressed.",
               "lastUpdateTime": now, "lastTransitionTime": now})
    };
    let available = if ready >= replicas {
        json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
               "message": "Deployment has minimum availability.",
               "lastUpdateTime": now, "lastTransitionTime": now})
    } else {
        json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
               "message": "Deployment does not have minimum availability.",
               "lastUpdateTime": now, "lastTransitionTime": now})
    };
    let patch = json!({"status": {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": replicas - ready,
        "conditions": [available, progressing],
    }});
    api.patch_status(
        &deployment.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .is_ok()
}
