//! The `flagger.app/v1beta1` API — Canary, MetricTemplate, AlertProvider — and the CRDs built from it.
//!
//! The types follow Flagger's field names and meaning exactly so that existing manifests apply
//! unchanged; flaggit's own additions live under `spec.gitops`. Doc comments on fields are
//! written for users: they become the text `kubectl explain` prints.
//!
//! Large optional parts (`status.gitops`, `spec.canaryAnalysis`, `spec.service`'s policies ...)
//! are `Option<Box<T>>`: the controller caches every Canary, and an unset part then costs a
//! pointer instead of its size. serde and schemars treat `Box<T>` as `T`, so the CRD is the same.

mod alert_provider;
mod analysis;
mod canary;
mod crd;
mod gitops;
mod metric_template;
mod provider;
mod service;
mod steering;

pub use alert_provider::*;
pub use analysis::*;
pub use canary::*;
pub use crd::{CRD_FILES, crds, crds_yaml};
pub use gitops::*;
pub use metric_template::*;
pub use provider::{Capabilities, MeshProvider, Mirroring, Refusal, UnknownProvider, refusal};
pub use service::*;
pub use steering::*;

/// API group of every flaggit resource, shared with Flagger.
pub const GROUP: &str = "flagger.app";
/// The one served and stored version.
pub const VERSION: &str = "v1beta1";
