//! Turns the records in the canaries' outboxes (`status.gitops.pending`) into commits on the
//! config repo: one worker per repository coalesces the records of many canaries into one
//! push, skips what the ledger already holds (so a record lands exactly once), rebuilds its
//! commits on a rejected push, and backs off while the remote is unreachable.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::edit::{self, TargetRef};
use super::ledger::{self, Ledger};
use super::repo::{Push, Repo};
use super::source::{self, Source};
use super::{Author, ImageChange, Remote, message, outbox};
use crate::api::{Canary, PendingRecord};

/// How the writer is set up (from the controller's flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the cached clones live.
    pub cache_dir: PathBuf,
    /// Directory of the ledgers in the config repo.
    pub ledger_dir: String,
    pub author: Author,
    /// How long records are gathered before a push: more canaries per push, fewer pushes.
    pub batch_window: Duration,
    /// Rejected pushes retried (fetch, rebuild, push) before the batch waits for the backoff.
    pub push_attempts: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cache_dir: std::env::temp_dir().join("flaggit-git"),
            ledger_dir: ledger::DEFAULT_DIR.to_string(),
            author: Author::default(),
            batch_window: Duration::from_millis(250),
            push_attempts: 5,
        }
    }
}

/// What writing to Git can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] super::repo::Error),
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error(
        "the push to {remote} was rejected {attempts} times in a row (others keep pushing); retrying later"
    )]
    Contended { remote: String, attempts: usize },
    #[error("the git worker stopped: {0}")]
    Worker(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Repo(e) => e.category(),
            Self::Source(e) => e.category(),
            Self::Ledger(e) => e.category(),
            Self::Contended { .. } => "PushContended",
            Self::Worker(_) => "GitWorker",
        }
    }
}

/// A canary whose outbox has something for Git.
#[derive(Clone, Debug)]
pub struct Job {
    pub namespace: String,
    pub name: String,
    pub source: Source,
    /// The last record number the reconciler wrote: the worker keeps at it until this one
    /// is on the remote.
    pub upto: i64,
}

/// Hands outboxes to one worker per repository.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    settings: Arc<Settings>,
    workers: Arc<Mutex<HashMap<Remote, mpsc::UnboundedSender<Job>>>>,
    stats: Arc<Stats>,
}

/// Counters for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    pub pushes: std::sync::atomic::AtomicU64,
    pub commits: std::sync::atomic::AtomicU64,
    pub rejected: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
}

impl Writer {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            workers: Arc::default(),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Asks for the canary's pending records to be pushed.
    pub fn notify(&self, job: Job) {
        let mut workers = self
            .workers
            .lock()
            .expect("the worker map lock is never poisoned");
        let remote = job.source.remote.clone();
        let sender = workers.entry(remote.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = Worker {
                client: self.client.clone(),
                settings: self.settings.clone(),
                remote: remote.clone(),
                repo: Mutex::new(None),
                stats: self.stats.clone(),
            };
            tokio::spawn(worker.run(rx));
            tx
        });
        if let Err(mpsc::error::SendError(job)) = sender.send(job) {
            // The worker died (it never should); start a new one for this job.
            workers.remove(&remote);
            drop(workers);
            self.notify(job);
        }
    }

    /// The ledger of a canary as the remote has it now (fetches first).
    pub async fn ledger(
        &self,
        source: &Source,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Ledger>, Error> {
        let path = ledger::path(&self.settings.ledger_dir, namespace, name);
        read_ledger(&self.client, source, &self.settings.cache_dir.join("read"), path).await
    }
}

/// Fetches `source` into a cached clone under `cache_dir` and reads the ledger at `path`;
/// None when the branch or the file does not exist.
pub async fn read_ledger(
    client: &Client,
    source: &Source,
    cache_dir: &std::path::Path,
    path: String,
) -> Result<Option<Ledger>, Error> {
    let credentials = source::credentials_of(client, source.secret.as_ref()).await?;
    let remote = source.remote.clone();
    let cache_dir = cache_dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Option<Ledger>, Error> {
        let mut repo = Repo::open(&cache_dir, remote, credentials)?;
        let Some(head) = repo.fetch()? else {
            return Ok(None);
        };
        let Some(bytes) = repo.read_file(head, &path)? else {
            return Ok(None);
        };
        Ok(Some(Ledger::parse(&path, &String::from_utf8_lossy(&bytes))?))
    })
    .await
    .map_err(|e| Error::Worker(e.to_string()))?
}

/// One repository's worker: gathers jobs, pushes them in batches.
struct Worker {
    client: Client,
    settings: Arc<Settings>,
    remote: Remote,
    /// The cached clone; in a Mutex because git2's repository is Send but not Sync.
    repo: Mutex<Option<Repo>>,
    stats: Arc<Stats>,
}

/// The records of one canary for one push.
struct Batch {
    namespace: String,
    name: String,
    /// The last record the reconciler asked to have pushed.
    wanted: i64,
    uid: String,
    /// The canary's resourceVersion when its outbox was read, and the whole outbox.
    resource_version: Option<String>,
    outbox: Vec<PendingRecord>,
    target: (String, String),
    path: Option<String>,
    records: Vec<PendingRecord>,
}

/// What one canary got from a push.
struct Written {
    namespace: String,
    name: String,
    upto: i64,
    resource_version: Option<String>,
    outbox: Vec<PendingRecord>,
    /// Manifest edits that could not be made (a file that does not parse, ...).
    warnings: Vec<String>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut dirty: BTreeMap<(String, String), Job> = BTreeMap::new();
        let mut backoff = Duration::ZERO;
        loop {
            if dirty.is_empty() {
                match rx.recv().await {
                    Some(job) => add(&mut dirty, job),
                    None => return,
                }
            }
            // Gather what else arrives within the window (or the backoff after a failure).
            let wait = self.settings.batch_window.max(backoff);
            let until = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(job)) => add(&mut dirty, job),
                    Ok(None) if dirty.is_empty() => return,
                    Ok(None) | Err(_) => break,
                }
            }
            let jobs: Vec<Job> = dirty.values().cloned().collect();
            match self.flush(&jobs).await {
                Ok(done) => {
                    for (key, upto) in done {
                        if dirty.get(&key).is_some_and(|job| job.upto <= upto) {
                            dirty.remove(&key);
                        }
                    }
                    // What is left could not be written (a ledger that does not parse) or was
                    // not yet in the status we read: look again, but not in a tight loop.
                    backoff = if dirty.is_empty() {
                        Duration::ZERO
                    } else {
                        (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(60))
                    };
                }
                Err(error) => {
                    self.stats
                        .failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    tracing::warn!(remote = %safe_url(&self.remote.url), error = %error, retry_in = ?backoff, "cannot write the rollout records to Git");
                    self.report_error(&jobs, &error.to_string()).await;
                }
            }
        }
    }

    /// Pushes the pending records of `jobs`; returns, per canary, the last record now on the
    /// remote.
    async fn flush(&mut self, jobs: &[Job]) -> Result<Vec<((String, String), i64)>, Error> {
        let started = Instant::now();
        let batches = self.read_outboxes(jobs).await;
        let read = started.elapsed();
        let mut done: Vec<((String, String), i64)> = Vec::new();
        let mut batches_with_records = Vec::new();
        for batch in batches {
            if batch.records.is_empty() {
                // Nothing pending (already pushed, or the canary is gone).
                done.push(((batch.namespace, batch.name), batch.wanted));
            } else {
                batches_with_records.push(batch);
            }
        }
        if batches_with_records.is_empty() {
            return Ok(done);
        }
        let secret = jobs.iter().find_map(|j| j.source.secret.clone());
        let credentials = source::credentials_of(&self.client, secret.as_ref()).await?;
        let cached = self.repo.lock().expect("the repo lock is never poisoned").take();
        let repo = match cached {
            Some(repo) => repo,
            None => Repo::open(
                &self.settings.cache_dir.join("write"),
                self.remote.clone(),
                credentials.clone(),
            )?,
        };
        let settings = self.settings.clone();
        let remote = self.remote.clone();
        let stats = self.stats.clone();
        let (repo, result) = tokio::task::spawn_blocking(move || {
            let mut repo = repo;
            repo.set_credentials(credentials);
            let result = write(&mut repo, &remote, &settings, &batches_with_records, &stats);
            (repo, result)
        })
        .await
        .map_err(|e| Error::Worker(e.to_string()))?;
        *self.repo.lock().expect("the repo lock is never poisoned") = Some(repo);
        let (commit, written) = result?;
        let wrote = started.elapsed();
        let pushed_at = jiff::Timestamp::now().to_string();
        futures::stream::iter(&written)
            .for_each_concurrent(32, |one| self.acknowledge(one, commit.as_deref(), &pushed_at))
            .await;
        for one in &written {
            done.push(((one.namespace.clone(), one.name.clone()), one.upto));
        }
        tracing::debug!(
            remote = %safe_url(&self.remote.url),
            canaries = written.len(),
            read_outboxes = ?read,
            committed_and_pushed = ?(wrote - read),
            acknowledged = ?(started.elapsed() - wrote),
            "rollout records pushed"
        );
        Ok(done)
    }

    /// The live outboxes of the canaries (the store may lag behind the status just written).
    async fn read_outboxes(&self, jobs: &[Job]) -> Vec<Batch> {
        futures::stream::iter(jobs.iter().cloned())
            .map(|job| {
                let client = self.client.clone();
                async move {
                    let api: Api<Canary> = Api::namespaced(client, &job.namespace);
                    let canary = match api.get_opt(&job.name).await {
                        Ok(canary) => canary,
                        Err(error) => {
                            tracing::warn!(namespace = %job.namespace, name = %job.name, error = %error, "cannot read the canary's outbox");
                            None
                        }
                    };
                    let uid = canary.as_ref().and_then(|c| c.uid()).unwrap_or_default();
                    let target = canary
                        .as_ref()
                        .map(|c| (c.spec.target_ref.kind.as_str().to_string(), c.spec.target_ref.name.clone()))
                        .unwrap_or_default();
                    let records = outbox::pending(canary.as_ref().and_then(|c| c.status.as_ref()));
                    let outbox = canary
                        .as_ref()
                        .and_then(|c| c.status.as_ref()?.gitops.as_ref()?.pending.clone())
                        .unwrap_or_default();
                    Batch {
                        namespace: job.namespace.clone(),
                        name: job.name.clone(),
                        wanted: job.upto,
                        uid,
                        resource_version: canary.as_ref().and_then(|c| c.resource_version()),
                        outbox,
                        target,
                        path: job.source.path.clone(),
                        records,
                    }
                }
            })
            .buffer_unordered(32)
            .collect()
            .await
    }

    /// Records the push in the canary's status and drops the pushed records from its outbox.
    async fn acknowledge(&self, written: &Written, commit: Option<&str>, at: &str) {
        let api: Api<Canary> = Api::namespaced(self.client.clone(), &written.namespace);
        if written.upto == 0 {
            // Nothing was written (its ledger does not parse): only say why.
            let patch = json!({ "status": { "gitops": { "lastError": written.warnings.join("; ") } } });
            let _ = api
                .patch_status(&written.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            return;
        }
        let mut gitops = json!({
            "pushedRecord": written.upto,
            "lastPushTime": at,
            "lastError": if written.warnings.is_empty() { serde_json::Value::Null } else { json!(written.warnings.join("; ")) },
        });
        if let Some(commit) = commit {
            gitops["lastCommit"] = json!(commit);
        }
        // Prune the outbox only if nobody wrote the status since we read it; otherwise the
        // reconciler prunes it at its next write.
        let pruned = match &written.resource_version {
            Some(version) => {
                let rest: Vec<&PendingRecord> =
                    written.outbox.iter().filter(|r| r.seq > written.upto).collect();
                let mut with_pending = gitops.clone();
                with_pending["pending"] = if rest.is_empty() {
                    serde_json::Value::Null
                } else {
                    json!(rest)
                };
                let patch = json!({
                    "metadata": { "resourceVersion": version },
                    "status": { "gitops": with_pending },
                });
                api.patch_status(&written.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
            }
            None => false,
        };
        if !pruned {
            let patch = json!({ "status": { "gitops": gitops } });
            if let Err(error) = api
                .patch_status(&written.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                && !matches!(&error, kube::Error::Api(s) if s.code == 404)
            {
                tracing::warn!(namespace = %written.namespace, name = %written.name, error = %error, "cannot record the push in the canary status");
            }
        }
        for warning in &written.warnings {
            tracing::warn!(namespace = %written.namespace, name = %written.name, warning = %warning, "rollback not written back to Git");
        }
    }

    /// Says in each canary's status why its records wait.
    async fn report_error(&self, jobs: &[Job], error: &str) {
        for job in jobs {
            let api: Api<Canary> = Api::namespaced(self.client.clone(), &job.namespace);
            let patch = json!({ "status": { "gitops": { "lastError": error } } });
            let _ = api
                .patch_status(&job.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

fn add(dirty: &mut BTreeMap<(String, String), Job>, job: Job) {
    let key = (job.namespace.clone(), job.name.clone());
    match dirty.get_mut(&key) {
        Some(old) => {
            old.upto = old.upto.max(job.upto);
            old.source = job.source;
        }
        None => {
            dirty.insert(key, job);
        }
    }
}

/// Builds the commits of `batches` on the branch head and pushes them; on a rejected push,
/// fetches and builds them again on the new head. Blocking.
fn write(
    repo: &mut Repo,
    remote: &Remote,
    settings: &Settings,
    batches: &[Batch],
    stats: &Stats,
) -> Result<(Option<String>, Vec<Written>), Error> {
    use std::sync::atomic::Ordering::Relaxed;
    for _ in 0..settings.push_attempts.max(1) {
        let head = repo.fetch()?;
        let mut tip = head;
        let mut written = Vec::new();
        let mut commits = 0;
        for batch in batches {
            let (new_tip, one, made) = write_canary(repo, settings, batch, tip)?;
            tip = new_tip;
            commits += made;
            written.push(one);
        }
        if tip == head {
            // Everything was on the remote already (pushed before a restart).
            return Ok((head.map(|h| h.to_string()), written));
        }
        let Some(tip_commit) = tip else {
            return Ok((None, written));
        };
        match repo.push(tip_commit)? {
            Push::Pushed => {
                stats.pushes.fetch_add(1, Relaxed);
                stats.commits.fetch_add(commits, Relaxed);
                return Ok((Some(tip_commit.to_string()), written));
            }
            Push::Rejected { reason } => {
                stats.rejected.fetch_add(1, Relaxed);
                tracing::info!(remote = %safe_url(&remote.url), reason = %reason, "push rejected; fetching and rebuilding the records on the new head");
            }
        }
    }
    Err(Error::Contended {
        remote: safe_url(&remote.url),
        attempts: settings.push_attempts,
    })
}

/// Commits the records of one canary on `tip`: the ledger file, and for a rollback the
/// manifests written back to the serving version.
fn write_canary(
    repo: &Repo,
    settings: &Settings,
    batch: &Batch,
    mut tip: Option<git2::Oid>,
) -> Result<(Option<git2::Oid>, Written, u64), Error> {
    let id = format!("{}/{}", batch.namespace, batch.name);
    let path = ledger::path(&settings.ledger_dir, &batch.namespace, &batch.name);
    let target = format!("{}/{}", batch.target.0, batch.target.1);
    let mut warnings = Vec::new();
    let mut made = 0;
    let upto = batch.records.last().map_or(0, |r| r.seq);
    let mut ledger = match tip.map(|t| repo.read_file(t, &path)).transpose()?.flatten() {
        None => Ledger::new(&id, &batch.uid, &target),
        Some(bytes) => match Ledger::parse(&path, &String::from_utf8_lossy(&bytes)) {
            Ok(ledger) => ledger,
            Err(error) => {
                // Never commit over a file we cannot read: the records wait until it is fixed.
                warnings.push(error.to_string());
                return Ok((
                    tip,
                    Written {
                        namespace: batch.namespace.clone(),
                        name: batch.name.clone(),
                        upto: 0,
                        resource_version: None,
                        outbox: Vec::new(),
                        warnings,
                    },
                    0,
                ));
            }
        },
    };
    ledger.adopt(&batch.uid, &target);
    for record in &batch.records {
        if ledger.has(record) {
            continue;
        }
        let mut changes = Vec::new();
        let mut edited = Vec::new();
        if record.kind == "RolledBack"
            && let (Some(base), Some(dir)) = (tip, batch.path.as_deref())
        {
            let reverts = image_reverts(record);
            if !reverts.is_empty() {
                let target_ref = TargetRef {
                    kind: &batch.target.0,
                    name: &batch.target.1,
                    namespace: Some(&batch.namespace),
                };
                for file in manifest_files(repo, base, dir)? {
                    let Some(bytes) = repo.read_file(base, &file)? else {
                        continue;
                    };
                    let Ok(text) = String::from_utf8(bytes) else {
                        continue;
                    };
                    match edit::revert_images(&file, &text, &target_ref, &reverts) {
                        Ok(Some(new)) => {
                            changes.push((file.clone(), Some(new.into_bytes())));
                            edited.push(file);
                        }
                        Ok(None) => {}
                        Err(error) => warnings.push(error.to_string()),
                    }
                }
                if edited.is_empty() && warnings.is_empty() {
                    warnings.push(format!(
                        "no manifest under {dir} declares {}: Git still names the failed version; set spec.gitops.path to the file that declares the target",
                        reverts.iter().map(|r| r.from.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        let head = tip.map(|t| t.to_string()).unwrap_or_default();
        ledger.apply(record, &head);
        let text = ledger.to_yaml()?;
        changes.push((path.clone(), Some(text.into_bytes())));
        let message = message::commit_message(&id, record, &edited);
        tip = Some(repo.commit(tip, &changes, &message, &settings.author)?);
        made += 1;
    }
    Ok((
        tip,
        Written {
            namespace: batch.namespace.clone(),
            name: batch.name.clone(),
            upto,
            resource_version: batch.resource_version.clone(),
            outbox: batch.outbox.clone(),
            warnings,
        },
        made,
    ))
}

/// What a rollback puts back: each container whose image differs from the primary's.
fn image_reverts(record: &PendingRecord) -> Vec<ImageChange> {
    record
        .images
        .iter()
        .filter_map(|(container, from)| {
            let to = record.primary_images.get(container)?;
            (to != from).then(|| ImageChange {
                container: container.clone(),
                from: from.clone(),
                to: to.clone(),
            })
        })
        .collect()
}

/// The YAML files at `path` (a file, or every YAML file under a directory).
fn manifest_files(repo: &Repo, commit: git2::Oid, path: &str) -> Result<Vec<String>, Error> {
    let path = path.trim_matches('/');
    if path.ends_with(".yaml") || path.ends_with(".yml") {
        return Ok(vec![path.to_string()]);
    }
    Ok(repo
        .list_files(commit, path)?
        .into_iter()
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect())
}

pub use super::repo::safe_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            safe_url("https://bot:s3cret@git.example.com/a.git"),
            "https://bot@git.example.com/a.git"
        );
        assert_eq!(
            safe_url("ssh://git@github.com/org/repo.git"),
            "ssh://git@github.com/org/repo.git"
        );
        assert_eq!(
            safe_url("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
    }

    #[test]
    fn a_rollback_reverts_only_the_changed_containers() {
        let record = PendingRecord {
            kind: "RolledBack".into(),
            images: BTreeMap::from([
                ("app".into(), "app:2".into()),
                ("sidecar".into(), "envoy:1".into()),
            ]),
            primary_images: BTreeMap::from([
                ("app".into(), "app:1".into()),
                ("sidecar".into(), "envoy:1".into()),
            ]),
            ..Default::default()
        };
        assert_eq!(
            image_reverts(&record),
            [ImageChange {
                container: "app".into(),
                from: "app:2".into(),
                to: "app:1".into()
            }]
        );
    }
}
