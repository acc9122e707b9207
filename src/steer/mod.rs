//! Steering a canary from the command line: `flaggit status`, `promote`, `rollback`, `pause`,
//! `resume` and `retry` (also as the kubectl plugin `kubectl flaggit`).
//!
//! Trust model (docs/cli.md): a command travels as a CertificateSigningRequest for the signer
//! `flaggit.dev/command` ([`request`]); the API server writes who created it into its spec,
//! so the controller learns the caller's identity from the API server. The controller then
//! asks the API server, with a SubjectAccessReview, whether that identity has the verb of
//! the command (`promote`, `rollback`, ...) on `canaries.flagger.app` in the canary's
//! namespace: RBAC decides. The verdict is written back as the request's Approved / Denied
//! condition, and an accepted command is recorded in Git with the caller's name.

pub mod client;
pub mod commands;
pub mod judge;
pub mod request;
pub mod view;
