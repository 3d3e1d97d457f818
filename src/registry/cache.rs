//! The registry as a shared layer cache: `strata build --cache-from REPO --cache-to REPO`.
//!
//! `REPO` is `host[:port]/repository` without a tag. A layer of kind `KIND` (`base`,
//! `kernel`, `ext-NAME`) whose cache key is `sha256:HEX` lives there under the tag
//! `KIND-HEX` (e.g. `base-3f0c…`, 69 characters), as the same manifest the local store
//! holds, byte for byte, with its signature under `KIND-HEX.sig` (the `signature` module).
//!
//! Trust: a cache registry is not trusted. A layer from `--cache-from` is used only when
//! it is signed by a certificate the user trusts (`--cache-trust`, by default the
//! certificate of `--cache-cert` or `--cert`) for exactly this kind, cache key and
//! manifest; everything else is built. `--cache-insecure-accept-unsigned` is the explicit
//! way out (each layer taken that way is a warning).
//!
//! - Before a layer the local store lacks is built, its tag is looked up (`HEAD`) in the
//!   `--cache-from` repository. If it is there, its manifest must be a layer of that kind made
//!   for that key (the `io.strata.key` annotation) and signed as above; then it is pulled
//!   under a staging name, every blob verified, every layer tar read as a build reads it
//!   (paths, links, size limit), and only then named as the layer: no container is started
//!   for it. A lookup, signature, pull or check that fails is a warning and the layer is
//!   built: the cache only ever saves work, and a refused entry leaves no name behind.
//! - After the layers are in the local store (built, pulled or already there), each one the
//!   `--cache-to` repository lacks under its tag is pushed, and signed with
//!   `--cache-key`/`--cache-cert` (by default `--key`/`--cert`). A failed push fails the
//!   build: the user asked for the cache to be filled.

pub(crate) mod signature;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use oci_spec::image::ImageManifest;
use strata_format::sign::Signer;
use tracing::{info, warn};

use crate::digest::Digest;
use crate::registry::{self, Client, ClientOptions, OCI_MANIFEST, PushOptions, Reference};
use crate::store::image as oci;
use crate::store::{Descriptor, Store};

pub use signature::{SIGNATURE_ARTIFACT, SIGNATURE_MEDIA_TYPE, Trust, Verdict, payload};

/// The remote cache as the user asked for it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `host[:port]/repository` to pull layers from before building them.
    pub from: Option<String>,
    /// `host[:port]/repository` to push layers to after the build.
    pub to: Option<String>,
    /// How to talk to the registries.
    pub client: ClientOptions,
    /// The key and certificate that sign the layers pushed to `to` (`--cache-key` and
    /// `--cache-cert`, by default `--key` and `--cert`).
    pub signing: Option<(PathBuf, PathBuf)>,
    /// The certificates a layer from `from` must be signed by (`--cache-trust`, by default
    /// the certificate of `signing`).
    pub trust: Vec<PathBuf>,
    /// `--cache-insecure-accept-unsigned`: take layers from `from` without a valid signature.
    pub accept_unsigned: bool,
}

impl Options {
    /// The options with the defaults of `strata build` applied: sign with `cache_signing`,
    /// else with the extension images' `signing`; trust `trust`, else the certificate that
    /// signs.
    pub fn with_defaults(
        mut self,
        cache_signing: Option<(PathBuf, PathBuf)>,
        signing: Option<(PathBuf, PathBuf)>,
    ) -> Options {
        self.signing = cache_signing.or(signing);
        if self.trust.is_empty() {
            self.trust = self.signing.iter().map(|(_, cert)| cert.clone()).collect();
        }
        self
    }
}

/// The tag of a layer of `kind` with cache `key` in a cache repository.
pub fn tag(kind: &str, key: &Digest) -> String {
    format!("{kind}-{}", key.hex())
}

/// A cache repository: `host[:port]/repository`, no tag, no digest.
pub fn parse_repository(given: &str, flag: &str) -> Result<Reference> {
    let r: Reference = given.parse().with_context(|| format!("--{flag}"))?;
    if r.tag.is_some() || r.digest.is_some() {
        bail!(
            "--{flag} {given}: name a repository without a tag or digest (e.g. {}/{}); each layer is tagged with its cache key",
            r.registry,
            r.repository
        );
    }
    Ok(r)
}

/// The registries a build reads layers from and writes them to.
pub struct RemoteCache {
    from: Option<(Client, Reference)>,
    to: Option<(Client, Reference)>,
    signer: Option<Signer>,
    trust: Trust,
}

impl RemoteCache {
    /// Check the references, keys and certificates and set up the clients (nothing is sent
    /// yet).
    pub fn new(opts: &Options) -> Result<RemoteCache> {
        let connect = |given: &Option<String>, flag: &str| -> Result<Option<(Client, Reference)>> {
            let Some(given) = given else { return Ok(None) };
            let r = parse_repository(given, flag)?;
            let client = Client::new(&r.registry, opts.client.clone()).with_context(|| format!("--{flag} {given}"))?;
            Ok(Some((client, r)))
        };
        let from = connect(&opts.from, "cache-from")?;
        let to = connect(&opts.to, "cache-to")?;
        if let (Some((_, repo)), None) = (&to, &opts.signing) {
            bail!(
                "--cache-to {repo}: the layers pushed there are signed, so that builds using them can trust them; \
                 name the key with --cache-key FILE --cache-cert FILE (or --key/--cert)"
            );
        }
        if let Some((_, repo)) = &from {
            if opts.trust.is_empty() && !opts.accept_unsigned {
                bail!(
                    "--cache-from {repo}: name the certificate its layers must be signed by with --cache-trust CERT \
                     or --cert, or pass --cache-insecure-accept-unsigned (which lets that registry put anything \
                     into your build)"
                );
            }
            if opts.accept_unsigned {
                warn!(cache = %repo, "--cache-insecure-accept-unsigned: layers without a valid signature are taken from this registry, which can then put anything into the build");
            }
        }
        let signer = match (&to, &opts.signing) {
            (Some(_), Some((key, cert))) => Some(
                crate::products::sysext::Signing::load(key, cert)
                    .context("loading the key that signs the layers pushed to --cache-to")?
                    .signer,
            ),
            _ => None,
        };
        let trust = match from {
            Some(_) => Trust::load(&opts.trust, opts.accept_unsigned)?,
            None => Trust::default(),
        };
        Ok(RemoteCache {
            from,
            to,
            signer,
            trust,
        })
    }

    /// Try to pull the layer of `kind` with `key` from the `--cache-from` repository into
    /// `store` as `name`. True when the layer is now in the store, verified, checked and
    /// signed by a trusted certificate. Failures are warnings (the caller builds the layer).
    pub async fn fetch(&self, store: &Store, kind: &str, key: &Digest, name: &str) -> bool {
        let Some((client, repo)) = &self.from else { return false };
        let tag = tag(kind, key);
        let staging = format!("strata.cache-staging.{name}");
        let result = fetch(client, repo, store, kind, key, &tag, &staging, &self.trust).await;
        let result = match result {
            Ok(Some(desc)) => store.set_ref(name, desc).map(|()| true).map_err(anyhow::Error::from),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        // Whatever happened, the staging name goes: a refused layer leaves no name behind.
        if let Err(e) = store.remove_ref(&staging) {
            warn!(layer = kind, "removing the staging name {staging} from the store: {e}");
        }
        match result {
            Ok(true) => true,
            Ok(false) => {
                info!(layer = kind, cache = %repo, %tag, "not in the remote cache; building it");
                false
            }
            Err(e) => {
                warn!(layer = kind, cache = %repo, %tag, "remote cache entry refused, building the layer instead: {e:#}");
                false
            }
        }
    }

    /// Push the layer named `name` (of `kind`, with `key`) to the `--cache-to` repository
    /// unless it holds that manifest under its tag already, and its signature beside it.
    pub async fn publish(&self, store: &Store, kind: &str, key: &Digest, name: &str) -> Result<()> {
        let Some((client, repo)) = &self.to else { return Ok(()) };
        let signer = self.signer.as_ref().expect("checked in RemoteCache::new");
        let tag = tag(kind, key);
        let remote = Reference {
            tag: Some(tag.clone()),
            digest: None,
            ..repo.clone()
        };
        let mut local = store
            .get_ref(name)?
            .with_context(|| format!("layer {name} is not in the store"))?;
        local.annotations.remove(crate::store::REF_NAME);
        let there = client
            .manifest_digest(&repo.repository, &tag)
            .await
            .with_context(|| format!("looking up {remote} in the remote cache"))?;
        if there.as_ref() == Some(&local.digest) {
            info!(layer = kind, %remote, "the remote cache has the layer already");
        } else {
            // Blobs pulled from --cache-from on the same registry are mounted, not uploaded.
            let mount_from = match &self.from {
                Some((_, from)) if from.registry == repo.registry => vec![from.repository.clone()],
                _ => vec![],
            };
            let pushed = registry::push(client, store, name, &remote, &PushOptions { mount_from })
                .await
                .with_context(|| format!("pushing the {kind} layer to the remote cache {remote}"))?;
            info!(layer = kind, %remote, bytes = pushed.stats.bytes_transferred, "layer pushed to the remote cache");
        }
        signature::push(client, store, repo, kind, key, &local, signer)
            .await
            .with_context(|| format!("pushing the signature of the {kind} layer to {remote}.sig"))?;
        Ok(())
    }
}

/// Look the layer up, check its manifest and signature, pull it as `staging` and check
/// its contents. The descriptor to name it by, or None when the cache does not have it.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    client: &Client,
    repo: &Reference,
    store: &Store,
    kind: &str,
    key: &Digest,
    tag: &str,
    staging: &str,
    trust: &Trust,
) -> Result<Option<Descriptor>> {
    let Some(digest) = client.manifest_digest(&repo.repository, tag).await? else {
        return Ok(None);
    };
    let at = format!("{}/{}:{tag} ({digest})", repo.registry, repo.repository);
    // By digest: verified against it. Checked before any blob is downloaded.
    let manifest = client.get_manifest(&repo.repository, &digest.to_string()).await?;
    check_layer_manifest(&manifest.media_type, &manifest.data, kind, key).with_context(|| at.clone())?;
    let verdict = signature::check(client, store, repo, kind, key, &digest, trust)
        .await
        .with_context(|| at.clone())?;
    let pulled = registry::pull(client, store, &repo.with_digest(&digest), staging).await?;
    if !oci::verify(store, staging)? {
        bail!("{at}: the layer does not verify in the store after the pull");
    }
    let parsed: ImageManifest = serde_json::from_slice(&manifest.data).context("not a manifest")?;
    {
        let (store, owned_kind) = (store.clone(), kind.to_string());
        tokio::task::spawn_blocking(move || check_contents(&store, &owned_kind, &parsed))
            .await
            .context("a worker thread failed")?
            .with_context(|| format!("{at}: not a usable {kind} layer"))?;
    }
    match &verdict {
        Verdict::Signed(cert) => info!(
            layer = kind,
            cache = %repo,
            %tag,
            certificate = %cert.display(),
            bytes = pulled.stats.bytes_transferred,
            blobs = pulled.stats.blobs_transferred,
            "layer pulled from the remote cache, signed by a trusted certificate; no container needed for it"
        ),
        Verdict::AcceptedUnsigned(why) => warn!(
            layer = kind,
            cache = %repo,
            %tag,
            "layer pulled from the remote cache WITHOUT a valid signature (--cache-insecure-accept-unsigned): {why}"
        ),
    }
    let mut desc = pulled.manifest;
    desc.annotations.remove(crate::store::REF_NAME);
    Ok(Some(desc))
}

/// Read every layer tar of a pulled manifest the way a build reads it (paths inside the
/// layer, hard links to files of the layer, the size limit) and check the annotations and
/// blobs a build needs of a layer of `kind`, so that a layer taken from a cache can never
/// fail a later build.
fn check_contents(store: &Store, kind: &str, manifest: &ImageManifest) -> Result<()> {
    let ann = manifest.annotations().clone().unwrap_or_default();
    let (mut tars, mut images) = (0, 0);
    for l in manifest.layers() {
        let (digest, _) = oci::layer_digest(l)?;
        match l.media_type().to_string().as_str() {
            crate::store::layer::LAYER_MEDIA_TYPE => {
                crate::store::layer::read(store, &digest)?;
                tars += 1;
            }
            oci::KERNEL_IMAGE if kind == "kernel" => images += 1,
            other => bail!("blob {digest} has the media type {other}, which a {kind} layer does not hold"),
        }
    }
    let needs = |name: &str| {
        ann.get(name)
            .with_context(|| format!("the manifest has no {name} annotation"))
    };
    match kind {
        "kernel" => {
            if (tars, images) != (1, 1) {
                bail!("a kernel layer holds one kernel image and one modules tar, not {images} and {tars}");
            }
            needs(oci::ANN_KERNEL_VERSION)?;
        }
        _ if tars != 1 => bail!("a {kind} layer holds one layer tar, not {tars}"),
        "base" => {
            needs(oci::ANN_EPOCH)?
                .parse::<u64>()
                .with_context(|| format!("{} is not a number of seconds", oci::ANN_EPOCH))?;
        }
        _ => {}
    }
    Ok(())
}

/// A cached layer must be an OCI image manifest of the right kind made for `key`: a tag
/// overwritten by hand, or by another tool, is not taken for a layer.
fn check_layer_manifest(media_type: &str, data: &[u8], kind: &str, key: &Digest) -> Result<()> {
    if media_type != OCI_MANIFEST {
        bail!("media type {media_type} is not an OCI image manifest, so not a strata layer");
    }
    let m: ImageManifest = serde_json::from_slice(data).context("not a manifest")?;
    let want = match kind {
        "kernel" => Some(oci::KERNEL_ARTIFACT),
        _ => None,
    };
    let artifact_type = m.artifact_type().as_ref().map(|t| t.as_ref());
    if artifact_type != want {
        bail!(
            "artifactType {} is not that of a {kind} layer ({})",
            artifact_type.unwrap_or("(none)"),
            want.unwrap_or("none")
        );
    }
    match m.annotations().as_ref().and_then(|a| a.get(oci::ANN_KEY)) {
        Some(k) if *k == key.to_string() => Ok(()),
        Some(k) => bail!("the manifest was made for the cache key {k}, not {key}"),
        None => bail!(
            "the manifest has no {} annotation, so it is not a strata layer",
            oci::ANN_KEY
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_valid_and_short() {
        let t = tag("kernel", &Digest::of(b"x"));
        assert_eq!(t.len(), 71);
        assert!(format!("127.0.0.1:5000/cache:{t}").parse::<Reference>().is_ok());
    }

    #[test]
    fn cache_repositories_have_no_tag() {
        assert!(parse_repository("127.0.0.1:5000/initrd/cache", "cache-from").is_ok());
        let e = parse_repository("127.0.0.1:5000/initrd/cache:13", "cache-to").unwrap_err();
        assert!(format!("{e:#}").contains("without a tag"), "{e:#}");
        assert!(parse_repository("cache", "cache-to").is_err());
    }

    #[test]
    fn only_layers_of_the_right_kind_and_key_are_taken() {
        let key = Digest::of(b"k");
        let empty = Digest::of(b"{}");
        let base = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{empty}","size":2}},"layers":[],"annotations":{{"{}":"{key}"}}}}"#,
            oci::ANN_KEY
        );
        check_layer_manifest(OCI_MANIFEST, base.as_bytes(), "base", &key).unwrap();
        let e = check_layer_manifest(OCI_MANIFEST, base.as_bytes(), "base", &Digest::of(b"other")).unwrap_err();
        assert!(e.to_string().contains("made for the cache key"), "{e}");
        let e = check_layer_manifest(OCI_MANIFEST, base.as_bytes(), "kernel", &key).unwrap_err();
        assert!(e.to_string().contains("not that of a kernel layer"), "{e}");
        let kernel = format!(
            r#"{{"schemaVersion":2,"artifactType":"{}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"annotations":{{"{}":"{key}"}}}}"#,
            oci::KERNEL_ARTIFACT,
            oci::ANN_KEY
        );
        check_layer_manifest(OCI_MANIFEST, kernel.as_bytes(), "kernel", &key).unwrap();
        assert!(check_layer_manifest(registry::OCI_INDEX, kernel.as_bytes(), "kernel", &key).is_err());
        assert!(check_layer_manifest(OCI_MANIFEST, b"{}", "base", &key).is_err());
        // Not a manifest at all (what a layer's key annotation alone was enough for before).
        let bare = format!(r#"{{"annotations":{{"{}":"{key}"}}}}"#, oci::ANN_KEY);
        let e = check_layer_manifest(OCI_MANIFEST, bare.as_bytes(), "base", &key).unwrap_err();
        assert!(e.to_string().contains("not a manifest"), "{e}");
        // The layers strata writes pass.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = strata_format::layer::Layer::from_entries(vec![]).unwrap();
        let blob = oci::put_layer_blob(&store, &layer).unwrap();
        let ann = std::collections::HashMap::from([(oci::ANN_KEY.to_string(), key.to_string())]);
        let d = oci::put_image(&store, "b", &blob, 0, &oci_spec::image::Arch::Amd64, ann.clone()).unwrap();
        check_layer_manifest(OCI_MANIFEST, &store.read_blob(&d.digest).unwrap(), "base", &key).unwrap();
        let d = oci::put_artifact(&store, "k", oci::KERNEL_ARTIFACT, &[], ann).unwrap();
        check_layer_manifest(OCI_MANIFEST, &store.read_blob(&d.digest).unwrap(), "kernel", &key).unwrap();
    }
}
