//! Who made a revision: the config-repo commits that changed the canary's path since its last
//! promotion (Git knows), and the forge accounts of their authors. A release pull request
//! names them, and they may not approve their own release.

use git2::Oid;

use super::ledger::Ledger;
use super::message;
use super::repo::{self, Repo};
use crate::forge::policy::Authors;
use crate::forge::{self, Forge, RepoId};

/// Commits looked at most, newest first: a bound for a path no promotion was recorded for.
const MAX_COMMITS: usize = 20;

/// A commit that brought the revision, as Git names its author.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionCommit {
    pub id: String,
    pub name: String,
    pub email: String,
}

impl RevisionCommit {
    /// `Name <e-mail> (short id)`, for a commit whose author the forge does not know.
    pub fn describe(&self) -> String {
        let short: String = self.id.chars().take(7).collect();
        format!("{} <{}> ({short})", self.name, self.email)
    }
}

/// The commits reachable from `head` (where the revision was detected) that changed `path`
/// (None: the whole repository) since the commit of the ledger's last promotion, leaving out
/// flaggit's own record commits. Blocking.
pub fn commits_of_revision(
    repo: &Repo,
    head: Oid,
    ledger: &Ledger,
    path: Option<&str>,
) -> Result<Vec<RevisionCommit>, repo::Error> {
    let since = ledger
        .promoted
        .as_ref()
        .and_then(|p| Oid::from_str(&p.commit).ok());
    let path = path.unwrap_or("").trim_matches('/');
    let trailer = format!("\n{}: ", message::CANARY);
    let commits = repo.commits_touching(head, since, path, MAX_COMMITS, |m| m.contains(&trailer))?;
    Ok(commits
        .into_iter()
        .map(|c| RevisionCommit {
            id: c.id.to_string(),
            name: c.author,
            email: c.email,
        })
        .collect())
}

/// The forge logins of the commits' authors; a commit the forge names no account for (or
/// does not have) makes the author unknown. Transient forge failures are errors: ask again.
pub async fn authors(
    forge: &dyn Forge,
    repo: &RepoId,
    commits: &[RevisionCommit],
) -> Result<Authors, forge::Error> {
    let mut authors = Authors::default();
    for commit in commits {
        match forge.commit_author(repo, &commit.id).await {
            Ok(Some(login)) => {
                if !authors.logins.iter().any(|l| l.eq_ignore_ascii_case(&login)) {
                    authors.logins.push(login);
                }
            }
            Ok(None) => authors.unknown.push(commit.describe()),
            Err(error) if error.is_permanent() => authors.unknown.push(commit.describe()),
            Err(error) => return Err(error),
        }
    }
    Ok(authors)
}
