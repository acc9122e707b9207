//! Plain values the state machine reads and the act layers produce: routes, readiness, the
//! target's revision. They live here so that `rollout` depends on nothing but `api`.

use std::collections::BTreeMap;

/// Traffic split between primary and canary, as a router reports or is asked to set it.
/// `primary + canary` is always 100; `mirrored` means the canary also receives a copy of the
/// primary's traffic (its responses are discarded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub primary: i32,
    pub canary: i32,
    pub mirrored: bool,
}

impl Routes {
    /// All traffic to the primary, no mirroring.
    pub const PRIMARY: Routes = Routes {
        primary: 100,
        canary: 0,
        mirrored: false,
    };

    /// `canary` percent to the canary, the rest to the primary.
    pub fn canary(weight: i32) -> Self {
        let canary = weight.clamp(0, 100);
        Self {
            primary: 100 - canary,
            canary,
            mirrored: false,
        }
    }
}

/// Whether a workload's pods are ready to take traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Enough pods are available.
    Ready,
    /// Still rolling out; ask again later. The text says what is missing.
    Waiting(String),
    /// It will not become ready (progress deadline exceeded): roll back.
    Failed(String),
}

/// What identifies a version of the target: a hash of its pod template and the checksums of
/// the ConfigMaps and Secrets it uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revision {
    /// `flaggit1-` prefixed hash of the pod template and the tracked config checksums.
    pub hash: String,
    /// `configmap/<name>` or `secret/<name>` -> checksum (Flagger's `trackedConfigs`).
    pub configs: BTreeMap<String, String>,
}

/// The prefix of every revision hash flaggit writes to `status.lastAppliedSpec` and
/// `status.lastPromotedSpec`. A hash without it was written by Flagger.
pub const REVISION_PREFIX: &str = "flaggit1-";

/// The outcome of one metric check of the analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// The metric's `name` in the Canary.
    pub name: String,
    /// The value the query returned (durations in milliseconds), if it returned one.
    pub value: Option<f64>,
    /// Whether the value is within the threshold range.
    pub passed: bool,
    /// For a failed check, the event message (Flagger's wording, e.g. "Halt podinfo.test
    /// advancement success rate 91.20% < 99%"); empty otherwise.
    pub message: String,
}
