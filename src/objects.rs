//! Helpers for the layers that write Kubernetes objects (`workload`, `router`): owner
//! references, the metadata rules for generated objects, and server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::Canary;

/// The field manager of every server-side apply flaggit makes.
pub const FIELD_MANAGER: &str = "flaggit";

/// Annotations on generated routing objects that stop Flux from reverting flaggit's changes.
pub const GITOPS_HANDS_OFF: [(&str, &str); 2] = [
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];

/// The controller owner reference that ties a generated object to its Canary, so the garbage
/// collector removes it with the Canary.
pub fn owner_ref(canary: &Canary) -> OwnerReference {
    OwnerReference {
        api_version: Canary::api_version(&()).into_owned(),
        kind: Canary::kind(&()).into_owned(),
        name: canary.name_any(),
        uid: canary.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether a label or annotation key belongs to the GitOps tool that applied the source
/// object. Such keys are never copied to generated objects: Flux would garbage-collect or
/// revert them, and Argo CD would count them as its own and prune them.
pub fn is_gitops_key(key: &str) -> bool {
    key.contains("toolkit.fluxcd.io")
        || key.starts_with("argocd.argoproj.io/")
        || key == "app.kubernetes.io/instance"
        || key == "kubectl.kubernetes.io/last-applied-configuration"
}

/// `source` without the GitOps tool's keys (see [`is_gitops_key`]).
pub fn without_gitops_keys(source: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    source
        .iter()
        .filter(|(key, _)| !is_gitops_key(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Server-side applies `object` (which must carry apiVersion, kind and name) as flaggit,
/// taking over fields another manager set.
pub async fn apply<K>(api: &Api<K>, name: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitops_keys_are_dropped() {
        let source = BTreeMap::from([
            ("app".to_string(), "podinfo".to_string()),
            ("kustomize.toolkit.fluxcd.io/name".to_string(), "apps".to_string()),
            ("argocd.argoproj.io/tracking-id".to_string(), "x".to_string()),
            ("app.kubernetes.io/instance".to_string(), "podinfo".to_string()),
        ]);
        let kept = without_gitops_keys(&source);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["app"]);
    }
}
