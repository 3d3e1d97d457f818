//! One qemu boot (TCG) of a kernel and initrd with virtio disks, its serial console read as it
//! comes and typed at, as a user at a serial console does: a passphrase at the LUKS prompt, a
//! command at the emergency shell. qemu runs with `-nographic`, so its stdin is the serial
//! line's input. A watchdog kills qemu when the boot's time is up, even if the console stays
//! silent; dropping the [`Console`] kills it too.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::real_root::{self, Booted, RootMarker};

/// What a boot adds to the plain one.
#[derive(Default, Clone)]
pub struct Extra {
    /// More qemu arguments (`-smbios type=11,…` credentials, a TPM, a `-device`).
    pub qemu: Vec<String>,
    /// `(prompt, reply)`: when the console shows `prompt` (once each, in order), `reply` and
    /// Enter are typed on the serial console.
    pub answers: Vec<(String, String)>,
    /// Disks opened writable (not `snapshot=on`); the others never are.
    pub writable: Vec<PathBuf>,
}

/// A running qemu and what its serial console has printed so far.
pub struct Console {
    qemu: Child,
    stdin: ChildStdin,
    chunks: Receiver<Vec<u8>>,
    bytes: Vec<u8>,
    started: Instant,
    /// Where the next [`Console::wait_for`] starts looking.
    pos: usize,
    /// Stops the watchdog (qemu ended in time), and the watchdog's thread.
    watchdog: Option<(Sender<()>, JoinHandle<()>)>,
    /// qemu closed the console: it is exiting.
    closed: bool,
}

impl Console {
    /// Start `kernel` + `initrd` with `disks` (virtio, in order: /dev/vda, /dev/vdb …, opened
    /// with `snapshot=on`: never written), `append` as the command line and `extra`'s qemu
    /// arguments and writable disks; qemu is killed once `limit` has passed.
    pub fn start(
        kernel: &Path,
        initrd: &Path,
        disks: &[&Path],
        append: &str,
        limit: Duration,
        extra: &Extra,
    ) -> Console {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-m", "1024", "-nographic", "-no-reboot", "-kernel"])
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd);
        for disk in disks {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw,snapshot=on", disk.display()));
        }
        for disk in &extra.writable {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        cmd.args(&extra.qemu).args(["-append", append]);
        eprintln!("booting with: {append}");
        let mut qemu = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting qemu-system-x86_64");
        let (stop, stopped) = channel::<()>();
        let pid = nix::unistd::Pid::from_raw(qemu.id() as i32);
        let watchdog = std::thread::spawn(move || {
            if stopped.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                eprintln!("qemu ran past {limit:?}; killing it");
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        let stdin = qemu.stdin.take().unwrap();
        let mut stdout = qemu.stdout.take().unwrap();
        let (tx, chunks) = channel();
        // Prompts end without a newline: read what comes, not lines.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Console {
            qemu,
            stdin,
            chunks,
            bytes: Vec::new(),
            started: Instant::now(),
            pos: 0,
            watchdog: Some((stop, watchdog)),
            closed: false,
        }
    }

    /// Wait until `needle` is printed after the previous match (or the start), at most
    /// `limit`; returns the time since qemu started, or None (qemu exited or time is up).
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = find(&self.bytes[self.pos..], needle.as_bytes()) {
                self.pos += at + needle.len();
                return Some(self.started.elapsed());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.bytes.extend(chunk),
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return None;
                }
                Err(RecvTimeoutError::Timeout) => return None,
            }
        }
    }

    /// Read the console until qemu exits (the machine powered off), at most `limit`; false
    /// if it still runs.
    pub fn wait_for_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.bytes.extend(chunk),
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return true;
                }
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// Type `line` and Enter (a carriage return, as a terminal sends it) on the serial console.
    pub fn type_line(&mut self, line: &str) {
        eprintln!("typing: {line:?}");
        self.stdin
            .write_all(format!("{line}\r").as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("writing to qemu's stdin");
    }

    /// The console so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The last 80 lines so far, for a failure message.
    pub fn tail(&self) -> String {
        super::tail(&self.text())
    }

    /// The time since qemu started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // The watchdog first: once qemu is reaped, its pid may be another process's.
        if let Some((stop, watchdog)) = self.watchdog.take() {
            let _ = stop.send(());
            let _ = watchdog.join();
        }
        // qemu closes the console before it has finished exiting: give it a moment.
        let grace = Instant::now() + Duration::from_secs(if self.closed { 5 } else { 0 });
        while matches!(self.qemu.try_wait(), Ok(None)) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.qemu.kill();
        let status = self.qemu.wait();
        eprintln!("qemu stopped ({status:?}) after {:.1?}", self.started.elapsed());
    }
}

/// Boot until qemu exits (the real root's marker unit powers off) or `limit` passes (then qemu
/// is killed): `extra.answers` are typed as their prompts come, and the root's marker
/// ([`real_root::MARKER`]) is timed.
pub fn boot(kernel: &Path, initrd: &Path, disks: &[&Path], append: &str, limit: Duration, extra: &Extra) -> Booted {
    let deadline = Instant::now() + limit;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut c = Console::start(kernel, initrd, disks, append, limit, extra);
    for (prompt, reply) in &extra.answers {
        let Some(at) = c.wait_for(prompt, left()) else {
            break;
        };
        eprintln!("console asked {prompt:?} after {at:.1?}; typing the answer");
        // The agent sets up the terminal after printing the prompt.
        std::thread::sleep(Duration::from_millis(500));
        c.type_line(reply);
    }
    let to_marker = c.wait_for(&format!("{} uptime=", real_root::MARKER), left());
    let exited = c.wait_for_exit(left());
    eprintln!(
        "qemu {} after {:.1?}; marker after {to_marker:.1?}",
        if exited { "exited" } else { "still ran" },
        c.elapsed()
    );
    let console = c.text();
    drop(c);
    Booted {
        marker: RootMarker::find(&console),
        analyze: console
            .lines()
            .find_map(|l| l.split_once("STRATA-ANALYZE ").map(|(_, a)| a.to_string())),
        console,
        to_marker,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
