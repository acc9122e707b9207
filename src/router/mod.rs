//! Routers: the traffic providers that split requests between primary and canary. One trait,
//! one file per provider, and [`for_provider`] as the only place that matches on the provider
//! string. `kubernetes.rs` also owns the apex/primary/canary Services every provider needs.

mod apisix;
mod appmesh;
mod appmesh_v1beta1;
mod contour;
mod gateway_api;
mod gloo;
mod istio;
mod knative;
mod kubernetes;
mod kuma;
mod nginx;
mod skipper;
mod smi;
mod traefik;

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client, ResourceExt};
use rand::Rng;

use crate::api::{
    Canary, CanaryService, CanaryStatus, Capabilities, MeshProvider, Provider, SessionAffinity,
};
use crate::objects::{FIELD_MANAGER, GITOPS_HANDS_OFF, owner_ref};
pub use crate::rollout::Routes;

pub use apisix::{
    ApisixRouteSpec, ApisixRouter, canary_route_name, canary_route_spec, routes_of_apisix_route,
};
pub use appmesh::{
    AppMeshRouter, RouterRole, VirtualNodeSpec, VirtualRouterSpec, gateway_annotations,
    routes_of_virtual_router, virtual_node_spec, virtual_router_spec,
    virtual_service_spec as appmesh_virtual_service_spec,
};
pub use appmesh_v1beta1::AppMeshV1beta1Router;
pub use contour::{ContourRouter, HttpProxySpec, http_proxy_spec, routes_of_http_proxy};
pub use gateway_api::{
    GatewayApiRouter, GatewayApiVersion, HttpRouteSpec, check_accepted, http_route_resource, http_route_spec,
    routes_of_http_route,
};
pub use gloo::{
    GlooRouter, RouteTableSpec, UpstreamNames, UpstreamSpec, gloo_matchers, route_table_spec,
    routes_of_route_table, upstream_spec,
};
pub use istio::{
    DESTINATION_RULE, DestinationRuleSpec, IstioRouter, ORIGINAL_CONFIGURATION, VIRTUAL_SERVICE,
    VirtualServiceSpec, destination_rule_spec, routes_of_virtual_service, virtual_service_spec,
};
pub use knative::{
    KnativeRouter, KnativeService, PRIMARY_REVISION_ANNOTATION, RevisionContainer, RevisionSpec,
    TrafficTarget, knative_api, routes_of_traffic, traffic,
};
pub use kubernetes::{ServiceRole, ServiceRouter, build_service, update_service};
pub use kuma::{KumaRouter, TrafficRoute, new_traffic_route, routes_of_traffic_route, traffic_route_name};
pub use nginx::{HeaderValue, NginxMatch, NginxRouter, nginx_match};
pub use skipper::{SkipperRouter, canary_annotations, canary_ingress_spec};
pub use smi::{
    ISTIO_GATEWAYS_ANNOTATION, SmiRouter, SmiVersion, TrafficSplitBackend, TrafficSplitSpec,
    routes_of_traffic_split, traffic_split_spec,
};
pub use traefik::{TraefikRouter, TraefikServiceSpec, routes_of_traefik_service, traefik_service_spec};

/// What a router can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {kind} {name}: {source}")]
    Get {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Canary asks for something this provider cannot do; the text names the field.
    #[error("{0}")]
    Invalid(String),
    /// The routing object exists but is not ready (for example an HTTPRoute not yet
    /// accepted by its Gateway).
    #[error("{0}")]
    NotReady(String),
}

impl Error {
    /// A short fixed name for the kind of failure: event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Get { .. } => "GetRoute",
            Self::Apply { .. } => "ApplyRoute",
            Self::Invalid(_) => "InvalidRoute",
            Self::NotReady(_) => "RouteNotReady",
        }
    }
}

/// Controller-wide router settings: flags of `flaggit run`, with Flagger's names.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Prefix of the NGINX canary annotations (`<prefix>/canary-weight`); Flagger's
    /// `-ingress-annotations-prefix`.
    #[arg(
        long,
        env = "FLAGGIT_INGRESS_ANNOTATIONS_PREFIX",
        default_value = "nginx.ingress.kubernetes.io"
    )]
    pub ingress_annotations_prefix: String,
    /// Ingress class written to Contour HTTPProxies (`spec.ingressClassName`); Flagger's
    /// `-ingress-class`. Unset: none.
    #[arg(long, env = "FLAGGIT_INGRESS_CLASS")]
    pub ingress_class: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ingress_annotations_prefix: "nginx.ingress.kubernetes.io".into(),
            ingress_class: None,
        }
    }
}

/// A kind of routing object a router writes, so the controller can watch it: an edit by
/// hand or by another controller wakes the canary and is put back within seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// False for cluster-scoped objects (Kuma's TrafficRoute), which carry no owner
    /// reference and are matched to canaries by name.
    pub namespaced: bool,
}

impl RoutingKind {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// The routing kinds of every router, for the watches.
pub fn routing_kinds() -> Vec<RoutingKind> {
    let mut kinds = Vec::new();
    for list in [
        istio::KINDS,
        gateway_api::KINDS,
        smi::KINDS,
        nginx::KINDS,
        contour::KINDS,
        gloo::KINDS,
        traefik::KINDS,
        apisix::KINDS,
        skipper::KINDS,
        appmesh::KINDS,
        appmesh_v1beta1::KINDS,
        kuma::KINDS,
        knative::KINDS,
    ] {
        for kind in list {
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
    }
    kinds
}

/// What a router is asked to route: the weights (and mirroring), and the session affinity
/// cookies of this step (see [`next_affinity_cookies`]). The A/B matches and the cookie
/// attributes are configuration, read from the Canary's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteRequest {
    pub routes: Routes,
    pub cookies: AffinityCookies,
}

impl From<Routes> for RouteRequest {
    fn from(routes: Routes) -> Self {
        Self {
            routes,
            cookies: AffinityCookies::default(),
        }
    }
}

/// A traffic provider (Flagger's `Interface` in pkg/router).
#[async_trait]
pub trait Router: Send + Sync {
    /// What this provider can do; validation and the rollout plan read it.
    fn capabilities(&self) -> Capabilities;
    /// Creates the routing objects with all traffic on the primary, or brings existing ones
    /// in line with the Canary's spec while keeping their current weights. `cookies` are the
    /// session affinity cookies in force (from the status).
    async fn reconcile(&self, canary: &Canary, cookies: &AffinityCookies) -> Result<(), Error>;
    /// Sets the traffic split.
    async fn set_routes(&self, canary: &Canary, request: &RouteRequest) -> Result<(), Error>;
    /// The traffic split in force now.
    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error>;
    /// Gives back what the router took over (for example an existing VirtualService) when
    /// the Canary is deleted with `revertOnDeletion`.
    async fn finalize(&self, canary: &Canary) -> Result<(), Error>;
    /// Whether this router writes objects the garbage collector cannot remove: cluster-scoped
    /// ones (Kuma's TrafficRoute), which cannot have an owner reference to a namespaced
    /// Canary. Such a Canary keeps a finalizer, and [`Router::delete`] runs when it is
    /// deleted, with or without `revertOnDeletion`.
    fn cleans_up(&self) -> bool {
        false
    }
    /// Deletes the routing objects the garbage collector cannot (see [`Router::cleans_up`]).
    async fn delete(&self, _canary: &Canary) -> Result<(), Error> {
        Ok(())
    }
}

/// The router for a provider (`spec.provider` or `--mesh-provider`). The only place that
/// matches on the provider.
pub fn for_provider(
    provider: &MeshProvider,
    client: Client,
    settings: &Settings,
) -> Result<Box<dyn Router>, Error> {
    match provider.provider {
        Provider::Kubernetes => Ok(Box::new(NopRouter)),
        Provider::Istio => Ok(Box::new(IstioRouter::new(client))),
        Provider::GatewayApiV1 => Ok(Box::new(GatewayApiRouter::new(client, GatewayApiVersion::V1))),
        Provider::GatewayApiV1beta1 => Ok(Box::new(GatewayApiRouter::new(
            client,
            GatewayApiVersion::V1beta1,
        ))),
        Provider::Linkerd => Ok(Box::new(SmiRouter::new(
            client,
            SmiVersion::V1alpha1,
            Some("linkerd".into()),
        ))),
        Provider::SmiV1alpha1 => Ok(Box::new(SmiRouter::new(
            client,
            SmiVersion::V1alpha1,
            provider.mesh.clone(),
        ))),
        Provider::SmiV1alpha2 => Ok(Box::new(SmiRouter::new(
            client,
            SmiVersion::V1alpha2,
            provider.mesh.clone(),
        ))),
        Provider::SmiV1alpha3 => Ok(Box::new(SmiRouter::new(
            client,
            SmiVersion::V1alpha3,
            provider.mesh.clone(),
        ))),
        Provider::Osm => Ok(Box::new(SmiRouter::new(
            client,
            SmiVersion::V1alpha2,
            Some("osm".into()),
        ))),
        Provider::Nginx => Ok(Box::new(NginxRouter::new(
            client,
            settings.ingress_annotations_prefix.clone(),
        ))),
        Provider::Contour => Ok(Box::new(ContourRouter::new(
            client,
            settings.ingress_class.clone(),
        ))),
        Provider::Gloo => Ok(Box::new(GlooRouter::new(client))),
        Provider::Traefik => Ok(Box::new(TraefikRouter::new(client))),
        Provider::Apisix => Ok(Box::new(ApisixRouter::new(client))),
        Provider::Skipper => Ok(Box::new(SkipperRouter::new(client))),
        Provider::AppMesh => Ok(Box::new(AppMeshV1beta1Router::new(client))),
        Provider::AppMeshV1beta2 => Ok(Box::new(AppMeshRouter::new(client))),
        Provider::Kuma => Ok(Box::new(KumaRouter::new(client))),
        Provider::Knative => Ok(Box::new(KnativeRouter::new(client))),
    }
}

/// The `kubernetes` provider: no routing objects, only the Services, so only Blue/Green.
/// Traffic is "on the canary" while the iterations run because the apex Service is not
/// switched until promotion; reporting that lets the state machine run its iterations.
pub struct NopRouter;

#[async_trait]
impl Router for NopRouter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::BLUE_GREEN_ONLY
    }

    async fn reconcile(&self, _canary: &Canary, _cookies: &AffinityCookies) -> Result<(), Error> {
        Ok(())
    }

    async fn set_routes(&self, _canary: &Canary, _request: &RouteRequest) -> Result<(), Error> {
        Ok(())
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, Error> {
        Ok(nop_routes(canary))
    }

    async fn finalize(&self, _canary: &Canary) -> Result<(), Error> {
        Ok(())
    }
}

/// What [`NopRouter`] reports: all on the canary while iterating, else all on the primary.
fn nop_routes(canary: &Canary) -> Routes {
    let iterating = canary
        .status
        .as_ref()
        .and_then(|s| s.iterations)
        .is_some_and(|i| i > 0);
    if iterating {
        Routes::canary(100)
    } else {
        Routes::PRIMARY
    }
}

/// `spec.service`, which every router needs.
pub(crate) fn service_spec(canary: &Canary) -> Result<&CanaryService, Error> {
    canary.spec.service.as_ref().ok_or_else(|| {
        Error::Invalid(
            "spec.service is required: set at least spec.service.port so flaggit can generate the \
             Services and routes"
                .into(),
        )
    })
}

/// The names of the generated Services: apex (`spec.service.name` or the target's name),
/// `<apex>-primary` and `<apex>-canary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNames {
    pub apex: String,
    pub primary: String,
    pub canary: String,
}

impl ServiceNames {
    pub fn of(canary: &Canary) -> Self {
        let apex = canary
            .spec
            .service
            .as_ref()
            .and_then(|s| s.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| canary.spec.target_ref.name.clone());
        Self {
            primary: format!("{apex}-primary"),
            canary: format!("{apex}-canary"),
            apex,
        }
    }
}

/// The session affinity cookies to keep in `canary.status` (each `<name>=<value>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AffinityCookies {
    /// `status.sessionAffinityCookie`: pins users to the canary while it gets traffic.
    pub canary: Option<String>,
    /// `status.primarySessionAffinityCookie`: pins users to the primary for one interval.
    pub primary: Option<String>,
    /// `status.previousSessionAffinityCookie`: the last run's canary cookie, to expire.
    pub previous: Option<String>,
}

impl AffinityCookies {
    /// The cookies stored in `status`.
    pub fn stored(status: Option<&CanaryStatus>) -> Self {
        let status = status.cloned().unwrap_or_default();
        Self {
            canary: status.session_affinity_cookie.filter(|c| !c.is_empty()),
            primary: status.primary_session_affinity_cookie.filter(|c| !c.is_empty()),
            previous: status.previous_session_affinity_cookie.filter(|c| !c.is_empty()),
        }
    }
}

/// The cookies of the next [`Router::set_routes`] with `routes`, which the controller also
/// stores in `canary.status` (so that a retry of the same step sends the same cookie). While the canary gets traffic a cookie is kept or made up
/// (ten random letters, like Flagger); at weight 0 the canary cookie becomes the previous
/// one, which the routers expire.
pub fn next_affinity_cookies(canary: &Canary, routes: Routes, rng: &mut impl Rng) -> AffinityCookies {
    let current = AffinityCookies::stored(canary.status.as_ref());
    let Some(affinity) = session_affinity(canary) else {
        return current;
    };
    if routes.canary > 0 {
        let mut new_cookie = |name: &str| format!("{name}={}", random_letters(rng, 10));
        let canary_cookie = current
            .canary
            .unwrap_or_else(|| new_cookie(&affinity.cookie_name));
        let primary_cookie = affinity
            .primary_cookie_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(|name| current.primary.clone().unwrap_or_else(|| new_cookie(name)));
        AffinityCookies {
            canary: Some(canary_cookie),
            primary: primary_cookie,
            previous: current.previous,
        }
    } else {
        AffinityCookies {
            canary: None,
            primary: None,
            previous: current.canary.or(current.previous),
        }
    }
}

fn random_letters(rng: &mut impl Rng, n: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..n)
        .map(|_| char::from(LETTERS[rng.gen_range(0..LETTERS.len())]))
        .collect()
}

/// The session affinity of the analysis, when set with a cookie name.
pub(crate) fn session_affinity(canary: &Canary) -> Option<&SessionAffinity> {
    canary
        .spec
        .analysis()
        .and_then(|a| a.session_affinity.as_deref())
        .filter(|a| !a.cookie_name.is_empty())
}

/// The cookies routers write for `request` (see [`next_affinity_cookies`]). An error when
/// the canary gets traffic but the request has no cookie: routing without it would break the
/// users' stickiness silently.
pub(crate) fn affinity_cookies_for<'a>(
    canary: &'a Canary,
    request: &RouteRequest,
) -> Result<Option<(&'a SessionAffinity, AffinityCookies)>, Error> {
    let Some(affinity) = session_affinity(canary) else {
        return Ok(None);
    };
    let routes = request.routes;
    let mut cookies = request.cookies.clone();
    if routes.canary > 0 {
        if cookies.canary.is_none() {
            return Err(Error::Invalid(format!(
                "no session affinity cookie while {}% of traffic goes to the canary: \
                 pass router::next_affinity_cookies in the route request",
                routes.canary
            )));
        }
        // Only the canary run's own cookie is expired once the run ends.
        cookies.previous = None;
    } else {
        cookies.previous = cookies.canary.take().or(cookies.previous);
        cookies.primary = None;
    }
    Ok(Some((affinity, cookies)))
}

/// The `Set-Cookie` value that gives `cookie` (`name=value`) to a user, with the attributes
/// of `spec.analysis.sessionAffinity` (Max-Age defaults to one day).
pub fn set_cookie_value(affinity: &SessionAffinity, cookie: &str) -> String {
    let mut value = format!("{cookie}; Max-Age={}", affinity.max_age.unwrap_or(86400));
    if let Some(domain) = affinity.domain.as_deref().filter(|d| !d.is_empty()) {
        value.push_str(&format!("; Domain={domain}"));
    }
    if affinity.http_only == Some(true) {
        value.push_str("; HttpOnly");
    }
    if affinity.partitioned == Some(true) {
        value.push_str("; Partitioned");
    }
    if let Some(path) = affinity.path.as_deref().filter(|p| !p.is_empty()) {
        value.push_str(&format!("; Path={path}"));
    }
    if let Some(same_site) = affinity.same_site {
        value.push_str(&format!("; SameSite={same_site:?}"));
    }
    if affinity.secure == Some(true) {
        value.push_str("; Secure");
    }
    value
}

/// The `Set-Cookie` value for the primary cookie: it lives one analysis interval, so users
/// are re-split at every step.
pub(crate) fn primary_set_cookie_value(canary: &Canary, cookie: &str) -> String {
    let interval = canary
        .spec
        .analysis()
        .and_then(|a| a.interval.as_deref())
        .and_then(crate::rollout::parse_duration)
        .unwrap_or(crate::rollout::DEFAULT_INTERVAL);
    format!("{cookie}; Max-Age={}", interval.as_secs())
}

/// The `Set-Cookie` value that removes `cookie` from the browser.
pub(crate) fn expire_cookie_value(cookie: &str) -> String {
    format!("{cookie}; Max-Age=-1")
}

/// A regular expression matching a `Cookie` header that carries `cookie` (`name=value`).
pub(crate) fn cookie_regex(cookie: &str) -> String {
    let (name, value) = cookie.split_once('=').unwrap_or((cookie, ""));
    format!(".*{}.*{}.*", escape_regex(name), escape_regex(value))
}

/// Escapes the characters every regex dialect (RE2, ECMAScript, PCRE) treats as special, and
/// nothing else: `\-` is an error in some of them.
pub(crate) fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if r"\.+*?()|[]{}^$".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Whether the object is controlled by this Canary (flaggit created it).
pub(crate) fn owned_by(meta: &ObjectMeta, canary: &Canary) -> bool {
    let uid = canary.uid();
    meta.owner_references.iter().flatten().any(|r| {
        r.kind == "Canary"
            && r.name == canary.name_any()
            && match (&uid, r.uid.is_empty()) {
                (Some(uid), false) => &r.uid == uid,
                _ => true,
            }
    })
}

/// The metadata of a generated routing object: the live object's (so foreign annotations
/// and labels survive) or, on creation, an owner reference to the Canary; plus
/// `spec.service.apex` metadata and the GitOps hands-off annotations.
pub(crate) fn routing_meta(canary: &Canary, name: &str, live: Option<&ObjectMeta>) -> ObjectMeta {
    let mut meta = live.cloned().unwrap_or_else(|| ObjectMeta {
        name: Some(name.to_string()),
        namespace: canary.namespace(),
        owner_references: Some(vec![owner_ref(canary)]),
        ..Default::default()
    });
    let apex = canary.spec.service.as_ref().and_then(|s| s.apex.as_ref());
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in apex.and_then(|m| m.labels.as_ref()).into_iter().flatten() {
        labels.insert(k.clone(), v.clone());
    }
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in apex.and_then(|m| m.annotations.as_ref()).into_iter().flatten() {
        annotations.insert(k.clone(), v.clone());
    }
    for (k, v) in GITOPS_HANDS_OFF {
        annotations.insert(k.to_string(), v.to_string());
    }
    if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
        meta.labels = None;
    }
    meta
}

/// Create and replace parameters naming flaggit as the field manager.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Reads an object of `api`, None when it does not exist.
pub(crate) async fn get_dynamic(
    api: &Api<DynamicObject>,
    kind: &'static str,
    name: &str,
) -> Result<Option<DynamicObject>, Error> {
    api.get_opt(name).await.map_err(|source| Error::Get {
        kind,
        name: name.to_string(),
        source,
    })
}

/// Writes `spec` with `meta` to the object `live` (replacing it, with its resourceVersion, so
/// a concurrent change is retried rather than lost) or creates it. Nothing is written when
/// the live object already says the same: a write bumps the generation, which makes a
/// Gateway re-accept the route.
pub(crate) async fn write_dynamic(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    kind: &'static str,
    live: Option<&DynamicObject>,
    meta: ObjectMeta,
    spec: serde_json::Value,
) -> Result<(), Error> {
    let name = meta.name.clone().unwrap_or_default();
    let apply_err = |source| Error::Apply {
        kind,
        name: name.clone(),
        source,
    };
    match live {
        Some(live) => {
            if live.metadata.labels == meta.labels
                && live.metadata.annotations == meta.annotations
                && live.data.get("spec") == Some(&spec)
            {
                return Ok(());
            }
            let mut object = live.clone();
            object.metadata = meta;
            object.data["spec"] = spec;
            api.replace(&name, &post_params(), &object)
                .await
                .map_err(apply_err)?;
        }
        None => {
            let mut object = DynamicObject::new(&name, resource);
            object.metadata = meta;
            object.data = serde_json::json!({ "spec": spec });
            api.create(&post_params(), &object).await.map_err(apply_err)?;
        }
    }
    Ok(())
}

/// A routing object of another project, typed by its spec `P` (the status, never ours, is
/// passed through untouched).
pub type Typed<P> = kube::core::object::Object<P, serde_json::Value>;

/// The Api of a typed routing object of `kind` in `namespace` (or cluster-wide).
pub fn typed_api<P: Clone>(client: &Client, kind: &RoutingKind, namespace: &str) -> Api<Typed<P>> {
    if kind.namespaced {
        Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
    } else {
        Api::all_with(client.clone(), &kind.api_resource())
    }
}

/// Reads a typed object, None when it does not exist.
pub async fn get_typed<P>(
    api: &Api<Typed<P>>,
    kind: &RoutingKind,
    name: &str,
) -> Result<Option<Typed<P>>, Error>
where
    P: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Get {
        kind: kind.kind,
        name: name.to_string(),
        source,
    })
}

/// Writes `spec` with `meta` over `live` (a replace with its resourceVersion, so a concurrent
/// change is retried rather than lost) or creates the object. Nothing is written when the
/// live object already says the same.
pub async fn write_typed<P>(
    api: &Api<Typed<P>>,
    kind: &RoutingKind,
    live: Option<&Typed<P>>,
    meta: ObjectMeta,
    spec: P,
) -> Result<(), Error>
where
    P: Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    let name = meta.name.clone().unwrap_or_default();
    let apply_err = |source| Error::Apply {
        kind: kind.kind,
        name: name.clone(),
        source,
    };
    match live {
        Some(live) => {
            if live.metadata.labels == meta.labels
                && live.metadata.annotations == meta.annotations
                && live.spec == spec
            {
                return Ok(());
            }
            let mut object = live.clone();
            object.metadata = meta;
            object.spec = spec;
            api.replace(&name, &post_params(), &object)
                .await
                .map_err(apply_err)?;
        }
        None => {
            let mut object = Typed::new(&name, &kind.api_resource(), spec);
            object.metadata = meta;
            api.create(&post_params(), &object).await.map_err(apply_err)?;
        }
    }
    Ok(())
}

/// The metadata of an object created for `canary`: its name and namespace (none for a
/// cluster-scoped kind) and, for a namespaced one, a controller reference to the Canary.
pub fn created_meta(canary: &Canary, kind: &RoutingKind, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: kind.namespaced.then(|| canary.namespace()).flatten(),
        owner_references: kind.namespaced.then(|| vec![owner_ref(canary)]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryAnalysis, CustomMetadata};
    use rand::SeedableRng;

    fn canary(affinity: Option<SessionAffinity>, status: CanaryStatus) -> Canary {
        let mut c = crate::testing::podinfo(
            Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            Some(CanaryAnalysis {
                interval: Some("30s".into()),
                session_affinity: affinity.map(Box::new),
                ..Default::default()
            }),
        );
        c.status = Some(status);
        c
    }

    fn affinity() -> SessionAffinity {
        SessionAffinity {
            cookie_name: "flagger-cookie".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_provider_gets_a_router() {
        // A client is only stored, never called, so an unreachable one is fine.
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        crate::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let client = Client::try_from(config).expect("client");
        let settings = Settings::default();
        for provider in Provider::ALL {
            if let Err(err) = for_provider(&provider.into(), client.clone(), &settings) {
                panic!("{provider:?} has no router: {err}");
            }
        }
    }

    #[test]
    fn nop_router_reports_canary_only_while_iterating() {
        let mut c = canary(None, CanaryStatus::default());
        assert_eq!(nop_routes(&c), Routes::PRIMARY);
        c.status = Some(CanaryStatus {
            iterations: Some(0),
            ..Default::default()
        });
        assert_eq!(nop_routes(&c), Routes::PRIMARY);
        c.status = Some(CanaryStatus {
            iterations: Some(3),
            ..Default::default()
        });
        assert_eq!(nop_routes(&c), Routes::canary(100));
    }

    #[test]
    fn service_names_default_to_the_target() {
        let mut c = canary(None, CanaryStatus::default());
        let names = ServiceNames::of(&c);
        assert_eq!(
            (names.apex.as_str(), names.primary.as_str(), names.canary.as_str()),
            ("podinfo", "podinfo-primary", "podinfo-canary")
        );
        c.spec.service.as_mut().expect("service").name = Some("frontend".into());
        assert_eq!(ServiceNames::of(&c).canary, "frontend-canary");
    }

    #[test]
    fn cookies_are_made_kept_and_retired() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let none = canary(None, CanaryStatus::default());
        assert_eq!(
            next_affinity_cookies(&none, Routes::canary(10), &mut rng),
            AffinityCookies::default()
        );

        let c = canary(Some(affinity()), CanaryStatus::default());
        let first = next_affinity_cookies(&c, Routes::canary(10), &mut rng);
        let cookie = first.canary.clone().expect("a cookie at weight 10");
        let (name, value) = cookie.split_once('=').expect("name=value");
        assert_eq!(name, "flagger-cookie");
        assert_eq!(value.len(), 10);
        assert!(value.chars().all(|ch| ch.is_ascii_alphabetic()));
        assert_eq!(first.primary, None);

        let running = canary(
            Some(affinity()),
            CanaryStatus {
                session_affinity_cookie: Some(cookie.clone()),
                ..Default::default()
            },
        );
        let again = next_affinity_cookies(&running, Routes::canary(20), &mut rng);
        assert_eq!(again.canary.as_deref(), Some(cookie.as_str()));

        let done = next_affinity_cookies(&running, Routes::PRIMARY, &mut rng);
        assert_eq!(done.canary, None);
        assert_eq!(done.previous.as_deref(), Some(cookie.as_str()));
    }

    #[test]
    fn primary_cookie_only_with_a_primary_cookie_name() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut a = affinity();
        a.primary_cookie_name = Some("primary-cookie".into());
        let c = canary(Some(a), CanaryStatus::default());
        let cookies = next_affinity_cookies(&c, Routes::canary(5), &mut rng);
        assert!(
            cookies
                .primary
                .expect("primary cookie")
                .starts_with("primary-cookie=")
        );
    }

    #[test]
    fn routers_refuse_to_route_to_the_canary_without_a_cookie() {
        let c = canary(Some(affinity()), CanaryStatus::default());
        let err = affinity_cookies_for(&c, &Routes::canary(10).into()).expect_err("no cookie");
        assert!(err.to_string().contains("no session affinity cookie"), "{err}");
        // At weight 0 there is nothing to pin, so no cookie is needed.
        let (_, cookies) = affinity_cookies_for(&c, &Routes::PRIMARY.into())
            .expect("ok")
            .expect("affinity set");
        assert_eq!(cookies, AffinityCookies::default());
    }

    #[test]
    fn set_cookie_carries_the_attributes() {
        let a = SessionAffinity {
            cookie_name: "c".into(),
            domain: Some("example.com".into()),
            http_only: Some(true),
            max_age: Some(60),
            partitioned: Some(true),
            path: Some("/".into()),
            same_site: Some(crate::api::SameSite::Strict),
            secure: Some(true),
            ..Default::default()
        };
        assert_eq!(
            set_cookie_value(&a, "c=abc"),
            "c=abc; Max-Age=60; Domain=example.com; HttpOnly; Partitioned; Path=/; SameSite=Strict; Secure"
        );
        assert_eq!(set_cookie_value(&affinity(), "c=x"), "c=x; Max-Age=86400");
        assert_eq!(expire_cookie_value("c=x"), "c=x; Max-Age=-1");
        let c = canary(Some(affinity()), CanaryStatus::default());
        assert_eq!(primary_set_cookie_value(&c, "p=y"), "p=y; Max-Age=30");
    }

    #[test]
    fn cookie_regex_matches_the_cookie_among_others() {
        let re =
            regex::Regex::new(&format!("^{}$", cookie_regex("flagger-cookie=AbC.d"))).expect("valid regex");
        assert!(re.is_match("a=b; flagger-cookie=AbC.d; c=d"));
        assert!(!re.is_match("flagger-cookie=AbCxd"));
    }

    #[test]
    fn routing_meta_adds_ours_and_keeps_theirs() {
        let mut c = canary(None, CanaryStatus::default());
        c.metadata.namespace = Some("test".into());
        c.metadata.uid = Some("uid-1".into());
        c.spec.service.as_mut().expect("service").apex = Some(Box::new(CustomMetadata {
            labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
        }));
        let created = routing_meta(&c, "podinfo", None);
        assert_eq!(created.namespace.as_deref(), Some("test"));
        assert!(owned_by(&created, &c));
        let annotations = created.annotations.expect("annotations");
        assert_eq!(annotations["kustomize.toolkit.fluxcd.io/reconcile"], "disabled");
        assert_eq!(annotations["helm.toolkit.fluxcd.io/driftDetection"], "disabled");
        assert_eq!(annotations["note"], "x");

        let live = ObjectMeta {
            name: Some("podinfo".into()),
            annotations: Some(BTreeMap::from([("theirs".into(), "1".into())])),
            ..Default::default()
        };
        let updated = routing_meta(&c, "podinfo", Some(&live));
        assert!(
            !owned_by(&updated, &c),
            "an adopted object gets no owner reference"
        );
        assert_eq!(updated.annotations.expect("annotations")["theirs"], "1");
        assert_eq!(updated.labels.expect("labels")["team"], "a");
    }
}
