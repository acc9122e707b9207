//! The timeline chart of a rollout, as inline SVG: canary weight over time, and each metric
//! check's value against its threshold. Pure: points in, markup out.

use std::fmt::Write as _;

use super::view::escape;

/// One step of a rollout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Seconds since the epoch.
    pub at: i64,
    pub weight: i32,
    /// Metric name and value (None when the query returned nothing).
    pub checks: Vec<(String, Option<f64>)>,
}

/// A metric's pass range, from `spec.analysis.metrics[].thresholdRange` / `threshold`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Threshold {
    pub name: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

const W: f64 = 640.0;
const H: f64 = 160.0;
const PAD: f64 = 36.0;

/// Parses the `Flaggit-Checks` trailer: `name=value:pass, name=none:fail`.
pub fn parse_checks(text: &str) -> Vec<(String, Option<f64>)> {
    crate::gitops::message::parse_checks(text)
        .into_iter()
        .map(|c| (c.name, c.value))
        .collect()
}

/// The charts of `steps` (oldest first): weight, then one chart per metric.
pub fn render(steps: &[Step], max_weight: i32, thresholds: &[Threshold]) -> String {
    if steps.is_empty() {
        return "<p>No rollout steps recorded yet.</p>".into();
    }
    let mut out = String::new();
    let weights: Vec<(i64, Option<f64>)> = steps.iter().map(|s| (s.at, Some(f64::from(s.weight)))).collect();
    out.push_str(&line_chart(
        "Canary weight (%)",
        &weights,
        0.0,
        f64::from(max_weight.max(1)),
        None,
        "weight",
    ));
    let mut names: Vec<String> = thresholds.iter().map(|t| t.name.clone()).collect();
    for step in steps {
        for (name, _) in &step.checks {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    for name in names {
        let values: Vec<(i64, Option<f64>)> = steps
            .iter()
            .filter_map(|s| s.checks.iter().find(|(n, _)| *n == name).map(|(_, v)| (s.at, *v)))
            .collect();
        if values.is_empty() {
            continue;
        }
        let threshold = thresholds.iter().find(|t| t.name == name);
        let lines: Vec<f64> = threshold
            .map(|t| t.min.into_iter().chain(t.max).collect())
            .unwrap_or_default();
        let all = values.iter().filter_map(|(_, v)| *v).chain(lines);
        let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo > hi {
            (0.0, 1.0)
        } else if (hi - lo).abs() < f64::EPSILON {
            (lo - 1.0, hi + 1.0)
        } else {
            let margin = (hi - lo) * 0.1;
            (lo - margin, hi + margin)
        };
        let title = match threshold {
            Some(t) => format!("{name} (pass: {})", range_text(t)),
            None => name.clone(),
        };
        out.push_str(&line_chart(&title, &values, lo, hi, threshold, "metric"));
    }
    out
}

fn range_text(t: &Threshold) -> String {
    match (t.min, t.max) {
        (Some(min), Some(max)) => format!("{min} to {max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => "any".into(),
    }
}

fn line_chart(
    title: &str,
    values: &[(i64, Option<f64>)],
    lo: f64,
    hi: f64,
    range: Option<&Threshold>,
    class: &str,
) -> String {
    let thresholds: Vec<f64> = range
        .map(|t| t.min.into_iter().chain(t.max).collect())
        .unwrap_or_default();
    let t0 = values.first().map_or(0, |v| v.0);
    let t1 = values.last().map_or(0, |v| v.0).max(t0 + 1);
    let x = |t: i64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD / 2.0 - (v - lo) / (hi - lo) * (H - PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure class="chart"><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        escape(title),
        escape(&format!("{title}: {} points", values.len()))
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{PAD}" y1="{}" x2="{}" y2="{}"/><text class="tick" x="2" y="{}">{}</text><text class="tick" x="2" y="{}">{}</text>"#,
        H - PAD / 2.0,
        W - PAD,
        H - PAD / 2.0,
        y(hi) + 4.0,
        number(hi),
        y(lo),
        number(lo)
    );
    for t in &thresholds {
        let _ = write!(
            svg,
            r#"<line class="threshold" x1="{PAD}" y1="{0:.1}" x2="{1}" y2="{0:.1}"><title>threshold {2}</title></line>"#,
            y(*t),
            W - PAD,
            number(*t)
        );
    }
    let points: Vec<String> = values
        .iter()
        .filter_map(|(t, v)| v.map(|v| format!("{:.1},{:.1}", x(*t), y(v))))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline class="{class}" points="{}"/>"#,
        points.join(" ")
    );
    for (t, v) in values {
        if let Some(v) = v {
            let outside =
                range.is_some_and(|r| r.min.is_some_and(|m| *v < m) || r.max.is_some_and(|m| *v > m));
            let _ = write!(
                svg,
                r#"<circle class="{}" cx="{:.1}" cy="{:.1}" r="3"><title>{}: {}</title></circle>"#,
                if outside { "dot fail" } else { "dot" },
                x(*t),
                y(*v),
                escape(&time_text(*t)),
                number(*v)
            );
        }
    }
    svg.push_str("</svg></figure>");
    svg
}

fn number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        format!("{v:.2}")
    }
}

/// `2026-11-22 10:00:00` (UTC) for seconds since the epoch.
pub fn time_text(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_trailers_parse() {
        assert_eq!(
            parse_checks("request-success-rate=99.5:pass, latency=none:fail"),
            vec![
                ("request-success-rate".to_string(), Some(99.5)),
                ("latency".to_string(), None)
            ]
        );
        assert!(parse_checks("").is_empty());
    }

    #[test]
    fn no_steps_says_so() {
        assert!(render(&[], 50, &[]).contains("No rollout steps"));
    }

    #[test]
    fn weights_and_metrics_are_drawn_against_thresholds() {
        let steps = vec![
            Step {
                at: 100,
                weight: 10,
                checks: vec![("latency".into(), Some(300.0))],
            },
            Step {
                at: 160,
                weight: 20,
                checks: vec![("latency".into(), Some(700.0))],
            },
        ];
        let thresholds = vec![Threshold {
            name: "latency".into(),
            min: None,
            max: Some(500.0),
        }];
        let svg = render(&steps, 50, &thresholds);
        assert_eq!(svg.matches("<svg").count(), 2, "{svg}");
        assert!(svg.contains("Canary weight"));
        assert!(svg.contains("latency (pass: at most 500)"));
        assert!(svg.contains(r#"class="threshold""#));
        // Weight 10 of 50 at the left edge, 20 at the right edge.
        assert!(svg.contains("points=\"36.0,"), "{svg}");
        assert!(svg.contains("604.0,"), "{svg}");
        assert!(svg.contains("700"));
    }

    #[test]
    fn a_value_above_a_maximum_is_marked() {
        let steps = vec![Step {
            at: 0,
            weight: 10,
            checks: vec![("latency".into(), Some(900.0))],
        }];
        let thresholds = vec![Threshold {
            name: "latency".into(),
            min: None,
            max: Some(500.0),
        }];
        assert_eq!(render(&steps, 50, &thresholds).matches("dot fail").count(), 1);
    }

    #[test]
    fn a_metric_outside_its_range_is_marked() {
        let steps = vec![
            Step {
                at: 0,
                weight: 10,
                checks: vec![("rate".into(), Some(90.0))],
            },
            Step {
                at: 10,
                weight: 20,
                checks: vec![("rate".into(), Some(99.5))],
            },
        ];
        let thresholds = vec![Threshold {
            name: "rate".into(),
            min: Some(99.0),
            max: Some(100.0),
        }];
        let svg = render(&steps, 50, &thresholds);
        assert_eq!(svg.matches("dot fail").count(), 1, "{svg}");
    }
}
