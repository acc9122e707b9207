//! The Git writer under load: N canaries on a local API server get step records in their
//! outboxes, and the real writer pushes them to a bare repository served by `git daemon` on
//! loopback. Two cases:
//!
//! - **burst**: every canary steps at once, 3 rounds (the worst case: N records within the
//!   time it takes to write N statuses);
//! - **spread**: every canary steps once more, at evenly spaced times over 20 s (a fleet whose
//!   canaries step on their own timers).
//!
//! For each it measures the latency from a record entering the outbox to the canary's status
//! saying it is on the remote (seen by a watch, so not rounded to a polling interval), and what
//! each batch cost (reading the outboxes, building the commits, pushing, acknowledging), with a
//! straight-line fit of cost against records per batch. Prints the numbers and writes them to
//! `target/bench/ledger-<N>.json`.
//!
//!     cargo bench --bench ledger -- 1000 5000

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use flaggit::api::{Canary, CanaryService, CanarySpec, TargetRef};
use flaggit::gitops::Remote;
use flaggit::gitops::source::Source;
use flaggit::gitops::writer::{BatchCost, Job, Settings, Writer};

mod common;
#[path = "../tests/cluster/git_remote.rs"]
mod git_remote;
#[path = "../tests/cluster/support.rs"]
#[allow(dead_code)]
mod support;

/// Rounds in which every canary steps at once.
const BURST_ROUNDS: i64 = 3;
/// The spread round: every canary steps once within this time, evenly spaced.
const SPREAD: Duration = Duration::from_secs(20);
/// Outbox writes in flight at once (as many reconciles writing statuses).
const WRITERS: usize = 32;

fn main() {
    let Some(sizes) = common::sizes("ledger", &[1000]) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("flaggit=info"))
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

/// When each canary's status first said that a record is on the remote, by (name, record).
#[derive(Default)]
struct Seen {
    pushed: HashMap<String, i64>,
    at: HashMap<(String, i64), Instant>,
}

/// Watches the canaries and notes when each record is first acknowledged.
fn watch(api: Api<Canary>) -> Arc<Mutex<Seen>> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let into = seen.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let canary = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
                Ok(_) => continue,
                Err(error) => {
                    eprintln!("watch: {error}");
                    continue;
                }
            };
            let now = Instant::now();
            let pushed = canary
                .status
                .as_ref()
                .and_then(|s| s.gitops.as_ref())
                .and_then(|g| g.pushed_record)
                .unwrap_or(0);
            let name = canary.name_any();
            let mut seen = into.lock().expect("not poisoned");
            let before = seen.pushed.get(&name).copied().unwrap_or(0);
            if pushed > before {
                for record in before + 1..=pushed {
                    seen.at.entry((name.clone(), record)).or_insert(now);
                }
                seen.pushed.insert(name, pushed);
            }
        }
    });
    seen
}

/// What the benchmark hands the writer, besides the canary names.
struct Rig {
    api: Api<Canary>,
    writer: Writer,
    source: Source,
    seen: Arc<Mutex<Seen>>,
}

impl Rig {
    /// Writes record `seq` into the outbox of `name`, tells the writer (handing it the canary
    /// as the API server answered the write, as the reconciler does), and returns when the
    /// outbox was written.
    async fn step(&self, name: &str, seq: i64) -> Instant {
        let record = json!({
            "seq": seq, "kind": "Step", "revision": format!("flaggit1-r{seq}"),
            "phase": "Progressing", "weight": seq * 10,
            "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "images": {"app": format!("app:{seq}")},
            "checks": [{"name": "request-success-rate", "value": 99.9, "passed": true}],
        });
        let patch = json!({"status": {"gitops": {"lastRecord": seq, "pending": [record]}}});
        let stored = self
            .api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("write the outbox");
        let sent = Instant::now();
        self.writer
            .notify(Job::with_snapshot(self.source.clone(), seq, stored));
        sent
    }

    /// Waits until every canary of `sent` has record `seq` on the remote; returns the
    /// latencies, in no order.
    async fn wait(&self, sent: &HashMap<String, Instant>, seq: i64, what: &str) -> Vec<Duration> {
        let started = Instant::now();
        loop {
            {
                let seen = self.seen.lock().expect("not poisoned");
                let arrived: Vec<Duration> = sent
                    .iter()
                    .filter_map(|(name, at)| {
                        let pushed = seen.at.get(&(name.clone(), seq))?;
                        Some(pushed.saturating_duration_since(*at))
                    })
                    .collect();
                if arrived.len() == sent.len() {
                    return arrived;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "{what}: only {} of {} records acknowledged",
                    arrived.len(),
                    sent.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn run(cp: &support::ControlPlane, n: usize) -> serde_json::Value {
    flaggit::install_crypto_provider();
    let load_before = load();
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
        .buffer_unordered(WRITERS)
        .collect::<Vec<_>>()
        .await;

    let files = BTreeMap::from([("README.md", "the config repo\n")]);
    let repo = git_remote::BareRepo::new("bench", &files);
    let daemon = git_remote::GitDaemon::start(&repo.root);
    let cache = git_remote::TempDir::new("ledger-bench-cache");
    let settings = Settings {
        cache_dir: cache.path().to_path_buf(),
        ..Settings::default()
    };
    let window = settings.batch_window;
    let rig = Rig {
        api: api.clone(),
        writer: Writer::new(client.clone(), settings),
        source: Source::ledger_only(
            Remote {
                url: daemon.url(&repo),
                branch: "main".into(),
            },
            None,
        ),
        seen: watch(api.clone()),
    };

    let remote_cpu = || daemon.pid().map_or(Duration::ZERO, children_cpu);
    let remote_before = remote_cpu();
    let pids = control_plane_pids(cp);
    let cluster_cpu = || pids.iter().map(|(_, pid)| own_cpu(*pid)).sum::<Duration>();
    let cluster_before = cluster_cpu();
    let process_before = own_cpu(std::process::id());

    // Burst: every canary steps at once.
    let mut burst: Vec<Duration> = Vec::new();
    let mut burst_time = Duration::ZERO;
    for round in 1..=BURST_ROUNDS {
        let started = Instant::now();
        let sent: HashMap<String, Instant> = futures::stream::iter(names.iter())
            .map(|name| async { (name.clone(), rig.step(name, round).await) })
            .buffer_unordered(WRITERS)
            .collect()
            .await;
        let written = started.elapsed();
        burst.extend(rig.wait(&sent, round, &format!("burst round {round}")).await);
        burst_time += started.elapsed();
        eprintln!(
            "burst round {round}: outboxes written in {:.2}s, all {n} on the remote after {:.2}s",
            written.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    let burst_batches = settled_batches(&rig.writer).await;
    let remote_burst = remote_cpu();
    let cluster_burst = cluster_cpu();
    let process_burst = own_cpu(std::process::id());

    // Spread: every canary steps once more, at its own time.
    let seq = BURST_ROUNDS + 1;
    let started = tokio::time::Instant::now();
    let gap = SPREAD / n as u32;
    let sent: HashMap<String, Instant> = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let rig = &rig;
            async move {
                tokio::time::sleep_until(started + gap * i as u32).await;
                (name.clone(), rig.step(name, seq).await)
            }
        })
        .buffer_unordered(WRITERS * 4)
        .collect()
        .await;
    let spread = rig.wait(&sent, seq, "spread round").await;
    eprintln!(
        "spread round: {n} steps over {:?}, all on the remote after {:.2}s",
        SPREAD,
        started.elapsed().as_secs_f64()
    );
    let all_batches = settled_batches(&rig.writer).await;
    let remote_spread = remote_cpu();
    let cluster_spread = cluster_cpu();
    let process_spread = own_cpu(std::process::id());
    let spread_batches: Vec<BatchCost> = all_batches
        .iter()
        .filter(|b| !burst_batches.iter().any(|old| old.id == b.id))
        .cloned()
        .collect();

    let stats = rig.writer.stats();
    let pushes = stats.pushes.load(std::sync::atomic::Ordering::Relaxed);
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let rejected = stats.rejected.load(std::sync::atomic::Ordering::Relaxed);
    let on_remote: u64 = git_remote::git(&repo.path, &["rev-list", "--count", "main"])
        .trim()
        .parse()
        .expect("a count");
    let records = n as u64 * seq as u64;
    assert_eq!(
        on_remote,
        records + 1,
        "every record exactly once (plus the seed commit)"
    );
    in_order(&repo.path, n, seq);
    // The trees built in memory are well-formed git objects.
    git_remote::git(&repo.path, &["fsck", "--strict", "--no-dangling"]);
    // One push per batch here (nothing else pushes, so none is rejected).
    let push_round_trip = median(spread_batches.iter().map(|b| b.push).collect());
    let result = json!({
        "canaries": n,
        "records": records,
        "pushes": pushes,
        "rejected_pushes": rejected,
        "commits": commits,
        "batch_window_ms": ms(window),
        "load_average": {"before": load_before, "after": load()},
        "burst": {
            "rounds": BURST_ROUNDS,
            "records": n as i64 * BURST_ROUNDS,
            "seconds": burst_time.as_secs_f64(),
            "records_per_second": (n as i64 * BURST_ROUNDS) as f64 / burst_time.as_secs_f64(),
            "latency_ms": percentiles(burst),
            "batches": batches_json(&burst_batches),
            "cost_fit": fit(&burst_batches),
            "cpu": cpu_json(&burst_batches, remote_burst.saturating_sub(remote_before)),
            "cpu_elsewhere_ms": {
                "api_server_and_etcd": ms(cluster_burst.saturating_sub(cluster_before)),
                "benchmark_process": ms(process_burst.saturating_sub(process_before)),
            },
        },
        "spread": {
            "seconds": SPREAD.as_secs_f64(),
            "records": n,
            "latency_ms": percentiles(spread),
            "push_round_trip_ms": ms(push_round_trip),
            "goal_ms": ms(window + push_round_trip),
            "batches": batches_json(&spread_batches),
            "cost_fit": fit(&spread_batches),
            "cpu": cpu_json(&spread_batches, remote_spread.saturating_sub(remote_burst)),
            "cpu_elsewhere_ms": {
                "api_server_and_etcd": ms(cluster_spread.saturating_sub(cluster_burst)),
                "benchmark_process": ms(process_spread.saturating_sub(process_burst)),
            },
        },
    });
    drop(daemon);
    namespace.delete(&client).await;
    result
}

/// The writer's batches, once the acknowledgements of the last one are written.
async fn settled_batches(writer: &Writer) -> Vec<BatchCost> {
    for _ in 0..600 {
        let batches = writer.stats().batches();
        if batches.iter().all(|b| b.acknowledge.is_some()) {
            return batches;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.stats().batches()
}

/// Checks that each canary's records are on the remote in the order they were made.
fn in_order(repo: &std::path::Path, n: usize, last: i64) {
    let log = git_remote::git(
        repo,
        &[
            "log",
            "--reverse",
            "--format=%(trailers:key=Flaggit-Canary,valueonly,separator=)|%(trailers:key=Flaggit-Record,valueonly,separator=)",
            "main",
        ],
    );
    let mut next: HashMap<String, i64> = HashMap::new();
    let mut seen = 0;
    for line in log.lines().filter(|l| l.contains('|')) {
        let (canary, record) = line.split_once('|').expect("a separator");
        let (canary, record) = (canary.trim(), record.trim());
        if canary.is_empty() {
            continue;
        }
        let record: i64 = record
            .parse()
            .unwrap_or_else(|_| panic!("a record number in {line:?}"));
        let expected = next.entry(canary.to_string()).or_insert(1);
        assert_eq!(record, *expected, "{canary}: records in order");
        *expected += 1;
        seen += 1;
    }
    assert_eq!(seen, n as i64 * last, "every record found by its trailers");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn percentiles(mut latencies: Vec<Duration>) -> serde_json::Value {
    latencies.sort();
    let pct = |p: f64| ms(latencies[((latencies.len() as f64 - 1.0) * p).round() as usize]);
    json!({"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)})
}

/// Everything one batch cost, acknowledgements included.
fn cost(batch: &BatchCost) -> Duration {
    batch.total + batch.acknowledge.unwrap_or_default()
}

fn batches_json(batches: &[BatchCost]) -> serde_json::Value {
    for b in batches {
        eprintln!(
            "  batch {:>3}: {:>5} records, {:>4} reads, read {:>6.1} ms, commit {:>6.1} ms, push {:>6.1} ms, ack {:>6.1} ms, {:>6.3} ms/record; CPU: read {:>6.1} ms, commit {:>6.1} ms, push {:>6.1} ms, ack {:>6.1} ms",
            b.id,
            b.records,
            b.outbox_reads,
            ms(b.read),
            ms(b.commit),
            ms(b.push),
            ms(b.acknowledge.unwrap_or_default()),
            ms(cost(b)) / b.records.max(1) as f64,
            ms(b.cpu.read),
            ms(b.cpu.commit),
            ms(b.cpu.push),
            ms(b.cpu.acknowledge.unwrap_or_default()),
        );
    }
    json!(
        batches
            .iter()
            .map(|b| json!({
                "records": b.records,
                "outbox_reads": b.outbox_reads,
                "read_ms": ms(b.read),
                "commit_ms": ms(b.commit),
                "push_ms": ms(b.push),
                "acknowledge_ms": ms(b.acknowledge.unwrap_or_default()),
                "cost_ms": ms(cost(b)),
                "cpu_ms": {
                    "read": ms(b.cpu.read),
                    "commit": ms(b.cpu.commit),
                    "push": ms(b.cpu.push),
                    "acknowledge": ms(b.cpu.acknowledge.unwrap_or_default()),
                },
            }))
            .collect::<Vec<_>>()
    )
}

/// Least-squares line through (records, cost) of the batches: a fixed part per batch, a part
/// per record, and how well a line fits (r², 1 = exactly linear). The commit part is fitted
/// on its own too: it is the one that grew with the square of the batch before.
fn fit(batches: &[BatchCost]) -> serde_json::Value {
    json!({
        "cost": line(batches, &|b| ms(cost(b))),
        "commit": line(batches, &|b| ms(b.commit)),
    })
}

/// Least-squares line of `y` against records per batch.
fn line(batches: &[BatchCost], y: &dyn Fn(&BatchCost) -> f64) -> serde_json::Value {
    let points: Vec<(f64, f64)> = batches.iter().map(|b| (b.records as f64, y(b))).collect();
    let count = points.len() as f64;
    if points.len() < 2 {
        return json!(null);
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / count, sy / count);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let syy: f64 = points.iter().map(|(_, y)| (y - my).powi(2)).sum();
    if sxx == 0.0 {
        return json!(null);
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 { 1.0 } else { sxy * sxy / (sxx * syy) };
    json!({"ms_per_batch": my - slope * mx, "ms_per_record": slope, "r2": r2})
}

/// CPU time per phase over `batches`, in total and per commit, with the remote's (the
/// `receive-pack`s of `git daemon`: unpacking, connectivity check) over the same case. CPU
/// time does not grow with the machine's load as the latencies do.
fn cpu_json(batches: &[BatchCost], remote: Duration) -> serde_json::Value {
    let commits: u64 = batches.iter().map(|b| b.commits).sum();
    let total = |f: &dyn Fn(&BatchCost) -> Duration| batches.iter().map(f).sum::<Duration>();
    let read = total(&|b| b.cpu.read);
    let commit = total(&|b| b.cpu.commit);
    let push = total(&|b| b.cpu.push);
    let acknowledge = total(&|b| b.cpu.acknowledge.unwrap_or_default());
    let per_commit = |d: Duration| ms(d) / commits.max(1) as f64;
    json!({
        "commits": commits,
        "outbox_reads": batches.iter().map(|b| b.outbox_reads).sum::<usize>(),
        "total_ms": {
            "read": ms(read),
            "commit": ms(commit),
            "push": ms(push),
            "acknowledge": ms(acknowledge),
            "remote": ms(remote),
        },
        "per_commit_ms": {
            "read": per_commit(read),
            "commit": per_commit(commit),
            "push": per_commit(push),
            "acknowledge": per_commit(acknowledge),
            "remote": per_commit(remote),
        },
        "fit": {
            "commit": line(batches, &|b| ms(b.cpu.commit)),
            "push": line(batches, &|b| ms(b.cpu.push)),
            "all": line(batches, &|b| ms(b.cpu.read + b.cpu.commit + b.cpu.push + b.cpu.acknowledge.unwrap_or_default())),
        },
    })
}

/// The processes of the control plane (etcd, API server, controller manager), from the
/// `pids` file `scripts/control-plane.sh` writes next to the kubeconfig; empty for a control
/// plane started elsewhere.
fn control_plane_pids(cp: &support::ControlPlane) -> Vec<(String, u32)> {
    let Some(dir) = cp.kubeconfig.parent() else {
        return Vec::new();
    };
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

/// The CPU time (user and system) process `pid` used itself, all its threads (in clock ticks
/// of 10 ms).
fn own_cpu(pid: u32) -> Duration {
    stat_ticks(pid, [11, 12])
}

/// The CPU time (user and system) of the finished children of process `pid` (in clock ticks
/// of 10 ms).
fn children_cpu(pid: u32) -> Duration {
    stat_ticks(pid, [13, 14])
}

/// The sum of two clock-tick fields of `/proc/<pid>/stat`, counted from the state (field 3)
/// at 0.
fn stat_ticks(pid: u32, fields: [usize; 2]) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // After the command name in parentheses: the state (field 3) is at 0, so utime and
    // stime (14, 15) at 11 and 12, cutime and cstime (16, 17) at 13 and 14.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let values: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .iter()
        .filter_map(|&i| values.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The 1, 5 and 15 minute load averages.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
