//! Cross-checks of the squashfs writer against squashfs-tools' `unsquashfs` (and `getfattr`
//! for extended attributes): what it lists and what it extracts must be the tree we wrote.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use strata_format::squashfs::{self, Compression, Options};
use strata_format::tree::{Error as TreeError, Kind, Metadata, Tree};

fn meta(mode: u32, uid: u32, gid: u32, mtime: u64) -> Metadata {
    Metadata {
        mode,
        uid,
        gid,
        mtime,
        ..Metadata::default()
    }
}

fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|uids| uids.split_whitespace().nth(1) == Some("0"))
}

/// A tree with every kind of node, hardlinks, xattrs, owners, holes and multi-block files.
fn sample(devices: bool) -> Tree {
    let t0 = 1_700_000_000;
    let mut tree = Tree::new(meta(0o755, 0, 0, t0));
    for dir in [
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib/empty",
        "usr/share",
        "usr/share/doc",
    ] {
        tree.insert(dir, Kind::Directory, meta(0o755, 0, 0, t0 + 1)).unwrap();
    }
    tree.insert("usr/share/doc/sticky", Kind::Directory, meta(0o1777, 0, 0, t0))
        .unwrap();
    let mut ping = meta(0o4755, 0, 0, t0 + 2);
    ping.xattrs.insert(
        "security.capability".into(),
        vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    ping.xattrs.insert("user.note".into(), b"hello".to_vec());
    tree.insert("usr/bin/ping", Kind::File(noise(70_000, 1)), ping).unwrap();
    // Several blocks, a tail block, compressible text.
    let text: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    tree.insert("usr/share/doc/big.txt", Kind::File(text), meta(0o644, 0, 0, t0 + 3))
        .unwrap();
    // Exactly one block, and a file of zeros with a short tail.
    tree.insert("usr/lib/one-block", Kind::File(noise(131072, 9)), meta(0o644, 0, 0, t0))
        .unwrap();
    let mut holes = vec![0u8; 3 * 131072 + 17];
    holes[131072 + 5] = 1;
    tree.insert("usr/lib/holes", Kind::File(holes), meta(0o600, 0, 0, t0))
        .unwrap();
    tree.insert("usr/lib/empty-file", Kind::File(Vec::new()), meta(0o644, 0, 0, t0))
        .unwrap();
    for i in 0..300 {
        let data = format!("small file {i}\n").repeat(i % 7 + 1).into_bytes();
        tree.insert(
            &format!("usr/lib/f{i:03}"),
            Kind::File(data),
            meta(0o644, i as u32 % 3, 50, t0 + i as u64),
        )
        .unwrap();
    }
    // Same contents as f001: stored once, still two files.
    tree.insert(
        "usr/lib/copy-of-f001",
        Kind::File(b"small file 1\nsmall file 1\n".to_vec()),
        meta(0o640, 7, 8, t0),
    )
    .unwrap();
    tree.link("usr/bin/ping6", "usr/bin/ping").unwrap();
    tree.link("usr/lib/ping-again", "usr/bin/ping").unwrap();
    tree.insert("usr/bin/sh", Kind::Symlink("dash".into()), meta(0o777, 0, 0, t0))
        .unwrap();
    tree.insert(
        "usr/lib/abs",
        Kind::Symlink("/usr/share/doc/big.txt".into()),
        meta(0o777, 0, 0, t0),
    )
    .unwrap();
    tree.insert("usr/fifo", Kind::Fifo, meta(0o644, 1000, 1000, t0))
        .unwrap();
    tree.insert("usr/sock", Kind::Socket, meta(0o755, 0, 0, t0)).unwrap();
    if devices {
        tree.insert(
            "usr/null",
            Kind::CharDevice { major: 1, minor: 3 },
            meta(0o666, 0, 0, t0),
        )
        .unwrap();
        tree.insert(
            "usr/sda",
            Kind::BlockDevice {
                major: 8,
                minor: 300_000,
            },
            meta(0o660, 0, 6, t0),
        )
        .unwrap();
        tree.link("usr/null2", "usr/null").unwrap();
    }
    tree
}

fn write_image(tree: &Tree, opts: &Options, dir: &Path) -> PathBuf {
    let path = dir.join("image.squashfs");
    let file = std::fs::File::create(&path).unwrap();
    squashfs::write(tree, opts, std::io::BufWriter::new(file)).unwrap();
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode_string(kind: &Kind, mode: u32) -> String {
    let t = match kind {
        Kind::Directory => 'd',
        Kind::File(_) => '-',
        Kind::Symlink(_) => 'l',
        Kind::CharDevice { .. } => 'c',
        Kind::BlockDevice { .. } => 'b',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
    };
    let mut s = String::from(t);
    for (shift, special, lower, upper) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `unsquashfs -lln` lines as (path → "mode uid/gid size"), the `squashfs-root` prefix gone.
fn listing(image: &Path, unsquashfs: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new(unsquashfs).arg("-lln").arg(image).env("TZ", "UTC"));
    out.lines()
        .filter_map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let is_date = |t: &&str| {
                t.len() == 10
                    && t.bytes().enumerate().all(|(i, b)| {
                        if i == 4 || i == 7 {
                            b == b'-'
                        } else {
                            b.is_ascii_digit()
                        }
                    })
            };
            let date = tokens.iter().skip(2).position(is_date)? + 2;
            let path = tokens[date + 2..].join(" ");
            let path = path.strip_prefix("squashfs-root")?.trim_start_matches('/').to_owned();
            // A directory's size is that of its squashfs listing, not something a tree has.
            let size = if tokens[0].starts_with('d') {
                String::new()
            } else {
                tokens[2..date].concat()
            };
            Some((
                path,
                format!(
                    "{} {} {} {} {}",
                    tokens[0],
                    tokens[1],
                    size,
                    tokens[date],
                    tokens[date + 1]
                ),
            ))
        })
        .collect()
}

fn expected_listing(tree: &Tree) -> BTreeMap<String, String> {
    let mut paths = tree.walk();
    paths.insert(0, (String::new(), strata_format::tree::NodeId::ROOT));
    paths
        .into_iter()
        .map(|(path, id)| {
            let node = tree.node(id);
            let m = node.metadata();
            let size = match node.kind() {
                Kind::File(data) => data.len().to_string(),
                Kind::Symlink(target) => target.len().to_string(),
                // `unsquashfs -lls` splits the stored number the old 8:8 way (the kernel and
                // `unsquashfs -d` use Linux's 12:20 split), so large minors spill over.
                Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                    let stored = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                    format!("{},{}", stored >> 8, stored & 0xff)
                }
                Kind::Fifo | Kind::Socket => "0".to_owned(),
                Kind::Directory => String::new(),
            };
            let time = chrono_utc(m.mtime);
            let path = match node.kind() {
                Kind::Symlink(target) => format!("{path} -> {target}"),
                _ => path,
            };
            (
                path,
                format!("{} {}/{} {size} {time}", mode_string(node.kind(), m.mode), m.uid, m.gid),
            )
        })
        .collect()
}

/// "YYYY-MM-DD HH:MM" in UTC (civil-from-days, Howard Hinnant's algorithm).
fn chrono_utc(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// Extract with `unsquashfs -d` and compare every path with the tree.
fn extract_and_compare(tree: &Tree, image: &Path, unsquashfs: &Path, dir: &Path) {
    let root = dir.join("extracted");
    run(Command::new(unsquashfs)
        .arg("-no-progress")
        .arg("-d")
        .arg(&root)
        .arg(image));
    let as_root = is_root();
    let mut inode_of: BTreeMap<usize, u64> = BTreeMap::new();
    let walked = tree.walk();
    for (path, id) in &walked {
        let node = tree.node(*id);
        let m = node.metadata();
        let on_disk = root.join(path);
        let st = std::fs::symlink_metadata(&on_disk).unwrap_or_else(|e| panic!("{path}: {e}"));
        let ft = st.file_type();
        match node.kind() {
            Kind::Directory => assert!(ft.is_dir(), "{path}"),
            Kind::File(data) => {
                assert!(ft.is_file(), "{path}");
                assert!(std::fs::read(&on_disk).unwrap() == *data, "{path}: contents differ");
            }
            Kind::Symlink(target) => {
                assert!(ft.is_symlink(), "{path}");
                assert_eq!(std::fs::read_link(&on_disk).unwrap(), Path::new(target), "{path}");
            }
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                assert!(ft.is_char_device() || ft.is_block_device(), "{path}");
                let rdev = st.rdev();
                let (maj, min) = (
                    ((rdev >> 8) & 0xfff) as u32,
                    ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32,
                );
                assert_eq!((maj, min), (*major, *minor), "{path}");
            }
            Kind::Fifo => assert!(ft.is_fifo(), "{path}"),
            Kind::Socket => assert!(ft.is_socket(), "{path}"),
        }
        if !ft.is_symlink() {
            assert_eq!(st.permissions().mode() & 0o7777, m.mode, "{path}: mode");
        }
        assert_eq!(st.mtime() as u64, m.mtime, "{path}: mtime");
        if as_root {
            assert_eq!((st.uid(), st.gid()), (m.uid, m.gid), "{path}: owner");
        }
        if !node.is_dir() {
            assert_eq!(st.nlink(), u64::from(node.path_count()), "{path}: link count");
            let first = *inode_of.entry(id.index()).or_insert(st.ino());
            assert_eq!(first, st.ino(), "{path}: hardlinks share an inode");
        }
    }
    let mut count = 0;
    count_entries(&root, &mut count);
    assert_eq!(
        count,
        walked.len(),
        "unsquashfs extracted other paths than the tree has"
    );
}

fn count_entries(dir: &Path, count: &mut usize) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        *count += 1;
        if entry.file_type().unwrap().is_dir() {
            count_entries(&entry.path(), count);
        }
    }
}

#[test]
#[ignore = "reference tools: needs unsquashfs (run with --include-ignored; ci/test.sh does)"]
fn unsquashfs_lists_modes_owners_sizes_links_and_devices() {
    let unsquashfs = support::tool("unsquashfs");
    let dir = tempfile::tempdir().unwrap();
    let tree = sample(true);
    let image = write_image(
        &tree,
        &Options {
            mtime: 1_600_000_000,
            ..Options::default()
        },
        dir.path(),
    );
    assert_eq!(listing(&image, &unsquashfs), expected_listing(&tree));
    let stat = run(Command::new(&unsquashfs).arg("-s").arg(&image).env("TZ", "UTC"));
    assert!(stat.contains("Compression zstd"), "{stat}");
    assert!(stat.contains("Block size 131072"), "{stat}");
    assert!(
        stat.contains(&format!("Number of inodes {}", tree.node_count())),
        "{stat}"
    );
    assert!(stat.contains("Filesystem size "), "{stat}");
    assert!(stat.contains("Sun Sep 13 12:26:40 2020"), "superblock time: {stat}");
}

#[test]
#[ignore = "reference tools: needs unsquashfs (run with --include-ignored; ci/test.sh does)"]
fn unsquashfs_extracts_the_tree_with_every_compressor() {
    let unsquashfs = support::tool("unsquashfs");
    let tree = sample(is_root());
    for compression in [
        Compression::Zstd { level: 19 },
        Compression::Gzip { level: 9 },
        Compression::Xz { level: 6 },
    ] {
        for block_size in [4096, 131072, 1 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let opts = Options {
                compression,
                block_size,
                ..Options::default()
            };
            let image = write_image(&tree, &opts, dir.path());
            extract_and_compare(&tree, &image, &unsquashfs, dir.path());
        }
    }
}

#[test]
#[ignore = "reference tools: needs unsquashfs, getfattr, root (run with --include-ignored; ci/test.sh does)"]
fn getfattr_sees_the_extended_attributes() {
    let unsquashfs = support::tool("unsquashfs");
    let getfattr = support::tool("getfattr");
    assert!(
        is_root(),
        "this test extracts security.* xattrs, which needs root (ci/test.sh runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let tree = sample(false);
    let image = write_image(&tree, &Options::default(), dir.path());
    let root = dir.path().join("x");
    run(Command::new(&unsquashfs)
        .arg("-no-progress")
        .arg("-d")
        .arg(&root)
        .arg(&image));
    let dump = run(Command::new(&getfattr)
        .args(["-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(root.join("usr/bin/ping6")));
    let attrs: BTreeMap<&str, &str> = dump.lines().filter_map(|l| l.split_once('=')).collect();
    let expected: BTreeMap<&str, &str> = [
        ("security.capability", "0x0100000200200000000000000000000000000000"),
        ("user.note", "0x68656c6c6f"),
    ]
    .into();
    assert_eq!(attrs, expected, "{dump}");
    let other = run(Command::new(&getfattr)
        .args(["-h", "-d", "-m", "-", "--absolute-names"])
        .arg(root.join("usr/bin/sh")));
    assert_eq!(other.trim(), "", "no xattrs elsewhere");
}

#[test]
#[ignore = "reference tools: needs unsquashfs (run with --include-ignored; ci/test.sh does)"]
fn an_empty_tree_is_a_valid_image() {
    let unsquashfs = support::tool("unsquashfs");
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::new(meta(0o700, 5, 6, 42));
    let image = write_image(&tree, &Options::default(), dir.path());
    assert_eq!(listing(&image, &unsquashfs), expected_listing(&tree));
}

/// Random trees: names, kinds, modes, owners, contents and hardlinks.
fn arb_tree() -> impl Strategy<Value = Tree> {
    let name = "[a-zA-Z0-9._-]{1,12}".prop_filter("not . or ..", |n| n != "." && n != "..");
    let content = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (0usize..20_000, any::<u32>()).prop_map(|(len, seed)| noise(len, seed)),
        1 => (1usize..3, any::<u8>()).prop_map(|(blocks, b)| vec![b; blocks * 4096 + 100]),
    ];
    let entry = (
        0usize..8,
        name,
        0u8..5,
        content,
        0u32..0o7777,
        0u32..4,
        0u64..2_000_000_000,
    );
    proptest::collection::vec(entry, 1..40).prop_map(|entries| {
        let mut tree = Tree::new(meta(0o755, 0, 0, 0));
        let mut dirs = vec![String::new()];
        let mut files: Vec<String> = Vec::new();
        for (parent, name, kind, data, mode, owner, mtime) in entries {
            let parent = &dirs[parent % dirs.len()];
            let path = if parent.is_empty() {
                name
            } else {
                format!("{parent}/{name}")
            };
            let m = meta(mode, owner, owner * 10, mtime);
            let added = match kind {
                0 => tree.insert(&path, Kind::Directory, m).map(|_| dirs.push(path.clone())),
                1 if !files.is_empty() => tree.link(&path, &files[data.len() % files.len()]).map(|_| ()),
                2 => tree
                    .insert(&path, Kind::Symlink(format!("../{}", data.len())), m)
                    .map(|_| ()),
                3 => tree.insert(&path, Kind::Fifo, m).map(|_| ()),
                _ => tree
                    .insert(&path, Kind::File(data), m)
                    .map(|_| files.push(path.clone())),
            };
            match added {
                // A name may repeat; the tree refuses it and the entry is not generated.
                Ok(()) | Err(TreeError::AlreadyExists { .. }) => {}
                Err(e) => panic!("generating {path}: {e}"),
            }
        }
        tree
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    #[ignore = "reference tools: needs unsquashfs (run with --include-ignored; ci/test.sh does)"]
    fn random_trees_extract_to_themselves(tree in arb_tree(), block_log in 12u32..15) {
        let unsquashfs = support::tool("unsquashfs");
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { block_size: 1 << block_log, compression: Compression::Zstd { level: 3 }, ..Options::default() };
        let image = write_image(&tree, &opts, dir.path());
        prop_assert_eq!(listing(&image, &unsquashfs), expected_listing(&tree));
        extract_and_compare(&tree, &image, &unsquashfs, dir.path());
    }
}
