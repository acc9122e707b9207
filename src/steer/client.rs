//! The command line's side of a command: sends the request, shows progress while the
//! controller judges it, prints the verdict, and (with `--wait`) follows the canary until the
//! command has taken effect.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::api::{Canary, CanaryPhase};

use super::request::{self, Command, Verb};

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a canary: write it as <namespace>/<name> (or pass -n <namespace>)")]
    BadName(String),
    #[error("canary {0} not found")]
    NotFound(String),
    #[error(
        "you may not send flaggit commands: creating a certificatesigningrequest (the envelope a \
         command travels in, so the controller learns who you are from the API server) was \
         forbidden. Ask for the ClusterRole flaggit-cli (manifests/cli/rbac.yaml): {0}"
    )]
    CannotSend(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error(
        "no answer from the controller after {0:?}: is flaggit running, with permission to read \
         certificatesigningrequests? The request {1} stays pending"
    )]
    NoAnswer(Duration, String),
    #[error("the command was accepted but the canary did not get there in {0:?}: it is {1}")]
    NotThereYet(Duration, String),
    #[error("cannot {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::BadName(_) => "BadName",
            Self::NotFound(_) => "NotFound",
            Self::CannotSend(_) => "CannotSend",
            Self::Refused(_) => "Refused",
            Self::NoAnswer(..) => "NoAnswer",
            Self::NotThereYet(..) => "NotThereYet",
            Self::Kube { .. } => "KubernetesApi",
        }
    }
}

/// `<namespace>/<name>`, or `<name>` with `namespace`.
pub fn canary_ref(text: &str, namespace: Option<&str>) -> Result<(String, String), Error> {
    let bad = || Error::BadName(text.to_string());
    match (text.split_once('/'), namespace) {
        (Some((ns, name)), _) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        (None, Some(ns)) if !text.is_empty() && !ns.is_empty() => Ok((ns.to_string(), text.to_string())),
        _ => Err(bad()),
    }
}

/// Progress on stderr: one line rewritten in place on a terminal, a line per change otherwise.
pub struct Progress {
    terminal: bool,
    last: String,
    spin: usize,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: String::new(),
            spin: 0,
        }
    }
}

impl Progress {
    pub fn show(&mut self, text: &str, started: Instant) {
        let mut err = std::io::stderr();
        if self.terminal {
            const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
            self.spin = (self.spin + 1) % FRAMES.len();
            let _ = write!(
                err,
                "\r\x1b[2K{} {text} ({}s)",
                FRAMES[self.spin],
                started.elapsed().as_secs()
            );
        } else if text != self.last {
            let _ = writeln!(err, "{text}");
        }
        self.last = text.to_string();
    }

    pub fn done(&mut self) {
        if self.terminal && !self.last.is_empty() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        self.last.clear();
    }
}

/// Sends `command`, waits up to `timeout` for the controller's verdict, and returns what the
/// command does.
pub async fn send(client: &Client, command: &Command, timeout: Duration) -> Result<String, Error> {
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &command.namespace);
    let id = format!("{}/{}", command.namespace, command.name);
    if canaries
        .get_opt(&command.name)
        .await
        .map_err(|source| Error::Kube {
            action: "read the canary",
            source,
        })?
        .is_none()
    {
        return Err(Error::NotFound(id));
    }
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let nonce = format!(
        "{}-{}",
        jiff::Timestamp::now().as_nanosecond(),
        rand::random::<u32>()
    );
    let created = api
        .create(&PostParams::default(), &request::build(command, &nonce))
        .await
        .map_err(|source| match source {
            kube::Error::Api(status) if status.code == 403 => Error::CannotSend(status.message),
            source => Error::Kube {
                action: "send the command",
                source,
            },
        })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    let mut progress = Progress::default();
    loop {
        let now = api.get(&name).await.map_err(|source| Error::Kube {
            action: "read the command's verdict",
            source,
        })?;
        if let Some(verdict) = request::verdict(&now) {
            progress.done();
            return verdict.map_err(Error::Refused);
        }
        if started.elapsed() > timeout {
            progress.done();
            return Err(Error::NoAnswer(timeout, name));
        }
        progress.show(
            &format!("waiting for the controller to judge `{}` of {id}", command.verb),
            started,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether the canary shows that `verb` took effect.
fn arrived(verb: Verb, before: &Canary, now: &Canary) -> bool {
    let phase = |c: &Canary| c.status.as_ref().and_then(|s| s.phase);
    let weight = |c: &Canary| c.status.as_ref().and_then(|s| s.canary_weight);
    match verb {
        Verb::Rollback => phase(now) == Some(CanaryPhase::Failed),
        Verb::Retry => phase(now).is_some_and(|p| p != CanaryPhase::Failed),
        Verb::Promote => phase(now) != phase(before) || weight(now) != weight(before),
        Verb::Pause | Verb::Resume => true,
    }
}

/// Follows the canary until `verb` shows, showing its phase and weight as they change.
pub async fn wait_for_effect(client: &Client, command: &Command, timeout: Duration) -> Result<Canary, Error> {
    let api: Api<Canary> = Api::namespaced(client.clone(), &command.namespace);
    let read = || async {
        api.get(&command.name).await.map_err(|source| Error::Kube {
            action: "read the canary",
            source,
        })
    };
    let before = read().await?;
    let started = Instant::now();
    let mut progress = Progress::default();
    loop {
        let now = read().await?;
        let line = super::view::one_line(&now);
        if arrived(command.verb, &before, &now) {
            progress.done();
            return Ok(now);
        }
        if started.elapsed() > timeout {
            progress.done();
            return Err(Error::NotThereYet(timeout, line));
        }
        progress.show(&line, started);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_is_named_with_its_namespace() {
        assert_eq!(
            canary_ref("demo/podinfo", None).expect("ok"),
            ("demo".into(), "podinfo".into())
        );
        assert_eq!(
            canary_ref("podinfo", Some("demo")).expect("ok"),
            ("demo".into(), "podinfo".into())
        );
        for bad in ["podinfo", "/podinfo", "demo/", "a/b/c"] {
            let error = canary_ref(bad, None).expect_err(bad).to_string();
            assert!(error.contains("write it as <namespace>/<name>"), "{error}");
        }
    }
}
