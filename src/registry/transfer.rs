//! Push and pull whole manifest trees between the store and a registry: an index and its
//! child manifests, each manifest with its config and layers. Layers (OCI image manifests)
//! and products (OCI artifacts with an `artifactType` and the empty `{}` config) are the
//! same thing here: manifests and blobs.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use oci_spec::image::{ImageIndex, ImageManifest};

use super::client::Client;
use super::{BlobPushed, DOCKER_MANIFEST_LIST, Error, FetchedManifest, OCI_INDEX, Reference};
use crate::store::{self, Descriptor, Store};

/// What a push may use besides plain uploads.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories of the same registry that probably hold some of the blobs already:
    /// missing blobs are mounted from them (`POST …/uploads/?mount=…&from=…`) before
    /// anything is uploaded.
    pub mount_from: Vec<String>,
}

/// What a transfer did. "Transferred" is what went over the wire; "skipped" is what the
/// destination had already (the registry for a push, the store for a pull).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blobs uploaded or downloaded.
    pub blobs_transferred: u64,
    /// Their bytes (for downloads: bytes received, resumed parts counted once).
    pub bytes_transferred: u64,
    /// Blobs the destination had already.
    pub blobs_skipped: u64,
    /// Their bytes.
    pub bytes_skipped: u64,
    /// Blobs mounted from another repository (push only).
    pub blobs_mounted: u64,
    /// Their bytes.
    pub bytes_mounted: u64,
    /// Manifests (and indexes) uploaded or downloaded.
    pub manifests_transferred: u64,
    /// Manifests the destination had already under the same name and digest.
    pub manifests_skipped: u64,
}

impl Stats {
    fn skipped(&mut self, bytes: u64) {
        self.blobs_skipped += 1;
        self.bytes_skipped += bytes;
    }

    fn transferred(&mut self, bytes: u64) {
        self.blobs_transferred += 1;
        self.bytes_transferred += bytes;
    }
}

/// The result of a push or pull: the top manifest and the statistics.
#[derive(Debug, Clone)]
pub struct Transferred {
    /// The manifest pushed or pulled (as named in the store, without the ref-name annotation).
    pub manifest: Descriptor,
    /// What moved.
    pub stats: Stats,
}

/// The parts of a manifest or index this code follows, in strata's descriptor type.
struct Tree {
    artifact_type: Option<String>,
    /// A manifest's config and layers.
    blobs: Vec<Descriptor>,
    /// An index's manifests.
    manifests: Vec<Descriptor>,
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Parse `data` as what `media_type` says it is: an index (OCI or Docker list) as
/// oci-spec's `ImageIndex`, anything else as its `ImageManifest` (which a Docker v2
/// manifest also is).
fn parse_tree(media_type: &str, data: &[u8], reference: &str) -> Result<Tree, Error> {
    let bad = |source| Error::BadManifest {
        reference: reference.to_string(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(data).map_err(bad)?;
    super::client::check_own_media_type(&value, media_type, reference)?;
    let artifact_type = |t: &Option<oci_spec::image::MediaType>| t.as_ref().map(ToString::to_string);
    if is_index(media_type) {
        let index: ImageIndex = serde_json::from_value(value).map_err(bad)?;
        Ok(Tree {
            artifact_type: artifact_type(index.artifact_type()),
            blobs: vec![],
            manifests: store::descriptors(index.manifests()).map_err(bad)?,
        })
    } else {
        let manifest: ImageManifest = serde_json::from_value(value).map_err(bad)?;
        Ok(Tree {
            artifact_type: artifact_type(manifest.artifact_type()),
            blobs: store::descriptors(std::iter::once(manifest.config()).chain(manifest.layers())).map_err(bad)?,
            manifests: vec![],
        })
    }
}

fn check_registry(client: &Client, remote: &Reference) -> Result<(), Error> {
    if client.registry() != remote.registry {
        return Err(Error::RegistryMismatch {
            client: client.registry().to_string(),
            reference: remote.to_string(),
        });
    }
    Ok(())
}

/// Push the manifest named `local_ref_name` in `store`, with everything it references, to
/// `remote` (its tag; or its digest, which must then be the manifest's). Blobs the
/// registry has are not sent again; missing ones are mounted from
/// `options.mount_from` when possible.
pub async fn push(
    client: &Client,
    store: &Store,
    local_ref_name: &str,
    remote: &Reference,
    options: &PushOptions,
) -> Result<Transferred, Error> {
    check_registry(client, remote)?;
    let mut desc = store.get_ref(local_ref_name)?.ok_or_else(|| Error::LocalRefMissing {
        store: store.root().to_path_buf(),
        name: local_ref_name.to_string(),
    })?;
    desc.annotations.remove(crate::store::REF_NAME);
    if let Some(want) = remote.digest.as_ref().filter(|d| **d != desc.digest) {
        return Err(Error::DigestMismatch {
            reference: remote.to_string(),
            expected: want.clone(),
            found: desc.digest.clone(),
        });
    }
    let target = remote.tag.clone().unwrap_or_else(|| remote.manifest_ref());
    let mut stats = Stats::default();
    push_manifest(client, store, &remote.repository, &desc, target, options, &mut stats).await?;
    tracing::info!(local_ref_name, %remote, ?stats, "pushed");
    Ok(Transferred { manifest: desc, stats })
}

fn push_manifest<'a>(
    client: &'a Client,
    store: &'a Store,
    repository: &'a str,
    desc: &'a Descriptor,
    target: String,
    options: &'a PushOptions,
    stats: &'a mut Stats,
) -> futures_util::future::BoxFuture<'a, Result<(), Error>> {
    Box::pin(async move {
        let data = store.read_blob(&desc.digest)?;
        let name = format!("{}/{repository}@{}", client.registry(), desc.digest);
        let tree = parse_tree(&desc.media_type, &data, &name)?;
        if is_index(&desc.media_type) {
            for child in &tree.manifests {
                push_manifest(
                    client,
                    store,
                    repository,
                    child,
                    child.digest.to_string(),
                    options,
                    stats,
                )
                .await?;
            }
        } else {
            let blobs = unique_blobs(&tree);
            let results: Vec<_> = futures_util::stream::iter(blobs)
                .map(|b: Descriptor| async move {
                    (
                        b.size,
                        client.push_blob(store, repository, &b, &options.mount_from).await,
                    )
                })
                .buffer_unordered(client.options().parallel.max(1))
                .collect()
                .await;
            // Every transfer finished (none is left half-done in the background); report
            // the first failure.
            for (size, result) in results {
                match result? {
                    BlobPushed::Existed => stats.skipped(size),
                    BlobPushed::Mounted => {
                        stats.blobs_mounted += 1;
                        stats.bytes_mounted += size;
                    }
                    BlobPushed::Uploaded => stats.transferred(size),
                }
            }
        }
        if client.manifest_digest(repository, &target).await?.as_ref() == Some(&desc.digest) {
            stats.manifests_skipped += 1;
        } else {
            client
                .put_manifest(repository, &target, &desc.media_type, data.into())
                .await?;
            stats.manifests_transferred += 1;
        }
        Ok(())
    })
}

/// Config and layers, each digest once, in a stable order.
fn unique_blobs(tree: &Tree) -> Vec<Descriptor> {
    let unique: BTreeMap<_, _> = tree.blobs.iter().map(|d| (&d.digest, d)).collect();
    unique.into_values().cloned().collect()
}

/// Pull `remote` with everything it references into `store`, verifying every digest, and
/// name it `local_ref_name` there. The name is set last, once everything is stored.
pub async fn pull(
    client: &Client,
    store: &Store,
    remote: &Reference,
    local_ref_name: &str,
) -> Result<Transferred, Error> {
    check_registry(client, remote)?;
    let repository = &remote.repository;
    let top = client.get_manifest(repository, &remote.manifest_ref()).await?;
    let mut stats = Stats::default();
    let tree = pull_tree(client, store, repository, &top, &mut stats).await?;
    stats.manifests_transferred += 1;
    let desc = Descriptor {
        artifact_type: tree.artifact_type,
        ..Descriptor::new(top.media_type.clone(), top.digest.clone(), top.data.len() as u64)
    };
    store.set_ref(local_ref_name, desc.clone())?;
    tracing::info!(%remote, local_ref_name, ?stats, "pulled");
    Ok(Transferred { manifest: desc, stats })
}

/// Pull what `manifest` references, then store `manifest` itself.
fn pull_tree<'a>(
    client: &'a Client,
    store: &'a Store,
    repository: &'a str,
    manifest: &'a FetchedManifest,
    stats: &'a mut Stats,
) -> futures_util::future::BoxFuture<'a, Result<Tree, Error>> {
    Box::pin(async move {
        let name = format!("{}/{repository}@{}", client.registry(), manifest.digest);
        let tree = parse_tree(&manifest.media_type, &manifest.data, &name)?;
        if is_index(&manifest.media_type) {
            for child in &tree.manifests {
                let child_name = format!("{}/{repository}@{}", client.registry(), child.digest);
                let fetched = if store.has_blob(&child.digest) {
                    let data = store.read_blob(&child.digest)?;
                    stats.manifests_skipped += 1;
                    FetchedManifest {
                        media_type: child.media_type.clone(),
                        digest: child.digest.clone(),
                        data: data.into(),
                    }
                } else {
                    let f = client.get_manifest(repository, &child.digest.to_string()).await?;
                    stats.manifests_transferred += 1;
                    f
                };
                if fetched.data.len() as u64 != child.size {
                    return Err(Error::SizeMismatch {
                        reference: child_name,
                        expected: child.size,
                        found: fetched.data.len() as u64,
                    });
                }
                if fetched.media_type != child.media_type {
                    return Err(Error::UnexpectedMediaType {
                        reference: child_name,
                        found: fetched.media_type,
                        expected: vec![child.media_type.clone()],
                    });
                }
                pull_tree(client, store, repository, &fetched, stats).await?;
            }
        } else {
            // The config is JSON read whole, bounded like a manifest.
            let limit = client.options().max_manifest_size;
            if let Some(config) = tree.blobs.first().filter(|c| c.size > limit) {
                return Err(Error::ManifestTooLarge {
                    reference: format!("{name} config {}", config.digest),
                    size: config.size,
                    limit,
                });
            }
            let blobs = unique_blobs(&tree);
            let results: Vec<_> = futures_util::stream::iter(blobs)
                .map(|b: Descriptor| async move {
                    let had = store.has_blob(&b.digest);
                    (had, b.size, client.pull_blob(store, repository, &b).await)
                })
                .buffer_unordered(client.options().parallel.max(1))
                .collect()
                .await;
            for (had, size, result) in results {
                let received = result?;
                if had {
                    stats.skipped(size);
                } else {
                    stats.transferred(received);
                }
            }
        }
        store.put_blob(&manifest.data)?;
        Ok(tree)
    })
}
