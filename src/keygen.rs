//! `strata keygen`: a development key and self-signed certificate for signing the verity
//! root hashes of system extensions.
//!
//! The key (`sysext.key`, PKCS#8 PEM, mode 0600) never enters a layer or product; the
//! certificate (`sysext.crt`, PEM) goes into the base initrd's `/etc/verity.d/` so that
//! systemd there accepts extensions signed with the key.

use crate::store::atomic::AtomicFile;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use strata_format::sign;

/// File name of the private key in the output directory.
pub const KEY_FILE: &str = "sysext.key";
/// File name of the certificate in the output directory.
pub const CERT_FILE: &str = "sysext.crt";
/// How long a development certificate is valid.
pub const VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);

/// What [`run`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The private key.
    pub key: PathBuf,
    /// The certificate.
    pub certificate: PathBuf,
    /// SHA-256 fingerprint of the certificate (lowercase hex), as the signature partitions
    /// of images signed with it will name it.
    pub fingerprint: String,
}

/// Generate an RSA key and a self-signed certificate for `CN=<common_name>` (valid from an
/// hour ago for [`VALIDITY`]) and write them to `dir` as [`KEY_FILE`] (0600) and
/// [`CERT_FILE`] (0644), each atomically. Existing files are an error unless `force`.
pub fn run(dir: &Path, common_name: &str, force: bool) -> Result<Written> {
    let key = dir.join(KEY_FILE);
    let certificate = dir.join(CERT_FILE);
    if !force {
        let existing: Vec<String> = [&key, &certificate]
            .into_iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already {}; pass --force to replace the key pair",
                existing.join(" and "),
                if existing.len() == 1 { "exists" } else { "exist" }
            );
        }
    }
    if dir.exists() && !dir.is_dir() {
        bail!(
            "{} is not a directory; name a directory for {KEY_FILE} and {CERT_FILE}",
            dir.display()
        );
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;

    let now = SystemTime::now();
    let not_before = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
    let pair = sign::generate_dev_key(common_name, not_before, now + VALIDITY)
        .with_context(|| format!("generating a development key for CN={common_name}"))?;
    let parsed = sign::load_certificate(pair.certificate_pem.as_bytes()).context("reading back the new certificate")?;
    let fingerprint = sign::certificate_fingerprint(&parsed).context("fingerprinting the new certificate")?;

    // Both files are complete on disk before either is renamed into place.
    let key_tmp = temp_file(dir, pair.key_pem.as_bytes(), 0o600)?;
    let cert_tmp = temp_file(dir, pair.certificate_pem.as_bytes(), 0o644)?;
    persist(key_tmp, &key, force)?;
    persist(cert_tmp, &certificate, force)?;
    Ok(Written {
        key,
        certificate,
        fingerprint,
    })
}

/// A temporary file in `dir` holding `data`, with `mode` from the start (so the key is
/// never readable by others, not even briefly).
fn temp_file(dir: &Path, data: &[u8], mode: u32) -> Result<AtomicFile> {
    let mut tmp = AtomicFile::new(dir, mode)?;
    tmp.write_all(data).context("writing a temporary file")?;
    Ok(tmp)
}

fn persist(tmp: AtomicFile, path: &Path, force: bool) -> Result<()> {
    let result = if force {
        tmp.commit(path)
    } else {
        tmp.commit_noclobber(path)
    };
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn writes_a_matching_pair_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let w = run(&out, "strata test", false).unwrap();
        assert_eq!(fs::metadata(&w.key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&w.certificate).unwrap().mode() & 0o777, 0o644);
        let (key, cert) = (fs::read(&w.key).unwrap(), fs::read(&w.certificate).unwrap());
        assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        sign::Signer::from_pem(&key, &cert).expect("key and certificate are a pair");
        assert_eq!(w.fingerprint.len(), 64);

        let err = run(&out, "strata test", false).unwrap_err().to_string();
        assert!(
            err.contains("sysext.key and") && err.contains("already exist;") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(fs::read(&w.key).unwrap(), key, "refused run left the key alone");

        let w2 = run(&out, "strata test", true).unwrap();
        assert_ne!(fs::read(&w2.key).unwrap(), key, "--force replaced the key");
        assert_ne!(w2.fingerprint, w.fingerprint);
        let leftovers: Vec<_> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
    }

    #[test]
    fn an_output_that_is_a_file_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        fs::write(&file, "x").unwrap();
        let err = format!("{:#}", run(&file, "strata test", false).unwrap_err());
        assert_eq!(
            err,
            format!(
                "{} is not a directory; name a directory for sysext.key and sysext.crt",
                file.display()
            )
        );
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }
}
