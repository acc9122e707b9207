//! Metric analysis: the metric providers (Prometheus first), MetricTemplate rendering with
//! the template variables, the builtin `request-success-rate` / `request-duration` queries of
//! each traffic provider, and threshold ranges. [`provider_for`] is the only place that
//! matches on the metric provider type.

pub use crate::rollout::CheckResult;
