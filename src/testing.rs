//! Builders shared by the unit tests.

use crate::api::{Canary, CanaryAnalysis, CanaryService, CanarySpec, TargetRef};

/// The Canary `podinfo` for the Deployment `podinfo`, with `service` and `analysis`.
pub fn podinfo(service: Option<CanaryService>, analysis: Option<CanaryAnalysis>) -> Canary {
    Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                name: "podinfo".into(),
                ..Default::default()
            },
            service,
            analysis,
            ..Default::default()
        },
    )
}

/// Serves `app` on a free loopback port until the test's runtime ends; returns the address
/// and the server task (abort it to stop answering).
pub async fn serve(app: axum::Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (addr, task)
}
