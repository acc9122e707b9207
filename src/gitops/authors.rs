//! Who made a revision: the config-repo commits that changed the canary's path since its last
//! promotion (Git knows), and the forge accounts of their authors. A release pull request
//! names them, and they may not approve their own release.

use git2::Oid;

use super::ledger::Ledger;
use super::message;
use super::repo::{self, Repo};
use crate::forge::bots::is_bot_identity;
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
/// does not have) makes the author unknown. Bots are recognised from the forge account
/// (`[bot]`, user type `Bot`, a well-known bot) or the commit's identity (Flux image
/// automation, Renovate, Dependabot). Transient forge failures are errors: ask again.
pub async fn authors(
    forge: &dyn Forge,
    repo: &RepoId,
    commits: &[RevisionCommit],
) -> Result<Authors, forge::Error> {
    let mut authors = Authors::default();
    for commit in commits {
        let account = match forge.commit_account(repo, &commit.id).await {
            Ok(account) => account,
            Err(error) if error.is_permanent() => None,
            Err(error) => return Err(error),
        };
        let bot = account.as_ref().is_some_and(|a| a.bot) || is_bot_identity(&commit.name, &commit.email);
        let short: String = commit.id.chars().take(7).collect();
        let who = match &account {
            Some(account) => {
                if !authors
                    .logins
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(&account.login))
                {
                    authors.logins.push(account.login.clone());
                }
                format!("@{}", account.login)
            }
            None => {
                authors.unknown.push(commit.describe());
                format!("{} <{}>", commit.name, commit.email)
            }
        };
        if bot {
            let name = account
                .as_ref()
                .map_or(commit.name.as_str(), |a| a.login.as_str());
            if !authors.bots.iter().any(|b| b.eq_ignore_ascii_case(name)) {
                authors.bots.push(name.to_owned());
            }
        }
        authors
            .commits
            .push(format!("{short} {who}{}", if bot { " (bot)" } else { "" }));
    }
    Ok(authors)
}
