use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::release::os_release_field;
use super::*;
use crate::ddi::Arch;

fn release() -> ExtensionRelease {
    ExtensionRelease {
        id: "debian".into(),
        version_id: Some("13".into()),
        sysext_level: None,
        architecture: Arch::X86_64,
        scope: vec!["initrd".into(), "system".into()],
        extra: Vec::new(),
    }
}

fn layer(entries: Vec<Entry>) -> Layer {
    Layer::from_entries(entries).unwrap()
}

fn hardlink(path: &str, target: &str) -> Entry {
    Entry::new(path, EntryKind::Hardlink { target: target.into() }, 0o644, 0)
}

fn usr_layer(marker: &[u8]) -> Layer {
    let mut bin = Entry::file(
        "usr/bin/hello",
        b"#!/bin/sh\necho hello\n".to_vec(),
        0o755,
        1_700_000_000,
    );
    bin.xattrs.insert("security.capability".into(), vec![1, 0, 0, 2]);
    layer(vec![
        bin,
        Entry::file("usr/share/marker", marker.to_vec(), 0o644, 1_700_000_000),
        hardlink("usr/share/marker2", "usr/share/marker"),
        Entry::symlink("usr/bin/hi", "hello", 1_700_000_000),
        Entry::file("opt/tool/README", b"opt works too".to_vec(), 0o644, 1_700_000_000),
    ])
}

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let pair = sign::generate_dev_key("strata sysext test", from, from + Duration::from_secs(86400)).unwrap();
        Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap()
    })
}

#[test]
fn extension_release_renders_what_systemd_reads() {
    let mut r = release();
    r.extra.push(("EXTENSION_RELOAD_MANAGER".into(), "1".into()));
    assert_eq!(
        r.render(),
        "ID=debian\nVERSION_ID=13\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"initrd system\"\nEXTENSION_RELOAD_MANAGER=1\n"
    );
    assert_eq!(
        r.render_confext(),
        "ID=debian\nVERSION_ID=13\nARCHITECTURE=x86-64\nCONFEXT_SCOPE=\"initrd system\"\nEXTENSION_RELOAD_MANAGER=1\n"
    );
    let r = ExtensionRelease {
        version_id: None,
        sysext_level: Some("strata.1".into()),
        architecture: Arch::Arm64,
        scope: vec!["initrd".into()],
        extra: vec![("X_NOTE".into(), "say \"$hi\" \\ `now`".into())],
        ..release()
    };
    assert_eq!(
        r.render(),
        "ID=debian\nSYSEXT_LEVEL=strata.1\nARCHITECTURE=arm64\nSYSEXT_SCOPE=initrd\nX_NOTE=\"say \\\"\\$hi\\\" \\\\ \\`now\\`\"\n"
    );
    assert!(r.render_confext().contains("\nCONFEXT_LEVEL=strata.1\n"));
    assert_eq!(
        Class::Sysext.release_path("net"),
        "usr/lib/extension-release.d/extension-release.net"
    );
    assert_eq!(
        Class::Confext.release_path("net"),
        "etc/extension-release.d/extension-release.net"
    );
    assert_eq!(Class::Sysext.file_name("net"), "net.sysext.raw");
}

#[test]
fn extension_release_from_the_base_os_release() {
    let os = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nID=debian\n";
    let r = ExtensionRelease::from_os_release(os, Arch::X86_64);
    assert_eq!(
        (r.id.as_str(), r.version_id.as_deref(), r.sysext_level.as_deref()),
        ("debian", Some("13"), None)
    );
    assert_eq!(
        os_release_field("A='x y'\nB=\"a\\\"b\"\n", "B").as_deref(),
        Some("a\"b")
    );
    assert_eq!(os_release_field("A='x y'\n", "A").as_deref(), Some("x y"));
    assert_eq!(os_release_field("AB=1\n", "A"), None);
}

/// Debian testing's os-release: no `VERSION_ID`, only a codename.
const FORKY_OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux forky/sid\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_CODENAME=forky\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n\
SUPPORT_URL=\"https://www.debian.org/support\"\nBUG_REPORT_URL=\"https://bugs.debian.org/\"\n";

/// Debian 13's os-release.
const TRIXIE_OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_ID=\"13\"\nVERSION=\"13 (trixie)\"\nVERSION_CODENAME=trixie\nID=debian\n";

/// Whether systemd-sysext (systemd-confext for [`Class::Confext`]) would merge an extension
/// with release text `extension` on a host with os-release text `host`, as far as `ID` and
/// the versions go (architecture and scope left aside): a model of systemd's
/// `extension_release_validate` (src/shared/extension-util.c), written for these tests.
fn systemd_takes(host: &str, extension: &str, class: Class) -> bool {
    let field = |text: &str, key: &str| os_release_field(text, key).filter(|v| !v.is_empty());
    let level_key = format!("{}_LEVEL", class.key_prefix());
    let Some(ext_id) = field(extension, "ID") else {
        return false;
    };
    if ext_id == "_any" {
        return true;
    }
    let host_id = field(host, "ID").expect("systemd refuses a host without ID");
    let like = field(host, "ID_LIKE").unwrap_or_default();
    if ext_id != host_id && !like.split_whitespace().any(|l| l == ext_id) {
        return false;
    }
    let (host_version, host_level) = (field(host, "VERSION_ID"), field(host, &level_key));
    match (host_level, field(extension, &level_key), host_version) {
        (Some(h), Some(e), _) => h == e,
        (_, _, Some(h)) => field(extension, "VERSION_ID") == Some(h),
        // No version on the host (a rolling release): the ID was enough.
        (_, _, None) => true,
    }
}

#[test]
fn a_forky_base_without_version_id_gives_an_id_only_release_that_validates() {
    let mut r = ExtensionRelease::from_os_release(FORKY_OS_RELEASE, Arch::X86_64);
    assert_eq!(
        (r.id.as_str(), r.version_id.as_deref(), r.sysext_level.as_deref()),
        ("debian", None, None)
    );
    r.scope = vec!["initrd".into(), "system".into()];
    r.validate().unwrap();
    assert_eq!(
        r.render(),
        "ID=debian\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"initrd system\"\n"
    );
    assert_eq!(
        r.render_confext(),
        "ID=debian\nARCHITECTURE=x86-64\nCONFEXT_SCOPE=\"initrd system\"\n"
    );
    // An empty VERSION_ID= is no VERSION_ID (as systemd reads it), not `VERSION_ID=""`.
    let empty = format!("{FORKY_OS_RELEASE}VERSION_ID=\nSYSEXT_LEVEL=\"\"\n");
    assert_eq!(ExtensionRelease::from_os_release(&empty, Arch::X86_64), {
        let mut r = r.clone();
        r.scope.clear();
        r
    });
    // The image is built, with that release file.
    let opts = ImageOptions::default();
    let fs = filesystem_layer(&usr_layer(b"m"), &r, "net", &opts).unwrap();
    let file = fs.get("usr/lib/extension-release.d/extension-release.net").unwrap();
    assert_eq!(
        file.kind,
        EntryKind::File {
            data: b"ID=debian\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"initrd system\"\n".to_vec()
        }
    );
    build_image(&usr_layer(b"m"), &r, "net", None, &opts).unwrap();
}

#[test]
fn a_trixie_base_release_renders_as_before() {
    let mut r = ExtensionRelease::from_os_release(TRIXIE_OS_RELEASE, Arch::X86_64);
    r.scope = vec!["initrd".into(), "system".into()];
    assert_eq!(r, release());
    r.validate().unwrap();
    assert_eq!(
        r.render(),
        "ID=debian\nVERSION_ID=13\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"initrd system\"\n"
    );
}

#[test]
fn a_release_from_a_base_validates_and_systemd_takes_it_on_that_base() {
    let hosts = [
        TRIXIE_OS_RELEASE,
        FORKY_OS_RELEASE,
        "ID=arch\n",
        "ID=flatcar\nSYSEXT_LEVEL=1.0\n",
        "ID=fedora\nVERSION_ID=42\nSYSEXT_LEVEL=1.0\n",
        "ID=debian\nVERSION_ID=\n",
    ];
    for host in hosts {
        let r = ExtensionRelease::from_os_release(host, Arch::X86_64);
        r.validate().unwrap_or_else(|e| panic!("{host}: {e}"));
        for class in [Class::Sysext, Class::Confext] {
            assert!(systemd_takes(host, &r.render_as(class), class), "{host} {class:?}");
        }
    }
    // The host decides: a forky extension is refused on trixie (no VERSION_ID to match), and
    // a trixie one is taken on forky (its VERSION_ID is not looked at on a rolling release).
    let forky = ExtensionRelease::from_os_release(FORKY_OS_RELEASE, Arch::X86_64).render();
    let trixie = release().render();
    assert!(!systemd_takes(TRIXIE_OS_RELEASE, &forky, Class::Sysext));
    assert!(systemd_takes(FORKY_OS_RELEASE, &trixie, Class::Sysext));
    assert!(!systemd_takes("ID=ubuntu\n", &forky, Class::Sysext));
    assert!(systemd_takes("ID=devuan\nID_LIKE=debian\n", &forky, Class::Sysext));
}

#[test]
fn invalid_release_data_is_refused_with_the_field() {
    let key_of = |r: ExtensionRelease| match r.validate() {
        Err(Error::InvalidRelease { key, .. }) => key,
        other => panic!("expected InvalidRelease, got {other:?}"),
    };
    assert_eq!(
        key_of(ExtensionRelease {
            version_id: Some(String::new()),
            ..release()
        }),
        "VERSION_ID"
    );
    assert_eq!(
        key_of(ExtensionRelease {
            version_id: None,
            sysext_level: Some(String::new()),
            ..release()
        }),
        "SYSEXT_LEVEL"
    );
    assert_eq!(
        key_of(ExtensionRelease {
            id: String::new(),
            ..release()
        }),
        "ID"
    );
    assert_eq!(
        key_of(ExtensionRelease {
            id: "Debian".into(),
            ..release()
        }),
        "ID"
    );
    assert_eq!(
        key_of(ExtensionRelease {
            scope: vec!["host".into()],
            ..release()
        }),
        "SYSEXT_SCOPE"
    );
    assert_eq!(
        key_of(ExtensionRelease {
            extra: vec![("ID".into(), "x".into())],
            ..release()
        }),
        "ID"
    );
    assert_eq!(
        key_of(ExtensionRelease {
            extra: vec![("A".into(), "x\ny".into())],
            ..release()
        }),
        "A"
    );
    assert_eq!(
        key_of(ExtensionRelease {
            version_id: Some("13 beta".into()),
            ..release()
        }),
        "VERSION_ID"
    );
    release().validate().unwrap();
    ExtensionRelease {
        id: "_any".into(),
        version_id: None,
        ..release()
    }
    .validate()
    .unwrap();
}

#[test]
fn split_reports_paths_outside_usr_opt_and_etc() {
    let l = layer(vec![
        Entry::file("etc/foo.conf", b"shared".to_vec(), 0o640, 5),
        hardlink("usr/lib/foo.conf", "etc/foo.conf"),
        hardlink("usr/share/foo.conf", "etc/foo.conf"),
        Entry::file("usr/bin/a", b"a".to_vec(), 0o755, 5),
        Entry::file("opt/b", b"b".to_vec(), 0o644, 5),
        Entry::file("var/lib/x/state", b"s".to_vec(), 0o600, 5),
        Entry::symlink("lib64", "usr/lib64", 5),
    ]);
    let split = split_layer(l).unwrap();
    assert_eq!(split.other, ["lib64", "var", "var/lib", "var/lib/x", "var/lib/x/state"]);
    let paths = |l: &Layer| l.entries().iter().map(|e| e.path.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&split.etc), ["etc", "etc/foo.conf"]);
    assert_eq!(
        paths(&split.usr_opt),
        [
            "opt",
            "opt/b",
            "usr",
            "usr/bin",
            "usr/bin/a",
            "usr/lib",
            "usr/lib/foo.conf",
            "usr/share",
            "usr/share/foo.conf"
        ]
    );
    // The cross-part hard link now holds the data (with the inode's mode); its sibling links to it.
    let holder = split.usr_opt.get("usr/lib/foo.conf").unwrap();
    assert_eq!(
        (&holder.kind, holder.mode),
        (
            &EntryKind::File {
                data: b"shared".to_vec()
            },
            0o640
        )
    );
    assert_eq!(
        split.usr_opt.get("usr/share/foo.conf").unwrap().kind,
        EntryKind::Hardlink {
            target: "usr/lib/foo.conf".into()
        }
    );
    assert!(matches!(
        split.etc.get("etc/foo.conf").unwrap().kind,
        EntryKind::File { .. }
    ));
}

#[test]
fn tree_keeps_links_xattrs_devices_and_reroots_filtered_links() {
    let mut l = usr_layer(b"m").into_entries();
    l.push(Entry::new(
        "usr/dev/null",
        EntryKind::CharDevice { major: 1, minor: 3 },
        0o666,
        0,
    ));
    let l = layer(l);
    let tree = tree_from_layer(&l, |_| true).unwrap();
    assert_eq!(tree.lookup("usr/share/marker"), tree.lookup("usr/share/marker2"));
    assert_eq!(tree.get("usr/share/marker").unwrap().path_count(), 2);
    let bin = tree.get("usr/bin/hello").unwrap();
    assert_eq!(bin.metadata().xattrs["security.capability"], [1, 0, 0, 2]);
    assert_eq!((bin.metadata().mode, bin.metadata().mtime), (0o755, 1_700_000_000));
    assert_eq!(
        tree.get("usr/dev/null").unwrap().kind(),
        &Kind::CharDevice { major: 1, minor: 3 }
    );
    assert_eq!(tree.get("usr/bin/hi").unwrap().kind(), &Kind::Symlink("hello".into()));

    let tree = tree_from_layer(&l, |p| p != "usr/share/marker" && !p.starts_with("opt")).unwrap();
    assert!(tree.get("usr/share/marker").is_none() && tree.get("opt").is_none());
    assert_eq!(
        tree.get("usr/share/marker2").unwrap().kind(),
        &Kind::File(b"m".to_vec())
    );
    // A kept child of a filtered directory gets its parent back.
    let tree = tree_from_layer(&l, |p| p != "usr/bin").unwrap();
    assert!(tree.get("usr/bin").is_some_and(|n| n.is_dir()) && tree.get("usr/bin/hello").is_some());
}

#[test]
fn an_extension_with_nothing_under_usr_is_an_error_naming_it() {
    let l = layer(vec![Entry::dir("usr/lib/empty", 0o755, 0)]);
    let err = build_image(&l, &release(), "network", None, &ImageOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Empty { name, class: Class::Sysext } if name == "network"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "extension `network` has nothing under /usr and /opt: it would merge nothing"
    );
    let err = build_image(&Layer::default(), &release(), "sound", None, &ImageOptions::default()).unwrap_err();
    assert!(err.to_string().contains("`sound` has nothing"), "{err}");
}

#[test]
fn paths_outside_the_class_names_and_release_conflicts_are_refused() {
    let mut entries = usr_layer(b"m").into_entries();
    entries.push(Entry::file("etc/x", b"x".to_vec(), 0o644, 0));
    let err = build_image(&layer(entries), &release(), "net", None, &ImageOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::OutsideExtension { paths, .. } if paths == &["etc", "etc/x"]),
        "{err:?}"
    );

    for bad in ["", "a_b", "a+b", ".hidden", "-x", "a/b", "a b"] {
        let err = build_image(&usr_layer(b"m"), &release(), bad, None, &ImageOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err:?}");
    }

    let mut entries = usr_layer(b"m").into_entries();
    entries.push(Entry::file(
        "usr/lib/extension-release.d/extension-release.net",
        b"ID=x".to_vec(),
        0o644,
        0,
    ));
    let err = build_image(&layer(entries), &release(), "net", None, &ImageOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ReleaseFileInLayer { .. }), "{err:?}");

    let err = build_image(
        &usr_layer(b"m"),
        &ExtensionRelease {
            version_id: Some(String::new()),
            ..release()
        },
        "net",
        None,
        &ImageOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidRelease { .. }), "{err:?}");
}

#[test]
fn builds_are_reproducible_and_follow_the_content() {
    let opts = ImageOptions::default();
    let a = build_image(&usr_layer(b"one"), &release(), "net", None, &opts).unwrap();
    let b = build_image(&usr_layer(b"one"), &release(), "net", None, &opts).unwrap();
    assert!(a.bytes == b.bytes, "two unsigned builds differ");
    assert_eq!(a.root_hash, b.root_hash);
    assert!(!a.layout.signed() && a.layout.partitions.len() == 2);
    assert_eq!(a.bytes.len() as u64, a.layout.size);
    let hex = a.root_hash.to_string();
    assert_eq!(a.layout.partitions[0].uuid.simple().to_string(), hex[..32]);
    assert_eq!(a.layout.partitions[1].uuid.simple().to_string(), hex[32..]);

    let c = build_image(&usr_layer(b"two"), &release(), "net", None, &opts).unwrap();
    assert_ne!(a.root_hash, c.root_hash);
    assert_ne!(a.layout.disk_guid, c.layout.disk_guid);
    // The extension name is in the image (the release file's name).
    let d = build_image(&usr_layer(b"one"), &release(), "net2", None, &opts).unwrap();
    assert_ne!(a.root_hash, d.root_hash);

    let s1 = build_image(&usr_layer(b"one"), &release(), "net", Some(signer()), &opts).unwrap();
    let s2 = build_image(&usr_layer(b"one"), &release(), "net", Some(signer()), &opts).unwrap();
    assert!(s1.bytes == s2.bytes, "two signed builds differ");
    assert!(s1.layout.signed());
    assert_eq!(s1.root_hash, a.root_hash, "signing does not change the data partition");
    // The signature partition holds the JSON naming the root hash.
    let sig = &s1.layout.partitions[2];
    let part = &s1.bytes[sig.offset as usize..(sig.offset + sig.size) as usize];
    let json = std::str::from_utf8(&part[..part.iter().position(|&b| b == 0).unwrap()]).unwrap();
    assert!(
        json.starts_with(&format!(
            "{{\"rootHash\":\"{}\",\"certificateFingerprint\":\"",
            s1.root_hash
        )),
        "{json}"
    );
    let fingerprint = sign::certificate_fingerprint(signer().certificate()).unwrap();
    assert!(json.contains(&fingerprint));
}

#[test]
fn a_confext_carries_etc_and_its_release_under_etc() {
    let l = layer(vec![Entry::file("etc/motd", b"hi".to_vec(), 0o644, 0)]);
    let opts = ImageOptions {
        class: Class::Confext,
        ..ImageOptions::default()
    };
    let img = build_image(&l, &release(), "motd", None, &opts).unwrap();
    assert_eq!(img.layout.partitions.len(), 2);
    let err = build_image(&usr_layer(b"x"), &release(), "motd", None, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutsideExtension {
                class: Class::Confext,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn fingerprint_hex_decodes() {
    let hex: String = (0..32u8).map(|b| format!("{b:02x}")).collect();
    assert_eq!(fingerprint_bytes(&hex), std::array::from_fn(|i| i as u8));
}

/// SHA-256 of unsigned images made by `build_image` before it was split into
/// `filesystem_layer` and `image_from_filesystem`: the split must not change a byte.
#[test]
fn unsigned_images_known_answer() {
    let digest = |img: Image| hex::encode(Sha256::digest(&img.bytes));
    let at = |mtime| ImageOptions {
        squashfs: squashfs::Options {
            mtime,
            ..squashfs::Options::default()
        },
        ..ImageOptions::default()
    };
    let sysext = build_image(&usr_layer(b"one"), &release(), "net", None, &at(0)).unwrap();
    assert_eq!(
        digest(sysext),
        "deba05ed59aba195371d7ec6427e3bf0c6c8e2caecc108f69116bf0c7bee06a5"
    );
    let later = build_image(&usr_layer(b"one"), &release(), "net", None, &at(1_700_000_123)).unwrap();
    assert_eq!(
        digest(later),
        "77831e5b4001d4505c1e6e925e728b63cc1eccca13f828eda5a510ce578f5c71"
    );
    let l = layer(vec![Entry::file("etc/motd", b"hi".to_vec(), 0o644, 0)]);
    let opts = ImageOptions {
        class: Class::Confext,
        ..at(1_700_000_123)
    };
    let confext = build_image(&l, &release(), "motd", None, &opts).unwrap();
    assert_eq!(
        digest(confext),
        "bba45a121159e7475a41048bac47fbe8d4d3b3784d4c7173ba4cb38a5b8c4f47"
    );
}

#[test]
fn build_image_equals_its_two_halves() {
    let confext = layer(vec![Entry::file("etc/motd", b"hi".to_vec(), 0o600, 7)]);
    let cases = [
        (usr_layer(b"one"), Class::Sysext, 0),
        (usr_layer(b"one"), Class::Sysext, 1_700_000_123),
        (confext, Class::Confext, 1_700_000_123),
    ];
    for (part, class, mtime) in cases {
        let opts = ImageOptions {
            class,
            squashfs: squashfs::Options {
                mtime,
                ..squashfs::Options::default()
            },
        };
        let fs = filesystem_layer(&part, &release(), "net", &opts).unwrap();
        let mut tree = tree_from_layer(&fs, |_| true).unwrap();
        tree.metadata_mut(tree::NodeId::ROOT).mtime = u64::from(mtime);
        let squashfs = squashfs::to_bytes(&tree, &opts.squashfs).unwrap();
        for signer in [None, Some(signer())] {
            let whole = build_image(&part, &release(), "net", signer, &opts).unwrap();
            let halves = image_from_filesystem(squashfs.clone(), Arch::X86_64, signer).unwrap();
            assert!(
                whole == halves,
                "{class:?} at {mtime}, signed {}: the halves give other bytes",
                signer.is_some()
            );
        }
    }
}

#[test]
fn filesystem_layer_adds_the_release_file_and_its_directories() {
    let opts = ImageOptions {
        squashfs: squashfs::Options {
            mtime: 1_700_000_123,
            ..squashfs::Options::default()
        },
        ..ImageOptions::default()
    };
    let part = usr_layer(b"one");
    let fs = filesystem_layer(&part, &release(), "net", &opts).unwrap();
    let release_file = fs.get("usr/lib/extension-release.d/extension-release.net").unwrap();
    assert_eq!(
        release_file,
        &Entry::file(
            "usr/lib/extension-release.d/extension-release.net",
            release().render(),
            0o644,
            1_700_000_123
        )
    );
    for dir in ["usr/lib", "usr/lib/extension-release.d"] {
        assert_eq!(fs.get(dir).unwrap(), &Entry::dir(dir, 0o755, 1_700_000_123));
    }
    // Everything else is the layer part, unchanged.
    let added = ["usr/lib", "usr/lib/extension-release.d", release_file.path.as_str()];
    let rest: Vec<&Entry> = fs
        .entries()
        .iter()
        .filter(|e| !added.contains(&e.path.as_str()))
        .collect();
    assert_eq!(rest, part.entries().iter().collect::<Vec<_>>());

    let confext = layer(vec![Entry::file("etc/motd", b"hi".to_vec(), 0o644, 0)]);
    let opts = ImageOptions {
        class: Class::Confext,
        ..opts
    };
    let fs = filesystem_layer(&confext, &release(), "motd", &opts).unwrap();
    let file = fs.get("etc/extension-release.d/extension-release.motd").unwrap();
    assert_eq!(
        file.kind,
        EntryKind::File {
            data: release().render_confext().into_bytes()
        }
    );
}

#[test]
fn filesystem_layer_refuses_what_build_image_refuses() {
    let with = |path: &str| {
        let mut entries = usr_layer(b"m").into_entries();
        entries.push(Entry::file(path, b"x".to_vec(), 0o644, 0));
        layer(entries)
    };
    let empty_version = ExtensionRelease {
        version_id: Some(String::new()),
        ..release()
    };
    let cases: [(Layer, ExtensionRelease, &str); 5] = [
        (layer(vec![Entry::dir("usr/lib/empty", 0o755, 0)]), release(), "net"),
        (with("etc/x"), release(), "net"),
        (usr_layer(b"m"), release(), "a_b"),
        (
            with("usr/lib/extension-release.d/extension-release.net"),
            release(),
            "net",
        ),
        (usr_layer(b"m"), empty_version, "net"),
    ];
    let opts = ImageOptions::default();
    for (part, r, name) in cases {
        let split = filesystem_layer(&part, &r, name, &opts).unwrap_err();
        let whole = build_image(&part, &r, name, None, &opts).unwrap_err();
        assert_eq!(split.to_string(), whole.to_string());
        assert_eq!(
            std::mem::discriminant(&split),
            std::mem::discriminant(&whole),
            "{split:?}"
        );
    }
}

#[test]
fn image_from_filesystem_pads_to_whole_verity_blocks() {
    let filesystem: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let img = image_from_filesystem(filesystem.clone(), Arch::Arm64, None).unwrap();
    let data = &img.layout.partitions[0];
    assert_eq!(data.size, 8192);
    assert_eq!(data.type_uuid, Arch::Arm64.partition_types().root);
    let start = data.offset as usize;
    assert_eq!(&img.bytes[start..start + 5000], &filesystem[..]);
    assert!(img.bytes[start + 5000..start + 8192].iter().all(|&b| b == 0));
    let mut padded = filesystem;
    padded.resize(8192, 0);
    assert!(image_from_filesystem(padded, Arch::Arm64, None).unwrap() == img);
}
