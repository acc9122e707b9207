//! Simulated mesh telemetry: every ready replica of a Deployment serves a steady stream of
//! requests (as Flagger's load tester sends to a canary), answered 500 half of the time when
//! the Deployment runs a broken image. Exposed at `/metrics` in Istio's shape
//! (`istio_requests_total`, `istio_request_duration_milliseconds`), which the builtin
//! `request-success-rate` and `request-duration` checks of the `istio` provider read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

/// Istio's default request-duration bucket bounds, in milliseconds.
const BOUNDS_MS: [f64; 14] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];
/// Share of a broken image's requests answered 500.
const BROKEN_ERROR_RATIO: f64 = 0.5;

/// How the simulated pods behave.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub rps_per_replica: f64,
    pub latency_ms: u64,
    pub broken_images: Vec<String>,
}

/// What the simulation needs to know of a Deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub available: i32,
    pub images: Vec<String>,
}

impl Workload {
    pub fn of(deployment: &Deployment) -> Self {
        let images = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers.iter().filter_map(|c| c.image.clone()).collect())
            .unwrap_or_default();
        Self {
            namespace: deployment.namespace().unwrap_or_default(),
            name: deployment.name_any(),
            available: deployment
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
            images,
        }
    }
}

/// Requests served so far by one workload.
#[derive(Clone, Debug, Default, PartialEq)]
struct Served {
    ok: f64,
    errors: f64,
    /// Sum of the latencies, in milliseconds.
    latency_sum_ms: f64,
}

/// The counters of every workload seen; they keep their values when it scales to zero, as a
/// Prometheus counter must.
#[derive(Debug)]
pub struct Traffic {
    behaviour: Behaviour,
    served: BTreeMap<(String, String), Served>,
}

impl Traffic {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            served: BTreeMap::new(),
        }
    }

    /// Lets `seconds` of traffic reach the available replicas of `workloads`.
    pub fn advance(&mut self, workloads: &[Workload], seconds: f64) {
        for workload in workloads {
            let served = self
                .served
                .entry((workload.namespace.clone(), workload.name.clone()))
                .or_default();
            let requests = self.behaviour.rps_per_replica * f64::from(workload.available.max(0)) * seconds;
            let broken = workload
                .images
                .iter()
                .any(|i| self.behaviour.broken_images.contains(i));
            let errors = if broken {
                requests * BROKEN_ERROR_RATIO
            } else {
                0.0
            };
            served.ok += requests - errors;
            served.errors += errors;
            served.latency_sum_ms += requests * self.behaviour.latency_ms as f64;
        }
    }

    /// The Prometheus text exposition of every workload's requests.
    pub fn render(&self) -> String {
        let latency = self.behaviour.latency_ms as f64;
        let mut out = String::from("# TYPE istio_requests_total counter\n");
        let labels = |ns: &str, name: &str| {
            format!(
                r#"reporter="destination",destination_workload_namespace="{ns}",destination_workload="{name}""#
            )
        };
        for ((ns, name), s) in &self.served {
            for (code, total) in [("200", s.ok), ("500", s.errors)] {
                let _ = writeln!(
                    out,
                    r#"istio_requests_total{{{},response_code="{code}"}} {total}"#,
                    labels(ns, name)
                );
            }
        }
        out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for ((ns, name), s) in &self.served {
            let labels = labels(ns, name);
            let total = s.ok + s.errors;
            for bound in BOUNDS_MS {
                let count = if latency <= bound { total } else { 0.0 };
                let _ = writeln!(
                    out,
                    r#"istio_request_duration_milliseconds_bucket{{{labels},le="{bound}"}} {count}"#
                );
            }
            let _ = writeln!(
                out,
                r#"istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {total}"#
            );
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_sum{{{labels}}} {}",
                s.latency_sum_ms
            );
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_count{{{labels}}} {total}"
            );
        }
        out
    }
}

/// Serves `GET /metrics` from `traffic` on `listener` until the process stops.
pub async fn serve(listener: tokio::net::TcpListener, traffic: Arc<Mutex<Traffic>>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(exposition))
        .with_state(traffic);
    axum::serve(listener, app).await
}

async fn exposition(State(traffic): State<Arc<Mutex<Traffic>>>) -> String {
    traffic
        .lock()
        .expect("the traffic lock is never held across a panic")
        .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, available: i32, image: &str) -> Workload {
        Workload {
            namespace: "test".into(),
            name: name.into(),
            available,
            images: vec![image.into()],
        }
    }

    fn traffic() -> Traffic {
        Traffic::new(Behaviour {
            rps_per_replica: 10.0,
            latency_ms: 12,
            broken_images: vec!["podinfo:6.0.2".into()],
        })
    }

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))?.rsplit(' ').next()
    }

    #[test]
    fn ready_replicas_serve_and_a_broken_image_fails_half() {
        let mut t = traffic();
        t.advance(
            &[
                workload("podinfo-primary", 2, "podinfo:6.0.1"),
                workload("podinfo", 1, "podinfo:6.0.2"),
            ],
            2.0,
        );
        let text = t.render();
        let total = |name: &str, code: &str| {
            line(
                &text,
                &format!(
                    r#"istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload="{name}",response_code="{code}"}}"#
                ),
            )
        };
        assert_eq!(total("podinfo-primary", "200"), Some("40"));
        assert_eq!(total("podinfo-primary", "500"), Some("0"));
        assert_eq!(total("podinfo", "200"), Some("10"));
        assert_eq!(total("podinfo", "500"), Some("10"));
        assert!(
            text.contains(r#"destination_workload="podinfo",le="10"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"destination_workload="podinfo",le="25"} 20"#),
            "{text}"
        );
    }

    #[test]
    fn counters_keep_their_value_when_scaled_to_zero() {
        let mut t = traffic();
        t.advance(&[workload("podinfo", 2, "podinfo:6.0.1")], 1.0);
        t.advance(&[workload("podinfo", 0, "podinfo:6.0.1")], 5.0);
        let text = t.render();
        assert!(
            text.contains(r#"destination_workload="podinfo",response_code="200"} 20"#),
            "{text}"
        );
    }
}
