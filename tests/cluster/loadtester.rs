//! `flaggit-loadtester` as a running binary: gates kept in a ConfigMap of the real API server
//! across restarts, tasks (`hey` against a loopback app, de-duplication, `bash` failures,
//! `returnCmdOutput`, unknown types, the namespace authorizer), and a full rollout whose
//! `pre-rollout`, `rollout` and `confirm-promotion` webhooks go to it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::any;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::json;

use flaggit::api::{Canary, CanaryPhase, CanarySpec, CanaryWebhook, HookType, Provider};
use flaggit::hooks::Hooks;

use crate::rollout::{Rig, canary_of, stepping};
use crate::support::{TestNamespace, control_plane, free_port, http_get};

/// A running `flaggit-loadtester` whose log is collected; killed when dropped.
struct LoadTester {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl LoadTester {
    /// Starts the binary on a free loopback port with `extra` flags and waits for `/healthz`.
    fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flaggit-loadtester"))
            .args([
                "--listen-address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-format",
                "text",
                "--timeout",
                "60s",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("POD_NAMESPACE")
            .env_remove("GATE_CONFIGMAP")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the flaggit-loadtester binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("log lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut tester = Self { child, port, log };
        let start = Instant::now();
        while http_get(port, "/healthz").map(|(s, _)| s) != Some(200) {
            if let Ok(Some(status)) = tester.child.try_wait() {
                panic!("flaggit-loadtester exited with {status}; log:\n{}", tester.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "flaggit-loadtester not healthy in 30s; log:\n{}",
                tester.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        tester.port = port;
        tester
    }

    /// With gates in the ConfigMap `name` of `namespace`.
    fn with_gates(kubeconfig: &Path, namespace: &str, name: &str, extra: &[&str]) -> Self {
        let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
        let mut args = vec![
            "--kubeconfig",
            kubeconfig,
            "--gate-configmap",
            name,
            "--gate-namespace",
            namespace,
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POSTs `body` to `path`: (status, body).
    async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let response = http()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}; log:\n{}", self.log()));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// A webhook payload for the canary `name` in `namespace`, as the controller sends it.
    async fn call(
        &self,
        path: &str,
        name: &str,
        namespace: &str,
        metadata: &[(&str, &str)],
    ) -> (u16, String) {
        let metadata: BTreeMap<&str, &str> = metadata.iter().copied().collect();
        let mut body = json!({
            "name": name, "namespace": namespace, "phase": "Progressing", "checksum": "0123456789abcdef",
        });
        if !metadata.is_empty() {
            body["metadata"] = json!(metadata);
        }
        self.post(path, &body).await
    }

    /// Stops the process the hard way, as a crash or an eviction would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoadTester {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    flaggit::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

/// A loopback app counting the requests to each path.
struct CountingApp {
    port: u16,
    hits: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CountingApp {
    async fn start() -> Self {
        let hits: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let count = |State(hits): State<Arc<Mutex<BTreeMap<String, u64>>>>,
                     UrlPath(path): UrlPath<String>| async move {
            *hits.lock().expect("hits lock").entry(path).or_default() += 1;
            "ok"
        };
        let app = Router::new()
            .route("/{path}", any(count))
            .with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the app");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn hits(&self, path: &str) -> u64 {
        self.hits
            .lock()
            .expect("hits lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    async fn wait_hits(&self, path: &str, at_least: u64, tester: &LoadTester) {
        let start = Instant::now();
        while self.hits(path) < at_least {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{path}: {} requests, wanted {at_least}; load tester log:\n{}",
                self.hits(path),
                tester.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn gate_data(api: &Api<ConfigMap>, name: &str) -> BTreeMap<String, String> {
    api.get(name)
        .await
        .expect("the gate ConfigMap")
        .data
        .unwrap_or_default()
}

#[tokio::test]
async fn gates_open_close_and_survive_a_restart() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "lt-gates").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let store = "loadtester-gates";
    let n = ns.name.as_str();

    let tester = LoadTester::with_gates(&cp.kubeconfig, n, store, &[]);
    assert!(gate_data(&configmaps, store).await.is_empty(), "created empty");
    assert_eq!(
        tester.call("/gate/approve", "podinfo", n, &[]).await,
        (200, "OK".into())
    );
    assert_eq!(
        tester.call("/gate/halt", "podinfo", n, &[]).await,
        (403, "Forbidden".into())
    );
    for path in ["/gate/check", "/rollback/check"] {
        assert_eq!(
            tester.call(path, "podinfo", n, &[]).await,
            (403, "Forbidden".into()),
            "{path}"
        );
    }
    assert_eq!(tester.call("/gate/open", "podinfo", n, &[]).await.0, 202);
    assert_eq!(
        tester.call("/gate/check", "podinfo", n, &[]).await,
        (200, "Approved".into())
    );
    assert_eq!(
        tester.call("/gate/check", "other", n, &[]).await.0,
        403,
        "per canary"
    );
    assert_eq!(
        tester.call("/rollback/check", "podinfo", n, &[]).await.0,
        403,
        "a separate gate"
    );
    assert_eq!(tester.call("/rollback/open", "podinfo", n, &[]).await.0, 202);
    assert_eq!(
        tester.call("/rollback/check", "podinfo", n, &[]).await,
        (200, "Approved".into())
    );
    assert_eq!(
        gate_data(&configmaps, store).await,
        BTreeMap::from([
            (format!("podinfo.{n}"), "open".to_string()),
            (format!("rollback.podinfo.{n}"), "open".to_string()),
        ])
    );
    // Not a payload: refused, nothing changes.
    assert_eq!(tester.post("/gate/open", &json!("nope")).await.0, 400);

    tester.kill();
    let tester = LoadTester::with_gates(&cp.kubeconfig, n, store, &[]);
    assert_eq!(
        tester.call("/gate/check", "podinfo", n, &[]).await,
        (200, "Approved".into())
    );
    assert_eq!(tester.call("/rollback/check", "podinfo", n, &[]).await.0, 200);
    assert_eq!(tester.call("/gate/close", "podinfo", n, &[]).await.0, 202);
    assert_eq!(tester.call("/gate/check", "podinfo", n, &[]).await.0, 403);
    assert_eq!(tester.call("/rollback/close", "podinfo", n, &[]).await.0, 202);
    assert!(gate_data(&configmaps, store).await.is_empty());
    let metrics = http_get(tester.port, "/metrics").expect("metrics").1;
    assert!(
        metrics.contains("flaggit_loadtester_gate_calls_total{kind=\"gate\",action=\"close\"} 1"),
        "{metrics}"
    );

    tester.kill();
    let tester = LoadTester::with_gates(&cp.kubeconfig, n, store, &[]);
    assert_eq!(
        tester.call("/gate/check", "podinfo", n, &[]).await.0,
        403,
        "closed stays closed"
    );
    assert_eq!(tester.call("/rollback/check", "podinfo", n, &[]).await.0, 403);
    tester.kill();

    // Without a store: a warning, and a restart closes the gates.
    let memory = LoadTester::start(&[]);
    assert_eq!(memory.call("/gate/open", "podinfo", n, &[]).await.0, 202);
    assert_eq!(memory.call("/gate/check", "podinfo", n, &[]).await.0, 200);
    assert!(
        memory.log().contains("gates are kept in memory"),
        "{}",
        memory.log()
    );
    memory.kill();
    let memory = LoadTester::start(&[]);
    assert_eq!(memory.call("/gate/check", "podinfo", n, &[]).await.0, 403);
    memory.kill();
    ns.delete(&client).await;
}

/// Starts the binary expecting it to fail; returns its log.
fn start_failing(args: &[&str], kubeconfig: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flaggit-loadtester"))
        .args([
            "--listen-address",
            "127.0.0.1",
            "--port",
            &free_port().to_string(),
        ])
        .args(["--log-format", "text"])
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("still running after 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("log");
    assert!(!status.success(), "{log}");
    log
}

#[tokio::test]
async fn the_manifests_role_is_enough_for_the_gate_store_and_no_role_is_not() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "lt-rbac").await;
    let n = ns.name.as_str();
    let store = "flaggit-loadtester-gates";
    let gates = ["--gate-configmap", store, "--gate-namespace", n];

    let nobody = cp.kubeconfig_as("loadtester-nobody", "loadtester-nobody.kubeconfig");
    let log = start_failing(&gates, &nobody);
    assert!(log.contains("get, create and update on configmaps"), "{log}");

    for file in ["serviceaccount.yaml", "rbac.yaml"] {
        let path = crate::support::repo().join("manifests/loadtester").join(file);
        let yaml = std::fs::read_to_string(&path).expect("manifest reads");
        let yaml = yaml.replace("namespace: test", &format!("namespace: {n}"));
        cp.kubectl_ok(&["apply", "-n", n, "-f", "-"], Some(&yaml));
    }
    let account = format!("system:serviceaccount:{n}:flaggit-loadtester");
    let kubeconfig = cp.kubeconfig_as(&account, &format!("{n}-loadtester.kubeconfig"));
    let tester = LoadTester::with_gates(&kubeconfig, n, store, &[]);
    assert_eq!(
        tester.call("/gate/open", "podinfo", n, &[]).await.0,
        202,
        "{}",
        tester.log()
    );
    assert_eq!(tester.call("/gate/check", "podinfo", n, &[]).await.0, 200);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), n);
    assert_eq!(
        gate_data(&configmaps, store)
            .await
            .get(&format!("podinfo.{n}"))
            .map(String::as_str),
        Some("open")
    );
    tester.kill();
    // The Role allows only its own ConfigMap.
    let log = start_failing(
        &["--gate-configmap", "other-gates", "--gate-namespace", n],
        &kubeconfig,
    );
    assert!(log.contains("configmaps"), "{log}");
    ns.delete(&client).await;
}

#[tokio::test]
async fn tasks_run_hey_deduplicate_and_answer_like_flaggers_load_tester() {
    let app = CountingApp::start().await;
    let tester = LoadTester::start(&["-namespace-regexp=^lt-allowed", "-log-cmd-output"]);
    let ns = "lt-allowed-1";

    // `cmd` (the default type) runs hey in the background.
    let hey = format!("hey -n 50 -c 5 {}", app.url("hey"));
    assert_eq!(
        tester.call("/", "podinfo", ns, &[("cmd", &hey)]).await,
        (202, "command started".into())
    );
    app.wait_hits("hey", 50, &tester).await;

    // The same command for the same canary does not start twice while it runs.
    let slow = format!("sleep 2; hey -n 20 -c 2 {}", app.url("dedup"));
    let first = tester
        .call("/", "podinfo", ns, &[("type", "cmd"), ("cmd", &slow)])
        .await;
    let second = tester
        .call("/", "podinfo", ns, &[("type", "cmd"), ("cmd", &slow)])
        .await;
    assert_eq!(first, (202, "command started".into()));
    assert_eq!(second, (202, "command already running".into()));
    let other_canary = tester.call("/", "other", ns, &[("cmd", &slow)]).await;
    assert_eq!(
        other_canary,
        (202, "command started".into()),
        "keyed by canary too"
    );
    app.wait_hits("dedup", 40, &tester).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.hits("dedup"), 40, "two runs, not three");
    let metrics = http_get(tester.port, "/metrics").expect("metrics").1;
    for line in [
        "flaggit_loadtester_tasks_total{type=\"cmd\",outcome=\"deduplicated\"} 1",
        "flaggit_loadtester_tasks_total{type=\"cmd\",outcome=\"started\"} 3",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    // Once finished, it can run again.
    let again = tester.call("/", "podinfo", ns, &[("cmd", &slow)]).await;
    assert_eq!(again, (202, "command started".into()));

    // `bash` waits; a non-zero exit is a 500 with the output.
    let (status, body) = tester
        .call(
            "/",
            "podinfo",
            ns,
            &[("type", "bash"), ("cmd", "echo checking; exit 4")],
        )
        .await;
    assert_eq!(status, 500);
    assert!(
        body.contains("exit status: 4") && body.contains("checking"),
        "{body}"
    );
    // returnCmdOutput returns the output; without it the body is empty.
    let echo = "echo result-$((40 + 2))";
    let with = [("type", "bash"), ("cmd", echo), ("returnCmdOutput", "true")];
    assert_eq!(
        tester.call("/", "podinfo", ns, &with).await,
        (200, "result-42\n".into())
    );
    assert_eq!(
        tester
            .call("/", "podinfo", ns, &[("type", "bash"), ("cmd", echo)])
            .await,
        (200, String::new())
    );
    // logCmdOutput (here the -log-cmd-output default) logs it.
    assert!(tester.log().contains("result-42"), "{}", tester.log());

    // An unknown type is a 400 naming it and the known ones, and the server goes on.
    let (status, body) = tester
        .call("/", "podinfo", ns, &[("type", "ngrinder"), ("cmd", "x")])
        .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("\"ngrinder\"") && body.contains("cmd, bash, kubectl, helm, helmv3"),
        "{body}"
    );
    assert_eq!(http_get(tester.port, "/healthz"), Some((200, "OK".into())));
    let (status, body) = tester.call("/", "podinfo", ns, &[]).await;
    assert_eq!(
        (status, body.contains("metadata not found")),
        (400, true),
        "{body}"
    );

    // The namespace authorizer refuses other namespaces, for tasks and gates.
    let (status, body) = tester
        .call("/", "podinfo", "prod", &[("type", "bash"), ("cmd", "true")])
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("\"prod\""), "{body}");
    assert_eq!(tester.call("/gate/open", "podinfo", "prod", &[]).await.0, 403);
    assert_eq!(tester.call("/gate/check", "podinfo", "prod", &[]).await.0, 403);

    // Through flaggit's own webhook client: the failing bash task fails the pre-rollout check.
    let hooks = Hooks::new().expect("hooks");
    let canary = |cmd: &str| {
        let mut canary = Canary::new("podinfo", CanarySpec::default());
        canary.metadata.namespace = Some(ns.to_string());
        canary.spec.analysis = Some(flaggit::api::CanaryAnalysis {
            webhooks: Some(vec![CanaryWebhook {
                name: "smoke".into(),
                type_: Some(HookType::PreRollout),
                url: tester.url("/"),
                metadata: Some(BTreeMap::from([
                    ("type".to_string(), "bash".to_string()),
                    ("cmd".to_string(), cmd.to_string()),
                ])),
                ..Default::default()
            }]),
            ..Default::default()
        });
        canary
    };
    let failed = hooks
        .gate(&canary("exit 1"), HookType::PreRollout, CanaryPhase::Progressing)
        .await;
    assert!(!failed.passed, "{failed:?}");
    let passed = hooks
        .gate(&canary("exit 0"), HookType::PreRollout, CanaryPhase::Progressing)
        .await;
    assert!(passed.passed, "{passed:?}");
}

#[tokio::test]
async fn a_rollout_runs_load_through_the_load_tester_and_waits_for_its_gate() {
    let app = CountingApp::start().await;
    let tester = LoadTester::start(&[]);
    let rig = Rig::with_args("lt-rollout", &[]).await;
    let hook = |name: &str, type_: HookType, path: &str, metadata: &[(&str, &str)]| CanaryWebhook {
        name: name.into(),
        type_: Some(type_),
        url: tester.url(path),
        timeout: Some("30s".into()),
        metadata: (!metadata.is_empty()).then(|| {
            metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    };
    let smoke = format!("hey -n 10 -c 1 {}", app.url("smoke"));
    let load = format!("hey -n 20 -c 2 {}", app.url("load"));
    let mut analysis = stepping(20, 60);
    analysis.webhooks = Some(vec![
        hook(
            "smoke-test",
            HookType::PreRollout,
            "/",
            &[("type", "bash"), ("cmd", &smoke)],
        ),
        hook("load-test", HookType::Rollout, "/", &[("cmd", &load)]),
        hook("promotion-gate", HookType::ConfirmPromotion, "/gate/check", &[]),
    ]);
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, analysis))
        .await;
    assert_eq!(app.hits("smoke"), 0, "no release yet");

    rig.set_image("podinfo", "podinfo:6.0.1").await;
    let (_, weights) = rig
        .wait_phase("podinfo", CanaryPhase::WaitingPromotion, Duration::from_secs(90))
        .await;
    assert!(weights.contains(&60), "{weights:?}");
    assert_eq!(
        app.hits("smoke"),
        10,
        "the pre-rollout bash task ran once, to its end"
    );
    app.wait_hits("load", 20, &tester).await;
    // The gate is closed: the canary waits and the primary keeps the old image.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let canary = rig.canaries().get("podinfo").await.expect("canary");
    assert_eq!(
        canary.status.and_then(|s| s.phase),
        Some(CanaryPhase::WaitingPromotion)
    );
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.0");
    assert!(tester.log().contains("gate check"), "{}", tester.log());

    let ns = rig.ns.name.clone();
    assert_eq!(tester.call("/gate/open", "podinfo", &ns, &[]).await.0, 202);
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(60))
        .await;
    assert_eq!(rig.image_of("podinfo-primary").await, "podinfo:6.0.1");
    assert!(app.hits("load") >= 20);
    assert_eq!(app.hits("smoke"), 10, "pre-rollout runs once per release");
    rig.finish().await;
}
