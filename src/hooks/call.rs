//! One webhook call over HTTP: the POST, its timeout, retries, and a readable failure.

use std::fmt;
use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::{Error, Payload};
use crate::api::CanaryWebhook;

/// A webhook's timeout when `timeout` is unset (Flagger's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Bytes of an error response read for the message; the rest is not waited for.
const MAX_BODY_BYTES: usize = 4096;
/// Characters of an error response quoted in the message.
const EXCERPT_CHARS: usize = 200;

/// Parses a webhook `timeout`: unset or shorter than two characters means the 10s default
/// (as in Flagger); otherwise `30s`, `1m`, `500ms`, `1m30s`. None for anything else and for
/// zero, which Go reads as "no timeout" and flaggit refuses: a call must never hang.
pub fn parse_timeout(value: Option<&str>) -> Option<Duration> {
    match value {
        None => Some(DEFAULT_TIMEOUT),
        Some(text) if text.len() < 2 => Some(DEFAULT_TIMEOUT),
        Some(text) => crate::rollout::parse_duration(text).filter(|d| !d.is_zero()),
    }
}

/// Parses a webhook URL, accepting only http and https. `field` names it in the error.
pub(super) fn parse_url(field: &str, url: &str) -> Result<Url, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        field: field.to_string(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(invalid(format!("scheme {other} is not http or https"))),
    }
}

/// Where and how to POST one webhook.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub url: Url,
    /// Bound of each attempt, from connecting to reading the response.
    pub timeout: Duration,
    /// Attempts after the first, on connection errors and 5xx answers.
    pub retries: u32,
    /// Skip certificate verification (`disableTLS`).
    pub insecure: bool,
}

impl Target {
    /// The target of a spec webhook; `field` is its path, for example
    /// `spec.analysis.webhooks[2]`.
    pub fn for_webhook(field: &str, webhook: &CanaryWebhook) -> Result<Self, Error> {
        let timeout = parse_timeout(webhook.timeout.as_deref()).ok_or_else(|| Error::InvalidTimeout {
            field: format!("{field}.timeout"),
            value: webhook.timeout.clone().unwrap_or_default(),
        })?;
        Ok(Self {
            url: parse_url(&format!("{field}.url"), &webhook.url)?,
            timeout,
            retries: u32::try_from(webhook.retries.unwrap_or(0)).unwrap_or(0),
            insecure: webhook.disable_tls.unwrap_or(false),
        })
    }

    /// POSTs `payload` as JSON; any 2xx is success. Retries connection errors and 5xx
    /// (except 501) with a short backoff; a timeout is not retried, since the hook may still
    /// be doing the work it was asked for.
    pub async fn post(&self, client: &reqwest::Client, payload: &Payload) -> Result<(), CallError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(client, payload).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if attempts > self.retries || !failure.retryable() {
                return Err(CallError { failure, attempts });
            }
            tokio::time::sleep(backoff(attempts)).await;
        }
    }

    async fn attempt(&self, client: &reqwest::Client, payload: &Payload) -> Result<(), Failure> {
        let call = async {
            let response = client
                .post(self.url.clone())
                .timeout(self.timeout)
                .json(payload)
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(e, self.timeout))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            Err(Failure::Status {
                status,
                body: excerpt(response).await,
            })
        };
        // reqwest's timeout covers the body too; this bound holds whatever it does.
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(Failure::Timeout(self.timeout)))
    }
}

/// The wait before retry number `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

/// The start of an error response's body, on one line, for the message.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    // A body that breaks off is quoted as far as it came.
    while body.len() < MAX_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    one_line(&String::from_utf8_lossy(&body), EXCERPT_CHARS)
}

/// Collapses whitespace and cuts `text` to `max` characters, marking the cut.
fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// Why one attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The hook answered, but not 2xx.
    Status { status: StatusCode, body: String },
    /// No complete answer within the timeout.
    Timeout(Duration),
    /// The connection could not be made (refused, DNS, TLS).
    Connect(String),
    /// Anything else while sending or receiving.
    Send(String),
}

impl Failure {
    fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        // Without the URL: webhook URLs often carry tokens.
        let error = error.without_url();
        if error.is_timeout() {
            Self::Timeout(timeout)
        } else if error.is_connect() {
            Self::Connect(root_cause(&error))
        } else {
            Self::Send(root_cause(&error))
        }
    }

    /// Worth another attempt: the hook may not have seen or handled the call.
    fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => status.is_server_error() && *status != StatusCode::NOT_IMPLEMENTED,
            Self::Connect(_) => true,
            Self::Timeout(_) | Self::Send(_) => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { status, body } if body.is_empty() => write!(f, "{status}"),
            Self::Status { status, body } => write!(f, "{status}: {body}"),
            Self::Timeout(timeout) => write!(f, "no answer within {}", show_duration(*timeout)),
            Self::Connect(reason) => write!(f, "cannot connect: {reason}"),
            Self::Send(reason) => write!(f, "request failed: {reason}"),
        }
    }
}

/// The last failure of a call and how many attempts were made.
#[derive(Debug)]
pub(super) struct CallError {
    pub failure: Failure,
    pub attempts: u32,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.failure)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

/// The innermost cause: "Connection refused (os error 111)" rather than hyper's layers.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// `10s`, `1m30s`, `500ms`: the way timeouts are written in the spec.
fn show_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_defaults_to_10s_when_unset_or_too_short() {
        assert_eq!(parse_timeout(None), Some(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("")), Some(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("5")), Some(DEFAULT_TIMEOUT));
    }

    #[test]
    fn timeout_parses_go_style_durations() {
        assert_eq!(parse_timeout(Some("30s")), Some(Duration::from_secs(30)));
        assert_eq!(parse_timeout(Some("1m")), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout(Some("1m30s")), Some(Duration::from_secs(90)));
        assert_eq!(parse_timeout(Some("500ms")), Some(Duration::from_millis(500)));
        assert_eq!(parse_timeout(Some("2h")), Some(Duration::from_secs(7200)));
    }

    #[test]
    fn timeout_rejects_garbage_and_zero() {
        for bad in ["ten", "10x", "s10", "-5s", "0s", "00", "1.5s"] {
            assert_eq!(parse_timeout(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn invalid_timeout_error_names_the_field() {
        let webhook = CanaryWebhook {
            name: "load".into(),
            url: "http://loadtester/".into(),
            timeout: Some("soon".into()),
            ..CanaryWebhook::default()
        };
        let error = Target::for_webhook("spec.analysis.webhooks[3]", &webhook).expect_err("bad timeout");
        assert_eq!(error.category(), "InvalidWebhook");
        assert_eq!(
            error.to_string(),
            r#"spec.analysis.webhooks[3].timeout "soon" is not a duration: use a number and a unit, for example 30s or 1m"#
        );
    }

    #[test]
    fn target_reads_the_webhook_fields() {
        let webhook = CanaryWebhook {
            name: "gate".into(),
            url: "https://gate.example/approve".into(),
            timeout: Some("1m".into()),
            retries: Some(3),
            disable_tls: Some(true),
            ..CanaryWebhook::default()
        };
        let target = Target::for_webhook("spec.analysis.webhooks[0]", &webhook).expect("valid");
        assert_eq!(target.url.as_str(), "https://gate.example/approve");
        assert_eq!(target.timeout, Duration::from_secs(60));
        assert_eq!(target.retries, 3);
        assert!(target.insecure);
    }

    #[test]
    fn negative_retries_mean_none() {
        let webhook = CanaryWebhook {
            url: "http://a/".into(),
            retries: Some(-2),
            ..CanaryWebhook::default()
        };
        assert_eq!(Target::for_webhook("w", &webhook).expect("valid").retries, 0);
    }

    #[test]
    fn url_must_be_http_and_is_not_echoed() {
        let error = parse_url("spec.analysis.webhooks[1].url", "ftp://user:token@host/").expect_err("ftp");
        let text = error.to_string();
        assert!(
            text.starts_with("spec.analysis.webhooks[1].url is not a valid http(s) URL"),
            "{text}"
        );
        assert!(!text.contains("token"), "{text}");
        assert!(parse_url("f", "not a url").is_err());
        assert!(parse_url("f", "http://loadtester.test/").is_ok());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn excerpt_is_one_line_and_cut() {
        assert_eq!(one_line("exit status 1\n", 200), "exit status 1");
        assert_eq!(one_line("  a\n\tb  c ", 200), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc...");
        assert_eq!(one_line("ééé", 2), "éé...");
        assert_eq!(one_line("", 3), "");
    }

    #[test]
    fn only_connection_errors_and_5xx_are_retried() {
        let status = |code: u16| Failure::Status {
            status: StatusCode::from_u16(code).expect("valid code"),
            body: String::new(),
        };
        assert!(status(500).retryable());
        assert!(status(503).retryable());
        assert!(!status(501).retryable());
        assert!(!status(403).retryable());
        assert!(!status(404).retryable());
        assert!(Failure::Connect("refused".into()).retryable());
        assert!(!Failure::Timeout(DEFAULT_TIMEOUT).retryable());
    }

    #[test]
    fn failures_read_well() {
        let failure = Failure::Status {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: "exit status 1".into(),
        };
        assert_eq!(failure.to_string(), "500 Internal Server Error: exit status 1");
        let failure = Failure::Status {
            status: StatusCode::FORBIDDEN,
            body: String::new(),
        };
        assert_eq!(
            CallError { failure, attempts: 3 }.to_string(),
            "403 Forbidden (after 3 attempts)"
        );
        assert_eq!(
            Failure::Timeout(Duration::from_secs(90)).to_string(),
            "no answer within 1m30s"
        );
        assert_eq!(
            Failure::Timeout(Duration::from_millis(1500)).to_string(),
            "no answer within 1500ms"
        );
        assert_eq!(
            Failure::Timeout(Duration::from_secs(120)).to_string(),
            "no answer within 2m"
        );
    }
}
