//! Metric analysis against the real API server (MetricTemplates, Secrets) and a real
//! Prometheus scraping the simulated app: templates with variables and credentials, the
//! builtin metrics of the generic HTTP and Istio observers, Flagger's halt messages, and
//! the errors of `verify` and `check_providers`.

use std::collections::BTreeMap;
use std::time::Duration;

use flaggit::analysis::{Analyzer, CheckResult, Settings};
use flaggit::api::{
    Canary, CanaryAnalysis, CanaryMetric, CanarySpec, CrossNamespaceObjectReference, LocalObjectReference,
    MetricProvider, MetricTemplate, MetricTemplateSpec, Provider, TargetRef, ThresholdRange,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::metrics_app::{AuthProxy, metrics_app, prometheus};
use crate::support::{TestNamespace, control_plane, free_port};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    (client, ns)
}

fn canary(namespace: &str, provider: Option<Provider>, metrics: Vec<CanaryMetric>) -> Canary {
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            provider,
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                name: "podinfo".into(),
                ..Default::default()
            },
            analysis: Some(CanaryAnalysis {
                metrics: Some(metrics),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    canary.metadata.namespace = Some(namespace.into());
    canary
}

fn metric(name: &str, min: Option<f64>, max: Option<f64>) -> CanaryMetric {
    CanaryMetric {
        name: name.into(),
        interval: Some("1m".into()),
        threshold_range: Some(ThresholdRange { min, max }),
        ..Default::default()
    }
}

fn template_metric(name: &str, template: &str, variables: &[(&str, &str)], max: f64) -> CanaryMetric {
    CanaryMetric {
        template_ref: Some(CrossNamespaceObjectReference {
            name: template.into(),
            namespace: None,
        }),
        template_variables: Some(
            variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..metric(name, None, Some(max))
    }
}

fn analyzer(client: &Client, mesh_provider: &str) -> Analyzer {
    Analyzer::new(
        client.clone(),
        Settings {
            metrics_server: prometheus().url().to_string(),
            mesh_provider: mesh_provider.into(),
        },
    )
}

async fn create_template(client: &Client, ns: &str, name: &str, provider: MetricProvider, query: &str) {
    let template = MetricTemplate {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: MetricTemplateSpec {
            provider,
            query: query.into(),
        },
        status: None,
    };
    Api::<MetricTemplate>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &template)
        .await
        .expect("MetricTemplate is created");
}

async fn create_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret is created");
}

fn prometheus_at(address: &str, secret: Option<&str>) -> MetricProvider {
    MetricProvider {
        address: Some(address.into()),
        secret_ref: secret.map(|name| LocalObjectReference { name: name.into() }),
        ..Default::default()
    }
}

fn assert_near(result: &CheckResult, expected: f64, tolerance: f64) {
    let value = result.value.expect("the check has a value");
    assert!(
        (value - expected).abs() <= tolerance,
        "{}: {value} is not within {tolerance} of {expected}",
        result.name
    );
}

/// Waits until Prometheus has scraped enough of the workload's traffic for a rate.
async fn wait_for_traffic(ns: &str, workload: &str) {
    let query = format!(
        r#"sum(rate(istio_requests_total{{destination_workload_namespace="{ns}",destination_workload="{workload}"}}[1m])) > 0"#
    );
    prometheus().wait_for_value(&query, WAIT).await;
}

#[tokio::test]
async fn template_with_variables_and_bearer_token_returns_the_apps_value() {
    let (client, ns) = setup("analysis-template").await;
    let n = ns.name.as_str();
    metrics_app().set(n, "podinfo", "podinfo-5f7d8c9b4-abcde", 40.0, 0.25, 30);
    let proxy = AuthProxy::start(prometheus().url(), &[("authorization", "Bearer s3cr3t-token")]);

    create_secret(&client, n, "prom-auth", &[("token", "s3cr3t-token")]).await;
    create_secret(&client, n, "prom-wrong", &[("token", "not-the-token")]).await;
    let query = r#"100 * sum(rate(istio_requests_total{destination_workload_namespace="{{ namespace }}",
        destination_workload="{{ target }}", response_code="{{ variables.code }}"}[{{ interval }}]))
        / sum(rate(istio_requests_total{destination_workload_namespace="{{ namespace }}",
        destination_workload="{{ target }}"}[{{ interval }}]))"#;
    create_template(
        &client,
        n,
        "code-share",
        prometheus_at(&proxy.url(), Some("prom-auth")),
        query,
    )
    .await;
    create_template(
        &client,
        n,
        "code-share-wrong",
        prometheus_at(&proxy.url(), Some("prom-wrong")),
        query,
    )
    .await;
    wait_for_traffic(n, "podinfo").await;

    // The template comes first in the list but runs after the builtin and inline checks, as
    // in Flagger.
    let good = canary(
        n,
        Some(Provider::Istio),
        vec![
            template_metric("error-share", "code-share", &[("code", "500")], 30.0),
            metric("request-success-rate", Some(50.0), None),
            CanaryMetric {
                query: Some("sum(\n  vector(5)\n)".into()),
                ..metric("inline", None, Some(10.0))
            },
        ],
    );
    let analyzer = analyzer(&client, "istio");
    analyzer.verify(&good).await.expect("verify passes");
    analyzer
        .check_providers(&good)
        .await
        .expect("providers are online");
    let results = analyzer.run(&good).await;
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0].name, "request-success-rate");
    assert_near(&results[0], 75.0, 0.5);
    assert_eq!(
        (results[1].name.as_str(), results[1].value),
        ("inline", Some(5.0))
    );
    assert_eq!(results[2].name, "error-share");
    assert!(
        results.iter().all(|r| r.passed && r.message.is_empty()),
        "{results:?}"
    );
    assert_near(&results[2], 25.0, 0.5);

    // The same template with a threshold the value breaks.
    let strict = canary(
        n,
        None,
        vec![template_metric(
            "error-share",
            "code-share",
            &[("code", "500")],
            10.0,
        )],
    );
    let results = analyzer.run(&strict).await;
    assert_eq!(results.len(), 1);
    assert!(!results[0].passed);
    let expected = format!("Halt podinfo.{n} advancement error-share ");
    assert!(
        results[0].message.starts_with(&expected),
        "{}",
        results[0].message
    );
    assert!(results[0].message.ends_with(" > 10"), "{}", results[0].message);

    // The wrong token is refused by the proxy; the message never quotes a credential.
    let wrong = canary(
        n,
        None,
        vec![template_metric(
            "error-share",
            "code-share-wrong",
            &[("code", "500")],
            30.0,
        )],
    );
    let results = analyzer.run(&wrong).await;
    let message = &results[0].message;
    assert!(!results[0].passed);
    assert!(
        message.starts_with(&format!(
            "Metric query failed for error-share on prometheus {}: HTTP 401",
            proxy.url()
        )),
        "{message}"
    );
    assert!(
        !message.contains("not-the-token") && !message.contains("s3cr3t"),
        "{message}"
    );
    let err = analyzer
        .check_providers(&wrong)
        .await
        .expect_err("401 is not online");
    assert_eq!(err.category(), "MetricProviderUnavailable");

    // A variable the metric does not define is caught by verify, naming it and the metric.
    let missing = canary(
        n,
        None,
        vec![template_metric("error-share", "code-share", &[], 30.0)],
    );
    let err = analyzer
        .verify(&missing)
        .await
        .expect_err("variables.code is missing");
    assert_eq!(err.category(), "RenderMetricQuery");
    let text = err.to_string();
    assert!(
        text.contains("error-share") && text.contains("variables.code"),
        "{text}"
    );
    ns.delete(&client).await;
}

/// Builtin success rate and duration of one provider for a workload with known traffic.
async fn builtin_metrics_match_the_traffic(provider: Option<Provider>, mesh_provider: &str, prefix: &str) {
    let (client, ns) = setup(prefix).await;
    let n = ns.name.as_str();
    metrics_app().set(n, "podinfo", "podinfo-7d9f8c6b5-x2x4z", 30.0, 0.1, 120);
    metrics_app().set(n, "podinfo", "podinfo-7d9f8c6b5-k8s7q", 30.0, 0.1, 120);
    // Another workload in the namespace must not leak into podinfo's numbers.
    metrics_app().set(n, "other", "other-6c5b4a3d2-abcde", 30.0, 0.9, 900);
    wait_for_traffic(n, "podinfo").await;

    let c = canary(
        n,
        provider,
        vec![
            metric("request-success-rate", Some(80.0), None),
            metric("request-duration", None, Some(500.0)),
        ],
    );
    let analyzer = analyzer(&client, mesh_provider);
    analyzer.verify(&c).await.expect("verify passes");
    analyzer.check_providers(&c).await.expect("Prometheus is online");
    let results = analyzer.run(&c).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|r| r.passed), "{results:?}");
    assert_near(&results[0], 90.0, 0.5);
    assert_near(&results[1], 120.0, 1.0);
    ns.delete(&client).await;
}

#[tokio::test]
async fn builtin_metrics_of_gateway_api_read_the_generic_http_histogram() {
    builtin_metrics_match_the_traffic(Some(Provider::GatewayApiV1), "istio", "analysis-gwapi").await;
}

#[tokio::test]
async fn builtin_metrics_of_kubernetes_read_the_generic_http_histogram() {
    builtin_metrics_match_the_traffic(Some(Provider::Kubernetes), "istio", "analysis-kube").await;
}

#[tokio::test]
async fn builtin_metrics_of_istio_read_istio_metrics() {
    builtin_metrics_match_the_traffic(None, "istio", "analysis-istio").await;
}

#[tokio::test]
async fn failing_success_rate_halts_with_flaggers_message() {
    let (client, ns) = setup("analysis-halt").await;
    let n = ns.name.as_str();
    metrics_app().set(n, "podinfo", "podinfo-5d8f7c9b6-q1w2e", 50.0, 0.3, 40);
    wait_for_traffic(n, "podinfo").await;

    let c = canary(
        n,
        Some(Provider::GatewayApiV1),
        vec![
            metric("request-success-rate", Some(99.0), None),
            metric("request-duration", None, Some(500.0)),
        ],
    );
    let results = analyzer(&client, "istio").run(&c).await;
    assert_eq!(results.len(), 1, "stops at the first failure: {results:?}");
    let result = &results[0];
    assert!(!result.passed);
    assert_near(result, 70.0, 0.5);
    let value = result.value.expect("value");
    assert_eq!(
        result.message,
        format!("Halt podinfo.{n} advancement success rate {value:.2}% < 99%")
    );

    // A duration over its maximum halts with the duration message.
    let slow = canary(
        n,
        Some(Provider::GatewayApiV1),
        vec![metric("request-duration", None, Some(20.0))],
    );
    let results = analyzer(&client, "istio").run(&slow).await;
    assert_eq!(
        results[0].message,
        format!("Halt podinfo.{n} advancement request duration 40ms > 20ms")
    );
    ns.delete(&client).await;
}

#[tokio::test]
async fn no_traffic_gives_the_no_values_message() {
    let (client, ns) = setup("analysis-quiet").await;
    let n = ns.name.as_str();
    let c = canary(n, None, vec![metric("request-success-rate", Some(99.0), None)]);
    let results = analyzer(&client, "istio").run(&c).await;
    assert_eq!(results.len(), 1);
    assert!(!results[0].passed);
    assert_eq!(results[0].value, None);
    assert_eq!(
        results[0].message,
        format!(
            "Halt advancement no values found for istio metric request-success-rate probably podinfo.{n} is not \
             receiving traffic"
        )
    );

    // Traffic that stopped: the rates over a short window drop to 0/0 = NaN, also no values.
    metrics_app().set(n, "podinfo", "podinfo-5d8f7c9b6-z9x8c", 20.0, 0.0, 10);
    wait_for_traffic(n, "podinfo").await;
    metrics_app().stop(n, "podinfo", "podinfo-5d8f7c9b6-z9x8c");
    let mut short = metric("request-success-rate", Some(99.0), None);
    short.interval = Some("3s".into());
    let c = canary(n, Some(Provider::Kubernetes), vec![short]);
    let started = std::time::Instant::now();
    loop {
        let results = analyzer(&client, "istio").run(&c).await;
        if results[0]
            .message
            .starts_with("Halt advancement no values found for kubernetes metric")
        {
            break;
        }
        assert!(started.elapsed() < WAIT, "traffic never stopped: {results:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ns.delete(&client).await;
}

#[tokio::test]
async fn missing_template_or_secret_fails_verify_naming_it() {
    let (client, ns) = setup("analysis-missing").await;
    let n = ns.name.as_str();
    let analyzer = analyzer(&client, "istio");

    let c = canary(
        n,
        None,
        vec![
            metric("request-success-rate", Some(99.0), None),
            template_metric("latency", "no-such-template", &[], 1.0),
        ],
    );
    let err = analyzer.verify(&c).await.expect_err("the template is missing");
    assert_eq!(err.category(), "MetricTemplateNotFound");
    assert_eq!(
        err.to_string(),
        format!(
            "spec.analysis.metrics[1].templateRef: MetricTemplate {n}/no-such-template not found: create it or \
             fix the reference"
        )
    );

    create_template(
        &client,
        n,
        "needs-secret",
        prometheus_at(prometheus().url(), Some("nope")),
        "vector(1)",
    )
    .await;
    let c = canary(n, None, vec![template_metric("one", "needs-secret", &[], 1.0)]);
    let err = analyzer.verify(&c).await.expect_err("the secret is missing");
    assert_eq!(err.category(), "MetricSecretNotFound");
    assert!(err.to_string().contains(&format!("Secret {n}/nope")), "{err}");

    // A Secret without the keys Prometheus needs.
    create_secret(&client, n, "nope", &[("user", "x")]).await;
    let err = analyzer.verify(&c).await.expect_err("the secret lacks keys");
    assert_eq!(err.category(), "InvalidMetricProvider");
    assert!(err.to_string().contains("`token`"), "{err}");

    // A metric that is neither builtin nor has a query or template.
    let c = canary(n, None, vec![metric("latency", None, Some(1.0))]);
    let err = analyzer.verify(&c).await.expect_err("nothing to run");
    assert!(
        err.to_string().starts_with("spec.analysis.metrics[0] `latency`"),
        "{err}"
    );
    let results = analyzer.run(&c).await;
    assert_eq!(results[0].message, err.to_string());
    ns.delete(&client).await;
}

#[tokio::test]
async fn check_providers_names_an_address_where_nothing_listens() {
    let (client, ns) = setup("analysis-offline").await;
    let n = ns.name.as_str();
    let address = format!("http://127.0.0.1:{}", free_port());
    let analyzer = Analyzer::new(
        client.clone(),
        Settings {
            metrics_server: address.clone(),
            mesh_provider: "istio".into(),
        },
    );
    let c = canary(n, None, vec![metric("request-success-rate", Some(99.0), None)]);
    let err = analyzer.check_providers(&c).await.expect_err("nothing listens");
    assert_eq!(err.category(), "MetricProviderUnavailable");
    assert!(
        err.to_string().starts_with(&format!(
            "prometheus at {address} is not available: request failed"
        )),
        "{err}"
    );

    // The same for a template's provider; the run reports the failed query with the address.
    create_template(&client, n, "offline", prometheus_at(&address, None), "vector(1)").await;
    let mut c = canary(n, None, vec![template_metric("one", "offline", &[], 1.0)]);
    let err = analyzer.check_providers(&c).await.expect_err("nothing listens");
    assert!(err.to_string().contains(&address), "{err}");
    let results = analyzer.run(&c).await;
    assert!(
        results[0]
            .message
            .starts_with(&format!("Metric query failed for one on prometheus {address}: ")),
        "{}",
        results[0].message
    );

    // spec.metricsServer overrides --metrics-server for builtin metrics.
    c.spec.metrics_server = Some(prometheus().url().to_string());
    c.spec
        .analysis
        .as_mut()
        .and_then(|a| a.metrics.as_mut())
        .expect("metrics")[0] = metric("request-success-rate", Some(99.0), None);
    analyzer
        .check_providers(&c)
        .await
        .expect("spec.metricsServer is online");
    ns.delete(&client).await;
}
