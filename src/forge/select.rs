//! Which forge a repository lives on: the canary's `spec.gitops.pullRequest.forge`, else the
//! host of its URL (`--forge-host` rules, then the public hosts), else the only forge
//! configured, else GitHub. [`Forges`] holds one client per configured forge and hands out the
//! one a repository needs, with the repository's id as that forge spells it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Forge, RepoId};
use crate::api::ForgeKind;

/// The public hosts whose forge is known without a rule.
const KNOWN_HOSTS: &[(&str, ForgeKind)] = &[
    ("github.com", ForgeKind::Github),
    ("gitlab.com", ForgeKind::Gitlab),
    ("codeberg.org", ForgeKind::Gitea),
    ("gitea.com", ForgeKind::Gitea),
];

/// The host (lowercase, without user nor port) of a clone URL: `https://u:t@Host:8443/a/b`,
/// `ssh://git@host/a/b`, `git@host:a/b`.
pub fn host_of(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        None => url.split_once(':')?.0,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        // An IPv6 literal keeps its colons.
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// A `--forge-host` rule, `host=github|gitlab|gitea`.
pub fn parse_host_rule(text: &str) -> Result<(String, ForgeKind), String> {
    let (host, kind) = text
        .split_once('=')
        .ok_or_else(|| format!("--forge-host {text:?} must be host=github, host=gitlab or host=gitea"))?;
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!(
            "--forge-host {text:?}: {host:?} is not a host name (write gitlab.example.com, no scheme nor path)"
        ));
    }
    Ok((
        host,
        kind.parse().map_err(|e| format!("--forge-host {text:?}: {e}"))?,
    ))
}

/// The forge a repository lives on, decided from what is known (pure).
pub fn kind_of(
    url: &str,
    requested: Option<ForgeKind>,
    rules: &BTreeMap<String, ForgeKind>,
    configured: &[ForgeKind],
) -> ForgeKind {
    if let Some(kind) = requested {
        return kind;
    }
    if let Some(host) = host_of(url) {
        if let Some(kind) = rules.get(&host) {
            return *kind;
        }
        if let Some((_, kind)) = KNOWN_HOSTS.iter().find(|(known, _)| *known == host) {
            return *kind;
        }
    }
    match configured {
        [only] => *only,
        _ => ForgeKind::Github,
    }
}

/// The repository's id as `kind` addresses it: GitLab keeps every group of the path.
pub fn repo_id(kind: ForgeKind, url: &str) -> Option<RepoId> {
    match kind {
        ForgeKind::Gitlab => RepoId::from_clone_url_nested(url),
        ForgeKind::Github | ForgeKind::Gitea => RepoId::from_clone_url(url),
    }
}

/// A repository's forge client and its id there.
#[derive(Clone)]
pub struct Picked {
    pub forge: Arc<dyn Forge>,
    pub repo: RepoId,
}

/// The configured forge clients, and the host rules that choose among them.
#[derive(Clone, Default)]
pub struct Forges {
    clients: BTreeMap<ForgeKind, Arc<dyn Forge>>,
    rules: BTreeMap<String, ForgeKind>,
}

impl std::fmt::Debug for Forges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forges")
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .field("rules", &self.rules)
            .finish()
    }
}

impl Forges {
    /// One forge for every repository (tests, and the GitHub-only setup of before).
    pub fn single(kind: ForgeKind, forge: Arc<dyn Forge>) -> Forges {
        Forges::default().with(kind, forge)
    }

    pub fn with(mut self, kind: ForgeKind, forge: Arc<dyn Forge>) -> Forges {
        self.clients.insert(kind, forge);
        self
    }

    pub fn with_host(mut self, host: String, kind: ForgeKind) -> Forges {
        self.rules.insert(host, kind);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The configured forges.
    pub fn kinds(&self) -> Vec<ForgeKind> {
        self.clients.keys().copied().collect()
    }

    /// The forge of the repository at `url` (`requested` by the canary, or told from the
    /// URL), with the repository's id there. Err says what to configure.
    pub fn pick(&self, url: &str, requested: Option<ForgeKind>) -> Result<Picked, String> {
        let kind = kind_of(url, requested, &self.rules, &self.kinds());
        let forge = self.clients.get(&kind).cloned().ok_or_else(|| {
            format!(
                "{} lives on {}, and no {} client is configured: set --{}-secret (and its API URL)",
                crate::redact::url(url),
                kind.as_str(),
                kind.as_str(),
                kind.as_str()
            )
        })?;
        let repo = repo_id(kind, url).ok_or_else(|| {
            format!(
                "cannot tell the repository from {}: use an URL like https://host/owner/name.git",
                crate::redact::url(url)
            )
        })?;
        Ok(Picked { forge, repo })
    }

    /// Every id the repository at `url` may have on a forge: webhook deliveries name the
    /// repository as its forge spells it.
    pub fn repo_ids_of(url: &str) -> Vec<RepoId> {
        let mut ids: Vec<RepoId> = [ForgeKind::Github, ForgeKind::Gitlab]
            .into_iter()
            .filter_map(|kind| repo_id(kind, url))
            .collect();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_every_url_shape() {
        for (url, host) in [
            ("https://github.com/acme/config.git", "github.com"),
            (
                "https://oauth2:glpat@GitLab.example.com:8443/acme/config.git",
                "gitlab.example.com",
            ),
            ("ssh://git@codeberg.org/acme/config.git", "codeberg.org"),
            ("git@gitlab.com:acme/platform/config.git", "gitlab.com"),
            ("git://127.0.0.1:9418/acme/config.git#main", "127.0.0.1"),
            ("http://[::1]:3000/acme/config.git", "::1"),
        ] {
            assert_eq!(host_of(url).as_deref(), Some(host), "{url}");
        }
        assert_eq!(host_of("no url"), None);
    }

    #[test]
    fn the_forge_is_requested_else_told_from_the_host() {
        let rules = BTreeMap::from([("git.acme.io".to_string(), ForgeKind::Gitea)]);
        let all = [ForgeKind::Github, ForgeKind::Gitlab, ForgeKind::Gitea];
        let kind = |url, requested| kind_of(url, requested, &rules, &all);
        assert_eq!(kind("https://gitlab.com/a/b.git", None), ForgeKind::Gitlab);
        assert_eq!(kind("https://codeberg.org/a/b.git", None), ForgeKind::Gitea);
        assert_eq!(kind("https://github.com/a/b.git", None), ForgeKind::Github);
        assert_eq!(
            kind("https://git.acme.io/a/b.git", None),
            ForgeKind::Gitea,
            "a rule"
        );
        assert_eq!(
            kind("https://github.com/a/b.git", Some(ForgeKind::Gitlab)),
            ForgeKind::Gitlab,
            "the canary's field wins"
        );
        assert_eq!(
            kind("https://elsewhere/a/b.git", None),
            ForgeKind::Github,
            "as before"
        );
        // An unknown host with one forge configured: that one.
        assert_eq!(
            kind_of(
                "git://127.0.0.1/a/b.git",
                None,
                &BTreeMap::new(),
                &[ForgeKind::Gitea]
            ),
            ForgeKind::Gitea
        );
    }

    #[test]
    fn host_rules_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_host_rule("GitLab.Example.com=gitlab"),
            Ok(("gitlab.example.com".into(), ForgeKind::Gitlab))
        );
        assert_eq!(
            parse_host_rule("git.acme.io=forgejo"),
            Ok(("git.acme.io".into(), ForgeKind::Gitea))
        );
        assert!(
            parse_host_rule("gitlab.example.com")
                .expect_err("no kind")
                .contains("host=gitlab")
        );
        assert!(
            parse_host_rule("https://x/=gitlab")
                .expect_err("a URL")
                .contains("not a host")
        );
        assert!(
            parse_host_rule("x=bitbucket")
                .expect_err("unknown")
                .contains("github, gitlab or gitea")
        );
    }

    #[test]
    fn a_forge_without_a_client_says_which_flag_to_set() {
        let none = Forges::default();
        assert!(none.is_empty());
        let Err(e) = none.pick("https://oauth2:glpat-x@gitlab.com/acme/config.git", None) else {
            panic!("no client is configured")
        };
        assert!(e.contains("--gitlab-secret"), "{e}");
        assert!(!e.contains("glpat-x"), "the URL's secret is not repeated: {e}");
        let Err(e) = none.pick("https://github.com/acme/config.git", Some(ForgeKind::Gitea)) else {
            panic!("no client is configured")
        };
        assert!(e.contains("--gitea-secret"), "{e}");
    }

    #[test]
    fn gitlab_ids_keep_nested_groups() {
        let url = "https://gitlab.com/acme/platform/config.git";
        assert_eq!(
            repo_id(ForgeKind::Gitlab, url).map(|r| r.full_path()).as_deref(),
            Some("acme/platform/config")
        );
        assert_eq!(
            repo_id(ForgeKind::Github, url).map(|r| r.full_path()).as_deref(),
            Some("platform/config")
        );
    }
}
