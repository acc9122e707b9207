//! Which config repositories and paths a canary's namespace may have flaggit write to: the
//! source that provably applies its target, and what the cluster admin grants with
//! `--git-allow` rules.

use std::fmt;
use std::str::FromStr;

use super::source::normalise_path;

/// One `--git-allow` rule: canaries in `namespace` (`*`: every namespace) may name `url` in
/// `spec.gitops.repository`, and paths under `path` in `spec.gitops.path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub namespace: String,
    /// As written (shown in messages, redacted); compared without case, `.git` or a trailing `/`.
    pub url: String,
    /// A normalised path prefix; `""` is the whole repository.
    pub path: String,
}

impl FromStr for Rule {
    type Err = String;

    /// `namespace=NS,url=URL[,path=PREFIX]`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (mut namespace, mut url, mut path) = (None, None, None);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!(
                    "--git-allow {:?}: {:?} is not key=value: write namespace=NS,url=URL[,path=PREFIX]",
                    crate::redact::text(text),
                    crate::redact::text(part)
                ));
            };
            let slot = match key.trim() {
                "namespace" => &mut namespace,
                "url" => &mut url,
                "path" => &mut path,
                other => {
                    return Err(format!(
                        "--git-allow: unknown key {other:?}: the keys are namespace, url and path"
                    ));
                }
            };
            *slot = Some(value.trim().to_string());
        }
        let namespace = namespace
            .filter(|n| !n.is_empty())
            .ok_or("--git-allow: namespace is missing: name the namespace, or * for every namespace")?;
        let url = url
            .filter(|u| !u.is_empty())
            .ok_or("--git-allow: url is missing: name the repository the namespace may use")?;
        let raw_path = path.unwrap_or_default();
        let path = normalise_path(&raw_path).ok_or_else(|| {
            format!("--git-allow: path {raw_path:?} leaves the repository: use a path relative to its root")
        })?;
        Ok(Self { namespace, url, path })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = crate::redact::url(&self.url);
        match self.path.as_str() {
            "" => write!(f, "{url} (whole repository)"),
            path => write!(f, "{url} under {path}/"),
        }
    }
}

impl Rule {
    fn covers(&self, namespace: &str) -> bool {
        self.namespace == "*" || self.namespace == namespace
    }
}

/// Whether a rule lets `namespace` use `url` with `path` (None: no manifest is edited, only
/// the ledger is written).
pub fn granted(rules: &[Rule], namespace: &str, url: &str, path: Option<&str>) -> bool {
    rules.iter().any(|rule| {
        rule.covers(namespace) && same_repository(&rule.url, url) && within(path, Some(&rule.path))
    })
}

/// What the rules grant `namespace`, for messages: `a, b` or `nothing`.
pub fn describe(rules: &[Rule], namespace: &str) -> String {
    let granted: Vec<String> = rules
        .iter()
        .filter(|r| r.covers(namespace))
        .map(Rule::to_string)
        .collect();
    if granted.is_empty() {
        "nothing".to_string()
    } else {
        granted.join(", ")
    }
}

/// Whether `path` lies under `prefix`, on a path boundary. A None prefix is the whole
/// repository; a None path edits no manifest and fits anywhere.
pub fn within(path: Option<&str>, prefix: Option<&str>) -> bool {
    match (path, prefix) {
        (None, _) | (_, None) | (_, Some("")) => true,
        (Some(path), Some(prefix)) => {
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

/// Two clone URLs of one repository: compared the way Argo CD matches them (no case, `.git` or
/// trailing `/`), and without any userinfo.
pub fn same_repository(a: &str, b: &str) -> bool {
    let key = |url: &str| {
        let url = crate::redact::url(url).trim_end_matches('/').to_ascii_lowercase();
        url.strip_suffix(".git").map(str::to_string).unwrap_or(url)
    };
    key(a) == key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Rule {
        text.parse().expect("a valid rule")
    }

    #[test]
    fn rules_parse_and_normalise() {
        assert_eq!(
            rule("namespace=team-a, url=https://git.example/org/a.git, path=./apps/a/"),
            Rule {
                namespace: "team-a".into(),
                url: "https://git.example/org/a.git".into(),
                path: "apps/a".into(),
            }
        );
        assert_eq!(rule("namespace=*,url=ssh://git@h/r").path, "");
    }

    #[test]
    fn bad_rules_say_what_to_write() {
        for (text, wanted) in [
            ("url=https://h/r", "namespace is missing"),
            ("namespace=a", "url is missing"),
            ("namespace=a,url=https://h/r,path=../x", "leaves the repository"),
            ("namespace=a,url=https://h/r,branch=x", "unknown key \"branch\""),
            ("namespace=a,https://h/r", "not key=value"),
        ] {
            let error = text.parse::<Rule>().expect_err(text);
            assert!(error.contains(wanted), "{text}: {error}");
        }
        let error = "namespace=a,https://TOKEN@h/r"
            .parse::<Rule>()
            .expect_err("no key");
        assert!(!error.contains("TOKEN"), "{error}");
    }

    #[test]
    fn a_rule_grants_its_namespace_its_repository_under_its_path() {
        let rules = [
            rule("namespace=team-a,url=https://git.example/org/fleet,path=apps/team-a"),
            rule("namespace=*,url=https://git.example/org/shared"),
        ];
        let fleet = "https://git.example/Org/fleet.git/";
        assert!(granted(&rules, "team-a", fleet, Some("apps/team-a")));
        assert!(granted(&rules, "team-a", fleet, Some("apps/team-a/deploy.yaml")));
        assert!(granted(&rules, "team-a", fleet, None), "the ledger alone");
        assert!(!granted(&rules, "team-a", fleet, Some("apps/team-ab")));
        assert!(!granted(&rules, "team-a", fleet, Some("apps/team-b")));
        assert!(!granted(&rules, "team-a", fleet, Some("")));
        assert!(!granted(&rules, "team-b", fleet, Some("apps/team-a")));
        assert!(granted(
            &rules,
            "team-b",
            "https://git.example/org/shared",
            Some("x")
        ));
        assert!(!granted(&rules, "team-b", "https://git.example/org/other", None));
        assert!(!granted(&[], "team-a", fleet, None), "no rule grants nothing");
    }

    #[test]
    fn a_token_in_either_url_does_not_matter() {
        assert!(same_repository("https://TOKEN@h/org/r.git", "https://h/org/r"));
        assert!(!same_repository("https://h/org/r", "https://h/org/r2"));
    }

    #[test]
    fn within_respects_path_boundaries() {
        assert!(within(Some("a/b"), Some("a")));
        assert!(within(Some("a"), Some("a")));
        assert!(!within(Some("ab"), Some("a")));
        assert!(within(Some("x"), Some("")));
        assert!(within(Some("x"), None));
        assert!(within(None, Some("a")));
    }

    #[test]
    fn descriptions_list_only_the_namespaces_rules_without_secrets() {
        let rules = [
            rule("namespace=team-a,url=https://TOKEN@h/fleet,path=apps/a"),
            rule("namespace=team-b,url=https://h/b"),
        ];
        assert_eq!(describe(&rules, "team-a"), "https://h/fleet under apps/a/");
        assert_eq!(describe(&rules, "team-c"), "nothing");
    }
}
