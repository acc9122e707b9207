//! Writing a Canary: its status (with flaggit's `Ready` condition) and its finalizer.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::canary::{Error, FINALIZER, ROUTING_FINALIZER};
use super::git::LEDGER_FINALIZER;
use crate::api::{Canary, CanaryCondition, CanaryStatus};

/// The condition type flaggit adds beside Flagger's `Promoted`.
pub const READY: &str = "Ready";

/// What the `Ready` condition should say after a reconcile.
pub struct ReadyCondition<'a> {
    ok: bool,
    reason: &'a str,
    message: &'a str,
}

impl<'a> ReadyCondition<'a> {
    /// The canary was reconciled.
    pub fn ok() -> Self {
        Self {
            ok: true,
            reason: "Reconciled",
            message: "The canary was reconciled.",
        }
    }

    /// The reconcile failed: `reason` is the error category, `message` says what to fix.
    pub fn failed(reason: &'a str, message: &'a str) -> Self {
        Self {
            ok: false,
            reason,
            message,
        }
    }
}

/// The message of the canary's `Ready` condition, if it has one.
pub fn ready_message(canary: &Canary) -> Option<&str> {
    canary
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == READY)?
        .message
        .as_deref()
}

/// Writes `status` with the `Ready` condition set, unless nothing changed. A merge patch of
/// the status subresource: only the controller writes status, so the last write wins, and
/// fields that were removed are written as null. Returns the canary as the API server
/// stored it, or None when nothing was written.
pub async fn write(
    api: &Api<Canary>,
    canary: &Canary,
    status: &CanaryStatus,
    ready: ReadyCondition<'_>,
) -> Result<Option<Canary>, Error> {
    let old = canary.status.clone().unwrap_or_default();
    let mut new = status.clone();
    set_ready(&mut new, &ready);
    if new == old {
        return Ok(None);
    }
    let patch = json!({ "status": merge_patch(&old, &new) });
    api.patch_status(&canary.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(Some)
        .map_err(|source| Error::Kube {
            action: "write the canary status",
            source,
        })
}

fn set_ready(status: &mut CanaryStatus, ready: &ReadyCondition<'_>) {
    let now = Time(jiff::Timestamp::now());
    let condition_status = if ready.ok { "True" } else { "False" };
    let conditions = status.conditions.get_or_insert_default();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == READY) {
        let same = existing.status == condition_status
            && existing.reason.as_deref() == Some(ready.reason)
            && existing.message.as_deref() == Some(ready.message);
        if same {
            return;
        }
        if existing.status != condition_status {
            existing.last_transition_time = Some(now.clone());
        }
        existing.status = condition_status.into();
        existing.reason = Some(ready.reason.into());
        existing.message = Some(ready.message.into());
        existing.last_update_time = Some(now);
        return;
    }
    conditions.push(CanaryCondition {
        type_: READY.into(),
        status: condition_status.into(),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
        reason: Some(ready.reason.into()),
        message: Some(ready.message.into()),
    });
}

/// The JSON merge patch that turns `old` into `new`: `new`'s fields, and null for each field
/// `old` had that `new` has not.
fn merge_patch(old: &CanaryStatus, new: &CanaryStatus) -> Value {
    let mut patch = serde_json::to_value(new).unwrap_or_else(|_| json!({}));
    if let Ok(old) = serde_json::to_value(old) {
        null_removed(&mut patch, &old);
    }
    if let Value::Object(patch) = &mut patch {
        // What reached Git is the writer's to say: an older copy must not undo its write.
        if let Some(Value::Object(gitops)) = patch.get_mut("gitops") {
            for key in WRITER_OWNED {
                gitops.remove(*key);
            }
        }
    }
    patch
}

/// Sets to null, at every depth of objects, each field `old` had that `patch` has not: in a
/// merge patch an absent field means "unchanged" (`review.paused: false` is left out when
/// serialized, yet must clear a stored `true`).
fn null_removed(patch: &mut Value, old: &Value) {
    if let (Value::Object(patch), Value::Object(old)) = (patch, old) {
        for (key, old_value) in old {
            match patch.get_mut(key) {
                None => {
                    patch.insert(key.clone(), Value::Null);
                }
                Some(value) => null_removed(value, old_value),
            }
        }
    }
}

/// Fields of `status.gitops` only the Git writer updates.
const WRITER_OWNED: &[&str] = &[
    "pushedRecord",
    "lastCommit",
    "lastPushTime",
    "lastError",
    "pullRequest",
];

/// Keeps the finalizers in line with the spec: Flagger's when `revertOnDeletion` is set,
/// flaggit's ledger finalizer when the canary's records go to Git, and the routing finalizer
/// when its router writes objects the garbage collector cannot remove (`routing`).
pub async fn sync_finalizers(
    canary: &Canary,
    api: &Api<Canary>,
    ledger: bool,
    routing: bool,
) -> Result<(), Error> {
    let wanted = [
        (FINALIZER, canary.spec.revert_on_deletion.unwrap_or(false)),
        (LEDGER_FINALIZER, ledger),
        (ROUTING_FINALIZER, routing),
    ];
    let mut finalizers: Vec<String> = canary.finalizers().to_vec();
    for (name, want) in wanted {
        let has = finalizers.iter().any(|f| f == name);
        if want && !has {
            finalizers.push(name.to_string());
        } else if !want && has {
            finalizers.retain(|f| f != name);
        }
    }
    if finalizers == canary.finalizers() {
        return Ok(());
    }
    patch_finalizers(canary, api, finalizers).await
}

/// Removes finalizer `name` (Flagger's or the ledger's), letting the deletion go on once none
/// is left.
pub async fn remove_finalizer(canary: &Canary, api: &Api<Canary>, name: &str) -> Result<(), Error> {
    let finalizers = canary
        .finalizers()
        .iter()
        .filter(|f| *f != name)
        .cloned()
        .collect();
    patch_finalizers(canary, api, finalizers).await
}

async fn patch_finalizers(canary: &Canary, api: &Api<Canary>, finalizers: Vec<String>) -> Result<(), Error> {
    // Fails if someone changed the finalizers meanwhile, instead of losing their change;
    // changes to anything else (our own status writes) do not matter.
    let current = canary.finalizers().to_vec();
    let patch = if canary.metadata.finalizers.is_some() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": finalizers},
        ])
    } else {
        json!([{"op": "add", "path": "/metadata/finalizers", "value": finalizers}])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(|e| Error::Kube {
        action: "build the finalizer patch",
        source: kube::Error::SerdeError(e),
    })?;
    api.patch(
        &canary.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(|source| Error::Kube {
        action: "update the canary finalizers",
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanaryPhase;

    #[test]
    fn merge_patch_nulls_fields_removed_at_any_depth() {
        let review = |paused| crate::api::ReviewStatus {
            number: 1,
            paused,
            rollback: paused.then(|| "why".to_string()),
            ..Default::default()
        };
        let status = |paused| CanaryStatus {
            gitops: Some(Box::new(crate::api::GitOpsStatus {
                review: Some(Box::new(review(paused))),
                ..Default::default()
            })),
            ..Default::default()
        };
        let patch = merge_patch(&status(true), &status(false));
        assert_eq!(patch["gitops"]["review"]["paused"], Value::Null);
        assert_eq!(patch["gitops"]["review"]["rollback"], Value::Null);
        assert_eq!(patch["gitops"]["review"]["number"], 1);
    }

    #[test]
    fn merge_patch_nulls_removed_fields() {
        let old = CanaryStatus {
            phase: Some(CanaryPhase::Progressing),
            suspended: Some(true),
            ..Default::default()
        };
        let new = CanaryStatus {
            phase: Some(CanaryPhase::Succeeded),
            ..Default::default()
        };
        let patch = merge_patch(&old, &new);
        assert_eq!(patch["phase"], "Succeeded");
        assert_eq!(patch["suspended"], Value::Null);
        assert!(patch.get("canaryWeight").is_none());
    }

    #[test]
    fn merge_patch_leaves_the_writers_fields_alone_and_empties_the_outbox() {
        let gitops = |pushed: i64, pending: bool| crate::api::GitOpsStatus {
            pushed_record: Some(pushed),
            last_record: Some(3),
            pending: pending.then(|| vec![crate::api::PendingRecord::default()]),
            ..Default::default()
        };
        let old = CanaryStatus {
            gitops: Some(Box::new(gitops(2, true))),
            ..Default::default()
        };
        let new = CanaryStatus {
            gitops: Some(Box::new(gitops(1, false))),
            ..Default::default()
        };
        let patch = merge_patch(&old, &new);
        assert!(patch["gitops"].get("pushedRecord").is_none());
        assert_eq!(patch["gitops"]["pending"], Value::Null);
        assert_eq!(patch["gitops"]["lastRecord"], 3);
    }

    #[test]
    fn ready_condition_keeps_its_transition_time_while_unchanged() {
        let mut status = CanaryStatus::default();
        set_ready(&mut status, &ReadyCondition::failed("TargetNotFound", "gone"));
        let first = status.conditions.clone();
        set_ready(&mut status, &ReadyCondition::failed("TargetNotFound", "gone"));
        assert_eq!(status.conditions, first);
        set_ready(&mut status, &ReadyCondition::ok());
        let ready = &status.conditions.as_ref().expect("conditions")[0];
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("Reconciled"));
    }
}
