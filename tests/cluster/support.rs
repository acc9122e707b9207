//! Test support: one real control plane per test run, a namespace per test, kubectl, and the
//! flaggit binary run as a child process.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The podinfo Canary of Flagger's Linkerd tutorial (the fixture, verbatim), in `namespace`.
pub fn tutorial_canary_yaml(namespace: &str) -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/flagger-linkerd-canary.yaml"))
        .expect("fixture reads")
        .replace("namespace: test", &format!("namespace: {namespace}"))
}

/// The control plane of this test run.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub kube_bin: PathBuf,
    /// Held for the life of the process: its end (EOF) tells `supervise` to tear down.
    _supervisor: Option<Mutex<(Child, ChildStdin)>>,
    crds: OnceLock<()>,
    routing_crds: OnceLock<()>,
}

/// Starts the control plane on first use, or reuses the one `FLAGGIT_TEST_KUBECONFIG` names.
pub fn control_plane() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| {
        let kube_bin = kube_bin();
        if let Ok(path) = std::env::var("FLAGGIT_TEST_KUBECONFIG") {
            return ControlPlane {
                kubeconfig: path.into(),
                kube_bin,
                _supervisor: None,
                crds: OnceLock::new(),
                routing_crds: OnceLock::new(),
            };
        }
        start_control_plane("flaggit-cp", kube_bin)
    })
}

/// A second control plane (its own etcd and API server on other free ports), for the tests of
/// several clusters writing to one config repository. Started on first use.
pub fn second_control_plane() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| start_control_plane("flaggit-cp2", kube_bin()))
}

/// A control plane that serves no routing CRD until a test installs one, for the tests of
/// what happens when a provider's CRDs arrive after flaggit started. Started on first use.
pub fn bare_control_plane() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| start_control_plane("flaggit-cp-bare", kube_bin()))
}

fn start_control_plane(prefix: &str, kube_bin: PathBuf) -> ControlPlane {
    // The script picks free ports and then binds them: another process (a second control
    // plane starting at the same moment, a test's server) can take one in between. That
    // start fails as a whole, and a fresh one with new ports is the cure.
    let mut attempt = 1;
    let (dir, child, stdin) = loop {
        match try_start_control_plane(prefix, attempt) {
            Ok(started) => break started,
            Err(dir) if attempt < 3 => {
                eprintln!(
                    "control plane at {} did not start (attempt {attempt}); starting another",
                    dir.display()
                );
                attempt += 1;
            }
            Err(dir) => panic!(
                "the control plane at {} did not start in 3 attempts: see the output above",
                dir.display()
            ),
        }
    };
    ControlPlane {
        kubeconfig: dir.join("kubeconfig"),
        kube_bin,
        _supervisor: Some(Mutex::new((child, stdin))),
        crds: OnceLock::new(),
        routing_crds: OnceLock::new(),
    }
}

/// One start of a supervised control plane: its directory, the supervisor and its stdin,
/// or the directory of a start that did not get to `ready`.
fn try_start_control_plane(
    prefix: &str,
    attempt: u32,
) -> Result<(PathBuf, std::process::Child, std::process::ChildStdin), PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{attempt}", std::process::id()));
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(repo().join("scripts/control-plane.sh"))
        .arg("supervise")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bash runs scripts/control-plane.sh");
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read supervise output") > 0 && line.trim() != "ready" {
        line.clear();
    }
    if line.trim() != "ready" {
        drop(stdin);
        let _ = child.wait();
        return Err(dir);
    }
    eprintln!(
        "control plane up in {:.1}s at {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok((dir, child, stdin))
}

fn kube_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("FLAGGIT_KUBE_BIN") {
        return dir.into();
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/kube-build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs scripts/kube-build.sh");
    assert!(out.status.success(), "scripts/kube-build.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl ControlPlane {
    /// A client as the cluster admin.
    pub async fn client(&self) -> Client {
        self.client_from(&self.kubeconfig).await
    }

    /// A client from the kubeconfig at `path`, built the way `flaggit run` builds its own.
    pub async fn client_from(&self, path: &Path) -> Client {
        flaggit::install_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("kubeconfig reads");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig is valid");
        Client::try_from(config).expect("client builds")
    }

    /// Writes a kubeconfig that impersonates `user` (for example a ServiceAccount) and
    /// returns its path.
    pub fn kubeconfig_as(&self, user: &str, file_name: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig reads");
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig is YAML");
        for entry in doc["users"].as_sequence_mut().expect("kubeconfig has users") {
            entry["user"]["as"] = serde_yaml::Value::String(user.to_string());
        }
        let path = self.kubeconfig.with_file_name(file_name);
        std::fs::write(&path, serde_yaml::to_string(&doc).expect("kubeconfig serializes")).expect("write");
        path
    }

    /// Runs kubectl with `args`, feeding `stdin`; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut child = Command::new(self.kube_bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().expect("stdin is piped");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write kubectl stdin");
        }
        drop(input);
        let out = child.wait_with_output().expect("kubectl finishes");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and fails the test, with its output, if it fails.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.kubectl(args, stdin);
        assert!(ok, "kubectl {} failed:\n{out}\n{err}", args.join(" "));
        out
    }

    /// Installs the CRDs from `manifests/crds` (once per run) and waits until they are served.
    pub fn install_crds(&self) {
        self.crds.get_or_init(|| {
            let dir = repo().join("manifests/crds");
            self.kubectl_ok(
                &["apply", "--server-side", "-f", dir.to_str().expect("utf-8 path")],
                None,
            );
            // `kubectl wait` fails outright while a just-created CRD has no conditions yet.
            let crds = [
                "crd/canaries.flagger.app",
                "crd/metrictemplates.flagger.app",
                "crd/alertproviders.flagger.app",
            ];
            eventually(
                "the flagger.app CRDs to be Established",
                Duration::from_secs(60),
                || {
                    let mut args = vec!["wait", "--for=condition=Established", "--timeout=10s"];
                    args.extend(crds);
                    self.kubectl(&args, None).0.then_some(())
                },
            );
        });
    }
}

/// A namespace of its own for one test.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates a namespace named after the test, with a unique suffix.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        Self::create_named(client, &Self::unique_name(prefix)).await
    }

    /// A name after `prefix` no other test of this run uses.
    pub fn unique_name(prefix: &str) -> String {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{}-{n}", std::process::id())
    }

    /// Creates the namespace `name` (the same name in two clusters, say).
    pub async fn create_named(client: &Client, name: &str) -> Self {
        let name = name.to_string();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace is created");
        Self { name }
    }

    /// Deletes the namespace (the namespace controller removes what is in it).
    pub async fn delete(self, client: &Client) {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A running `flaggit run` process whose log is collected.
pub struct Flaggit {
    pub child: Child,
    pub port: u16,
    log: std::sync::Arc<Mutex<String>>,
}

impl Flaggit {
    /// Starts `flaggit run` with text logs on a free port; `extra` adds flags.
    pub fn start(kubeconfig: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flaggit"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--listen-address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-format",
                "text",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the flaggit binary starts");
        let log = std::sync::Arc::new(Mutex::new(String::new()));
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
        Self { child, port, log }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "flaggit did not log {needle:?} within {timeout:?}; log:\n{}",
            self.log()
        );
    }

    /// GETs `path` on the controller's HTTP port: (status, body), or None if not listening.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    eprintln!("flaggit exited with {status}; log:\n{}", self.log());
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        eprintln!(
            "flaggit did not exit within {timeout:?} of SIGTERM; log:\n{}",
            self.log()
        );
        None
    }
}

impl Drop for Flaggit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET on loopback.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls `check` every 100 ms until it returns Some, or panics with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Installs the Gateway API and Istio CRDs of `tests/fixtures/crds/` (once per run), so the
/// API server validates every routing object the tests make flaggit write.
pub fn install_routing_crds() {
    control_plane().install_routing_crds();
}

impl ControlPlane {
    /// `install_routing_crds` on this control plane.
    pub fn install_routing_crds(&self) {
        let cp = self;
        cp.routing_crds.get_or_init(|| {
            cp.install_crds();
            let dir = repo().join("tests/fixtures/crds");
            cp.kubectl_ok(
                &["apply", "--server-side", "-f", dir.to_str().expect("utf-8 path")],
                None,
            );
            eventually(
                "the routing CRDs to be Established",
                Duration::from_secs(60),
                || {
                    cp.kubectl(
                        &[
                            "wait",
                            "--for=condition=Established",
                            "--timeout=10s",
                            "crd/virtualservices.networking.istio.io",
                            "crd/destinationrules.networking.istio.io",
                            "crd/httproutes.gateway.networking.k8s.io",
                            "crd/trafficsplits.split.smi-spec.io",
                            "crd/httpproxies.projectcontour.io",
                            "crd/routetables.gateway.solo.io",
                            "crd/upstreams.gloo.solo.io",
                            "crd/traefikservices.traefik.io",
                            "crd/apisixroutes.apisix.apache.org",
                            "crd/virtualnodes.appmesh.k8s.aws",
                            "crd/virtualrouters.appmesh.k8s.aws",
                            "crd/virtualservices.appmesh.k8s.aws",
                            "crd/trafficroutes.kuma.io",
                            "crd/services.serving.knative.dev",
                            "crd/revisions.serving.knative.dev",
                        ],
                        None,
                    )
                    .0
                    .then_some(())
                },
            );
        });
    }
}
