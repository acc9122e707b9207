//! The dashboard's one view of the cluster: a single Canary watch (a reflector) shared by
//! every viewer, the status changes it has seen per canary (the timeline of a canary without a
//! Git ledger), and a broadcast of "this canary changed" for the pages' server-sent events.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::broadcast;

use crate::api::{Canary, RecordedCheck};

/// Points kept per canary.
const TIMELINE_POINTS: usize = 500;

/// One observed state of a canary's rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Seconds since the epoch.
    pub at: i64,
    pub phase: String,
    pub weight: i32,
    pub failed_checks: i32,
    pub checks: Vec<RecordedCheck>,
}

/// Whether the Canary watch works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchState {
    Starting,
    Synced,
    /// The API server does not serve `canaries.flagger.app`: the CRDs are not installed.
    CrdMissing,
}

/// The shared state the watch fills.
pub struct Cluster {
    pub canaries: Store<Canary>,
    state: AtomicU8,
    timelines: Mutex<HashMap<(String, String), Vec<Point>>>,
    changes: broadcast::Sender<(String, String)>,
}

impl Cluster {
    /// Starts the one Canary watch of the process; it runs until the runtime stops.
    pub fn watch(client: Client) -> Arc<Self> {
        let (reader, writer) = reflector::store::<Canary>();
        let (changes, _) = broadcast::channel(1024);
        let cluster = Arc::new(Self {
            canaries: reader,
            state: AtomicU8::new(0),
            timelines: Mutex::new(HashMap::new()),
            changes,
        });
        let shared = cluster.clone();
        let api: Api<Canary> = Api::all(client);
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .reflect(writer)
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    // The store shows the first list only at InitDone: until then a canary
                    // that exists is not in it, so the watch is not synced before.
                    Ok(watcher::Event::InitApply(canary)) => shared.observe(&canary),
                    Ok(watcher::Event::Apply(canary)) => {
                        shared.set_state(WatchState::Synced);
                        shared.observe(&canary);
                    }
                    Ok(watcher::Event::Delete(canary)) => {
                        let key = (canary.namespace().unwrap_or_default(), canary.name_any());
                        shared.lock_timelines().remove(&key);
                        let _ = shared.changes.send(key);
                    }
                    Ok(watcher::Event::InitDone) => {
                        shared.set_state(WatchState::Synced);
                        let _ = shared.changes.send((String::new(), String::new()));
                    }
                    Ok(watcher::Event::Init) => {}
                    Err(error) => {
                        if is_not_found(&error) {
                            shared.set_state(WatchState::CrdMissing);
                        }
                        tracing::warn!(error = %error, "dashboard: the Canary watch failed; retrying");
                    }
                }
            }
        });
        cluster
    }

    /// Waits, at most `limit`, for the first list of canaries, so that a page asked for just
    /// after start does not call an existing canary absent. Returns at once when synced, or
    /// when the watch found no Canary CRD.
    pub async fn until_synced(&self, limit: std::time::Duration) {
        if self.state() != WatchState::Starting {
            return;
        }
        let _ = tokio::time::timeout(limit, self.canaries.wait_until_ready()).await;
    }

    pub fn state(&self) -> WatchState {
        match self.state.load(Ordering::Relaxed) {
            1 => WatchState::Synced,
            2 => WatchState::CrdMissing,
            _ => WatchState::Starting,
        }
    }

    fn set_state(&self, state: WatchState) {
        let n = match state {
            WatchState::Starting => 0,
            WatchState::Synced => 1,
            WatchState::CrdMissing => 2,
        };
        self.state.store(n, Ordering::Relaxed);
    }

    /// Changes as `(namespace, name)`; an empty pair means "everything may have changed".
    pub fn subscribe(&self) -> broadcast::Receiver<(String, String)> {
        self.changes.subscribe()
    }

    /// The canary `namespace/name`, from the watch.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Canary>> {
        self.canaries
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// The states the watch saw for a canary, oldest first.
    pub fn timeline(&self, namespace: &str, name: &str) -> Vec<Point> {
        self.lock_timelines()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    fn lock_timelines(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<Point>>> {
        self.timelines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe(&self, canary: &Canary) {
        let key = (canary.namespace().unwrap_or_default(), canary.name_any());
        let point = point_of(canary, jiff::Timestamp::now().as_second());
        {
            let mut timelines = self.lock_timelines();
            let points = timelines.entry(key.clone()).or_default();
            push_point(points, point);
        }
        let _ = self.changes.send(key);
    }
}

/// The rollout state a canary's status shows at `now` (seconds).
pub fn point_of(canary: &Canary, now: i64) -> Point {
    let status = canary.status.clone().unwrap_or_default();
    // The newest outbox record carries this step's metric values.
    let checks = status
        .gitops
        .as_ref()
        .and_then(|g| g.pending.as_ref())
        .and_then(|p| p.last())
        .map(|r| r.checks.clone())
        .unwrap_or_default();
    Point {
        at: now,
        phase: status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Unknown".into()),
        weight: status.canary_weight.unwrap_or(0),
        failed_checks: status.failed_checks.unwrap_or(0),
        checks,
    }
}

/// Appends `point` unless it repeats the last one's rollout state; keeps the newest points.
pub fn push_point(points: &mut Vec<Point>, point: Point) {
    if let Some(last) = points.last()
        && last.phase == point.phase
        && last.weight == point.weight
        && last.failed_checks == point.failed_checks
        && last.checks == point.checks
    {
        return;
    }
    points.push(point);
    if points.len() > TIMELINE_POINTS {
        let extra = points.len() - TIMELINE_POINTS;
        points.drain(..extra);
    }
}

fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            matches!(e, kube::Error::Api(status) if status.code == 404)
        }
        _ => false,
    }
}

/// Namespaces that hold canaries, sorted.
pub fn namespaces(canaries: &[Arc<Canary>]) -> Vec<String> {
    let set: BTreeMap<String, ()> = canaries
        .iter()
        .map(|c| (c.namespace().unwrap_or_default(), ()))
        .collect();
    set.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryPhase, CanaryStatus};

    fn canary(phase: CanaryPhase, weight: i32) -> Canary {
        let mut c = Canary::new("podinfo", Default::default());
        c.status = Some(CanaryStatus {
            phase: Some(phase),
            canary_weight: Some(weight),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_point_reads_the_status() {
        let p = point_of(&canary(CanaryPhase::Progressing, 20), 7);
        assert_eq!(
            (p.at, p.phase.as_str(), p.weight, p.failed_checks),
            (7, "Progressing", 20, 0)
        );
        let none = point_of(&Canary::new("x", Default::default()), 1);
        assert_eq!(none.phase, "Unknown");
    }

    #[test]
    fn repeated_states_are_one_point() {
        let mut points = Vec::new();
        push_point(&mut points, point_of(&canary(CanaryPhase::Progressing, 10), 1));
        push_point(&mut points, point_of(&canary(CanaryPhase::Progressing, 10), 2));
        push_point(&mut points, point_of(&canary(CanaryPhase::Progressing, 20), 3));
        assert_eq!(points.iter().map(|p| p.at).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn the_timeline_keeps_the_newest_points() {
        let mut points = Vec::new();
        for i in 0..(TIMELINE_POINTS as i32 + 5) {
            push_point(
                &mut points,
                point_of(&canary(CanaryPhase::Progressing, i), i64::from(i)),
            );
        }
        assert_eq!(points.len(), TIMELINE_POINTS);
        assert_eq!(points[0].at, 5);
    }
}
