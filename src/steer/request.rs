//! The envelope a command from the command line travels in: a CertificateSigningRequest for
//! the signer `flaggit.dev/command`, which nothing ever signs. It is used because the API
//! server writes the requester's identity into `spec.username`, `spec.groups`, `spec.uid` and
//! `spec.extra` itself, and no one can change them afterwards: the controller learns who asked
//! from the API server, not from anything the caller wrote. The command rides in
//! annotations, sealed by the object's immutable name (a digest of them), so that a later edit
//! of the annotations is detected and refused.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use kube::api::ObjectMeta;
use sha2::Digest;

/// The signer name of command requests. No signer serves it, so no certificate is ever issued.
pub const SIGNER: &str = "flaggit.dev/command";
const CANARY: &str = "flaggit.dev/canary";
const COMMAND: &str = "flaggit.dev/command";
const REASON: &str = "flaggit.dev/reason";
const NONCE: &str = "flaggit.dev/nonce";
/// Label with the canary's namespace, so a controller confined to one namespace
/// (`--namespace`) watches only its own requests. Only a filter: the sealed annotations decide.
pub const NAMESPACE_LABEL: &str = "flaggit.dev/namespace";
/// A fixed PKCS#10 request (CN=flaggit-command), which the API requires in `spec.request`.
/// Its private key was thrown away: even a signed certificate for it would be useless.
const REQUEST_PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIHrMIGSAgEAMDAxGDAWBgNVBAMMD2ZsYWdnaXQtY29tbWFuZDEUMBIGA1UECgwL
ZmxhZ2dpdC5kZXYwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ4uJIA2nxdEHd/
UIgOHJZnmx4/cycJMJbB6y/NtkZzv0gda4PCbHOSTcyGAsy8rZ3oCzx8iDuPk9H8
0fPGWMCfoAAwCgYIKoZIzj0EAwIDSAAwRQIgB/KotEN0hffeO37lPzA1qxRnQ1Ys
mKzeizeMVAxfqzQCIQDlNOGX1mxTNP64orByaZ7CJC5mN/yWoY5p7R/9OQhYmw==
-----END CERTIFICATE REQUEST-----
";
/// The longest reason kept.
pub const MAX_REASON: usize = 200;

/// What the command line can ask of a canary. Each is also the RBAC verb on
/// `canaries.flagger.app` that allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Promote,
    Rollback,
    Pause,
    Resume,
    Retry,
}

impl Verb {
    pub const ALL: [Verb; 5] = [
        Self::Promote,
        Self::Rollback,
        Self::Pause,
        Self::Resume,
        Self::Retry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Rollback => "rollback",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Retry => "retry",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command for one canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub verb: Verb,
    pub namespace: String,
    pub name: String,
    /// Why (rollback only); empty if not given.
    pub reason: String,
}

/// Who sent a request, as the API server wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why an object is not a command request the controller can act on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("not a flaggit command request (signer {0:?})")]
    Signer(String),
    #[error("annotation {0} is missing or malformed")]
    Annotation(&'static str),
    #[error("the annotations were changed after the request was made (its name does not match them)")]
    Tampered,
    #[error("the API server recorded no requester")]
    NoRequester,
}

impl Invalid {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Signer(_) => "Signer",
            Self::Annotation(_) => "Annotation",
            Self::Tampered => "Tampered",
            Self::NoRequester => "NoRequester",
        }
    }
}

fn seal(command: &Command, nonce: &str) -> String {
    let digest = sha2::Sha256::digest(
        format!(
            "{}\n{}\n{}\n{}\n{}",
            command.verb, command.namespace, command.name, command.reason, nonce
        )
        .as_bytes(),
    );
    format!("flaggit-{}-{}", command.verb, hex::encode(&digest[..12]))
}

/// The request object the command line creates for `command`; `nonce` makes it unique.
pub fn build(command: &Command, nonce: &str) -> CertificateSigningRequest {
    let reason: String = command.reason.chars().take(MAX_REASON).collect();
    let command = Command {
        reason,
        ..command.clone()
    };
    let annotations = BTreeMap::from([
        (
            CANARY.to_string(),
            format!("{}/{}", command.namespace, command.name),
        ),
        (COMMAND.to_string(), command.verb.to_string()),
        (REASON.to_string(), command.reason.clone()),
        (NONCE.to_string(), nonce.to_string()),
    ]);
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(seal(&command, nonce)),
            labels: Some(BTreeMap::from([(
                NAMESPACE_LABEL.to_string(),
                command.namespace.clone(),
            )])),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(REQUEST_PEM.as_bytes().to_vec()),
            signer_name: SIGNER.to_string(),
            usages: Some(vec!["digital signature".into()]),
            ..Default::default()
        },
        status: None,
    }
}

/// The command a request carries and who sent it, if it is a sound flaggit command request.
pub fn parse(csr: &CertificateSigningRequest) -> Result<(Command, Requester), Invalid> {
    if csr.spec.signer_name != SIGNER {
        return Err(Invalid::Signer(csr.spec.signer_name.clone()));
    }
    let annotations = csr.metadata.annotations.clone().unwrap_or_default();
    let get = |key: &'static str| annotations.get(key).ok_or(Invalid::Annotation(key));
    let (namespace, name) = get(CANARY)?
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .ok_or(Invalid::Annotation(CANARY))?;
    let verb = Verb::parse(get(COMMAND)?).ok_or(Invalid::Annotation(COMMAND))?;
    let command = Command {
        verb,
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason: get(REASON)?.clone(),
    };
    if csr.metadata.name.as_deref() != Some(seal(&command, get(NONCE)?).as_str()) {
        return Err(Invalid::Tampered);
    }
    let username = csr
        .spec
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or(Invalid::NoRequester)?;
    let requester = Requester {
        username,
        uid: csr.spec.uid.clone(),
        groups: csr.spec.groups.clone().unwrap_or_default(),
        extra: csr.spec.extra.clone().unwrap_or_default(),
    };
    Ok((command, requester))
}

/// The verdict on a request, once the controller wrote it: Ok(what it did) or Err(why not).
pub fn verdict(csr: &CertificateSigningRequest) -> Option<Result<String, String>> {
    let conditions = csr.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find_map(|c| match c.type_.as_str() {
        "Approved" => Some(Ok(c.message.clone().unwrap_or_default())),
        "Denied" | "Failed" => Some(Err(c.message.clone().unwrap_or_default())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollback() -> Command {
        Command {
            verb: Verb::Rollback,
            namespace: "demo".into(),
            name: "podinfo".into(),
            reason: "errors in the logs".into(),
        }
    }

    fn as_created(mut csr: CertificateSigningRequest, user: &str) -> CertificateSigningRequest {
        csr.spec.username = Some(user.into());
        csr.spec.groups = Some(vec!["system:authenticated".into()]);
        csr
    }

    #[test]
    fn a_request_reads_back_with_the_requester_the_api_server_wrote() {
        let csr = as_created(build(&rollback(), "n1"), "alice");
        let (command, requester) = parse(&csr).expect("a sound request");
        assert_eq!(command, rollback());
        assert_eq!(requester.username, "alice");
        assert_eq!(requester.groups, ["system:authenticated"]);
        assert!(
            csr.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("flaggit-rollback-"))
        );
        assert_eq!(
            csr.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NAMESPACE_LABEL))
                .map(String::as_str),
            Some(rollback().namespace.as_str()),
            "a namespaced controller selects its requests by this label"
        );
        assert_ne!(
            build(&rollback(), "n2").metadata.name,
            csr.metadata.name,
            "the nonce makes each request new"
        );
    }

    #[test]
    fn edited_annotations_or_a_missing_requester_are_refused() {
        let mut csr = as_created(build(&rollback(), "n1"), "alice");
        csr.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(COMMAND.into(), "promote".into());
        assert_eq!(parse(&csr), Err(Invalid::Tampered));
        let mut csr = as_created(build(&rollback(), "n1"), "alice");
        csr.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(REASON.into(), "something else".into());
        assert_eq!(parse(&csr), Err(Invalid::Tampered));
        let unattributed = build(&rollback(), "n1");
        assert_eq!(parse(&unattributed), Err(Invalid::NoRequester));
        let mut other = as_created(build(&rollback(), "n1"), "alice");
        other.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
        assert!(matches!(parse(&other), Err(Invalid::Signer(_))));
    }

    #[test]
    fn a_long_reason_is_cut_and_still_sealed() {
        let mut command = rollback();
        command.reason = "x".repeat(1000);
        let csr = as_created(build(&command, "n"), "bob");
        let (parsed, _) = parse(&csr).expect("sound");
        assert_eq!(parsed.reason.len(), MAX_REASON);
    }
}
