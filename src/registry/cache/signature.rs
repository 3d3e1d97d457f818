//! Signed cache entries: who may put a layer into a build.
//!
//! A cache entry's key annotation is only the registry's claim, and a pull verifies blobs
//! only against that registry's own manifest. So each layer strata pushes to `--cache-to`
//! gets a signature beside it, and `--cache-from` takes a layer only with a signature by a
//! certificate the user trusts.
//!
//! The signature of the layer tagged `KIND-HEX` lives under the tag `KIND-HEX.sig`: an OCI
//! image manifest with `artifactType` [`SIGNATURE_ARTIFACT`], the empty `{}` config, the
//! layer manifest's descriptor as its `subject` (so OCI 1.1 registries list it as a
//! referrer), and one blob of media type [`SIGNATURE_MEDIA_TYPE`]: the PKCS#7 detached
//! signature ([`Signer::sign`]) of [`payload`], which binds the layer's kind, its cache key
//! and its manifest digest. A reader recomputes the payload from what it computed itself
//! (the kind, the key of its own plan, the digest it fetched the manifest by) and checks it
//! against each trusted certificate: a signature for another key, another kind or another
//! manifest does not verify, whatever the registry says.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use oci_spec::image::{ImageManifest, ImageManifestBuilder, MediaType};
use strata_format::sign::{self, Certificate, Signer};

use crate::digest::{Digest, canonical_json};
use crate::registry::{Client, OCI_EMPTY, OCI_MANIFEST, Reference};
use crate::store::{Descriptor, Store};

/// `artifactType` of a cache entry's signature manifest.
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.strata.cache-signature.v1";
/// Media type of the signature blob (DER PKCS#7 `SignedData`, detached).
pub const SIGNATURE_MEDIA_TYPE: &str = "application/pkcs7-signature";
/// A signature blob larger than this is not one of ours (an RSA-4096 one is under 1 KiB).
const MAX_SIGNATURE_SIZE: u64 = 64 << 10;

/// The tag of the signature of the entry tagged `layer_tag`.
pub fn tag(layer_tag: &str) -> String {
    format!("{layer_tag}.sig")
}

/// What is signed: the layer's kind, its cache key and its manifest's digest.
pub fn payload(kind: &str, key: &Digest, manifest: &Digest) -> Vec<u8> {
    format!("strata-cache-v1\n{kind}\n{key}\n{manifest}\n").into_bytes()
}

/// The certificates `--cache-from` entries must be signed by, or the explicit choice to
/// take unsigned ones.
#[derive(Debug, Default)]
pub struct Trust {
    /// Each trusted certificate with the file it came from.
    pub certificates: Vec<(PathBuf, Certificate)>,
    /// `--cache-insecure-accept-unsigned`: take entries without a (valid) signature.
    pub accept_unsigned: bool,
}

impl Trust {
    /// Load the certificates (PEM or DER) in `files`.
    pub fn load(files: &[PathBuf], accept_unsigned: bool) -> Result<Trust> {
        let certificates = files
            .iter()
            .map(|f| Ok((f.clone(), load_certificate(f)?)))
            .collect::<Result<_>>()?;
        Ok(Trust {
            certificates,
            accept_unsigned,
        })
    }
}

fn load_certificate(file: &Path) -> Result<Certificate> {
    let bytes = std::fs::read(file).with_context(|| format!("reading the cache certificate {}", file.display()))?;
    sign::load_certificate_pem_or_der(&bytes)
        .with_context(|| format!("loading the cache certificate {}", file.display()))
}

/// The signature manifest (canonical JSON) for the layer manifest `subject` and the
/// signature blob `signature` of `size` bytes.
pub fn manifest(subject: &Descriptor, signature: &Digest, size: u64) -> Vec<u8> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(SIGNATURE_ARTIFACT))
        .config(Descriptor::new(OCI_EMPTY, Digest::of(b"{}"), 2).to_oci())
        .layers(vec![
            Descriptor::new(SIGNATURE_MEDIA_TYPE, signature.clone(), size).to_oci(),
        ])
        .subject(Descriptor::new(subject.media_type.clone(), subject.digest.clone(), subject.size).to_oci())
        .build()
        .expect("every required field is set");
    canonical_json(&manifest)
}

/// Sign the entry of `kind` with `key` whose manifest is `layer` and push the signature to
/// `repo` under the [`tag`] of its cache tag.
pub async fn push(
    client: &Client,
    store: &Store,
    repo: &Reference,
    kind: &str,
    key: &Digest,
    layer: &Descriptor,
    signer: &Signer,
) -> Result<()> {
    let der = signer
        .sign(&payload(kind, key, &layer.digest))
        .context("signing the cache entry")?;
    // RSA PKCS#1 v1.5 is deterministic: the same entry and key give the same manifest,
    // which is not sent again.
    let sig_tag = tag(&super::tag(kind, key));
    let data = manifest(layer, &Digest::of(&der), der.len() as u64);
    if client.manifest_digest(&repo.repository, &sig_tag).await? == Some(Digest::of(&data)) {
        return Ok(());
    }
    let blobs = [
        Descriptor::new(SIGNATURE_MEDIA_TYPE, store.put_blob(&der)?, der.len() as u64),
        Descriptor::new(OCI_EMPTY, store.put_blob(b"{}")?, 2),
    ];
    for b in &blobs {
        client.push_blob(store, &repo.repository, b, &[]).await?;
    }
    client
        .put_manifest(&repo.repository, &sig_tag, OCI_MANIFEST, data.into())
        .await?;
    Ok(())
}

/// Who vouched for a cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by the trusted certificate from this file.
    Signed(PathBuf),
    /// Not validly signed, taken because of `--cache-insecure-accept-unsigned`; the reason.
    AcceptedUnsigned(String),
}

/// Check the signature of the entry of `kind` with `key`, whose manifest was fetched by its
/// digest `manifest`. An error says why the entry is refused.
pub async fn check(
    client: &Client,
    store: &Store,
    repo: &Reference,
    kind: &str,
    key: &Digest,
    manifest: &Digest,
    trust: &Trust,
) -> Result<Verdict> {
    match signed_by(client, store, repo, kind, key, manifest, trust).await {
        Ok(file) => Ok(Verdict::Signed(file)),
        Err(e) if trust.accept_unsigned => Ok(Verdict::AcceptedUnsigned(format!("{e:#}"))),
        Err(e) => Err(e),
    }
}

async fn signed_by(
    client: &Client,
    store: &Store,
    repo: &Reference,
    kind: &str,
    key: &Digest,
    manifest: &Digest,
    trust: &Trust,
) -> Result<PathBuf> {
    let sig_tag = tag(&super::tag(kind, key));
    let at = format!("{}/{}:{sig_tag}", repo.registry, repo.repository);
    let Some(sig_digest) = client.manifest_digest(&repo.repository, &sig_tag).await? else {
        bail!("the entry is not signed (no {at})");
    };
    let fetched = client.get_manifest(&repo.repository, &sig_digest.to_string()).await?;
    let m: ImageManifest = serde_json::from_slice(&fetched.data)
        .with_context(|| format!("{at} ({sig_digest}) is not an OCI image manifest"))?;
    let artifact_type = m.artifact_type().as_ref().map(|t| t.to_string());
    if artifact_type.as_deref() != Some(SIGNATURE_ARTIFACT) {
        bail!(
            "{at} has artifactType {}, not {SIGNATURE_ARTIFACT}",
            artifact_type.as_deref().unwrap_or("(none)")
        );
    }
    let blob = match m.layers().as_slice() {
        [one] if one.media_type().to_string() == SIGNATURE_MEDIA_TYPE => one,
        _ => bail!("{at} must hold exactly one {SIGNATURE_MEDIA_TYPE} blob"),
    };
    let desc = Descriptor::from_oci(blob).with_context(|| format!("{at}: bad signature descriptor"))?;
    if desc.size > MAX_SIGNATURE_SIZE {
        bail!(
            "{at}: the signature blob is {} bytes, more than a signature ({MAX_SIGNATURE_SIZE} bytes at most)",
            desc.size
        );
    }
    client.pull_blob(store, &repo.repository, &desc).await?;
    let der = store.read_blob(&desc.digest)?;
    let content = payload(kind, key, manifest);
    let mut problems = Vec::new();
    for (file, cert) in &trust.certificates {
        match sign::verify_detached(&der, &content, cert) {
            Ok(()) => return Ok(file.clone()),
            Err(e) => problems.push(format!("{}: {e}", file.display())),
        }
    }
    if problems.is_empty() {
        bail!("{at}: no certificate to check the signature with");
    }
    bail!(
        "{at} is not a valid signature of this layer ({kind}, key {key}, manifest {manifest}) by a trusted certificate ({})",
        problems.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_binds_kind_key_and_manifest() {
        let (k, m) = (Digest::of(b"key"), Digest::of(b"manifest"));
        let p = payload("base", &k, &m);
        assert_eq!(p, format!("strata-cache-v1\nbase\n{k}\n{m}\n").into_bytes());
        assert_ne!(p, payload("kernel", &k, &m));
        assert_ne!(p, payload("base", &m, &k));
    }

    #[test]
    fn signature_manifests_name_their_subject() {
        let subject = Descriptor::new(OCI_MANIFEST, Digest::of(b"layer"), 123);
        let data = manifest(&subject, &Digest::of(b"sig"), 456);
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(v["artifactType"], SIGNATURE_ARTIFACT);
        assert_eq!(v["subject"]["digest"], Digest::of(b"layer").to_string());
        assert_eq!(v["subject"]["size"], 123);
        assert_eq!(v["layers"][0]["mediaType"], SIGNATURE_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["size"], 456);
        assert_eq!(tag("base-abc"), "base-abc.sig");
        assert!(
            format!("127.0.0.1:5000/cache:{}", tag(&"x".repeat(120)))
                .parse::<Reference>()
                .is_ok()
        );
    }
}
