//! Read a directory into a [`Tree`] and write it as a squashfs image, for `bench/squashfs.sh`.
//!
//! Usage: `squashfs_bench SRC_DIR OUT_IMAGE [ZSTD_LEVEL]` (default level 15, as mksquashfs).
//! Owners, modes, times, symlinks, devices and hardlinks are read; extended attributes are
//! not (std has no xattr API), which mksquashfs also skips for trees without any.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use strata_format::squashfs::{self, Compression, Options};
use strata_format::tree::{Kind, Metadata, Tree};

fn metadata(st: &std::fs::Metadata) -> Metadata {
    Metadata {
        mode: st.mode() & 0o7777,
        uid: st.uid(),
        gid: st.gid(),
        mtime: st.mtime().max(0) as u64,
        ..Metadata::default()
    }
}

/// Add the contents of `dir` (at tree path `prefix`) to the tree, in name order.
fn read_dir(tree: &mut Tree, dir: &Path, prefix: &str, seen: &mut HashMap<(u64, u64), String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().into_string().expect("UTF-8 file names");
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let st = entry.metadata()?;
        let ft = st.file_type();
        if !ft.is_dir() && st.nlink() > 1 {
            if let Some(first) = seen.get(&(st.dev(), st.ino())) {
                tree.link(&path, first).expect("hardlink target was added");
                continue;
            }
            seen.insert((st.dev(), st.ino()), path.clone());
        }
        let kind = if ft.is_dir() {
            Kind::Directory
        } else if ft.is_file() {
            Kind::File(std::fs::read(entry.path())?)
        } else if ft.is_symlink() {
            Kind::Symlink(
                std::fs::read_link(entry.path())?
                    .into_os_string()
                    .into_string()
                    .expect("UTF-8 target"),
            )
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = st.rdev();
            let (major, minor) = (
                ((rdev >> 8) & 0xfff) as u32,
                ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32,
            );
            if ft.is_char_device() {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        tree.insert(&path, kind, metadata(&st))
            .expect("paths come from a real directory");
        if ft.is_dir() {
            read_dir(tree, &entry.path(), &path, seen)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, src, out, rest @ ..] = args.as_slice() else {
        return Err("usage: squashfs_bench SRC_DIR OUT_IMAGE [ZSTD_LEVEL]".into());
    };
    let level = rest.first().map_or(Ok(15), |l| l.parse())?;
    let start = Instant::now();
    let mut tree = Tree::new(metadata(&std::fs::metadata(src)?));
    read_dir(&mut tree, Path::new(src), "", &mut HashMap::new())?;
    let read = start.elapsed();
    let opts = Options {
        compression: Compression::Zstd { level },
        block_size: 128 * 1024,
        ..Options::default()
    };
    let file = std::fs::File::create(out)?;
    squashfs::write(&tree, &opts, std::io::BufWriter::new(file))?;
    eprintln!(
        "read {:?}, total {:?}, {} nodes",
        read,
        start.elapsed(),
        tree.node_count()
    );
    Ok(())
}
