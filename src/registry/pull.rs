//! `strata pull REF --output DIR`: fetch products pushed by `strata push` (or by any tool
//! that writes the same artifacts) and install them as files.
//!
//! `REF` names a product artifact (`REPO:TAG-initrd`, `REPO:TAG-sysext-network`, …) or the
//! index of a whole build (`REPO:TAG`: every product in it). Each manifest must be an OCI
//! artifact of a type strata knows ([`crate::registry::artifact::PRODUCT_TYPES`]) with exactly one blob of
//! that type's media type and, in `org.opencontainers.image.title`, a file name its kind may
//! have ([`artifact::check_file_name`]: `vmlinuz[-VERSION]`, `initrd[.EXT|-SUFFIX]`,
//! `NAME.sysext.raw`; never `products.json`). Everything is checked before any blob is
//! downloaded.
//! Blobs go through the local store (verified by digest and size on the way in), are hashed
//! again while they are copied out, and each file is written atomically (temporary file,
//! fsync, rename), mode 0644.
//!
//! With `--cert`, each sysext is also checked against the certificate before it is installed
//! ([`strata_format::ddi_verify`]: signature, root hash, the whole verity tree); `--cert`
//! with any other product is an error. All files of one pull are staged as temporary files
//! in the output directory and renamed into place only when every one of them passed, so a
//! refused pull leaves nothing behind.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use sha2::Digest as _;

use crate::digest::Digest;
use crate::registry::artifact::{self, ANN_TITLE, PRODUCT_TYPES, ProductType};
use crate::registry::{Client, ClientOptions, FetchedManifest, OCI_INDEX, OCI_MANIFEST, Reference};
use crate::store::atomic::AtomicFile;
use crate::store::{Descriptor, Store};
use strata_format::ddi_verify;
use strata_format::sign::Certificate;

/// What `strata pull` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host[:port]/repository:tag` (or `@sha256:…`).
    pub reference: String,
    /// Where the files go.
    pub output: PathBuf,
    /// The cache directory whose store the blobs pass through.
    pub cache_dir: PathBuf,
    /// A certificate to check a sysext's verity signature against.
    pub cert: Option<PathBuf>,
    pub client: ClientOptions,
}

/// One file written.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `initrd`, `kernel`, `sysext`.
    pub kind: String,
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    /// Bytes received from the registry (0 when the store had the blob).
    pub bytes_received: u64,
}

/// A product manifest checked and ready to be fetched.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    ptype: ProductType,
    blob: Descriptor,
    file: String,
}

fn known_types() -> String {
    PRODUCT_TYPES
        .iter()
        .map(|t| t.artifact_type)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check a product manifest (media type, artifact type, its one blob, the file name).
fn check_product(media_type: &str, data: &[u8]) -> Result<Plan> {
    if media_type != OCI_MANIFEST {
        bail!("media type `{media_type}` is not a strata product (expected {OCI_MANIFEST} or {OCI_INDEX})");
    }
    let m: ImageManifest = serde_json::from_slice(data).context("not a valid OCI manifest")?;
    if let Some(t) = m.media_type().as_ref().filter(|t| **t != MediaType::ImageManifest) {
        bail!("the manifest calls itself `{t}`, not {OCI_MANIFEST}");
    }
    // Artifacts made before `artifactType` existed carry the type as the config's media type.
    let artifact_type = match m.artifact_type() {
        Some(t) => t.to_string(),
        None if *m.config().media_type() != MediaType::EmptyJSON => m.config().media_type().to_string(),
        None => bail!(
            "the manifest has no artifactType, so it is not a strata product (expected one of {})",
            known_types()
        ),
    };
    let Some(ptype) = artifact::product_type_of_artifact(&artifact_type) else {
        bail!(
            "artifact type `{artifact_type}` is not a product strata knows (expected one of {})",
            known_types()
        );
    };
    let [blob] = m.layers().as_slice() else {
        bail!(
            "a {} artifact has exactly one blob; this one has {}",
            ptype.kind,
            m.layers().len()
        );
    };
    let blob = Descriptor::from_oci(blob).context("not a valid OCI manifest")?;
    if blob.media_type != ptype.media_type {
        bail!(
            "the blob's media type `{}` is not `{}` as a {} needs",
            blob.media_type,
            ptype.media_type,
            ptype.kind
        );
    }
    let file = blob
        .annotations
        .get(ANN_TITLE)
        .or(m.annotations().as_ref().and_then(|a| a.get(ANN_TITLE)))
        .with_context(|| format!("no {ANN_TITLE} annotation names the {} file", ptype.kind))?;
    check_file_name(file, ptype)?;
    let file = file.clone();
    Ok(Plan { ptype, blob, file })
}

/// A file name a product of its kind may have ([`artifact::check_file_name`]).
fn check_file_name(name: &str, ptype: ProductType) -> Result<()> {
    artifact::check_file_name(ptype.kind, name)
}

/// Fetch `opts.reference` and install its product(s) into `opts.output`.
pub async fn run(opts: &Options) -> Result<Vec<Pulled>> {
    let cert = opts.cert.as_deref().map(load_certificate).transpose()?;
    let reference: Reference = opts.reference.parse()?;
    let repo = &reference.repository;
    let client = Client::new(&reference.registry, opts.client.clone())?;
    let top = client
        .get_manifest(repo, &reference.manifest_ref())
        .await
        .with_context(|| format!("fetching {reference}"))?;
    let manifests: Vec<FetchedManifest> = if top.media_type == OCI_INDEX {
        let index: Vec<Descriptor> = serde_json::from_slice::<ImageIndex>(&top.data)
            .and_then(|index| crate::store::descriptors(index.manifests()))
            .with_context(|| format!("{reference}: not a valid OCI index"))?;
        if index.is_empty() {
            bail!("{reference}: the index lists no products");
        }
        let mut children = Vec::new();
        for child in &index {
            let at = reference.with_digest(&child.digest);
            if child.media_type != OCI_MANIFEST {
                bail!(
                    "{at}: media type `{}` is not a strata product (expected {OCI_MANIFEST})",
                    child.media_type
                );
            }
            // Fetched by digest: verified against it.
            let m = client
                .get_manifest(repo, &child.digest.to_string())
                .await
                .with_context(|| format!("fetching {at}"))?;
            if m.data.len() as u64 != child.size {
                bail!(
                    "{at}: the index says {} bytes, the manifest has {}",
                    child.size,
                    m.data.len()
                );
            }
            children.push(m);
        }
        children
    } else {
        vec![top]
    };
    let mut plans = Vec::new();
    let mut names = BTreeSet::new();
    for m in &manifests {
        let at = reference.with_digest(&m.digest);
        let plan = check_product(&m.media_type, &m.data).with_context(|| format!("refusing {at}"))?;
        if !names.insert(plan.file.clone()) {
            bail!("{reference}: two products would both be written to {}", plan.file);
        }
        plans.push(plan);
    }
    if let (Some(path), Some(plan)) = (
        &opts.cert,
        plans
            .iter()
            .find(|p| artifact::extension_suffix(p.ptype.kind).is_none()),
    ) {
        bail!(
            "--cert {}: only a sysext or confext carries a verity signature to check, and {reference} holds the {} `{}`; \
             pull it without --cert",
            path.display(),
            plan.ptype.kind,
            plan.file
        );
    }

    std::fs::create_dir_all(&opts.output).with_context(|| format!("creating {}", opts.output.display()))?;
    crate::store::atomic::remove_stale(&opts.output)?;
    let store_dir = opts.cache_dir.join("oci");
    let store = Store::open(&store_dir).with_context(|| format!("opening the store {}", store_dir.display()))?;
    let mut pulled = Vec::new();
    let mut staged = Vec::new();
    for plan in plans {
        let dest = opts.output.join(&plan.file);
        let what = format!("{}@{}", reference.registry, plan.blob.digest);
        let mut received = client
            .pull_blob(&store, repo, &plan.blob)
            .await
            .with_context(|| format!("downloading {what}"))?;
        let file = match stage(&store, &plan.blob, &dest, cert.as_ref()) {
            Ok(file) => file,
            // Signed for someone else or tampered with before it was pushed: the blob is what
            // the registry promised, so downloading it again would not help.
            Err(e) if e.downcast_ref::<ddi_verify::Error>().is_some() => return Err(e),
            Err(e) => {
                // The store's copy (from an earlier pull) is damaged: fetch it once more.
                tracing::warn!("{e:#}; downloading it again");
                std::fs::remove_file(store.blob_path(&plan.blob.digest)).ok();
                received += client
                    .pull_blob(&store, repo, &plan.blob)
                    .await
                    .with_context(|| format!("downloading {what}"))?;
                stage(&store, &plan.blob, &dest, cert.as_ref())?
            }
        };
        staged.push((file, dest.clone()));
        pulled.push(Pulled {
            kind: plan.ptype.kind.into(),
            path: dest,
            digest: plan.blob.digest.clone(),
            size: plan.blob.size,
            bytes_received: received,
        });
    }
    for (file, dest) in staged {
        persist(file, &dest)?;
    }
    Ok(pulled)
}

/// Read the certificate for `--cert` (PEM or DER).
fn load_certificate(path: &Path) -> Result<Certificate> {
    let bytes = std::fs::read(path).with_context(|| format!("--cert: reading {}", path.display()))?;
    strata_format::sign::load_certificate_pem_or_der(&bytes)
        .with_context(|| format!("--cert: {} is not an X.509 certificate", path.display()))
}

/// Copy and install in one step.
#[cfg(test)]
fn install(store: &Store, desc: &Descriptor, dest: &Path) -> Result<()> {
    persist(stage(store, desc, dest, None)?, dest)
}

/// Copy the blob `desc` from the store to a temporary file next to `dest`, hashing on the
/// way; fails unless it has the right digest and size and, given a certificate, is a sysext
/// image signed for it. The file is synced; [`persist`] puts it in place.
fn stage(store: &Store, desc: &Descriptor, dest: &Path, cert: Option<&Certificate>) -> Result<AtomicFile> {
    let src = store.blob_path(&desc.digest);
    let mut input = std::fs::File::open(&src).with_context(|| format!("opening {}", src.display()))?;
    let mut tmp = AtomicFile::beside(dest)?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        size += n as u64;
    }
    let found = Digest::from_hasher(hasher);
    if found != desc.digest || size != desc.size {
        bail!(
            "blob {} in the store at {} hashes to {found} ({size} bytes), not to {} ({} bytes)",
            desc.digest,
            store.root().display(),
            desc.digest,
            desc.size
        );
    }
    tmp.flush()
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    let file = tmp.as_file();
    if let Some(cert) = cert {
        let verified = ddi_verify::verify(file, cert).with_context(|| {
            format!(
                "refusing {}: it is not a sysext image signed for the certificate `{}`",
                dest.display(),
                cert.tbs_certificate().subject()
            )
        })?;
        tracing::info!(
            "{}: signature and verity root hash {} verified",
            dest.display(),
            verified.root_hash
        );
    }
    Ok(tmp)
}

/// Rename a staged file to `dest` (fsync, rename, directory fsync).
fn persist(tmp: AtomicFile, dest: &Path) -> Result<()> {
    tmp.commit(dest).with_context(|| format!("writing {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn manifest(kind: &str, file: &str) -> Vec<u8> {
        let t = artifact::product_type(kind).unwrap();
        crate::registry::push::artifact_manifest(t, file, Digest::of(b"x"), 1, &BTreeMap::new())
    }

    #[test]
    fn accepts_strata_products() {
        let p = check_product(OCI_MANIFEST, &manifest("sysext", "network.sysext.raw")).unwrap();
        assert_eq!((p.ptype.kind, p.file.as_str()), ("sysext", "network.sysext.raw"));
        let p = check_product(OCI_MANIFEST, &manifest("initrd", "initrd.cpio.zst")).unwrap();
        assert_eq!(p.blob.media_type, artifact::INITRD_IMAGE);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let err = |mt: &str, data: &[u8]| format!("{:#}", check_product(mt, data).unwrap_err());
        let m = manifest("sysext", "network.sysext.raw");
        let other = String::from_utf8(m.clone())
            .unwrap()
            .replace(artifact::SYSEXT_ARTIFACT, "application/vnd.example.thing");
        assert!(err(OCI_MANIFEST, other.as_bytes()).contains("artifact type `application/vnd.example.thing`"));
        let wrong_blob = String::from_utf8(m.clone())
            .unwrap()
            .replace("application/vnd.efi.img", "application/octet-stream");
        assert!(err(OCI_MANIFEST, wrong_blob.as_bytes()).contains("media type `application/octet-stream`"));
        assert!(err(crate::registry::DOCKER_MANIFEST, &m).contains("is not a strata product"));
        for bad in ["../evil.sysext.raw", ".sysext.raw", "network.raw", ".hidden.sysext.raw"] {
            let data = manifest("sysext", bad);
            assert!(check_product(OCI_MANIFEST, &data).is_err(), "{bad}");
        }
    }

    #[test]
    fn install_checks_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oci")).unwrap();
        let d = store.put_blob(b"hello").unwrap();
        let desc = Descriptor::new("x", d.clone(), 5);
        // What a killed pull leaves, and what a running one has.
        let stale = dir.path().join(format!(".tmp-{}-abc", i32::MAX));
        let running = dir.path().join(format!(".tmp-{}-abc", std::process::id()));
        std::fs::write(&stale, b"x").unwrap();
        std::fs::write(&running, b"x").unwrap();
        crate::store::atomic::remove_stale(dir.path()).unwrap();
        assert!(!stale.exists() && running.exists());
        install(&store, &desc, &dir.path().join("out")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"hello");
        std::fs::write(store.blob_path(&d), b"hellO").unwrap();
        assert!(install(&store, &desc, &dir.path().join("out2")).is_err());
        assert!(!dir.path().join("out2").exists());
    }
}
