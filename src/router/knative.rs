//! The `knative` provider: the target itself, a Knative Service (`serving.knative.dev/v1`),
//! splits traffic between its revisions with `spec.traffic`: the revision in the
//! `flagger.app/primary-revision` annotation (the primary) and the latest revision (the
//! canary). No Services, no routing objects of flaggit's own (Flagger's `knative.go`).
//!
//! flaggit only patches `spec.traffic` and that annotation (a merge patch guarded by the
//! resourceVersion), so the Service's template, which its owner manages, is never rewritten.
//!
//! Unlike Flagger:
//! - The weights in force are read from `status.traffic` once Knative has observed the
//!   Service's generation, and from the `spec.traffic` it is applying before that (Flagger
//!   reads the stale status, the previous split). The primary's entry is the one for the primary revision that is not the
//!   `latestRevision` entry (Flagger can pick the latest entry when both name the same
//!   revision, and reads 0/0).
//! - Reconcile puts a changed `spec.traffic` back to the two entries, keeping the weights.
//! - With `revertOnDeletion` the Service is handed back serving its latest revision (all
//!   traffic on `latestRevision`); Flagger only removes the annotation, leaving every later
//!   revision without traffic.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::core::object::Object;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind};
use crate::api::{Canary, Capabilities};
use crate::objects::FIELD_MANAGER;

/// The Knative Service, watched for drift of `spec.traffic`.
pub const KINDS: &[RoutingKind] = &[RoutingKind {
    group: "serving.knative.dev",
    version: "v1",
    kind: "Service",
    plural: "services",
    namespaced: true,
}];

/// The annotation naming the primary revision (Flagger's).
pub const PRIMARY_REVISION_ANNOTATION: &str = "flagger.app/primary-revision";

/// A Knative Service as flaggit reads it.
pub type KnativeService = Object<KnativeServiceSpec, KnativeServiceStatus>;

/// The fields of `spec` flaggit reads. It is never written whole (see the module docs).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct KnativeServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<RevisionTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficTarget>>,
}

/// The revision template: its metadata and containers (images) are what a revision is.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RevisionTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<RevisionSpec>,
}

/// The containers of a revision (Knative's containers may be unnamed).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    #[serde(default)]
    pub containers: Vec<RevisionContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<RevisionContainer>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RevisionContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One entry of `spec.traffic` / `status.traffic`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The fields of `status` flaggit reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnativeServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_created_revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficTarget>>,
}

/// `spec.traffic` at `routes`: the latest revision (canary) first, then the primary revision
/// (Flagger's order).
pub fn traffic(primary_revision: &str, routes: Routes) -> Vec<TrafficTarget> {
    vec![
        TrafficTarget {
            latest_revision: Some(true),
            percent: Some(i64::from(routes.canary)),
            ..Default::default()
        },
        TrafficTarget {
            revision_name: Some(primary_revision.to_string()),
            percent: Some(i64::from(routes.primary)),
            ..Default::default()
        },
    ]
}

/// The weights of a traffic list written by [`traffic`] (spec) or reported by Knative
/// (status): the `latestRevision` entry is the canary, the primary revision's other entry
/// the primary. None when either is missing.
pub fn routes_of_traffic(primary_revision: &str, list: &[TrafficTarget]) -> Option<Routes> {
    let canary = list.iter().find(|t| t.latest_revision == Some(true))?;
    let primary = list
        .iter()
        .find(|t| t.latest_revision != Some(true) && t.revision_name.as_deref() == Some(primary_revision))?;
    let percent = |t: &TrafficTarget| i32::try_from(t.percent.unwrap_or(0)).unwrap_or(0);
    Some(Routes {
        primary: percent(primary),
        canary: percent(canary),
        mirrored: false,
    })
}

/// The weights of the Service: Knative's `status.traffic` once it has observed the Service's
/// generation; until then (a moment after each write) the `spec.traffic` it is applying, not
/// the previous split.
pub fn routes_of_service(primary_revision: &str, service: &KnativeService) -> Option<Routes> {
    let status = service.status.clone().unwrap_or_default();
    let list = if status.observed_generation == service.metadata.generation {
        status.traffic.unwrap_or_default()
    } else {
        service.spec.traffic.clone().unwrap_or_default()
    };
    routes_of_traffic(primary_revision, &list)
}

/// Whether `spec.traffic` is exactly the two entries flaggit writes.
fn is_flaggits(primary_revision: &str, list: &[TrafficTarget]) -> bool {
    routes_of_traffic(primary_revision, list)
        .is_some_and(|routes| list == traffic(primary_revision, routes).as_slice())
}

/// The merge patch flaggit sends: annotations (a None value removes the key) and the
/// traffic, guarded by the resourceVersion.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ServicePatch {
    pub metadata: PatchMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<TrafficPatch>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PatchMeta {
    pub resource_version: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, Option<String>>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TrafficPatch {
    pub traffic: Vec<TrafficTarget>,
}

/// The patch that starts a Service's first analysis: the primary is its latest created
/// revision, which gets all traffic.
pub fn initial_patch(service: &KnativeService) -> Result<ServicePatch, Error> {
    let latest = latest_created(service)?;
    Ok(ServicePatch {
        metadata: PatchMeta {
            resource_version: service.resource_version(),
            annotations: BTreeMap::from([(PRIMARY_REVISION_ANNOTATION.to_string(), Some(latest.clone()))]),
        },
        spec: Some(TrafficPatch {
            traffic: traffic(&latest, Routes::PRIMARY),
        }),
    })
}

/// `status.latestCreatedRevisionName`, or NotReady while Knative has made none.
pub fn latest_created(service: &KnativeService) -> Result<String, Error> {
    service
        .status
        .as_ref()
        .and_then(|s| s.latest_created_revision_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::NotReady(format!(
                "Knative Service {} has no revision yet (status.latestCreatedRevisionName)",
                service.name_any()
            ))
        })
}

/// The primary revision the Service's annotation names.
pub fn primary_revision(service: &KnativeService) -> Option<String> {
    service
        .annotations()
        .get(PRIMARY_REVISION_ANNOTATION)
        .filter(|r| !r.is_empty())
        .cloned()
}

/// The Knative router.
pub struct KnativeRouter {
    client: Client,
}

impl KnativeRouter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The Knative Services of `namespace`.
pub fn knative_api(client: &Client, namespace: &str) -> Api<KnativeService> {
    Api::namespaced_with(client.clone(), namespace, &KINDS[0].api_resource())
}

/// Reads the target Knative Service.
pub async fn get_service(client: &Client, canary: &Canary) -> Result<KnativeService, Error> {
    let name = &canary.spec.target_ref.name;
    knative_api(client, &canary.namespace().unwrap_or_default())
        .get_opt(name)
        .await
        .map_err(|source| Error::Get {
            kind: "Knative Service",
            name: name.clone(),
            source,
        })?
        .ok_or_else(|| Error::NotReady(format!("Knative Service {name} does not exist")))
}

/// Sends `patch` to the target Knative Service.
pub async fn patch_service(client: &Client, canary: &Canary, patch: &ServicePatch) -> Result<(), Error> {
    let name = &canary.spec.target_ref.name;
    knative_api(client, &canary.namespace().unwrap_or_default())
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            },
            &Patch::Merge(patch),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: "Knative Service",
            name: name.clone(),
            source,
        })?;
    Ok(())
}

fn missing_annotation(service: &KnativeService) -> Error {
    Error::NotReady(format!(
        "Knative Service {} has no {PRIMARY_REVISION_ANNOTATION} annotation yet: reconcile adds it",
        service.name_any()
    ))
}

#[async_trait]
impl Router for KnativeRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            services: false,
            ..Capabilities::WEIGHTED
        }
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let service = get_service(&self.client, canary).await?;
        let Some(primary) = primary_revision(&service) else {
            return patch_service(&self.client, canary, &initial_patch(&service)?).await;
        };
        let spec_traffic = service.spec.traffic.clone().unwrap_or_default();
        if is_flaggits(&primary, &spec_traffic) {
            return Ok(());
        }
        // Someone changed the split: back to the two entries, keeping the weights if they
        // can be read.
        let routes = routes_of_traffic(&primary, &spec_traffic)
            .filter(|r| r.primary + r.canary == 100 && r.primary >= 0 && r.canary >= 0)
            .unwrap_or(Routes::PRIMARY);
        let patch = ServicePatch {
            metadata: PatchMeta {
                resource_version: service.resource_version(),
                annotations: BTreeMap::new(),
            },
            spec: Some(TrafficPatch {
                traffic: traffic(&primary, routes),
            }),
        };
        patch_service(&self.client, canary, &patch).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let service = get_service(&self.client, canary).await?;
        let primary = primary_revision(&service).ok_or_else(|| missing_annotation(&service))?;
        let wanted = traffic(&primary, request.routes);
        if service.spec.traffic.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let patch = ServicePatch {
            metadata: PatchMeta {
                resource_version: service.resource_version(),
                annotations: BTreeMap::new(),
            },
            spec: Some(TrafficPatch { traffic: wanted }),
        };
        patch_service(&self.client, canary, &patch).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let service = get_service(&self.client, canary).await?;
        let primary = primary_revision(&service).ok_or_else(|| missing_annotation(&service))?;
        routes_of_service(&primary, &service).ok_or_else(|| {
            Error::NotReady(format!(
                "Knative Service {} reports no traffic for the latest revision and the primary revision {primary}",
                service.name_any()
            ))
        })
    }

    async fn finalize(&self, canary: &Canary) -> Result<(), Error> {
        // revertOnDeletion: the Service serves its latest revision again, as without flaggit.
        let service = get_service(&self.client, canary).await?;
        let patch = ServicePatch {
            metadata: PatchMeta {
                resource_version: service.resource_version(),
                annotations: BTreeMap::from([(PRIMARY_REVISION_ANNOTATION.to_string(), None)]),
            },
            spec: Some(TrafficPatch {
                traffic: vec![TrafficTarget {
                    latest_revision: Some(true),
                    percent: Some(100),
                    ..Default::default()
                }],
            }),
        };
        patch_service(&self.client, canary, &patch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(latest: Option<&str>) -> KnativeService {
        let mut s = KnativeService::new("podinfo", &KINDS[0].api_resource(), KnativeServiceSpec::default());
        s.metadata.resource_version = Some("7".into());
        s.status = Some(KnativeServiceStatus {
            latest_created_revision_name: latest.map(str::to_string),
            ..Default::default()
        });
        s
    }

    #[test]
    fn the_first_patch_pins_the_primary_revision_with_all_traffic() {
        let patch = initial_patch(&service(Some("podinfo-00001"))).expect("builds");
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            serde_json::json!({
                "metadata": {
                    "resourceVersion": "7",
                    "annotations": { "flagger.app/primary-revision": "podinfo-00001" },
                },
                "spec": { "traffic": [
                    { "latestRevision": true, "percent": 0 },
                    { "revisionName": "podinfo-00001", "percent": 100 },
                ] },
            })
        );
        let err = initial_patch(&service(None)).expect_err("no revision");
        assert!(err.to_string().contains("latestCreatedRevisionName"), "{err}");
    }

    #[test]
    fn status_weights_skip_the_latest_entry_of_the_primary_revision() {
        // Before a new revision, Knative reports the primary revision twice: as the latest
        // (0 %) and by name (100 %).
        let status: Vec<TrafficTarget> = serde_json::from_value(serde_json::json!([
            { "revisionName": "podinfo-00001", "latestRevision": true, "percent": 0 },
            { "revisionName": "podinfo-00001", "latestRevision": false, "percent": 100 },
        ]))
        .expect("reads");
        assert_eq!(routes_of_traffic("podinfo-00001", &status), Some(Routes::PRIMARY));
        let rolling: Vec<TrafficTarget> = serde_json::from_value(serde_json::json!([
            { "revisionName": "podinfo-00002", "latestRevision": true, "percent": 30 },
            { "revisionName": "podinfo-00001", "latestRevision": false, "percent": 70 },
        ]))
        .expect("reads");
        assert_eq!(
            routes_of_traffic("podinfo-00001", &rolling),
            Some(Routes::canary(30))
        );
        assert_eq!(routes_of_traffic("podinfo-00009", &rolling), None);
        assert_eq!(routes_of_traffic("podinfo-00001", &[]), None);
    }

    #[test]
    fn the_split_being_applied_counts_until_knative_has_observed_it() {
        let mut s = service(Some("r2"));
        s.metadata.generation = Some(3);
        s.spec.traffic = Some(traffic("r1", Routes::canary(40)));
        let status = s.status.as_mut().expect("status");
        status.observed_generation = Some(2);
        status.traffic = Some(vec![
            TrafficTarget {
                revision_name: Some("r2".into()),
                latest_revision: Some(true),
                percent: Some(20),
                ..Default::default()
            },
            TrafficTarget {
                revision_name: Some("r1".into()),
                latest_revision: Some(false),
                percent: Some(80),
                ..Default::default()
            },
        ]);
        assert_eq!(routes_of_service("r1", &s), Some(Routes::canary(40)));
        s.status.as_mut().expect("status").observed_generation = Some(3);
        assert_eq!(routes_of_service("r1", &s), Some(Routes::canary(20)));
    }

    #[test]
    fn only_flaggits_two_entries_count_as_in_line() {
        assert!(is_flaggits("r1", &traffic("r1", Routes::canary(40))));
        let mut tagged = traffic("r1", Routes::canary(40));
        tagged[0].tag = Some("latest".into());
        assert!(!is_flaggits("r1", &tagged));
        assert!(!is_flaggits("r1", &[]));
        let release = PatchMeta {
            resource_version: Some("1".into()),
            annotations: BTreeMap::from([(PRIMARY_REVISION_ANNOTATION.to_string(), None)]),
        };
        assert_eq!(
            serde_json::to_value(&release).expect("json"),
            serde_json::json!({ "resourceVersion": "1", "annotations": { "flagger.app/primary-revision": null } })
        );
    }
}
