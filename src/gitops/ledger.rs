//! The ledger: one small YAML file per canary in the config repo that says which revision is
//! promoted, what is rolling out now, and how the last releases ended. Read back after a
//! cluster rebuild, so an unanalysed version is never promoted blindly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{PendingRecord, RecordedCheck};

/// Outcomes kept in `history`.
pub const HISTORY: usize = 10;

const HEADER: &str = "# flaggit ledger: the Git record of one canary. Written by flaggit at every rollout \
record;\n# hand edits are overwritten. Keep this directory out of what Flux / Argo CD apply.\n";

/// The default directory of the ledgers in the config repo.
pub const DEFAULT_DIR: &str = ".flaggit";

/// Path of a canary's ledger in the single-cluster layout: `<dir>/<namespace>/<name>.yaml`.
pub fn path(dir: &str, namespace: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        format!("{namespace}/{name}.yaml")
    } else {
        format!("{dir}/{namespace}/{name}.yaml")
    }
}

/// Where one controller's ledgers live: the directory, and the name of its cluster when
/// several clusters write to one repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub dir: String,
    /// `--cluster-name`; None keeps the single-cluster layout of earlier versions.
    pub cluster: Option<String>,
}

impl Layout {
    pub fn new(dir: &str, cluster: Option<&str>) -> Self {
        Self {
            dir: dir.to_string(),
            cluster: cluster.filter(|c| !c.is_empty()).map(str::to_string),
        }
    }

    /// The ledger this controller writes: `<dir>/<cluster>/<namespace>/<name>.yaml`, or
    /// `<dir>/<namespace>/<name>.yaml` without a cluster name.
    pub fn path(&self, namespace: &str, name: &str) -> String {
        match &self.cluster {
            Some(cluster) => path(&self.dir, &format!("{cluster}/{namespace}"), name),
            None => path(&self.dir, namespace, name),
        }
    }

    /// The single-cluster path a named cluster falls back to while it has no ledger of its
    /// own yet (the migration from one cluster to a fleet); None without a cluster name.
    pub fn legacy_path(&self, namespace: &str, name: &str) -> Option<String> {
        self.cluster.as_ref().map(|_| path(&self.dir, namespace, name))
    }
}

/// Whether `name` can name a cluster: it becomes a directory of the ledger and a part of
/// release branch names, so lowercase letters, digits, `-`, `_` and `.`, starting with a letter
/// or digit, at most 63 characters.
pub fn valid_cluster_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..")
        && !name.ends_with(".lock")
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--cluster-name {name:?} is not a valid cluster name: use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit (for example prod-eu-1)"
        ))
    }
}

/// The ledger file's content. Field order is the order written.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// `namespace/name`.
    pub canary: String,
    /// The cluster this ledger belongs to (`--cluster-name`); empty in the single-cluster
    /// layout.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// The uid of the writing cluster's `kube-system` namespace: tells two clusters that share
    /// a name (or both have none) apart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_uid: String,
    /// The Canary object's uid: a recreated Canary starts its record numbers over.
    #[serde(default)]
    pub uid: String,
    /// `Kind/name` of the target.
    #[serde(default)]
    pub target: String,
    /// The last record applied; a record with a number not above it is already here.
    #[serde(default)]
    pub record: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Promoted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// The last outcomes, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Outcome>,
    /// Set when the canary was deleted (off-boarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Closed>,
}

/// The revision the primary serves.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Promoted {
    pub revision: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
    /// The data of the promoted ConfigMaps (by name), which rebuild recovery gives the primary
    /// back. Secrets are never written here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// The config-repo commit the promoted version was declared in (the branch head when the
    /// promotion was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    pub at: String,
}

/// The release in progress.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub revision: String,
    pub phase: String,
    pub weight: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iteration: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_checks: i32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<RecordedCheck>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub started_at: String,
    pub updated_at: String,
}

/// How a release ended.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub revision: String,
    /// `Promoted`, `RolledBack` or `Cancelled`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    pub at: String,
}

/// The canary was deleted.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Closed {
    pub at: String,
    pub reason: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What a ledger file could not be read as.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read the flaggit ledger ({source}); fix or delete the file in Git")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: cannot read the flaggit ledger ({source}); fix or delete the file in Git")]
    Limit {
        path: String,
        #[source]
        source: super::limits::Exceeded,
    },
    #[error("cannot write the ledger: {0}")]
    Serialize(#[source] serde_yaml::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Parse { .. } | Self::Limit { .. } => "ParseLedger",
            Self::Serialize(_) => "WriteLedger",
        }
    }
}

impl Ledger {
    /// A new ledger for canary `namespace/name`.
    pub fn new(id: &str, uid: &str, target: &str) -> Self {
        Self {
            canary: id.to_string(),
            uid: uid.to_string(),
            target: target.to_string(),
            ..Self::default()
        }
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, Error> {
        super::limits::check(text).map_err(|source| Error::Limit {
            path: path.to_string(),
            source,
        })?;
        serde_yaml::from_str(text).map_err(|source| Error::Parse {
            path: path.to_string(),
            source,
        })
    }

    pub fn to_yaml(&self) -> Result<String, Error> {
        let body = serde_yaml::to_string(self).map_err(Error::Serialize)?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Adopts the Canary object `uid`: a different object (recreated, or the cluster rebuilt)
    /// numbers its records from 1 again; the promoted revision and history stay.
    pub fn adopt(&mut self, uid: &str, target: &str) {
        if self.uid != uid {
            self.uid = uid.to_string();
            self.record = 0;
            self.closed = None;
        }
        self.target = target.to_string();
    }

    /// Claims the ledger for the cluster `name` (uid `uid`) before writing. `wrote_before` says
    /// whether this controller pushed this ledger earlier in its life: if another cluster wrote
    /// it since, two live controllers share one ledger and clobber each other's records, and the
    /// returned warning says how to fix it. A foreign uid seen for the first time is a rebuilt
    /// cluster (or a migration) taking over, and is adopted quietly.
    pub fn claim(&mut self, path: &str, name: Option<&str>, uid: &str, wrote_before: bool) -> Option<String> {
        let foreign = !uid.is_empty() && !self.cluster_uid.is_empty() && self.cluster_uid != uid;
        let warning = (foreign && wrote_before).then(|| {
            format!(
                "{path} was written by another cluster (kube-system uid {}) since this controller last wrote it: two controllers share the cluster name {}; give each cluster its own --cluster-name (CLUSTER_NAME) so their records do not clobber each other",
                self.cluster_uid,
                name.map_or("(none)".to_string(), |n| format!("{n:?}"))
            )
        });
        self.cluster = name.unwrap_or_default().to_string();
        if !uid.is_empty() {
            self.cluster_uid = uid.to_string();
        }
        warning
    }

    /// Whether a single-cluster ledger may seed the ledger of a named cluster: it was written
    /// before clusters had names, or by this very cluster.
    pub fn seeds(&self, uid: &str) -> bool {
        self.cluster.is_empty() && (self.cluster_uid.is_empty() || self.cluster_uid == uid)
    }

    /// Whether `record` is already in this ledger.
    pub fn has(&self, record: &PendingRecord) -> bool {
        record.seq <= self.record
    }

    /// Applies one record. `head` is the config-repo commit the record is written on.
    pub fn apply(&mut self, record: &PendingRecord, head: &str) {
        self.record = record.seq;
        let time = record.time.clone();
        match record.kind.as_str() {
            "Initialized" | "Recovered" => {
                if record.kind == "Initialized" || self.promoted.is_none() {
                    self.promoted = Some(promoted(record, head));
                }
                self.rollout = None;
            }
            "Promoted" => {
                self.promoted = Some(promoted(record, head));
                self.end(record, "Promoted");
            }
            "RolledBack" => self.end(record, "RolledBack"),
            "Cancelled" => self.end(record, "Cancelled"),
            "OffBoarded" => {
                self.rollout = None;
                self.closed = Some(Closed {
                    at: time,
                    reason: record.reason.clone(),
                });
            }
            _ => {
                let started_at = match &self.rollout {
                    Some(r) if r.revision == record.revision => r.started_at.clone(),
                    _ => time.clone(),
                };
                let checks = if record.checks.is_empty() {
                    self.rollout
                        .as_ref()
                        .map(|r| r.checks.clone())
                        .unwrap_or_default()
                } else {
                    record.checks.clone()
                };
                self.rollout = Some(Rollout {
                    revision: record.revision.clone(),
                    phase: record.phase.clone(),
                    weight: record.weight,
                    iteration: record.iteration,
                    failed_checks: record.failed_checks,
                    images: record.images.clone(),
                    checks,
                    reason: record.reason.clone(),
                    started_at,
                    updated_at: time,
                });
            }
        }
    }

    fn end(&mut self, record: &PendingRecord, outcome: &str) {
        self.rollout = None;
        self.history.insert(
            0,
            Outcome {
                revision: record.revision.clone(),
                outcome: outcome.to_string(),
                reason: record.reason.clone(),
                images: record.images.clone(),
                at: record.time.clone(),
            },
        );
        self.history.truncate(HISTORY);
    }
}

fn promoted(record: &PendingRecord, head: &str) -> Promoted {
    Promoted {
        revision: record.revision.clone(),
        images: record.images.clone(),
        configs: record.configs.clone(),
        config_maps: BTreeMap::new(),
        commit: head.to_string(),
        at: record.time.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, kind: &str, revision: &str, image: &str) -> PendingRecord {
        PendingRecord {
            seq,
            kind: kind.into(),
            revision: revision.into(),
            phase: "Progressing".into(),
            time: format!("2026-11-22T10:00:{seq:02}Z"),
            images: BTreeMap::from([("podinfo".into(), image.into())]),
            ..Default::default()
        }
    }

    #[test]
    fn a_release_moves_from_rollout_to_promoted_and_history() {
        let mut ledger = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        ledger.apply(&record(1, "Initialized", "r1", "podinfo:1"), "c1");
        assert_eq!(ledger.promoted.as_ref().map(|p| p.revision.as_str()), Some("r1"));
        ledger.apply(&record(2, "Detected", "r2", "podinfo:2"), "c2");
        let mut step = record(3, "Step", "r2", "podinfo:2");
        step.weight = 20;
        ledger.apply(&step, "c3");
        let rollout = ledger.rollout.clone().expect("in progress");
        assert_eq!(rollout.weight, 20);
        assert_eq!(rollout.started_at, "2026-11-22T10:00:02Z");
        ledger.apply(&record(4, "Promoted", "r2", "podinfo:2"), "c4");
        assert_eq!(ledger.rollout, None);
        let promoted = ledger.promoted.clone().expect("promoted");
        assert_eq!(
            (promoted.revision.as_str(), promoted.commit.as_str()),
            ("r2", "c4")
        );
        assert_eq!(ledger.history[0].outcome, "Promoted");
        assert_eq!(ledger.record, 4);
    }

    #[test]
    fn a_rollback_keeps_the_promoted_revision() {
        let mut ledger = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        ledger.apply(&record(1, "Initialized", "r1", "podinfo:1"), "c1");
        ledger.apply(&record(2, "Detected", "r2", "podinfo:2"), "c2");
        let mut back = record(3, "RolledBack", "r2", "podinfo:2");
        back.reason = "failed checks threshold reached 2".into();
        ledger.apply(&back, "c3");
        assert_eq!(ledger.promoted.as_ref().map(|p| p.revision.as_str()), Some("r1"));
        assert_eq!(ledger.history[0].outcome, "RolledBack");
        assert_eq!(ledger.history[0].reason, "failed checks threshold reached 2");
    }

    #[test]
    fn records_already_applied_are_recognised_until_a_new_canary_object() {
        let mut ledger = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        ledger.apply(&record(5, "Initialized", "r1", "podinfo:1"), "c1");
        assert!(ledger.has(&record(5, "Initialized", "r1", "podinfo:1")));
        assert!(!ledger.has(&record(6, "Detected", "r2", "podinfo:2")));
        ledger.adopt("u2", "Deployment/podinfo");
        assert!(!ledger.has(&record(1, "Initialized", "r1", "podinfo:1")));
        assert!(
            ledger.promoted.is_some(),
            "the promoted revision survives a new object"
        );
    }

    #[test]
    fn yaml_round_trips_with_a_stable_field_order() {
        let mut ledger = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        ledger.apply(&record(1, "Initialized", "r1", "podinfo:1"), "c1");
        ledger.apply(&record(2, "Detected", "r2", "podinfo:2"), "c2");
        let text = ledger.to_yaml().expect("serializes");
        assert!(text.starts_with("# flaggit ledger"));
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#'))
            .map(|l| l.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(keys, ["canary", "uid", "target", "record", "promoted", "rollout"]);
        assert_eq!(Ledger::parse("x", &text).expect("parses"), ledger);
        // Writing the same ledger twice gives the same bytes (no diff without a change).
        assert_eq!(ledger.to_yaml().expect("serializes"), text);
    }

    #[test]
    fn history_is_bounded() {
        let mut ledger = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        for seq in 1..=25 {
            ledger.apply(&record(seq, "Cancelled", "r", "podinfo:1"), "c");
        }
        assert_eq!(ledger.history.len(), HISTORY);
        assert_eq!(ledger.history[0].at, "2026-11-22T10:00:25Z");
    }

    #[test]
    fn off_boarding_closes_the_ledger() {
        let mut ledger = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        let mut off = record(3, "OffBoarded", "r1", "podinfo:1");
        off.reason = "deleted; target restored".into();
        ledger.apply(&off, "c");
        assert_eq!(
            ledger.closed.as_ref().map(|c| c.reason.as_str()),
            Some("deleted; target restored")
        );
    }

    #[test]
    fn a_broken_ledger_names_the_file() {
        let error = Ledger::parse(".flaggit/test/podinfo.yaml", "canary: [").expect_err("broken");
        assert!(
            error
                .to_string()
                .starts_with(".flaggit/test/podinfo.yaml: cannot read")
        );
    }

    #[test]
    fn a_hostile_ledger_is_refused_before_it_is_parsed() {
        let path = ".flaggit/test/podinfo.yaml";
        let deep = format!("canary: test/podinfo\nhistory:\n{}", "- ".repeat(100_000));
        let error = Ledger::parse(path, &deep).expect_err("too deep");
        assert_eq!(error.category(), "ParseLedger");
        assert!(error.to_string().contains("levels deep"), "{error}");
        let big = format!("canary: \"{}\"\n", "x".repeat(super::super::limits::MAX_BYTES));
        let error = Ledger::parse(path, &big).expect_err("too large");
        assert!(error.to_string().starts_with(path), "{error}");
    }

    #[test]
    fn paths_are_per_namespace() {
        assert_eq!(path(".flaggit", "test", "podinfo"), ".flaggit/test/podinfo.yaml");
        assert_eq!(path("/ops/ledger/", "a", "b"), "ops/ledger/a/b.yaml");
    }

    #[test]
    fn a_named_cluster_has_its_own_ledger_and_falls_back_to_the_old_one() {
        let fleet = Layout::new(".flaggit", Some("prod-eu"));
        assert_eq!(
            fleet.path("test", "podinfo"),
            ".flaggit/prod-eu/test/podinfo.yaml"
        );
        assert_eq!(
            fleet.legacy_path("test", "podinfo").as_deref(),
            Some(".flaggit/test/podinfo.yaml")
        );
        let single = Layout::new(".flaggit", Some(""));
        assert_eq!(single, Layout::new(".flaggit", None));
        assert_eq!(single.path("test", "podinfo"), ".flaggit/test/podinfo.yaml");
        assert_eq!(single.legacy_path("test", "podinfo"), None);
    }

    #[test]
    fn cluster_names_must_fit_paths_and_branches() {
        for good in ["prod", "prod-eu-1", "eu.west_2", "0"] {
            assert_eq!(valid_cluster_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Prod",
            "a/b",
            "-a",
            "a..b",
            "a b",
            "x.lock",
            "a.",
            &"x".repeat(64),
        ] {
            let error = valid_cluster_name(bad).expect_err(bad);
            assert!(error.contains("--cluster-name"), "{error}");
        }
    }

    #[test]
    fn a_second_live_writer_is_warned_about_but_a_rebuild_is_adopted() {
        let mut ledger = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        assert_eq!(ledger.claim("p", Some("a"), "cluster-1", false), None);
        assert_eq!(
            (ledger.cluster.as_str(), ledger.cluster_uid.as_str()),
            ("a", "cluster-1")
        );
        // The same cluster writing again: nothing to say.
        assert_eq!(ledger.claim("p", Some("a"), "cluster-1", true), None);
        // A rebuilt cluster (new uid) that never wrote it takes over quietly.
        assert_eq!(ledger.claim("p", Some("a"), "cluster-2", false), None);
        assert_eq!(ledger.cluster_uid, "cluster-2");
        // cluster-1 is still alive and writes again after cluster-2 did: two writers.
        let warning = ledger
            .claim("p", Some("a"), "cluster-1", true)
            .expect("a warning");
        assert!(
            warning.contains("cluster-2") && warning.contains("--cluster-name"),
            "{warning}"
        );
        // An unknown uid (no permission to read kube-system) never warns nor erases the known one.
        assert_eq!(ledger.claim("p", None, "", true), None);
        assert_eq!(ledger.cluster_uid, "cluster-1");
    }

    #[test]
    fn only_unnamed_ledgers_of_this_cluster_seed_a_named_one() {
        let mut old = Ledger::new("test/podinfo", "u1", "Deployment/podinfo");
        assert!(old.seeds("c1"), "written before clusters had names");
        old.cluster_uid = "c1".into();
        assert!(old.seeds("c1"));
        assert!(!old.seeds("c2"), "another cluster's single-cluster ledger");
        old.cluster = "a".into();
        assert!(!old.seeds("c1"));
    }
}
