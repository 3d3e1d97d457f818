//! `strata build`: plan, build missing layers in containers (`stage`), flatten
//! and package them ([`crate::products`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use tracing::{Instrument as _, info, info_span};

use crate::config::LayerSet;
use crate::digest::Digest;
use crate::engine::podman::Podman;
use crate::interrupt::CancellationToken;
use crate::plan;
use crate::products::{self, Product, Products};
use crate::registry::cache as remote_cache;
use crate::stage::{Ctx, base, builder, erofs, extension, kernel};
use crate::store::Store;
use crate::store::image as oci;

pub use crate::stage::builder::builder_tag;

/// What `strata build` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub layer_set: PathBuf,
    pub output: PathBuf,
    pub cache_dir: PathBuf,
    /// Rebuild every layer even if the store has it.
    pub rebuild: bool,
    /// `SOURCE_DATE_EPOCH` from the environment, if set.
    pub source_date_epoch: Option<u64>,
    /// `--cache-from` / `--cache-to`: layers shared through a registry.
    pub remote_cache: remote_cache::Options,
    /// `--key` and `--cert`: sign the extension images, and put the certificate into the
    /// initrd. Without them the images are unsigned (and a strata initrd refuses them).
    pub signing: Option<(PathBuf, PathBuf)>,
    /// `--extension`: build only these extensions (None: all of the set's; empty: none).
    pub extensions: Option<Vec<String>>,
    /// Cancelled on Ctrl-C: containers are removed, nothing half-written is kept.
    pub cancel: CancellationToken,
}

/// What a build did (for the summary line and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Layers built in a container this time, by kind.
    pub built: Vec<String>,
    /// Layers taken from the store.
    pub cached: Vec<String>,
    /// Of those, the layers pulled from the `--cache-from` registry first.
    pub pulled: Vec<String>,
}

/// `SOURCE_DATE_EPOCH` from the environment: unset or empty is None; anything but a
/// non-negative integer is an error.
pub fn source_date_epoch_from_env() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => v
            .parse::<u64>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds since 1970")),
        Err(_) => Ok(None),
    }
}

/// Run a build.
pub async fn run(opts: &Options) -> Result<(Report, Products)> {
    let start = Instant::now();
    let set = LayerSet::load(&opts.layer_set)?;
    let extensions = select_extensions(&set, opts.extensions.as_deref())?;
    let signing = match &opts.signing {
        Some((key, cert)) => Some(crate::products::sysext::Signing::load(key, cert)?),
        None => None,
    };
    if signing.is_none() && !extensions.is_empty() {
        tracing::warn!(
            "no --key/--cert: the extension images are unsigned, and an initrd that verifies extensions refuses them"
        );
    }
    let store_dir = opts.cache_dir.join("oci");
    let store = Store::open(&store_dir).with_context(|| format!("opening the layer store {}", store_dir.display()))?;
    // Locked for the whole build; what a killed build left there is finished or removed now.
    let mut output = products::output::Output::open(&opts.output)?;
    let distro = set.distro();
    let builder = builder_tag(distro);
    let epoch = opts.source_date_epoch;
    let base_key = plan::base_key(&set, &builder, epoch);
    let kernel_key = plan::kernel_key(&set, &builder, epoch);
    let base_ref = plan::layer_ref("base", &base_key);
    let kernel_ref = plan::layer_ref("kernel", &kernel_key);
    info!(set = %set.name, release = %set.distribution.release, base_key = %base_key.hex(), kernel_key = %kernel_key.hex(), extensions = extensions.len(), "planned");

    let mut report = Report::default();
    let remote = remote_cache::RemoteCache::new(&opts.remote_cache)?;
    let engine = LazyEngine {
        podman: tokio::sync::OnceCell::new(),
        builder: &builder,
        distro,
        cancel: &opts.cancel,
    };
    // What each build stage gets, once the engine is connected.
    let ctx = |engine| Ctx {
        engine,
        set: &set,
        store: &store,
        builder: &builder,
        distro,
        epoch,
        cancel: &opts.cancel,
    };
    if obtain(&store, &remote, opts.rebuild, "base", &base_key, &base_ref, &mut report).await? {
        base::build(&ctx(engine.get().await?), &base_key, &base_ref)
            .instrument(info_span!("base_layer"))
            .await
            .with_context(|| {
                format!(
                    "building the base layer of {} for {}/{}",
                    set.name, set.distribution.id, set.distribution.release
                )
            })?;
        report.built.push("base".into());
    }
    if obtain(
        &store,
        &remote,
        opts.rebuild,
        "kernel",
        &kernel_key,
        &kernel_ref,
        &mut report,
    )
    .await?
    {
        kernel::build(&ctx(engine.get().await?), &kernel_key, &kernel_ref)
            .instrument(info_span!("kernel_layer"))
            .await
            .with_context(|| format!("building the kernel layer ({}) of {}", set.kernel.package, set.name))?;
        report.built.push("kernel".into());
    }
    remote.publish(&store, "base", &base_key, &base_ref).await?;
    remote.publish(&store, "kernel", &kernel_key, &kernel_ref).await?;
    let mut layers = vec![
        products::LayerRecord::of(&store, "base", &base_key)?,
        products::LayerRecord::of(&store, "kernel", &kernel_key)?,
    ];

    // Extensions are diffs against the base layer's bytes: their keys need its digest.
    let base_blob = layer_blob(&store, &base_ref)?;
    let mut extension_layers = Vec::new();
    for x in &extensions {
        let kind = format!("ext-{}", x.name);
        let key = plan::extension_key(&set, &builder, epoch, &base_blob, x);
        let name = plan::layer_ref(&kind, &key);
        if obtain(&store, &remote, opts.rebuild, &kind, &key, &name, &mut report).await? {
            extension::build(&ctx(engine.get().await?), x, &base_ref, &key, &name)
                .instrument(info_span!("extension_layer", extension = %x.name))
                .await
                .with_context(|| {
                    format!(
                        "building the extension layer `{}` of {} ({})",
                        x.name,
                        set.name,
                        x.file.display()
                    )
                })?;
            report.built.push(kind.clone());
        }
        remote.publish(&store, &kind, &key, &name).await?;
        layers.push(products::LayerRecord::of(&store, &kind, &key)?);
        extension_layers.push((*x, layer_blob(&store, &name)?));
    }

    let inputs = ProductInputs {
        base_ref: &base_ref,
        kernel_ref: &kernel_ref,
        extensions: &extension_layers,
        signing: signing.as_ref(),
    };
    let staging = output.stage()?.to_path_buf();
    let products = write_products(&set, &store, &inputs, layers, &staging, &engine)
        .instrument(info_span!("products"))
        .await?;
    let swap = output
        .commit(&products)
        .with_context(|| format!("putting the products in place in {}", opts.output.display()))?;
    info!(output = %opts.output.display(), added = ?swap.added, replaced = ?swap.replaced, unchanged = ?swap.unchanged, removed = ?swap.removed, "products in place");
    info!(elapsed = ?start.elapsed(), built = ?report.built, cached = ?report.cached, pulled = ?report.pulled, output = %opts.output.display(), "build finished");
    Ok((report, products))
}

/// The extensions `--extension` asks for (all of the set's by default), by name.
fn select_extensions<'a>(set: &'a LayerSet, wanted: Option<&[String]>) -> Result<Vec<&'a crate::config::Extension>> {
    let Some(wanted) = wanted else {
        return Ok(set.extensions.iter().collect());
    };
    wanted
        .iter()
        .map(|w| {
            set.extension(w).with_context(|| {
                let known: Vec<&str> = set.extensions.iter().map(|x| x.name.as_str()).collect();
                format!(
                    "--extension {w}: the layer set {} has no extension `{w}` (it has: {})",
                    set.dir.display(),
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// Whether the layer `kind` with `key` must be built: not if the store has it intact, or
/// the `--cache-from` registry has it (pulled now). Records which in `report`.
async fn obtain(
    store: &Store,
    remote: &remote_cache::RemoteCache,
    rebuild: bool,
    kind: &str,
    key: &Digest,
    name: &str,
    report: &mut Report,
) -> Result<bool> {
    if rebuild {
        return Ok(true);
    }
    if oci::verify(store, name)? {
        report.cached.push(kind.into());
        return Ok(false);
    }
    if remote.fetch(store, kind, key, name).await {
        report.cached.push(kind.into());
        report.pulled.push(kind.into());
        return Ok(false);
    }
    Ok(true)
}

/// The container engine (with the builder image), connected the first time a container is
/// needed: a build with every layer and image cached needs none.
struct LazyEngine<'a> {
    podman: tokio::sync::OnceCell<Podman>,
    builder: &'a str,
    distro: &'static dyn crate::distro::Distro,
    cancel: &'a CancellationToken,
}

impl LazyEngine<'_> {
    async fn get(&self) -> Result<&Podman> {
        self.podman
            .get_or_try_init(|| async {
                let engine = Podman::connect().await.context("connecting to the container engine")?;
                builder::ensure(&engine, self.distro).await?;
                Ok(engine)
            })
            .await
    }
}

impl crate::products::sysext::ErofsMaker for LazyEngine<'_> {
    async fn erofs(&self, tar: Vec<u8>, uuid: &str, epoch: u64) -> Result<Vec<u8>> {
        erofs::mkfs(self.get().await?, self.cancel, self.builder, tar, uuid, epoch).await
    }
    fn tool(&self) -> &str {
        self.builder
    }
}

/// The blob of the one-layer image named `name`.
fn layer_blob(store: &Store, name: &str) -> Result<Digest> {
    let m = oci::get_manifest(store, name)?.with_context(|| format!("layer {name} vanished from the store"))?;
    let first = m
        .layers()
        .first()
        .with_context(|| format!("layer {name} has no layer blob"))?;
    Ok(oci::layer_digest(first)?.0)
}

/// What the products are made from.
struct ProductInputs<'a> {
    base_ref: &'a str,
    kernel_ref: &'a str,
    /// Each extension with its layer blob.
    extensions: &'a [(&'a crate::config::Extension, Digest)],
    signing: Option<&'a crate::products::sysext::Signing>,
}

/// Flatten the layers into the initrd, make the extension images, and write every product
/// into `output` (the staging directory); returns their list.
async fn write_products(
    set: &LayerSet,
    store: &Store,
    inputs: &ProductInputs<'_>,
    layers: Vec<products::LayerRecord>,
    output: &Path,
    erofs: &impl crate::products::sysext::ErofsMaker,
) -> Result<Products> {
    let base = oci::get_manifest(store, inputs.base_ref)?
        .with_context(|| format!("layer {} vanished from the store", inputs.base_ref))?;
    let kernel = oci::get_manifest(store, inputs.kernel_ref)?
        .with_context(|| format!("layer {} vanished from the store", inputs.kernel_ref))?;
    let (base_blob, _) = oci::layer_digest(&base.layers()[0])?;
    let base_ann = base.annotations().clone().unwrap_or_default();
    let epoch: u64 = base_ann
        .get(oci::ANN_EPOCH)
        .and_then(|e| e.parse().ok())
        .context("base layer without an epoch annotation")?;
    let kernel_ann = kernel.annotations().clone().unwrap_or_default();
    let version = kernel_ann
        .get(oci::ANN_KERNEL_VERSION)
        .cloned()
        .context("kernel layer without a version annotation")?;
    let mut kernel_image = None;
    let mut modules_blob = None;
    for l in kernel.layers() {
        let (d, _) = oci::layer_digest(l)?;
        match l.media_type().to_string().as_str() {
            oci::KERNEL_IMAGE => kernel_image = Some(d),
            _ => modules_blob = Some(d),
        }
    }
    let kernel_image = kernel_image.context("kernel layer without a kernel image")?;
    let modules_blob = modules_blob.context("kernel layer without a modules layer")?;

    // Flattening is CPU work (zstd -19): on a blocking thread, off the async workers.
    let mut members = {
        let (store, compression) = (store.clone(), set.base.compression);
        blocking(move || {
            let members = vec![
                crate::products::initrd::member(&store, &base_blob, compression, true)?,
                crate::products::initrd::member(&store, &modules_blob, compression, false)?,
            ];
            let (base, modules) = (
                oci::read_layer_blob(&store, &base_blob)?,
                oci::read_layer_blob(&store, &modules_blob)?,
            );
            let sizes = crate::products::sizes::of_layers(&[&base, &modules]);
            crate::products::sizes::log(&sizes, members[0].data.len() as u64, members[1].data.len() as u64);
            Ok(members)
        })
        .await?
    };
    if let Some(signing) = inputs.signing {
        // Its own member, so the base layer (and its cached member) serve every key.
        let data = crate::products::initrd::write_member(
            &crate::products::sysext::certificate_layer(signing, epoch)?,
            set.base.compression,
        )?;
        members.push(crate::products::initrd::Member {
            digest: Digest::of(&data),
            data,
        });
    }
    let initrd_name = match set.base.compression.extension() {
        Some(ext) => format!("initrd.cpio.{ext}"),
        None => "initrd.cpio".to_string(),
    };
    let initrd_path = output.join(&initrd_name);
    let (sha256, size) = crate::products::initrd::concatenate(&members, &initrd_path)?;
    let initrd = Product::initrd(
        &initrd_name,
        sha256,
        size,
        set.base.compression,
        members.iter().map(|m| m.digest.to_string()).collect(),
    );

    let kernel_name = "vmlinuz".to_string();
    let vmlinuz = store.read_blob(&kernel_image)?;
    crate::store::write_atomic(&output.join(&kernel_name), &vmlinuz)?;
    let kernel = Product::kernel(&kernel_name, Digest::of(&vmlinuz), vmlinuz.len() as u64, &version);

    let mut all = vec![kernel, initrd];
    if !inputs.extensions.is_empty() {
        let os_release = base_ann
            .get(oci::ANN_OS_RELEASE)
            .context("base layer without an os-release annotation")?;
        let arch = set.distro().architecture(&set.distribution.architecture)?.sysext;
        for (x, blob) in inputs.extensions {
            let release = crate::products::sysext::release(os_release, arch, x);
            let images =
                crate::products::sysext::write_images(store, x, blob, &release, epoch, inputs.signing, output, erofs)
                    .instrument(info_span!("extension_image", extension = %x.name))
                    .await?;
            all.extend(images);
        }
    }
    let mut products = Products::new(&set.name, all);
    products.layers = layers;
    Ok(products)
}

/// Run CPU work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a worker thread failed")?
}
