//! The builder image: `Containerfiles/debian.Containerfile`, built through the engine API and
//! tagged with a digest of its content, so it is built once per change of the file.

use anyhow::{Context as _, Result};
use tracing::{Instrument as _, info, info_span};

use crate::digest::Digest;
use crate::engine::Engine;

/// The Containerfile, compiled into strata so the image and the tag always match.
pub const BUILDER_CONTAINERFILE: &str = include_str!("../../Containerfiles/debian.Containerfile");

/// `localhost/strata-builder-debian:<16 hex digits of the Containerfile's sha256>`.
pub fn builder_tag() -> String {
    let d = Digest::of(BUILDER_CONTAINERFILE.as_bytes());
    format!("localhost/strata-builder-debian:{}", &d.hex()[..16])
}

/// Build the builder image unless the engine already has it.
pub async fn ensure<E: Engine>(engine: &E) -> Result<()> {
    let tag = builder_tag();
    if engine.image_exists(&tag).await? {
        return Ok(());
    }
    async {
        info!(%tag, "building the builder image (once per change of Containerfiles/debian.Containerfile)");
        let mut ctx = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(BUILDER_CONTAINERFILE.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        ctx.append_data(&mut h, "debian.Containerfile", BUILDER_CONTAINERFILE.as_bytes())?;
        engine
            .build_image(&tag, "debian.Containerfile", ctx.into_inner()?)
            .await
            .with_context(|| format!("building the builder image {tag} (it needs the base image docker.io/library/debian:trixie: ci/setup.sh imports one)"))
    }
    .instrument(info_span!("builder_image"))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{Call, Fake};

    #[tokio::test]
    async fn builds_once() {
        let fake = Fake::default();
        ensure(&fake).await.unwrap();
        ensure(&fake).await.unwrap();
        let builds = fake.calls().iter().filter(|c| matches!(c, Call::BuildImage(_))).count();
        assert_eq!(builds, 1);
        assert!(builder_tag().starts_with("localhost/strata-builder-debian:"));
    }
}
