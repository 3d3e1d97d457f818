//! The content-addressed layer store: an OCI image layout under the cache directory.
//!
//! ```text
//! CACHE/oci/oci-layout
//! CACHE/oci/index.json          manifests, named by org.opencontainers.image.ref.name
//! CACHE/oci/blobs/sha256/<hex>
//! ```
//!
//! Writes are atomic: a blob is hashed while it is written to a temporary file in the blob
//! directory, fsynced, checked against the expected digest and size when one is given, and
//! renamed into place. `index.json` is rewritten the same way under an exclusive lock.
//! Reads verify the digest; a blob that does not match is removed and reported, so the
//! caller rebuilds it.

pub mod atomic;
pub mod image;
pub mod layer;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, MediaType};
use sha2::{Digest as _, Sha256};

use crate::digest::{BadDigest, Digest, canonical_json};

/// The annotation naming a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "blob {expected} in {path} is corrupt: its content hashes to {found} (removed; it will be rebuilt or fetched again)"
    )]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        found: Digest,
    },
    #[error("blob {digest}: expected {expected} bytes, got {found}")]
    SizeMismatch { digest: Digest, expected: u64, found: u64 },
    #[error("blob {digest} is not in the store at {root}")]
    Missing { root: PathBuf, digest: Digest },
    #[error("{path} is not a valid OCI index")]
    BadIndex { path: PathBuf, source: serde_json::Error },
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is a directory, not a blob: remove it (strata replaces it when it writes that blob again)")]
    NotABlob { path: PathBuf },
    #[error("interrupted: {path} was not written")]
    Interrupted { path: PathBuf },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The descriptor strata hands around: a blob or manifest of the store (the entries of
/// `index.json`, what [`Store::get_ref`] gives, what the registry code pushes and pulls),
/// with a validated sha256 [`Digest`].
///
/// Manifests and indexes themselves are oci-spec's types (`ImageManifest`, `ImageIndex`),
/// whose descriptors are oci-spec's: [`Descriptor::to_oci`] and [`Descriptor::from_oci`]
/// are the one place the two meet. This type stays beside oci-spec's because its digest is
/// a checked `sha256:` one (the store is addressed by it) and its fields are plain data
/// that callers (and the integration tests) build and read directly. Both serialize to the
/// same JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl Descriptor {
    /// A descriptor with no `artifactType` and no annotations.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            artifact_type: None,
            annotations: HashMap::new(),
        }
    }

    /// As oci-spec's descriptor (no annotations unless there are some, as serialized here).
    pub fn to_oci(&self) -> oci_spec::image::Descriptor {
        let digest: oci_spec::image::Digest = self
            .digest
            .to_string()
            .parse()
            .expect("a sha256 digest is a valid OCI digest");
        let mut d = oci_spec::image::Descriptor::new(self.media_type.as_str().into(), self.size, digest);
        d.set_artifact_type(self.artifact_type.as_deref().map(Into::into));
        if !self.annotations.is_empty() {
            d.set_annotations(Some(self.annotations.clone()));
        }
        d
    }

    /// From oci-spec's descriptor: its media type, digest (which must be sha256), size,
    /// `artifactType` and annotations (`urls`, `platform` and `data` are not kept).
    pub fn from_oci(d: &oci_spec::image::Descriptor) -> Result<Descriptor, BadDigest> {
        Ok(Descriptor {
            media_type: d.media_type().to_string(),
            digest: d.digest().to_string().parse()?,
            size: d.size(),
            artifact_type: d.artifact_type().as_ref().map(ToString::to_string),
            annotations: d.annotations().clone().unwrap_or_default(),
        })
    }
}

/// A descriptor of a manifest or index, as oci-spec parsed it, in strata's type; a digest
/// other than sha256 is a JSON error (as it was when strata parsed manifests itself).
pub fn descriptors<'a>(
    list: impl IntoIterator<Item = &'a oci_spec::image::Descriptor>,
) -> Result<Vec<Descriptor>, serde_json::Error> {
    list.into_iter()
        .map(|d| Descriptor::from_oci(d).map_err(<serde_json::Error as serde::de::Error>::custom))
        .collect()
}

/// An OCI image layout on disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open (creating if needed) the layout at `root`.
    pub fn open(root: &Path) -> Result<Store, Error> {
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
        atomic::remove_stale(&blobs)?;
        atomic::remove_stale(root)?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let mut empty = ImageIndex::default();
            empty.set_media_type(Some(MediaType::ImageIndex));
            write_atomic(&index, &canonical_json(&empty))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob exists (not verified; reads verify).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Store `data`, returning its digest. An existing blob is not rewritten.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest, Error> {
        let digest = Digest::of(data);
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer()?;
            w.write_all(data).map_err(io_at(&self.root))?;
            w.commit(Some((&digest, data.len() as u64)))?;
        }
        Ok(digest)
    }

    /// A writer that hashes while writing into a temporary file of the store.
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        let file = atomic::AtomicFile::new(&self.root.join("blobs/sha256"), 0o644)?;
        Ok(BlobWriter {
            store: self.clone(),
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Read and verify a whole blob. A corrupt blob is removed and reported.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let mut r = self.blob_reader(digest)?;
        let len = r.file.metadata().map_or(0, |m| m.len());
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        r.read_to_end(&mut data).map_err(io_at(&r.path))?;
        r.finish()?;
        Ok(data)
    }

    /// A reader of the blob `digest` that hashes what it reads; [`BlobReader::finish`]
    /// reads what is left and checks the digest. Until then what was read is unverified.
    pub fn blob_reader(&self, digest: &Digest) -> Result<BlobReader, Error> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Missing {
                    root: self.root.clone(),
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        // A directory opens like a file; reading it would fail with a bare EISDIR.
        if file.metadata().map_err(io_at(&path))?.is_dir() {
            return Err(Error::NotABlob { path });
        }
        Ok(BlobReader {
            file,
            path,
            expected: digest.clone(),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Read a blob and parse it as JSON.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<T, Error> {
        let data = self.read_blob(digest)?;
        serde_json::from_slice(&data).map_err(|source| Error::BadIndex {
            path: self.blob_path(digest),
            source,
        })
    }

    /// The manifest descriptor named `name`, if any.
    pub fn get_ref(&self, name: &str) -> Result<Option<Descriptor>, Error> {
        let (_, manifests) = self.read_index()?;
        Ok(manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME).is_some_and(|n| n == name)))
    }

    /// Point `name` at `desc` (replacing any previous manifest of that name).
    pub fn set_ref(&self, name: &str, mut desc: Descriptor) -> Result<(), Error> {
        let lock_path = self.root.join("index.lock");
        let lock = File::create(&lock_path).map_err(io_at(&lock_path))?;
        lock.lock().map_err(io_at(&lock_path))?;
        let (mut index, mut manifests) = self.read_index()?;
        manifests.retain(|d| d.annotations.get(REF_NAME).is_none_or(|n| n != name));
        desc.annotations.insert(REF_NAME.into(), name.into());
        manifests.push(desc);
        manifests.sort_by(|a, b| a.annotations.get(REF_NAME).cmp(&b.annotations.get(REF_NAME)));
        index.set_manifests(manifests.iter().map(Descriptor::to_oci).collect());
        write_atomic(&self.root.join("index.json"), &canonical_json(&index))?;
        Ok(())
    }

    /// Remove the name `name`, if present (the manifest and its blobs stay).
    pub fn remove_ref(&self, name: &str) -> Result<(), Error> {
        let lock_path = self.root.join("index.lock");
        let lock = File::create(&lock_path).map_err(io_at(&lock_path))?;
        lock.lock().map_err(io_at(&lock_path))?;
        let (mut index, mut manifests) = self.read_index()?;
        let before = manifests.len();
        manifests.retain(|d| d.annotations.get(REF_NAME).is_none_or(|n| n != name));
        if manifests.len() != before {
            index.set_manifests(manifests.iter().map(Descriptor::to_oci).collect());
            write_atomic(&self.root.join("index.json"), &canonical_json(&index))?;
        }
        Ok(())
    }

    /// `index.json`, and its manifests in strata's descriptor type.
    fn read_index(&self) -> Result<(ImageIndex, Vec<Descriptor>), Error> {
        let path = self.root.join("index.json");
        let data = fs::read(&path).map_err(io_at(&path))?;
        let parsed =
            serde_json::from_slice::<ImageIndex>(&data).and_then(|index| Ok((descriptors(index.manifests())?, index)));
        match parsed {
            Ok((manifests, index)) => Ok((index, manifests)),
            Err(source) => Err(Error::BadIndex { path, source }),
        }
    }
}

/// A blob being written; see [`Store::blob_writer`]. Dropping it without
/// [`BlobWriter::commit`] leaves nothing behind.
pub struct BlobWriter {
    store: Store,
    file: atomic::AtomicFile,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Finish: fsync, verify against `expected` (digest and size) if given, rename into
    /// place. Returns the digest and size.
    pub fn commit(mut self, expected: Option<(&Digest, u64)>) -> Result<(Digest, u64), Error> {
        let tmp = self.file.path().to_path_buf();
        self.file.flush().map_err(io_at(&tmp))?;
        let digest = Digest::from_hasher(self.hasher);
        if let Some((want, want_size)) = expected {
            if &digest != want {
                return Err(Error::DigestMismatch {
                    path: tmp,
                    expected: want.clone(),
                    found: digest,
                });
            }
            if self.size != want_size {
                return Err(Error::SizeMismatch {
                    digest,
                    expected: want_size,
                    found: self.size,
                });
            }
        }
        let dest = self.store.blob_path(&digest);
        // Nothing valid is ever a directory at a content-addressed path (a file cannot be
        // renamed over one): it goes.
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            tracing::warn!("{} is a directory, not a blob: replacing it", dest.display());
            fs::remove_dir_all(&dest).map_err(io_at(&dest))?;
        }
        self.file.commit(&dest)?;
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A blob being read; see [`Store::blob_reader`].
pub struct BlobReader {
    file: File,
    path: PathBuf,
    expected: Digest,
    hasher: Sha256,
    size: u64,
}

impl BlobReader {
    /// Read the rest of the blob and check its digest. A corrupt blob is removed and
    /// reported as [`Error::DigestMismatch`]. Returns the blob's size.
    pub fn finish(mut self) -> Result<u64, Error> {
        io::copy(&mut self, &mut io::sink()).map_err(io_at(&self.path))?;
        let found = Digest::from_hasher(self.hasher);
        if found != self.expected {
            fs::remove_file(&self.path).map_err(io_at(&self.path))?;
            return Err(Error::DigestMismatch {
                path: self.path,
                expected: self.expected,
                found,
            });
        }
        Ok(self.size)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

pub use atomic::{copy as copy_atomic, write as write_atomic};

/// Read all of `r` (helper for streaming callers).
pub fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_blob(b"hello").unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        // Corrupt it: the read fails naming both digests, and the blob is gone.
        fs::write(store.blob_path(&d), b"hellO").unwrap();
        let err = store.read_blob(&d).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&d.to_string()));
        assert!(!store.has_blob(&d));
        assert!(matches!(store.read_blob(&d).unwrap_err(), Error::Missing { .. }));
    }

    #[test]
    fn a_directory_at_a_blob_path_is_explained_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        let path = store.blob_path(&d);
        fs::create_dir_all(path.join("sub")).unwrap();
        let err = store.read_blob(&d).unwrap_err();
        assert!(matches!(err, Error::NotABlob { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("is a directory, not a blob: remove it"),
            "{text}"
        );
        assert!(!store.has_blob(&d));
        assert_eq!(store.put_blob(b"hello").unwrap(), d);
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
    }

    #[test]
    fn open_removes_temporaries_of_dead_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blobs = dir.path().join("blobs/sha256");
        // pid 2^22+1 is above Linux's pid_max limit: never a live process.
        fs::write(blobs.join(".tmp-4194305-abc"), b"partial").unwrap();
        fs::write(blobs.join(".tmp-legacy"), b"partial").unwrap();
        let live = store.blob_writer().unwrap();
        Store::open(dir.path()).unwrap();
        let left: Vec<String> = fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with(&format!(".tmp-{}-", std::process::id())));
        drop(live);
    }

    #[test]
    fn written_files_are_world_readable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("products.json");
        write_atomic(&f, b"{}").unwrap();
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o644);
        let store = Store::open(&dir.path().join("oci")).unwrap();
        let d = store.put_blob(b"x").unwrap();
        assert_eq!(
            fs::metadata(store.blob_path(&d)).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn writer_checks_expected_digest_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        let wrong = Digest::of(b"abd");
        assert!(matches!(
            w.commit(Some((&wrong, 3))).unwrap_err(),
            Error::DigestMismatch { .. }
        ));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256")).unwrap().collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        assert!(matches!(
            w.commit(Some((&Digest::of(b"abc"), 4))).unwrap_err(),
            Error::SizeMismatch { .. }
        ));
    }

    #[test]
    fn refs_are_replaced_and_index_is_valid_oci() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let desc = |data: &[u8]| Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: store.put_blob(data).unwrap(),
            size: data.len() as u64,
            artifact_type: None,
            annotations: HashMap::new(),
        };
        store.set_ref("a", desc(b"{}")).unwrap();
        store.set_ref("a", desc(b"{ }")).unwrap();
        store.set_ref("b", desc(b"{}")).unwrap();
        assert_eq!(store.get_ref("a").unwrap().unwrap().digest, Digest::of(b"{ }"));
        assert!(store.get_ref("c").unwrap().is_none());
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    }

    /// `index.json` through oci-spec's `ImageIndex` has the bytes of the hand-written
    /// `Index` it replaced.
    #[test]
    fn index_json_bytes_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let read = || String::from_utf8(fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(
            read(),
            r#"{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#
        );
        let mut d = Descriptor::new("application/vnd.strata.initrd.member.v1", Digest::of(b"m"), 1);
        d.annotations.insert("io.strata.layer".into(), "x".into());
        store.set_ref("m", d).unwrap();
        let mut a = Descriptor::new("application/vnd.oci.image.manifest.v1+json", Digest::of(b"a"), 2);
        a.artifact_type = Some("application/vnd.strata.kernel.v1".into());
        store.set_ref("a", a.clone()).unwrap();
        assert_eq!(
            read(),
            format!(
                concat!(
                    r#"{{"manifests":[{{"annotations":{{"org.opencontainers.image.ref.name":"a"}},"#,
                    r#""artifactType":"application/vnd.strata.kernel.v1","digest":"{}","#,
                    r#""mediaType":"application/vnd.oci.image.manifest.v1+json","size":2}},"#,
                    r#"{{"annotations":{{"io.strata.layer":"x","org.opencontainers.image.ref.name":"m"}},"#,
                    r#""digest":"{}","mediaType":"application/vnd.strata.initrd.member.v1","size":1}}],"#,
                    r#""mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}}"#
                ),
                Digest::of(b"a"),
                Digest::of(b"m")
            )
        );
        let got = store.get_ref("a").unwrap().unwrap();
        assert_eq!(got.annotations[REF_NAME], "a");
        assert_eq!(
            (&got.artifact_type, &got.digest, got.size),
            (&a.artifact_type, &a.digest, a.size)
        );
        // And what strata's own Descriptor serializes to is what oci-spec's does.
        for d in [&a, &Descriptor::new("x/y", Digest::of(b""), 0)] {
            assert_eq!(canonical_json(d), canonical_json(&d.to_oci()));
            assert_eq!(&Descriptor::from_oci(&d.to_oci()).unwrap(), d);
        }
    }
}
