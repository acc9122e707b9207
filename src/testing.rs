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
