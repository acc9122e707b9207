//! Minimal-diff rollback edits of ConfigMaps: the `data` of a plain ConfigMap manifest, and the
//! `literals` and `files` of a kustomize `configMapGenerator`, written back to the data the
//! primary runs. Only the changed values' bytes are spliced; the same self-check as for images.

use std::collections::BTreeMap;

use yaml_rust2::scanner::TScalarStyle;

use super::{
    Doc, Edit, Error, KUSTOMIZATION_FILES, Node, Scalar, apply, insert, namespaces_agree, parse, replace,
    self_check,
};

/// A ConfigMap to write back: its name in the cluster, its namespace, and the data the primary
/// runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRevert {
    pub name: String,
    pub namespace: Option<String>,
    pub data: BTreeMap<String, String>,
}

/// What writing a ConfigMap back changes: the file's new text (None: unchanged), and whole
/// files a generator reads (`files:`), as paths relative to the repository root with their
/// new content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigEdit {
    pub text: Option<String>,
    pub files: Vec<(String, String)>,
}

/// Rewrites `path` (its `text`) so the ConfigMap `revert.name` declares `revert.data` again:
/// a plain `kind: ConfigMap` document, or a kustomization's `configMapGenerator` entry.
/// Ok(None): the file declares no such ConfigMap. Err: a change flaggit cannot make without
/// guessing (a block scalar, a key added or removed by the release, an env file); the file is
/// then left alone.
pub fn revert_config_map(path: &str, text: &str, revert: &ConfigRevert) -> Result<Option<ConfigEdit>, Error> {
    let docs = parse(path, text)?;
    let mut edits = Vec::new();
    let mut files = Vec::new();
    let mut found = false;
    for doc in &docs {
        let Some(root) = &doc.root else { continue };
        if doc.get_str(root, "kind") == Some("ConfigMap")
            && doc.path_str(root, &["metadata", "name"]) == Some(revert.name.as_str())
            && namespaces_agree(
                doc.path_str(root, &["metadata", "namespace"]),
                revert.namespace.as_deref(),
            )
        {
            found = true;
            plain(path, doc, root, revert, &mut edits)?;
        }
        if let Some(items) = generators(doc, root, path) {
            for item in items {
                let entry = doc.resolve(item, &mut false);
                let generated = doc
                    .get_str(entry, "name")
                    .is_some_and(|n| generated_name(n, &revert.name));
                let namespace = doc
                    .get_str(entry, "namespace")
                    .or_else(|| doc.get_str(root, "namespace"));
                if generated && namespaces_agree(namespace, revert.namespace.as_deref()) {
                    found = true;
                    generator(path, doc, entry, revert, &mut edits, &mut files)?;
                }
            }
        }
    }
    if !found {
        return Ok(None);
    }
    let text = if edits.is_empty() {
        None
    } else {
        let out = apply(path, text, &edits)?;
        self_check(path, &docs, &out, &edits)?;
        Some(out)
    };
    Ok(Some(ConfigEdit { text, files }))
}

/// Whether a generator named `generator` makes the ConfigMap `name`: the same name, or with
/// kustomize's 10-character hash suffix.
fn generated_name(generator: &str, name: &str) -> bool {
    name == generator
        || name
            .strip_prefix(generator)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|hash| hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn refuse(path: &str, line: usize, revert: &ConfigRevert, reason: String) -> Error {
    Error::ConfigEdit {
        path: path.to_string(),
        line,
        config: revert.name.clone(),
        reason,
    }
}

fn label(revert: &ConfigRevert, key: &str) -> String {
    format!("ConfigMap {} key {key}", revert.name)
}

/// A single-line value the splice can replace; block scalars are refused.
fn editable<'a>(path: &str, node: &'a Node, revert: &ConfigRevert, key: &str) -> Result<&'a Scalar, Error> {
    match node {
        Node::Scalar(s) if !matches!(s.style, TScalarStyle::Literal | TScalarStyle::Folded) => Ok(s),
        Node::Scalar(s) => Err(refuse(
            path,
            s.pos.line,
            revert,
            format!("the value of {key} is a block scalar (| or >)"),
        )),
        other => Err(refuse(
            path,
            other.pos().line,
            revert,
            format!("the value of {key} is not a plain value"),
        )),
    }
}

/// `data:` of a plain ConfigMap document.
fn plain(
    path: &str,
    doc: &Doc,
    root: &Node,
    revert: &ConfigRevert,
    edits: &mut Vec<Edit>,
) -> Result<(), Error> {
    let mut via = false;
    let data = doc.get(root, "data", &mut via);
    let Some(map @ Node::Map { entries, .. }) = data else {
        return Err(refuse(
            path,
            root.pos().line,
            revert,
            "it has no data mapping".into(),
        ));
    };
    if via {
        return Err(refuse(
            path,
            map.pos().line,
            revert,
            "its data is a YAML alias".into(),
        ));
    }
    let mut seen = Vec::new();
    for (key, value) in entries {
        let Some(key) = key.scalar().map(|k| k.value.as_str()) else {
            continue;
        };
        seen.push(key);
        let Some(want) = revert.data.get(key) else {
            return Err(refuse(
                path,
                key_line(value),
                revert,
                format!(
                    "key {key} is not in the data the primary runs (the release added it): remove it by hand"
                ),
            ));
        };
        let scalar = editable(path, value, revert, key)?;
        if scalar.value != *want {
            edits.push(replace(scalar, want, &label(revert, key)));
        }
    }
    let missing: Vec<(String, String)> = revert
        .data
        .iter()
        .filter(|(k, _)| !seen.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !missing.is_empty() {
        if missing.iter().any(|(_, v)| v.contains('\n')) {
            return Err(refuse(
                path,
                map.pos().line,
                revert,
                "a key the release removed has a multi-line value: add it back by hand".into(),
            ));
        }
        edits.push(insert(path, map, missing, &label(revert, "data"))?);
    }
    Ok(())
}

fn key_line(value: &Node) -> usize {
    value.pos().line
}

/// The `configMapGenerator` entries of a kustomization.
fn generators<'a>(doc: &'a Doc, root: &'a Node, path: &str) -> Option<&'a [Node]> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let kind = doc.get_str(root, "kind");
    let api = doc.get_str(root, "apiVersion").unwrap_or_default();
    let kustomize = (kind == Some("Kustomization") && api.starts_with("kustomize.config.k8s.io"))
        || (KUSTOMIZATION_FILES.contains(&file) && (kind.is_none() || kind == Some("Kustomization")));
    if !kustomize {
        return None;
    }
    match doc.get(root, "configMapGenerator", &mut false)? {
        Node::Seq { items, .. } => Some(items),
        _ => None,
    }
}

/// One `configMapGenerator` entry: `literals` edited in place, `files` rewritten whole.
fn generator(
    path: &str,
    doc: &Doc,
    entry: &Node,
    revert: &ConfigRevert,
    edits: &mut Vec<Edit>,
    files: &mut Vec<(String, String)>,
) -> Result<(), Error> {
    if doc.get(entry, "envs", &mut false).is_some() || doc.get(entry, "env", &mut false).is_some() {
        return Err(refuse(
            path,
            entry.pos().line,
            revert,
            "its generator reads an env file".into(),
        ));
    }
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut seen: Vec<String> = Vec::new();
    if let Some(Node::Seq { items, .. }) = doc.get(entry, "literals", &mut false) {
        for item in items {
            let Node::Scalar(literal) = item else { continue };
            let Some((key, value)) = literal.value.split_once('=') else {
                continue;
            };
            seen.push(key.to_string());
            let Some(want) = revert.data.get(key) else {
                return Err(refuse(
                    path,
                    literal.pos.line,
                    revert,
                    format!(
                        "literal {key} is not in the data the primary runs (the release added it): remove it by hand"
                    ),
                ));
            };
            if want.contains('\n') {
                return Err(refuse(
                    path,
                    literal.pos.line,
                    revert,
                    format!("the primary's {key} has several lines, which a literal cannot hold"),
                ));
            }
            if value != want {
                let scalar = editable(path, item, revert, key)?;
                edits.push(replace(scalar, &format!("{key}={want}"), &label(revert, key)));
            }
        }
    }
    if let Some(Node::Seq { items, .. }) = doc.get(entry, "files", &mut false) {
        for item in items {
            let Node::Scalar(file) = item else { continue };
            let (key, source) = match file.value.split_once('=') {
                Some((key, source)) => (key.to_string(), source),
                None => (
                    file.value.rsplit('/').next().unwrap_or(&file.value).to_string(),
                    file.value.as_str(),
                ),
            };
            let Some(want) = revert.data.get(&key) else {
                return Err(refuse(
                    path,
                    file.pos.line,
                    revert,
                    format!(
                        "file {key} is not in the data the primary runs (the release added it): remove it by hand"
                    ),
                ));
            };
            let Some(target) = join(dir, source) else {
                return Err(refuse(
                    path,
                    file.pos.line,
                    revert,
                    format!("file {source} is outside the repository"),
                ));
            };
            files.push((target, want.clone()));
            seen.push(key);
        }
    }
    if let Some(missing) = revert.data.keys().find(|k| !seen.contains(k)) {
        return Err(refuse(
            path,
            entry.pos().line,
            revert,
            format!(
                "key {missing} of the data the primary runs is missing in Git (the release removed it): add it back by hand"
            ),
        ));
    }
    Ok(())
}

/// `dir/relative` with `.` and `..` resolved; None when it climbs out of the repository.
fn join(dir: &str, relative: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revert(data: &[(&str, &str)]) -> ConfigRevert {
        ConfigRevert {
            name: "podinfo-config".into(),
            namespace: Some("test".into()),
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    const PLAIN: &str = "# the app's settings\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo-config\ndata:\n  color: \"red\" # the bad one\n  level: debug\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  color: red\n";

    #[test]
    fn a_plain_config_map_gets_only_the_changed_values_back() {
        let edit = revert_config_map(
            "cm.yaml",
            PLAIN,
            &revert(&[("color", "blue"), ("level", "debug")]),
        )
        .expect("edits")
        .expect("declares it");
        assert_eq!(
            edit.text.as_deref(),
            Some(
                PLAIN
                    .replacen("color: \"red\" # the bad one", "color: \"blue\" # the bad one", 1)
                    .as_str()
            )
        );
        assert!(edit.files.is_empty());
        // The other ConfigMap's `color: red` is untouched.
        assert!(edit.text.expect("text").ends_with("  color: red\n"));
    }

    #[test]
    fn a_key_the_release_removed_is_added_back() {
        let text = "kind: ConfigMap\nmetadata:\n  name: podinfo-config\ndata:\n  color: blue\n";
        let edit = revert_config_map("cm.yaml", text, &revert(&[("color", "blue"), ("size", "10")]))
            .expect("edits")
            .expect("declares it");
        assert_eq!(
            edit.text.as_deref(),
            Some(format!("{text}  size: \"10\"\n").as_str())
        );
    }

    #[test]
    fn what_cannot_be_written_without_guessing_is_refused() {
        let block =
            "kind: ConfigMap\nmetadata:\n  name: podinfo-config\ndata:\n  app.yaml: |\n    color: red\n";
        let error = revert_config_map("cm.yaml", block, &revert(&[("app.yaml", "color: blue\n")]))
            .expect_err("block scalar");
        assert_eq!(error.category(), "UnsupportedConfigEdit");
        assert!(error.to_string().contains("block scalar"), "{error}");
        let added =
            revert_config_map("cm.yaml", PLAIN, &revert(&[("color", "blue")])).expect_err("added key");
        assert!(added.to_string().contains("key level"), "{added}");
        // Another namespace, another ConfigMap: not this file's business.
        let mut elsewhere = revert(&[("color", "blue")]);
        elsewhere.namespace = Some("prod".into());
        let namespaced = PLAIN.replace(
            "  name: podinfo-config\n",
            "  name: podinfo-config\n  namespace: test\n",
        );
        assert_eq!(
            revert_config_map("cm.yaml", &namespaced, &elsewhere).expect("parses"),
            None
        );
    }

    const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\nconfigMapGenerator:\n  - name: podinfo-config\n    literals:\n      - COLOR=red # bad\n      - LEVEL=debug\n    files:\n      - settings.json\n      - app=../shared/app.conf\n";

    #[test]
    fn a_generator_gets_its_literals_and_files_back() {
        let edit = revert_config_map(
            "clusters/a/kustomization.yaml",
            KUSTOMIZATION,
            &revert(&[
                ("COLOR", "blue"),
                ("LEVEL", "debug"),
                ("settings.json", "{\"a\": 1}\n"),
                ("app", "x = 1\n"),
            ]),
        )
        .expect("edits")
        .expect("declares it");
        assert_eq!(
            edit.text.as_deref(),
            Some(
                KUSTOMIZATION
                    .replace("COLOR=red # bad", "COLOR=blue # bad")
                    .as_str()
            )
        );
        assert_eq!(
            edit.files,
            [
                ("clusters/a/settings.json".to_string(), "{\"a\": 1}\n".to_string()),
                ("clusters/shared/app.conf".to_string(), "x = 1\n".to_string()),
            ]
        );
        // A generated name with kustomize's hash suffix is the same ConfigMap.
        let mut hashed = revert(&[
            ("COLOR", "red"),
            ("LEVEL", "debug"),
            ("settings.json", ""),
            ("app", ""),
        ]);
        hashed.name = "podinfo-config-7h2m9k4t5c".into();
        let edit = revert_config_map("k/kustomization.yaml", KUSTOMIZATION, &hashed)
            .expect("edits")
            .expect("declares it");
        assert_eq!(edit.text, None, "the literals already match");
        let missing = revert_config_map(
            "k/kustomization.yaml",
            KUSTOMIZATION,
            &revert(&[
                ("COLOR", "red"),
                ("LEVEL", "debug"),
                ("settings.json", ""),
                ("app", ""),
                ("NEW", "1"),
            ]),
        )
        .expect_err("a key removed by the release");
        assert!(missing.to_string().contains("key NEW"), "{missing}");
    }

    #[test]
    fn paths_never_climb_out_of_the_repository() {
        assert_eq!(join("a/b", "../c.txt").as_deref(), Some("a/c.txt"));
        assert_eq!(join("", "./c.txt").as_deref(), Some("c.txt"));
        assert_eq!(join("a", "../../c.txt"), None);
    }
}
