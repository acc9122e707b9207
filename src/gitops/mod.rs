//! The Git record: where a canary's rollouts are written in the GitOps config repo (see
//! `docs/gitops.md`). `repo` talks to remotes, `source` finds the file that declares a target,
//! `edit` rewrites manifests with minimal diffs, `limits` bounds what YAML is read, `ledger` and `message` are what is written,
//! `dora` reads delivery figures back out of the record, and `writer` turns the engine's records into coalesced, idempotent pushes.

pub mod allow;
pub mod authors;
pub mod cpu;
pub mod dora;
pub mod draft;
pub mod edit;
pub mod inspect;
pub mod ledger;
pub mod limits;
pub mod message;
pub mod outbox;
pub mod owners;
pub mod pack;
pub mod release;
pub mod repo;
pub mod select;
pub mod source;
pub mod writer;

use std::fmt;

/// A branch of a remote repository. `Debug` and `Display` redact the URL's userinfo.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Remote {
    /// Clone URL: `https://`, `http://`, `git://`, `ssh://user@host/path` or `user@host:path`.
    pub url: String,
    /// Branch records and rollbacks are written to.
    pub branch: String,
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // For people: a token in the URL never reaches a log line or a status.
        write!(f, "{}#{}", crate::redact::url(&self.url), self.branch)
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("url", &crate::redact::url(&self.url))
            .field("branch", &self.branch)
            .finish()
    }
}

/// How to authenticate to a remote; read from a Secret with the keys of a Flux GitRepository
/// secret. `Debug` never prints the secret parts.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous (`git://`, public HTTPS, or a remote that needs nothing).
    #[default]
    None,
    /// HTTPS basic auth; a token goes in `password`.
    Basic { username: String, password: String },
    /// An SSH private key (OpenSSH or PEM text) and the `known_hosts` lines the server's host
    /// key must match. No known_hosts means the connection is refused, never trusted blindly.
    Ssh {
        username: Option<String>,
        identity: String,
        passphrase: Option<String>,
        known_hosts: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <redacted> }}")
            }
            Self::Ssh { username, .. } => write!(f, "Ssh {{ username: {username:?}, identity: <redacted> }}"),
        }
    }
}

/// Who the controller's commits are authored and committed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Self {
            name: "flaggit".to_string(),
            email: "flaggit@users.noreply.github.com".to_string(),
        }
    }
}

/// A container image the rollback puts back: in `container`, `from` (the failed canary image,
/// as the target declares it) becomes `to` (the image the primary serves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageChange {
    pub container: String,
    pub from: String,
    pub to: String,
}
