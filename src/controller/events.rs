//! Kubernetes events on canaries, written the way client-go's recorder writes Flagger's: core
//! `v1` Events (what `kubectl describe canary` lists), and a repeat of the same message within
//! ten minutes bumps the count of the existing event instead of adding one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::sync::Mutex;

use crate::api::Canary;

/// Repeats of an event within this window are counted on the first one.
const AGGREGATE_FOR: Duration = Duration::from_secs(600);
/// Longest message written (the API server allows 1 KiB).
const MAX_MESSAGE: usize = 1000;

/// The event source component, as Flagger's `flagger`.
pub const COMPONENT: &str = "flaggit";

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    uid: String,
    warning: bool,
    reason: String,
    message: String,
}

struct Seen {
    name: String,
    count: i32,
    at: Instant,
}

#[async_trait::async_trait]
impl crate::gitops::writer::Notices for Events {
    async fn warn(&self, canary: &Canary, reason: &'static str, message: &str) {
        self.publish(canary, true, reason, message).await;
    }
}

/// Writes events, aggregating repeats.
pub struct Events {
    client: Client,
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Events {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            seen: Mutex::default(),
        }
    }

    /// Records an event on `canary`; failures are logged, never fatal.
    pub async fn publish(&self, canary: &Canary, warning: bool, reason: &str, message: &str) {
        let message: String = message.chars().take(MAX_MESSAGE).collect();
        if warning {
            tracing::warn!(reason, message = %message, "event");
        } else {
            tracing::info!(reason, message = %message, "event");
        }
        let Some(namespace) = canary.namespace() else {
            return;
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let key = Key {
            uid: canary.uid().unwrap_or_default(),
            warning,
            reason: reason.into(),
            message: message.clone(),
        };
        let now = Time(jiff::Timestamp::now());
        // The cache is only consulted and updated under the lock, never across an API call:
        // the events of one canary must not wait for another's.
        let repeat = self.seen().get_mut(&key).map(|previous| {
            previous.count += 1;
            previous.at = Instant::now();
            (previous.name.clone(), previous.count)
        });
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": now});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                // Gone (expired or deleted): write a new one below.
                Err(error) => tracing::debug!(error = %error, "cannot update an aggregated event"),
            }
        }
        let name = format!(
            "{}.{:x}",
            canary.name_any(),
            jiff::Timestamp::now().as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: reference(canary),
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let mut seen = self.seen();
                seen.retain(|_, s| s.at.elapsed() < AGGREGATE_FOR);
                seen.insert(
                    key,
                    Seen {
                        name,
                        count: 1,
                        at: Instant::now(),
                    },
                );
            }
            Err(error) => tracing::warn!(error = %error, "cannot publish an event"),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Seen>> {
        self.seen
            .lock()
            .expect("the event cache lock is never held across a panic")
    }
}

fn reference(canary: &Canary) -> ObjectReference {
    ObjectReference {
        api_version: Some(Canary::api_version(&()).into_owned()),
        kind: Some(Canary::kind(&()).into_owned()),
        name: Some(canary.name_any()),
        namespace: canary.namespace(),
        uid: canary.uid(),
        resource_version: canary.resource_version(),
        ..Default::default()
    }
}
