//! Cross-check: GNU cpio lists and extracts our archives to the same tree.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use strata_format::cpio;
use strata_format::layer::{Entry, EntryKind, Layer};

fn sample() -> Layer {
    Layer::from_entries(vec![
        Entry::file("etc/initrd-release", b"ID=debian\n".to_vec(), 0o644, 1_700_000_000),
        Entry::symlink("init", "usr/lib/systemd/systemd", 1_700_000_000),
        Entry::file("usr/bin/a", b"same inode".to_vec(), 0o755, 1_700_000_000),
        Entry::new(
            "usr/bin/b",
            EntryKind::Hardlink {
                target: "usr/bin/a".into(),
            },
            0o755,
            1_700_000_000,
        ),
        Entry::file(
            &format!("usr/share/{0}/{0}/{0}", "n".repeat(100)),
            vec![7u8; 5000],
            0o600,
            1_600_000_000,
        ),
        Entry::file("usr/empty", Vec::new(), 0o640, 1_700_000_000),
        Entry::new(
            "dev/console",
            EntryKind::CharDevice { major: 5, minor: 1 },
            0o600,
            1_700_000_000,
        ),
    ])
    .unwrap()
}

#[test]
#[ignore = "reference tools: needs cpio (run with --include-ignored; ci/test.sh does)"]
fn gnu_cpio_lists_our_archive() {
    let cpio_bin = support::tool("cpio");
    let mut archive = Vec::new();
    cpio::write(&sample(), &mut archive).unwrap();
    let out = Command::new(&cpio_bin)
        .args(["-t", "--quiet", "-v"])
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&archive)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "cpio -t failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    // Names in order: the last column, except for symlinks ("name -> target").
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split(" -> ").next().unwrap().rsplit(' ').next().unwrap())
        .collect();
    let layer = sample();
    let expected: Vec<&str> = layer.entries().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, expected, "listing:\n{listing}");
    assert!(listing.contains("crw-------"), "{listing}");
    assert!(
        listing.contains("5,   1") || listing.contains("5, 1"),
        "device numbers missing:\n{listing}"
    );
    assert!(listing.contains("init -> usr/lib/systemd/systemd"), "{listing}");
}

#[test]
#[ignore = "reference tools: needs cpio (run with --include-ignored; ci/test.sh does)"]
fn gnu_cpio_extracts_the_same_tree() {
    let cpio_bin = support::tool("cpio");
    let layer = sample();
    let mut archive = Vec::new();
    cpio::write(&layer, &mut archive).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&cpio_bin)
        .args([
            "-i",
            "--quiet",
            "-d",
            "-m",
            "--no-absolute-filenames",
            "--nonmatching",
            "dev/*",
        ])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&archive).unwrap();
    }
    assert!(child.wait().unwrap().success());
    for e in layer.entries().iter().filter(|e| !e.path.starts_with("dev")) {
        let p = dir.path().join(&e.path);
        let meta = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{}: {err}", e.path));
        match &e.kind {
            EntryKind::File { data } => {
                assert_eq!(&std::fs::read(&p).unwrap(), data, "{}", e.path);
                assert_eq!(meta.permissions().mode() & 0o7777, e.mode, "{}", e.path);
                assert_eq!(meta.mtime() as u64, e.mtime, "{}", e.path);
            }
            EntryKind::Hardlink { target } => {
                let t = std::fs::metadata(dir.path().join(target)).unwrap();
                assert_eq!(meta.ino(), t.ino(), "{} must be a hard link to {target}", e.path);
                assert_eq!(std::fs::read(&p).unwrap(), b"same inode");
            }
            EntryKind::Symlink { target } => {
                assert_eq!(std::fs::read_link(&p).unwrap().to_str().unwrap(), target);
            }
            EntryKind::Dir => assert!(meta.is_dir()),
            _ => {}
        }
    }
}
