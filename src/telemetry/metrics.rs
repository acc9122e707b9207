//! The Prometheus metrics registry. Names and labels follow Flagger's `flagger_*` metrics so
//! existing dashboards and alerts keep working; flaggit's own metrics are `flaggit_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::gitops::dora::{self, Release, Scope};

/// `version`, `mesh_provider`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub mesh_provider: String,
}

/// `namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

/// `name`, `namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
}

/// `workload`, `namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WeightLabels {
    pub workload: String,
    pub namespace: String,
}

/// `name`, `namespace`, `metric`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnalysisLabels {
    pub name: String,
    pub namespace: String,
    pub metric: String,
}

/// `name`, `namespace`, `deployment_strategy`, `analysis_status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub name: String,
    pub namespace: String,
    pub deployment_strategy: String,
    pub analysis_status: String,
}

/// `cluster`, `namespace`, `name`: one canary's DORA figures; the overall figure has an empty
/// `namespace` and `name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoraLabels {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
}

/// `result` of a reconcile: `ok` or an error category (a short static string).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every metric the controller exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub info: Family<InfoLabels, Gauge>,
    pub canary_total: Family<NamespaceLabels, Gauge>,
    pub canary_status: Family<CanaryLabels, Gauge>,
    pub canary_weight: Family<WeightLabels, Gauge>,
    pub canary_duration: Family<CanaryLabels, Histogram>,
    pub metric_analysis: Family<AnalysisLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub successes: Family<OutcomeLabels, Counter>,
    pub failures: Family<OutcomeLabels, Counter>,
    pub leader: Gauge,
    pub reconciles: Family<ResultLabels, Counter>,
    /// The Git writer's figures.
    pub git: GitMetrics,
}

/// What the Git writer reports: records waiting for the remote, how long pushes take, pushes
/// the remote refused, and when the last write failed.
#[derive(Clone, Debug)]
pub struct GitMetrics {
    /// Records read from the outboxes and not yet on the remote.
    pub records_pending: Gauge,
    /// Seconds per push, rejected ones included.
    pub push_duration: Histogram,
    pub pushes: Counter,
    pub rejected: Counter,
    /// Unix time of the last failed write; 0 until one fails. The age is `time() - this`.
    pub last_error: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// DORA figures read back from the branches pushed to.
    pub dora: DoraMetrics,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The DORA figures of this cluster's canaries over [`DORA_WINDOW`], recomputed from the
/// config repos' history after each push to a branch (see `docs/metrics.md`).
#[derive(Clone, Debug, Default)]
pub struct DoraMetrics {
    pub deployments: Family<DoraLabels, FloatGauge>,
    pub deployments_per_day: Family<DoraLabels, FloatGauge>,
    pub lead_time: Family<DoraLabels, FloatGauge>,
    pub change_failure_rate: Family<DoraLabels, FloatGauge>,
    pub time_to_restore: Family<DoraLabels, FloatGauge>,
    /// The releases of each repository branch, so several repositories add up.
    releases: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<Release>>>>,
}

/// The window of the exported DORA figures: 30 days.
pub const DORA_WINDOW: i64 = 30 * 86_400;

impl DoraMetrics {
    /// Replaces the releases read from `branch` (a repository and branch) and sets every
    /// gauge from all branches' releases of `cluster` ("" in the single-cluster layout),
    /// as of `now`.
    pub fn update(&self, branch: &str, releases: Vec<Release>, cluster: &str, now: i64) {
        let all: Vec<Release> = {
            let mut known = self.releases.lock().unwrap_or_else(|e| e.into_inner());
            known.insert(branch.to_string(), releases);
            known.values().flatten().cloned().collect()
        };
        let scope = Scope {
            window: DORA_WINDOW,
            cluster: Some(cluster.to_string()),
            canaries: Vec::new(),
        };
        let report = dora::report(&all, &scope, now);
        for family in [
            &self.deployments,
            &self.deployments_per_day,
            &self.lead_time,
            &self.change_failure_rate,
            &self.time_to_restore,
        ] {
            family.clear();
        }
        let rows = report
            .canaries
            .iter()
            .map(|r| (r.canary.split_once('/').unwrap_or(("", &r.canary)), &r.figures))
            .chain([(("", ""), &report.overall)]);
        for ((namespace, name), f) in rows {
            let labels = DoraLabels {
                cluster: cluster.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            self.deployments.get_or_create(&labels).set(f.deployments as f64);
            self.deployments_per_day
                .get_or_create(&labels)
                .set(f.deployments_per_day);
            // A figure without samples is left out, not exported as 0 (which would read as
            // "instant" or "never fails").
            if let Some(t) = f.lead_time {
                self.lead_time.get_or_create(&labels).set(t as f64);
            }
            if let Some(rate) = f.change_failure_rate {
                self.change_failure_rate.get_or_create(&labels).set(rate);
            }
            if let Some(t) = f.time_to_restore {
                self.time_to_restore.get_or_create(&labels).set(t as f64);
            }
        }
    }
}

impl Default for GitMetrics {
    fn default() -> Self {
        Self {
            records_pending: Gauge::default(),
            push_duration: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            pushes: Counter::default(),
            rejected: Counter::default(),
            last_error: Gauge::default(),
            dora: DoraMetrics::default(),
        }
    }
}

impl GitMetrics {
    /// Notes a failed write now.
    pub fn failed_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_error.set(now);
    }
}

impl Metrics {
    /// Registers all metrics and sets `flagger_info`.
    pub fn new(mesh_provider: &str) -> Self {
        let mut registry = Registry::default();
        let info = Family::<InfoLabels, Gauge>::default();
        let canary_total = Family::<NamespaceLabels, Gauge>::default();
        let canary_status = Family::<CanaryLabels, Gauge>::default();
        let canary_weight = Family::<WeightLabels, Gauge>::default();
        let canary_duration = Family::<CanaryLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.5, 12))
        });
        let metric_analysis = Family::default();
        let successes = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<OutcomeLabels, Counter>::default();
        let leader = Gauge::default();
        let reconciles = Family::<ResultLabels, Counter>::default();

        let flagger = registry.sub_registry_with_prefix("flagger");
        flagger.register(
            "info",
            "Flagger version and mesh provider information",
            info.clone(),
        );
        flagger.register(
            "canary_total",
            "Total number of canary object",
            canary_total.clone(),
        );
        flagger.register(
            "canary_status",
            "Last canary analysis result (0 progressing, 1 done, 2 failed)",
            canary_status.clone(),
        );
        flagger.register(
            "canary_weight",
            "The virtual service destination weight current value",
            canary_weight.clone(),
        );
        flagger.register(
            "canary_duration_seconds",
            "Seconds spent performing canary analysis",
            canary_duration.clone(),
        );
        flagger.register(
            "canary_metric_analysis",
            "Last canary analysis result per metric",
            metric_analysis.clone(),
        );
        flagger.register("canary_successes", "Total canary successes", successes.clone());
        flagger.register("canary_failures", "Total canary failures", failures.clone());

        let own = registry.sub_registry_with_prefix("flaggit");
        own.register(
            "leader",
            "Whether this replica holds the leader lease: 1 leader, 0 standby",
            leader.clone(),
        );
        own.register("reconciles", "Canary reconciles by result", reconciles.clone());
        let git = GitMetrics::default();
        own.register(
            "git_records_pending",
            "Rollout records read from the outboxes and not yet on the Git remote",
            git.records_pending.clone(),
        );
        own.register(
            "git_push_duration_seconds",
            "Seconds per push to a Git remote, rejected pushes included",
            git.push_duration.clone(),
        );
        own.register(
            "git_pushes",
            "Pushes of rollout records that reached a Git remote",
            git.pushes.clone(),
        );
        own.register(
            "git_rejected_pushes",
            "Pushes a Git remote refused (someone pushed first, or a branch rule)",
            git.rejected.clone(),
        );
        own.register(
            "git_last_error_timestamp_seconds",
            "Unix time of the last failed write to Git (0: none since start); its age is time() minus it",
            git.last_error.clone(),
        );

        own.register(
            "dora_deployments",
            "Promotions in the last 30 days (DORA), per canary; empty name: all canaries",
            git.dora.deployments.clone(),
        );
        own.register(
            "dora_deployment_frequency_per_day",
            "Promotions per day over the last 30 days (DORA deployment frequency)",
            git.dora.deployments_per_day.clone(),
        );
        own.register(
            "dora_lead_time_seconds",
            "Median seconds from the change commit to its promotion over the last 30 days (DORA lead time for changes)",
            git.dora.lead_time.clone(),
        );
        own.register(
            "dora_change_failure_rate",
            "Rolled-back releases over ended releases in the last 30 days (DORA change failure rate, 0 to 1)",
            git.dora.change_failure_rate.clone(),
        );
        own.register(
            "dora_time_to_restore_seconds",
            "Median seconds from a rollback to the canary's next promotion over the last 30 days (DORA time to restore)",
            git.dora.time_to_restore.clone(),
        );

        info.get_or_create(&InfoLabels {
            version: crate::VERSION.to_string(),
            mesh_provider: mesh_provider.to_string(),
        })
        .set(1);

        Self {
            registry,
            info,
            canary_total,
            canary_status,
            canary_weight,
            canary_duration,
            metric_analysis,
            successes,
            failures,
            leader,
            reconciles,
            git,
        }
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_flagger_names() {
        let metrics = Metrics::new("istio");
        metrics
            .canary_total
            .get_or_create(&NamespaceLabels {
                namespace: "test".into(),
            })
            .set(2);
        let text = metrics.encode();
        assert!(text.contains(r#"flagger_info{version=""#), "{text}");
        assert!(text.contains(r#"mesh_provider="istio"} 1"#), "{text}");
        assert!(
            text.contains(r#"flagger_canary_total{namespace="test"} 2"#),
            "{text}"
        );
        assert!(text.contains("# TYPE flaggit_leader gauge"), "{text}");
        metrics.git.rejected.inc();
        metrics.git.push_duration.observe(0.2);
        metrics.git.failed_now();
        let text = metrics.encode();
        for name in [
            "flaggit_git_records_pending 0",
            "flaggit_git_pushes_total 0",
            "flaggit_git_rejected_pushes_total 1",
            "flaggit_git_push_duration_seconds_count 1",
            "# TYPE flaggit_git_last_error_timestamp_seconds gauge",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }

    #[test]
    fn dora_figures_are_gauges_per_canary_and_overall() {
        let metrics = Metrics::new("kubernetes");
        let now = 1_780_000_000;
        let release =
            |canary: &str, outcome: &str, at: i64, change: Option<i64>, restored: Option<i64>| Release {
                canary: canary.into(),
                cluster: "prod".into(),
                revision: format!("r{at}"),
                outcome: outcome.into(),
                at: now - at,
                change: change.map(|c| ("c".to_string(), now - c)),
                restored_after: restored,
            };
        metrics.git.dora.update(
            "repo-a#main",
            vec![
                release("test/podinfo", "RolledBack", 7_200, Some(9_000), None),
                release("test/podinfo", "Promoted", 3_600, Some(5_400), Some(3_600)),
            ],
            "prod",
            now,
        );
        // Another repository adds up; another cluster's releases are not this controller's.
        let mut elsewhere = release("test/web", "Promoted", 600, Some(1_200), None);
        let mut foreign = release("test/web", "Promoted", 600, Some(900), None);
        foreign.cluster = "dev".into();
        elsewhere.revision = "w".into();
        metrics
            .git
            .dora
            .update("repo-b#main", vec![elsewhere, foreign], "prod", now);
        let text = metrics.encode();
        for line in [
            r#"flaggit_dora_deployments{cluster="prod",namespace="test",name="podinfo"} 1"#,
            r#"flaggit_dora_deployments{cluster="prod",namespace="",name=""} 2"#,
            r#"flaggit_dora_change_failure_rate{cluster="prod",namespace="test",name="podinfo"} 0.5"#,
            r#"flaggit_dora_change_failure_rate{cluster="prod",namespace="",name=""} 0.3333333333333333"#,
            r#"flaggit_dora_lead_time_seconds{cluster="prod",namespace="test",name="podinfo"} 1800"#,
            r#"flaggit_dora_lead_time_seconds{cluster="prod",namespace="test",name="web"} 600"#,
            r#"flaggit_dora_time_to_restore_seconds{cluster="prod",namespace="test",name="podinfo"} 3600"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains(
                r#"flaggit_dora_time_to_restore_seconds{cluster="prod",namespace="test",name="web"}"#
            )
        );
    }
}
