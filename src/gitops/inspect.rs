//! `flaggit history` (the rollouts of a canary, read back from the `Flaggit-*` trailers of
//! the config repo's log) and `flaggit ledger verify` (does every ledger match the cluster).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use super::dora;
use super::ledger::{self, Ledger};
use super::message::{self, Entry};
use super::repo::Repo;
use super::source::{self, Defaults, SecretRef, Source};
use super::{Credentials, Remote};
use crate::api::Canary;
use crate::workload;

/// What the inspection commands can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("canary {0} not found: check the namespace/name")]
    CanaryNotFound(String),
    #[error("cannot read canary {id}: {source}")]
    Kube {
        id: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no Git repository is known for canary {0}: pass --repo, or set spec.gitops.repository or a Flux / Argo CD source"
    )]
    NoRepository(String),
    #[error("flaggit dora reads one config repository: pass --repo (or FLAGGIT_GIT_URL) and --branch")]
    DoraRepository,
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Repo(#[from] super::repo::Error),
    #[error("the git task failed: {0}")]
    Task(String),
}

/// Where to read: an explicit repository, or the canary's own (found as the controller does).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub repo: Option<String>,
    pub branch: String,
    pub secret: Option<SecretRef>,
    pub cache_dir: PathBuf,
    pub ledger_dir: String,
    pub argocd_namespace: String,
    pub limit: usize,
    /// Only this cluster's records and ledger (`--cluster-name` of its controller); None shows
    /// the whole fleet.
    pub cluster: Option<String>,
}

/// The repository of canary `namespace/name`: `--repo`, or the canary's own.
async fn remote_of(
    client: Option<Client>,
    id: &str,
    options: &Options,
) -> Result<(Remote, Credentials), Error> {
    Ok(match &options.repo {
        Some(url) => {
            let remote = Remote {
                url: url.clone(),
                branch: options.branch.clone(),
            };
            let credentials = match &client {
                Some(client) => source::credentials_of(client, options.secret.as_ref()).await?,
                None => Credentials::None,
            };
            (remote, credentials)
        }
        None => {
            let client = client.ok_or_else(|| Error::NoRepository(id.to_string()))?;
            let (namespace, name) = id.split_once('/').unwrap_or(("default", id));
            let canary = get_canary(&client, namespace, name).await?;
            let source = canary_source(&client, &canary, options)
                .await?
                .ok_or_else(|| Error::NoRepository(id.to_string()))?;
            let credentials = source::credentials_of(&client, source.secret.as_ref()).await?;
            (source.remote, credentials)
        }
    })
}

/// The ended releases of canary `namespace/name` (all clusters), for its DORA figures.
pub async fn canary_releases(
    client: Option<Client>,
    id: &str,
    options: &Options,
) -> Result<Vec<dora::Release>, Error> {
    let (remote, credentials) = remote_of(client, id, options).await?;
    let cache = options.cache_dir.clone();
    let limit = options.limit;
    let id = id.to_string();
    tokio::task::spawn_blocking(move || -> Result<Vec<dora::Release>, Error> {
        let mut repo = Repo::open(&cache, remote, credentials)?;
        let Some(head) = repo.fetch()? else {
            return Ok(Vec::new());
        };
        let mut releases = dora::releases(&dora_log(&repo, head, limit)?);
        releases.retain(|r| r.canary == id);
        Ok(releases)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// The records of canary `namespace/name`, oldest first.
pub async fn history(client: Option<Client>, id: &str, options: &Options) -> Result<Vec<Entry>, Error> {
    let (remote, credentials) = remote_of(client, id, options).await?;
    let cache = options.cache_dir.clone();
    let limit = options.limit;
    let id = id.to_string();
    let cluster = options.cluster.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<Entry>, Error> {
        let mut repo = Repo::open(&cache, remote, credentials)?;
        let Some(head) = repo.fetch()? else {
            return Ok(Vec::new());
        };
        let mut entries: Vec<Entry> = repo
            .log(head, limit)?
            .into_iter()
            .filter_map(|c| message::parse(&c.id.to_string(), &c.message))
            .filter(|e| e.canary == id && cluster.as_ref().is_none_or(|c| e.cluster == *c))
            .collect();
        entries.reverse();
        Ok(entries)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// The flaggit records and change commits of a repository's branch, as the DORA figures
/// read them. Blocking.
pub fn dora_log(
    repo: &Repo,
    head: git2::Oid,
    limit: usize,
) -> Result<Vec<dora::LogCommit>, super::repo::Error> {
    dora_log_since(repo, head, None, limit)
}

/// As [`dora_log`], without the commits reachable from `since`.
pub fn dora_log_since(
    repo: &Repo,
    head: git2::Oid,
    since: Option<git2::Oid>,
    limit: usize,
) -> Result<Vec<dora::LogCommit>, super::repo::Error> {
    Ok(repo
        .log_all_since(head, since, limit)?
        .into_iter()
        .map(|(c, merge)| {
            let id = c.id.to_string();
            dora::LogCommit {
                record: message::parse(&id, &c.message),
                id,
                time: c.time,
                merge,
            }
        })
        .collect())
}

/// `flaggit dora`: the releases recorded in `--repo` (its branch), for the report.
pub async fn dora_releases(client: Option<Client>, options: &Options) -> Result<Vec<dora::Release>, Error> {
    let url = options.repo.clone().ok_or(Error::DoraRepository)?;
    let remote = Remote {
        url,
        branch: options.branch.clone(),
    };
    let credentials = match &client {
        Some(client) => source::credentials_of(client, options.secret.as_ref()).await?,
        None => Credentials::None,
    };
    let cache = options.cache_dir.clone();
    let limit = options.limit;
    tokio::task::spawn_blocking(move || -> Result<Vec<dora::Release>, Error> {
        let mut repo = Repo::open(&cache, remote, credentials)?;
        let Some(head) = repo.fetch()? else {
            return Ok(Vec::new());
        };
        Ok(dora::releases(&dora_log(&repo, head, limit)?))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// Where one cluster stands with a canary, from its records: what it runs and how its last
/// release went.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClusterState {
    /// Empty for the single-cluster layout.
    pub cluster: String,
    /// The images of the last Initialized, Recovered or Promoted record.
    pub runs: String,
    /// The images of the last release started.
    pub release: String,
    /// `Progressing`, `Promoted`, `RolledBack`, `Cancelled` or `OffBoarded`.
    pub outcome: String,
    pub at: String,
}

/// The fleet side by side: one row per cluster that has records in `entries` (oldest first).
pub fn fleet(entries: &[Entry]) -> Vec<ClusterState> {
    let mut states: BTreeMap<&str, ClusterState> = BTreeMap::new();
    for e in entries {
        let state = states.entry(e.cluster.as_str()).or_insert_with(|| ClusterState {
            cluster: e.cluster.clone(),
            ..Default::default()
        });
        state.at = e.time.clone();
        match e.kind.as_str() {
            "Initialized" | "Recovered" => state.runs = e.images.clone(),
            "Detected" | "Restarted" => {
                state.release = e.images.clone();
                state.outcome = "Progressing".into();
            }
            "Promoted" => {
                state.runs = e.images.clone();
                state.release = e.images.clone();
                state.outcome = e.kind.clone();
            }
            "RolledBack" | "Cancelled" | "OffBoarded" => state.outcome = e.kind.clone(),
            _ => {}
        }
    }
    states.into_values().collect()
}

/// The fleet side by side, as a table.
pub fn fleet_table(states: &[ClusterState]) -> String {
    let mut rows = vec![[
        "CLUSTER".to_string(),
        "RUNS".to_string(),
        "LAST RELEASE".to_string(),
        "OUTCOME".to_string(),
        "AT".to_string(),
    ]];
    for s in states {
        rows.push([
            cluster_label(&s.cluster),
            s.runs.clone(),
            s.release.clone(),
            s.outcome.clone(),
            s.at.clone(),
        ]);
    }
    table(&rows)
}

/// How the single-cluster layout is named in tables.
fn cluster_label(cluster: &str) -> String {
    if cluster.is_empty() {
        "(unnamed)".to_string()
    } else {
        cluster.to_string()
    }
}

/// `flaggit history` as a table; with records of named clusters, the fleet side by side
/// first and a CLUSTER column.
pub fn history_table(entries: &[Entry]) -> String {
    if entries.iter().any(|e| !e.cluster.is_empty()) {
        let mut out = fleet_table(&fleet(entries));
        out.push('\n');
        out.push_str(&records_table(entries, true));
        return out;
    }
    records_table(entries, false)
}

fn records_table(entries: &[Entry], clusters: bool) -> String {
    let mut header: Vec<String> = [
        "TIME", "RECORD", "KIND", "PHASE", "WEIGHT", "REVISION", "COMMIT", "DETAIL",
    ]
    .map(String::from)
    .to_vec();
    if clusters {
        header.insert(1, "CLUSTER".to_string());
    }
    let mut rows = vec![header];
    for e in entries {
        let detail = if !e.reason.is_empty() {
            e.reason.clone()
        } else if !e.checks.is_empty() {
            super::message::display_checks(&e.checks)
        } else {
            e.images.clone()
        };
        let mut row = vec![
            e.time.clone(),
            e.record.to_string(),
            e.kind.clone(),
            e.phase.clone(),
            e.weight.to_string(),
            short(&e.revision, 17),
            short(&e.commit, 8),
            detail,
        ];
        if clusters {
            row.insert(1, cluster_label(&e.cluster));
        }
        rows.push(row);
    }
    table(&rows)
}

/// One canary's verdict in `flaggit ledger verify`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    pub canary: String,
    /// The cluster whose ledger was compared (empty: the single-cluster ledger).
    pub cluster: String,
    pub ok: bool,
    pub repository: String,
    pub problems: Vec<String>,
    /// The other clusters' ledgers of the same canary, side by side.
    pub fleet: Vec<Peer>,
}

/// Another cluster's ledger of a canary, as `ledger verify` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Peer {
    pub cluster: String,
    /// The promoted images.
    pub runs: String,
    /// The last outcome and its images (`RolledBack podinfo=podinfo:6.0.2`).
    pub last: String,
}

impl Peer {
    fn of(ledger: &Ledger) -> Self {
        let images = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(c, i)| format!("{c}={i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Self {
            cluster: ledger.cluster.clone(),
            runs: ledger
                .promoted
                .as_ref()
                .map(|p| images(&p.images))
                .unwrap_or_default(),
            last: match (&ledger.rollout, ledger.history.first()) {
                (Some(rollout), _) => format!("{} {}", rollout.phase, images(&rollout.images)),
                (None, Some(outcome)) => format!("{} {}", outcome.outcome, images(&outcome.images)),
                (None, None) => String::new(),
            },
        }
    }
}

/// Which of a canary's ledgers is the one of the cluster `verify` runs against: the named
/// cluster's (with the single-cluster ledger it migrates from), else the one this cluster's
/// uid wrote, else the single-cluster ledger. Returns its index in `ledgers`.
fn own_ledger(
    ledgers: &[super::writer::LedgerFile],
    single: &str,
    cluster: Option<&str>,
    uid: &str,
) -> Option<usize> {
    let is = |i: usize, f: &dyn Fn(&Ledger) -> bool| ledgers[i].1.as_ref().is_ok_and(f);
    let all = 0..ledgers.len();
    let single_at = all.clone().find(|&i| ledgers[i].0 == single);
    match cluster {
        Some(name) => all
            .clone()
            .find(|&i| ledgers[i].0 != single && is(i, &|l| l.cluster == name))
            .or_else(|| single_at.filter(|&i| is(i, &|l| l.seeds(uid)))),
        None => all
            .clone()
            .find(|&i| !uid.is_empty() && is(i, &|l| l.cluster_uid == uid))
            .or(single_at),
    }
}

/// Compares every canary's ledger with the cluster: the promoted revision and images, and
/// records still waiting in the outbox.
pub async fn verify(
    client: &Client,
    namespace: Option<&str>,
    options: &Options,
) -> Result<Vec<Verdict>, Error> {
    let api: Api<Canary> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let canaries = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            id: namespace.unwrap_or("all namespaces").to_string(),
            source,
        })?;
    let uid = kube_system_uid(client).await;
    let mut verdicts = Vec::new();
    for canary in canaries {
        let ns = canary.namespace().unwrap_or_default();
        let id = format!("{ns}/{}", canary.name_any());
        let source = match canary_source(client, &canary, options).await {
            Ok(Some(source)) => source,
            Ok(None) => continue,
            Err(error) => {
                verdicts.push(Verdict {
                    canary: id,
                    cluster: options.cluster.clone().unwrap_or_default(),
                    ok: false,
                    repository: String::new(),
                    problems: vec![error.to_string()],
                    fleet: Vec::new(),
                });
                continue;
            }
        };
        let repository = super::writer::safe_url(&source.remote.to_string());
        let name = canary.name_any();
        let read = super::writer::read_ledgers(
            client,
            &source,
            &options.cache_dir,
            &options.ledger_dir,
            &ns,
            &name,
        )
        .await;
        let ledgers = match read {
            Ok(ledgers) => ledgers,
            Err(error) => {
                verdicts.push(Verdict {
                    canary: id,
                    cluster: options.cluster.clone().unwrap_or_default(),
                    ok: false,
                    repository,
                    problems: vec![error.to_string()],
                    fleet: Vec::new(),
                });
                continue;
            }
        };
        let single = ledger::path(&options.ledger_dir, &ns, &name);
        let own = own_ledger(&ledgers, &single, options.cluster.as_deref(), &uid);
        let mut problems = Vec::new();
        let ledger = match own.map(|i| &ledgers[i].1) {
            Some(Ok(ledger)) => Some(ledger),
            Some(Err(error)) => {
                problems.push(error.to_string());
                None
            }
            None => None,
        };
        if problems.is_empty() {
            problems = compare(client, &canary, ledger).await;
        }
        let fleet = ledgers
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != own)
            .filter_map(|(_, (_, l))| l.as_ref().ok())
            .map(Peer::of)
            .collect();
        verdicts.push(Verdict {
            canary: id,
            cluster: ledger
                .map(|l| l.cluster.clone())
                .or_else(|| options.cluster.clone())
                .unwrap_or_default(),
            ok: problems.is_empty(),
            repository,
            problems,
            fleet,
        });
    }
    Ok(verdicts)
}

/// `flaggit ledger verify` as text.
pub fn verify_table(verdicts: &[Verdict]) -> String {
    let mut rows = vec![[
        "CANARY".to_string(),
        "CLUSTER".to_string(),
        "LEDGER".to_string(),
        "OTHER CLUSTERS".to_string(),
        "REPOSITORY".to_string(),
        "PROBLEMS".to_string(),
    ]];
    for v in verdicts {
        let fleet: Vec<String> = v
            .fleet
            .iter()
            .map(|p| {
                format!(
                    "{}: runs {} ({})",
                    cluster_label(&p.cluster),
                    p.runs,
                    p.last.trim()
                )
            })
            .collect();
        rows.push([
            v.canary.clone(),
            cluster_label(&v.cluster),
            if v.ok { "ok" } else { "MISMATCH" }.to_string(),
            if fleet.is_empty() {
                "-".to_string()
            } else {
                fleet.join("; ")
            },
            v.repository.clone(),
            v.problems.join("; "),
        ]);
    }
    table(&rows)
}

async fn compare(client: &Client, canary: &Canary, ledger: Option<&Ledger>) -> Vec<String> {
    let mut problems = Vec::new();
    let status = canary.status.clone().unwrap_or_default();
    let pending = super::outbox::pending(canary.status.as_ref()).len();
    if pending > 0 {
        problems.push(format!("{pending} record(s) not yet pushed to Git"));
    }
    let Some(ledger) = ledger else {
        if status.last_promoted_spec.is_some() {
            problems.push("no ledger in the repository although the canary has promoted a revision".into());
        }
        return problems;
    };
    let Some(promoted) = &ledger.promoted else {
        if status.last_promoted_spec.is_some() {
            problems.push("the ledger has no promoted revision".into());
        }
        return problems;
    };
    if let Some(live) = &status.last_promoted_spec
        && live != &promoted.revision
        && pending == 0
    {
        problems.push(format!(
            "promoted revision: ledger {} but the cluster {}",
            promoted.revision, live
        ));
    }
    if let Ok(workload) = workload::for_target(
        canary.spec.target_ref.kind,
        client.clone(),
        workload::Settings::default(),
    ) && let Ok(images) = workload.primary_images(canary).await
    {
        let differ: BTreeMap<&String, (&String, &String)> = promoted
            .images
            .iter()
            .filter_map(|(c, want)| {
                images
                    .get(c)
                    .filter(|have| *have != want)
                    .map(|have| (c, (want, have)))
            })
            .collect();
        for (container, (want, have)) in differ {
            problems.push(format!(
                "container {container}: the ledger says {want} is promoted but the primary runs {have}"
            ));
        }
    }
    problems
}

/// The uid of the connected cluster's `kube-system` namespace; empty when it cannot be read.
async fn kube_system_uid(client: &Client) -> String {
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .ok()
        .and_then(|n| n.uid())
        .unwrap_or_default()
}

async fn get_canary(client: &Client, namespace: &str, name: &str) -> Result<Canary, Error> {
    let id = format!("{namespace}/{name}");
    Api::<Canary>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube {
            id: id.clone(),
            source,
        })?
        .ok_or(Error::CanaryNotFound(id))
}

/// The canary's repository, found as the controller finds it.
async fn canary_source(client: &Client, canary: &Canary, options: &Options) -> Result<Option<Source>, Error> {
    let target = match workload::for_target(
        canary.spec.target_ref.kind,
        client.clone(),
        workload::Settings::default(),
    ) {
        Ok(workload) => workload.observe(canary).await.ok(),
        Err(_) => None,
    };
    let metadata = target.map(|t| t.metadata()).unwrap_or_default();
    let defaults = Defaults {
        remote: options.repo.as_ref().map(|url| Remote {
            url: url.clone(),
            branch: options.branch.clone(),
        }),
        secret: options.secret.clone(),
        argocd_namespace: options.argocd_namespace.clone(),
        // Reading is not writing: the repository the canary names may be read whatever the
        // controller's --git-allow rules say.
        allowed: canary
            .spec
            .gitops
            .as_ref()
            .and_then(|g| g.repository.as_ref())
            .map(|repo| crate::gitops::allow::Rule {
                namespace: "*".to_string(),
                url: repo.url.clone(),
                path: String::new(),
            })
            .into_iter()
            .collect(),
    };
    Ok(source::resolve(client, canary, &metadata, &defaults).await?)
}

fn short(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// Left-aligned columns separated by two spaces, like kubectl.
pub(crate) fn table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.first().map_or(0, |r| r.as_ref().len());
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.as_ref().iter().enumerate() {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cluster: &str, kind: &str, images: &str, time: &str) -> Entry {
        Entry {
            cluster: cluster.into(),
            kind: kind.into(),
            images: images.into(),
            time: time.into(),
            canary: "test/podinfo".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_fleet_shows_what_each_cluster_runs_and_which_rolled_back() {
        let entries = [
            record("a", "Initialized", "app=podinfo:1", "t1"),
            record("b", "Initialized", "app=podinfo:1", "t2"),
            record("a", "Detected", "app=podinfo:2", "t3"),
            record("b", "Detected", "app=podinfo:2", "t4"),
            record("b", "Step", "app=podinfo:2", "t5"),
            record("a", "RolledBack", "app=podinfo:2", "t6"),
            record("b", "Promoted", "app=podinfo:2", "t7"),
        ];
        let states = fleet(&entries);
        let rows: Vec<(&str, &str, &str, &str)> = states
            .iter()
            .map(|s| {
                (
                    s.cluster.as_str(),
                    s.runs.as_str(),
                    s.release.as_str(),
                    s.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("a", "app=podinfo:1", "app=podinfo:2", "RolledBack"),
                ("b", "app=podinfo:2", "app=podinfo:2", "Promoted"),
            ]
        );
        let text = history_table(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CLUSTER  RUNS"), "{text}");
        assert!(lines[1].starts_with("a        app=podinfo:1"), "{text}");
        assert!(lines[4].starts_with("TIME  CLUSTER  RECORD"), "{text}");
        assert_eq!(lines.len(), 4 + 1 + entries.len(), "{text}");
    }

    fn ledger_file(path: &str, cluster: &str, uid: &str) -> crate::gitops::writer::LedgerFile {
        let mut ledger = Ledger::new("test/podinfo", "u", "Deployment/podinfo");
        ledger.cluster = cluster.into();
        ledger.cluster_uid = uid.into();
        (path.into(), Ok(ledger))
    }

    #[test]
    fn verify_picks_the_ledger_of_the_cluster_it_runs_against() {
        let single = ".flaggit/test/podinfo.yaml";
        let ledgers = [
            ledger_file(single, "", "old"),
            ledger_file(".flaggit/a/test/podinfo.yaml", "a", "uid-a"),
            ledger_file(".flaggit/b/test/podinfo.yaml", "b", "uid-b"),
        ];
        assert_eq!(own_ledger(&ledgers, single, Some("b"), ""), Some(2));
        assert_eq!(
            own_ledger(&ledgers, single, None, "uid-a"),
            Some(1),
            "found by uid"
        );
        assert_eq!(own_ledger(&ledgers, single, None, "uid-x"), Some(0));
        assert_eq!(own_ledger(&ledgers, single, None, ""), Some(0));
        // A named cluster without a ledger yet migrates from the single-cluster one it wrote.
        assert_eq!(own_ledger(&ledgers, single, Some("c"), "old"), Some(0));
        assert_eq!(own_ledger(&ledgers, single, Some("c"), "uid-b"), None);
        let peer = Peer::of(ledgers[1].1.as_ref().expect("parsed"));
        assert_eq!(peer.cluster, "a");
    }

    #[test]
    fn the_history_table_lines_up() {
        let entries = vec![
            Entry {
                time: "2026-11-22T10:00:00Z".into(),
                record: 1,
                kind: "Detected".into(),
                phase: "Progressing".into(),
                revision: "flaggit1-0123456789abcdef".into(),
                commit: "abcdef0123456789".into(),
                images: "podinfo=podinfo:2".into(),
                ..Default::default()
            },
            Entry {
                time: "2026-11-22T10:00:10Z".into(),
                record: 2,
                kind: "Step".into(),
                phase: "Progressing".into(),
                weight: 20,
                revision: "flaggit1-0123456789abcdef".into(),
                commit: "0123456789".into(),
                checks: "request-success-rate=99.9:pass".into(),
                ..Default::default()
            },
        ];
        let text = history_table(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(
            "TIME                  RECORD  KIND      PHASE        WEIGHT  REVISION           COMMIT    DETAIL"
        ));
        assert!(lines[1].contains("Detected") && lines[1].ends_with("podinfo=podinfo:2"));
        assert!(lines[2].contains("  20      flaggit1-01234567  01234567  request-success-rate 99.90% pass"));
    }
}
