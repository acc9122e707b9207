//! `flaggit retry ns/name`: asks the controller to re-run a failed revision, by giving the
//! Canary's `flaggit.dev/retry` annotation a new value.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::watches::RETRY_ANNOTATION;
use crate::api::{Canary, CanaryPhase};

/// Why a retry could not be requested.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("{0:?} is not a canary: write it as <namespace>/<name>")]
    BadName(String),
    #[error("canary {0} not found")]
    NotFound(String),
    #[error(
        "canary {name} is {phase:?}, not Failed: only a failed revision can be retried (a new revision starts by itself)"
    )]
    NotFailed {
        name: String,
        phase: Option<CanaryPhase>,
    },
    #[error("cannot read or annotate canary {name}: {source}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Sets the retry annotation of the failed canary `namespace/name` to a new value and
/// returns that value.
pub async fn request_retry(client: Client, canary: &str) -> Result<String, RetryError> {
    let (namespace, name) = canary
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| RetryError::BadName(canary.to_string()))?;
    let api: Api<Canary> = Api::namespaced(client, namespace);
    let kube_error = |source| RetryError::Kube {
        name: canary.to_string(),
        source,
    };
    let live = api
        .get_opt(name)
        .await
        .map_err(kube_error)?
        .ok_or_else(|| RetryError::NotFound(canary.to_string()))?;
    let phase = live.status.as_ref().and_then(|s| s.phase);
    if phase != Some(CanaryPhase::Failed) {
        return Err(RetryError::NotFailed {
            name: canary.to_string(),
            phase,
        });
    }
    let value = jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {RETRY_ANNOTATION: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_error)?;
    Ok(value)
}
