//! An in-memory file system tree: what a normalized layer holds, ready for an image writer.
//!
//! Paths are relative, `/`-separated, without `.` or `..` (`usr/lib/os-release`); the root
//! directory is the empty path and always exists. Every path names a [`Node`]; several paths
//! may name the same non-directory node (hardlinks). Children are kept sorted by the bytes of
//! their names, so every walk over a tree is in the same order.

use std::collections::BTreeMap;

/// Errors from building a [`Tree`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path is absolute-looking after normalization, empty, or has `.`/`..` components.
    #[error("invalid path `{path}`: must be relative, without `.` or `..` components")]
    InvalidPath { path: String },
    /// A path component is longer than file systems allow (255 bytes).
    #[error("name `{name}` in `{path}` is {len} bytes long; the limit is 255")]
    NameTooLong { path: String, name: String, len: usize },
    /// Something already exists at the path.
    #[error("`{path}` already exists")]
    AlreadyExists { path: String },
    /// The parent directory of the path does not exist.
    #[error("parent directory of `{path}` does not exist")]
    MissingParent { path: String },
    /// The parent of the path exists but is not a directory.
    #[error("parent of `{path}` is not a directory")]
    ParentNotADirectory { path: String },
    /// The target of a hardlink does not exist.
    #[error("hardlink `{path}` points to `{target}`, which does not exist")]
    MissingLinkTarget { path: String, target: String },
    /// Directories cannot be hardlinked.
    #[error("hardlink `{path}` points to directory `{target}`")]
    LinkToDirectory { path: String, target: String },
    /// The mode has bits outside the permission bits (0o7777).
    #[error("mode {mode:#o} of `{path}` has bits outside 0o7777 (the file type is given by the kind)")]
    InvalidMode { path: String, mode: u32 },
}

/// Index of a node in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(usize);

impl NodeId {
    /// The root directory.
    pub const ROOT: NodeId = NodeId(0);

    /// Position of the node in creation order (the root is 0).
    pub fn index(self) -> usize {
        self.0
    }
}

/// What a node is, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory; its entries are added with [`Tree::insert`].
    Directory,
    /// A regular file and its contents.
    File(Vec<u8>),
    /// A symbolic link and its target, stored as given.
    Symlink(String),
    /// A character device.
    CharDevice { major: u32, minor: u32 },
    /// A block device.
    BlockDevice { major: u32, minor: u32 },
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
}

/// Ownership, permissions, time and extended attributes of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Permission bits including setuid, setgid and sticky (at most 0o7777).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
    /// Extended attributes by full name (`security.capability`, `user.foo`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Metadata {
    /// Metadata with the given mode, owned by root, at time 0, without xattrs.
    pub fn with_mode(mode: u32) -> Metadata {
        Metadata {
            mode,
            ..Metadata::default()
        }
    }
}

/// A node of the tree: a directory, file, symlink, device, fifo or socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    kind: Kind,
    metadata: Metadata,
    /// Directory entries by name; empty for anything but a directory.
    children: BTreeMap<String, NodeId>,
    /// Number of paths naming this node (1 unless hardlinked; 1 for directories).
    paths: u32,
}

impl Node {
    /// What the node is.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// Owner, mode, time and xattrs.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Whether the node is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Directory)
    }

    /// Directory entries, sorted by name bytes; empty for non-directories.
    pub fn children(&self) -> impl ExactSizeIterator<Item = (&str, NodeId)> {
        // `String` orders by bytes, which is the order squashfs and cpio want.
        self.children.iter().map(|(name, id)| (name.as_str(), *id))
    }

    /// How many paths name this node: above 1 for hardlinked files, 1 for directories.
    pub fn path_count(&self) -> u32 {
        self.paths
    }
}

/// A file system tree held in memory. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// A tree holding only its root directory, with the given metadata.
    pub fn new(root: Metadata) -> Tree {
        let root = Node {
            kind: Kind::Directory,
            metadata: root,
            children: BTreeMap::new(),
            paths: 1,
        };
        Tree { nodes: vec![root] }
    }

    /// Add a node at `path`. Its parent directory must exist; nothing may exist at `path`.
    pub fn insert(&mut self, path: &str, kind: Kind, metadata: Metadata) -> Result<NodeId, Error> {
        if metadata.mode & !0o7777 != 0 {
            return Err(Error::InvalidMode {
                path: path.to_owned(),
                mode: metadata.mode,
            });
        }
        let (parent, name) = self.parent_slot(path)?;
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node {
            kind,
            metadata,
            children: BTreeMap::new(),
            paths: 1,
        });
        self.nodes[parent.0].children.insert(name, id);
        Ok(id)
    }

    /// Add `path` as another name (hardlink) for the non-directory node at `target`.
    pub fn link(&mut self, path: &str, target: &str) -> Result<NodeId, Error> {
        let Some(id) = self.lookup(target) else {
            return Err(Error::MissingLinkTarget {
                path: path.to_owned(),
                target: target.to_owned(),
            });
        };
        if self.nodes[id.0].is_dir() {
            return Err(Error::LinkToDirectory {
                path: path.to_owned(),
                target: target.to_owned(),
            });
        }
        let (parent, name) = self.parent_slot(path)?;
        self.nodes[parent.0].children.insert(name, id);
        self.nodes[id.0].paths += 1;
        Ok(id)
    }

    /// The root directory.
    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    /// The node with the given id. Panics if the id comes from another tree and is out of range.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The node at `path`, if any (`""` is the root).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.lookup(path).map(|id| self.node(id))
    }

    /// Mutable metadata of the node with the given id (shared by all its paths).
    pub fn metadata_mut(&mut self, id: NodeId) -> &mut Metadata {
        &mut self.nodes[id.0].metadata
    }

    /// The id of the node at `path`, if any (`""` is the root).
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut id = NodeId::ROOT;
        for name in components(path).ok()? {
            id = *self.nodes[id.0].children.get(name)?;
        }
        Some(id)
    }

    /// Number of distinct nodes, the root included (hardlinks count once).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every path below the root with its node, depth first, entries in name order
    /// (a directory comes before its contents). The root itself is not listed.
    pub fn walk(&self) -> Vec<(String, NodeId)> {
        let mut out = Vec::new();
        self.walk_into(NodeId::ROOT, "", &mut out);
        out
    }

    fn walk_into(&self, dir: NodeId, prefix: &str, out: &mut Vec<(String, NodeId)>) {
        for (name, id) in self.nodes[dir.0].children() {
            let path = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            out.push((path.clone(), id));
            if self.nodes[id.0].is_dir() {
                self.walk_into(id, &path, out);
            }
        }
    }

    /// The directory that will hold `path`, and the name it will have there.
    fn parent_slot(&self, path: &str) -> Result<(NodeId, String), Error> {
        let mut names = components(path)?;
        let Some(name) = names.pop() else {
            return Err(Error::InvalidPath { path: path.to_owned() });
        };
        let mut parent = NodeId::ROOT;
        for dir in names {
            parent = match self.nodes[parent.0].children.get(dir) {
                Some(id) if self.nodes[id.0].is_dir() => *id,
                Some(_) => return Err(Error::ParentNotADirectory { path: path.to_owned() }),
                None => return Err(Error::MissingParent { path: path.to_owned() }),
            };
        }
        if self.nodes[parent.0].children.contains_key(name) {
            return Err(Error::AlreadyExists { path: path.to_owned() });
        }
        Ok((parent, name.to_owned()))
    }
}

/// Split a relative path into its names. A leading `/`, repeated `/` and a trailing `/` are
/// tolerated; `.` and `..` are not, since a normalized layer never has them.
fn components(path: &str) -> Result<Vec<&str>, Error> {
    let mut names = Vec::new();
    for name in path.split('/').filter(|n| !n.is_empty()) {
        if name == "." || name == ".." {
            return Err(Error::InvalidPath { path: path.to_owned() });
        }
        if name.len() > 255 {
            return Err(Error::NameTooLong {
                path: path.to_owned(),
                name: name.to_owned(),
                len: name.len(),
            });
        }
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &[u8]) -> Kind {
        Kind::File(data.to_vec())
    }

    #[test]
    fn insert_requires_an_existing_parent_directory() {
        let mut tree = Tree::new(Metadata::with_mode(0o755));
        assert!(matches!(
            tree.insert("usr/bin", Kind::Directory, Metadata::with_mode(0o755)),
            Err(Error::MissingParent { path }) if path == "usr/bin"
        ));
        tree.insert("usr", Kind::Directory, Metadata::with_mode(0o755)).unwrap();
        tree.insert("usr/x", file(b"x"), Metadata::with_mode(0o644)).unwrap();
        assert!(matches!(
            tree.insert("usr/x/y", file(b""), Metadata::with_mode(0o644)),
            Err(Error::ParentNotADirectory { .. })
        ));
        assert!(matches!(
            tree.insert("usr/x", file(b""), Metadata::with_mode(0o644)),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            tree.insert("usr/../etc", Kind::Directory, Metadata::with_mode(0o755)),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            tree.insert("", Kind::Directory, Metadata::default()),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            tree.insert("usr/y", file(b""), Metadata::with_mode(0o100644)),
            Err(Error::InvalidMode { mode: 0o100644, .. })
        ));
    }

    #[test]
    fn walk_is_sorted_by_name_bytes_and_depth_first() {
        let mut tree = Tree::new(Metadata::with_mode(0o755));
        for dir in ["b", "a", "a/z", "A"] {
            tree.insert(dir, Kind::Directory, Metadata::with_mode(0o755)).unwrap();
        }
        tree.insert("a-b", file(b""), Metadata::with_mode(0o644)).unwrap();
        tree.insert("a/z/f", file(b"f"), Metadata::with_mode(0o644)).unwrap();
        let paths: Vec<String> = tree.walk().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["A", "a", "a/z", "a/z/f", "a-b", "b"]);
        assert_eq!(tree.get("/a/z/f").map(|n| n.kind()), Some(&file(b"f")));
        assert!(tree.get("a/z/g").is_none());
        assert!(tree.get("").is_some_and(Node::is_dir));
    }

    #[test]
    fn hardlinks_share_one_node_and_count_their_paths() {
        let mut tree = Tree::new(Metadata::with_mode(0o755));
        tree.insert("d", Kind::Directory, Metadata::with_mode(0o755)).unwrap();
        let id = tree
            .insert("d/one", file(b"shared"), Metadata::with_mode(0o644))
            .unwrap();
        assert_eq!(tree.link("two", "d/one").unwrap(), id);
        assert_eq!(tree.link("d/three", "/d/one").unwrap(), id);
        assert_eq!(tree.node(id).path_count(), 3);
        assert_eq!(tree.lookup("two"), Some(id));
        // One node for the root, one for `d`, one for the file.
        assert_eq!(tree.node_count(), 3);
        // Changing the metadata through one path changes it for all.
        tree.metadata_mut(id).uid = 7;
        assert_eq!(tree.get("d/three").unwrap().metadata().uid, 7);

        assert!(matches!(tree.link("x", "d"), Err(Error::LinkToDirectory { .. })));
        assert!(matches!(tree.link("x", "nope"), Err(Error::MissingLinkTarget { .. })));
        assert!(matches!(tree.link("two", "d/one"), Err(Error::AlreadyExists { .. })));
        assert_eq!(tree.node(id).path_count(), 3);
    }

    #[test]
    fn overlong_names_are_rejected() {
        let mut tree = Tree::new(Metadata::default());
        let long = "n".repeat(256);
        assert!(matches!(
            tree.insert(&long, file(b""), Metadata::default()),
            Err(Error::NameTooLong { len: 256, .. })
        ));
        tree.insert(&long[..255], file(b""), Metadata::default()).unwrap();
    }
}
