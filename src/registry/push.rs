//! `strata push REF`: the products and layers of the last build in an output directory, to a
//! registry.
//!
//! What goes where, for `REF` = `host[:port]/REPO:TAG`:
//!
//! | tag                         | manifest                                                    |
//! | --------------------------- | ----------------------------------------------------------- |
//! | `REPO:TAG`                  | OCI index of the product artifacts below                    |
//! | `REPO:TAG-initrd`           | the initrd (`artifactType` [`INITRD_ARTIFACT`])             |
//! | `REPO:TAG-kernel`           | the kernel image ([`oci::KERNEL_ARTIFACT`])                 |
//! | `REPO:TAG-sysext-NAME`      | `NAME.sysext.raw` ([`SYSEXT_ARTIFACT`], blob `application/vnd.efi.img`) |
//! | `REPO:base-HEX`, `REPO:kernel-HEX` | the layers as built, under their cache tags ([`remote_cache::tag`]) |
//! | `REPO:base-HEX.sig`, …      | with `--key`/`--cert`: each layer's signature, which `build --cache-from` requires |
//!
//! A product artifact is an OCI image manifest with the empty `{}` config and one blob, the
//! product file, annotated with `org.opencontainers.image.title` (its file name, which
//! `strata pull`, `oras pull` and friends write it as), `org.opencontainers.image.created`
//! (the build's `SOURCE_DATE_EPOCH`: the latest `io.strata.epoch` of its layers),
//! `org.opencontainers.image.version` (`--version`, default `TAG`) and
//! `org.opencontainers.image.source` (`--source`, if given). All manifests are canonical
//! JSON, so an unchanged build gives unchanged manifests, and a second push sends no blob.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use oci_spec::image::{ImageIndexBuilder, ImageManifestBuilder, MediaType};
use tracing::warn;

use crate::digest::{Digest, canonical_json};
use crate::products::{self, Product};
use crate::registry::cache as remote_cache;
use crate::registry::{self, Client, ClientOptions, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, PushOptions, Reference, Stats};
use crate::store::image as oci;
use crate::store::{Descriptor, Store};

pub use super::artifact::*;

/// The tag a product is pushed under, next to `tag` (the index).
pub fn product_tag(tag: &str, product: &Product) -> Result<String> {
    let t = match extension_suffix(&product.kind) {
        Some(suffix) => {
            let name = product
                .file
                .strip_suffix(suffix)
                .filter(|n| !n.is_empty())
                .with_context(|| format!("{} file `{}` is not named NAME{suffix}", product.kind, product.file))?;
            format!("{tag}-{}-{name}", product.kind)
        }
        None => format!("{tag}-{}", product.kind),
    };
    format!("localhost/x:{t}").parse::<Reference>().with_context(|| {
        format!(
            "the tag `{t}` for the {} product is not a valid tag (shorten `{tag}`)",
            product.kind
        )
    })?;
    Ok(t)
}

/// What `strata push` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host[:port]/repository:tag`.
    pub reference: String,
    /// The build's output directory (with `products.json`).
    pub output: PathBuf,
    /// The cache directory holding the build's layer store.
    pub cache_dir: PathBuf,
    /// `org.opencontainers.image.version` (default: the tag).
    pub version: Option<String>,
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
    pub client: ClientOptions,
    /// A key and its certificate that sign the layers under their cache tags, so that
    /// `strata build --cache-from` trusts them ([`remote_cache`]).
    pub signing: Option<(PathBuf, PathBuf)>,
}

/// One manifest pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `layer base`, `initrd`, `index`, …
    pub what: String,
    /// Where it went (`host/repo:tag`).
    pub reference: String,
    pub digest: Digest,
    pub stats: Stats,
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub pushed: Vec<Pushed>,
}

impl Summary {
    /// The sum over everything pushed.
    pub fn total(&self) -> Stats {
        let mut t = Stats::default();
        for s in self.pushed.iter().map(|p| &p.stats) {
            t.blobs_transferred += s.blobs_transferred;
            t.bytes_transferred += s.bytes_transferred;
            t.blobs_skipped += s.blobs_skipped;
            t.bytes_skipped += s.bytes_skipped;
            t.blobs_mounted += s.blobs_mounted;
            t.bytes_mounted += s.bytes_mounted;
            t.manifests_transferred += s.manifests_transferred;
            t.manifests_skipped += s.manifests_skipped;
        }
        t
    }

    /// One line per manifest (`what`, reference, digest, what moved), then a total line.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .pushed
            .iter()
            .map(|p| format!("{}\t{}\t{}\t{}", p.what, p.reference, p.digest, describe(&p.stats)))
            .collect();
        lines.push(format!("total\t{}", describe(&self.total())));
        lines
    }
}

fn describe(s: &Stats) -> String {
    let mut text = format!(
        "uploaded {} bytes in {} blobs, skipped {} bytes in {} blobs already there",
        s.bytes_transferred, s.blobs_transferred, s.bytes_skipped, s.blobs_skipped
    );
    if s.blobs_mounted > 0 {
        text += &format!(", mounted {} bytes in {} blobs", s.bytes_mounted, s.blobs_mounted);
    }
    text += &format!(
        ", {} manifests uploaded, {} unchanged",
        s.manifests_transferred, s.manifests_skipped
    );
    text
}

/// The artifact manifest of one product (canonical JSON).
pub fn artifact_manifest(
    ptype: ProductType,
    file: &str,
    blob: Digest,
    size: u64,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut layer = Descriptor::new(ptype.media_type, blob, size);
    layer.annotations.insert(ANN_TITLE.into(), file.into());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(ptype.artifact_type))
        .config(Descriptor::new(OCI_EMPTY, Digest::of(b"{}"), 2).to_oci())
        .layers(vec![layer.to_oci()])
        // Always there, even empty: the bytes pushed by earlier versions.
        .annotations(HashMap::from_iter(annotations.clone()))
        .build()
        .expect("every required field is set");
    canonical_json(&manifest)
}

/// The index of a build's products (canonical JSON).
fn products_index(children: &[Descriptor], annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(children.iter().map(Descriptor::to_oci).collect::<Vec<_>>())
        .annotations(HashMap::from_iter(annotations.clone()))
        .build()
        .expect("every required field is set");
    canonical_json(&index)
}

/// Push the build in `opts.output` to `opts.reference`.
pub async fn run(opts: &Options) -> Result<Summary> {
    let reference: Reference = opts.reference.parse()?;
    if reference.digest.is_some() {
        bail!("{reference}: push to a tag, not to a digest");
    }
    let Some(tag) = reference.tag.clone() else {
        bail!("{reference}: name the tag to push to, e.g. {reference}:13");
    };
    let at = |tag: &str| Reference {
        tag: Some(tag.into()),
        digest: None,
        ..reference.clone()
    };
    let build = products::read(&opts.output)?;
    // Check every product's tag before anything is sent.
    for p in &build.products {
        product_type(&p.kind).with_context(|| format!("strata cannot push a `{}` product yet", p.kind))?;
        product_tag(&tag, p)?;
        product_path(&opts.output, p)?;
    }
    let store_dir = opts.cache_dir.join("oci");
    let store = Store::open(&store_dir).with_context(|| format!("opening the layer store {}", store_dir.display()))?;
    let client = Client::new(&reference.registry, opts.client.clone())?;
    let signer = match &opts.signing {
        Some((key, cert)) => Some(
            crate::products::sysext::Signing::load(key, cert)
                .context("loading the key that signs the layers")?
                .signer,
        ),
        None => None,
    };
    let mut summary = Summary::default();

    // The layers, under their cache tags.
    let mut epoch: Option<u64> = None;
    if build.layers.is_empty() {
        warn!(
            "{} lists no layers (written by an older strata?): pushing the products only",
            products::FILE
        );
    }
    for layer in &build.layers {
        let name = layer.ref_name();
        let desc = store.get_ref(&name)?.with_context(|| {
            format!(
                "layer {name} of the build in {} is not in the store at {} (another --cache-dir?)",
                opts.output.display(),
                store_dir.display()
            )
        })?;
        if desc.digest != layer.manifest {
            bail!(
                "layer {name} in the store is {}, but the build in {} used {}: build again before pushing",
                desc.digest,
                opts.output.display(),
                layer.manifest
            );
        }
        let manifest =
            oci::get_manifest(&store, &name)?.with_context(|| format!("layer {name}: manifest unreadable"))?;
        if let Some(e) = manifest.annotations().as_ref().and_then(|a| a.get(oci::ANN_EPOCH)) {
            let e: u64 = e
                .parse()
                .with_context(|| format!("layer {name}: {} `{e}` is not a number", oci::ANN_EPOCH))?;
            epoch = epoch.max(Some(e));
        }
        let remote = at(&remote_cache::tag(&layer.kind, &layer.key));
        let t = registry::push(&client, &store, &name, &remote, &PushOptions::default())
            .await
            .with_context(|| format!("pushing the {} layer to {remote}", layer.kind))?;
        match &signer {
            Some(signer) => remote_cache::signature::push(
                &client,
                &store,
                &reference,
                &layer.kind,
                &layer.key,
                &t.manifest,
                signer,
            )
            .await
            .with_context(|| format!("pushing the signature of the {} layer to {remote}.sig", layer.kind))?,
            None => {
                warn!(layer = %layer.kind, %remote, "no --key/--cert: the layer is pushed unsigned, and `strata build --cache-from` does not take it")
            }
        }
        summary.pushed.push(Pushed {
            what: format!("layer-{}", layer.kind),
            reference: remote.to_string(),
            digest: t.manifest.digest,
            stats: t.stats,
        });
    }

    let mut annotations = BTreeMap::new();
    match epoch {
        Some(e) => {
            annotations.insert(ANN_CREATED.to_string(), oci::rfc3339(e));
        }
        None => warn!("no layer names the build's epoch: the products carry no {ANN_CREATED} annotation"),
    }
    annotations.insert(
        ANN_VERSION.to_string(),
        opts.version.clone().unwrap_or_else(|| tag.clone()),
    );
    if let Some(s) = &opts.source {
        annotations.insert(ANN_SOURCE.to_string(), s.clone());
    }

    // Each product as an artifact under its own tag.
    let mut children = Vec::new();
    for product in &build.products {
        let ptype = product_type(&product.kind).expect("checked above");
        let blob = import(&store, &opts.output, product)?;
        let mut ann = annotations.clone();
        ann.insert(ANN_TITLE.into(), product.file.clone());
        ann.insert(ANN_PRODUCT.into(), product.kind.clone());
        if let Some(v) = product.version.as_ref().filter(|_| product.kind == "kernel") {
            ann.insert(oci::ANN_KERNEL_VERSION.into(), v.clone());
        }
        let manifest = artifact_manifest(ptype, &product.file, blob, product.size, &ann);
        let desc = Descriptor {
            artifact_type: Some(ptype.artifact_type.into()),
            annotations: HashMap::from([
                (ANN_TITLE.to_string(), product.file.clone()),
                (ANN_PRODUCT.to_string(), product.kind.clone()),
            ]),
            ..Descriptor::new(OCI_MANIFEST, store.put_blob(&manifest)?, manifest.len() as u64)
        };
        // Named in the store so the transfer can find it; the next push replaces the name.
        let name = format!("strata.push.{}.{}", product.kind, product.file);
        store.set_ref(&name, desc.clone())?;
        let remote = at(&product_tag(&tag, product)?);
        let t = registry::push(&client, &store, &name, &remote, &PushOptions::default())
            .await
            .with_context(|| format!("pushing {} to {remote}", product.file))?;
        summary.pushed.push(Pushed {
            what: product.kind.clone(),
            reference: remote.to_string(),
            digest: desc.digest.clone(),
            stats: t.stats,
        });
        children.push(desc);
    }

    // The index of all products under the tag itself; its manifests are all there now.
    let index = products_index(&children, &annotations);
    let digest = Digest::of(&index);
    let mut stats = Stats::default();
    let there = client.manifest_digest(&reference.repository, &tag).await?;
    if there.as_ref() == Some(&digest) {
        stats.manifests_skipped = 1;
    } else {
        client
            .put_manifest(&reference.repository, &tag, OCI_INDEX, index.into())
            .await
            .with_context(|| format!("pushing the index of the products to {reference}"))?;
        stats.manifests_transferred = 1;
    }
    summary.pushed.push(Pushed {
        what: "index".into(),
        reference: reference.to_string(),
        digest,
        stats,
    });
    Ok(summary)
}

/// Put a product file into the store, checking it is still the file `products.json` names.
fn import(store: &Store, dir: &Path, product: &Product) -> Result<Digest> {
    let path = product_path(dir, product)?;
    let expected: Digest = format!("sha256:{}", product.sha256)
        .parse()
        .with_context(|| format!("{}: bad sha256 for {}", products::FILE, product.file))?;
    let mut file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut writer = store.blob_writer()?;
    std::io::copy(&mut file, &mut writer).with_context(|| format!("reading {}", path.display()))?;
    writer.commit(Some((&expected, product.size))).with_context(|| {
        format!(
            "{} is not the file {} names (changed since the build?)",
            path.display(),
            products::FILE
        )
    })?;
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_format::compress::Compression;

    #[test]
    fn product_tags() {
        let i = Product::initrd("initrd.cpio.zst", Digest::of(b"i"), 1, Compression::DEFAULT, vec![]);
        assert_eq!(product_tag("13", &i).unwrap(), "13-initrd");
        let mut s = i.clone();
        s.kind = "sysext".into();
        s.file = "network.sysext.raw".into();
        assert_eq!(product_tag("13", &s).unwrap(), "13-sysext-network");
        s.file = "network.raw".into();
        assert!(product_tag("13", &s).is_err());
        assert!(product_tag(&"x".repeat(125), &i).is_err(), "too long");
    }

    /// The hand-written structs `artifact_manifest` and the index serialized before they
    /// were oci-spec's `ImageManifest` and `ImageIndex`: a push of an unchanged build must
    /// send the same manifests, so the bytes must not change.
    mod before {
        use super::*;

        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ArtifactManifest<'a> {
            schema_version: u32,
            media_type: &'a str,
            artifact_type: &'a str,
            config: Descriptor,
            layers: Vec<Descriptor>,
            annotations: &'a BTreeMap<String, String>,
        }

        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Index<'a> {
            schema_version: u32,
            media_type: &'a str,
            manifests: &'a [Descriptor],
            annotations: &'a BTreeMap<String, String>,
        }

        pub fn artifact_manifest(
            ptype: ProductType,
            file: &str,
            blob: Digest,
            size: u64,
            annotations: &BTreeMap<String, String>,
        ) -> Vec<u8> {
            let mut layer = Descriptor::new(ptype.media_type, blob, size);
            layer.annotations.insert(ANN_TITLE.into(), file.into());
            canonical_json(&ArtifactManifest {
                schema_version: 2,
                media_type: OCI_MANIFEST,
                artifact_type: ptype.artifact_type,
                config: Descriptor::new(OCI_EMPTY, Digest::of(b"{}"), 2),
                layers: vec![layer],
                annotations,
            })
        }

        pub fn products_index(children: &[Descriptor], annotations: &BTreeMap<String, String>) -> Vec<u8> {
            canonical_json(&Index {
                schema_version: 2,
                media_type: OCI_INDEX,
                manifests: children,
                annotations,
            })
        }
    }

    #[test]
    fn manifest_bytes_are_those_of_the_hand_written_structs() {
        let full = BTreeMap::from([
            (ANN_CREATED.to_string(), "2025-11-08T09:51:03Z".to_string()),
            (ANN_VERSION.to_string(), "13".to_string()),
            (ANN_SOURCE.to_string(), "https://example.org/x".to_string()),
        ]);
        let empty = BTreeMap::new();
        let mut children = Vec::new();
        for ann in [&full, &empty] {
            for t in PRODUCT_TYPES {
                let file = format!("x{}", extension_suffix(t.kind).unwrap_or(""));
                let blob = Digest::of(t.kind.as_bytes());
                let new = artifact_manifest(t, &file, blob.clone(), 12345, ann);
                assert_eq!(new, before::artifact_manifest(t, &file, blob, 12345, ann), "{}", t.kind);
                children.push(Descriptor {
                    artifact_type: Some(t.artifact_type.into()),
                    annotations: HashMap::from([
                        (ANN_TITLE.to_string(), file.clone()),
                        (ANN_PRODUCT.to_string(), t.kind.to_string()),
                    ]),
                    ..Descriptor::new(OCI_MANIFEST, Digest::of(&new), new.len() as u64)
                });
            }
            assert_eq!(products_index(&children, ann), before::products_index(&children, ann));
        }
        // Pinned: an initrd artifact with no annotations.
        let t = product_type("initrd").unwrap();
        assert_eq!(
            String::from_utf8(artifact_manifest(t, "initrd.cpio.zst", Digest::of(b"i"), 1, &empty)).unwrap(),
            format!(
                concat!(
                    r#"{{"annotations":{{}},"artifactType":"application/vnd.strata.initrd.v1","#,
                    r#""config":{{"digest":"{}","mediaType":"application/vnd.oci.empty.v1+json","size":2}},"#,
                    r#""layers":[{{"annotations":{{"org.opencontainers.image.title":"initrd.cpio.zst"}},"#,
                    r#""digest":"{}","mediaType":"application/vnd.strata.initrd.image.v1","size":1}}],"#,
                    r#""mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}}"#
                ),
                Digest::of(b"{}"),
                Digest::of(b"i")
            )
        );
    }

    #[test]
    fn artifact_manifests_are_canonical_and_typed() {
        let ann = BTreeMap::from([(ANN_VERSION.to_string(), "13".to_string())]);
        let t = product_type("sysext").unwrap();
        let m = artifact_manifest(t, "network.sysext.raw", Digest::of(b"x"), 1, &ann);
        assert_eq!(
            m,
            canonical_json(&serde_json::from_slice::<serde_json::Value>(&m).unwrap())
        );
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["artifactType"], SYSEXT_ARTIFACT);
        assert_eq!(v["config"]["mediaType"], OCI_EMPTY);
        assert_eq!(v["config"]["digest"], Digest::of(b"{}").to_string());
        assert_eq!(v["layers"][0]["mediaType"], "application/vnd.efi.img");
        assert_eq!(v["layers"][0]["annotations"][ANN_TITLE], "network.sysext.raw");
        assert_eq!(v["annotations"][ANN_VERSION], "13");
        assert_eq!(product_type_of_artifact(SYSEXT_ARTIFACT), Some(t));
    }
}
