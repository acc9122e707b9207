//! The `nginx` provider: a copy of `spec.ingressRef` named `<ingress>-canary` whose backends
//! `<apex>` point at `<apex>-canary`, switched on by ingress-nginx's canary annotations
//! (`<prefix>/canary`, `canary-weight`, and for A/B `canary-by-header[-value|-pattern]` and
//! `canary-by-cookie`). The original Ingress is never changed (Flagger's `ingress.go`).
//!
//! Unlike Flagger: old `canary-by-*` annotations are dropped by key (Flagger filters them by
//! value, so they stay), reconcile keeps the live weight, and an `analysis.match` that
//! ingress-nginx cannot express (several headers, prefix/suffix matches, URI or method
//! matches) is refused instead of keeping only the last header.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::ObjectMeta;
use kube::{Api, Client, ResourceExt};

use super::{AffinityCookies, Error, RouteRequest, Router, Routes, RoutingKind, ServiceNames, post_params};
use crate::api::{Canary, Capabilities, HttpMatchRequest};
use crate::objects::{GITOPS_HANDS_OFF, owner_ref};

const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Ingress, watched for drift.
pub const KINDS: &[RoutingKind] = &[RoutingKind {
    group: "networking.k8s.io",
    version: "v1",
    kind: "Ingress",
    plural: "ingresses",
    namespaced: true,
}];

/// The NGINX router.
pub struct NginxRouter {
    client: Client,
    /// `--ingress-annotations-prefix`, `nginx.ingress.kubernetes.io` by default.
    prefix: String,
}

/// The A/B conditions ingress-nginx can express: at most one header (exact value or
/// pattern) and one cookie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NginxMatch {
    pub header: Option<(String, HeaderValue)>,
    pub cookie: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    Exact(String),
    Pattern(String),
}

/// The A/B conditions of `matches`, or an error naming what ingress-nginx cannot match on.
pub fn nginx_match(matches: &[HttpMatchRequest]) -> Result<NginxMatch, Error> {
    let mut out = NginxMatch::default();
    let refuse = |field: String, why: &str| {
        Err(Error::Invalid(format!(
            "{field}: {why}; the nginx provider matches one header (exact or regex) and one cookie"
        )))
    };
    for (i, m) in matches.iter().enumerate() {
        let other = [
            ("uri", m.uri.is_some()),
            ("method", m.method.is_some()),
            ("scheme", m.scheme.is_some()),
            ("authority", m.authority.is_some()),
            ("queryParams", m.query_params.is_some()),
            ("withoutHeaders", m.without_headers.is_some()),
            ("sourceLabels", m.source_labels.is_some()),
        ];
        if let Some((name, _)) = other.iter().find(|(_, set)| *set) {
            return refuse(
                format!("spec.analysis.match[{i}].{name}"),
                "ingress-nginx cannot match on it",
            );
        }
        for (name, value) in m.headers.iter().flatten() {
            let field = format!("spec.analysis.match[{i}].headers.{name}");
            if name == "cookie" {
                match (&value.exact, out.cookie.is_some()) {
                    (Some(exact), false) => out.cookie = Some(exact.clone()),
                    (None, _) => return refuse(field, "a cookie is matched by its exact name"),
                    (Some(_), true) => return refuse(field, "only one cookie can be matched"),
                }
                continue;
            }
            if out.header.is_some() {
                return refuse(field, "only one header can be matched");
            }
            let value = match (&value.exact, &value.regex) {
                (Some(exact), None) => HeaderValue::Exact(exact.clone()),
                (None, Some(regex)) => HeaderValue::Pattern(regex.clone()),
                _ => return refuse(field, "use exact or regex"),
            };
            out.header = Some((name.clone(), value));
        }
    }
    Ok(out)
}

impl NginxRouter {
    pub fn new(client: Client, prefix: String) -> Self {
        Self { client, prefix }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    fn api(&self, canary: &Canary) -> Api<Ingress> {
        Api::namespaced(self.client.clone(), &canary.namespace().unwrap_or_default())
    }

    /// The annotations of the canary Ingress at `routes`: the original's (without any canary
    /// annotation or kubectl's last-applied copy), the GitOps hands-off annotations, and the
    /// canary annotations.
    pub fn annotations(
        &self,
        original: &BTreeMap<String, String>,
        routes: Routes,
        ab: Option<&NginxMatch>,
    ) -> BTreeMap<String, String> {
        let canary_prefix = self.key("canary");
        let mut out: BTreeMap<String, String> = original
            .iter()
            .filter(|(k, _)| !k.starts_with(&canary_prefix) && k.as_str() != KUBECTL_LAST_APPLIED)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in GITOPS_HANDS_OFF {
            out.insert(k.to_string(), v.to_string());
        }
        out.insert(canary_prefix, "true".into());
        match ab {
            Some(ab) if routes.canary > 0 => {
                out.insert(self.key("canary-weight"), "0".into());
                if let Some(cookie) = &ab.cookie {
                    out.insert(self.key("canary-by-cookie"), cookie.clone());
                }
                if let Some((name, value)) = &ab.header {
                    out.insert(self.key("canary-by-header"), name.clone());
                    match value {
                        HeaderValue::Exact(v) => out.insert(self.key("canary-by-header-value"), v.clone()),
                        HeaderValue::Pattern(v) => {
                            out.insert(self.key("canary-by-header-pattern"), v.clone())
                        }
                    };
                }
            }
            _ => {
                out.insert(self.key("canary-weight"), routes.canary.to_string());
            }
        }
        out
    }

    /// The split the canary Ingress's annotations say: all on the canary while an A/B
    /// condition is set, else the canary weight.
    pub fn routes_of(&self, annotations: &BTreeMap<String, String>) -> Result<Routes, Error> {
        if annotations.contains_key(&self.key("canary-by-cookie"))
            || annotations.contains_key(&self.key("canary-by-header"))
        {
            return Ok(Routes::canary(100));
        }
        let key = self.key("canary-weight");
        let weight = annotations.get(&key).map(String::as_str).unwrap_or("0");
        weight.parse::<i32>().map(Routes::canary).map_err(|_| {
            Error::NotReady(format!(
                "annotation {key} is {weight:?}, not a number: reconcile rewrites it"
            ))
        })
    }

    /// The original Ingress and its spec with the backends `<apex>` turned to `<apex>-canary`.
    async fn desired(&self, canary: &Canary) -> Result<(Ingress, Ingress), Error> {
        let ingress_name = ingress_ref(canary)?;
        let original = self
            .api(canary)
            .get(ingress_name)
            .await
            .map_err(|source| Error::Get {
                kind: "Ingress",
                name: ingress_name.to_string(),
                source,
            })?;
        let names = ServiceNames::of(canary);
        let mut copy = original.clone();
        let mut found = false;
        for rule in copy.spec.iter_mut().flat_map(|s| s.rules.iter_mut().flatten()) {
            for path in rule.http.iter_mut().flat_map(|h| h.paths.iter_mut()) {
                if let Some(service) = path.backend.service.as_mut()
                    && service.name == names.apex
                {
                    service.name = names.canary.clone();
                    found = true;
                }
            }
        }
        if !found {
            return Err(Error::Invalid(format!(
                "spec.ingressRef: Ingress {ingress_name} has no path to the Service {}: point a path at it",
                names.apex
            )));
        }
        Ok((original, copy))
    }

    fn ab(&self, canary: &Canary) -> Result<Option<NginxMatch>, Error> {
        match canary.spec.analysis().and_then(|a| a.match_.as_ref()) {
            Some(matches) if !matches.is_empty() => nginx_match(matches).map(Some),
            _ => Ok(None),
        }
    }

    async fn live(&self, canary: &Canary) -> Result<Ingress, Error> {
        let name = canary_ingress_name(canary)?;
        self.api(canary).get(&name).await.map_err(|source| Error::Get {
            kind: "Ingress",
            name,
            source,
        })
    }

    async fn write(&self, canary: &Canary, live: Option<&Ingress>, desired: Ingress) -> Result<(), Error> {
        let name = desired.name_any();
        let apply_err = |source| Error::Apply {
            kind: "Ingress",
            name: name.clone(),
            source,
        };
        match live {
            Some(live) => {
                if live.spec == desired.spec
                    && live.metadata.annotations == desired.metadata.annotations
                    && live.metadata.labels == desired.metadata.labels
                {
                    return Ok(());
                }
                self.api(canary)
                    .replace(&name, &post_params(), &desired)
                    .await
                    .map_err(apply_err)?;
            }
            None => {
                self.api(canary)
                    .create(&post_params(), &desired)
                    .await
                    .map_err(apply_err)?;
            }
        }
        Ok(())
    }
}

fn ingress_ref(canary: &Canary) -> Result<&str, Error> {
    canary
        .spec
        .ingress_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::Invalid(
                "spec.ingressRef is required by the nginx provider: name the Ingress that routes to the apex Service"
                    .into(),
            )
        })
}

fn canary_ingress_name(canary: &Canary) -> Result<String, Error> {
    Ok(format!("{}-canary", ingress_ref(canary)?))
}

#[async_trait]
impl Router for NginxRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::WEIGHTED_AB
    }

    async fn reconcile(&self, canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        let ab = self.ab(canary)?;
        let (original, copy) = self.desired(canary).await?;
        let name = canary_ingress_name(canary)?;
        let live = self
            .api(canary)
            .get_opt(&name)
            .await
            .map_err(|source| Error::Get {
                kind: "Ingress",
                name: name.clone(),
                source,
            })?;
        let empty = BTreeMap::new();
        let original_annotations = original.metadata.annotations.as_ref().unwrap_or(&empty);
        let desired = match &live {
            Some(live) => {
                let routes = self.routes_of(live.metadata.annotations.as_ref().unwrap_or(&empty))?;
                let mut desired = live.clone();
                desired.spec = copy.spec;
                desired.metadata.annotations =
                    Some(self.annotations(original_annotations, routes, ab.as_ref()));
                desired
            }
            None => Ingress {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: canary.namespace(),
                    labels: original.metadata.labels.clone(),
                    annotations: Some(self.annotations(original_annotations, Routes::PRIMARY, ab.as_ref())),
                    owner_references: Some(vec![owner_ref(canary)]),
                    ..Default::default()
                },
                spec: copy.spec,
                status: None,
            },
        };
        self.write(canary, live.as_ref(), desired).await
    }

    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error> {
        let ab = self.ab(canary)?;
        let live = self.live(canary).await?;
        let (original, _) = self.desired(canary).await?;
        let empty = BTreeMap::new();
        let mut desired = live.clone();
        desired.metadata.annotations = Some(self.annotations(
            original.metadata.annotations.as_ref().unwrap_or(&empty),
            request.routes,
            ab.as_ref(),
        ));
        self.write(canary, Some(&live), desired).await
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        let live = self.live(canary).await?;
        self.routes_of(live.metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()))
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        // The original Ingress was never changed; the garbage collector removes the copy.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StringMatch;

    fn router() -> NginxRouter {
        // Only `annotations` and `routes_of` are used: no request is made.
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        crate::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        NginxRouter::new(
            Client::try_from(config).expect("client"),
            "custom.ingress/x".into(),
        )
    }

    fn header(name: &str, m: StringMatch) -> HttpMatchRequest {
        HttpMatchRequest {
            headers: Some(BTreeMap::from([(name.to_string(), m)])),
            ..Default::default()
        }
    }

    fn exact(v: &str) -> StringMatch {
        StringMatch {
            exact: Some(v.into()),
            ..Default::default()
        }
    }

    #[test]
    fn weights_live_in_the_prefixed_annotations() {
        let r = router();
        let original = BTreeMap::from([
            ("custom.ingress/x/canary-by-header".to_string(), "old".to_string()),
            ("custom.ingress/x/rewrite-target".to_string(), "/".to_string()),
            (KUBECTL_LAST_APPLIED.to_string(), "{}".to_string()),
        ]);
        let a = r.annotations(&original, Routes::canary(30), None);
        assert_eq!(a["custom.ingress/x/canary"], "true");
        assert_eq!(a["custom.ingress/x/canary-weight"], "30");
        assert_eq!(a["custom.ingress/x/rewrite-target"], "/");
        assert_eq!(a["kustomize.toolkit.fluxcd.io/reconcile"], "disabled");
        assert!(!a.contains_key("custom.ingress/x/canary-by-header"));
        assert!(!a.contains_key(KUBECTL_LAST_APPLIED));
        assert_eq!(r.routes_of(&a).expect("routes"), Routes::canary(30));
        let none = r.annotations(&original, Routes::PRIMARY, None);
        assert_eq!(none["custom.ingress/x/canary-weight"], "0");
        assert_eq!(r.routes_of(&none).expect("routes"), Routes::PRIMARY);
        let bad = BTreeMap::from([("custom.ingress/x/canary-weight".to_string(), "x".to_string())]);
        assert!(r.routes_of(&bad).is_err());
    }

    #[test]
    fn ab_sets_the_header_and_cookie_annotations_only_while_routing() {
        let r = router();
        let ab = nginx_match(&[
            header("x-canary", exact("insider")),
            header("cookie", exact("canary")),
        ])
        .expect("expressible");
        let on = r.annotations(&BTreeMap::new(), Routes::canary(100), Some(&ab));
        assert_eq!(on["custom.ingress/x/canary-by-header"], "x-canary");
        assert_eq!(on["custom.ingress/x/canary-by-header-value"], "insider");
        assert_eq!(on["custom.ingress/x/canary-by-cookie"], "canary");
        assert_eq!(on["custom.ingress/x/canary-weight"], "0");
        assert_eq!(r.routes_of(&on).expect("routes"), Routes::canary(100));
        let off = r.annotations(&on, Routes::PRIMARY, Some(&ab));
        assert!(!off.keys().any(|k| k.contains("canary-by")), "{off:?}");
        assert_eq!(r.routes_of(&off).expect("routes"), Routes::PRIMARY);

        let pattern = nginx_match(&[header(
            "user-agent",
            StringMatch {
                regex: Some(".*Firefox.*".into()),
                ..Default::default()
            },
        )])
        .expect("regex");
        let a = r.annotations(&BTreeMap::new(), Routes::canary(100), Some(&pattern));
        assert_eq!(a["custom.ingress/x/canary-by-header-pattern"], ".*Firefox.*");
    }

    #[test]
    fn inexpressible_matches_name_the_field() {
        let two = nginx_match(&[header("a", exact("1")), header("b", exact("2"))]).expect_err("two headers");
        assert!(
            two.to_string().contains("spec.analysis.match[1].headers.b"),
            "{two}"
        );
        let prefix = nginx_match(&[header(
            "a",
            StringMatch {
                prefix: Some("x".into()),
                ..Default::default()
            },
        )])
        .expect_err("prefix");
        assert!(prefix.to_string().contains("exact or regex"), "{prefix}");
        let uri = nginx_match(&[HttpMatchRequest {
            uri: Some(exact("/x")),
            ..Default::default()
        }])
        .expect_err("uri");
        assert!(uri.to_string().contains("spec.analysis.match[0].uri"), "{uri}");
    }
}
