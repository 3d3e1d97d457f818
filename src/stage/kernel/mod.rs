//! The kernel layer: the distribution's kernel package unpacked in a builder container (no
//! maintainer scripts, so no initramfs hooks), the selected modules with their dependency
//! closure and firmware, depmod'ed; plus the kernel image.

pub(crate) mod select;

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};
use strata_format::layer::{Layer, ReadOptions};
use tracing::{info, warn};

use crate::digest::Digest;
use crate::engine::{ContainerSpec, Engine};
use crate::stage::kernel::select::{Metadata, ModuleIndex};
use crate::stage::{Ctx, get_file, in_container, output_values, put_file, run_checked};
use crate::store::image as oci;

const KERNEL_FETCH: &str = include_str!("../../distro/debian/scripts/kernel-fetch.sh");
const KERNEL_ASSEMBLE: &str = include_str!("../../distro/debian/scripts/kernel-assemble.sh");
const FETCH_RELEASE: &str = include_str!("../../distro/debian/scripts/fetch-release.sh");

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
        name_hint: "kernel".into(),
    };
    let fetched = in_container(ctx.engine, ctx.cancel, &spec, async |id: &str| {
        put_file(
            ctx.engine,
            id,
            "/",
            "strata-kernel-fetch.sh",
            KERNEL_FETCH.as_bytes(),
            0o755,
        )
        .await?;
        put_file(
            ctx.engine,
            id,
            "/",
            "strata-kernel-assemble.sh",
            KERNEL_ASSEMBLE.as_bytes(),
            0o755,
        )
        .await?;
        put_file(
            ctx.engine,
            id,
            "/",
            "strata-fetch-release.sh",
            FETCH_RELEASE.as_bytes(),
            0o755,
        )
        .await?;
        let rel = ctx
            .engine
            .exec(
                id,
                &[
                    "sh".into(),
                    "/strata-fetch-release.sh".into(),
                    d.mirror.clone(),
                    d.release.clone(),
                ],
            )
            .await?;
        if rel.exit_code == 90 {
            bail!(
                "cannot reach the mirror {} (fetching dists/{}/InRelease failed)\n--- last output ---\n{}",
                d.mirror,
                d.release,
                rel.tail_text()
            );
        }
        let epoch = match ctx.epoch {
            Some(e) => e,
            None => crate::distro::debian::release_date(&String::from_utf8_lossy(&rel.stdout))
                .with_context(|| format!("{}/dists/{}/InRelease has no readable Date: field", d.mirror, d.release))?,
        };
        let mut argv = vec![
            "sh".into(),
            "/strata-kernel-fetch.sh".into(),
            d.mirror.clone(),
            d.release.clone(),
            d.components.join(" "),
            k.package.clone(),
        ];
        argv.extend(k.firmware_packages.iter().cloned());
        let out = ctx.engine.exec(id, &argv).await?;
        if out.exit_code != 0 {
            let missing = crate::distro::debian::missing_packages(&out.tail_text());
            if !missing.is_empty() {
                bail!(
                    "kernel or firmware package {} not found in {}/{} ({})",
                    missing.join(", "),
                    d.id,
                    d.release,
                    d.mirror
                );
            }
            bail!(
                "fetching the kernel package `{}` failed (exit code {}):\n--- last output ---\n{}",
                k.package,
                out.exit_code,
                out.tail_text()
            );
        }
        let version = output_values(&out.stdout, "STRATA_KERNEL_VERSION")
            .pop()
            .context("the kernel fetch script printed no version")?;
        let package = output_values(&out.stdout, "STRATA_KERNEL_PACKAGE")
            .pop()
            .unwrap_or_default();
        info!(%version, %package, "kernel unpacked");

        let meta = |f: &'static str| async move {
            get_file(ctx.engine, id, &format!("/work/meta/{f}"))
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
        let list = selection.paths.join("\n") + "\n";
        put_file(ctx.engine, id, "/work", "selection.txt", list.as_bytes(), 0o644).await?;
        let out = run_checked(
            ctx.engine,
            id,
            "assembling the modules layer",
            vec!["sh".into(), "/strata-kernel-assemble.sh".into(), version.clone()],
        )
        .await?;
        let missing_fw = output_values(&out.stdout, "STRATA_FIRMWARE_MISSING");
        if !missing_fw.is_empty() {
            warn!(
                count = missing_fw.len(),
                "firmware referenced by selected modules is not provided by kernel.firmware-packages; it is left out"
            );
            tracing::debug!(firmware = ?missing_fw, "missing firmware");
        }
        let modules_tar = ctx.engine.get_archive(id, "/out").await?;
        let vmlinuz = get_file(ctx.engine, id, "/work/vmlinuz").await?;
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
