//! Routers: the traffic providers that split requests between primary and canary. One trait,
//! one file per provider, and [`for_provider`] as the only place that matches on the provider
//! string. `kubernetes.rs` also owns the apex/primary/canary Services every provider needs.

use async_trait::async_trait;
use kube::Client;

use crate::api::Canary;
pub use crate::rollout::Routes;

/// What a router can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {kind} {name}: {source}")]
    Get {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Canary asks for something this provider cannot do; the text names the field.
    #[error("{0}")]
    Invalid(String),
    /// The routing object exists but is not ready (for example an HTTPRoute not yet
    /// accepted by its Gateway).
    #[error("{0}")]
    NotReady(String),
}

impl Error {
    /// A short fixed name for the kind of failure: event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Get { .. } => "GetRoute",
            Self::Apply { .. } => "ApplyRoute",
            Self::Invalid(_) => "InvalidRoute",
            Self::NotReady(_) => "RouteNotReady",
        }
    }
}

/// A traffic provider (Flagger's `Interface` in pkg/router).
#[async_trait]
pub trait Router: Send + Sync {
    /// Creates the routing objects with all traffic on the primary, or brings existing ones
    /// in line with the Canary's spec while keeping their current weights.
    async fn reconcile(&self, canary: &Canary) -> Result<(), Error>;
    /// Sets the traffic split. Session affinity cookies are read from `canary.status`.
    async fn set_routes(&self, canary: &Canary, routes: Routes) -> Result<(), Error>;
    /// The traffic split in force now.
    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error>;
    /// Gives back what the router took over (for example an existing VirtualService) when
    /// the Canary is deleted with `revertOnDeletion`.
    async fn finalize(&self, canary: &Canary) -> Result<(), Error>;
}

/// The router for a provider string (`spec.provider` or the controller's default).
pub fn for_provider(provider: &str, client: Client) -> Result<Box<dyn Router>, Error> {
    let _ = client;
    Err(Error::Invalid(format!(
        "provider {provider:?} is not supported yet: use kubernetes, istio, gatewayapi:v1 or gatewayapi:v1beta1"
    )))
}
