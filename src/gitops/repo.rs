//! One branch of a GitOps remote: a bare cache clone per remote, commits built straight in the
//! object database (no working tree), fetch and never-forced push, with credentials, SSH host
//! key checks against `known_hosts` and a stall timeout on every network call.
//!
//! Every call blocks; callers run them on `spawn_blocking` (STYLE.md rule 7).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, ErrorCode, FetchOptions, ObjectType, Oid,
    PushOptions, RemoteCallbacks, Repository, Signature, Sort, Time, TreeWalkMode, TreeWalkResult,
};
use sha2::{Digest, Sha256};

use super::draft::{Draft, Trees};
use super::pack::{self, PackWriter};
use super::{Author, Credentials, Remote};

/// How long a network call may go without any sign of life (connect, credentials, bytes in
/// or out) before it is abandoned, so a dead remote fails in seconds instead of minutes.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The local ref the branch head is tracked in (as last fetched, or as last pushed by us).
const TRACKING_PREFIX: &str = "refs/remotes/origin/";
/// The local ref a push sends from: libgit2 pushes refs, not bare object ids.
const PUSH_REF: &str = "refs/flaggit/push";

/// Priority of the in-memory object store in the clone's object database: above the packs
/// and loose files, so new objects are written there.
const MEMORY_PRIORITY: i32 = 1000;
/// Fewer new objects than this are stored as loose files, as `git` itself unpacks small
/// pushes (`transfer.unpackLimit`): one pack per commit or two would pile up packs.
const LOOSE_BELOW: usize = 100;
/// Bytes of new objects a batch keeps in memory before it stores what it has made so far
/// ([`Repo::unstored_bytes`]).
pub const MEMORY_LIMIT: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("remote {remote}: {branch:?} is not a valid branch name: fix the branch in the GitOps settings")]
    InvalidBranch { remote: String, branch: String },
    #[error(
        "cannot open the cache clone of {remote} at {path}: {source}: check that the cache directory is writable"
    )]
    Open {
        remote: String,
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    // Network messages are kept as redacted strings, not `git2::Error` sources: libgit2 may
    // quote what it was given, and secrets must never reach a log line.
    #[error("fetching {remote} failed: {message}: check the URL and that the remote is reachable")]
    Fetch { remote: String, message: String },
    #[error("pushing to {remote} failed: {message}: check the URL and that the credentials may push")]
    Push { remote: String, message: String },
    #[error(
        "authentication to {remote} failed: {message}: check the username and password (token) or the SSH key in the credentials Secret"
    )]
    Auth { remote: String, message: String },
    #[error(
        "host key of {remote} refused: {message}: put the server's key (ssh-keyscan -p PORT HOST) in known_hosts of the credentials Secret"
    )]
    HostKey { remote: String, message: String },
    #[error(
        "{operation} {remote} timed out: no answer for {after:?}: check that the remote is up and reachable"
    )]
    Timeout {
        remote: String,
        operation: &'static str,
        after: Duration,
    },
    #[error("cannot build a commit for {remote}: {source}")]
    Commit {
        remote: String,
        #[source]
        source: git2::Error,
    },
    #[error(
        "the commit signing key is unusable: {message}: give an unencrypted Ed25519 key in OpenSSH format (ssh-keygen -t ed25519 -N '')"
    )]
    SigningKey { message: String },
    #[error(
        "cannot store new objects in the cache clone of {remote} at {path}: {source}: check that the cache directory is writable and has room"
    )]
    Store {
        remote: String,
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read {what} of commit {commit} in the cache clone of {remote}: {source}")]
    Read {
        remote: String,
        commit: Oid,
        what: String,
        #[source]
        source: git2::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidBranch { .. } => "InvalidGitRemote",
            Self::Open { .. } => "GitOpen",
            Self::Fetch { .. } => "GitFetch",
            Self::Push { .. } => "GitPush",
            Self::Auth { .. } => "GitAuth",
            Self::HostKey { .. } => "GitHostKey",
            Self::Timeout { .. } => "GitTimeout",
            Self::Commit { .. } => "GitCommit",
            Self::Store { .. } => "GitStore",
            Self::Read { .. } => "GitRead",
            Self::SigningKey { .. } => "InvalidSigningKey",
        }
    }
}

/// The outcome of a push that reached the remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Push {
    Pushed,
    /// Not a fast-forward of the remote branch (someone pushed first): fetch, rebuild the
    /// commits on the new head and push again.
    Rejected {
        reason: String,
    },
    /// Refused by a rule of the server (branch protection, a pre-receive or update hook):
    /// pushing again changes nothing until a person changes the rule.
    Refused {
        reason: String,
    },
}

/// Whether a push rejection (the server's status for the ref and what its hooks printed) is
/// a rule refusing the push rather than a race with another pusher. git's own words for a
/// hook are "hook declined"; GitHub says GH006 / "protected branch", GitLab "not allowed to
/// push", Gitea and Bitbucket "protected".
pub fn is_refusal(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    [
        "hook declined",
        "gh006",
        "protected branch",
        "not allowed to push",
        "is protected",
    ]
    .iter()
    .any(|words| reason.contains(words))
}

/// A commit as `log` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: Oid,
    pub message: String,
    pub author: String,
    pub email: String,
    /// Author time, seconds since the epoch.
    pub time: i64,
}

/// An SSH key (OpenSSH text, unencrypted Ed25519) commits are signed with. `Debug` never
/// prints the key.
#[derive(Clone)]
pub struct Signer {
    key: ssh_key::PrivateKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Signer {{ public_key: {:?}, key: <redacted> }}",
            self.public_key()
        )
    }
}

impl Signer {
    pub fn from_openssh(private_key: &str) -> Result<Self, Error> {
        let invalid = |message: String| Error::SigningKey { message };
        let key = ssh_key::PrivateKey::from_openssh(private_key)
            .map_err(|e| invalid(format!("not an OpenSSH private key ({e})")))?;
        if key.is_encrypted() {
            return Err(invalid("the key is encrypted with a passphrase".to_string()));
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(invalid(format!("{} keys are not supported", key.algorithm())));
        }
        Ok(Self { key })
    }

    /// The public key line (`ssh-ed25519 AAAA...`), for the forge or an allowed-signers file.
    pub fn public_key(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// The armored SSHSIG of `data` in git's namespace.
    fn sign(&self, data: &[u8]) -> Result<String, git2::Error> {
        self.key
            .sign("git", ssh_key::HashAlg::Sha512, data)
            .and_then(|signature| signature.to_pem(ssh_key::LineEnding::LF))
            .map_err(|e| git2::Error::from_str(&format!("cannot sign the commit: {e}")))
    }
}

/// The cache clone of one remote branch. The objects of new commits are kept in memory (a
/// libgit2 mempack in front of the clone's object database) until [`Repo::store`] writes them
/// all in one pack file, which a push does first.
pub struct Repo {
    git: Repository,
    /// The objects in memory, in the order they were made.
    unstored: RefCell<Unstored>,
    path: PathBuf,
    remote: Remote,
    credentials: Credentials,
    head: Option<Oid>,
    stall_timeout: Duration,
    /// What the remote printed during the last network call.
    said: Mutex<String>,
    /// CPU time the network calls' worker threads used, in total.
    network_cpu: super::cpu::Tally,
    /// The commit this clone last pushed, per branch (since it was opened).
    own_pushes: HashMap<String, Oid>,
}

impl Repo {
    /// Opens (or creates) the bare cache clone for `remote` under `cache_dir`, in a directory
    /// named after the URL and branch. No network.
    pub fn open(cache_dir: &Path, remote: Remote, credentials: Credentials) -> Result<Self, Error> {
        if !git2::Reference::is_valid_name(&format!("refs/heads/{}", remote.branch)) {
            return Err(Error::InvalidBranch {
                remote: safe_url(&remote.url),
                branch: remote.branch.clone(),
            });
        }
        let path = cache_dir.join(cache_name(&remote));
        let opened = if path.join("HEAD").exists() {
            Ok(())
        } else {
            std::fs::create_dir_all(cache_dir)
                .map_err(|e| git2::Error::from_str(&e.to_string()))
                .and_then(|()| Repository::init_bare(&path).map(drop))
        };
        let git = opened
            .and_then(|()| open_in_memory(&path))
            .map_err(|source| Error::Open {
                remote: safe_url(&remote.url),
                path: path.clone(),
                source,
            })?;
        let head = git
            .refname_to_id(&format!("{TRACKING_PREFIX}{}", remote.branch))
            .ok();
        Ok(Self {
            git,
            unstored: RefCell::default(),
            path,
            remote,
            credentials,
            head,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            said: Mutex::new(String::new()),
            network_cpu: super::cpu::Tally::default(),
            own_pushes: HashMap::new(),
        })
    }

    /// Points the clone at another branch of the same remote (a release branch): fetch, push
    /// and head then work on it. No network.
    pub fn switch_branch(&mut self, branch: &str) -> Result<(), Error> {
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(Error::InvalidBranch {
                remote: safe_url(&self.remote.url),
                branch: branch.to_string(),
            });
        }
        self.remote.branch = branch.to_string();
        self.head = self.git.refname_to_id(&format!("{TRACKING_PREFIX}{branch}")).ok();
        Ok(())
    }

    /// Replaces the credentials (the Secret may have been rotated since the clone was opened).
    pub fn set_credentials(&mut self, credentials: Credentials) {
        self.credentials = credentials;
    }

    /// How long a fetch or push may go without any progress before it fails with `Timeout`.
    pub fn set_stall_timeout(&mut self, timeout: Duration) {
        self.stall_timeout = timeout;
    }

    /// The directory of the cache clone.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remote, as given to `open` (the URL may hold a password: print `safe_url`).
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Fetches the branch; returns its head on the remote, None if the branch does not exist
    /// yet (empty repository: the first commit creates it).
    pub fn fetch(&mut self) -> Result<Option<Oid>, Error> {
        let branch_ref = format!("refs/heads/{}", self.remote.branch);
        let tracking = self.tracking_ref();
        let refspec = format!("+{branch_ref}:{tracking}");
        let url = self.remote.url.clone();
        let head = self
            .network("fetch", move |repo, callbacks| {
                let mut remote = repo.remote_anonymous(&url)?;
                let mut options = FetchOptions::new();
                options
                    .remote_callbacks(callbacks)
                    .download_tags(AutotagOption::None)
                    .update_fetchhead(false);
                remote.fetch(&[&refspec], Some(&mut options), None)?;
                let advertised = remote.list()?;
                Ok(advertised
                    .iter()
                    .find(|h| h.name() == branch_ref)
                    .map(|h| h.oid()))
            })
            .map_err(|failure| self.network_error(failure, "fetch"))?;
        self.set_tracking(head).map_err(|source| Error::Fetch {
            remote: self.safe_remote(),
            message: self.redact(&format!("cannot update {tracking}: {}", source.message())),
        })?;
        Ok(head)
    }

    /// Fetches `reference` of the remote (a pull request's head, `refs/pull/7/head`) into
    /// this clone; returns the commit it names, None when the remote has no such ref.
    pub fn fetch_ref(&mut self, reference: &str) -> Result<Option<Oid>, Error> {
        if !git2::Reference::is_valid_name(reference) || !reference.starts_with("refs/") {
            return Err(Error::Fetch {
                remote: self.safe_remote(),
                message: format!("{reference:?} is not a ref name"),
            });
        }
        let local = format!("refs/flaggit/fetched/{}", reference.trim_start_matches("refs/"));
        // A ref the remote no longer has must not answer with what an earlier fetch saw.
        if let Ok(mut stale) = self.git.find_reference(&local) {
            stale.delete().map_err(|source| Error::Fetch {
                remote: self.safe_remote(),
                message: format!("cannot reset {local}: {}", source.message()),
            })?;
        }
        let refspec = format!("+{reference}:{local}");
        let url = self.remote.url.clone();
        self.network("fetch", move |repo, callbacks| {
            let mut remote = repo.remote_anonymous(&url)?;
            let mut options = FetchOptions::new();
            options
                .remote_callbacks(callbacks)
                .download_tags(AutotagOption::None)
                .update_fetchhead(false);
            remote.fetch(&[&refspec], Some(&mut options), None)
        })
        .map_err(|failure| self.network_error(failure, "fetch"))?;
        Ok(self.git.refname_to_id(&local).ok())
    }

    /// CPU time the worker threads of this clone's network calls (fetch, push, probe) have
    /// used so far.
    pub fn network_cpu(&self) -> Duration {
        self.network_cpu.total()
    }

    /// The branch head as last fetched (or as last pushed by us).
    pub fn head(&self) -> Option<Oid> {
        self.head
    }

    /// Whether the branch head known here is the commit this clone pushed to it last: no
    /// other push has been seen since. (One may have happened unseen: a push built on this
    /// head is then rejected, as after any race.)
    pub fn head_is_own_push(&self) -> bool {
        self.head.is_some() && self.own_pushes.get(&self.remote.branch) == self.head.as_ref()
    }

    /// The content of the file at `path` in `commit`; None if there is no file there.
    pub fn read_file(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let read = |what: String| {
            move |source| Error::Read {
                remote: self.safe_remote(),
                commit,
                what,
                source,
            }
        };
        let tree = self.tree_of(commit).map_err(read("the tree".to_string()))?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(read(path.to_string())(e)),
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Ok(None);
        }
        let blob = self.git.find_blob(entry.id()).map_err(read(path.to_string()))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Paths of the files under `dir` ("" = root) at `commit`, recursively, sorted. A `dir`
    /// that does not exist has no files.
    pub fn list_files(&self, commit: Oid, dir: &str) -> Result<Vec<String>, Error> {
        let read = |what: &str| {
            let what = what.to_string();
            move |source| Error::Read {
                remote: self.safe_remote(),
                commit,
                what,
                source,
            }
        };
        let root = self.tree_of(commit).map_err(read("the tree"))?;
        let dir = dir.trim_matches('/');
        let tree = if dir.is_empty() {
            root
        } else {
            match root.get_path(Path::new(dir)) {
                Ok(entry) if entry.kind() == Some(ObjectType::Tree) => {
                    self.git.find_tree(entry.id()).map_err(read(dir))?
                }
                Ok(_) => return Ok(Vec::new()),
                Err(e) if e.code() == ErrorCode::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(read(dir)(e)),
            }
        };
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut files = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                files.push(format!(
                    "{prefix}{parent}{}",
                    String::from_utf8_lossy(entry.name_bytes())
                ));
            }
            TreeWalkResult::Ok
        })
        .map_err(read(dir))?;
        files.sort();
        Ok(files)
    }

    /// Paths of the files that differ between `from` and `to` under `dir` ("" = root),
    /// sorted: added, changed and deleted files alike.
    pub fn changed_files(&self, from: Oid, to: Oid, dir: &str) -> Result<Vec<String>, Error> {
        let read = |source| Error::Read {
            remote: self.safe_remote(),
            commit: to,
            what: format!("the changes under {dir:?}"),
            source,
        };
        let old = self.tree_of(from).map_err(read)?;
        let new = self.tree_of(to).map_err(read)?;
        let mut options = git2::DiffOptions::new();
        let dir = dir.trim_matches('/');
        if !dir.is_empty() {
            options.pathspec(dir);
        }
        let diff = self
            .git
            .diff_tree_to_tree(Some(&old), Some(&new), Some(&mut options))
            .map_err(read)?;
        let mut files: Vec<String> = diff
            .deltas()
            .filter_map(|d| d.new_file().path().or_else(|| d.old_file().path()))
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// A commit on `parent` (None: root commit) writing (Some) or deleting (None) files, made
    /// now. Creates objects only; moves no ref.
    pub fn commit(
        &self,
        parent: Option<Oid>,
        changes: &[(String, Option<Vec<u8>>)],
        message: &str,
        author: &Author,
    ) -> Result<Oid, Error> {
        self.commit_at(parent, changes, message, author, None)
    }

    /// `commit` with an explicit author and committer `time` (seconds since the epoch, UTC);
    /// None = now.
    pub fn commit_at(
        &self,
        parent: Option<Oid>,
        changes: &[(String, Option<Vec<u8>>)],
        message: &str,
        author: &Author,
        time: Option<i64>,
    ) -> Result<Oid, Error> {
        self.build_commit(parent, changes, message, author, time, None)
    }

    /// `commit_at`, signed with an SSH key the way `git commit -S` with `gpg.format=ssh` signs
    /// (an SSHSIG over the commit in its `gpgsig` header), so forges show it as verified.
    pub fn commit_signed(
        &self,
        parent: Option<Oid>,
        changes: &[(String, Option<Vec<u8>>)],
        message: &str,
        author: &Author,
        time: Option<i64>,
        signer: &Signer,
    ) -> Result<Oid, Error> {
        self.build_commit(parent, changes, message, author, time, Some(signer))
    }

    fn build_commit(
        &self,
        parent: Option<Oid>,
        changes: &[(String, Option<Vec<u8>>)],
        message: &str,
        author: &Author,
        time: Option<i64>,
        signer: Option<&Signer>,
    ) -> Result<Oid, Error> {
        // Deleting what is not there is a no-op, not an error (idempotent writes).
        let mut draft = Draft::new(&self.git, parent).map_err(|source| Error::Commit {
            remote: self.safe_remote(),
            source,
        })?;
        self.commit_in(&mut draft, changes, message, author, time, signer)
    }

    /// The tree of `head` held in memory, for a batch of commits built one on the other with
    /// [`Repo::commit_on`] (None: the branch has no commit yet).
    pub fn draft(&self, head: Option<Oid>) -> Result<Draft, Error> {
        Draft::new(&self.git, head).map_err(|source| Error::Read {
            remote: self.safe_remote(),
            commit: head.unwrap_or(Oid::ZERO_SHA1),
            what: "the tree".to_string(),
            source,
        })
    }

    /// The content of the file at `path` in the draft's tree; None if there is no file there.
    pub fn read_draft(&self, draft: &mut Draft, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let commit = draft.head().unwrap_or(Oid::ZERO_SHA1);
        let read = |source| Error::Read {
            remote: self.safe_remote(),
            commit,
            what: path.to_string(),
            source,
        };
        let blob = draft.blob(&self.git, path.trim_matches('/')).map_err(read)?;
        blob.map(|id| self.git.find_blob(id).map(|b| b.content().to_vec()))
            .transpose()
            .map_err(read)
    }

    /// `commit` (or `commit_signed`, with a signer) on the draft's head, built in the draft:
    /// only the changed files and the trees on their paths are written. The draft then holds
    /// the new commit. Creates objects only; moves no ref.
    pub fn commit_on(
        &self,
        draft: &mut Draft,
        changes: &[(String, Option<Vec<u8>>)],
        message: &str,
        author: &Author,
        signer: Option<&Signer>,
    ) -> Result<Oid, Error> {
        self.commit_in(draft, changes, message, author, None, signer)
    }

    /// `commit_on` with an explicit time (None = now).
    fn commit_in(
        &self,
        draft: &mut Draft,
        changes: &[(String, Option<Vec<u8>>)],
        message: &str,
        author: &Author,
        time: Option<i64>,
        signer: Option<&Signer>,
    ) -> Result<Oid, Error> {
        let mut build = || -> Result<Oid, git2::Error> {
            for (path, content) in changes {
                let blob = content
                    .as_ref()
                    .map(|bytes| self.put(pack::Kind::Blob, bytes, None))
                    .transpose()?;
                draft.set(&self.git, path.trim_matches('/'), blob)?;
            }
            let tree = draft.write_tree(self)?;
            let commit = self.write_commit(draft.head(), tree, message, author, time, signer)?;
            draft.advance(commit);
            Ok(commit)
        };
        build().map_err(|source| Error::Commit {
            remote: self.safe_remote(),
            source,
        })
    }

    /// Writes an object (to memory until the next `store`). `path` names the directory a
    /// tree is of, for its next version to be stored as a delta against it.
    fn put(&self, kind: pack::Kind, bytes: &[u8], path: Option<&str>) -> Result<Oid, git2::Error> {
        let id = self.git.odb()?.write(object_type(kind), bytes)?;
        self.note(id, kind, path, bytes.len());
        Ok(id)
    }

    fn note(&self, id: Oid, kind: pack::Kind, path: Option<&str>, size: usize) {
        let mut unstored = self.unstored.borrow_mut();
        if unstored.seen.insert(id) {
            unstored.objects.push((id, kind, path.map(str::to_string)));
            unstored.bytes += size;
        }
    }

    /// Bytes of the objects made since the last [`Repo::store`], held in memory.
    pub fn unstored_bytes(&self) -> usize {
        self.unstored.borrow().bytes
    }

    /// Writes the objects made since the last call into the clone's object database: one
    /// pack file (loose files when there are only a few), then frees the memory they took.
    /// [`Repo::push`] calls it first. Nothing points at them until a push records its head,
    /// so a crash midway leaves at most an unreferenced pack.
    pub fn store(&mut self) -> Result<(), Error> {
        let objects = std::mem::take(self.unstored.get_mut());
        if objects.objects.is_empty() {
            return Ok(());
        }
        let stored = write_objects(&self.git, &self.path, &objects.objects).and_then(|()| {
            if let Err(error) = merge_packs(&self.path) {
                // The objects are stored either way; the packs are merged at a later store.
                tracing::warn!(path = %self.path.display(), error = %error.message(), "cannot merge the packs of the cache clone");
            }
            open_in_memory(&self.path)
        });
        match stored {
            Ok(fresh) => {
                // The old handle and the memory it held go.
                self.git = fresh;
                Ok(())
            }
            Err(source) => {
                // Still in memory: the next store tries again.
                *self.unstored.get_mut() = objects;
                Err(Error::Store {
                    remote: self.safe_remote(),
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// The commit object of `tree` on `parent`, signed when a signer is given.
    fn write_commit(
        &self,
        parent: Option<Oid>,
        tree: Oid,
        message: &str,
        author: &Author,
        time: Option<i64>,
        signer: Option<&Signer>,
    ) -> Result<Oid, git2::Error> {
        // Checks the name and email as libgit2 does (no angle brackets, not empty).
        let signature = match time {
            Some(seconds) => Signature::new(&author.name, &author.email, &Time::new(seconds, 0))?,
            None => Signature::now(&author.name, &author.email)?,
        };
        // Written from the ids: the tree and parent need not be read back and parsed.
        let content = commit_text(tree, parent, &signature, message);
        let Some(signer) = signer else {
            return self.put(pack::Kind::Commit, content.as_bytes(), None);
        };
        let armored = signer.sign(content.as_bytes())?;
        // Without the final newline: libgit2 would write it as an empty continuation line,
        // which git itself never writes.
        let armored = armored.trim_end_matches('\n');
        let id = self.git.commit_signed(&content, armored, Some("gpgsig"))?;
        self.note(id, pack::Kind::Commit, None, content.len() + armored.len());
        Ok(id)
    }

    /// Pushes `commit` (a descendant of the fetched head) to the branch. Never forces: a
    /// non-fast-forward or a server-side rejection is `Ok(Push::Rejected)`, not an error.
    pub fn push(&mut self, commit: Oid) -> Result<Push, Error> {
        // The push reads the objects from the clone on disk, with a handle of its own.
        self.store()?;
        if let Some(head) = self.head
            && head != commit
            && !self.git.graph_descendant_of(commit, head).unwrap_or(false)
        {
            return Ok(Push::Rejected {
                reason: format!("{commit} is not a descendant of the fetched head {head}"),
            });
        }
        self.git
            .reference(PUSH_REF, commit, true, "flaggit: push")
            .map_err(|e| Error::Push {
                remote: self.safe_remote(),
                message: format!("cannot point {PUSH_REF} at {commit}: {}", e.message()),
            })?;
        let refspec = format!("{PUSH_REF}:refs/heads/{}", self.remote.branch);
        let url = self.remote.url.clone();
        let (rejected, said) = self
            .network_saying("push to", move |repo, mut callbacks| {
                let refused: Arc<Mutex<Option<String>>> = Arc::default();
                let seen = Arc::clone(&refused);
                callbacks.push_update_reference(move |name, status| {
                    if let Some(status) = status {
                        *lock(&seen) = Some(format!("{name}: {status}"));
                    }
                    Ok(())
                });
                let mut remote = repo.remote_anonymous(&url)?;
                let mut options = PushOptions::new();
                options.remote_callbacks(callbacks);
                match remote.push(&[&refspec], Some(&mut options)) {
                    Ok(()) => Ok(lock(&refused).take()),
                    Err(e) if e.code() == ErrorCode::NotFastForward => Ok(Some(e.message().to_string())),
                    Err(e) => Err(e),
                }
            })
            .map_err(|failure| self.network_error(failure, "push"))?;
        if let Some(reason) = rejected {
            let said = remote_lines(&said);
            let reason = if said.is_empty() {
                reason
            } else {
                format!("{reason}; the remote said: {said}")
            };
            let reason = self.redact(&reason);
            return Ok(if is_refusal(&reason) {
                Push::Refused { reason }
            } else {
                Push::Rejected { reason }
            });
        }
        self.set_tracking(Some(commit)).map_err(|e| Error::Push {
            remote: self.safe_remote(),
            message: format!("pushed, but cannot record the new head: {}", e.message()),
        })?;
        self.own_pushes.insert(self.remote.branch.clone(), commit);
        Ok(Push::Pushed)
    }

    /// Whether the remote answers (connects and lists its refs, as `git ls-remote` does),
    /// giving up after `timeout` without progress: a cheap look while records wait for it.
    pub fn probe(&mut self, timeout: Duration) -> Result<(), Error> {
        let url = self.remote.url.clone();
        let usual = self.stall_timeout;
        self.stall_timeout = usual.min(timeout);
        let answered = self
            .network("probe", move |repo, callbacks| {
                let mut remote = repo.remote_anonymous(&url)?;
                remote.connect_auth(git2::Direction::Fetch, Some(callbacks), None)?;
                remote.list()?;
                Ok(())
            })
            .map_err(|failure| self.network_error(failure, "probe"));
        self.stall_timeout = usual;
        answered
    }

    /// Commits reachable from `from` (first-parent), newest first, at most `limit`.
    pub fn log(&self, from: Oid, limit: usize) -> Result<Vec<CommitInfo>, Error> {
        let read = |source| Error::Read {
            remote: self.safe_remote(),
            commit: from,
            what: "the history".to_string(),
            source,
        };
        let mut walk = self.git.revwalk().map_err(read)?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(read)?;
        walk.simplify_first_parent().map_err(read)?;
        walk.push(from).map_err(read)?;
        let mut commits = Vec::new();
        for id in walk.take(limit) {
            let commit = self.git.find_commit(id.map_err(read)?).map_err(read)?;
            let author = commit.author();
            commits.push(CommitInfo {
                id: commit.id(),
                message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
                author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
                email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
                time: author.when().seconds(),
            });
        }
        Ok(commits)
    }

    /// Every commit reachable from `from` (all parents, not only the first: records on merged
    /// release branches count), newest first, at most `limit`, with whether each is a merge.
    pub fn log_all(&self, from: Oid, limit: usize) -> Result<Vec<(CommitInfo, bool)>, Error> {
        self.log_all_since(from, None, limit)
    }

    /// Whether `commit` is `ancestor` or comes after it.
    pub fn descends_from(&self, commit: Oid, ancestor: Oid) -> bool {
        commit == ancestor || self.git.graph_descendant_of(commit, ancestor).unwrap_or(false)
    }

    /// As [`Repo::log_all`], without the commits reachable from `since`: what came after it.
    pub fn log_all_since(
        &self,
        from: Oid,
        since: Option<Oid>,
        limit: usize,
    ) -> Result<Vec<(CommitInfo, bool)>, Error> {
        let read = |source| Error::Read {
            remote: self.safe_remote(),
            commit: from,
            what: "the history".to_string(),
            source,
        };
        let mut walk = self.git.revwalk().map_err(read)?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(read)?;
        walk.push(from).map_err(read)?;
        if let Some(since) = since {
            walk.hide(since).map_err(read)?;
        }
        let mut commits = Vec::new();
        for id in walk.take(limit) {
            let commit = self.git.find_commit(id.map_err(read)?).map_err(read)?;
            let author = commit.author();
            let info = CommitInfo {
                id: commit.id(),
                message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
                author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
                email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
                time: author.when().seconds(),
            };
            commits.push((info, commit.parent_count() > 1));
        }
        Ok(commits)
    }

    /// The commits reachable from `from` but not from `since` that change `path` (a file or
    /// directory; "" is the whole tree), newest first, at most `limit`: the commits that
    /// brought a new revision of a target. Merge commits are left out (they bring others'
    /// commits, which are listed themselves), and so are commits for which `skip` (given the
    /// message) says yes. A `since` this clone does not have bounds nothing; `limit` does.
    pub fn commits_touching(
        &self,
        from: Oid,
        since: Option<Oid>,
        path: &str,
        limit: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Result<Vec<CommitInfo>, Error> {
        let read = |source| Error::Read {
            remote: self.safe_remote(),
            commit: from,
            what: format!("the history of {path}"),
            source,
        };
        let mut walk = self.git.revwalk().map_err(read)?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(read)?;
        walk.push(from).map_err(read)?;
        if let Some(since) = since
            && self.git.find_commit(since).is_ok()
        {
            walk.hide(since).map_err(read)?;
        }
        let entry_at = |tree: &git2::Tree<'_>| -> Option<Oid> {
            if path.is_empty() {
                return Some(tree.id());
            }
            tree.get_path(Path::new(path)).ok().map(|e| e.id())
        };
        let mut commits = Vec::new();
        // Walk a bounded stretch of history even when few commits match.
        for id in walk.take(limit.saturating_mul(20)) {
            let commit = self.git.find_commit(id.map_err(read)?).map_err(read)?;
            if commit.parent_count() > 1 {
                continue;
            }
            let here = entry_at(&commit.tree().map_err(read)?);
            let before = match commit.parent(0) {
                Ok(parent) => entry_at(&parent.tree().map_err(read)?),
                Err(_) => None,
            };
            let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
            if here == before || skip(&message) {
                continue;
            }
            let author = commit.author();
            commits.push(CommitInfo {
                id: commit.id(),
                message,
                author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
                email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
                time: author.when().seconds(),
            });
            if commits.len() >= limit {
                break;
            }
        }
        Ok(commits)
    }

    fn tree_of(&self, commit: Oid) -> Result<git2::Tree<'_>, git2::Error> {
        self.git.find_commit(commit)?.tree()
    }

    fn tracking_ref(&self) -> String {
        format!("{TRACKING_PREFIX}{}", self.remote.branch)
    }

    fn set_tracking(&mut self, head: Option<Oid>) -> Result<(), git2::Error> {
        let name = self.tracking_ref();
        match head {
            Some(id) => {
                self.git.reference(&name, id, true, "flaggit: remote head")?;
            }
            None => {
                if let Ok(mut reference) = self.git.find_reference(&name) {
                    reference.delete()?;
                }
            }
        }
        self.head = head;
        Ok(())
    }

    fn safe_remote(&self) -> String {
        format!("{}#{}", safe_url(&self.remote.url), self.remote.branch)
    }

    /// Removes every secret of the credentials from `text`.
    fn redact(&self, text: &str) -> String {
        redact(text, &self.remote.url, &self.credentials)
    }

    /// Runs `job` on a worker thread with its own handle on the cache clone, and gives up once
    /// it has shown no progress for the stall timeout. libgit2's own timeouts are process-wide
    /// settings behind an `unsafe` call, which this crate forbids. A worker given up on keeps
    /// its thread until the socket fails; its callbacks refuse to go on.
    fn network<T: Send + 'static>(
        &self,
        operation: &'static str,
        job: impl FnOnce(&Repository, RemoteCallbacks<'static>) -> Result<T, git2::Error> + Send + 'static,
    ) -> Result<T, NetworkFailure> {
        self.network_saying(operation, job).map(|(value, _)| value)
    }

    /// `network`, and what the server printed on the way (its hooks' `remote:` lines).
    fn network_saying<T: Send + 'static>(
        &self,
        operation: &'static str,
        job: impl FnOnce(&Repository, RemoteCallbacks<'static>) -> Result<T, git2::Error> + Send + 'static,
    ) -> Result<(T, String), NetworkFailure> {
        let session = Arc::new(Session::new());
        lock(&self.said).clear();
        let said = Arc::clone(&session);
        let _heard = Heard {
            from: said,
            into: &self.said,
        };
        let (send, receive) = mpsc::channel();
        let path = self.path.clone();
        let callbacks_session = Arc::clone(&session);
        let credentials = self.credentials.clone();
        let url = self.remote.url.clone();
        let tally = self.network_cpu.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("git-{}", operation.replace(' ', "-")))
            .spawn(move || {
                let watch = super::cpu::Stopwatch::start();
                let result = Repository::open_bare(&path)
                    .and_then(|repo| job(&repo, callbacks(callbacks_session, credentials, &url)));
                tally.add(watch.elapsed());
                let _ = send.send(result);
            });
        if let Err(e) = spawned {
            return Err(NetworkFailure::Git(git2::Error::from_str(&format!(
                "cannot start a worker thread: {e}"
            ))));
        }
        loop {
            match receive.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(value)) => return Ok((value, lock(&session.said).clone())),
                Ok(Err(e)) => {
                    return Err(match lock(&session.failure).take() {
                        Some(failure) => failure,
                        None => NetworkFailure::Git(e),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if session.idle() >= self.stall_timeout {
                        session.cancelled.store(true, Ordering::Relaxed);
                        return Err(NetworkFailure::Stalled);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(NetworkFailure::Git(git2::Error::from_str(
                        "the network worker stopped without an answer",
                    )));
                }
            }
        }
    }

    fn network_error(&self, failure: NetworkFailure, operation: &'static str) -> Error {
        let remote = self.safe_remote();
        match failure {
            NetworkFailure::Auth(message) => Error::Auth {
                remote,
                message: self.redact(&message),
            },
            NetworkFailure::HostKey(message) => Error::HostKey {
                remote,
                message: self.redact(&message),
            },
            NetworkFailure::Stalled => Error::Timeout {
                remote,
                operation,
                after: self.stall_timeout,
            },
            NetworkFailure::Git(e) => {
                let message = self.redact(e.message());
                match e.code() {
                    ErrorCode::Auth => Error::Auth { remote, message },
                    ErrorCode::Certificate => Error::HostKey { remote, message },
                    _ if operation == "push" => Error::Push { remote, message },
                    _ => Error::Fetch { remote, message },
                }
            }
        }
    }
}

/// The objects in memory since the last store.
#[derive(Debug, Default)]
struct Unstored {
    objects: Vec<(Oid, pack::Kind, Option<String>)>,
    seen: HashSet<Oid>,
    bytes: usize,
}

impl Trees for Repo {
    fn put_tree(&self, path: &str, bytes: &[u8]) -> Result<Oid, git2::Error> {
        self.put(pack::Kind::Tree, bytes, Some(path))
    }
}

fn object_type(kind: pack::Kind) -> ObjectType {
    match kind {
        pack::Kind::Commit => ObjectType::Commit,
        pack::Kind::Tree => ObjectType::Tree,
        pack::Kind::Blob => ObjectType::Blob,
    }
}

/// A handle on the clone at `path` whose new objects go to memory.
fn open_in_memory(path: &Path) -> Result<Repository, git2::Error> {
    let git = Repository::open_bare(path)?;
    one_delta_base(&git)?;
    git.odb()?.add_new_mempack_backend(MEMORY_PRIORITY)?;
    Ok(git)
}

/// Writes `objects` (read through `git`, which holds them in memory) into the object
/// database of the clone at `path`: one pack, each tree a delta against the previous version
/// of its directory, indexed by libgit2; or loose files when there are few.
fn write_objects(
    git: &Repository,
    path: &Path,
    objects: &[(Oid, pack::Kind, Option<String>)],
) -> Result<(), git2::Error> {
    let memory = git.odb()?;
    // A handle without the in-memory store: what it writes goes to disk.
    let disk = Repository::open_bare(path)?;
    let disk_odb = disk.odb()?;
    if objects.len() < LOOSE_BELOW {
        for (id, ..) in objects {
            let object = memory.read(*id)?;
            disk_odb.write(object.kind(), object.data())?;
        }
        return Ok(());
    }
    let mut pack = PackWriter::default();
    let mut last: HashMap<&str, (pack::Placed, Vec<u8>)> = HashMap::new();
    for (id, kind, dir) in objects {
        let object = memory.read(*id)?;
        let data = object.data();
        match dir {
            Some(dir) => {
                let placed = match last.get(dir.as_str()) {
                    Some((base, base_data)) => pack.add_version(*kind, data, *base, base_data),
                    None => pack.add(*kind, data),
                };
                last.insert(dir, (placed, data.to_vec()));
            }
            None => {
                pack.add(*kind, data);
            }
        }
    }
    let bytes = pack.finish();
    let mut writer = disk_odb.packwriter()?;
    writer
        .write_all(&bytes)
        .map_err(|e| git2::Error::from_str(&format!("cannot write the pack: {e}")))?;
    writer.commit()?;
    Ok(())
}

/// Packs in a clone beyond which the two smallest are merged even when their sizes already
/// grow geometrically.
const MERGE_ABOVE: usize = 16;

/// Merges the smaller packs of the clone at `path` into one, as git's geometric repack does:
/// each pack kept holds at least twice the bytes of all smaller ones together, so a clone
/// written to for months has a few dozen packs, not one per batch, and every byte is merged
/// a few times at most. The packs are concatenated (offset deltas stay valid, since each
/// pack's entries stay together) and indexed again by libgit2.
fn merge_packs(path: &Path) -> Result<(), git2::Error> {
    let io = |e: std::io::Error| git2::Error::from_str(&format!("cannot merge packs: {e}"));
    let dir = path.join("objects").join("pack");
    let mut packs: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .filter(|p| p.with_extension("idx").exists() && !p.with_extension("keep").exists())
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.len(), p)))
        .collect();
    if packs.len() < 2 {
        return Ok(());
    }
    packs.sort();
    let below: Vec<u64> = packs
        .iter()
        .scan(0u64, |sum, (size, _)| {
            let before = *sum;
            *sum += size;
            Some(before)
        })
        .collect();
    let mut keep_from = packs.len();
    while keep_from > 0 && packs[keep_from - 1].0 >= 2 * below[keep_from - 1] {
        keep_from -= 1;
    }
    let merging = match keep_from {
        2.. => &packs[..keep_from],
        // Already a progression; past the bound, the two smallest go together.
        _ if packs.len() > MERGE_ABOVE => &packs[..2],
        _ => return Ok(()),
    };
    let mut count: u32 = 0;
    for (_, pack) in merging {
        let mut header = [0u8; 12];
        std::io::Read::read_exact(&mut std::fs::File::open(pack).map_err(io)?, &mut header).map_err(io)?;
        if &header[..4] != b"PACK" || header[4..8] != 2u32.to_be_bytes() {
            return Err(git2::Error::from_str(&format!(
                "{} is not a version 2 pack",
                pack.display()
            )));
        }
        count += u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    }
    let disk = Repository::open_bare(path)?;
    let odb = disk.odb()?;
    let mut writer = odb.packwriter()?;
    let mut sum = sha1::Sha1::new();
    let mut out = |bytes: &[u8]| -> Result<(), git2::Error> {
        sum.update(bytes);
        writer.write_all(bytes).map_err(io)
    };
    let mut header = b"PACK".to_vec();
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&count.to_be_bytes());
    out(&header)?;
    for (_, pack) in merging {
        let bytes = std::fs::read(pack).map_err(io)?;
        out(&bytes[12..bytes.len() - 20])?;
    }
    let trailer = sum.finalize();
    writer.write_all(&trailer).map_err(io)?;
    writer.commit()?;
    for (_, pack) in merging {
        // The index first: a pack without one is not read.
        std::fs::remove_file(pack.with_extension("idx")).map_err(io)?;
        std::fs::remove_file(pack).map_err(io)?;
    }
    Ok(())
}

/// A commit object's text, as libgit2 writes it: tree, parent, author and committer (both
/// `who`), a blank line, the message as given.
fn commit_text(tree: Oid, parent: Option<Oid>, who: &Signature<'_>, message: &str) -> String {
    let when = who.when();
    let offset = when.offset_minutes();
    let sign = if offset < 0 || when.sign() == '-' {
        '-'
    } else {
        '+'
    };
    let offset = offset.unsigned_abs();
    let line = format!(
        "{} <{}> {} {sign}{:02}{:02}",
        String::from_utf8_lossy(who.name_bytes()),
        String::from_utf8_lossy(who.email_bytes()),
        when.seconds(),
        offset / 60,
        offset % 60
    );
    let mut text = String::with_capacity(256 + message.len());
    text.push_str(&format!("tree {tree}\n"));
    if let Some(parent) = parent {
        text.push_str(&format!("parent {parent}\n"));
    }
    text.push_str(&format!("author {line}\ncommitter {line}\n\n"));
    text.push_str(message);
    text
}

/// Makes a push try one delta base per object (`pack.windowMemory`, read by libgit2's pack
/// builder), not ten. A batch pushes many versions of the same ledger directory, and the
/// previous version, next in the builder's order, is the best base; ten tries over a
/// thousand-entry tree cost more than the push itself.
fn one_delta_base(git: &Repository) -> Result<(), git2::Error> {
    const KEY: &str = "pack.windowMemory";
    let mut config = git.config()?;
    if config.get_i64(KEY).ok() != Some(1) {
        config.set_i64(KEY, 1)?;
    }
    Ok(())
}

/// Copies what the remote printed into the repository's record when a network call ends,
/// however it ends.
struct Heard<'a> {
    from: Arc<Session>,
    into: &'a Mutex<String>,
}

impl Drop for Heard<'_> {
    fn drop(&mut self) {
        *lock(self.into) = lock(&self.from.said).clone();
    }
}

/// The remote's messages on one line: progress counters dropped, `remote:` prefixes and
/// blank lines removed.
fn remote_lines(said: &str) -> String {
    said.split(['\n', '\r'])
        .map(|l| l.trim().trim_start_matches("remote:").trim())
        .filter(|l| !l.is_empty())
        .filter(|l| !l.contains('%') || l.contains("error"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a network job failed, as its callbacks saw it.
enum NetworkFailure {
    Auth(String),
    HostKey(String),
    Stalled,
    Git(git2::Error),
}

/// What the callbacks of one network job share with the thread waiting for it.
struct Session {
    start: Instant,
    /// Milliseconds after `start` of the last sign of progress.
    last_activity: AtomicU64,
    cancelled: AtomicBool,
    failure: Mutex<Option<NetworkFailure>>,
    /// What the remote printed (`remote: ...` lines: hook output, protection rules), bounded.
    said: Mutex<String>,
}

impl Session {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_activity: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            failure: Mutex::new(None),
            said: Mutex::new(String::new()),
        }
    }

    /// Keeps the first few KiB of what the remote printed.
    fn hear(&self, data: &[u8]) {
        let mut said = lock(&self.said);
        if said.len() < 4096 {
            said.push_str(&String::from_utf8_lossy(data));
        }
    }

    /// Records progress; false once the waiter gave up, which makes libgit2 stop.
    fn touch(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(now, Ordering::Relaxed);
        !self.cancelled.load(Ordering::Relaxed)
    }

    fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_activity.load(Ordering::Relaxed)))
    }

    fn fail(&self, failure: NetworkFailure) -> git2::Error {
        let message = match &failure {
            NetworkFailure::Auth(m) | NetworkFailure::HostKey(m) => m.clone(),
            NetworkFailure::Stalled => "stalled".to_string(),
            NetworkFailure::Git(e) => e.message().to_string(),
        };
        *lock(&self.failure) = Some(failure);
        git2::Error::from_str(&message)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The callbacks of one network job: credentials answered once, SSH host keys checked against
/// `known_hosts`, and every sign of progress reported to `session`.
fn callbacks(session: Arc<Session>, credentials: Credentials, url: &str) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let port = url_port(url);

    let on_credentials = Arc::clone(&session);
    let key_credentials = credentials.clone();
    let mut answered = false;
    callbacks.credentials(move |_url, username_from_url, allowed| {
        on_credentials.touch();
        let ssh_user = || match &key_credentials {
            Credentials::Ssh {
                username: Some(name), ..
            } => name.clone(),
            _ => username_from_url.unwrap_or("git").to_string(),
        };
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&ssh_user());
        }
        // libgit2 asks again after a refused answer, forever: one answer only.
        if answered {
            return Err(on_credentials.fail(NetworkFailure::Auth(
                "the remote refused the credentials".to_string(),
            )));
        }
        answered = true;
        match &key_credentials {
            Credentials::Basic { username, password }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, password)
            }
            Credentials::Ssh {
                identity, passphrase, ..
            } if allowed.intersects(CredentialType::SSH_KEY | CredentialType::SSH_MEMORY) => {
                Cred::ssh_key_from_memory(&ssh_user(), None, identity, passphrase.as_deref())
            }
            Credentials::None => Err(on_credentials.fail(NetworkFailure::Auth(
                "the remote asks for credentials and none are configured".to_string(),
            ))),
            given => Err(on_credentials.fail(NetworkFailure::Auth(format!(
                "the remote asks for {allowed:?} credentials, the Secret holds {}",
                match given {
                    Credentials::Basic { .. } => "a username and password",
                    Credentials::Ssh { .. } => "an SSH key",
                    Credentials::None => "none",
                }
            )))),
        }
    });

    let on_certificate = Arc::clone(&session);
    let known_hosts = match &credentials {
        Credentials::Ssh { known_hosts, .. } => known_hosts.clone(),
        _ => String::new(),
    };
    callbacks.certificate_check(move |cert, host| {
        on_certificate.touch();
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: the system trust store decides, as for any HTTPS client.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = hostkey.hostkey() else {
            return Err(on_certificate.fail(NetworkFailure::HostKey(
                "the server's raw host key is not available to compare".to_string(),
            )));
        };
        match check_host_key(&known_hosts, host, port, key) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(message) => Err(on_certificate.fail(NetworkFailure::HostKey(message))),
        }
    });

    let on_transfer = Arc::clone(&session);
    callbacks.transfer_progress(move |_| on_transfer.touch());
    let on_sideband = Arc::clone(&session);
    callbacks.sideband_progress(move |data| {
        on_sideband.hear(data);
        on_sideband.touch()
    });
    let on_pack = Arc::clone(&session);
    callbacks.pack_progress(move |_, _, _| {
        on_pack.touch();
    });
    let on_push = session;
    callbacks.push_transfer_progress(move |_, _, _| {
        on_push.touch();
    });
    callbacks
}

/// Accepts `key` (the raw SSH host key) for `host` on `port` when a `known_hosts` line names
/// the host (`host` on port 22, `[host]:port` otherwise; `*`/`?` patterns and `!` negations)
/// with that key. `@revoked` keys are refused; hashed (`|1|`) hosts are understood; `@cert-authority` lines are
/// not understood and skipped.
pub fn check_host_key(known_hosts: &str, host: &str, port: u16, key: &[u8]) -> Result<(), String> {
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut host_listed = false;
    for line in known_hosts.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (marker, hosts) = match fields.next() {
            Some(marker) if marker.starts_with('@') => (Some(marker), fields.next()),
            hosts => (None, hosts),
        };
        let (Some(hosts), Some(_key_type), Some(encoded)) = (hosts, fields.next(), fields.next()) else {
            continue;
        };
        if marker == Some("@cert-authority") || !hosts_match(hosts, &name) {
            continue;
        }
        let Ok(listed) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        if listed != key {
            host_listed = true;
            continue;
        }
        if marker == Some("@revoked") {
            return Err(format!(
                "the host key of {name} is marked @revoked in known_hosts"
            ));
        }
        if marker.is_none() {
            return Ok(());
        }
    }
    if known_hosts.trim().is_empty() {
        Err("known_hosts is empty, so no server can be trusted".to_string())
    } else if host_listed {
        Err(format!(
            "the key {name} presented differs from its known_hosts entries: the server's key changed, or this is not that server"
        ))
    } else {
        Err(format!("known_hosts has no entry for {name}"))
    }
}

/// Whether a known_hosts host field names `name`: a comma-separated pattern list, or a hashed
/// entry.
fn hosts_match(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_host_match(hashed, name);
    }
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pattern, name) {
            matched = true;
        }
    }
    matched
}

/// A hashed host (`ssh-keygen -H`, `HashKnownHosts yes`): `base64(salt)|base64(HMAC-SHA1(salt,
/// name))`.
fn hashed_host_match(salt_and_hash: &str, name: &str) -> bool {
    use hmac::Mac;
    let engine = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH host pattern matching: `*` any run, `?` one character, case-insensitive.
fn glob(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
    let name: Vec<char> = name.to_lowercase().chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, n));
            p += 1;
        } else if let Some((star, at)) = backtrack {
            p = star + 1;
            n = at + 1;
            backtrack = Some((star, at + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// The authority part of a URL (`user:pass@host:port` of `scheme://authority/path`), or of the
/// scp-like form `user@host:path`.
fn authority(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest),
        None => url.split(':').next().unwrap_or(url),
    }
}

/// The SSH port of `url`: the explicit one of `ssh://host:port/`, else 22.
fn url_port(url: &str) -> u16 {
    let host_port = authority(url).rsplit('@').next().unwrap_or_default();
    let port = match host_port.rsplit_once("]:") {
        Some((_, port)) => Some(port),
        None if !host_port.starts_with('[') => host_port.split_once(':').map(|(_, port)| port),
        None => None,
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// `url` as errors and logs may show it: see `crate::redact::url`.
pub fn safe_url(url: &str) -> String {
    crate::redact::url(url)
}

/// `text` with every secret of `credentials` and of `url`'s userinfo replaced.
fn redact(text: &str, url: &str, credentials: &Credentials) -> String {
    let mut secrets: Vec<&str> = Vec::new();
    if let Some((_, password)) = authority(url)
        .rsplit_once('@')
        .and_then(|(info, _)| info.split_once(':'))
    {
        secrets.push(password);
    }
    match credentials {
        Credentials::None => {}
        Credentials::Basic { password, .. } => secrets.push(password),
        Credentials::Ssh {
            identity, passphrase, ..
        } => {
            secrets.push(identity);
            secrets.extend(passphrase.as_deref());
        }
    }
    // Over HTTP the user part may be the token itself (`https://TOKEN@host/`).
    if !url.starts_with("ssh://")
        && let Some((userinfo, _)) = authority(url).rsplit_once('@')
        && url.contains("://")
    {
        secrets.push(userinfo.split(':').next().unwrap_or_default());
    }
    let mut text = crate::redact::text(text);
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    text
}

/// The cache directory name of `remote`: readable host and path, plus a hash of the URL
/// (password stripped) and branch so two remotes never share a clone.
fn cache_name(remote: &Remote) -> String {
    let url = safe_url(&remote.url);
    let digest = Sha256::digest(format!("{url}#{}", remote.branch).as_bytes());
    let readable: String = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{readable}-{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_url_strips_every_secret_of_the_userinfo() {
        assert_eq!(
            safe_url("https://bot:s3cret@git.example.com/org/repo.git"),
            "https://git.example.com/org/repo.git"
        );
        // A token written as the user is as secret as a password.
        assert_eq!(
            safe_url("https://token@git.example.com/r.git"),
            "https://git.example.com/r.git"
        );
        assert_eq!(safe_url("ssh://git@host:2222/r.git"), "ssh://git@host:2222/r.git");
        assert_eq!(safe_url("git@github.com:org/r.git"), "git@github.com:org/r.git");
        assert_eq!(safe_url("http://a:b:c@h/p"), "http://h/p");
    }

    #[test]
    fn rules_refusing_a_push_are_told_from_races() {
        for refusal in [
            "refs/heads/main: pre-receive hook declined",
            "refs/heads/main: hook declined",
            "refs/heads/main: protected branch hook declined",
            "refs/heads/main: pre-receive hook declined (error: GH006: Protected branch update failed for refs/heads/main.)",
            "GitLab: You are not allowed to push code to protected branches on this project.",
        ] {
            assert!(is_refusal(refusal), "{refusal}");
        }
        for race in [
            "refs/heads/main: non-fast-forward",
            "refs/heads/main: fetch first",
            "cannot push because a reference that you are trying to update on the remote contains commits that are not present locally.",
            "refs/heads/main: failed to update ref",
            "abc is not a descendant of the fetched head def",
        ] {
            assert!(!is_refusal(race), "{race}");
        }
    }

    #[test]
    fn url_port_reads_the_ssh_port() {
        assert_eq!(url_port("ssh://root@127.0.0.1:2222/srv/r.git"), 2222);
        assert_eq!(url_port("ssh://git@host/r.git"), 22);
        assert_eq!(url_port("git@github.com:org/r.git"), 22);
        assert_eq!(url_port("ssh://git@[::1]:2200/r.git"), 2200);
        assert_eq!(url_port("ssh://git@[::1]/r.git"), 22);
    }

    #[test]
    fn remote_messages_read_as_one_line_without_progress() {
        let said = "remote: Resolving deltas: 100% (2/2)\rremote: Resolving deltas: 100% (2/2), done.\nremote: error: commit 1234 is not signed\nremote: \n";
        assert_eq!(remote_lines(said), "error: commit 1234 is not signed");
        assert_eq!(remote_lines(""), "");
    }

    #[test]
    fn redact_removes_every_secret() {
        let credentials = Credentials::Basic {
            username: "bot".into(),
            password: "hunter2".into(),
        };
        assert_eq!(
            redact("bad hunter2 and pw", "https://u:pw@h/r", &credentials),
            "bad <redacted> and <redacted>"
        );
        assert_eq!(redact("plain", "https://h/r", &Credentials::None), "plain");
        // libgit2 may name the URL, or the user alone, in its message.
        let said = "could not read from https://ghp_TOKEN@h/r: user ghp_TOKEN denied";
        let got = redact(said, "https://ghp_TOKEN@h/r", &Credentials::None);
        assert!(!got.contains("ghp_TOKEN"), "{got}");
        assert_eq!(got, "could not read from https://h/r: user <redacted> denied");
    }

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .expect("valid base64")
    }

    #[test]
    fn host_key_matches_plain_and_bracketed_entries() {
        let plain = format!("github.com ssh-ed25519 {KEY}\n");
        assert_eq!(check_host_key(&plain, "github.com", 22, &key()), Ok(()));
        assert!(check_host_key(&plain, "gitlab.com", 22, &key()).is_err());
        // A plain entry is for port 22 only.
        assert!(check_host_key(&plain, "github.com", 2222, &key()).is_err());
        let bracketed = format!("# comment\n\n[127.0.0.1]:2222 ssh-ed25519 {KEY} root@box\n");
        assert_eq!(check_host_key(&bracketed, "127.0.0.1", 2222, &key()), Ok(()));
        assert!(check_host_key(&bracketed, "127.0.0.1", 22, &key()).is_err());
        let listed = format!("a.example,b.example,10.0.0.1 ssh-ed25519 {KEY}\n");
        assert_eq!(check_host_key(&listed, "b.example", 22, &key()), Ok(()));
    }

    #[test]
    fn host_key_refuses_other_keys_and_says_why() {
        let mut other = key();
        other[20] ^= 1;
        let known = format!("github.com ssh-ed25519 {KEY}\n");
        let refused = check_host_key(&known, "github.com", 22, &other).expect_err("key differs");
        assert!(refused.contains("differs"), "{refused}");
        let missing = check_host_key(&known, "example.com", 22, &key()).expect_err("no entry");
        assert!(missing.contains("no entry for example.com"), "{missing}");
        let empty = check_host_key("", "github.com", 22, &key()).expect_err("empty");
        assert!(empty.contains("empty"), "{empty}");
    }

    #[test]
    fn host_key_patterns_negations_and_markers() {
        let wildcard = format!("*.example.com,!evil.example.com ssh-ed25519 {KEY}\n");
        assert_eq!(check_host_key(&wildcard, "git.example.com", 22, &key()), Ok(()));
        assert!(check_host_key(&wildcard, "evil.example.com", 22, &key()).is_err());
        assert!(check_host_key(&wildcard, "example.com", 22, &key()).is_err());
        let revoked = format!("@revoked * ssh-ed25519 {KEY}\ngithub.com ssh-ed25519 {KEY}\n");
        assert!(check_host_key(&revoked, "github.com", 22, &key()).is_err());
        let authority = format!("@cert-authority github.com ssh-ed25519 {KEY}\n");
        assert!(check_host_key(&authority, "github.com", 22, &key()).is_err());
    }

    #[test]
    fn host_key_matches_hashed_entries() {
        // Written by `ssh-keygen -H` from `github.com ...` and `[127.0.0.1]:2222 ...` lines.
        let hashed = format!(
            "|1|ckeznjW0/X8jt1l57NTxfQoy3bY=|n9ktkif2csld+MVOVm68lzsoNU0= ssh-ed25519 {KEY}\n\
             |1|1jdmz9olj/eMzvI4HcErZOrIc2Y=|UoXlqCydUzLQSogE2OSEEXATb8Y= ssh-ed25519 {KEY}\n"
        );
        assert_eq!(check_host_key(&hashed, "github.com", 22, &key()), Ok(()));
        assert_eq!(check_host_key(&hashed, "127.0.0.1", 2222, &key()), Ok(()));
        assert!(check_host_key(&hashed, "gitlab.com", 22, &key()).is_err());
        assert!(check_host_key(&hashed, "127.0.0.1", 22, &key()).is_err());
        let garbage = format!("|1|not base64|!! ssh-ed25519 {KEY}\n|1|x ssh-ed25519 {KEY}\n");
        assert!(check_host_key(&garbage, "github.com", 22, &key()).is_err());
    }

    #[test]
    fn glob_matches_like_openssh() {
        assert!(glob("*", "anything"));
        assert!(glob("git?.example.com", "git1.example.com"));
        assert!(!glob("git?.example.com", "git.example.com"));
        assert!(glob("*.EXAMPLE.com", "a.b.example.com"));
        assert!(glob("[127.0.0.*]:22*", "[127.0.0.1]:2222"));
        assert!(!glob("a*b", "acbd"));
    }

    #[test]
    fn cache_names_differ_per_branch_and_hide_passwords() {
        let remote = |url: &str, branch: &str| Remote {
            url: url.into(),
            branch: branch.into(),
        };
        let main = cache_name(&remote("https://u:secret@git.example.com/org/r.git", "main"));
        let other = cache_name(&remote("https://u:secret@git.example.com/org/r.git", "prod"));
        assert_ne!(main, other);
        assert!(!main.contains("secret"), "{main}");
        assert!(main.starts_with("git.example.com_org_r.git-"), "{main}");
        // The password does not change which clone is used.
        assert_eq!(
            main,
            cache_name(&remote("https://u:rotated@git.example.com/org/r.git", "main"))
        );
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flaggit-repo-unit-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn local() -> (PathBuf, Repo) {
        let dir = scratch();
        let remote = Remote {
            url: "https://git.example.com/org/config.git".into(),
            branch: "main".into(),
        };
        let repo = Repo::open(&dir, remote, Credentials::None).expect("open");
        (dir, repo)
    }

    fn change(path: &str, content: Option<&str>) -> (String, Option<Vec<u8>>) {
        (path.to_string(), content.map(|c| c.as_bytes().to_vec()))
    }

    #[test]
    fn commits_build_trees_without_a_working_tree() {
        let (dir, repo) = local();
        let author = Author::default();
        let root = repo
            .commit_at(
                None,
                &[
                    change("a.yaml", Some("a: 1\n")),
                    change("apps/web/deploy.yaml", Some("kind: Deployment\n")),
                ],
                "first",
                &author,
                Some(1_700_000_000),
            )
            .expect("root commit");
        let second = repo
            .commit(
                Some(root),
                &[
                    change("a.yaml", None),
                    change("apps/web/svc.yaml", Some("kind: Service\n")),
                    change("missing.yaml", None),
                ],
                "second",
                &author,
            )
            .expect("second commit");
        assert_eq!(
            repo.read_file(root, "a.yaml").expect("read"),
            Some(b"a: 1\n".to_vec())
        );
        assert_eq!(repo.read_file(second, "a.yaml").expect("read"), None);
        assert_eq!(repo.read_file(second, "apps").expect("read a dir"), None);
        assert_eq!(
            repo.list_files(second, "").expect("list"),
            vec!["apps/web/deploy.yaml", "apps/web/svc.yaml"]
        );
        assert_eq!(
            repo.list_files(second, "apps/web/").expect("list"),
            vec!["apps/web/deploy.yaml", "apps/web/svc.yaml"]
        );
        assert!(repo.list_files(second, "nope").expect("list").is_empty());
        let log = repo.log(second, 10).expect("log");
        assert_eq!(
            log.iter().map(|c| c.message.as_str()).collect::<Vec<_>>(),
            ["second", "first"]
        );
        assert_eq!(log[1].time, 1_700_000_000);
        assert_eq!(log[0].author, author.name);
        assert_eq!(repo.log(second, 1).expect("log").len(), 1);
        // No ref moved: the cache has no head until something is fetched or pushed.
        assert_eq!(repo.head(), None);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn the_commits_of_a_revision_are_those_on_its_path_since_the_promotion() {
        let (dir, repo) = local();
        let person = |name: &str| Author {
            name: name.into(),
            email: format!("{name}@example.com"),
        };
        let promoted = repo
            .commit(
                None,
                &[change("apps/web/deploy.yaml", Some("image: web:1\n"))],
                "first",
                &person("old"),
            )
            .expect("commit");
        let bump = repo
            .commit(
                Some(promoted),
                &[change("apps/web/deploy.yaml", Some("image: web:2\n"))],
                "bump web",
                &person("hank"),
            )
            .expect("commit");
        let elsewhere = repo
            .commit(
                Some(bump),
                &[change("apps/api/deploy.yaml", Some("image: api:2\n"))],
                "bump api",
                &person("ivy"),
            )
            .expect("commit");
        let ours = repo
            .commit(
                Some(elsewhere),
                &[change("apps/web/ledger.yaml", Some("x: 1\n"))],
                "rollout(x): step\n\nFlaggit-Canary: test/web\n",
                &person("flaggit"),
            )
            .expect("commit");
        let config = repo
            .commit(
                Some(ours),
                &[change("apps/web/config.yaml", Some("debug: true\n"))],
                "debug web",
                &person("jo"),
            )
            .expect("commit");
        let flaggit = |m: &str| m.contains("\nFlaggit-Canary: ");
        let names = |commits: Vec<CommitInfo>| commits.into_iter().map(|c| c.author).collect::<Vec<_>>();
        let touching = repo
            .commits_touching(config, Some(promoted), "apps/web", 10, flaggit)
            .expect("walk");
        assert_eq!(names(touching), ["jo", "hank"]);
        let file = repo
            .commits_touching(config, Some(promoted), "apps/web/deploy.yaml", 10, flaggit)
            .expect("walk");
        assert_eq!(names(file), ["hank"]);
        let unbounded = repo
            .commits_touching(config, None, "apps/web/deploy.yaml", 10, flaggit)
            .expect("walk");
        assert_eq!(names(unbounded), ["hank", "old"], "the root commit adds the file");
        let limited = repo.commits_touching(config, None, "", 1, flaggit).expect("walk");
        assert_eq!(names(limited), ["jo"]);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// Files under the clone's `objects/pack` ending in `ext`, and loose object files.
    fn stored(repo: &Repo, ext: &str) -> (usize, usize) {
        let objects = repo.path().join("objects");
        let count = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| keep(&e.file_name().to_string_lossy()))
                        .count()
                })
                .unwrap_or(0)
        };
        let packs = count(&objects.join("pack"), &|name| name.ends_with(ext));
        let loose = (0..=255u8)
            .map(|b| count(&objects.join(format!("{b:02x}")), &|_| true))
            .sum();
        (packs, loose)
    }

    fn git_cli(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(dir)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn a_batch_is_stored_as_one_pack_of_deltas_that_git_reads() {
        let (dir, mut repo) = local();
        let seed: Vec<(String, Option<Vec<u8>>)> = (0..300)
            .map(|i| {
                change(
                    &format!(".flaggit/test/app-{i:03}.yaml"),
                    Some(&format!("record 0 of {i}\n")),
                )
            })
            .collect();
        let base = repo
            .commit(None, &seed, "seed", &Author::default())
            .expect("seed");
        assert_eq!(stored(&repo, ".pack"), (0, 0), "in memory until stored");
        assert!(repo.unstored_bytes() > 0);
        repo.store().expect("store the seed");
        assert_eq!(stored(&repo, ".pack"), (1, 0), "one pack, no loose object");
        assert_eq!(repo.unstored_bytes(), 0);
        // A batch: 150 commits, each a new version of the 300-entry directory.
        let mut draft = repo.draft(Some(base)).expect("draft");
        for i in 0..150 {
            let path = format!(".flaggit/test/app-{:03}.yaml", (i * 7) % 300);
            repo.commit_on(
                &mut draft,
                &[change(&path, Some(&format!("record 1 of {i}\n")))],
                &format!("record {i}"),
                &Author::default(),
                None,
            )
            .expect("commit");
        }
        let head = draft.head().expect("a head");
        // Readable before it is stored (from memory) ...
        assert_eq!(
            repo.read_file(head, ".flaggit/test/app-007.yaml").expect("read"),
            Some(b"record 1 of 1\n".to_vec())
        );
        repo.store().expect("store the batch");
        assert_eq!(stored(&repo, ".pack"), (2, 0), "one more pack");
        assert_eq!(stored(&repo, ".idx"), (2, 0), "each indexed");
        // ... and after, by a handle of its own and by git.
        let again = Repository::open_bare(repo.path()).expect("open");
        let tree = again
            .find_commit(head)
            .expect("the head")
            .tree()
            .expect("its tree");
        let entry = tree
            .get_path(Path::new(".flaggit/test/app-014.yaml"))
            .expect("a file");
        assert_eq!(
            again.find_blob(entry.id()).expect("blob").content(),
            b"record 1 of 2\n"
        );
        assert_eq!(repo.log(head, 500).expect("log").len(), 151);
        repo.git
            .reference("refs/heads/main", head, true, "test")
            .expect("a ref for fsck to follow");
        git_cli(repo.path(), &["fsck", "--strict", "--full", "--no-dangling"]);
        // Each version of the 13 KB directory is a delta of the one before: 150 of them
        // whole would be 2 MB.
        let packs = std::fs::read_dir(repo.path().join("objects/pack")).expect("packs");
        let largest = packs
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            .filter_map(|e| e.metadata().ok().map(|m| m.len()))
            .max()
            .expect("a pack");
        assert!(largest < 300_000, "{largest} bytes");
        // A few objects go to loose files instead of a pack of their own.
        let small = repo
            .commit(
                Some(head),
                &[change("x.yaml", Some("x\n"))],
                "small",
                &Author::default(),
            )
            .expect("commit");
        repo.store().expect("store");
        assert_eq!(stored(&repo, ".pack"), (2, 3), "blob, tree, commit");
        assert_eq!(
            again.find_commit(small).expect("read by another handle").id(),
            small
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn packs_are_merged_so_they_do_not_pile_up() {
        let (dir, mut repo) = local();
        let mut head = None;
        let mut commits = Vec::new();
        for round in 0..20 {
            let mut draft = repo.draft(head).expect("draft");
            for i in 0..30 {
                let path = format!(".flaggit/test/app-{i:02}.yaml");
                let made = repo
                    .commit_on(
                        &mut draft,
                        &[change(&path, Some(&format!("round {round}\n")))],
                        "record",
                        &Author::default(),
                        None,
                    )
                    .expect("commit");
                commits.push(made);
            }
            head = draft.head();
            repo.store().expect("store");
            let (packs, loose) = stored(&repo, ".pack");
            // Twice the bytes of all smaller ones: 20 equal packs make 5 at most.
            assert!(packs <= 5, "round {round}: {packs} packs");
            assert_eq!(loose, 0);
        }
        let again = Repository::open_bare(repo.path()).expect("open");
        for id in &commits {
            again.find_commit(*id).expect("every commit is still there");
        }
        repo.git
            .reference("refs/heads/main", head.expect("a head"), true, "test")
            .expect("a ref for fsck to follow");
        git_cli(repo.path(), &["fsck", "--strict", "--full", "--no-dangling"]);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// The `gpgsig` header and the signed payload of a commit object, split as git's
    /// `parse_signed_commit` does. Not libgit2's `git_commit_extract_signature`: it copies
    /// the message up to a NUL, and reads past the object when the message has no final
    /// newline (a test failed on that whenever other tests had dirtied the heap).
    fn split_signed(raw: &[u8]) -> (String, Vec<u8>) {
        let (mut signature, mut payload) = (String::new(), Vec::new());
        let mut in_signature = false;
        let mut rest = raw;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            let (line, next) = rest.split_at(end);
            if let Some(part) = line
                .strip_prefix(b"gpgsig ")
                .or_else(|| line.strip_prefix(b" ").filter(|_| in_signature))
            {
                signature.push_str(std::str::from_utf8(part).expect("utf-8 signature"));
                in_signature = true;
            } else if line == b"\n" {
                payload.extend_from_slice(rest);
                break;
            } else {
                payload.extend_from_slice(line);
                in_signature = false;
            }
            rest = next;
        }
        (signature, payload)
    }

    #[test]
    fn signed_commits_carry_a_verifiable_sshsig() {
        let (dir, repo) = local();
        let key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
            .expect("generate a key");
        let text = key.to_openssh(ssh_key::LineEnding::LF).expect("encode the key");
        let signer = Signer::from_openssh(&text).expect("signer");
        assert!(!format!("{signer:?}").contains(text.lines().nth(1).expect("key body")));
        assert!(signer.public_key().starts_with("ssh-ed25519 "));
        let commit = repo
            .commit_signed(
                None,
                &[change("a", Some("a"))],
                "signed",
                &Author::default(),
                None,
                &signer,
            )
            .expect("signed commit");
        let odb = repo.git.odb().expect("odb");
        let raw = odb.read(commit).expect("the commit object");
        assert!(
            !raw.data().windows(3).any(|w| w == b"\n \n"),
            "no empty continuation line in the gpgsig header, as git writes it"
        );
        let (armored, signed) = split_signed(raw.data());
        let signature: ssh_key::SshSig = armored.parse().expect("an SSHSIG");
        key.public_key()
            .verify("git", &signed, &signature)
            .expect("the signature verifies");
        assert!(key.public_key().verify("git", b"other data", &signature).is_err());
        assert_eq!(repo.read_file(commit, "a").expect("read"), Some(b"a".to_vec()));
        let error = Signer::from_openssh("not a key").expect_err("garbage");
        assert_eq!(error.category(), "InvalidSigningKey");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn a_batch_built_in_a_draft_has_the_trees_of_commits_built_one_by_one() {
        let (dir, repo) = local();
        let key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
            .expect("generate a key");
        let signer =
            Signer::from_openssh(&key.to_openssh(ssh_key::LineEnding::LF).expect("encode")).expect("signer");
        let mut seed: Vec<(String, Option<Vec<u8>>)> = (0..200)
            .map(|i| change(&format!(".flaggit/test/app-{i:03}.yaml"), Some("record: 0\n")))
            .collect();
        seed.push(change("apps/podinfo.yaml", Some("image: podinfo:1\n")));
        let base = repo
            .commit(None, &seed, "seed", &Author::default())
            .expect("seed");
        let batch: Vec<Vec<(String, Option<Vec<u8>>)>> = vec![
            vec![change(".flaggit/test/app-007.yaml", Some("record: 1\n"))],
            vec![change(".flaggit/test/app-150.yaml", Some("record: 1\n"))],
            vec![
                change(".flaggit/test/app-007.yaml", Some("record: 2\n")),
                change("apps/podinfo.yaml", Some("image: podinfo:0\n")),
            ],
            vec![change(".flaggit/prod/test/app-007.yaml", Some("record: 1\n"))],
            vec![change("apps/podinfo.yaml", None)],
        ];
        let mut draft = repo.draft(Some(base)).expect("draft");
        let mut one_by_one = base;
        let mut previous = base;
        for (i, changes) in batch.iter().enumerate() {
            let message = format!("record {i}");
            let made = repo
                .commit_on(&mut draft, changes, &message, &Author::default(), Some(&signer))
                .expect("commit on the draft");
            one_by_one = repo
                .commit(Some(one_by_one), changes, &message, &Author::default())
                .expect("commit");
            let tree = |id| repo.git.find_commit(id).expect("commit").tree_id();
            assert_eq!(tree(made), tree(one_by_one), "after {message}");
            assert_eq!(draft.head(), Some(made));
            let parent = repo
                .git
                .find_commit(made)
                .expect("commit")
                .parent_id(0)
                .expect("a parent");
            assert_eq!(parent, previous, "each commit on the one before");
            previous = made;
            let (armored, signed) = repo.git.extract_signature(&made, None).expect("signed");
            let signature: ssh_key::SshSig = std::str::from_utf8(&armored)
                .expect("utf-8")
                .parse()
                .expect("an SSHSIG");
            key.public_key()
                .verify("git", &signed, &signature)
                .expect("the signature verifies");
        }
        let head = draft.head().expect("a head");
        assert_eq!(
            repo.read_draft(&mut draft, ".flaggit/test/app-007.yaml")
                .expect("read"),
            Some(b"record: 2\n".to_vec())
        );
        assert_eq!(
            repo.read_draft(&mut draft, "apps/podinfo.yaml").expect("read"),
            None
        );
        assert_eq!(
            repo.read_file(head, ".flaggit/prod/test/app-007.yaml")
                .expect("read"),
            Some(b"record: 1\n".to_vec())
        );
        assert_eq!(
            repo.log(head, 10).expect("log").len(),
            batch.len() + 1,
            "a chain on the seed"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn pushes_from_the_cache_clone_try_one_delta_base() {
        let (dir, repo) = local();
        let window = |path: &Path| {
            Repository::open_bare(path)
                .and_then(|git| git.config()?.get_i64("pack.windowMemory"))
                .ok()
        };
        assert_eq!(window(repo.path()), Some(1));
        let remote = repo.remote().clone();
        drop(repo);
        let again = Repo::open(&dir, remote, Credentials::None).expect("open again");
        assert_eq!(
            window(again.path()),
            Some(1),
            "kept when the clone is opened again"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn open_rejects_a_bad_branch_and_reopens_the_same_clone() {
        let dir = scratch();
        let bad = Remote {
            url: "https://u:pw@h/r.git".into(),
            branch: "two..dots".into(),
        };
        let error = Repo::open(&dir, bad, Credentials::None)
            .err()
            .expect("invalid branch");
        assert_eq!(error.category(), "InvalidGitRemote");
        assert!(!error.to_string().contains("pw@"), "{error}");
        let remote = Remote {
            url: "git://h/r.git".into(),
            branch: "main".into(),
        };
        let first = Repo::open(&dir, remote.clone(), Credentials::None).expect("create");
        let again = Repo::open(&dir, remote, Credentials::None).expect("reopen");
        assert_eq!(first.path(), again.path());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
