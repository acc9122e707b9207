//! Who may give which command on a release pull request (`spec.gitops.approvals`), and which
//! `/approve`s count towards opening a gate. Forge failures are errors, never refusals: a user
//! is not refused because GitHub was down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use super::bots::is_bot_login;
use super::command::{self, Command};
use super::owners::Owner;
use super::{Comment, Forge, Permission, RepoId, Review, ReviewState};
use crate::api::{Approvals, ReleaseOwners};

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

    /// Whether asking again gives the same answer (a `[bot]` login the permission endpoint
    /// does not know, a team the token may not read): the command is refused with this
    /// error as the reason instead of being judged again and again.
    pub fn is_permanent(&self) -> bool {
        self.forge_error().is_permanent()
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
#[derive(Clone, Debug, PartialEq)]
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
    /// Accept approvals although an author of the release is not known on the forge.
    pub allow_unknown_author: bool,
    /// Whether approvers come from an ownership file (`approvals.owners`).
    pub owners_wanted: bool,
    /// The owners of what the release changed, read at its base commit (see
    /// [`Policy::with_owners`]).
    pub owners: Option<ReleaseOwners>,
    /// Distinct owners who must approve (`owners.minApprovals`, at least 1).
    pub owner_approvals: usize,
    /// How long an approval counts (`approvals.maxAge`).
    pub max_age: Option<Duration>,
    /// `approvals.maxAge` that is not a duration: no approval counts until it is fixed.
    pub max_age_error: Option<String>,
}

/// Who made the revision a release ships: the forge logins of the authors of the config-repo
/// commits that introduced it on the canary's path, and the commits whose author has no
/// forge account. Without any commit found the author is unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authors {
    pub logins: Vec<String>,
    /// `Name <e-mail> (short commit)` of each commit the forge names no account for.
    pub unknown: Vec<String>,
    /// Authors that are bots (a login, or the commit's author name when it has no account):
    /// the release needs an approval from a person.
    pub bots: Vec<String>,
    /// The commits of the change, `short-id author` (with ` (bot)` for a bot's), newest
    /// first.
    pub commits: Vec<String>,
}

impl Authors {
    /// Whether a bot authored part of the change.
    pub fn has_bot(&self) -> bool {
        !self.bots.is_empty()
    }

    /// Whether someone may have authored the release without being named in `logins`.
    pub fn is_unknown(&self) -> bool {
        !self.unknown.is_empty() || self.logins.is_empty()
    }

    /// Whether `user` authored a commit of the release.
    pub fn includes(&self, user: &str) -> bool {
        let who = login(user);
        self.logins.iter().any(|l| login(l) == who)
    }
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
            allow_unknown_author: approvals.allow_unknown_author.unwrap_or(false),
            owners_wanted: approvals.owners.is_some(),
            owners: None,
            owner_approvals: approvals
                .owners
                .as_ref()
                .and_then(|o| o.min_approvals)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1)
                .max(1),
            max_age: approvals
                .max_age
                .as_deref()
                .and_then(crate::rollout::parse_duration),
            max_age_error: approvals
                .max_age
                .as_deref()
                .filter(|t| crate::rollout::parse_duration(t).is_none())
                .map(|t| {
                    format!("spec.gitops.approvals.maxAge {t:?} is not a duration: write it like 24h or 90m")
                }),
        }
    }

    /// The policy for one release: the owners the Git writer found for it.
    pub fn with_owners(mut self, owners: Option<ReleaseOwners>) -> Policy {
        self.owners = owners;
        self
    }

    /// Why no approval can count now whoever gives it: the owners cannot be read (a
    /// malformed file, with its line), or `maxAge` is not a duration.
    pub fn broken(&self) -> Option<String> {
        if let Some(error) = &self.max_age_error {
            return Some(error.clone());
        }
        if !self.owners_wanted {
            return None;
        }
        match &self.owners {
            None => Some("the owners of this release were not read yet".into()),
            Some(owners) => owners.error.as_ref().map(|error| {
                let at: String = owners.commit.chars().take(7).collect();
                if at.is_empty() {
                    format!("the owners of this release cannot be read: {error}")
                } else {
                    format!("the owners of this release cannot be read at {at}: {error}")
                }
            }),
        }
    }

    /// The owner groups (indices into the release's `owners.groups`) `user` belongs to:
    /// named as a login or no-reply e-mail, or a member of a named team (asked of the forge,
    /// once per team).
    pub async fn owned_groups(&self, forge: &dyn Forge, user: &str) -> Result<Vec<usize>, Error> {
        let Some(owners) = &self.owners else {
            return Ok(Vec::new());
        };
        let mut teams: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut owned = Vec::new();
        for (index, group) in owners.groups.iter().enumerate() {
            let mut member = false;
            for owner in group.owners.iter().map(|o| Owner::from_stored(o)) {
                member = match &owner {
                    Owner::Team { org, team } => {
                        let key = (org.to_ascii_lowercase(), team.to_ascii_lowercase());
                        match teams.get(&key) {
                            Some(known) => *known,
                            None => {
                                let is = forge.is_team_member(org, team, user).await.map_err(|source| {
                                    Error::ReadTeam {
                                        team: format!("{org}/{team}"),
                                        user: user.to_owned(),
                                        source,
                                    }
                                })?;
                                teams.insert(key, is);
                                is
                            }
                        }
                    }
                    other => other.is_login(user),
                };
                if member {
                    break;
                }
            }
            if member {
                owned.push(index);
            }
        }
        Ok(owned)
    }

    /// What still keeps a gate closed given `approvals` (distinct users, each with the owner
    /// groups they belong to): too few approvals, no owner of some changed files, too few
    /// owners, no person for a bot's change, or a broken policy. Empty: the gate opens.
    pub fn unmet(&self, approvals: &[Counted], authors: &Authors) -> Vec<String> {
        let mut unmet = Vec::new();
        if let Some(broken) = self.broken() {
            unmet.push(broken);
            return unmet;
        }
        if approvals.len() < self.required {
            let more = self.required - approvals.len();
            unmet.push(format!("{more} more /approve"));
        }
        if let Some(owners) = self.owners.as_ref().filter(|_| self.owners_wanted) {
            for (index, group) in owners.groups.iter().enumerate() {
                let have = approvals.iter().filter(|a| a.groups.contains(&index)).count();
                let need = group.required.and_then(|n| usize::try_from(n).ok()).unwrap_or(1);
                if have < need {
                    let who: Vec<String> = group.owners.iter().map(|o| owner_name(o)).collect();
                    let of = if need - have > 1 {
                        format!("{} more approvals", need - have)
                    } else {
                        "an approval".to_owned()
                    };
                    unmet.push(format!(
                        "{of} from an owner of {} ({}, rule `{}` in {})",
                        group.paths.join(", "),
                        who.join(", "),
                        group.rule,
                        owners.file
                    ));
                }
            }
            let owning = approvals.iter().filter(|a| !a.groups.is_empty()).count();
            if owning < self.owner_approvals {
                unmet.push(format!(
                    "{} more approvals from owners ({} distinct owners must approve)",
                    self.owner_approvals - owning,
                    self.owner_approvals
                ));
            }
        }
        if authors.has_bot() && !approvals.iter().any(|a| !is_bot_login(&a.user)) {
            unmet.push(format!(
                "an approval from a person: this change was authored by {}",
                authors.bots.join(", ")
            ));
        }
        unmet
    }

    /// Whether `user` may give `command` on the release pull request of `repo`. `authors`
    /// made the change being released (the authors of its config-repo commits, not whoever
    /// opened the pull request): they may not `/approve` it, and while an author is unknown
    /// nobody may, unless the policy allows it. Their other commands follow the permission
    /// rules. Approvers and team members are admitted whatever their permission; otherwise
    /// the user needs at least the configured permission (read from the forge).
    pub async fn authorize(
        &self,
        forge: &dyn Forge,
        repo: &RepoId,
        authors: &Authors,
        user: &str,
        command: &Command,
    ) -> Result<Verdict, Error> {
        let who = login(user);
        if let Some(reason) = self.self_approval(authors, user, command) {
            return Ok(Verdict::Refused(reason));
        }
        if matches!(command, Command::Approve)
            && let Some(reason) = self.not_an_owner(forge, user).await?
        {
            return Ok(Verdict::Refused(reason));
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

    /// Why `/approve` from `user` cannot count whatever their permission: they authored the
    /// release, or an author is unknown. None for other commands and when allowed.
    pub fn self_approval(&self, authors: &Authors, user: &str, command: &Command) -> Option<String> {
        if !matches!(command, Command::Approve) || self.allow_self_approval {
            return None;
        }
        if authors.includes(user) {
            return Some(format!(
                "@{user} is an author of this release and may not approve it; another approver \
                 must (or set spec.gitops.approvals.allowSelfApproval: true)"
            ));
        }
        if authors.is_unknown() && !self.allow_unknown_author {
            let which = if authors.unknown.is_empty() {
                "no commit introducing it was found".to_owned()
            } else {
                format!("no account matches {}", authors.unknown.join(", "))
            };
            return Some(format!(
                "the author of this release is unknown ({which}), so an approval could be their \
                 own; set spec.gitops.approvals.allowUnknownAuthor: true to accept approvals anyway"
            ));
        }
        None
    }

    /// Why `/approve` from `user` cannot count under the ownership rules: the owners cannot
    /// be read, or `user` owns none of the files the release changed. None without
    /// `approvals.owners`.
    async fn not_an_owner(&self, forge: &dyn Forge, user: &str) -> Result<Option<String>, Error> {
        if !self.owners_wanted {
            return Ok(None);
        }
        if let Some(broken) = self.broken() {
            return Ok(Some(format!("{broken}; no approval counts until it is fixed")));
        }
        if !self.owned_groups(forge, user).await?.is_empty() {
            return Ok(None);
        }
        let owners = self.owners.as_ref().expect("broken() says owners are read");
        let at: String = owners.commit.chars().take(7).collect();
        let groups: Vec<String> = owners
            .groups
            .iter()
            .map(|g| {
                let who: Vec<String> = g.owners.iter().map(|o| owner_name(o)).collect();
                format!("{} ({})", g.paths.join(", "), who.join(", "))
            })
            .collect();
        Ok(Some(format!(
            "@{} owns none of the files this release changes, per {} at {at}: {}",
            login(user),
            owners.file,
            groups.join("; ")
        )))
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

/// An owner as a refusal or the status comment names it (`@user`, `@org/team`, an e-mail);
/// the renderer escapes `@`, so no reply pings a whole team.
fn owner_name(stored: &str) -> String {
    match Owner::from_stored(stored) {
        Owner::Email(email) => email,
        other => format!("@{other}"),
    }
}

/// One approver as a gate counts them: their login and the owner groups they belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub user: String,
    pub groups: Vec<usize>,
}

/// Whether an approval given `at` has expired by `now` under `max_age`.
pub fn expired(at: Timestamp, now: Timestamp, max_age: Option<Duration>) -> bool {
    let Some(max_age) = max_age else {
        return false;
    };
    let age = now.as_second().saturating_sub(at.as_second());
    age > i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
}

/// How the release branch moved since the approvals were bound to its head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BranchChange {
    /// Still the head the approvals saw (or the forge did not say).
    Same,
    /// flaggit pushed it: approvals carry over.
    Own,
    /// Someone else pushed: the approvals given before are void.
    Foreign,
    /// It is not flaggit's last recorded push, but flaggit has records in flight, so it
    /// may be its own push not yet recorded: decide at the next read.
    Unsettled,
}

/// How the release branch moved: `seen` is the head the approvals are bound to (empty:
/// none yet), `current` the head the forge shows now (empty: not said), `own` the commit
/// flaggit pushed last (empty: not recorded, e.g. a pull request from an older flaggit),
/// `writing` whether flaggit has records not yet acknowledged as pushed.
pub fn branch_change(seen: &str, current: &str, own: &str, writing: bool) -> BranchChange {
    if current.is_empty() || current == seen {
        BranchChange::Same
    } else if current == own || own.is_empty() {
        BranchChange::Own
    } else if writing {
        BranchChange::Unsettled
    } else {
        BranchChange::Foreign
    }
}

/// Where an approval was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Comment(u64),
    Review(u64),
    /// The person who merged the release pull request.
    Merge,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Comment(id) => write!(f, "comment/{id}"),
            Self::Review(id) => write!(f, "review/{id}"),
            Self::Merge => f.write_str("merge"),
        }
    }
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = |n: &str| {
            n.parse::<u64>()
                .map_err(|_| format!("not an approval source: {s:?}"))
        };
        match s.split_once('/') {
            Some(("comment", n)) => Ok(Self::Comment(id(n)?)),
            Some(("review", n)) => Ok(Self::Review(id(n)?)),
            None if s == "merge" => Ok(Self::Merge),
            _ => Err(format!("not an approval source: {s:?}")),
        }
    }
}

/// Why an approval given from `source` no longer counts: its comment was deleted or edited,
/// its review dismissed or replaced. `comments` is the pull request's comment list when it was
/// read anew (None: unchanged since the last read, so nothing was deleted); `reviews` is every
/// submitted review. A merge cannot be taken back.
pub fn withdrawn(source: Source, comments: Option<&[Comment]>, reviews: &[Review]) -> Option<String> {
    match source {
        Source::Comment(id) => {
            let comments = comments?;
            match comments.iter().find(|c| c.id == id) {
                None => Some("the approving comment was deleted".to_owned()),
                Some(c) if c.updated_at > c.created_at => Some("the approving comment was edited".to_owned()),
                Some(c) if !command::parse(&c.body).commands.contains(&Command::Approve) => {
                    Some("the comment no longer approves".to_owned())
                }
                Some(_) => None,
            }
        }
        Source::Review(id) => match reviews.iter().find(|r| r.id == id).map(|r| r.state) {
            Some(ReviewState::Approved) => None,
            Some(ReviewState::Dismissed) => Some("the approving review was dismissed".to_owned()),
            Some(_) | None => Some("the review no longer approves".to_owned()),
        },
        Source::Merge => None,
    }
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
        async fn reopen_pull_request(&self, _: &RepoId, _: u64) -> Result<(), forge::Error> {
            unused()
        }
        async fn closed_by(&self, _: &RepoId, _: u64) -> Result<Option<String>, forge::Error> {
            unused()
        }
        async fn commit_author(&self, _: &RepoId, _: &str) -> Result<Option<String>, forge::Error> {
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
        async fn comment(&self, _: &RepoId, _: u64, _: u64) -> Result<Option<Comment>, forge::Error> {
            unused()
        }
        async fn edit_comment(&self, _: &RepoId, _: u64, _: u64, _: &str) -> Result<(), forge::Error> {
            unused()
        }
        async fn react(&self, _: &RepoId, _: u64, _: u64, _: forge::Reaction) -> Result<(), forge::Error> {
            unused()
        }
        async fn open_pull_requests(
            &self,
            _: &RepoId,
            _: &str,
        ) -> Result<Vec<forge::OpenPullRequest>, forge::Error> {
            unused()
        }
        async fn pull_request_files(&self, _: &RepoId, _: u64) -> Result<Vec<String>, forge::Error> {
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
            .authorize(forge, &repo(), &by(author), user, &command)
            .await
            .expect("the forge answers")
    }

    fn by(author: &str) -> Authors {
        Authors {
            logins: vec![author.to_owned()],
            unknown: Vec::new(),
            ..Authors::default()
        }
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
            reason.starts_with("@dave is an author of this release"),
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
            .authorize(&forge, &repo(), &by("dave"), "carol", &Command::Approve)
            .await
            .expect_err("no verdict without the forge");
        assert_eq!(err.category(), "ReadPermission");
        assert_eq!(err.forge_error().category(), "ForgeRateLimited");
        assert!(!err.is_permanent(), "a rate limit passes: judge again later");
    }

    #[tokio::test]
    async fn an_author_of_the_revision_may_not_approve_and_an_unknown_author_holds_every_approval() {
        let forge = Members::with(&[("hank", Permission::Admin), ("carol", Permission::Write)], &[]);
        let policy = Policy::default();
        let authors = Authors {
            logins: vec!["ivy".into(), "Hank".into()],
            unknown: Vec::new(),
            ..Authors::default()
        };
        let judge = |authors: Authors, user: &'static str, command: Command| {
            let policy = policy.clone();
            let forge = &forge;
            async move {
                policy
                    .authorize(forge, &repo(), &authors, user, &command)
                    .await
                    .expect("the forge answers")
            }
        };
        let Verdict::Refused(reason) = judge(authors.clone(), "hank", Command::Approve).await else {
            panic!("an author of one of the commits may not approve")
        };
        assert!(
            reason.starts_with("@hank is an author of this release"),
            "{reason}"
        );
        assert_eq!(
            judge(authors.clone(), "carol", Command::Approve).await,
            Verdict::Accepted
        );
        assert_eq!(
            judge(authors.clone(), "hank", Command::Pause).await,
            Verdict::Accepted
        );

        // A commit whose e-mail maps to no account: anyone could be its author.
        let unknown = Authors {
            logins: vec!["ivy".into()],
            unknown: vec!["Hank <hank@laptop> (abc1234)".into()],
            ..Authors::default()
        };
        let Verdict::Refused(reason) = judge(unknown.clone(), "carol", Command::Approve).await else {
            panic!("an unknown author holds approvals")
        };
        assert!(reason.contains("author of this release is unknown"), "{reason}");
        assert!(reason.contains("Hank <hank@laptop> (abc1234)"), "{reason}");
        assert!(reason.contains("allowUnknownAuthor"), "{reason}");
        let Verdict::Refused(none_found) = judge(Authors::default(), "carol", Command::Approve).await else {
            panic!("no commit found is an unknown author")
        };
        assert!(
            none_found.contains("no commit introducing it was found"),
            "{none_found}"
        );
        assert_eq!(
            judge(unknown.clone(), "carol", Command::Rollback { reason: None }).await,
            Verdict::Accepted,
            "only approvals depend on the author"
        );
        let lenient = Policy::new(&Approvals {
            allow_unknown_author: Some(true),
            ..Approvals::default()
        });
        assert_eq!(
            lenient
                .authorize(&forge, &repo(), &unknown, "carol", &Command::Approve)
                .await
                .expect("the forge answers"),
            Verdict::Accepted
        );
        let Verdict::Refused(_) = lenient
            .authorize(&forge, &repo(), &unknown, "ivy", &Command::Approve)
            .await
            .expect("the forge answers")
        else {
            panic!("a known author is still refused when unknown authors are allowed")
        };
    }

    #[test]
    fn permanent_forge_errors_are_told_from_transient_ones() {
        let forbidden = forge::Error::Unauthorized {
            forge: "github",
            status: 403,
        };
        let bad_token = forge::Error::Unauthorized {
            forge: "github",
            status: 401,
        };
        let no_user = forge::Error::NotFound {
            forge: "github",
            what: "user dependabot[bot]".into(),
        };
        let down = forge::Error::Request {
            forge: "github",
            action: "read".into(),
            message: "HTTP 502".into(),
        };
        let limited = forge::Error::RateLimited {
            forge: "github",
            retry_after: Duration::from_secs(5),
        };
        assert!(forbidden.is_permanent(), "a team the token may not read");
        assert!(no_user.is_permanent(), "a login the forge does not know");
        assert!(
            !bad_token.is_permanent(),
            "credentials are fixed in the Secret, then it works"
        );
        assert!(!down.is_permanent());
        assert!(!limited.is_permanent());
        let team = Error::ReadTeam {
            team: "acme/sre".into(),
            user: "rita".into(),
            source: forbidden,
        };
        assert!(team.is_permanent());
    }

    #[test]
    fn approvals_are_withdrawn_with_their_comment_review_or_edit() {
        let comments = [
            comment(1, "alice", "/approve", 1, 1),
            comment(2, "bob", "/approve", 2, 9),
            comment(3, "carol", "thanks", 3, 3),
        ];
        let reviews = [
            review(10, "dana", ReviewState::Approved, 4),
            review(11, "erin", ReviewState::Dismissed, 5),
        ];
        let gone = |source| withdrawn(source, Some(&comments), &reviews);
        assert_eq!(gone(Source::Comment(1)), None);
        assert_eq!(
            gone(Source::Comment(2)).as_deref(),
            Some("the approving comment was edited")
        );
        assert_eq!(
            gone(Source::Comment(3)).as_deref(),
            Some("the comment no longer approves")
        );
        assert_eq!(
            gone(Source::Comment(4)).as_deref(),
            Some("the approving comment was deleted")
        );
        assert_eq!(gone(Source::Review(10)), None);
        assert_eq!(
            gone(Source::Review(11)).as_deref(),
            Some("the approving review was dismissed")
        );
        assert_eq!(
            gone(Source::Review(12)).as_deref(),
            Some("the review no longer approves")
        );
        assert_eq!(gone(Source::Merge), None, "a merge cannot be taken back");
        assert_eq!(
            withdrawn(Source::Comment(4), None, &reviews),
            None,
            "an unchanged comment list deleted nothing"
        );
        for source in [Source::Comment(7), Source::Review(8), Source::Merge] {
            assert_eq!(source.to_string().parse::<Source>(), Ok(source));
        }
        assert!("comment/x".parse::<Source>().is_err());
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

    fn owned(groups: Vec<(&str, &[&str])>) -> ReleaseOwners {
        ReleaseOwners {
            file: ".github/CODEOWNERS".into(),
            commit: "abc1234def".into(),
            groups: groups
                .into_iter()
                .map(|(path, owners)| crate::api::OwnerGroup {
                    rule: format!("/{path}"),
                    paths: vec![path.to_owned()],
                    owners: owners.iter().map(|o| o.to_string()).collect(),
                    required: None,
                })
                .collect(),
            error: None,
        }
    }

    fn with_owners(owners: Option<ReleaseOwners>, min: Option<i32>) -> Policy {
        Policy::new(&Approvals {
            owners: Some(crate::api::OwnersSource {
                min_approvals: min,
                ..Default::default()
            }),
            ..Approvals::default()
        })
        .with_owners(owners)
    }

    fn counted(user: &str, groups: &[usize]) -> Counted {
        Counted {
            user: user.into(),
            groups: groups.to_vec(),
        }
    }

    #[tokio::test]
    async fn only_owners_of_the_changed_files_may_approve_teams_through_the_forge() {
        let forge = Members::with(
            &[
                ("alice", Permission::Write),
                ("bob", Permission::Write),
                ("tina", Permission::Write),
            ],
            &[("acme/web", &["tina"])],
        );
        let policy = with_owners(
            Some(owned(vec![
                ("apps/podinfo/deploy.yaml", &["alice", "acme/web"]),
                ("apps/web/deploy.yaml", &["acme/web"]),
            ])),
            None,
        );
        assert_eq!(
            verdict(&policy, &forge, "hank", "alice", Command::Approve).await,
            Verdict::Accepted
        );
        assert_eq!(policy.owned_groups(&forge, "alice").await.expect("answers"), [0]);
        assert_eq!(
            verdict(&policy, &forge, "hank", "tina", Command::Approve).await,
            Verdict::Accepted
        );
        assert_eq!(
            policy.owned_groups(&forge, "tina").await.expect("answers"),
            [0, 1]
        );
        let Verdict::Refused(reason) = verdict(&policy, &forge, "hank", "bob", Command::Approve).await else {
            panic!("a non-owner may not approve")
        };
        assert!(
            reason.starts_with(
                "@bob owns none of the files this release changes, per .github/CODEOWNERS at abc1234"
            ),
            "{reason}"
        );
        assert!(
            reason.contains("apps/podinfo/deploy.yaml (@alice, @acme/web)"),
            "{reason}"
        );
        assert_eq!(
            verdict(&policy, &forge, "hank", "bob", Command::Pause).await,
            Verdict::Accepted,
            "ownership decides approvals only"
        );
    }

    #[tokio::test]
    async fn unreadable_owners_hold_every_approval_with_the_file_and_line() {
        let forge = Members::with(&[("alice", Permission::Admin)], &[]);
        let broken = ReleaseOwners {
            error: Some(".github/CODEOWNERS line 3: `bob` is not an owner".into()),
            commit: "abc1234def".into(),
            ..Default::default()
        };
        let policy = with_owners(Some(broken), None);
        let Verdict::Refused(reason) = verdict(&policy, &forge, "hank", "alice", Command::Approve).await
        else {
            panic!("no approval counts while the owners cannot be read")
        };
        assert_eq!(
            reason,
            "the owners of this release cannot be read at abc1234: .github/CODEOWNERS line 3: `bob` \
             is not an owner; no approval counts until it is fixed"
        );
        assert_eq!(
            policy.unmet(&[counted("alice", &[])], &Authors::default()),
            [
                "the owners of this release cannot be read at abc1234: .github/CODEOWNERS line 3: `bob` is not an owner"
            ]
        );
        let unread = with_owners(None, None);
        assert_eq!(
            unread.broken().as_deref(),
            Some("the owners of this release were not read yet")
        );
    }

    #[test]
    fn a_gate_needs_each_group_the_owner_count_and_the_required_count() {
        let policy = Policy {
            required: 2,
            ..with_owners(
                Some(owned(vec![
                    ("apps/a.yaml", &["alice"]),
                    ("apps/b.yaml", &["bob"]),
                ])),
                Some(2),
            )
        };
        let none = Authors::default();
        let unmet = policy.unmet(&[counted("alice", &[0])], &none);
        assert_eq!(unmet.len(), 3, "{unmet:?}");
        assert_eq!(unmet[0], "1 more /approve");
        assert!(
            unmet[1].starts_with("an approval from an owner of apps/b.yaml (@bob"),
            "{unmet:?}"
        );
        assert!(unmet[2].starts_with("1 more approvals from owners"), "{unmet:?}");
        // Two approvers, but the second owns nothing: apps/b.yaml still waits.
        let unmet = policy.unmet(&[counted("alice", &[0]), counted("carl", &[])], &none);
        assert_eq!(unmet.len(), 2, "{unmet:?}");
        assert!(
            policy
                .unmet(&[counted("alice", &[0]), counted("bob", &[1])], &none)
                .is_empty()
        );
        // One owner of both files is one owner: minApprovals 2 wants another.
        let unmet = policy.unmet(&[counted("olga", &[0, 1]), counted("carl", &[])], &none);
        assert_eq!(
            unmet,
            ["1 more approvals from owners (2 distinct owners must approve)"]
        );
    }

    #[test]
    fn a_bot_s_change_needs_a_person_and_a_bot_is_never_that_person() {
        let policy = Policy {
            required: 2,
            ..Policy::default()
        };
        let by_bot = Authors {
            logins: vec!["renovate[bot]".into()],
            bots: vec!["renovate[bot]".into()],
            ..Authors::default()
        };
        let bots_only = [counted("dependabot[bot]", &[]), counted("fluxcdbot", &[])];
        assert_eq!(
            policy.unmet(&bots_only, &by_bot),
            ["an approval from a person: this change was authored by renovate[bot]"]
        );
        assert!(policy.unmet(&bots_only, &Authors::default()).is_empty());
        assert!(
            policy
                .unmet(&[counted("dependabot[bot]", &[]), counted("carol", &[])], &by_bot)
                .is_empty()
        );
    }

    #[test]
    fn the_branch_moves_with_flaggit_s_pushes_and_not_with_others() {
        use BranchChange::*;
        assert_eq!(branch_change("aaa", "aaa", "aaa", false), Same);
        assert_eq!(
            branch_change("aaa", "", "bbb", false),
            Same,
            "the forge did not say"
        );
        assert_eq!(branch_change("aaa", "bbb", "bbb", false), Own);
        assert_eq!(branch_change("", "bbb", "bbb", false), Own);
        assert_eq!(
            branch_change("aaa", "bbb", "", false),
            Own,
            "a pull request from before heads were recorded"
        );
        assert_eq!(branch_change("aaa", "ccc", "bbb", false), Foreign);
        assert_eq!(branch_change("", "ccc", "bbb", false), Foreign);
        assert_eq!(branch_change("aaa", "ccc", "bbb", true), Unsettled);
    }

    #[test]
    fn approvals_expire_after_max_age_and_a_bad_max_age_holds_them() {
        let day = Some(Duration::from_secs(24 * 3600));
        assert!(!expired(at(0), at(24 * 3600), day));
        assert!(expired(at(0), at(24 * 3600 + 1), day));
        assert!(!expired(at(0), at(1_000_000), None));
        let policy = Policy::new(&Approvals {
            max_age: Some("24h".into()),
            ..Approvals::default()
        });
        assert_eq!(policy.max_age, day);
        assert_eq!(policy.broken(), None);
        let bad = Policy::new(&Approvals {
            max_age: Some("a day".into()),
            ..Approvals::default()
        });
        assert_eq!(
            bad.broken().as_deref(),
            Some("spec.gitops.approvals.maxAge \"a day\" is not a duration: write it like 24h or 90m")
        );
        assert_eq!(bad.unmet(&[counted("carol", &[])], &Authors::default()).len(), 1);
    }
}
