//! A boot under qemu (TCG) whose serial console the test reads as it comes and types at: what
//! a user at a serial console does when a prompt appears (a passphrase, the emergency shell).
//! qemu runs with `-nographic`, so its stdin is the serial line's input.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

pub struct Console {
    qemu: Child,
    stdin: ChildStdin,
    chunks: Receiver<Vec<u8>>,
    bytes: Vec<u8>,
    started: Instant,
    /// Where the next [`Console::wait_for`] starts looking.
    pos: usize,
}

impl Console {
    /// Start `kernel` + `initrd` with `disks` as virtio disks (opened with `snapshot=on`: never
    /// written), `append` as the command line, and further qemu arguments `qemu_args`
    /// (`-device …`).
    pub fn boot(kernel: &Path, initrd: &Path, disks: &[&Path], append: &str, qemu_args: &[&str]) -> Console {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-m", "1024", "-nographic", "-no-reboot", "-kernel"])
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd);
        for disk in disks {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw,snapshot=on", disk.display()));
        }
        cmd.args(["-append", append]).args(qemu_args);
        eprintln!("booting with: {append}");
        let mut qemu = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting qemu-system-x86_64");
        let stdin = qemu.stdin.take().unwrap();
        let mut stdout = qemu.stdout.take().unwrap();
        let (tx, chunks) = channel();
        // Prompts end without a newline: read what comes, not lines.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
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
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Type `line` and Enter on the serial console.
    pub fn type_line(&mut self, line: &str) {
        eprintln!("typing: {line:?}");
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
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
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        eprintln!("qemu stopped after {:.1?}", self.started.elapsed());
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
