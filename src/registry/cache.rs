//! The registry as a shared layer cache: `strata build --cache-from REPO --cache-to REPO`.
//!
//! `REPO` is `host[:port]/repository` without a tag. A layer of kind `KIND` (`base`,
//! `kernel`) whose cache key is `sha256:HEX` lives there under the tag `KIND-HEX`
//! (e.g. `base-3f0c…`, 69 characters), as the same manifest the local store holds, byte for
//! byte. `strata push` writes its layers under the same tags, so a repository filled by
//! `strata push` is a cache too.
//!
//! - Before a layer the local store lacks is built, its tag is looked up (`HEAD`) in the
//!   `--cache-from` repository. If it is there, its manifest must be a layer of that kind made
//!   for that key (the `io.strata.key` annotation); then it is pulled, every blob verified,
//!   and no container is started for it. A lookup or pull that fails is a warning and the
//!   layer is built: the cache only ever saves work.
//! - After the layers are in the local store (built, pulled or already there), each one the
//!   `--cache-to` repository lacks under its tag is pushed. A failed push fails the build:
//!   the user asked for the cache to be filled.

use anyhow::{Context as _, Result, bail};
use oci_spec::image::ImageManifest;
use tracing::{info, warn};

use crate::digest::Digest;
use crate::registry::{self, Client, ClientOptions, OCI_MANIFEST, PushOptions, Reference};
use crate::store::Store;
use crate::store::image as oci;

/// The remote cache as the user asked for it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `host[:port]/repository` to pull layers from before building them.
    pub from: Option<String>,
    /// `host[:port]/repository` to push layers to after the build.
    pub to: Option<String>,
    /// How to talk to the registries.
    pub client: ClientOptions,
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
}

impl RemoteCache {
    /// Check the references and set up the clients (nothing is sent yet).
    pub fn new(opts: &Options) -> Result<RemoteCache> {
        let connect = |given: &Option<String>, flag: &str| -> Result<Option<(Client, Reference)>> {
            let Some(given) = given else { return Ok(None) };
            let r = parse_repository(given, flag)?;
            let client = Client::new(&r.registry, opts.client.clone()).with_context(|| format!("--{flag} {given}"))?;
            Ok(Some((client, r)))
        };
        Ok(RemoteCache {
            from: connect(&opts.from, "cache-from")?,
            to: connect(&opts.to, "cache-to")?,
        })
    }

    /// Try to pull the layer of `kind` with `key` from the `--cache-from` repository into
    /// `store` as `name`. True when the layer is now in the store, verified. Failures are
    /// warnings (the caller builds the layer).
    pub async fn fetch(&self, store: &Store, kind: &str, key: &Digest, name: &str) -> bool {
        let Some((client, repo)) = &self.from else { return false };
        let tag = tag(kind, key);
        match fetch(client, repo, store, kind, key, &tag, name).await {
            Ok(true) => true,
            Ok(false) => {
                info!(layer = kind, cache = %repo, %tag, "not in the remote cache; building it");
                false
            }
            Err(e) => {
                warn!(layer = kind, cache = %repo, %tag, "remote cache not used, building the layer instead: {e:#}");
                false
            }
        }
    }

    /// Push the layer named `name` (of `kind`, with `key`) to the `--cache-to` repository
    /// unless it holds that manifest under its tag already.
    pub async fn publish(&self, store: &Store, kind: &str, key: &Digest, name: &str) -> Result<()> {
        let Some((client, repo)) = &self.to else { return Ok(()) };
        let tag = tag(kind, key);
        let remote = Reference {
            tag: Some(tag.clone()),
            digest: None,
            ..repo.clone()
        };
        let local = store
            .get_ref(name)?
            .with_context(|| format!("layer {name} is not in the store"))?;
        let there = client
            .manifest_digest(&repo.repository, &tag)
            .await
            .with_context(|| format!("looking up {remote} in the remote cache"))?;
        if there.as_ref() == Some(&local.digest) {
            info!(layer = kind, %remote, "the remote cache has the layer already");
            return Ok(());
        }
        // Blobs pulled from --cache-from on the same registry are mounted, not uploaded.
        let mount_from = match &self.from {
            Some((_, from)) if from.registry == repo.registry => vec![from.repository.clone()],
            _ => vec![],
        };
        let pushed = registry::push(client, store, name, &remote, &PushOptions { mount_from })
            .await
            .with_context(|| format!("pushing the {kind} layer to the remote cache {remote}"))?;
        info!(layer = kind, %remote, bytes = pushed.stats.bytes_transferred, "layer pushed to the remote cache");
        Ok(())
    }
}

async fn fetch(
    client: &Client,
    repo: &Reference,
    store: &Store,
    kind: &str,
    key: &Digest,
    tag: &str,
    name: &str,
) -> Result<bool> {
    let Some(digest) = client.manifest_digest(&repo.repository, tag).await? else {
        return Ok(false);
    };
    // By digest: verified against it. Checked before any blob is downloaded.
    let manifest = client.get_manifest(&repo.repository, &digest.to_string()).await?;
    check_layer_manifest(&manifest.media_type, &manifest.data, kind, key)
        .with_context(|| format!("{}/{}:{tag} ({digest})", repo.registry, repo.repository))?;
    let pulled = registry::pull(client, store, &repo.with_digest(&digest), name).await?;
    if !oci::verify(store, name)? {
        bail!("layer {name} does not verify in the store after the pull");
    }
    info!(
        layer = kind,
        cache = %repo,
        %tag,
        bytes = pulled.stats.bytes_transferred,
        blobs = pulled.stats.blobs_transferred,
        "layer pulled from the remote cache; no container needed for it"
    );
    Ok(true)
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
