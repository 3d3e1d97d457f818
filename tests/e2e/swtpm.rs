//! A software TPM 2.0 (`swtpm`, Debian's package) for qemu boots: the TPM2-enrolled LUKS2 disk
//! of [`super::helper_vm::luks_tpm2_image`] unlocks only with its own swtpm state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// A running swtpm (TPM 2.0) on a copy of a state directory, for one qemu. Dropping it stops
/// the swtpm and removes the copy.
pub struct Swtpm {
    child: Child,
    sock: PathBuf,
    _dir: Option<tempfile::TempDir>,
    /// What qemu needs to give the guest this TPM (`-chardev … -tpmdev … -device tpm-tis`).
    pub qemu_args: Vec<String>,
}

impl Swtpm {
    /// Start a swtpm on a copy of `state` (a [`super::helper_vm::StackImage::tpm_state`]); `None` starts one
    /// with a new, empty state (a TPM that never saw the enrolment).
    pub fn start(state: Option<&Path>) -> Swtpm {
        let dir = tempfile::Builder::new().prefix("strata-swtpm-").tempdir().unwrap();
        let copy = dir.path().join("state");
        std::fs::create_dir(&copy).unwrap();
        if let Some(state) = state {
            for e in std::fs::read_dir(state).unwrap_or_else(|e| panic!("reading {}: {e}", state.display())) {
                let e = e.unwrap();
                std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
            }
        }
        Swtpm::start_in(&copy, Some(dir))
    }

    /// Start a swtpm that keeps its state in `state` itself.
    pub(crate) fn start_in(state: &Path, dir: Option<tempfile::TempDir>) -> Swtpm {
        let sock = state
            .parent()
            .unwrap()
            .join(format!("swtpm-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let child = Command::new(support::tool("swtpm"))
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting swtpm: {e}"));
        let mut swtpm = Swtpm {
            child,
            sock: sock.clone(),
            _dir: dir,
            qemu_args: vec![
                "-chardev".into(),
                format!("socket,id=chrtpm,path={}", sock.display()),
                "-tpmdev".into(),
                "emulator,id=tpm0,chardev=chrtpm".into(),
                "-device".into(),
                "tpm-tis,tpmdev=tpm0".into(),
            ],
        };
        let start = Instant::now();
        while !sock.exists() {
            if let Some(status) = swtpm.child.try_wait().unwrap() {
                panic!("swtpm on {} exited {status} before listening", state.display());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "swtpm did not create {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        swtpm
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // swtpm may already have ended with qemu's disconnect.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // Killed, it leaves its socket behind (in the image's directory while one is made).
        let _ = std::fs::remove_file(&self.sock);
    }
}
