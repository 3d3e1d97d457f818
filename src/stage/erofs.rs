//! erofs file systems for extension images, made by `mkfs.erofs` (erofs-utils) in the
//! builder container: strata has no erofs writer of its own.

use anyhow::{Context as _, Result};
use tracing::info;

use super::{get_file, in_container, put_file};
use crate::engine::run::{self, Command, Container};
use crate::engine::{ContainerSpec, Engine};

/// `mkfs.erofs` in a container from `builder`: the tree in `tar` as an lz4hc-compressed
/// erofs with file system UUID `uuid`, build time `epoch` (files keep their own times).
pub(crate) async fn mkfs<E: Engine>(
    engine: &E,
    cancel: &crate::interrupt::CancellationToken,
    builder: &str,
    tar: Vec<u8>,
    uuid: &str,
    epoch: u64,
) -> Result<Vec<u8>> {
    let start = std::time::Instant::now();
    let spec = ContainerSpec {
        image: builder.to_string(),
        env: vec![],
        network: false,
        mounts: false,
        name_hint: "erofs".into(),
    };
    let fs = in_container(engine, cancel, &spec, async |c: &Container| {
        put_file(engine, &c.id, "/", "strata-fs.tar", &tar, 0o644).await?;
        run::run(engine, c, &Command::new("mkfs.erofs", argv(uuid, epoch))).await?;
        get_file(engine, &c.id, "/strata-fs.erofs").await
    })
    .await
    .context("making the erofs file system in the builder container")?;
    info!(bytes = fs.len(), elapsed = ?start.elapsed(), "erofs made");
    Ok(fs)
}

/// The `mkfs.erofs` command line (see [`crate::products::sysext::EROFS_OPTIONS`]).
fn argv(uuid: &str, epoch: u64) -> Vec<String> {
    [
        "env",
        &format!("SOURCE_DATE_EPOCH={epoch}"),
        "mkfs.erofs",
        "--quiet",
        "-zlz4hc",
        &format!("-T{epoch}"),
        "--mkfs-time",
        &format!("-U{uuid}"),
        "--tar=f",
        "/strata-fs.erofs",
        "/strata-fs.tar",
    ]
    .map(str::to_string)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_reproducible() {
        let a = argv("0a5e1f4e-8d2c-4b6a-9e1f-2a3b4c5d6e7f", 1_700_000_000);
        assert_eq!(a[2..5], ["mkfs.erofs", "--quiet", "-zlz4hc"]);
        assert!(a.contains(&"-T1700000000".to_string()) && a.contains(&"--mkfs-time".to_string()));
        assert!(a.contains(&"-U0a5e1f4e-8d2c-4b6a-9e1f-2a3b4c5d6e7f".to_string()));
        assert!(a.contains(&"SOURCE_DATE_EPOCH=1700000000".to_string()));
    }
}
