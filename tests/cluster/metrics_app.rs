//! Metrics test harness: [`MetricsApp`], a loopback HTTP server whose `/metrics` simulates
//! the traffic of workloads in both the generic HTTP and Istio shapes; [`prometheus()`], one
//! real Prometheus per test run scraping it every second; and [`AuthProxy`], a loopback proxy
//! in front of Prometheus that demands credentials. Tests keep apart by namespace label.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;

use crate::support::free_port;

/// How often the simulated counters grow.
const TICK: Duration = Duration::from_millis(100);
/// Histogram bounds every series has, in milliseconds (Prometheus client defaults).
const BASE_BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// One simulated pod of a workload.
#[derive(Default)]
struct Series {
    rps: f64,
    error_ratio: f64,
    /// Latency of every request, in microseconds.
    latency_us: u64,
    running: bool,
    /// Requests so far per latency (µs) as (ok, errors): latency changes keep the
    /// histogram's earlier observations where they were.
    observed: BTreeMap<u64, (f64, f64)>,
}

impl Series {
    /// Where the requests of latency `l` (µs) are recorded: just above `l`, so that the p99
    /// Prometheus interpolates between the bounds `l` and `l·1.001` is `l` to within 0.1%
    /// and truncates to `l` whole milliseconds.
    fn observed_at(l: u64) -> u64 {
        l + l / 2000
    }

    fn bounds_us(&self) -> BTreeSet<u64> {
        let mut bounds: BTreeSet<u64> = BASE_BOUNDS_MS.iter().map(|ms| ms * 1000).collect();
        for &l in self.observed.keys() {
            bounds.insert(l);
            bounds.insert(l + l / 1000);
        }
        bounds
    }

    /// (ok, errors) observed at or below `bound_us`.
    fn cumulative(&self, bound_us: u64) -> (f64, f64) {
        self.observed
            .iter()
            .filter(|(l, _)| Self::observed_at(**l) <= bound_us)
            .fold((0.0, 0.0), |acc, (_, (ok, err))| (acc.0 + ok, acc.1 + err))
    }

    fn totals(&self) -> (f64, f64) {
        self.cumulative(u64::MAX)
    }

    /// Sum of observed latencies in microseconds, split (ok, errors).
    fn sums_us(&self) -> (f64, f64) {
        self.observed.iter().fold((0.0, 0.0), |acc, (l, (ok, err))| {
            let at = Self::observed_at(*l) as f64;
            (acc.0 + ok * at, acc.1 + err * at)
        })
    }
}

type Key = (String, String, String);
type Workloads = Arc<Mutex<BTreeMap<Key, Series>>>;

/// A loopback app exposing simulated request metrics at `/metrics`.
pub struct MetricsApp {
    pub port: u16,
    series: Workloads,
}

/// The one app of this test run, which [`prometheus()`] scrapes.
pub fn metrics_app() -> &'static MetricsApp {
    static APP: OnceLock<MetricsApp> = OnceLock::new();
    APP.get_or_init(MetricsApp::start)
}

impl MetricsApp {
    fn start() -> Self {
        let series: Workloads = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the metrics app");
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("non-blocking listener");
        let app = Router::new()
            .route("/metrics", get(exposition))
            .with_state(series.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("metrics app runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                axum::serve(listener, app).await.expect("metrics app serves");
            });
        });
        let ticking = series.clone();
        std::thread::spawn(move || {
            let mut last = Instant::now();
            loop {
                std::thread::sleep(TICK);
                let now = Instant::now();
                let dt = now.duration_since(last).as_secs_f64();
                last = now;
                let mut all = ticking.lock().expect("series lock");
                for s in all.values_mut().filter(|s| s.running) {
                    let requests = s.rps * dt;
                    let errors = requests * s.error_ratio;
                    let entry = s.observed.entry(s.latency_us).or_default();
                    entry.0 += requests - errors;
                    entry.1 += errors;
                }
            }
        });
        Self { port, series }
    }

    /// Simulates `rps` requests per second to `pod` of `workload` in `namespace`, a share
    /// `error_ratio` (0-1) of them answered 500, each taking `latency_ms`. Pod names should
    /// look like Kubernetes' (`<workload>-<hash>-<id>`): the generic HTTP queries match them so.
    pub fn set(
        &self,
        namespace: &str,
        workload: &str,
        pod: &str,
        rps: f64,
        error_ratio: f64,
        latency_ms: u64,
    ) {
        let mut all = self.series.lock().expect("series lock");
        let s = all
            .entry((namespace.into(), workload.into(), pod.into()))
            .or_default();
        s.rps = rps;
        s.error_ratio = error_ratio.clamp(0.0, 1.0);
        s.latency_us = latency_ms * 1000;
        s.running = true;
        s.observed.entry(s.latency_us).or_default();
    }

    /// Stops the traffic of `pod`; its counters stay exposed but no longer grow.
    pub fn stop(&self, namespace: &str, workload: &str, pod: &str) {
        let mut all = self.series.lock().expect("series lock");
        if let Some(s) = all.get_mut(&(namespace.into(), workload.into(), pod.into())) {
            s.running = false;
        }
    }
}

/// The Prometheus text exposition of every simulated pod.
async fn exposition(State(series): State<Workloads>) -> String {
    let all = series.lock().expect("series lock");
    let mut out = String::new();
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for ((ns, _, pod), s) in all.iter() {
        let (ok_sum, err_sum) = s.sums_us();
        let (ok_total, err_total) = s.totals();
        for (status, pick) in [("200", 0), ("500", 1)] {
            let labels =
                format!(r#"kubernetes_namespace="{ns}",kubernetes_pod_name="{pod}",status="{status}""#);
            let choose = |pair: (f64, f64)| if pick == 0 { pair.0 } else { pair.1 };
            for bound in s.bounds_us() {
                let le = bound as f64 / 1e6;
                let count = choose(s.cumulative(bound));
                let _ = writeln!(
                    out,
                    r#"http_request_duration_seconds_bucket{{{labels},le="{le}"}} {count}"#
                );
            }
            let total = choose((ok_total, err_total));
            let sum = choose((ok_sum, err_sum)) / 1e6;
            let _ = writeln!(
                out,
                r#"http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}"#
            );
            let _ = writeln!(out, "http_request_duration_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "http_request_duration_seconds_count{{{labels}}} {total}");
        }
    }
    out.push_str("# TYPE istio_requests_total counter\n");
    for ((ns, workload, pod), s) in all.iter() {
        let (ok_total, err_total) = s.totals();
        for (code, total) in [("200", ok_total), ("500", err_total)] {
            let _ = writeln!(
                out,
                r#"istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}",destination_workload="{workload}",kubernetes_pod_name="{pod}",response_code="{code}"}} {total}"#
            );
        }
    }
    out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    for ((ns, workload, pod), s) in all.iter() {
        let (ok_sum, err_sum) = s.sums_us();
        let (ok_total, err_total) = s.totals();
        for (code, pick) in [("200", 0), ("500", 1)] {
            let labels = format!(
                r#"reporter="destination",destination_workload_namespace="{ns}",destination_workload="{workload}",kubernetes_pod_name="{pod}",response_code="{code}""#
            );
            let choose = |pair: (f64, f64)| if pick == 0 { pair.0 } else { pair.1 };
            for bound in s.bounds_us() {
                let le = bound as f64 / 1e3;
                let count = choose(s.cumulative(bound));
                let _ = writeln!(
                    out,
                    r#"istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {count}"#
                );
            }
            let total = choose((ok_total, err_total));
            let sum = choose((ok_sum, err_sum)) / 1e3;
            let _ = writeln!(
                out,
                r#"istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {total}"#
            );
            let _ = writeln!(out, "istio_request_duration_milliseconds_sum{{{labels}}} {sum}");
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_count{{{labels}}} {total}"
            );
        }
    }
    out
}

/// The real Prometheus of this test run.
pub struct Prometheus {
    url: String,
    /// Where [`Prometheus::scrape`] drops file_sd target files for the `extra` job.
    targets: std::path::PathBuf,
    /// Held for the life of the process: its end (EOF) makes the wrapper stop Prometheus
    /// and remove its data directory.
    _supervisor: Mutex<(Child, ChildStdin)>,
}

/// Starts Prometheus on first use, scraping [`metrics_app()`] every second.
pub fn prometheus() -> &'static Prometheus {
    static PROMETHEUS: OnceLock<Prometheus> = OnceLock::new();
    PROMETHEUS.get_or_init(Prometheus::start)
}

/// Runs Prometheus in the background and stops it once stdin closes (the test process
/// ended, however it ended) or on a signal.
const SUPERVISOR: &str = r#"
set -u
dir=$1; shift
"$@" </dev/null >"$dir/prometheus.log" 2>&1 &
pid=$!
cleanup() { trap - EXIT; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
echo started
while read -r _; do :; done
"#;

impl Prometheus {
    fn start() -> Self {
        let binary = std::env::var("FLAGGIT_PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        assert!(
            std::path::Path::new(&binary).exists(),
            "{binary} is missing: install the Debian package `prometheus` (scripts/deps.sh)"
        );
        let app = metrics_app();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("flaggit-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the Prometheus directory");
        let config = dir.join("prometheus.yml");
        let targets = dir.join("targets");
        std::fs::create_dir_all(&targets).expect("create the file_sd directory");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: metrics-app\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n\
                 \x20 - job_name: extra\n    file_sd_configs:\n      - files: ['{}/*.json']\n        refresh_interval: 1s\n",
                app.port,
                targets.display()
            ),
        )
        .expect("write prometheus.yml");
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("prometheus-supervisor")
            .arg(&dir)
            .arg(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=2h")
            .arg("--log.level=warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bash runs the Prometheus supervisor");
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the supervisor's output");
        assert_eq!(line.trim(), "started", "the Prometheus supervisor did not start");

        let started = Instant::now();
        let log = dir.join("prometheus.log");
        loop {
            if let Some((200, _)) = crate::support::http_get(port, "/-/ready") {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) || matches!(child.try_wait(), Ok(Some(_))) {
                let mut text = String::new();
                let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
                panic!("Prometheus did not become ready on 127.0.0.1:{port}; its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "prometheus up in {:.1}s on 127.0.0.1:{port}, scraping 127.0.0.1:{}",
            started.elapsed().as_secs_f64(),
            app.port
        );
        Self {
            url: format!("http://127.0.0.1:{port}"),
            targets,
            _supervisor: Mutex::new((child, stdin)),
        }
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Also scrapes `127.0.0.1:<port>/metrics` every second (job `extra`, label
    /// `target=<name>`), for example a `flaggit run` of a test.
    pub fn scrape(&self, name: &str, port: u16) {
        let file =
            serde_json::json!([{"targets": [format!("127.0.0.1:{port}")], "labels": {"target": name}}]);
        let path = self.targets.join(format!("{name}.json"));
        let staged = self.targets.join(format!(".{name}.tmp"));
        // Written aside then renamed, so Prometheus never reads half a file.
        std::fs::write(&staged, file.to_string()).expect("write the file_sd target");
        std::fs::rename(&staged, &path).expect("publish the file_sd target");
    }

    /// The single value of `query` now, or why there is none.
    pub async fn query(&self, query: &str) -> Result<f64, flaggit::analysis::QueryError> {
        use flaggit::analysis::MetricProvider;
        let provider = flaggit::analysis::prometheus::Prometheus::new(
            &self.url,
            None,
            None,
            false,
            Duration::from_secs(5),
        )
        .expect("the test Prometheus URL is valid");
        provider.run_query(query).await
    }

    /// Waits until `query` has a value (scrapes arrive every second) and returns it.
    pub async fn wait_for_value(&self, query: &str, timeout: Duration) -> f64 {
        let started = Instant::now();
        loop {
            let answer = self.query(query).await;
            if let Ok(value) = answer {
                return value;
            }
            assert!(
                started.elapsed() < timeout,
                "no value for {query} after {timeout:?}: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A loopback reverse proxy to Prometheus that answers 401 unless every required header is
/// present with its value: stands in for an authenticating Prometheus gateway.
pub struct AuthProxy {
    pub port: u16,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    required: Vec<(String, String)>,
    client: reqwest::Client,
}

impl AuthProxy {
    /// Proxies to `upstream`, requiring `required` (header name, exact value) pairs.
    pub fn start(upstream: &str, required: &[(&str, &str)]) -> Self {
        flaggit::install_crypto_provider();
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            required: required
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            client: reqwest::Client::new(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the auth proxy");
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("non-blocking listener");
        let app = Router::new().fallback(proxy).with_state(state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("auth proxy runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                axum::serve(listener, app).await.expect("auth proxy serves");
            });
        });
        Self { port }
    }

    /// The proxy's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

async fn proxy(State(state): State<ProxyState>, headers: HeaderMap, uri: Uri) -> (StatusCode, String) {
    for (name, value) in &state.required {
        if headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str()) {
            return (StatusCode::UNAUTHORIZED, format!("missing or wrong {name}\n"));
        }
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match state.client.get(format!("{}{path}", state.upstream)).send().await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
