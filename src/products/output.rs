//! The output directory of `strata build`: it holds one complete build, never a mix of two.
//!
//! A build writes its products into a staging directory inside the output directory,
//! `.strata-staging-<pid>` (each file written atomically and fsynced), then the new
//! `products.json` into the same directory: that file is the commit point. The swap then
//! moves the old `products.json` aside into the staging directory (as `previous.json`, only
//! if a file it lists is about to change or go), removes the files of the old build that the
//! new one does not have, renames each new product into place, and renames `products.json`
//! into place last. So at every instant exactly one `products.json` is authoritative, and every
//! file it lists has the bytes it records: `OUT/products.json`, or during the swap the staging
//! directory's. A reader ([`super::read`]) that finds neither a complete `OUT/products.json`
//! is told that a build is being put in place (or was killed while it was).
//!
//! The whole build holds an exclusive lock (`flock`) on the output directory, so a second
//! build into it fails at once instead of mixing products. A build that fails or is
//! interrupted before the commit point removes its staging directory; after a kill, the next
//! build into the directory removes a staging directory without `products.json`, finishes
//! the swap of one with it (the products in it are complete), and removes `.tmp-<pid>-…`
//! files of dead processes.
//!
//! strata removes only what it wrote: files listed in the previous `products.json` (plain
//! names only) that the new build does not make, its staging directories and its temporary
//! files. Other files in the output directory are kept.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use tracing::{info, warn};

use super::{FILE, Product, Products};
use crate::store::atomic;

/// The prefix of staging directories in an output directory.
pub const STAGING_PREFIX: &str = ".strata-staging-";
/// The old `products.json`, moved into the staging directory while the swap runs.
const PREVIOUS: &str = "previous.json";

/// An output directory, locked for one build.
#[derive(Debug)]
pub struct Output {
    dir: PathBuf,
    /// Holds the `flock` on the directory until dropped.
    _lock: File,
    /// Whether `open` created the directory (removed again, if still empty, by a build that
    /// fails).
    created: bool,
    staging: Option<PathBuf>,
}

/// What a swap did, by file name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swap {
    /// New names.
    pub added: Vec<String>,
    /// Names whose bytes changed.
    pub replaced: Vec<String>,
    /// Names rewritten with the same bytes.
    pub unchanged: Vec<String>,
    /// Products of the previous build that this one does not make.
    pub removed: Vec<String>,
}

impl Output {
    /// Lock `dir` (created if missing) for this process, finish or remove what a killed
    /// build left in it, and remove temporary files of dead processes.
    pub fn open(dir: &Path) -> Result<Output> {
        let created = !dir.exists();
        fs::create_dir_all(dir).with_context(|| format!("creating the output directory {}", dir.display()))?;
        let lock = File::open(dir).with_context(|| format!("opening the output directory {}", dir.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => bail!(
                "another strata build is writing to {} (it holds the directory's lock); wait for it, or choose \
                 another --output",
                dir.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking the output directory {}", dir.display()));
            }
        }
        let out = Output {
            dir: dir.to_path_buf(),
            _lock: lock,
            created,
            staging: None,
        };
        out.recover()?;
        atomic::remove_stale(dir).with_context(|| format!("removing temporary files from {}", dir.display()))?;
        Ok(out)
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh staging directory for the products (removed on failure and on Ctrl-C).
    pub fn stage(&mut self) -> Result<&Path> {
        let staging = self.dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        fs::create_dir(&staging).with_context(|| format!("creating the staging directory {}", staging.display()))?;
        atomic::register_dir(&staging);
        Ok(self.staging.insert(staging))
    }

    /// Put the staged products in place: `products` must list exactly the files in the
    /// staging directory. Checks first that each product's final path can be replaced.
    pub fn commit(mut self, products: &Products) -> Result<Swap> {
        let staging = self.staging.clone().context("no products were staged")?;
        for p in &products.products {
            check_name(&p.file).with_context(|| format!("product {} `{}`", p.kind, p.file))?;
            let staged = staging.join(&p.file);
            let meta =
                fs::symlink_metadata(&staged).with_context(|| format!("the staged product {}", staged.display()))?;
            if meta.len() != p.size {
                bail!(
                    "the staged product {} has {} bytes, not {}",
                    staged.display(),
                    meta.len(),
                    p.size
                );
            }
            let dest = self.dir.join(&p.file);
            if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                bail!(
                    "{} is a directory, where the {} of this build goes; remove it (the previous build is left as it was)",
                    dest.display(),
                    p.kind
                );
            }
        }
        atomic::keep_dir(&staging)?;
        super::write(&staging, products)?;
        let swap = finish(&self.dir, &staging)?;
        self.staging = None;
        self.created = false;
        Ok(swap)
    }

    /// Finish or remove what killed builds left: staging directories. The caller holds the
    /// lock, so no live process owns them.
    fn recover(&self) -> Result<()> {
        for staging in staging_dirs(&self.dir)? {
            if staging.join(FILE).is_file() {
                warn!(
                    staging = %staging.display(),
                    "a build was killed while putting its products in place; finishing that"
                );
                finish(&self.dir, &staging)
                    .with_context(|| format!("finishing the interrupted swap of {}", staging.display()))?;
            } else {
                info!(staging = %staging.display(), "removing the products of an unfinished build");
                fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
            }
        }
        Ok(())
    }
}

impl Drop for Output {
    /// A build that did not commit leaves the output directory as it found it.
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take()
            && !staging.join(FILE).exists()
        {
            match fs::remove_dir_all(&staging) {
                Ok(()) => atomic::forget_dir(&staging),
                // Removed already by the Ctrl-C handler.
                Err(e) if e.kind() == io::ErrorKind::NotFound => atomic::forget_dir(&staging),
                Err(e) => warn!(staging = %staging.display(), "removing the staging directory: {e}"),
            }
        }
        if self.created
            && let Err(e) = fs::remove_dir(&self.dir)
        {
            // Not empty: a staging directory to finish, or someone else's file.
            tracing::debug!(dir = %self.dir.display(), "keeping the output directory: {e}");
        }
    }
}

/// The staging directories in `dir`, sorted.
pub fn staging_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// A product's file name: one plain, visible path component, not `products.json`.
pub fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\0')
        && !name.chars().any(char::is_control)
        && name != FILE;
    if !plain {
        bail!("`{name}` is not a plain file name in the output directory");
    }
    Ok(())
}

/// Read a products file, or None if it is missing or unreadable (then strata does not know
/// which files it wrote, and removes none).
fn read_list(path: &Path) -> Option<Products> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), "cannot read the previous build's list ({e}); keeping its files");
            return None;
        }
    };
    match serde_json::from_slice(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(path = %path.display(), "not a strata products file ({e}); keeping the files it may list");
            None
        }
    }
}

/// The swap, from the commit point on (`staging/products.json` exists). Idempotent: a swap
/// killed at any point is finished by running it again.
fn finish(dir: &Path, staging: &Path) -> Result<Swap> {
    let new =
        read_list(&staging.join(FILE)).with_context(|| format!("{} is unreadable", staging.join(FILE).display()))?;
    let current = dir.join(FILE);
    let previous = staging.join(PREVIOUS);
    let old = read_list(&previous).or_else(|| read_list(&current));
    let old: Vec<&Product> = old
        .as_ref()
        .map(|o| o.products.iter())
        .into_iter()
        .flatten()
        .filter(|p| match check_name(&p.file) {
            Ok(()) => true,
            Err(e) => {
                warn!("the previous products.json lists {}: {e:#}; leaving it alone", p.file);
                false
            }
        })
        .collect();
    let same = |a: &Product, b: &Product| a.sha256 == b.sha256 && a.size == b.size;
    let in_new = |name: &str| new.products.iter().find(|p| p.file == name);
    let mut swap = Swap::default();
    // The old list stops being authoritative before any file it lists changes.
    let changes = old.iter().any(|o| in_new(&o.file).is_none_or(|n| !same(o, n)));
    if changes && current.exists() {
        fs::rename(&current, &previous)
            .with_context(|| format!("moving {} aside to {}", current.display(), previous.display()))?;
        sync(dir)?;
        sync(staging)?;
    }
    for o in &old {
        if in_new(&o.file).is_none() {
            let path = dir.join(&o.file);
            match fs::remove_file(&path) {
                Ok(()) => info!(file = %o.file, "removed (the previous build's, not made by this one)"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
            swap.removed.push(o.file.clone());
        }
    }
    for n in &new.products {
        let (from, to) = (staging.join(&n.file), dir.join(&n.file));
        match old.iter().find(|o| o.file == n.file) {
            Some(o) if same(o, n) => swap.unchanged.push(n.file.clone()),
            Some(o) => {
                info!(file = %n.file, old = %o.sha256, new = %n.sha256, "replaced");
                swap.replaced.push(n.file.clone());
            }
            None => swap.added.push(n.file.clone()),
        }
        match fs::rename(&from, &to) {
            Ok(()) => {}
            // Moved by the killed swap this one finishes.
            Err(e) if e.kind() == io::ErrorKind::NotFound && to.is_file() => {}
            Err(e) => return Err(e).with_context(|| format!("moving {} to {}", from.display(), to.display())),
        }
    }
    sync(dir)?;
    fs::rename(staging.join(FILE), &current).with_context(|| format!("putting {} in place", current.display()))?;
    sync(dir)?;
    fs::remove_dir_all(staging).with_context(|| format!("removing {}", staging.display()))?;
    atomic::forget_dir(staging);
    Ok(swap)
}

fn sync(dir: &Path) -> Result<()> {
    atomic::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    /// A kernel product named `file` with `data`, written into `dir`.
    fn product(dir: &Path, file: &str, data: &[u8]) -> Product {
        fs::write(dir.join(file), data).unwrap();
        Product::kernel(file, Digest::of(data), data.len() as u64, "6.1")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// `dir` with a complete build of `a` (old) and `b`, plus a user's file.
    fn previous_build(dir: &Path) -> Products {
        fs::create_dir_all(dir).unwrap();
        let old = Products::new("set", vec![product(dir, "a", b"old a"), product(dir, "b", b"b")]);
        super::super::write(dir, &old).unwrap();
        fs::write(dir.join("mine.txt"), b"the user's").unwrap();
        old
    }

    /// Stage a new build: `a` changed, `b` gone, `c` new.
    fn stage_new(out: &mut Output) -> Products {
        let staging = out.stage().unwrap().to_path_buf();
        Products::new(
            "set",
            vec![product(&staging, "a", b"new a"), product(&staging, "c", b"c")],
        )
    }

    #[test]
    fn commit_replaces_the_build_and_keeps_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        previous_build(&dir);
        let mut out = Output::open(&dir).unwrap();
        let new = stage_new(&mut out);
        let swap = out.commit(&new).unwrap();
        assert_eq!(
            swap,
            Swap {
                added: vec!["c".into()],
                replaced: vec!["a".into()],
                unchanged: vec![],
                removed: vec!["b".into()],
            }
        );
        assert_eq!(names(&dir), ["a", "c", "mine.txt", "products.json"]);
        assert_eq!(super::super::read(&dir).unwrap(), new);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"new a");
        // The same build again: nothing changes, no gap is needed.
        let mut out = Output::open(&dir).unwrap();
        let again = stage_new(&mut out);
        let swap = out.commit(&again).unwrap();
        assert_eq!(swap.unchanged, ["a", "c"]);
        assert!(swap.replaced.is_empty() && swap.removed.is_empty());
    }

    #[test]
    fn a_build_that_does_not_commit_leaves_the_directory_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let old = previous_build(&dir);
        {
            let mut out = Output::open(&dir).unwrap();
            stage_new(&mut out);
        }
        assert_eq!(names(&dir), ["a", "b", "mine.txt", "products.json"]);
        assert_eq!(super::super::read(&dir).unwrap(), old);
        // A directory it created is removed again.
        let fresh = tmp.path().join("fresh");
        {
            let mut out = Output::open(&fresh).unwrap();
            stage_new(&mut out);
        }
        assert!(!fresh.exists());
    }

    #[test]
    fn a_directory_on_a_product_path_fails_before_anything_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let old = previous_build(&dir);
        fs::create_dir(dir.join("c")).unwrap();
        let mut out = Output::open(&dir).unwrap();
        let new = stage_new(&mut out);
        let err = format!("{:#}", out.commit(&new).unwrap_err());
        assert!(
            err.contains(&format!("{} is a directory", dir.join("c").display())),
            "{err}"
        );
        assert_eq!(names(&dir), ["a", "b", "c", "mine.txt", "products.json"]);
        assert_eq!(super::super::read(&dir).unwrap(), old);
    }

    #[test]
    fn a_second_build_into_a_locked_directory_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = Output::open(tmp.path()).unwrap();
        let err = Output::open(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("another strata build is writing to"), "{err}");
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    }

    #[test]
    fn a_swap_killed_halfway_is_finished_by_the_next_build() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        previous_build(&dir);
        // As a build killed in the middle of the swap leaves it: products.json moved aside,
        // `b` removed, `a` moved into place, `c` still staged.
        let staging = dir.join(format!("{STAGING_PREFIX}999999"));
        fs::create_dir(&staging).unwrap();
        let new = Products::new(
            "set",
            vec![product(&staging, "a", b"new a"), product(&staging, "c", b"c")],
        );
        super::super::write(&staging, &new).unwrap();
        fs::rename(dir.join(FILE), staging.join(PREVIOUS)).unwrap();
        fs::remove_file(dir.join("b")).unwrap();
        fs::rename(staging.join("a"), dir.join("a")).unwrap();
        let err = format!("{:#}", super::super::read(&dir).unwrap_err());
        assert!(err.contains("a build is putting its products in place"), "{err}");
        assert!(err.contains(&staging.display().to_string()), "{err}");
        // A leftover temporary file of a dead process, and an unfinished staging directory.
        fs::write(dir.join(".tmp-999999-x"), b"half").unwrap();
        let unfinished = dir.join(format!("{STAGING_PREFIX}999998"));
        fs::create_dir(&unfinished).unwrap();
        fs::write(unfinished.join("a"), b"other").unwrap();

        drop(Output::open(&dir).unwrap());
        assert_eq!(names(&dir), ["a", "c", "mine.txt", "products.json"]);
        assert_eq!(super::super::read(&dir).unwrap(), new);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"new a");
    }

    #[test]
    fn only_plain_names_of_the_previous_build_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        fs::create_dir_all(&dir).unwrap();
        fs::write(tmp.path().join("hostname"), b"not strata's").unwrap();
        let mut forged = Product::kernel("../hostname", Digest::of(b"x"), 1, "6.1");
        forged.file = "../hostname".into();
        super::super::write(&dir, &Products::new("set", vec![forged])).unwrap();
        let mut out = Output::open(&dir).unwrap();
        let new = stage_new(&mut out);
        let swap = out.commit(&new).unwrap();
        assert!(swap.removed.is_empty(), "{swap:?}");
        assert_eq!(fs::read(tmp.path().join("hostname")).unwrap(), b"not strata's");
        for bad in ["", ".hidden", "a/b", "..", "products.json", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("network.sysext.raw").unwrap();
    }
}
