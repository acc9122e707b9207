//! Turns the records in the canaries' outboxes (`status.gitops.pending`) into commits on the
//! config repo: one worker per repository coalesces the records of many canaries into one
//! push, skips what the ledger already holds (so a record lands exactly once), rebuilds its
//! commits on a rejected push, and backs off while the remote is unreachable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::authors::{self, RevisionCommit};
use super::cpu;
use super::draft::Draft;
use super::edit::{self, TargetRef};
use super::ledger::{self, Ledger};
use super::owners;
use super::release::{self, Destination};
use super::repo::{Push, Repo, Signer};
use super::source::{self, Source};
use super::{Author, ImageChange, Remote, message, outbox, select};
use crate::api::{Canary, PendingRecord, PullRequestSettings, PullRequestStatus, ReleaseOwners};
use crate::forge::policy::Authors;
use crate::forge::select::Forges;
use crate::forge::{self, Forge, NewPullRequest, Polled, PullRequestState, RepoId};
use crate::telemetry::metrics::GitMetrics;

/// How the writer is set up (from the controller's flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the cached clones live.
    pub cache_dir: PathBuf,
    /// Directory of the ledgers in the config repo.
    pub ledger_dir: String,
    /// This cluster's name (`--cluster-name`): its ledgers, release branches and commit
    /// subjects carry it. None keeps the single-cluster layout.
    pub cluster: Option<String>,
    pub author: Author,
    /// The longest a record waits for others to join its push (see `Gathering`): more
    /// canaries per push, fewer pushes.
    pub batch_window: Duration,
    /// Rejected pushes retried (fetch, rebuild, push) before the batch waits for the backoff.
    pub push_attempts: usize,
    /// While the remote is unreachable, how often it is probed (connect and list refs): the
    /// records waiting for it go out this soon after it is back, not at the end of a backoff.
    pub probe_every: Duration,
    /// The Secret holding the SSH key every commit is signed with (`--git-signing-secret`);
    /// read at each push, so a rotated key is used at once.
    pub signing_secret: Option<source::SecretRef>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cache_dir: std::env::temp_dir().join("flaggit-git"),
            ledger_dir: ledger::DEFAULT_DIR.to_string(),
            cluster: None,
            author: Author::default(),
            batch_window: Duration::from_millis(250),
            push_attempts: 5,
            probe_every: Duration::from_secs(2),
            signing_secret: None,
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
    #[error(
        "the push to branch {branch} of {remote} was refused by a rule of the server (branch protection or a hook): {reason}; \
         let flaggit's account push to {branch}, or use spec.gitops.mode: pull-request with pullRequest.revert: pull-request"
    )]
    Refused {
        remote: String,
        branch: String,
        reason: String,
    },
    #[error("the git worker stopped: {0}")]
    Worker(String),
    #[error(
        "cannot read the commit signing key from Secret {secret}: {message}: create it with the key {SIGNING_KEY} holding an unencrypted Ed25519 private key (ssh-keygen -t ed25519 -N '')"
    )]
    SigningSecret { secret: String, message: String },
    #[error(
        "{remote} refused the push to {branch}: the branch requires signed commits and flaggit's are not signed ({reason}); give flaggit a signing key with --git-signing-secret (docs/gitops.md, \"Signed records\")"
    )]
    Unsigned {
        remote: String,
        branch: String,
        reason: String,
    },
    #[error(
        "{remote} refused flaggit's signed commits on {branch} ({reason}): register the public key {public_key} as a signing key of the account flaggit commits as ({email})"
    )]
    SignatureRefused {
        remote: String,
        branch: String,
        reason: String,
        public_key: String,
        email: String,
    },
}

/// The key of the signing Secret that holds the private key (`kubernetes.io/ssh-auth`'s
/// `ssh-privatekey` is read too).
pub const SIGNING_KEY: &str = "signingKey";

impl Settings {
    /// Where this controller's ledgers are.
    pub fn layout(&self) -> ledger::Layout {
        ledger::Layout::new(&self.ledger_dir, self.cluster.as_deref())
    }
}

/// Which cluster this controller writes for, beyond its name: the uid of its `kube-system`
/// namespace, and the ledgers it has pushed, to notice a second controller writing them.
#[derive(Debug, Default)]
pub struct Identity {
    uid: tokio::sync::OnceCell<String>,
    pushed: Mutex<HashSet<String>>,
}

impl Identity {
    /// The uid of the cluster's `kube-system` namespace (read once); empty when it cannot be
    /// read, which turns the shared-ledger check off.
    pub async fn uid(&self, client: &Client) -> String {
        self.uid
            .get_or_init(|| async {
                let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
                match api.get("kube-system").await {
                    Ok(namespace) => namespace.uid().unwrap_or_default(),
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot read the kube-system namespace: two clusters writing one ledger will not be detected");
                        String::new()
                    }
                }
            })
            .await
            .clone()
    }

    fn pushed_before(&self, path: &str) -> bool {
        self.pushed
            .lock()
            .expect("the pushed-ledger lock is never poisoned")
            .contains(path)
    }

    fn mark_pushed(&self, paths: impl IntoIterator<Item = String>) {
        self.pushed
            .lock()
            .expect("the pushed-ledger lock is never poisoned")
            .extend(paths);
    }
}

impl Error {
    /// The remote did not answer (down, unreachable, timed out): worth probing for its return.
    fn unreachable(&self) -> bool {
        matches!(
            self,
            Self::Repo(
                super::repo::Error::Fetch { .. }
                    | super::repo::Error::Push { .. }
                    | super::repo::Error::Timeout { .. }
            )
        )
    }

    pub fn category(&self) -> &'static str {
        match self {
            Self::Repo(e) => e.category(),
            Self::Source(e) => e.category(),
            Self::Ledger(e) => e.category(),
            Self::Contended { .. } => "PushContended",
            Self::Refused { .. } => "PushRefused",
            Self::Worker(_) => "GitWorker",
            Self::SigningSecret { .. } => "GitSigningSecret",
            Self::Unsigned { .. } => "GitSignatureRequired",
            Self::SignatureRefused { .. } => "GitSignatureRefused",
        }
    }
}

/// Where the writer says what keeps a canary's records from Git, besides
/// `status.gitops.lastError`: the controller's Kubernetes events.
#[async_trait::async_trait]
pub trait Notices: Send + Sync {
    /// A warning event on `canary`; `reason` is a short fixed category.
    async fn warn(&self, canary: &Canary, reason: &'static str, message: &str);
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
    /// The canary as its producer last had it from the API server with this outbox in it
    /// (the reconciler's status-patch answer): the worker takes the records from it instead
    /// of reading the canary again. None, or a copy without record `upto`, and the worker
    /// reads it. See [`Job::with_snapshot`] for why an old copy is safe.
    pub canary: Option<Arc<Canary>>,
}

impl Job {
    /// The job for `canary`'s outbox up to record `upto` in `source`, carrying `canary` as
    /// its producer got it back from the API server (after writing the outbox).
    ///
    /// Why the worker may trust such a copy instead of reading the canary again:
    ///
    /// - The outbox it holds is in etcd already: the copy is the API server's answer to the
    ///   write that stored it. Records are still acknowledged (`pushedRecord`) only after the
    ///   push that carries them, so a crash at any point leaves them in the stored outbox, to
    ///   be read again (DESIGN.md, "Batching and conflicts").
    /// - A copy may be older than what the writer pushed since (its `pushedRecord` behind):
    ///   the worker skips the records at or below what it remembers pushing for the canary
    ///   (by uid, [`Pushed`]) and below the ledger's last record, so none is committed twice.
    /// - Copies of one canary coalesce to the newest (most records, then highest
    ///   resourceVersion); a copy without record `upto`, a canary in pull-request mode (whose
    ///   pull-request status the writer itself changes between batches) and every retry after
    ///   a failed batch read the live canary.
    pub fn with_snapshot(source: Source, upto: i64, canary: Canary) -> Self {
        Self {
            namespace: canary.namespace().unwrap_or_default(),
            name: canary.name_any(),
            source,
            upto,
            canary: Some(Arc::new(canary)),
        }
    }

    /// The copy of the canary this job carries, if it holds the records the job asks for.
    fn snapshot(&self) -> Option<&Arc<Canary>> {
        self.canary
            .as_ref()
            .filter(|canary| last_record(canary) >= self.upto)
    }
}

/// The number of the last record in the canary's outbox (0: none).
fn last_record(canary: &Canary) -> i64 {
    canary
        .status
        .as_ref()
        .and_then(|s| s.gitops.as_ref())
        .and_then(|g| g.last_record)
        .unwrap_or(0)
}

/// Of two copies of one canary, whether `new` is at least as recent as `old`: it holds more
/// records, or as many and a resourceVersion not below (etcd's revision, compared as a
/// number when both are; else the later arrival wins).
fn newer_or_same(new: &Canary, old: &Canary) -> bool {
    let version = |c: &Canary| c.resource_version().and_then(|v| v.parse::<u64>().ok());
    match last_record(new).cmp(&last_record(old)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => match (version(new), version(old)) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        },
    }
}

/// What a worker pushed, per canary: the last record number, for the canary's uid (a canary
/// deleted and created again under its name numbers from 1 again). A copy of a canary older
/// than the push still lists those records as pending; they are not written again. One entry
/// per canary name the worker wrote for; an entry goes when the canary is found gone.
#[derive(Debug, Default)]
struct Pushed(HashMap<(String, String), (String, i64)>);

impl Pushed {
    fn remember(&mut self, key: (String, String), uid: &str, upto: i64) {
        match self.0.get_mut(&key) {
            Some((known, last)) if known == uid => *last = (*last).max(upto),
            _ => {
                self.0.insert(key, (uid.to_string(), upto));
            }
        }
    }

    /// The last record of canary `key` (uid `uid`) known to be on the remote; 0 when none.
    fn last(&self, key: &(String, String), uid: &str) -> i64 {
        self.0
            .get(key)
            .filter(|(known, _)| known == uid)
            .map_or(0, |(_, last)| *last)
    }

    fn forget(&mut self, key: &(String, String)) {
        self.0.remove(key);
    }
}

/// The records of the canary's outbox the remote does not have: above its `pushedRecord`
/// and above `pushed`, what the writer remembers pushing (the copy may be older than that
/// push), oldest first.
fn unpushed(status: Option<&crate::api::CanaryStatus>, pushed: i64) -> Vec<PendingRecord> {
    let mut records = outbox::pending(status);
    records.retain(|r| r.seq > pushed);
    records
}

/// Hands outboxes to one worker per repository.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    settings: Arc<Settings>,
    workers: Arc<Mutex<HashMap<Remote, mpsc::UnboundedSender<Job>>>>,
    stats: Arc<Stats>,
    forges: Option<Arc<Forges>>,
    notices: Option<Arc<dyn Notices>>,
    identity: Arc<Identity>,
    metrics: GitMetrics,
    /// Records waiting, per repository: the gauge shows their sum.
    pending: Arc<Mutex<HashMap<Remote, i64>>>,
}

/// Counters for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    pub pushes: std::sync::atomic::AtomicU64,
    pub commits: std::sync::atomic::AtomicU64,
    pub rejected: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    /// What the last batches cost (at most [`KEPT_BATCHES`]), oldest first.
    batches: Mutex<std::collections::VecDeque<BatchCost>>,
}

/// Batches whose cost [`Stats::batches`] keeps.
pub const KEPT_BATCHES: usize = 1000;

/// What one batch (one flush of the outboxes) cost.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct BatchCost {
    /// Numbered from 1 per writer.
    pub id: u64,
    pub canaries: usize,
    pub records: usize,
    pub commits: u64,
    /// Requests to the API server that read outboxes (lists and gets): none for canaries
    /// whose job carried the canary ([`Job::with_snapshot`]).
    pub outbox_reads: usize,
    /// Reading the outboxes (from the API server, or the copies the jobs carry).
    pub read: Duration,
    /// Building the commits (every attempt).
    pub commit: Duration,
    /// Pushing them (every attempt; fetches not included).
    pub push: Duration,
    /// From the first outbox read to the push that took them.
    pub total: Duration,
    /// Recording the push in the canaries' statuses (after `total`, while the next batch is
    /// built); None until done.
    pub acknowledge: Option<Duration>,
    /// CPU time of the writer's own work in each phase ([`super::cpu`]): unlike the
    /// durations above, it does not grow when other processes share the machine. Reading and
    /// acknowledging count the polls of the writer's tasks (building requests, decoding
    /// answers), not the HTTP client's connection tasks or the API server.
    pub cpu: PhaseCpu,
}

/// CPU time per phase of one batch (see [`BatchCost::cpu`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PhaseCpu {
    pub read: Duration,
    /// Building the commits: ledgers read and written, objects and trees, commit objects,
    /// and storing them (every attempt).
    pub commit: Duration,
    /// Pushing: the pack built and sent by this process (every attempt; fetches not
    /// included; the remote's side is not this process's).
    pub push: Duration,
    /// None until the acknowledgements are written.
    pub acknowledge: Option<Duration>,
}

impl Stats {
    /// The cost of the last batches, oldest first.
    pub fn batches(&self) -> Vec<BatchCost> {
        self.batches
            .lock()
            .expect("the batch cost lock is never poisoned")
            .iter()
            .cloned()
            .collect()
    }

    fn add_batch(&self, mut cost: BatchCost) -> u64 {
        let mut batches = self
            .batches
            .lock()
            .expect("the batch cost lock is never poisoned");
        cost.id = batches.back().map_or(1, |b| b.id + 1);
        let id = cost.id;
        batches.push_back(cost);
        while batches.len() > KEPT_BATCHES {
            batches.pop_front();
        }
        id
    }

    fn acknowledged(&self, id: u64, took: Duration, cpu: Duration) {
        let mut batches = self
            .batches
            .lock()
            .expect("the batch cost lock is never poisoned");
        if let Some(batch) = batches.iter_mut().rev().find(|b| b.id == id) {
            batch.acknowledge = Some(took);
            batch.cpu.acknowledge = Some(cpu);
        }
    }
}

impl Writer {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            workers: Arc::default(),
            stats: Arc::default(),
            forges: None,
            notices: None,
            identity: Arc::default(),
            metrics: GitMetrics::default(),
            pending: Arc::default(),
        }
    }

    /// Says in events on the canary, too, why its records cannot be written.
    pub fn with_notices(mut self, notices: Arc<dyn Notices>) -> Self {
        self.notices = Some(notices);
        self
    }

    /// Reports the writer's figures to `metrics` (served on `/metrics`).
    pub fn with_metrics(mut self, metrics: GitMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Opens, merges and closes release pull requests on the repository's forge (one of
    /// `forges`) for canaries in `pull-request` mode. Without a forge, they are written as in
    /// `commit` mode.
    pub fn with_forges(mut self, forges: Arc<Forges>) -> Self {
        self.forges = (!forges.is_empty()).then_some(forges);
        self
    }

    /// The forges release pull requests are opened on, if one is configured.
    pub fn forges(&self) -> Option<&Arc<Forges>> {
        self.forges.as_ref()
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
                forges: self.forges.clone(),
                notices: self.notices.clone(),
                base_refused: false,
                identity: self.identity.clone(),
                metrics: self.metrics.clone(),
                pending: self.pending.clone(),
                acks: Vec::new(),
                dora: Arc::default(),
                pushed: Pushed::default(),
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

    /// This cluster's ledger of a canary as the remote has it now (fetches first); in a named
    /// cluster without a ledger of its own yet, the single-cluster ledger it migrates from.
    pub async fn ledger(
        &self,
        source: &Source,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Ledger>, Error> {
        let layout = self.settings.layout();
        let uid = self.identity.uid(&self.client).await;
        let cache = self.settings.cache_dir.join("read");
        let mut all = read_ledgers(&self.client, source, &cache, &layout.dir, namespace, name).await?;
        let mut take = |path: &str| {
            let at = all.iter().position(|(p, _)| p == path)?;
            Some(all.swap_remove(at).1)
        };
        if let Some(own) = take(&layout.path(namespace, name)) {
            return Ok(Some(own?));
        }
        let legacy = layout.legacy_path(namespace, name);
        match legacy.as_deref().and_then(take) {
            Some(Ok(old)) if old.seeds(&uid) => Ok(Some(old)),
            _ => Ok(None),
        }
    }
}

/// A ledger file read back: its path and its content, or why it does not parse.
pub type LedgerFile = (String, Result<Ledger, ledger::Error>);

/// Fetches `source` into a cached clone under `cache_dir` and reads every ledger of canary
/// `namespace/name` under `dir`: the single-cluster one (`<dir>/<namespace>/<name>.yaml`) and
/// each cluster's (`<dir>/<cluster>/<namespace>/<name>.yaml`). Empty when the branch does not
/// exist.
pub async fn read_ledgers(
    client: &Client,
    source: &Source,
    cache_dir: &std::path::Path,
    dir: &str,
    namespace: &str,
    name: &str,
) -> Result<Vec<LedgerFile>, Error> {
    let credentials = source::credentials_of(client, source.secret.as_ref()).await?;
    let remote = source.remote.clone();
    let cache_dir = cache_dir.to_path_buf();
    let (dir, namespace, name) = (dir.to_string(), namespace.to_string(), name.to_string());
    tokio::task::spawn_blocking(move || -> Result<Vec<LedgerFile>, Error> {
        let mut repo = Repo::open(&cache_dir, remote, credentials)?;
        let Some(head) = repo.fetch()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for path in ledger_paths(&repo, head, &dir, &namespace, &name)? {
            if let Some(bytes) = repo.read_file(head, &path)? {
                let parsed = Ledger::parse(&path, &String::from_utf8_lossy(&bytes));
                out.push((path, parsed));
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::Worker(e.to_string()))?
}

/// The paths of the ledgers of `namespace/name` at `commit`: the single-cluster one first,
/// then one per cluster directory.
fn ledger_paths(
    repo: &Repo,
    commit: git2::Oid,
    dir: &str,
    namespace: &str,
    name: &str,
) -> Result<Vec<String>, Error> {
    let single = ledger::path(dir, namespace, name);
    let suffix = format!("/{namespace}/{name}.yaml");
    let root = dir.trim_matches('/');
    let prefix = if root.is_empty() {
        String::new()
    } else {
        format!("{root}/")
    };
    let mut paths = vec![single.clone()];
    for file in repo.list_files(commit, root)? {
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        // `<cluster>/<namespace>/<name>.yaml`: exactly one directory above the namespace.
        if file != single && rest.ends_with(&suffix) && rest.matches('/').count() == 2 {
            paths.push(file);
        }
    }
    Ok(paths)
}

/// One repository's worker: gathers jobs, pushes them in batches.
struct Worker {
    client: Client,
    settings: Arc<Settings>,
    remote: Remote,
    /// The cached clone; in a Mutex because git2's repository is Send but not Sync.
    repo: Mutex<Option<Repo>>,
    stats: Arc<Stats>,
    forges: Option<Arc<Forges>>,
    notices: Option<Arc<dyn Notices>>,
    /// The last push to the base branch was refused by a rule (branch protection): rollbacks
    /// of canaries in pull-request mode go to a revert pull request instead.
    base_refused: bool,
    identity: Arc<Identity>,
    metrics: GitMetrics,
    pending: Arc<Mutex<HashMap<Remote, i64>>>,
    /// Acknowledgements of pushed batches still being written to the canaries' statuses.
    acks: Vec<Acks>,
    /// The base branch's history as far as the DORA figures read it.
    dora: Arc<Mutex<DoraHistory>>,
    /// What this worker pushed, per canary (see [`Job::with_snapshot`]).
    pushed: Pushed,
}

/// The acknowledgements of one pushed batch, written behind the worker's back.
struct Acks {
    canaries: HashSet<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

/// Status patches of one batch's acknowledgements in flight at once.
const ACK_CONCURRENCY: usize = 32;

/// The records of one canary for one push.
struct Batch {
    namespace: String,
    name: String,
    /// The last record the reconciler asked to have pushed.
    wanted: i64,
    /// The canary was read and does not exist (any more).
    gone: bool,
    uid: String,
    target: (String, String),
    path: Option<String>,
    /// Where the source puts documents that name no namespace.
    source_namespace: Option<String>,
    /// The records for this push: the run of pending records that go to `destination`.
    records: Vec<PendingRecord>,
    destination: Destination,
    /// Set in `pull-request` mode (with a forge): how release pull requests end.
    pull: Option<PullRequestSettings>,
    /// The release pull request the canary's status knows.
    pull_request: Option<PullRequestStatus>,
    canary: Option<Arc<Canary>>,
    /// The data of the primary's ConfigMap copies (by the original's name), read for records
    /// that promote (kept in the ledger for rebuild recovery) or roll back (written back).
    config_data: BTreeMap<String, BTreeMap<String, String>>,
}

/// What one canary got from a push.
struct Written {
    namespace: String,
    name: String,
    upto: i64,
    /// Manifest edits that could not be made (a file that does not parse, ...).
    warnings: Vec<String>,
    /// The head of the branch the records went to.
    commit: Option<String>,
    /// The release pull request after this push, when it changed.
    pull_request: Option<PullRequestStatus>,
    /// The config-repo commits that brought the revision, when a release pull request is
    /// to be opened for it.
    revision_commits: Vec<RevisionCommit>,
    /// Who owns what the release changed (`approvals.owners`), read at its base commit,
    /// when a release pull request is to be opened for it.
    owners: Option<ReleaseOwners>,
    /// The release-branch head someone other than flaggit pushed, which these records were
    /// built on.
    foreign: Option<String>,
    /// The push of these records was refused by a rule of the server (`warnings` says which).
    refused: bool,
    canary: Option<Arc<Canary>>,
    /// The ledger file the records went to.
    ledger: Option<String>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut dirty: BTreeMap<(String, String), Job> = BTreeMap::new();
        let mut backoff = Duration::ZERO;
        // The last flush found the remote unreachable: probe it while the backoff runs.
        let mut unreachable = false;
        // When the oldest waiting record arrived, and the latest.
        let mut gathering = Gathering::new(tokio::time::Instant::now());
        loop {
            if dirty.is_empty() {
                match rx.recv().await {
                    Some(job) => {
                        add(&mut dirty, job);
                        gathering = Gathering::new(tokio::time::Instant::now());
                    }
                    None => return,
                }
            }
            // Gather what else arrives (group commit, see `Gathering::ends`), not before the
            // backoff after a failure ends; an unreachable remote is probed meanwhile, and its
            // return ends the wait.
            let not_before = tokio::time::Instant::now() + backoff;
            let probe_every = self.settings.probe_every.max(Duration::from_millis(100));
            let mut probe_at = unreachable.then(|| tokio::time::Instant::now() + probe_every);
            loop {
                let until = gathering.ends(self.settings.batch_window).max(not_before);
                let deadline = probe_at.map_or(until, |at| at.min(until));
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => {
                        add(&mut dirty, job);
                        gathering.arrived(tokio::time::Instant::now());
                    }
                    Ok(None) if dirty.is_empty() => return,
                    Ok(None) => break,
                    Err(_) if deadline < until => {
                        if self.probe(probe_every).await {
                            tracing::info!(remote = %safe_url(&self.remote.url), "the remote answers again; writing the waiting records");
                            break;
                        }
                        probe_at = Some(tokio::time::Instant::now() + probe_every);
                    }
                    Err(_) => break,
                }
            }
            // Records that arrive while this batch is written have waited since it began.
            gathering = Gathering::new(tokio::time::Instant::now());
            let jobs: Vec<Job> = dirty.values().cloned().collect();
            let result = self.flush(&jobs).await;
            // What is written again after a failure is read live, not from the copies.
            for job in dirty.values_mut() {
                job.canary = None;
            }
            match result {
                Ok(done) => {
                    unreachable = false;
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
                    self.metrics.failed_now();
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    unreachable = error.unreachable();
                    tracing::warn!(remote = %safe_url(&self.remote.url), error = %error, retry_in = ?backoff, "cannot write the rollout records to Git");
                    self.report_error(&jobs, &error).await;
                }
            }
        }
    }

    /// Whether the remote answers now (a cheap connect and ref listing, no fetch).
    async fn probe(&self, timeout: Duration) -> bool {
        let Some(mut repo) = self.repo.lock().expect("the repo lock is never poisoned").take() else {
            // Never opened: the next flush finds out.
            return true;
        };
        let (repo, answered) = match tokio::task::spawn_blocking(move || {
            let answered = repo.probe(timeout);
            (repo, answered)
        })
        .await
        {
            Ok(done) => done,
            Err(_) => return true,
        };
        *self.repo.lock().expect("the repo lock is never poisoned") = Some(repo);
        if let Err(error) = &answered {
            tracing::debug!(remote = %safe_url(&self.remote.url), error = %error, "the remote still does not answer");
        }
        answered.is_ok()
    }

    /// Pushes the pending records of `jobs`; returns, per canary, the last record now on the
    /// remote.
    async fn flush(&mut self, jobs: &[Job]) -> Result<Vec<((String, String), i64)>, Error> {
        // A canary's statuses are read and written in order: its last acknowledgement first.
        self.settle(jobs).await;
        let started = Instant::now();
        let read_cpu = cpu::Tally::default();
        let (batches, reads) = cpu::metered(read_cpu.clone(), self.read_outboxes(jobs)).await;
        let read = started.elapsed();
        let mut done: Vec<((String, String), i64)> = Vec::new();
        let mut batches_with_records = Vec::new();
        for batch in batches {
            if batch.gone {
                self.pushed.forget(&(batch.namespace.clone(), batch.name.clone()));
            }
            if batch.records.is_empty() {
                // Nothing pending (already pushed, or the canary is gone).
                done.push(((batch.namespace, batch.name), batch.wanted));
            } else {
                batches_with_records.push(batch);
            }
        }
        if batches_with_records.is_empty() {
            self.set_pending(0);
            return Ok(done);
        }
        let pending: usize = batches_with_records.iter().map(|b| b.records.len()).sum();
        self.set_pending(pending);
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
        let batches = Arc::new(batches_with_records);
        let shared = batches.clone();
        let uid = self.identity.uid(&self.client).await;
        let identity = self.identity.clone();
        let metrics = self.metrics.clone();
        let dora = self.dora.clone();
        let signer = match &self.settings.signing_secret {
            Some(secret) => Some(signer_of(&self.client, secret).await?),
            None => None,
        };
        let (repo, result, meter) = tokio::task::spawn_blocking(move || {
            let mut repo = repo;
            repo.set_credentials(credentials);
            let meter = Meter::default();
            let writer = Us {
                settings: &settings,
                uid: &uid,
                identity: &identity,
                signer: signer.as_ref(),
                metrics: &metrics,
                cost: &meter,
                dora: &dora,
            };
            let result = write(&mut repo, &remote, &writer, &shared, &stats);
            (repo, result, meter)
        })
        .await
        .map_err(|e| Error::Worker(e.to_string()))?;
        *self.repo.lock().expect("the repo lock is never poisoned") = Some(repo);
        let mut written = result?;
        for (one, batch) in written.iter().zip(batches.iter()) {
            if batch.destination == Destination::Base {
                if one.refused {
                    self.base_refused = true;
                } else if one.upto > 0 {
                    self.base_refused = false;
                }
            }
        }
        let wrote = started.elapsed();
        // Release pull requests follow what was pushed; the records of a canary whose pull
        // request could not be opened, merged or closed stay in its outbox and are retried.
        let mut failed = Vec::new();
        if let Some(forges) = &self.forges {
            for (one, batch) in written.iter_mut().zip(batches.iter()) {
                let Some(pull) = &batch.pull else {
                    continue;
                };
                if one.upto == 0 {
                    continue;
                }
                let picked = match forges.pick(&self.remote.url, pull.forge) {
                    Ok(picked) => picked,
                    Err(message) => {
                        let error = forge::Error::Decode {
                            forge: pull.forge.map_or("forge", |k| k.as_str()),
                            action: "choose the forge of the repository".into(),
                            message,
                        };
                        failed.push((one.namespace.clone(), one.name.clone(), error));
                        continue;
                    }
                };
                match self
                    .pull_requests(picked.forge.as_ref(), &picked.repo, batch, one)
                    .await
                {
                    Ok(status) => one.pull_request = status,
                    Err(error) => failed.push((one.namespace.clone(), one.name.clone(), error)),
                }
            }
        }
        written.retain(|one| {
            !failed
                .iter()
                .any(|(ns, name, _)| *ns == one.namespace && *name == one.name)
        });
        for (namespace, name, error) in &failed {
            tracing::warn!(namespace = %namespace, name = %name, error = %error, "cannot update the release pull request; retrying");
            let api: Api<Canary> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({ "status": { "gitops": { "lastError": error.to_string() } } });
            let _ = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
        let uids: HashMap<(&str, &str), &str> = batches
            .iter()
            .map(|b| ((b.namespace.as_str(), b.name.as_str()), b.uid.as_str()))
            .collect();
        for one in &written {
            let key = (one.namespace.clone(), one.name.clone());
            if one.upto > 0
                && let Some(uid) = uids.get(&(one.namespace.as_str(), one.name.as_str()))
            {
                self.pushed.remember(key.clone(), uid, one.upto);
            }
            done.push((key, one.upto));
        }
        let on_remote: HashSet<(&str, &str)> = written
            .iter()
            .filter(|w| w.upto > 0)
            .map(|w| (w.namespace.as_str(), w.name.as_str()))
            .collect();
        let pushed: usize = batches
            .iter()
            .filter(|b| on_remote.contains(&(b.namespace.as_str(), b.name.as_str())))
            .map(|b| b.records.len())
            .sum();
        self.set_pending(pending.saturating_sub(pushed));
        let (commits, building, pushing) = meter.taken();
        let cost = BatchCost {
            id: 0,
            canaries: batches.len(),
            records: pending,
            outbox_reads: reads,
            commits,
            read,
            commit: building,
            push: pushing,
            total: wrote,
            acknowledge: None,
            cpu: PhaseCpu {
                read: read_cpu.total(),
                commit: meter.building_cpu.get(),
                push: meter.pushing_cpu.get(),
                acknowledge: None,
            },
        };
        tracing::debug!(
            remote = %safe_url(&self.remote.url),
            canaries = cost.canaries,
            records = cost.records,
            read_outboxes = ?read,
            committed = ?building,
            pushed = ?pushing,
            "rollout records pushed; acknowledging them"
        );
        let id = self.stats.add_batch(cost);
        self.acknowledge_behind(written, id);
        Ok(done)
    }

    /// Records the push in the canaries' statuses on a task of its own, so the next batch is
    /// read and built while the API server takes these patches. A canary's next batch waits
    /// for them ([`Worker::settle`]), so its status writes stay in order.
    fn acknowledge_behind(&mut self, written: Vec<Written>, batch: u64) {
        self.acks.retain(|acks| !acks.task.is_finished());
        let canaries = written
            .iter()
            .map(|one| (one.namespace.clone(), one.name.clone()))
            .collect();
        let client = self.client.clone();
        let notices = self.notices.clone();
        let stats = self.stats.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let at = jiff::Timestamp::now().to_string();
            let tally = cpu::Tally::default();
            let patches = futures::stream::iter(&written).for_each_concurrent(ACK_CONCURRENCY, |one| {
                acknowledge(&client, notices.as_deref(), one, &at)
            });
            cpu::metered(tally.clone(), patches).await;
            stats.acknowledged(batch, started.elapsed(), tally.total());
        });
        self.acks.push(Acks { canaries, task });
    }

    /// Waits until the acknowledgements in flight for any canary of `jobs` are written.
    async fn settle(&mut self, jobs: &[Job]) {
        let (wait, rest): (Vec<Acks>, Vec<Acks>) = std::mem::take(&mut self.acks)
            .into_iter()
            .filter(|acks| !acks.task.is_finished())
            .partition(|acks| {
                jobs.iter()
                    .any(|job| acks.canaries.contains(&(job.namespace.clone(), job.name.clone())))
            });
        self.acks = rest;
        for acks in wait {
            if let Err(error) = acks.task.await {
                tracing::warn!(error = %error, "the acknowledgement task failed");
            }
        }
    }

    /// Notes how many records of this repository wait; the gauge is the sum over repositories.
    fn set_pending(&self, records: usize) {
        let mut pending = self.pending.lock().expect("the pending lock is never poisoned");
        pending.insert(self.remote.clone(), records as i64);
        self.metrics.records_pending.set(pending.values().sum());
    }

    /// Opens, merges or closes the canary's release pull request after its records were
    /// pushed; returns the pull request's status when it changed.
    async fn pull_requests(
        &self,
        forge: &dyn Forge,
        repo: &RepoId,
        batch: &Batch,
        pushed: &Written,
    ) -> Result<Option<PullRequestStatus>, forge::Error> {
        let settings = batch.pull.clone().unwrap_or_default();
        let repo = repo.clone();
        let base = self.remote.branch.clone();
        let id = format!("{}/{}", batch.namespace, batch.name);
        // The merge and revert titles name the cluster as the commit subjects do.
        let scope = message::scope(&id, self.settings.cluster.as_deref());
        let records = &batch.records;
        let last = records.last();
        let known = batch.pull_request.clone();
        match &batch.destination {
            Destination::Release { branch, revision } => {
                let mut current = match known.clone().filter(|p| p.branch == *branch) {
                    Some(current) => current,
                    None => {
                        if let Some(old) = known.as_ref().filter(|p| p.state == "open") {
                            self.declare_ending(forge, batch, old, "close").await?;
                            let note = forge::render::superseded_note(&id, revision);
                            let key = format!("superseded:{}", old.revision);
                            note_once(forge, &repo, old.number as u64, &key, &note).await?;
                            close(forge, &repo, old.number as u64).await?;
                        }
                        let authors = authors::authors(forge, &repo, &pushed.revision_commits).await?;
                        let found = forge.find_pull_request(&repo, branch).await?;
                        let pr = match found {
                            Some(pr) => pr,
                            None => {
                                let cluster = self.settings.cluster.as_deref();
                                let (title, body) =
                                    release_text(batch, cluster, revision, &authors, pushed.owners.as_ref());
                                let new = NewPullRequest {
                                    title,
                                    body,
                                    head: branch.clone(),
                                    base: base.clone(),
                                };
                                forge.open_pull_request(&repo, &new).await?
                            }
                        };
                        tracing::info!(canary = %id, number = pr.number, url = %pr.url, "release pull request opened");
                        let mut opened = status_of(&pr, revision, &release_version(records), &authors);
                        opened.owners = pushed.owners.clone();
                        opened
                    }
                };
                // flaggit's own head of the branch: any other is someone else's push.
                if let Some(commit) = &pushed.commit {
                    current.head.clone_from(commit);
                }
                if let Some(foreign) = &pushed.foreign {
                    tracing::info!(canary = %id, head = %foreign, "the release branch holds a push by someone other than flaggit");
                    current.foreign_head.clone_from(foreign);
                }
                if current.state == "open" && records.iter().any(|r| r.kind == "Promoted") {
                    let title = format!("Merge release {scope} ({})", release_version(records));
                    let message =
                        format!("Promoted by flaggit after the analysis of revision {revision} passed.");
                    let method = settings.merge_method.unwrap_or_default();
                    self.declare_ending(forge, batch, &current, "merge").await?;
                    current.ending = Some("merge".into());
                    let merged = forge
                        .merge_pull_request(&repo, current.number as u64, method, &title, &message)
                        .await;
                    // Merged meanwhile (by a person) is just as good; anything else is retried.
                    if let Err(error) = merged {
                        already(forge, &repo, current.number as u64, error, |s| {
                            s == PullRequestState::Merged
                        })
                        .await?;
                    }
                    current.state = "merged".into();
                    tracing::info!(canary = %id, number = current.number, "release pull request merged");
                }
                Ok((Some(&current) != known.as_ref()).then_some(current))
            }
            Destination::Base => {
                let ended = last.filter(|r| r.kind == "RolledBack" || r.kind == "Cancelled");
                let (Some(record), Some(mut pr)) = (ended, known.filter(|p| p.state == "open")) else {
                    return Ok(None);
                };
                let note =
                    forge::render::ended_note(&record.kind, &record.reason, &base, pushed.commit.as_deref());
                self.declare_ending(forge, batch, &pr, "close").await?;
                let key = format!("{}:{}", record.kind, pr.revision);
                note_once(forge, &repo, pr.number as u64, &key, &note).await?;
                close(forge, &repo, pr.number as u64).await?;
                pr.state = "closed".into();
                pr.ending = Some("close".into());
                Ok(Some(pr))
            }
            Destination::Revert { branch, revision } => {
                let found = forge.find_pull_request(&repo, branch).await?;
                let revert = match found {
                    Some(pr) => pr,
                    None => {
                        let reason = last.map(|r| r.reason.as_str()).unwrap_or_default();
                        let new = NewPullRequest {
                            title: format!("Revert {scope} {}", release_version(records)),
                            body: forge::render::revert_body(revision, reason, &base),
                            head: branch.clone(),
                            base: base.clone(),
                        };
                        forge.open_pull_request(&repo, &new).await?
                    }
                };
                let Some(mut pr) = known.filter(|p| p.state == "open" && p.revision == *revision) else {
                    return Ok(None);
                };
                let note = forge::render::reverted_note(&revert.url);
                self.declare_ending(forge, batch, &pr, "close").await?;
                let key = format!("reverted:{}", pr.revision);
                note_once(forge, &repo, pr.number as u64, &key, &note).await?;
                close(forge, &repo, pr.number as u64).await?;
                pr.state = "closed".into();
                pr.ending = Some("close".into());
                Ok(Some(pr))
            }
        }
    }

    /// Records in the canary's status that flaggit itself is about to `merge` or `close` the
    /// pull request, before asking the forge: whoever then reads it ended cannot take
    /// flaggit's doing for a person's decision, even after a restart.
    async fn declare_ending(
        &self,
        forge: &dyn Forge,
        batch: &Batch,
        pr: &PullRequestStatus,
        ending: &str,
    ) -> Result<(), forge::Error> {
        if pr.ending.as_deref() == Some(ending) {
            return Ok(());
        }
        let mut declared = pr.clone();
        declared.ending = Some(ending.to_string());
        let api: Api<Canary> = Api::namespaced(self.client.clone(), &batch.namespace);
        let patch = json!({ "status": { "gitops": { "pullRequest": pull_request_patch(&declared) } } });
        api.patch_status(&batch.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|error| forge::Error::Request {
                forge: forge.kind(),
                action: format!(
                    "record in the canary status that flaggit will {ending} #{}",
                    pr.number
                ),
                message: error.to_string(),
            })
    }

    /// The live outboxes of the canaries (the store may lag behind the status just written).
    /// The outboxes of the canaries: from the copy a job carries (see [`Job::with_snapshot`]),
    /// else live from the API server (the store may lag behind the status just written).
    /// Also returns how many API requests the live reads took.
    async fn read_outboxes(&self, jobs: &[Job]) -> (Vec<Batch>, usize) {
        let pull_requests = self.forges.is_some();
        let base_refused = self.base_refused;
        // A canary in pull-request mode is read live: the writer changes its pull-request
        // status between batches, which an older copy does not show.
        let copy = |job: &Job| {
            job.snapshot()
                .filter(|c| !(pull_requests && release::wants_pull_requests(c)))
                .cloned()
        };
        let jobs: Vec<(Job, Option<Arc<Canary>>)> = jobs.iter().map(|job| (job.clone(), copy(job))).collect();
        let to_read: Vec<&Job> = jobs
            .iter()
            .filter(|(_, copy)| copy.is_none())
            .map(|(job, _)| job)
            .collect();
        let (mut listed, lists) = list_namespaces(&self.client, &to_read).await;
        let gets = std::sync::atomic::AtomicUsize::new(0);
        let gets = &gets;
        let jobs: Vec<(Job, Option<Option<Arc<Canary>>>)> = jobs
            .into_iter()
            .map(|(job, copy)| {
                let found = match copy {
                    Some(copy) => Some(Some(copy)),
                    None => listed
                        .get_mut(&job.namespace)
                        .map(|canaries| canaries.remove(&job.name).map(Arc::new)),
                };
                (job, found)
            })
            .collect();
        let batches = futures::stream::iter(jobs)
            .map(|(job, found)| {
                let client = self.client.clone();
                let cluster = self.settings.cluster.clone();
                async move {
                    let api: Api<Canary> = Api::namespaced(client.clone(), &job.namespace);
                    let (canary, gone) = match found {
                        Some(canary) => {
                            let gone = canary.is_none();
                            (canary, gone)
                        }
                        None => {
                            gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            match api.get_opt(&job.name).await {
                                Ok(canary) => {
                                    let gone = canary.is_none();
                                    (canary.map(Arc::new), gone)
                                }
                                Err(error) => {
                                    tracing::warn!(namespace = %job.namespace, name = %job.name, error = %error, "cannot read the canary's outbox");
                                    (None, false)
                                }
                            }
                        }
                    };
                    let uid = canary.as_ref().and_then(|c| c.uid()).unwrap_or_default();
                    let target = canary
                        .as_ref()
                        .map(|c| (c.spec.target_ref.kind.as_str().to_string(), c.spec.target_ref.name.clone()))
                        .unwrap_or_default();
                    let status = canary.as_ref().and_then(|c| c.status.as_ref());
                    let key = (job.namespace.clone(), job.name.clone());
                    let mut records = unpushed(status, self.pushed.last(&key, &uid));
                    let pull = canary
                        .as_ref()
                        .filter(|c| pull_requests && release::wants_pull_requests(c))
                        .map(|c| release::settings(c));
                    let pull_request = status.and_then(|s| release::pull_request(s.gitops.as_ref()?));
                    let subject = release::Subject {
                        cluster: cluster.as_deref(),
                        namespace: &job.namespace,
                        name: &job.name,
                    };
                    let (destination, run) = release::next_run(
                        subject,
                        &records,
                        pull.as_ref(),
                        pull_request.as_ref(),
                    );
                    let (destination, run) = if base_refused && pull.is_some() {
                        release::around_protection(subject, &records, destination, run)
                    } else {
                        (destination, run)
                    };
                    records.truncate(run);
                    let config_data = primary_config_data(&client, &job.namespace, &records).await;
                    Batch {
                        namespace: job.namespace.clone(),
                        name: job.name.clone(),
                        wanted: job.upto,
                        gone,
                        uid,
                        target,
                        path: job.source.path.clone(),
                        source_namespace: job.source.namespace.clone(),
                        records,
                        destination,
                        pull,
                        pull_request,
                        canary,
                        config_data,
                    }
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        (batches, lists + gets.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Says in each canary's status, and in an event on it, why its records wait.
    async fn report_error(&self, jobs: &[Job], error: &Error) {
        let message = error.to_string();
        for job in jobs {
            let api: Api<Canary> = Api::namespaced(self.client.clone(), &job.namespace);
            let patch = json!({ "status": { "gitops": { "lastError": message } } });
            let patched = api
                .patch_status(&job.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            if let (Ok(canary), Some(notices)) = (patched, &self.notices) {
                notices.warn(&canary, error.category(), &message).await;
            }
        }
    }
}

/// Jobs of one namespace from which its canaries are read with one list instead of one get
/// each: a list costs the API server about as much as a few dozen gets.
const LIST_FROM: usize = 64;

/// The canaries of the namespaces with at least [`LIST_FROM`] jobs, by namespace and name,
/// read with one consistent list each (from etcd, not a cache: the outboxes were just
/// written), and the number of lists. A namespace whose list fails is left out: its canaries
/// are read one by one.
async fn list_namespaces(
    client: &Client,
    jobs: &[&Job],
) -> (HashMap<String, HashMap<String, Canary>>, usize) {
    let mut per_namespace: HashMap<&str, usize> = HashMap::new();
    for job in jobs {
        *per_namespace.entry(job.namespace.as_str()).or_default() += 1;
    }
    let mut out = HashMap::new();
    let mut lists = 0;
    for (namespace, count) in per_namespace {
        if count < LIST_FROM {
            continue;
        }
        lists += 1;
        let api: Api<Canary> = Api::namespaced(client.clone(), namespace);
        match api.list(&kube::api::ListParams::default()).await {
            Ok(list) => {
                let by_name = list.items.into_iter().map(|c| (c.name_any(), c)).collect();
                out.insert(namespace.to_string(), by_name);
            }
            Err(error) => {
                tracing::warn!(namespace = %namespace, error = %error, "cannot list the canaries; reading their outboxes one by one");
            }
        }
    }
    (out, lists)
}

/// Records the push in the canary's status: the fields only the writer owns (the records
/// stay in `pending`, the reconciler's, which drops those at or below `pushedRecord` at its
/// next write). One patch, with no precondition: nobody else writes these fields.
async fn acknowledge(client: &Client, notices: Option<&dyn Notices>, written: &Written, at: &str) {
    let api: Api<Canary> = Api::namespaced(client.clone(), &written.namespace);
    let reason = if written.refused {
        "PushRefused"
    } else {
        "GitWriteBack"
    };
    if written.upto == 0 {
        // Nothing was written (its ledger does not parse, the push was refused): say why.
        let message = written.warnings.join("; ");
        let patch = json!({ "status": { "gitops": { "lastError": message } } });
        let patched = api
            .patch_status(&written.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let (Ok(canary), Some(notices)) = (patched, notices) {
            notices.warn(&canary, reason, &message).await;
        }
        return;
    }
    let mut gitops = json!({
        "pushedRecord": written.upto,
        "lastPushTime": at,
        "lastError": if written.warnings.is_empty() { serde_json::Value::Null } else { json!(written.warnings.join("; ")) },
    });
    if let Some(commit) = &written.commit {
        gitops["lastCommit"] = json!(commit);
    }
    if let Some(pull_request) = &written.pull_request {
        gitops["pullRequest"] = pull_request_patch(pull_request);
    }
    let patch = json!({ "status": { "gitops": gitops } });
    if let Err(error) = api
        .patch_status(&written.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        && !matches!(&error, kube::Error::Api(s) if s.code == 404)
    {
        tracing::warn!(namespace = %written.namespace, name = %written.name, error = %error, "cannot record the push in the canary status");
    }
    for warning in &written.warnings {
        tracing::warn!(namespace = %written.namespace, name = %written.name, warning = %warning, "rollback not written back to Git");
    }
    if let (Some(canary), Some(notices)) = (&written.canary, notices)
        && !written.warnings.is_empty()
    {
        notices.warn(canary, reason, &written.warnings.join("; ")).await;
    }
}

/// How long a batch gathers records (group commit). A batch is written once no record arrived
/// for [`SETTLE`] (the records of one moment go together), or once its oldest record waited
/// the whole batch window (a steady stream of records is cut into batches no longer than
/// the window), whichever comes first. Records that arrive while a batch is being written
/// count from its start, so they go out as soon as it is done instead of waiting a whole
/// window after it. A record thus reaches the remote within one window plus one write,
/// and a lone record at once.
#[derive(Clone, Copy, Debug)]
struct Gathering {
    oldest: tokio::time::Instant,
    latest: tokio::time::Instant,
}

/// How long a batch waits after its latest record for more of the same moment.
const SETTLE: Duration = Duration::from_millis(10);

impl Gathering {
    fn new(at: tokio::time::Instant) -> Self {
        Self {
            oldest: at,
            latest: at,
        }
    }

    fn arrived(&mut self, at: tokio::time::Instant) {
        self.latest = self.latest.max(at);
    }

    /// When gathering ends for a batch window of `window`.
    fn ends(&self, window: Duration) -> tokio::time::Instant {
        (self.oldest + window).min(self.latest + SETTLE.min(window))
    }
}

/// Adds `job` to the waiting ones: a canary's jobs become one, for its last record and with
/// the newest copy of the canary.
fn add(dirty: &mut BTreeMap<(String, String), Job>, job: Job) {
    let key = (job.namespace.clone(), job.name.clone());
    match dirty.get_mut(&key) {
        Some(old) => {
            old.upto = old.upto.max(job.upto);
            old.source = job.source;
            match (&old.canary, job.canary) {
                (Some(kept), Some(new)) if !newer_or_same(&new, kept) => {}
                (_, Some(new)) => old.canary = Some(new),
                (_, None) => {}
            }
        }
        None => {
            dirty.insert(key, job);
        }
    }
}

/// Builds the commits of `batches` and pushes them, one push per branch (the base branch,
/// release branches); on a rejected push, fetches and builds them again on the new head.
/// Returns what each batch got, in the order of `batches`. Blocking.
/// The writing controller, as the blocking part of a push needs it.
struct Us<'a> {
    settings: &'a Settings,
    /// The cluster's `kube-system` uid; empty when unknown.
    uid: &'a str,
    identity: &'a Identity,
    /// Signs every commit, when a signing key is configured.
    signer: Option<&'a Signer>,
    metrics: &'a GitMetrics,
    cost: &'a Meter,
    dora: &'a Mutex<DoraHistory>,
}

/// Time (and CPU time) spent building commits and pushing them in one flush (for
/// [`BatchCost`]).
#[derive(Debug, Default)]
struct Meter {
    commits: std::cell::Cell<u64>,
    building: std::cell::Cell<Duration>,
    pushing: std::cell::Cell<Duration>,
    building_cpu: std::cell::Cell<Duration>,
    pushing_cpu: std::cell::Cell<Duration>,
}

impl Meter {
    fn add_commits(&self, commits: u64, took: Duration, cpu: Duration) {
        self.commits.set(self.commits.get() + commits);
        self.building.set(self.building.get() + took);
        self.building_cpu.set(self.building_cpu.get() + cpu);
    }

    fn add_push(&self, took: Duration, cpu: Duration) {
        self.pushing.set(self.pushing.get() + took);
        self.pushing_cpu.set(self.pushing_cpu.get() + cpu);
    }

    fn taken(&self) -> (u64, Duration, Duration) {
        (self.commits.get(), self.building.get(), self.pushing.get())
    }
}

/// Reads the signing key from `secret`.
async fn signer_of(client: &Client, secret: &source::SecretRef) -> Result<Signer, Error> {
    let name = format!("{}/{}", secret.namespace, secret.name);
    let failed = |message: String| Error::SigningSecret {
        secret: name.clone(),
        message,
    };
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &secret.namespace);
    let found = api
        .get_opt(&secret.name)
        .await
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed("it does not exist".to_string()))?;
    let data = crate::analysis::provider::secret_data(&found);
    let key = [SIGNING_KEY, "ssh-privatekey"]
        .iter()
        .find_map(|k| data.get(*k).filter(|v| !v.is_empty()))
        .ok_or_else(|| failed(format!("it has no {SIGNING_KEY} key")))?;
    let text = String::from_utf8(key.clone()).map_err(|_| failed(format!("{SIGNING_KEY} is not text")))?;
    Ok(Signer::from_openssh(&text)?)
}

/// Whether a refused push says the branch wants signed commits (a pre-receive hook, GitHub's
/// "Commits must have verified signatures", GitLab's push rules).
pub fn refused_for_signatures(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    ["signature", "not signed", "unsigned", "signed commits"]
        .iter()
        .any(|needle| reason.contains(needle))
}

fn write(
    repo: &mut Repo,
    remote: &Remote,
    us: &Us<'_>,
    batches: &[Batch],
    stats: &Stats,
) -> Result<Vec<Written>, Error> {
    let base = remote.branch.as_str();
    let mut branches: Vec<&str> = Vec::new();
    for batch in batches {
        let branch = batch.destination.branch(base);
        if !branches.contains(&branch) {
            branches.push(branch);
        }
    }
    let mut out: Vec<Option<Written>> = batches.iter().map(|_| None).collect();
    for branch in branches {
        let group: Vec<usize> = (0..batches.len())
            .filter(|&i| batches[i].destination.branch(base) == branch)
            .collect();
        let result = write_branch(repo, remote, us, batches, &group, branch, stats);
        repo.switch_branch(base)?;
        let written = match result {
            Ok(written) => written,
            // A rule refuses this branch: its records wait (and say why); other branches go on.
            Err(refused @ Error::Refused { .. }) => {
                tracing::warn!(remote = %safe_url(&remote.url), branch = %branch, error = %refused, "push refused by a rule of the server");
                group
                    .iter()
                    .map(|&i| Written {
                        namespace: batches[i].namespace.clone(),
                        name: batches[i].name.clone(),
                        upto: 0,
                        warnings: vec![refused.to_string()],
                        commit: None,
                        pull_request: None,
                        revision_commits: Vec::new(),
                        owners: None,
                        foreign: None,
                        refused: true,
                        canary: batches[i].canary.clone(),
                        ledger: None,
                    })
                    .collect()
            }
            Err(error) => return Err(error),
        };
        for (i, one) in group.into_iter().zip(written) {
            out[i] = Some(one);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Commits and pushes the batches `group` of `batches` to `branch`. A release branch that
/// does not exist yet starts at the head of the base branch.
fn write_branch(
    repo: &mut Repo,
    remote: &Remote,
    us: &Us<'_>,
    batches: &[Batch],
    group: &[usize],
    branch: &str,
    stats: &Stats,
) -> Result<Vec<Written>, Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let settings = us.settings;
    let base = remote.branch.as_str();
    repo.switch_branch(branch)?;
    // The base branch is not fetched first when its known head is this clone's own last push
    // (one controller writing: the usual case), saving a round trip per batch. Had someone
    // pushed meanwhile, the push is rejected and the records are built again on a fetched
    // head, which does not use up an attempt.
    let mut trust_own_push = branch == base && repo.head_is_own_push();
    let mut attempts = 0;
    while attempts < settings.push_attempts.max(1) {
        repo.switch_branch(branch)?;
        let head = if std::mem::take(&mut trust_own_push) {
            repo.head()
        } else {
            attempts += 1;
            repo.fetch()?
        };
        let start = match head {
            None if branch != base => {
                repo.switch_branch(base)?;
                let fork = repo.fetch()?;
                repo.switch_branch(branch)?;
                fork
            }
            _ => head,
        };
        // One tree in memory for the whole batch: each commit writes its files and the trees
        // on their paths, instead of reading and rewriting the ledger directory from the
        // object database.
        let building = Instant::now();
        let building_cpu = cpu::Stopwatch::start();
        let mut draft = repo.draft(start)?;
        let mut written = Vec::new();
        let mut commits = 0;
        for &i in group {
            let (mut one, made) = write_canary(repo, us, &batches[i], &mut draft)?;
            one.foreign = foreign_push(repo, &batches[i], branch, head, &settings.author);
            commits += made;
            written.push(one);
            // A batch of thousands of commits of big trees: what is made so far goes to disk.
            if repo.unstored_bytes() > super::repo::MEMORY_LIMIT {
                repo.store()?;
            }
        }
        let tip = draft.head();
        drop(draft);
        us.cost
            .add_commits(commits, building.elapsed(), building_cpu.elapsed());
        let pushed = |mut written: Vec<Written>, commit: Option<String>| {
            for one in &mut written {
                one.commit = commit.clone();
            }
            written
        };
        if tip == head || (head.is_none() && tip == start && commits == 0) {
            // Everything was on the remote already (pushed before a restart).
            return Ok(pushed(written, head.map(|h| h.to_string())));
        }
        let Some(tip_commit) = tip else {
            return Ok(written);
        };
        let pushing = Instant::now();
        let pushing_cpu = (cpu::Stopwatch::start(), repo.network_cpu());
        let push = repo.push(tip_commit);
        us.metrics.push_duration.observe(pushing.elapsed().as_secs_f64());
        let network_cpu = repo.network_cpu().saturating_sub(pushing_cpu.1);
        us.cost
            .add_push(pushing.elapsed(), pushing_cpu.0.elapsed() + network_cpu);
        if matches!(push, Ok(Push::Rejected { .. } | Push::Refused { .. })) {
            us.metrics.rejected.inc();
        }
        match push? {
            Push::Pushed => {
                us.metrics.pushes.inc();
                stats.pushes.fetch_add(1, Relaxed);
                stats.commits.fetch_add(commits, Relaxed);
                us.identity
                    .mark_pushed(written.iter().filter_map(|one| one.ledger.clone()));
                if branch == base {
                    refresh_dora(repo, remote, us, tip_commit);
                }
                return Ok(pushed(written, Some(tip_commit.to_string())));
            }
            Push::Rejected { reason } | Push::Refused { reason } if refused_for_signatures(&reason) => {
                stats.rejected.fetch_add(1, Relaxed);
                // Pushing again cannot help: say what the branch wants.
                let (remote, branch) = (safe_url(&remote.url), branch.to_string());
                return Err(match us.signer {
                    None => Error::Unsigned {
                        remote,
                        branch,
                        reason,
                    },
                    Some(signer) => Error::SignatureRefused {
                        remote,
                        branch,
                        reason,
                        public_key: signer.public_key(),
                        email: settings.author.email.clone(),
                    },
                });
            }
            Push::Refused { reason } => {
                stats.rejected.fetch_add(1, Relaxed);
                return Err(Error::Refused {
                    remote: safe_url(&remote.url),
                    branch: branch.to_string(),
                    reason,
                });
            }
            Push::Rejected { reason } => {
                stats.rejected.fetch_add(1, Relaxed);
                tracing::info!(remote = %safe_url(&remote.url), branch = %branch, reason = %reason, "push rejected; fetching and rebuilding the records on the new head");
            }
        }
    }
    Err(Error::Contended {
        remote: safe_url(&remote.url),
        attempts: settings.push_attempts,
    })
}

/// Commits of a branch the exported DORA figures read after a push, newest first.
const DORA_COMMITS: usize = 20_000;

/// Recomputes the exported DORA figures from the branch just pushed. A history that cannot be
/// read leaves the figures as they were: the records are on the remote either way.
fn refresh_dora(repo: &Repo, remote: &Remote, us: &Us<'_>, tip: git2::Oid) {
    let mut history = us.dora.lock().expect("the DORA history lock is never poisoned");
    match history.advance(repo, tip) {
        Ok(log) => us.metrics.dora.update(
            &remote.to_string(),
            super::dora::releases(log),
            us.settings.cluster.as_deref().unwrap_or_default(),
            jiff::Timestamp::now().as_second(),
        ),
        Err(error) => {
            tracing::warn!(remote = %remote, error = %error, "cannot read the history for the DORA figures")
        }
    }
}

/// The base branch's history the DORA figures are made of, kept between pushes: a push reads
/// only the commits it added, not the whole history again (up to [`DORA_COMMITS`] commits
/// per push before).
#[derive(Debug, Default)]
pub(crate) struct DoraHistory {
    tip: Option<git2::Oid>,
    /// Newest first, at most [`DORA_COMMITS`].
    log: Vec<super::dora::LogCommit>,
}

impl DoraHistory {
    /// The history up to `tip`: the commits after the last tip read and prepended, or all
    /// of it read again when `tip` does not descend from it (the branch was rewritten).
    fn advance(
        &mut self,
        repo: &Repo,
        tip: git2::Oid,
    ) -> Result<&[super::dora::LogCommit], super::repo::Error> {
        let since = self.tip.filter(|old| repo.descends_from(tip, *old));
        let mut log = super::inspect::dora_log_since(repo, tip, since, DORA_COMMITS)?;
        if since.is_some() {
            log.append(&mut self.log);
            log.truncate(DORA_COMMITS);
        }
        self.log = log;
        self.tip = Some(tip);
        Ok(&self.log)
    }
}

/// Commits the records of one canary on the draft's head: the ledger file, and for a rollback the
/// manifests written back to the serving version.
fn write_canary(repo: &Repo, us: &Us<'_>, batch: &Batch, draft: &mut Draft) -> Result<(Written, u64), Error> {
    let settings = us.settings;
    let cluster = settings.cluster.as_deref();
    let id = format!("{}/{}", batch.namespace, batch.name);
    let layout = settings.layout();
    let path = layout.path(&batch.namespace, &batch.name);
    let target = format!("{}/{}", batch.target.0, batch.target.1);
    let mut warnings = Vec::new();
    let mut made = 0;
    let upto = batch.records.last().map_or(0, |r| r.seq);
    let read = |draft: &mut Draft, path: &str| -> Result<Option<Result<Ledger, ledger::Error>>, Error> {
        let bytes = repo.read_draft(draft, path)?;
        Ok(bytes.map(|b| Ledger::parse(path, &String::from_utf8_lossy(&b))))
    };
    let mut found = read(draft, &path)?;
    if found.is_none()
        && let Some(legacy) = layout.legacy_path(&batch.namespace, &batch.name)
        && let Some(Ok(old)) = read(draft, &legacy)?
        && old.seeds(us.uid)
    {
        // Migration: a named cluster starts from the single-cluster ledger (which stays).
        tracing::info!(canary = %id, from = %legacy, to = %path, "the cluster's ledger starts from the single-cluster ledger");
        found = Some(Ok(old));
    }
    let mut ledger = match found {
        None => Ledger::new(&id, &batch.uid, &target),
        Some(parsed) => match parsed {
            Ok(ledger) => ledger,
            Err(error) => {
                // Never commit over a file we cannot read: the records wait until it is fixed.
                warnings.push(error.to_string());
                return Ok((
                    Written {
                        namespace: batch.namespace.clone(),
                        name: batch.name.clone(),
                        upto: 0,
                        warnings,
                        commit: None,
                        pull_request: None,
                        revision_commits: Vec::new(),
                        owners: None,
                        foreign: None,
                        refused: false,
                        canary: batch.canary.clone(),
                        ledger: None,
                    },
                    0,
                ));
            }
        },
    };
    if let Some(warning) = ledger.claim(&path, cluster, us.uid, us.identity.pushed_before(&path)) {
        tracing::warn!(canary = %id, ledger = %path, "{warning}");
        warnings.push(warning);
    }
    ledger.adopt(&batch.uid, &target);
    // Before our own commits: who brought the revision a new release pull request is for.
    let revision_commits = match (&batch.destination, draft.head()) {
        (Destination::Release { branch, .. }, Some(head))
            if batch.pull_request.as_ref().is_none_or(|p| p.branch != *branch) =>
        {
            authors::commits_of_revision(repo, head, &ledger, batch.path.as_deref())?
        }
        _ => Vec::new(),
    };
    // Read at the base commit, not the release: a release cannot choose its own approvers.
    let owners_source = batch
        .canary
        .as_ref()
        .and_then(|c| c.spec.gitops.as_ref()?.approvals.as_ref()?.owners.clone());
    let owners = match (&batch.destination, draft.head(), owners_source) {
        (Destination::Release { branch, .. }, Some(head), Some(source))
            if batch.pull_request.as_ref().is_none_or(|p| p.branch != *branch) =>
        {
            let base = owners::base_of(repo, &ledger, &revision_commits, head);
            Some(owners::of_release(
                repo,
                &source,
                base,
                head,
                batch.path.as_deref(),
            ))
        }
        _ => None,
    };
    for record in &batch.records {
        if ledger.has(record) {
            continue;
        }
        let mut changes = Vec::new();
        let mut edited = Vec::new();
        if record.kind == "RolledBack"
            && let (Some(base), Some(dir)) = (draft.head(), batch.path.as_deref())
        {
            let target_ref = TargetRef {
                kind: &batch.target.0,
                name: &batch.target.1,
                namespace: Some(&batch.namespace),
            };
            let rollback = write_back(repo, base, dir, record, &target_ref, batch)?;
            changes = rollback.changes;
            edited = rollback.edited;
            warnings.extend(rollback.warnings);
        }
        let head = draft.head().map(|t| t.to_string()).unwrap_or_default();
        ledger.apply(record, &head);
        if promotes(&record.kind)
            && let Some(promoted) = ledger.promoted.as_mut().filter(|p| p.revision == record.revision)
        {
            // What rebuild recovery puts back besides the images.
            promoted.config_maps = record
                .configs
                .keys()
                .filter_map(|k| k.strip_prefix("configmap/"))
                .filter_map(|name| Some((name.to_string(), batch.config_data.get(name)?.clone())))
                .collect();
        }
        let text = ledger.to_yaml()?;
        changes.push((path.clone(), Some(text.into_bytes())));
        let message = message::commit_message(&id, cluster, record, &edited);
        repo.commit_on(draft, &changes, &message, &settings.author, us.signer)?;
        made += 1;
    }
    Ok((
        Written {
            namespace: batch.namespace.clone(),
            name: batch.name.clone(),
            upto,
            warnings,
            commit: None,
            pull_request: None,
            revision_commits,
            owners,
            foreign: None,
            refused: false,
            canary: batch.canary.clone(),
            ledger: Some(path),
        },
        made,
    ))
}

/// Commits looked at between flaggit's last head of a release branch and the one fetched.
const MAX_FOREIGN_WALK: usize = 50;

/// The head `fetched` of release branch `branch` when someone other than flaggit pushed it:
/// it is not the head flaggit recorded last, and the commits since that head are not all
/// flaggit's own records (its author and a `Flaggit-Canary` trailer). A push whose
/// acknowledgement was lost is flaggit's own; a history that cannot be read is foreign.
fn foreign_push(
    repo: &Repo,
    batch: &Batch,
    branch: &str,
    fetched: Option<git2::Oid>,
    author: &super::Author,
) -> Option<String> {
    let fetched = fetched?;
    let own = batch
        .pull_request
        .as_ref()
        .filter(|p| p.branch == branch && !p.head.is_empty())
        .map(|p| p.head.as_str())?;
    if fetched.to_string() == own {
        return None;
    }
    let trailer = format!("\n{}: ", super::message::CANARY);
    let foreign = Some(fetched.to_string());
    let Ok(log) = repo.log(fetched, MAX_FOREIGN_WALK) else {
        return foreign;
    };
    for commit in log {
        if commit.id.to_string() == own {
            return None;
        }
        let ours = commit.message.contains(&trailer) && commit.email.eq_ignore_ascii_case(&author.email);
        if !ours {
            return foreign;
        }
    }
    foreign
}

/// Record kinds after which the primary runs the record's configs.
fn promotes(kind: &str) -> bool {
    matches!(kind, "Initialized" | "Promoted" | "Recovered")
}

/// The data of the `-primary` ConfigMap copies the records need: the tracked ConfigMaps of
/// records that promote, and those a rollback changed back. Copies that cannot be read are
/// left out (the rollback then says the ConfigMap was not written back).
async fn primary_config_data(
    client: &Client,
    namespace: &str,
    records: &[PendingRecord],
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut names = std::collections::BTreeSet::new();
    for record in records {
        if promotes(&record.kind) {
            names.extend(
                record
                    .configs
                    .keys()
                    .filter_map(|k| k.strip_prefix("configmap/"))
                    .map(str::to_string),
            );
        } else if record.kind == "RolledBack" {
            names.extend(message::changed_configs(
                "configmap",
                &record.configs,
                &record.primary_configs,
            ));
        }
    }
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for name in names {
        match api.get_opt(&crate::workload::primary_name(&name)).await {
            Ok(Some(copy)) => {
                out.insert(name, copy.data.unwrap_or_default());
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(namespace = %namespace, config_map = %name, error = %error, "cannot read the primary's copy of a ConfigMap")
            }
        }
    }
    out
}

/// The ConfigMaps a rollback writes back: those the release changed, with the data the
/// primary runs.
fn config_reverts(
    record: &PendingRecord,
    namespace: &str,
    data: &BTreeMap<String, BTreeMap<String, String>>,
) -> (Vec<edit::ConfigRevert>, Vec<String>) {
    let mut reverts = Vec::new();
    let mut unreadable = Vec::new();
    for name in message::changed_configs("configmap", &record.configs, &record.primary_configs) {
        match data.get(&name) {
            Some(data) => reverts.push(edit::ConfigRevert {
                name,
                namespace: Some(namespace.to_string()),
                data: data.clone(),
            }),
            None => unreadable.push(name),
        }
    }
    (reverts, unreadable)
}

/// The files a rollback rewrites and why some could not be.
struct WriteBack {
    changes: Vec<(String, Option<Vec<u8>>)>,
    edited: Vec<String>,
    warnings: Vec<String>,
}

/// Writes the serving version back under `dir` at `base`: the images the primary runs, and
/// the data of the ConfigMaps the failed release changed. Files a generator reads are written
/// only inside `dir`, so one cluster's rollback never edits another's overlay.
fn write_back(
    repo: &Repo,
    base: git2::Oid,
    dir: &str,
    record: &PendingRecord,
    target: &TargetRef<'_>,
    batch: &Batch,
) -> Result<WriteBack, Error> {
    let reverts = image_reverts(record);
    let (configs, unreadable) = config_reverts(record, &batch.namespace, &batch.config_data);
    let mut out = WriteBack {
        changes: Vec::new(),
        edited: Vec::new(),
        warnings: unreadable
            .iter()
            .map(|name| {
                format!("cannot read ConfigMap {name}-primary: ConfigMap {name} is not written back to Git")
            })
            .collect(),
    };
    if reverts.is_empty() && configs.is_empty() {
        return Ok(out);
    }
    let mut texts = BTreeMap::new();
    for file in manifest_files(repo, base, dir)? {
        let Some(bytes) = repo.read_file(base, &file)? else {
            continue;
        };
        if let Ok(text) = String::from_utf8(bytes) {
            texts.insert(file, text);
        }
    }
    let inside = path_dir(dir);
    // Bases outside the path (a cluster overlay's `../../apps/podinfo`) are read, so select
    // can tell that the overlay renders the target; only files inside the path are written.
    let bases = outside_bases(repo, base, &texts, target, &inside)?;
    let mut readable = texts.clone();
    readable.extend(bases);
    // Images first, in the one file that is the target's (select), then the ConfigMaps.
    let mut updated = texts.clone();
    let mut images_written = false;
    if !reverts.is_empty() {
        let reverted = select::revert(&readable, target, batch.source_namespace.as_deref(), &reverts);
        out.warnings.extend(reverted.warnings);
        for (file, text) in reverted.files {
            if !texts.contains_key(&file) {
                out.warnings.push(format!(
                    "{file} is outside {dir}, the canary's path: it may be another cluster's or team's, so it is not written back; revert it by hand"
                ));
                continue;
            }
            updated.insert(file, text);
            images_written = true;
        }
    }
    let mut configs_found: Vec<&str> = Vec::new();
    let mut files: Vec<(String, String)> = Vec::new();
    for (file, text) in &texts {
        let mut current = updated.get(file).cloned().unwrap_or_else(|| text.clone());
        for config in &configs {
            match edit::revert_config_map(file, &current, config) {
                Ok(Some(change)) => {
                    configs_found.push(&config.name);
                    if let Some(new) = change.text {
                        current = new;
                    }
                    files.extend(change.files);
                }
                Ok(None) => {}
                Err(error) => {
                    configs_found.push(&config.name);
                    out.warnings.push(error.to_string());
                }
            }
        }
        if current != *text {
            out.changes.push((file.clone(), Some(current.into_bytes())));
            out.edited.push(file.clone());
        }
    }
    let inside = inside.as_str();
    for (file, content) in files {
        if !inside.is_empty() && !file.starts_with(&format!("{inside}/")) {
            out.warnings.push(format!(
                "{file} is outside {inside}: it may be another cluster's, so it is not written back; revert it by hand"
            ));
            continue;
        }
        let now = repo.read_file(base, &file)?;
        if now.as_deref() != Some(content.as_bytes()) && !out.edited.contains(&file) {
            out.changes.push((file.clone(), Some(content.into_bytes())));
            out.edited.push(file);
        }
    }
    if !reverts.is_empty() && !images_written && out.warnings.is_empty() {
        out.warnings.push(format!(
            "no manifest under {dir} declares {} for {} {}/{}: Git still names the failed version; set spec.gitops.path to the file that declares the target (a manifest without metadata.namespace counts only where a kustomization's namespace: or the source's target namespace puts it in {})",
            reverts.iter().map(|r| r.from.as_str()).collect::<Vec<_>>().join(", "),
            target.kind,
            batch.namespace,
            target.name,
            batch.namespace
        ));
    }
    for config in configs
        .iter()
        .filter(|c| !configs_found.contains(&c.name.as_str()))
    {
        out.warnings.push(format!(
            "no manifest under {dir} declares ConfigMap {}: Git still holds the failed config; set spec.gitops.path to the directory that declares it",
            config.name
        ));
    }
    Ok(out)
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
/// The directory of the canary's path (the path itself, or the folder of a single file).
fn path_dir(dir: &str) -> String {
    let inside = dir.trim_matches('/');
    if inside.ends_with(".yaml") || inside.ends_with(".yml") {
        inside.rsplit_once('/').map_or("", |(d, _)| d).to_string()
    } else {
        inside.to_string()
    }
}

/// Files of the repository that the kustomizations in `texts` render from outside `inside`
/// (bases and components of an overlay), followed a few levels deep and bounded in count.
fn outside_bases(
    repo: &Repo,
    commit: git2::Oid,
    texts: &BTreeMap<String, String>,
    target: &TargetRef<'_>,
    inside: &str,
) -> Result<BTreeMap<String, String>, Error> {
    const MAX_FILES: usize = 500;
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: Vec<(String, String)> = texts.iter().map(|(f, t)| (f.clone(), t.clone())).collect();
    for _ in 0..4 {
        let mut next = Vec::new();
        for (file, text) in &pending {
            let Ok(layout) = edit::layout(file, text, target) else {
                continue;
            };
            let Some(kustomization) = layout.kustomization else {
                continue;
            };
            for entry in kustomization.resources {
                let within = inside.is_empty() || entry == inside || entry.starts_with(&format!("{inside}/"));
                let known = |f: &String| f == &entry || f.starts_with(&format!("{entry}/"));
                if within || texts.keys().any(known) || found.keys().any(known) {
                    continue;
                }
                for base_file in manifest_files(repo, commit, &entry).unwrap_or_default() {
                    if found.len() >= MAX_FILES || found.contains_key(&base_file) {
                        continue;
                    }
                    if let Some(text) = repo
                        .read_file(commit, &base_file)?
                        .and_then(|bytes| String::from_utf8(bytes).ok())
                    {
                        found.insert(base_file.clone(), text.clone());
                        next.push((base_file, text));
                    }
                }
            }
        }
        if next.is_empty() {
            break;
        }
        pending = next;
    }
    Ok(found)
}

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

/// `pr` as a merge patch that replaces the stored pull request whole: a field it lacks is
/// cleared, so nothing of the previous revision's pull request (what flaggit was ending) is
/// left on the next one.
fn pull_request_patch(pr: &PullRequestStatus) -> serde_json::Value {
    let mut patch = json!(pr);
    if let serde_json::Value::Object(fields) = &mut patch {
        for key in [
            "version",
            "author",
            "openedAt",
            "ending",
            "authors",
            "unknownAuthors",
            "bots",
            "commits",
            "owners",
            "head",
            "foreignHead",
        ] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    patch
}

/// Leaves `text` on the pull request once: a note found under its marker (left by an
/// attempt whose outcome was lost, or before a restart) is not left again.
async fn note_once(
    forge: &dyn Forge,
    repo: &RepoId,
    number: u64,
    key: &str,
    text: &str,
) -> Result<(), forge::Error> {
    let marker = forge::render::note_marker(key);
    if let Polled::Changed { value, .. } = forge.comments(repo, number, None, None).await?
        && value.iter().any(|c| forge::render::has_marker(&c.body, &marker))
    {
        return Ok(());
    }
    forge
        .create_comment(repo, number, &forge::render::marked(&marker, text))
        .await?;
    Ok(())
}

/// Closes a pull request; one already closed (by a person) is just as good.
async fn close(forge: &dyn Forge, repo: &RepoId, number: u64) -> Result<(), forge::Error> {
    match forge.close_pull_request(repo, number).await {
        Ok(()) => Ok(()),
        Err(error) => already(forge, repo, number, error, |s| s != PullRequestState::Open).await,
    }
}

/// After a refused merge or close: Ok if the pull request already ended as `wanted` says (a
/// person was first), else the refusal stands.
async fn already(
    forge: &dyn Forge,
    repo: &RepoId,
    number: u64,
    error: forge::Error,
    wanted: impl Fn(PullRequestState) -> bool,
) -> Result<(), forge::Error> {
    match forge.pull_request(repo, number).await {
        Ok(pr) if wanted(pr.state) => Ok(()),
        _ => Err(error),
    }
}

/// The status of a release pull request just opened (or found again).
fn status_of(pr: &forge::PullRequest, revision: &str, version: &str, authors: &Authors) -> PullRequestStatus {
    PullRequestStatus {
        number: pr.number as i64,
        url: pr.url.clone(),
        branch: pr.head.clone(),
        revision: revision.to_string(),
        version: version.to_string(),
        state: match pr.state {
            PullRequestState::Open => "open",
            PullRequestState::Merged => "merged",
            PullRequestState::Closed => "closed",
        }
        .to_string(),
        author: pr.author.clone(),
        authors: authors.logins.clone(),
        unknown_authors: authors.unknown.clone(),
        bots: authors.bots.clone(),
        commits: authors.commits.clone(),
        // The forge's stamp: the controller's clock and GitHub's differ.
        opened_at: pr.created_at.unwrap_or_else(jiff::Timestamp::now).to_string(),
        ending: None,
        head: pr.head_sha.clone().unwrap_or_default(),
        foreign_head: String::new(),
        owners: None,
    }
}

/// The version people know a release by (`render::version`: the first image's tag, else the
/// short revision).
fn release_version(records: &[PendingRecord]) -> String {
    let image = records.iter().find_map(|r| r.images.values().next());
    let revision = records.first().map_or("", |r| r.revision.as_str());
    forge::render::version(image.map(String::as_str), revision)
}

/// Title and description of a release pull request: the plan, from the Canary spec.
fn release_text(
    batch: &Batch,
    cluster: Option<&str>,
    revision: &str,
    authors: &Authors,
    owners: Option<&ReleaseOwners>,
) -> (String, String) {
    let version = release_version(&batch.records);
    let title = forge::render::title(&batch.namespace, &batch.name, cluster, &version);
    let body = match &batch.canary {
        Some(canary) => {
            let mut release = forge::plan::release(canary, revision, &version);
            release.authors = authors.clone();
            release.approvals = release.approvals.with_owners(owners.cloned());
            forge::render::body(&release)
        }
        None => String::new(),
    };
    (title, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanarySpec, CanaryStatus, GitOpsStatus};

    /// Canary `name` (uid `uid`, resourceVersion `version`) whose outbox holds records
    /// `pending`, the remote having those up to `pushed` by its status.
    fn copy(name: &str, uid: &str, version: &str, pending: &[i64], pushed: i64) -> Canary {
        let mut canary = Canary::new(name, CanarySpec::default());
        canary.metadata.namespace = Some("test".into());
        canary.metadata.uid = Some(uid.into());
        canary.metadata.resource_version = Some(version.into());
        canary.status = Some(CanaryStatus {
            gitops: Some(Box::new(GitOpsStatus {
                pending: Some(
                    pending
                        .iter()
                        .map(|&seq| PendingRecord {
                            seq,
                            kind: "Step".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                last_record: pending.iter().copied().max(),
                pushed_record: (pushed > 0).then_some(pushed),
                ..Default::default()
            })),
            ..Default::default()
        });
        canary
    }

    fn source() -> Source {
        Source {
            remote: Remote {
                url: "git://example.com/config.git".into(),
                branch: "main".into(),
            },
            secret: None,
            path: None,
            namespace: None,
            origin: source::Origin::Default,
        }
    }

    fn seqs(records: &[PendingRecord]) -> Vec<i64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn a_copy_older_than_a_push_does_not_write_its_records_again() {
        // The copy was taken before the writer pushed 4 and 5: its status says 3.
        let old = copy("podinfo", "u1", "20", &[4, 5, 6], 3);
        let key = ("test".to_string(), "podinfo".to_string());
        let mut pushed = Pushed::default();
        pushed.remember(key.clone(), "u1", 5);
        let status = old.status.as_ref();
        assert_eq!(seqs(&unpushed(status, pushed.last(&key, "u1"))), [6]);
        // A push remembered never goes back.
        pushed.remember(key.clone(), "u1", 4);
        assert_eq!(pushed.last(&key, "u1"), 5);
        // Everything in the copy pushed already: nothing to write.
        pushed.remember(key.clone(), "u1", 6);
        assert!(unpushed(status, pushed.last(&key, "u1")).is_empty());
        // The same name created again numbers from 1: what the old canary pushed says nothing.
        assert_eq!(pushed.last(&key, "u2"), 0);
        assert_eq!(seqs(&unpushed(status, pushed.last(&key, "u2"))), [4, 5, 6]);
        pushed.remember(key.clone(), "u2", 1);
        assert_eq!(
            pushed.last(&key, "u1"),
            0,
            "the new canary's pushes replace the old one's"
        );
        pushed.forget(&key);
        assert_eq!(pushed.last(&key, "u2"), 0);
        // The status says more than the writer remembers (a push before a restart).
        assert_eq!(
            seqs(&unpushed(
                copy("podinfo", "u1", "30", &[4, 5, 6], 5).status.as_ref(),
                0
            )),
            [6]
        );
    }

    #[test]
    fn jobs_of_one_canary_keep_the_newest_copy() {
        let mut dirty = BTreeMap::new();
        add(
            &mut dirty,
            Job::with_snapshot(source(), 2, copy("podinfo", "u1", "20", &[1, 2], 0)),
        );
        // An older copy arriving later (read from a lagging cache) does not replace it.
        add(
            &mut dirty,
            Job::with_snapshot(source(), 1, copy("podinfo", "u1", "30", &[1], 0)),
        );
        let job = &dirty[&("test".to_string(), "podinfo".to_string())];
        assert_eq!(job.upto, 2);
        assert_eq!(
            job.snapshot().map(|c| c.resource_version()),
            Some(Some("20".into()))
        );
        // As many records and a later version (the writer's acknowledgement in it): taken.
        add(
            &mut dirty,
            Job::with_snapshot(source(), 2, copy("podinfo", "u1", "25", &[2], 1)),
        );
        let job = &dirty[&("test".to_string(), "podinfo".to_string())];
        assert_eq!(
            job.snapshot().map(|c| c.resource_version()),
            Some(Some("25".into()))
        );
        // A job for a later record without a copy: the copy kept lacks that record, so the
        // canary is read.
        add(
            &mut dirty,
            Job {
                namespace: "test".into(),
                name: "podinfo".into(),
                source: source(),
                upto: 3,
                canary: None,
            },
        );
        let job = &dirty[&("test".to_string(), "podinfo".to_string())];
        assert_eq!(job.upto, 3);
        assert!(job.canary.is_some() && job.snapshot().is_none());
        // A copy with it is used again.
        add(
            &mut dirty,
            Job::with_snapshot(source(), 3, copy("podinfo", "u1", "40", &[2, 3], 1)),
        );
        let job = &dirty[&("test".to_string(), "podinfo".to_string())];
        assert_eq!(job.snapshot().map(|c| last_record(c)), Some(3));
        assert_eq!(dirty.len(), 1);
    }

    #[test]
    fn a_lone_record_goes_out_after_the_settle_time() {
        let t0 = tokio::time::Instant::now();
        let window = Duration::from_millis(250);
        assert_eq!(Gathering::new(t0).ends(window), t0 + SETTLE);
    }

    #[test]
    fn a_steady_stream_is_cut_at_the_window() {
        let t0 = tokio::time::Instant::now();
        let window = Duration::from_millis(250);
        let mut gathering = Gathering::new(t0);
        // A record every 5 ms, closer than the settle time: gathering goes on...
        for i in 1..=60 {
            let at = t0 + Duration::from_millis(5 * i);
            gathering.arrived(at);
            assert_eq!(gathering.ends(window), (at + SETTLE).min(t0 + window));
        }
        // ...until the oldest record waited the whole window.
        assert_eq!(gathering.ends(window), t0 + window);
    }

    #[test]
    fn records_that_arrived_during_a_write_count_from_its_start() {
        let started = tokio::time::Instant::now();
        let window = Duration::from_millis(250);
        let mut gathering = Gathering::new(started);
        // The write took 400 ms; the records queued meanwhile are read right after it.
        let read = started + Duration::from_millis(400);
        gathering.arrived(read);
        assert_eq!(
            gathering.ends(window),
            started + window,
            "due already: no second window"
        );
        assert!(gathering.ends(window) < read);
    }

    #[test]
    fn a_window_shorter_than_the_settle_time_is_kept() {
        let t0 = tokio::time::Instant::now();
        let window = Duration::from_millis(2);
        assert_eq!(Gathering::new(t0).ends(window), t0 + window);
        assert_eq!(Gathering::new(t0).ends(Duration::ZERO), t0);
    }

    #[test]
    fn batch_costs_are_numbered_bounded_and_take_their_acknowledgement() {
        let stats = Stats::default();
        let batch = |records| BatchCost {
            records,
            ..Default::default()
        };
        assert_eq!(stats.add_batch(batch(10)), 1);
        assert_eq!(stats.add_batch(batch(20)), 2);
        stats.acknowledged(1, Duration::from_millis(30), Duration::from_millis(4));
        let kept = stats.batches();
        assert_eq!(kept[0].acknowledge, Some(Duration::from_millis(30)));
        assert_eq!(kept[0].cpu.acknowledge, Some(Duration::from_millis(4)));
        assert_eq!(kept[1].acknowledge, None, "not yet acknowledged");
        for _ in 0..KEPT_BATCHES {
            stats.add_batch(batch(1));
        }
        let kept = stats.batches();
        assert_eq!(kept.len(), KEPT_BATCHES);
        assert_eq!(kept[0].id, 3, "the oldest go first");
        assert_eq!(kept.last().map(|b| b.id), Some(KEPT_BATCHES as u64 + 2));
        // An acknowledgement of a batch no longer kept is dropped.
        stats.acknowledged(1, Duration::from_millis(5), Duration::from_millis(1));
        assert!(stats.batches().iter().all(|b| b.acknowledge.is_none()));
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            safe_url("https://bot:s3cret@git.example.com/a.git"),
            "https://git.example.com/a.git"
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
    fn a_new_pull_request_replaces_the_old_one_whole() {
        let next = PullRequestStatus {
            number: 8,
            url: "https://github.com/acme/config/pull/8".into(),
            branch: "flaggit/t/p/r2".into(),
            revision: "r2".into(),
            state: "open".into(),
            ..Default::default()
        };
        let patch = pull_request_patch(&next);
        // What flaggit was doing to the previous pull request is not left on this one.
        assert_eq!(patch["ending"], serde_json::Value::Null);
        assert_eq!(patch["openedAt"], serde_json::Value::Null);
        assert_eq!(patch["number"], 8);
        let declared = PullRequestStatus {
            ending: Some("close".into()),
            ..next
        };
        assert_eq!(pull_request_patch(&declared)["ending"], "close");
    }

    #[test]
    fn every_cluster_s_ledger_of_a_canary_is_found() {
        let dir = std::env::temp_dir().join(format!("flaggit-writer-unit-{}", rand::random::<u64>()));
        let remote = Remote {
            url: "git://example.com/config.git".into(),
            branch: "main".into(),
        };
        let repo = Repo::open(&dir, remote, super::super::Credentials::None).expect("open");
        let file = |path: &str| (path.to_string(), Some(b"canary: x\n".to_vec()));
        let commit = repo
            .commit(
                None,
                &[
                    file(".flaggit/test/podinfo.yaml"),
                    file(".flaggit/test/other.yaml"),
                    file(".flaggit/a/test/podinfo.yaml"),
                    file(".flaggit/b/test/podinfo.yaml"),
                    file(".flaggit/b/prod/podinfo.yaml"),
                    file(".flaggit/x/y/test/podinfo.yaml"),
                    file("apps/test/podinfo.yaml"),
                ],
                "seed",
                &Author::default(),
            )
            .expect("commit");
        assert_eq!(
            ledger_paths(&repo, commit, ".flaggit", "test", "podinfo").expect("list"),
            [
                ".flaggit/test/podinfo.yaml",
                ".flaggit/a/test/podinfo.yaml",
                ".flaggit/b/test/podinfo.yaml"
            ]
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn the_dora_history_reads_only_new_commits_and_starts_over_after_a_rewrite() {
        let dir = std::env::temp_dir().join(format!("flaggit-writer-dora-{}", rand::random::<u64>()));
        let remote = Remote {
            url: "git://example.com/config.git".into(),
            branch: "main".into(),
        };
        let repo = Repo::open(&dir, remote, super::super::Credentials::None).expect("open");
        let commit = |parent, n: usize| {
            repo.commit(
                parent,
                &[(format!("f{n}"), Some(format!("{n}\n").into_bytes()))],
                &format!("change {n}"),
                &Author::default(),
            )
            .expect("commit")
        };
        let first = commit(None, 1);
        let second = commit(Some(first), 2);
        let mut history = DoraHistory::default();
        let ids =
            |log: &[crate::gitops::dora::LogCommit]| log.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(history.advance(&repo, second).expect("read")),
            [second.to_string(), first.to_string()]
        );
        let third = commit(Some(second), 3);
        assert_eq!(
            ids(history.advance(&repo, third).expect("read")),
            [third.to_string(), second.to_string(), first.to_string()],
            "the new commit in front of what was read before"
        );
        assert_eq!(
            history.advance(&repo, third).expect("read").len(),
            3,
            "nothing new"
        );
        // The branch rewritten: a commit that does not come after the last tip.
        let other = commit(Some(first), 4);
        assert_eq!(
            ids(history.advance(&repo, other).expect("read")),
            [other.to_string(), first.to_string()]
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn refusals_that_ask_for_signatures_are_told_apart() {
        for reason in [
            "refs/heads/main: pre-receive hook declined; the remote said: error: commit 12ab is not signed",
            "protected branch hook declined; the remote said: error: GH006: Protected branch update failed for refs/heads/main. error: Commits must have verified signatures.",
        ] {
            assert!(refused_for_signatures(reason), "{reason}");
        }
        for reason in [
            "cannot push non-fastforwardable reference",
            "refs/heads/main: pre-receive hook declined; the remote said: error: file too large",
        ] {
            assert!(!refused_for_signatures(reason), "{reason}");
        }
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
