//! Extension images from extension layers: a layer's `/usr` and `/opt` become
//! `NAME.sysext.raw`, and its `/etc` becomes `NAME.confext.raw` when the extension asks for
//! one ([`strata_format::sysext`] makes both). Images are cached in the store under a key
//! of everything that decides their bytes, so a rebuild with nothing changed only copies.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use strata_format::ddi::Arch;
use strata_format::layer::{EntryKind, Layer};
use strata_format::sign::{self, Signer};
use strata_format::sysext::{self, Class, ExtensionRelease, ImageOptions};
use tracing::{info, warn};

use crate::config::{Extension, Filesystem};
use crate::digest::{Digest, canonical_json};
use crate::plan::{LAYER_FORMAT, STRATA_VERSION};
use crate::products::Product;
use crate::store::image as oci;
use crate::store::{Descriptor, Store};

/// Media type of an extension image blob (the Discoverable Disk Image name for it).
pub const IMAGE_MEDIA_TYPE: &str = "application/vnd.efi.img";
/// Where the base initrd carries the certificate systemd checks extension signatures with.
pub const CERT_PATH: &str = "etc/verity.d/strata-sysext.crt";
const ANN_ROOT_HASH: &str = "io.strata.root-hash";
const ANN_LEFT_OUT: &str = "io.strata.left-out";

/// A signing key and its certificate, checked to belong together.
pub struct Signing {
    pub signer: Signer,
    /// The certificate as PEM, for the initrd's `/etc/verity.d/`.
    pub certificate_pem: Vec<u8>,
    /// SHA-256 of the certificate (part of every signed image's cache key).
    pub fingerprint: String,
}

impl Signing {
    /// Load `key` (PEM private key) and `cert` (PEM certificate). A missing file, a key of
    /// the wrong type, or a certificate for another key is an error naming the file.
    pub fn load(key: &Path, cert: &Path) -> Result<Signing> {
        let key_pem = std::fs::read(key).with_context(|| format!("reading the signing key {}", key.display()))?;
        let cert_pem = std::fs::read(cert).with_context(|| format!("reading the certificate {}", cert.display()))?;
        let private =
            sign::load_private_key(&key_pem).with_context(|| format!("loading the signing key {}", key.display()))?;
        let certificate =
            sign::load_certificate(&cert_pem).with_context(|| format!("loading the certificate {}", cert.display()))?;
        let fingerprint = sign::certificate_fingerprint(&certificate)?;
        let signer = Signer::new(private, certificate).with_context(|| {
            format!(
                "signing key {} and certificate {} do not go together",
                key.display(),
                cert.display()
            )
        })?;
        let certificate_pem = pem_certificate(&cert_pem);
        Ok(Signing {
            signer,
            certificate_pem,
            fingerprint,
        })
    }
}

/// The first PEM certificate block of `text` (a file may hold more, or comments).
fn pem_certificate(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let begin = text.find("-----BEGIN CERTIFICATE-----");
    let end = text
        .find("-----END CERTIFICATE-----")
        .map(|e| e + "-----END CERTIFICATE-----".len());
    match (begin, end) {
        (Some(b), Some(e)) if b < e => format!("{}\n", &text[b..e]).into_bytes(),
        _ => text.as_bytes().to_vec(),
    }
}

/// systemd's architecture for a Debian architecture name.
pub fn arch(debian: &str) -> Result<Arch> {
    match debian {
        "amd64" => Ok(Arch::X86_64),
        "arm64" => Ok(Arch::Arm64),
        other => bail!("no extension images for architecture `{other}` (strata knows amd64 and arm64)"),
    }
}

/// The extension-release of `x` on a base with `os_release`.
pub fn release(os_release: &str, arch: Arch, x: &Extension) -> ExtensionRelease {
    let mut r = ExtensionRelease::from_os_release(os_release, arch);
    r.scope = x.scope.clone();
    if x.reload_manager {
        r.extra.push(("EXTENSION_RELOAD_MANAGER".into(), "1".into()));
    }
    if !x.restart_units.is_empty() {
        r.extra
            .push(("EXTENSION_RESTART_UNITS".into(), x.restart_units.join(" ")));
    }
    r
}

/// Makes an erofs file system from a tar (strata has no erofs writer of its own; the build
/// runs `mkfs.erofs` in the builder container).
#[allow(async_fn_in_trait)] // implemented and awaited inside strata only; no Send bound needed
pub trait ErofsMaker {
    /// The erofs image of the tree in `tar`, with file system UUID `uuid`, built at `epoch`.
    async fn erofs(&self, tar: Vec<u8>, uuid: &str, epoch: u64) -> Result<Vec<u8>>;
    /// What decides the `mkfs.erofs` it runs (the builder image tag): part of the image key,
    /// so a new erofs-utils in the builder makes new images.
    fn tool(&self) -> &str;
}

/// The file system part of an image's cache key.
fn filesystem_key(filesystem: Filesystem, squashfs: &strata_format::squashfs::Options, erofs_tool: &str) -> String {
    match filesystem {
        Filesystem::Squashfs => format!("{squashfs:?}"),
        Filesystem::Erofs => format!("{EROFS_OPTIONS} in {erofs_tool}"),
    }
}

#[derive(Serialize)]
struct ImageKey<'a> {
    strata: &'a str,
    layer_format: u32,
    layer: &'a Digest,
    name: &'a str,
    class: &'a str,
    release: &'a str,
    certificate: Option<&'a str>,
    filesystem: String,
    /// Whether /etc goes into a confext: decides what the sysext lists as left out.
    confext: bool,
}

/// What `mkfs.erofs` is asked for (part of the image key).
pub const EROFS_OPTIONS: &str = "mkfs.erofs -zlz4hc --mkfs-time";

/// Make (or take from the store) the images of extension `x` from its layer blob and write
/// them into `output`. Returns their products.
#[allow(clippy::too_many_arguments)]
pub async fn write_images(
    store: &Store,
    x: &Extension,
    layer_blob: &Digest,
    release: &ExtensionRelease,
    epoch: u64,
    signing: Option<&Signing>,
    output: &Path,
    erofs: &impl ErofsMaker,
) -> Result<Vec<Product>> {
    let mut classes = vec![Class::Sysext];
    if x.confext {
        classes.push(Class::Confext);
    }
    let opts = |class| ImageOptions {
        class,
        squashfs: strata_format::squashfs::Options {
            mtime: u32::try_from(epoch).unwrap_or(u32::MAX),
            ..Default::default()
        },
    };
    let mut products = Vec::new();
    // The layer, split once into what each class carries, with the sysext's left-out paths;
    // read only if an image is not cached.
    let mut parts: Option<(sysext::Split, Vec<String>)> = None;
    for class in classes {
        let (kind, class_name) = match class {
            Class::Sysext => ("sysext", "sysext"),
            _ => ("confext", "confext"),
        };
        let o = opts(class);
        let key = ImageKey {
            strata: STRATA_VERSION,
            layer_format: LAYER_FORMAT,
            layer: layer_blob,
            name: &x.name,
            class: class_name,
            release: &release.render_as(class),
            certificate: signing.map(|s| s.fingerprint.as_str()),
            filesystem: filesystem_key(x.filesystem, &o.squashfs, erofs.tool()),
            confext: x.confext,
        };
        let ref_name = format!("strata.image.{}", Digest::of(&canonical_json(&key)).hex());
        let file = class.file_name(&x.name);
        let path = output.join(&file);
        let (digest, size, root_hash, left_out) = match cached(store, &ref_name)? {
            Some(c) => {
                crate::store::write_atomic(&path, &c.bytes)?;
                (c.digest, c.bytes.len() as u64, c.root_hash, c.left_out)
            }
            None => {
                let start = std::time::Instant::now();
                tracing::info!(%file, "making the extension image");
                if parts.is_none() {
                    let mut l = oci::read_layer_blob(store, layer_blob)?;
                    let left_out = left_out_of(&l, x.confext);
                    l.remove_where(|e| is_whiteout(&e.path));
                    parts = Some((sysext::split_layer(l)?, left_out));
                }
                let (split, sysext_left_out) = parts.as_ref().expect("split above");
                let (part, left_out) = match class {
                    Class::Sysext => (&split.usr_opt, sysext_left_out.clone()),
                    _ => (&split.etc, vec![]),
                };
                let what = || format!("making {file} from extension `{}` ({})", x.name, x.file.display());
                let signer = signing.map(|s| &s.signer);
                let image = match x.filesystem {
                    Filesystem::Squashfs => {
                        // squashfs + zstd is CPU work: on a blocking thread, off the async workers.
                        let (part, release, name, signer, o) = (
                            part.clone(),
                            release.clone(),
                            x.name.clone(),
                            signer.cloned(),
                            o.clone(),
                        );
                        crate::pipeline::blocking(move || {
                            Ok(sysext::build_image(&part, &release, &name, signer.as_ref(), &o)?)
                        })
                        .await
                        .with_context(what)?
                    }
                    Filesystem::Erofs => {
                        let tree = sysext::filesystem_layer(part, release, &x.name, &o).with_context(what)?;
                        let mut tar = Vec::with_capacity(tree.data_size() as usize);
                        tree.write_tar(&mut tar)?;
                        let uuid = strata_format::ids::content_uuid([tar.as_slice()]).to_string();
                        let fs = erofs.erofs(tar, &uuid, epoch).await.with_context(what)?;
                        sysext::image_from_filesystem(fs, release.architecture, signer).with_context(what)?
                    }
                };
                let digest = store.put_blob(&image.bytes)?;
                let left_blob = store.put_blob(&serde_json::to_vec(&left_out)?)?;
                let root_hash = image.root_hash.to_string();
                store.set_ref(
                    &ref_name,
                    Descriptor {
                        annotations: HashMap::from([
                            (ANN_ROOT_HASH.into(), root_hash.clone()),
                            (ANN_LEFT_OUT.into(), left_blob.to_string()),
                        ]),
                        ..Descriptor::new(IMAGE_MEDIA_TYPE, digest.clone(), image.bytes.len() as u64)
                    },
                )?;
                crate::store::write_atomic(&path, &image.bytes)?;
                info!(image = %file, bytes = image.bytes.len(), root_hash = %root_hash, signed = image.layout.signed(), elapsed = ?start.elapsed(), "extension image written");
                (digest, image.bytes.len() as u64, root_hash, left_out)
            }
        };
        if !left_out.is_empty() {
            let shown: Vec<&str> = left_out.iter().take(8).map(String::as_str).collect();
            warn!(
                image = %file,
                count = left_out.len(),
                "{} path(s) of extension `{}` are not in the image (listed under left_out in products.json): {}{}",
                left_out.len(),
                x.name,
                shown.join(", "),
                if left_out.len() > shown.len() { ", …" } else { "" }
            );
        }
        products.push(Product {
            kind: kind.into(),
            file,
            sha256: digest.hex().into(),
            size,
            version: None,
            compression: None,
            members: vec![],
            root_hash: Some(root_hash),
            signed: Some(signing.is_some()),
            left_out,
        });
    }
    Ok(products)
}

/// An image taken from the store.
struct Cached {
    bytes: Vec<u8>,
    digest: Digest,
    root_hash: String,
    left_out: Vec<String>,
}

/// The cached image named `ref_name`. A corrupt or incomplete entry counts as absent (the
/// store removes a blob whose digest does not verify).
fn cached(store: &Store, ref_name: &str) -> Result<Option<Cached>> {
    let Some(desc) = store.get_ref(ref_name)? else {
        return Ok(None);
    };
    let (Some(root_hash), Some(left)) = (desc.annotations.get(ANN_ROOT_HASH), desc.annotations.get(ANN_LEFT_OUT))
    else {
        return Ok(None);
    };
    let left: Digest = left.parse()?;
    let read = |d: &Digest| match store.read_blob(d) {
        Ok(data) => Ok(Some(data)),
        Err(e @ crate::store::Error::DigestMismatch { .. }) => {
            warn!("{e}");
            Ok(None)
        }
        Err(crate::store::Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    };
    let (Some(bytes), Some(left)) = (read(&desc.digest)?, read(&left)?) else {
        return Ok(None);
    };
    let left_out: Vec<String> = serde_json::from_slice(&left).context("reading a cached image's left-out list")?;
    Ok(Some(Cached {
        bytes,
        digest: desc.digest,
        root_hash: root_hash.clone(),
        left_out,
    }))
}

/// Whether `path` is an OCI whiteout (`dir/.wh.name`).
fn is_whiteout(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|f| f.starts_with(strata_format::layer::WHITEOUT_PREFIX))
}

/// What of `layer` neither the sysext nor (with `confext`) the confext carries: every path
/// but directories and whiteouts (deletions of base files, which no extension can make),
/// sorted.
fn left_out_of(layer: &Layer, confext: bool) -> Vec<String> {
    layer
        .entries()
        .iter()
        .filter(|e| e.kind != EntryKind::Dir && !is_whiteout(&e.path))
        .filter(|e| !(Class::Sysext.contains(&e.path) || confext && Class::Confext.contains(&e.path)))
        .map(|e| e.path.clone())
        .collect()
}

/// The extra initrd member that carries the signing certificate (for systemd's userspace
/// verification of extension signatures).
pub fn certificate_layer(signing: &Signing, epoch: u64) -> Result<Layer> {
    use strata_format::layer::Entry;
    Ok(Layer::from_entries(vec![
        Entry::dir("etc", 0o755, epoch),
        Entry::dir("etc/verity.d", 0o755, epoch),
        Entry::file(CERT_PATH, signing.certificate_pem.clone(), 0o644, epoch),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erofs_image_key_covers_the_builder_image() {
        let o = strata_format::squashfs::Options::default();
        let a = filesystem_key(Filesystem::Erofs, &o, "localhost/strata-builder-debian:aaaa");
        let b = filesystem_key(Filesystem::Erofs, &o, "localhost/strata-builder-debian:bbbb");
        assert_ne!(a, b, "a new builder image (a new mkfs.erofs) must make a new image key");
        assert!(a.contains(EROFS_OPTIONS));
        let squashfs = filesystem_key(Filesystem::Squashfs, &o, "localhost/strata-builder-debian:aaaa");
        assert_eq!(
            squashfs,
            filesystem_key(Filesystem::Squashfs, &o, "other"),
            "strata's own squashfs writer needs no builder"
        );
    }

    #[test]
    fn pem_certificate_is_cut_from_surrounding_text() {
        let text = b"subject=CN=x\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\ntrailing\n";
        assert_eq!(
            pem_certificate(text),
            b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
        );
    }

    #[test]
    fn left_out_lists_files_outside_the_merged_directories() {
        use strata_format::layer::Entry;
        let l = Layer::from_entries(vec![
            Entry::file("usr/bin/sshd", "x", 0o755, 1),
            Entry::file("etc/ssh/sshd_config", "y", 0o644, 1),
            Entry::file("var/lib/x", "z", 0o644, 1),
        ])
        .unwrap();
        assert_eq!(left_out_of(&l, false), ["etc/ssh/sshd_config", "var/lib/x"]);
        assert_eq!(left_out_of(&l, true), ["var/lib/x"]);
    }

    #[test]
    fn erofs_uuids_are_the_content_uuids_of_the_tar() {
        // The value `content_uuid` (here before strata_format::ids) gave: the hyphenated
        // lower-case text mkfs.erofs -U takes.
        let u = strata_format::ids::content_uuid([b"strata".as_slice()]).to_string();
        assert_eq!(u, "82ba7e1f-6f41-41d3-a48b-b4f785ca3199");
    }

    #[test]
    fn reload_and_restart_units_go_into_the_extension_release() {
        let dir = tempfile::tempdir().unwrap();
        let x = crate::config::extension::parse(
            &dir.path().join("storage.toml"),
            "[extension]\npackages = [\"cryptsetup-bin\"]\nreload-manager = true\n\
             restart-units = [\"cryptsetup.target\", \"remote-cryptsetup.target\"]\n",
            dir.path(),
            &crate::distro::debian::Debian,
        )
        .unwrap();
        let text = release("ID=debian\n", Arch::X86_64, &x).render();
        assert!(
            text.contains("EXTENSION_RELOAD_MANAGER=1\n")
                && text.contains("EXTENSION_RESTART_UNITS=\"cryptsetup.target remote-cryptsetup.target\"\n"),
            "{text}"
        );
    }

    #[test]
    fn architectures() {
        assert_eq!(arch("amd64").unwrap(), Arch::X86_64);
        assert!(arch("s390x").unwrap_err().to_string().contains("`s390x`"));
    }
}
