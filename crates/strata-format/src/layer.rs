//! The in-memory model of a file system layer, and its normalized tar form.
//!
//! A [`Layer`] is a sorted list of entries with relative paths (no leading `/` or `./`),
//! parents before children, each hard-link group resolved so the first name (in sort order)
//! holds the data and later names are [`EntryKind::Hardlink`]s to it. Everything strata
//! writes (OCI layer tars, cpio archives, squashfs) is produced from this one model, so the
//! normalization happens once.
//!
//! The tar form is what goes into the OCI store: GNU headers, entries in sorted order,
//! numeric owners only (no user/group names), mtimes as given (clamp them first with
//! [`Layer::clamp_mtimes`]), extended attributes as PAX `SCHILY.xattr.*` records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};

/// Errors from building, reading or writing a layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("tar entry `{path}`: unsupported entry type {kind:?}")]
    UnsupportedType { path: String, kind: u8 },
    #[error("tar entry `{path}`: path is not valid UTF-8")]
    NonUtf8Path { path: String },
    #[error("tar entry `{path}`: path escapes the layer root")]
    UnsafePath { path: String },
    #[error("`{path}` is a hard link to `{target}`, which is not a regular file in the layer")]
    DanglingHardlink { path: String, target: String },
    #[error("reading tar entry `{path}`")]
    ReadEntry { path: String, source: io::Error },
    #[error("reading tar stream")]
    Read(#[source] io::Error),
    /// The tar stream is longer than [`ReadOptions::max_size`] allows (a decompression bomb,
    /// or a layer far beyond any real one).
    #[error("the layer tar is larger than the limit of {limit} bytes (at entry `{path}`)")]
    TooLarge { path: String, limit: u64 },
    #[error("writing tar entry `{path}`")]
    Write { path: String, source: io::Error },
}

/// One file system object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, `/`-separated, no leading `/` or `./`, never empty.
    pub path: String,
    pub kind: EntryKind,
    /// Permission and special bits (`0o7777`); the file type is in `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: u64,
    /// Extended attributes, e.g. `security.capability`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// The type of an [`Entry`] and its type-specific payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        data: Vec<u8>,
    },
    /// Another name for the regular file at `target` (an earlier entry of the same layer).
    Hardlink {
        target: String,
    },
    Symlink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

impl Entry {
    /// A directory owned by root.
    pub fn dir(path: &str, mode: u32, mtime: u64) -> Entry {
        Entry::new(path, EntryKind::Dir, mode, mtime)
    }

    /// A regular file owned by root.
    pub fn file(path: &str, data: impl Into<Vec<u8>>, mode: u32, mtime: u64) -> Entry {
        Entry::new(path, EntryKind::File { data: data.into() }, mode, mtime)
    }

    /// A symbolic link owned by root.
    pub fn symlink(path: &str, target: &str, mtime: u64) -> Entry {
        Entry::new(path, EntryKind::Symlink { target: target.into() }, 0o777, mtime)
    }

    /// An entry owned by root with no extended attributes.
    pub fn new(path: &str, kind: EntryKind, mode: u32, mtime: u64) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }

    /// The size of the file data (0 for everything but regular files).
    pub fn data_len(&self) -> u64 {
        match &self.kind {
            EntryKind::File { data } => data.len() as u64,
            _ => 0,
        }
    }
}

/// A normalized file system layer. See the module documentation for the invariants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    entries: Vec<Entry>,
}

/// How [`Layer::read_tar`] maps tar paths into the layer.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Drop this leading directory from every path (e.g. `root` for a tar of `/root` from a
    /// container); the directory entry itself is dropped too.
    pub strip_prefix: Option<String>,
    /// Refuse a tar stream longer than this many bytes (headers, data and padding, as read):
    /// the layer model holds every file's data in memory, so this bounds what an untrusted
    /// layer can make us allocate. None: no limit (a tar we made ourselves).
    pub max_size: Option<u64>,
}

impl Layer {
    /// Build a layer from entries in any order. Later duplicates of a path replace earlier
    /// ones; missing parent directories are added (mode 0755, root, the child's mtime);
    /// hard-link groups are re-rooted at their first name in sort order.
    pub fn from_entries(entries: Vec<Entry>) -> Result<Layer, Error> {
        let mut by_path: BTreeMap<String, Entry> = BTreeMap::new();
        for e in entries {
            by_path.insert(e.path.clone(), e);
        }
        // Add missing parents.
        let mut missing = Vec::new();
        for e in by_path.values() {
            let mut p = e.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !by_path.contains_key(parent) {
                    missing.push(Entry::dir(parent, 0o755, e.mtime));
                }
                p = parent;
            }
        }
        for m in missing {
            by_path.entry(m.path.clone()).or_insert(m);
        }
        let mut entries: Vec<Entry> = by_path.into_values().collect();
        reroot_hardlinks(&mut entries)?;
        Ok(Layer { entries })
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Consume the layer, returning its sorted entries.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Total size of regular file data.
    pub fn data_size(&self) -> u64 {
        self.entries.iter().map(Entry::data_len).sum()
    }

    /// Set every mtime later than `epoch` to `epoch` (SOURCE_DATE_EPOCH semantics).
    pub fn clamp_mtimes(&mut self, epoch: u64) {
        for e in &mut self.entries {
            e.mtime = e.mtime.min(epoch);
        }
    }

    /// Remove every entry for which `remove` returns true, together with everything below a
    /// removed directory. Hard links whose data-holding name is removed are re-rooted at
    /// their next name. Returns the removed paths (directories once, not their contents).
    pub fn remove_where(&mut self, mut remove: impl FnMut(&Entry) -> bool) -> Vec<String> {
        let mut removed_roots: Vec<String> = Vec::new();
        // Every removed path. Entries sort by bytes, not depth first (`a-b` and `a.b` sort between
        // `a` and `a/c`), so the last removed directory is not necessarily the one an entry is in;
        // parents come before children, so looking up the parent is enough.
        let mut removed: HashSet<String> = HashSet::new();
        let mut kept = Vec::with_capacity(self.entries.len());
        let mut moved_data: HashMap<String, String> = HashMap::new(); // old holder -> new holder
        let mut orphan_data: HashMap<String, (Vec<u8>, Entry)> = HashMap::new();
        for e in std::mem::take(&mut self.entries) {
            let under_removed = e
                .path
                .rsplit_once('/')
                .is_some_and(|(parent, _)| removed.contains(parent));
            if under_removed || remove(&e) {
                if !under_removed {
                    removed_roots.push(e.path.clone());
                }
                removed.insert(e.path.clone());
                if let EntryKind::File { data } = &e.kind {
                    orphan_data.insert(e.path.clone(), (data.clone(), e.clone()));
                }
                continue;
            }
            let mut e = e;
            if let EntryKind::Hardlink { target } = &e.kind {
                if let Some(new) = moved_data.get(target) {
                    e.kind = EntryKind::Hardlink { target: new.clone() };
                } else if let Some((data, _)) = orphan_data.remove(target) {
                    moved_data.insert(target.clone(), e.path.clone());
                    e.kind = EntryKind::File { data };
                }
            }
            kept.push(e);
        }
        self.entries = kept;
        removed_roots
    }

    /// Read a tar stream (as podman's archive endpoint or an OCI layer gives it).
    pub fn read_tar(r: impl Read, opts: &ReadOptions) -> Result<Layer, Error> {
        let limit = opts.max_size.unwrap_or(u64::MAX);
        let exceeded = std::rc::Rc::new(std::cell::Cell::new(false));
        let counted = Counted {
            inner: r,
            read: 0,
            limit,
            exceeded: exceeded.clone(),
        };
        let mut archive = tar::Archive::new(counted);
        let mut entries = Vec::new();
        let mut last = String::from("<start of archive>");
        let too_large = |path: &str| Error::TooLarge {
            path: path.to_string(),
            limit,
        };
        // Whatever the tar crate made of the counter's error, it is the limit.
        let over = |_: &io::Error| exceeded.get();
        for item in archive.entries().map_err(Error::Read)? {
            let mut t = match item {
                Ok(t) => t,
                Err(e) if over(&e) => return Err(too_large(&last)),
                Err(e) => return Err(Error::Read(e)),
            };
            let raw_path = t.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw_path).into_owned();
            last.clone_from(&shown);
            // A header may claim any size; only what is read is counted, but nothing is
            // reserved beyond the limit either.
            if t.size() > limit {
                return Err(too_large(&shown));
            }
            let Some(path) = clean_path(&raw_path, opts.strip_prefix.as_deref(), &shown)? else {
                continue;
            };
            let header = t.header();
            let mode = header.mode().map_err(|e| Error::ReadEntry {
                path: shown.clone(),
                source: e,
            })? & 0o7777;
            let uid = header.uid().map_err(|e| Error::ReadEntry {
                path: shown.clone(),
                source: e,
            })? as u32;
            let gid = header.gid().map_err(|e| Error::ReadEntry {
                path: shown.clone(),
                source: e,
            })? as u32;
            let mtime = header.mtime().map_err(|e| Error::ReadEntry {
                path: shown.clone(),
                source: e,
            })?;
            let entry_type = header.entry_type();
            let link_name = || -> Result<String, Error> {
                let l = t.link_name_bytes().ok_or_else(|| Error::ReadEntry {
                    path: shown.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "link without target"),
                })?;
                String::from_utf8(l.into_owned()).map_err(|_| Error::NonUtf8Path { path: shown.clone() })
            };
            let device = |h: &tar::Header| -> (u32, u32) {
                (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                )
            };
            let kind = match entry_type {
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink { target: link_name()? },
                tar::EntryType::Link => {
                    let target = link_name()?;
                    let Some(target) = clean_path(target.as_bytes(), opts.strip_prefix.as_deref(), &shown)? else {
                        return Err(Error::DanglingHardlink { path: shown, target });
                    };
                    EntryKind::Hardlink { target }
                }
                tar::EntryType::Char => {
                    let (major, minor) = device(header);
                    EntryKind::CharDevice { major, minor }
                }
                tar::EntryType::Block => {
                    let (major, minor) = device(header);
                    EntryKind::BlockDevice { major, minor }
                }
                tar::EntryType::Fifo => EntryKind::Fifo,
                tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File { data: Vec::new() },
                other => {
                    return Err(Error::UnsupportedType {
                        path: shown,
                        kind: other.as_byte(),
                    });
                }
            };
            let mut xattrs = BTreeMap::new();
            if let Some(exts) = t.pax_extensions().map_err(|e| Error::ReadEntry {
                path: shown.clone(),
                source: e,
            })? {
                for ext in exts {
                    let ext = ext.map_err(|e| Error::ReadEntry {
                        path: shown.clone(),
                        source: e,
                    })?;
                    if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                        xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                    }
                }
            }
            let kind = match kind {
                EntryKind::File { .. } => {
                    let mut data = Vec::with_capacity(usize::try_from(t.size()).unwrap_or(0));
                    t.read_to_end(&mut data).map_err(|e| {
                        if over(&e) {
                            too_large(&shown)
                        } else {
                            Error::ReadEntry {
                                path: shown.clone(),
                                source: e,
                            }
                        }
                    })?;
                    EntryKind::File { data }
                }
                k => k,
            };
            entries.push(Entry {
                path,
                kind,
                mode,
                uid,
                gid,
                mtime,
                xattrs,
            });
        }
        Layer::from_entries(entries)
    }

    /// Write the layer as a normalized tar stream (see the module documentation).
    pub fn write_tar(&self, w: impl Write) -> Result<(), Error> {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Complete);
        for e in &self.entries {
            let werr = |source| Error::Write {
                path: e.path.clone(),
                source,
            };
            if !e.xattrs.is_empty() {
                let records: Vec<(String, &[u8])> = e
                    .xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                    .collect();
                b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                    .map_err(werr)?;
            }
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_uid(e.uid.into());
            h.set_gid(e.gid.into());
            h.set_mtime(e.mtime);
            h.set_size(0);
            let path = match e.kind {
                EntryKind::Dir => format!("{}/", e.path),
                _ => e.path.clone(),
            };
            match &e.kind {
                EntryKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, &path, io::empty()).map_err(werr)?;
                }
                EntryKind::File { data } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, &path, data.as_slice()).map_err(werr)?;
                }
                EntryKind::Hardlink { target } => {
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, &path, target).map_err(werr)?;
                }
                EntryKind::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, &path, target).map_err(werr)?;
                }
                EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                    h.set_entry_type(if matches!(e.kind, EntryKind::CharDevice { .. }) {
                        tar::EntryType::Char
                    } else {
                        tar::EntryType::Block
                    });
                    h.set_device_major(*major).map_err(werr)?;
                    h.set_device_minor(*minor).map_err(werr)?;
                    b.append_data(&mut h, &path, io::empty()).map_err(werr)?;
                }
                EntryKind::Fifo => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    b.append_data(&mut h, &path, io::empty()).map_err(werr)?;
                }
            }
        }
        b.into_inner()
            .map_err(|source| Error::Write {
                path: "<end of archive>".into(),
                source,
            })?
            .flush()
            .map_err(|source| Error::Write {
                path: "<end of archive>".into(),
                source,
            })?;
        Ok(())
    }
}

/// A reader that fails (and sets `exceeded`) once more than `limit` bytes went through it.
struct Counted<R> {
    inner: R,
    read: u64,
    limit: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read >= self.limit {
            // One byte more than the limit tells a stream that ends exactly at it from one
            // that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other(format!("more than {} bytes", self.limit)))
                }
            };
        }
        let room = usize::try_from(self.limit - self.read).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        let got = self.inner.read(&mut buf[..n])?;
        self.read += got as u64;
        Ok(got)
    }
}

/// Prefix of an OCI whiteout entry: `dir/.wh.name` deletes `dir/name` from lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";

impl Layer {
    /// The changes from `parent` to `self` as an OCI layer diff: entries that are new or
    /// differ (in type, content, mode, owner, mtime or xattrs), the parent directories they
    /// need, and a whiteout (`.wh.<name>`, an empty regular file) for each path of `parent`
    /// that `self` no longer has (one whiteout for a removed directory, not one per child).
    pub fn diff_from(&self, parent: &Layer) -> Layer {
        let mut out: Vec<Entry> = Vec::new();
        for e in &self.entries {
            match parent.get(&e.path) {
                Some(p) if p == e => {}
                _ => out.push(e.clone()),
            }
        }
        // Paths of `parent` that go with their whole subtree: removed ones (whited out) and
        // directories that `self` replaces by a non-directory (applying the replacement removes
        // the directory with its contents; a whiteout below it would be an entry below a
        // non-directory). Entries sort by bytes, not depth first, so look up the parent rather
        // than compare with the last one seen.
        let mut gone: HashSet<&str> = HashSet::new();
        for p in &parent.entries {
            if p.path.rsplit_once('/').is_some_and(|(d, _)| gone.contains(d)) {
                gone.insert(&p.path);
                continue;
            }
            match self.get(&p.path) {
                None => {
                    let (dir, name) = p.path.rsplit_once('/').map_or(("", p.path.as_str()), |(d, n)| (d, n));
                    let wh = if dir.is_empty() {
                        format!("{WHITEOUT_PREFIX}{name}")
                    } else {
                        format!("{dir}/{WHITEOUT_PREFIX}{name}")
                    };
                    out.push(Entry::file(&wh, Vec::new(), 0o644, p.mtime));
                    gone.insert(&p.path);
                }
                Some(e) if p.kind == EntryKind::Dir && e.kind != EntryKind::Dir => {
                    gone.insert(&p.path);
                }
                Some(_) => {}
            }
        }
        // Hard links into unchanged files must carry the data themselves in the diff.
        let present: HashSet<String> = out.iter().map(|e| e.path.clone()).collect();
        for e in &mut out {
            if let EntryKind::Hardlink { target } = &e.kind
                && !present.contains(target)
                && let Some(Entry {
                    kind: EntryKind::File { data },
                    ..
                }) = self.get(target)
            {
                e.kind = EntryKind::File { data: data.clone() };
            }
        }
        // Parents of changed entries come from `self` (with their real metadata).
        let mut parents = Vec::new();
        for e in &out {
            let mut p = e.path.as_str();
            while let Some((parent_path, _)) = p.rsplit_once('/') {
                if let Some(d) = self.get(parent_path) {
                    parents.push(d.clone());
                }
                p = parent_path;
            }
        }
        out.extend(parents);
        Layer::from_entries(out).expect("a diff of two valid layers is valid")
    }
}

/// Normalize a tar path: strip `./` and `/`, the optional prefix directory, reject `..`.
/// Returns None for the root itself (or the stripped prefix directory).
fn clean_path(raw: &[u8], strip_prefix: Option<&str>, shown: &str) -> Result<Option<String>, Error> {
    let s = std::str::from_utf8(raw).map_err(|_| Error::NonUtf8Path { path: shown.into() })?;
    let mut parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(Error::UnsafePath { path: shown.into() });
    }
    if let Some(prefix) = strip_prefix {
        let prefix_parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        if parts.len() >= prefix_parts.len() && parts[..prefix_parts.len()] == prefix_parts[..] {
            parts.drain(..prefix_parts.len());
        } else {
            return Err(Error::UnsafePath { path: shown.into() });
        }
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join("/")) })
}

/// Make each hard-link group's first name (in sort order) the data holder.
fn reroot_hardlinks(entries: &mut [Entry]) -> Result<(), Error> {
    let index: HashMap<String, usize> = entries.iter().enumerate().map(|(i, e)| (e.path.clone(), i)).collect();
    // group: holder index -> all link indices
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let EntryKind::Hardlink { target } = &e.kind {
            // Follow chains (a link to a link) to the data holder.
            let mut t = target.clone();
            let mut hops = 0;
            let holder = loop {
                let Some(&ti) = index.get(&t) else {
                    return Err(Error::DanglingHardlink {
                        path: e.path.clone(),
                        target: target.clone(),
                    });
                };
                match &entries[ti].kind {
                    EntryKind::File { .. } => break ti,
                    EntryKind::Hardlink { target: next } if hops < entries.len() => {
                        t = next.clone();
                        hops += 1;
                    }
                    _ => {
                        return Err(Error::DanglingHardlink {
                            path: e.path.clone(),
                            target: target.clone(),
                        });
                    }
                }
            };
            groups.entry(holder).or_default().push(i);
        }
    }
    for (holder, links) in groups {
        let first = links.iter().copied().chain([holder]).min().expect("non-empty");
        if first != holder {
            let data = std::mem::replace(
                &mut entries[holder].kind,
                EntryKind::Hardlink {
                    target: entries[first].path.clone(),
                },
            );
            entries[first].kind = data;
            // All names share one inode: keep the holder's metadata on the new holder.
            let (mode, uid, gid, mtime, xattrs) = {
                let h = &entries[holder];
                (h.mode, h.uid, h.gid, h.mtime, h.xattrs.clone())
            };
            let f = &mut entries[first];
            (f.mode, f.uid, f.gid, f.mtime, f.xattrs) = (mode, uid, gid, mtime, xattrs);
        }
        let first_path = entries[first].path.clone();
        for l in links {
            if l != first {
                entries[l].kind = EntryKind::Hardlink {
                    target: first_path.clone(),
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
