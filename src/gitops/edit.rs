//! Minimal-diff rollback edits of GitOps manifests: finds the image scalars a target declares
//! (plain workloads, kustomization `images:`, Flux HelmRelease values) from yaml-rust2's parser
//! events and splices only those bytes, so comments and formatting stay byte-identical.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

use super::ImageChange;

mod config;
pub use config::{ConfigEdit, ConfigRevert, revert_config_map};

/// What reading or editing a manifest can fail with. The file is never edited on error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{path}:{line}:{column}: cannot parse YAML ({message}): fix the file in Git; flaggit never \
         overwrites a file it cannot parse"
    )]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}:{line}:{column}: image {image} is shared through a YAML anchor/alias: editing it \
         would change every use; write the image out in place of the alias, or revert it by hand"
    )]
    Anchored {
        path: String,
        line: usize,
        column: usize,
        image: String,
    },
    #[error(
        "{path}: image {image} is declared in several places (lines {lines}): flaggit cannot tell \
         which one the target uses; revert it by hand or keep one declaration per target"
    )]
    Ambiguous {
        path: String,
        image: String,
        lines: String,
    },
    #[error("{path}:{line}:{column}: cannot revert image {image}: {reason}; revert it by hand")]
    Unsupported {
        path: String,
        line: usize,
        column: usize,
        image: String,
        reason: String,
    },
    #[error(
        "{path}: the edited text failed the self-check ({reason}); the file was left unchanged \
         (this is a flaggit bug: please report it)"
    )]
    SelfCheck { path: String, reason: String },
    #[error("{path}:{line}: cannot write ConfigMap {config} back: {reason}; revert it by hand")]
    ConfigEdit {
        path: String,
        line: usize,
        config: String,
        reason: String,
    },
}

impl Error {
    /// A short fixed name for the kind of failure: event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Parse { .. } => "ParseManifest",
            Self::Anchored { .. } => "AnchoredImage",
            Self::Ambiguous { .. } => "AmbiguousImage",
            Self::Unsupported { .. } => "UnsupportedImageEdit",
            Self::SelfCheck { .. } => "EditSelfCheck",
            Self::ConfigEdit { .. } => "UnsupportedConfigEdit",
        }
    }
}

/// The workload a manifest must declare for an edit to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetRef<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
}

/// What one file may change for the target, decided by `select::scopes` from the files
/// around it: where its documents land, and whether its kustomization renders the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// For each kustomization that renders this file, the namespace it forces on the file's
    /// documents (its `namespace:`, or an enclosing one's), None where it forces none. Empty:
    /// no kustomization renders the file; it is applied as it is.
    pub placements: Vec<Option<String>>,
    /// Where a document naming no namespace lands otherwise: the source's target namespace
    /// (Flux `spec.targetNamespace`, Argo CD `spec.destination.namespace`). None: such a
    /// document is nobody's target.
    pub fallback: Option<String>,
    /// The file is a kustomization that renders the target: its `images:` may be edited.
    pub kustomize_images: bool,
}

impl Scope {
    /// Whether a document whose `metadata.namespace` is `declared` lands in `wanted` (None:
    /// any namespace will do).
    pub fn lands_in(&self, declared: Option<&str>, wanted: Option<&str>) -> bool {
        let Some(wanted) = wanted else {
            return true;
        };
        let applied_as_is = [None];
        let placements = if self.placements.is_empty() {
            &applied_as_is[..]
        } else {
            &self.placements[..]
        };
        placements
            .iter()
            .any(|forced| forced.as_deref().or(declared).or(self.fallback.as_deref()) == Some(wanted))
    }
}

/// What `select` needs to know of one file: which documents name the target, and the
/// kustomization it is, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The `metadata.namespace` of each document of the target's kind and name.
    pub declares: Vec<Option<String>>,
    pub kustomization: Option<Kustomization>,
}

/// A kustomize kustomization (or a Flux Kustomization object) as `select` reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kustomization {
    /// `namespace:` (Flux: `spec.targetNamespace`).
    pub namespace: Option<String>,
    /// `resources`, `bases` and `components` entries, repository-relative and normalised;
    /// remote ones and ones above the repository root are left out.
    pub resources: Vec<String>,
}

/// Reads what `select` needs of the file at `path`.
pub fn layout(path: &str, text: &str, target: &TargetRef) -> Result<Layout, Error> {
    let docs = parse(path, text)?;
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut out = Layout::default();
    for doc in &docs {
        let Some(root) = &doc.root else { continue };
        if doc.get_str(root, "kind") == Some(target.kind)
            && doc.path_str(root, &["metadata", "name"]) == Some(target.name)
        {
            out.declares
                .push(doc.path_str(root, &["metadata", "namespace"]).map(str::to_string));
        }
        let flux = doc.get_str(root, "kind") == Some("Kustomization")
            && doc
                .get_str(root, "apiVersion")
                .is_some_and(|a| a.starts_with("kustomize.toolkit.fluxcd.io"));
        if flux || is_kustomization(doc, root, path) {
            let mut resources = Vec::new();
            if flux {
                // A Flux Kustomization's path is relative to the repository root.
                resources.extend(
                    doc.path_str(root, &["spec", "path"])
                        .and_then(|p| normalise(p, "")),
                );
            } else {
                for key in ["resources", "bases", "components"] {
                    if let Some(Node::Seq { items, .. }) = doc.get(root, key, &mut false) {
                        resources.extend(
                            items
                                .iter()
                                .filter_map(|i| doc.resolve(i, &mut false).scalar())
                                .filter_map(|s| normalise(&s.value, dir)),
                        );
                    }
                }
            }
            let namespace = if flux {
                doc.path_str(root, &["spec", "targetNamespace"])
            } else {
                doc.get_str(root, "namespace")
            };
            out.kustomization = Some(Kustomization {
                namespace: namespace.filter(|n| !n.is_empty()).map(str::to_string),
                resources,
            });
        }
    }
    Ok(out)
}

/// Whether the document is a kustomize kustomization (with or without `images:`).
fn is_kustomization(doc: &Doc, root: &Node, path: &str) -> bool {
    let kind = doc.get_str(root, "kind");
    let api = doc.get_str(root, "apiVersion").unwrap_or_default();
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    (kind == Some("Kustomization") && api.starts_with("kustomize.config.k8s.io"))
        || (KUSTOMIZATION_FILES.contains(&file) && (kind.is_none() || kind == Some("Kustomization")))
}

/// A kustomization entry made repository-relative: `dir` joined with `entry`, `.` and `..`
/// resolved. None for a remote entry or one above the root.
fn normalise(entry: &str, dir: &str) -> Option<String> {
    let entry = entry.trim();
    if entry.is_empty()
        || entry.contains("://")
        || entry.starts_with("github.com/")
        || entry.starts_with("git@")
    {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in dir.split('/').chain(entry.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// An image reference split the way kustomize and Helm charts write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Everything before the tag and digest, registry (and port) included.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:...`, without the `@`.
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits an image reference into (repository, tag, digest); a `:` before the last `/` is a
/// registry port, not a tag.
pub fn split_image(image: &str) -> ImageRef {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest.to_string())),
        None => (image, None),
    };
    let last = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last..].rfind(':') {
        Some(i) => (&name[..last + i], Some(name[last + i + 1..].to_string())),
        None => (name, None),
    };
    ImageRef {
        repository: repository.to_string(),
        tag,
        digest,
    }
}

/// Rewrites one file so the target's images go back from `change.from` to `change.to`, within
/// what `scope` (from `select::scopes`) lets this file change.
/// Ok(None): nothing in this file declares those images (caller tries other files).
/// Err: the file does not parse (never edited) or an edit would be ambiguous.
pub fn revert_images(
    path: &str,
    text: &str,
    target: &TargetRef,
    scope: &Scope,
    changes: &[ImageChange],
) -> Result<Option<String>, Error> {
    let docs = parse(path, text)?;
    let mut edits = Vec::new();
    for change in changes.iter().filter(|c| c.from != c.to) {
        let mut found = Vec::new();
        for doc in &docs {
            let Some(root) = &doc.root else { continue };
            if is_target_in(doc, root, target, scope) {
                workload_candidates(path, doc, root, change, &mut found)?;
            }
            if scope.kustomize_images
                && let Some(images) = kustomize_images(doc, root, path)
            {
                kustomize_candidates(path, doc, images, change, &mut found)?;
            }
            if let Some((values, via)) = helm_values(doc, root, target, Some(scope)) {
                helm_candidates(path, doc, values, via, change, &mut found)?;
            }
        }
        match found.len() {
            0 => {}
            1 => edits.extend(found.remove(0).edits),
            _ => {
                let lines: Vec<String> = found.iter().map(|c| c.line.to_string()).collect();
                return Err(Error::Ambiguous {
                    path: path.to_string(),
                    image: change.from.clone(),
                    lines: lines.join(", "),
                });
            }
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    let out = apply(path, text, &edits)?;
    self_check(path, &docs, &out, &edits)?;
    Ok(Some(out))
}

/// True if the file declares the target (a document of that kind/name), or is a
/// kustomization / HelmRelease whose image fields mention one of `images`.
pub fn declares(path: &str, text: &str, target: &TargetRef, images: &[&str]) -> Result<bool, Error> {
    let docs = parse(path, text)?;
    let wanted: Vec<(&str, ImageRef)> = images.iter().map(|i| (*i, split_image(i))).collect();
    for doc in &docs {
        let Some(root) = &doc.root else { continue };
        if is_target(doc, root, target) {
            return Ok(true);
        }
        if let Some(Node::Seq { items, .. }) = kustomize_images(doc, root, path) {
            for item in items {
                let entry = doc.resolve(item, &mut false);
                let names = [doc.get_str(entry, "name"), doc.get_str(entry, "newName")];
                if wanted
                    .iter()
                    .any(|(_, w)| names.contains(&Some(w.repository.as_str())))
                {
                    return Ok(true);
                }
            }
        }
        if let Some((values, _)) = helm_values(doc, root, target, None)
            && helm_mentions(doc, values, &wanted)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The images the file declares for the target's containers: (container, image), for
/// `flaggit ledger verify`. Empty when the file does not declare the target's workload.
pub fn declared_images(path: &str, text: &str, target: &TargetRef) -> Result<Vec<(String, String)>, Error> {
    let docs = parse(path, text)?;
    let mut declared: Vec<(usize, Vec<(String, String)>)> = Vec::new();
    for doc in &docs {
        let Some(root) = &doc.root else { continue };
        if !is_target(doc, root, target) {
            continue;
        }
        let images = containers(doc, root)
            .into_iter()
            .filter_map(|(entry, _)| {
                let name = doc.get_str(entry, "name")?;
                let image = doc.get_str(entry, "image")?;
                Some((name.to_string(), image.to_string()))
            })
            .collect();
        declared.push((root.pos().line, images));
    }
    if declared.len() > 1 {
        let lines: Vec<String> = declared.iter().map(|(line, _)| line.to_string()).collect();
        return Err(Error::Ambiguous {
            path: path.to_string(),
            image: format!("{} {}", target.kind, target.name),
            lines: lines.join(", "),
        });
    }
    Ok(declared.pop().map(|(_, images)| images).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Parsing: a small tree of the parser's events, each node with its position in the text.

/// Where a node starts: 1-based line, 0-based column in chars, and its byte offset in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    line: usize,
    col: usize,
    byte: usize,
}

#[derive(Clone, Debug)]
struct Scalar {
    value: String,
    style: TScalarStyle,
    anchor: usize,
    tag: Option<Tag>,
    pos: Pos,
    /// Inside a flow collection, where `,[]{}` end a plain scalar.
    flow: bool,
}

#[derive(Clone, Debug)]
enum Node {
    Scalar(Scalar),
    Alias {
        id: usize,
        pos: Pos,
    },
    Map {
        anchor: usize,
        tag: Option<Tag>,
        pos: Pos,
        flow: bool,
        entries: Vec<(Node, Node)>,
    },
    Seq {
        anchor: usize,
        tag: Option<Tag>,
        pos: Pos,
        flow: bool,
        items: Vec<Node>,
    },
}

impl Node {
    fn pos(&self) -> Pos {
        match self {
            Self::Scalar(s) => s.pos,
            Self::Alias { pos, .. } | Self::Map { pos, .. } | Self::Seq { pos, .. } => *pos,
        }
    }

    fn anchor(&self) -> usize {
        match self {
            Self::Scalar(s) => s.anchor,
            Self::Alias { .. } => 0,
            Self::Map { anchor, .. } | Self::Seq { anchor, .. } => *anchor,
        }
    }

    fn scalar(&self) -> Option<&Scalar> {
        match self {
            Self::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn is_flow(&self) -> bool {
        matches!(self, Self::Map { flow: true, .. } | Self::Seq { flow: true, .. })
    }
}

/// One YAML document; anchored nodes are kept by id to resolve aliases.
struct Doc {
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
}

impl Doc {
    /// The node an alias stands for; `via` records that an alias was followed.
    fn resolve<'a>(&'a self, node: &'a Node, via: &mut bool) -> &'a Node {
        match node {
            Node::Alias { id, .. } => {
                *via = true;
                self.anchors.get(id).unwrap_or(node)
            }
            _ => node,
        }
    }

    /// The value under `key` in a mapping (aliases resolved).
    fn get<'a>(&'a self, node: &'a Node, key: &str, via: &mut bool) -> Option<&'a Node> {
        let Node::Map { entries, .. } = self.resolve(node, via) else {
            return None;
        };
        let (_, value) = entries
            .iter()
            .find(|(k, _)| k.scalar().is_some_and(|s| s.value == key))?;
        Some(self.resolve(value, via))
    }

    fn path<'a>(&'a self, node: &'a Node, keys: &[&str], via: &mut bool) -> Option<&'a Node> {
        keys.iter().try_fold(node, |node, key| self.get(node, key, via))
    }

    fn get_scalar<'a>(&'a self, node: &'a Node, key: &str) -> Option<&'a Scalar> {
        self.get(node, key, &mut false)?.scalar()
    }

    fn get_str<'a>(&'a self, node: &'a Node, key: &str) -> Option<&'a str> {
        self.get_scalar(node, key).map(|s| s.value.as_str())
    }

    fn path_str<'a>(&'a self, node: &'a Node, keys: &[&str]) -> Option<&'a str> {
        Some(self.path(node, keys, &mut false)?.scalar()?.value.as_str())
    }
}

/// Maps the parser's markers to byte offsets. yaml-rust2 counts `index` in chars, except inside
/// block scalars where it adds bytes; line and column are reliable once a line is over, so
/// positions come from (line, column in chars).
struct Source<'t> {
    body: &'t str,
    /// Bytes before `body` (a byte-order mark the parser is not given).
    base: usize,
    /// Byte offset in `body` of each line, as the scanner counts lines (`\r\n`, `\r`, `\n`).
    lines: Vec<usize>,
}

impl<'t> Source<'t> {
    fn new(text: &'t str) -> Self {
        let body = text.strip_prefix('\u{feff}').unwrap_or(text);
        let bytes = body.as_bytes();
        let mut lines = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    lines.push(i + 2);
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => lines.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        Self {
            body,
            base: text.len() - body.len(),
            lines,
        }
    }

    fn pos(&self, mark: &Marker) -> Pos {
        let start = self
            .lines
            .get(mark.line().saturating_sub(1))
            .copied()
            .unwrap_or(self.body.len());
        let offset = self.body[start..]
            .char_indices()
            .nth(mark.col())
            .map_or(self.body.len() - start, |(i, _)| i);
        Pos {
            line: mark.line(),
            col: mark.col(),
            byte: self.base + start + offset,
        }
    }
}

fn parse_error(path: &str, err: &ScanError) -> Error {
    Error::Parse {
        path: path.to_string(),
        line: err.marker().line().max(1),
        column: err.marker().col() + 1,
        message: err.info().to_string(),
    }
}

/// Parses every document of the stream into a positioned tree.
fn parse(path: &str, text: &str) -> Result<Vec<Doc>, Error> {
    // Too large or too deep to build a tree of (dropping it would overflow the stack).
    super::limits::check(text).map_err(|exceeded| {
        let (line, column) = exceeded.position();
        Error::Parse {
            path: path.to_string(),
            line,
            column,
            message: exceeded.to_string(),
        }
    })?;
    let src = Source::new(text);
    let mut parser = Parser::new_from_str(src.body);
    let mut docs = Vec::new();
    // Open collections and, for mappings, the key waiting for its value.
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
    let mut anchors = HashMap::new();
    let mut root = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| parse_error(path, &e))?;
        let pos = src.pos(&mark);
        let opens_flow = |open: char| text[pos.byte..].starts_with(open);
        let node = match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::Nothing => continue,
            Event::DocumentStart => {
                root = None;
                anchors = HashMap::new();
                continue;
            }
            Event::DocumentEnd => {
                docs.push(Doc {
                    root: root.take(),
                    anchors: std::mem::take(&mut anchors),
                });
                continue;
            }
            Event::Alias(id) => Node::Alias { id, pos },
            Event::Scalar(value, style, anchor, tag) => {
                let flow = stack.iter().any(|(node, _)| node.is_flow());
                Node::Scalar(Scalar {
                    value,
                    style,
                    anchor,
                    tag,
                    pos,
                    flow,
                })
            }
            Event::SequenceStart(anchor, tag) => {
                let flow = opens_flow('[');
                stack.push((
                    Node::Seq {
                        anchor,
                        tag,
                        pos,
                        flow,
                        items: Vec::new(),
                    },
                    None,
                ));
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                let flow = opens_flow('{');
                stack.push((
                    Node::Map {
                        anchor,
                        tag,
                        pos,
                        flow,
                        entries: Vec::new(),
                    },
                    None,
                ));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some((node, None)) => node,
                _ => {
                    return Err(Error::Parse {
                        path: path.to_string(),
                        line: pos.line,
                        column: pos.col + 1,
                        message: "unbalanced collection".to_string(),
                    });
                }
            },
        };
        if node.anchor() != 0 {
            anchors.insert(node.anchor(), node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some((Node::Seq { items, .. }, _)) => items.push(node),
            Some((Node::Map { entries, .. }, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
            Some(_) => {}
        }
    }
    Ok(docs)
}

// ---------------------------------------------------------------------------------------------
// Finding what to change.

/// A set of edits that together revert one image at one place (`line`, for messages).
struct Candidate {
    line: usize,
    edits: Vec<Edit>,
}

enum Edit {
    /// Replace a scalar's text with `value`, in the scalar's style where it stays valid.
    Replace {
        scalar: Scalar,
        value: String,
        image: String,
    },
    /// Add `key: value` entries at the end of a mapping whose last value is `last`.
    Insert {
        map: Pos,
        first_key: Pos,
        flow: bool,
        last: Scalar,
        entries: Vec<(String, String)>,
        image: String,
    },
}

/// Where pod specs live in the workload kinds flaggit targets.
const POD_SPECS: [&[&str]; 2] = [
    &["spec", "template", "spec"],
    &["spec", "jobTemplate", "spec", "template", "spec"],
];

pub(super) const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

fn namespaces_agree(declared: Option<&str>, wanted: Option<&str>) -> bool {
    match (declared, wanted) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Read-only lookups (`declares`, `declared_images`): a document without a namespace may be
/// the target's.
fn is_target(doc: &Doc, root: &Node, target: &TargetRef) -> bool {
    doc.get_str(root, "kind") == Some(target.kind)
        && doc.path_str(root, &["metadata", "name"]) == Some(target.name)
        && namespaces_agree(doc.path_str(root, &["metadata", "namespace"]), target.namespace)
}

/// Edits: the document is the target's only where `scope` says it lands in the target's namespace.
fn is_target_in(doc: &Doc, root: &Node, target: &TargetRef, scope: &Scope) -> bool {
    doc.get_str(root, "kind") == Some(target.kind)
        && doc.path_str(root, &["metadata", "name"]) == Some(target.name)
        && scope.lands_in(doc.path_str(root, &["metadata", "namespace"]), target.namespace)
}

/// Container entries of the workload (init containers first), with whether an alias was followed.
fn containers<'a>(doc: &'a Doc, root: &'a Node) -> Vec<(&'a Node, bool)> {
    let mut out = Vec::new();
    for spec in POD_SPECS {
        let mut via = false;
        let Some(pod) = doc.path(root, spec, &mut via) else {
            continue;
        };
        for list in ["initContainers", "containers"] {
            let mut via = via;
            if let Some(Node::Seq { items, .. }) = doc.get(pod, list, &mut via) {
                for item in items {
                    let mut via = via;
                    let entry = doc.resolve(item, &mut via);
                    out.push((entry, via));
                }
            }
        }
    }
    out
}

fn anchored(path: &str, s: &Scalar, image: &str) -> Error {
    Error::Anchored {
        path: path.to_string(),
        line: s.pos.line,
        column: s.pos.col + 1,
        image: image.to_string(),
    }
}

fn unsupported(path: &str, pos: Pos, image: &str, reason: &str) -> Error {
    Error::Unsupported {
        path: path.to_string(),
        line: pos.line,
        column: pos.col + 1,
        image: image.to_string(),
        reason: reason.to_string(),
    }
}

fn workload_candidates(
    path: &str,
    doc: &Doc,
    root: &Node,
    change: &ImageChange,
    out: &mut Vec<Candidate>,
) -> Result<(), Error> {
    for (entry, via) in containers(doc, root) {
        if doc.get_str(entry, "name") != Some(change.container.as_str()) {
            continue;
        }
        let mut via = via;
        let Some(Node::Scalar(image)) = doc.get(entry, "image", &mut via) else {
            continue;
        };
        if image.value != change.from {
            continue;
        }
        if via || image.anchor != 0 {
            return Err(anchored(path, image, &change.from));
        }
        out.push(Candidate {
            line: image.pos.line,
            edits: vec![Edit::Replace {
                scalar: image.clone(),
                value: change.to.clone(),
                image: change.from.clone(),
            }],
        });
    }
    Ok(())
}

/// The `images:` list of a kustomize Kustomization (or a Flux Kustomization's `spec.images`).
fn kustomize_images<'a>(doc: &'a Doc, root: &'a Node, path: &str) -> Option<&'a Node> {
    let kind = doc.get_str(root, "kind");
    let api = doc.get_str(root, "apiVersion").unwrap_or_default();
    if api.starts_with("kustomize.toolkit.fluxcd.io") {
        return (kind == Some("Kustomization"))
            .then(|| doc.path(root, &["spec", "images"], &mut false))
            .flatten();
    }
    is_kustomization(doc, root, path)
        .then(|| doc.get(root, "images", &mut false))
        .flatten()
}

fn kustomize_candidates(
    path: &str,
    doc: &Doc,
    images: &Node,
    change: &ImageChange,
    out: &mut Vec<Candidate>,
) -> Result<(), Error> {
    let Node::Seq { items, .. } = images else {
        return Ok(());
    };
    let from = split_image(&change.from);
    let to = split_image(&change.to);
    for item in items {
        let mut via = false;
        let entry = doc.resolve(item, &mut via);
        let Some(name) = doc.get_scalar(entry, "name") else {
            continue;
        };
        let new_name = doc.get_scalar(entry, "newName");
        let effective = new_name.unwrap_or(name);
        let new_tag = doc.get_scalar(entry, "newTag");
        let digest = doc.get_scalar(entry, "digest");
        let ours = effective.value == from.repository
            && new_tag.map(|s| s.value.as_str()) == from.tag.as_deref()
            && digest.map(|s| s.value.as_str()) == from.digest.as_deref()
            && (new_tag.is_some() || digest.is_some());
        if !ours {
            continue;
        }
        let used = [Some(name), new_name, new_tag, digest];
        if let Some(s) = used.into_iter().flatten().find(|s| via || s.anchor != 0) {
            return Err(anchored(path, s, &change.from));
        }
        let mut edits = Vec::new();
        let mut inserts = Vec::new();
        if to.repository != effective.value {
            match new_name {
                Some(s) => edits.push(replace(s, &to.repository, &change.from)),
                None => inserts.push(("newName".to_string(), to.repository.clone())),
            }
        }
        for (key, node, want) in [("newTag", new_tag, &to.tag), ("digest", digest, &to.digest)] {
            match (node, want) {
                (Some(s), Some(want)) if s.value != *want => edits.push(replace(s, want, &change.from)),
                (Some(_), Some(_)) | (None, None) => {}
                (None, Some(want)) => inserts.push((key.to_string(), want.clone())),
                (Some(s), None) => {
                    let reason = format!("the entry sets {key} and {} has none", change.to);
                    return Err(unsupported(path, s.pos, &change.from, &reason));
                }
            }
        }
        if !inserts.is_empty() {
            edits.push(insert(path, entry, inserts, &change.from)?);
        }
        out.push(Candidate {
            line: name.pos.line,
            edits,
        });
    }
    Ok(())
}

fn replace(scalar: &Scalar, value: &str, image: &str) -> Edit {
    Edit::Replace {
        scalar: scalar.clone(),
        value: value.to_string(),
        image: image.to_string(),
    }
}

fn insert(path: &str, map: &Node, entries: Vec<(String, String)>, image: &str) -> Result<Edit, Error> {
    let Node::Map {
        pos,
        flow,
        entries: existing,
        ..
    } = map
    else {
        return Err(unsupported(path, map.pos(), image, "the entry is not a mapping"));
    };
    let (Some((first, _)), Some((_, last))) = (existing.first(), existing.last()) else {
        return Err(unsupported(path, *pos, image, "the entry is empty"));
    };
    let Some(last) = last.scalar() else {
        return Err(unsupported(
            path,
            last.pos(),
            image,
            "the entry's last value is not a plain value",
        ));
    };
    Ok(Edit::Insert {
        map: *pos,
        first_key: first.pos(),
        flow: *flow,
        last: last.clone(),
        entries,
        image: image.to_string(),
    })
}

/// `spec.values` of a Flux HelmRelease that may deploy the target, and whether an alias was
/// followed to reach them. It installs into `spec.targetNamespace`, else where it lands itself
/// (`scope`; without one, a HelmRelease naming no namespace may be the target's).
fn helm_values<'a>(
    doc: &'a Doc,
    root: &'a Node,
    target: &TargetRef,
    scope: Option<&Scope>,
) -> Option<(&'a Node, bool)> {
    if doc.get_str(root, "kind") != Some("HelmRelease") {
        return None;
    }
    let installs_into = doc.path_str(root, &["spec", "targetNamespace"]);
    let own = doc.path_str(root, &["metadata", "namespace"]);
    let ours = match (installs_into, scope) {
        (Some(namespace), _) => namespaces_agree(Some(namespace), target.namespace),
        (None, Some(scope)) => scope.lands_in(own, target.namespace),
        (None, None) => namespaces_agree(own, target.namespace),
    };
    if !ours {
        return None;
    }
    let mut via = false;
    doc.path(root, &["spec", "values"], &mut via)
        .map(|values| (values, via))
}

/// The pieces of a chart's image mapping: `repository` (with `registry`), `image` or `name`,
/// next to `tag` and/or `digest`.
struct ImageFields<'a> {
    registry: Option<&'a Scalar>,
    repository: &'a Scalar,
    tag: Option<&'a Scalar>,
    digest: Option<&'a Scalar>,
}

impl ImageFields<'_> {
    fn full_repository(&self) -> String {
        match self.registry {
            Some(registry) if !registry.value.is_empty() => {
                format!("{}/{}", registry.value, self.repository.value)
            }
            _ => self.repository.value.clone(),
        }
    }
}

fn image_fields<'a>(doc: &'a Doc, map: &'a Node) -> Option<ImageFields<'a>> {
    let tag = doc.get_scalar(map, "tag");
    let digest = doc.get_scalar(map, "digest");
    if tag.is_none() && digest.is_none() {
        return None;
    }
    let (registry, repository) = match doc.get_scalar(map, "repository") {
        Some(repository) => (doc.get_scalar(map, "registry"), repository),
        None => (
            None,
            doc.get_scalar(map, "image")
                .or_else(|| doc.get_scalar(map, "name"))?,
        ),
    };
    Some(ImageFields {
        registry,
        repository,
        tag,
        digest,
    })
}

fn helm_candidates(
    path: &str,
    doc: &Doc,
    node: &Node,
    via: bool,
    change: &ImageChange,
    out: &mut Vec<Candidate>,
) -> Result<(), Error> {
    let mut via = via;
    match doc.resolve(node, &mut via) {
        Node::Scalar(s) if s.value == change.from => {
            if via || s.anchor != 0 {
                return Err(anchored(path, s, &change.from));
            }
            out.push(Candidate {
                line: s.pos.line,
                edits: vec![replace(s, &change.to, &change.from)],
            });
        }
        map @ Node::Map { entries, .. } => {
            if let Some(fields) = image_fields(doc, map) {
                helm_mapping_candidate(path, &fields, via, change, out)?;
            }
            for (_, value) in entries {
                helm_candidates(path, doc, value, via, change, out)?;
            }
        }
        Node::Seq { items, .. } => {
            for item in items {
                helm_candidates(path, doc, item, via, change, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn helm_mapping_candidate(
    path: &str,
    fields: &ImageFields,
    via: bool,
    change: &ImageChange,
    out: &mut Vec<Candidate>,
) -> Result<(), Error> {
    let from = split_image(&change.from);
    let to = split_image(&change.to);
    let value = |s: Option<&Scalar>| s.map(|s| s.value.clone());
    if fields.full_repository() != from.repository
        || value(fields.tag) != from.tag
        || value(fields.digest) != from.digest
    {
        return Ok(());
    }
    let used = [
        fields.registry,
        Some(fields.repository),
        fields.tag,
        fields.digest,
    ];
    if let Some(s) = used.into_iter().flatten().find(|s| via || s.anchor != 0) {
        return Err(anchored(path, s, &change.from));
    }
    let mut edits = Vec::new();
    if to.repository != from.repository {
        let repository = match fields.registry {
            Some(registry) if !registry.value.is_empty() => {
                let Some(rest) = to.repository.strip_prefix(&format!("{}/", registry.value)) else {
                    let reason = format!("{} is not in registry {}", to.repository, registry.value);
                    return Err(unsupported(path, registry.pos, &change.from, &reason));
                };
                rest.to_string()
            }
            _ => to.repository.clone(),
        };
        edits.push(replace(fields.repository, &repository, &change.from));
    }
    for (key, node, want) in [
        ("tag", fields.tag, &to.tag),
        ("digest", fields.digest, &to.digest),
    ] {
        match (node, want) {
            (Some(s), Some(want)) if s.value != *want => edits.push(replace(s, want, &change.from)),
            (Some(_), Some(_)) | (None, None) => {}
            (Some(s), None) => {
                let reason = format!("the values set {key} and {} has none", change.to);
                return Err(unsupported(path, s.pos, &change.from, &reason));
            }
            (None, Some(_)) => {
                let reason = format!("{} needs a {key} and the values have no {key} field", change.to);
                return Err(unsupported(path, fields.repository.pos, &change.from, &reason));
            }
        }
    }
    out.push(Candidate {
        line: fields.repository.pos.line,
        edits,
    });
    Ok(())
}

/// Whether HelmRelease values mention one of `wanted` (a full reference, or an image mapping
/// of the same repository).
fn helm_mentions(doc: &Doc, node: &Node, wanted: &[(&str, ImageRef)]) -> bool {
    match doc.resolve(node, &mut false) {
        Node::Scalar(s) => wanted.iter().any(|(full, _)| s.value == *full),
        map @ Node::Map { entries, .. } => {
            image_fields(doc, map)
                .is_some_and(|f| wanted.iter().any(|(_, w)| f.full_repository() == w.repository))
                || entries.iter().any(|(_, value)| helm_mentions(doc, value, wanted))
        }
        Node::Seq { items, .. } => items.iter().any(|item| helm_mentions(doc, item, wanted)),
        Node::Alias { .. } => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Splicing the text.

/// Byte range of a scalar's source text (quotes included). Block scalars and plain scalars
/// folded over several lines are refused rather than guessed.
fn scalar_span(path: &str, text: &str, s: &Scalar, image: &str) -> Result<(usize, usize), Error> {
    let start = s.pos.byte;
    let rest = &text[start..];
    let mut chars = rest.char_indices().peekable();
    let len = match s.style {
        TScalarStyle::Literal | TScalarStyle::Folded => {
            return Err(unsupported(
                path,
                s.pos,
                image,
                "the value is a block scalar (| or >)",
            ));
        }
        TScalarStyle::SingleQuoted => {
            chars.next();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                }
            }
            end
        }
        TScalarStyle::DoubleQuoted => {
            chars.next();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            end
        }
        TScalarStyle::Plain => {
            let mut end = 0;
            let mut prev_blank = false;
            while let Some((i, c)) = chars.next() {
                let next = chars.peek().map(|(_, n)| *n);
                let ends_key =
                    c == ':' && next.is_none_or(|n| n.is_whitespace() || (s.flow && ",[]{}".contains(n)));
                let breaks = c == '\n'
                    || c == '\r'
                    || (c == '#' && prev_blank)
                    || ends_key
                    || (s.flow && ",[]{}".contains(c));
                if breaks {
                    break;
                }
                prev_blank = c == ' ' || c == '\t';
                if !prev_blank {
                    end = i + c.len_utf8();
                }
            }
            Some(end)
        }
    };
    let end = len.map(|len| start + len);
    // The span must read back as the parsed value; otherwise it is not the whole scalar.
    match end {
        Some(end) if reparse_scalar(&text[start..end]).as_deref() == Some(s.value.as_str()) => {
            Ok((start, end))
        }
        _ => Err(unsupported(path, s.pos, image, "the value spans several lines")),
    }
}

fn reparse_scalar(source: &str) -> Option<String> {
    let mut parser = Parser::new_from_str(source);
    loop {
        match parser.next_token().ok()?.0 {
            Event::Scalar(value, ..) => return Some(value),
            Event::StreamEnd => return None,
            _ => {}
        }
    }
}

static NON_STRING_PLAIN: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"^(?:~|null|Null|NULL|y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
        r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?$",
        r"^[-+]?0x[0-9a-fA-F_]+$",
        r"^[-+]?0o?[0-7_]+$",
        r"^[-+]?0b[01_]+$",
        r"^[-+]?\.(?:inf|Inf|INF)$",
        r"^\.(?:nan|NaN|NAN)$",
        r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$",
        r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}",
    ]
    .iter()
    .map(|re| Regex::new(re).expect("the patterns are valid regular expressions"))
    .collect()
});

/// True if `value` written as a plain scalar reads back as that same string under YAML 1.1
/// and 1.2 (Helm's and Kubernetes' parsers): not a number, bool, null or timestamp, and no
/// character that would end or change the scalar.
fn plain_is_string(value: &str, flow: bool) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    let looks_numeric = value.chars().any(|c| c.is_ascii_digit());
    !("-?:,[]{}#&*!|>'\"%@`".contains(first)
        || value.starts_with(char::is_whitespace)
        || value.ends_with(char::is_whitespace)
        || value.ends_with(':')
        || value.contains(": ")
        || value.contains(" #")
        || value.chars().any(|c| c.is_control())
        || (flow && value.contains([',', '[', ']', '{', '}']))
        || NON_STRING_PLAIN
            .iter()
            .enumerate()
            .any(|(i, re)| (i != 1 || looks_numeric) && re.is_match(value)))
}

fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as scalar text in `style` where that reads back as the same string, else quoted.
fn render(value: &str, style: TScalarStyle, flow: bool) -> String {
    match style {
        TScalarStyle::Plain if plain_is_string(value, flow) => value.to_string(),
        TScalarStyle::SingleQuoted if !value.chars().any(char::is_control) => {
            format!("'{}'", value.replace('\'', "''"))
        }
        _ => double_quoted(value),
    }
}

/// Applies the edits as byte splices, refusing overlapping ones.
fn apply(path: &str, text: &str, edits: &[Edit]) -> Result<String, Error> {
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut splices: Vec<(usize, usize, String)> = Vec::new();
    for edit in edits {
        match edit {
            Edit::Replace { scalar, value, image } => {
                let (start, end) = scalar_span(path, text, scalar, image)?;
                splices.push((start, end, render(value, scalar.style, scalar.flow)));
            }
            Edit::Insert {
                first_key,
                flow,
                last,
                entries,
                image,
                ..
            } => {
                let (_, end) = scalar_span(path, text, last, image)?;
                let mut added = String::new();
                for (key, value) in entries {
                    let value = render(value, TScalarStyle::Plain, *flow);
                    if *flow {
                        added.push_str(&format!(", {key}: {value}"));
                    } else {
                        let indent = " ".repeat(first_key.col);
                        added.push_str(&format!("{newline}{indent}{key}: {value}"));
                    }
                }
                let at = if *flow {
                    end
                } else {
                    text[end..].find(['\r', '\n']).map_or(text.len(), |i| end + i)
                };
                splices.push((at, at, added));
            }
        }
    }
    splices.sort_by_key(|(start, end, _)| (*start, *end));
    splices.dedup();
    if let Some(pair) = splices
        .windows(2)
        .find(|pair| pair[0].1 > pair[1].0 || pair[0].0 == pair[1].0)
    {
        return Err(Error::SelfCheck {
            path: path.to_string(),
            reason: format!("two edits overlap at byte {}", pair[1].0),
        });
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for (start, end, replacement) in &splices {
        out.push_str(&text[at..*start]);
        out.push_str(replacement);
        at = *end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Self-check: the edited text must parse to the same documents, keys and values, except for
// exactly the values that were meant to change.

struct Expected<'e> {
    replaced: HashMap<usize, &'e str>,
    inserted: HashMap<usize, &'e [(String, String)]>,
}

fn self_check(path: &str, before: &[Doc], out: &str, edits: &[Edit]) -> Result<(), Error> {
    let fail = |reason: String| Error::SelfCheck {
        path: path.to_string(),
        reason,
    };
    let after = parse(path, out).map_err(|e| fail(format!("the result does not parse: {e}")))?;
    let mut expected = Expected {
        replaced: HashMap::new(),
        inserted: HashMap::new(),
    };
    for edit in edits {
        match edit {
            Edit::Replace { scalar, value, .. } => {
                expected.replaced.insert(scalar.pos.byte, value.as_str());
            }
            Edit::Insert { map, entries, .. } => {
                expected.inserted.insert(map.byte, entries.as_slice());
            }
        }
    }
    if before.len() != after.len() {
        return Err(fail(format!("{} documents became {}", before.len(), after.len())));
    }
    for (old, new) in before.iter().zip(&after) {
        match (&old.root, &new.root) {
            (None, None) => {}
            (Some(old), Some(new)) => same(old, new, &expected).map_err(fail)?,
            _ => return Err(fail("a document appeared or vanished".to_string())),
        }
    }
    Ok(())
}

fn same(old: &Node, new: &Node, expected: &Expected) -> Result<(), String> {
    let at = |n: &Node| format!("line {}", n.pos().line);
    match (old, new) {
        (Node::Scalar(a), Node::Scalar(b)) => {
            let (want, restyled) = match expected.replaced.get(&a.pos.byte) {
                Some(value) => (*value, true),
                None => (a.value.as_str(), false),
            };
            if b.value != want || a.anchor != b.anchor || a.tag != b.tag || (!restyled && a.style != b.style)
            {
                return Err(format!(
                    "{}: {:?} became {:?} instead of {want:?}",
                    at(new),
                    a.value,
                    b.value
                ));
            }
        }
        (Node::Alias { id: a, .. }, Node::Alias { id: b, .. }) if a == b => {}
        (
            Node::Map {
                anchor: a1,
                tag: t1,
                pos,
                entries: e1,
                ..
            },
            Node::Map {
                anchor: a2,
                tag: t2,
                entries: e2,
                ..
            },
        ) if a1 == a2 && t1 == t2 => {
            let mut e2: Vec<&(Node, Node)> = e2.iter().collect();
            for (key, value) in expected.inserted.get(&pos.byte).copied().unwrap_or_default() {
                let found = e2.iter().position(|(k, v)| {
                    k.scalar().is_some_and(|k| k.value == *key)
                        && v.scalar().is_some_and(|v| v.value == *value)
                });
                match found {
                    Some(i) => {
                        e2.remove(i);
                    }
                    None => return Err(format!("{}: {key}: {value} was not added", at(new))),
                }
            }
            if e1.len() != e2.len() {
                return Err(format!(
                    "{}: the mapping has {} keys instead of {}",
                    at(new),
                    e2.len(),
                    e1.len()
                ));
            }
            for ((k1, v1), (k2, v2)) in e1.iter().zip(e2) {
                same(k1, k2, expected)?;
                same(v1, v2, expected)?;
            }
        }
        (
            Node::Seq {
                anchor: a1,
                tag: t1,
                items: i1,
                ..
            },
            Node::Seq {
                anchor: a2,
                tag: t2,
                items: i2,
                ..
            },
        ) if a1 == a2 && t1 == t2 && i1.len() == i2.len() => {
            for (a, b) in i1.iter().zip(i2) {
                same(a, b, expected)?;
            }
        }
        _ => return Err(format!("{}: the structure changed", at(new))),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const PATH: &str = "apps/podinfo/deployment.yaml";

    fn podinfo() -> TargetRef<'static> {
        TargetRef {
            kind: "Deployment",
            name: "podinfo",
            namespace: Some("test"),
        }
    }

    fn change(container: &str, from: &str, to: &str) -> ImageChange {
        ImageChange {
            container: container.to_string(),
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    fn podinfo_change() -> Vec<ImageChange> {
        vec![change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "ghcr.io/stefanprodan/podinfo:6.0.0",
        )]
    }

    fn revert(path: &str, text: &str, changes: &[ImageChange]) -> Result<Option<String>, Error> {
        revert_images(path, text, &podinfo(), changes)
    }

    /// A file alone, as `select` scopes it when nothing says otherwise except that the source
    /// puts namespace-less documents in the target's namespace, and its kustomization renders
    /// the target. (Shadows the glob-imported `revert_images` for the cases below.)
    fn revert_images(
        path: &str,
        text: &str,
        target: &TargetRef,
        changes: &[ImageChange],
    ) -> Result<Option<String>, Error> {
        let scope = Scope {
            placements: Vec::new(),
            fallback: target.namespace.map(str::to_string),
            kustomize_images: true,
        };
        super::revert_images(path, text, target, &scope, changes)
    }

    /// A Deployment whose container line is `image_line` (indented under the container).
    fn deployment(image_line: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  \
             template:\n    spec:\n      containers:\n        - name: podinfod\n          {image_line}\n          \
             ports:\n            - containerPort: 9898\n"
        )
    }

    #[test]
    fn plain_image_is_reverted() {
        let before = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1");
        let after = revert(PATH, &before, &podinfo_change()).unwrap();
        assert_eq!(
            after,
            Some(deployment("image: ghcr.io/stefanprodan/podinfo:6.0.0"))
        );
    }

    #[test]
    fn quote_styles_are_kept() {
        for (old, new) in [
            (
                "image: 'ghcr.io/stefanprodan/podinfo:6.0.1'",
                "image: 'ghcr.io/stefanprodan/podinfo:6.0.0'",
            ),
            (
                "image: \"ghcr.io/stefanprodan/podinfo:6.0.1\"",
                "image: \"ghcr.io/stefanprodan/podinfo:6.0.0\"",
            ),
            (
                "image:   ghcr.io/stefanprodan/podinfo:6.0.1   ",
                "image:   ghcr.io/stefanprodan/podinfo:6.0.0   ",
            ),
        ] {
            let after = revert(PATH, &deployment(old), &podinfo_change()).unwrap();
            assert_eq!(after, Some(deployment(new)), "{old}");
        }
    }

    #[test]
    fn comments_around_the_image_are_kept() {
        let old = "# the app\n          image: ghcr.io/stefanprodan/podinfo:6.0.1 # pinned by release\n          # after";
        let new = "# the app\n          image: ghcr.io/stefanprodan/podinfo:6.0.0 # pinned by release\n          # after";
        let after = revert(PATH, &deployment(old), &podinfo_change()).unwrap();
        assert_eq!(after, Some(deployment(new)));
    }

    #[test]
    fn flow_mapping_container_is_reverted() {
        let text = |tag: &str| {
            format!(
                "kind: Deployment\nmetadata: {{name: podinfo, namespace: test}}\nspec:\n  template:\n    spec:\n      \
                 containers: [{{name: podinfod, image: ghcr.io/stefanprodan/podinfo:{tag}}}, {{name: sidecar, \
                 image: 'ghcr.io/stefanprodan/podinfo:6.0.1'}}]\n"
            )
        };
        let after = revert(PATH, &text("6.0.1"), &podinfo_change()).unwrap();
        assert_eq!(after, Some(text("6.0.0")));
    }

    #[test]
    fn init_containers_and_daemonsets_are_reverted() {
        let text = |tag: &str| {
            format!(
                "kind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  template:\n    spec:\n      initContainers:\n      \
                 - name: init\n        image: busybox:{tag}\n      containers:\n      - name: agent\n        image: busybox:1.36\n"
            )
        };
        let target = TargetRef {
            kind: "DaemonSet",
            name: "agent",
            namespace: Some("kube-system"),
        };
        let changes = [change("init", "busybox:1.37", "busybox:1.36")];
        let after = revert_images(PATH, &text("1.37"), &target, &changes).unwrap();
        assert_eq!(after, Some(text("1.36")));
    }

    #[test]
    fn other_containers_with_the_same_image_are_not_touched() {
        let text = |tag: &str| {
            format!(
                "kind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  template:\n    spec:\n      containers:\n      \
                 - name: copy\n        image: ghcr.io/stefanprodan/podinfo:6.0.1\n      - name: podinfod\n        \
                 image: ghcr.io/stefanprodan/podinfo:{tag}\n"
            )
        };
        let after = revert(PATH, &text("6.0.1"), &podinfo_change()).unwrap();
        assert_eq!(after, Some(text("6.0.0")));
    }

    #[test]
    fn several_changes_in_one_file() {
        let text = |a: &str, b: &str| {
            format!(
                "kind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  template:\n    spec:\n      containers:\n      \
                 - name: podinfod\n        image: ghcr.io/stefanprodan/podinfo:{a}\n      - name: proxy\n        \
                 image: envoyproxy/envoy:{b}\n"
            )
        };
        let changes = [
            change(
                "podinfod",
                "ghcr.io/stefanprodan/podinfo:6.0.1",
                "ghcr.io/stefanprodan/podinfo:6.0.0",
            ),
            change("proxy", "envoyproxy/envoy:v1.30", "envoyproxy/envoy:v1.29"),
        ];
        assert_eq!(
            revert(PATH, &text("6.0.1", "v1.30"), &changes).unwrap(),
            Some(text("6.0.0", "v1.29"))
        );
        // Only the one still at `from` moves.
        assert_eq!(
            revert(PATH, &text("6.0.1", "v1.31"), &changes).unwrap(),
            Some(text("6.0.0", "v1.31"))
        );
    }

    fn multi(tag: &str) -> String {
        format!(
            "---\n# service first\napiVersion: v1\nkind: Service\nmetadata:\n  name: podinfo\nspec:\n  ports: [{{port: 80}}]\n\
             ---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo-copy\n  namespace: test\nspec:\n  \
             template:\n    spec:\n      containers:\n      - name: podinfod\n        image: ghcr.io/stefanprodan/podinfo:6.0.1\n\
             ---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: other\nspec:\n  \
             template:\n    spec:\n      containers:\n      - name: podinfod\n        image: ghcr.io/stefanprodan/podinfo:6.0.1\n\
             ...\n---\n\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  \
             template:\n    spec:\n      containers:\n      - name: podinfod\n        image: ghcr.io/stefanprodan/podinfo:{tag}\n\
             ...\n"
        )
    }

    #[test]
    fn multi_document_files_change_only_the_target() {
        assert_eq!(
            revert(PATH, &multi("6.0.1"), &podinfo_change()).unwrap(),
            Some(multi("6.0.0"))
        );
    }

    #[test]
    fn namespace_must_match_when_both_say_one() {
        let target = TargetRef {
            kind: "Deployment",
            name: "podinfo",
            namespace: Some("prod"),
        };
        let text = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1");
        assert_eq!(
            revert_images(PATH, &text, &target, &podinfo_change()).unwrap(),
            None
        );
        // A manifest without a namespace is applied into the target's.
        let bare = text.replace("  namespace: test\n", "");
        let after = revert_images(PATH, &bare, &target, &podinfo_change()).unwrap();
        assert_eq!(after, Some(bare.replace("6.0.1", "6.0.0")));
        let anywhere = TargetRef {
            namespace: None,
            ..target
        };
        let after = revert_images(PATH, &text, &anywhere, &podinfo_change()).unwrap();
        assert_eq!(after, Some(text.replace("6.0.1", "6.0.0")));
    }

    #[test]
    fn other_kinds_and_names_are_not_the_target() {
        let text = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1");
        for target in [
            TargetRef {
                kind: "StatefulSet",
                name: "podinfo",
                namespace: Some("test"),
            },
            TargetRef {
                kind: "Deployment",
                name: "other",
                namespace: Some("test"),
            },
        ] {
            assert_eq!(
                revert_images(PATH, &text, &target, &podinfo_change()).unwrap(),
                None
            );
        }
    }

    #[test]
    fn the_same_target_declared_twice_is_ambiguous() {
        let one = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1");
        let text = format!("{one}---\n{one}");
        let err = revert(PATH, &text, &podinfo_change()).unwrap_err();
        assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
        assert_eq!(err.category(), "AmbiguousImage");
        assert!(err.to_string().contains("lines 11, 25"), "{err}");
    }

    #[test]
    fn an_image_moved_on_by_a_human_is_left_alone() {
        let text = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.2");
        assert_eq!(revert(PATH, &text, &podinfo_change()).unwrap(), None);
        let wrong_container = [change("other", "ghcr.io/stefanprodan/podinfo:6.0.2", "x:1")];
        assert_eq!(revert(PATH, &text, &wrong_container).unwrap(), None);
        let same = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.2",
            "ghcr.io/stefanprodan/podinfo:6.0.2",
        )];
        assert_eq!(revert(PATH, &text, &same).unwrap(), None);
    }

    #[test]
    fn cronjob_pod_spec_is_found() {
        let text = |tag: &str| {
            format!(
                "kind: CronJob\nmetadata:\n  name: backup\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      \
                 template:\n        spec:\n          containers:\n          - name: backup\n            image: restic:{tag}\n"
            )
        };
        let target = TargetRef {
            kind: "CronJob",
            name: "backup",
            namespace: None,
        };
        let after = revert_images(
            PATH,
            &text("2"),
            &target,
            &[change("backup", "restic:2", "restic:1")],
        )
        .unwrap();
        assert_eq!(after, Some(text("1")));
    }

    #[test]
    fn hostile_files_are_unparseable_not_a_crash() {
        let deep = format!(
            "{}\n---\n{}",
            deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1"),
            "- ".repeat(100_000)
        );
        let flow = format!("a: {}", "[".repeat(200_000));
        for (text, why) in [(deep, "levels deep"), (flow, "recursion limit exceeded")] {
            let error = revert(PATH, &text, &podinfo_change()).expect_err("refused");
            assert_eq!(error.category(), "ParseManifest");
            assert!(error.to_string().contains(why), "{error}");
            assert!(error.to_string().contains("never overwrites"), "{error}");
            assert!(declares(PATH, &text, &podinfo(), &[]).is_err());
            assert!(declared_images(PATH, &text, &podinfo()).is_err());
        }
    }

    #[test]
    fn empty_and_comment_only_files_declare_nothing() {
        for text in [
            "",
            "# nothing here\n",
            "---\n---\n...\n",
            "just a scalar\n",
            "- a\n- b\n",
        ] {
            assert_eq!(revert(PATH, text, &podinfo_change()).unwrap(), None, "{text:?}");
            assert!(!declares(PATH, text, &podinfo(), &["ghcr.io/stefanprodan/podinfo:6.0.1"]).unwrap());
            assert_eq!(declared_images(PATH, text, &podinfo()).unwrap(), Vec::new());
        }
    }

    // --- kustomize

    const KPATH: &str = "apps/podinfo/kustomization.yaml";

    fn kustomization(entries: &str) -> String {
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n# base\nresources:\n  - ../base\n\
             images:\n{entries}"
        )
    }

    #[test]
    fn kustomize_new_tag_is_reverted() {
        let text = |tag: &str| {
            kustomization(&format!(
                "  - name: nginx\n    newTag: 1.25.0\n  - name: ghcr.io/stefanprodan/podinfo # app\n    newTag: \"{tag}\"\n"
            ))
        };
        assert_eq!(
            revert(KPATH, &text("6.0.1"), &podinfo_change()).unwrap(),
            Some(text("6.0.0"))
        );
    }

    #[test]
    fn kustomize_matches_new_name() {
        let text = |tag: &str| {
            kustomization(&format!(
                "- name: podinfo\n  newName: ghcr.io/stefanprodan/podinfo\n  newTag: {tag}\n- name: podinfo-2\n  \
                 newName: ghcr.io/stefanprodan/podinfo\n  newTag: 7.0.0\n"
            ))
        };
        assert_eq!(
            revert(KPATH, &text("6.0.1"), &podinfo_change()).unwrap(),
            Some(text("6.0.0"))
        );
    }

    #[test]
    fn kustomize_entry_with_another_tag_is_not_ours() {
        let text = kustomization("  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.2\n");
        assert_eq!(revert(KPATH, &text, &podinfo_change()).unwrap(), None);
        let untagged =
            kustomization("  - name: ghcr.io/stefanprodan/podinfo\n    newName: ghcr.io/x/podinfo\n");
        assert_eq!(revert(KPATH, &untagged, &podinfo_change()).unwrap(), None);
    }

    #[test]
    fn kustomize_sets_new_name_when_repositories_differ() {
        let before = kustomization("  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.1 # rc\n");
        let changes = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "docker.io/stefanprodan/podinfo:6.0.0",
        )];
        let after = revert(KPATH, &before, &changes).unwrap();
        let want = kustomization(
            "  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.0 # rc\n    newName: docker.io/stefanprodan/podinfo\n",
        );
        assert_eq!(after, Some(want));
        // An existing newName is rewritten in place.
        let before = kustomization(
            "  - name: podinfo\n    newName: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.1\n",
        );
        let want = kustomization(
            "  - name: podinfo\n    newName: docker.io/stefanprodan/podinfo\n    newTag: 6.0.0\n",
        );
        assert_eq!(revert(KPATH, &before, &changes).unwrap(), Some(want));
    }

    #[test]
    fn kustomize_flow_entry_gets_new_name() {
        let before = kustomization("- {name: ghcr.io/stefanprodan/podinfo, newTag: '6.0.1'}\n");
        let changes = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "docker.io/stefanprodan/podinfo:6.0.0",
        )];
        let want = kustomization(
            "- {name: ghcr.io/stefanprodan/podinfo, newTag: '6.0.0', newName: docker.io/stefanprodan/podinfo}\n",
        );
        assert_eq!(revert(KPATH, &before, &changes).unwrap(), Some(want));
    }

    #[test]
    fn kustomize_digest_is_reverted() {
        let sha = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let text = |d: &str| {
            kustomization(&format!(
                "  - name: ghcr.io/stefanprodan/podinfo\n    digest: {d}\n"
            ))
        };
        let changes = [change(
            "podinfod",
            &format!("ghcr.io/stefanprodan/podinfo@{}", sha('b')),
            &format!("ghcr.io/stefanprodan/podinfo@{}", sha('a')),
        )];
        assert_eq!(
            revert(KPATH, &text(&sha('b')), &changes).unwrap(),
            Some(text(&sha('a')))
        );
    }

    #[test]
    fn kustomize_needs_its_file_name_or_kind() {
        let entries = "images:\n- name: ghcr.io/stefanprodan/podinfo\n  newTag: 6.0.1\n";
        let want = "images:\n- name: ghcr.io/stefanprodan/podinfo\n  newTag: 6.0.0\n";
        assert_eq!(
            revert(KPATH, entries, &podinfo_change()).unwrap().as_deref(),
            Some(want)
        );
        assert_eq!(
            revert("apps/podinfo/values.yaml", entries, &podinfo_change()).unwrap(),
            None
        );
        let kind = kustomization("- name: ghcr.io/stefanprodan/podinfo\n  newTag: 6.0.1\n");
        let after = revert("apps/podinfo/overlay.yaml", &kind, &podinfo_change()).unwrap();
        assert_eq!(after, Some(kind.replace("6.0.1", "6.0.0")));
        let flux = |tag: &str| {
            format!(
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\nspec:\n  \
                 path: ./apps\n  images:\n  - name: ghcr.io/stefanprodan/podinfo\n    newTag: {tag}\n"
            )
        };
        assert_eq!(
            revert("clusters/apps.yaml", &flux("6.0.1"), &podinfo_change()).unwrap(),
            Some(flux("6.0.0"))
        );
    }

    #[test]
    fn kustomize_tag_removal_is_refused() {
        let text = kustomization("  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.1\n");
        let changes = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "ghcr.io/stefanprodan/podinfo",
        )];
        let err = revert(KPATH, &text, &changes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unsupported {
                    line: 8,
                    column: 13,
                    ..
                }
            ),
            "{err}"
        );
    }

    // --- HelmRelease

    const HPATH: &str = "apps/podinfo/release.yaml";

    fn helm(values: &str) -> String {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: podinfo\n  namespace: test\n\
             spec:\n  chart:\n    spec:\n      chart: podinfo\n      version: 6.0.1\n  values:\n{values}"
        )
    }

    #[test]
    fn helm_full_reference_is_reverted() {
        let text = |tag: &str| {
            helm(&format!(
                "    image: ghcr.io/stefanprodan/podinfo:{tag}\n    replicaCount: 2\n"
            ))
        };
        assert_eq!(
            revert(HPATH, &text("6.0.1"), &podinfo_change()).unwrap(),
            Some(text("6.0.0"))
        );
    }

    #[test]
    fn helm_repository_and_tag_mapping_is_reverted() {
        let text = |tag: &str| {
            helm(&format!(
                "    image:\n      repository: ghcr.io/stefanprodan/podinfo\n      tag: '{tag}'\n      pullPolicy: IfNotPresent\n"
            ))
        };
        assert_eq!(
            revert(HPATH, &text("6.0.1"), &podinfo_change()).unwrap(),
            Some(text("6.0.0"))
        );
    }

    #[test]
    fn helm_registry_and_repository_mapping_is_reverted() {
        let text = |registry: &str, repo: &str, tag: &str| {
            helm(&format!(
                "    image:\n      registry: {registry}\n      repository: {repo}\n      tag: {tag}\n"
            ))
        };
        let before = text("ghcr.io", "stefanprodan/podinfo", "6.0.1");
        assert_eq!(
            revert(HPATH, &before, &podinfo_change()).unwrap(),
            Some(text("ghcr.io", "stefanprodan/podinfo", "6.0.0"))
        );
        let moved = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "ghcr.io/stefanprodan/podinfo-old:6.0.0",
        )];
        assert_eq!(
            revert(HPATH, &before, &moved).unwrap(),
            Some(text("ghcr.io", "stefanprodan/podinfo-old", "6.0.0"))
        );
        let other_registry = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "quay.io/podinfo:6.0.0",
        )];
        assert!(matches!(
            revert(HPATH, &before, &other_registry),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn helm_image_or_name_keys_are_repositories() {
        for key in ["image", "name"] {
            let text = |tag: &str| {
                helm(&format!(
                    "    app:\n      {key}: ghcr.io/stefanprodan/podinfo\n      tag: {tag}\n"
                ))
            };
            assert_eq!(
                revert(HPATH, &text("6.0.1"), &podinfo_change()).unwrap(),
                Some(text("6.0.0")),
                "{key}"
            );
        }
    }

    #[test]
    fn helm_numeric_tag_is_quoted_when_needed() {
        let text = |tag: &str| {
            helm(&format!(
                "    image:\n      repository: nginx\n      tag: {tag}\n"
            ))
        };
        let cases = [
            ("1.2", "1.25", "\"1.25\""),
            ("1.2", "1.10", "\"1.10\""),
            ("1.2", "stable", "stable"),
        ];
        for (from, to, written) in cases {
            let changes = [change("nginx", &format!("nginx:{from}"), &format!("nginx:{to}"))];
            assert_eq!(
                revert(HPATH, &text(from), &changes).unwrap(),
                Some(text(written)),
                "{to}"
            );
        }
        let changes = [change("nginx", "nginx:stable", "nginx:1.2")];
        assert_eq!(
            revert(HPATH, &text("stable"), &changes).unwrap(),
            Some(text("\"1.2\""))
        );
    }

    #[test]
    fn helm_values_outside_spec_values_are_not_touched() {
        let text = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: podinfo\n  \
                    annotations:\n    previous: ghcr.io/stefanprodan/podinfo:6.0.1\nspec:\n  values:\n    \
                    image: ghcr.io/stefanprodan/podinfo:6.0.1\n";
        let want = text.replacen(
            "image: ghcr.io/stefanprodan/podinfo:6.0.1",
            "image: ghcr.io/stefanprodan/podinfo:6.0.0",
            1,
        );
        assert_eq!(revert(HPATH, text, &podinfo_change()).unwrap(), Some(want));
        let values_elsewhere = "kind: ConfigMap\ndata:\n  image: ghcr.io/stefanprodan/podinfo:6.0.1\n";
        assert_eq!(revert(HPATH, values_elsewhere, &podinfo_change()).unwrap(), None);
    }

    #[test]
    fn helm_two_matching_places_are_ambiguous() {
        let text = helm(
            "    image: ghcr.io/stefanprodan/podinfo:6.0.1\n    backend:\n      image:\n        \
             repository: ghcr.io/stefanprodan/podinfo\n        tag: 6.0.1\n",
        );
        let err = revert(HPATH, &text, &podinfo_change()).unwrap_err();
        assert!(err.to_string().contains("lines 12, 15"), "{err}");
    }

    #[test]
    fn helm_release_in_another_namespace_is_skipped() {
        let text = helm("    image: ghcr.io/stefanprodan/podinfo:6.0.1\n")
            .replace("namespace: test", "namespace: prod");
        assert_eq!(revert(HPATH, &text, &podinfo_change()).unwrap(), None);
        let target_ns = helm("    image: ghcr.io/stefanprodan/podinfo:6.0.1\n")
            .replace("  values:", "  targetNamespace: test\n  values:")
            .replace("namespace: test\n", "namespace: flux-system\n");
        assert!(revert(HPATH, &target_ns, &podinfo_change()).unwrap().is_some());
    }

    // --- errors and awkward text

    #[test]
    fn unparseable_yaml_is_an_error_with_its_position() {
        let text = "kind: Deployment\nmetadata:\n  name: podinfo\n  labels: [a, b\nspec: {}\n";
        let err = revert(PATH, text, &podinfo_change()).unwrap_err();
        let Error::Parse { line, column, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!((*line, *column), (5, 5));
        assert_eq!(err.category(), "ParseManifest");
        let message = err.to_string();
        assert!(
            message.starts_with("apps/podinfo/deployment.yaml:5:5: cannot parse YAML ("),
            "{message}"
        );
        assert!(
            message.ends_with("flaggit never overwrites a file it cannot parse"),
            "{message}"
        );
        let tab = "kind: Deployment\nmetadata:\n\tname: podinfo\n";
        assert!(matches!(
            revert(PATH, tab, &podinfo_change()),
            Err(Error::Parse { line: 3, .. })
        ));
        assert!(declares(PATH, text, &podinfo(), &[]).is_err());
        assert!(declared_images(PATH, text, &podinfo()).is_err());
    }

    #[test]
    fn anchored_images_are_refused() {
        let anchor = deployment("image: &img ghcr.io/stefanprodan/podinfo:6.0.1");
        let err = revert(PATH, &anchor, &podinfo_change()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Anchored {
                    line: 11,
                    column: 23,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.category(), "AnchoredImage");
        let alias = format!(
            "x-image: &img ghcr.io/stefanprodan/podinfo:6.0.1\n{}",
            deployment("image: *img").replacen("apiVersion: apps/v1\n", "", 1)
        );
        let err = revert(PATH, &alias, &podinfo_change()).unwrap_err();
        assert!(matches!(err, Error::Anchored { line: 1, .. }), "{err}");
        let values_alias = "x: &values\n  image: ghcr.io/stefanprodan/podinfo:6.0.1\nkind: HelmRelease\n\
                            metadata:\n  name: podinfo\nspec:\n  values: *values\n";
        let err = revert(HPATH, values_alias, &podinfo_change()).unwrap_err();
        assert!(matches!(err, Error::Anchored { line: 2, .. }), "{err}");
        let helm_alias = helm(
            "    common: &tag 6.0.1\n    image:\n      repository: ghcr.io/stefanprodan/podinfo\n      tag: *tag\n",
        );
        assert!(matches!(
            revert(HPATH, &helm_alias, &podinfo_change()),
            Err(Error::Anchored { .. })
        ));
        let container_alias = "kind: Deployment\nmetadata:\n  name: podinfo\nx: &c\n  name: podinfod\n  \
                               image: ghcr.io/stefanprodan/podinfo:6.0.1\nspec:\n  template:\n    spec:\n      \
                               containers:\n      - *c\n";
        assert!(matches!(
            revert(PATH, container_alias, &podinfo_change()),
            Err(Error::Anchored { .. })
        ));
    }

    #[test]
    fn crlf_line_endings_are_kept() {
        let before = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1 # crlf").replace('\n', "\r\n");
        let after = revert(PATH, &before, &podinfo_change()).unwrap();
        assert_eq!(after, Some(before.replace("6.0.1", "6.0.0")));
        let k = kustomization("  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.1\n")
            .replace('\n', "\r\n");
        let changes = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "docker.io/stefanprodan/podinfo:6.0.0",
        )];
        let want = kustomization(
            "  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.0\n    newName: docker.io/stefanprodan/podinfo\n",
        )
        .replace('\n', "\r\n");
        assert_eq!(revert(KPATH, &k, &changes).unwrap(), Some(want));
    }

    #[test]
    fn non_ascii_and_tabs_before_the_image_are_kept() {
        let old = "# déploiement\t— ☸ version\n          image: \"ghcr.io/stefanprodan/podinfo:6.0.1\" # ✓\t";
        let before = deployment(old).replace("name: podinfod", "name: podinfod # conteneur référencé");
        let after = revert(PATH, &before, &podinfo_change()).unwrap();
        assert_eq!(after, Some(before.replace("6.0.1", "6.0.0")));
    }

    #[test]
    fn non_ascii_block_scalars_before_the_image_do_not_shift_positions() {
        // yaml-rust2 counts block scalar lines in bytes, elsewhere in chars.
        let before = format!(
            "kind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  motd: |\n    Déploiement réussi ✓✓✓\n    ünïcödé\n---\n{}",
            deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1")
        );
        let after = revert(PATH, &before, &podinfo_change()).unwrap();
        assert_eq!(after, Some(before.replace("6.0.1", "6.0.0")));
    }

    #[test]
    fn missing_trailing_newline_and_byte_order_mark_are_kept() {
        let before = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1");
        let before = before.replace("          ports:\n            - containerPort: 9898\n", "");
        let before = before.trim_end().to_string();
        assert!(before.ends_with("6.0.1"));
        let after = revert(PATH, &before, &podinfo_change()).unwrap();
        assert_eq!(after, Some(before.replace("6.0.1", "6.0.0")));
        let bom = format!("\u{feff}{before}");
        assert_eq!(
            revert(PATH, &bom, &podinfo_change()).unwrap(),
            Some(bom.replace("6.0.1", "6.0.0"))
        );
        let k = "images:\n- name: ghcr.io/stefanprodan/podinfo\n  newTag: 6.0.1";
        let changes = [change(
            "podinfod",
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "docker.io/stefanprodan/podinfo:6.0.0",
        )];
        let want = "images:\n- name: ghcr.io/stefanprodan/podinfo\n  newTag: 6.0.0\n  newName: docker.io/stefanprodan/podinfo";
        assert_eq!(revert(KPATH, k, &changes).unwrap().as_deref(), Some(want));
    }

    #[test]
    fn block_and_folded_plain_images_are_refused() {
        let block = deployment("image: |-\n            ghcr.io/stefanprodan/podinfo:6.0.1");
        let err = revert(PATH, &block, &podinfo_change()).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert_eq!(err.category(), "UnsupportedImageEdit");
        let folded = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1\n            # no\n            x");
        // A comment ends the plain scalar: the value is not folded, so this parses as an error.
        assert!(revert(PATH, &folded, &podinfo_change()).is_err());
        let folded = deployment("image: ghcr.io/stefanprodan/\n            podinfo:6.0.1");
        // Folded, the value reads `ghcr.io/stefanprodan/ podinfo:6.0.1`.
        assert_eq!(revert(PATH, &folded, &podinfo_change()).unwrap(), None);
        let spaced = [change(
            "podinfod",
            "ghcr.io/stefanprodan/ podinfo:6.0.1",
            "ghcr.io/stefanprodan/podinfo:6.0.0",
        )];
        let err = revert(PATH, &folded, &spaced).unwrap_err();
        assert!(matches!(err, Error::Unsupported { line: 11, .. }), "{err}");
        // A double-quoted value continued with an escaped line break is one scalar and is replaced whole.
        let quoted = deployment("image: \"ghcr.io/stefanprodan/\\\n            podinfo:6.0.1\"");
        let after = revert(PATH, &quoted, &podinfo_change()).unwrap();
        assert_eq!(
            after,
            Some(deployment("image: \"ghcr.io/stefanprodan/podinfo:6.0.0\""))
        );
    }

    #[test]
    fn self_check_rejects_an_edit_that_changes_anything_else() {
        let text = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1");
        let docs = parse(PATH, &text).unwrap();
        let root = docs[0].root.as_ref().unwrap();
        let image = containers(&docs[0], root)[0].0;
        let scalar = docs[0].get_scalar(image, "image").unwrap().clone();
        let edits = [replace(&scalar, "ghcr.io/stefanprodan/podinfo:6.0.0", "x")];
        let good = text.replace("6.0.1", "6.0.0");
        assert!(self_check(PATH, &docs, &good, &edits).is_ok());
        // Comments are not structure.
        assert!(self_check(PATH, &docs, &good.replace("ports:", "ports: # open"), &edits).is_ok());
        for bad in [
            good.replace("9898", "9899"),
            good.replace("name: podinfod", "name: other"),
            good.replace("6.0.0", "6.0.2"),
            format!("{good}---\nkind: Service\n"),
            good.replace("  namespace: test\n", ""),
            good.replace("9898", "'9898'"),
        ] {
            let err = self_check(PATH, &docs, &bad, &edits).unwrap_err();
            assert_eq!(err.category(), "EditSelfCheck", "{err}");
        }
    }

    // --- declares / declared_images / split_image / render

    #[test]
    fn declares_the_target_or_its_images() {
        let deploy = deployment("image: ghcr.io/stefanprodan/podinfo:6.0.1");
        assert!(declares(PATH, &deploy, &podinfo(), &[]).unwrap());
        let other = TargetRef {
            name: "other",
            ..podinfo()
        };
        assert!(!declares(PATH, &deploy, &other, &["ghcr.io/stefanprodan/podinfo:6.0.1"]).unwrap());
        let k = kustomization("- name: podinfo\n  newName: ghcr.io/stefanprodan/podinfo\n  newTag: 6.0.1\n");
        assert!(
            declares(
                KPATH,
                &k,
                &podinfo(),
                &["nginx:1", "ghcr.io/stefanprodan/podinfo:6.0.0"]
            )
            .unwrap()
        );
        assert!(!declares(KPATH, &k, &podinfo(), &["nginx:1"]).unwrap());
        let h = helm(
            "    image:\n      registry: ghcr.io\n      repository: stefanprodan/podinfo\n      tag: 6.0.1\n",
        );
        assert!(declares(HPATH, &h, &podinfo(), &["ghcr.io/stefanprodan/podinfo:6.0.2"]).unwrap());
        assert!(!declares(HPATH, &h, &podinfo(), &["docker.io/stefanprodan/podinfo:6.0.1"]).unwrap());
        let h = helm("    sidecar: {image: 'busybox:1.36'}\n");
        assert!(declares(HPATH, &h, &podinfo(), &["busybox:1.36"]).unwrap());
        assert!(!declares(HPATH, &h, &podinfo(), &["busybox:1.37"]).unwrap());
        assert!(!declares(PATH, "", &podinfo(), &["busybox:1.37"]).unwrap());
    }

    #[test]
    fn declared_images_lists_the_targets_containers() {
        let text = multi("6.0.1").replace(
            "      containers:\n      - name: podinfod\n        image: ghcr.io/stefanprodan/podinfo:6.0.1\n...\n",
            "      initContainers:\n      - name: init\n        image: busybox:1.36\n      containers:\n      - name: podinfod\n        image: ghcr.io/stefanprodan/podinfo:6.0.1\n...\n",
        );
        let images = declared_images(PATH, &text, &podinfo()).unwrap();
        let want = [
            ("init", "busybox:1.36"),
            ("podinfod", "ghcr.io/stefanprodan/podinfo:6.0.1"),
        ];
        assert_eq!(images, want.map(|(c, i)| (c.to_string(), i.to_string())));
        let other = TargetRef {
            name: "absent",
            ..podinfo()
        };
        assert_eq!(declared_images(PATH, &text, &other).unwrap(), Vec::new());
        let twice = format!("{text}---\n{text}");
        assert!(matches!(
            declared_images(PATH, &twice, &podinfo()),
            Err(Error::Ambiguous { .. })
        ));
    }

    #[test]
    fn split_image_handles_ports_tags_and_digests() {
        let d = "sha256:0123456789abcdef";
        let cases = [
            ("nginx", "nginx", None, None),
            ("nginx:1.25", "nginx", Some("1.25"), None),
            ("localhost:5000/app", "localhost:5000/app", None, None),
            ("localhost:5000/app:1.2", "localhost:5000/app", Some("1.2"), None),
            ("app@sha256:0123456789abcdef", "app", None, Some(d)),
            (
                "localhost:5000/team/app:1.2@sha256:0123456789abcdef",
                "localhost:5000/team/app",
                Some("1.2"),
                Some(d),
            ),
            (
                "ghcr.io/stefanprodan/podinfo:6.0.1",
                "ghcr.io/stefanprodan/podinfo",
                Some("6.0.1"),
                None,
            ),
        ];
        for (image, repository, tag, digest) in cases {
            let split = split_image(image);
            let want = ImageRef {
                repository: repository.to_string(),
                tag: tag.map(str::to_string),
                digest: digest.map(str::to_string),
            };
            assert_eq!(split, want, "{image}");
            assert_eq!(split.to_string(), image);
        }
    }

    #[test]
    fn render_keeps_the_style_while_the_value_reads_back() {
        let plain = TScalarStyle::Plain;
        let cases = [
            ("6.0.0", plain, false, "6.0.0"),
            ("1.2", plain, false, "\"1.2\""),
            ("12", plain, false, "\"12\""),
            ("1e3", plain, false, "\"1e3\""),
            ("0x1F", plain, false, "\"0x1F\""),
            ("yes", plain, false, "\"yes\""),
            ("null", plain, false, "\"null\""),
            (".inf", plain, false, "\".inf\""),
            ("1:20", plain, false, "\"1:20\""),
            ("2024-01-02", plain, false, "\"2024-01-02\""),
            ("v1.2", plain, false, "v1.2"),
            ("latest", plain, false, "latest"),
            ("a,b", plain, false, "a,b"),
            ("a,b", plain, true, "\"a,b\""),
            ("@sha", plain, false, "\"@sha\""),
            ("", plain, false, "\"\""),
            ("it's", TScalarStyle::SingleQuoted, false, "'it''s'"),
            ("a\"b\\c", TScalarStyle::DoubleQuoted, false, "\"a\\\"b\\\\c\""),
            ("x\ny", TScalarStyle::SingleQuoted, false, "\"x\\ny\""),
        ];
        for (value, style, flow, want) in cases {
            let rendered = render(value, style, flow);
            assert_eq!(rendered, want, "{value:?}");
            assert_eq!(reparse_scalar(&rendered).as_deref(), Some(value), "{value:?}");
        }
    }
}
