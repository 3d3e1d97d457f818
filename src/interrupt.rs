//! Ctrl-C (SIGINT) and SIGTERM, handled once for the whole process.
//!
//! `main` calls [`install`] before anything else and passes the returned token down the
//! pipeline: container steps select on it and remove their container; writers of files
//! check it before renaming anything into place ([`crate::store::atomic`]). The signals are
//! watched on a thread of their own, so a step busy with CPU work (zstd, squashfs) cannot
//! delay the reaction: after a short grace period for that cleanup, the watcher removes every
//! temporary file in flight, stops the podman service strata started, and exits with 130.
//! A second signal skips the grace period.

use std::sync::Mutex;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// How long the pipeline gets to remove its containers before the process exits anyway.
pub const GRACE: Duration = Duration::from_millis(1000);

/// The exit code of an interrupted run (128 + SIGINT).
pub const EXIT_CODE: i32 = 130;

/// Child processes to stop before an interrupted process exits (the podman service), each
/// with the private directory it uses.
static CHILDREN: Mutex<Vec<(i32, std::path::PathBuf)>> = Mutex::new(Vec::new());

/// Stop `pid` (with SIGTERM) and remove `dir` if the process is interrupted before
/// [`forget_child`].
pub fn register_child(pid: u32, dir: &std::path::Path) {
    if let Ok(pid) = i32::try_from(pid) {
        CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pid, dir.to_path_buf()));
    }
}

/// `pid` was stopped by its owner.
pub fn forget_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(p, _)| i64::from(*p) != i64::from(pid));
}

/// The error a step returns when it stops because of the token.
pub fn interrupted_error() -> anyhow::Error {
    anyhow::anyhow!("interrupted (Ctrl-C): containers are removed and nothing half-written is kept")
}

/// Watch for SIGINT and SIGTERM on a thread of its own; returns the token cancelled on the
/// first one.
pub fn install() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    // Register the handlers now, so a signal that comes before the thread runs is not lost.
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    let cancel = token.clone();
    std::thread::Builder::new()
        .name("strata-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                tracing::warn!("interrupted: stopping (containers are removed, temporary files deleted)");
                // First: nothing is put in place from here on, even work that finishes
                // within the grace period.
                crate::store::atomic::stop();
                cancel.cancel();
                tokio::select! {
                    _ = tokio::time::sleep(GRACE) => {}
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            exit_now();
        })?;
    Ok(token)
}

/// Remove temporary files, stop registered children, exit with [`EXIT_CODE`].
pub fn exit_now() -> ! {
    let removed = crate::store::atomic::interrupt();
    let children = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|p| p.into_inner()));
    for (pid, dir) in children {
        // Best effort on the way out: the process may have exited already.
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM) {
            say(format_args!("stopping process {pid}: {e}"));
        }
        // Give it a moment to close its socket, then remove its directory.
        for _ in 0..20 {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            say(format_args!("removing {}: {e}", dir.display()));
        }
    }
    say(format_args!("error: interrupted (removed {removed} temporary file(s))"));
    std::process::exit(EXIT_CODE)
}

/// A line on stderr on the way out. `eprintln!` panics when stderr is gone (a closed pipe:
/// the reader was killed with us), and a panic here would leave the process running with
/// nobody listening for signals; a line nobody can read is dropped instead.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if writeln!(std::io::stderr(), "{line}").is_err() {
        // Nowhere to report it: stderr itself is what failed.
    }
}
