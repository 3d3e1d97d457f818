//! The build stages: each makes one layer inside a builder container and stores it.
//!
//! - `base`: the initrd's userspace, installed by the distribution's package manager;
//! - `kernel`: the kernel package, a selection of its modules and their firmware;
//! - `extension`: an extension's packages on top of the base, stored as a diff;
//! - `builder`: the builder image those run in; `erofs`: erofs images made in it;
//! - `emergency`: the units and scripts the base gets for a root that never appears
//!   (their text is in `initrd/`).
//!
//! Stages see the container engine only through [`Engine`], so they run against the
//! recording fake in unit tests.

pub(crate) mod base;
pub(crate) mod builder;
pub(crate) mod emergency;
pub(crate) mod erofs;
pub(crate) mod extension;
pub(crate) mod kernel;
pub(crate) mod requeue;

use anyhow::{Context as _, Result};

use crate::config::LayerSet;
use crate::distro::Distro;
use crate::engine::run::{self, Container};
use crate::engine::{ContainerSpec, Engine};
use crate::interrupt::CancellationToken;
use crate::store::Store;

/// What build steps share.
pub(crate) struct Ctx<'a, E: Engine> {
    pub engine: &'a E,
    pub set: &'a LayerSet,
    pub store: &'a Store,
    pub builder: &'a str,
    /// The distribution backend of the set (`distribution.id`).
    pub distro: &'static dyn Distro,
    /// `SOURCE_DATE_EPOCH`, if set.
    pub epoch: Option<u64>,
    /// Cancelled on Ctrl-C ([`crate::interrupt`]).
    pub cancel: &'a CancellationToken,
}

/// Create a build container, run `work` in it, and remove the container afterwards: on
/// success, on failure and when `cancel` fires (Ctrl-C).
pub(crate) async fn in_container<E: Engine, T>(
    engine: &E,
    cancel: &CancellationToken,
    spec: &ContainerSpec,
    work: impl AsyncFnOnce(&Container) -> Result<T>,
) -> Result<T> {
    // `biased`: a cancellation that is already there wins over work that is ready too.
    let id = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(crate::interrupt::interrupted_error()),
        id = engine.create(spec) => id?,
    };
    let container = Container {
        id: id.clone(),
        spec: spec.clone(),
    };
    let result = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(crate::interrupt::interrupted_error()),
        r = work(&container) => r,
    };
    let removed = engine.remove(&id).await;
    match (result, removed) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e).context("removing the build container"),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(rm)) => Err(e.context(format!("and removing the build container {id} failed too: {rm}"))),
    }
}

/// The epoch of a build: `SOURCE_DATE_EPOCH` if set, else the repository's release date.
/// The repository is asked either way: an unreachable mirror or an expired release (unless
/// the set allows it) is an error before anything is installed.
pub(crate) async fn epoch<E: Engine>(ctx: &Ctx<'_, E>, c: &Container) -> Result<u64> {
    let d = &ctx.set.distribution;
    let answer = run::run_json(ctx.engine, c, &ctx.distro.release_command(d)).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let release = ctx.distro.release_epoch(d, &answer, now)?;
    Ok(ctx.epoch.unwrap_or(release))
}

/// The packages a failed command (`error`, a [`run::Failed`]) says do not exist, in the
/// words of the set's package manager; empty for any other error.
pub(crate) fn missing_packages<E: Engine>(ctx: &Ctx<'_, E>, error: &anyhow::Error) -> Vec<String> {
    error
        .downcast_ref::<run::Failed>()
        .map(|f| ctx.distro.missing_packages(&f.tail))
        .unwrap_or_default()
}

/// Put one file into a container directory.
pub(crate) async fn put_file<E: Engine>(
    engine: &E,
    id: &str,
    dir: &str,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, name, data)?;
    engine.put_archive(id, dir, tar.into_inner()?).await?;
    Ok(())
}

/// The content of a single file from a container.
pub(crate) async fn get_file<E: Engine>(engine: &E, id: &str, path: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let tar = engine.get_archive(id, path).await?;
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut entries = archive.entries()?;
    let mut entry = entries
        .next()
        .with_context(|| format!("{path}: empty archive from the container"))??;
    let mut data = Vec::new();
    entry.read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod helper_tests {
    use super::*;
    use crate::engine::fake::{Call, Fake};
    use anyhow::bail;

    #[tokio::test]
    async fn container_is_removed_on_success_and_on_failure() {
        let fake = Fake::default();
        let spec = ContainerSpec {
            image: "img".into(),
            env: vec![],
            network: false,
            mounts: false,
            name_hint: "t".into(),
        };
        let cancel = CancellationToken::new();
        let v = in_container(&fake, &cancel, &spec, async |_c: &Container| Ok(7))
            .await
            .unwrap();
        assert_eq!(v, 7);
        let err = in_container(&fake, &cancel, &spec, async |_c: &Container| -> Result<()> {
            bail!("boom")
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        let removes = fake.calls().iter().filter(|c| matches!(c, Call::Remove(_))).count();
        assert_eq!(removes, 2);
    }
}
