//! The builder image of a distribution backend (`Containerfiles/<distro>.Containerfile` and
//! the commands beside it), built through the engine API and tagged with a digest of the
//! whole build context, so it is built once per change of any of its files.

use anyhow::{Context as _, Result};
use tracing::{Instrument as _, info, info_span};

use crate::digest::Digest;
use crate::distro::{BuilderContext, Distro};
use crate::engine::Engine;

/// `localhost/strata-builder-NAME:<16 hex digits of the build context's sha256>`.
pub fn builder_tag(distro: &dyn Distro) -> String {
    let b = distro.builder();
    let d = Digest::of(&context_tar(&b).expect("writing a tar into memory cannot fail"));
    format!("localhost/strata-builder-{}:{}", b.name, &d.hex()[..16])
}

/// The build context: the Containerfile (0644) and the commands (0755), mtime 0, sorted as
/// the backend lists them.
fn context_tar(b: &BuilderContext) -> std::io::Result<Vec<u8>> {
    let mut ctx = tar::Builder::new(Vec::new());
    let files = std::iter::once((b.containerfile, 0o644)).chain(b.files.iter().map(|f| (*f, 0o755)));
    for ((path, text), mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        ctx.append_data(&mut h, path, text.as_bytes())?;
    }
    ctx.into_inner()
}

/// Build the builder image unless the engine already has it; returns its tag.
pub async fn ensure<E: Engine>(engine: &E, distro: &dyn Distro) -> Result<String> {
    let tag = builder_tag(distro);
    if engine.image_exists(&tag).await? {
        return Ok(tag);
    }
    let b = distro.builder();
    async {
        info!(%tag, "building the builder image (once per change of Containerfiles/{})", b.containerfile.0);
        engine.build_image(&tag, b.containerfile.0, context_tar(&b)?).await.with_context(|| {
            format!("building the builder image {tag} (it needs its base image, e.g. docker.io/library/debian:trixie: ci/setup.sh imports one)")
        })
    }
    .instrument(info_span!("builder_image"))
    .await?;
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distro::debian::Debian;
    use crate::engine::fake::{Call, Fake};

    #[tokio::test]
    async fn builds_once() {
        let fake = Fake::default();
        ensure(&fake, &Debian).await.unwrap();
        ensure(&fake, &Debian).await.unwrap();
        let builds = fake.calls().iter().filter(|c| matches!(c, Call::BuildImage(_))).count();
        assert_eq!(builds, 1);
        assert!(builder_tag(&Debian).starts_with("localhost/strata-builder-debian:"));
    }

    #[test]
    fn the_context_holds_the_containerfile_and_executable_commands() {
        let tar = context_tar(&Debian.builder()).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(entries[0], ("debian.Containerfile".to_string(), 0o644));
        assert!(
            entries.contains(&("debian/strata-install-root".to_string(), 0o755)),
            "{entries:?}"
        );
        assert!(
            Debian
                .builder()
                .containerfile
                .1
                .contains("COPY debian/ /usr/local/bin/")
        );
    }
}
