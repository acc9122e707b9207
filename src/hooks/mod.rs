//! Webhooks: the calls a Canary makes at the points of a release its `analysis.webhooks`
//! name (Flagger's payload and semantics, every 2xx a success), and the event webhook.

mod call;
mod payload;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::{Canary, CanaryPhase, CanaryWebhook, HookType};
pub use call::{DEFAULT_TIMEOUT, parse_timeout};
use call::{Target, parse_url};
pub use payload::{Payload, checksum};

/// Timeout of the controller-wide event webhook, as in Flagger.
const GLOBAL_EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What calling webhooks can fail with, outside of gates (whose failures are their answer).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the webhook HTTP client: {0}")]
    BuildClient(#[source] reqwest::Error),
    #[error("{field} {value:?} is not a duration: use a number and a unit, for example 30s or 1m")]
    InvalidTimeout { field: String, value: String },
    /// The URL is not echoed: webhook URLs often carry tokens.
    #[error("{field} is not a valid http(s) URL ({reason}): fix the webhook's url")]
    InvalidUrl { field: String, reason: String },
    #[error("event webhook {name} failed: {reason}")]
    CallEvent { name: String, reason: String },
}

impl Error {
    /// A short fixed name for the kind of failure: event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::BuildClient(_) => "BuildWebhookClient",
            Self::InvalidTimeout { .. } | Self::InvalidUrl { .. } => "InvalidWebhook",
            Self::CallEvent { .. } => "CallEventWebhook",
        }
    }
}

/// The answer of the webhooks of one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateResult {
    /// Every webhook of the type answered 2xx (true when there is none). For `rollback`:
    /// some webhook answered 2xx, that is, a rollback was asked for (false when there is none).
    pub passed: bool,
    /// For an event or alert: which hooks passed, or which one failed and why.
    pub message: String,
    /// The failing webhook has `muteAlert: true`: report the hold without alerting.
    pub mute_alert: bool,
}

/// Calls webhooks. Cheap to clone; holds one connection pool per TLS mode.
#[derive(Clone, Debug)]
pub struct Hooks {
    client: reqwest::Client,
    /// For `disableTLS` webhooks: certificates are not verified.
    insecure: reqwest::Client,
}

impl Hooks {
    /// Builds the HTTP clients. Fails only when the TLS setup cannot load (no usable
    /// certificate store).
    pub fn new() -> Result<Self, Error> {
        crate::install_crypto_provider();
        let builder =
            || reqwest::Client::builder().user_agent(concat!("flaggit/", env!("CARGO_PKG_VERSION")));
        Ok(Self {
            client: builder().build().map_err(Error::BuildClient)?,
            insecure: builder()
                .tls_danger_accept_invalid_certs(true)
                .build()
                .map_err(Error::BuildClient)?,
        })
    }

    /// Runs the webhooks of type `hook`, in order, stopping at the first failure (an untyped
    /// webhook is `rollout`). `phase` goes into the payload. `rollback` webhooks are the
    /// exception, as in Flagger: the first one that answers 2xx asks for the rollback.
    ///
    /// Each call is bounded by its `timeout` (default 10s), times `1 + retries` attempts.
    pub async fn gate(&self, canary: &Canary, hook: HookType, phase: CanaryPhase) -> GateResult {
        let label = hook_label(hook);
        let webhooks: Vec<(usize, &CanaryWebhook)> = of_type(canary, hook).collect();
        if hook == HookType::Rollback {
            return self.rollback_gate(canary, phase, &webhooks).await;
        }
        let mut passed = Vec::new();
        for &(index, webhook) in &webhooks {
            if let Err(reason) = self.call(canary, phase, index, webhook).await {
                return GateResult {
                    passed: false,
                    message: format!("{label} check {} failed: {reason}", webhook.name),
                    mute_alert: webhook.mute_alert.unwrap_or(false),
                };
            }
            passed.push(webhook.name.as_str());
        }
        let message = match passed.as_slice() {
            [] => format!("no {label} webhooks"),
            [one] => format!("{label} check {one} passed"),
            many => format!("{label} checks {} passed", many.join(", ")),
        };
        GateResult {
            passed: true,
            message,
            mute_alert: false,
        }
    }

    /// Flagger's `runRollbackHooks`: any 2xx asks for a rollback; failures mean "no".
    async fn rollback_gate(
        &self,
        canary: &Canary,
        phase: CanaryPhase,
        webhooks: &[(usize, &CanaryWebhook)],
    ) -> GateResult {
        let mut answers = Vec::new();
        for &(index, webhook) in webhooks {
            match self.call(canary, phase, index, webhook).await {
                Ok(()) => {
                    return GateResult {
                        passed: true,
                        message: format!("rollback check {} passed", webhook.name),
                        mute_alert: webhook.mute_alert.unwrap_or(false),
                    };
                }
                Err(reason) => answers.push(format!("{}: {reason}", webhook.name)),
            }
        }
        let message = if answers.is_empty() {
            "no rollback webhooks".to_string()
        } else {
            format!("no rollback asked ({})", answers.join("; "))
        };
        GateResult {
            passed: false,
            message,
            mute_alert: false,
        }
    }

    /// One gate webhook call; the error is the reason shown after "failed: ".
    async fn call(
        &self,
        canary: &Canary,
        phase: CanaryPhase,
        index: usize,
        webhook: &CanaryWebhook,
    ) -> Result<(), String> {
        let target =
            Target::for_webhook(&webhook_field(canary, index), webhook).map_err(|e| e.to_string())?;
        let payload = Payload::new(canary, phase, webhook.metadata.clone().unwrap_or_default());
        target
            .post(self.client_for(&target), &payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Flagger's event webhook: POSTs the payload with `eventMessage`, `eventType`
    /// (`Normal` or `Warning`) and `timestamp` (unix milliseconds) in its metadata, plus each
    /// webhook's own metadata under other keys, to every `event` webhook of the canary, or
    /// to `global_url` when the canary has none. All are called; the first failure is
    /// returned (for the caller to log), the others are dropped.
    pub async fn event(
        &self,
        canary: &Canary,
        phase: CanaryPhase,
        message: &str,
        warning: bool,
        global_url: Option<&str>,
    ) -> Result<(), Error> {
        let base = event_metadata(message, warning, unix_millis(SystemTime::now()));
        let webhooks: Vec<(usize, &CanaryWebhook)> = of_type(canary, HookType::Event).collect();
        if webhooks.is_empty() {
            let Some(url) = global_url else { return Ok(()) };
            let target = Target {
                url: parse_url("the event webhook URL (--event-webhook)", url)?,
                timeout: GLOBAL_EVENT_TIMEOUT,
                retries: 0,
                insecure: false,
            };
            let payload = Payload::new(canary, phase, base);
            return target
                .post(self.client_for(&target), &payload)
                .await
                .map_err(|e| Error::CallEvent {
                    name: "events".into(),
                    reason: e.to_string(),
                });
        }
        let mut first_error = None;
        for (index, webhook) in webhooks {
            let result = async {
                let target = Target::for_webhook(&webhook_field(canary, index), webhook)?;
                let mut metadata = base.clone();
                for (key, value) in webhook.metadata.iter().flatten() {
                    metadata.entry(key.clone()).or_insert_with(|| value.clone());
                }
                let payload = Payload::new(canary, phase, metadata);
                target
                    .post(self.client_for(&target), &payload)
                    .await
                    .map_err(|e| Error::CallEvent {
                        name: webhook.name.clone(),
                        reason: e.to_string(),
                    })
            }
            .await;
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn client_for(&self, target: &Target) -> &reqwest::Client {
        if target.insecure {
            &self.insecure
        } else {
            &self.client
        }
    }
}

/// Whether the canary has a webhook of type `hook` (an untyped webhook is `rollout`).
pub fn has(canary: &Canary, hook: HookType) -> bool {
    of_type(canary, hook).next().is_some()
}

/// The webhooks of one type with their index in `webhooks`, in order.
fn of_type(canary: &Canary, hook: HookType) -> impl Iterator<Item = (usize, &CanaryWebhook)> {
    let webhooks = canary
        .spec
        .analysis()
        .and_then(|a| a.webhooks.as_deref())
        .unwrap_or_default();
    webhooks
        .iter()
        .enumerate()
        .filter(move |(_, w)| w.type_.unwrap_or(HookType::Rollout) == hook)
}

/// The path of a webhook in the spec, for error messages.
fn webhook_field(canary: &Canary, index: usize) -> String {
    let analysis = if canary.spec.analysis.is_none() && canary.spec.canary_analysis.is_some() {
        "canaryAnalysis"
    } else {
        "analysis"
    };
    format!("spec.{analysis}.webhooks[{index}]")
}

/// The metadata keys Flagger puts in every event payload.
fn event_metadata(message: &str, warning: bool, timestamp_ms: u128) -> BTreeMap<String, String> {
    let event_type = if warning { "Warning" } else { "Normal" };
    BTreeMap::from([
        ("eventMessage".to_string(), message.to_string()),
        ("eventType".to_string(), event_type.to_string()),
        ("timestamp".to_string(), timestamp_ms.to_string()),
    ])
}

fn unix_millis(now: SystemTime) -> u128 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The hook type as written in the spec.
fn hook_label(hook: HookType) -> &'static str {
    match hook {
        HookType::ConfirmRollout => "confirm-rollout",
        HookType::PreRollout => "pre-rollout",
        HookType::Rollout => "rollout",
        HookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
        HookType::ConfirmPromotion => "confirm-promotion",
        HookType::PostRollout => "post-rollout",
        HookType::Rollback => "rollback",
        HookType::Event => "event",
    }
}
