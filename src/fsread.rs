//! Read a directory tree on the host into a [`Layer`] (for `strata cpio` and benchmarks).
//!
//! Owners, modes, mtimes, symlinks, device nodes, FIFOs and extended attributes are kept;
//! hard links (same device and inode) become [`EntryKind::Hardlink`]s; sockets are skipped
//! (they cannot be archived meaningfully).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use strata_format::layer::{Entry, EntryKind, Layer};

/// Read everything below `root` (not `root` itself).
pub fn read_tree(root: &Path) -> Result<Layer> {
    let mut entries = Vec::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        names.sort();
        for name in names {
            let name = name
                .to_str()
                .with_context(|| format!("{}: a file name is not UTF-8", dir.display()))?
                .to_string();
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let full = root.join(&path);
            let meta = std::fs::symlink_metadata(&full).with_context(|| format!("reading {}", full.display()))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                EntryKind::Dir
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&full).with_context(|| format!("reading link {}", full.display()))?;
                EntryKind::Symlink {
                    target: t
                        .to_str()
                        .with_context(|| format!("{}: link target is not UTF-8", full.display()))?
                        .into(),
                }
            } else if ft.is_file() {
                match inodes.get(&(meta.dev(), meta.ino())) {
                    Some(first) if meta.nlink() > 1 => EntryKind::Hardlink { target: first.clone() },
                    _ => {
                        if meta.nlink() > 1 {
                            inodes.insert((meta.dev(), meta.ino()), path.clone());
                        }
                        EntryKind::File {
                            data: std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?,
                        }
                    }
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                let rdev = meta.rdev();
                let (major, minor) = (nix::sys::stat::major(rdev) as u32, nix::sys::stat::minor(rdev) as u32);
                if ft.is_char_device() {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            } else if ft.is_fifo() {
                EntryKind::Fifo
            } else {
                continue;
            };
            let mut xattrs = std::collections::BTreeMap::new();
            if !ft.is_symlink() {
                for attr in xattr::list(&full).with_context(|| format!("listing xattrs of {}", full.display()))? {
                    let Some(key) = attr.to_str() else { continue };
                    if let Some(value) = xattr::get(&full, &attr)
                        .with_context(|| format!("reading xattr {key} of {}", full.display()))?
                    {
                        xattrs.insert(key.to_string(), value);
                    }
                }
            }
            entries.push(Entry {
                path,
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime().max(0) as u64,
                xattrs,
            });
        }
    }
    Ok(Layer::from_entries(entries)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_links_and_hardlinks() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/a"), b"data").unwrap();
        std::fs::hard_link(r.join("usr/bin/a"), r.join("usr/bin/b")).unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        let l = read_tree(r).unwrap();
        let paths: Vec<&str> = l.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bin", "usr", "usr/bin", "usr/bin/a", "usr/bin/b"]);
        assert_eq!(
            l.get("usr/bin/b").unwrap().kind,
            EntryKind::Hardlink {
                target: "usr/bin/a".into()
            }
        );
        assert_eq!(
            l.get("bin").unwrap().kind,
            EntryKind::Symlink {
                target: "usr/bin".into()
            }
        );
    }
}
