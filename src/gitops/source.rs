//! Where a canary's target is declared: the config repository, branch, credentials and path,
//! from `spec.gitops`, the Flux Kustomization or Argo CD Application that applied the target,
//! or the controller-wide defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::allow::{self, Rule};
use super::{Credentials, Remote};
use crate::api::Canary;

/// Labels kustomize-controller puts on every object a Kustomization applies.
const FLUX_KUSTOMIZATION_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
const FLUX_KUSTOMIZATION_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Labels helm-controller puts on every object a HelmRelease installs.
const FLUX_HELMRELEASE_NAME: &str = "helm.toolkit.fluxcd.io/name";
const FLUX_HELMRELEASE_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";
/// Argo CD's annotation tracking (`app:group/Kind:namespace/name`).
const ARGO_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's default label tracking.
const ARGO_INSTANCE: &str = "app.kubernetes.io/instance";
/// Argo CD's label on repository (and credential template) Secrets.
const ARGO_SECRET_TYPE: &str = "argocd.argoproj.io/secret-type";
/// Argo CD's ConfigMap of SSH host keys, used when a repository Secret has none.
const ARGO_KNOWN_HOSTS_CM: &str = "argocd-ssh-known-hosts-cm";
const ARGO_KNOWN_HOSTS_KEY: &str = "ssh_known_hosts";

/// The branch a `spec.gitops.repository` without `branch` is written to.
const DEFAULT_BRANCH: &str = "main";
/// The branch Flux checks out when a GitRepository has no `spec.ref`.
const FLUX_DEFAULT_BRANCH: &str = "master";
/// The username sent with a Flux `bearerToken` (GitHub's convention; GitLab and Gitea accept any).
const TOKEN_USERNAME: &str = "x-access-token";

/// Controller-wide fallbacks (`--git-url`, `--git-branch`, `--git-secret`, `--argocd-namespace`)
/// and grants (`--git-allow`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub remote: Option<Remote>,
    pub secret: Option<SecretRef>,
    /// Argo CD's control-plane namespace: its Applications and repository Secrets live there.
    pub argocd_namespace: String,
    /// Repositories and paths namespaces may name in `spec.gitops` beyond their discovered source.
    pub allowed: Vec<Rule>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            remote: None,
            secret: None,
            argocd_namespace: "argocd".to_string(),
            allowed: Vec::new(),
        }
    }
}

/// A Secret holding Git credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which of the sources the repository was found in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The canary's `spec.gitops.repository`.
    Spec,
    /// A Flux Kustomization (`namespace/name`) built from a GitRepository.
    Flux { kustomization: String },
    /// An Argo CD Application (`namespace/name`).
    Argo { application: String },
    /// The controller-wide `--git-url`.
    Default,
}

/// The config repository that declares a canary's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub remote: Remote,
    /// The credentials; None for a repository that needs none.
    pub secret: Option<SecretRef>,
    /// Directory or file declaring the target, relative to the repository root, without `./`
    /// or a trailing `/`; `""` is the root. None when no source says (only the ledger is written).
    pub path: Option<String>,
    /// The namespace the source puts objects that name none in (a Flux Kustomization's
    /// `spec.targetNamespace`, an Argo CD Application's `spec.destination.namespace`).
    pub namespace: Option<String>,
    pub origin: Origin,
}

impl Source {
    /// The controller-wide default repository (`--git-url`): no source names the target, so
    /// only the ledger is written there.
    pub fn ledger_only(remote: Remote, secret: Option<SecretRef>) -> Self {
        Self {
            remote,
            secret,
            path: None,
            namespace: None,
            origin: Origin::Default,
        }
    }
}

/// What resolving a source or reading its credentials can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {kind} {object}: {source}")]
    Get {
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list {what} in namespace {namespace}: {source}")]
    List {
        what: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    /// An object a label, annotation or reference names does not exist.
    #[error(
        "{kind} {namespace}/{name} named by {referrer} not found: create it, fix the reference, \
         or set spec.gitops.repository on the Canary"
    )]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        referrer: String,
    },
    #[error("{referrer} is built from {kind} {name}: flaggit needs a Git source: set spec.gitops.repository")]
    NotGitSource {
        referrer: String,
        kind: String,
        name: String,
    },
    #[error(
        "{object} follows {pin}, not a branch: flaggit writes records to a branch: set \
         spec.gitops.repository with the branch to write to"
    )]
    NotBranch { object: String, pin: String },
    /// An object lacks a field flaggit needs, or has it in a shape it does not understand.
    #[error("{object}: {field} {problem}")]
    Invalid {
        object: String,
        field: &'static str,
        problem: String,
    },
    #[error("{field} {path:?} leaves the repository: use a path relative to the repository root")]
    InvalidPath { field: String, path: String },
    /// The object a label or annotation names does not list the target among what it applies.
    #[error(
        "{source_object} does not list {target} in {field}: {referrer} names a source that does not \
         apply the target, so flaggit will not write to its repository: fix or remove the label \
         (if the source has not applied the target yet, this clears once it has)"
    )]
    NotManaged {
        source_object: String,
        target: String,
        field: &'static str,
        referrer: String,
    },
    #[error(
        "spec.gitops.repository {url} is not allowed in namespace {namespace}: a canary may use the \
         repository of the Flux or Argo CD source that applies its target ({discovered}) and what \
         --git-allow grants its namespace ({granted}): remove spec.gitops.repository, or ask the \
         cluster admin for a --git-allow rule"
    )]
    RepositoryNotAllowed {
        namespace: String,
        /// Redacted.
        url: String,
        discovered: String,
        granted: String,
    },
    #[error(
        "spec.gitops.path {path:?} is not allowed in namespace {namespace}: it is outside {discovered}, \
         and --git-allow grants the namespace {granted}: use a path under the source's, or ask the \
         cluster admin for a --git-allow rule"
    )]
    PathNotAllowed {
        namespace: String,
        path: String,
        discovered: String,
        granted: String,
    },
    #[error("Secret {secret} not found: create it or fix the reference to it")]
    SecretNotFound { secret: SecretRef },
    #[error(
        "Secret {secret} has no usable Git credentials (keys: {keys}): set `username` and \
         `password`, `bearerToken`, `identity` and `known_hosts`, or (Argo CD) `sshPrivateKey`"
    )]
    NoCredentials { secret: SecretRef, keys: String },
    #[error(
        "Secret {secret} has an SSH key but no `known_hosts`: add the server's host keys \
         (ssh-keyscan <host>) under `known_hosts`"
    )]
    NoKnownHosts { secret: SecretRef },
    #[error("Secret {secret} key `{key}` is not UTF-8 text")]
    NotText { secret: SecretRef, key: String },
}

impl Error {
    /// A short fixed name for the kind of failure: event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Get { .. } | Self::List { .. } => "ReadGitSource",
            Self::NotFound { .. } => "GitSourceNotFound",
            Self::NotGitSource { .. } => "NotGitSource",
            Self::NotBranch { .. } => "GitSourceNotBranch",
            Self::Invalid { .. } => "InvalidGitSource",
            Self::InvalidPath { .. } => "InvalidGitPath",
            Self::NotManaged { .. } => "GitSourceNotManaging",
            Self::RepositoryNotAllowed { .. } | Self::PathNotAllowed { .. } => "GitSourceNotAllowed",
            Self::SecretNotFound { .. } => "GitSecretNotFound",
            Self::NoCredentials { .. } | Self::NotText { .. } => "InvalidGitSecret",
            Self::NoKnownHosts { .. } => "GitKnownHostsMissing",
        }
    }
}

/// Where the canary's target is declared. Ok(None): no repository known at all.
///
/// Discovery: the Flux Kustomization that applied the target (directly or through a
/// HelmRelease), then the Argo CD Application (tracking-id annotation or instance label), then
/// `defaults`. A label only points: the Kustomization's `status.inventory` (or the
/// Application's `status.resources`) must list the target, else the source is refused. An
/// Argo CD `targetRevision` of `HEAD` or empty is taken as branch `main`.
///
/// What the canary may choose: `spec.gitops.repository` (its `secretRef` is in the canary's
/// namespace, branch default `main`) only when it is the discovered repository or a
/// `--git-allow` rule grants it; `spec.gitops.path` only under the discovered path (the
/// `--git-url` default is the whole repository) or under a rule's path.
pub async fn resolve(
    client: &kube::Client,
    canary: &Canary,
    target: &ObjectMeta,
    defaults: &Defaults,
) -> Result<Option<Source>, Error> {
    let canary_ns = canary.namespace().unwrap_or_default();
    let gitops = canary.spec.gitops.as_ref();
    let path_override = gitops
        .and_then(|g| g.path.as_deref())
        .map(|p| normalise_path(p).ok_or_else(|| invalid_path("spec.gitops.path", p)))
        .transpose()?;
    let kind = Workload::of(canary, target);

    let found = if let Some(repo) = gitops.and_then(|g| g.repository.as_ref()) {
        let url = repo.url.clone();
        let granted = allow::granted(&defaults.allowed, &canary_ns, &url, path_override.as_deref());
        // Discovery is needed only to prove what no rule grants.
        let discovered = if granted {
            None
        } else {
            discover(client, &kind, target, &canary_ns, defaults).await?
        };
        // The discovered source, when the canary names its repository.
        let same = discovered
            .as_ref()
            .filter(|d| allow::same_repository(&d.remote.url, &url));
        let namespace = same.and_then(|d| d.namespace.clone());
        let proven = same.is_some_and(|d| allow::within(path_override.as_deref(), d.path.as_deref()));
        if !granted && !proven {
            let same_repository = same.is_some();
            let described = discovered
                .as_ref()
                .map_or_else(|| "none found".to_string(), describe_source);
            let granted = allow::describe(&defaults.allowed, &canary_ns);
            return Err(match path_override {
                Some(path) if same_repository => Error::PathNotAllowed {
                    namespace: canary_ns,
                    path,
                    discovered: described,
                    granted,
                },
                _ => Error::RepositoryNotAllowed {
                    namespace: canary_ns,
                    url: crate::redact::url(&url),
                    discovered: described,
                    granted,
                },
            });
        }
        Some(Source {
            remote: Remote {
                url,
                branch: repo
                    .branch
                    .clone()
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| DEFAULT_BRANCH.to_string()),
            },
            secret: repo.secret_ref.as_ref().map(|s| SecretRef {
                namespace: canary_ns.clone(),
                name: s.name.clone(),
            }),
            path: path_override,
            namespace,
            origin: Origin::Spec,
        })
    } else {
        match discover(client, &kind, target, &canary_ns, defaults).await? {
            Some(mut source) => {
                if let Some(path) = path_override {
                    let proven = allow::within(Some(&path), source.path.as_deref());
                    if !proven
                        && !allow::granted(&defaults.allowed, &canary_ns, &source.remote.url, Some(&path))
                    {
                        let granted = allow::describe(&defaults.allowed, &canary_ns);
                        return Err(Error::PathNotAllowed {
                            namespace: canary_ns,
                            path,
                            discovered: describe_source(&source),
                            granted,
                        });
                    }
                    source.path = Some(path);
                }
                Some(source)
            }
            None => None,
        }
    };
    if let Some(source) = &found {
        tracing::debug!(canary = %canary.name_any(), remote = %source.remote, origin = ?source.origin, "git source resolved");
    }
    Ok(found)
}

/// The source discovery finds for the target: Flux, then Argo CD, then the defaults.
async fn discover(
    client: &kube::Client,
    kind: &Workload,
    target: &ObjectMeta,
    canary_ns: &str,
    defaults: &Defaults,
) -> Result<Option<Source>, Error> {
    if let Some(source) = flux(client, kind, target, canary_ns).await? {
        return Ok(Some(source));
    }
    if let Some(source) = argo(client, kind, target, canary_ns, &defaults.argocd_namespace).await? {
        return Ok(Some(source));
    }
    Ok(defaults
        .remote
        .clone()
        .map(|remote| Source::ledger_only(remote, defaults.secret.clone())))
}

/// A discovered source for messages: `URL under PATH/ (Kustomization ns/name)`.
fn describe_source(source: &Source) -> String {
    let url = crate::redact::url(&source.remote.url);
    let whence = match &source.origin {
        Origin::Flux { kustomization } => format!("Kustomization {kustomization}"),
        Origin::Argo { application } => format!("Application {application}"),
        Origin::Spec => "spec.gitops.repository".to_string(),
        Origin::Default => "--git-url".to_string(),
    };
    match source.path.as_deref() {
        None | Some("") => format!("{url} (whole repository, from {whence})"),
        Some(path) => format!("{url} under {path}/ (from {whence})"),
    }
}

/// The target as Flux and Argo CD list what they applied: API group, kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Workload {
    fn of(canary: &Canary, target: &ObjectMeta) -> Self {
        let api_version = &canary.spec.target_ref.api_version;
        let group = api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
            .to_string();
        let namespace = target
            .namespace
            .clone()
            .or_else(|| canary.namespace())
            .unwrap_or_default();
        Self {
            group,
            kind: canary.spec.target_ref.kind.as_str().to_string(),
            namespace,
            name: target
                .name
                .clone()
                .unwrap_or_else(|| canary.spec.target_ref.name.clone()),
        }
    }

    /// Flux's inventory id: `<namespace>_<name>_<group>_<kind>`.
    pub fn flux_id(&self) -> String {
        format!("{}_{}_{}_{}", self.namespace, self.name, self.group, self.kind)
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Whether a Flux object's `status.inventory.entries` lists `id`.
pub fn flux_inventory_lists(object: &serde_json::Value, id: &str) -> bool {
    object
        .pointer("/status/inventory/entries")
        .and_then(|e| e.as_array())
        .is_some_and(|entries| {
            entries
                .iter()
                .any(|e| e.get("id").and_then(|i| i.as_str()) == Some(id))
        })
}

/// Whether an Argo CD Application's `status.resources` lists the workload.
pub fn argo_resources_list(object: &serde_json::Value, workload: &Workload) -> bool {
    let text = |r: &serde_json::Value, key: &str| {
        r.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    object
        .pointer("/status/resources")
        .and_then(|e| e.as_array())
        .is_some_and(|resources| {
            resources.iter().any(|r| {
                text(r, "group") == workload.group
                    && text(r, "kind") == workload.kind
                    && text(r, "namespace") == workload.namespace
                    && text(r, "name") == workload.name
            })
        })
}

/// The credentials of `secret`, or anonymous access when there is no Secret.
pub async fn credentials_of(client: &kube::Client, secret: Option<&SecretRef>) -> Result<Credentials, Error> {
    match secret {
        Some(secret) => credentials(client, secret).await,
        None => Ok(Credentials::None),
    }
}

/// The credentials in a Secret: Flux GitRepository keys (`username`/`password`,
/// `bearerToken`, `identity`/`known_hosts` (+ `password` as key passphrase)) and Argo CD
/// repository secret keys (`username`/`password`, `sshPrivateKey`). Error naming the keys when none fit.
///
/// An Argo CD `sshPrivateKey` without `known_hosts` takes the host keys from Argo CD's
/// `argocd-ssh-known-hosts-cm` in the Secret's namespace.
pub async fn credentials(client: &kube::Client, secret: &SecretRef) -> Result<Credentials, Error> {
    let found = Api::<Secret>::namespaced(client.clone(), &secret.namespace)
        .get_opt(&secret.name)
        .await
        .map_err(|source| Error::Get {
            kind: "Secret",
            object: secret.to_string(),
            source,
        })?
        .ok_or_else(|| Error::SecretNotFound {
            secret: secret.clone(),
        })?;
    let data: BTreeMap<String, Vec<u8>> = found
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let mut fallback_known_hosts = None;
    if data.contains_key("sshPrivateKey") && !data.contains_key("known_hosts") {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), &secret.namespace)
            .get_opt(ARGO_KNOWN_HOSTS_CM)
            .await
            .map_err(|source| Error::Get {
                kind: "ConfigMap",
                object: format!("{}/{ARGO_KNOWN_HOSTS_CM}", secret.namespace),
                source,
            })?;
        fallback_known_hosts = cm
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(ARGO_KNOWN_HOSTS_KEY))
            .filter(|k| !k.trim().is_empty());
    }
    credentials_from_data(secret, &data, fallback_known_hosts)
}

/// Maps a Secret's data to credentials; `fallback_known_hosts` serves an SSH key without
/// `known_hosts`. Errors name keys, never values.
pub fn credentials_from_data(
    secret: &SecretRef,
    data: &BTreeMap<String, Vec<u8>>,
    fallback_known_hosts: Option<String>,
) -> Result<Credentials, Error> {
    let text = |key: &str| -> Result<Option<String>, Error> {
        match data.get(key) {
            None => Ok(None),
            Some(bytes) if bytes.is_empty() => Ok(None),
            Some(bytes) => String::from_utf8(bytes.clone())
                .map(Some)
                .map_err(|_| Error::NotText {
                    secret: secret.clone(),
                    key: key.to_string(),
                }),
        }
    };
    let ssh_key = match text("identity")? {
        Some(key) => Some(key),
        None => text("sshPrivateKey")?,
    };
    if let Some(identity) = ssh_key {
        let known_hosts =
            text("known_hosts")?
                .or(fallback_known_hosts)
                .ok_or_else(|| Error::NoKnownHosts {
                    secret: secret.clone(),
                })?;
        return Ok(Credentials::Ssh {
            username: text("username")?,
            identity,
            passphrase: text("password")?,
            known_hosts,
        });
    }
    if let Some(token) = text("bearerToken")? {
        return Ok(Credentials::Basic {
            username: text("username")?.unwrap_or_else(|| TOKEN_USERNAME.to_string()),
            password: token,
        });
    }
    if let (Some(username), Some(password)) = (text("username")?, text("password")?) {
        return Ok(Credentials::Basic { username, password });
    }
    let keys = if data.is_empty() {
        "none".to_string()
    } else {
        data.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    };
    Err(Error::NoCredentials {
        secret: secret.clone(),
        keys,
    })
}

/// Whether a Secret's data holds any key `credentials_from_data` can use.
fn has_credential_keys(data: &BTreeMap<String, Vec<u8>>) -> bool {
    ["identity", "sshPrivateKey", "bearerToken", "username", "password"]
        .iter()
        .any(|k| data.get(*k).is_some_and(|v| !v.is_empty()))
}

/// A repository path made relative and canonical: `./apps/x/` → `apps/x`, `.` or `` → ``.
/// None when `..` climbs above the root.
pub fn normalise_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn invalid_path(field: &str, path: &str) -> Error {
    Error::InvalidPath {
        field: field.to_string(),
        path: path.to_string(),
    }
}

/// An Argo CD tracking id, `app:group/Kind:namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingId {
    /// The Application's namespace when the id says (`ns_app`, Argo CD's apps in any namespace).
    pub app_namespace: Option<String>,
    pub app: String,
    pub group: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

/// Parses `argocd.argoproj.io/tracking-id`; None when it is not of that shape.
pub fn parse_tracking_id(id: &str) -> Option<TrackingId> {
    let (app, rest) = id.split_once(':')?;
    let (group_kind, ns_name) = rest.split_once(':')?;
    let (group, kind) = group_kind.split_once('/')?;
    let (namespace, name) = ns_name.split_once('/')?;
    if app.is_empty() || kind.is_empty() || name.is_empty() {
        return None;
    }
    let (app_namespace, app) = split_app(app);
    Some(TrackingId {
        app_namespace,
        app,
        group: group.to_string(),
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// `ns_app` → (Some(ns), app); Application names cannot hold `_`, so the split is unambiguous.
fn split_app(app: &str) -> (Option<String>, String) {
    match app.split_once('_') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => (Some(ns.to_string()), name.to_string()),
        _ => (None, app.to_string()),
    }
}

/// A Git URL compared the way Argo CD matches repository Secrets: case-insensitive, without
/// a trailing `/` or `.git`.
fn normalise_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/').to_ascii_lowercase();
    url.strip_suffix(".git").map(str::to_string).unwrap_or(url)
}

/// An Argo CD `targetRevision` as a branch: `HEAD` or empty → `main`. A commit SHA is refused.
fn argo_branch(application: &str, revision: Option<&str>) -> Result<String, Error> {
    let revision = revision.map(str::trim).unwrap_or_default();
    if revision.is_empty() || revision == "HEAD" {
        return Ok(DEFAULT_BRANCH.to_string());
    }
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotBranch {
            object: format!("Application {application}"),
            pin: format!("commit {revision}"),
        });
    }
    let revision = revision.strip_prefix("refs/heads/").unwrap_or(revision);
    if let Some(tag) = revision.strip_prefix("refs/tags/") {
        return Err(Error::NotBranch {
            object: format!("Application {application}"),
            pin: format!("tag {tag}"),
        });
    }
    Ok(revision.to_string())
}

/// The branch a Flux GitRepository follows, from its `spec.ref`.
fn flux_branch(object: &str, git_ref: Option<&GitRef>) -> Result<String, Error> {
    let Some(r) = git_ref else {
        return Ok(FLUX_DEFAULT_BRANCH.to_string());
    };
    let pinned = |pin: String| Error::NotBranch {
        object: object.to_string(),
        pin,
    };
    // Flux's precedence: commit, name, semver, tag, branch.
    if let Some(commit) = nonempty(&r.commit) {
        return Err(pinned(format!("commit {commit}")));
    }
    if let Some(name) = nonempty(&r.name) {
        return match name.strip_prefix("refs/heads/") {
            Some(branch) => Ok(branch.to_string()),
            None => Err(pinned(format!("ref {name}"))),
        };
    }
    if let Some(semver) = nonempty(&r.semver) {
        return Err(pinned(format!("semver {semver}")));
    }
    if let Some(tag) = nonempty(&r.tag) {
        return Err(pinned(format!("tag {tag}")));
    }
    Ok(nonempty(&r.branch).unwrap_or(FLUX_DEFAULT_BRANCH).to_string())
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

// The parts of Flux's and Argo CD's objects flaggit reads.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KustomizationSpec {
    #[serde(default)]
    path: Option<String>,
    source_ref: SourceRef,
    #[serde(default)]
    target_namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HelmReleaseSpec {
    #[serde(default)]
    target_namespace: Option<String>,
}

#[derive(Deserialize)]
struct SourceRef {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitRepositorySpec {
    url: String,
    #[serde(default, rename = "ref")]
    git_ref: Option<GitRef>,
    #[serde(default)]
    secret_ref: Option<NameRef>,
}

#[derive(Deserialize)]
struct GitRef {
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    semver: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    commit: Option<String>,
}

#[derive(Deserialize)]
struct NameRef {
    name: String,
}

#[derive(Deserialize)]
struct ApplicationSpec {
    #[serde(default)]
    source: Option<ApplicationSource>,
    #[serde(default)]
    sources: Option<Vec<ApplicationSource>>,
    #[serde(default)]
    destination: Option<ApplicationDestination>,
}

#[derive(Deserialize)]
struct ApplicationDestination {
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationSource {
    #[serde(rename = "repoURL")]
    repo_url: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    target_revision: Option<String>,
    #[serde(default)]
    chart: Option<String>,
}

/// A Flux or Argo CD kind, with the versions tried in order.
struct Kind {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    versions: &'static [&'static str],
}

const KUSTOMIZATION: Kind = Kind {
    group: "kustomize.toolkit.fluxcd.io",
    kind: "Kustomization",
    plural: "kustomizations",
    versions: &["v1", "v1beta2"],
};
const GIT_REPOSITORY: Kind = Kind {
    group: "source.toolkit.fluxcd.io",
    kind: "GitRepository",
    plural: "gitrepositories",
    versions: &["v1", "v1beta2"],
};
const HELM_RELEASE: Kind = Kind {
    group: "helm.toolkit.fluxcd.io",
    kind: "HelmRelease",
    plural: "helmreleases",
    versions: &["v2", "v2beta2", "v2beta1"],
};
const APPLICATION: Kind = Kind {
    group: "argoproj.io",
    kind: "Application",
    plural: "applications",
    versions: &["v1alpha1"],
};

/// Reads `namespace/name` of `kind` at the first version that has it; None when none does
/// (an unserved version answers 404 like a missing object).
async fn get(
    client: &kube::Client,
    kind: &Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, Error> {
    for version in kind.versions {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(kind.group, version, kind.kind),
            kind.plural,
        );
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
        match api.get(name).await {
            Ok(found) => return Ok(Some(found)),
            // An unserved version answers a plain-text 404 that `get_opt` does not take as
            // "not found"; a missing object answers a Status 404. Both mean: try the next.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Get {
                    kind: kind.kind,
                    object: format!("{namespace}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(None)
}

/// Reads `namespace/name`, or says which label or reference named a missing object.
async fn get_named(
    client: &kube::Client,
    kind: &Kind,
    namespace: &str,
    name: &str,
    referrer: impl FnOnce() -> String,
) -> Result<DynamicObject, Error> {
    get(client, kind, namespace, name)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: kind.kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            referrer: referrer(),
        })
}

fn spec<T: DeserializeOwned>(kind: &Kind, object: &DynamicObject) -> Result<T, Error> {
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    serde_json::from_value(spec).map_err(|e| Error::Invalid {
        object: format!(
            "{} {}/{}",
            kind.kind,
            object.namespace().unwrap_or_default(),
            object.name_any()
        ),
        field: "spec",
        problem: format!("cannot be read: {e}"),
    })
}

/// The object's `namespace/name` labels under `name_label`/`namespace_label`, the namespace
/// defaulting to `default_ns`.
fn labelled(
    meta: &ObjectMeta,
    name_label: &str,
    namespace_label: &str,
    default_ns: &str,
) -> Option<(String, String)> {
    let labels = meta.labels.as_ref()?;
    let name = labels.get(name_label).filter(|n| !n.is_empty())?;
    let namespace = labels
        .get(namespace_label)
        .filter(|n| !n.is_empty())
        .map_or(default_ns, String::as_str);
    Some((namespace.to_string(), name.clone()))
}

fn describe(meta: &ObjectMeta, default_ns: &str) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(default_ns),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The Flux chain: target → (HelmRelease →) Kustomization → GitRepository.
async fn flux(
    client: &kube::Client,
    workload: &Workload,
    target: &ObjectMeta,
    canary_ns: &str,
) -> Result<Option<Source>, Error> {
    let target_ns = target.namespace.as_deref().unwrap_or(canary_ns);
    let direct = labelled(
        target,
        FLUX_KUSTOMIZATION_NAME,
        FLUX_KUSTOMIZATION_NAMESPACE,
        target_ns,
    );
    // What the Kustomization's inventory must list: the target, or the HelmRelease that
    // installed it (which must install into the target's namespace).
    let (ks_ns, ks_name, referrer, applied) = match direct {
        Some((ns, name)) => (
            ns,
            name,
            format!(
                "the {FLUX_KUSTOMIZATION_NAME} labels of {}",
                describe(target, canary_ns)
            ),
            (workload.flux_id(), workload.to_string()),
        ),
        None => {
            let Some((hr_ns, hr_name)) = labelled(
                target,
                FLUX_HELMRELEASE_NAME,
                FLUX_HELMRELEASE_NAMESPACE,
                target_ns,
            ) else {
                return Ok(None);
            };
            let release = get_named(client, &HELM_RELEASE, &hr_ns, &hr_name, || {
                format!(
                    "the {FLUX_HELMRELEASE_NAME} labels of {}",
                    describe(target, canary_ns)
                )
            })
            .await?;
            // A HelmRelease not applied by a Kustomization has no Git path flaggit can know.
            let Some((ns, name)) = labelled(
                &release.metadata,
                FLUX_KUSTOMIZATION_NAME,
                FLUX_KUSTOMIZATION_NAMESPACE,
                &hr_ns,
            ) else {
                return Ok(None);
            };
            let hr_spec: HelmReleaseSpec = spec(&HELM_RELEASE, &release)?;
            let installs_into = hr_spec
                .target_namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| hr_ns.clone());
            if installs_into != workload.namespace {
                return Err(Error::NotManaged {
                    source_object: format!("HelmRelease {hr_ns}/{hr_name}"),
                    target: workload.to_string(),
                    field: "spec.targetNamespace (it installs into another namespace)",
                    referrer: format!(
                        "the {FLUX_HELMRELEASE_NAME} labels of {}",
                        describe(target, canary_ns)
                    ),
                });
            }
            let referrer = format!("the {FLUX_KUSTOMIZATION_NAME} labels of HelmRelease {hr_ns}/{hr_name}");
            let id = format!("{hr_ns}_{hr_name}_{}_{}", HELM_RELEASE.group, HELM_RELEASE.kind);
            (ns, name, referrer, (id, format!("HelmRelease {hr_ns}/{hr_name}")))
        }
    };
    let kustomization = get_named(client, &KUSTOMIZATION, &ks_ns, &ks_name, || referrer.clone()).await?;
    let ks_id = format!("{ks_ns}/{ks_name}");
    let (applied_id, applied_object) = applied;
    if !flux_inventory_lists(&kustomization.data, &applied_id) {
        return Err(Error::NotManaged {
            source_object: format!("Kustomization {ks_id}"),
            target: applied_object,
            field: "status.inventory",
            referrer,
        });
    }
    let ks_spec: KustomizationSpec = spec(&KUSTOMIZATION, &kustomization)?;
    let source_ns = ks_spec
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| ks_ns.clone());
    if ks_spec.source_ref.kind != GIT_REPOSITORY.kind {
        return Err(Error::NotGitSource {
            referrer: format!("Kustomization {ks_id}"),
            kind: ks_spec.source_ref.kind,
            name: format!("{source_ns}/{}", ks_spec.source_ref.name),
        });
    }
    let raw_path = ks_spec.path.unwrap_or_default();
    let path = normalise_path(&raw_path)
        .ok_or_else(|| invalid_path(&format!("Kustomization {ks_id} spec.path"), &raw_path))?;
    let repository = get_named(
        client,
        &GIT_REPOSITORY,
        &source_ns,
        &ks_spec.source_ref.name,
        || format!("spec.sourceRef of Kustomization {ks_id}"),
    )
    .await?;
    let repo_id = format!("GitRepository {source_ns}/{}", ks_spec.source_ref.name);
    let repo_spec: GitRepositorySpec = spec(&GIT_REPOSITORY, &repository)?;
    if repo_spec.url.trim().is_empty() {
        return Err(Error::Invalid {
            object: repo_id,
            field: "spec.url",
            problem: "is empty".to_string(),
        });
    }
    let branch = flux_branch(&repo_id, repo_spec.git_ref.as_ref())?;
    Ok(Some(Source {
        remote: Remote {
            url: repo_spec.url,
            branch,
        },
        secret: repo_spec.secret_ref.map(|s| SecretRef {
            namespace: source_ns.clone(),
            name: s.name,
        }),
        path: Some(path),
        namespace: ks_spec.target_namespace.filter(|n| !n.is_empty()),
        origin: Origin::Flux { kustomization: ks_id },
    }))
}

/// The Argo CD Application that applied the target: by tracking id, else by instance label.
async fn argo(
    client: &kube::Client,
    workload: &Workload,
    target: &ObjectMeta,
    canary_ns: &str,
    argocd_ns: &str,
) -> Result<Option<Source>, Error> {
    let target_ns = target.namespace.as_deref().unwrap_or(canary_ns);
    let target_name = target.name.as_deref().unwrap_or_default();
    let tracked = target
        .annotations
        .as_ref()
        .and_then(|a| a.get(ARGO_TRACKING_ID))
        .and_then(|id| parse_tracking_id(id))
        // An id naming another object was copied (for example onto a primary): not Argo's.
        .filter(|id| id.name == target_name && (id.namespace.is_empty() || id.namespace == target_ns));
    let tracked_by_annotation = tracked.is_some();
    let application = if let Some(id) = tracked {
        let ns = id.app_namespace.clone().unwrap_or_else(|| argocd_ns.to_string());
        get_named(client, &APPLICATION, &ns, &id.app, || {
            format!(
                "the {ARGO_TRACKING_ID} annotation of {}",
                describe(target, canary_ns)
            )
        })
        .await?
    } else {
        let Some(instance) = target.labels.as_ref().and_then(|l| l.get(ARGO_INSTANCE)) else {
            return Ok(None);
        };
        let (app_ns, app) = split_app(instance);
        let ns = app_ns.unwrap_or_else(|| argocd_ns.to_string());
        // Helm sets the same label to the release name: no Application means not Argo CD's.
        match get(client, &APPLICATION, &ns, &app).await? {
            Some(application) => application,
            None => return Ok(None),
        }
    };
    let app_id = format!(
        "{}/{}",
        application.namespace().unwrap_or_default(),
        application.name_any()
    );
    if !argo_resources_list(&application.data, workload) {
        let by = if tracked_by_annotation {
            format!(
                "the {ARGO_TRACKING_ID} annotation of {}",
                describe(target, canary_ns)
            )
        } else {
            format!("the {ARGO_INSTANCE} label of {}", describe(target, canary_ns))
        };
        return Err(Error::NotManaged {
            source_object: format!("Application {app_id}"),
            target: workload.to_string(),
            field: "status.resources",
            referrer: by,
        });
    }
    let app_spec: ApplicationSpec = spec(&APPLICATION, &application)?;
    let all: Vec<ApplicationSource> = app_spec
        .source
        .into_iter()
        .chain(app_spec.sources.unwrap_or_default())
        .collect();
    let Some(source) = all.iter().find(|s| s.path.is_some()).cloned() else {
        let chart = all.iter().find_map(|s| s.chart.clone());
        return Err(Error::NotGitSource {
            referrer: format!("Application {app_id}"),
            kind: if chart.is_some() {
                "Helm chart"
            } else {
                "a source without path"
            }
            .to_string(),
            name: chart.unwrap_or_default(),
        });
    };
    let raw_path = source.path.clone().unwrap_or_default();
    let path = normalise_path(&raw_path)
        .ok_or_else(|| invalid_path(&format!("Application {app_id} spec.source.path"), &raw_path))?;
    let branch = argo_branch(&app_id, source.target_revision.as_deref())?;
    let secret = argo_secret(client, argocd_ns, &source.repo_url).await?;
    Ok(Some(Source {
        remote: Remote {
            url: source.repo_url,
            branch,
        },
        secret,
        path: Some(path),
        namespace: app_spec
            .destination
            .and_then(|d| d.namespace)
            .filter(|n| !n.is_empty()),
        origin: Origin::Argo { application: app_id },
    }))
}

/// Argo CD's Secret for `repo_url`: a `repository` Secret with that `url`, else the
/// `repo-creds` template with the longest matching `url` prefix. Only Secrets with credentials.
async fn argo_secret(
    client: &kube::Client,
    argocd_ns: &str,
    repo_url: &str,
) -> Result<Option<SecretRef>, Error> {
    let api = Api::<Secret>::namespaced(client.clone(), argocd_ns);
    let wanted = normalise_url(repo_url);
    let list = |secret_type: &'static str| {
        let api = api.clone();
        async move {
            api.list(&ListParams::default().labels(&format!("{ARGO_SECRET_TYPE}={secret_type}")))
                .await
                .map_err(|source| Error::List {
                    what: "Argo CD repository Secrets",
                    namespace: argocd_ns.to_string(),
                    source,
                })
        }
    };
    let url_of = |s: &Secret| -> Option<(String, BTreeMap<String, Vec<u8>>)> {
        let data: BTreeMap<String, Vec<u8>> = s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let url = String::from_utf8(data.get("url")?.clone()).ok()?;
        Some((normalise_url(&url), data))
    };
    let reference = |s: &Secret| SecretRef {
        namespace: argocd_ns.to_string(),
        name: s.name_any(),
    };
    for secret in list("repository").await?.items {
        if let Some((url, data)) = url_of(&secret)
            && url == wanted
        {
            // A repository Secret without credentials declares a public repository.
            return Ok(has_credential_keys(&data).then(|| reference(&secret)));
        }
    }
    let mut best: Option<(usize, SecretRef)> = None;
    for secret in list("repo-creds").await?.items {
        if let Some((prefix, data)) = url_of(&secret)
            && wanted.starts_with(&prefix)
            && has_credential_keys(&data)
            && best.as_ref().is_none_or(|(len, _)| prefix.len() > *len)
        {
            best = Some((prefix.len(), reference(&secret)));
        }
    }
    Ok(best.map(|(_, s)| s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretRef {
        SecretRef {
            namespace: "flux-system".into(),
            name: "repo".into(),
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn tracking_id_plain() {
        let id = parse_tracking_id("podinfo:apps/Deployment:test/podinfo").expect("parses");
        assert_eq!(
            id,
            TrackingId {
                app_namespace: None,
                app: "podinfo".into(),
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: "test".into(),
                name: "podinfo".into(),
            }
        );
    }

    #[test]
    fn tracking_id_with_app_namespace() {
        let id = parse_tracking_id("team-a_podinfo:apps/Deployment:test/podinfo").expect("parses");
        assert_eq!(id.app_namespace.as_deref(), Some("team-a"));
        assert_eq!(id.app, "podinfo");
    }

    #[test]
    fn tracking_id_core_group_and_cluster_scope() {
        let id = parse_tracking_id("app:/Service:test/podinfo").expect("parses");
        assert_eq!((id.group.as_str(), id.kind.as_str()), ("", "Service"));
        let id = parse_tracking_id("app:rbac.authorization.k8s.io/ClusterRole:/reader").expect("parses");
        assert_eq!((id.namespace.as_str(), id.name.as_str()), ("", "reader"));
    }

    #[test]
    fn tracking_id_malformed() {
        for bad in [
            "",
            "podinfo",
            "podinfo:apps/Deployment",
            "podinfo:Deployment:test/podinfo",
            ":apps/Deployment:test/podinfo",
            "podinfo:apps/:test/podinfo",
            "podinfo:apps/Deployment:test/",
            "podinfo:apps/Deployment:test",
        ] {
            assert_eq!(parse_tracking_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn instance_label_app_namespace_split() {
        assert_eq!(split_app("podinfo"), (None, "podinfo".to_string()));
        assert_eq!(
            split_app("ns_podinfo"),
            (Some("ns".to_string()), "podinfo".to_string())
        );
        assert_eq!(split_app("_podinfo"), (None, "_podinfo".to_string()));
    }

    #[test]
    fn paths_are_normalised() {
        for (raw, want) in [
            ("./apps/x/", "apps/x"),
            ("apps/x", "apps/x"),
            ("/apps/x", "apps/x"),
            ("./", ""),
            (".", ""),
            ("", ""),
            ("apps//x/./y", "apps/x/y"),
            ("apps/x/../y", "apps/y"),
            ("apps/podinfo/deployment.yaml", "apps/podinfo/deployment.yaml"),
        ] {
            assert_eq!(normalise_path(raw).as_deref(), Some(want), "{raw:?}");
        }
    }

    #[test]
    fn paths_above_the_root_are_refused() {
        for raw in ["..", "../x", "./apps/../../x"] {
            assert_eq!(normalise_path(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn basic_credentials() {
        let got = credentials_from_data(
            &secret(),
            &data(&[("username", "bot"), ("password", "s3cret")]),
            None,
        )
        .expect("basic");
        assert_eq!(
            got,
            Credentials::Basic {
                username: "bot".into(),
                password: "s3cret".into()
            }
        );
    }

    #[test]
    fn bearer_token_goes_in_password() {
        let got = credentials_from_data(&secret(), &data(&[("bearerToken", "tok")]), None).expect("token");
        assert_eq!(
            got,
            Credentials::Basic {
                username: TOKEN_USERNAME.into(),
                password: "tok".into()
            }
        );
        let got = credentials_from_data(
            &secret(),
            &data(&[("bearerToken", "tok"), ("username", "me")]),
            None,
        )
        .expect("token");
        assert!(matches!(got, Credentials::Basic { username, .. } if username == "me"));
    }

    #[test]
    fn flux_ssh_credentials_with_passphrase() {
        let got = credentials_from_data(
            &secret(),
            &data(&[
                ("identity", "KEY"),
                ("identity.pub", "PUB"),
                ("known_hosts", "github.com ssh-ed25519 AAAA"),
                ("password", "phrase"),
            ]),
            None,
        )
        .expect("ssh");
        assert_eq!(
            got,
            Credentials::Ssh {
                username: None,
                identity: "KEY".into(),
                passphrase: Some("phrase".into()),
                known_hosts: "github.com ssh-ed25519 AAAA".into(),
            }
        );
    }

    #[test]
    fn ssh_wins_over_basic_keys() {
        let got = credentials_from_data(
            &secret(),
            &data(&[("identity", "KEY"), ("known_hosts", "h"), ("username", "git")]),
            None,
        )
        .expect("ssh");
        assert!(matches!(got, Credentials::Ssh { username: Some(u), passphrase: None, .. } if u == "git"));
    }

    #[test]
    fn argo_ssh_key_uses_fallback_known_hosts() {
        let got = credentials_from_data(
            &secret(),
            &data(&[("sshPrivateKey", "KEY"), ("url", "git@h:o/r")]),
            Some("h ssh-ed25519 AAAA".into()),
        )
        .expect("ssh");
        assert!(matches!(got, Credentials::Ssh { known_hosts, identity, .. }
            if known_hosts == "h ssh-ed25519 AAAA" && identity == "KEY"));
    }

    #[test]
    fn ssh_key_without_known_hosts_is_refused() {
        let err = credentials_from_data(&secret(), &data(&[("identity", "TOPSECRETKEY")]), None)
            .expect_err("no known_hosts");
        assert_eq!(err.category(), "GitKnownHostsMissing");
        let text = err.to_string();
        assert!(
            text.contains("known_hosts") && text.contains("flux-system/repo"),
            "{text}"
        );
        assert!(!text.contains("TOPSECRETKEY"), "{text}");
    }

    #[test]
    fn no_usable_keys_names_the_keys_not_the_values() {
        let err = credentials_from_data(
            &secret(),
            &data(&[("url", "https://x"), ("password", "hunter2")]),
            None,
        )
        .expect_err("no username");
        assert_eq!(err.category(), "InvalidGitSecret");
        let text = err.to_string();
        assert!(text.contains("keys: password, url"), "{text}");
        assert!(
            text.contains("username") && text.contains("sshPrivateKey"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let err = credentials_from_data(&secret(), &BTreeMap::new(), None).expect_err("empty");
        assert!(err.to_string().contains("keys: none"), "{err}");
    }

    #[test]
    fn empty_values_count_as_missing() {
        let err = credentials_from_data(&secret(), &data(&[("username", "bot"), ("password", "")]), None)
            .expect_err("empty password");
        assert_eq!(err.category(), "InvalidGitSecret");
    }

    #[test]
    fn non_utf8_value_names_the_key() {
        let mut d = data(&[("username", "bot")]);
        d.insert("password".into(), vec![0xff, 0xfe]);
        let err = credentials_from_data(&secret(), &d, None).expect_err("binary");
        assert!(err.to_string().contains("`password`"), "{err}");
    }

    #[test]
    fn credential_keys_detected() {
        assert!(!has_credential_keys(&data(&[("url", "u"), ("type", "git")])));
        assert!(has_credential_keys(&data(&[("sshPrivateKey", "k")])));
        assert!(!has_credential_keys(&data(&[("password", "")])));
    }

    #[test]
    fn flux_branches() {
        let r = |branch: Option<&str>, tag: Option<&str>, name: Option<&str>| GitRef {
            branch: branch.map(Into::into),
            tag: tag.map(Into::into),
            semver: None,
            name: name.map(Into::into),
            commit: None,
        };
        assert_eq!(flux_branch("o", None).expect("default"), "master");
        assert_eq!(
            flux_branch("o", Some(&r(None, None, None))).expect("empty"),
            "master"
        );
        assert_eq!(
            flux_branch("o", Some(&r(Some("main"), None, None))).expect("b"),
            "main"
        );
        assert_eq!(
            flux_branch("o", Some(&r(None, None, Some("refs/heads/dev")))).expect("name"),
            "dev"
        );
        let err =
            flux_branch("GitRepository a/b", Some(&r(Some("main"), Some("v1"), None))).expect_err("tag");
        assert_eq!(err.category(), "GitSourceNotBranch");
        assert!(
            err.to_string().contains("GitRepository a/b follows tag v1"),
            "{err}"
        );
        assert!(flux_branch("o", Some(&r(None, None, Some("refs/tags/v1")))).is_err());
        let commit = GitRef {
            commit: Some("abc".into()),
            ..r(Some("main"), None, None)
        };
        assert!(flux_branch("o", Some(&commit)).is_err());
        let semver = GitRef {
            semver: Some(">=1".into()),
            ..r(None, None, None)
        };
        assert!(flux_branch("o", Some(&semver)).is_err());
    }

    #[test]
    fn argo_branches() {
        assert_eq!(argo_branch("a", None).expect("none"), "main");
        assert_eq!(argo_branch("a", Some("")).expect("empty"), "main");
        assert_eq!(argo_branch("a", Some("HEAD")).expect("head"), "main");
        assert_eq!(argo_branch("a", Some("prod")).expect("branch"), "prod");
        assert_eq!(argo_branch("a", Some("refs/heads/prod")).expect("ref"), "prod");
        assert!(argo_branch("a", Some("refs/tags/v1")).is_err());
        assert!(argo_branch("a", Some("0123456789abcdef0123456789abcdef01234567")).is_err());
    }

    #[test]
    fn urls_compare_like_argo() {
        assert_eq!(
            normalise_url("https://GitHub.com/Org/Repo.git/"),
            normalise_url("https://github.com/org/repo")
        );
        assert_ne!(
            normalise_url("https://github.com/org/repo-a"),
            normalise_url("https://github.com/org/repo")
        );
    }

    #[test]
    fn labels_name_and_namespace() {
        let meta = ObjectMeta {
            labels: Some(
                [(FLUX_KUSTOMIZATION_NAME.to_string(), "apps".to_string())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        assert_eq!(
            labelled(
                &meta,
                FLUX_KUSTOMIZATION_NAME,
                FLUX_KUSTOMIZATION_NAMESPACE,
                "dflt"
            ),
            Some(("dflt".to_string(), "apps".to_string()))
        );
        assert_eq!(
            labelled(&meta, FLUX_HELMRELEASE_NAME, FLUX_HELMRELEASE_NAMESPACE, "dflt"),
            None
        );
    }

    #[test]
    fn categories_are_fixed_strings() {
        let err = Error::NotGitSource {
            referrer: "Kustomization a/b".into(),
            kind: "OCIRepository".into(),
            name: "a/c".into(),
        };
        assert_eq!(err.category(), "NotGitSource");
        assert!(err.to_string().contains("set spec.gitops.repository"), "{err}");
    }
}
