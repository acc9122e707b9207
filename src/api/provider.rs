//! Traffic providers as the controller reads them: the `--mesh-provider` forms (with the
//! `smi:<version>:<mesh>` target mesh), what each provider's router can do, and the check that
//! refuses a Canary asking its provider for something it cannot do.

use std::fmt;
use std::str::FromStr;

use super::{CanarySpec, Provider};

impl Provider {
    /// Every provider of Flagger's CRD enum.
    pub const ALL: [Provider; 19] = [
        Provider::Apisix,
        Provider::AppMesh,
        Provider::AppMeshV1beta2,
        Provider::Contour,
        Provider::GatewayApiV1,
        Provider::GatewayApiV1beta1,
        Provider::Gloo,
        Provider::Istio,
        Provider::Knative,
        Provider::Kubernetes,
        Provider::Kuma,
        Provider::Linkerd,
        Provider::Nginx,
        Provider::Osm,
        Provider::Skipper,
        Provider::SmiV1alpha1,
        Provider::SmiV1alpha2,
        Provider::SmiV1alpha3,
        Provider::Traefik,
    ];
}

/// A provider with the target mesh that the `smi:<version>:<mesh>` forms of `--mesh-provider`
/// name (Flagger's `smi:v1alpha1:istio`); `spec.provider` never has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshProvider {
    pub provider: Provider,
    /// The mesh behind an SMI TrafficSplit, for example `istio`.
    pub mesh: Option<String>,
}

impl From<Provider> for MeshProvider {
    fn from(provider: Provider) -> Self {
        Self { provider, mesh: None }
    }
}

impl fmt::Display for MeshProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mesh {
            Some(mesh) => write!(f, "{}:{mesh}", self.provider.as_str()),
            None => f.write_str(self.provider.as_str()),
        }
    }
}

/// A provider string that names no provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a traffic provider: use one of {list} (the smi ones may add a mesh, as in smi:v1alpha1:istio)",
    list = Provider::ALL.map(Provider::as_str).join(", ")
)]
pub struct UnknownProvider(pub String);

impl FromStr for MeshProvider {
    type Err = UnknownProvider;

    /// Exactly the enum strings, plus `smi:<version>:<mesh>`. Unlike Flagger, an unknown string
    /// (a bare `gatewayapi` included) is an error, not a silent fall-back to Istio.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(provider) = Provider::ALL.into_iter().find(|p| p.as_str() == text) {
            return Ok(provider.into());
        }
        for provider in [
            Provider::SmiV1alpha1,
            Provider::SmiV1alpha2,
            Provider::SmiV1alpha3,
        ] {
            if let Some(mesh) = text
                .strip_prefix(provider.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .filter(|mesh| !mesh.is_empty() && !mesh.contains(':'))
            {
                return Ok(Self {
                    provider,
                    mesh: Some(mesh.to_string()),
                });
            }
        }
        Err(UnknownProvider(text.to_string()))
    }
}

/// Whether and how a provider copies traffic to the canary (`analysis.mirror`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mirroring {
    None,
    /// All traffic is copied; `analysis.mirrorWeight` cannot be honoured.
    Full,
    /// `analysis.mirrorWeight` percent of the traffic is copied.
    WithPercentage,
}

/// What a provider's router can do. Validation and the rollout plan read it; nothing else
/// asks which provider a Canary has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Traffic is split by weight (canary strategy). Without it, only Blue/Green.
    pub weighted: bool,
    /// Requests are matched on headers and cookies (A/B testing, `analysis.match`).
    pub header_match: bool,
    /// Traffic can be mirrored to the canary.
    pub mirroring: Mirroring,
    /// Users can be pinned to the canary by a cookie (`analysis.sessionAffinity`).
    pub session_affinity: bool,
    /// The router needs the apex, primary and canary Services (all but Knative).
    pub services: bool,
}

impl Capabilities {
    /// Weighted canary and Blue/Green only, with the generated Services.
    pub const WEIGHTED: Capabilities = Capabilities {
        weighted: true,
        header_match: false,
        mirroring: Mirroring::None,
        session_affinity: false,
        services: true,
    };
    /// Weights and A/B header matching, no mirroring or affinity.
    pub const WEIGHTED_AB: Capabilities = Capabilities {
        header_match: true,
        ..Self::WEIGHTED
    };
    /// Everything: weights, A/B, mirroring with a percentage, session affinity.
    pub const ALL: Capabilities = Capabilities {
        weighted: true,
        header_match: true,
        mirroring: Mirroring::WithPercentage,
        session_affinity: true,
        services: true,
    };
    /// Blue/Green by switching the apex Service (the `kubernetes` provider).
    pub const BLUE_GREEN_ONLY: Capabilities = Capabilities {
        weighted: false,
        ..Self::WEIGHTED
    };
}

/// Why a Canary cannot run on its provider: the field that asks for too much, and a message
/// saying what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub field: &'static str,
    pub message: String,
}

/// The first thing `spec` asks of `provider` that its `capabilities` do not cover, if any.
/// A Canary refused here gets a condition and an event and no rollout, instead of (as under
/// Flagger) an A/B run that sends all users to the canary.
pub fn refusal(spec: &CanarySpec, provider: &MeshProvider, capabilities: Capabilities) -> Option<Refusal> {
    let analysis = spec.analysis()?;
    let refuse = |field: &'static str, what: &str, fix: &str| Refusal {
        field,
        message: format!(
            "{field} asks for {what}, which the {provider} provider cannot do: {fix}, or use a provider that can (see docs/providers.md)"
        ),
    };
    if analysis.match_.as_ref().is_some_and(|m| !m.is_empty()) && !capabilities.header_match {
        return Some(refuse(
            "spec.analysis.match",
            "A/B testing by header or cookie",
            "remove spec.analysis.match to run Blue/Green",
        ));
    }
    if analysis.mirror == Some(true) && capabilities.mirroring == Mirroring::None {
        return Some(refuse(
            "spec.analysis.mirror",
            "traffic mirroring",
            "remove spec.analysis.mirror",
        ));
    }
    if analysis.mirror == Some(true)
        && analysis.mirror_weight.is_some_and(|w| w > 0 && w < 100)
        && capabilities.mirroring != Mirroring::WithPercentage
    {
        return Some(refuse(
            "spec.analysis.mirrorWeight",
            "mirroring part of the traffic",
            "remove spec.analysis.mirrorWeight to mirror all of it",
        ));
    }
    if analysis
        .session_affinity
        .as_ref()
        .is_some_and(|a| !a.cookie_name.is_empty())
        && !capabilities.session_affinity
    {
        return Some(refuse(
            "spec.analysis.sessionAffinity",
            "session affinity",
            "remove spec.analysis.sessionAffinity",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, HttpMatchRequest, SessionAffinity};

    fn spec(analysis: CanaryAnalysis) -> CanarySpec {
        CanarySpec {
            analysis: Some(analysis),
            ..Default::default()
        }
    }

    #[test]
    fn every_enum_string_parses_to_itself() {
        for provider in Provider::ALL {
            let parsed: MeshProvider = provider.as_str().parse().expect("enum string");
            assert_eq!(parsed, provider.into());
            assert_eq!(parsed.to_string(), provider.as_str());
            // The serde name of the CRD enum is the same string.
            assert_eq!(
                serde_json::to_value(provider).expect("serialize"),
                serde_json::Value::String(provider.as_str().into())
            );
        }
    }

    #[test]
    fn smi_forms_carry_a_mesh() {
        let parsed: MeshProvider = "smi:v1alpha2:istio".parse().expect("smi with mesh");
        assert_eq!(parsed.provider, Provider::SmiV1alpha2);
        assert_eq!(parsed.mesh.as_deref(), Some("istio"));
        assert_eq!(parsed.to_string(), "smi:v1alpha2:istio");
        for bad in [
            "gatewayapi",
            "smi:v1alpha2:",
            "smi",
            "linkerd:x",
            "Istio",
            "",
            "smi:v9:istio",
        ] {
            let err = bad.parse::<MeshProvider>().expect_err(bad);
            assert!(err.to_string().contains("smi:v1alpha3"), "{err}");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let provider = MeshProvider::from(Provider::Linkerd);
        let ab = spec(CanaryAnalysis {
            iterations: Some(5),
            match_: Some(vec![HttpMatchRequest::default()]),
            ..Default::default()
        });
        let refused = refusal(&ab, &provider, Capabilities::WEIGHTED).expect("no header matching");
        assert_eq!(refused.field, "spec.analysis.match");
        assert!(
            refused.message.contains("linkerd provider"),
            "{}",
            refused.message
        );
        assert_eq!(refusal(&ab, &provider, Capabilities::WEIGHTED_AB), None);

        let mirror = spec(CanaryAnalysis {
            mirror: Some(true),
            ..Default::default()
        });
        assert_eq!(
            refusal(&mirror, &provider, Capabilities::WEIGHTED_AB).map(|r| r.field),
            Some("spec.analysis.mirror")
        );
        let partial = spec(CanaryAnalysis {
            mirror: Some(true),
            mirror_weight: Some(20),
            ..Default::default()
        });
        let full_only = Capabilities {
            mirroring: Mirroring::Full,
            ..Capabilities::WEIGHTED
        };
        assert_eq!(
            refusal(&partial, &provider, full_only).map(|r| r.field),
            Some("spec.analysis.mirrorWeight")
        );
        assert_eq!(refusal(&partial, &provider, Capabilities::ALL), None);

        let sticky = spec(CanaryAnalysis {
            session_affinity: Some(Box::new(SessionAffinity {
                cookie_name: "c".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(
            refusal(&sticky, &provider, Capabilities::WEIGHTED_AB).map(|r| r.field),
            Some("spec.analysis.sessionAffinity")
        );
        assert_eq!(refusal(&sticky, &provider, Capabilities::ALL), None);
        assert_eq!(
            refusal(
                &spec(CanaryAnalysis::default()),
                &provider,
                Capabilities::BLUE_GREEN_ONLY
            ),
            None
        );
    }
}
