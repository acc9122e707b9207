//! The Git writer under load: N canaries on a local API server each get a step record in
//! their outbox at once (R rounds), and the real writer pushes them to a bare repository served
//! by `git daemon` on loopback. Measures records per second, pushes, and the latency from a
//! record entering the outbox to the canary's status saying it is on the remote. Prints the
//! numbers and writes them to `target/bench/ledger-<N>.json`.
//!
//!     cargo bench --bench ledger -- 1000
//!
//! Latency is observed by listing the canaries every 100 ms, so it is rounded up by up to that.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use flaggit::api::{Canary, CanaryService, CanarySpec, TargetRef};
use flaggit::gitops::Remote;
use flaggit::gitops::source::{Origin, Source};
use flaggit::gitops::writer::{Job, Settings, Writer};

mod common;
#[path = "../tests/cluster/git_remote.rs"]
mod git_remote;
#[path = "../tests/cluster/support.rs"]
#[allow(dead_code)]
mod support;

const ROUNDS: i64 = 3;

fn main() {
    let Some(sizes) = common::sizes("ledger", &[1000]) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("flaggit=debug"))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let cp = support::control_plane();
    cp.install_crds();
    for n in sizes {
        let result = runtime.block_on(run(cp, n));
        common::save("ledger", n, &result);
    }
}

fn canary(name: &str) -> Canary {
    Canary::new(
        name,
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: Default::default(),
                name: name.into(),
            },
            service: Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

async fn run(cp: &support::ControlPlane, n: usize) -> serde_json::Value {
    flaggit::install_crypto_provider();
    let client = cp.client().await;
    let namespace = support::TestNamespace::create(&client, &format!("ledger-{n}")).await;
    let ns = namespace.name.clone();
    let api: Api<Canary> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..n).map(|i| format!("app-{i:04}")).collect();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &canary(&name))
                    .await
                    .expect("create a canary")
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    let files = BTreeMap::from([("README.md", "the config repo\n")]);
    let repo = git_remote::BareRepo::new("bench", &files);
    let daemon = git_remote::GitDaemon::start(&repo.root);
    let cache = git_remote::TempDir::new("ledger-bench-cache");
    let writer = Writer::new(
        client.clone(),
        Settings {
            cache_dir: cache.path().to_path_buf(),
            ..Settings::default()
        },
    );
    let source = Source {
        remote: Remote {
            url: daemon.url(&repo),
            branch: "main".into(),
        },
        secret: None,
        path: None,
        namespace: None,
        origin: Origin::Default,
    };

    let mut latencies: Vec<Duration> = Vec::new();
    let mut busy = Duration::ZERO;
    for round in 1..=ROUNDS {
        let started = Instant::now();
        let sent: HashMap<String, Instant> = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let api = api.clone();
                let writer = writer.clone();
                let source = source.clone();
                let ns = ns.clone();
                async move {
                    let record = json!({
                        "seq": round, "kind": "Step", "revision": format!("flaggit1-r{round}"),
                        "phase": "Progressing", "weight": round * 10,
                        "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        "images": {"app": format!("app:{round}")},
                        "checks": [{"name": "request-success-rate", "value": 99.9, "passed": true}],
                    });
                    let patch = json!({"status": {"gitops": {"lastRecord": round, "pending": [record]}}});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("write the outbox");
                    writer.notify(Job {
                        namespace: ns,
                        name: name.clone(),
                        source,
                        upto: round,
                    });
                    (name, Instant::now())
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        eprintln!(
            "round {round}: outboxes written in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        let mut seen: HashMap<String, Instant> = HashMap::new();
        while seen.len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "round {round}: only {} of {n} pushed",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let list = api.list(&Default::default()).await.expect("list canaries");
            let now = Instant::now();
            for c in list {
                let pushed = c
                    .status
                    .as_ref()
                    .and_then(|s| s.gitops.as_ref())
                    .and_then(|g| g.pushed_record);
                if pushed >= Some(round) {
                    seen.entry(c.name_any()).or_insert(now);
                }
            }
        }
        busy += started.elapsed();
        for (name, at) in &seen {
            latencies.push(at.duration_since(sent[name]));
        }
        eprintln!(
            "round {round}: {n} records on the remote after {:.2}s",
            started.elapsed().as_secs_f64()
        );
    }
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    let stats = writer.stats();
    let pushes = stats.pushes.load(std::sync::atomic::Ordering::Relaxed);
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let rejected = stats.rejected.load(std::sync::atomic::Ordering::Relaxed);
    let on_remote: u64 = git_remote::git(&repo.path, &["rev-list", "--count", "main"])
        .trim()
        .parse()
        .expect("a count");
    let records = n as u64 * ROUNDS as u64;
    assert_eq!(
        on_remote,
        records + 1,
        "every record exactly once (plus the seed commit)"
    );
    let result = json!({
        "canaries": n,
        "rounds": ROUNDS,
        "records": records,
        "seconds": busy.as_secs_f64(),
        "records_per_second": records as f64 / busy.as_secs_f64(),
        "pushes": pushes,
        "pushes_per_second": pushes as f64 / busy.as_secs_f64(),
        "rejected_pushes": rejected,
        "commits": commits,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
    });
    drop(daemon);
    namespace.delete(&client).await;
    result
}
