//! The Istio objects flaggit writes, typed: `VirtualService.spec` and `DestinationRule.spec`
//! (`networking.istio.io/v1beta1`), with the fields the router writes and reads. The match,
//! retry, CORS, header and traffic policy shapes are the Canary's own (`crate::api`), which
//! follow Istio's. Reading a live object ignores fields not listed here (a user's or a newer
//! Istio's); they are not kept when flaggit next writes the object.

use serde::{Deserialize, Serialize};

use crate::api::{
    CorsPolicy, Headers, HttpMatchRequest, HttpRetry, HttpRewrite, PortSelector, TrafficPolicy,
};

/// `VirtualService.spec`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Empty (and omitted) for a delegate VirtualService.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
}

/// Istio's `HTTPRoute`: conditions, weighted destinations and what is done on the way.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "match")]
    pub match_: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// `uri` and `authority` only: Istio's rewrite has no `type` (that is the Gateway API's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Istio's `HTTPRouteDestination`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    /// Always written, 0 included; absent reads as 0.
    #[serde(default)]
    pub weight: i32,
    /// Header changes for the requests sent to (and responses from) this destination only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Istio's `TCPRoute`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TcpRoute {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Istio's `RouteDestination` (of a TCP route).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: i32,
}

/// Istio's `Destination`: a Service host and, when it has several ports, the port.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Destination {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// Istio's `Percent`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// `DestinationRule.spec`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}
