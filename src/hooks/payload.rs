//! The JSON body every webhook receives (Flagger's `CanaryWebhookPayload`) and its checksum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{Canary, CanaryPhase};

/// What a webhook is POSTed, field for field Flagger's `CanaryWebhookPayload`:
/// `{"name","namespace","phase","checksum","metadata"}`, `metadata` left out when empty
/// (Go's `omitempty`), so load testers and gates written for Flagger read it unchanged.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Payload {
    /// Name of the Canary.
    pub name: String,
    /// Namespace of the Canary.
    pub namespace: String,
    /// The phase the release is in, as the hook type defines it.
    pub phase: CanaryPhase,
    /// Identifies the revision under release: see [`checksum`].
    pub checksum: String,
    /// The webhook's `metadata`, sent as-is (plus the event keys for `event` hooks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Payload {
    /// The payload for `canary` in `phase` carrying `metadata`.
    pub fn new(canary: &Canary, phase: CanaryPhase, metadata: BTreeMap<String, String>) -> Self {
        Self {
            name: canary.metadata.name.clone().unwrap_or_default(),
            namespace: canary.metadata.namespace.clone().unwrap_or_default(),
            phase,
            checksum: checksum(canary),
            metadata,
        }
    }
}

/// The fields the checksum covers, in a fixed order; `BTreeMap` keeps keys sorted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChecksumInput<'a> {
    tracked_configs: &'a BTreeMap<String, String>,
    last_applied_spec: &'a str,
}

/// Identifies the revision a webhook is called for, so a gate can tell two releases apart.
///
/// Flagger hashes `{TrackedConfigs, LastAppliedSpec}` with FNV over go-spew output, which no
/// other implementation can reproduce; flaggit's checksum covers the same two status fields
/// but is its own and stable across versions and platforms: the lowercase hex of the first
/// 8 bytes of SHA-256 over the compact JSON
/// `{"trackedConfigs":{<keys sorted>},"lastAppliedSpec":"<hash>"}`, a missing field counting
/// as `{}` or `""`.
pub fn checksum(canary: &Canary) -> String {
    let empty = BTreeMap::new();
    let status = canary.status.as_ref();
    let input = ChecksumInput {
        tracked_configs: status.and_then(|s| s.tracked_configs.as_ref()).unwrap_or(&empty),
        last_applied_spec: status.and_then(|s| s.last_applied_spec.as_deref()).unwrap_or(""),
    };
    let json = serde_json::to_vec(&input).expect("a map of strings and a string always serialize");
    hex::encode(&Sha256::digest(&json)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanarySpec, CanaryStatus};

    fn canary(tracked: &[(&str, &str)], applied: Option<&str>) -> Canary {
        let mut canary = Canary::new("podinfo", CanarySpec::default());
        canary.metadata.namespace = Some("test".into());
        canary.status = Some(CanaryStatus {
            tracked_configs: Some(
                tracked
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            last_applied_spec: applied.map(str::to_string),
            ..CanaryStatus::default()
        });
        canary
    }

    #[test]
    fn payload_json_has_flaggers_shape() {
        let c = canary(&[], Some("abc"));
        let metadata = BTreeMap::from([("cmd".to_string(), "hey -z 1m".to_string())]);
        let payload = Payload::new(&c, CanaryPhase::Progressing, metadata);
        let json = serde_json::to_string(&payload).expect("serializes");
        let expected = format!(
            r#"{{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"{}","metadata":{{"cmd":"hey -z 1m"}}}}"#,
            checksum(&c)
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn empty_metadata_is_left_out_like_go_omitempty() {
        let c = canary(&[], None);
        let payload = Payload::new(&c, CanaryPhase::Succeeded, BTreeMap::new());
        let value = serde_json::to_value(&payload).expect("serializes");
        let keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 4);
        assert!(!keys.contains(&"metadata"));
        assert_eq!(value["phase"], "Succeeded");
    }

    #[test]
    fn payload_without_namespace_or_status_still_builds() {
        let c = Canary::new("x", CanarySpec::default());
        let payload = Payload::new(&c, CanaryPhase::Waiting, BTreeMap::new());
        assert_eq!(payload.namespace, "");
        assert_eq!(payload.checksum, checksum(&canary(&[], None)));
    }

    #[test]
    fn checksum_is_16_hex_chars_and_pinned() {
        let c = canary(&[("configmap/podinfo-config", "a1b2")], Some("5d8f9c"));
        let sum = checksum(&c);
        assert_eq!(sum.len(), 16);
        assert!(
            sum.chars()
                .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase())
        );
        // The documented construction, computed independently of `checksum`.
        let json = r#"{"trackedConfigs":{"configmap/podinfo-config":"a1b2"},"lastAppliedSpec":"5d8f9c"}"#;
        assert_eq!(sum, hex::encode(&Sha256::digest(json.as_bytes())[..8]));
    }

    #[test]
    fn checksum_is_stable_and_ignores_insertion_order() {
        let a = canary(&[("configmap/a", "1"), ("secret/b", "2")], Some("h"));
        let b = canary(&[("secret/b", "2"), ("configmap/a", "1")], Some("h"));
        assert_eq!(checksum(&a), checksum(&b));
        assert_eq!(checksum(&a), checksum(&a.clone()));
    }

    #[test]
    fn checksum_changes_with_either_field() {
        let base = checksum(&canary(&[("configmap/a", "1")], Some("h")));
        assert_ne!(base, checksum(&canary(&[("configmap/a", "2")], Some("h"))));
        assert_ne!(base, checksum(&canary(&[("secret/a", "1")], Some("h"))));
        assert_ne!(base, checksum(&canary(&[("configmap/a", "1")], Some("h2"))));
        assert_ne!(base, checksum(&canary(&[], Some("h"))));
    }

    #[test]
    fn missing_status_fields_hash_like_empty_ones() {
        let mut none = Canary::new("podinfo", CanarySpec::default());
        none.status = None;
        assert_eq!(checksum(&none), checksum(&canary(&[], Some(""))));
    }
}
