//! Webhook calls against a loopback HTTP server that records what it receives.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::api::{CanaryAnalysis, CanarySpec, CanaryStatus, TargetRef};

/// How the server answers one request.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16, &'static str),
    /// Never answers.
    Hang,
}

/// One request the server received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    content_type: Option<String>,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct ServerState {
    /// Per path, the replies in order; the last one repeats.
    script: Arc<HashMap<String, Vec<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Server {
    addr: SocketAddr,
    state: ServerState,
}

impl Server {
    /// Starts a server answering each path by its script (404 for unknown paths).
    async fn start(script: &[(&str, &[Reply])]) -> Self {
        let state = ServerState {
            script: Arc::new(
                script
                    .iter()
                    .map(|(path, replies)| (path.to_string(), replies.to_vec()))
                    .collect(),
            ),
            seen: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(state.clone());
        let (addr, _) = crate::testing::serve(app).await;
        Self { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("not poisoned").clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

async fn handle(State(state): State<ServerState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let reply = {
        let mut seen = state.seen.lock().expect("not poisoned");
        let count = seen.iter().filter(|s| s.path == path).count();
        seen.push(Seen {
            path: path.clone(),
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
        state
            .script
            .get(&path)
            .and_then(|replies| replies.get(count).or(replies.last()).copied())
    };
    match reply {
        Some(Reply::Status(code, body)) => {
            (StatusCode::from_u16(code).expect("valid status"), body).into_response()
        }
        Some(Reply::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn webhook(name: &str, type_: Option<HookType>, url: String) -> CanaryWebhook {
    CanaryWebhook {
        name: name.into(),
        type_,
        url,
        ..CanaryWebhook::default()
    }
}

fn canary(webhooks: Vec<CanaryWebhook>) -> Canary {
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                name: "podinfo".into(),
                ..TargetRef::default()
            },
            analysis: Some(CanaryAnalysis {
                webhooks: Some(webhooks),
                ..CanaryAnalysis::default()
            }),
            ..CanarySpec::default()
        },
    );
    canary.metadata.namespace = Some("test".into());
    canary.status = Some(CanaryStatus {
        phase: Some(CanaryPhase::Progressing),
        tracked_configs: Some(BTreeMap::from([("configmap/podinfo".into(), "0a1b".into())])),
        last_applied_spec: Some("7c9d".into()),
        ..CanaryStatus::default()
    });
    canary
}

fn hooks() -> Hooks {
    Hooks::new().expect("HTTP clients build")
}

#[tokio::test]
async fn any_2xx_passes_and_the_payload_is_flaggers() {
    let server = Server::start(&[
        ("/ok", &[Reply::Status(200, "")]),
        ("/non-authoritative", &[Reply::Status(203, "")]),
        ("/odd", &[Reply::Status(299, "")]),
    ])
    .await;
    let mut first = webhook("ok", Some(HookType::PreRollout), server.url("/ok"));
    first.metadata = Some(BTreeMap::from([(
        "cmd".into(),
        "curl -s http://podinfo-canary/".into(),
    )]));
    let canary = canary(vec![
        first,
        webhook(
            "nai",
            Some(HookType::PreRollout),
            server.url("/non-authoritative"),
        ),
        webhook("odd", Some(HookType::PreRollout), server.url("/odd")),
    ]);

    let result = hooks()
        .gate(&canary, HookType::PreRollout, CanaryPhase::Progressing)
        .await;

    assert_eq!(
        result,
        GateResult {
            passed: true,
            message: "pre-rollout checks ok, nai, odd passed".into(),
            mute_alert: false
        }
    );
    let seen = server.seen();
    assert_eq!(server.paths(), ["/ok", "/non-authoritative", "/odd"]);
    assert!(
        seen.iter()
            .all(|s| s.content_type.as_deref() == Some("application/json"))
    );
    assert_eq!(
        seen[0].body,
        serde_json::json!({
            "name": "podinfo",
            "namespace": "test",
            "phase": "Progressing",
            "checksum": checksum(&canary),
            "metadata": {"cmd": "curl -s http://podinfo-canary/"},
        })
    );
    assert_eq!(seen[1].body.get("metadata"), None, "empty metadata is left out");
}

#[tokio::test]
async fn a_5xx_fails_with_status_and_body_and_stops_the_gate() {
    let server = Server::start(&[
        ("/ok", &[Reply::Status(200, "")]),
        ("/fail", &[Reply::Status(500, "exit status 1\n")]),
    ])
    .await;
    let canary = canary(vec![
        webhook("smoke", Some(HookType::PreRollout), server.url("/ok")),
        webhook("acceptance-test", Some(HookType::PreRollout), server.url("/fail")),
        webhook("never", Some(HookType::PreRollout), server.url("/ok")),
    ]);

    let result = hooks()
        .gate(&canary, HookType::PreRollout, CanaryPhase::Progressing)
        .await;

    assert!(!result.passed);
    assert_eq!(
        result.message,
        "pre-rollout check acceptance-test failed: 500 Internal Server Error: exit status 1"
    );
    assert_eq!(server.paths(), ["/ok", "/fail"]);
}

#[tokio::test]
async fn a_hanging_hook_fails_after_its_timeout() {
    let server = Server::start(&[("/slow", &[Reply::Hang])]).await;
    let mut slow = webhook("slow", None, server.url("/slow"));
    slow.timeout = Some("1s".into());
    slow.retries = Some(2); // timeouts are not retried
    let canary = canary(vec![slow]);

    let started = Instant::now();
    let result = hooks()
        .gate(&canary, HookType::Rollout, CanaryPhase::Progressing)
        .await;
    let elapsed = started.elapsed();

    assert!(!result.passed);
    assert_eq!(result.message, "rollout check slow failed: no answer within 1s");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(server.paths(), ["/slow"]);
}

#[tokio::test]
async fn retries_repeat_5xx_until_success() {
    let server = Server::start(&[(
        "/flaky",
        &[
            Reply::Status(503, "busy"),
            Reply::Status(502, "busy"),
            Reply::Status(200, ""),
        ],
    )])
    .await;
    let mut flaky = webhook("flaky", Some(HookType::ConfirmPromotion), server.url("/flaky"));
    flaky.retries = Some(2);
    let canary = canary(vec![flaky]);

    let result = hooks()
        .gate(&canary, HookType::ConfirmPromotion, CanaryPhase::Progressing)
        .await;

    assert!(result.passed, "{}", result.message);
    assert_eq!(server.paths(), ["/flaky", "/flaky", "/flaky"]);
}

#[tokio::test]
async fn retries_run_out_and_4xx_is_not_retried() {
    let server = Server::start(&[
        ("/down", &[Reply::Status(500, "down")]),
        ("/halt", &[Reply::Status(403, "Forbidden")]),
    ])
    .await;
    let mut down = webhook("down", Some(HookType::ConfirmRollout), server.url("/down"));
    down.retries = Some(1);
    let mut halt = webhook(
        "halt",
        Some(HookType::ConfirmTrafficIncrease),
        server.url("/halt"),
    );
    halt.retries = Some(3);
    let canary = canary(vec![down, halt]);
    let hooks = hooks();

    let result = hooks
        .gate(&canary, HookType::ConfirmRollout, CanaryPhase::Progressing)
        .await;
    assert_eq!(
        result.message,
        "confirm-rollout check down failed: 500 Internal Server Error: down (after 2 attempts)"
    );
    let result = hooks
        .gate(
            &canary,
            HookType::ConfirmTrafficIncrease,
            CanaryPhase::Progressing,
        )
        .await;
    assert_eq!(
        result.message,
        "confirm-traffic-increase check halt failed: 403 Forbidden: Forbidden"
    );
    assert_eq!(server.paths(), ["/down", "/down", "/halt"]);
}

#[tokio::test]
async fn connection_errors_are_retried_and_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener); // nothing listens there now
    let mut gone = webhook("gone", None, format!("http://{addr}/"));
    gone.retries = Some(1);
    let canary = canary(vec![gone]);

    let result = hooks()
        .gate(&canary, HookType::Rollout, CanaryPhase::Progressing)
        .await;

    assert!(!result.passed);
    assert_eq!(
        result.message,
        "rollout check gone failed: cannot connect: Connection refused (os error 111) (after 2 attempts)"
    );
    assert!(
        !result.message.contains(&addr.to_string()),
        "no URL in messages: {}",
        result.message
    );
}

#[tokio::test]
async fn untyped_hooks_are_rollout_and_missing_types_pass() {
    let server = Server::start(&[("/ok", &[Reply::Status(200, "")])]).await;
    let canary = canary(vec![webhook("load", None, server.url("/ok"))]);
    let hooks = hooks();

    assert!(has(&canary, HookType::Rollout));
    assert!(!has(&canary, HookType::ConfirmPromotion));
    let result = hooks
        .gate(&canary, HookType::ConfirmPromotion, CanaryPhase::Progressing)
        .await;
    assert_eq!(
        result,
        GateResult {
            passed: true,
            message: "no confirm-promotion webhooks".into(),
            mute_alert: false
        }
    );
    assert!(server.paths().is_empty());
    let result = hooks
        .gate(&canary, HookType::Rollout, CanaryPhase::Progressing)
        .await;
    assert_eq!(result.message, "rollout check load passed");
    assert_eq!(server.paths(), ["/ok"]);
}

#[tokio::test]
async fn rollback_is_asked_by_any_2xx_and_never_without_hooks() {
    let server = Server::start(&[
        ("/closed", &[Reply::Status(403, "Forbidden")]),
        ("/open", &[Reply::Status(200, "Approved")]),
    ])
    .await;
    let hooks = hooks();

    let none = canary(vec![]);
    let result = hooks
        .gate(&none, HookType::Rollback, CanaryPhase::Progressing)
        .await;
    assert!(!result.passed);

    let closed = canary(vec![webhook(
        "gate",
        Some(HookType::Rollback),
        server.url("/closed"),
    )]);
    let result = hooks
        .gate(&closed, HookType::Rollback, CanaryPhase::Waiting)
        .await;
    assert!(!result.passed);
    assert_eq!(
        result.message,
        "no rollback asked (gate: 403 Forbidden: Forbidden)"
    );

    let open = canary(vec![
        webhook("first", Some(HookType::Rollback), server.url("/closed")),
        webhook("second", Some(HookType::Rollback), server.url("/open")),
    ]);
    let result = hooks
        .gate(&open, HookType::Rollback, CanaryPhase::WaitingPromotion)
        .await;
    assert!(result.passed);
    assert_eq!(result.message, "rollback check second passed");
    assert_eq!(server.paths(), ["/closed", "/closed", "/open"]);
    assert_eq!(server.seen()[2].body["phase"], "WaitingPromotion");
}

#[tokio::test]
async fn a_failing_muted_hook_says_so() {
    let server = Server::start(&[("/halt", &[Reply::Status(403, "")])]).await;
    let mut halt = webhook("approval", Some(HookType::ConfirmRollout), server.url("/halt"));
    halt.mute_alert = Some(true);
    let canary = canary(vec![halt]);

    let result = hooks()
        .gate(&canary, HookType::ConfirmRollout, CanaryPhase::Waiting)
        .await;

    assert_eq!(
        result,
        GateResult {
            passed: false,
            message: "confirm-rollout check approval failed: 403 Forbidden".into(),
            mute_alert: true,
        }
    );
    assert_eq!(server.seen()[0].body["phase"], "Waiting");
}

#[tokio::test]
async fn a_bad_timeout_fails_the_gate_without_calling() {
    let server = Server::start(&[("/ok", &[Reply::Status(200, "")])]).await;
    let good = webhook("good", None, server.url("/ok"));
    let mut bad = webhook("bad", None, server.url("/ok"));
    bad.timeout = Some("later".into());
    let canary = canary(vec![good, bad]);

    let result = hooks()
        .gate(&canary, HookType::Rollout, CanaryPhase::Progressing)
        .await;

    assert!(!result.passed);
    assert_eq!(
        result.message,
        r#"rollout check bad failed: spec.analysis.webhooks[1].timeout "later" is not a duration: use a number and a unit, for example 30s or 1m"#
    );
    assert_eq!(server.paths(), ["/ok"]);
}

#[tokio::test]
async fn event_metadata_is_flaggers_and_hook_metadata_does_not_override_it() {
    let server = Server::start(&[
        ("/events", &[Reply::Status(202, "")]),
        ("/ok", &[Reply::Status(200, "")]),
    ])
    .await;
    let mut event = webhook("audit", Some(HookType::Event), server.url("/events"));
    event.metadata = Some(BTreeMap::from([
        ("eventType".into(), "mine".into()),
        ("team".into(), "payments".into()),
    ]));
    let canary = canary(vec![webhook("load", None, server.url("/ok")), event]);

    let before = unix_millis(SystemTime::now());
    hooks()
        .event(
            &canary,
            CanaryPhase::Failed,
            "Canary failed! Scaling down podinfo.test",
            true,
            None,
        )
        .await
        .expect("event delivered");
    let after = unix_millis(SystemTime::now());

    let seen = server.seen();
    assert_eq!(server.paths(), ["/events"], "only event hooks are called");
    let body = &seen[0].body;
    let timestamp: u128 = body["metadata"]["timestamp"]
        .as_str()
        .expect("string")
        .parse()
        .expect("number");
    assert!(
        (before..=after).contains(&timestamp),
        "{before} <= {timestamp} <= {after}"
    );
    assert_eq!(
        *body,
        serde_json::json!({
            "name": "podinfo",
            "namespace": "test",
            "phase": "Failed",
            "checksum": checksum(&canary),
            "metadata": {
                "eventMessage": "Canary failed! Scaling down podinfo.test",
                "eventType": "Warning",
                "timestamp": timestamp.to_string(),
                "team": "payments",
            },
        })
    );
}

#[tokio::test]
async fn the_global_event_url_is_used_only_without_event_hooks() {
    let server = Server::start(&[
        ("/global", &[Reply::Status(200, "")]),
        ("/own", &[Reply::Status(200, "")]),
    ])
    .await;
    let global = server.url("/global");
    let hooks = hooks();

    let plain = canary(vec![]);
    hooks
        .event(
            &plain,
            CanaryPhase::Progressing,
            "Starting canary analysis",
            false,
            Some(&global),
        )
        .await
        .expect("delivered");
    let own = canary(vec![webhook("own", Some(HookType::Event), server.url("/own"))]);
    hooks
        .event(
            &own,
            CanaryPhase::Progressing,
            "Advance podinfo.test canary weight 10",
            false,
            Some(&global),
        )
        .await
        .expect("delivered");
    hooks
        .event(&plain, CanaryPhase::Progressing, "nowhere", false, None)
        .await
        .expect("nothing to call");

    let seen = server.seen();
    assert_eq!(server.paths(), ["/global", "/own"]);
    assert_eq!(seen[0].body["metadata"]["eventType"], "Normal");
    assert_eq!(
        seen[0].body["metadata"]["eventMessage"],
        "Starting canary analysis"
    );
}

#[tokio::test]
async fn event_failures_are_returned_after_every_hook_was_called() {
    let server = Server::start(&[
        ("/broken", &[Reply::Status(500, "oops")]),
        ("/ok", &[Reply::Status(200, "")]),
    ])
    .await;
    let canary = canary(vec![
        webhook("broken", Some(HookType::Event), server.url("/broken")),
        webhook("fine", Some(HookType::Event), server.url("/ok")),
    ]);

    let error = hooks()
        .event(&canary, CanaryPhase::Progressing, "msg", false, None)
        .await
        .expect_err("the first hook fails");

    assert_eq!(error.category(), "CallEventWebhook");
    assert_eq!(
        error.to_string(),
        "event webhook broken failed: 500 Internal Server Error: oops"
    );
    assert_eq!(server.paths(), ["/broken", "/ok"]);
}

#[tokio::test]
async fn a_bad_global_url_is_an_error_naming_the_flag() {
    let error = hooks()
        .event(
            &canary(vec![]),
            CanaryPhase::Progressing,
            "msg",
            false,
            Some("slack:token"),
        )
        .await
        .expect_err("not http");
    assert_eq!(error.category(), "InvalidWebhook");
    assert!(
        error
            .to_string()
            .starts_with("the event webhook URL (--event-webhook) is not"),
        "{error}"
    );
    assert!(!error.to_string().contains("token"), "{error}");
}

#[test]
fn the_deprecated_analysis_field_is_named_in_errors() {
    let mut old = canary(vec![]);
    old.spec.canary_analysis = old.spec.analysis.take().map(Box::new);
    assert_eq!(webhook_field(&old, 2), "spec.canaryAnalysis.webhooks[2]");
    assert_eq!(webhook_field(&canary(vec![]), 0), "spec.analysis.webhooks[0]");
}
