//! Where the records of a canary in `pull-request` mode go: the steps of a revision to its
//! release branch (the release pull request), everything else to the base branch. Pure.

use crate::api::{
    Canary, GitOpsMode, GitOpsStatus, PendingRecord, PullRequestSettings, PullRequestStatus, RevertMode,
};

/// The branch a record is committed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The configured branch (commit mode, and the records outside a release).
    Base,
    /// The release branch of a revision, the head of its release pull request.
    Release { branch: String, revision: String },
    /// The branch of a revert pull request (`revert: pull-request`).
    Revert { branch: String, revision: String },
}

impl Destination {
    /// The branch name, given the base branch.
    pub fn branch<'a>(&'a self, base: &'a str) -> &'a str {
        match self {
            Self::Base => base,
            Self::Release { branch, .. } | Self::Revert { branch, .. } => branch,
        }
    }
}

/// `flaggit/<namespace>/<name>/<revision>`, or `flaggit/<cluster>/<namespace>/<name>/<revision>`
/// in a named cluster (two clusters releasing the same revision each get their own branch).
pub fn release_branch(cluster: Option<&str>, namespace: &str, name: &str, revision: &str) -> String {
    match cluster {
        Some(cluster) => format!("flaggit/{cluster}/{namespace}/{name}/{revision}"),
        None => format!("flaggit/{namespace}/{name}/{revision}"),
    }
}

/// The canary a record is about: namespace, name, and the cluster it runs in.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub cluster: Option<&'a str>,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Whether the canary asks for release pull requests.
pub fn wants_pull_requests(canary: &Canary) -> bool {
    canary.spec.gitops.as_ref().and_then(|g| g.mode) == Some(GitOpsMode::PullRequest)
}

/// The pull-request settings of a canary, defaults filled in.
pub fn settings(canary: &Canary) -> PullRequestSettings {
    canary
        .spec
        .gitops
        .as_ref()
        .and_then(|g| g.pull_request.clone())
        .unwrap_or_default()
}

/// The release pull request as routing sees it: the writer's record of it, counted as merged
/// once the review saw a person merge it (the writer learns that only at its next merge).
pub fn pull_request(gitops: &GitOpsStatus) -> Option<PullRequestStatus> {
    let mut pr = gitops.pull_request.as_deref()?.clone();
    if gitops.review.as_ref().is_some_and(|r| {
        r.number == pr.number && (r.revision.is_empty() || r.revision == pr.revision) && r.merged_by.is_some()
    }) {
        pr.state = "merged".into();
    }
    Some(pr)
}

/// Where `record` goes. `pr` is the release pull request the writer last opened: once it is
/// merged or closed (by a person, say), the rest of that revision's records go to the base
/// branch, since the pull request can no longer take them.
pub fn destination(
    subject: Subject<'_>,
    record: &PendingRecord,
    settings: &PullRequestSettings,
    pr: Option<&PullRequestStatus>,
) -> Destination {
    let branch = || release_branch(subject.cluster, subject.namespace, subject.name, &record.revision);
    match record.kind.as_str() {
        "Initialized" | "Recovered" | "OffBoarded" | "Cancelled" => Destination::Base,
        "RolledBack" => match settings.revert.unwrap_or_default() {
            RevertMode::Direct => Destination::Base,
            RevertMode::PullRequest => Destination::Revert {
                branch: format!("{}-revert", branch()),
                revision: record.revision.clone(),
            },
        },
        _ => {
            let ended = pr.is_some_and(|pr| pr.revision == record.revision && pr.state != "open");
            if ended {
                Destination::Base
            } else {
                Destination::Release {
                    branch: branch(),
                    revision: record.revision.clone(),
                }
            }
        }
    }
}

/// The destination of the first record and how many records in a row go there: one push
/// takes one branch's records, so the order of records is kept across branches.
pub fn next_run(
    subject: Subject<'_>,
    records: &[PendingRecord],
    settings: Option<&PullRequestSettings>,
    pr: Option<&PullRequestStatus>,
) -> (Destination, usize) {
    let Some(settings) = settings else {
        return (Destination::Base, records.len());
    };
    let mut run: Option<(Destination, usize)> = None;
    for record in records {
        let here = destination(subject, record, settings, pr);
        match &mut run {
            None => run = Some((here, 1)),
            Some((first, count)) if *first == here => *count += 1,
            Some(_) => break,
        }
    }
    run.unwrap_or((Destination::Base, 0))
}

/// Where a run goes when the base branch refuses flaggit's pushes (branch protection): a
/// rollback that would be written to the base branch becomes a revert pull request, which a
/// person can merge. Other runs keep their destination (and wait, saying why).
pub fn around_protection(
    subject: Subject<'_>,
    records: &[PendingRecord],
    destination: Destination,
    run: usize,
) -> (Destination, usize) {
    match records.first() {
        Some(first) if destination == Destination::Base && first.kind == "RolledBack" => (
            Destination::Revert {
                branch: format!(
                    "{}-revert",
                    release_branch(subject.cluster, subject.namespace, subject.name, &first.revision)
                ),
                revision: first.revision.clone(),
            },
            1,
        ),
        _ => (destination, run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: Subject<'static> = Subject {
        cluster: None,
        namespace: "t",
        name: "p",
    };

    fn record(seq: i64, kind: &str, revision: &str) -> PendingRecord {
        PendingRecord {
            seq,
            kind: kind.into(),
            revision: revision.into(),
            ..Default::default()
        }
    }

    fn open_pr(revision: &str, state: &str) -> PullRequestStatus {
        PullRequestStatus {
            number: 7,
            revision: revision.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    fn podinfo(cluster: Option<&'static str>) -> Subject<'static> {
        Subject {
            cluster,
            namespace: "test",
            name: "podinfo",
        }
    }

    #[test]
    fn each_cluster_releases_on_its_own_branch() {
        let settings = PullRequestSettings::default();
        let records = [record(2, "Detected", "r2")];
        let branch = |cluster| match next_run(podinfo(cluster), &records, Some(&settings), None).0 {
            Destination::Release { branch, .. } => branch,
            other => panic!("{other:?}"),
        };
        assert_eq!(branch(Some("prod-eu")), "flaggit/prod-eu/test/podinfo/r2");
        assert_eq!(branch(Some("staging")), "flaggit/staging/test/podinfo/r2");
        assert_eq!(
            branch(None),
            "flaggit/test/podinfo/r2",
            "the single-cluster name is kept"
        );
    }

    #[test]
    fn a_protected_base_turns_a_rollback_into_a_revert_pull_request() {
        let records = [record(4, "RolledBack", "r2"), record(5, "Initialized", "r3")];
        assert_eq!(
            around_protection(TP, &records, Destination::Base, 2),
            (
                Destination::Revert {
                    branch: "flaggit/t/p/r2-revert".into(),
                    revision: "r2".into()
                },
                1
            )
        );
        // Other records keep their branch: the ledger has no other place to go.
        assert_eq!(
            around_protection(TP, &records[1..], Destination::Base, 1),
            (Destination::Base, 1)
        );
        let release = Destination::Release {
            branch: "b".into(),
            revision: "r2".into(),
        };
        assert_eq!(around_protection(TP, &records, release.clone(), 1), (release, 1));
    }

    #[test]
    fn a_release_goes_to_its_branch_and_a_rollback_to_the_base() {
        let settings = PullRequestSettings::default();
        let records = [
            record(2, "Detected", "r2"),
            record(3, "Step", "r2"),
            record(4, "RolledBack", "r2"),
        ];
        let (first, n) = next_run(podinfo(None), &records, Some(&settings), None);
        assert_eq!(
            first,
            Destination::Release {
                branch: "flaggit/test/podinfo/r2".into(),
                revision: "r2".into()
            }
        );
        assert_eq!(n, 2);
        let (then, n) = next_run(podinfo(None), &records[2..], Some(&settings), None);
        assert_eq!((then, n), (Destination::Base, 1));
    }

    #[test]
    fn commit_mode_sends_everything_to_the_base() {
        let records = [record(1, "Initialized", "r1"), record(2, "Detected", "r2")];
        assert_eq!(next_run(TP, &records, None, None), (Destination::Base, 2));
    }

    #[test]
    fn the_primary_s_own_records_never_open_a_release() {
        let settings = PullRequestSettings::default();
        for kind in ["Initialized", "Recovered", "OffBoarded", "Cancelled"] {
            assert_eq!(
                destination(TP, &record(1, kind, "r1"), &settings, None),
                Destination::Base,
                "{kind}"
            );
        }
    }

    #[test]
    fn records_after_a_person_merged_the_release_go_to_the_base() {
        let settings = PullRequestSettings::default();
        let step = record(5, "Promoted", "r2");
        assert_eq!(
            destination(TP, &step, &settings, Some(&open_pr("r2", "merged"))),
            Destination::Base
        );
        // A pull request of another revision says nothing about this one.
        assert!(matches!(
            destination(TP, &step, &settings, Some(&open_pr("r1", "merged"))),
            Destination::Release { .. }
        ));
    }

    #[test]
    fn a_release_a_person_merged_counts_as_merged() {
        let review = |number, merged_by: Option<&str>| crate::api::ReviewStatus {
            number,
            merged_by: merged_by.map(str::to_string),
            ..Default::default()
        };
        let gitops = |review| GitOpsStatus {
            pull_request: Some(Box::new(open_pr("r2", "open"))),
            review: Some(review),
            ..Default::default()
        };
        let state = |g: &GitOpsStatus| pull_request(g).map(|p| p.state);
        assert_eq!(
            state(&gitops(Box::new(review(7, Some("dana"))))).as_deref(),
            Some("merged")
        );
        assert_eq!(state(&gitops(Box::new(review(7, None)))).as_deref(), Some("open"));
        // A review of an older pull request says nothing about this one.
        assert_eq!(
            state(&gitops(Box::new(review(6, Some("dana"))))).as_deref(),
            Some("open")
        );
    }

    #[test]
    fn a_revert_can_get_its_own_pull_request() {
        let settings = PullRequestSettings {
            revert: Some(RevertMode::PullRequest),
            ..Default::default()
        };
        assert_eq!(
            destination(TP, &record(4, "RolledBack", "r2"), &settings, None),
            Destination::Revert {
                branch: "flaggit/t/p/r2-revert".into(),
                revision: "r2".into()
            }
        );
    }
}
