//! The plan of a release as its pull request describes it, read from the Canary spec.

use crate::api::Canary;

use super::policy::Policy;
use super::render::{MetricPlan, Release, Strategy, WebhookPlan};

/// The release of `revision` (known as `version`) of `canary`, for the pull request's
/// description and status comment.
pub fn release(canary: &Canary, revision: &str, version: &str) -> Release {
    let spec = &canary.spec;
    let analysis = spec.analysis.as_ref();
    let iterations = analysis.and_then(|a| a.iterations).unwrap_or(0);
    let matches: Vec<String> = analysis
        .and_then(|a| a.match_.as_ref())
        .into_iter()
        .flatten()
        .map(|m| serde_json::to_string(m).unwrap_or_default())
        .collect();
    let strategy = if iterations > 0 && !matches.is_empty() {
        Strategy::ABTesting { iterations, matches }
    } else if iterations > 0 && analysis.and_then(|a| a.mirror).unwrap_or(false) {
        Strategy::Mirroring {
            iterations,
            mirror_weight: analysis.and_then(|a| a.mirror_weight),
        }
    } else if iterations > 0 {
        Strategy::BlueGreen { iterations }
    } else {
        Strategy::Canary {
            weights: weights(
                analysis.and_then(|a| a.step_weights.clone()),
                analysis.and_then(|a| a.step_weight),
                analysis.and_then(|a| a.max_weight),
            ),
        }
    };
    let metrics = analysis
        .and_then(|a| a.metrics.as_ref())
        .into_iter()
        .flatten()
        .map(|m| {
            let (min, max) = match (&m.threshold_range, m.threshold) {
                (Some(range), _) => (range.min, range.max),
                // Builtin checks: a duration has a ceiling, a success rate a floor.
                (None, Some(t)) if m.name == "request-duration" => (None, Some(t)),
                (None, t) => (t, None),
            };
            MetricPlan {
                name: m.name.clone(),
                min,
                max,
                interval: m.interval.clone(),
            }
        })
        .collect();
    let webhooks = analysis
        .and_then(|a| a.webhooks.as_ref())
        .into_iter()
        .flatten()
        .map(|w| WebhookPlan {
            name: w.name.clone(),
            kind: w
                .type_
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "rollout".into()),
        })
        .collect();
    let approvals = spec
        .gitops
        .as_ref()
        .and_then(|g| g.approvals.clone())
        .unwrap_or_default();
    Release {
        namespace: canary.metadata.namespace.clone().unwrap_or_default(),
        name: canary.metadata.name.clone().unwrap_or_default(),
        version: version.to_string(),
        revision: revision.to_string(),
        target: format!("{}/{}", spec.target_ref.kind.as_str(), spec.target_ref.name),
        strategy,
        interval: analysis
            .and_then(|a| a.interval.clone())
            .unwrap_or_else(|| "1m".into()),
        threshold: analysis.and_then(|a| a.threshold).unwrap_or(1),
        metrics,
        webhooks,
        gates: approvals.gates.clone().unwrap_or_default(),
        approvals: Policy::new(&approvals),
        authors: Default::default(),
    }
}

/// The canary weights of a weighted release, in order.
fn weights(step_weights: Option<Vec<i32>>, step: Option<i32>, max: Option<i32>) -> Vec<i32> {
    if let Some(weights) = step_weights.filter(|w| !w.is_empty()) {
        return weights;
    }
    let step = step.unwrap_or(10).max(1);
    let max = max.unwrap_or(50).clamp(step, 100);
    (1..).map(|i| i * step).take_while(|w| *w <= max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_come_from_step_weights_or_step_and_max() {
        assert_eq!(weights(Some(vec![1, 5, 25]), Some(10), Some(50)), [1, 5, 25]);
        assert_eq!(weights(None, Some(20), Some(50)), [20, 40]);
        assert_eq!(weights(None, None, None), [10, 20, 30, 40, 50]);
    }
}
