//! Kubernetes OWNERS files: `approvers` (and `reviewers`, who do not approve) of a directory
//! and everything under it; the approvers of a file are those of the nearest OWNERS file up
//! the tree and of every parent's, up to one with `options: {no_parent_owners: true}`.

use serde::Deserialize;

use super::{Owner, ParseError};

/// One OWNERS file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnersFile {
    pub approvers: Vec<Owner>,
    pub reviewers: Vec<Owner>,
    /// Stop at this file: parents' approvers do not count below it.
    pub no_parent_owners: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    reviewers: Vec<String>,
    #[serde(default)]
    options: WireOptions,
    #[serde(default)]
    filters: Option<serde_yaml::Value>,
    // Known keys that decide nothing here.
    #[serde(default, rename = "labels")]
    _labels: Option<serde_yaml::Value>,
    #[serde(default, rename = "emeritus_approvers")]
    _emeritus_approvers: Option<serde_yaml::Value>,
    #[serde(default, rename = "emeritus_reviewers")]
    _emeritus_reviewers: Option<serde_yaml::Value>,
    #[serde(default, rename = "required_reviewers")]
    _required_reviewers: Option<serde_yaml::Value>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOptions {
    #[serde(default)]
    no_parent_owners: bool,
}

/// Parses an OWNERS file; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<OwnersFile, ParseError> {
    let error = |line: usize, message: String| ParseError {
        file: file.to_owned(),
        line,
        message,
    };
    if text.trim().is_empty() {
        return Ok(OwnersFile::default());
    }
    let wire: Wire = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map_or(1, |l| l.line());
        let message = e.to_string();
        // serde_yaml appends " at line L column C": the line is said once, up front.
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        error(line, message)
    })?;
    if wire.filters.is_some() {
        return Err(error(
            line_of(text, "filters:"),
            "`filters` (per-file approvers by regular expression) are not supported: list the \
             approvers in an OWNERS file in the directory instead"
                .into(),
        ));
    }
    let owners = |key: &str, names: Vec<String>| -> Result<Vec<Owner>, ParseError> {
        names
            .iter()
            .map(|name| {
                let token = if name.contains('@') {
                    name.clone()
                } else {
                    format!("@{name}")
                };
                Owner::parse(&token).map_err(|m| error(line_of_entry(text, key, name), m))
            })
            .collect()
    };
    Ok(OwnersFile {
        approvers: owners("approvers", wire.approvers)?,
        reviewers: owners("reviewers", wire.reviewers)?,
        no_parent_owners: wire.options.no_parent_owners,
    })
}

/// The 1-based line of the first line starting with `key` (1 when absent).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map_or(1, |i| i + 1)
}

/// The line naming `entry` after `key`, for an error about that entry.
fn line_of_entry(text: &str, key: &str, entry: &str) -> usize {
    let start = line_of(text, &format!("{key}:"));
    text.lines()
        .enumerate()
        .skip(start - 1)
        .find(|(_, l)| l.contains(entry))
        .map_or(start, |(i, _)| i + 1)
}

/// The directories whose OWNERS files decide `path` (a file), nearest first: its directory,
/// then each parent up to the root (`""`).
pub fn directories(path: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut dir = path.trim_matches('/');
    while let Some((parent, _)) = dir.rsplit_once('/') {
        dirs.push(parent.to_owned());
        dir = parent;
    }
    dirs.push(String::new());
    dirs
}

/// The approvers of `path`: those of each OWNERS file up the tree (`read` gives the file of
/// a directory, if any) until one says `no_parent_owners`; with the directories they came
/// from, nearest first.
pub fn approvers_of<E>(
    path: &str,
    mut read: impl FnMut(&str) -> Result<Option<OwnersFile>, E>,
) -> Result<(Vec<Owner>, Vec<String>), E> {
    let mut approvers: Vec<Owner> = Vec::new();
    let mut from = Vec::new();
    for dir in directories(path) {
        let Some(file) = read(&dir)? else {
            continue;
        };
        from.push(dir);
        for owner in file.approvers {
            if !approvers.contains(&owner) {
                approvers.push(owner);
            }
        }
        if file.no_parent_owners {
            break;
        }
    }
    Ok((approvers, from))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn approvers_reviewers_and_options_are_read() {
        let file = parse(
            "apps/OWNERS",
            "# see https://go.k8s.io/owners\napprovers:\n  - alice\n  - acme/sre\nreviewers: [carol]\noptions:\n  no_parent_owners: true\nlabels: [area/apps]\n",
        )
        .expect("valid");
        let names: Vec<String> = file.approvers.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["alice", "acme/sre"]);
        assert_eq!(file.reviewers.len(), 1);
        assert!(file.no_parent_owners);
        assert_eq!(parse("OWNERS", "").expect("empty"), OwnersFile::default());
    }

    #[test]
    fn the_nearest_file_and_its_parents_decide_until_no_parent_owners() {
        let files: BTreeMap<&str, &str> = BTreeMap::from([
            ("", "approvers: [root]"),
            ("apps", "approvers: [alice]"),
            ("apps/podinfo", "approvers: [paula]"),
            ("secure", "approvers: [sam]\noptions: {no_parent_owners: true}"),
        ]);
        let read = |dir: &str| -> Result<Option<OwnersFile>, ParseError> {
            files
                .get(dir)
                .map(|t| parse(&format!("{dir}/OWNERS"), t))
                .transpose()
        };
        let names = |path: &str| {
            let (owners, _) = approvers_of(path, read).expect("valid");
            owners.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert_eq!(names("apps/podinfo/deploy.yaml"), ["paula", "alice", "root"]);
        assert_eq!(names("apps/other/x/deploy.yaml"), ["alice", "root"]);
        assert_eq!(names("secure/deploy.yaml"), ["sam"]);
        assert_eq!(names("top.yaml"), ["root"]);
        assert_eq!(directories("a/b/c.yaml"), ["a/b", "a", ""]);
    }

    #[test]
    fn malformed_files_are_errors_naming_the_line() {
        for (text, line, says) in [
            ("approvers:\n  - alice\n  - [bob\n", 3, ""),
            (
                "approvers: [alice]\napprover: [bob]\n",
                2,
                "unknown field `approver`",
            ),
            (
                "approvers: [alice]\nfilters:\n  \".*\": {approvers: [x]}\n",
                2,
                "`filters`",
            ),
            ("approvers:\n  - alice\n  - \"bad name!\"\n", 3, "is not an owner"),
            ("approvers: alice\n", 1, "invalid type"),
        ] {
            let error = parse("apps/OWNERS", text).expect_err(text);
            assert_eq!(error.line, line, "{text}: {error}");
            assert!(error.message.contains(says), "{text}: {}", error.message);
            assert!(error.to_string().starts_with("apps/OWNERS line "), "{error}");
        }
    }
}
