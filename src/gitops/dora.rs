//! DORA figures from the Git record alone: deployment frequency, lead time for changes, change
//! failure rate and time to restore, per canary and overall, computed from the config repo's
//! history (flaggit's record commits and the change commits between them). Pure: the log and
//! the clock are arguments.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::message::Entry;

/// One commit of the config repo's history, as the figures need it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogCommit {
    pub id: String,
    /// Author time, seconds since the epoch.
    pub time: i64,
    /// Whether it merges others' commits (a merge is not itself a change).
    pub merge: bool,
    /// The flaggit record it carries; None for a change made by someone else.
    pub record: Option<Entry>,
}

/// How one release ended, with the times the figures are made of.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    pub canary: String,
    /// Empty in the single-cluster layout.
    pub cluster: String,
    pub revision: String,
    /// `Promoted` or `RolledBack`.
    pub outcome: String,
    /// When it ended (the record's time), seconds since the epoch.
    pub at: i64,
    /// The change commit that brought the revision, and its author time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<(String, i64)>,
    /// For a promotion that ended a failure (the canary's previous release was rolled back):
    /// seconds from that rollback to this promotion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_after: Option<i64>,
}

impl Release {
    /// Seconds from the change commit to the promotion.
    pub fn lead_time(&self) -> Option<i64> {
        match (&self.change, self.outcome.as_str()) {
            (Some((_, at)), "Promoted") => Some((self.at - at).max(0)),
            _ => None,
        }
    }
}

/// A change commit and its author time, when known.
type Change = Option<(String, i64)>;

/// Reads the release outcomes out of `log` (any order; sorted here by time, oldest first).
/// The change of a release is the newest commit that is neither a flaggit record nor a merge
/// before its first record (the commit the new revision was applied from); a time-to-restore
/// runs from a rollback to the canary's next promotion. Records seen twice (the same canary,
/// cluster, kind, revision and time) count once.
pub fn releases(log: &[LogCommit]) -> Vec<Release> {
    let mut log: Vec<&LogCommit> = log.iter().collect();
    log.sort_by_key(|c| c.time);
    let mut last_change: Change = None;
    // Per (cluster, canary): the change of the revision rolling out, and an open failure.
    let mut started: BTreeMap<(String, String), (String, Change)> = BTreeMap::new();
    let mut failing: BTreeMap<(String, String), i64> = BTreeMap::new();
    // A revision rolled back and retried keeps the change it came with.
    let mut retired: BTreeMap<(String, String, String), Change> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for commit in log {
        let Some(entry) = &commit.record else {
            if !commit.merge {
                last_change = Some((commit.id.clone(), commit.time));
            }
            continue;
        };
        let key = (entry.cluster.clone(), entry.canary.clone());
        if !seen.insert((
            key.clone(),
            entry.kind.clone(),
            entry.revision.clone(),
            entry.time.clone(),
        )) {
            continue;
        }
        let at = time_of(entry).unwrap_or(commit.time);
        match entry.kind.as_str() {
            "Detected" | "Restarted" => {
                let same = started.get(&key).is_some_and(|(r, _)| *r == entry.revision);
                if !same {
                    let change = retired
                        .remove(&(key.0.clone(), key.1.clone(), entry.revision.clone()))
                        .unwrap_or_else(|| last_change.clone());
                    started.insert(key, (entry.revision.clone(), change));
                }
            }
            "Promoted" | "RolledBack" => {
                let change = match started.remove(&key) {
                    Some((revision, change)) if revision == entry.revision => change,
                    // History cut off before the release started: its change is unknown.
                    _ => None,
                };
                let restored_after = if entry.kind == "Promoted" {
                    failing.remove(&key).map(|since| (at - since).max(0))
                } else {
                    failing.entry(key.clone()).or_insert(at);
                    retired.insert(
                        (key.0.clone(), key.1.clone(), entry.revision.clone()),
                        change.clone(),
                    );
                    None
                };
                out.push(Release {
                    canary: key.1,
                    cluster: key.0,
                    revision: entry.revision.clone(),
                    outcome: entry.kind.clone(),
                    at,
                    change,
                    restored_after,
                });
            }
            "Cancelled" => {
                started.remove(&key);
            }
            _ => {}
        }
    }
    out
}

fn time_of(entry: &Entry) -> Option<i64> {
    jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%#z", &entry.time)
        .or_else(|_| entry.time.parse::<jiff::Timestamp>())
        .ok()
        .map(|t| t.as_second())
}

/// The four figures over one set of releases.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Promotions in the window.
    pub deployments: usize,
    /// Promotions per day of the window.
    pub deployments_per_day: f64,
    /// Median seconds from the change commit to its promotion; None without one.
    pub lead_time: Option<i64>,
    /// Releases that ended in the window: promoted plus rolled back.
    pub releases: usize,
    /// Releases rolled back in the window.
    pub failures: usize,
    /// `failures / releases`; None without releases.
    pub change_failure_rate: Option<f64>,
    /// Restores (a promotion after a rollback) in the window.
    pub restores: usize,
    /// Median seconds from a rollback to the canary's next promotion; None without one.
    pub time_to_restore: Option<i64>,
}

impl Figures {
    /// The figures of `releases` (already limited to the window) over a window of `days`.
    pub fn of<'a>(releases: impl IntoIterator<Item = &'a Release>, days: f64) -> Self {
        let releases: Vec<&Release> = releases.into_iter().collect();
        let deployments = releases.iter().filter(|r| r.outcome == "Promoted").count();
        let failures = releases.iter().filter(|r| r.outcome == "RolledBack").count();
        let restores: Vec<i64> = releases.iter().filter_map(|r| r.restored_after).collect();
        let ended = deployments + failures;
        Self {
            deployments,
            deployments_per_day: if days > 0.0 {
                deployments as f64 / days
            } else {
                0.0
            },
            lead_time: median(releases.iter().filter_map(|r| r.lead_time()).collect()),
            releases: ended,
            failures,
            change_failure_rate: (ended > 0).then(|| failures as f64 / ended as f64),
            restores: restores.len(),
            time_to_restore: median(restores),
        }
    }
}

/// The median, the lower middle of an even count rounded up to the mean of the two.
fn median(mut values: Vec<i64>) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid] + 1) / 2
    })
}

/// The figures per canary and overall.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Start of the window, seconds since the epoch.
    pub since: i64,
    /// End of the window (now).
    pub until: i64,
    /// `(cluster, canary)` -> figures; the cluster is empty in the single-cluster layout.
    pub canaries: Vec<Row>,
    pub overall: Figures,
}

/// One canary's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub canary: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    pub figures: Figures,
}

/// Which releases a report covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Seconds before `now` the window starts.
    pub window: i64,
    /// Only this cluster's records.
    pub cluster: Option<String>,
    /// Only these canaries (`namespace/name`); empty: all.
    pub canaries: Vec<String>,
}

/// The report of `releases` ending in `(now - window, now]`.
pub fn report(releases: &[Release], scope: &Scope, now: i64) -> Report {
    let since = now - scope.window.max(0);
    let days = scope.window as f64 / 86_400.0;
    let chosen: Vec<&Release> = releases
        .iter()
        .filter(|r| r.at > since && r.at <= now)
        .filter(|r| scope.cluster.as_ref().is_none_or(|c| *c == r.cluster))
        .filter(|r| scope.canaries.is_empty() || scope.canaries.contains(&r.canary))
        .collect();
    let mut by_canary: BTreeMap<(&str, &str), Vec<&Release>> = BTreeMap::new();
    for r in &chosen {
        by_canary
            .entry((r.canary.as_str(), r.cluster.as_str()))
            .or_default()
            .push(r);
    }
    Report {
        since,
        until: now,
        canaries: by_canary
            .into_iter()
            .map(|((canary, cluster), rs)| Row {
                canary: canary.to_string(),
                cluster: cluster.to_string(),
                figures: Figures::of(rs, days),
            })
            .collect(),
        overall: Figures::of(chosen, days),
    }
}

/// `30d`, `12h`, `90m`, `3600s` or `2w` as seconds.
pub fn parse_window(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let bad = || format!("--since {text:?}: give a number and a unit, like 30d, 12h, 90m or 2w");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(unit).ok_or_else(bad)
}

/// `2d 3h`, `1h 5m`, `42s`: the two largest units.
pub fn duration(seconds: i64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut left = seconds.max(0);
    let mut parts = Vec::new();
    for (name, size) in units {
        if left >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{name}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// The cells of one row of the table, after the canary and cluster.
pub fn cells(f: &Figures) -> [String; 5] {
    [
        f.deployments.to_string(),
        format!("{:.2}", f.deployments_per_day),
        f.lead_time.map_or("-".to_string(), duration),
        match f.change_failure_rate {
            Some(rate) => format!("{:.0}% ({}/{})", rate * 100.0, f.failures, f.releases),
            None => "-".to_string(),
        },
        match f.time_to_restore {
            Some(t) => format!("{} ({})", duration(t), f.restores),
            None => "-".to_string(),
        },
    ]
}

/// The column headers of [`cells`].
pub const HEADERS: [&str; 5] = [
    "DEPLOYS",
    "PER DAY",
    "LEAD TIME (MEDIAN)",
    "CHANGE FAILURE RATE",
    "TIME TO RESTORE (MEDIAN)",
];

/// `flaggit dora` as a table: one row per canary, then the overall row.
pub fn table(report: &Report) -> String {
    let clusters = report.canaries.iter().any(|r| !r.cluster.is_empty());
    let mut header = vec!["CANARY".to_string()];
    if clusters {
        header.push("CLUSTER".to_string());
    }
    header.extend(HEADERS.map(String::from));
    let mut rows = vec![header];
    let mut row = |canary: &str, cluster: &str, f: &Figures| {
        let mut cells_of = vec![canary.to_string()];
        if clusters {
            cells_of.push(if cluster.is_empty() {
                "-".to_string()
            } else {
                cluster.to_string()
            });
        }
        cells_of.extend(cells(f));
        rows.push(cells_of);
    };
    for r in &report.canaries {
        row(&r.canary, &r.cluster, &r.figures);
    }
    row("(all)", "", &report.overall);
    super::inspect::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_000_000;

    fn change(id: &str, at: i64) -> LogCommit {
        LogCommit {
            id: id.into(),
            time: T0 + at,
            merge: false,
            record: None,
        }
    }

    fn record(canary: &str, kind: &str, revision: &str, at: i64) -> LogCommit {
        let time = jiff::Timestamp::from_second(T0 + at)
            .expect("in range")
            .to_string();
        LogCommit {
            id: format!("r-{canary}-{kind}-{at}"),
            time: T0 + at,
            merge: false,
            record: Some(Entry {
                canary: canary.into(),
                kind: kind.into(),
                revision: revision.into(),
                time,
                ..Default::default()
            }),
        }
    }

    const H: i64 = 3_600;

    /// podinfo: v2 promoted, v3 rolled back, v4 promoted (restores), v5 promoted; web: one
    /// rollback never restored.
    fn history() -> Vec<LogCommit> {
        vec![
            record("test/podinfo", "Initialized", "r1", 0),
            change("c2", H),
            record("test/podinfo", "Detected", "r2", H + 60),
            record("test/podinfo", "Step", "r2", H + 120),
            record("test/podinfo", "Promoted", "r2", 2 * H),
            change("c3", 10 * H),
            record("test/podinfo", "Detected", "r3", 10 * H + 60),
            record("test/podinfo", "RolledBack", "r3", 11 * H),
            change("c4", 12 * H),
            record("test/podinfo", "Detected", "r4", 12 * H + 60),
            record("test/podinfo", "Promoted", "r4", 15 * H),
            change("w2", 20 * H),
            record("test/web", "Detected", "w2", 20 * H + 30),
            record("test/web", "RolledBack", "w2", 21 * H),
            change("c5", 30 * H),
            record("test/podinfo", "Detected", "r5", 30 * H + 60),
            record("test/podinfo", "Promoted", "r5", 34 * H),
        ]
    }

    #[test]
    fn releases_pair_changes_with_outcomes() {
        let mut log = history();
        log.reverse(); // any order in
        let releases = releases(&log);
        let outcomes: Vec<(&str, &str, Option<i64>, Option<i64>)> = releases
            .iter()
            .map(|r| {
                (
                    r.revision.as_str(),
                    r.outcome.as_str(),
                    r.lead_time(),
                    r.restored_after,
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("r2", "Promoted", Some(H), None),
                ("r3", "RolledBack", None, None),
                ("r4", "Promoted", Some(3 * H), Some(4 * H)),
                ("w2", "RolledBack", None, None),
                ("r5", "Promoted", Some(4 * H), None),
            ]
        );
        assert_eq!(releases[2].change.as_ref().map(|c| c.0.as_str()), Some("c4"));
    }

    #[test]
    fn the_report_has_known_answers() {
        let releases = releases(&history());
        let scope = Scope {
            window: 2 * 86_400,
            ..Default::default()
        };
        let report = report(&releases, &scope, T0 + 40 * H);
        let podinfo = &report.canaries[0].figures;
        assert_eq!(report.canaries[0].canary, "test/podinfo");
        assert_eq!(podinfo.deployments, 3);
        assert!((podinfo.deployments_per_day - 1.5).abs() < 1e-9);
        assert_eq!(podinfo.lead_time, Some(3 * H)); // median of 1h, 3h, 4h
        assert_eq!(podinfo.change_failure_rate, Some(0.25));
        assert_eq!(podinfo.time_to_restore, Some(4 * H));
        let web = &report.canaries[1].figures;
        assert_eq!((web.deployments, web.failures, web.releases), (0, 1, 1));
        assert_eq!(web.lead_time, None);
        assert_eq!(web.time_to_restore, None);
        let all = &report.overall;
        assert_eq!((all.deployments, all.failures, all.releases), (3, 2, 5));
        assert_eq!(all.change_failure_rate, Some(0.4));
        assert_eq!(all.time_to_restore, Some(4 * H));
        let text = table(&report);
        assert!(
            text.starts_with("CANARY        DEPLOYS  PER DAY  LEAD TIME (MEDIAN)"),
            "{text}"
        );
        assert!(
            text.contains("test/podinfo  3        1.50     3h                  25% (1/4)"),
            "{text}"
        );
        assert!(
            text.lines()
                .last()
                .is_some_and(|l| l.starts_with("(all)") && l.ends_with("4h (1)"))
        );
    }

    #[test]
    fn the_window_and_scope_choose_releases() {
        let releases = releases(&history());
        // The last 18 hours: r5 only (the rollback of web at 21h ended before).
        let scope = Scope {
            window: 18 * H,
            ..Default::default()
        };
        let report = report(&releases, &scope, T0 + 40 * H);
        assert_eq!(report.overall.deployments, 1);
        assert_eq!(report.overall.releases, 1);
        assert_eq!(report.overall.lead_time, Some(4 * H));
        let only_web = Scope {
            window: 30 * 86_400,
            canaries: vec!["test/web".into()],
            ..Default::default()
        };
        assert_eq!(report_of(&releases, &only_web).overall.failures, 1);
        assert_eq!(report_of(&releases, &only_web).overall.deployments, 0);
        let other_cluster = Scope {
            window: 30 * 86_400,
            cluster: Some("prod-eu".into()),
            ..Default::default()
        };
        assert_eq!(
            report_of(&releases, &other_cluster),
            Report {
                since: T0 + 40 * H - 30 * 86_400,
                until: T0 + 40 * H,
                ..Default::default()
            }
        );
    }

    fn report_of(releases: &[Release], scope: &Scope) -> Report {
        report(releases, scope, T0 + 40 * H)
    }

    #[test]
    fn clusters_stay_apart_and_duplicates_count_once() {
        let mut log = history();
        for commit in &mut log {
            if let Some(entry) = &mut commit.record {
                entry.cluster = "prod-eu".into();
            }
        }
        let mut other = record("test/podinfo", "Detected", "r9", 5 * H);
        let mut promoted = record("test/podinfo", "RolledBack", "r9", 6 * H);
        for c in [&mut other, &mut promoted] {
            c.record.as_mut().expect("record").cluster = "prod-us".into();
        }
        log.extend([other, promoted.clone(), promoted]);
        let releases = releases(&log);
        assert_eq!(releases.iter().filter(|r| r.cluster == "prod-us").count(), 1);
        let scope = Scope {
            window: 30 * 86_400,
            cluster: Some("prod-us".into()),
            ..Default::default()
        };
        let report = report_of(&releases, &scope);
        assert_eq!(report.overall.failures, 1);
        // prod-eu's open failure is not restored by prod-us's releases, nor the other way.
        let eu = report_of(
            &releases,
            &Scope {
                window: 30 * 86_400,
                cluster: Some("prod-eu".into()),
                ..Default::default()
            },
        );
        assert_eq!(eu.overall.restores, 1);
        assert!(table(&report).starts_with("CANARY        CLUSTER  DEPLOYS"));
    }

    #[test]
    fn merges_are_not_changes_and_a_cut_history_has_no_lead_time() {
        let mut merge = change("m", 2 * H);
        merge.merge = true;
        let log = vec![
            change("c1", H),
            merge,
            record("a/b", "Detected", "x", 3 * H),
            record("a/b", "Promoted", "x", 4 * H),
            record("a/b", "Promoted", "y", 5 * H),
        ];
        let releases = releases(&log);
        assert_eq!(releases[0].lead_time(), Some(3 * H));
        assert_eq!(releases[1].lead_time(), None);
    }

    #[test]
    fn a_retried_revision_keeps_its_change() {
        let log = vec![
            change("c1", H),
            record("a/b", "Detected", "x", 2 * H),
            record("a/b", "RolledBack", "x", 3 * H),
            change("other", 4 * H),
            record("a/b", "Restarted", "x", 5 * H),
            record("a/b", "Promoted", "x", 6 * H),
        ];
        let releases = releases(&log);
        assert_eq!(releases[1].lead_time(), Some(5 * H));
        assert_eq!(releases[1].restored_after, Some(3 * H));
    }

    #[test]
    fn a_cancelled_release_is_not_counted() {
        let log = vec![
            change("c1", H),
            record("a/b", "Detected", "x", 2 * H),
            record("a/b", "Cancelled", "x", 3 * H),
            change("c2", 4 * H),
            record("a/b", "Detected", "y", 5 * H),
            record("a/b", "Promoted", "y", 6 * H),
        ];
        let releases = releases(&log);
        assert_eq!(releases.len(), 1);
        assert_eq!(releases[0].lead_time(), Some(2 * H));
    }

    #[test]
    fn windows_and_durations_read_naturally() {
        assert_eq!(parse_window("30d"), Ok(30 * 86_400));
        assert_eq!(parse_window("12h"), Ok(12 * H));
        assert_eq!(parse_window("2w"), Ok(14 * 86_400));
        assert!(parse_window("30").expect_err("no unit").contains("30d, 12h"));
        assert!(parse_window("d").is_err());
        assert!(parse_window("0d").is_err());
        assert!(parse_window("5y").is_err());
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(3 * H + 300), "3h 5m");
        assert_eq!(duration(2 * 86_400 + 3 * H + 59), "2d 3h");
        assert_eq!(median(vec![4, 1, 3]), Some(3));
        assert_eq!(median(vec![1, 4]), Some(3));
        assert_eq!(median(vec![]), None);
    }
}
