//! What wakes a canary up: its own spec (not its status), and the objects it references —
//! target Deployments, DaemonSets and Services (and their primaries; a Service target's
//! `-canary` copy too; Services only once a canary targets one), tracked ConfigMaps and Secrets,
//! autoscalers — mapped to the canaries through the canary store — and the routing objects
//! flaggit owns, so a hand edit is put back within seconds. The referenced objects are
//! watched metadata-only: nothing of them is cached, so memory does not grow with them.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList;
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{Canary, TargetKind};
use crate::router::{RoutingKind, ServiceNames};

/// Canaries whose routing objects changed since their last reconcile: the reconcile brings
/// those objects back in line.
#[derive(Clone, Default)]
pub struct Drift(Arc<Mutex<HashSet<ObjectRef<Canary>>>>);

impl Drift {
    fn mark(&self, keys: &[ObjectRef<Canary>]) {
        let mut set = self
            .0
            .lock()
            .expect("the drift lock is never held across a panic");
        set.extend(keys.iter().cloned());
    }

    /// Whether `key`'s routing objects changed; clears the mark.
    pub fn take(&self, key: &ObjectRef<Canary>) -> bool {
        self.0
            .lock()
            .expect("the drift lock is never held across a panic")
            .remove(key)
    }
}

/// The routing kinds this API server serves (one version per group and kind), so that a
/// provider whose CRDs are not installed costs no failing watch. One request lists the
/// served groups; then each group version of a routing kind among them is read once for its
/// resources (not every routing kind's group version, served or not, every time).
pub async fn served_routing_kinds(client: &Client) -> Vec<RoutingKind> {
    let Ok(groups) = client.list_api_groups().await else {
        return Vec::new();
    };
    let mut served: Vec<RoutingKind> = Vec::new();
    let mut resources: HashMap<String, Vec<String>> = HashMap::new();
    for kind in offered_routing_kinds(&groups, crate::router::routing_kinds()) {
        if served
            .iter()
            .any(|k| k.group == kind.group && k.kind == kind.kind)
        {
            continue;
        }
        let api_version = format!("{}/{}", kind.group, kind.version);
        if !resources.contains_key(&api_version) {
            let names = match client.list_api_group_resources(&api_version).await {
                Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                Err(_) => Vec::new(),
            };
            resources.insert(api_version.clone(), names);
        }
        if resources[&api_version].iter().any(|name| name == kind.plural) {
            served.push(kind);
        }
    }
    served
}

/// The routing kinds whose group version the API server lists in `groups` (`GET /apis`).
fn offered_routing_kinds(groups: &APIGroupList, kinds: Vec<RoutingKind>) -> Vec<RoutingKind> {
    kinds
        .into_iter()
        .filter(|kind| {
            groups.groups.iter().any(|group| {
                group.name == kind.group && group.versions.iter().any(|v| v.version == kind.version)
            })
        })
        .collect()
}

/// What of a routing object is worth a reconcile: its spec (generation), labels and
/// annotations (the NGINX weights live there). Status writes by the mesh are not.
fn routing_predicate(object: &PartialObjectMeta<DynamicObject>) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.metadata.generation.hash(&mut hasher);
    object.metadata.labels.hash(&mut hasher);
    object.metadata.annotations.hash(&mut hasher);
    Some(hasher.finish())
}

/// The canaries a routing object belongs to: its controlling Canary (owner reference), or
/// for a cluster-scoped object, which has none, the canaries its `<apex>.<namespace>` name
/// names; for a Knative Service, the canaries targeting it.
pub fn canaries_for_routing_object(
    store: &Store<Canary>,
    meta: &kube::api::ObjectMeta,
) -> Vec<ObjectRef<Canary>> {
    let owners: Vec<_> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.kind == "Canary" && r.api_version.starts_with("flagger.app/"))
        .filter_map(|r| {
            let ns = meta.namespace.as_deref()?;
            Some(ObjectRef::new(&r.name).within(ns))
        })
        .collect();
    if let Some(namespace) = meta.namespace.as_deref() {
        if !owners.is_empty() {
            return owners;
        }
        // A Knative Service is the target itself, owned by its author: the canaries that
        // target it.
        let name = meta.name.as_deref().unwrap_or_default();
        return store
            .state()
            .iter()
            .filter(|c| {
                c.namespace().as_deref() == Some(namespace)
                    && c.spec.target_ref.name == name
                    && crate::workload::is_knative_target(c)
            })
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect();
    }
    // Cluster-scoped (Kuma's TrafficRoute `<apex>.<namespace>`): the canaries of that
    // namespace with that apex.
    let name = meta.name.as_deref().unwrap_or_default();
    let Some((apex, namespace)) = name.split_once('.') else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace) && ServiceNames::of(c).apex == apex)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// A metadata-only watch of one routing kind.
fn routing_stream(
    client: &Client,
    namespace: Option<&str>,
    kind: &RoutingKind,
) -> impl Stream<Item = Result<PartialObjectMeta<DynamicObject>, watcher::Error>> + Send + 'static {
    let ar: ApiResource = kind.api_resource();
    let api: Api<PartialObjectMeta<DynamicObject>> = match (namespace, kind.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    // A Knative Service is the target as well: Knative reports a new revision in its status
    // after the spec change, so every change of it counts.
    let predicate: fn(&PartialObjectMeta<DynamicObject>) -> Option<u64> =
        if kind.group == crate::workload::KNATIVE_GROUP {
            any_change
        } else {
            routing_predicate
        };
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicate, Default::default())
}

/// Every change of an object (its resourceVersion), status included.
fn any_change(object: &PartialObjectMeta<DynamicObject>) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.metadata.resource_version.hash(&mut hasher);
    Some(hasher.finish())
}

/// The routing kinds already watched; tells which of the served ones are new.
#[derive(Debug, Default)]
pub struct WatchedKinds(Vec<(&'static str, &'static str)>);

impl WatchedKinds {
    /// The kinds of `served` not watched yet, now counted as watched. One version per group
    /// and kind is watched: a kind served under a second version later changes nothing.
    pub fn add_new(&mut self, served: Vec<RoutingKind>) -> Vec<RoutingKind> {
        let mut new = Vec::new();
        for kind in served {
            let key = (kind.group, kind.kind);
            if !self.0.contains(&key) {
                self.0.push(key);
                new.push(kind);
            }
        }
        new
    }
}

/// Canaries to reconcile because a routing object of theirs changed. The served routing
/// kinds are looked up at start and again every `every`, so a provider whose CRDs are
/// installed later is watched from then on, without a restart; each change marks the
/// canaries in `drift`. The watches end with the returned stream.
pub fn routing_triggers(
    client: Client,
    namespace: Option<String>,
    store: Store<Canary>,
    drift: Drift,
    every: std::time::Duration,
) -> impl Stream<Item = ObjectRef<Canary>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<ObjectRef<Canary>>(256);
    tokio::spawn(async move {
        let mut watched = WatchedKinds::default();
        let mut first = true;
        loop {
            let new = watched.add_new(served_routing_kinds(&client).await);
            if first {
                let kinds: Vec<&str> = new.iter().map(|k| k.kind).collect();
                tracing::info!(kinds = ?kinds, every = ?every, "watching the routing kinds the API server serves; looking for more periodically");
            }
            for kind in new {
                if !first {
                    tracing::info!(
                        kind = kind.kind,
                        group = kind.group,
                        "routing kind now served by the API server; watching it"
                    );
                }
                tokio::spawn(watch_routing_kind(
                    routing_stream(&client, namespace.as_deref(), &kind),
                    kind,
                    store.clone(),
                    drift.clone(),
                    tx.clone(),
                ));
            }
            first = false;
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|key| (key, rx)) })
}

/// Forwards the canaries of each changed object of one routing kind until the receiver goes.
async fn watch_routing_kind(
    stream: impl Stream<Item = Result<PartialObjectMeta<DynamicObject>, watcher::Error>> + Send,
    kind: RoutingKind,
    store: Store<Canary>,
    drift: Drift,
    tx: tokio::sync::mpsc::Sender<ObjectRef<Canary>>,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(object) => {
                let keys = canaries_for_routing_object(&store, &object.metadata);
                drift.mark(&keys);
                for key in keys {
                    if tx.send(key).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                if tx.is_closed() {
                    return;
                }
                tracing::warn!(kind = kind.kind, group = kind.group, error = %error, "cannot watch routing objects; retrying");
            }
        }
    }
}

/// The annotation whose new value re-runs a failed revision.
pub const RETRY_ANNOTATION: &str = "flaggit.dev/retry";

/// What of a Canary is worth a reconcile: its spec (generation), the retry annotation,
/// deletion and finalizers. Status writes, ours included, are not.
pub fn canary_predicate(canary: &Canary) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    canary.metadata.generation.hash(&mut hasher);
    canary.annotations().get(RETRY_ANNOTATION).hash(&mut hasher);
    canary
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut hasher);
    canary.finalizers().hash(&mut hasher);
    Some(hasher.finish())
}

/// A metadata-only watch of `K` in `namespace` (or everywhere).
pub fn metadata_stream<K>(
    client: &Client,
    namespace: Option<&str>,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static + use<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    // An Api of PartialObjectMeta makes metadata-only requests.
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .applied_objects()
}

/// Canaries whose target is the workload `name` (or whose primary it is, or for a Service
/// target its canary copy) in `namespace`.
pub fn canaries_for_workload(
    store: &Store<Canary>,
    kind: TargetKind,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<Canary>> {
    let target = name.strip_suffix("-primary").or_else(|| {
        name.strip_suffix("-canary")
            .filter(|_| kind == TargetKind::Service)
    });
    store
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace))
        .filter(|c| c.spec.target_ref.kind == kind)
        .filter(|c| c.spec.target_ref.name == name || Some(c.spec.target_ref.name.as_str()) == target)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Canaries that track the config `key` (`configmap/<name>` or `secret/<name>`) in their
/// status. A config a target starts using arrives with a pod template change, which the
/// target watch sees; after that its own changes are mapped here.
pub fn canaries_tracking(store: &Store<Canary>, namespace: &str, key: &str) -> Vec<ObjectRef<Canary>> {
    store
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace))
        .filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.tracked_configs.as_ref())
                .is_some_and(|configs| configs.contains_key(key))
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Canaries whose `autoscalerRef` is the HPA `name` in `namespace`.
pub fn canaries_for_autoscaler(store: &Store<Canary>, namespace: &str, name: &str) -> Vec<ObjectRef<Canary>> {
    store
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace))
        .filter(|c| c.spec.autoscaler_ref.as_ref().is_some_and(|a| a.name == name))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Whether a canary targeting a Service has been seen. Only such a canary is woken by a
/// Service change, so the watch of every Service starts with the first of them: a cluster
/// without Service targets pays for no Service watch (its list, every Service's events,
/// the store scan of each).
#[derive(Clone)]
pub struct ServiceTargets(tokio::sync::watch::Sender<bool>);

impl Default for ServiceTargets {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(false))
    }
}

impl ServiceTargets {
    fn see(&self, canary: &Canary) {
        if canary.spec.target_ref.kind == TargetKind::Service {
            self.0.send_if_modified(|seen| !std::mem::replace(seen, true));
        }
    }

    /// `stream`, started once a Service target has been seen; never, if none is.
    fn once_seen<S, F>(&self, start: F) -> impl Stream<Item = S::Item> + Send + 'static
    where
        S: Stream + Send + 'static,
        F: FnMut() -> S + Send + 'static,
    {
        let mut seen = self.0.subscribe();
        let mut start = start;
        futures::stream::once(async move { seen.wait_for(|seen| *seen).await.is_ok() })
            .filter(|seen| std::future::ready(*seen))
            .flat_map(move |_| start())
    }
}

/// Adds the watches of everything a canary references to `controller`.
pub fn add_watches(
    controller: kube::runtime::Controller<Canary>,
    client: &Client,
    namespace: Option<&str>,
    store: &Store<Canary>,
    service_targets: &ServiceTargets,
) -> kube::runtime::Controller<Canary> {
    let s = store.clone();
    let controller = controller.watches_stream(
        metadata_stream::<Deployment>(client, namespace),
        move |d: PartialObjectMeta<Deployment>| {
            canaries_for_workload(
                &s,
                TargetKind::Deployment,
                &d.namespace().unwrap_or_default(),
                &d.name_any(),
            )
        },
    );
    let s = store.clone();
    let controller = controller.watches_stream(
        metadata_stream::<DaemonSet>(client, namespace),
        move |d: PartialObjectMeta<DaemonSet>| {
            canaries_for_workload(
                &s,
                TargetKind::DaemonSet,
                &d.namespace().unwrap_or_default(),
                &d.name_any(),
            )
        },
    );
    let s = store.clone();
    let (c, ns) = (client.clone(), namespace.map(String::from));
    let controller = controller.watches_stream(
        service_targets.once_seen(move || metadata_stream::<Service>(&c, ns.as_deref())),
        move |d: PartialObjectMeta<Service>| {
            canaries_for_workload(
                &s,
                TargetKind::Service,
                &d.namespace().unwrap_or_default(),
                &d.name_any(),
            )
        },
    );
    let s = store.clone();
    let controller = controller.watches_stream(
        metadata_stream::<ConfigMap>(client, namespace),
        move |c: PartialObjectMeta<ConfigMap>| {
            canaries_tracking(
                &s,
                &c.namespace().unwrap_or_default(),
                &format!("configmap/{}", c.name_any()),
            )
        },
    );
    let s = store.clone();
    let controller = controller.watches_stream(
        metadata_stream::<Secret>(client, namespace),
        move |c: PartialObjectMeta<Secret>| {
            canaries_tracking(
                &s,
                &c.namespace().unwrap_or_default(),
                &format!("secret/{}", c.name_any()),
            )
        },
    );
    let s = store.clone();
    controller.watches_stream(
        metadata_stream::<HorizontalPodAutoscaler>(client, namespace),
        move |h: PartialObjectMeta<HorizontalPodAutoscaler>| {
            canaries_for_autoscaler(&s, &h.namespace().unwrap_or_default(), &h.name_any())
        },
    )
}

/// kubectl's copy of the last applied manifest, kept on objects written with `kubectl apply`.
const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the cache keeps of a canary: all but its `managedFields` and kubectl's last-applied
/// copy of the manifest. Nothing reads those from the cache (a reconcile reads the live
/// object), and they are most of a cached canary's size: about 4 KiB each of 1000 canaries.
pub fn slim(canary: &mut Canary) {
    canary.metadata.managed_fields = None;
    if let Some(annotations) = canary.metadata.annotations.as_mut() {
        annotations.remove(KUBECTL_LAST_APPLIED);
        if annotations.is_empty() {
            canary.metadata.annotations = None;
        }
    }
}

/// The canary watch, feeding `writer`'s store with every change (slimmed by [`slim`]) but
/// triggering only on the changes [`canary_predicate`] counts; tells `service_targets` of a
/// canary targeting a Service.
pub fn canary_stream(
    api: Api<Canary>,
    writer: kube::runtime::reflector::store::Writer<Canary>,
    service_targets: ServiceTargets,
) -> impl Stream<Item = Result<Canary, watcher::Error>> + Send + 'static {
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .applied_objects()
        .inspect(move |canary| {
            if let Ok(canary) = canary {
                service_targets.see(canary);
            }
        })
        .predicate_filter(canary_predicate, Default::default())
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;

    fn kind(group: &'static str, version: &'static str, kind: &'static str) -> RoutingKind {
        RoutingKind {
            group,
            version,
            kind,
            plural: "things",
            namespaced: true,
        }
    }

    fn groups(served: &[(&str, &[&str])]) -> APIGroupList {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroup, GroupVersionForDiscovery};
        APIGroupList {
            groups: served
                .iter()
                .map(|(name, versions)| APIGroup {
                    name: (*name).into(),
                    versions: versions
                        .iter()
                        .map(|v| GroupVersionForDiscovery {
                            group_version: format!("{name}/{v}"),
                            version: (*v).into(),
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn only_routing_kinds_of_served_group_versions_are_looked_up() {
        let proxy = kind("projectcontour.io", "v1", "HTTPProxy");
        let split_old = kind("split.smi-spec.io", "v1alpha1", "TrafficSplit");
        let split_new = kind("split.smi-spec.io", "v1alpha2", "TrafficSplit");
        let route = kind("kuma.io", "v1alpha1", "TrafficRoute");
        let served = groups(&[
            ("apps", &["v1"]),
            ("split.smi-spec.io", &["v1alpha2"]),
            ("projectcontour.io", &["v1"]),
        ]);
        let offered = offered_routing_kinds(&served, vec![proxy, split_old, split_new, route]);
        assert_eq!(offered, vec![proxy, split_new]);
        assert!(
            offered_routing_kinds(&groups(&[]), vec![proxy, route]).is_empty(),
            "an API server serving no routing group costs no further lookup"
        );
    }

    #[test]
    fn a_kind_is_watched_once_whatever_discovery_finds_later() {
        let mut watched = WatchedKinds::default();
        let proxy = kind("projectcontour.io", "v1", "HTTPProxy");
        let split = kind("split.smi-spec.io", "v1alpha2", "TrafficSplit");
        assert_eq!(watched.add_new(vec![proxy]).len(), 1);
        // Found again, and then the same kind under another version: nothing new.
        assert!(watched.add_new(vec![proxy]).is_empty());
        assert!(
            watched
                .add_new(vec![kind("split.smi-spec.io", "v1alpha1", "TrafficSplit"), split])
                .iter()
                .map(|k| k.version)
                .eq(["v1alpha1"]),
            "the first version found is the one watched"
        );
        assert!(watched.add_new(vec![proxy, split]).is_empty());
    }

    fn canary(ns: &str, target_api: &str, target_kind: TargetKind) -> Canary {
        let mut c = crate::testing::podinfo(
            Some(crate::api::CanaryService {
                port: 9898,
                ..Default::default()
            }),
            None,
        );
        c.metadata.namespace = Some(ns.into());
        c.spec.target_ref.api_version = target_api.into();
        c.spec.target_ref.kind = target_kind;
        c
    }

    fn store(canaries: Vec<Canary>) -> Store<Canary> {
        let mut writer = Writer::<Canary>::default();
        for c in canaries {
            writer.apply_watcher_event(&watcher::Event::Apply(c));
        }
        writer.as_reader()
    }

    #[test]
    fn the_cache_keeps_a_canary_without_its_managed_fields_and_last_applied_copy() {
        let mut c = canary("test", "apps/v1", TargetKind::Deployment);
        c.metadata.managed_fields = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                ..Default::default()
            },
        ]);
        c.metadata.annotations = Some(
            [
                (KUBECTL_LAST_APPLIED.to_string(), "{}".to_string()),
                (RETRY_ANNOTATION.to_string(), "1".to_string()),
            ]
            .into(),
        );
        let predicate = canary_predicate(&c);
        let (spec, status) = (c.spec.clone(), c.status.clone());
        slim(&mut c);
        assert_eq!(c.metadata.managed_fields, None);
        assert_eq!(
            c.annotations().keys().collect::<Vec<_>>(),
            [RETRY_ANNOTATION],
            "every other annotation stays"
        );
        assert_eq!(
            canary_predicate(&c),
            predicate,
            "what triggers a reconcile is kept"
        );
        assert_eq!((c.spec, c.status), (spec, status));
        let mut only_last_applied = canary("test", "apps/v1", TargetKind::Deployment);
        only_last_applied.metadata.annotations =
            Some([(KUBECTL_LAST_APPLIED.to_string(), "{}".to_string())].into());
        slim(&mut only_last_applied);
        assert_eq!(only_last_applied.metadata.annotations, None);
    }

    #[test]
    fn a_cluster_scoped_route_wakes_the_canary_of_its_namespace_only() {
        let store = store(vec![
            canary("team-a", "apps/v1", TargetKind::Deployment),
            canary("team-b", "apps/v1", TargetKind::Deployment),
        ]);
        let meta = kube::api::ObjectMeta {
            name: Some("podinfo.team-b".into()),
            ..Default::default()
        };
        let keys = canaries_for_routing_object(&store, &meta);
        assert_eq!(keys, vec![ObjectRef::new("podinfo").within("team-b")]);
        let unrelated = kube::api::ObjectMeta {
            name: Some("podinfo".into()),
            ..Default::default()
        };
        assert!(canaries_for_routing_object(&store, &unrelated).is_empty());
    }

    #[test]
    fn a_knative_service_wakes_the_canary_targeting_it() {
        let store = store(vec![
            canary("test", "serving.knative.dev/v1", TargetKind::Service),
            canary("other", "apps/v1", TargetKind::Deployment),
        ]);
        let meta = |ns: &str| kube::api::ObjectMeta {
            name: Some("podinfo".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        };
        assert_eq!(
            canaries_for_routing_object(&store, &meta("test")),
            vec![ObjectRef::new("podinfo").within("test")]
        );
        // A namespaced routing object without a Canary owner wakes no Deployment canary.
        assert!(canaries_for_routing_object(&store, &meta("other")).is_empty());
    }
}
