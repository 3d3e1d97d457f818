//! Bad inputs against the real binary, table-driven: layer-set TOML, `files.source` escapes
//! and unbounded sources, key and certificate files, registry references and command-line
//! combinations. Each case must fail with a message naming the file, key or value at fault,
//! print no text of the error chain twice in a row, and write nothing: the case's directory
//! (holding the output and cache directories the command was given, and `$HOME`) is the
//! same after the run as before.
//!
//! No case needs podman or a registry: the engine socket is bogus and every reference is
//! refused before it is used, so a case that got past the check it is about would fail on
//! the engine instead, without the wanted words, and with a cache directory made.
//!
//! Every run has its address space limited to [`MEMORY_LIMIT`], so an input read without
//! bound (`/dev/zero`) ends in an allocation failure instead of the wanted error.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The address space of each run: strata needs about a fifth of it for these cases; reading
/// `/dev/zero` or a source larger than the 16 MiB limit to its end would not fit.
const MEMORY_LIMIT: u64 = 1 << 30;

/// A small valid layer set's `base.toml`; the line numbers below refer to it.
const BASE: &str = r#"[distribution]
id = "debian"
release = "trixie"

[base]
packages = ["systemd", "udev"]
remove = ["usr/share/doc"]
compression = "zstd:19"

[kernel]
package = "linux-image-amd64"
modules = ["virtio_blk", "ext4"]
"#;

/// A valid extension, `net.toml`.
const NET: &str = "[extension]\npackages = [\"curl\"]\n";

/// A 512-bit RSA key and its self-signed certificate (`openssl req -x509 -newkey rsa:512`).
const RSA_512_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAt/Vj39el11y/lDh1
mryGcOgPD5JrnjwZUMA3ALrXTFfSen852N+TmROeuTeipNd34Id1D4TaIOjSfVRW
IKM8ZwIDAQABAkEAlyAxfKNcyyCXAt2fQA/BIuCB/vj7EHOvGHfQt/jHBx94o9HA
w/Ua07pwJmfxL/gaYQ6EFFeFp/v2Ja+yOyQqAQIhAO/J9avwK4UBos3KC9JZB4/0
wRmXEe5KyI0lv6795gMXAiEAxGUr4aSWFp0fFznDtC+ejwTqA1wEVVuiS7mKWESj
ozECIQClLZDvDPVdnP/iFJFKKAv+jVJLZ3ZxmNBH8r31NG8ypwIgIcFByYaARWK7
9UH4YP/OQMaXcfxewkz9mAZLwOALQAECIFT05e2VT+0wgCpyqIMxWgUv9vzdHW4x
/SrNYw9dTV68
-----END PRIVATE KEY-----
";
const RSA_512_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCASGgAwIBAgIUEHII1Yqs9Yjo8x2pjOUHmnrqvOcwDQYJKoZIhvcNAQEL
BQAwEDEOMAwGA1UEAwwFc21hbGwwHhcNMjYxMjA0MTk1MTE5WhcNMjYxMjE0MTk1
MTE5WjAQMQ4wDAYDVQQDDAVzbWFsbDBcMA0GCSqGSIb3DQEBAQUAA0sAMEgCQQC3
9WPf16XXXL+UOHWavIZw6A8PkmuePBlQwDcAutdMV9J6fznY35OZE565N6Kk13fg
h3UPhNog6NJ9VFYgozxnAgMBAAGjUzBRMB0GA1UdDgQWBBQy4D+mCrkXDbfd5djm
gih1ToUfNTAfBgNVHSMEGDAWgBQy4D+mCrkXDbfd5djmgih1ToUfNTAPBgNVHRMB
Af8EBTADAQH/MA0GCSqGSIb3DQEBCwUAA0EAkdG68IQIZegDgONmhTdJTMSfJBi/
ZlR02yPRrS2T3Uq/+kunuX6BXYLP4MsLx8PEc/Vz5qSdw/rF3sxukGfl0g==
-----END CERTIFICATE-----
";

/// Two key pairs from `strata keygen`, made once: `a/sysext.{key,crt}`, `b/sysext.{key,crt}`.
fn key_pairs() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            let out = Command::new(env!("CARGO_BIN_EXE_strata"))
                .args(["keygen", "-o"])
                .arg(dir.path().join(name))
                .output()
                .unwrap();
            assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        dir
    })
    .path()
}

/// One bad input: what to write into the case directory `d`, the arguments (with `{d}` for
/// that directory), extra environment, and what stderr must say.
struct Case {
    name: &'static str,
    setup: Box<dyn Fn(&Path)>,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    want: Vec<&'static str>,
}

fn case(name: &'static str, setup: impl Fn(&Path) + 'static, args: &[&str], want: &[&'static str]) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        want: want.to_vec(),
    }
}

/// `strata build {d}/set -o {d}/out --cache-dir {d}/cache` and `extra`.
fn build(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["build", "{d}/set", "-o", "{d}/out", "--cache-dir", "{d}/cache"]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// The valid set: `set/base.toml` ([`BASE`]), `set/net.toml` ([`NET`]), `set/files/ok.conf`.
fn good_set(d: &Path) {
    write(&d.join("set/base.toml"), BASE);
    write(&d.join("set/net.toml"), NET);
    write(&d.join("set/files/ok.conf"), "ok\n");
}

/// The valid set with `from` replaced by `to` in `base.toml`.
fn base_edit(from: &'static str, to: &'static str) -> impl Fn(&Path) {
    move |d| {
        good_set(d);
        assert!(BASE.contains(from), "{from}");
        write(&d.join("set/base.toml"), BASE.replacen(from, to, 1));
    }
}

/// The valid set with `net.toml` replaced by `text`.
fn net(text: &'static str) -> impl Fn(&Path) {
    move |d| {
        good_set(d);
        write(&d.join("set/net.toml"), text);
    }
}

/// The valid set whose `net.toml` puts `source` into the layer; `extra` prepares the set.
fn source(source: &'static str, extra: impl Fn(&Path) + 'static) -> impl Fn(&Path) {
    move |d| {
        good_set(d);
        write(
            &d.join("set/net.toml"),
            format!(
                "[extension]\npackages = [\"curl\"]\nfiles = [{{ source = \"{source}\", path = \"usr/lib/x\" }}]\n"
            ),
        );
        extra(d);
    }
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// The valid set and the key files `key` and `cert` (written as given).
fn keys(key: &'static str, cert: &'static str) -> impl Fn(&Path) {
    move |d| {
        good_set(d);
        write(&d.join("k/key"), key);
        write(&d.join("k/crt"), cert);
    }
}

/// The valid set and key pair `pair`'s files copied to `k/key` and `k/crt`, the key from
/// `key_pair` and the certificate from `cert_pair`.
fn pair(key_pair: &'static str, cert_pair: &'static str) -> impl Fn(&Path) {
    move |d| {
        good_set(d);
        let k = key_pairs();
        write(
            &d.join("k/key"),
            std::fs::read(k.join(key_pair).join("sysext.key")).unwrap(),
        );
        write(
            &d.join("k/crt"),
            std::fs::read(k.join(cert_pair).join("sysext.crt")).unwrap(),
        );
    }
}

fn with_key(extra: &[&str]) -> Vec<String> {
    let mut a = extra.to_vec();
    a.extend(["--key", "{d}/k/key", "--cert", "{d}/k/crt"]);
    build(&a)
}

const SOURCE_KEY: &str = "net.toml:3:21: key `extension.files.source`";

fn cases() -> Vec<Case> {
    let nothing = |_: &Path| {};
    let mut cases = vec![
        // ---- base.toml ----
        case(
            "base: value of the wrong type",
            base_edit("\"zstd:19\"", "19"),
            &[],
            &["{d}/set/base.toml:8:15: key `base.compression`: invalid type: integer `19`, expected a string"],
        ),
        case(
            "base: unknown key",
            base_edit("remove =", "colour = \"red\"\nremove ="),
            &[],
            &["{d}/set/base.toml:7:1: key `base.colour`: unknown field `colour`"],
        ),
        case(
            "base: duplicate key",
            base_edit("release = \"trixie\"", "release = \"trixie\"\nrelease = \"forky\""),
            &[],
            &["{d}/set/base.toml:4:1: key `release`: duplicate key: `release` is set twice"],
        ),
        case(
            "base: missing section",
            |d: &Path| {
                good_set(d);
                write(&d.join("set/base.toml"), BASE.split("[kernel]").next().unwrap());
            },
            &[],
            &["{d}/set/base.toml", "key `kernel`", "missing field `kernel`"],
        ),
        case(
            "base: syntax error",
            base_edit("[kernel]", "[kernel"),
            &[],
            &["{d}/set/base.toml:10:8: unclosed table"],
        ),
        case(
            "base: bad package name",
            base_edit("\"udev\"", "\"Udev!\""),
            &[],
            &["base.toml:6:24: key `base.packages`: `Udev!` is not a valid Debian package name"],
        ),
        case(
            "base: package listed twice",
            base_edit("\"udev\"", "\"systemd\""),
            &[],
            &["key `base.packages`: package `systemd` is listed twice"],
        ),
        case(
            "base: bad compression",
            base_edit("\"zstd:19\"", "\"lz5\""),
            &[],
            &["base.toml:8:15: key `base.compression`", "lz5"],
        ),
        case(
            "base: unknown distribution",
            base_edit("\"debian\"", "\"arch\""),
            &[],
            &["base.toml:2:6: key `distribution.id`: unsupported distribution `arch`"],
        ),
        case(
            "base: release with a slash",
            base_edit("\"trixie\"", "\"trixie/updates\""),
            &[],
            &["base.toml:3:11: key `distribution.release`: `trixie/updates` is not a valid name (letters, digits"],
        ),
        case(
            "base: unknown architecture",
            base_edit("release = \"trixie\"", "release = \"trixie\"\narchitecture = \"sparc\""),
            &[],
            &["base.toml:4:16: key `distribution.architecture`", "sparc"],
        ),
        case(
            "base: mirror not http",
            base_edit("release = \"trixie\"", "release = \"trixie\"\nmirror = \"ftp://x\""),
            &[],
            &["base.toml:4:10: key `distribution.mirror`: mirror `ftp://x` must be an http"],
        ),
        case(
            "base: remove leaves the layer",
            base_edit("\"usr/share/doc\"", "\"../etc\""),
            &[],
            &["base.toml:7:11: key `base.remove`: `../etc` is not a path glob inside the layer"],
        ),
        case(
            "base: no modules",
            base_edit("[\"virtio_blk\", \"ext4\"]", "[]"),
            &[],
            &["base.toml:12:11: key `kernel.modules`: no modules selected"],
        ),
        case(
            "base: missing",
            |d: &Path| write(&d.join("set/net.toml"), NET),
            &[],
            &["reading the layer set's base layer {d}/set/base.toml: No such file"],
        ),
        case(
            "base: a symlink to /dev/zero",
            |d: &Path| {
                write(&d.join("set/net.toml"), NET);
                symlink("/dev/zero", &d.join("set/base.toml"));
            },
            &[],
            &["{d}/set/base.toml: it is a character device, not a regular file"],
        ),
        case(
            "base: larger than 1 MiB",
            |d: &Path| {
                good_set(d);
                write(&d.join("set/base.toml"), format!("{}{BASE}", "#\n".repeat(600_000)));
            },
            &[],
            &[
                "{d}/set/base.toml: it is 1200",
                "larger than the limit of 1048576 bytes",
            ],
        ),
        case(
            "base: not UTF-8",
            |d: &Path| {
                good_set(d);
                write(&d.join("set/base.toml"), b"[distribution]\n\xff\n");
            },
            &[],
            &["{d}/set/base.toml: it is not UTF-8 text (invalid byte at offset 15)"],
        ),
        // ---- extension TOML ----
        case(
            "extension: value of the wrong type",
            net("[extension]\npackages = [\"curl\"]\nconfext = \"yes\"\n"),
            &[],
            &["{d}/set/net.toml:3:11: key `extension.confext`: invalid type: string \"yes\", expected a boolean"],
        ),
        case(
            "extension: list where a string belongs",
            net("[extension]\npackages = [\"curl\", 7]\n"),
            &[],
            &["net.toml:2:21: key `extension.packages`: invalid type: integer `7`"],
        ),
        case(
            "extension: unknown key",
            net("[extension]\npackages = [\"curl\"]\ncolour = 1\n"),
            &[],
            &["net.toml:3:1: key `extension.colour`: unknown field `colour`"],
        ),
        case(
            "extension: duplicate key",
            net("[extension]\npackages = [\"curl\"]\npackages = [\"wget\"]\n"),
            &[],
            &["net.toml:3:1: key `packages`: duplicate key: `packages` is set twice"],
        ),
        case(
            "extension: mode not octal",
            net(
                "[extension]\npackages = [\"curl\"]\nfiles = [{ source = \"files/ok.conf\", path = \"usr/x\", mode = \"999\" }]\n",
            ),
            &[],
            &["net.toml:3:61: key `extension.files.mode`: `999` is not an octal mode"],
        ),
        case(
            "extension: mode as a number",
            net(
                "[extension]\npackages = [\"curl\"]\nfiles = [{ source = \"files/ok.conf\", path = \"usr/x\", mode = 644 }]\n",
            ),
            &[],
            &["net.toml:3:61: key `extension.files.mode`: invalid type: integer `644`, expected a string"],
        ),
        case(
            "extension: unknown key in a file entry",
            net(
                "[extension]\npackages = [\"curl\"]\nfiles = [{ source = \"files/ok.conf\", path = \"usr/x\", owner = 0 }]\n",
            ),
            &[],
            &["key `extension.files.owner`: unknown field `owner`"],
        ),
        case(
            "extension: path leaves the layer",
            net("[extension]\npackages = [\"curl\"]\nfiles = [{ source = \"files/ok.conf\", path = \"../x\" }]\n"),
            &[],
            &["net.toml:3:45: key `extension.files.path`: `../x` is not a path inside the layer"],
        ),
        case(
            "extension: bad package name",
            net("[extension]\npackages = [\"Curl!\"]\n"),
            &[],
            &["net.toml:2:13: key `extension.packages`: `Curl!` is not a valid Debian package name"],
        ),
        case(
            "extension: unknown scope",
            net("[extension]\npackages = [\"curl\"]\nscope = [\"usr\"]\n"),
            &[],
            &["net.toml:3:10: key `extension.scope`: unknown scope `usr`"],
        ),
        case(
            "extension: scope listed twice",
            net("[extension]\npackages = [\"curl\"]\nscope = [\"initrd\", \"initrd\"]\n"),
            &[],
            &["net.toml:3:20: key `extension.scope`: scope `initrd` is listed twice"],
        ),
        case(
            "extension: unknown file system",
            net("[extension]\npackages = [\"curl\"]\nfilesystem = \"ext4\"\n"),
            &[],
            &["net.toml:3:14: key `extension.filesystem`: unknown file system `ext4`"],
        ),
        case(
            "extension: holds nothing",
            net("[extension]\npackages = []\n"),
            &[],
            &["net.toml:2:12: key `extension.packages`: the package list is empty"],
        ),
        case(
            "extension: bad name",
            |d: &Path| {
                good_set(d);
                write(&d.join("set/my_net.toml"), NET);
            },
            &[],
            &["{d}/set/my_net.toml", "invalid extension name `my_net`"],
        ),
        case(
            "extension: a directory named like one",
            |d: &Path| {
                good_set(d);
                std::fs::create_dir_all(d.join("set/dir.toml")).unwrap();
            },
            &[],
            &["reading the extension layer {d}/set/dir.toml: it is a directory, not a regular file"],
        ),
        // ---- files.source ----
        case(
            "source: absolute path to a secret",
            source("/etc/shadow", nothing),
            &[],
            &[SOURCE_KEY, "`/etc/shadow`: it is an absolute path"],
        ),
        case(
            "source: /dev/zero",
            source("/dev/zero", nothing),
            &[],
            &[SOURCE_KEY, "`/dev/zero`: it is an absolute path"],
        ),
        case(
            "source: ../ out of the set",
            source("../secret.key", |d: &Path| write(&d.join("secret.key"), "PRIVATE")),
            &[],
            &[
                SOURCE_KEY,
                "`../secret.key`: it resolves to {d}/secret.key, outside the layer-set directory {d}/set",
            ],
        ),
        case(
            "source: symlink out of the set",
            source("files/key", |d: &Path| {
                write(&d.join("secret.key"), "PRIVATE");
                symlink(d.join("secret.key"), &d.join("set/files/key"));
            }),
            &[],
            &[
                SOURCE_KEY,
                "`files/key`: it resolves to {d}/secret.key, outside the layer-set directory",
            ],
        ),
        case(
            "source: symlink to a symlink out of the set",
            source("files/a", |d: &Path| {
                write(&d.join("secret.key"), "PRIVATE");
                symlink("b", &d.join("set/files/a"));
                symlink("../../secret.key", &d.join("set/files/b"));
            }),
            &[],
            &[SOURCE_KEY, "`files/a`: it resolves to {d}/secret.key, outside"],
        ),
        case(
            "source: symlink to /dev/zero",
            source("files/zero", |d: &Path| symlink("/dev/zero", &d.join("set/files/zero"))),
            &[],
            &[
                SOURCE_KEY,
                "`files/zero`: it resolves to /dev/zero, outside the layer-set directory",
            ],
        ),
        case(
            "source: a FIFO",
            source("files/fifo", |d: &Path| {
                nix::unistd::mkfifo(
                    &d.join("set/files/fifo"),
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                )
                .unwrap()
            }),
            &[],
            &[
                SOURCE_KEY,
                "`files/fifo`: cannot use {d}/set/files/fifo: it is a FIFO, not a regular file",
            ],
        ),
        case(
            "source: a directory",
            source("files", nothing),
            &[],
            &[
                SOURCE_KEY,
                "`files`: cannot use {d}/set/files: it is a directory, not a regular file",
            ],
        ),
        case(
            "source: larger than 16 MiB",
            source("files/big", |d: &Path| {
                let f = std::fs::File::create(d.join("set/files/big")).unwrap();
                f.set_len((16 << 20) + 1).unwrap();
            }),
            &[],
            &[
                SOURCE_KEY,
                "it is 16777217 bytes or more, larger than the limit of 16777216 bytes (16 MiB)",
            ],
        ),
        case(
            "source: missing",
            source("files/nope", nothing),
            &[],
            &[SOURCE_KEY, "`files/nope`: cannot read {d}/set/files/nope: No such file"],
        ),
        case(
            "source: empty",
            source("", nothing),
            &[],
            &[SOURCE_KEY, "the path is empty"],
        ),
    ];
    // The layer-set cases above all run `strata build` on the set.
    for c in &mut cases {
        if c.args.is_empty() {
            c.args = build(&[]);
        }
    }
    let more = vec![
        // ---- key and certificate files ----
        case(
            "key: empty file",
            keys("", RSA_512_CERT),
            &[],
            &["loading the signing key {d}/k/key: the file is empty; expected a PEM private key"],
        ),
        case(
            "key: not PEM",
            keys("hello\n", RSA_512_CERT),
            &[],
            &["loading the signing key {d}/k/key: the file holds no PEM private key"],
        ),
        case(
            "key: a certificate",
            keys(RSA_512_CERT, RSA_512_CERT),
            &[],
            &["loading the signing key {d}/k/key: expected a private key, found a PEM block labelled `CERTIFICATE`"],
        ),
        case(
            "certificate: a key",
            pair("a", "a"),
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--key",
                "{d}/k/key",
                "--cert",
                "{d}/k/key",
            ],
            &["loading the certificate {d}/k/key: expected a certificate, found a PEM block labelled `PRIVATE KEY`"],
        ),
        case(
            "certificate: empty file",
            |d: &Path| {
                pair("a", "a")(d);
                write(&d.join("k/crt"), "");
            },
            &[],
            &["loading the certificate {d}/k/crt: the file is empty; expected a PEM certificate"],
        ),
        case(
            "key: 512-bit RSA",
            keys(RSA_512_KEY, RSA_512_CERT),
            &[],
            &[
                "loading the signing key {d}/k/key: the private key holds a 512-bit RSA key; strata needs 1024 to 8192 bits",
            ],
        ),
        case(
            "certificate: 512-bit RSA",
            |d: &Path| {
                pair("a", "a")(d);
                write(&d.join("k/crt"), RSA_512_CERT);
            },
            &[],
            &["loading the certificate {d}/k/crt: the certificate holds a 512-bit RSA key"],
        ),
        case(
            "key and certificate of two pairs",
            pair("a", "b"),
            &[],
            &[
                "signing key {d}/k/key and certificate {d}/k/crt do not go together",
                "does not match the certificate",
            ],
        ),
        case(
            "key: missing",
            good_set,
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--key",
                "{d}/k/nope",
                "--cert",
                "{d}/k/nope.crt",
            ],
            &["reading the signing key {d}/k/nope: No such file"],
        ),
        case(
            "key: a directory",
            pair("a", "a"),
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--key",
                "{d}/k",
                "--cert",
                "{d}/k/crt",
            ],
            &["reading the signing key {d}/k: Is a directory"],
        ),
        case(
            "key without certificate",
            pair("a", "a"),
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--key",
                "{d}/k/key",
            ],
            &["--cert <FILE>"],
        ),
        case(
            "pull: empty certificate",
            |d: &Path| write(&d.join("empty.crt"), ""),
            &[
                "pull",
                "127.0.0.1:1/x:1",
                "-o",
                "{d}/pulled",
                "--cache-dir",
                "{d}/cache",
                "--cert",
                "{d}/empty.crt",
            ],
            &[
                "--cert",
                "{d}/empty.crt",
                "the file is empty; expected a PEM certificate",
            ],
        ),
        // ---- references ----
        case(
            "pull: http:// reference",
            nothing,
            &[
                "pull",
                "http://127.0.0.1:5000/x:1",
                "-o",
                "{d}/pulled",
                "--cache-dir",
                "{d}/cache",
            ],
            &[
                "`http://127.0.0.1:5000/x:1` is not a registry reference: a reference has no URL scheme: drop the `http://` and write `127.0.0.1:5000/x:1`",
            ],
        ),
        case(
            "pull: bad port",
            nothing,
            &[
                "pull",
                "127.0.0.1:99999/x:1",
                "-o",
                "{d}/pulled",
                "--cache-dir",
                "{d}/cache",
            ],
            &["`127.0.0.1:99999/x:1` is not a registry reference: `99999` is not a port number"],
        ),
        case(
            "pull: empty port",
            nothing,
            &[
                "pull",
                "registry.example:/x:1",
                "-o",
                "{d}/pulled",
                "--cache-dir",
                "{d}/cache",
            ],
            &["the port after the `:` is missing"],
        ),
        case(
            "pull: upper-case repository",
            nothing,
            &[
                "pull",
                "127.0.0.1:5000/Initrd:1",
                "-o",
                "{d}/pulled",
                "--cache-dir",
                "{d}/cache",
            ],
            &["repository component `Initrd` is invalid"],
        ),
        case(
            "pull: bad digest",
            nothing,
            &[
                "pull",
                "127.0.0.1:5000/x@sha256:12",
                "-o",
                "{d}/pulled",
                "--cache-dir",
                "{d}/cache",
            ],
            &["`127.0.0.1:5000/x@sha256:12` is not a registry reference: `sha256:12` is not a sha256 digest"],
        ),
        case(
            "pull: no registry host",
            nothing,
            &[
                "pull",
                "debian/network:13",
                "-o",
                "{d}/pulled",
                "--cache-dir",
                "{d}/cache",
            ],
            &["`debian` does not look like a registry host"],
        ),
        case(
            "push: http:// reference",
            nothing,
            &[
                "push",
                "http://127.0.0.1:5000/x:1",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
            ],
            &["drop the `http://` and write `127.0.0.1:5000/x:1`"],
        ),
        case(
            "build: --cache-from http://",
            good_set,
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--cache-from",
                "http://127.0.0.1:5000/c",
            ],
            &["--cache-from <REPO>", "drop the `http://` and write `127.0.0.1:5000/c`"],
        ),
        case(
            "build: --cache-to without a repository",
            good_set,
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--cache-to",
                "registry.example",
            ],
            &[
                "--cache-to <REPO>",
                "`registry.example` is not a registry reference: it has no repository",
            ],
        ),
        case(
            "build: --cache-from with a tag",
            good_set,
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--cache-from",
                "127.0.0.1:5000/c:1",
            ],
            &[
                "--cache-from <REPO>",
                "name a repository without a tag or digest (e.g. 127.0.0.1:5000/c)",
            ],
        ),
        // ---- command-line combinations ----
        case(
            "build: --extension twice",
            good_set,
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--extension",
                "net",
                "--extension",
                "net",
            ],
            &["--extension net is given twice; name each extension once"],
        ),
        case(
            "build: unknown --extension",
            good_set,
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--extension",
                "nope",
            ],
            &["--extension nope: the layer set {d}/set has no extension `nope` (it has: net)"],
        ),
        case(
            "build: --extension with --no-extensions",
            good_set,
            &[
                "build",
                "{d}/set",
                "-o",
                "{d}/out",
                "--cache-dir",
                "{d}/cache",
                "--extension",
                "net",
                "--no-extensions",
            ],
            &["--no-extensions", "cannot be used with"],
        ),
        case(
            "keygen: output is a file",
            |d: &Path| write(&d.join("keys"), "x"),
            &["keygen", "-o", "{d}/keys"],
            &["{d}/keys is not a directory; name a directory for sysext.key and sysext.crt"],
        ),
        case(
            "cpio: unknown compression",
            |d: &Path| write(&d.join("tree/a"), "a"),
            &["cpio", "{d}/tree", "-o", "{d}/out.cpio", "--compression", "lz4"],
            &["unknown compression `lz4`"],
        ),
    ];
    let mut more = more;
    // The key cases without arguments of their own sign with k/key and k/crt.
    for c in &mut more {
        if c.args.is_empty() {
            c.args = with_key(&[]);
        }
    }
    let mut epoch = case(
        "build: SOURCE_DATE_EPOCH not a number",
        good_set,
        &[],
        &["SOURCE_DATE_EPOCH=`yesterday`"],
    );
    epoch.args = build(&[]);
    epoch.env.push(("SOURCE_DATE_EPOCH", "yesterday"));
    cases.extend(more);
    cases.push(epoch);
    cases
}

/// Every path below `d` with its type, size, mode and (for symlinks) target.
fn snapshot(d: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let t = m.file_type();
            let what = if t.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if t.is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if t.is_fifo() {
                "fifo".to_string()
            } else {
                format!("file {} bytes, mtime {}", m.len(), m.mtime())
            };
            out.insert(path, format!("{what} mode {:o}", m.mode()));
        }
    }
    out
}

/// Run one case in a fresh directory; the problems found, if any.
fn run(c: &Case) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("home")).unwrap();
    (c.setup)(d);
    let before = snapshot(d);
    let fill = |s: &str| s.replace("{d}", d.to_str().unwrap());
    // The shell limits the address space, then becomes strata.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -v \"$0\" && exec \"$@\""])
        .arg((MEMORY_LIMIT / 1024).to_string())
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(c.args.iter().map(|a| fill(a)))
        .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
        .env("HOME", d.join("home"))
        .env("XDG_CACHE_HOME", d.join("home/.cache"))
        .env_remove("STRATA_CACHE_DIR")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("STRATA_LOG");
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.success() {
        problems.push("succeeded".to_string());
    }
    for want in &c.want {
        let want = fill(want);
        if !stderr.contains(&want) {
            problems.push(format!("stderr lacks {want:?}"));
        }
    }
    if stderr.contains("panicked") {
        problems.push("panicked".into());
    }
    if !out.stdout.is_empty() {
        problems.push(format!("wrote to stdout: {}", String::from_utf8_lossy(&out.stdout)));
    }
    for line in stderr.lines().filter(|l| l.starts_with("error: ")) {
        let parts: Vec<&str> = line.split(": ").collect();
        if let Some(w) = parts.windows(2).find(|w| w[0] == w[1]) {
            problems.push(format!("the error chain says {:?} twice in a row", w[0]));
        }
    }
    let after = snapshot(d);
    if after != before {
        let new: Vec<_> = after
            .iter()
            .filter(|(p, v)| before.get(*p) != Some(v))
            .map(|(p, _)| p)
            .collect();
        let gone: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
        problems.push(format!(
            "wrote to its directory: new or changed {new:?}, removed {gone:?}"
        ));
    }
    if !problems.is_empty() {
        problems.push(format!("stderr was:\n{stderr}"));
    }
    problems
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "case `{}` twice", c.name);
    }
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let problems = run(c);
            (!problems.is_empty()).then(|| format!("case `{}`:\n  {}", c.name, problems.join("\n  ")))
        })
        .collect();
    // The largest resident size of any child this test process waited for (strata runs).
    let peak_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    eprintln!(
        "{} bad-input cases; peak memory of a strata run: {} MiB",
        cases.len(),
        peak_kib / 1024
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // No run read an input without bound (the /dev/zero cases included).
    assert!(peak_kib < 64 * 1024, "a run peaked at {peak_kib} KiB");
}
