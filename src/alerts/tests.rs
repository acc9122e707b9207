//! Payload shapes, severity filtering and delivery against a loopback server that records
//! what it receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use k8s_openapi::ByteString;
use serde_json::json;

use super::*;
use crate::api::{
    AlertProviderSpec, CanaryAnalysis, CanarySpec, CrossNamespaceObjectReference, HttpMatchRequest,
    TargetKind, TargetRef,
};

/// One request the server received.
#[derive(Clone, Debug)]
struct Seen {
    /// Path, or the absolute URI when the request came through as a proxy request.
    uri: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: serde_json::Value,
}

#[derive(Clone)]
struct ServerState {
    status: u16,
    hang: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Server {
    addr: SocketAddr,
    state: ServerState,
}

impl Server {
    async fn start(status: u16, hang: bool) -> Self {
        let state = ServerState {
            status,
            hang,
            seen: Arc::default(),
        };
        let app = Router::new().fallback(record).with_state(state.clone());
        let (addr, _) = crate::testing::serve(app).await;
        Self { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("not poisoned").clone()
    }

    /// Waits (up to 5 s) for `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let start = Instant::now();
        while self.seen().len() < n && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.seen()
    }
}

async fn record(State(state): State<ServerState>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    state.seen.lock().expect("not poisoned").push(Seen {
        uri: uri.to_string(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    if state.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    StatusCode::from_u16(state.status).expect("valid status")
}

fn canary(analysis: CanaryAnalysis) -> Canary {
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: TargetKind::Deployment,
                name: "podinfo-app".into(),
            },
            progress_deadline_seconds: Some(120),
            analysis: Some(analysis),
            ..CanarySpec::default()
        },
    );
    canary.metadata.namespace = Some("test".into());
    canary
}

fn canary_steps() -> Canary {
    canary(CanaryAnalysis {
        threshold: Some(5),
        step_weight: Some(10),
        max_weight: Some(50),
        ..CanaryAnalysis::default()
    })
}

fn message(severity: Severity) -> Message {
    Message::new(
        &canary_steps(),
        "New revision detected!",
        severity,
        Some("prod-eu"),
    )
}

fn fields(canary: &Canary) -> Vec<(String, String)> {
    metadata_fields(canary)
        .into_iter()
        .map(|f| (f.name, f.value))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// A kube client that is never reached (the default notifier does not read the API).
fn offline_client() -> Client {
    crate::install_crypto_provider();
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("valid URI"));
    Client::try_from(config).expect("client from config")
}

fn destination(kind: AlertProviderType, address: String) -> Destination {
    Destination {
        provider: "AlertProvider test/chat".into(),
        kind,
        address,
        token: None,
        proxy: None,
        channel: "on-call".into(),
        username: "bot".into(),
    }
}

#[test]
fn severity_table() {
    use AlertSeverity as F;
    use Severity as S;
    let table = [
        (None, [true, true, true]),
        (Some(F::Unset), [true, true, true]),
        (Some(F::Info), [true, true, true]),
        (Some(F::Warn), [false, true, true]),
        (Some(F::Error), [false, false, true]),
    ];
    for (filter, expected) in table {
        let got = [S::Info, S::Warn, S::Error].map(|s| should_send(filter, s));
        assert_eq!(got, expected, "filter {filter:?}");
    }
}

#[test]
fn metadata_for_a_weight_step_canary() {
    assert_eq!(
        fields(&canary_steps()),
        pairs(&[
            ("Target", "Deployment/podinfo-app.test"),
            ("Failed checks threshold", "5"),
            ("Progress deadline", "120s"),
            ("Traffic routing", "Weight step: 10 max: 50"),
        ])
    );
}

#[test]
fn metadata_defaults_and_weight_steps() {
    let mut c = canary(CanaryAnalysis {
        step_weights: Some(vec![1, 10, 80]),
        ..CanaryAnalysis::default()
    });
    c.spec.progress_deadline_seconds = None;
    assert_eq!(
        fields(&c),
        pairs(&[
            ("Target", "Deployment/podinfo-app.test"),
            ("Failed checks threshold", "1"),
            ("Progress deadline", "600s"),
            ("Traffic routing", "Weight steps: 1,10,80 max: 80"),
        ])
    );
}

#[test]
fn metadata_for_ab_testing_blue_green_and_mirroring() {
    let ab = canary(CanaryAnalysis {
        iterations: Some(10),
        match_: Some(vec![HttpMatchRequest::default()]),
        ..CanaryAnalysis::default()
    });
    assert_eq!(fields(&ab)[3], ("Traffic routing".into(), "A/B Testing".into()));
    let bg = canary(CanaryAnalysis {
        iterations: Some(10),
        mirror: Some(true),
        ..CanaryAnalysis::default()
    });
    assert_eq!(
        fields(&bg)[3..],
        pairs(&[("Traffic routing", "Blue/Green"), ("Traffic mirroring", "100%")])
    );
    let shadow = canary(CanaryAnalysis {
        step_weight: Some(5),
        mirror: Some(true),
        mirror_weight: Some(30),
        ..CanaryAnalysis::default()
    });
    assert_eq!(fields(&shadow)[4], ("Traffic mirroring".into(), "30%".into()));
}

#[test]
fn cluster_field_comes_first_and_only_when_named() {
    assert_eq!(
        message(Severity::Info).fields[0],
        Field {
            name: "Cluster".into(),
            value: "prod-eu".into()
        }
    );
    let unnamed = Message::new(&canary_steps(), "m", Severity::Info, Some(""));
    assert_eq!(unnamed.fields[0].name, "Target");
}

#[test]
fn slack_payload() {
    let m = message(Severity::Info);
    let field = |t: &str, v: &str| json!({"title": t, "value": v, "short": false});
    assert_eq!(
        body(AlertProviderType::Slack, &m, "on-call", "bot"),
        json!({
            "channel": "on-call",
            "username": "bot",
            "icon_emoji": ":rocket:",
            "attachments": [{
                "color": "good",
                "author_name": "podinfo.test",
                "text": "New revision detected!",
                "mrkdwn_in": ["text"],
                "fields": [
                    field("Cluster", "prod-eu"),
                    field("Target", "Deployment/podinfo-app.test"),
                    field("Failed checks threshold", "5"),
                    field("Progress deadline", "120s"),
                    field("Traffic routing", "Weight step: 10 max: 50"),
                ],
            }],
        })
    );
    let error = body(AlertProviderType::Slack, &message(Severity::Error), "c", "u");
    assert_eq!(error["attachments"][0]["color"], "danger");
    // Warnings are not red in Flagger either.
    let warn = body(AlertProviderType::Slack, &message(Severity::Warn), "c", "u");
    assert_eq!(warn["attachments"][0]["color"], "good");
}

#[test]
fn discord_and_rocket_use_the_slack_shape() {
    let m = message(Severity::Error);
    let slack = body(AlertProviderType::Slack, &m, "c", "u");
    assert_eq!(body(AlertProviderType::Discord, &m, "c", "u"), slack);
    let rocket = body(AlertProviderType::Rocket, &m, "c", "u");
    assert_eq!(rocket["attachments"][0]["color"], "#FF0000");
    assert_eq!(
        body(AlertProviderType::Rocket, &message(Severity::Info), "c", "u")["attachments"][0]["color"],
        "#0076D7"
    );
    let mut without_color = rocket.clone();
    without_color["attachments"][0]["color"] = json!("danger");
    assert_eq!(without_color, slack);
}

#[test]
fn msteams_payload() {
    let m = message(Severity::Error);
    assert_eq!(
        body(AlertProviderType::Msteams, &m, "ignored", "ignored"),
        json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": "FF0000",
            "summary": "podinfo.test",
            "sections": [{
                "activityTitle": "New revision detected!",
                "activitySubtitle": "podinfo.test",
                "facts": [
                    {"name": "Cluster", "value": "prod-eu"},
                    {"name": "Target", "value": "Deployment/podinfo-app.test"},
                    {"name": "Failed checks threshold", "value": "5"},
                    {"name": "Progress deadline", "value": "120s"},
                    {"name": "Traffic routing", "value": "Weight step: 10 max: 50"},
                ],
            }],
        })
    );
    let info = body(AlertProviderType::Msteams, &message(Severity::Info), "", "");
    assert_eq!(info["themeColor"], "0076D7");
}

#[test]
fn gchat_payload() {
    let mut m = message(Severity::Info);
    m.fields.truncate(2);
    let text = |t: &str| json!({"widgets": [{"textParagraph": {"text": t}}]});
    assert_eq!(
        body(AlertProviderType::Gchat, &m, "", ""),
        json!({
            "cards": [{
                "header": {
                    "title": "Flagger",
                    "subtitle": "podinfo.test",
                    "imageUrl": "https://flagger.app/favicon.png",
                },
                "sections": [
                    text("<font color=#848484><strong>New revision detected!</strong></font>"),
                    text("Cluster<br><font color=#848484><strong>prod-eu</strong></font>"),
                    text("Target<br><font color=#848484><strong>Deployment/podinfo-app.test</strong></font>"),
                ],
            }],
        })
    );
}

#[test]
fn discord_posts_to_the_slack_endpoint() {
    let d = AlertProviderType::Discord;
    assert_eq!(
        endpoint(d, "https://discord.com/api/webhooks/1/x"),
        "https://discord.com/api/webhooks/1/x/slack"
    );
    assert_eq!(
        endpoint(d, "https://discord.com/api/webhooks/1/x/"),
        "https://discord.com/api/webhooks/1/x/slack"
    );
    assert_eq!(
        endpoint(d, "https://d/api/webhooks/1/x/slack"),
        "https://d/api/webhooks/1/x/slack"
    );
    assert_eq!(
        endpoint(d, "https://d/w/1/x?wait=true"),
        "https://d/w/1/x/slack?wait=true"
    );
    assert_eq!(
        endpoint(AlertProviderType::Slack, "https://hooks/x"),
        "https://hooks/x"
    );
}

#[test]
fn default_destination_from_flags() {
    assert!(Destination::from_flags(&Flags::default()).is_none());
    let slack = Flags {
        slack_url: Some("https://hooks.slack.com/services/T/B/secret".into()),
        slack_token: Some("xoxb".into()),
        slack_channel: String::new(),
        slack_user: "release-bot".into(),
        ..Flags::default()
    };
    let d = Destination::from_flags(&slack).expect("slack is configured");
    assert_eq!(
        (d.kind, d.channel.as_str(), d.username.as_str()),
        (AlertProviderType::Slack, "general", "release-bot")
    );
    assert_eq!(d.token.as_deref(), Some("xoxb"));
    let teams = Flags {
        msteams_url: Some("https://outlook.office.com/webhook/secret".into()),
        msteams_proxy_url: Some("http://proxy:3128".into()),
        ..slack
    };
    let d = Destination::from_flags(&teams).expect("teams is configured");
    assert_eq!(d.kind, AlertProviderType::Msteams);
    assert_eq!(d.proxy.as_deref(), Some("http://proxy:3128"));
    assert_eq!(d.token, None);
}

#[test]
fn debug_of_flags_hides_urls_and_tokens() {
    let flags = Flags {
        slack_url: Some("https://hooks.slack.com/services/T/B/s3cr3t".into()),
        slack_token: Some("xoxb-t0ken".into()),
        cluster_name: Some("prod".into()),
        ..Flags::default()
    };
    let text = format!("{flags:?}");
    assert!(!text.contains("s3cr3t") && !text.contains("t0ken"), "{text}");
    assert!(text.contains("prod"), "{text}");
}

fn provider(spec: AlertProviderSpec) -> AlertProvider {
    let mut p = AlertProvider::new("chat", spec);
    p.metadata.namespace = Some("alerts".into());
    p
}

fn secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

#[test]
fn provider_defaults_and_secret_overrides() {
    let spec = AlertProviderSpec {
        type_: AlertProviderType::Rocket,
        address: Some("https://spec/hook".into()),
        proxy: Some("http://spec-proxy:1".into()),
        ..AlertProviderSpec::default()
    };
    let d = Destination::from_provider(&provider(spec.clone()), None).expect("address in spec");
    assert_eq!(
        (
            d.address.as_str(),
            d.channel.as_str(),
            d.username.as_str(),
            d.provider.as_str()
        ),
        (
            "https://spec/hook",
            "general",
            "flagger",
            "AlertProvider alerts/chat"
        )
    );
    assert_eq!((d.token, d.proxy.as_deref()), (None, Some("http://spec-proxy:1")));
    let s = secret(&[
        ("address", "https://secret/hook\n"),
        ("token", "tok"),
        ("proxy", "http://p:2"),
    ]);
    let d = Destination::from_provider(&provider(spec.clone()), Some(&s)).expect("address in secret");
    assert_eq!(
        (d.address.as_str(), d.token.as_deref(), d.proxy.as_deref()),
        ("https://secret/hook", Some("tok"), Some("http://p:2"))
    );
    let bare = AlertProviderSpec {
        address: None,
        ..spec
    };
    let err = Destination::from_provider(&provider(bare.clone()), Some(&secret(&[("token", "t")])))
        .err()
        .expect("no address anywhere");
    assert_eq!(err.category(), "InvalidAlertProvider");
    assert!(err.to_string().contains("alerts/chat"), "{err}");
}

#[tokio::test]
async fn send_posts_each_shape_with_headers_and_token() {
    let server = Server::start(200, false).await;
    let m = message(Severity::Warn);
    let http = http_client(None).expect("client");
    for kind in [
        AlertProviderType::Slack,
        AlertProviderType::Msteams,
        AlertProviderType::Discord,
        AlertProviderType::Rocket,
        AlertProviderType::Gchat,
    ] {
        let mut d = destination(kind, server.url(&format!("/{kind:?}")));
        d.token = (kind == AlertProviderType::Slack).then(|| "xoxb-123".to_owned());
        send(&http, &d, &m).await.expect("2xx is a success");
    }
    let seen = server.seen();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["/Slack", "/Msteams", "/Discord/slack", "/Rocket", "/Gchat"]
    );
    for s in &seen {
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer xoxb-123"));
    assert_eq!(seen[1].authorization, None);
    assert_eq!(seen[0].body, body(AlertProviderType::Slack, &m, "on-call", "bot"));
    assert_eq!(seen[1].body, body(AlertProviderType::Msteams, &m, "", ""));
    assert_eq!(seen[2].body, seen[0].body);
    assert_eq!(
        seen[3].body,
        body(AlertProviderType::Rocket, &m, "on-call", "bot")
    );
    assert_eq!(seen[4].body, body(AlertProviderType::Gchat, &m, "", ""));
}

#[tokio::test]
async fn any_2xx_succeeds_and_a_refusal_names_the_status_not_the_url() {
    let accepted = Server::start(202, false).await;
    let http = http_client(None).expect("client");
    let m = message(Severity::Info);
    send(
        &http,
        &destination(AlertProviderType::Msteams, accepted.url("/x")),
        &m,
    )
    .await
    .expect("202 is a success");
    let refused = Server::start(500, false).await;
    let err = send(
        &http,
        &destination(AlertProviderType::Slack, refused.url("/services/s3cr3t")),
        &m,
    )
    .await
    .expect_err("500 fails");
    assert!(matches!(err, Error::Refused { status: 500, .. }), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    let closed = format!("http://127.0.0.1:{}/services/s3cr3t", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    });
    let err = send(&http, &destination(AlertProviderType::Slack, closed), &m)
        .await
        .expect_err("nobody listens");
    assert_eq!(err.category(), "SendAlert");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[tokio::test]
async fn send_goes_through_the_proxy() {
    let proxy = Server::start(200, false).await;
    let mut d = destination(AlertProviderType::Gchat, "http://chat.invalid/v1/spaces/x".into());
    d.proxy = Some(proxy.url(""));
    send(&http_client(None).expect("client"), &d, &message(Severity::Info))
        .await
        .expect("via proxy");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "http://chat.invalid/v1/spaces/x");
    assert_eq!(seen[0].body["cards"][0]["header"]["subtitle"], "podinfo.test");
}

#[tokio::test]
async fn canaries_without_alerts_use_the_default_notifier() {
    let server = Server::start(200, false).await;
    let flags = Flags {
        slack_url: Some(server.url("/services/default")),
        slack_channel: "releases".into(),
        slack_user: "flagger".into(),
        cluster_name: Some("prod-eu".into()),
        ..Flags::default()
    };
    let notifier = Notifier::new(offline_client(), flags).expect("notifier");
    let c = canary_steps();
    notifier.notify(
        &c,
        &Alert {
            severity: Severity::Info,
            message: "New revision detected!".into(),
        },
    );
    let seen = server.wait_for(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/services/default");
    assert_eq!(
        seen[0].body,
        body(
            AlertProviderType::Slack,
            &message(Severity::Info),
            "releases",
            "flagger"
        )
    );
    assert_eq!(notifier.failures().get(), 0);
}

#[tokio::test]
async fn no_default_notifier_sends_nothing() {
    let notifier = Notifier::new(offline_client(), Flags::default()).expect("notifier");
    notifier.notify(
        &canary_steps(),
        &Alert {
            severity: Severity::Error,
            message: "x".into(),
        },
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(notifier.failures().get(), 0);
}

#[tokio::test]
async fn a_hanging_receiver_does_not_delay_notify() {
    let server = Server::start(200, true).await;
    let flags = Flags {
        msteams_url: Some(server.url("/hook")),
        ..Flags::default()
    };
    let notifier = Notifier::new(offline_client(), flags).expect("notifier");
    let c = canary_steps();
    let alert = Alert {
        severity: Severity::Error,
        message: "Canary failed!".into(),
    };
    let start = Instant::now();
    for _ in 0..5 {
        notifier.notify(&c, &alert);
    }
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(50), "notify took {elapsed:?}");
    // The receiver did get them, and is still holding them.
    assert_eq!(server.wait_for(5).await.len(), 5);
}

#[tokio::test]
async fn refused_alerts_are_counted() {
    let server = Server::start(503, false).await;
    let flags = Flags {
        slack_url: Some(server.url("/hook")),
        ..Flags::default()
    };
    let notifier = Notifier::new(offline_client(), flags).expect("notifier");
    notifier.notify(
        &canary_steps(),
        &Alert {
            severity: Severity::Warn,
            message: "w".into(),
        },
    );
    server.wait_for(1).await;
    let start = Instant::now();
    while notifier.failures().get() == 0 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(notifier.failures().get(), 1);
}

#[tokio::test]
async fn severity_filters_which_providers_are_asked() {
    // With alerts configured, the default notifier is not used even if set; a filtered-out
    // provider is not even looked up (the offline API would count a failure).
    let server = Server::start(200, false).await;
    let flags = Flags {
        slack_url: Some(server.url("/default")),
        ..Flags::default()
    };
    let notifier = Notifier::new(offline_client(), flags).expect("notifier");
    let c = canary(CanaryAnalysis {
        alerts: Some(vec![CanaryAlert {
            name: "errors only".into(),
            severity: Some(AlertSeverity::Error),
            provider_ref: CrossNamespaceObjectReference {
                name: "chat".into(),
                namespace: None,
            },
        }]),
        ..CanaryAnalysis::default()
    });
    notifier.notify(
        &c,
        &Alert {
            severity: Severity::Warn,
            message: "w".into(),
        },
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((server.seen().len(), notifier.failures().get()), (0, 0));
    // An error passes the filter; the lookup against the unreachable API fails and is counted.
    notifier.notify(
        &c,
        &Alert {
            severity: Severity::Error,
            message: "e".into(),
        },
    );
    let start = Instant::now();
    while notifier.failures().get() == 0 && start.elapsed() < Duration::from_secs(9) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(notifier.failures().get(), 1);
    assert!(server.seen().is_empty());
}

#[test]
fn flags_parse_with_flagger_names_and_defaults() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        alerts: Flags,
    }
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "flaggit",
        "--slack-url",
        "https://hooks/x",
        "--cluster-name",
        "prod",
    ])
    .expect("valid flags");
    assert_eq!(cli.alerts.slack_url.as_deref(), Some("https://hooks/x"));
    assert_eq!(cli.alerts.cluster_name.as_deref(), Some("prod"));
    assert_eq!(
        (cli.alerts.slack_channel.as_str(), cli.alerts.slack_user.as_str()),
        ("general", "flagger")
    );
    let args = [
        "flaggit",
        "--msteams-url",
        "u",
        "--msteams-proxy-url",
        "p",
        "--slack-proxy-url",
        "q",
    ];
    let cli = Cli::try_parse_from(args).expect("valid flags");
    assert_eq!(cli.alerts.msteams_proxy_url.as_deref(), Some("p"));
    assert_eq!(cli.alerts.slack_proxy_url.as_deref(), Some("q"));
}
