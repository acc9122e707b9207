//! The analysis settings of a Canary with Flagger's defaults applied: what the state machine
//! reads instead of the raw spec.

use std::time::Duration;

use crate::api::{CanarySpec, Capabilities, Mirroring};

/// How a release is rolled out (Flagger's `DeploymentStrategy()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Traffic shifted by weight steps.
    Canary,
    /// Requests matching `analysis.match` go to the canary for `iterations` checks.
    AbTesting,
    /// The canary is checked `iterations` times, then all traffic switches at once.
    BlueGreen,
}

impl Strategy {
    /// The name Flagger uses in the `deployment_strategy` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::AbTesting => "ab-testing",
            Self::BlueGreen => "blue-green",
        }
    }
}

/// Flagger's default analysis interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Flagger's shortest analysis interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Iterations Flagger forces for the `kubernetes` provider (Blue/Green only) when none are set.
const KUBERNETES_ITERATIONS: i32 = 10;

/// The analysis of one Canary, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub strategy: Strategy,
    pub interval: Duration,
    pub threshold: i32,
    pub iterations: i32,
    pub step_weight: i32,
    pub step_weights: Vec<i32>,
    pub max_weight: i32,
    pub step_weight_promotion: i32,
    pub mirror: bool,
    pub skip_analysis: bool,
    /// The provider cannot shift traffic by weight (the `kubernetes` provider): Blue/Green
    /// only, with the apex Service switched at promotion.
    pub blue_green_only: bool,
    /// Target kind, for messages ("New Deployment detected").
    pub kind: &'static str,
    /// Canary name, namespace and target name, for messages.
    pub name: String,
    pub namespace: String,
    pub target: String,
}

impl Plan {
    /// The plan of `spec` on a provider that can do `capabilities`; `min_interval` is the
    /// shortest interval allowed (Flagger: 10 s). What the provider cannot do is refused
    /// before a plan is made (`api::refusal`); the plan only drops what it need not do.
    pub fn new(
        spec: &CanarySpec,
        name: &str,
        namespace: &str,
        capabilities: Capabilities,
        min_interval: Duration,
    ) -> Self {
        let analysis = spec.analysis();
        let get = |f: fn(&crate::api::CanaryAnalysis) -> Option<i32>| analysis.and_then(f).unwrap_or(0);
        let blue_green_only = !capabilities.weighted;
        let mut iterations = get(|a| a.iterations);
        let has_match = analysis
            .and_then(|a| a.match_.as_ref())
            .is_some_and(|m| !m.is_empty());
        if blue_green_only && iterations < 1 {
            iterations = KUBERNETES_ITERATIONS;
        }
        let strategy = match (iterations > 0, has_match && capabilities.header_match) {
            (true, true) => Strategy::AbTesting,
            (true, false) => Strategy::BlueGreen,
            (false, _) => Strategy::Canary,
        };
        let step_weights = analysis.and_then(|a| a.step_weights.clone()).unwrap_or_default();
        let mut max_weight = match analysis.and_then(|a| a.max_weight) {
            Some(max) if max > 0 => max.min(100),
            _ => 100,
        };
        if let Some(last) = step_weights.last() {
            max_weight = max_weight.min(*last);
        }
        let threshold = get(|a| a.threshold);
        Self {
            strategy,
            interval: analysis
                .and_then(|a| a.interval.as_deref())
                .and_then(parse_duration)
                .unwrap_or(DEFAULT_INTERVAL)
                .max(min_interval),
            threshold: if threshold > 0 { threshold } else { 1 },
            iterations,
            step_weight: get(|a| a.step_weight),
            step_weights,
            max_weight,
            step_weight_promotion: get(|a| a.step_weight_promotion),
            mirror: analysis.and_then(|a| a.mirror).unwrap_or(false)
                && capabilities.mirroring != Mirroring::None,
            skip_analysis: spec.skip_analysis.unwrap_or(false) || analysis.is_none(),
            blue_green_only,
            kind: spec.target_ref.kind.as_str(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            target: spec.target_ref.name.clone(),
        }
    }

    /// The weight added at the next step from `weight` (Flagger's `nextStepWeight`).
    pub fn next_step(&self, weight: i32) -> i32 {
        if self.step_weight > 0 || self.step_weights.is_empty() {
            return self.step_weight;
        }
        let max_step = 100 - weight;
        if max_step <= 0 {
            return 1;
        }
        self.step_weights
            .iter()
            .find(|step| **step > weight)
            .map(|step| (step - weight).min(max_step))
            .unwrap_or(max_step)
    }

    /// `<name>.<namespace>`, as Flagger writes a canary in messages.
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// `<target>.<namespace>`.
    pub fn target_id(&self) -> String {
        format!("{}.{}", self.target, self.namespace)
    }
}

/// Parses Flagger's interval strings: `30s`, `1m`, `1h`, `500ms`, or combinations like
/// `1m30s`. None for anything else.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return None,
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Some(total)
}
