//! `flaggit dev stand-in`: what a laptop's node-less local control plane lacks, so that
//! `scripts/quickstart.sh` can show a whole release. It plays the kubelet (Deployments become
//! ready, as if their pods started and passed their probes) and the mesh's telemetry (each
//! ready Deployment serves simulated requests, exposed in Istio's metric shape for a real
//! Prometheus to scrape). Never part of a real cluster: there the kubelet and the mesh are real.

pub mod kubelet;
pub mod mesh;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};

/// Flags of `flaggit dev stand-in`.
#[derive(Clone, Debug, clap::Args)]
pub struct StandInArgs {
    /// Kubeconfig file; default `$KUBECONFIG` or `~/.kube/config`.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Only the Deployments of this namespace; default all namespaces.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Where the simulated mesh telemetry is served (`/metrics`), for Prometheus to scrape.
    #[arg(long, default_value = "127.0.0.1:9797")]
    pub metrics_listen: SocketAddr,
    /// Requests per second each ready replica serves.
    #[arg(long, default_value_t = 10.0)]
    pub rps: f64,
    /// An image whose pods answer half their requests with 500, standing in for a build
    /// with a bug (repeatable), for example `ghcr.io/stefanprodan/podinfo:6.0.2`.
    #[arg(long = "broken-image")]
    pub broken_images: Vec<String>,
    /// Latency of every request, in milliseconds.
    #[arg(long, default_value_t = 12)]
    pub latency_ms: u64,
}

/// What can stop the stand-in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the cluster: {0}")]
    Connect(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the metrics server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "Connect",
            Self::Listen { .. } => "Listen",
            Self::Serve(_) => "Serve",
        }
    }
}

/// Runs the stand-in until the process is stopped.
pub async fn run(args: StandInArgs) -> Result<(), Error> {
    let client: Client = crate::controller::kube_client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    let api: Api<Deployment> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let traffic = Arc::new(Mutex::new(mesh::Traffic::new(mesh::Behaviour {
        rps_per_replica: args.rps,
        latency_ms: args.latency_ms,
        broken_images: args.broken_images.clone(),
    })));
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|source| Error::Listen {
            address: args.metrics_listen,
            source,
        })?;
    tracing::info!(address = %args.metrics_listen, broken = ?args.broken_images, "serving simulated mesh telemetry at /metrics");
    let server = mesh::serve(listener, traffic.clone());
    let ticking = {
        let store = store.clone();
        let traffic = traffic.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let now = tokio::time::Instant::now();
                let workloads: Vec<mesh::Workload> =
                    store.state().iter().map(|d| mesh::Workload::of(d)).collect();
                traffic
                    .lock()
                    .expect("the traffic lock is never held across a panic")
                    .advance(&workloads, now.duration_since(last).as_secs_f64());
                last = now;
            }
        }
    };
    let kubelet = kubelet::run(client, store, events);
    tokio::select! {
        result = server => result.map_err(Error::Serve),
        () = ticking => Ok(()),
        () = kubelet => Ok(()),
    }
}
