//! `flaggit-loadtester`: a Flagger-compatible load tester and gate server for webhooks.
//!
//! Endpoints, any method, as in Flagger's `pkg/loadtester`: `/healthz`, `/metrics`,
//! `/gate/approve` (200), `/gate/halt` (403), `/gate/check|open|close`,
//! `/rollback/check|open|close`, and every other path is the task endpoint, whose
//! `metadata.type` picks `cmd` (the default; async, de-duplicated), `bash`, `kubectl`, `helm`
//! or `helmv3`.

mod gates;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use regex::Regex;
use serde::Deserialize;

pub use gates::{GateKind, Gates, gate_key};
pub use tasks::{
    BoundedOutput, Ending, MAX_OUTPUT_BYTES, Outcome, Running, Task, TaskError, TaskType, known_types,
    parse_bool,
};

/// What starting or running the load tester can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--namespace-regexp {value:?} is not a valid regular expression: {source}")]
    ParseNamespaceRegexp {
        value: String,
        #[source]
        source: regex::Error,
    },
    #[error("--gate-configmap needs a namespace: set --gate-namespace or POD_NAMESPACE (the Downward API)")]
    GateNamespaceMissing,
    #[error("cannot connect to the Kubernetes API for the gate ConfigMap: {0}")]
    ConnectKube(String),
    #[error(
        "cannot read the gate ConfigMap {namespace}/{name}: {source}; the ServiceAccount needs get, create and update on configmaps there"
    )]
    LoadGates {
        name: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot save the gate ConfigMap {namespace}/{name}: {reason}; the ServiceAccount needs get, create and update on configmaps there"
    )]
    SaveGates {
        name: String,
        namespace: String,
        reason: String,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// A short fixed name for the kind of failure.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ParseNamespaceRegexp { .. } | Self::GateNamespaceMissing => "InvalidLoadTesterFlags",
            Self::ConnectKube(_) => "ConnectKube",
            Self::LoadGates { .. } => "LoadGates",
            Self::SaveGates { .. } => "SaveGates",
            Self::Listen { .. } => "Listen",
            Self::Serve(_) => "Serve",
        }
    }
}

/// The command line of `flaggit-loadtester`. Flagger's Go-style single-dash flags
/// (`-port=8080`) are accepted too: see [`go_style_args`].
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "flaggit-loadtester",
    version,
    about = "Flagger-compatible load tester and gate server"
)]
pub struct Config {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: String,
    /// Exec timeout of every command (`30s`, `10m`, `1h`).
    #[arg(long, default_value = "1h", value_parser = parse_exec_timeout)]
    pub timeout: Duration,
    /// Only canaries whose namespace matches this regular expression may use the load tester.
    #[arg(long)]
    pub namespace_regexp: Option<String>,
    /// Log the output of every command (a webhook's `logCmdOutput` overrides it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          value_parser = parse_go_bool)]
    pub log_cmd_output: bool,
    /// The ConfigMap that keeps the open gates across restarts; without it gates live in
    /// memory and a restart closes them.
    #[arg(long, env = "GATE_CONFIGMAP")]
    pub gate_configmap: Option<String>,
    /// Namespace of the gate ConfigMap.
    #[arg(long, env = "POD_NAMESPACE")]
    pub gate_namespace: Option<String>,
    /// Kubeconfig for the gate ConfigMap (in a pod: the ServiceAccount).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Log level (`RUST_LOG` overrides it).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = crate::telemetry::LogFormat::Json)]
    pub log_format: crate::telemetry::LogFormat,
}

fn parse_exec_timeout(value: &str) -> Result<Duration, String> {
    crate::rollout::parse_duration(value)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{value:?} is not a duration: use a number and a unit, like 30s, 10m or 1h"))
}

fn parse_go_bool(value: &str) -> Result<bool, String> {
    parse_bool(value).ok_or_else(|| format!("{value:?} is not a boolean: use true or false"))
}

/// Rewrites Go-style long flags (`-port=8080`, `-timeout 1h`) to `--port=8080`, so that the
/// command lines of Flagger's load tester manifests work unchanged. Single-letter flags,
/// `--` flags and values are left alone.
pub fn go_style_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            let name = arg.strip_prefix('-').unwrap_or("");
            let flag_name = name.split('=').next().unwrap_or("");
            let go_flag = i > 0
                && !name.starts_with('-')
                && flag_name.len() > 1
                && flag_name.starts_with(|c: char| c.is_ascii_alphabetic())
                && flag_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if go_flag { format!("-{arg}") } else { arg }
        })
        .collect()
}

/// The body of every call: Flagger's webhook payload, of which the load tester reads the
/// canary's name, namespace and metadata.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Payload {
    /// `<name>.<namespace>`, how Flagger names the canary in keys and logs.
    pub fn canary(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    r#type: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    kind: &'static str,
    action: &'static str,
}

/// The load tester's own metrics; label values are from fixed sets.
struct LoadMetrics {
    registry: Registry,
    tasks: Family<TaskLabels, Counter>,
    gates: Family<GateLabels, Counter>,
    running: Gauge,
}

impl LoadMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let tasks = Family::<TaskLabels, Counter>::default();
        let gates = Family::<GateLabels, Counter>::default();
        let running = Gauge::default();
        let prefix = registry.sub_registry_with_prefix("flaggit_loadtester");
        prefix.register(
            "tasks",
            "Tasks by type and outcome (started, deduplicated, succeeded, failed, timed_out, rejected)",
            tasks.clone(),
        );
        prefix.register("gate_calls", "Gate calls by kind and action", gates.clone());
        prefix.register("running_commands", "cmd tasks running now", running.clone());
        Self {
            registry,
            tasks,
            gates,
            running,
        }
    }

    fn task(&self, kind: TaskType, outcome: &'static str) {
        self.tasks
            .get_or_create(&TaskLabels {
                r#type: kind.name(),
                outcome,
            })
            .inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The running load tester's shared state.
#[derive(Clone)]
pub struct Server {
    gates: Arc<Gates>,
    running: Running,
    timeout: Duration,
    namespaces: Option<Regex>,
    log_output: bool,
    metrics: Arc<LoadMetrics>,
}

impl Server {
    /// A server over `gates`, running commands with the exec `timeout`, refusing canaries
    /// whose namespace does not match `namespaces`, logging command output if `log_output`
    /// (unless a webhook says otherwise).
    pub fn new(gates: Gates, timeout: Duration, namespaces: Option<Regex>, log_output: bool) -> Self {
        Self {
            gates: Arc::new(gates),
            running: Running::default(),
            timeout,
            namespaces,
            log_output,
            metrics: Arc::new(LoadMetrics::new()),
        }
    }

    /// The HTTP routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", any(|| async { "OK" }))
            .route("/metrics", any(metrics))
            .route("/gate/approve", any(|| async { (StatusCode::OK, "OK") }))
            .route(
                "/gate/halt",
                any(|| async { (StatusCode::FORBIDDEN, "Forbidden") }),
            )
            .route(
                "/gate/check",
                any(|s: State<Server>, b: Bytes| check(s, b, GateKind::Approval)),
            )
            .route(
                "/gate/open",
                any(|s: State<Server>, b: Bytes| change(s, b, GateKind::Approval, true)),
            )
            .route(
                "/gate/close",
                any(|s: State<Server>, b: Bytes| change(s, b, GateKind::Approval, false)),
            )
            .route(
                "/rollback/check",
                any(|s: State<Server>, b: Bytes| check(s, b, GateKind::Rollback)),
            )
            .route(
                "/rollback/open",
                any(|s: State<Server>, b: Bytes| change(s, b, GateKind::Rollback, true)),
            )
            .route(
                "/rollback/close",
                any(|s: State<Server>, b: Bytes| change(s, b, GateKind::Rollback, false)),
            )
            .fallback(task)
            .with_state(self)
    }

    /// Reads the payload, refusing bodies that are not one and namespaces not allowed.
    fn payload(&self, body: &[u8]) -> Result<Payload, (StatusCode, String)> {
        let payload: Payload = serde_json::from_slice(body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("decoding the request body failed: {e}: send the webhook payload as JSON"),
            )
        })?;
        if let Some(namespaces) = &self.namespaces
            && !namespaces.is_match(&payload.namespace)
        {
            tracing::warn!(canary = %payload.canary(), "refused: namespace not allowed by --namespace-regexp");
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "namespace {:?} is not allowed by this load tester (--namespace-regexp {})",
                    payload.namespace,
                    namespaces.as_str()
                ),
            ));
        }
        Ok(payload)
    }
}

/// Loads the gates (from the ConfigMap when configured) and serves until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), Error> {
    let namespaces = config
        .namespace_regexp
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(|r| {
            Regex::new(r).map_err(|source| Error::ParseNamespaceRegexp {
                value: r.to_string(),
                source,
            })
        })
        .transpose()?;
    let gates = match &config.gate_configmap {
        Some(name) => {
            let namespace = config
                .gate_namespace
                .as_deref()
                .ok_or(Error::GateNamespaceMissing)?;
            let client = crate::controller::kube_client(config.kubeconfig.as_deref())
                .await
                .map_err(|e| Error::ConnectKube(e.to_string()))?;
            Gates::in_config_map(client, namespace, name).await?
        }
        None => {
            tracing::warn!("no --gate-configmap: gates are kept in memory and a restart closes them all");
            Gates::in_memory()
        }
    };
    let address = format!("{}:{}", config.listen_address, config.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| Error::Listen {
            address: address.clone(),
            source,
        })?;
    tracing::info!(%address, timeout = ?config.timeout, "load tester listening");
    let server = Server::new(gates, config.timeout, namespaces, config.log_cmd_output);
    axum::serve(listener, server.router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(Error::Serve)
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

async fn metrics(State(server): State<Server>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        server.metrics.encode(),
    )
}

fn kind_label(kind: GateKind) -> &'static str {
    match kind {
        GateKind::Approval => "gate",
        GateKind::Rollback => "rollback",
    }
}

async fn check(State(server): State<Server>, body: Bytes, kind: GateKind) -> Response {
    let payload = match server.payload(&body) {
        Ok(payload) => payload,
        Err(refused) => return refused.into_response(),
    };
    let key = gate_key(kind, &payload.name, &payload.namespace);
    let approved = server.gates.is_open(&key);
    server
        .metrics
        .gates
        .get_or_create(&GateLabels {
            kind: kind_label(kind),
            action: if approved { "check_open" } else { "check_closed" },
        })
        .inc();
    tracing::info!(gate = %key, approved, "{} check", kind_label(kind));
    if approved {
        (StatusCode::OK, "Approved").into_response()
    } else {
        (StatusCode::FORBIDDEN, "Forbidden").into_response()
    }
}

async fn change(State(server): State<Server>, body: Bytes, kind: GateKind, open: bool) -> Response {
    let payload = match server.payload(&body) {
        Ok(payload) => payload,
        Err(refused) => return refused.into_response(),
    };
    let key = gate_key(kind, &payload.name, &payload.namespace);
    if !gates::valid_key(&key) {
        return (
            StatusCode::BAD_REQUEST,
            format!("gate {key:?} is not a valid key: name and namespace must be Kubernetes names"),
        )
            .into_response();
    }
    let action = if open { "opened" } else { "closed" };
    match server.gates.set(&key, open).await {
        Ok(()) => {
            server
                .metrics
                .gates
                .get_or_create(&GateLabels {
                    kind: kind_label(kind),
                    action: if open { "open" } else { "close" },
                })
                .inc();
            tracing::info!(gate = %key, "{} {action}", kind_label(kind));
            (StatusCode::ACCEPTED, format!("{key} {action}")).into_response()
        }
        Err(e) => {
            tracing::error!(gate = %key, error = %e, category = e.category(), "gate not changed");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

/// The task endpoint: every path that is not one of the others, as Flagger's `/` handler.
async fn task(State(server): State<Server>, body: Bytes) -> Response {
    let payload = match server.payload(&body) {
        Ok(payload) => payload,
        Err(refused) => return refused.into_response(),
    };
    let metadata = payload.metadata.clone().unwrap_or_default();
    let task = match Task::from_metadata(payload.canary(), &metadata, server.log_output) {
        Ok(task) => task,
        Err(e) => {
            tracing::warn!(canary = %payload.canary(), error = %e, "task refused");
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    if task.kind.is_blocking() {
        return run_blocking(&server, &task).await;
    }
    let Some(claim) = server.running.claim(task.dedup_key()) else {
        server.metrics.task(task.kind, "deduplicated");
        tracing::info!(canary = %task.canary, command = %task.command, "command skipped: already running");
        return (StatusCode::ACCEPTED, "command already running").into_response();
    };
    server.metrics.task(task.kind, "started");
    server.metrics.running.inc();
    tracing::info!(canary = %task.canary, command = %task.command, "command starting");
    tokio::spawn(async move {
        let outcome = tasks::run(&task, server.timeout).await;
        record(&server, &task, &outcome);
        server.metrics.running.dec();
        drop(claim);
    });
    (StatusCode::ACCEPTED, "command started").into_response()
}

async fn run_blocking(server: &Server, task: &Task) -> Response {
    tracing::info!(canary = %task.canary, r#type = task.kind.name(), command = %task.command, "running command");
    let outcome = tasks::run(task, server.timeout).await;
    record(server, task, &outcome);
    if !outcome.succeeded() {
        return (StatusCode::INTERNAL_SERVER_ERROR, outcome.failure(&task.command)).into_response();
    }
    let body = if task.return_output {
        outcome.output
    } else {
        String::new()
    };
    (StatusCode::OK, body).into_response()
}

/// Logs how a command ended and counts it.
fn record(server: &Server, task: &Task, outcome: &Outcome) {
    let label = match (&outcome.ending, outcome.succeeded()) {
        (_, true) => "succeeded",
        (Ending::TimedOut(_), _) => "timed_out",
        _ => "failed",
    };
    server.metrics.task(task.kind, label);
    if outcome.succeeded() {
        if task.log_output {
            tracing::info!(canary = %task.canary, output = %outcome.output, "command output");
        }
        tracing::info!(canary = %task.canary, command = %task.command, "command finished");
    } else {
        tracing::error!(canary = %task.canary, "{}", outcome.failure(&task.command));
    }
}
