//! The fields of a Gateway API HTTPRoute (`gateway.networking.k8s.io`, served as `v1` and
//! `v1beta1`, whose schemas agree on every field here) that flaggit writes or reads back.
//!
//! Reading is tolerant: fields flaggit does not write (and filter types it does not model)
//! are ignored, so a route written by a newer Gateway API or edited by hand still parses.
//! Shapes the Canary's spec already carries (`ParentReference`, `BackendObjectReference`,
//! `HttpRequestMirrorFilter`) come from [`crate::api`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::{Deserialize, Serialize};

use crate::api::{BackendObjectReference, HttpRequestMirrorFilter, ParentReference};

/// `HTTPRoute.spec`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// One rule: requests matching any of `matches` go to `backendRefs` after `filters`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
}

/// Conditions of a rule, all of which a request must meet.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HttpHeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl HttpRouteMatch {
    /// A match with no condition (which matches every request).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HttpPathMatch {
    /// Absent on read means `PathPrefix`, the API's default.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<PathMatchType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
    /// A type of a newer Gateway API, read only.
    #[serde(other)]
    Other,
}

/// A header or query parameter match (the two have the same shape).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HttpHeaderMatch {
    /// Absent on read means `Exact`, the API's default.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ValueMatchType>,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum ValueMatchType {
    Exact,
    RegularExpression,
    /// A type of a newer Gateway API, read only.
    #[serde(other)]
    Other,
}

/// A filter of a rule or of a backendRef: `type` says which of the other fields is set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub type_: FilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HttpHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HttpHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<HttpCorsFilter>,
}

impl HttpRouteFilter {
    fn of(type_: FilterType) -> Self {
        Self {
            type_,
            request_header_modifier: None,
            response_header_modifier: None,
            url_rewrite: None,
            request_mirror: None,
            cors: None,
        }
    }

    pub fn request_header_modifier(modifier: HttpHeaderFilter) -> Self {
        Self {
            request_header_modifier: Some(modifier),
            ..Self::of(FilterType::RequestHeaderModifier)
        }
    }

    pub fn response_header_modifier(modifier: HttpHeaderFilter) -> Self {
        Self {
            response_header_modifier: Some(modifier),
            ..Self::of(FilterType::ResponseHeaderModifier)
        }
    }

    pub fn url_rewrite(rewrite: HttpUrlRewriteFilter) -> Self {
        Self {
            url_rewrite: Some(rewrite),
            ..Self::of(FilterType::UrlRewrite)
        }
    }

    pub fn request_mirror(mirror: HttpRequestMirrorFilter) -> Self {
        Self {
            request_mirror: Some(mirror),
            ..Self::of(FilterType::RequestMirror)
        }
    }

    pub fn cors(cors: HttpCorsFilter) -> Self {
        Self {
            cors: Some(cors),
            ..Self::of(FilterType::Cors)
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
    #[serde(rename = "CORS")]
    Cors,
    /// A filter flaggit does not write (RequestRedirect, ExtensionRef, ...), read only.
    #[serde(other)]
    Other,
}

/// `requestHeaderModifier` / `responseHeaderModifier`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HttpHeaderFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `urlRewrite`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HttpUrlRewriteFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathModifier {
    #[serde(rename = "type")]
    pub type_: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
    /// A type of a newer Gateway API, read only.
    #[serde(other)]
    Other,
}

/// `cors`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpCorsFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
}

/// A backend of a rule with its share of the requests.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HttpBackendRef {
    #[serde(flatten)]
    pub backend: BackendObjectReference,
    /// Absent on read means 1, the API's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

/// `timeouts` of a rule, as Gateway API durations (`30s`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// `HTTPRoute.status`: what each parent (Gateway) made of the route. Read only.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteStatus {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub conditions: Vec<Condition>,
}

/// A list the server may send as `null`.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}
