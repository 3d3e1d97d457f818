//! The build stages against the recording fake engine: which commands run in which order,
//! how their answers and exit codes become layers or errors, and that nothing is stored and
//! every container is removed when a step fails.

use std::path::Path;

use strata_format::layer::{Entry, Layer};

use super::*;
use crate::distro::debian::Debian;
use crate::engine::ExecOutput;
use crate::engine::fake::{Call, Fake};

const SET: &str = r#"
[distribution]
id = "debian"
release = "trixie"
[base]
packages = ["systemd"]
remove = ["usr/share/doc"]
[kernel]
package = "linux-image-amd64"
modules = ["virtio_blk"]
"#;

const EPOCH: u64 = 1_700_000_000;

fn ok(stdout: &str) -> ExecOutput {
    ExecOutput {
        exit_code: 0,
        stdout: stdout.as_bytes().to_vec(),
        tail: vec![],
    }
}

fn failed(code: i64, tail: &str) -> ExecOutput {
    ExecOutput {
        exit_code: code,
        stdout: vec![],
        tail: tail.lines().map(str::to_string).collect(),
    }
}

const RELEASE: &str = r#"{"reachable":true,"date":"Sat, 08 Nov 2025 09:51:03 UTC","valid_until":"","suite":"stable","codename":"trixie"}"#;

/// A tar as `get_archive` answers: `top` and the entries below it.
fn tar_of(top: &str, entries: Vec<Entry>) -> Vec<u8> {
    let mut all = vec![Entry::dir(top, 0o755, 1)];
    all.extend(entries.into_iter().map(|mut e| {
        e.path = format!("{top}/{}", e.path);
        e
    }));
    let mut tar = Vec::new();
    Layer::from_entries(all).unwrap().write_tar(&mut tar).unwrap();
    tar
}

struct World {
    fake: Fake,
    set: LayerSet,
    store: Store,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oci")).unwrap();
        let mut set = crate::config::parse(Path::new("layers/t/base.toml"), SET).unwrap();
        set.dir = "layers/t".into();
        World {
            fake: Fake::default(),
            set,
            store,
            _dir: dir,
            cancel: CancellationToken::new(),
        }
    }

    fn ctx(&self) -> Ctx<'_, Fake> {
        Ctx {
            engine: &self.fake,
            set: &self.set,
            store: &self.store,
            builder: "localhost/strata-builder-debian:test",
            distro: &Debian,
            epoch: Some(EPOCH),
            cancel: &self.cancel,
        }
    }

    fn answer(&self, out: ExecOutput) {
        self.fake.exec_answers.lock().unwrap().push_back(out);
    }

    fn execs(&self) -> Vec<Vec<String>> {
        self.fake
            .calls()
            .into_iter()
            .filter_map(|c| if let Call::Exec(a) = c { Some(a) } else { None })
            .collect()
    }

    fn created(&self) -> Vec<crate::engine::ContainerSpec> {
        self.fake
            .calls()
            .into_iter()
            .filter_map(|c| if let Call::Create(spec) = c { Some(spec) } else { None })
            .collect()
    }

    fn removes(&self) -> usize {
        self.fake
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Remove(_)))
            .count()
    }

    fn stored(&self, name: &str) -> bool {
        self.store.get_ref(name).unwrap().is_some()
    }
}

#[tokio::test]
async fn base_runs_release_install_query_and_stores_the_finalized_layer() {
    let w = World::new();
    w.answer(ok(RELEASE));
    w.answer(ok(""));
    w.answer(ok(
        r#"[{"name":"systemd","version":"257","architecture":"amd64","depends":"","provides":"","files":["/usr/lib/systemd/systemd"]},{"name":"dpkg","version":"1.22","architecture":"amd64","depends":"","provides":"","files":["/usr/bin/dpkg"]}]"#,
    ));
    w.fake.archives.lock().unwrap().insert(
        "/root/target".into(),
        tar_of(
            "target",
            vec![
                Entry::file("usr/lib/systemd/systemd", "ELF", 0o755, 1),
                Entry::file("usr/lib/systemd/system/systemd-sysext.service", "[Unit]", 0o644, 1),
                Entry::file("usr/lib/os-release", "ID=debian\nVERSION_ID=\"13\"\n", 0o644, 1),
                Entry::file("usr/bin/dpkg", "x", 0o755, 1),
                Entry::file("usr/share/doc/systemd/copyright", "c", 0o644, 1),
                Entry::file("var/lib/dpkg/status", "Package: systemd\n", 0o644, 1),
            ],
        ),
    );
    base::build(&w.ctx(), &crate::digest::Digest::of(b"key"), "strata.base.test")
        .await
        .unwrap();

    let execs = w.execs();
    assert_eq!(execs.len(), 3, "{execs:?}");
    assert_eq!(
        execs[0],
        ["strata-release", crate::distro::debian::DEFAULT_MIRROR, "trixie"]
    );
    assert_eq!(
        execs[1][..3],
        [
            "env".to_string(),
            format!("SOURCE_DATE_EPOCH={EPOCH}"),
            "strata-install-root".into()
        ]
    );
    assert_eq!(execs[1][7], "systemd", "the package list");
    assert_eq!(execs[2], ["strata-query-installed", "/root/target"]);
    assert_eq!(w.removes(), 1, "the container is removed");
    assert!(!w.created()[0].mounts, "no capability unless the set asks for /proc");

    assert!(w.stored("strata.base.test"));
    let m = crate::store::image::get_manifest(&w.store, "strata.base.test")
        .unwrap()
        .unwrap();
    let (blob, _) = crate::store::image::layer_digest(&m.layers()[0]).unwrap();
    let layer = crate::store::image::read_layer_blob(&w.store, &blob).unwrap();
    let paths: Vec<&str> = layer.entries().iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"init") && paths.contains(&"etc/initrd-release"),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&"usr/bin/dpkg"),
        "dpkg is outside the closure: {paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("var/lib/dpkg") || p.starts_with("usr/share/doc")),
        "{paths:?}"
    );
    let ann = m.annotations().clone().unwrap();
    assert_eq!(ann["io.strata.packages"], "systemd=257");
    assert_eq!(ann["org.opencontainers.image.version"], "13");
}

#[tokio::test]
async fn a_missing_package_is_named_with_its_file_and_nothing_is_stored() {
    let w = World::new();
    w.answer(ok(RELEASE));
    w.answer(failed(
        100,
        "Reading package lists...\nE: Unable to locate package systemdd",
    ));
    let err = base::build(&w.ctx(), &crate::digest::Digest::of(b"key"), "strata.base.test")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("package `systemdd` not found in debian/trixie") && text.contains("layers/t/base.toml"),
        "{text}"
    );
    assert!(!w.stored("strata.base.test"));
    assert_eq!(w.removes(), 1);
}

#[tokio::test]
async fn any_other_failure_keeps_the_tail_and_a_command_to_paste() {
    let w = World::new();
    w.answer(ok(RELEASE));
    w.answer(failed(25, "E: mmdebstrap failed to run"));
    let err = base::build(&w.ctx(), &crate::digest::Digest::of(b"key"), "strata.base.test")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("installing the packages into the build root failed (exit code 25)"),
        "{text}"
    );
    assert!(text.contains("E: mmdebstrap failed to run"), "{text}");
    assert!(
        text.contains("podman run --rm --network=host localhost/strata-builder-debian:test env SOURCE_DATE_EPOCH=1700000000 strata-install-root"),
        "{text}"
    );
    assert!(!w.stored("strata.base.test"));
}

#[tokio::test]
async fn mount_proc_gives_the_install_container_cap_sys_admin_and_says_so_in_the_paste_line() {
    // mmdebstrap mounts /proc in the build root only with CAP_SYS_ADMIN; without /proc,
    // forky's cryptsetup-bin postinst (`systemd-tmpfiles --create`) fails.
    let mut w = World::new();
    w.set.distribution.mount_proc = true;
    w.answer(ok(RELEASE));
    w.answer(failed(1, "E: /proc is not mounted in the build root"));
    let err = base::build(&w.ctx(), &crate::digest::Digest::of(b"key"), "strata.base.test")
        .await
        .unwrap_err();
    let created = w.created();
    assert!(created.len() == 1 && created[0].mounts, "{created:?}");
    assert_eq!(w.execs()[1].last().unwrap(), "mount-proc");
    let text = format!("{err:#}");
    assert!(
        text.contains("podman run --rm --network=host --cap-add=SYS_ADMIN localhost/strata-builder-debian:test env"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_mirror_stops_before_the_install() {
    let w = World::new();
    w.answer(ok(r#"{"reachable":false}"#));
    let err = base::build(&w.ctx(), &crate::digest::Digest::of(b"key"), "strata.base.test")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("cannot reach the mirror"), "{err:#}");
    assert_eq!(w.execs().len(), 1, "nothing is installed");
    assert_eq!(w.removes(), 1);
}

#[tokio::test]
async fn kernel_fetches_selects_assembles_and_stores_image_and_modules() {
    let w = World::new();
    w.answer(ok(RELEASE));
    w.answer(ok(
        r#"{"package":"linux-image-6.12.1-amd64","version":"6.12.1-1","uname":"6.12.1-amd64"}"#,
    ));
    w.answer(ok(r#"{"firmware_missing":["x.bin"]}"#));
    let meta = |name: &str, text: &str| {
        w.fake
            .archives
            .lock()
            .unwrap()
            .insert(format!("/work/meta/{name}"), file_tar(name, text));
    };
    meta(
        "modules.dep",
        "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz\nkernel/drivers/virtio/virtio.ko.xz:\n",
    );
    for f in ["modules.builtin", "modules.softdep", "modules.weakdep", "modules.alias"] {
        meta(f, "");
    }
    w.fake
        .archives
        .lock()
        .unwrap()
        .insert("/work/vmlinuz".into(), file_tar("vmlinuz", "bzImage"));
    w.fake.archives.lock().unwrap().insert(
        "/out".into(),
        tar_of(
            "out",
            vec![Entry::file(
                "usr/lib/modules/6.12.1-amd64/kernel/drivers/block/virtio_blk.ko.xz",
                "ko",
                0o644,
                1,
            )],
        ),
    );
    kernel::build(&w.ctx(), &crate::digest::Digest::of(b"k"), "strata.kernel.test")
        .await
        .unwrap();
    let execs = w.execs();
    assert_eq!(execs[1][0], "strata-kernel-fetch");
    assert_eq!(execs[1][4..], ["no".to_string(), "linux-image-amd64".into()]);
    assert_eq!(execs[2], ["strata-kernel-assemble", "6.12.1-amd64"]);
    assert!(
        w.fake.calls().contains(&Call::PutArchive("/work".into())),
        "the selection is uploaded before the assembly"
    );
    assert!(w.stored("strata.kernel.test"));
    assert_eq!(w.removes(), 1);
}

#[tokio::test]
async fn a_kernel_fetch_that_answers_no_json_is_an_error_naming_the_command() {
    let w = World::new();
    w.answer(ok(RELEASE));
    w.answer(ok("STRATA_KERNEL_VERSION=6.12.1-amd64\n"));
    let err = kernel::build(&w.ctx(), &crate::digest::Digest::of(b"k"), "strata.kernel.test")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("fetching the kernel package `linux-image-amd64`: its answer is not the JSON"),
        "{text}"
    );
    assert!(!w.stored("strata.kernel.test"));
    assert_eq!(w.removes(), 1);
}

#[tokio::test]
async fn a_cancelled_build_removes_its_container_and_stores_nothing() {
    let w = World::new();
    w.cancel.cancel();
    let err = base::build(&w.ctx(), &crate::digest::Digest::of(b"key"), "strata.base.test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert!(!w.stored("strata.base.test"));
    assert!(w.execs().is_empty());
}

/// A tar with one file `name` holding `text`.
fn file_tar(name: &str, text: &str) -> Vec<u8> {
    let mut tar = Vec::new();
    Layer::from_entries(vec![Entry::file(name, text, 0o644, 1)])
        .unwrap()
        .write_tar(&mut tar)
        .unwrap();
    tar
}
