//! Tests of the layer model and its tar form.

use super::*;

fn sample() -> Layer {
    let mut cap = Entry::file("usr/bin/ping", b"\x7fELF".to_vec(), 0o755, 5);
    cap.xattrs
        .insert("security.capability".into(), vec![1, 0, 0, 2, 0, 0x20, 0, 0]);
    Layer::from_entries(vec![
        Entry::file("usr/bin/zz", b"data".to_vec(), 0o644, 9_999_999_999),
        Entry::new(
            "usr/bin/aa",
            EntryKind::Hardlink {
                target: "usr/bin/zz".into(),
            },
            0o644,
            1,
        ),
        Entry::symlink("init", "usr/lib/systemd/systemd", 3),
        cap,
        Entry::new("dev/null", EntryKind::CharDevice { major: 1, minor: 3 }, 0o666, 1),
        Entry::file(&format!("usr/share/{}", "long".repeat(40)), b"x".to_vec(), 0o600, 1),
    ])
    .unwrap()
}

#[test]
fn sorted_with_parents_and_rerooted_links() {
    let l = sample();
    let paths: Vec<&str> = l.entries().iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert!(paths.contains(&"usr") && paths.contains(&"usr/bin") && paths.contains(&"dev"));
    // aa sorts first, so it now holds the data and zz links to it.
    assert_eq!(
        l.get("usr/bin/aa").unwrap().kind,
        EntryKind::File { data: b"data".to_vec() }
    );
    assert_eq!(
        l.get("usr/bin/zz").unwrap().kind,
        EntryKind::Hardlink {
            target: "usr/bin/aa".into()
        }
    );
    assert_eq!(l.get("usr/bin/aa").unwrap().mtime, 9_999_999_999);
}

#[test]
fn tar_round_trip_keeps_everything() {
    let mut l = sample();
    l.clamp_mtimes(1_000);
    let mut tar = Vec::new();
    l.write_tar(&mut tar).unwrap();
    let back = Layer::read_tar(tar.as_slice(), &ReadOptions::default()).unwrap();
    assert_eq!(back, l);
    assert!(back.entries().iter().all(|e| e.mtime <= 1_000));
    assert_eq!(
        back.get("usr/bin/ping").unwrap().xattrs["security.capability"],
        vec![1, 0, 0, 2, 0, 0x20, 0, 0]
    );
}

#[test]
fn tar_is_deterministic_and_order_independent() {
    let a = sample();
    let mut reversed = a.entries().to_vec();
    reversed.reverse();
    let b = Layer::from_entries(reversed).unwrap();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    a.write_tar(&mut ta).unwrap();
    b.write_tar(&mut tb).unwrap();
    assert_eq!(ta, tb);
}

#[test]
fn strip_prefix_and_unsafe_paths() {
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "root/", io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(2);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "root/etc/x", &b"hi"[..]).unwrap();
        b.finish().unwrap();
    }
    let l = Layer::read_tar(
        tar.as_slice(),
        &ReadOptions {
            strip_prefix: Some("root".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let paths: Vec<&str> = l.entries().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["etc", "etc/x"]);
    let err = Layer::read_tar(
        tar.as_slice(),
        &ReadOptions {
            strip_prefix: Some("other".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
}

#[test]
fn reads_stop_at_the_size_limit() {
    let big = Layer::from_entries(vec![
        Entry::file("a", vec![1u8; 10_000], 0o644, 0),
        Entry::file("b/big", vec![0u8; 1 << 20], 0o644, 0),
    ])
    .unwrap();
    let mut tar = Vec::new();
    big.write_tar(&mut tar).unwrap();
    let limited = |max: u64| ReadOptions {
        max_size: Some(max),
        ..Default::default()
    };
    // The stream's length is enough; the end of the last file's data is not (what
    // follows it, the end-of-archive blocks, need not all be read).
    let len = tar.len() as u64;
    assert_eq!(Layer::read_tar(tar.as_slice(), &limited(len)).unwrap(), big);
    let err = Layer::read_tar(tar.as_slice(), &limited(len - 1024 - 1)).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let err = Layer::read_tar(tar.as_slice(), &limited(64 << 10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the layer tar is larger than the limit of 65536 bytes (at entry `b/big`)"
    );
    // A header that claims a terabyte is refused before anything is reserved for it.
    let mut liar = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    liar.extend_from_slice(h.as_bytes());
    liar.extend_from_slice(&[0; 4096]);
    let err = Layer::read_tar(liar.as_slice(), &limited(1 << 30)).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { path, limit: 1_073_741_824 } if path == "huge"),
        "{err}"
    );
    // No limit: as before.
    assert_eq!(Layer::read_tar(tar.as_slice(), &ReadOptions::default()).unwrap(), big);
}

#[test]
fn diff_has_changes_whiteouts_and_parents() {
    let parent = sample();
    let mut entries = parent.entries().to_vec();
    entries.retain(|e| e.path != "dev/null" && e.path != "dev" && e.path != "init");
    entries.push(Entry::file("usr/bin/new", b"n".to_vec(), 0o755, 1));
    for e in &mut entries {
        if e.path == "usr/bin/ping" {
            e.mode = 0o4755;
        }
    }
    let child = Layer::from_entries(entries).unwrap();
    let diff = child.diff_from(&parent);
    let paths: Vec<&str> = diff.entries().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [".wh.dev", ".wh.init", "usr", "usr/bin", "usr/bin/new", "usr/bin/ping"]
    );
    assert!(child.diff_from(&child).entries().is_empty());
}

#[test]
fn remove_where_drops_subtrees_and_keeps_links_alive() {
    let mut l = sample();
    let removed = l.remove_where(|e| e.path == "usr/bin/aa" || e.path == "dev");
    assert_eq!(removed, ["dev", "usr/bin/aa"]);
    assert!(l.get("dev/null").is_none());
    assert_eq!(
        l.get("usr/bin/zz").unwrap().kind,
        EntryKind::File { data: b"data".to_vec() }
    );
}

/// `-` (0x2d) sorts before `/` (0x2f), so `usr/share/doc-base` (and its contents) come between
/// `usr/share/doc` and `usr/share/doc/foo`.
fn doc_tree() -> Layer {
    Layer::from_entries(vec![
        Entry::dir("usr/share/doc", 0o755, 1),
        Entry::dir("usr/share/doc-base", 0o755, 1),
        Entry::file("usr/share/doc-base/x", b"x".to_vec(), 0o644, 1),
        Entry::file("usr/share/doc/foo", b"foo".to_vec(), 0o644, 1),
        Entry::file("usr/share/other", b"o".to_vec(), 0o644, 1),
    ])
    .unwrap()
}

fn paths(l: &Layer) -> Vec<&str> {
    l.entries().iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn remove_where_looks_at_every_removed_dir_not_only_the_last() {
    let mut l = doc_tree();
    assert_eq!(
        paths(&l),
        [
            "usr",
            "usr/share",
            "usr/share/doc",
            "usr/share/doc-base",
            "usr/share/doc-base/x",
            "usr/share/doc/foo",
            "usr/share/other"
        ]
    );
    let removed = l.remove_where(|e| e.path.starts_with("usr/share/doc"));
    assert_eq!(
        removed,
        ["usr/share/doc", "usr/share/doc-base"],
        "directories once, not their contents"
    );
    assert_eq!(paths(&l), ["usr", "usr/share", "usr/share/other"]);
}

#[test]
fn remove_where_glob_like_predicate_leaves_no_orphan() {
    // What the remove glob `usr/share/doc*` matches with a literal separator: the two
    // directories, not `usr/share/doc/foo`, which must go with its parent.
    let mut l = doc_tree();
    let removed = l.remove_where(|e| {
        e.path
            .strip_prefix("usr/share/doc")
            .is_some_and(|rest| !rest.contains('/'))
    });
    assert_eq!(removed, ["usr/share/doc", "usr/share/doc-base"]);
    assert_eq!(paths(&l), ["usr", "usr/share", "usr/share/other"]);
}

#[test]
fn diff_whites_out_each_removed_dir_once_whatever_sorts_between() {
    let parent = doc_tree();
    let mut entries = parent.entries().to_vec();
    entries.retain(|e| !e.path.starts_with("usr/share/doc"));
    let child = Layer::from_entries(entries).unwrap();
    let diff = child.diff_from(&parent);
    assert_eq!(
        paths(&diff),
        ["usr", "usr/share", "usr/share/.wh.doc", "usr/share/.wh.doc-base"]
    );
}

#[test]
fn diff_replacing_a_dir_by_a_file_has_no_whiteouts_below_it() {
    let parent = doc_tree();
    let mut entries = parent.entries().to_vec();
    entries.retain(|e| !e.path.starts_with("usr/share/doc/"));
    for e in &mut entries {
        if e.path == "usr/share/doc" {
            e.kind = EntryKind::File {
                data: b"now a file".to_vec(),
            };
        }
    }
    let child = Layer::from_entries(entries).unwrap();
    let diff = child.diff_from(&parent);
    // Replacing the directory removes it with its contents; `doc/.wh.foo` would be an entry
    // below a regular file.
    assert_eq!(paths(&diff), ["usr", "usr/share", "usr/share/doc"]);
    assert_eq!(
        diff.get("usr/share/doc").unwrap().kind,
        EntryKind::File {
            data: b"now a file".to_vec()
        }
    );
}
