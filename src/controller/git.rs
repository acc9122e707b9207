//! The controller's side of the Git record: which repository a canary writes to (resolved
//! once per spec and every few minutes), its records into the outbox, and the outbox to the
//! writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::RunConfig;
use crate::api::{Canary, CanaryStatus, FailurePolicy, PendingRecord, RecordLevel};
use crate::gitops::outbox::{self, Facts};
use crate::gitops::source::{self, Defaults, SecretRef, Source};
use crate::gitops::writer::{self, Job, Writer};
use crate::gitops::{Author, Remote};
use crate::rollout::Record;
use crate::workload::Target;

/// How long a resolved source is trusted before it is looked up again.
const SOURCE_TTL: Duration = Duration::from_secs(300);

/// The finalizer that holds a deleted canary until its off-boarding record is in Git.
pub const LEDGER_FINALIZER: &str = "flaggit.dev/ledger";

pub(super) struct Git {
    pub writer: Writer,
    defaults: Defaults,
    level: RecordLevel,
    sources: Mutex<HashMap<ObjectRef<Canary>, Resolved>>,
}

struct Resolved {
    generation: Option<i64>,
    at: Instant,
    source: Result<Option<Source>, String>,
}

impl Git {
    pub fn new(
        client: Client,
        config: &RunConfig,
        forges: Option<std::sync::Arc<crate::forge::select::Forges>>,
        metrics: crate::telemetry::metrics::GitMetrics,
    ) -> Self {
        let secret = config.git_secret.as_deref().and_then(|s| {
            let (namespace, name) = s.split_once('/')?;
            Some(SecretRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        });
        if config.git_secret.is_some() && secret.is_none() {
            tracing::error!("--git-secret must be namespace/name; ignoring it");
        }
        let defaults = Defaults {
            remote: config.git_url.as_ref().map(|url| Remote {
                url: url.clone(),
                branch: config.git_branch.clone(),
            }),
            secret,
            argocd_namespace: config.argocd_namespace.clone(),
            allowed: config.git_allow.clone(),
        };
        let settings = writer::Settings {
            cache_dir: config.git_cache_dir.clone(),
            ledger_dir: config.git_ledger_dir.clone(),
            cluster: config.cluster_name(),
            signing_secret: config.signing_secret(),
            author: Author {
                name: config.git_author_name.clone(),
                email: config.git_author_email.clone(),
            },
            batch_window: config.git_batch_window,
            ..writer::Settings::default()
        };
        let events = std::sync::Arc::new(super::events::Events::new(client.clone()));
        let writer = Writer::new(client, settings)
            .with_notices(events)
            .with_metrics(metrics);
        Self {
            writer: match forges {
                Some(forges) => writer.with_forges(forges),
                None => writer,
            },
            defaults,
            level: config.git_records,
            sources: Mutex::default(),
        }
    }

    /// The repository the canary's records go to; Ok(None) when there is none (the canary
    /// works as under Flagger). Err says why the source could not be found.
    pub async fn source(
        &self,
        client: &Client,
        canary: &Canary,
        target: &Target,
    ) -> Result<Option<Source>, String> {
        let key = ObjectRef::from_obj(canary);
        let generation = canary.metadata.generation;
        if let Some(cached) = self.cached(&key, generation) {
            return cached;
        }
        let source = source::resolve(client, canary, &target.metadata(), &self.defaults)
            .await
            .map_err(|e| e.to_string());
        self.sources
            .lock()
            .expect("the source cache lock is never poisoned")
            .insert(
                key,
                Resolved {
                    generation,
                    at: Instant::now(),
                    source: source.clone(),
                },
            );
        source
    }

    fn cached(
        &self,
        key: &ObjectRef<Canary>,
        generation: Option<i64>,
    ) -> Option<Result<Option<Source>, String>> {
        let sources = self
            .sources
            .lock()
            .expect("the source cache lock is never poisoned");
        let cached = sources.get(key)?;
        (cached.generation == generation && cached.at.elapsed() < SOURCE_TTL).then(|| cached.source.clone())
    }

    /// The repository of a canary being deleted: the one it last used, else resolved from
    /// what is left (its target may be gone).
    pub async fn deletion_source(
        &self,
        client: &Client,
        canary: &Canary,
        parts: &super::canary::Parts,
    ) -> Option<Source> {
        let key = ObjectRef::from_obj(canary);
        let cached = self
            .sources
            .lock()
            .expect("the source cache lock is never poisoned")
            .get(&key)
            .map(|c| c.source.clone());
        if let Some(source) = cached {
            return source.ok().flatten();
        }
        let metadata = match parts.workload.observe(canary).await {
            Ok(target) => target.metadata(),
            Err(_) => kube::api::ObjectMeta::default(),
        };
        source::resolve(client, canary, &metadata, &self.defaults)
            .await
            .ok()
            .flatten()
    }

    pub fn forget(&self, key: &ObjectRef<Canary>) {
        self.sources
            .lock()
            .expect("the source cache lock is never poisoned")
            .remove(key);
    }

    /// Which records the canary commits.
    pub fn level(&self, canary: &Canary) -> RecordLevel {
        canary
            .spec
            .gitops
            .as_ref()
            .and_then(|g| g.records)
            .unwrap_or(self.level)
    }

    /// Hands the canary's outbox to the writer if it holds anything. `stored` is the canary
    /// as the API server answered the status write that put `status` there: the writer takes
    /// the records from it instead of reading the canary again. Without it (nothing was
    /// written, or the outbox was written earlier) the writer reads the canary.
    pub fn flush(&self, canary: &Canary, status: &CanaryStatus, source: &Source, stored: Option<Canary>) {
        if !outbox::has_pending(Some(status)) {
            return;
        }
        let upto = status.gitops.as_ref().and_then(|g| g.last_record).unwrap_or(0);
        self.writer.notify(match stored {
            Some(stored) => Job::with_snapshot(source.clone(), upto, stored),
            None => Job {
                namespace: canary.namespace().unwrap_or_default(),
                name: canary.name_any(),
                source: source.clone(),
                upto,
                canary: None,
            },
        });
    }
}

/// Whether the canary holds its rollout until its records are in Git.
pub fn blocks(canary: &Canary) -> bool {
    canary.spec.gitops.as_ref().and_then(|g| g.failure_policy) == Some(FailurePolicy::Block)
}

/// Puts the records of a decision into the outbox of `status`, with where they go.
pub fn add_records(
    status: &mut CanaryStatus,
    records: Vec<PendingRecord>,
    source: &Source,
    level: RecordLevel,
) {
    outbox::append(status, records, level);
    describe(status, Ok(Some(source)));
}

/// Says in the status where records go, or why they are not written.
pub fn describe(status: &mut CanaryStatus, source: Result<Option<&Source>, &str>) {
    match source {
        Ok(Some(source)) => {
            let gitops = status.gitops.get_or_insert_default();
            gitops.repository = Some(writer::safe_url(&source.remote.to_string()));
            gitops.path = source.path.clone();
            gitops.message = None;
        }
        Ok(None) => {
            if let Some(gitops) = &mut status.gitops {
                gitops.repository = None;
                gitops.path = None;
                gitops.message = Some(NO_REPOSITORY.to_string());
            }
        }
        Err(error) => {
            let gitops = status.gitops.get_or_insert_default();
            gitops.message = Some(format!("rollout records are not written to Git: {error}"));
        }
    }
}

/// Said once when a canary that had a repository no longer has one.
const NO_REPOSITORY: &str = "no Git repository is known for this canary (spec.gitops.repository, a Flux or Argo CD source, or --git-url): rollout records are not written";

/// The outbox entries of the engine's records, with what the cluster says now.
pub fn pending_records(
    records: &[Record],
    target: &Target,
    primary_images: BTreeMap<String, String>,
    primary_configs: BTreeMap<String, String>,
) -> Vec<PendingRecord> {
    let facts = Facts {
        time: now(),
        images: target.images(),
        primary_images,
        configs: target.revision.configs.clone(),
        primary_configs,
    };
    records.iter().map(|r| outbox::from_record(r, &facts)).collect()
}

/// What rebuild recovery gives the primary besides the images: the promoted ConfigMaps whose
/// data the ledger holds and the target no longer has. Returns the revision's config
/// checksums (the promoted ones for those) and the data to write to the `-primary` copies.
pub fn restored_configs(
    target: &BTreeMap<String, String>,
    promoted: &crate::gitops::ledger::Promoted,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let mut configs = target.clone();
    let mut restore = BTreeMap::new();
    for (name, data) in &promoted.config_maps {
        let key = format!("configmap/{name}");
        let (Some(now), Some(then)) = (target.get(&key), promoted.configs.get(&key)) else {
            continue;
        };
        if now != then {
            configs.insert(key, then.clone());
            restore.insert(name.clone(), data.clone());
        }
    }
    (configs, restore)
}

/// A record the controller makes itself (recovery, off-boarding).
pub fn own_record(
    kind: &str,
    revision: &str,
    phase: &str,
    reason: String,
    images: BTreeMap<String, String>,
) -> PendingRecord {
    PendingRecord {
        kind: kind.to_string(),
        revision: revision.to_string(),
        phase: phase.to_string(),
        reason,
        time: now(),
        images,
        ..Default::default()
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::source::Origin;

    #[test]
    fn the_status_never_shows_a_token_written_as_the_urls_user() {
        let source = Source {
            remote: Remote {
                url: "https://ghp_SECRETTOKEN@github.com/acme/config.git".into(),
                branch: "main".into(),
            },
            secret: None,
            path: Some("apps/podinfo".into()),
            namespace: None,
            origin: Origin::Default,
        };
        let mut status = CanaryStatus::default();
        describe(&mut status, Ok(Some(&source)));
        let gitops = status.gitops.expect("described");
        assert_eq!(
            gitops.repository.as_deref(),
            Some("https://github.com/acme/config.git#main")
        );
        // Logs print the remote and the source with Display and Debug.
        for shown in [source.remote.to_string(), format!("{source:?}")] {
            assert!(!shown.contains("SECRETTOKEN"), "{shown}");
        }
    }

    #[test]
    fn recovery_restores_only_promoted_configs_the_target_changed() {
        let target = BTreeMap::from([
            ("configmap/app".to_string(), "new".to_string()),
            ("configmap/same".to_string(), "s".to_string()),
            ("secret/db".to_string(), "d2".to_string()),
        ]);
        let promoted = crate::gitops::ledger::Promoted {
            configs: BTreeMap::from([
                ("configmap/app".to_string(), "old".to_string()),
                ("configmap/same".to_string(), "s".to_string()),
                ("secret/db".to_string(), "d1".to_string()),
            ]),
            config_maps: BTreeMap::from([
                (
                    "app".to_string(),
                    BTreeMap::from([("color".to_string(), "blue".to_string())]),
                ),
                ("same".to_string(), BTreeMap::new()),
            ]),
            ..Default::default()
        };
        let (configs, restore) = restored_configs(&target, &promoted);
        assert_eq!(configs["configmap/app"], "old");
        assert_eq!(configs["secret/db"], "d2", "Secrets are never restored from Git");
        assert_eq!(restore.keys().collect::<Vec<_>>(), ["app"]);
    }
}
