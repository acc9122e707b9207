//! Deleting a Canary with `revertOnDeletion`: the target is scaled back up and must be ready
//! before the apex Service and the routes are pointed back at it, so there is never a moment
//! without ready pods behind the apex. Then the finalizer goes and the garbage collector
//! removes the generated objects.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::canary::{Context, Error, FINALIZER, Parts, publish};
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
    if !canary.finalizers().iter().any(|f| f == FINALIZER) {
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
            parts
                .services
                .finalize(canary, &target.selector_label, &target.selector_value)
                .await?;
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
    status::remove_finalizer(canary, api).await?;
    Ok(Action::await_change())
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
    status::write(api, canary, &new, ReadyCondition::ok()).await
}
