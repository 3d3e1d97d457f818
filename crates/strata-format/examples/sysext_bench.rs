//! Read a directory into a [`Layer`] and write it as a whole extension image (squashfs →
//! verity → signature → GPT), for `bench/sysext.sh`.
//!
//! Usage: `sysext_bench SRC_DIR OUT_IMAGE [NAME [KEY_PEM CERT_PEM]]`. SRC_DIR is the root
//! of the extension (it holds `usr/`, maybe `opt/`); NAME defaults to `bench`. Without a key
//! and certificate the image is unsigned (no signature partition). The extension-release
//! says `ID=debian`, `VERSION_ID=13`, `ARCHITECTURE=x86-64`, `SYSEXT_SCOPE=initrd system`.
//! Owners, modes, times, symlinks, devices and hardlinks are read; extended attributes are
//! not (std has no xattr API).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use strata_format::ddi::Arch;
use strata_format::layer::{Entry, EntryKind, Layer};
use strata_format::sign::Signer;
use strata_format::sysext::{self, ExtensionRelease, ImageOptions};

/// Append the entries below `dir` (at layer path `prefix`) to `out`.
fn read_dir(
    dir: &Path,
    prefix: &str,
    seen: &mut HashMap<(u64, u64), String>,
    out: &mut Vec<Entry>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().into_string().expect("UTF-8 file names");
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let st = entry.metadata()?;
        let ft = st.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if let Some(first) = seen.get(&(st.dev(), st.ino())).filter(|_| st.nlink() > 1) {
            EntryKind::Hardlink { target: first.clone() }
        } else if ft.is_file() {
            if st.nlink() > 1 {
                seen.insert((st.dev(), st.ino()), path.clone());
            }
            EntryKind::File {
                data: std::fs::read(entry.path())?,
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            EntryKind::Symlink {
                target: target.into_os_string().into_string().expect("UTF-8 target"),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = st.rdev();
            let (major, minor) = (
                ((rdev >> 8) & 0xfff) as u32,
                ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32,
            );
            if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else {
            EntryKind::Fifo
        };
        let is_dir = kind == EntryKind::Dir;
        out.push(Entry {
            path: path.clone(),
            kind,
            mode: st.mode() & 0o7777,
            uid: st.uid(),
            gid: st.gid(),
            mtime: st.mtime().max(0) as u64,
            xattrs: Default::default(),
        });
        if is_dir {
            read_dir(&entry.path(), &path, seen, out)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (src, out, rest) = match args.as_slice() {
        [_, src, out, rest @ ..] => (src, out, rest),
        _ => return Err("usage: sysext_bench SRC_DIR OUT_IMAGE [NAME [KEY_PEM CERT_PEM]]".into()),
    };
    let name = rest.first().map_or("bench", String::as_str);
    let signer = match rest.get(1..3) {
        Some([key, cert]) => Some(Signer::from_pem(&std::fs::read(key)?, &std::fs::read(cert)?)?),
        _ => None,
    };
    let start = Instant::now();
    let mut entries = Vec::new();
    read_dir(Path::new(src), "", &mut HashMap::new(), &mut entries)?;
    // Hard links may have been met before their data-holding name: from_entries re-roots them.
    let layer = Layer::from_entries(entries)?;
    let read = start.elapsed();
    let release = ExtensionRelease {
        id: "debian".into(),
        version_id: Some("13".into()),
        sysext_level: None,
        architecture: Arch::X86_64,
        scope: vec!["initrd".into(), "system".into()],
        extra: Vec::new(),
    };
    let image = sysext::build_image(&layer, &release, name, signer.as_ref(), &ImageOptions::default())?;
    std::fs::write(out, &image.bytes)?;
    eprintln!(
        "read {read:?}, total {:?}, {} entries, root hash {}, {} bytes",
        start.elapsed(),
        layer.entries().len(),
        image.root_hash,
        image.bytes.len()
    );
    Ok(())
}
