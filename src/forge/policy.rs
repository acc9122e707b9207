//! Who may give which command on a release pull request (`spec.gitops.approvals`), and which
//! `/approve`s count towards opening a gate. Forge failures are errors, never refusals: a user
//! is not refused because GitHub was down.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::command::{self, Command};
use super::{Comment, Forge, Permission, RepoId, Review, ReviewState};
use crate::api::Approvals;

/// How a policy check failed: the forge could not answer, so no verdict was reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read @{user}'s permission on {repo}: {source}")]
    ReadPermission {
        repo: String,
        user: String,
        #[source]
        source: super::Error,
    },
    #[error("could not read whether @{user} is in team {team}: {source}")]
    ReadTeam {
        team: String,
        user: String,
        #[source]
        source: super::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadPermission { .. } => "ReadPermission",
            Self::ReadTeam { .. } => "ReadTeam",
        }
    }

    /// The forge's own error, e.g. to back off as long as a rate limit says.
    pub fn forge_error(&self) -> &super::Error {
        match self {
            Self::ReadPermission { source, .. } | Self::ReadTeam { source, .. } => source,
        }
    }
}

/// Whether a command from a user is obeyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Refused, with a reason written for the person who asked.
    Refused(String),
}

/// `spec.gitops.approvals` with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Distinct approvers needed to open a gate (at least 1).
    pub required: usize,
    /// Lowest repository permission that may give commands.
    pub permission: Permission,
    /// Users admitted whatever their permission, lowercased (logins are case-insensitive).
    pub approvers: BTreeSet<String>,
    /// Teams as `(org, team-slug)` whose members are admitted.
    pub teams: Vec<(String, String)>,
    pub allow_self_approval: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(&Approvals::default())
    }
}

impl Policy {
    /// Defaults: permission `write`, 1 approval, no self-approval. A team without a `/` is
    /// ignored here (the spec validation reports it), a required count below 1 is 1.
    pub fn new(approvals: &Approvals) -> Policy {
        let teams = approvals
            .teams
            .iter()
            .flatten()
            .filter_map(|t| {
                let (org, team) = t.trim().split_once('/')?;
                (!org.is_empty() && !team.is_empty()).then(|| (org.to_owned(), team.to_owned()))
            })
            .collect();
        Policy {
            required: usize::try_from(approvals.required.unwrap_or(1))
                .unwrap_or(1)
                .max(1),
            permission: approvals.permission.unwrap_or(Permission::Write),
            approvers: approvals
                .approvers
                .iter()
                .flatten()
                .map(|u| login(u))
                .filter(|u| !u.is_empty())
                .collect(),
            teams,
            allow_self_approval: approvals.allow_self_approval.unwrap_or(false),
        }
    }

    /// Whether `user` may give `command` on the release pull request of `repo`. `author` is
    /// the person whose change is being released: the pull request's author when a person
    /// opened it, else the author of the config change the release comes from. Only
    /// `/approve` is barred to them; their other commands follow the permission rules.
    /// Approvers and team members are admitted whatever their permission; otherwise the
    /// user needs at least the configured permission (read from the forge).
    pub async fn authorize(
        &self,
        forge: &dyn Forge,
        repo: &RepoId,
        author: &str,
        user: &str,
        command: &Command,
    ) -> Result<Verdict, Error> {
        let who = login(user);
        if matches!(command, Command::Approve) && !self.allow_self_approval && who == login(author) {
            return Ok(Verdict::Refused(format!(
                "@{user} is the author of this release and may not approve it; another approver \
                 must (or set spec.gitops.approvals.allowSelfApproval: true)"
            )));
        }
        if self.approvers.contains(&who) {
            return Ok(Verdict::Accepted);
        }
        let permission = forge
            .permission(repo, user)
            .await
            .map_err(|source| Error::ReadPermission {
                repo: repo.to_string(),
                user: user.to_owned(),
                source,
            })?;
        if permission.is_some_and(|p| p >= self.permission) {
            return Ok(Verdict::Accepted);
        }
        for (org, team) in &self.teams {
            let member = forge
                .is_team_member(org, team, user)
                .await
                .map_err(|source| Error::ReadTeam {
                    team: format!("{org}/{team}"),
                    user: user.to_owned(),
                    source,
                })?;
            if member {
                return Ok(Verdict::Accepted);
            }
        }
        Ok(Verdict::Refused(self.refusal(repo, user, permission, command)))
    }

    fn refusal(&self, repo: &RepoId, user: &str, has: Option<Permission>, command: &Command) -> String {
        let has = match has {
            Some(p) => format!("has {} permission on {repo}", permission_name(p)),
            None => format!("has no access to {repo}"),
        };
        let doing = match command {
            Command::Approve => "approving".to_owned(),
            other => other.to_string(),
        };
        let mut others = Vec::new();
        if !self.approvers.is_empty() {
            others.push("being a listed approver".to_owned());
        }
        for (org, team) in &self.teams {
            others.push(format!("membership in {org}/{team}"));
        }
        let or = if others.is_empty() {
            String::new()
        } else {
            format!(" (or {})", others.join(" or "))
        };
        format!(
            "@{user} {has}; {doing} needs {}{or}",
            permission_name(self.permission)
        )
    }
}

/// The lowercase name GitHub uses for a permission.
pub fn permission_name(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Triage => "triage",
        Permission::Write => "write",
        Permission::Maintain => "maintain",
        Permission::Admin => "admin",
    }
}

fn login(user: &str) -> String {
    user.trim().trim_start_matches('@').to_lowercase()
}

/// Where an approval was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Comment(u64),
    Review(u64),
}

/// An approval that counts by time and edit rules, with who gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub source: Source,
    pub user: String,
    pub at: Timestamp,
}

/// Which approvals open the waiting gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Distinct accepted approvers, in the order they approved, as their logins are spelt:
    /// the `Flaggit-Approved-By` trailers.
    pub approved_by: Vec<String>,
    pub required: usize,
    /// Approvals that count by time and edit rules but were not judged yet: run
    /// [`Policy::authorize`] on them and tally again.
    pub unjudged: Vec<Candidate>,
}

impl Tally {
    /// Enough distinct approvers: the gate opens.
    pub fn is_open(&self) -> bool {
        self.approved_by.len() >= self.required
    }
}

/// The approvals of a pull request for the revision that started at `since`: `/approve`
/// comments (never edited: `updated_at` later than `created_at`) and approving reviews, not
/// older than `since`, from distinct users. `judged` holds the verdicts already reached for a
/// source; a refused approval never counts, an unjudged one is listed in
/// [`Tally::unjudged`].
pub fn tally(
    policy: &Policy,
    comments: &[Comment],
    reviews: &[Review],
    since: Timestamp,
    judged: &BTreeMap<Source, Verdict>,
) -> Tally {
    let mut candidates: Vec<Candidate> = comments
        .iter()
        .filter(|c| c.created_at >= since && c.updated_at <= c.created_at)
        .filter(|c| command::parse(&c.body).commands.contains(&Command::Approve))
        .map(|c| Candidate {
            source: Source::Comment(c.id),
            user: c.author.clone(),
            at: c.created_at,
        })
        .chain(
            reviews
                .iter()
                .filter(|r| r.state == ReviewState::Approved && r.submitted_at >= since)
                .map(|r| Candidate {
                    source: Source::Review(r.id),
                    user: r.author.clone(),
                    at: r.submitted_at,
                }),
        )
        .collect();
    candidates.sort_by_key(|c| (c.at, c.source));
    let mut approved_by: Vec<String> = Vec::new();
    let mut unjudged = Vec::new();
    for candidate in candidates {
        let who = login(&candidate.user);
        if approved_by.iter().any(|a| login(a) == who) {
            continue;
        }
        match judged.get(&candidate.source) {
            Some(Verdict::Accepted) => approved_by.push(candidate.user),
            Some(Verdict::Refused(_)) => {}
            None => unjudged.push(candidate),
        }
    }
    // A user already counted needs no second judgement.
    unjudged.retain(|c| !approved_by.iter().any(|a| login(a) == login(&c.user)));
    Tally {
        approved_by,
        required: policy.required,
        unjudged,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::forge::{self, MergeMethod, NewPullRequest, Polled, PullRequest};

    /// A forge that only knows permissions and teams, and counts how often it was asked.
    #[derive(Default)]
    struct Members {
        permissions: HashMap<String, Permission>,
        teams: HashMap<String, Vec<String>>,
        down: bool,
        calls: Mutex<Vec<String>>,
    }

    impl Members {
        fn with(permissions: &[(&str, Permission)], teams: &[(&str, &[&str])]) -> Members {
            Members {
                permissions: permissions.iter().map(|(u, p)| (u.to_string(), *p)).collect(),
                teams: teams
                    .iter()
                    .map(|(t, us)| (t.to_string(), us.iter().map(|u| u.to_string()).collect()))
                    .collect(),
                ..Members::default()
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("not poisoned").clone()
        }
    }

    fn unused<T>() -> Result<T, forge::Error> {
        Err(forge::Error::Request {
            forge: "test",
            action: "unused".into(),
            message: "not part of this test".into(),
        })
    }

    #[async_trait]
    impl Forge for Members {
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn find_pull_request(&self, _: &RepoId, _: &str) -> Result<Option<PullRequest>, forge::Error> {
            unused()
        }
        async fn open_pull_request(
            &self,
            _: &RepoId,
            _: &NewPullRequest,
        ) -> Result<PullRequest, forge::Error> {
            unused()
        }
        async fn pull_request(&self, _: &RepoId, _: u64) -> Result<PullRequest, forge::Error> {
            unused()
        }
        async fn edit_pull_request(&self, _: &RepoId, _: u64, _: &str) -> Result<(), forge::Error> {
            unused()
        }
        async fn merge_pull_request(
            &self,
            _: &RepoId,
            _: u64,
            _: MergeMethod,
            _: &str,
            _: &str,
        ) -> Result<String, forge::Error> {
            unused()
        }
        async fn close_pull_request(&self, _: &RepoId, _: u64) -> Result<(), forge::Error> {
            unused()
        }
        async fn comments(
            &self,
            _: &RepoId,
            _: u64,
            _: Option<jiff::Timestamp>,
            _: Option<&str>,
        ) -> Result<Polled<Vec<Comment>>, forge::Error> {
            unused()
        }
        async fn reviews(&self, _: &RepoId, _: u64) -> Result<Vec<Review>, forge::Error> {
            unused()
        }
        async fn create_comment(&self, _: &RepoId, _: u64, _: &str) -> Result<Comment, forge::Error> {
            unused()
        }
        async fn edit_comment(&self, _: &RepoId, _: u64, _: &str) -> Result<(), forge::Error> {
            unused()
        }
        async fn react(&self, _: &RepoId, _: u64, _: forge::Reaction) -> Result<(), forge::Error> {
            unused()
        }
        async fn permission(&self, repo: &RepoId, user: &str) -> Result<Option<Permission>, forge::Error> {
            self.calls
                .lock()
                .expect("not poisoned")
                .push(format!("permission {repo} {user}"));
            if self.down {
                return Err(forge::Error::RateLimited {
                    forge: "test",
                    retry_after: Duration::from_secs(60),
                });
            }
            Ok(self.permissions.get(user).copied())
        }
        async fn is_team_member(&self, org: &str, team: &str, user: &str) -> Result<bool, forge::Error> {
            self.calls
                .lock()
                .expect("not poisoned")
                .push(format!("team {org}/{team} {user}"));
            Ok(self
                .teams
                .get(&format!("{org}/{team}"))
                .is_some_and(|us| us.iter().any(|u| u == user)))
        }
    }

    fn repo() -> RepoId {
        RepoId {
            owner: "acme".into(),
            name: "config".into(),
        }
    }

    async fn verdict(
        policy: &Policy,
        forge: &Members,
        author: &str,
        user: &str,
        command: Command,
    ) -> Verdict {
        policy
            .authorize(forge, &repo(), author, user, &command)
            .await
            .expect("the forge answers")
    }

    #[test]
    fn defaults_are_write_one_approval_and_no_self_approval() {
        let policy = Policy::default();
        assert_eq!(policy.required, 1);
        assert_eq!(policy.permission, Permission::Write);
        assert!(!policy.allow_self_approval);
        let policy = Policy::new(&Approvals {
            required: Some(0),
            approvers: Some(vec!["@Alice".into(), " ".into()]),
            teams: Some(vec!["acme/sre".into(), "no-slash".into(), "/x".into()]),
            ..Approvals::default()
        });
        assert_eq!(policy.required, 1);
        assert_eq!(policy.approvers, BTreeSet::from(["alice".to_owned()]));
        assert_eq!(policy.teams, vec![("acme".to_owned(), "sre".to_owned())]);
    }

    #[tokio::test]
    async fn write_permission_is_accepted_and_read_is_refused_with_a_reason() {
        let forge = Members::with(&[("carol", Permission::Write), ("bob", Permission::Read)], &[]);
        let policy = Policy::default();
        assert_eq!(
            verdict(&policy, &forge, "dave", "carol", Command::Approve).await,
            Verdict::Accepted
        );
        assert_eq!(
            verdict(&policy, &forge, "dave", "bob", Command::Approve).await,
            Verdict::Refused("@bob has read permission on acme/config; approving needs write".into())
        );
        assert_eq!(
            verdict(&policy, &forge, "dave", "eve", Command::Pause).await,
            Verdict::Refused("@eve has no access to acme/config; /pause needs write".into())
        );
    }

    #[tokio::test]
    async fn a_higher_floor_refuses_write() {
        let forge = Members::with(&[("carol", Permission::Write), ("ann", Permission::Admin)], &[]);
        let policy = Policy::new(&Approvals {
            permission: Some(Permission::Maintain),
            ..Approvals::default()
        });
        assert!(matches!(
            verdict(&policy, &forge, "x", "carol", Command::Approve).await,
            Verdict::Refused(_)
        ));
        assert_eq!(
            verdict(&policy, &forge, "x", "ann", Command::Approve).await,
            Verdict::Accepted
        );
    }

    #[tokio::test]
    async fn the_author_may_not_approve_their_own_release_but_may_pause_it() {
        let forge = Members::with(&[("dave", Permission::Admin)], &[]);
        let policy = Policy::new(&Approvals {
            approvers: Some(vec!["dave".into()]),
            ..Approvals::default()
        });
        let Verdict::Refused(reason) = verdict(&policy, &forge, "Dave", "dave", Command::Approve).await
        else {
            panic!("self-approval refused")
        };
        assert!(
            reason.starts_with("@dave is the author of this release"),
            "{reason}"
        );
        assert!(forge.calls().is_empty(), "refused without asking the forge");
        assert_eq!(
            verdict(&policy, &forge, "dave", "dave", Command::Pause).await,
            Verdict::Accepted
        );
        let allowed = Policy {
            allow_self_approval: true,
            ..policy
        };
        assert_eq!(
            verdict(&allowed, &forge, "dave", "dave", Command::Approve).await,
            Verdict::Accepted
        );
    }

    #[tokio::test]
    async fn approvers_and_team_members_need_no_permission() {
        let forge = Members::with(&[("bob", Permission::Read)], &[("acme/sre", &["tina"])]);
        let policy = Policy::new(&Approvals {
            approvers: Some(vec!["Zed".into()]),
            teams: Some(vec!["acme/sre".into(), "acme/ops".into()]),
            ..Approvals::default()
        });
        assert_eq!(
            verdict(&policy, &forge, "x", "zed", Command::Approve).await,
            Verdict::Accepted
        );
        assert!(forge.calls().is_empty(), "a listed approver needs no forge call");
        assert_eq!(
            verdict(&policy, &forge, "x", "tina", Command::Approve).await,
            Verdict::Accepted
        );
        assert_eq!(
            verdict(&policy, &forge, "x", "bob", Command::Rollback { reason: None }).await,
            Verdict::Refused(
                "@bob has read permission on acme/config; /rollback needs write (or being a listed \
                 approver or membership in acme/sre or membership in acme/ops)"
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn a_forge_failure_is_an_error_not_a_refusal() {
        let forge = Members {
            down: true,
            ..Members::default()
        };
        let err = Policy::default()
            .authorize(&forge, &repo(), "dave", "carol", &Command::Approve)
            .await
            .expect_err("no verdict without the forge");
        assert_eq!(err.category(), "ReadPermission");
        assert_eq!(err.forge_error().category(), "ForgeRateLimited");
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("in range")
    }

    fn comment(id: u64, author: &str, body: &str, created: i64, updated: i64) -> Comment {
        Comment {
            id,
            author: author.into(),
            body: body.into(),
            created_at: at(created),
            updated_at: at(updated),
            url: format!("https://github.com/acme/config/pull/7#issuecomment-{id}"),
        }
    }

    fn review(id: u64, author: &str, state: ReviewState, submitted: i64) -> Review {
        Review {
            id,
            author: author.into(),
            state,
            body: String::new(),
            submitted_at: at(submitted),
        }
    }

    fn accepted(sources: &[Source]) -> BTreeMap<Source, Verdict> {
        sources.iter().map(|s| (*s, Verdict::Accepted)).collect()
    }

    #[test]
    fn edited_and_stale_comments_never_count() {
        let comments = [
            comment(1, "old", "/approve", -10, -10),
            comment(2, "editor", "/approve", 5, 6),
            comment(3, "chatty", "looks good", 5, 5),
            comment(4, "carol", "  /Approve", 0, 0),
        ];
        let judged = accepted(&[
            Source::Comment(1),
            Source::Comment(2),
            Source::Comment(3),
            Source::Comment(4),
        ]);
        let tally = tally(&Policy::default(), &comments, &[], at(0), &judged);
        assert_eq!(tally.approved_by, vec!["carol"]);
        assert!(tally.is_open());
        assert!(tally.unjudged.is_empty());
    }

    #[test]
    fn required_approvals_come_from_distinct_users_and_reviews_count() {
        let policy = Policy::new(&Approvals {
            required: Some(2),
            ..Approvals::default()
        });
        let comments = [
            comment(1, "carol", "/approve", 1, 1),
            comment(2, "Carol", "/approve", 2, 2),
        ];
        let judged = accepted(&[Source::Comment(1), Source::Comment(2)]);
        let one = tally(&policy, &comments, &[], at(0), &judged);
        assert_eq!(one.approved_by, vec!["carol"]);
        assert!(!one.is_open());

        let reviews = [
            review(9, "frank", ReviewState::Approved, 3),
            review(10, "gina", ReviewState::ChangesRequested, 1),
            review(11, "hal", ReviewState::Approved, -1),
        ];
        let judged = accepted(&[
            Source::Comment(1),
            Source::Comment(2),
            Source::Review(9),
            Source::Review(10),
            Source::Review(11),
        ]);
        let two = tally(&policy, &comments, &reviews, at(0), &judged);
        assert_eq!(two.approved_by, vec!["carol", "frank"]);
        assert!(two.is_open());
    }

    #[test]
    fn refused_approvals_never_count_and_unjudged_ones_are_listed() {
        let comments = [
            comment(1, "bob", "/approve", 1, 1),
            comment(2, "carol", "/approve", 2, 2),
            comment(3, "carol", "/approve again", 3, 3),
        ];
        let mut judged = BTreeMap::from([(Source::Comment(1), Verdict::Refused("read".into()))]);
        let first = tally(&Policy::default(), &comments, &[], at(0), &judged);
        assert!(first.approved_by.is_empty());
        assert_eq!(
            first.unjudged.iter().map(|c| c.source).collect::<Vec<_>>(),
            vec![Source::Comment(2), Source::Comment(3)]
        );
        judged.insert(Source::Comment(2), Verdict::Accepted);
        let second = tally(&Policy::default(), &comments, &[], at(0), &judged);
        assert_eq!(second.approved_by, vec!["carol"]);
        assert!(
            second.unjudged.is_empty(),
            "carol's second approval needs no judgement"
        );
    }
}
