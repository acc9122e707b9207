//! The rollout engine under load: N canaries on a local API server, every target changed at
//! a steady rate, and how long each takes to reach "New revision detected" (status phase
//! Progressing with the new revision). Also reconciles per second, and the controller's RSS
//! and CPU. Prints the numbers and writes them to `target/bench/engine-<N>.json`.
//!
//!     cargo bench --bench engine -- 100 1000
//!
//! Starts the local control plane the way the cluster tests do (`tests/cluster/support.rs`);
//! with `FLAGGIT_TEST_KUBECONFIG` set it uses that cluster instead.
//!
//! With `FLAGGIT_TEST_AUDIT_LOG=/abs/path` the API server writes an audit log there, and the
//! benchmark also counts the controller's API requests while the canaries initialize and while
//! the changes are detected, per kind, with its CPU time per reconcile, and adds them to
//! `target/bench/engine-requests.json` under the commit (`git describe --always --dirty`, or
//! `FLAGGIT_BENCH_LABEL`). Those counts do not depend on how busy the machine is.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use flaggit::api::{Canary, CanaryAnalysis, CanaryPhase, CanaryService, CanarySpec, Provider, TargetRef};

#[path = "engine/audit.rs"]
mod audit;
mod common;
#[path = "../tests/cluster/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;
// The harness of the cluster tests: the control plane, kubectl, namespaces, free ports.
#[path = "../tests/cluster/support.rs"]
#[allow(dead_code)]
mod support;

fn main() {
    let Some(sizes) = common::sizes("engine", &[100, 1000]) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let cp = support::control_plane();
    cp.install_crds();
    for n in sizes {
        let result = runtime.block_on(run(cp, n));
        common::save("engine", n, &result);
    }
}

async fn run(cp: &support::ControlPlane, n: usize) -> serde_json::Value {
    let client = cp.client().await;
    let namespace = support::TestNamespace::create(&client, &format!("bench-{n}")).await;
    let ns = namespace.name.clone();
    let _kubelet = kubelet::Kubelet::start(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);

    let created = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (deployments, canaries) = (deployments.clone(), canaries.clone());
            async move {
                let name = format!("app-{i}");
                deployments
                    .create(&PostParams::default(), &deployment(&name, "app:1"))
                    .await
                    .expect("create deployment");
                canaries
                    .create(&PostParams::default(), &canary(&name))
                    .await
                    .expect("create canary");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    eprintln!("created {n} deployments and canaries in {:?}", created.elapsed());

    let audit_log = audit::log_path();
    let kubeconfig = match &audit_log {
        Some(_) => audit::impersonating_kubeconfig(&cp.kubeconfig),
        None => cp.kubeconfig.clone(),
    };
    let audit_start = audit_log.as_deref().map(audit::mark);
    let load_at_start = load_average();
    let mut flaggit = start_flaggit(&kubeconfig, &ns);
    let started = Instant::now();
    wait_all(
        &canaries,
        n,
        |c| phase(c) == Some(CanaryPhase::Initialized),
        Duration::from_secs(600),
    )
    .await;
    let initialized_in = started.elapsed();
    eprintln!("{n} canaries initialized in {initialized_in:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Watch the canaries for the moment each reaches Progressing.
    let seen: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n]));
    let watch = {
        let seen = seen.clone();
        let stream = watcher(canaries.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(canary)) = stream.try_next().await {
                if phase(&canary) == Some(CanaryPhase::Progressing)
                    && let Some(i) = index(&canary)
                {
                    let mut seen = seen.lock().expect("lock");
                    seen[i].get_or_insert_with(Instant::now);
                }
            }
        })
    };
    let reconciles_before = reconciles(flaggit.port);
    let cpu_before = cpu_ticks(flaggit.child.id());
    let audit_initialized = audit_log.as_deref().map(audit::mark);
    let change_started = Instant::now();
    // A steady stream of changes: 100 targets per second.
    let rate = Duration::from_millis(10);
    let mut changed_at = vec![change_started; n];
    for (i, at) in changed_at.iter_mut().enumerate() {
        let due = change_started + rate * i as u32;
        tokio::time::sleep_until(due.into()).await;
        *at = Instant::now();
        let patch =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
        let deployments = deployments.clone();
        tokio::spawn(async move {
            deployments
                .patch(
                    &format!("app-{i}"),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
                .expect("patch deployment");
        });
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = seen.lock().expect("lock").iter().filter(|s| s.is_some()).count();
        if done == n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window = change_started.elapsed();
    watch.abort();
    let reconciles_after = reconciles(flaggit.port);
    let cpu_after = cpu_ticks(flaggit.child.id());
    let rss = rss_kib(flaggit.child.id(), "VmRSS:");
    // Heap and stacks, apart from the pages of the binary (which grow with its code).
    let rss_anon = rss_kib(flaggit.child.id(), "RssAnon:");
    let rss_file = rss_kib(flaggit.child.id(), "RssFile:");
    let load_at_end = load_average();

    let seen = seen.lock().expect("lock").clone();
    let mut latencies: Vec<f64> = seen
        .iter()
        .zip(&changed_at)
        .filter_map(|(seen, changed)| {
            seen.map(|s| s.saturating_duration_since(*changed).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let detected = latencies.len();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let result = json!({
        "canaries": n,
        "detected": detected,
        "initialize_all_seconds": initialized_in.as_secs_f64(),
        "change_rate_per_second": 100,
        "detection_ms": {
            "p50": percentile(0.50),
            "p90": percentile(0.90),
            "p99": percentile(0.99),
            "max": latencies.last().copied().unwrap_or(f64::NAN),
        },
        "reconciles_per_second": (reconciles_after - reconciles_before) / window.as_secs_f64(),
        "controller_rss_mib": rss as f64 / 1024.0,
        "controller_rss_anon_mib": rss_anon as f64 / 1024.0,
        "controller_rss_file_mib": rss_file as f64 / 1024.0,
        "controller_cpu_percent_during_changes":
            (cpu_after - cpu_before) as f64 / ticks_per_second / window.as_secs_f64() * 100.0,
        "window_seconds": window.as_secs_f64(),
        // RSS and latencies depend on how busy the shared machine was: 1, 5, 15 min averages.
        "load_average": {"controller_start": load_at_start, "window_end": load_at_end},
    });
    if let (Some(log), Some(start), Some(initialized)) = (&audit_log, audit_start, audit_initialized) {
        // What the detecting reconciles do right after the phase changes belongs to them.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let end = audit::mark(log);
        let reconciles = reconciles(flaggit.port) - reconciles_before;
        let cpu = cpu_ticks(flaggit.child.id()) - cpu_before;
        // The API server logs a watch when it ends: stop the controller, then count them.
        let _ = flaggit.child.kill();
        let _ = flaggit.child.wait();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = RequestReport {
            label: label(),
            canaries: n,
            detected,
            initialize: PhaseRequests::new(
                audit::count(log, start, initialized),
                n,
                reconciles_before,
                cpu_before,
            ),
            change: PhaseRequests::new(audit::count(log, initialized, end), n, reconciles, cpu),
            watches_opened: audit::count(log, start, audit::mark(log))
                .by_kind
                .into_iter()
                .filter(|(kind, _)| kind.starts_with("watch "))
                .collect(),
        };
        save_requests(&report);
    }
    let _ = flaggit.child.kill();
    let _ = flaggit.child.wait();
    namespace.delete(&client).await;
    result
}

/// The controller's API requests in one benchmark run (see `engine/audit.rs`).
#[derive(serde::Serialize)]
struct RequestReport {
    label: String,
    canaries: usize,
    detected: usize,
    /// From the controller's start until every canary is Initialized (and 2 s more).
    initialize: PhaseRequests,
    /// From the first change until every change is detected (and 5 s more).
    change: PhaseRequests,
    /// Watches the controller opened during the whole run, per resource.
    watches_opened: std::collections::BTreeMap<String, u64>,
}

#[derive(serde::Serialize)]
struct PhaseRequests {
    requests_per_canary: f64,
    reconciles: f64,
    requests_per_reconcile: f64,
    cpu_seconds: f64,
    cpu_ms_per_reconcile: f64,
    requests: audit::Requests,
}

impl PhaseRequests {
    fn new(requests: audit::Requests, n: usize, reconciles: f64, cpu_ticks: u64) -> Self {
        let cpu_seconds = cpu_ticks as f64 / 100.0; // USER_HZ on Linux
        Self {
            requests_per_canary: requests.total as f64 / n as f64,
            reconciles,
            requests_per_reconcile: requests.total as f64 / reconciles,
            cpu_seconds,
            cpu_ms_per_reconcile: cpu_seconds * 1000.0 / reconciles,
            requests,
        }
    }
}

/// Which code ran: `FLAGGIT_BENCH_LABEL`, or the commit of this tree.
fn label() -> String {
    if let Ok(label) = std::env::var("FLAGGIT_BENCH_LABEL") {
        return label;
    }
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Adds (or replaces) the run under its label in `target/bench/engine-requests.json`.
fn save_requests(report: &RequestReport) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/engine-requests.json");
    let mut all: std::collections::BTreeMap<String, serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let value = serde_json::to_value(report).expect("the report serializes");
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("a JSON value serializes")
    );
    all.insert(report.label.clone(), value);
    std::fs::create_dir_all(path.parent().expect("target/bench has a parent")).expect("create target/bench");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&all).expect("a JSON value serializes"),
    )
    .expect("write the request counts");
    eprintln!("wrote {}", path.display());
}

struct Running {
    child: Child,
    port: u16,
}

fn start_flaggit(kubeconfig: &Path, ns: &str) -> Running {
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args(["run", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--leader-election",
            "false",
            "--namespace",
            ns,
            "--listen-address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "warn",
        ])
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flaggit starts");
    Running { child, port }
}

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    }))
    .expect("a valid deployment")
}

fn canary(name: &str) -> Canary {
    Canary::new(
        name,
        CanarySpec {
            provider: Some(Provider::Kubernetes),
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: Default::default(),
                name: name.into(),
            },
            service: Some(CanaryService {
                port: 80,
                ..Default::default()
            }),
            analysis: Some(CanaryAnalysis {
                interval: Some("1m".into()),
                threshold: Some(1),
                iterations: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn phase(canary: &Canary) -> Option<CanaryPhase> {
    canary.status.as_ref().and_then(|s| s.phase)
}

fn index(canary: &Canary) -> Option<usize> {
    canary.name_any().strip_prefix("app-")?.parse().ok()
}

async fn wait_all(api: &Api<Canary>, n: usize, done: impl Fn(&Canary) -> bool, timeout: Duration) {
    let start = Instant::now();
    loop {
        let list = api.list(&Default::default()).await.expect("list canaries");
        let count = list.items.iter().filter(|c| done(c)).count();
        if count >= n {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "only {count} of {n} canaries got there in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn reconciles(port: u16) -> f64 {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    use std::io::{Read, Write};
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("flaggit_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; after the ")" they are at 11 and 12.
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// The 1, 5 and 15 minute load averages of the machine.
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// A memory line of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, `RssFile:`), in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
