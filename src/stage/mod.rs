//! The build stages: each makes one layer inside a builder container and stores it.
//!
//! - `base`: the initrd's userspace, installed by the distribution's package manager;
//! - `kernel`: the kernel package, a selection of its modules and their firmware;
//! - `extension`: an extension's packages on top of the base, stored as a diff;
//! - `builder`: the builder image those run in; `erofs`: erofs images made in it.
//!
//! Stages see the container engine only through [`Engine`], so they run against the
//! recording fake in unit tests.

pub(crate) mod base;
pub(crate) mod builder;
pub(crate) mod erofs;
pub(crate) mod extension;
pub(crate) mod kernel;

use anyhow::{Context as _, Result, bail};

use crate::config::LayerSet;
use crate::engine::{ContainerSpec, Engine, ExecOutput};
use crate::interrupt::CancellationToken;
use crate::store::Store;

/// What build steps share.
pub(crate) struct Ctx<'a, E: Engine> {
    pub engine: &'a E,
    pub set: &'a LayerSet,
    pub store: &'a Store,
    pub builder: &'a str,
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
    work: impl AsyncFnOnce(&str) -> Result<T>,
) -> Result<T> {
    let id = tokio::select! {
        id = engine.create(spec) => id?,
        () = cancel.cancelled() => return Err(crate::interrupt::interrupted_error()),
    };
    let result = tokio::select! {
        r = work(&id) => r,
        () = cancel.cancelled() => Err(crate::interrupt::interrupted_error()),
    };
    let removed = engine.remove(&id).await;
    match (result, removed) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e).context("removing the build container"),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(rm)) => Err(e.context(format!("and removing the build container {id} failed too: {rm}"))),
    }
}

/// Run a command in a container; a non-zero exit is an error carrying the output's tail.
pub(crate) async fn run_checked<E: Engine>(engine: &E, id: &str, what: &str, argv: Vec<String>) -> Result<ExecOutput> {
    let out = engine.exec(id, &argv).await?;
    if out.exit_code != 0 {
        bail!(
            "{what} failed (exit code {}): `{}`\n--- last output ---\n{}",
            out.exit_code,
            argv.join(" "),
            out.tail_text()
        );
    }
    Ok(out)
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

/// `KEY=value` lines of a script's stdout.
pub(crate) fn output_values(stdout: &[u8], key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{Call, Fake};

    #[tokio::test]
    async fn container_is_removed_on_success_and_on_failure() {
        let fake = Fake::default();
        let spec = ContainerSpec {
            image: "img".into(),
            env: vec![],
            network: false,
            name_hint: "t".into(),
        };
        let cancel = CancellationToken::new();
        let v = in_container(&fake, &cancel, &spec, async |_id: &str| Ok(7))
            .await
            .unwrap();
        assert_eq!(v, 7);
        let err = in_container(&fake, &cancel, &spec, async |_id: &str| -> Result<()> { bail!("boom") })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        let removes = fake.calls().iter().filter(|c| matches!(c, Call::Remove(_))).count();
        assert_eq!(removes, 2);
    }

    #[tokio::test]
    async fn failed_command_reports_its_tail() {
        let fake = Fake::default();
        fake.exec_answers.lock().unwrap().push_back(ExecOutput {
            exit_code: 100,
            stdout: vec![],
            tail: vec!["E: something broke".into()],
        });
        let err = run_checked(&fake, "id", "installing packages", vec!["mmdebstrap".into()])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("installing packages failed (exit code 100)") && text.contains("E: something broke"),
            "{text}"
        );
    }

    #[test]
    fn output_values_are_read_from_marked_lines() {
        let out = b"noise\nSTRATA_KERNEL_VERSION=6.12.1-amd64\nSTRATA_FIRMWARE_MISSING=a.bin\nSTRATA_FIRMWARE_MISSING=b.bin\n";
        assert_eq!(output_values(out, "STRATA_KERNEL_VERSION"), ["6.12.1-amd64"]);
        assert_eq!(output_values(out, "STRATA_FIRMWARE_MISSING"), ["a.bin", "b.bin"]);
    }
}
