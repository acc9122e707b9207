//! Deleting a Canary with `revertOnDeletion`: the target is scaled back up and must be ready
//! before the apex Service and the routes are pointed back at it, so there is never a moment
//! without ready pods behind the apex. Then the finalizer goes and the garbage collector
//! removes the generated objects; cluster-scoped routing objects, which it cannot remove,
//! are deleted by the router (the routing finalizer).

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::canary::{Context, Error, FINALIZER, Parts, ROUTING_FINALIZER, publish};
use super::git::{self, LEDGER_FINALIZER};
use super::status::{self, ReadyCondition};
use crate::api::{Canary, CanaryPhase, CanaryStatus};
use crate::rollout::{Readiness, promoted_condition};

/// How often a finalizing canary checks whether its target is ready.
const RECHECK: Duration = Duration::from_secs(2);

pub(super) async fn finalize(
    canary: &Canary,
    parts: &Parts,
    api: &Api<Canary>,
    ctx: &Context,
) -> Result<Action, Error> {
    let ledger = canary.finalizers().iter().any(|f| f == LEDGER_FINALIZER);
    let routing = canary.finalizers().iter().any(|f| f == ROUTING_FINALIZER);
    if !canary.finalizers().iter().any(|f| f == FINALIZER) {
        if routing {
            // After any revert: the routing objects the garbage collector cannot remove.
            parts.router.delete(canary).await?;
            status::remove_finalizer(canary, api, ROUTING_FINALIZER).await?;
            return Ok(if ledger {
                Action::requeue(Duration::from_millis(200))
            } else {
                Action::await_change()
            });
        }
        if ledger {
            return off_board(canary, parts, api, ctx).await;
        }
        return Ok(Action::await_change());
    }
    let id = format!("{}.{}", canary.name_any(), canary.namespace().unwrap_or_default());
    let kind = canary.spec.target_ref.kind.as_str();
    let phase = canary.status.as_ref().and_then(|s| s.phase);
    if !matches!(phase, Some(CanaryPhase::Terminating | CanaryPhase::Terminated)) {
        publish(ctx, canary, false, "Synced", &format!("Terminating canary {id}")).await;
        write_phase(api, canary, CanaryPhase::Terminating, kind).await?;
    }

    match parts.workload.observe(canary).await {
        Ok(target) => {
            parts.workload.finalize(canary).await?;
            match parts
                .workload
                .canary_ready(canary, jiff::Timestamp::now())
                .await?
            {
                Readiness::Ready => {}
                Readiness::Waiting(why) | Readiness::Failed(why) => {
                    tracing::info!(why = %why, "waiting for the target to be ready before restoring traffic to it");
                    return Ok(Action::requeue(RECHECK));
                }
            }
            // A Service target is the apex itself and was never changed; Knative has no Services.
            if parts.capabilities().services && canary.spec.target_ref.kind != crate::api::TargetKind::Service
            {
                parts
                    .services
                    .finalize(canary, &target.selector_label, &target.selector_value)
                    .await?;
            }
            parts.router.finalize(canary).await?;
        }
        // Nothing left to restore traffic to: let the deletion go on.
        Err(crate::workload::Error::TargetNotFound { .. }) => {
            publish(
                ctx,
                canary,
                true,
                "TargetNotFound",
                &format!("The target of {id} is gone; nothing to restore"),
            )
            .await;
        }
        Err(error) => return Err(error.into()),
    }

    write_phase(api, canary, CanaryPhase::Terminated, kind).await?;
    publish(ctx, canary, false, "Synced", &format!("Terminated canary {id}")).await;
    status::remove_finalizer(canary, api, FINALIZER).await?;
    if ledger || routing {
        // The object changed twice since it was read; the next round records the off-boarding.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(Action::await_change())
}

/// How long a deletion waits for the off-boarding record when the remote cannot be written
/// and the canary does not say `gitops.failurePolicy: Block`.
const OFF_BOARDING_PATIENCE: Duration = Duration::from_secs(120);

/// Records the deletion in Git (ledger closed, a commit), then lets the deletion go on.
async fn off_board(
    canary: &Canary,
    parts: &Parts,
    api: &Api<Canary>,
    ctx: &Context,
) -> Result<Action, Error> {
    let reverted = canary.spec.revert_on_deletion.unwrap_or(false);
    let Some(source) = ctx.git.deletion_source(&ctx.client, canary, parts).await else {
        return status::remove_finalizer(canary, api, LEDGER_FINALIZER)
            .await
            .map(|()| Action::await_change());
    };
    let mut new = canary.status.clone().unwrap_or_default();
    let gitops = new.gitops.clone().unwrap_or_default();
    match gitops.off_boarding_record {
        None => {
            let reason = if reverted {
                "the Canary was deleted; revertOnDeletion restored the target to serve all traffic"
                    .to_string()
            } else {
                publish(
                    ctx,
                    canary,
                    true,
                    "OffBoarded",
                    "The Canary was deleted without revertOnDeletion: traffic stays as Flagger leaves it (the apex Service selects the primary pods; the target may stay scaled to zero)",
                )
                .await;
                "the Canary was deleted without revertOnDeletion: traffic left on the primary as Flagger leaves it".to_string()
            };
            let revision = new.last_promoted_spec.clone().unwrap_or_default();
            let images = parts.workload.primary_images(canary).await.unwrap_or_default();
            let record = git::own_record("OffBoarded", &revision, "Terminated", reason, images);
            git::add_records(
                &mut new,
                vec![record],
                &source,
                crate::api::RecordLevel::EveryStep,
            );
            if let Some(g) = new.gitops.as_mut() {
                g.off_boarding_record = g.last_record;
            }
            let stored = status::write(api, canary, &new, ReadyCondition::ok()).await?;
            ctx.git.flush(canary, &new, &source, stored);
            Ok(Action::requeue(RECHECK))
        }
        Some(seq) if gitops.pushed_record.unwrap_or(0) >= seq => {
            status::remove_finalizer(canary, api, LEDGER_FINALIZER).await?;
            Ok(Action::await_change())
        }
        Some(_) => {
            ctx.git.flush(canary, &new, &source, None);
            let waited = canary
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs())
                .unwrap_or_default();
            if gitops.last_error.is_some() && waited > OFF_BOARDING_PATIENCE && !git::blocks(canary) {
                publish(
                    ctx,
                    canary,
                    true,
                    "OffBoardingNotRecorded",
                    &format!(
                        "Git could not be written for {}s; the Canary is deleted without its off-boarding commit: {}",
                        waited.as_secs(),
                        gitops.last_error.as_deref().unwrap_or_default()
                    ),
                )
                .await;
                status::remove_finalizer(canary, api, LEDGER_FINALIZER).await?;
                return Ok(Action::await_change());
            }
            Ok(Action::requeue(RECHECK))
        }
    }
}

async fn write_phase(
    api: &Api<Canary>,
    canary: &Canary,
    phase: CanaryPhase,
    kind: &str,
) -> Result<(), Error> {
    let mut new: CanaryStatus = canary.status.clone().unwrap_or_default();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    new.phase = Some(phase);
    new.last_transition_time = Some(now.clone());
    let condition = promoted_condition(phase, kind, now);
    let conditions = new.conditions.get_or_insert_default();
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
    status::write(api, canary, &new, ReadyCondition::ok()).await?;
    Ok(())
}
