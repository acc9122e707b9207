//! Pure functions of the workload layer: selector label discovery, the primary's pod template
//! and metadata, ConfigMap/Secret tracking and checksums, the revision hash, port discovery
//! and the primary autoscaler's spec. No client here: everything is unit-tested below.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Error, Revision};
use crate::api::{CanaryService, ScalerReplicas};
use crate::objects::is_gitops_key;
use crate::rollout::REVISION_PREFIX;

/// Suffix of every object flaggit makes as the primary copy of a target's object.
pub const PRIMARY_SUFFIX: &str = "-primary";
/// Pod annotation with a fresh random value on every promotion, so the primary always rolls.
pub const FLAGGER_ID: &str = "flagger-id";
/// DaemonSet node selector key that no node matches: how a DaemonSet is "scaled to zero".
pub const SCALE_TO_ZERO_KEY: &str = "flagger.app/scale-to-zero";
/// ConfigMap/Secret annotation that opts the object out of tracking (value `disabled`).
pub const CONFIG_TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";
/// Secret types whose changes start a release (registry secrets belong to service accounts).
pub const TRACKED_SECRET_TYPES: [&str; 4] = [
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];
/// Container names of mesh proxies, whose ports are never discovered.
const PROXY_CONTAINERS: [&str; 3] = ["istio-proxy", "envoy", "linkerd-proxy"];

/// The name of the primary copy of the object `name`: `<name>-primary`.
pub fn primary_name(name: &str) -> String {
    format!("{name}{PRIMARY_SUFFIX}")
}

/// The selector label and its value: the first of `selector_labels` found in the target's
/// `spec.selector.matchLabels`. `kind`, `namespace` and `name` name the target in the error.
pub fn selector_label(
    kind: &str,
    namespace: &str,
    name: &str,
    selector: &LabelSelector,
    selector_labels: &[String],
) -> Result<(String, String), Error> {
    let match_labels = selector.match_labels.as_ref();
    selector_labels
        .iter()
        .find_map(|label| {
            match_labels
                .and_then(|labels| labels.get(label))
                .map(|value| (label.clone(), value.clone()))
        })
        .ok_or_else(|| {
            Error::NoSelectorLabel(format!(
                "spec.selector.matchLabels of {kind} {namespace}/{name} must contain one of {} \
                 (flag --selector-labels)",
                selector_labels.join(", ")
            ))
        })
}

/// Whether a ConfigMap or a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The prefix of the `trackedConfigs` key: `configmap` or `secret`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::Secret => "secret",
        }
    }

    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

/// A ConfigMap or Secret a pod spec uses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

impl ConfigRef {
    pub fn config_map(name: impl Into<String>) -> Self {
        Self {
            kind: ConfigKind::ConfigMap,
            name: name.into(),
        }
    }

    pub fn secret(name: impl Into<String>) -> Self {
        Self {
            kind: ConfigKind::Secret,
            name: name.into(),
        }
    }

    /// The key in `status.trackedConfigs`: `configmap/<name>` or `secret/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.key_prefix(), self.name)
    }
}

/// The ConfigMaps and Secrets `spec` uses through volumes, projected volumes, `env.valueFrom`
/// and `envFrom` of its containers and init containers. The controller maps a changed
/// ConfigMap or Secret to the canaries whose target uses it with this.
pub fn tracked_refs(spec: &PodSpec) -> BTreeSet<ConfigRef> {
    config_references(spec).into_keys().collect()
}

/// Like [`tracked_refs`], with whether every reference to the object is `optional` (a
/// missing optional object is not an error: the pod starts without it).
pub fn config_references(spec: &PodSpec) -> BTreeMap<ConfigRef, bool> {
    let mut refs: BTreeMap<ConfigRef, bool> = BTreeMap::new();
    let mut add = |config: ConfigRef, optional: Option<bool>| {
        let optional = optional.unwrap_or(false);
        refs.entry(config)
            .and_modify(|all_optional| *all_optional &= optional)
            .or_insert(optional);
    };
    for volume in spec.volumes.iter().flatten() {
        if let Some(source) = &volume.config_map {
            add(ConfigRef::config_map(&source.name), source.optional);
        }
        if let Some(source) = &volume.secret
            && let Some(name) = &source.secret_name
        {
            add(ConfigRef::secret(name), source.optional);
        }
        let projections = volume.projected.iter().flat_map(|p| p.sources.iter().flatten());
        for projection in projections {
            if let Some(source) = &projection.config_map {
                add(ConfigRef::config_map(&source.name), source.optional);
            }
            if let Some(source) = &projection.secret {
                add(ConfigRef::secret(&source.name), source.optional);
            }
        }
    }
    for container in all_containers(spec) {
        for var in container.env.iter().flatten() {
            let Some(from) = &var.value_from else { continue };
            if let Some(source) = &from.config_map_key_ref {
                add(ConfigRef::config_map(&source.name), source.optional);
            }
            if let Some(source) = &from.secret_key_ref {
                add(ConfigRef::secret(&source.name), source.optional);
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(source) = &from.config_map_ref {
                add(ConfigRef::config_map(&source.name), source.optional);
            }
            if let Some(source) = &from.secret_ref {
                add(ConfigRef::secret(&source.name), source.optional);
            }
        }
    }
    refs
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

fn all_containers_mut(spec: &mut PodSpec) -> impl Iterator<Item = &mut Container> {
    spec.init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
}

/// Renames the references to the tracked `configs` in `spec` to their `-primary` copies.
pub fn rename_configs(spec: &mut PodSpec, configs: &BTreeSet<ConfigRef>) {
    let rename = |name: &mut String, kind: ConfigKind| {
        let config = ConfigRef {
            kind,
            name: name.clone(),
        };
        if configs.contains(&config) {
            name.push_str(PRIMARY_SUFFIX);
        }
    };
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(source) = &mut volume.config_map {
            rename(&mut source.name, ConfigKind::ConfigMap);
        }
        if let Some(name) = volume.secret.as_mut().and_then(|s| s.secret_name.as_mut()) {
            rename(name, ConfigKind::Secret);
        }
        let projections = volume
            .projected
            .iter_mut()
            .flat_map(|p| p.sources.iter_mut().flatten());
        for projection in projections {
            if let Some(source) = &mut projection.config_map {
                rename(&mut source.name, ConfigKind::ConfigMap);
            }
            if let Some(source) = &mut projection.secret {
                rename(&mut source.name, ConfigKind::Secret);
            }
        }
    }
    for container in all_containers_mut(spec) {
        for var in container.env.iter_mut().flatten() {
            let Some(from) = &mut var.value_from else { continue };
            if let Some(source) = &mut from.config_map_key_ref {
                rename(&mut source.name, ConfigKind::ConfigMap);
            }
            if let Some(source) = &mut from.secret_key_ref {
                rename(&mut source.name, ConfigKind::Secret);
            }
        }
        for from in container.env_from.iter_mut().flatten() {
            if let Some(source) = &mut from.config_map_ref {
                rename(&mut source.name, ConfigKind::ConfigMap);
            }
            if let Some(source) = &mut from.secret_ref {
                rename(&mut source.name, ConfigKind::Secret);
            }
        }
    }
}

/// How the target's names map to the primary's.
#[derive(Clone, Copy, Debug)]
pub struct PrimaryNaming<'a> {
    /// The target's name (`podinfo`).
    pub target_name: &'a str,
    /// The selector label (`app`) and the target's value of it (`podinfo`).
    pub selector_label: &'a str,
    pub selector_value: &'a str,
    /// All labels that may select the workload's pods (`--selector-labels`).
    pub selector_labels: &'a [String],
    /// The tracked ConfigMaps and Secrets, which have `-primary` copies.
    pub configs: &'a BTreeSet<ConfigRef>,
}

impl PrimaryNaming<'_> {
    /// The primary's value of the selector label.
    pub fn primary_value(&self) -> String {
        primary_name(self.selector_value)
    }

    /// The primary's selector: the selector label only, with the primary's value.
    pub fn primary_selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(
                self.selector_label.to_string(),
                self.primary_value(),
            )])),
            ..Default::default()
        }
    }

    /// `labels` with the selector label set to the primary's value.
    pub fn primary_labels(&self, labels: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
        let mut labels = labels.cloned().unwrap_or_default();
        labels.insert(self.selector_label.to_string(), self.primary_value());
        labels
    }

    /// Points a pod label selector of the target (anti-affinity, spread constraint) at the
    /// primary's pods: values of a selector label that name the target get `-primary`.
    fn rewrite_selector(&self, selector: &mut LabelSelector) {
        let is_target = |value: &str| value == self.selector_value || value == self.target_name;
        let is_selector_label = |key: &str| self.selector_labels.iter().any(|l| l == key);
        for (key, value) in selector.match_labels.iter_mut().flatten() {
            if is_selector_label(key) && is_target(value) {
                value.push_str(PRIMARY_SUFFIX);
            }
        }
        for requirement in selector.match_expressions.iter_mut().flatten() {
            if !is_selector_label(&requirement.key) {
                continue;
            }
            for value in requirement.values.iter_mut().flatten() {
                if is_target(value) {
                    value.push_str(PRIMARY_SUFFIX);
                }
            }
        }
    }
}

/// The primary's pod template built from the target's: selector label `<value>-primary`,
/// tracked configs renamed, anti-affinity and spread constraints pointed at the primary's
/// pods, and `flagger-id` set to `flagger_id` so the primary rolls.
pub fn primary_pod_template(
    template: &PodTemplateSpec,
    naming: &PrimaryNaming<'_>,
    flagger_id: &str,
) -> PodTemplateSpec {
    let mut primary = template.clone();
    let metadata = primary.metadata.get_or_insert_with(Default::default);
    metadata.labels = Some(naming.primary_labels(metadata.labels.as_ref()));
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(FLAGGER_ID.to_string(), flagger_id.to_string());
    if let Some(spec) = &mut primary.spec {
        rename_configs(spec, naming.configs);
        let anti_affinity = spec.affinity.as_mut().and_then(|a| a.pod_anti_affinity.as_mut());
        if let Some(anti) = anti_affinity {
            let preferred = anti
                .preferred_during_scheduling_ignored_during_execution
                .iter_mut()
                .flatten()
                .map(|weighted| &mut weighted.pod_affinity_term);
            let required = anti
                .required_during_scheduling_ignored_during_execution
                .iter_mut()
                .flatten();
            for term in preferred.chain(required) {
                if let Some(selector) = &mut term.label_selector {
                    naming.rewrite_selector(selector);
                }
            }
        }
        for constraint in spec.topology_spread_constraints.iter_mut().flatten() {
            if let Some(selector) = &mut constraint.label_selector {
                naming.rewrite_selector(selector);
            }
        }
    }
    primary
}

/// A fresh random value for the `flagger-id` annotation, in UUID v4 form.
pub fn new_flagger_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether two pod templates are equal apart from the `flagger-id` annotation.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn without_id(template: &PodTemplateSpec) -> Value {
        let mut template = template.clone();
        let metadata = template.metadata.get_or_insert_with(Default::default);
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.remove(FLAGGER_ID);
        }
        if metadata.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
            metadata.annotations = None;
        }
        serde_json::to_value(template).unwrap_or(Value::Null)
    }
    without_id(a) == without_id(b)
}

/// The labels or annotations of `source` to copy to a generated object: those with one of
/// `include_prefixes` (`*` = all), never the GitOps tool's.
pub fn filter_metadata(
    source: Option<&BTreeMap<String, String>>,
    include_prefixes: &[String],
) -> BTreeMap<String, String> {
    source
        .into_iter()
        .flatten()
        .filter(|(key, _)| !is_gitops_key(key))
        .filter(|(key, _)| {
            include_prefixes
                .iter()
                .any(|prefix| prefix == "*" || key.starts_with(prefix.as_str()))
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Whether a ConfigMap or Secret opted out of tracking with `flagger.app/config-tracking:
/// disabled` (any value starting with `disable`, as Flagger reads it).
pub fn tracking_disabled(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(CONFIG_TRACKING_ANNOTATION))
        .is_some_and(|value| value.starts_with("disable"))
}

/// Whether a Secret of this type is tracked (no type means `Opaque`).
pub fn secret_type_tracked(secret_type: Option<&str>) -> bool {
    TRACKED_SECRET_TYPES.contains(&secret_type.unwrap_or("Opaque"))
}

/// Flagger's checksum of a ConfigMap's `data`: hex of the first 8 bytes of the SHA-256 of
/// its JSON as Go encodes it.
pub fn config_map_checksum(data: Option<&BTreeMap<String, String>>) -> String {
    let json = data.map(|data| go_json_object(data.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    checksum(json.as_deref().unwrap_or("null"))
}

/// Flagger's checksum of a Secret's `data`: Go marshals `[]byte` values as standard base64.
pub fn secret_checksum(data: Option<&BTreeMap<String, ByteString>>) -> String {
    let json = data.map(|data| {
        let encoded: Vec<(&str, String)> = data
            .iter()
            .map(|(key, value)| (key.as_str(), STANDARD.encode(&value.0)))
            .collect();
        go_json_object(encoded.iter().map(|(k, v)| (*k, v.as_str())))
    });
    checksum(json.as_deref().unwrap_or("null"))
}

fn checksum(json: &str) -> String {
    let digest = Sha256::digest(json.as_bytes());
    hex::encode(&digest[..8])
}

/// A JSON object of string values exactly as Go's `json.Marshal` writes a
/// `map[string]string`: keys sorted, no spaces, `<`, `>`, `&`, U+2028 and U+2029 escaped.
fn go_json_object<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = entries.collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::from("{");
    for (i, (key, value)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_json_string(&mut out, key);
        out.push(':');
        go_json_string(&mut out, value);
    }
    out.push('}');
    out
}

fn go_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The pod template a DaemonSet's revision is computed from: without the scale-to-zero node
/// selector, so scaling the target to zero and back is not a new revision.
pub fn without_scale_to_zero(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(spec) = &mut template.spec
        && let Some(selector) = &mut spec.node_selector
    {
        selector.remove(SCALE_TO_ZERO_KEY);
        if selector.is_empty() {
            spec.node_selector = None;
        }
    }
    template
}

/// The revision of a target: `flaggit1-` and the hex of the first 16 bytes of the SHA-256 of
/// the canonical JSON (keys sorted) of its pod template and config checksums.
/// The images of a pod template's containers and init containers (container -> image).
pub fn images(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    let Some(spec) = &template.spec else {
        return BTreeMap::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
        .collect()
}

/// Sets the images of the named containers (rebuild recovery); other containers keep theirs.
pub fn pin_images(template: &mut PodTemplateSpec, images: &BTreeMap<String, String>) {
    let Some(spec) = &mut template.spec else {
        return;
    };
    for container in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        if let Some(image) = images.get(&container.name) {
            container.image = Some(image.clone());
        }
    }
}

/// The revision of a Service target: a hash of its spec (Flagger hashes the spec too).
pub fn service_revision(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Revision {
    let subject = serde_json::json!({ "service": spec });
    let mut text = String::new();
    canonical_json(&subject, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    Revision {
        hash: format!("{REVISION_PREFIX}{}", hex::encode(&digest[..16])),
        configs: BTreeMap::new(),
    }
}

pub fn revision(template: &PodTemplateSpec, configs: BTreeMap<String, String>) -> Revision {
    let subject = serde_json::json!({ "template": template, "configs": configs });
    let mut text = String::new();
    canonical_json(&subject, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    Revision {
        hash: format!("{REVISION_PREFIX}{}", hex::encode(&digest[..16])),
        configs,
    }
}

/// Writes `value` as JSON with object keys sorted, whatever order the map keeps them in.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The extra ports `service.portDiscovery` adds: every container port except the service's
/// own port and the mesh proxies', named after the port or `tcp-<container>-<index>`.
pub fn discover_ports(spec: &PodSpec, service: &CanaryService) -> Vec<ServicePort> {
    let mut ports: BTreeMap<String, i32> = BTreeMap::new();
    for container in &spec.containers {
        if PROXY_CONTAINERS.contains(&container.name.as_str()) {
            continue;
        }
        for (i, port) in container.ports.iter().flatten().enumerate() {
            let is_service_port = match &service.target_port {
                None | Some(IntOrString::Int(0)) => port.container_port == service.port,
                Some(IntOrString::Int(target)) => port.container_port == *target,
                Some(IntOrString::String(target)) => port.name.as_deref() == Some(target.as_str()),
            };
            if is_service_port {
                continue;
            }
            let name = match &port.name {
                Some(name) if !name.is_empty() => name.clone(),
                _ => format!("tcp-{}-{i}", container.name),
            };
            ports.insert(name, port.container_port);
        }
    }
    ports
        .into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name),
            protocol: Some("TCP".into()),
            port,
            target_port: Some(IntOrString::Int(port)),
            ..Default::default()
        })
        .collect()
}

/// The replicas the target gets back when scaled up from zero: its own if set, else the
/// autoscaler's minimum, else the primary's, else one.
pub fn scale_from_zero_replicas(target: Option<i32>, hpa_min: Option<i32>, primary: Option<i32>) -> i32 {
    [target, hpa_min, primary]
        .into_iter()
        .flatten()
        .find(|&replicas| replicas > 0)
        .unwrap_or(1)
}

/// The spec of the primary HorizontalPodAutoscaler (the same JSON under `autoscaling/v2` and
/// `v2beta2`): the target HPA's bounds, metrics and behavior, scaling `primary_workload`,
/// with the bounds of `primaryScalerReplicas` when given.
pub fn primary_hpa_spec(
    target_spec: &Value,
    primary_workload: &str,
    overrides: Option<&ScalerReplicas>,
) -> Value {
    let mut spec = serde_json::Map::new();
    let mut scale_target = target_spec
        .get("scaleTargetRef")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    scale_target["name"] = Value::String(primary_workload.to_string());
    spec.insert("scaleTargetRef".into(), scale_target);
    for field in ["minReplicas", "maxReplicas", "metrics", "behavior"] {
        if let Some(value) = target_spec.get(field).filter(|v| !v.is_null()) {
            spec.insert(field.into(), value.clone());
        }
    }
    if let Some(overrides) = overrides {
        if let Some(min) = overrides.min_replicas {
            spec.insert("minReplicas".into(), min.into());
        }
        if let Some(max) = overrides.max_replicas {
            spec.insert("maxReplicas".into(), max.into());
        }
    }
    Value::Object(spec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource,
        ContainerPort, EnvFromSource, EnvVar, EnvVarSource, PodAffinityTerm, PodAntiAffinity,
        ProjectedVolumeSource, SecretEnvSource, SecretKeySelector, SecretProjection, SecretVolumeSource,
        TopologySpreadConstraint, Volume, VolumeProjection, WeightedPodAffinityTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn defaults() -> Vec<String> {
        vec!["app".into(), "name".into(), "app.kubernetes.io/name".into()]
    }

    fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(pairs)),
            ..Default::default()
        }
    }

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("ghcr.io/stefanprodan/podinfo:6.0.0".into()),
            ..Default::default()
        }
    }

    /// A pod spec that uses configs in every way a pod can.
    fn pod_spec_with_configs() -> PodSpec {
        let mut app = container("podinfo");
        app.env = Some(vec![
            EnvVar {
                name: "A".into(),
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "env-cm".into(),
                        key: "a".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvVar {
                name: "B".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "env-secret".into(),
                        key: "b".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvVar {
                name: "PLAIN".into(),
                value: Some("x".into()),
                ..Default::default()
            },
        ]);
        app.env_from = Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "envfrom-cm".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "envfrom-secret".into(),
                    optional: None,
                }),
                ..Default::default()
            },
        ]);
        let mut init = container("init");
        init.env_from = Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "init-cm".into(),
                optional: Some(true),
            }),
            ..Default::default()
        }]);
        PodSpec {
            containers: vec![app],
            init_containers: Some(vec![init]),
            volumes: Some(vec![
                Volume {
                    name: "cm".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "vol-cm".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "secret".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("vol-secret".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "projected".into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![
                            VolumeProjection {
                                config_map: Some(ConfigMapProjection {
                                    name: "proj-cm".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            VolumeProjection {
                                secret: Some(SecretProjection {
                                    name: "proj-secret".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "podinfo"), ("team", "a")])),
                annotations: Some(labels(&[("prometheus.io/scrape", "true")])),
                ..Default::default()
            }),
            spec: Some(pod_spec_with_configs()),
        }
    }

    #[test]
    fn primary_name_appends_suffix() {
        assert_eq!(primary_name("podinfo"), "podinfo-primary");
    }

    #[test]
    fn selector_label_takes_first_configured_label_present() {
        let found = selector_label(
            "Deployment",
            "test",
            "podinfo",
            &selector(&[("name", "n"), ("app", "a")]),
            &defaults(),
        );
        assert_eq!(found.unwrap(), ("app".to_string(), "a".to_string()));
        let found = selector_label(
            "Deployment",
            "test",
            "podinfo",
            &selector(&[("name", "n")]),
            &defaults(),
        );
        assert_eq!(found.unwrap(), ("name".to_string(), "n".to_string()));
        let custom = vec!["app.kubernetes.io/name".to_string()];
        let found = selector_label(
            "DaemonSet",
            "test",
            "ds",
            &selector(&[("app", "x"), ("app.kubernetes.io/name", "y")]),
            &custom,
        );
        assert_eq!(found.unwrap().1, "y");
    }

    #[test]
    fn selector_label_missing_names_the_labels_and_the_flag() {
        let err = selector_label(
            "Deployment",
            "test",
            "podinfo",
            &selector(&[("tier", "web")]),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.category(), "NoSelectorLabel");
        assert_eq!(
            err.to_string(),
            "spec.selector.matchLabels of Deployment test/podinfo must contain one of app, name, \
             app.kubernetes.io/name (flag --selector-labels)"
        );
        let err = selector_label(
            "Deployment",
            "test",
            "podinfo",
            &LabelSelector::default(),
            &defaults(),
        );
        assert!(matches!(err, Err(Error::NoSelectorLabel(_))));
    }

    #[test]
    fn tracked_refs_finds_every_kind_of_reference() {
        let refs = tracked_refs(&pod_spec_with_configs());
        let keys: Vec<String> = refs.iter().map(ConfigRef::key).collect();
        assert_eq!(
            keys,
            [
                "configmap/env-cm",
                "configmap/envfrom-cm",
                "configmap/init-cm",
                "configmap/proj-cm",
                "configmap/vol-cm",
                "secret/env-secret",
                "secret/envfrom-secret",
                "secret/proj-secret",
                "secret/vol-secret",
            ]
        );
    }

    #[test]
    fn tracked_refs_of_plain_pod_is_empty() {
        let spec = PodSpec {
            containers: vec![container("app")],
            ..Default::default()
        };
        assert!(tracked_refs(&spec).is_empty());
    }

    #[test]
    fn optional_only_when_every_reference_is_optional() {
        let mut spec = pod_spec_with_configs();
        let refs = config_references(&spec);
        assert!(refs[&ConfigRef::secret("env-secret")]);
        assert!(refs[&ConfigRef::config_map("init-cm")]);
        assert!(!refs[&ConfigRef::config_map("vol-cm")]);
        // A second, required, use of init-cm makes it required.
        spec.containers[0].env_from.as_mut().unwrap().push(EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "init-cm".into(),
                optional: Some(false),
            }),
            ..Default::default()
        });
        assert!(!config_references(&spec)[&ConfigRef::config_map("init-cm")]);
    }

    #[test]
    fn rename_configs_renames_only_tracked_refs() {
        let mut spec = pod_spec_with_configs();
        let tracked: BTreeSet<ConfigRef> = tracked_refs(&spec)
            .into_iter()
            .filter(|r| r.name != "vol-secret")
            .collect();
        rename_configs(&mut spec, &tracked);
        let renamed = tracked_refs(&spec);
        let names: Vec<&str> = renamed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "env-cm-primary",
                "envfrom-cm-primary",
                "init-cm-primary",
                "proj-cm-primary",
                "vol-cm-primary",
                "env-secret-primary",
                "envfrom-secret-primary",
                "proj-secret-primary",
                "vol-secret",
            ]
        );
    }

    #[test]
    fn rename_does_not_confuse_a_configmap_and_secret_of_the_same_name() {
        let mut spec = pod_spec_with_configs();
        spec.volumes.as_mut().unwrap()[1]
            .secret
            .as_mut()
            .unwrap()
            .secret_name = Some("vol-cm".into());
        rename_configs(&mut spec, &BTreeSet::from([ConfigRef::config_map("vol-cm")]));
        let volumes = spec.volumes.unwrap();
        assert_eq!(volumes[0].config_map.as_ref().unwrap().name, "vol-cm-primary");
        assert_eq!(
            volumes[1].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("vol-cm")
        );
    }

    fn naming<'a>(configs: &'a BTreeSet<ConfigRef>, selector_labels: &'a [String]) -> PrimaryNaming<'a> {
        PrimaryNaming {
            target_name: "podinfo",
            selector_label: "app",
            selector_value: "podinfo",
            selector_labels,
            configs,
        }
    }

    #[test]
    fn primary_template_rewrites_labels_configs_and_sets_flagger_id() {
        let configs = tracked_refs(&pod_spec_with_configs());
        let labels_cfg = defaults();
        let primary = primary_pod_template(&template(), &naming(&configs, &labels_cfg), "id-1");
        let meta = primary.metadata.as_ref().unwrap();
        assert_eq!(meta.labels.as_ref().unwrap()["app"], "podinfo-primary");
        assert_eq!(meta.labels.as_ref().unwrap()["team"], "a");
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations[FLAGGER_ID], "id-1");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        let renamed = tracked_refs(primary.spec.as_ref().unwrap());
        assert!(
            renamed.iter().all(|r| r.name.ends_with("-primary")),
            "{renamed:?}"
        );
        // The target's template is untouched.
        assert_eq!(template().metadata.unwrap().labels.unwrap()["app"], "podinfo");
    }

    #[test]
    fn primary_template_gets_annotations_map_when_target_has_none() {
        let mut target = template();
        target.metadata.as_mut().unwrap().annotations = None;
        let configs = BTreeSet::new();
        let labels_cfg = defaults();
        let primary = primary_pod_template(&target, &naming(&configs, &labels_cfg), "x");
        assert_eq!(
            primary.metadata.unwrap().annotations.unwrap(),
            labels(&[(FLAGGER_ID, "x")])
        );
    }

    #[test]
    fn primary_template_points_anti_affinity_and_spread_at_primary_pods() {
        let mut target = template();
        let spec = target.spec.as_mut().unwrap();
        let term = |pairs: &[(&str, &str)]| PodAffinityTerm {
            label_selector: Some(selector(pairs)),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        };
        spec.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term(&[("app", "podinfo"), ("tier", "podinfo")]),
                }]),
                required_during_scheduling_ignored_during_execution: Some(vec![term(&[("name", "podinfo")])]),
            }),
            ..Default::default()
        });
        spec.topology_spread_constraints = Some(vec![
            TopologySpreadConstraint {
                label_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "app".into(),
                        operator: "In".into(),
                        values: Some(vec!["podinfo".into(), "other".into()]),
                    }]),
                    ..Default::default()
                }),
                max_skew: 1,
                topology_key: "zone".into(),
                when_unsatisfiable: "DoNotSchedule".into(),
                ..Default::default()
            },
            TopologySpreadConstraint {
                label_selector: Some(selector(&[("app", "other")])),
                max_skew: 1,
                topology_key: "zone".into(),
                when_unsatisfiable: "DoNotSchedule".into(),
                ..Default::default()
            },
        ]);
        let configs = BTreeSet::new();
        let labels_cfg = defaults();
        let primary = primary_pod_template(&target, &naming(&configs, &labels_cfg), "x");
        let spec = primary.spec.unwrap();
        let anti = spec.affinity.unwrap().pod_anti_affinity.unwrap();
        let preferred = &anti.preferred_during_scheduling_ignored_during_execution.unwrap()[0];
        let matched = preferred
            .pod_affinity_term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(matched["app"], "podinfo-primary");
        assert_eq!(matched["tier"], "podinfo", "not a selector label: left alone");
        let required = &anti.required_during_scheduling_ignored_during_execution.unwrap()[0];
        assert_eq!(
            required
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["name"],
            "podinfo-primary"
        );
        let spread = spec.topology_spread_constraints.unwrap();
        let expr = &spread[0]
            .label_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(expr.values.as_ref().unwrap(), &["podinfo-primary", "other"]);
        assert_eq!(
            spread[1]
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app"],
            "other"
        );
    }

    #[test]
    fn primary_selector_and_labels() {
        let configs = BTreeSet::new();
        let labels_cfg = defaults();
        let naming = naming(&configs, &labels_cfg);
        assert_eq!(naming.primary_selector(), selector(&[("app", "podinfo-primary")]));
        assert_eq!(
            naming.primary_labels(Some(&labels(&[("app", "podinfo"), ("x", "y")]))),
            labels(&[("app", "podinfo-primary"), ("x", "y")])
        );
        assert_eq!(naming.primary_labels(None), labels(&[("app", "podinfo-primary")]));
    }

    #[test]
    fn flagger_id_is_random_uuid_v4_form() {
        let a = new_flagger_id();
        let b = new_flagger_id();
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn same_template_ignores_flagger_id_only() {
        let configs = BTreeSet::new();
        let labels_cfg = defaults();
        let naming = naming(&configs, &labels_cfg);
        let a = primary_pod_template(&template(), &naming, "one");
        let b = primary_pod_template(&template(), &naming, "two");
        assert!(same_template(&a, &b));
        let mut c = b.clone();
        c.spec.as_mut().unwrap().containers[0].image = Some("podinfo:6.0.1".into());
        assert!(!same_template(&a, &c));
        // A template with only flagger-id equals one without annotations.
        let mut bare = template();
        bare.metadata.as_mut().unwrap().annotations = None;
        let mut with_id = bare.clone();
        with_id.metadata.as_mut().unwrap().annotations = Some(labels(&[(FLAGGER_ID, "z")]));
        assert!(same_template(&bare, &with_id));
    }

    #[test]
    fn filter_metadata_keeps_included_prefixes_and_drops_gitops_keys() {
        let source = labels(&[
            ("app", "podinfo"),
            ("team.example.com/owner", "a"),
            ("kustomize.toolkit.fluxcd.io/name", "apps"),
            ("argocd.argoproj.io/instance", "x"),
        ]);
        assert!(filter_metadata(Some(&source), &[]).is_empty());
        assert_eq!(
            filter_metadata(Some(&source), &["team.".to_string()]),
            labels(&[("team.example.com/owner", "a")])
        );
        assert_eq!(
            filter_metadata(Some(&source), &["*".to_string()]),
            labels(&[("app", "podinfo"), ("team.example.com/owner", "a")])
        );
        assert_eq!(
            filter_metadata(Some(&source), &["kustomize".to_string()]),
            BTreeMap::new(),
            "an include prefix never lets a GitOps key through"
        );
        assert!(filter_metadata(None, &["*".to_string()]).is_empty());
    }

    #[test]
    fn tracking_opt_out_and_secret_types() {
        assert!(tracking_disabled(Some(&labels(&[(
            CONFIG_TRACKING_ANNOTATION,
            "disabled"
        )]))));
        assert!(tracking_disabled(Some(&labels(&[(
            CONFIG_TRACKING_ANNOTATION,
            "disable"
        )]))));
        assert!(!tracking_disabled(Some(&labels(&[(
            CONFIG_TRACKING_ANNOTATION,
            "enabled"
        )]))));
        assert!(!tracking_disabled(None));
        assert!(secret_type_tracked(None));
        for t in TRACKED_SECRET_TYPES {
            assert!(secret_type_tracked(Some(t)));
        }
        assert!(!secret_type_tracked(Some("kubernetes.io/dockerconfigjson")));
        assert!(!secret_type_tracked(Some("kubernetes.io/service-account-token")));
    }

    // Expected values computed as Go does: hex(sha256(json.Marshal(data))[:8]).
    #[test]
    fn config_map_checksum_matches_go() {
        // json.Marshal(map[string]string{"a":"1"}) == `{"a":"1"}`
        assert_eq!(
            config_map_checksum(Some(&labels(&[("a", "1")]))),
            checksum(r#"{"a":"1"}"#)
        );
        assert_eq!(config_map_checksum(None), checksum("null"));
        assert_eq!(config_map_checksum(Some(&BTreeMap::new())), checksum("{}"));
        // The literal digest pins the encoding end to end (sha256 of `null`).
        assert_eq!(config_map_checksum(None), "74234e98afe7498f");
    }

    #[test]
    fn go_json_escapes_like_encoding_json() {
        let data = labels(&[("b", "<a href=\"x\">&</a>\n\t\u{1}\u{2028}é"), ("a", "\\")]);
        let json = go_json_object(data.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(
            json,
            r#"{"a":"\\","b":"\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e\n\t\u0001\u2028é"}"#
        );
    }

    #[test]
    fn secret_checksum_uses_base64_values() {
        let data = BTreeMap::from([
            ("password".to_string(), ByteString(b"s3cr3t".to_vec())),
            ("user".to_string(), ByteString(b"ad".to_vec())),
        ]);
        assert_eq!(
            secret_checksum(Some(&data)),
            checksum(r#"{"password":"czNjcjN0","user":"YWQ="}"#)
        );
        assert_eq!(secret_checksum(None), checksum("null"));
    }

    #[test]
    fn checksums_differ_when_data_differs() {
        let a = config_map_checksum(Some(&labels(&[("k", "v1")])));
        let b = config_map_checksum(Some(&labels(&[("k", "v2")])));
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn scale_to_zero_selector_is_not_part_of_the_revision() {
        let mut scaled = template();
        scaled.spec.as_mut().unwrap().node_selector = Some(labels(&[(SCALE_TO_ZERO_KEY, "true")]));
        assert_eq!(without_scale_to_zero(&scaled), template());
        let mut other = template();
        other.spec.as_mut().unwrap().node_selector =
            Some(labels(&[(SCALE_TO_ZERO_KEY, "true"), ("disk", "ssd")]));
        let stripped = without_scale_to_zero(&other);
        assert_eq!(
            stripped.spec.unwrap().node_selector,
            Some(labels(&[("disk", "ssd")]))
        );
    }

    #[test]
    fn revision_is_stable_and_sensitive_to_template_and_configs() {
        let configs = labels(&[("configmap/a", "0011")]);
        let one = revision(&template(), configs.clone());
        assert_eq!(one, revision(&template(), configs.clone()));
        assert!(one.hash.starts_with(REVISION_PREFIX));
        assert_eq!(one.hash.len(), REVISION_PREFIX.len() + 32);
        assert_eq!(one.configs, configs);
        let mut changed = template();
        changed.spec.as_mut().unwrap().containers[0].image = Some("podinfo:6.0.1".into());
        assert_ne!(revision(&changed, configs.clone()).hash, one.hash);
        assert_ne!(
            revision(&template(), labels(&[("configmap/a", "0012")])).hash,
            one.hash
        );
        assert_ne!(revision(&template(), BTreeMap::new()).hash, one.hash);
    }

    #[test]
    fn canonical_json_sorts_keys_whatever_the_map_order() {
        let mut a = serde_json::Map::new();
        a.insert("b".into(), json!(1));
        a.insert("a".into(), json!({"y": [1, {"d": 1, "c": 2}], "x": null}));
        let mut out = String::new();
        canonical_json(&Value::Object(a), &mut out);
        assert_eq!(out, r#"{"a":{"x":null,"y":[1,{"c":2,"d":1}]},"b":1}"#);
    }

    fn service(port: i32, target_port: Option<IntOrString>) -> CanaryService {
        CanaryService {
            port,
            target_port,
            ..Default::default()
        }
    }

    fn with_ports(name: &str, ports: &[(Option<&str>, i32)]) -> Container {
        let mut c = container(name);
        c.ports = Some(
            ports
                .iter()
                .map(|(n, p)| ContainerPort {
                    name: n.map(String::from),
                    container_port: *p,
                    ..Default::default()
                })
                .collect(),
        );
        c
    }

    #[test]
    fn discover_ports_skips_service_port_and_proxies() {
        let spec = PodSpec {
            containers: vec![
                with_ports(
                    "podinfo",
                    &[(Some("http"), 9898), (Some("http-metrics"), 9797), (None, 9999)],
                ),
                with_ports("istio-proxy", &[(Some("http-envoy-prom"), 15090)]),
            ],
            ..Default::default()
        };
        let ports = discover_ports(&spec, &service(9898, None));
        let found: Vec<(String, i32)> = ports.iter().map(|p| (p.name.clone().unwrap(), p.port)).collect();
        assert_eq!(
            found,
            [
                ("http-metrics".to_string(), 9797),
                ("tcp-podinfo-2".to_string(), 9999)
            ]
        );
        assert!(
            ports
                .iter()
                .all(|p| p.target_port == Some(IntOrString::Int(p.port)))
        );
        assert!(ports.iter().all(|p| p.protocol.as_deref() == Some("TCP")));
        // A numeric targetPort is the service's port in the container.
        let ports = discover_ports(&spec, &service(80, Some(IntOrString::Int(9898))));
        assert_eq!(ports.len(), 2);
        // A named targetPort excludes the port of that name.
        let ports = discover_ports(
            &spec,
            &service(80, Some(IntOrString::String("http-metrics".into()))),
        );
        let names: Vec<_> = ports.iter().map(|p| p.name.clone().unwrap()).collect();
        assert_eq!(names, ["http", "tcp-podinfo-2"]);
    }

    #[test]
    fn scale_from_zero_prefers_target_then_hpa_then_primary() {
        assert_eq!(scale_from_zero_replicas(Some(3), Some(2), Some(5)), 3);
        assert_eq!(scale_from_zero_replicas(Some(0), Some(2), Some(5)), 2);
        assert_eq!(scale_from_zero_replicas(Some(0), None, Some(5)), 5);
        assert_eq!(scale_from_zero_replicas(None, Some(0), Some(0)), 1);
        assert_eq!(scale_from_zero_replicas(None, None, None), 1);
    }

    #[test]
    fn primary_hpa_spec_targets_primary_and_applies_overrides() {
        let target = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        });
        let spec = primary_hpa_spec(&target, "podinfo-primary", None);
        assert_eq!(
            spec["scaleTargetRef"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo-primary"})
        );
        assert_eq!(spec["minReplicas"], 2);
        assert_eq!(spec["maxReplicas"], 4);
        assert_eq!(spec["metrics"], target["metrics"]);
        assert_eq!(spec["behavior"], target["behavior"]);
        let overrides = ScalerReplicas {
            min_replicas: Some(3),
            max_replicas: None,
        };
        let spec = primary_hpa_spec(&target, "podinfo-primary", Some(&overrides));
        assert_eq!(spec["minReplicas"], 3);
        assert_eq!(spec["maxReplicas"], 4);
        let bare = primary_hpa_spec(&json!({"maxReplicas": 2}), "p", None);
        assert_eq!(bare, json!({"scaleTargetRef": {"name": "p"}, "maxReplicas": 2}));
    }
}
