//! `flaggit history` (the rollouts of a canary, read back from the `Flaggit-*` trailers of
//! the config repo's log) and `flaggit ledger verify` (does every ledger match the cluster).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

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
}

/// The records of canary `namespace/name`, oldest first.
pub async fn history(client: Option<Client>, id: &str, options: &Options) -> Result<Vec<Entry>, Error> {
    let (remote, credentials) = match &options.repo {
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
    };
    let cache = options.cache_dir.clone();
    let limit = options.limit;
    let id = id.to_string();
    tokio::task::spawn_blocking(move || -> Result<Vec<Entry>, Error> {
        let mut repo = Repo::open(&cache, remote, credentials)?;
        let Some(head) = repo.fetch()? else {
            return Ok(Vec::new());
        };
        let mut entries: Vec<Entry> = repo
            .log(head, limit)?
            .into_iter()
            .filter_map(|c| message::parse(&c.id.to_string(), &c.message))
            .filter(|e| e.canary == id)
            .collect();
        entries.reverse();
        Ok(entries)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// `flaggit history` as a table.
pub fn history_table(entries: &[Entry]) -> String {
    let mut rows = vec![[
        "TIME".to_string(),
        "RECORD".to_string(),
        "KIND".to_string(),
        "PHASE".to_string(),
        "WEIGHT".to_string(),
        "REVISION".to_string(),
        "COMMIT".to_string(),
        "DETAIL".to_string(),
    ]];
    for e in entries {
        let detail = if !e.reason.is_empty() {
            e.reason.clone()
        } else if !e.checks.is_empty() {
            e.checks.clone()
        } else {
            e.images.clone()
        };
        rows.push([
            e.time.clone(),
            e.record.to_string(),
            e.kind.clone(),
            e.phase.clone(),
            e.weight.to_string(),
            short(&e.revision, 17),
            short(&e.commit, 8),
            detail,
        ]);
    }
    table(&rows)
}

/// One canary's verdict in `flaggit ledger verify`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    pub canary: String,
    pub ok: bool,
    pub repository: String,
    pub problems: Vec<String>,
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
                    ok: false,
                    repository: String::new(),
                    problems: vec![error.to_string()],
                });
                continue;
            }
        };
        let repository = super::writer::safe_url(&source.remote.to_string());
        let path = ledger::path(&options.ledger_dir, &ns, &canary.name_any());
        let problems = match super::writer::read_ledger(client, &source, &options.cache_dir, path).await {
            Ok(ledger) => compare(client, &canary, ledger.as_ref()).await,
            Err(error) => vec![error.to_string()],
        };
        verdicts.push(Verdict {
            canary: id,
            ok: problems.is_empty(),
            repository,
            problems,
        });
    }
    Ok(verdicts)
}

/// `flaggit ledger verify` as text.
pub fn verify_table(verdicts: &[Verdict]) -> String {
    let mut rows = vec![[
        "CANARY".to_string(),
        "LEDGER".to_string(),
        "REPOSITORY".to_string(),
        "PROBLEMS".to_string(),
    ]];
    for v in verdicts {
        rows.push([
            v.canary.clone(),
            if v.ok { "ok" } else { "MISMATCH" }.to_string(),
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
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
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
        assert!(lines[2].contains("  20      flaggit1-01234567  01234567  request-success-rate=99.9:pass"));
    }
}
