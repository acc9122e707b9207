//! GitHub/GitLab CODEOWNERS: `pattern owner...` lines, the last matching pattern wins.
//! GitLab sections (`[Name]`, `[Name][2]`, `^[Optional]`, with default owners) each decide
//! on their own. Anything else is an error naming the line: the file is never guessed at.

use regex::Regex;

use super::{Owner, ParseError};

/// One `pattern owners` line.
#[derive(Clone, Debug)]
pub struct Rule {
    pub pattern: String,
    matcher: Regex,
    /// Empty: the files matched have no owner (a later line can unset an earlier one).
    pub owners: Vec<Owner>,
}

impl Rule {
    pub fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path.trim_start_matches('/'))
    }
}

/// A GitLab section, or the whole file for GitHub (the unnamed section).
#[derive(Clone, Debug)]
pub struct Section {
    /// Empty for the rules before any section header.
    pub name: String,
    /// Approvals needed from the owners this section names (`[Name][2]`). Default 1.
    pub required: u32,
    /// `^[Name]`: its approval is not required.
    pub optional: bool,
    pub rules: Vec<Rule>,
}

impl Section {
    /// The rule that decides `path` in this section: the last that matches.
    pub fn owner_of(&self, path: &str) -> Option<&Rule> {
        self.rules.iter().rev().find(|r| r.matches(path))
    }
}

/// Parses a CODEOWNERS file. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<Section>, ParseError> {
    let mut sections = vec![Section {
        name: String::new(),
        required: 1,
        optional: false,
        rules: Vec::new(),
    }];
    let mut defaults: Vec<Owner> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let error = |message: String| ParseError {
            file: file.to_owned(),
            line,
            message,
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('[') || trimmed.starts_with("^[") {
            let (section, owners) = section_header(trimmed).map_err(error)?;
            defaults = owners;
            sections.push(section);
            continue;
        }
        let tokens = split(trimmed);
        let (pattern, owner_tokens) = tokens.split_first().expect("a non-empty line has a token");
        let matcher = matcher(pattern).map_err(error)?;
        let mut owners = Vec::new();
        for token in owner_tokens {
            if token.starts_with('#') {
                break;
            }
            owners.push(Owner::parse(token).map_err(error)?);
        }
        let current = sections.last_mut().expect("there is always a section");
        if owners.is_empty() && !current.name.is_empty() {
            owners = defaults.clone();
        }
        current.rules.push(Rule {
            pattern: pattern.clone(),
            matcher,
            owners,
        });
    }
    Ok(sections)
}

/// `[Name]`, `^[Name]`, `[Name][2]`, each optionally followed by default owners.
fn section_header(line: &str) -> Result<(Section, Vec<Owner>), String> {
    let (optional, rest) = match line.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let rest = rest.strip_prefix('[').expect("headers start with [");
    let (name, rest) = rest
        .split_once(']')
        .ok_or_else(|| "a section header needs a closing `]`".to_owned())?;
    if name.trim().is_empty() {
        return Err("a section header needs a name: `[Name]`".into());
    }
    let (required, rest) = match rest.strip_prefix('[') {
        Some(count) => {
            let (n, rest) = count
                .split_once(']')
                .ok_or_else(|| "the approval count needs a closing `]`: `[Name][2]`".to_owned())?;
            let n: u32 = n
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("the approval count {n:?} is not a number of at least 1"))?;
            (n, rest)
        }
        None => (1, rest),
    };
    let mut owners = Vec::new();
    for token in split(rest.trim()) {
        if token.starts_with('#') {
            break;
        }
        owners.push(Owner::parse(&token)?);
    }
    Ok((
        Section {
            name: name.trim().to_owned(),
            required,
            optional,
            rules: Vec::new(),
        },
        owners,
    ))
}

/// Splits on whitespace not escaped with `\`.
fn split(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// The gitignore-style pattern as a regex over repository paths (no leading `/`): anchored
/// at the root when it has a `/` other than a trailing one; a directory's pattern covers
/// everything under it.
fn matcher(pattern: &str) -> Result<Regex, String> {
    if pattern.starts_with('!') {
        return Err(format!(
            "`{pattern}`: negated patterns (`!`) are not supported in CODEOWNERS"
        ));
    }
    if pattern.contains('[') || pattern.contains(']') {
        return Err(format!(
            "`{pattern}`: character ranges (`[ ]`) are not supported in CODEOWNERS"
        ));
    }
    let directory = pattern.ends_with('/') && pattern != "/";
    let body = pattern.trim_end_matches('/');
    let anchored = body.contains('/');
    let body = body.trim_start_matches('/');
    if body.is_empty() {
        return Err(format!("`{pattern}` matches no path"));
    }
    let mut re = String::from(if anchored { "^" } else { "^(?:.*/)?" });
    let mut rest = body;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**/") {
            re.push_str("(?:.*/)?");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("**") {
            re.push_str(".*");
            rest = after;
        } else {
            let c = rest.chars().next().expect("not empty");
            match c {
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
            rest = &rest[c.len_utf8()..];
        }
    }
    re.push_str(if directory { "/.*$" } else { "(?:/.*)?$" });
    Regex::new(&re).map_err(|e| format!("`{pattern}` is not a valid pattern: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners_of(sections: &[Section], path: &str) -> Vec<String> {
        sections
            .iter()
            .filter_map(|s| s.owner_of(path))
            .flat_map(|r| r.owners.iter().map(ToString::to_string))
            .collect()
    }

    #[test]
    fn the_last_matching_pattern_wins() {
        let file = "\
# Global owners
*                 @acme/platform
apps/             @alice
/apps/podinfo/    @bob @acme/web   # trailing comment
*.md              docs@acme.example
apps/podinfo/secret.yaml
";
        let sections = parse("CODEOWNERS", file).expect("valid");
        assert_eq!(owners_of(&sections, "README.md"), ["docs@acme.example"]);
        assert_eq!(owners_of(&sections, "apps/other/deploy.yaml"), ["alice"]);
        assert_eq!(
            owners_of(&sections, "apps/podinfo/deployment.yaml"),
            ["bob", "acme/web"]
        );
        assert!(
            owners_of(&sections, "apps/podinfo/secret.yaml").is_empty(),
            "a pattern without owners unsets them"
        );
        assert_eq!(owners_of(&sections, "infra/x.yaml"), ["acme/platform"]);
    }

    #[test]
    fn patterns_follow_gitignore_rules() {
        let cases = [
            ("*.yaml", "apps/a/b.yaml", true),
            ("*.yaml", "b.yml", false),
            ("deploy.yaml", "apps/x/deploy.yaml", true),
            ("/deploy.yaml", "apps/x/deploy.yaml", false),
            ("apps/*.yaml", "apps/a.yaml", true),
            ("apps/*.yaml", "apps/x/a.yaml", false),
            ("apps/**/a.yaml", "apps/x/y/a.yaml", true),
            ("apps/**/a.yaml", "apps/a.yaml", true),
            ("**/podinfo", "clusters/prod/podinfo/k.yaml", true),
            ("podinfo/", "apps/podinfo/k.yaml", true),
            ("podinfo/", "podinfo", false),
            ("apps/podinfo", "apps/podinfo/k.yaml", true),
            ("apps/podinfo", "apps/podinfo2/k.yaml", false),
            ("a?c.yaml", "abc.yaml", true),
            ("docs/*", "docs/a/b.md", true),
        ];
        for (pattern, path, want) in cases {
            let sections = parse("CODEOWNERS", &format!("{pattern} @x")).expect("valid");
            assert_eq!(sections[0].owner_of(path).is_some(), want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn gitlab_sections_decide_each_on_their_own() {
        let file = "\
* @lead
[Apps][2] @acme/apps
apps/
apps/podinfo/ @paula
^[Docs] @writer
*.md
";
        let sections = parse("CODEOWNERS", file).expect("valid");
        assert_eq!(sections.len(), 3);
        assert_eq!(sections[1].name, "Apps");
        assert_eq!(sections[1].required, 2);
        assert!(sections[2].optional);
        assert_eq!(
            owners_of(&sections, "apps/x.yaml"),
            ["lead", "acme/apps"],
            "section default owners apply"
        );
        assert_eq!(owners_of(&sections, "apps/podinfo/x.yaml"), ["lead", "paula"]);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (text, line, says) in [
            ("* @ok\n!apps/ @x\n", 2, "negated patterns"),
            ("* @ok\n\napps/[ab]/ @x\n", 3, "character ranges"),
            ("apps/ @alice bob\n", 1, "`bob` is not an owner"),
            ("apps/ @\n", 1, "is not an owner"),
            ("[Apps @x\n", 1, "closing `]`"),
            ("[Apps][zero] @x\n", 1, "not a number"),
            ("[] @x\n", 1, "needs a name"),
            ("apps/ @acme/\n", 1, "is not an owner"),
        ] {
            let error = parse(".github/CODEOWNERS", text).expect_err(text);
            assert_eq!(error.line, line, "{text}");
            assert!(error.message.contains(says), "{text}: {}", error.message);
            assert!(
                error
                    .to_string()
                    .starts_with(&format!(".github/CODEOWNERS line {line}: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn escaped_spaces_belong_to_the_pattern() {
        let sections = parse("CODEOWNERS", "my\\ apps/ @x\n").expect("valid");
        assert!(sections[0].owner_of("my apps/a.yaml").is_some());
    }
}
