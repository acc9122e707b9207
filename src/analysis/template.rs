//! Query rendering: the `{{ name }}`, `{{ namespace }}`, ... `{{ variables.<key> }}`
//! placeholders of MetricTemplates and builtin queries, filled from the Canary and its metric.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::{Canary, CanaryMetric};

/// The metric window when a metric sets no `interval` (Flagger's `GetMetricInterval`).
pub const DEFAULT_INTERVAL: &str = "1m";

/// The values a query can refer to (Flagger's `MetricTemplateModel`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateContext {
    /// The Canary's name.
    pub name: String,
    pub namespace: String,
    /// `spec.targetRef.name`.
    pub target: String,
    /// `spec.service.name`, else the target's name.
    pub service: String,
    /// `spec.ingressRef.name`, else the target's name.
    pub ingress: String,
    /// `spec.routeRef.name`, else the target's name.
    pub route: String,
    /// The metric's `interval`, default `1m`.
    pub interval: String,
    /// The metric's `templateVariables`.
    pub variables: BTreeMap<String, String>,
}

impl TemplateContext {
    /// The values for `metric` of `canary`.
    pub fn new(canary: &Canary, metric: &CanaryMetric) -> Self {
        let spec = &canary.spec;
        let target = spec.target_ref.name.clone();
        let or_target = |name: Option<&String>| name.cloned().unwrap_or_else(|| target.clone());
        Self {
            name: canary.name_any(),
            namespace: canary.namespace().unwrap_or_default(),
            service: or_target(spec.service.as_ref().and_then(|s| s.name.as_ref())),
            ingress: or_target(spec.ingress_ref.as_ref().map(|r| &r.name)),
            route: or_target(spec.route_ref.as_ref().map(|r| &r.name)),
            interval: metric
                .interval
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| DEFAULT_INTERVAL.to_string()),
            variables: metric.template_variables.clone().unwrap_or_default(),
            target,
        }
    }

    fn lookup(&self, variable: &str) -> Result<&str, RenderError> {
        if let Some(key) = variable.strip_prefix("variables.") {
            return self
                .variables
                .get(key)
                .map(String::as_str)
                .ok_or_else(|| RenderError::MissingVariable(key.to_string()));
        }
        Ok(match variable {
            "name" => &self.name,
            "namespace" => &self.namespace,
            "target" => &self.target,
            "service" => &self.service,
            "ingress" => &self.ingress,
            "route" => &self.route,
            "interval" => &self.interval,
            _ => return Err(RenderError::UnknownVariable(variable.to_string())),
        })
    }
}

/// Why a query could not be rendered. The caller adds the metric's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "unknown template variable `{{{{ {0} }}}}`: use name, namespace, target, service, ingress, \
         route, interval or variables.<key>"
    )]
    UnknownVariable(String),
    #[error("`{{{{ variables.{0} }}}}` has no value: add `{0}` to the metric's templateVariables")]
    MissingVariable(String),
    #[error("`{{{{` at byte {0} is never closed with `}}}}`")]
    Unclosed(usize),
}

impl RenderError {
    /// A short fixed name for the kind of failure.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownVariable(_) => "UnknownTemplateVariable",
            Self::MissingVariable(_) => "MissingTemplateVariable",
            Self::Unclosed(_) => "UnclosedTemplateAction",
        }
    }
}

/// Replaces every `{{ variable }}` in `query` (whitespace inside the braces optional). An
/// unknown variable or a missing `variables.<key>` is an error, never an empty string, so a
/// typo cannot turn into a query that silently matches nothing.
pub fn render(query: &str, context: &TemplateContext) -> Result<String, RenderError> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(RenderError::Unclosed(offset + start))?;
        out.push_str(context.lookup(after[..end].trim())?);
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::api::{CanaryService, CanarySpec, IngressRef, RouteRef, TargetRef};

    fn context() -> TemplateContext {
        TemplateContext {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo-app".into(),
            service: "podinfo-svc".into(),
            ingress: "podinfo-ing".into(),
            route: "podinfo-route".into(),
            interval: "30s".into(),
            variables: BTreeMap::from([("x".into(), "42".into()), ("reporter".into(), "source".into())]),
        }
    }

    #[test]
    fn renders_every_variable() {
        let query = "{{ name }} {{ namespace }} {{ target }} {{ service }} {{ ingress }} {{ route }} \
                     {{ interval }} {{ variables.x }}";
        assert_eq!(
            render(query, &context()).unwrap(),
            "podinfo test podinfo-app podinfo-svc podinfo-ing podinfo-route 30s 42"
        );
    }

    #[test]
    fn whitespace_inside_braces_is_optional() {
        assert_eq!(
            render("{{namespace}}/{{  target}}/{{variables.x   }}", &context()).unwrap(),
            "test/podinfo-app/42"
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let query = "sum(rate(x{a=\"b\"}[1m])) / 2 { } }";
        assert_eq!(render(query, &context()).unwrap(), query);
    }

    #[test]
    fn promql_braces_next_to_placeholders_survive() {
        assert_eq!(
            render(
                "rate(http{ns=\"{{ namespace }}\",r=\"{{ variables.reporter }}\"}[{{ interval }}])",
                &context()
            )
            .unwrap(),
            "rate(http{ns=\"test\",r=\"source\"}[30s])"
        );
    }

    #[test]
    fn repeated_placeholders_all_render() {
        assert_eq!(
            render("{{ target }}-{{ target }}-{{target}}", &context()).unwrap(),
            "podinfo-app-podinfo-app-podinfo-app"
        );
    }

    #[test]
    fn unknown_variable_is_named() {
        let err = render("x{{ nmespace }}", &context()).unwrap_err();
        assert_eq!(err, RenderError::UnknownVariable("nmespace".into()));
        assert!(err.to_string().contains("{{ nmespace }}"), "{err}");
    }

    #[test]
    fn go_template_dot_syntax_is_unknown() {
        assert_eq!(
            render("{{ .Namespace }}", &context()).unwrap_err(),
            RenderError::UnknownVariable(".Namespace".into())
        );
    }

    #[test]
    fn empty_action_is_unknown() {
        assert_eq!(
            render("{{ }}", &context()).unwrap_err(),
            RenderError::UnknownVariable(String::new())
        );
    }

    #[test]
    fn missing_template_variable_is_an_error_not_empty() {
        let err = render("{{ variables.y }}", &context()).unwrap_err();
        assert_eq!(err, RenderError::MissingVariable("y".into()));
        assert!(err.to_string().contains("templateVariables"), "{err}");
    }

    #[test]
    fn unclosed_braces_are_reported_with_their_position() {
        assert_eq!(
            render("ok {{ name }} then {{ name", &context()).unwrap_err(),
            RenderError::Unclosed(19)
        );
    }

    #[test]
    fn variable_values_are_not_rendered_again() {
        let mut ctx = context();
        ctx.variables.insert("x".into(), "{{ name }}".into());
        assert_eq!(render("{{ variables.x }}", &ctx).unwrap(), "{{ name }}");
    }

    fn canary(spec: CanarySpec) -> Canary {
        let mut canary = Canary::new("podinfo", spec);
        canary.metadata.namespace = Some("test".into());
        canary
    }

    #[test]
    fn context_defaults_to_the_target_name() {
        let canary = canary(CanarySpec {
            target_ref: TargetRef {
                name: "app".into(),
                ..Default::default()
            },
            ..Default::default()
        });
        let ctx = TemplateContext::new(&canary, &CanaryMetric::default());
        assert_eq!(ctx.name, "podinfo");
        assert_eq!(ctx.namespace, "test");
        assert_eq!(
            (
                ctx.target.as_str(),
                ctx.service.as_str(),
                ctx.ingress.as_str(),
                ctx.route.as_str()
            ),
            ("app", "app", "app", "app")
        );
        assert_eq!(ctx.interval, "1m");
        assert!(ctx.variables.is_empty());
    }

    #[test]
    fn context_takes_service_ingress_route_interval_and_variables() {
        let canary = canary(CanarySpec {
            target_ref: TargetRef {
                name: "app".into(),
                ..Default::default()
            },
            service: Some(CanaryService {
                name: Some("svc".into()),
                ..Default::default()
            }),
            ingress_ref: Some(IngressRef {
                name: "ing".into(),
                ..Default::default()
            }),
            route_ref: Some(RouteRef {
                name: "rt".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let metric = CanaryMetric {
            interval: Some("5m".into()),
            template_variables: Some(BTreeMap::from([("k".into(), "v".into())])),
            ..Default::default()
        };
        let ctx = TemplateContext::new(&canary, &metric);
        assert_eq!(
            (ctx.service.as_str(), ctx.ingress.as_str(), ctx.route.as_str()),
            ("svc", "ing", "rt")
        );
        assert_eq!(ctx.interval, "5m");
        assert_eq!(ctx.variables.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn service_without_name_falls_back_to_target() {
        let canary = canary(CanarySpec {
            target_ref: TargetRef {
                name: "app".into(),
                ..Default::default()
            },
            service: Some(CanaryService {
                port: 80,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            TemplateContext::new(&canary, &CanaryMetric::default()).service,
            "app"
        );
    }
}
