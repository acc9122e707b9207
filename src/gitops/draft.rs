//! A branch's tree held in memory while a batch of commits is built on it. Each commit writes
//! the files it changes and the trees on their paths, nothing else: the directories around
//! them are read from the object database once per batch, not once per commit, and a
//! ledger directory of a thousand canaries is serialized from memory instead of rebuilt.

use std::collections::BTreeMap;

use git2::{FileMode, ObjectType, Oid, Repository};

/// Where a draft writes its trees: the object database, or one that keeps them until they
/// go out in one pack ([`super::repo::Repo`]). `path` is the directory's ("" for the root):
/// successive versions of one directory differ by a few entries.
pub trait Trees {
    fn put_tree(&self, path: &str, bytes: &[u8]) -> Result<Oid, git2::Error>;
}

impl Trees for Repository {
    fn put_tree(&self, _path: &str, bytes: &[u8]) -> Result<Oid, git2::Error> {
        self.odb()?.write(ObjectType::Tree, bytes)
    }
}

/// The tree of the commit a batch builds on, and of each commit made on it since.
#[derive(Debug)]
pub struct Draft {
    /// The commit whose tree `root` is; None before the branch's first commit.
    head: Option<Oid>,
    root: Dir,
}

/// One directory: its entries in git's order, and its id while it matches them.
#[derive(Debug, Default)]
struct Dir {
    /// Set while the tree in the object database holds exactly these entries.
    id: Option<Oid>,
    /// By git's sort key: the name, with a `/` after the name of a directory.
    entries: BTreeMap<Vec<u8>, Node>,
}

#[derive(Debug)]
enum Node {
    /// A blob, symbolic link or submodule, kept as it is.
    Leaf { mode: i32, id: Oid },
    /// A subdirectory; read from the object database the first time a path goes through it.
    Tree { id: Oid, dir: Option<Box<Dir>> },
}

impl Draft {
    /// The tree of `head` (None: an empty tree, for a branch that has no commit yet).
    pub fn new(git: &Repository, head: Option<Oid>) -> Result<Self, git2::Error> {
        let root = match head {
            Some(commit) => Dir::load(git, git.find_commit(commit)?.tree_id())?,
            None => Dir::default(),
        };
        Ok(Self { head, root })
    }

    /// The commit this tree is of.
    pub fn head(&self) -> Option<Oid> {
        self.head
    }

    /// The blob at `path`; None when there is no file there.
    pub fn blob(&mut self, git: &Repository, path: &str) -> Result<Option<Oid>, git2::Error> {
        let parts = split(path);
        let Some((name, dirs)) = parts.split_last() else {
            return Ok(None);
        };
        let mut dir = &mut self.root;
        for part in dirs {
            match dir.subdir(git, part, false)? {
                Some(next) => dir = next,
                None => return Ok(None),
            }
        }
        Ok(match dir.entries.get(name.as_bytes()) {
            Some(Node::Leaf { mode, id }) if *mode != i32::from(FileMode::Commit) => Some(*id),
            _ => None,
        })
    }

    /// Writes (Some) or deletes (None) the file at `path` in memory; directories are made on
    /// the way, and one left empty by a deletion goes with it.
    pub fn set(&mut self, git: &Repository, path: &str, blob: Option<Oid>) -> Result<(), git2::Error> {
        let parts = split(path);
        let Some((name, dirs)) = parts.split_last() else {
            return Err(git2::Error::from_str(&format!("{path:?} is not a file path")));
        };
        set_in(&mut self.root, git, dirs, name, blob)
    }

    /// Writes the trees changed since the last write (bottom up) and returns the root's id.
    pub fn write_tree(&mut self, store: &dyn Trees) -> Result<Oid, git2::Error> {
        let mut path = String::new();
        self.root.write(store, &mut path)
    }

    /// Notes that `commit` (made on this tree) is the new head.
    pub fn advance(&mut self, commit: Oid) {
        self.head = Some(commit);
    }
}

/// `set` below `dir`: `dirs` is the path of directories to the file `name`.
fn set_in(
    dir: &mut Dir,
    git: &Repository,
    dirs: &[&str],
    name: &str,
    blob: Option<Oid>,
) -> Result<(), git2::Error> {
    let Some((first, rest)) = dirs.split_first() else {
        let blob_mode = i32::from(FileMode::Blob);
        let changed = match blob {
            Some(id) => {
                let was_dir = dir.entries.remove(&tree_key(name)).is_some();
                let leaf = Node::Leaf { mode: blob_mode, id };
                let old = dir.entries.insert(name.as_bytes().to_vec(), leaf);
                was_dir
                    || !matches!(old, Some(Node::Leaf { id: same, mode }) if same == id && mode == blob_mode)
            }
            None => dir.entries.remove(name.as_bytes()).is_some(),
        };
        if changed {
            dir.id = None;
        }
        return Ok(());
    };
    let creating = blob.is_some();
    let Some(sub) = dir.subdir(git, first, creating)? else {
        // Deleting below a directory that does not exist: nothing to do.
        return Ok(());
    };
    set_in(sub, git, rest, name, blob)?;
    let (changed, empty) = (sub.id.is_none(), sub.entries.is_empty());
    if changed {
        dir.id = None;
        if empty {
            // git holds no empty directories.
            dir.entries.remove(&tree_key(first));
        }
    }
    Ok(())
}

impl Dir {
    fn load(git: &Repository, id: Oid) -> Result<Self, git2::Error> {
        let tree = git.find_tree(id)?;
        let mut entries = BTreeMap::new();
        for entry in tree.iter() {
            let name = entry.name_bytes().to_vec();
            if entry.kind() == Some(ObjectType::Tree) {
                let mut key = name;
                key.push(b'/');
                entries.insert(
                    key,
                    Node::Tree {
                        id: entry.id(),
                        dir: None,
                    },
                );
            } else {
                entries.insert(
                    name,
                    Node::Leaf {
                        mode: entry.filemode(),
                        id: entry.id(),
                    },
                );
            }
        }
        Ok(Self {
            id: Some(id),
            entries,
        })
    }

    /// The subdirectory `name`, read on first use; with `create`, made when missing (a file
    /// of that name is replaced).
    fn subdir(
        &mut self,
        git: &Repository,
        name: &str,
        create: bool,
    ) -> Result<Option<&mut Dir>, git2::Error> {
        let key = tree_key(name);
        if !self.entries.contains_key(&key) {
            if !create {
                return Ok(None);
            }
            self.entries.remove(name.as_bytes());
            self.entries.insert(
                key.clone(),
                Node::Tree {
                    id: Oid::ZERO_SHA1,
                    dir: Some(Box::default()),
                },
            );
            self.id = None;
        }
        match self.entries.get_mut(&key) {
            Some(Node::Tree { id, dir }) => {
                if dir.is_none() {
                    *dir = Some(Box::new(Dir::load(git, *id)?));
                }
                Ok(dir.as_deref_mut())
            }
            _ => Ok(None),
        }
    }

    /// Writes this directory (at `path`) and the changed ones below it; returns its id.
    fn write(&mut self, store: &dyn Trees, path: &mut String) -> Result<Oid, git2::Error> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let mut bytes = Vec::with_capacity(self.entries.len() * 48);
        let blob_mode = i32::from(FileMode::Blob);
        for (key, node) in &mut self.entries {
            let (mode, id, name) = match node {
                Node::Leaf { mode, id } => (*mode, *id, key.as_slice()),
                Node::Tree { id, dir } => {
                    let name = &key[..key.len() - 1];
                    if let Some(dir) = dir {
                        let len = path.len();
                        path.push_str(&String::from_utf8_lossy(name));
                        path.push('/');
                        *id = dir.write(store, path)?;
                        path.truncate(len);
                    }
                    (i32::from(FileMode::Tree), *id, name)
                }
            };
            // git's tree format: octal mode, space, name, NUL, the raw id.
            match mode {
                m if m == blob_mode => bytes.extend_from_slice(b"100644 "),
                0o40000 => bytes.extend_from_slice(b"40000 "),
                _ => bytes.extend_from_slice(format!("{mode:o} ").as_bytes()),
            }
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(id.as_bytes());
        }
        let id = store.put_tree(path, &bytes)?;
        self.id = Some(id);
        Ok(id)
    }
}

fn tree_key(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(b'/');
    key
}

fn split(path: &str) -> Vec<&str> {
    path.split('/').filter(|p| !p.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (std::path::PathBuf, Repository) {
        let dir = std::env::temp_dir().join(format!("flaggit-draft-unit-{}", rand::random::<u64>()));
        let git = Repository::init_bare(&dir).expect("init");
        (dir, git)
    }

    /// The tree libgit2 builds for the same changes, from the object database.
    fn reference(git: &Repository, base: Oid, changes: &[(&str, Option<Oid>)]) -> Oid {
        let base = git.find_tree(base).expect("base");
        let mut update = git2::build::TreeUpdateBuilder::new();
        for (path, blob) in changes {
            match blob {
                Some(id) => {
                    update.upsert(*path, *id, FileMode::Blob);
                }
                None if base.get_path(std::path::Path::new(path)).is_ok() => {
                    update.remove(*path);
                }
                None => {}
            }
        }
        update.create_updated(git, &base).expect("update")
    }

    fn commit(git: &Repository, tree: Oid, parent: Option<Oid>) -> Oid {
        let signature =
            git2::Signature::new("t", "t@example.com", &git2::Time::new(0, 0)).expect("signature");
        let tree = git.find_tree(tree).expect("tree");
        let parents: Vec<git2::Commit<'_>> = parent
            .map(|p| git.find_commit(p).expect("parent"))
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        git.commit(None, &signature, &signature, "x", &tree, &parents)
            .expect("commit")
    }

    #[test]
    fn each_write_is_the_tree_libgit2_builds_from_the_database() {
        let (dir, git) = scratch();
        let blob = |text: &str| git.blob(text.as_bytes()).expect("blob");
        let mut draft = Draft::new(&git, None).expect("draft");
        // Names that sort differently as files and as directories ("a" < "a-b" < "a/").
        let steps: Vec<Vec<(&str, Option<Oid>)>> = vec![
            vec![
                ("README.md", Some(blob("readme"))),
                ("a/x.yaml", Some(blob("1"))),
                ("a-b", Some(blob("2"))),
                ("a.c/y", Some(blob("3"))),
                (".flaggit/test/podinfo.yaml", Some(blob("ledger 1"))),
            ],
            vec![(".flaggit/test/podinfo.yaml", Some(blob("ledger 2")))],
            vec![(".flaggit/test/other.yaml", Some(blob("other")))],
            vec![(".flaggit/prod/eu/test/podinfo.yaml", Some(blob("cluster")))],
            vec![("a/x.yaml", None), ("gone/never.yaml", None)],
            vec![(".flaggit/test/podinfo.yaml", Some(blob("ledger 2")))],
            vec![("a-b", None), ("a.c/y", Some(blob("4")))],
        ];
        let mut tree = draft.write_tree(&git).expect("empty tree");
        let mut head = None;
        for changes in steps {
            let expected = reference(&git, tree, &changes);
            for (path, blob) in &changes {
                draft.set(&git, path, *blob).expect("set");
            }
            tree = draft.write_tree(&git).expect("write");
            assert_eq!(tree, expected, "after {changes:?}");
            let made = commit(&git, tree, head);
            draft.advance(made);
            head = Some(made);
        }
        // A draft started from the last commit reads what the writes left.
        let mut again = Draft::new(&git, head).expect("reopen");
        let read = |draft: &mut Draft, path: &str| {
            draft
                .blob(&git, path)
                .expect("read")
                .map(|id| String::from_utf8_lossy(git.find_blob(id).expect("blob").content()).into_owned())
        };
        assert_eq!(
            read(&mut again, ".flaggit/test/podinfo.yaml").as_deref(),
            Some("ledger 2")
        );
        assert_eq!(read(&mut again, "a.c/y").as_deref(), Some("4"));
        assert_eq!(
            read(&mut again, "a/x.yaml"),
            None,
            "deleted, and its emptied directory with it"
        );
        assert_eq!(read(&mut again, "a.c"), None, "a directory is not a file");
        assert_eq!(read(&mut again, "nowhere/x"), None);
        assert_eq!(again.head(), head);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn only_the_trees_on_the_changed_path_are_written() {
        let (dir, git) = scratch();
        let mut draft = Draft::new(&git, None).expect("draft");
        for i in 0..50 {
            let blob = git.blob(format!("{i}").as_bytes()).expect("blob");
            draft
                .set(&git, &format!("apps/app-{i}.yaml"), Some(blob))
                .expect("set");
        }
        let blob = git.blob(b"ledger").expect("blob");
        draft
            .set(&git, ".flaggit/test/podinfo.yaml", Some(blob))
            .expect("set");
        draft.write_tree(&git).expect("write");
        let apps = match draft.root.entries.get(&tree_key("apps")) {
            Some(Node::Tree { id, .. }) => *id,
            other => panic!("apps is a tree: {other:?}"),
        };
        let blob = git.blob(b"ledger 2").expect("blob");
        draft
            .set(&git, ".flaggit/test/podinfo.yaml", Some(blob))
            .expect("set");
        match draft.root.entries.get(&tree_key("apps")) {
            Some(Node::Tree { dir: Some(dir), .. }) => assert_eq!(dir.id, Some(apps), "untouched"),
            other => panic!("apps is a tree: {other:?}"),
        }
        assert!(draft.root.id.is_none(), "the root is on the path");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
