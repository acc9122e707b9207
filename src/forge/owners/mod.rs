//! Who owns the files a release changed, from an ownership file in the config repository
//! (`spec.gitops.approvals.owners`): CODEOWNERS or Kubernetes OWNERS. Parsing and matching
//! only; the file is read by the Git side at the release's base commit.

pub mod codeowners;
pub mod k8s;

use crate::api::OwnerGroup;

/// An owner named in an ownership file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    User(String),
    Team { org: String, team: String },
    Email(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(login) => f.write_str(login),
            Self::Team { org, team } => write!(f, "{org}/{team}"),
            Self::Email(email) => f.write_str(email),
        }
    }
}

impl Owner {
    /// `@user`, `@org/team` or `name@host`.
    pub fn parse(token: &str) -> Result<Owner, String> {
        let refuse =
            || format!("`{token}` is not an owner: write @user, @org/team-slug or an e-mail address");
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '[' | ']'))
        };
        if let Some(name) = token.strip_prefix('@') {
            return match name.split_once('/') {
                Some((org, team)) if name_ok(org) && name_ok(team) => Ok(Owner::Team {
                    org: org.to_owned(),
                    team: team.to_owned(),
                }),
                Some(_) => Err(refuse()),
                None if name_ok(name) => Ok(Owner::User(name.to_owned())),
                None => Err(refuse()),
            };
        }
        match token.split_once('@') {
            Some((local, host))
                if !local.is_empty() && host.contains('.') && !token.contains(char::is_whitespace) =>
            {
                Ok(Owner::Email(token.to_ascii_lowercase()))
            }
            _ => Err(refuse()),
        }
    }

    /// An owner as stored in the status (`user`, `org/team`, an e-mail).
    pub fn from_stored(stored: &str) -> Owner {
        if stored.contains('@') {
            Owner::Email(stored.to_owned())
        } else if let Some((org, team)) = stored.split_once('/') {
            Owner::Team {
                org: org.to_owned(),
                team: team.to_owned(),
            }
        } else {
            Owner::User(stored.to_owned())
        }
    }

    /// Whether `login` is this owner without asking the forge: the same login, or a GitHub
    /// no-reply address of it (`login@users.noreply.github.com`, `id+login@...`). Other
    /// e-mails cannot be tied to an account and match nobody.
    pub fn is_login(&self, login: &str) -> bool {
        match self {
            Self::User(user) => user.eq_ignore_ascii_case(login.trim_start_matches('@')),
            Self::Email(email) => email
                .strip_suffix("@users.noreply.github.com")
                .map(|local| local.rsplit('+').next().unwrap_or(local))
                .is_some_and(|l| l.eq_ignore_ascii_case(login.trim_start_matches('@'))),
            Self::Team { .. } => false,
        }
    }
}

/// A malformed ownership file: which file, which line, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Changed files listed per group at most.
const PATHS_PER_GROUP: usize = 5;

/// Groups the changed `paths` by who owns them: one group per distinct owner set (and rule
/// count), in the order first met. `owners_of` gives, for a path, the rules that decide it
/// (`(rule, owners, required)`; none: nobody owns it). A changed file nobody owns is an
/// error: a release must never be approvable by no one in particular.
pub fn groups(
    paths: &[String],
    mut owners_of: impl FnMut(&str) -> Vec<(String, Vec<Owner>, u32)>,
) -> Result<Vec<OwnerGroup>, String> {
    let mut groups: Vec<OwnerGroup> = Vec::new();
    for path in paths {
        let decided = owners_of(path);
        if decided.iter().all(|(_, owners, _)| owners.is_empty()) {
            return Err(format!("nobody owns {path}: add an owner for it"));
        }
        for (rule, owners, required) in decided.into_iter().filter(|(_, o, _)| !o.is_empty()) {
            let names: Vec<String> = owners.iter().map(ToString::to_string).collect();
            let required = (required > 1).then_some(required as i32);
            match groups
                .iter_mut()
                .find(|g| g.owners == names && g.required == required)
            {
                Some(group) => {
                    if group.paths.len() < PATHS_PER_GROUP {
                        group.paths.push(path.clone());
                    }
                }
                None => groups.push(OwnerGroup {
                    rule,
                    paths: vec![path.clone()],
                    owners: names,
                    required,
                }),
            }
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_users_teams_or_e_mails() {
        assert_eq!(Owner::parse("@alice"), Ok(Owner::User("alice".into())));
        assert_eq!(
            Owner::parse("@acme/sre"),
            Ok(Owner::Team {
                org: "acme".into(),
                team: "sre".into()
            })
        );
        assert_eq!(
            Owner::parse("Jane@Acme.example"),
            Ok(Owner::Email("jane@acme.example".into()))
        );
        assert_eq!(
            Owner::parse("@renovate[bot]"),
            Ok(Owner::User("renovate[bot]".into()))
        );
        for bad in ["alice", "@", "@a/b/c", "@a b", "x@y", "@acme/"] {
            assert!(Owner::parse(bad).is_err(), "{bad}");
        }
        for stored in ["alice", "acme/sre", "jane@acme.example"] {
            assert_eq!(Owner::from_stored(stored).to_string(), stored);
        }
    }

    #[test]
    fn logins_match_users_and_no_reply_addresses_only() {
        assert!(Owner::User("Alice".into()).is_login("@alice"));
        assert!(Owner::Email("alice@users.noreply.github.com".into()).is_login("alice"));
        assert!(Owner::Email("123+alice@users.noreply.github.com".into()).is_login("ALICE"));
        assert!(!Owner::Email("alice@acme.example".into()).is_login("alice"));
        assert!(
            !Owner::Team {
                org: "acme".into(),
                team: "alice".into()
            }
            .is_login("alice")
        );
    }

    #[test]
    fn changed_files_are_grouped_by_their_owners_and_unowned_ones_refused() {
        let paths: Vec<String> = ["apps/a/x.yaml", "apps/a/y.yaml", "apps/b/z.yaml"]
            .map(String::from)
            .to_vec();
        let by_dir = |path: &str| {
            let owner = if path.starts_with("apps/a/") {
                "@alice"
            } else {
                "@bob"
            };
            vec![("rule".to_owned(), vec![Owner::parse(owner).expect("valid")], 1)]
        };
        let grouped = groups(&paths, by_dir).expect("owned");
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].owners, ["alice"]);
        assert_eq!(grouped[0].paths, ["apps/a/x.yaml", "apps/a/y.yaml"]);
        assert_eq!(grouped[1].owners, ["bob"]);
        let error = groups(&paths, |_| Vec::new()).expect_err("unowned");
        assert_eq!(error, "nobody owns apps/a/x.yaml: add an owner for it");
    }

    #[test]
    fn the_shipped_examples_parse() {
        let sections = codeowners::parse(
            "CODEOWNERS",
            include_str!("../../../examples/gitops/owners/CODEOWNERS"),
        )
        .expect("the example CODEOWNERS is valid");
        let owners = |path: &str| -> Vec<String> {
            sections
                .iter()
                .filter_map(|s| s.owner_of(path))
                .flat_map(|r| r.owners.iter().map(ToString::to_string))
                .collect()
        };
        assert_eq!(owners("apps/podinfo/deployment.yaml"), ["acme/web", "olga"]);
        assert_eq!(
            owners("apps/podinfo/networkpolicy.yaml"),
            ["acme/web", "olga", "acme/security"]
        );
        for (file, text) in [
            (
                "apps/OWNERS",
                include_str!("../../../examples/gitops/owners/apps/OWNERS"),
            ),
            (
                "apps/podinfo/OWNERS",
                include_str!("../../../examples/gitops/owners/apps/podinfo/OWNERS"),
            ),
        ] {
            k8s::parse(file, text).expect("the example OWNERS is valid");
        }
        let canary: crate::api::Canary =
            serde_yaml::from_str(include_str!("../../../examples/gitops/pull-request-owners.yaml"))
                .expect("the example Canary parses");
        let approvals = canary.spec.gitops.and_then(|g| g.approvals).expect("approvals");
        assert_eq!(approvals.max_age.as_deref(), Some("24h"));
        assert_eq!(
            approvals.owners.map(|o| o.file),
            Some(crate::api::OwnersFileKind::Codeowners)
        );
    }
}
