//! System and configuration extensions: a layer's `/usr` and `/opt` (or `/etc`) as a
//! signed, verity-protected Discoverable Disk Image that systemd-sysext (systemd-confext)
//! merges at boot.
//!
//! The steps, all pure and deterministic:
//! 1. [`split_layer`] sorts a layer's paths into what a sysext carries (`usr/`, `opt/`), what
//!    a confext could carry (`etc/`) and the rest, which the caller reports by path;
//! 2. [`build_image`] turns one part into a squashfs ([`tree_from_layer`] plus the
//!    `extension-release.<name>` file rendered from an [`ExtensionRelease`]), computes its
//!    dm-verity hash tree (salt and superblock UUID derived from the squashfs bytes), signs
//!    the root hash if given a [`Signer`], and writes the GPT image with [`crate::ddi`].
//!
//! Another file system (erofs from an external `mkfs.erofs`) takes the same steps in two
//! halves: [`filesystem_layer`] makes the checks and gives the layer part plus its
//! extension-release file, the caller makes the file system of it, and
//! [`image_from_filesystem`] does the rest (verity, signature, GPT).
//!
//! The image name systemd derives from the file name (`NAME.sysext.raw` → `NAME`, cut at
//! the first `_` or `+`, systemd 257 `path_extract_image_name()`) must equal the
//! `extension-release.NAME` suffix, so [`build_image`] accepts only names without those.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ddi::{self, Arch, Partition};
use crate::layer::{self, Entry, EntryKind, Layer};
use crate::sign::{self, Signer};
use crate::squashfs;
use crate::tree::{self, Kind, Metadata, Tree};
use crate::verity::{self, Params, RootHash};

mod release;

pub use release::ExtensionRelease;

/// Errors from splitting a layer and building an extension image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The extension has no file, link or device under its directories.
    #[error("extension `{name}` has nothing under {dirs}: it would merge nothing", dirs = class.dirs_text())]
    Empty {
        /// Extension name.
        name: String,
        /// Sysext or confext.
        class: Class,
    },
    /// The layer part holds paths the extension class does not merge (split it first).
    #[error(
        "extension `{name}` holds {} path(s) outside {dirs}, which systemd would not merge: {}",
        paths.len(), paths.join(", "), dirs = class.dirs_text()
    )]
    OutsideExtension {
        /// Extension name.
        name: String,
        /// Sysext or confext.
        class: Class,
        /// The offending paths.
        paths: Vec<String>,
    },
    /// The name cannot be both a file name and its `extension-release.NAME` suffix.
    #[error(
        "invalid extension name `{name}`: use letters, digits, `-` and `.` (not first); systemd cuts image names at `_` and `+`"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The layer already has the extension-release file that the build writes.
    #[error("extension `{name}`: the layer already has `{path}`; strata writes that file itself")]
    ReleaseFileInLayer {
        /// Extension name.
        name: String,
        /// The conflicting path.
        path: String,
    },
    /// A field of the extension-release data is not acceptable to systemd.
    #[error("extension-release {key}={value:?}: {reason}")]
    InvalidRelease {
        /// The field.
        key: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The layer part cannot be turned into a file tree.
    #[error("building the file tree of the extension")]
    Tree(#[from] tree::Error),
    /// The parts of a split layer are inconsistent (a dangling hard link).
    #[error("splitting the layer")]
    Layer(#[from] layer::Error),
    /// Writing the squashfs image failed.
    #[error("writing the extension's squashfs image")]
    Squashfs(#[from] squashfs::Error),
    /// Computing the verity hash tree failed.
    #[error("computing the extension's verity hash tree")]
    Verity(#[from] verity::Error),
    /// Signing the root hash failed.
    #[error("signing the extension's verity root hash")]
    Sign(#[from] sign::Error),
    /// Writing the disk image failed.
    #[error("writing the extension's disk image")]
    Ddi(#[from] ddi::Error),
}

/// What kind of extension an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A system extension: `/usr` and `/opt`, merged by systemd-sysext.
    Sysext,
    /// A configuration extension: `/etc`, merged by systemd-confext.
    Confext,
}

impl Class {
    /// The top-level directories the class merges.
    pub fn dirs(self) -> &'static [&'static str] {
        match self {
            Class::Sysext => &["usr", "opt"],
            Class::Confext => &["etc"],
        }
    }

    /// Where the extension-release file of extension `name` goes in the image.
    pub fn release_path(self, name: &str) -> String {
        match self {
            Class::Sysext => format!("usr/lib/extension-release.d/extension-release.{name}"),
            Class::Confext => format!("etc/extension-release.d/extension-release.{name}"),
        }
    }

    /// The image file name systemd-stub and systemd-sysext pick up: `NAME.sysext.raw`.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Class::Sysext => format!("{name}.sysext.raw"),
            Class::Confext => format!("{name}.confext.raw"),
        }
    }

    /// Whether `path` (relative, as in a layer) is inside one of the class's directories.
    pub fn contains(self, path: &str) -> bool {
        let top = path.split('/').next().unwrap_or(path);
        self.dirs().contains(&top)
    }

    fn dirs_text(self) -> &'static str {
        match self {
            Class::Sysext => "/usr and /opt",
            Class::Confext => "/etc",
        }
    }

    fn key_prefix(self) -> &'static str {
        match self {
            Class::Sysext => "SYSEXT",
            Class::Confext => "CONFEXT",
        }
    }
}

/// A layer split by what systemd can merge from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Everything under `usr/` and `opt/`: the sysext.
    pub usr_opt: Layer,
    /// Everything under `etc/`: what a confext could carry.
    pub etc: Layer,
    /// Every path outside those three, in layer order: to be reported, never dropped
    /// silently.
    pub other: Vec<String>,
}

/// Split a layer into its sysext part, its confext part and the paths outside both.
///
/// A hard link whose data-holding name lands in another part becomes a regular file with
/// that data (the first such name in its part holds it, later ones link to it).
pub fn split_layer(layer: Layer) -> Result<Split, Error> {
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Part {
        UsrOpt,
        Etc,
        Other,
    }
    let part_of = |path: &str| {
        if Class::Sysext.contains(path) {
            Part::UsrOpt
        } else if Class::Confext.contains(path) {
            Part::Etc
        } else {
            Part::Other
        }
    };
    let entries = layer.into_entries();
    // Data holders named by a hard link from another part: their data is needed twice.
    let targets: HashSet<&str> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Hardlink { target } if part_of(target) != part_of(&e.path) => Some(target.as_str()),
            _ => None,
        })
        .collect();
    let shared: HashMap<String, Entry> = entries
        .iter()
        .filter(|e| targets.contains(e.path.as_str()))
        .map(|e| (e.path.clone(), e.clone()))
        .collect();
    let (mut usr_opt, mut etc, mut other) = (Vec::new(), Vec::new(), Vec::new());
    // (part, old holder) -> new holder in that part.
    let mut moved: HashMap<(Part, String), String> = HashMap::new();
    for mut e in entries {
        let part = part_of(&e.path);
        if let EntryKind::Hardlink { target } = &e.kind
            && part_of(target) != part
        {
            let key = (part, target.clone());
            if let Some(holder) = moved.get(&key) {
                e.kind = EntryKind::Hardlink { target: holder.clone() };
            } else if let Some(h) = shared.get(target).filter(|h| matches!(h.kind, EntryKind::File { .. })) {
                // One inode: the new holder takes the old holder's data and metadata.
                e = Entry {
                    path: e.path,
                    ..h.clone()
                };
                moved.insert(key, e.path.clone());
            }
        }
        match part {
            Part::UsrOpt => usr_opt.push(e),
            Part::Etc => etc.push(e),
            Part::Other => other.push(e.path),
        }
    }
    Ok(Split {
        usr_opt: Layer::from_entries(usr_opt)?,
        etc: Layer::from_entries(etc)?,
        other,
    })
}

/// The squashfs [`Tree`] of the layer's entries for which `keep(path)` holds: owners,
/// modes, times, extended attributes, symlinks, devices and fifos as in the layer, hard
/// links as [`Tree::link`]s. A kept hard link whose data holder is not kept gets the data
/// (the first such name; later ones link to it). Missing parent directories are added
/// (0755, root, the child's mtime); the root directory is 0755, root, time 0.
pub fn tree_from_layer(layer: &Layer, keep: impl Fn(&str) -> bool) -> Result<Tree, Error> {
    let mut tree = Tree::new(Metadata::with_mode(0o755));
    let mut moved: HashMap<&str, &str> = HashMap::new();
    for e in layer.entries().iter().filter(|e| keep(&e.path)) {
        add_parents(&mut tree, &e.path, e.mtime)?;
        let mut source = e;
        let kind = match &e.kind {
            EntryKind::Dir => Kind::Directory,
            EntryKind::File { data } => Kind::File(data.clone()),
            EntryKind::Hardlink { target } => {
                let holder = if keep(target) {
                    Some(target.as_str())
                } else {
                    moved.get(target.as_str()).copied()
                };
                if let Some(holder) = holder {
                    tree.link(&e.path, holder)?;
                    continue;
                }
                let Some(h) = layer.get(target).filter(|h| matches!(h.kind, EntryKind::File { .. })) else {
                    return Err(layer::Error::DanglingHardlink {
                        path: e.path.clone(),
                        target: target.clone(),
                    }
                    .into());
                };
                moved.insert(target, &e.path);
                source = h;
                Kind::File(file_data(h).to_vec())
            }
            EntryKind::Symlink { target } => Kind::Symlink(target.clone()),
            EntryKind::CharDevice { major, minor } => Kind::CharDevice {
                major: *major,
                minor: *minor,
            },
            EntryKind::BlockDevice { major, minor } => Kind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            EntryKind::Fifo => Kind::Fifo,
        };
        let metadata = Metadata {
            mode: source.mode,
            uid: source.uid,
            gid: source.gid,
            mtime: source.mtime,
            xattrs: source.xattrs.clone(),
        };
        tree.insert(&e.path, kind, metadata)?;
    }
    Ok(tree)
}

/// Add the missing parent directories of `path` (0755, root, `mtime`).
fn add_parents(tree: &mut Tree, path: &str, mtime: u64) -> Result<(), Error> {
    let mut end = 0;
    while let Some(i) = path[end..].find('/') {
        end += i;
        let dir = &path[..end];
        if tree.lookup(dir).is_none() {
            tree.insert(
                dir,
                Kind::Directory,
                Metadata {
                    mtime,
                    ..Metadata::with_mode(0o755)
                },
            )?;
        }
        end += 1;
    }
    Ok(())
}

/// The data of a regular file entry (empty for anything else).
fn file_data(e: &Entry) -> &[u8] {
    match &e.kind {
        EntryKind::File { data } => data,
        _ => &[],
    }
}

/// How to build an extension image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// Sysext (`/usr`, `/opt`) or confext (`/etc`).
    pub class: Class,
    /// Compression, block size and superblock time of the squashfs. `mtime` is also the time
    /// of the extension-release file and of directories made for it.
    pub squashfs: squashfs::Options,
}

impl Default for ImageOptions {
    /// A sysext with the squashfs defaults (zstd 15, 128 KiB blocks, time 0).
    fn default() -> ImageOptions {
        ImageOptions {
            class: Class::Sysext,
            squashfs: squashfs::Options::default(),
        }
    }
}

/// Where the partitions of an extension image are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    /// GPT disk GUID (derived from the root hash).
    pub disk_guid: Uuid,
    /// Image size in bytes.
    pub size: u64,
    /// Data (squashfs), verity hash tree and, if signed, the signature partition.
    pub partitions: Vec<Partition>,
}

impl ImageLayout {
    /// Whether the image has a signature partition.
    pub fn signed(&self) -> bool {
        self.partitions.len() == 3
    }
}

/// A finished extension image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The whole disk image (`NAME.sysext.raw`).
    pub bytes: Vec<u8>,
    /// The verity root hash of the data partition (what is signed).
    pub root_hash: RootHash,
    /// The partitions.
    pub layout: ImageLayout,
}

/// Build the DDI of extension `name` from a layer part holding only the class's
/// directories (see [`split_layer`]): squashfs of the tree plus the extension-release file,
/// verity hash tree, signature of the hex root hash if `signer` is given (without one, the
/// image has no signature partition: see [`ddi::write_unsigned`]), GPT.
///
/// The same input gives the same bytes: the verity salt and superblock UUID are derived
/// from the squashfs image, everything else from the root hash.
///
/// For another file system, make it from [`filesystem_layer`] and pass it to
/// [`image_from_filesystem`], the two halves of this function.
pub fn build_image(
    layer_part: &Layer,
    release: &ExtensionRelease,
    name: &str,
    signer: Option<&Signer>,
    opts: &ImageOptions,
) -> Result<Image, Error> {
    let release_path = check_extension(layer_part, release, name, opts.class)?;
    // The tree straight from the layer part, not from `filesystem_layer` (same content, one
    // copy of the file data less).
    let mut tree = tree_from_layer(layer_part, |_| true)?;
    let mtime = u64::from(opts.squashfs.mtime);
    tree.metadata_mut(tree::NodeId::ROOT).mtime = mtime;
    add_parents(&mut tree, &release_path, mtime)?;
    tree.insert(
        &release_path,
        Kind::File(release.render_as(opts.class).into_bytes()),
        Metadata {
            mtime,
            ..Metadata::with_mode(RELEASE_FILE_MODE)
        },
    )?;
    let squashfs = squashfs::to_bytes(&tree, &opts.squashfs)?;
    drop(tree);
    image_from_filesystem(squashfs, release.architecture, signer)
}

/// Mode of the extension-release file.
const RELEASE_FILE_MODE: u32 = 0o644;

/// What goes into the file system of extension `name`: the layer part plus its
/// `extension-release.NAME` file (0644, root, time `opts.squashfs.mtime`, as are the
/// directories made for it), after the checks [`build_image`] makes.
///
/// This is the input for a file system [`build_image`] does not write itself (erofs by an
/// external `mkfs.erofs`, fed with [`Layer::write_tar`]); its image then goes to
/// [`image_from_filesystem`]. A layer has no entry for the root directory: [`build_image`]
/// gives it time `opts.squashfs.mtime`, which another writer should do too (mkfs.erofs with
/// `SOURCE_DATE_EPOCH` set to it clamps every time there, the fresh root directory's too).
pub fn filesystem_layer(
    layer_part: &Layer,
    release: &ExtensionRelease,
    name: &str,
    opts: &ImageOptions,
) -> Result<Layer, Error> {
    let release_path = check_extension(layer_part, release, name, opts.class)?;
    let text = release.render_as(opts.class).into_bytes();
    let mtime = u64::from(opts.squashfs.mtime);
    let mut entries = layer_part.entries().to_vec();
    entries.push(Entry::file(&release_path, text, RELEASE_FILE_MODE, mtime));
    // Adds the release file's missing parents (0755, root, its time), like `add_parents`.
    Ok(Layer::from_entries(entries)?)
}

/// Check what [`build_image`] and [`filesystem_layer`] are given: a valid name and release
/// data, only paths the class merges, at least one non-directory, no release file of its
/// own. Returns where the extension-release file goes.
fn check_extension(layer_part: &Layer, release: &ExtensionRelease, name: &str, class: Class) -> Result<String, Error> {
    check_name(name)?;
    release.validate()?;
    let outside: Vec<String> = layer_part
        .entries()
        .iter()
        .filter(|e| !class.contains(&e.path))
        .map(|e| e.path.clone())
        .collect();
    if !outside.is_empty() {
        return Err(Error::OutsideExtension {
            name: name.to_owned(),
            class,
            paths: outside,
        });
    }
    if layer_part.entries().iter().all(|e| e.kind == EntryKind::Dir) {
        return Err(Error::Empty {
            name: name.to_owned(),
            class,
        });
    }
    let release_path = class.release_path(name);
    if layer_part.get(&release_path).is_some() {
        return Err(Error::ReleaseFileInLayer {
            name: name.to_owned(),
            path: release_path,
        });
    }
    Ok(release_path)
}

/// The DDI of a finished file system image (squashfs, erofs, …): zero-padded to whole
/// verity blocks, its dm-verity hash tree (salt and superblock UUID derived from the padded
/// image), the signature of the hex root hash if `signer` is given (else no signature
/// partition), GPT with the root partition types of `arch`.
///
/// The same file system image gives the same bytes.
pub fn image_from_filesystem(mut filesystem: Vec<u8>, arch: Arch, signer: Option<&Signer>) -> Result<Image, Error> {
    let padded = filesystem.len().next_multiple_of(verity::BLOCK_SIZE as usize);
    filesystem.resize(padded, 0);
    let data = &filesystem[..];
    let params = verity_params(data);
    let hash_tree = verity::hash_tree(data, data.len() as u64, &params)?;
    let root_hash = hash_tree.root_hash;
    let data_size = data.len() as u64;
    let mut bytes = Vec::new();
    let (disk_guid, size, partitions) = match signer {
        Some(signer) => {
            let signature = signer.sign(root_hash.to_string().as_bytes())?;
            let fingerprint = fingerprint_bytes(&sign::certificate_fingerprint(signer.certificate())?);
            let json = ddi::signature_json(&root_hash, &fingerprint, &signature);
            let input = ddi::Input {
                arch,
                data,
                data_size,
                hash_tree: &hash_tree.hash_device,
                root_hash,
                signature_json: json.as_bytes(),
            };
            let l = ddi::write(input, &mut bytes)?;
            (l.disk_guid, l.size, l.partitions.to_vec())
        }
        None => {
            let l = ddi::write_unsigned(arch, data, data_size, &hash_tree.hash_device, root_hash, &mut bytes)?;
            (l.disk_guid, l.size, l.partitions.to_vec())
        }
    };
    Ok(Image {
        bytes,
        root_hash,
        layout: ImageLayout {
            disk_guid,
            size,
            partitions,
        },
    })
}

/// Verity salt and superblock UUID derived from the file system image, so that the same
/// image gets the same hash tree.
fn verity_params(filesystem: &[u8]) -> Params {
    let digest = Sha256::digest(filesystem);
    let derive = |purpose: &str| {
        Sha256::new()
            .chain_update(purpose)
            .chain_update([0])
            .chain_update(digest)
            .finalize()
    };
    Params::new(
        derive("strata verity salt").to_vec(),
        crate::ids::content_uuid([b"strata verity uuid".as_slice(), &[0], &digest]),
    )
}

/// The 32 bytes of a lowercase-hex SHA-256 fingerprint.
fn fingerprint_bytes(hex: &str) -> [u8; 32] {
    let nibble = |c: u8| (c as char).to_digit(16).expect("certificate_fingerprint gives hex") as u8;
    std::array::from_fn(|i| nibble(hex.as_bytes()[2 * i]) << 4 | nibble(hex.as_bytes()[2 * i + 1]))
}

/// Whether `name` can be an extension's name: its file name stem and its
/// `extension-release.NAME` suffix at once.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName { name: name.to_owned() })
    }
}

#[cfg(test)]
mod tests;
