//! The Canary watch: every Canary the controller can see is reconciled here.
//!
//! For now a reconcile reports the canary (picked up, or its spec changed) and keeps the
//! `flagger_canary_total` gauge; the rollout engine plugs in behind this seam.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::RunConfig;
use crate::api::{Canary, TargetKind};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{NamespaceLabels, ResultLabels};

/// What a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the canary has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoNamespace => "NoNamespace",
        }
    }
}

struct Context {
    config: RunConfig,
    metrics: Arc<Metrics>,
    store: Store<Canary>,
    /// The generation each canary was last reported at.
    seen: Mutex<HashMap<ObjectRef<Canary>, Option<i64>>>,
}

/// Watches canaries and reconciles them until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Canary> = match &config.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let controller = Controller::new(api, watcher::Config::default().any_semantic());
    let context = Arc::new(Context {
        config,
        metrics,
        store: controller.store(),
        seen: Mutex::default(),
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
    tracing::info!("canary controller stopped");
}

#[tracing::instrument(skip_all, fields(namespace = canary.namespace().unwrap_or_default(), name = %canary.name_any()))]
async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action, Error> {
    canary.namespace().ok_or(Error::NoNamespace)?;
    let key = ObjectRef::from_obj(canary.as_ref());
    let generation = canary.metadata.generation;
    let previous = ctx
        .seen
        .lock()
        .expect("the seen-map lock is never held across a panic")
        .insert(key, generation);
    let spec = &canary.spec;
    let provider = spec
        .provider
        .map(|p| p.as_str())
        .unwrap_or(ctx.config.mesh_provider.as_str());
    let target = format!("{}/{}", kind_name(spec.target_ref.kind), spec.target_ref.name);
    match previous {
        None => tracing::info!(target = %target, provider, strategy = strategy(&canary), "canary picked up"),
        Some(seen) if seen != generation => {
            tracing::info!(target = %target, provider, strategy = strategy(&canary), "canary spec changed")
        }
        Some(_) => {}
    }
    count_by_namespace(&ctx);
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels { result: "ok" })
        .inc();
    Ok(Action::await_change())
}

fn error_policy(_canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "reconcile failed");
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels {
            result: error.category(),
        })
        .inc();
    Action::requeue(Duration::from_secs(10))
}

/// Sets `flagger_canary_total{namespace}` from the watch cache.
fn count_by_namespace(ctx: &Context) {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for canary in ctx.store.state() {
        *counts.entry(canary.namespace().unwrap_or_default()).or_default() += 1;
    }
    ctx.metrics.canary_total.clear();
    for (namespace, count) in counts {
        ctx.metrics
            .canary_total
            .get_or_create(&NamespaceLabels { namespace })
            .set(count);
    }
}

fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Deployment => "Deployment",
        TargetKind::DaemonSet => "DaemonSet",
        TargetKind::Service => "Service",
    }
}

/// The deployment strategy the analysis implies, named as in Flagger's metrics.
fn strategy(canary: &Canary) -> &'static str {
    let Some(analysis) = canary.spec.analysis() else {
        return "canary";
    };
    let iterations = analysis.iterations.unwrap_or(0) > 0;
    let has_match = analysis.match_.as_ref().is_some_and(|m| !m.is_empty());
    match (iterations, has_match) {
        (true, true) => "ab-testing",
        (true, false) => "blue-green",
        _ => "canary",
    }
}
