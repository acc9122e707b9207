//! flaggit: progressive delivery for Kubernetes that keeps Git the single source of truth.
//!
//! Data flows one way through the layers (see `docs/architecture.md`):
//! watch (`controller`) -> observe -> decide (`rollout`, pure) -> act -> record (`gitops`).
//! This crate holds everything testable; `main.rs` only parses the command line.

pub mod alerts;
pub mod analysis;
pub mod api;
pub mod cli;
pub mod controller;
pub mod dashboard;
pub mod dev;
pub mod forge;
pub mod gitops;
pub mod hooks;
pub mod loadtester;
pub mod objects;
pub mod redact;
pub mod rollout;
pub mod router;
pub mod steer;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod workload;

/// The version of this build, as reported by `flaggit version` and `flagger_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the process-wide TLS provider (ring) used by the HTTP clients. Idempotent.
pub fn install_crypto_provider() {
    // Err means another thread installed it first, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
