//! One qemu boot (TCG) of a kernel and initrd with virtio disks, its serial console read as
//! it comes: prompts are answered by writing to the console, as a user types, and the real
//! root's marker ([`real_root::MARKER`]) is timed.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::real_root::{self, Booted, RootMarker};

/// What a boot adds to the plain one.
#[derive(Default, Clone)]
pub struct Extra {
    /// More qemu arguments (`-smbios type=11,…` credentials, a TPM).
    pub qemu: Vec<String>,
    /// `(prompt, reply)`: when the console shows `prompt` (once each, in order), `reply` and
    /// Enter are typed on the serial console.
    pub answers: Vec<(String, String)>,
    /// Disks opened writable (not `snapshot=on`); the others never are.
    pub writable: Vec<PathBuf>,
}

/// Boot `kernel` + `initrd` with `disks` (virtio, in order: /dev/vda, /dev/vdb …, opened with
/// `snapshot=on`) and `append`, until qemu exits (the root powers off) or `limit` passes (then
/// qemu is killed).
pub fn boot(kernel: &Path, initrd: &Path, disks: &[&Path], append: &str, limit: Duration, extra: &Extra) -> Booted {
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
    let start = Instant::now();
    let mut qemu = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    // A watchdog: qemu is killed after the limit even if the console stays silent.
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let pid = nix::unistd::Pid::from_raw(qemu.id() as i32);
    let watchdog = std::thread::spawn(move || {
        if stop.recv_timeout(limit).is_err() {
            eprintln!("qemu ran past {limit:?}; killing it");
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut stdin = qemu.stdin.take().unwrap();
    let mut stdout = qemu.stdout.take().unwrap();
    let mut raw = Vec::new();
    let mut answered = 0;
    let mut searched = 0;
    let mut to_marker = None;
    let marker = format!("{} uptime=", real_root::MARKER);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        raw.extend_from_slice(&chunk[..n]);
        if to_marker.is_none() && contains(&raw, marker.as_bytes()) {
            to_marker = Some(start.elapsed());
        }
        // A prompt has no newline after it: look at what came since the last answer.
        if let Some((prompt, reply)) = extra.answers.get(answered)
            && let Some(at) = find(&raw[searched..], prompt.as_bytes())
        {
            searched += at + prompt.len();
            eprintln!(
                "console asked {prompt:?} after {:.1?}; typing the answer",
                start.elapsed()
            );
            // The agent sets up the terminal after printing the prompt.
            std::thread::sleep(Duration::from_millis(500));
            let typed = stdin
                .write_all(format!("{reply}\r").as_bytes())
                .and_then(|()| stdin.flush());
            if let Err(e) = typed {
                eprintln!("typing into the console failed: {e}");
            }
            answered += 1;
        }
    }
    let status = qemu.wait().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    eprintln!(
        "qemu exited {status} after {:.1?}; marker after {to_marker:.1?}",
        start.elapsed()
    );
    let console = String::from_utf8_lossy(&raw).into_owned();
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
