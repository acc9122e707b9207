//! The builtin metrics `request-success-rate` (percent) and `request-duration` (milliseconds,
//! p99): which traffic provider's Prometheus series they are computed from (the observer),
//! their queries, and how a value is judged against `thresholdRange` / `threshold`.

use regex::Regex;

use crate::api::{Canary, CanaryMetric, TargetKind};

use super::template::TemplateContext;

/// Name of the builtin success-rate metric (percent of non-5xx responses).
pub const REQUEST_SUCCESS_RATE: &str = "request-success-rate";
/// Name of the builtin duration metric (p99 in milliseconds).
pub const REQUEST_DURATION: &str = "request-duration";

/// Whether `name` is one of the builtin metrics.
pub fn is_builtin(name: &str) -> bool {
    name == REQUEST_SUCCESS_RATE || name == REQUEST_DURATION
}

/// The string the observer is chosen from (Flagger's `runBuiltinMetricChecks`): the
/// controller's mesh provider, overridden by `spec.provider` unless the controller runs with
/// Linkerd; Service targets (other than Knative) get a `:service` suffix.
pub fn metrics_provider(canary: &Canary, mesh_provider: &str) -> String {
    let mut provider = if mesh_provider.contains("crossover") {
        "crossover".to_string()
    } else {
        mesh_provider.to_string()
    };
    if let Some(own) = canary.spec.provider {
        provider = if mesh_provider.contains("linkerd") {
            "linkerd".to_string()
        } else {
            own.as_str().to_string()
        };
    }
    let target = &canary.spec.target_ref;
    if target.kind == TargetKind::Service && !target.api_version.starts_with("serving.knative.dev") {
        provider.push_str(":service");
    }
    provider
}

/// Whose metrics the builtin queries read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observer {
    AppMesh,
    Linkerd,
    Istio,
    Contour,
    Gloo,
    Nginx,
    /// `kubernetes` and Gateway API: the app's own `http_request_duration_seconds` histogram.
    Http,
    Skipper,
    Traefik,
    Osm,
    Kuma,
    Apisix,
    Knative,
}

impl Observer {
    /// Flagger's observer factory. Anything it does not know (including `<provider>:service`
    /// for most providers) reads Istio's metrics, as Flagger does.
    pub fn for_provider(provider: &str) -> Self {
        match provider {
            p if p.starts_with("appmesh") => Self::AppMesh,
            "linkerd" => Self::Linkerd,
            "istio" => Self::Istio,
            "contour" => Self::Contour,
            p if p.starts_with("gloo") => Self::Gloo,
            "nginx" => Self::Nginx,
            p if p == "kubernetes" || p.starts_with("gatewayapi") => Self::Http,
            "skipper" => Self::Skipper,
            "traefik" => Self::Traefik,
            "osm" => Self::Osm,
            "kuma" => Self::Kuma,
            "apisix" => Self::Apisix,
            "knative" => Self::Knative,
            _ => Self::Istio,
        }
    }

    /// The query template of `metric` (a builtin name), or None for other names.
    pub fn query(self, metric: &str) -> Option<&'static str> {
        let (success, duration) = match self {
            Self::AppMesh => (APPMESH_SUCCESS, APPMESH_DURATION),
            Self::Linkerd => (LINKERD_SUCCESS, LINKERD_DURATION),
            Self::Istio => (ISTIO_SUCCESS, ISTIO_DURATION),
            Self::Contour => (CONTOUR_SUCCESS, CONTOUR_DURATION),
            Self::Gloo => (GLOO_SUCCESS, GLOO_DURATION),
            Self::Nginx => (NGINX_SUCCESS, NGINX_DURATION),
            Self::Http => (HTTP_SUCCESS, HTTP_DURATION),
            Self::Skipper => (SKIPPER_SUCCESS, SKIPPER_DURATION),
            Self::Traefik => (TRAEFIK_SUCCESS, TRAEFIK_DURATION),
            Self::Osm => (OSM_SUCCESS, OSM_DURATION),
            Self::Kuma => (KUMA_SUCCESS, KUMA_DURATION),
            Self::Apisix => (APISIX_SUCCESS, APISIX_DURATION),
            Self::Knative => (KNATIVE_SUCCESS, KNATIVE_DURATION),
        };
        match metric {
            REQUEST_SUCCESS_RATE => Some(success),
            REQUEST_DURATION => Some(duration),
            _ => None,
        }
    }

    /// The template values this observer's queries see: Skipper route names replace every
    /// non-word character with `_`, so the values must too.
    pub fn context(self, context: &TemplateContext) -> TemplateContext {
        if self != Self::Skipper {
            return context.clone();
        }
        let non_word = Regex::new(r"\W").expect("a valid regex");
        let encode = |s: &str| non_word.replace_all(s, "_").into_owned();
        TemplateContext {
            name: encode(&context.name),
            namespace: encode(&context.namespace),
            target: encode(&context.target),
            service: encode(&context.service),
            ingress: encode(&context.ingress),
            ..context.clone()
        }
    }

    /// A `request-duration` query value in whole milliseconds: the generic HTTP histogram is
    /// in seconds, every other observer's query already yields milliseconds. Truncated, as
    /// Flagger converts to a `time.Duration` of whole milliseconds.
    pub fn duration_ms(self, value: f64) -> f64 {
        match self {
            Self::Http => (value * 1000.0).trunc(),
            _ => value.trunc(),
        }
    }
}

const ISTIO_SUCCESS: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;
const ISTIO_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;

const LINKERD_SUCCESS: &str = r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}])) / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) * 100"#;
const LINKERD_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))"#;

const NGINX_SUCCESS: &str = r#"sum(rate(nginx_ingress_controller_requests{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!="",status!~"5.*"}[{{ interval }}])) / sum(rate(nginx_ingress_controller_requests{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""}[{{ interval }}])) * 100"#;
const NGINX_DURATION: &str = r#"sum(rate(nginx_ingress_controller_response_duration_seconds_sum{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""}[{{ interval }}])) / sum(rate(nginx_ingress_controller_response_duration_seconds_count{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""}[{{ interval }}])) * 1000"#;

const HTTP_SUCCESS: &str = r#"sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*"}[{{ interval }}])) / sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) * 100"#;
const HTTP_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) by (le))"#;

const CONTOUR_SUCCESS: &str = r#"sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"}[{{ interval }}])) * 100"#;
const CONTOUR_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"}[{{ interval }}])) by (le))"#;

const GLOO_SUCCESS: &str = r#"sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"}[{{ interval }}])) * 100"#;
const GLOO_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"}[{{ interval }}])) by (le))"#;

const APPMESH_SUCCESS: &str = r#"sum(rate(envoy_cluster_upstream_rq{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) * 100"#;
const APPMESH_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) by (le))"#;

const KUMA_SUCCESS: &str = r#"sum(rate(envoy_cluster_upstream_rq{service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"}[{{ interval }}])) * 100"#;
const KUMA_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"}[{{ interval }}])) by (le))"#;

const KNATIVE_SUCCESS: &str = r#"sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}/{{ route }}",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}/{{ route }}"}[{{ interval }}])) * 100"#;
const KNATIVE_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"{{ namespace }}/{{ route }}"}[{{ interval }}])) by (le))"#;

const OSM_SUCCESS: &str = r#"sum(rate(osm_request_total{destination_namespace="{{ namespace }}",destination_kind="Deployment",destination_name="{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(osm_request_total{destination_namespace="{{ namespace }}",destination_kind="Deployment",destination_name="{{ target }}"}[{{ interval }}])) * 100"#;
const OSM_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(osm_request_duration_ms_bucket{destination_namespace="{{ namespace }}",destination_kind="Deployment",destination_name="{{ target }}"}[{{ interval }}])) by (le))"#;

const TRAEFIK_SUCCESS: &str = r#"sum(rate(traefik_service_request_duration_seconds_bucket{service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd",code!~"5..",le="+Inf"}[{{ interval }}])) / sum(rate(traefik_service_request_duration_seconds_bucket{service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd",le="+Inf"}[{{ interval }}])) * 100"#;
const TRAEFIK_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"}[{{ interval }}])) by (le)) * 1000"#;

const SKIPPER_SUCCESS: &str = r#"sum(rate(skipper_response_duration_seconds_bucket{route=~"kube(ew)?_{{ namespace }}__{{ ingress }}_canary__.*__{{ service }}_canary(_[0-9]+)?",code!~"5..",le="+Inf"}[{{ interval }}])) / sum(rate(skipper_response_duration_seconds_bucket{route=~"kube(ew)?_{{ namespace }}__{{ ingress }}_canary__.*__{{ service }}_canary(_[0-9]+)?",le="+Inf"}[{{ interval }}])) * 100"#;
const SKIPPER_DURATION: &str = r#"sum(rate(skipper_serve_route_duration_seconds_sum{route=~"kube(ew)?_{{ namespace }}__{{ ingress }}_canary__.*__{{ service }}_canary(_[0-9]+)?"}[{{ interval }}])) / sum(rate(skipper_serve_route_duration_seconds_count{route=~"kube(ew)?_{{ namespace }}__{{ ingress }}_canary__.*__{{ service }}_canary(_[0-9]+)?"}[{{ interval }}])) * 1000"#;

const APISIX_SUCCESS: &str = r#"sum(rate(apisix_http_status{route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+",code!~"5.."}[{{ interval }}])) / sum(rate(apisix_http_status{route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"}[{{ interval }}])) * 100"#;
const APISIX_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(apisix_http_latency_bucket{type=~"request",route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"}[{{ interval }}])) by (le))"#;

/// How a metric's value is judged and worded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `request-success-rate`, percent; deprecated `threshold` is a minimum.
    SuccessRate,
    /// `request-duration`, whole milliseconds; deprecated `threshold` is a maximum.
    Duration,
    /// An inline `query` or a MetricTemplate; deprecated `threshold` is a maximum.
    Custom,
}

impl Check {
    /// The check for a builtin metric name.
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            REQUEST_SUCCESS_RATE => Some(Self::SuccessRate),
            REQUEST_DURATION => Some(Self::Duration),
            _ => None,
        }
    }
}

/// Judges `value` of `metric` against its `thresholdRange`, else its deprecated `threshold`
/// (unset counts as 0, as in Flagger). Returns Flagger's "Halt ..." event message when the
/// value is out of range; `subject` is `<canary>.<namespace>`.
pub fn evaluate(check: Check, metric: &CanaryMetric, subject: &str, value: f64) -> Option<String> {
    let (min, max) = match &metric.threshold_range {
        Some(range) => (range.min, range.max),
        None => {
            let threshold = metric.threshold.unwrap_or(0.0);
            match check {
                Check::SuccessRate => (Some(threshold), None),
                Check::Duration | Check::Custom => (None, Some(threshold)),
            }
        }
    };
    let what = match check {
        Check::SuccessRate => "success rate",
        Check::Duration => "request duration",
        Check::Custom => metric.name.as_str(),
    };
    let halt = |op: &str, bound: f64| match check {
        Check::SuccessRate => format!("Halt {subject} advancement {what} {value:.2}% {op} {bound}%"),
        Check::Duration => format!(
            "Halt {subject} advancement {what} {value}ms {op} {}ms",
            bound.trunc()
        ),
        Check::Custom => format!("Halt {subject} advancement {what} {value:.2} {op} {bound}"),
    };
    // Durations compare in whole milliseconds, as Flagger's time.Duration comparison does.
    let bound_value = |bound: f64| match check {
        Check::Duration => bound.trunc(),
        _ => bound,
    };
    if let Some(min) = min
        && value < bound_value(min)
    {
        return Some(halt("<", min));
    }
    if let Some(max) = max
        && value > bound_value(max)
    {
        return Some(halt(">", max));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::analysis::template::render;
    use crate::api::{CanarySpec, Provider, TargetRef, ThresholdRange};

    fn canary(provider: Option<Provider>, kind: TargetKind, api_version: &str) -> Canary {
        let mut canary = Canary::new(
            "podinfo",
            CanarySpec {
                provider,
                target_ref: TargetRef {
                    api_version: api_version.into(),
                    kind,
                    name: "podinfo".into(),
                },
                ..Default::default()
            },
        );
        canary.metadata.namespace = Some("test".into());
        canary
    }

    fn deployment(provider: Option<Provider>) -> Canary {
        canary(provider, TargetKind::Deployment, "apps/v1")
    }

    #[test]
    fn mesh_provider_is_the_default() {
        assert_eq!(metrics_provider(&deployment(None), "istio"), "istio");
        assert_eq!(
            metrics_provider(&deployment(None), "gatewayapi:v1"),
            "gatewayapi:v1"
        );
    }

    #[test]
    fn canary_provider_overrides_the_mesh_provider() {
        assert_eq!(
            metrics_provider(&deployment(Some(Provider::Kubernetes)), "istio"),
            "kubernetes"
        );
        assert_eq!(
            metrics_provider(&deployment(Some(Provider::GatewayApiV1beta1)), "nginx"),
            "gatewayapi:v1beta1"
        );
    }

    #[test]
    fn linkerd_mesh_provider_wins_over_the_canary_provider() {
        assert_eq!(
            metrics_provider(&deployment(Some(Provider::Nginx)), "linkerd"),
            "linkerd"
        );
        assert_eq!(metrics_provider(&deployment(None), "smi:linkerd"), "smi:linkerd");
    }

    #[test]
    fn crossover_mesh_provider_reads_crossover() {
        assert_eq!(metrics_provider(&deployment(None), "smi:crossover"), "crossover");
    }

    #[test]
    fn service_targets_get_the_service_suffix_but_knative_does_not() {
        let svc = canary(Some(Provider::Kubernetes), TargetKind::Service, "v1");
        assert_eq!(metrics_provider(&svc, "istio"), "kubernetes:service");
        let knative = canary(
            Some(Provider::Knative),
            TargetKind::Service,
            "serving.knative.dev/v1",
        );
        assert_eq!(metrics_provider(&knative, "istio"), "knative");
    }

    #[test]
    fn observer_factory_follows_flagger() {
        let cases = [
            ("appmesh", Observer::AppMesh),
            ("appmesh:v1beta2", Observer::AppMesh),
            ("linkerd", Observer::Linkerd),
            ("istio", Observer::Istio),
            ("contour", Observer::Contour),
            ("gloo", Observer::Gloo),
            ("nginx", Observer::Nginx),
            ("kubernetes", Observer::Http),
            ("gatewayapi:v1", Observer::Http),
            ("gatewayapi:v1beta1", Observer::Http),
            ("gatewayapi:v1:service", Observer::Http),
            ("skipper", Observer::Skipper),
            ("traefik", Observer::Traefik),
            ("osm", Observer::Osm),
            ("kuma", Observer::Kuma),
            ("apisix", Observer::Apisix),
            ("knative", Observer::Knative),
            // Flagger's fallbacks: unknown strings and most `:service` forms read Istio.
            ("kubernetes:service", Observer::Istio),
            ("linkerd:service", Observer::Istio),
            ("smi:v1alpha3", Observer::Istio),
            ("crossover", Observer::Istio),
            ("", Observer::Istio),
        ];
        for (provider, observer) in cases {
            assert_eq!(Observer::for_provider(provider), observer, "{provider}");
        }
    }

    fn ctx() -> TemplateContext {
        TemplateContext {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            interval: "1m".into(),
            variables: Default::default(),
        }
    }

    #[test]
    fn every_builtin_query_renders_without_leftover_placeholders() {
        let observers = [
            Observer::AppMesh,
            Observer::Linkerd,
            Observer::Istio,
            Observer::Contour,
            Observer::Gloo,
            Observer::Nginx,
            Observer::Http,
            Observer::Skipper,
            Observer::Traefik,
            Observer::Osm,
            Observer::Kuma,
            Observer::Apisix,
            Observer::Knative,
        ];
        for observer in observers {
            for metric in [REQUEST_SUCCESS_RATE, REQUEST_DURATION] {
                let query = observer.query(metric).expect("builtin");
                let rendered = render(query, &observer.context(&ctx())).expect("renders");
                assert!(!rendered.contains("{{"), "{observer:?} {metric}: {rendered}");
                assert!(rendered.contains("[1m]"), "{observer:?} {metric}: {rendered}");
                assert!(rendered.contains("test"), "{observer:?} {metric}: {rendered}");
                assert_eq!(
                    rendered.matches('(').count(),
                    rendered.matches(')').count(),
                    "{observer:?} {metric}: {rendered}"
                );
            }
            assert_eq!(observer.query("my-metric"), None);
        }
    }

    #[test]
    fn istio_success_rate_query_is_flaggers() {
        let query = render(Observer::Istio.query(REQUEST_SUCCESS_RATE).unwrap(), &ctx()).unwrap();
        assert_eq!(
            query,
            r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) * 100"#
        );
    }

    #[test]
    fn http_duration_query_is_flaggers() {
        let query = render(Observer::Http.query(REQUEST_DURATION).unwrap(), &ctx()).unwrap();
        assert_eq!(
            query,
            r#"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{kubernetes_namespace="test",kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[1m])) by (le))"#
        );
    }

    #[test]
    fn skipper_encodes_non_word_characters() {
        let mut context = ctx();
        context.namespace = "my-ns".into();
        context.ingress = "web.ing".into();
        context.service = "web-svc".into();
        let query = render(
            Observer::Skipper.query(REQUEST_SUCCESS_RATE).unwrap(),
            &Observer::Skipper.context(&context),
        )
        .unwrap();
        assert!(
            query.contains(r#"route=~"kube(ew)?_my_ns__web_ing_canary__.*__web_svc_canary(_[0-9]+)?""#),
            "{query}"
        );
        // Other observers see the values unchanged.
        assert_eq!(Observer::Istio.context(&context), context);
    }

    #[test]
    fn http_durations_are_seconds_others_milliseconds() {
        assert_eq!(Observer::Http.duration_ms(0.2505), 250.0);
        assert_eq!(Observer::Istio.duration_ms(250.9), 250.0);
        assert_eq!(Observer::Linkerd.duration_ms(0.4), 0.0);
    }

    fn metric(name: &str, threshold: Option<f64>, min: Option<f64>, max: Option<f64>) -> CanaryMetric {
        CanaryMetric {
            name: name.into(),
            threshold,
            threshold_range: (min.is_some() || max.is_some()).then_some(ThresholdRange { min, max }),
            ..Default::default()
        }
    }

    #[test]
    fn success_rate_below_min_halts_with_flaggers_message() {
        let m = metric(REQUEST_SUCCESS_RATE, None, Some(99.0), None);
        assert_eq!(
            evaluate(Check::SuccessRate, &m, "podinfo.test", 91.2).as_deref(),
            Some("Halt podinfo.test advancement success rate 91.20% < 99%")
        );
        assert_eq!(evaluate(Check::SuccessRate, &m, "podinfo.test", 99.0), None);
        assert_eq!(evaluate(Check::SuccessRate, &m, "podinfo.test", 100.0), None);
    }

    #[test]
    fn success_rate_above_max_halts() {
        let m = metric(REQUEST_SUCCESS_RATE, None, None, Some(50.5));
        assert_eq!(
            evaluate(Check::SuccessRate, &m, "a.b", 60.0).as_deref(),
            Some("Halt a.b advancement success rate 60.00% > 50.5%")
        );
    }

    #[test]
    fn deprecated_success_threshold_is_a_minimum() {
        let m = metric(REQUEST_SUCCESS_RATE, Some(95.0), None, None);
        assert_eq!(
            evaluate(Check::SuccessRate, &m, "a.b", 94.999).as_deref(),
            Some("Halt a.b advancement success rate 95.00% < 95%")
        );
        assert_eq!(evaluate(Check::SuccessRate, &m, "a.b", 95.0), None);
    }

    #[test]
    fn threshold_range_wins_over_deprecated_threshold() {
        let m = metric(REQUEST_SUCCESS_RATE, Some(99.0), Some(90.0), None);
        assert_eq!(evaluate(Check::SuccessRate, &m, "a.b", 95.0), None);
    }

    #[test]
    fn duration_above_max_halts_in_milliseconds() {
        let m = metric(REQUEST_DURATION, None, None, Some(500.0));
        assert_eq!(
            evaluate(Check::Duration, &m, "podinfo.test", 501.0).as_deref(),
            Some("Halt podinfo.test advancement request duration 501ms > 500ms")
        );
        assert_eq!(evaluate(Check::Duration, &m, "podinfo.test", 500.0), None);
    }

    #[test]
    fn duration_bounds_are_whole_milliseconds() {
        let m = metric(REQUEST_DURATION, None, Some(10.9), Some(500.7));
        assert_eq!(evaluate(Check::Duration, &m, "a.b", 10.0), None);
        assert_eq!(
            evaluate(Check::Duration, &m, "a.b", 9.0).as_deref(),
            Some("Halt a.b advancement request duration 9ms < 10ms")
        );
        assert_eq!(
            evaluate(Check::Duration, &m, "a.b", 501.0).as_deref(),
            Some("Halt a.b advancement request duration 501ms > 500ms")
        );
    }

    #[test]
    fn deprecated_duration_threshold_is_a_maximum() {
        let m = metric(REQUEST_DURATION, Some(100.0), None, None);
        assert_eq!(
            evaluate(Check::Duration, &m, "a.b", 101.0).as_deref(),
            Some("Halt a.b advancement request duration 101ms > 100ms")
        );
        assert_eq!(evaluate(Check::Duration, &m, "a.b", 100.0), None);
    }

    #[test]
    fn custom_metric_range_messages_name_the_metric() {
        let m = metric("error-rate", None, Some(1.0), Some(5.0));
        assert_eq!(
            evaluate(Check::Custom, &m, "a.b", 5.126).as_deref(),
            Some("Halt a.b advancement error-rate 5.13 > 5")
        );
        assert_eq!(
            evaluate(Check::Custom, &m, "a.b", 0.5).as_deref(),
            Some("Halt a.b advancement error-rate 0.50 < 1")
        );
        assert_eq!(evaluate(Check::Custom, &m, "a.b", 3.0), None);
    }

    #[test]
    fn custom_metric_without_any_threshold_fails_above_zero_as_in_flagger() {
        let m = metric("errors", None, None, None);
        assert_eq!(evaluate(Check::Custom, &m, "a.b", 0.0), None);
        assert_eq!(
            evaluate(Check::Custom, &m, "a.b", 0.01).as_deref(),
            Some("Halt a.b advancement errors 0.01 > 0")
        );
    }

    #[test]
    fn success_rate_without_any_threshold_passes() {
        let m = metric(REQUEST_SUCCESS_RATE, None, None, None);
        assert_eq!(evaluate(Check::SuccessRate, &m, "a.b", 0.0), None);
    }

    #[test]
    fn check_kind_of_builtin_names() {
        assert_eq!(Check::builtin(REQUEST_SUCCESS_RATE), Some(Check::SuccessRate));
        assert_eq!(Check::builtin(REQUEST_DURATION), Some(Check::Duration));
        assert_eq!(Check::builtin("latency"), None);
        assert!(is_builtin(REQUEST_DURATION) && !is_builtin("request_duration"));
    }
}
