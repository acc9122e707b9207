//! The delivery dashboard: every rollout the viewer may see, served by the controller binary
//! (`flaggit dashboard`). Read-only; one Canary watch feeds every viewer; each request is
//! scoped to the namespaces where Kubernetes RBAC lets the viewer list canaries.

pub mod auth;
pub mod chart;
pub mod store;
pub mod view;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

use crate::api::Canary;
use crate::gitops::inspect;
use crate::gitops::message::Entry;
use crate::telemetry::{LogFormat, init_tracing};
use auth::{Authorizer, Cidr, Identity, Presented, Proxies};
use store::{Cluster, WatchState};
use view::Tab;

/// What the dashboard can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the Kubernetes API: {0}")]
    Connect(String),
    #[error("cannot listen on {address}: {source}: pass a free address with --listen")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server stopped: {0}")]
    Serve(#[source] std::io::Error),
    #[error(
        "TokenReview failed: {0}: the dashboard's ServiceAccount needs `create tokenreviews` (manifests/dashboard/rbac.yaml)"
    )]
    TokenReview(#[source] kube::Error),
    #[error(
        "SubjectAccessReview failed: {0}: the dashboard's ServiceAccount needs `create subjectaccessreviews` (manifests/dashboard/rbac.yaml)"
    )]
    SubjectAccessReview(#[source] kube::Error),
    #[error("cannot list the events of canary {canary}: {source}")]
    ListEvents {
        canary: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A short, stable name for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Listen { .. } => "listen",
            Self::Serve(_) => "serve",
            Self::TokenReview(_) => "token_review",
            Self::SubjectAccessReview(_) => "subject_access_review",
            Self::ListEvents { .. } => "list_events",
        }
    }
}

/// `flaggit dashboard`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on. Localhost by default: put an authenticating proxy or a port-forward
    /// in front, or pass `0.0.0.0:9090` deliberately.
    #[arg(long, env = "FLAGGIT_DASHBOARD_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Addresses (CIDRs, comma-separated or repeated) of the authenticating proxies whose
    /// `X-Forwarded-User` (and `X-Forwarded-Proto`/`-Host`) headers are believed. The proxy's
    /// own address, never the pod network: any pod there could claim to be anyone. None by
    /// default.
    #[arg(
        long = "trusted-proxy",
        env = "FLAGGIT_DASHBOARD_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<Cidr>,
    /// The trusted proxy sets `X-Forwarded-Groups` itself (and drops what clients send), so
    /// the groups it names are believed. Off by default: groups from a proxy are ignored.
    #[arg(long, env = "FLAGGIT_DASHBOARD_PROXY_GROUPS")]
    pub proxy_groups: bool,
    /// Browsers reach the dashboard over HTTPS (TLS ends in front of it): the login cookie
    /// is `Secure`. A trusted proxy's `X-Forwarded-Proto: https` does the same per request.
    #[arg(long, env = "FLAGGIT_DASHBOARD_HTTPS")]
    pub https: bool,
    /// Serve requests without an identity as `system:anonymous` (still subject to RBAC).
    #[arg(long, env = "FLAGGIT_DASHBOARD_ANONYMOUS")]
    pub anonymous: bool,
    /// How long TokenReview and SubjectAccessReview answers are reused.
    #[arg(long, default_value_t = 30)]
    pub authz_cache_seconds: u64,
    /// Directory of the ledgers in the config repo.
    #[arg(long, env = "FLAGGIT_GIT_LEDGER_DIR", default_value = ".flaggit")]
    pub ledger_dir: String,
    /// Argo CD's namespace (to find a canary's repository).
    #[arg(long, env = "FLAGGIT_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,
    /// The cluster this dashboard shows (the `--cluster-name` of its controller): the
    /// overview chart draws this cluster's records; the History tab shows every cluster.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Kubeconfig file; default `$KUBECONFIG`, `~/.kube/config`, or the in-cluster account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "FLAGGIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log level or `tracing` filter.
    #[arg(long, env = "FLAGGIT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// How a running dashboard decides who sees what.
#[derive(Clone, Debug)]
pub struct Config {
    pub trusted_proxies: Vec<Cidr>,
    /// Whether the trusted proxies set `X-Forwarded-Groups` (`--proxy-groups`).
    pub proxy_groups: bool,
    /// Whether browsers reach the dashboard over HTTPS (`--https`).
    pub https: bool,
    pub anonymous: bool,
    pub authz_ttl: Duration,
    /// Where the History tab reads the Git ledger (the repository is the canary's own).
    pub git: inspect::Options,
    /// This cluster's name: the overview chart draws its records only.
    pub cluster: String,
}

impl Args {
    pub fn config(&self) -> Config {
        Config {
            trusted_proxies: self.trusted_proxy.clone(),
            proxy_groups: self.proxy_groups,
            https: self.https,
            anonymous: self.anonymous,
            authz_ttl: Duration::from_secs(self.authz_cache_seconds),
            git: inspect::Options {
                cache_dir: std::env::temp_dir().join("flaggit-dashboard-git"),
                ledger_dir: self.ledger_dir.clone(),
                argocd_namespace: self.argocd_namespace.clone(),
                branch: "main".into(),
                limit: 10_000,
                ..Default::default()
            },
            cluster: self.cluster_name.clone().unwrap_or_default(),
        }
    }
}

/// `flaggit dashboard`: serves until interrupted.
pub async fn run(args: Args) -> Result<(), Error> {
    init_tracing(args.log_format, &args.log_level);
    let client = crate::controller::kube_client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Listen {
            address: args.listen,
            source,
        })?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, client, args.config(), shutdown)
        .await
        .map_err(Error::Serve)
}

/// Git history read for a canary, reused for a few seconds across page refreshes.
type HistoryCache = Mutex<HashMap<String, (Instant, Result<Vec<Entry>, String>)>>;

#[derive(Clone)]
struct AppState {
    client: Client,
    cluster: Arc<Cluster>,
    authorizer: Arc<Authorizer>,
    config: Arc<Config>,
    proxies: Arc<Proxies>,
    history: Arc<HistoryCache>,
}

/// Starts the Canary watch and serves the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState {
        cluster: Cluster::watch(client.clone()),
        authorizer: Arc::new(Authorizer::new(client.clone(), config.authz_ttl)),
        client,
        proxies: Arc::new(Proxies {
            trusted: config.trusted_proxies.clone(),
            groups: config.proxy_groups,
        }),
        config: Arc::new(config),
        history: Arc::new(Mutex::new(HashMap::new())),
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/canaries/{namespace}/{name}", get(detail))
        .route("/events", get(events_stream))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/healthz", get(|| async { "OK" }))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .with_state(state);
    tracing::info!(address = %listener.local_addr()?, "serving the dashboard");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long a page waits for the first list of canaries after the dashboard started.
const FIRST_LIST: std::time::Duration = std::time::Duration::from_secs(20);

/// An HTML response with headers that keep the page to its own origin.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unauthenticated(message: &str) -> Response {
    html(
        StatusCode::UNAUTHORIZED,
        view::page("Sign in", None, &view::sign_in(message)),
    )
}

fn failure(error: &Error) -> Response {
    tracing::warn!(error = %error, category = error.category(), "dashboard request failed");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        view::page(
            "Error",
            None,
            &format!(
                "<h1>Error</h1><p role=\"alert\">{}</p>",
                view::escape(&error.to_string())
            ),
        ),
    )
}

/// The viewer of a request, or the response that refuses it.
async fn viewer(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<Identity, Response> {
    match auth::presented(headers, peer.ip(), &state.proxies) {
        Presented::Proxy(identity) => Ok(identity),
        Presented::Token(token) => match state.authorizer.authenticate(&token).await {
            Ok(Some(identity)) => Ok(identity),
            Ok(None) => Err(unauthenticated("The API server did not accept that token.")),
            Err(error) => Err(failure(&error)),
        },
        Presented::Nothing if state.config.anonymous => Ok(Identity::anonymous()),
        Presented::Nothing => Err(unauthenticated("This dashboard needs to know who you are.")),
    }
}

/// The canaries `who` may see: those in namespaces where they may list canaries.
async fn visible(state: &AppState, who: &Identity) -> Result<Vec<Arc<Canary>>, Error> {
    state.cluster.until_synced(FIRST_LIST).await;
    let all = state.cluster.canaries.state();
    let mut allowed = HashMap::new();
    for ns in store::namespaces(&all) {
        let ok = state.authorizer.may_list(who, &ns).await?;
        allowed.insert(ns, ok);
    }
    Ok(all
        .into_iter()
        .filter(|c| allowed.get(&c.namespace().unwrap_or_default()) == Some(&true))
        .collect())
}

async fn index(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(filter): Query<view::Filter>,
) -> Response {
    let who = match viewer(&state, &headers, peer).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let canaries = match visible(&state, &who).await {
        Ok(canaries) => canaries,
        Err(error) => return failure(&error),
    };
    if canaries.is_empty() {
        let missing = state.cluster.state() == WatchState::CrdMissing;
        return html(
            StatusCode::OK,
            view::page("Get started", Some(&who.user), &view::onboarding(missing)),
        );
    }
    let namespaces = store::namespaces(&canaries);
    let rows = view::select(canaries.iter().map(|c| view::Row::of(c)).collect(), &filter);
    html(
        StatusCode::OK,
        view::page(
            "Canaries",
            Some(&who.user),
            &view::table(&rows, &filter, &namespaces),
        ),
    )
}

#[derive(Deserialize)]
struct TabQuery {
    #[serde(default)]
    tab: String,
}

async fn detail(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<TabQuery>,
) -> Response {
    let who = match viewer(&state, &headers, peer).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let allowed = match state.authorizer.may_list(&who, &namespace).await {
        Ok(allowed) => allowed,
        Err(error) => return failure(&error),
    };
    state.cluster.until_synced(FIRST_LIST).await;
    // Not allowed and absent answer alike, so a page does not reveal what exists.
    let canary = match state.cluster.get(&namespace, &name) {
        Some(canary) if allowed => canary,
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                view::page(
                    "Not found",
                    Some(&who.user),
                    &format!(
                        "<h1>Not found</h1><p>No canary {}/{} that you may see.</p><p><a href=\"/\">All canaries</a></p>",
                        view::escape(&namespace),
                        view::escape(&name)
                    ),
                ),
            );
        }
    };
    let tab = Tab::parse(&query.tab);
    let content = match tab {
        Tab::Overview => overview(&state, &canary).await,
        Tab::Events => match canary_events(&state.client, &namespace, &name).await {
            Ok(rows) => view::events(&rows),
            Err(error) => return failure(&error),
        },
        Tab::Yaml => {
            let mut live = (*canary).clone();
            live.metadata.managed_fields = None;
            view::yaml(&serde_yaml::to_string(&live).unwrap_or_default())
        }
        Tab::History => {
            let repository = repository_of(&canary).unwrap_or_default();
            match history(&state, &canary).await {
                Some(Ok(entries)) => view::history(&view::releases(&entries), &repository, None),
                Some(Err(error)) => view::history(&[], &repository, Some(&error)),
                None => {
                    "<p>This canary has no Git repository: its rollouts are not recorded in a ledger.</p>"
                        .into()
                }
            }
        }
        Tab::Dora => match repository_of(&canary) {
            None => {
                "<p>This canary has no Git repository: its rollouts are not recorded in a ledger.</p>".into()
            }
            Some(_) => {
                let id = format!("{namespace}/{name}");
                let scope = crate::gitops::dora::Scope {
                    window: crate::telemetry::metrics::DORA_WINDOW,
                    cluster: None,
                    canaries: vec![id.clone()],
                };
                match inspect::canary_releases(Some(state.client.clone()), &id, &state.config.git).await {
                    Ok(releases) => {
                        let now = jiff::Timestamp::now().as_second();
                        view::dora(
                            &crate::gitops::dora::report(&releases, &scope, now),
                            "30 days",
                            None,
                        )
                    }
                    Err(error) => view::dora(&Default::default(), "30 days", Some(&error.to_string())),
                }
            }
        },
    };
    html(
        StatusCode::OK,
        view::page(
            &format!("{namespace}/{name}"),
            Some(&who.user),
            &view::detail(&canary, tab, &content),
        ),
    )
}

/// The canary's config repository, when one is known (its spec, or what the controller found).
fn repository_of(canary: &Canary) -> Option<String> {
    canary
        .spec
        .gitops
        .as_ref()
        .and_then(|g| g.repository.as_ref())
        .map(|r| r.url.clone())
        .or_else(|| canary.status.as_ref()?.gitops.as_ref()?.repository.clone())
}

/// The canary's ledger records, oldest first; None when it has no repository.
async fn history(state: &AppState, canary: &Canary) -> Option<Result<Vec<Entry>, String>> {
    repository_of(canary)?;
    let id = format!("{}/{}", canary.namespace().unwrap_or_default(), canary.name_any());
    if let Some((at, cached)) = state.history.lock().unwrap_or_else(|e| e.into_inner()).get(&id)
        && at.elapsed() < Duration::from_secs(5)
    {
        return Some(cached.clone());
    }
    let read = inspect::history(Some(state.client.clone()), &id, &state.config.git)
        .await
        .map_err(|e| e.to_string());
    state
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, (Instant::now(), read.clone()));
    Some(read)
}

async fn overview(state: &AppState, canary: &Canary) -> String {
    let analysis = canary.spec.analysis();
    let max_weight = analysis
        .and_then(|a| {
            a.max_weight
                .or_else(|| a.step_weights.as_ref().and_then(|w| w.iter().max().copied()))
        })
        .unwrap_or(100);
    let thresholds: Vec<chart::Threshold> = analysis
        .and_then(|a| a.metrics.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|m| chart::Threshold {
            min: m.threshold_range.as_ref().and_then(|r| r.min).or(m.threshold),
            max: m.threshold_range.as_ref().and_then(|r| r.max),
            name: m.name,
        })
        .collect();
    let (steps, source) = match history(state, canary).await {
        Some(Ok(entries)) if entries.iter().any(|e| e.cluster == state.config.cluster) => {
            let own: Vec<_> = entries
                .into_iter()
                .filter(|e| e.cluster == state.config.cluster)
                .collect();
            (view::steps_of(&own), "From the Git ledger's records.")
        }
        _ => {
            let points = state
                .cluster
                .timeline(&canary.namespace().unwrap_or_default(), &canary.name_any());
            let steps = points
                .into_iter()
                .map(|p| chart::Step {
                    at: p.at,
                    weight: p.weight,
                    checks: p.checks.into_iter().map(|c| (c.name, c.value)).collect(),
                })
                .collect::<Vec<_>>();
            (steps, "From status changes seen since the dashboard started.")
        }
    };
    view::overview(canary, &chart::render(&steps, max_weight, &thresholds), source)
}

async fn canary_events(client: &Client, namespace: &str, name: &str) -> Result<Vec<view::EventRow>, Error> {
    let api: Api<KubeEvent> = Api::namespaced(client.clone(), namespace);
    let selector = format!("involvedObject.kind=Canary,involvedObject.name={name}");
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|source| Error::ListEvents {
            canary: format!("{namespace}/{name}"),
            source,
        })?;
    let mut rows: Vec<(jiff::Timestamp, view::EventRow)> = list
        .items
        .into_iter()
        .map(|e| {
            let at = e
                .last_timestamp
                .map(|t| t.0)
                .or_else(|| e.event_time.map(|t| t.0))
                .or_else(|| e.first_timestamp.map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.map(|t| t.0))
                .unwrap_or_default();
            let row = view::EventRow {
                time: at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                count: e.count.unwrap_or(1),
            };
            (at, row)
        })
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// Server-sent events: the `namespace/name` of each canary the viewer may see when it
/// changes, so the open page refreshes itself.
async fn events_stream(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let who = match viewer(&state, &headers, peer).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let changes = state.cluster.subscribe();
    let stream = change_stream(state, who, changes);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

fn change_stream(
    state: AppState,
    who: Identity,
    changes: tokio::sync::broadcast::Receiver<(String, String)>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold((state, who, changes), |(state, who, mut changes)| async move {
        loop {
            let (namespace, name) = match changes.recv().await {
                Ok(change) => change,
                // Missed some: tell the page to refresh whatever it shows.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => (String::new(), String::new()),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            if !namespace.is_empty() && !state.authorizer.may_list(&who, &namespace).await.unwrap_or(false) {
                continue;
            }
            let event = SseEvent::default()
                .event("change")
                .data(format!("{namespace}/{name}"));
            return Some((Ok(event), (state, who, changes)));
        }
    })
}

async fn login_form() -> Response {
    html(
        StatusCode::OK,
        view::page(
            "Sign in",
            None,
            &view::sign_in("Paste a bearer token to sign in."),
        ),
    )
}

/// Decodes one field of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &str, field: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == field).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to a POST from another site's page: it could sign a viewer in as someone
/// else, or out (login CSRF).
fn cross_origin() -> Response {
    html(
        StatusCode::FORBIDDEN,
        view::page(
            "Refused",
            None,
            "<h1>Refused</h1><p role=\"alert\">This form was sent from another site. Sign in from the dashboard's own page.</p>",
        ),
    )
}

/// `; Secure` when the browser reached the dashboard over HTTPS.
fn secure_attribute(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> &'static str {
    if auth::over_https(headers, peer.ip(), &state.proxies, state.config.https) {
        "; Secure"
    } else {
        ""
    }
}

/// Checks a pasted token with TokenReview and keeps it in an HttpOnly cookie.
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !auth::same_origin(&headers, peer.ip(), &state.proxies) {
        return cross_origin();
    }
    let Some(token) = form_field(&body, "token")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    else {
        return unauthenticated("Paste a token to sign in.");
    };
    if !token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return unauthenticated("That is not a bearer token.");
    }
    match state.authorizer.authenticate(&token).await {
        Ok(Some(_)) => {}
        Ok(None) => return unauthenticated("The API server did not accept that token."),
        Err(error) => return failure(&error),
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        auth::TOKEN_COOKIE,
        secure_attribute(&state, &headers, peer)
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !auth::same_origin(&headers, peer.ip(), &state.proxies) {
        return cross_origin();
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        auth::TOKEN_COOKIE,
        secure_attribute(&state, &headers, peer)
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_decode() {
        assert_eq!(
            form_field("a=1&token=ab%2Bc%3D+d", "token").as_deref(),
            Some("ab+c= d")
        );
        assert_eq!(form_field("token=abc%", "token").as_deref(), Some("abc%"));
        assert_eq!(form_field("a=1", "token"), None);
    }

    #[test]
    fn args_default_to_localhost_and_no_anonymous() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cli = Cli::parse_from(["x"]);
        assert!(cli.args.listen.ip().is_loopback());
        assert!(!cli.args.anonymous && cli.args.trusted_proxy.is_empty());
        assert!(!cli.args.proxy_groups && !cli.args.https);
        let cli = Cli::parse_from(["x", "--trusted-proxy", "10.0.0.0/8,192.168.1.1"]);
        assert_eq!(cli.args.trusted_proxy.len(), 2);
        assert!(Cli::try_parse_from(["x", "--trusted-proxy", "nope"]).is_err());
    }
}
