//! The controller's API requests, counted from kube-apiserver's audit log: how many of each
//! kind (verb, resource, subresource) it sent between two points of the benchmark, and which
//! of them the API server answered with an error. Counts do not depend on how busy the
//! machine is, so two commits can be compared on a shared machine.
//!
//! The API server writes the log when `FLAGGIT_TEST_AUDIT_LOG` names a file (see
//! `scripts/control-plane.sh`); the controller runs as an impersonated user of its own so its
//! requests can be told from the benchmark's and the kubelet stand-in's.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The user the controller impersonates in the benchmark.
pub const USER: &str = "flaggit-engine-bench";

/// The audit log the API server writes, when the benchmark was asked to count requests.
pub fn log_path() -> Option<PathBuf> {
    let path = std::env::var_os("FLAGGIT_TEST_AUDIT_LOG")?;
    let path = PathBuf::from(path);
    assert!(
        path.is_absolute(),
        "FLAGGIT_TEST_AUDIT_LOG must be an absolute path (the API server runs in another directory), got {}",
        path.display()
    );
    Some(path)
}

/// Writes a copy of `kubeconfig` whose user impersonates [`USER`] in the group
/// `system:masters` (so it may do what the admin may) and returns its path.
pub fn impersonating_kubeconfig(kubeconfig: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig reads");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig is YAML");
    for entry in doc["users"].as_sequence_mut().expect("kubeconfig has users") {
        entry["user"]["as"] = USER.into();
        entry["user"]["as-groups"] = vec![serde_yaml::Value::from("system:masters")].into();
    }
    let path = kubeconfig.with_file_name("kubeconfig-engine-bench");
    std::fs::write(&path, serde_yaml::to_string(&doc).expect("kubeconfig serializes"))
        .expect("write the impersonating kubeconfig");
    path
}

/// Where the log ends now: the start of the next segment.
pub fn mark(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// One line of the audit log, the fields counted here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    verb: String,
    #[serde(default)]
    impersonated_user: Option<UserInfo>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    api_group: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// The controller's requests in one segment of the log.
#[derive(Serialize, Default)]
pub struct Requests {
    /// All requests.
    pub total: u64,
    /// Per kind: `verb resource[/subresource][.group]` (or `verb <path>` for non-resource
    /// requests such as discovery).
    pub by_kind: BTreeMap<String, u64>,
    /// Answers with an error status, per kind and code (`get deployments 404`).
    pub errors: BTreeMap<String, u64>,
}

/// Counts the controller's requests between the byte offsets `from` and `to` of the log.
pub fn count(log: &Path, from: u64, to: u64) -> Requests {
    let mut file = std::fs::File::open(log).expect("the audit log opens");
    file.seek(SeekFrom::Start(from)).expect("seek in the audit log");
    let mut requests = Requests::default();
    let mut started = std::collections::HashSet::new();
    for line in BufReader::new(file.take(to.saturating_sub(from))).lines() {
        let line = line.expect("the audit log reads");
        // A segment boundary can fall inside a line the API server was writing.
        let Ok(event) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        if event.impersonated_user.as_ref().map(|u| u.username.as_str()) != Some(USER) {
            continue;
        }
        // The impersonated user is known from the stage after RequestReceived on: a request
        // counts at ResponseStarted when it is long-running (a watch), else at ResponseComplete.
        let kind = kind(&event);
        let counted = match event.stage.as_str() {
            "ResponseStarted" => started.insert(event.audit_id),
            "ResponseComplete" => !started.contains(&event.audit_id),
            _ => false,
        };
        if counted {
            requests.total += 1;
            *requests.by_kind.entry(kind.clone()).or_default() += 1;
        }
        let code = event.response_status.map(|s| s.code).unwrap_or(0);
        if event.stage == "ResponseComplete" && code >= 400 {
            *requests.errors.entry(format!("{kind} {code}")).or_default() += 1;
        }
    }
    requests
}

fn kind(event: &Event) -> String {
    match &event.object_ref {
        Some(object) if !object.resource.is_empty() => {
            let mut kind = format!("{} {}", event.verb, object.resource);
            if !object.subresource.is_empty() {
                kind.push('/');
                kind.push_str(&object.subresource);
            }
            if !object.api_group.is_empty() {
                kind.push('.');
                kind.push_str(&object.api_group);
            }
            kind
        }
        _ => {
            let path = event.request_uri.split('?').next().unwrap_or_default();
            format!("{} {path}", event.verb)
        }
    }
}
