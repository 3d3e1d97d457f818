//! Atomic file writes, one way for the whole program: a temporary file in the destination's
//! directory (named `.tmp-<pid>-…`, so a later process can remove a killed writer's
//! leftovers), written, fsynced, renamed into place, and the directory fsynced.
//!
//! Every temporary file in flight is registered, so an interrupted process ([`interrupt`],
//! called on Ctrl-C) removes them all before it exits, and no rename happens after an
//! interruption: nothing half-written is ever visible under a real name. A directory being
//! filled as a whole (a build's staging directory, [`crate::products::output`]) is registered
//! the same way with [`register_dir`] until [`keep_dir`] makes it permanent.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Error, io_at};

/// Temporary files being written now, by any thread.
static IN_FLIGHT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
/// Temporary directories being filled now: removed whole on interrupt.
static DIRS_IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set once the process is interrupted: no temporary file is renamed into place after it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn in_flight(f: impl FnOnce(&mut HashSet<PathBuf>)) {
    let mut guard = IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(HashSet::new));
}

/// Mark the process interrupted, at the signal: from now on no temporary file is renamed
/// into place and no directory is kept ([`Error::Interrupted`] instead), so what a build
/// finishes during the grace period before [`interrupt`] is not put in place.
pub fn stop() {
    // Under the directories' lock: a `keep_dir` running now either finished before this
    // (the directory is kept) or sees the flag.
    let _dirs = DIRS_IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Mark the process interrupted and remove every temporary file and directory in flight.
/// Returns how many were removed. Writers that finish later see [`Error::Interrupted`]
/// instead of renaming.
pub fn interrupt() -> usize {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let mut removed = 0;
    in_flight(|set| {
        for path in set.drain() {
            if fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
    });
    let dirs = std::mem::take(&mut *DIRS_IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()));
    for dir in dirs {
        if fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Remove `dir` and everything in it if the process is interrupted before [`keep_dir`] or
/// [`forget_dir`].
pub fn register_dir(dir: &Path) {
    DIRS_IN_FLIGHT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
}

/// `dir` is about to be made permanent: an interruption no longer removes it. Fails, leaving
/// it registered, if the process was interrupted already; so of an interruption and this
/// call exactly one wins.
pub fn keep_dir(dir: &Path) -> Result<(), Error> {
    let mut dirs = DIRS_IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    if interrupted() {
        return Err(Error::Interrupted {
            path: dir.to_path_buf(),
        });
    }
    dirs.retain(|d| d != dir);
    Ok(())
}

/// `dir` was removed by its owner.
pub fn forget_dir(dir: &Path) {
    DIRS_IN_FLIGHT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| d != dir);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The prefix of this process's temporary files.
pub(crate) fn temp_prefix() -> String {
    format!(".tmp-{}-", std::process::id())
}

/// A file being written; renamed into place by [`AtomicFile::commit`]. Dropped without a
/// commit, it leaves nothing behind.
#[derive(Debug)]
pub struct AtomicFile {
    /// Taken out only by `finish`, which consumes `self`.
    tmp: Option<tempfile::NamedTempFile>,
    dir: PathBuf,
}

impl AtomicFile {
    /// A new temporary file in `dir` (created if missing) with permissions `mode`, set before
    /// anything is written (tempfile creates it 0600, so a key is never readable by others).
    pub fn new(dir: &Path, mode: u32) -> Result<AtomicFile, Error> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix())
            .tempfile_in(dir)
            .map_err(io_at(dir))?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_at(tmp.path()))?;
        in_flight(|set| {
            set.insert(tmp.path().to_path_buf());
        });
        Ok(AtomicFile {
            tmp: Some(tmp),
            dir: dir.to_path_buf(),
        })
    }

    /// A new temporary file beside `dest`, readable by everyone (0644).
    pub fn beside(dest: &Path) -> Result<AtomicFile, Error> {
        AtomicFile::new(parent_of(dest), 0o644)
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        self.file().path()
    }

    fn file(&self) -> &tempfile::NamedTempFile {
        self.tmp.as_ref().expect("present until finish")
    }

    fn file_mut(&mut self) -> &mut tempfile::NamedTempFile {
        self.tmp.as_mut().expect("present until finish")
    }

    /// The open file (to read back what was written, e.g. to verify it).
    pub fn as_file(&self) -> &File {
        self.file().as_file()
    }

    /// fsync, rename to `dest` (in the same directory), fsync the directory.
    pub fn commit(self, dest: &Path) -> Result<(), Error> {
        self.finish(dest, true)
    }

    /// Like [`AtomicFile::commit`], but an existing `dest` is an error and is left as it is.
    pub fn commit_noclobber(self, dest: &Path) -> Result<(), Error> {
        self.finish(dest, false)
    }

    fn finish(mut self, dest: &Path, clobber: bool) -> Result<(), Error> {
        let tmp_path = self.path().to_path_buf();
        self.file_mut().flush().map_err(io_at(&tmp_path))?;
        self.as_file().sync_all().map_err(io_at(&tmp_path))?;
        if interrupted() {
            return Err(Error::Interrupted {
                path: dest.to_path_buf(),
            });
        }
        let tmp = self.tmp.take().expect("present until finish");
        let persisted = if clobber {
            tmp.persist(dest)
        } else {
            tmp.persist_noclobber(dest)
        };
        in_flight(|set| {
            set.remove(&tmp_path);
        });
        persisted.map_err(|e| Error::Io {
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        sync_dir(&self.dir)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let path = tmp.path().to_path_buf();
            in_flight(|set| {
                set.remove(&path);
            });
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file_mut().flush()
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Write `data` to `dest` atomically, mode 0644.
pub fn write(dest: &Path, data: &[u8]) -> Result<(), Error> {
    let mut f = AtomicFile::beside(dest)?;
    f.write_all(data).map_err(io_at(dest))?;
    f.commit(dest)
}

/// Copy `src` to `dest` atomically, streaming, mode 0644.
pub fn copy(src: &Path, dest: &Path) -> Result<(), Error> {
    let mut f = AtomicFile::beside(dest)?;
    let mut input = File::open(src).map_err(io_at(src))?;
    io::copy(&mut input, &mut f).map_err(io_at(dest))?;
    f.commit(dest)
}

/// Remove `.tmp-<pid>-…` files in `dir` whose process is gone (a killed build, push or
/// pull). Files of live processes, which may share the cache, are left alone.
pub fn remove_stale(dir: &Path) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|pid| {
            !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            )
        });
        if !alive {
            let path = entry.path();
            tracing::debug!(path = %path.display(), "removing a temporary file left by an interrupted writer");
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { path, source: e }),
            }
        }
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_renames_into_place_and_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/file");
        write(&dest, b"hello").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o644);
        {
            let mut f = AtomicFile::beside(&dest).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(
            names(&dir.path().join("sub")),
            ["file"],
            "a dropped writer leaves no temporary file"
        );
        let mut key = AtomicFile::new(dir.path(), 0o600).unwrap();
        key.write_all(b"k").unwrap();
        key.commit_noclobber(&dest).unwrap_err();
        assert_eq!(fs::read(&dest).unwrap(), b"hello", "noclobber keeps the existing file");
    }

    // Only this test calls interrupt(): the flag is process-wide, so it runs in a child
    // process of the test binary (the same test, filtered, with a marker variable).
    #[test]
    fn interrupt_removes_temporaries_and_stops_renames() {
        if std::env::var_os("STRATA_TEST_INTERRUPT_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::atomic::tests::interrupt_removes_temporaries_and_stops_renames",
                    "--nocapture",
                ])
                .env("STRATA_TEST_INTERRUPT_CHILD", "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "the child ran the test"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("product");
        let mut f = AtomicFile::beside(&dest).unwrap();
        f.write_all(b"half-written").unwrap();
        let staging = dir.path().join("staging");
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("product"), b"staged").unwrap();
        register_dir(&staging);
        let kept = dir.path().join("kept");
        fs::create_dir(&kept).unwrap();
        register_dir(&kept);
        keep_dir(&kept).unwrap();
        assert_eq!(names(dir.path()).len(), 3);
        assert_eq!(interrupt(), 2);
        assert_eq!(names(dir.path()), ["kept"], "the temporary file and directory are gone");
        fs::remove_dir(&kept).unwrap();
        register_dir(&kept);
        assert!(
            matches!(keep_dir(&kept).unwrap_err(), Error::Interrupted { .. }),
            "after an interruption nothing is made permanent"
        );
        let err = f.commit(&dest).unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err}");
        assert!(!dest.exists());
        assert!(matches!(write(&dest, b"x").unwrap_err(), Error::Interrupted { .. }));
        assert!(names(dir.path()).is_empty());
    }
}
