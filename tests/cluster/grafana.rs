//! The Grafana dashboard (manifests/grafana/flaggit-dashboard.json) against real data: a
//! controller runs a failed then a successful release while the test Prometheus scrapes its
//! `/metrics` and the simulated traffic; every template variable and every panel query, with
//! the variables substituted as Grafana would, must parse and return data.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use flaggit::api::{CanaryPhase, Provider};
use serde_json::Value;

use crate::git_remote::{BareRepo, GitDaemon, TempDir};
use crate::metrics_app::{metrics_app, prometheus};
use crate::rollout::{Rig, canary_of, stepping, success_rate_where};
use crate::support::repo;

/// What `$__rate_interval` becomes: wide enough to cover the whole test.
const RATE_INTERVAL: &str = "5m";

fn dashboard() -> Value {
    let path = repo().join("manifests/grafana/flaggit-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard is readable");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every (panel title, PromQL) of the dashboard, rows included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            out.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                expr.to_owned(),
            ));
        }
    }
    out
}

/// Grafana's interpolation of the variables this dashboard uses.
fn substitute(query: &str, namespace: &str, canary: &str) -> String {
    query
        .replace("${namespace}", namespace)
        .replace("$namespace", namespace)
        .replace("${canary}", canary)
        .replace("$canary", canary)
        .replace("$__rate_interval", RATE_INTERVAL)
}

/// The instant-query result of `query`: the parse error or the series.
async fn instant(query: &str) -> Result<Vec<Value>, String> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query", prometheus().url()),
        &[("query", query)],
    )
    .expect("valid query URL");
    let answer: Value = reqwest::get(url)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if answer["status"] != "success" {
        return Err(format!("{}: {}", answer["errorType"], answer["error"]));
    }
    Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The finite values of `query`'s series, waiting (scrapes come every second) until there is
/// at least one.
async fn values(title: &str, query: &str) -> Vec<f64> {
    let start = Instant::now();
    loop {
        let result = instant(query).await;
        let series = result
            .clone()
            .unwrap_or_else(|e| panic!("panel {title:?}: {query} does not parse: {e}"));
        let found: Vec<f64> = series
            .iter()
            .filter_map(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
            .filter(|v| v.is_finite())
            .collect();
        if !found.is_empty() {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "panel {title:?}: {query} returns no data: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The values `label_values(<selector>, <label>)` offers, or None if `query` is not that.
async fn label_values(query: &str) -> Option<BTreeSet<String>> {
    let inner = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    let series = instant(selector.trim())
        .await
        .expect("the variable's selector parses");
    Some(
        series
            .iter()
            .filter_map(|s| s["metric"][label.trim()].as_str().map(str::to_owned))
            .collect(),
    )
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "flaggit-canary");
    let names: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["datasource", "namespace", "canary"]);
    let queries = panel_queries(&d);
    assert!(queries.len() >= 20, "{queries:#?}");
    for (title, expr) in &queries {
        let rest = substitute(expr, "ns", "app");
        assert!(
            !rest.contains('$'),
            "panel {title:?} uses a variable the dashboard lacks: {expr}"
        );
    }
    let mut ids = BTreeSet::new();
    for panel in d["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_i64().expect("numeric id")),
            "duplicate id {}",
            panel["id"]
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {}",
                panel["title"]
            );
        }
    }
}

#[tokio::test]
async fn every_query_returns_data_from_a_real_release() {
    // The controller writes its records to a repository, for the Git panels.
    let repo = BareRepo::new(
        "grafana",
        &std::collections::BTreeMap::from([("README.md", "config\n")]),
    );
    let daemon = GitDaemon::start(&repo.root);
    let cache = TempDir::new("grafana-cache");
    let git_args = [
        "--git-url".to_string(),
        daemon.url(&repo),
        "--git-cache-dir".to_string(),
        cache.path().display().to_string(),
    ];
    let rig = Rig::with_args("grafana", &git_args).await;
    prometheus().scrape(&rig.ns.name, rig.flaggit().port);
    let ns = rig.ns.name.clone();
    // Traffic to the primary too, for its request panels.
    metrics_app().set(
        &ns,
        "podinfo-primary",
        "podinfo-primary-5f6d7c-a1b2c",
        20.0,
        0.0,
        10,
    );

    // A failed release, then a successful one.
    rig.initialize_podinfo(canary_of("podinfo", Provider::Istio, stepping(20, 60)))
        .await;
    rig.failing("podinfo");
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", "< 99"),
            Duration::from_secs(60),
        )
        .await;
    rig.set_image("podinfo", "podinfo:6.0.1").await;
    rig.wait_phase("podinfo", CanaryPhase::Failed, Duration::from_secs(90))
        .await;
    rig.healthy("podinfo").await;
    prometheus()
        .wait_for_value(
            &success_rate_where(&ns, "podinfo", ">= 99"),
            Duration::from_secs(60),
        )
        .await;
    rig.set_image("podinfo", "podinfo:6.0.2").await;
    rig.wait_phase("podinfo", CanaryPhase::Succeeded, Duration::from_secs(90))
        .await;

    let d = dashboard();
    // The variables offer this release.
    for variable in d["templating"]["list"].as_array().expect("templating.list") {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let query = substitute(query, &ns, "podinfo");
        let wanted = if variable["name"] == "namespace" {
            ns.as_str()
        } else {
            "podinfo"
        };
        let start = Instant::now();
        loop {
            let offered = label_values(&query).await.expect("a label_values() query");
            if offered.contains(wanted) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{query} offers {offered:?}, not {wanted}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Every panel query has data; the counters say what happened.
    for (title, expr) in panel_queries(&d) {
        let query = substitute(&expr, &ns, "podinfo");
        let found = values(&title, &query).await;
        let expected = match title.as_str() {
            "Successful releases" | "Failed releases" => Some(1.0),
            "Records pending" => Some(0.0),
            "Primary weight" => Some(100.0),
            "Canary weight" => Some(0.0),
            // Succeeded counts as done.
            "Status" => Some(1.0),
            // From the Git record: the rollback, then the promotion that restored it.
            "Deployments (30 days)" => Some(1.0),
            "Change failure rate" => Some(0.5),
            _ => None,
        };
        if let Some(expected) = expected {
            let start = Instant::now();
            let mut now = found;
            while now != [expected] && start.elapsed() < Duration::from_secs(15) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                now = values(&title, &query).await;
            }
            assert_eq!(now, [expected], "panel {title:?}: {query}");
        }
    }
    metrics_app().stop(&ns, "podinfo-primary", "podinfo-primary-5f6d7c-a1b2c");
    rig.finish().await;
}
