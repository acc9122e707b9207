//! Alert providers (Slack, Microsoft Teams, Discord, Rocket.Chat, Google Chat): the messages a rollout sends to people.

mod payload;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::api::{AlertProvider, AlertProviderType, AlertSeverity, Canary, CanaryAlert};
use crate::rollout::{Alert, Severity};
pub use payload::{DEFAULT_CHANNEL, DEFAULT_USERNAME, Field, Message, body, endpoint, metadata_fields};

/// How long one alert may take, lookups and HTTP call included, before it is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Alerts sent at the same time; more are dropped (and logged) rather than queued, so
/// that a hanging chat service cannot pile up work.
pub const MAX_IN_FLIGHT: usize = 64;

/// The controller-wide notifier, used for canaries without `analysis.alerts` (Flagger's
/// flags of the same names).
#[derive(Clone, Default, clap::Args)]
pub struct Flags {
    /// Slack incoming webhook URL of the controller-wide notifier.
    #[arg(long, env = "SLACK_URL")]
    pub slack_url: Option<String>,
    /// Bearer token sent to the Slack URL.
    #[arg(long, env = "SLACK_TOKEN")]
    pub slack_token: Option<String>,
    /// HTTP(S) proxy used to reach the Slack URL.
    #[arg(long, env = "SLACK_PROXY_URL")]
    pub slack_proxy_url: Option<String>,
    /// Slack channel of the controller-wide notifier.
    #[arg(long, env = "SLACK_CHANNEL", default_value = DEFAULT_CHANNEL)]
    pub slack_channel: String,
    /// User name Slack messages are posted as.
    #[arg(long, env = "SLACK_USER", default_value = DEFAULT_USERNAME)]
    pub slack_user: String,
    /// Microsoft Teams incoming webhook URL; when set, the controller-wide notifier is Teams
    /// instead of Slack.
    #[arg(long, env = "MSTEAMS_URL")]
    pub msteams_url: Option<String>,
    /// HTTP(S) proxy used to reach the Teams URL.
    #[arg(long, env = "MSTEAMS_PROXY_URL")]
    pub msteams_proxy_url: Option<String>,
    /// Name of this cluster: the `Cluster` field of every alert, and the cluster's part of the
    /// Git record (ledger path, release branches, commit subjects, the `Flaggit-Cluster`
    /// trailer) when several clusters write to one config repository. Unset keeps the
    /// single-cluster layout.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
}

/// Webhook URLs carry their secret in the path, so they are never printed.
impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Flags")
            .field("slack_url", &set(&self.slack_url))
            .field("slack_token", &set(&self.slack_token))
            .field("slack_proxy_url", &set(&self.slack_proxy_url))
            .field("slack_channel", &self.slack_channel)
            .field("slack_user", &self.slack_user)
            .field("msteams_url", &set(&self.msteams_url))
            .field("msteams_proxy_url", &set(&self.msteams_proxy_url))
            .field("cluster_name", &self.cluster_name)
            .finish()
    }
}

/// Why an alert was not delivered. Messages never contain a webhook URL or a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the alert HTTP client: {0}")]
    BuildClient(#[source] reqwest::Error),
    #[error(
        "cannot read AlertProvider {namespace}/{name}: {source}: create it or fix analysis.alerts[].providerRef"
    )]
    GetProvider {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "cannot read Secret {namespace}/{name} of AlertProvider {provider}: {source}: create it in the provider's namespace or fix spec.secretRef"
    )]
    GetSecret {
        namespace: String,
        name: String,
        provider: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "AlertProvider {provider} has no address: set spec.address or the `address` key of its secretRef"
    )]
    NoAddress { provider: String },
    #[error(
        "AlertProvider {provider}: the proxy is not a valid URL: fix spec.proxy or the `proxy` key of its secretRef"
    )]
    InvalidProxy { provider: String },
    #[error("alert to {provider} was not sent: {reason}")]
    Send { provider: String, reason: String },
    #[error("alert to {provider} was refused with HTTP {status}")]
    Refused { provider: String, status: u16 },
    #[error("alert to {provider} timed out after {}s", SEND_TIMEOUT.as_secs())]
    Timeout { provider: String },
}

impl Error {
    /// A short fixed name for the kind of failure: log field and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::BuildClient(_) => "BuildAlertClient",
            Self::GetProvider { .. } => "GetAlertProvider",
            Self::GetSecret { .. } => "GetAlertProviderSecret",
            Self::NoAddress { .. } | Self::InvalidProxy { .. } => "InvalidAlertProvider",
            Self::Send { .. } => "SendAlert",
            Self::Refused { .. } => "AlertRefused",
            Self::Timeout { .. } => "AlertTimeout",
        }
    }
}

/// Whether an alert of `severity` goes to a provider whose `analysis.alerts[].severity` is
/// `filter`. An empty or missing filter means `info` (Flagger never sends those: a bug).
pub fn should_send(filter: Option<AlertSeverity>, severity: Severity) -> bool {
    let lowest = match filter {
        None | Some(AlertSeverity::Unset | AlertSeverity::Info) => Severity::Info,
        Some(AlertSeverity::Warn) => Severity::Warn,
        Some(AlertSeverity::Error) => Severity::Error,
    };
    severity >= lowest
}

/// Where one message goes, resolved from flags or from an AlertProvider and its Secret.
#[derive(Clone)]
pub struct Destination {
    /// For logs: `AlertProvider ns/name` or `the controller-wide notifier`.
    pub provider: String,
    pub kind: AlertProviderType,
    pub address: String,
    pub token: Option<String>,
    pub proxy: Option<String>,
    pub channel: String,
    pub username: String,
}

impl Destination {
    /// The controller-wide destination: Teams when its URL is set, else Slack, else none.
    pub fn from_flags(flags: &Flags) -> Option<Self> {
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let provider = "the controller-wide notifier".to_owned();
        if let Some(address) = non_empty(&flags.msteams_url) {
            return Some(Self {
                provider,
                kind: AlertProviderType::Msteams,
                address,
                token: None,
                proxy: non_empty(&flags.msteams_proxy_url),
                channel: DEFAULT_CHANNEL.to_owned(),
                username: DEFAULT_USERNAME.to_owned(),
            });
        }
        let address = non_empty(&flags.slack_url)?;
        let or_default = |v: &str, d: &str| if v.is_empty() { d.to_owned() } else { v.to_owned() };
        Some(Self {
            provider,
            kind: AlertProviderType::Slack,
            address,
            token: non_empty(&flags.slack_token),
            proxy: non_empty(&flags.slack_proxy_url),
            channel: or_default(&flags.slack_channel, DEFAULT_CHANNEL),
            username: or_default(&flags.slack_user, DEFAULT_USERNAME),
        })
    }

    /// The destination of `provider`, with the `address`, `token` and `proxy` keys of its
    /// Secret (if any) overriding the spec.
    pub fn from_provider(provider: &AlertProvider, secret: Option<&Secret>) -> Result<Self, Error> {
        let name = format!(
            "AlertProvider {}/{}",
            provider.metadata.namespace.as_deref().unwrap_or_default(),
            provider.metadata.name.as_deref().unwrap_or_default()
        );
        let key = |k: &str| {
            secret
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(k))
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let spec = &provider.spec;
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let address = key("address")
            .or_else(|| non_empty(&spec.address))
            .ok_or_else(|| Error::NoAddress {
                provider: name.clone(),
            })?;
        Ok(Self {
            kind: spec.type_,
            address,
            token: key("token"),
            proxy: key("proxy").or_else(|| non_empty(&spec.proxy)),
            channel: non_empty(&spec.channel).unwrap_or_else(|| DEFAULT_CHANNEL.to_owned()),
            username: non_empty(&spec.username).unwrap_or_else(|| DEFAULT_USERNAME.to_owned()),
            provider: name,
        })
    }
}

/// Sends a canary's alerts to its providers (or the controller-wide notifier) in the
/// background. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    kube: Client,
    http: reqwest::Client,
    cluster: Option<String>,
    default: Option<Destination>,
    permits: Arc<Semaphore>,
    failures: Counter,
}

impl Notifier {
    /// A notifier reading AlertProviders and Secrets with `client`, with the controller-wide
    /// defaults of `flags`. Fails only when the TLS setup cannot load.
    pub fn new(client: Client, flags: Flags) -> Result<Self, Error> {
        Ok(Self {
            inner: Arc::new(Inner {
                kube: client,
                http: http_client(None).map_err(Error::BuildClient)?,
                cluster: flags.cluster_name.clone().filter(|c| !c.is_empty()),
                default: Destination::from_flags(&flags),
                permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                failures: Counter::default(),
            }),
        })
    }

    /// Alerts that were not delivered (resolution errors, refusals, timeouts, drops), for
    /// the lead to register as a metric.
    pub fn failures(&self) -> Counter {
        self.inner.failures.clone()
    }

    /// Sends `alert` to every provider of `canary.spec.analysis.alerts` whose severity filter
    /// lets it through, or to the controller-wide notifier when there are none. Returns at
    /// once: each send runs in a background task bounded by [`SEND_TIMEOUT`]; failures are
    /// logged and counted. Must be called inside a Tokio runtime.
    pub fn notify(&self, canary: &Canary, alert: &Alert) {
        let message = Message::new(
            canary,
            &alert.message,
            alert.severity,
            self.inner.cluster.as_deref(),
        );
        let alerts = canary
            .spec
            .analysis()
            .and_then(|a| a.alerts.as_deref())
            .unwrap_or_default();
        if alerts.is_empty() {
            if let Some(destination) = &self.inner.default {
                let destination = destination.clone();
                self.spawn(destination.provider.clone(), message, move |_| async move {
                    Ok(destination)
                });
            }
            return;
        }
        let namespace = message.namespace.clone();
        for entry in alerts.iter().filter(|a| should_send(a.severity, alert.severity)) {
            let entry: CanaryAlert = entry.clone();
            let provider_ns = entry
                .provider_ref
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.clone());
            let label = format!("AlertProvider {provider_ns}/{}", entry.provider_ref.name);
            self.spawn(label, message.clone(), move |kube| async move {
                resolve(kube, &provider_ns, &entry.provider_ref.name).await
            });
        }
    }

    /// Runs resolve-then-send in the background under a permit and the timeout.
    fn spawn<F, Fut>(&self, label: String, message: Message, resolve: F)
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Destination, Error>> + Send + 'static,
    {
        let Ok(permit) = self.inner.permits.clone().try_acquire_owned() else {
            self.inner.failures.inc();
            tracing::warn!(
                provider = %label,
                canary = %format!("{}.{}", message.name, message.namespace),
                "alert dropped: {MAX_IN_FLIGHT} alerts are already being sent"
            );
            return;
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let work = async {
                let destination = resolve(inner.kube.clone()).await?;
                send(&inner.http, &destination, &message).await
            };
            let result = match tokio::time::timeout(SEND_TIMEOUT, work).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    provider: label.clone(),
                }),
            };
            if let Err(error) = result {
                inner.failures.inc();
                let status = match &error {
                    Error::Refused { status, .. } => Some(*status),
                    _ => None,
                };
                tracing::warn!(
                    provider = %label,
                    canary = %format!("{}.{}", message.name, message.namespace),
                    category = error.category(),
                    status,
                    "alert not delivered: {error}"
                );
            }
        });
    }
}

/// Reads the AlertProvider `namespace/name` and its Secret (from the same namespace).
async fn resolve(kube: Client, namespace: &str, name: &str) -> Result<Destination, Error> {
    let provider = Api::<AlertProvider>::namespaced(kube.clone(), namespace)
        .get(name)
        .await
        .map_err(|source| Error::GetProvider {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    let secret = match &provider.spec.secret_ref {
        Some(secret_ref) => Some(
            Api::<Secret>::namespaced(kube, namespace)
                .get(&secret_ref.name)
                .await
                .map_err(|source| Error::GetSecret {
                    namespace: namespace.to_owned(),
                    name: secret_ref.name.clone(),
                    provider: format!("{namespace}/{name}"),
                    source: Box::new(source),
                })?,
        ),
        None => None,
    };
    Destination::from_provider(&provider, secret.as_ref())
}

fn http_client(proxy: Option<reqwest::Proxy>) -> Result<reqwest::Client, reqwest::Error> {
    crate::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("flaggit/", env!("CARGO_PKG_VERSION")))
        .timeout(SEND_TIMEOUT);
    if let Some(proxy) = proxy {
        builder = builder.proxy(proxy);
    }
    builder.build()
}

/// Posts `message` to `destination`; every 2xx is a success (Flagger accepts only 200,
/// which Teams' 202 would fail).
pub async fn send(
    shared: &reqwest::Client,
    destination: &Destination,
    message: &Message,
) -> Result<(), Error> {
    let provider = destination.provider.clone();
    let proxied;
    let client = match &destination.proxy {
        Some(proxy) => {
            let proxy = reqwest::Proxy::all(proxy).map_err(|_| Error::InvalidProxy {
                provider: provider.clone(),
            })?;
            proxied = http_client(Some(proxy)).map_err(Error::BuildClient)?;
            &proxied
        }
        None => shared,
    };
    let payload = body(
        destination.kind,
        message,
        &destination.channel,
        &destination.username,
    );
    let mut request = client
        .post(endpoint(destination.kind, &destination.address))
        .json(&payload);
    if let Some(token) = &destination.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| Error::Send {
        provider: provider.clone(),
        // The URL (with its secret path) is stripped from the error.
        reason: e.without_url().to_string(),
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Refused {
            provider,
            status: status.as_u16(),
        });
    }
    Ok(())
}
