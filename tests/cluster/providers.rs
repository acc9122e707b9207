//! The metric providers that read the cluster, against the real API server: keptn
//! (KeptnMetric values and Analysis verdicts, with the CRDs of tests/fixtures/crds/keptn.yaml)
//! and externalmetrics (the API server without an external metrics adapter), plus a
//! MetricTemplate of a vendor provider run end to end through `Analyzer` with its Secret read
//! from the API server and a loopback stand-in for Datadog.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flaggit::analysis::keptn::Keptn;
use flaggit::analysis::{Analyzer, MetricProvider as _, ProviderContext, QueryError, Settings, provider_for};
use flaggit::api::{
    Canary, CanaryAnalysis, CanaryMetric, CanarySpec, CrossNamespaceObjectReference, LocalObjectReference,
    MetricProvider, MetricProviderType, MetricTemplate, MetricTemplateSpec, TargetRef, ThresholdRange,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::support::{TestNamespace, control_plane, eventually, repo};

fn keptn_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.keptn.sh", "v1beta1", kind),
        plural,
    )
}

/// Installs the Keptn CRDs once per run.
fn install_keptn_crds() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let cp = control_plane();
        let file = repo().join("tests/fixtures/crds/keptn.yaml");
        cp.kubectl_ok(
            &["apply", "--server-side", "-f", file.to_str().expect("utf-8 path")],
            None,
        );
        eventually(
            "the Keptn CRDs to be Established",
            Duration::from_secs(60),
            || {
                cp.kubectl(
                    &[
                        "wait",
                        "--for=condition=Established",
                        "--timeout=10s",
                        "crd/keptnmetrics.metrics.keptn.sh",
                        "crd/analyses.metrics.keptn.sh",
                    ],
                    None,
                )
                .0
                .then_some(())
            },
        );
    });
}

async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let cp = control_plane();
    cp.install_crds();
    install_keptn_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    (client, ns)
}

async fn create_keptn_metric(client: &Client, ns: &str, name: &str, value: Option<&str>) {
    let resource = keptn_resource("KeptnMetric", "keptnmetrics");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let mut metric = DynamicObject::new(name, &resource).within(ns);
    metric.data = serde_json::json!({"spec": {"provider": {"name": "prometheus"}, "query": "sum(up)", "fetchIntervalSeconds": 10}});
    api.create(&PostParams::default(), &metric)
        .await
        .expect("KeptnMetric is created");
    if let Some(value) = value {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"value": value, "rawValue": "eA=="}})),
        )
        .await
        .expect("KeptnMetric status is written");
    }
}

fn keptn_provider(client: &Client) -> Box<dyn flaggit::analysis::MetricProvider> {
    let spec = MetricProvider {
        type_: Some(MetricProviderType::Keptn),
        ..Default::default()
    };
    let context = ProviderContext::for_metric(Some("1m"), client.clone());
    provider_for(&spec, None, "MetricTemplate test/keptn", &context).expect("keptn provider")
}

#[tokio::test]
async fn keptn_metric_values_are_read_from_their_status() {
    let (client, ns) = setup("keptn-metric").await;
    let provider = keptn_provider(&client);
    assert_eq!(provider.is_online().await, Ok(true));

    create_keptn_metric(&client, &ns.name, "latency", Some("42.5")).await;
    create_keptn_metric(&client, &ns.name, "pending", None).await;
    create_keptn_metric(&client, &ns.name, "garbled", Some("fast")).await;

    // Flagger lowercases the query.
    let query = format!("KeptnMetric/{}/Latency\n", ns.name);
    assert_eq!(provider.run_query(&query).await, Ok(42.5));
    let pending = provider
        .run_query(&format!("keptnmetric/{}/pending", ns.name))
        .await;
    assert_eq!(pending, Err(QueryError::NoValues));
    let garbled = provider
        .run_query(&format!("keptnmetric/{}/garbled", ns.name))
        .await
        .expect_err("not a number");
    assert_eq!(garbled.category(), "QueryDecode");
    assert!(garbled.to_string().contains("fast"), "{garbled}");
    let missing = provider
        .run_query(&format!("keptnmetric/{}/nope", ns.name))
        .await
        .expect_err("no such KeptnMetric");
    assert_eq!(
        missing.to_string(),
        format!(
            "NotFound: KeptnMetric {}/nope does not exist: create it or fix the query",
            ns.name
        )
    );
    ns.delete(&client).await;
}

/// Plays Keptn's part: completes every new Analysis in `ns` with `pass`, recording its spec.
fn complete_analyses(
    client: &Client,
    ns: &str,
    pass: bool,
) -> (Arc<Mutex<Vec<DynamicObject>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &keptn_resource("Analysis", "analyses"));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            for analysis in api
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                if analysis.data.pointer("/status/state").is_some() {
                    continue;
                }
                record.lock().expect("not poisoned").push(analysis.clone());
                let status =
                    serde_json::json!({"status": {"state": "Completed", "pass": pass, "warning": false}});
                let _ = api
                    .patch_status(
                        &analysis.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(status),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (seen, task)
}

#[tokio::test]
async fn keptn_analyses_are_created_awaited_and_deleted() {
    let (client, ns) = setup("keptn-analysis").await;
    let provider = keptn_provider(&client);
    let analyses: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &keptn_resource("Analysis", "analyses"));

    let (seen, keptn) = complete_analyses(&client, &ns.name, true);
    let query = format!("analysis/{}/error-budget/5m/workload=podinfo;env=prod", ns.name);
    assert_eq!(provider.run_query(&query).await, Ok(1.0));
    keptn.abort();
    let created = seen.lock().expect("not poisoned").clone();
    assert_eq!(created.len(), 1);
    assert!(
        created[0].name_any().starts_with("error-budget-"),
        "{}",
        created[0].name_any()
    );
    assert_eq!(
        created[0].data["spec"],
        serde_json::json!({
            "analysisDefinition": {"name": "error-budget"},
            "timeframe": {"recent": "5m"},
            "args": {"workload": "podinfo", "env": "prod"},
        })
    );
    assert!(
        analyses
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "deleted after use"
    );

    let (_, keptn) = complete_analyses(&client, &ns.name, false);
    assert_eq!(
        provider
            .run_query(&format!("analysis/{}/error-budget", ns.name))
            .await,
        Ok(0.0)
    );
    keptn.abort();

    // Nobody completes it: a timeout, and the Analysis is still cleaned up.
    let slow = Keptn::new(client.clone()).with_timing(Duration::from_millis(800), Duration::from_millis(100));
    assert_eq!(
        slow.run_query(&format!("analysis/{}/error-budget", ns.name))
            .await,
        Err(QueryError::Timeout(Duration::from_millis(800)))
    );
    assert!(
        analyses
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    ns.delete(&client).await;
}

#[tokio::test]
async fn externalmetrics_without_an_adapter_is_offline_with_the_reason() {
    let (client, ns) = setup("extmetrics").await;
    let spec = MetricProvider {
        type_: Some(MetricProviderType::Externalmetrics),
        ..Default::default()
    };
    let context = ProviderContext::for_metric(None, client.clone());
    let provider = provider_for(&spec, None, "MetricTemplate test/ext", &context).expect("provider");
    // No APIService for external.metrics.k8s.io is registered on the test server.
    let err = provider.is_online().await.expect_err("no adapter");
    assert_eq!(err.category(), "QueryStatus", "{err}");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    assert!(err.to_string().contains("kube-system/dummy-metric"), "{err}");
    let err = provider
        .run_query(&format!("{}/requests?labelSelector=app%3Dpodinfo", ns.name))
        .await
        .expect_err("no adapter");
    assert!(
        err.to_string()
            .contains(&format!("external metric {}/requests", ns.name)),
        "{err}"
    );
    ns.delete(&client).await;
}

/// A loopback stand-in for Datadog's query API that records each request's query string and
/// headers.
async fn fake_datadog(answer: &'static str) -> (String, Arc<Mutex<Vec<(String, axum::http::HeaderMap)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            let uri = request.uri().to_string();
            record
                .lock()
                .expect("not poisoned")
                .push((uri, request.headers().clone()));
            ([(axum::http::header::CONTENT_TYPE, "application/json")], answer)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    (address, seen)
}

#[tokio::test]
async fn a_datadog_template_runs_with_its_secret_and_the_metric_interval() {
    let (client, ns) = setup("datadog").await;
    let (address, seen) = fake_datadog(
        r#"{"status":"ok","series":[{"metric":"errors","pointlist":[[1700000000000.0,0.75],[1700000030000.0,5.0]]}]}"#,
    )
    .await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("datadog".into()),
            namespace: Some(ns.name.clone()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("datadog_api_key".to_string(), "dd-api".to_string()),
            ("datadog_application_key".to_string(), "dd-app".to_string()),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret is created");
    let template = MetricTemplate {
        metadata: ObjectMeta {
            name: Some("error-rate".into()),
            namespace: Some(ns.name.clone()),
            ..Default::default()
        },
        spec: MetricTemplateSpec {
            provider: MetricProvider {
                type_: Some(MetricProviderType::Datadog),
                address: Some(address),
                secret_ref: Some(LocalObjectReference {
                    name: "datadog".into(),
                }),
                ..Default::default()
            },
            query: "sum:errors{service:{{ target }},env:{{ variables.env }}}.as_rate()".into(),
        },
        status: None,
    };
    Api::<MetricTemplate>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &template)
        .await
        .expect("MetricTemplate is created");
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                name: "podinfo".into(),
                ..Default::default()
            },
            analysis: Some(CanaryAnalysis {
                metrics: Some(vec![CanaryMetric {
                    name: "error-rate".into(),
                    interval: Some("30s".into()),
                    threshold_range: Some(ThresholdRange {
                        min: None,
                        max: Some(1.0),
                    }),
                    template_ref: Some(CrossNamespaceObjectReference {
                        name: "error-rate".into(),
                        namespace: None,
                    }),
                    template_variables: Some(BTreeMap::from([("env".to_string(), "prod".to_string())])),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    canary.metadata.namespace = Some(ns.name.clone());
    let analyzer = Analyzer::new(client.clone(), Settings::default());
    analyzer.verify(&canary).await.expect("the template verifies");
    analyzer
        .check_providers(&canary)
        .await
        .expect("Datadog validates the keys");
    let results = analyzer.run(&canary).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0].passed, "{results:?}");
    assert_eq!(results[0].value, Some(0.75));

    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 2, "validate, then query: {seen:?}");
    assert_eq!(seen[0].0, "/api/v1/validate");
    let query = reqwest::Url::parse(&format!("http://x{}", seen[1].0)).expect("uri");
    let params: BTreeMap<String, String> = query.query_pairs().into_owned().collect();
    assert_eq!(query.path(), "/api/v1/query");
    assert_eq!(params["query"], "sum:errors{service:podinfo,env:prod}.as_rate()");
    let window = params["to"].parse::<i64>().expect("to") - params["from"].parse::<i64>().expect("from");
    assert_eq!(window, 300, "ten 30s intervals");
    for (_, headers) in &seen {
        assert_eq!(headers["dd-api-key"], "dd-api");
        assert_eq!(headers["dd-application-key"], "dd-app");
    }
    ns.delete(&client).await;
}
