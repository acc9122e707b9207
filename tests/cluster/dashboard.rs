//! The dashboard against the real API server: viewers see only what RBAC lets them list
//! (bearer tokens through TokenReview, proxy headers only from a trusted proxy), pages show
//! and follow a rollout's status within a second, the Events, YAML and History tabs show the
//! right content, and a real headless Chromium renders and updates the pages.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use flaggit::api::{Canary, CanaryPhase, PendingRecord, RecordedCheck};
use flaggit::dashboard::{self, auth::Cidr};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Event, ObjectReference, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::git_remote::{BareRepo, GitDaemon};
use crate::support::{TestNamespace, control_plane, free_port, repo};

/// The proxy address the dashboards under test trust; requests from 127.0.0.1 are not trusted.
const PROXY: &str = "127.0.0.2";

struct Dashboard {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs the dashboard in this process, as the admin, trusting only [`PROXY`] (and the groups
/// it names).
async fn start_dashboard(client: Client) -> Dashboard {
    start_dashboard_with(client, true).await
}

/// [`start_dashboard`]; `proxy_groups`: whether `--proxy-groups` is given.
async fn start_dashboard_with(client: Client, proxy_groups: bool) -> Dashboard {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local address").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = dashboard::Config {
        trusted_proxies: vec![PROXY.parse::<Cidr>().expect("valid CIDR")],
        proxy_groups,
        https: false,
        anonymous: false,
        authz_ttl: Duration::from_secs(30),
        git: flaggit::gitops::inspect::Options {
            branch: "main".into(),
            cache_dir: std::env::temp_dir()
                .join(format!("flaggit-dashboard-test-{}-{port}", std::process::id())),
            ledger_dir: ".flaggit".into(),
            argocd_namespace: "argocd".into(),
            limit: 1000,
            ..Default::default()
        },
        cluster: String::new(),
    };
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        dashboard::serve(listener, client, config, shutdown)
            .await
            .expect("dashboard serves");
    });
    Dashboard {
        url: format!("http://127.0.0.1:{port}"),
        stop: Some(stop),
    }
}

fn http(from: &str) -> reqwest::Client {
    flaggit::install_crypto_provider();
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("loopback address"))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client builds")
}

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = client.get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("the dashboard answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body reads"))
}

/// A ServiceAccount in `namespace` and a token for it from the TokenRequest API.
async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).expect("SA");
    api.create(&PostParams::default(), &account)
        .await
        .expect("ServiceAccount is created");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("the API server issues a token")
        .status
        .expect("token status")
        .token
}

fn bind_reader(namespace: &str, subject: serde_json::Value) {
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": format!("reader-{}", subject["name"].as_str().unwrap_or("x").replace(':', "-")), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flaggit-canaries-reader"},
        "subjects": [subject],
    });
    control_plane().kubectl_ok(&["apply", "-f", "-"], Some(&binding.to_string()));
}

fn apply_dashboard_manifests() {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    *done = true;
    let cp = control_plane();
    cp.install_crds();
    let _ = cp.kubectl(&["create", "namespace", "flaggit-system"], None);
    for file in ["viewer.yaml", "rbac.yaml"] {
        let path = repo().join("manifests/dashboard").join(file);
        cp.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8 path")], None);
    }
}

async fn create_canary(
    client: &Client,
    namespace: &str,
    name: &str,
    gitops_url: Option<&str>,
) -> Api<Canary> {
    let mut spec = json!({
        "provider": "istio",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "service": {"port": 9898},
        "analysis": {
            "interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
            "metrics": [{"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 99}}],
            "webhooks": [{"name": "approve", "type": "confirm-promotion", "url": "http://gate.test/approve"}]
        }
    });
    if let Some(url) = gitops_url {
        spec["gitops"] = json!({
            "repository": {"url": url, "branch": "main"},
            "mode": "pull-request",
            "approvals": {"gates": ["confirm-promotion"], "required": 2, "approvers": ["alice"]}
        });
    }
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("canary JSON");
    let api: Api<Canary> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &canary)
        .await
        .expect("canary is created");
    api
}

async fn set_status(api: &Api<Canary>, name: &str, phase: CanaryPhase, weight: i32, failed: i32) {
    let status = json!({"status": {
        "phase": phase,
        "canaryWeight": weight,
        "failedChecks": failed,
        "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "lastPromotedSpec": "flaggit1-aaaaaaaaaaaa",
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status is written");
}

/// Polls `check` every 20 ms until it returns Some, for at most `timeout`.
async fn within<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_only_the_namespaces_rbac_lets_them_list() {
    let cp = control_plane();
    apply_dashboard_manifests();
    let admin = cp.client().await;
    let ns_a = TestNamespace::create(&admin, "dash-a").await;
    let ns_b = TestNamespace::create(&admin, "dash-b").await;
    create_canary(&admin, &ns_a.name, "alpha", None).await;
    create_canary(&admin, &ns_b.name, "beta", None).await;
    let alice = service_account_token(&admin, &ns_a.name, "alice").await;
    let bob = service_account_token(&admin, &ns_b.name, "bob").await;
    let nobody = service_account_token(&admin, &ns_b.name, "nobody").await;
    bind_reader(
        &ns_a.name,
        json!({"kind": "ServiceAccount", "name": "alice", "namespace": ns_a.name}),
    );
    bind_reader(
        &ns_b.name,
        json!({"kind": "ServiceAccount", "name": "bob", "namespace": ns_b.name}),
    );
    bind_reader(
        &ns_b.name,
        json!({"kind": "User", "name": "carol", "apiGroup": "rbac.authorization.k8s.io"}),
    );

    let board = start_dashboard(admin.clone()).await;
    let direct = http("127.0.0.1");
    let index = format!("{}/", board.url);
    let bearer = |t: &str| format!("Bearer {t}");

    // No identity: 401 and a page that says how to authenticate.
    let (status, body) = get(&direct, &index, &[]).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("X-Forwarded-User") && body.contains("Bearer"),
        "{body}"
    );
    let (status, _) = get(&direct, &index, &[("authorization", "Bearer not-a-token")]).await;
    assert_eq!(status, 401);

    // Bearer tokens, reviewed by the API server: each sees their own namespace only.
    let alice_sees = within(
        "alice's table to list alpha",
        Duration::from_secs(10),
        async || {
            let (status, body) = get(&direct, &index, &[("authorization", &bearer(&alice))]).await;
            (status == 200 && body.contains(">alpha</a>")).then_some(body)
        },
    )
    .await;
    assert!(!alice_sees.contains("beta"), "{alice_sees}");
    assert!(alice_sees.contains(&format!("system:serviceaccount:{}:alice", ns_a.name)));
    let (_, bob_sees) = get(&direct, &index, &[("authorization", &bearer(&bob))]).await;
    assert!(
        bob_sees.contains(">beta</a>") && !bob_sees.contains("alpha"),
        "{bob_sees}"
    );

    // Someone who may list nothing gets the onboarding page, not an error.
    let (status, body) = get(&direct, &index, &[("authorization", &bearer(&nobody))]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Get started") && !body.contains(">alpha</a>") && !body.contains(">beta</a>"),
        "{body}"
    );

    // The detail page and its tabs of a canary in another namespace do not exist for alice.
    for tab in ["overview", "events", "yaml", "history", "dora"] {
        let url = format!("{}/canaries/{}/beta?tab={tab}", board.url, ns_b.name);
        let (status, body) = get(&direct, &url, &[("authorization", &bearer(&alice))]).await;
        assert_eq!(status, 404, "{tab}: {body}");
        assert!(!body.contains("gate.test"), "{body}");
    }
    let url = format!("{}/canaries/{}/alpha?tab=yaml", board.url, ns_a.name);
    let (status, body) = get(&direct, &url, &[("authorization", &bearer(&alice))]).await;
    assert_eq!(status, 200);
    assert!(body.contains("kind: Canary"), "{body}");

    // A forged X-Forwarded-User from an address that is not the trusted proxy is ignored ...
    let forged = [
        ("x-forwarded-user", "carol"),
        ("x-forwarded-groups", "system:masters"),
    ];
    let (status, body) = get(&direct, &index, &forged).await;
    assert_eq!(status, 401, "{body}");
    // ... and does not change who a token holder is.
    let mut with_token = forged.to_vec();
    let alice_header = bearer(&alice);
    with_token.push(("authorization", &alice_header));
    let (_, body) = get(&direct, &index, &with_token).await;
    assert!(body.contains(">alpha</a>") && !body.contains("beta"), "{body}");
    // From the trusted proxy the same headers are believed, and still scoped by RBAC.
    let proxy = http(PROXY);
    let (status, body) = get(&proxy, &index, &[("x-forwarded-user", "carol")]).await;
    assert_eq!(status, 200);
    assert!(body.contains(">beta</a>") && !body.contains("alpha"), "{body}");
    assert!(body.contains("Signed in as <strong>carol</strong>"));

    // Alice's event stream carries changes of her canaries only.
    let mut stream = direct
        .get(format!("{}/events", board.url))
        .header("authorization", bearer(&alice))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the event stream opens");
    assert_eq!(stream.status().as_u16(), 200);
    let alpha_api: Api<Canary> = Api::namespaced(admin.clone(), &ns_a.name);
    let beta_api: Api<Canary> = Api::namespaced(admin.clone(), &ns_b.name);
    set_status(&beta_api, "beta", CanaryPhase::Progressing, 10, 0).await;
    set_status(&alpha_api, "alpha", CanaryPhase::Progressing, 20, 0).await;
    let mut seen = String::new();
    while !seen.contains(&format!("data: {}/alpha", ns_a.name)) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("alpha's change arrives")
            .expect("the stream reads")
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("/beta"), "{seen}");
    drop(stream);

    // The shipped RBAC gives the dashboard what it uses.
    let sa = "system:serviceaccount:flaggit-system:flaggit-dashboard";
    for (verb, group, resource) in [
        ("create", "authentication.k8s.io", "tokenreviews"),
        ("create", "authorization.k8s.io", "subjectaccessreviews"),
        ("watch", "flagger.app", "canaries"),
        ("list", "", "events"),
    ] {
        assert!(
            allowed(&admin, sa, verb, group, resource).await,
            "{verb} {resource}"
        );
    }
    assert!(!allowed(&admin, sa, "patch", "flagger.app", "canaries").await);
    assert!(!allowed(&admin, sa, "list", "", "secrets").await);

    drop(board);
    ns_a.delete(&admin).await;
    ns_b.delete(&admin).await;
}

async fn allowed(client: &Client, user: &str, verb: &str, group: &str, resource: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview answers")
        .status
        .is_some_and(|s| s.allowed)
}

/// A config repo whose log holds two releases of `namespace/name`, recorded from `start` on:
/// r1 promoted after an approval (a `Flaggit-Approved-By` trailer) 4m 30s after it began, r2
/// in progress.
fn ledger_repo(namespace: &str, name: &str, start: jiff::Timestamp) -> (BareRepo, Vec<String>) {
    let repo = BareRepo::new("config", &BTreeMap::from([("README.md", "config\n")]));
    let id = format!("{namespace}/{name}");
    let time = |after: i64| {
        (start + jiff::SignedDuration::from_secs(after))
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let record =
        |seq: i64, kind: &str, revision: &str, weight: i32, rate: Option<f64>, reason: &str, time: String| {
            PendingRecord {
                seq,
                kind: kind.into(),
                revision: revision.into(),
                phase: "Progressing".into(),
                weight,
                checks: rate
                    .map(|v| {
                        vec![RecordedCheck {
                            name: "request-success-rate".into(),
                            value: Some(v),
                            passed: v >= 99.0,
                        }]
                    })
                    .unwrap_or_default(),
                reason: reason.into(),
                time,
                images: BTreeMap::from([("podinfo".to_string(), format!("podinfo:{revision}"))]),
                ..Default::default()
            }
        };
    let records = [
        record(1, "Detected", "rev-one", 0, None, "", time(0)),
        record(2, "Step", "rev-one", 10, Some(99.9), "", time(60)),
        PendingRecord {
            approved_by: vec!["alice".into()],
            ..record(3, "Promoting", "rev-one", 10, None, "", time(120))
        },
        record(4, "Promoted", "rev-one", 0, None, "", time(270)),
        record(5, "Detected", "rev-two", 0, None, "", time(3600)),
        record(6, "Step", "rev-two", 10, Some(99.6), "", time(3660)),
        record(7, "Step", "rev-two", 20, Some(98.2), "", time(3720)),
        record(8, "Step", "rev-two", 30, Some(99.4), "", time(3780)),
    ];
    let mut commits = Vec::new();
    for r in &records {
        let message = flaggit::gitops::message::commit_message(&id, None, r, &[]);
        let file = format!(".flaggit/{namespace}/{name}.yaml");
        commits.push(repo.human_commit(&[(&file, &format!("record: {}\n", r.seq))], &message));
    }
    (repo, commits)
}

/// `days` days before now, to the second.
fn days_ago(days: i64) -> jiff::Timestamp {
    let now = jiff::Timestamp::now().as_second();
    jiff::Timestamp::from_second(now - days * 86_400).expect("a time in range")
}

async fn canary_event(client: &Client, namespace: &str, canary: &str, reason: &str, message: &str, at: &str) {
    let event = Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{canary}.{}", reason.to_lowercase())),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("flagger.app/v1beta1".into()),
            kind: Some("Canary".into()),
            name: Some(canary.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Normal".into()),
        count: Some(1),
        last_timestamp: Some(Time(at.parse().expect("timestamp"))),
        first_timestamp: Some(Time(at.parse().expect("timestamp"))),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &event)
        .await
        .expect("event is created");
}

fn admin_token() -> String {
    let text = std::fs::read_to_string(&control_plane().kubeconfig).expect("kubeconfig reads");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig is YAML");
    doc["users"][0]["user"]["token"]
        .as_str()
        .expect("the admin kubeconfig has a token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_a_rollout_and_show_events_yaml_and_history() {
    let cp = control_plane();
    apply_dashboard_manifests();
    let admin = cp.client().await;
    let ns = TestNamespace::create(&admin, "dash-live").await;
    // A day ago: inside the DORA tab's 30-day window whatever the day the test runs.
    let (config_repo, commits) = ledger_repo(&ns.name, "podinfo", days_ago(1));
    let daemon = GitDaemon::start(&config_repo.root);
    let url = daemon.url(&config_repo);
    let api = create_canary(&admin, &ns.name, "podinfo", Some(&url)).await;
    set_status(&api, "podinfo", CanaryPhase::Progressing, 30, 1).await;

    let board = start_dashboard(admin.clone()).await;
    let client = http("127.0.0.1");
    let token = format!("Bearer {}", admin_token());
    let auth = [("authorization", token.as_str())];
    let detail_url = format!("{}/canaries/{}/podinfo", board.url, ns.name);

    let body = within(
        "the detail page to show the rollout",
        Duration::from_secs(10),
        async || {
            let (status, body) = get(&client, &detail_url, &auth).await;
            (status == 200 && body.contains(r#"<dd id="weight">30%</dd>"#)).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains(r#"<span class="phase busy">Progressing</span>"#),
        "{body}"
    );
    assert!(body.contains("1 / 5"));
    // Timeline from the ledger: the in-progress release's weights 0..30 and the metric values
    // against the 99 minimum (98.2 is below it).
    assert!(body.contains("From the Git ledger"), "{body}");
    assert!(body.contains("Canary weight") && body.contains("request-success-rate (pass: at least 99)"));
    assert_eq!(body.matches("dot fail").count(), 1, "{body}");
    // Gates and what they wait on; generated objects by name.
    assert!(body.contains("webhook approve (http://gate.test/approve)"));
    assert!(body.contains("pull-request approval: 2 approver(s) with write permission or alice"));
    assert!(body.contains("<code>podinfo-primary</code>") && body.contains("VirtualService"));

    // Live: a status change reaches an open event stream, and the pages, within a second.
    let mut stream = client
        .get(format!("{}/events", board.url))
        .header("authorization", &token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the event stream opens");
    assert_eq!(stream.status().as_u16(), 200);
    let changed = Instant::now();
    set_status(&api, "podinfo", CanaryPhase::WaitingPromotion, 50, 0).await;
    let id = format!("{}/podinfo", ns.name);
    let mut seen = String::new();
    while !seen.contains(&format!("data: {id}")) {
        // A generous deadline: on a busy machine the push may take longer than the second it
        // takes on a quiet one (printed below, not asserted).
        let chunk = tokio::time::timeout(
            Duration::from_secs(60).saturating_sub(changed.elapsed()),
            stream.chunk(),
        )
        .await
        .expect("a change event after the status change")
        .expect("the stream reads")
        .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (_, body) = get(&client, &detail_url, &auth).await;
    assert!(body.contains(r#"<dd id="weight">50%</dd>"#), "{body}");
    assert!(body.contains("WaitingPromotion") && body.contains("<strong>waiting</strong>"));
    let (_, table) = get(&client, &format!("{}/?namespace={}", board.url, ns.name), &auth).await;
    assert!(
        table.contains("50%") && table.contains("WaitingPromotion"),
        "{table}"
    );
    eprintln!("pages updated in {:?}", changed.elapsed());

    // Events tab: the canary's events, newest first.
    canary_event(
        &admin,
        &ns.name,
        "podinfo",
        "Synced",
        "Advance podinfo canary weight 10",
        "2026-11-22T11:01:00Z",
    )
    .await;
    canary_event(
        &admin,
        &ns.name,
        "podinfo",
        "Progress",
        "Advance podinfo canary weight 20",
        "2026-11-22T11:02:00Z",
    )
    .await;
    let (_, events) = get(&client, &format!("{detail_url}?tab=events"), &auth).await;
    let newer = events
        .find("canary weight 20")
        .expect("the newer event is listed");
    let older = events
        .find("canary weight 10")
        .expect("the older event is listed");
    assert!(newer < older, "newest first: {events}");

    // YAML tab: the live object.
    let (_, yaml) = get(&client, &format!("{detail_url}?tab=yaml"), &auth).await;
    assert!(
        yaml.contains("kind: Canary") && yaml.contains("canaryWeight: 50"),
        "{yaml}"
    );
    assert!(yaml.contains(&url) && !yaml.contains("managedFields"), "{yaml}");

    // History tab: the releases from the ledger, newest first, with outcome, duration and approver.
    let (_, history) = get(&client, &format!("{detail_url}?tab=history"), &auth).await;
    let two = history.find("<code>rev-two</code>").expect("rev-two is listed");
    let one = history.find("<code>rev-one</code>").expect("rev-one is listed");
    assert!(two < one, "{history}");
    assert!(
        history.contains("In progress") && history.contains(">Promoted<"),
        "{history}"
    );
    assert!(
        history.contains("4m 30s") && history.contains("<td>alice</td>"),
        "{history}"
    );
    let promoted_commit: String = commits[3].chars().take(10).collect();
    assert!(
        history.contains(&format!("<code>{promoted_commit}</code>")),
        "{history}"
    );

    // DORA tab: rev-one's promotion, a day old, counts in the 30-day window.
    let (_, dora) = get(&client, &format!("{detail_url}?tab=dora"), &auth).await;
    assert!(
        dora.contains("<td>(unnamed)</td><td>1</td><td>0.03</td>") && dora.contains("<td>0% (0/1)</td>"),
        "{dora}"
    );

    drop(board);
    drop(daemon);
    ns.delete(&admin).await;
}

/// A WebDriver session with a headless Chromium, driven by plain WebDriver HTTP calls.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Self {
        let chromium = ["chromium", "chromium-browser"].into_iter().find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(
            chromium.is_some(),
            "chromium is not installed: run scripts/deps.sh (apt: chromium chromium-driver); the browser test does not skip"
        );
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run scripts/deps.sh (apt: chromium-driver)");
        let http = http("127.0.0.1");
        let root = format!("http://127.0.0.1:{port}");
        within("chromedriver to listen", Duration::from_secs(20), async || {
            http.get(format!("{root}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        let session: serde_json::Value = http
            .post(format!("{root}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,900"]}
            }}}))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("session JSON");
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {session}"));
        Self {
            driver,
            http,
            base: format!("{root}/session/{id}"),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let value: serde_json::Value = request
            .send()
            .await
            .expect("WebDriver answers")
            .json()
            .await
            .expect("JSON");
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> Option<String> {
        let value = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        value[ELEMENT].as_str().map(str::to_string)
    }

    async fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css).await?;
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .map(str::to_string)
    }

    /// Takes a screenshot (so a broken page fails the test) and keeps it at `path` only when
    /// `FLAGGIT_SCREENSHOTS=1`: the committed images change on purpose, not on every run.
    async fn screenshot(&self, path: &std::path::Path) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("screenshot is base64"))
            .expect("screenshot decodes");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        if std::env::var_os("FLAGGIT_SCREENSHOTS").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
            std::fs::write(path, png).expect("screenshot is written");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_chromium_signs_in_and_sees_the_rollout_update_live() {
    let cp = control_plane();
    apply_dashboard_manifests();
    let admin = cp.client().await;
    let ns = TestNamespace::create(&admin, "dash-browser").await;
    let (config_repo, _) = ledger_repo(&ns.name, "podinfo", days_ago(1));
    let daemon = GitDaemon::start(&config_repo.root);
    let api = create_canary(&admin, &ns.name, "podinfo", Some(&daemon.url(&config_repo))).await;
    set_status(&api, "podinfo", CanaryPhase::Progressing, 30, 1).await;
    let other = create_canary(&admin, &ns.name, "frontend", None).await;
    set_status(&other, "frontend", CanaryPhase::Succeeded, 0, 0).await;
    let viewer = service_account_token(&admin, &ns.name, "viewer").await;
    bind_reader(
        &ns.name,
        json!({"kind": "ServiceAccount", "name": "viewer", "namespace": ns.name}),
    );
    let board = start_dashboard(admin.clone()).await;

    let browser = Browser::start().await;
    // Signing in through the form: the token is checked and kept in a cookie.
    browser.goto(&format!("{}/login", board.url)).await;
    let field = browser
        .find("#token")
        .await
        .expect("the sign-in page has a token field");
    let typed = browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{field}/value"),
            Some(json!({"text": viewer})),
        )
        .await;
    assert!(typed.is_null(), "typing the token failed: {typed}");
    let submit = browser.find("form.login button").await.expect("a sign-in button");
    let clicked = browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{submit}/click"),
            Some(json!({})),
        )
        .await;
    assert!(clicked.is_null(), "clicking sign-in failed: {clicked}");
    let start = Instant::now();
    let row = loop {
        if let Some(row) = browser
            .text(&format!("tr[data-canary='{}/podinfo']", ns.name))
            .await
        {
            break row;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let page = browser.call(reqwest::Method::GET, "/source", None).await;
            panic!("the table does not list podinfo after signing in: {page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(row.contains("Progressing") && row.contains("30%"), "{row}");
    assert!(
        browser
            .text(&format!("tr[data-canary='{}/frontend']", ns.name))
            .await
            .is_some()
    );
    browser
        .screenshot(&repo().join("docs/images/dashboard-table.png"))
        .await;

    // The table updates itself: no reload.
    let changed = Instant::now();
    set_status(&api, "podinfo", CanaryPhase::Progressing, 40, 0).await;
    within(
        "the table row to show weight 40",
        Duration::from_secs(1),
        async || {
            let row = browser
                .text(&format!("tr[data-canary='{}/podinfo']", ns.name))
                .await?;
            row.contains("40%").then_some(())
        },
    )
    .await;
    eprintln!("table updated {:?} after the status change", changed.elapsed());

    browser
        .goto(&format!("{}/canaries/{}/podinfo", board.url, ns.name))
        .await;
    let weight = within("the detail page", Duration::from_secs(10), async || {
        browser.text("#weight").await
    })
    .await;
    assert_eq!(weight, "40%");
    // Let the event stream connect before the change.
    within("the live indicator", Duration::from_secs(5), async || {
        browser.text("#live").await.filter(|t| t == "Live")
    })
    .await;
    let changed = Instant::now();
    set_status(&api, "podinfo", CanaryPhase::WaitingPromotion, 50, 0).await;
    within(
        "the detail page to show weight 50",
        Duration::from_secs(1),
        async || browser.text("#weight").await.filter(|w| w == "50%"),
    )
    .await;
    eprintln!("detail updated {:?} after the status change", changed.elapsed());
    assert!(
        browser
            .text("#phase")
            .await
            .is_some_and(|p| p == "WaitingPromotion")
    );
    browser
        .screenshot(&repo().join("docs/images/dashboard-detail.png"))
        .await;

    browser
        .goto(&format!("{}/canaries/{}/podinfo?tab=history", board.url, ns.name))
        .await;
    let history = within("the history tab", Duration::from_secs(10), async || {
        browser.text("#tab-history").await
    })
    .await;
    assert!(
        history.contains("rev-one") && history.contains("alice"),
        "{history}"
    );

    drop(browser);
    drop(board);
    drop(daemon);
    ns.delete(&admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaggit_dashboard_serves_and_refuses_the_unauthenticated() {
    let cp = control_plane();
    cp.install_crds();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flaggit"))
        .args([
            "dashboard",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "text",
        ])
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the flaggit binary starts");
    let client = http("127.0.0.1");
    let base = format!("http://127.0.0.1:{port}");
    let health = within(
        "flaggit dashboard to serve /healthz",
        Duration::from_secs(20),
        async || {
            let response = client.get(format!("{base}/healthz")).send().await.ok()?;
            Some(response.status().as_u16())
        },
    )
    .await;
    assert_eq!(health, 200);
    let (status, body) = get(&client, &format!("{base}/"), &[]).await;
    assert_eq!(status, 401);
    assert!(body.contains("Sign in"), "{body}");
    let token = format!("Bearer {}", admin_token());
    let (status, _) = get(&client, &format!("{base}/"), &[("authorization", &token)]).await;
    assert_eq!(status, 200);
    let css = client
        .get(format!("{base}/assets/app.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let _ = child.kill();
    let _ = child.wait();
}

/// A form POST to the dashboard with `headers`: (status, Set-Cookie).
async fn post_form(
    client: &reqwest::Client,
    url: &str,
    body: String,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("the dashboard answers");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.status().as_u16(), cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_groups_https_cookies_and_cross_site_forms() {
    let cp = control_plane();
    apply_dashboard_manifests();
    let admin = cp.client().await;
    let ns = TestNamespace::create(&admin, "dash-trust").await;
    create_canary(&admin, &ns.name, "gamma", None).await;
    let page = |board: &Dashboard| format!("{}/canaries/{}/gamma", board.url, ns.name);
    let claims = [
        ("x-forwarded-user", "mallory"),
        ("x-forwarded-groups", "system:masters"),
    ];
    let proxy = http(PROXY);

    // Without --proxy-groups the groups a request names are not believed, even from the proxy.
    let board = start_dashboard_with(admin.clone(), false).await;
    let (status, body) = get(&proxy, &page(&board), &claims).await;
    assert_eq!(status, 404, "{body}");
    drop(board);
    // With it, the proxy is believed to have set them.
    let board = start_dashboard_with(admin.clone(), true).await;
    let (status, body) = get(&proxy, &page(&board), &claims).await;
    assert_eq!(status, 200, "{body}");

    // Signing in: a form sent from another site is refused; from the dashboard's own page the
    // cookie is set, `Secure` only when the browser used HTTPS (a trusted proxy says so).
    let form = format!("token={}", admin_token());
    let login = format!("{}/login", board.url);
    let direct = http("127.0.0.1");
    let own = board.url.clone();
    for evil in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("referer", "https://evil.example/page")],
        vec![("origin", own.as_str()), ("sec-fetch-site", "cross-site")],
    ] {
        let (status, cookie) = post_form(&direct, &login, form.clone(), &evil).await;
        assert_eq!(status, 403, "{evil:?}");
        assert!(cookie.is_empty(), "{cookie}");
        let (status, _) = post_form(&direct, &format!("{}/logout", board.url), String::new(), &evil).await;
        assert_eq!(status, 403, "{evil:?}");
    }
    let (status, cookie) = post_form(&direct, &login, form.clone(), &[("origin", &own)]).await;
    assert_eq!(status, 303);
    assert!(
        cookie.starts_with("flaggit_token=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let https = [("origin", own.as_str()), ("x-forwarded-proto", "https")];
    let (_, cookie) = post_form(&proxy, &login, form.clone(), &https).await;
    assert!(cookie.contains("; Secure"), "{cookie}");
    // The header from anyone but the proxy changes nothing.
    let (_, cookie) = post_form(&direct, &login, form.clone(), &https).await;
    assert!(!cookie.contains("Secure"), "{cookie}");
    let (status, cookie) = post_form(&proxy, &format!("{}/logout", board.url), String::new(), &https).await;
    assert_eq!(status, 303);
    assert!(
        cookie.contains("Max-Age=0") && cookie.contains("; Secure"),
        "{cookie}"
    );
    drop(board);
    ns.delete(&admin).await;
}
