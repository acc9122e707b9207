//! The forge webhook receiver: checks each delivery's signature (as its forge signs, see
//! [`super::hooks`]), drops replays and oversized bodies, and turns the deliveries flaggit
//! cares about into a [`Nudge`] saying which pull request to re-read. The webhook is only a hint: the controller reads the truth from the
//! forge, and polling finds the same comments when webhooks are off.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::{RepoId, hooks};
use crate::api::ForgeKind;

/// Where the controller mounts the receiver on its HTTP port.
pub const PATH: &str = "/forge/github/webhook";

/// Largest delivery accepted by default. GitHub caps payloads at 25 MB, but the events flaggit
/// reads are a few tens of KiB; anything larger is refused with 413.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Delivery ids remembered for replay detection by default.
pub const DEFAULT_REMEMBERED: usize = 10_000;

/// The webhook secrets a delivery may be signed with. More than one while a secret is being
/// rotated; shared with whoever watches the Secret, which replaces them with [`set`].
///
/// [`set`]: Secrets::set
#[derive(Clone, Default)]
pub struct Secrets(Arc<RwLock<Vec<Vec<u8>>>>);

impl Secrets {
    pub fn new(secrets: Vec<Vec<u8>>) -> Secrets {
        Secrets(Arc::new(RwLock::new(secrets)))
    }

    /// Replaces the secrets; empty ones are dropped (an empty key would sign anything).
    pub fn set(&self, secrets: Vec<Vec<u8>>) {
        let secrets = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = secrets;
    }

    /// Whether `signature` (the `X-Hub-Signature-256` header, `sha256=<hex>`) is the
    /// HMAC-SHA256 of `body` under one of the secrets, compared in constant time.
    pub fn verify(&self, body: &[u8], signature: &str) -> bool {
        let Some(hex_mac) = signature.trim().strip_prefix("sha256=") else {
            return false;
        };
        self.verify_hex(body, hex_mac)
    }

    /// Whether `hex_mac` (Gitea's and Forgejo's signature header) is the hex HMAC-SHA256 of
    /// `body` under one of the secrets, compared in constant time.
    pub fn verify_hex(&self, body: &[u8], hex_mac: &str) -> bool {
        let Ok(mac) = hex::decode(hex_mac.trim()) else {
            return false;
        };
        let secrets = self.0.read().unwrap_or_else(|e| e.into_inner());
        secrets.iter().filter(|s| !s.is_empty()).any(|secret| {
            Hmac::<Sha256>::new_from_slice(secret).is_ok_and(|mut h| {
                h.update(body);
                h.verify_slice(&mac).is_ok()
            })
        })
    }

    /// Whether `token` (GitLab's `X-Gitlab-Token`) is one of the secrets, compared in
    /// constant time.
    pub fn verify_token(&self, token: &[u8]) -> bool {
        let secrets = self.0.read().unwrap_or_else(|e| e.into_inner());
        // Every secret is compared, whichever matches: the time says nothing of which.
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(false, |found, secret| {
                super::rest::same_secret(secret, token) | found
            })
    }

    fn is_empty(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|s| s.is_empty())
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed, not even their length.
        f.write_str("Secrets(..)")
    }
}

/// `X-Hub-Signature-256` for `body` under `secret`: what GitHub sends. For tests and tools.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How the receiver is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub secrets: Secrets,
    /// Largest body accepted; larger deliveries get 413.
    pub max_body: usize,
    /// Delivery ids remembered to drop replays.
    pub remembered: usize,
}

impl Config {
    pub fn new(secrets: Secrets) -> Config {
        Config {
            secrets,
            max_body: DEFAULT_MAX_BODY,
            remembered: DEFAULT_REMEMBERED,
        }
    }
}

/// What happened on the pull request, as far as the webhook says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A comment was `created`, `edited` or `deleted`.
    Comment {
        action: String,
        comment_id: u64,
        author: String,
    },
    /// The pull request was `opened`, `closed` (with `merged`), `synchronize`d ...
    PullRequest { action: String, merged: bool },
    /// A review was `submitted`, `edited` or `dismissed`; `state` as GitHub spells it.
    Review {
        action: String,
        review_id: u64,
        state: String,
    },
}

/// Where to look: the pull request a delivery was about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nudge {
    pub repo: RepoId,
    pub number: u64,
    pub event: Event,
    /// The delivery's id (`X-GitHub-Delivery`, GitLab's `Idempotency-Key`), for logs.
    pub delivery: String,
}

/// The GitHub receiver as a router serving [`PATH`]; each accepted delivery is sent on
/// `nudges`.
pub fn router(config: Config, nudges: mpsc::Sender<Nudge>) -> Router {
    router_for(ForgeKind::Github, config, nudges)
}

/// The receiver of `kind`'s deliveries, serving [`hooks::path`] of `kind`.
pub fn router_for(kind: ForgeKind, config: Config, nudges: mpsc::Sender<Nudge>) -> Router {
    let state = Arc::new(Receiver {
        kind,
        secrets: config.secrets,
        seen: Mutex::new(Seen::new(config.remembered)),
        nudges,
    });
    Router::new()
        .route(hooks::path(kind), post(deliver))
        .layer(DefaultBodyLimit::max(config.max_body))
        .with_state(state)
}

struct Receiver {
    kind: ForgeKind,
    secrets: Secrets,
    seen: Mutex<Seen>,
    nudges: mpsc::Sender<Nudge>,
}

/// The last delivery ids, oldest first, bounded.
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
    limit: usize,
}

impl Seen {
    fn new(limit: usize) -> Seen {
        Seen {
            order: VecDeque::new(),
            ids: HashSet::new(),
            limit: limit.max(1),
        }
    }

    /// Remembers `id`; false when it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.limit
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

async fn deliver(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, &'static str) {
    let forge = receiver.kind.as_str();
    let delivery = hooks::delivery(receiver.kind, &headers);
    let event = hooks::event(receiver.kind, &headers);
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            tracing::warn!(forge, %delivery, %event, status = %rejection.status(), "webhook body refused");
            return (rejection.status(), "body refused\n");
        }
    };
    if receiver.secrets.is_empty() {
        tracing::warn!(forge, %delivery, %event, "webhook refused: no webhook secret is configured");
        return (StatusCode::UNAUTHORIZED, "no webhook secret configured\n");
    }
    let (verified, signed) = hooks::verify(receiver.kind, &receiver.secrets, &headers, &body);
    if !verified {
        tracing::warn!(forge, %delivery, %event, signed, "webhook signature does not match");
        return (StatusCode::UNAUTHORIZED, "bad signature\n");
    }
    if delivery.is_empty() && hooks::needs_delivery_id(receiver.kind) {
        tracing::warn!(forge, %event, "webhook without a delivery id refused");
        return (StatusCode::BAD_REQUEST, "missing delivery id\n");
    }
    if !delivery.is_empty()
        && !receiver
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(&delivery)
    {
        tracing::info!(forge, %delivery, %event, "webhook replay ignored");
        return (StatusCode::OK, "already received\n");
    }
    let nudge = match hooks::decode(receiver.kind, &event, &body) {
        Decoded::Pong => {
            tracing::info!(%delivery, "webhook ping");
            return (StatusCode::OK, "pong\n");
        }
        Decoded::Ignored => {
            tracing::debug!(%delivery, %event, "webhook event ignored");
            return (StatusCode::ACCEPTED, "ignored\n");
        }
        Decoded::Invalid(error) => {
            tracing::warn!(%delivery, %event, %error, "webhook payload not understood");
            return (StatusCode::BAD_REQUEST, "payload not understood\n");
        }
        Decoded::Nudge { repo, number, event } => Nudge {
            repo,
            number,
            event,
            delivery: delivery.clone(),
        },
    };
    tracing::debug!(%delivery, repo = %nudge.repo, number = nudge.number, "webhook accepted");
    match receiver.nudges.try_send(nudge) {
        Ok(()) => (StatusCode::OK, "accepted\n"),
        // The nudge is a hint and polling catches up: a busy controller does not fail GitHub.
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(%delivery, "webhook accepted but the controller is busy; polling will catch up");
            (StatusCode::OK, "accepted\n")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            tracing::warn!(%delivery, "webhook received while the controller is stopping");
            (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
        }
    }
}

/// What a delivery says, as far as flaggit cares.
pub enum Decoded {
    Pong,
    Ignored,
    Invalid(String),
    Nudge { repo: RepoId, number: u64, event: Event },
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct IssueCommentPayload {
    action: String,
    issue: Issue,
    comment: CommentPayload,
    repository: Repository,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    /// Present only when the issue is a pull request.
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CommentPayload {
    id: u64,
    user: User,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    pull_request: PullRequestBody,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequestBody {
    number: u64,
    #[serde(default)]
    merged: Option<bool>,
}

#[derive(Deserialize)]
struct ReviewPayload {
    action: String,
    review: ReviewBody,
    pull_request: PullRequestBody,
    repository: Repository,
}

#[derive(Deserialize)]
struct ReviewBody {
    id: u64,
    state: String,
}

fn repo_of(repository: &Repository) -> Option<RepoId> {
    let (owner, name) = repository.full_name.split_once('/')?;
    (!owner.is_empty() && !name.is_empty()).then(|| RepoId {
        owner: owner.to_owned(),
        name: name.to_owned(),
    })
}

/// A GitHub delivery of `event` (Gitea's `issue_comment` and `pull_request` share its shape).
pub fn decode(event: &str, body: &[u8]) -> Decoded {
    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Decoded> {
        serde_json::from_slice(body).map_err(|e| Decoded::Invalid(e.to_string()))
    }
    let decoded = match event {
        "ping" => return Decoded::Pong,
        "issue_comment" => parse::<IssueCommentPayload>(body).map(|p| {
            if p.issue.pull_request.is_none() {
                return (None, 0, None);
            }
            let event = Event::Comment {
                action: p.action,
                comment_id: p.comment.id,
                author: p.comment.user.login,
            };
            (repo_of(&p.repository), p.issue.number, Some(event))
        }),
        "pull_request" => parse::<PullRequestPayload>(body).map(|p| {
            let event = Event::PullRequest {
                action: p.action,
                merged: p.pull_request.merged.unwrap_or(false),
            };
            (repo_of(&p.repository), p.pull_request.number, Some(event))
        }),
        "pull_request_review" => parse::<ReviewPayload>(body).map(|p| {
            let event = Event::Review {
                action: p.action,
                review_id: p.review.id,
                state: p.review.state,
            };
            (repo_of(&p.repository), p.pull_request.number, Some(event))
        }),
        _ => return Decoded::Ignored,
    };
    match decoded {
        Err(invalid) => invalid,
        // A comment on an issue that is not a pull request.
        Ok((_, _, None)) => Decoded::Ignored,
        Ok((None, _, Some(_))) => Decoded::Invalid("repository.full_name is not owner/name".into()),
        Ok((Some(repo), number, Some(event))) => Decoded::Nudge { repo, number, event },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/github/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// GitHub's recorded review event is in the Events API shape: wrap its payload as the
    /// webhook delivery (which adds `repository`).
    fn review_delivery() -> Vec<u8> {
        let event: serde_json::Value =
            serde_json::from_slice(&fixture("pull_request_review_event.json")).expect("json");
        let mut payload = event["payload"].clone();
        payload["repository"] = payload["pull_request"]["base"]["repo"].clone();
        serde_json::to_vec(&payload).expect("json")
    }

    #[test]
    fn signatures_match_githubs_documented_example() {
        // The example in GitHub's "Validating webhook deliveries" documentation.
        let want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, b"Hello, World!"), want);
        let secrets = Secrets::new(vec![SECRET.to_vec()]);
        assert!(secrets.verify(b"Hello, World!", want));
        assert!(!secrets.verify(b"Hello, World?", want));
        assert!(!secrets.verify(b"Hello, World!", &want.replace("sha256=", "sha1=")));
        assert!(!secrets.verify(b"Hello, World!", "sha256=zz"));
        assert!(!secrets.verify(b"Hello, World!", ""));
    }

    #[test]
    fn rotated_secrets_are_all_accepted_and_empty_ones_never() {
        let secrets = Secrets::new(vec![b"new".to_vec(), SECRET.to_vec()]);
        assert!(secrets.verify(b"x", &sign(SECRET, b"x")));
        assert!(secrets.verify(b"x", &sign(b"new", b"x")));
        secrets.set(vec![b"new".to_vec(), Vec::new()]);
        assert!(!secrets.verify(b"x", &sign(SECRET, b"x")));
        assert!(!secrets.verify(b"x", &sign(b"", b"x")));
        assert_eq!(format!("{secrets:?}"), "Secrets(..)");
    }

    #[test]
    fn the_replay_memory_is_bounded() {
        let mut seen = Seen::new(3);
        for id in ["a", "b", "c"] {
            assert!(seen.insert(id));
        }
        assert!(!seen.insert("a"));
        assert!(seen.insert("d"));
        assert!(seen.insert("a"), "the oldest id was forgotten");
        assert_eq!(seen.order.len(), 3);
        assert_eq!(seen.ids.len(), 3);
    }

    #[test]
    fn fixture_payloads_decode_to_the_pull_request_they_concern() {
        let repo = |full: &str| {
            let (owner, name) = full.split_once('/').expect("owner/name");
            RepoId {
                owner: owner.into(),
                name: name.into(),
            }
        };
        let Decoded::Nudge {
            repo: r,
            number,
            event,
        } = decode(
            "issue_comment",
            &fixture("issue_comment_edited_webhook_event.json"),
        )
        else {
            panic!("a comment on a pull request is a nudge")
        };
        assert_eq!((r, number), (repo("gagbo/ouro-closures"), 5));
        assert!(matches!(event, Event::Comment { action, .. } if action == "edited"));
        // The recorded `created` comment is on a plain issue.
        assert!(matches!(
            decode(
                "issue_comment",
                &fixture("issue_comment_created_webhook_event.json")
            ),
            Decoded::Ignored
        ));
        let Decoded::Nudge { event, number, .. } =
            decode("pull_request", &fixture("pull_request_closed_webhook_event.json"))
        else {
            panic!("a closed pull request is a nudge")
        };
        assert_eq!(number, 2);
        assert!(matches!(event, Event::PullRequest { action, .. } if action == "closed"));
        let Decoded::Nudge {
            repo: r,
            number,
            event,
        } = decode("pull_request_review", &review_delivery())
        else {
            panic!("a review is a nudge")
        };
        assert_eq!((r, number), (repo("LizardByte/RetroArcher"), 218));
        assert!(matches!(event, Event::Review { state, .. } if state == "approved"));
        assert!(matches!(
            decode("ping", &fixture("ping_webhook_event.json")),
            Decoded::Pong
        ));
        assert!(matches!(decode("push", b"{}"), Decoded::Ignored));
        assert!(matches!(
            decode("pull_request", b"{\"action\":1}"),
            Decoded::Invalid(_)
        ));
        assert!(matches!(decode("issue_comment", b"\0\xff"), Decoded::Invalid(_)));
    }

    struct Served {
        url: String,
        nudges: mpsc::Receiver<Nudge>,
        http: reqwest::Client,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    async fn serve(config: Config) -> Served {
        serve_with(config, 16).await
    }

    async fn serve_with(config: Config, capacity: usize) -> Served {
        let (tx, nudges) = mpsc::channel(capacity);
        let app = router(config, tx);
        let (addr, server) = crate::testing::serve(app).await;
        let url = format!("http://{addr}{PATH}");
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Served {
            url,
            nudges,
            http,
            server,
        }
    }

    impl Served {
        async fn post(&self, event: &str, delivery: &str, signature: Option<&str>, body: Vec<u8>) -> u16 {
            let mut request = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-github-event", event)
                .header("x-github-delivery", delivery)
                .header("user-agent", "GitHub-Hookshot/044aadd");
            if let Some(signature) = signature {
                request = request.header("x-hub-signature-256", signature);
            }
            request
                .body(body)
                .send()
                .await
                .expect("the receiver answers")
                .status()
                .as_u16()
        }

        async fn signed(&self, event: &str, delivery: &str, body: Vec<u8>) -> u16 {
            let signature = sign(SECRET, &body);
            self.post(event, delivery, Some(&signature), body).await
        }

        fn no_nudge(&mut self) {
            assert_eq!(self.nudges.try_recv(), Err(mpsc::error::TryRecvError::Empty));
        }
    }

    fn config() -> Config {
        Config::new(Secrets::new(vec![SECRET.to_vec()]))
    }

    #[tokio::test]
    async fn a_signed_comment_on_a_pull_request_nudges_once_and_its_replay_is_ignored() {
        let mut served = serve(config()).await;
        let body = fixture("issue_comment_edited_webhook_event.json");
        assert_eq!(served.signed("issue_comment", "d-1", body.clone()).await, 200);
        let nudge = served.nudges.recv().await.expect("a nudge");
        assert_eq!(
            nudge,
            Nudge {
                repo: RepoId {
                    owner: "gagbo".into(),
                    name: "ouro-closures".into()
                },
                number: 5,
                event: Event::Comment {
                    action: "edited".into(),
                    comment_id: 1_640_255_529,
                    author: "gagbo-test-app[bot]".into()
                },
                delivery: "d-1".into(),
            }
        );
        assert_eq!(served.signed("issue_comment", "d-1", body).await, 200);
        served.no_nudge();
    }

    #[tokio::test]
    async fn bad_or_missing_signatures_are_refused_with_401() {
        let mut served = serve(config()).await;
        let body = fixture("pull_request_opened_webhook_event.json");
        let forged = sign(b"guess", &body);
        assert_eq!(
            served
                .post("pull_request", "d-2", Some(&forged), body.clone())
                .await,
            401
        );
        assert_eq!(served.post("pull_request", "d-2", None, body.clone()).await, 401);
        assert_eq!(
            served
                .post("pull_request", "d-2", Some("sha256="), body.clone())
                .await,
            401
        );
        // A body changed after signing.
        let signature = sign(SECRET, &body);
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert_eq!(
            served
                .post("pull_request", "d-2", Some(&signature), tampered)
                .await,
            401
        );
        served.no_nudge();
        // Refused deliveries were not remembered: the genuine one still gets through.
        assert_eq!(served.signed("pull_request", "d-2", body).await, 200);
        let nudge = served.nudges.recv().await.expect("a nudge");
        assert_eq!(nudge.number, 2);
        assert_eq!(
            nudge.event,
            Event::PullRequest {
                action: "opened".into(),
                merged: false
            }
        );
    }

    #[tokio::test]
    async fn without_a_secret_nothing_is_accepted() {
        let mut served = serve(Config::new(Secrets::default())).await;
        let body = fixture("ping_webhook_event.json");
        let signature = sign(b"", &body);
        assert_eq!(served.post("ping", "d-3", Some(&signature), body).await, 401);
        served.no_nudge();
    }

    #[tokio::test]
    async fn oversized_bodies_get_413() {
        let mut served = serve(Config {
            max_body: 4096,
            ..config()
        })
        .await;
        let body = fixture("pull_request_opened_webhook_event.json");
        assert!(body.len() > 4096);
        assert_eq!(served.signed("pull_request", "d-4", body).await, 413);
        served.no_nudge();
    }

    #[tokio::test]
    async fn ping_review_plain_issues_and_other_events_are_answered_without_failing() {
        let mut served = serve(config()).await;
        assert_eq!(
            served
                .signed("ping", "p-1", fixture("ping_webhook_event.json"))
                .await,
            200
        );
        served.no_nudge();
        let plain_issue = fixture("issue_comment_created_webhook_event.json");
        assert_eq!(served.signed("issue_comment", "p-2", plain_issue).await, 202);
        assert_eq!(served.signed("push", "p-3", b"{}".to_vec()).await, 202);
        served.no_nudge();
        assert_eq!(
            served.signed("pull_request", "p-4", b"not json".to_vec()).await,
            400
        );
        assert_eq!(
            served
                .signed("pull_request_review", "p-5", review_delivery())
                .await,
            200
        );
        let nudge = served.nudges.recv().await.expect("a nudge");
        assert_eq!(nudge.number, 218);
        assert!(matches!(nudge.event, Event::Review { ref state, .. } if state == "approved"));
        let merged = fixture("pull_request_closed_webhook_event.json");
        assert_eq!(served.signed("pull_request", "p-6", merged).await, 200);
        let nudge = served.nudges.recv().await.expect("a nudge");
        assert!(matches!(nudge.event, Event::PullRequest { ref action, .. } if action == "closed"));
    }

    #[tokio::test]
    async fn a_delivery_without_an_id_is_refused() {
        let served = serve(config()).await;
        let body = fixture("ping_webhook_event.json");
        let signature = sign(SECRET, &body);
        assert_eq!(served.post("ping", "", Some(&signature), body).await, 400);
    }

    #[tokio::test]
    async fn concurrent_copies_of_one_delivery_nudge_once() {
        let mut served = serve(config()).await;
        let body = fixture("pull_request_opened_webhook_event.json");
        let answers =
            futures::future::join_all((0..8).map(|_| served.signed("pull_request", "same-id", body.clone())))
                .await;
        assert_eq!(answers, vec![200; 8]);
        assert_eq!(served.nudges.recv().await.map(|n| n.number), Some(2));
        served.no_nudge();
    }

    #[tokio::test]
    async fn a_busy_controller_does_not_fail_the_delivery() {
        let mut served = serve_with(config(), 1).await;
        let body = fixture("pull_request_opened_webhook_event.json");
        assert_eq!(served.signed("pull_request", "b-1", body.clone()).await, 200);
        assert_eq!(served.signed("pull_request", "b-2", body).await, 200);
        assert_eq!(served.nudges.recv().await.map(|n| n.delivery), Some("b-1".into()));
        served.no_nudge();
    }

    /// Posts `body` to the receiver of `kind` with `headers`; the status.
    async fn post_to(kind: ForgeKind, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Option<Nudge>) {
        let (tx, mut nudges) = mpsc::channel(4);
        let app = router_for(kind, config(), tx);
        let (addr, server) = crate::testing::serve(app).await;
        crate::install_crypto_provider();
        let mut request = reqwest::Client::new()
            .post(format!("http://{addr}{}", hooks::path(kind)))
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let status = request
            .body(body)
            .send()
            .await
            .expect("the receiver answers")
            .status()
            .as_u16();
        server.abort();
        (status, nudges.try_recv().ok())
    }

    #[tokio::test]
    async fn gitlab_deliveries_need_the_secret_token() {
        let body = serde_json::to_vec(&serde_json::json!({
            "object_kind": "note", "user": {"username": "alice"},
            "project": {"path_with_namespace": "acme/config"},
            "object_attributes": {"id": 7, "noteable_type": "MergeRequest", "action": "create"},
            "merge_request": {"iid": 3}
        }))
        .expect("json");
        let secret = std::str::from_utf8(SECRET).expect("text");
        let event = ("x-gitlab-event", "Note Hook");
        for token in ["wrong", "", "It's a Secret to Everybody!"] {
            let (status, nudge) = post_to(
                ForgeKind::Gitlab,
                &[event, ("x-gitlab-token", token)],
                body.clone(),
            )
            .await;
            assert_eq!((status, nudge), (401, None), "{token:?}");
        }
        let (status, nudge) = post_to(
            ForgeKind::Gitlab,
            &[event, ("x-gitlab-token", secret), ("idempotency-key", "k-1")],
            body.clone(),
        )
        .await;
        assert_eq!(status, 200);
        let nudge = nudge.expect("a nudge");
        assert_eq!(
            (nudge.repo.full_path().as_str(), nudge.number),
            ("acme/config", 3)
        );
        // GitLab before 15 names no delivery: still accepted once the token matches.
        let (status, _) = post_to(ForgeKind::Gitlab, &[event, ("x-gitlab-token", secret)], body).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn gitea_and_forgejo_deliveries_need_the_hmac_of_the_body() {
        let body = serde_json::to_vec(&serde_json::json!({
            "action": "created", "issue": {"number": 2, "pull_request": {"merged": false}},
            "comment": {"id": 31, "user": {"login": "alice"}}, "repository": {"full_name": "acme/config"}
        }))
        .expect("json");
        let good = sign(SECRET, &body);
        let good = good.trim_start_matches("sha256=");
        let forged = sign(b"guess", &body);
        let forged = forged.trim_start_matches("sha256=");
        let gitea = [("x-gitea-event", "issue_comment"), ("x-gitea-delivery", "g-1")];
        let (status, nudge) = post_to(
            ForgeKind::Gitea,
            &[gitea[0], gitea[1], ("x-gitea-signature", forged)],
            body.clone(),
        )
        .await;
        assert_eq!((status, nudge), (401, None));
        let (status, nudge) = post_to(ForgeKind::Gitea, &gitea, body.clone()).await;
        assert_eq!((status, nudge), (401, None), "unsigned");
        let (status, nudge) = post_to(
            ForgeKind::Gitea,
            &[gitea[0], gitea[1], ("x-gitea-signature", good)],
            body.clone(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(nudge.map(|n| n.number), Some(2));
        let forgejo = [
            ("x-forgejo-event", "issue_comment"),
            ("x-forgejo-delivery", "f-1"),
            ("x-forgejo-signature", good),
        ];
        let (status, nudge) = post_to(ForgeKind::Gitea, &forgejo, body.clone()).await;
        assert_eq!((status, nudge.map(|n| n.number)), (200, Some(2)));
        // A GitHub signature header is not Gitea's: refused.
        let sha = sign(SECRET, &body);
        let (status, _) = post_to(
            ForgeKind::Gitea,
            &[gitea[0], gitea[1], ("x-hub-signature-256", &sha)],
            body,
        )
        .await;
        assert_eq!(status, 401);
    }

    #[test]
    fn many_distinct_deliveries_are_each_accepted() {
        let mut seen = Seen::new(DEFAULT_REMEMBERED);
        assert!((0..20_000).all(|i| seen.insert(&format!("id-{i}"))));
        assert_eq!(seen.ids.len(), DEFAULT_REMEMBERED);
    }
}
