//! Who owns what a release changed (`spec.gitops.approvals.owners`): the ownership file read
//! at the release's base commit (the last promotion), so a release that edits CODEOWNERS or
//! OWNERS is still judged by the file it started from. Never fails: a file that cannot be
//! read or parsed becomes the reason no approval counts, naming the file and line.

use git2::Oid;

use super::authors::RevisionCommit;
use super::ledger::Ledger;
use super::repo::{self, Repo};
use crate::api::{OwnersFileKind, OwnersSource, ReleaseOwners};
use crate::forge::owners::{self, Owner, codeowners, k8s};

/// Where GitHub looks for CODEOWNERS, in its order.
pub const CODEOWNERS_PATHS: [&str; 3] = [".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];
/// GitHub ignores a CODEOWNERS file larger than this.
const MAX_BYTES: usize = 3 * 1024 * 1024;
/// Changed files looked at most.
const MAX_PATHS: usize = 500;

/// The commit a release's approvers are read at: the last promotion's, else the parent of
/// the oldest commit that brought the revision, else `head` itself.
pub fn base_of(repo: &Repo, ledger: &Ledger, commits: &[RevisionCommit], head: Oid) -> Oid {
    let promoted = ledger
        .promoted
        .as_ref()
        .and_then(|p| Oid::from_str(&p.commit).ok())
        .filter(|id| repo.log(*id, 1).is_ok());
    if let Some(promoted) = promoted {
        return promoted;
    }
    let parent = commits
        .last()
        .and_then(|c| Oid::from_str(&c.id).ok())
        .and_then(|oldest| repo.log(oldest, 2).ok())
        .and_then(|log| log.get(1).map(|c| c.id));
    parent.unwrap_or(head)
}

/// The owners of the files changed between `base` and `head` under `path` (all files of the
/// path when none changed), read at `base`. Blocking.
pub fn of_release(
    repo: &Repo,
    source: &OwnersSource,
    base: Oid,
    head: Oid,
    path: Option<&str>,
) -> ReleaseOwners {
    let mut found = ReleaseOwners {
        commit: base.to_string(),
        ..Default::default()
    };
    let dir = path.unwrap_or("").trim_matches('/');
    match changed(repo, base, head, dir) {
        Err(error) => found.error = Some(format!("cannot list the files the release changed: {error}")),
        Ok(paths) if paths.is_empty() => {
            found.error = Some(format!("no file under {dir:?} to find the owners of"));
        }
        Ok(paths) => {
            let decided = match source.file {
                OwnersFileKind::Codeowners => by_codeowners(repo, source, base, &paths, &mut found.file),
                OwnersFileKind::Owners => by_owners_files(repo, source, base, &paths, &mut found.file),
            };
            match decided {
                Ok(groups) => found.groups = groups,
                Err(error) => found.error = Some(error),
            }
        }
    }
    found
}

/// The files the release changed under `dir`, or every file of `dir` when none did (a
/// revision whose change is outside the declared path).
fn changed(repo: &Repo, base: Oid, head: Oid, dir: &str) -> Result<Vec<String>, repo::Error> {
    let mut paths: Vec<String> = repo
        .changed_files(base, head, dir)?
        .into_iter()
        .filter(|p| !p.starts_with(".flaggit/"))
        .collect();
    if paths.is_empty() {
        paths = repo.list_files(head, dir)?;
        if paths.is_empty() && !dir.is_empty() && repo.read_file(head, dir)?.is_some() {
            paths.push(dir.to_owned());
        }
    }
    paths.truncate(MAX_PATHS);
    Ok(paths)
}

fn text_of(repo: &Repo, commit: Oid, file: &str) -> Result<Option<String>, String> {
    let Some(bytes) = repo.read_file(commit, file).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if bytes.len() > MAX_BYTES {
        return Err(format!("{file} is larger than 3 MiB"));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| format!("{file} is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

fn by_codeowners(
    repo: &Repo,
    source: &OwnersSource,
    base: Oid,
    paths: &[String],
    file: &mut String,
) -> Result<Vec<crate::api::OwnerGroup>, String> {
    let candidates: Vec<&str> = match source.path.as_deref() {
        Some(path) => vec![path.trim_start_matches('/')],
        None => CODEOWNERS_PATHS.to_vec(),
    };
    let mut text = None;
    for candidate in &candidates {
        if let Some(found) = text_of(repo, base, candidate)? {
            *file = (*candidate).to_owned();
            text = Some(found);
            break;
        }
    }
    let Some(text) = text else {
        return Err(format!(
            "no CODEOWNERS file at the base commit {}: looked for {}",
            short(base),
            candidates.join(", ")
        ));
    };
    let sections = codeowners::parse(file, &text).map_err(|e| e.to_string())?;
    owners::groups(paths, |path| {
        sections
            .iter()
            .filter(|s| !s.optional)
            .filter_map(|s| {
                let rule = s.owner_of(path)?;
                let name = if s.name.is_empty() {
                    rule.pattern.clone()
                } else {
                    format!("[{}] {}", s.name, rule.pattern)
                };
                Some((name, rule.owners.clone(), s.required))
            })
            .collect()
    })
}

fn by_owners_files(
    repo: &Repo,
    source: &OwnersSource,
    base: Oid,
    paths: &[String],
    file: &mut String,
) -> Result<Vec<crate::api::OwnerGroup>, String> {
    let name = source.path.as_deref().unwrap_or("OWNERS").trim_matches('/');
    let mut cache: std::collections::BTreeMap<String, Option<k8s::OwnersFile>> = Default::default();
    let mut read = |dir: &str| -> Result<Option<k8s::OwnersFile>, String> {
        if let Some(known) = cache.get(dir) {
            return Ok(known.clone());
        }
        let at = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        let parsed = match text_of(repo, base, &at)? {
            Some(text) => Some(k8s::parse(&at, &text).map_err(|e| e.to_string())?),
            None => None,
        };
        cache.insert(dir.to_owned(), parsed.clone());
        Ok(parsed)
    };
    let mut decided: std::collections::HashMap<&str, (String, Vec<Owner>)> = Default::default();
    for path in paths {
        let (approvers, from) = k8s::approvers_of(path, &mut read)?;
        let rule = from
            .first()
            .map(|d| {
                if d.is_empty() {
                    name.to_owned()
                } else {
                    format!("{d}/{name}")
                }
            })
            .unwrap_or_default();
        if file.is_empty() && !rule.is_empty() {
            file.clone_from(&rule);
        }
        decided.insert(path.as_str(), (rule, approvers));
    }
    if file.is_empty() {
        return Err(format!(
            "no {name} file at the base commit {} above {}",
            short(base),
            paths.first().map_or("", String::as_str)
        ));
    }
    owners::groups(paths, |path| {
        decided
            .get(path)
            .map(|(rule, approvers)| vec![(rule.clone(), approvers.clone(), 1)])
            .unwrap_or_default()
    })
}

fn short(id: Oid) -> String {
    id.to_string().chars().take(7).collect()
}
