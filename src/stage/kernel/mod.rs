//! The kernel layer: the distribution's kernel package unpacked in a builder container (no
//! maintainer scripts, so no initramfs hooks), the selected modules with their dependency
//! closure and firmware, depmod'ed; plus the kernel image.

pub(crate) mod select;

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};
use strata_format::layer::{Layer, ReadOptions};
use tracing::{info, warn};

use crate::digest::Digest;
use crate::distro::{Assembled, KernelFetched, kernel_paths};
use crate::engine::run::{self, Container};
use crate::engine::{ContainerSpec, Engine};
use crate::stage::kernel::select::{Metadata, ModuleIndex};
use crate::stage::{Ctx, epoch, get_file, in_container, put_file};
use crate::store::image as oci;

struct Fetched {
    version: String,
    package: String,
    modules_tar: Vec<u8>,
    vmlinuz: Vec<u8>,
    epoch: u64,
}

/// Build the kernel layer and store it as `name`.
pub(crate) async fn build<E: Engine>(ctx: &Ctx<'_, E>, key: &Digest, name: &str) -> Result<()> {
    let set = ctx.set;
    let d = &set.distribution;
    let k = &set.kernel;
    let spec = ContainerSpec {
        image: ctx.builder.to_string(),
        env: vec![],
        network: true,
        mounts: false,
        name_hint: "kernel".into(),
    };
    let fetched = in_container(ctx.engine, ctx.cancel, &spec, async |c: &Container| {
        let epoch = epoch(ctx, c).await?;
        let fetch = ctx.distro.kernel_fetch_command(d, &k.package, &k.firmware_packages);
        let kernel: KernelFetched = match run::run_json(ctx.engine, c, &fetch).await {
            Ok(k) => k,
            Err(e) => {
                let missing = crate::stage::missing_packages(ctx, &e);
                if !missing.is_empty() {
                    bail!(
                        "kernel or firmware package {} not found in {}/{} ({})",
                        missing.join(", "),
                        d.id,
                        d.release,
                        d.mirror
                    );
                }
                return Err(e);
            }
        };
        let version = kernel.uname.clone();
        // `name=version` of the kernel package, as the layer's annotation has it.
        let package = format!("{}={}", kernel.package, kernel.version);
        info!(%version, %package, "kernel unpacked");

        let meta = |f: &'static str| async move {
            get_file(ctx.engine, &c.id, &format!("{}/{f}", kernel_paths::META))
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let (dep, builtin, softdep, weakdep, alias) = (
            meta("modules.dep").await?,
            meta("modules.builtin").await?,
            meta("modules.softdep").await?,
            meta("modules.weakdep").await?,
            meta("modules.alias").await?,
        );
        let index = ModuleIndex::parse(Metadata {
            dep: &dep,
            builtin: &builtin,
            softdep: &softdep,
            weakdep: &weakdep,
            alias: &alias,
        });
        let selection = index
            .select(&version, &k.modules)
            .with_context(|| format!("in kernel.modules of {}", set.dir.join("base.toml").display()))?;
        info!(
            modules = selection.paths.len(),
            builtin = selection.builtin.len(),
            "modules selected"
        );
        if !selection.readded.is_empty() {
            info!(
                modules = ?selection.readded,
                "modules left out by a `!` pattern are kept: selected modules depend on them"
            );
        }
        let list = selection.paths.join("\n") + "\n";
        put_file(
            ctx.engine,
            &c.id,
            kernel_paths::SELECTION_DIR,
            kernel_paths::SELECTION_FILE,
            list.as_bytes(),
            0o644,
        )
        .await?;
        let assembled: Assembled = run::run_json(ctx.engine, c, &ctx.distro.kernel_assemble_command(&version)).await?;
        if !assembled.firmware_missing.is_empty() {
            warn!(
                count = assembled.firmware_missing.len(),
                "firmware referenced by selected modules is not provided by kernel.firmware-packages; it is left out"
            );
            tracing::debug!(firmware = ?assembled.firmware_missing, "missing firmware");
        }
        let modules_tar = ctx.engine.get_archive(&c.id, kernel_paths::OUT).await?;
        let vmlinuz = get_file(ctx.engine, &c.id, kernel_paths::IMAGE).await?;
        Ok(Fetched {
            version,
            package,
            modules_tar,
            vmlinuz,
            epoch,
        })
    })
    .await?;

    let store = ctx.store.clone();
    let name = name.to_string();
    let key = key.clone();
    let mirror = d.mirror.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut layer = Layer::read_tar(
            fetched.modules_tar.as_slice(),
            &ReadOptions {
                strip_prefix: Some("out".into()),
                ..Default::default()
            },
        )
        .context("reading the modules tree from the container")?;
        layer.clamp_mtimes(fetched.epoch);
        let blob = oci::put_layer_blob(&store, &layer)?;
        let image = store.put_blob(&fetched.vmlinuz)?;
        let mut annotations = HashMap::from([
            (oci::ANN_KEY.to_string(), key.to_string()),
            (oci::ANN_EPOCH.to_string(), fetched.epoch.to_string()),
            (oci::ANN_KERNEL_VERSION.to_string(), fetched.version.clone()),
            ("io.strata.kernel.package".to_string(), fetched.package.clone()),
        ]);
        // `name=version` of the kernel package: the version is what was packaged.
        let package_version = fetched
            .package
            .split_once('=')
            .map_or(fetched.version.as_str(), |(_, v)| v);
        annotations.extend(oci::standard_annotations(fetched.epoch, package_version, &mirror));
        oci::put_artifact(
            &store,
            &name,
            oci::KERNEL_ARTIFACT,
            &[
                (oci::KERNEL_IMAGE.to_string(), image, fetched.vmlinuz.len() as u64),
                (
                    "application/vnd.oci.image.layer.v1.tar+zstd".to_string(),
                    blob.digest.clone(),
                    blob.size,
                ),
            ],
            annotations,
        )?;
        info!(version = %fetched.version, entries = layer.entries().len(), layer = %blob.digest, "kernel layer stored");
        Ok(())
    })
    .await?
}
