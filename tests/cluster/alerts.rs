//! Alert delivery against the real API server: AlertProviders found through
//! `analysis.alerts[].providerRef` (same and other namespace), their Secret's `address`,
//! `token` and `proxy` keys, the severity filter, and a loopback chat service that records
//! what it receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use flaggit::alerts::{Flags, Message, Notifier, body};
use flaggit::api::{
    AlertProvider, AlertProviderSpec, AlertProviderType, AlertSeverity, Canary, CanaryAlert, CanaryAnalysis,
    CanarySpec, CrossNamespaceObjectReference, LocalObjectReference, TargetRef,
};
use flaggit::rollout::{Alert, Severity};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::support::{TestNamespace, control_plane};

/// One request the chat service received.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn start() -> (Self, SocketAddr) {
        let recorder = Self::default();
        let app = Router::new().fallback(record).with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (recorder, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// Waits up to 10 s for `n` requests, then a little longer to catch extra ones.
    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let start = Instant::now();
        while self.seen().len() < n && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.seen()
    }
}

async fn record(State(recorder): State<Recorder>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    recorder.seen.lock().expect("not poisoned").push(Seen {
        uri: uri.to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    StatusCode::OK
}

async fn create_provider(client: &Client, namespace: &str, name: &str, spec: AlertProviderSpec) {
    let mut provider = AlertProvider::new(name, spec);
    provider.metadata.namespace = Some(namespace.into());
    Api::<AlertProvider>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &provider)
        .await
        .expect("AlertProvider is created");
}

async fn create_secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret is created");
}

fn canary(namespace: &str, alerts: Vec<CanaryAlert>) -> Canary {
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                name: "podinfo".into(),
                ..Default::default()
            },
            analysis: Some(CanaryAnalysis {
                step_weight: Some(10),
                alerts: Some(alerts),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    canary.metadata.namespace = Some(namespace.into());
    canary
}

fn alert_to(name: &str, namespace: Option<&str>, severity: Option<AlertSeverity>) -> CanaryAlert {
    CanaryAlert {
        name: name.into(),
        severity,
        provider_ref: CrossNamespaceObjectReference {
            name: name.into(),
            namespace: namespace.map(str::to_owned),
        },
    }
}

async fn wait_for_failures(notifier: &Notifier, n: u64) -> u64 {
    let start = Instant::now();
    while notifier.failures().get() < n && start.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    notifier.failures().get()
}

#[tokio::test]
async fn providers_secrets_and_severities_resolve_against_the_api_server() {
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let apps = TestNamespace::create(&client, "alerts-app").await;
    let shared = TestNamespace::create(&client, "alerts-shared").await;
    let (chat, addr) = Recorder::start().await;

    // In another namespace, its address and token in a Secret (the CRD allows either
    // `address` or `secretRef`).
    create_secret(
        &client,
        &shared.name,
        "slack-hook",
        &[
            ("address", &format!("http://{addr}/services/T0/B0/secret")),
            ("token", "xoxb-42"),
        ],
    )
    .await;
    create_provider(
        &client,
        &shared.name,
        "slack",
        AlertProviderSpec {
            type_: AlertProviderType::Slack,
            channel: Some("releases".into()),
            secret_ref: Some(LocalObjectReference {
                name: "slack-hook".into(),
            }),
            ..Default::default()
        },
    )
    .await;
    // In the canary's namespace, address in the spec, warnings and errors only.
    create_provider(
        &client,
        &apps.name,
        "teams",
        AlertProviderSpec {
            type_: AlertProviderType::Msteams,
            address: Some(format!("http://{addr}/webhookb2/teams")),
            ..Default::default()
        },
    )
    .await;

    let flags = Flags {
        cluster_name: Some("test-cluster".into()),
        // Never used: the canary has its own alerts.
        slack_url: Some(format!("http://{addr}/default")),
        ..Flags::default()
    };
    let notifier = Notifier::new(client.clone(), flags).expect("notifier");
    let c = canary(
        &apps.name,
        vec![
            alert_to("slack", Some(&shared.name), Some(AlertSeverity::Unset)),
            alert_to("teams", None, Some(AlertSeverity::Warn)),
        ],
    );

    // Info: only the provider with an empty severity (which means info).
    let info = Alert {
        severity: Severity::Info,
        message: "New revision detected!".into(),
    };
    notifier.notify(&c, &info);
    let seen = chat.wait_for(1).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/services/T0/B0/secret");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer xoxb-42"));
    let expected = Message::new(&c, &info.message, Severity::Info, Some("test-cluster"));
    assert_eq!(
        seen[0].body,
        body(AlertProviderType::Slack, &expected, "releases", "flagger")
    );
    assert_eq!(
        seen[0].body["attachments"][0]["author_name"],
        format!("podinfo.{}", apps.name)
    );
    assert_eq!(
        seen[0].body["attachments"][0]["fields"][0]["value"],
        "test-cluster"
    );

    // Error: both, Teams without a token.
    let error = Alert {
        severity: Severity::Error,
        message: "Canary failed!".into(),
    };
    notifier.notify(&c, &error);
    let seen = chat.wait_for(3).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut uris: Vec<&str> = seen[1..].iter().map(|s| s.uri.as_str()).collect();
    uris.sort();
    assert_eq!(uris, ["/services/T0/B0/secret", "/webhookb2/teams"]);
    let teams = seen
        .iter()
        .find(|s| s.uri == "/webhookb2/teams")
        .expect("teams got the error");
    assert_eq!(teams.authorization, None);
    let expected = Message::new(&c, &error.message, Severity::Error, Some("test-cluster"));
    assert_eq!(teams.body, body(AlertProviderType::Msteams, &expected, "", ""));
    assert_eq!(notifier.failures().get(), 0);

    apps.delete(&client).await;
    shared.delete(&client).await;
}

#[tokio::test]
async fn a_missing_provider_or_secret_is_counted_not_sent() {
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "alerts-missing").await;
    let (chat, addr) = Recorder::start().await;
    create_provider(
        &client,
        &ns.name,
        "no-secret",
        AlertProviderSpec {
            type_: AlertProviderType::Discord,
            secret_ref: Some(LocalObjectReference {
                name: "absent".into(),
            }),
            ..Default::default()
        },
    )
    .await;
    create_provider(
        &client,
        &ns.name,
        "discord",
        AlertProviderSpec {
            type_: AlertProviderType::Discord,
            address: Some(format!("http://{addr}/api/webhooks/1/x")),
            ..Default::default()
        },
    )
    .await;
    let notifier = Notifier::new(client.clone(), Flags::default()).expect("notifier");
    let c = canary(
        &ns.name,
        vec![
            alert_to("no-secret", None, None),
            alert_to("nowhere", None, None),
            alert_to("discord", None, None),
        ],
    );
    notifier.notify(
        &c,
        &Alert {
            severity: Severity::Warn,
            message: "Halt advancement".into(),
        },
    );
    assert_eq!(wait_for_failures(&notifier, 2).await, 2);
    let seen = chat.wait_for(1).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/api/webhooks/1/x/slack");
    assert_eq!(seen[0].body["username"], "flagger");
    assert_eq!(seen[0].body["channel"], "general");
    ns.delete(&client).await;
}

/// The controller itself alerts: `flaggit run --slack-url` sends the engine's alerts for a
/// canary without `analysis.alerts` to the default Slack webhook.
#[tokio::test]
async fn the_controller_sends_its_alerts_to_the_default_notifier() {
    let (recorder, addr) = Recorder::start().await;
    let args = vec![
        "--slack-url".to_string(),
        format!("http://{addr}/services/T000/B000/secret-path"),
        "--slack-channel".to_string(),
        "releases".to_string(),
        "--cluster-name".to_string(),
        "test-cluster".to_string(),
    ];
    let rig = crate::rollout::Rig::with_args("alerts-run", &args).await;
    rig.initialize_podinfo(crate::rollout::canary_of(
        "podinfo",
        flaggit::api::Provider::Istio,
        crate::rollout::stepping(50, 50),
    ))
    .await;
    let start = Instant::now();
    let sent = loop {
        let seen = recorder.seen();
        if let Some(one) = seen.into_iter().find(|s| {
            s.body["attachments"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("initialization completed"))
        }) {
            break one;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no alert reached Slack: {:?}",
            recorder.seen()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sent.uri, "/services/T000/B000/secret-path");
    assert_eq!(sent.body["channel"], "releases");
    let text = sent.body.to_string();
    assert!(text.contains("test-cluster"), "the Cluster field: {text}");
    assert!(
        !rig.flaggit().log().contains("secret-path"),
        "the webhook URL's secret path is never logged"
    );
    rig.finish().await;
}
