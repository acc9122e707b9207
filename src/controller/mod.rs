//! The controller process: configuration, waiting for the CRDs, leader election, the Canary
//! watch, and a clean shutdown. Only this module knows the order of things.

mod canary;
mod events;
mod finalize;
mod git;
mod leader;
mod preview;
mod retry;
mod review;
mod status;
mod steer;
mod watches;

pub use leader::{LeaderElector, LeaseConfig};
pub use retry::{RetryError, request_retry};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::api::{AlertProvider, Canary, MetricTemplate};
use crate::telemetry::{Health, LogFormat, Metrics};

/// Flags of `flaggit run`. Every flag can also be set by the environment variable it names.
#[derive(Clone, Debug, clap::Args)]
pub struct RunConfig {
    /// Kubeconfig file; default `$KUBECONFIG`, `~/.kube/config`, or the in-cluster account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch canaries in this namespace only; default all namespaces.
    #[arg(long, env = "FLAGGIT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Default traffic provider for canaries without `spec.provider`: one of Flagger's
    /// provider strings, or `smi:<version>:<mesh>`.
    #[arg(long, env = "FLAGGIT_MESH_PROVIDER", default_value = "istio", value_parser = parse_mesh_provider)]
    pub mesh_provider: String,
    /// Prometheus used for the builtin metrics of canaries without `spec.metricsServer`.
    #[arg(
        long,
        env = "FLAGGIT_METRICS_SERVER",
        default_value = "http://prometheus:9090"
    )]
    pub metrics_server: String,
    /// Address the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`) listen on.
    #[arg(long, env = "FLAGGIT_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Port of the HTTP endpoints.
    #[arg(long, env = "FLAGGIT_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Log format.
    #[arg(long, env = "FLAGGIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log level or `tracing` filter, for example `info` or `flaggit=debug,kube=info`.
    #[arg(long, env = "FLAGGIT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Take the leader Lease before acting, so that only one replica acts at a time.
    #[arg(long, env = "FLAGGIT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease; default the pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "flaggit-system")]
    pub leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "flaggit-leader-election")]
    pub leader_election_lease: String,
    /// Seconds a leader's lease stays valid without renewal: the longest a crashed leader
    /// holds up a standby.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's identity in the Lease; default the pod name plus a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Labels looked for, in order, in a target's `spec.selector.matchLabels`; the first one
    /// found is the label that tells primary and canary pods apart.
    #[arg(
        long,
        env = "FLAGGIT_SELECTOR_LABELS",
        value_delimiter = ',',
        default_value = "app,name,app.kubernetes.io/name"
    )]
    pub selector_labels: Vec<String>,
    /// Prefixes of the target's labels and annotations copied to the primary, comma
    /// separated; `*` copies all. The GitOps tool's keys are never copied.
    #[arg(long, env = "FLAGGIT_INCLUDE_LABEL_PREFIX", value_delimiter = ',')]
    pub include_label_prefix: Vec<String>,
    /// Track the ConfigMaps and Secrets targets use: a change to one starts a release, and
    /// the primary gets `-primary` copies.
    #[arg(long, env = "FLAGGIT_CONFIG_TRACKING", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_config_tracking: bool,
    /// Canaries reconciled at the same time; a slow canary (a hanging webhook, a slow metrics
    /// query) holds up only itself.
    #[arg(long, env = "FLAGGIT_CONCURRENCY", default_value_t = 64)]
    pub concurrency: u16,
    /// URL every canary event is POSTed to (Flagger's event webhook payload) when the canary
    /// has no `event` webhook of its own.
    #[arg(long, env = "EVENT_WEBHOOK_URL")]
    pub event_webhook: Option<String>,
    /// Shortest `analysis.interval` honoured; shorter intervals are raised to it. Flagger's
    /// 10s; lower it only for tests and demos.
    #[arg(long, env = "FLAGGIT_MIN_ANALYSIS_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub min_analysis_interval: Duration,
    /// After SIGTERM, how long running reconciles (and Git pushes) may take to finish before
    /// they are cut off and the leader lease is released anyway. Keep it below the pod's
    /// `terminationGracePeriodSeconds`.
    #[arg(long, env = "FLAGGIT_GRACEFUL_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_interval)]
    pub graceful_shutdown_timeout: Duration,
    /// The GitOps config repository records go to when neither the canary's
    /// `spec.gitops.repository` nor a Flux / Argo CD source names one.
    #[arg(long, env = "FLAGGIT_GIT_URL")]
    pub git_url: Option<String>,
    /// Branch of `--git-url`.
    #[arg(long, env = "FLAGGIT_GIT_BRANCH", default_value = "main")]
    pub git_branch: String,
    /// Secret (`namespace/name`) with the credentials of `--git-url`: `username`/`password`
    /// for HTTPS, `identity`/`known_hosts` for SSH (the keys of a Flux GitRepository secret).
    #[arg(long, env = "FLAGGIT_GIT_SECRET")]
    pub git_secret: Option<String>,
    /// Directory of the ledgers in the config repo; keep it out of what Flux / Argo CD apply.
    #[arg(long, env = "FLAGGIT_GIT_LEDGER_DIR", default_value = ".flaggit")]
    pub git_ledger_dir: String,
    /// Author and committer of the controller's commits.
    #[arg(long, env = "FLAGGIT_GIT_AUTHOR_NAME", default_value = "flaggit")]
    pub git_author_name: String,
    #[arg(
        long,
        env = "FLAGGIT_GIT_AUTHOR_EMAIL",
        default_value = "flaggit@users.noreply.github.com"
    )]
    pub git_author_email: String,
    /// Secret (`namespace/name`) with the SSH key every commit flaggit makes is signed with:
    /// `signingKey` (or `ssh-privatekey`), an unencrypted Ed25519 private key in OpenSSH format.
    /// Register its public key with the forge so records show as verified.
    #[arg(long, env = "FLAGGIT_GIT_SIGNING_SECRET")]
    pub git_signing_secret: Option<String>,
    /// Where the cached clones of the config repos are kept.
    #[arg(long, env = "FLAGGIT_GIT_CACHE_DIR", default_value = "/tmp/flaggit-git")]
    pub git_cache_dir: std::path::PathBuf,
    /// Which records are committed when the canary does not say (`spec.gitops.records`):
    /// `every-step` or `transitions`.
    #[arg(long, env = "FLAGGIT_GIT_RECORDS", default_value = "every-step", value_parser = parse_record_level)]
    pub git_records: crate::api::RecordLevel,
    /// The longest a record waits for others to join its push: a batch is pushed once no
    /// record arrived for 10 ms, or when its oldest record waited this long.
    #[arg(long, env = "FLAGGIT_GIT_BATCH_WINDOW", default_value = "250ms", value_parser = parse_interval)]
    pub git_batch_window: Duration,
    /// Argo CD's namespace, where its Applications and repository Secrets are.
    #[arg(long, env = "FLAGGIT_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,
    /// A repository (and path prefix) that canaries of a namespace may name in
    /// `spec.gitops.repository` / `spec.gitops.path` beyond the Flux or Argo CD source that
    /// applies their target: `namespace=NS,url=URL[,path=PREFIX]` (`namespace=*`: every
    /// namespace). Repeat the flag for more rules; in the environment, separate rules with `;`.
    #[arg(long = "git-allow", env = "FLAGGIT_GIT_ALLOW", value_delimiter = ';')]
    pub git_allow: Vec<crate::gitops::allow::Rule>,
    /// Secret (`namespace/name`) with the GitHub credentials for release pull requests: a
    /// `token`, or a GitHub App's `githubAppID`, `githubAppInstallationID` and
    /// `githubAppPrivateKey`; and `webhookSecret`, the secret of the repository webhook. Without
    /// it, canaries in `pull-request` mode commit to the branch.
    #[arg(long, env = "FLAGGIT_GITHUB_SECRET")]
    pub github_secret: Option<String>,
    /// GitHub's API; for GitHub Enterprise Server `https://HOST/api/v3`.
    #[arg(
        long,
        env = "FLAGGIT_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
    /// How often the API server is asked which routing kinds it serves, so the objects of a
    /// provider whose CRDs are installed after flaggit started are watched without a restart.
    #[arg(long, env = "FLAGGIT_ROUTING_DISCOVERY_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    pub routing_discovery_interval: Duration,
    /// Secret (`namespace/name`) with the GitLab credentials for release merge requests:
    /// `token` (a personal, group or project access token with the `api` scope; or
    /// `oauthToken`), and `webhookSecret`, the secret token of the project webhook.
    #[arg(long, env = "FLAGGIT_GITLAB_SECRET")]
    pub gitlab_secret: Option<String>,
    /// GitLab's API; for a self-managed GitLab `https://HOST/api/v4`.
    #[arg(
        long,
        env = "FLAGGIT_GITLAB_API_URL",
        default_value = "https://gitlab.com/api/v4"
    )]
    pub gitlab_api_url: String,
    /// Secret (`namespace/name`) with the Gitea or Forgejo credentials for release pull
    /// requests: `token` (an access token with the `write:repository`, `write:issue` and
    /// `read:organization` scopes), and `webhookSecret`, the secret of the repository webhook.
    #[arg(long, env = "FLAGGIT_GITEA_SECRET")]
    pub gitea_secret: Option<String>,
    /// The Gitea or Forgejo API: `https://HOST/api/v1` (Codeberg: `https://codeberg.org/api/v1`).
    /// Required with `--gitea-secret`.
    #[arg(long, env = "FLAGGIT_GITEA_API_URL")]
    pub gitea_api_url: Option<String>,
    /// The forge of a self-hosted host: `HOST=github|gitlab|gitea`, for repositories whose
    /// canary does not say `spec.gitops.pullRequest.forge` (github.com, gitlab.com and
    /// codeberg.org are known). Repeat the flag for more hosts; in the environment, separate
    /// rules with `;`.
    #[arg(long = "forge-host", env = "FLAGGIT_FORGE_HOST", value_delimiter = ';', value_parser = crate::forge::select::parse_host_rule)]
    pub forge_host: Vec<(String, crate::api::ForgeKind)>,
    /// How often an open release pull request is read when no webhook says it changed.
    #[arg(long, env = "FLAGGIT_FORGE_POLL_INTERVAL", default_value = "30s", value_parser = parse_interval)]
    pub forge_poll_interval: Duration,
    /// How long a user's repository permission read from the forge is reused. Approvals are
    /// checked again at each read of the pull request: a permission taken away stops counting
    /// within this time.
    #[arg(long, env = "FLAGGIT_FORGE_PERMISSION_TTL", default_value = "60s", value_parser = parse_interval)]
    pub forge_permission_ttl: Duration,
    /// Comment a preview on open pull requests that change a canary's target in its config
    /// repo (the plan, the metric checks against the primary now, warnings), updated on
    /// every push; read every `--forge-poll-interval`.
    #[arg(long, env = "FLAGGIT_PULL_REQUEST_PREVIEWS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pull_request_previews: bool,
    /// The controller-wide alert destination, for canaries without `analysis.alerts`.
    #[command(flatten)]
    pub alerts: crate::alerts::Flags,
    /// Controller-wide router settings (ingress class, NGINX annotation prefix).
    #[command(flatten)]
    pub routers: crate::router::Settings,
}

/// Checks `--mesh-provider` at start-up, so a typo stops the controller with the list of
/// providers instead of failing every canary later.
fn parse_mesh_provider(text: &str) -> Result<String, String> {
    text.parse::<crate::api::MeshProvider>()
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

fn parse_record_level(text: &str) -> Result<crate::api::RecordLevel, String> {
    match text {
        "every-step" => Ok(crate::api::RecordLevel::EveryStep),
        "transitions" => Ok(crate::api::RecordLevel::Transitions),
        other => Err(format!(
            "{other:?} is not a record level: use every-step or transitions"
        )),
    }
}

pub fn parse_interval(text: &str) -> Result<Duration, String> {
    crate::rollout::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 10s, 500ms or 1m"))
}

impl RunConfig {
    /// The Secret of `--git-signing-secret`, None when unset or not `namespace/name`.
    pub fn signing_secret(&self) -> Option<crate::gitops::source::SecretRef> {
        let (namespace, name) = self.git_signing_secret.as_deref()?.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty()).then(|| crate::gitops::source::SecretRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// This cluster's name (`--cluster-name`), None when unset or empty.
    pub fn cluster_name(&self) -> Option<String> {
        self.alerts.cluster_name.clone().filter(|name| !name.is_empty())
    }

    /// The workload layer's settings from the flags.
    pub fn workload_settings(&self) -> crate::workload::Settings {
        crate::workload::Settings {
            selector_labels: self.selector_labels.clone(),
            include_label_prefixes: self.include_label_prefix.clone(),
            config_tracking: self.enable_config_tracking,
        }
    }
}

/// Why the controller process stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the Kubernetes client configuration: {0}")]
    LoadConfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create the Kubernetes client: {0}")]
    CreateClient(#[source] kube::Error),
    #[error("cannot serve the HTTP endpoints on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or write the leader lease {name}: {source}")]
    Lease {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lost the leader lease {0} to another replica; exiting so that only one acts")]
    LostLease(String),
    #[error("cannot set up release pull requests: {0}")]
    Forge(String),
    #[error("{0}")]
    InvalidFlag(String),
}

impl Error {
    /// A short, fixed name for the kind of failure, used as event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::LoadConfig(_) => "LoadConfig",
            Self::CreateClient(_) => "CreateClient",
            Self::Serve { .. } => "Serve",
            Self::Lease { .. } => "Lease",
            Self::LostLease(_) => "LostLease",
            Self::Forge(_) => "Forge",
            Self::InvalidFlag(_) => "InvalidFlag",
        }
    }
}

/// The forges release pull requests are opened on, and the webhook deliveries about them.
pub struct ForgeSetup {
    pub forges: Arc<crate::forge::select::Forges>,
    pub nudges: tokio::sync::mpsc::Receiver<crate::forge::receiver::Nudge>,
}

/// One forge's client from its Secret, and the webhook secrets found there.
struct Configured {
    forge: Arc<dyn crate::forge::Forge>,
    webhook: Vec<Vec<u8>>,
}

/// Reads the forge Secret `reference` (`namespace/name`) of `flag`.
async fn forge_secret(
    client: &Client,
    flag: &str,
    reference: &str,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Error> {
    let bad = |message: String| Error::Forge(format!("{flag} {reference}: {message}"));
    let (namespace, name) = reference
        .split_once('/')
        .ok_or_else(|| bad("must be namespace/name".into()))?;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(name)
        .await
        .map_err(|e| bad(format!("cannot read the Secret: {e}")))?;
    Ok(crate::analysis::provider::secret_data(&secret))
}

/// Builds the client of `kind` from its Secret's data; the token never leaves the client.
fn forge_client(
    kind: crate::api::ForgeKind,
    config: &RunConfig,
    data: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<Arc<dyn crate::forge::Forge>, String> {
    use crate::api::ForgeKind;
    use crate::forge::{gitea, github, gitlab};
    let ttl = config.forge_permission_ttl;
    Ok(match kind {
        ForgeKind::Github => {
            let auth = github::GitHubAuth::from_secret(data).map_err(|e| e.to_string())?;
            Arc::new(
                github::GitHub::new(&config.github_api_url, auth)
                    .map_err(|e| e.to_string())?
                    .with_permission_ttl(ttl),
            )
        }
        ForgeKind::Gitlab => {
            let auth = gitlab::GitLabAuth::from_secret(data).map_err(|e| e.to_string())?;
            Arc::new(
                gitlab::GitLab::new(&config.gitlab_api_url, auth)
                    .map_err(|e| e.to_string())?
                    .with_permission_ttl(ttl),
            )
        }
        ForgeKind::Gitea => {
            let url = config
                .gitea_api_url
                .as_deref()
                .ok_or("--gitea-api-url is required with --gitea-secret: https://HOST/api/v1".to_string())?;
            let auth = gitea::GiteaAuth::from_secret(data).map_err(|e| e.to_string())?;
            Arc::new(
                gitea::Gitea::new(url, auth)
                    .map_err(|e| e.to_string())?
                    .with_permission_ttl(ttl),
            )
        }
    })
}

/// Builds a client for each forge whose Secret is given (`--github-secret`,
/// `--gitlab-secret`, `--gitea-secret`), and a webhook receiver for each whose Secret has a
/// `webhookSecret`.
async fn forge_setup(
    client: &Client,
    config: &RunConfig,
) -> Result<Option<(ForgeSetup, Option<axum::Router>)>, Error> {
    use crate::api::ForgeKind;
    let mut forges = crate::forge::select::Forges::default();
    for (host, kind) in &config.forge_host {
        forges = forges.with_host(host.clone(), *kind);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut router: Option<axum::Router> = None;
    let secrets = [
        (ForgeKind::Github, "--github-secret", &config.github_secret),
        (ForgeKind::Gitlab, "--gitlab-secret", &config.gitlab_secret),
        (ForgeKind::Gitea, "--gitea-secret", &config.gitea_secret),
    ];
    for (kind, flag, reference) in secrets {
        let Some(reference) = reference else {
            continue;
        };
        let data = forge_secret(client, flag, reference).await?;
        let forge = forge_client(kind, config, &data)
            .map_err(|e| Error::Forge(format!("{flag} {reference}: {e}")))?;
        // The previous secret is accepted too while a rotation is under way.
        let configured = Configured {
            forge,
            webhook: ["webhookSecret", "webhookSecretPrevious"]
                .iter()
                .filter_map(|key| data.get(*key).filter(|v| !v.is_empty()).cloned())
                .collect(),
        };
        if data.get("webhookSecret").is_some_and(|v| !v.is_empty()) {
            let path = crate::forge::hooks::path(kind);
            tracing::info!(forge = kind.as_str(), path, "receiving forge webhooks");
            let receiver = crate::forge::receiver::router_for(
                kind,
                crate::forge::receiver::Config::new(crate::forge::receiver::Secrets::new(configured.webhook)),
                tx.clone(),
            );
            router = Some(match router {
                Some(router) => router.merge(receiver),
                None => receiver,
            });
        } else {
            tracing::info!(forge = kind.as_str(), every = ?config.forge_poll_interval, "no webhookSecret in the forge Secret: release pull requests are polled");
        }
        forges = forges.with(kind, configured.forge);
    }
    if forges.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        ForgeSetup {
            forges: Arc::new(forges),
            nudges: rx,
        },
        router,
    )))
}

/// Runs the controller until SIGTERM or Ctrl-C, or until it loses the leader lease.
pub async fn run(config: RunConfig) -> Result<(), Error> {
    crate::install_crypto_provider();
    if let Some(name) = config.cluster_name() {
        crate::gitops::ledger::valid_cluster_name(&name).map_err(Error::InvalidFlag)?;
    }
    if let Some(secret) = &config.git_signing_secret
        && config.signing_secret().is_none()
    {
        return Err(Error::InvalidFlag(format!(
            "--git-signing-secret {secret:?} must be namespace/name"
        )));
    }
    let client = client(&config).await?;
    let (forge, webhooks) = match forge_setup(&client, &config).await? {
        Some((forge, router)) => (Some(forge), router),
        None => (None, None),
    };
    let metrics = Arc::new(Metrics::new(&config.mesh_provider));
    let health = Arc::new(Health::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });

    let addr = SocketAddr::new(config.listen_address, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    let server = tokio::spawn(crate::telemetry::serve(
        listener,
        health.clone(),
        metrics.clone(),
        webhooks,
        stopped(stop_rx.clone()),
    ));

    let result = lead_and_run(&config, client, &health, &metrics, forge, stop_rx).await;
    // The HTTP server follows the stop signal; on error, stop it too.
    server.abort();
    result
}

async fn lead_and_run(
    config: &RunConfig,
    client: Client,
    health: &Health,
    metrics: &Arc<Metrics>,
    forge: Option<ForgeSetup>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    if !wait_for_crds(&client, config.namespace.as_deref(), &mut stop).await {
        return Ok(());
    }
    health.set_ready(true);

    if !config.leader_election {
        let controller = tokio::spawn(canary::run(
            client,
            config.clone(),
            metrics.clone(),
            forge,
            stopped(stop.clone()),
        ));
        wind_down(controller, &mut stop, config.graceful_shutdown_timeout).await;
        return Ok(());
    }

    let mut elector = LeaderElector::new(client.clone(), lease_config(config));
    let lease_error = |source| Error::Lease {
        name: config.leader_election_lease.clone(),
        source,
    };
    tracing::info!(lease = %config.leader_election_lease, identity = %elector.config().identity, "waiting for the leader lease");
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(error = %error, "cannot take the leader lease yet"),
        }
        if sleep_or_stop(elector.config().retry_every, &mut stop).await {
            return Ok(());
        }
    }
    tracing::info!(lease = %config.leader_election_lease, "acquired the leader lease");
    metrics.leader.set(1);

    let controller = tokio::spawn(canary::run(
        client,
        config.clone(),
        metrics.clone(),
        forge,
        stopped(stop.clone()),
    ));
    let mut last_renewal = tokio::time::Instant::now();
    let outcome = loop {
        if sleep_or_stop(elector.config().renew_every, &mut stop).await {
            break Ok(());
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewal = tokio::time::Instant::now(),
            Ok(false) => break Err(Error::LostLease(config.leader_election_lease.clone())),
            // A blip of the API server: keep acting while the lease we hold is still valid.
            Err(error) if last_renewal.elapsed() < elector.config().duration => {
                tracing::warn!(error = %error, "cannot renew the leader lease; retrying")
            }
            Err(error) => break Err(lease_error(error)),
        }
    };
    metrics.leader.set(0);
    if outcome.is_err() {
        controller.abort();
        return outcome;
    }
    // Stop acting first, then hand the lease over so a standby starts at once.
    wind_down(controller, &mut stop, config.graceful_shutdown_timeout).await;
    if let Err(error) = elector.release().await {
        tracing::warn!(error = %error, "cannot release the leader lease; a standby takes over when it expires");
    } else {
        tracing::info!("released the leader lease");
    }
    Ok(())
}

fn lease_config(config: &RunConfig) -> LeaseConfig {
    let duration = Duration::from_secs(config.lease_duration_seconds.max(3));
    let identity = match &config.identity {
        Some(name) => format!("{name}_{}", random_suffix()),
        None => format!("{}_{}", hostname(), random_suffix()),
    };
    LeaseConfig {
        namespace: config.leader_election_namespace.clone(),
        name: config.leader_election_lease.clone(),
        identity,
        duration,
        renew_every: duration / 3,
        retry_every: Duration::from_secs(2),
    }
}

async fn client(config: &RunConfig) -> Result<Client, Error> {
    kube_client(config.kubeconfig.as_deref()).await
}

/// A Kubernetes client from `kubeconfig`, else `$KUBECONFIG`, `~/.kube/config` or the
/// in-cluster ServiceAccount.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<Client, Error> {
    crate::install_crypto_provider();
    let kube_config = match kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| Error::LoadConfig(Box::new(e)))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| Error::LoadConfig(Box::new(e)))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::LoadConfig(Box::new(e)))?,
    };
    Client::try_from(kube_config).map_err(Error::CreateClient)
}

/// Waits until the three flagger.app CRDs are served. Returns false if stopped first.
async fn wait_for_crds(client: &Client, namespace: Option<&str>, stop: &mut watch::Receiver<bool>) -> bool {
    let mut warned = false;
    loop {
        match crds_served(client, namespace).await {
            Ok(()) => {
                tracing::info!("the flagger.app CRDs are served");
                return true;
            }
            Err(error) if !warned => {
                tracing::warn!(error = %error, "waiting for the flagger.app CRDs: install manifests/crds");
                warned = true;
            }
            Err(error) => tracing::debug!(error = %error, "still waiting for the flagger.app CRDs"),
        }
        if sleep_or_stop(Duration::from_secs(2), stop).await {
            return false;
        }
    }
}

async fn crds_served(client: &Client, namespace: Option<&str>) -> Result<(), kube::Error> {
    let one = ListParams::default().limit(1);
    match namespace {
        Some(ns) => {
            Api::<Canary>::namespaced(client.clone(), ns)
                .list_metadata(&one)
                .await?;
            Api::<MetricTemplate>::namespaced(client.clone(), ns)
                .list_metadata(&one)
                .await?;
            Api::<AlertProvider>::namespaced(client.clone(), ns)
                .list_metadata(&one)
                .await?;
        }
        None => {
            Api::<Canary>::all(client.clone()).list_metadata(&one).await?;
            Api::<MetricTemplate>::all(client.clone())
                .list_metadata(&one)
                .await?;
            Api::<AlertProvider>::all(client.clone())
                .list_metadata(&one)
                .await?;
        }
    }
    Ok(())
}

/// Waits for the controller task to end. Once the stop signal has come, it gets `grace` to
/// finish its running reconciles; then it is cut off so the process still exits in time.
async fn wind_down(
    mut controller: tokio::task::JoinHandle<()>,
    stop: &mut watch::Receiver<bool>,
    grace: Duration,
) {
    tokio::select! {
        _ = &mut controller => return,
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    tracing::info!(grace = ?grace, "stopping the canary controller");
    if tokio::time::timeout(grace, &mut controller).await.is_err() {
        tracing::warn!(grace = ?grace, "running reconciles did not finish within the graceful shutdown timeout; cutting them off");
        controller.abort();
    }
}

/// Sleeps for `period`; returns true if the stop signal came first.
async fn sleep_or_stop(period: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(period) => None,
        _ = stop.wait_for(|stopped| *stopped) => Some(true),
    };
    stopped.unwrap_or_else(|| *stop.borrow())
}

/// Resolves when the stop signal is sent (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "flaggit".to_string())
}

fn random_suffix() -> String {
    // Enough to tell two processes with the same pod name apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}
