//! The Canary reconciler: the only place that knows the order of a reconcile.
//!
//! observe (target, routes, readiness, gates, metrics) -> decide (`rollout::decide`, pure)
//! -> act (routes, scaling, promotion) -> record (status, events, metrics, Git records).
//! Each running analysis ticks at its own `analysis.interval`; reconciles between ticks (a
//! target or config change, a spec edit) only detect new revisions, at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::time::Instant;

use super::RunConfig;
use super::events::Events;
use super::git::{self, Git};
use super::review::{self, Reviews};
use super::status::{self, ReadyCondition};
use super::steer::{self, Requests};
use super::watches;
use crate::analysis::{self, Analyzer};
use crate::api::{Canary, CanaryPhase, HookType, TargetKind};
use crate::hooks::Hooks;
use crate::rollout::{
    self, Action as Step, AnalysisAnswer, Answers, Decision, Gate, GateAnswer, Observation, Plan, Question,
    RecordKind, Requeue, Routes,
};
use crate::router::{self, AffinityCookies, RouteRequest, Router, ServiceRouter};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{
    AnalysisLabels, CanaryLabels, NamespaceLabels, OutcomeLabels, ResultLabels, WeightLabels,
};
use crate::workload::{self, Target, Workload};

/// How often an idle canary's generated objects are checked for drift.
const RESYNC: Duration = Duration::from_secs(300);

/// Flagger's finalizer, kept so canaries migrated from Flagger are finalized the same way.
pub const FINALIZER: &str = "finalizer.flagger.app";

/// The finalizer that holds a deletion until the router has deleted the routing objects the
/// garbage collector cannot (cluster-scoped ones, see `Router::cleans_up`).
pub const ROUTING_FINALIZER: &str = "flaggit.dev/routing";

/// What a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the canary has no namespace")]
    NoNamespace,
    #[error("cannot {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Workload(#[from] workload::Error),
    #[error(transparent)]
    Router(#[from] router::Error),
    #[error(transparent)]
    Analysis(#[from] analysis::Error),
    #[error(transparent)]
    Incompatible(#[from] Incompatible),
    #[error(
        "spec.targetRef {kind}/{name} is also the target of canary {other}: a workload can have only one canary; delete one of them"
    )]
    SharedTarget {
        kind: &'static str,
        name: String,
        other: String,
    },
}

/// Why a canary's provider and target cannot run together; the text names the field to
/// change.
#[derive(Debug, thiserror::Error)]
pub enum Incompatible {
    /// The default provider (`--mesh-provider`) names no provider.
    #[error("{0}")]
    Provider(String),
    /// A Knative Service with another provider, or provider knative with another target.
    #[error("{0}")]
    Target(String),
}

impl Incompatible {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Provider(_) => "InvalidRoute",
            Self::Target(_) => "InvalidTarget",
        }
    }
}

impl Error {
    /// A short fixed name for the kind of failure: event reason, condition reason and metric
    /// label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoNamespace => "NoNamespace",
            Self::Kube { .. } => "KubernetesApi",
            Self::Workload(e) => e.category(),
            Self::Router(e) => e.category(),
            Self::Analysis(e) => e.category(),
            Self::Incompatible(e) => e.category(),
            Self::SharedTarget { .. } => "SharedTarget",
        }
    }

    fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source }
    }
}

/// Per-canary scheduling kept in memory: when the next analysis tick is due, which spec
/// generation the generated objects were last brought in line with, and the error backoff.
#[derive(Default)]
struct Schedule {
    next_tick: Option<Instant>,
    ensured_at: Option<Instant>,
    seen_generation: Option<Option<i64>>,
    ensured_generation: Option<i64>,
    failures: u32,
}

pub(super) struct Context {
    pub(super) client: Client,
    pub(super) config: RunConfig,
    metrics: Arc<Metrics>,
    pub(super) store: Store<Canary>,
    events: Events,
    pub(super) analyzer: Analyzer,
    hooks: Hooks,
    workload_settings: workload::Settings,
    workloads: Mutex<HashMap<TargetKind, Arc<dyn Workload>>>,
    schedules: Mutex<HashMap<ObjectRef<Canary>, Schedule>>,
    pub(super) git: Git,
    /// Canaries whose routing objects someone changed (see `watches::Drift`).
    drift: watches::Drift,
    /// Release pull requests, when a forge is configured.
    reviews: Option<Reviews>,
    /// Commands from the command line (`flaggit promote`, `rollback`, ...).
    requests: Requests,
    notifier: crate::alerts::Notifier,
}

impl Context {
    fn schedule<T>(&self, key: &ObjectRef<Canary>, f: impl FnOnce(&mut Schedule) -> T) -> T {
        let mut schedules = self
            .schedules
            .lock()
            .expect("the schedule lock is never held across a panic");
        f(schedules.entry(key.clone()).or_default())
    }

    fn forget(&self, key: &ObjectRef<Canary>) {
        self.git.forget(key);
        if let Some(reviews) = &self.reviews {
            reviews.forget(key);
        }
        self.schedules
            .lock()
            .expect("the schedule lock is never held across a panic")
            .remove(key);
    }
}

/// Watches canaries and what they reference, and reconciles them until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    forge: Option<super::ForgeSetup>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Canary> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let service_targets = watches::ServiceTargets::default();
    let controller = Controller::for_stream(
        watches::canary_stream(api, writer, service_targets.clone()),
        store.clone(),
    );
    let controller = watches::add_watches(
        controller,
        &client,
        config.namespace.as_deref(),
        &store,
        &service_targets,
    );
    let drift = watches::Drift::default();
    let controller = controller
        .reconcile_on(watches::routing_triggers(
            client.clone(),
            config.namespace.clone(),
            store.clone(),
            drift.clone(),
            config.routing_discovery_interval,
        ))
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));
    let (forges, nudges) = match forge {
        Some(setup) => (Some(setup.forges), Some(setup.nudges)),
        None => (None, None),
    };
    let reviews = forges
        .clone()
        .map(|forges| Reviews::new(forges, config.forge_poll_interval));
    let hooks = match Hooks::new() {
        Ok(hooks) => hooks,
        Err(error) => {
            tracing::error!(error = %error, "cannot build the webhook client; not reconciling canaries");
            return;
        }
    };
    let notifier = match crate::alerts::Notifier::new(client.clone(), config.alerts.clone()) {
        Ok(notifier) => notifier,
        Err(error) => {
            tracing::error!(error = %error, "cannot build the alert client; not reconciling canaries");
            return;
        }
    };
    let (requests, requested) = steer::watch(&client, config.namespace.as_deref());
    let controller = controller.reconcile_on(requested);
    let context = Arc::new(Context {
        requests,
        notifier,
        events: Events::new(client.clone()),
        analyzer: Analyzer::new(
            client.clone(),
            analysis::Settings {
                metrics_server: config.metrics_server.clone(),
                mesh_provider: config.mesh_provider.clone(),
            },
        ),
        hooks,
        workload_settings: config.workload_settings(),
        git: Git::new(client.clone(), &config, forges, metrics.git.clone()),
        drift,
        reviews,
        client,
        config,
        metrics,
        store,
        workloads: Mutex::default(),
        schedules: Mutex::default(),
    });
    let housekeeping = tokio::spawn(housekeep(context.clone()));
    let previews = match (&context.reviews, context.config.pull_request_previews) {
        (Some(reviews), true) => Some(tokio::spawn(super::preview::run(
            context.clone(),
            reviews.forges.clone(),
        ))),
        _ => None,
    };
    let controller = match nudges {
        Some(nudges) => controller.reconcile_on(nudged_canaries(nudges, context.clone())),
        None => controller,
    };
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
    housekeeping.abort();
    if let Some(previews) = previews {
        previews.abort();
    }
    tracing::info!("canary controller stopped");
}

#[tracing::instrument(skip_all, fields(namespace = canary.namespace().unwrap_or_default(), name = %canary.name_any()))]
async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = canary.namespace().ok_or(Error::NoNamespace)?;
    let key = ObjectRef::from_obj(canary.as_ref());
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    // The store may lag behind our own last status write: act on the live object.
    let Some(canary) = api
        .get_opt(&canary.name_any())
        .await
        .map_err(Error::kube("read the canary"))?
    else {
        ctx.forget(&key);
        return Ok(Action::await_change());
    };
    let result = if canary.metadata.deletion_timestamp.is_some() {
        match ctx.parts(&canary) {
            Ok(parts) => super::finalize::finalize(&canary, &parts, &api, &ctx).await,
            // A provider and target flaggit cannot run together (the spec was switched after the
            // finalizer was added, say `provider: knative` on a Deployment): off-board without
            // its routes rather than never.
            Err(error @ Error::Incompatible(_)) => match ctx.parts_without_routes(&canary) {
                Ok(parts) => {
                    if !matches!(
                        canary.status.as_ref().and_then(|s| s.phase),
                        Some(CanaryPhase::Terminating | CanaryPhase::Terminated)
                    ) {
                        let message = format!(
                            "Deleting {}.{namespace} without its routes: {error}. Its routing objects were \
                             not restored: those flaggit created go with the Canary (owner references), one \
                             it took over keeps the last routes it was given",
                            canary.name_any()
                        );
                        publish(&ctx, &canary, true, error.category(), &message).await;
                    }
                    super::finalize::finalize(&canary, &parts, &api, &ctx).await
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        }
    } else {
        reconcile_live(&canary, &key, &api, &ctx).await
    };
    match &result {
        Ok(_) => {
            ctx.schedule(&key, |s| s.failures = 0);
            ctx.metrics
                .reconciles
                .get_or_create(&ResultLabels { result: "ok" })
                .inc();
        }
        Err(error) => report_error(&canary, &api, &ctx, error).await,
    }
    result
}

async fn reconcile_live(
    canary: &Canary,
    key: &ObjectRef<Canary>,
    api: &Api<Canary>,
    ctx: &Context,
) -> Result<Action, Error> {
    let parts = ctx.parts(canary)?;
    let capabilities = parts.router.capabilities();
    if let Some(refusal) = crate::api::refusal(&canary.spec, &parts.provider, capabilities) {
        // No traffic stays on a canary whose rollout cannot go on.
        let canary = route_back_to_primary(canary, &parts).await?;
        return refuse(&canary, api, ctx, "UnsupportedByProvider", &refusal.message).await;
    }
    let namespace = canary.namespace().unwrap_or_default();
    let plan = Plan::new(
        &canary.spec,
        &canary.name_any(),
        &namespace,
        capabilities,
        ctx.config.min_analysis_interval,
    );
    let generation = canary.metadata.generation;
    let seen = ctx.schedule(key, |s| s.seen_generation.replace(generation));
    if seen.is_none() {
        count_by_namespace(ctx);
    }
    if seen != Some(generation) {
        tracing::info!(
            target = %format!("{}/{}", plan.kind, plan.target),
            provider = %parts.provider,
            strategy = plan.strategy.as_str(),
            "{}",
            if seen.is_none() { "canary picked up" } else { "canary spec changed" }
        );
    }

    let now = Instant::now();
    let tick_due = ctx.schedule(key, |s| s.next_tick.is_none_or(|due| due <= now));
    // The generated objects are brought in line when the spec changes, at each analysis tick,
    // and every few minutes otherwise (someone may have edited or deleted one).
    let drifted = ctx.drift.take(key);
    let stale = drifted
        || ctx.schedule(key, |s| {
            s.ensured_generation != generation || s.ensured_at.is_none_or(|at| now - at > RESYNC)
        });

    // Validate before anything moves: a bad reference is reported, never acted on. The
    // references are re-read only when something can move (not on the wake-ups between
    // ticks that a Deployment's status changes cause).
    let target = parts.workload.observe(canary).await?;
    check_shared_target(canary, &ctx.store)?;
    let source = ctx.git.source(&ctx.client, canary, &target).await;
    // With a repository, a deletion waits for its off-boarding record to reach Git.
    // A router with cluster-scoped objects deletes them itself (no owner references).
    status::sync_finalizers(
        canary,
        api,
        matches!(source, Ok(Some(_))),
        parts.router.cleans_up(),
    )
    .await?;
    if let Ok(Some(source)) = &source {
        if let Some(status) = &canary.status
            && git::blocks(canary)
            && crate::gitops::outbox::has_pending(Some(status))
        {
            // gitops.failurePolicy Block: the next step waits until Git has the last one.
            ctx.git.flush(canary, status, source, None);
            tracing::info!("holding the rollout until its records are pushed to Git");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        // Never initialized: no phase, or only the Initializing an early error shows.
        let fresh = canary.status.as_ref().is_none_or(|s| {
            s.last_promoted_spec.is_none() && matches!(s.phase, None | Some(CanaryPhase::Initializing))
        });
        if fresh && let Some(action) = recover(canary, &target, &parts, api, ctx, source).await? {
            return Ok(action);
        }
    }
    if stale || tick_due {
        ctx.analyzer.verify(canary).await?;
    }

    let uninitialized = matches!(
        canary.status.as_ref().and_then(|s| s.phase),
        None | Some(CanaryPhase::Initializing)
    );
    let running = canary.status.as_ref().and_then(|s| s.phase).is_some_and(|p| {
        matches!(
            p,
            CanaryPhase::Progressing
                | CanaryPhase::WaitingPromotion
                | CanaryPhase::Promoting
                | CanaryPhase::Finalising
        )
    });
    if stale || (running && tick_due) {
        ensure_generated_objects(canary, &target, &parts).await?;
        ctx.schedule(key, |s| {
            s.ensured_generation = generation;
            s.ensured_at = Some(now);
        });
    }
    // Once per spec while initializing: a provider that is down is worth a warning, not a stop.
    if uninitialized
        && stale
        && !plan.skip_analysis
        && let Err(error) = ctx.analyzer.check_providers(canary).await
    {
        publish(ctx, canary, true, error.category(), &error.to_string()).await;
    }

    let started = std::time::Instant::now();
    let mut routes = parts.router.get_routes(canary).await?;
    // Reconcile keeps the live weights (a rollout's own); between rollouts they are all on
    // the primary, so a hand edit of them is put back too.
    let idle = canary.status.as_ref().and_then(|s| s.phase).is_some_and(|p| {
        matches!(
            p,
            CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed
        )
    });
    if stale && idle && parts.capabilities().weighted && routes != rollout::Routes::PRIMARY {
        tracing::info!(
            canary = routes.canary,
            "routes drifted from the primary; putting them back"
        );
        let request = RouteRequest {
            routes: rollout::Routes::PRIMARY,
            cookies: AffinityCookies::stored(canary.status.as_ref()),
        };
        parts.router.set_routes(canary, &request).await?;
        routes = rollout::Routes::PRIMARY;
    }
    let mut status = canary.status.clone().unwrap_or_default();
    let reviewed = match (&ctx.reviews, &source) {
        (Some(reviews), Ok(Some(source))) if review::applies(canary) => {
            review::sync(
                reviews,
                &ctx.client,
                canary,
                &mut status,
                source,
                &target.revision.hash,
            )
            .await;
            true
        }
        _ => false,
    };
    let answers = steer::sync(&ctx.requests, &ctx.client, canary, &mut status, reviewed).await;
    let mut obs = Observation {
        now: jiff::Timestamp::now(),
        revision: target.revision.clone(),
        routes,
        suspended: canary.spec.suspend.unwrap_or(false),
        retry: canary.annotations().get(watches::RETRY_ANNOTATION).cloned(),
        tick_due,
        answers: Answers::default(),
    };
    let decision = loop {
        match rollout::decide(&plan, &status, &obs) {
            rollout::Step::Decide(decision) => break *decision,
            rollout::Step::Ask(question) => {
                answer(question, canary, &target, &parts, ctx, &mut obs).await?;
                if let Question::Gate(gate) = question
                    && let Some((_, answer)) = obs.answers.gates.iter_mut().find(|(g, _)| *g == gate)
                {
                    if reviewed {
                        review::answer_gate(
                            canary,
                            &status,
                            &target.revision.hash,
                            gate,
                            answer,
                            jiff::Timestamp::now(),
                        );
                    }
                    steer::answer_gate(&status, gate, answer);
                }
            }
        }
    };

    let mut live = canary.clone();
    act(&decision, &mut live, &target, &parts, ctx).await?;
    let mut new_status = decision.status.clone();
    if let Some(cookies) = &live.status {
        new_status.session_affinity_cookie = cookies.session_affinity_cookie.clone();
        new_status.previous_session_affinity_cookie = cookies.previous_session_affinity_cookie.clone();
        new_status.primary_session_affinity_cookie = cookies.primary_session_affinity_cookie.clone();
    }
    match &source {
        Ok(Some(source)) => {
            let rolled_back = decision.records.iter().any(|r| r.kind == RecordKind::RolledBack);
            let (primary_images, primary_configs) = if rolled_back {
                let namespace = canary.namespace().unwrap_or_default();
                let configs = target.revision.configs.keys();
                (
                    parts.workload.primary_images(canary).await?,
                    workload::primary_checksums(&ctx.client, &namespace, configs).await?,
                )
            } else {
                Default::default()
            };
            // Once per rollback: the decision that rolls back is made once.
            let configs = &target.revision.configs;
            for secret in crate::gitops::message::changed_configs("secret", configs, &primary_configs) {
                let note = crate::gitops::message::secret_note(&secret);
                publish(ctx, canary, true, "SecretNotReverted", &note).await;
            }
            let mut records =
                git::pending_records(&decision.records, &target, primary_images, primary_configs);
            if reviewed {
                review::annotate(&mut records, &status, &mut new_status, ctx.git.level(canary));
            }
            steer::annotate(&mut records, &mut new_status);
            git::add_records(&mut new_status, records, source, ctx.git.level(canary));
        }
        Ok(None) => git::describe(&mut new_status, Ok(None)),
        Err(error) => git::describe(&mut new_status, Err(error)),
    }
    let stored = status::write(api, canary, &new_status, ReadyCondition::ok()).await?;
    steer::answer(&ctx.client, answers).await;
    report_git_message(canary, &new_status, ctx).await;
    if let Ok(Some(source)) = &source {
        ctx.git.flush(canary, &new_status, source, stored);
    }
    record(&decision, canary, &plan, ctx, started.elapsed()).await;
    // An open release pull request is read at least every poll interval.
    let open_pull_request = new_status
        .gitops
        .as_ref()
        .and_then(|g| g.pull_request.as_ref())
        .is_some_and(|p| p.state == "open");
    let poll = match &ctx.reviews {
        Some(reviews) if reviewed && open_pull_request => Some(reviews.poll_every()),
        _ => None,
    };
    Ok(ctx.schedule(key, |s| next_action(s, decision.requeue, plan.interval, poll)))
}

/// The canaries a webhook delivery is about: those whose release pull request it names.
fn nudged_canaries(
    nudges: tokio::sync::mpsc::Receiver<crate::forge::receiver::Nudge>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<Canary>> + Send + 'static {
    receiver_stream(nudges).flat_map(move |nudge| {
        let keys: Vec<ObjectRef<Canary>> = ctx
            .store
            .state()
            .iter()
            .filter(|c| {
                let gitops = c.status.as_ref().and_then(|s| s.gitops.as_ref());
                let number = gitops.and_then(|g| g.pull_request.as_ref()).map(|p| p.number);
                // GitLab names the project by its whole path, GitHub and Gitea by owner/name.
                let repos = gitops
                    .and_then(|g| g.repository.as_deref())
                    .map(crate::forge::select::Forges::repo_ids_of)
                    .unwrap_or_default();
                number == Some(nudge.number as i64) && repos.contains(&nudge.repo)
            })
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect();
        if let Some(reviews) = &ctx.reviews {
            for key in &keys {
                reviews.nudge(key.clone());
            }
        }
        tracing::debug!(delivery = %nudge.delivery, canaries = keys.len(), "webhook delivery for a release pull request");
        futures::stream::iter(keys)
    })
}

/// A Tokio channel as a Stream (what `tokio_stream::wrappers::ReceiverStream` does, without the crate).
fn receiver_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Says once, in a warning event, why a canary's rollouts are not written to Git.
async fn report_git_message(canary: &Canary, status: &crate::api::CanaryStatus, ctx: &Context) {
    let message = |s: Option<&crate::api::CanaryStatus>| {
        s.and_then(|s| s.gitops.as_ref()).and_then(|g| g.message.clone())
    };
    let new = message(Some(status));
    if new.is_some() && new != message(canary.status.as_ref()) {
        publish(ctx, canary, true, "GitSource", new.as_deref().unwrap_or_default()).await;
    }
}

/// Rebuild recovery: a canary with no status whose ledger in Git says another version was
/// promoted gets its primary recreated at that version, and the target's version goes
/// through the analysis instead of being promoted unanalysed (flagger#1577).
async fn recover(
    canary: &Canary,
    target: &Target,
    parts: &Parts,
    api: &Api<Canary>,
    ctx: &Context,
    source: &crate::gitops::source::Source,
) -> Result<Option<Action>, Error> {
    if !parts.workload.primary_images(canary).await?.is_empty() {
        // A primary exists: it, not the ledger, says what serves.
        return Ok(None);
    }
    let namespace = canary.namespace().unwrap_or_default();
    let ledger = match ctx
        .git
        .writer
        .ledger(source, &namespace, &canary.name_any())
        .await
    {
        Ok(ledger) => ledger,
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the ledger; initializing from the target as Flagger does");
            None
        }
    };
    let Some(promoted) = ledger.and_then(|l| l.promoted) else {
        return Ok(None);
    };
    let current = target.images();
    let (configs, restore) = git::restored_configs(&target.revision.configs, &promoted);
    let differs = promoted
        .images
        .iter()
        .any(|(container, image)| current.get(container).is_some_and(|now| now != image));
    if !differs && restore.is_empty() {
        return Ok(None);
    }
    let mut pinned = target.clone();
    pinned.pinned_images = Some(promoted.images.clone());
    ensure_generated_objects(canary, &pinned, parts).await?;
    // The promoted ConfigMaps' data from the ledger; Secrets stay as Git declares them.
    workload::restore_primary_config_maps(&ctx.client, canary, &restore).await?;
    let mut template = target.template.clone();
    workload::template::pin_images(&mut template, &promoted.images);
    let revision = workload::template::revision(&template, configs);

    let mut status = crate::api::CanaryStatus {
        phase: Some(CanaryPhase::Initialized),
        canary_weight: Some(0),
        failed_checks: Some(0),
        iterations: Some(0),
        last_applied_spec: Some(revision.hash.clone()),
        last_promoted_spec: Some(revision.hash.clone()),
        tracked_configs: (!revision.configs.is_empty()).then(|| revision.configs.clone()),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        )),
        ..Default::default()
    };
    let images =
        |m: &std::collections::BTreeMap<String, String>| m.values().cloned().collect::<Vec<_>>().join(", ");
    let mut reason = format!(
        "the Git ledger says {} was promoted (config commit {}); the primary was recreated at it and {} will be analysed",
        images(&promoted.images),
        if promoted.commit.is_empty() {
            "unknown"
        } else {
            &promoted.commit
        },
        images(&current)
    );
    if !restore.is_empty() {
        let names: Vec<&str> = restore.keys().map(String::as_str).collect();
        reason.push_str(&format!(
            "; the primary runs the promoted data of ConfigMap {} again",
            names.join(", ")
        ));
    }
    let mut record = git::own_record(
        "Recovered",
        &revision.hash,
        "Initialized",
        reason.clone(),
        promoted.images.clone(),
    );
    record.configs = revision.configs.clone();
    git::add_records(&mut status, vec![record], source, ctx.git.level(canary));
    let stored = status::write(api, canary, &status, ReadyCondition::ok()).await?;
    publish(
        ctx,
        canary,
        false,
        "Recovered",
        &format!("Recovered {}: {reason}", canary.name_any()),
    )
    .await;
    ctx.git.flush(canary, &status, source, stored);
    Ok(Some(Action::requeue(Duration::from_secs(1))))
}

/// The implementations a canary uses, chosen by its target kind and provider.
pub(super) struct Parts {
    /// The provider in force: `spec.provider` or `--mesh-provider`.
    pub provider: crate::api::MeshProvider,
    pub workload: Arc<dyn Workload>,
    pub router: Box<dyn Router>,
    pub services: ServiceRouter,
}

impl Parts {
    pub fn capabilities(&self) -> crate::api::Capabilities {
        self.router.capabilities()
    }
}

impl Context {
    fn provider(&self, canary: &Canary) -> Result<crate::api::MeshProvider, Error> {
        match canary.spec.provider {
            Some(provider) => Ok(provider.into()),
            None => self
                .config
                .mesh_provider
                .parse()
                .map_err(|e: crate::api::UnknownProvider| Incompatible::Provider(e.to_string()).into()),
        }
    }

    pub(super) fn parts(&self, canary: &Canary) -> Result<Parts, Error> {
        let provider = self.provider(canary)?;
        let knative_target = workload::is_knative_target(canary);
        let workload: Arc<dyn Workload> = match (provider.provider, knative_target) {
            // A Knative Service has its revisions, no -primary copy (Flagger's KnativeController).
            (crate::api::Provider::Knative, true) => {
                Arc::new(workload::KnativeWorkload::new(self.client.clone()))
            }
            (crate::api::Provider::Knative, false) => {
                return Err(Incompatible::Target(
                    "spec.targetRef must name a Knative Service (apiVersion serving.knative.dev/v1, kind Service) for provider knative"
                        .into(),
                )
                .into());
            }
            (_, true) => {
                return Err(Incompatible::Target(format!(
                    "spec.targetRef names a Knative Service, which only provider knative can route (spec.provider is {provider}): set spec.provider: knative"
                ))
                .into());
            }
            (_, false) => self.workload(canary.spec.target_ref.kind)?,
        };
        Ok(Parts {
            workload,
            router: router::for_provider(&provider, self.client.clone(), &self.config.routers)?,
            services: ServiceRouter::new(self.client.clone()),
            provider,
        })
    }

    /// The parts of a canary being deleted whose provider cannot be routed through: the
    /// routes are left alone (`kubernetes`, which writes none), the rest is off-boarded.
    fn parts_without_routes(&self, canary: &Canary) -> Result<Parts, Error> {
        let provider = crate::api::MeshProvider::from(crate::api::Provider::Kubernetes);
        Ok(Parts {
            workload: self.workload(canary.spec.target_ref.kind)?,
            router: router::for_provider(&provider, self.client.clone(), &self.config.routers)?,
            services: ServiceRouter::new(self.client.clone()),
            provider,
        })
    }

    /// The workload implementation of a target kind, made once: it caches what it
    /// discovers about the cluster (the autoscaling API version).
    fn workload(&self, kind: TargetKind) -> Result<Arc<dyn Workload>, Error> {
        let mut workloads = self
            .workloads
            .lock()
            .expect("the workload lock is never held across a panic");
        if let Some(workload) = workloads.get(&kind) {
            return Ok(workload.clone());
        }
        let workload: Arc<dyn Workload> = Arc::from(workload::for_target(
            kind,
            self.client.clone(),
            self.workload_settings.clone(),
        )?);
        workloads.insert(kind, workload.clone());
        Ok(workload)
    }
}

/// Refuses a canary its provider cannot run: the `Ready` condition says why (naming the
/// field), one warning event says it once, `kubectl get canary` shows the phase and weight,
/// and nothing is rolled out until the spec changes (the watch wakes it then).
async fn refuse(
    canary: &Canary,
    api: &Api<Canary>,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    tracing::warn!(reason, message, "canary refused");
    let new_status = with_columns(canary.status.clone().unwrap_or_default());
    let changed = status::ready_message(canary) != Some(message);
    status::write(api, canary, &new_status, ReadyCondition::failed(reason, message)).await?;
    if changed {
        publish(ctx, canary, true, reason, message).await;
    }
    Ok(Action::await_change())
}

/// A canary refused while its rollout had traffic on the canary: every request goes back to
/// the primary at once (no mirroring, no affinity cookies), and the canary it returns says
/// weight 0, so the refusal's status write shows it. Fixing the spec resumes the analysis
/// from weight 0. A canary with no traffic on it is returned as it is.
async fn route_back_to_primary(canary: &Canary, parts: &Parts) -> Result<Canary, Error> {
    let weight = canary.status.as_ref().and_then(|s| s.canary_weight).unwrap_or(0);
    if weight == 0 {
        return Ok(canary.clone());
    }
    parts
        .router
        .set_routes(canary, &RouteRequest::from(Routes::PRIMARY))
        .await?;
    tracing::warn!(
        weight,
        "refused mid-rollout: all traffic routed back to the primary"
    );
    let mut canary = canary.clone();
    canary.status.get_or_insert_default().canary_weight = Some(0);
    Ok(canary)
}

/// A status that `kubectl get canary` shows: a canary that never got going (refused, or
/// failing before its first status) is `Initializing` at weight 0 rather than blank.
fn with_columns(mut status: crate::api::CanaryStatus) -> crate::api::CanaryStatus {
    if status.phase.is_none() {
        status.phase = Some(CanaryPhase::Initializing);
        status.canary_weight = Some(0);
        status.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
    }
    status
}

/// Services, the primary workload and the routing objects, in Flagger's order: the primary
/// and canary Services, the primary, the apex Service, then the mesh routes.
async fn ensure_generated_objects(canary: &Canary, target: &Target, parts: &Parts) -> Result<(), Error> {
    let ports: std::collections::BTreeMap<String, i32> = target
        .discovered_ports
        .iter()
        .filter_map(|p| Some((p.name.clone()?, p.port)))
        .collect();
    if !parts.capabilities().services || canary.spec.target_ref.kind == TargetKind::Service {
        // Knative-style routers split traffic between revisions, and a Service target makes
        // its own `-primary`/`-canary` copies and is the apex: no Services to generate.
        parts.workload.initialize(canary, target).await?;
        parts
            .router
            .reconcile(canary, &AffinityCookies::stored(canary.status.as_ref()))
            .await?;
        return Ok(());
    }
    parts
        .services
        .initialize(canary, &target.selector_label, &target.selector_value, &ports)
        .await?;
    parts.workload.initialize(canary, target).await?;
    parts
        .services
        .reconcile(canary, &target.selector_label, &target.selector_value, &ports)
        .await?;
    parts
        .router
        .reconcile(canary, &AffinityCookies::stored(canary.status.as_ref()))
        .await?;
    Ok(())
}

/// Answers one question of the state machine by looking at the cluster, the webhooks or the
/// metrics.
async fn answer(
    question: Question,
    canary: &Canary,
    target: &Target,
    parts: &Parts,
    ctx: &Context,
    obs: &mut Observation,
) -> Result<(), Error> {
    let phase = canary
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(CanaryPhase::Initializing);
    match question {
        Question::PrimaryReady => {
            obs.answers.primary_ready = Some(parts.workload.primary_ready(canary, obs.now).await?)
        }
        Question::CanaryReady => {
            obs.answers.canary_ready = Some(parts.workload.canary_ready(canary, obs.now).await?)
        }
        Question::Gate(gate) => {
            let hook = match gate {
                Gate::ConfirmRollout => HookType::ConfirmRollout,
                Gate::PreRollout => HookType::PreRollout,
                Gate::ConfirmTrafficIncrease => HookType::ConfirmTrafficIncrease,
                Gate::ConfirmPromotion => HookType::ConfirmPromotion,
                Gate::Rollback => HookType::Rollback,
            };
            // For `rollback`, "passed" means a rollback hook answered 2xx: roll back.
            let result = ctx.hooks.gate(canary, hook, phase).await;
            obs.answers.set_gate(
                gate,
                GateAnswer {
                    open: result.passed,
                    message: result.message,
                    mute_alert: result.mute_alert,
                },
            );
        }
        Question::Analysis => {
            let hooks = ctx.hooks.gate(canary, HookType::Rollout, phase).await;
            obs.answers.analysis = Some(if !hooks.passed {
                AnalysisAnswer {
                    failure: Some(hooks.message),
                    checks: Vec::new(),
                }
            } else {
                let checks = ctx.analyzer.run(canary).await;
                AnalysisAnswer {
                    failure: checks.iter().find(|c| !c.passed).map(|c| c.message.clone()),
                    checks,
                }
            });
        }
        Question::TargetIsPrimary => {
            obs.answers.target_is_primary = Some(parts.workload.target_matches_primary(canary, target).await?)
        }
    }
    Ok(())
}

/// Carries out the decision's actions in order. `canary` gets the session affinity cookies
/// the routes need.
async fn act(
    decision: &Decision,
    canary: &mut Canary,
    target: &Target,
    parts: &Parts,
    ctx: &Context,
) -> Result<(), Error> {
    for action in &decision.actions {
        match action {
            Step::SetRoutes(routes) => {
                // The cookies go to the router in the request and to the status, so that a
                // retry of this step sends the same ones.
                let cookies = router::next_affinity_cookies(canary, *routes, &mut rand::thread_rng());
                let status = canary.status.get_or_insert_default();
                status.session_affinity_cookie = cookies.canary.clone();
                status.primary_session_affinity_cookie = cookies.primary.clone();
                status.previous_session_affinity_cookie = cookies.previous.clone();
                let request = RouteRequest {
                    routes: *routes,
                    cookies,
                };
                parts.router.set_routes(canary, &request).await?;
                set_weight_metrics(canary, &ctx.metrics, *routes);
            }
            Step::ScaleCanaryUp => parts.workload.scale_from_zero(canary, target).await?,
            Step::ScaleCanaryDown => parts.workload.scale_to_zero(canary).await?,
            Step::Promote => parts.workload.promote(canary, target).await?,
            Step::PostRolloutHooks(phase) => {
                // Reported, never waited on by the next release: Flagger ignores the answer too.
                let result = ctx.hooks.gate(canary, HookType::PostRollout, *phase).await;
                if !result.passed {
                    tracing::warn!(message = %result.message, "post-rollout webhook failed");
                }
            }
        }
    }
    Ok(())
}

/// Events, metrics and the Git records of a decision.
async fn record(decision: &Decision, canary: &Canary, plan: &Plan, ctx: &Context, took: Duration) {
    let phase = decision.status.phase;
    for event in &decision.events {
        publish(ctx, canary, event.warning, "Synced", &event.message).await;
        forward_event(ctx, canary, phase.unwrap_or(CanaryPhase::Initializing), event);
    }
    let namespace = plan.namespace.clone();
    ctx.metrics
        .canary_status
        .get_or_create(&CanaryLabels {
            name: plan.target.clone(),
            namespace: namespace.clone(),
        })
        .set(match phase {
            Some(CanaryPhase::Progressing) => 0,
            Some(CanaryPhase::Failed) => 2,
            _ => 1,
        });
    if decision.analysed {
        ctx.metrics
            .canary_duration
            .get_or_create(&CanaryLabels {
                name: plan.target.clone(),
                namespace: namespace.clone(),
            })
            .observe(took.as_secs_f64());
    }
    for record in &decision.records {
        for check in &record.checks {
            if let Some(value) = check.value {
                ctx.metrics
                    .metric_analysis
                    .get_or_create(&AnalysisLabels {
                        name: plan.name.clone(),
                        namespace: namespace.clone(),
                        metric: check.name.clone(),
                    })
                    .set(value);
            }
        }
        tracing::info!(
            kind = ?record.kind,
            revision = %record.revision,
            phase = ?record.phase,
            weight = record.weight,
            iteration = record.iteration,
            failed_checks = record.failed_checks,
            reason = %record.reason,
            "rollout record"
        );
    }
    if let Some(outcome) = decision.outcome {
        let (family, status) = match outcome {
            rollout::Outcome::Succeeded { skipped } => (
                &ctx.metrics.successes,
                if skipped { "skipped" } else { "completed" },
            ),
            rollout::Outcome::Failed => (&ctx.metrics.failures, "completed"),
        };
        family
            .get_or_create(&OutcomeLabels {
                name: plan.target.clone(),
                namespace,
                deployment_strategy: plan.strategy.as_str().into(),
                analysis_status: status.into(),
            })
            .inc();
    }
    for alert in &decision.alerts {
        tracing::info!(severity = ?alert.severity, message = %alert.message, "alert");
        ctx.notifier.notify(canary, alert);
    }
}

/// Sends an event to the canary's `event` webhooks (or the controller-wide one) in the
/// background: a slow receiver never holds up the rollout.
fn forward_event(ctx: &Context, canary: &Canary, phase: CanaryPhase, event: &rollout::Event) {
    let global = ctx.config.event_webhook.clone();
    if global.is_none() && !crate::hooks::has(canary, HookType::Event) {
        return;
    }
    let (hooks, canary, message, warning) = (
        ctx.hooks.clone(),
        canary.clone(),
        event.message.clone(),
        event.warning,
    );
    tokio::spawn(async move {
        if let Err(error) = hooks
            .event(&canary, phase, &message, warning, global.as_deref())
            .await
        {
            tracing::warn!(error = %error, "event webhook failed");
        }
    });
}

/// Publishes a Kubernetes event on the canary; a failure to publish is logged, not fatal.
pub(super) async fn publish(ctx: &Context, canary: &Canary, warning: bool, reason: &str, message: &str) {
    ctx.events.publish(canary, warning, reason, message).await
}

/// Reports a failed reconcile in the canary's `Ready` condition and, when the message is
/// new, in a warning event.
async fn report_error(canary: &Canary, api: &Api<Canary>, ctx: &Context, error: &Error) {
    tracing::warn!(error = %error, category = error.category(), "reconcile failed");
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels {
            result: error.category(),
        })
        .inc();
    let message = error.to_string();
    let changed = status::ready_message(canary) != Some(message.as_str());
    let status = with_columns(canary.status.clone().unwrap_or_default());
    if let Err(write_error) = status::write(
        api,
        canary,
        &status,
        ReadyCondition::failed(error.category(), &message),
    )
    .await
    {
        tracing::warn!(error = %write_error, "cannot report the error in the canary status");
    }
    if changed {
        publish(ctx, canary, true, error.category(), &message).await;
    }
}

fn error_policy(canary: Arc<Canary>, _error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(canary.as_ref());
    let failures = ctx.schedule(&key, |s| {
        s.failures = s.failures.saturating_add(1);
        s.failures
    });
    // 5 s, 10 s, 20 s ... up to 5 minutes: a broken canary never busy-loops.
    let delay = Duration::from_secs(5)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(300));
    Action::requeue(delay)
}

/// When the next reconcile of a canary happens, and when its next tick is due.
/// `poll` caps the wait (an open release pull request is read that often).
fn next_action(
    schedule: &mut Schedule,
    requeue: Requeue,
    interval: Duration,
    poll: Option<Duration>,
) -> Action {
    let now = Instant::now();
    let after = match requeue {
        Requeue::Idle => {
            schedule.next_tick = None;
            // The watches wake the canary on any change; the resync repairs drift.
            RESYNC
        }
        Requeue::Interval => {
            schedule.next_tick = Some(now + interval);
            interval
        }
        Requeue::Soon => {
            let soon = interval.min(rollout::SOON);
            schedule.next_tick = Some(now + soon);
            soon
        }
        Requeue::Keep => match schedule.next_tick {
            Some(due) if due > now => due - now,
            _ => Duration::from_millis(100),
        },
    };
    Action::requeue(poll.map_or(after, |poll| after.min(poll)))
}

/// Refuses a canary whose target another canary in the namespace already releases.
fn check_shared_target(canary: &Canary, store: &Store<Canary>) -> Result<(), Error> {
    let target = &canary.spec.target_ref;
    let uid = canary.uid();
    let namespace = canary.namespace();
    let mut others: Vec<_> = store
        .state()
        .iter()
        .filter(|other| other.uid() != uid && other.namespace() == namespace)
        .filter(|other| other.meta().deletion_timestamp.is_none())
        .filter(|other| {
            other.spec.target_ref.kind == target.kind && other.spec.target_ref.name == target.name
        })
        .map(|other| {
            (
                other.metadata.creation_timestamp.clone().map(|t| t.0),
                other.name_any(),
            )
        })
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    others.sort();
    // The oldest canary keeps the target; every later one is refused.
    let mine = (
        canary.metadata.creation_timestamp.clone().map(|t| t.0),
        canary.name_any(),
    );
    match others.first() {
        Some(oldest) if *oldest < mine => Err(Error::SharedTarget {
            kind: target.kind.as_str(),
            name: target.name.clone(),
            other: oldest.1.clone(),
        }),
        _ => Ok(()),
    }
}

fn set_weight_metrics(canary: &Canary, metrics: &Metrics, routes: Routes) {
    let namespace = canary.namespace().unwrap_or_default();
    let target = &canary.spec.target_ref.name;
    metrics
        .canary_weight
        .get_or_create(&WeightLabels {
            workload: format!("{target}-primary"),
            namespace: namespace.clone(),
        })
        .set(routes.primary.into());
    metrics
        .canary_weight
        .get_or_create(&WeightLabels {
            workload: target.clone(),
            namespace,
        })
        .set(routes.canary.into());
}

/// Every 10 s, as Flagger's control loop: `flagger_canary_total` from the watch cache, and
/// the schedules of canaries that are gone (a deletion without finalizer is not reconciled).
async fn housekeep(ctx: Arc<Context>) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        count_by_namespace(&ctx);
        let live: std::collections::HashSet<_> = ctx
            .store
            .state()
            .iter()
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect();
        ctx.schedules
            .lock()
            .expect("the schedule lock is never held across a panic")
            .retain(|key, _| live.contains(key));
    }
}

/// Sets `flagger_canary_total{namespace}` from the watch cache.
fn count_by_namespace(ctx: &Context) {
    let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
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
