//! Which files under a canary's path a rollback may edit: the kustomizations that render the
//! target, where each file's documents land, and one file per image change — never a file that
//! belongs to another workload, and none at all when several could be the target's.

use std::collections::{BTreeMap, BTreeSet};

use super::ImageChange;
use super::edit::{self, KUSTOMIZATION_FILES, Layout, Scope, TargetRef};

/// A kustomization chain deeper than this is a loop or a mistake: it renders nothing more.
const MAX_DEPTH: usize = 32;

/// The rollback's edits of the files under a path, and what could not be done.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reverted {
    /// (file, new text), in path order.
    pub files: Vec<(String, String)>,
    /// Why an image was not written back, or a file was not read; for `lastError` and the event.
    pub warnings: Vec<String>,
}

/// Writes `changes` back into `texts` (repository-relative path → text, every YAML file
/// under the canary's path). Each change is made in the one file that holds it for the target;
/// a change that more than one file could make is made in none, and the files are named.
/// `fallback` is the namespace the source puts documents that name none in.
pub fn revert(
    texts: &BTreeMap<String, String>,
    target: &TargetRef,
    fallback: Option<&str>,
    changes: &[ImageChange],
) -> Reverted {
    let mut out = Reverted::default();
    let warn = |warnings: &mut Vec<String>, text: String| {
        if !warnings.contains(&text) {
            warnings.push(text);
        }
    };
    let mut layouts = BTreeMap::new();
    for (file, text) in texts {
        match edit::layout(file, text, target) {
            Ok(layout) => {
                layouts.insert(file.clone(), layout);
            }
            Err(error) => warn(&mut out.warnings, error.to_string()),
        }
    }
    let scopes = scopes(&layouts, target, fallback);
    let mut assigned: BTreeMap<&str, Vec<ImageChange>> = BTreeMap::new();
    for change in changes.iter().filter(|c| c.from != c.to) {
        let mut holders = Vec::new();
        for (file, scope) in &scopes {
            match edit::revert_images(file, &texts[file], target, scope, std::slice::from_ref(change)) {
                Ok(Some(_)) => holders.push(file.as_str()),
                Ok(None) => {}
                Err(error) => warn(&mut out.warnings, error.to_string()),
            }
        }
        match holders.as_slice() {
            [] => {}
            [file] => assigned.entry(file).or_default().push(change.clone()),
            several => warn(
                &mut out.warnings,
                format!(
                    "image {} of {} could be written back in more than one file ({}): flaggit \
                     edited none of them; revert it by hand, and keep one declaration per target \
                     under spec.gitops.path",
                    change.from,
                    describe(target),
                    several.join(", ")
                ),
            ),
        }
    }
    for (file, changes) in assigned {
        match edit::revert_images(file, &texts[file], target, &scopes[file], &changes) {
            Ok(Some(text)) => out.files.push((file.to_string(), text)),
            Ok(None) => {}
            Err(error) => warn(&mut out.warnings, error.to_string()),
        }
    }
    out
}

fn describe(target: &TargetRef) -> String {
    match target.namespace {
        Some(namespace) => format!("{} {namespace}/{}", target.kind, target.name),
        None => format!("{} {}", target.kind, target.name),
    }
}

/// What each file may change for the target. A file no kustomization renders is applied as it
/// is; a kustomization's `images:` count only if it renders, directly or through bases and
/// components inside the path, a document of the target that lands in the target's namespace.
pub fn scopes(
    files: &BTreeMap<String, Layout>,
    target: &TargetRef,
    fallback: Option<&str>,
) -> BTreeMap<String, Scope> {
    let mut scopes: BTreeMap<String, Scope> = files
        .keys()
        .map(|file| {
            let scope = Scope {
                fallback: fallback.map(str::to_string),
                ..Scope::default()
            };
            (file.clone(), scope)
        })
        .collect();
    let kustomizations: Vec<&String> = files
        .iter()
        .filter(|(_, layout)| layout.kustomization.is_some())
        .map(|(file, _)| file)
        .collect();
    let referenced: BTreeSet<&String> = kustomizations
        .iter()
        .flat_map(|k| children(files, k))
        .filter(|child| files[*child].kustomization.is_some())
        .collect();
    for root in kustomizations.iter().filter(|k| !referenced.contains(*k)) {
        let mut walk = Walk {
            files,
            target,
            fallback,
            scopes: &mut scopes,
            stack: Vec::new(),
        };
        walk.kustomization(root, None);
    }
    scopes
}

struct Walk<'a, 's> {
    files: &'a BTreeMap<String, Layout>,
    target: &'a TargetRef<'a>,
    fallback: Option<&'a str>,
    scopes: &'s mut BTreeMap<String, Scope>,
    stack: Vec<&'a str>,
}

impl<'a> Walk<'a, '_> {
    /// Places what `kustomization` renders, with the namespace an enclosing one forces
    /// (`outer`); true when it renders the target.
    fn kustomization(&mut self, kustomization: &'a str, outer: Option<&'a str>) -> bool {
        if self.stack.contains(&kustomization) || self.stack.len() > MAX_DEPTH {
            return false;
        }
        self.stack.push(kustomization);
        let own = self.files[kustomization]
            .kustomization
            .as_ref()
            .and_then(|k| k.namespace.as_deref());
        // kustomize applies the outermost `namespace:` last: it wins.
        let forced = outer.or(own);
        let mut renders = false;
        for child in children(self.files, kustomization) {
            if self.files[child].kustomization.is_some() {
                renders |= self.kustomization(child, forced);
                continue;
            }
            let placement = forced.map(str::to_string);
            let scope = self.scopes.get_mut(child).expect("every file has a scope");
            if !scope.placements.contains(&placement) {
                scope.placements.push(placement.clone());
            }
            let here = Scope {
                placements: vec![placement],
                fallback: self.fallback.map(str::to_string),
                kustomize_images: false,
            };
            renders |= self.files[child]
                .declares
                .iter()
                .any(|declared| here.lands_in(declared.as_deref(), self.target.namespace));
        }
        self.stack.pop();
        if renders {
            self.scopes
                .get_mut(kustomization)
                .expect("every file has a scope")
                .kustomize_images = true;
        }
        renders
    }
}

/// The files a kustomization's entries name: a file, the kustomization of a directory, or
/// (as Flux generates one for a directory without) every other YAML file under it.
fn children<'a>(files: &'a BTreeMap<String, Layout>, kustomization: &str) -> Vec<&'a String> {
    let Some(k) = &files[kustomization].kustomization else {
        return Vec::new();
    };
    let mut out: Vec<&String> = Vec::new();
    for entry in &k.resources {
        if let Some((file, _)) = files.get_key_value(entry) {
            out.push(file);
            continue;
        }
        let prefix = if entry.is_empty() {
            String::new()
        } else {
            format!("{entry}/")
        };
        let own = KUSTOMIZATION_FILES
            .iter()
            .find_map(|name| files.get_key_value(&format!("{prefix}{name}")))
            .map(|(file, _)| file);
        match own {
            Some(file) => out.push(file),
            None => out.extend(
                files
                    .keys()
                    .filter(|f| f.starts_with(&prefix) && f.as_str() != kustomization),
            ),
        }
    }
    out.retain(|f| f.as_str() != kustomization);
    out.dedup();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const FROM: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
    const TO: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";

    fn target(namespace: &str) -> TargetRef<'_> {
        TargetRef {
            kind: "Deployment",
            name: "podinfo",
            namespace: Some(namespace),
        }
    }

    fn changes() -> Vec<ImageChange> {
        vec![ImageChange {
            container: "podinfod".into(),
            from: FROM.into(),
            to: TO.into(),
        }]
    }

    /// A Deployment `name` (in `namespace` when given) running `image`.
    fn deployment(name: &str, namespace: Option<&str>, image: &str) -> String {
        let namespace = namespace
            .map(|n| format!("  namespace: {n}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n{namespace}spec:\n  template:\n    \
             spec:\n      containers:\n        - name: podinfod\n          image: {image}\n"
        )
    }

    /// A kustomization with `namespace:` (when given), `resources` and an `images:` entry
    /// setting podinfo's tag.
    fn kustomization(namespace: Option<&str>, resources: &[&str], tag: &str) -> String {
        let namespace = namespace.map(|n| format!("namespace: {n}\n")).unwrap_or_default();
        let resources: String = resources.iter().map(|r| format!("  - {r}\n")).collect();
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n{namespace}resources:\n{resources}\
             images:\n  - name: ghcr.io/stefanprodan/podinfo\n    newTag: {tag}\n"
        )
    }

    fn files(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(f, t)| (f.to_string(), t.clone())).collect()
    }

    fn edited(reverted: &Reverted) -> Vec<&str> {
        reverted.files.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn a_kustomization_that_renders_another_workload_is_left_alone() {
        let texts = files(&[
            (
                "apps/podinfo/kustomization.yaml",
                kustomization(Some("test"), &["deployment.yaml"], "6.0.1"),
            ),
            (
                "apps/podinfo/deployment.yaml",
                deployment("podinfo", None, "ghcr.io/stefanprodan/podinfo"),
            ),
            // Another team's app, on the same image and tag.
            (
                "apps/other/kustomization.yaml",
                kustomization(Some("test"), &["deployment.yaml"], "6.0.1"),
            ),
            (
                "apps/other/deployment.yaml",
                deployment("other", None, "ghcr.io/stefanprodan/podinfo"),
            ),
        ]);
        let reverted = revert(&texts, &target("test"), None, &changes());
        assert_eq!(
            edited(&reverted),
            ["apps/podinfo/kustomization.yaml"],
            "{reverted:?}"
        );
        assert!(reverted.warnings.is_empty(), "{reverted:?}");
        assert!(reverted.files[0].1.contains("newTag: 6.0.0"));
    }

    #[test]
    fn an_overlay_renders_the_target_through_its_bases() {
        let texts = files(&[
            (
                "base/kustomization.yaml",
                "resources:\n  - deployment.yaml\n".to_string(),
            ),
            (
                "base/deployment.yaml",
                deployment("podinfo", None, "ghcr.io/stefanprodan/podinfo:6.0.0"),
            ),
            (
                "overlays/prod/kustomization.yaml",
                kustomization(Some("prod"), &["../../base"], "6.0.1"),
            ),
            (
                "overlays/staging/kustomization.yaml",
                kustomization(Some("staging"), &["../../base"], "6.0.1"),
            ),
        ]);
        let reverted = revert(&texts, &target("prod"), None, &changes());
        assert_eq!(
            edited(&reverted),
            ["overlays/prod/kustomization.yaml"],
            "{reverted:?}"
        );
        let reverted = revert(&texts, &target("staging"), None, &changes());
        assert_eq!(
            edited(&reverted),
            ["overlays/staging/kustomization.yaml"],
            "{reverted:?}"
        );
        let reverted = revert(&texts, &target("dev"), None, &changes());
        assert!(reverted.files.is_empty(), "{reverted:?}");
    }

    #[test]
    fn a_manifest_without_a_namespace_is_the_targets_only_where_it_is_placed() {
        let texts = files(&[
            (
                "team-a/kustomization.yaml",
                "namespace: team-a\nresources:\n  - app.yaml\n".to_string(),
            ),
            ("team-a/app.yaml", deployment("podinfo", None, FROM)),
            (
                "team-b/kustomization.yaml",
                "namespace: team-b\nresources:\n  - app.yaml\n".to_string(),
            ),
            ("team-b/app.yaml", deployment("podinfo", None, FROM)),
        ]);
        let reverted = revert(&texts, &target("team-b"), None, &changes());
        assert_eq!(edited(&reverted), ["team-b/app.yaml"], "{reverted:?}");
        assert!(reverted.files[0].1.contains(TO));

        // Applied as they are: only the source's target namespace places them.
        let bare = files(&[("app.yaml", deployment("podinfo", None, FROM))]);
        assert!(
            revert(&bare, &target("team-b"), None, &changes())
                .files
                .is_empty()
        );
        assert!(
            revert(&bare, &target("team-b"), Some("team-a"), &changes())
                .files
                .is_empty()
        );
        let reverted = revert(&bare, &target("team-b"), Some("team-b"), &changes());
        assert_eq!(edited(&reverted), ["app.yaml"]);
        // A declared namespace is the namespace.
        let declared = files(&[("app.yaml", deployment("podinfo", Some("team-b"), FROM))]);
        assert_eq!(
            edited(&revert(&declared, &target("team-b"), None, &changes())),
            ["app.yaml"]
        );
    }

    #[test]
    fn more_than_one_candidate_file_edits_none_and_names_them() {
        let texts = files(&[
            ("a/deploy.yaml", deployment("podinfo", Some("test"), FROM)),
            ("b/deploy.yaml", deployment("podinfo", None, FROM)),
        ]);
        let reverted = revert(&texts, &target("test"), Some("test"), &changes());
        assert!(reverted.files.is_empty(), "{reverted:?}");
        assert_eq!(reverted.warnings.len(), 1, "{reverted:?}");
        let warning = &reverted.warnings[0];
        assert!(
            warning.contains("(a/deploy.yaml, b/deploy.yaml)") && warning.contains("edited none"),
            "{warning}"
        );
        assert!(warning.contains("Deployment test/podinfo"), "{warning}");
    }

    #[test]
    fn a_helm_release_installs_where_it_lands() {
        let release = |namespace: &str| {
            format!(
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: podinfo\n{namespace}spec:\n  \
                 values:\n    image:\n      repository: ghcr.io/stefanprodan/podinfo\n      tag: 6.0.1\n"
            )
        };
        let bare = files(&[("release.yaml", release(""))]);
        assert!(revert(&bare, &target("test"), None, &changes()).files.is_empty());
        let placed = files(&[
            ("release.yaml", release("")),
            (
                "kustomization.yaml",
                "namespace: test\nresources:\n  - release.yaml\n".to_string(),
            ),
        ]);
        assert_eq!(
            edited(&revert(&placed, &target("test"), None, &changes())),
            ["release.yaml"]
        );
        let elsewhere = files(&[("release.yaml", release("  namespace: other\n"))]);
        assert!(
            revert(&elsewhere, &target("test"), Some("test"), &changes())
                .files
                .is_empty()
        );
    }

    #[test]
    fn unparseable_files_are_reported_and_the_rest_still_edited() {
        let texts = files(&[
            ("broken.yaml", "kind: [unclosed\n".to_string()),
            ("deploy.yaml", deployment("podinfo", Some("test"), FROM)),
        ]);
        let reverted = revert(&texts, &target("test"), None, &changes());
        assert_eq!(edited(&reverted), ["deploy.yaml"]);
        assert_eq!(reverted.warnings.len(), 1, "{reverted:?}");
        assert!(reverted.warnings[0].starts_with("broken.yaml:"), "{reverted:?}");
    }

    #[test]
    fn kustomization_loops_end() {
        let texts = files(&[
            (
                "a/kustomization.yaml",
                kustomization(Some("test"), &["../b"], "6.0.1"),
            ),
            (
                "b/kustomization.yaml",
                kustomization(None, &["../a", "deploy.yaml"], "6.0.1"),
            ),
            ("b/deploy.yaml", deployment("other", None, "x:1")),
        ]);
        let reverted = revert(&texts, &target("test"), None, &changes());
        assert!(reverted.files.is_empty(), "{reverted:?}");
    }
}
